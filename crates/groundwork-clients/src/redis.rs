//! [`RedisClient`]: a Redis client for features that must degrade, never fail, when Redis
//! is slow or down (caches, rate limits, pub/sub notifications).
//!
//! Built once in `main` from [`RedisOptions`] and cloned wherever it is needed; clones share
//! the connection, the circuit breaker and the counters.
//!
//! - [`RedisClient::new`] returns at once, without Redis: a background task makes the first
//!   connection (redis-rs's [`ConnectionManager`], which
//!   multiplexes every operation over one connection and reconnects by itself after a
//!   dropped connection), retrying with exponential backoff and jitter. Until it is made,
//!   operations fail at once with [`RedisError::Unavailable`].
//! - Every operation runs under a short deadline ([`RedisOptions::op_timeout`], 50 ms by
//!   default: a cache lookup that takes longer is not worth waiting for) and a circuit
//!   breaker: after 3 failures in a row (or the breaker's default failure rate) operations
//!   fail in microseconds with [`RedisError::CircuitOpen`], without touching the network,
//!   until a probe gets through 1 s later.
//! - The background task also watches the connection: when an operation times out or
//!   cannot reach Redis (and at least every [`RedisOptions::ping_interval`]), it sends a
//!   `PING` under the connect timeout. A connection that does not answer — black-holed by
//!   the network, which redis-rs cannot notice by itself — is dropped and made again, and
//!   the breaker closes as soon as the new connection is up.
//! - [`RedisClient::subscribe`] returns a [`RedisSubscription`] backed by its own task and
//!   pub/sub connection, which reconnects and subscribes again after any error, forever,
//!   until the handle is dropped; a `PING` every `ping_interval` notices a silent
//!   connection. Messages published while it is reconnecting are lost (Redis pub/sub keeps
//!   nothing), which [`RedisSubscription::generation`] lets a caller notice.
//!
//! Only failures that say Redis is unreachable or overloaded count against it: a
//! connection error, a timeout, or a `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN`,
//! `CLUSTERDOWN` or `READONLY` reply. Any other error reply ([`RedisError::Command`]) is an
//! answer.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), groundwork_clients::redis::RedisError> {
//! use std::time::{Duration, Instant};
//! use groundwork_clients::redis::{RedisClient, RedisError, RedisOptions};
//!
//! // Nothing listens on port 1: the client is built all the same.
//! let client = RedisClient::new(RedisOptions::new("redis://127.0.0.1:1"))?;
//!
//! // Operations fail at once, without waiting for Redis; the caller falls back.
//! let started = Instant::now();
//! let cached = client.get("tools:all").await;
//! assert!(matches!(cached, Err(RedisError::Unavailable { .. })));
//! assert!(started.elapsed() < Duration::from_millis(50));
//!
//! let stats = client.stats();
//! assert!(!stats.connected);
//! assert_eq!((stats.operations, stats.failures), (1, 1));
//! assert_eq!(stats.op_timeout_ms, 50.0);
//! stats.publish(); // `groundwork_redis_*` and `groundwork_breaker_*{breaker="redis"}`
//! # Ok(())
//! # }
//! ```

mod connection;
mod subscription;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::{Cmd, FromRedisValue, ServerErrorKind};
use groundwork_core::clock::Clock;
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::{BreakerConfig, BreakerStats, CircuitBreaker};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

pub use subscription::{RedisSubscription, SUBSCRIPTION_BUFFER};

/// The name of the default circuit breaker (its `breaker` metrics label).
pub const DEFAULT_BREAKER_NAME: &str = "redis";

