//! Agents: named, typed configurations that the runtime executes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;

use crate::BackendKind;
use crate::Database;
use crate::audit::{AuditRecord, record_audit};
use crate::changes::{Entity, Op, record_change};
use crate::database::{ascii_lower_name, in_tx, now, on_pool};
use crate::error::{DbError, Result};
use crate::page::{Listing, Page};
use crate::validate::{self, limits};

/// Lifecycle state of an agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// In service.
    #[default]
    Active,
    /// Temporarily out of service.
    Inactive,
    /// Retired, kept for history.
    Archived,
}

impl AgentStatus {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Archived => "archived",
        }
    }
}

impl TryFrom<String> for AgentStatus {
    type Error = DbError;

    fn try_from(value: String) -> Result<Self> {
        match value.as_str() {
            "active" => Ok(Self::Active),
            "inactive" => Ok(Self::Inactive),
            "archived" => Ok(Self::Archived),
            other => Err(DbError::invalid(format!("unknown agent status {other:?}"))),
        }
    }
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Agent {
    /// Identity.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Agent type (selects prompts by `agent_type`).
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: Option<String>,
    /// Configuration (a JSON object).
    #[sqlx(json)]
    pub config: Value,
    /// Lifecycle state.
    #[sqlx(try_from = "String")]
    pub status: AgentStatus,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Unique name, 1 to 128 characters.
    pub name: String,
    /// Agent type, 1 to 64 characters.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text, up to 4096 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Configuration; must be a JSON object. Default `{}`.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Default `active`.
    #[serde(default)]
    pub status: AgentStatus,
}

/// A partial update: absent fields are left alone; `description: null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    /// New unique name.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub name: Option<String>,
    /// New type.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "groundwork_core::patch::non_null"
    )]
    pub kind: Option<String>,
    /// New description; `null` clears it.
    #[serde(
        default,
        deserialize_with = "groundwork_core::patch::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub description: Option<Option<String>>,
    /// New configuration (replaces the old one; must be an object).
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub config: Option<Value>,
    /// New status.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub status: Option<AgentStatus>,
}

impl AgentPatch {
    /// Names of the fields this patch sets (for the audit log).
    fn fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.name.is_some() {
            fields.push("name");
        }
        if self.kind.is_some() {
            fields.push("type");
        }
        if self.description.is_some() {
            fields.push("description");
        }
        if self.config.is_some() {
            fields.push("config");
        }
        if self.status.is_some() {
            fields.push("status");
        }
        fields
    }
}

/// Filters for [`Agents::list`]; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    /// Only agents of this type.
    pub kind: Option<String>,
    /// Only agents in this state.
    pub status: Option<AgentStatus>,
    /// Only agents whose name contains this text (ASCII case-insensitive).
    pub name_contains: Option<String>,
}

pub(crate) fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// The columns of [`Agent`], in its field order (shared with `views`).
macro_rules! agent_columns {
    () => {
        "id, name, type, description, config, status, created_at, updated_at"
    };
}
pub(crate) use agent_columns;

/// Agent repository. Reached through [`Database::agents`].
#[derive(Debug, Clone, Copy)]
pub struct Agents<'a> {
    db: &'a Database,
}

