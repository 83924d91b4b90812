//! The pool supervisor: health checks, a circuit breaker around the pool, a deadline on every
//! operation, statistics.
//!
//! sqlx's pool (like deadpool's and bb8's) runs no background health check: while the database
//! is down, every caller waits out the acquire timeout. The supervisor turns that around:
//! - a background task checks the database (`SELECT 1` under its own short timeout) every
//!   `healthy_interval` while it answers and every `unhealthy_interval` while it does not, and
//!   at once when an operation fails to reach it;
//! - a failed check, or a run of failed operations, opens a circuit breaker: from then on an
//!   operation fails in microseconds with [`DbError::CircuitOpen`] instead of waiting;
//! - after `open_for`, the next operation asks for a health check instead of probing the
//!   database itself (a request never waits on a database that is probably still down), and
//!   a passing check closes the breaker: the first query succeeds within a second of the
//!   database accepting connections again (checks run at least every `unhealthy_interval`,
//!   and at most every 250 ms when operations ask);
//! - every operation runs under a client-side deadline ([`DbError::Timeout`]), so a
//!   black-holed connection cannot hang a caller.
//!
//! Only failures that say the database is unreachable count against it (connection errors,
//! pool and deadline timeouts, PostgreSQL's connection and shutdown SQLSTATEs); a constraint
//! violation or a missing row is an answer.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use groundwork_resilience::{BreakerConfig, BreakerState, BreakerStats, CircuitBreaker, Permit};
use serde::Serialize;
use tokio::sync::Notify;

use crate::database::{Backend, Database};
use crate::error::{DbError, Result};

/// An operation running this long asks for a health check (see `Database::with_deadline`).
const SUSPICIOUS_AFTER: Duration = Duration::from_millis(250);

/// Checks asked for by operations run at most this often.
const MIN_NUDGED_INTERVAL: Duration = Duration::from_millis(250);

/// How long migrating on connect may take before it counts as a failed connection (and is
/// tried again at the next check). Migrations are not bounded by the operation deadline (a
/// long one is legitimate), but a connection black-holed mid-migration must not stop the
/// health task, and the readiness probes waiting on it, for good.
const MIGRATION_DEADLINE: Duration = Duration::from_secs(300);

/// Settings of the supervisor (part of [`crate::DatabaseOptions`]).
#[derive(Debug, Clone)]
pub(crate) struct SupervisorSettings {
    pub(crate) query_timeout: Duration,
    pub(crate) health_timeout: Duration,
    pub(crate) healthy_interval: Duration,
    pub(crate) unhealthy_interval: Duration,
    pub(crate) open_for: Duration,
    pub(crate) failures_to_open: u32,
    pub(crate) migrate_on_connect: bool,
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            query_timeout: Duration::from_secs(30),
            health_timeout: Duration::from_secs(1),
            healthy_interval: Duration::from_secs(30),
            unhealthy_interval: Duration::from_secs(1),
            open_for: Duration::from_millis(500),
            failures_to_open: 3,
            migrate_on_connect: false,
        }
    }
}

/// What the supervisor knows about the database, for `/ready`, `/infra` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Whether the last health check passed and migrations (if asked for) are applied.
    pub ready: bool,
    /// Connections open now.
    pub size: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// Connections checked out.
    pub in_use: u32,
    /// The pool's bounds.
    pub max_connections: u32,
    /// Minimum connections kept open.
    pub min_connections: u32,
    /// Operations running now (waiting for a connection or querying).
    pub in_flight: i64,
    /// Operations waiting for a pooled connection now.
    pub waiters: i64,
    /// Connections acquired from the pool by operations (every query, transaction and
    /// SQLite health check).
    pub acquires: u64,
    /// Mean acquire latency, milliseconds.
    pub acquire_mean_ms: f64,
    /// Latency of the last acquire, milliseconds.
    pub acquire_last_ms: f64,
    /// Operations that hit their deadline or the pool's acquire timeout.
    pub timeouts: u64,
    /// Operations and checks that could not reach the database.
    pub connect_errors: u64,
    /// Operations refused at once because the breaker was open.
    pub rejected: u64,
    /// The last health check: seconds ago, whether it passed, its latency, and its error.
    pub last_health_check: Option<HealthCheck>,
    /// The breaker around the pool.
    pub breaker: BreakerStats,
}

