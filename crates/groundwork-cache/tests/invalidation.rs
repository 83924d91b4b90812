//! Invalidation and warming: `invalidate` takes effect before it returns and beats a load in
//! flight; `invalidate_all` empties the cache and the next misses share one `load_all`;
//! `invalidate_if` removes exactly what matches; `warm` reads many keys in one round trip.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{FakeSource, Method, builder, present, rows, settle, text};

#[tokio::test]
async fn invalidate_takes_effect_before_it_returns() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("invalidate", &clock), &source);
    cache.start().await?;
    let old = present(cache.get(&1).await?)?;
    source.set(1, "v1b");

    cache.invalidate(&1);
    assert_eq!(cache.peek(&1), None);
    assert_eq!(cache.stats().entries, 2);
    let new = present(cache.get(&1).await?)?;
    assert_eq!(*new, "v1b");
    assert!(!Arc::ptr_eq(&old, &new));
    assert_eq!(
        source.calls(Method::Load),
        1,
        "the next lookup read the source"
    );
    assert_eq!(
        text(&cache.get(&2).await?),
        Some("v2"),
        "other keys stay cached"
    );
    assert_eq!(source.calls(Method::Load), 1);
    Ok(())
}

#[tokio::test]
async fn a_load_in_flight_during_invalidate_does_not_write_its_result() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("invalidate-inflight", &clock), &source);
    cache.start().await?;
    source.set(7, "old");

    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&7).await })
    };
    source.wait_calls(Method::Load, 1).await?; // has read "old"
    source.set(7, "new");
    cache.invalidate(&7);
    source.release(Method::Load);
    // Its own waiter still gets what it read.
    assert_eq!(text(&lookup.await??), Some("old"));

    assert_eq!(
        cache.peek(&7),
        None,
        "the older load wrote after invalidate"
    );
    assert_eq!(text(&cache.get(&7).await?), Some("new"));
    assert_eq!(
        source.calls(Method::Load),
        2,
        "the next lookup loaded again"
    );
    Ok(())
}

#[tokio::test]
async fn a_reload_in_flight_during_invalidate_does_not_write_its_result() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("invalidate-reload", &clock)
            .ttl(Duration::from_secs(100))
            .refresh_after(Duration::from_secs(50)),
        &source,
    );
    cache.start().await?;
    source.set(1, "old");

    source.hold(Method::Load);
    clock.advance(Duration::from_secs(60));
    assert_eq!(text(&cache.get(&1).await?), Some("v1")); // schedules a background reload
    source.wait_calls(Method::Load, 1).await?;
    source.set(1, "new");
    cache.invalidate(&1);
    source.release(Method::Load);
    source.wait_returned(Method::Load, 1).await?;
    assert_eq!(
        cache.peek(&1),
        None,
        "the background reload wrote after invalidate"
    );
    assert_eq!(text(&cache.get(&1).await?), Some("new"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_invalidate_all_concurrent_misses_share_one_load_all() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=50));
    let cache = common::build(builder("invalidate-all", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(10, "v10b");

    cache.invalidate_all();
    assert!(!cache.is_filled());
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(cache.peek(&1), None);

    source.hold(Method::LoadAll);
    let handles: Vec<_> = (1..=50u64)
        .map(|key| {
            let cache = cache.clone();
            tokio::spawn(async move { (key, cache.get(&key).await) })
        })
        .collect();
    source.wait_calls(Method::LoadAll, 2).await?;
    common::eventually("50 misses", || cache.stats().misses >= 50).await?;
    settle().await;
    source.release(Method::LoadAll);

    let joined = tokio::time::timeout(common::PATIENCE, async move {
        let mut out = Vec::new();
        for handle in handles {
            out.push(handle.await);
        }
        out
    })
    .await?;
    for result in joined {
        let (key, value) = result?;
        let expected = if key == 10 {
            "v10b".to_owned()
        } else {
            format!("v{key}")
        };
        assert_eq!(text(&value?), Some(expected.as_str()));
    }
    assert_eq!(source.calls(Method::LoadAll), 2, "one refill for 50 misses");
    assert_eq!(
        source.calls(Method::Load),
        0,
        "the refill answered every miss"
    );
    assert!(cache.is_filled());
    assert_eq!(cache.stats().entries, 50);
    Ok(())
}

#[tokio::test]
async fn invalidate_if_removes_exactly_the_matching_entries() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=20));
    let cache = common::build(builder("invalidate-if", &clock), &source);
    cache.start().await?;
    let mut before = BTreeMap::new();
    for key in 1..=20 {
        before.insert(key, present(cache.get(&key).await?)?);
    }
    assert_eq!(cache.get(&99).await?, None); // a remembered absence has no value to match

    let removed = cache.invalidate_if(|key, value| key % 2 == 0 || value.as_str() == "v5");
    assert_eq!(removed, 11);
    assert_eq!(
        cache.stats().entries,
        10,
        "9 odd values and the absence of 99 remain"
    );
    for (key, old) in &before {
        if key % 2 == 0 || *key == 5 {
            assert_eq!(cache.peek(key), None, "key {key} should be gone");
        } else {
            let kept = cache
                .peek(key)
                .ok_or_else(|| anyhow::anyhow!("key {key} should be kept"))?;
            assert!(Arc::ptr_eq(old, &kept));
        }
    }
    let loads = source.calls(Method::Load);
    assert_eq!(text(&cache.get(&4).await?), Some("v4"));
    assert_eq!(
        source.calls(Method::Load),
        loads + 1,
        "a removed key is read again"
    );

    assert_eq!(cache.invalidate_if(|_, _| false), 0);
    assert_eq!(cache.stats().entries, 11);
    Ok(())
}

