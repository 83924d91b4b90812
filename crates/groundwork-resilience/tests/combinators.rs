//! `batch` bounds concurrency and keeps order; `parallel` gives each call its own result
//! under one deadline; `fallback` is used only on an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use groundwork_resilience::{DEFAULT_BATCH_CONCURRENCY, batch, fallback, parallel};

#[tokio::test(start_paused = true)]
async fn batch_never_runs_more_than_its_bound_and_keeps_order() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let results = batch(0..20u64, DEFAULT_BATCH_CONCURRENCY, |n| {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Later items finish first: order must still follow the input.
            tokio::time::sleep(Duration::from_millis(100 - n * 5)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            if n == 7 { Err(n) } else { Ok(n * 10) }
        }
    })
    .await;
    assert_eq!(peak.load(Ordering::SeqCst), 5);
    assert_eq!(results.len(), 20);
    assert_eq!(results[7], Err(7));
    assert_eq!(results[19], Ok(190));
}

#[tokio::test(start_paused = true)]
async fn parallel_reports_each_call_and_cuts_the_slow_ones() {
    let started = tokio::time::Instant::now();
    let calls = (0..4u64).map(|n| {
        async move {
            tokio::time::sleep(Duration::from_secs(n * 10)).await;
            n
        }
        .boxed()
    });
    let results = parallel(calls, Duration::from_secs(15)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(results[0], Ok(0));
    assert_eq!(results[1], Ok(1));
    assert!(results[2].is_err() && results[3].is_err());
    assert_eq!(
        results[2].err().map(|e| e.after),
        Some(Duration::from_secs(15))
    );
}

#[tokio::test]
async fn fallback_runs_only_on_error() {
    let used = fallback("tools", async { Ok::<_, String>(vec![1]) }, |_| async {
        vec![]
    })
    .await;
    assert_eq!(used, [1]);
    let used = fallback(
        "tools",
        async { Err::<Vec<u32>, _>("down".to_owned()) },
        |err| async move {
            assert_eq!(err, "down");
            vec![0]
        },
    )
    .await;
    assert_eq!(used, [0]);
}
