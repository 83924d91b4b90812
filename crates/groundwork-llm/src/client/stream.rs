//! [`EventStream`]: the events of a streaming call, read as they arrive.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, Stream, StreamExt as _};
use groundwork_resilience::{Elapsed, timeout};

use super::error::{LlmError, StreamCut, TimeoutStage};
use super::sse::{MAX_EVENT_BYTES, SseEvent, SseParser};
use super::stats::{Counters, bump};

/// The longest time spent reading the rest of a body after `data: [DONE]`, so that its
/// connection goes back to the pool (servers end the body right after it; the idle timeout
/// applies if it is shorter).
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Why reading the next event failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Cut(StreamCut),
    Idle(Elapsed),
}

/// Reads a response body as server-sent events.
#[derive(Debug)]
pub(crate) struct EventReader {
    response: reqwest::Response,
    /// The upstream slot this exchange holds until its body is read or dropped.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    delivered: u64,
}

impl EventReader {
    pub(crate) fn new(
        response: reqwest::Response,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            response,
            slot,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            delivered: 0,
        }
    }

    /// Reads until an event is ready; with `idle`, each read of the body may take at most
    /// that long.
    pub(crate) async fn fill(&mut self, idle: Option<Duration>) -> Result<(), ReadError> {
        while self.pending.is_empty() {
            let chunk = match idle {
                Some(limit) => timeout(limit, self.response.chunk())
                    .await
                    .map_err(ReadError::Idle)?,
                None => self.response.chunk().await,
            };
            match chunk {
                Ok(Some(bytes)) => self.parser.feed(&bytes, &mut self.pending).map_err(|_| {
                    ReadError::Cut(StreamCut::EventTooLarge {
                        limit: MAX_EVENT_BYTES,
                    })
                })?,
                Ok(None) => match self.parser.finish() {
                    Some(event) => self.pending.push_back(event),
                    None => return Err(ReadError::Cut(StreamCut::EndedEarly)),
                },
                Err(err) => return Err(ReadError::Cut(StreamCut::Connection(err))),
            }
        }
        Ok(())
    }
}

/// The response of a stream that delivered `[DONE]`: what follows is read to the end of
/// the body (for at most a limit), so that the connection goes back to the pool — when the
/// caller asks for the next item, or in the background if the stream is dropped first.
struct Drain {
    response: Option<reqwest::Response>,
    limit: Duration,
    /// Released once the body is read (the connection is back in the pool) or dropped.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drain {
    async fn run(&mut self) {
        if let Some(response) = &mut self.response {
            let _ended_or_gave_up = tokio::time::timeout(self.limit, async {
                while let Ok(Some(_)) = response.chunk().await {}
            })
            .await;
        }
        self.response = None;
        self.slot = None;
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        let Some(response) = self.response.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut drain = Self {
            response: Some(response),
            limit: self.limit,
            slot: self.slot.take(),
        };
        runtime.spawn(async move { drain.run().await });
    }
}

/// Where an [`EventStream`] is.
enum State {
    Reading(EventReader),
    Draining(Drain),
}

/// The events of a streaming call ([`LlmClient::stream`](super::LlmClient::stream)), in the
/// order the upstream sent them.
///
/// A complete stream ends with [`SseEvent::Done`] followed by the end of the stream (`None`).
/// A stream that breaks off ends with one error item instead — [`LlmError::StreamAborted`]
/// (connection cut, body ended without `[DONE]`, oversized event) or [`LlmError::Timeout`]
/// (no bytes for the [idle timeout](super::ClientOptions::idle_timeout)) — then `None`.
/// So a caller has seen the whole answer exactly when it has seen `Done`.
///
/// After `Done`, asking for the next item reads the rest of the body (normally nothing; at
/// most 5 s) so that the connection goes back to the pool, then gives `None`; a stream
/// dropped right after `Done` does that in the background. A stream dropped before `Done`
/// closes its connection.
pub struct EventStream {
    inner: BoxStream<'static, Result<SseEvent, LlmError>>,
}

impl EventStream {
    pub(crate) fn new(reader: EventReader, idle: Duration, counters: Arc<Counters>) -> Self {
        let inner = stream::unfold(Some(State::Reading(reader)), move |state| {
            let counters = Arc::clone(&counters);
            async move {
                let mut reader = match state? {
                    State::Reading(reader) => reader,
                    State::Draining(mut drain) => {
                        drain.run().await;
                        return None;
                    }
                };
                match reader.fill(Some(idle)).await {
                    Ok(()) => {
                        let event = reader.pending.pop_front()?;
                        reader.delivered += 1;
                        if event == SseEvent::Done {
                            bump(&counters.streams_completed);
                            let drain = Drain {
                                response: Some(reader.response),
                                limit: idle.min(DRAIN_LIMIT),
                                slot: reader.slot,
                            };
                            Some((Ok(event), Some(State::Draining(drain))))
                        } else {
                            Some((Ok(event), Some(State::Reading(reader))))
                        }
                    }
                    Err(ReadError::Idle(source)) => {
                        let err = LlmError::Timeout {
                            stage: TimeoutStage::Idle,
                            source,
                        };
                        counters.failed(&err);
                        Some((Err(err), None))
                    }
                    Err(ReadError::Cut(cause)) => {
                        let err = LlmError::StreamAborted {
                            events: reader.delivered,
                            cause,
                        };
                        counters.failed(&err);
                        Some((Err(err), None))
                    }
                }
            }
        });
        Self {
            inner: inner.boxed(),
        }
    }
}

impl Stream for EventStream {
    type Item = Result<SseEvent, LlmError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}
