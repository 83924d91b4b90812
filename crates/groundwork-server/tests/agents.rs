//! `/api/v1/agents`: create, list with filters and paging, read, partial update, delete, and
//! the status codes of every kind of bad request.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, assert_error, error_message, field_of_items, id_of, items, test_app, total};
use serde_json::{Value, json};

async fn seed(app: &TestApp) -> anyhow::Result<()> {
    for (name, kind, status) in [
        ("Alpha-Triage", "classifier", "active"),
        ("beta", "classifier", "inactive"),
        ("gamma-TRIAGE", "router", "active"),
        ("delta", "router", "archived"),
    ] {
        app.create(
            "/api/v1/agents",
            &json!({ "name": name, "type": kind, "status": status }),
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
            "/api/v1/agents",
            &json!({ "name": "triage", "type": "classifier" }),
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = id_of(&body)?;
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(location, format!("/api/v1/agents/{id}"));

    assert_eq!(body["name"], "triage");
    assert_eq!(body["type"], "classifier");
    assert_eq!(body["status"], "active");
    assert_eq!(body["config"], json!({}));
    assert_eq!(body["description"], Value::Null);
    assert!(
        body.get("description").is_some(),
        "description must be present: {body}"
    );
    assert!(body["created_at"].is_string(), "{body}");
    assert!(body["updated_at"].is_string(), "{body}");
    assert!(
        body.get("kind").is_none(),
        "the field is named `type` in JSON: {body}"
    );

    // The Location points at the same resource.
    let (status, _, fetched) = app.get(location).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, body);
    Ok(())
}

#[tokio::test]
async fn create_keeps_given_fields() -> anyhow::Result<()> {
    let app = test_app().await?;
    let body = app
        .create(
            "/api/v1/agents",
            &json!({
                "name": "writer",
                "type": "llm",
                "description": "writes things",
                "config": { "model": "gpt-4o-mini", "temperature": 0.2 },
                "status": "inactive"
            }),
        )
        .await?;
    assert_eq!(body["description"], "writes things");
    assert_eq!(
        body["config"],
        json!({ "model": "gpt-4o-mini", "temperature": 0.2 })
    );
    assert_eq!(body["status"], "inactive");
    Ok(())
}

#[tokio::test]
async fn list_returns_items_and_total() -> anyhow::Result<()> {
    let app = test_app().await?;
    let (status, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "items": [], "total": 0 }));

    seed(&app).await?;
    let (status, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(items(&body)?.len(), 4);
    assert_eq!(total(&body)?, 4);
    assert_eq!(
        names(&body)?,
        ["Alpha-Triage", "beta", "gamma-TRIAGE", "delta"],
        "listed by id"
    );
    Ok(())
}

#[tokio::test]
async fn list_filters_by_type_status_and_name() -> anyhow::Result<()> {
    let app = test_app().await?;
    seed(&app).await?;

    let (_, _, body) = app.get("/api/v1/agents?type=router").await?;
    assert_eq!(names(&body)?, ["gamma-TRIAGE", "delta"]);
    assert_eq!(total(&body)?, 2);

    let (_, _, body) = app.get("/api/v1/agents?status=active").await?;
    assert_eq!(names(&body)?, ["Alpha-Triage", "gamma-TRIAGE"]);

    let (_, _, body) = app
        .get("/api/v1/agents?type=classifier&status=inactive")
        .await?;
    assert_eq!(names(&body)?, ["beta"]);
    assert_eq!(total(&body)?, 1);

    // Substring, case-insensitive.
    let (_, _, body) = app.get("/api/v1/agents?name=triage").await?;
    assert_eq!(names(&body)?, ["Alpha-Triage", "gamma-TRIAGE"]);
    let (_, _, body) = app.get("/api/v1/agents?name=ELT").await?;
    assert_eq!(names(&body)?, ["delta"]);

    // LIKE wildcards in the filter match literally.
    let (_, _, body) = app.get("/api/v1/agents?name=%25").await?;
    assert_eq!(total(&body)?, 0, "`%` is not a wildcard: {body}");
    let (_, _, body) = app.get("/api/v1/agents?name=_").await?;
    assert_eq!(total(&body)?, 0, "`_` is not a wildcard: {body}");
    app.create(
        "/api/v1/agents",
        &json!({ "name": "100%_sure", "type": "x" }),
    )
    .await?;
    let (_, _, body) = app.get("/api/v1/agents?name=0%25_s").await?;
    assert_eq!(names(&body)?, ["100%_sure"]);

    let (status, _, body) = app.get("/api/v1/agents?type=nothing").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "items": [], "total": 0 }));
    Ok(())
}

