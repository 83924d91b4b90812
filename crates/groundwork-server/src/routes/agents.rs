//! `/api/v1/agents`: create, list, read, update, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use groundwork_db::{Agent, AgentFilter, AgentPatch, AgentRuntime, AgentStatus, Listing, NewAgent};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{created, json_bytes, page};
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Filters and paging of `GET /agents`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAgents {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
    /// Only agents of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only agents in this state.
    status: Option<AgentStatus>,
    /// Only agents whose name contains this text (case-insensitive).
    name: Option<String>,
}

/// Create an agent.
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = NewAgent,
    responses(
        (status = 201, description = "Created", body = Agent),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(new): ApiJson<NewAgent>,
) -> Result<Response, ApiError> {
    let agent = state.db.agents().create(actor.name(), &new).await?;
    // The id may be remembered as absent.
    state.caches.agent_changed(agent.id);
    Ok(created(format!("/api/v1/agents/{}", agent.id), agent))
}

/// List agents, by id.
#[utoipa::path(get, path = "/agents", tag = "agents", params(ListAgents),
    responses(
        (status = 200, description = "One page of agents", body = Listing<Agent>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListAgents>,
) -> Result<Json<Listing<Agent>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    let filter = AgentFilter {
        kind: query.kind,
        status: query.status,
        name_contains: query.name,
    };
    Ok(Json(state.db.agents().list(&filter, page).await?))
}

/// Read an agent.
#[utoipa::path(get, path = "/agents/{id}", tag = "agents",
    params(("id" = i64, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent", body = Agent),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(state.db.agents().get(id).await?))
}

/// Change some fields of an agent.
#[utoipa::path(patch, path = "/agents/{id}", tag = "agents", request_body = AgentPatch,
    params(("id" = i64, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The updated agent", body = Agent),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<AgentPatch>,
) -> Result<Json<Agent>, ApiError> {
    let agent = state.db.agents().update(actor.name(), id, &patch).await?;
    state.caches.agent_changed(id);
    Ok(Json(agent))
}

/// Delete an agent and its tool attachments.
#[utoipa::path(delete, path = "/agents/{id}", tag = "agents",
    params(("id" = i64, Path, description = "Agent id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such agent", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.db.agents().delete(actor.name(), id).await?;
    state.caches.agent_changed(id);
    Ok(StatusCode::NO_CONTENT)
}

/// What an agent runs with: the agent, its active prompt (the newest active prompt for its
/// type) and its active tools. Served from the refreshing cache.
#[utoipa::path(get, path = "/agents/{id}/runtime", tag = "agents",
    params(("id" = i64, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent's runtime configuration", body = AgentRuntime),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "Database unavailable and nothing cached", body = ErrorBody),
    ))]
pub async fn runtime(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    match state.caches.agent_runtime.get(&id).await? {
        Some(doc) => Ok(json_bytes(doc.json.clone())),
        None => Err(ApiError::not_found(format!("agent {id} not found"))),
    }
}
