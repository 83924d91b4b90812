//! Benchmarks of `groundwork-cache`, measured side by side with `moka` (sync and future) and
//! `quick_cache` in the same run.
//!
//! Run everything (criterion benchmarks, then the custom measurements and a summary table):
//!
//! ```text
//! cargo bench -p groundwork-cache --bench cache
//! ```
//!
//! What is measured:
//! - `hit/one_thread` (criterion): ns per cache hit on one thread; 100,000 entries `u64 ->
//!   Arc<String>`, keys drawn uniformly from a pre-generated random array. Groundwork and
//!   moka's future cache run a whole loop of gets inside one `block_on` (current-thread
//!   runtime), so executor overhead is not counted per get. A diagnostic row,
//!   `quick_cache_plus_clock`, adds one `Instant::now()` per `quick_cache` get: groundwork
//!   reads its clock on every hit, and that read (`rdtscp` in the vDSO) waits for the
//!   lookup's cache misses to complete, so consecutive lookups no longer overlap.
//! - `hit/two_threads` (criterion): total gets/s with 1 and with 2 OS threads (each its own
//!   current-thread runtime for the async caches), timing the slowest thread; the summary
//!   prints the 2-thread / 1-thread scaling ratio of each cache.
//! - `hit/interleaved` (custom): the two figures above again, with every cache run in turn
//!   within each round (21 rounds of 1,000,000 gets) and the median round reported, so that
//!   interference from the VM's host lands on all caches alike. BENCHMARKS.md quotes these.
//! - `hit_ratio/zipf` (custom): hit ratio on a Zipf(s = 0.99) trace of 2,000,000 lookups
//!   over 1,000,000 keys with a capacity of 10,000 (1 %), get then insert on a miss
//!   (groundwork: misses load through its source).
//! - `refresh/p99_during_refresh` (custom): p99 latency of individually timed hits on one
//!   thread while another OS thread runs `refresh_now()` in a loop on the same
//!   100,000-entry cache (values unchanged, and 1 % changed per refresh), against the idle p99.
//! - `miss/single_flight_1000` (criterion + custom check): time for 1,000 concurrent gets of
//!   one missing key on a multi-thread runtime, and the number of source loads (must be 1).
//!
//! The summary is printed at the end and (under `cargo bench`) written to
//! `target/criterion/groundwork-cache-summary.txt`.
//! `GROUNDWORK_BENCH_ONLY=summary` runs only the custom measurements (the criterion-derived
//! rows of the summary are then empty); `GROUNDWORK_BENCH_ONLY=criterion` only criterion's.
//! Under `cargo test --benches` (no `--bench` argument) everything runs once at a tiny size
//! as a smoke test.

// Benchmark setup code: a failure to build a runtime or fill a cache is a broken benchmark,
// and panicking with the error is the clearest report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use groundwork_cache::{RefreshingCache, Snapshot, Source};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tokio::runtime::Runtime;

/// Entries of the hit and refresh benchmarks.
const ENTRIES: u64 = 100_000;
/// Length of the pre-generated random key array (a power of two, indexed with a mask).
const KEY_TRACE: usize = 1 << 20;
const KEY_MASK: usize = KEY_TRACE - 1;
/// Capacity of the hit caches: everything fits.
const HIT_CAPACITY: u64 = 200_000;

/// Sizes of the custom measurements: full under `cargo bench`, tiny under `cargo test`.
#[derive(Clone, Copy)]
struct Scale {
    zipf_keys: u64,
    zipf_capacity: u64,
    zipf_len: usize,
    refresh_gets: usize,
    /// Minimum number of refreshes that must complete inside the measured window.
    refresh_min_refreshes: u64,
    single_flight_rounds: u64,
    /// Rounds of the interleaved hit measurement, and gets per cache per round (moka: a
    /// tenth, it is ten times slower).
    interleaved_rounds: usize,
    interleaved_gets: u64,
}

const FULL: Scale = Scale {
    zipf_keys: 1_000_000,
    zipf_capacity: 10_000,
    zipf_len: 2_000_000,
    refresh_gets: 1_000_000,
    refresh_min_refreshes: 3,
    single_flight_rounds: 200,
    interleaved_rounds: 21,
    interleaved_gets: 1_000_000,
};

