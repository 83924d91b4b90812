//! Liveness, readiness, metrics and the OpenAPI description.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use crate::app::AppState;
use crate::error::error_chain;

/// How long readiness waits for a dependency before calling it unavailable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process is up and serving.
    pub status: &'static str,
}

/// The body of `GET /ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` when every dependency answered, `unavailable` otherwise.
    pub status: &'static str,
    /// One entry per dependency.
    pub checks: Checks,
}

/// The dependencies readiness checks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checks {
    /// The database.
    pub database: Check,
}

/// One dependency's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// Which implementation (`sqlite`, `postgres`).
    pub backend: &'static str,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The OpenAPI description, rendered once at start.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Arc<str>);

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: every dependency answers (200) or not (503), with latencies.
#[utoipa::path(get, path = "/ready", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is unavailable", body = Readiness),
    ))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let backend = state.db.backend_kind().as_str();
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let error = match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(error_chain(&e)),
        Err(_) => Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
    };
    if let Some(error) = &error {
        tracing::warn!(%error, "readiness: database unavailable");
    }
    let status = if error.is_none() { "ok" } else { "unavailable" };
    let code = if error.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let database = Check {
        status,
        backend,
        latency_ms,
        error: error.map(|_| "the database did not answer".to_owned()),
    };
    (
        code,
        Json(Readiness {
            status,
            checks: Checks { database },
        }),
    )
}

/// Prometheus metrics: HTTP requests by method, route and status, and their latency.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// This OpenAPI 3.1 description.
#[utoipa::path(get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json")))]
pub async fn openapi(Extension(doc): Extension<OpenApiJson>) -> Response {
    ([(CONTENT_TYPE, "application/json")], doc.0.to_string()).into_response()
}
