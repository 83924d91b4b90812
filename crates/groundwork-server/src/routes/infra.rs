//! `/api/v1/infra`: the pools, breakers and clients behind `/metrics`, as JSON.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;

/// Infrastructure figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct Infra {
    /// The database pool and its supervisor: size, idle, in use, in flight, waiters, acquire
    /// latency, timeouts, connect errors, rejected calls, the last health check and the
    /// breaker.
    #[schema(value_type = Object)]
    pub database: groundwork_db::PoolStats,
    /// Redis, when configured: connected, operations, failures, timeouts, rejected calls,
    /// reconnects, subscriptions, and its breaker.
    #[schema(value_type = Option<Object>)]
    pub redis: Option<groundwork_clients::redis::RedisStats>,
    /// The shared HTTP client: requests, in flight, errors by class, DNS cache, limits.
    #[schema(value_type = Option<Object>)]
    pub http_client: Option<groundwork_clients::http::HttpClientStats>,
    /// Every circuit breaker: name, state, successes, failures, rejected, times opened.
    #[schema(value_type = Vec<Object>)]
    pub breakers: Vec<groundwork_resilience::BreakerStats>,
    /// The LLM client, when an upstream is configured: requests, retries, errors by class,
    /// timeouts, connections in use and the breaker of each upstream (the figures `/metrics`
    /// exports as `groundwork_llm_client_*`).
    #[schema(value_type = Option<Object>)]
    pub llm_client: Option<groundwork_llm::client::LlmClientStats>,
    /// The queues (as `GET /api/v1/queues`).
    pub queues: Option<super::queues::Queues>,
}

/// Pools, breakers and clients, as JSON (the same figures `/metrics` exports).
#[utoipa::path(get, path = "/infra", tag = "system",
    responses((status = 200, description = "Infrastructure figures", body = Infra)))]
pub async fn infra(State(state): State<AppState>) -> Json<Infra> {
    let mut infra = state.infra();
    infra.queues = Some(super::queues::report(&state).await);
    Json(infra)
}
