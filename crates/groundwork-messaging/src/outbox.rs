//! The transactional outbox relay: publishes what repositories staged in the `outbox` table
//! (in the same transaction as the change that caused it) and removes it once the queue has
//! it durably.
//!
//! A message is removed from the outbox only after its publish was confirmed, so a crash or
//! a broker outage between the two means it is published again later: delivery is at least
//! once, and consumers deduplicate by message id ([`groundwork_db::Inbox`]). While the queue
//! is down, failed messages wait with a growing delay (100 ms doubling to 30 s) and keep
//! their order within a batch; the relay resumes by itself when the queue answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use groundwork_db::{Database, OutboxRow};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::queue::{Outgoing, Queue, Result};

/// Settings of an [`OutboxRelay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// Messages claimed per round (default 500).
    pub batch: u32,
    /// How long claimed messages are reserved for this relay (default 30 s): another relay
    /// (another instance) skips them meanwhile.
    pub lease: Duration,
    /// How often the relay looks for messages staged by other processes (default 250 ms);
    /// messages staged through this process wake it at once ([`OutboxRelay::notifier`]).
    pub poll: Duration,
    /// Prepended to every staged message's queue when it is published (default none): the
    /// queue prefix of a deployment that shares its broker (`staging.` + `audit.log`).
    pub queue_prefix: String,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            batch: 500,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(250),
            queue_prefix: String::new(),
        }
    }
}

/// Moves staged messages from the outbox to a [`Queue`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutboxRelay<Q> {
    db: Database,
    queue: Q,
    options: RelayOptions,
    wake: Arc<Notify>,
}

impl<Q: Queue + Clone + 'static> OutboxRelay<Q> {
    /// A relay from `db`'s outbox to `queue`.
    #[must_use]
    pub fn new(db: Database, queue: Q, options: RelayOptions) -> Self {
        Self {
            db,
            queue,
            options,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the relay: call it after committing a transaction that staged messages, so they
    /// leave at once instead of at the next poll.
    #[must_use]
    pub fn notifier(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// One round: claims a batch, publishes it queue by queue, removes what was confirmed
    /// and postpones what was not. Returns how many messages were relayed.
    ///
    /// # Errors
    /// When the outbox cannot be read or cleaned (the messages stay and are relayed later).
    pub async fn relay_once(&self) -> Result<usize> {
        let rows = self
            .db
            .outbox()
            .claim(self.options.batch, self.options.lease)
            .await?;
        let mut by_queue: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
        for row in rows {
            by_queue.entry(row.queue.clone()).or_default().push(row);
        }
        let mut relayed = 0;
        for (queue, rows) in by_queue {
            let messages = rows
                .iter()
                .map(|row| Outgoing::with_id(row.message_id.clone(), row.payload.clone()))
                .collect();
            let target = format!("{}{queue}", self.options.queue_prefix);
            match self.queue.publish_batch(&target, messages).await {
                Ok(()) => {
                    let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
                    self.db.outbox().remove(&ids).await?;
                    relayed += ids.len();
                    metrics::counter!("groundwork_outbox_relayed_total", "queue" => queue)
                        .increment(ids.len() as u64);
                }
                Err(err) => {
                    tracing::warn!(queue = %queue, messages = rows.len(), error = %err,
                        "outbox relay cannot publish; will retry");
                    let error = err.to_string();
                    for row in &rows {
                        let delay = retry_delay(row.attempts);
                        let at = groundwork_db::now()
                            + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
                        self.db.outbox().postpone(row.id, at, &error).await?;
                    }
                }
            }
        }
        Ok(relayed)
    }

    /// Relays until `stop` is cancelled: a full batch is followed at once by the next, an
    /// empty one waits for a wake-up or the poll interval, a failure for a growing pause.
    pub async fn run(self, stop: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        loop {
            let wait = match self.relay_once().await {
                Ok(n) if n >= self.options.batch as usize => continue,
                Ok(_) => {
                    pause = Duration::from_millis(100);
                    self.options.poll
                }
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay failed; will retry");
                    pause = (pause * 2).min(Duration::from_secs(30));
                    pause
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts [`OutboxRelay::run`] on the runtime.
    pub fn spawn(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(stop))
    }
}

/// The wait before relaying again a message that failed `attempts` times: 100 ms doubling,
/// at most 30 s.
fn retry_delay(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(0);
    (Duration::from_millis(100) * 2_u32.pow(doublings)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_retries_back_off_to_thirty_seconds() {
        assert_eq!(retry_delay(0), Duration::from_millis(100));
        assert_eq!(retry_delay(3), Duration::from_millis(800));
        assert_eq!(retry_delay(50), Duration::from_secs(30));
        assert_eq!(retry_delay(-1), Duration::from_millis(100));
    }
}
