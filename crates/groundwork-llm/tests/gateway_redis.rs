//! The Redis level of the response cache: an answer stored by one instance is a hit for
//! another (fresh memory, same Redis); with Redis black-holed or stopped every request still
//! succeeds, slowed by at most the Redis operation timeout.
//!
//! Needs `GROUNDWORK_TEST_REDIS_URL`; without it the tests pass after a notice, unless
//! `GROUNDWORK_REQUIRE_REDIS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gateway_common::{ask, read, request};
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_clients::redis::{RedisClient, RedisOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{Gateway, GatewayOptions};
use groundwork_llm::policy::CacheStatus;
use groundwork_testkit::openai::MockOpenAi;
use groundwork_testkit::services::redis_url;
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};

fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("gwtest:{test}:{}:{nanos}:", std::process::id())
}

fn gateway(mock: &MockOpenAi, redis: RedisClient, prefix: &str) -> Gateway {
    Gateway::new(
        LlmClient::new(
            HttpClient::new(HttpClientOptions::new()).unwrap(),
            ClientOptions::new(),
        ),
        Upstream::new(mock.base_url()),
        ResponseCache::new(
            ResponseCacheOptions::new().redis_prefix(prefix),
            Some(redis),
        ),
        GatewayOptions::new(),
    )
}

async fn connected(url: &str) -> RedisClient {
    let redis = RedisClient::new(RedisOptions::new(url)).unwrap();
    let started = Instant::now();
    while redis.ping().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "Redis never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis
}

#[tokio::test]
async fn an_answer_stored_by_one_instance_is_a_hit_for_another() -> anyhow::Result<()> {
    let Some(url) = redis_url("redis_level_shared") else {
        return Ok(());
    };
    let mock = MockOpenAi::start()?;
    let prefix = unique_prefix("shared");
    let a = gateway(&mock, connected(&url).await, &prefix);
    let b = gateway(&mock, connected(&url).await, &prefix);

    let first = read(a.chat(ask(request("share me", true))).await).await;
    assert_eq!(first.cache, CacheStatus::Miss);
    let started = Instant::now();
    while a.cache().stats().redis_writes == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never written to Redis"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let from_redis = read(b.chat(ask(request("share me", true))).await).await;
    assert_eq!(from_redis.cache, CacheStatus::Hit);
    assert_eq!(
        from_redis.events, first.events,
        "the recorded stream, chunk by chunk"
    );
    assert_eq!(b.cache().stats().hits_redis, 1);
    // Now in B's memory too.
    let again = read(b.chat(ask(request("share me", false))).await).await;
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(b.cache().stats().hits_memory, 1);
    // The proxy's own counters say where each hit came from.
    let stats = b.stats();
    assert_eq!((stats.hits, stats.hits_redis, stats.hits_memory), (2, 1, 1));
    assert_eq!(mock.calls(), 1);
    Ok(())
}

#[tokio::test]
async fn with_redis_black_holed_every_request_succeeds() -> anyhow::Result<()> {
    redis_in_trouble(Mode::BlackHole, "black-holed").await
}

#[tokio::test]
async fn with_redis_stopped_every_request_succeeds() -> anyhow::Result<()> {
    redis_in_trouble(Mode::Refuse, "stopped").await
}

async fn redis_in_trouble(mode: Mode, tag: &str) -> anyhow::Result<()> {
    let Some(url) = redis_url(tag) else {
        return Ok(());
    };
    let mock = MockOpenAi::start()?;
    let proxy = TcpProxy::start(upstream_of(&url).await?).await?;
    let redis = connected(&with_port(&url, proxy.port())).await;
    let gateway = gateway(&mock, redis, &unique_prefix(tag));
    proxy.set_mode(mode).await?;

    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        for stream in [false, true] {
            let started = Instant::now();
            let answer = read(gateway.chat(ask(request(&format!("q{n}"), stream))).await).await;
            slowest = slowest.max(started.elapsed());
            // The non-streaming form was stored in memory first: the stream is a hit.
            let expected = if stream {
                CacheStatus::Hit
            } else {
                CacheStatus::Miss
            };
            assert_eq!(answer.cache, expected, "q{n} stream {stream}");
        }
    }
    let stats = gateway.cache().stats();
    eprintln!("Redis {tag}: 40 requests, slowest {slowest:?}, {stats:?}");
    assert_eq!(mock.calls(), 20);
    // A lookup waits at most the 50 ms operation timeout (then the breaker answers at once).
    assert!(
        slowest < Duration::from_millis(50 + 250),
        "slowest {slowest:?}"
    );
    assert!(stats.redis_errors >= 1, "{stats:?}");
    Ok(())
}
