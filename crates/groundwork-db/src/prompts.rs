//! Prompts: versioned texts per agent type. Only active prompts are returned unless asked.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;

use crate::Database;
use crate::agents::empty_object;
use crate::audit::{AuditRecord, record_audit};
use crate::changes::{Entity, Op, record_change};
use crate::database::{in_tx, now, on_pool};
use crate::error::{DbError, Result};
use crate::page::{Listing, Page};
use crate::validate::{self, limits};

/// A prompt as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Prompt {
    /// Identity.
    pub id: i64,
    /// Name; unique together with `version`.
    pub name: String,
    /// Version label (`"1"`, `"2024-06-01"`, `"v3-beta"`).
    pub version: String,
    /// The prompt text.
    pub content: String,
    /// The agent type this prompt is for.
    pub agent_type: String,
    /// Free-form metadata (a JSON object).
    #[sqlx(json)]
    pub metadata: Value,
    /// Inactive prompts are hidden unless asked for.
    pub is_active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPrompt {
    /// Name, 1 to 128 characters.
    pub name: String,
    /// Version label, 1 to 64 characters. Default `"1"`.
    #[serde(default = "first_version")]
    pub version: String,
    /// The prompt text, 1 to 200,000 characters.
    pub content: String,
    /// Agent type, 1 to 64 characters.
    pub agent_type: String,
    /// Metadata; must be a JSON object. Default `{}`.
    #[serde(default = "empty_object")]
    pub metadata: Value,
    /// Default `true`.
    #[serde(default = "yes")]
    pub is_active: bool,
}

/// A partial update: absent fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PromptPatch {
    /// New name.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub name: Option<String>,
    /// New version label.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub version: Option<String>,
    /// New text.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub content: Option<String>,
    /// New agent type.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub agent_type: Option<String>,
    /// New metadata (replaces the old one; must be an object).
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub metadata: Option<Value>,
    /// Activate or deactivate.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub is_active: Option<bool>,
}

impl PromptPatch {
    fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("version", self.version.is_some()),
            ("content", self.content.is_some()),
            ("agent_type", self.agent_type.is_some()),
            ("metadata", self.metadata.is_some()),
            ("is_active", self.is_active.is_some()),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }
}

/// Filters for [`Prompts::list`].
#[derive(Debug, Clone, Default)]
pub struct PromptFilter {
    /// Only prompts for this agent type.
    pub agent_type: Option<String>,
    /// Only prompts with this name.
    pub name: Option<String>,
    /// Include inactive prompts (default: only active ones).
    pub include_inactive: bool,
}

fn first_version() -> String {
    "1".to_owned()
}

fn yes() -> bool {
    true
}

/// The columns of [`Prompt`], in its field order (shared with `views`).
macro_rules! prompt_columns {
    () => {
        "id, name, version, content, agent_type, metadata, is_active, created_at, updated_at"
    };
}
pub(crate) use prompt_columns;

/// Prompt repository. Reached through [`Database::prompts`].
#[derive(Debug, Clone, Copy)]
pub struct Prompts<'a> {
    db: &'a Database,
}

