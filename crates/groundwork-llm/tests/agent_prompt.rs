//! The prompt agent behind a real gateway over the testkit's mock upstream: the request
//! carries the runtime's system prompt and tools, the output the model's answer; upstream
//! outages are retried by the runner, refusals are not; missing or unreadable runtimes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use groundwork_clients::http::{HttpClient, HttpClientOptions};
use groundwork_core::{Classify, ErrorKind};
use groundwork_llm::agent::{
    Agent, AgentError, AgentInput, AgentRunner, AgentRuntimeConfig, AgentStatus, DEFAULT_MODEL,
    Health, PromptAgent, RunnerOptions, RuntimeConfigs, ToolSpec,
};
use groundwork_llm::cache::{ResponseCache, ResponseCacheOptions};
use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
use groundwork_llm::gateway::{Gateway, GatewayOptions};
use groundwork_resilience::RetryPolicy;
use groundwork_testkit::openai::MockOpenAi;
use serde_json::json;

/// Runtimes in a map, with a switch that makes every read fail as unavailable.
#[derive(Default)]
struct Runtimes {
    map: Mutex<HashMap<i64, AgentRuntimeConfig>>,
    down: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("the runtime store is down")]
struct StoreDown;

impl Classify for StoreDown {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

impl RuntimeConfigs for Runtimes {
    type Error = StoreDown;

    async fn runtime(&self, agent_id: i64) -> Result<Option<AgentRuntimeConfig>, StoreDown> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreDown);
        }
        Ok(self.map.lock().unwrap().get(&agent_id).cloned())
    }
}

/// A gateway whose client does not retry: the runner's retries are the ones counted.
fn gateway(mock: &MockOpenAi) -> Gateway {
    let http = HttpClient::new(HttpClientOptions::new()).expect("HTTP client");
    Gateway::new(
        LlmClient::new(
            http,
            ClientOptions::new().retry(RetryPolicy::new().max_attempts(1)),
        ),
        Upstream::new(mock.base_url()),
        ResponseCache::new(ResponseCacheOptions::new(), None),
        GatewayOptions::new(),
    )
}

fn runner() -> AgentRunner {
    AgentRunner::new(
        RunnerOptions::new()
            .retry_delay(Duration::from_millis(5))
            .timeout(Duration::from_secs(10)),
    )
}

fn analyst() -> AgentRuntimeConfig {
    let config = json!({"model": "mock-1", "temperature": 0});
    AgentRuntimeConfig::from_agent_config("analyst", "analysis", &config, DEFAULT_MODEL)
        .with_system_prompt("You analyse sales calls.")
        .with_tools(vec![ToolSpec::from_config(
            "search",
            Some("Searches the CRM"),
            &json!({"parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}),
        )])
}

fn setup(mock: &MockOpenAi) -> (Arc<Runtimes>, PromptAgent<Arc<Runtimes>>) {
    let runtimes = Arc::new(Runtimes::default());
    runtimes.map.lock().unwrap().insert(7, analyst());
    let agent = PromptAgent::new(7, Arc::clone(&runtimes), gateway(mock), "tester");
    (runtimes, agent)
}

#[tokio::test]
async fn the_request_carries_the_runtime_and_the_output_the_answer() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (_runtimes, agent) = setup(&mock);
    assert_eq!(agent.name(), "agent-7");
    assert_eq!(agent.agent_id(), 7);

    let result = runner()
        .run(&agent, AgentInput::from("How did the call go?"))
        .await;
    assert_eq!(result.status, AgentStatus::Completed, "{result:?}");
    assert_eq!(result.attempts, 1);
    assert!(result.errors.is_empty() && result.warnings.is_empty());
    assert_eq!(result.confidence, None);
    let output = result.output.expect("an output");
    assert_eq!(output["content"], "echo: How did the call go?");
    assert_eq!(output["tool_calls"], json!([]));
    assert_eq!(output["finish_reason"], "stop");
    assert_eq!(output["model"], "mock-1");
    assert_eq!(output["cache"], "MISS");
    assert!(output["usage"]["total_tokens"].is_u64());

    let sent = mock.last_request().expect("a request");
    assert_eq!(sent["model"], "mock-1");
    assert_eq!(sent["temperature"], 0.0);
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You analyse sales calls."},
            {"role": "user", "content": "How did the call go?"},
        ])
    );
    assert_eq!(
        sent["tools"],
        json!([{"type": "function", "function": {
            "name": "search",
            "description": "Searches the CRM",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        }}])
    );
    assert_eq!(
        sent.get("stream"),
        None,
        "nothing added to a body without stream"
    );

    // The same deterministic request is answered from the gateway's cache.
    let again = runner()
        .run(&agent, AgentInput::from("How did the call go?"))
        .await;
    assert_eq!(again.output.expect("an output")["cache"], "HIT");
    assert_eq!(mock.calls(), 1);
    Ok(())
}

