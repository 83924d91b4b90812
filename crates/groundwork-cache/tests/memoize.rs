//! `memoize`: an async function's results cached by argument — one execution per argument,
//! shared by concurrent callers; errors returned and never cached; `invalidate` forgets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use groundwork_cache::{CacheError, Memoized, memoize};
use tokio::sync::watch;

const TTL: Duration = Duration::from_secs(3600);

/// `n → n * 10`, counting executions per call.
fn times_ten(calls: &Arc<AtomicUsize>) -> Memoized<u64, u64> {
    let calls = Arc::clone(calls);
    memoize("times-ten", TTL, 100, move |n: u64| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(n * 10)
        }
    })
}

#[tokio::test]
async fn the_same_argument_runs_the_function_once() -> anyhow::Result<()> {
    let calls = Arc::new(AtomicUsize::new(0));
    let memo = times_ten(&calls);

    let first = memo.get(4).await?;
    let second = memo.get(4).await?;
    assert_eq!(*first, 40);
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    assert_eq!(*memo.get(5).await?, 50);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "another argument runs again"
    );
    assert_eq!(*memo.get(4).await?, 40);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = memo.cache().stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_one_execution() -> anyhow::Result<()> {
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let memo = {
        let calls = Arc::clone(&calls);
        memoize("gated", TTL, 100, move |n: u64| {
            let calls = Arc::clone(&calls);
            let mut gate = gate.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _open = gate.wait_for(|open| *open).await.is_ok();
                Ok::<_, std::io::Error>(n + 1)
            }
        })
    };

    let handles: Vec<_> = (0..100)
        .map(|_| {
            let memo = memo.clone();
            tokio::spawn(async move { memo.get(9).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while memo.cache().stats().misses < 100 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "callers did not start"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    open.send_replace(true);

    let mut values = Vec::new();
    for handle in handles {
        values.push(tokio::time::timeout(Duration::from_secs(5), handle).await???);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "100 callers, one execution"
    );
    for value in &values {
        assert_eq!(**value, 10);
        assert!(Arc::ptr_eq(value, &values[0]));
    }
    Ok(())
}

#[tokio::test]
async fn an_error_is_returned_and_not_cached() -> anyhow::Result<()> {
    let calls = Arc::new(AtomicUsize::new(0));
    let memo = {
        let calls = Arc::clone(&calls);
        memoize("flaky", TTL, 100, move |n: u64| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call == 0 {
                    Err(std::io::Error::other("first call fails"))
                } else {
                    Ok(n * 2)
                }
            }
        })
    };

    let err = match memo.get(3).await {
        Err(err) => err,
        Ok(value) => anyhow::bail!("expected the function's error, got {value}"),
    };
    match &err {
        CacheError::Source { source, .. } => assert_eq!(source.to_string(), "first call fails"),
        other => anyhow::bail!("expected CacheError::Source, got {other:?}"),
    }
    assert_eq!(memo.cache().stats().entries, 0, "the error was not cached");

    assert_eq!(*memo.get(3).await?, 6);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the next call ran the function again"
    );
    assert_eq!(*memo.get(3).await?, 6);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the success is cached");
    Ok(())
}

#[tokio::test]
async fn invalidate_forgets_a_result() -> anyhow::Result<()> {
    let calls = Arc::new(AtomicUsize::new(0));
    let memo = times_ten(&calls);

    memo.get(1).await?;
    memo.get(2).await?;
    memo.invalidate(&1);
    memo.get(1).await?;
    memo.get(2).await?;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "only the invalidated argument ran again"
    );

    memo.cache().invalidate(&2);
    memo.get(2).await?;
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    memo.cache().invalidate_all();
    assert_eq!(*memo.get(1).await?, 10);
    assert_eq!(*memo.get(2).await?, 20);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        6,
        "after invalidate_all, both ran again"
    );
    Ok(())
}

#[tokio::test]
async fn results_beyond_the_capacity_are_evicted_not_wrong() -> anyhow::Result<()> {
    let calls = Arc::new(AtomicUsize::new(0));
    let memo = times_ten(&calls);
    for n in 0..1000 {
        assert_eq!(*memo.get(n).await?, n * 10);
    }
    let stats = memo.cache().stats();
    assert!(stats.entries <= 100, "{} entries", stats.entries);
    assert_eq!(calls.load(Ordering::SeqCst), 1000);
    Ok(())
}
