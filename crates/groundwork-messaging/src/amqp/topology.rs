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

/// The broker's own delivery limit on a work queue for `policy`: a copy of a message that is
/// delivered and returned without being settled (its consumer's channel or connection
/// closed) more than this many times is dead-lettered by the broker, after limit + 1
/// deliveries (RabbitMQ 3.10 dead-letters a quorum queue message once its
/// `x-delivery-count` exceeds the limit).
///
/// It is 2 × [`RetryPolicy::max_attempts`], not `max_attempts`, on purpose. It is only a
/// safety net for consumers that die before settling (an `Outcome::Retry` is a new copy and
/// starts from zero), and the broker counts every return, not only the deliveries a handler
/// crashed on: the deliveries a consumer had prefetched and never started come back counted
/// too when it stops (gracefully: its channel closes), loses its connection, or is killed by
/// another message (a poison message that crashes the process returns up to `prefetch`
/// innocent messages with it, each time). A limit of `max_attempts` would dead-letter such
/// innocent messages after `max_attempts` restarts; RabbitMQ 3.x cannot tell the two kinds of
/// returns apart, and this backend keeps no per-message state, so the margin stays.
/// Consumers that need "at most N crashed attempts" exactly count the attempts they start
/// in their own store (the server's executions do: see `groundwork-server`'s workers).
pub(super) fn delivery_limit(policy: &RetryPolicy) -> i64 {
    i64::from(policy.max_attempts.saturating_mul(2))
}

/// The arguments that make a quorum queue dead-letter at least once: without them RabbitMQ
/// dead-letters at most once (a message can be lost between the queue and its
/// dead-letter target if a node fails); `at-least-once` needs `reject-publish` overflow.
fn at_least_once(arguments: &mut FieldTable) {
    arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    arguments.insert("x-overflow".into(), text("reject-publish"));
}

/// The arguments of the work queue `queue`, best first: a quorum queue that dead-letters to
/// `dead` at least once; the same at most once (brokers before 3.10); a classic queue
/// (brokers without quorum queues).
fn work_arguments(queue: &str, policy: &RetryPolicy) -> Vec<FieldTable> {
    let dead = dead_queue(queue);
    let mut classic = FieldTable::default();
    classic.insert("x-dead-letter-exchange".into(), text(""));
    classic.insert("x-dead-letter-routing-key".into(), text(&dead));
    let mut quorum = classic.clone();
    quorum.insert("x-queue-type".into(), text("quorum"));
    quorum.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(delivery_limit(policy)),
    );
    let mut safe = quorum.clone();
    at_least_once(&mut safe);
    vec![safe, quorum, classic]
}

/// The arguments of the delay queue of `queue` holding messages for `delay`, best first: a
/// quorum queue with a message TTL that dead-letters back to `queue` at least once (RabbitMQ
/// 3.10 and later); a classic queue doing the same at most once.
fn delay_arguments(queue: &str, delay: std::time::Duration) -> Vec<FieldTable> {
    let mut classic = FieldTable::default();
    classic.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(millis(delay)),
    );
    classic.insert("x-dead-letter-exchange".into(), text(""));
    classic.insert("x-dead-letter-routing-key".into(), text(queue));
    let mut safe = classic.clone();
    safe.insert("x-queue-type".into(), text("quorum"));
    at_least_once(&mut safe);
    vec![safe, classic]
}

