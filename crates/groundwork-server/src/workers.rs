//! The queue workers: `workflow.execute` runs executions step by step, `notification.send`
//! delivers the notice of a finished execution, `audit.log` writes audit entries.
//!
//! **Executions** are at least once and resumable: each finished step saves a checkpoint,
//! and a redelivered execution (its worker died) skips the steps it has checkpoints for. A
//! finished execution's redelivery is acknowledged without running anything. Every state
//! change and the messages it causes (its audit entry, the notification at the end) commit in
//! one transaction through the outbox.
//!
//! **One run at a time**: a worker runs an execution under a lease
//! ([`groundwork_db::workflows::Executions::acquire`], [`WorkerDeps::lease`], 30 s by
//! default) that it renews every third of the lease while the steps run, and that every
//! checkpoint and the final state change check. A second copy of the message (a publish sent
//! again, the outbox relaying twice, a redelivery while the first worker still runs) finds
//! the lease live and runs nothing: it looks again when the lease would end, and acknowledges
//! once the execution has finished. If the holder died, its lease runs out and the copy
//! takes the execution over (an attempt counted) and resumes it from its checkpoints. A
//! worker that loses its lease stops its steps at once. An execution whose workers died
//! during each of its `GROUNDWORK_QUEUE_MAX_ATTEMPTS` attempts fails instead of being taken
//! over again.
//!
//! **Steps** are JSON objects in the workflow's `steps` array, checked and typed by
//! [`parse_steps`] (the parser the API refuses invalid steps with; see [`crate::steps`] for
//! every rule), run in order, each taking the previous step's output (the execution's input
//! for the first) and giving its own:
//! - `{"type": "echo", "value": V}`: outputs `V`, or its input when there is no `value`;
//! - `{"type": "webhook", "url": U, "timeout_ms": T}`: POSTs `{"execution_id", "workflow_id",
//!   "step", "input"}` to `U` (default timeout 10 s); outputs the JSON answer (or
//!   `{"status", "body"}` for another body). 5xx, 429 and connection failures are retried;
//!   other non-2xx answers fail the execution;
//! - `{"type": "agent", "agent_id": N}`: runs the built-in prompt agent of agent `N` (its
//!   prompt and tools from the runtime cache) on the input, through the LLM proxy; needs
//!   `GROUNDWORK_LLM_BASE_URL`. An agent that no longer exists fails the execution at once;
//! - `{"type": "fail", "message": M, "retryable": B}`: fails (for testing retry and failure
//!   handling).
//!
//! Each step may have a `name` (default `step-<n>`), unique in the workflow: its checkpoint's
//! key. Steps that break a rule (a workflow stored before the API checked them) fail the
//! execution before any step runs, with the parser's message. A failed attempt puts the
//! execution in `retrying` and the message comes back after the queue's delay; the last
//! allowed attempt (`GROUNDWORK_QUEUE_MAX_ATTEMPTS`) fails it.

use std::collections::HashMap;
use std::time::Duration;

use groundwork_clients::http::{HttpClient, HttpClientError};
use groundwork_db::workflows::Acquired;
use groundwork_db::{Database, DbError, Execution, ExecutionStatus, NewAuditEntry, NewMessage};
use groundwork_llm::agent::{AgentInput, AgentRunner, PromptAgent, RunnerOptions};
use groundwork_llm::gateway::Gateway;
use groundwork_messaging::worker::{self, WorkerOptions};
use groundwork_messaging::{Message, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::caches::{CachedRuntimes, Caches};
use crate::messaging::{AUDIT_LOG, Messaging, NOTIFICATION_SEND, WORKFLOW_EXECUTE};
use crate::steps::{Step, StepKind, agent_exists, parse_steps};

/// The actor of audit entries the workers write.
const WORKER_ACTOR: &str = "worker";
/// Timeout of a notification POST.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker's lease on an execution lasts without renewal (renewed every third of
/// it while the steps run): how long a copy waits before taking over the execution of a
/// worker that died.
pub const EXECUTION_LEASE: Duration = Duration::from_secs(30);

/// The body of a `workflow.execute` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteJob {
    /// The execution to run.
    pub execution_id: i64,
}

