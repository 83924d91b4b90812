//! Execution leases (the `workflow.execute` handler, driven directly with copies of one
//! message, on SQLite and PostgreSQL; and through RabbitMQ with the workers running):
//! - copies of one message delivered at once, or while the first runs, run each step exactly
//!   once (counted by a local webhook whose calls outlast the lease, so the holder must renew
//!   it), and every copy is acknowledged;
//! - a holder whose lease ran out (it died after one step) is taken over once the lease has
//!   ended, not before: the checkpointed step is skipped, the takeover counts an attempt;
//! - an execution whose workers died during each of its attempts fails instead of running
//!   again;
//! - the repository's lease rules: a live lease is reported held, renewals, checkpoints and
//!   state changes by a worker that lost its lease are refused.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::{PgSchema, postgres_url};
use groundwork_db::workflows::Acquired;
use groundwork_db::{Database, DatabaseOptions, DbError, ExecutionStatus, NewWorkflow};
use groundwork_messaging::{Message, Outcome, Outgoing, Queue as _};
use groundwork_server::app::AppState;
use groundwork_server::config::Config;
use groundwork_server::messaging::{Messaging, WORKFLOW_EXECUTE};
use groundwork_server::workers::{self, ExecuteJob, WorkerDeps};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A webhook that counts its calls per step and answers after `delay`.
struct Hook {
    url: String,
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

impl Hook {
    async fn start(delay: Duration) -> anyhow::Result<Self> {
        let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let counted = counted.clone();
                async move {
                    let step = body["step"].as_str().unwrap_or_default().to_owned();
                    *counted
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(step.clone())
                        .or_default() += 1;
                    tokio::time::sleep(delay).await;
                    axum::Json(json!({ "step": step, "got": body["input"] }))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url: format!("http://{addr}/hook"),
            calls,
        })
    }

    fn calls(&self, step: &str) -> u32 {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(step)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// The workers' dependencies over `db` (the embedded queue), with `lease` and `max_attempts`.
fn deps(db: &Database, lease: Duration, max_attempts: u32) -> WorkerDeps {
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let state = AppState::new(db.clone(), &[], metrics);
    let mut deps = WorkerDeps::from_state(&state, &Config::default());
    deps.lease = lease;
    deps.max_attempts = max_attempts;
    deps
}

async fn workflow(db: &Database, name: &str, steps: Value) -> anyhow::Result<i64> {
    let workflow = db
        .workflows()
        .create(
            "test",
            &NewWorkflow {
                name: name.to_owned(),
                description: None,
                steps,
            },
        )
        .await?;
    Ok(workflow.id)
}

/// A delivery of the `workflow.execute` message of execution `id`, attempt `attempt`.
fn message(id: i64, attempt: u32) -> anyhow::Result<Message> {
    Ok(Message {
        id: format!("execution-{id}"),
        queue: WORKFLOW_EXECUTE.to_owned(),
        payload: serde_json::to_vec(&ExecuteJob { execution_id: id })?.into(),
        attempt,
    })
}

/// The checkpointed step names of execution `id`, in order.
async fn checkpoints(db: &Database, id: i64) -> anyhow::Result<Vec<String>> {
    Ok(db
        .executions()
        .checkpoints(id)
        .await?
        .into_iter()
        .map(|c| c.step)
        .collect())
}

/// Copies of one message, two at once and one while the first runs: each step runs once.
async fn copies_run_each_step_once(db: &Database) -> anyhow::Result<()> {
    // Each webhook call outlasts the lease: the holder must renew it, or a waiting copy
    // would take over and call again.
    let lease = Duration::from_millis(400);
    let hook = Hook::start(Duration::from_millis(700)).await?;
    let wf = workflow(
        db,
        "copies",
        json!([
            { "name": "first", "type": "echo", "value": { "n": 1 } },
            { "name": "slow-1", "type": "webhook", "url": hook.url },
            { "name": "slow-2", "type": "webhook", "url": hook.url },
        ]),
    )
    .await?;
    let execution = db.executions().create("test", wf, &json!({})).await?;
    let id = execution.id;
    let deps = deps(db, lease, 3);

    let started = Instant::now();
    let a = tokio::spawn(workers::run_execution(deps.clone(), message(id, 1)?));
    let b = tokio::spawn(workers::run_execution(deps.clone(), message(id, 1)?));
    // A third copy once the run is under way (a redelivery while the first worker runs).
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.total() == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the webhook was never called");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        db.executions().get(id).await?.status,
        ExecutionStatus::Running
    );
    let c = tokio::spawn(workers::run_execution(deps.clone(), message(id, 2)?));
    let outcomes = [a.await?, b.await?, c.await?];
    assert_eq!(outcomes, [Outcome::Ack, Outcome::Ack, Outcome::Ack]);
    assert!(started.elapsed() >= Duration::from_millis(1400));

    assert_eq!((hook.calls("slow-1"), hook.calls("slow-2")), (1, 1));
    let done = db.executions().get(id).await?;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
    assert_eq!(done.attempts, 1, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "step": "slow-2", "got": { "step": "slow-1", "got": { "n": 1 } } }))
    );
    assert_eq!(checkpoints(db, id).await?, ["first", "slow-1", "slow-2"]);
    assert_eq!(db.executions().lease(id).await?, None);

    // A copy arriving after the end runs nothing.
    let late = workers::run_execution(deps, message(id, 3)?).await;
    assert_eq!(late, Outcome::Ack);
    assert_eq!(hook.total(), 2);
    Ok(())
}

