//! API-key authentication: with keys, every route but `/health` needs
//! `Authorization: Bearer <key>` (unknown routes included, so routes do not leak); without
//! keys, everything is open.

mod common;

use axum::http::{Method, StatusCode};
use common::{
    DEFAULT_BODY_LIMIT, TestApp, assert_error, bare_request, error_message, json_request, key,
    test_app, test_app_with, with_bearer,
};
use serde_json::json;

const PROTECTED: [&str; 8] = [
    "/ready",
    "/metrics",
    "/openapi.json",
    "/api/v1/agents",
    "/api/v1/tools",
    "/api/v1/audit",
    "/api/v1/ready",
    "/api/v1/openapi.json",
];

async fn keyed() -> anyhow::Result<TestApp> {
    test_app_with(vec![key("ci", "s3cret")], DEFAULT_BODY_LIMIT).await
}

#[tokio::test]
async fn health_needs_no_key() -> anyhow::Result<()> {
    let app = keyed().await?;
    for path in ["/health", "/api/v1/health"] {
        let (status, _, body) = app.get(path).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body, json!({ "status": "ok" }));
    }
    Ok(())
}

#[tokio::test]
async fn missing_header_is_401() -> anyhow::Result<()> {
    let app = keyed().await?;
    for path in PROTECTED {
        let resp = app.get(path).await?;
        assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{path}: {}", resp.2);
        assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            resp.1.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer realm=\"groundwork\""[..]),
            "{path}: a 401 carries its challenge"
        );
    }
    let resp = app
        .post_json("/api/v1/agents", &json!({ "name": "a", "type": "x" }))
        .await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_401() -> anyhow::Result<()> {
    let app = keyed().await?;
    let headers: [(&str, &str); 7] = [
        ("authorization", "Bearer wrong"),
        ("authorization", "Bearer s3cret-and-more"),
        ("authorization", "Bearer "),
        ("authorization", "Bearer"),
        ("authorization", "s3cret"),
        ("authorization", "Basic Y2k6czNjcmV0"),
        ("x-api-key", "s3cret"),
    ];
    for header in headers {
        for path in ["/api/v1/agents", "/ready"] {
            let resp = app.raw(Method::GET, path, &[header], "").await?;
            assert_eq!(
                resp.0,
                StatusCode::UNAUTHORIZED,
                "{header:?} on {path}: {}",
                resp.2
            );
            assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
            let challenge = resp
                .1
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer realm=\"groundwork\""),
                "{header:?} on {path}: challenge {challenge:?}"
            );
        }
    }
    // The key's name is not the secret.
    let resp = app
        .send(with_bearer(
            bare_request(Method::GET, "/api/v1/agents")?,
            "ci",
        )?)
        .await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
    Ok(())
}

