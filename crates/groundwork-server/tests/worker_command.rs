//! `groundwork serve --no-workers` accepts executions and leaves them queued; a separate
//! `groundwork worker` on the same database runs them; SIGTERM stops the worker cleanly.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{ServerProcess, id_of};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_worker_runs_what_the_api_queued() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}/shared.db", dir.path().display());
    let env = [
        ("GROUNDWORK_DATABASE_URL", db_url.as_str()),
        ("GROUNDWORK_QUEUE_RETRY_DELAYS_MS", "50"),
    ];
    let mut api = ServerProcess::spawn_with("api", &["serve", "--no-workers"], &env)?;
    api.wait_ready(Duration::from_secs(30)).await?;
    let workflow = api
        .expect(
            Method::POST,
            "/api/v1/workflows",
            Some(&json!({ "name": "w", "steps": [{ "type": "echo" }] })),
            StatusCode::CREATED,
        )
        .await?;
    let queued = api
        .expect(
            Method::POST,
            &format!("/api/v1/workflows/{}/executions", id_of(&workflow)?),
            Some(&json!({ "input": { "x": 1 } })),
            StatusCode::ACCEPTED,
        )
        .await?;
    let path = format!("/api/v1/executions/{}", id_of(&queued)?);

    // Without a worker it stays queued (the relay has moved it to the queue).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = api.expect(Method::GET, &path, None, StatusCode::OK).await?;
    assert_eq!(still["status"], "queued", "{still}");

    // A worker process on the same database runs it.
    let mut worker = ServerProcess::spawn_with("worker", &["worker"], &env)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = api.expect(Method::GET, &path, None, StatusCode::OK).await?;
        if body["status"] == "completed" {
            assert_eq!(body["output"], json!({ "x": 1 }));
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not completed: {body}\n{}\n{}",
            worker.logs(),
            api.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = worker.terminate(Duration::from_secs(15)).await?;
    let logs = worker.logs();
    assert!(status.success(), "{status}\n{logs}");
    assert!(logs.contains("groundwork worker running"), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    Ok(())
}
