//! Incremental refresh versus full reload of the `agent_tools` cache over 1,000,000 agents,
//! on SQLite and (when `GROUNDWORK_TEST_POSTGRES_URL` is set) PostgreSQL.
//!
//! ```sh
//! GROUNDWORK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p groundwork-server --bench refresh
//! ```
//!
//! For each backend: seed N agents (default 1,000,000; `GROUNDWORK_BENCH_ROWS` to change)
//! with one tool attached to every 100th, fill the cache (one full reload, timed), then
//! `ROUNDS` times: change 10 agents through the repository (10 change-log rows) and time
//! the cache's incremental refresh (`refresh_now`, which follows the change log). Prints the
//! median and worst incremental refresh beside the full reload.

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark setup: fail loudly

use std::time::{Duration, Instant};

use groundwork_db::{AgentPatch, Database, DatabaseOptions};
use groundwork_server::caches::{CacheSettings, Caches};
use sqlx::Connection;

const ROUNDS: usize = 20;
const CHANGED: i64 = 10;

fn rows() -> i64 {
    std::env::var("GROUNDWORK_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: only run
    // the (slow) measurement under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n = rows();
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/refresh.db", dir.path().display());
    let sqlite = Database::connect(DatabaseOptions::new(&url))
        .await
        .expect("sqlite");
    sqlite.migrate().await.expect("migrate");
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("sqlite seed");
    let started = Instant::now();
    for sql in seed_sql(n, Backend::Sqlite) {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("seed");
    }
    eprintln!("sqlite: seeded {n} agents in {:.1?}", started.elapsed());
    run("sqlite", sqlite, n).await;

    match std::env::var("GROUNDWORK_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("gw_bench_refresh_{}", std::process::id());
            let mut admin = sqlx::PgConnection::connect(&url).await.expect("postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&mut admin)
                .await
                .expect("create schema");
            let db = Database::connect(DatabaseOptions::new(url.clone()).search_path(&schema))
                .await
                .expect("postgres");
            db.migrate().await.expect("migrate");
            sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                .execute(&mut admin)
                .await
                .expect("search_path");
            let started = Instant::now();
            for sql in seed_sql(n, Backend::Postgres) {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await
                    .expect("seed");
            }
            eprintln!("postgres: seeded {n} agents in {:.1?}", started.elapsed());
            run("postgres", db.clone(), n).await;
            db.close().await;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut admin)
                .await
                .expect("drop schema");
        }
        _ => eprintln!("postgres: skipped (GROUNDWORK_TEST_POSTGRES_URL is not set)"),
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn run(name: &str, db: Database, n: i64) {
    let caches = Caches::new(
        &db,
        CacheSettings {
            capacity: u64::try_from(n).unwrap_or(u64::MAX) * 2,
            ..CacheSettings::default()
        },
    );
    let cache = &caches.agent_tools;
    let started = Instant::now();
    cache.refresh_now().await.expect("full reload");
    let full = started.elapsed();
    assert_eq!(
        cache.stats().entries,
        u64::try_from(n).unwrap_or(0),
        "every agent cached"
    );

    let mut times = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let round = i64::try_from(round).unwrap_or(0);
        for i in 0..CHANGED {
            let id = 1 + (round * 7919 + i * 104_729) % n;
            let patch = AgentPatch {
                description: Some(Some(format!("round {round} change {i}"))),
                ..AgentPatch::default()
            };
            db.agents()
                .update("bench", id, &patch)
                .await
                .expect("update");
        }
        let started = Instant::now();
        cache.refresh_now().await.expect("incremental refresh");
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    println!(
        "{name}: rows={n} full_reload={:.1} ms incremental_10_rows: median={:.2} ms worst={:.2} ms ratio(full/median)={:.0}x",
        ms(full),
        ms(median),
        ms(worst),
        full.as_secs_f64() / median.as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Bulk insert SQL (the repository's one-row-per-transaction path would take
/// minutes for a million rows): agents 1..=n, 100 tools, every 100th agent gets a tool.
fn seed_sql(n: i64, backend: Backend) -> Vec<String> {
    let stamp = "2026-01-01T00:00:00+00:00";
    match backend {
        Backend::Sqlite => vec![
            format!(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {n}) \
                 INSERT INTO agents (name, type, description, config, status, created_at, updated_at) \
                 SELECT 'agent-' || i, 'assistant', NULL, '{{\"model\":\"m\"}}', 'active', '{stamp}', '{stamp}' FROM seq"
            ),
            format!(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 100) \
                 INSERT INTO tools (name, type, config, is_active, created_at, updated_at) \
                 SELECT 'tool-' || i, 'http', '{{\"url\":\"https://example.com\"}}', 1, '{stamp}', '{stamp}' FROM seq"
            ),
            format!(
                "INSERT INTO agent_tools (agent_id, tool_id, is_active, created_at, updated_at) \
                 SELECT id, 1 + (id % 100), 1, '{stamp}', '{stamp}' FROM agents WHERE id % 100 = 0"
            ),
        ],
        Backend::Postgres => vec![
            format!(
                "INSERT INTO agents (name, type, description, config, status, created_at, updated_at) \
                 SELECT 'agent-' || i, 'assistant', NULL, '{{\"model\":\"m\"}}', 'active', '{stamp}', '{stamp}' \
                 FROM generate_series(1, {n}) i"
            ),
            format!(
                "INSERT INTO tools (name, type, config, is_active, created_at, updated_at) \
                 SELECT 'tool-' || i, 'http', '{{\"url\":\"https://example.com\"}}', TRUE, '{stamp}', '{stamp}' \
                 FROM generate_series(1, 100) i"
            ),
            format!(
                "INSERT INTO agent_tools (agent_id, tool_id, is_active, created_at, updated_at) \
                 SELECT id, 1 + (id % 100), TRUE, '{stamp}', '{stamp}' FROM agents WHERE id % 100 = 0"
            ),
            "ANALYZE".to_owned(),
        ],
    }
}
