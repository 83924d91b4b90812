//! Stale-if-error: when the database becomes unreachable, the cached reads of
//! `GET /api/v1/agents/{id}/tools` and `/runtime` keep answering 200 with the last known body,
//! fast (the cache backs off instead of waiting on the dead database), even past their TTL;
//! an uncached agent answers 503 `unavailable`; `/ready` says the database is unavailable;
//! and once the database is back, writes work and are served again.
//!
//! The `groundwork` binary talks to PostgreSQL through a TCP proxy in this test, which can
//! cut every connection. Two ways of being cut are tried: connections refused (the database
//! host is up, PostgreSQL is down: each connection attempt is retried until the pool's
//! acquire timeout) and connections accepted then closed at once (a proxy in front of a dead
//! database: each attempt fails at once).
//!
//! Needs `GROUNDWORK_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`);
//! without it the tests pass after a notice, unless `GROUNDWORK_REQUIRE_POSTGRES=1`.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{PgSchema, ServerProcess, assert_error, id_of, items, postgres_url};
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The pool's acquire timeout given to the server (`GROUNDWORK_DATABASE_ACQUIRE_TIMEOUT_SECS`).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// The cache TTL given to the server (`GROUNDWORK_CACHE_TTL_SECS`).
const TTL: Duration = Duration::from_secs(1);
/// A cached read during the outage must answer within this long.
const FAST: Duration = Duration::from_millis(50);
/// How long cached reads are checked during the outage.
const OUTAGE_READS_FOR: Duration = Duration::from_secs(4);

