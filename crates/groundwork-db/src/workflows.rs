//! Workflows (named, ordered steps), their executions and the checkpoints executions save.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json;

use crate::Database;
use crate::audit::{AuditRecord, record_audit};
use crate::database::{in_tx, now, on_pool};
use crate::error::{DbError, Result};
use crate::page::{Listing, Page};
use crate::queue::{NewMessage, stage_outbox};
use crate::validate::{self, limits};

/// A workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workflow {
    /// Identity.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The steps, in order (a JSON array).
    #[sqlx(json)]
    pub steps: Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Fields of a new workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewWorkflow {
    /// Unique name, 1 to 128 characters.
    pub name: String,
    /// Free text, up to 4096 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// The steps, in order; must be a JSON array. Default `[]`. The server checks each step
    /// before storing (422 otherwise): `{"name"?, "type": "echo", "value"?}`,
    /// `{"name"?, "type": "webhook", "url": "http(s)://…", "timeout_ms"?}`,
    /// `{"name"?, "type": "agent", "agent_id": N}` (an existing agent),
    /// `{"name"?, "type": "fail", "message"?, "retryable"?}`; names unique, no other fields.
    #[serde(default = "empty_array")]
    pub steps: Value,
}

/// A partial update: absent fields are left alone; `description: null` clears it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WorkflowPatch {
    /// New unique name.
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub name: Option<String>,
    /// New description; `null` clears it.
    #[serde(
        default,
        deserialize_with = "groundwork_core::patch::double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub description: Option<Option<String>>,
    /// New steps (replace the old ones; must be an array of valid steps, as in
    /// [`NewWorkflow::steps`]).
    #[serde(default, deserialize_with = "groundwork_core::patch::non_null")]
    pub steps: Option<Value>,
}

fn empty_array() -> Value {
    Value::Array(Vec::new())
}

macro_rules! workflow_columns {
    () => {
        "id, name, description, steps, created_at, updated_at"
    };
}

/// Workflow repository. Reached through [`Database::workflows`].
#[derive(Debug, Clone, Copy)]
pub struct Workflows<'a> {
    db: &'a Database,
}

