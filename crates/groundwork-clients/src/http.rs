//! [`HttpClient`]: one pooled HTTP client for the whole process, with a DNS cache,
//! timeouts and statistics.
//!
//! Built once in `main` from [`HttpClientOptions`] and cloned wherever it is needed; clones
//! share the connection pool, the DNS cache and the counters.

mod dns;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use groundwork_core::clock::{Clock, SystemClock};
use groundwork_core::{Classify, ErrorKind};
use serde::{Serialize, Serializer};

pub use dns::{CachingResolver, DnsStats};

/// The `User-Agent` sent by default: `groundwork/<crate version>`.
pub const DEFAULT_USER_AGENT: &str = concat!("groundwork/", env!("CARGO_PKG_VERSION"));

/// Settings of an [`HttpClient`], each with its default. The defaults are the ones of the
/// original design notes (an aiohttp session: 30 connections per host, keep-alive 60 s,
/// connect timeout 10 s, total timeout 30 s, DNS cache 300 s).
///
/// ```
/// use std::time::Duration;
/// use groundwork_clients::http::HttpClientOptions;
///
/// let options = HttpClientOptions::new()
///     .timeout(Duration::from_secs(120)) // long LLM completions
///     .pool_max_idle_per_host(10);
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct HttpClientOptions {
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Option<Duration>,
    tcp_keepalive: Option<Duration>,
    connect_timeout: Duration,
    timeout: Duration,
    dns_ttl: Duration,
    user_agent: String,
    proxy_from_env: bool,
    clock: Arc<dyn Clock>,
}