const SMOKE: Scale = Scale {
    zipf_keys: 1_000_000,
    zipf_capacity: 10_000,
    zipf_len: 20_000,
    refresh_gets: 20_000,
    refresh_min_refreshes: 1,
    single_flight_rounds: 3,
    interleaved_rounds: 1,
    interleaved_gets: 10_000,
};

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

fn value_of(key: u64) -> String {
    format!("value-{key:08}")
}

fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime")
}

fn multi_thread_runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("multi-thread runtime")
}

/// `KEY_TRACE` keys drawn uniformly from `0..ENTRIES`.
fn uniform_keys(seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..KEY_TRACE)
        .map(|_| rng.random_range(0..ENTRIES))
        .collect()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Operations and time accumulated over every `iter_custom` call of one criterion benchmark
/// (warm-up included), so the summary can print rates and ratios criterion does not expose.
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

// ---------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------

/// A source holding keys `0..entries`. With `churn`, every `load_all` changes the value of
/// exactly 1 % of the keys (those with `key % 100 == generation % 100`).
struct Table {
    entries: u64,
    churn: bool,
    generation: AtomicU64,
}

impl Table {
    fn new(entries: u64, churn: bool) -> Self {
        Self {
            entries,
            churn,
            generation: AtomicU64::new(0),
        }
    }

    fn value_at(key: u64, generation: u64) -> String {
        let residue = key % 100;
        let changed_at = if generation >= residue {
            generation - (generation - residue) % 100
        } else {
            0
        };
        if changed_at == 0 {
            value_of(key)
        } else {
            format!("value-{key:08}-{changed_at}")
        }
    }
}

impl Source<u64, String> for Table {
    type Error = Infallible;

    async fn load(&self, key: &u64) -> Result<Option<String>, Infallible> {
        let generation = self.generation.load(Ordering::Relaxed);
        Ok((*key < self.entries).then(|| Self::value_at(*key, generation)))
    }

    async fn load_all(&self) -> Result<Snapshot<u64, String>, Infallible> {
        let generation = if self.churn {
            self.generation.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        Ok(Snapshot::new(
            (0..self.entries)
                .map(|key| (key, Self::value_at(key, generation)))
                .collect(),
        ))
    }
}

/// A source that has every key (the Zipf trace's universe), counting its loads.
struct Everything {
    loads: Arc<AtomicU64>,
    /// Yield once before answering (so concurrent callers really overlap the load).
    yield_first: bool,
}

impl Source<u64, String> for Everything {
    type Error = Infallible;

