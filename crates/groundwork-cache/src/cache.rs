//! [`RefreshingCache`]: lookups, single-flight loads, invalidation and refresh.
//!
//! # How entries stay correct
//! - Every entry records when the read that produced it *started* (`loaded_at`). A refresh
//!   never overwrites an entry loaded after the refresh started (that entry is newer).
//! - A successful refresh that covered the whole source (a full reload or a complete change
//!   feed) vouches for every entry as of its start time (`verified_at`), so healthy
//!   refreshes keep entries fresh without touching them.
//! - Invalidation wins: `invalidate` removes the entry, cancels the insert of any load in
//!   flight for that key, and makes a running refresh skip the key. `invalidate_all` and
//!   `invalidate_if` cancel the inserts of every load in flight (a predicate cannot be asked
//!   about a value not read yet) and make a running refresh stop applying what it read.
//!   Loads and refreshes check all of this under one short lock (`coord`), never held across
//!   an `.await`, when they write back; the hit path does not see it.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use groundwork_core::clock::Clock;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::builder::{CacheBuilder, Weigher};
use crate::error::CacheError;
use crate::source::{ChangeSet, DynSource, Snapshot, SourceError};
use crate::stats::{CacheStats, Counters};
use crate::timer::Sleeper;

/// How often the background task publishes the time for hits (see `Inner::tick`).
const TICK: Duration = Duration::from_millis(10);

/// Entries per locked step when applying a refresh: readers never wait on a refresh (hits do
/// not take `coord`), and misses wait at most one step.
const APPLY_CHUNK: usize = 1024;

/// What a load hands to every caller waiting on it.
type LoadOutcome<V> = Result<Option<Arc<V>>, CacheError>;
type SharedLoad<V> = Shared<BoxFuture<'static, LoadOutcome<V>>>;
type SharedRefresh = Shared<BoxFuture<'static, Result<(), CacheError>>>;

/// One cached answer: a value, or the knowledge that the source has no such key.
#[derive(Debug)]
pub(crate) struct Slot<V> {
    value: Option<Arc<V>>,
    /// Clock time (ns) + 1 when the read that produced this slot started. Non-zero so that
    /// `Option<Slot<V>>`, what a lookup returns, fits in two registers (measured: returned
    /// through memory, it cost a store-forwarding stall on every hit).
    loaded: NonZeroU64,
}

impl<V> Slot<V> {
    fn new(value: Option<Arc<V>>, loaded_at: u64) -> Self {
        Self {
            value,
            loaded: NonZeroU64::MIN.saturating_add(loaded_at),
        }
    }

    /// Clock time (ns) when the read that produced this slot started.
    #[inline]
    fn loaded_at(&self) -> u64 {
        self.loaded.get() - 1
    }
}

impl<V> Clone for Slot<V> {
    #[inline]
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            loaded: self.loaded,
        }
    }
}

pub(crate) struct SlotWeigher<K, V>(Option<Weigher<K, V>>);

impl<K, V> Clone for SlotWeigher<K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K, V> Weighter<K, Slot<V>> for SlotWeigher<K, V> {
    #[inline]
    fn weight(&self, key: &K, slot: &Slot<V>) -> u64 {
        match (&self.0, &slot.value) {
            (Some(weigher), Some(value)) => weigher(key, value).max(1),
            _ => 1,
        }
    }
}

/// Counts capacity evictions. `quick_cache` also reports a value replaced by an insert of
/// the same key as "evicted"; inserts pass their key as the request state so that those
/// replacements are not counted.
#[derive(Clone)]
pub(crate) struct EvictionCounter(Arc<Counters>);

/// The key being inserted, if any (see [`EvictionCounter`]).
pub(crate) struct Inserting<K>(Option<K>);

impl<K> Default for Inserting<K> {
    fn default() -> Self {
        Self(None)
    }
}

impl<K: Eq, V> Lifecycle<K, Slot<V>> for EvictionCounter {
    type RequestState = Inserting<K>;

    fn on_evict(&self, state: &mut Self::RequestState, key: K, _val: Slot<V>) {
        if state.0.as_ref() != Some(&key) {
            self.0.evictions.incr();
        }
    }
}

type Map<K, V> = Cache<K, Slot<V>, SlotWeigher<K, V>, DefaultHashBuilder, EvictionCounter>;

/// A load in flight: callers of the same key share `future`; `id` tells whether it is still
/// the current load for that key when it completes.
struct Flight<V> {
    id: u64,
    /// Clock time (ns) the load was registered, before it read anything.
    started: u64,
    future: SharedLoad<V>,
}

/// Keys invalidated while a refresh runs: the refresh must not write them back.
struct Watch<K> {
    keys: HashSet<K>,
    /// `invalidate_all` ran: the cache is empty and the refresh applies nothing more.
    all: bool,
    /// `invalidate_if` ran: any value the refresh read may be one of those invalidated, so it
    /// applies nothing more (and vouches for nothing); the next refresh catches up.
    superseded: bool,
}

impl<K> Watch<K> {
    fn new() -> Self {
        Self {
            keys: HashSet::new(),
            all: false,
            superseded: false,
        }
    }

    /// Whether the refresh must stop applying what it read.
    fn stopped(&self) -> bool {
        self.all || self.superseded
    }
}

/// State changed only under the `coord` lock.
struct Coord<K, V> {
    inflight: HashMap<K, Flight<V>>,
    next_id: u64,
    refresh: Option<(u64, SharedRefresh)>,
    watch: Option<Watch<K>>,
}

struct Settings {
    ttl: u64,
    refresh_after: u64,
    max_staleness: u64,
    negative_ttl: u64,
    load_timeout: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    refresh_interval: Option<Duration>,
    metrics_interval: Option<Duration>,
    capacity: u64,
    fill_on_miss: bool,
}

