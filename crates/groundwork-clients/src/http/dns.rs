//! [`CachingResolver`]: DNS answers kept for a fixed TTL, one lookup per host at a time.
//!
//! Why this is hand-written: reqwest resolves through `getaddrinfo` on a blocking thread for
//! every new connection and has no cache at all; its optional hickory resolver caches by the
//! records' own TTLs with no way to cap them, and brings a whole DNS stack into the build.
//! The design notes ask for what aiohttp's `ttl_dns_cache=300` does: keep the system
//! resolver's answer for a fixed time. That is a small map behind a mutex, written here so
//! that it can also share lookups in flight, never cache a failure, and read an injected
//! [`Clock`] so tests can expire entries without sleeping.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};
use groundwork_core::clock::{Clock, SystemClock};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What a lookup yields, shareable between the callers waiting for it.
type LookupResult = Result<Arc<[SocketAddr]>, Arc<io::Error>>;

/// The function that asks the system (tests substitute a fake).
type LookupFn =
    Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// A DNS resolver for reqwest that keeps each host's addresses for a fixed TTL.
///
/// - A host asked for again within the TTL is answered from memory (a *hit*).
/// - Otherwise one lookup runs (a *miss*); callers asking for the same host meanwhile wait for
///   that lookup instead of starting their own (single flight; they count as hits).
/// - A failed or empty lookup is never cached: the next request asks again.
/// - Expired entries are dropped when the next lookup starts.
///
/// Lookups go through [`tokio::net::lookup_host`] (the system resolver, `/etc/hosts`
/// included) with port 0, which reqwest replaces with the URL's port.
///
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct CachingResolver {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    clock: Arc<dyn Clock>,
    lookup: LookupFn,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
}

#[derive(Default)]
struct State {
    slots: HashMap<Box<str>, Slot>,
    /// Tells a finishing lookup whether its slot was replaced meanwhile.
    next_id: u64,
}

enum Slot {
    /// Addresses usable until `expires_at` (a reading of the resolver's clock).
    Ready {
        addrs: Arc<[SocketAddr]>,
        expires_at: Duration,
    },
    /// A lookup in flight; callers clone and await it.
    Pending {
        id: u64,
        lookup: Shared<BoxFuture<'static, LookupResult>>,
    },
}

/// The resolver's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DnsStats {
    /// Resolutions answered without a lookup of their own: from a cached entry, or by
    /// joining a lookup already in flight.
    pub hits: u64,
    /// Resolutions that started a lookup.
    pub misses: u64,
    /// Lookups that failed or found no address (not cached).
    pub failures: u64,
    /// Hosts with cached addresses within their TTL.
    pub entries: u64,
}

/// A failed lookup, as reqwest sees it in its error chain.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}")]
struct LookupError {
    host: String,
    #[source]
    source: Arc<io::Error>,
}

impl CachingResolver {
    /// A resolver keeping answers for `ttl` (`Duration::ZERO` turns caching off but keeps
    /// the sharing of lookups in flight), timed by the system clock.
    #[must_use]
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, Arc::new(SystemClock::new()))
    }

    /// A resolver keeping answers for `ttl`, timed by `clock` (tests pass a
    /// [`ManualClock`](groundwork_core::clock::ManualClock)).
    #[must_use]
    pub fn with_clock(ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let lookup: LookupFn = Arc::new(|host: String| {
            async move {
                let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                Ok(addrs.collect())
            }
            .boxed()
        });
        Self::with_lookup(ttl, clock, lookup)
    }

    fn with_lookup(ttl: Duration, clock: Arc<dyn Clock>, lookup: LookupFn) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                clock,
                lookup,
                state: Mutex::new(State::default()),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    /// How long answers are kept.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The counters now.
    #[must_use]
    pub fn stats(&self) -> DnsStats {
        let now = self.inner.clock.now();
        let entries = self
            .inner
            .state()
            .slots
            .values()
            .filter(|slot| matches!(slot, Slot::Ready { expires_at, .. } if now < *expires_at))
            .count();
        DnsStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            entries: u64::try_from(entries).unwrap_or(u64::MAX),
        }
    }

    /// The addresses of `host`, from the cache or from one shared lookup.
    pub(crate) fn lookup(&self, host: &str) -> BoxFuture<'static, LookupResult> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut state = inner.state();
        match state.slots.get(host) {
            Some(Slot::Ready { addrs, expires_at }) if now < *expires_at => {
                inner.hits.fetch_add(1, Ordering::Relaxed);
                let addrs = Arc::clone(addrs);
                return async move { Ok(addrs) }.boxed();
            }
            Some(Slot::Pending { lookup, .. }) => {
                inner.hits.fetch_add(1, Ordering::Relaxed);
                return lookup.clone().boxed();
            }
            _ => {}
        }
        inner.misses.fetch_add(1, Ordering::Relaxed);
        // The few hosts a server calls make this sweep cheap; it bounds the map to the
        // hosts seen within one TTL.
        state.slots.retain(
            |_, slot| !matches!(slot, Slot::Ready { expires_at, .. } if now >= *expires_at),
        );
        let id = state.next_id;
        state.next_id = state.next_id.wrapping_add(1);
        // The future completes the slot itself, whichever caller happens to poll it, so a
        // caller that gives up leaves the lookup to the next one. It holds the resolver
        // weakly: the map holds the future, and a strong reference would be a cycle.
        let lookup = run_lookup(
            Arc::downgrade(inner),
            host.to_owned(),
            id,
            (inner.lookup)(host.to_owned()),
        )
        .boxed()
        .shared();
        state.slots.insert(
            Box::from(host),
            Slot::Pending {
                id,
                lookup: lookup.clone(),
            },
        );
        lookup.boxed()
    }
}