impl<'a> Workflows<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// The workflow with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64) -> Result<Workflow> {
        let workflow = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Workflow>(concat!(
                "SELECT ",
                workflow_columns!(),
                " FROM workflows WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        workflow.ok_or_else(|| DbError::not_found("workflow", id))
    }

    /// Workflows by id, one page of them.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list(&self, page: Page) -> Result<Listing<Workflow>> {
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, Workflow>(concat!(
                "SELECT ",
                workflow_columns!(),
                " FROM workflows ORDER BY id LIMIT $1 OFFSET $2"
            ))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(pool)
            .await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflows")
                .fetch_one(pool)
                .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Creates a workflow.
    ///
    /// # Errors
    /// [`DbError::Invalid`] for a field out of bounds or steps that are not an array,
    /// [`DbError::Conflict`] when the name is taken.
    pub async fn create(&self, actor: &str, new: &NewWorkflow) -> Result<Workflow> {
        validate::text("name", &new.name, limits::NAME)?;
        validate::optional_text(
            "description",
            new.description.as_deref(),
            limits::DESCRIPTION,
        )?;
        validate::array("steps", &new.steps)?;
        let at = now();
        let workflow = in_tx!(self.db, |tx, _pg| {
            let workflow = sqlx::query_as::<_, Workflow>(concat!(
                "INSERT INTO workflows (name, description, steps, created_at, updated_at) ",
                "VALUES ($1, $2, $3, $4, $4) RETURNING ",
                workflow_columns!()
            ))
            .bind(&new.name)
            .bind(new.description.as_deref())
            .bind(Json(&new.steps))
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| name_taken(e, &new.name))?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "workflow.create",
                    entity_type: "workflow",
                    entity_id: workflow.id.to_string(),
                    details: json!({ "name": workflow.name }),
                }
            );
            workflow
        })?;
        Ok(workflow)
    }

    /// Applies `patch` to the workflow with `id`. An empty patch changes nothing.
    ///
    /// # Errors
    /// As for [`Workflows::create`], plus [`DbError::NotFound`].
    pub async fn update(&self, actor: &str, id: i64, patch: &WorkflowPatch) -> Result<Workflow> {
        let mut fields = Vec::new();
        if let Some(name) = &patch.name {
            validate::text("name", name, limits::NAME)?;
            fields.push("name");
        }
        if let Some(description) = &patch.description {
            validate::optional_text("description", description.as_deref(), limits::DESCRIPTION)?;
            fields.push("description");
        }
        if let Some(steps) = &patch.steps {
            validate::array("steps", steps)?;
            fields.push("steps");
        }
        if fields.is_empty() {
            return self.get(id).await;
        }
        let at = now();
        let workflow = in_tx!(self.db, |tx, _pg| {
            let workflow = sqlx::query_as::<_, Workflow>(concat!(
                "UPDATE workflows SET name = COALESCE($2, name), ",
                "description = CASE WHEN $3 THEN $4 ELSE description END, ",
                "steps = COALESCE($5, steps), updated_at = $6 WHERE id = $1 RETURNING ",
                workflow_columns!()
            ))
            .bind(id)
            .bind(patch.name.as_deref())
            .bind(patch.description.is_some())
            .bind(patch.description.clone().flatten())
            .bind(patch.steps.as_ref().map(Json))
            .bind(at)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| name_taken(e, patch.name.as_deref().unwrap_or_default()))?
            .ok_or_else(|| DbError::not_found("workflow", id))?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "workflow.update",
                    entity_type: "workflow",
                    entity_id: id.to_string(),
                    details: json!({ "name": workflow.name, "fields": fields }),
                }
            );
            workflow
        })?;
        Ok(workflow)
    }

    /// Deletes the workflow with `id`. A workflow with executions is kept (their history
    /// would be lost): that is a [`DbError::Conflict`].
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none, [`DbError::Conflict`] if it has executions.
    pub async fn delete(&self, actor: &str, id: i64) -> Result<()> {
        in_tx!(self.db, |tx, _pg| {
            let name: Option<String> =
                sqlx::query_scalar("DELETE FROM workflows WHERE id = $1 RETURNING name")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(|e| match DbError::from(e) {
                        DbError::Invalid { source, .. } => DbError::Conflict {
                            message: format!("workflow {id} has executions and cannot be deleted"),
                            source,
                        },
                        other => other,
                    })?;
            let name = name.ok_or_else(|| DbError::not_found("workflow", id))?;
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "workflow.delete",
                    entity_type: "workflow",
                    entity_id: id.to_string(),
                    details: json!({ "name": name }),
                }
            );
        })?;
        Ok(())
    }
}

fn name_taken(err: sqlx::Error, name: &str) -> DbError {
    DbError::from(err).on_conflict(|| format!("a workflow named {name:?} already exists"))
}

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Accepted and queued for a worker, not started.
    Queued,
    /// A worker is running it.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error, no retries left.
    Failed,
    /// Failed, waiting for another attempt.
    Retrying,
}

impl ExecutionStatus {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
        }
    }

    /// The states an execution may move to this one from.
    fn allowed_from(self) -> &'static [&'static str] {
        match self {
            Self::Queued => &[],
            Self::Running => &["queued", "retrying"],
            Self::Completed | Self::Failed | Self::Retrying => &["running"],
        }
    }
}

impl TryFrom<String> for ExecutionStatus {
    type Error = DbError;

