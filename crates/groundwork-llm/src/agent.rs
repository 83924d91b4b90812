//! Agents: an [`Agent`] trait (`process(input) -> output`), a runner that applies retries
//! and a timeout and reports every run as an [`AgentResult`] ([`AgentRunner`]), a built-in
//! agent that answers with one LLM call configured by the agent's runtime ([`PromptAgent`]),
//! and parallel LLM calls with one deadline and a result per call ([`parallel_chat`]).
//!
//! - **Agents** say what they do, not how to survive failures: [`Agent::process`] returns
//!   an [`AgentOutput`] (its JSON output, an optional confidence, warnings) or an
//!   [`AgentError`] that says, through [`Classify`](groundwork_core::Classify), whether
//!   trying again may help. [`Agent::health`] defaults to healthy.
//! - **The runner** ([`AgentRunner::run`]) never fails and never panics: it tries up to
//!   [`RunnerOptions::max_attempts`] times, each attempt under
//!   [`RunnerOptions::timeout`], retrying only retryable errors and timeouts after a
//!   full-jitter backoff ([`RetryPolicy`](groundwork_resilience::RetryPolicy)), and returns
//!   what happened: [`AgentStatus::Completed`], [`AgentStatus::Failed`] or
//!   [`AgentStatus::TimedOut`], with the output, the processing time, the attempts made and
//!   one error line per failed attempt. [`AgentRunner::health`] runs a health check under
//!   its own timeout.
//! - **[`PromptAgent`]** reads the agent's runtime (name, type, model, system prompt, tools)
//!   from a [`RuntimeConfigs`] provider (the server implements it over its cache of agent
//!   runtimes) and asks the LLM through the caching [`Gateway`](crate::gateway::Gateway).
//! - **Dynamic dispatch**: [`Agent`] uses `async fn` in traits and is not object safe;
//!   [`BoxedAgent`] wraps any agent in a cheap, clonable handle that is itself an
//!   [`Agent`], for registries holding agents of different types.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use groundwork_llm::agent::{
//!     Agent, AgentError, AgentInput, AgentOutput, AgentRunner, AgentStatus, RunnerOptions,
//! };
//! use serde_json::json;
//!
//! struct WordCount;
//!
//! impl Agent for WordCount {
//!     fn name(&self) -> &str {
//!         "word-count"
//!     }
//!
//!     async fn process(&self, input: AgentInput) -> Result<AgentOutput, AgentError> {
//!         let text = input.data.as_str().ok_or_else(|| AgentError::invalid_input("not text"))?;
//!         Ok(AgentOutput::new(json!({"words": text.split_whitespace().count()}))
//!             .with_confidence(1.0))
//!     }
//! }
//!
//! let runner = AgentRunner::new(RunnerOptions::new().timeout(Duration::from_secs(5)));
//! let result = runner.run(&WordCount, AgentInput::from("one two three")).await;
//! assert_eq!(result.status, AgentStatus::Completed);
//! assert_eq!(result.output, Some(json!({"words": 3})));
//! assert_eq!((result.attempts, result.confidence), (1, Some(1.0)));
//!
//! // Invalid input is not retried.
//! let result = runner.run(&WordCount, AgentInput::new(json!(42))).await;
//! assert_eq!((result.status, result.attempts), (AgentStatus::Failed, 1));
//! assert_eq!(result.errors, ["attempt 1: invalid input: not text"]);
//! # });
//! ```

mod error;
mod parallel;
mod prompt;
mod runner;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use error::AgentError;
pub use parallel::{ChatCallError, ChatCompletion, parallel_chat};
pub use prompt::{
    AgentRuntimeConfig, AssistantMessage, DEFAULT_MODEL, PromptAgent, RuntimeConfigs, ToolSpec,
};
pub use runner::{AgentResult, AgentRunner, AgentStatus, HealthReport, RunnerOptions};

/// What an agent is asked to process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInput {
    /// The input: text (a JSON string) or any JSON value.
    pub data: Value,
}

impl AgentInput {
    /// An input of `data`.
    #[must_use]
    pub fn new(data: Value) -> Self {
        Self { data }
    }

