//! Circuit breaker: stop calling a dependency that is failing, and probe it back to health.
//!
//! Written here rather than taken from a crate: the breakers published for Rust (`failsafe`,
//! `tower-circuitbreaker`, a few smaller ones) either read `Instant::now()` directly, so their
//! timing can only be tested with sleeps, or take a lock on every call, or exist only as a
//! tower `Service`; Groundwork needs one that guards a pool's acquire (not a service), rejects
//! with a single atomic load while open, trips at five calls, and runs on an injected clock.
//!
//! # States
//! - **Closed**: calls pass. The breaker opens after `consecutive_failures` failures in a row,
//!   or when at least `min_calls` of the last `window` calls were made and the share of
//!   failures among them reaches `failure_rate`.
//! - **Open**: calls are rejected at once with [`BreakerOpen`] for `open_for`.
//! - **Half-open**: after `open_for`, up to `half_open_probes` calls at a time (default 3) go
//!   through as probes. `close_after` successful probes (default 2) close the breaker; a
//!   failed probe opens it again.
//!
//! Only failures that say something about the dependency's health count (for
//! [`CircuitBreaker::call`]: errors whose [`groundwork_core::ErrorKind`] is retryable, and
//! timeouts); a "not found" is an answer, not an outage.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use groundwork_core::clock::{Clock, SystemClock};
use groundwork_core::{Classify, ErrorKind};
use serde::Serialize;

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few probe calls pass.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the `groundwork_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    #[must_use]
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::HalfOpen => 1.0,
            Self::Open => 2.0,
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            OPEN => Self::Open,
            HALF_OPEN => Self::HalfOpen,
            _ => Self::Closed,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A call rejected because the breaker is open (or half-open with every probe slot taken).
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker {name} is open: {dependency_hint}")]
pub struct BreakerOpen {
    /// The breaker's name.
    pub name: Arc<str>,
    /// How long until the breaker lets a probe through (zero when half-open and busy).
    pub retry_in: Duration,
    dependency_hint: &'static str,
}

impl Classify for BreakerOpen {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

/// Settings of a [`CircuitBreaker`].
///
/// ```
/// use std::time::Duration;
/// use groundwork_resilience::BreakerConfig;
///
/// let config = BreakerConfig::new("postgres")
///     .consecutive_failures(3)
///     .open_for(Duration::from_millis(500));
/// assert_eq!(config.name(), "postgres");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BreakerConfig {
    name: Arc<str>,
    consecutive_failures: u32,
    failure_rate: f64,
    window: u32,
    min_calls: u32,
    open_for: Duration,
    half_open_probes: u32,
    close_after: u32,
    clock: Arc<dyn Clock>,
}

impl BreakerConfig {
    /// Defaults: opens after 5 failures in a row or at a 50 % failure rate over the last 10
    /// calls (at least 5 made); stays open 5 s; then up to 3 probes at a time, 2 successes
    /// close it (one failure opens it again).
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 10,
            min_calls: 5,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
            close_after: 2,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// The breaker's name (a metrics label).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Failures in a row that open the breaker (at least 1). Default 5.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// Share of failures over the window that opens the breaker, in `(0, 1]`. Default 0.5.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = if rate.is_finite() {
            rate.clamp(f64::MIN_POSITIVE, 1.0)
        } else {
            1.0
        };
        self
    }

    /// How many of the most recent calls the failure rate is computed over (1..=64), and
    /// how many of them must have been made before the rate counts. Defaults 10 and 5.
    pub fn window(mut self, calls: u32, min_calls: u32) -> Self {
        self.window = calls.clamp(1, 64);
        self.min_calls = min_calls.clamp(1, self.window);
        self
    }

    /// How long the breaker stays open before letting a probe through. Default 5 s.
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// Probes allowed at the same time while half-open (at least 1). Default 3.
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n.max(1);
        self
    }

    /// Successful probes that close the breaker (at least 1). Default 2.
    pub fn close_after(mut self, n: u32) -> Self {
        self.close_after = n.max(1);
        self
    }

    /// The clock (tests pass a [`groundwork_core::clock::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the breaker, closed.
    #[must_use]
    pub fn build(self) -> CircuitBreaker {
        CircuitBreaker::new(self)
    }
}

