//! Export through the `metrics` crate: every statistic reaches the installed recorder with its
//! value, from the cache's own periodic export (on the cache's clock), also for caches that
//! never refresh (such as `memoize`'s) and without anyone calling `publish_metrics`.
//!
//! The recorder here keeps the last value of every metric (a `DebuggingRecorder` empties its
//! values on each read, which would race the export task).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use common::{FakeSource, Method, build, rows, text, timed_builder};
use groundwork_cache::{ManualTimer, RefreshingCache, memoize_with};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

/// A metric's last value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Counter(u64),
    Gauge(f64),
}

/// `(metric name, value of the label "cache")` → last value.
type Values = Mutex<BTreeMap<(String, String), Value>>;

/// One metric's handle: writes into the shared map.
struct Slot {
    values: Arc<Values>,
    key: (String, String),
}

impl Slot {
    fn update(&self, f: impl FnOnce(Option<Value>) -> Value) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let old = values.get(&self.key).copied();
        values.insert(self.key.clone(), f(old));
    }
}

impl CounterFn for Slot {
    fn increment(&self, value: u64) {
        self.update(|old| match old {
            Some(Value::Counter(n)) => Value::Counter(n + value),
            _ => Value::Counter(value),
        });
    }

    fn absolute(&self, value: u64) {
        self.update(|_| Value::Counter(value));
    }
}

impl GaugeFn for Slot {
    fn increment(&self, value: f64) {
        self.update(|old| match old {
            Some(Value::Gauge(x)) => Value::Gauge(x + value),
            _ => Value::Gauge(value),
        });
    }

    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }

    fn set(&self, value: f64) {
        self.update(|_| Value::Gauge(value));
    }
}

struct LastValueRecorder(Arc<Values>);

impl LastValueRecorder {
    fn slot(&self, key: &Key) -> Arc<Slot> {
        let cache = key
            .labels()
            .find(|label| label.key() == "cache")
            .map(|label| label.value().to_owned())
            .unwrap_or_default();
        Arc::new(Slot {
            values: Arc::clone(&self.0),
            key: (key.name().to_owned(), cache),
        })
    }
}

impl Recorder for LastValueRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The values recorded in this test binary (the recorder is installed once, globally; every
/// test uses its own cache name).
fn recorded() -> &'static Arc<Values> {
    static VALUES: OnceLock<Arc<Values>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let values = Arc::new(Values::default());
        let installed = metrics::set_global_recorder(LastValueRecorder(Arc::clone(&values)));
        assert!(installed.is_ok(), "another recorder is installed");
        values
    })
}

/// The metrics recorded for `cache`, by name.
fn metrics_of(cache: &str) -> BTreeMap<String, Value> {
    recorded()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|((_, label), _)| label == cache)
        .map(|((name, _), value)| (name.clone(), *value))
        .collect()
}

/// Waits until every metric of `expected` has been exported for `cache` with its value.
async fn wait_exported(cache: &str, expected: &[(&str, Value)]) -> anyhow::Result<()> {
    let matches = || {
        let got = metrics_of(cache);
        expected
            .iter()
            .all(|(name, value)| got.get(*name) == Some(value))
    };
    let outcome = common::eventually("the expected metrics", matches).await;
    if outcome.is_err() {
        let got = metrics_of(cache);
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, value)| got.get(*name) != Some(value))
            .map(|(name, value)| format!("{name}: want {value:?}, got {:?}", got.get(*name)))
            .collect();
        anyhow::bail!("metrics of {cache} not exported as expected: {wrong:#?}");
    }
    Ok(())
}

/// Waits until the export task sleeps on `timer`, then advances the timer by `by`.
async fn advance_when_waiting(timer: &ManualTimer, by: Duration) -> anyhow::Result<()> {
    common::eventually("the export task to wait", || !timer.deadlines().is_empty()).await?;
    timer.advance(by);
    Ok(())
}

