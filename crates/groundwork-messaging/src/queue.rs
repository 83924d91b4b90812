//! The [`Queue`] trait every backend implements, and what flows through it: [`Outgoing`]
//! messages in, [`Delivery`] handles out, settled with ack, retry-later or reject.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use groundwork_core::{Classify, ErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A boxed, sendable future: what a [`Settle`] implementation returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What can go wrong talking to a queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The broker or database cannot be reached (or refused the operation for now); trying
    /// again later may succeed.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The operation did not finish within its deadline (a publish that was never confirmed,
    /// say). For a publish, the message may or may not have been stored: publish it again
    /// with the same id, consumers deduplicate.
    #[error("queue operation timed out after {0:?}")]
    Timeout(Duration),
    /// The broker refused the message (negative confirm, unroutable mandatory publish).
    #[error("message refused by the broker: {0}")]
    Refused(String),
    /// A queue name or message that cannot be used.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The delivery's lease ran out and the message was (or will be) delivered again; the
    /// outcome of this delivery was not recorded.
    #[error("the lease of message {0} was lost; it will be delivered again")]
    LeaseLost(String),
    /// The queue handle was shut down.
    #[error("the queue is shut down")]
    Closed,
    /// The database backend failed.
    #[error(transparent)]
    Database(#[from] groundwork_db::DbError),
}

impl Classify for QueueError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable(_) | Self::Timeout(_) | Self::Closed => ErrorKind::Unavailable,
            Self::Refused(_) | Self::LeaseLost(_) => ErrorKind::Conflict,
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Database(err) => err.kind(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Checks a queue name: 1 to 200 characters of ASCII letters, digits, `.`, `-` and `_`
/// (names become RabbitMQ queue names and database values).
///
/// # Errors
/// [`QueueError::Invalid`] otherwise.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!(
            "queue name {name:?}: use 1 to 200 ASCII letters, digits, '.', '-' or '_'"
        )))
    }
}

/// A message to publish: an id (consumers deduplicate by it) and an opaque payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Unique id; publishing the same id twice may deliver it twice, and consumers that use
    /// the inbox ([`groundwork_db::Inbox`]) process it once.
    pub id: String,
    /// The body.
    pub payload: Bytes,
}

