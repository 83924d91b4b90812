//! `/api/v1/workflows`: create, list, read, update, delete; `POST
//! /api/v1/workflows/{id}/executions` queues an execution (202) for the workers, and `GET
//! /api/v1/executions/{id}` follows it.
//!
//! Steps are checked when they are written (create, and a patch that sets them) with the
//! parser the worker runs them with ([`crate::steps::parse_steps`]), and every agent step's
//! agent must exist: anything else is 422 naming the step and the problem, so that a
//! workflow the API accepted does not fail later for its definition.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::IntoResponse as _;
use axum::response::Response;
use axum::{Extension, Json};
use groundwork_db::{Checkpoint, Execution, Listing, NewWorkflow, Workflow, WorkflowPatch};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{created, page};
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::steps::{InvalidSteps, StepKind, agent_exists, parse_steps};
use crate::workers::{audit_message, execute_message};

/// Paging of `GET /workflows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWorkflows {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
}

/// Create a workflow. Its steps must follow the step rules (a known `type`, that type's
/// fields only, an http(s) webhook `url`, an existing agent, unique names...): 422 names the
/// first step that does not and why.
#[utoipa::path(post, path = "/workflows", tag = "workflows", request_body = NewWorkflow,
    responses(
        (status = 201, description = "Created", body = Workflow),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields or steps", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(new): ApiJson<NewWorkflow>,
) -> Result<Response, ApiError> {
    check_steps(&state, &new.steps).await?;
    let workflow = state.db.workflows().create(actor.name(), &new).await?;
    Ok(created(
        format!("/api/v1/workflows/{}", workflow.id),
        workflow,
    ))
}

/// List workflows, by id.
#[utoipa::path(get, path = "/workflows", tag = "workflows", params(ListWorkflows),
    responses(
        (status = 200, description = "One page of workflows", body = Listing<Workflow>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListWorkflows>,
) -> Result<Json<Listing<Workflow>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    Ok(Json(state.db.workflows().list(page).await?))
}

/// Read a workflow.
#[utoipa::path(get, path = "/workflows/{id}", tag = "workflows",
    params(("id" = i64, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow", body = Workflow),
        (status = 404, description = "No such workflow", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Workflow>, ApiError> {
    Ok(Json(state.db.workflows().get(id).await?))
}

/// Change some fields of a workflow. New steps are checked as on create (422).
#[utoipa::path(patch, path = "/workflows/{id}", tag = "workflows", request_body = WorkflowPatch,
    params(("id" = i64, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The updated workflow", body = Workflow),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields or steps", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<WorkflowPatch>,
) -> Result<Json<Workflow>, ApiError> {
    if let Some(steps) = &patch.steps {
        check_steps(&state, steps).await?;
    }
    Ok(Json(
        state
            .db
            .workflows()
            .update(actor.name(), id, &patch)
            .await?,
    ))
}

/// Checks `steps` as the worker will parse them, and that every agent step's agent exists.
///
/// # Errors
/// 422 naming the step and the problem; the database's error when it fails.
async fn check_steps(state: &AppState, steps: &Value) -> Result<(), ApiError> {
    let unprocessable =
        |err: InvalidSteps| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, err.to_string());
    let steps = parse_steps(steps).map_err(unprocessable)?;
    let mut known: Vec<i64> = Vec::new();
    for step in &steps {
        let StepKind::Agent { agent_id } = step.kind else {
            continue;
        };
        if known.contains(&agent_id) {
            continue;
        }
        if !agent_exists(&state.db, agent_id).await? {
            return Err(unprocessable(InvalidSteps::at(
                step,
                format!("agent {agent_id} does not exist"),
            )));
        }
        known.push(agent_id);
    }
    Ok(())
}

/// Delete a workflow that has no executions.
#[utoipa::path(delete, path = "/workflows/{id}", tag = "workflows",
    params(("id" = i64, Path, description = "Workflow id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "The workflow has executions", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.db.workflows().delete(actor.name(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The body of `POST /workflows/{id}/executions` (it may be left out: input `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartExecution {
    /// The input of the first step (any JSON; default `{}`).
    #[serde(default)]
    pub input: Option<Value>,
}

/// Queue an execution of a workflow: it is stored as `queued` together with the message that
/// runs it (one transaction), and a worker picks it up. Follow it at the `Location` given.
#[utoipa::path(post, path = "/workflows/{id}/executions", tag = "workflows",
    request_body(content = StartExecution, description = "Optional: `{\"input\": ...}`"),
    params(("id" = i64, Path, description = "Workflow id")),
    responses(
        (status = 202, description = "Queued", body = Execution),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 422, description = "Invalid input", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    OptionalJson(body): OptionalJson<StartExecution>,
) -> Result<Response, ApiError> {
    let input = body
        .input
        .unwrap_or_else(|| Value::Object(Default::default()));
    let execution = state
        .db
        .executions()
        .enqueue(id, &input, |e| {
            vec![execute_message(e.id), audit_message(actor.name(), e)]
        })
        .await?;
    state.messaging.wake_relay();
    let mut response = (StatusCode::ACCEPTED, Json(&execution)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/executions/{}", execution.id)) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

/// An execution with the checkpoints its steps saved.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionDetail {
    /// The execution.
    #[serde(flatten)]
    pub execution: Execution,
    /// One per finished step, in order.
    pub checkpoints: Vec<Checkpoint>,
}

/// Read an execution: its status, attempts, output or error, and its checkpoints.
#[utoipa::path(get, path = "/executions/{id}", tag = "workflows",
    params(("id" = i64, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionDetail),
        (status = 404, description = "No such execution", body = ErrorBody),
    ))]
pub async fn execution(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ExecutionDetail>, ApiError> {
    let execution = state.db.executions().get(id).await?;
    let checkpoints = state.db.executions().checkpoints(id).await?;
    Ok(Json(ExecutionDetail {
        execution,
        checkpoints,
    }))
}
