//! The response cache: completions stored under their canonical key, in memory (bounded, a
//! [`RefreshingCache`] from `groundwork-cache`) and in Redis when configured.
//!
//! - **Reads** look in memory first; a miss there asks Redis with one `GET`, made by the
//!   request's own task (no load task to hand over to and back: a miss pays one Redis round
//!   trip and nothing else), under the Redis client's operation timeout (50 ms by default)
//!   and breaker. A Redis failure or timeout is a miss, never an error. Identical misses at
//!   the same moment each make their `GET`; the upstream call they lead to is the one thing
//!   worth sharing, and the [`Gateway`](crate::gateway::Gateway) shares it. A miss leaves
//!   nothing in memory (no "known absent" entry: a distinct request per miss would fill the
//!   memory with them).
//! - **Writes** go to memory at once and to Redis through a bounded queue drained by a
//!   background task: the request never waits on Redis, and when the queue is full the Redis
//!   copy is dropped (counted), not the response.
//! - Every entry carries its own expiry (the request may ask for a TTL), checked on read.
//! - **Flushes** ([`ResponseCache::flush`]) reach every level and every instance sharing the
//!   Redis: this instance's memory, the Redis entries (all of them, or one namespace's), and,
//!   through a Redis pub/sub announcement, the memory of every other instance. Redis failing
//!   never fails a flush: the memory is flushed all the same and the report says what Redis
//!   did not do.
//!
//! # Redis layout
//!
//! An entry lives at `{prefix}{namespace}:{key}`: the [prefix](ResponseCacheOptions::redis_prefix)
//! (`groundwork:llm:` by default), the namespace (the tenant) as the lowercase hex of its
//! UTF-8 bytes, and the [`CacheKey`] (`v1:` and 64 hex digits), e.g.
//! `groundwork:llm:7465616d2d61:v1:3f0c…` for the tenant `team-a`. The namespace is in the
//! key, not only in the stored value, so that a namespace flush is one `SCAN MATCH
//! {prefix}{namespace}:*` plus `UNLINK`s, without reading (let alone decoding) a single
//! value; hex keeps the component free of `:` and of glob characters whatever the tenant's
//! name, so `team` never matches `team:x`'s entries. Entries written by earlier versions
//! (`{prefix}{key}`) are never read again; they expire by their TTL or go with a full flush.
//!
//! Flushes are announced on the channel `{prefix}flush` as a JSON object
//! `{"instance": "<id>", "namespace": "<tenant>" | null}`; an instance ignores its own
//! announcements. Messages published while an instance's subscription is down are lost
//! (Redis pub/sub keeps nothing), so after the subscription is made again the instance
//! flushes its whole memory (counted as [`ResponseCacheStats::resyncs`]).

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use groundwork_cache::{RefreshingCache, Snapshot, Source};
use groundwork_clients::redis::{RedisClient, RedisError, RedisSubscription, glob_escape};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::key::CacheKey;

/// Seconds since the Unix epoch, now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A stored completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedCompletion {
    /// Who stored it (the tenant, e.g. the API key's name): what a namespace flush matches.
    pub namespace: Arc<str>,
    /// The non-streaming response body (a `chat.completion` JSON object); assembled from the
    /// chunks when the completion was recorded from a stream.
    pub completion: Bytes,
    /// The `data:` payloads of the stream as the upstream sent them, when recorded from a
    /// stream (replayed as they were, chunk by chunk); `None` when stored from a
    /// non-streaming answer (a stream is then synthesized from `completion`).
    pub chunks: Option<Arc<[Bytes]>>,
    /// When it expires, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl CachedCompletion {
    /// Whether it has expired at `now` (Unix seconds).
    #[must_use]
    pub fn expired_at(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// Bytes held (for the memory bound).
    #[must_use]
    pub fn weight(&self) -> u64 {
        let chunks: usize = self
            .chunks
            .as_deref()
            .map_or(0, |c| c.iter().map(Bytes::len).sum());
        (self.completion.len() + chunks + self.namespace.len() + 64) as u64
    }

    /// The Redis encoding: a versioned, length-prefixed binary record (completions are
    /// already JSON; re-encoding them as JSON strings would copy and escape them).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let chunks = self.chunks.as_deref().unwrap_or(&[]);
        let mut out = Vec::with_capacity(self.weight() as usize + 4 * chunks.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        put_part(&mut out, self.namespace.as_bytes());
        put_part(&mut out, &self.completion);
        match &self.chunks {
            None => out.push(0),
            Some(chunks) => {
                out.push(1);
                out.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
                for chunk in chunks.iter() {
                    put_part(&mut out, chunk);
                }
            }
        }
        out
    }

    /// Decodes [`CachedCompletion::encode`]'s output; `None` for anything else (an entry
    /// written by another version is a miss, not an error).
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes.strip_prefix(MAGIC)?;
        let expires_at = u64::from_be_bytes(take(&mut rest, 8)?.try_into().ok()?);
        let namespace = std::str::from_utf8(take_part(&mut rest)?).ok()?;
        let completion = Bytes::copy_from_slice(take_part(&mut rest)?);
        let chunks = match take(&mut rest, 1)?[0] {
            0 => None,
            1 => {
                let count = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
                let mut chunks = Vec::with_capacity(count.min(65_536) as usize);
                for _ in 0..count {
                    chunks.push(Bytes::copy_from_slice(take_part(&mut rest)?));
                }
                Some(Arc::from(chunks))
            }
            _ => return None,
        };
        rest.is_empty().then(|| Self {
            namespace: Arc::from(namespace),
            completion,
            chunks,
            expires_at,
        })
    }
}

