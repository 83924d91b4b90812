//! Server lifecycle: connect, migrate, listen, shut down gracefully.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use groundwork_clients::redis::{RedisClient, RedisOptions};
use groundwork_core::redact_url;
use groundwork_db::Database;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{AppState, HttpSettings, app};
use crate::caches::CacheSettings;
use crate::config::Config;

/// How long `serve` waits at start for the database to answer and be migrated before it
/// starts listening anyway (`/ready` answers 503 until the database is there).
const STARTUP_WAIT: Duration = Duration::from_secs(3);

/// Opens the configured database, supervised (health checks, breaker, deadlines). With
/// `migrate_on_connect`, migrations are applied as soon as the database answers.
///
/// # Errors
/// When the URL is unusable or a SQLite file cannot be opened (an unreachable PostgreSQL is
/// not an error: the pool is created lazily).
pub async fn connect_database(
    config: &Config,
    migrate_on_connect: bool,
) -> anyhow::Result<Database> {
    Database::connect(
        config
            .database_options()
            .migrate_on_connect(migrate_on_connect),
    )
    .await
    .with_context(|| format!("cannot open database {}", redact_url(&config.database_url)))
}

/// Runs the server until SIGINT or SIGTERM: refuses an unauthenticated public bind, migrates
/// the database, serves, then stops accepting, gives in-flight requests
/// `shutdown_timeout_secs` to finish and closes the pool.
///
/// # Errors
/// When the configuration is refused, the database cannot be opened or migrated, or the
/// address cannot be bound.
pub async fn serve(config: Config, metrics: PrometheusHandle) -> anyhow::Result<()> {
    config.check_exposure()?;
    let db = connect_database(&config, true).await?;
    match db.wait_ready(STARTUP_WAIT).await {
        Ok(()) => tracing::info!("database ready"),
        // Reachable but unusable (a migration that cannot apply): stop here.
        Err(groundwork_db::DbError::Config(message)) => {
            anyhow::bail!("cannot migrate the database: {message}")
        }
        Err(_) => tracing::warn!(
            database = %redact_url(&config.database_url),
            "database not reachable yet; serving, with /ready answering 503 until it is"
        ),
    }
    let state = build_state(&config, &db, metrics)?;
    let messaging = state.messaging.clone();
    let stop_workers = CancellationToken::new();
    let mut background = if config.workers {
        crate::workers::spawn(
            crate::workers::WorkerDeps::from_state(&state, &config),
            stop_workers.clone(),
        )
    } else {
        // The API stages messages in the outbox: relay them even without workers here.
        messaging.spawn_relay(stop_workers.clone())
    };
    tracing::info!(
        queue = messaging.backend(),
        workers = config.workers,
        "queues ready"
    );
    // What crashes leave in the file store, removed now and every hour.
    let sweeper = crate::file_sweep::spawn(
        db.clone(),
        Arc::clone(&state.files.store),
        stop_workers.clone(),
    );
    background.push(sweeper);
    background.push(crate::caches::spawn_change_log_pruning(
        db.clone(),
        stop_workers.clone(),
    ));
    let caches = state.caches.clone();
    // Fill the caches in the background (readiness waits for it, up to its timeout) and
    // follow changes committed by other instances.
    tokio::spawn({
        let caches = caches.clone();
        async move {
            match caches.start().await {
                Ok(()) => tracing::info!("caches filled"),
                Err(err) => {
                    tracing::warn!(error = %err, "cache fill failed; retrying in the background")
                }
            }
        }
    });
    let follower = tokio::spawn(caches.clone().follow_changes(db.clone()));
    // Started with the database down: fill the caches as soon as it is there (and migrated),
    // rather than at the end of their retry backoff.
    if !db.is_ready() {
        tokio::spawn({
            let (db, caches) = (db.clone(), caches.clone());
            async move {
                if db.wait_ready(Duration::MAX).await.is_ok() {
                    caches.notify_changed();
                }
            }
        });
    }
    let router = app(state, HttpSettings::from(&config));
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        database = db.backend_kind().as_str(),
        auth = !config.api_keys.is_empty(),
        "groundwork listening"
    );

    // TCP_NODELAY on every connection: axum does not set it, and with Nagle's algorithm a
    // small write that follows another (each chunk of a streamed answer) waits for the
    // client's delayed ACK, up to 40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
    });
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = stopping_tx.send(true);
    });
    let mut server = tokio::spawn(async move { server.await });
    let deadline = config.shutdown_timeout();
    let outcome = tokio::select! {
        joined = &mut server => Some(joined),
        () = async {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(deadline).await;
        } => None,
    };
    match outcome {
        Some(joined) => joined
            .context("server task failed")?
            .context("server failed")?,
        None => {
            tracing::warn!(
                deadline_secs = deadline.as_secs(),
                "in-flight requests did not finish before the deadline; dropping them"
            );
            server.abort();
        }
    }
    follower.abort();
    stop_background(stop_workers, background, deadline).await;
    caches.shutdown().await;
    db.close_within(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Runs the queue workers and the outbox relay without the API (`groundwork worker`) until
/// SIGINT or SIGTERM, then lets running handlers finish (up to `shutdown_timeout_secs`).
///
/// # Errors
/// When the database cannot be opened or migrated, or the configuration is unusable.
pub async fn work(config: Config) -> anyhow::Result<()> {
    let db = connect_database(&config, true).await?;
    if let Err(groundwork_db::DbError::Config(message)) = db.wait_ready(STARTUP_WAIT).await {
        anyhow::bail!("cannot migrate the database: {message}");
    }
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let state = build_state(&config, &db, metrics)?;
    let messaging = state.messaging.clone();
    let stop = CancellationToken::new();
    let tasks = crate::workers::spawn(
        crate::workers::WorkerDeps::from_state(&state, &config),
        stop.clone(),
    );
    tracing::info!(
        queue = messaging.backend(),
        database = db.backend_kind().as_str(),
        "groundwork worker running"
    );
    shutdown_signal().await;
    tracing::info!("shutting down the workers: finishing running handlers");
    stop_background(stop, tasks, config.shutdown_timeout()).await;
    state.caches.shutdown().await;
    db.close_within(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

/// The application state `config` describes, over `db`: caches, Redis, the LLM proxy, the
/// queues and the file store (shared by `serve` and `worker`).
///
/// # Errors
/// When a URL of the configuration is unusable.
fn build_state(
    config: &Config,
    db: &Database,
    metrics: PrometheusHandle,
) -> anyhow::Result<AppState> {
    let mut state = AppState::with_cache_settings(
        db.clone(),
        &config.api_keys,
        metrics,
        CacheSettings::from(config),
    );
    if let Some(url) = &config.redis_url {
        let redis = RedisClient::new(
            RedisOptions::new(url.clone())
                .op_timeout(Duration::from_millis(config.redis_op_timeout_ms)),
        )
        .with_context(|| format!("invalid Redis URL {}", redact_url(url)))?;
        state = state.with_redis(redis);
    }
    if let Some(base_url) = &config.llm_base_url {
        let gateway = llm_gateway(config, base_url, &state)?;
        state = state.with_llm(gateway);
    }
    let messaging = crate::messaging::Messaging::new(db, config)?;
    Ok(state
        .with_messaging(messaging)
        .with_files(file_storage(config)?))
}

/// Cancels `stop` and waits for `tasks` up to `deadline`, then aborts what is left (their
/// unsettled messages are delivered again).
async fn stop_background(stop: CancellationToken, tasks: Vec<JoinHandle<()>>, deadline: Duration) {
    stop.cancel();
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let joined = tokio::time::timeout(deadline, futures_util::future::join_all(tasks)).await;
    if joined.is_err() {
        tracing::warn!("background tasks did not stop in time; aborting them");
        for abort in aborts {
            abort.abort();
        }
    }
}

/// The LLM caching proxy over `base_url`, on the shared HTTP client, caching in memory and
/// in Redis when configured.
fn llm_gateway(
    config: &Config,
    base_url: &str,
    state: &AppState,
) -> anyhow::Result<groundwork_llm::gateway::Gateway> {
    use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
    use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
    use groundwork_llm::gateway::{Gateway, GatewayOptions};

    let http = match &state.http {
        Some(http) => http.clone(),
        None => groundwork_clients::http::HttpClient::new(Default::default())
            .context("cannot build the HTTP client for the LLM upstream")?,
    };
    let mut upstream = Upstream::new(base_url);
    if let Some(key) = &config.llm_api_key {
        upstream = upstream.with_api_key(key.clone());
    }
    let cache = ResponseCache::new(
        ResponseCacheOptions::new()
            .default_ttl(Duration::from_secs(config.llm_cache_ttl_secs))
            .memory_bytes(config.llm_cache_memory_mb.saturating_mul(1024 * 1024)),
        state.redis.clone(),
    );
    Ok(Gateway::new(
        LlmClient::new(http, ClientOptions::new()),
        upstream,
        cache,
        GatewayOptions::new().cache_nondeterministic(config.llm_cache_nondeterministic),
    ))
}

/// The file store `config.storage_url` names.
///
/// # Errors
/// When the URL is unusable (or a local directory cannot be created).
pub fn file_storage(config: &Config) -> anyhow::Result<crate::app::FileStorage> {
    let store = groundwork_storage::open(&config.storage_url).with_context(|| {
        format!(
            "cannot open file storage {}",
            redact_url(&config.storage_url)
        )
    })?;
    tracing::info!(store = %store.describe(), "file storage ready");
    Ok(crate::app::FileStorage {
        store,
        max_upload_bytes: config.storage_max_upload_bytes,
    })
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
