//! Storage of the messaging layer: the rows behind the database-backed queue ([`Jobs`]), the
//! transactional outbox ([`Outbox`]) and the consumers' inbox ([`Inbox`]). The semantics
//! (leases, retries, wake-ups, relaying) live in `groundwork-messaging`; this module holds
//! the SQL, the same text on SQLite and PostgreSQL except where noted.
//!
//! A job row is *ready* when `visible_at <= now`. Claiming moves `visible_at` to the end of
//! the lease and stamps the claimer's `lease` token, so a job held by a worker that died
//! becomes ready again when its lease runs out; ack, retry and bury check the token, so a
//! worker whose lease ran out cannot settle a job that was delivered again since.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::database::{Backend, now, on_pool};
use crate::{Database, Result};

/// The PostgreSQL channel notified (on commit) when jobs are enqueued; the payload is the
/// queue name.
pub const JOBS_CHANNEL: &str = "groundwork_jobs";

/// Most ids one statement settles (bound parameters stay far below SQLite's limit).
const IDS_PER_STATEMENT: usize = 500;

/// A message to enqueue or to stage in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The queue it goes to.
    pub queue: String,
    /// Its unique id (a second message with the same id in the same queue is ignored).
    pub message_id: String,
    /// The body.
    pub payload: Vec<u8>,
}

/// A job handed to a claimer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedJob {
    /// Row identity (for ack, retry, bury).
    pub id: i64,
    /// The message id it was enqueued with.
    pub message_id: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Deliveries so far, this one included.
    pub attempts: i32,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
}

/// How many jobs of a queue are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Ready to be claimed now (including jobs whose lease ran out).
    pub ready: i64,
    /// Claimed, lease running.
    pub leased: i64,
    /// Waiting for a retry delay.
    pub delayed: i64,
    /// Dead-lettered.
    pub dead: i64,
}

/// A dead-lettered job.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadJob {
    /// Row identity.
    pub id: i64,
    /// The message id.
    pub message_id: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Deliveries it had.
    pub attempts: i32,
    /// The last error.
    pub last_error: Option<String>,
}

fn lease_end(at: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    at + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX)
}

/// `$first, $first+1, ...` for `n` values: the only text spliced into SQL here (numbers we
/// generate, never input), hence the `AssertSqlSafe` where it is used.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `messages` into `queue_jobs` inside the transaction `$tx`, ignoring ids already
/// queued; on PostgreSQL, notifies [`JOBS_CHANNEL`] once per queue at commit.
macro_rules! enqueue_jobs {
    ($tx:ident, $pg:ident, $messages:expr, $at:expr) => {{
        let mut inserted = 0_u64;
        let mut queues: Vec<&str> = Vec::new();
        for message in $messages {
            inserted += sqlx::query(
                "INSERT INTO queue_jobs (queue, message_id, payload, attempts, dead, \
                 visible_at, created_at) VALUES ($1, $2, $3, 0, FALSE, $4, $4) \
                 ON CONFLICT (queue, message_id) DO NOTHING",
            )
            .bind(&message.queue)
            .bind(&message.message_id)
            .bind(&message.payload)
            .bind($at)
            .execute(&mut *$tx)
            .await?
            .rows_affected();
            if !queues.contains(&message.queue.as_str()) {
                queues.push(&message.queue);
            }
        }
        if $pg {
            // One notification per queue and transaction.
            for queue in queues {
                sqlx::query("SELECT pg_notify('groundwork_jobs', $1)")
                    .bind(queue)
                    .execute(&mut *$tx)
                    .await?;
            }
        }
        inserted
    }};
}

