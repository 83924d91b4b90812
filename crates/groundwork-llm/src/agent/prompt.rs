//! [`PromptAgent`]: one LLM call, configured by the agent's runtime (model, system prompt,
//! tools), through the caching gateway.

use std::sync::Arc;

use groundwork_core::Classify;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Agent, AgentError, AgentInput, AgentOutput, Health};
use crate::client::LlmError;
use crate::gateway::{ChatReply, ChatRequest, Gateway, GatewayError};
use crate::policy::CachePolicy;

/// The model of an agent whose configuration names none
/// ([`AgentRuntimeConfig::from_agent_config`]).
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// A tool an agent may call, as an OpenAI function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The function's name (OpenAI allows `a-z A-Z 0-9 _ -`, up to 64 characters).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// Its parameters, as a JSON Schema object.
    pub parameters: Value,
}

impl ToolSpec {
    /// A tool from a stored tool's name, description and configuration: the parameters are
    /// the configuration's `"parameters"` member when it is an object, else a schema of no
    /// parameters (`{"type": "object", "properties": {}}`).
    ///
    /// ```
    /// use groundwork_llm::agent::ToolSpec;
    /// use serde_json::json;
    ///
    /// let config = json!({"parameters": {"type": "object", "properties": {"q": {"type": "string"}}}});
    /// let tool = ToolSpec::from_config("search", Some("Searches the web"), &config);
    /// assert_eq!(tool.parameters["properties"]["q"]["type"], "string");
    /// let bare = ToolSpec::from_config("now", None, &json!({}));
    /// assert_eq!(bare.parameters, json!({"type": "object", "properties": {}}));
    /// ```
    #[must_use]
    pub fn from_config(name: &str, description: Option<&str>, config: &Value) -> Self {
        let parameters = config
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        Self {
            name: name.to_owned(),
            description: description.map(str::to_owned),
            parameters,
        }
    }

    /// The tool in an OpenAI request's `tools` array.
    #[must_use]
    pub fn to_openai(&self) -> Value {
        let mut function = Map::new();
        function.insert("name".to_owned(), Value::String(self.name.clone()));
        if let Some(description) = &self.description {
            function.insert("description".to_owned(), Value::String(description.clone()));
        }
        function.insert("parameters".to_owned(), self.parameters.clone());
        json!({"type": "function", "function": function})
    }
}

/// What a [`PromptAgent`] runs with: plain data, so that whoever holds agent runtimes (the
/// server's cache of agent, active prompt and tools) can provide it through
/// [`RuntimeConfigs`] without this crate knowing the database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRuntimeConfig {
    /// The agent's name.
    pub agent_name: String,
    /// The agent's type.
    pub agent_type: String,
    /// The model to ask.
    pub model: String,
    /// The system prompt (the agent's active prompt), if any.
    pub system_prompt: Option<String>,
    /// The tools the model may call (none: the request has no `tools`).
    pub tools: Vec<ToolSpec>,
    /// The sampling temperature; `None` leaves it to the upstream (whose default, 1 for
    /// OpenAI, samples). The gateway caches only the answers of an explicit temperature of 0
    /// (or of a request with a `seed`), unless it is told to cache non-deterministic requests.
    pub temperature: Option<f64>,
    /// The answer's token limit; `None` leaves it to the upstream.
    pub max_tokens: Option<u64>,
}

impl AgentRuntimeConfig {
    /// A configuration asking `model`, with no system prompt, no tools and the upstream's
    /// sampling defaults.
    #[must_use]
    pub fn new(
        agent_name: impl Into<String>,
        agent_type: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        Self {
            agent_name: agent_name.into(),
            agent_type: agent_type.into(),
            model: model.into(),
            system_prompt: None,
            tools: Vec::new(),
            temperature: None,
            max_tokens: None,
        }
    }

