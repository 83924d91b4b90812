//! Shared helpers of the RabbitMQ tests (`tests/amqp_*.rs`): the broker's URL, unique queue
//! names, options with short delays, bounded waits, and raw access to the broker (reading a
//! dead-letter queue, deleting a queue's topology).
//!
//! The tests run against the broker at `GROUNDWORK_TEST_AMQP_URL` (for instance
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Without it they print a notice and pass, unless
//! `GROUNDWORK_REQUIRE_AMQP=1` (set by CI), in which case they fail.
//!
//! Included with `#[path = "common/amqp.rs"] mod amqp_common;`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use groundwork_messaging::amqp::AmqpOptions;
use groundwork_messaging::{Consumer, Delivery, RetryPolicy};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use lapin::types::AMQPValue;
use lapin::{Connection, ConnectionProperties};

/// How long something that must happen is waited for (only a failing test waits this long).
pub const PROMPT: Duration = Duration::from_secs(15);

/// The broker's URL, or `None` (after a notice) when the tests should be skipped.
pub fn amqp_url(test: &str) -> Option<String> {
    groundwork_testkit::services::amqp_url(test)
}

/// A queue name no other test (nor another run of this one) uses.
pub fn unique(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "gw-test.{test}.{}.{nanos}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The retry policy of the tests: 5 attempts, 50 ms then 100 ms between them.
pub fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        delays: vec![Duration::from_millis(50), Duration::from_millis(100)],
    }
}

/// Options with the tests' retry policy and quick reconnections.
pub fn options() -> AmqpOptions {
    AmqpOptions {
        retry: policy(),
        publish_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(3),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..AmqpOptions::default()
    }
}

/// The next delivery of `consumer`, or `None` if none comes within `wait`.
pub async fn next_within(consumer: &mut Consumer, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, consumer.next())
        .await
        .ok()
        .flatten()
}

/// Polls `check` every 20 ms until it returns `true`, failing after [`PROMPT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < PROMPT, "{what}: not within {PROMPT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain lapin connection to the broker, for what the tests do behind the queue's back.
pub async fn raw(url: &str) -> anyhow::Result<Connection> {
    Ok(Connection::connect(url, ConnectionProperties::default()).await?)
}

/// Deletes `queue`'s topology (its dead-letter queue and `tiers` delay queues). Best effort.
pub async fn delete_topology(url: &str, queue: &str, tiers: usize) {
    let Ok(connection) = raw(url).await else {
        return;
    };
    let mut names = vec![queue.to_owned(), format!("{queue}.dead")];
    names.extend((0..tiers).map(|tier| format!("{queue}.retry.{tier}")));
    for name in names {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "done".into()).await;
}

/// A message read from a queue with `basic.get`.
#[derive(Debug)]
pub struct Got {
    pub id: Option<String>,
    pub payload: Vec<u8>,
    pub attempt: Option<i64>,
    pub error: Option<String>,
}

/// Takes (acknowledges) every message of `queue` with `basic.get`.
pub async fn drain(url: &str, queue: &str) -> anyhow::Result<Vec<Got>> {
    let connection = raw(url).await?;
    let channel = connection.create_channel().await?;
    let mut got = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let properties = &message.delivery.properties;
        let header = |name: &str| {
            properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get(name).cloned())
        };
        got.push(Got {
            id: properties.message_id().as_ref().map(|id| id.to_string()),
            payload: message.delivery.data.clone(),
            attempt: match header("x-groundwork-attempt") {
                Some(AMQPValue::LongLongInt(n)) => Some(n),
                Some(AMQPValue::LongInt(n)) => Some(i64::from(n)),
                _ => None,
            },
            error: match header("x-groundwork-error") {
                Some(AMQPValue::LongString(text)) => Some(text.to_string()),
                _ => None,
            },
        });
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(got)
}
