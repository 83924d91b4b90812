//! The RabbitMQ backend: [`AmqpQueue`], a [`Queue`] over [lapin](https://docs.rs/lapin).
//!
//! # Topology
//!
//! Each logical queue `q` is a small set of durable RabbitMQ queues, declared the first time
//! `q` is used on a connection and again on every new connection:
//!
//! | queue | type | arguments | role |
//! |---|---|---|---|
//! | `q` | quorum | dead-lettering to `q.dead` at least once (`x-dead-letter-strategy` = `at-least-once`, `x-overflow` = `reject-publish`), `x-delivery-limit` = 2 × [`RetryPolicy::max_attempts`] | the work queue |
//! | `q.retry.{i}` | quorum | `x-message-ttl` = [`RetryPolicy::delays`]`[i]`, dead-lettering to `q` at least once | one delay queue per retry delay |
//! | `q.dead` | quorum | | messages that failed [`RetryPolicy::max_attempts`] times, or were rejected |
//!
//! Messages go to the default exchange with routing key `q`. A retry is a copy published to
//! `q.retry.{i}` (with the attempt number in the `x-groundwork-attempt` header) before the
//! original is acknowledged: no consumer reads the delay queues, so the copy expires after
//! the queue's TTL and RabbitMQ dead-letters it back to `q`. Every message of one delay queue
//! has the same TTL, so they expire in order at the head of the queue. A message that fails
//! its last attempt, or is rejected, is copied to `q.dead` the same way (with the error in
//! `x-groundwork-error`).
//!
//! RabbitMQ dead-letters at most once by default: a message expiring from a delay queue, or
//! dead-lettered by the delivery limit, can be lost if a node fails on the way. The
//! `at-least-once` strategy (RabbitMQ 3.10 and later, quorum queues only; it needs the
//! `reject-publish` overflow) keeps the message in its queue until the target confirmed it,
//! which is why the delay queues are quorum queues too (per-queue TTL on quorum queues also
//! needs 3.10).
//!
//! The delivery limit on `q` is only a safety net for consumers that crash before settling,
//! again and again: the broker then dead-letters the message itself, after 2 ×
//! [`RetryPolicy::max_attempts`] + 1 deliveries of one copy. It is not `max_attempts`
//! because the broker also counts the returns of deliveries that were prefetched and never
//! started (a consumer stopping, losing its connection, or killed by another message); see
//! `delivery_limit` in the source. [`Message::attempt`] counts those returns too.
//!
//! Where the broker refuses these arguments, weaker ones are declared instead, in order: a
//! quorum queue dead-lettering at most once (before 3.10), then a classic durable queue (no
//! quorum queues at all); a warning says so.
//!
//! ## Queues that exist already
//!
//! RabbitMQ cannot change the arguments of a queue, and refuses a declaration with other
//! arguments (`PRECONDITION_FAILED`). A queue that exists with other arguments (declared by an
//! earlier version, with another retry policy, or by hand) is used as it is, with a warning,
//! so an upgrade never stops consumers. To give an existing deployment the at-least-once
//! topology:
//! - work queues (quorum already): set the arguments through a policy, which needs no
//!   redeclaration, e.g. `rabbitmqctl set_policy --apply-to queues gw-dlx-safe
//!   '^prefix\.' '{"dead-letter-strategy":"at-least-once","overflow":"reject-publish"}'`
//!   (a policy applies to the queues its pattern matches; the arguments declared here are
//!   kept);
//! - delay queues (classic before): delete each `q.retry.{i}` while it is empty (`rabbitmqctl
//!   delete_queue --if-empty`); the next retry finds it missing (the copy is returned and the
//!   original requeued, so nothing is lost) and declares it again as a quorum queue;
//! - or move to new queue names with `GROUNDWORK_QUEUE_PREFIX` once the old queues are
//!   drained.
//!
//! # Delivery guarantees
//!
//! - [`Queue::publish`] returns once the broker confirmed the message (a publisher confirm
//!   on a persistent message in a durable queue). Publishing is mandatory: a message that no
//!   queue takes is returned by the broker and the publish fails with
//!   [`QueueError::Refused`], as with a negative confirm.
//! - A publish that loses its connection before the confirm arrives is sent again on the next
//!   connection, until [`AmqpOptions::publish_timeout`]. The broker may then hold it twice:
//!   delivery is at least once, and consumers deduplicate by message id.
//! - Consumers acknowledge manually, at most `prefetch` deliveries are unsettled at once, and
//!   a delivery that is never settled (its consumer dropped, its connection lost) is delivered
//!   again, with a higher [`Message::attempt`].
//! - A retry or a dead-lettering is confirmed by the broker before the original delivery is
//!   acknowledged; if that copy cannot be confirmed, the original is requeued.
//! - [`Consumer::cancel`](crate::Consumer::cancel) (a worker stopping) sends `basic.cancel`
//!   and keeps the channel open, so the handlers running can still acknowledge; dropping
//!   the consumer afterwards closes the channel and returns what is left unacknowledged.
//!
//! # Why a supervisor
//!
//! A lapin [`Connection`](lapin::Connection) is dead once its socket fails, and lapin's own
//! recovery is experimental and does not always finish after a broker restart. So each
//! [`AmqpQueue`] runs one background task, started on first use, that owns the connection:
//! it connects with exponential backoff and jitter, opens the publishing channel, declares
//! the topology of every queue used so far, and publishes the live connection to the
//! publishers and consumers waiting for it. It watches the connection (lapin's error events,
//! its state, and reports of failing operations) and starts over as soon as it is lost;
//! consumers then subscribe again on the new connection by themselves, and unconfirmed
//! publishes are sent again.
//!
//! ```no_run
//! # async fn example() -> Result<(), groundwork_messaging::QueueError> {
//! use groundwork_messaging::amqp::{AmqpOptions, AmqpQueue};
//! use groundwork_messaging::{ConsumeOptions, Outgoing, Queue};
//!
//! let queue = AmqpQueue::new("amqp://guest:guest@127.0.0.1:5672/%2f", AmqpOptions::default())?;
//! queue.publish("emails", Outgoing::new(&b"hello"[..])).await?;
//!
//! let mut consumer = queue.consume("emails", ConsumeOptions::default()).await?;
//! while let Some(delivery) = consumer.next().await {
//!     // ... handle delivery.message ...
//!     delivery.ack().await?;
//! }
//! # Ok(())
//! # }
//! ```

