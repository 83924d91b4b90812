//! Pruning the change log never leaves a cache stale: a cache whose cursor lies below what
//! was pruned gets a truncated batch and reloads in full, so a change it learns of only
//! through the log (written by another instance, here straight to the database) is served
//! after the prune all the same.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use groundwork_db::ToolPatch;
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_server::caches::CacheSettings;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

async fn send(
    router: &axum::Router,
    request: Request<Body>,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

fn post(path: &str, body: &Value) -> anyhow::Result<Request<Body>> {
    Ok(Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body)?))?)
}

#[tokio::test]
async fn a_cache_behind_a_pruned_log_reloads_in_full() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = common::sqlite_db(dir.path()).await?;
    let state = AppState::with_cache_settings(
        db.clone(),
        &[],
        common::metrics_handle(),
        CacheSettings {
            // Only the refreshes this test asks for.
            refresh_interval: Duration::from_secs(3600),
            ..CacheSettings::default()
        },
    );
    let caches = state.caches.clone();
    let router = app(state, HttpSettings::default());

    let (status, agent) = send(
        &router,
        post("/api/v1/agents", &json!({"name": "a", "type": "t"}))?,
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{agent}");
    let (status, tool) = send(
        &router,
        post(
            "/api/v1/tools",
            &json!({"name": "search", "type": "http", "config": {"v": 1}}),
        )?,
    )
    .await?;
    assert_eq!(status, StatusCode::CREATED, "{tool}");
    let (agent, tool) = (
        agent["id"].as_i64().unwrap_or(0),
        tool["id"].as_i64().unwrap_or(0),
    );
    let (status, _) = send(
        &router,
        Request::put(format!("/api/v1/agents/{agent}/tools/{tool}")).body(Body::empty())?,
    )
    .await?;
    assert!(status.is_success(), "{status}");
    caches.start().await?;
    let tools_path = format!("/api/v1/agents/{agent}/tools");
    let config = |body: &Value| body["items"][0]["effective_config"]["v"].clone();
    let (_, body) = send(&router, Request::get(&tools_path).body(Body::empty())?).await?;
    assert_eq!(config(&body), json!(1), "{body}");

    // Another instance changes the tool: this one learns of it only from the change log...
    db.tools()
        .update(
            "elsewhere",
            tool,
            &ToolPatch {
                config: Some(json!({"v": 2})),
                ..ToolPatch::default()
            },
        )
        .await?;
    // ...which is pruned, that change included, before this instance reads it.
    let pruned = db
        .changes()
        .prune(groundwork_db::now() + chrono::TimeDelta::seconds(1))
        .await?;
    assert!(pruned >= 4, "pruned {pruned}");

    caches.notify_changed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = send(&router, Request::get(&tools_path).body(Body::empty())?).await?;
        if config(&body) == json!(2) {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "still serving the pruned-away state: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    caches.shutdown().await;
    Ok(())
}