/// Settings of a [`RedisClient`], each with its default.
///
/// ```
/// use std::time::Duration;
/// use groundwork_clients::redis::RedisOptions;
///
/// let options = RedisOptions::new("redis://cache.internal:6379/0")
///     .op_timeout(Duration::from_millis(20)) // a hot path
///     .connect_timeout(Duration::from_millis(500));
/// ```
#[must_use]
#[derive(Clone)]
pub struct RedisOptions {
    url: String,
    op_timeout: Duration,
    connect_timeout: Duration,
    ping_interval: Duration,
    breaker: BreakerConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl RedisOptions {
    /// Options for the server at `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS, `redis+unix:///path` for a Unix socket), with the defaults
    /// listed on each setter.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            op_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            ping_interval: Duration::from_secs(1),
            breaker: BreakerConfig::new(DEFAULT_BREAKER_NAME)
                .consecutive_failures(3)
                .open_for(Duration::from_secs(1)),
            clock: None,
        }
    }

    /// How long one operation may take, waiting for the connection included. Default:
    /// 50 ms — these are cache operations: past that, the caller is better off computing
    /// the value or doing without.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// How long making a connection (TCP, TLS, `HELLO`/`AUTH`/`SELECT`) may take; also how
    /// long a liveness `PING` may take before its connection is given up. Default: 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often an idle connection is checked with a `PING` (the command connection, and
    /// each subscription's pub/sub connection), so that a connection the network silently
    /// dropped is noticed and made again. Default: 1 s.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The circuit breaker around operations. Default: named `redis`, opens after 3
    /// failures in a row or at a 50 % failure rate over the last 10 operations (at least 5
    /// made), stays open 1 s, then lets one probe through.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// The clock the breaker runs on, overriding the one of [`RedisOptions::breaker`].
    /// Default: the breaker's (the system clock); tests pass a
    /// [`ManualClock`](groundwork_core::clock::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &groundwork_core::redact_url(&self.url))
            .field("op_timeout", &self.op_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("breaker", &self.breaker.name())
            .finish_non_exhaustive()
    }
}

/// Why an operation or the client's construction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL cannot be used (not a Redis URL, an unknown scheme, a bad database number).
    #[error("invalid Redis URL: {source}")]
    InvalidUrl {
        /// redis-rs's error.
        #[source]
        source: ::redis::RedisError,
    },
    /// [`RedisClient::new`] was called outside a Tokio runtime (it starts a task).
    #[error("the Redis client must be created inside a Tokio runtime")]
    NoRuntime,
    /// Redis cannot be reached: the client is not connected (yet, or any more), the
    /// connection failed, or Redis answered that it cannot serve now (`LOADING`, `BUSY`,
    /// `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, `READONLY`).
    #[error("Redis is unavailable")]
    Unavailable {
        /// redis-rs's error, when there was one (none while not connected).
        #[source]
        source: Option<::redis::RedisError>,
    },
    /// Redis did not answer within the operation timeout.
    #[error("Redis did not answer within {after:?}")]
    Timeout {
        /// The operation timeout.
        after: Duration,
    },
    /// The circuit breaker is open: Redis failed repeatedly, so the operation was not sent.
    #[error("the Redis circuit breaker is open (next probe in {retry_in:?})")]
    CircuitOpen {
        /// How long until the breaker lets a probe through (zero when a probe is running).
        retry_in: Duration,
    },
    /// Redis answered with an error (`WRONGTYPE`, `NOPERM`, ...), or with a value of an
    /// unexpected type.
    #[error("Redis command failed: {0}")]
    Command(#[source] ::redis::RedisError),
}

impl RedisError {
    /// Sorts an error from running a command: replies that mean "cannot serve now" and
    /// connection errors are [`RedisError::Unavailable`], other replies
    /// [`RedisError::Command`].
    fn from_command(err: ::redis::RedisError) -> Self {
        use ::redis::ErrorKind as Kind;
        let unavailable = match err.kind() {
            Kind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly,
            ) => true,
            Kind::Extension => err.code() == Some("BUSY"),
            Kind::Server(_) | Kind::UnexpectedReturnType | Kind::Client => false,
            // I/O, protocol, authentication (after a reconnect) and the rest.
            _ => true,
        };
        if unavailable {
            Self::Unavailable { source: Some(err) }
        } else {
            Self::Command(err)
        }
    }
}

impl Classify for RedisError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::CircuitOpen { .. } => {
                ErrorKind::Unavailable
            }
            Self::InvalidUrl { .. } | Self::NoRuntime | Self::Command(_) => ErrorKind::Internal,
        }
    }
}

