//! [`Broker`]: the backend a deployment chose, behind one type, so that a server can pick
//! RabbitMQ or the database at start-up from its configuration.

use crate::amqp::AmqpQueue;
use crate::db::DbQueue;
use crate::queue::{ConsumeOptions, Consumer, Outgoing, Queue, QueueStats, Result};

/// RabbitMQ when a broker is configured, the database otherwise. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Broker {
    /// RabbitMQ.
    Amqp(AmqpQueue),
    /// The database-backed queue.
    Database(DbQueue),
}

impl Broker {
    /// `"amqp"` or `"database"`, for figures and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Amqp(_) => "amqp",
            Self::Database(_) => "database",
        }
    }
}

impl Queue for Broker {
    async fn declare(&self, queue: &str) -> Result<()> {
        match self {
            Self::Amqp(q) => q.declare(queue).await,
            Self::Database(q) => q.declare(queue).await,
        }
    }

    async fn publish(&self, queue: &str, message: Outgoing) -> Result<()> {
        match self {
            Self::Amqp(q) => q.publish(queue, message).await,
            Self::Database(q) => q.publish(queue, message).await,
        }
    }

    async fn publish_batch(&self, queue: &str, messages: Vec<Outgoing>) -> Result<()> {
        match self {
            Self::Amqp(q) => q.publish_batch(queue, messages).await,
            Self::Database(q) => q.publish_batch(queue, messages).await,
        }
    }

    async fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Consumer> {
        match self {
            Self::Amqp(q) => q.consume(queue, options).await,
            Self::Database(q) => q.consume(queue, options).await,
        }
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        match self {
            Self::Amqp(q) => q.stats(queue).await,
            Self::Database(q) => q.stats(queue).await,
        }
    }
}
