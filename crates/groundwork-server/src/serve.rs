//! Server lifecycle: connect, migrate, listen, shut down gracefully.

use std::time::Duration;

use anyhow::Context as _;
use groundwork_db::{Database, DatabaseOptions, redact_password};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::app::{AppState, HttpSettings, app};
use crate::caches::CacheSettings;
use crate::config::Config;

/// Opens the configured database (without migrating it).
///
/// # Errors
/// When the URL is unusable or the database cannot be reached.
pub async fn connect_database(config: &Config) -> anyhow::Result<Database> {
    let options = DatabaseOptions::new(&config.database_url)
        .max_connections(config.database_max_connections)
        .min_connections(config.database_min_connections)
        .acquire_timeout(config.database_acquire_timeout());
    Database::connect(options).await.with_context(|| {
        format!(
            "cannot open database {}",
            redact_password(&config.database_url)
        )
    })
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
    let db = connect_database(&config).await?;
    db.migrate().await.context("cannot migrate the database")?;
    let state = AppState::with_cache_settings(
        db.clone(),
        &config.api_keys,
        metrics,
        CacheSettings::from(&config),
    );
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
    caches.shutdown().await;
    close_with_deadline(&db, Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

async fn close_with_deadline(db: &Database, deadline: Duration) {
    if tokio::time::timeout(deadline, db.close()).await.is_err() {
        tracing::warn!("database pool did not close within {deadline:?}");
    }
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
