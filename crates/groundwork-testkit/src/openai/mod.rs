//! A fake OpenAI-compatible upstream ([`MockOpenAi`]) for the tests and benchmarks of
//! Groundwork's LLM layer: it answers `POST /v1/chat/completions` with deterministic
//! completions, plain or streamed, and can be slowed down, made to fail or made to cut its
//! streams at runtime.
//!
//! # What it answers
//!
//! The request body must be a JSON object with a string `model` and an array `messages`
//! (otherwise: `400` with an OpenAI-style error body). Every other field (`temperature`,
//! `max_tokens`, `n`, tools…) is ignored. The answer's content is `echo: ` followed by the
//! text of the last message whose `role` is `user` (its `content` string, or its `text`
//! parts joined by a space):
//!
//! ```json
//! {"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"model":"<model>",
//!  "choices":[{"index":0,"message":{"role":"assistant","content":"echo: <text>"},
//!              "logprobs":null,"finish_reason":"stop"}],
//!  "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}
//! ```
//!
//! The same request always gets the same answer except for `id`, which is
//! `chatcmpl-mock-<n>` where `n` is the call's number (from 1, counting every call to the
//! endpoint, failed ones too, since the start or the last [`MockOpenAi::reset`]). `created`
//! is always `1700000000`. Token counts are word counts: `prompt_tokens` over the text of
//! every message, `completion_tokens` over the content.
//!
//! With `"stream": true` the answer is `text/event-stream`: one `data: <json>` event per
//! `chat.completion.chunk`, each followed by a blank line. First the role chunk (`"delta":
//! {"role":"assistant"}`), then one chunk per piece of the content (`"delta":{"content":
//! "…"}`; the content is cut into [`MockOptions::chunks`] pieces of nearly equal length, so
//! the pieces joined are the plain answer's content), then the finish chunk (`"delta":{}`,
//! `"finish_reason":"stop"`), then, when the request has
//! `"stream_options":{"include_usage":true}`, a chunk with no choices and the `usage`, and
//! last `data: [DONE]`. Every chunk has the same `id`, `created` and `model` as the plain
//! answer would.
//!
//! `GET /mock/connections` answers the connection counters as JSON, for a benchmark in
//! another process (`{"accepted": n, "open": n, "peak_open": n, "closed": n}`, see
//! [`ConnectionCounts`]: `open`, `peak_open` and `closed` count only connections that carried
//! a chat call, so the reader's own connection is not in them); `POST
//! /mock/connections/reset-peak` sets the peak to the connections open now and answers the
//! same. Exact, and free, where sampling `/proc/net/tcp` from outside costs enough CPU to
//! show in the latencies measured.
//!
//! Other paths answer `404`, other methods `405`; they are not counted as calls.
//!
//! # Controls
//!
//! Each takes effect for the calls received after it (a call reads them once, when it
//! arrives): [`set_latency`](MockOpenAi::set_latency) (before the response headers, for every
//! answer), [`set_first_byte_delay`](MockOpenAi::set_first_byte_delay) and
//! [`set_chunk_delay`](MockOpenAi::set_chunk_delay) (streams),
//! [`set_chunks`](MockOpenAi::set_chunks), [`fail_next`](MockOpenAi::fail_next) and
//! [`cut_stream_after`](MockOpenAi::cut_stream_after). [`calls`](MockOpenAi::calls),
//! [`connections`](MockOpenAi::connections),
//! [`connection_counts`](MockOpenAi::connection_counts),
//! [`last_request`](MockOpenAi::last_request) and
//! [`last_authorization`](MockOpenAi::last_authorization) tell what it received.
//!
//! ```
//! use std::time::Duration;
//!
//! use groundwork_testkit::openai::MockOpenAi;
//! use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
//! use tokio::net::TcpStream;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mock = MockOpenAi::start()?;
//! assert_eq!(mock.base_url(), format!("http://{}/v1", mock.addr()));
//!
//! // A minimal HTTP/1.1 exchange (a test would point its OpenAI client at `base_url()`).
//! let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
//! let mut stream = TcpStream::connect(mock.addr()).await?;
//! let request = format!(
//!     "POST /v1/chat/completions HTTP/1.1\r\nhost: mock\r\nauthorization: Bearer sk-test\r\n\
//!      content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
//!     body.len(),
//! );
//! stream.write_all(request.as_bytes()).await?;
//! let mut answer = String::new();
//! stream.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(answer.contains(r#""content":"echo: hello""#));
//! assert!(answer.contains(r#""id":"chatcmpl-mock-1""#));
//!
//! assert_eq!(mock.calls(), 1);
//! assert_eq!(mock.last_authorization().as_deref(), Some("Bearer sk-test"));
//! assert_eq!(mock.last_request().map(|request| request["model"].clone()), Some("gpt-4o-mini".into()));
//!
//! // The next call is rate limited.
//! mock.fail_next(1, 429, Some(Duration::from_secs(2)));
//! # Ok(())
//! # }
//! ```

