//! Workers: run a handler over every message of a queue, with bounded concurrency, settling
//! each delivery with the handler's [`Outcome`] and stopping gracefully.
//!
//! A handler that panics counts as a failure to retry (the worker survives it). On stop the
//! worker cancels its consumer ([`Consumer::cancel`](crate::Consumer::cancel): no new
//! messages, on RabbitMQ a `basic.cancel` that keeps the channel open) and waits up to its
//! grace period for the handlers running, whose outcomes are still recorded (their acks
//! land); only then does it drop the consumer. What the handlers do not finish within the
//! grace period, and what the consumer had received but not handed out, stays unsettled and
//! is delivered again.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::queue::{ConsumeOptions, Message, Outcome, Queue, QueueError, Result};

/// Settings of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Deliveries held at once (RabbitMQ prefetch, database claim batch; default 50).
    pub prefetch: u16,
    /// Handlers running at once (default 8).
    pub concurrency: usize,
    /// How long a stopping worker waits for running handlers (default 10 s).
    pub grace: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            prefetch: 50,
            concurrency: 8,
            grace: Duration::from_secs(10),
        }
    }
}

/// Consumes `queue_name` from `queue` and runs `handler` on each message until `stop` is
/// cancelled; then stops taking messages, lets the running handlers finish and settle, and
/// returns, after the grace period at the latest.
///
/// # Errors
/// When consuming cannot start (a bad queue name, say).
pub async fn run<Q, F, Fut>(
    queue: &Q,
    queue_name: &str,
    options: WorkerOptions,
    handler: F,
    stop: CancellationToken,
) -> Result<()>
where
    Q: Queue,
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let mut consumer = queue
        .consume(
            queue_name,
            ConsumeOptions {
                prefetch: options.prefetch,
            },
        )
        .await?;
    let handler = Arc::new(handler);
    let slots = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.map_err(|_| QueueError::Closed)?,
        };
        let delivery = tokio::select! {
            () = stop.cancelled() => break,
            delivery = consumer.next() => delivery,
        };
        let Some(delivery) = delivery else {
            tracing::warn!(queue = queue_name, "consumer ended");
            break;
        };
        // Reap finished handlers so the set does not grow.
        while running.try_join_next().is_some() {}
        let handler = handler.clone();
        running.spawn(async move {
            let _slot = slot;
            let message = delivery.message.clone();
            let id = message.id.clone();
            let queue = message.queue.clone();
            // The handler runs in its own task so that a panic is an outcome, not a crash.
            let outcome = match tokio::spawn(handler(message)).await {
                Ok(outcome) => outcome,
                Err(err) if err.is_panic() => {
                    tracing::error!(queue = %queue, message = %id, "handler panicked");
                    Outcome::Retry("the handler panicked".to_owned())
                }
                Err(_) => return, // cancelled: leave the message unsettled
            };
            if let Err(err) = delivery.settle(outcome).await {
                tracing::warn!(queue = %queue, message = %id, error = %err,
                    "cannot settle a delivery; it will be delivered again");
            }
        });
    }
    // Take nothing more, but keep the consumer (on RabbitMQ its channel) until the running
    // handlers have settled: dropping it first would give their messages back to the broker
    // and fail their acks.
    consumer.cancel();
    let drained = tokio::time::timeout(options.grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            queue = queue_name,
            left = running.len(),
            "worker stopped with handlers still running; their messages will come again"
        );
        running.abort_all();
    }
    drop(consumer);
    Ok(())
}
