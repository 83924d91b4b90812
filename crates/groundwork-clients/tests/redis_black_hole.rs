//! Redis black-holed by the network (the testkit proxy in `Mode::BlackHole`): every
//! operation fails within the operation timeout, the breaker opens after a few and then
//! rejects in microseconds, and once the network heals the same client works again
//! within a second or two.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_common;

use std::time::{Duration, Instant};

use groundwork_clients::redis::{RedisClient, RedisError, RedisOptions};
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::BreakerState;
use groundwork_testkit::Mode;
use redis_common::{connected_client, eventually, proxy, redis_url, unique};

const OP_TIMEOUT: Duration = Duration::from_millis(50);
/// What an operation may take past its timeout (scheduling on a busy 2-core machine).
const MARGIN: Duration = Duration::from_millis(30);

/// Runs `get` on a black-holed Redis until the breaker opens; checks each failure's time.
async fn until_open(client: &RedisClient, key: &str) -> usize {
    for attempt in 1..=10 {
        let started = Instant::now();
        let result = client.get(key).await;
        let elapsed = started.elapsed();
        let err = result.expect_err("a black-holed Redis answered");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert!(
            elapsed < OP_TIMEOUT + MARGIN,
            "attempt {attempt}: {elapsed:?} ({err})"
        );
        if client.breaker().state() == BreakerState::Open {
            return attempt;
        }
    }
    panic!("the breaker did not open after 10 failures");
}

/// Runs 1,000 operations on an open breaker; returns the mean, the 99th percentile and
/// the longest time.
async fn rejections(client: &RedisClient, key: &str) -> (Duration, Duration, Duration) {
    let mut times = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let started = Instant::now();
        let err = client.get(key).await.unwrap_err();
        times.push(started.elapsed());
        assert!(matches!(err, RedisError::CircuitOpen { .. }), "{err:?}");
    }
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / 1_000;
    (mean, times[989], times[999])
}

/// After the proxy passes again: how long until `get` answers with the value.
async fn recovery(client: &RedisClient, key: &str) -> anyhow::Result<Duration> {
    let ((), took) = eventually(Duration::from_secs(3), || async {
        matches!(client.get(key).await, Ok(Some(_))).then_some(())
    })
    .await?;
    Ok(took)
}

#[tokio::test]
async fn a_black_hole_fails_fast_then_heals() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_black_hole_fails_fast_then_heals") else {
        return Ok(());
    };
    let (proxy, through) = proxy(&url).await?;
    let client = connected_client(RedisOptions::new(through).op_timeout(OP_TIMEOUT)).await?;
    let key = format!("{}value", unique("black_hole"));
    client.set_ex(&key, b"v", Duration::from_secs(60)).await?;

    proxy.set_mode(Mode::BlackHole).await?;
    let failures = until_open(&client, &key).await;
    assert!(failures <= 3, "opened after {failures} failures");
    let stats = client.stats();
    assert!(stats.timeouts >= 1, "{stats:?}");

    let (mean, p99, longest) = rejections(&client, &key).await;
    eprintln!("open breaker: mean {mean:?}, p99 {p99:?}, longest {longest:?} per rejection");
    // A preempted thread can make one call slow on a busy machine; the bulk cannot be.
    assert!(mean < Duration::from_micros(100), "mean {mean:?}");
    assert!(p99 < Duration::from_millis(1), "p99 {p99:?}");
    assert_eq!(client.stats().rejected, 1_000);

    let healed = Instant::now();
    proxy.set_mode(Mode::Pass).await?;
    let took = recovery(&client, &key).await?;
    eprintln!(
        "answered again {took:?} after the network healed ({:?} with set_mode)",
        healed.elapsed()
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(client.stats().connected);
    client.del(&key).await?;
    Ok(())
}

/// A black hole that lasts longer than the connect timeout: the connection task gives the
/// silent connection up and keeps trying new ones (which the black hole swallows too);
/// operations keep failing fast all along.
#[tokio::test]
async fn a_long_black_hole_fails_fast_throughout_then_heals() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_long_black_hole_fails_fast_throughout_then_heals") else {
        return Ok(());
    };
    let (proxy, through) = proxy(&url).await?;
    let options = RedisOptions::new(through)
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(Duration::from_millis(300));
    let client = connected_client(options).await?;
    let key = format!("{}value", unique("long_black_hole"));
    client.set_ex(&key, b"v", Duration::from_secs(60)).await?;

    proxy.set_mode(Mode::BlackHole).await?;
    let outage = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut operations = 0;
    while outage.elapsed() < Duration::from_millis(2_500) {
        let started = Instant::now();
        let err = client.get(&key).await.unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert!(elapsed < OP_TIMEOUT + MARGIN, "{elapsed:?} ({err})");
        slowest = slowest.max(elapsed);
        operations += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = client.stats();
    eprintln!(
        "{operations} operations in 2.5 s of black hole, slowest {slowest:?}: {} timeouts, \
         {} rejected, {} not connected",
        stats.timeouts, stats.rejected, stats.failures
    );
    assert!(!stats.connected, "the silent connection was given up");
    assert!(
        stats.timeouts <= 6,
        "the breaker spared most operations: {stats:?}"
    );

    proxy.set_mode(Mode::Pass).await?;
    let took = recovery(&client, &key).await?;
    eprintln!("answered again {took:?} after the network healed");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let stats = client.stats();
    assert!(stats.connected);
    assert!(stats.reconnects >= 1, "{stats:?}");
    client.del(&key).await?;
    Ok(())
}
