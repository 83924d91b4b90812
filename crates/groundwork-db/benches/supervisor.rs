//! Overhead of the pool supervisor: a supervised [`Database`] against a bare sqlx `PgPool` of
//! the same size on the same PostgreSQL, measured in the same run. Goal: at most 1.2x.
//!
//! ```text
//! GROUNDWORK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p groundwork-db --bench supervisor
//! ```
//!
//! The peers (each a pool of at most 4 connections, all 4 kept open):
//! - `bare_pool`: `sqlx::query("SELECT 1").execute(&pool)` on a `PgPool` built with the
//!   options `Database::connect` gives its own pool; executing on `&pool` includes sqlx's
//!   acquire and release of a connection.
//! - `supervised`: `db.ping()`, the same `SELECT 1` on `&pool`, through `on_pool!`: the breaker
//!   check and in-flight count (`admit`), the operation deadline and breaker-opened wake-up
//!   (`with_deadline`), the outcome recorded on the breaker (`Admission::finish`), plus the
//!   two clock reads of `ping`'s returned latency.
//!
//! What is measured:
//! - `supervisor/select_1` (criterion): ns per operation, one task on a current-thread
//!   runtime, operations back to back.
//! - `supervisor/select_1_contended` (criterion): 8 tasks on a 2-worker runtime sharing the
//!   pool of 4, each running operations back to back; one iteration is one operation on every
//!   task (ns per operation = wall time / operations).
//! - `supervisor/acquire_only/bare_pool` (criterion, diagnostic): `pool.acquire()` and drop,
//!   the share of the bare path that is sqlx's acquire. Every supervised operation acquires
//!   its connection through the supervisor (`Database::acquire_from`, `pub(crate)`, counting
//!   waiters and acquire latency), so the `SELECT 1` pair above is acquire + query + release
//!   on both sides: the supervised acquire's overhead is inside its ratio.
//! - `interleaved` (custom): both pairs again, in short rounds in which each peer runs in turn
//!   (order alternating from round to round): with one task, 20,001 rounds of one timed
//!   operation per peer; contended, 401 rounds of 8 tasks x 25 operations per peer. Reported:
//!   the median (and mean) ns per operation of each peer, and the median of the per-round
//!   ratios supervised / bare with its quartiles. On a noisy 2-core VM, interference then lands
//!   on both peers of a round instead of on one peer's whole criterion run. The verdict
//!   (<= 1.2x) uses the median of per-round ratios.
//!
//! The summary is printed at the end and (under `cargo bench`) written to
//! `target/criterion/groundwork-db-supervisor-summary.txt`. `GROUNDWORK_BENCH_ONLY=summary`
//! runs only the interleaved rounds, `GROUNDWORK_BENCH_ONLY=criterion` only criterion's.
//! Under `cargo test --benches` everything runs once at a tiny size as a smoke test. Without
//! `GROUNDWORK_TEST_POSTGRES_URL` the benchmark prints a notice and exits 0.