/// One outage at a time: the latency bounds mean little with two servers competing for the
/// two cores of a test machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Cuts the database off in `mode` (`Refuse` or `Close`): every live connection is closed,
/// and connecting is refused (or closed at once); returns when that is in effect.
async fn cut(proxy: &TcpProxy, mode: Mode) -> anyhow::Result<()> {
    proxy.set_mode(mode).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let closed = proxy.live_connections() == 0;
        let refused = match mode {
            Mode::Refuse => TcpStream::connect(proxy.addr()).await.is_err(),
            _ => true,
        };
        if closed && refused {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the proxy did not cut within 5 s ({} live connections, refusing: {refused})",
            proxy.live_connections()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The `/api/v1/cache` entry of cache `name`.
async fn cache_view(server: &ServerProcess, name: &str) -> anyhow::Result<Value> {
    let body = server
        .expect(Method::GET, "/api/v1/cache", None, StatusCode::OK)
        .await?;
    items(&body)?
        .into_iter()
        .find(|c| c["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("no cache {name} in {body}"))
}

fn count(view: &Value, field: &str) -> u64 {
    view[field].as_u64().unwrap_or(0)
}

/// Whether both caches have seen the database fail.
async fn both_failed(server: &ServerProcess) -> anyhow::Result<bool> {
    for name in ["agent_tools", "agent_runtime"] {
        let view = cache_view(server, name).await?;
        if count(&view, "refresh_failures") + count(&view, "load_failures") == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A read that broke the contract during the outage.
struct Violation {
    path: String,
    at: Duration,
    took: Duration,
    what: String,
}

async fn outage(mode: Mode, test: &str) -> anyhow::Result<()> {
    let Some(url) = postgres_url(test)? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    // Declared first, dropped last: after the server is killed and the proxy closed.
    let schema = PgSchema::create(&url, "gw_outage").await?;
    let proxy = TcpProxy::start(upstream_of(&url).await?).await?;
    let database_url = schema.database_url(&with_port(&url, proxy.port()));
    let acquire = ACQUIRE_TIMEOUT.as_secs().to_string();
    let ttl = TTL.as_secs().to_string();
    let mut server = ServerProcess::spawn(
        test,
        &[
            ("GROUNDWORK_DATABASE_URL", database_url.as_str()),
            ("GROUNDWORK_DATABASE_ACQUIRE_TIMEOUT_SECS", acquire.as_str()),
            ("GROUNDWORK_CACHE_TTL_SECS", ttl.as_str()),
            ("GROUNDWORK_CACHE_MAX_STALENESS_SECS", "3600"),
            ("GROUNDWORK_CACHE_REFRESH_INTERVAL_SECS", "1"),
        ],
    )?;
    server.wait_ready(Duration::from_secs(60)).await?;

    // Seed: three agents read (cached), one never read; tools; a prompt for workers.
    let mut agents = Vec::new();
    for (name, kind) in [("w1", "worker"), ("w2", "worker"), ("r1", "reviewer")] {
        agents.push(id_of(
            &server
                .expect(
                    Method::POST,
                    "/api/v1/agents",
                    Some(&json!({ "name": name, "type": kind })),
                    StatusCode::CREATED,
                )
                .await?,
        )?);
    }
    let unread = id_of(
        &server
            .expect(
                Method::POST,
                "/api/v1/agents",
                Some(&json!({ "name": "never-read", "type": "worker" })),
                StatusCode::CREATED,
            )
            .await?,
    )?;
    let mut tools = Vec::new();
    for name in ["alpha", "beta", "spare"] {
        tools.push(id_of(
            &server
                .expect(
                    Method::POST,
                    "/api/v1/tools",
                    Some(&json!({ "name": name, "type": "http", "config": { "n": name } })),
                    StatusCode::CREATED,
                )
                .await?,
        )?);
    }
    for (agent, tool) in [
        (agents[0], tools[0]),
        (agents[0], tools[1]),
        (agents[1], tools[1]),
        (agents[2], tools[0]),
        (unread, tools[0]),
    ] {
        server
            .expect(
                Method::PUT,
                &format!("/api/v1/agents/{agent}/tools/{tool}"),
                None,
                StatusCode::CREATED,
            )
            .await?;
    }
    server
        .expect(
            Method::POST,
            "/api/v1/prompts",
            Some(&json!({ "name": "p", "content": "work", "agent_type": "worker" })),
            StatusCode::CREATED,
        )
        .await?;

    // Cache the documents of the three agents.
    let mut cached: Vec<(String, Value)> = Vec::new();
    for agent in &agents {
        for doc in ["tools", "runtime"] {
            let path = format!("/api/v1/agents/{agent}/{doc}");
            let body = server
                .expect(Method::GET, &path, None, StatusCode::OK)
                .await?;
            cached.push((path, body));
        }
    }
    for (path, body) in &cached {
        let again = server
            .expect(Method::GET, path, None, StatusCode::OK)
            .await?;
        anyhow::ensure!(&again == body, "{path} changed by itself: {body} → {again}");
    }

    // The outage.
    cut(&proxy, mode).await?;
    let cut_at = Instant::now();
    // Wait for the TTL to pass and for both caches to have seen the database fail: from
    // then on no read may wait on the dead database.
    let first_failure = loop {
        if cut_at.elapsed() > TTL + Duration::from_millis(500) && both_failed(&server).await? {
            break cut_at.elapsed();
        }
        anyhow::ensure!(
            cut_at.elapsed() < Duration::from_secs(30),
            "the caches did not notice the outage within 30 s\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let started = Instant::now();
    let mut reads = 0_u32;
    let mut took_all: Vec<Duration> = Vec::new();
    let mut violations: Vec<Violation> = Vec::new();
    while started.elapsed() < OUTAGE_READS_FOR {
        for (path, expected) in &cached {
            let sent = Instant::now();
            let outcome = server.request(Method::GET, path, None).await;
            let took = sent.elapsed();
            reads += 1;
            took_all.push(took);
            let what = match outcome {
                Ok((StatusCode::OK, _, body)) if &body == expected => None,
                Ok((status, _, body)) => Some(format!("{status} {body}")),
                Err(err) => Some(format!("{err:#}")),
            };
            let what = match what {
                Some(what) => Some(what),
                None if took >= FAST => Some("slow".to_owned()),
                None => None,
            };
            if let Some(what) = what {
                violations.push(Violation {
                    path: path.clone(),
                    at: cut_at.elapsed(),
                    took,
                    what,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took_all.sort_unstable();
    let percentile = |p: usize| {
        took_all
            .get((took_all.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "{test}: caches saw the failure {first_failure:?} after the cut; {reads} cached reads \
         from {:?} to {:?} after the cut: p50 {:?}, p99 {:?}, max {:?}; {} broke the contract",
        started.duration_since(cut_at),
        cut_at.elapsed(),
        percentile(50),
        percentile(99),
        percentile(100),
        violations.len()
    );
    for v in violations.iter().take(20) {
        eprintln!(
            "{test}:   {} at {:?} after the cut took {:?}: {}",
            v.path, v.at, v.took, v.what
        );
    }

    // Not cached: 503 within the acquire timeout and a margin.
    let mut uncached = Vec::new();
    for doc in ["tools", "runtime"] {
        let path = format!("/api/v1/agents/{unread}/{doc}");
        let sent = Instant::now();
        let resp = server.request(Method::GET, &path, None).await?;
        let took = sent.elapsed();
        eprintln!("{test}: uncached {path} answered {} in {took:?}", resp.0);
        uncached.push((path, resp, took));
    }
    // A write cannot succeed either.
    let sent = Instant::now();
    let write = server
        .request(
            Method::POST,
            "/api/v1/agents",
            Some(&json!({ "name": "during-outage", "type": "worker" })),
        )
        .await?;
    let write_took = sent.elapsed();
    eprintln!(
        "{test}: a write during the outage answered {} in {write_took:?}",
        write.0
    );
    let (ready_status, _, ready) = server.request(Method::GET, "/ready", None).await?;
    let mut views = Vec::new();
    for name in ["agent_tools", "agent_runtime"] {
        let view = cache_view(&server, name).await?;
        eprintln!("{test}: during the outage {view}");
        views.push(view);
    }

    // Back: a write works again within a few seconds and is served.
    proxy.set_mode(Mode::Pass).await?;
    let restored = Instant::now();
    let attach = format!("/api/v1/agents/{}/tools/{}", agents[0], tools[2]);
    let recovered = loop {
        let (status, _, body) = server.request(Method::PUT, &attach, None).await?;
        if status == StatusCode::CREATED {
            break restored.elapsed();
        }
        anyhow::ensure!(
            restored.elapsed() < Duration::from_secs(15),
            "writes did not work again within 15 s of the restore: {status} {body}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = server
        .expect(
            Method::GET,
            &format!("/api/v1/agents/{}/tools", agents[0]),
            None,
            StatusCode::OK,
        )
        .await?;
    let names: Vec<&str> = after["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let ready_again = loop {
        let (status, _, _) = server.request(Method::GET, "/ready", None).await?;
        if status == StatusCode::OK {
            break Some(restored.elapsed());
        }
        if restored.elapsed() > Duration::from_secs(15) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{test}: after the restore a write worked after {recovered:?}, /ready was 200 after {ready_again:?}"
    );

    // The verdicts, after everything was measured.
    assert!(
        violations.is_empty(),
        "{} of {reads} cached reads during the outage were not a fast 200 with the cached body \
         (first: {} at {:?} after the cut took {:?}: {})",
        violations.len(),
        violations.first().map_or("", |v| v.path.as_str()),
        violations.first().map(|v| v.at).unwrap_or_default(),
        violations.first().map(|v| v.took).unwrap_or_default(),
        violations.first().map_or("", |v| v.what.as_str()),
    );
    for (path, resp, took) in &uncached {
        assert_error(resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
        assert!(
            *took < ACQUIRE_TIMEOUT + Duration::from_millis(1500),
            "uncached {path} took {took:?}"
        );
    }
    assert_error(&write, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    for view in &views {
        assert!(count(view, "stale_hits") > 0, "no stale hits: {view}");
        assert!(
            count(view, "refresh_failures") + count(view, "load_failures") > 0,
            "no failures counted: {view}"
        );
    }
    assert_eq!(ready_status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["status"], "unavailable", "{ready}");
    assert_eq!(
        ready["checks"]["database"]["status"], "unavailable",
        "{ready}"
    );
    assert_eq!(names, ["alpha", "beta", "spare"], "{after}");
    assert!(
        ready_again.is_some(),
        "/ready did not answer 200 within 15 s of the restore"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_survive_a_refused_database() -> anyhow::Result<()> {
    outage(Mode::Refuse, "outage_refused").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_survive_dropped_connections() -> anyhow::Result<()> {
    outage(Mode::Close, "outage_closed").await
}
