//! Request limits and routing errors: oversize bodies are 413, unknown routes 404 and wrong
//! methods 405, all in the contract's error shape.

mod common;

use axum::http::{Method, StatusCode};
use common::{DEFAULT_BODY_LIMIT, assert_error, test_app, test_app_with, total};
use serde_json::json;

/// A valid agent body of exactly `size` bytes (padding in the description).
fn agent_body(size: usize) -> anyhow::Result<String> {
    let empty = json!({ "name": "big", "type": "x", "description": "" }).to_string();
    anyhow::ensure!(size > empty.len(), "{size} is too small");
    let body = json!({ "name": "big", "type": "x", "description": "d".repeat(size - empty.len()) })
        .to_string();
    anyhow::ensure!(body.len() == size);
    Ok(body)
}

#[tokio::test]
async fn body_over_a_small_limit_is_413() -> anyhow::Result<()> {
    let app = test_app_with(Vec::new(), 1024).await?;
    let json_type = [("content-type", "application/json")];

    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &json_type,
            agent_body(2048)?,
        )
        .await?;
    assert_error(&resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // The same kind of body under the limit is accepted.
    let (status, _, body) = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &json_type,
            agent_body(1000)?,
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The limit applies to every body-reading route, optional bodies included.
    let resp = app
        .raw(
            Method::PUT,
            "/api/v1/agents/1/tools/1",
            &json_type,
            json!({ "config_override": { "pad": "p".repeat(2048) } }).to_string(),
        )
        .await?;
    assert_error(&resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let resp = app
        .raw(
            Method::PATCH,
            "/api/v1/agents/1",
            &json_type,
            json!({ "description": "p".repeat(2048) }).to_string(),
        )
        .await?;
    assert_error(&resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let (_, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(total(&body)?, 1, "the oversize agent was not stored");
    Ok(())
}

#[tokio::test]
async fn default_limit_is_one_mib() -> anyhow::Result<()> {
    let app = test_app().await?;
    let json_type = [("content-type", "application/json")];
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &json_type,
            agent_body(DEFAULT_BODY_LIMIT + DEFAULT_BODY_LIMIT / 2)?,
        )
        .await?;
    assert_error(&resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Under 1 MiB the body gets through to validation (the description is too long: 422,
    // not 413).
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &json_type,
            agent_body(DEFAULT_BODY_LIMIT - 1024)?,
        )
        .await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    Ok(())
}

#[tokio::test]
async fn unknown_route_is_404_in_the_error_shape() -> anyhow::Result<()> {
    let app = test_app().await?;
    for path in [
        "/nowhere",
        "/api/v1/nothing",
        "/api/v2/agents",
        "/api/v1/agents/1/tools/2/x",
    ] {
        let resp = app.get(path).await?;
        assert_eq!(resp.0, StatusCode::NOT_FOUND, "{path}: {}", resp.2);
        assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    }
    let resp = app.post_json("/api/v1/nothing", &json!({})).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn wrong_method_is_405_in_the_error_shape() -> anyhow::Result<()> {
    let app = test_app().await?;
    let cases = [
        (Method::DELETE, "/api/v1/users"),
        (Method::PUT, "/api/v1/agents"),
        (Method::DELETE, "/api/v1/prompts/1"),
        (Method::POST, "/health"),
        (Method::PATCH, "/api/v1/audit"),
    ];
    for (method, path) in cases {
        let resp = app.raw(method.clone(), path, &[], "").await?;
        assert_eq!(
            resp.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            resp.2
        );
        assert_error(&resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    Ok(())
}
