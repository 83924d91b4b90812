//! Retries: exponential backoff with full jitter, bounded by attempts, elapsed time and a
//! retry budget, and only for errors classified retryable.
//!
//! The loop is `backon`'s; this module supplies the backoff schedule ([`Backoff`], an
//! iterator of delays that also enforces the time limit and the budget) and the rule of what
//! is retried ([`groundwork_core::ErrorKind::is_retryable`]). The budget is tower's
//! [`TpsBudget`]: every first attempt deposits, every retry withdraws, so when a dependency
//! fails for everyone, retries stay a bounded share of the traffic instead of multiplying it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::Retryable as _;
use groundwork_core::Classify;
use groundwork_core::clock::{Clock, SystemClock};
use tower::retry::budget::{Budget as _, TpsBudget};

/// A shared retry budget: retries may add at most `ratio` of the calls made over the last
/// 10 seconds, plus `min_per_sec` retries per second regardless. Clones share the budget.
#[derive(Clone)]
pub struct RetryBudget(Arc<TpsBudget>);

impl RetryBudget {
    /// A budget allowing retries of `ratio` (e.g. 0.2 = 20 %) of the calls of the last 10 s,
    /// plus `min_per_sec` per second.
    #[must_use]
    pub fn new(ratio: f32, min_per_sec: u32) -> Self {
        Self(Arc::new(TpsBudget::new(
            Duration::from_secs(10),
            min_per_sec,
            ratio.clamp(0.0, 1000.0),
        )))
    }

    fn deposit(&self) {
        self.0.deposit();
    }

    fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

impl Default for RetryBudget {
    /// 20 % of the traffic plus 10 retries per second.
    fn default() -> Self {
        Self::new(0.2, 10)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget").finish_non_exhaustive()
    }
}

/// How to retry (see the [module documentation](self)).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use groundwork_core::{Classify, ErrorKind};
/// use groundwork_resilience::RetryPolicy;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("flaky")]
/// struct Flaky;
/// impl Classify for Flaky {
///     fn kind(&self) -> ErrorKind { ErrorKind::Unavailable }
/// }
///
/// let calls = AtomicU32::new(0);
/// let policy = RetryPolicy::new().max_attempts(3).base_delay(Duration::from_millis(1));
/// let answer = policy
///     .run(|| async {
///         if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(Flaky) } else { Ok(42) }
///     })
///     .await;
/// assert_eq!(answer.ok(), Some(42));
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # });
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    max_elapsed: Option<Duration>,
    budget: Option<RetryBudget>,
    clock: Arc<dyn Clock>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// Defaults: 3 attempts, delays drawn from `[0, 100 ms × 2^n]` capped at 10 s, at most
    /// 30 s from the first attempt, no budget.
    pub fn new() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_elapsed: Some(Duration::from_secs(30)),
            budget: None,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Attempts in all, the first included (at least 1). Default 3.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The ceiling of the first delay; it doubles per retry. Default 100 ms.
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// The largest ceiling a delay is drawn under. Default 10 s.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// No retry starts later than this after the first attempt (`None`: no limit).
    /// Default 30 s.
    pub fn max_elapsed(mut self, limit: Option<Duration>) -> Self {
        self.max_elapsed = limit;
        self
    }

