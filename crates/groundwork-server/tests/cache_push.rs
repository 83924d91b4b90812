//! Push refresh between instances: two `groundwork` processes on one PostgreSQL database
//! (a fresh schema); a write through A is served by B's cache within 100 ms, because A's
//! commit notifies (`LISTEN`/`NOTIFY`) and B refreshes from the change log at once. The
//! periodic refresh is set to an hour, so only the push can explain the speed.
//!
//! Needs `GROUNDWORK_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`);
//! without it the test passes after a notice, unless `GROUNDWORK_REQUIRE_POSTGRES=1`.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use common::{PgSchema, ServerProcess, id_of, items, postgres_url};
use serde_json::{Value, json};

/// The bound the push must meet: B serves A's write within this long of A's answer.
const PUSH_BOUND: Duration = Duration::from_millis(100);
/// How long to keep polling B before calling the change lost.
const GIVE_UP: Duration = Duration::from_secs(5);
/// Pause between two polls of B.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// Polls `GET path` on `server` until `seen` holds for the 200 body; returns the time from
/// `since` to the first such answer and the number of polls.
async fn poll_until(
    server: &ServerProcess,
    path: &str,
    since: Instant,
    seen: impl Fn(&Value) -> bool,
) -> anyhow::Result<(Duration, u32)> {
    let mut polls = 0_u32;
    loop {
        let (status, _, body) = server.request(Method::GET, path, None).await?;
        polls += 1;
        anyhow::ensure!(status == StatusCode::OK, "GET {path}: {status} {body}");
        if seen(&body) {
            return Ok((since.elapsed(), polls));
        }
        anyhow::ensure!(
            since.elapsed() < GIVE_UP,
            "the change never reached B within {GIVE_UP:?} ({polls} polls); last: {body}\n{}",
            server.logs()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// One counter of cache `name` on `server`.
async fn figure(server: &ServerProcess, name: &str, field: &str) -> anyhow::Result<u64> {
    let body = server
        .expect(Method::GET, "/api/v1/cache", None, StatusCode::OK)
        .await?;
    items(&body)?
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c[field].as_u64())
        .ok_or_else(|| anyhow::anyhow!("no {field} for cache {name} in {body}"))
}

fn tool_names(body: &Value) -> Vec<&str> {
    body["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_one_instance_reach_the_other_within_100ms() -> anyhow::Result<()> {
    let Some(url) = postgres_url("cache_push")? else {
        return Ok(());
    };
    // Declared first, dropped last: after both servers are killed.
    let schema = PgSchema::create(&url, "gw_push").await?;
    let database_url = schema.database_url(&url);
    let env = [
        ("GROUNDWORK_DATABASE_URL", database_url.as_str()),
        ("GROUNDWORK_CACHE_REFRESH_INTERVAL_SECS", "3600"),
    ];
    let mut a = ServerProcess::spawn("server A", &env)?;
    let mut b = ServerProcess::spawn("server B", &env)?;
    a.wait_ready(Duration::from_secs(60)).await?;
    b.wait_ready(Duration::from_secs(60)).await?;
    eprintln!(
        "cache_push: A on {}, B on {}, schema {}",
        a.port,
        b.port,
        schema.name()
    );

    let agent = id_of(
        &a.expect(
            Method::POST,
            "/api/v1/agents",
            Some(&json!({ "name": "pushed", "type": "worker" })),
            StatusCode::CREATED,
        )
        .await?,
    )?;
    let tool = id_of(
        &a.expect(
            Method::POST,
            "/api/v1/tools",
            Some(&json!({ "name": "drill", "type": "http", "config": { "v": 1 } })),
            StatusCode::CREATED,
        )
        .await?,
    )?;
    let tools_path = format!("/api/v1/agents/{agent}/tools");
    let runtime_path = format!("/api/v1/agents/{agent}/runtime");

    // B caches the agent's documents: no tools, no prompt.
    for _ in 0..2 {
        let body = b
            .expect(Method::GET, &tools_path, None, StatusCode::OK)
            .await?;
        assert_eq!(body, json!({ "items": [], "total": 0 }));
        let body = b
            .expect(Method::GET, &runtime_path, None, StatusCode::OK)
            .await?;
        assert_eq!(body["prompt"], Value::Null, "{body}");
        assert_eq!(body["tools"], json!([]), "{body}");
    }
    let misses = figure(&b, "agent_tools", "misses").await?;
    let refreshes = figure(&b, "agent_tools", "refreshes").await?;

    // Attach through A; B must serve it within the bound.
    a.expect(
        Method::PUT,
        &format!("/api/v1/agents/{agent}/tools/{tool}"),
        None,
        StatusCode::CREATED,
    )
    .await?;
    let answered = Instant::now();
    let (attach_latency, polls) = poll_until(&b, &tools_path, answered, |body| {
        tool_names(body) == ["drill"]
    })
    .await?;
    eprintln!("cache_push: attach via A seen by B after {attach_latency:?} ({polls} polls)");
    assert!(
        attach_latency < PUSH_BOUND,
        "B served the attached tool {attach_latency:?} after A answered (bound {PUSH_BOUND:?})\n{}",
        b.logs()
    );
    assert_eq!(
        figure(&b, "agent_tools", "misses").await?,
        misses,
        "B's polls were hits: the entry was refreshed in place, not reloaded on a miss"
    );
    assert!(
        figure(&b, "agent_tools", "refreshes").await? > refreshes,
        "B refreshed (pushed) since the fill"
    );

    // A tool change through A.
    a.expect(
        Method::PATCH,
        &format!("/api/v1/tools/{tool}"),
        Some(&json!({ "config": { "v": 2 } })),
        StatusCode::OK,
    )
    .await?;
    let answered = Instant::now();
    let (patch_latency, polls) = poll_until(&b, &tools_path, answered, |body| {
        body["items"][0]["config"] == json!({ "v": 2 })
    })
    .await?;
    eprintln!("cache_push: tool PATCH via A seen by B after {patch_latency:?} ({polls} polls)");
    assert!(
        patch_latency < PUSH_BOUND,
        "B served the changed tool {patch_latency:?} after A answered (bound {PUSH_BOUND:?})\n{}",
        b.logs()
    );

    // A prompt for the agent's type, created through A, in B's runtime.
    let prompt = id_of(
        &a.expect(
            Method::POST,
            "/api/v1/prompts",
            Some(&json!({ "name": "p", "content": "hello", "agent_type": "worker" })),
            StatusCode::CREATED,
        )
        .await?,
    )?;
    let answered = Instant::now();
    let (prompt_latency, polls) = poll_until(&b, &runtime_path, answered, |body| {
        body["prompt"]["id"].as_i64() == Some(prompt)
    })
    .await?;
    eprintln!(
        "cache_push: prompt create via A seen in B's runtime after {prompt_latency:?} ({polls} polls)"
    );
    assert!(
        prompt_latency < PUSH_BOUND,
        "B served the new prompt {prompt_latency:?} after A answered (bound {PUSH_BOUND:?})\n{}",
        b.logs()
    );
    let runtime = b
        .expect(Method::GET, &runtime_path, None, StatusCode::OK)
        .await?;
    assert_eq!(runtime["prompt"]["content"], "hello", "{runtime}");
    assert_eq!(
        runtime["tools"][0]["config"],
        json!({ "v": 2 }),
        "{runtime}"
    );
    Ok(())
}
