//! Shared helpers of the HTTP integration tests: a fresh application over a temporary SQLite
//! file, request shorthands and assertions on the contract's error shape.

#![allow(dead_code)]

use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_server::config::ApiKey;
use http_body_util::BodyExt as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt as _;

/// What a request returned: status, headers and the body (JSON, `Null` when empty, a JSON
/// string holding the text when the body is not JSON).
pub(crate) type Resp = (StatusCode, HeaderMap, Value);

/// The server's default body limit (1 MiB).
pub(crate) const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The metrics handle of this test binary: the global recorder is installed once, every app
/// renders through a clone of its handle.
pub(crate) fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(
            || match groundwork_server::telemetry::install_metrics_recorder() {
                Ok(handle) => handle,
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            },
        )
        .clone()
}

/// An application over its own SQLite file.
pub(crate) struct TestApp {
    /// The router under test.
    pub(crate) router: Router,
    /// The database behind it.
    pub(crate) db: Database,
    /// Keeps the database file alive as long as the app.
    pub(crate) dir: TempDir,
}

/// A fresh application: no API keys, the default body limit.
pub(crate) async fn test_app() -> anyhow::Result<TestApp> {
    test_app_with(Vec::new(), DEFAULT_BODY_LIMIT).await
}

/// A fresh application accepting `keys`, refusing bodies over `body_limit` bytes.
pub(crate) async fn test_app_with(keys: Vec<ApiKey>, body_limit: usize) -> anyhow::Result<TestApp> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    db.migrate().await?;
    let state = AppState::new(db.clone(), &keys, metrics_handle());
    let router = app(
        state,
        HttpSettings {
            body_limit_bytes: body_limit,
        },
    );
    Ok(TestApp { router, db, dir })
}

/// The API key `name:secret`.
pub(crate) fn key(name: &str, secret: &str) -> ApiKey {
    ApiKey {
        name: name.to_owned(),
        secret: secret.to_owned(),
    }
}

/// A request without a body.
pub(crate) fn bare_request(method: Method, path: &str) -> anyhow::Result<Request<Body>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())?)
}

/// A request with `value` as its JSON body.
pub(crate) fn json_request(
    method: Method,
    path: &str,
    value: &Value,
) -> anyhow::Result<Request<Body>> {
    Ok(Request::builder()
        .method(method)
        .uri(path)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(value)?))?)
}

/// `req` with `Authorization: Bearer <token>`.
pub(crate) fn with_bearer(mut req: Request<Body>, token: &str) -> anyhow::Result<Request<Body>> {
    req.headers_mut()
        .insert(AUTHORIZATION, format!("Bearer {token}").parse()?);
    Ok(req)
}

/// The body as the tests see it: JSON, `Null` when empty, a string when not JSON.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

impl TestApp {
    /// Sends `req` through the router.
    pub(crate) async fn send(&self, req: Request<Body>) -> anyhow::Result<Resp> {
        let response = self.router.clone().oneshot(req).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, headers, parse_body(&bytes)))
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(bare_request(Method::GET, path)?).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> anyhow::Result<Resp> {
        self.send(bare_request(Method::DELETE, path)?).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post_json(&self, path: &str, value: &Value) -> anyhow::Result<Resp> {
        self.send(json_request(Method::POST, path, value)?).await
    }

    /// `PATCH path` with a JSON body.
    pub(crate) async fn patch_json(&self, path: &str, value: &Value) -> anyhow::Result<Resp> {
        self.send(json_request(Method::PATCH, path, value)?).await
    }

    /// `PUT path` with a JSON body.
    pub(crate) async fn put_json(&self, path: &str, value: &Value) -> anyhow::Result<Resp> {
        self.send(json_request(Method::PUT, path, value)?).await
    }

    /// Any method, path, headers and raw body bytes.
    pub(crate) async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> anyhow::Result<Resp> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(body.into())?).await
    }

    /// Creates a resource with `POST path`, insisting on 201, and returns its body.
    pub(crate) async fn create(&self, path: &str, value: &Value) -> anyhow::Result<Value> {
        let (status, _, body) = self.post_json(path, value).await?;
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "POST {path} {value}: expected 201, got {status}: {body}"
        );
        Ok(body)
    }

    /// Creates an agent of type `worker` named `name` and returns its id.
    pub(crate) async fn agent(&self, name: &str) -> anyhow::Result<i64> {
        let body = self
            .create(
                "/api/v1/agents",
                &serde_json::json!({ "name": name, "type": "worker" }),
            )
            .await?;
        id_of(&body)
    }

    /// Creates an `http` tool named `name` with `config` and returns its id.
    pub(crate) async fn tool(&self, name: &str, config: Value) -> anyhow::Result<i64> {
        let body = self
            .create(
                "/api/v1/tools",
                &serde_json::json!({ "name": name, "type": "http", "config": config }),
            )
            .await?;
        id_of(&body)
    }
}

/// The `id` of a resource body.
pub(crate) fn id_of(body: &Value) -> anyhow::Result<i64> {
    body["id"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no numeric id in {body}"))
}

/// The `items` of a listing, checking the listing shape `{"items": [...], "total": N}`.
pub(crate) fn items(body: &Value) -> anyhow::Result<Vec<Value>> {
    let object = body
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("a listing must be an object, got {body}"))?;
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    anyhow::ensure!(
        keys == ["items", "total"],
        "listing keys {keys:?} in {body}"
    );
    anyhow::ensure!(
        body["total"].is_i64(),
        "listing total is not an integer: {body}"
    );
    body["items"]
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("listing items is not an array: {body}"))
}

/// The `total` of a listing.
pub(crate) fn total(body: &Value) -> anyhow::Result<i64> {
    body["total"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no integer total in {body}"))
}

/// The value of field `field` of every item of a listing.
pub(crate) fn field_of_items(body: &Value, field: &str) -> anyhow::Result<Vec<Value>> {
    Ok(items(body)?
        .iter()
        .map(|item| item[field].clone())
        .collect())
}

/// Asserts that `resp` is an error with `status` whose body is exactly
/// `{"error": {"code": code, "message": <non-empty string>}}`.
#[track_caller]
pub(crate) fn assert_error(resp: &Resp, status: StatusCode, code: &str) {
    let (actual, headers, body) = resp;
    assert_eq!(*actual, status, "status; body: {body}");
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content type {content_type:?}; body: {body}"
    );
    let object = body.as_object();
    assert!(
        object.is_some_and(|o| o.len() == 1 && o.contains_key("error")),
        "error body must be exactly {{\"error\": ...}}, got {body}"
    );
    let error = &body["error"];
    let detail = error.as_object();
    assert!(
        detail.is_some_and(|d| d.len() == 2 && d.contains_key("code") && d.contains_key("message")),
        "error must have exactly code and message, got {body}"
    );
    assert_eq!(error["code"], Value::from(code), "error code; body: {body}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "error message must be a non-empty string, got {body}"
    );
}

/// The error message of an error body (empty when there is none).
pub(crate) fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}
