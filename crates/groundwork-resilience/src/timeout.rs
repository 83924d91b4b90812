//! Timeouts with a typed error.

use std::time::Duration;

use groundwork_core::{Classify, ErrorKind};

/// An operation did not finish within its time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {} ms", after.as_millis())]
pub struct Elapsed {
    /// The time limit that passed.
    pub after: Duration,
}

impl Classify for Elapsed {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

/// Runs `future` for at most `limit`; it is dropped (cancelled) when the limit passes.
///
/// # Errors
/// [`Elapsed`] when `limit` passes first.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use groundwork_resilience::timeout;
///
/// let slow = tokio::time::sleep(Duration::from_secs(60));
/// let err = timeout(Duration::from_millis(10), slow).await.unwrap_err();
/// assert_eq!(err.after, Duration::from_millis(10));
/// # });
/// ```
pub async fn timeout<F: Future>(limit: Duration, future: F) -> Result<F::Output, Elapsed> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| Elapsed { after: limit })
}
