//! The response cache: completions stored under their canonical key, in memory (bounded, a
//! [`RefreshingCache`] from `groundwork-cache`) and in Redis when configured.
//!
//! - **Reads** look in memory first; a miss there asks Redis through the memory cache's
//!   single-flight loader, under the Redis client's operation timeout (50 ms by default) and
//!   breaker. A Redis failure or timeout is a miss, never an error.
//! - **Writes** go to memory at once and to Redis through a bounded queue drained by a
//!   background task: the request never waits on Redis, and when the queue is full the Redis
//!   copy is dropped (counted), not the response.
//! - Every entry carries its own expiry (the request may ask for a TTL), checked on read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use groundwork_cache::{RefreshingCache, Snapshot, Source};
use groundwork_clients::redis::{RedisClient, RedisError};
use serde::Serialize;
use tokio::sync::mpsc;

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

    /// Prefix of the Redis keys.
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
    /// Redis writes dropped because the queue was full or Redis failed.
    pub redis_writes_dropped: u64,
    /// Entries found expired (a miss).
    pub expired: u64,
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
        ] {
            metrics::gauge!(name).set(value as f64);
        }
    }
}

/// The memory level's source: Redis (or nothing).
struct RedisLevel {
    redis: Option<RedisClient>,
    prefix: String,
    counters: Arc<Counters>,
}

impl Source<CacheKey, CachedCompletion> for RedisLevel {
    type Error = RedisError;

    async fn load(&self, key: &CacheKey) -> Result<Option<CachedCompletion>, RedisError> {
        let Some(redis) = &self.redis else {
            return Ok(None);
        };
        match redis.get(&format!("{}{key}", self.prefix)).await {
            Ok(found) => Ok(found.and_then(|bytes| CachedCompletion::decode(&bytes))),
            Err(err) => {
                // A miss, not an error: Redis is optional.
                self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %err, "LLM cache: Redis read failed");
                Ok(None)
            }
        }
    }

    async fn load_all(&self) -> Result<Snapshot<CacheKey, CachedCompletion>, RedisError> {
        // The memory level is never filled as a whole: entries come one by one.
        Ok(Snapshot::new(Vec::new()))
    }
}

/// A Redis write waiting in the queue.
struct RedisWrite {
    key: String,
    value: Vec<u8>,
    ttl: Duration,
}

/// The two-level response cache. Cheap to clone.
#[derive(Clone)]
pub struct ResponseCache {
    memory: RefreshingCache<CacheKey, CachedCompletion>,
    writes: Option<mpsc::Sender<RedisWrite>>,
    redis_prefix: String,
    options: ResponseCacheOptions,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("redis", &self.writes.is_some())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A cache with `options`, over `redis` when given. Needs a Tokio runtime (the Redis
    /// writer runs as a task).
    #[must_use]
    pub fn new(options: ResponseCacheOptions, redis: Option<RedisClient>) -> Self {
        let counters = Arc::new(Counters::default());
        let memory = RefreshingCache::builder("llm_responses")
            .ttl(options.max_ttl)
            .refresh_interval(None)
            // Never past its TTL, never remembered as absent: a miss asks Redis again.
            .max_staleness(Duration::ZERO)
            .negative_ttl(Duration::ZERO)
            .load_timeout(Duration::from_secs(1))
            .fill_on_miss(false)
            .capacity(options.memory_bytes)
            .weigher(|_, entry: &CachedCompletion| entry.weight())
            .build(RedisLevel {
                redis: redis.clone(),
                prefix: options.redis_prefix.clone(),
                counters: Arc::clone(&counters),
            });
        let writes = redis.map(|redis| {
            let (sender, receiver) = mpsc::channel(options.redis_queue);
            tokio::spawn(write_to_redis(redis, receiver, Arc::clone(&counters)));
            sender
        });
        Self {
            memory,
            writes,
            redis_prefix: options.redis_prefix.clone(),
            options,
            counters,
        }
    }

    /// The settings.
    pub fn options(&self) -> &ResponseCacheOptions {
        &self.options
    }

    /// The completion stored under `key`, if any and not expired: from memory, else from
    /// Redis (kept in memory then). Never fails: a Redis failure is a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedCompletion>> {
        let found = match self.memory.peek(key) {
            Some(entry) => {
                self.counters.hits_memory.fetch_add(1, Ordering::Relaxed);
                Some(entry)
            }
            None => match self.memory.get(key).await {
                Ok(Some(entry)) => {
                    self.counters.hits_redis.fetch_add(1, Ordering::Relaxed);
                    Some(entry)
                }
                Ok(None) | Err(_) => None,
            },
        };
        match found {
            Some(entry) if entry.expired_at(unix_now()) => {
                self.counters.expired.fetch_add(1, Ordering::Relaxed);
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                self.memory.invalidate(key);
                None
            }
            Some(entry) => Some(entry),
            None => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores `completion` under `key` for `ttl`: in memory now, in Redis from the
    /// background (dropped, and counted, if the queue is full).
    pub fn put(
        &self,
        key: CacheKey,
        namespace: &str,
        completion: Bytes,
        chunks: Option<Arc<[Bytes]>>,
        ttl: Duration,
    ) {
        let entry = CachedCompletion {
            namespace: Arc::from(namespace),
            completion,
            chunks,
            expires_at: unix_now().saturating_add(ttl.as_secs().max(1)),
        };
        self.counters.stores.fetch_add(1, Ordering::Relaxed);
        if let Some(writes) = &self.writes {
            let write = RedisWrite {
                key: format!("{}{key}", self.redis_prefix),
                value: entry.encode(),
                ttl,
            };
            if writes.try_send(write).is_err() {
                self.counters
                    .redis_writes_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.memory.insert(key, entry);
    }

    /// Removes from memory every entry of `namespace` (all entries when `None`); returns
    /// how many. Redis entries expire by their TTL (and are keyed by tenant, so another
    /// tenant never reads them).
    pub fn flush(&self, namespace: Option<&str>) -> usize {
        match namespace {
            Some(namespace) => self
                .memory
                .invalidate_if(|_, entry| &*entry.namespace == namespace),
            None => {
                let entries = usize::try_from(self.memory.stats().entries).unwrap_or(usize::MAX);
                self.memory.invalidate_all();
                entries
            }
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
            redis: self.writes.is_some(),
        }
    }
}

async fn write_to_redis(
    redis: RedisClient,
    mut writes: mpsc::Receiver<RedisWrite>,
    counters: Arc<Counters>,
) {
    while let Some(write) = writes.recv().await {
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

#[cfg(test)]
mod tests {
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
    fn requested_ttls_are_capped() {
        let options = ResponseCacheOptions::new().max_ttl(Duration::from_secs(60));
        assert_eq!(options.ttl_for(None), Duration::from_secs(60));
        assert_eq!(
            options.ttl_for(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
    }
}