/// Outcomes of the last `window` calls, as bits (1 = failure).
#[derive(Debug, Default)]
struct Window {
    bits: u64,
    len: u32,
    failures_in_row: u32,
    probes_in_flight: u32,
    probe_successes: u32,
}

impl Window {
    fn push(&mut self, failed: bool, size: u32) {
        let mask = if size >= 64 {
            u64::MAX
        } else {
            (1u64 << size) - 1
        };
        self.bits = ((self.bits << 1) | u64::from(failed)) & mask;
        self.len = (self.len + 1).min(size);
        if failed {
            self.failures_in_row += 1;
        } else {
            self.failures_in_row = 0;
        }
    }

    fn failure_share(&self) -> f64 {
        if self.len == 0 {
            0.0
        } else {
            f64::from(self.bits.count_ones()) / f64::from(self.len)
        }
    }

    fn clear(&mut self) {
        self.bits = 0;
        self.len = 0;
        self.failures_in_row = 0;
        self.probe_successes = 0;
    }
}

struct Inner {
    config: BreakerConfig,
    state: AtomicU8,
    /// Clock time (ns) until which an open breaker rejects.
    open_until: AtomicU64,
    /// Clock time (ns) of the last state change; 0 = never changed.
    changed_at: AtomicU64,
    window: Mutex<Window>,
    successes: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    opened: AtomicU32,
}

/// A circuit breaker (see the [module documentation](self)). Cheap to clone: clones share
/// their state.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use groundwork_resilience::{BreakerConfig, BreakerState, CallError};
/// use groundwork_core::{Classify, ErrorKind};
///
/// #[derive(Debug)]
/// struct Down;
/// impl Classify for Down {
///     fn kind(&self) -> ErrorKind { ErrorKind::Unavailable }
/// }
///
/// let breaker = BreakerConfig::new("upstream").consecutive_failures(2).build();
/// for _ in 0..2 {
///     let _ = breaker.call(async { Err::<(), _>(Down) }).await;
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// // Rejected at once, without running the call.
/// let rejected = breaker.call(async { Ok::<_, Down>(()) }).await;
/// assert!(matches!(rejected, Err(CallError::Open(_))));
/// # });
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.config.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A call admitted by [`CircuitBreaker::acquire`]: report how it went with
/// [`Permit::success`] or [`Permit::failure`]. Dropped without a verdict (the caller gave
/// up), it counts as neither and frees its probe slot.
#[must_use = "report the outcome with success() or failure()"]
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    done: bool,
}

impl Permit {
    /// The call succeeded (the dependency answered).
    pub fn success(mut self) {
        self.done = true;
        self.breaker.on_outcome(false, self.probe);
    }

    /// The call failed in a way that says the dependency is unhealthy.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.on_outcome(true, self.probe);
    }

    /// Whether this call is a half-open probe.
    #[must_use]
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut window = self.breaker.lock();
            window.probes_in_flight = window.probes_in_flight.saturating_sub(1);
        }
    }
}

/// Why [`CircuitBreaker::call`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker rejected the call; it was not run.
    #[error(transparent)]
    Open(BreakerOpen),
    /// The call ran and failed.
    #[error(transparent)]
    Inner(E),
}

impl<E: Classify> Classify for CallError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Open(open) => open.kind(),
            Self::Inner(err) => err.kind(),
        }
    }
}

/// A snapshot of a breaker, for `/infra` and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStats {
    /// The breaker's name.
    pub name: String,
    /// Its state now.
    pub state: BreakerState,
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (counted against the dependency).
    pub failures: u64,
    /// Calls rejected without running.
    pub rejected: u64,
    /// Times the breaker opened.
    pub opened: u32,
    /// Failures in a row right now.
    pub failures_in_row: u32,
    /// How long ago the state last changed, in seconds (absent if it never changed).
    pub since_change_secs: Option<f64>,
    /// While open: seconds until a probe is let through.
    pub retry_in_secs: Option<f64>,
}