/// The body of a `notification.send` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `execution.completed` or `execution.failed`.
    pub event: String,
    /// The execution.
    pub execution_id: i64,
    /// Its workflow.
    pub workflow_id: i64,
    /// Its final status.
    pub status: ExecutionStatus,
    /// Its output, when completed.
    pub output: Option<Value>,
    /// Its error, when failed.
    pub error: Option<String>,
}

/// What the workers need. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerDeps {
    /// The database.
    pub db: Database,
    /// The queues (and the relay to wake after staging messages).
    pub messaging: Messaging,
    /// The shared HTTP client, for webhook steps and notifications.
    pub http: Option<HttpClient>,
    /// The LLM proxy's core, for agent steps.
    pub llm: Option<Gateway>,
    /// The caches (the agent runtime cache feeds agent steps).
    pub caches: Caches,
    /// Where notifications are POSTed.
    pub notify_url: Option<String>,
    /// Deliveries of an execution before it fails.
    pub max_attempts: u32,
    /// Handlers per worker.
    pub concurrency: usize,
    /// The lease a worker holds on the execution it runs (see the module docs; default
    /// [`EXECUTION_LEASE`]).
    pub lease: Duration,
}

impl WorkerDeps {
    /// The workers' view of a server's state, with `config`'s worker settings.
    #[must_use]
    pub fn from_state(state: &crate::app::AppState, config: &crate::config::Config) -> Self {
        Self {
            db: state.db.clone(),
            messaging: state.messaging.clone(),
            http: state.http.clone(),
            llm: state.llm.clone(),
            caches: state.caches.clone(),
            notify_url: config.notify_webhook_url.clone(),
            max_attempts: config.queue_max_attempts,
            concurrency: config.worker_concurrency,
            lease: EXECUTION_LEASE,
        }
    }
}

/// The message that runs execution `execution_id` (one per execution: its id deduplicates).
#[must_use]
pub fn execute_message(execution_id: i64) -> NewMessage {
    NewMessage {
        queue: WORKFLOW_EXECUTE.to_owned(),
        message_id: format!("execution-{execution_id}"),
        payload: json_bytes(&ExecuteJob { execution_id }),
    }
}

/// The `audit.log` message of `execution`'s current state, by `actor`.
#[must_use]
pub fn audit_message(actor: &str, execution: &Execution) -> NewMessage {
    let status = execution.status.as_str();
    let entry = NewAuditEntry {
        actor: actor.to_owned(),
        action: format!("execution.{status}"),
        entity_type: "execution".to_owned(),
        entity_id: Some(execution.id.to_string()),
        details: json!({
            "workflow_id": execution.workflow_id,
            "attempts": execution.attempts,
            "error": execution.error,
        }),
        at: Some(execution.updated_at),
    };
    NewMessage {
        queue: AUDIT_LOG.to_owned(),
        // One per state change: a repeated change (a second retry) has another attempt count.
        message_id: format!(
            "audit-execution-{}-{status}-{}",
            execution.id, execution.attempts
        ),
        payload: json_bytes(&entry),
    }
}

fn notification_message(execution: &Execution) -> NewMessage {
    let notification = Notification {
        event: format!("execution.{}", execution.status.as_str()),
        execution_id: execution.id,
        workflow_id: execution.workflow_id,
        status: execution.status,
        output: execution.output.clone(),
        error: execution.error.clone(),
    };
    NewMessage {
        queue: NOTIFICATION_SEND.to_owned(),
        message_id: format!(
            "notify-execution-{}-{}",
            execution.id,
            execution.status.as_str()
        ),
        payload: json_bytes(&notification),
    }
}

fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // These types serialize infallibly (no maps with non-string keys, no failing Serialize).
    serde_json::to_vec(value).unwrap_or_default()
}

