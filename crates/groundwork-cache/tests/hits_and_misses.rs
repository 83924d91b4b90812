//! Lookups: a fresh hit hands out the cached `Arc` without reaching the source; a missing key
//! is loaded once and remembered as absent for `negative_ttl`; `peek` never reaches the
//! source; past `refresh_after` a hit answers at once and reloads in the background (once);
//! past `ttl` a lookup reloads before answering.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FakeSource, Method, builder, eventually, present, rows, text};

#[tokio::test]
async fn fresh_hit_returns_the_cached_arc_without_reaching_the_source() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("hits", &clock), &source);
    cache.start().await?;
    anyhow::ensure!(source.calls(Method::LoadAll) == 1);
    let calls = source.total_calls();

    let first = present(cache.get(&1).await?)?;
    let second = present(cache.get(&1).await?)?;
    clock.advance(Duration::from_secs(10)); // still well within the refresh point
    let third = present(cache.get(&1).await?)?;

    assert_eq!(*first, "v1");
    assert!(
        Arc::ptr_eq(&first, &second),
        "a hit hands out the cached Arc"
    );
    assert!(Arc::ptr_eq(&first, &third));
    assert_eq!(source.total_calls(), calls, "hits never reach the source");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.loads), (3, 0, 0));
    Ok(())
}

#[tokio::test]
async fn missing_key_is_loaded_once_and_remembered_until_negative_ttl() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("negative", &clock).negative_ttl(Duration::from_secs(5)),
        &source,
    );
    cache.start().await?;

    assert_eq!(cache.get(&99).await?, None);
    assert_eq!(
        source.calls(Method::Load),
        1,
        "a miss reads the source once"
    );
    assert_eq!(cache.get(&99).await?, None);
    clock.advance(Duration::from_secs(4));
    assert_eq!(cache.get(&99).await?, None);
    assert_eq!(
        source.calls(Method::Load),
        1,
        "the absence is remembered within negative_ttl"
    );

    // The row appears; the remembered absence hides it until negative_ttl has passed.
    source.set(99, "late");
    assert_eq!(cache.get(&99).await?, None);
    clock.advance(Duration::from_secs(2));
    let found = cache.get(&99).await?;
    assert_eq!(text(&found), Some("late"));
    assert_eq!(
        source.calls(Method::Load),
        2,
        "past negative_ttl the key is read again"
    );
    assert_eq!(source.calls(Method::LoadAll), 1);
    Ok(())
}

#[tokio::test]
async fn peek_never_reaches_the_source() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("peek", &clock)
            .ttl(Duration::from_secs(100))
            .refresh_after(Duration::from_secs(50))
            .max_staleness(Duration::from_secs(100)),
        &source,
    );

    // Never filled: peek does not fill, load or remember anything.
    assert_eq!(cache.peek(&1), None);
    assert_eq!(cache.peek(&99), None);
    assert_eq!(source.total_calls(), 0);

    let loaded = present(cache.get(&1).await?)?;
    let calls = source.total_calls();
    let counters = |c: &common::Cache| {
        let s = c.stats();
        (s.hits, s.stale_hits, s.misses, s.loads)
    };
    let before = counters(&cache);
    let peeked = cache
        .peek(&1)
        .ok_or_else(|| anyhow::anyhow!("key 1 not peeked"))?;
    assert!(Arc::ptr_eq(&loaded, &peeked));
    assert_eq!(
        cache.peek(&99),
        None,
        "a key never read is not loaded by peek"
    );

    // Past the refresh point, peek does not schedule a reload.
    clock.advance(Duration::from_secs(60));
    source.set(1, "v1b");
    let peeked = cache
        .peek(&1)
        .ok_or_else(|| anyhow::anyhow!("key 1 not peeked"))?;
    assert!(Arc::ptr_eq(&loaded, &peeked));
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(source.total_calls(), calls, "peek never reaches the source");
    assert_eq!(counters(&cache), before, "peek does not count as a lookup");

    // Past ttl + max_staleness nothing is servable.
    clock.advance(Duration::from_secs(200));
    assert_eq!(cache.peek(&1), None);
    assert_eq!(source.total_calls(), calls);
    Ok(())
}

#[tokio::test]
async fn first_miss_of_an_unfilled_cache_fills_it_with_one_load_all() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=5));
    let cache = common::build(builder("fill-on-miss", &clock), &source);
    assert!(!cache.is_filled());

    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    assert!(cache.is_filled());
    for key in 1..=5 {
        assert_eq!(
            text(&cache.get(&key).await?),
            Some(format!("v{key}").as_str())
        );
    }
    assert_eq!(source.calls(Method::LoadAll), 1);
    assert_eq!(source.calls(Method::Load), 0, "the fill answered every key");
    Ok(())
}

#[tokio::test]
async fn without_fill_on_miss_each_miss_loads_its_key() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=5));
    let cache = common::build(builder("no-fill", &clock).fill_on_miss(false), &source);

    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    assert_eq!(text(&cache.get(&3).await?), Some("v3"));
    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    assert_eq!(source.calls(Method::LoadAll), 0);
    assert_eq!(source.calls(Method::Load), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_refresh_after_a_hit_answers_at_once_and_reloads_once_in_the_background()
-> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("refresh-ahead", &clock)
            .ttl(Duration::from_secs(100))
            .refresh_after(Duration::from_secs(50)),
        &source,
    );
    cache.start().await?;
    let old = present(cache.get(&1).await?)?;

    source.set(1, "v1b");
    source.hold(Method::Load);
    clock.advance(Duration::from_secs(60)); // past refresh_after, within ttl
    for _ in 0..5 {
        // The reload is held in the source: these hits must not wait for it.
        let hit = tokio::time::timeout(Duration::from_millis(100), cache.get(&1)).await??;
        assert!(
            Arc::ptr_eq(&present(hit)?, &old),
            "served the current value"
        );
    }
    source.wait_calls(Method::Load, 1).await?;
    assert_eq!(source.calls(Method::Load), 1, "several hits, one reload");

    source.release(Method::Load);
    eventually("the reloaded value", || {
        cache.peek(&1).is_some_and(|v| v.as_str() == "v1b")
    })
    .await?;
    assert_eq!(text(&cache.get(&1).await?), Some("v1b"));
    assert_eq!(source.calls(Method::Load), 1, "the new value is fresh");
    assert_eq!(source.calls(Method::LoadAll), 1);
    // Untouched keys past the refresh point also reload only when read.
    assert_eq!(text(&cache.get(&2).await?), Some("v2"));
    source.wait_calls(Method::Load, 2).await?;
    Ok(())
}

#[tokio::test]
async fn past_ttl_a_lookup_reloads_and_returns_the_new_value() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("ttl", &clock)
            .ttl(Duration::from_secs(100))
            .refresh_after(Duration::from_secs(100)), // no refresh-ahead
        &source,
    );
    cache.start().await?;
    let old = present(cache.get(&1).await?)?;
    source.set(1, "v1b");

    clock.advance(Duration::from_secs(99));
    let hit = present(cache.get(&1).await?)?;
    assert!(
        Arc::ptr_eq(&hit, &old),
        "within ttl the cached value is served"
    );
    assert_eq!(source.calls(Method::Load), 0);

    clock.advance(Duration::from_secs(2));
    assert_eq!(text(&cache.get(&1).await?), Some("v1b"));
    assert_eq!(source.calls(Method::Load), 1);
    assert_eq!(text(&cache.get(&1).await?), Some("v1b"));
    assert_eq!(source.calls(Method::Load), 1, "the reloaded value is fresh");
    assert_eq!(cache.stats().misses, 1);
    Ok(())
}
