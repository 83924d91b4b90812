//! RabbitMQ with the database's inbox and outbox: a consumer that processes a message and
//! dies before acking gets it again, and the inbox makes the second processing a no-op; the
//! outbox relay keeps staged messages while the broker is unreachable and publishes them
//! once it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/amqp.rs"]
mod amqp_common;
mod db_common;

use std::time::Duration;

use amqp_common::{amqp_url, delete_topology, eventually, next_within, options, unique};
use groundwork_db::NewMessage;
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::outbox::{OutboxRelay, RelayOptions};
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_processed_before_its_consumer_died_is_processed_once() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_message_processed_before_its_consumer_died") else {
        return Ok(());
    };
    let t = db_common::sqlite().await?;
    let name = unique("inbox");
    let effects = std::sync::atomic::AtomicU32::new(0);
    // The consumer's effect and its inbox row commit together; a known id changes nothing.
    let process = |id: String| {
        let db = t.db.clone();
        let effects = &effects;
        async move {
            if db.inbox().record("worker", &id).await? {
                effects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            anyhow::Ok(())
        }
    };

    let publisher = AmqpQueue::new(&url, options())?;
    publisher
        .publish(&name, Outgoing::with_id("once", &b"x"[..]))
        .await?;

    // First consumer: processes it, then its connection dies before the ack.
    let first = AmqpQueue::new(&url, options())?;
    let mut consumer = first.consume(&name, ConsumeOptions::default()).await?;
    let delivery = next_within(&mut consumer, Duration::from_secs(10))
        .await
        .expect("a delivery");
    assert_eq!(delivery.message.attempt, 1);
    process(delivery.message.id.clone()).await?;
    first.shutdown().await;
    drop((delivery, consumer));

    // Second consumer: the broker delivers it again; the inbox says it is done.
    let second = AmqpQueue::new(&url, options())?;
    let mut consumer = second.consume(&name, ConsumeOptions::default()).await?;
    let again = next_within(&mut consumer, Duration::from_secs(10))
        .await
        .expect("the message again");
    assert_eq!(again.message.id, "once");
    assert!(
        again.message.attempt >= 2,
        "attempt {}",
        again.message.attempt
    );
    process(again.message.id.clone()).await?;
    again.ack().await?;
    assert!(
        next_within(&mut consumer, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(effects.load(std::sync::atomic::Ordering::SeqCst), 1);

    drop(consumer);
    second.shutdown().await;
    publisher.shutdown().await;
    delete_topology(&url, &name, 2).await;
    t.cleanup().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_relays_after_the_broker_comes_back() -> anyhow::Result<()> {
    let Some(url) = amqp_url("the_outbox_relays_after_the_broker_comes_back") else {
        return Ok(());
    };
    let t = db_common::sqlite().await?;
    let name = unique("outbox");
    let proxy = TcpProxy::start(upstream_of(&url).await?).await?;
    proxy.set_mode(Mode::Refuse).await?;
    let through_proxy = AmqpQueue::new(&with_port(&url, proxy.port()), options())?;
    let relay = OutboxRelay::new(
        t.db.clone(),
        through_proxy.clone(),
        RelayOptions {
            poll: Duration::from_millis(20),
            ..RelayOptions::default()
        },
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let task = relay.spawn(stop.clone());

    let staged: Vec<NewMessage> = (0..100)
        .map(|n| NewMessage {
            queue: name.clone(),
            message_id: format!("o-{n}"),
            payload: format!("{n}").into_bytes(),
        })
        .collect();
    t.db.outbox().stage(&staged).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        t.db.outbox().pending().await?,
        100,
        "nothing leaves while refused"
    );

    proxy.set_mode(Mode::Pass).await?;
    eventually("the outbox drains", || async {
        Ok(t.db.outbox().pending().await? == 0)
    })
    .await?;

    // Every staged message reached the broker (read directly, not through the proxy).
    let direct = AmqpQueue::new(&url, options())?;
    let mut consumer = direct.consume(&name, ConsumeOptions::default()).await?;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 100 {
        let delivery = next_within(&mut consumer, Duration::from_secs(10))
            .await
            .expect("every staged message");
        seen.insert(delivery.message.id.clone());
        delivery.ack().await?;
    }
    stop.cancel();
    task.await?;
    drop(consumer);
    direct.shutdown().await;
    through_proxy.shutdown().await;
    delete_topology(&url, &name, 2).await;
    t.cleanup().await;
    Ok(())
}
