//! RabbitMQ publishing throughput with 1 KB messages: `publish_batch` pipelines its
//! publishes (all frames, then all confirms) and reaches 10,000 confirmed messages per
//! second; concurrent `publish` calls share the channel without waiting for each other.
//!
//! Ignored by default (it measures, so it wants a quiet machine):
//! `cargo test -p groundwork-messaging --test amqp_throughput -- --ignored --nocapture`.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::time::Instant;

use amqp_common::{amqp_url, delete_topology, options, unique};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::{Outgoing, Queue};

/// Messages per measurement.
const MESSAGES: usize = 20_000;
/// Messages per batch.
const BATCH: usize = 1_000;
/// Concurrent publishing tasks.
const TASKS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it alone, with --ignored"]
async fn batches_publish_ten_thousand_messages_a_second() -> anyhow::Result<()> {
    let Some(url) = amqp_url("batches_publish_ten_thousand_messages_a_second") else {
        return Ok(());
    };
    let name = unique("throughput");
    let queue = AmqpQueue::new(&url, options())?;
    queue.declare(&name).await?;
    let payload = bytes::Bytes::from(vec![b'x'; 1024]);

    let started = Instant::now();
    for batch in 0..MESSAGES / BATCH {
        let messages = (0..BATCH)
            .map(|i| Outgoing::with_id(format!("b{batch}-{i}"), payload.clone()))
            .collect();
        queue.publish_batch(&name, messages).await?;
    }
    let batched = rate(MESSAGES, started);

    let started = Instant::now();
    let per_task = MESSAGES / TASKS;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (queue, name, payload) = (queue.clone(), name.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                queue
                    .publish(
                        &name,
                        Outgoing::with_id(format!("t{task}-{i}"), payload.clone()),
                    )
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let concurrent = rate(per_task * TASKS, started);
    eprintln!(
        "publish_batch: {batched:.0} msg/s; {TASKS} concurrent publishers: {concurrent:.0} msg/s"
    );

    let stats = queue.stats(&name).await?;
    assert_eq!(stats.published, u64::try_from(MESSAGES + per_task * TASKS)?);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    assert!(batched >= 10_000.0, "publish_batch: {batched:.0} msg/s");
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn rate(messages: usize, started: Instant) -> f64 {
    messages as f64 / started.elapsed().as_secs_f64()
}