impl<'a> Prompts<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// The prompt with `id`; an inactive prompt counts as missing unless `include_inactive`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64, include_inactive: bool) -> Result<Prompt> {
        let prompt = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Prompt>(concat!(
                "SELECT ",
                prompt_columns!(),
                " FROM prompts WHERE id = $1 AND ($2 OR is_active = TRUE)"
            ))
            .bind(id)
            .bind(include_inactive)
            .fetch_optional(pool)
            .await
        })?;
        prompt.ok_or_else(|| DbError::not_found("prompt", id))
    }

    /// Prompts matching `filter`, newest first (by last change), one page of them.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, filter: &PromptFilter, page: Page) -> Result<Listing<Prompt>> {
        let agent_type = filter.agent_type.as_deref();
        let name = filter.name.as_deref();
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, Prompt>(concat!(
                "SELECT ",
                prompt_columns!(),
                " FROM prompts WHERE ($1 IS NULL OR agent_type = $1) ",
                "AND ($2 IS NULL OR name = $2) AND ($3 OR is_active = TRUE) ",
                "ORDER BY updated_at DESC, id DESC LIMIT $4 OFFSET $5"
            ))
            .bind(agent_type)
            .bind(name)
            .bind(filter.include_inactive)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 = sqlx::query_scalar(concat!(
                "SELECT COUNT(*) FROM prompts WHERE ($1 IS NULL OR agent_type = $1) ",
                "AND ($2 IS NULL OR name = $2) AND ($3 OR is_active = TRUE)"
            ))
            .bind(agent_type)
            .bind(name)
            .bind(filter.include_inactive)
            .fetch_one(&mut *pool)
            .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// The active prompts for `agent_type`, newest first (the seeds'
    /// `get_prompts_by_agent_type`).
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn active_for_agent_type(&self, agent_type: &str) -> Result<Vec<Prompt>> {
        let prompts = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Prompt>(concat!(
                "SELECT ",
                prompt_columns!(),
                " FROM prompts WHERE agent_type = $1 AND is_active = TRUE ",
                "ORDER BY updated_at DESC, id DESC"
            ))
            .bind(agent_type)
            .fetch_all(pool)
            .await
        })?;
        Ok(prompts)
    }

    /// Creates a prompt. Name, content and agent type are required and bounded.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for a missing or oversize field or metadata that is not an object,
    /// [`DbError::Conflict`] when (name, version) is taken.
    pub async fn create(&self, actor: &str, new: &NewPrompt) -> Result<Prompt> {
        validate::text("name", &new.name, limits::NAME)?;
        validate::text("version", &new.version, limits::VERSION)?;
        validate::long_text("content", &new.content, limits::PROMPT_CONTENT)?;
        validate::text("agent_type", &new.agent_type, limits::TYPE)?;
        validate::object("metadata", &new.metadata)?;
        let at = now();
        let prompt = in_tx!(self.db, |tx, pg| {
            let prompt = sqlx::query_as::<_, Prompt>(concat!(
                "INSERT INTO prompts (name, version, content, agent_type, metadata, is_active, ",
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING ",
                prompt_columns!()
            ))
            .bind(&new.name)
            .bind(&new.version)
            .bind(&new.content)
            .bind(&new.agent_type)
            .bind(Json(&new.metadata))
            .bind(new.is_active)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| version_taken(e, &new.name, &new.version))?;
            record_change!(
                tx,
                pg,
                Entity::Prompt,
                prompt.id,
                None::<i64>,
                Op::Upsert,
                Some(prompt.agent_type.as_str())
            );
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "prompt.create",
                    entity_type: "prompt",
                    entity_id: prompt.id.to_string(),
                    details: json!({ "name": prompt.name, "version": prompt.version }),
                }
            );
            prompt
        })?;
        Ok(prompt)
    }

    /// Applies `patch` to the prompt with `id` (active or not). An empty patch changes nothing.
    ///
    /// # Errors
    /// As for [`Prompts::create`], plus [`DbError::NotFound`].
    pub async fn update(&self, actor: &str, id: i64, patch: &PromptPatch) -> Result<Prompt> {
        let fields = patch.fields();
        if fields.is_empty() {
            return self.get(id, true).await;
        }
        if let Some(name) = &patch.name {
            validate::text("name", name, limits::NAME)?;
        }
        if let Some(version) = &patch.version {
            validate::text("version", version, limits::VERSION)?;
        }
        if let Some(content) = &patch.content {
            validate::long_text("content", content, limits::PROMPT_CONTENT)?;
        }
        if let Some(agent_type) = &patch.agent_type {
            validate::text("agent_type", agent_type, limits::TYPE)?;
        }
        if let Some(metadata) = &patch.metadata {
            validate::object("metadata", metadata)?;
        }
        let at = now();
        let prompt = in_tx!(self.db, |tx, pg| {
            // The type before the change: readers keyed by agent type must hear of both.
            let old_type: Option<String> = sqlx::query_scalar(if pg {
                "SELECT agent_type FROM prompts WHERE id = $1 FOR UPDATE"
            } else {
                "SELECT agent_type FROM prompts WHERE id = $1"
            })
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let old_type = old_type.ok_or_else(|| DbError::not_found("prompt", id))?;
            let prompt = sqlx::query_as::<_, Prompt>(concat!(
                "UPDATE prompts SET name = COALESCE($2, name), version = COALESCE($3, version), ",
                "content = COALESCE($4, content), agent_type = COALESCE($5, agent_type), ",
                "metadata = COALESCE($6, metadata), is_active = COALESCE($7, is_active), ",
                "updated_at = $8 WHERE id = $1 RETURNING ",
                prompt_columns!()
            ))
            .bind(id)
            .bind(patch.name.as_deref())
            .bind(patch.version.as_deref())
            .bind(patch.content.as_deref())
            .bind(patch.agent_type.as_deref())
            .bind(patch.metadata.as_ref().map(Json))
            .bind(patch.is_active)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| {
                DbError::from(e)
                    .on_conflict(|| "another prompt already has this name and version".to_owned())
            })?
            .ok_or_else(|| DbError::not_found("prompt", id))?;
            record_change!(
                tx,
                pg,
                Entity::Prompt,
                id,
                None::<i64>,
                Op::Upsert,
                Some(prompt.agent_type.as_str())
            );
            if old_type != prompt.agent_type {
                record_change!(
                    tx,
                    pg,
                    Entity::Prompt,
                    id,
                    None::<i64>,
                    Op::Upsert,
                    Some(old_type.as_str())
                );
            }
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "prompt.update",
                    entity_type: "prompt",
                    entity_id: id.to_string(),
                    details: json!({
                        "name": prompt.name,
                        "version": prompt.version,
                        "fields": fields,
                    }),
                }
            );
            prompt
        })?;
        Ok(prompt)
    }

    /// Deletes the prompt with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn delete(&self, actor: &str, id: i64) -> Result<()> {
        in_tx!(self.db, |tx, pg| {
            let deleted: Option<(String, String)> =
                sqlx::query_as("DELETE FROM prompts WHERE id = $1 RETURNING name, agent_type")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (name, agent_type) = deleted.ok_or_else(|| DbError::not_found("prompt", id))?;
            record_change!(
                tx,
                pg,
                Entity::Prompt,
                id,
                None::<i64>,
                Op::Delete,
                Some(agent_type.as_str())
            );
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "prompt.delete",
                    entity_type: "prompt",
                    entity_id: id.to_string(),
                    details: json!({ "name": name }),
                }
            );
        })?;
        Ok(())
    }
}

fn version_taken(err: sqlx::Error, name: &str, version: &str) -> DbError {
    DbError::from(err)
        .on_conflict(|| format!("a prompt named {name:?} with version {version:?} already exists"))
}
