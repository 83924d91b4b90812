//! RabbitMQ dead-lettering: a poison message whose handler always asks for a retry is
//! delivered exactly `max_attempts` times (through the delay queues) and then lands in
//! `q.dead` with its attempt count and last error; a rejected message goes there at once.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::time::{Duration, Instant};

use amqp_common::{
    PROMPT, amqp_url, delete_topology, drain, eventually, next_within, options, policy, unique,
};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_max_attempts() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_poison_message_is_dead_lettered_after_max_attempts") else {
        return Ok(());
    };
    let name = unique("poison");
    let queue = AmqpQueue::new(&url, options())?;
    let max_attempts = policy().max_attempts;
    queue
        .publish(&name, Outgoing::with_id("poison-1", &b"{"[..]))
        .await?;

    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let mut deliveries = 0;
    let mut last = Instant::now();
    while deliveries < max_attempts {
        let delivery = next_within(&mut consumer, PROMPT).await.ok_or_else(|| {
            anyhow::anyhow!("only {deliveries} deliveries of {max_attempts} came")
        })?;
        deliveries += 1;
        assert_eq!(delivery.message.id, "poison-1");
        assert_eq!(&delivery.message.payload[..], b"{");
        assert_eq!(delivery.message.attempt, deliveries);
        if deliveries > 1 {
            // It waited in a delay queue (50 ms, then 100 ms) before coming back.
            assert!(
                last.elapsed() >= Duration::from_millis(40),
                "{:?}",
                last.elapsed()
            );
        }
        delivery.retry(format!("boom {deliveries}")).await?;
        last = Instant::now();
    }

    eventually("the message is dead-lettered", || async {
        Ok(queue.stats(&name).await?.dead_lettered == 1)
    })
    .await?;
    // Exactly max_attempts deliveries: nothing more comes, even after the longest delay.
    assert!(
        next_within(&mut consumer, Duration::from_secs(1))
            .await
            .is_none(),
        "delivered more than {max_attempts} times"
    );
    let stats = queue.stats(&name).await?;
    assert_eq!(
        (
            stats.depth,
            stats.delayed,
            stats.in_flight,
            stats.dead_lettered,
            stats.retried
        ),
        (0, 0, 0, 1, u64::from(max_attempts)),
        "{stats:?}"
    );

    let dead = drain(&url, &format!("{name}.dead")).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id.as_deref(), Some("poison-1"));
    assert_eq!(dead[0].payload, b"{");
    assert_eq!(dead[0].attempt, Some(i64::from(max_attempts)));
    assert_eq!(dead[0].error.as_deref(), Some("boom 5"));

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_message_is_dead_lettered_at_once() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_rejected_message_is_dead_lettered_at_once") else {
        return Ok(());
    };
    let name = unique("rejected");
    let queue = AmqpQueue::new(&url, options())?;
    queue
        .publish(&name, Outgoing::with_id("bad-1", &b"not json"[..]))
        .await?;

    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let delivery = next_within(&mut consumer, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no delivery"))?;
    assert_eq!(delivery.message.attempt, 1);
    delivery.reject("cannot parse").await?;

    eventually("the message is dead-lettered", || async {
        Ok(queue.stats(&name).await?.dead_lettered == 1)
    })
    .await?;
    let stats = queue.stats(&name).await?;
    assert_eq!(
        (
            stats.depth,
            stats.delayed,
            stats.in_flight,
            stats.dead_lettered,
            stats.retried
        ),
        (0, 0, 0, 1, 0),
        "{stats:?}"
    );
    assert!(
        next_within(&mut consumer, Duration::from_millis(500))
            .await
            .is_none()
    );

    let dead = drain(&url, &format!("{name}.dead")).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id.as_deref(), Some("bad-1"));
    assert_eq!(dead[0].attempt, Some(1));
    assert_eq!(dead[0].error.as_deref(), Some("cannot parse"));

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}
