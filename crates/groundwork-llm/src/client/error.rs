//! [`LlmError`]: why a call to an upstream failed.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use groundwork_clients::http::HttpClientError;
use groundwork_core::{Classify, ErrorKind};
use groundwork_resilience::{BreakerOpen, Elapsed};
use reqwest::StatusCode;

/// Why a call to an upstream failed.
///
/// An upstream's own error answer is [`LlmError::Upstream`], with its status, body and
/// content type, so that a proxy can pass it on verbatim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The upstream answered with a status other than 2xx: at once for the statuses that are
    /// not retried (400, 401, 404…), after the last attempt for those that are (429, 5xx),
    /// or when its `Retry-After` asked for a longer wait than the client accepts.
    #[error("the upstream answered {status}")]
    Upstream {
        /// The upstream's status.
        status: StatusCode,
        /// The upstream's response body, as received (usually an OpenAI-style error object).
        body: Bytes,
        /// The upstream's `Content-Type`.
        content_type: Option<String>,
        /// The wait the upstream asked for (`Retry-After` in seconds or as an HTTP date, or
        /// `retry-after-ms`), if any.
        retry_after: Option<Duration>,
    },
    /// The upstream's circuit breaker is open: it failed repeatedly, and the call was not
    /// made.
    #[error("the upstream's circuit breaker is open")]
    CircuitOpen {
        /// The breaker's rejection (its name and when it lets a probe through).
        #[source]
        source: BreakerOpen,
    },
    /// The upstream could not be reached, or the connection failed before the answer was
    /// complete (refused, reset, DNS, TLS, connect timeout).
    #[error("cannot reach the upstream")]
    Transport {
        /// The HTTP client's error.
        #[source]
        source: HttpClientError,
    },
    /// The upstream did not answer in time.
    #[error("the upstream did not answer in time ({stage})")]
    Timeout {
        /// What took too long.
        stage: TimeoutStage,
        /// The time limit that passed.
        #[source]
        source: Elapsed,
    },
    /// An event stream broke off before `data: [DONE]`: the connection was cut, the upstream
    /// ended the body early, or sent an oversized event. The events before it were complete.
    #[error("the event stream broke off after {events} events")]
    StreamAborted {
        /// Events delivered before the break.
        events: u64,
        /// What happened.
        #[source]
        cause: StreamCut,
    },
    /// A streaming call was answered with a success status but JSON instead of an event
    /// stream (an upstream that ignores `"stream": true`). The answer is kept so it can be
    /// passed on.
    #[error("the upstream answered {status} with {content_type:?} instead of an event stream")]
    NotAStream {
        /// The upstream's status.
        status: StatusCode,
        /// The upstream's `Content-Type`.
        content_type: Option<String>,
        /// The upstream's response body.
        body: Bytes,
    },
    /// The request body cannot be sent: a chat completions body must be a JSON object.
    #[error("invalid chat completions request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// The upstream's configuration is unusable (a base URL that is not an `http(s)` URL, an
    /// API key that cannot be a header value).
    #[error("invalid upstream {base_url:?}: {reason}")]
    InvalidUpstream {
        /// The configured base URL.
        base_url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What took too long, in an [`LlmError::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutStage {
    /// One whole non-streaming request, from connecting to the last byte of the body
    /// ([`ClientOptions::timeout`](super::ClientOptions::timeout)).
    Request,
    /// A stream's first event ([`ClientOptions::first_event_timeout`](super::ClientOptions::first_event_timeout)).
    FirstEvent,
    /// The whole call, every attempt and wait included
    /// ([`ClientOptions::total_timeout`](super::ClientOptions::total_timeout)): the attempt
    /// in progress was cut because the call's time was up.
    Total,
    /// The silence between two reads of a stream ([`ClientOptions::idle_timeout`](super::ClientOptions::idle_timeout)).
    Idle,
}

impl TimeoutStage {
    /// `request`, `first_event`, `total` or `idle`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::FirstEvent => "first_event",
            Self::Total => "total",
            Self::Idle => "idle",
        }
    }
}

impl fmt::Display for TimeoutStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Request => "the whole request",
            Self::FirstEvent => "the first event of a stream",
            Self::Total => "the call's total time limit",
            Self::Idle => "the gap between two reads of a stream",
        })
    }
}

/// Why an event stream broke off, in an [`LlmError::StreamAborted`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamCut {
    /// The body ended cleanly, but without `data: [DONE]`.
    #[error("the upstream ended the stream without `data: [DONE]`")]
    EndedEarly,
    /// Reading the body failed: the connection was reset or closed mid-body.
    #[error("the connection failed mid-stream")]
    Connection(#[source] reqwest::Error),
    /// An event went past [`MAX_EVENT_BYTES`](super::MAX_EVENT_BYTES).
    #[error("an event is larger than {limit} bytes")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
}

/// Whether an upstream status may succeed when tried again: 429 and the 5xx statuses that
/// say the server is down or overloaded (all but 501 Not Implemented and 505 HTTP Version
/// Not Supported, which say something about the request). This covers 500, 502, 503, 504,
/// and the gateway and overload statuses of CDNs and providers (520–524, 529).
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error()
            && status != StatusCode::NOT_IMPLEMENTED
            && status != StatusCode::HTTP_VERSION_NOT_SUPPORTED)
}

impl LlmError {
    /// The upstream's status, for [`LlmError::Upstream`] and [`LlmError::NotAStream`].
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Upstream { status, .. } | Self::NotAStream { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The wait the upstream asked for, for [`LlmError::Upstream`].
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the failure says the upstream is unhealthy (it counts against its breaker)
    /// and a new attempt may succeed: retryable statuses, transport failures, timeouts, a
    /// stream cut before its first event.
    pub(crate) fn is_outage(&self) -> bool {
        match self {
            Self::Upstream { status, .. } => is_retryable_status(*status),
            Self::Transport { source } => matches!(
                source,
                HttpClientError::Connect { .. }
                    | HttpClientError::Timeout { .. }
                    | HttpClientError::Request { .. }
            ),
            Self::Timeout { .. } | Self::StreamAborted { .. } => true,
            _ => false,
        }
    }
}

impl Classify for LlmError {
    /// Retryable statuses, transport failures, timeouts, cut streams and an open breaker are
    /// `Unavailable`. Other upstream statuses map to what they say about the request (400
    /// `BadRequest`, 404 `NotFound`, 409 `Conflict`, 413 and 422 `Invalid`), except 401 and
    /// 403, which say that Groundwork's own credentials are wrong (`Internal`). A proxy
    /// passes [`LlmError::Upstream`] on with its own status anyway.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Upstream { status, .. } => match *status {
                s if is_retryable_status(s) => ErrorKind::Unavailable,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Internal,
                StatusCode::NOT_FOUND => ErrorKind::NotFound,
                StatusCode::CONFLICT => ErrorKind::Conflict,
                StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY => {
                    ErrorKind::Invalid
                }
                s if s.is_client_error() => ErrorKind::BadRequest,
                _ => ErrorKind::Internal,
            },
            Self::CircuitOpen { .. } | Self::Timeout { .. } | Self::StreamAborted { .. } => {
                ErrorKind::Unavailable
            }
            Self::Transport { source } => source.kind(),
            Self::InvalidRequest { .. } => ErrorKind::BadRequest,
            Self::NotAStream { .. } | Self::InvalidUpstream { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(status: u16) -> LlmError {
        LlmError::Upstream {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            body: Bytes::new(),
            content_type: None,
            retry_after: None,
        }
    }

    #[test]
    fn overload_statuses_are_retryable_outages() {
        for status in [429, 500, 502, 503, 504, 520, 524, 529] {
            let err = upstream(status);
            assert!(err.is_outage(), "{status}");
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422, 501, 505] {
            assert!(!upstream(status).is_outage(), "{status}");
        }
    }

    #[test]
    fn client_errors_keep_their_meaning() {
        assert_eq!(upstream(400).kind(), ErrorKind::BadRequest);
        assert_eq!(upstream(401).kind(), ErrorKind::Internal);
        assert_eq!(upstream(404).kind(), ErrorKind::NotFound);
        assert_eq!(upstream(409).kind(), ErrorKind::Conflict);
        assert_eq!(upstream(422).kind(), ErrorKind::Invalid);
        assert_eq!(upstream(418).kind(), ErrorKind::BadRequest);
        assert_eq!(upstream(501).kind(), ErrorKind::Internal);
        assert_eq!(upstream(400).status(), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn timeouts_and_cuts_are_unavailable() {
        let timeout = LlmError::Timeout {
            stage: TimeoutStage::Idle,
            source: Elapsed {
                after: Duration::from_secs(1),
            },
        };
        assert_eq!(timeout.kind(), ErrorKind::Unavailable);
        assert_eq!(
            timeout.to_string(),
            "the upstream did not answer in time (the gap between two reads of a stream)"
        );
        let cut = LlmError::StreamAborted {
            events: 3,
            cause: StreamCut::EndedEarly,
        };
        assert_eq!(cut.kind(), ErrorKind::Unavailable);
        assert_eq!(
            groundwork_core::error_chain(&cut),
            "the event stream broke off after 3 events: the upstream ended the stream without `data: [DONE]`"
        );
    }
}
