//! A flush reaches every level and every instance: two caches sharing one Redis stand for two
//! servers. An answer stored through A is served by B from Redis; after A flushes, neither
//! serves it (B's memory is flushed by the announcement) and its Redis keys are gone. A
//! namespace flush removes only that tenant's entries, whatever characters the tenant's name
//! or the key prefix hold. With Redis unreachable, a flush still empties the memory and says
//! what Redis did not do; after its subscription is cut and made again, an instance flushes
//! its whole memory (announcements may have been missed). A flush that starts while a slow
//! Redis read is in flight lets the read answer its request and leaves nothing behind.
//! (That a read begun before a flush is never kept in memory after it is tested in
//! `cache.rs`, where the read's answer can be made to arrive after the whole flush.)
//!
//! Needs `GROUNDWORK_TEST_REDIS_URL` (except the unreachable-Redis test); without it the
//! tests pass after a notice, unless `GROUNDWORK_REQUIRE_REDIS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use groundwork_clients::redis::{RedisClient, RedisError, RedisOptions, glob_escape};
use groundwork_llm::cache::{CachedCompletion, FlushError, ResponseCache, ResponseCacheOptions};
use groundwork_llm::key::{CacheKey, cache_key};
use groundwork_testkit::services::redis_url;
use groundwork_testkit::{TcpProxy, upstream_of, with_port};
use serde_json::json;

/// How long something that must happen is waited for (only a failing test waits this long).
const PROMPT: Duration = Duration::from_secs(5);

/// A key prefix no other test (nor another run of this one) uses.
fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "gwtest:{test}:{}:{nanos}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` on Redis's logical database `db` (its path replaced, its query kept).
fn on_database(url: &str, db: u8) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |at| at + 3);
    let base = base[authority..]
        .find('/')
        .map_or(base, |slash| &base[..authority + slash]);
    match query {
        Some(query) => format!("{base}/{db}?{query}"),
        None => format!("{base}/{db}"),
    }
}

#[test]
fn on_database_replaces_the_path_only() {
    assert_eq!(
        on_database("redis://127.0.0.1:6379", 15),
        "redis://127.0.0.1:6379/15"
    );
    assert_eq!(
        on_database("redis://:pw@127.0.0.1:6379/2?protocol=resp3", 15),
        "redis://:pw@127.0.0.1:6379/15?protocol=resp3"
    );
}

async fn connected(url: &str) -> RedisClient {
    connected_with(RedisOptions::new(url)).await
}

