//! Helpers of the pool-supervisor tests: a PostgreSQL schema reached through a fault-injection
//! proxy.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use groundwork_db::{Database, DatabaseOptions};
use groundwork_testkit::{TcpProxy, upstream_of, with_port};
use sqlx::Connection as _;

/// The PostgreSQL URL of the run, or `None` (after a notice) when the test should skip.
pub(crate) fn postgres_url() -> Option<String> {
    groundwork_testkit::services::postgres_url("pool supervisor test")
}

/// A schema of its own on the real server, and a proxy in front of the server.
pub(crate) struct Setup {
    pub(crate) proxy: TcpProxy,
    /// The server's URL (direct, not through the proxy).
    pub(crate) url: String,
    /// The URL through the proxy.
    pub(crate) proxied: String,
    pub(crate) schema: String,
}

impl Setup {
    pub(crate) async fn new(url: &str, tag: &str) -> anyhow::Result<Self> {
        let proxy = TcpProxy::start(upstream_of(url).await?).await?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let schema = format!("gw_sup_{tag}_{}_{nanos}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(url).await?;
        // Built from a fixed tag, digits and `_` only: a safe identifier.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self {
            proxied: with_port(url, proxy.port()),
            proxy,
            url: url.to_owned(),
            schema,
        })
    }

    /// Options for the proxied URL in this schema, migrated on connect.
    pub(crate) fn options(&self) -> DatabaseOptions {
        DatabaseOptions::new(self.proxied.clone())
            .search_path(self.schema.clone())
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .migrate_on_connect(true)
    }

    /// Closes `db` and drops the schema (best effort).
    pub(crate) async fn cleanup(self, db: Database) {
        db.close_within(Duration::from_secs(2)).await;
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&self.url).await?;
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await?;
            admin.close().await
        }
        .await;
        if let Err(err) = dropped {
            eprintln!("could not drop test schema {}: {err}", self.schema);
        }
    }
}

/// Polls `condition` every 5 ms until it holds or `limit` passes; returns the time it took.
#[allow(dead_code)] // not every test file polls
pub(crate) async fn within(
    limit: Duration,
    mut condition: impl AsyncFnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
