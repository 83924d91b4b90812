//! The cached read routes `GET /api/v1/agents/{id}/tools` and `GET /api/v1/agents/{id}/runtime`
//! through the router: the documents they serve, invalidation by every write before the write
//! answers (read → write → read shows the change at once), the `/api/v1/cache` statistics and
//! control routes (invalidate, warm, both audited) and the cache counters in `/metrics`.
//!
//! The application of `common::test_app` has unstarted caches: they fill on the first miss.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, assert_error, id_of, items, test_app, total};
use serde_json::{Value, json};

/// `GET path`, insisting on 200; the body.
async fn ok(app: &TestApp, path: &str) -> anyhow::Result<Value> {
    let (status, _, body) = app.get(path).await?;
    anyhow::ensure!(status == StatusCode::OK, "GET {path}: {status} {body}");
    Ok(body)
}

/// The agent's tools listing (checked to be a listing whose total is its length).
async fn tools_doc(app: &TestApp, agent: i64) -> anyhow::Result<Value> {
    let body = ok(app, &format!("/api/v1/agents/{agent}/tools")).await?;
    let listed = items(&body)?;
    anyhow::ensure!(
        usize::try_from(total(&body)?).ok() == Some(listed.len()),
        "total is not the number of items: {body}"
    );
    Ok(body)
}

/// The agent's runtime document, checked to have exactly `agent`, `prompt` and `tools`.
async fn runtime_doc(app: &TestApp, agent: i64) -> anyhow::Result<Value> {
    let body = ok(app, &format!("/api/v1/agents/{agent}/runtime")).await?;
    let mut keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    anyhow::ensure!(
        keys == ["agent", "prompt", "tools"],
        "runtime keys {keys:?}: {body}"
    );
    anyhow::ensure!(body["tools"].is_array(), "runtime tools: {body}");
    Ok(body)
}

/// The `name` of each JSON object in `list`.
fn names(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|v| v["name"].as_str().unwrap_or("<no name>").to_owned())
        .collect()
}

/// The names of the agent's tools, checking that both cached documents agree on the tools.
async fn tool_names(app: &TestApp, agent: i64) -> anyhow::Result<Vec<String>> {
    let tools = items(&tools_doc(app, agent).await?)?;
    let runtime = runtime_doc(app, agent).await?;
    let runtime_tools = runtime["tools"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        runtime_tools == tools,
        "runtime tools {runtime_tools:?} differ from the tools listing {tools:?}"
    );
    Ok(names(&tools))
}

/// The id of the agent's runtime prompt (`None` when the runtime has none).
async fn runtime_prompt(app: &TestApp, agent: i64) -> anyhow::Result<Option<i64>> {
    let runtime = runtime_doc(app, agent).await?;
    Ok(runtime["prompt"]["id"].as_i64())
}

/// Creates an agent of type `kind` and returns its id.
async fn agent_of_type(app: &TestApp, name: &str, kind: &str) -> anyhow::Result<i64> {
    id_of(
        &app.create("/api/v1/agents", &json!({ "name": name, "type": kind }))
            .await?,
    )
}

/// Creates a prompt and returns its id.
async fn prompt(app: &TestApp, name: &str, agent_type: &str, active: bool) -> anyhow::Result<i64> {
    id_of(
        &app.create(
            "/api/v1/prompts",
            &json!({
                "name": name,
                "content": format!("content of {name}"),
                "agent_type": agent_type,
                "is_active": active,
            }),
        )
        .await?,
    )
}

/// `PUT /agents/{agent}/tools/{tool}` with `body` (none: no body), insisting on 200 or 201.
async fn attach(app: &TestApp, agent: i64, tool: i64, body: Option<Value>) -> anyhow::Result<()> {
    let path = format!("/api/v1/agents/{agent}/tools/{tool}");
    let (status, _, answer) = match body {
        Some(body) => app.put_json(&path, &body).await?,
        None => app.raw(Method::PUT, &path, &[], "").await?,
    };
    anyhow::ensure!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "PUT {path}: {status} {answer}"
    );
    Ok(())
}

