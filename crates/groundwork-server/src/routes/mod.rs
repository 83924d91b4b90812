//! HTTP handlers, one module per resource of the contract (DESIGN.md §3).

pub mod agents;
pub mod audit;
pub mod cache;
pub mod files;
pub mod infra;
pub mod llm;
pub mod prompts;
pub mod queues;
pub mod system;
pub mod tools;
pub mod users;
pub mod workflows;

use axum::Json;
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use groundwork_db::Page;
use serde::Serialize;

use crate::error::ApiError;

/// A validated page from `limit` / `offset` query parameters (bad values are a 400).
pub(crate) fn page(limit: Option<i64>, offset: Option<i64>) -> Result<Page, ApiError> {
    Page::new(limit, offset).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// `201 Created` with a `Location` header and the created resource as the body.
pub(crate) fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

/// A `200 OK` JSON response from bytes rendered earlier (a cached document).
pub(crate) fn json_bytes(json: axum::body::Bytes) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}