// Benchmark setup code: a failure to build a runtime or reach the database is a broken
// benchmark, and panicking with the error is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use groundwork_core::redact_url;
use groundwork_db::{Database, DatabaseOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::runtime::Runtime;

/// The size of both pools (max and min: every connection stays open).
const POOL_SIZE: u32 = 4;
/// Tasks of the contended variant, and worker threads of its runtime.
const TASKS: usize = 8;
const WORKERS: usize = 2;
/// The goal: supervised at most this many times the bare pool's time per operation.
const GOAL: f64 = 1.2;

/// Sizes of the interleaved rounds: full under `cargo bench`, tiny under `cargo test`.
#[derive(Clone, Copy)]
struct Scale {
    /// One task: rounds of one operation of each peer.
    pairs: usize,
    /// Contended: rounds, and operations per task per peer in each (`TASKS` tasks).
    rounds: usize,
    ops_per_task: u64,
}

const FULL: Scale = Scale {
    pairs: 20_001,
    rounds: 401,
    ops_per_task: 25,
};

const SMOKE: Scale = Scale {
    pairs: 20,
    rounds: 1,
    ops_per_task: 5,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `SELECT 1` on `&pool`.
    Bare,
    /// `db.ping()`.
    Supervised,
    /// Diagnostic: `pool.acquire()` and drop.
    BareAcquire,
}

/// The pair compared, in the order of the summary.
const PAIR: [(Kind, &str); 2] = [(Kind::Bare, "bare_pool"), (Kind::Supervised, "supervised")];

// ---------------------------------------------------------------------------------------
// The peers
// ---------------------------------------------------------------------------------------

/// A bare pool and a supervised handle on the same server, created in one runtime (a pool's
/// connections belong to the runtime that opened them).
#[derive(Clone)]
struct Peers {
    pool: PgPool,
    db: Database,
}

impl Peers {
    async fn open(url: &str) -> Self {
        // What `Database::connect` builds for PostgreSQL, minus the supervisor.
        let connect = PgConnectOptions::from_str(url)
            .expect("PostgreSQL URL")
            .application_name("groundwork");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(connect);
        let db = Database::connect(
            DatabaseOptions::new(url)
                .max_connections(POOL_SIZE)
                .min_connections(POOL_SIZE)
                .acquire_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("Database::connect");
        db.wait_ready(Duration::from_secs(10))
            .await
            .expect("the database is not ready");
        let peers = Self { pool, db };
        // Open every connection of both pools: a burst of concurrent operations on each.
        for kind in [Kind::Bare, Kind::Supervised] {
            let tasks: Vec<_> = (0..2 * POOL_SIZE)
                .map(|_| {
                    let peers = peers.clone();
                    tokio::spawn(async move { peers.sequential(kind, 50).await })
                })
                .collect();
            for task in tasks {
                task.await.expect("warm-up task");
            }
        }
        peers
    }

    async fn one(&self, kind: Kind) {
        match kind {
            Kind::Bare => {
                let done = sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .expect("SELECT 1 on the bare pool");
                black_box(done);
            }
            Kind::Supervised => {
                black_box(self.db.ping().await.expect("db.ping()"));
            }
            Kind::BareAcquire => {
                let conn = self.pool.acquire().await.expect("pool.acquire()");
                drop(black_box(conn));
            }
        }
    }

    /// `ops` operations back to back; their total time.
    async fn sequential(&self, kind: Kind, ops: u64) -> Duration {
        let started = Instant::now();
        for _ in 0..ops {
            self.one(kind).await;
        }
        started.elapsed()
    }

    /// (bare, supervised) connections open now.
    fn sizes(&self) -> (u32, u32) {
        (self.pool.size(), self.db.stats().size)
    }

    async fn close(self) {
        self.db.close_within(Duration::from_secs(2)).await;
        self.pool.close().await;
    }
}

/// The peers twice: on a current-thread runtime (one task) and on a 2-worker runtime
/// (contended).
struct Bench {
    single_rt: Runtime,
    single: Peers,
    multi_rt: Runtime,
    multi: Peers,
}

impl Bench {
    fn new(url: &str) -> Self {
        let single_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("current-thread runtime");
        let multi_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .expect("multi-thread runtime");
        let single = single_rt.block_on(Peers::open(url));
        let multi = multi_rt.block_on(Peers::open(url));
        Self {
            single_rt,
            single,
            multi_rt,
            multi,
        }
    }

    /// `ops` operations of `kind` back to back on one task; their total time.
    fn uncontended(&self, kind: Kind, ops: u64) -> Duration {
        self.single_rt.block_on(self.single.sequential(kind, ops))
    }

    /// One task: `pairs` rounds of one operation of each peer (order alternating), each timed;
    /// a `pool.acquire()` + drop after each round, timed. Nanoseconds per operation.
    fn alternating(&self, pairs: usize) -> (Rounds, Vec<f64>) {
        self.single_rt.block_on(async {
            let mut rounds = Rounds::default();
            let mut acquire = Vec::with_capacity(pairs);
            let timed = async |kind| {
                let started = Instant::now();
                self.single.one(kind).await;
                started.elapsed().as_nanos() as f64
            };
            for round in 0..pairs {
                let order = if round % 2 == 0 {
                    [Kind::Bare, Kind::Supervised]
                } else {
                    [Kind::Supervised, Kind::Bare]
                };
                for kind in order {
                    rounds.push(kind, timed(kind).await);
                }
                acquire.push(timed(Kind::BareAcquire).await);
            }
            (rounds, acquire)
        })
    }

    /// `ops_per_task` operations of `kind` on each of `TASKS` tasks at once; the wall time.
    fn contended(&self, kind: Kind, ops_per_task: u64) -> Duration {
        self.multi_rt.block_on(async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let peers = self.multi.clone();
                    tokio::spawn(async move { peers.sequential(kind, ops_per_task).await })
                })
                .collect();
            for task in tasks {
                task.await.expect("contended task");
            }
            started.elapsed()
        })
    }

    fn close(self) {
        self.single_rt.block_on(self.single.close());
        self.multi_rt.block_on(self.multi.close());
    }
}