impl Outgoing {
    /// A message with a fresh id (a UUID v7: unique and roughly time-ordered).
    #[must_use]
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self::with_id(uuid::Uuid::now_v7().to_string(), payload)
    }

    /// A message with the caller's id.
    #[must_use]
    pub fn with_id(id: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            id: id.into(),
            payload: payload.into(),
        }
    }

    /// A message whose payload is `value` as JSON, with a fresh id.
    ///
    /// # Errors
    /// [`QueueError::Invalid`] if `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let body = serde_json::to_vec(value)
            .map_err(|e| QueueError::Invalid(format!("cannot encode the message: {e}")))?;
        Ok(Self::new(body))
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.id.is_empty() || self.id.len() > 200 {
            return Err(QueueError::Invalid(
                "a message id has 1 to 200 bytes".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A message as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The id it was published with.
    pub id: String,
    /// The queue it came from.
    pub queue: String,
    /// The body.
    pub payload: Bytes,
    /// Which delivery attempt this is: 1 the first time, counting retries and redeliveries
    /// after a consumer died without settling.
    pub attempt: u32,
}

impl Message {
    /// The payload parsed as JSON.
    ///
    /// # Errors
    /// The parse error; a message that does not parse is poison, reject it.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// How a delivery ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: remove it.
    Ack,
    /// Failed, may succeed later: deliver it again after the policy's delay, or move it to
    /// the dead-letter queue when this was the last attempt.
    Retry(String),
    /// Cannot succeed (poison): move it to the dead-letter queue now.
    Reject(String),
}

/// What a backend does to settle one delivery; implemented by each backend.
pub trait Settle: Send + Sync + fmt::Debug {
    /// Records `outcome` for `message`.
    fn settle(self: Box<Self>, message: &Message, outcome: Outcome) -> BoxFuture<'_, Result<()>>;
}

/// One delivered message and the right to settle it. Dropping it unsettled leaves the message
/// to be delivered again (when the consumer's channel closes, or when its lease ends).
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub message: Message,
    settle: Box<dyn Settle>,
}

impl Delivery {
    /// A delivery of `message`, settled through `settle` (for backends).
    #[must_use]
    pub fn new(message: Message, settle: Box<dyn Settle>) -> Self {
        Self { message, settle }
    }

    /// Settles with `outcome`.
    ///
    /// # Errors
    /// [`QueueError::LeaseLost`] or [`QueueError::Unavailable`] when the outcome could not be
    /// recorded: the message will be delivered again.
    pub async fn settle(self, outcome: Outcome) -> Result<()> {
        let Self { message, settle } = self;
        settle.settle(&message, outcome).await
    }

    /// Acknowledges: the message is done.
    ///
    /// # Errors
    /// As [`Delivery::settle`].
    pub async fn ack(self) -> Result<()> {
        self.settle(Outcome::Ack).await
    }

    /// Asks for another attempt later (see [`Outcome::Retry`]).
    ///
    /// # Errors
    /// As [`Delivery::settle`].
    pub async fn retry(self, error: impl Into<String>) -> Result<()> {
        self.settle(Outcome::Retry(error.into())).await
    }

    /// Dead-letters the message now (see [`Outcome::Reject`]).
    ///
    /// # Errors
    /// As [`Delivery::settle`].
    pub async fn reject(self, error: impl Into<String>) -> Result<()> {
        self.settle(Outcome::Reject(error.into())).await
    }
}

/// A stream of deliveries from one queue. Dropping it stops the consumer: deliveries handed
/// out and not settled yet go back to the queue (on RabbitMQ the consumer's channel closes;
/// on the database their leases are no longer extended).
///
/// To stop gracefully, [`Consumer::cancel`] first: no new deliveries come, while those handed
/// out can still be settled; then drop the consumer once they are (see
/// [`crate::worker::run`]).
#[derive(Debug)]
pub struct Consumer {
    rx: mpsc::Receiver<Delivery>,
    cancel: CancellationToken,
    _stop: DropGuard,
}

impl Consumer {
    /// A consumer reading `rx`; `stop` is cancelled when it is dropped (for backends, whose
    /// consumer task watches it). [`Consumer::cancel`] only stops handing out deliveries.
    #[must_use]
    pub fn new(rx: mpsc::Receiver<Delivery>, stop: CancellationToken) -> Self {
        Self::with_cancel(rx, stop, CancellationToken::new())
    }

    /// A consumer reading `rx` whose backend also watches `cancel` (for backends): cancelled by
    /// [`Consumer::cancel`], it means "take no new deliveries, but keep what settles the
    /// deliveries handed out working until `stop`" (cancelled when the consumer is dropped).
    #[must_use]
    pub fn with_cancel(
        rx: mpsc::Receiver<Delivery>,
        stop: CancellationToken,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            rx,
            cancel,
            _stop: stop.drop_guard(),
        }
    }

    /// The next delivery; `None` once the backend has shut down or after
    /// [`Consumer::cancel`].
    pub async fn next(&mut self) -> Option<Delivery> {
        if self.cancel.is_cancelled() {
            return None;
        }
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            delivery = self.rx.recv() => delivery,
        }
    }

    /// Stops receiving: the backend takes no new deliveries (RabbitMQ: `basic.cancel`; the
    /// database: no more claims) and [`Consumer::next`] returns `None`, but the deliveries
    /// handed out can still be acknowledged, retried or rejected until the consumer is
    /// dropped. Deliveries the backend had received and not handed out yet go back to the
    /// queue when the consumer is dropped. Idempotent.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// Options of [`Queue::consume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// How many deliveries may be unsettled at once (RabbitMQ prefetch; the database
    /// backend's claim batch). Default 50.
    pub prefetch: u16,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self { prefetch: 50 }
    }
}