    async fn load(&self, key: &u64) -> Result<Option<String>, Infallible> {
        if self.yield_first {
            tokio::task::yield_now().await;
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        Ok(Some(value_of(*key)))
    }

    async fn load_all(&self) -> Result<Snapshot<u64, String>, Infallible> {
        Ok(Snapshot::new(Vec::new()))
    }
}

// ---------------------------------------------------------------------------------------
// hit/one_thread and hit/two_threads
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    Groundwork,
    MokaSync,
    MokaFuture,
    QuickCache,
    /// Diagnostic: `quick_cache` plus one `Instant::now()` per get, which is what
    /// groundwork's hit path does on top of its `quick_cache` lookup.
    QuickCacheClock,
}

const KINDS: [(Kind, &str); 4] = [
    (Kind::Groundwork, "groundwork"),
    (Kind::MokaSync, "moka_sync"),
    (Kind::MokaFuture, "moka_future"),
    (Kind::QuickCache, "quick_cache"),
];

/// The diagnostic row of `hit/one_thread`.
const CLOCK_DIAGNOSTIC: (Kind, &str) = (Kind::QuickCacheClock, "quick_cache_plus_clock");

/// The four caches, each filled with the same 100,000 entries.
struct HitCaches {
    groundwork: RefreshingCache<u64, String>,
    moka_sync: moka::sync::Cache<u64, Arc<String>>,
    moka_future: moka::future::Cache<u64, Arc<String>>,
    quick: quick_cache::sync::Cache<u64, Arc<String>>,
    keys: Vec<u64>,
    /// Varies the starting point in `keys` from call to call.
    offset: AtomicUsize,
}

impl HitCaches {
    fn new(rt: &Runtime) -> Self {
        let groundwork = RefreshingCache::builder("bench")
            .refresh_interval(None)
            .capacity(HIT_CAPACITY)
            .build(Table::new(ENTRIES, false));
        rt.block_on(groundwork.start())
            .expect("groundwork fill (start)");
        rt.block_on(async {
            for key in 0..ENTRIES {
                let value = groundwork.get(&key).await.expect("groundwork get");
                assert!(value.is_some(), "groundwork: key {key} missing after fill");
            }
        });
        let stats = groundwork.stats();
        assert_eq!(
            stats.misses, 0,
            "groundwork: every key must hit after start"
        );
        assert_eq!(stats.entries, ENTRIES, "groundwork: entries after fill");

        let moka_sync = moka::sync::Cache::new(HIT_CAPACITY);
        let moka_future = moka::future::Cache::new(HIT_CAPACITY);
        let quick = quick_cache::sync::Cache::new(HIT_CAPACITY as usize);
        for key in 0..ENTRIES {
            let value = Arc::new(value_of(key));
            moka_sync.insert(key, Arc::clone(&value));
            rt.block_on(moka_future.insert(key, Arc::clone(&value)));
            quick.insert(key, value);
        }
        moka_sync.run_pending_tasks();
        rt.block_on(moka_future.run_pending_tasks());
        for key in 0..ENTRIES {
            assert!(
                moka_sync.get(&key).is_some(),
                "moka sync: key {key} missing"
            );
            assert!(
                rt.block_on(moka_future.get(&key)).is_some(),
                "moka future: key {key} missing"
            );
            assert!(quick.get(&key).is_some(), "quick_cache: key {key} missing");
        }

        Self {
            groundwork,
            moka_sync,
            moka_future,
            quick,
            keys: uniform_keys(0x5eed),
            offset: AtomicUsize::new(0),
        }
    }

    fn next_offset(&self) -> usize {
        self.offset.fetch_add(7919 * 64, Ordering::Relaxed) & KEY_MASK
    }

    /// `iters` gets of `kind` from key index `offset` on, timed; the async caches run the
    /// whole loop inside one `block_on` of `rt`.
    fn run(&self, kind: Kind, rt: &Runtime, offset: usize, iters: u64) -> Duration {
        let keys = &self.keys[..];
        let iters = iters as usize;
        match kind {
            Kind::Groundwork => rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let key = keys[(offset + i) & KEY_MASK];
                    black_box(self.groundwork.get(&key).await.ok());
                }
                start.elapsed()
            }),
            Kind::MokaFuture => rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let key = keys[(offset + i) & KEY_MASK];
                    black_box(self.moka_future.get(&key).await);
                }
                start.elapsed()
            }),
            Kind::MokaSync => {
                let start = Instant::now();
                for i in 0..iters {
                    let key = keys[(offset + i) & KEY_MASK];
                    black_box(self.moka_sync.get(&key));
                }
                start.elapsed()
            }
            Kind::QuickCache => {
                let start = Instant::now();
                for i in 0..iters {
                    let key = keys[(offset + i) & KEY_MASK];
                    black_box(self.quick.get(&key));
                }
                start.elapsed()
            }
            Kind::QuickCacheClock => {
                let start = Instant::now();
                for i in 0..iters {
                    let key = keys[(offset + i) & KEY_MASK];
                    black_box(self.quick.get(&key));
                    black_box(Instant::now());
                }
                start.elapsed()
            }
        }
    }

    /// `iters` gets on each of `threads` OS threads started together (a barrier after each
    /// builds its runtime); the time of the slowest thread.
    fn run_threads(&self, kind: Kind, threads: usize, iters: u64) -> Duration {
        let barrier = Barrier::new(threads);
        let base = self.next_offset();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        let rt = current_thread_runtime();
                        let offset = (base + t * (KEY_TRACE / threads.max(1))) & KEY_MASK;
                        barrier.wait();
                        self.run(kind, &rt, offset, iters)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("bench thread panicked"))
                .max()
                .unwrap_or_default()
        })
    }
}

