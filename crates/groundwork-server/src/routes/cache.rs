//! `/api/v1/cache`: statistics and control of the refreshing caches.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::Actor;
use crate::caches::{CacheControl, WarmError};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// One cache's figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheView {
    /// The cache's name (used in the control routes).
    pub name: String,
    /// Whether the first fill is done.
    pub filled: bool,
    /// Lookups answered from the cache within the TTL.
    pub hits: u64,
    /// Lookups answered past the TTL while the source was failing.
    pub stale_hits: u64,
    /// Lookups that waited for the source.
    pub misses: u64,
    /// `hits / (hits + stale_hits + misses)`.
    pub hit_ratio: f64,
    /// Source reads of keys.
    pub loads: u64,
    /// Failed source reads of keys.
    pub load_failures: u64,
    /// Time spent in source reads, in milliseconds.
    pub load_time_ms: f64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Failed refreshes.
    pub refresh_failures: u64,
    /// Capacity evictions.
    pub evictions: u64,
    /// Entries held.
    pub entries: u64,
    /// Entry bound.
    pub capacity: u64,
    /// Milliseconds since the last successful refresh started.
    pub last_refresh_age_ms: Option<f64>,
    /// Source failures in a row.
    pub consecutive_failures: u32,
}

impl CacheView {
    fn of(cache: &dyn CacheControl) -> Self {
        let s = cache.stats();
        Self {
            name: s.name.clone(),
            filled: cache.filled(),
            hits: s.hits,
            stale_hits: s.stale_hits,
            misses: s.misses,
            hit_ratio: s.hit_ratio(),
            loads: s.loads,
            load_failures: s.load_failures,
            load_time_ms: s.load_time.as_secs_f64() * 1000.0,
            refreshes: s.refreshes,
            refresh_failures: s.refresh_failures,
            evictions: s.evictions,
            entries: s.entries,
            capacity: s.capacity,
            last_refresh_age_ms: s.last_refresh_age.map(|a| a.as_secs_f64() * 1000.0),
            consecutive_failures: s.consecutive_failures,
        }
    }
}

/// Every cache.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheList {
    /// The caches.
    pub items: Vec<CacheView>,
    /// How many.
    pub total: i64,
}

/// What to invalidate: exactly one of `key`, `prefix` or `all: true`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Invalidate {
    /// One key (an agent id, as a number or a string).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub key: Option<Value>,
    /// Every key whose text starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Everything (the next miss reloads the cache through one full read).
    #[serde(default)]
    pub all: bool,
}

/// How many entries were invalidated.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invalidated {
    /// Entries removed (for `key`, 1 whether or not it was cached).
    pub invalidated: usize,
}

/// Keys to load into a cache.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Warm {
    /// Keys (agent ids, as numbers or strings); at most 10,000.
    #[schema(value_type = Vec<String>)]
    pub keys: Vec<Value>,
}

/// How many keys were loaded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Warmed {
    /// Keys the source has (now cached).
    pub warmed: usize,
    /// Keys asked for.
    pub requested: usize,
}

fn find(state: &AppState, name: &str) -> Result<std::sync::Arc<dyn CacheControl>, ApiError> {
    state
        .caches
        .all()
        .into_iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| ApiError::not_found(format!("cache {name:?} not found")))
}

fn key_text(value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("a key must be a string or a number, got {other}"),
        )),
    }
}

/// Statistics of every cache.
#[utoipa::path(get, path = "/cache", tag = "cache",
    responses((status = 200, description = "Every cache", body = CacheList)))]
pub async fn list(State(state): State<AppState>) -> Json<CacheList> {
    let items: Vec<CacheView> = state
        .caches
        .all()
        .iter()
        .map(|c| CacheView::of(c.as_ref()))
        .collect();
    let total = i64::try_from(items.len()).unwrap_or(i64::MAX);
    Json(CacheList { items, total })
}

/// Invalidate one key, a key prefix or everything in a cache.
#[utoipa::path(post, path = "/cache/{name}/invalidate", tag = "cache", request_body = Invalidate,
    params(("name" = String, Path, description = "Cache name (`agent_tools`, `agent_runtime`)")),
    responses(
        (status = 200, description = "Invalidated", body = Invalidated),
        (status = 404, description = "No such cache", body = ErrorBody),
        (status = 422, description = "Not exactly one of key, prefix, all", body = ErrorBody),
    ))]
pub async fn invalidate(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Invalidate>,
) -> Result<Json<Invalidated>, ApiError> {
    let cache = find(&state, &name)?;
    let chosen = usize::from(body.key.is_some())
        + usize::from(body.prefix.is_some())
        + usize::from(body.all);
    if chosen != 1 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "give exactly one of `key`, `prefix` or `\"all\": true`",
        ));
    }
    let (invalidated, details) = if let Some(key) = &body.key {
        let key = key_text(key)?;
        cache
            .invalidate_key(&key)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
        (1, json!({ "key": key }))
    } else if let Some(prefix) = &body.prefix {
        (cache.invalidate_prefix(prefix), json!({ "prefix": prefix }))
    } else {
        let entries = usize::try_from(cache.stats().entries).unwrap_or(usize::MAX);
        cache.invalidate_all();
        (entries, json!({ "all": true }))
    };
    state
        .db
        .audit()
        .record(
            actor.name(),
            "cache.invalidate",
            "cache",
            Some(&name),
            details,
        )
        .await?;
    Ok(Json(Invalidated { invalidated }))
}

/// Load keys into a cache now.
#[utoipa::path(post, path = "/cache/{name}/warm", tag = "cache", request_body = Warm,
    params(("name" = String, Path, description = "Cache name (`agent_tools`, `agent_runtime`)")),
    responses(
        (status = 200, description = "Loaded", body = Warmed),
        (status = 404, description = "No such cache", body = ErrorBody),
        (status = 422, description = "A key is not valid", body = ErrorBody),
        (status = 503, description = "The source is unavailable", body = ErrorBody),
    ))]
pub async fn warm(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Warm>,
) -> Result<Json<Warmed>, ApiError> {
    let cache = find(&state, &name)?;
    if body.keys.len() > 10_000 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("at most 10000 keys per call, got {}", body.keys.len()),
        ));
    }
    let keys = body
        .keys
        .iter()
        .map(key_text)
        .collect::<Result<Vec<_>, _>>()?;
    let warmed = cache.warm(&keys).await.map_err(|e| match e {
        WarmError::BadKey(message) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message),
        WarmError::Cache(err) => ApiError::from(err),
    })?;
    state
        .db
        .audit()
        .record(
            actor.name(),
            "cache.warm",
            "cache",
            Some(&name),
            json!({ "keys": keys.len(), "warmed": warmed }),
        )
        .await?;
    Ok(Json(Warmed {
        warmed,
        requested: keys.len(),
    }))
}
