//! RabbitMQ round trip: a confirmed publish is consumed with its id, payload and attempt 1,
//! acknowledging removes it; a batch of 1,000 is delivered in full; bad names and
//! unroutable messages fail with a clear error.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::collections::HashSet;
use std::time::Duration;

use amqp_common::{PROMPT, amqp_url, delete_topology, eventually, next_within, options, unique};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue, QueueError};
use lapin::options::QueueDeleteOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_message_is_consumed_and_acknowledged() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_confirmed_message_is_consumed_and_acknowledged") else {
        return Ok(());
    };
    let name = unique("round-trip");
    let queue = AmqpQueue::new(&url, options())?;

    queue
        .publish(&name, Outgoing::with_id("m-1", &b"hello"[..]))
        .await?;
    assert!(queue.is_connected());
    eventually("the message is counted", || async {
        let stats = queue.stats(&name).await?;
        assert_eq!((stats.published, stats.in_flight), (1, 0), "{stats:?}");
        Ok(stats.depth == 1)
    })
    .await?;

    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let delivery = next_within(&mut consumer, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no delivery"))?;
    assert_eq!(delivery.message.id, "m-1");
    assert_eq!(&delivery.message.payload[..], b"hello");
    assert_eq!(delivery.message.attempt, 1);
    assert_eq!(delivery.message.queue, name);
    assert_eq!(queue.stats(&name).await?.in_flight, 1);
    delivery.ack().await?;

    let stats = queue.stats(&name).await?;
    assert_eq!(
        (
            stats.depth,
            stats.in_flight,
            stats.acked,
            stats.dead_lettered,
            stats.delayed
        ),
        (0, 0, 1, 0, 0),
        "{stats:?}"
    );
    // Acknowledged: it does not come again.
    assert!(
        next_within(&mut consumer, Duration::from_millis(300))
            .await
            .is_none()
    );

    drop(consumer);
    queue.shutdown().await;
    assert!(!queue.is_connected());
    let after = queue.publish(&name, Outgoing::new(&b"late"[..])).await;
    assert!(matches!(after, Err(QueueError::Closed)), "{after:?}");
    delete_topology(&url, &name, 2).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_thousand_is_delivered() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_batch_of_a_thousand_is_delivered") else {
        return Ok(());
    };
    let name = unique("batch");
    let queue = AmqpQueue::new(&url, options())?;
    let payload = vec![b'x'; 1024];
    let batch: Vec<Outgoing> = (0..1000)
        .map(|i| Outgoing::with_id(format!("b-{i}"), payload.clone()))
        .collect();
    let expected: HashSet<String> = batch.iter().map(|m| m.id.clone()).collect();

    queue.publish_batch(&name, batch).await?;
    eventually("the batch is counted", || async {
        let stats = queue.stats(&name).await?;
        assert_eq!(stats.published, 1000, "{stats:?}");
        Ok(stats.depth == 1000)
    })
    .await?;

    let mut consumer = queue
        .consume(&name, ConsumeOptions { prefetch: 100 })
        .await?;
    let mut seen = HashSet::new();
    while seen.len() < expected.len() {
        let delivery = next_within(&mut consumer, PROMPT)
            .await
            .ok_or_else(|| anyhow::anyhow!("only {} of 1000 delivered", seen.len()))?;
        assert_eq!(delivery.message.payload.len(), 1024);
        assert_eq!(delivery.message.attempt, 1);
        seen.insert(delivery.message.id.clone());
        delivery.ack().await?;
    }
    assert_eq!(seen, expected);
    assert!(
        next_within(&mut consumer, Duration::from_millis(300))
            .await
            .is_none()
    );

    eventually("the queue drains", || async {
        let stats = queue.stats(&name).await?;
        Ok(stats.depth == 0 && stats.in_flight == 0 && stats.acked == 1000)
    })
    .await?;

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_unroutable_messages_are_refused() -> anyhow::Result<()> {
    let Some(url) = amqp_url("bad_names_and_unroutable_messages_are_refused") else {
        return Ok(());
    };
    let name = unique("refused");
    let queue = AmqpQueue::new(&url, options())?;

    let bad = queue.publish("no spaces", Outgoing::new(&b"x"[..])).await;
    assert!(matches!(bad, Err(QueueError::Invalid(_))), "{bad:?}");
    let no_id = queue.publish(&name, Outgoing::with_id("", &b"x"[..])).await;
    assert!(matches!(no_id, Err(QueueError::Invalid(_))), "{no_id:?}");
    let bad_consumer = queue.consume("", ConsumeOptions::default()).await;
    assert!(
        matches!(bad_consumer, Err(QueueError::Invalid(_))),
        "{bad_consumer:?}"
    );

    // RabbitMQ reserves `amq.*`: declaring it is refused, and the error says why.
    let reserved = format!("amq.{name}");
    let refused = queue.publish(&reserved, Outgoing::new(&b"x"[..])).await;
    match refused {
        Err(QueueError::Refused(why)) => assert!(why.contains(&reserved), "{why}"),
        other => panic!("publishing to {reserved}: {other:?}"),
    }

    // The queue exists, then is deleted behind the handle's back: the broker returns the
    // mandatory message, and the publish fails instead of losing it silently.
    queue.publish(&name, Outgoing::new(&b"first"[..])).await?;
    {
        let raw = amqp_common::raw(&url).await?;
        let channel = raw.create_channel().await?;
        channel
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await?;
        let _ = raw.close(200, "done".into()).await;
    }
    let returned = queue
        .publish(&name, Outgoing::with_id("m-returned", &b"lost?"[..]))
        .await;
    match returned {
        Err(QueueError::Refused(why)) => {
            assert!(why.contains("m-returned") && why.contains(&name), "{why}");
        }
        other => panic!("publishing to a deleted queue: {other:?}"),
    }
    // The next publish declares the queue again.
    queue
        .publish(&name, Outgoing::with_id("m-after", &b"back"[..]))
        .await?;
    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let delivery = next_within(&mut consumer, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no delivery after the queue came back"))?;
    assert_eq!(delivery.message.id, "m-after");
    delivery.ack().await?;

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}
