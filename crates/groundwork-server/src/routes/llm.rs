//! `POST /v1/chat/completions`: the OpenAI-compatible caching proxy; `/api/v1/llm-cache`:
//! its statistics and flush.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use groundwork_llm::cache::FlushReport;
use groundwork_llm::client::LlmError;
use groundwork_llm::gateway::{ChatReply, ChatRequest, GatewayError};
use groundwork_llm::policy::{CachePolicy, CacheStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::app::AppState;
use crate::auth::Actor;
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// The response header saying where an answer came from.
pub const CACHE_HEADER: &str = "x-groundwork-cache";

/// The path of the proxy.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// The largest request body `POST /v1/chat/completions` accepts (unless the server's general
/// body limit is larger): 20 MiB, room for images sent inline as base64 data URLs, which the
/// general 1 MiB limit refuses. A constant until the configuration has a setting of its own.
pub const CHAT_BODY_LIMIT_BYTES: usize = 20 * 1024 * 1024;

/// OpenAI's millisecond form of `Retry-After`, passed on with it.
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::bad_request(format!("{name} must be visible ASCII")))
        })
        .transpose()
}

fn with_cache_header(mut response: Response, cache: CacheStatus) -> Response {
    response
        .headers_mut()
        .insert(CACHE_HEADER, HeaderValue::from_static(cache.as_str()));
    response
}

/// Middleware: every response to a request for [`CHAT_PATH`] carries [`CACHE_HEADER`],
/// also those made before the handler runs or instead of it (401 from authentication, 405,
/// a panic's 500): `BYPASS` when the handler did not set it, since the cache was never
/// consulted.
pub async fn cache_header_on_every_answer(request: Request, next: Next) -> Response {
    let chat = request.uri().path() == CHAT_PATH;
    let mut response = next.run(request).await;
    if chat && !response.headers().contains_key(CACHE_HEADER) {
        response.headers_mut().insert(
            CACHE_HEADER,
            HeaderValue::from_static(CacheStatus::Bypass.as_str()),
        );
    }
    response
}

/// Adds `Retry-After` (whole seconds, rounded up) and `retry-after-ms` for a wait of
/// `wait`.
fn with_retry_after(mut response: Response, wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let headers = response.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    headers.insert(RETRY_AFTER_MS, HeaderValue::from(millis));
    response
}

/// OpenAI-compatible chat completions through the response cache: streaming (`"stream":
/// true`, `text/event-stream`) and not. Every answer carries `x-groundwork-cache: HIT`,
/// `MISS` or `BYPASS` (`BYPASS` also on answers made before the cache is consulted: 401,
/// 413, 405…); upstream errors are passed on with their status, body and `Retry-After`.
/// Request headers: `x-groundwork-cache: bypass|refresh`, `x-groundwork-cache-ttl:
/// <seconds>`, `Cache-Control: no-store|no-cache`. Bodies up to 20 MiB (images inline).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "llm",
    request_body(content = Object, description = "An OpenAI chat completions request"),
    responses(
        (status = 200, description = "A completion (JSON) or a stream of chunks (text/event-stream)"),
        (status = 400, description = "Malformed JSON or cache directives", body = crate::error::ErrorBody),
        (status = 413, description = "A body over 20 MiB", body = crate::error::ErrorBody),
        (status = 503, description = "No upstream configured, or it cannot be reached", body = crate::error::ErrorBody),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let error = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is larger than the server accepts",
                )
            } else {
                ApiError::bad_request(rejection.body_text())
            };
            return with_cache_header(error.into_response(), CacheStatus::Bypass);
        }
    };
    match answer(&state, &actor, &headers, &body).await {
        Ok(response) => response,
        Err((error, cache)) => with_cache_header(error.into_response(), cache),
    }
}