/// When failed deliveries come back, and when they stop coming back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Deliveries before a message goes to the dead-letter queue (default 5): a message that
    /// fails its 5th attempt is dead-lettered.
    pub max_attempts: u32,
    /// The delay before attempt `n + 1` is `delays[n - 1]`, the last one repeating (default
    /// 1 s, 5 s, 30 s, 2 min). On RabbitMQ each delay is a delay queue.
    pub delays: Vec<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            delays: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(120),
            ],
        }
    }
}

impl RetryPolicy {
    /// The index into [`RetryPolicy::delays`] of the wait after failed attempt `attempt`.
    #[must_use]
    pub fn tier(&self, attempt: u32) -> usize {
        let last = self.delays.len().saturating_sub(1);
        (attempt.max(1) as usize - 1).min(last)
    }

    /// The wait after failed attempt `attempt`.
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delays
            .get(self.tier(attempt))
            .copied()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether a message that failed attempt `attempt` goes to the dead-letter queue.
    #[must_use]
    pub fn exhausted(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(QueueError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.delays.is_empty() {
            return Err(QueueError::Invalid(
                "at least one retry delay is needed".into(),
            ));
        }
        Ok(())
    }
}

/// Figures of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Messages waiting to be delivered.
    pub depth: u64,
    /// Messages delivered and not settled yet.
    pub in_flight: u64,
    /// Messages waiting for a retry delay to pass.
    pub delayed: u64,
    /// Messages in the dead-letter queue.
    pub dead_lettered: u64,
    /// Retries asked for through this handle since it started.
    pub retried: u64,
    /// Messages this handle published (confirmed or committed).
    pub published: u64,
    /// Messages this handle acknowledged.
    pub acked: u64,
}

/// A durable queue: publish with an id, consume with ack / retry-later / reject, statistics.
///
/// Publishing returns once the message is durable (confirmed by the broker, committed to the
/// database); delivery is at least once, so consumers deduplicate by message id.
pub trait Queue: Send + Sync {
    /// Declares `queue` with its retry and dead-letter topology (idempotent). Publishing and
    /// consuming declare it too.
    fn declare(&self, queue: &str) -> impl Future<Output = Result<()>> + Send;

    /// Publishes `message` to `queue` and waits until it is durable.
    fn publish(&self, queue: &str, message: Outgoing) -> impl Future<Output = Result<()>> + Send;

    /// Publishes several messages and waits until all are durable. On error, some may have
    /// been stored: publish them again, ids deduplicate.
    fn publish_batch(
        &self,
        queue: &str,
        messages: Vec<Outgoing>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Starts consuming `queue`.
    fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> impl Future<Output = Result<Consumer>> + Send;

    /// The figures of `queue`.
    fn stats(&self, queue: &str) -> impl Future<Output = Result<QueueStats>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_tiers_repeat_the_last_delay() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1), Duration::from_secs(1));
        assert_eq!(policy.delay(2), Duration::from_secs(5));
        assert_eq!(policy.delay(4), Duration::from_secs(120));
        assert_eq!(policy.delay(9), Duration::from_secs(120));
        assert!(!policy.exhausted(4));
        assert!(policy.exhausted(5));
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(validate_queue_name("workflow.execute").is_ok());
        assert!(validate_queue_name("").is_err());
        assert!(validate_queue_name("a b").is_err());
        assert!(validate_queue_name(&"x".repeat(201)).is_err());
    }

    #[test]
    fn outgoing_ids_are_unique() {
        let a = Outgoing::new(&b"x"[..]);
        let b = Outgoing::new(&b"x"[..]);
        assert_ne!(a.id, b.id);
        assert!(a.check().is_ok());
        assert!(Outgoing::with_id("", &b"x"[..]).check().is_err());
    }
}