const MAGIC: &[u8] = b"GWLLM1";

fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    out.extend_from_slice(&(part.len() as u32).to_be_bytes());
    out.extend_from_slice(part);
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rest.len() < n {
        return None;
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Some(head)
}

fn take_part<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(take(rest, 4)?.try_into().ok()?) as usize;
    take(rest, len)
}

/// Where a [`ResponseCache::lookup`] found its completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheLevel {
    /// This instance's memory.
    Memory,
    /// Redis (the completion is kept in memory from then on).
    Redis,
}

impl CacheLevel {
    /// `memory` or `redis`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        }
    }
}

/// Settings of a [`ResponseCache`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ResponseCacheOptions {
    memory_bytes: u64,
    default_ttl: Duration,
    max_ttl: Duration,
    redis_prefix: String,
    redis_queue: usize,
}

impl Default for ResponseCacheOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseCacheOptions {
    /// Defaults: 256 MiB in memory, TTL 24 h (the seeds' LLM cache), at most 30 days, Redis
    /// keys under `groundwork:llm:`, 1,024 Redis writes queued.
    pub fn new() -> Self {
        Self {
            memory_bytes: 256 * 1024 * 1024,
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            redis_prefix: "groundwork:llm:".to_owned(),
            redis_queue: 1024,
        }
    }

    /// Bytes of completions kept in memory (least valuable evicted first).
    pub fn memory_bytes(mut self, bytes: u64) -> Self {
        self.memory_bytes = bytes.max(1);
        self
    }

    /// TTL of an entry whose request asks for none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The longest TTL a request may ask for.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// Prefix of the Redis keys (see the [module documentation](self) for the layout); the
    /// flush announcements go on the channel `{prefix}flush`. Instances sharing a cache must
    /// use the same prefix; other data must not live under it, since a full flush deletes
    /// every key that starts with it. With an empty prefix, flushes leave Redis alone
    /// ([`FlushError::NoPrefix`]): deleting "every key" would empty the database.
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = prefix.into();
        self
    }

    /// Redis writes waiting at most; beyond, new ones are dropped.
    pub fn redis_queue(mut self, len: usize) -> Self {
        self.redis_queue = len.max(1);
        self
    }

    /// The TTL for a request asking for `requested` (the default if none; capped).
    #[must_use]
    pub fn ttl_for(&self, requested: Option<Duration>) -> Duration {
        requested.unwrap_or(self.default_ttl).min(self.max_ttl)
    }
}

/// How many keys one step of a flush's `SCAN` examines, and at most about how many keys one
/// `UNLINK` removes: each round trip stays well under the Redis operation timeout.
const FLUSH_BATCH: u32 = 512;

/// How often the flush listener checks whether its subscription was made again (after
/// which it flushes the whole memory: announcements may have been missed meanwhile).
const RESUBSCRIBE_CHECK: Duration = Duration::from_millis(100);

/// Counters of a [`ResponseCache`].
#[derive(Debug, Default)]
struct Counters {
    hits_memory: AtomicU64,
    hits_redis: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    redis_errors: AtomicU64,
    redis_writes: AtomicU64,
    redis_writes_dropped: AtomicU64,
    expired: AtomicU64,
    flushes_received: AtomicU64,
    resyncs: AtomicU64,
    listening: AtomicBool,
}