fn bench_hit_one_thread(c: &mut Criterion) {
    let rt = current_thread_runtime();
    let caches = HitCaches::new(&rt);
    let mut group = c.benchmark_group("hit/one_thread");
    group.throughput(Throughput::Elements(1));
    for (kind, name) in KINDS.into_iter().chain([CLOCK_DIAGNOSTIC]) {
        let id = format!("hit/one_thread/{name}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let elapsed = caches.run(kind, &rt, caches.next_offset(), iters);
                record(&id, iters, elapsed);
                elapsed
            });
        });
    }
    group.finish();
}

fn bench_hit_two_threads(c: &mut Criterion) {
    let rt = current_thread_runtime();
    let caches = HitCaches::new(&rt);
    let mut group = c.benchmark_group("hit/two_threads");
    for (kind, name) in KINDS {
        for threads in [1_usize, 2] {
            // One iteration = one get on every thread.
            group.throughput(Throughput::Elements(threads as u64));
            let id = format!("hit/two_threads/{name}/{threads}");
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    let elapsed = caches.run_threads(kind, threads, iters);
                    record(&id, iters * threads as u64, elapsed);
                    elapsed
                });
            });
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// miss/single_flight_1000
// ---------------------------------------------------------------------------------------

const CONCURRENT_GETS: usize = 1000;

/// A cache with no entries whose loads yield once, and its load counter.
struct SingleFlight {
    cache: RefreshingCache<u64, String>,
    loads: Arc<AtomicU64>,
    next_key: AtomicU64,
    /// Rounds run, and rounds where the source was read more than once.
    rounds: AtomicU64,
    extra_loads: AtomicU64,
    worst: AtomicU64,
}

impl SingleFlight {
    fn new() -> Self {
        let loads = Arc::new(AtomicU64::new(0));
        let cache = RefreshingCache::builder("single_flight")
            .refresh_interval(None)
            .fill_on_miss(false)
            .capacity(1 << 20)
            .build(Everything {
                loads: Arc::clone(&loads),
                yield_first: true,
            });
        Self {
            cache,
            loads,
            next_key: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            extra_loads: AtomicU64::new(0),
            worst: AtomicU64::new(0),
        }
    }

    /// One round: 1,000 tasks get one fresh (missing) key at once. Returns its duration.
    async fn round(&self) -> Duration {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let loads_before = self.loads.load(Ordering::Relaxed);
        let start = Instant::now();
        let handles: Vec<_> = (0..CONCURRENT_GETS)
            .map(|_| {
                let cache = self.cache.clone();
                tokio::spawn(async move { cache.get(&key).await })
            })
            .collect();
        for handle in handles {
            let value = handle.await.expect("get task").expect("get");
            assert!(value.is_some(), "single flight: key {key} not found");
        }
        let elapsed = start.elapsed();
        // Every caller has its value, so the load (or loads) finished.
        let loads = self.loads.load(Ordering::Relaxed) - loads_before;
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.extra_loads
            .fetch_add(loads.saturating_sub(1), Ordering::Relaxed);
        self.worst.fetch_max(loads, Ordering::Relaxed);
        elapsed
    }
}

fn bench_single_flight(c: &mut Criterion) {
    let rt = multi_thread_runtime(2);
    let sf = SingleFlight::new();
    let mut group = c.benchmark_group("miss");
    group.throughput(Throughput::Elements(CONCURRENT_GETS as u64));
    group.bench_function("single_flight_1000", |b| {
        b.iter_custom(|iters| {
            let elapsed = rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += sf.round().await;
                }
                total
            });
            record("miss/single_flight_1000", iters, elapsed);
            elapsed
        });
    });
    group.finish();
    let mut flight = SINGLE_FLIGHT_CRITERION
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *flight = Some(SingleFlightReport::of(&sf, Duration::ZERO));
}

static SINGLE_FLIGHT_CRITERION: Mutex<Option<SingleFlightReport>> = Mutex::new(None);

#[derive(Clone, Copy)]
struct SingleFlightReport {
    rounds: u64,
    extra_loads: u64,
    worst: u64,
    median: Duration,
}

impl SingleFlightReport {
    fn of(sf: &SingleFlight, median: Duration) -> Self {
        Self {
            rounds: sf.rounds.load(Ordering::Relaxed),
            extra_loads: sf.extra_loads.load(Ordering::Relaxed),
            worst: sf.worst.load(Ordering::Relaxed),
            median,
        }
    }
}

