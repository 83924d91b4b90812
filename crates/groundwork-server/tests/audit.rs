//! `/api/v1/audit`: every mutating call leaves an entry naming its actor (`anonymous` without
//! keys, the key's name with them), newest first, filterable; refused writes leave none.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use chrono::{SecondsFormat, Utc};
use common::{
    DEFAULT_BODY_LIMIT, TestApp, assert_error, bare_request, field_of_items, id_of, items,
    json_request, key, test_app, test_app_with, total, with_bearer,
};
use serde_json::{Value, json};

async fn audit(app: &TestApp, query: &str) -> anyhow::Result<Value> {
    let (status, _, body) = app.get(&format!("/api/v1/audit{query}")).await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "GET /api/v1/audit{query}: {status} {body}"
    );
    Ok(body)
}

#[tokio::test]
async fn every_mutation_is_audited_newest_first() -> anyhow::Result<()> {
    let app = test_app().await?;
    let body = audit(&app, "").await?;
    assert_eq!(body, json!({ "items": [], "total": 0 }));

    let agent = app.agent("a").await?;
    let (status, _, _) = app
        .patch_json(
            &format!("/api/v1/agents/{agent}"),
            &json!({ "description": "d" }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    let tool = app.tool("t", json!({})).await?;
    let (status, _, _) = app
        .raw(
            Method::PUT,
            &format!("/api/v1/agents/{agent}/tools/{tool}"),
            &[],
            "",
        )
        .await?;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = app
        .delete(&format!("/api/v1/agents/{agent}/tools/{tool}"))
        .await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let prompt = id_of(
        &app.create(
            "/api/v1/prompts",
            &json!({ "name": "p", "content": "c", "agent_type": "x" }),
        )
        .await?,
    )?;
    let user = id_of(
        &app.create("/api/v1/users", &json!({ "email": "u@x.io", "name": "U" }))
            .await?,
    )?;
    let digest = id_of(
        &app.create(
            &format!("/api/v1/users/{user}/digests"),
            &json!({ "subject": "s", "body": "b", "period": "daily" }),
        )
        .await?,
    )?;
    let workflow = id_of(
        &app.create("/api/v1/workflows", &json!({ "name": "w" }))
            .await?,
    )?;
    let (status, _, _) = app.delete(&format!("/api/v1/agents/{agent}")).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Reads are not audited.
    app.get("/api/v1/agents").await?;
    app.get(&format!("/api/v1/tools/{tool}")).await?;

    let body = audit(&app, "").await?;
    let expected = [
        ("agent.delete", "agent", agent.to_string()),
        ("workflow.create", "workflow", workflow.to_string()),
        ("digest.create", "email_digest", digest.to_string()),
        ("user.create", "user", user.to_string()),
        ("prompt.create", "prompt", prompt.to_string()),
        ("tool.detach", "agent_tool", format!("{agent}/{tool}")),
        ("tool.attach", "agent_tool", format!("{agent}/{tool}")),
        ("tool.create", "tool", tool.to_string()),
        ("agent.update", "agent", agent.to_string()),
        ("agent.create", "agent", agent.to_string()),
    ];
    let entries = items(&body)?;
    let actual: Vec<(Value, Value, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].clone(),
                e["entity_type"].clone(),
                e["entity_id"].clone(),
            )
        })
        .collect();
    let wanted: Vec<(Value, Value, Value)> = expected
        .iter()
        .map(|(a, t, i)| (json!(a), json!(t), json!(i)))
        .collect();
    assert_eq!(actual, wanted);
    assert_eq!(total(&body)?, 10);
    for entry in &entries {
        assert_eq!(entry["actor"], "anonymous", "{entry}");
        assert!(entry["at"].is_string(), "{entry}");
        assert!(entry["id"].is_i64(), "{entry}");
    }
    assert_eq!(entries[9]["details"]["name"], "a");
    assert_eq!(entries[8]["details"]["fields"], json!(["description"]));
    Ok(())
}

#[tokio::test]
async fn refused_writes_are_not_audited() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("taken").await?;
    app.agent("other").await?;
    app.tool("tool", json!({})).await?;
    let before = total(&audit(&app, "").await?)?;
    assert_eq!(before, 3);

    let resp = app
        .post_json("/api/v1/agents", &json!({ "name": "taken", "type": "x" }))
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let resp = app
        .patch_json(
            &format!("/api/v1/agents/{agent}"),
            &json!({ "name": "other" }),
        )
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let resp = app
        .post_json("/api/v1/tools", &json!({ "name": "tool", "type": "x" }))
        .await?;
    assert_error(&resp, StatusCode::CONFLICT, "conflict");
    let resp = app
        .post_json("/api/v1/agents", &json!({ "name": "", "type": "x" }))
        .await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.delete("/api/v1/agents/999").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let body = audit(&app, "").await?;
    assert_eq!(total(&body)?, before, "{body}");
    assert_eq!(items(&body)?.len(), 3);
    Ok(())
}

