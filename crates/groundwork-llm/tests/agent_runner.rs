//! The agent runner with fake agents, on Tokio's paused clock: retries of retryable errors
//! only, a timeout per attempt that counts as a retryable failure, full-jitter backoff
//! under the configured ceiling, panics and bad confidences contained, health checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use groundwork_llm::agent::{
    Agent, AgentError, AgentInput, AgentOutput, AgentRunner, AgentStatus, BoxedAgent, Health,
    RunnerOptions,
};
use groundwork_resilience::RetryBudget;
use serde_json::{Value, json};

/// Fails its first `failures` attempts (retryably or not), then echoes its input.
struct Flaky {
    failures: u32,
    retryable: bool,
    attempts: AtomicU32,
    inputs: Mutex<Vec<Value>>,
}

impl Flaky {
    fn new(failures: u32, retryable: bool) -> Self {
        Self {
            failures,
            retryable,
            attempts: AtomicU32::new(0),
            inputs: Mutex::new(Vec::new()),
        }
    }

    fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Agent for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn process(&self, input: AgentInput) -> Result<AgentOutput, AgentError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        self.inputs.lock().unwrap().push(input.data.clone());
        if n <= self.failures {
            return Err(if self.retryable {
                AgentError::unavailable(format!("busy ({n})"))
            } else {
                AgentError::failed(format!("broken ({n})"))
            });
        }
        Ok(AgentOutput::new(json!({"echo": input.data}))
            .with_confidence(0.8)
            .with_warning("a warning"))
    }
}

/// Sleeps `sleep` in its first `slow` attempts (then fails with `then`, if it is still
/// running), and answers at once afterwards.
struct Slow {
    slow: u32,
    sleep: Duration,
    then_fail: bool,
    attempts: AtomicU32,
}

impl Slow {
    fn new(slow: u32, sleep: Duration) -> Self {
        Self {
            slow,
            sleep,
            then_fail: false,
            attempts: AtomicU32::new(0),
        }
    }
}

impl Agent for Slow {
    fn name(&self) -> &str {
        "slow"
    }

    async fn process(&self, _input: AgentInput) -> Result<AgentOutput, AgentError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= self.slow {
            tokio::time::sleep(self.sleep).await;
        } else if self.then_fail {
            return Err(AgentError::invalid_input("no"));
        }
        Ok(AgentOutput::new(json!(n)))
    }
}

struct Panics;

impl Agent for Panics {
    fn name(&self) -> &str {
        "panics"
    }

    async fn process(&self, _input: AgentInput) -> Result<AgentOutput, AgentError> {
        panic!("boom");
    }

    async fn health(&self) -> Health {
        panic!("health boom");
    }
}

/// An agent whose health check says what it is told to, after `delay`.
struct Checked {
    health: Health,
    delay: Duration,
}

impl Agent for Checked {
    fn name(&self) -> &str {
        "checked"
    }

    async fn process(&self, input: AgentInput) -> Result<AgentOutput, AgentError> {
        Ok(AgentOutput::new(input.data))
    }

    async fn health(&self) -> Health {
        tokio::time::sleep(self.delay).await;
        self.health.clone()
    }
}

fn runner() -> AgentRunner {
    AgentRunner::new(RunnerOptions::new())
}