    /// A configuration from an agent's stored configuration object: its `"model"` (a
    /// string; else `default_model`), `"temperature"` (a number) and `"max_tokens"` (a
    /// whole number). Other members are ignored.
    ///
    /// ```
    /// use groundwork_llm::agent::{AgentRuntimeConfig, DEFAULT_MODEL};
    /// use serde_json::json;
    ///
    /// let config = json!({"model": "gpt-4o", "temperature": 0, "style": "terse"});
    /// let runtime = AgentRuntimeConfig::from_agent_config("meddpic", "analysis", &config, DEFAULT_MODEL)
    ///     .with_system_prompt("You analyse sales calls.");
    /// assert_eq!(runtime.model, "gpt-4o");
    /// assert_eq!(runtime.temperature, Some(0.0));
    /// let bare = AgentRuntimeConfig::from_agent_config("a", "t", &json!({}), DEFAULT_MODEL);
    /// assert_eq!(bare.model, DEFAULT_MODEL);
    /// ```
    #[must_use]
    pub fn from_agent_config(
        agent_name: impl Into<String>,
        agent_type: impl Into<String>,
        config: &Value,
        default_model: &str,
    ) -> Self {
        let model = config
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(default_model);
        let mut runtime = Self::new(agent_name, agent_type, model);
        runtime.temperature = config.get("temperature").and_then(Value::as_f64);
        runtime.max_tokens = config.get("max_tokens").and_then(Value::as_u64);
        runtime
    }

    /// The same configuration with this system prompt.
    #[must_use]
    pub fn with_system_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.system_prompt = Some(prompt.into());
        self
    }

    /// The same configuration with these tools.
    #[must_use]
    pub fn with_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// The same configuration with this temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The OpenAI chat completions request (non-streaming) for `input`: the system prompt
    /// (when there is one) then the input's [text](AgentInput::text) as the user message,
    /// the tools as function tools (when there are any), the temperature and token limit
    /// (when set).
    ///
    /// # Errors
    /// [`AgentError::InvalidInput`] when the input is `null` or an empty string.
    ///
    /// ```
    /// use groundwork_llm::agent::{AgentInput, AgentRuntimeConfig};
    ///
    /// let runtime = AgentRuntimeConfig::new("a", "t", "gpt-4o-mini").with_system_prompt("Be brief.");
    /// let body = runtime.chat_request(&AgentInput::from("Hello"))?;
    /// assert_eq!(body["messages"][0]["content"], "Be brief.");
    /// assert_eq!(body["messages"][1]["content"], "Hello");
    /// assert!(body.get("tools").is_none());
    /// # Ok::<(), groundwork_llm::agent::AgentError>(())
    /// ```
    pub fn chat_request(&self, input: &AgentInput) -> Result<Value, AgentError> {
        let text = match &input.data {
            Value::Null => return Err(AgentError::invalid_input("the input is empty")),
            Value::String(text) if text.trim().is_empty() => {
                return Err(AgentError::invalid_input("the input is empty"));
            }
            _ => input.text(),
        };
        let mut messages = Vec::with_capacity(2);
        if let Some(prompt) = self.system_prompt.as_deref().filter(|p| !p.is_empty()) {
            messages.push(json!({"role": "system", "content": prompt}));
        }
        messages.push(json!({"role": "user", "content": text}));
        let mut body = Map::new();
        body.insert("model".to_owned(), Value::String(self.model.clone()));
        body.insert("messages".to_owned(), Value::Array(messages));
        if !self.tools.is_empty() {
            body.insert(
                "tools".to_owned(),
                self.tools.iter().map(ToolSpec::to_openai).collect(),
            );
        }
        if let Some(temperature) = self.temperature {
            body.insert("temperature".to_owned(), json!(temperature));
        }
        if let Some(max_tokens) = self.max_tokens {
            body.insert("max_tokens".to_owned(), json!(max_tokens));
        }
        Ok(Value::Object(body))
    }
}

/// Where a [`PromptAgent`] finds its runtime configuration (the server implements it over
/// its refreshing cache of agent runtimes; tests over a map).
pub trait RuntimeConfigs: Send + Sync {
    /// Why a configuration could not be read; its kind says whether to retry.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// The runtime configuration of agent `agent_id`, or `None` if there is no such agent.
    fn runtime(
        &self,
        agent_id: i64,
    ) -> impl Future<Output = Result<Option<AgentRuntimeConfig>, Self::Error>> + Send;
}