mod connection;
mod consume;
mod publish;
mod stats;
mod topology;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lapin::uri::AMQPUri;
use tokio::time::Instant;

use crate::queue::{
    ConsumeOptions, Consumer, Message, Outgoing, Queue, QueueError, QueueStats, Result,
    RetryPolicy, validate_queue_name,
};
use connection::Shared;
use publish::Draft;

/// Options of an [`AmqpQueue`].
///
/// ```
/// use std::time::Duration;
/// use groundwork_messaging::RetryPolicy;
/// use groundwork_messaging::amqp::AmqpOptions;
///
/// let options = AmqpOptions {
///     retry: RetryPolicy { max_attempts: 3, delays: vec![Duration::from_secs(10)] },
///     ..AmqpOptions::default()
/// };
/// assert_eq!(options.publish_timeout, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// When failed deliveries come back, and when they go to the dead-letter queue. Default:
    /// [`RetryPolicy::default`] (5 attempts; 1 s, 5 s, 30 s, then 2 min between them). Each
    /// delay is a delay queue `q.retry.{i}`; the delay queues of a queue that exists already
    /// keep the delays they were created with.
    pub retry: RetryPolicy,
    /// How long a publish keeps trying, through reconnections, before it fails with
    /// [`QueueError::Timeout`]. Default: 30 s (a broker restart takes a few seconds; a caller
    /// that must not wait that long can time out sooner itself).
    pub publish_timeout: Duration,
    /// How long one connection attempt may take (TCP, AMQP handshake and the publishing
    /// channel). Default: 5 s.
    pub connect_timeout: Duration,
    /// The AMQP heartbeat asked of the broker, unless the URL has a `heartbeat` parameter:
    /// a connection silent for about twice as long is considered dead (the network dropped
    /// it without closing it). Default: 10 s. Zero disables heartbeats.
    pub heartbeat: Duration,
    /// The first pause between two connection attempts; it doubles after each failure, up to
    /// [`AmqpOptions::reconnect_max`], and each pause is drawn between half and all of it
    /// (jitter, so that many clients do not reconnect in step). Default: 100 ms.
    pub reconnect_min: Duration,
    /// The longest pause between two connection attempts. Default: 5 s.
    pub reconnect_max: Duration,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            publish_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

