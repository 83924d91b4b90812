//! `/api/v1/files`: streamed uploads (raw body or multipart/form-data) and downloads (Range,
//! ETag, If-None-Match), metadata, listing, deletion.
//!
//! An upload streams to the file store while its size and SHA-256 are computed; over the
//! limit it is cut mid-stream (413) and nothing is kept. The metadata row is written only
//! once the object is complete, so a partial upload is never visible; if the row cannot be
//! written, the object is removed again. The execution or digest an upload is attached to is
//! checked before the body is read, so a missing one costs no streaming.
//!
//! Names: a raw upload is named by `?name=`, else the `X-File-Name` header, else the
//! `filename*` / `filename` of a `Content-Disposition` header. A header value is read as
//! UTF-8 (what curl sends for `-H 'X-File-Name: évé.txt'`); one that is not valid UTF-8 is a
//! 400, never a silent `file`. `X-File-Name` may also carry an RFC 8187 extended value,
//! `UTF-8''%C3%A9v%C3%A9.txt`, for clients that can only send ASCII headers (browsers); other
//! `%` sequences are kept literally, so a name such as `100%25.txt` is not altered. A
//! multipart upload carries exactly one file part: a second one is a 400 and nothing is kept.
//! Downloads name the file in `Content-Disposition` twice (RFC 6266): an ASCII `filename`
//! and the exact `filename*=UTF-8''…` (RFC 8187).
//!
//! Conditional and partial downloads follow RFC 9110: `If-None-Match` (weak comparison, 304)
//! first, then `If-Range`, which lets `Range` apply only when it holds the file's ETag
//! (strong comparison; a date never holds, as downloads carry no `Last-Modified`), else the
//! whole file is sent with 200. Every 416 carries `Content-Range: bytes */SIZE`.

use axum::body::Body;
use axum::extract::{FromRequest as _, Multipart, Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
    IF_NONE_MATCH, IF_RANGE, LOCATION, RANGE,
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
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};

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

/// A file's bytes in the OpenAPI description: `type: string, format: binary`. (`Vec<u8>`
/// would be described as an array of integers.)
enum FileBytes {}

impl utoipa::PartialSchema for FileBytes {
    fn schema() -> RefOr<Schema> {
        binary_schema().into()
    }
}

impl utoipa::ToSchema for FileBytes {}

/// The `multipart/form-data` upload in the OpenAPI description: one binary `file` part
/// (any field name; the part with a filename is the file).
enum UploadForm {}

