//! Recovery of the pool supervisor after a database cut, over 20 cuts: p50 and p99 of the
//! time from the database coming back to the first successful query. Goal: p99 at most 1 s.
//!
//! ```text
//! GROUNDWORK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p groundwork-db --bench recovery
//! ```
//!
//! Set-up: a schema of its own on the server, reached through `groundwork_testkit::TcpProxy`;
//! a `Database` opened on the proxy with `migrate_on_connect(true)` and the default supervisor
//! settings (pool of 4, as in `tests/supervised`); a light steady load, as a server under
//! traffic: 2 tasks each reading one agent (`db.agents().get(id)`) every 10 ms.
//!
//! Then 20 cycles, alternating `Mode::Refuse` (connections refused, live ones closed) and
//! `Mode::BlackHole` (connections accepted and never answered, live ones frozen): cut, hold
//! 1.5 s, restore (`Mode::Pass`), wait for recovery, 0.5 s of steady load. Per cycle:
//! - recovery: restore (once `set_mode(Pass)` returned) to the end of the first query of the
//!   load that succeeds (the two load tasks are 5 ms apart, so this includes up to 5 ms of
//!   waiting for the next query);
//! - ready: restore to `db.is_ready()` on a health check run after the restore (polled every
//!   millisecond; a check that passed before the cut says nothing about recovery);
//! - cut to breaker open: from just before `set_mode(cut)` to the first sign of the breaker
//!   not closed: a poll (every millisecond) or a call of the load that saw it open;
//! - calls made while the breaker is open (`breaker_state() == Open` when the call starts):
//!   their latency, which must stay under 1 ms (p99); and, for context, every failed call
//!   started between the breaker opening and the restore (half-open probes included).
//!
//! Percentiles are nearest-rank: with 10 cuts per mode, p99 is the slowest cut. The summary is
//! printed and (under `cargo bench`) written to
//! `target/criterion/groundwork-db-recovery-summary.txt`. Under `cargo test --benches` it runs
//! two short cuts as a smoke test. Without `GROUNDWORK_TEST_POSTGRES_URL` it prints a notice
//! and exits 0. No criterion timing loop: one cut takes seconds.

// Benchmark setup code: a failure to build the runtime is a broken benchmark.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use groundwork_db::{Database, DatabaseOptions, DbError, NewAgent};
use groundwork_resilience::BreakerState;
use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};
use sqlx::Connection as _;
use tokio::time::MissedTickBehavior;

/// Load tasks, and the period of each.
const LOAD_TASKS: u32 = 2;
const LOAD_PERIOD: Duration = Duration::from_millis(10);
/// How often the controller polls the breaker and readiness.
const POLL: Duration = Duration::from_millis(1);
/// How long to wait for a recovery before giving up on the cycle.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);
/// Goals.
const GOAL_RECOVERY_P99: Duration = Duration::from_secs(1);
const GOAL_REJECTION_P99: Duration = Duration::from_millis(1);

#[derive(Clone, Copy)]
struct Scale {
    cuts: usize,
    hold: Duration,
    settle: Duration,
}

const FULL: Scale = Scale {
    cuts: 20,
    hold: Duration::from_millis(1500),
    settle: Duration::from_millis(500),
};

const SMOKE: Scale = Scale {
    cuts: 2,
    hold: Duration::from_millis(500),
    settle: Duration::from_millis(100),
};

// ---------------------------------------------------------------------------------------
// The schema, behind a proxy
// ---------------------------------------------------------------------------------------

/// A schema of its own on the real server, and a proxy in front of the server (as in
/// `tests/supervised/mod.rs`).
struct Schema {
    proxy: TcpProxy,
    /// The server's URL (direct).
    url: String,
    /// The URL through the proxy.
    proxied: String,
    name: String,
}

