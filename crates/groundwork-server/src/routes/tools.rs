//! `/api/v1/tools` and the attachment of tools to agents.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use groundwork_db::{
    AgentTool, AttachedTool, Attachment, Listing, NewTool, Tool, ToolFilter, ToolPatch,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use super::{created, json_bytes, page};
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};

/// Filters and paging of `GET /tools`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListTools {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
    /// Only tools of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Only active (`true`) or inactive (`false`) tools.
    is_active: Option<bool>,
    /// Only tools whose name contains this text (case-insensitive).
    name: Option<String>,
}

/// Create a tool.
#[utoipa::path(post, path = "/tools", tag = "tools", request_body = NewTool,
    responses(
        (status = 201, description = "Created", body = Tool),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(new): ApiJson<NewTool>,
) -> Result<Response, ApiError> {
    let tool = state.db.tools().create(actor.name(), &new).await?;
    // A new tool is attached to no agent yet: no cached document mentions it.
    Ok(created(format!("/api/v1/tools/{}", tool.id), tool))
}

/// List tools, by id.
#[utoipa::path(get, path = "/tools", tag = "tools", params(ListTools),
    responses(
        (status = 200, description = "One page of tools", body = Listing<Tool>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListTools>,
) -> Result<Json<Listing<Tool>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    let filter = ToolFilter {
        kind: query.kind,
        is_active: query.is_active,
        name_contains: query.name,
    };
    Ok(Json(state.db.tools().list(&filter, page).await?))
}

/// Read a tool.
#[utoipa::path(get, path = "/tools/{id}", tag = "tools",
    params(("id" = i64, Path, description = "Tool id")),
    responses(
        (status = 200, description = "The tool", body = Tool),
        (status = 404, description = "No such tool", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Tool>, ApiError> {
    Ok(Json(state.db.tools().get(id).await?))
}

/// Change some fields of a tool.
#[utoipa::path(patch, path = "/tools/{id}", tag = "tools", request_body = ToolPatch,
    params(("id" = i64, Path, description = "Tool id")),
    responses(
        (status = 200, description = "The updated tool", body = Tool),
        (status = 404, description = "No such tool", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<ToolPatch>,
) -> Result<Json<Tool>, ApiError> {
    // The agents it reaches come from the update's own transaction: once it has committed,
    // nothing is left to fail before the caches let go of what it changed.
    let (tool, agents) = state
        .db
        .tools()
        .update_reaching(actor.name(), id, &patch)
        .await?;
    state.caches.tool_changed(&agents);
    Ok(Json(tool))
}

/// Delete a tool, detaching it from every agent.
#[utoipa::path(delete, path = "/tools/{id}", tag = "tools",
    params(("id" = i64, Path, description = "Tool id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such tool", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let detached = state.db.tools().delete(actor.name(), id).await?;
    state.caches.tool_changed(&detached);
    Ok(StatusCode::NO_CONTENT)
}

/// Attach a tool to an agent, or change the attachment. The body is optional.
#[utoipa::path(put, path = "/agents/{id}/tools/{tool_id}", tag = "tools",
    request_body(content = Attachment, description = "Optional: per-agent config override and active flag"),
    params(
        ("id" = i64, Path, description = "Agent id"),
        ("tool_id" = i64, Path, description = "Tool id"),
    ),
    responses(
        (status = 201, description = "Attached", body = AgentTool),
        (status = 200, description = "Attachment updated", body = AgentTool),
        (status = 404, description = "No such agent or tool", body = ErrorBody),
        (status = 422, description = "Invalid override", body = ErrorBody),
    ))]
pub async fn attach(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((agent_id, tool_id)): ApiPath<(i64, i64)>,
    OptionalJson(attachment): OptionalJson<Attachment>,
) -> Result<Response, ApiError> {
    let (row, was_created) = state
        .db
        .tools()
        .attach(actor.name(), agent_id, tool_id, &attachment)
        .await?;
    state.caches.agent_changed(agent_id);
    Ok(if was_created {
        created(format!("/api/v1/agents/{agent_id}/tools"), row)
    } else {
        Json(row).into_response()
    })
}

/// Detach a tool from an agent.
#[utoipa::path(delete, path = "/agents/{id}/tools/{tool_id}", tag = "tools",
    params(
        ("id" = i64, Path, description = "Agent id"),
        ("tool_id" = i64, Path, description = "Tool id"),
    ),
    responses(
        (status = 204, description = "Detached"),
        (status = 404, description = "No such agent, or the tool is not attached", body = ErrorBody),
    ))]
pub async fn detach(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((agent_id, tool_id)): ApiPath<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    state
        .db
        .tools()
        .detach(actor.name(), agent_id, tool_id)
        .await?;
    state.caches.agent_changed(agent_id);
    Ok(StatusCode::NO_CONTENT)
}

/// Paging of `GET /agents/{id}/tools`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAgentTools {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
}

/// One page of an agent's tools, borrowed from the cached document.
#[derive(Serialize)]
struct ToolsPage<'a> {
    items: &'a [AttachedTool],
    total: i64,
}

/// The tools an agent may use: active tools with an active attachment, by name, each with
/// its effective configuration, one page of them; `total` counts them all. Served from the
/// refreshing cache.
#[utoipa::path(get, path = "/agents/{id}/tools", tag = "tools",
    params(("id" = i64, Path, description = "Agent id"), ListAgentTools),
    responses(
        (status = 200, description = "The agent's active tools", body = Listing<AttachedTool>),
        (status = 400, description = "Bad id or query parameter", body = ErrorBody),
        (status = 404, description = "No such agent", body = ErrorBody),
        (status = 503, description = "Database unavailable and nothing cached", body = ErrorBody),
    ))]
pub async fn for_agent(
    State(state): State<AppState>,
    ApiPath(agent_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<ListAgentTools>,
) -> Result<Response, ApiError> {
    let page = page(query.limit, query.offset)?;
    let Some(doc) = state.caches.agent_tools.get(&agent_id).await? else {
        return Err(ApiError::not_found(format!("agent {agent_id} not found")));
    };
    let tools = &doc.value.items;
    let skip = usize::try_from(page.offset()).unwrap_or(usize::MAX);
    let take = usize::try_from(page.limit()).unwrap_or(usize::MAX);
    if skip == 0 && tools.len() <= take {
        // The whole list fits the page: the document rendered when it was cached.
        return Ok(json_bytes(doc.json.clone()));
    }
    let start = skip.min(tools.len());
    let end = start.saturating_add(take).min(tools.len());
    let body = ToolsPage {
        items: &tools[start..end],
        total: doc.value.total,
    };
    serde_json::to_vec(&body)
        .map(|json| json_bytes(json.into()))
        .map_err(|err| ApiError::internal(&err))
}
