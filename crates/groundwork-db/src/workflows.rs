//! Workflows (named, ordered steps), their executions and the checkpoints executions save.
//!
//! # Execution leases
//!
//! A worker runs an execution under a lease: [`Executions::acquire`] moves it to `running`
//! and stamps the worker's owner token and the lease's end, [`Executions::renew`] (and every
//! [`Executions::save_checkpoint_leased`]) pushes the end back while the steps run, and
//! [`Executions::transition_leased`] ends the run, each a compare-and-set on the owner. A
//! second delivery of the same job finds the lease live ([`Acquired::Held`]) and must run
//! nothing; once the lease has run out (its worker died), a delivery takes the execution over
//! ([`Acquired::TakenOver`], an attempt counted) and resumes from its checkpoints. Lease ends
//! are compared with the clock of the process that reads them: workers' clocks are assumed
//! to agree to well within a lease.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
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
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflows")
                .fetch_one(&mut *pool)
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

/// What [`Executions::acquire`] found, and did.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// It was queued or retrying: it is now running under the caller's lease, an attempt
    /// counted.
    Started(Execution),
    /// It was running under a lease that ran out (or none: moved to running by
    /// [`Executions::transition`]), so its worker stopped: it is now running under the
    /// caller's lease, an attempt counted. Resume it from its checkpoints.
    TakenOver(Execution),
    /// As [`Acquired::TakenOver`], but it had already used its attempts (the `max_attempts`
    /// given): it is held under the caller's lease with no attempt counted, for the caller
    /// to fail it ([`Executions::transition_leased`]) rather than run it again.
    Exhausted(Execution),
    /// Another worker holds it under a live lease: run nothing; look again after `remaining`
    /// (the lease's end unless renewed meanwhile).
    Held {
        /// The lease holder's token.
        owner: String,
        /// How long the lease has left.
        remaining: Duration,
    },
    /// It is completed or failed: nothing to do.
    Finished(Execution),
}

/// The lease of a running execution (see [`Executions::acquire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionLease {
    /// The holder's token.
    pub owner: String,
    /// When it runs out unless renewed.
    pub expires_at: DateTime<Utc>,
}

/// An execution with its lease columns, as [`Executions::acquire`] reads it.
#[derive(sqlx::FromRow)]
struct LeasedRow {
    #[sqlx(flatten)]
    execution: Execution,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
}

/// How [`Executions::acquire`] takes an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grab {
    Start,
    TakeOver,
    Exhausted,
}

/// Saves (or replaces) a step's checkpoint: `$1` execution, `$2` step, `$3` state, `$4` at.
const SAVE_CHECKPOINT_SQL: &str = "INSERT INTO checkpoints (execution_id, step, state, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (execution_id, step) DO UPDATE SET \
     state = excluded.state, created_at = excluded.created_at \
     RETURNING id, execution_id, step, state, created_at";

/// Pushes back the end of a lease its holder still has: `$1` execution, `$2` owner, `$3` end.
const RENEW_LEASE_SQL: &str = "UPDATE executions SET lease_expires_at = $3 \
     WHERE id = $1 AND status = 'running' AND lease_owner = $2";

/// The longest lease [`Executions::acquire`] grants.
const LONGEST_LEASE: Duration = Duration::from_secs(24 * 3600);