/// Statistics of a [`ResponseCache`] (`GET /api/v1/llm-cache`).
#[derive(Debug, Clone, Serialize)]
pub struct ResponseCacheStats {
    /// Answers found in memory.
    pub hits_memory: u64,
    /// Answers found in Redis (then kept in memory).
    pub hits_redis: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Completions stored.
    pub stores: u64,
    /// Entries in memory.
    pub entries: u64,
    /// Redis reads that failed or timed out (each one a miss, never an error).
    pub redis_errors: u64,
    /// Completions written to Redis.
    pub redis_writes: u64,
    /// Redis writes dropped because the queue was full, Redis failed, or a flush came
    /// after they were queued (writing them would bring flushed entries back).
    pub redis_writes_dropped: u64,
    /// Entries found expired (a miss).
    pub expired: u64,
    /// Flushes announced by other instances and applied to this instance's memory.
    pub flushes_received: u64,
    /// Times the whole memory was flushed because the subscription to flush announcements
    /// was made again after it was lost (announcements sent meanwhile were missed).
    pub resyncs: u64,
    /// Whether this instance receives other instances' flush announcements now (false
    /// without Redis, before the subscription is first made, and while it is made again).
    pub listening: bool,
    /// Whether Redis is configured.
    pub redis: bool,
}

impl ResponseCacheStats {
    /// Exports the figures as `groundwork_llm_cache_*` gauges.
    pub fn publish(&self) {
        for (name, value) in [
            ("groundwork_llm_cache_hits_memory", self.hits_memory),
            ("groundwork_llm_cache_hits_redis", self.hits_redis),
            ("groundwork_llm_cache_misses", self.misses),
            ("groundwork_llm_cache_stores", self.stores),
            ("groundwork_llm_cache_entries", self.entries),
            ("groundwork_llm_cache_redis_errors", self.redis_errors),
            ("groundwork_llm_cache_redis_writes", self.redis_writes),
            (
                "groundwork_llm_cache_redis_writes_dropped",
                self.redis_writes_dropped,
            ),
            ("groundwork_llm_cache_expired", self.expired),
            (
                "groundwork_llm_cache_flushes_received",
                self.flushes_received,
            ),
            ("groundwork_llm_cache_resyncs", self.resyncs),
            ("groundwork_llm_cache_listening", u64::from(self.listening)),
        ] {
            metrics::gauge!(name).set(value as f64);
        }
    }
}

/// What [`ResponseCache::flush`] did.
#[derive(Debug)]
#[non_exhaustive]
pub struct FlushReport {
    /// Entries removed from this instance's memory.
    pub flushed: usize,
    /// Entries deleted from Redis (before a failure, if one stopped the deletion); `None`
    /// without Redis.
    pub redis_deleted: Option<u64>,
    /// How many subscribers received the announcement, this instance's included (Redis's
    /// answer to the `PUBLISH`); `None` without Redis, or when it could not be announced.
    pub announced_to: Option<u64>,
    /// What Redis did not do, in order: delete the entries, announce the flush. Empty when
    /// everything was done (and without Redis).
    pub redis_errors: Vec<FlushError>,
}

/// Why part of a flush that concerns Redis was not done. The memory of the instance that
/// flushes is flushed whatever happens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// Deleting the Redis entries failed: some (or all) remain until their TTL, and other
    /// instances may read them back.
    #[error("deleting the Redis entries failed")]
    Delete {
        /// The Redis failure.
        #[source]
        source: RedisError,
    },
    /// Announcing the flush failed: other instances keep serving their in-memory copies
    /// (until they expire, or until their subscription is made again).
    #[error("announcing the flush to other instances failed")]
    Announce {
        /// The Redis failure.
        #[source]
        source: RedisError,
    },
    /// The Redis key prefix is empty, so the Redis entries cannot be told from other keys:
    /// nothing was deleted (see [`ResponseCacheOptions::redis_prefix`]).
    #[error("no Redis key prefix is configured: the Redis entries were left alone")]
    NoPrefix,
    /// The runtime shut down during the flush: the Redis part may be incomplete.
    #[error("the flush was interrupted")]
    Interrupted,
}

/// The memory level's key: the namespace names the Redis entry (see the
/// [module documentation](self)), so it is part of the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntryKey {
    namespace: Arc<str>,
    key: CacheKey,
}

/// The Redis key component of `namespace`: the lowercase hex of its UTF-8 bytes (never a
/// `:` nor a glob character).
fn namespace_component(namespace: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(namespace.len() * 2);
    for byte in namespace.bytes() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The Redis key of `key` stored for `namespace`.
fn redis_key(prefix: &str, namespace: &str, key: &CacheKey) -> String {
    format!("{prefix}{}:{key}", namespace_component(namespace))
}

/// The `SCAN MATCH` pattern of the Redis entries of `namespace`, of every entry when `None`.
fn redis_pattern(prefix: &str, namespace: Option<&str>) -> String {
    let mut pattern = glob_escape(prefix);
    if let Some(namespace) = namespace {
        pattern.push_str(&namespace_component(namespace));
        pattern.push(':');
    }
    pattern.push('*');
    pattern
}

/// A flush announcement, as published on `{prefix}flush`.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The instance that flushed (it ignores its own announcements).
    instance: String,
    /// The namespace flushed; `None` for all.
    namespace: Option<String>,
}

