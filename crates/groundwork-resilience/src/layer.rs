//! The same policies as tower layers, for services (HTTP clients, RPC stubs).
//!
//! Errors follow tower's convention: the layers' services fail with a [`BoxError`] that is the
//! inner service's error or one of this crate's typed errors ([`crate::Elapsed`], [`crate::BreakerOpen`],
//! [`crate::BulkheadFull`]), which callers can `downcast_ref`. Retries keep the inner error type, so
//! the retry layer goes innermost, next to the service whose errors it classifies.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use groundwork_resilience::layer::{BreakerLayer, TimeoutLayer};
//! use groundwork_resilience::{BreakerConfig, Elapsed};
//!
//! let mut service = ServiceBuilder::new()
//!     .layer(BreakerLayer::new(BreakerConfig::new("slow").build()))
//!     .layer(TimeoutLayer::new(Duration::from_millis(10)))
//!     .service_fn(|_: ()| async {
//!         tokio::time::sleep(Duration::from_secs(60)).await;
//!         Ok::<_, std::io::Error>("never")
//!     });
//! let err = service.ready().await.unwrap().call(()).await.unwrap_err();
//! assert!(err.downcast_ref::<Elapsed>().is_some());
//! # });
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use groundwork_core::Classify;
use tower::{Layer, Service};

use crate::breaker::{CircuitBreaker, Permit};
use crate::bulkhead::Bulkhead;
use crate::retry::{Backoff, RetryPolicy};

/// The error of the layered services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Fails a call with [`crate::Elapsed`] when it takes longer than the limit.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// A layer with time limit `limit`.
    #[must_use]
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`TimeoutLayer`].
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let limit = self.limit;
        let call = self.inner.call(req);
        Box::pin(async move {
            match crate::timeout::timeout(limit, call).await {
                Ok(result) => result.map_err(Into::into),
                Err(elapsed) => Err(elapsed.into()),
            }
        })
    }
}

/// Puts a [`CircuitBreaker`] in front of a service: rejected calls fail with
/// [`crate::BreakerOpen`] without reaching it. Every error of the inner service counts as a
/// failure unless a classifier says otherwise.
#[derive(Clone)]
pub struct BreakerLayer {
    breaker: CircuitBreaker,
    counts: fn(&BoxError) -> bool,
}

impl std::fmt::Debug for BreakerLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl BreakerLayer {
    /// A layer over `breaker`.
    #[must_use]
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            counts: |_| true,
        }
    }

    /// Only errors for which `counts` is true count against the dependency.
    #[must_use]
    pub fn counting(mut self, counts: fn(&BoxError) -> bool) -> Self {
        self.counts = counts;
        self
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            breaker: self.breaker.clone(),
            counts: self.counts,
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Clone)]
pub struct Breaker<S> {
    inner: S,
    breaker: CircuitBreaker,
    counts: fn(&BoxError) -> bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Breaker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Breaker<S>
where
    S: Service<Req>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit: Permit = match self.breaker.acquire() {
            Ok(permit) => permit,
            Err(open) => return Box::pin(std::future::ready(Err(open.into()))),
        };
        let counts = self.counts;
        let call = self.inner.call(req);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    permit.success();
                    Ok(response)
                }
                Err(err) => {
                    let err: BoxError = err.into();
                    if counts(&err) {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                    Err(err)
                }
            }
        })
    }
}

/// Runs calls inside a [`Bulkhead`]: beyond its bound they wait (up to its wait) and then
/// fail with [`crate::BulkheadFull`].
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer over `bulkhead`.
    #[must_use]
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The slot is taken inside the future, so the inner service that was made ready is
        // the one called (the clone is swapped in, as tower's own buffered layers do).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let bulkhead = self.bulkhead.clone();
        Box::pin(async move {
            let _permit = bulkhead.acquire().await?;
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// Retries failed calls per a [`RetryPolicy`] (tower's retry middleware with this crate's
/// schedule, rules and budget). Requests must be `Clone`; errors must be [`Classify`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// A layer retrying per `policy`.
    #[must_use]
    pub fn new(policy: RetryPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = tower::retry::Retry<TowerPolicy, S>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(
            TowerPolicy {
                policy: self.policy.clone(),
                started: None,
                backoff: None,
            },
            inner,
        )
    }
}

/// A [`RetryPolicy`] as a [`tower::retry::Policy`].
///
/// tower's `Retry::call` asks the *service's* policy to clone the request and then clones
/// that policy into the request's future, which calls `retry` and `clone_request` on its own
/// copy for every retry. So a `clone_request` on a policy that has not retried yet (`backoff`
/// is `None`) is the start of a new request: that is when the request funds the budget and
/// its elapsed time starts (the service's own policy never retries, so every request passes
/// there once).
#[derive(Debug, Clone)]
pub struct TowerPolicy {
    policy: RetryPolicy,
    /// When the current request's first attempt started (on the policy's clock).
    started: Option<Duration>,
    backoff: Option<Backoff>,
}

impl<Req: Clone, Res, E: Classify> tower::retry::Policy<Req, Res, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        if !err.kind().is_retryable() {
            return None;
        }
        let (policy, started) = (&self.policy, self.started);
        let backoff = self.backoff.get_or_insert_with(|| match started {
            Some(started) => policy.backoff_from(started),
            None => policy.backoff(),
        });
        let delay = backoff.next()?;
        metrics::counter!("groundwork_retries_total").increment(1);
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        if self.backoff.is_none() {
            // A new request (see the type's doc): it funds the budget, and its time starts.
            self.policy.deposit();
            self.started = Some(self.policy.now());
        }
        Some(req.clone())
    }
}