mod completion;
mod precise;
mod server;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

/// The listen backlog: room for the connection bursts of a load test.
const BACKLOG: u32 = 1024;

/// How a [`MockOpenAi`] starts: where it listens and its initial controls, which
/// [`MockOpenAi::reset`] restores.
///
/// ```
/// use std::time::Duration;
///
/// use groundwork_testkit::openai::{MockOpenAi, MockOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let mock = MockOpenAi::start_with(
///     MockOptions::new()
///         .latency(Duration::from_millis(20))
///         .chunks(8),
/// )?;
/// mock.set_latency(Duration::ZERO);
/// mock.reset(); // back to 20 ms
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOptions {
    bind: SocketAddr,
    latency: Duration,
    first_byte_delay: Duration,
    chunk_delay: Duration,
    chunks: usize,
    precise_timing: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            latency: Duration::ZERO,
            first_byte_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunks: 4,
            precise_timing: false,
        }
    }
}

impl MockOptions {
    /// The defaults (see each setter).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The address to listen on. Default: `127.0.0.1:0` (an ephemeral port, so that tests
    /// running in parallel never collide).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The delay before the response headers of every answer (see
    /// [`MockOpenAi::set_latency`]). Default: none.
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The delay between a stream's headers and its first event (see
    /// [`MockOpenAi::set_first_byte_delay`]). Default: none.
    #[must_use]
    pub fn first_byte_delay(mut self, delay: Duration) -> Self {
        self.first_byte_delay = delay;
        self
    }

    /// The delay between two events of a stream (see [`MockOpenAi::set_chunk_delay`]).
    /// Default: none.
    #[must_use]
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// How many content chunks a stream has (see [`MockOpenAi::set_chunks`]). Default: 4,
    /// a few characters each for short prompts, as a real model streams a few tokens at a
    /// time.
    #[must_use]
    pub fn chunks(mut self, chunks: usize) -> Self {
        self.chunks = chunks;
        self
    }

    /// Whether the delays (latency, first byte, between chunks) are kept by a timer thread
    /// to the tens of microseconds instead of Tokio's timer, which rounds each one up to the
    /// next millisecond tick (a 20 ms latency then lasts 20 to 22 ms, and a client's
    /// sub-millisecond differences come out as 0 or 1 ms). For load tests that compare
    /// latencies through the mock; the `mock-openai` binary turns it on. It also means the
    /// delays ignore a paused Tokio clock. Default: off.
    #[must_use]
    pub fn precise_timing(mut self, precise: bool) -> Self {
        self.precise_timing = precise;
        self
    }
}

/// Failures to answer instead of completions.
#[derive(Debug, Clone, Copy)]
struct Failure {
    /// How many calls still fail.
    remaining: usize,
    status: StatusCode,
    retry_after: Option<Duration>,
}

/// The runtime controls, read by each call when it arrives.
#[derive(Debug, Clone, Copy)]
struct Controls {
    latency: Duration,
    first_byte_delay: Duration,
    chunk_delay: Duration,
    chunks: usize,
    cut_after: Option<usize>,
    failure: Option<Failure>,
}

impl From<&MockOptions> for Controls {
    fn from(options: &MockOptions) -> Self {
        Self {
            latency: options.latency,
            first_byte_delay: options.first_byte_delay,
            chunk_delay: options.chunk_delay,
            chunks: options.chunks,
            cut_after: None,
            failure: None,
        }
    }
}

/// What one call does, as decided when it arrives.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The call's number, from 1.
    call: u64,
    latency: Duration,
    first_byte_delay: Duration,
    chunk_delay: Duration,
    chunks: usize,
    cut_after: Option<usize>,
    /// The status and `Retry-After` to fail with.
    failure: Option<(StatusCode, Option<Duration>)>,
}