#[tokio::test]
async fn each_refusal_says_what_is_wrong_with_the_header() -> anyhow::Result<()> {
    let app = keyed().await?;
    let missing = "missing `Authorization: Bearer <API key>` header";
    let wrong_scheme =
        "the Authorization header must use the Bearer scheme: `Authorization: Bearer <API key>`";
    let no_key = "the Authorization header has no API key after `Bearer`";
    let invalid = "invalid API key";
    let cases = [
        (None, missing),
        (Some(("x-api-key", "s3cret")), missing),
        (Some(("authorization", "Basic Y2k6czNjcmV0")), wrong_scheme),
        (Some(("authorization", "s3cret")), wrong_scheme),
        (Some(("authorization", "Bearers3cret")), wrong_scheme),
        (Some(("authorization", "Bearer")), no_key),
        (Some(("authorization", "Bearer   ")), no_key),
        (Some(("authorization", "Bearer wrong")), invalid),
        (Some(("authorization", "bearer ci")), invalid),
    ];
    for (header, message) in cases {
        let headers = Vec::from_iter(header);
        let resp = app.raw(Method::GET, "/api/v1/agents", &headers, "").await?;
        assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(error_message(&resp.2), message, "{header:?}");
        // The challenge names the error only when a key was presented and is wrong.
        let challenge = if message == invalid {
            "Bearer realm=\"groundwork\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"groundwork\""
        };
        assert_eq!(
            resp.1.get("www-authenticate").map(|v| v.as_bytes()),
            Some(challenge.as_bytes()),
            "{header:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn right_key_is_accepted() -> anyhow::Result<()> {
    let app = keyed().await?;
    for path in PROTECTED {
        let (status, _, body) = app
            .send(with_bearer(bare_request(Method::GET, path)?, "s3cret")?)
            .await?;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let req = json_request(
        Method::POST,
        "/api/v1/agents",
        &json!({ "name": "a", "type": "x" }),
    )?;
    let (status, _, body) = app.send(with_bearer(req, "s3cret")?).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Ok(())
}

#[tokio::test]
async fn refused_request_changes_nothing() -> anyhow::Result<()> {
    let app = keyed().await?;
    let req = json_request(
        Method::POST,
        "/api/v1/agents",
        &json!({ "name": "a", "type": "x" }),
    )?;
    let resp = app.send(with_bearer(req, "nope")?).await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
    let (_, _, body) = app
        .send(with_bearer(
            bare_request(Method::GET, "/api/v1/agents")?,
            "s3cret",
        )?)
        .await?;
    assert_eq!(body, json!({ "items": [], "total": 0 }));
    Ok(())
}

#[tokio::test]
async fn unknown_routes_do_not_leak_without_a_key() -> anyhow::Result<()> {
    let app = keyed().await?;
    for path in ["/nowhere", "/api/v1/secrets", "/api/v1/agents/1/nothing"] {
        let resp = app.get(path).await?;
        assert_eq!(resp.0, StatusCode::UNAUTHORIZED, "{path}: {}", resp.2);
        assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            resp.1.get("www-authenticate").map(|v| v.as_bytes()),
            Some(&b"Bearer realm=\"groundwork\""[..]),
            "{path}: a 401 carries its challenge"
        );
    }
    let resp = app.delete("/api/v1/users").await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");

    // With the key, an unknown route is an ordinary 404.
    let resp = app
        .send(with_bearer(
            bare_request(Method::GET, "/nowhere")?,
            "s3cret",
        )?)
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn without_keys_every_route_is_open() -> anyhow::Result<()> {
    let app = test_app().await?;
    for path in PROTECTED.iter().chain(&["/health", "/api/v1/health"]) {
        let (status, _, body) = app.get(path).await?;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, _, body) = app
        .post_json("/api/v1/agents", &json!({ "name": "a", "type": "x" }))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A bogus header does not matter when no keys are configured.
    let (status, _, _) = app
        .raw(
            Method::GET,
            "/api/v1/agents",
            &[("authorization", "Bearer whatever")],
            "",
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn several_keys_each_work() -> anyhow::Result<()> {
    let app = test_app_with(
        vec![key("ci", "one"), key("ops", "two")],
        DEFAULT_BODY_LIMIT,
    )
    .await?;
    for secret in ["one", "two"] {
        let (status, _, _) = app
            .send(with_bearer(
                bare_request(Method::GET, "/api/v1/agents")?,
                secret,
            )?)
            .await?;
        assert_eq!(status, StatusCode::OK, "{secret}");
    }
    let resp = app
        .send(with_bearer(
            bare_request(Method::GET, "/api/v1/agents")?,
            "three",
        )?)
        .await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
    Ok(())
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() -> anyhow::Result<()> {
    let app = keyed().await?;
    for header in [
        "Bearer s3cret",
        "bearer s3cret",
        "BEARER s3cret",
        "  Bearer   s3cret ",
    ] {
        let mut req = bare_request(Method::GET, "/api/v1/agents")?;
        req.headers_mut()
            .insert(axum::http::header::AUTHORIZATION, header.parse()?);
        let (status, _, body) = app.send(req).await?;
        assert_eq!(status, StatusCode::OK, "{header:?}: {body}");
    }
    let mut req = bare_request(Method::GET, "/api/v1/agents")?;
    req.headers_mut()
        .insert(axum::http::header::AUTHORIZATION, "Bearers3cret".parse()?);
    assert_error(
        &app.send(req).await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    Ok(())
}
