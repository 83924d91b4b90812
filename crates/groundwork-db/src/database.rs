//! The [`Database`] handle: one cheap-to-clone value over SQLite or PostgreSQL.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{DbError, Result};
use crate::supervisor::{Supervisor, SupervisorSettings};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// An embedded SQLite file (or in-memory database).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl BackendKind {
    /// `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Connection settings for [`Database::connect`].
///
/// ```
/// use std::time::Duration;
/// use groundwork_db::DatabaseOptions;
///
/// let options = DatabaseOptions::new("postgres://postgres@127.0.0.1/test")
///     .max_connections(20)
///     .acquire_timeout(Duration::from_secs(2));
/// assert_eq!(options.url(), "postgres://postgres@127.0.0.1/test");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct DatabaseOptions {
    url: String,
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
    busy_timeout: Duration,
    search_path: Option<String>,
    supervisor: SupervisorSettings,
}

impl DatabaseOptions {
    /// Options for `url` (`sqlite://path`, `sqlite::memory:`, `postgres://…`) with the defaults
    /// below.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            min_connections: 2,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            search_path: None,
            supervisor: SupervisorSettings::default(),
        }
    }

    /// The database URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Most connections the pool opens. Default: 10 (the seeds' PostgreSQL pool).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max;
        self
    }

    /// Connections the pool keeps open when idle. Default: 2 (the seeds' PostgreSQL pool).
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }

    /// How long a caller waits for a pooled connection before failing with
    /// [`DbError::Unavailable`]. Default: 5 s (sqlx's own 30 s hides outages from callers).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// SQLite only: how long a writer waits for another writer's lock. Default: 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The client-side deadline of every operation (a query, or a transaction from `BEGIN`
    /// to `COMMIT`), so that nothing waits forever on a black-holed connection.
    /// Default: 30 s (the seeds' `command_timeout`).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.supervisor.query_timeout = timeout;
        self
    }

    /// How often the supervisor checks the database while it answers, and while it does
    /// not. Defaults: 30 s and 1 s.
    pub fn health_intervals(mut self, healthy: Duration, unhealthy: Duration) -> Self {
        self.supervisor.healthy_interval = healthy;
        self.supervisor.unhealthy_interval = unhealthy;
        self
    }

    /// How long a health check (`SELECT 1`) may take before it counts as failed.
    /// Default: 1 s.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.supervisor.health_timeout = timeout;
        self
    }

    /// The circuit breaker around the pool: failed operations in a row that open it, and how
    /// long it stays open before letting one probe through. Defaults: 3 and 500 ms.
    pub fn breaker(mut self, failures_to_open: u32, open_for: Duration) -> Self {
        self.supervisor.failures_to_open = failures_to_open;
        self.supervisor.open_for = open_for;
        self
    }

    /// Apply the migrations as soon as the database first answers (the server does this, so
    /// that it can start while the database is down); [`Database::is_ready`] stays false
    /// until they are applied. Default: off (call [`Database::migrate`]).
    pub fn migrate_on_connect(mut self, migrate: bool) -> Self {
        self.supervisor.migrate_on_connect = migrate;
        self
    }

    /// PostgreSQL only: the schema to use (`search_path`), e.g. to isolate tenants or tests.
    /// The schema must exist. Default: the server's default (`public`).
    pub fn search_path(mut self, schema: impl Into<String>) -> Self {
        self.search_path = Some(schema.into());
        self
    }
}

/// The concrete pool behind a [`Database`].
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle to the Groundwork database: SQLite (embedded default) or PostgreSQL, chosen by URL.
///
/// Cloning is cheap (the pool is reference-counted); build one in `main` and pass clones
/// around. Repositories are reached through it: [`Database::agents`], [`Database::tools`], ...
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use groundwork_db::{Database, DatabaseOptions};
///
/// let db = Database::connect(DatabaseOptions::new("sqlite::memory:")).await?;
/// db.migrate().await?;
/// db.ping().await?;
/// assert_eq!(db.backend_kind().as_str(), "sqlite");
/// # Ok::<(), groundwork_db::DbError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) backend: Backend,
    pub(crate) sup: Arc<Supervisor>,
}