async fn run_lookup(
    inner: Weak<Inner>,
    host: String,
    id: u64,
    lookup: BoxFuture<'static, io::Result<Vec<SocketAddr>>>,
) -> LookupResult {
    let result = match lookup.await {
        Ok(addrs) if addrs.is_empty() => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the lookup returned no address",
        )),
        Ok(addrs) => Ok(Arc::from(addrs)),
        Err(err) => Err(err),
    };
    let Some(inner) = inner.upgrade() else {
        return result.map_err(Arc::new);
    };
    if result.is_err() {
        inner.failures.fetch_add(1, Ordering::Relaxed);
    }
    let expires_at = inner.clock.now().saturating_add(inner.ttl);
    let mut state = inner.state();
    let ours = matches!(
        state.slots.get(host.as_str()),
        Some(Slot::Pending { id: current, .. }) if *current == id
    );
    if ours {
        match &result {
            Ok(addrs) => {
                let addrs = Arc::clone(addrs);
                state
                    .slots
                    .insert(Box::from(host), Slot::Ready { addrs, expires_at });
            }
            Err(_) => {
                state.slots.remove(host.as_str());
            }
        }
    }
    result.map_err(Arc::new)
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The map is consistent after every statement, so a panic elsewhere while holding
        // the lock leaves nothing to repair.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Resolve for CachingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = self.lookup(&host);
        Box::pin(async move {
            match lookup.await {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.iter().copied().collect();
                    let addrs: Addrs = Box::new(addrs.into_iter());
                    Ok(addrs)
                }
                Err(source) => Err(Box::new(LookupError { host, source }).into()),
            }
        })
    }
}

