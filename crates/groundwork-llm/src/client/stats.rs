//! The counters of an [`LlmClient`](super::LlmClient) and their export.

use std::sync::atomic::{AtomicU64, Ordering};

use groundwork_clients::http::HttpClientError;
use groundwork_resilience::BreakerStats;
use reqwest::StatusCode;
use serde::Serialize;

use super::error::LlmError;

/// The live counters, shared by a client's clones and its streams.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) stream_calls: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rejected: AtomicU64,
    errors_4xx: AtomicU64,
    errors_429: AtomicU64,
    errors_5xx: AtomicU64,
    errors_transport: AtomicU64,
    errors_timeout: AtomicU64,
    pub(crate) streams_completed: AtomicU64,
    pub(crate) streams_aborted: AtomicU64,
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// Counts the failure of one attempt (or of a stream after its first event).
    pub(crate) fn failed(&self, err: &LlmError) {
        match err {
            LlmError::Upstream { status, .. } => {
                if *status == StatusCode::TOO_MANY_REQUESTS {
                    bump(&self.errors_429);
                } else if status.is_server_error() {
                    bump(&self.errors_5xx);
                } else if status.is_client_error() {
                    bump(&self.errors_4xx);
                }
            }
            LlmError::Transport {
                source: HttpClientError::Timeout { .. },
            }
            | LlmError::Timeout { .. } => bump(&self.errors_timeout),
            LlmError::Transport { .. } => bump(&self.errors_transport),
            LlmError::StreamAborted { .. } => bump(&self.streams_aborted),
            _ => {}
        }
    }

    pub(crate) fn snapshot(&self, breakers: Vec<BreakerStats>) -> LlmClientStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        LlmClientStats {
            calls: load(&self.calls),
            stream_calls: load(&self.stream_calls),
            attempts: load(&self.attempts),
            retries: load(&self.retries),
            rejected: load(&self.rejected),
            errors_4xx: load(&self.errors_4xx),
            errors_429: load(&self.errors_429),
            errors_5xx: load(&self.errors_5xx),
            errors_transport: load(&self.errors_transport),
            errors_timeout: load(&self.errors_timeout),
            streams_completed: load(&self.streams_completed),
            streams_aborted: load(&self.streams_aborted),
            breakers,
        }
    }
}

/// An [`LlmClient`](super::LlmClient)'s counters and breakers at one moment.
///
/// Errors are counted per attempt, so a call that failed twice and then succeeded adds two
/// errors and two retries.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct LlmClientStats {
    /// Calls to [`complete`](super::LlmClient::complete) and
    /// [`stream`](super::LlmClient::stream).
    pub calls: u64,
    /// Of those, calls to [`stream`](super::LlmClient::stream).
    pub stream_calls: u64,
    /// Requests sent upstream (first attempts and retries).
    pub attempts: u64,
    /// Retries (attempts after the first of a call).
    pub retries: u64,
    /// Calls (or retries) refused because the upstream's breaker was open.
    pub rejected: u64,
    /// Answers with a 4xx status other than 429.
    pub errors_4xx: u64,
    /// Answers with status 429.
    pub errors_429: u64,
    /// Answers with a 5xx status.
    pub errors_5xx: u64,
    /// Attempts that failed to connect or lost their connection.
    pub errors_transport: u64,
    /// Attempts (and streams) that ran out of time.
    pub errors_timeout: u64,
    /// Streams that delivered `data: [DONE]`.
    pub streams_completed: u64,
    /// Streams that broke off (before or after their first event) other than by a timeout.
    pub streams_aborted: u64,
    /// The breaker of each upstream called so far.
    pub breakers: Vec<BreakerStats>,
}

impl LlmClientStats {
    /// Upstream error answers, whatever their status.
    #[must_use]
    pub fn upstream_errors(&self) -> u64 {
        self.errors_4xx + self.errors_429 + self.errors_5xx
    }

    /// Exports these figures through the `metrics` facade, labelled `client=<name>`: the
    /// counters `groundwork_llm_client_{calls,stream_calls,attempts,retries,rejected,
    /// streams_completed,streams_aborted}_total` and `groundwork_llm_client_errors_total`
    /// (also labelled `class=4xx|429|5xx|transport|timeout`); and each breaker's figures
    /// ([`BreakerStats::publish`], labelled `breaker=llm:<host>`).
    pub fn publish(&self, name: &str) {
        let labels = [("client", name.to_owned())];
        let counters = [
            ("groundwork_llm_client_calls_total", self.calls),
            (
                "groundwork_llm_client_stream_calls_total",
                self.stream_calls,
            ),
            ("groundwork_llm_client_attempts_total", self.attempts),
            ("groundwork_llm_client_retries_total", self.retries),
            ("groundwork_llm_client_rejected_total", self.rejected),
            (
                "groundwork_llm_client_streams_completed_total",
                self.streams_completed,
            ),
            (
                "groundwork_llm_client_streams_aborted_total",
                self.streams_aborted,
            ),
        ];
        for (metric, value) in counters {
            metrics::counter!(metric, &labels).absolute(value);
        }
        for (class, value) in [
            ("4xx", self.errors_4xx),
            ("429", self.errors_429),
            ("5xx", self.errors_5xx),
            ("transport", self.errors_transport),
            ("timeout", self.errors_timeout),
        ] {
            metrics::counter!(
                "groundwork_llm_client_errors_total",
                "client" => name.to_owned(),
                "class" => class
            )
            .absolute(value);
        }
        for breaker in &self.breakers {
            breaker.publish();
        }
    }
}
