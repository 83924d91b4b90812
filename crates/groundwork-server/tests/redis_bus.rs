//! Redis as the change bus between instances, and Redis trouble degrading only what uses it:
//! - two `groundwork` processes sharing one SQLite file (no PostgreSQL `NOTIFY` there): a
//!   write through one is served by the other within a second, through Redis, although the
//!   periodic refresh is a minute away;
//! - Redis black-holed (through a TCP proxy): every request still succeeds and writes are not
//!   slowed by more than Redis's operation timeout; `/ready` stays 200 with Redis `degraded`
//!   and `/api/v1/infra` shows its breaker open; once Redis is back, the bus works again.
//!
//! Needs `GROUNDWORK_TEST_REDIS_URL` (e.g. `redis://127.0.0.1:6379`); without it the tests
//! pass after a notice, unless `GROUNDWORK_REQUIRE_REDIS=1`.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{ServerProcess, id_of};
use groundwork_testkit::services::redis_url;
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};
use serde_json::{Value, json};

/// One test at a time: both start servers and measure latencies on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn server(label: &str, database_url: &str, redis_url: &str) -> anyhow::Result<ServerProcess> {
    ServerProcess::spawn(
        label,
        &[
            ("GROUNDWORK_DATABASE_URL", database_url),
            ("GROUNDWORK_REDIS_URL", redis_url),
        ],
    )
}

async fn create(server: &ServerProcess, path: &str, body: Value) -> anyhow::Result<i64> {
    id_of(
        &server
            .expect(Method::POST, path, Some(&body), StatusCode::CREATED)
            .await?,
    )
}

async fn tool_names(server: &ServerProcess, agent: i64) -> anyhow::Result<Vec<String>> {
    let body = server
        .expect(
            Method::GET,
            &format!("/api/v1/agents/{agent}/tools"),
            None,
            StatusCode::OK,
        )
        .await?;
    Ok(body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn a_write_through_one_instance_is_served_by_the_other_through_redis() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let test = "redis_bus_two_instances";
    let Some(redis) = redis_url(test) else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let database_url = format!("sqlite://{}/shared.db", dir.path().display());
    let mut a = server("instance-a", &database_url, &redis)?;
    a.wait_ready(Duration::from_secs(30)).await?;
    // Started second, on the migrated file.
    let mut b = server("instance-b", &database_url, &redis)?;
    b.wait_ready(Duration::from_secs(30)).await?;

    let agent = create(
        &a,
        "/api/v1/agents",
        json!({ "name": "bus-agent", "type": "worker" }),
    )
    .await?;
    let tool = create(
        &a,
        "/api/v1/tools",
        json!({ "name": "bus-tool", "type": "http", "config": {} }),
    )
    .await?;
    // B caches the agent's (empty) tool list.
    let started = Instant::now();
    while tool_names(&b, agent).await.is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(5),
            "B never saw the agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tool_names(&b, agent).await?.is_empty());

    a.expect(
        Method::PUT,
        &format!("/api/v1/agents/{agent}/tools/{tool}"),
        Some(&json!({})),
        StatusCode::CREATED,
    )
    .await?;
    let written = Instant::now();
    loop {
        if tool_names(&b, agent).await? == ["bus-tool"] {
            break;
        }
        anyhow::ensure!(
            written.elapsed() < Duration::from_secs(1),
            "B still serves the old tools 1 s after the write\n{}\n{}",
            a.logs(),
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "{test}: B served the write {:?} after A made it",
        written.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_black_holed_redis_degrades_the_bus_and_fails_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let test = "redis_black_holed";
    let Some(redis) = redis_url(test) else {
        return Ok(());
    };
    let proxy = TcpProxy::start(upstream_of(&redis).await?).await?;
    let dir = tempfile::tempdir()?;
    let database_url = format!("sqlite://{}/degraded.db", dir.path().display());
    let mut server = server(test, &database_url, &with_port(&redis, proxy.port()))?;
    server.wait_ready(Duration::from_secs(30)).await?;
    let (_, _, ready) = server.request(Method::GET, "/ready", None).await?;
    assert_eq!(ready["checks"]["redis"]["status"], "ok", "{ready}");

    let write = |n: u32| {
        let server = &server;
        async move {
            let sent = Instant::now();
            let (status, _, body) = server
                .request(
                    Method::POST,
                    "/api/v1/agents",
                    Some(&json!({ "name": format!("degraded-{n}"), "type": "worker" })),
                )
                .await?;
            anyhow::ensure!(status == StatusCode::CREATED, "write {n}: {status} {body}");
            let agent = id_of(&body)?;
            let (status, _, body) = server
                .request(Method::GET, &format!("/api/v1/agents/{agent}/tools"), None)
                .await?;
            anyhow::ensure!(status == StatusCode::OK, "read {n}: {status} {body}");
            anyhow::Ok(sent.elapsed())
        }
    };
    let mut before = Vec::new();
    for n in 0..20 {
        before.push(write(n).await?);
    }

    proxy.set_mode(Mode::BlackHole).await?;
    let mut during = Vec::new();
    for n in 100..160 {
        during.push(write(n).await?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let infra = server
        .expect(Method::GET, "/api/v1/infra", None, StatusCode::OK)
        .await?;
    let (status, _, ready) = server.request(Method::GET, "/ready", None).await?;
    before.sort();
    during.sort();
    let p50 = |v: &[Duration]| v[v.len() / 2];
    let max = |v: &[Duration]| v[v.len() - 1];
    eprintln!(
        "{test}: write + read before: p50 {:?} max {:?}; Redis black-holed: p50 {:?} max {:?}; \
         redis breaker {}, ready {status}",
        p50(&before),
        max(&before),
        p50(&during),
        max(&during),
        infra["redis"]["breaker"]["state"]
    );
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"]["redis"]["status"], "degraded", "{ready}");
    assert_ne!(infra["redis"]["breaker"]["state"], "closed", "{infra}");
    // Announcing never waits on Redis: no request is slowed by more than the 50 ms
    // operation timeout (plus scheduling slack on a loaded test machine).
    assert!(
        max(&during) <= max(&before) + Duration::from_millis(50 + 50),
        "a request took {:?} with Redis black-holed",
        max(&during)
    );

    proxy.set_mode(Mode::Pass).await?;
    let back = Instant::now();
    loop {
        let (_, _, ready) = server.request(Method::GET, "/ready", None).await?;
        if ready["checks"]["redis"]["status"] == "ok" {
            break;
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(10),
            "Redis not ok 10 s after it came back: {ready}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{test}: Redis ok again {:?} after it came back",
        back.elapsed()
    );
    Ok(())
}