/// What the client, its connection task and its subscriptions share.
#[derive(Debug)]
struct State {
    /// The command connection, once made; `None` while (re)connecting.
    manager: RwLock<Option<ConnectionManager>>,
    /// Whether `manager` is set (a failed check removes it).
    connected: AtomicBool,
    /// Raised by an operation that timed out or could not reach Redis: the connection task
    /// checks the connection at once.
    suspect: Notify,
    breaker: CircuitBreaker,
    counters: Counters,
    settings: Settings,
}

impl State {
    fn manager(&self) -> Option<ConnectionManager> {
        self.manager
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Installs (or removes) the command connection; `connected` says so only once
    /// operations can use it.
    fn set_manager(&self, manager: Option<ConnectionManager>) {
        let connected = manager.is_some();
        if !connected {
            self.connected.store(false, Ordering::Release);
        }
        *self.manager.write().unwrap_or_else(PoisonError::into_inner) = manager;
        if connected {
            self.connected.store(true, Ordering::Release);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    operations: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    rejected: AtomicU64,
    reconnects: AtomicU64,
    subscriptions: AtomicU64,
    messages: AtomicU64,
    messages_dropped: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    op_timeout: Duration,
    connect_timeout: Duration,
    ping_interval: Duration,
}

/// A Redis client that degrades instead of failing (see the [module documentation](self)).
/// Cheap to clone: clones share the connection, the breaker and the counters. The
/// background connection task stops when the last clone is dropped; subscriptions live on
/// until their own handle is dropped.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<State>,
    client: ::redis::Client,
    runtime: tokio::runtime::Handle,
    url: String,
    connection_task: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.connection_task.abort();
    }
}

impl fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = &self.inner.state;
        f.debug_struct("RedisClient")
            .field("url", &groundwork_core::redact_url(&self.inner.url))
            .field("connected", &state.connected.load(Ordering::Acquire))
            .field("breaker", &state.breaker)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Builds the client and starts its connection task; returns at once, whether Redis is
    /// up or not (operations fail with [`RedisError::Unavailable`] until it is connected).
    ///
    /// Installs ring as the process-wide rustls crypto provider if none is installed (for
    /// `rediss://`).
    ///
    /// # Errors
    ///
    /// [`RedisError::InvalidUrl`] if the URL cannot be used, [`RedisError::NoRuntime`]
    /// outside a Tokio runtime.
    pub fn new(options: RedisOptions) -> Result<Self, RedisError> {
        let client = ::redis::Client::open(options.url.as_str())
            .map_err(|source| RedisError::InvalidUrl { source })?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RedisError::NoRuntime)?;
        crate::http::ensure_crypto_provider();
        let mut breaker = options.breaker;
        if let Some(clock) = options.clock {
            breaker = breaker.clock(clock);
        }
        let state = Arc::new(State {
            manager: RwLock::new(None),
            connected: AtomicBool::new(false),
            suspect: Notify::new(),
            breaker: breaker.build(),
            counters: Counters::default(),
            settings: Settings {
                op_timeout: options.op_timeout,
                connect_timeout: options.connect_timeout,
                ping_interval: options.ping_interval,
            },
        });
        let connection_task = runtime
            .spawn(connection::maintain(Arc::clone(&state), client.clone()))
            .abort_handle();
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                client,
                runtime,
                url: options.url,
                connection_task,
            }),
        })
    }

    /// The value at `key`, `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`RedisError::Unavailable`], [`RedisError::Timeout`] or [`RedisError::CircuitOpen`]
    /// when Redis cannot answer now; [`RedisError::Command`] when it answers with an error
    /// (`WRONGTYPE`: the key holds a list, a hash...).
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.run(::redis::cmd("GET").arg(key)).await
    }

    /// Sets `key` to `value`, expiring after `ttl` (`SET key value PX ms`; rounded up to
    /// whole milliseconds, at least 1).
    ///
    /// # Errors
    ///
    /// As [`RedisClient::get`].
    pub async fn set_ex(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), RedisError> {
        let millis = u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        self.run(
            ::redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis),
        )
        .await
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`RedisClient::get`].
    pub async fn del(&self, key: &str) -> Result<bool, RedisError> {
        let deleted: u64 = self.run(::redis::cmd("DEL").arg(key)).await?;
        Ok(deleted > 0)
    }

    /// Publishes `message` on `channel`; returns how many subscribers received it (across
    /// all clients of the server).
    ///
    /// # Errors
    ///
    /// As [`RedisClient::get`].
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<u64, RedisError> {
        self.run(::redis::cmd("PUBLISH").arg(channel).arg(message))
            .await
    }

    /// One step of an incremental scan of the key space: `SCAN cursor MATCH pattern COUNT
    /// count`. Start with cursor 0 and call again with [`ScanPage::cursor`] until it is 0
    /// again; each call is one operation (one round trip under the operation timeout and
    /// the breaker), so a large key space is walked in many short steps, never one long
    /// command.
    ///
    /// `pattern` is a Redis glob (`*`, `?`, `[...]`, `\` escapes): build it with
    /// [`glob_escape`] so that a literal prefix matches only itself. `count` is a hint of
    /// how many keys Redis examines per step (at least 1); a page may hold fewer keys (even
    /// none before the end) or more, and a key may be returned more than once.
    ///
    /// # Errors
    ///
    /// As [`RedisClient::get`].
    pub async fn scan_match(
        &self,
        cursor: u64,
        pattern: &str,
        count: u32,
    ) -> Result<ScanPage, RedisError> {
        let (cursor, keys): (u64, Vec<Vec<u8>>) = self
            .run(
                ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await?;
        Ok(ScanPage { cursor, keys })
    }

    /// Deletes `keys` in one `UNLINK` (their memory is reclaimed by Redis in the background,
    /// so a large value does not stall the server); returns how many existed. An empty
    /// batch returns 0 without a round trip.
    ///
    /// # Errors
    ///
    /// As [`RedisClient::get`].
    pub async fn unlink<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64, RedisError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = ::redis::cmd("UNLINK");
        for key in keys {
            cmd.arg(key.as_ref());
        }
        self.run(&cmd).await
    }

    /// Sends a `PING` (as an operation: under the timeout and the breaker) and returns the
    /// round trip time.
    ///
    /// # Errors
    ///
    /// As [`RedisClient::get`].
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let _pong: ::redis::Value = self.run(&::redis::cmd("PING")).await?;
        Ok(started.elapsed())
    }

    /// Subscribes to `channel` (a channel name, not a pattern). Returns at once: the
    /// subscription is made, and made again after any failure, by a background task until
    /// the handle is dropped (see [`RedisSubscription`]).
    pub fn subscribe(&self, channel: impl Into<String>) -> RedisSubscription {
        subscription::start(
            &self.inner.runtime,
            Arc::clone(&self.inner.state),
            self.inner.client.clone(),
            channel.into(),
        )
    }

    /// Runs one command under the breaker and the operation timeout, counting it.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let state = &*self.inner.state;
        let counters = &state.counters;
        counters.operations.fetch_add(1, Ordering::Relaxed);
        let permit = match state.breaker.acquire() {
            Ok(permit) => permit,
            Err(open) => {
                counters.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(RedisError::CircuitOpen {
                    retry_in: open.retry_in,
                });
            }
        };
        let Some(mut connection) = state.manager() else {
            // Not connected: nothing was sent, so this says nothing new about Redis (the
            // connection task is on it); the permit is dropped without a verdict.
            counters.failures.fetch_add(1, Ordering::Relaxed);
            return Err(RedisError::Unavailable { source: None });
        };
        let after = state.settings.op_timeout;
        match tokio::time::timeout(after, cmd.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => {
                permit.success();
                Ok(value)
            }
            Ok(Err(err)) => {
                counters.failures.fetch_add(1, Ordering::Relaxed);
                let err = RedisError::from_command(err);
                if matches!(err, RedisError::Unavailable { .. }) {
                    permit.failure();
                    state.suspect.notify_one();
                } else {
                    permit.success();
                }
                Err(err)
            }
            Err(_elapsed) => {
                counters.timeouts.fetch_add(1, Ordering::Relaxed);
                permit.failure();
                state.suspect.notify_one();
                Err(RedisError::Timeout { after })
            }
        }
    }

    /// The breaker around operations (for `/infra`, or to trip it by hand).
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.state.breaker
    }

    /// The counters and settings now.
    #[must_use]
    pub fn stats(&self) -> RedisStats {
        let state = &self.inner.state;
        let c = &state.counters;
        RedisStats {
            connected: state.connected.load(Ordering::Acquire),
            operations: c.operations.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            messages_dropped: c.messages_dropped.load(Ordering::Relaxed),
            op_timeout_ms: state.settings.op_timeout.as_secs_f64() * 1e3,
            connect_timeout_ms: state.settings.connect_timeout.as_secs_f64() * 1e3,
            breaker: state.breaker.stats(),
        }
    }
}