impl fmt::Debug for CachingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingResolver")
            .field("ttl", &self.inner.ttl)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::AtomicUsize;

    use groundwork_core::clock::ManualClock;
    use tokio::sync::Notify;

    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 0)
    }

    /// A fake system resolver: counts calls, answers `10.0.0.<n>` for call n, fails for
    /// hosts ending in `.invalid`, and optionally waits for a go signal.
    struct Fake {
        calls: Arc<AtomicUsize>,
        gate: Option<Arc<Notify>>,
    }

    impl Fake {
        fn resolver(self, clock: &Arc<ManualClock>) -> CachingResolver {
            let Fake { calls, gate } = self;
            let lookup: LookupFn = Arc::new(move |host: String| {
                let calls = Arc::clone(&calls);
                let gate = gate.clone();
                async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    if let Some(gate) = gate {
                        gate.notified().await;
                    }
                    if host.ends_with(".invalid") {
                        Err(io::Error::other("no such host"))
                    } else if host == "empty.test" {
                        Ok(Vec::new())
                    } else {
                        Ok(vec![addr(u8::try_from(n).unwrap())])
                    }
                }
                .boxed()
            });
            CachingResolver::with_lookup(TTL, Arc::clone(clock) as Arc<dyn Clock>, lookup)
        }
    }

    fn fake(clock: &Arc<ManualClock>) -> (CachingResolver, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let resolver = Fake {
            calls: Arc::clone(&calls),
            gate: None,
        }
        .resolver(clock);
        (resolver, calls)
    }

    #[tokio::test]
    async fn answers_from_the_cache_within_the_ttl() {
        let clock = Arc::new(ManualClock::new());
        let (resolver, calls) = fake(&clock);

        for _ in 0..5 {
            let addrs = resolver.lookup("api.example.com").await.unwrap();
            assert_eq!(&addrs[..], &[addr(1)]);
            clock.advance(Duration::from_secs(10));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = resolver.stats();
        assert_eq!((stats.misses, stats.hits, stats.entries), (1, 4, 1));
    }

    #[tokio::test]
    async fn looks_up_again_after_the_ttl() {
        let clock = Arc::new(ManualClock::new());
        let (resolver, calls) = fake(&clock);

        assert_eq!(&resolver.lookup("a.test").await.unwrap()[..], &[addr(1)]);
        clock.advance(TTL - Duration::from_millis(1));
        assert_eq!(&resolver.lookup("a.test").await.unwrap()[..], &[addr(1)]);
        clock.advance(Duration::from_millis(1));
        assert_eq!(resolver.stats().entries, 0, "expired at exactly the TTL");
        assert_eq!(&resolver.lookup("a.test").await.unwrap()[..], &[addr(2)]);

        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let stats = resolver.stats();
        assert_eq!((stats.misses, stats.hits, stats.entries), (2, 1, 1));
    }

    #[tokio::test]
    async fn hosts_are_cached_separately_and_expired_ones_swept() {
        let clock = Arc::new(ManualClock::new());
        let (resolver, _) = fake(&clock);

        resolver.lookup("a.test").await.unwrap();
        clock.advance(Duration::from_secs(200));
        resolver.lookup("b.test").await.unwrap();
        assert_eq!(resolver.stats().entries, 2);
        clock.advance(Duration::from_secs(200)); // a.test expired, b.test not
        assert_eq!(resolver.stats().entries, 1);
        resolver.lookup("c.test").await.unwrap(); // a miss sweeps a.test out
        assert_eq!(resolver.inner.state().slots.len(), 2);
    }

    #[tokio::test]
    async fn failures_and_empty_answers_are_not_cached() {
        let clock = Arc::new(ManualClock::new());
        let (resolver, calls) = fake(&clock);

        for _ in 0..3 {
            assert!(resolver.lookup("nonexistent.invalid").await.is_err());
        }
        for _ in 0..2 {
            let err = resolver.lookup("empty.test").await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let stats = resolver.stats();
        assert_eq!(
            (stats.misses, stats.hits, stats.failures, stats.entries),
            (5, 0, 5, 0)
        );
        assert!(resolver.inner.state().slots.is_empty());
    }

    #[tokio::test]
    async fn concurrent_lookups_of_one_host_share_one() {
        let clock = Arc::new(ManualClock::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let resolver = Fake {
            calls: Arc::clone(&calls),
            gate: Some(Arc::clone(&gate)),
        }
        .resolver(&clock);

        let waiters: Vec<_> = (0..50)
            .map(|_| tokio::spawn(resolver.lookup("shared.test")))
            .collect();
        // Let the one lookup start, then release it.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for waiter in waiters {
            assert_eq!(&waiter.await.unwrap().unwrap()[..], &[addr(1)]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = resolver.stats();
        assert_eq!((stats.misses, stats.hits, stats.entries), (1, 49, 1));
    }

    #[tokio::test]
    async fn a_caller_giving_up_leaves_the_lookup_to_the_next() {
        let clock = Arc::new(ManualClock::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let resolver = Fake {
            calls: Arc::clone(&calls),
            gate: Some(Arc::clone(&gate)),
        }
        .resolver(&clock);

        let first = resolver.lookup("slow.test");
        let gave_up = tokio::time::timeout(Duration::from_millis(10), first).await;
        assert!(gave_up.is_err());

        gate.notify_one(); // stored as a permit for the lookup still pending
        let addrs = resolver.lookup("slow.test").await.unwrap();
        assert_eq!(&addrs[..], &[addr(1)]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(resolver.stats().entries, 1);
    }

    #[tokio::test]
    async fn a_concurrent_failure_is_shared_but_not_kept() {
        let clock = Arc::new(ManualClock::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let resolver = Fake {
            calls: Arc::clone(&calls),
            gate: Some(Arc::clone(&gate)),
        }
        .resolver(&clock);

        let a = tokio::spawn(resolver.lookup("down.invalid"));
        let b = tokio::spawn(resolver.lookup("down.invalid"));
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        assert!(a.await.unwrap().is_err());
        assert!(b.await.unwrap().is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(resolver.stats().failures, 1);

        gate.notify_one();
        assert!(resolver.lookup("down.invalid").await.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the failure was not cached"
        );
    }

    #[tokio::test]
    async fn zero_ttl_does_not_cache() {
        let clock = Arc::new(ManualClock::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup: LookupFn = {
            let calls = Arc::clone(&calls);
            Arc::new(move |_host: String| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(vec![addr(1)]) }.boxed()
            })
        };
        let resolver = CachingResolver::with_lookup(Duration::ZERO, clock, lookup);
        resolver.lookup("a.test").await.unwrap();
        resolver.lookup("a.test").await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn resolves_localhost_through_the_system() {
        let resolver = CachingResolver::new(TTL);
        let name: Name = "localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = resolver.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(addrs.iter().all(|a| a.port() == 0));

        let name: Name = "nonexistent.invalid".parse().unwrap();
        let err = resolver.resolve(name).await.err().unwrap();
        assert!(err.to_string().contains("nonexistent.invalid"), "{err}");
    }
}