async fn connected_with(options: RedisOptions) -> RedisClient {
    let redis = RedisClient::new(options).unwrap();
    let started = Instant::now();
    while redis.ping().await.is_err() {
        assert!(started.elapsed() < PROMPT, "Redis never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis
}

/// One "server"'s cache over `redis`, under `prefix`, once it hears other instances'
/// flushes (so that no announcement of the test is lost to a subscription not yet made).
async fn instance(redis: RedisClient, prefix: &str) -> ResponseCache {
    let cache = ResponseCache::new(
        ResponseCacheOptions::new().redis_prefix(prefix),
        Some(redis),
    );
    eventually("the flush subscription is made", || cache.stats().listening).await;
    cache
}

/// Waits until `condition` holds, up to [`PROMPT`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < PROMPT, "not after {PROMPT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn key(tenant: &str, n: u32) -> CacheKey {
    cache_key(
        tenant,
        &json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": n}]}),
    )
    .unwrap()
}

fn body(n: u32) -> Bytes {
    Bytes::from(format!(r#"{{"object":"chat.completion","n":{n}}}"#))
}

fn store(cache: &ResponseCache, tenant: &str, n: u32) {
    cache.put(
        key(tenant, n),
        tenant,
        body(n),
        None,
        Duration::from_secs(600),
    );
}

/// What `cache` serves for `tenant`'s request `n`.
async fn served(cache: &ResponseCache, tenant: &str, n: u32) -> Option<Bytes> {
    cache
        .get(tenant, &key(tenant, n))
        .await
        .map(|entry| entry.completion.clone())
}

/// Waits until `cache` has written `count` entries to Redis.
async fn written(cache: &ResponseCache, count: u64) {
    eventually("written to Redis", || cache.stats().redis_writes >= count).await;
}

/// Every key under `prefix`, with the namespace of its value.
async fn entries_under(redis: &RedisClient, prefix: &str) -> BTreeSet<(String, String)> {
    let pattern = format!("{}*", glob_escape(prefix));
    let mut entries = BTreeSet::new();
    let mut cursor = 0;
    loop {
        let page = redis.scan_match(cursor, &pattern, 100).await.unwrap();
        for key in page.keys {
            let key = String::from_utf8(key).unwrap();
            let value = redis.get(&key).await.unwrap().expect("a value");
            let entry = CachedCompletion::decode(&value).expect("a cached completion");
            entries.insert((key, entry.namespace.to_string()));
        }
        if page.cursor == 0 {
            return entries;
        }
        cursor = page.cursor;
    }
}

fn namespaces(entries: &BTreeSet<(String, String)>) -> Vec<&str> {
    entries.iter().map(|(_, ns)| ns.as_str()).collect()
}

#[tokio::test]
async fn a_flush_reaches_redis_and_the_memory_of_every_instance() {
    let Some(url) = redis_url("a_flush_reaches_redis_and_the_memory_of_every_instance") else {
        return;
    };
    let prefix = unique_prefix("flush_all");
    let a = instance(connected(&url).await, &prefix).await;
    let b = instance(connected(&url).await, &prefix).await;
    let admin = connected(&url).await;

    store(&a, "team-a", 1);
    store(&a, "team-b", 2);
    written(&a, 2).await;
    // B, another server with an empty memory, serves A's answers from Redis (and keeps them).
    assert_eq!(served(&b, "team-a", 1).await, Some(body(1)));
    assert_eq!(served(&b, "team-b", 2).await, Some(body(2)));
    assert_eq!(b.stats().hits_redis, 2);
    assert_eq!(b.stats().entries, 2);
    assert_eq!(entries_under(&admin, &prefix).await.len(), 2);

    let report = a.flush(None).await;
    assert!(report.redis_errors.is_empty(), "{report:?}");
    assert_eq!(report.flushed, 2, "{report:?}");
    assert_eq!(report.redis_deleted, Some(2), "{report:?}");
    assert_eq!(
        report.announced_to,
        Some(2),
        "A's and B's subscriptions: {report:?}"
    );

    // B's memory is flushed by the announcement.
    eventually("B hears the flush", || b.stats().flushes_received == 1).await;
    assert_eq!(b.stats().entries, 0);
    assert_eq!(a.stats().entries, 0);
    assert_eq!(
        a.stats().flushes_received,
        0,
        "A ignores its own announcement"
    );
    // Neither serves the answers any more: not from memory, not from Redis.
    for cache in [&a, &b] {
        assert_eq!(served(cache, "team-a", 1).await, None);
        assert_eq!(served(cache, "team-b", 2).await, None);
    }
    assert_eq!(b.stats().hits_redis, 2, "nothing read back from Redis");
    assert!(entries_under(&admin, &prefix).await.is_empty());
}

#[tokio::test]
async fn a_namespace_flush_removes_only_that_tenants_entries() {
    let Some(url) = redis_url("a_namespace_flush_removes_only_that_tenants_entries") else {
        return;
    };
    let prefix = unique_prefix("flush_namespace");
    let a = instance(connected(&url).await, &prefix).await;
    let b = instance(connected(&url).await, &prefix).await;
    let admin = connected(&url).await;

    // `team:*` starts like `team` and holds glob characters: neither may confuse the flush.
    let stored = [("team", 1), ("team", 2), ("team:*", 3), ("other", 4)];
    for (tenant, n) in stored {
        store(&a, tenant, n);
    }
    written(&a, 4).await;
    for (tenant, n) in stored {
        assert_eq!(served(&b, tenant, n).await, Some(body(n)), "{tenant} {n}");
    }
    assert_eq!(b.stats().hits_redis, 4);
    assert_eq!(b.stats().entries, 4);

    let report = a.flush(Some("team")).await;
    assert!(report.redis_errors.is_empty(), "{report:?}");
    assert_eq!(report.flushed, 2, "{report:?}");
    assert_eq!(report.redis_deleted, Some(2), "{report:?}");
    assert_eq!(report.announced_to, Some(2), "{report:?}");

    eventually("B hears the flush", || b.stats().flushes_received == 1).await;
    for cache in [&a, &b] {
        assert_eq!(cache.stats().entries, 2);
        assert_eq!(served(cache, "team", 1).await, None);
        assert_eq!(served(cache, "team", 2).await, None);
        assert_eq!(served(cache, "team:*", 3).await, Some(body(3)));
        assert_eq!(served(cache, "other", 4).await, Some(body(4)));
    }
    // B kept the other tenants' answers in memory: nothing was read again from Redis.
    assert_eq!(b.stats().hits_redis, 4);
    assert_eq!(b.stats().hits_memory, 2);
    let left = entries_under(&admin, &prefix).await;
    assert_eq!(namespaces(&left), ["other", "team:*"], "{left:?}");
}

#[tokio::test]
async fn glob_characters_in_the_prefix_match_only_themselves() {
    let Some(url) = redis_url("glob_characters_in_the_prefix_match_only_themselves") else {
        return;
    };
    let base = unique_prefix("flush_glob");
    // Unescaped, `…[ab]?*:*` would also match every key under `…ax-y:`.
    let globbed = format!("{base}[ab]?*:");
    let sibling = format!("{base}ax-y:");
    let admin = connected(&url).await;
    let a = instance(connected(&url).await, &globbed).await;
    let neighbour = instance(connected(&url).await, &sibling).await;
    store(&a, "team", 1);
    store(&neighbour, "team", 1);
    written(&a, 1).await;
    written(&neighbour, 1).await;

    let report = a.flush(None).await;
    assert!(report.redis_errors.is_empty(), "{report:?}");
    assert_eq!(report.redis_deleted, Some(1), "{report:?}");
    // Only A listens on its own channel (`{prefix}flush`): the neighbour is another cache.
    assert_eq!(report.announced_to, Some(1), "{report:?}");
    assert!(entries_under(&admin, &globbed).await.is_empty());
    assert_eq!(entries_under(&admin, &sibling).await.len(), 1);
    assert_eq!(served(&neighbour, "team", 1).await, Some(body(1)));
    assert_eq!(neighbour.stats().flushes_received, 0);
    // Clean up the neighbour (its own flush).
    assert_eq!(neighbour.flush(None).await.redis_deleted, Some(1));
}

#[tokio::test]
async fn with_redis_unreachable_a_flush_still_empties_the_memory() {
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = RedisClient::new(RedisOptions::new(format!("redis://127.0.0.1:{port}"))).unwrap();
    let cache = ResponseCache::new(
        ResponseCacheOptions::new().redis_prefix(unique_prefix("flush_unreachable")),
        Some(redis),
    );
    store(&cache, "team", 1);
    store(&cache, "other", 2);
    assert_eq!(served(&cache, "team", 1).await, Some(body(1)));

    let started = Instant::now();
    let report = cache.flush(None).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(report.flushed, 2, "{report:?}");
    assert_eq!(report.redis_deleted, Some(0), "{report:?}");
    assert_eq!(report.announced_to, None, "{report:?}");
    assert!(
        matches!(
            &report.redis_errors[..],
            [
                FlushError::Delete {
                    source: RedisError::Unavailable { .. }
                },
                FlushError::Announce {
                    source: RedisError::Unavailable { .. }
                },
            ]
        ),
        "{report:?}"
    );
    assert_eq!(cache.stats().entries, 0);
    assert_eq!(served(&cache, "team", 1).await, None);
    assert_eq!(served(&cache, "other", 2).await, None);

    // A namespace flush reports the same way.
    store(&cache, "team", 3);
    let report = cache.flush(Some("team")).await;
    assert_eq!(report.flushed, 1, "{report:?}");
    assert_eq!(report.redis_errors.len(), 2, "{report:?}");
    assert_eq!(served(&cache, "team", 3).await, None);
}

#[tokio::test]
async fn after_its_subscription_is_made_again_an_instance_flushes_its_memory() {
    let Some(url) =
        redis_url("after_its_subscription_is_made_again_an_instance_flushes_its_memory")
    else {
        return;
    };
    let prefix = unique_prefix("flush_resync");
    let proxy = TcpProxy::start(upstream_of(&url).await.unwrap())
        .await
        .unwrap();
    let a = instance(connected(&url).await, &prefix).await;
    let b = instance(connected(&with_port(&url, proxy.port())).await, &prefix).await;
    store(&a, "team", 1);
    written(&a, 1).await;
    assert_eq!(served(&b, "team", 1).await, Some(body(1)));
    assert_eq!(b.stats().entries, 1);
    assert_eq!(b.stats().resyncs, 0);

    // B's connections are cut: an announcement made before its subscription is back would
    // be lost, so B cannot trust its memory any more.
    proxy.cut_existing().await;
    eventually("B resubscribes and flushes its memory", || {
        b.stats().resyncs >= 1
    })
    .await;
    assert_eq!(b.stats().entries, 0);
    eventually("B listens again", || b.stats().listening).await;
    // Redis still has the entry: B reads it back once its command connection is back too.
    let started = Instant::now();
    while served(&b, "team", 1).await.is_none() {
        assert!(started.elapsed() < PROMPT, "never read back from Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.stats().hits_redis, 2);
    assert_eq!(a.stats().resyncs, 0);
    assert_eq!(a.flush(None).await.redis_deleted, Some(1));
}

#[tokio::test]
async fn a_flush_during_a_slow_redis_read_answers_the_read_and_leaves_nothing() {
    let Some(url) =
        redis_url("a_flush_during_a_slow_redis_read_answers_the_read_and_leaves_nothing")
    else {
        return;
    };
    // On a logical database of its own: the flush's `SCAN` pages through the whole
    // database, at a 1 s round trip each through the slow proxy, and the shared one may
    // hold tens of thousands of keys (a benchmark's answers live there for 10 minutes).
    let url = on_database(&url, 15);
    let prefix = unique_prefix("flush_read_in_flight");
    let writer = instance(connected(&url).await, &prefix).await;
    store(&writer, "team", 1);
    written(&writer, 1).await;

    // The reader's Redis is slow: each way takes 500 ms, so its GET is in flight for 1 s.
    // Its timeouts are long enough for that (the connection's watchdog `PING` waits behind
    // the flush's commands: with the default 1 s it would drop the connection).
    let proxy = TcpProxy::start(upstream_of(&url).await.unwrap())
        .await
        .unwrap();
    let slow = connected_with(
        RedisOptions::new(with_port(&url, proxy.port()))
            .op_timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(20)),
    )
    .await;
    let reader = instance(slow, &prefix).await;
    proxy
        .set_mode(groundwork_testkit::Mode::Delay(Duration::from_millis(500)))
        .await
        .unwrap();
    let read = tokio::spawn({
        let reader = reader.clone();
        async move { served(&reader, "team", 1).await }
    });
    // The GET is on its way (it reaches Redis 500 ms after it was sent, before the flush's
    // first command); the flush starts before its answer comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let flush = tokio::spawn({
        let reader = reader.clone();
        async move { reader.flush(None).await }
    });
    // The request that was reading is answered with what it read...
    assert_eq!(read.await.unwrap(), Some(body(1)));
    let report = flush.await.unwrap();
    assert!(report.redis_errors.is_empty(), "{report:?}");
    assert_eq!(report.redis_deleted, Some(1), "{report:?}");
    // ...but the flush leaves nothing behind: not in memory, not in Redis.
    assert_eq!(reader.stats().entries, 0);
    proxy
        .set_mode(groundwork_testkit::Mode::Pass)
        .await
        .unwrap();
    assert_eq!(served(&reader, "team", 1).await, None);
    assert_eq!(served(&writer, "team", 1).await, None);
}

#[tokio::test]
async fn a_miss_leaves_nothing_in_memory_and_a_redis_hit_is_kept_there() {
    let Some(url) = redis_url("a_miss_leaves_nothing_in_memory_and_a_redis_hit_is_kept_there")
    else {
        return;
    };
    let prefix = unique_prefix("read_keeps");
    let writer = instance(connected(&url).await, &prefix).await;
    let reader = instance(connected(&url).await, &prefix).await;
    // Distinct misses, as a stream of new requests makes: no trace of them is kept.
    for n in 0..100 {
        assert_eq!(served(&reader, "team", n).await, None);
    }
    assert_eq!(reader.stats().entries, 0);
    assert_eq!(reader.stats().misses, 100);

    store(&writer, "team", 7);
    written(&writer, 1).await;
    let (_, level) = reader.lookup("team", &key("team", 7)).await.unwrap();
    assert_eq!(level, groundwork_llm::cache::CacheLevel::Redis);
    assert_eq!(reader.stats().entries, 1);
    let (entry, level) = reader.lookup("team", &key("team", 7)).await.unwrap();
    assert_eq!(level, groundwork_llm::cache::CacheLevel::Memory);
    assert_eq!(entry.completion, body(7));
    // Clean-up (what a flush does is tested above): the key expires anyway.
    let _ = writer.flush(None).await;
}
