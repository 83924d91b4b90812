//! The `groundwork` server: a thin layer over the Groundwork crates — configuration, CLI,
//! the HTTP API of DESIGN.md §3, lifecycle and metrics.
//!
//! Reading order: [`config`] (settings), [`app`] (router and state), [`routes`] (one module
//! per resource), [`serve`] (start and graceful shutdown), [`messaging`] and [`workers`] (the
//! queues and what consumes them), [`file_sweep`] (what crashes leave in the file store).
//!
//! Tests drive the router without a port:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use axum::body::Body;
//! use axum::http::Request;
//! use groundwork_db::{Database, DatabaseOptions};
//! use groundwork_server::app::{AppState, HttpSettings, app};
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use tower::ServiceExt;
//!
//! let db = Database::connect(DatabaseOptions::new("sqlite::memory:")).await?;
//! db.migrate().await?;
//! let metrics = PrometheusBuilder::new().build_recorder().handle();
//! let router = app(AppState::new(db, &[], metrics), HttpSettings::default());
//!
//! let response = router
//!     .oneshot(Request::get("/health").body(Body::empty())?)
//!     .await?;
//! assert_eq!(response.status(), 200);
//! # Ok::<(), anyhow::Error>(())
//! # }).unwrap();
//! ```

pub mod app;
pub mod auth;
pub mod bus;
pub mod caches;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod file_sweep;
pub mod messaging;
pub mod pruning;
pub mod routes;
pub mod serve;
pub mod steps;
pub mod telemetry;
pub mod workers;