/// What the last call carried.
#[derive(Debug, Default)]
struct Seen {
    request: Option<Value>,
    authorization: Option<String>,
}

/// What the mock and its tasks share.
#[derive(Debug)]
struct Shared {
    options: MockOptions,
    /// The delays' timer with [`MockOptions::precise_timing`]; Tokio's otherwise.
    timer: Option<precise::PreciseTimer>,
    controls: Mutex<Controls>,
    seen: Mutex<Seen>,
    calls: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    closed: AtomicU64,
}

/// The mock's TCP connection counters ([`MockOpenAi::connection_counts`], `GET
/// /mock/connections`). `open`, `peak_open` and `closed` count the connections that carried
/// at least one chat call, so that reading the counters over HTTP does not count itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionCounts {
    /// Connections accepted since the start or the last [`MockOpenAi::reset`] (as
    /// [`MockOpenAi::connections`]).
    pub accepted: u64,
    /// Connections open now that carried a chat call.
    pub open: u64,
    /// The most of those open at once since the start or the last
    /// [`reset_peak_open`](MockOpenAi::reset_peak_open).
    pub peak_open: u64,
    /// Connections that carried a chat call and ended, since the start.
    pub closed: u64,
}

impl Shared {
    fn new(options: MockOptions) -> io::Result<Self> {
        let timer = if options.precise_timing {
            Some(precise::PreciseTimer::start()?)
        } else {
            None
        };
        Ok(Self {
            timer,
            controls: Mutex::new(Controls::from(&options)),
            options,
            seen: Mutex::default(),
            calls: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        })
    }

    /// A connection accepted.
    fn accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection's first chat call.
    fn opened(&self) {
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_open.fetch_max(open, Ordering::AcqRel);
    }

    /// A connection that carried a chat call ended.
    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    fn connection_counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            accepted: self.connections.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Acquire),
            peak_open: self.peak_open.load(Ordering::Acquire),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }

    fn reset_peak_open(&self) {
        self.peak_open
            .store(self.open.load(Ordering::Acquire), Ordering::Release);
    }

    /// Waits `delay` on the mock's timer.
    async fn sleep(&self, delay: Duration) {
        match &self.timer {
            Some(timer) => timer.sleep(delay).await,
            None => tokio::time::sleep(delay).await,
        }
    }

    fn controls(&self) -> MutexGuard<'_, Controls> {
        self.controls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call and decides what it does (taking one of the pending failures).
    fn plan(&self) -> Plan {
        let mut controls = self.controls();
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let failure = controls
            .failure
            .map(|failure| (failure.status, failure.retry_after));
        if let Some(failure) = &mut controls.failure {
            failure.remaining -= 1;
            if failure.remaining == 0 {
                controls.failure = None;
            }
        }
        Plan {
            call,
            latency: controls.latency,
            first_byte_delay: controls.first_byte_delay,
            chunk_delay: controls.chunk_delay,
            chunks: controls.chunks,
            cut_after: controls.cut_after,
            failure,
        }
    }

    /// Records what a call carried.
    fn record(&self, request: Option<Value>, authorization: Option<String>) {
        *self.seen() = Seen {
            request,
            authorization,
        };
    }
}

