//! [`AgentRunner`]: retries, a timeout per attempt, and an [`AgentResult`] for every run.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt as _;
use groundwork_core::Classify as _;
use groundwork_resilience::{RetryBudget, RetryPolicy, timeout};
use serde::{Serialize, Serializer};
use serde_json::Value;
use tokio::time::Instant;

use super::{Agent, AgentInput, AgentOutput, Health};

/// Settings of an [`AgentRunner`], each with its default (the seeds' agent configuration:
/// `max_retries` 3, `retry_delay` 1 s, `timeout` 60 s).
///
/// ```
/// use std::time::Duration;
/// use groundwork_llm::agent::RunnerOptions;
///
/// let options = RunnerOptions::new()
///     .max_attempts(2)
///     .retry_delay(Duration::from_millis(250))
///     .timeout(Duration::from_secs(120));
/// assert_eq!(options.get_max_attempts(), 2);
/// assert_eq!(options.get_timeout(), Duration::from_secs(120));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RunnerOptions {
    max_attempts: u32,
    retry_delay: Duration,
    max_retry_delay: Duration,
    timeout: Duration,
    health_timeout: Duration,
    budget: Option<RetryBudget>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl RunnerOptions {
    /// The defaults, listed on each setter.
    pub fn new() -> Self {
        Self {
            max_attempts: 3,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            health_timeout: Duration::from_secs(10),
            budget: None,
        }
    }

    /// Attempts in all, the first included (at least 1). Default 3 (the seeds'
    /// `max_retries`, which counted attempts).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The ceiling of the wait before the first retry; it doubles for each further retry
    /// (up to [`max_retry_delay`](Self::max_retry_delay)) and the wait is drawn uniformly
    /// below it (full jitter), so that agents failing together do not retry together.
    /// Default 1 s (the seeds' `retry_delay`).
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// The largest ceiling a retry's wait is drawn under. Default 10 s.
    pub fn max_retry_delay(mut self, delay: Duration) -> Self {
        self.max_retry_delay = delay;
        self
    }

    /// How long one attempt may take; an attempt still running then is cancelled and
    /// counts as a retryable failure. Default 60 s (the seeds' `timeout`: an LLM answer of a
    /// few thousand tokens takes tens of seconds).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// How long a health check may take before the agent is reported unhealthy. Default
    /// 10 s.
    pub fn health_timeout(mut self, limit: Duration) -> Self {
        self.health_timeout = limit;
        self
    }

    /// Retries withdraw from `budget` (shared with other callers); when it is empty, a run
    /// ends with its last failure. Default: no budget.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Attempts in all.
    #[must_use]
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The time limit of one attempt.
    #[must_use]
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The retry schedule: the attempts and delays above, no elapsed-time limit (each
    /// attempt has its own timeout).
    fn retry_policy(&self) -> RetryPolicy {
        let policy = RetryPolicy::new()
            .max_attempts(self.max_attempts)
            .base_delay(self.retry_delay)
            .max_delay(self.max_retry_delay)
            .max_elapsed(None);
        match &self.budget {
            Some(budget) => policy.budget(budget.clone()),
            None => policy,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// An attempt produced an output.
    Completed,
    /// The last attempt failed with an error (a non-retryable one, or a retryable one when
    /// the attempts ran out).
    Failed,
    /// The last attempt ran out of time, and no attempt was left.
    TimedOut,
}

impl AgentStatus {
    /// `completed`, `failed` or `timed_out`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
        }
    }
}

/// What a run of an agent came to. Serialized with `processing_time` in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentResult {
    /// The agent's [name](Agent::name).
    pub agent: String,
    /// How the run ended.
    pub status: AgentStatus,
    /// The output, when [`AgentStatus::Completed`].
    pub output: Option<Value>,
    /// From the start of the first attempt to the end of the last, retry waits included.
    #[serde(serialize_with = "seconds")]
    pub processing_time: Duration,
    /// Attempts made (at least 1).
    pub attempts: u32,
    /// One line per failed attempt, in order: `attempt <n>: <error and its causes>`.
    pub errors: Vec<String>,
    /// The warnings of the successful attempt's output, and the runner's own (an
    /// out-of-range confidence dropped).
    pub warnings: Vec<String>,
    /// The confidence the agent gave its output (0 to 1), if it gave one.
    pub confidence: Option<f64>,
}

impl AgentResult {
    /// Whether the run produced an output.
    #[must_use]
    pub fn is_completed(&self) -> bool {
        self.status == AgentStatus::Completed
    }
}

/// The outcome of a [health check](AgentRunner::health).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The agent's [name](Agent::name).
    pub agent: String,
    /// What the check said (`status`, and `reason` when unhealthy).
    #[serde(flatten)]
    pub health: Health,
    /// How long the check took. Serialized in seconds.
    #[serde(serialize_with = "seconds")]
    pub response_time: Duration,
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// Runs agents with retries and a timeout per attempt (see the
/// [module documentation](super)). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct AgentRunner {
    options: RunnerOptions,
}

/// Why one attempt failed.
enum Failure {
    /// The agent's error: its message, and whether it may succeed on retry.
    Error { message: String, retryable: bool },
    /// The attempt ran out of time.
    TimedOut(Duration),
}

impl AgentRunner {
    /// A runner with these options.
    #[must_use]
    pub fn new(options: RunnerOptions) -> Self {
        Self { options }
    }