/// `PATCH path` with `body`, insisting on 200; the body.
async fn patch(app: &TestApp, path: &str, body: &Value) -> anyhow::Result<Value> {
    let (status, _, answer) = app.patch_json(path, body).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "PATCH {path} {body}: {status} {answer}"
    );
    Ok(answer)
}

/// `DELETE path`, insisting on 204.
async fn delete(app: &TestApp, path: &str) -> anyhow::Result<()> {
    let (status, _, answer) = app.delete(path).await?;
    anyhow::ensure!(
        status == StatusCode::NO_CONTENT,
        "DELETE {path}: {status} {answer}"
    );
    Ok(())
}

/// The `/api/v1/cache` figures of cache `name`.
async fn cache_view(app: &TestApp, name: &str) -> anyhow::Result<Value> {
    let body = ok(app, "/api/v1/cache").await?;
    items(&body)?
        .into_iter()
        .find(|c| c["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("no cache {name} in {body}"))
}

/// One counter of cache `name`.
async fn figure(app: &TestApp, name: &str, field: &str) -> anyhow::Result<u64> {
    let view = cache_view(app, name).await?;
    view[field]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("{field} of {name} is not a count: {view}"))
}

/// `POST /api/v1/cache/{name}/{action}` with `body`.
async fn control(
    app: &TestApp,
    name: &str,
    action: &str,
    body: &Value,
) -> anyhow::Result<common::Resp> {
    app.post_json(&format!("/api/v1/cache/{name}/{action}"), body)
        .await
}

#[tokio::test]
async fn tools_and_runtime_serve_the_agents_documents() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = agent_of_type(&app, "a", "worker").await?;
    let bare = agent_of_type(&app, "bare", "loner").await?;
    let other = agent_of_type(&app, "other", "worker").await?;
    let zeta = app
        .tool("zeta", json!({ "url": "z", "retries": 1 }))
        .await?;
    let alpha = app.tool("alpha", json!({ "url": "a" })).await?;
    let off = app.tool("off", json!({})).await?;
    let paused = app.tool("paused", json!({})).await?;
    let elsewhere = app.tool("elsewhere", json!({})).await?;
    attach(
        &app,
        agent,
        zeta,
        Some(json!({ "config_override": { "retries": 3 } })),
    )
    .await?;
    attach(&app, agent, alpha, None).await?;
    attach(&app, agent, off, None).await?;
    attach(&app, agent, paused, Some(json!({ "is_active": false }))).await?;
    attach(&app, other, elsewhere, None).await?;
    patch(
        &app,
        &format!("/api/v1/tools/{off}"),
        &json!({ "is_active": false }),
    )
    .await?;
    let older = prompt(&app, "older", "worker", true).await?;
    let newest = prompt(&app, "newest", "worker", true).await?;
    prompt(&app, "inactive", "worker", false).await?;
    prompt(&app, "for-reviewers", "reviewer", true).await?;

    // Tools: only active tools with an active attachment, by name, with the merged config.
    let tools = tools_doc(&app, agent).await?;
    let listed = items(&tools)?;
    assert_eq!(names(&listed), ["alpha", "zeta"], "{tools}");
    assert_eq!(total(&tools)?, 2);
    assert_eq!(listed[1]["id"], zeta);
    assert_eq!(listed[1]["type"], "http");
    assert_eq!(listed[1]["config"], json!({ "url": "z", "retries": 1 }));
    assert_eq!(listed[1]["config_override"], json!({ "retries": 3 }));
    assert_eq!(
        listed[1]["effective_config"],
        json!({ "url": "z", "retries": 3 })
    );
    assert_eq!(listed[0]["config_override"], Value::Null);
    assert_eq!(listed[0]["effective_config"], json!({ "url": "a" }));

    // Runtime: the agent as GET /agents/{id} shows it, the newest active prompt of its type,
    // and the same tools.
    let runtime = runtime_doc(&app, agent).await?;
    assert_eq!(
        runtime["agent"],
        ok(&app, &format!("/api/v1/agents/{agent}")).await?
    );
    assert_ne!(older, newest);
    assert_eq!(
        runtime["prompt"],
        ok(&app, &format!("/api/v1/prompts/{newest}")).await?
    );
    assert_eq!(runtime["tools"], tools["items"]);
    assert_eq!(tool_names(&app, other).await?, ["elsewhere"]);

    // An agent whose type has no prompt and that has no tools.
    assert_eq!(
        tools_doc(&app, bare).await?,
        json!({ "items": [], "total": 0 })
    );
    let runtime = runtime_doc(&app, bare).await?;
    assert_eq!(runtime["prompt"], Value::Null);
    assert_eq!(runtime["tools"], json!([]));
    assert_eq!(runtime["agent"]["type"], "loner");

    // Served from the cache, the same again.
    assert_eq!(tools_doc(&app, agent).await?, tools);

    // Unknown agent: 404 in the error shape, twice (the absence is remembered).
    for _ in 0..2 {
        for path in ["/api/v1/agents/999/tools", "/api/v1/agents/999/runtime"] {
            assert_error(&app.get(path).await?, StatusCode::NOT_FOUND, "not_found");
        }
    }
    Ok(())
}

