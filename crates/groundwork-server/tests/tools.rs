//! `/api/v1/tools`: create, list with filters (`type`, `is_active`, `name`) and paging, read,
//! partial update, delete, and the status codes of bad requests.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, assert_error, error_message, field_of_items, id_of, items, test_app, total};
use serde_json::{Value, json};

async fn seed(app: &TestApp) -> anyhow::Result<()> {
    for (name, kind, active) in [
        ("Web-Search", "http", true),
        ("sql-reader", "sql", true),
        ("old-search", "http", false),
        ("calculator", "function", true),
    ] {
        app.create(
            "/api/v1/tools",
            &json!({ "name": name, "type": kind, "is_active": active }),
        )
        .await?;
    }
    Ok(())
}

fn names(body: &Value) -> anyhow::Result<Vec<Value>> {
    field_of_items(body, "name")
}

#[tokio::test]
async fn create_returns_201_with_location_and_defaults() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, headers, body) = app
        .post_json(
            "/api/v1/tools",
            &json!({ "name": "search", "type": "http" }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = id_of(&body)?;
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/tools/{id}").as_str())
    );
    assert_eq!(body["name"], "search");
    assert_eq!(body["type"], "http");
    assert_eq!(body["is_active"], true);
    assert_eq!(body["config"], json!({}));
    assert_eq!(body["description"], Value::Null);
    assert!(
        body["created_at"].is_string() && body["updated_at"].is_string(),
        "{body}"
    );

    let (status, _, fetched) = app.get(&format!("/api/v1/tools/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);
    Ok(())
}

#[tokio::test]
async fn create_keeps_given_fields() -> anyhow::Result<()> {
    let app = test_app().await?;
    let body = app
        .create(
            "/api/v1/tools",
            &json!({
                "name": "db",
                "type": "sql",
                "description": "reads",
                "config": { "dsn": "x", "timeout": 3 },
                "is_active": false
            }),
        )
        .await?;
    assert_eq!(body["description"], "reads");
    assert_eq!(body["config"], json!({ "dsn": "x", "timeout": 3 }));
    assert_eq!(body["is_active"], false);
    Ok(())
}

#[tokio::test]
async fn list_filters_and_pages() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, _, body) = app.get("/api/v1/tools").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "items": [], "total": 0 }));

    seed(&app).await?;
    let (_, _, body) = app.get("/api/v1/tools").await?;
    assert_eq!(
        names(&body)?,
        ["Web-Search", "sql-reader", "old-search", "calculator"]
    );
    assert_eq!(total(&body)?, 4);

    let (_, _, body) = app.get("/api/v1/tools?is_active=true").await?;
    assert_eq!(names(&body)?, ["Web-Search", "sql-reader", "calculator"]);
    assert_eq!(total(&body)?, 3);

    let (_, _, body) = app.get("/api/v1/tools?is_active=false").await?;
    assert_eq!(names(&body)?, ["old-search"]);
    assert_eq!(total(&body)?, 1);

    let (_, _, body) = app.get("/api/v1/tools?type=http").await?;
    assert_eq!(names(&body)?, ["Web-Search", "old-search"]);

    let (_, _, body) = app.get("/api/v1/tools?type=http&is_active=true").await?;
    assert_eq!(names(&body)?, ["Web-Search"]);

    let (_, _, body) = app.get("/api/v1/tools?name=SEARCH").await?;
    assert_eq!(names(&body)?, ["Web-Search", "old-search"]);

    let (_, _, body) = app.get("/api/v1/tools?limit=2&offset=1").await?;
    assert_eq!(names(&body)?, ["sql-reader", "old-search"]);
    assert_eq!(total(&body)?, 4);

    let (_, _, body) = app.get("/api/v1/tools?offset=4").await?;
    assert_eq!(items(&body)?.len(), 0);
    assert_eq!(total(&body)?, 4);
    Ok(())
}

#[tokio::test]
async fn bad_query_parameters_are_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    for query in [
        "limit=501",
        "limit=0",
        "limit=abc",
        "offset=-1",
        "is_active=maybe",
    ] {
        let resp = app.get(&format!("/api/v1/tools?{query}")).await?;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "?{query}: {}", resp.2);
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    }
    Ok(())
}

