//! Queue figures in `/metrics`, the same for every backend.

use crate::queue::QueueStats;

/// Sets the `groundwork_queue_*` gauges of `stats.queue` for `backend` (`"amqp"`,
/// `"database"`). Backends call it whenever they read their figures.
pub fn publish(stats: &QueueStats, backend: &'static str) {
    let labels = [
        ("queue", stats.queue.clone()),
        ("backend", backend.to_owned()),
    ];
    #[allow(clippy::cast_precision_loss)] // queue depths are far below 2^52
    let set = |name: &'static str, value: u64| metrics::gauge!(name, &labels).set(value as f64);
    set("groundwork_queue_depth", stats.depth);
    set("groundwork_queue_in_flight", stats.in_flight);
    set("groundwork_queue_delayed", stats.delayed);
    set("groundwork_queue_dead_lettered", stats.dead_lettered);
}
