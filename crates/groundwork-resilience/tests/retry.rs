//! Retries: only retryable errors are retried, attempts and budget bound them, and the tower
//! layer behaves like the function. Time is paused (tokio's test clock), so backoff delays
//! cost nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use groundwork_core::clock::{Clock, ManualClock};
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::layer::RetryLayer;
use groundwork_resilience::{RetryBudget, RetryPolicy};
use tower::{Service, ServiceBuilder, ServiceExt};

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct Failure(ErrorKind);

impl Classify for Failure {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy::new()
        .max_attempts(4)
        .base_delay(Duration::from_millis(100))
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_until_the_attempts_run_out() {
    let calls = AtomicU32::new(0);
    let result: Result<(), Failure> = policy()
        .run(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Failure(ErrorKind::Unavailable))
        })
        .await;
    assert!(result.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn other_errors_are_returned_at_once() {
    for kind in [ErrorKind::NotFound, ErrorKind::Invalid, ErrorKind::Internal] {
        let calls = AtomicU32::new(0);
        let result: Result<(), Failure> = policy()
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure(kind))
            })
            .await;
        assert_eq!(result.err().map(|e| e.0), Some(kind));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "{kind} must not be retried"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_after_failures_is_returned() {
    let calls = AtomicU32::new(0);
    let started = tokio::time::Instant::now();
    let result = policy()
        .run(|| async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(Failure(ErrorKind::Unavailable))
            } else {
                Ok("answer")
            }
        })
        .await;
    assert_eq!(result.ok(), Some("answer"));
    // Two delays, under ceilings of 100 and 200 ms.
    assert!(started.elapsed() <= Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_across_calls() {
    // 10 % of calls may be retried, no floor: 20 failing calls get about 2 retries in all.
    let budget = RetryBudget::new(0.1, 0);
    let policy = policy().budget(budget);
    let calls = AtomicU32::new(0);
    for _ in 0..20 {
        let _: Result<(), Failure> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Failure(ErrorKind::Unavailable))
            })
            .await;
    }
    let retries = calls.load(Ordering::SeqCst) - 20;
    assert!(
        retries <= 3,
        "{retries} retries for 20 calls at a 10 % budget"
    );
}

#[tokio::test(start_paused = true)]
async fn the_tower_layer_retries_retryable_errors_only() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(policy()))
        .service_fn(move |kind: ErrorKind| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Failure(kind))
            }
        });
    let Ok(ready) = service.ready().await else {
        panic!("service not ready");
    };
    let call = ready.call(ErrorKind::Unavailable);
    assert!(call.await.is_err());
    assert_eq!(calls.swap(0, Ordering::SeqCst), 4);

    let Ok(ready) = service.ready().await else {
        panic!("service not ready");
    };
    assert!(ready.call(ErrorKind::Conflict).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A service whose every call fails with a retryable error, counting its calls.
fn always_unavailable(
    calls: &Arc<AtomicU32>,
    attempt: impl Fn() + Clone + Send + 'static,
) -> impl Service<(), Response = (), Error = Failure, Future: Send> + Clone {
    let counter = Arc::clone(calls);
    tower::service_fn(move |()| {
        let counter = Arc::clone(&counter);
        let attempt = attempt.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            attempt();
            Err::<(), _>(Failure(ErrorKind::Unavailable))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn every_request_through_the_tower_layer_funds_the_budget() {
    // A budget that funds one retry per request (ratio 1, no free minimum): 10 failing
    // requests with 2 attempts each make 20 calls when every request deposits. (tower asks
    // the service's policy to clone each request: a policy that remembered its first deposit
    // funded the budget once and then let only the minimum through.)
    let calls = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy::new()
        .max_attempts(2)
        .base_delay(Duration::from_millis(10))
        .budget(RetryBudget::new(1.0, 0));
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(always_unavailable(&calls, || ()));
    for _ in 0..10 {
        let Ok(ready) = service.ready().await else {
            panic!("service not ready");
        };
        assert!(ready.call(()).await.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20);
}

#[tokio::test(start_paused = true)]
async fn the_tower_layers_elapsed_limit_counts_from_the_first_attempt() {
    // Each attempt takes 4 s on the policy's clock; the limit is 5 s from the first attempt.
    // The first retry starts at ~4 s (allowed), a second one would start at ~8 s (not).
    let clock = Arc::new(ManualClock::new());
    let calls = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy::new()
        .max_attempts(10)
        .base_delay(Duration::from_millis(1))
        .max_elapsed(Some(Duration::from_secs(5)))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>);
    let attempt_clock = Arc::clone(&clock);
    let mut service = ServiceBuilder::new()
        .layer(RetryLayer::new(policy))
        .service(always_unavailable(&calls, move || {
            attempt_clock.advance(Duration::from_secs(4));
        }));
    let Ok(ready) = service.ready().await else {
        panic!("service not ready");
    };
    assert!(ready.call(()).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