pub(crate) struct Inner<K, V> {
    name: Arc<str>,
    map: Map<K, V>,
    source: Arc<dyn DynSource<K, V>>,
    clock: Arc<dyn Clock>,
    /// How the background tasks wait (on `clock`'s time).
    sleeper: Arc<dyn Sleeper>,
    settings: Settings,
    coord: Mutex<Coord<K, V>>,
    counters: Arc<Counters>,
    /// Start (ns + 1) of the last refresh that vouched for every entry; 0 = never.
    verified_at: AtomicU64,
    /// Start (ns + 1) of the last successful refresh of any kind; 0 = never.
    last_refresh: AtomicU64,
    /// The clock's coarse time (ns + 1), published every [`TICK`] by the background task so
    /// that a hit reads an atomic instead of calling the clock; 0 = no ticker running.
    tick: AtomicU64,
    /// Until when (ns + 1) the source counts as failing; 0 = healthy.
    failing_until: AtomicU64,
    consecutive_failures: AtomicU32,
    filled: AtomicBool,
    /// Whether the metrics export task has been started.
    publishing: AtomicBool,
    cursor: Mutex<Option<u64>>,
    wake: Notify,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A typed cache kept in sync with a [`crate::Source`].
///
/// Cheap to clone (a handle); build it with [`RefreshingCache::builder`]. Values are handed
/// out as shared, immutable `Arc<V>` snapshots.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::collections::HashMap;
/// use groundwork_cache::{RefreshingCache, Snapshot, Source};
///
/// struct Prices(HashMap<&'static str, u32>);
///
/// impl Source<&'static str, u32> for Prices {
///     type Error = std::io::Error;
///     async fn load(&self, key: &&'static str) -> Result<Option<u32>, Self::Error> {
///         Ok(self.0.get(key).copied())
///     }
///     async fn load_all(&self) -> Result<Snapshot<&'static str, u32>, Self::Error> {
///         Ok(Snapshot::new(self.0.iter().map(|(k, v)| (*k, *v)).collect()))
///     }
/// }
///
/// let cache = RefreshingCache::builder("prices")
///     .build(Prices(HashMap::from([("apple", 3), ("pear", 4)])));
/// cache.start().await?;
///
/// assert_eq!(cache.get(&"apple").await?.as_deref(), Some(&3));
/// assert_eq!(cache.get(&"plum").await?, None); // absent, and remembered briefly
/// assert_eq!(cache.stats().hits, 1);
/// cache.shutdown().await;
/// # Ok::<(), groundwork_cache::CacheError>(())
/// # }).unwrap();
/// ```
pub struct RefreshingCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for RefreshingCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> std::fmt::Debug for RefreshingCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshingCache")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// The future returned by [`RefreshingCache::get`].
///
/// A fresh hit is resolved when the future is created (polling it only hands the value
/// over); anything else runs when it is polled. Written as a small named type rather than
/// `Either<Ready, BoxFuture>` so that the hit path inlines into the caller's poll.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Get<'a, V>(GetState<'a, V>);

enum GetState<'a, V> {
    /// A hit resolved in [`RefreshingCache::get`].
    Hit(Option<Arc<V>>),
    /// Refresh-ahead, stale serving or a load.
    Slow(BoxFuture<'a, Result<Option<Arc<V>>, CacheError>>),
    /// The hit has been handed over.
    Done,
}

impl<V> Future for Get<'_, V> {
    type Output = Result<Option<Arc<V>>, CacheError>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        // `Get` is `Unpin`: every state is (the slow future is boxed).
        let this = self.get_mut();
        match &mut this.0 {
            GetState::Slow(future) => future.as_mut().poll(cx),
            GetState::Hit(_) => match std::mem::replace(&mut this.0, GetState::Done) {
                GetState::Hit(value) => std::task::Poll::Ready(Ok(value)),
                _ => unreachable_hit(),
            },
            GetState::Done => unreachable_hit(),
        }
    }
}

impl<V> std::fmt::Debug for Get<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            GetState::Hit(_) => "hit",
            GetState::Slow(_) => "pending",
            GetState::Done => "done",
        };
        f.debug_tuple("Get").field(&state).finish()
    }
}

/// Polling a completed [`Get`] again is a caller bug, as for any future.
#[cold]
#[inline(never)]
fn unreachable_hit() -> ! {
    panic!("`Get` polled after completion")
}

enum Freshness {
    /// Within its refresh point.
    Fresh,
    /// Past the refresh point, within the TTL: serve and reload in the background.
    RefreshDue,
    /// Past the TTL; `servable` if still within the staleness allowance.
    Expired { servable: bool },
}

impl<K, V> RefreshingCache<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
{
    /// Settings for a cache called `name` (used in statistics and metrics).
    pub fn builder(name: &str) -> CacheBuilder<K, V> {
        CacheBuilder::new(name)
    }