#[tokio::test]
async fn actor_is_the_key_name() -> anyhow::Result<()> {
    let app = test_app_with(
        vec![key("ci", "s3cret"), key("ops", "other-secret")],
        DEFAULT_BODY_LIMIT,
    )
    .await?;
    let req = json_request(
        Method::POST,
        "/api/v1/agents",
        &json!({ "name": "a", "type": "x" }),
    )?;
    let (status, _, body) = app.send(with_bearer(req, "s3cret")?).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let req = json_request(
        Method::POST,
        "/api/v1/tools",
        &json!({ "name": "t", "type": "x" }),
    )?;
    let (status, _, body) = app.send(with_bearer(req, "other-secret")?).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let req = bare_request(Method::GET, "/api/v1/audit")?;
    let (status, _, body) = app.send(with_bearer(req, "s3cret")?).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field_of_items(&body, "actor")?, ["ops", "ci"]);
    assert_eq!(
        field_of_items(&body, "action")?,
        ["tool.create", "agent.create"]
    );

    let req = bare_request(Method::GET, "/api/v1/audit?actor=ci")?;
    let (_, _, body) = app.send(with_bearer(req, "other-secret")?).await?;
    assert_eq!(field_of_items(&body, "action")?, ["agent.create"]);
    assert_eq!(total(&body)?, 1);

    // The audit log itself needs a key.
    let resp = app.get("/api/v1/audit").await?;
    assert_error(&resp, StatusCode::UNAUTHORIZED, "unauthorized");
    Ok(())
}

#[tokio::test]
async fn filters_by_actor_action_and_entity_type() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    app.agent("b").await?;
    let tool = app.tool("t", json!({})).await?;
    app.raw(
        Method::PUT,
        &format!("/api/v1/agents/{agent}/tools/{tool}"),
        &[],
        "",
    )
    .await?;

    let body = audit(&app, "?action=agent.create").await?;
    assert_eq!(
        field_of_items(&body, "action")?,
        ["agent.create", "agent.create"]
    );
    assert_eq!(total(&body)?, 2);

    let body = audit(&app, "?entity_type=agent_tool").await?;
    assert_eq!(field_of_items(&body, "action")?, ["tool.attach"]);

    let body = audit(&app, "?entity_type=tool").await?;
    assert_eq!(field_of_items(&body, "action")?, ["tool.create"]);

    let body = audit(&app, "?actor=anonymous").await?;
    assert_eq!(total(&body)?, 4);
    let body = audit(&app, "?actor=somebody").await?;
    assert_eq!(body, json!({ "items": [], "total": 0 }));

    let body = audit(&app, "?actor=anonymous&action=tool.create&entity_type=tool").await?;
    assert_eq!(total(&body)?, 1);
    let body = audit(&app, "?action=tool.create&entity_type=agent").await?;
    assert_eq!(total(&body)?, 0);

    let body = audit(&app, "?limit=2&offset=1").await?;
    assert_eq!(
        field_of_items(&body, "action")?,
        ["tool.create", "agent.create"]
    );
    assert_eq!(total(&body)?, 4);
    Ok(())
}

#[tokio::test]
async fn since_filters_by_time() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.agent("before").await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.agent("after").await?;

    let since = cut.to_rfc3339_opts(SecondsFormat::Micros, true);
    let body = audit(&app, &format!("?since={since}")).await?;
    assert_eq!(total(&body)?, 1, "{body}");
    assert_eq!(items(&body)?[0]["details"]["name"], "after");

    // The same instant with an offset (`+` must be percent-encoded in a query).
    let shifted = cut
        .with_timezone(
            &chrono::FixedOffset::east_opt(2 * 3600).ok_or_else(|| anyhow::anyhow!("offset"))?,
        )
        .to_rfc3339_opts(SecondsFormat::Micros, false)
        .replace('+', "%2B");
    let body = audit(&app, &format!("?since={shifted}")).await?;
    assert_eq!(total(&body)?, 1, "{body}");

    let body = audit(&app, "?since=2000-01-01T00:00:00Z").await?;
    assert_eq!(total(&body)?, 2);
    let body = audit(&app, "?since=2999-01-01T00:00:00Z").await?;
    assert_eq!(total(&body)?, 0);

    let body = audit(&app, &format!("?until={since}")).await?;
    assert_eq!(total(&body)?, 1, "{body}");
    assert_eq!(items(&body)?[0]["details"]["name"], "before");
    Ok(())
}

#[tokio::test]
async fn since_is_inclusive_and_until_exclusive() -> anyhow::Result<()> {
    let app = test_app().await?;
    app.agent("first").await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.agent("second").await?;
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.agent("third").await?;
    let all = items(&audit(&app, "").await?)?;
    let at = all[1]["at"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no `at` in {}", all[1]))?
        .replace('+', "%2B");
    assert_eq!(all[1]["details"]["name"], "second");

    let body = audit(&app, &format!("?since={at}")).await?;
    assert_eq!(
        field_of_items(&body, "entity_id")?,
        [all[0]["entity_id"].clone(), all[1]["entity_id"].clone()],
        "since includes the entry at that instant"
    );
    let body = audit(&app, &format!("?until={at}")).await?;
    assert_eq!(
        field_of_items(&body, "entity_id")?,
        [all[2]["entity_id"].clone()],
        "until excludes the entry at that instant"
    );
    let body = audit(&app, &format!("?since={at}&until={at}")).await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn bad_audit_queries_are_400() -> anyhow::Result<()> {
    let app = test_app().await?;
    for query in [
        "since=yesterday",
        "since=2024-13-01T00:00:00Z",
        "since=2024-01-01",
        "until=noon",
        "limit=501",
        "limit=0",
        "offset=-1",
    ] {
        let resp = app.get(&format!("/api/v1/audit?{query}")).await?;
        assert_eq!(resp.0, StatusCode::BAD_REQUEST, "?{query}: {}", resp.2);
        assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");
    }
    Ok(())
}