#[tokio::test]
async fn attachment_writes_are_served_at_once() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let hammer = app.tool("hammer", json!({ "weight": 1 })).await?;
    let saw = app.tool("saw", json!({})).await?;
    assert!(tool_names(&app, agent).await?.is_empty());

    attach(&app, agent, hammer, None).await?;
    assert_eq!(tool_names(&app, agent).await?, ["hammer"], "after attach");
    attach(&app, agent, saw, None).await?;
    assert_eq!(tool_names(&app, agent).await?, ["hammer", "saw"]);

    attach(&app, agent, hammer, Some(json!({ "is_active": false }))).await?;
    assert_eq!(
        tool_names(&app, agent).await?,
        ["saw"],
        "after the attachment was made inactive"
    );
    attach(
        &app,
        agent,
        hammer,
        Some(json!({ "is_active": true, "config_override": { "weight": 2 } })),
    )
    .await?;
    assert_eq!(tool_names(&app, agent).await?, ["hammer", "saw"]);
    let tools = items(&tools_doc(&app, agent).await?)?;
    assert_eq!(
        tools[0]["effective_config"],
        json!({ "weight": 2 }),
        "a changed override is served at once"
    );

    let (status, _, body) = app
        .delete(&format!("/api/v1/agents/{agent}/tools/{saw}"))
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(tool_names(&app, agent).await?, ["hammer"], "after detach");
    Ok(())
}

#[tokio::test]
async fn tool_writes_are_served_at_once() -> anyhow::Result<()> {
    let app = test_app().await?;
    let first = app.agent("first").await?;
    let second = app.agent("second").await?;
    let shared = app.tool("alpha", json!({ "v": 1 })).await?;
    let mid = app.tool("mid", json!({})).await?;
    for agent in [first, second] {
        attach(&app, agent, shared, None).await?;
        attach(&app, agent, mid, None).await?;
    }
    // Both agents, both documents cached.
    for agent in [first, second] {
        assert_eq!(tool_names(&app, agent).await?, ["alpha", "mid"]);
    }

    patch(
        &app,
        &format!("/api/v1/tools/{shared}"),
        &json!({ "name": "zulu" }),
    )
    .await?;
    for agent in [first, second] {
        assert_eq!(
            tool_names(&app, agent).await?,
            ["mid", "zulu"],
            "renamed, re-sorted"
        );
    }

    patch(
        &app,
        &format!("/api/v1/tools/{shared}"),
        &json!({ "config": { "v": 2 } }),
    )
    .await?;
    for agent in [first, second] {
        let tools = items(&tools_doc(&app, agent).await?)?;
        assert_eq!(tools[1]["config"], json!({ "v": 2 }), "config change");
        assert_eq!(tools[1]["effective_config"], json!({ "v": 2 }));
        let runtime = runtime_doc(&app, agent).await?;
        assert_eq!(runtime["tools"][1]["config"], json!({ "v": 2 }));
    }

    patch(
        &app,
        &format!("/api/v1/tools/{shared}"),
        &json!({ "is_active": false }),
    )
    .await?;
    for agent in [first, second] {
        assert_eq!(
            tool_names(&app, agent).await?,
            ["mid"],
            "an inactive tool disappears"
        );
    }
    patch(
        &app,
        &format!("/api/v1/tools/{shared}"),
        &json!({ "is_active": true }),
    )
    .await?;
    for agent in [first, second] {
        assert_eq!(
            tool_names(&app, agent).await?,
            ["mid", "zulu"],
            "active again, it reappears"
        );
    }

    delete(&app, &format!("/api/v1/tools/{mid}")).await?;
    for agent in [first, second] {
        assert_eq!(
            tool_names(&app, agent).await?,
            ["zulu"],
            "a deleted tool disappears"
        );
    }
    Ok(())
}

