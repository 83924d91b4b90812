//! Statistics: the counters are exact for a scripted sequence of lookups, every lookup counts
//! once, `last_refresh_age` follows the clock, load time is measured, and publishing works
//! without a metrics recorder.

mod common;

use std::time::Duration;

use common::{FakeSource, Method, builder, rows, text};

#[tokio::test]
async fn counters_are_exact_for_a_scripted_sequence() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("scripted", &clock), &source);
    let empty = cache.stats();
    assert_eq!(
        (empty.hits, empty.misses, empty.loads, empty.entries),
        (0, 0, 0, 0)
    );
    assert!(
        empty.hit_ratio().abs() < f64::EPSILON,
        "no lookups: ratio 0"
    );
    assert_eq!(empty.last_refresh_age, None);
    cache.start().await?;

    cache.get(&1).await?; // hit
    cache.get(&1).await?; // hit
    cache.get(&2).await?; // hit
    assert_eq!(cache.get(&99).await?, None); // miss, load 1
    assert_eq!(cache.get(&99).await?, None); // hit (remembered absence)
    source.set(50, "v50");
    assert_eq!(text(&cache.get(&50).await?), Some("v50")); // miss, load 2
    cache.get(&50).await?; // hit
    source.set(60, "v60");
    source.set(61, "v61");
    assert_eq!(cache.warm(&[60, 61]).await?, 2); // load 3 (one round trip)
    cache.get(&60).await?; // hit

    let stats = cache.stats();
    assert_eq!(stats.name, "scripted");
    assert_eq!(stats.hits, 6);
    assert_eq!(stats.misses, 2);
    assert_eq!(stats.stale_hits, 0);
    assert_eq!(stats.loads, 3);
    assert_eq!(stats.load_failures, 0);
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.refresh_failures, 0);
    assert_eq!(stats.evictions, 0);
    assert_eq!(stats.entries, 7, "3 filled, 99 absent, 50, 60, 61");
    assert_eq!(stats.weight, 7);
    assert_eq!(stats.capacity, 10_000);
    assert_eq!(stats.consecutive_failures, 0);
    assert!(
        (stats.hit_ratio() - 0.75).abs() < 1e-12,
        "{}",
        stats.hit_ratio()
    );
    assert_eq!(
        source.calls(Method::Load) + source.calls(Method::LoadMany),
        3
    );

    // Replacing a value (a refresh, a reload) is not an eviction.
    clock.advance(Duration::from_secs(1));
    source.set(1, "v1b");
    source.set(50, "v50b");
    cache.refresh_now().await?;
    cache.invalidate(&2);
    cache.get(&2).await?; // miss, load 4
    let stats = cache.stats();
    assert_eq!(text(&cache.peek(&1)), Some("v1b"));
    assert_eq!(text(&cache.peek(&50)), Some("v50b"));
    assert_eq!((stats.evictions, stats.entries, stats.refreshes), (0, 7, 2));
    assert_eq!((stats.misses, stats.loads), (3, 4));

    // A failed load counts as a load and as a load failure.
    source.fail(Method::Load, true);
    assert!(cache.get(&70).await.is_err()); // miss, load 5, failed
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.loads, stats.load_failures), (4, 5, 1));
    assert_eq!(stats.consecutive_failures, 1);
    Ok(())
}

#[tokio::test]
async fn every_lookup_counts_once() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=2));
    let cache = common::build(
        builder("lookups", &clock)
            .ttl(Duration::from_secs(100))
            .refresh_after(Duration::from_secs(100)),
        &source,
    );
    cache.start().await?;
    clock.advance(Duration::from_secs(101)); // both keys expired
    cache.invalidate(&2);

    cache.get(&2).await?; // a miss, loaded fresh
    source.fail(Method::Load, true);
    assert_eq!(text(&cache.get(&1).await?), Some("v1")); // stale: the source failed
    assert_eq!(text(&cache.get(&1).await?), Some("v1")); // stale: within the backoff
    cache.get(&2).await?; // a hit

    let stats = cache.stats();
    assert_eq!(stats.hits, 1);
    assert_eq!(stats.stale_hits, 2);
    assert_eq!(
        stats.hits + stats.stale_hits + stats.misses,
        4,
        "4 lookups, counted once each: {stats:?}"
    );
    assert!(
        (stats.hit_ratio() - 0.25).abs() < 1e-12,
        "1 hit in 4 lookups, got {}",
        stats.hit_ratio()
    );
    Ok(())
}

#[tokio::test]
async fn last_refresh_age_follows_the_clock() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("age", &clock), &source);
    assert_eq!(cache.stats().last_refresh_age, None);

    clock.advance(Duration::from_secs(5));
    cache.refresh_now().await?;
    assert_eq!(cache.stats().last_refresh_age, Some(Duration::ZERO));
    clock.advance(Duration::from_secs(7));
    assert_eq!(cache.stats().last_refresh_age, Some(Duration::from_secs(7)));

    cache.refresh_now().await?;
    assert_eq!(cache.stats().last_refresh_age, Some(Duration::ZERO));
    assert_eq!(cache.stats().refreshes, 2);

    // A failed refresh does not reset it.
    source.fail_all(true);
    clock.advance(Duration::from_secs(3));
    assert!(cache.refresh_now().await.is_err());
    assert_eq!(cache.stats().last_refresh_age, Some(Duration::from_secs(3)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_time_is_measured_on_the_cache_clock() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("load-time", &clock).fill_on_miss(false), &source);

    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&1).await })
    };
    source.wait_calls(Method::Load, 1).await?;
    clock.advance(Duration::from_secs(3));
    source.release(Method::Load);
    assert_eq!(text(&lookup.await??), Some("v1"));
    assert_eq!(cache.stats().load_time, Duration::from_secs(3));
    Ok(())
}

#[tokio::test]
async fn publishing_without_a_recorder_does_not_panic() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("publish", &clock), &source);
    cache.publish_metrics(); // before any refresh: no age to publish
    cache.start().await?;
    cache.get(&1).await?;
    cache.publish_metrics();
    cache.stats().publish();
    assert_eq!(
        cache.stats().hits,
        1,
        "publishing does not count as a lookup"
    );
    Ok(())
}
