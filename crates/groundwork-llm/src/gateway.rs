//! The caching proxy's core, independent of HTTP frameworks: a chat completions request in,
//! an answer out — from the cache, or from the upstream with identical concurrent misses
//! sharing one upstream call, streamed through while it is recorded.
//!
//! - A hit answers at once, in the form asked for: a stored stream is replayed chunk by
//!   chunk (no artificial delays), a stored non-streaming completion is cut into a stream
//!   when a stream is asked for, and a recorded stream is assembled into a completion when
//!   one is asked for.
//! - A streamed hit honours the request's own `stream_options.include_usage` (a transport
//!   field, not part of the key): the final usage chunk (`"choices": []`) is replayed only
//!   when asked for; when it is asked for and the stored answer has no usage (it was
//!   recorded from a stream that did not ask), the request is a miss that goes upstream and
//!   refreshes the entry.
//! - A miss calls the upstream once for every identical request in flight (same canonical
//!   key, same form, and for streams the same `include_usage`). A streaming miss forwards
//!   each event to every waiting client as it arrives ([`Recording`]) and is stored only
//!   when complete: `[DONE]` received and every choice finished. Errors, truncated and
//!   aborted streams are never stored.
//! - Upstream errors are passed on with their status and body.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::{BoxFuture, Shared};
use futures_util::stream::{self, BoxStream};
use futures_util::{FutureExt as _, StreamExt as _};
use groundwork_core::{Classify, ErrorKind};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cache::{CacheLevel, CachedCompletion, ResponseCache};
use crate::client::{LlmClient, LlmError, SseEvent, Upstream, UpstreamReply};
use crate::key::{CacheKey, cache_key, is_deterministic};
use crate::policy::{CachePolicy, CacheStatus};
use crate::stream::{Ending, Next, Recording, assemble, synthesize};

/// Settings of a [`Gateway`].
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct GatewayOptions {
    cache_nondeterministic: bool,
}

impl GatewayOptions {
    /// Defaults: non-deterministic requests bypass the cache: those without a `seed` whose
    /// `temperature` is not an explicit 0 (absent means the provider's default, 1 for
    /// OpenAI; see [`is_deterministic`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Cache non-deterministic requests too (then every such request gets the same answer):
    /// requests with a temperature above 0 or none at all, without a seed.
    pub fn cache_nondeterministic(mut self, cache: bool) -> Self {
        self.cache_nondeterministic = cache;
        self
    }
}

/// A chat completions request to answer.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Who asks (the API key's name): part of the cache key.
    pub tenant: String,
    /// The request body, a JSON object, forwarded as is.
    pub body: Value,
    /// The cache directives of its headers.
    pub policy: CachePolicy,
}

/// One item of a streamed answer: an SSE frame (`data: …\n\n`), or the error that cut it
/// short (the HTTP layer then ends the response abruptly, so the client sees a truncated
/// stream, not a complete one).
pub type Frame = Result<Bytes, Arc<LlmError>>;

/// The answer to a [`ChatRequest`].
pub enum ChatReply {
    /// A JSON body (a completion, or the upstream's error with its status).
    Json {
        /// The HTTP status.
        status: u16,
        /// The body's `Content-Type`.
        content_type: String,
        /// The body.
        body: Bytes,
        /// Where it came from.
        cache: CacheStatus,
    },
    /// A `text/event-stream` body.
    Stream {
        /// Its SSE frames.
        frames: BoxStream<'static, Frame>,
        /// Where it came from.
        cache: CacheStatus,
    },
}

impl std::fmt::Debug for ChatReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json { status, cache, .. } => f
                .debug_struct("Json")
                .field("status", status)
                .field("cache", cache)
                .finish_non_exhaustive(),
            Self::Stream { cache, .. } => f
                .debug_struct("Stream")
                .field("cache", cache)
                .finish_non_exhaustive(),
        }
    }
}

impl ChatReply {
    /// Where the answer came from.
    #[must_use]
    pub fn cache_status(&self) -> CacheStatus {
        match self {
            Self::Json { cache, .. } | Self::Stream { cache, .. } => *cache,
        }
    }
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The upstream failed (its own error answers are [`LlmError::Upstream`], to pass on).
    #[error("{error}")]
    Upstream {
        /// What failed.
        error: Arc<LlmError>,
        /// Whether the cache was consulted (`MISS`) or not (`BYPASS`).
        cache: CacheStatus,
    },
}

impl Classify for GatewayError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::BadRequest(_) => ErrorKind::BadRequest,
            Self::Upstream { error, .. } => error.kind(),
        }
    }
}

