//! Logs (tracing) and metrics (the `metrics` facade, rendered as Prometheus text).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Histogram buckets (seconds) for request latency: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the log subscriber: `RUST_LOG` filters (default `info`), `format` chooses lines or
/// JSON objects.
///
/// # Errors
/// If a subscriber is already installed.
pub fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}")),
        LogFormat::Json => builder
            .json()
            .try_init()
            .map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}")),
    }
}

/// Installs the process's metrics recorder and returns the handle `/metrics` renders.
///
/// The `metrics` facade keeps one recorder per process (that is its design, so library
/// crates can record without a handle); call this once, in `main`.
///
/// # Errors
/// If a recorder is already installed.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".to_owned()),
            LATENCY_BUCKETS,
        )?
        .install_recorder()
}

/// Middleware: counts requests and records their latency by method, route template and
/// status (`http_requests_total`, `http_request_duration_seconds`).
pub async fn track_http(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    // The route template (`/api/v1/agents/{id}`), never the raw path: ids would make the
    // label set unbounded.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
