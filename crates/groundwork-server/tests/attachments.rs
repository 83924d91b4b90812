//! Attaching tools to agents: `PUT`/`DELETE /api/v1/agents/{id}/tools/{tool_id}` and the
//! agent's active tools at `GET /api/v1/agents/{id}/tools`.

mod common;

use axum::http::{Method, StatusCode};
use common::{assert_error, field_of_items, items, test_app, total};
use serde_json::{Value, json};

#[tokio::test]
async fn attach_without_body_is_201_then_200() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let tool = app
        .tool("t", json!({ "url": "https://x", "retries": 1 }))
        .await?;
    let path = format!("/api/v1/agents/{agent}/tools/{tool}");

    let (status, _, body) = app.raw(Method::PUT, &path, &[], "").await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["agent_id"], agent);
    assert_eq!(body["tool_id"], tool);
    assert_eq!(body["is_active"], true);
    assert_eq!(body["config_override"], Value::Null);

    let (status, _, body) = app
        .put_json(
            &path,
            &json!({ "config_override": { "retries": 5, "extra": true } }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK, "re-attaching updates: {body}");
    assert_eq!(
        body["config_override"],
        json!({ "retries": 5, "extra": true })
    );
    assert_eq!(body["is_active"], true);

    let (status, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(status, StatusCode::OK);
    let listed = items(&body)?;
    assert_eq!(total(&body)?, 1);
    assert_eq!(listed.len(), 1);
    let entry = &listed[0];
    assert_eq!(entry["id"], tool);
    assert_eq!(entry["name"], "t");
    assert_eq!(entry["type"], "http");
    assert_eq!(entry["config"], json!({ "url": "https://x", "retries": 1 }));
    assert_eq!(
        entry["config_override"],
        json!({ "retries": 5, "extra": true })
    );
    assert_eq!(
        entry["effective_config"],
        json!({ "url": "https://x", "retries": 5, "extra": true }),
        "override keys win over the tool's config"
    );
    Ok(())
}

#[tokio::test]
async fn attach_with_json_body_first_is_201() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let tool = app.tool("t", json!({})).await?;
    let path = format!("/api/v1/agents/{agent}/tools/{tool}");
    let (status, _, body) = app
        .put_json(&path, &json!({ "config_override": { "k": 1 } }))
        .await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, _) = app.raw(Method::PUT, &path, &[], "").await?;
    assert_eq!(status, StatusCode::OK);
    // Re-attaching without a body resets the override.
    let (_, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(field_of_items(&body, "config_override")?, [Value::Null]);
    assert_eq!(field_of_items(&body, "effective_config")?, [json!({})]);
    Ok(())
}

#[tokio::test]
async fn agent_tools_are_active_ones_sorted_by_name() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let other = app.agent("b").await?;
    let zeta = app.tool("zeta", json!({})).await?;
    let alpha = app.tool("alpha", json!({})).await?;
    let mid = app.tool("mid", json!({})).await?;
    let off = app.tool("off", json!({})).await?;
    let paused = app.tool("paused", json!({})).await?;
    let unattached = app.tool("unattached", json!({})).await?;
    for tool in [zeta, alpha, mid, off, paused] {
        let (status, _, body) = app
            .raw(
                Method::PUT,
                &format!("/api/v1/agents/{agent}/tools/{tool}"),
                &[],
                "",
            )
            .await?;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.raw(
        Method::PUT,
        &format!("/api/v1/agents/{other}/tools/{unattached}"),
        &[],
        "",
    )
    .await?;

    let path = format!("/api/v1/agents/{agent}/tools");
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(
        field_of_items(&body, "name")?,
        ["alpha", "mid", "off", "paused", "zeta"]
    );
    assert_eq!(total(&body)?, 5);

    // An inactive tool is not handed to the agent.
    let (status, _, _) = app
        .patch_json(
            &format!("/api/v1/tools/{off}"),
            &json!({ "is_active": false }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    // An inactive attachment is kept but not handed to the agent.
    let (status, _, body) = app
        .put_json(
            &format!("/api/v1/agents/{agent}/tools/{paused}"),
            &json!({ "is_active": false }),
        )
        .await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["is_active"], false);

    let (_, _, body) = app.get(&path).await?;
    assert_eq!(field_of_items(&body, "name")?, ["alpha", "mid", "zeta"]);
    assert_eq!(total(&body)?, 3);

    // Reactivating brings them back.
    app.patch_json(
        &format!("/api/v1/tools/{off}"),
        &json!({ "is_active": true }),
    )
    .await?;
    app.put_json(
        &format!("/api/v1/agents/{agent}/tools/{paused}"),
        &json!({ "is_active": true }),
    )
    .await?;
    let (_, _, body) = app.get(&path).await?;
    assert_eq!(total(&body)?, 5);

    let (_, _, body) = app.get(&format!("/api/v1/agents/{other}/tools")).await?;
    assert_eq!(field_of_items(&body, "name")?, ["unattached"]);
    Ok(())
}

#[tokio::test]
async fn agent_without_tools_has_an_empty_listing() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("lonely").await?;
    let (status, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "items": [], "total": 0 }));
    Ok(())
}

