//! The application: shared state and the router with its middleware.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::{Extension, Router, middleware};
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_clients::redis::RedisClient;
use groundwork_db::Database;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{ApiKeys, authenticate};
use crate::caches::{CacheSettings, Caches};
use crate::config::{ApiKey, Config};
use crate::error::ApiError;
use crate::routes::system::OpenApiJson;
use crate::routes::{
    agents, audit, cache, files, infra, llm, prompts, queues, system, tools, users, workflows,
};
use crate::telemetry::track_http;

/// What every handler can reach. Cheap to clone: every field is a handle.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// The configured API keys.
    pub keys: Arc<ApiKeys>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The refreshing caches (agent tools, agent runtime).
    pub caches: Caches,
    /// The shared, pooled HTTP client (absent only if it could not be built).
    pub http: Option<HttpClient>,
    /// Redis, when configured.
    pub redis: Option<RedisClient>,
    /// The LLM caching proxy, when an upstream is configured.
    pub llm: Option<groundwork_llm::gateway::Gateway>,
    /// The queues (the embedded database queue unless RabbitMQ is configured).
    pub messaging: crate::messaging::Messaging,
    /// The file store and the upload limit.
    pub files: FileStorage,
}

/// Where uploaded files go, and how large they may be.
#[derive(Clone, Debug)]
pub struct FileStorage {
    /// The store (local disk, memory or S3-compatible).
    pub store: Arc<dyn groundwork_storage::FileStore>,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
}

impl FileStorage {
    /// Files kept in memory (tests, and states built without a configuration).
    #[must_use]
    pub fn in_memory(max_upload_bytes: u64) -> Self {
        Self {
            store: Arc::new(groundwork_storage::ObjectFileStore::memory()),
            max_upload_bytes,
        }
    }
}

impl AppState {
    /// State over `db` with default cache settings, accepting `keys`, rendering metrics
    /// through `metrics`. The caches are not started: the first miss fills them.
    #[must_use]
    pub fn new(db: Database, keys: &[ApiKey], metrics: PrometheusHandle) -> Self {
        Self::with_cache_settings(db, keys, metrics, CacheSettings::default())
    }

    /// State as [`AppState::new`] with the given cache settings.
    #[must_use]
    pub fn with_cache_settings(
        db: Database,
        keys: &[ApiKey],
        metrics: PrometheusHandle,
        cache: CacheSettings,
    ) -> Self {
        let caches = Caches::new(&db, cache);
        let messaging = crate::messaging::Messaging::embedded(&db);
        let files = FileStorage::in_memory(Config::default().storage_max_upload_bytes);
        let http = match HttpClient::new(HttpClientOptions::default()) {
            Ok(client) => Some(client),
            Err(err) => {
                tracing::error!(error = %err, "cannot build the HTTP client");
                None
            }
        };
        Self {
            db,
            keys: Arc::new(ApiKeys::new(keys)),
            metrics,
            caches,
            http,
            redis: None,
            llm: None,
            messaging,
            files,
        }
    }

    /// Serves `POST /v1/chat/completions` through `gateway`.
    #[must_use]
    pub fn with_llm(mut self, gateway: groundwork_llm::gateway::Gateway) -> Self {
        self.llm = Some(gateway);
        self
    }

    /// Uses `files` for uploads.
    #[must_use]
    pub fn with_files(mut self, files: FileStorage) -> Self {
        self.files = files;
        self
    }

    /// Uses `messaging` for the queues.
    #[must_use]
    pub fn with_messaging(mut self, messaging: crate::messaging::Messaging) -> Self {
        self.messaging = messaging;
        self
    }

    /// Uses `redis` (and announces changes on it to other instances).
    #[must_use]
    pub fn with_redis(mut self, redis: RedisClient) -> Self {
        self.caches.set_bus(crate::bus::ChangeBus::start(
            redis.clone(),
            self.caches.clone(),
        ));
        self.redis = Some(redis);
        self
    }

    /// Uses `client` as the shared HTTP client.
    #[must_use]
    pub fn with_http_client(mut self, client: HttpClient) -> Self {
        self.http = Some(client);
        self
    }

    /// Pools, breakers and clients (`GET /api/v1/infra`): the database's, Redis's and each
    /// LLM upstream's breaker (`llm:<host>`) among them.
    #[must_use]
    pub fn infra(&self) -> crate::routes::infra::Infra {
        let database = self.db.stats();
        let redis = self.redis.as_ref().map(RedisClient::stats);
        let mut breakers = vec![database.breaker.clone()];
        breakers.extend(redis.as_ref().map(|r| r.breaker.clone()));
        let llm_client = self.llm.as_ref().map(|llm| llm.client().stats());
        if let Some(client) = &llm_client {
            breakers.extend(client.breakers.iter().cloned());
        }
        crate::routes::infra::Infra {
            database,
            redis,
            http_client: self.http.as_ref().map(HttpClient::stats),
            breakers,
            llm_client,
            queues: None,
        }
    }

