//! The queues behind one logical queue (see the [module documentation](crate::amqp)), their
//! declaration and their message counts.

use lapin::options::QueueDeclareOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use tracing::warn;

use crate::queue::RetryPolicy;

/// The header holding the attempt number a copy was published for (1 on first publish).
pub(super) const ATTEMPT_HEADER: &str = "x-groundwork-attempt";
/// The header holding the error of the last failed attempt (retries and dead letters).
pub(super) const ERROR_HEADER: &str = "x-groundwork-error";
/// The header holding the logical queue a dead letter or retry copy comes from.
pub(super) const QUEUE_HEADER: &str = "x-groundwork-queue";

/// The dead-letter queue of `queue`.
pub(super) fn dead_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// The delay queue of retry tier `tier` of `queue`.
pub(super) fn retry_queue(queue: &str, tier: usize) -> String {
    format!("{queue}.retry.{tier}")
}

/// The queues of `queue`: the queue itself, its dead-letter queue, then its delay queues.
pub(super) fn names(queue: &str, policy: &RetryPolicy) -> Vec<String> {
    let mut names = vec![queue.to_owned(), dead_queue(queue)];
    names.extend((0..policy.delays.len()).map(|tier| retry_queue(queue, tier)));
    names
}

/// Why a declaration failed.
#[derive(Debug)]
pub(super) enum TopologyError {
    /// The broker refused it (a reserved name, no permission, a queue locked by another
    /// connection): trying again will not help.
    Refused(String),
    /// The connection or channel failed: try again on a new one.
    Transient(lapin::Error),
}

impl From<lapin::Error> for TopologyError {
    fn from(err: lapin::Error) -> Self {
        Self::Transient(err)
    }
}

/// The AMQP soft (channel-level) error `err` carries, if it is one.
fn soft_error(err: &lapin::Error) -> Option<&AMQPSoftError> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft),
            _ => None,
        },
        _ => None,
    }
}

fn is_soft(err: &lapin::Error, code: &AMQPSoftError) -> bool {
    soft_error(err) == Some(code)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the queues of `queue` (idempotent).
///
/// # Errors
/// [`TopologyError::Refused`] when the broker refuses a queue, [`TopologyError::Transient`]
/// when the connection fails.
pub(super) async fn declare(
    connection: &Connection,
    queue: &str,
    policy: &RetryPolicy,
) -> Result<(), TopologyError> {
    let dead = dead_queue(queue);
    let mut channel = connection.create_channel().await?;

    let mut work = FieldTable::default();
    work.insert("x-dead-letter-exchange".into(), text(""));
    work.insert("x-dead-letter-routing-key".into(), text(&dead));
    let classic_work = work.clone();
    work.insert("x-queue-type".into(), text("quorum"));
    // A safety net for consumers that die before settling, again and again; retries
    // through `Outcome::Retry` never count against it (they are new messages).
    work.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(policy.max_attempts.saturating_mul(2))),
    );
    declare_one(connection, &mut channel, queue, work, Some(classic_work)).await?;

    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), text("quorum"));
    declare_one(
        connection,
        &mut channel,
        &dead,
        quorum,
        Some(FieldTable::default()),
    )
    .await?;

    for (tier, delay) in policy.delays.iter().enumerate() {
        let mut delayed = FieldTable::default();
        delayed.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(millis(*delay)),
        );
        delayed.insert("x-dead-letter-exchange".into(), text(""));
        delayed.insert("x-dead-letter-routing-key".into(), text(queue));
        let name = retry_queue(queue, tier);
        declare_one(connection, &mut channel, &name, delayed, None).await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Declares one durable queue with `arguments`. When the broker refuses them
/// (`PRECONDITION_FAILED`, which closes the channel): uses the queue as it is if it exists
/// (a classic queue from before, or other retry settings), or else declares it with
/// `fallback` (a classic queue where quorum queues are not available).
async fn declare_one(
    connection: &Connection,
    channel: &mut Channel,
    name: &str,
    arguments: FieldTable,
    fallback: Option<FieldTable>,
) -> Result<(), TopologyError> {
    let refused = match channel
        .queue_declare(name.into(), durable(), arguments)
        .await
    {
        Ok(_) => return Ok(()),
        Err(err) if is_soft(&err, &AMQPSoftError::PRECONDITIONFAILED) => err,
        Err(err) => return Err(classify(name, err)),
    };
    *channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => {
            warn!(
                queue = name,
                reason = %refused,
                "the queue exists with other arguments; using it as it is"
            );
            return Ok(());
        }
        Err(err) if is_soft(&err, &AMQPSoftError::NOTFOUND) => {}
        Err(err) => return Err(classify(name, err)),
    }
    let Some(fallback) = fallback else {
        return Err(classify(name, refused));
    };
    *channel = connection.create_channel().await?;
    channel
        .queue_declare(name.into(), durable(), fallback)
        .await
        .map_err(|err| classify(name, err))?;
    warn!(
        queue = name,
        reason = %refused,
        "the broker refused a quorum queue; declared a classic durable queue instead"
    );
    Ok(())
}

fn classify(name: &str, err: lapin::Error) -> TopologyError {
    if soft_error(&err).is_some() {
        TopologyError::Refused(format!("declaring queue {name}: {err}"))
    } else {
        TopologyError::Transient(err)
    }
}

/// The number of ready messages in each of `names` (0 for a queue that does not exist).
///
/// # Errors
/// When the connection fails.
pub(super) async fn count(connection: &Connection, names: &[String]) -> lapin::Result<Vec<u64>> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut channel = connection.create_channel().await?;
    let mut counts = Vec::with_capacity(names.len());
    for name in names {
        match channel
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(queue) => counts.push(u64::from(queue.message_count())),
            Err(err) if is_soft(&err, &AMQPSoftError::NOTFOUND) => {
                counts.push(0);
                channel = connection.create_channel().await?;
            }
            Err(err) => return Err(err),
        }
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_follow_the_policy() {
        let policy = RetryPolicy {
            max_attempts: 3,
            delays: vec![Duration::from_secs(1), Duration::from_secs(5)],
        };
        assert_eq!(
            names("jobs", &policy),
            ["jobs", "jobs.dead", "jobs.retry.0", "jobs.retry.1"]
        );
    }
}