    pub(crate) fn from_builder(
        builder: CacheBuilder<K, V>,
        source: Arc<dyn DynSource<K, V>>,
    ) -> Self {
        let counters = Arc::new(Counters::new());
        let capacity = builder.capacity;
        // A hint for the initial allocation: the capacity counts entries unless a weigher
        // is set, in which case it may be bytes and would overstate the entries by far.
        let estimated_items = if builder.weigher.is_some() {
            16_384
        } else {
            usize::try_from(capacity.min(1 << 20)).unwrap_or(1 << 20)
        };
        let (shards, bound) = shard_layout(capacity, estimated_items);
        let weigher = SlotWeigher(builder.weigher);
        let lifecycle = EvictionCounter(Arc::clone(&counters));
        let map = match OptionsBuilder::new()
            .shards(shards)
            .estimated_items_capacity(estimated_items)
            .weight_capacity(bound)
            .build()
        {
            Ok(options) => {
                Cache::with_options(options, weigher, DefaultHashBuilder::default(), lifecycle)
            }
            // Only fails for unset fields, which are all set above.
            Err(_) => Cache::with(
                estimated_items,
                bound,
                weigher,
                DefaultHashBuilder::default(),
                lifecycle,
            ),
        };
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let ttl = nanos(builder.ttl);
        let refresh_after = builder.refresh_after.map_or(ttl / 4 * 3, nanos).min(ttl);
        Self {
            inner: Arc::new(Inner {
                name: builder.name,
                map,
                source,
                clock: builder.clock,
                sleeper: builder.sleeper,
                settings: Settings {
                    ttl,
                    refresh_after,
                    max_staleness: nanos(builder.max_staleness),
                    negative_ttl: nanos(builder.negative_ttl),
                    load_timeout: builder.load_timeout,
                    backoff_base: builder.backoff_base,
                    backoff_max: builder.backoff_max,
                    refresh_interval: builder.refresh_interval,
                    metrics_interval: builder.metrics_interval,
                    capacity,
                    fill_on_miss: builder.fill_on_miss,
                },
                coord: Mutex::new(Coord {
                    inflight: HashMap::new(),
                    next_id: 1,
                    refresh: None,
                    watch: None,
                }),
                counters,
                verified_at: AtomicU64::new(0),
                last_refresh: AtomicU64::new(0),
                tick: AtomicU64::new(0),
                failing_until: AtomicU64::new(0),
                consecutive_failures: AtomicU32::new(0),
                filled: AtomicBool::new(false),
                publishing: AtomicBool::new(false),
                cursor: Mutex::new(None),
                wake: Notify::new(),
                shutdown: CancellationToken::new(),
                task: Mutex::new(None),
            }),
        }
    }

    /// The cache's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The value of `key`: `Some` from the cache or the source, `None` when the source has
    /// no such key.
    ///
    /// - A fresh hit returns at once.
    /// - A hit past its refresh point returns at once and schedules one background reload.
    /// - A missing or expired key is loaded once, however many callers ask at the same time;
    ///   the load runs in its own task, so a caller giving up does not cancel it for the
    ///   others.
    /// - If the source fails, a value past its TTL but within `max_staleness` is served.
    ///
    /// Needs a Tokio runtime (loads run as tasks) when the returned future is polled.
    ///
    /// # Errors
    /// [`CacheError`] when the source fails (or times out) and nothing servable is cached.
    // `always`: measured, LLVM otherwise keeps this a call that returns the future through
    // memory, and reading it back costs a store-forwarding stall (~15 ns of a ~70 ns hit).
    #[inline(always)]
    pub fn get<'a>(&'a self, key: &'a K) -> Get<'a, V> {
        // A fresh hit is answered here, before any future exists: the returned future is
        // already resolved, so a hit costs the lookup and nothing of an async state machine.
        // Everything else (refresh-ahead, stale serving, loads) runs when the future is
        // polled, inside the runtime.
        match self.lookup(key) {
            Ok(value) => Get(GetState::Hit(value)),
            Err(slot) => Get(GetState::Slow(Box::pin(self.get_slower(key, slot)))),
        }
    }

    /// The synchronous part of [`RefreshingCache::get`]: `Ok` for a fresh hit (or a stale
    /// one while the source is in backoff), `Err` with whatever is cached otherwise.
    #[inline(always)]
    fn lookup(&self, key: &K) -> Result<Option<Arc<V>>, Option<Slot<V>>> {
        let inner = &*self.inner;
        // The slot is owned here: its `Arc` is handed out by move (one reference-count
        // increment per hit, the one `quick_cache::get` makes).
        let slot = inner.map.get(key).ok_or(None)?;
        // Published time when a ticker runs, the coarse clock otherwise: a freshness check
        // needs milliseconds at best, and even a clock call is a third of a hit.
        let now = inner.hot_now();
        match inner.freshness(&slot, now) {
            Freshness::Fresh => {
                inner.counters.hits.incr();
                Ok(slot.value)
            }
            Freshness::Expired { servable: true } if inner.source_failing(now) => {
                inner.counters.stale_hits.incr();
                Ok(slot.value)
            }
            _ => Err(Some(slot)),
        }
    }

    /// The polled part of [`RefreshingCache::get`].
    async fn get_slower(
        &self,
        key: &K,
        cached: Option<Slot<V>>,
    ) -> Result<Option<Arc<V>>, CacheError> {
        let inner = &*self.inner;
        let Some(slot) = cached else {
            return self.get_slow(key, None).await;
        };
        let now = inner.now_coarse();
        match inner.freshness(&slot, now) {
            Freshness::Fresh => {
                inner.counters.hits.incr();
                Ok(slot.value)
            }
            Freshness::RefreshDue => {
                inner.counters.hits.incr();
                if !inner.source_failing(now) {
                    drop(self.flight(key));
                }
                Ok(slot.value)
            }
            Freshness::Expired { servable: true } if inner.source_failing(now) => {
                inner.counters.stale_hits.incr();
                Ok(slot.value)
            }
            Freshness::Expired { servable: true } if inner.recently_failed() => {
                // The backoff has passed but the source has not answered since it failed:
                // serve at once and retry in the background, so readers never wait on a
                // source that is probably still down.
                inner.counters.stale_hits.incr();
                drop(self.flight(key));
                Ok(slot.value)
            }
            Freshness::Expired { .. } => self.get_slow(key, Some(slot)).await,
        }
    }

