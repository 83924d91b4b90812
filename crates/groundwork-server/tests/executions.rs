//! Executions through the real binary: `POST /api/v1/workflows/{id}/executions` answers 202
//! (`queued`), a worker runs the steps (echo, then a webhook), records a checkpoint per step
//! and the state changes in the audit log; a failing step is retried, then the execution
//! fails; `GET /api/v1/queues` reports the queues. On SQLite with the embedded queue, on
//! PostgreSQL with the embedded queue, and on PostgreSQL with RabbitMQ.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{PgSchema, ServerProcess, assert_error, id_of, postgres_url};
use serde_json::{Value, json};

/// A webhook target answering `{"got": <the step's input>}`.
async fn webhook() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
            axum::Json(json!({ "got": body["input"], "step": body["step"] }))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/hook"))
}

async fn wait_for_status(server: &ServerProcess, id: i64, wanted: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = server
            .expect(
                Method::GET,
                &format!("/api/v1/executions/{id}"),
                None,
                StatusCode::OK,
            )
            .await?;
        if body["status"] == wanted {
            return Ok(body);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "execution {id} is {} after 20 s, expected {wanted}: {body}\n{}",
            body["status"],
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn audit_actions(server: &ServerProcess, id: i64) -> anyhow::Result<Vec<String>> {
    let body = server
        .expect(
            Method::GET,
            "/api/v1/audit?entity_type=execution&limit=500",
            None,
            StatusCode::OK,
        )
        .await?;
    let wanted = id.to_string();
    // In the order the changes happened (`at`, the time of each state change): the audit
    // consumer may write them in another order.
    let mut actions: Vec<(chrono::DateTime<chrono::FixedOffset>, i64, String)> = body["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["entity_id"].as_str() == Some(wanted.as_str()))
        .filter_map(|e| {
            let at = chrono::DateTime::parse_from_rfc3339(e["at"].as_str()?).ok()?;
            Some((at, e["id"].as_i64()?, e["action"].as_str()?.to_owned()))
        })
        .collect();
    actions.sort();
    Ok(actions.into_iter().map(|(_, _, a)| a).collect())
}

async fn scenario(label: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.extend([
        ("GROUNDWORK_QUEUE_RETRY_DELAYS_MS", "50"),
        ("GROUNDWORK_QUEUE_MAX_ATTEMPTS", "3"),
    ]);
    let mut server = ServerProcess::spawn(label, &env)?;
    server.wait_ready(Duration::from_secs(30)).await?;
    let hook = webhook().await?;

    // A workflow of two steps: echo, then the webhook with the echo's output.
    let workflow = server
        .expect(
            Method::POST,
            "/api/v1/workflows",
            Some(&json!({
                "name": "greet",
                "steps": [
                    { "name": "hello", "type": "echo", "value": { "hello": "world" } },
                    { "name": "hook", "type": "webhook", "url": hook },
                ],
            })),
            StatusCode::CREATED,
        )
        .await?;
    let workflow_id = id_of(&workflow)?;
    let (status, headers, queued) = server
        .request(
            Method::POST,
            &format!("/api/v1/workflows/{workflow_id}/executions"),
            Some(&json!({ "input": { "n": 1 } })),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{label}: {queued}");
    assert_eq!(queued["status"], "queued", "{label}");
    assert_eq!(queued["input"], json!({ "n": 1 }));
    let id = id_of(&queued)?;
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some(format!("/api/v1/executions/{id}").as_str())
    );

    let done = wait_for_status(&server, id, "completed").await?;
    assert_eq!(
        done["output"],
        json!({ "got": { "hello": "world" }, "step": "hook" }),
        "{label}"
    );
    assert_eq!(done["attempts"], 1);
    let steps: Vec<&str> = done["checkpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["step"].as_str())
        .collect();
    assert_eq!(steps, ["hello", "hook"], "{label}");
    // Every state change reaches the audit log through audit.log.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let actions = audit_actions(&server, id).await?;
        if actions
            == [
                "execution.queued",
                "execution.running",
                "execution.completed",
            ]
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: audit actions {actions:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A step that always fails: retried, then the execution fails after 3 attempts.
    let failing = server
        .expect(
            Method::POST,
            "/api/v1/workflows",
            Some(&json!({
                "name": "broken",
                "steps": [ { "type": "fail", "message": "boom" } ],
            })),
            StatusCode::CREATED,
        )
        .await?;
    let failing_id = id_of(&failing)?;
    // No body at all is an empty input.
    let queued = server
        .expect(
            Method::POST,
            &format!("/api/v1/workflows/{failing_id}/executions"),
            None,
            StatusCode::ACCEPTED,
        )
        .await?;
    let id = id_of(&queued)?;
    let failed = wait_for_status(&server, id, "failed").await?;
    assert_eq!(failed["attempts"], 3, "{label}: {failed}");
    assert!(
        failed["error"].as_str().unwrap_or("").contains("boom"),
        "{label}: {failed}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let actions = audit_actions(&server, id).await?;
        let retried = actions
            .iter()
            .filter(|a| *a == "execution.retrying")
            .count();
        if retried == 2 && actions.last().map(String::as_str) == Some("execution.failed") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{label}: audit actions {actions:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Bad requests.
    let resp = server
        .request(
            Method::POST,
            "/api/v1/workflows/999999/executions",
            Some(&json!({})),
        )
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");
    let resp = server
        .request(
            Method::POST,
            &format!("/api/v1/workflows/{failing_id}/executions"),
            Some(&json!({ "input": {}, "surprise": 1 })),
        )
        .await?;
    assert!(resp.0.is_client_error(), "{label}: {resp:?}");
    let resp = server
        .request(Method::GET, "/api/v1/executions/999999", None)
        .await?;
    assert_error(&resp, StatusCode::NOT_FOUND, "not_found");

    // Queue figures: the three queues, nothing left behind.
    let queues = server
        .expect(Method::GET, "/api/v1/queues", None, StatusCode::OK)
        .await?;
    let names: Vec<&str> = queues["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{label}: {queues}");
    let backend = if env.iter().any(|(k, _)| *k == "GROUNDWORK_AMQP_URL") {
        "amqp"
    } else {
        "database"
    };
    assert_eq!(queues["backend"], backend, "{label}");
    assert!(names.iter().any(|n| n.ends_with("workflow.execute")));
    assert!(
        queues["errors"].as_array().is_some_and(Vec::is_empty),
        "{queues}"
    );
    let metrics = server.request(Method::GET, "/metrics", None).await?;
    assert_eq!(metrics.0, StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_run_on_sqlite_with_the_embedded_queue() -> anyhow::Result<()> {
    scenario("sqlite", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_run_on_postgres_with_the_embedded_queue() -> anyhow::Result<()> {
    let Some(url) = postgres_url("executions_run_on_postgres")? else {
        return Ok(());
    };
    let schema = PgSchema::create(&url, "gw_exec").await?;
    let db_url = schema.database_url(&url);
    scenario("postgres", &[("GROUNDWORK_DATABASE_URL", db_url.as_str())]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_run_on_postgres_with_rabbitmq() -> anyhow::Result<()> {
    let Some(url) = postgres_url("executions_run_on_postgres_with_rabbitmq")? else {
        return Ok(());
    };
    let Some(amqp) = groundwork_testkit::services::amqp_url("executions_run_with_rabbitmq") else {
        return Ok(());
    };
    let schema = PgSchema::create(&url, "gw_exec_amqp").await?;
    let db_url = schema.database_url(&url);
    // Queues of their own on the shared broker.
    let prefix = format!("test-{}-{}.", std::process::id(), schema.name());
    let outcome = scenario(
        "postgres+rabbitmq",
        &[
            ("GROUNDWORK_DATABASE_URL", db_url.as_str()),
            ("GROUNDWORK_AMQP_URL", amqp.as_str()),
            ("GROUNDWORK_QUEUE_PREFIX", prefix.as_str()),
        ],
    )
    .await;
    delete_queues(&amqp, &prefix).await;
    outcome
}

/// Deletes the queues the server declared under `prefix` (each queue, its dead-letter queue
/// and its delay queues), best effort, so that runs do not pile queues up on the broker.
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
            // A missing queue closes the channel: one channel per deletion.
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
