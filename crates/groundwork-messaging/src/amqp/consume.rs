//! Consumers: one task per [`Consumer`] that subscribes on the live connection, forwards the
//! deliveries, and subscribes again after the channel or connection is lost; and settling
//! (ack, retry through a delay queue, dead-letter).
//!
//! Stopping has two steps. [`Consumer::cancel`] sends `basic.cancel`: the broker sends no
//! more deliveries, but the channel stays open, so the deliveries handed out can still be
//! acknowledged (a graceful stop lets running handlers finish and ack). Dropping the
//! [`Consumer`] closes the channel: the broker requeues what is still unacknowledged
//! (deliveries received but never handed out, handlers that did not finish).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, Channel};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connection::{Backoff, Live};
use super::publish::Draft;
use super::stats::InFlight;
use super::topology::{TopologyError, dead_queue, retry_queue};
use super::{AmqpQueue, message_of};
use crate::queue::{BoxFuture, Consumer, Delivery, Message, Outcome, QueueError, Result, Settle};

/// Starts consuming `queue` with `prefetch` unsettled deliveries at most.
pub(super) fn spawn(handle: AmqpQueue, queue: String, prefetch: u16) -> Consumer {
    let (deliveries, receiver) = mpsc::channel(usize::from(prefetch));
    let stop = CancellationToken::new();
    let cancel = CancellationToken::new();
    tokio::spawn(run(
        handle,
        queue,
        prefetch,
        deliveries,
        Tokens {
            stop: stop.clone(),
            cancel: cancel.clone(),
        },
    ));
    Consumer::with_cancel(receiver, stop, cancel)
}

/// How a consumer task is told to stop.
struct Tokens {
    /// The [`Consumer`] was dropped: close the channel.
    stop: CancellationToken,
    /// [`Consumer::cancel`]: no new deliveries, keep the channel for the acks.
    cancel: CancellationToken,
}

/// How long `basic.cancel` may take before the consumer stops forwarding anyway.
const CANCEL_WITHIN: Duration = Duration::from_secs(5);

/// Why forwarding stopped.
enum Ended {
    /// The consumer was dropped, or the handle shut down.
    Stop,
    /// The consumer was cancelled (`basic.cancel` sent): keep the channel until it is
    /// dropped, for the deliveries handed out to be settled.
    Cancelled,
    /// The subscription ended (channel or connection lost, consumer cancelled by the broker).
    Lost(String),
}

/// The consumer task.
async fn run(
    handle: AmqpQueue,
    queue: String,
    prefetch: u16,
    deliveries: mpsc::Sender<Delivery>,
    tokens: Tokens,
) {
    let Tokens { stop, cancel } = tokens;
    let shared = Arc::clone(handle.shared());
    let mut backoff = Backoff::new(shared.options.reconnect_min, shared.options.reconnect_max);
    let mut subscriptions = 0_u64;
    loop {
        let live = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = cancel.cancelled() => return,
            () = deliveries.closed() => return,
            live = shared.wait_live() => match live {
                Some(live) => live,
                None => return, // shut down
            },
        };
        let subscribed = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = cancel.cancelled() => return,
            subscribed = subscribe(&handle, &live, &queue, prefetch) => subscribed,
        };
        let (channel, stream) = match subscribed {
            Ok(subscribed) => subscribed,
            Err(error) => {
                debug!(queue, %error, "cannot subscribe; trying again");
                if live.is_connected() {
                    // Perhaps deleted under us: declare it again.
                    live.forget(&queue);
                } else {
                    shared.suspect();
                }
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_pause()) => continue,
                }
            }
        };
        subscriptions += 1;
        if subscriptions > 1 {
            info!(
                queue,
                generation = live.generation,
                "consumer subscribed again"
            );
        } else {
            debug!(queue, generation = live.generation, "consumer subscribed");
        }
        backoff.reset();
        match forward(
            &handle,
            &queue,
            &channel,
            stream,
            &deliveries,
            &stop,
            &cancel,
        )
        .await
        {
            Ended::Stop => {
                // Unsettled deliveries go back to the queue.
                let _ = channel.close(200, "consumer dropped".into()).await;
                return;
            }
            Ended::Cancelled => {
                // The handlers still running settle on this channel: it stays open until the
                // consumer is dropped (or the handle shuts down), then what is unsettled goes
                // back to the queue.
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = shared.stop.cancelled() => {}
                }
                let _ = channel.close(200, "consumer stopped".into()).await;
                return;
            }
            Ended::Lost(reason) => {
                if live.is_connected() {
                    warn!(queue, %reason, "consumer subscription ended; subscribing again");
                    live.forget(&queue);
                    drop(channel);
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_pause()) => {}
                    }
                } else {
                    // The supervisor logs the lost connection.
                    debug!(queue, %reason, "consumer lost its connection");
                    shared.suspect();
                }
            }
        }
    }
}

