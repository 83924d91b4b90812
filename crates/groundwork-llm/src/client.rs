//! [`LlmClient`]: an OpenAI-compatible chat completions client on the shared HTTP pool.
//!
//! One client serves every upstream: each call names its [`Upstream`] (base URL and API
//! key), and the body names the model. Requests go to `{base_url}/chat/completions` with
//! `Authorization: Bearer <key>` over the process's [`HttpClient`] (its connection pool, DNS
//! cache and counters).
//!
//! - **Bodies are sent as given**: every field, known or not, reaches the upstream. Only
//!   `stream` is set by the call: [`LlmClient::stream`] sends `"stream": true`;
//!   [`LlmClient::complete`] turns a `"stream"` present in the body into `false` and drops
//!   `stream_options` (which upstreams refuse without streaming), and adds nothing to a body
//!   without `"stream"`.
//! - **Retries** (per [`ClientOptions::retry`], full-jitter backoff): 429, the 5xx statuses
//!   of an overloaded or unreachable server (500, 502, 503, 504, and 520–529 of CDNs and
//!   providers), connection failures and timeouts. The wait before a retry is the longer of
//!   the backoff delay and the answer's `Retry-After` (seconds or HTTP date; `retry-after-ms`
//!   is read too); an answer asking for more than [`ClientOptions::max_retry_after`], or for
//!   a wait that would end past the call's total timeout, is returned at once. Other 4xx
//!   answers are never retried. A stream is retried only until its first event, never once
//!   the caller has something.
//! - **Errors are passed on**: a non-2xx answer becomes [`LlmError::Upstream`] with its
//!   status, body, content type and `Retry-After`, for a proxy to forward verbatim.
//! - **Timeouts**: the whole call, every attempt and wait included
//!   ([`ClientOptions::total_timeout`], until the first event for a stream); a whole
//!   non-streaming attempt ([`ClientOptions::timeout`]); for a stream, its first event
//!   ([`ClientOptions::first_event_timeout`]) and every silence after it
//!   ([`ClientOptions::idle_timeout`]).
//! - **A breaker per upstream host** (`llm:<host>`): while it is open, calls fail at once
//!   with [`LlmError::CircuitOpen`]. Only 429, 5xx outages, connection failures and
//!   timeouts count against it.
//! - **Bounded connections per upstream**: at most
//!   [`ClientOptions::max_connections_per_upstream`] requests (default 30) are in flight to
//!   one host, so the client never opens more connections than that; others wait for a slot
//!   within their timeout.
//!
//! ```
//! use std::time::Duration;
//! use groundwork_clients::http::{HttpClient, HttpClientOptions};
//! use groundwork_llm::client::{ClientOptions, LlmClient, Upstream};
//! use groundwork_resilience::{BreakerConfig, RetryPolicy};
//!
//! let http = HttpClient::new(HttpClientOptions::default())?; // once, in `main`
//! let client = LlmClient::new(
//!     http,
//!     ClientOptions::new()
//!         .timeout(Duration::from_secs(120))
//!         .retry(RetryPolicy::new().max_attempts(4))
//!         .breaker(|name| BreakerConfig::new(name).consecutive_failures(3)),
//! );
//! let upstream = Upstream::new("https://api.openai.com/v1").with_api_key("sk-secret");
//! assert!(!format!("{upstream:?}").contains("sk-secret"));
//!
//! let stats = client.stats();
//! assert_eq!((stats.calls, stats.retries), (0, 0));
//! stats.publish("openai"); // `groundwork_llm_client_*{client="openai"}`
//! # Ok::<(), groundwork_clients::http::HttpClientError>(())
//! ```
//!
//! Calling it (inside a Tokio runtime):
//!
//! ```no_run
//! use futures_util::StreamExt as _;
//! use groundwork_llm::client::{LlmClient, LlmError, SseEvent, Upstream};
//!
//! async fn ask(client: &LlmClient, upstream: &Upstream) -> Result<(), LlmError> {
//!     let body = serde_json::json!({
//!         "model": "gpt-4o-mini",
//!         "messages": [{"role": "user", "content": "Hello"}],
//!         "top_k": 40, // provider fields are sent as they are
//!     });
//!     let reply = client.complete(upstream, &body).await?;
//!     println!("{} {}", reply.status, String::from_utf8_lossy(&reply.body));
//!
//!     let mut events = client.stream(upstream, &body).await?;
//!     while let Some(event) = events.next().await {
//!         match event? {
//!             SseEvent::Data(chunk) => println!("{}", String::from_utf8_lossy(&chunk)),
//!             SseEvent::Done => println!("complete"),
//!         }
//!     }
//!     Ok(())
//! }
//! ```

