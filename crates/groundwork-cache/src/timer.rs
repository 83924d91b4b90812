//! Waiting on the cache's clock: the [`Sleeper`] the background tasks wait with, and
//! [`ManualTimer`], a manual clock whose sleepers wake when a test advances it.
//!
//! The cache measures time with an injected [`Clock`]; its background tasks (the periodic
//! refresh, its backoff, the metrics export) must also *wait* on that clock, or a test that
//! drives the clock by hand could not make them run. [`Clock`] lives in `groundwork-core` and
//! only reads time, so waiting is this separate capability.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use groundwork_cache::{ManualTimer, Sleeper};
//! use groundwork_core::clock::Clock;
//!
//! let timer = ManualTimer::new();
//! let sleep = timer.sleep(Duration::from_secs(60));
//! assert_eq!(timer.deadlines(), [Duration::from_secs(60)]);
//! timer.advance(Duration::from_secs(60)); // wakes the sleep
//! sleep.await;
//! assert_eq!(timer.now(), Duration::from_secs(60));
//! assert!(timer.deadlines().is_empty());
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use groundwork_core::clock::{Clock, ManualClock};
use tokio::sync::oneshot;

/// What [`Sleeper::sleep`] returns: completes once the time has passed.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Waits for time to pass on the cache's clock. The background refresh (its interval and its
/// backoff) and the periodic metrics export wait through it.
///
/// The default, [`TokioSleeper`], waits in real time, which matches the default
/// `SystemClock`. A cache on a hand-driven clock takes a [`ManualTimer`] as both its clock and
/// its sleeper (see [`crate::CacheBuilder::timer`]), so that advancing the clock runs what is
/// due.
pub trait Sleeper: Send + Sync + fmt::Debug + 'static {
    /// A future that completes once `duration` has passed, measured from this call (not from
    /// the first poll).
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// Sleeps in real time with `tokio::time::sleep` (needs a Tokio runtime with the time driver).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A waiting sleeper: its deadline on the clock and the way to wake it.
#[derive(Debug)]
struct Waiter {
    /// Clock time (ns) at which it wakes.
    deadline: u64,
    wake: oneshot::Sender<()>,
}

/// A [`ManualClock`] that also sleeps: a sleep completes when [`ManualTimer::advance`] moves
/// the clock to its deadline, never on its own. Give it to a cache as both clock and sleeper
/// ([`crate::CacheBuilder::timer`]) to drive refreshes, backoff and metrics export from a
/// test without real waits.
///
/// Advance time through [`ManualTimer::advance`]: moving the underlying [`ManualClock`]
/// directly changes the time but wakes nobody until the next `advance`.
#[derive(Debug)]
pub struct ManualTimer {
    clock: Arc<ManualClock>,
    /// Also serialises clock moves with sleep registrations, so that a sleep registered
    /// while the clock moves is either woken by that move or measured from its end.
    waiters: Mutex<Vec<Waiter>>,
}

impl Default for ManualTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualTimer {
    /// A timer on a new clock at time zero.
    #[must_use]
    pub fn new() -> Self {
        Self::with_clock(Arc::new(ManualClock::new()))
    }

    /// A timer on `clock` (which it advances).
    #[must_use]
    pub fn with_clock(clock: Arc<ManualClock>) -> Self {
        Self {
            clock,
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// The underlying clock.
    #[must_use]
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }

    /// Moves the clock forward by `by`, then wakes every sleep whose deadline has been reached
    /// (the woken tasks run when the runtime next polls them).
    pub fn advance(&self, by: Duration) {
        let mut waiters = self.lock();
        self.clock.advance(by);
        let now = nanos(self.clock.now());
        let (due, pending): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut *waiters)
            .into_iter()
            .partition(|w| w.deadline <= now);
        *waiters = pending;
        waiters.retain(|w| !w.wake.is_closed());
        drop(waiters);
        for waiter in due {
            // A sleep dropped meanwhile (e.g. the other branch of a `select!` won) is gone.
            let _ = waiter.wake.send(());
        }
    }

    /// The deadlines (clock times) of the sleeps waiting now, earliest first. Sleeps that were
    /// dropped before their deadline are not listed.
    #[must_use]
    pub fn deadlines(&self) -> Vec<Duration> {
        let mut deadlines: Vec<Duration> = self
            .lock()
            .iter()
            .filter(|w| !w.wake.is_closed())
            .map(|w| Duration::from_nanos(w.deadline))
            .collect();
        deadlines.sort_unstable();
        deadlines
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Waiter>> {
        // The list stays consistent whatever panicked while holding it.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualTimer {
    fn now(&self) -> Duration {
        self.clock.now()
    }
}

impl Sleeper for ManualTimer {
    fn sleep(&self, duration: Duration) -> Sleep {
        if duration.is_zero() {
            return Box::pin(std::future::ready(()));
        }
        let mut waiters = self.lock();
        let deadline = nanos(self.clock.now()).saturating_add(nanos(duration));
        let (wake, woken) = oneshot::channel();
        waiters.retain(|w| !w.wake.is_closed());
        waiters.push(Waiter { deadline, wake });
        drop(waiters);
        Box::pin(async move {
            // An error means the timer was dropped: nothing can advance it any more, and
            // waking is the only answer that does not strand the sleeper.
            let _ = woken.await;
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn a_sleep_wakes_at_its_deadline_and_not_before() {
        let timer = ManualTimer::new();
        timer.advance(Duration::from_secs(5));
        let mut sleep = timer.sleep(Duration::from_secs(10));
        assert_eq!(timer.deadlines(), [Duration::from_secs(15)]);
        timer.advance(Duration::from_secs(9));
        assert!((&mut sleep).now_or_never().is_none(), "woke early");
        assert_eq!(timer.deadlines(), [Duration::from_secs(15)]);
        timer.advance(Duration::from_secs(1));
        assert!(
            sleep.now_or_never().is_some(),
            "did not wake at its deadline"
        );
        assert!(timer.deadlines().is_empty());
    }

    #[test]
    fn dropped_and_zero_sleeps_are_not_listed() {
        let timer = ManualTimer::new();
        assert!(timer.sleep(Duration::ZERO).now_or_never().is_some());
        let dropped = timer.sleep(Duration::from_secs(1));
        let kept = timer.sleep(Duration::from_secs(2));
        drop(dropped);
        assert_eq!(timer.deadlines(), [Duration::from_secs(2)]);
        timer.advance(Duration::from_secs(3));
        assert!(kept.now_or_never().is_some());
    }

    #[test]
    fn a_dropped_timer_releases_its_sleepers() {
        let timer = ManualTimer::new();
        let sleep = timer.sleep(Duration::from_secs(1));
        drop(timer);
        assert!(sleep.now_or_never().is_some());
    }
}