#[tokio::test]
async fn list_pages_with_limit_and_offset() -> anyhow::Result<()> {
    let app = test_app().await?;
    seed(&app).await?;

    let (_, _, body) = app.get("/api/v1/agents?limit=2").await?;
    assert_eq!(names(&body)?, ["Alpha-Triage", "beta"]);
    assert_eq!(total(&body)?, 4, "total counts every page");

    let (_, _, body) = app.get("/api/v1/agents?limit=2&offset=2").await?;
    assert_eq!(names(&body)?, ["gamma-TRIAGE", "delta"]);
    assert_eq!(total(&body)?, 4);

    let (_, _, body) = app.get("/api/v1/agents?offset=10").await?;
    assert_eq!(items(&body)?.len(), 0);
    assert_eq!(total(&body)?, 4);

    let (_, _, body) = app
        .get("/api/v1/agents?status=active&limit=1&offset=1")
        .await?;
    assert_eq!(names(&body)?, ["gamma-TRIAGE"]);
    assert_eq!(total(&body)?, 2);

    let (status, _, _) = app.get("/api/v1/agents?limit=500").await?;
    assert_eq!(status, StatusCode::OK, "500 is the largest accepted limit");
    Ok(())
}

#[tokio::test]
async fn bad_paging_and_filters_are_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    for query in [
        "limit=501",
        "limit=0",
        "limit=abc",
        "offset=-1",
        "limit=-5",
        "offset=x",
        "status=retired",
    ] {
        let resp = app.get(&format!("/api/v1/agents?{query}")).await?;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "?{query}: {}", resp.2);
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    }
    Ok(())
}

#[tokio::test]
async fn get_one_and_unknown_ids() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = app.agent("solo").await?;

    let (status, _, body) = app.get(&format!("/api/v1/agents/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id);
    assert_eq!(body["name"], "solo");

    let resp = app.get("/api/v1/agents/999").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(error_message(&resp.2), "agent 999 not found");

    let resp = app.get("/api/v1/agents/abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        error_message(&resp.2),
        "`abc` in the path is not an integer"
    );
    let resp = app.put_json("/api/v1/agents/x/tools/1", &json!({})).await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(error_message(&resp.2), "`x` in the path is not an integer");
    Ok(())
}

#[tokio::test]
async fn bad_input_is_described_in_api_words() -> anyhow::Result<()> {
    let app = test_app().await?;
    // A JSON array where an object is expected: no Rust type names in the answer.
    let resp = app.post_json("/api/v1/agents", &json!([])).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let message = error_message(&resp.2);
    assert!(
        message.starts_with("invalid request body: ") && message.contains("expected a JSON object"),
        "{message}"
    );
    assert!(!message.contains("NewAgent"), "{message}");
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &[("content-type", "application/json")],
            "{\"name\": ",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        error_message(&resp.2).starts_with("malformed JSON: "),
        "{}",
        resp.2
    );
    let resp = app.get("/api/v1/agents?limit=abc").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        error_message(&resp.2).starts_with("invalid query string: "),
        "{}",
        resp.2
    );
    // NUL in a query value: refused alike on every engine (PostgreSQL cannot compare it).
    for path in [
        "/api/v1/audit?actor=%00",
        "/api/v1/files?owner=a%00b",
        "/api/v1/agents?type=%00",
    ] {
        let resp = app.get(path).await?;
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
        assert!(error_message(&resp.2).contains("NUL"), "{path}: {}", resp.2);
    }
    Ok(())
}