type Completed = Result<Arc<UpstreamReply>, Arc<LlmError>>;

/// A streaming upstream call in flight: its recording, and its error if it failed before
/// sending anything.
struct StreamFlight {
    recording: Arc<Recording>,
    failed_early: Mutex<Option<Arc<LlmError>>>,
}

/// A streaming flight's identity: the cache key and whether the usage chunk was asked for
/// (`stream_options.include_usage`), which the key leaves out but the stream's end depends
/// on.
type StreamKey = (CacheKey, bool);

#[derive(Default)]
struct Flights {
    complete: HashMap<CacheKey, Shared<BoxFuture<'static, Completed>>>,
    streams: HashMap<StreamKey, Arc<StreamFlight>>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    hits_memory: AtomicU64,
    hits_redis: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    upstream_calls: AtomicU64,
    coalesced: AtomicU64,
    not_stored: AtomicU64,
}

/// Statistics of a [`Gateway`].
#[derive(Debug, Clone, Serialize)]
pub struct GatewayStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Of those, answered from this instance's memory.
    pub hits_memory: u64,
    /// Of those, answered from Redis.
    pub hits_redis: u64,
    /// Requests answered by the upstream for want of a (usable) cached answer.
    pub misses: u64,
    /// Requests that did not use the cache.
    pub bypasses: u64,
    /// Upstream calls made.
    pub upstream_calls: u64,
    /// Misses that joined an identical upstream call in flight instead of making one.
    pub coalesced: u64,
    /// Upstream answers not stored (errors, truncated streams, incomplete completions).
    pub not_stored: u64,
}

impl GatewayStats {
    /// Exports these figures through the `metrics` facade as counters:
    /// `groundwork_llm_proxy_hits_total` (labelled `level=memory|redis`) and
    /// `groundwork_llm_proxy_{misses,bypasses,upstream_calls,coalesced,not_stored}_total`.
    pub fn publish(&self) {
        for (level, value) in [
            (CacheLevel::Memory, self.hits_memory),
            (CacheLevel::Redis, self.hits_redis),
        ] {
            metrics::counter!("groundwork_llm_proxy_hits_total", "level" => level.as_str())
                .absolute(value);
        }
        for (name, value) in [
            ("groundwork_llm_proxy_misses_total", self.misses),
            ("groundwork_llm_proxy_bypasses_total", self.bypasses),
            (
                "groundwork_llm_proxy_upstream_calls_total",
                self.upstream_calls,
            ),
            ("groundwork_llm_proxy_coalesced_total", self.coalesced),
            ("groundwork_llm_proxy_not_stored_total", self.not_stored),
        ] {
            metrics::counter!(name).absolute(value);
        }
    }
}

/// The caching proxy's core (see the [module documentation](self)). Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    client: LlmClient,
    upstream: Upstream,
    cache: ResponseCache,
    options: GatewayOptions,
    flights: Mutex<Flights>,
    counters: Counters,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.inner.upstream)
            .finish_non_exhaustive()
    }
}

/// The SSE frame of one event's data: a `data: ` line per line of `data` (the parser joined
/// an event's `data:` lines with `\n`, so this gives back an event that parses to the same
/// data), then the blank line that ends the event.
fn sse_frame(data: &[u8]) -> Bytes {
    const FIELD: &[u8] = b"data: ";
    let lines = data.iter().filter(|&&byte| byte == b'\n').count() + 1;
    let mut frame = Vec::with_capacity(data.len() + lines * (FIELD.len() + 1) + 1);
    for line in data.split(|&byte| byte == b'\n') {
        frame.extend_from_slice(FIELD);
        frame.extend_from_slice(line);
        frame.push(b'\n');
    }
    frame.push(b'\n');
    Bytes::from(frame)
}

const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// Whether a streaming request asks for the final usage chunk
/// (`"stream_options": {"include_usage": true}`).
fn wants_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true)
}

/// The fields of a chunk or completion that say whether it carries usage.
#[derive(Deserialize)]
struct UsageShape {
    /// `None` when absent or `null`.
    usage: Option<IgnoredAny>,
    /// `None` when absent or `null`.
    choices: Option<Vec<IgnoredAny>>,
}

fn usage_shape(json: &[u8]) -> Option<UsageShape> {
    serde_json::from_slice(json).ok()
}

/// Whether a stored completion carries `usage`.
fn has_usage(completion: &[u8]) -> bool {
    usage_shape(completion).is_some_and(|shape| shape.usage.is_some())
}

