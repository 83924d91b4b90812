//! Change tracking: what changed in agents, tools, agent_tools and prompts since a cursor.
//!
//! Every write to those tables appends a row to `change_log` in the same transaction. On
//! PostgreSQL the append takes a transaction-scoped advisory lock first, so sequence numbers
//! are handed out in commit order; on SQLite writers are serialized by the engine. Either way
//! a reader that has seen cursor `N` has seen every change below `N`, and "what changed since
//! `N`" is an index range scan whose cost follows the number of changes, not the table sizes.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Database;
use crate::database::{in_tx, on_pool};
use crate::error::{DbError, Result};

/// Advisory lock key that serializes change-log appends on PostgreSQL ("gwchange" in ASCII).
pub(crate) const CHANGE_LOG_LOCK: i64 = 0x6777_6368_616e_6765;

/// Which table a change touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// A row of `agents`; `entity_id` is the agent id.
    Agent,
    /// A row of `tools`; `entity_id` is the tool id.
    Tool,
    /// A row of `agent_tools`; `entity_id` is the agent id, `related_id` the tool id.
    AgentTool,
    /// A row of `prompts`; `entity_id` is the prompt id.
    Prompt,
}

impl Entity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Tool => "tool",
            Self::AgentTool => "agent_tool",
            Self::Prompt => "prompt",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "agent" => Self::Agent,
            "tool" => Self::Tool,
            "agent_tool" => Self::AgentTool,
            "prompt" => Self::Prompt,
            _ => return None,
        })
    }
}

/// Whether the row now exists (inserted or updated) or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Inserted or updated: read the row again.
    Upsert,
    /// Deleted.
    Delete,
}

impl Op {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Upsert => "upsert",
            Self::Delete => "delete",
        }
    }
}

/// One change, in commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Position in the change log; pass the last one seen as the next cursor.
    pub seq: i64,
    /// The table touched.
    pub entity: Entity,
    /// The row's id (the agent id for [`Entity::AgentTool`]).
    pub entity_id: i64,
    /// For [`Entity::AgentTool`], the tool id.
    pub related_id: Option<i64>,
    /// Upsert or delete.
    pub op: Op,
    /// When the change was written.
    pub changed_at: DateTime<Utc>,
    /// For [`Entity::Prompt`], the agent type the prompt serves (a prompt moved to another
    /// type appears twice, once per type).
    pub scope: Option<String>,
}

/// The changes after a cursor, and the cursor to ask from next time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeBatch {
    /// Changes in commit order.
    pub changes: Vec<Change>,
    /// The cursor after the last change returned (the same cursor when nothing changed).
    pub next_cursor: i64,
    /// True when `limit` cut the batch short: ask again from `next_cursor`.
    pub has_more: bool,
    /// True when changes after the cursor were pruned ([`Changes::prune`]): the reader has
    /// missed some and must reload everything, then follow from
    /// [`Changes::current_cursor`] read before that load. `changes` is then empty.
    pub truncated: bool,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    seq: i64,
    entity: String,
    entity_id: i64,
    related_id: Option<i64>,
    op: String,
    changed_at: DateTime<Utc>,
    scope: Option<String>,
}

impl TryFrom<ChangeRow> for Change {
    type Error = DbError;

    fn try_from(row: ChangeRow) -> Result<Self> {
        let entity = Entity::parse(&row.entity).ok_or_else(|| {
            DbError::invalid(format!("unknown change_log entity {:?}", row.entity))
        })?;
        let op = match row.op.as_str() {
            "upsert" => Op::Upsert,
            "delete" => Op::Delete,
            other => return Err(DbError::invalid(format!("unknown change_log op {other:?}"))),
        };
        Ok(Self {
            seq: row.seq,
            entity,
            entity_id: row.entity_id,
            related_id: row.related_id,
            op,
            changed_at: row.changed_at,
            scope: row.scope,
        })
    }
}

/// Reads the change log. Reached through [`Database::changes`].
#[derive(Debug, Clone, Copy)]
pub struct Changes<'a> {
    db: &'a Database,
}