#[tokio::test]
async fn patch_changes_only_given_fields() -> anyhow::Result<()> {
    let app = test_app().await?;
    let created = app
        .create(
            "/api/v1/agents",
            &json!({
                "name": "editor",
                "type": "llm",
                "description": "first",
                "config": { "model": "a" }
            }),
        )
        .await?;
    let id = id_of(&created)?;
    let path = format!("/api/v1/agents/{id}");

    let (status, _, body) = app
        .patch_json(&path, &json!({ "status": "archived" }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "archived");
    for unchanged in ["name", "type", "description", "config", "created_at"] {
        assert_eq!(
            body[unchanged], created[unchanged],
            "{unchanged} must not change"
        );
    }

    let (status, _, body) = app
        .patch_json(
            &path,
            &json!({ "config": { "model": "b" }, "type": "chat" }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["config"], json!({ "model": "b" }));
    assert_eq!(body["type"], "chat");
    assert_eq!(body["description"], "first");
    assert_eq!(body["status"], "archived");

    // `null` clears the description; an absent description is left alone.
    let (status, _, body) = app
        .patch_json(&path, &json!({ "description": null }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["name"], "editor");

    let (status, _, body) = app
        .patch_json(&path, &json!({ "name": "editor-2" }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "editor-2");
    assert_eq!(body["description"], Value::Null);

    // The change is stored, not only echoed.
    let (_, _, fetched) = app.get(&path).await?;
    assert_eq!(fetched, body);
    Ok(())
}

#[tokio::test]
async fn patch_errors() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = app.agent("one").await?;
    app.agent("two").await?;
    let path = format!("/api/v1/agents/{id}");

    let resp = app.patch_json(&path, &json!({ "name": "two" })).await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(body["name"], "one", "a refused rename changes nothing");

    let resp = app
        .patch_json("/api/v1/agents/999", &json!({ "name": "x" }))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let resp = app
        .patch_json(&path, &json!({ "status": "retired" }))
        .await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.patch_json(&path, &json!({ "config": [1, 2] })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.patch_json(&path, &json!({ "name": "" })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.patch_json(&path, &json!({ "colour": "red" })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let resp = app
        .raw(
            Method::PATCH,
            &path,
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    Ok(())
}

#[tokio::test]
async fn delete_then_get_is_404() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = app.agent("doomed").await?;
    let keep = app.agent("kept").await?;
    let path = format!("/api/v1/agents/{id}");

    let (status, _, body) = app.delete(&path).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null, "204 has no body");

    let resp = app.get(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.delete(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let (_, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(field_of_items(&body, "id")?, [json!(keep)]);
    assert_eq!(total(&body)?, 1);
    Ok(())
}

#[tokio::test]
async fn duplicate_name_is_409() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.agent("twin").await?;
    let resp = app
        .post_json(
            "/api/v1/agents",
            &json!({ "name": "twin", "type": "other" }),
        )
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let (_, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(total(&body)?, 1, "the refused agent is not stored");
    Ok(())
}

#[tokio::test]
async fn invalid_bodies_are_422() -> anyhow::Result<()> {
    let app = test_app().await?;
    let cases = [
        ("missing type", json!({ "name": "a" })),
        ("missing name", json!({ "type": "a" })),
        ("name is a number", json!({ "name": 5, "type": "a" })),
        (
            "unknown field",
            json!({ "name": "a", "type": "a", "colour": "red" }),
        ),
        (
            "unknown status",
            json!({ "name": "a", "type": "a", "status": "retired" }),
        ),
        (
            "config is an array",
            json!({ "name": "a", "type": "a", "config": [1] }),
        ),
        (
            "config is a string",
            json!({ "name": "a", "type": "a", "config": "{}" }),
        ),
        ("empty name", json!({ "name": "", "type": "a" })),
        ("blank name", json!({ "name": "   ", "type": "a" })),
        ("empty type", json!({ "name": "a", "type": "" })),
        (
            "name of 129 characters",
            json!({ "name": "n".repeat(129), "type": "a" }),
        ),
        (
            "type of 65 characters",
            json!({ "name": "a", "type": "t".repeat(65) }),
        ),
        ("body is an array", json!([])),
    ];
    for (case, body) in cases {
        let resp = app.post_json("/api/v1/agents", &body).await?;
        assert_eq!(
            resp.0,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}: {}",
            resp.2
        );
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let (_, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(total(&body)?, 0, "nothing invalid was stored");

    // 128 characters is the limit, not beyond it.
    app.create(
        "/api/v1/agents",
        &json!({ "name": "n".repeat(128), "type": "a" }),
    )
    .await?;
    Ok(())
}

/// Asserts that `resp` is the 422 refusing a body that is `kind` instead of an object.
#[track_caller]
fn assert_not_an_object(resp: &common::Resp, kind: &str) {
    assert_error(resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    assert_eq!(
        error_message(&resp.2),
        format!("invalid request body: expected a JSON object, got {kind}")
    );
}

/// Bodies that are JSON but not an object, and the name of their type. serde's derived
/// deserializers would take the first ones for a struct, fields filled by position.
const NOT_OBJECTS: [(&str, &str); 7] = [
    (r#"["seqagent", "x"]"#, "an array"),
    (r#" ["seqagent", "x", null, null, "active"]"#, "an array"),
    ("[]", "an array"),
    (r#""seqagent""#, "a string"),
    ("42", "a number"),
    ("true", "a boolean"),
    ("null", "null"),
];

#[tokio::test]
async fn a_body_that_is_not_an_object_is_422_and_changes_nothing() -> anyhow::Result<()> {
    let app = test_app().await?;
    let json_type = [("content-type", "application/json")];
    for (body, kind) in NOT_OBJECTS {
        let resp = app
            .raw(Method::POST, "/api/v1/agents", &json_type, body)
            .await?;
        assert_not_an_object(&resp, kind);
    }
    let (_, _, listing) = app.get("/api/v1/agents").await?;
    assert_eq!(total(&listing)?, 0, "no agent was created: {listing}");

    let id = app.agent("kept").await?;
    let path = format!("/api/v1/agents/{id}");
    let (_, _, before) = app.get(&path).await?;
    for (body, kind) in NOT_OBJECTS.iter().chain(&[(r#"["renamed"]"#, "an array")]) {
        let resp = app.raw(Method::PATCH, &path, &json_type, *body).await?;
        assert_not_an_object(&resp, kind);
    }
    let (_, _, after) = app.get(&path).await?;
    assert_eq!(after, before, "no patch was applied");

    // Malformed JSON is still 400, whatever its first character; an empty object is fine.
    for body in ["[bad", r#"["seqagent", "#, "tru", ""] {
        let resp = app
            .raw(Method::POST, "/api/v1/agents", &json_type, body)
            .await?;
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            error_message(&resp.2).starts_with("malformed JSON: "),
            "{body:?}: {}",
            resp.2
        );
    }
    // The content type is still required, checked first.
    let resp = app
        .raw(Method::POST, "/api/v1/agents", &[], r#"["seqagent", "x"]"#)
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        error_message(&resp.2),
        "expected a JSON body with `Content-Type: application/json`"
    );
    let (status, _, body) = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &[(
                "content-type",
                "application/vnd.groundwork+json; charset=utf-8",
            )],
            r#"{"name": "suffixed", "type": "x"}"#,
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = app.raw(Method::PATCH, &path, &json_type, "{}").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

#[tokio::test]
async fn other_routes_refuse_a_body_that_is_not_an_object() -> anyhow::Result<()> {
    let app = test_app().await?;
    let json_type = [("content-type", "application/json")];
    // `ApiJson`: POST /tools.
    for (body, kind) in [
        (r#"["seqtool", "http"]"#, "an array"),
        ("\"t\"", "a string"),
    ] {
        let resp = app
            .raw(Method::POST, "/api/v1/tools", &json_type, body)
            .await?;
        assert_not_an_object(&resp, kind);
    }
    let (_, _, listing) = app.get("/api/v1/tools").await?;
    assert_eq!(total(&listing)?, 0, "no tool was created: {listing}");

    // `OptionalJson`: attaching a tool, whose body may be left out.
    let agent = app.agent("holder").await?;
    let tool = app.tool("hammer", json!({})).await?;
    let attach = format!("/api/v1/agents/{agent}/tools/{tool}");
    for (body, kind) in [(r#"[{"x": 1}]"#, "an array"), ("1", "a number")] {
        let resp = app.raw(Method::PUT, &attach, &json_type, body).await?;
        assert_not_an_object(&resp, kind);
    }
    let (_, _, tools) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(items(&tools)?, Vec::<Value>::new(), "nothing was attached");
    let (status, _, body) = app.raw(Method::PUT, &attach, &[], "").await?;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an empty body still attaches: {body}"
    );
    Ok(())
}

#[tokio::test]
async fn malformed_requests_are_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    let json_type = [("content-type", "application/json")];

    let resp = app
        .raw(Method::POST, "/api/v1/agents", &json_type, "{bad")
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &json_type,
            "{\"name\": \"a\", ",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    // Valid JSON, but no Content-Type.
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &[],
            r#"{"name": "a", "type": "b"}"#,
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    // Valid JSON, wrong Content-Type.
    let resp = app
        .raw(
            Method::POST,
            "/api/v1/agents",
            &[("content-type", "text/plain")],
            r#"{"name": "a", "type": "b"}"#,
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    let (_, _, body) = app.get("/api/v1/agents").await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn patch_cannot_null_a_required_field() -> anyhow::Result<()> {
    let app = test_app().await?;
    let id = app.agent("nullable-check").await?;
    for field in ["name", "type", "status", "config"] {
        let resp = app
            .patch_json(&format!("/api/v1/agents/{id}"), &json!({ field: null }))
            .await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let (status, _, body) = app.get(&format!("/api/v1/agents/{id}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["name"], "nullable-check",
        "a refused patch changes nothing"
    );
    assert_eq!(body["status"], "active");
    Ok(())
}