/// `at` + `lease`, after checking that the lease is at least a millisecond and at most a day.
fn lease_end(at: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>> {
    if lease < Duration::from_millis(1) || lease > LONGEST_LEASE {
        return Err(DbError::invalid(format!(
            "an execution lease lasts 1 ms to 24 h, not {lease:?}"
        )));
    }
    TimeDelta::from_std(lease)
        .ok()
        .and_then(|delta| at.checked_add_signed(delta))
        .map(crate::database::ceil_micros)
        .ok_or_else(|| DbError::invalid(format!("lease {lease:?} ends out of range")))
}

/// The `UPDATE` of a state change, guarded by the states it may come from and, with
/// `$owner_check`, by the caller's lease; every change clears the lease.
macro_rules! transition_sql {
    ($owner_check:literal) => {
        concat!(
            "UPDATE executions SET status = $2, ",
            "attempts = attempts + CASE WHEN $3 THEN 1 ELSE 0 END, ",
            "started_at = CASE WHEN $3 THEN COALESCE(started_at, $4) ELSE started_at END, ",
            "finished_at = CASE WHEN $5 THEN $4 ELSE finished_at END, ",
            "output = COALESCE($6, output), error = CASE WHEN $3 THEN error ELSE $7 END, ",
            "lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 ",
            "WHERE id = $1 AND status IN ($8, $9, $10)",
            $owner_check,
            " RETURNING ",
            execution_columns!()
        )
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
            .fetch_all(&mut *pool)
            .await?;
            let total: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM executions WHERE workflow_id = $1")
                    .bind(workflow_id)
                    .fetch_one(&mut *pool)
                    .await?;
            Ok::<_, sqlx::Error>((items, total))
        })?;
        Ok(Listing { items, total })
    }

    /// Moves execution `id` to `status`: `running` (from queued or retrying; counts an
    /// attempt), or `completed` / `failed` / `retrying` (from running). `output` is stored on
    /// completion, `error` on failure or retry.
    ///
    /// No lease is checked or taken: a move clears the lease, and an execution moved to
    /// `running` here runs under none, so [`Executions::acquire`] may take it over at once.
    /// Workers use [`Executions::acquire`] and [`Executions::transition_leased`].
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
        self.change(id, status, output, error, None, messages).await
    }

    /// Ends the run of execution `id` that the caller holds under the lease of `owner` (see
    /// [`Executions::acquire`]): moves it to `completed`, `failed` or `retrying` as
    /// [`Executions::transition_with`] does, staging `messages` in the same transaction,
    /// and clears the lease. Fails if another worker took the execution over meanwhile, so
    /// that a worker whose lease ran out cannot overwrite the outcome of the one that
    /// resumed it.
    ///
    /// # Errors
    /// [`DbError::Conflict`] when the execution is not running under `owner`'s lease (any
    /// more), [`DbError::NotFound`] if there is none, [`DbError::Invalid`] for `running` or
    /// `queued` (a run starts with [`Executions::acquire`]).
    pub async fn transition_leased(
        &self,
        id: i64,
        owner: &str,
        status: ExecutionStatus,
        output: Option<&Value>,
        error: Option<&str>,
        messages: impl FnOnce(&Execution) -> Vec<NewMessage>,
    ) -> Result<Execution> {
        if matches!(status, ExecutionStatus::Running | ExecutionStatus::Queued) {
            return Err(DbError::invalid(format!(
                "a leased run ends in completed, failed or retrying, not {}",
                status.as_str()
            )));
        }
        self.change(id, status, output, error, Some(owner), messages)
            .await
    }

    /// A state change, guarded by the lease of `owner` when given.
    async fn change(
        &self,
        id: i64,
        status: ExecutionStatus,
        output: Option<&Value>,
        error: Option<&str>,
        owner: Option<&str>,
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
        let sql = match owner {
            None => transition_sql!(""),
            Some(_) => transition_sql!(" AND lease_owner = $11"),
        };
        let updated = in_tx!(self.db, |tx, _pg| {
            let mut query = sqlx::query_as::<_, Execution>(sql)
                .bind(id)
                .bind(status.as_str())
                .bind(running)
                .bind(at)
                .bind(finished)
                .bind(output.map(Json))
                .bind(error)
                .bind(from[0])
                .bind(from.get(1).copied().unwrap_or(from[0]))
                .bind(from.get(2).copied().unwrap_or(from[0]));
            if let Some(owner) = owner {
                query = query.bind(owner);
            }
            let updated = query.fetch_optional(&mut *tx).await?;
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
                Err(DbError::conflict(match owner {
                    Some(owner) if current.status == ExecutionStatus::Running => format!(
                        "execution {id} is no longer held by {owner}: its lease ran out and \
                         another worker took it over"
                    ),
                    _ => format!(
                        "execution {id} is {}; it cannot move to {}",
                        current.status.as_str(),
                        status.as_str()
                    ),
                }))
            }
        }
    }

    /// Starts or resumes execution `id` under a lease of `owner` (a token unique to the
    /// caller's run) lasting `lease`, in one compare-and-set:
    /// - queued or retrying: moves it to `running`, counts an attempt, stamps the lease
    ///   ([`Acquired::Started`]);
    /// - running under a live lease of another owner: changes nothing ([`Acquired::Held`]);
    /// - running under a lease that ran out, or none: takes it over, counting an attempt
    ///   ([`Acquired::TakenOver`]), unless it has already used `max_attempts` attempts, in
    ///   which case it takes the lease without counting one ([`Acquired::Exhausted`]);
    /// - completed or failed: changes nothing ([`Acquired::Finished`]).
    ///
    /// When it starts or takes over, the outbox messages `messages` builds from the updated
    /// execution (its audit event) are staged in the same transaction. Two callers racing for
    /// the same execution cannot both start or take it over: the row is locked (PostgreSQL
    /// `FOR UPDATE`, SQLite's write lock) between the read and the update.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none, [`DbError::Invalid`] for an empty or oversize
    /// owner, or a lease shorter than 1 ms or longer than 24 h.
    pub async fn acquire(
        &self,
        id: i64,
        owner: &str,
        lease: Duration,
        max_attempts: u32,
        messages: impl FnOnce(&Execution) -> Vec<NewMessage>,
    ) -> Result<Acquired> {
        validate::text("owner", owner, limits::NAME)?;
        let at = now();
        let until = lease_end(at, lease)?;
        let max_attempts = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        in_tx!(self.db, |tx, pg| {
            let select = if pg {
                concat!(
                    "SELECT ",
                    execution_columns!(),
                    ", lease_owner, lease_expires_at FROM executions WHERE id = $1 FOR UPDATE"
                )
            } else {
                concat!(
                    "SELECT ",
                    execution_columns!(),
                    ", lease_owner, lease_expires_at FROM executions WHERE id = $1"
                )
            };
            let row = sqlx::query_as::<_, LeasedRow>(select)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Err(DbError::not_found("execution", id));
            };
            let live = match (&row.lease_owner, row.lease_expires_at) {
                (Some(holder), Some(expires_at)) if expires_at > at => {
                    Some((holder.clone(), expires_at))
                }
                _ => None,
            };
            let grab = match (row.execution.status, live) {
                (ExecutionStatus::Completed | ExecutionStatus::Failed, _) => {
                    return Ok(Acquired::Finished(row.execution));
                }
                (ExecutionStatus::Running, Some((owner, expires_at))) => {
                    let remaining = (expires_at - at).to_std().unwrap_or_default();
                    return Ok(Acquired::Held { owner, remaining });
                }
                (ExecutionStatus::Running, None) if row.execution.attempts >= max_attempts => {
                    Grab::Exhausted
                }
                (ExecutionStatus::Running, None) => Grab::TakeOver,
                (ExecutionStatus::Queued | ExecutionStatus::Retrying, _) => Grab::Start,
            };
            let count = grab != Grab::Exhausted;
            let execution = sqlx::query_as::<_, Execution>(concat!(
                "UPDATE executions SET status = 'running', ",
                "attempts = attempts + CASE WHEN $4 THEN 1 ELSE 0 END, ",
                "started_at = COALESCE(started_at, $3), lease_owner = $2, ",
                "lease_expires_at = $5, updated_at = $3 ",
                "WHERE id = $1 AND (status IN ('queued', 'retrying') OR (status = 'running' ",
                "AND (lease_owner IS NULL OR lease_expires_at IS NULL ",
                "OR lease_expires_at <= $3))) RETURNING ",
                execution_columns!()
            ))
            .bind(id)
            .bind(owner)
            .bind(at)
            .bind(count)
            .bind(until)
            .fetch_optional(&mut *tx)
            .await?;
            // The row is locked since the read: the guard cannot fail here.
            let Some(execution) = execution else {
                return Err(DbError::conflict(format!(
                    "execution {id} changed while it was being acquired"
                )));
            };
            if count {
                let staged = messages(&execution);
                stage_outbox!(tx, &staged, at);
            }
            match grab {
                Grab::Start => Acquired::Started(execution),
                Grab::TakeOver => Acquired::TakenOver(execution),
                Grab::Exhausted => Acquired::Exhausted(execution),
            }
        })
    }

    /// Pushes the end of `owner`'s lease on running execution `id` to `lease` from now;
    /// returns whether `owner` still held it (`false`: another worker took it over, or the
    /// run ended).
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached, [`DbError::Invalid`] for
    /// a lease shorter than 1 ms or longer than 24 h.
    pub async fn renew(&self, id: i64, owner: &str, lease: Duration) -> Result<bool> {
        let until = lease_end(now(), lease)?;
        let renewed = on_pool!(self.db, |pool| {
            sqlx::query(RENEW_LEASE_SQL)
                .bind(id)
                .bind(owner)
                .bind(until)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(renewed == 1)
    }

    /// The lease execution `id` runs under, if any.
    ///
    /// # Errors
    /// [`DbError::NotFound`] if there is none.
    pub async fn lease(&self, id: i64) -> Result<Option<ExecutionLease>> {
        let row: Option<(Option<String>, Option<DateTime<Utc>>)> = on_pool!(self.db, |pool| {
            sqlx::query_as("SELECT lease_owner, lease_expires_at FROM executions WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?;
        match row {
            None => Err(DbError::not_found("execution", id)),
            Some((Some(owner), Some(expires_at))) => Ok(Some(ExecutionLease { owner, expires_at })),
            Some(_) => Ok(None),
        }
    }

    /// [`Executions::save_checkpoint`] for the run `owner` holds under its lease (see
    /// [`Executions::acquire`]), renewing the lease to `lease` from now in the same
    /// transaction; a worker whose lease was taken over saves nothing.
    ///
    /// # Errors
    /// [`DbError::Conflict`] when execution `execution_id` is not running under `owner`'s
    /// lease (any more, or does not exist); as [`Executions::save_checkpoint`] otherwise.
    pub async fn save_checkpoint_leased(
        &self,
        execution_id: i64,
        owner: &str,
        lease: Duration,
        step: &str,
        state: &Value,
    ) -> Result<Checkpoint> {
        validate::text("step", step, limits::NAME)?;
        validate::json("state", state)?;
        let at = now();
        let until = lease_end(at, lease)?;
        in_tx!(self.db, |tx, _pg| {
            let held = sqlx::query(RENEW_LEASE_SQL)
                .bind(execution_id)
                .bind(owner)
                .bind(until)
                .execute(&mut *tx)
                .await?;
            if held.rows_affected() != 1 {
                return Err(DbError::conflict(format!(
                    "execution {execution_id} is not running under the lease of {owner}; \
                     checkpoint {step:?} not saved"
                )));
            }
            sqlx::query_as::<_, Checkpoint>(SAVE_CHECKPOINT_SQL)
                .bind(execution_id)
                .bind(step)
                .bind(Json(state))
                .bind(at)
                .fetch_one(&mut *tx)
                .await?
        })
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
            sqlx::query_as::<_, Checkpoint>(SAVE_CHECKPOINT_SQL)
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
