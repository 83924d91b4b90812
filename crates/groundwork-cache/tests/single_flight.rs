//! Single-flight: concurrent misses of one key make one source read, a caller that gives up
//! does not cancel it for the others, nobody hangs, and a failed read is shared by its
//! waiters but never cached.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cache, FakeSource, Method, PATIENCE, builder, rows, settle, source_error, text};
use groundwork_cache::CacheError;
use tokio::task::JoinHandle;

type Lookup = JoinHandle<Result<Option<Arc<String>>, CacheError>>;

fn spawn_gets(cache: &Cache, key: u64, n: usize) -> Vec<Lookup> {
    (0..n)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&key).await })
        })
        .collect()
}

/// Awaits every lookup, failing if any of them takes longer than [`PATIENCE`] in total.
async fn join_all(
    handles: Vec<Lookup>,
) -> anyhow::Result<Vec<Result<Option<Arc<String>>, CacheError>>> {
    let joined = tokio::time::timeout(PATIENCE, async move {
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            out.push(handle.await);
        }
        out
    })
    .await
    .map_err(|_| anyhow::anyhow!("lookups still waiting after {PATIENCE:?}"))?;
    joined
        .into_iter()
        .map(|r| r.map_err(anyhow::Error::from))
        .collect()
}

/// Waits until `n` lookups have missed (they then join the load without awaiting anything
/// else first).
async fn wait_misses(cache: &Cache, n: u64) -> anyhow::Result<()> {
    common::eventually("the lookups to miss", || cache.stats().misses >= n).await?;
    settle().await;
    Ok(())
}

/// A filled cache whose source has key 7, which the cache does not hold.
async fn cache_missing_key_7() -> anyhow::Result<(Arc<FakeSource>, Cache)> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(builder("single-flight", &clock), &source);
    cache.start().await?;
    source.set(7, "v7");
    Ok((source, cache))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_misses_make_one_load() -> anyhow::Result<()> {
    let (source, cache) = cache_missing_key_7().await?;
    source.hold(Method::Load);

    let handles = spawn_gets(&cache, 7, 1000);
    source.wait_calls(Method::Load, 1).await?;
    wait_misses(&cache, 1000).await?;
    source.release(Method::Load);
    let results = join_all(handles).await?;

    let mut first: Option<Arc<String>> = None;
    for result in results {
        let value = common::present(result?)?;
        assert_eq!(*value, "v7");
        match &first {
            None => first = Some(value),
            Some(first) => assert!(Arc::ptr_eq(first, &value), "every caller shares one value"),
        }
    }
    assert_eq!(source.calls(Method::Load), 1, "one load for 1,000 misses");
    assert_eq!(source.calls(Method::LoadMany), 0);
    assert_eq!(source.calls(Method::LoadAll), 1, "only the start");
    assert_eq!(cache.stats().loads, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_leading_caller_strands_nobody() -> anyhow::Result<()> {
    let (source, cache) = cache_missing_key_7().await?;
    source.hold(Method::Load);

    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get(&7).await })
    };
    source.wait_calls(Method::Load, 1).await?;
    leader.abort();
    let aborted = leader.await;
    assert!(
        aborted.as_ref().is_err_and(|e| e.is_cancelled()),
        "the leader was cancelled while its load was held: {aborted:?}"
    );

    let handles = spawn_gets(&cache, 7, 999);
    wait_misses(&cache, 1000).await?;
    source.release(Method::Load);
    for result in join_all(handles).await? {
        assert_eq!(text(&result?), Some("v7"));
    }
    let loads = source.calls(Method::Load);
    assert!(loads <= 2, "{loads} loads after the leader gave up");

    // The load the leader started still filled the cache.
    assert_eq!(text(&cache.get(&7).await?), Some("v7"));
    assert_eq!(source.calls(Method::Load), loads, "the value was cached");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_load_error_is_shared_by_its_waiters_and_not_cached() -> anyhow::Result<()> {
    let (source, cache) = cache_missing_key_7().await?;
    source.fail(Method::Load, true);
    source.hold(Method::Load);

    let handles = spawn_gets(&cache, 7, 50);
    source.wait_calls(Method::Load, 1).await?;
    wait_misses(&cache, 50).await?;
    source.release(Method::Load);

    let mut shared: Option<groundwork_cache::SourceError> = None;
    for result in join_all(handles).await? {
        let err = match result {
            Err(err) => err,
            Ok(value) => anyhow::bail!("expected the source's error, got {value:?}"),
        };
        let source_err = source_error(&err)
            .ok_or_else(|| anyhow::anyhow!("expected CacheError::Source, got {err:?}"))?;
        assert_eq!(source_err.to_string(), "fake source: Load failed");
        match &shared {
            None => shared = Some(Arc::clone(source_err)),
            Some(first) => assert!(Arc::ptr_eq(first, source_err), "one error, shared"),
        }
    }
    assert_eq!(source.calls(Method::Load), 1, "50 waiters, one failed load");
    assert_eq!(cache.stats().load_failures, 1);
    assert_eq!(cache.peek(&7), None);

    // Not cached: the next lookup reads the source again.
    source.fail(Method::Load, false);
    assert_eq!(text(&cache.get(&7).await?), Some("v7"));
    assert_eq!(source.calls(Method::Load), 2);
    assert_eq!(cache.stats().consecutive_failures, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_never_answers_times_out_for_every_waiter() -> anyhow::Result<()> {
    let clock = common::clock();
    let source = FakeSource::with_feed(rows(1..=3));
    let cache = common::build(
        builder("timeout", &clock).load_timeout(Duration::from_millis(100)),
        &source,
    );
    cache.start().await?;
    source.set(7, "v7");
    source.hold(Method::Load);

    let handles = spawn_gets(&cache, 7, 20);
    for result in join_all(handles).await? {
        assert!(
            matches!(result, Err(CacheError::Timeout { .. })),
            "expected a timeout, got {result:?}"
        );
    }
    assert_eq!(source.calls(Method::Load), 1);

    source.release(Method::Load);
    assert_eq!(text(&cache.get(&7).await?), Some("v7"));
    assert_eq!(source.calls(Method::Load), 2);
    Ok(())
}