impl Default for HttpClientOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClientOptions {
    /// The defaults, listed on each setter.
    pub fn new() -> Self {
        Self {
            pool_max_idle_per_host: 30,
            pool_idle_timeout: Some(Duration::from_secs(60)),
            tcp_keepalive: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            dns_ttl: Duration::from_secs(300),
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            proxy_from_env: true,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// How many idle connections are kept per host for reuse. Default: 30 (the notes'
    /// `limit_per_host`).
    ///
    /// Unlike aiohttp's limit this does not cap *open* connections: reqwest opens as many
    /// as there are concurrent requests and keeps at most this many once they are idle.
    /// `0` turns connection reuse off.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// How long an idle connection is kept for reuse, `None` for as long as the server
    /// keeps it. Default: 60 s (the notes' `keepalive_timeout`).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Idle time after which TCP keep-alive probes are sent on a connection, so that a
    /// peer or middlebox that vanished is noticed; `None` for no probes. Default: 60 s.
    pub fn tcp_keepalive(mut self, interval: Option<Duration>) -> Self {
        self.tcp_keepalive = interval;
        self
    }

    /// How long establishing a connection (DNS, TCP, TLS) may take. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a whole request may take, from connecting to the end of the response body.
    /// Default: 30 s. A single request can set its own with
    /// [`reqwest::RequestBuilder::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a host's DNS answer is reused ([`CachingResolver`]). Default: 300 s (the
    /// notes' `ttl_dns_cache`). `Duration::ZERO` asks the system for every new connection.
    pub fn dns_ttl(mut self, ttl: Duration) -> Self {
        self.dns_ttl = ttl;
        self
    }

    /// The `User-Agent` header. Default: [`DEFAULT_USER_AGENT`].
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Whether the `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` environment
    /// variables apply. Default: true (reqwest's behaviour).
    pub fn proxy_from_env(mut self, enabled: bool) -> Self {
        self.proxy_from_env = enabled;
        self
    }

    /// The clock that times DNS cache entries. Default: the system clock; tests pass a
    /// [`ManualClock`](groundwork_core::clock::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Why a request or the client's construction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpClientError {
    /// The client could not be built from its options (TLS setup, an invalid user agent).
    #[error("cannot build the HTTP client: {source}")]
    Build {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The request could not be built (an invalid URL or header).
    #[error("invalid HTTP request: {source}")]
    InvalidRequest {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// No connection could be made: the name did not resolve, the server refused or could
    /// not be reached, the connect timeout passed, or the TLS handshake failed.
    #[error("cannot connect: {source}")]
    Connect {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The request did not complete within its total timeout.
    #[error("HTTP request timed out: {source}")]
    Timeout {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The request failed after connecting: the connection was reset, the server broke
    /// the protocol, a redirect loop.
    #[error("HTTP request failed: {source}")]
    Request {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
}

impl HttpClientError {
    /// Sorts a reqwest error from sending a request. A connect timeout is a connect error.
    fn from_send(source: reqwest::Error) -> Self {
        if source.is_builder() {
            Self::InvalidRequest { source }
        } else if source.is_connect() {
            Self::Connect { source }
        } else if source.is_timeout() {
            Self::Timeout { source }
        } else {
            Self::Request { source }
        }
    }

    /// reqwest's error, for callers that need its details (status, URL).
    #[must_use]
    pub fn reqwest(&self) -> &reqwest::Error {
        match self {
            Self::Build { source }
            | Self::InvalidRequest { source }
            | Self::Connect { source }
            | Self::Timeout { source }
            | Self::Request { source } => source,
        }
    }
}

impl Classify for HttpClientError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Request { .. } => {
                ErrorKind::Unavailable
            }
            Self::Build { .. } | Self::InvalidRequest { .. } => ErrorKind::Internal,
        }
    }
}

/// A pooled HTTP client: reqwest over rustls (ring), with a [`CachingResolver`] and
/// counters. Cheap to clone; clones share the pool, the DNS cache and the counters.
///
/// Requests sent through [`HttpClient::send`] or [`HttpClient::execute`] are counted;
/// requests sent on the inner client ([`HttpClient::reqwest`]) use the same pool and DNS
/// cache but are not counted.
///
/// ```
/// use groundwork_clients::http::{HttpClient, HttpClientOptions};
///
/// let client = HttpClient::new(HttpClientOptions::default())?;
/// let stats = client.stats();
/// assert_eq!(stats.requests, 0);
/// assert_eq!(stats.pool_max_idle_per_host, 30);
/// # Ok::<(), groundwork_clients::http::HttpClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    resolver: CachingResolver,
    counters: Counters,
    limits: Limits,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    in_flight: AtomicU64,
    responses: AtomicU64,
    errors_timeout: AtomicU64,
    errors_connect: AtomicU64,
    errors_other: AtomicU64,
    latency_nanos: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Option<Duration>,
    tcp_keepalive: Option<Duration>,
    connect_timeout: Duration,
    timeout: Duration,
    dns_ttl: Duration,
}

/// Installs ring as the process's rustls crypto provider unless one is installed already.
///
/// reqwest is built with `rustls-no-provider` (aws-lc-rs, its default, is the heaviest C
/// build in the tree) and panics in `build()` if no provider is installed.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err means another thread installed a provider in between: that one is used.
        let _already_installed = rustls::crypto::ring::default_provider().install_default();
    }
}

impl HttpClient {
    /// Builds the client. Needs no runtime and makes no connection.
    ///
    /// Installs ring as the process-wide rustls crypto provider if none is installed.
    ///
    /// # Errors
    ///
    /// [`HttpClientError::Build`] if reqwest rejects the options (an invalid user agent, a
    /// TLS setup failure).
    pub fn new(options: HttpClientOptions) -> Result<Self, HttpClientError> {
        ensure_crypto_provider();
        let resolver = CachingResolver::with_clock(options.dns_ttl, Arc::clone(&options.clock));
        let mut builder = reqwest::Client::builder()
            .user_agent(options.user_agent)
            .pool_max_idle_per_host(options.pool_max_idle_per_host)
            .pool_idle_timeout(options.pool_idle_timeout)
            .tcp_keepalive(options.tcp_keepalive)
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .dns_resolver(resolver.clone());
        if !options.proxy_from_env {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|source| HttpClientError::Build { source })?;
        Ok(Self {
            client,
            shared: Arc::new(Shared {
                resolver,
                counters: Counters::default(),
                limits: Limits {
                    pool_max_idle_per_host: options.pool_max_idle_per_host,
                    pool_idle_timeout: options.pool_idle_timeout,
                    tcp_keepalive: options.tcp_keepalive,
                    connect_timeout: options.connect_timeout,
                    timeout: options.timeout,
                    dns_ttl: options.dns_ttl,
                },
            }),
        })
    }