#[tokio::test]
async fn a_changed_runtime_applies_to_the_next_call() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (runtimes, agent) = setup(&mock);
    {
        let mut map = runtimes.map.lock().unwrap();
        let mut runtime = AgentRuntimeConfig::from_agent_config(
            "analyst",
            "analysis",
            &json!({"max_tokens": 50, "temperature": 0.7}),
            DEFAULT_MODEL,
        );
        runtime.system_prompt = Some("Be brief.".to_owned());
        map.insert(7, runtime);
    }
    let result = runner().run(&agent, AgentInput::new(json!({"q": 1}))).await;
    assert_eq!(result.status, AgentStatus::Completed, "{result:?}");
    let sent = mock.last_request().expect("a request");
    assert_eq!(sent["model"], DEFAULT_MODEL);
    assert_eq!(sent["max_tokens"], 50);
    assert_eq!(sent["messages"][0]["content"], "Be brief.");
    assert_eq!(sent["messages"][1]["content"], "{\"q\":1}");
    assert_eq!(sent["temperature"], 0.7);
    assert!(sent.get("tools").is_none());
    // A temperature above 0 without a seed: not deterministic, so not cached.
    assert_eq!(result.output.expect("an output")["cache"], "BYPASS");
    Ok(())
}

#[tokio::test]
async fn an_upstream_outage_is_retried_by_the_runner() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (_runtimes, agent) = setup(&mock);
    mock.fail_next(1, 503, None);
    let result = runner().run(&agent, AgentInput::from("hello")).await;
    assert_eq!(result.status, AgentStatus::Completed, "{result:?}");
    assert_eq!(result.attempts, 2);
    assert_eq!(result.errors.len(), 1);
    assert!(
        result.errors[0].starts_with("attempt 1: the LLM call failed")
            && result.errors[0].contains("503"),
        "{:?}",
        result.errors
    );
    assert_eq!(result.output.expect("an output")["content"], "echo: hello");
    assert_eq!(mock.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn an_upstream_refusal_fails_after_one_attempt() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (_runtimes, agent) = setup(&mock);
    mock.fail_next(1, 400, None);
    let result = runner().run(&agent, AgentInput::from("hello")).await;
    assert_eq!(result.status, AgentStatus::Failed);
    assert_eq!(result.attempts, 1);
    assert_eq!(mock.calls(), 1);
    assert!(
        result.errors[0].contains("400"),
        "the upstream's status is in the error: {:?}",
        result.errors
    );

    // The error itself says it is not retryable.
    mock.fail_next(1, 400, None);
    let err = agent
        .process(AgentInput::from("hello"))
        .await
        .expect_err("a refusal");
    assert!(matches!(err, AgentError::Llm { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(!err.is_retryable());
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_is_retryable() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (_runtimes, agent) = setup(&mock);
    mock.fail_next(1, 429, None);
    let err = agent
        .process(AgentInput::from("hello"))
        .await
        .expect_err("rate limited");
    assert!(err.is_retryable(), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn empty_input_is_refused_without_calling_the_llm() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (_runtimes, agent) = setup(&mock);
    let result = runner().run(&agent, AgentInput::from("")).await;
    assert_eq!((result.status, result.attempts), (AgentStatus::Failed, 1));
    assert_eq!(
        result.errors,
        ["attempt 1: invalid input: the input is empty"]
    );
    assert_eq!(mock.calls(), 0);
    Ok(())
}

#[tokio::test]
async fn an_agent_without_a_runtime_fails_and_is_unhealthy() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (runtimes, _agent) = setup(&mock);
    let unknown =
        PromptAgent::new(99, Arc::clone(&runtimes), gateway(&mock), "tester").with_name("ghost");
    let result = runner().run(&unknown, AgentInput::from("hello")).await;
    assert_eq!(result.agent, "ghost");
    assert_eq!((result.status, result.attempts), (AgentStatus::Failed, 1));
    assert_eq!(
        result.errors,
        ["attempt 1: agent 99 has no runtime configuration"]
    );
    assert_eq!(mock.calls(), 0);
    assert_eq!(
        unknown.health().await,
        Health::unhealthy("agent 99 has no runtime configuration")
    );
    Ok(())
}

#[tokio::test]
async fn an_unreadable_runtime_is_retried_and_unhealthy() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (runtimes, agent) = setup(&mock);
    assert_eq!(runner().health(&agent).await.health, Health::Healthy);

    runtimes.down.store(true, Ordering::SeqCst);
    let result = runner().run(&agent, AgentInput::from("hello")).await;
    assert_eq!((result.status, result.attempts), (AgentStatus::Failed, 3));
    assert_eq!(
        result.errors[0],
        "attempt 1: cannot load the runtime configuration of agent 7: the runtime store is down"
    );
    assert_eq!(mock.calls(), 0);
    assert_eq!(
        runner().health(&agent).await.health,
        Health::unhealthy(
            "cannot load the runtime configuration of agent 7: the runtime store is down"
        )
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_can_be_spawned_on_any_worker() -> anyhow::Result<()> {
    let mock = MockOpenAi::start()?;
    let (_runtimes, agent) = setup(&mock);
    let runner = runner();
    let result = tokio::spawn(async move {
        let health = runner.health(&agent).await;
        (
            health,
            runner.run(&agent, AgentInput::from("spawned")).await,
        )
    })
    .await?;
    assert!(result.0.health.is_healthy());
    assert_eq!(result.1.status, AgentStatus::Completed, "{:?}", result.1);
    Ok(())
}