    #[cold]
    async fn get_slow(
        &self,
        key: &K,
        cached: Option<Slot<V>>,
    ) -> Result<Option<Arc<V>>, CacheError> {
        let inner = &*self.inner;
        // Counted now (callers waiting on a load show as misses); a lookup that ends up
        // served stale is moved to the stale hits below, so each lookup counts once.
        inner.counters.misses.incr();
        self.ensure_publisher();
        if cached.is_none()
            && inner.settings.fill_on_miss
            && !inner.filled.load(Ordering::Acquire)
            && !inner.source_failing(inner.now())
        {
            // An empty cache rebuilds through one `load_all`, shared by every caller. Not
            // while the source is in backoff (its last fill, refresh or load failed): a miss
            // then loads its key alone, so that a failing source sees at most one `load_all`
            // per backoff window however many lookups miss.
            if self.refresh_shared().await.is_ok()
                && let Some(slot) = inner.map.get(key)
                && !matches!(
                    inner.freshness(&slot, inner.now()),
                    Freshness::Expired { .. }
                )
            {
                return Ok(slot.value);
            }
        }
        match self.flight(key).await {
            Ok(value) => Ok(value),
            Err(err) => match cached {
                Some(slot)
                    if matches!(
                        inner.freshness(&slot, inner.now()),
                        Freshness::Expired { servable: true }
                    ) =>
                {
                    inner.counters.misses.decr();
                    inner.counters.stale_hits.incr();
                    Ok(slot.value)
                }
                _ => Err(err),
            },
        }
    }

    /// The value of `key` if it is cached and servable, without ever reaching the source
    /// (no load, no refresh-ahead, no statistics).
    #[must_use]
    pub fn peek(&self, key: &K) -> Option<Arc<V>> {
        let slot = self.inner.map.peek(key)?;
        match self.inner.freshness(&slot, self.inner.now()) {
            Freshness::Expired { servable: false } => None,
            _ => slot.value,
        }
    }

    /// The shared load of `key`: joins the one in flight or starts one.
    fn flight(&self, key: &K) -> SharedLoad<V> {
        let mut coord = self.inner.lock_coord();
        if let Some(flight) = coord.inflight.get(key) {
            return flight.future.clone();
        }
        // A load may have finished between the caller's miss and this lock: use its result.
        if let Some(slot) = self.inner.map.peek(key)
            && matches!(
                self.inner.freshness(&slot, self.inner.now()),
                Freshness::Fresh
            )
        {
            return futures_util::future::ready(Ok(slot.value)).boxed().shared();
        }
        let id = coord.next_id;
        coord.next_id += 1;
        let started = self.inner.now();
        let future = self
            .spawn_load(vec![key.clone()], id, started)
            .map(first_of)
            .boxed()
            .shared();
        coord.inflight.insert(
            key.clone(),
            Flight {
                id,
                started,
                future: future.clone(),
            },
        );
        future
    }