    /// Retries withdraw from `budget`; when it is empty, the last error is returned.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The clock the elapsed-time limit is measured on.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Tells the budget (if any) that a call is being made: calls fund retries. [`RetryPolicy::run`]
    /// does this itself; callers driving [`RetryPolicy::backoff`] themselves call it once per
    /// call.
    pub fn deposit(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// The delays before each retry, for one call whose first attempt starts now.
    #[must_use]
    pub fn backoff(&self) -> Backoff {
        self.backoff_from(self.clock.now())
    }

    /// The delays before each retry, for one call whose first attempt started at `started`
    /// (a reading of this policy's clock, see [`RetryPolicy::now`]): the elapsed-time limit
    /// counts from there.
    #[must_use]
    pub fn backoff_from(&self, started: Duration) -> Backoff {
        Backoff {
            policy: self.clone(),
            retries: 0,
            started,
        }
    }

    /// The current reading of the clock the elapsed-time limit is measured on.
    #[must_use]
    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Runs `op`, retrying its retryable errors per this policy; returns the first success
    /// or the last error.
    ///
    /// # Errors
    /// The last error of `op`: a non-retryable one at once, a retryable one when attempts,
    /// time or budget run out.
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Classify + fmt::Display,
    {
        self.deposit();
        op.retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(|err: &E| err.kind().is_retryable())
            .notify(|err: &E, delay: Duration| {
                tracing::debug!(error = %err, ?delay, "retrying");
                metrics::counter!("groundwork_retries_total").increment(1);
            })
            .await
    }
}

/// The delays of one retried call: full jitter (uniform in `[0, min(max, base × 2^n)]`),
/// ending when the attempts, the elapsed-time limit or the budget run out.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    retries: u32,
    started: Duration,
}

impl Backoff {
    /// The ceiling of retry number `retry` (0-based): `base × 2^retry`, capped.
    fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.policy
            .base_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay)
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let policy = &self.policy;
        if self.retries + 1 >= policy.max_attempts {
            return None;
        }
        let delay = self.ceiling(self.retries).mul_f64(fastrand::f64());
        if let Some(limit) = policy.max_elapsed {
            let elapsed = policy.clock.now().saturating_sub(self.started);
            if elapsed.saturating_add(delay) > limit {
                return None;
            }
        }
        if let Some(budget) = &policy.budget
            && !budget.withdraw()
        {
            metrics::counter!("groundwork_retries_budget_exhausted_total").increment(1);
            return None;
        }
        self.retries += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundwork_core::clock::ManualClock;

    #[test]
    fn delays_are_fully_jittered_under_a_doubling_ceiling() {
        let policy = RetryPolicy::new()
            .max_attempts(10)
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(800))
            .max_elapsed(None);
        for _ in 0..200 {
            let delays: Vec<_> = policy.backoff().collect();
            assert_eq!(delays.len(), 9);
            for (n, delay) in delays.iter().enumerate() {
                let ceiling = Duration::from_millis(100 * (1 << n.min(3)));
                assert!(*delay <= ceiling, "retry {n}: {delay:?} > {ceiling:?}");
            }
        }
        // Full jitter: across many draws, some delays fall in the lower half.
        let low = (0..200)
            .filter_map(|_| policy.backoff().next())
            .filter(|d| *d < Duration::from_millis(50))
            .count();
        assert!(
            low > 20,
            "only {low} of 200 first delays under half the ceiling"
        );
    }

    #[test]
    fn the_elapsed_limit_ends_the_schedule() {
        let clock = Arc::new(ManualClock::new());
        let policy = RetryPolicy::new()
            .max_attempts(100)
            .max_elapsed(Some(Duration::from_secs(5)))
            .clock(Arc::clone(&clock) as Arc<dyn Clock>);
        let mut backoff = policy.backoff();
        assert!(backoff.next().is_some());
        clock.advance(Duration::from_secs(5));
        assert_eq!(backoff.next(), None);
    }

    #[test]
    fn an_empty_budget_stops_retries() {
        // No minimum and no deposits: nothing to withdraw.
        let policy = RetryPolicy::new().budget(RetryBudget::new(0.0, 0));
        assert_eq!(policy.backoff().next(), None);
        // Deposits (first attempts) fund retries at the given ratio.
        let budget = RetryBudget::new(0.5, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        let policy = RetryPolicy::new().max_attempts(100).budget(budget);
        let retries = policy.backoff().count();
        assert!(
            (4..=6).contains(&retries),
            "{retries} retries from 10 deposits at 50 %"
        );
    }
}
