//! Liveness, readiness, metrics and the OpenAPI description.

use std::collections::BTreeMap;
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
    /// `ok` when every check passes, `unavailable` otherwise.
    pub status: &'static str,
    /// One entry per dependency: `database`, `redis` when configured, and `cache:<name>`
    /// for each cache.
    pub checks: BTreeMap<String, Check>,
}

/// One dependency's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok`, `unavailable`, or for a cache `filling` (not ready yet) or `degraded` (not
    /// filled after the start timeout: ready, loading keys one by one), for Redis
    /// `degraded` (unreachable: ready anyway, Redis is optional).
    pub status: &'static str,
    /// Which implementation (`sqlite`, `postgres`), for the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// How long the check took (database) or the age of the last refresh (cache), in
    /// milliseconds.
    pub latency_ms: f64,
    /// Entries held, for a cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
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
    let mut checks = BTreeMap::new();
    let started = std::time::Instant::now();
    // Not ready: check again now (bounded by the health timeout), so a probe sees the
    // database come back at once rather than at the next scheduled check.
    let db_ready = state.db.is_ready() || state.db.check_now().await;
    let error = if db_ready {
        match tokio::time::timeout(CHECK_TIMEOUT, state.db.ping()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(error_chain(&e)),
            Err(_) => Some(format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())),
        }
    } else {
        let stats = state.db.stats();
        Some(
            stats
                .last_health_check
                .and_then(|check| check.error)
                .unwrap_or_else(|| "not checked or not migrated yet".to_owned()),
        )
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(error) = &error {
        // The supervisor logs the database going and coming back; probes may poll every
        // few milliseconds, so one line each would drown that.
        tracing::debug!(%error, "readiness: database unavailable");
    }
    let mut ready = error.is_none();
    checks.insert(
        "database".to_owned(),
        Check {
            status: if error.is_none() { "ok" } else { "unavailable" },
            backend: Some(state.db.backend_kind().as_str()),
            latency_ms,
            entries: None,
            error: error.map(|_| "the database did not answer".to_owned()),
        },
    );
    if let Some(redis) = &state.redis {
        // Optional: Redis trouble degrades the features that use it, never readiness.
        let stats = redis.stats();
        let healthy =
            stats.connected && stats.breaker.state == groundwork_resilience::BreakerState::Closed;
        checks.insert(
            "redis".to_owned(),
            Check {
                status: if healthy { "ok" } else { "degraded" },
                backend: None,
                latency_ms: 0.0,
                entries: None,
                error: (!healthy).then(|| {
                    "Redis is unreachable or failing; features that use it are degraded".to_owned()
                }),
            },
        );
    }
    if let groundwork_messaging::Broker::Amqp(amqp) = &state.messaging.broker {
        // The outbox keeps what the API queues while RabbitMQ is away: degraded, still ready.
        let connected = amqp.is_connected();
        checks.insert(
            "queue".to_owned(),
            Check {
                status: if connected { "ok" } else { "degraded" },
                backend: Some("amqp"),
                latency_ms: 0.0,
                entries: None,
                error: (!connected)
                    .then(|| "RabbitMQ is unreachable; queued work waits in the outbox".to_owned()),
            },
        );
    }
    let filling = state.caches.filling();
    let started = state.caches.started();
    for cache in state.caches.all() {
        let stats = cache.stats();
        let status = match (cache.filled(), filling, started) {
            (true, _, _) | (false, false, false) => "ok",
            (false, true, _) => {
                ready = false;
                "filling"
            }
            (false, false, true) => "degraded",
        };
        checks.insert(
            format!("cache:{}", cache.name()),
            Check {
                status,
                backend: None,
                latency_ms: stats
                    .last_refresh_age
                    .map_or(0.0, |age| age.as_secs_f64() * 1000.0),
                entries: Some(stats.entries),
                error: None,
            },
        );
    }
    let (code, status) = if ready {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (code, Json(Readiness { status, checks }))
}

/// Prometheus metrics: HTTP requests by method, route and status, and their latency; cache
/// hits, misses, loads, refreshes, failures, evictions and entries (`groundwork_cache_*`).
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.caches.publish_metrics();
    state.publish_infra_metrics();
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
