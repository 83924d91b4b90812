//! RabbitMQ topology: the work queue and the delay queues are quorum queues that dead-letter
//! at least once (checked by declaring them again with exactly those arguments: RabbitMQ
//! refuses a declaration whose arguments differ); queues left by an earlier version (a
//! classic delay queue, a quorum work queue dead-lettering at most once) are used as they
//! are, and retries still go through them.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::time::Duration;

use amqp_common::{PROMPT, amqp_url, delete_topology, next_within, options, policy, unique};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// The arguments of the work queue `name`: with dead-lettering `strategy` (and
/// `reject-publish` overflow), or as the previous version declared it (`None`).
fn work_arguments(name: &str, strategy: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-dead-letter-exchange".into(), text(""));
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        text(&format!("{name}.dead")),
    );
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(policy().max_attempts * 2)),
    );
    if let Some(strategy) = strategy {
        arguments.insert("x-dead-letter-strategy".into(), text(strategy));
        arguments.insert("x-overflow".into(), text("reject-publish"));
    }
    arguments
}

/// The arguments of delay queue `tier` of `name`: a quorum queue dead-lettering at least once,
/// or (`quorum` false) the classic queue of the previous version.
fn delay_arguments(name: &str, tier: usize, quorum: bool) -> FieldTable {
    let delay = policy().delays[tier];
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
    );
    arguments.insert("x-dead-letter-exchange".into(), text(""));
    arguments.insert("x-dead-letter-routing-key".into(), text(name));
    if quorum {
        arguments.insert("x-queue-type".into(), text("quorum"));
        arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        arguments.insert("x-overflow".into(), text("reject-publish"));
    }
    arguments
}

/// Declares `queue` with `arguments` on a channel of its own: whether the broker accepted
/// them (it refuses arguments that differ from the existing queue's).
async fn declares_as(connection: &lapin::Connection, queue: &str, arguments: FieldTable) -> bool {
    let Ok(channel) = connection.create_channel().await else {
        return false;
    };
    let declared = channel
        .queue_declare(queue.into(), durable(), arguments)
        .await
        .is_ok();
    let _ = channel.close(200, "checked".into()).await;
    declared
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_dead_letter_at_least_once() -> anyhow::Result<()> {
    let Some(url) = amqp_url("queues_dead_letter_at_least_once") else {
        return Ok(());
    };
    let name = unique("topology");
    let queue = AmqpQueue::new(&url, options())?;
    queue.declare(&name).await?;

    let raw = amqp_common::raw(&url).await?;
    assert!(
        declares_as(&raw, &name, work_arguments(&name, Some("at-least-once"))).await,
        "the work queue is not a quorum queue dead-lettering at least once"
    );
    // The check can fail: other arguments are refused.
    assert!(!declares_as(&raw, &name, work_arguments(&name, Some("at-most-once"))).await);
    assert!(!declares_as(&raw, &name, work_arguments(&name, None)).await);
    for tier in 0..policy().delays.len() {
        let delay = format!("{name}.retry.{tier}");
        assert!(
            declares_as(&raw, &delay, delay_arguments(&name, tier, true)).await,
            "{delay} is not a quorum queue with a TTL dead-lettering at least once"
        );
    }
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), text("quorum"));
    assert!(declares_as(&raw, &format!("{name}.dead"), quorum).await);
    let _ = raw.close(200, "done".into()).await;

    queue.shutdown().await;
    delete_topology(&url, &name, policy().delays.len()).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_an_earlier_version_are_used_as_they_are() -> anyhow::Result<()> {
    let Some(url) = amqp_url("queues_of_an_earlier_version_are_used_as_they_are") else {
        return Ok(());
    };
    let name = unique("old-topology");
    // What the previous version declared: a quorum work queue dead-lettering at most once,
    // classic delay queues.
    let raw = amqp_common::raw(&url).await?;
    assert!(declares_as(&raw, &name, work_arguments(&name, None)).await);
    for tier in 0..policy().delays.len() {
        let classic = delay_arguments(&name, tier, false);
        assert!(declares_as(&raw, &format!("{name}.retry.{tier}"), classic).await);
    }

    let queue = AmqpQueue::new(&url, options())?;
    queue
        .publish(&name, Outgoing::with_id("m-1", &b"x"[..]))
        .await?;
    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let first = next_within(&mut consumer, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("no delivery"))?;
    assert_eq!(first.message.attempt, 1);
    // A retry goes through the old classic delay queue and comes back.
    first.retry("again").await?;
    let second = next_within(&mut consumer, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("the retry did not come back"))?;
    assert_eq!(second.message.id, "m-1");
    assert_eq!(second.message.attempt, 2);
    second.ack().await?;
    assert!(
        next_within(&mut consumer, Duration::from_millis(300))
            .await
            .is_none()
    );
    // Still the old queues: declaring the new arguments is refused.
    assert!(!declares_as(&raw, &name, work_arguments(&name, Some("at-least-once"))).await);
    assert!(declares_as(&raw, &name, work_arguments(&name, None)).await);
    let _ = raw.close(200, "done".into()).await;

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, policy().delays.len()).await;
    Ok(())
}
