//! Bulkhead: at most N calls at a time; a caller beyond waits up to the wait, then is refused.

use std::time::Duration;

use groundwork_resilience::{Bulkhead, BulkheadFull};

#[tokio::test(start_paused = true)]
async fn a_waiting_caller_gets_the_slot_freed_in_time() {
    let bulkhead = Bulkhead::new("reports", 1, Some(Duration::from_millis(100)));
    let held = bulkhead.acquire().await;
    assert!(held.is_ok());
    let waiter = tokio::spawn({
        let bulkhead = bulkhead.clone();
        async move { bulkhead.run(async { 1 }).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(bulkhead.stats().waiting, 1);
    drop(held);
    assert!(matches!(waiter.await, Ok(Ok(1))));
}

#[tokio::test(start_paused = true)]
async fn a_caller_is_refused_after_its_wait() {
    let bulkhead = Bulkhead::new("reports", 2, Some(Duration::from_millis(100)));
    let _a = bulkhead.acquire().await;
    let _b = bulkhead.acquire().await;
    let started = tokio::time::Instant::now();
    let refused: Result<(), BulkheadFull> = bulkhead.run(async {}).await;
    let err = refused.err();
    assert_eq!(err.map(|e| e.max_concurrent), Some(2));
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    let stats = bulkhead.stats();
    assert_eq!((stats.in_use, stats.rejected, stats.waiting), (2, 1, 0));
}
