//! Resilience for calls to databases, caches and HTTP services: retries with full-jitter
//! backoff and a retry budget, typed timeouts, circuit breakers, bulkheads, bounded batches,
//! parallel calls with a deadline and explicit fallbacks — as plain async functions, and as
//! tower layers ([`layer`]).
//!
//! What is retried, and what counts against a dependency's health, is decided by the error's
//! [`groundwork_core::ErrorKind`] (through [`groundwork_core::Classify`]): only
//! `Unavailable` errors (a connection refused, a timeout, an overloaded server) are retried
//! or trip a breaker.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use groundwork_resilience::{BreakerConfig, RetryPolicy, batch, timeout};
//!
//! let breaker = BreakerConfig::new("pricing").build();
//! let retry = RetryPolicy::new().max_attempts(3).base_delay(Duration::from_millis(5));
//!
//! // Three lookups, two at a time, each retried, guarded by the breaker and a deadline.
//! let prices = batch(["a", "b", "c"], 2, |item| {
//!     let (breaker, retry) = (breaker.clone(), retry.clone());
//!     async move {
//!         timeout(Duration::from_secs(1), breaker.call(retry.run(|| async move {
//!             Ok::<_, groundwork_resilience::Elapsed>(item.len())
//!         })))
//!         .await
//!     }
//! })
//! .await;
//! assert!(prices.iter().all(|p| matches!(p, Ok(Ok(1)))));
//! # });
//! ```

pub mod breaker;
pub mod bulkhead;
pub mod combinators;
pub mod layer;
pub mod retry;
pub mod timeout;

pub use breaker::{
    BreakerConfig, BreakerOpen, BreakerState, BreakerStats, CallError, CircuitBreaker, Permit,
};
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadPermit, BulkheadStats};
pub use combinators::{
    DEFAULT_BATCH_CONCURRENCY, DEFAULT_PARALLEL_TIMEOUT, batch, fallback, parallel,
};
pub use retry::{Backoff, RetryBudget, RetryPolicy};
pub use timeout::{Elapsed, timeout};
