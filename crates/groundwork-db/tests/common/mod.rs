//! Shared helpers of the conformance suite: backends, fixtures and error assertions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use groundwork_db::{
    AgentStatus, AuditEntry, AuditFilter, Change, Database, DatabaseOptions, Entity, NewAgent,
    NewDigest, NewPrompt, NewTool, NewUser, NewWorkflow, Op, Page,
};
use serde_json::json;
use sqlx::Connection;

/// The actor most tests write as.
pub(crate) const ACTOR: &str = "tester";

/// Environment variable with the PostgreSQL server URL the suite runs against.
pub(crate) const POSTGRES_URL_VAR: &str = "GROUNDWORK_TEST_POSTGRES_URL";
/// When `1`, a missing [`POSTGRES_URL_VAR`] fails the run instead of skipping PostgreSQL.
pub(crate) const REQUIRE_POSTGRES_VAR: &str = "GROUNDWORK_REQUIRE_POSTGRES";

static SCHEMA_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, migrated SQLite file database (WAL mode) in a temporary directory that lives as
/// long as the test process.
pub(crate) async fn sqlite_db() -> anyhow::Result<Database> {
    let dir: &'static tempfile::TempDir = Box::leak(Box::new(tempfile::tempdir()?));
    let url = format!("sqlite://{}/test.db", dir.path().display());
    let db = Database::connect(DatabaseOptions::new(url)).await?;
    db.migrate().await?;
    Ok(db)
}

/// A PostgreSQL database isolated in its own schema, dropped (best effort) by [`Self::cleanup`].
#[derive(Debug)]
pub(crate) struct PgTestDb {
    /// The handle, with `search_path` set to the test's schema.
    pub(crate) db: Database,
    url: String,
    schema: String,
}

impl PgTestDb {
    /// Closes the pool and drops the schema. Failures are reported on stderr, never raised.
    pub(crate) async fn cleanup(self) {
        self.db.close().await;
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
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

/// A fresh, migrated PostgreSQL schema on the server named by `GROUNDWORK_TEST_POSTGRES_URL`,
/// or `None` (with a notice) when it is unset.
///
/// # Panics
/// When `GROUNDWORK_REQUIRE_POSTGRES=1` and the URL is unset.
pub(crate) async fn postgres_db() -> anyhow::Result<Option<PgTestDb>> {
    let url = match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            if std::env::var(REQUIRE_POSTGRES_VAR).as_deref() == Ok("1") {
                panic!("GROUNDWORK_REQUIRE_POSTGRES=1 but GROUNDWORK_TEST_POSTGRES_URL is not set");
            }
            eprintln!("skipping PostgreSQL conformance test: {POSTGRES_URL_VAR} is not set");
            return Ok(None);
        }
    };
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let schema = format!(
        "gw_test_{}_{}_{}",
        std::process::id(),
        SCHEMA_COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let mut admin = sqlx::PgConnection::connect(&url).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let db = Database::connect(
        DatabaseOptions::new(url.clone())
            .search_path(schema.clone())
            .max_connections(4)
            .min_connections(0),
    )
    .await?;
    db.migrate().await?;
    Ok(Some(PgTestDb { db, url, schema }))
}

/// Asserts that a repository result is the given [`groundwork_db::DbError`] variant.
macro_rules! expect_err {
    ($variant:ident, $result:expr) => {{
        match $result {
            Err(groundwork_db::DbError::$variant { .. }) => {}
            other => anyhow::bail!(
                "line {}: expected DbError::{} from `{}`, got {:?}",
                line!(),
                stringify!($variant),
                stringify!($result),
                other
            ),
        }
    }};
}

/// An active classifier agent named `name` with an empty config.
pub(crate) fn agent(name: &str) -> NewAgent {
    NewAgent {
        name: name.to_owned(),
        kind: "classifier".to_owned(),
        description: None,
        config: json!({}),
        status: AgentStatus::Active,
    }
}

/// An active `http` tool named `name` with an empty config.
pub(crate) fn tool(name: &str) -> NewTool {
    NewTool {
        name: name.to_owned(),
        kind: "http".to_owned(),
        description: None,
        config: json!({}),
        is_active: true,
    }
}

/// An active prompt.
pub(crate) fn prompt(name: &str, version: &str, agent_type: &str) -> NewPrompt {
    NewPrompt {
        name: name.to_owned(),
        version: version.to_owned(),
        content: format!("You are {name} v{version}."),
        agent_type: agent_type.to_owned(),
        metadata: json!({}),
        is_active: true,
    }
}

/// A user.
pub(crate) fn user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        name: "Test User".to_owned(),
    }
}

/// A daily digest with `subject`.
pub(crate) fn digest(subject: &str) -> NewDigest {
    NewDigest {
        subject: subject.to_owned(),
        body: "Line one.\nLine two.".to_owned(),
        period: "daily".to_owned(),
        metadata: json!({}),
    }
}

/// A workflow with two steps.
pub(crate) fn workflow(name: &str) -> NewWorkflow {
    NewWorkflow {
        name: name.to_owned(),
        description: None,
        steps: json!([{ "name": "fetch" }, { "name": "summarise" }]),
    }
}

/// A validated page.
pub(crate) fn page(limit: i64, offset: i64) -> anyhow::Result<Page> {
    Ok(Page::new(Some(limit), Some(offset))?)
}

/// Rows in the audit log.
pub(crate) async fn audit_total(db: &Database) -> anyhow::Result<i64> {
    Ok(db
        .audit()
        .list(&AuditFilter::default(), Page::default())
        .await?
        .total)
}

/// The newest audit entry.
pub(crate) async fn audit_latest(db: &Database) -> anyhow::Result<AuditEntry> {
    let listing = db
        .audit()
        .list(&AuditFilter::default(), page(1, 0)?)
        .await?;
    listing
        .items
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the audit log is empty"))
}

/// Every change after `cursor`.
pub(crate) async fn changes_after(db: &Database, cursor: i64) -> anyhow::Result<Vec<Change>> {
    let batch = db.changes().since(cursor, 10_000).await?;
    anyhow::ensure!(!batch.has_more, "more than 10000 changes");
    Ok(batch.changes)
}

/// (entity, entity_id, related_id, op) of each change.
pub(crate) fn shape(changes: &[Change]) -> Vec<(Entity, i64, Option<i64>, Op)> {
    changes
        .iter()
        .map(|c| (c.entity, c.entity_id, c.related_id, c.op))
        .collect()
}
