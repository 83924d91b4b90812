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

// -------------------------------------------------------------------------------------------
// PATCH and DELETE /api/v1/users/{id}. These need the two handlers registered in the router
// (`routes!(users::get, users::update, users::delete)` in app.rs); until then they fail with
// 405.
// -------------------------------------------------------------------------------------------

/// The newest audit entry, checked to be the only one newer than `before` entries.
async fn newest_audit(app: &TestApp, before: i64) -> anyhow::Result<Value> {
    let (status, _, body) = app.get("/api/v1/audit?limit=1").await?;
    anyhow::ensure!(status == StatusCode::OK, "GET /audit: {status} {body}");
    anyhow::ensure!(
        total(&body)? == before + 1,
        "expected exactly one new audit entry: {body}"
    );
    items(&body)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("empty audit log"))
}

async fn audit_count(app: &TestApp) -> anyhow::Result<i64> {
    let (_, _, body) = app.get("/api/v1/audit?limit=1").await?;
    total(&body)
}

#[tokio::test]
async fn patch_changes_only_given_fields() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = user(&app, "ada@example.com").await?;
    let other = user(&app, "bob@example.com").await?;
    let path = format!("/api/v1/users/{id}");
    let (_, _, created) = app.get(&path).await?;

    let audited = audit_count(&app).await?;
    let (status, _, body) = app.patch_json(&path, &json!({ "name": "Ada L." })).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Ada L.");
    for unchanged in ["id", "email", "created_at"] {
        assert_eq!(body[unchanged], created[unchanged], "{unchanged} changed");
    }
    let entry = newest_audit(&app, audited).await?;
    assert_eq!(entry["action"], "user.update");
    assert_eq!(entry["actor"], "anonymous");
    assert_eq!(entry["entity_type"], "user");
    assert_eq!(entry["entity_id"], id.to_string());

    let (status, _, body) = app
        .patch_json(&path, &json!({ "email": " Ada@New.Example " }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["email"], "ada@new.example");
    assert_eq!(body["name"], "Ada L.");

    // An empty patch changes nothing.
    let (status, _, same) = app.patch_json(&path, &json!({})).await?;
    assert_eq!(status, StatusCode::OK, "{same}");
    assert_eq!(same, body);
    let (_, _, fetched) = app.get(&path).await?;
    assert_eq!(fetched, body);
    let (_, _, untouched) = app.get(&format!("/api/v1/users/{other}")).await?;
    assert_eq!(untouched["email"], "bob@example.com");
    Ok(())
}

#[tokio::test]
async fn patch_errors() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = user(&app, "ada@example.com").await?;
    user(&app, "bob@example.com").await?;
    let path = format!("/api/v1/users/{id}");
    let audited = audit_count(&app).await?;

    let resp = app
        .patch_json(&path, &json!({ "email": "BOB@example.com" }))
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    for (case, patch) in [
        ("malformed email", json!({ "email": "nope" })),
        ("empty name", json!({ "name": "" })),
        ("long name", json!({ "name": "n".repeat(129) })),
        ("null name", json!({ "name": null })),
        ("null email", json!({ "email": null })),
        ("name is a number", json!({ "name": 5 })),
        ("unknown field", json!({ "nickname": "x" })),
        (
            "created_at is read-only",
            json!({ "created_at": "2020-01-01T00:00:00Z" }),
        ),
    ] {
        let resp = app.patch_json(&path, &patch).await?;
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
            Method::PATCH,
            &path,
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    let resp = app
        .raw(
            Method::PATCH,
            &path,
            &[("content-type", "application/json")],
            "[]",
        )
        .await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app
        .patch_json("/api/v1/users/999999", &json!({ "name": "Ghost" }))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error_message(&resp.2), "user 999999 not found");
    let resp = app.patch_json("/api/v1/users/999999", &json!({})).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app
        .patch_json("/api/v1/users/abc", &json!({ "name": "X" }))
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    // Nothing changed, nothing audited.
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["name"], "Someone");
    assert_eq!(audit_count(&app).await?, audited);
    Ok(())
}

#[tokio::test]
async fn delete_removes_the_user_and_their_digests() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = user(&app, "gone@example.com").await?;
    let kept = user(&app, "kept@example.com").await?;
    for owner in [id, kept] {
        app.create(&format!("/api/v1/users/{owner}/digests"), &digest("weekly"))
            .await?;
    }
    let path = format!("/api/v1/users/{id}");

    let audited = audit_count(&app).await?;
    let (status, _, body) = app.delete(&path).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(body, Value::Null);
    let entry = newest_audit(&app, audited).await?;
    assert_eq!(entry["action"], "user.delete");
    assert_eq!(entry["actor"], "anonymous");
    assert_eq!(entry["entity_id"], id.to_string());

    let resp = app.get(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.get(&format!("{path}/digests")).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.delete(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.delete("/api/v1/users/abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(audit_count(&app).await?, audited + 1);

    let (_, _, body) = app.get("/api/v1/users").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(kept)]);
    let (_, _, body) = app.get(&format!("/api/v1/users/{kept}/digests")).await?;
    assert_eq!(total(&body)?, 1);
    // The address can be used again.
    user(&app, "gone@example.com").await?;
    Ok(())
}

#[tokio::test]
async fn patch_and_delete_need_a_key() -> anyhow::Result<()> {
    let app = common::test_app_with(
        vec![common::key("ops", "s3cret")],
        common::DEFAULT_BODY_LIMIT,
    )
    .await?;
    let req = common::json_request(
        Method::POST,
        "/api/v1/users",
        &json!({ "email": "k@example.com", "name": "K" }),
    )?;
    let (status, _, body) = app.send(common::with_bearer(req, "s3cret")?).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = format!("/api/v1/users/{}", id_of(&body)?);
    let resp = app.patch_json(&path, &json!({ "name": "X" })).await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
    let resp = app.delete(&path).await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");

    let req = common::json_request(Method::PATCH, &path, &json!({ "name": "X" }))?;
    let (status, _, body) = app.send(common::with_bearer(req, "s3cret")?).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let req = common::bare_request(Method::GET, "/api/v1/audit?limit=1")?;
    let (_, _, audit) = app.send(common::with_bearer(req, "s3cret")?).await?;
    assert_eq!(field_of_items(&audit, "actor")?, ["ops"]);
    let req = common::bare_request(Method::DELETE, &path)?;
    let (status, _, body) = app.send(common::with_bearer(req, "s3cret")?).await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    Ok(())
}