/// Dedicated rounds outside criterion: the load count of each, and the median round time.
fn single_flight_check(scale: Scale) -> SingleFlightReport {
    let rt = multi_thread_runtime(2);
    let sf = SingleFlight::new();
    let mut times: Vec<Duration> = rt.block_on(async {
        let mut times = Vec::new();
        for _ in 0..scale.single_flight_rounds {
            times.push(sf.round().await);
        }
        times
    });
    times.sort();
    SingleFlightReport::of(&sf, times[times.len() / 2])
}

// ---------------------------------------------------------------------------------------
// hit_ratio/zipf
// ---------------------------------------------------------------------------------------

struct HitRatio {
    name: &'static str,
    hits: u64,
    lookups: u64,
    elapsed: Duration,
}

impl HitRatio {
    fn percent(&self) -> f64 {
        100.0 * self.hits as f64 / self.lookups.max(1) as f64
    }
}

fn zipf_trace(scale: Scale) -> Vec<u64> {
    let zipf = Zipf::new(scale.zipf_keys as f64, 0.99).expect("Zipf parameters");
    let mut rng = SmallRng::seed_from_u64(0x21bf);
    (0..scale.zipf_len)
        .map(|_| zipf.sample(&mut rng) as u64)
        .collect()
}

fn hit_ratios(scale: Scale) -> Vec<HitRatio> {
    let trace = zipf_trace(scale);
    let lookups = trace.len() as u64;
    let mut rows = Vec::new();

    // moka (sync): get, insert on a miss; eviction is asynchronous, so run its pending
    // tasks every 1,000 operations to keep the bound.
    {
        let start = Instant::now();
        let cache = moka::sync::Cache::<u64, Arc<String>>::new(scale.zipf_capacity);
        let mut hits = 0;
        for (i, &key) in trace.iter().enumerate() {
            if cache.get(&key).is_some() {
                hits += 1;
            } else {
                cache.insert(key, Arc::new(value_of(key)));
            }
            if i % 1000 == 999 {
                cache.run_pending_tasks();
            }
        }
        cache.run_pending_tasks();
        assert!(
            cache.entry_count() <= scale.zipf_capacity,
            "moka over capacity: {}",
            cache.entry_count()
        );
        rows.push(HitRatio {
            name: "moka_sync",
            hits,
            lookups,
            elapsed: start.elapsed(),
        });
    }

    // quick_cache: get, insert on a miss.
    {
        let start = Instant::now();
        let cache = quick_cache::sync::Cache::<u64, Arc<String>>::new(scale.zipf_capacity as usize);
        let mut hits = 0;
        for &key in &trace {
            if cache.get(&key).is_some() {
                hits += 1;
            } else {
                cache.insert(key, Arc::new(value_of(key)));
            }
        }
        assert!(cache.len() as u64 <= scale.zipf_capacity);
        rows.push(HitRatio {
            name: "quick_cache",
            hits,
            lookups,
            elapsed: start.elapsed(),
        });
    }

    // groundwork: misses load through the source, on a current-thread runtime.
    {
        let start = Instant::now();
        let rt = current_thread_runtime();
        let loads = Arc::new(AtomicU64::new(0));
        let cache = RefreshingCache::builder("zipf")
            .refresh_interval(None)
            .fill_on_miss(false)
            .capacity(scale.zipf_capacity)
            .build(Everything {
                loads: Arc::clone(&loads),
                yield_first: false,
            });
        rt.block_on(async {
            for &key in &trace {
                let value = cache.get(&key).await.expect("groundwork get");
                assert!(value.is_some());
            }
        });
        let stats = cache.stats();
        assert_eq!(stats.hits + stats.misses, lookups, "groundwork lookups");
        assert_eq!(
            stats.misses,
            loads.load(Ordering::Relaxed),
            "groundwork: one load per miss"
        );
        assert!(stats.weight <= scale.zipf_capacity);
        rows.push(HitRatio {
            name: "groundwork",
            hits: stats.hits,
            lookups,
            elapsed: start.elapsed(),
        });
    }
    rows
}

// ---------------------------------------------------------------------------------------
// refresh/p99_during_refresh
// ---------------------------------------------------------------------------------------

