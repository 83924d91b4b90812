//! `/api/v1/users` and `/api/v1/users/{id}/digests`: creation (e-mail lower-cased and unique
//! regardless of case), listing, reading, and digests most recent first.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, assert_error, error_message, field_of_items, id_of, items, test_app, total};
use serde_json::{Value, json};

async fn user(app: &TestApp, email: &str) -> anyhow::Result<i64> {
    id_of(
        &app.create(
            "/api/v1/users",
            &json!({ "email": email, "name": "Someone" }),
        )
        .await?,
    )
}

fn digest(subject: &str) -> Value {
    json!({ "subject": subject, "body": "Things happened.", "period": "daily" })
}

#[tokio::test]
async fn create_lower_cases_the_email() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, headers, body) = app
        .post_json(
            "/api/v1/users",
            &json!({ "email": "Ada.Lovelace@Example.COM", "name": "Ada" }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = id_of(&body)?;
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/users/{id}").as_str())
    );
    assert_eq!(body["email"], "ada.lovelace@example.com");
    assert_eq!(body["name"], "Ada");

    let (status, _, fetched) = app.get(&format!("/api/v1/users/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);
    Ok(())
}

#[tokio::test]
async fn duplicate_email_in_another_case_is_409() -> anyhow::Result<()> {
    let app = test_app().await?;
    user(&app, "bob@example.com").await?;
    let resp = app
        .post_json(
            "/api/v1/users",
            &json!({ "email": "BOB@Example.com", "name": "Bob again" }),
        )
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let (_, _, body) = app.get("/api/v1/users").await?;
    assert_eq!(total(&body)?, 1);
    Ok(())
}

#[tokio::test]
async fn invalid_users_are_422() -> anyhow::Result<()> {
    let app = test_app().await?;
    let cases = [
        (
            "no at sign",
            json!({ "email": "not-an-email", "name": "x" }),
        ),
        (
            "empty local part",
            json!({ "email": "@example.com", "name": "x" }),
        ),
        ("empty domain", json!({ "email": "a@", "name": "x" })),
        ("two at signs", json!({ "email": "a@b@c", "name": "x" })),
        ("inner space", json!({ "email": "a b@c.d", "name": "x" })),
        ("empty email", json!({ "email": "", "name": "x" })),
        ("empty name", json!({ "email": "a@b.c", "name": "" })),
        ("missing name", json!({ "email": "a@b.c" })),
        ("email is a number", json!({ "email": 1, "name": "x" })),
        (
            "unknown field",
            json!({ "email": "a@b.c", "name": "x", "role": "admin" }),
        ),
    ];
    for (case, body) in cases {
        let resp = app.post_json("/api/v1/users", &body).await?;
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
            "/api/v1/users",
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    let (_, _, body) = app.get("/api/v1/users").await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn list_get_and_email_filter() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (_, _, body) = app.get("/api/v1/users").await?;
    assert_eq!(body, json!({ "items": [], "total": 0 }));

    let a = user(&app, "a@example.com").await?;
    let b = user(&app, "b@example.com").await?;
    let c = user(&app, "c@example.com").await?;

    let (status, _, body) = app.get("/api/v1/users").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field_of_items(&body, "id")?, [json!(a), json!(b), json!(c)]);
    assert_eq!(total(&body)?, 3);

    let (_, _, body) = app.get("/api/v1/users?email=b@example.com").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(b)]);
    assert_eq!(total(&body)?, 1);
    let (_, _, body) = app.get("/api/v1/users?email=B@EXAMPLE.com").await?;
    assert_eq!(
        field_of_items(&body, "id")?,
        [json!(b)],
        "the filter ignores case"
    );
    let (_, _, body) = app.get("/api/v1/users?email=nobody@example.com").await?;
    assert_eq!(total(&body)?, 0);

    let (_, _, body) = app.get("/api/v1/users?limit=1&offset=2").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(c)]);
    assert_eq!(total(&body)?, 3);

    let (status, _, body) = app.get(&format!("/api/v1/users/{a}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["email"], "a@example.com");

    for query in ["limit=501", "limit=0", "offset=-1", "limit=x"] {
        let resp = app.get(&format!("/api/v1/users?{query}")).await?;
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    }
    Ok(())
}

#[tokio::test]
async fn unknown_user_is_404() -> anyhow::Result<()> {
    let app = test_app().await?;
    let resp = app.get("/api/v1/users/999").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error_message(&resp.2), "user 999 not found");
    let resp = app.get("/api/v1/users/abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    Ok(())
}

#[tokio::test]
async fn digests_are_stored_and_listed_most_recent_first() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = user(&app, "reader@example.com").await?;
    let other = user(&app, "other@example.com").await?;
    let path = format!("/api/v1/users/{id}/digests");

    let (status, _, body) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "items": [], "total": 0 }));

    let (status, _, first) = app
        .post_json(
            &path,
            &json!({
                "subject": "Monday",
                "body": "Line one\nLine two",
                "period": "2026-W47",
                "metadata": { "items": 3 }
            }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["user_id"], id);
    assert_eq!(first["subject"], "Monday");
    assert_eq!(first["body"], "Line one\nLine two");
    assert_eq!(first["period"], "2026-W47");
    assert_eq!(first["metadata"], json!({ "items": 3 }));
    assert!(first["created_at"].is_string(), "{first}");

    app.create(&path, &digest("Tuesday")).await?;
    app.create(&path, &digest("Wednesday")).await?;
    let second_user = app
        .create(
            &format!("/api/v1/users/{other}/digests"),
            &digest("Elsewhere"),
        )
        .await?;
    assert_eq!(
        second_user["metadata"],
        json!({}),
        "metadata defaults to {{}}"
    );

    let (status, _, body) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        field_of_items(&body, "subject")?,
        ["Wednesday", "Tuesday", "Monday"]
    );
    assert_eq!(total(&body)?, 3);

    let (_, _, body) = app.get(&format!("{path}?limit=2")).await?;
    assert_eq!(field_of_items(&body, "subject")?, ["Wednesday", "Tuesday"]);
    assert_eq!(total(&body)?, 3, "total counts every page");
    let (_, _, body) = app.get(&format!("{path}?limit=2&offset=2")).await?;
    assert_eq!(field_of_items(&body, "subject")?, ["Monday"]);
    assert_eq!(items(&body)?[0]["id"], first["id"]);

    let resp = app.get(&format!("{path}?limit=501")).await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    Ok(())
}

#[tokio::test]
async fn digests_of_unknown_user_are_404() -> anyhow::Result<()> {
    let app = test_app().await?;
    let resp = app
        .post_json("/api/v1/users/999/digests", &digest("lost"))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.get("/api/v1/users/999/digests").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn invalid_digests_are_422() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = user(&app, "d@example.com").await?;
    let path = format!("/api/v1/users/{id}/digests");
    let cases = [
        (
            "empty subject",
            json!({ "subject": "", "body": "b", "period": "daily" }),
        ),
        (
            "empty body",
            json!({ "subject": "s", "body": "", "period": "daily" }),
        ),
        ("missing period", json!({ "subject": "s", "body": "b" })),
        (
            "metadata is an array",
            json!({ "subject": "s", "body": "b", "period": "daily", "metadata": [] }),
        ),
        (
            "unknown field",
            json!({ "subject": "s", "body": "b", "period": "daily", "to": "x" }),
        ),
    ];
    for (case, body) in cases {
        let resp = app.post_json(&path, &body).await?;
        assert_eq!(
            resp.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            resp.2
        );
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}
