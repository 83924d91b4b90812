//! Redis refusing connections when the client is built (the server starts before Redis):
//! `new` succeeds at once, operations fail fast, and the client connects by itself — and a
//! subscription made meanwhile starts delivering — once Redis accepts connections.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_common;

use std::time::{Duration, Instant};

use groundwork_clients::redis::{RedisClient, RedisError, RedisOptions};
use groundwork_resilience::BreakerState;
use groundwork_testkit::Mode;
use redis_common::{PROMPT, connected, connected_client, proxy, redis_url, unique};

#[tokio::test]
async fn a_client_built_while_redis_refuses_connects_by_itself() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_client_built_while_redis_refuses_connects_by_itself") else {
        return Ok(());
    };
    let (proxy, through) = proxy(&url).await?;
    proxy.set_mode(Mode::Refuse).await?;

    let started = Instant::now();
    let client = RedisClient::new(RedisOptions::new(through))?;
    let built = started.elapsed();
    // It waits for nothing (about 0.2 ms); loose bounds for a busy machine.
    assert!(built < Duration::from_millis(50), "new took {built:?}");
    let prefix = unique("refused_at_start");
    let key = format!("{prefix}value");
    let mut subscription = client.subscribe(format!("{prefix}events"));

    // A while of refused connections: every operation fails at once.
    let mut slowest = Duration::ZERO;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_millis(500) {
        let started = Instant::now();
        let err = client.get(&key).await.unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert!(matches!(err, RedisError::Unavailable { .. }), "{err:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("new took {built:?}; slowest failure while refused {slowest:?}");
    assert!(slowest < Duration::from_millis(20), "{slowest:?}");
    let stats = client.stats();
    assert!(!stats.connected);
    assert_eq!(stats.timeouts, 0);
    assert_eq!(stats.breaker.state, BreakerState::Closed);
    assert!(!subscription.is_active());
    assert_eq!(subscription.generation(), 0);

    proxy.set_mode(Mode::Pass).await?;
    let took = connected(&client).await?;
    eprintln!("connected {took:?} after Redis accepted connections");
    assert!(took < Duration::from_secs(2), "{took:?}");
    client.set_ex(&key, b"v", Duration::from_secs(30)).await?;
    assert_eq!(client.get(&key).await?, Some(b"v".to_vec()));

    tokio::time::timeout(PROMPT, subscription.subscribed()).await??;
    let channel = subscription.channel().to_owned();
    // A separate client, so that the publisher is not the one under test.
    let publisher = connected_client(RedisOptions::new(&url)).await?;
    assert_eq!(publisher.publish(&channel, b"hello").await?, 1);
    let message = tokio::time::timeout(PROMPT, subscription.next()).await?;
    assert_eq!(message.as_deref(), Some(&b"hello"[..]));
    // The first connections are not reconnections.
    assert_eq!(client.stats().reconnects, 0);
    assert_eq!(subscription.generation(), 1);
    client.del(&key).await?;
    Ok(())
}
