//! A typed cache kept in sync with its source — the piece no Rust cache crate provides
//! (moka's refresh-after-write requests have been open since 2024).
//!
//! [`RefreshingCache<K, V>`] holds values read from a [`Source`] (usually a database):
//! - **Refresh**: a background task refreshes every `refresh_interval`, incrementally from
//!   the source's change feed when it has one ([`Source::changes_since`]), otherwise by a
//!   full reload diffed against the cache. [`RefreshingCache::notify_changed`] wakes it at
//!   once (push invalidation). Readers never wait for a refresh.
//! - **Single-flight**: concurrent misses of one key make one source read, which runs in its
//!   own task: a caller that gives up does not cancel it, and nobody hangs.
//! - **Stale-while-revalidate / stale-if-error**: past its refresh point a hit reloads in the
//!   background; while the source fails, values are served up to `max_staleness` and
//!   retries back off exponentially with jitter.
//! - **Bounded memory**: a capacity (entries or weight) with S3-FIFO eviction.
//! - **Statistics** as a struct ([`CacheStats`]) and through the `metrics` crate, exported
//!   every second by a background task (also for caches without periodic refresh).
//! - **Testable time**: TTLs, refresh points and backoff are measured on an injected clock,
//!   and the background tasks wait through a [`Sleeper`] on that clock: a [`ManualTimer`]
//!   lets a test drive refreshes and backoff by advancing it, without real waits.
//! - [`memoize`] / [`memoize_with`]: the same machinery around an async function.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use groundwork_cache::{RefreshingCache, Snapshot, Source};
//!
//! /// Tool names per agent id, from a database in real life.
//! struct Tools;
//!
//! impl Source<u64, Vec<String>> for Tools {
//!     type Error = std::io::Error;
//!     async fn load(&self, agent: &u64) -> Result<Option<Vec<String>>, Self::Error> {
//!         Ok((*agent == 1).then(|| vec!["search".to_owned()]))
//!     }
//!     async fn load_all(&self) -> Result<Snapshot<u64, Vec<String>>, Self::Error> {
//!         Ok(Snapshot::new(vec![(1, vec!["search".to_owned()])]))
//!     }
//! }
//!
//! let cache = RefreshingCache::builder("agent_tools")
//!     .ttl(Duration::from_secs(300))
//!     .refresh_interval(Some(Duration::from_secs(60)))
//!     .build(Tools);
//! cache.start().await?; // fills the cache, starts the refresh task
//!
//! let tools = cache.get(&1).await?.expect("agent 1 exists");
//! assert_eq!(*tools, ["search"]);
//! assert!(cache.get(&2).await?.is_none());
//!
//! cache.invalidate(&1); // after a write: the next get reads the source again
//! cache.shutdown().await;
//! # Ok::<(), groundwork_cache::CacheError>(())
//! # }).unwrap();
//! ```

mod builder;
mod cache;
mod error;
mod memoize;
mod source;
mod stats;
mod timer;

pub use builder::{CacheBuilder, Weigher};
pub use cache::{Get, RefreshingCache, backoff_delay};
pub use error::CacheError;
pub use memoize::{Memoized, memoize, memoize_with};
pub use source::{ChangeSet, Snapshot, Source, SourceError};
pub use stats::CacheStats;
pub use timer::{ManualTimer, Sleep, Sleeper, TokioSleeper};
