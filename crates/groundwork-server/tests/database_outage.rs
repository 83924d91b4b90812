//! The server and its database going away, through a TCP proxy between the `groundwork`
//! binary and PostgreSQL:
//! - started with the database unreachable, the server is up, `/ready` answers 503 and
//!   requests that need the database answer 503 `unavailable`; once the database is
//!   reachable, `/ready` answers 200 within a second;
//! - the database black-holed under load (connections accepted, never answered): cached
//!   endpoints keep answering 200; once the pool's breaker is open, uncached requests answer
//!   503 in under 1 ms (measured by the server's own latency histogram); no request outlives
//!   the query deadline; after the database comes back, the first uncached request succeeds
//!   within a second.
//!
//! Needs `GROUNDWORK_TEST_POSTGRES_URL`; without it the tests pass after a notice, unless
//! `GROUNDWORK_REQUIRE_POSTGRES=1`.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{PgSchema, ServerProcess, assert_error, id_of, postgres_url};
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};
use serde_json::json;

/// The query deadline given to the server.
const DEADLINE: Duration = Duration::from_secs(2);

/// One outage at a time: the latency bounds mean little with two servers competing for the
/// two cores of a test machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn server_through_proxy(
    test: &str,
    prefix: &str,
) -> anyhow::Result<Option<(PgSchema, TcpProxy, ServerProcess)>> {
    let Some(url) = postgres_url(test)? else {
        return Ok(None);
    };
    let schema = PgSchema::create(&url, prefix).await?;
    let proxy = TcpProxy::start(upstream_of(&url).await?).await?;
    let database_url = schema.database_url(&with_port(&url, proxy.port()));
    let deadline_ms = DEADLINE.as_millis().to_string();
    let server = ServerProcess::spawn(
        test,
        &[
            ("GROUNDWORK_DATABASE_URL", &database_url),
            ("GROUNDWORK_DATABASE_QUERY_TIMEOUT_MS", &deadline_ms),
            ("GROUNDWORK_DATABASE_ACQUIRE_TIMEOUT_SECS", "2"),
            ("GROUNDWORK_CACHE_START_TIMEOUT_SECS", "1"),
        ],
    )?;
    Ok(Some((schema, proxy, server)))
}

