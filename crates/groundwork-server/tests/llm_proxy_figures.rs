//! The proxy's figures: `/metrics` exports its own counters (hits by level, misses,
//! bypasses, upstream calls, coalesced misses, answers not stored) next to the cache's and
//! the client's, and `GET /api/v1/infra` reports the LLM client's counters and its
//! per-upstream breaker. In a binary of its own: the metrics recorder is global, and another
//! test's proxy would publish over these figures.

mod common;

use axum::http::{Method, StatusCode};
use common::{DEFAULT_BODY_LIMIT, metrics_handle};
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{Gateway, GatewayOptions};
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_testkit::openai::MockOpenAi;
use serde_json::json;

fn chat(content: &str, temperature: f64) -> String {
    json!({
        "model": "mock-1",
        "temperature": temperature,
        "messages": [{"role": "user", "content": content}]
    })
    .to_string()
}

/// The value of the sample `name` (with its labels) in a Prometheus text page.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn metrics_and_infra_report_the_proxy_and_its_client() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let dir = tempfile::tempdir()?;
    let db = Database::connect(DatabaseOptions::new(format!(
        "sqlite://{}/t.db",
        dir.path().display()
    )))
    .await?;
    db.migrate().await?;
    let gateway = Gateway::new(
        LlmClient::new(
            HttpClient::new(HttpClientOptions::new())?,
            ClientOptions::new(),
        ),
        Upstream::new(mock.base_url()),
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    );
    let app = common::TestApp {
        router: app(
            AppState::new(db.clone(), &[], metrics_handle()).with_llm(gateway),
            HttpSettings {
                body_limit_bytes: DEFAULT_BODY_LIMIT,
            },
        ),
        db,
        dir,
    };
    let json = [("content-type", "application/json")];
    let path = "/v1/chat/completions";
    // A miss, two hits, a non-deterministic bypass, an upstream error (not stored).
    for content in ["one", "one", "one"] {
        app.raw(Method::POST, path, &json, chat(content, 0.0))
            .await?;
    }
    app.raw(Method::POST, path, &json, chat("hot", 0.9)).await?;
    mock.fail_next(1, 400, None);
    app.raw(Method::POST, path, &json, chat("bad", 0.0)).await?;

    let (status, _, metrics) = app.get("/metrics").await?;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap_or_default();
    for (name, value) in [
        ("groundwork_llm_proxy_hits_total{level=\"memory\"}", 2.0),
        ("groundwork_llm_proxy_hits_total{level=\"redis\"}", 0.0),
        ("groundwork_llm_proxy_misses_total", 2.0),
        ("groundwork_llm_proxy_bypasses_total", 1.0),
        ("groundwork_llm_proxy_upstream_calls_total", 3.0),
        ("groundwork_llm_proxy_coalesced_total", 0.0),
        ("groundwork_llm_proxy_not_stored_total", 1.0),
        ("groundwork_llm_client_calls_total{client=\"default\"}", 3.0),
    ] {
        assert_eq!(sample(text, name), Some(value), "{name} in:\n{text}");
    }

    let (status, _, infra) = app.get("/api/v1/infra").await?;
    assert_eq!(status, StatusCode::OK, "{infra}");
    let client = &infra["llm_client"];
    assert_eq!(client["calls"], 3, "{infra}");
    assert_eq!(client["attempts"], 3, "{infra}");
    assert_eq!(client["errors_4xx"], 1, "{infra}");
    let upstream = format!("llm:{}", mock.addr());
    assert_eq!(client["breakers"][0]["name"], upstream.as_str(), "{infra}");
    let breakers = infra["breakers"].as_array().cloned().unwrap_or_default();
    assert!(
        breakers
            .iter()
            .any(|b| b["name"] == upstream.as_str() && b["state"] == "closed"),
        "the upstream's breaker among the others: {infra}"
    );
    // The handler's own figures are still there.
    assert_eq!(infra["database"]["backend"], "sqlite", "{infra}");
    assert!(infra["queues"].is_object(), "{infra}");
    Ok(())
}

#[tokio::test]
async fn without_an_upstream_infra_says_so() -> anyhow::Result<()> {
    let app = common::test_app().await?;
    let (status, _, infra) = app.get("/api/v1/infra").await?;
    assert_eq!(status, StatusCode::OK, "{infra}");
    assert!(
        infra.get("llm_client").is_some_and(|v| v.is_null()),
        "{infra}"
    );
    Ok(())
}