/// Declares the topology, opens a channel and subscribes.
async fn subscribe(
    handle: &AmqpQueue,
    live: &Live,
    queue: &str,
    prefetch: u16,
) -> std::result::Result<(Channel, lapin::Consumer), String> {
    match handle.shared().ensure_declared(live, queue).await {
        Ok(()) => {}
        Err(TopologyError::Refused(why)) => return Err(why),
        Err(TopologyError::Transient(err)) => return Err(err.to_string()),
    }
    let channel = live
        .connection
        .create_channel()
        .await
        .map_err(|err| err.to_string())?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|err| err.to_string())?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),                      // a tag made by the broker
            BasicConsumeOptions::default(), // manual acknowledgements
            FieldTable::default(),
        )
        .await
        .map_err(|err| err.to_string())?;
    Ok((channel, consumer))
}

/// Sends `basic.cancel` for `stream`'s subscription on `channel` (bounded by
/// [`CANCEL_WITHIN`]): the broker delivers nothing more to it, and the channel stays open.
async fn cancel_subscription(queue: &str, channel: &Channel, stream: &lapin::Consumer) -> Ended {
    let cancelled = tokio::time::timeout(
        CANCEL_WITHIN,
        channel.basic_cancel(stream.tag(), BasicCancelOptions::default()),
    )
    .await;
    match cancelled {
        Ok(Ok(())) => debug!(
            queue,
            "consumer cancelled; its channel stays open for the acks"
        ),
        Ok(Err(err)) => debug!(queue, error = %err, "basic.cancel failed"),
        Err(_) => debug!(queue, "no answer to basic.cancel within {CANCEL_WITHIN:?}"),
    }
    Ended::Cancelled
}

/// Forwards deliveries until the subscription ends or the consumer stops or is cancelled.
async fn forward(
    handle: &AmqpQueue,
    queue: &str,
    channel: &Channel,
    mut stream: lapin::Consumer,
    deliveries: &mpsc::Sender<Delivery>,
    stop: &CancellationToken,
    cancel: &CancellationToken,
) -> Ended {
    let shared = handle.shared();
    let counters = shared.stats.of(queue);
    loop {
        let next = tokio::select! {
            biased;
            () = stop.cancelled() => return Ended::Stop,
            () = shared.stop.cancelled() => return Ended::Stop,
            () = cancel.cancelled() => return cancel_subscription(queue, channel, &stream).await,
            next = stream.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(err)) => return Ended::Lost(err.to_string()),
            None => return Ended::Lost("the broker cancelled the consumer".into()),
        };
        let lapin::message::Delivery {
            properties,
            data,
            redelivered,
            acker,
            ..
        } = delivery;
        let message = message_of(queue, &properties, data, redelivered);
        let settle = AmqpSettle {
            handle: handle.clone(),
            acker,
            in_flight: InFlight::new(Arc::clone(&counters)),
        };
        let delivery = Delivery::new(message, Box::new(settle));
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ended::Stop,
            // This delivery is dropped unsettled: it goes back when the channel closes.
            () = cancel.cancelled() => return cancel_subscription(queue, channel, &stream).await,
            sent = deliveries.send(delivery) => if sent.is_err() {
                return Ended::Stop;
            },
        }
    }
}

/// Settles one delivery.
struct AmqpSettle {
    handle: AmqpQueue,
    acker: Acker,
    in_flight: InFlight,
}

impl fmt::Debug for AmqpSettle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSettle")
            .field("usable", &self.acker.usable())
            .finish_non_exhaustive()
    }
}