// ---------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------

/// Operations and time accumulated over every `iter_custom` call of one criterion benchmark
/// (warm-up included), for the summary.
static SAMPLES: Mutex<BTreeMap<String, (u128, Duration)>> = Mutex::new(BTreeMap::new());

fn record(id: &str, ops: u64, elapsed: Duration) {
    let mut samples = SAMPLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = samples.entry(id.to_owned()).or_default();
    entry.0 += u128::from(ops);
    entry.1 += elapsed;
}

/// Mean nanoseconds per operation recorded under `id`.
fn ns_per_op(id: &str) -> Option<f64> {
    let samples = SAMPLES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let &(ops, elapsed) = samples.get(id)?;
    (ops > 0).then(|| elapsed.as_nanos() as f64 / ops as f64)
}

fn bench_select_1(c: &mut Criterion, bench: &Bench) {
    let mut group = c.benchmark_group("supervisor/select_1");
    group.throughput(Throughput::Elements(1));
    for (kind, name) in PAIR {
        let id = format!("supervisor/select_1/{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = bench.uncontended(kind, iters);
                record(&id, iters, elapsed);
                elapsed
            });
        });
    }
    group.finish();
}

fn bench_select_1_contended(c: &mut Criterion, bench: &Bench) {
    let mut group = c.benchmark_group("supervisor/select_1_contended");
    // One iteration = one operation on every task.
    group.throughput(Throughput::Elements(TASKS as u64));
    for (kind, name) in PAIR {
        let id = format!("supervisor/select_1_contended/{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = bench.contended(kind, iters);
                record(&id, iters * TASKS as u64, elapsed);
                elapsed
            });
        });
    }
    group.finish();
}

