//! Against a live Redis: values round-trip through `set_ex`, `get` and `del`, a published
//! message reaches a subscription, and an error reply is an answer, not an outage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_common;

use std::time::Duration;

use groundwork_clients::redis::{RedisError, RedisOptions};
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::BreakerState;
use redis_common::{PROMPT, connected_client, redis_url, unique};

#[tokio::test]
async fn values_round_trip() -> anyhow::Result<()> {
    let Some(url) = redis_url("values_round_trip") else {
        return Ok(());
    };
    let client = connected_client(RedisOptions::new(&url)).await?;
    let key = format!("{}value", unique("round_trip"));

    assert_eq!(client.get(&key).await?, None);
    client
        .set_ex(&key, b"\x00binary\xff", Duration::from_secs(30))
        .await?;
    assert_eq!(client.get(&key).await?, Some(b"\x00binary\xff".to_vec()));

    // The TTL is set, in milliseconds.
    let mut raw = ::redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let pttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut raw).await?;
    assert!((1..=30_000).contains(&pttl), "PTTL {pttl}");

    assert!(client.del(&key).await?);
    assert!(!client.del(&key).await?);
    assert_eq!(client.get(&key).await?, None);

    let rtt = client.ping().await?;
    assert!(rtt < Duration::from_millis(50), "{rtt:?}");

    let stats = client.stats();
    assert!(stats.connected);
    assert_eq!(stats.operations, 7);
    assert_eq!((stats.failures, stats.timeouts, stats.rejected), (0, 0, 0));
    assert_eq!(stats.breaker.state, BreakerState::Closed);
    // The 7 operations, and the connection the client made (a health check that passed).
    assert_eq!(stats.breaker.successes, 8);
    Ok(())
}

#[tokio::test]
async fn an_error_reply_is_an_answer() -> anyhow::Result<()> {
    let Some(url) = redis_url("an_error_reply_is_an_answer") else {
        return Ok(());
    };
    let client = connected_client(RedisOptions::new(&url)).await?;
    let key = format!("{}list", unique("error_reply"));
    let mut raw = ::redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let _: i64 = ::redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .query_async(&mut raw)
        .await?;
    let _: i64 = ::redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(30_000)
        .query_async(&mut raw)
        .await?;

    for _ in 0..5 {
        let err = client.get(&key).await.unwrap_err();
        assert!(matches!(err, RedisError::Command(_)), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }
    let stats = client.stats();
    assert_eq!(stats.failures, 5);
    assert_eq!(
        stats.breaker.state,
        BreakerState::Closed,
        "WRONGTYPE is not an outage"
    );
    client.del(&key).await?;
    Ok(())
}

#[tokio::test]
async fn a_published_message_reaches_a_subscription() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_published_message_reaches_a_subscription") else {
        return Ok(());
    };
    let client = connected_client(RedisOptions::new(&url)).await?;
    let channel = format!("{}events", unique("pubsub"));

    let mut subscription = client.subscribe(&channel);
    assert_eq!(subscription.channel(), channel);
    tokio::time::timeout(PROMPT, subscription.subscribed()).await??;
    assert!(subscription.is_active());
    assert_eq!(subscription.generation(), 1);
    assert_eq!(client.stats().subscriptions, 1);

    assert_eq!(client.publish(&channel, b"first").await?, 1);
    client.publish(&channel, b"second").await?;
    let first = tokio::time::timeout(PROMPT, subscription.next()).await?;
    let second = tokio::time::timeout(PROMPT, subscription.next()).await?;
    assert_eq!(first.as_deref(), Some(&b"first"[..]));
    assert_eq!(second.as_deref(), Some(&b"second"[..]));
    assert_eq!(client.stats().messages, 2);

    // Dropping the handle ends the subscription.
    drop(subscription);
    redis_common::eventually(PROMPT, || async {
        (client.publish(&channel, b"nobody").await.ok() == Some(0)).then_some(())
    })
    .await?;
    assert_eq!(client.stats().subscriptions, 0);
    assert_eq!(client.stats().reconnects, 0);
    Ok(())
}