/// How long an ack or nack may take before the delivery is reported unsettled (the broker
/// delivers it again when the channel closes).
const SETTLE_WITHIN: Duration = Duration::from_secs(5);
/// How often a pending ack or nack looks whether the delivery's channel has failed.
const POISON_CHECK: Duration = Duration::from_millis(20);

/// The error of a delivery whose channel is gone.
fn gone() -> QueueError {
    QueueError::Unavailable(
        "the channel of this delivery is closed; the broker will deliver the message again".into(),
    )
}

impl Settle for AmqpSettle {
    fn settle(self: Box<Self>, message: &Message, outcome: Outcome) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.finish(message, outcome).await })
    }
}

impl AmqpSettle {
    async fn finish(self: Box<Self>, message: &Message, outcome: Outcome) -> Result<()> {
        let policy = &self.handle.shared().options.retry;
        match outcome {
            Outcome::Ack => {
                self.ack().await?;
                self.in_flight.counters().acked();
            }
            Outcome::Retry(error) if policy.exhausted(message.attempt) => {
                let dead = dead_queue(&message.queue);
                self.move_to(message, dead, message.attempt, &error).await?;
                self.in_flight.counters().retried();
                self.in_flight.counters().dead_lettered();
            }
            Outcome::Retry(error) => {
                let delay = retry_queue(&message.queue, policy.tier(message.attempt));
                let next = message.attempt.saturating_add(1);
                self.move_to(message, delay, next, &error).await?;
                self.in_flight.counters().retried();
            }
            Outcome::Reject(error) => {
                let dead = dead_queue(&message.queue);
                self.move_to(message, dead, message.attempt, &error).await?;
                self.in_flight.counters().dead_lettered();
            }
        }
        Ok(())
    }

    async fn ack(&self) -> Result<()> {
        if self.acker.poisoned() {
            return Err(gone());
        }
        match self
            .bounded(self.acker.ack(BasicAckOptions::default()))
            .await
        {
            Some(Ok(true)) => Ok(()),
            Some(Ok(false)) | None => Err(gone()),
            Some(Err(err)) => Err(QueueError::Unavailable(format!(
                "acknowledging the delivery failed ({err}); the broker will deliver the message \
                 again"
            ))),
        }
    }

    /// Waits for `settle` (an ack or nack of this delivery), but gives up (`None`) once the
    /// delivery's channel has failed or after [`SETTLE_WITHIN`]: lapin's answer to an ack
    /// sent while its connection breaks can stay pending forever (seen in `amqp_redelivery`
    /// and `amqp_connection_cut`), and the broker delivers the message again anyway.
    async fn bounded(
        &self,
        settle: impl Future<Output = lapin::Result<bool>>,
    ) -> Option<lapin::Result<bool>> {
        let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
        let mut settle = std::pin::pin!(settle);
        loop {
            tokio::select! {
                biased;
                result = &mut settle => return Some(result),
                () = tokio::time::sleep(POISON_CHECK) => {}
            }
            if self.acker.poisoned() || tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Publishes a copy of `message` to `target` for attempt `attempt` and, once the broker
    /// confirmed it, acknowledges the delivery; requeues the delivery when the copy cannot
    /// be confirmed.
    async fn move_to(
        &self,
        message: &Message,
        target: String,
        attempt: u32,
        error: &str,
    ) -> Result<()> {
        if self.acker.poisoned() {
            return Err(gone());
        }
        let copy = Draft::copy(
            target,
            &message.queue,
            &message.id,
            message.payload.clone(),
            attempt,
            error,
        );
        let acker = &self.acker;
        let wanted: &(dyn Fn() -> bool + Send + Sync) = &move || !acker.poisoned();
        let published = self
            .handle
            .shared()
            .publish(&message.queue, vec![copy], None, Some(wanted))
            .await;
        if let Err(err) = published {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            match self.bounded(self.acker.nack(requeue)).await {
                Some(Ok(true)) => debug!(
                    id = %message.id,
                    error = %err,
                    "requeued a delivery whose copy was not confirmed"
                ),
                _ => return Err(gone()),
            }
            return Err(err);
        }
        self.ack().await
    }
}