    /// Spawns a task that loads `keys` (one round trip) and inserts what it read for every
    /// key whose flight `id` is still current. The task owns the work: callers that stop
    /// waiting do not cancel it.
    fn spawn_load(
        &self,
        keys: Vec<K>,
        id: u64,
        started: u64,
    ) -> BoxFuture<'static, Result<Vec<Option<Arc<V>>>, CacheError>> {
        let inner = Arc::clone(&self.inner);
        let handle = tokio::spawn(async move { inner.load_keys(keys, id, started).await });
        let name = Arc::clone(&self.inner.name);
        async move {
            match handle.await {
                Ok(outcome) => outcome,
                Err(_) => Err(CacheError::Aborted { cache: name }),
            }
        }
        .boxed()
    }

    /// Removes `key`: the next `get` reads it from the source. A load in flight for the key
    /// will not write its (possibly older) result, and a running refresh skips the key.
    /// Takes effect before it returns.
    pub fn invalidate(&self, key: &K) {
        let mut coord = self.inner.lock_coord();
        coord.inflight.remove(key);
        if let Some(watch) = coord.watch.as_mut() {
            watch.keys.insert(key.clone());
        }
        self.inner.map.remove(key);
    }

    /// Stores `value` for `key` as the source's current value (write-through), taking effect
    /// before it returns: a load in flight for `key` will not overwrite it, nor will a
    /// refresh running now. For callers that produce values themselves, such as a response
    /// cache whose source is only a second cache level.
    pub fn insert(&self, key: K, value: V) {
        self.ensure_publisher();
        let inner = &*self.inner;
        let mut coord = inner.lock_coord();
        coord.inflight.remove(&key);
        if let Some(watch) = coord.watch.as_mut() {
            watch.keys.insert(key.clone());
        }
        inner.put(key, Slot::new(Some(Arc::new(value)), inner.now()));
    }

    /// Removes every entry; the next miss rebuilds the cache through one `load_all`.
    pub fn invalidate_all(&self) {
        let mut coord = self.inner.lock_coord();
        coord.inflight.clear();
        if let Some(watch) = coord.watch.as_mut() {
            watch.all = true;
        }
        self.inner.map.clear();
        self.inner.filled.store(false, Ordering::Release);
        self.inner.verified_at.store(0, Ordering::Release);
    }

    /// Removes every entry whose key and value match `predicate`; returns how many. Takes
    /// effect before it returns: no value read from the source before the call is stored
    /// after it. Since the predicate cannot be asked about values still being read, every
    /// load in flight (for any key) completes for its callers without storing its result,
    /// and a running refresh stops applying what it read (the next one catches up).
    pub fn invalidate_if(&self, predicate: impl Fn(&K, &V) -> bool) -> usize {
        let mut coord = self.inner.lock_coord();
        // Loads in flight may be reading values that match: none of them writes back.
        coord.inflight.clear();
        if let Some(watch) = coord.watch.as_mut() {
            watch.superseded = true;
        }
        let keys: Vec<K> = self
            .inner
            .map
            .iter()
            .filter_map(|(k, slot)| {
                slot.value
                    .as_deref()
                    .is_some_and(|v| predicate(&k, v))
                    .then_some(k)
            })
            .collect();
        for key in &keys {
            if let Some(watch) = coord.watch.as_mut() {
                watch.keys.insert(key.clone());
            }
            self.inner.map.remove(key);
        }
        keys.len()
    }

    /// Loads `keys` from the source in one round trip (`load_many`) and caches them, so that
    /// the next lookups hit; returns how many the source has. Takes effect before it returns.
    ///
    /// # Errors
    /// [`CacheError`] if the source fails; nothing is cached then.
    pub async fn warm(&self, keys: &[K]) -> Result<usize, CacheError> {
        let mut seen = HashSet::new();
        let keys: Vec<K> = keys.iter().filter(|k| seen.insert(*k)).cloned().collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.ensure_publisher();
        let batch = {
            let mut coord = self.inner.lock_coord();
            let id = coord.next_id;
            coord.next_id += 1;
            let started = self.inner.now();
            let batch = self.spawn_load(keys.clone(), id, started).shared();
            for (index, key) in keys.iter().enumerate() {
                let future = batch
                    .clone()
                    .map(move |outcome| outcome.map(|values| values.get(index).cloned().flatten()))
                    .boxed()
                    .shared();
                coord.inflight.insert(
                    key.clone(),
                    Flight {
                        id,
                        started,
                        future,
                    },
                );
            }
            batch
        };
        batch
            .await
            .map(|values| values.iter().filter(|v| v.is_some()).count())
    }

    /// Fills the cache (one `load_all`) and starts the background refresh task. Returns
    /// once the first fill is done.
    ///
    /// # Errors
    /// [`CacheError`] if the first fill fails. The cache still works (lookups load keys
    /// one by one) and the background task keeps retrying with backoff.
    pub async fn start(&self) -> Result<(), CacheError> {
        // Fill first, so that the task's first wait already knows whether to back off.
        let filled = self.refresh_shared().await;
        self.spawn_ticker();
        self.spawn_refresh_task();
        self.ensure_publisher();
        filled
    }

    /// Runs one refresh now (a fill if the cache is empty, else incremental or a full
    /// diff), or joins the one running, and returns when it is done.
    ///
    /// # Errors
    /// [`CacheError`] if the source fails; entries are kept and served.
    pub async fn refresh_now(&self) -> Result<(), CacheError> {
        self.ensure_publisher();
        self.refresh_shared().await
    }

    /// Wakes the background refresh at once (e.g. on a change notification from the source).
    pub fn notify_changed(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops the background tasks (refresh, metrics export) and waits for the refresh task
    /// to end; exports the statistics a last time.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let task = self.inner.task.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(task) = task {
            let _ = task.await;
        }
        if self.inner.settings.metrics_interval.is_some() {
            self.publish_metrics();
        }
    }

    /// Whether the cache has been filled since it was created or last invalidated entirely.
    #[must_use]
    pub fn is_filled(&self) -> bool {
        self.inner.filled.load(Ordering::Acquire)
    }

    /// The cache's statistics now.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        let now = inner.now();
        let last = inner.last_refresh.load(Ordering::Acquire);
        CacheStats {
            name: inner.name.to_string(),
            hits: c.hits.get(),
            stale_hits: c.stale_hits.get(),
            misses: c.misses.get(),
            loads: c.loads.get(),
            load_failures: c.load_failures.get(),
            load_time: Duration::from_nanos(c.load_nanos.get()),
            refreshes: c.refreshes.get(),
            refresh_failures: c.refresh_failures.get(),
            evictions: c.evictions.get(),
            entries: inner.map.len() as u64,
            weight: inner.map.weight(),
            capacity: inner.settings.capacity,
            last_refresh_age: (last != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(last - 1))),
            consecutive_failures: inner.consecutive_failures.load(Ordering::Acquire),
        }
    }

    /// Exports [`RefreshingCache::stats`] through the `metrics` facade (see
    /// [`CacheStats::publish`]). A background task also does this every
    /// [`crate::CacheBuilder::metrics_interval`] (from [`RefreshingCache::start`] or the
    /// first lookup that reaches the source on), and the refresh task after each refresh.
    pub fn publish_metrics(&self) {
        self.stats().publish();
    }

    /// Starts the metrics export task unless it runs (or is disabled). Off the hit path:
    /// called from `start`, misses, `insert`, `warm` and `refresh_now`.
    fn ensure_publisher(&self) {
        let inner = &*self.inner;
        let Some(interval) = inner.settings.metrics_interval else {
            return;
        };
        if inner.publishing.load(Ordering::Relaxed) || inner.shutdown.is_cancelled() {
            return;
        }
        // Outside a runtime (e.g. `insert` from plain code), a later call starts it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if inner.publishing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner<K, V>> = Arc::downgrade(&self.inner);
        let shutdown = inner.shutdown.clone();
        runtime.spawn(async move {
            loop {
                // Holds no handle while waiting: the task ends at the first wake-up after
                // every handle is dropped, or at `shutdown`.
                let sleep = match weak.upgrade() {
                    Some(inner) => inner.sleeper.sleep(interval),
                    None => return,
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sleep => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                RefreshingCache { inner }.publish_metrics();
            }
        });
    }

    /// The refresh in flight, or a new one.
    fn refresh_shared(&self) -> SharedRefresh {
        let mut coord = self.inner.lock_coord();
        if let Some((_, refresh)) = &coord.refresh {
            return refresh.clone();
        }
        let id = coord.next_id;
        coord.next_id += 1;
        let inner = Arc::clone(&self.inner);
        let handle = tokio::spawn(async move { inner.refresh(id).await });
        let name = Arc::clone(&self.inner.name);
        let future = async move {
            match handle.await {
                Ok(outcome) => outcome,
                Err(_) => Err(CacheError::Aborted { cache: name }),
            }
        }
        .boxed()
        .shared();
        coord.refresh = Some((id, future.clone()));
        future
    }

    /// Publishes the clock's coarse time every [`TICK`] for hits to read (see
    /// `Inner::tick`), if the clock allows it; once per cache.
    fn spawn_ticker(&self) {
        if !self.inner.clock.cacheable() || self.inner.tick.load(Ordering::Relaxed) != 0 {
            return;
        }
        self.inner
            .tick
            .store(self.inner.now_coarse().saturating_add(1), Ordering::Relaxed);
        let weak: Weak<Inner<K, V>> = Arc::downgrade(&self.inner);
        let shutdown = self.inner.shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                inner
                    .tick
                    .store(inner.now_coarse().saturating_add(1), Ordering::Relaxed);
            }
            if let Some(inner) = weak.upgrade() {
                inner.tick.store(0, Ordering::Relaxed);
            }
        });
    }

    fn spawn_refresh_task(&self) {
        let Some(interval) = self.inner.settings.refresh_interval else {
            return;
        };
        let Ok(mut task) = self.inner.task.lock() else {
            return;
        };
        if task.is_some() {
            return;
        }
        let weak: Weak<Inner<K, V>> = Arc::downgrade(&self.inner);
        let shutdown = self.inner.shutdown.clone();

        *task = Some(tokio::spawn(async move {
            loop {
                let woken = {
                    // Held for the wait only; the task ends once every handle is dropped
                    // (at the next wake-up) or at `shutdown`.
                    let Some(inner) = weak.upgrade() else { return };
                    // The wait runs on the cache's clock (its sleeper), so that a test
                    // driving the clock by hand drives the refresh too.
                    let sleep = inner.sleeper.sleep(inner.next_refresh_delay(interval));
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = sleep => false,
                        () = inner.wake.notified() => true,
                    }
                };
                let Some(inner) = weak.upgrade() else { return };
                if !woken && inner.source_failing(inner.now()) {
                    // A failure while this task slept (a miss's fill, a load) started a new
                    // backoff: wait for its end rather than retry within it.
                    continue;
                }
                let cache = RefreshingCache { inner };
                if let Err(err) = cache.refresh_shared().await {
                    tracing::warn!(cache = %cache.inner.name, woken, error = %err, "cache refresh failed");
                }
                cache.publish_metrics();
            }
        }));
    }
}

