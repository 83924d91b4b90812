//! Circuit breaker through `call` and through the tower layer: failures open it, an open
//! breaker rejects without running the call, a successful probe closes it. Only failures that
//! say the dependency is unavailable count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use groundwork_core::clock::{Clock, ManualClock};
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::layer::{BoxError, BreakerLayer};
use groundwork_resilience::{BreakerConfig, BreakerOpen, BreakerState, CallError};
use tower::{Service, ServiceBuilder, ServiceExt};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(ErrorKind);

impl Classify for Failure {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

#[tokio::test]
async fn answers_that_are_not_outages_do_not_open_it() {
    let breaker = BreakerConfig::new("db").build();
    for _ in 0..20 {
        let _ = breaker
            .call(async { Err::<(), _>(Failure(ErrorKind::NotFound)) })
            .await;
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.stats().failures, 0);
}

#[tokio::test]
async fn open_rejects_without_running_then_probes_close_it() {
    let clock = Arc::new(ManualClock::new());
    let breaker = BreakerConfig::new("db")
        .open_for(Duration::from_millis(500))
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .build();
    for _ in 0..5 {
        let _ = breaker
            .call(async { Err::<(), _>(Failure(ErrorKind::Unavailable)) })
            .await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    let ran = AtomicU32::new(0);
    let rejected = breaker
        .call(async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Failure>(())
        })
        .await;
    match rejected {
        Err(CallError::Open(open)) => {
            assert_eq!(&*open.name, "db");
            assert!(open.retry_in <= Duration::from_millis(500));
            assert_eq!(
                CallError::<Failure>::Open(open).kind(),
                ErrorKind::Unavailable
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    clock.advance(Duration::from_millis(500));
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    // Two successful probes (the default) close it.
    for _ in 0..2 {
        let probe = breaker.call(async { Ok::<_, Failure>(1) }).await;
        assert!(matches!(probe, Ok(1)));
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    let stats = breaker.stats();
    assert_eq!((stats.opened, stats.rejected), (1, 1));
}

#[tokio::test]
async fn the_tower_layer_rejects_with_a_typed_error() {
    let breaker = BreakerConfig::new("upstream")
        .consecutive_failures(2)
        .build();
    let mut service = ServiceBuilder::new()
        .layer(BreakerLayer::new(breaker.clone()))
        .service_fn(|fail: bool| async move {
            if fail {
                Err(Failure(ErrorKind::Unavailable))
            } else {
                Ok("ok")
            }
        });
    for _ in 0..2 {
        let Ok(ready) = service.ready().await else {
            panic!("not ready");
        };
        let err: BoxError = match ready.call(true).await {
            Err(err) => err,
            Ok(_) => panic!("the call should fail"),
        };
        assert!(err.downcast_ref::<Failure>().is_some());
    }
    let Ok(ready) = service.ready().await else {
        panic!("not ready");
    };
    match ready.call(false).await {
        Err(err) => assert!(err.downcast_ref::<BreakerOpen>().is_some()),
        Ok(_) => panic!("an open breaker must reject"),
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}
