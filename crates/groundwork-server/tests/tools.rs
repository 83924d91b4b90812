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

/// An agent with `active` active tools named `tool-00`, `tool-01`, ... attached, plus one
/// inactive tool and one tool whose attachment is inactive (neither is listed). Returns the
/// agent's id.
async fn agent_with_tools(app: &TestApp, active: usize) -> anyhow::Result<i64> {
    let agent = app.agent("pager").await?;
    for n in 0..active {
        let tool = app.tool(&format!("tool-{n:02}"), json!({ "n": n })).await?;
        let (status, _, body) = app
            .put_json(&format!("/api/v1/agents/{agent}/tools/{tool}"), &json!({}))
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "attach: {status} {body}");
    }
    let inactive = id_of(
        &app.create(
            "/api/v1/tools",
            &json!({ "name": "zz-inactive", "type": "http", "is_active": false }),
        )
        .await?,
    )?;
    let detached = app.tool("zz-detached", json!({})).await?;
    for (tool, attachment) in [
        (inactive, json!({})),
        (detached, json!({ "is_active": false })),
    ] {
        let (status, _, body) = app
            .put_json(&format!("/api/v1/agents/{agent}/tools/{tool}"), &attachment)
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "attach: {status} {body}");
    }
    Ok(agent)
}

#[tokio::test]
async fn agent_tools_take_limit_and_offset() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = agent_with_tools(&app, 7).await?;
    let path = format!("/api/v1/agents/{agent}/tools");
    let expected: Vec<String> = (0..7).map(|n| format!("tool-{n:02}")).collect();

    let (status, _, body) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(names(&body)?, expected);
    assert_eq!(total(&body)?, 7);

    for (query, range) in [
        ("limit=3", 0..3),
        ("limit=3&offset=3", 3..6),
        ("offset=3&limit=3", 3..6),
        ("offset=6", 6..7),
        ("limit=3&offset=5", 5..7),
        ("offset=7", 7..7),
        ("offset=100000", 7..7),
        ("limit=1&offset=0", 0..1),
        ("limit=500", 0..7),
        ("limit=7&offset=0", 0..7),
        ("offset=0", 0..7),
    ] {
        let (status, headers, body) = app.get(&format!("{path}?{query}")).await?;
        assert_eq!(status, StatusCode::OK, "?{query}: {body}");
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "?{query}"
        );
        assert_eq!(names(&body)?, expected[range], "?{query}: {body}");
        assert_eq!(total(&body)?, 7, "?{query}: total counts every active tool");
    }

    // A page holds the same documents the whole list does.
    let (_, _, whole) = app.get(&path).await?;
    let (_, _, page) = app.get(&format!("{path}?limit=2&offset=1")).await?;
    assert_eq!(items(&page)?, items(&whole)?[1..3]);
    Ok(())
}

#[tokio::test]
async fn agent_tools_default_page_is_fifty() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = agent_with_tools(&app, 53).await?;
    let path = format!("/api/v1/agents/{agent}/tools");
    let (status, _, body) = app.get(&path).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = names(&body)?;
    assert_eq!(listed.len(), 50);
    assert_eq!(listed[49], "tool-49");
    assert_eq!(total(&body)?, 53);
    let (_, _, body) = app.get(&format!("{path}?offset=50")).await?;
    assert_eq!(names(&body)?, ["tool-50", "tool-51", "tool-52"]);
    assert_eq!(total(&body)?, 53);
    let (_, _, body) = app.get(&format!("{path}?limit=500")).await?;
    assert_eq!(names(&body)?.len(), 53);
    Ok(())
}

#[tokio::test]
async fn agent_tools_bad_paging_is_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = agent_with_tools(&app, 2).await?;
    for query in [
        "limit=9999",
        "limit=501",
        "limit=0",
        "limit=-1",
        "limit=abc",
        "offset=-1",
        "offset=x",
        "limit=%00",
    ] {
        for id in [agent, 999_999] {
            let resp = app
                .get(&format!("/api/v1/agents/{id}/tools?{query}"))
                .await?;
            assert_eq!(resp.0, StatusCode::BAD_REQUEST, "?{query}: {}", resp.2);
            assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
        }
    }
    let resp = app.get("/api/v1/agents/999999/tools?limit=2").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app.get("/api/v1/agents/abc/tools?limit=2").await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    Ok(())
}

