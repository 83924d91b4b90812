//! The databases the database-backend tests run on: a SQLite file always, and a PostgreSQL
//! schema of its own when `GROUNDWORK_TEST_POSTGRES_URL` is set (CI requires it).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use groundwork_db::{Database, DatabaseOptions};
use sqlx::Connection as _;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// One backend under test.
pub(crate) struct TestDb {
    /// `"sqlite"` or `"postgres"`, for messages.
    pub(crate) name: &'static str,
    /// The migrated database.
    pub(crate) db: Database,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Closes the pool and drops the PostgreSQL schema (best effort).
    pub(crate) async fn cleanup(self) {
        self.db
            .close_within(std::time::Duration::from_secs(5))
            .await;
        if let Some((url, schema)) = self.cleanup
            && let Ok(mut admin) = sqlx::PgConnection::connect(&url).await
        {
            // Built from digits and `_` only.
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}

/// A migrated SQLite file database in a temporary directory.
pub(crate) async fn sqlite() -> anyhow::Result<TestDb> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/queue.db", dir.path().display());
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    db.migrate().await?;
    Ok(TestDb {
        name: "sqlite",
        db,
        cleanup: None,
        _dir: Some(dir),
    })
}

/// A migrated PostgreSQL schema of its own, or `None` when the run has no PostgreSQL.
pub(crate) async fn postgres(test: &str) -> anyhow::Result<Option<TestDb>> {
    let Some(url) = groundwork_testkit::services::postgres_url(test) else {
        return Ok(None);
    };
    let schema = format!(
        "gw_msg_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let mut admin = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let db = Database::connect(
        DatabaseOptions::new(url.clone())
            .search_path(schema.clone())
            .max_connections(8)
            .min_connections(0),
    )
    .await?;
    db.wait_ready(std::time::Duration::from_secs(10)).await?;
    db.migrate().await?;
    Ok(Some(TestDb {
        name: "postgres",
        db,
        cleanup: Some((url, schema)),
        _dir: None,
    }))
}

/// SQLite, and PostgreSQL when the run has it.
pub(crate) async fn all(test: &str) -> anyhow::Result<Vec<TestDb>> {
    let mut dbs = vec![sqlite().await?];
    dbs.extend(postgres(test).await?);
    Ok(dbs)
}

/// Waits until `check` holds, polling every 10 ms, for at most `limit`.
pub(crate) async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
