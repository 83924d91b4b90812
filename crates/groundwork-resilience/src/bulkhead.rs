//! Bulkhead: a bound on concurrent calls to one dependency, with an optional wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use groundwork_core::{Classify, ErrorKind};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A call refused because the bulkhead was full (after its wait, if any).
#[derive(Debug, Clone, thiserror::Error)]
#[error("bulkhead {name} is full ({max_concurrent} calls in flight)")]
pub struct BulkheadFull {
    /// The bulkhead's name.
    pub name: Arc<str>,
    /// Its bound.
    pub max_concurrent: usize,
}

impl Classify for BulkheadFull {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

/// At most `max_concurrent` calls at a time; a caller beyond that waits up to `max_wait`
/// (none: refused at once) and is then refused with [`BulkheadFull`]. Cheap to clone.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use groundwork_resilience::Bulkhead;
///
/// let bulkhead = Bulkhead::new("reports", 1, None);
/// let held = bulkhead.acquire().await?;
/// assert!(bulkhead.acquire().await.is_err()); // full, no wait
/// drop(held);
/// assert_eq!(bulkhead.run(async { 7 }).await?, 7);
/// # Ok::<(), groundwork_resilience::BulkheadFull>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    max_concurrent: usize,
    max_wait: Option<Duration>,
    semaphore: Arc<Semaphore>,
    waiting: AtomicU64,
    rejected: AtomicU64,
}

/// A slot in a [`Bulkhead`], released on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

/// A snapshot of a [`Bulkhead`].
#[derive(Debug, Clone, Serialize)]
pub struct BulkheadStats {
    /// The bulkhead's name.
    pub name: String,
    /// Its bound.
    pub max_concurrent: usize,
    /// Calls running now.
    pub in_use: usize,
    /// Callers waiting for a slot now.
    pub waiting: u64,
    /// Calls refused.
    pub rejected: u64,
}

impl Bulkhead {
    /// A bulkhead called `name` admitting `max_concurrent` calls (at least 1).
    #[must_use]
    pub fn new(name: &str, max_concurrent: usize, max_wait: Option<Duration>) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            inner: Arc::new(Inner {
                name: Arc::from(name),
                max_concurrent,
                max_wait,
                semaphore: Arc::new(Semaphore::new(max_concurrent)),
                waiting: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            }),
        }
    }

    fn full(&self) -> BulkheadFull {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        BulkheadFull {
            name: Arc::clone(&self.inner.name),
            max_concurrent: self.inner.max_concurrent,
        }
    }

    /// Takes a slot, waiting up to the bulkhead's `max_wait`.
    ///
    /// # Errors
    /// [`BulkheadFull`] when no slot frees in time.
    pub async fn acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        let semaphore = Arc::clone(&self.inner.semaphore);
        if let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() {
            return Ok(BulkheadPermit { _permit: permit });
        }
        let Some(wait) = self.inner.max_wait else {
            return Err(self.full());
        };
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::time::timeout(wait, semaphore.acquire_owned()).await;
        self.inner.waiting.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Ok(permit)) => Ok(BulkheadPermit { _permit: permit }),
            // The semaphore is never closed; a closed one is as good as full.
            Ok(Err(_)) | Err(_) => Err(self.full()),
        }
    }

    /// Runs `call` in a slot.
    ///
    /// # Errors
    /// [`BulkheadFull`] without running `call` when no slot frees in time.
    pub async fn run<F: Future>(&self, call: F) -> Result<F::Output, BulkheadFull> {
        let _permit = self.acquire().await?;
        Ok(call.await)
    }

    /// A snapshot of the bulkhead.
    #[must_use]
    pub fn stats(&self) -> BulkheadStats {
        BulkheadStats {
            name: self.inner.name.to_string(),
            max_concurrent: self.inner.max_concurrent,
            in_use: self.inner.max_concurrent - self.inner.semaphore.available_permits(),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
            rejected: self.inner.rejected.load(Ordering::Relaxed),
        }
    }
}
