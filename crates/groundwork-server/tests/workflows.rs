//! `/api/v1/workflows`: create, list, read, partial update, delete; steps must be an array and
//! names are unique.

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, error_message, field_of_items, id_of, test_app, total};
use serde_json::{Value, json};

#[tokio::test]
async fn crud_round_trip() -> anyhow::Result<()> {
    let app = test_app().await?;
    let steps = json!([{ "name": "fetch" }, { "name": "summarise", "retries": 2 }]);
    let (status, headers, created) = app
        .post_json(
            "/api/v1/workflows",
            &json!({ "name": "digest", "description": "daily digest", "steps": steps }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = id_of(&created)?;
    let path = format!("/api/v1/workflows/{id}");
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(path.as_str())
    );
    assert_eq!(created["name"], "digest");
    assert_eq!(created["description"], "daily digest");
    assert_eq!(created["steps"], steps);

    let (status, _, fetched) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, created);

    let (status, _, body) = app.get("/api/v1/workflows").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field_of_items(&body, "id")?, [json!(id)]);
    assert_eq!(total(&body)?, 1);

    let (status, _, patched) = app
        .patch_json(&path, &json!({ "steps": [{ "name": "only" }] }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["steps"], json!([{ "name": "only" }]));
    assert_eq!(patched["name"], "digest");
    assert_eq!(patched["description"], "daily digest");

    let (status, _, patched) = app
        .patch_json(&path, &json!({ "description": null }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["steps"], json!([{ "name": "only" }]));

    let (status, _, patched) = app.patch_json(&path, &json!({ "name": "renamed" })).await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "renamed");
    let (_, _, fetched) = app.get(&path).await?;
    assert_eq!(fetched, patched);

    let (status, _, body) = app.delete(&path).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let resp = app.get(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.delete(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let (_, _, body) = app.get("/api/v1/workflows").await?;
    assert_eq!(body, json!({ "items": [], "total": 0 }));
    Ok(())
}

#[tokio::test]
async fn steps_default_to_an_empty_array() -> anyhow::Result<()> {
    let app = test_app().await?;
    let body = app
        .create("/api/v1/workflows", &json!({ "name": "bare" }))
        .await?;
    assert_eq!(body["steps"], json!([]));
    assert_eq!(body["description"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn steps_must_be_an_array() -> anyhow::Result<()> {
    let app = test_app().await?;
    for steps in [json!({ "name": "x" }), json!("x"), json!(null), json!(1)] {
        let resp = app
            .post_json("/api/v1/workflows", &json!({ "name": "w", "steps": steps }))
            .await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let id = id_of(
        &app.create("/api/v1/workflows", &json!({ "name": "ok", "steps": [] }))
            .await?,
    )?;
    let path = format!("/api/v1/workflows/{id}");
    let resp = app
        .patch_json(&path, &json!({ "steps": { "a": 1 } }))
        .await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(body["steps"], json!([]), "a refused patch changes nothing");
    Ok(())
}

#[tokio::test]
async fn other_invalid_bodies() -> anyhow::Result<()> {
    let app = test_app().await?;
    for body in [
        json!({ "steps": [] }),
        json!({ "name": "" }),
        json!({ "name": "n".repeat(129) }),
        json!({ "name": 1 }),
        json!({ "name": "w", "owner": "me" }),
    ] {
        let resp = app.post_json("/api/v1/workflows", &body).await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/workflows",
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    let (_, _, body) = app.get("/api/v1/workflows").await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn duplicate_name_is_409() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.create("/api/v1/workflows", &json!({ "name": "one" }))
        .await?;
    let two = id_of(
        &app.create("/api/v1/workflows", &json!({ "name": "two" }))
            .await?,
    )?;
    let resp = app
        .post_json("/api/v1/workflows", &json!({ "name": "one" }))
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let resp = app
        .patch_json(
            &format!("/api/v1/workflows/{two}"),
            &json!({ "name": "one" }),
        )
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let (_, _, body) = app.get("/api/v1/workflows").await?;
    assert_eq!(field_of_items(&body, "name")?, ["one", "two"]);
    Ok(())
}

#[tokio::test]
async fn unknown_and_bad_ids_and_paging() -> anyhow::Result<()> {
    let app = test_app().await?;
    let resp = app.get("/api/v1/workflows/999").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error_message(&resp.2), "workflow 999 not found");
    let resp = app
        .patch_json("/api/v1/workflows/999", &json!({ "name": "x" }))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.get("/api/v1/workflows/abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    for name in ["a", "b", "c"] {
        app.create("/api/v1/workflows", &json!({ "name": name }))
            .await?;
    }
    let (_, _, body) = app.get("/api/v1/workflows?limit=2&offset=1").await?;
    assert_eq!(field_of_items(&body, "name")?, ["b", "c"]);
    assert_eq!(total(&body)?, 3);
    for query in ["limit=501", "limit=0", "offset=-1"] {
        let resp = app.get(&format!("/api/v1/workflows?{query}")).await?;
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    }
    Ok(())
}

#[tokio::test]
async fn workflow_with_executions_cannot_be_deleted() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = id_of(
        &app.create("/api/v1/workflows", &json!({ "name": "busy" }))
            .await?,
    )?;
    // Executions have no HTTP route yet: create one through the data layer.
    app.db.executions().create("test", id, &json!({})).await?;
    let path = format!("/api/v1/workflows/{id}");
    let resp = app.delete(&path).await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let (status, _, _) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK, "the workflow is still there");
    Ok(())
}