impl<'a> Agents<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// The agent with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64) -> Result<Agent> {
        let agent = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Agent>(concat!(
                "SELECT ",
                agent_columns!(),
                " FROM agents WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        agent.ok_or_else(|| DbError::not_found("agent", id))
    }

    /// The agent named `name`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get_by_name(&self, name: &str) -> Result<Agent> {
        let agent = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Agent>(concat!(
                "SELECT ",
                agent_columns!(),
                " FROM agents WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await
        })?;
        agent.ok_or_else(|| DbError::not_found("agent", name))
    }

    /// Agents matching `filter`, by id, one page of them.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, filter: &AgentFilter, page: Page) -> Result<Listing<Agent>> {
        let kind = filter.kind.as_deref();
        let status = filter.status.map(AgentStatus::as_str);
        let name = filter
            .name_contains
            .as_deref()
            .map(|n| validate::like_contains(&n.to_ascii_lowercase()));
        macro_rules! filtered {
            ($name:expr) => {
                concat!(
                    " FROM agents WHERE ($1 IS NULL OR type = $1) AND ($2 IS NULL OR status = $2) ",
                    "AND ($3 IS NULL OR ",
                    $name,
                    " LIKE $3 ESCAPE '\\')"
                )
            };
        }
        let (items_sql, count_sql) = match self.db.backend_kind() {
            BackendKind::Sqlite => (
                concat!(
                    "SELECT ",
                    agent_columns!(),
                    filtered!(ascii_lower_name!(sqlite)),
                    " ORDER BY id LIMIT $4 OFFSET $5"
                ),
                concat!("SELECT COUNT(*)", filtered!(ascii_lower_name!(sqlite))),
            ),
            BackendKind::Postgres => (
                concat!(
                    "SELECT ",
                    agent_columns!(),
                    filtered!(ascii_lower_name!(postgres)),
                    " ORDER BY id LIMIT $4 OFFSET $5"
                ),
                concat!("SELECT COUNT(*)", filtered!(ascii_lower_name!(postgres))),
            ),
        };
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, Agent>(items_sql)
                .bind(kind)
                .bind(status)
                .bind(name.as_deref())
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(&mut *pool)
                .await?;
            let total: i64 = sqlx::query_scalar(count_sql)
                .bind(kind)
                .bind(status)
                .bind(name.as_deref())
                .fetch_one(&mut *pool)
                .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Creates an agent; `actor` is recorded in the audit log.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for a field out of bounds or a config that is not an object,
    /// [`DbError::Conflict`] when the name is taken.
    pub async fn create(&self, actor: &str, new: &NewAgent) -> Result<Agent> {
        validate::text("name", &new.name, limits::NAME)?;
        validate::text("type", &new.kind, limits::TYPE)?;
        validate::optional_text(
            "description",
            new.description.as_deref(),
            limits::DESCRIPTION,
        )?;
        validate::object("config", &new.config)?;
        let at = now();
        let agent = in_tx!(self.db, |tx, pg| {
            let agent = sqlx::query_as::<_, Agent>(concat!(
                "INSERT INTO agents (name, type, description, config, status, created_at, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
                agent_columns!()
            ))
            .bind(&new.name)
            .bind(&new.kind)
            .bind(new.description.as_deref())
            .bind(Json(&new.config))
            .bind(new.status.as_str())
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &new.name))?;
            record_change!(tx, pg, Entity::Agent, agent.id, None::<i64>, Op::Upsert);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "agent.create",
                    entity_type: "agent",
                    entity_id: agent.id.to_string(),
                    details: json!({ "name": agent.name }),
                }
            );
            agent
        })?;
        Ok(agent)
    }

    /// Applies `patch` to the agent with `id`. An empty patch changes nothing and writes no
    /// audit entry.
    ///
    /// # Errors
    /// [`DbError::NotFound`], [`DbError::Invalid`] or [`DbError::Conflict`] as for
    /// [`Agents::create`].
    pub async fn update(&self, actor: &str, id: i64, patch: &AgentPatch) -> Result<Agent> {
        let fields = patch.fields();
        if fields.is_empty() {
            return self.get(id).await;
        }
        if let Some(name) = &patch.name {
            validate::text("name", name, limits::NAME)?;
        }
        if let Some(kind) = &patch.kind {
            validate::text("type", kind, limits::TYPE)?;
        }
        if let Some(description) = &patch.description {
            validate::optional_text("description", description.as_deref(), limits::DESCRIPTION)?;
        }
        if let Some(config) = &patch.config {
            validate::object("config", config)?;
        }
        let at = now();
        let agent = in_tx!(self.db, |tx, pg| {
            let agent = sqlx::query_as::<_, Agent>(concat!(
                "UPDATE agents SET name = COALESCE($2, name), type = COALESCE($3, type), ",
                "description = CASE WHEN $4 THEN $5 ELSE description END, ",
                "config = COALESCE($6, config), status = COALESCE($7, status), updated_at = $8 ",
                "WHERE id = $1 RETURNING ",
                agent_columns!()
            ))
            .bind(id)
            .bind(patch.name.as_deref())
            .bind(patch.kind.as_deref())
            .bind(patch.description.is_some())
            .bind(patch.description.clone().flatten())
            .bind(patch.config.as_ref().map(Json))
            .bind(patch.status.map(AgentStatus::as_str))
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| name_taken(e, patch.name.as_deref().unwrap_or_default()))?
            .ok_or_else(|| DbError::not_found("agent", id))?;
            record_change!(tx, pg, Entity::Agent, agent.id, None::<i64>, Op::Upsert);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "agent.update",
                    entity_type: "agent",
                    entity_id: id.to_string(),
                    details: json!({ "name": agent.name, "fields": fields }),
                }
            );
            agent
        })?;
        Ok(agent)
    }

    /// Deletes the agent with `id` and its tool attachments.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn delete(&self, actor: &str, id: i64) -> Result<()> {
        in_tx!(self.db, |tx, pg| {
            let name: Option<String> =
                sqlx::query_scalar("DELETE FROM agents WHERE id = $1 RETURNING name")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let name = name.ok_or_else(|| DbError::not_found("agent", id))?;
            record_change!(tx, pg, Entity::Agent, id, None::<i64>, Op::Delete);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "agent.delete",
                    entity_type: "agent",
                    entity_id: id.to_string(),
                    details: json!({ "name": name }),
                }
            );
        })?;
        Ok(())
    }
}

fn name_taken(err: sqlx::Error, name: &str) -> DbError {
    DbError::from(err).on_conflict(|| format!("an agent named {name:?} already exists"))
}