#[tokio::test(start_paused = true)]
async fn a_first_success_is_completed_with_the_agents_output() {
    let agent = Flaky::new(0, true);
    let result = runner().run(&agent, AgentInput::from("hi")).await;
    assert_eq!(result.status, AgentStatus::Completed);
    assert!(result.is_completed());
    assert_eq!(result.agent, "flaky");
    assert_eq!(result.output, Some(json!({"echo": "hi"})));
    assert_eq!(result.attempts, 1);
    assert_eq!(result.confidence, Some(0.8));
    assert_eq!(result.warnings, ["a warning"]);
    assert!(result.errors.is_empty());
    assert_eq!(result.processing_time, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_with_the_same_input() {
    let agent = Flaky::new(2, true);
    let result = runner().run(&agent, AgentInput::from("again")).await;
    assert_eq!(result.status, AgentStatus::Completed);
    assert_eq!(result.attempts, 3);
    assert_eq!(agent.attempts(), 3);
    assert_eq!(
        result.errors,
        ["attempt 1: busy (1)", "attempt 2: busy (2)"],
        "one line per failed attempt"
    );
    assert_eq!(*agent.inputs.lock().unwrap(), vec![json!("again"); 3]);
    // Full jitter under a ceiling of 1 s, then 2 s.
    assert!(
        result.processing_time <= Duration::from_secs(3),
        "{:?}",
        result.processing_time
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_fail_once_the_attempts_run_out() {
    let agent = Flaky::new(u32::MAX, true);
    let options = RunnerOptions::new()
        .max_attempts(4)
        .retry_delay(Duration::from_millis(100));
    let result = AgentRunner::new(options)
        .run(&agent, AgentInput::from("x"))
        .await;
    assert_eq!(result.status, AgentStatus::Failed);
    assert_eq!((result.attempts, agent.attempts()), (4, 4));
    assert_eq!(result.errors.len(), 4);
    assert_eq!(result.errors[3], "attempt 4: busy (4)");
    assert_eq!(result.output, None);
    assert_eq!(result.confidence, None);
    // Waits of at most 100, 200 and 400 ms.
    assert!(result.processing_time <= Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_retryable_fail_at_once() {
    let agent = Flaky::new(1, false);
    let result = runner().run(&agent, AgentInput::from("x")).await;
    assert_eq!(result.status, AgentStatus::Failed);
    assert_eq!((result.attempts, agent.attempts()), (1, 1));
    assert_eq!(result.errors, ["attempt 1: broken (1)"]);
    assert_eq!(result.processing_time, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_the_timeout_is_cancelled_and_retried() {
    let agent = Slow::new(1, Duration::from_secs(3600));
    let result = runner().run(&agent, AgentInput::from("x")).await;
    assert_eq!(result.status, AgentStatus::Completed);
    assert_eq!(result.attempts, 2);
    assert_eq!(result.output, Some(json!(2)));
    assert_eq!(result.errors, ["attempt 1: timed out after 60 s"]);
    // The 60 s timeout, then a wait of at most 1 s.
    assert!(result.processing_time >= Duration::from_secs(60));
    assert!(result.processing_time <= Duration::from_secs(61));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_timing_out_is_timed_out() {
    let agent = Slow::new(u32::MAX, Duration::from_secs(3600));
    let options = RunnerOptions::new().timeout(Duration::from_secs(5));
    let result = AgentRunner::new(options)
        .run(&agent, AgentInput::from("x"))
        .await;
    assert_eq!(result.status, AgentStatus::TimedOut);
    assert_eq!(result.attempts, 3);
    assert_eq!(
        result.errors,
        [
            "attempt 1: timed out after 5 s",
            "attempt 2: timed out after 5 s",
            "attempt 3: timed out after 5 s"
        ]
    );
    assert!(result.processing_time >= Duration::from_secs(15));
    assert!(result.processing_time <= Duration::from_secs(18));
}

#[tokio::test(start_paused = true)]
async fn the_last_failure_decides_between_failed_and_timed_out() {
    let agent = Slow {
        then_fail: true,
        ..Slow::new(1, Duration::from_secs(3600))
    };
    let options = RunnerOptions::new().timeout(Duration::from_millis(250));
    let result = AgentRunner::new(options)
        .run(&agent, AgentInput::from("x"))
        .await;
    assert_eq!(result.status, AgentStatus::Failed);
    assert_eq!(
        result.errors,
        [
            "attempt 1: timed out after 250 ms",
            "attempt 2: invalid input: no"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_retry_budget_stops_retries() {
    let agent = Flaky::new(u32::MAX, true);
    let options = RunnerOptions::new().retry_budget(RetryBudget::new(0.0, 0));
    let result = AgentRunner::new(options)
        .run(&agent, AgentInput::from("x"))
        .await;
    assert_eq!((result.status, result.attempts), (AgentStatus::Failed, 1));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_agent_is_a_failed_run() {
    let result = runner().run(&Panics, AgentInput::from("x")).await;
    assert_eq!(result.status, AgentStatus::Failed);
    assert_eq!(result.attempts, 1);
    assert_eq!(result.errors, ["attempt 1: the agent panicked: boom"]);
    let report = runner().health(&Panics).await;
    assert_eq!(
        report.health,
        Health::unhealthy("the health check panicked: health boom")
    );
}

#[tokio::test(start_paused = true)]
async fn health_checks_report_with_a_timeout() {
    let healthy = Checked {
        health: Health::Healthy,
        delay: Duration::from_millis(5),
    };
    let report = runner().health(&healthy).await;
    assert!(report.health.is_healthy());
    assert_eq!(report.agent, "checked");
    assert_eq!(report.response_time, Duration::from_millis(5));

    let sick = Checked {
        health: Health::unhealthy("no model"),
        delay: Duration::ZERO,
    };
    assert_eq!(
        runner().health(&sick).await.health,
        Health::unhealthy("no model")
    );

    let hanging = Checked {
        health: Health::Healthy,
        delay: Duration::from_secs(3600),
    };
    let options = RunnerOptions::new().health_timeout(Duration::from_secs(2));
    let report = AgentRunner::new(options).health(&hanging).await;
    assert_eq!(
        report.health,
        Health::unhealthy("the health check did not answer within 2 s")
    );
    assert_eq!(report.response_time, Duration::from_secs(2));

    // The default health check says healthy.
    assert!(
        runner()
            .health(&Flaky::new(0, true))
            .await
            .health
            .is_healthy()
    );
}

#[tokio::test(start_paused = true)]
async fn results_and_reports_serialize_for_the_api() {
    let agent = Slow::new(u32::MAX, Duration::from_secs(3600));
    let options = RunnerOptions::new()
        .max_attempts(1)
        .timeout(Duration::from_millis(1500));
    let result = AgentRunner::new(options)
        .run(&agent, AgentInput::from("x"))
        .await;
    let json = serde_json::to_value(&result).unwrap();
    assert_eq!(
        json,
        json!({
            "agent": "slow",
            "status": "timed_out",
            "output": null,
            "processing_time": 1.5,
            "attempts": 1,
            "errors": ["attempt 1: timed out after 1.5 s"],
            "warnings": [],
            "confidence": null,
        })
    );
    let sick = Checked {
        health: Health::unhealthy("no model"),
        delay: Duration::ZERO,
    };
    assert_eq!(
        serde_json::to_value(runner().health(&sick).await).unwrap(),
        json!({"agent": "checked", "status": "unhealthy", "reason": "no model", "response_time": 0.0})
    );
}

#[tokio::test(start_paused = true)]
async fn boxed_agents_of_different_types_run_alike() {
    let agents = [
        BoxedAgent::new(Flaky::new(1, true)),
        BoxedAgent::new(Checked {
            health: Health::unhealthy("down"),
            delay: Duration::ZERO,
        }),
    ];
    let runner = runner();
    let mut results = Vec::new();
    for agent in &agents {
        results.push(runner.run(agent, AgentInput::from("x")).await);
    }
    assert_eq!(
        results
            .iter()
            .map(|r| (r.agent.as_str(), r.status, r.attempts))
            .collect::<Vec<_>>(),
        [
            ("flaky", AgentStatus::Completed, 2),
            ("checked", AgentStatus::Completed, 1)
        ]
    );
    assert!(!runner.health(&agents[1]).await.health.is_healthy());
    assert!(format!("{:?}", agents[0]).contains("flaky"));
}