impl AmqpOptions {
    fn check(&self) -> Result<()> {
        self.retry.check()?;
        for (tier, delay) in self.retry.delays.iter().enumerate() {
            if delay.as_millis() > u128::from(u32::MAX) {
                return Err(QueueError::Invalid(format!(
                    "retry delay {tier} ({delay:?}) is longer than RabbitMQ's longest TTL (about 49 days)"
                )));
            }
        }
        if self.publish_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(QueueError::Invalid(
                "publish_timeout and connect_timeout must be longer than zero".into(),
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(QueueError::Invalid(
                "reconnect_min must be longer than zero and at most reconnect_max".into(),
            ));
        }
        if self.heartbeat.as_secs() > u64::from(u16::MAX) {
            return Err(QueueError::Invalid(format!(
                "heartbeat {:?} is longer than AMQP allows ({} s)",
                self.heartbeat,
                u16::MAX
            )));
        }
        Ok(())
    }
}

/// A [`Queue`] on RabbitMQ. See the [module documentation](crate::amqp) for the topology, the
/// guarantees and the connection supervisor.
///
/// Cheap to clone: clones share one connection, its supervisor and the counters. The
/// supervisor stops when the last clone (including those held by running consumers and
/// unsettled deliveries) is dropped, or at [`AmqpQueue::shutdown`].
#[derive(Clone)]
pub struct AmqpQueue {
    inner: Arc<Inner>,
}

/// Stops the supervisor when the last handle goes.
struct Inner {
    shared: Arc<Shared>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl fmt::Debug for AmqpQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpQueue")
            .field("url", &self.inner.shared.display_url)
            .field("connected", &self.is_connected())
            .field("options", &self.inner.shared.options)
            .finish_non_exhaustive()
    }
}

impl AmqpQueue {
    /// A queue handle for the broker at `url` (`amqp://user:password@host:port/vhost`, the
    /// default vhost `/` written `%2f`). Returns at once, without connecting: the connection
    /// is made in the background on first use, and made again whenever it is lost, so the
    /// broker may be down now.
    ///
    /// This build has no TLS for AMQP: an `amqps://` URL is refused here, with the reason,
    /// rather than failing to connect forever.
    ///
    /// # Errors
    /// [`QueueError::Invalid`] when `url` is not an `amqp://` URL (`amqps://` included) or
    /// `options` cannot be used (no retry delay, zero attempts, a zero timeout...).
    pub fn new(url: &str, options: AmqpOptions) -> Result<Self> {
        let display_url = groundwork_core::redact_url(url);
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if scheme == Some("amqps") {
            return Err(QueueError::Invalid(format!(
                "{display_url:?}: amqps:// (TLS) is not supported by this build; use amqp:// on \
                 a private network, or a local TLS-terminating proxy"
            )));
        }
        if scheme != Some("amqp") {
            return Err(QueueError::Invalid(format!(
                "{display_url:?} is not an AMQP URL (amqp://user:password@host:port/vhost)"
            )));
        }
        let mut uri: AMQPUri = url.parse().map_err(|err: String| {
            // The parser's message may quote the URL, password included.
            let err = err.replace(url, &display_url);
            QueueError::Invalid(format!("AMQP URL {display_url:?}: {err}"))
        })?;
        options.check()?;
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = u16::try_from(options.heartbeat.as_secs()).ok();
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(uri, display_url, options)),
            }),
        })
    }

    /// Whether the handle has a live connection now (false before first use, while
    /// reconnecting, and after [`AmqpQueue::shutdown`]).
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.inner.shared.is_connected()
    }

    /// The options the handle was built with.
    #[must_use]
    pub fn options(&self) -> &AmqpOptions {
        &self.inner.shared.options
    }

    /// Stops the supervisor and the consumers of every clone of this handle and closes the
    /// connection (unsettled deliveries go back to their queues). Later operations fail with
    /// [`QueueError::Closed`].
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown().await;
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }
}