#[tokio::test]
async fn warm_reads_many_keys_in_one_round_trip() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=10));
    let cache = common::build(builder("warm", &clock), &source);

    let found = cache.warm(&[1, 2, 3, 99]).await?;
    assert_eq!(found, 3, "the source has three of the four keys");
    assert_eq!(source.calls(Method::LoadMany), 1);
    assert_eq!(source.total_calls(), 1, "one round trip, nothing else");
    assert_eq!(cache.stats().entries, 4);

    for key in 1..=3 {
        assert_eq!(
            text(&cache.get(&key).await?),
            Some(format!("v{key}").as_str())
        );
    }
    assert_eq!(cache.get(&99).await?, None);
    assert_eq!(source.total_calls(), 1, "the warmed keys are hits");
    assert_eq!(cache.stats().hits, 4);
    assert_eq!(cache.warm(&[]).await?, 0);
    assert_eq!(source.total_calls(), 1);
    Ok(())
}

#[tokio::test]
async fn a_failed_warm_caches_nothing() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=10));
    let cache = common::build(builder("warm-fail", &clock).fill_on_miss(false), &source);
    source.fail(Method::LoadMany, true);

    assert!(cache.warm(&[1, 2, 3]).await.is_err());
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    assert_eq!(source.calls(Method::Load), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_joining_a_warm_with_a_repeated_key_gets_the_value() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=10));
    let cache = common::build(builder("warm-repeat", &clock).fill_on_miss(false), &source);

    source.hold(Method::LoadMany);
    let warm = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.warm(&[1, 1, 2]).await })
    };
    source.wait_calls(Method::LoadMany, 1).await?;
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&1).await })
    };
    common::eventually("the lookup to miss", || cache.stats().misses >= 1).await?;
    settle().await;
    source.release(Method::LoadMany);
    warm.await??;

    assert_eq!(
        text(&lookup.await??),
        Some("v1"),
        "a lookup that joined the warm's load of key 1 must get key 1's value"
    );
    assert_eq!(source.calls(Method::Load), 0, "the lookup joined the warm");
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    Ok(())
}