mod error;
mod options;
mod sse;
mod stats;
mod stream;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use groundwork_clients::http::{HttpClient, HttpClientError};
use groundwork_resilience::{CircuitBreaker, timeout};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use reqwest::{StatusCode, Url};
use serde::ser::{Serialize, SerializeMap as _, Serializer};
use serde_json::{Map, Value};
use tokio::time::Instant;

pub use error::{LlmError, StreamCut, TimeoutStage};
pub use options::ClientOptions;
pub use sse::{MAX_EVENT_BYTES, SseEvent};
pub use stats::LlmClientStats;
pub use stream::EventStream;

use stats::{Counters, bump};

/// Parses `bytes` as a whole event stream, appending its events to `out` (for the tests of
/// other modules).
#[cfg(test)]
pub(crate) fn sse_parser_for_tests(bytes: &[u8], out: &mut std::collections::VecDeque<SseEvent>) {
    let mut parser = sse::SseParser::new();
    let fed = parser.feed(bytes, out);
    assert!(fed.is_ok(), "an event too large");
    out.extend(parser.finish());
}
use stream::EventReader;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The request timeout given to streaming requests, replacing the [`HttpClient`]'s total
/// timeout: streams are bounded by their first-event and idle timeouts instead.
const STREAM_REQUEST_LIMIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How much longer than [`ClientOptions::timeout`] the HTTP client's own timeout is set, so
/// that the client's timer (which says which stage ran out) fires first.
const TIMEOUT_MARGIN: Duration = Duration::from_secs(1);

