//! Stale-if-error: while the source fails, a value past its TTL is served up to
//! `max_staleness` and retries wait for the backoff; failures are counted and the count resets
//! on success; a cache whose first fill failed still works once the source recovers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cache, FakeSource, Method, builder, present, rows, source_error, text};
use groundwork_cache::CacheError;
use groundwork_core::clock::ManualClock;

const TTL: Duration = Duration::from_secs(100);
const MAX_STALENESS: Duration = Duration::from_secs(1000);

/// A started cache with keys 1..=3, a 100 s TTL, no refresh-ahead and 1000 s of staleness.
async fn started(name: &str) -> anyhow::Result<(Arc<ManualClock>, Arc<FakeSource>, Cache)> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder(name, &clock)
            .ttl(TTL)
            .refresh_after(TTL)
            .max_staleness(MAX_STALENESS)
            .backoff(Duration::from_secs(1), Duration::from_secs(2)),
        &source,
    );
    cache.start().await?;
    Ok((clock, source, cache))
}

#[tokio::test]
async fn a_stale_value_is_served_while_the_source_fails() -> anyhow::Result<()> {
    let (clock, source, cache) = started("stale").await?;
    let cached = present(cache.get(&1).await?)?;
    source.fail_all(true);
    clock.advance(TTL + Duration::from_secs(1));

    let stale = present(cache.get(&1).await?)?;
    assert!(Arc::ptr_eq(&stale, &cached), "the stale value is served");
    assert_eq!(source.calls(Method::Load), 1, "the source was tried first");
    let stats = cache.stats();
    assert_eq!(stats.stale_hits, 1);
    assert_eq!(stats.load_failures, 1);
    assert_eq!(stats.consecutive_failures, 1);

    // Within the backoff, the source counts as failing: served stale without a read.
    let again = present(cache.get(&1).await?)?;
    assert!(Arc::ptr_eq(&again, &cached));
    assert_eq!(source.calls(Method::Load), 1, "no read within the backoff");
    assert_eq!(cache.stats().stale_hits, 2);

    // A refresh fails too, and is counted.
    assert!(cache.refresh_now().await.is_err());
    let stats = cache.stats();
    assert_eq!(stats.refresh_failures, 1);
    assert_eq!(stats.consecutive_failures, 2);
    let still = present(cache.get(&2).await?)?;
    assert_eq!(*still, "v2", "entries are kept when a refresh fails");
    Ok(())
}

#[tokio::test]
async fn beyond_max_staleness_the_source_error_is_returned() -> anyhow::Result<()> {
    let (clock, source, cache) = started("too-stale").await?;
    source.fail_all(true);
    clock.advance(TTL + MAX_STALENESS + Duration::from_secs(1));

    let err = match cache.get(&1).await {
        Err(err) => err,
        Ok(value) => anyhow::bail!("expected the source's error, got {value:?}"),
    };
    assert!(matches!(err, CacheError::Source { .. }), "{err:?}");
    let cause = source_error(&err).map(ToString::to_string);
    assert_eq!(cause.as_deref(), Some("fake source: Load failed"));
    assert_eq!(source.calls(Method::Load), 1);
    assert_eq!(cache.peek(&1), None, "nothing servable");

    // Still nothing to serve: an error again.
    assert!(cache.get(&1).await.is_err());

    // Just inside the allowance the value would have been served.
    let (clock, source, cache) = started("just-stale").await?;
    source.fail_all(true);
    clock.advance(TTL + MAX_STALENESS - Duration::from_secs(1));
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    Ok(())
}

#[tokio::test]
async fn retries_wait_for_the_backoff_then_recover() -> anyhow::Result<()> {
    let (clock, source, cache) = started("backoff").await?;
    source.fail(Method::Load, true);
    clock.advance(TTL + Duration::from_secs(1));
    source.set(1, "v1b");

    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    assert_eq!(source.calls(Method::Load), 1);
    // The first backoff lasts between 0.5 s and 1 s.
    clock.advance(Duration::from_millis(400));
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    assert_eq!(source.calls(Method::Load), 1, "within the backoff");

    clock.advance(Duration::from_millis(700)); // past the first backoff
    // Past the backoff the source has still not answered since it failed: the reader is
    // served at once (never waits on a source that is probably still down) and the retry
    // runs in the background.
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    wait_for_calls(&source, Method::Load, 2).await?;
    assert_eq!(
        cache.stats().consecutive_failures,
        2,
        "the background retry failed too"
    );

    source.fail(Method::Load, false);
    // Recovered, but the second backoff (1 s to 2 s) still runs: served stale, no read.
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    assert_eq!(source.calls(Method::Load), 2);
    clock.advance(Duration::from_secs(2));
    // After the backoff: served stale once more while the background reload succeeds...
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    wait_for_calls(&source, Method::Load, 3).await?;
    wait_until(|| cache.stats().consecutive_failures == 0).await?;
    // ...and then the new value, fresh.
    assert_eq!(text(&cache.get(&1).await?), Some("v1b"), "recovered");
    assert_eq!(source.calls(Method::Load), 3);
    let stats = cache.stats();
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.load_failures, 2);
    assert_eq!(stats.stale_hits, 5, "five reads were served stale");
    Ok(())
}

/// Yields until the source has seen `calls` calls of `method` (background tasks run).
async fn wait_for_calls(source: &FakeSource, method: Method, calls: usize) -> anyhow::Result<()> {
    wait_until(|| source.calls(method) >= calls).await?;
    assert_eq!(source.calls(method), calls);
    Ok(())
}