#[tokio::test]
async fn agent_writes_are_served_at_once() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = agent_of_type(&app, "a", "worker").await?;
    let tool = app.tool("t", json!({})).await?;
    attach(&app, agent, tool, None).await?;
    let for_workers = prompt(&app, "w", "worker", true).await?;
    let for_reviewers = prompt(&app, "r", "reviewer", true).await?;
    assert_eq!(runtime_prompt(&app, agent).await?, Some(for_workers));
    assert_eq!(tool_names(&app, agent).await?, ["t"]);

    patch(
        &app,
        &format!("/api/v1/agents/{agent}"),
        &json!({ "type": "reviewer" }),
    )
    .await?;
    assert_eq!(
        runtime_prompt(&app, agent).await?,
        Some(for_reviewers),
        "a type change brings the new type's prompt"
    );
    assert_eq!(runtime_doc(&app, agent).await?["agent"]["type"], "reviewer");

    patch(
        &app,
        &format!("/api/v1/agents/{agent}"),
        &json!({ "type": "nobody", "name": "renamed" }),
    )
    .await?;
    let runtime = runtime_doc(&app, agent).await?;
    assert_eq!(runtime["prompt"], Value::Null, "no prompt for this type");
    assert_eq!(runtime["agent"]["name"], "renamed");

    delete(&app, &format!("/api/v1/agents/{agent}")).await?;
    for path in [
        format!("/api/v1/agents/{agent}/tools"),
        format!("/api/v1/agents/{agent}/runtime"),
    ] {
        assert_error(&app.get(&path).await?, StatusCode::NOT_FOUND, "not_found");
    }
    Ok(())
}

#[tokio::test]
async fn agent_created_after_a_404_is_served() -> anyhow::Result<()> {
    let app = test_app().await?;
    let first = app.agent("first").await?;
    // Fill both caches, then ask for the id the next agent will get: 404, remembered.
    tool_names(&app, first).await?;
    let next = first + 1;
    for _ in 0..2 {
        for path in [
            format!("/api/v1/agents/{next}/tools"),
            format!("/api/v1/agents/{next}/runtime"),
        ] {
            assert_error(&app.get(&path).await?, StatusCode::NOT_FOUND, "not_found");
        }
    }

    let created = agent_of_type(&app, "second", "worker").await?;
    anyhow::ensure!(
        created == next,
        "SQLite gave id {created}, not the expected {next}"
    );
    assert_eq!(
        tools_doc(&app, next).await?,
        json!({ "items": [], "total": 0 }),
        "the remembered 404 must not outlive the creation"
    );
    let runtime = runtime_doc(&app, next).await?;
    assert_eq!(runtime["agent"]["id"], next);
    assert_eq!(runtime["agent"]["name"], "second");
    Ok(())
}

