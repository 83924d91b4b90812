//! A subscription outlives its connection: cut by the network (the testkit proxy's
//! `cut_existing`) or silently black-holed (noticed by its PING), it reconnects and
//! subscribes again, and a message published after the heal arrives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_common;

use std::time::{Duration, Instant};

use groundwork_clients::redis::{RedisClient, RedisOptions, RedisSubscription};
use groundwork_testkit::Mode;
use redis_common::{PROMPT, connected_client, eventually, proxy, redis_url, unique};

/// Publishes `after-heal-<n>` every 10 ms until the subscription receives one, up to
/// `within`; returns how long it took.
async fn delivered_after_heal(
    publisher: &RedisClient,
    subscription: &mut RedisSubscription,
    within: Duration,
) -> anyhow::Result<Duration> {
    let channel = subscription.channel().to_owned();
    let started = Instant::now();
    let mut sent = 0_u32;
    loop {
        anyhow::ensure!(started.elapsed() < within, "no message after {within:?}");
        sent += 1;
        publisher
            .publish(&channel, format!("after-heal-{sent}").as_bytes())
            .await?;
        if let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(10), subscription.next()).await
        {
            assert!(message.starts_with(b"after-heal-"), "{message:?}");
            return Ok(started.elapsed());
        }
    }
}

/// A subscription through the proxy, confirmed working; and a publisher straight to Redis.
async fn subscribed(
    url: &str,
    through: &str,
    options: impl Fn(RedisOptions) -> RedisOptions,
) -> anyhow::Result<(RedisClient, RedisSubscription, RedisClient)> {
    let client = connected_client(options(RedisOptions::new(through))).await?;
    let publisher = connected_client(RedisOptions::new(url)).await?;
    let mut subscription = client.subscribe(format!("{}events", unique("subscription")));
    tokio::time::timeout(PROMPT, subscription.subscribed()).await??;
    publisher.publish(subscription.channel(), b"before").await?;
    let message = tokio::time::timeout(PROMPT, subscription.next()).await?;
    assert_eq!(message.as_deref(), Some(&b"before"[..]));
    Ok((client, subscription, publisher))
}

#[tokio::test]
async fn a_subscription_survives_cut_connections() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_subscription_survives_cut_connections") else {
        return Ok(());
    };
    let (proxy, through) = proxy(&url).await?;
    let (client, mut subscription, publisher) = subscribed(&url, &through, |o| o).await?;
    assert_eq!(subscription.generation(), 1);

    for round in 1..=3 {
        proxy.cut_existing().await;
        let took = delivered_after_heal(&publisher, &mut subscription, PROMPT).await?;
        eprintln!("round {round}: a message published after the cut arrived within {took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(subscription.generation(), 1 + round);
    }
    assert!(subscription.is_active());
    assert!(client.stats().reconnects >= 3, "{:?}", client.stats());
    Ok(())
}

#[tokio::test]
async fn a_black_holed_subscription_is_noticed_and_heals() -> anyhow::Result<()> {
    let Some(url) = redis_url("a_black_holed_subscription_is_noticed_and_heals") else {
        return Ok(());
    };
    let (proxy, through) = proxy(&url).await?;
    let ping_interval = Duration::from_millis(200);
    let connect_timeout = Duration::from_millis(300);
    let (client, mut subscription, publisher) = subscribed(&url, &through, |o| {
        o.ping_interval(ping_interval)
            .connect_timeout(connect_timeout)
    })
    .await?;

    proxy.set_mode(Mode::BlackHole).await?;
    // Nothing closes the connection: only the unanswered PING tells it is gone.
    let ((), noticed) = eventually(PROMPT, || async {
        (!subscription.is_active()).then_some(())
    })
    .await?;
    eprintln!("the black hole was noticed after {noticed:?}");
    assert!(noticed <= ping_interval + connect_timeout + Duration::from_millis(200));
    // Messages published meanwhile are lost (pub/sub stores nothing); the handle waits.
    publisher.publish(subscription.channel(), b"lost").await?;

    proxy.set_mode(Mode::Pass).await?;
    let took = delivered_after_heal(&publisher, &mut subscription, PROMPT).await?;
    eprintln!("a message published after the heal arrived within {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(subscription.generation() >= 2);
    assert!(client.stats().reconnects >= 1);
    Ok(())
}