impl<C: RuntimeConfigs> RuntimeConfigs for Arc<C> {
    type Error = C::Error;

    fn runtime(
        &self,
        agent_id: i64,
    ) -> impl Future<Output = Result<Option<AgentRuntimeConfig>, Self::Error>> + Send {
        (**self).runtime(agent_id)
    }
}

/// The assistant's message of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Its text (`null` when it only calls tools); text parts are joined.
    pub content: Option<String>,
    /// Its tool calls, as the upstream sent them (`id`, `type`, `function.name`,
    /// `function.arguments` as a JSON string).
    pub tool_calls: Vec<Value>,
    /// Why the model stopped (`stop`, `length`, `tool_calls`, `content_filter`).
    pub finish_reason: Option<String>,
}

impl AssistantMessage {
    /// The message of the first choice of `completion` (a `chat.completion` object), or
    /// `None` when it has none.
    #[must_use]
    pub fn from_completion(completion: &Value) -> Option<Self> {
        let choice = completion.get("choices")?.as_array()?.first()?;
        let message = choice.get("message")?.as_object()?;
        let content = match message.get("content") {
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Array(parts)) => Some(
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
            ),
            _ => None,
        };
        let tool_calls = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(Self {
            content,
            tool_calls,
            finish_reason,
        })
    }
}

/// An agent answering with one LLM call: its runtime configuration (model, system prompt,
/// tools) comes from a [`RuntimeConfigs`] provider at every call, so a changed prompt or
/// tool applies to the next call; the call goes through the [`Gateway`], so identical
/// deterministic requests are answered from the cache.
///
/// The output is an object: `content` (the assistant's text or `null`), `tool_calls` (as
/// the upstream sent them, possibly empty), `finish_reason`, `model`, `usage` and `cache`
/// (`HIT`, `MISS` or `BYPASS`). An answer cut at the token limit or by a content filter
/// comes with a warning. It gives no confidence (a model's answer does not carry one).
///
/// Errors: a missing runtime is [`AgentError::NotConfigured`]; a provider failure is
/// [`AgentError::Config`] (retried when `Unavailable`); an LLM failure is
/// [`AgentError::Llm`] — 429, the 5xx of an overloaded or unreachable server, connection
/// failures and timeouts are retryable, other 4xx answers are not.
///
/// The gateway's [`LlmClient`](crate::client::LlmClient) retries outages itself; under an
/// [`AgentRunner`](super::AgentRunner) that retries too, give it fewer attempts (or one) so
/// that retries do not multiply.
///
/// Health: healthy when the agent's runtime configuration can be read and exists.
#[derive(Debug, Clone)]
pub struct PromptAgent<C> {
    name: String,
    agent_id: i64,
    configs: C,
    gateway: Gateway,
    tenant: String,
    policy: CachePolicy,
}

impl<C: RuntimeConfigs> PromptAgent<C> {
    /// Agent `agent_id`, configured by `configs`, asking through `gateway` on behalf of
    /// `tenant` (part of the cache key). Named `agent-<id>` (see
    /// [`with_name`](Self::with_name)); uses the cache normally (see
    /// [`cache_policy`](Self::cache_policy)).
    #[must_use]
    pub fn new(agent_id: i64, configs: C, gateway: Gateway, tenant: impl Into<String>) -> Self {
        Self {
            name: format!("agent-{agent_id}"),
            agent_id,
            configs,
            gateway,
            tenant: tenant.into(),
            policy: CachePolicy::normal(),
        }
    }

    /// The same agent under this name (results, logs, metrics label).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same agent with these cache directives for its LLM calls.
    #[must_use]
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The agent's id.
    #[must_use]
    pub fn agent_id(&self) -> i64 {
        self.agent_id
    }

    /// The agent's runtime configuration.
    async fn runtime(&self) -> Result<AgentRuntimeConfig, AgentError> {
        match self.configs.runtime(self.agent_id).await {
            Ok(Some(runtime)) => Ok(runtime),
            Ok(None) => Err(AgentError::NotConfigured {
                agent_id: self.agent_id,
            }),
            Err(err) => Err(AgentError::Config {
                agent_id: self.agent_id,
                kind: err.kind(),
                source: Box::new(err),
            }),
        }
    }
}

