//! RabbitMQ redelivery: a delivery that is never settled, because its consumer was dropped
//! or its connection closed, comes again to the next consumer as attempt 2; settling it on
//! the dead connection fails with `Unavailable` instead of pretending.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::time::Duration;

use amqp_common::{PROMPT, amqp_url, delete_topology, eventually, next_within, options, unique};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue, QueueError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_consumer_gives_its_delivery_back() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_dropped_consumer_gives_its_delivery_back") else {
        return Ok(());
    };
    let name = unique("dropped-consumer");
    let queue = AmqpQueue::new(&url, options())?;
    queue
        .publish(&name, Outgoing::with_id("m-1", &b"again"[..]))
        .await?;

    let mut first = queue.consume(&name, ConsumeOptions::default()).await?;
    let delivery = next_within(&mut first, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no first delivery"))?;
    assert_eq!(delivery.message.attempt, 1);
    // The handler "crashes": neither the delivery nor its consumer settle anything.
    drop(delivery);
    drop(first);

    let mut second = queue.consume(&name, ConsumeOptions::default()).await?;
    let again = next_within(&mut second, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("the message did not come again"))?;
    assert_eq!(again.message.id, "m-1");
    assert_eq!(&again.message.payload[..], b"again");
    assert_eq!(again.message.attempt, 2);
    again.ack().await?;
    assert!(
        next_within(&mut second, Duration::from_millis(500))
            .await
            .is_none()
    );

    eventually("nothing left", || async {
        let stats = queue.stats(&name).await?;
        Ok(stats.depth == 0 && stats.in_flight == 0 && stats.acked == 1)
    })
    .await?;
    drop(second);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_gives_its_delivery_back() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_closed_connection_gives_its_delivery_back") else {
        return Ok(());
    };
    let name = unique("closed-connection");
    let publisher = AmqpQueue::new(&url, options())?;
    publisher
        .publish(&name, Outgoing::with_id("m-1", &b"again"[..]))
        .await?;

    let crashing = AmqpQueue::new(&url, options())?;
    let mut first = crashing.consume(&name, ConsumeOptions::default()).await?;
    let delivery = next_within(&mut first, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no first delivery"))?;
    assert_eq!(delivery.message.attempt, 1);
    crashing.shutdown().await;
    // The connection is gone, so the outcome cannot be recorded, and the caller is told.
    let late = delivery.ack().await;
    assert!(matches!(late, Err(QueueError::Unavailable(_))), "{late:?}");
    // The consumer of a shut-down handle ends.
    assert!(next_within(&mut first, PROMPT).await.is_none());

    let mut second = publisher.consume(&name, ConsumeOptions::default()).await?;
    let again = next_within(&mut second, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("the message did not come again"))?;
    assert_eq!(again.message.id, "m-1");
    assert_eq!(again.message.attempt, 2);
    again.ack().await?;
    assert!(
        next_within(&mut second, Duration::from_millis(500))
            .await
            .is_none()
    );

    drop(second);
    publisher.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}