/// Runs `sql` on a connection of its own to the test app's SQLite file.
async fn sqlite_execute(app: &TestApp, sql: &'static str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}/t.db", app.dir.path().display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await?;
    sqlx::query(sql).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// A tool update learns which agents it reaches inside its own transaction: when that read
/// fails, nothing is committed, so no change can be left behind stale cached documents.
/// (It used to be read after the commit, where a failure left the write made and the
/// caches holding the old value.)
#[tokio::test]
async fn patch_commits_nothing_when_the_agents_it_reaches_cannot_be_read() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("reader").await?;
    let tool = app.tool("fetch", json!({ "v": 1 })).await?;
    let (status, _, body) = app
        .put_json(&format!("/api/v1/agents/{agent}/tools/{tool}"), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let tools_path = format!("/api/v1/agents/{agent}/tools");
    let runtime_path = format!("/api/v1/agents/{agent}/runtime");
    let (_, _, body) = app.get(&tools_path).await?;
    assert_eq!(field_of_items(&body, "config")?, [json!({ "v": 1 })]);
    let (status, _, runtime) = app.get(&runtime_path).await?;
    assert_eq!(status, StatusCode::OK, "{runtime}");

    // The tool row itself can be written; the question "which agents use it" cannot.
    sqlite_execute(&app, "ALTER TABLE agent_tools RENAME TO agent_tools_away").await?;
    let (status, _, body) = app
        .patch_json(
            &format!("/api/v1/tools/{tool}"),
            &json!({ "config": { "v": 2 } }),
        )
        .await?;
    sqlite_execute(&app, "ALTER TABLE agent_tools_away RENAME TO agent_tools").await?;
    assert!(
        status.is_server_error(),
        "the update could not learn whom it reaches: {status} {body}"
    );
    let (status, _, stored) = app.get(&format!("/api/v1/tools/{tool}")).await?;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(
        stored["config"],
        json!({ "v": 1 }),
        "the failed update was committed"
    );
    let (_, _, body) = app.get(&tools_path).await?;
    assert_eq!(field_of_items(&body, "config")?, [json!({ "v": 1 })]);

    // Once the read works again, the same update commits and reaches the cached documents.
    let (status, _, body) = app
        .patch_json(
            &format!("/api/v1/tools/{tool}"),
            &json!({ "config": { "v": 2 } }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, body) = app.get(&tools_path).await?;
    assert_eq!(
        field_of_items(&body, "config")?,
        [json!({ "v": 2 })],
        "served stale after the update"
    );
    let (_, _, runtime) = app.get(&runtime_path).await?;
    assert_eq!(
        runtime["tools"][0]["config"],
        json!({ "v": 2 }),
        "runtime served stale after the update: {runtime}"
    );
    Ok(())
}

/// The ordinary path: a tool update reaches the cached documents of every agent using it,
/// and only theirs.
#[tokio::test]
async fn patch_invalidates_the_agents_using_the_tool() -> anyhow::Result<()> {
    let app = test_app().await?;
    let users = [app.agent("one").await?, app.agent("two").await?];
    let bystander = app.agent("three").await?;
    let shared = app.tool("shared", json!({ "v": 1 })).await?;
    let own = app.tool("own", json!({ "v": 1 })).await?;
    for agent in users {
        app.put_json(
            &format!("/api/v1/agents/{agent}/tools/{shared}"),
            &json!({}),
        )
        .await?;
    }
    app.put_json(
        &format!("/api/v1/agents/{bystander}/tools/{own}"),
        &json!({}),
    )
    .await?;
    for agent in users.iter().chain([&bystander]) {
        let (status, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _, body) = app
        .patch_json(
            &format!("/api/v1/tools/{shared}"),
            &json!({ "config": { "v": 2 }, "name": "shared-2" }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    for agent in users {
        let (_, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
        assert_eq!(names(&body)?, ["shared-2"]);
        assert_eq!(field_of_items(&body, "config")?, [json!({ "v": 2 })]);
    }
    let (_, _, body) = app
        .get(&format!("/api/v1/agents/{bystander}/tools"))
        .await?;
    assert_eq!(names(&body)?, ["own"]);
    Ok(())
}
