//! [`ClientOptions`]: the timeouts, retries and breakers of an [`LlmClient`](super::LlmClient).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use groundwork_resilience::{BreakerConfig, RetryPolicy};

/// Makes the breaker configuration of one upstream from its name (`llm:<host>`).
type BreakerFactory = Arc<dyn Fn(&str) -> BreakerConfig + Send + Sync>;

/// Settings of an [`LlmClient`](super::LlmClient), each with its default.
///
/// Connection settings (connect timeout, idle connections kept, DNS cache, proxies) belong
/// to the shared [`HttpClient`](groundwork_clients::http::HttpClient) the client is built on.
/// Its total request timeout is replaced by the ones below for every request the LLM client
/// makes.
///
/// ```
/// use std::time::Duration;
/// use groundwork_llm::client::ClientOptions;
/// use groundwork_resilience::{BreakerConfig, RetryPolicy};
///
/// let options = ClientOptions::new()
///     .timeout(Duration::from_secs(120)) // long completions
///     .retry(RetryPolicy::new().max_attempts(2))
///     .breaker(|name| BreakerConfig::new(name).consecutive_failures(3));
/// assert_eq!(options.get_timeout(), Duration::from_secs(120));
/// ```
#[must_use]
#[derive(Clone)]
pub struct ClientOptions {
    pub(crate) timeout: Duration,
    pub(crate) total_timeout: Duration,
    pub(crate) first_event_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_retry_after: Duration,
    pub(crate) breaker: BreakerFactory,
    pub(crate) max_connections: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientOptions {
    /// The defaults, listed on each setter.
    pub fn new() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(120),
            first_event_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            // No elapsed-time limit of its own: the total timeout bounds the call, so that a
            // timed-out attempt (60 s) can still be retried.
            retry: RetryPolicy::new()
                .max_attempts(3)
                .base_delay(Duration::from_millis(200))
                .max_elapsed(None),
            max_retry_after: Duration::from_secs(30),
            breaker: Arc::new(BreakerConfig::new),
            max_connections: 30,
        }
    }

    /// How long one non-streaming attempt may take, from connecting to the last byte of the
    /// answer. An attempt that runs out of time is retried like a connection failure (see
    /// [`retry`](Self::retry)) while the [total timeout](Self::total_timeout) leaves time.
    /// Default: 60 s (completions of a few thousand tokens take tens of seconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a whole call may take, over all its attempts and the waits between them:
    /// for [`complete`](super::LlmClient::complete) until the answer is read, for
    /// [`stream`](super::LlmClient::stream) until its first event (a stream that has started
    /// is bounded by the [idle timeout](Self::idle_timeout) instead).
    ///
    /// Each attempt gets the smaller of its own timeout ([`timeout`](Self::timeout) or
    /// [`first_event_timeout`](Self::first_event_timeout)) and the time left; an attempt cut
    /// by the total fails with [`LlmError::Timeout`](super::LlmError::Timeout) at stage
    /// [`Total`](super::TimeoutStage::Total). A wait before a retry (backoff or
    /// `Retry-After`) that would end past the deadline is not made: the call ends at once
    /// with the last attempt's error, e.g. the upstream's 429 with its `retry_after`, for the
    /// caller to pass on. Default: 120 s, so that an attempt that used its whole 60 s can
    /// still be retried once.
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.total_timeout = timeout;
        self
    }

    /// How long a streaming attempt may take to deliver its first event, from connecting
    /// (comments such as `: keep-alive` do not count as events). An attempt that runs out of
    /// time is retried, since nothing has reached the caller yet. Default: 30 s.
    pub fn first_event_timeout(mut self, timeout: Duration) -> Self {
        self.first_event_timeout = timeout;
        self
    }

    /// How long a stream may stay silent after its first event: a read that brings nothing
    /// (not even a keep-alive comment) for this long ends the stream with an
    /// [`LlmError::Timeout`](super::LlmError::Timeout) item. A stream has no total time
    /// limit. Default: 60 s.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How failed attempts are retried: the number of attempts, the full-jitter backoff, the
    /// elapsed-time limit and the budget. Only 429, the 5xx statuses of an overloaded or
    /// unreachable server, connection failures and timeouts are retried, and a stream only
    /// until its first event, all within the [total timeout](Self::total_timeout).
    ///
    /// The policy's own elapsed-time limit ([`RetryPolicy::max_elapsed`], 30 s in
    /// [`RetryPolicy::new`]) applies too: no retry starts later than that after the first
    /// attempt. Give it `max_elapsed(None)` to leave the bound to the total timeout, as the
    /// default does. Default: 3 attempts, delays under 200 ms × 2ⁿ, no elapsed-time limit of
    /// the policy's own (the other settings of [`RetryPolicy::new`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The longest `Retry-After` the client waits for: a retryable answer asking for a longer
    /// wait is returned at once as [`LlmError::Upstream`](super::LlmError::Upstream), with
    /// its `retry_after`, for the caller to pass on. Shorter ones are honoured: the client
    /// waits the longer of the backoff delay and the `Retry-After`. Default: 30 s.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// How each upstream's circuit breaker is configured: `make` receives the breaker's name,
    /// `llm:<host>` (with `:<port>` when the base URL names one), and returns its
    /// configuration. Only 429, 5xx outages, connection failures and timeouts count as
    /// failures. Default: [`BreakerConfig::new`] (opens after 5 failures in a row or half of
    /// the last 10 calls, stays open 5 s).
    pub fn breaker(mut self, make: impl Fn(&str) -> BreakerConfig + Send + Sync + 'static) -> Self {
        self.breaker = Arc::new(make);
        self
    }

    /// How many requests may be in flight to one upstream host at once (streams count until
    /// they end): more wait for a slot, within their attempt's timeout. This caps the
    /// upstream connections the client opens, which the shared HTTP pool alone does not
    /// (it bounds only idle connections). Default: 30, the notes' `limit_per_host`.
    /// At least 1.
    pub fn max_connections_per_upstream(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The non-streaming attempt timeout.
    #[must_use]
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The total timeout of a call.
    #[must_use]
    pub fn get_total_timeout(&self) -> Duration {
        self.total_timeout
    }

    /// The time-to-first-event timeout of streams.
    #[must_use]
    pub fn get_first_event_timeout(&self) -> Duration {
        self.first_event_timeout
    }

    /// The idle timeout of streams.
    #[must_use]
    pub fn get_idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The longest `Retry-After` waited for.
    #[must_use]
    pub fn get_max_retry_after(&self) -> Duration {
        self.max_retry_after
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("timeout", &self.timeout)
            .field("total_timeout", &self.total_timeout)
            .field("first_event_timeout", &self.first_event_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .field("max_retry_after", &self.max_retry_after)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let options = ClientOptions::default();
        assert_eq!(options.get_timeout(), Duration::from_secs(60));
        assert_eq!(options.get_total_timeout(), Duration::from_secs(120));
        assert_eq!(options.get_first_event_timeout(), Duration::from_secs(30));
        assert_eq!(options.get_idle_timeout(), Duration::from_secs(60));
        assert_eq!(options.get_max_retry_after(), Duration::from_secs(30));
        assert_eq!(options.retry.backoff().count(), 2, "3 attempts");
        assert_eq!((options.breaker)("llm:x").name(), "llm:x");
    }

    #[test]
    fn by_default_an_attempt_that_used_its_whole_timeout_can_be_retried() {
        use groundwork_core::clock::ManualClock;

        let options = ClientOptions::default();
        assert!(
            options.get_total_timeout() > options.get_timeout(),
            "room for a retry after a timed-out attempt"
        );
        let clock = Arc::new(ManualClock::new());
        let mut backoff = options.retry.clone().clock(clock.clone()).backoff();
        clock.advance(options.get_timeout());
        assert!(
            backoff.next().is_some(),
            "the retry policy's own time limit does not forbid the retry"
        );
    }
}