/// Starts the three workers and the outbox relay, until `stop`.
pub fn spawn(deps: WorkerDeps, stop: CancellationToken) -> Vec<JoinHandle<()>> {
    let mut tasks = deps.messaging.spawn_relay(stop.clone());
    let options = WorkerOptions {
        concurrency: deps.concurrency,
        ..WorkerOptions::default()
    };
    let run = |queue: &'static str, handler: Handler| {
        let deps = deps.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let broker = deps.messaging.broker.clone();
            let name = deps.messaging.queue_name(queue);
            let result = worker::run(
                &broker,
                &name,
                options,
                move |message| {
                    let deps = deps.clone();
                    async move { handler(deps, message).await }
                },
                stop,
            )
            .await;
            if let Err(err) = result {
                tracing::error!(queue = %name, error = %err, "worker stopped");
            }
        })
    };
    tasks.push(run(WORKFLOW_EXECUTE, |d, m| Box::pin(run_execution(d, m))));
    tasks.push(run(NOTIFICATION_SEND, |d, m| {
        Box::pin(send_notification(d, m))
    }));
    tasks.push(run(AUDIT_LOG, |d, m| Box::pin(write_audit(d, m))));
    tasks
}

type Handler =
    fn(WorkerDeps, Message) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>;

/// Writes the audit entry a message carries, once (the inbox drops redeliveries).
async fn write_audit(deps: WorkerDeps, message: Message) -> Outcome {
    let entry: NewAuditEntry = match message.json() {
        Ok(entry) => entry,
        Err(err) => return Outcome::Reject(format!("not an audit entry: {err}")),
    };
    match deps
        .db
        .audit()
        .record_once(AUDIT_LOG, &message.id, &entry)
        .await
    {
        Ok(_) => Outcome::Ack,
        Err(err @ DbError::Invalid { .. }) => Outcome::Reject(err.to_string()),
        Err(err) => Outcome::Retry(err.to_string()),
    }
}

/// Sends a notification to the configured webhook (or logs it), once per message id as far
/// as the inbox can tell (a crash between sending and recording sends it again).
async fn send_notification(deps: WorkerDeps, message: Message) -> Outcome {
    let notification: Notification = match message.json() {
        Ok(n) => n,
        Err(err) => return Outcome::Reject(format!("not a notification: {err}")),
    };
    match deps
        .db
        .inbox()
        .contains(NOTIFICATION_SEND, &message.id)
        .await
    {
        Ok(true) => return Outcome::Ack,
        Ok(false) => {}
        Err(err) => return Outcome::Retry(err.to_string()),
    }
    match (&deps.notify_url, &deps.http) {
        (Some(url), Some(http)) => {
            let request = http
                .post(url.as_str())
                .json(&notification)
                .timeout(NOTIFY_TIMEOUT);
            match http.send(request).await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    return Outcome::Retry(format!(
                        "notification webhook answered {}",
                        response.status()
                    ));
                }
                Err(err) => return Outcome::Retry(format!("notification webhook: {err}")),
            }
        }
        _ => tracing::info!(
            event = %notification.event,
            execution = notification.execution_id,
            "notification (no GROUNDWORK_NOTIFY_WEBHOOK_URL configured)"
        ),
    }
    match deps.db.inbox().record(NOTIFICATION_SEND, &message.id).await {
        Ok(_) => Outcome::Ack,
        Err(err) => Outcome::Retry(err.to_string()),
    }
}

/// Why a step did not produce an output.
enum StepError {
    /// Another attempt may succeed.
    Retryable(String),
    /// No attempt will.
    Fatal(String),
}

/// Runs the execution a `workflow.execute` message names (see the module docs): the
/// handler of that queue, public so that tests can deliver one message twice.
pub async fn run_execution(deps: WorkerDeps, message: Message) -> Outcome {
    let job: ExecuteJob = match message.json() {
        Ok(job) => job,
        Err(err) => return Outcome::Reject(format!("not a workflow.execute message: {err}")),
    };
    match execute(&deps, job.execution_id, message.attempt).await {
        Ok(outcome) => outcome,
        // The database failed: the message comes back and the execution resumes.
        Err(err) => Outcome::Retry(err.to_string()),
    }
}

/// A lease owner token unique to one run of one execution.
fn lease_owner() -> String {
    format!("worker-{}-{:016x}", std::process::id(), fastrand::u64(..))
}