/// Stages `messages` in the outbox inside the transaction `$tx` (an id already staged is
/// ignored).
macro_rules! stage_outbox {
    ($tx:ident, $messages:expr, $at:expr) => {{
        for message in $messages {
            sqlx::query(
                "INSERT INTO outbox (queue, message_id, payload, attempts, visible_at, \
                 created_at) VALUES ($1, $2, $3, 0, $4, $4) ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&message.queue)
            .bind(&message.message_id)
            .bind(&message.payload)
            .bind($at)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}
pub(crate) use stage_outbox;

/// Records `$message_id` as processed by `$consumer` inside the transaction `$tx`; evaluates
/// to `true` the first time, `false` when it was already recorded.
macro_rules! inbox_first {
    ($tx:ident, $consumer:expr, $message_id:expr) => {{
        sqlx::query(
            "INSERT INTO inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, message_id) DO NOTHING",
        )
        .bind($consumer)
        .bind($message_id)
        .bind($crate::database::now())
        .execute(&mut *$tx)
        .await?
        .rows_affected()
            == 1
    }};
}
pub(crate) use inbox_first;

/// The database-backed queue's rows. Reached through [`Database::jobs`].
#[derive(Debug, Clone, Copy)]
pub struct Jobs<'a> {
    db: &'a Database,
}

impl<'a> Jobs<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Enqueues `messages` in one transaction, ignoring ids already queued in the same queue;
    /// returns how many were new. Visible at once.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached (nothing is enqueued).
    pub async fn enqueue(&self, messages: &[NewMessage]) -> Result<u64> {
        let at = now();
        crate::database::in_tx!(self.db, |tx, pg| enqueue_jobs!(tx, pg, messages, at))
    }

    /// Claims up to `limit` ready jobs of `queue` for `lease`, stamping them with `token`
    /// and counting a delivery attempt each, oldest first. On PostgreSQL concurrent claimers
    /// skip each other's rows (`FOR UPDATE SKIP LOCKED`); SQLite runs one writer at a time.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn claim(
        &self,
        queue: &str,
        limit: u32,
        lease: Duration,
        token: i64,
    ) -> Result<Vec<ClaimedJob>> {
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE queue_jobs SET visible_at = $3, lease = $4, attempts = attempts + 1 ",
                    "WHERE id IN (SELECT id FROM queue_jobs WHERE queue = $1 AND dead = FALSE ",
                    "AND visible_at <= $2 ORDER BY visible_at, id LIMIT $5",
                    $lock,
                    ") RETURNING id, message_id, payload, attempts, created_at"
                )
            };
        }
        let sql = match self.db.backend() {
            Backend::Sqlite(_) => claim!(""),
            Backend::Postgres(_) => claim!(" FOR UPDATE SKIP LOCKED"),
        };
        let at = now();
        let mut jobs = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, ClaimedJob>(sql)
                .bind(queue)
                .bind(at)
                .bind(lease_end(at, lease))
                .bind(token)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }

    /// Deletes the jobs `ids` still leased with `token`; returns the ids that were (an id
    /// missing from the answer lost its lease and will be delivered again).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn ack(&self, ids: &[i64], token: i64) -> Result<Vec<i64>> {
        let mut deleted = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM queue_jobs WHERE lease = $1 AND id IN ({}) RETURNING id",
                placeholders(2, chunk.len())
            );
            let done = on_pool!(self.db, |pool| {
                let mut query =
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.as_str())).bind(token);
                for id in chunk {
                    query = query.bind(id);
                }
                query.fetch_all(pool).await
            })?;
            deleted.extend(done);
        }
        Ok(deleted)
    }

    /// Extends to `lease` from now the lease of every job still leased with `token` (a live
    /// consumer keeps its jobs while it works on them); returns how many it extended.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn extend(&self, token: i64, lease: Duration) -> Result<u64> {
        let until = lease_end(now(), lease);
        on_pool!(self.db, |pool| {
            sqlx::query("UPDATE queue_jobs SET visible_at = $2 WHERE lease = $1 AND dead = FALSE")
                .bind(token)
                .bind(until)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }

    /// Releases job `id` (leased with `token`) for another attempt at `visible_at`, keeping
    /// `error`; returns whether the lease was still held.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn retry(
        &self,
        id: i64,
        token: i64,
        visible_at: DateTime<Utc>,
        error: &str,
    ) -> Result<bool> {
        let updated = on_pool!(self.db, |pool| {
            sqlx::query(
                "UPDATE queue_jobs SET visible_at = $3, lease = NULL, last_error = $4 \
                 WHERE id = $1 AND lease = $2",
            )
            .bind(id)
            .bind(token)
            .bind(crate::database::to_micros(visible_at))
            .bind(error)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    /// Dead-letters job `id` (leased with `token`), keeping `error`; returns whether the
    /// lease was still held.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn bury(&self, id: i64, token: i64, error: &str) -> Result<bool> {
        let updated = on_pool!(self.db, |pool| {
            sqlx::query(
                "UPDATE queue_jobs SET dead = TRUE, lease = NULL, last_error = $3 \
                 WHERE id = $1 AND lease = $2",
            )
            .bind(id)
            .bind(token)
            .bind(error)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(updated == 1)
    }

    /// How many jobs of `queue` are in each state.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn counts(&self, queue: &str) -> Result<JobCounts> {
        let at = now();
        let row: (i64, i64, i64, i64) = on_pool!(self.db, |pool| {
            sqlx::query_as(
                "SELECT \
                 COALESCE(SUM(CASE WHEN dead = FALSE AND visible_at <= $2 THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN dead = FALSE AND visible_at > $2 AND lease IS NOT NULL \
                   THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN dead = FALSE AND visible_at > $2 AND lease IS NULL \
                   THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN dead = TRUE THEN 1 ELSE 0 END), 0) \
                 FROM queue_jobs WHERE queue = $1",
            )
            .bind(queue)
            .bind(at)
            .fetch_one(pool)
            .await
        })?;
        Ok(JobCounts {
            ready: row.0,
            leased: row.1,
            delayed: row.2,
            dead: row.3,
        })
    }

    /// The dead-lettered jobs of `queue`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn dead(&self, queue: &str, limit: u32) -> Result<Vec<DeadJob>> {
        let rows = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, DeadJob>(
                "SELECT id, message_id, payload, attempts, last_error FROM queue_jobs \
                 WHERE queue = $1 AND dead = TRUE ORDER BY id LIMIT $2",
            )
            .bind(queue)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }

    /// A listener for [`JOBS_CHANNEL`], or `None` on SQLite (writers in this process wake
    /// their consumers directly; others are found by polling).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when PostgreSQL cannot be reached.
    pub async fn listen(&self) -> Result<Option<JobListener>> {
        match self.db.backend() {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(JOBS_CHANNEL).await?;
                Ok(Some(JobListener { listener }))
            }
        }
    }
}