/// One step of [`RedisClient::scan_match`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanPage {
    /// The cursor to pass to the next step; 0 when the scan is complete.
    pub cursor: u64,
    /// The matching keys of this step (possibly none; possibly returned before).
    pub keys: Vec<Vec<u8>>,
}

/// `literal` as a Redis glob pattern that matches exactly `literal`: `*`, `?`, `[`, `]` and
/// `\` are escaped with a backslash (the pattern language of `SCAN MATCH`, `KEYS` and
/// `PSUBSCRIBE`). Append `*` to match every key that starts with `literal`.
///
/// ```
/// use groundwork_clients::redis::glob_escape;
///
/// assert_eq!(glob_escape("groundwork:llm:"), "groundwork:llm:");
/// // Without escaping, `a*:` would also match the keys of `ab:`.
/// assert_eq!(format!("{}*", glob_escape("a*:")), r"a\*:*");
/// ```
#[must_use]
pub fn glob_escape(literal: &str) -> String {
    let mut pattern = String::with_capacity(literal.len() + 4);
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// A [`RedisClient`]'s statistics and settings at one moment, for `/infra` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RedisStats {
    /// Whether the command connection is up: made, and its last check passed.
    pub connected: bool,
    /// Operations started (`get`, `set_ex`, `del`, `publish`, `scan_match`, `unlink`,
    /// `ping`).
    pub operations: u64,
    /// Operations that failed other than by a timeout or the breaker: not connected, a
    /// connection error, an error reply.
    pub failures: u64,
    /// Operations that hit the operation timeout.
    pub timeouts: u64,
    /// Operations refused at once because the breaker was open.
    pub rejected: u64,
    /// Connections made again after one was lost: the command connection replaced by the
    /// connection task, and subscriptions' pub/sub connections. (Reconnections redis-rs
    /// makes by itself inside the command connection are not seen.)
    pub reconnects: u64,
    /// Subscriptions whose handle is alive.
    pub subscriptions: u64,
    /// Messages received by subscriptions.
    pub messages: u64,
    /// Messages dropped because a subscription's buffer was full (its reader too slow).
    pub messages_dropped: u64,
    /// The configured operation timeout, milliseconds.
    pub op_timeout_ms: f64,
    /// The configured connect timeout, milliseconds.
    pub connect_timeout_ms: f64,
    /// The breaker around operations.
    pub breaker: BreakerStats,
}