#[tokio::test]
async fn unknown_agent_or_tool_is_404() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let tool = app.tool("t", json!({})).await?;

    let resp = app
        .raw(
            Method::PUT,
            &format!("/api/v1/agents/999/tools/{tool}"),
            &[],
            "",
        )
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = app
        .raw(
            Method::PUT,
            &format!("/api/v1/agents/{agent}/tools/999"),
            &[],
            "",
        )
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let resp = app.get("/api/v1/agents/999/tools").await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let resp = app
        .delete(&format!("/api/v1/agents/999/tools/{tool}"))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    let resp = app
        .raw(
            Method::PUT,
            &format!("/api/v1/agents/{agent}/tools/x"),
            &[],
            "",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    let (_, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(total(&body)?, 0);
    Ok(())
}

#[tokio::test]
async fn bad_attachment_bodies() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let tool = app.tool("t", json!({})).await?;
    let path = format!("/api/v1/agents/{agent}/tools/{tool}");

    for override_value in [json!([1]), json!("x"), json!(3)] {
        let resp = app
            .put_json(&path, &json!({ "config_override": override_value }))
            .await?;
        assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    }
    let resp = app.put_json(&path, &json!({ "override": {} })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");
    let resp = app.put_json(&path, &json!({ "is_active": "no" })).await?;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "unprocessable");

    let resp = app
        .raw(
            Method::PUT,
            &path,
            &[("content-type", "application/json")],
            "{bad",
        )
        .await?;
    assert_error(&resp, StatusCode::BAD_REQUEST, "bad_request");

    let (_, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(total(&body)?, 0, "no refused attachment was stored");
    Ok(())
}

#[tokio::test]
async fn detach_is_204_then_gone() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let keep = app.tool("keep", json!({})).await?;
    let dropped = app.tool("drop", json!({})).await?;
    for tool in [keep, dropped] {
        app.raw(
            Method::PUT,
            &format!("/api/v1/agents/{agent}/tools/{tool}"),
            &[],
            "",
        )
        .await?;
    }
    let path = format!("/api/v1/agents/{agent}/tools/{dropped}");
    let (status, _, body) = app.delete(&path).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);

    let (_, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(field_of_items(&body, "name")?, ["keep"]);

    // Detaching what is not attached is 404.
    let resp = app.delete(&path).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let never = app.tool("never", json!({})).await?;
    let resp = app
        .delete(&format!("/api/v1/agents/{agent}/tools/{never}"))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    // The tool itself still exists.
    let (status, _, _) = app.get(&format!("/api/v1/tools/{dropped}")).await?;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn deleting_a_tool_removes_it_from_agents() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let kept = app.tool("kept", json!({})).await?;
    let doomed = app.tool("doomed", json!({})).await?;
    for tool in [kept, doomed] {
        app.raw(
            Method::PUT,
            &format!("/api/v1/agents/{agent}/tools/{tool}"),
            &[],
            "",
        )
        .await?;
    }
    let (status, _, _) = app.delete(&format!("/api/v1/tools/{doomed}")).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (_, _, body) = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_eq!(field_of_items(&body, "name")?, ["kept"]);
    assert_eq!(total(&body)?, 1);
    let resp = app
        .delete(&format!("/api/v1/agents/{agent}/tools/{doomed}"))
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn deleting_an_agent_removes_its_attachments() -> anyhow::Result<()> {
    let app = test_app().await?;
    let agent = app.agent("a").await?;
    let tool = app.tool("t", json!({})).await?;
    app.raw(
        Method::PUT,
        &format!("/api/v1/agents/{agent}/tools/{tool}"),
        &[],
        "",
    )
    .await?;
    let (status, _, _) = app.delete(&format!("/api/v1/agents/{agent}")).await?;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let resp = app.get(&format!("/api/v1/agents/{agent}/tools")).await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let (status, _, _) = app.get(&format!("/api/v1/tools/{tool}")).await?;
    assert_eq!(status, StatusCode::OK, "the tool outlives the agent");
    Ok(())
}