    /// Exports the infrastructure figures through the `metrics` crate: with an LLM upstream,
    /// the response cache's (`groundwork_llm_cache_*`), the proxy's own
    /// (`groundwork_llm_proxy_*`) and the LLM client's (`groundwork_llm_client_*`, with its
    /// breakers).
    pub fn publish_infra_metrics(&self) {
        let infra = self.infra();
        infra.database.publish();
        if let Some(http) = &infra.http_client {
            http.publish("default");
        }
        if let Some(redis) = &infra.redis {
            redis.publish();
        }
        if let Some(llm) = &self.llm {
            llm.cache().stats().publish();
            llm.stats().publish();
            llm.client().stats().publish("default");
        }
    }
}

/// HTTP settings of [`app`].
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: usize,
}

impl From<&Config> for HttpSettings {
    fn from(config: &Config) -> Self {
        Self {
            body_limit_bytes: config.body_limit_bytes,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_limit_bytes: Config::default().body_limit_bytes,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Groundwork",
        description = "Infrastructure layer and server for AI-agent backends. Errors are \
            `{\"error\": {\"code\", \"message\"}}`; with API keys configured every route but \
            /health needs `Authorization: Bearer <key>`."
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Adds the 401 that API keys make possible to every operation that needs them (all but
/// those whose `security` asks for nothing, `/health`), in one place rather than on each
/// route's annotation.
fn document_unauthorized(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description("Missing or invalid API key (only when API keys are configured)")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .description(Some(
                    "`Bearer realm=\"groundwork\"`, with `error=\"invalid_token\"` for a wrong key",
                ))
                .build(),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let public = operation.security.as_ref().is_some_and(|requirements| {
                requirements.iter().any(|requirement| {
                    serde_json::to_value(requirement)
                        .is_ok_and(|v| v.as_object().is_some_and(serde_json::Map::is_empty))
                })
            });
            if !public {
                operation
                    .responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| RefOr::T(response.clone()));
            }
        }
    }
}

/// The whole HTTP application over `state`.
///
/// # Panics
/// Never in practice: rendering the OpenAPI document to JSON cannot fail for these types.
pub fn app(state: AppState, settings: HttpSettings) -> Router {
    let api = OpenApiRouter::new()
        .routes(routes!(agents::create, agents::list))
        .routes(routes!(agents::get, agents::update, agents::delete))
        .routes(routes!(tools::for_agent))
        .routes(routes!(agents::runtime))
        .routes(routes!(tools::attach, tools::detach))
        .routes(routes!(tools::create, tools::list))
        .routes(routes!(tools::get, tools::update, tools::delete))
        .routes(routes!(prompts::create, prompts::list))
        .routes(routes!(prompts::get, prompts::update))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::create_digest, users::list_digests))
        .routes(routes!(workflows::create, workflows::list))
        .routes(routes!(
            workflows::get,
            workflows::update,
            workflows::delete
        ))
        .routes(routes!(workflows::start))
        .routes(routes!(workflows::execution))
        .routes(routes!(queues::queues))
        .merge(
            // Uploads are streamed and limited by the file store's own limit, not the JSON
            // body limit.
            OpenApiRouter::new()
                .routes(routes!(files::upload, files::list))
                .routes(routes!(files::download, files::delete))
                .routes(routes!(files::meta))
                .layer(DefaultBodyLimit::disable()),
        )
        .routes(routes!(audit::list))
        .routes(routes!(cache::list))
        .routes(routes!(cache::invalidate))
        .routes(routes!(cache::warm))
        .routes(routes!(infra::infra))
        .routes(routes!(llm::stats, llm::flush));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi))
        .merge(
            // Chat requests may carry images inline: a limit of their own.
            OpenApiRouter::new()
                .routes(routes!(llm::chat_completions))
                .layer(DefaultBodyLimit::max(
                    settings.body_limit_bytes.max(llm::CHAT_BODY_LIMIT_BYTES),
                )),
        )
        .nest("/api/v1", api)
        .split_for_parts();
    let mut doc = doc;
    document_unauthorized(&mut doc);
    let doc = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render OpenAPI: {e}\"}}"));

    router
        // The system routes also answer under the API prefix.
        .route("/api/v1/health", get(system::health))
        .route("/api/v1/ready", get(system::ready))
        .route("/api/v1/metrics", get(system::metrics))
        .route("/api/v1/openapi.json", get(system::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(OpenApiJson(Arc::from(doc))))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.keys),
            authenticate,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                axum::response::IntoResponse::into_response(ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error",
                ))
            },
        ))
        // Outside authentication and the routing fallbacks, so that every answer of the
        // proxy's path (401, 405, 413, a panic's 500 included) says x-groundwork-cache.
        .layer(middleware::from_fn(llm::cache_header_on_every_answer))
        .layer(middleware::from_fn(track_http))
        // Failed responses are logged where they are made (internal errors at `error`, the
        // first of an outage's 503s at `warn`); tower-http's own line per 5xx would flood
        // the log at `error` during an outage.
        .layer(
            TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