/// Shard count and total weight for a capacity bound that holds exactly: `quick_cache` gives
/// every shard `ceil(capacity / shards)`, which can add up to more than `capacity`; with the
/// capacity rounded down to a multiple of the shard count, the shards add up to at most
/// `capacity`. The shard count is the one `quick_cache` would pick (4 per core, a power of
/// two, at least 32 expected items per shard), lowered further so every shard holds at least
/// one entry.
fn shard_layout(capacity: u64, estimated_items: usize) -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut shards = (cores * 4).next_power_of_two();
    while shards > 1 && (estimated_items / shards < 32 || capacity / (shards as u64) < 1) {
        shards /= 2;
    }
    let per_shard = capacity / shards as u64;
    (shards, (per_shard * shards as u64).max(1))
}

/// The first value of a one-key load.
fn first_of<V>(outcome: Result<Vec<Option<Arc<V>>>, CacheError>) -> LoadOutcome<V> {
    outcome.map(|values| values.into_iter().next().flatten())
}

impl<K, V> Inner<K, V>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    V: PartialEq + Send + Sync + 'static,
{
    fn now(&self) -> u64 {
        u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The time for hot-path checks: the ticker's (at most [`TICK`] old) or the coarse clock.
    #[inline]
    fn hot_now(&self) -> u64 {
        match self.tick.load(Ordering::Relaxed) {
            0 => self.now_coarse(),
            published => published - 1,
        }
    }

    #[inline]
    fn now_coarse(&self) -> u64 {
        let now = self.clock.now_coarse();
        now.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(now.subsec_nanos()))
    }

    fn lock_coord(&self) -> MutexGuard<'_, Coord<K, V>> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough
        // to use: recover rather than poison every later call.
        self.coord
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[inline]
    fn freshness(&self, slot: &Slot<V>, now: u64) -> Freshness {
        let s = &self.settings;
        let (since, ttl, refresh_after) = match slot.value {
            Some(_) => {
                let verified = self.verified_at.load(Ordering::Relaxed);
                let since = slot.loaded_at().max(verified.saturating_sub(1));
                (since, s.ttl, s.refresh_after)
            }
            None => (slot.loaded_at(), s.negative_ttl, s.negative_ttl),
        };
        let age = now.saturating_sub(since);
        if age < refresh_after {
            Freshness::Fresh
        } else if age < ttl {
            Freshness::RefreshDue
        } else {
            Freshness::Expired {
                servable: age < ttl.saturating_add(s.max_staleness),
            }
        }
    }