async fn wait_until(condition: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_hit_due_for_refresh_does_not_reload_while_the_source_fails() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("failing-refresh-ahead", &clock)
            .ttl(TTL)
            .refresh_after(Duration::from_secs(50)),
        &source,
    );
    cache.start().await?;
    source.fail_all(true);
    assert!(cache.refresh_now().await.is_err()); // the source now counts as failing

    // At 60 s the refresh point has passed and the first backoff (at most 1 s) is over: a hit
    // due for refresh reloads in the background.
    clock.advance(Duration::from_secs(60));
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    source.wait_calls(Method::Load, 1).await?;

    // A new failure starts a new backoff: hits due for refresh do not reload during it.
    assert!(cache.refresh_now().await.is_err());
    for key in [2, 3, 2, 3] {
        assert_eq!(
            text(&cache.get(&key).await?),
            Some(format!("v{key}").as_str())
        );
    }
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        source.calls(Method::Load),
        1,
        "no reload within the backoff"
    );
    Ok(())
}

#[tokio::test]
async fn consecutive_failures_count_refresh_failures_and_reset_on_success() -> anyhow::Result<()> {
    let (clock, source, cache) = started("consecutive").await?;
    source.fail_all(true);
    for n in 1..=3 {
        clock.advance(Duration::from_secs(1));
        assert!(
            cache.refresh_now().await.is_err(),
            "refresh {n} should fail"
        );
        let stats = cache.stats();
        assert_eq!(stats.consecutive_failures, n);
        assert_eq!(stats.refresh_failures, u64::from(n));
    }
    source.fail_all(false);
    cache.refresh_now().await?;
    let stats = cache.stats();
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.refresh_failures, 3);
    assert_eq!(stats.refreshes, 2);
    Ok(())
}

#[tokio::test]
async fn after_a_failed_start_a_lookup_fills_once_the_source_recovers() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("failed-start", &clock), &source);
    source.fail_all(true);

    let started = cache.start().await;
    assert!(
        matches!(started, Err(CacheError::Source { .. })),
        "{started:?}"
    );
    assert!(!cache.is_filled());
    assert_eq!(cache.stats().refresh_failures, 1);

    source.fail_all(false);
    // Within the backoff of the failed fill a miss does not `load_all` again (see
    // `an_unfilled_cache_in_backoff_makes_one_load_all_per_window`); the first backoff lasts
    // at most 1 s.
    clock.advance(Duration::from_secs(1));
    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    assert!(cache.is_filled(), "the miss refilled the empty cache");
    assert_eq!(source.calls(Method::LoadAll), 2);
    assert_eq!(text(&cache.get(&3).await?), Some("v3"));
    assert_eq!(source.calls(Method::Load), 0);
    assert_eq!(cache.stats().consecutive_failures, 0);
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn when_only_load_all_fails_lookups_load_key_by_key() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("key-by-key", &clock), &source);
    source.fail(Method::LoadAll, true);

    assert!(cache.start().await.is_err());
    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    assert_eq!(source.calls(Method::Load), 1);
    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    assert_eq!(source.calls(Method::Load), 1, "the loaded key is cached");
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_unfilled_cache_in_backoff_makes_one_load_all_per_window() -> anyhow::Result<()> {
    let timer = common::timer();
    let source = FakeSource::with_feed(rows(1..=200));
    let cache = common::build(
        common::timed_builder("outage", &timer)
            .refresh_interval(Some(Duration::from_secs(60)))
            .backoff(Duration::from_secs(10), Duration::from_secs(80)),
        &source,
    );
    source.fail_all(true);
    assert!(cache.start().await.is_err());
    assert_eq!(source.calls(Method::LoadAll), 1);

    // Many misses during the outage, one after another and at once: each loads its key
    // alone, none rebuilds the empty cache while the failed fill's backoff runs.
    for key in 1..=50 {
        assert!(cache.get(&key).await.is_err(), "key {key}");
    }
    let lookups: Vec<_> = (51..=150)
        .map(|key| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&key).await })
        })
        .collect();
    for lookup in lookups {
        assert!(lookup.await?.is_err());
    }
    common::run_pending().await;
    assert_eq!(
        source.calls(Method::LoadAll),
        1,
        "a miss in backoff reloaded everything"
    );
    assert!(source.calls(Method::Load) >= 1, "misses load their key");
    assert!(!cache.is_filled());
    assert_eq!(cache.stats().misses, 150);

    // Every backoff so far ends within 80 s. Past it, one `load_all` again (the refresh
    // task's or a miss's, shared), whose failure starts the next window.
    timer.advance(Duration::from_secs(80));
    for key in 1..=50 {
        assert!(cache.get(&key).await.is_err(), "key {key}");
    }
    common::run_pending().await;
    assert_eq!(
        source.calls(Method::LoadAll),
        2,
        "one load_all for the second window"
    );

    // The source recovers; after the window, the next miss fills the cache.
    source.fail_all(false);
    timer.advance(Duration::from_secs(80));
    assert_eq!(text(&cache.get(&7).await?), Some("v7"));
    common::run_pending().await;
    assert!(cache.is_filled());
    assert_eq!(source.calls(Method::LoadAll), 3);
    cache.shutdown().await;
    Ok(())
}