struct LatencyRun {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    gets: u64,
    refreshes: u64,
}

impl LatencyRun {
    fn of(hist: &Histogram<u64>, refreshes: u64) -> Self {
        Self {
            p50: hist.value_at_quantile(0.50),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            gets: hist.len(),
            refreshes,
        }
    }
}

struct RefreshReport {
    label: &'static str,
    idle: LatencyRun,
    during: LatencyRun,
    refresh_time: Duration,
}

/// `gets` individually timed hits (ns) added to `hist`.
async fn timed_gets(
    cache: &RefreshingCache<u64, String>,
    keys: &[u64],
    offset: usize,
    gets: usize,
    hist: &mut Histogram<u64>,
) {
    for i in 0..gets {
        let key = keys[(offset + i) & KEY_MASK];
        let start = Instant::now();
        let value = cache.get(&key).await;
        let elapsed = start.elapsed();
        hist.saturating_record(nanos(elapsed));
        black_box(value.ok());
    }
}

fn refresh_latency(scale: Scale, churn: bool) -> RefreshReport {
    let rt = current_thread_runtime();
    let cache = RefreshingCache::builder("refresh")
        .refresh_interval(None)
        .capacity(HIT_CAPACITY)
        .build(Table::new(ENTRIES, churn));
    rt.block_on(cache.start()).expect("groundwork fill (start)");
    assert_eq!(cache.stats().entries, ENTRIES);
    let keys = uniform_keys(0xfeed);
    let new_hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");

    // Time one refresh alone, for the report.
    let refresh_time = {
        let start = Instant::now();
        rt.block_on(cache.refresh_now()).expect("refresh");
        start.elapsed()
    };

    // Idle: nothing else runs.
    let mut idle = new_hist();
    rt.block_on(timed_gets(&cache, &keys, 0, scale.refresh_gets, &mut idle));

    // During refresh: another OS thread loops `refresh_now()` in a task of its own
    // multi-thread runtime while this thread gets.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let refresher = {
        let (cache, stop, started, completed) = (
            cache.clone(),
            Arc::clone(&stop),
            Arc::clone(&started),
            Arc::clone(&completed),
        );
        std::thread::spawn(move || {
            let rt = multi_thread_runtime(1);
            rt.block_on(async move {
                let task = tokio::spawn(async move {
                    started.store(true, Ordering::Release);
                    while !stop.load(Ordering::Acquire) {
                        cache.refresh_now().await.expect("refresh");
                        completed.fetch_add(1, Ordering::Release);
                    }
                });
                task.await.expect("refresh task");
            });
        })
    };
    while !started.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let mut during = new_hist();
    let refreshes_before = completed.load(Ordering::Acquire);
    let mut done = 0;
    // At least `refresh_gets` gets, and long enough for a few whole refreshes to finish
    // inside the window (bounded, in case refreshes are very slow).
    while done < scale.refresh_gets
        || (completed.load(Ordering::Acquire) - refreshes_before < scale.refresh_min_refreshes
            && done < 20 * scale.refresh_gets)
    {
        let chunk = (scale.refresh_gets / 10).max(1);
        rt.block_on(timed_gets(&cache, &keys, done, chunk, &mut during));
        done += chunk;
    }
    let refreshes = completed.load(Ordering::Acquire) - refreshes_before;
    stop.store(true, Ordering::Release);
    refresher.join().expect("refresher thread");
    assert_eq!(
        cache.stats().misses,
        0,
        "every get of the refresh run must hit"
    );

    RefreshReport {
        label: if churn {
            "1% changed per refresh"
        } else {
            "values unchanged"
        },
        idle: LatencyRun::of(&idle, 0),
        during: LatencyRun::of(&during, refreshes),
        refresh_time,
    }
}

