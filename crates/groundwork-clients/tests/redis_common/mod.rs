//! Shared helpers of the Redis tests: where the test server is, unique key names, and
//! bounded waits.
//!
//! The tests run against the Redis at `GROUNDWORK_TEST_REDIS_URL` (for instance
//! `redis://127.0.0.1:6379`). Without it they print a notice and pass, unless
//! `GROUNDWORK_REQUIRE_REDIS=1` (set by CI), in which case they fail.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use groundwork_clients::redis::{RedisClient, RedisOptions};
use groundwork_testkit::{TcpProxy, upstream_of, with_port};

/// How long something that must happen is waited for (only a failing test waits this long).
pub const PROMPT: Duration = Duration::from_secs(5);

/// The test server's URL, or `None` (after a notice) when the tests should be skipped.
pub fn redis_url(test: &str) -> Option<String> {
    groundwork_testkit::services::redis_url(test)
}

/// A key or channel prefix no other test (nor another run of this one) uses.
pub fn unique(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "groundwork-test:{test}:{}:{nanos}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A proxy in front of the test server, and the server's URL through it.
pub async fn proxy(url: &str) -> anyhow::Result<(TcpProxy, String)> {
    let proxy = TcpProxy::start(upstream_of(url).await?).await?;
    let through = with_port(url, proxy.port());
    Ok((proxy, through))
}

/// Waits until `client` is connected, up to [`PROMPT`]; returns how long it took.
pub async fn connected(client: &RedisClient) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while !client.stats().connected {
        anyhow::ensure!(started.elapsed() < PROMPT, "not connected after {PROMPT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// A client of the test server (or of `url`), connected.
pub async fn connected_client(options: RedisOptions) -> anyhow::Result<RedisClient> {
    let client = RedisClient::new(options)?;
    connected(&client).await?;
    Ok(client)
}

/// Calls `attempt` every 10 ms until it returns `Some`, up to `within`; returns the value
/// and how long it took.
pub async fn eventually<T, F, Fut>(
    within: Duration,
    mut attempt: F,
) -> anyhow::Result<(T, Duration)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = attempt().await {
            return Ok((value, started.elapsed()));
        }
        anyhow::ensure!(started.elapsed() < within, "nothing after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