/// An OpenAI-compatible API to call: its base URL and API key.
///
/// `Debug` does not show the key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// The API's base URL, without the endpoint: `https://api.openai.com/v1`. Requests go to
    /// `{base_url}/chat/completions` (a trailing `/` is ignored).
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`; `None` sends no `Authorization` header (local
    /// servers).
    pub api_key: Option<String>,
}

impl Upstream {
    /// An upstream without an API key.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
        }
    }

    /// The same upstream with this API key.
    #[must_use]
    pub fn with_api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A successful answer to [`LlmClient::complete`], as the upstream sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamReply {
    /// The upstream's status (2xx, normally 200).
    pub status: StatusCode,
    /// The upstream's `Content-Type` (normally `application/json`).
    pub content_type: Option<String>,
    /// The response body, byte for byte.
    pub body: Bytes,
}

/// An OpenAI-compatible chat completions client (see the [module documentation](self)).
///
/// Cheap to clone: clones share the HTTP pool, the breakers and the counters.
#[derive(Clone)]
pub struct LlmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    options: ClientOptions,
    /// One breaker per upstream, by name (`llm:<host>[:<port>]`).
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    /// The in-flight slots of each upstream, by the same name
    /// ([`ClientOptions::max_connections_per_upstream`]).
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Every upstream called so far, worked out once (at most [`MAX_ENDPOINTS`]).
    endpoints: Mutex<HashMap<Upstream, Arc<Endpoint>>>,
    counters: Arc<Counters>,
}

/// How many upstreams [`Inner::endpoints`] keeps; past that it starts again from empty (a
/// client calls a handful of upstreams, and a forgotten one is only worked out again).
const MAX_ENDPOINTS: usize = 256;

/// What every call to one [`Upstream`] shares, worked out on its first call: parsing the
/// URL, naming the host and building the headers on every call took a measurable share of a
/// proxied miss's CPU time (`bench/llm_proxy.sh`).
struct Endpoint {
    /// `{base_url}/chat/completions`.
    url: Url,
    /// The headers of a non-streaming call (`[0]`) and of a streaming one (`[1]`).
    headers: [HeaderMap; 2],
    breaker: CircuitBreaker,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("options", &self.inner.options)
            .field("counters", &self.inner.counters)
            .finish_non_exhaustive()
    }
}

/// A request ready to be sent, once per attempt.
struct Prepared {
    endpoint: Arc<Endpoint>,
    stream: bool,
    body: Bytes,
}

impl Prepared {
    fn url(&self) -> &Url {
        &self.endpoint.url
    }

    fn headers(&self) -> &HeaderMap {
        &self.endpoint.headers[usize::from(self.stream)]
    }

    fn breaker(&self) -> &CircuitBreaker {
        &self.endpoint.breaker
    }
}

impl LlmClient {
    /// A client sending its requests through `http`. Makes no connection.
    pub fn new(http: HttpClient, options: ClientOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                options,
                breakers: Mutex::new(HashMap::new()),
                slots: Mutex::new(HashMap::new()),
                endpoints: Mutex::new(HashMap::new()),
                counters: Arc::new(Counters::default()),
            }),
        }
    }

    /// Sends a chat completions request and returns the upstream's answer once complete.
    ///
    /// `body` is sent as it is (see the [module documentation](self) for `stream`), so
    /// provider-specific fields reach the upstream. Failed attempts are retried as the
    /// module documentation says.
    ///
    /// # Errors
    /// - [`LlmError::Upstream`] for a non-2xx answer (after the last attempt for a retryable
    ///   one, or at once when its `Retry-After` is over the limit).
    /// - [`LlmError::Transport`] or [`LlmError::Timeout`] when the last attempt could not
    ///   connect or ran out of time (its own, or the call's
    ///   [total timeout](ClientOptions::total_timeout)).
    /// - [`LlmError::CircuitOpen`] when the upstream's breaker is open (nothing is sent).
    /// - [`LlmError::InvalidRequest`] when `body` is not a JSON object;
    ///   [`LlmError::InvalidUpstream`] when the base URL or key are unusable.
    pub async fn complete(
        &self,
        upstream: &Upstream,
        body: &Value,
    ) -> Result<UpstreamReply, LlmError> {
        bump(&self.inner.counters.calls);
        let prepared = self.prepare(upstream, body, false)?;
        self.run(prepared.breaker(), |deadline| {
            self.complete_once(&prepared, deadline)
        })
        .await
    }

    /// Sends a chat completions request with `"stream": true` and returns its events as they
    /// arrive, once the first one is there.
    ///
    /// Attempts that fail before the first event (connection failures, 429 or 5xx answers,
    /// a stream cut or silent past [`ClientOptions::first_event_timeout`]) are retried like
    /// [`complete`](Self::complete)'s. After that the events go to the caller, and a failure
    /// is the stream's last item (see [`EventStream`]).
    ///
    /// # Errors
    /// As [`complete`](Self::complete), plus [`LlmError::Timeout`] when the last attempt's
    /// first event did not come in time, [`LlmError::StreamAborted`] when it broke off
    /// before its first event, and [`LlmError::NotAStream`] when the upstream answered JSON.
    pub async fn stream(&self, upstream: &Upstream, body: &Value) -> Result<EventStream, LlmError> {
        let counters = &self.inner.counters;
        bump(&counters.calls);
        bump(&counters.stream_calls);
        let prepared = self.prepare(upstream, body, true)?;
        let reader = self
            .run(prepared.breaker(), |deadline| {
                self.stream_once(&prepared, deadline)
            })
            .await?;
        Ok(EventStream::new(
            reader,
            self.inner.options.idle_timeout,
            Arc::clone(counters),
        ))
    }

    /// The counters, and the state of the breaker of every upstream called so far.
    #[must_use]
    pub fn stats(&self) -> LlmClientStats {
        let mut breakers: Vec<_> = self
            .breakers()
            .values()
            .map(CircuitBreaker::stats)
            .collect();
        breakers.sort_by(|a, b| a.name.cmp(&b.name));
        self.inner.counters.snapshot(breakers)
    }

    fn breakers(&self) -> std::sync::MutexGuard<'_, HashMap<String, CircuitBreaker>> {
        // The map only ever grows by whole entries: after a panic it is still usable.
        self.inner
            .breakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The in-flight slots of upstream `name`, created on first use.
    fn slots(&self, name: &str) -> Arc<Semaphore> {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            slots
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.inner.options.max_connections))),
        )
    }

    /// Waits for an in-flight slot of the prepared request's upstream.
    async fn slot(prepared: &Prepared) -> Result<OwnedSemaphorePermit, LlmError> {
        Arc::clone(&prepared.endpoint.slots)
            .acquire_owned()
            .await
            // The semaphore is never closed; this is unreachable in practice.
            .map_err(|_| LlmError::InvalidUpstream {
                base_url: prepared.url().to_string(),
                reason: "the upstream's request slots are closed".to_owned(),
            })
    }

    /// The breaker named `name`, created on first use.
    fn breaker(&self, name: &str) -> CircuitBreaker {
        let mut breakers = self.breakers();
        if let Some(breaker) = breakers.get(name) {
            return breaker.clone();
        }
        let breaker = (self.inner.options.breaker)(name).build();
        breakers.insert(name.to_owned(), breaker.clone());
        breaker
    }

    fn prepare(
        &self,
        upstream: &Upstream,
        body: &Value,
        stream: bool,
    ) -> Result<Prepared, LlmError> {
        let endpoint = self.endpoint(upstream)?;
        let Some(fields) = body.as_object() else {
            return Err(LlmError::InvalidRequest {
                reason: "the body must be a JSON object".to_owned(),
            });
        };
        let body = serde_json::to_vec(&WithStream { fields, stream }).map_err(|err| {
            LlmError::InvalidRequest {
                reason: err.to_string(),
            }
        })?;
        Ok(Prepared {
            endpoint,
            stream,
            body: Bytes::from(body),
        })
    }

    /// The [`Endpoint`] of `upstream`, worked out on its first call.
    fn endpoint(&self, upstream: &Upstream) -> Result<Arc<Endpoint>, LlmError> {
        let endpoints = || {
            self.inner
                .endpoints
                .lock()
                // Entries are inserted whole: after a panic the map is still usable.
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some(endpoint) = endpoints().get(upstream) {
            return Ok(Arc::clone(endpoint));
        }
        // Worked out outside the lock; two first calls racing both do it, and one wins.
        let endpoint = Arc::new(self.work_out(upstream)?);
        let mut endpoints = endpoints();
        if endpoints.len() >= MAX_ENDPOINTS {
            endpoints.clear();
        }
        Ok(Arc::clone(
            endpoints.entry(upstream.clone()).or_insert(endpoint),
        ))
    }

    fn work_out(&self, upstream: &Upstream) -> Result<Endpoint, LlmError> {
        let invalid = |reason: String| LlmError::InvalidUpstream {
            base_url: upstream.base_url.clone(),
            reason,
        };
        let endpoint = format!(
            "{}/chat/completions",
            upstream.base_url.trim_end_matches('/')
        );
        let url = Url::parse(&endpoint).map_err(|err| invalid(err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("not an http or https URL".to_owned()));
        }
        let Some(host) = url.host_str() else {
            return Err(invalid("no host".to_owned()));
        };
        let name = match url.port() {
            Some(port) => format!("llm:{host}:{port}"),
            None => format!("llm:{host}"),
        };

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &upstream.api_key {
            let mut value = HeaderValue::try_from(format!("Bearer {key}"))
                .map_err(|_| invalid("the API key is not a valid header value".to_owned()))?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut streaming = headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        streaming.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));

        Ok(Endpoint {
            url,
            headers: [headers, streaming],
            breaker: self.breaker(&name),
            slots: self.slots(&name),
        })
    }

    /// Runs `attempt` under the breaker, retrying outages per the options, all within the
    /// total timeout: `attempt` gets the call's deadline and must end by it.
    async fn run<T, F, Fut>(&self, breaker: &CircuitBreaker, mut attempt: F) -> Result<T, LlmError>
    where
        F: FnMut(Instant) -> Fut,
        Fut: Future<Output = Result<T, LlmError>>,
    {
        let inner = &*self.inner;
        let counters = &inner.counters;
        // Capped at a year, so that the addition cannot overflow.
        let deadline = Instant::now() + inner.options.total_timeout.min(STREAM_REQUEST_LIMIT);
        let mut backoff = inner.options.retry.backoff();
        let mut last = None;
        loop {
            let permit = match breaker.acquire() {
                Ok(permit) => permit,
                Err(source) => {
                    bump(&counters.rejected);
                    // On a retry, the answer that made the breaker open says more.
                    return Err(last.unwrap_or(LlmError::CircuitOpen { source }));
                }
            };
            bump(&counters.attempts);
            let err = match attempt(deadline).await {
                Ok(value) => {
                    permit.success();
                    return Ok(value);
                }
                Err(err) => err,
            };
            counters.failed(&err);
            if !err.is_outage() {
                // The upstream answered: it is healthy, the request is not.
                permit.success();
                return Err(err);
            }
            permit.failure();
            let retry_after = err.retry_after();
            if retry_after.is_some_and(|wait| wait > inner.options.max_retry_after) {
                tracing::debug!(
                    breaker = breaker.name(),
                    error = %err,
                    ?retry_after,
                    "not retrying: Retry-After is over the limit"
                );
                return Err(err);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if retry_after.is_some_and(|wait| wait >= left) {
                tracing::debug!(
                    breaker = breaker.name(),
                    error = %err,
                    ?retry_after,
                    ?left,
                    "not retrying: Retry-After ends past the total timeout"
                );
                return Err(err);
            }
            let Some(delay) = backoff.next() else {
                return Err(err);
            };
            let wait = delay.max(retry_after.unwrap_or(Duration::ZERO));
            if wait >= left {
                tracing::debug!(
                    breaker = breaker.name(),
                    error = %err,
                    ?wait,
                    ?left,
                    "not retrying: no time left within the total timeout"
                );
                return Err(err);
            }
            tracing::debug!(
                breaker = breaker.name(),
                error = %err,
                ?wait,
                "retrying the upstream"
            );
            bump(&counters.retries);
            tokio::time::sleep(wait).await;
            last = Some(err);
        }
    }

    fn request(&self, prepared: &Prepared, timeout: Duration) -> reqwest::RequestBuilder {
        self.inner
            .http
            .request(reqwest::Method::POST, prepared.url().clone())
            .headers(prepared.headers().clone())
            .body(prepared.body.clone())
            .timeout(timeout)
    }

    /// One non-streaming attempt: the answer, whole, within the attempt timeout and by the
    /// call's `deadline`.
    async fn complete_once(
        &self,
        prepared: &Prepared,
        deadline: Instant,
    ) -> Result<UpstreamReply, LlmError> {
        let (limit, stage) =
            attempt_limit(self.inner.options.timeout, TimeoutStage::Request, deadline);
        let request = self.request(prepared, limit.saturating_add(TIMEOUT_MARGIN));
        let attempt = async {
            let _slot = Self::slot(prepared).await?;
            let response = self.send(request).await?;
            let status = response.status();
            if !status.is_success() {
                return Err(upstream_error(response).await);
            }
            let content_type = content_type(response.headers());
            let body = response.bytes().await.map_err(body_error)?;
            Ok(UpstreamReply {
                status,
                content_type,
                body,
            })
        };
        timeout(limit, attempt)
            .await
            .unwrap_or_else(|source| Err(LlmError::Timeout { stage, source }))
    }

    /// One streaming attempt: the response, with its first event read, within the
    /// first-event timeout and by the call's `deadline`.
    async fn stream_once(
        &self,
        prepared: &Prepared,
        deadline: Instant,
    ) -> Result<EventReader, LlmError> {
        let (limit, stage) = attempt_limit(
            self.inner.options.first_event_timeout,
            TimeoutStage::FirstEvent,
            deadline,
        );
        let request = self.request(prepared, STREAM_REQUEST_LIMIT);
        let attempt = async {
            let slot = Self::slot(prepared).await?;
            let response = self.send(request).await?;
            let status = response.status();
            if !status.is_success() {
                return Err(upstream_error(response).await);
            }
            let content_type = content_type(response.headers());
            if content_type
                .as_deref()
                .is_some_and(|value| value.trim_start().starts_with("application/json"))
            {
                let body = response.bytes().await.map_err(body_error)?;
                return Err(LlmError::NotAStream {
                    status,
                    content_type,
                    body,
                });
            }
            let mut reader = EventReader::new(response, Some(slot));
            reader.fill(None).await.map_err(|err| match err {
                stream::ReadError::Cut(cause) => LlmError::StreamAborted { events: 0, cause },
                stream::ReadError::Idle(source) => LlmError::Timeout {
                    stage: TimeoutStage::FirstEvent,
                    source,
                },
            })?;
            Ok(reader)
        };
        timeout(limit, attempt)
            .await
            .unwrap_or_else(|source| Err(LlmError::Timeout { stage, source }))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, LlmError> {
        self.inner
            .http
            .send(request)
            .await
            .map_err(|source| LlmError::Transport { source })
    }
}

/// The time limit of one attempt and the stage named when it runs out: the attempt's own
/// `limit` (`stage`), or what is left before the call's `deadline` when that is shorter
/// ([`TimeoutStage::Total`]).
fn attempt_limit(
    limit: Duration,
    stage: TimeoutStage,
    deadline: Instant,
) -> (Duration, TimeoutStage) {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < limit {
        (left, TimeoutStage::Total)
    } else {
        (limit, stage)
    }
}

/// A chat completions body with `stream` set: `true` is written over or added;
/// `false` is written over an existing `stream` (and `stream_options` is left out), but not
/// added. Every other field is written as it is, in its order.
struct WithStream<'a> {
    fields: &'a Map<String, Value>,
    stream: bool,
}

impl Serialize for WithStream<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let mut has_stream = false;
        for (key, value) in self.fields {
            match key.as_str() {
                "stream" => {
                    has_stream = true;
                    map.serialize_entry(key, &self.stream)?;
                }
                "stream_options" if !self.stream => {}
                _ => map.serialize_entry(key, value)?,
            }
        }
        if self.stream && !has_stream {
            map.serialize_entry("stream", &true)?;
        }
        map.end()
    }
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A failure reading a response body.
fn body_error(source: reqwest::Error) -> LlmError {
    let source = if source.is_timeout() {
        HttpClientError::Timeout { source }
    } else {
        HttpClientError::Request { source }
    };
    LlmError::Transport { source }
}

/// Reads a non-2xx answer into [`LlmError::Upstream`].
async fn upstream_error(response: reqwest::Response) -> LlmError {
    let status = response.status();
    let content_type = content_type(response.headers());
    let retry_after = retry_after(response.headers(), SystemTime::now());
    match response.bytes().await {
        Ok(body) => LlmError::Upstream {
            status,
            body,
            content_type,
            retry_after,
        },
        Err(err) => body_error(err),
    }
}

/// The wait an answer asks for: `retry-after-ms` (OpenAI's, in milliseconds), else
/// `Retry-After` in seconds or as an HTTP date (a date in the past is no wait).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
    };
    if let Some(millis) = text(HeaderName::from_static("retry-after-ms"))
        .and_then(|value| value.parse::<f64>().ok())
        .and_then(|millis| Duration::try_from_secs_f64(millis / 1000.0).ok())
    {
        return Some(millis);
    }
    let value = text(RETRY_AFTER)?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use groundwork_clients::http::HttpClientOptions;
    use serde_json::json;

    use super::*;

    fn client() -> LlmClient {
        LlmClient::new(
            HttpClient::new(HttpClientOptions::new().proxy_from_env(false)).unwrap(),
            ClientOptions::new(),
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let wait = |pairs| retry_after(&headers(pairs), now);
        assert_eq!(wait(&[("retry-after", "2")]), Some(Duration::from_secs(2)));
        assert_eq!(
            wait(&[("retry-after", " 1.5 ")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait(&[("retry-after", "Sun, 06 Nov 1994 08:50:07 GMT")]),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(
            wait(&[("retry-after", "20"), ("retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[("retry-after", "-3")]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn bodies_keep_every_field_and_get_the_callers_stream() {
        let body = json!({"model": "m", "top_k": 3, "x_provider": {"a": [1, 2]}, "messages": []});
        let fields = body.as_object().unwrap();
        let streamed: Value = serde_json::from_slice(
            &serde_json::to_vec(&WithStream {
                fields,
                stream: true,
            })
            .unwrap(),
        )
        .unwrap();
        let mut expected = body.clone();
        expected["stream"] = json!(true);
        assert_eq!(streamed, expected);
        let plain: Value = serde_json::from_slice(
            &serde_json::to_vec(&WithStream {
                fields,
                stream: false,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(plain, body, "no `stream` added");

        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        let fields = body.as_object().unwrap();
        let plain: Value = serde_json::from_slice(
            &serde_json::to_vec(&WithStream {
                fields,
                stream: false,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(plain, json!({"model": "m", "stream": false}));
        let streamed: Value = serde_json::from_slice(
            &serde_json::to_vec(&WithStream {
                fields,
                stream: true,
            })
            .unwrap(),
        )
        .unwrap();
        assert_eq!(streamed, body);
    }

    #[test]
    fn upstreams_get_one_breaker_per_host() {
        let client = client();
        let body = json!({});
        let name = |base: &str| {
            client
                .prepare(&Upstream::new(base), &body, false)
                .map(|prepared| {
                    (
                        prepared.url().to_string(),
                        prepared.breaker().name().to_owned(),
                    )
                })
        };
        assert_eq!(
            name("https://api.openai.com/v1/").unwrap(),
            (
                "https://api.openai.com/v1/chat/completions".to_owned(),
                "llm:api.openai.com".to_owned()
            )
        );
        assert_eq!(
            name("http://127.0.0.1:8000/v1").unwrap().1,
            "llm:127.0.0.1:8000"
        );
        assert!(matches!(
            name("ftp://example.com"),
            Err(LlmError::InvalidUpstream { .. })
        ));
        assert!(matches!(
            name("not a url"),
            Err(LlmError::InvalidUpstream { .. })
        ));
        let _ = name("https://api.openai.com/other");
        assert_eq!(client.stats().breakers.len(), 2, "one per host");
    }

    #[test]
    fn an_upstream_is_worked_out_once_and_the_memo_is_bounded() {
        let client = client();
        let body = json!({});
        let upstream = Upstream::new("http://127.0.0.1:8000/v1").with_api_key("sk-a");
        let first = client.prepare(&upstream, &body, false).unwrap();
        let again = client.prepare(&upstream, &body, true).unwrap();
        assert!(Arc::ptr_eq(&first.endpoint, &again.endpoint));
        assert_eq!(first.headers()[ACCEPT], "application/json");
        assert_eq!(again.headers()[ACCEPT], "text/event-stream");
        assert_eq!(again.headers()[AUTHORIZATION], "Bearer sk-a");
        // Another key is another endpoint (other headers), on the same host's breaker.
        let other = client
            .prepare(&upstream.clone().with_api_key("sk-b"), &body, false)
            .unwrap();
        assert!(!Arc::ptr_eq(&first.endpoint, &other.endpoint));
        assert_eq!(other.headers()[AUTHORIZATION], "Bearer sk-b");
        assert_eq!(other.breaker().name(), first.breaker().name());

        for port in 0..(MAX_ENDPOINTS + 10) {
            let upstream = Upstream::new(format!("http://127.0.0.1:{}/v1", 10_000 + port));
            client.prepare(&upstream, &body, false).unwrap();
        }
        assert!(client.inner.endpoints.lock().unwrap().len() <= MAX_ENDPOINTS);
    }

    #[test]
    fn keys_are_sent_but_never_shown() {
        let client = client();
        let upstream = Upstream::new("https://api.openai.com/v1").with_api_key("sk-secret");
        assert_eq!(
            format!("{upstream:?}"),
            r#"Upstream { base_url: "https://api.openai.com/v1", api_key: Some("<redacted>") }"#
        );
        let prepared = client.prepare(&upstream, &json!({}), false).unwrap();
        assert_eq!(prepared.headers()[AUTHORIZATION], "Bearer sk-secret");
        assert!(prepared.headers()[AUTHORIZATION].is_sensitive());
        assert!(!format!("{:?}", prepared.headers()).contains("sk-secret"));

        let bad = Upstream::new("https://api.openai.com/v1").with_api_key("sk\nsecret");
        let err = client.prepare(&bad, &json!({}), false).err().unwrap();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn a_body_must_be_an_object() {
        let client = client();
        let err = client
            .prepare(&Upstream::new("http://localhost/v1"), &json!([1]), true)
            .err()
            .unwrap();
        assert!(matches!(err, LlmError::InvalidRequest { .. }));
        assert_eq!(
            groundwork_core::Classify::kind(&err),
            groundwork_core::ErrorKind::BadRequest
        );
    }

    #[test]
    fn calls_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let client = client();
        let upstream = Upstream::new("http://localhost/v1");
        let body = json!({});
        assert_send(&client.complete(&upstream, &body));
        assert_send(&client.stream(&upstream, &body));
    }
}