impl utoipa::PartialSchema for UploadForm {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("file", binary_schema())
            .required("file")
            .description(Some(
                "Exactly one part with a filename (the file); plain form fields may precede \
                 or follow it and are ignored.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for UploadForm {}

fn binary_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
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
        // Downloads answer it through `unsatisfiable`, which adds the `Content-Range`.
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

/// Upload a file: the raw body (name in `?name=`, `X-File-Name` or `Content-Disposition`,
/// type in `Content-Type`), or `multipart/form-data` with exactly one file part. Streamed;
/// over the limit it is cut with 413 and nothing is kept. With `execution_id` / `digest_id`
/// the file is attached to that execution / digest; one that does not exist is a 422
/// answered before the body is read.
#[utoipa::path(post, path = "/files", tag = "files",
    params(
        UploadQuery,
        ("X-File-Name" = Option<String>, Header, nullable = false,
            description = "The file's name for a raw upload, as UTF-8 (`évé 文件.txt`) or as an \
                RFC 8187 extended value (`UTF-8''%C3%A9v%C3%A9.txt`); `?name=` takes precedence. \
                A value that is not valid UTF-8 is a 400."),
    ),
    request_body(description = "The file's bytes, or multipart/form-data with one file part",
        content(
            (inline(FileBytes) = "application/octet-stream"),
            (inline(UploadForm) = "multipart/form-data"),
        )),
    responses(
        (status = 201, description = "Stored", body = File),
        (status = 400, description = "Interrupted upload, malformed multipart body, more than \
            one file part, or a file name header that is not valid UTF-8", body = ErrorBody),
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
    // A raw upload's name is read before anything else: a header that cannot be read is a
    // 400, not a file silently named "file".
    let raw_name = if multipart {
        None
    } else {
        raw_upload_name(query.name.as_deref(), &headers)?
    };
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
        let (name, file_type, stored) = loop {
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
        };
        // One file per upload: plain fields may follow the file, another file may not (it
        // is refused before its bytes are read), nor may the rest of the body be malformed.
        if let Err(err) = rest_of_form(&mut form).await {
            discard(&state, &stored.key).await;
            return Err(err);
        }
        (name, file_type, stored)
    } else {
        let name = raw_name.unwrap_or_else(|| "file".to_owned());
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

/// Reads the rest of a multipart body after its file part: plain fields are skipped, a
/// second file part is a 400 (before its bytes are read), and so is a malformed body.
async fn rest_of_form(form: &mut Multipart) -> Result<(), ApiError> {
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?
    {
        if field.file_name().is_some() {
            let part = field.name().unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "one file per upload: the multipart body has a second file part (field \
                 {part:?}); nothing was stored"
            )));
        }
    }
    Ok(())
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

/// A header's value as visible ASCII text, trimmed; `None` when absent, blank or not ASCII.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A header's value as UTF-8 text, trimmed; `None` when absent or blank.
///
/// # Errors
/// 400 when the value is not valid UTF-8.
fn utf8_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value.as_bytes())
        .map_err(|_| ApiError::bad_request(format!("the {name} header is not valid UTF-8")))?
        .trim();
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The name of a raw upload: `?name=`, else the `X-File-Name` header (UTF-8, or an RFC 8187
/// extended value), else the `filename*` or `filename` of a `Content-Disposition` header;
/// `None` when none is given.
///
/// # Errors
/// 400 for a header that is not valid UTF-8, and for an extended value whose percent
/// escapes are malformed or do not decode to UTF-8.
fn raw_upload_name(query: Option<&str>, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if let Some(name) = query.filter(|name| !name.trim().is_empty()) {
        return Ok(Some(name.to_owned()));
    }
    if let Some(value) = utf8_header(headers, FILE_NAME_HEADER)? {
        return match groundwork_storage::decode_ext_value(&value) {
            None => Ok(Some(value)),
            Some(Some(name)) => Ok(Some(name)),
            Some(None) => Err(ApiError::bad_request(format!(
                "the {FILE_NAME_HEADER} header is an RFC 8187 extended value whose \
                 percent-encoding is malformed or not UTF-8"
            ))),
        };
    }
    Ok(utf8_header(headers, CONTENT_DISPOSITION.as_str())?
        .and_then(|d| groundwork_storage::disposition_file_name(&d)))
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
/// requests (206; 416 with `Content-Range: bytes */SIZE` when unsatisfiable), `If-Range`
/// (the range applies only while the ETag still matches, else 200 with the whole file).
#[utoipa::path(get, path = "/files/{id}", tag = "files",
    params(
        ("id" = i64, Path, description = "File id"),
        ("Range" = Option<String>, Header, nullable = false,
            description = "One byte range: `bytes=N-M`, `bytes=N-` or `bytes=-N` (206, or 416 \
                when it selects no byte). Several ranges, other units and malformed values \
                are ignored (200)."),
        ("If-None-Match" = Option<String>, Header, nullable = false,
            description = "ETags (weak comparison) or `*`: 304 when one matches."),
        ("If-Range" = Option<String>, Header, nullable = false,
            description = "An ETag: `Range` applies only if it is the file's (strong \
                comparison); otherwise, and for a date, the whole file is sent (200)."),
    ),
    responses(
        (status = 200, description = "The whole file, with its stored Content-Type",
            content_type = "application/octet-stream", body = inline(FileBytes),
            headers(
                ("ETag" = String, description = "The SHA-256, quoted: a strong validator"),
                ("Content-Disposition" = String,
                    description = "`attachment; filename=\"ascii\"; filename*=UTF-8''…`"),
                ("Accept-Ranges" = String, description = "`bytes`"),
            )),
        (status = 206, description = "The requested range",
            content_type = "application/octet-stream", body = inline(FileBytes),
            headers(
                ("Content-Range" = String, description = "`bytes START-END/SIZE`"),
                ("ETag" = String, description = "The SHA-256, quoted"),
            )),
        (status = 304, description = "Not modified (If-None-Match)",
            headers(("ETag" = String, description = "The SHA-256, quoted"))),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 416, description = "Range not satisfiable", body = ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */SIZE`"))),
    ))]
pub async fn download(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let file = state.db.files().get(id).await?;
    let etag = groundwork_storage::etag(&file.sha256);
    let size = u64::try_from(file.size).unwrap_or(0);
    // RFC 9110 §13.2.2: If-None-Match first, then If-Range decides whether Range applies.
    if header_text(&headers, IF_NONE_MATCH.as_str())
        .is_some_and(|wanted| groundwork_storage::if_none_match(&wanted, &etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert(&mut response, ETAG, &etag);
        return Ok(response);
    }
    let range = match header_text(&headers, RANGE.as_str())
        .filter(|_| {
            headers.get(IF_RANGE).is_none_or(|v| {
                v.to_str()
                    .is_ok_and(|v| groundwork_storage::if_range(v, &etag))
            })
        })
        .map(|value| parse_range(&value))
        .transpose()
    {
        Ok(range) => range.flatten(),
        Err(StorageError::InvalidRange(reason)) => return Ok(unsatisfiable(reason, size)),
        Err(err) => return Err(storage_error(err, 0)),
    };
    let partial = range.is_some();
    let download = match state.files.store.get(&file.storage_key, range).await {
        Ok(download) => download,
        Err(StorageError::InvalidRange(reason)) => return Ok(unsatisfiable(reason, size)),
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
        &groundwork_storage::content_disposition(&file.name),
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

/// 416 in the contract's error shape, with the `Content-Range: bytes */SIZE` RFC 9110
/// §15.5.17 asks for.
fn unsatisfiable(reason: String, size: u64) -> Response {
    let mut response = ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, reason).into_response();
    insert(&mut response, CONTENT_RANGE, &format!("bytes */{size}"));
    response
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
