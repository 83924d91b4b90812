//! `POST /v1/chat/completions` through the server, against the testkit's mock upstream:
//! `x-groundwork-cache` on every answer (MISS, then HIT, BYPASS on request, and BYPASS on
//! the answers made before the cache is consulted: 401, 405, 413), streams as
//! `text/event-stream`, upstream errors passed on with their status, body and
//! `Retry-After`, bad JSON and bad directives refused with 400, no upstream configured →
//! 503, bodies over the general 1 MiB limit (inline images) accepted up to 20 MiB;
//! `GET /api/v1/llm-cache` and `DELETE /api/v1/llm-cache` (audited).

mod common;

use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode};
use common::{DEFAULT_BODY_LIMIT, TestApp, assert_error, items, key, metrics_handle, test_app};
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_db::{Database, DatabaseOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{Gateway, GatewayOptions};
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_server::config::ApiKey;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::{Value, json};

async fn proxy_app(mock: &MockOpenAi) -> anyhow::Result<TestApp> {
    proxy_app_with(mock, &[], ClientOptions::new()).await
}

/// The proxy over `mock`, accepting `keys` (none: no authentication), its client configured
/// with `options`.
async fn proxy_app_with(
    mock: &MockOpenAi,
    keys: &[ApiKey],
    options: ClientOptions,
) -> anyhow::Result<TestApp> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    db.migrate().await?;
    let gateway = Gateway::new(
        LlmClient::new(HttpClient::new(HttpClientOptions::new())?, options),
        Upstream::new(mock.base_url()).with_api_key("sk-test"),
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    );
    let state = AppState::new(db.clone(), keys, metrics_handle()).with_llm(gateway);
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

fn header<'a>(resp: &'a common::Resp, name: &str) -> Option<&'a str> {
    resp.1.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn an_upstream_429_or_503_passes_its_retry_after_on() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    // The client returns answers asking for more than 1 s at once, for the proxy to pass on.
    let app = proxy_app_with(
        &mock,
        &[],
        ClientOptions::new().max_retry_after(Duration::from_secs(1)),
    )
    .await?;
    let path = "/v1/chat/completions";
    for status in [429, 503] {
        mock.fail_next(1, status, Some(Duration::from_secs(2)));
        let resp = app
            .raw(Method::POST, path, &[JSON], chat("busy", false))
            .await?;
        assert_eq!(resp.0.as_u16(), status, "{}", resp.2);
        assert!(
            resp.2["error"].is_object(),
            "the upstream's body: {}",
            resp.2
        );
        assert_eq!(header(&resp, "retry-after"), Some("2"), "{status}");
        assert_eq!(header(&resp, "retry-after-ms"), Some("2000"), "{status}");
        assert_eq!(cache_header(&resp), "MISS");
    }
    // No Retry-After from the upstream: none is made up.
    mock.fail_next(1, 400, None);
    let resp = app
        .raw(Method::POST, path, &[JSON], chat("bad", false))
        .await?;
    assert_eq!(resp.0, StatusCode::BAD_REQUEST);
    assert_eq!(header(&resp, "retry-after"), None);
    Ok(())
}

#[tokio::test]
async fn answers_made_before_the_cache_say_bypass() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let app = proxy_app_with(&mock, &[key("ci", "s3cret")], ClientOptions::new()).await?;
    let path = "/v1/chat/completions";

    // 401: refused by authentication, before the handler.
    let denied = app
        .raw(Method::POST, path, &[JSON], chat("hi", false))
        .await?;
    assert_error(&denied, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(cache_header(&denied), "BYPASS");

    let auth = ("authorization", "Bearer s3cret");
    // 405: another method on the proxy's path.
    let get = app.raw(Method::GET, path, &[auth], "").await?;
    assert_error(&get, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(cache_header(&get), "BYPASS");

    // 413: over the proxy's own 20 MiB limit.
    let huge = "x".repeat(21 * 1024 * 1024);
    let too_large = app.raw(Method::POST, path, &[JSON, auth], huge).await?;
    assert_error(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_eq!(cache_header(&too_large), "BYPASS");

    // Authenticated and within the limit: the cache answers for itself.
    let ok = app
        .raw(Method::POST, path, &[JSON, auth], chat("hi", false))
        .await?;
    assert_eq!(ok.0, StatusCode::OK, "{}", ok.2);
    assert_eq!(cache_header(&ok), "MISS");
    assert_eq!(mock.calls(), 1);

    // Other paths are not the proxy's: no header.
    let other = app.raw(Method::GET, "/api/v1/agents", &[], "").await?;
    assert_eq!(other.0, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&other, "x-groundwork-cache"), None);
    Ok(())
}

#[tokio::test]
async fn chat_bodies_may_exceed_the_general_body_limit() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let app = proxy_app(&mock).await?;
    // A 1.5 MiB inline image: over the general 1 MiB limit, under the proxy's 20 MiB (and
    // under the mock upstream's own 2 MiB limit).
    let image = format!("data:image/png;base64,{}", "A".repeat(3 * 512 * 1024));
    let body = json!({
        "model": "mock-1",
        "temperature": 0,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": image}},
        ]}],
    })
    .to_string();
    assert!(body.len() > DEFAULT_BODY_LIMIT);
    let resp = app
        .raw(Method::POST, "/v1/chat/completions", &[JSON], body)
        .await?;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.2);
    assert_eq!(cache_header(&resp), "MISS");
    assert_eq!(mock.calls(), 1);

    // Other routes keep the general limit.
    let big = json!({"name": "big", "type": "x", "description": "d".repeat(DEFAULT_BODY_LIMIT)});
    let refused = app
        .raw(Method::POST, "/api/v1/agents", &[JSON], big.to_string())
        .await?;
    assert_error(&refused, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    Ok(())
}

#[tokio::test]
async fn a_flush_is_audited() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let app = proxy_app(&mock).await?;
    app.raw(
        Method::POST,
        "/v1/chat/completions",
        &[JSON],
        chat("keep", false),
    )
    .await?;

    let (status, _, flushed) = app.delete("/api/v1/llm-cache?namespace=anonymous").await?;
    assert_eq!(status, StatusCode::OK, "{flushed}");
    let (status, _, _) = app.delete("/api/v1/llm-cache").await?;
    assert_eq!(status, StatusCode::OK);

    let (status, _, audit) = app.get("/api/v1/audit?action=llm_cache.flush").await?;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = items(&audit)?;
    assert_eq!(entries.len(), 2, "{audit}");
    // Newest first.
    let all = &entries[0];
    assert_eq!(all["actor"], "anonymous", "{audit}");
    assert_eq!(all["entity_type"], "llm_cache", "{audit}");
    assert_eq!(all["details"]["namespace"], Value::Null, "{audit}");
    assert_eq!(all["details"]["flushed"], 0, "{audit}");
    let one = &entries[1];
    assert_eq!(one["details"]["namespace"], "anonymous", "{audit}");
    assert_eq!(one["details"]["flushed"], 1, "{audit}");
    Ok(())
}
