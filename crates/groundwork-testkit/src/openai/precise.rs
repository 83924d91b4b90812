//! Delays to the tens of microseconds, for load tests that compare latencies
//! ([`MockOptions::precise_timing`](super::MockOptions::precise_timing)).
//!
//! Tokio's timer counts whole milliseconds and rounds every deadline up to the next one, and
//! its driver parks through `epoll_wait`, itself in milliseconds: a 20 ms sleep lasts 20 to
//! 22 ms. Comparing "client → mock" with "client → proxy → mock" through such a mock turns
//! the proxy's sub-millisecond added time into 0 or 1 ms, depending on the phase between the
//! processes' timer ticks, not on the proxy: the figure moves by up to a millisecond from one
//! run or rate to the next. Here one thread keeps the deadlines in a heap and waits on a
//! condition variable (a futex, so a high-resolution timer, not a tick), then wakes the
//! sleepers whose deadline has come. Written by hand because no timer crate offers this
//! outside its own runtime, and it is a few dozen lines.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// One sleeper: woken at `deadline`; `seq` keeps the order total.
struct Entry {
    deadline: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
    stopped: bool,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A timer thread; it stops when this handle is dropped.
pub(super) struct PreciseTimer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PreciseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreciseTimer").finish_non_exhaustive()
    }
}

impl PreciseTimer {
    /// Starts the thread.
    pub(super) fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner::default());
        let thread_inner = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("mock-timer".to_owned())
            .spawn(move || run(&thread_inner))?;
        Ok(Self { inner })
    }

    /// Waits `delay` (a little more, never less).
    pub(super) async fn sleep(&self, delay: Duration) {
        let (wake, woken) = oneshot::channel();
        {
            let mut state = self.inner.state();
            if state.stopped {
                return;
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.heap.push(Reverse(Entry {
                deadline: Instant::now() + delay,
                seq,
                wake,
            }));
        }
        self.inner.changed.notify_one();
        // A dropped sender (the timer stopped) ends the wait as well.
        let _ = woken.await;
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.inner.state().stopped = true;
        self.inner.changed.notify_one();
    }
}

/// The thread: wakes each sleeper at its deadline, until stopped.
fn run(inner: &Inner) {
    let mut state = inner.state();
    loop {
        if state.stopped {
            // Dropping the senders ends every sleep still waiting.
            state.heap.clear();
            return;
        }
        let now = Instant::now();
        while state
            .heap
            .peek()
            .is_some_and(|Reverse(entry)| entry.deadline <= now)
        {
            if let Some(Reverse(entry)) = state.heap.pop() {
                // The sleeper may have gone (its call was cancelled): nothing to wake.
                let _ = entry.wake.send(());
            }
        }
        state = match state.heap.peek() {
            Some(Reverse(entry)) => {
                let wait = entry.deadline.saturating_duration_since(now);
                inner
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => inner
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn sleepers_wake_after_their_delay_in_deadline_order() {
        let timer = Arc::new(PreciseTimer::start().unwrap());
        let started = Instant::now();
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        for ms in [30_u64, 10, 20] {
            let timer = Arc::clone(&timer);
            let done = done.clone();
            tokio::spawn(async move {
                timer.sleep(Duration::from_millis(ms)).await;
                let _ = done.send((ms, started.elapsed()));
            });
        }
        drop(done);
        let mut woken = Vec::new();
        while let Some(entry) = order.recv().await {
            woken.push(entry);
        }
        assert_eq!(
            woken.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        for (ms, elapsed) in woken {
            assert!(
                elapsed >= Duration::from_millis(ms),
                "{ms} ms woke at {elapsed:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_stopped_timer_ends_its_sleeps() {
        let timer = PreciseTimer::start().unwrap();
        let inner = Arc::clone(&timer.inner);
        let sleeping = tokio::spawn({
            let timer = PreciseTimer {
                inner: Arc::clone(&inner),
            };
            async move {
                timer.sleep(Duration::from_secs(3600)).await;
                // Its own drop stops the thread too; harmless.
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(timer);
        tokio::time::timeout(Duration::from_secs(5), sleeping)
            .await
            .unwrap()
            .unwrap();
    }
}