fn bench_acquire_only(c: &mut Criterion, bench: &Bench) {
    let mut group = c.benchmark_group("supervisor/acquire_only");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare_pool", |b| {
        b.iter_custom(|iters| {
            let elapsed = bench.uncontended(Kind::BareAcquire, iters);
            record("supervisor/acquire_only/bare_pool", iters, elapsed);
            elapsed
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Interleaved rounds
// ---------------------------------------------------------------------------------------

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    common::quantile(&values, 0.5).unwrap_or(f64::NAN)
}

/// One pair measured in interleaved rounds: ns per operation of each peer per round.
#[derive(Default)]
struct Rounds {
    bare: Vec<f64>,
    supervised: Vec<f64>,
}

impl Rounds {
    fn push(&mut self, kind: Kind, ns: f64) {
        match kind {
            Kind::Bare => self.bare.push(ns),
            Kind::Supervised => self.supervised.push(ns),
            Kind::BareAcquire => {}
        }
    }

    /// supervised / bare of each round, ascending.
    fn ratios(&self) -> Vec<f64> {
        let mut ratios: Vec<f64> = self
            .supervised
            .iter()
            .zip(&self.bare)
            .map(|(s, b)| s / b)
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }
}

struct Interleaved {
    one_task: Rounds,
    contended: Rounds,
    acquire: Vec<f64>,
}

/// Every round runs each peer in turn, the order alternating from round to round. Rounds are
/// short (one operation per peer with one task; about 5 ms per peer contended), so that both
/// runs of a round see the same machine: on this VM other processes come and go within
/// seconds, and a longer round would give one peer a quiet half and the other a busy one.
fn interleaved(bench: &Bench, scale: Scale) -> Interleaved {
    let (one_task, acquire) = bench.alternating(scale.pairs);
    let mut out = Interleaved {
        one_task,
        contended: Rounds::default(),
        acquire,
    };
    for round in 0..scale.rounds {
        let order = if round % 2 == 0 {
            [Kind::Bare, Kind::Supervised]
        } else {
            [Kind::Supervised, Kind::Bare]
        };
        for kind in order {
            let took = bench.contended(kind, scale.ops_per_task);
            let ops = scale.ops_per_task * TASKS as u64;
            out.contended
                .push(kind, took.as_nanos() as f64 / ops as f64);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn verdict(ratio: f64) -> &'static str {
    if ratio <= GOAL { "meets" } else { "MISSES" }
}

fn criterion_summary(out: &mut String) {
    let groups = [
        ("supervisor/select_1", "one task, current-thread runtime"),
        (
            "supervisor/select_1_contended",
            "8 tasks, 2 workers, pool of 4",
        ),
    ];
    for (group, what) in groups {
        let _ = writeln!(out, "{group} — criterion, mean ns per SELECT 1 ({what})");
        let bare = ns_per_op(&format!("{group}/bare_pool"));
        let supervised = ns_per_op(&format!("{group}/supervised"));
        let ratio = bare.zip(supervised).map(|(b, s)| s / b);
        let _ = writeln!(out, "  bare_pool    {:>9} ns/op", fmt_opt(bare, 0));
        let _ = writeln!(
            out,
            "  supervised   {:>9} ns/op   supervised/bare {}x{}",
            fmt_opt(supervised, 0),
            fmt_opt(ratio, 3),
            ratio.map_or_else(String::new, |r| format!(" ({} <= {GOAL}x)", verdict(r))),
        );
    }
    let _ = writeln!(
        out,
        "supervisor/acquire_only — diagnostic, no supervised peer: bare pool.acquire() + drop {} ns/op",
        fmt_opt(ns_per_op("supervisor/acquire_only/bare_pool"), 0)
    );
}

/// Returns whether both pairs meet the goal.
fn interleaved_summary(out: &mut String, result: &Interleaved, scale: Scale) -> bool {
    let _ = writeln!(
        out,
        "\ninterleaved — rounds in which both peers run in turn (order alternating), medians"
    );
    let mut all_meet = true;
    let pairs = [
        (
            "one task",
            &result.one_task,
            format!(
                "{} rounds of one timed SELECT 1 per peer, current-thread runtime",
                scale.pairs
            ),
        ),
        (
            "contended",
            &result.contended,
            format!(
                "{} rounds of {TASKS} tasks x {} SELECT 1 per peer, 2 workers, pool of {POOL_SIZE}",
                scale.rounds, scale.ops_per_task
            ),
        ),
    ];
    for (name, rounds, what) in pairs {
        let bare = median(rounds.bare.clone());
        let supervised = median(rounds.supervised.clone());
        let ratios = rounds.ratios();
        let paired = common::quantile(&ratios, 0.5).unwrap_or(f64::NAN);
        let meets = paired <= GOAL;
        all_meet &= meets;
        let _ = writeln!(out, "  {name} ({what})");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (bare_mean, supervised_mean) = (mean(&rounds.bare), mean(&rounds.supervised));
        let _ = writeln!(
            out,
            "    median  bare_pool {bare:>7.0} ns/op   supervised {supervised:>7.0} ns/op   ratio of medians {:.3}x",
            supervised / bare
        );
        let _ = writeln!(
            out,
            "    mean    bare_pool {bare_mean:>7.0} ns/op   supervised {supervised_mean:>7.0} ns/op   ratio of means   {:.3}x",
            supervised_mean / bare_mean
        );
        let _ = writeln!(
            out,
            "    supervised/bare per round: median {paired:.3}x (quartiles {:.3}x .. {:.3}x) — goal <= {GOAL}x: {}",
            common::quantile(&ratios, 0.25).unwrap_or(f64::NAN),
            common::quantile(&ratios, 0.75).unwrap_or(f64::NAN),
            verdict(paired)
        );
    }
    let _ = writeln!(
        out,
        "  (diagnostic) bare pool.acquire() + drop, one task, after each round: median {:.0} ns/op",
        median(result.acquire.clone())
    );
    all_meet
}

fn main() {
    let Some(url) = common::postgres_url("supervisor") else {
        return;
    };
    let bench_mode = common::bench_mode();
    let scale = if bench_mode { FULL } else { SMOKE };
    let only = std::env::var("GROUNDWORK_BENCH_ONLY").unwrap_or_default();
    let started = Instant::now();
    let bench = Bench::new(&url);

    if only != "summary" {
        let mut c = Criterion::default()
            .sample_size(20)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1))
            .configure_from_args();
        bench_select_1(&mut c, &bench);
        bench_select_1_contended(&mut c, &bench);
        bench_acquire_only(&mut c, &bench);
        c.final_summary();
    }
    let interleaved = (only != "criterion").then(|| interleaved(&bench, scale));
    let (single_sizes, multi_sizes) = (bench.single.sizes(), bench.multi.sizes());
    bench.close();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "==================== groundwork-db supervisor benchmark summary ===================="
    );
    if !bench_mode {
        let _ = writeln!(
            out,
            "(test mode: smoke run at tiny sizes; figures are not meaningful)"
        );
    }
    let _ = writeln!(
        out,
        "Acquire overhead of the supervisor vs a bare sqlx pool, same run, same server ({}).",
        redact_url(&url)
    );
    let _ = writeln!(
        out,
        "Pools of max {POOL_SIZE} (min {POOL_SIZE}); connections open at the end, bare/supervised: \
         one task {}/{}, contended {}/{}. Goal: supervised <= {GOAL}x bare.\n",
        single_sizes.0, single_sizes.1, multi_sizes.0, multi_sizes.1
    );
    if only != "summary" {
        criterion_summary(&mut out);
    }
    if let Some(result) = &interleaved {
        let meets = interleaved_summary(&mut out, result, scale);
        let _ = writeln!(
            out,
            "\nverdict (median of per-round ratios, both pairs): {}",
            if meets {
                "supervised <= 1.2x bare"
            } else {
                "over 1.2x"
            }
        );
    }
    let _ = writeln!(
        out,
        "\nThe supervised SELECT 1 acquires through the supervisor (Database::acquire_from, \
         which counts waiters and acquire latency) and the bare one through sqlx's pool: each \
         pair above is acquire + query + release on both sides."
    );
    let _ = writeln!(
        out,
        "\n(total bench time {:.0} s; command: GROUNDWORK_TEST_POSTGRES_URL=... cargo bench -p groundwork-db --bench supervisor)",
        started.elapsed().as_secs_f64()
    );
    println!("\n{out}");
    if bench_mode {
        common::write_summary_file("groundwork-db-supervisor-summary.txt", &out);
    }
}