/// A holder that died after one step: taken over once its lease ran out.
async fn an_expired_lease_is_taken_over(db: &Database) -> anyhow::Result<()> {
    let lease = Duration::from_millis(700);
    let hook = Hook::start(Duration::ZERO).await?;
    let wf = workflow(
        db,
        "takeover",
        json!([
            { "name": "one", "type": "webhook", "url": hook.url },
            { "name": "two", "type": "webhook", "url": hook.url },
        ]),
    )
    .await?;
    let execution = db.executions().create("test", wf, &json!({})).await?;
    let id = execution.id;

    // The worker that "dies": it starts the run, saves step one, then stops renewing.
    let dead = db
        .executions()
        .acquire(id, "dead-worker", lease, 3, |_| Vec::new())
        .await?;
    let Acquired::Started(running) = dead else {
        anyhow::bail!("not started: {dead:?}");
    };
    assert_eq!(running.attempts, 1);
    db.executions()
        .save_checkpoint_leased(id, "dead-worker", lease, "one", &json!({ "from": "dead" }))
        .await?;
    let expires_at = db
        .executions()
        .lease(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no lease"))?
        .expires_at;

    let started = Instant::now();
    let outcome = workers::run_execution(deps(db, lease, 3), message(id, 2)?).await;
    assert_eq!(outcome, Outcome::Ack);
    // Not before the holder's lease (renewed by its checkpoint) ended.
    assert!(
        chrono::Utc::now() >= expires_at,
        "taken over before the lease ended"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Step one was not run again; step two ran on its checkpoint.
    assert_eq!((hook.calls("one"), hook.calls("two")), (0, 1));
    let done = db.executions().get(id).await?;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
    assert_eq!(
        done.output,
        Some(json!({ "step": "two", "got": { "from": "dead" } }))
    );
    // The takeover is an attempt.
    assert_eq!(done.attempts, 2, "{done:?}");
    assert_eq!(checkpoints(db, id).await?, ["one", "two"]);
    Ok(())
}

/// Workers that die during every attempt: the execution fails after `max_attempts`.
async fn a_crash_loop_fails_after_max_attempts(db: &Database) -> anyhow::Result<()> {
    let lease = Duration::from_millis(150);
    let wf = workflow(db, "crashing", json!([{ "name": "only", "type": "echo" }])).await?;
    let execution = db.executions().create("test", wf, &json!({})).await?;
    let id = execution.id;
    let first = db
        .executions()
        .acquire(id, "dead-1", lease, 2, |_| Vec::new())
        .await?;
    assert!(
        matches!(first, Acquired::Started(ref e) if e.attempts == 1),
        "{first:?}"
    );
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    let second = db
        .executions()
        .acquire(id, "dead-2", lease, 2, |_| Vec::new())
        .await?;
    assert!(
        matches!(second, Acquired::TakenOver(ref e) if e.attempts == 2),
        "{second:?}"
    );
    tokio::time::sleep(lease + Duration::from_millis(50)).await;

    let outcome = workers::run_execution(deps(db, lease, 2), message(id, 3)?).await;
    assert_eq!(outcome, Outcome::Ack);
    let failed = db.executions().get(id).await?;
    assert_eq!(failed.status, ExecutionStatus::Failed, "{failed:?}");
    assert_eq!(failed.attempts, 2, "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stopped during each of its 2 attempts")),
        "{failed:?}"
    );
    assert!(checkpoints(db, id).await?.is_empty());
    Ok(())
}

