//! `/api/v1/prompts`: validation, `(name, version)` uniqueness, active-only listing newest
//! first, filters, reading inactive prompts, partial updates.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, assert_error, field_of_items, id_of, test_app, total};
use serde_json::{Value, json};

async fn prompt(app: &TestApp, body: Value) -> anyhow::Result<i64> {
    id_of(&app.create("/api/v1/prompts", &body).await?)
}

#[tokio::test]
async fn create_returns_201_with_defaults() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, headers, body) = app
        .post_json(
            "/api/v1/prompts",
            &json!({ "name": "greet", "content": "Say hello.", "agent_type": "chat" }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = id_of(&body)?;
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/prompts/{id}").as_str())
    );
    assert_eq!(body["version"], "1", "default version");
    assert_eq!(body["is_active"], true);
    assert_eq!(body["metadata"], json!({}));
    assert_eq!(body["content"], "Say hello.");
    assert_eq!(body["agent_type"], "chat");

    let (status, _, fetched) = app.get(&format!("/api/v1/prompts/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);
    Ok(())
}

#[tokio::test]
async fn invalid_prompts_are_422() -> anyhow::Result<()> {
    let app = test_app().await?;
    let cases = [
        (
            "empty content",
            json!({ "name": "p", "content": "", "agent_type": "chat" }),
        ),
        (
            "blank content",
            json!({ "name": "p", "content": " \n ", "agent_type": "chat" }),
        ),
        ("missing agent_type", json!({ "name": "p", "content": "x" })),
        (
            "missing content",
            json!({ "name": "p", "agent_type": "chat" }),
        ),
        (
            "empty name",
            json!({ "name": "", "content": "x", "agent_type": "chat" }),
        ),
        (
            "empty version",
            json!({ "name": "p", "version": "", "content": "x", "agent_type": "chat" }),
        ),
        (
            "metadata is an array",
            json!({ "name": "p", "content": "x", "agent_type": "chat", "metadata": [] }),
        ),
        (
            "version is a number",
            json!({ "name": "p", "version": 2, "content": "x", "agent_type": "chat" }),
        ),
        (
            "unknown field",
            json!({ "name": "p", "content": "x", "agent_type": "chat", "active": true }),
        ),
    ];
    for (case, body) in cases {
        let resp = app.post_json("/api/v1/prompts", &body).await?;
        assert_eq!(
            resp.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            resp.2
        );
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/prompts",
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    let (_, _, body) = app.get("/api/v1/prompts?include_inactive=true").await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn name_and_version_are_unique_together() -> anyhow::Result<()> {
    let app = test_app().await?;
    prompt(
        &app,
        json!({ "name": "greet", "content": "v1", "agent_type": "chat" }),
    )
    .await?;
    let resp = app
        .post_json(
            "/api/v1/prompts",
            &json!({ "name": "greet", "version": "1", "content": "again", "agent_type": "other" }),
        )
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");

    let (status, _, body) = app
        .post_json(
            "/api/v1/prompts",
            &json!({ "name": "greet", "version": "2", "content": "v2", "agent_type": "chat" }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["version"], "2");

    // Another name may reuse version "1".
    prompt(
        &app,
        json!({ "name": "bye", "content": "v1", "agent_type": "chat" }),
    )
    .await?;

    // Renaming a version onto a taken (name, version) is refused too.
    let id = id_of(&body)?;
    let resp = app
        .patch_json(&format!("/api/v1/prompts/{id}"), &json!({ "version": "1" }))
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");

    let (_, _, body) = app.get("/api/v1/prompts?name=greet").await?;
    assert_eq!(field_of_items(&body, "version")?, ["2", "1"]);
    Ok(())
}

#[tokio::test]
async fn list_is_active_only_newest_first() -> anyhow::Result<()> {
    let app = test_app().await?;
    let first = prompt(
        &app,
        json!({ "name": "a", "content": "x", "agent_type": "chat" }),
    )
    .await?;
    let hidden = prompt(
        &app,
        json!({ "name": "b", "content": "x", "agent_type": "chat", "is_active": false }),
    )
    .await?;
    let third = prompt(
        &app,
        json!({ "name": "c", "content": "x", "agent_type": "search" }),
    )
    .await?;

    let (status, _, body) = app.get("/api/v1/prompts").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field_of_items(&body, "id")?, [json!(third), json!(first)]);
    assert_eq!(total(&body)?, 2);

    let (_, _, body) = app.get("/api/v1/prompts?include_inactive=true").await?;
    assert_eq!(
        field_of_items(&body, "id")?,
        [json!(third), json!(hidden), json!(first)]
    );
    assert_eq!(total(&body)?, 3);

    let (_, _, body) = app.get("/api/v1/prompts?include_inactive=false").await?;
    assert_eq!(total(&body)?, 2);

    let (_, _, body) = app.get("/api/v1/prompts?agent_type=chat").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(first)]);
    let (_, _, body) = app
        .get("/api/v1/prompts?agent_type=chat&include_inactive=true")
        .await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(hidden), json!(first)]);

    let (_, _, body) = app.get("/api/v1/prompts?name=c").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(third)]);
    let (_, _, body) = app.get("/api/v1/prompts?name=b").await?;
    assert_eq!(total(&body)?, 0, "an inactive prompt is hidden by name too");

    let (_, _, body) = app.get("/api/v1/prompts?limit=1&offset=1").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(first)]);
    assert_eq!(total(&body)?, 2);
    Ok(())
}