async fn wait_up(server: &ServerProcess) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok((StatusCode::OK, _, _)) = server.request(Method::GET, "/health", None).await {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not come up\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The database breaker's state from `/api/v1/infra`.
async fn breaker_state(server: &ServerProcess) -> anyhow::Result<String> {
    let infra = server
        .expect(Method::GET, "/api/v1/infra", None, StatusCode::OK)
        .await?;
    Ok(infra["database"]["breaker"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// `(count under 1 ms, count)` of the 503 answers of `route` so far, from `/metrics`.
async fn fast_503s(server: &ServerProcess, route: &str) -> anyhow::Result<(u64, u64)> {
    let (_, _, body) = server.request(Method::GET, "/metrics", None).await?;
    let text = body.as_str().unwrap_or_default().to_owned();
    let labels = format!("method=\"GET\",route=\"{route}\",status=\"503\"");
    let value = |line: &str| -> u64 {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let mut under_1ms = 0;
    let mut count = 0;
    for line in text.lines().filter(|l| l.contains(&labels)) {
        if line.starts_with("http_request_duration_seconds_bucket") && line.contains("le=\"0.001\"")
        {
            under_1ms = value(line);
        } else if line.starts_with("http_request_duration_seconds_count") {
            count = value(line);
        }
    }
    Ok((under_1ms, count))
}

#[tokio::test]
async fn the_server_starts_without_its_database_and_is_ready_once_it_answers() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let test = "starts_without_database";
    let Some((_schema, proxy, server)) = server_through_proxy(test, "gw_nodb").await? else {
        return Ok(());
    };
    proxy.set_mode(Mode::Refuse).await?;
    wait_up(&server).await?;

    let (status, _, ready) = server.request(Method::GET, "/ready", None).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"]["database"]["status"], "unavailable");
    let resp = server.request(Method::GET, "/api/v1/agents", None).await?;
    assert_error(&resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable");

    proxy.set_mode(Mode::Pass).await?;
    let back = Instant::now();
    loop {
        let (status, _, _) = server.request(Method::GET, "/ready", None).await?;
        if status == StatusCode::OK {
            break;
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(5),
            "not ready 5 s after the database came back\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = back.elapsed();
    eprintln!("{test}: /ready 200 {took:?} after the database became reachable");
    if std::env::var("GW_DEBUG").is_ok() {
        eprintln!("{}", server.logs());
    }
    assert!(took <= Duration::from_secs(1), "ready after {took:?}");
    // Migrated and working.
    server
        .expect(
            Method::POST,
            "/api/v1/agents",
            Some(&json!({ "name": "after-start", "type": "worker" })),
            StatusCode::CREATED,
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_black_holed_database_under_load_fails_fast_and_recovers() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let test = "black_holed_under_load";
    let Some((_schema, proxy, mut server)) = server_through_proxy(test, "gw_bh").await? else {
        return Ok(());
    };
    server.wait_ready(Duration::from_secs(30)).await?;

    // Five agents with a tool each, their tools read once (cached).
    let mut agents = Vec::new();
    for n in 0..5 {
        let agent = server
            .expect(
                Method::POST,
                "/api/v1/agents",
                Some(&json!({ "name": format!("bh-agent-{n}"), "type": "worker" })),
                StatusCode::CREATED,
            )
            .await?;
        let tool = server
            .expect(
                Method::POST,
                "/api/v1/tools",
                Some(&json!({ "name": format!("bh-tool-{n}"), "type": "http", "config": {} })),
                StatusCode::CREATED,
            )
            .await?;
        let (agent, tool) = (id_of(&agent)?, id_of(&tool)?);
        server
            .expect(
                Method::PUT,
                &format!("/api/v1/agents/{agent}/tools/{tool}"),
                Some(&json!({})),
                StatusCode::CREATED,
            )
            .await?;
        agents.push(agent);
    }
    let mut cached = Vec::new();
    for agent in &agents {
        let path = format!("/api/v1/agents/{agent}/tools");
        let body = server
            .expect(Method::GET, &path, None, StatusCode::OK)
            .await?;
        cached.push((path, body));
    }

    proxy.set_mode(Mode::BlackHole).await?;
    let cut = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut cached_failures = Vec::new();
    let mut uncached = (0_u32, 0_u32); // (503, other)
    let mut snapshot: Option<(u64, u64)> = None;
    let mut opened_after = None;
    let mut round = 0_usize;
    while cut.elapsed() < Duration::from_secs(5) {
        round += 1;
        let (path, expected) = &cached[round % cached.len()];
        let sent = Instant::now();
        let outcome = server.request(Method::GET, path, None).await;
        slowest = slowest.max(sent.elapsed());
        match outcome {
            Ok((StatusCode::OK, _, body)) if &body == expected => {}
            other => cached_failures.push(format!("{path}: {other:?}")),
        }
        let path = format!("/api/v1/agents/{}", agents[round % agents.len()]);
        let sent = Instant::now();
        let outcome = server.request(Method::GET, &path, None).await?;
        slowest = slowest.max(sent.elapsed());
        if outcome.0 == StatusCode::SERVICE_UNAVAILABLE {
            assert_error(&outcome, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
            uncached.0 += 1;
        } else {
            uncached.1 += 1;
        }
        if opened_after.is_none() && breaker_state(&server).await? != "closed" {
            opened_after = Some(cut.elapsed());
            snapshot = Some(fast_503s(&server, "/api/v1/agents/{id}").await?);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some((fast_before, count_before)) = snapshot else {
        anyhow::bail!("the database breaker never opened\n{}", server.logs());
    };
    let (fast_after, count_after) = fast_503s(&server, "/api/v1/agents/{id}").await?;
    let (fast, count) = (fast_after - fast_before, count_after - count_before);
    eprintln!(
        "{test}: breaker open {opened_after:?} after the cut; then {count} uncached 503s, {fast} \
         of them under 1 ms server-side; uncached answers {uncached:?} (503, other); slowest \
         request {slowest:?}; {} cached failures",
        cached_failures.len()
    );
    assert!(
        cached_failures.is_empty(),
        "cached reads failed: {:?}",
        &cached_failures[..cached_failures.len().min(5)]
    );
    assert!(count >= 50, "too few rejections to judge: {count}");
    // At least 99 % of the rejections answered in under 1 ms.
    assert!(fast * 100 >= count * 99, "{fast} of {count} under 1 ms");
    assert!(
        slowest <= DEADLINE + Duration::from_millis(500),
        "a request took {slowest:?}"
    );

    proxy.set_mode(Mode::Pass).await?;
    let back = Instant::now();
    let path = format!("/api/v1/agents/{}", agents[0]);
    loop {
        let (status, _, _) = server.request(Method::GET, &path, None).await?;
        if status == StatusCode::OK {
            break;
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(5),
            "no success 5 s after the database came back\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = back.elapsed();
    eprintln!("{test}: first uncached 200 {took:?} after the database came back");
    assert!(took <= Duration::from_secs(1), "recovered after {took:?}");
    Ok(())
}
