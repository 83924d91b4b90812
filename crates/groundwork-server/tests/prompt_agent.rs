//! The built-in prompt agent over the server's agent runtime cache: an agent, its active
//! prompt and its tools, created through the API, make the request the agent sends to the
//! LLM; the runner returns a completed result.

mod common;

use axum::Router;
use axum::http::StatusCode;
use common::{DEFAULT_BODY_LIMIT, TestApp, id_of, metrics_handle};
use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_llm::agent::{AgentRunner, AgentStatus, PromptAgent, RunnerOptions};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{Gateway, GatewayOptions};
use groundwork_server::app::{AppState, HttpSettings, app};
use groundwork_server::caches::CachedRuntimes;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::json;

#[tokio::test]
async fn the_prompt_agent_runs_with_the_cached_runtime() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let dir = tempfile::tempdir()?;
    let db = common::sqlite_db(dir.path()).await?;
    let state = AppState::new(db.clone(), &[], metrics_handle());
    let runtimes = CachedRuntimes::new(&state.caches);
    let router: Router = app(
        state,
        HttpSettings {
            body_limit_bytes: DEFAULT_BODY_LIMIT,
        },
    );
    let api = TestApp { router, db, dir };

    let agent = id_of(
        &api.create(
            "/api/v1/agents",
            &json!({ "name": "triage", "type": "classifier", "config": { "model": "mock-7", "temperature": 0 } }),
        )
        .await?,
    )?;
    api.create(
        "/api/v1/prompts",
        &json!({ "name": "triage-system", "content": "You sort tickets.", "agent_type": "classifier" }),
    )
    .await?;
    let tool = id_of(
        &api.create(
            "/api/v1/tools",
            &json!({ "name": "lookup", "type": "http", "config": { "parameters": { "type": "object", "properties": { "q": { "type": "string" } } } } }),
        )
        .await?,
    )?;
    let (status, _, _) = api
        .put_json(&format!("/api/v1/agents/{agent}/tools/{tool}"), &json!({}))
        .await?;
    assert_eq!(status, StatusCode::CREATED);

    let gateway = Gateway::new(
        LlmClient::new(
            HttpClient::new(HttpClientOptions::new())?,
            ClientOptions::new(),
        ),
        Upstream::new(mock.base_url()),
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    );
    let prompt_agent = PromptAgent::new(agent, runtimes, gateway, "tests");
    let result = AgentRunner::new(RunnerOptions::new())
        .run(&prompt_agent, "My printer is on fire".into())
        .await;
    assert_eq!(result.status, AgentStatus::Completed, "{result:?}");
    assert_eq!(result.attempts, 1);
    let output = result.output.unwrap_or_default();
    assert_eq!(output["content"], "echo: My printer is on fire", "{output}");

    let sent = mock.last_request().unwrap_or_default();
    assert_eq!(sent["model"], "mock-7");
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][0]["content"], "You sort tickets.");
    assert_eq!(sent["tools"][0]["function"]["name"], "lookup", "{sent}");
    Ok(())
}