#[tokio::test]
async fn bad_list_queries_are_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    for query in [
        "limit=501",
        "limit=0",
        "offset=-1",
        "include_inactive=perhaps",
    ] {
        let resp = app.get(&format!("/api/v1/prompts?{query}")).await?;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "?{query}: {}", resp.2);
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    }
    Ok(())
}

#[tokio::test]
async fn inactive_prompt_is_404_unless_asked() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = prompt(
        &app,
        json!({ "name": "p", "content": "x", "agent_type": "chat", "is_active": false }),
    )
    .await?;
    let resp = app.get(&format!("/api/v1/prompts/{id}")).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let (status, _, body) = app
        .get(&format!("/api/v1/prompts/{id}?include_inactive=true"))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!(body["is_active"], false);

    let resp = app.get("/api/v1/prompts/999?include_inactive=true").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.get("/api/v1/prompts/abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    Ok(())
}

#[tokio::test]
async fn patch_changes_only_given_fields() -> anyhow::Result<()> {
    let app = test_app().await?;
    let created = app
        .create(
            "/api/v1/prompts",
            &json!({
                "name": "p",
                "version": "2024-06-01",
                "content": "original",
                "agent_type": "chat",
                "metadata": { "lang": "en" }
            }),
        )
        .await?;
    let id = id_of(&created)?;
    let path = format!("/api/v1/prompts/{id}");

    let (status, _, body) = app
        .patch_json(&path, &json!({ "content": "changed" }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["content"], "changed");
    for unchanged in [
        "name",
        "version",
        "agent_type",
        "metadata",
        "is_active",
        "created_at",
    ] {
        assert_eq!(
            body[unchanged], created[unchanged],
            "{unchanged} must not change"
        );
    }

    // Deactivating hides it; it can still be patched and reactivated.
    let (status, _, body) = app
        .patch_json(&path, &json!({ "is_active": false }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_active"], false);
    let resp = app.get(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let (status, _, body) = app
        .patch_json(
            &path,
            &json!({ "is_active": true, "metadata": { "lang": "fr" } }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"], json!({ "lang": "fr" }));
    assert_eq!(body["content"], "changed");
    let (status, _, fetched) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);

    let resp = app.patch_json(&path, &json!({ "content": "" })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.patch_json(&path, &json!({ "metadata": 1 })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.patch_json(&path, &json!({ "colour": "red" })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app
        .patch_json("/api/v1/prompts/999", &json!({ "content": "x" }))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}
