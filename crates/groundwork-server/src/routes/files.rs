//! `/api/v1/files`: streamed uploads (raw body or multipart/form-data) and downloads (Range,
//! ETag, If-None-Match), metadata, listing, deletion.
//!
//! An upload streams to the file store while its size and SHA-256 are computed; over the
//! limit it is cut mid-stream (413) and nothing is kept. The metadata row is written only
//! once the object is complete, so a partial upload is never visible; if the row cannot be
//! written, the object is removed again. The execution or digest an upload is attached to is
//! checked before the body is read, so a missing one costs no streaming.

use axum::body::Body;
use axum::extract::{FromRequest as _, Multipart, Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, LOCATION, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use futures_util::StreamExt as _;
use groundwork_db::{DbError, File, FileFilter, Listing, NewFile};
use groundwork_storage::{ByteStream, StorageError, new_key, parse_range, sanitize_name};
use serde::Deserialize;
use utoipa::IntoParams;

use super::page;
use crate::app::AppState;
use crate::auth::Actor;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery};

/// The header naming a raw upload (`X-File-Name: report.pdf`).
pub const FILE_NAME_HEADER: &str = "x-file-name";

/// Where an upload goes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Attach the file to this execution.
    execution_id: Option<i64>,
    /// Attach the file to this e-mail digest.
    digest_id: Option<i64>,
    /// The file's name (instead of the `X-File-Name` header).
    name: Option<String>,
}

/// Filters and paging of `GET /files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFiles {
    /// Only files uploaded by this owner (API key name).
    owner: Option<String>,
    /// Only files attached to this execution.
    execution_id: Option<i64>,
    /// Only files attached to this digest.
    digest_id: Option<i64>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
}

fn storage_error(err: StorageError, limit: u64) -> ApiError {
    match err {
        StorageError::TooLarge { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the file is larger than the limit of {limit} bytes"),
        ),
        StorageError::Body(reason) => {
            ApiError::bad_request(format!("the upload was interrupted: {reason}"))
        }
        StorageError::NotFound { .. } => ApiError::not_found("the file's content is missing"),
        StorageError::InvalidRange(reason) => {
            ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, reason)
        }
        StorageError::Unavailable(reason) => {
            tracing::warn!(%reason, "file store unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the file store is unavailable",
            )
        }
        other => ApiError::internal(&other),
    }
}

