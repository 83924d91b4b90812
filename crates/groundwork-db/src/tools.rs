//! Tools and their attachment to agents (`agent_tools`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;

use crate::BackendKind;
use crate::Database;
use crate::agents::empty_object;
use crate::audit::{AuditRecord, record_audit};
use crate::changes::{Entity, Op, record_change};
use crate::database::{ascii_lower_name, in_tx, now, on_pool};
use crate::error::{DbError, Result};
use crate::page::{Listing, Page};
use crate::validate::{self, limits};

/// A tool as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tool {
    /// Identity.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Tool type (`http`, `sql`, `function`, ...).
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    /// Free text.
    pub description: Option<String>,
    /// Configuration (a JSON object).
    #[sqlx(json)]
    pub config: Value,
    /// Inactive tools are not handed to agents.
    pub is_active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTool {
    /// Unique name, 1 to 128 characters.
    pub name: String,
    /// Tool type, 1 to 64 characters.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text, up to 4096 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Configuration; must be a JSON object. Default `{}`.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Default `true`.
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// A partial update: absent fields are left alone; `description: null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ToolPatch {
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
    /// Activate or deactivate.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub is_active: Option<bool>,
}

impl ToolPatch {
    fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("type", self.kind.is_some()),
            ("description", self.description.is_some()),
            ("config", self.config.is_some()),
            ("is_active", self.is_active.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// Filters for [`Tools::list`]; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct ToolFilter {
    /// Only tools of this type.
    pub kind: Option<String>,
    /// Only active (or only inactive) tools.
    pub is_active: Option<bool>,
    /// Only tools whose name contains this text (ASCII case-insensitive).
    pub name_contains: Option<String>,
}

/// How a tool is attached to an agent (the body of an attach call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// Per-agent settings merged over the tool's config (top-level keys win). Must be an
    /// object when present.
    #[serde(default)]
    pub config_override: Option<Value>,
    /// Default `true`; an inactive attachment is kept but not handed to the agent.
    #[serde(default = "yes")]
    pub is_active: bool,
}

impl Default for Attachment {
    fn default() -> Self {
        Self {
            config_override: None,
            is_active: true,
        }
    }
}

/// A row of `agent_tools`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentTool {
    /// The agent.
    pub agent_id: i64,
    /// The tool.
    pub tool_id: i64,
    /// Per-agent settings merged over the tool's config.
    #[sqlx(json(nullable))]
    pub config_override: Option<Value>,
    /// Whether the agent gets this tool.
    pub is_active: bool,
    /// When the tool was first attached.
    pub created_at: DateTime<Utc>,
    /// Last change of the attachment.
    pub updated_at: DateTime<Utc>,
}

/// A tool as an agent sees it: the tool, the per-agent override and the merged config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachedTool {
    /// Tool id.
    pub id: i64,
    /// Tool name.
    pub name: String,
    /// Tool type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Tool description.
    pub description: Option<String>,
    /// The tool's own configuration.
    pub config: Value,
    /// The agent's override, if any.
    pub config_override: Option<Value>,
    /// `config` with the override's top-level keys applied: what the agent should use.
    pub effective_config: Value,
    /// When the tool was attached to the agent.
    pub attached_at: DateTime<Utc>,
    /// Last change of the tool or the attachment.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttachedRow {
    id: i64,
    name: String,
    #[sqlx(rename = "type")]
    kind: String,
    description: Option<String>,
    #[sqlx(json)]
    config: Value,
    #[sqlx(json(nullable))]
    config_override: Option<Value>,
    attached_at: DateTime<Utc>,
    tool_updated_at: DateTime<Utc>,
    attachment_updated_at: DateTime<Utc>,
}

impl From<AttachedRow> for AttachedTool {
    fn from(row: AttachedRow) -> Self {
        let mut effective_config = row.config.clone();
        if let (Value::Object(base), Some(Value::Object(over))) =
            (&mut effective_config, &row.config_override)
        {
            for (key, value) in over {
                base.insert(key.clone(), value.clone());
            }
        }
        Self {
            id: row.id,
            name: row.name,
            kind: row.kind,
            description: row.description,
            config: row.config,
            config_override: row.config_override,
            effective_config,
            attached_at: row.attached_at,
            updated_at: row.tool_updated_at.max(row.attachment_updated_at),
        }
    }
}