    fn try_from(value: String) -> Result<Self> {
        Ok(match value.as_str() {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "retrying" => Self::Retrying,
            other => {
                return Err(DbError::invalid(format!(
                    "unknown execution status {other:?}"
                )));
            }
        })
    }
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Execution {
    /// Identity.
    pub id: i64,
    /// The workflow run.
    pub workflow_id: i64,
    /// Where the execution is.
    #[sqlx(try_from = "String")]
    pub status: ExecutionStatus,
    /// Input given at creation.
    #[sqlx(json)]
    pub input: Value,
    /// Output, once completed.
    #[sqlx(json(nullable))]
    pub output: Option<Value>,
    /// Last error, if any.
    pub error: Option<String>,
    /// Attempts started so far.
    pub attempts: i32,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// First start.
    pub started_at: Option<DateTime<Utc>>,
    /// Completion or final failure.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A state saved by an execution after a step, to resume from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// Identity.
    pub id: i64,
    /// The execution.
    pub execution_id: i64,
    /// The step the state belongs to (unique per execution).
    pub step: String,
    /// The saved state.
    #[sqlx(json)]
    pub state: Value,
    /// When it was (last) saved.
    pub created_at: DateTime<Utc>,
}

macro_rules! execution_columns {
    () => {
        "id, workflow_id, status, input, output, error, attempts, created_at, updated_at, \
         started_at, finished_at"
    };
}

/// Inserts a queued execution of `$workflow_id` inside the transaction `$tx` (not found when
/// the workflow does not exist) and evaluates to it.
macro_rules! insert_queued {
    ($tx:ident, $workflow_id:expr, $input:expr, $at:expr) => {{
        let workflow: Option<i64> = sqlx::query_scalar("SELECT id FROM workflows WHERE id = $1")
            .bind($workflow_id)
            .fetch_optional(&mut *$tx)
            .await?;
        workflow.ok_or_else(|| DbError::not_found("workflow", $workflow_id))?;
        sqlx::query_as::<_, Execution>(concat!(
            "INSERT INTO executions (workflow_id, status, input, attempts, created_at, ",
            "updated_at) VALUES ($1, 'queued', $2, 0, $3, $3) RETURNING ",
            execution_columns!()
        ))
        .bind($workflow_id)
        .bind(Json($input))
        .bind($at)
        .fetch_one(&mut *$tx)
        .await?
    }};
}

/// Execution and checkpoint repository. Reached through [`Database::executions`].
#[derive(Debug, Clone, Copy)]
pub struct Executions<'a> {
    db: &'a Database,
}

