//! `/api/v1/prompts`: create, list (active only by default, newest first), read, update.

use axum::extract::State;
use axum::response::Response;
use axum::{Extension, Json};
use groundwork_db::{Listing, NewPrompt, Prompt, PromptFilter, PromptPatch};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{created, page};
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Filters and paging of `GET /prompts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListPrompts {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
    /// Only prompts for this agent type.
    agent_type: Option<String>,
    /// Only prompts with this name.
    name: Option<String>,
    /// Include inactive prompts (default `false`).
    #[serde(default)]
    include_inactive: bool,
}

/// Whether `GET /prompts/{id}` may return an inactive prompt.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetPrompt {
    /// Return the prompt even when inactive (default `false`: an inactive prompt is 404).
    #[serde(default)]
    include_inactive: bool,
}

/// Create a prompt. `(name, version)` must be unique.
#[utoipa::path(post, path = "/prompts", tag = "prompts", request_body = NewPrompt,
    responses(
        (status = 201, description = "Created", body = Prompt),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "Name and version taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(new): ApiJson<NewPrompt>,
) -> Result<Response, ApiError> {
    let prompt = state.db.prompts().create(actor.name(), &new).await?;
    state.caches.prompt_changed(&prompt);
    Ok(created(format!("/api/v1/prompts/{}", prompt.id), prompt))
}

/// List prompts, newest first; only active ones unless `include_inactive=true`.
#[utoipa::path(get, path = "/prompts", tag = "prompts", params(ListPrompts),
    responses(
        (status = 200, description = "One page of prompts", body = Listing<Prompt>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListPrompts>,
) -> Result<Json<Listing<Prompt>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    let filter = PromptFilter {
        agent_type: query.agent_type,
        name: query.name,
        include_inactive: query.include_inactive,
    };
    Ok(Json(state.db.prompts().list(&filter, page).await?))
}

/// Read a prompt.
#[utoipa::path(get, path = "/prompts/{id}", tag = "prompts",
    params(("id" = i64, Path, description = "Prompt id"), GetPrompt),
    responses(
        (status = 200, description = "The prompt", body = Prompt),
        (status = 404, description = "No such (active) prompt", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<GetPrompt>,
) -> Result<Json<Prompt>, ApiError> {
    Ok(Json(
        state.db.prompts().get(id, query.include_inactive).await?,
    ))
}

/// Change some fields of a prompt (active or not).
#[utoipa::path(patch, path = "/prompts/{id}", tag = "prompts", request_body = PromptPatch,
    params(("id" = i64, Path, description = "Prompt id")),
    responses(
        (status = 200, description = "The updated prompt", body = Prompt),
        (status = 404, description = "No such prompt", body = ErrorBody),
        (status = 409, description = "Name and version taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<PromptPatch>,
) -> Result<Json<Prompt>, ApiError> {
    // The prompt as it was: agents running with it must hear of the change even if it
    // moved to another agent type.
    let before = state.db.prompts().get(id, true).await?;
    let prompt = state.db.prompts().update(actor.name(), id, &patch).await?;
    state.caches.prompt_changed(&before);
    state.caches.prompt_changed(&prompt);
    Ok(Json(prompt))
}