impl PoolStats {
    /// Exports the figures through the `metrics` crate as `groundwork_db_pool_*` gauges
    /// (size, idle, in use, max, in flight, waiters, acquires, acquire mean, timeouts,
    /// connect errors, rejected, ready, last health check age and latency), and the breaker's
    /// as `groundwork_breaker_*`.
    pub fn publish(&self) {
        let backend = self.backend;
        let gauges = [
            (
                "groundwork_db_pool_ready",
                if self.ready { 1.0 } else { 0.0 },
            ),
            ("groundwork_db_pool_size", f64::from(self.size)),
            ("groundwork_db_pool_idle", f64::from(self.idle)),
            ("groundwork_db_pool_in_use", f64::from(self.in_use)),
            (
                "groundwork_db_pool_max_connections",
                f64::from(self.max_connections),
            ),
            ("groundwork_db_pool_in_flight", self.in_flight as f64),
            ("groundwork_db_pool_waiters", self.waiters as f64),
            ("groundwork_db_pool_acquires", self.acquires as f64),
            (
                "groundwork_db_pool_acquire_mean_seconds",
                self.acquire_mean_ms / 1e3,
            ),
            ("groundwork_db_pool_timeouts", self.timeouts as f64),
            (
                "groundwork_db_pool_connect_errors",
                self.connect_errors as f64,
            ),
            ("groundwork_db_pool_rejected", self.rejected as f64),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name, "backend" => backend).set(value);
        }
        if let Some(check) = &self.last_health_check {
            metrics::gauge!("groundwork_db_health_check_age_seconds", "backend" => backend)
                .set(check.age_secs);
            metrics::gauge!("groundwork_db_health_check_latency_seconds", "backend" => backend)
                .set(check.latency_ms / 1e3);
        }
        self.breaker.publish();
    }
}

/// The outcome of one health check.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    /// Seconds since the check ran.
    pub age_secs: f64,
    /// Whether `SELECT 1` answered in time.
    pub ok: bool,
    /// How long it took, milliseconds.
    pub latency_ms: f64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
struct LastCheck {
    at: Instant,
    ok: bool,
    latency: Duration,
    error: Option<String>,
}

