//! `/api/v1/workflows`: create, list, read, partial update, delete; names are unique; steps
//! are checked when written (the worker's parser: known types, their fields only, http(s)
//! webhook URLs, existing agents, unique step names) and refused with 422 naming the step;
//! a workflow stored without those checks, or whose agent was deleted, fails its execution
//! at once with the same kind of message.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{ServerProcess, assert_error, error_message, field_of_items, id_of, test_app, total};
use groundwork_db::{Database, DatabaseOptions, NewWorkflow};
use serde_json::{Value, json};

#[tokio::test]
async fn crud_round_trip() -> anyhow::Result<()> {
    let app = test_app().await?;
    let steps = json!([
        { "name": "fetch", "type": "webhook", "url": "https://example.com/fetch", "timeout_ms": 2000 },
        { "name": "summarise", "type": "echo" },
    ]);
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
        .patch_json(
            &path,
            &json!({ "steps": [{ "name": "only", "type": "echo" }] }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["steps"],
        json!([{ "name": "only", "type": "echo" }])
    );
    assert_eq!(patched["name"], "digest");
    assert_eq!(patched["description"], "daily digest");

    let (status, _, patched) = app
        .patch_json(&path, &json!({ "description": null }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(
        patched["steps"],
        json!([{ "name": "only", "type": "echo" }])
    );

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
        assert!(
            error_message(&resp.2).starts_with("steps must be a JSON array, got "),
            "{steps}: {}",
            resp.2
        );
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

/// Steps the API refuses, each with the start of the message it answers: the step (position,
/// and name when it has one) and the problem. Agent 999 does not exist.
fn invalid_steps() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!([{ "type": "nope" }]),
            "step 1: unknown step type \"nope\" (echo, webhook, agent, fail)",
        ),
        (
            json!([1, 2]),
            "step 1: a step must be a JSON object, got a number",
        ),
        (
            json!([{ "value": 1 }]),
            "step 1: the step has no type (echo, webhook, agent, fail)",
        ),
        (
            json!([{ "type": "webhook" }]),
            "step 1: a webhook step needs a url",
        ),
        (
            json!([{ "type": "webhook", "url": "not a url" }]),
            "step 1: webhook url \"not a url\" is not a valid URL",
        ),
        (
            json!([
                { "type": "echo" },
                { "type": "webhook", "name": "notify", "url": "file:///etc/passwd" },
            ]),
            "step 2 (\"notify\"): webhook url \"file:///etc/passwd\" must be http or https",
        ),
        (
            json!([{ "type": "agent" }]),
            "step 1: an agent step needs an agent_id",
        ),
        (
            json!([{ "type": "agent", "agent_id": 999 }]),
            "step 1: agent 999 does not exist",
        ),
        (
            json!([
                { "type": "echo", "name": "first" },
                { "type": "agent", "name": "think", "agent_id": 999 },
            ]),
            "step 2 (\"think\"): agent 999 does not exist",
        ),
        (
            json!([{ "type": "webhook", "url": "http://example.com/hook", "timeout_ms": -5 }]),
            "step 1: timeout_ms must be a whole number of milliseconds from 1 to 900000, got -5",
        ),
        (
            json!([{ "type": "echo", "name": "a" }, { "type": "echo", "name": "a" }]),
            "step 2 (\"a\"): the name \"a\" is already taken by step 1",
        ),
        (
            json!([{ "type": "echo", "name": "e", "retries": 2 }]),
            "step 1 (\"e\"): unknown field \"retries\" (an echo step takes name, type, value)",
        ),
        (
            json!([{ "type": "webhook", "url": "https://example.com/", "agent_id": 1 }]),
            "step 1: unknown field \"agent_id\" (a webhook step takes name, type, url, timeout_ms)",
        ),
    ]
}

/// One step of each type, all valid (`agent` is an existing agent's id).
fn valid_steps(agent: i64, hook: &str) -> Value {
    json!([
        { "name": "greet", "type": "echo", "value": { "hi": "there" } },
        { "type": "echo" },
        { "name": "hook", "type": "webhook", "url": hook, "timeout_ms": 1500 },
        { "type": "webhook", "url": "https://example.com/hook" },
        { "name": "think", "type": "agent", "agent_id": agent },
        { "type": "fail", "message": "boom", "retryable": false },
        { "type": "fail" },
    ])
}

#[tokio::test]
async fn invalid_steps_are_refused_on_create() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.agent("helper").await?;
    for (steps, expected) in invalid_steps() {
        let resp = app
            .post_json("/api/v1/workflows", &json!({ "name": "w", "steps": steps }))
            .await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        let message = error_message(&resp.2);
        assert!(
            message.starts_with(expected),
            "{steps}: {message:?} should start with {expected:?}"
        );
    }
    let (_, _, body) = app.get("/api/v1/workflows").await?;
    assert_eq!(total(&body)?, 0, "nothing was stored: {body}");
    Ok(())
}

#[tokio::test]
async fn invalid_steps_are_refused_on_patch() -> anyhow::Result<()> {
    let app = test_app().await?;
    let steps = json!([{ "name": "greet", "type": "echo", "value": 1 }]);
    let id = id_of(
        &app.create("/api/v1/workflows", &json!({ "name": "w", "steps": steps }))
            .await?,
    )?;
    let path = format!("/api/v1/workflows/{id}");
    for (bad, expected) in invalid_steps() {
        let resp = app
            .patch_json(&path, &json!({ "name": "renamed", "steps": bad }))
            .await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
        let message = error_message(&resp.2);
        assert!(
            message.starts_with(expected),
            "{bad}: {message:?} should start with {expected:?}"
        );
    }
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(body["steps"], steps, "a refused patch changes nothing");
    assert_eq!(body["name"], "w", "a refused patch changes nothing");
    // A patch without steps is not checked against the stored ones.
    let (status, _, body) = app
        .patch_json(&path, &json!({ "description": "d" }))
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(())
}