    /// The input as text: the string itself, or the JSON of any other value.
    #[must_use]
    pub fn text(&self) -> String {
        match &self.data {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

impl From<Value> for AgentInput {
    fn from(data: Value) -> Self {
        Self::new(data)
    }
}

impl From<&str> for AgentInput {
    fn from(text: &str) -> Self {
        Self::new(Value::String(text.to_owned()))
    }
}

impl From<String> for AgentInput {
    fn from(text: String) -> Self {
        Self::new(Value::String(text))
    }
}

/// What an agent produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOutput {
    /// The output.
    pub output: Value,
    /// How sure the agent is of it, from 0 to 1, if it can say (the runner drops values
    /// outside that range, with a warning).
    pub confidence: Option<f64>,
    /// Things the caller should know that did not stop the agent (a truncated answer, a
    /// missing optional field).
    pub warnings: Vec<String>,
}

impl AgentOutput {
    /// `output`, with no confidence and no warnings.
    #[must_use]
    pub fn new(output: Value) -> Self {
        Self {
            output,
            confidence: None,
            warnings: Vec::new(),
        }
    }

    /// The same output with this confidence (0 to 1).
    #[must_use]
    pub fn with_confidence(mut self, confidence: f64) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// The same output with one more warning.
    #[must_use]
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

/// The state of an agent, as its health check reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    /// It can process input.
    Healthy,
    /// It cannot process input now.
    Unhealthy {
        /// Why.
        reason: String,
    },
}

impl Health {
    /// Unhealthy, because of `reason`.
    #[must_use]
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Self::Unhealthy {
            reason: reason.into(),
        }
    }

    /// Whether it is [`Health::Healthy`].
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }
}

/// An agent: takes an input, produces an output (see the [module documentation](self)).
///
/// Implement it with `async fn`; the futures must be `Send` (the runner may run on any
/// worker thread). Retries, timeouts and reporting are the [`AgentRunner`]'s job: an agent
/// makes one attempt per call and says through its error's kind whether another may help.
pub trait Agent: Send + Sync {
    /// The agent's name, for results, logs and metrics (keep it short and stable: it is a
    /// metrics label).
    fn name(&self) -> &str;

    /// Processes `input` once.
    ///
    /// # Errors
    /// Why it could not; the runner retries [`AgentError`]s whose kind is retryable
    /// (`Unavailable`).
    fn process(
        &self,
        input: AgentInput,
    ) -> impl Future<Output = Result<AgentOutput, AgentError>> + Send;

    /// Whether the agent can process input now. The default says it can.
    fn health(&self) -> impl Future<Output = Health> + Send {
        async { Health::Healthy }
    }
}

/// [`Agent`] behind a vtable (its futures boxed), for [`BoxedAgent`].
trait DynAgent: Send + Sync {
    fn dyn_name(&self) -> &str;
    fn dyn_process(&self, input: AgentInput) -> BoxFuture<'_, Result<AgentOutput, AgentError>>;
    fn dyn_health(&self) -> BoxFuture<'_, Health>;
}

impl<A: Agent> DynAgent for A {
    fn dyn_name(&self) -> &str {
        self.name()
    }

    fn dyn_process(&self, input: AgentInput) -> BoxFuture<'_, Result<AgentOutput, AgentError>> {
        Box::pin(self.process(input))
    }

    fn dyn_health(&self) -> BoxFuture<'_, Health> {
        Box::pin(self.health())
    }
}

/// Any [`Agent`] behind one type, for collections of agents of different types. Cheap to
/// clone (clones share the agent); each call boxes its future.
///
/// ```
/// use groundwork_llm::agent::{Agent, AgentError, AgentInput, AgentOutput, BoxedAgent};
///
/// struct Echo;
/// impl Agent for Echo {
///     fn name(&self) -> &str { "echo" }
///     async fn process(&self, input: AgentInput) -> Result<AgentOutput, AgentError> {
///         Ok(AgentOutput::new(input.data))
///     }
/// }
///
/// let agents: Vec<BoxedAgent> = vec![BoxedAgent::new(Echo)];
/// assert_eq!(agents[0].name(), "echo");
/// ```
#[derive(Clone)]
pub struct BoxedAgent {
    inner: Arc<dyn DynAgent>,
}

impl BoxedAgent {
    /// Wraps `agent`.
    #[must_use]
    pub fn new<A: Agent + 'static>(agent: A) -> Self {
        Self {
            inner: Arc::new(agent),
        }
    }
}

impl fmt::Debug for BoxedAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoxedAgent")
            .field("name", &self.inner.dyn_name())
            .finish_non_exhaustive()
    }
}

impl Agent for BoxedAgent {
    fn name(&self) -> &str {
        self.inner.dyn_name()
    }

    fn process(
        &self,
        input: AgentInput,
    ) -> impl Future<Output = Result<AgentOutput, AgentError>> + Send {
        self.inner.dyn_process(input)
    }

    fn health(&self) -> impl Future<Output = Health> + Send {
        self.inner.dyn_health()
    }
}