async fn answer(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, (ApiError, CacheStatus)> {
    let bypass = CacheStatus::Bypass;
    let Some(gateway) = &state.llm else {
        return Err((
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no LLM upstream is configured (set GROUNDWORK_LLM_BASE_URL)",
            ),
            bypass,
        ));
    };
    let request: Value = serde_json::from_slice(body).map_err(|e| {
        (
            ApiError::bad_request(format!("invalid JSON body: {e}")),
            bypass,
        )
    })?;
    if !request.is_object() {
        return Err((
            ApiError::bad_request("the request body must be a JSON object"),
            bypass,
        ));
    }
    let policy = CachePolicy::from_headers(
        header(headers, "x-groundwork-cache")
            .map_err(|e| (e, bypass))?
            .as_deref(),
        header(headers, "x-groundwork-cache-ttl")
            .map_err(|e| (e, bypass))?
            .as_deref(),
        header(headers, CACHE_CONTROL.as_str())
            .map_err(|e| (e, bypass))?
            .as_deref(),
    )
    .map_err(|e| (ApiError::bad_request(e.to_string()), bypass))?;
    let reply = gateway
        .chat(ChatRequest {
            tenant: actor.name().to_owned(),
            body: request,
            policy,
        })
        .await;
    match reply {
        Ok(ChatReply::Json {
            status,
            content_type,
            body,
            cache,
        }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let content_type = HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/json"));
            Ok(with_cache_header(
                (status, [(CONTENT_TYPE, content_type)], body).into_response(),
                cache,
            ))
        }
        Ok(ChatReply::Stream { frames, cache }) => {
            // An error item aborts the body: the client sees a cut stream, never a complete
            // one with a missing end.
            let body = Body::from_stream(
                frames.map(|frame| frame.map_err(|err| std::io::Error::other(err.to_string()))),
            );
            Ok(with_cache_header(
                (
                    [
                        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
                        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    ],
                    body,
                )
                    .into_response(),
                cache,
            ))
        }
        Err(GatewayError::BadRequest(message)) => Err((ApiError::bad_request(message), bypass)),
        Err(GatewayError::Upstream { error, cache }) => match &*error {
            // The upstream's own answer, passed on as it came.
            LlmError::Upstream {
                status,
                body,
                content_type,
                retry_after,
            } => {
                let content_type = content_type
                    .as_deref()
                    .and_then(|c| HeaderValue::from_str(c).ok())
                    .unwrap_or(HeaderValue::from_static("application/json"));
                let status =
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
                let mut response =
                    (status, [(CONTENT_TYPE, content_type)], body.clone()).into_response();
                // A 429 or 503 says when to come back: the client needs to know too.
                if let Some(wait) = retry_after {
                    response = with_retry_after(response, *wait);
                }
                Ok(with_cache_header(response, cache))
            }
            other => {
                tracing::warn!(error = %crate::error::error_chain(other), "LLM upstream failed");
                Err((
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the LLM upstream failed: {other}"),
                    ),
                    cache,
                ))
            }
        },
    }
}

/// The LLM cache's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct LlmCacheView {
    /// Whether an upstream is configured.
    pub configured: bool,
    /// Response cache counters (memory and Redis levels).
    #[schema(value_type = Option<Object>)]
    pub cache: Option<groundwork_llm::cache::ResponseCacheStats>,
    /// Proxy counters: hits, misses, bypasses, upstream calls, coalesced misses.
    #[schema(value_type = Option<Object>)]
    pub gateway: Option<groundwork_llm::gateway::GatewayStats>,
    /// Upstream client counters.
    #[schema(value_type = Option<Object>)]
    pub client: Option<groundwork_llm::client::LlmClientStats>,
}

/// LLM response cache statistics.
#[utoipa::path(get, path = "/llm-cache", tag = "llm",
    responses((status = 200, description = "Statistics", body = LlmCacheView)))]
