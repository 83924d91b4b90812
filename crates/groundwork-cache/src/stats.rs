//! Statistics: counters cheap enough for the hit path, a snapshot struct, and export through
//! the `metrics` crate.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

/// Number of cells of a [`StripedCounter`]; a power of two.
const STRIPES: usize = 64;

/// A counter that threads increment without contending: each thread adds to its own
/// cache-line-padded cell, and reading sums the cells.
///
/// Written here because a shared `AtomicU64` incremented on every cache hit makes the cores
/// fight over one cache line, and even an uncontended `fetch_add` is a `lock`-prefixed
/// instruction that acts as a full memory barrier (measured: 12 ns of a 100 ns hit). Threads
/// are given cells round-robin, so a cell has one writer as long as at most [`STRIPES`] threads
/// use the counter; an increment is then a plain load and store. Beyond that, two threads
/// sharing a cell may rarely lose an increment — a statistic off by a few, never a wrong
/// cache answer.
#[derive(Debug)]
pub(crate) struct StripedCounter {
    cells: Box<[CachePadded<AtomicU64>]>,
}

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

#[inline]
fn stripe() -> usize {
    STRIPE.with(|cell| {
        let index = cell.get();
        if index != usize::MAX {
            return index;
        }
        let index = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
        cell.set(index);
        index
    })
}

impl StripedCounter {
    pub(crate) fn new() -> Self {
        Self {
            cells: (0..STRIPES)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let cell = &self.cells[stripe()];
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn incr(&self) {
        self.add(1);
    }

    /// Takes one back (a lookup counted as a miss that ended up a stale hit). Cells wrap;
    /// the sum over all cells stays exact.
    pub(crate) fn decr(&self) {
        self.add(u64::MAX); // wrapping: minus one
    }

    pub(crate) fn get(&self) -> u64 {
        self.cells
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// The live counters of one cache.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hits: StripedCounter,
    pub(crate) stale_hits: StripedCounter,
    pub(crate) misses: StripedCounter,
    pub(crate) loads: StripedCounter,
    pub(crate) load_failures: StripedCounter,
    pub(crate) load_nanos: StripedCounter,
    pub(crate) refreshes: StripedCounter,
    pub(crate) refresh_failures: StripedCounter,
    pub(crate) evictions: StripedCounter,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            hits: StripedCounter::new(),
            stale_hits: StripedCounter::new(),
            misses: StripedCounter::new(),
            loads: StripedCounter::new(),
            load_failures: StripedCounter::new(),
            load_nanos: StripedCounter::new(),
            refreshes: StripedCounter::new(),
            refresh_failures: StripedCounter::new(),
            evictions: StripedCounter::new(),
        }
    }
}

/// A cache's statistics at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// The cache's name.
    pub name: String,
    /// Lookups answered from the cache with a value within its TTL.
    pub hits: u64,
    /// Lookups answered with a value past its TTL because the source was failing
    /// (stale-if-error).
    pub stale_hits: u64,
    /// Lookups that found nothing usable and had to wait for the source.
    pub misses: u64,
    /// Reads of single keys (or batches of keys) from the source.
    pub loads: u64,
    /// Loads that failed or timed out.
    pub load_failures: u64,
    /// Time spent in loads, in total.
    pub load_time: Duration,
    /// Successful refreshes (full, diff or incremental).
    pub refreshes: u64,
    /// Failed refreshes.
    pub refresh_failures: u64,
    /// Entries pushed out by the capacity bound.
    pub evictions: u64,
    /// Entries held (values and remembered absences).
    pub entries: u64,
    /// Total weight held.
    pub weight: u64,
    /// The weight bound.
    pub capacity: u64,
    /// Time since the last successful refresh started, `None` if there was none.
    pub last_refresh_age: Option<Duration>,
    /// Failures of the source in a row (loads and refreshes); 0 when healthy.
    pub consecutive_failures: u32,
}

impl CacheStats {
    /// `hits / (hits + stale hits + misses)`, or 0 with no lookups.
    #[must_use]
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.stale_hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }

    /// Exports these figures through the `metrics` facade, labelled `cache=<name>`:
    /// `groundwork_cache_{hits,stale_hits,misses,loads,load_failures,refreshes,
    /// refresh_failures,evictions}_total`, `groundwork_cache_load_seconds_total`, and the
    /// gauges `groundwork_cache_{entries,weight,capacity,last_refresh_age_seconds,
    /// consecutive_failures}`.
    pub fn publish(&self) {
        let labels = [("cache", self.name.clone())];
        let counters = [
            ("groundwork_cache_hits_total", self.hits),
            ("groundwork_cache_stale_hits_total", self.stale_hits),
            ("groundwork_cache_misses_total", self.misses),
            ("groundwork_cache_loads_total", self.loads),
            ("groundwork_cache_load_failures_total", self.load_failures),
            ("groundwork_cache_refreshes_total", self.refreshes),
            (
                "groundwork_cache_refresh_failures_total",
                self.refresh_failures,
            ),
            ("groundwork_cache_evictions_total", self.evictions),
        ];
        for (name, value) in counters {
            metrics::counter!(name, &labels).absolute(value);
        }
        metrics::gauge!("groundwork_cache_load_seconds_total", &labels)
            .set(self.load_time.as_secs_f64());
        metrics::gauge!("groundwork_cache_entries", &labels).set(self.entries as f64);
        metrics::gauge!("groundwork_cache_weight", &labels).set(self.weight as f64);
        metrics::gauge!("groundwork_cache_capacity", &labels).set(self.capacity as f64);
        metrics::gauge!("groundwork_cache_consecutive_failures", &labels)
            .set(f64::from(self.consecutive_failures));
        if let Some(age) = self.last_refresh_age {
            metrics::gauge!("groundwork_cache_last_refresh_age_seconds", &labels)
                .set(age.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counter_sums_across_threads() {
        let counter = std::sync::Arc::new(StripedCounter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = std::sync::Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counter.incr();
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(counter.get(), 4000);
    }
}