/// A fake OpenAI-compatible server (see the [module docs](self) for what it answers), on
/// `127.0.0.1` on an ephemeral port unless [`MockOptions::bind`] says otherwise.
///
/// It serves HTTP/1.1 with keep-alive. Dropping it stops it: the port is closed and every
/// connection is closed (their tasks are aborted, streams included). Create it inside a
/// Tokio runtime; it runs on that runtime's tasks.
pub struct MockOpenAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockOpenAi {
    /// Starts a mock with the default [`MockOptions`].
    ///
    /// # Errors
    /// When it cannot listen.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn start() -> io::Result<Self> {
        Self::start_with(MockOptions::default())
    }

    /// Starts a mock with these options.
    ///
    /// # Errors
    /// When it cannot listen on [`MockOptions::bind`], or cannot start the timer thread of
    /// [`MockOptions::precise_timing`].
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn start_with(options: MockOptions) -> io::Result<Self> {
        let socket = if options.bind.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(options.bind)?;
        let listener = socket.listen(BACKLOG)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options)?);
        let task = tokio::spawn(server::accept_loop(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give an OpenAI client, e.g. `http://127.0.0.1:41234/v1` (requests go
    /// to `{base_url}/chat/completions`).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Delays every answer (completions, streams and failures) by `latency` before its
    /// response headers, as a slow model does.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.controls().latency = latency;
    }

    /// Delays a stream's first event by `delay` after its response headers are sent (after
    /// the [latency](Self::set_latency)), to test time-to-first-byte timeouts.
    pub fn set_first_byte_delay(&self, delay: Duration) {
        self.shared.controls().first_byte_delay = delay;
    }

    /// Delays each event of a stream after the first one by `delay`, `[DONE]` included.
    pub fn set_chunk_delay(&self, delay: Duration) {
        self.shared.controls().chunk_delay = delay;
    }

    /// Cuts the content of streams into `chunks` pieces of nearly equal length in
    /// characters (fewer when the content is shorter; 0 counts as 1).
    pub fn set_chunks(&self, chunks: usize) {
        self.shared.controls().chunks = chunks;
    }

    /// Makes the next `n` calls answer `status` (after the [latency](Self::set_latency))
    /// with an OpenAI-style error body, `{"error":{"message":…,"type":…,"param":null,
    /// "code":…}}` (type `requests` and code `rate_limit_exceeded` for `429`, type and code
    /// `server_error` for `5xx`), and a `Retry-After` header of `retry_after` in whole
    /// seconds, rounded up, when given. Replaces the failures still pending; `n == 0` cancels
    /// them. Failures apply whatever the request (even a malformed one).
    ///
    /// # Panics
    /// When `status` is not a valid HTTP status code (`100..=999`).
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<Duration>) {
        let Ok(status) = StatusCode::from_u16(status) else {
            panic!("{status} is not an HTTP status code");
        };
        self.shared.controls().failure = (n > 0).then_some(Failure {
            remaining: n,
            status,
            retry_after,
        });
    }

    /// Makes streams stop after their first `k` events (`Some(k)`; the role chunk is the
    /// first, `data: [DONE]` the last) by closing the connection, without the end of the
    /// chunked body, as when the upstream dies mid-answer; the `k` events are sent first.
    /// With 4 content chunks a stream has 7 events: `Some(6)` cuts just before `[DONE]`,
    /// `Some(7)` or more cuts nothing. `None` (the default) lets streams end normally. Plain
    /// completions are not affected.
    pub fn cut_stream_after(&self, events: Option<usize>) {
        self.shared.controls().cut_after = events;
    }

    /// How many calls to `POST /v1/chat/completions` it received (counted when they arrive,
    /// before any delay; failed and malformed ones included).
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// How many TCP connections it accepted. With keep-alive, a client making several calls
    /// over one connection counts once.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The connection counters: accepted, open now, the most open at once, closed.
    #[must_use]
    pub fn connection_counts(&self) -> ConnectionCounts {
        self.shared.connection_counts()
    }

    /// Starts the peak of open connections again from the connections open now.
    pub fn reset_peak_open(&self) {
        self.shared.reset_peak_open();
    }

    /// The JSON body of the last call; `None` before the first call or when that body was
    /// not JSON.
    #[must_use]
    pub fn last_request(&self) -> Option<Value> {
        self.shared.seen().request.clone()
    }

    /// The `Authorization` header of the last call (e.g. `Bearer sk-…`); `None` before the
    /// first call or when it had none.
    #[must_use]
    pub fn last_authorization(&self) -> Option<String> {
        self.shared.seen().authorization.clone()
    }

    /// Sets the counters back to zero (so call numbers in `id`s start at 1 again), forgets
    /// the last call, cancels pending failures and stream cuts, and restores the delays and
    /// the chunk count given to [`start_with`](Self::start_with). Open connections stay open.
    pub fn reset(&self) {
        let mut controls = self.shared.controls();
        *controls = Controls::from(&self.shared.options);
        self.shared.calls.store(0, Ordering::Relaxed);
        self.shared.connections.store(0, Ordering::Relaxed);
        *self.shared.seen() = Seen::default();
    }
}

impl fmt::Debug for MockOpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockOpenAi")
            .field("addr", &self.addr)
            .field("calls", &self.calls())
            .field("connections", &self.connections())
            .field("controls", &*self.shared.controls())
            .finish_non_exhaustive()
    }
}

impl Drop for MockOpenAi {
    fn drop(&mut self) {
        // Dropping the accept task drops the listener and its set of connection tasks, which
        // aborts them.
        self.task.abort();
    }
}