#[tokio::test]
async fn prompt_writes_are_served_at_once() -> anyhow::Result<()> {
    let app = test_app().await?;
    let worker = agent_of_type(&app, "w", "worker").await?;
    let reviewer = agent_of_type(&app, "r", "reviewer").await?;
    assert_eq!(runtime_prompt(&app, worker).await?, None);
    let older = prompt(&app, "older", "worker", true).await?;
    assert_eq!(
        runtime_prompt(&app, worker).await?,
        Some(older),
        "the first prompt of the type"
    );
    assert_eq!(runtime_prompt(&app, reviewer).await?, None);

    let newer = prompt(&app, "newer", "worker", true).await?;
    assert_eq!(
        runtime_prompt(&app, worker).await?,
        Some(newer),
        "a newer active prompt takes over"
    );
    prompt(&app, "draft", "worker", false).await?;
    assert_eq!(
        runtime_prompt(&app, worker).await?,
        Some(newer),
        "an inactive prompt does not"
    );

    patch(
        &app,
        &format!("/api/v1/prompts/{newer}"),
        &json!({ "content": "edited" }),
    )
    .await?;
    assert_eq!(
        runtime_doc(&app, worker).await?["prompt"]["content"],
        "edited",
        "an edit of the runtime prompt is served"
    );

    patch(
        &app,
        &format!("/api/v1/prompts/{newer}"),
        &json!({ "is_active": false }),
    )
    .await?;
    assert_eq!(
        runtime_prompt(&app, worker).await?,
        Some(older),
        "deactivated: back to the older prompt"
    );
    patch(
        &app,
        &format!("/api/v1/prompts/{newer}"),
        &json!({ "is_active": true }),
    )
    .await?;
    assert_eq!(runtime_prompt(&app, worker).await?, Some(newer));

    // Both runtimes cached, then the prompt moves from workers to reviewers.
    assert_eq!(runtime_prompt(&app, reviewer).await?, None);
    patch(
        &app,
        &format!("/api/v1/prompts/{newer}"),
        &json!({ "agent_type": "reviewer" }),
    )
    .await?;
    assert_eq!(
        runtime_prompt(&app, worker).await?,
        Some(older),
        "the prompt left the workers"
    );
    assert_eq!(
        runtime_prompt(&app, reviewer).await?,
        Some(newer),
        "the prompt reached the reviewers"
    );
    assert_eq!(
        runtime_doc(&app, reviewer).await?["prompt"]["agent_type"],
        "reviewer"
    );
    Ok(())
}

#[tokio::test]
async fn cache_list_has_figures_and_counts_hits() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let body = ok(&app, "/api/v1/cache").await?;
    let caches = items(&body)?;
    let mut listed = names(&caches);
    listed.sort_unstable();
    assert_eq!(listed, ["agent_runtime", "agent_tools"], "{body}");
    assert_eq!(total(&body)?, 2);
    for cache in &caches {
        for field in [
            "hits",
            "stale_hits",
            "misses",
            "loads",
            "load_failures",
            "refreshes",
            "refresh_failures",
            "evictions",
            "entries",
            "capacity",
            "consecutive_failures",
        ] {
            assert!(cache[field].is_u64(), "{field} is not a count: {cache}");
        }
        for field in ["hit_ratio", "load_time_ms"] {
            assert!(cache[field].is_number(), "{field} is not a number: {cache}");
        }
        assert!(cache["filled"].is_boolean(), "{cache}");
        assert!(
            cache["last_refresh_age_ms"].is_null() || cache["last_refresh_age_ms"].is_number(),
            "{cache}"
        );
        assert!(cache["capacity"].as_u64() > Some(0), "{cache}");
    }

    let path = format!("/api/v1/agents/{agent}/tools");
    ok(&app, &path).await?; // the first read fills the cache
    let (hits, misses) = (
        figure(&app, "agent_tools", "hits").await?,
        figure(&app, "agent_tools", "misses").await?,
    );
    for _ in 0..5 {
        ok(&app, &path).await?;
    }
    assert_eq!(figure(&app, "agent_tools", "hits").await?, hits + 5);
    assert_eq!(figure(&app, "agent_tools", "misses").await?, misses);
    let view = cache_view(&app, "agent_tools").await?;
    assert_eq!(view["filled"], true, "{view}");
    assert!(view["entries"].as_u64() >= Some(1), "{view}");
    assert!(view["hit_ratio"].as_f64() > Some(0.5), "{view}");
    assert!(view["last_refresh_age_ms"].is_number(), "{view}");
    Ok(())
}

