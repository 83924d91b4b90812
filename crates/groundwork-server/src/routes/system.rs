//! Liveness, readiness, metrics and the OpenAPI description.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// How long readiness waits for the file store: an object store's client retries for
/// longer, and a probe must answer well within the usual 1 s probe timeout (Kubernetes'
/// default) even while the store is away, since the store alone never makes the instance
/// unready. A healthy store lists an empty prefix in milliseconds.
const STORAGE_CHECK_TIMEOUT: Duration = Duration::from_millis(300);

/// The body of `GET /health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process is up and serving.
    pub status: &'static str,
}

/// The body of `GET /ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` when every required check passes, `unavailable` otherwise.
    pub status: &'static str,
    /// One entry per dependency: `database`, `storage`, `redis` and `queue` (RabbitMQ) and
    /// `llm` (the upstream) when configured, and `cache:<name>` for each cache.
    pub checks: BTreeMap<String, Check>,
}

/// One dependency's state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok` or `unavailable` (the database: not ready); `degraded` for a dependency that
    /// only some features need (storage, Redis, RabbitMQ, the LLM upstream: ready anyway);
    /// for a cache `filling` (not ready yet) or `degraded` (never filled: ready, loading
    /// keys one by one).
    pub status: &'static str,
    /// Which implementation (`sqlite`, `postgres`; `amqp`; the storage URL's scheme).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// How long this check took, in milliseconds: a round trip to the database, the file
    /// store and Redis; reading local state for the queue, the LLM upstream's breakers and
    /// the caches.
    pub latency_ms: f64,
    /// For a cache: the age of its last good refresh, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refreshed_ms_ago: Option<f64>,
    /// Entries held, for a cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn new(status: &'static str, latency: Duration) -> Self {
        Self {
            status,
            backend: None,
            // Whole microseconds: no binary-fraction noise (0.022022999999999997).
            latency_ms: latency.as_micros() as f64 / 1000.0,
            refreshed_ms_ago: None,
            entries: None,
            error: None,
        }
    }
}

/// The OpenAPI description, rendered once at start.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Arc<str>);

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "system",
    // Public even with API keys configured: no credentials needed.
    security(()),
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
    // The checks that wait on the network run together: a probe takes as long as the
    // slowest, not their sum.
    let (database, storage, redis) = tokio::join!(
        database_check(&state),
        storage_check(&state),
        redis_check(&state),
    );
    let mut ready = database.status == "ok";
    let mut checks = BTreeMap::new();
    checks.insert("database".to_owned(), database);
    checks.insert("storage".to_owned(), storage);
    if let Some(redis) = redis {
        checks.insert("redis".to_owned(), redis);
    }
    if let groundwork_messaging::Broker::Amqp(amqp) = &state.messaging.broker {
        // The outbox keeps what the API queues while RabbitMQ is away: degraded, still ready.
        let started = Instant::now();
        let connected = amqp.is_connected();
        let mut check = Check::new(if connected { "ok" } else { "degraded" }, started.elapsed());
        check.backend = Some("amqp");
        check.error = (!connected)
            .then(|| "RabbitMQ is unreachable; queued work waits in the outbox".to_owned());
        checks.insert("queue".to_owned(), check);
    }
    if let Some(gateway) = &state.llm {
        // No request to the upstream per probe (it may bill them): its breakers say whether
        // recent calls failed. Cached answers keep being served either way.
        let started = Instant::now();
        let open: Vec<String> = gateway
            .client()
            .stats()
            .breakers
            .into_iter()
            .filter(|b| b.state != groundwork_resilience::BreakerState::Closed)
            .map(|b| b.name)
            .collect();
        let mut check = Check::new(
            if open.is_empty() { "ok" } else { "degraded" },
            started.elapsed(),
        );
        check.error = (!open.is_empty()).then(|| {
            format!(
                "calls to the LLM upstream are failing ({}); cached answers are still served",
                open.join(", ")
            )
        });
        checks.insert("llm".to_owned(), check);
    }
    let filling = state.caches.filling();
    let cache_started = state.caches.started();
    for cache in state.caches.all() {
        let started = Instant::now();
        let stats = cache.stats();
        let status = match (cache.filled(), filling, cache_started) {
            (true, _, _) | (false, false, false) => "ok",
            (false, true, _) => {
                ready = false;
                "filling"
            }
            // Emptied since (invalidated): it rebuilds on the next read.
            (false, false, true) if stats.last_refresh_age.is_some() => "ok",
            (false, false, true) => "degraded",
        };
        let mut check = Check::new(status, started.elapsed());
        check.refreshed_ms_ago = stats
            .last_refresh_age
            .map(|age| age.as_micros() as f64 / 1000.0);
        check.entries = Some(stats.entries);
        checks.insert(format!("cache:{}", cache.name()), check);
    }
    let (code, status) = if ready {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (code, Json(Readiness { status, checks }))
}

/// The database: required.
async fn database_check(state: &AppState) -> Check {
    let started = Instant::now();
    // Not ready: check again now (bounded by the health timeout), so a probe sees the
    // database come back at once rather than at the next scheduled check.
    // A check that hangs (a connection black-holed while migrating) must not hang the probe.
    let db_ready = state.db.is_ready()
        || tokio::time::timeout(CHECK_TIMEOUT, state.db.check_now())
            .await
            .unwrap_or(false);
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
    if let Some(error) = &error {
        // The supervisor logs the database going and coming back; probes may poll every
        // few milliseconds, so one line each would drown that.
        tracing::debug!(%error, "readiness: database unavailable");
    }
    let mut check = Check::new(
        if error.is_none() { "ok" } else { "unavailable" },
        started.elapsed(),
    );
    check.backend = Some(state.db.backend_kind().as_str());
    check.error = error.map(|_| "the database did not answer".to_owned());
    check
}

/// The file store: only the files API needs it.
async fn storage_check(state: &AppState) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(STORAGE_CHECK_TIMEOUT, state.files.store.check()).await;
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err.to_string()),
        Err(_) => Some(format!(
            "no answer within {} ms",
            STORAGE_CHECK_TIMEOUT.as_millis()
        )),
    };
    if let Some(error) = &error {
        tracing::debug!(%error, "readiness: file store unavailable");
    }
    let mut check = Check::new(
        if error.is_none() { "ok" } else { "degraded" },
        started.elapsed(),
    );
    check.backend = Some(storage_scheme(&state.files.store.describe()));
    check.error = error.map(|_| {
        format!(
            "the file store ({}) does not answer; file uploads and downloads fail",
            state.files.store.describe()
        )
    });
    check
}

/// `file`, `memory` or `s3`, from a store's description.
fn storage_scheme(description: &str) -> &'static str {
    match description.split_once("://").map(|(scheme, _)| scheme) {
        Some("file") => "file",
        Some("memory") => "memory",
        Some("s3") => "s3",
        _ => "other",
    }
}

/// Redis, when configured: optional.
async fn redis_check(state: &AppState) -> Option<Check> {
    let redis = state.redis.as_ref()?;
    // Redis trouble degrades the features that use it, never readiness. The ping runs
    // under the client's operation timeout and breaker, so it fails fast while Redis is
    // away.
    let started = Instant::now();
    let ping = redis.ping().await;
    let mut check = Check::new(
        if ping.is_ok() { "ok" } else { "degraded" },
        started.elapsed(),
    );
    check.error = ping
        .err()
        .map(|_| "Redis is unreachable or failing; features that use it are degraded".to_owned());
    Some(check)
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
