//! Groundwork's messaging: durable queues behind one [`Queue`] trait, with a RabbitMQ
//! backend ([`amqp`]) for production and a database backend ([`db`]) on SQLite or
//! PostgreSQL when no broker is configured; a transactional [`outbox`] relay, an idempotent
//! inbox ([`groundwork_db::Inbox`]), and [`worker`]s that run handlers over a queue.
//!
//! Delivery is at least once on both backends: publishing returns once the message is
//! durable (a publisher confirm, a committed row), a message is removed only when its
//! consumer acknowledges it, and a consumer that dies before acknowledging gets it again.
//! Consumers deduplicate by message id through the inbox, so a redelivery is harmless.
//! Failures are retried after growing delays and end in a dead-letter queue after
//! [`RetryPolicy::max_attempts`] attempts.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use groundwork_db::{Database, DatabaseOptions};
//! use groundwork_messaging::{ConsumeOptions, Outgoing, Queue, db::DbQueue};
//!
//! let db = Database::connect(DatabaseOptions::new("sqlite::memory:")).await?;
//! db.migrate().await?;
//! let queue = DbQueue::new(db, Default::default());
//!
//! queue.publish("greetings", Outgoing::with_id("m-1", &b"hello"[..])).await?;
//! let mut consumer = queue.consume("greetings", ConsumeOptions::default()).await?;
//! let delivery = consumer.next().await.expect("a delivery");
//! assert_eq!(&delivery.message.payload[..], b"hello");
//! assert_eq!(delivery.message.attempt, 1);
//! delivery.ack().await?;
//! assert_eq!(queue.stats("greetings").await?.depth, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod amqp;
pub mod broker;
pub mod db;
pub mod figures;
pub mod outbox;
pub mod queue;
pub mod worker;

pub use broker::Broker;
pub use queue::{
    ConsumeOptions, Consumer, Delivery, Message, Outcome, Outgoing, Queue, QueueError, QueueStats,
    Result, RetryPolicy, validate_queue_name,
};