impl Queue for AmqpQueue {
    async fn declare(&self, queue: &str) -> Result<()> {
        validate_queue_name(queue)?;
        let shared = self.shared();
        shared.start()?;
        shared
            .declare_within(queue, shared.options.publish_timeout)
            .await
    }

    async fn publish(&self, queue: &str, message: Outgoing) -> Result<()> {
        validate_queue_name(queue)?;
        message.check()?;
        let shared = self.shared();
        shared.start()?;
        let counters = shared.stats.of(queue);
        let draft = Draft::first_attempt(queue, message);
        shared
            .publish(queue, vec![draft], Some(&*counters), None)
            .await
    }

    async fn publish_batch(&self, queue: &str, messages: Vec<Outgoing>) -> Result<()> {
        validate_queue_name(queue)?;
        for message in &messages {
            message.check()?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let shared = self.shared();
        shared.start()?;
        let counters = shared.stats.of(queue);
        let drafts = messages
            .into_iter()
            .map(|message| Draft::first_attempt(queue, message))
            .collect();
        shared.publish(queue, drafts, Some(&*counters), None).await
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        validate_queue_name(queue)?;
        if options.prefetch == 0 {
            return Err(QueueError::Invalid("prefetch must be at least 1".into()));
        }
        let shared = self.shared();
        shared.start()?;
        // Surface a queue the broker refuses now; a broker that is down is waited for by
        // the consumer's task, which declares the topology itself once connected.
        match shared
            .declare_within(queue, shared.options.connect_timeout)
            .await
        {
            Ok(()) | Err(QueueError::Timeout(_) | QueueError::Unavailable(_)) => {}
            Err(err) => return Err(err),
        }
        Ok(consume::spawn(
            self.clone(),
            queue.to_owned(),
            options.prefetch,
        ))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        validate_queue_name(queue)?;
        let shared = self.shared();
        shared.start()?;
        let budget = shared.options.connect_timeout;
        let deadline = Instant::now() + budget;
        let live = shared.live_until(deadline, budget).await?;
        let names = topology::names(queue, &shared.options.retry);
        let counted =
            tokio::time::timeout_at(deadline, topology::count(&live.connection, &names)).await;
        let counts = match counted {
            Ok(Ok(counts)) => counts,
            Ok(Err(err)) => {
                shared.suspect();
                return Err(QueueError::Unavailable(format!(
                    "reading the figures of queue {queue}: {err}"
                )));
            }
            Err(_) => return Err(QueueError::Timeout(budget)),
        };
        let depth = counts.first().copied().unwrap_or(0);
        let dead_lettered = counts.get(1).copied().unwrap_or(0);
        let delayed = counts.iter().skip(2).sum();
        let stats = shared
            .stats
            .of(queue)
            .snapshot(depth, delayed, dead_lettered);
        crate::figures::publish(&stats, stats::BACKEND);
        Ok(stats)
    }
}

/// The attempt number of a message, from the headers of its delivery: our
/// `x-groundwork-attempt` (1 when absent) plus the redeliveries the broker counted since it
/// was published (quorum queues' `x-delivery-count`; 1 for a classic queue's redelivered
/// flag).
fn attempt_of(headers: Option<&lapin::types::FieldTable>, redelivered: bool) -> u32 {
    let header = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(as_u32);
    let published = header(topology::ATTEMPT_HEADER).unwrap_or(1).max(1);
    let redeliveries = header("x-delivery-count").unwrap_or(u32::from(redelivered));
    published.saturating_add(redeliveries)
}

/// An integer header value as a `u32` (negative values as 0, huge ones saturated).
fn as_u32(value: &lapin::types::AMQPValue) -> Option<u32> {
    use lapin::types::AMQPValue;
    let wide: i64 = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    Some(u32::try_from(wide.max(0)).unwrap_or(u32::MAX))
}

/// The message a delivery from `queue` carries.
fn message_of(
    queue: &str,
    properties: &lapin::BasicProperties,
    data: Vec<u8>,
    redelivered: bool,
) -> Message {
    let id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .filter(|id| !id.is_empty())
        // Published by another client without an id: it cannot be deduplicated anyway.
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    Message {
        id,
        queue: queue.to_owned(),
        payload: bytes::Bytes::from(data),
        attempt: attempt_of(properties.headers().as_ref(), redelivered),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn urls_are_checked() {
        assert!(
            AmqpQueue::new(
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                AmqpOptions::default()
            )
            .is_ok()
        );
        let tls = AmqpQueue::new("amqps://broker.example/%2f", AmqpOptions::default());
        assert!(
            matches!(&tls, Err(QueueError::Invalid(m)) if m.contains("not supported")),
            "{tls:?}"
        );
        for bad in [
            "http://127.0.0.1/",
            "127.0.0.1:5672",
            "",
            "amqp://host:notaport/",
        ] {
            let err = AmqpQueue::new(bad, AmqpOptions::default()).expect_err(bad);
            assert!(matches!(err, QueueError::Invalid(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn passwords_stay_out_of_errors_and_debug_output() {
        let err = AmqpQueue::new("http://user:secret@host/", AmqpOptions::default())
            .expect_err("not amqp");
        assert!(!err.to_string().contains("secret"), "{err}");
        let queue =
            AmqpQueue::new("amqp://user:secret@host/%2f", AmqpOptions::default()).expect("valid");
        assert!(!format!("{queue:?}").contains("secret"));
        assert!(!queue.is_connected());
    }

    #[test]
    fn options_are_checked() {
        let url = "amqp://127.0.0.1/%2f";
        let no_delays = AmqpOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                delays: vec![],
            },
            ..AmqpOptions::default()
        };
        assert!(AmqpQueue::new(url, no_delays).is_err());
        let backwards = AmqpOptions {
            reconnect_min: Duration::from_secs(10),
            ..AmqpOptions::default()
        };
        assert!(AmqpQueue::new(url, backwards).is_err());
        let too_long = AmqpOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                delays: vec![Duration::from_secs(100 * 24 * 3600)],
            },
            ..AmqpOptions::default()
        };
        assert!(AmqpQueue::new(url, too_long).is_err());
    }

    #[test]
    fn attempts_add_the_broker_redeliveries() {
        assert_eq!(attempt_of(None, false), 1);
        assert_eq!(attempt_of(None, true), 2);
        let mut headers = FieldTable::default();
        headers.insert(topology::ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(3));
        assert_eq!(attempt_of(Some(&headers), false), 3);
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        assert_eq!(attempt_of(Some(&headers), true), 5);
        headers.insert(topology::ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(-4));
        assert_eq!(attempt_of(Some(&headers), true), 3);
    }
}