fn yes() -> bool {
    true
}

macro_rules! tool_columns {
    () => {
        "id, name, type, description, config, is_active, created_at, updated_at"
    };
}

/// Tool repository, including attachments. Reached through [`Database::tools`].
#[derive(Debug, Clone, Copy)]
pub struct Tools<'a> {
    db: &'a Database,
}

impl<'a> Tools<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// The tool with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64) -> Result<Tool> {
        let tool = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Tool>(concat!(
                "SELECT ",
                tool_columns!(),
                " FROM tools WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        tool.ok_or_else(|| DbError::not_found("tool", id))
    }

    /// Tools matching `filter`, by id, one page of them.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, filter: &ToolFilter, page: Page) -> Result<Listing<Tool>> {
        let kind = filter.kind.as_deref();
        let name = filter
            .name_contains
            .as_deref()
            .map(|n| validate::like_contains(&n.to_ascii_lowercase()));
        macro_rules! filtered {
            ($name:expr) => {
                concat!(
                    " FROM tools WHERE ($1 IS NULL OR type = $1) AND ($2 IS NULL OR is_active = $2) ",
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
                    tool_columns!(),
                    filtered!(ascii_lower_name!(sqlite)),
                    " ORDER BY id LIMIT $4 OFFSET $5"
                ),
                concat!("SELECT COUNT(*)", filtered!(ascii_lower_name!(sqlite))),
            ),
            BackendKind::Postgres => (
                concat!(
                    "SELECT ",
                    tool_columns!(),
                    filtered!(ascii_lower_name!(postgres)),
                    " ORDER BY id LIMIT $4 OFFSET $5"
                ),
                concat!("SELECT COUNT(*)", filtered!(ascii_lower_name!(postgres))),
            ),
        };
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, Tool>(items_sql)
                .bind(kind)
                .bind(filter.is_active)
                .bind(name.as_deref())
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(&mut *pool)
                .await?;
            let total: i64 = sqlx::query_scalar(count_sql)
                .bind(kind)
                .bind(filter.is_active)
                .bind(name.as_deref())
                .fetch_one(&mut *pool)
                .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Creates a tool.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for a field out of bounds or a config that is not an object,
    /// [`DbError::Conflict`] when the name is taken.
    pub async fn create(&self, actor: &str, new: &NewTool) -> Result<Tool> {
        validate::text("name", &new.name, limits::NAME)?;
        validate::text("type", &new.kind, limits::TYPE)?;
        validate::optional_text(
            "description",
            new.description.as_deref(),
            limits::DESCRIPTION,
        )?;
        validate::object("config", &new.config)?;
        let at = now();
        let tool = in_tx!(self.db, |tx, pg| {
            let tool = sqlx::query_as::<_, Tool>(concat!(
                "INSERT INTO tools (name, type, description, config, is_active, created_at, updated_at) ",
                "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
                tool_columns!()
            ))
            .bind(&new.name)
            .bind(&new.kind)
            .bind(new.description.as_deref())
            .bind(Json(&new.config))
            .bind(new.is_active)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &new.name))?;
            record_change!(tx, pg, Entity::Tool, tool.id, None::<i64>, Op::Upsert);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "tool.create",
                    entity_type: "tool",
                    entity_id: tool.id.to_string(),
                    details: json!({ "name": tool.name }),
                }
            );
            tool
        })?;
        Ok(tool)
    }

    /// Applies `patch` to the tool with `id`. An empty patch changes nothing.
    ///
    /// # Errors
    /// As for [`Tools::create`], plus [`DbError::NotFound`].
    pub async fn update(&self, actor: &str, id: i64, patch: &ToolPatch) -> Result<Tool> {
        Ok(self.apply(actor, id, patch, false).await?.0)
    }

    /// [`Tools::update`], also returning the agents the tool is attached to, read in the
    /// same transaction (so a caller keeping per-agent caches learns whom the change reached
    /// with nothing left to fail after the commit). An empty patch changes nothing and
    /// reaches no agent.
    ///
    /// # Errors
    /// As for [`Tools::update`].
    pub async fn update_reaching(
        &self,
        actor: &str,
        id: i64,
        patch: &ToolPatch,
    ) -> Result<(Tool, Vec<i64>)> {
        self.apply(actor, id, patch, true).await
    }

    /// The update of [`Tools::update`]; with `agents`, also reads the agents the tool is
    /// attached to in its transaction.
    async fn apply(
        &self,
        actor: &str,
        id: i64,
        patch: &ToolPatch,
        agents: bool,
    ) -> Result<(Tool, Vec<i64>)> {
        let fields = patch.fields();
        if fields.is_empty() {
            return Ok((self.get(id).await?, Vec::new()));
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
        let tool = in_tx!(self.db, |tx, pg| {
            let tool = sqlx::query_as::<_, Tool>(concat!(
                "UPDATE tools SET name = COALESCE($2, name), type = COALESCE($3, type), ",
                "description = CASE WHEN $4 THEN $5 ELSE description END, ",
                "config = COALESCE($6, config), is_active = COALESCE($7, is_active), ",
                "updated_at = $8 WHERE id = $1 RETURNING ",
                tool_columns!()
            ))
            .bind(id)
            .bind(patch.name.as_deref())
            .bind(patch.kind.as_deref())
            .bind(patch.description.is_some())
            .bind(patch.description.clone().flatten())
            .bind(patch.config.as_ref().map(Json))
            .bind(patch.is_active)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| name_taken(e, patch.name.as_deref().unwrap_or_default()))?
            .ok_or_else(|| DbError::not_found("tool", id))?;
            record_change!(tx, pg, Entity::Tool, id, None::<i64>, Op::Upsert);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "tool.update",
                    entity_type: "tool",
                    entity_id: id.to_string(),
                    details: json!({ "name": tool.name, "fields": fields }),
                }
            );
            let reached: Vec<i64> = if agents {
                sqlx::query_scalar(
                    "SELECT agent_id FROM agent_tools WHERE tool_id = $1 ORDER BY agent_id",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
            } else {
                Vec::new()
            };
            (tool, reached)
        })?;
        Ok(tool)
    }

    /// Deletes the tool with `id`, detaching it from every agent first (each detachment is
    /// recorded as its own change, so readers keyed by agent see it). Returns the agents it
    /// was detached from, read in the same transaction.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn delete(&self, actor: &str, id: i64) -> Result<Vec<i64>> {
        let detached = in_tx!(self.db, |tx, pg| {
            let agents: Vec<i64> =
                sqlx::query_scalar("DELETE FROM agent_tools WHERE tool_id = $1 RETURNING agent_id")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            let name: Option<String> =
                sqlx::query_scalar("DELETE FROM tools WHERE id = $1 RETURNING name")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let name = name.ok_or_else(|| DbError::not_found("tool", id))?;
            for agent_id in &agents {
                record_change!(tx, pg, Entity::AgentTool, *agent_id, Some(id), Op::Delete);
            }
            record_change!(tx, pg, Entity::Tool, id, None::<i64>, Op::Delete);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "tool.delete",
                    entity_type: "tool",
                    entity_id: id.to_string(),
                    details: json!({ "name": name, "detached_from": agents }),
                }
            );
            agents
        })?;
        Ok(detached)
    }

    /// Attaches tool `tool_id` to agent `agent_id`, or updates the attachment. Returns the
    /// attachment and whether it was created (`true`) or updated (`false`).
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the agent or the tool does not exist, [`DbError::Invalid`]
    /// when the override is not an object.
    pub async fn attach(
        &self,
        actor: &str,
        agent_id: i64,
        tool_id: i64,
        attachment: &Attachment,
    ) -> Result<(AgentTool, bool)> {
        if let Some(config) = &attachment.config_override {
            validate::object("config_override", config)?;
        }
        let at = now();
        let row = in_tx!(self.db, |tx, pg| {
            let agent: Option<i64> = sqlx::query_scalar("SELECT id FROM agents WHERE id = $1")
                .bind(agent_id)
                .fetch_optional(&mut *tx)
                .await?;
            agent.ok_or_else(|| DbError::not_found("agent", agent_id))?;
            let tool: Option<i64> = sqlx::query_scalar("SELECT id FROM tools WHERE id = $1")
                .bind(tool_id)
                .fetch_optional(&mut *tx)
                .await?;
            tool.ok_or_else(|| DbError::not_found("tool", tool_id))?;
            let row = sqlx::query_as::<_, AgentTool>(
                "INSERT INTO agent_tools \
                 (agent_id, tool_id, config_override, is_active, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) \
                 ON CONFLICT (agent_id, tool_id) DO UPDATE SET \
                 config_override = excluded.config_override, is_active = excluded.is_active, \
                 updated_at = excluded.updated_at \
                 RETURNING agent_id, tool_id, config_override, is_active, created_at, updated_at",
            )
            .bind(agent_id)
            .bind(tool_id)
            .bind(attachment.config_override.as_ref().map(Json))
            .bind(attachment.is_active)
            .bind(at)
            .fetch_one(&mut *tx)
            .await?;
            let created = row.created_at == at;
            record_change!(
                tx,
                pg,
                Entity::AgentTool,
                agent_id,
                Some(tool_id),
                Op::Upsert
            );
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "tool.attach",
                    entity_type: "agent_tool",
                    entity_id: format!("{agent_id}/{tool_id}"),
                    details: json!({
                        "agent_id": agent_id,
                        "tool_id": tool_id,
                        "created": created,
                        "is_active": attachment.is_active,
                    }),
                }
            );
            (row, created)
        })?;
        Ok(row)
    }

    /// Detaches tool `tool_id` from agent `agent_id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the agent does not exist or the tool is not attached.
    pub async fn detach(&self, actor: &str, agent_id: i64, tool_id: i64) -> Result<()> {
        in_tx!(self.db, |tx, pg| {
            let deleted =
                sqlx::query("DELETE FROM agent_tools WHERE agent_id = $1 AND tool_id = $2")
                    .bind(agent_id)
                    .bind(tool_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if deleted == 0 {
                let agent: Option<i64> = sqlx::query_scalar("SELECT id FROM agents WHERE id = $1")
                    .bind(agent_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Err(match agent {
                    None => DbError::not_found("agent", agent_id),
                    Some(_) => DbError::NotFound {
                        entity: "attachment of tool",
                        id: format!("{tool_id} to agent {agent_id}"),
                    },
                });
            }
            record_change!(
                tx,
                pg,
                Entity::AgentTool,
                agent_id,
                Some(tool_id),
                Op::Delete
            );
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "tool.detach",
                    entity_type: "agent_tool",
                    entity_id: format!("{agent_id}/{tool_id}"),
                    details: json!({ "agent_id": agent_id, "tool_id": tool_id }),
                }
            );
        })?;
        Ok(())
    }

    /// Every attachment of agent `agent_id`, active or not, by tool id.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn attachments(&self, agent_id: i64) -> Result<Vec<AgentTool>> {
        let rows = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, AgentTool>(
                "SELECT agent_id, tool_id, config_override, is_active, created_at, updated_at \
                 FROM agent_tools WHERE agent_id = $1 ORDER BY tool_id",
            )
            .bind(agent_id)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }

    /// The tools agent `agent_id` may use: active tools with an active attachment, by name.
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the agent does not exist.
    pub async fn active_for_agent(&self, agent_id: i64) -> Result<Vec<AttachedTool>> {
        self.db
            .views()
            .tools_of(&[agent_id])
            .await?
            .remove(&agent_id)
            .ok_or_else(|| DbError::not_found("agent", agent_id))
    }
}

fn name_taken(err: sqlx::Error, name: &str) -> DbError {
    DbError::from(err).on_conflict(|| format!("a tool named {name:?} already exists"))
}