#[tokio::test]
async fn every_statistic_is_exported_without_periodic_refresh() -> anyhow::Result<()> {
    const NAME: &str = "metrics-scripted";
    recorded();
    let timer = common::timer();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = build(
        timed_builder(NAME, &timer)
            .metrics_interval(Some(Duration::from_secs(1)))
            .ttl(Duration::from_secs(100))
            .refresh_after(Duration::from_secs(100))
            .max_staleness(Duration::from_secs(1000))
            .capacity(6),
        &source,
    );
    cache.start().await?; // refresh 1: keys 1..=3
    cache.get(&1).await?; // hit 1
    cache.get(&1).await?; // hit 2
    cache.get(&2).await?; // hit 3
    assert_eq!(cache.get(&99).await?, None); // miss 1, load 1
    assert_eq!(cache.get(&99).await?, None); // hit 4 (remembered absence)

    // Load 2 takes 250 ms on the cache's clock.
    source.set(50, "v50");
    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&50).await }) // miss 2
    };
    source.wait_calls(Method::Load, 2).await?;
    timer.advance(Duration::from_millis(250));
    source.release(Method::Load);
    assert_eq!(text(&lookup.await??), Some("v50"));

    // Past the TTL with the source down: served stale, a failed load and a failed refresh.
    timer.advance(Duration::from_secs(101));
    source.fail_all(true);
    assert_eq!(text(&cache.get(&1).await?), Some("v1")); // stale hit 1, load 3 failed
    assert!(cache.refresh_now().await.is_err()); // refresh failure 1
    source.fail_all(false);
    cache.refresh_now().await?; // refresh 2, vouches for every entry
    cache.get(&1).await?; // hit 5

    // Two more entries than the capacity allows: one is evicted.
    source.set(60, "v60");
    source.set(61, "v61");
    assert_eq!(cache.warm(&[60, 61]).await?, 2); // load 4

    // Ten seconds after the last refresh, the export task runs.
    advance_when_waiting(&timer, Duration::from_secs(10)).await?;
    let expected = [
        ("groundwork_cache_hits_total", Value::Counter(5)),
        ("groundwork_cache_stale_hits_total", Value::Counter(1)),
        ("groundwork_cache_misses_total", Value::Counter(2)),
        ("groundwork_cache_loads_total", Value::Counter(4)),
        ("groundwork_cache_load_failures_total", Value::Counter(1)),
        ("groundwork_cache_load_seconds_total", Value::Gauge(0.25)),
        ("groundwork_cache_refreshes_total", Value::Counter(2)),
        ("groundwork_cache_refresh_failures_total", Value::Counter(1)),
        ("groundwork_cache_evictions_total", Value::Counter(1)),
        ("groundwork_cache_entries", Value::Gauge(6.0)),
        (
            "groundwork_cache_last_refresh_age_seconds",
            Value::Gauge(10.0),
        ),
        ("groundwork_cache_weight", Value::Gauge(6.0)),
        ("groundwork_cache_capacity", Value::Gauge(6.0)),
        ("groundwork_cache_consecutive_failures", Value::Gauge(0.0)),
    ];
    wait_exported(NAME, &expected).await?;

    // The struct agrees with what was exported.
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.stale_hits, stats.misses, stats.loads),
        (5, 1, 2, 4)
    );
    assert_eq!(
        (stats.load_failures, stats.refreshes, stats.refresh_failures),
        (1, 2, 1)
    );
    assert_eq!((stats.evictions, stats.entries), (1, 6));
    assert_eq!(stats.load_time, Duration::from_millis(250));
    assert_eq!(stats.last_refresh_age, Some(Duration::from_secs(10)));

    // The export keeps following the statistics.
    cache.get(&3).await?; // hit 6 (if 3 was not the evicted key) or a miss
    let after = cache.stats();
    advance_when_waiting(&timer, Duration::from_secs(1)).await?;
    wait_exported(
        NAME,
        &[
            ("groundwork_cache_hits_total", Value::Counter(after.hits)),
            (
                "groundwork_cache_misses_total",
                Value::Counter(after.misses),
            ),
            (
                "groundwork_cache_last_refresh_age_seconds",
                Value::Gauge(11.0),
            ),
        ],
    )
    .await?;
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_memoized_function_exports_its_statistics() -> anyhow::Result<()> {
    const NAME: &str = "metrics-memoize";
    recorded();
    let timer = Arc::new(ManualTimer::new());
    let square = memoize_with(
        RefreshingCache::builder(NAME)
            .ttl(Duration::from_secs(60))
            .timer(Arc::clone(&timer)),
        |n: u64| async move { Ok::<_, std::io::Error>(n * n) },
    );
    assert_eq!(*square.get(3).await?, 9); // miss, load
    assert_eq!(*square.get(3).await?, 9); // hit
    assert_eq!(*square.get(4).await?, 16); // miss, load
    assert!(metrics_of(NAME).is_empty(), "exported before its interval");

    advance_when_waiting(&timer, Duration::from_secs(1)).await?;
    wait_exported(
        NAME,
        &[
            ("groundwork_cache_hits_total", Value::Counter(1)),
            ("groundwork_cache_misses_total", Value::Counter(2)),
            ("groundwork_cache_loads_total", Value::Counter(2)),
            ("groundwork_cache_load_failures_total", Value::Counter(0)),
            ("groundwork_cache_entries", Value::Gauge(2.0)),
        ],
    )
    .await?;
    assert!(
        !metrics_of(NAME).contains_key("groundwork_cache_last_refresh_age_seconds"),
        "a memo never refreshes: no age to report"
    );
    Ok(())
}