    /// Whether the source's last answer was a failure (any load or refresh since).
    #[inline]
    fn recently_failed(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) > 0
    }

    /// Inserts or replaces `key` (see [`EvictionCounter`] for why the key is passed along).
    fn put(&self, key: K, slot: Slot<V>) {
        let mut inserting = Inserting(Some(key.clone()));
        self.map.insert_with_lifecycle(key, slot, &mut inserting);
    }

    #[inline]
    fn source_failing(&self, now: u64) -> bool {
        let until = self.failing_until.load(Ordering::Relaxed);
        until != 0 && now < until - 1
    }

    fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.failing_until.store(0, Ordering::Release);
    }

    fn record_failure(&self) {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let delay = backoff_delay(
            failures,
            self.settings.backoff_base,
            self.settings.backoff_max,
            fastrand::f64(),
        );
        let until = self
            .now()
            .saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        self.failing_until
            .store(until.saturating_add(1), Ordering::Release);
    }

    /// How long the background task waits before the next refresh: the interval when
    /// healthy, the backoff left when the source is failing.
    fn next_refresh_delay(&self, interval: Duration) -> Duration {
        let until = self.failing_until.load(Ordering::Acquire);
        if until == 0 {
            return interval;
        }
        Duration::from_nanos((until - 1).saturating_sub(self.now())).min(interval)
    }

    async fn load_keys(
        &self,
        keys: Vec<K>,
        id: u64,
        started: u64,
    ) -> Result<Vec<Option<Arc<V>>>, CacheError> {
        self.counters.loads.incr();
        let read = if let [key] = keys.as_slice() {
            tokio::time::timeout(self.settings.load_timeout, self.source.load(key))
                .await
                .map(|r| r.map(|value| vec![(key.clone(), value)]))
        } else {
            tokio::time::timeout(self.settings.load_timeout, self.source.load_many(&keys)).await
        };
        self.counters
            .load_nanos
            .add(self.now().saturating_sub(started));
        let outcome = match read {
            Ok(Ok(pairs)) => Ok(pairs),
            Ok(Err(source)) => Err(CacheError::Source {
                cache: Arc::clone(&self.name),
                source,
            }),
            Err(_) => Err(CacheError::Timeout {
                cache: Arc::clone(&self.name),
                timeout: self.settings.load_timeout,
            }),
        };
        let mut coord = self.lock_coord();
        match outcome {
            Ok(pairs) => {
                let by_key: HashMap<K, Option<Arc<V>>> = pairs
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Arc::new)))
                    .collect();
                let mut values = Vec::with_capacity(keys.len());
                for key in keys {
                    let value = by_key.get(&key).cloned().flatten();
                    if coord.inflight.get(&key).is_some_and(|f| f.id == id) {
                        coord.inflight.remove(&key);
                        self.put(key, Slot::new(value.clone(), started));
                    }
                    values.push(value);
                }
                drop(coord);
                self.record_success();
                Ok(values)
            }
            Err(err) => {
                for key in &keys {
                    if coord.inflight.get(key).is_some_and(|f| f.id == id) {
                        coord.inflight.remove(key);
                    }
                }
                drop(coord);
                self.counters.load_failures.incr();
                self.record_failure();
                Err(err)
            }
        }
    }

    /// One refresh: fill when empty, else follow the change feed, else reload and diff.
    async fn refresh(self: Arc<Self>, id: u64) -> Result<(), CacheError> {
        let started = self.now();
        self.lock_coord().watch = Some(Watch::new());
        let outcome = self.refresh_inner(started).await;
        self.lock_coord().watch = None;
        // Recorded before the refresh stops being the one in flight: a miss that no longer
        // finds it already sees the backoff a failure started (and does not `load_all` again).
        match &outcome {
            Ok(()) => {
                self.counters.refreshes.incr();
                self.last_refresh.store(started + 1, Ordering::Release);
                self.record_success();
            }
            Err(_) => {
                self.counters.refresh_failures.incr();
                self.record_failure();
            }
        }
        let mut coord = self.lock_coord();
        if coord
            .refresh
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            coord.refresh = None;
        }
        drop(coord);
        outcome
    }

    async fn refresh_inner(&self, started: u64) -> Result<(), CacheError> {
        let filled = self.filled.load(Ordering::Acquire);
        let cursor = *self
            .cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (true, Some(mut cursor)) = (filled, cursor) {
            loop {
                let changes = self.timed(self.source.changes_since(cursor)).await?;
                let Some(changes) = changes else { break };
                let more = changes.more;
                cursor = changes.cursor;
                if !self.apply_changes(changes, started) {
                    // Invalidated meanwhile: entirely (the next miss refills) or by a
                    // predicate (the cursor stays, so the next refresh reads these again).
                    return Ok(());
                }
                self.set_cursor(Some(cursor));
                if !more {
                    self.vouch(started);
                    return Ok(());
                }
            }
        }
        let snapshot = self.timed(self.source.load_all()).await?;
        let cursor = snapshot.cursor;
        if self.apply_snapshot(snapshot, started, !filled) {
            self.set_cursor(cursor);
            self.filled.store(true, Ordering::Release);
            self.vouch(started);
        }
        Ok(())
    }

    async fn timed<T>(
        &self,
        read: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.settings.load_timeout, read).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(CacheError::Source {
                cache: Arc::clone(&self.name),
                source,
            }),
            Err(_) => Err(CacheError::Timeout {
                cache: Arc::clone(&self.name),
                timeout: self.settings.load_timeout,
            }),
        }
    }

    fn set_cursor(&self, cursor: Option<u64>) {
        *self
            .cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cursor;
    }

    /// Every entry is current as of `started`.
    fn vouch(&self, started: u64) {
        self.verified_at.fetch_max(started + 1, Ordering::AcqRel);
    }

    /// Writes one refreshed value for `key` under the coord lock, following the rules of the
    /// module docs. Returns whether the key was written.
    fn apply_one(
        &self,
        coord: &mut Coord<K, V>,
        key: K,
        value: Option<V>,
        started: u64,
        fill: bool,
    ) -> bool {
        if coord.watch.as_ref().is_some_and(|w| w.keys.contains(&key)) {
            return false;
        }
        // A load that started after this refresh reads newer data: leave it (and the key)
        // alone. An older one is superseded: it must not write its result afterwards.
        let was_loading = match coord.inflight.get(&key) {
            Some(flight) if flight.started > started => return false,
            Some(_) => coord.inflight.remove(&key).is_some(),
            None => false,
        };
        match (self.map.peek(&key), value) {
            (Some(slot), _) if slot.loaded_at() > started => false,
            (Some(slot), Some(value)) if slot.value.as_deref() == Some(&value) => false,
            (Some(_), value) => {
                self.insert(key, value, started);
                true
            }
            (None, Some(value))
                if was_loading || (fill && self.map.weight() < self.settings.capacity) =>
            {
                self.insert(key, Some(value), started);
                true
            }
            (None, _) => false,
        }
    }

    fn insert(&self, key: K, value: Option<V>, started: u64) {
        match value {
            Some(value) => self.put(key, Slot::new(Some(Arc::new(value)), started)),
            None => {
                self.map.remove(&key);
            }
        }
    }

    /// Applies a full read: update the entries held, drop those the source no longer has,
    /// and on a `fill` (the cache was empty) insert everything that fits. Returns `false` if
    /// an invalidation stopped the refresh meanwhile (nothing more applied).
    fn apply_snapshot(&self, snapshot: Snapshot<K, V>, started: u64, fill: bool) -> bool {
        let mut seen: HashSet<K> = HashSet::new();
        let entries = snapshot.entries.into_iter().map(|(key, value)| {
            seen.insert(key.clone());
            (key, Some(value))
        });
        if !self.apply_all(entries, started, fill) {
            return false;
        }
        // Entries the source no longer has (also on a fill: keys loaded one by one before it
        // started may have been deleted since).
        let gone: Vec<K> = self
            .map
            .iter()
            .filter(|(key, slot)| {
                slot.value.is_some() && slot.loaded_at() <= started && !seen.contains(key)
            })
            .map(|(key, _)| key)
            .collect();
        self.apply_all(gone.into_iter().map(|key| (key, None)), started, false)
    }

    /// Applies a change batch; `false` if an invalidation stopped the refresh meanwhile.
    fn apply_changes(&self, changes: ChangeSet<K, V>, started: u64) -> bool {
        let ChangeSet {
            upserts, deletions, ..
        } = changes;
        let upserts = upserts.into_iter().map(|(key, value)| (key, Some(value)));
        let deletions = deletions.into_iter().map(|key| (key, None));
        self.apply_all(upserts.chain(deletions), started, false)
    }

    /// Applies refreshed values (`None`: the key is gone) in steps of [`APPLY_CHUNK`], each
    /// under the coord lock; `false` as soon as an invalidation stopped the refresh (see
    /// [`Watch`]).
    fn apply_all(
        &self,
        items: impl Iterator<Item = (K, Option<V>)>,
        started: u64,
        fill: bool,
    ) -> bool {
        let mut items = items.peekable();
        while items.peek().is_some() {
            let mut coord = self.lock_coord();
            if coord.watch.as_ref().is_some_and(Watch::stopped) {
                return false;
            }
            for (key, value) in items.by_ref().take(APPLY_CHUNK) {
                self.apply_one(&mut coord, key, value, started, fill);
            }
        }
        true
    }
}