    /// Its options.
    pub fn options(&self) -> &RunnerOptions {
        &self.options
    }

    /// Runs `agent` on `input`: attempts until one succeeds, one fails with an error that is
    /// not retryable, or the attempts (or the retry budget) run out. Each attempt gets a
    /// clone of `input` and runs under [`RunnerOptions::timeout`]; an attempt that panics
    /// counts as a non-retryable failure. Records `groundwork_agent_runs_total{agent,
    /// status}` and `groundwork_agent_run_seconds{agent}`.
    pub async fn run<A: Agent>(&self, agent: &A, input: AgentInput) -> AgentResult {
        let name = agent.name();
        let started = Instant::now();
        let policy = self.options.retry_policy();
        policy.deposit();
        let mut backoff = policy.backoff();
        let mut attempts = 0;
        let mut errors = Vec::new();
        let failure = loop {
            attempts += 1;
            let attempt = AssertUnwindSafe(agent.process(input.clone())).catch_unwind();
            let failure = match timeout(self.options.timeout, attempt).await {
                Ok(Ok(Ok(output))) => {
                    let result = completed(name, output, started.elapsed(), attempts, errors);
                    record(&result);
                    return result;
                }
                Ok(Ok(Err(err))) => Failure::Error {
                    message: groundwork_core::error_chain(&err),
                    retryable: err.kind().is_retryable(),
                },
                Ok(Err(panic)) => Failure::Error {
                    message: format!("the agent panicked: {}", panic_message(&*panic)),
                    retryable: false,
                },
                Err(elapsed) => Failure::TimedOut(elapsed.after),
            };
            let (message, retryable) = match &failure {
                Failure::Error { message, retryable } => (message.clone(), *retryable),
                Failure::TimedOut(after) => {
                    (format!("timed out after {}", format_duration(*after)), true)
                }
            };
            tracing::debug!(agent = name, attempt = attempts, error = %message, retryable, "agent attempt failed");
            errors.push(format!("attempt {attempts}: {message}"));
            if !retryable {
                break failure;
            }
            match backoff.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => break failure,
            }
        };
        let status = match failure {
            Failure::TimedOut(_) => AgentStatus::TimedOut,
            Failure::Error { .. } => AgentStatus::Failed,
        };
        let result = AgentResult {
            agent: name.to_owned(),
            status,
            output: None,
            processing_time: started.elapsed(),
            attempts,
            errors,
            warnings: Vec::new(),
            confidence: None,
        };
        tracing::warn!(
            agent = name,
            status = status.as_str(),
            attempts,
            error = result.errors.last().map(String::as_str).unwrap_or_default(),
            "agent run failed"
        );
        record(&result);
        result
    }

    /// Asks `agent` whether it is healthy, for at most [`RunnerOptions::health_timeout`]
    /// (a check that takes longer, or panics, reports the agent unhealthy).
    pub async fn health<A: Agent>(&self, agent: &A) -> HealthReport {
        let started = Instant::now();
        let check = AssertUnwindSafe(agent.health()).catch_unwind();
        let health = match timeout(self.options.health_timeout, check).await {
            Ok(Ok(health)) => health,
            Ok(Err(panic)) => Health::unhealthy(format!(
                "the health check panicked: {}",
                panic_message(&*panic)
            )),
            Err(elapsed) => Health::unhealthy(format!(
                "the health check did not answer within {}",
                format_duration(elapsed.after)
            )),
        };
        HealthReport {
            agent: agent.name().to_owned(),
            health,
            response_time: started.elapsed(),
        }
    }
}

/// The result of a successful attempt.
fn completed(
    name: &str,
    output: AgentOutput,
    processing_time: Duration,
    attempts: u32,
    errors: Vec<String>,
) -> AgentResult {
    let AgentOutput {
        output,
        confidence,
        mut warnings,
    } = output;
    let confidence = match confidence {
        Some(c) if (0.0..=1.0).contains(&c) => Some(c),
        Some(c) => {
            warnings.push(format!(
                "the agent's confidence {c} is not between 0 and 1; ignored"
            ));
            None
        }
        None => None,
    };
    AgentResult {
        agent: name.to_owned(),
        status: AgentStatus::Completed,
        output: Some(output),
        processing_time,
        attempts,
        errors,
        warnings,
        confidence,
    }
}

fn record(result: &AgentResult) {
    metrics::counter!(
        "groundwork_agent_runs_total",
        "agent" => result.agent.clone(),
        "status" => result.status.as_str(),
    )
    .increment(1);
    metrics::histogram!("groundwork_agent_run_seconds", "agent" => result.agent.clone())
        .record(result.processing_time.as_secs_f64());
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// `1.5 s`, `250 ms`.
fn format_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250 ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "60 s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
    }

    #[test]
    fn out_of_range_confidence_is_dropped_with_a_warning() {
        let output = AgentOutput::new(Value::Null).with_confidence(1.5);
        let result = completed("a", output, Duration::ZERO, 1, Vec::new());
        assert_eq!(result.confidence, None);
        assert_eq!(result.warnings.len(), 1);
        let nan = AgentOutput::new(Value::Null).with_confidence(f64::NAN);
        assert_eq!(
            completed("a", nan, Duration::ZERO, 1, Vec::new()).confidence,
            None
        );
    }
}
