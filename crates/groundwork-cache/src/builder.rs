//! [`CacheBuilder`]: every setting of a [`RefreshingCache`] with its default.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use groundwork_core::clock::{Clock, SystemClock};

use crate::cache::RefreshingCache;
use crate::source::Source;
use crate::timer::{Sleeper, TokioSleeper};

/// Computes an entry's weight for the capacity bound.
pub type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;

/// Settings of a [`RefreshingCache`]. Start with [`RefreshingCache::builder`].
///
/// ```
/// use std::time::Duration;
/// # use groundwork_cache::{RefreshingCache, Snapshot, Source};
/// # struct Db;
/// # impl Source<u64, String> for Db {
/// #     type Error = std::io::Error;
/// #     async fn load(&self, _: &u64) -> Result<Option<String>, Self::Error> { Ok(None) }
/// #     async fn load_all(&self) -> Result<Snapshot<u64, String>, Self::Error> { Ok(Snapshot::new(vec![])) }
/// # }
/// let cache: RefreshingCache<u64, String> = RefreshingCache::builder("agent_tools")
///     .ttl(Duration::from_secs(300))
///     .refresh_interval(Some(Duration::from_secs(60)))
///     .max_staleness(Duration::from_secs(3600))
///     .capacity(100_000)
///     .build(Db);
/// assert_eq!(cache.name(), "agent_tools");
/// ```
#[must_use]
pub struct CacheBuilder<K, V> {
    pub(crate) name: Arc<str>,
    pub(crate) ttl: Duration,
    pub(crate) refresh_after: Option<Duration>,
    pub(crate) refresh_interval: Option<Duration>,
    pub(crate) max_staleness: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) load_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) capacity: u64,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sleeper: Arc<dyn Sleeper>,
    pub(crate) fill_on_miss: bool,
    pub(crate) metrics_interval: Option<Duration>,
}

impl<K, V> CacheBuilder<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
{
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            ttl: Duration::from_secs(300),
            refresh_after: None,
            refresh_interval: Some(Duration::from_secs(60)),
            max_staleness: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            load_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            capacity: 10_000,
            weigher: None,
            clock: Arc::new(SystemClock::new()),
            sleeper: Arc::new(TokioSleeper),
            fill_on_miss: true,
            metrics_interval: Some(Duration::from_secs(1)),
        }
    }

    /// How long a value is served without word from the source. Default: 300 s (the seeds).
    ///
    /// Every successful full or incremental refresh vouches for all entries, so with a
    /// working refresh an entry does not expire; the TTL bounds how long the cache trusts
    /// itself when refreshes stop succeeding.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Age after which a hit also schedules a background reload of that key
    /// (refresh-ahead). Default: three quarters of the TTL. Clamped to the TTL.
    pub fn refresh_after(mut self, after: Duration) -> Self {
        self.refresh_after = Some(after);
        self
    }

    /// Period of the background refresh, or `None` for no periodic refresh. Default: 60 s
    /// (the seeds). The refresh is incremental when the source has a change feed.
    pub fn refresh_interval(mut self, interval: Option<Duration>) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// How long past its TTL a value may still be served while the source fails
    /// (stale-if-error). Default: 1 hour.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = staleness;
        self
    }

    /// How long a key the source does not have is remembered as absent, so that asking for
    /// a missing id again does not reach the source. Default: 5 s.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// How long one load or refresh may take before it fails with a timeout. Default: 10 s.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.load_timeout = timeout;
        self
    }

    /// Backoff after source failures: the first retry waits about `base`, each further
    /// failure doubles the wait up to `max`, with jitter. Defaults: 1 s and 300 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// The capacity bound: total weight (by default, number of entries). Default: 10,000.
    /// Eviction follows S3-FIFO (via `quick_cache`), which keeps frequently used entries
    /// and lets one-hit wonders go first.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Weighs entries for the capacity bound (e.g. by approximate bytes) instead of
    /// counting them. A remembered absence weighs 1.
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// The clock TTLs, refresh points and backoff are measured with. Default: the system's
    /// monotonic clock. Tests pass a `ManualClock`, or a [`crate::ManualTimer`] through
    /// [`CacheBuilder::timer`] to also drive the background tasks.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How the background tasks wait: the periodic refresh between refreshes and during its
    /// backoff, and the metrics export. Default: [`crate::TokioSleeper`] (real time), which
    /// suits the default clock; a cache on a hand-driven clock waits on that clock instead.
    pub fn sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// One object as both the clock and the sleeper, e.g. a [`crate::ManualTimer`]: a test
    /// that advances it makes the refresh and metrics export due at that time run, with no
    /// real waits.
    ///
    /// ```
    /// use std::sync::Arc;
    /// # use groundwork_cache::{ManualTimer, RefreshingCache, Snapshot, Source};
    /// # struct Db;
    /// # impl Source<u64, String> for Db {
    /// #     type Error = std::io::Error;
    /// #     async fn load(&self, _: &u64) -> Result<Option<String>, Self::Error> { Ok(None) }
    /// #     async fn load_all(&self) -> Result<Snapshot<u64, String>, Self::Error> { Ok(Snapshot::new(vec![])) }
    /// # }
    /// let timer = Arc::new(ManualTimer::new());
    /// let cache: RefreshingCache<u64, String> =
    ///     RefreshingCache::builder("test").timer(Arc::clone(&timer)).build(Db);
    /// ```
    pub fn timer<T: Clock + Sleeper>(self, timer: Arc<T>) -> Self {
        let clock: Arc<dyn Clock> = Arc::clone(&timer) as Arc<dyn Clock>;
        self.clock(clock).sleeper(timer)
    }

    /// Whether a miss on a cache that has never been filled (or was invalidated entirely)
    /// first reloads everything through one `load_all`. Default: `true`.
    pub fn fill_on_miss(mut self, fill: bool) -> Self {
        self.fill_on_miss = fill;
        self
    }

    /// How often the statistics are exported through the `metrics` crate (see
    /// [`crate::CacheStats::publish`]), or `None` to export only on
    /// [`RefreshingCache::publish_metrics`]. Default: every second. The export runs in a
    /// background task started by [`RefreshingCache::start`] or the first lookup that
    /// reaches the source, so caches that are never started (such as [`crate::memoize`]'s)
    /// export too; the hit path does no export work. Waits through the
    /// [`CacheBuilder::sleeper`].
    pub fn metrics_interval(mut self, interval: Option<Duration>) -> Self {
        self.metrics_interval = interval.filter(|i| !i.is_zero());
        self
    }

    /// The cache, reading from `source`. Call [`RefreshingCache::start`] to fill it and
    /// start the background refresh.
    pub fn build<S: Source<K, V>>(self, source: S) -> RefreshingCache<K, V> {
        RefreshingCache::from_builder(self, Arc::new(source))
    }
}
