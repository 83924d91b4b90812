//! Refresh: `start` fills through one `load_all`; later refreshes follow the change feed when
//! the source has one, else reload everything and diff; a successful refresh vouches for every
//! entry; readers never wait for a refresh; and the race rules of the module docs — a value
//! read after a refresh started is not overwritten by it, and invalidation wins.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Cache, FakeSource, Method, builder, eventually, present, rows, text};

/// Reads `keys`, which must all be cached, and returns their `Arc`s.
async fn read_all(
    cache: &Cache,
    keys: impl IntoIterator<Item = u64>,
) -> anyhow::Result<BTreeMap<u64, Arc<String>>> {
    let mut out = BTreeMap::new();
    for key in keys {
        out.insert(key, present(cache.get(&key).await?)?);
    }
    Ok(out)
}

/// Spawns `refresh_now` and waits until it is inside the source's `method`.
async fn spawn_held_refresh(
    cache: &Cache,
    source: &FakeSource,
    method: Method,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), groundwork_cache::CacheError>>> {
    let calls = source.calls(method);
    source.hold(method);
    let refresh = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.refresh_now().await })
    };
    source.wait_calls(method, calls + 1).await?;
    Ok(refresh)
}

/// The source's refresh read: `changes_since` with a feed, `load_all` without.
fn refresh_method(feed: bool) -> Method {
    if feed {
        Method::ChangesSince
    } else {
        Method::LoadAll
    }
}

fn source(feed: bool, rows: Vec<(u64, String)>) -> Arc<FakeSource> {
    if feed {
        FakeSource::with_feed(rows)
    } else {
        FakeSource::without_feed(rows)
    }
}

#[tokio::test]
async fn start_fills_the_cache_with_one_load_all() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=5));
    let cache = common::build(
        builder("start", &clock).refresh_interval(Some(Duration::from_secs(3600))),
        &source,
    );
    cache.start().await?;

    assert!(cache.is_filled());
    assert_eq!(source.calls(Method::LoadAll), 1);
    for key in 1..=5 {
        assert_eq!(
            text(&cache.get(&key).await?),
            Some(format!("v{key}").as_str())
        );
    }
    assert_eq!(source.total_calls(), 1, "every key came from the fill");
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.refreshes), (5, 1));
    cache.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn with_a_feed_a_refresh_applies_only_the_changes() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=10));
    let cache = common::build(builder("incremental", &clock), &source);
    cache.start().await?;
    let before = read_all(&cache, 1..=10).await?;

    clock.advance(Duration::from_secs(1));
    source.set(1, "new1");
    source.set(2, "new2");
    source.set(3, "new3");
    source.remove(4);
    cache.refresh_now().await?;

    assert_eq!(source.calls(Method::ChangesSince), 1);
    assert_eq!(source.calls(Method::LoadAll), 1, "no full reload");
    assert_eq!(cache.stats().entries, 9, "the deleted row is dropped");
    for key in 1..=3 {
        assert_eq!(
            text(&cache.get(&key).await?),
            Some(format!("new{key}").as_str())
        );
    }
    assert_eq!(
        source.calls(Method::Load),
        0,
        "changed rows were written by the refresh"
    );
    for key in 5..=10 {
        let now = present(cache.get(&key).await?)?;
        assert!(Arc::ptr_eq(&before[&key], &now), "key {key} untouched");
    }
    assert_eq!(cache.get(&4).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_change_feed_is_followed_page_by_page() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=5));
    source.set_batch_limit(Some(1));
    let cache = common::build(builder("paged", &clock), &source);
    cache.start().await?;

    clock.advance(Duration::from_secs(1));
    source.set(1, "new1");
    source.remove(2);
    source.set(3, "new3");
    cache.refresh_now().await?;

    assert_eq!(source.calls(Method::ChangesSince), 3, "one page per change");
    assert_eq!(source.calls(Method::LoadAll), 1);
    assert_eq!(text(&cache.get(&1).await?), Some("new1"));
    assert_eq!(text(&cache.get(&3).await?), Some("new3"));
    assert_eq!(cache.peek(&2), None);

    // The cursor advanced: the next refresh asks for what follows only.
    clock.advance(Duration::from_secs(1));
    source.set(5, "new5");
    cache.refresh_now().await?;
    assert_eq!(source.calls(Method::ChangesSince), 4);
    assert_eq!(text(&cache.get(&5).await?), Some("new5"));
    assert_eq!(text(&cache.get(&1).await?), Some("new1"));
    Ok(())
}