    /// The inner reqwest client (a clone sharing the pool and DNS cache), for callers that
    /// need its full API. Requests sent on it directly are not counted.
    #[must_use]
    pub fn reqwest(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Starts a request; send it with [`HttpClient::send`] to have it counted.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    /// Starts a `GET` request; send it with [`HttpClient::send`].
    pub fn get(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    /// Starts a `POST` request; send it with [`HttpClient::send`].
    pub fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Builds and sends a request made with this client (or any reqwest client: it is sent
    /// on this one). Resolves when the response headers have arrived; the status is not
    /// checked (see [`reqwest::Response::error_for_status`]).
    ///
    /// # Errors
    ///
    /// [`HttpClientError::InvalidRequest`] if the request cannot be built, otherwise as
    /// [`HttpClient::execute`].
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, HttpClientError> {
        match request.build() {
            Ok(request) => self.execute(request).await,
            Err(source) => {
                let counters = &self.shared.counters;
                counters.requests.fetch_add(1, Ordering::Relaxed);
                counters.errors_other.fetch_add(1, Ordering::Relaxed);
                Err(HttpClientError::InvalidRequest { source })
            }
        }
    }

    /// Sends a request, counting it, its outcome and its latency (up to the response
    /// headers). A request dropped before it completes is counted as started only.
    ///
    /// # Errors
    ///
    /// [`HttpClientError::Connect`] if no connection could be made (DNS, refused, connect
    /// timeout, TLS), [`HttpClientError::Timeout`] if the total timeout passed,
    /// [`HttpClientError::Request`] for other transport failures.
    pub async fn execute(
        &self,
        request: reqwest::Request,
    ) -> Result<reqwest::Response, HttpClientError> {
        let counters = &self.shared.counters;
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight::enter(counters);
        let result = self.client.execute(request).await;
        let latency = u64::try_from(guard.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        drop(guard);
        counters.latency_nanos.fetch_add(latency, Ordering::Relaxed);
        match result {
            Ok(response) => {
                counters.responses.fetch_add(1, Ordering::Relaxed);
                Ok(response)
            }
            Err(source) => {
                let err = HttpClientError::from_send(source);
                let counter = match err {
                    HttpClientError::Timeout { .. } => &counters.errors_timeout,
                    HttpClientError::Connect { .. } => &counters.errors_connect,
                    _ => &counters.errors_other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// The DNS cache this client resolves through.
    #[must_use]
    pub fn resolver(&self) -> &CachingResolver {
        &self.shared.resolver
    }

    /// The counters and configured limits now.
    #[must_use]
    pub fn stats(&self) -> HttpClientStats {
        let c = &self.shared.counters;
        let limits = self.shared.limits;
        let dns = self.shared.resolver.stats();
        HttpClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            responses: c.responses.load(Ordering::Relaxed),
            errors_timeout: c.errors_timeout.load(Ordering::Relaxed),
            errors_connect: c.errors_connect.load(Ordering::Relaxed),
            errors_other: c.errors_other.load(Ordering::Relaxed),
            latency_total: Duration::from_nanos(c.latency_nanos.load(Ordering::Relaxed)),
            dns_hits: dns.hits,
            dns_misses: dns.misses,
            dns_failures: dns.failures,
            dns_entries: dns.entries,
            pool_max_idle_per_host: u64::try_from(limits.pool_max_idle_per_host)
                .unwrap_or(u64::MAX),
            pool_idle_timeout: limits.pool_idle_timeout,
            tcp_keepalive: limits.tcp_keepalive,
            connect_timeout: limits.connect_timeout,
            timeout: limits.timeout,
            dns_ttl: limits.dns_ttl,
        }
    }
}

/// Counts a request in flight until dropped, so a cancelled request is not left counted.
struct InFlight<'a> {
    counters: &'a Counters,
    started: Instant,
}

impl<'a> InFlight<'a> {
    fn enter(counters: &'a Counters) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            counters,
            started: Instant::now(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An [`HttpClient`]'s statistics and limits at one moment. Durations serialize as seconds
/// (`*_seconds` fields, `null` when unset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HttpClientStats {
    /// Requests started through [`HttpClient::send`] or [`HttpClient::execute`].
    pub requests: u64,
    /// Requests started and not yet answered or failed.
    pub in_flight: u64,
    /// Requests that got a response (of any status).
    pub responses: u64,
    /// Requests that failed on the total timeout.
    pub errors_timeout: u64,
    /// Requests that could not connect (DNS, refused, connect timeout, TLS).
    pub errors_connect: u64,
    /// Requests that failed otherwise (invalid request, reset, protocol error).
    pub errors_other: u64,
    /// Time from start to response headers (or failure), summed over completed requests;
    /// divide by `responses + errors_*` for the mean.
    #[serde(rename = "latency_seconds_total", serialize_with = "seconds")]
    pub latency_total: Duration,
    /// Resolutions answered from the DNS cache or a lookup already in flight.
    pub dns_hits: u64,
    /// Resolutions that made a lookup.
    pub dns_misses: u64,
    /// Lookups that failed (never cached).
    pub dns_failures: u64,
    /// Hosts whose addresses are cached.
    pub dns_entries: u64,
    /// Configured idle connections kept per host.
    pub pool_max_idle_per_host: u64,
    /// Configured idle connection lifetime.
    #[serde(
        rename = "pool_idle_timeout_seconds",
        serialize_with = "option_seconds"
    )]
    pub pool_idle_timeout: Option<Duration>,
    /// Configured TCP keep-alive interval.
    #[serde(rename = "tcp_keepalive_seconds", serialize_with = "option_seconds")]
    pub tcp_keepalive: Option<Duration>,
    /// Configured connect timeout.
    #[serde(rename = "connect_timeout_seconds", serialize_with = "seconds")]
    pub connect_timeout: Duration,
    /// Configured total request timeout.
    #[serde(rename = "timeout_seconds", serialize_with = "seconds")]
    pub timeout: Duration,
    /// Configured DNS cache TTL.
    #[serde(rename = "dns_ttl_seconds", serialize_with = "seconds")]
    pub dns_ttl: Duration,
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

// serde's `serialize_with` hands over a reference to the field's type.
#[allow(clippy::ref_option)]
fn option_seconds<S: Serializer>(
    duration: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match duration {
        Some(duration) => serializer.serialize_some(&duration.as_secs_f64()),
        None => serializer.serialize_none(),
    }
}

impl HttpClientStats {
    /// All failed requests, whatever their class.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors_timeout + self.errors_connect + self.errors_other
    }

    /// Exports these figures through the `metrics` facade, labelled `client=<name>`:
    /// the counters `groundwork_http_client_{requests,responses}_total`,
    /// `groundwork_http_client_errors_total` (also labelled `class=timeout|connect|other`),
    /// `groundwork_http_client_dns_{hits,misses,failures}_total`; the gauges
    /// `groundwork_http_client_{in_flight,dns_entries,latency_seconds_total}` and the limits
    /// `groundwork_http_client_{pool_max_idle_per_host,pool_idle_timeout_seconds,
    /// tcp_keepalive_seconds,connect_timeout_seconds,timeout_seconds,dns_ttl_seconds}`.
    pub fn publish(&self, name: &str) {
        let labels = [("client", name.to_owned())];
        let counters = [
            ("groundwork_http_client_requests_total", self.requests),
            ("groundwork_http_client_responses_total", self.responses),
            ("groundwork_http_client_dns_hits_total", self.dns_hits),
            ("groundwork_http_client_dns_misses_total", self.dns_misses),
            (
                "groundwork_http_client_dns_failures_total",
                self.dns_failures,
            ),
        ];
        for (metric, value) in counters {
            metrics::counter!(metric, &labels).absolute(value);
        }
        for (class, value) in [
            ("timeout", self.errors_timeout),
            ("connect", self.errors_connect),
            ("other", self.errors_other),
        ] {
            metrics::counter!(
                "groundwork_http_client_errors_total",
                "client" => name.to_owned(),
                "class" => class
            )
            .absolute(value);
        }
        let gauges = [
            ("groundwork_http_client_in_flight", self.in_flight as f64),
            (
                "groundwork_http_client_dns_entries",
                self.dns_entries as f64,
            ),
            (
                "groundwork_http_client_latency_seconds_total",
                self.latency_total.as_secs_f64(),
            ),
            (
                "groundwork_http_client_pool_max_idle_per_host",
                self.pool_max_idle_per_host as f64,
            ),
            (
                "groundwork_http_client_connect_timeout_seconds",
                self.connect_timeout.as_secs_f64(),
            ),
            (
                "groundwork_http_client_timeout_seconds",
                self.timeout.as_secs_f64(),
            ),
            (
                "groundwork_http_client_dns_ttl_seconds",
                self.dns_ttl.as_secs_f64(),
            ),
        ];
        for (metric, value) in gauges {
            metrics::gauge!(metric, &labels).set(value);
        }
        if let Some(timeout) = self.pool_idle_timeout {
            metrics::gauge!("groundwork_http_client_pool_idle_timeout_seconds", &labels)
                .set(timeout.as_secs_f64());
        }
        if let Some(interval) = self.tcp_keepalive {
            metrics::gauge!("groundwork_http_client_tcp_keepalive_seconds", &labels)
                .set(interval.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn defaults_follow_the_design_notes() {
        let client = HttpClient::new(HttpClientOptions::new()).unwrap();
        let stats = client.stats();
        assert_eq!(stats.pool_max_idle_per_host, 30);
        assert_eq!(stats.pool_idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(stats.tcp_keepalive, Some(Duration::from_secs(60)));
        assert_eq!(stats.connect_timeout, Duration::from_secs(10));
        assert_eq!(stats.timeout, Duration::from_secs(30));
        assert_eq!(stats.dns_ttl, Duration::from_secs(300));
        assert!(DEFAULT_USER_AGENT.starts_with("groundwork/0."));
    }

    #[test]
    fn building_twice_and_with_a_provider_installed_works() {
        ensure_crypto_provider();
        ensure_crypto_provider();
        assert!(HttpClient::new(HttpClientOptions::new()).is_ok());
        assert!(HttpClient::new(HttpClientOptions::new()).is_ok());
    }

    #[test]
    fn an_invalid_user_agent_is_a_build_error() {
        let err = HttpClient::new(HttpClientOptions::new().user_agent("bad\nagent")).unwrap_err();
        assert!(matches!(err, HttpClientError::Build { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[test]
    fn stats_serialize_durations_as_seconds() {
        let client = HttpClient::new(HttpClientOptions::new().pool_idle_timeout(None)).unwrap();
        let json = serde_json::to_value(client.stats()).unwrap();
        assert_eq!(json["timeout_seconds"], 30.0);
        assert_eq!(json["pool_idle_timeout_seconds"], serde_json::Value::Null);
        assert_eq!(json["latency_seconds_total"], 0.0);
        assert_eq!(json["dns_misses"], 0);
    }

    #[test]
    fn publishing_without_a_recorder_is_harmless() {
        let client = HttpClient::new(HttpClientOptions::new()).unwrap();
        client.stats().publish("test");
    }
}