/// Upload a file: the raw body (name in `X-File-Name` or `?name=`, type in `Content-Type`),
/// or `multipart/form-data` with a file field. Streamed; over the limit it is cut with 413
/// and nothing is kept. With `execution_id` / `digest_id` the file is attached to that
/// execution / digest; one that does not exist is a 422 answered before the body is read.
#[utoipa::path(post, path = "/files", tag = "files", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The file's bytes, or multipart/form-data with a file field"),
    responses(
        (status = 201, description = "Stored", body = File),
        (status = 400, description = "Interrupted upload or malformed multipart body", body = ErrorBody),
        (status = 413, description = "Over the size limit", body = ErrorBody),
        (status = 422, description = "Execution or digest does not exist (checked before the body is read)", body = ErrorBody),
        (status = 503, description = "File store or database unavailable", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = state.files.max_upload_bytes;
    let headers = request.headers().clone();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let content_type = header_text(&headers, CONTENT_TYPE.as_str());
    let multipart = content_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("multipart/form-data"));
    // A declared length over the limit is refused before reading anything (a multipart body
    // carries some framing besides the file).
    let framing = if multipart { 64 * 1024 } else { 0 };
    if declared.is_some_and(|len| len > limit.saturating_add(framing)) {
        return Err(storage_error(StorageError::TooLarge { limit }, limit));
    }
    // The execution and digest to attach to must exist before a byte of the body is read:
    // a missing one is a 422 without streaming the upload to the store only to delete it.
    // (The foreign keys at insert still refuse one deleted meanwhile; the object is then
    // removed again.)
    state
        .db
        .files()
        .check_attachments(query.execution_id, query.digest_id)
        .await?;
    let (name, file_type, stored) = if multipart {
        let mut form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        loop {
            let field = form
                .next_field()
                .await
                .map_err(|e| ApiError::bad_request(e.body_text()))?
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "the multipart body has no file field (a part with a filename)",
                    )
                })?;
            let Some(file_name) = field.file_name().map(str::to_owned) else {
                continue; // a plain form field
            };
            let file_type = field
                .content_type()
                .map_or_else(|| "application/octet-stream".to_owned(), str::to_owned);
            let stored = store_field(&state, field, limit).await?;
            break (file_name, file_type, stored);
        }
    } else {
        let name = query
            .name
            .clone()
            .or_else(|| header_text(&headers, FILE_NAME_HEADER))
            .or_else(|| {
                header_text(&headers, CONTENT_DISPOSITION.as_str())
                    .and_then(|d| disposition_name(&d))
            })
            .unwrap_or_else(|| "file".to_owned());
        let file_type = content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
        let body: ByteStream = request
            .into_body()
            .into_data_stream()
            .map(|chunk| chunk.map_err(|e| StorageError::Body(e.to_string())))
            .boxed();
        let stored = store_body(&state, body, limit).await?;
        (name, file_type, stored)
    };
    let size = i64::try_from(stored.size).map_err(|_| ApiError::bad_request("file too large"))?;
    let new = NewFile {
        name: sanitize_name(&name),
        content_type: file_type,
        size,
        sha256: stored.sha256.clone(),
        storage_key: stored.key.clone(),
        owner: actor.name().to_owned(),
        execution_id: query.execution_id,
        digest_id: query.digest_id,
    };
    let file = match state.db.files().create(&new).await {
        Ok(file) => file,
        Err(err @ (DbError::Invalid { .. } | DbError::Conflict { .. })) => {
            // Refused, so no row: remove the object, then its reservation.
            discard(&state, &stored.key).await;
            return Err(err.into());
        }
        Err(err) => {
            // The outcome is unknown (the connection failed, maybe after the commit): the
            // object stays. Had the row been written, it took the reservation with it and
            // the object is the file's; otherwise the sweep removes it with the reservation.
            return Err(err.into());
        }
    };
    let mut response = (StatusCode::CREATED, Json(&file)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/files/{}", file.id)) {
        response.headers_mut().insert(LOCATION, value);
    }
    Ok(response)
}

/// Streams one multipart field to the store: the field borrows the request, so its chunks
/// are handed over through a small channel to the store's `'static` body stream.
async fn store_field(
    state: &AppState,
    mut field: axum::extract::multipart::Field<'_>,
    limit: u64,
) -> Result<groundwork_storage::StoredObject, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, StorageError>>(4);
    let body: ByteStream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    let put = store_body(state, body, limit);
    let feed = async move {
        loop {
            let item = match field.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => break,
                Err(err) => Err(StorageError::Body(err.body_text())),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break; // the store stopped reading (over the limit), or the body broke
            }
        }
    };
    let (stored, ()) = tokio::join!(put, feed);
    stored
}

/// Streams `body` to the store under a new key, reserved in the database first so that the
/// object is removed by the file sweep if nothing records it (a crash before the row).
async fn store_body(
    state: &AppState,
    body: ByteStream,
    limit: u64,
) -> Result<groundwork_storage::StoredObject, ApiError> {
    let key = new_key();
    state.db.files().reserve_key(&key).await?;
    match state.files.store.put(&key, body, limit).await {
        Ok(stored) => Ok(stored),
        Err(err) => {
            // The upload was aborted and its partial object removed: nothing to sweep.
            release(state, &key).await;
            Err(storage_error(err, limit))
        }
    }
}

/// Removes the object at `key`, referenced by no file, and then its record as unreferenced;
/// what fails is left to the file sweep.
async fn discard(state: &AppState, key: &str) {
    match state.files.store.delete(key).await {
        Ok(()) => release(state, key).await,
        Err(err) => {
            tracing::warn!(key, error = %err, "cannot remove an unreferenced object; the file sweep will");
        }
    }
}