/// The arguments of the dead-letter queue, best first: quorum, then classic.
fn dead_arguments() -> Vec<FieldTable> {
    let mut quorum = FieldTable::default();
    quorum.insert("x-queue-type".into(), text("quorum"));
    vec![quorum, FieldTable::default()]
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
    let mut channel = connection.create_channel().await?;
    declare_one(
        connection,
        &mut channel,
        queue,
        work_arguments(queue, policy),
    )
    .await?;
    declare_one(
        connection,
        &mut channel,
        &dead_queue(queue),
        dead_arguments(),
    )
    .await?;
    for (tier, delay) in policy.delays.iter().enumerate() {
        let name = retry_queue(queue, tier);
        declare_one(
            connection,
            &mut channel,
            &name,
            delay_arguments(queue, *delay),
        )
        .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Declares one durable queue with the first of `candidates` (the best arguments first) the
/// broker accepts. When the broker refuses arguments (`PRECONDITION_FAILED`, which closes
/// the channel): uses the queue as it is if it exists (declared earlier with other arguments:
/// RabbitMQ cannot change a queue's arguments, see the [module documentation](super) for
/// migrating), or else tries the next candidate (arguments this broker does not support,
/// such as quorum queues or their message TTL).
async fn declare_one(
    connection: &Connection,
    channel: &mut Channel,
    name: &str,
    candidates: Vec<FieldTable>,
) -> Result<(), TopologyError> {
    let mut refusals = Vec::new();
    for (rank, arguments) in candidates.into_iter().enumerate() {
        if rank > 0 {
            *channel = connection.create_channel().await?;
        }
        let refused = match channel
            .queue_declare(name.into(), durable(), arguments)
            .await
        {
            Ok(_) if rank == 0 => return Ok(()),
            Ok(_) => {
                warn!(
                    queue = name,
                    reasons = %refusals
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    "the broker refused the preferred queue arguments; declared it with weaker \
                     ones (quorum queues, or at-least-once dead-lettering, are not available)"
                );
                return Ok(());
            }
            Err(err) if is_soft(&err, &AMQPSoftError::PRECONDITIONFAILED) => err,
            Err(err) => return Err(classify(name, err)),
        };
        *channel = connection.create_channel().await?;
        if exists(channel, name)
            .await
            .map_err(|err| classify(name, err))?
        {
            warn!(
                queue = name,
                reason = %refused,
                "the queue exists with other arguments (declared by an earlier version or \
                 with other retry settings); using it as it is"
            );
            return Ok(());
        }
        refusals.push(refused);
    }
    match refusals.pop() {
        Some(last) => Err(classify(name, last)),
        None => Ok(()),
    }
}

/// Whether queue `name` exists (a passive declaration). A missing queue closes `channel`.
async fn exists(channel: &Channel, name: &str) -> lapin::Result<bool> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => Ok(true),
        Err(err) if is_soft(&err, &AMQPSoftError::NOTFOUND) => Ok(false),
        Err(err) => Err(err),
    }
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

    fn get<'a>(table: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
        table.inner().get(key)
    }

    #[test]
    fn work_queues_prefer_quorum_with_at_least_once_dead_lettering() {
        let policy = RetryPolicy {
            max_attempts: 5,
            delays: vec![Duration::from_secs(1)],
        };
        let candidates = work_arguments("jobs", &policy);
        assert_eq!(candidates.len(), 3);
        let best = &candidates[0];
        assert_eq!(get(best, "x-queue-type"), Some(&text("quorum")));
        assert_eq!(
            get(best, "x-dead-letter-strategy"),
            Some(&text("at-least-once"))
        );
        assert_eq!(get(best, "x-overflow"), Some(&text("reject-publish")));
        assert_eq!(
            get(best, "x-dead-letter-routing-key"),
            Some(&text("jobs.dead"))
        );
        assert_eq!(
            get(best, "x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(10))
        );
        // Brokers before 3.10: quorum, at most once; without quorum: classic.
        assert_eq!(get(&candidates[1], "x-dead-letter-strategy"), None);
        assert_eq!(get(&candidates[1], "x-queue-type"), Some(&text("quorum")));
        assert_eq!(get(&candidates[2], "x-queue-type"), None);
        assert_eq!(
            get(&candidates[2], "x-dead-letter-routing-key"),
            Some(&text("jobs.dead"))
        );
    }

    #[test]
    fn delay_queues_prefer_quorum_with_a_ttl_and_at_least_once_dead_lettering() {
        let candidates = delay_arguments("jobs", Duration::from_millis(1500));
        assert_eq!(candidates.len(), 2);
        let best = &candidates[0];
        assert_eq!(get(best, "x-queue-type"), Some(&text("quorum")));
        assert_eq!(
            get(best, "x-message-ttl"),
            Some(&AMQPValue::LongLongInt(1500))
        );
        assert_eq!(
            get(best, "x-dead-letter-strategy"),
            Some(&text("at-least-once"))
        );
        assert_eq!(get(best, "x-overflow"), Some(&text("reject-publish")));
        assert_eq!(get(best, "x-dead-letter-routing-key"), Some(&text("jobs")));
        let classic = &candidates[1];
        assert_eq!(get(classic, "x-queue-type"), None);
        assert_eq!(
            get(classic, "x-message-ttl"),
            Some(&AMQPValue::LongLongInt(1500))
        );
        assert_eq!(
            get(classic, "x-dead-letter-routing-key"),
            Some(&text("jobs"))
        );
    }
}