impl RedisStats {
    /// Exports the figures through the `metrics` crate as gauges:
    /// `groundwork_redis_{connected,operations,failures,timeouts,rejected,reconnects,
    /// subscriptions,messages,messages_dropped,op_timeout_seconds,connect_timeout_seconds}`,
    /// and the breaker's as `groundwork_breaker_*{breaker="redis"}`.
    pub fn publish(&self) {
        let gauges = [
            (
                "groundwork_redis_connected",
                if self.connected { 1.0 } else { 0.0 },
            ),
            ("groundwork_redis_operations", self.operations as f64),
            ("groundwork_redis_failures", self.failures as f64),
            ("groundwork_redis_timeouts", self.timeouts as f64),
            ("groundwork_redis_rejected", self.rejected as f64),
            ("groundwork_redis_reconnects", self.reconnects as f64),
            ("groundwork_redis_subscriptions", self.subscriptions as f64),
            ("groundwork_redis_messages", self.messages as f64),
            (
                "groundwork_redis_messages_dropped",
                self.messages_dropped as f64,
            ),
            (
                "groundwork_redis_op_timeout_seconds",
                self.op_timeout_ms / 1e3,
            ),
            (
                "groundwork_redis_connect_timeout_seconds",
                self.connect_timeout_ms / 1e3,
            ),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name).set(value);
        }
        self.breaker.publish();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use groundwork_resilience::BreakerState;