/// Whether `chunk` is the usage chunk that ends a stream asked for with `include_usage`: no
/// choices, and the usage.
fn is_usage_chunk(chunk: &[u8]) -> bool {
    usage_shape(chunk).is_some_and(|shape| {
        shape.usage.is_some() && shape.choices.is_some_and(|choices| choices.is_empty())
    })
}

/// Whether a non-streaming answer may be stored: a JSON object whose choices all finished.
fn storable_completion(body: &[u8]) -> bool {
    let Ok(Value::Object(completion)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    completion
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|choices| {
            !choices.is_empty()
                && choices
                    .iter()
                    .all(|c| c.get("finish_reason").is_some_and(|r| !r.is_null()))
        })
}

impl Gateway {
    /// A gateway calling `upstream` through `client`, caching in `cache`.
    #[must_use]
    pub fn new(
        client: LlmClient,
        upstream: Upstream,
        cache: ResponseCache,
        options: GatewayOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                upstream,
                cache,
                options,
                flights: Mutex::new(Flights::default()),
                counters: Counters::default(),
            }),
        }
    }

    /// The response cache.
    #[must_use]
    pub fn cache(&self) -> &ResponseCache {
        &self.inner.cache
    }

    /// The upstream client.
    #[must_use]
    pub fn client(&self) -> &LlmClient {
        &self.inner.client
    }

    fn flights(&self) -> MutexGuard<'_, Flights> {
        self.inner
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> GatewayStats {
        let c = &self.inner.counters;
        GatewayStats {
            hits: c.hits.load(Ordering::Relaxed),
            hits_memory: c.hits_memory.load(Ordering::Relaxed),
            hits_redis: c.hits_redis.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            bypasses: c.bypasses.load(Ordering::Relaxed),
            upstream_calls: c.upstream_calls.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            not_stored: c.not_stored.load(Ordering::Relaxed),
        }
    }

    /// Answers `request` (see the [module documentation](self)).
    ///
    /// # Errors
    /// [`GatewayError::BadRequest`] for a body that is not a JSON object;
    /// [`GatewayError::Upstream`] when the upstream cannot be reached or answers with an
    /// error (its status and body are in the [`LlmError`]).
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatReply, GatewayError> {
        let ChatRequest {
            tenant,
            body,
            mut policy,
        } = request;
        if !body.is_object() {
            return Err(GatewayError::BadRequest(
                "the request body must be a JSON object".to_owned(),
            ));
        }
        let streaming = body.get("stream").and_then(Value::as_bool) == Some(true);
        let usage = streaming && wants_usage(&body);
        if !self.inner.options.cache_nondeterministic && !is_deterministic(&body) {
            policy = CachePolicy::default();
        }
        if !policy.uses_cache() {
            self.inner.counters.bypasses.fetch_add(1, Ordering::Relaxed);
            return self
                .answer_from_upstream(None, &tenant, body, streaming, policy, CacheStatus::Bypass)
                .await;
        }
        let key = cache_key(&tenant, &body).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        if policy.lookup
            && let Some((entry, level)) = self.inner.cache.lookup(&tenant, &key).await
        {
            if usage && !has_usage(&entry.completion) {
                // The stored answer cannot end the stream with the usage asked for: a miss,
                // whose answer (with its usage) replaces the entry.
                tracing::debug!("LLM cache: stored answer without the usage asked for; refreshing");
            } else {
                let counters = &self.inner.counters;
                counters.hits.fetch_add(1, Ordering::Relaxed);
                match level {
                    CacheLevel::Memory => &counters.hits_memory,
                    CacheLevel::Redis => &counters.hits_redis,
                }
                .fetch_add(1, Ordering::Relaxed);
                return Ok(reply_from_cache(&entry, streaming, usage));
            }
        }
        self.inner.counters.misses.fetch_add(1, Ordering::Relaxed);
        self.answer_from_upstream(
            Some(key),
            &tenant,
            body,
            streaming,
            policy,
            CacheStatus::Miss,
        )
        .await
    }

    async fn answer_from_upstream(
        &self,
        key: Option<CacheKey>,
        tenant: &str,
        body: Value,
        streaming: bool,
        policy: CachePolicy,
        cache: CacheStatus,
    ) -> Result<ChatReply, GatewayError> {
        let store = key.filter(|_| policy.store).map(|key| StoreAs {
            key,
            namespace: tenant.to_owned(),
            ttl: self.inner.cache.options().ttl_for(policy.ttl),
        });
        if streaming {
            let usage = wants_usage(&body);
            self.stream_from_upstream(store, body, usage, cache).await
        } else {
            let reply = self
                .complete_from_upstream(store, body)
                .await
                .map_err(|error| GatewayError::Upstream { error, cache })?;
            Ok(ChatReply::Json {
                status: reply.status.as_u16(),
                content_type: reply
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/json".to_owned()),
                body: reply.body.clone(),
                cache,
            })
        }
    }

    /// One upstream call for every identical non-streaming miss in flight.
    async fn complete_from_upstream(&self, store: Option<StoreAs>, body: Value) -> Completed {
        let Some(store) = store else {
            self.inner
                .counters
                .upstream_calls
                .fetch_add(1, Ordering::Relaxed);
            return self
                .inner
                .client
                .complete(&self.inner.upstream, &body)
                .await
                .map(Arc::new)
                .map_err(Arc::new);
        };
        let flight = {
            let mut flights = self.flights();
            if let Some(flight) = flights.complete.get(&store.key) {
                self.inner
                    .counters
                    .coalesced
                    .fetch_add(1, Ordering::Relaxed);
                flight.clone()
            } else {
                let gateway = self.clone();
                let key = store.key.clone();
                // In a task of its own: a client giving up does not cancel the call for the
                // others waiting on it.
                let task = tokio::spawn(async move {
                    // Leaves the flight map however the task ends (a panic included), so a
                    // failed call is never shared with later requests.
                    let leave = LeaveFlight {
                        gateway: gateway.clone(),
                        key: store.key.clone(),
                    };
                    gateway
                        .inner
                        .counters
                        .upstream_calls
                        .fetch_add(1, Ordering::Relaxed);
                    let outcome = gateway
                        .inner
                        .client
                        .complete(&gateway.inner.upstream, &body)
                        .await;
                    if let Ok(reply) = &outcome {
                        if reply.status.is_success() && storable_completion(&reply.body) {
                            gateway.inner.cache.put(
                                store.key.clone(),
                                &store.namespace,
                                reply.body.clone(),
                                None,
                                store.ttl,
                            );
                        } else {
                            gateway
                                .inner
                                .counters
                                .not_stored
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        gateway
                            .inner
                            .counters
                            .not_stored
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    drop(leave);
                    outcome.map(Arc::new).map_err(Arc::new)
                });
                let shared = async move {
                    task.await.unwrap_or_else(|_| {
                        Err(Arc::new(LlmError::InvalidRequest {
                            reason: "the upstream call was aborted".to_owned(),
                        }))
                    })
                }
                .boxed()
                .shared();
                flights.complete.insert(key, shared.clone());
                shared
            }
        };
        flight.await
    }

    /// One upstream stream for every identical streaming miss in flight, forwarded to each
    /// as it arrives.
    async fn stream_from_upstream(
        &self,
        store: Option<StoreAs>,
        body: Value,
        usage: bool,
        cache: CacheStatus,
    ) -> Result<ChatReply, GatewayError> {
        let flight = match &store {
            Some(store) => {
                let mut flights = self.flights();
                let stream_key = (store.key.clone(), usage);
                match flights.streams.get(&stream_key) {
                    Some(flight) => {
                        self.inner
                            .counters
                            .coalesced
                            .fetch_add(1, Ordering::Relaxed);
                        Arc::clone(flight)
                    }
                    None => {
                        let flight = self.start_stream(Some(store.clone()), body, usage);
                        flights.streams.insert(stream_key, Arc::clone(&flight));
                        flight
                    }
                }
            }
            None => self.start_stream(None, body, usage),
        };
        // Wait for the first event (or the end): an upstream that fails before sending
        // anything is answered as an error with its status, not as an empty stream.
        let first = flight.recording.next(0).await;
        if let Next::End(Ending::Failed(_)) = &first {
            let early = flight
                .failed_early
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let Some(error) = early {
                return Err(GatewayError::Upstream { error, cache });
            }
        }
        let recording = Arc::clone(&flight.recording);
        let frames = stream::unfold(
            (recording, 0usize, false),
            |(recording, at, ended)| async move {
                if ended {
                    return None;
                }
                match recording.next(at).await {
                    Next::Event(event) => Some((Ok(sse_frame(&event)), (recording, at + 1, false))),
                    Next::End(Ending::Done) => {
                        Some((Ok(Bytes::from_static(DONE_FRAME)), (recording, at, true)))
                    }
                    Next::End(Ending::Failed(reason)) => Some((
                        Err(Arc::new(LlmError::InvalidRequest { reason })),
                        (recording, at, true),
                    )),
                }
            },
        );
        Ok(ChatReply::Stream {
            frames: frames.boxed(),
            cache,
        })
    }

    /// Starts the upstream stream of a flight; `usage` is its request's `include_usage`, part
    /// of the flight's identity.
    fn start_stream(&self, store: Option<StoreAs>, body: Value, usage: bool) -> Arc<StreamFlight> {
        let flight = Arc::new(StreamFlight {
            recording: Recording::new(),
            failed_early: Mutex::new(None),
        });
        let gateway = self.clone();
        let recording = Arc::clone(&flight.recording);
        let task_flight = Arc::clone(&flight);
        // In a task of its own: the stream is read to its end (and stored) even if the
        // client that started it goes away.
        tokio::spawn(async move {
            let inner = &gateway.inner;
            inner
                .counters
                .upstream_calls
                .fetch_add(1, Ordering::Relaxed);
            let ending = match inner.client.stream(&inner.upstream, &body).await {
                Err(err) => {
                    let reason = err.to_string();
                    *task_flight
                        .failed_early
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(err));
                    Ending::Failed(reason)
                }
                Ok(mut events) => loop {
                    match events.next().await {
                        Some(Ok(SseEvent::Data(data))) => recording.push(data),
                        Some(Ok(SseEvent::Done)) => break Ending::Done,
                        Some(Err(err)) => break Ending::Failed(err.to_string()),
                        None => break Ending::Failed("the stream ended without [DONE]".to_owned()),
                    }
                },
            };
            let complete = ending == Ending::Done;
            recording.finish(ending);
            let stored = match (&store, complete) {
                (Some(store), true) => {
                    let (events, _) = recording.snapshot();
                    match assemble(&events) {
                        Ok(completion) => {
                            inner.cache.put(
                                store.key.clone(),
                                &store.namespace,
                                completion,
                                Some(Arc::from(events)),
                                store.ttl,
                            );
                            true
                        }
                        Err(reason) => {
                            tracing::debug!(%reason, "LLM stream not stored");
                            false
                        }
                    }
                }
                _ => false,
            };
            if !stored {
                inner.counters.not_stored.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(store) = store {
                gateway.flights().streams.remove(&(store.key, usage));
            }
        });
        flight
    }
}

/// Removes a non-streaming flight from the map when dropped.
struct LeaveFlight {
    gateway: Gateway,
    key: CacheKey,
}

impl Drop for LeaveFlight {
    fn drop(&mut self) {
        self.gateway.flights().complete.remove(&self.key);
    }
}

/// Where to store an upstream answer.
#[derive(Debug, Clone)]
struct StoreAs {
    key: CacheKey,
    namespace: String,
    ttl: std::time::Duration,
}

/// The answer a cached entry gives, in the form asked for; a stream ends with its usage
/// chunk only when `usage` (`include_usage`) asks for it.
fn reply_from_cache(entry: &CachedCompletion, streaming: bool, usage: bool) -> ChatReply {
    if !streaming {
        return ChatReply::Json {
            status: 200,
            content_type: "application/json".to_owned(),
            body: entry.completion.clone(),
            cache: CacheStatus::Hit,
        };
    }
    let mut chunks: Vec<Bytes> = match &entry.chunks {
        Some(chunks) => chunks.to_vec(),
        // Stored from a non-streaming answer; it was checked when stored, so this cannot
        // fail short of a corrupted entry, which then replays as an empty stream.
        None => synthesize(&entry.completion).unwrap_or_default(),
    };
    if !usage && chunks.last().is_some_and(|last| is_usage_chunk(last)) {
        chunks.pop();
    }
    let frames = chunks
        .into_iter()
        .map(|chunk| Ok(sse_frame(&chunk)))
        .chain(std::iter::once(Ok(Bytes::from_static(DONE_FRAME))));
    ChatReply::Stream {
        frames: stream::iter(frames).boxed(),
        cache: CacheStatus::Hit,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::client::sse_parser_for_tests as parse;

    #[test]
    fn frames_parse_back_to_their_data() {
        for data in [
            &b"{\"a\":1}"[..],
            b"first line\nsecond line",
            b"a\n\nb",
            b" leading space\n",
            b"\nx",
        ] {
            let frame = sse_frame(data);
            assert!(frame.ends_with(b"\n\n"), "{frame:?}");
            for line in frame.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                assert!(line.starts_with(b"data: "), "{frame:?}");
            }
            let mut events = VecDeque::new();
            parse(&frame, &mut events);
            assert_eq!(
                events,
                [SseEvent::Data(Bytes::copy_from_slice(data))],
                "{frame:?}"
            );
        }
        assert_eq!(&sse_frame(b"{}")[..], b"data: {}\n\n");
    }
}