impl BreakerStats {
    /// Exports the snapshot through the `metrics` crate, labelled `breaker = name`:
    /// `groundwork_breaker_state` (0 closed, 1 half-open, 2 open) and the
    /// `groundwork_breaker_{successes,failures,rejected,opened}` totals as gauges.
    pub fn publish(&self) {
        let name = self.name.clone();
        metrics::gauge!("groundwork_breaker_state", "breaker" => name.clone())
            .set(self.state.gauge());
        for (metric, value) in [
            ("groundwork_breaker_successes", self.successes as f64),
            ("groundwork_breaker_failures", self.failures as f64),
            ("groundwork_breaker_rejected", self.rejected as f64),
            ("groundwork_breaker_opened", f64::from(self.opened)),
        ] {
            metrics::gauge!(metric, "breaker" => name.clone()).set(value);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl CircuitBreaker {
    /// A closed breaker with `config`.
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                state: AtomicU8::new(CLOSED),
                open_until: AtomicU64::new(0),
                changed_at: AtomicU64::new(0),
                window: Mutex::new(Window::default()),
                successes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                opened: AtomicU32::new(0),
            }),
        }
    }

    /// The breaker's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    /// The state now. An open breaker whose `open_for` has passed reports half-open (the
    /// next call is a probe).
    #[must_use]
    pub fn state(&self) -> BreakerState {
        match self.inner.state.load(Ordering::Acquire) {
            OPEN if self.now() >= self.inner.open_until.load(Ordering::Acquire) => {
                BreakerState::HalfOpen
            }
            state => BreakerState::from_u8(state),
        }
    }

    /// Whether a call would be admitted now (without taking a probe slot).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == CLOSED
    }

    fn now(&self) -> u64 {
        nanos(self.inner.config.clock.now_coarse())
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        // A panic while holding the lock leaves plain counters behind: keep using them.
        self.inner
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reject(&self, retry_in: Duration) -> BreakerOpen {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        BreakerOpen {
            name: Arc::clone(&self.inner.config.name),
            retry_in,
            dependency_hint: "the dependency is failing; calls are rejected until a probe succeeds",
        }
    }

    /// Admits a call, or rejects it at once while open.
    ///
    /// # Errors
    /// [`BreakerOpen`] while the breaker is open, or half-open with every probe slot taken.
    #[inline]
    pub fn acquire(&self) -> Result<Permit, BreakerOpen> {
        // Closed: one atomic load. Open: one load and a coarse clock read.
        match self.inner.state.load(Ordering::Acquire) {
            CLOSED => Ok(self.permit(false)),
            OPEN => {
                let until = self.inner.open_until.load(Ordering::Acquire);
                let now = self.now();
                if now < until {
                    return Err(self.reject(Duration::from_nanos(until - now)));
                }
                self.acquire_probe()
            }
            _ => self.acquire_probe(),
        }
    }

    fn permit(&self, probe: bool) -> Permit {
        Permit {
            breaker: self.clone(),
            probe,
            done: false,
        }
    }

    #[cold]
    fn acquire_probe(&self) -> Result<Permit, BreakerOpen> {
        let mut window = self.lock();
        match self.inner.state.load(Ordering::Acquire) {
            CLOSED => return Ok(self.permit(false)),
            OPEN => {
                let until = self.inner.open_until.load(Ordering::Acquire);
                let now = self.now();
                if now < until {
                    drop(window);
                    return Err(self.reject(Duration::from_nanos(until - now)));
                }
                window.probe_successes = 0;
                window.probes_in_flight = 0;
                self.transition(HALF_OPEN, "open_for elapsed; probing");
            }
            _ => {}
        }
        if window.probes_in_flight >= self.inner.config.half_open_probes {
            drop(window);
            return Err(self.reject(Duration::ZERO));
        }
        window.probes_in_flight += 1;
        Ok(self.permit(true))
    }

    fn on_outcome(&self, failed: bool, probe: bool) {
        if failed {
            self.inner.failures.fetch_add(1, Ordering::Relaxed);
        } else {
            self.inner.successes.fetch_add(1, Ordering::Relaxed);
        }
        let config = &self.inner.config;
        let mut window = self.lock();
        if probe {
            window.probes_in_flight = window.probes_in_flight.saturating_sub(1);
        }
        match self.inner.state.load(Ordering::Acquire) {
            CLOSED => {
                window.push(failed, config.window);
                if failed
                    && (window.failures_in_row >= config.consecutive_failures
                        || (window.len >= config.min_calls
                            && window.failure_share() >= config.failure_rate))
                {
                    let reason = if window.failures_in_row >= config.consecutive_failures {
                        "consecutive failures"
                    } else {
                        "failure rate over the window"
                    };
                    self.open(&mut window, reason);
                }
            }
            HALF_OPEN => {
                if failed {
                    self.open(&mut window, "a probe failed");
                } else if probe {
                    window.probe_successes += 1;
                    if window.probe_successes >= config.close_after {
                        window.clear();
                        self.transition(CLOSED, "probes succeeded");
                    }
                }
            }
            // Open: a call admitted before the breaker opened finished late; it is counted
            // above and changes nothing.
            _ => {}
        }
    }

    fn open(&self, window: &mut Window, reason: &str) {
        window.clear();
        window.probes_in_flight = 0;
        let until = self.now().saturating_add(nanos(self.inner.config.open_for));
        self.inner.open_until.store(until, Ordering::Release);
        if self.inner.state.load(Ordering::Acquire) != OPEN {
            self.inner.opened.fetch_add(1, Ordering::Relaxed);
            self.transition(OPEN, reason);
        }
    }

    /// Changes the state (under the window lock), logs it and updates the gauge.
    fn transition(&self, to: u8, reason: &str) {
        let from = self.inner.state.swap(to, Ordering::AcqRel);
        self.inner
            .changed_at
            .store(self.now().saturating_add(1), Ordering::Release);
        if from == to {
            return;
        }
        let (from, to) = (BreakerState::from_u8(from), BreakerState::from_u8(to));
        let name = &*self.inner.config.name;
        match to {
            BreakerState::Open => {
                tracing::warn!(breaker = name, %from, %to, reason, "circuit breaker opened")
            }
            BreakerState::HalfOpen => {
                tracing::info!(breaker = name, %from, %to, reason, "circuit breaker half-open")
            }
            BreakerState::Closed => {
                tracing::info!(breaker = name, %from, %to, reason, "circuit breaker closed")
            }
        }
        metrics::gauge!("groundwork_breaker_state", "breaker" => name.to_owned()).set(to.gauge());
        metrics::counter!("groundwork_breaker_transitions_total", "breaker" => name.to_owned(), "to" => to.as_str())
            .increment(1);
    }

    /// Records a success observed outside a permit (a health check that passed): closes the
    /// breaker if it is open or half-open.
    pub fn record_success(&self) {
        self.inner.successes.fetch_add(1, Ordering::Relaxed);
        let mut window = self.lock();
        if self.inner.state.load(Ordering::Acquire) != CLOSED {
            window.clear();
            window.probes_in_flight = 0;
            self.transition(CLOSED, "the dependency answered a health check");
        } else {
            window.push(false, self.inner.config.window);
        }
    }

    /// Records a failure observed outside a permit (a health check that failed): opens the
    /// breaker at once (a failed health check is strong evidence), or extends its open time.
    pub fn record_failure(&self) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        let mut window = self.lock();
        self.open(&mut window, "a health check failed");
    }

    /// Runs `call` if the breaker admits it, and records its outcome: an error counts as a
    /// failure when its kind is retryable (the dependency is unavailable), anything else as a
    /// success.
    ///
    /// # Errors
    /// [`CallError::Open`] without running `call` while open; [`CallError::Inner`] with the
    /// call's own error.
    pub async fn call<T, E, F>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        E: Classify,
    {
        let permit = self.acquire().map_err(CallError::Open)?;
        match call.await {
            Ok(value) => {
                permit.success();
                Ok(value)
            }
            Err(err) => {
                if err.kind().is_retryable() {
                    permit.failure();
                } else {
                    permit.success();
                }
                Err(CallError::Inner(err))
            }
        }
    }

    /// A snapshot of the counters and state.
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        let now = self.now();
        let state = self.state();
        let changed = self.inner.changed_at.load(Ordering::Acquire);
        let until = self.inner.open_until.load(Ordering::Acquire);
        let failures_in_row = self.lock().failures_in_row;
        BreakerStats {
            name: self.inner.config.name.to_string(),
            state,
            successes: self.inner.successes.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
            rejected: self.inner.rejected.load(Ordering::Relaxed),
            opened: self.inner.opened.load(Ordering::Relaxed),
            failures_in_row,
            since_change_secs: (changed != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(changed - 1)).as_secs_f64()),
            retry_in_secs: (state == BreakerState::Open)
                .then(|| Duration::from_nanos(until.saturating_sub(now)).as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundwork_core::clock::ManualClock;

    fn breaker(clock: &Arc<ManualClock>) -> CircuitBreaker {
        BreakerConfig::new("test")
            .open_for(Duration::from_secs(1))
            .clock(Arc::clone(clock) as Arc<dyn Clock>)
            .build()
    }

    fn fail(b: &CircuitBreaker) {
        if let Ok(p) = b.acquire() {
            p.failure();
        }
    }

    fn succeed(b: &CircuitBreaker) {
        if let Ok(p) = b.acquire() {
            p.success();
        }
    }

    #[test]
    fn opens_after_five_failures_in_a_row() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        for _ in 0..4 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.acquire().is_err());
        assert_eq!(b.stats().rejected, 1);
        assert_eq!(b.stats().opened, 1);
    }

    #[test]
    fn opens_on_the_failure_rate_at_low_traffic() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        // 3 failures of 5 calls, never 5 in a row: 60 % >= 50 %.
        fail(&b);
        succeed(&b);
        fail(&b);
        succeed(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let clock = Arc::new(ManualClock::new());
        let b = BreakerConfig::new("t")
            .failure_rate(1.0)
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .build();
        for _ in 0..3 {
            for _ in 0..4 {
                fail(&b);
            }
            succeed(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_a_few_probes_and_closes_on_their_success() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        for _ in 0..5 {
            fail(&b);
        }
        clock.advance(Duration::from_millis(999));
        assert!(b.acquire().is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probes: Vec<Permit> = (0..3).filter_map(|_| b.acquire().ok()).collect();
        assert_eq!(probes.len(), 3);
        assert!(probes.iter().all(Permit::is_probe));
        // Every probe slot is taken.
        assert!(b.acquire().is_err());
        let mut probes = probes.into_iter();
        if let Some(p) = probes.next() {
            p.success();
        }
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "one success is not enough"
        );
        if let Some(p) = probes.next() {
            p.success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // The third probe finishing late changes nothing.
        drop(probes);
        assert!(b.acquire().is_ok_and(|p| !p.is_probe()));
    }

    #[test]
    fn a_failed_probe_opens_again_for_the_full_time() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        for _ in 0..5 {
            fail(&b);
        }
        clock.advance(Duration::from_secs(1));
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_millis(900));
        assert!(b.acquire().is_err());
        clock.advance(Duration::from_millis(100));
        assert!(b.acquire().is_ok());
        assert_eq!(b.stats().opened, 2);
    }

    #[test]
    fn an_abandoned_probe_frees_its_slot() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        for _ in 0..5 {
            fail(&b);
        }
        clock.advance(Duration::from_secs(1));
        for _ in 0..3 {
            drop(b.acquire());
        }
        assert!(
            b.acquire().is_ok(),
            "the dropped probe must not hold the slot"
        );
    }

    #[test]
    fn health_checks_open_and_close_directly() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        let stats = b.stats();
        assert_eq!(stats.opened, 1);
        assert_eq!((stats.failures, stats.successes), (1, 1));
    }

    #[test]
    fn stats_report_the_time_left_open() {
        let clock = Arc::new(ManualClock::new());
        let b = breaker(&clock);
        b.record_failure();
        clock.advance(Duration::from_millis(250));
        let stats = b.stats();
        assert_eq!(stats.state, BreakerState::Open);
        assert_eq!(stats.retry_in_secs, Some(0.75));
        assert_eq!(stats.since_change_secs, Some(0.25));
    }
}