/// Push notification of enqueued jobs on PostgreSQL (`LISTEN groundwork_jobs`).
#[derive(Debug)]
pub struct JobListener {
    listener: sqlx::postgres::PgListener,
}

impl JobListener {
    /// Waits for the next notification: `Some(queue)` when jobs were enqueued on `queue`,
    /// `None` when the connection was re-established (notifications may have been missed:
    /// look at every queue).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the connection cannot be re-established.
    pub async fn next(&mut self) -> Result<Option<String>> {
        Ok(self
            .listener
            .try_recv()
            .await?
            .map(|n| n.payload().to_owned()))
    }
}

/// A message staged in the outbox, as the relay claims it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    /// Row identity.
    pub id: i64,
    /// Destination queue.
    pub queue: String,
    /// The message id.
    pub message_id: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Failed relay attempts so far.
    pub attempts: i32,
}

/// The transactional outbox. Reached through [`Database::outbox`]. Repositories stage
/// messages in the same transaction as the change that causes them (see
/// [`crate::Executions::enqueue`]); a relay claims rows, publishes them and removes them.
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    db: &'a Database,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Stages `messages` on their own (not tied to another change).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached (nothing is staged).
    pub async fn stage(&self, messages: &[NewMessage]) -> Result<()> {
        let at = now();
        crate::database::in_tx!(self.db, |tx, _pg| {
            stage_outbox!(tx, messages, at);
        })
    }

    /// Claims up to `limit` staged messages for `lease` (another relay skips them until it
    /// runs out), oldest first.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn claim(&self, limit: u32, lease: Duration) -> Result<Vec<OutboxRow>> {
        macro_rules! claim {
            ($lock:literal) => {
                concat!(
                    "UPDATE outbox SET visible_at = $2 WHERE id IN (SELECT id FROM outbox ",
                    "WHERE visible_at <= $1 ORDER BY id LIMIT $3",
                    $lock,
                    ") RETURNING id, queue, message_id, payload, attempts"
                )
            };
        }
        let sql = match self.db.backend() {
            Backend::Sqlite(_) => claim!(""),
            Backend::Postgres(_) => claim!(" FOR UPDATE SKIP LOCKED"),
        };
        let at = now();
        let mut rows = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, OutboxRow>(sql)
                .bind(at)
                .bind(lease_end(at, lease))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }

    /// Removes relayed messages.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn remove(&self, ids: &[i64]) -> Result<u64> {
        let mut deleted = 0;
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "DELETE FROM outbox WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            deleted += on_pool!(self.db, |pool| {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
                for id in chunk {
                    query = query.bind(id);
                }
                query.execute(pool).await.map(|r| r.rows_affected())
            })?;
        }
        Ok(deleted)
    }

    /// Moves a message whose relay failed to `visible_at`, counting the attempt.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn postpone(&self, id: i64, visible_at: DateTime<Utc>, error: &str) -> Result<()> {
        on_pool!(self.db, |pool| {
            sqlx::query(
                "UPDATE outbox SET visible_at = $2, attempts = attempts + 1, last_error = $3 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(crate::database::to_micros(visible_at))
            .bind(error)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// How many messages wait in the outbox.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn pending(&self) -> Result<i64> {
        on_pool!(self.db, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox")
                .fetch_one(pool)
                .await
        })
    }
}

/// Which messages consumers have processed. Reached through [`Database::inbox`]. A consumer
/// whose effect is a database write records the message id in the same transaction
/// ([`crate::Audit::record_once`] does), so a redelivered message changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Inbox<'a> {
    db: &'a Database,
}

impl<'a> Inbox<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Records `message_id` as processed by `consumer`, on its own; `true` the first time.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn record(&self, consumer: &str, message_id: &str) -> Result<bool> {
        crate::database::in_tx!(self.db, |tx, _pg| inbox_first!(tx, consumer, message_id))
    }

    /// Whether `consumer` has processed `message_id`.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn contains(&self, consumer: &str, message_id: &str) -> Result<bool> {
        let found = on_pool!(self.db, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM inbox WHERE consumer = $1 AND message_id = $2",
            )
            .bind(consumer)
            .bind(message_id)
            .fetch_one(pool)
            .await
        })?;
        Ok(found > 0)
    }

    /// Forgets ids processed before `before` (redeliveries come within minutes; keep days).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        on_pool!(self.db, |pool| {
            sqlx::query("DELETE FROM inbox WHERE processed_at < $1")
                .bind(crate::database::to_micros(before))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
    }
}