#[tokio::test]
async fn invalidate_by_key_prefix_or_all() -> anyhow::Result<()> {
    let app = test_app().await?;
    let mut agents = Vec::new();
    for n in 0..11 {
        agents.push(app.agent(&format!("a{n}")).await?);
    }
    anyhow::ensure!(
        agents == (1..=11).collect::<Vec<i64>>(),
        "expected ids 1 to 11 on a fresh database, got {agents:?}"
    );
    // The first read fills the cache with every agent.
    ok(&app, "/api/v1/agents/2/tools").await?;
    assert_eq!(figure(&app, "agent_tools", "entries").await?, 11);

    let resp = control(&app, "agent_tools", "invalidate", &json!({ "prefix": "1" })).await?;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.2);
    assert_eq!(resp.2, json!({ "invalidated": 3 }), "keys 1, 10 and 11");
    assert_eq!(figure(&app, "agent_tools", "entries").await?, 8);
    let misses = figure(&app, "agent_tools", "misses").await?;
    ok(&app, "/api/v1/agents/2/tools").await?;
    assert_eq!(
        figure(&app, "agent_tools", "misses").await?,
        misses,
        "2 stays cached"
    );
    ok(&app, "/api/v1/agents/10/tools").await?;
    assert_eq!(
        figure(&app, "agent_tools", "misses").await?,
        misses + 1,
        "10 was dropped"
    );

    for key in [json!(1), json!("1")] {
        let resp = control(&app, "agent_tools", "invalidate", &json!({ "key": key })).await?;
        assert_eq!(resp.0, StatusCode::OK, "{key}: {}", resp.2);
        assert_eq!(resp.2, json!({ "invalidated": 1 }), "{key}");
    }
    // Key 1 is read again (a miss), then dropped by key.
    ok(&app, "/api/v1/agents/1/tools").await?;
    let misses = figure(&app, "agent_tools", "misses").await?;
    let resp = control(&app, "agent_tools", "invalidate", &json!({ "key": 1 })).await?;
    assert_eq!(resp.2, json!({ "invalidated": 1 }));
    ok(&app, "/api/v1/agents/1/tools").await?;
    assert_eq!(figure(&app, "agent_tools", "misses").await?, misses + 1);

    // The runtime cache is controlled the same way.
    ok(&app, "/api/v1/agents/3/runtime").await?;
    let resp = control(&app, "agent_runtime", "invalidate", &json!({ "key": "3" })).await?;
    assert_eq!(resp.2, json!({ "invalidated": 1 }));

    let entries = figure(&app, "agent_tools", "entries").await?;
    assert_eq!(entries, 10, "8 kept, 10 and 1 read again");
    let resp = control(&app, "agent_tools", "invalidate", &json!({ "all": true })).await?;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.2);
    assert_eq!(resp.2, json!({ "invalidated": entries }));
    let view = cache_view(&app, "agent_tools").await?;
    assert_eq!(view["entries"], 0, "{view}");
    assert_eq!(view["filled"], false, "{view}");
    ok(&app, "/api/v1/agents/5/tools").await?;
    assert_eq!(
        figure(&app, "agent_tools", "entries").await?,
        11,
        "the next miss refills"
    );

    // Not exactly one of key, prefix, all; a key that is no agent id.
    for body in [
        json!({}),
        json!({ "all": false }),
        json!({ "key": 1, "all": true }),
        json!({ "key": 1, "prefix": "1" }),
        json!({ "prefix": "1", "all": true }),
        json!({ "key": "abc" }),
        json!({ "key": true }),
    ] {
        let resp = control(&app, "agent_tools", "invalidate", &body).await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    for action in ["invalidate", "warm"] {
        let body = if action == "warm" {
            json!({ "keys": [1] })
        } else {
            json!({ "all": true })
        };
        let resp = control(&app, "no_such_cache", action, &body).await?;
        assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    }

    // Each successful call left an audit row, the refused ones none.
    let audit = ok(&app, "/api/v1/audit?action=cache.invalidate&limit=500").await?;
    let rows = items(&audit)?;
    let details: Vec<Value> = rows.iter().rev().map(|r| r["details"].clone()).collect();
    assert_eq!(
        details,
        [
            json!({ "prefix": "1" }),
            json!({ "key": "1" }),
            json!({ "key": "1" }),
            json!({ "key": "1" }),
            json!({ "key": "3" }),
            json!({ "all": true }),
        ],
        "{audit}"
    );
    for row in &rows {
        assert_eq!(row["entity_type"], "cache", "{row}");
        assert_eq!(row["actor"], "anonymous", "{row}");
    }
    let names: Vec<&str> = rows
        .iter()
        .rev()
        .map(|r| r["entity_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "agent_tools",
            "agent_tools",
            "agent_tools",
            "agent_tools",
            "agent_runtime",
            "agent_tools"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn warm_loads_keys_so_reads_hit() -> anyhow::Result<()> {
    let app = test_app().await?;
    let first = app.agent("first").await?;
    let second = app.agent("second").await?;
    anyhow::ensure!(
        (first, second) == (1, 2),
        "expected ids 1 and 2, got {first} and {second}"
    );
    let tool = app.tool("t", json!({})).await?;
    attach(&app, 2, tool, None).await?;

    let resp = control(&app, "agent_tools", "warm", &json!({ "keys": [1, 2, 999] })).await?;
    assert_eq!(resp.0, StatusCode::OK, "{}", resp.2);
    assert_eq!(resp.2, json!({ "warmed": 2, "requested": 3 }));

    let (hits, misses) = (
        figure(&app, "agent_tools", "hits").await?,
        figure(&app, "agent_tools", "misses").await?,
    );
    assert_eq!(
        tools_doc(&app, 1).await?,
        json!({ "items": [], "total": 0 })
    );
    assert_eq!(total(&tools_doc(&app, 2).await?)?, 1);
    assert_error(
        &app.get("/api/v1/agents/999/tools").await?,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(
        figure(&app, "agent_tools", "misses").await?,
        misses,
        "warmed keys (and the absent one) are hits"
    );
    assert_eq!(figure(&app, "agent_tools", "hits").await?, hits + 3);

    let resp = control(&app, "agent_runtime", "warm", &json!({ "keys": ["2"] })).await?;
    assert_eq!(resp.2, json!({ "warmed": 1, "requested": 1 }));
    let misses = figure(&app, "agent_runtime", "misses").await?;
    assert_eq!(runtime_doc(&app, 2).await?["agent"]["id"], 2);
    assert_eq!(figure(&app, "agent_runtime", "misses").await?, misses);

    for body in [json!({ "keys": ["abc"] }), json!({ "keys": [true] })] {
        let resp = control(&app, "agent_tools", "warm", &body).await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }

    let audit = ok(&app, "/api/v1/audit?action=cache.warm").await?;
    let rows = items(&audit)?;
    assert_eq!(rows.len(), 2, "{audit}");
    assert_eq!(rows[1]["entity_type"], "cache");
    assert_eq!(rows[1]["entity_id"], "agent_tools");
    assert_eq!(rows[1]["details"], json!({ "keys": 3, "warmed": 2 }));
    assert_eq!(rows[0]["entity_id"], "agent_runtime");
    assert_eq!(rows[0]["details"], json!({ "keys": 1, "warmed": 1 }));
    Ok(())
}

#[tokio::test]
async fn metrics_export_cache_counters() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    for _ in 0..3 {
        ok(&app, &format!("/api/v1/agents/{agent}/tools")).await?;
        ok(&app, &format!("/api/v1/agents/{agent}/runtime")).await?;
    }
    let (status, _, body) = app.get("/metrics").await?;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap_or_default();
    for cache in ["agent_tools", "agent_runtime"] {
        let prefix = format!("groundwork_cache_hits_total{{cache=\"{cache}\"}} ");
        let value = text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(
            value.is_some_and(|v| v >= 2.0),
            "{prefix}<at least 2> missing in:\n{text}"
        );
        for metric in [
            "groundwork_cache_misses_total",
            "groundwork_cache_entries",
            "groundwork_cache_capacity",
        ] {
            let series = format!("{metric}{{cache=\"{cache}\"}}");
            assert!(text.contains(&series), "{series} missing in:\n{text}");
        }
    }
    Ok(())
}