pub(crate) struct Supervisor {
    settings: SupervisorSettings,
    pub(crate) breaker: CircuitBreaker,
    migrated: AtomicBool,
    healthy: AtomicBool,
    /// A fatal error found while connecting (a migration that cannot apply).
    fatal: Mutex<Option<String>>,
    last_check: Mutex<Option<LastCheck>>,
    in_flight: AtomicI64,
    waiters: AtomicI64,
    acquires: AtomicU64,
    acquire_total_ns: AtomicU64,
    acquire_last_ns: AtomicU64,
    timeouts: AtomicU64,
    connect_errors: AtomicU64,
    /// Wakes the health task early (an operation could not reach the database).
    nudge: Notify,
    /// Wakes waiters of [`Database::wait_ready`].
    ready_changed: Notify,
    /// Wakes operations in flight when the breaker opens: they fail at once instead of
    /// waiting out the pool's acquire timeout on a database now known to be down.
    opened: Notify,
    closed: AtomicBool,
    /// One health check at a time (the background task and on-demand checks share it).
    checking: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Supervisor {
    pub(crate) fn new(settings: SupervisorSettings, name: &str) -> Self {
        let breaker = BreakerConfig::new(name)
            .consecutive_failures(settings.failures_to_open)
            .open_for(settings.open_for)
            .half_open_probes(1)
            .build();
        Self {
            settings,
            breaker,
            migrated: AtomicBool::new(false),
            healthy: AtomicBool::new(false),
            fatal: Mutex::new(None),
            last_check: Mutex::new(None),
            in_flight: AtomicI64::new(0),
            waiters: AtomicI64::new(0),
            acquires: AtomicU64::new(0),
            acquire_total_ns: AtomicU64::new(0),
            acquire_last_ns: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            nudge: Notify::new(),
            ready_changed: Notify::new(),
            opened: Notify::new(),
            closed: AtomicBool::new(false),
            checking: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn query_timeout(&self) -> Duration {
        self.settings.query_timeout
    }

    /// Whether the last check passed and the schema is in place.
    pub(crate) fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
            && (!self.settings.migrate_on_connect || self.migrated.load(Ordering::Acquire))
    }

    fn record_acquire(&self, took: Duration) {
        let ns = nanos(took);
        self.acquires.fetch_add(1, Ordering::Relaxed);
        self.acquire_total_ns.fetch_add(ns, Ordering::Relaxed);
        self.acquire_last_ns.store(ns, Ordering::Relaxed);
        metrics::histogram!("groundwork_db_acquire_seconds").record(took.as_secs_f64());
    }

    /// Counts an error that says the database is out of reach.
    fn count_unreachable(&self, err: &DbError) {
        if matches!(err, DbError::Timeout { .. })
            || matches!(err, DbError::Unavailable(sqlx::Error::PoolTimedOut))
        {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connect_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// After a failure was recorded: if the breaker is now open, fail the operations still
    /// waiting (see `opened`).
    fn signal_if_open(&self) {
        if self.breaker.state() == BreakerState::Open {
            self.opened.notify_waiters();
        }
    }

    fn set_healthy(&self, healthy: bool) {
        let before = self.healthy.swap(healthy, Ordering::AcqRel);
        if before != healthy {
            if healthy {
                tracing::info!("database reachable");
            } else {
                tracing::warn!("database unreachable; failing fast until it answers");
            }
            self.ready_changed.notify_waiters();
        }
    }
}

/// An admitted operation: carries the breaker permit and counts the operation in flight.
pub(crate) struct Admission<'a> {
    sup: &'a Supervisor,
    permit: Option<Permit>,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.sup.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission<'_> {
    /// Records how the operation went and hands its result back.
    pub(crate) fn finish<T>(mut self, outcome: Result<T>) -> Result<T> {
        let permit = self.permit.take();
        match &outcome {
            Err(err) if err.is_unreachable() => {
                self.sup.count_unreachable(err);
                // Check the database now rather than at the next scheduled check.
                self.sup.nudge.notify_one();
                if let Some(permit) = permit {
                    permit.failure();
                }
                self.sup.signal_if_open();
            }
            // Cut short because the breaker opened meanwhile: no verdict on the database.
            Err(DbError::CircuitOpen { .. }) => drop(permit),
            _ => {
                if let Some(permit) = permit {
                    permit.success();
                }
            }
        }
        outcome
    }
}

impl Database {
    /// Admits an operation, or refuses it at once while the breaker is open.
    #[doc(hidden)]
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admission<'_>> {
        let sup = &*self.sup;
        match sup.breaker.acquire() {
            Ok(permit) if permit.is_probe() => {
                // Half-open: the probe is a health check, not this caller's request (which
                // would wait on a database that is probably still down). Ask for the check
                // and refuse; a passing check closes the breaker for everyone.
                drop(permit);
                sup.nudge.notify_one();
                Err(DbError::CircuitOpen {
                    retry_in: Duration::ZERO,
                })
            }
            Ok(permit) => {
                sup.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(Admission {
                    sup,
                    permit: Some(permit),
                })
            }
            Err(open) => Err(DbError::CircuitOpen {
                retry_in: open.retry_in,
            }),
        }
    }

    /// Runs `op` under the operation deadline.
    pub(crate) async fn with_deadline<T, E>(
        &self,
        op: impl Future<Output = std::result::Result<T, E>>,
    ) -> Result<T>
    where
        DbError: From<E>,
    {
        let sup = &*self.sup;
        let after = sup.query_timeout();
        let started = tokio::time::Instant::now();
        let opened = sup.opened.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        tokio::pin!(op);
        // One timer serves two purposes. An operation still running after `SUSPICIOUS_AFTER`
        // may be stuck on a database that just went away (sqlx keeps retrying a refused
        // connect until its acquire timeout): it asks for a health check, once, and if the
        // database is down the breaker opens and `opened` ends the operation at once. Then
        // the same timer is moved to the deadline.
        let suspicious = SUSPICIOUS_AFTER < after;
        let timer = tokio::time::sleep(if suspicious { SUSPICIOUS_AFTER } else { after });
        tokio::pin!(timer);
        let mut nudged = !suspicious;
        loop {
            tokio::select! {
                biased;
                result = &mut op => return result.map_err(DbError::from),
                () = &mut opened => {
                    return Err(DbError::CircuitOpen { retry_in: sup.settings.open_for });
                }
                () = &mut timer => {
                    if nudged {
                        return Err(DbError::Timeout { after });
                    }
                    nudged = true;
                    sup.nudge.notify_one();
                    timer.as_mut().reset(started + after);
                }
            }
        }
    }

    /// Whether the database answered its last health check (and, when the handle was opened
    /// with [`crate::DatabaseOptions::migrate_on_connect`], the migrations are applied).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.sup.is_ready()
    }

    /// Waits until [`Database::is_ready`], for at most `limit`.
    ///
    /// # Errors
    /// [`DbError::Config`] when connecting found a fatal problem (a migration that cannot
    /// apply); [`DbError::Timeout`] when `limit` passes first (`Duration::MAX`: never).
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now().checked_add(limit);
        loop {
            // Registered before the state is read, so that a change in between wakes it.
            let changed = self.sup.ready_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(fatal) = self.fatal_error() {
                return Err(DbError::Config(fatal));
            }
            if self.is_ready() {
                return Ok(());
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(DbError::Timeout { after: limit });
                    }
                }
                None => changed.await,
            }
        }
    }

    fn fatal_error(&self) -> Option<String> {
        self.sup
            .fatal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The breaker's state.
    #[must_use]
    pub fn breaker_state(&self) -> BreakerState {
        self.sup.breaker.state()
    }

    /// Pool, supervisor and breaker figures.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let sup = &*self.sup;
        let (size, idle, max, min) = match self.backend() {
            Backend::Sqlite(pool) => pool_figures(pool),
            Backend::Postgres(pool) => pool_figures(pool),
        };
        let acquires = sup.acquires.load(Ordering::Relaxed);
        let total = sup.acquire_total_ns.load(Ordering::Relaxed);
        let breaker = sup.breaker.stats();
        let last_health_check = sup
            .last_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|c| HealthCheck {
                age_secs: c.at.elapsed().as_secs_f64(),
                ok: c.ok,
                latency_ms: c.latency.as_secs_f64() * 1e3,
                error: c.error.clone(),
            });
        PoolStats {
            backend: self.backend_kind().as_str(),
            ready: sup.is_ready(),
            size,
            idle,
            in_use: size.saturating_sub(idle),
            max_connections: max,
            min_connections: min,
            in_flight: sup.in_flight.load(Ordering::Relaxed),
            waiters: sup.waiters.load(Ordering::Relaxed),
            acquires,
            acquire_mean_ms: if acquires == 0 {
                0.0
            } else {
                total as f64 / acquires as f64 / 1e6
            },
            acquire_last_ms: sup.acquire_last_ns.load(Ordering::Relaxed) as f64 / 1e6,
            timeouts: sup.timeouts.load(Ordering::Relaxed),
            connect_errors: sup.connect_errors.load(Ordering::Relaxed),
            rejected: breaker.rejected,
            last_health_check,
            breaker,
        }
    }

    /// Acquires a pooled connection from `pool`, counting the wait and its latency.
    pub(crate) async fn acquire_from<DB: sqlx::Database>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> std::result::Result<sqlx::pool::PoolConnection<DB>, sqlx::Error> {
        let sup = &*self.sup;
        // A guard, so that a caller cancelled while waiting is no longer counted.
        struct Waiting<'a>(&'a AtomicI64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        sup.waiters.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting(&sup.waiters);
        let started = Instant::now();
        let conn = pool.acquire().await;
        drop(waiting);
        if conn.is_ok() {
            sup.record_acquire(started.elapsed());
        }
        conn
    }

    /// One health check: acquire and `SELECT 1` under the health timeout.
    async fn health_check(&self) -> Result<Duration> {
        let started = Instant::now();
        // `SELECT 1` on a connection of its own, opened with a single attempt: the pool
        // would retry a refused connection until its acquire timeout, and would hand out a
        // connection the database has not answered on for a while, while a check must fail
        // fast and test what recovery needs (can we connect?). One connection every 30 s
        // while healthy is negligible.
        macro_rules! check {
            ($pool:expr) => {{
                use sqlx::{ConnectOptions as _, Connection as _};
                // A connect of its own, not an acquire: not counted in the pool's figures.
                let mut conn = $pool.connect_options().connect().await?;
                sqlx::query("SELECT 1").execute(&mut conn).await?;
                // Best effort: the check passed whether or not the goodbye does.
                let _ = conn.close().await;
                Ok::<_, DbError>(())
            }};
        }
        let check = async {
            match self.backend() {
                // SQLite is a local file (or memory): there is no connection to be refused,
                // and a second connection to a shared in-memory database would collide with
                // the pool's schema changes (SQLITE_LOCKED). Check on a pooled connection.
                Backend::Sqlite(pool) => {
                    let mut conn = self.acquire_from(pool).await?;
                    sqlx::query("SELECT 1").execute(&mut *conn).await?;
                    Ok::<_, DbError>(())
                }
                Backend::Postgres(pool) => check!(pool),
            }
        };
        let limit = self.sup.settings.health_timeout;
        match tokio::time::timeout(limit, check).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(DbError::Timeout { after: limit }),
        }
    }

    /// Checks the database now (readiness probes call this while it is not ready, so that
    /// they see a recovery at once instead of at the next scheduled check); a check already
    /// running is joined instead of starting another. Returns [`Database::is_ready`].
    pub async fn check_now(&self) -> bool {
        match self.sup.checking.try_lock() {
            Ok(_guard) => {
                self.supervise_once_locked().await;
            }
            Err(_) => {
                // Another check is running: its outcome is as fresh as ours would be.
                let _joined = self.sup.checking.lock().await;
            }
        }
        self.is_ready()
    }

    /// One round of the health task: check, migrate once if asked, update the breaker.
    /// Returns whether the database answered.
    async fn supervise_once(&self) -> bool {
        let _guard = self.sup.checking.lock().await;
        self.supervise_once_locked().await
    }

    async fn supervise_once_locked(&self) -> bool {
        let sup = &*self.sup;
        // The check opens its own connection, so a saturated pool cannot fail it.
        let outcome = self.health_check().await;
        let (ok, latency, error) = match &outcome {
            Ok(latency) => (true, *latency, None),
            Err(err) => (
                false,
                Duration::ZERO,
                Some(groundwork_core::error_chain(err)),
            ),
        };
        *sup.last_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(LastCheck {
            at: Instant::now(),
            ok,
            latency,
            error: error.clone(),
        });
        metrics::gauge!("groundwork_db_health_ok").set(if ok { 1.0 } else { 0.0 });
        if !ok {
            if let Err(err) = &outcome {
                sup.count_unreachable(err);
            }
            tracing::debug!(
                error = error.as_deref().unwrap_or(""),
                "database health check failed"
            );
            sup.breaker.record_failure();
            sup.signal_if_open();
            sup.set_healthy(false);
            return false;
        }
        if sup.settings.migrate_on_connect && !sup.migrated.load(Ordering::Acquire) {
            let started = Instant::now();
            let migrated = tokio::time::timeout(MIGRATION_DEADLINE, self.migrate())
                .await
                .unwrap_or(Err(DbError::Timeout {
                    after: MIGRATION_DEADLINE,
                }));
            match migrated {
                Ok(()) => {
                    sup.migrated.store(true, Ordering::Release);
                    tracing::info!(took_ms = started.elapsed().as_millis(), "database migrated");
                }
                Err(err) if err.is_unreachable() => {
                    sup.breaker.record_failure();
                    sup.set_healthy(false);
                    return false;
                }
                Err(err) => {
                    let message = groundwork_core::error_chain(&err);
                    tracing::error!(error = %message, "database migration failed");
                    *sup.fatal
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
                    sup.ready_changed.notify_waiters();
                    sup.set_healthy(false);
                    return false;
                }
            }
        }
        sup.breaker.record_success();
        sup.set_healthy(true);
        true
    }

    /// Starts the health task. It holds the handle weakly: it ends when every clone of the
    /// handle is dropped or [`Database::close`] is called.
    pub(crate) fn spawn_supervisor(&self) {
        let weak: Weak<Supervisor> = Arc::downgrade(&self.sup);
        let backend = self.backend().clone();
        // The task must not keep the pool alive: it rebuilds a handle from the weak
        // supervisor and a clone of the pool handle (pool handles are reference-counted, but
        // closing the pool ends the task below).
        tokio::spawn(async move {
            loop {
                let Some(sup) = weak.upgrade() else { return };
                if sup.closed.load(Ordering::Acquire) {
                    return;
                }
                let db = Database {
                    backend: backend.clone(),
                    sup: Arc::clone(&sup),
                };
                let ok = db.supervise_once().await;
                let wait = if ok {
                    sup.settings.healthy_interval
                } else {
                    sup.settings.unhealthy_interval
                };
                drop(db);
                // A failing or stuck operation wakes the check early, but not more often than
                // every MIN_NUDGED_INTERVAL.
                let rested = tokio::time::Instant::now() + MIN_NUDGED_INTERVAL.min(wait);
                let _ = tokio::time::timeout(wait, sup.nudge.notified()).await;
                tokio::time::sleep_until(rested).await;
            }
        });
    }

    /// Stops the health task (the pool is closed separately).
    pub(crate) fn stop_supervisor(&self) {
        self.sup.closed.store(true, Ordering::Release);
        self.sup.nudge.notify_one();
    }
}

fn pool_figures<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> (u32, u32, u32, u32) {
    let options = pool.options();
    (
        pool.size(),
        u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
        options.get_max_connections(),
        options.get_min_connections(),
    )
}