async fn full_refresh_diffs(source: Arc<FakeSource>) -> anyhow::Result<()> {
    let clock = common::clock();
    let cache = common::build(builder("diff", &clock), &source);
    cache.start().await?;
    let before = read_all(&cache, 1..=10).await?;

    clock.advance(Duration::from_secs(1));
    source.set(1, "new1");
    source.set(2, "new2");
    source.set(3, "new3");
    source.remove(4);
    source.remove(5);
    source.set(6, "v6"); // rewritten with the same value
    source.set(11, "v11");
    cache.refresh_now().await?;

    assert_eq!(source.calls(Method::LoadAll), 2, "a full reload");
    assert_eq!(cache.peek(&4), None, "removed keys are dropped");
    assert_eq!(cache.peek(&5), None);
    for key in 1..=3 {
        assert_eq!(
            text(&cache.get(&key).await?),
            Some(format!("new{key}").as_str())
        );
    }
    for key in 6..=10 {
        let now = present(cache.get(&key).await?)?;
        assert!(
            Arc::ptr_eq(&before[&key], &now),
            "key {key} unchanged, same Arc"
        );
    }
    assert_eq!(source.calls(Method::Load), 0);
    assert_eq!(cache.get(&4).await?, None);
    assert_eq!(cache.get(&5).await?, None);
    assert_eq!(text(&cache.get(&11).await?), Some("v11"));
    Ok(())
}

#[tokio::test]
async fn without_a_feed_a_refresh_reloads_everything_and_diffs() -> anyhow::Result<()> {
    let source = FakeSource::without_feed(rows(1..=10));
    full_refresh_diffs(Arc::clone(&source)).await?;
    assert_eq!(source.calls(Method::ChangesSince), 0, "no cursor, no feed");
    Ok(())
}

#[tokio::test]
async fn a_feed_that_cannot_answer_falls_back_to_a_full_reload() -> anyhow::Result<()> {
    let source = FakeSource::with_feed(rows(1..=10));
    source.lose_feed(true);
    full_refresh_diffs(Arc::clone(&source)).await?;
    assert_eq!(
        source.calls(Method::ChangesSince),
        1,
        "asked the feed first"
    );
    Ok(())
}

async fn refreshes_vouch_for_entries(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(
        builder("vouch", &clock).ttl(Duration::from_secs(100)),
        &source,
    );
    cache.start().await?;
    let before = read_all(&cache, 1..=3).await?;

    for _ in 0..5 {
        clock.advance(Duration::from_secs(80)); // 400 s in all, four TTLs
        cache.refresh_now().await?;
        let now = read_all(&cache, 1..=3).await?;
        for key in 1..=3 {
            assert!(Arc::ptr_eq(&before[&key], &now[&key]), "key {key} kept");
        }
    }
    assert_eq!(
        source.calls(Method::Load),
        0,
        "no per-key reload while refreshes succeed"
    );
    assert_eq!(source.calls(Method::LoadMany), 0);

    // Once refreshes stop, the TTL applies again.
    clock.advance(Duration::from_secs(101));
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    assert_eq!(
        source.calls(Method::Load),
        1,
        "expired without a refresh vouching for it"
    );
    Ok(())
}

#[tokio::test]
async fn successful_refreshes_with_a_feed_keep_entries_fresh_past_their_ttl() -> anyhow::Result<()>
{
    refreshes_vouch_for_entries(true).await
}

#[tokio::test]
async fn successful_full_refreshes_keep_entries_fresh_past_their_ttl() -> anyhow::Result<()> {
    refreshes_vouch_for_entries(false).await
}