impl Database {
    /// Opens a pool for `options.url()` and starts its supervisor (see the
    /// [`crate::supervisor`] module): a background health check, a circuit breaker around the
    /// pool and a deadline on every operation. Needs a Tokio runtime.
    ///
    /// SQLite files (and their directory) are created when missing and opened in WAL mode with
    /// foreign keys on, `synchronous = NORMAL` and a busy timeout. PostgreSQL pools are
    /// created lazily: this succeeds while the server is down, operations fail fast with
    /// [`DbError::CircuitOpen`] until it answers, and [`Database::wait_ready`] waits for it.
    ///
    /// # Errors
    /// [`DbError::Config`] for an unusable URL, [`DbError::Unavailable`] when a SQLite file
    /// cannot be opened.
    pub async fn connect(options: DatabaseOptions) -> Result<Self> {
        let url = options.url.as_str();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite(connect_sqlite(&options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(connect_postgres(&options)?)
        } else {
            return Err(DbError::Config(format!(
                "unsupported database URL {:?}: use sqlite://PATH, sqlite::memory: or postgres://…",
                groundwork_core::redact_url(url)
            )));
        };
        let name = match backend {
            Backend::Sqlite(_) => "database:sqlite",
            Backend::Postgres(_) => "database:postgres",
        };
        let db = Self {
            backend,
            sup: Arc::new(Supervisor::new(options.supervisor.clone(), name)),
        };
        db.spawn_supervisor();
        Ok(db)
    }

    /// Applies the pending migrations of this backend (idempotent).
    ///
    /// # Errors
    /// [`DbError::Migrate`] if a migration fails or the applied history does not match.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Backend::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Runs `SELECT 1` and returns how long it took.
    ///
    /// # Errors
    /// [`DbError::Unavailable`] when the database cannot be reached.
    pub async fn ping(&self) -> Result<Duration> {
        let started = Instant::now();
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(started.elapsed())
    }

    /// Stops the supervisor and closes the pool: waits for checked-out connections to
    /// return, then closes them all. Bound it with [`Database::close_within`].
    pub async fn close(&self) {
        self.stop_supervisor();
        match &self.backend {
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// [`Database::close`], giving up after `deadline` (connections still checked out are
    /// then dropped with the pool). Returns whether the pool closed in time.
    pub async fn close_within(&self, deadline: Duration) -> bool {
        let closed = tokio::time::timeout(deadline, self.close()).await.is_ok();
        if !closed {
            tracing::warn!("database pool did not close within {deadline:?}");
        }
        closed
    }

    /// Which engine this handle talks to.
    #[must_use]
    pub fn backend_kind(&self) -> BackendKind {
        match &self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }
}

async fn connect_sqlite(options: &DatabaseOptions) -> Result<SqlitePool> {
    let in_memory = options.url.contains(":memory:") || options.url.contains("mode=memory");
    let connect = SqliteConnectOptions::from_str(&options.url)
        .map_err(|e| DbError::Config(format!("invalid SQLite URL {:?}: {e}", options.url)))?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout);
    let connect = if in_memory {
        connect
    } else {
        create_parent_dir(connect.get_filename())?;
        connect
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    };
    let mut pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout);
    if in_memory {
        // An in-memory database lives as long as a connection to it: keep exactly one,
        // forever. (Several connections would share it in shared-cache mode, whose table
        // locks fail with SQLITE_LOCKED instead of waiting out the busy timeout.)
        pool = pool
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    }
    Ok(pool.connect_with(connect).await?)
}

fn create_parent_dir(file: &Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|e| {
                DbError::Config(format!("cannot create directory {}: {e}", dir.display()))
            }),
        _ => Ok(()),
    }
}

fn connect_postgres(options: &DatabaseOptions) -> Result<PgPool> {
    let mut connect = PgConnectOptions::from_str(&options.url).map_err(|e| {
        DbError::Config(format!(
            "invalid PostgreSQL URL {:?}: {e}",
            groundwork_core::redact_url(&options.url)
        ))
    })?;
    connect = connect.application_name("groundwork");
    if let Some(schema) = &options.search_path {
        connect = connect.options([("search_path", schema.as_str())]);
    }
    // Lazy: no connection is opened here; the supervisor's first health check opens one.
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .min_connections(options.min_connections.min(options.max_connections))
        .acquire_timeout(options.acquire_timeout)
        .connect_lazy_with(connect);
    Ok(pool)
}

/// The current time at the precision both backends store (microseconds), so that a value
/// written and read back compares equal on SQLite and PostgreSQL alike.
#[must_use]
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// `at` rounded down to a microsecond, the precision both engines store.
#[must_use]
pub(crate) fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// `at` rounded up to a microsecond: for a stored (microsecond) time `t`, `t >= at` exactly
/// when `t >= ceil_micros(at)`, and `t < at` exactly when `t < ceil_micros(at)`.
#[must_use]
pub(crate) fn ceil_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    let down = at.trunc_subsecs(6);
    if down == at {
        at
    } else {
        down + chrono::TimeDelta::microseconds(1)
    }
}

/// SQL for `name` with ASCII letters folded to lower case and nothing else, per engine, so a
/// case-insensitive match behaves the same on both: SQLite's `lower()` folds ASCII only, while
/// PostgreSQL's `LOWER()` folds by the server's locale, hence `translate` there.
macro_rules! ascii_lower_name {
    (sqlite) => {
        "lower(name)"
    };
    (postgres) => {
        "translate(name, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
    };
}
pub(crate) use ascii_lower_name;