/// Forgets `key` as possibly unreferenced, its object being gone; a failure only means the
/// sweep tries to remove it once more.
async fn release(state: &AppState, key: &str) {
    if let Err(err) = state.db.files().release_key(key).await {
        tracing::debug!(key, error = %err, "cannot release a storage key; the file sweep will");
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The `filename` of a `Content-Disposition` value, if any.
fn disposition_name(value: &str) -> Option<String> {
    value.split(';').map(str::trim).find_map(|part| {
        let (key, name) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("filename")
            .then(|| name.trim().trim_matches('"').to_owned())
    })
}

/// List files, newest first.
#[utoipa::path(get, path = "/files", tag = "files", params(ListFiles),
    responses(
        (status = 200, description = "One page of files", body = Listing<File>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListFiles>,
) -> Result<Json<Listing<File>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    let filter = FileFilter {
        owner: query.owner,
        execution_id: query.execution_id,
        digest_id: query.digest_id,
    };
    Ok(Json(state.db.files().list(&filter, page).await?))
}

/// A file's metadata: name, type, size, SHA-256, owner, attachments.
#[utoipa::path(get, path = "/files/{id}/meta", tag = "files",
    params(("id" = i64, Path, description = "File id")),
    responses(
        (status = 200, description = "The metadata", body = File),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn meta(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<File>, ApiError> {
    Ok(Json(state.db.files().get(id).await?))
}

/// Download a file, streamed: `ETag` (its SHA-256), `If-None-Match` (304), single `Range`
/// requests (206; 416 when unsatisfiable).
#[utoipa::path(get, path = "/files/{id}", tag = "files",
    params(("id" = i64, Path, description = "File id")),
    responses(
        (status = 200, description = "The content", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 416, description = "Range not satisfiable", body = ErrorBody),
    ))]
pub async fn download(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = state.db.files().get(id).await?;
    let etag = groundwork_storage::etag(&file.sha256);
    let size = u64::try_from(file.size).unwrap_or(0);
    if header_text(&headers, IF_NONE_MATCH.as_str())
        .is_some_and(|wanted| groundwork_storage::if_none_match(&wanted, &etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert(&mut response, ETAG, &etag);
        return Ok(response);
    }
    let range = header_text(&headers, RANGE.as_str())
        .map(|value| parse_range(&value))
        .transpose()
        .map_err(|e| storage_error(e, 0))?
        .flatten();
    let partial = range.is_some();
    let download = match state.files.store.get(&file.storage_key, range).await {
        Ok(download) => download,
        Err(StorageError::InvalidRange(reason)) => {
            let mut response =
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, reason).into_response();
            insert(&mut response, CONTENT_RANGE, &format!("bytes */{size}"));
            return Ok(response);
        }
        Err(err) => return Err(storage_error(err, 0)),
    };
    let length = download.content_length();
    let status = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut response = Response::new(Body::from_stream(download.body));
    *response.status_mut() = status;
    insert(&mut response, CONTENT_TYPE, &file.content_type);
    insert(&mut response, CONTENT_LENGTH, &length.to_string());
    insert(&mut response, ETAG, &etag);
    insert(&mut response, ACCEPT_RANGES, "bytes");
    insert(
        &mut response,
        CONTENT_DISPOSITION,
        &format!("attachment; filename=\"{}\"", ascii_name(&file.name)),
    );
    if partial {
        insert(
            &mut response,
            CONTENT_RANGE,
            &format!(
                "bytes {}-{}/{}",
                download.start, download.end, download.size
            ),
        );
    }
    Ok(response)
}

/// The name as a quoted-string-safe ASCII fallback for `Content-Disposition`.
fn ascii_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn insert(response: &mut Response, name: axum::http::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// Delete a file: its record, then its content.
#[utoipa::path(delete, path = "/files/{id}", tag = "files",
    params(("id" = i64, Path, description = "File id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let file = state.db.files().delete(actor.name(), id).await?;
    // The record is gone, so the file is; if its bytes cannot be removed now, the file sweep
    // removes them later (the delete recorded their key).
    discard(&state, &file.storage_key).await;
    Ok(StatusCode::NO_CONTENT)
}
