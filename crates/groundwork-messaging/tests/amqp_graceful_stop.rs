//! RabbitMQ graceful stop: a worker told to stop takes no new messages but keeps its channel
//! open until the handlers running have settled, so a handler in progress finishes and its
//! ack lands (the message is not delivered again); what the consumer had received but not
//! started goes back to the queue; a handler that outlives the grace period leaves its
//! message to be delivered again.

#[path = "common/amqp.rs"]
mod amqp_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use amqp_common::{PROMPT, amqp_url, delete_topology, eventually, next_within, options, unique};
use groundwork_messaging::amqp::AmqpQueue;
use groundwork_messaging::worker::{self, WorkerOptions};
use groundwork_messaging::{ConsumeOptions, Outcome, Outgoing, Queue};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A worker over `name` whose handler signals `started`, takes `work`, counts the message in
/// `done` and acknowledges it.
fn spawn_worker(
    queue: &AmqpQueue,
    name: &str,
    options: WorkerOptions,
    work: Duration,
    started: Arc<Notify>,
    done: Arc<AtomicU32>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<groundwork_messaging::Result<()>> {
    let queue = queue.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        worker::run(
            &queue,
            &name,
            options,
            move |_message| {
                let started = started.clone();
                let done = done.clone();
                async move {
                    started.notify_one();
                    tokio::time::sleep(work).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Outcome::Ack
                }
            },
            stop,
        )
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_at_stop_finishes_and_its_ack_lands() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_handler_running_at_stop_finishes_and_its_ack_lands") else {
        return Ok(());
    };
    let name = unique("graceful-stop");
    let queue = AmqpQueue::new(&url, options())?;
    queue
        .publish(&name, Outgoing::with_id("in-progress", &b"work"[..]))
        .await?;
    for n in 0..2 {
        queue
            .publish(&name, Outgoing::with_id(format!("waiting-{n}"), &b"w"[..]))
            .await?;
    }

    let started = Arc::new(Notify::new());
    let done = Arc::new(AtomicU32::new(0));
    let stop = CancellationToken::new();
    // One handler at a time: the first message runs, the two others wait in the consumer.
    let worker = spawn_worker(
        &queue,
        &name,
        WorkerOptions {
            prefetch: 10,
            concurrency: 1,
            grace: Duration::from_secs(10),
        },
        Duration::from_millis(1200),
        started.clone(),
        done.clone(),
        stop.clone(),
    );
    tokio::time::timeout(PROMPT, started.notified())
        .await
        .map_err(|_| anyhow::anyhow!("the handler did not start"))?;
    let stopping = Instant::now();
    stop.cancel();
    tokio::time::timeout(PROMPT, worker).await???;
    // It waited for the handler in progress (but not for the grace period).
    assert!(
        stopping.elapsed() >= Duration::from_millis(800),
        "{:?}",
        stopping.elapsed()
    );
    assert!(stopping.elapsed() < Duration::from_secs(9));
    assert_eq!(done.load(Ordering::SeqCst), 1, "exactly one handler ran");

    // Its ack landed: acknowledged through this handle, and nothing is unacknowledged.
    eventually(
        "the two waiting messages are back, the first is gone",
        || async {
            let stats = queue.stats(&name).await?;
            assert_eq!(stats.acked, 1, "{stats:?}");
            Ok(stats.depth == 2 && stats.in_flight == 0)
        },
    )
    .await?;
    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let mut ids = Vec::new();
    while let Some(delivery) = next_within(&mut consumer, Duration::from_secs(1)).await {
        ids.push(delivery.message.id.clone());
        delivery.ack().await?;
    }
    ids.sort();
    // The message handled during the stop is not delivered again.
    assert_eq!(ids, ["waiting-0", "waiting-1"]);

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_outliving_the_grace_period_leaves_its_message() -> anyhow::Result<()> {
    let Some(url) = amqp_url("a_handler_outliving_the_grace_period_leaves_its_message") else {
        return Ok(());
    };
    let name = unique("grace-over");
    let queue = AmqpQueue::new(&url, options())?;
    queue
        .publish(&name, Outgoing::with_id("slow", &b"work"[..]))
        .await?;

    let started = Arc::new(Notify::new());
    let done = Arc::new(AtomicU32::new(0));
    let stop = CancellationToken::new();
    let worker = spawn_worker(
        &queue,
        &name,
        WorkerOptions {
            prefetch: 10,
            concurrency: 1,
            grace: Duration::from_millis(300),
        },
        Duration::from_secs(30),
        started.clone(),
        done.clone(),
        stop.clone(),
    );
    tokio::time::timeout(PROMPT, started.notified())
        .await
        .map_err(|_| anyhow::anyhow!("the handler did not start"))?;
    stop.cancel();
    tokio::time::timeout(PROMPT, worker).await???;
    assert_eq!(done.load(Ordering::SeqCst), 0);

    // Unsettled when the grace period ended: delivered again.
    let mut consumer = queue.consume(&name, ConsumeOptions::default()).await?;
    let again = next_within(&mut consumer, PROMPT)
        .await
        .ok_or_else(|| anyhow::anyhow!("the message did not come again"))?;
    assert_eq!(again.message.id, "slow");
    assert_eq!(again.message.attempt, 2);
    again.ack().await?;

    drop(consumer);
    queue.shutdown().await;
    delete_topology(&url, &name, 2).await;
    Ok(())
}
