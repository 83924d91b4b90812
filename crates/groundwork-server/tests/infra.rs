//! `GET /api/v1/infra`: the pool, its breaker and the HTTP client as JSON, and the same
//! figures in `/metrics`.

mod common;

use axum::http::StatusCode;
use common::test_app;

#[tokio::test]
async fn infra_reports_the_pool_breakers_and_clients() -> anyhow::Result<()> {
    let app = test_app().await?;
    // Some traffic first, so the counters have something to count.
    app.get("/api/v1/agents").await?;
    let (status, _, infra) = app.get("/api/v1/infra").await?;
    assert_eq!(status, StatusCode::OK, "{infra}");

    let database = &infra["database"];
    assert_eq!(database["backend"], "sqlite", "{infra}");
    for field in [
        "size",
        "idle",
        "in_use",
        "max_connections",
        "in_flight",
        "waiters",
        "acquires",
        "acquire_mean_ms",
        "timeouts",
        "connect_errors",
        "rejected",
    ] {
        assert!(database[field].is_number(), "database.{field}: {infra}");
    }
    assert_eq!(database["breaker"]["state"], "closed", "{infra}");
    assert!(
        database["breaker"]["successes"].as_u64() >= Some(1),
        "{infra}"
    );

    let http = &infra["http_client"];
    assert_eq!(http["pool_max_idle_per_host"], 30, "{infra}");
    assert!(http["requests"].is_number(), "{infra}");
    // No Redis configured.
    assert!(infra["redis"].is_null(), "{infra}");
    let breakers = infra["breakers"].as_array().cloned().unwrap_or_default();
    assert!(
        breakers.iter().any(|b| b["name"] == "database:sqlite"),
        "{infra}"
    );

    let (_, _, metrics) = app.get("/metrics").await?;
    let text = metrics.as_str().unwrap_or_default();
    for name in [
        "groundwork_db_pool_size{backend=\"sqlite\"}",
        "groundwork_db_pool_in_use{backend=\"sqlite\"}",
        "groundwork_breaker_state{breaker=\"database:sqlite\"} 0",
        "groundwork_http_client_in_flight{client=\"default\"}",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    Ok(())
}