async fn refresh_never_blocks_readers(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(builder("non-blocking", &clock), &source);
    cache.start().await?;
    let one = present(cache.get(&1).await?)?;
    clock.advance(Duration::from_secs(1));
    source.set(2, "new2");
    source.set(50, "v50");

    let refresh = spawn_held_refresh(&cache, &source, refresh_method(feed)).await?;
    let quick = Duration::from_millis(100);
    let hit = tokio::time::timeout(quick, cache.get(&1)).await??;
    assert!(Arc::ptr_eq(&present(hit)?, &one), "a hit does not wait");
    let old = tokio::time::timeout(quick, cache.get(&2)).await??;
    assert_eq!(text(&old), Some("v2"), "the refresh has not applied yet");
    let miss = tokio::time::timeout(quick, cache.get(&50)).await??;
    assert_eq!(
        text(&miss),
        Some("v50"),
        "a miss loads its key without waiting"
    );

    source.release(refresh_method(feed));
    refresh.await??;
    assert_eq!(text(&cache.get(&2).await?), Some("new2"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_refresh_never_blocks_readers() -> anyhow::Result<()> {
    refresh_never_blocks_readers(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_never_blocks_readers() -> anyhow::Result<()> {
    refresh_never_blocks_readers(false).await
}

/// Spec race: hold a refresh whose read has key 1 = "v1b", then write "v2", invalidate and
/// reload key 1; the refresh, released, must not put "v1b" back.
async fn reload_after_refresh_start_survives_it(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(builder("race-reload", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "v1b");

    let refresh = spawn_held_refresh(&cache, &source, refresh_method(feed)).await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "v2");
    cache.invalidate(&1);
    let reloaded = present(cache.get(&1).await?)?;
    assert_eq!(*reloaded, "v2");
    source.release(refresh_method(feed));
    refresh.await??;

    let now = present(cache.get(&1).await?)?;
    assert!(
        Arc::ptr_eq(&now, &reloaded),
        "the refresh overwrote the newer value with {now:?}"
    );
    assert_eq!(source.calls(Method::Load), 1);
    Ok(())
}

#[tokio::test]
async fn a_value_reloaded_after_a_refresh_started_is_kept_with_a_feed() -> anyhow::Result<()> {
    reload_after_refresh_start_survives_it(true).await
}

#[tokio::test]
async fn a_value_reloaded_after_a_refresh_started_is_kept_without_a_feed() -> anyhow::Result<()> {
    reload_after_refresh_start_survives_it(false).await
}

/// The same rule without an invalidation: key 1 expires and is reloaded (with "v2") while a
/// refresh whose read has "v1b" is held.
async fn expired_reload_after_refresh_start_survives_it(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(
        builder("race-expired", &clock)
            .ttl(Duration::from_secs(60))
            .refresh_after(Duration::from_secs(60)),
        &source,
    );
    cache.start().await?;
    clock.advance(Duration::from_secs(61)); // key 1 expired
    source.set(1, "v1b");

    let refresh = spawn_held_refresh(&cache, &source, refresh_method(feed)).await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "v2");
    let reloaded = present(cache.get(&1).await?)?;
    assert_eq!(*reloaded, "v2");
    assert_eq!(source.calls(Method::Load), 1);
    source.release(refresh_method(feed));
    refresh.await??;

    let now = present(cache.get(&1).await?)?;
    assert!(
        Arc::ptr_eq(&now, &reloaded),
        "the refresh overwrote the newer value with {now:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_value_reloaded_during_a_refresh_is_kept_with_a_feed() -> anyhow::Result<()> {
    expired_reload_after_refresh_start_survives_it(true).await
}

#[tokio::test]
async fn an_expired_value_reloaded_during_a_refresh_is_kept_without_a_feed() -> anyhow::Result<()> {
    expired_reload_after_refresh_start_survives_it(false).await
}

/// The same rule when the newer load is still in flight as the refresh applies: key 7 is
/// new in the source ("a", in the refresh's read), then becomes "b", which a lookup started
/// after the refresh reads. Once both are done, the cache must not serve "a".
async fn load_in_flight_from_after_refresh_start_wins(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(builder("race-inflight", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(7, "a");

    let refresh = spawn_held_refresh(&cache, &source, refresh_method(feed)).await?;
    clock.advance(Duration::from_secs(1));
    source.set(7, "b");
    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&7).await })
    };
    source.wait_calls(Method::Load, 1).await?; // read "b", held
    source.release(refresh_method(feed));
    refresh.await??;
    source.release(Method::Load);
    assert_eq!(text(&lookup.await??), Some("b"));

    let now = cache.get(&7).await?;
    assert_eq!(
        text(&now),
        Some("b"),
        "a lookup answered \"b\", the next one must not go back to the refresh's older read"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_started_after_a_full_refresh_is_not_replaced_by_its_older_read()
-> anyhow::Result<()> {
    load_in_flight_from_after_refresh_start_wins(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_started_after_an_incremental_refresh_is_not_replaced_by_its_older_read()
-> anyhow::Result<()> {
    load_in_flight_from_after_refresh_start_wins(true).await
}

async fn invalidation_during_refresh_wins(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(builder("race-invalidate", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "v1b");
    source.set(2, "v2b");

    let refresh = spawn_held_refresh(&cache, &source, refresh_method(feed)).await?;
    cache.invalidate(&1);
    source.release(refresh_method(feed));
    refresh.await??;

    assert_eq!(
        cache.peek(&1),
        None,
        "the refresh wrote an invalidated key back"
    );
    assert_eq!(
        text(&cache.get(&2).await?),
        Some("v2b"),
        "other keys are refreshed"
    );
    assert_eq!(source.calls(Method::Load), 0);
    assert_eq!(text(&cache.get(&1).await?), Some("v1b"));
    assert_eq!(source.calls(Method::Load), 1, "the next lookup loads");
    Ok(())
}

#[tokio::test]
async fn invalidation_during_an_incremental_refresh_wins() -> anyhow::Result<()> {
    invalidation_during_refresh_wins(true).await
}

#[tokio::test]
async fn invalidation_during_a_full_refresh_wins() -> anyhow::Result<()> {
    invalidation_during_refresh_wins(false).await
}

/// A key invalidated during a refresh and read again at once: the refresh must neither
/// write its older read nor cancel the newer load.
async fn invalidation_then_reload_during_refresh_wins(feed: bool) -> anyhow::Result<()> {
    let clock = common::clock();
    let source = source(feed, rows(1..=3));
    let cache = common::build(builder("race-invalidate-reload", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "v1b");

    let refresh = spawn_held_refresh(&cache, &source, refresh_method(feed)).await?;
    source.set(1, "v1c"); // written after the refresh's read
    cache.invalidate(&1);
    source.hold(Method::Load);
    let lookup = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&1).await })
    };
    source.wait_calls(Method::Load, 1).await?; // read "v1c", held
    source.release(refresh_method(feed));
    refresh.await??;
    source.release(Method::Load);
    assert_eq!(text(&lookup.await??), Some("v1c"));

    assert_eq!(text(&cache.get(&1).await?), Some("v1c"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_then_reload_during_an_incremental_refresh_wins() -> anyhow::Result<()> {
    invalidation_then_reload_during_refresh_wins(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_then_reload_during_a_full_refresh_wins() -> anyhow::Result<()> {
    invalidation_then_reload_during_refresh_wins(false).await
}

#[tokio::test]
async fn invalidation_during_the_first_fill_wins() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("race-invalidate-fill", &clock), &source);

    let fill = spawn_held_refresh(&cache, &source, Method::LoadAll).await?;
    source.set(1, "v1b"); // after the fill's read
    cache.invalidate(&1);
    source.release(Method::LoadAll);
    fill.await??;

    assert!(cache.is_filled());
    assert_eq!(cache.peek(&1), None, "the fill wrote an invalidated key");
    assert_eq!(text(&cache.peek(&2)), Some("v2"));
    assert_eq!(text(&cache.get(&1).await?), Some("v1b"));
    assert_eq!(source.calls(Method::Load), 1);
    Ok(())
}

#[tokio::test]
async fn invalidate_all_during_a_refresh_wins() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::without_feed(rows(1..=3));
    let cache = common::build(builder("race-invalidate-all", &clock), &source);
    cache.start().await?;
    clock.advance(Duration::from_secs(1));

    let refresh = spawn_held_refresh(&cache, &source, Method::LoadAll).await?;
    cache.invalidate_all();
    source.release(Method::LoadAll);
    refresh.await??;

    assert_eq!(
        cache.stats().entries,
        0,
        "the refresh refilled an invalidated cache"
    );
    assert!(!cache.is_filled());
    assert_eq!(text(&cache.get(&1).await?), Some("v1"));
    assert_eq!(source.calls(Method::LoadAll), 3, "the next miss refills");
    Ok(())
}

/// `ManualClock` readings repeat until a test advances the clock; the module docs' rule only
/// protects entries loaded *after* the refresh started.
#[tokio::test]
async fn a_refresh_at_the_same_clock_reading_as_the_fill_applies_its_changes() -> anyhow::Result<()>
{
    let clock = common::clock(); // a ManualClock, not advanced in this test
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("same-instant", &clock), &source);
    cache.start().await?;

    source.set(1, "new1");
    cache.refresh_now().await?;
    assert_eq!(source.calls(Method::ChangesSince), 1);
    // The change feed has moved past the change, and the refresh vouched for every entry:
    // if it is not applied now, it never is.
    assert_eq!(text(&cache.get(&1).await?), Some("new1"));
    Ok(())
}

#[tokio::test]
async fn notify_changed_wakes_the_background_refresh() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("notify", &clock).refresh_interval(Some(Duration::from_secs(3600))),
        &source,
    );
    cache.start().await?;
    clock.advance(Duration::from_secs(1));
    source.set(1, "new1");

    cache.notify_changed();
    source.wait_calls(Method::ChangesSince, 1).await?;
    eventually("the change to be applied", || {
        cache.peek(&1).is_some_and(|v| v.as_str() == "new1")
    })
    .await?;
    eventually("the refresh to be counted", || cache.stats().refreshes == 2).await?;
    assert_eq!(source.calls(Method::LoadAll), 1);
    cache.shutdown().await;
    Ok(())
}