/// The repository's lease rules.
async fn lease_rules(db: &Database) -> anyhow::Result<()> {
    let lease = Duration::from_secs(30);
    let wf = workflow(db, "rules", json!([])).await?;
    let execution = db.executions().create("test", wf, &json!({})).await?;
    let id = execution.id;
    assert!(matches!(
        db.executions()
            .acquire(id, "holder", lease, 3, |_| Vec::new())
            .await?,
        Acquired::Started(_)
    ));
    // Held: nothing changes for another owner.
    let held = db
        .executions()
        .acquire(id, "other", lease, 3, |_| Vec::new())
        .await?;
    match held {
        Acquired::Held { owner, remaining } => {
            assert_eq!(owner, "holder");
            assert!(remaining > Duration::from_secs(25) && remaining <= lease);
        }
        other => anyhow::bail!("not held: {other:?}"),
    }
    assert_eq!(db.executions().get(id).await?.attempts, 1);
    assert!(db.executions().renew(id, "holder", lease).await?);
    assert!(!db.executions().renew(id, "other", lease).await?);
    let refused = db
        .executions()
        .save_checkpoint_leased(id, "other", lease, "x", &json!(1))
        .await;
    assert!(
        matches!(refused, Err(DbError::Conflict { .. })),
        "{refused:?}"
    );
    let refused = db
        .executions()
        .transition_leased(id, "other", ExecutionStatus::Completed, None, None, |_| {
            Vec::new()
        })
        .await;
    assert!(
        matches!(refused, Err(DbError::Conflict { .. })),
        "{refused:?}"
    );
    let invalid = db
        .executions()
        .transition_leased(id, "holder", ExecutionStatus::Running, None, None, |_| {
            Vec::new()
        })
        .await;
    assert!(
        matches!(invalid, Err(DbError::Invalid { .. })),
        "{invalid:?}"
    );
    let done = db
        .executions()
        .transition_leased(
            id,
            "holder",
            ExecutionStatus::Completed,
            Some(&json!("ok")),
            None,
            |_| Vec::new(),
        )
        .await?;
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(db.executions().lease(id).await?, None);
    assert!(!db.executions().renew(id, "holder", lease).await?);
    assert!(matches!(
        db.executions()
            .acquire(id, "late", lease, 3, |_| Vec::new())
            .await?,
        Acquired::Finished(_)
    ));
    Ok(())
}