/// A random identifier for one cache instance.
fn instance_id() -> String {
    // `RandomState` is seeded from the OS once per thread and moves on for every new one.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// Removes from `memory` every entry of `namespace` (all when `None`); returns how many.
fn flush_memory(
    memory: &RefreshingCache<EntryKey, CachedCompletion>,
    namespace: Option<&str>,
) -> usize {
    match namespace {
        Some(namespace) => memory.invalidate_if(|key, _| &*key.namespace == namespace),
        None => {
            // Counts what it removes; the memory is never loaded (Redis reads made during a
            // flush are kept out by the fence, see `ResponseCache::keep_read`).
            memory.invalidate_if(|_, _| true)
        }
    }
}

/// The memory level's source: none. The memory is filled by [`ResponseCache::put`] and by
/// the Redis reads of [`ResponseCache::lookup`], never loaded.
struct NoSource;

impl Source<EntryKey, CachedCompletion> for NoSource {
    type Error = std::convert::Infallible;

    async fn load(&self, _: &EntryKey) -> Result<Option<CachedCompletion>, Self::Error> {
        Ok(None)
    }

    async fn load_all(&self) -> Result<Snapshot<EntryKey, CachedCompletion>, Self::Error> {
        Ok(Snapshot::new(Vec::new()))
    }
}

/// A Redis write waiting in the queue.
struct RedisWrite {
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    /// The [`Fence::epoch`] when it was queued.
    epoch: u64,
}

/// What keeps a flush from being undone by a Redis write queued before it, or by a Redis
/// read that began before it.
#[derive(Debug, Default)]
struct Fence {
    /// Raised by every flush, made here or announced by another instance: a queued write
    /// from an earlier epoch is not made, and a Redis read begun in an earlier epoch is
    /// not kept in memory.
    epoch: AtomicU64,
    /// Held by the writer while it checks the epoch and writes, so that a flush can wait
    /// for the write in flight (at most one operation timeout) before it deletes entries.
    gate: tokio::sync::Mutex<()>,
}

/// The Redis side of a [`ResponseCache`], shared by its clones.
struct RedisSide {
    client: RedisClient,
    writes: mpsc::Sender<RedisWrite>,
    fence: Arc<Fence>,
    /// The announcement channel, `{prefix}flush`.
    channel: String,
    /// This instance's identifier in announcements.
    instance: String,
    /// The task following other instances' announcements.
    listener: AbortHandle,
}

impl Drop for RedisSide {
    fn drop(&mut self) {
        // Its subscription goes with it.
        self.listener.abort();
    }
}

/// The two-level response cache. Cheap to clone.
#[derive(Clone)]
pub struct ResponseCache {
    memory: RefreshingCache<EntryKey, CachedCompletion>,
    redis: Option<Arc<RedisSide>>,
    options: ResponseCacheOptions,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A cache with `options`, over `redis` when given. Needs a Tokio runtime: with Redis,
    /// the writer and the listener of flush announcements run as tasks (they stop when the
    /// last clone of the cache is dropped).
    #[must_use]
    pub fn new(options: ResponseCacheOptions, redis: Option<RedisClient>) -> Self {
        let counters = Arc::new(Counters::default());
        let memory = RefreshingCache::builder("llm_responses")
            .ttl(options.max_ttl)
            .refresh_interval(None)
            // Never past its TTL; never loaded (entries come from `put` and Redis reads).
            .max_staleness(Duration::ZERO)
            .fill_on_miss(false)
            .capacity(options.memory_bytes)
            .weigher(|_, entry: &CachedCompletion| entry.weight())
            .build(NoSource);
        let redis = redis.map(|client| {
            let fence = Arc::new(Fence::default());
            let (writes, queue) = mpsc::channel(options.redis_queue);
            tokio::spawn(write_to_redis(
                client.clone(),
                queue,
                Arc::clone(&counters),
                Arc::clone(&fence),
            ));
            let channel = format!("{}flush", options.redis_prefix);
            let instance = instance_id();
            let listener = tokio::spawn(follow_flushes(
                client.subscribe(channel.clone()),
                memory.clone(),
                instance.clone(),
                Arc::clone(&fence),
                Arc::clone(&counters),
            ))
            .abort_handle();
            Arc::new(RedisSide {
                client,
                writes,
                fence,
                channel,
                instance,
                listener,
            })
        });
        Self {
            memory,
            redis,
            options,
            counters,
        }
    }

    /// The settings.
    pub fn options(&self) -> &ResponseCacheOptions {
        &self.options
    }

    /// The completion stored under `key` for `namespace` (the tenant that stored it), if
    /// any and not expired: from memory, else from Redis (kept in memory then). Never fails:
    /// a Redis failure is a miss.
    pub async fn get(&self, namespace: &str, key: &CacheKey) -> Option<Arc<CachedCompletion>> {
        self.lookup(namespace, key).await.map(|(entry, _)| entry)
    }

    /// As [`get`](Self::get), with the level the completion was found in.
    pub async fn lookup(
        &self,
        namespace: &str,
        key: &CacheKey,
    ) -> Option<(Arc<CachedCompletion>, CacheLevel)> {
        let key = EntryKey {
            namespace: Arc::from(namespace),
            key: key.clone(),
        };
        let found = match self.memory.peek(&key) {
            Some(entry) => {
                self.counters.hits_memory.fetch_add(1, Ordering::Relaxed);
                Some((entry, CacheLevel::Memory))
            }
            None => self.read_redis(&key).await.map(|entry| {
                self.counters.hits_redis.fetch_add(1, Ordering::Relaxed);
                (entry, CacheLevel::Redis)
            }),
        };
        match found {
            Some((entry, _)) if entry.expired_at(unix_now()) => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.memory.invalidate(&key);
                None
            }
            Some(found) => Some(found),
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The completion stored in Redis under `key`, if any (expired or not: the caller
    /// checks), kept in memory from then on unless a flush started meanwhile. `None` without
    /// Redis, and when Redis fails or times out (counted).
    async fn read_redis(&self, key: &EntryKey) -> Option<Arc<CachedCompletion>> {
        let redis = self.redis.as_ref()?;
        let fence = &redis.fence.epoch;
        let epoch = fence.load(Ordering::SeqCst);
        let bytes = match redis
            .client
            .get(&redis_key(
                &self.options.redis_prefix,
                &key.namespace,
                &key.key,
            ))
            .await
        {
            Ok(found) => found?,
            Err(err) => {
                // A miss, not an error: Redis is optional.
                self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %err, "LLM cache: Redis read failed");
                return None;
            }
        };
        // Another version's record is a miss.
        let entry = CachedCompletion::decode(&bytes)?;
        self.keep_read(redis, key, &entry, epoch);
        Some(Arc::new(entry))
    }

    /// Keeps in memory what a Redis read begun in fence `epoch` found, unless a flush
    /// started since. A flush raises the epoch before it empties the memory (and again after
    /// it deleted the Redis entries), so what was read before a flush does not outlive it:
    /// it is kept only if no flush started since the read began, and taken back if one
    /// started while it was being kept (that flush may have emptied the memory before the
    /// insert).
    fn keep_read(&self, redis: &RedisSide, key: &EntryKey, entry: &CachedCompletion, epoch: u64) {
        let fence = &redis.fence.epoch;
        if fence.load(Ordering::SeqCst) == epoch {
            self.memory.insert(key.clone(), entry.clone());
            if fence.load(Ordering::SeqCst) != epoch {
                self.memory.invalidate(key);
            }
        }
    }

    /// Stores `completion` under `key` for `namespace` (the tenant) for `ttl`: in memory
    /// now, in Redis from the background (dropped, and counted, if the queue is full).
    pub fn put(
        &self,
        key: CacheKey,
        namespace: &str,
        completion: Bytes,
        chunks: Option<Arc<[Bytes]>>,
        ttl: Duration,
    ) {
        let namespace: Arc<str> = Arc::from(namespace);
        let entry = CachedCompletion {
            namespace: Arc::clone(&namespace),
            completion,
            chunks,
            expires_at: unix_now().saturating_add(ttl.as_secs().max(1)),
        };
        self.counters.stores.fetch_add(1, Ordering::Relaxed);
        if let Some(redis) = &self.redis {
            let write = RedisWrite {
                key: redis_key(&self.options.redis_prefix, &namespace, &key),
                value: entry.encode(),
                ttl,
                epoch: redis.fence.epoch.load(Ordering::Acquire),
            };
            if redis.writes.try_send(write).is_err() {
                self.counters
                    .redis_writes_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.memory.insert(EntryKey { namespace, key }, entry);
    }

    /// Flushes the entries of `namespace` (every entry when `None`) everywhere:
    ///
    /// 1. from this instance's memory (at once);
    /// 2. from Redis: every key of the namespace (or under the prefix), found by an
    ///    incremental `SCAN` and removed by `UNLINK`s, each round trip under the Redis
    ///    client's operation timeout and breaker; Redis writes still queued here are not
    ///    made;
    /// 3. from this instance's memory again (entries read back from Redis meanwhile);
    /// 4. from every other instance's memory, by an announcement on `{prefix}flush` (see
    ///    the [module documentation](self)).
    ///
    /// Never fails: what Redis did not do is in [`FlushReport::redis_errors`]. The work runs
    /// in a task of its own, so a caller that stops waiting does not leave it half done.
    ///
    /// An answer being stored by another instance at the very moment of the flush (queued
    /// there, written to Redis after the deletion) may survive it.
    pub async fn flush(&self, namespace: Option<&str>) -> FlushReport {
        if self.redis.is_none() {
            return FlushReport {
                flushed: flush_memory(&self.memory, namespace),
                redis_deleted: None,
                announced_to: None,
                redis_errors: Vec::new(),
            };
        }
        let task = tokio::spawn({
            let cache = self.clone();
            let namespace = namespace.map(str::to_owned);
            async move { cache.flush_everywhere(namespace.as_deref()).await }
        });
        match task.await {
            Ok(report) => report,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(_) => FlushReport {
                flushed: flush_memory(&self.memory, namespace),
                redis_deleted: None,
                announced_to: None,
                redis_errors: vec![FlushError::Interrupted],
            },
        }
    }

    async fn flush_everywhere(&self, namespace: Option<&str>) -> FlushReport {
        let mut report = FlushReport {
            flushed: 0,
            redis_deleted: None,
            announced_to: None,
            redis_errors: Vec::new(),
        };
        let Some(redis) = &self.redis else {
            report.flushed = flush_memory(&self.memory, namespace);
            return report;
        };
        // Writes queued before now would bring flushed entries back: they are not made.
        redis.fence.epoch.fetch_add(1, Ordering::SeqCst);
        report.flushed = flush_memory(&self.memory, namespace);
        // The write in flight, if any, lands before the deletion starts.
        drop(redis.fence.gate.lock().await);
        let (deleted, error) = self.delete_from_redis(&redis.client, namespace).await;
        report.redis_deleted = Some(deleted);
        report.redis_errors.extend(error);
        // Redis reads that began before the deletion may still bring entries back: raised
        // again, the epoch keeps them out of memory from now on (see `read_redis`).
        redis.fence.epoch.fetch_add(1, Ordering::SeqCst);
        report.flushed += flush_memory(&self.memory, namespace);
        // Two strings: serializing cannot fail. (If it did, the empty message would read
        // as unreadable, which flushes everything: still safe.)
        let announcement = serde_json::to_vec(&Announcement {
            instance: redis.instance.clone(),
            namespace: namespace.map(str::to_owned),
        })
        .unwrap_or_default();
        match redis.client.publish(&redis.channel, &announcement).await {
            Ok(receivers) => report.announced_to = Some(receivers),
            Err(source) => report.redis_errors.push(FlushError::Announce { source }),
        }
        report
    }

    /// Deletes the Redis entries of `namespace` (all when `None`); returns how many, and
    /// the failure that stopped the deletion, if one did.
    async fn delete_from_redis(
        &self,
        redis: &RedisClient,
        namespace: Option<&str>,
    ) -> (u64, Option<FlushError>) {
        let prefix = &self.options.redis_prefix;
        if prefix.is_empty() {
            return (0, Some(FlushError::NoPrefix));
        }
        let pattern = redis_pattern(prefix, namespace);
        let mut deleted = 0;
        let mut cursor = 0;
        loop {
            let page = match redis.scan_match(cursor, &pattern, FLUSH_BATCH).await {
                Ok(page) => page,
                Err(source) => return (deleted, Some(FlushError::Delete { source })),
            };
            match redis.unlink(&page.keys).await {
                Ok(removed) => deleted += removed,
                Err(source) => return (deleted, Some(FlushError::Delete { source })),
            }
            if page.cursor == 0 {
                return (deleted, None);
            }
            cursor = page.cursor;
        }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> ResponseCacheStats {
        let c = &self.counters;
        ResponseCacheStats {
            hits_memory: c.hits_memory.load(Ordering::Relaxed),
            hits_redis: c.hits_redis.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            stores: c.stores.load(Ordering::Relaxed),
            entries: self.memory.stats().entries,
            redis_errors: c.redis_errors.load(Ordering::Relaxed),
            redis_writes: c.redis_writes.load(Ordering::Relaxed),
            redis_writes_dropped: c.redis_writes_dropped.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            flushes_received: c.flushes_received.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            listening: c.listening.load(Ordering::Acquire),
            redis: self.redis.is_some(),
        }
    }
}

async fn write_to_redis(
    redis: RedisClient,
    mut writes: mpsc::Receiver<RedisWrite>,
    counters: Arc<Counters>,
    fence: Arc<Fence>,
) {
    while let Some(write) = writes.recv().await {
        let _gate = fence.gate.lock().await;
        if write.epoch != fence.epoch.load(Ordering::Acquire) {
            // Queued before a flush, which removed the entry from memory: writing it now
            // would bring it back through Redis.
            counters
                .redis_writes_dropped
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match redis.set_ex(&write.key, &write.value, write.ttl).await {
            Ok(()) => {
                counters.redis_writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                counters
                    .redis_writes_dropped
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %err, "LLM cache: Redis write failed");
            }
        }
    }
}

/// Applies other instances' flush announcements to `memory`, and flushes it whole when the
/// subscription is made again after it was lost; until the subscription's task ends.
async fn follow_flushes(
    mut subscription: RedisSubscription,
    memory: RefreshingCache<EntryKey, CachedCompletion>,
    instance: String,
    fence: Arc<Fence>,
    counters: Arc<Counters>,
) {
    let mut seen = 0;
    loop {
        let message = tokio::select! {
            message = subscription.next() => match message {
                Some(message) => Some(message),
                None => break,
            },
            () = tokio::time::sleep(RESUBSCRIBE_CHECK) => None,
        };
        let generation = subscription.generation();
        if generation != seen {
            if generation > 1 {
                // Made again after it was lost: announcements sent meanwhile were missed.
                fence.epoch.fetch_add(1, Ordering::SeqCst);
                flush_memory(&memory, None);
                counters.resyncs.fetch_add(1, Ordering::Relaxed);
                tracing::info!("LLM cache: flush subscription made again; memory flushed");
            }
            seen = generation;
        }
        counters
            .listening
            .store(subscription.is_active(), Ordering::Release);
        let Some(message) = message else {
            continue;
        };
        let namespace = match serde_json::from_slice::<Announcement>(&message) {
            Ok(announcement) if announcement.instance == instance => continue,
            Ok(announcement) => announcement.namespace,
            Err(err) => {
                // Another version's format, perhaps: flushing everything is the safe reading.
                tracing::warn!(error = %err, "LLM cache: unreadable flush announcement; flushing all");
                None
            }
        };
        fence.epoch.fetch_add(1, Ordering::SeqCst);
        let flushed = flush_memory(&memory, namespace.as_deref());
        counters.flushes_received.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            flushed,
            ?namespace,
            "LLM cache: flush announced by another instance"
        );
    }
    counters.listening.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_redis_record_round_trips_and_rejects_anything_else() {
        let entry = CachedCompletion {
            namespace: Arc::from("tenant-a"),
            completion: Bytes::from_static(br#"{"object":"chat.completion"}"#),
            chunks: Some(Arc::from(vec![
                Bytes::from_static(br#"{"a":1}"#),
                Bytes::from_static(br#"{"b":2}"#),
            ])),
            expires_at: 1_900_000_000,
        };
        let encoded = entry.encode();
        assert_eq!(CachedCompletion::decode(&encoded), Some(entry.clone()));
        let plain = CachedCompletion {
            chunks: None,
            ..entry
        };
        assert_eq!(CachedCompletion::decode(&plain.encode()), Some(plain));
        assert_eq!(CachedCompletion::decode(b"not ours"), None);
        assert_eq!(
            CachedCompletion::decode(&encoded[..encoded.len() - 1]),
            None
        );
        let mut trailing = encoded;
        trailing.push(0);
        assert_eq!(CachedCompletion::decode(&trailing), None);
    }

    #[test]
    fn redis_keys_hold_the_namespace_as_hex() {
        let key = crate::key::cache_key("team-a", &serde_json::json!({"model": "m"})).unwrap();
        assert_eq!(namespace_component("team-a"), "7465616d2d61");
        assert_eq!(namespace_component(""), "");
        assert_eq!(namespace_component("é:*"), "c3a93a2a");
        assert_eq!(
            redis_key("groundwork:llm:", "team-a", &key),
            format!("groundwork:llm:7465616d2d61:{key}")
        );
    }

    #[test]
    fn flush_patterns_escape_the_prefix_and_stop_at_the_namespace() {
        assert_eq!(redis_pattern("groundwork:llm:", None), "groundwork:llm:*");
        assert_eq!(
            redis_pattern("groundwork:llm:", Some("team")),
            "groundwork:llm:7465616d:*"
        );
        assert_eq!(redis_pattern("a*[b]?:", None), r"a\*\[b\]\?:*");
        // `team`'s pattern cannot reach `team:x` (hex has no `:`) nor `teams`.
        let team = redis_pattern("p:", Some("team"));
        let key = crate::key::cache_key("t", &serde_json::json!({})).unwrap();
        for other in ["team:x", "teams", "tea"] {
            let other_key = redis_key("p:", other, &key);
            assert!(
                !other_key.starts_with(team.trim_end_matches('*')),
                "{team} vs {other_key}"
            );
        }
        assert!(redis_key("p:", "team", &key).starts_with(team.trim_end_matches('*')));
    }

    #[test]
    fn announcements_round_trip_and_instances_differ() {
        let announcement = Announcement {
            instance: instance_id(),
            namespace: Some("team-a".to_owned()),
        };
        let bytes = serde_json::to_vec(&announcement).unwrap();
        let read: Announcement = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(read.instance, announcement.instance);
        assert_eq!(read.namespace.as_deref(), Some("team-a"));
        let all: Announcement =
            serde_json::from_slice(br#"{"instance":"x","namespace":null}"#).unwrap();
        assert_eq!(all.namespace, None);
        assert_ne!(instance_id(), instance_id());
        assert_eq!(instance_id().len(), 16);
    }

    #[tokio::test]
    async fn misses_leave_nothing_in_memory() {
        let cache = ResponseCache::new(ResponseCacheOptions::new(), None);
        for n in 0..1000 {
            let key = crate::key::cache_key("t", &serde_json::json!({ "n": n })).unwrap();
            assert!(cache.get("t", &key).await.is_none());
        }
        assert_eq!(cache.stats().misses, 1000);
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(cache.memory.stats().entries, 0);
    }

    #[tokio::test]
    async fn without_redis_a_flush_empties_the_memory_and_reports_nothing_else() {
        let cache = ResponseCache::new(ResponseCacheOptions::new(), None);
        let key = |n: u32| crate::key::cache_key("t", &serde_json::json!({ "n": n })).unwrap();
        let ttl = Duration::from_secs(60);
        cache.put(key(1), "a", Bytes::from_static(b"{}"), None, ttl);
        cache.put(key(2), "a", Bytes::from_static(b"{}"), None, ttl);
        cache.put(key(3), "b", Bytes::from_static(b"{}"), None, ttl);
        // The namespace is part of the lookup.
        assert!(cache.get("a", &key(1)).await.is_some());
        assert!(cache.get("b", &key(1)).await.is_none());

        let report = cache.flush(Some("a")).await;
        assert_eq!(report.flushed, 2);
        assert_eq!(report.redis_deleted, None);
        assert_eq!(report.announced_to, None);
        assert!(report.redis_errors.is_empty());
        assert!(cache.get("a", &key(1)).await.is_none());
        assert!(cache.get("b", &key(3)).await.is_some());

        let report = cache.flush(None).await;
        assert_eq!(report.flushed, 1);
        assert!(cache.get("b", &key(3)).await.is_none());
        assert!(!cache.stats().listening);
    }

    #[tokio::test]
    async fn a_redis_read_begun_before_a_flush_is_not_kept_in_memory() {
        // Nothing listens there: the flush's Redis part fails at once, its memory part not.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = RedisClient::new(groundwork_clients::redis::RedisOptions::new(format!(
            "redis://127.0.0.1:{port}"
        )))
        .unwrap();
        let cache = ResponseCache::new(ResponseCacheOptions::new(), Some(client));
        let redis = Arc::clone(cache.redis.as_ref().unwrap());
        let key = EntryKey {
            namespace: Arc::from("t"),
            key: crate::key::cache_key("t", &serde_json::json!({ "n": 1 })).unwrap(),
        };
        let entry = CachedCompletion {
            namespace: Arc::from("t"),
            completion: Bytes::from_static(b"{}"),
            chunks: None,
            expires_at: unix_now() + 60,
        };

        // A read begins, a flush runs to its end, then the read's answer arrives.
        let begun = redis.fence.epoch.load(Ordering::SeqCst);
        cache.flush(None).await;
        cache.keep_read(&redis, &key, &entry, begun);
        assert_eq!(cache.stats().entries, 0);
        assert!(cache.memory.peek(&key).is_none());

        // A read begun after the flush is kept.
        let begun = redis.fence.epoch.load(Ordering::SeqCst);
        cache.keep_read(&redis, &key, &entry, begun);
        assert_eq!(cache.stats().entries, 1);
        assert!(cache.memory.peek(&key).is_some());
    }

    #[test]
    fn requested_ttls_are_capped() {
        let options = ResponseCacheOptions::new().max_ttl(Duration::from_secs(60));
        assert_eq!(options.ttl_for(None), Duration::from_secs(60));
        assert_eq!(
            options.ttl_for(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }
}