impl<'a> Changes<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// The latest cursor: read it before a full load, then follow changes from it.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn current_cursor(&self) -> Result<i64> {
        let seq: Option<i64> = on_pool!(self.db, |pool| {
            sqlx::query_scalar("SELECT MAX(seq) FROM change_log")
                .fetch_one(pool)
                .await
        })?;
        Ok(seq.unwrap_or(0))
    }

    /// Up to `limit` changes after `cursor`, oldest first. Start from cursor 0.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for a `limit` below 1, [`DbError::Unavailable`] when the database
    /// cannot be reached.
    pub async fn since(&self, cursor: i64, limit: i64) -> Result<ChangeBatch> {
        if limit < 1 {
            return Err(DbError::invalid("limit must be at least 1"));
        }
        let (rows, pruned_through): (Vec<ChangeRow>, i64) = on_pool!(self.db, |pool| {
            let rows = sqlx::query_as(
                "SELECT seq, entity, entity_id, related_id, op, changed_at, scope FROM change_log \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(cursor)
            .bind(limit.saturating_add(1))
            .fetch_all(&mut *pool)
            .await?;
            // Read after the rows: a prune committed in between shows here (the batch is
            // then refused as truncated, which is safe), never only in the rows.
            let pruned_through: i64 =
                sqlx::query_scalar("SELECT through_seq FROM change_log_pruned WHERE id = 1")
                    .fetch_one(&mut *pool)
                    .await?;
            Ok::<_, sqlx::Error>((rows, pruned_through))
        })?;
        if cursor < pruned_through {
            return Ok(ChangeBatch {
                changes: Vec::new(),
                next_cursor: cursor,
                has_more: false,
                truncated: true,
            });
        }
        let has_more = i64::try_from(rows.len()).unwrap_or(i64::MAX) > limit;
        let changes = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(Change::try_from)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = changes.last().map_or(cursor, |c| c.seq);
        Ok(ChangeBatch {
            changes,
            next_cursor,
            has_more,
            truncated: false,
        })
    }

    /// Deletes the changes recorded before `before` and returns how many. Readers whose
    /// cursor lies below the last pruned change get [`ChangeBatch::truncated`] from then on
    /// and reload everything, so prune only what every live reader has long read (the
    /// server keeps a week).
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64> {
        let before = crate::database::to_micros(before);
        in_tx!(self.db, |tx, _pg| {
            let through: Option<i64> =
                sqlx::query_scalar("SELECT MAX(seq) FROM change_log WHERE changed_at < $1")
                    .bind(before)
                    .fetch_one(&mut *tx)
                    .await?;
            match through {
                None => 0,
                Some(through) => {
                    // One transaction: a reader that sees the rows gone sees the watermark.
                    sqlx::query(
                        "UPDATE change_log_pruned SET through_seq = $1 \
                         WHERE id = 1 AND through_seq < $1",
                    )
                    .bind(through)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM change_log WHERE seq <= $1")
                        .bind(through)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                }
            }
        })
    }
}

/// The PostgreSQL channel notified (once per transaction, on commit) when the change log
/// grows.
pub const CHANGE_CHANNEL: &str = "groundwork_changes";

/// Appends one change inside the current transaction (see the module docs for ordering). On
/// PostgreSQL it also queues a notification on [`CHANGE_CHANNEL`], delivered at commit (one
/// per transaction: PostgreSQL folds identical notifications).
macro_rules! record_change {
    ($tx:ident, $pg:ident, $entity:expr, $id:expr, $related:expr, $op:expr) => {
        $crate::changes::record_change!($tx, $pg, $entity, $id, $related, $op, None::<&str>)
    };
    ($tx:ident, $pg:ident, $entity:expr, $id:expr, $related:expr, $op:expr, $scope:expr) => {{
        if $pg {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind($crate::changes::CHANGE_LOG_LOCK)
                .execute(&mut *$tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO change_log (entity, entity_id, related_id, op, changed_at, scope) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($entity.as_str())
        .bind($id)
        .bind($related)
        .bind($op.as_str())
        .bind($crate::database::now())
        .bind($scope)
        .execute(&mut *$tx)
        .await?;
        if $pg {
            sqlx::query("SELECT pg_notify('groundwork_changes', '')")
                .execute(&mut *$tx)
                .await?;
        }
    }};
}
pub(crate) use record_change;

/// What a [`ChangeListener`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEvent {
    /// A transaction that changed agents, tools, attachments or prompts committed.
    Changed,
    /// The connection was lost and is being re-established: notifications may have been
    /// missed, so readers should catch up from their cursor.
    Reconnected,
}

/// Push notification of changes on PostgreSQL (`LISTEN groundwork_changes`), so that caches in
/// every instance refresh within milliseconds of a commit. Reached through
/// [`Database::listen_changes`].
#[derive(Debug)]
pub struct ChangeListener {
    listener: sqlx::postgres::PgListener,
}

impl ChangeListener {
    /// Waits for the next event.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the connection cannot be re-established; call again
    /// (after a pause) to retry.
    pub async fn next(&mut self) -> Result<ChangeEvent> {
        match self.listener.try_recv().await? {
            Some(_) => Ok(ChangeEvent::Changed),
            None => Ok(ChangeEvent::Reconnected),
        }
    }
}

impl Database {
    /// A listener for committed changes, or `None` on SQLite (one process owns the file, and
    /// its writes invalidate its caches directly).
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when PostgreSQL cannot be reached.
    pub async fn listen_changes(&self) -> Result<Option<ChangeListener>> {
        match self.backend() {
            crate::database::Backend::Sqlite(_) => Ok(None),
            crate::database::Backend::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(CHANGE_CHANNEL).await?;
                Ok(Some(ChangeListener { listener }))
            }
        }
    }
}