/// How long a copy that found the execution held waits before looking again: until the
/// lease would end, plus a little (so that the holder's renewal, or its expiry, is seen).
fn recheck_after(remaining: Duration, lease: Duration) -> Duration {
    let margin = (lease / 20).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let jitter = margin.mul_f64(fastrand::f64());
    remaining.min(lease) + margin + jitter
}

async fn execute(deps: &WorkerDeps, id: i64, attempt: u32) -> Result<Outcome, DbError> {
    let db = &deps.db;
    let owner = lease_owner();
    let execution = loop {
        let acquired = db
            .executions()
            .acquire(id, &owner, deps.lease, deps.max_attempts, |e| {
                vec![audit_message(WORKER_ACTOR, e)]
            })
            .await;
        match acquired {
            Ok(Acquired::Started(execution)) => {
                deps.messaging.wake_relay();
                break execution;
            }
            Ok(Acquired::TakenOver(execution)) => {
                tracing::info!(
                    execution = id,
                    attempts = execution.attempts,
                    "taking over an execution whose worker stopped; resuming from its checkpoints"
                );
                deps.messaging.wake_relay();
                break execution;
            }
            Ok(Acquired::Exhausted(execution)) => {
                let reason = format!(
                    "its worker stopped during each of its {} attempts",
                    execution.attempts
                );
                tracing::warn!(execution = id, %reason, "failing an execution");
                return finish_failed(deps, &execution, &owner, &reason).await;
            }
            Ok(Acquired::Held {
                owner: holder,
                remaining,
            }) => {
                // Another worker runs it: run nothing, look again when its lease would end
                // (it has finished by then, or renewed its lease, or died and we take over).
                tracing::debug!(
                    execution = id,
                    holder,
                    remaining_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
                    "execution running on another worker; waiting"
                );
                tokio::time::sleep(recheck_after(remaining, deps.lease)).await;
            }
            Ok(Acquired::Finished(_)) => return Ok(Outcome::Ack),
            Err(DbError::NotFound { .. }) => {
                return Ok(Outcome::Reject(format!("execution {id} does not exist")));
            }
            Err(err) => return Err(err),
        }
    };
    let mut heartbeat = Heartbeat::start(deps.db.clone(), id, owner.clone(), deps.lease);
    // The steps first: a run that has just ended is not mistaken for a lost lease.
    let outcome = tokio::select! {
        biased;
        outcome = run_steps(deps, &execution, &owner, attempt) => outcome,
        loss = heartbeat.lost() => Err(loss),
    };
    drop(heartbeat);
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(Lost::Db(DbError::Conflict { message, .. }) | Lost::TakenOver(message)) => {
            tracing::warn!(execution = id, reason = %message, "lost the lease of an execution; stopped its steps");
            after_lost_lease(deps, id).await
        }
        Err(Lost::Unconfirmed(message)) => {
            tracing::warn!(execution = id, reason = %message, "cannot renew the lease of an execution; stopped its steps");
            Ok(Outcome::Retry(format!(
                "the execution lease could not be renewed: {message}"
            )))
        }
        Err(Lost::Db(err)) => Err(err),
    }
}

/// What to do with the message of an execution whose lease this worker lost: whoever took
/// the execution over holds its own delivery, so acknowledge, unless the execution waits
/// for a retry (our own last state change may have raced with the lease check), which needs
/// this message to come back.
async fn after_lost_lease(deps: &WorkerDeps, id: i64) -> Result<Outcome, DbError> {
    let current = deps.db.executions().get(id).await?;
    Ok(match current.status {
        ExecutionStatus::Retrying => Outcome::Retry(
            current
                .error
                .unwrap_or_else(|| "the execution waits for a retry".to_owned()),
        ),
        _ => Outcome::Ack,
    })
}

/// Why the steps of a run stopped short.
enum Lost {
    /// Another worker holds the execution now (the heartbeat found the lease gone).
    TakenOver(String),
    /// The lease could not be renewed before it would run out (the database failed).
    Unconfirmed(String),
    /// A database operation failed (a [`DbError::Conflict`] from a leased write: the lease
    /// was lost).
    Db(DbError),
}