#[tokio::test]
async fn get_unknown_and_bad_ids() -> anyhow::Result<()> {
    let app = test_app().await?;
    let resp = app.get("/api/v1/tools/999").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error_message(&resp.2), "tool 999 not found");
    let resp = app.get("/api/v1/tools/abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    let resp = app.delete("/api/v1/tools/999").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app
        .patch_json("/api/v1/tools/999", &json!({ "is_active": false }))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn patch_changes_only_given_fields() -> anyhow::Result<()> {
    let app = test_app().await?;
    let created = app
        .create(
            "/api/v1/tools",
            &json!({
                "name": "fetch",
                "type": "http",
                "description": "gets pages",
                "config": { "url": "https://a" }
            }),
        )
        .await?;
    let path = format!("/api/v1/tools/{}", id_of(&created)?);

    let (status, _, body) = app
        .patch_json(&path, &json!({ "is_active": false }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_active"], false);
    for unchanged in ["name", "type", "description", "config", "created_at"] {
        assert_eq!(
            body[unchanged], created[unchanged],
            "{unchanged} must not change"
        );
    }

    let (status, _, body) = app
        .patch_json(
            &path,
            &json!({ "config": { "url": "https://b" }, "name": "fetch-2" }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["config"], json!({ "url": "https://b" }));
    assert_eq!(body["name"], "fetch-2");
    assert_eq!(body["is_active"], false);
    assert_eq!(body["description"], "gets pages");

    let (status, _, body) = app
        .patch_json(&path, &json!({ "description": null }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["name"], "fetch-2");

    let (_, _, fetched) = app.get(&path).await?;
    assert_eq!(fetched, body);
    Ok(())
}

#[tokio::test]
async fn delete_then_get_is_404() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = app.tool("gone", json!({})).await?;
    let path = format!("/api/v1/tools/{id}");
    let (status, _, body) = app.delete(&path).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let resp = app.get(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let (_, _, body) = app.get("/api/v1/tools").await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn duplicate_names_are_409() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.tool("first", json!({})).await?;
    let second = app.tool("second", json!({})).await?;

    let resp = app
        .post_json("/api/v1/tools", &json!({ "name": "first", "type": "sql" }))
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");

    let path = format!("/api/v1/tools/{second}");
    let resp = app.patch_json(&path, &json!({ "name": "first" })).await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(body["name"], "second");

    let (_, _, body) = app.get("/api/v1/tools").await?;
    assert_eq!(total(&body)?, 2);
    Ok(())
}

#[tokio::test]
async fn invalid_bodies_are_422_and_malformed_are_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    let cases = [
        ("missing type", json!({ "name": "a" })),
        ("name is a number", json!({ "name": 5, "type": "a" })),
        (
            "is_active is a string",
            json!({ "name": "a", "type": "a", "is_active": "yes" }),
        ),
        (
            "unknown field",
            json!({ "name": "a", "type": "a", "enabled": true }),
        ),
        (
            "config is an array",
            json!({ "name": "a", "type": "a", "config": [] }),
        ),
        (
            "config is null",
            json!({ "name": "a", "type": "a", "config": null }),
        ),
        ("empty name", json!({ "name": "", "type": "a" })),
        (
            "name of 129 characters",
            json!({ "name": "n".repeat(129), "type": "a" }),
        ),
    ];
    for (case, body) in cases {
        let resp = app.post_json("/api/v1/tools", &body).await?;
        assert_eq!(
            resp.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            resp.2
        );
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }

    let id = app.tool("valid", json!({})).await?;
    let path = format!("/api/v1/tools/{id}");
    let resp = app.patch_json(&path, &json!({ "config": "x" })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.patch_json(&path, &json!({ "is_active": 1 })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let resp = app
        .raw(
            Method::POST,
            "/api/v1/tools",
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/tools",
            &[],
            r#"{"name": "a", "type": "b"}"#,
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    let (_, _, body) = app.get("/api/v1/tools").await?;
    assert_eq!(field_of_items(&body, "name")?, ["valid"]);
    Ok(())
}