#[tokio::test]
async fn invalidate_if_beats_a_load_in_flight() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("invalidate-if-inflight", &clock), &source);
    cache.start().await?;
    source.set(7, "old");

    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&7).await })
    };
    source.wait_calls(Method::Load, 1).await?; // has read "old"
    source.set(7, "new");
    // Key 7 is not cached yet: only the load in flight holds its older value.
    assert_eq!(cache.invalidate_if(|key, _| *key == 7), 0);
    source.release(Method::Load);
    // Its own waiter still gets what it read...
    assert_eq!(text(&lookup.await??), Some("old"));

    // ...but the value read before `invalidate_if` is not stored after it.
    assert_eq!(
        cache.peek(&7),
        None,
        "the older load wrote after invalidate_if"
    );
    assert_eq!(text(&cache.get(&7).await?), Some("new"));
    assert_eq!(
        source.calls(Method::Load),
        2,
        "the next lookup loaded again"
    );
    Ok(())
}

#[tokio::test]
async fn invalidate_if_beats_a_warm_in_flight() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("invalidate-if-warm", &clock), &source);
    cache.start().await?;
    source.set(7, "old");
    source.set(8, "v8");

    source.hold(Method::LoadMany);
    let warm = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.warm(&[7, 8]).await })
    };
    source.wait_calls(Method::LoadMany, 1).await?;
    source.set(7, "new");
    cache.invalidate_if(|key, _| *key == 7);
    source.release(Method::LoadMany);
    assert_eq!(warm.await??, 2);

    assert_eq!(cache.peek(&7), None, "the warm wrote after invalidate_if");
    assert_eq!(text(&cache.get(&7).await?), Some("new"));
    Ok(())
}

#[tokio::test]
async fn invalidate_if_beats_a_fill_in_flight() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("invalidate-if-fill", &clock), &source);

    source.hold(Method::LoadAll);
    let fill = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.refresh_now().await })
    };
    source.wait_calls(Method::LoadAll, 1).await?; // has read "v2"
    source.set(2, "v2b");
    assert_eq!(
        cache.invalidate_if(|key, _| *key == 2),
        0,
        "nothing cached yet"
    );
    source.release(Method::LoadAll);
    fill.await??;

    assert_eq!(cache.peek(&2), None, "the fill wrote after invalidate_if");
    assert_eq!(text(&cache.get(&2).await?), Some("v2b"));
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    Ok(())
}

/// A refresh that read a value before `invalidate_if` matched nothing in the cache yet (the
/// predicate looks at values): the value must not be stored after the call. The next refresh
/// reads it again.
async fn invalidate_if_during_refresh_wins(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = if feed {
        FakeSource::with_feed(rows(1..=3))
    } else {
        FakeSource::without_feed(rows(1..=3))
    };
    let method = if feed {
        Method::ChangesSince
    } else {
        Method::LoadAll
    };
    let cache = common::build(builder("invalidate-if-refresh", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "tenant-b:1");

    let calls = source.calls(method);
    source.hold(method);
    let refresh = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.refresh_now().await })
    };
    source.wait_calls(method, calls + 1).await?; // has read "tenant-b:1"
    assert_eq!(
        cache.invalidate_if(|_, value| value.starts_with("tenant-b")),
        0
    );
    source.release(method);
    refresh.await??;

    assert_ne!(
        text(&cache.peek(&1)),
        Some("tenant-b:1"),
        "the refresh wrote a value read before invalidate_if"
    );
    clock.advance(Duration::from_secs(1));
    cache.refresh_now().await?;
    assert_eq!(
        text(&cache.peek(&1)),
        Some("tenant-b:1"),
        "the next refresh catches up"
    );
    Ok(())
}

#[tokio::test]
async fn invalidate_if_during_an_incremental_refresh_wins() -> anyhow::Result<()> {
    invalidate_if_during_refresh_wins(true).await
}

#[tokio::test]
async fn invalidate_if_during_a_full_refresh_wins() -> anyhow::Result<()> {
    invalidate_if_during_refresh_wins(false).await
}