impl<'a> Executions<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    /// Creates a queued execution of workflow `workflow_id` with `input`, and its audit entry.
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the workflow does not exist.
    pub async fn create(&self, actor: &str, workflow_id: i64, input: &Value) -> Result<Execution> {
        validate::json("input", input)?;
        let at = now();
        in_tx!(self.db, |tx, _pg| {
            let execution = insert_queued!(tx, workflow_id, input, at);
            record_audit!(
                tx,
                AuditRecord {
                    actor,
                    action: "execution.create",
                    entity_type: "execution",
                    entity_id: execution.id.to_string(),
                    details: json!({ "workflow_id": workflow_id }),
                }
            );
            execution
        })
    }

    /// Creates a queued execution of workflow `workflow_id` with `input` and, in the same
    /// transaction, stages the outbox messages `messages` builds from it (the job that runs
    /// it, its audit event): the execution exists exactly when its messages will be
    /// published.
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the workflow does not exist (nothing is written).
    pub async fn enqueue(
        &self,
        workflow_id: i64,
        input: &Value,
        messages: impl FnOnce(&Execution) -> Vec<NewMessage>,
    ) -> Result<Execution> {
        validate::json("input", input)?;
        let at = now();
        in_tx!(self.db, |tx, _pg| {
            let execution = insert_queued!(tx, workflow_id, input, at);
            let staged = messages(&execution);
            stage_outbox!(tx, &staged, at);
            execution
        })
    }

    /// The execution with `id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn get(&self, id: i64) -> Result<Execution> {
        let execution = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Execution>(concat!(
                "SELECT ",
                execution_columns!(),
                " FROM executions WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })?;
        execution.ok_or_else(|| DbError::not_found("execution", id))
    }

    /// The executions of workflow `workflow_id`, newest first.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn list_for_workflow(
        &self,
        workflow_id: i64,
        page: Page,
    ) -> Result<Listing<Execution>> {
        let (items, total) = on_pool!(self.db, |pool| {
            let items = sqlx::query_as::<_, Execution>(concat!(
                "SELECT ",
                execution_columns!(),
                " FROM executions WHERE workflow_id = $1 ",
                "ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(workflow_id)
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(pool)
            .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE workflow_id = $1")
                    .bind(workflow_id)
                    .fetch_one(pool)
                    .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Moves execution `id` to `status`: `running` (from queued or retrying; counts an
    /// attempt), or `completed` / `failed` / `retrying` (from running). `output` is stored on
    /// completion, `error` on failure or retry.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none, [`DbError::Conflict`] for a move the current
    /// state does not allow, [`DbError::Invalid`] for moving back to `queued`.
    pub async fn transition(
        &self,
        id: i64,
        status: ExecutionStatus,
        output: Option<&Value>,
        error: Option<&str>,
    ) -> Result<Execution> {
        self.transition_with(id, status, output, error, |_| Vec::new())
            .await
    }

    /// [`Executions::transition`], staging in the same transaction the outbox messages that
    /// `messages` builds from the updated execution (its audit event, a notification):
    /// the change and its messages commit together.
    ///
    /// # Errors
    /// As [`Executions::transition`].
    pub async fn transition_with(
        &self,
        id: i64,
        status: ExecutionStatus,
        output: Option<&Value>,
        error: Option<&str>,
        messages: impl FnOnce(&Execution) -> Vec<NewMessage>,
    ) -> Result<Execution> {
        let from = status.allowed_from();
        if from.is_empty() {
            return Err(DbError::invalid(format!(
                "an execution cannot move to {}",
                status.as_str()
            )));
        }
        validate::optional_text("error", error, limits::ERROR)?;
        if let Some(output) = output {
            validate::json("output", output)?;
        }
        let at = now();
        let running = status == ExecutionStatus::Running;
        let finished = matches!(status, ExecutionStatus::Completed | ExecutionStatus::Failed);
        let updated = in_tx!(self.db, |tx, _pg| {
            let updated = sqlx::query_as::<_, Execution>(concat!(
                "UPDATE executions SET status = $2, ",
                "attempts = attempts + CASE WHEN $3 THEN 1 ELSE 0 END, ",
                "started_at = CASE WHEN $3 THEN COALESCE(started_at, $4) ELSE started_at END, ",
                "finished_at = CASE WHEN $5 THEN $4 ELSE finished_at END, ",
                "output = COALESCE($6, output), error = CASE WHEN $3 THEN error ELSE $7 END, ",
                "updated_at = $4 ",
                "WHERE id = $1 AND status IN ($8, $9, $10) RETURNING ",
                execution_columns!()
            ))
            .bind(id)
            .bind(status.as_str())
            .bind(running)
            .bind(at)
            .bind(finished)
            .bind(output.map(Json))
            .bind(error)
            .bind(from[0])
            .bind(from.get(1).copied().unwrap_or(from[0]))
            .bind(from.get(2).copied().unwrap_or(from[0]))
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(execution) = &updated {
                let staged = messages(execution);
                stage_outbox!(tx, &staged, at);
            }
            updated
        })?;
        match updated {
            Some(execution) => Ok(execution),
            None => {
                let current = self.get(id).await?;
                Err(DbError::conflict(format!(
                    "execution {id} is {}; it cannot move to {}",
                    current.status.as_str(),
                    status.as_str()
                )))
            }
        }
    }

    /// Saves (or replaces) the checkpoint of `step` for execution `execution_id`.
    ///
    /// # Errors
    /// [`DbError::NotFound`] when the execution does not exist, [`DbError::Invalid`] for an
    /// empty or oversize step name.
    pub async fn save_checkpoint(
        &self,
        execution_id: i64,
        step: &str,
        state: &Value,
    ) -> Result<Checkpoint> {
        validate::text("step", step, limits::NAME)?;
        validate::json("state", state)?;
        let checkpoint = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Checkpoint>(
                "INSERT INTO checkpoints (execution_id, step, state, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (execution_id, step) DO UPDATE SET \
                 state = excluded.state, created_at = excluded.created_at \
                 RETURNING id, execution_id, step, state, created_at",
            )
            .bind(execution_id)
            .bind(step)
            .bind(Json(state))
            .bind(now())
            .fetch_one(pool)
            .await
        })
        .map_err(|e| match e {
            // The only reference is the execution: a broken one means it does not exist.
            DbError::Invalid { .. } => DbError::not_found("execution", execution_id),
            other => other,
        })?;
        Ok(checkpoint)
    }

    /// The checkpoints of execution `execution_id`, in the order they were first saved.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn checkpoints(&self, execution_id: i64) -> Result<Vec<Checkpoint>> {
        let rows = on_pool!(self.db, |pool| {
            sqlx::query_as::<_, Checkpoint>(
                "SELECT id, execution_id, step, state, created_at FROM checkpoints \
                 WHERE execution_id = $1 ORDER BY id",
            )
            .bind(execution_id)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }
}