impl Schema {
    async fn create(url: &str) -> anyhow::Result<Self> {
        let proxy = TcpProxy::start(upstream_of(url).await?).await?;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let name = format!("gw_bench_recovery_{}_{nanos}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(url).await?;
        // Built from a fixed prefix, digits and `_` only: a safe identifier.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self {
            proxied: with_port(url, proxy.port()),
            proxy,
            url: url.to_owned(),
            name,
        })
    }

    /// The proxied URL in this schema, migrated on connect, default supervisor settings.
    fn options(&self) -> DatabaseOptions {
        DatabaseOptions::new(self.proxied.clone())
            .search_path(self.name.clone())
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(2))
            .migrate_on_connect(true)
    }

    /// Closes `db` and drops the schema (best effort).
    async fn drop_with(self, db: Database) {
        db.close_within(Duration::from_secs(2)).await;
        let _ = self.proxy.set_mode(Mode::Pass).await;
        let dropped = async {
            let mut admin = sqlx::PgConnection::connect(&self.url).await?;
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await?;
            admin.close().await
        }
        .await;
        if let Err(err) = dropped {
            eprintln!("could not drop schema {}: {err}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The database answered.
    Ok,
    /// `DbError::CircuitOpen`.
    Rejected,
    /// Any other error (unavailable, timeout).
    Failed,
}

#[derive(Clone, Copy)]
struct Call {
    start: Instant,
    end: Instant,
    /// `breaker_state() == Open` just before the call.
    open_at_start: bool,
    outcome: Outcome,
}

impl Call {
    fn took(&self) -> Duration {
        self.end - self.start
    }
}

/// Reads agent `id` every `LOAD_PERIOD` (after `phase`) until `stop`; returns every call.
async fn load(
    db: Database,
    id: i64,
    phase: Duration,
    stop: Arc<AtomicBool>,
    oks: Arc<AtomicU64>,
) -> Vec<Call> {
    tokio::time::sleep(phase).await;
    let mut tick = tokio::time::interval(LOAD_PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut calls = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let open_at_start = db.breaker_state() == BreakerState::Open;
        let start = Instant::now();
        let result = db.agents().get(id).await;
        let end = Instant::now();
        let outcome = match result {
            Ok(_) | Err(DbError::NotFound { .. }) => Outcome::Ok,
            Err(DbError::CircuitOpen { .. }) => Outcome::Rejected,
            Err(_) => Outcome::Failed,
        };
        if outcome == Outcome::Ok {
            oks.fetch_add(1, Ordering::Relaxed);
        }
        calls.push(Call {
            start,
            end,
            open_at_start,
            outcome,
        });
    }
    calls
}

// ---------------------------------------------------------------------------------------
// The cuts
// ---------------------------------------------------------------------------------------

/// What the controller saw during one cycle.
struct Cut {
    mode: Mode,
    /// Just before `set_mode(mode)`.
    cut_at: Instant,
    /// The first poll that saw the breaker not closed.
    opened_at: Option<Instant>,
    /// Just after `set_mode(Pass)` returned.
    restore_at: Instant,
    /// The first poll that saw `is_ready()` on a health check run after the restore.
    ready_at: Option<Instant>,
    /// Whether `is_ready()` still held at the restore.
    ready_at_restore: bool,
    /// Whether the breaker was closed when the cut started.
    closed_at_cut: bool,
}

/// `is_ready()`, on a health check that ran after `restore_at`.
fn ready_since(db: &Database, restore_at: Instant) -> bool {
    db.is_ready()
        && db.stats().last_health_check.is_some_and(|check| {
            check.ok && Duration::from_secs_f64(check.age_secs) < restore_at.elapsed()
        })
}

async fn cycle(
    db: &Database,
    proxy: &TcpProxy,
    mode: Mode,
    scale: Scale,
    oks: &AtomicU64,
) -> anyhow::Result<Cut> {
    let closed_at_cut = db.breaker_state() == BreakerState::Closed;
    let cut_at = Instant::now();
    proxy.set_mode(mode).await?;
    let mut opened_at = None;
    let hold_until = cut_at + scale.hold;
    while Instant::now() < hold_until {
        if opened_at.is_none() && db.breaker_state() != BreakerState::Closed {
            opened_at = Some(Instant::now());
        }
        tokio::time::sleep(POLL).await;
    }

    proxy.set_mode(Mode::Pass).await?;
    let restore_at = Instant::now();
    let ready_at_restore = db.is_ready();
    let oks_at_restore = oks.load(Ordering::Relaxed);
    let mut answered = false;
    let mut ready_at = None;
    while restore_at.elapsed() < RECOVERY_LIMIT && !(answered && ready_at.is_some()) {
        answered = answered || oks.load(Ordering::Relaxed) > oks_at_restore;
        if ready_at.is_none() && ready_since(db, restore_at) {
            ready_at = Some(Instant::now());
        }
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(scale.settle).await;
    Ok(Cut {
        mode,
        cut_at,
        opened_at,
        restore_at,
        ready_at,
        ready_at_restore,
        closed_at_cut,
    })
}

/// Figures of one cut, from the controller's observations and the load's calls.
struct CutFigures {
    mode: Mode,
    opened_after: Option<Duration>,
    /// Restore to the end of the first successful call.
    recovery: Option<Duration>,
    ready: Option<Duration>,
    ready_at_restore: bool,
    closed_at_cut: bool,
    /// Latency of the calls made while the breaker was open.
    open_calls: Vec<Duration>,
    /// Of those, how many did not fail with `CircuitOpen`.
    open_calls_not_rejected: usize,
    /// Latency of every failed call started between the opening and the restore.
    failed_after_open: Vec<Duration>,
    /// Calls during the cut failing with something else than `CircuitOpen`.
    other_errors: usize,
    /// The slowest call started during the cut.
    slowest: Duration,
}

fn figures(cut: &Cut, calls: &[Call]) -> CutFigures {
    let during = |c: &&Call| c.start >= cut.cut_at && c.start < cut.restore_at;
    let recovery = calls
        .iter()
        .filter(|c| c.outcome == Outcome::Ok && c.end >= cut.restore_at)
        .map(|c| c.end)
        .min()
        .map(|end| end - cut.restore_at);
    let open: Vec<&Call> = calls
        .iter()
        .filter(during)
        .filter(|c| c.open_at_start)
        .collect();
    // The controller polls every millisecond, but a load call can see the breaker open first
    // (the calls it ends start again at once).
    let opened_at = match (cut.opened_at, open.iter().map(|c| c.start).min()) {
        (Some(polled), Some(called)) => Some(polled.min(called)),
        (polled, called) => polled.or(called),
    };
    let failed_after_open = opened_at.map_or_else(Vec::new, |opened| {
        calls
            .iter()
            .filter(|c| c.start >= opened && c.start < cut.restore_at && c.outcome != Outcome::Ok)
            .map(Call::took)
            .collect()
    });
    CutFigures {
        mode: cut.mode,
        opened_after: opened_at.map(|at| at - cut.cut_at),
        recovery,
        ready: cut.ready_at.map(|at| at - cut.restore_at),
        ready_at_restore: cut.ready_at_restore,
        closed_at_cut: cut.closed_at_cut,
        open_calls: open.iter().map(|c| c.took()).collect(),
        open_calls_not_rejected: open
            .iter()
            .filter(|c| c.outcome != Outcome::Rejected)
            .count(),
        failed_after_open,
        other_errors: calls
            .iter()
            .filter(during)
            .filter(|c| c.outcome == Outcome::Failed)
            .count(),
        slowest: calls
            .iter()
            .filter(during)
            .map(Call::took)
            .max()
            .unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

struct Run {
    cuts: Vec<CutFigures>,
    calls: usize,
    breaker_opened: u32,
}

async fn run(schema: &Schema, db: &Database, scale: Scale) -> anyhow::Result<Run> {
    db.wait_ready(Duration::from_secs(10))
        .await
        .context("the database did not become ready")?;
    let agent = db
        .agents()
        .create(
            "bench",
            &NewAgent {
                name: "recovery-bench".into(),
                kind: "bench".into(),
                description: None,
                config: serde_json::json!({}),
                status: Default::default(),
            },
        )
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let oks = Arc::new(AtomicU64::new(0));
    let loads: Vec<_> = (0..LOAD_TASKS)
        .map(|i| {
            tokio::spawn(load(
                db.clone(),
                agent.id,
                LOAD_PERIOD * i / LOAD_TASKS,
                Arc::clone(&stop),
                Arc::clone(&oks),
            ))
        })
        .collect();
    // Steady traffic before the first cut.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut cuts = Vec::with_capacity(scale.cuts);
    let mut failure = None;
    for i in 0..scale.cuts {
        let mode = if i % 2 == 0 {
            Mode::Refuse
        } else {
            Mode::BlackHole
        };
        match cycle(db, &schema.proxy, mode, scale, &oks).await {
            Ok(cut) => cuts.push(cut),
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for task in loads {
        calls.extend(task.await?);
    }
    if let Some(err) = failure {
        return Err(err);
    }
    Ok(Run {
        cuts: cuts.iter().map(|cut| figures(cut, &calls)).collect(),
        calls: calls.len(),
        breaker_opened: db.stats().breaker.opened,
    })
}

// ---------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Microseconds under a millisecond, milliseconds above.
fn auto(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        us(d)
    } else {
        ms(d)
    }
}

fn opt(d: Option<Duration>, unit: fn(Duration) -> String) -> String {
    d.map_or_else(|| "—".to_owned(), unit)
}

/// `p50 … p99 … max …` of `values`, or "none".
fn spread(mut values: Vec<Duration>, unit: fn(Duration) -> String) -> String {
    values.sort();
    if values.is_empty() {
        return "none".to_owned();
    }
    format!(
        "p50 {:>9}  p99 {:>9}  max {:>9}",
        opt(common::quantile(&values, 0.50), unit),
        opt(common::quantile(&values, 0.99), unit),
        opt(values.last().copied(), unit)
    )
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Refuse => "Refuse",
        Mode::BlackHole => "BlackHole",
        Mode::Pass => "Pass",
        Mode::Close => "Close",
        Mode::Delay(_) => "Delay",
    }
}

/// Verdicts of one group of cuts.
struct Verdict {
    recovery_p99: Option<Duration>,
    unrecovered: usize,
    rejection_p99: Option<Duration>,
}

fn group_summary(out: &mut String, title: &str, cuts: &[&CutFigures]) -> Verdict {
    let recovered: Vec<Duration> = cuts.iter().filter_map(|c| c.recovery).collect();
    let unrecovered = cuts.len() - recovered.len();
    let ready: Vec<Duration> = cuts.iter().filter_map(|c| c.ready).collect();
    let opened: Vec<Duration> = cuts.iter().filter_map(|c| c.opened_after).collect();
    let open_calls: Vec<Duration> = cuts.iter().flat_map(|c| c.open_calls.clone()).collect();
    let not_rejected: usize = cuts.iter().map(|c| c.open_calls_not_rejected).sum();
    let failed_after_open: Vec<Duration> = cuts
        .iter()
        .flat_map(|c| c.failed_after_open.clone())
        .collect();
    let other_errors: usize = cuts.iter().map(|c| c.other_errors).sum();
    let slowest = cuts.iter().map(|c| c.slowest).max().unwrap_or_default();

    let mut sorted = recovered.clone();
    sorted.sort();
    let recovery_p99 = common::quantile(&sorted, 0.99);
    let mut sorted = open_calls.clone();
    sorted.sort();
    let rejection_p99 = common::quantile(&sorted, 0.99);

    let _ = writeln!(out, "\n[{title}] {} cuts", cuts.len());
    let _ = writeln!(
        out,
        "  restore → first successful query      {}{}",
        spread(recovered, ms),
        if unrecovered > 0 {
            format!("  ({unrecovered} cut(s) NOT recovered within {RECOVERY_LIMIT:?})")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  restore → is_ready() (fresh check)    {}  ({}/{} cuts)",
        spread(ready, ms),
        cuts.iter().filter(|c| c.ready.is_some()).count(),
        cuts.len()
    );
    let _ = writeln!(
        out,
        "  cut → breaker open                    {}  (opened in {}/{} cuts)",
        spread(opened, ms),
        cuts.iter().filter(|c| c.opened_after.is_some()).count(),
        cuts.len()
    );
    let _ = writeln!(
        out,
        "  calls made while open ({:>5} calls)   {}  ({not_rejected} not refused with CircuitOpen)",
        open_calls.len(),
        spread(open_calls, us),
    );
    let _ = writeln!(
        out,
        "  failed calls after opening ({:>5})    {}  (incl. half-open probes, calls cut short)",
        failed_after_open.len(),
        spread(failed_after_open, auto),
    );
    let _ = writeln!(
        out,
        "  errors other than CircuitOpen during cuts: {other_errors}; slowest call started during a cut: {}",
        ms(slowest)
    );
    Verdict {
        recovery_p99,
        unrecovered,
        rejection_p99,
    }
}

fn summary(out: &mut String, run: &Run, scale: Scale) -> bool {
    let _ = writeln!(
        out,
        "{} cuts (alternating Refuse / BlackHole), hold {} each; load: {LOAD_TASKS} tasks x 1 read per {} ({} calls); breaker opened {} times",
        run.cuts.len(),
        ms(scale.hold),
        ms(LOAD_PERIOD),
        run.calls,
        run.breaker_opened
    );
    let _ = writeln!(
        out,
        "\n  cut  mode        open after   first ok after   ready after   calls while open (p99)  other errors  slowest"
    );
    for (i, cut) in run.cuts.iter().enumerate() {
        let mut open = cut.open_calls.clone();
        open.sort();
        let _ = writeln!(
            out,
            "  {:>3}  {:<10} {:>11} {:>16} {:>13}   {:>5} ({:>7})          {:>5}   {:>9}{}{}",
            i + 1,
            mode_name(cut.mode),
            opt(cut.opened_after, ms),
            opt(cut.recovery, ms),
            opt(cut.ready, ms),
            open.len(),
            opt(common::quantile(&open, 0.99), us),
            cut.other_errors,
            ms(cut.slowest),
            if cut.ready_at_restore {
                "  (still ready at restore)"
            } else {
                ""
            },
            if cut.closed_at_cut {
                ""
            } else {
                "  (breaker not closed at the cut)"
            },
        );
    }
    for mode in [Mode::Refuse, Mode::BlackHole] {
        let cuts: Vec<&CutFigures> = run.cuts.iter().filter(|c| c.mode == mode).collect();
        group_summary(out, mode_name(mode), &cuts);
    }
    let all: Vec<&CutFigures> = run.cuts.iter().collect();
    let overall = group_summary(out, "overall", &all);
    let recovery_ok =
        overall.unrecovered == 0 && overall.recovery_p99.is_some_and(|p| p <= GOAL_RECOVERY_P99);
    let rejection_ok = overall
        .rejection_p99
        .is_some_and(|p| p < GOAL_REJECTION_P99);
    let _ = writeln!(
        out,
        "\ngoal: recovery p99 <= 1 s: {} (p99 {}{}); calls while open p99 < 1 ms: {} (p99 {})",
        if recovery_ok { "meets" } else { "MISSES" },
        opt(overall.recovery_p99, ms),
        if overall.unrecovered > 0 {
            format!(", {} not recovered", overall.unrecovered)
        } else {
            String::new()
        },
        if rejection_ok { "meets" } else { "MISSES" },
        opt(overall.rejection_p99, us),
    );
    recovery_ok && rejection_ok
}

fn main() -> anyhow::Result<()> {
    let Some(url) = common::postgres_url("recovery") else {
        return Ok(());
    };
    let bench_mode = common::bench_mode();
    let scale = if bench_mode { FULL } else { SMOKE };
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let run = rt.block_on(async {
        let schema = Schema::create(&url).await?;
        let db = Database::connect(schema.options()).await?;
        let run = run(&schema, &db, scale).await;
        schema.drop_with(db).await;
        run
    })?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "==================== groundwork-db recovery benchmark summary ===================="
    );
    if !bench_mode {
        let _ = writeln!(
            out,
            "(test mode: smoke run, two short cuts; figures are not meaningful)"
        );
    }
    let _ = writeln!(
        out,
        "Recovery after a cut of PostgreSQL ({}) through a TCP proxy; default supervisor settings, pool of 4.",
        groundwork_core::redact_url(&url)
    );
    summary(&mut out, &run, scale);
    let _ = writeln!(
        out,
        "\n(nearest-rank percentiles; polls every {}; total bench time {:.0} s; command: GROUNDWORK_TEST_POSTGRES_URL=... cargo bench -p groundwork-db --bench recovery)",
        ms(POLL),
        started.elapsed().as_secs_f64()
    );
    println!("\n{out}");
    if bench_mode {
        common::write_summary_file("groundwork-db-recovery-summary.txt", &out);
    }
    Ok(())
}
