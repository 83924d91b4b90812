//! The connection task: makes the command connection, checks it, and makes it again when
//! it stops answering.
//!
//! redis-rs's `ConnectionManager` reconnects by itself when its connection is closed or
//! reset, but not when the connection is silently black-holed (a peer or middlebox gone,
//! packets dropped): every command then waits forever, and only the caller's timeout ends
//! it. And it has to be created with a first successful connection. This task does both:
//! it creates the manager in the background with backoff, and drops it when a `PING`
//! cannot get an answer within the connect timeout, then creates a new one.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::State;

/// The first pause between two failed connection attempts.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest pause between two failed connection attempts.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The shortest time between two checks of a connection that answered (so that a burst of
/// timeouts against a slow but live Redis makes one `PING`, not one per timeout).
const CHECK_GAP: Duration = Duration::from_millis(100);

/// Exponential backoff with jitter: each pause is drawn from `[d/2, d]`, `d` doubling from
/// [`BACKOFF_MIN`] up to [`BACKOFF_MAX`].
#[derive(Debug)]
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    /// The pause before the next attempt.
    pub(super) fn pause(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Back to the shortest pause, after a success.
    pub(super) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// The settings of every `ConnectionManager` the task creates.
fn manager_config(state: &State) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(state.settings.connect_timeout))
        // Operations have their own, shorter, deadline.
        .set_response_timeout(None)
        // Its own reconnections after a dropped connection: a few quick tries; past them
        // this task takes over.
        .set_number_of_retries(2)
        .set_min_delay(BACKOFF_MIN)
        .set_max_delay(BACKOFF_MAX)
}

/// Runs until aborted (when the last `RedisClient` clone is dropped).
pub(super) async fn maintain(state: Arc<State>, client: ::redis::Client) {
    let settings = state.settings;
    let config = manager_config(&state);
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        let attempt = tokio::time::timeout(
            settings.connect_timeout,
            ConnectionManager::new_with_config(client.clone(), config.clone()),
        )
        .await;
        let manager = match attempt {
            Ok(Ok(manager)) => manager,
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "cannot connect to Redis");
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
            Err(_elapsed) => {
                tracing::debug!(timeout = ?settings.connect_timeout, "connecting to Redis timed out");
                tokio::time::sleep(backoff.pause()).await;
                continue;
            }
        };
        backoff.reset();
        if connected_before {
            state.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("reconnected to Redis");
        } else {
            tracing::info!("connected to Redis");
        }
        connected_before = true;
        state.set_manager(Some(manager.clone()));
        // A new connection that answered the handshake is as good a health check as any:
        // stop rejecting operations.
        state.breaker.record_success();

        watch(&state, manager).await;

        state.set_manager(None);
        state.breaker.record_failure();
    }
}

/// Checks `manager` whenever an operation suspects it, and at least every ping interval;
/// returns when it does not answer a `PING` within the connect timeout.
async fn watch(state: &State, mut manager: ConnectionManager) {
    let settings = state.settings;
    loop {
        tokio::select! {
            () = state.suspect.notified() => {}
            () = tokio::time::sleep(settings.ping_interval) => {}
        }
        let ping = ::redis::cmd("PING");
        let answer = tokio::time::timeout(
            settings.connect_timeout,
            ping.query_async::<::redis::Value>(&mut manager),
        )
        .await;
        match answer {
            Ok(Ok(_pong)) => tokio::time::sleep(CHECK_GAP).await,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "Redis connection failed; reconnecting");
                return;
            }
            Err(_elapsed) => {
                tracing::warn!(
                    timeout = ?settings.connect_timeout,
                    "Redis did not answer a PING; dropping the connection and reconnecting"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let mut ceiling = BACKOFF_MIN;
        for _ in 0..10 {
            let pause = backoff.pause();
            assert!(
                pause >= ceiling / 2 && pause <= ceiling,
                "{pause:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(BACKOFF_MAX);
        }
        assert_eq!(ceiling, BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.pause() <= BACKOFF_MIN);
    }
}
