//! `/api/v1/users` and their e-mail digests.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use groundwork_db::users::UserPatch;
use groundwork_db::{EmailDigest, Listing, NewDigest, NewUser, User, UserFilter};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{created, page};
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Filters and paging of `GET /users`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListUsers {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
    /// Only the user with this e-mail address (case-insensitive).
    email: Option<String>,
}

/// Paging of `GET /users/{id}/digests`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListDigests {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
}

/// Create a user.
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "Created", body = User),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "E-mail address taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let user = state.db.users().create(actor.name(), &new).await?;
    Ok(created(format!("/api/v1/users/{}", user.id), user))
}

/// List users, by id.
#[utoipa::path(get, path = "/users", tag = "users", params(ListUsers),
    responses(
        (status = 200, description = "One page of users", body = Listing<User>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListUsers>,
) -> Result<Json<Listing<User>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    let filter = UserFilter { email: query.email };
    Ok(Json(state.db.users().list(&filter, page).await?))
}

/// Read a user.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(state.db.users().get(id).await?))
}

/// Change some fields of a user (`email`, `name`); absent fields are left alone.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The updated user", body = User),
        (status = 400, description = "Malformed JSON or id", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "E-mail address taken", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<User>, ApiError> {
    Ok(Json(
        state.db.users().update(actor.name(), id, &patch).await?,
    ))
}

/// Delete a user, with their sessions and e-mail digests (files attached to those digests
/// are kept, detached).
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.db.users().delete(actor.name(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Store an e-mail digest for a user.
#[utoipa::path(post, path = "/users/{id}/digests", tag = "users", request_body = NewDigest,
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 201, description = "Stored", body = EmailDigest),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
pub async fn create_digest(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(new): ApiJson<NewDigest>,
) -> Result<Response, ApiError> {
    let digest = state
        .db
        .digests()
        .create(actor.name(), user_id, &new)
        .await?;
    Ok(created(format!("/api/v1/users/{user_id}/digests"), digest))
}

/// A user's digests, most recent first.
#[utoipa::path(get, path = "/users/{id}/digests", tag = "users",
    params(("id" = i64, Path, description = "User id"), ListDigests),
    responses(
        (status = 200, description = "One page of digests", body = Listing<EmailDigest>),
        (status = 404, description = "No such user", body = ErrorBody),
    ))]
pub async fn list_digests(
    State(state): State<AppState>,
    ApiPath(user_id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<ListDigests>,
) -> Result<Json<Listing<EmailDigest>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    Ok(Json(state.db.digests().recent(user_id, page).await?))
}
