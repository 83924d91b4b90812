//! The server's queues: the broker (RabbitMQ when `GROUNDWORK_AMQP_URL` is set, the
//! database-backed queue otherwise), the outbox relay that publishes what the API staged,
//! and the queue figures behind `GET /api/v1/queues` and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use groundwork_core::redact_url;
use groundwork_db::Database;
use groundwork_messaging::amqp::{AmqpOptions, AmqpQueue};
use groundwork_messaging::db::{DbQueue, DbQueueOptions};
use groundwork_messaging::outbox::{OutboxRelay, RelayOptions};
use groundwork_messaging::{Broker, Queue as _, QueueStats, RetryPolicy};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Executions to run: `{"execution_id": N}`.
pub const WORKFLOW_EXECUTE: &str = "workflow.execute";
/// Notifications to send when an execution ends.
pub const NOTIFICATION_SEND: &str = "notification.send";
/// Audit entries to write (every execution state change).
pub const AUDIT_LOG: &str = "audit.log";
/// The queues the server declares, consumes and reports.
pub const QUEUES: [&str; 3] = [WORKFLOW_EXECUTE, NOTIFICATION_SEND, AUDIT_LOG];

/// How long `GET /api/v1/queues` waits for one queue's figures.
const STATS_WITHIN: Duration = Duration::from_secs(2);

/// How long processed message ids are remembered (redeliveries come within minutes; a
/// message dead-lettered and replayed by hand within this still counts as processed).
pub const INBOX_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the inbox is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often the queue gauges of `/metrics` are refreshed.
const FIGURES_EVERY: Duration = Duration::from_secs(5);

/// The broker and the outbox relay. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Messaging {
    /// RabbitMQ or the database-backed queue.
    pub broker: Broker,
    db: Database,
    prefix: String,
    relay: OutboxRelay<Broker>,
    wake: Arc<Notify>,
}

impl Messaging {
    /// The broker `config` names, over `db` for the outbox (and for the queue itself when no
    /// broker is configured). Connects lazily: a broker that is down is not an error here.
    ///
    /// # Errors
    /// When the AMQP URL or the retry settings are unusable.
    pub fn new(db: &Database, config: &Config) -> anyhow::Result<Self> {
        let retry = RetryPolicy {
            max_attempts: config.queue_max_attempts,
            delays: config
                .queue_retry_delays_ms
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
        };
        let broker = match &config.amqp_url {
            Some(url) => Broker::Amqp(
                AmqpQueue::new(
                    url,
                    AmqpOptions {
                        retry,
                        ..AmqpOptions::default()
                    },
                )
                .with_context(|| format!("invalid AMQP URL {}", redact_url(url)))?,
            ),
            None => Broker::Database(DbQueue::new(
                db.clone(),
                DbQueueOptions {
                    retry,
                    ..DbQueueOptions::default()
                },
            )),
        };
        Ok(Self::over(db, broker, config.queue_prefix.clone()))
    }

    /// The embedded database queue with default settings, over `db`.
    #[must_use]
    pub fn embedded(db: &Database) -> Self {
        let broker = Broker::Database(DbQueue::new(db.clone(), DbQueueOptions::default()));
        Self::over(db, broker, String::new())
    }

    /// `broker` with its outbox relay over `db`, queue names prefixed with `prefix`.
    fn over(db: &Database, broker: Broker, prefix: String) -> Self {
        let relay = OutboxRelay::new(
            db.clone(),
            broker.clone(),
            RelayOptions {
                queue_prefix: prefix.clone(),
                ..RelayOptions::default()
            },
        );
        let wake = relay.notifier();
        Self {
            broker,
            db: db.clone(),
            prefix,
            relay,
            wake,
        }
    }

    /// The broker's name of the server queue `queue` (the configured prefix + `queue`).
    #[must_use]
    pub fn queue_name(&self, queue: &str) -> String {
        format!("{}{queue}", self.prefix)
    }

    /// `"amqp"` or `"database"`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        self.broker.kind()
    }

    /// Tells the relay that a transaction staged messages, so they leave at once.
    pub fn wake_relay(&self) {
        self.wake.notify_one();
    }

    /// Starts the outbox relay, the refresh of the queue gauges and the pruning of the inbox
    /// (ids processed more than [`INBOX_KEEP`] ago, every hour), until `stop`.
    pub fn spawn_relay(&self, stop: CancellationToken) -> Vec<JoinHandle<()>> {
        let relay = self.relay.clone().spawn(stop.clone());
        let db = self.db.clone();
        let pruning = crate::pruning::spawn_pruning(
            "inbox",
            INBOX_KEEP,
            PRUNE_EVERY,
            stop.clone(),
            move |before| {
                let db = db.clone();
                async move { db.inbox().prune(before).await }
            },
        );
        let this = self.clone();
        let figures = tokio::spawn(async move {
            loop {
                // `stats` publishes the gauges as a side effect.
                let _ = this.stats().await;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(FIGURES_EVERY) => {}
                }
            }
        });
        vec![relay, figures, pruning]
    }

    /// The figures of every server queue, read concurrently; a queue whose figures cannot be
    /// read within 2 s (the broker is down, say) is reported with its error.
    pub async fn stats(&self) -> Vec<Result<QueueStats, (String, String)>> {
        let reads = QUEUES.iter().map(|queue| {
            let name = self.queue_name(queue);
            async move {
                match tokio::time::timeout(STATS_WITHIN, self.broker.stats(&name)).await {
                    Ok(Ok(stats)) => Ok(stats),
                    Ok(Err(err)) => Err((name, err.to_string())),
                    Err(_) => Err((
                        name,
                        format!("no figures within {} ms", STATS_WITHIN.as_millis()),
                    )),
                }
            }
        });
        futures_util::future::join_all(reads).await
    }
}