pub async fn stats(State(state): State<AppState>) -> Json<LlmCacheView> {
    Json(match &state.llm {
        Some(gateway) => LlmCacheView {
            configured: true,
            cache: Some(gateway.cache().stats()),
            gateway: Some(gateway.stats()),
            client: Some(gateway.client().stats()),
        },
        None => LlmCacheView {
            configured: false,
            cache: None,
            gateway: None,
            client: None,
        },
    })
}

/// Which entries to flush.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlushQuery {
    /// Only this tenant's entries (the API key name, `anonymous` without keys); all when
    /// absent.
    pub namespace: Option<String>,
}

/// What a flush did. Without Redis only `flushed` is present.
#[derive(Debug, Serialize, ToSchema)]
pub struct Flushed {
    /// Entries removed from this instance's memory.
    #[schema(example = 12)]
    pub flushed: usize,
    /// Entries deleted from Redis (those of the namespace, or every entry under the cache's
    /// key prefix), counted up to a failure if one stopped the deletion. Absent without
    /// Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 40)]
    pub redis_deleted: Option<u64>,
    /// How many instances' caches received the flush announcement, this one's included;
    /// each other instance then flushes the same entries from its memory. Absent without
    /// Redis, or when the announcement could not be published.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 3)]
    pub announced_to: Option<u64>,
    /// What Redis did not do, when it failed (unreachable, too slow, breaker open): the
    /// entries it still holds and the other instances' memories may keep serving the
    /// flushed answers until their TTL. The flush of this instance's memory happened all the
    /// same. Absent when everything was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "deleting the Redis entries failed: Redis is unavailable")]
    pub redis_error: Option<String>,
}

impl From<FlushReport> for Flushed {
    fn from(report: FlushReport) -> Self {
        let redis_error = (!report.redis_errors.is_empty()).then(|| {
            report
                .redis_errors
                .iter()
                .map(|err| {
                    // The step and the Redis client's verdict; redis-rs's own details stay
                    // in the log.
                    match std::error::Error::source(err) {
                        Some(source) => format!("{err}: {source}"),
                        None => err.to_string(),
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        });
        Self {
            flushed: report.flushed,
            redis_deleted: report.redis_deleted,
            announced_to: report.announced_to,
            redis_error,
        }
    }
}

/// Flushes the LLM response cache, for one namespace or all, on every level and every
/// instance: this instance's memory, the Redis entries, and (announced through Redis
/// pub/sub) the memory of every other instance sharing the Redis. When Redis fails the
/// answer is still 200: this instance's memory is flushed, and `redis_error` says what
/// was not done. Audited as `llm_cache.flush` (the namespace and the figures in the
/// details).
#[utoipa::path(delete, path = "/llm-cache", tag = "llm", params(FlushQuery),
    responses(
        (status = 200, description = "Flushed; what Redis did is in the report", body = Flushed),
        (status = 503, description = "Flushed, but the audit entry could not be written", body = crate::error::ErrorBody),
    ))]
pub async fn flush(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiQuery(query): ApiQuery<FlushQuery>,
) -> Result<Json<Flushed>, ApiError> {
    let flushed = match &state.llm {
        None => Flushed {
            flushed: 0,
            redis_deleted: None,
            announced_to: None,
            redis_error: None,
        },
        Some(gateway) => {
            let report = gateway.cache().flush(query.namespace.as_deref()).await;
            for err in &report.redis_errors {
                tracing::warn!(
                    error = %crate::error::error_chain(err),
                    namespace = query.namespace.as_deref().unwrap_or("*"),
                    "LLM cache flush incomplete in Redis"
                );
            }
            Flushed::from(report)
        }
    };
    // The namespace goes in the details: a query value can be longer than an entity id may.
    state
        .db
        .audit()
        .record(
            actor.name(),
            "llm_cache.flush",
            "llm_cache",
            None,
            serde_json::json!({
                "namespace": query.namespace,
                "flushed": flushed.flushed,
                "redis_deleted": flushed.redis_deleted,
                "redis_error": flushed.redis_error,
            }),
        )
        .await?;
    Ok(Json(flushed))
}