/// The wait before retry number `failures` (1-based): `base · 2^(failures-1)` capped at
/// `max`, with "equal jitter" — half of it fixed, half random (`unit` in `[0, 1)`) — so that
/// instances recovering together do not retry in lockstep, yet never retry at once.
#[must_use]
pub fn backoff_delay(failures: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exponent).min(max);
    let half = ceiling / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_result_fits_in_two_registers() {
        // The hit path relies on it (see `Slot::loaded`).
        assert_eq!(std::mem::size_of::<Option<Slot<String>>>(), 16);
        let slot = Slot::new(Some(Arc::new(1)), 41);
        assert_eq!(slot.loaded_at(), 41);
        assert_eq!(Slot::<u8>::new(None, u64::MAX).loaded_at(), u64::MAX - 1);
    }

    #[test]
    fn a_resolved_get_hands_its_value_over_once() {
        let mut get: Get<'_, u8> = Get(GetState::Hit(Some(Arc::new(7))));
        assert_eq!(format!("{get:?}"), "Get(\"hit\")");
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(&mut get).poll(&mut cx) {
            std::task::Poll::Ready(Ok(Some(value))) => assert_eq!(*value, 7),
            other => panic!("expected the hit, got {other:?}"),
        }
        assert_eq!(format!("{get:?}"), "Get(\"done\")");
    }

    #[test]
    fn backoff_grows_exponentially_with_bounded_jitter() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff_delay(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff_delay(1, base, max, 1.0), Duration::from_secs(1));
        assert_eq!(backoff_delay(2, base, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff_delay(4, base, max, 0.0), Duration::from_secs(4));
        assert_eq!(backoff_delay(4, base, max, 1.0), Duration::from_secs(8));
        assert_eq!(backoff_delay(20, base, max, 1.0), max, "capped");
        assert_eq!(
            backoff_delay(u32::MAX, base, max, 0.5),
            Duration::from_secs(45)
        );
        for unit in [0.0, 0.3, 0.99] {
            let d = backoff_delay(3, base, max, unit);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
    }
}
