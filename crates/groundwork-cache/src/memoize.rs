//! Memoization of async functions: the seeds' `cache_result` / `cached_async_call`, without
//! their flaws (errors are never cached, concurrent calls share one execution).

use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::{CacheBuilder, CacheError, RefreshingCache, Snapshot, Source};

/// An async function whose results are cached by argument for a TTL. Cheap to clone.
///
/// Concurrent calls with the same argument run the function once; an error is returned to
/// the callers waiting on it and never cached, so the next call runs the function again.
#[derive(Clone)]
pub struct Memoized<K, V> {
    cache: RefreshingCache<K, V>,
}

impl<K, V> std::fmt::Debug for Memoized<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memoized")
            .field("cache", &self.cache)
            .finish()
    }
}

/// Caches the results of `function` by argument for `ttl`, holding at most `capacity`
/// results.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let calls = Arc::new(AtomicUsize::new(0));
/// let counted = Arc::clone(&calls);
/// let square = groundwork_cache::memoize("square", Duration::from_secs(60), 1000, move |n: u64| {
///     let counted = Arc::clone(&counted);
///     async move {
///         counted.fetch_add(1, Ordering::SeqCst);
///         Ok::<_, std::io::Error>(n * n)
///     }
/// });
/// assert_eq!(*square.get(7).await?, 49);
/// assert_eq!(*square.get(7).await?, 49);
/// assert_eq!(calls.load(Ordering::SeqCst), 1);
/// # Ok::<(), groundwork_cache::CacheError>(())
/// # }).unwrap();
/// ```
pub fn memoize<K, V, E, F, Fut>(
    name: &str,
    ttl: Duration,
    capacity: u64,
    function: F,
) -> Memoized<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    memoize_with(
        RefreshingCache::builder(name).ttl(ttl).capacity(capacity),
        function,
    )
}

/// [`memoize`] with every setting of a [`CacheBuilder`]: its name, TTL, capacity, weigher,
/// load timeout, clock and sleeper (a test passes a [`crate::ManualTimer`]), metrics export.
/// The settings that make it a memo are imposed: no periodic refresh, no refresh-ahead, no
/// stale serving, no fill (a function has no "everything" to load).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use groundwork_cache::{ManualTimer, RefreshingCache, memoize_with};
///
/// let timer = Arc::new(ManualTimer::new());
/// let double = memoize_with(
///     RefreshingCache::builder("double")
///         .ttl(Duration::from_secs(60))
///         .timer(Arc::clone(&timer)),
///     |n: u64| async move { Ok::<_, std::io::Error>(2 * n) },
/// );
/// assert_eq!(*double.get(21).await?, 42);
/// # Ok::<(), groundwork_cache::CacheError>(())
/// # }).unwrap();
/// ```
pub fn memoize_with<K, V, E, F, Fut>(builder: CacheBuilder<K, V>, function: F) -> Memoized<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    let ttl = builder.ttl;
    let cache = builder
        .refresh_after(ttl)
        .refresh_interval(None)
        .max_staleness(Duration::ZERO)
        .fill_on_miss(false)
        .build(FnSource {
            function,
            _types: PhantomData,
        });
    Memoized { cache }
}

impl<K, V> Memoized<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
{
    /// The function's result for `key`, cached or computed now.
    ///
    /// # Errors
    /// The function's error (as [`CacheError::Source`]) or a timeout; not cached.
    pub async fn get(&self, key: K) -> Result<Arc<V>, CacheError> {
        match self.cache.get(&key).await? {
            Some(value) => Ok(value),
            // The function always returns a value; an absence can only come from a
            // concurrent invalidation racing the insert: compute again.
            None => {
                self.cache.invalidate(&key);
                self.cache
                    .get(&key)
                    .await?
                    .ok_or_else(|| CacheError::Aborted {
                        cache: Arc::from(self.cache.name()),
                    })
            }
        }
    }

    /// Forgets the result for `key`.
    pub fn invalidate(&self, key: &K) {
        self.cache.invalidate(key);
    }

    /// The underlying cache (statistics, invalidation).
    #[must_use]
    pub fn cache(&self) -> &RefreshingCache<K, V> {
        &self.cache
    }
}

struct FnSource<F, E> {
    function: F,
    _types: PhantomData<fn() -> E>,
}

impl<K, V, E, F, Fut> Source<K, V> for FnSource<F, E>
where
    K: Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
{
    type Error = E;

    async fn load(&self, key: &K) -> Result<Option<V>, E> {
        (self.function)(key.clone()).await.map(Some)
    }

    async fn load_all(&self) -> Result<Snapshot<K, V>, E> {
        Ok(Snapshot::new(Vec::new()))
    }
}
