//! `/api/v1/workflows`: create, list, read, update, delete. (Executions arrive with the
//! messaging issue.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use groundwork_db::{Listing, NewWorkflow, Workflow, WorkflowPatch};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{created, page};
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Paging of `GET /workflows`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListWorkflows {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
}

/// Create a workflow.
#[utoipa::path(post, path = "/workflows", tag = "workflows", request_body = NewWorkflow,
    responses(
        (status = 201, description = "Created", body = Workflow),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(new): ApiJson<NewWorkflow>,
) -> Result<Response, ApiError> {
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

/// Change some fields of a workflow.
#[utoipa::path(patch, path = "/workflows/{id}", tag = "workflows", request_body = WorkflowPatch,
    params(("id" = i64, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The updated workflow", body = Workflow),
        (status = 404, description = "No such workflow", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<WorkflowPatch>,
) -> Result<Json<Workflow>, ApiError> {
    Ok(Json(
        state
            .db
            .workflows()
            .update(actor.name(), id, &patch)
            .await?,
    ))
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