// ---------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn criterion_summary(out: &mut String) {
    let _ = writeln!(
        out,
        "hit/one_thread — ns per get (100,000 entries, uniform keys)"
    );
    for (_, name) in KINDS {
        let _ = writeln!(
            out,
            "  {name:<12} {:>8} ns/get",
            fmt_opt(ns_per_op(&format!("hit/one_thread/{name}")), 1)
        );
    }
    let (_, name) = CLOCK_DIAGNOSTIC;
    let _ = writeln!(
        out,
        "  (diagnostic) quick_cache + one Instant::now() per get: {} ns/get",
        fmt_opt(ns_per_op(&format!("hit/one_thread/{name}")), 1)
    );
    let _ = writeln!(
        out,
        "\nhit/two_threads — total gets/s (slowest thread), 2-thread / 1-thread scaling"
    );
    for (_, name) in KINDS {
        let rate = |threads: usize| {
            ns_per_op(&format!("hit/two_threads/{name}/{threads}")).map(|ns| 1e3 / ns)
        };
        let (one, two) = (rate(1), rate(2));
        let _ = writeln!(
            out,
            "  {name:<12} 1 thread {:>7} M gets/s   2 threads {:>7} M gets/s   scaling {}x",
            fmt_opt(one, 2),
            fmt_opt(two, 2),
            fmt_opt(one.zip(two).map(|(a, b)| b / a), 2),
        );
    }
    let flight = *SINGLE_FLIGHT_CRITERION
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(
        out,
        "\nmiss/single_flight_1000 — 1,000 concurrent gets of one missing key (2 workers)"
    );
    let _ = writeln!(
        out,
        "  criterion: {} µs per round (mean)",
        fmt_opt(ns_per_op("miss/single_flight_1000").map(|ns| ns / 1e3), 1)
    );
    if let Some(f) = flight {
        let _ = writeln!(
            out,
            "  criterion rounds: {}, loads per round: worst {}, extra loads {} (must be 1 and 0)",
            f.rounds, f.worst, f.extra_loads
        );
    }
}

