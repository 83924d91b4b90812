//! The counters an [`AmqpQueue`](super::AmqpQueue) keeps per queue, also exported through the
//! `metrics` crate as `groundwork_queue_{published,acked,retried,dead_lettered}_total`,
//! labelled with `queue` and `backend="amqp"` (the gauges are set by
//! [`figures::publish`](crate::figures::publish) at each [`Queue::stats`](crate::Queue::stats)
//! call).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::queue::QueueStats;

/// The `backend` label.
pub(super) const BACKEND: &str = "amqp";

/// The counters of every queue a handle used.
#[derive(Debug, Default)]
pub(super) struct Stats {
    queues: Mutex<HashMap<String, Arc<Counters>>>,
}

impl Stats {
    /// The counters of `queue`.
    pub(super) fn of(&self, queue: &str) -> Arc<Counters> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = queues.get(queue) {
            return Arc::clone(counters);
        }
        let counters = Arc::new(Counters {
            queue: queue.to_owned(),
            ..Counters::default()
        });
        queues.insert(queue.to_owned(), Arc::clone(&counters));
        counters
    }
}

/// The counters of one queue.
#[derive(Debug, Default)]
pub(super) struct Counters {
    queue: String,
    published: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    in_flight: AtomicU64,
}

impl Counters {
    fn count(&self, counter: &AtomicU64, metric: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        counter.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(metric, "queue" => self.queue.clone(), "backend" => BACKEND).increment(n);
    }

    /// `n` messages were published and confirmed.
    pub(super) fn published(&self, n: u64) {
        self.count(&self.published, "groundwork_queue_published_total", n);
    }

    /// A delivery was acknowledged.
    pub(super) fn acked(&self) {
        self.count(&self.acked, "groundwork_queue_acked_total", 1);
    }

    /// A delivery asked for a retry (and its copy was confirmed).
    pub(super) fn retried(&self) {
        self.count(&self.retried, "groundwork_queue_retried_total", 1);
    }

    /// A delivery was moved to the dead-letter queue.
    pub(super) fn dead_lettered(&self) {
        self.count(
            &self.dead_lettered,
            "groundwork_queue_dead_lettered_total",
            1,
        );
    }

    /// The figures of the queue, with the broker's counts.
    pub(super) fn snapshot(&self, depth: u64, delayed: u64, dead_lettered: u64) -> QueueStats {
        QueueStats {
            queue: self.queue.clone(),
            depth,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            delayed,
            dead_lettered,
            retried: self.retried.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
        }
    }
}

/// Counts a delivery as in flight until it is dropped (settled or not).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Counters>);

impl InFlight {
    pub(super) fn new(counters: Arc<Counters>) -> Self {
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_live_deliveries() {
        let stats = Stats::default();
        let counters = stats.of("jobs");
        let first = InFlight::new(Arc::clone(&counters));
        let second = InFlight::new(stats.of("jobs"));
        assert_eq!(counters.snapshot(0, 0, 0).in_flight, 2);
        drop(first);
        counters.published(3);
        counters.acked();
        let snapshot = second.counters().snapshot(7, 1, 2);
        assert_eq!(
            (
                snapshot.in_flight,
                snapshot.published,
                snapshot.acked,
                snapshot.depth
            ),
            (1, 3, 1, 7)
        );
        drop(second);
        assert_eq!(stats.of("jobs").snapshot(0, 0, 0).in_flight, 0);
        assert_eq!(stats.of("other").snapshot(0, 0, 0).published, 0);
    }
}
