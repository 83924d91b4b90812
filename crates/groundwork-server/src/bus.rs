//! The change bus: instances sharing a database tell each other, through Redis pub/sub, that
//! they committed a change, so that the others refresh their caches at once instead of at the
//! next periodic refresh.
//!
//! On PostgreSQL the database's own `LISTEN`/`NOTIFY` does this too (see
//! [`crate::caches::Caches::follow_changes`]); the bus also covers deployments where that
//! cannot work (SQLite shared by processes on one host, PostgreSQL behind a transaction-mode
//! pooler). It is best effort by design: Redis being slow or down never delays or fails a
//! request (announcing is a non-blocking `try_send`; publishing happens in a background task
//! under the Redis client's operation timeout and breaker), and the periodic refresh stays
//! the safety net.

use tokio::sync::mpsc;

use groundwork_clients::redis::RedisClient;

use crate::caches::Caches;

/// The Redis channel changes are announced on.
pub const CHANNEL: &str = "groundwork:changes";

/// A handle to announce local changes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChangeBus {
    pending: mpsc::Sender<()>,
}

impl ChangeBus {
    /// Starts the publisher and the subscriber over `redis`; messages from other instances
    /// wake `caches`' refresh tasks. Needs a Tokio runtime.
    #[must_use]
    pub fn start(redis: RedisClient, caches: Caches) -> Self {
        // Distinguishes this instance's own messages, which need no refresh.
        let instance = format!("{:016x}", fastrand::u64(..));
        // One pending announcement is enough: a refresh reads every change since the last.
        let (pending, mut announcements) = mpsc::channel::<()>(1);
        tokio::spawn({
            let (redis, instance) = (redis.clone(), instance.clone());
            async move {
                while announcements.recv().await.is_some() {
                    if let Err(err) = redis.publish(CHANNEL, instance.as_bytes()).await {
                        tracing::debug!(error = %err, "change not announced on Redis");
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut subscription = redis.subscribe(CHANNEL);
            let mut generation = subscription.generation();
            while let Some(message) = subscription.next().await {
                if subscription.generation() != generation {
                    // Resubscribed after an outage: messages may have been missed.
                    generation = subscription.generation();
                    caches.notify_changed();
                }
                if message != instance.as_bytes() {
                    caches.notify_changed();
                }
            }
        });
        Self { pending }
    }

    /// Announces that this instance committed a change. Never waits.
    pub fn announce(&self) {
        // Full: an announcement is already pending, which covers this change too.
        let _ = self.pending.try_send(());
    }
}