async fn all(db: &Database) -> anyhow::Result<()> {
    lease_rules(db).await?;
    copies_run_each_step_once(db).await?;
    an_expired_lease_is_taken_over(db).await?;
    a_crash_loop_fails_after_max_attempts(db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_leases_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = common::sqlite_db(dir.path()).await?;
    all(&db).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execution_leases_on_postgres() -> anyhow::Result<()> {
    let Some(url) = postgres_url("execution_leases_on_postgres")? else {
        return Ok(());
    };
    let schema = PgSchema::create(&url, "gw_lease").await?;
    let db = Database::connect(DatabaseOptions::new(schema.database_url(&url))).await?;
    db.migrate().await?;
    let outcome = all(&db).await;
    db.close_within(Duration::from_secs(5)).await;
    outcome
}

/// Through RabbitMQ with the workers running: the same message published twice (as an
/// unconfirmed publish sent again would be) runs each step once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_through_rabbitmq_run_each_step_once() -> anyhow::Result<()> {
    let Some(url) = postgres_url("duplicate_deliveries_through_rabbitmq_run_each_step_once")?
    else {
        return Ok(());
    };
    let Some(amqp) =
        groundwork_testkit::services::amqp_url("duplicate_deliveries_through_rabbitmq")
    else {
        return Ok(());
    };
    let schema = PgSchema::create(&url, "gw_lease_amqp").await?;
    let db = Database::connect(DatabaseOptions::new(schema.database_url(&url))).await?;
    db.migrate().await?;
    let prefix = format!("test-{}-{}.", std::process::id(), schema.name());
    let outcome = through_rabbitmq(&db, &amqp, &prefix).await;
    delete_queues(&amqp, &prefix).await;
    db.close_within(Duration::from_secs(5)).await;
    outcome
}

async fn through_rabbitmq(db: &Database, amqp: &str, prefix: &str) -> anyhow::Result<()> {
    let config = Config {
        amqp_url: Some(amqp.to_owned()),
        queue_prefix: prefix.to_owned(),
        queue_retry_delays_ms: vec![50],
        ..Config::default()
    };
    let messaging = Messaging::new(db, &config)?;
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let state = AppState::new(db.clone(), &[], metrics).with_messaging(messaging.clone());
    let mut deps = WorkerDeps::from_state(&state, &config);
    deps.lease = Duration::from_millis(500);

    let hook = Hook::start(Duration::from_millis(600)).await?;
    let wf = workflow(
        db,
        "twice",
        json!([
            { "name": "a", "type": "webhook", "url": hook.url },
            { "name": "b", "type": "webhook", "url": hook.url },
        ]),
    )
    .await?;
    let execution = db.executions().create("test", wf, &json!({})).await?;
    let id = execution.id;
    let stop = CancellationToken::new();
    let tasks = workers::spawn(deps, stop.clone());
    let queue = messaging.queue_name(WORKFLOW_EXECUTE);
    let payload = serde_json::to_vec(&ExecuteJob { execution_id: id })?;
    for _ in 0..2 {
        messaging
            .broker
            .publish(
                &queue,
                Outgoing::with_id(format!("execution-{id}"), payload.clone()),
            )
            .await?;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = async {
        loop {
            let current = db.executions().get(id).await?;
            if current.status == ExecutionStatus::Completed {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "not completed: {current:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // Both copies settled: nothing left in the queue or in flight.
        loop {
            let stats = messaging.broker.stats(&queue).await?;
            if stats.depth == 0 && stats.in_flight == 0 && stats.acked == 2 {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "copies not settled: {stats:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!((hook.calls("a"), hook.calls("b")), (1, 1));
        let done = db.executions().get(id).await?;
        assert_eq!(done.attempts, 1, "{done:?}");
        Ok(())
    }
    .await;
    stop.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    if let groundwork_messaging::Broker::Amqp(queue) = &messaging.broker {
        queue.shutdown().await;
    }
    outcome
}

/// Deletes the queues the workers declared under `prefix`, best effort.
async fn delete_queues(url: &str, prefix: &str) {
    let Ok(connection) =
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await
    else {
        return;
    };
    for queue in ["workflow.execute", "notification.send", "audit.log"] {
        let mut names = vec![format!("{prefix}{queue}"), format!("{prefix}{queue}.dead")];
        names.extend((0..8).map(|tier| format!("{prefix}{queue}.retry.{tier}")));
        for name in names {
            if let Ok(channel) = connection.create_channel().await {
                let _ = channel
                    .queue_delete(
                        name.as_str().into(),
                        lapin::options::QueueDeleteOptions::default(),
                    )
                    .await;
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
}