impl<C: RuntimeConfigs> Agent for PromptAgent<C> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn process(&self, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let runtime = self.runtime().await?;
        let body = runtime.chat_request(&input)?;
        let reply = self
            .gateway
            .chat(ChatRequest {
                tenant: self.tenant.clone(),
                body,
                policy: self.policy,
            })
            .await
            .map_err(llm_error)?;
        let cache = reply.cache_status();
        let completion = completion_of(reply)?;
        let message = AssistantMessage::from_completion(&completion).ok_or_else(|| {
            AgentError::BadAnswer {
                reason: "the completion has no assistant message".to_owned(),
            }
        })?;
        let mut output = AgentOutput::new(json!({
            "content": message.content,
            "tool_calls": message.tool_calls,
            "finish_reason": message.finish_reason,
            "model": completion.get("model").cloned().unwrap_or(Value::Null),
            "usage": completion.get("usage").cloned().unwrap_or(Value::Null),
            "cache": cache.as_str(),
        }));
        match message.finish_reason.as_deref() {
            Some("length") => {
                output = output
                    .with_warning("the answer was cut at the token limit (finish_reason: length)");
            }
            Some("content_filter") => {
                output = output.with_warning(
                    "the answer was cut by a content filter (finish_reason: content_filter)",
                );
            }
            _ => {}
        }
        Ok(output)
    }

    async fn health(&self) -> Health {
        match self.runtime().await {
            Ok(_) => Health::Healthy,
            Err(err) => Health::unhealthy(groundwork_core::error_chain(&err)),
        }
    }
}

/// The JSON completion of a non-streaming reply.
pub(super) fn completion_of(reply: ChatReply) -> Result<Value, AgentError> {
    match reply {
        ChatReply::Json { status, body, .. } => {
            if !(200..300).contains(&status) {
                return Err(AgentError::BadAnswer {
                    reason: format!("the upstream answered {status}"),
                });
            }
            serde_json::from_slice(&body).map_err(|err| AgentError::BadAnswer {
                reason: format!("the completion is not JSON: {err}"),
            })
        }
        ChatReply::Stream { .. } => Err(AgentError::BadAnswer {
            reason: "a stream came back for a non-streaming request".to_owned(),
        }),
    }
}

/// An LLM failure, with the upstream's own error message when it sent one.
fn llm_error(source: GatewayError) -> AgentError {
    let upstream_message = match &source {
        GatewayError::Upstream { error, .. } => match &**error {
            LlmError::Upstream { body, .. } => serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned)),
            _ => None,
        },
        GatewayError::BadRequest(_) => None,
    };
    AgentError::Llm {
        upstream_message,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_become_openai_function_tools() {
        let runtime = AgentRuntimeConfig::new("a", "t", "m").with_tools(vec![ToolSpec {
            name: "lookup".to_owned(),
            description: None,
            parameters: json!({"type": "object"}),
        }]);
        let body = runtime.chat_request(&AgentInput::from(json!({"q": 1})));
        let body = body.unwrap_or_default();
        assert_eq!(
            body["tools"],
            json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}])
        );
        // A JSON input is sent as its JSON text; no system prompt, no system message.
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "{\"q\":1}"}])
        );
    }

    #[test]
    fn empty_input_is_invalid() {
        let runtime = AgentRuntimeConfig::new("a", "t", "m");
        for input in [Value::Null, json!(""), json!("  ")] {
            assert!(matches!(
                runtime.chat_request(&AgentInput::new(input)),
                Err(AgentError::InvalidInput { .. })
            ));
        }
    }

    #[test]
    fn assistant_messages_are_read_with_their_tool_calls() {
        let completion = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]});
        let message = AssistantMessage::from_completion(&completion);
        let message = message.unwrap_or_else(|| AssistantMessage {
            content: Some("missing".to_owned()),
            tool_calls: Vec::new(),
            finish_reason: None,
        });
        assert_eq!(message.content, None);
        assert_eq!(message.tool_calls.len(), 1);
        assert_eq!(message.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            AssistantMessage::from_completion(&json!({"choices": []})),
            None
        );
    }
}