#[tokio::test]
async fn valid_steps_are_accepted() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("helper").await?;
    let steps = valid_steps(agent, "http://127.0.0.1:9/hook");
    let created = app
        .create(
            "/api/v1/workflows",
            &json!({ "name": "all", "steps": steps }),
        )
        .await?;
    assert_eq!(created["steps"], steps, "stored as given");
    // The README's walk-through, exactly as written there.
    app.create(
        "/api/v1/workflows",
        &json!({"name": "hello", "steps": [{"name": "greet", "type": "echo", "value": {"hi": "there"}}]}),
    )
    .await?;
    // `null` optional fields are absent ones; `null` is an echo step's value like any other.
    app.create(
        "/api/v1/workflows",
        &json!({ "name": "nulls", "steps": [
            { "type": "echo", "name": null, "value": null },
            { "type": "webhook", "url": "https://example.com/", "timeout_ms": null },
            { "type": "fail", "message": null, "retryable": null },
        ] }),
    )
    .await?;
    let id = id_of(
        &app.create("/api/v1/workflows", &json!({ "name": "later" }))
            .await?,
    )?;
    let (status, _, patched) = app
        .patch_json(
            &format!("/api/v1/workflows/{id}"),
            &json!({ "steps": steps }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["steps"], steps);
    Ok(())
}

// -------------------------------------------------------------------------------------------
// The worker's own check, through the real binary: what the API no longer accepts but the
// database may hold fails the execution at once, with a message naming the step.
// -------------------------------------------------------------------------------------------

/// A server over the SQLite file `dir/t.db`, with its workers; and that database, opened by
/// the test beside it.
async fn server_and_db(
    label: &str,
    dir: &tempfile::TempDir,
) -> anyhow::Result<(ServerProcess, Database)> {
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let mut server = ServerProcess::spawn(label, &[("GROUNDWORK_DATABASE_URL", url.as_str())])?;
    server.wait_ready(Duration::from_secs(30)).await?;
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    Ok((server, db))
}

/// Queues an execution of `workflow` and waits until it is `failed`; returns it.
async fn failed_execution(server: &ServerProcess, workflow: i64) -> anyhow::Result<Value> {
    let queued = server
        .expect(
            Method::POST,
            &format!("/api/v1/workflows/{workflow}/executions"),
            None,
            StatusCode::ACCEPTED,
        )
        .await?;
    let path = format!("/api/v1/executions/{}", id_of(&queued)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = server
            .expect(Method::GET, &path, None, StatusCode::OK)
            .await?;
        match body["status"].as_str() {
            Some("failed") => return Ok(body),
            Some("completed") => anyhow::bail!("{path} completed: {body}"),
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{path} not failed after 20 s: {body}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_invalid_workflow_fails_its_execution_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, db) = server_and_db("stored-invalid", &dir).await?;
    // Written past the API, as workflows were before it checked steps.
    let cases = [
        (
            json!([{ "type": "echo" }, { "type": "nope" }]),
            "step 2: unknown step type \"nope\" (echo, webhook, agent, fail)",
        ),
        (
            json!([{ "type": "webhook", "name": "notify", "url": "file:///etc/passwd" }]),
            "step 1 (\"notify\"): webhook url \"file:///etc/passwd\" must be http or https",
        ),
        (
            json!([{ "type": "echo", "retries": 2 }]),
            "step 1: unknown field \"retries\"",
        ),
    ];
    for (i, (steps, expected)) in cases.into_iter().enumerate() {
        let workflow = db
            .workflows()
            .create(
                "test",
                &NewWorkflow {
                    name: format!("legacy-{i}"),
                    description: None,
                    steps: steps.clone(),
                },
            )
            .await?;
        let failed = failed_execution(&server, workflow.id).await?;
        assert_eq!(failed["attempts"], 1, "not retried: {failed}");
        assert!(
            failed["error"]
                .as_str()
                .is_some_and(|e| e.starts_with(expected)),
            "{steps}: {failed}"
        );
        assert_eq!(failed["checkpoints"], json!([]), "no step ran: {failed}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_deleted_after_the_check_fails_the_execution_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (server, _db) = server_and_db("deleted-agent", &dir).await?;
    let agent = id_of(
        &server
            .expect(
                Method::POST,
                "/api/v1/agents",
                Some(&json!({ "name": "gone", "type": "worker" })),
                StatusCode::CREATED,
            )
            .await?,
    )?;
    let workflow = id_of(
        &server
            .expect(
                Method::POST,
                "/api/v1/workflows",
                Some(&json!({ "name": "w", "steps": [
                    { "name": "first", "type": "echo" },
                    { "name": "think", "type": "agent", "agent_id": agent },
                ] })),
                StatusCode::CREATED,
            )
            .await?,
    )?;
    server
        .expect(
            Method::DELETE,
            &format!("/api/v1/agents/{agent}"),
            None,
            StatusCode::NO_CONTENT,
        )
        .await?;
    let failed = failed_execution(&server, workflow).await?;
    assert_eq!(failed["attempts"], 1, "not retried: {failed}");
    assert_eq!(
        failed["error"],
        format!("step think: agent {agent} does not exist"),
        "{failed}"
    );
    Ok(())
}