/// Medians over interleaved rounds: ns per get on one thread, total gets/s on 1 and 2 threads.
struct Interleaved {
    one_thread_ns: f64,
    rate_1: f64,
    rate_2: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The hit figures again, measured so that every cache sees the same machine: each round runs
/// every cache once in turn (one thread, then 1 and 2 OS threads), and the median round of each
/// is reported (each cache is warmed with an untimed run first). Criterion measures one cache for seconds before the next, so on a VM a few
/// seconds of interference from the host land on one cache only and skew the ratios; here they
/// land on one round of every cache and the median discards them.
fn interleaved_hits(scale: Scale) -> Vec<(&'static str, Interleaved)> {
    let rt = current_thread_runtime();
    let caches = HitCaches::new(&rt);
    let mut samples: Vec<[Vec<f64>; 3]> = KINDS.iter().map(|_| Default::default()).collect();
    for _ in 0..scale.interleaved_rounds {
        for (i, &(kind, _)) in KINDS.iter().enumerate() {
            let gets = match kind {
                Kind::MokaSync | Kind::MokaFuture => scale.interleaved_gets / 10,
                _ => scale.interleaved_gets,
            };
            // Untimed first: the previous cache's run evicted this one's entries from the
            // CPU caches, and criterion measures warm caches too.
            caches.run(kind, &rt, caches.next_offset(), gets);
            let one = caches.run(kind, &rt, caches.next_offset(), gets);
            samples[i][0].push(one.as_nanos() as f64 / gets as f64);
            let t1 = caches.run_threads(kind, 1, gets);
            samples[i][1].push(gets as f64 / t1.as_secs_f64());
            let t2 = caches.run_threads(kind, 2, gets);
            samples[i][2].push(2.0 * gets as f64 / t2.as_secs_f64());
        }
    }
    KINDS
        .iter()
        .zip(samples)
        .map(|(&(_, name), [ns, r1, r2])| {
            (
                name,
                Interleaved {
                    one_thread_ns: median(ns),
                    rate_1: median(r1),
                    rate_2: median(r2),
                },
            )
        })
        .collect()
}

fn custom_summary(out: &mut String, scale: Scale) {
    let rows = interleaved_hits(scale);
    let _ = writeln!(
        out,
        "
hit/interleaved — the same hits, every cache in turn in each of {} rounds, median round",
        scale.interleaved_rounds
    );
    let quick = rows
        .iter()
        .find(|(name, _)| *name == "quick_cache")
        .map(|(_, r)| r.one_thread_ns);
    for (name, r) in &rows {
        let _ = writeln!(
            out,
            "  {name:<12} one thread {:>7.1} ns/get ({:>5.2}x quick_cache)   1 thread {:>6.2} M gets/s   2 threads {:>6.2} M gets/s   scaling {:.2}x",
            r.one_thread_ns,
            quick.map_or(f64::NAN, |q| r.one_thread_ns / q),
            r.rate_1 / 1e6,
            r.rate_2 / 1e6,
            r.rate_2 / r.rate_1
        );
    }

    let flight = single_flight_check(scale);
    let _ = writeln!(
        out,
        "\nmiss/single_flight_1000 — dedicated check (2 workers)"
    );
    let _ = writeln!(
        out,
        "  dedicated check: {} rounds, median {:.1} µs, loads per round: worst {}, extra loads {} (must be 1 and 0)",
        flight.rounds,
        flight.median.as_secs_f64() * 1e6,
        flight.worst,
        flight.extra_loads
    );

    let rows = hit_ratios(scale);
    let best = rows
        .iter()
        .filter(|r| r.name != "groundwork")
        .map(HitRatio::percent)
        .fold(f64::NEG_INFINITY, f64::max);
    let _ = writeln!(
        out,
        "\nhit_ratio/zipf — Zipf(s=0.99) over {} keys, capacity {}, trace {} (seed fixed)",
        scale.zipf_keys, scale.zipf_capacity, scale.zipf_len
    );
    let _ = writeln!(
        out,
        "  {:<12} {:>9} {:>22} {:>9}",
        "cache", "hit %", "vs best moka/quick_cache", "run time"
    );
    for row in &rows {
        let _ = writeln!(
            out,
            "  {:<12} {:>8.2}% {:>+19.2} pts {:>7.2} s",
            row.name,
            row.percent(),
            row.percent() - best,
            row.elapsed.as_secs_f64()
        );
    }

    let _ = writeln!(
        out,
        "\nrefresh/p99_during_refresh — groundwork hits timed one by one (Instant overhead included), 100,000 entries"
    );
    for churn in [false, true] {
        let r = refresh_latency(scale, churn);
        let line = |run: &LatencyRun| {
            format!(
                "p50 {:>5} ns  p99 {:>6} ns  p99.9 {:>7} ns  max {:>9} ns  ({} gets)",
                run.p50, run.p99, run.p999, run.max, run.gets
            )
        };
        let _ = writeln!(
            out,
            "  [{}] one refresh alone: {:.1} ms",
            r.label,
            r.refresh_time.as_secs_f64() * 1e3
        );
        let _ = writeln!(out, "    idle            {}", line(&r.idle));
        let _ = writeln!(
            out,
            "    during refresh  {}  {} refreshes completed in the window",
            line(&r.during),
            r.during.refreshes
        );
        let _ = writeln!(
            out,
            "    p99 ratio during/idle: {:.2}x (goal <= 2x)",
            r.during.p99 as f64 / r.idle.p99.max(1) as f64
        );
    }
}

fn write_summary_file(summary: &str) {
    // The bench executable lives in target/<profile>/deps/.
    let Some(target) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(std::path::Path::to_path_buf))
    else {
        return;
    };
    let dir = target.join("criterion");
    let path = dir.join("groundwork-cache-summary.txt");
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, summary)) {
        Ok(()) => println!("(summary written to {})", path.display()),
        Err(err) => eprintln!("could not write {}: {err}", path.display()),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_hit_one_thread, bench_hit_two_threads, bench_single_flight
}

fn main() {
    let bench_mode = std::env::args().any(|arg| arg == "--bench");
    let scale = if bench_mode { FULL } else { SMOKE };
    let only = std::env::var("GROUNDWORK_BENCH_ONLY").unwrap_or_default();
    let started = Instant::now();

    if only != "summary" {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "==================== groundwork-cache benchmark summary ===================="
    );
    if !bench_mode {
        let _ = writeln!(
            out,
            "(test mode: smoke run at tiny sizes; figures are not meaningful)"
        );
    }
    criterion_summary(&mut out);
    if only != "criterion" {
        custom_summary(&mut out, scale);
    }
    let _ = writeln!(
        out,
        "\n(total bench time {:.0} s; command: cargo bench -p groundwork-cache --bench cache)",
        started.elapsed().as_secs_f64()
    );
    println!("\n{out}");
    if bench_mode {
        write_summary_file(&out);
    }
}