impl From<DbError> for Lost {
    fn from(err: DbError) -> Self {
        Self::Db(err)
    }
}

/// Renews an execution's lease every third of it until dropped, and reports its loss.
struct Heartbeat {
    task: JoinHandle<()>,
    /// Set once the lease is lost: (whether another worker holds it now, why).
    lost: watch::Receiver<Option<(bool, String)>>,
}

impl Heartbeat {
    fn start(db: Database, id: i64, owner: String, lease: Duration) -> Self {
        let (tx, lost) = watch::channel(None);
        let every = lease / 3;
        let task = tokio::spawn(async move {
            let mut confirmed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match db.executions().renew(id, &owner, lease).await {
                    Ok(true) => confirmed = tokio::time::Instant::now(),
                    Ok(false) => {
                        let _ = tx.send(Some((true, format!("{owner} no longer holds it"))));
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(execution = id, error = %err, "cannot renew an execution lease");
                        // Stop before the lease can run out and another worker take over.
                        if confirmed.elapsed() + every >= lease {
                            let _ = tx.send(Some((false, err.to_string())));
                            return;
                        }
                    }
                }
            }
        });
        Self { task, lost }
    }

    /// Resolves when the lease is lost (never while it is held).
    async fn lost(&mut self) -> Lost {
        let loss = match self.lost.wait_for(Option::is_some).await {
            Ok(loss) => loss.clone(),
            Err(_) => None,
        };
        match loss {
            Some((true, message)) => Lost::TakenOver(message),
            Some((false, message)) => Lost::Unconfirmed(message),
            None => std::future::pending().await,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the steps of `execution`, held under `owner`'s lease, from its checkpoints on.
async fn run_steps(
    deps: &WorkerDeps,
    execution: &Execution,
    owner: &str,
    attempt: u32,
) -> Result<Outcome, Lost> {
    let db = &deps.db;
    let id = execution.id;
    let workflow = db.workflows().get(execution.workflow_id).await?;
    let steps = match parse_steps(&workflow.steps) {
        Ok(steps) => steps,
        Err(invalid) => {
            return Ok(finish_failed(deps, execution, owner, &invalid.to_string()).await?);
        }
    };
    let done: HashMap<String, Value> = db
        .executions()
        .checkpoints(id)
        .await?
        .into_iter()
        .map(|c| (c.step, c.state))
        .collect();
    let mut state = execution.input.clone();
    for step in &steps {
        let name = &step.name;
        if let Some(saved) = done.get(name) {
            state = saved.clone();
            continue;
        }
        match run_step(deps, execution, step, &state).await {
            Ok(output) => {
                db.executions()
                    .save_checkpoint_leased(id, owner, deps.lease, name, &output)
                    .await?;
                state = output;
            }
            Err(StepError::Fatal(reason)) => {
                let reason = format!("step {name}: {reason}");
                return Ok(finish_failed(deps, execution, owner, &reason).await?);
            }
            Err(StepError::Retryable(reason)) => {
                let reason = format!("step {name}: {reason}");
                // The queue's attempts (redeliveries included) or the execution's (takeovers
                // included), whichever ran out first.
                let attempts = u32::try_from(execution.attempts).unwrap_or(0);
                if attempt.max(attempts) >= deps.max_attempts {
                    return Ok(finish_failed(deps, execution, owner, &reason).await?);
                }
                db.executions()
                    .transition_leased(
                        id,
                        owner,
                        ExecutionStatus::Retrying,
                        None,
                        Some(&reason),
                        |e| vec![audit_message(WORKER_ACTOR, e)],
                    )
                    .await?;
                deps.messaging.wake_relay();
                return Ok(Outcome::Retry(reason));
            }
        }
    }
    db.executions()
        .transition_leased(
            id,
            owner,
            ExecutionStatus::Completed,
            Some(&state),
            None,
            |e| vec![audit_message(WORKER_ACTOR, e), notification_message(e)],
        )
        .await?;
    deps.messaging.wake_relay();
    Ok(Outcome::Ack)
}

async fn finish_failed(
    deps: &WorkerDeps,
    execution: &Execution,
    owner: &str,
    reason: &str,
) -> Result<Outcome, DbError> {
    let reason: String = reason.chars().take(2000).collect();
    deps.db
        .executions()
        .transition_leased(
            execution.id,
            owner,
            ExecutionStatus::Failed,
            None,
            Some(&reason),
            |e| vec![audit_message(WORKER_ACTOR, e), notification_message(e)],
        )
        .await?;
    deps.messaging.wake_relay();
    Ok(Outcome::Ack)
}

async fn run_step(
    deps: &WorkerDeps,
    execution: &Execution,
    step: &Step,
    input: &Value,
) -> Result<Value, StepError> {
    match &step.kind {
        StepKind::Echo { value } => Ok(value.clone().unwrap_or_else(|| input.clone())),
        StepKind::Fail { message, retryable } => {
            if *retryable {
                Err(StepError::Retryable(message.clone()))
            } else {
                Err(StepError::Fatal(message.clone()))
            }
        }
        StepKind::Webhook { url, timeout } => {
            webhook_step(deps, execution, &step.name, url, *timeout, input).await
        }
        StepKind::Agent { agent_id } => agent_step(deps, *agent_id, input).await,
    }
}

async fn webhook_step(
    deps: &WorkerDeps,
    execution: &Execution,
    name: &str,
    url: &str,
    timeout: Duration,
    input: &Value,
) -> Result<Value, StepError> {
    let Some(http) = &deps.http else {
        return Err(StepError::Retryable("no HTTP client".to_owned()));
    };
    let request = http
        .post(url)
        .json(&json!({
            "execution_id": execution.id,
            "workflow_id": execution.workflow_id,
            "step": name,
            "input": input,
        }))
        .timeout(timeout);
    let response = match http.send(request).await {
        Ok(response) => response,
        // The URL passed the step rules but not the HTTP client's: no attempt will differ.
        Err(err @ HttpClientError::InvalidRequest { .. }) => {
            return Err(StepError::Fatal(format!("webhook {url}: {err}")));
        }
        Err(err) => return Err(StepError::Retryable(format!("webhook {url}: {err}"))),
    };
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| StepError::Retryable(format!("webhook {url}: {err}")))?;
    if !status.is_success() {
        let reason = format!("webhook {url} answered {status}");
        return if status.is_server_error() || status.as_u16() == 429 {
            Err(StepError::Retryable(reason))
        } else {
            Err(StepError::Fatal(reason))
        };
    }
    Ok(serde_json::from_slice(&body).unwrap_or_else(
        |_| json!({ "status": status.as_u16(), "body": String::from_utf8_lossy(&body) }),
    ))
}

async fn agent_step(deps: &WorkerDeps, agent_id: i64, input: &Value) -> Result<Value, StepError> {
    // The API checked the agent when the steps were written; it may have been deleted since.
    match agent_exists(&deps.db, agent_id).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(StepError::Fatal(format!("agent {agent_id} does not exist")));
        }
        Err(err) => return Err(StepError::Retryable(err.to_string())),
    }
    let Some(gateway) = &deps.llm else {
        return Err(StepError::Fatal(
            "agent steps need an LLM upstream (GROUNDWORK_LLM_BASE_URL)".to_owned(),
        ));
    };
    let agent = PromptAgent::new(
        agent_id,
        CachedRuntimes::new(&deps.caches),
        gateway.clone(),
        WORKER_ACTOR,
    );
    // One attempt here: the queue retries the whole step, and the LLM client retries calls.
    let runner = AgentRunner::new(RunnerOptions::new().max_attempts(1));
    let result = runner.run(&agent, AgentInput::new(input.clone())).await;
    match result.output {
        Some(output) if result.is_completed() => Ok(output),
        _ => Err(StepError::Retryable(result.errors.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_follow_the_state() {
        let execute = execute_message(7);
        assert_eq!(execute.message_id, "execution-7");
        assert_eq!(execute.queue, WORKFLOW_EXECUTE);
        let job: ExecuteJob =
            serde_json::from_slice(&execute.payload).unwrap_or(ExecuteJob { execution_id: 0 });
        assert_eq!(job.execution_id, 7);
    }
}