/// Runs `$body` with `$pool` bound to the concrete pool of the handle's backend, as one
/// supervised operation: refused at once while the pool's breaker is open, bounded by the
/// operation deadline, its outcome counted (see [`crate::supervisor`]). Evaluates to
/// `Result<T, DbError>`.
///
/// The body is compiled once per backend, so one query text serves both engines with
/// concrete types (no generic bounds over `sqlx::Database`). Write SQL both engines accept:
/// `$1` placeholders, `RETURNING`, `ON CONFLICT`, no engine-specific functions. The body runs
/// in an async block: `?` inside it ends the operation (not the enclosing function), and a
/// body ending in `Ok(..)` may need its error type spelled (`Ok::<_, DbError>(..)`).
///
/// `$pool` is a connection checked out of the pool for the whole body (counted in the pool's
/// waiters and acquire latency): a body running several statements passes `&mut *$pool` to
/// each.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {{
        let __db: &$crate::Database = &$db;
        let __admission = __db.admit()?;
        let __outcome = __db
            .with_deadline(async {
                match __db.backend() {
                    $crate::database::Backend::Sqlite(pool) => {
                        let mut __conn = __db.acquire_from(pool).await?;
                        let $pool = &mut *__conn;
                        $body
                    }
                    $crate::database::Backend::Postgres(pool) => {
                        let mut __conn = __db.acquire_from(pool).await?;
                        let $pool = &mut *__conn;
                        $body
                    }
                }
            })
            .await;
        __admission.finish(__outcome)
    }};
}
pub(crate) use on_pool;

/// Runs `$body` inside a write transaction and commits it, as one supervised operation (see
/// [`on_pool!`]); `?` inside the body ends the operation and rolls back (the transaction is
/// dropped). `$pg` is bound to `true` on PostgreSQL, for the few statements only one engine
/// needs. Evaluates to `Result<T, DbError>` where `T` is the body's value.
///
/// SQLite transactions start with `BEGIN IMMEDIATE`: they take the write lock up front, so a
/// transaction that reads before it writes cannot fail half-way on a lock upgrade.
macro_rules! in_tx {
    ($db:expr, |$tx:ident, $pg:ident| $body:expr) => {{
        let __db: &$crate::Database = &$db;
        let __admission = __db.admit()?;
        let __outcome = __db
            .with_deadline(async {
                match __db.backend() {
                    $crate::database::Backend::Sqlite(pool) => {
                        #[allow(unused_variables)]
                        let $pg = false;
                        let mut __conn = __db.acquire_from(pool).await?;
                        let mut $tx =
                            sqlx::Connection::begin_with(&mut *__conn, "BEGIN IMMEDIATE").await?;
                        let out = $body;
                        $tx.commit().await?;
                        Ok::<_, $crate::DbError>(out)
                    }
                    $crate::database::Backend::Postgres(pool) => {
                        #[allow(unused_variables)]
                        let $pg = true;
                        let mut __conn = __db.acquire_from(pool).await?;
                        let mut $tx = sqlx::Connection::begin(&mut *__conn).await?;
                        let out = $body;
                        $tx.commit().await?;
                        Ok::<_, $crate::DbError>(out)
                    }
                }
            })
            .await;
        __admission.finish(__outcome)
    }};
}
pub(crate) use in_tx;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsecond_rounding() {
        use chrono::TimeZone;
        let exact = Utc.timestamp_opt(1_700_000_000, 123_456_000).single();
        let between = Utc.timestamp_opt(1_700_000_000, 123_456_500).single();
        let (Some(exact), Some(between)) = (exact, between) else {
            panic!("valid timestamps");
        };
        assert_eq!(ceil_micros(exact), exact);
        assert_eq!(to_micros(between), exact);
        assert_eq!(
            ceil_micros(between),
            exact + chrono::TimeDelta::microseconds(1)
        );
    }

    #[tokio::test]
    async fn unsupported_scheme_is_a_config_error() {
        let err = Database::connect(DatabaseOptions::new("mysql://root@localhost/x"))
            .await
            .err();
        assert!(matches!(err, Some(DbError::Config(_))), "{err:?}");
    }

    #[tokio::test]
    async fn sqlite_file_gets_wal_and_foreign_keys() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/nested/dir/g.db", dir.path().display());
        let db = Database::connect(DatabaseOptions::new(url)).await?;
        let Backend::Sqlite(pool) = db.backend() else {
            anyhow::bail!("expected sqlite");
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await?;
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(pool)
            .await?;
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await?;
        assert_eq!(mode, "wal");
        assert_eq!(fk, 1);
        assert_eq!(busy, 5000);
        Ok(())
    }
}