    /// Nothing listens there (port 1 is privileged and unused).
    const NOWHERE: &str = "redis://127.0.0.1:1";

    #[test]
    fn defaults_are_for_a_cache() {
        let options = RedisOptions::new(NOWHERE);
        assert_eq!(options.op_timeout, Duration::from_millis(50));
        assert_eq!(options.connect_timeout, Duration::from_secs(1));
        assert_eq!(options.ping_interval, Duration::from_secs(1));
        assert_eq!(options.breaker.name(), "redis");
        assert!(options.clock.is_none());
    }

    #[tokio::test]
    async fn new_needs_no_server_and_fails_fast_until_connected() {
        let client = RedisClient::new(RedisOptions::new(NOWHERE)).unwrap();
        for _ in 0..10 {
            let started = Instant::now();
            let err = client.get("key").await.unwrap_err();
            assert!(started.elapsed() < Duration::from_millis(10));
            assert!(
                matches!(err, RedisError::Unavailable { source: None }),
                "{err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::Unavailable);
        }
        let stats = client.stats();
        assert!(!stats.connected);
        assert_eq!(
            (stats.operations, stats.failures, stats.timeouts),
            (10, 10, 0)
        );
        // Not being connected yet does not trip the breaker: nothing was sent.
        assert_eq!(stats.breaker.state, BreakerState::Closed);
    }

    #[tokio::test]
    async fn an_open_breaker_rejects_without_a_connection() {
        let client = RedisClient::new(RedisOptions::new(NOWHERE)).unwrap();
        client.breaker().record_failure();
        let err = client
            .set_ex("k", b"v", Duration::from_secs(1))
            .await
            .unwrap_err();
        let RedisError::CircuitOpen { retry_in } = err else {
            panic!("{err:?}");
        };
        assert!(retry_in > Duration::from_millis(900), "{retry_in:?}");
        assert_eq!(client.stats().rejected, 1);
    }

    #[tokio::test]
    async fn scan_and_unlink_are_operations_and_an_empty_unlink_sends_nothing() {
        let client = RedisClient::new(RedisOptions::new(NOWHERE)).unwrap();
        assert_eq!(client.unlink::<&str>(&[]).await.unwrap(), 0);
        assert_eq!(client.stats().operations, 0);
        let err = client.scan_match(0, "p:*", 100).await.unwrap_err();
        assert!(matches!(err, RedisError::Unavailable { .. }), "{err:?}");
        let err = client.unlink(&["p:1", "p:2"]).await.unwrap_err();
        assert!(matches!(err, RedisError::Unavailable { .. }), "{err:?}");
        assert_eq!(client.stats().operations, 2);
    }

    #[test]
    fn an_invalid_url_is_refused() {
        let err = RedisClient::new(RedisOptions::new("http://127.0.0.1/")).unwrap_err();
        assert!(matches!(err, RedisError::InvalidUrl { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisClient::new(RedisOptions::new(NOWHERE)).unwrap_err();
        assert!(matches!(err, RedisError::NoRuntime), "{err:?}");
    }

    #[tokio::test]
    async fn tls_urls_are_accepted() {
        assert!(RedisClient::new(RedisOptions::new("rediss://127.0.0.1:1/0")).is_ok());
    }

    #[test]
    fn replies_are_sorted_by_kind() {
        let loading = ::redis::RedisError::from((
            ::redis::ErrorKind::Server(ServerErrorKind::BusyLoading),
            "loading",
        ));
        assert!(matches!(
            RedisError::from_command(loading),
            RedisError::Unavailable { source: Some(_) }
        ));
        let wrong_type = ::redis::RedisError::from((
            ::redis::ErrorKind::Server(ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        let err = RedisError::from_command(wrong_type);
        assert!(matches!(err, RedisError::Command(_)), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Internal);
        let io =
            ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            RedisError::from_command(io),
            RedisError::Unavailable { .. }
        ));
        for err in [
            RedisError::Timeout {
                after: Duration::from_millis(50),
            },
            RedisError::CircuitOpen {
                retry_in: Duration::ZERO,
            },
        ] {
            assert_eq!(err.kind(), ErrorKind::Unavailable);
        }
    }

    #[test]
    fn glob_escape_leaves_plain_text_alone() {
        assert_eq!(glob_escape(""), "");
        assert_eq!(glob_escape("groundwork:llm:"), "groundwork:llm:");
        assert_eq!(
            glob_escape("tenant-a/b c.d^e-f{g}é"),
            "tenant-a/b c.d^e-f{g}é"
        );
    }

    #[test]
    fn glob_escape_escapes_every_special_character() {
        assert_eq!(glob_escape("*"), r"\*");
        assert_eq!(glob_escape("?"), r"\?");
        assert_eq!(glob_escape("["), r"\[");
        assert_eq!(glob_escape("]"), r"\]");
        assert_eq!(glob_escape(r"\"), r"\\");
        assert_eq!(glob_escape(r"a*b?c[d-e]f\g"), r"a\*b\?c\[d-e\]f\\g");
        // An escaped backslash before a star leaves the star special only where appended.
        assert_eq!(format!("{}*", glob_escape(r"p\")), r"p\\*");
    }

    /// Redis's matcher (`stringmatchlen` in `util.c`) for the subset `glob_escape` and a
    /// trailing `*` produce: literals, `\x` escapes, `*`. Enough to check the escaping
    /// without a server.
    fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_matches(rest, &text[skip..])),
            Some((b'\\', rest)) if !rest.is_empty() => {
                text.first() == Some(&rest[0]) && glob_matches(&rest[1..], &text[1..])
            }
            Some((b'?' | b'[', _)) => panic!("unescaped {pattern:?}"),
            Some((c, rest)) => text.first() == Some(c) && glob_matches(rest, &text[1..]),
        }
    }

    #[test]
    fn an_escaped_prefix_matches_only_its_own_keys() {
        // What the escaping prevents: unescaped, the prefix `a*:` is a wildcard.
        assert!(glob_matches(b"a*:*", b"ab:key"));
        for prefix in ["plain:", "a*:", "a?:", "a[bc]:", r"a\:", "*", "?[]\\*"] {
            let pattern = format!("{}*", glob_escape(prefix));
            assert!(
                glob_matches(pattern.as_bytes(), format!("{prefix}key").as_bytes()),
                "{pattern} must match {prefix}key"
            );
            assert!(
                glob_matches(pattern.as_bytes(), prefix.as_bytes()),
                "{pattern} must match {prefix}"
            );
            // Keys a raw (unescaped) pattern would also catch.
            for other in ["ab:key", "aX:key", "ab]:key", "ab:", "a:key", "zzz", "[]*"] {
                if other.starts_with(prefix) {
                    continue;
                }
                assert!(
                    !glob_matches(pattern.as_bytes(), other.as_bytes()),
                    "{pattern} must not match {other}"
                );
            }
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let options = RedisOptions::new("redis://app:s3cret@cache:6379/2");
        let debug = format!("{options:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("redis://app:***@cache:6379/2"), "{debug}");
    }

    #[tokio::test]
    async fn stats_serialize_and_publish_without_a_recorder() {
        let client = RedisClient::new(RedisOptions::new(NOWHERE)).unwrap();
        let stats = client.stats();
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["connected"], false);
        assert_eq!(json["op_timeout_ms"], 50.0);
        assert_eq!(json["breaker"]["name"], "redis");
        assert_eq!(json["breaker"]["state"], "closed");
        stats.publish();
    }
}
