//! The audit log: who changed what, when. Repositories write an entry in the same transaction
//! as every change they make, so an audited change and its entry commit or fail together.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;

use crate::Database;
use crate::database::{ceil_micros, now, on_pool};
use crate::error::Result;
use crate::page::{Listing, Page};
use crate::validate;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Entry id (increasing).
    pub id: i64,
    /// Who made the change: an API key name, `anonymous`, or a service name.
    pub actor: String,
    /// What was done, as `entity.verb` (`agent.create`, `tool.attach`, ...).
    pub action: String,
    /// The kind of entity changed.
    pub entity_type: String,
    /// The id of the entity changed, as text (`"3"`, `"3/7"` for an attachment).
    pub entity_id: Option<String>,
    /// What changed: names and changed field names, never secrets or whole configs.
    #[sqlx(json)]
    pub details: Value,
    /// When.
    pub at: DateTime<Utc>,
}

/// Filters for [`Audit::list`]; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only entries with this action.
    pub action: Option<String>,
    /// Only entries about this entity type.
    pub entity_type: Option<String>,
    /// Only entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this instant.
    pub until: Option<DateTime<Utc>>,
}

/// What a repository writes for one change (see [`record_audit!`]).
#[derive(Debug, Clone)]
pub(crate) struct AuditRecord<'a> {
    pub(crate) actor: &'a str,
    pub(crate) action: &'static str,
    pub(crate) entity_type: &'static str,
    pub(crate) entity_id: String,
    pub(crate) details: Value,
}

/// An audit entry to write (see [`Audit::record_once`]), as carried by an `audit.log`
/// message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Who did it.
    pub actor: String,
    /// What was done (`execution.running`, ...).
    pub action: String,
    /// The kind of entity.
    pub entity_type: String,
    /// The entity's identity.
    pub entity_id: Option<String>,
    /// Anything else worth keeping.
    #[serde(default)]
    pub details: Value,
    /// When it happened (default: when it is written).
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

/// Audit log access. Reached through [`Database::audit`].
#[derive(Debug, Clone, Copy)]
pub struct Audit<'a> {
    db: &'a Database,
}

impl<'a> Audit<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Records an action that is not a repository write (a login, a cache flush, ...).
    ///
    /// # Errors
    /// [`crate::DbError::Invalid`] for an empty or oversize actor/action,
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        entity_type: &str,
        entity_id: Option<&str>,
        details: Value,
    ) -> Result<AuditEntry> {
        validate::text("actor", actor, validate::limits::NAME)?;
        validate::text("action", action, validate::limits::NAME)?;
        validate::text("entity_type", entity_type, validate::limits::TYPE)?;
        validate::optional_text("entity_id", entity_id, validate::limits::NAME)?;
        validate::json("details", &details)?;
        let entry = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, AuditEntry>(
                "INSERT INTO audit_log (actor, action, entity_type, entity_id, details, at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 RETURNING id, actor, action, entity_type, entity_id, details, at",
            )
            .bind(actor)
            .bind(action)
            .bind(entity_type)
            .bind(entity_id)
            .bind(Json(&details))
            .bind(now())
            .fetch_one(pool)
            .await
        })?;
        Ok(entry)
    }

    /// Records an entry carried by message `message_id`, once per `consumer`: the entry and
    /// the consumer's inbox row are written in one transaction, so a redelivered message
    /// writes nothing. Returns whether the entry was written.
    ///
    /// # Errors
    /// As [`Audit::record`].
    pub async fn record_once(
        &self,
        consumer: &str,
        message_id: &str,
        entry: &NewAuditEntry,
    ) -> Result<bool> {
        validate::text("actor", &entry.actor, validate::limits::NAME)?;
        validate::text("action", &entry.action, validate::limits::NAME)?;
        validate::text("entity_type", &entry.entity_type, validate::limits::TYPE)?;
        validate::optional_text(
            "entity_id",
            entry.entity_id.as_deref(),
            validate::limits::NAME,
        )?;
        validate::json("details", &entry.details)?;
        let at = entry.at.map_or_else(now, crate::database::to_micros);
        crate::database::in_tx!(self.db, |tx, _pg| {
            let first = crate::queue::inbox_first!(tx, consumer, message_id);
            if first {
                sqlx::query(
                    "INSERT INTO audit_log (actor, action, entity_type, entity_id, details, at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&entry.actor)
                .bind(&entry.action)
                .bind(&entry.entity_type)
                .bind(entry.entity_id.as_deref())
                .bind(Json(&entry.details))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            first
        })
    }

    /// Entries matching `filter`, newest first.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, filter: &AuditFilter, page: Page) -> Result<Listing<AuditEntry>> {
        // Stored times have microseconds; round the bounds so that "at or after since" and
        // "before until" hold exactly, whatever precision the caller passed.
        let since = filter.since.map(ceil_micros);
        let until = filter.until.map(ceil_micros);
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, AuditEntry>(concat!(
                "SELECT id, actor, action, entity_type, entity_id, details, at FROM audit_log ",
                "WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) ",
                "AND ($3 IS NULL OR entity_type = $3) AND ($4 IS NULL OR at >= $4) ",
                "AND ($5 IS NULL OR at < $5) ",
                "ORDER BY at DESC, id DESC LIMIT $6 OFFSET $7"
            ))
            .bind(filter.actor.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.entity_type.as_deref())
            .bind(since)
            .bind(until)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 = sqlx::query_scalar(concat!(
                "SELECT COUNT(*) FROM audit_log ",
                "WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) ",
                "AND ($3 IS NULL OR entity_type = $3) AND ($4 IS NULL OR at >= $4) ",
                "AND ($5 IS NULL OR at < $5)"
            ))
            .bind(filter.actor.as_deref())
            .bind(filter.action.as_deref())
            .bind(filter.entity_type.as_deref())
            .bind(since)
            .bind(until)
            .fetch_one(&mut *pool)
            .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }
}

/// Writes an [`AuditRecord`] inside the current transaction.
macro_rules! record_audit {
    ($tx:ident, $record:expr) => {{
        let record: $crate::audit::AuditRecord<'_> = $record;
        sqlx::query(
            "INSERT INTO audit_log (actor, action, entity_type, entity_id, details, at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(record.actor)
        .bind(record.action)
        .bind(record.entity_type)
        .bind(record.entity_id)
        .bind(sqlx::types::Json(record.details))
        .bind($crate::database::now())
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use record_audit;
