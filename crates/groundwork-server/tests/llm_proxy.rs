//! `POST /v1/chat/completions` through the server, against the testkit's mock upstream:
//! `x-groundwork-cache` on every answer (MISS, then HIT, BYPASS on request), streams as
//! `text/event-stream`, upstream errors passed on with their status and body, bad JSON and
//! bad directives refused with 400, no upstream configured → 503; `GET /api/v1/llm-cache`
//! and `DELETE /api/v1/llm-cache`.

mod common;

use axum::Router;
use axum::http::{Method, StatusCode};
use common::{DEFAULT_BODY_LIMIT, TestApp, assert_error, metrics_handle, test_app};
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{Gateway, GatewayOptions};
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_testkit::openai::MockOpenAi;
use serde_json::{Value, json};

async fn proxy_app(mock: &MockOpenAi) -> anyhow::Result<TestApp> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    db.migrate().await?;
    let gateway = Gateway::new(
        LlmClient::new(
            HttpClient::new(HttpClientOptions::new())?,
            ClientOptions::new(),
        ),
        Upstream::new(mock.base_url()).with_api_key("sk-test"),
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    );
    let state = AppState::new(db.clone(), &[], metrics_handle()).with_llm(gateway);
    let router: Router = app(
        state,
        HttpSettings {
            body_limit_bytes: DEFAULT_BODY_LIMIT,
        },
    );
    Ok(TestApp { router, db, dir })
}

fn chat(content: &str, stream: bool) -> String {
    json!({
        "model": "mock-1",
        "temperature": 0,
        "stream": stream,
        "messages": [{"role": "user", "content": content}]
    })
    .to_string()
}

fn cache_header(resp: &common::Resp) -> &str {
    resp.1
        .get("x-groundwork-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn completions_are_cached_and_marked() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let app = proxy_app(&mock).await?;
    let path = "/v1/chat/completions";

    let first = app
        .raw(Method::POST, path, &[JSON], chat("hi", false))
        .await?;
    assert_eq!(first.0, StatusCode::OK, "{}", first.2);
    assert_eq!(cache_header(&first), "MISS");
    assert_eq!(first.2["object"], "chat.completion");
    assert_eq!(mock.last_authorization().as_deref(), Some("Bearer sk-test"));

    let second = app
        .raw(Method::POST, path, &[JSON], chat("hi", false))
        .await?;
    assert_eq!(cache_header(&second), "HIT");
    assert_eq!(second.2, first.2);

    let streamed = app
        .raw(Method::POST, path, &[JSON], chat("hi", true))
        .await?;
    assert_eq!(cache_header(&streamed), "HIT");
    assert_eq!(
        streamed.1.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let text = streamed.2.as_str().unwrap_or_default();
    assert!(
        text.starts_with("data: {") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );

    let bypass = app
        .raw(
            Method::POST,
            path,
            &[JSON, ("x-groundwork-cache", "bypass")],
            chat("hi", false),
        )
        .await?;
    assert_eq!(cache_header(&bypass), "BYPASS");
    assert_eq!(mock.calls(), 2);

    let (status, _, stats) = app.get("/api/v1/llm-cache").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["configured"], true);
    assert_eq!(stats["gateway"]["hits"], 2, "{stats}");
    assert_eq!(stats["gateway"]["bypasses"], 1, "{stats}");
    assert_eq!(stats["cache"]["entries"], 1, "{stats}");

    let (status, _, flushed) = app.delete("/api/v1/llm-cache?namespace=anonymous").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(flushed, json!({ "flushed": 1 }));
    let after = app
        .raw(Method::POST, path, &[JSON], chat("hi", false))
        .await?;
    assert_eq!(cache_header(&after), "MISS");
    Ok(())
}

#[tokio::test]
async fn upstream_errors_and_bad_requests() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let app = proxy_app(&mock).await?;
    let path = "/v1/chat/completions";

    mock.fail_next(1, 401, None);
    let denied = app
        .raw(Method::POST, path, &[JSON], chat("who", false))
        .await?;
    assert_eq!(
        denied.0,
        StatusCode::UNAUTHORIZED,
        "upstream status passed on"
    );
    assert!(denied.2["error"].is_object(), "{}", denied.2);
    assert_eq!(cache_header(&denied), "MISS");

    let bad = app.raw(Method::POST, path, &[JSON], "{not json").await?;
    assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(cache_header(&bad), "BYPASS");
    let array = app.raw(Method::POST, path, &[JSON], "[1, 2]").await?;
    assert_error(&array, StatusCode::BAD_REQUEST, "bad_request");
    let directive = app
        .raw(
            Method::POST,
            path,
            &[JSON, ("x-groundwork-cache", "sometimes")],
            chat("x", false),
        )
        .await?;
    assert_error(&directive, StatusCode::BAD_REQUEST, "bad_request");
    let ttl = app
        .raw(
            Method::POST,
            path,
            &[JSON, ("x-groundwork-cache-ttl", "soon")],
            chat("x", false),
        )
        .await?;
    assert_error(&ttl, StatusCode::BAD_REQUEST, "bad_request");
    Ok(())
}

#[tokio::test]
async fn without_an_upstream_the_proxy_is_unavailable() -> anyhow::Result<()> {
    let app = test_app().await?;
    let resp = app
        .raw(
            Method::POST,
            "/v1/chat/completions",
            &[JSON],
            chat("hi", false),
        )
        .await?;
    assert_error(&resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let (_, _, stats) = app.get("/api/v1/llm-cache").await?;
    assert_eq!(stats["configured"], Value::Bool(false));
    Ok(())
}
