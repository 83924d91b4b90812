//! The connection supervisor: one task per [`AmqpQueue`](super::AmqpQueue) that owns the
//! lapin connection, makes it again whenever it is lost, and hands the live one ([`Live`])
//! to publishers and consumers through a [`watch`] channel.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::AmqpOptions;
use super::stats::Stats;
use super::topology::{self, TopologyError};
use crate::queue::{QueueError, Result};

/// How often the supervisor looks at the connection's state, besides lapin's error events
/// and the reports of failing operations.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long closing the connection at shutdown may take.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the handles, the supervisor and the consumer tasks share.
pub(super) struct Shared {
    /// The broker, with the heartbeat filled in.
    uri: AMQPUri,
    /// The URL without its password, for logs and errors.
    pub(super) display_url: String,
    pub(super) options: AmqpOptions,
    /// Cancelled at shutdown, or when the last handle is dropped.
    pub(super) stop: CancellationToken,
    /// The live connection; `None` while (re)connecting and after shutdown.
    live: watch::Sender<Option<Arc<Live>>>,
    /// Wakes the supervisor to look at the connection now (an operation failed).
    suspect: Notify,
    started: AtomicBool,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    /// The logical queues used so far, declared again on every new connection.
    known: Mutex<BTreeSet<String>>,
    /// Counters per queue.
    pub(super) stats: Stats,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("url", &self.display_url)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(uri: AMQPUri, display_url: String, options: AmqpOptions) -> Self {
        Self {
            uri,
            display_url,
            options,
            stop: CancellationToken::new(),
            live: watch::Sender::new(None),
            suspect: Notify::new(),
            started: AtomicBool::new(false),
            supervisor: Mutex::new(None),
            known: Mutex::new(BTreeSet::new()),
            stats: Stats::default(),
        }
    }

    /// Starts the supervisor if it is not running yet.
    ///
    /// # Errors
    /// [`QueueError::Closed`] after shutdown; [`QueueError::Unavailable`] outside a Tokio
    /// runtime.
    pub(super) fn start(self: &Arc<Self>) -> Result<()> {
        if self.stop.is_cancelled() {
            return Err(QueueError::Closed);
        }
        if self.started.load(Ordering::Acquire) {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            QueueError::Unavailable("the RabbitMQ queue needs a Tokio runtime".into())
        })?;
        if self
            .started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let task = runtime.spawn(supervise(Arc::clone(self)));
            *lock(&self.supervisor) = Some(task);
        }
        Ok(())
    }

    pub(super) fn is_connected(&self) -> bool {
        self.live
            .borrow()
            .as_ref()
            .is_some_and(|live| live.connection.status().connected())
    }

    /// Asks the supervisor to check the connection now.
    pub(super) fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// Stops everything and closes the connection.
    pub(super) async fn shutdown(&self) {
        self.stop.cancel();
        let task = lock(&self.supervisor).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(CLOSE_WITHIN * 2, task).await;
        }
        self.live.send_replace(None);
    }

    /// The live connection, waiting for one until `deadline`.
    ///
    /// # Errors
    /// [`QueueError::Timeout`] (with `budget`) at the deadline, [`QueueError::Closed`] after
    /// shutdown.
    pub(super) async fn live_until(
        &self,
        deadline: Instant,
        budget: Duration,
    ) -> Result<Arc<Live>> {
        tokio::select! {
            live = self.wait_live() => live.ok_or(QueueError::Closed),
            () = tokio::time::sleep_until(deadline) => Err(QueueError::Timeout(budget)),
        }
    }

    /// The live connection, waiting for one as long as it takes; `None` after shutdown.
    pub(super) async fn wait_live(&self) -> Option<Arc<Live>> {
        let mut live = self.live.subscribe();
        let usable = async {
            live.wait_for(|live| {
                live.as_ref()
                    .is_some_and(|live| live.connection.status().connected())
            })
            .await
            .ok()
            .and_then(|live| live.clone())
        };
        tokio::select! {
            biased;
            () = self.stop.cancelled() => None,
            live = usable => live,
        }
    }

    /// Remembers `queue`, so that new connections declare it.
    fn remember(&self, queue: &str) {
        let mut known = lock(&self.known);
        if !known.contains(queue) {
            known.insert(queue.to_owned());
        }
    }

    fn known(&self) -> Vec<String> {
        lock(&self.known).iter().cloned().collect()
    }

    /// Declares the topology of `queue` on `live` unless it is declared there already.
    pub(super) async fn ensure_declared(
        &self,
        live: &Live,
        queue: &str,
    ) -> std::result::Result<(), TopologyError> {
        if live.is_declared(queue) {
            return Ok(());
        }
        let _one_at_a_time = live.declaring.lock().await;
        if live.is_declared(queue) {
            return Ok(());
        }
        topology::declare(&live.connection, queue, &self.options.retry).await?;
        live.mark_declared(queue);
        self.remember(queue);
        Ok(())
    }

    /// Declares the topology of `queue`, waiting up to `budget` for a connection.
    pub(super) async fn declare_within(&self, queue: &str, budget: Duration) -> Result<()> {
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::new(self.options.reconnect_min, self.options.reconnect_max);
        loop {
            let live = self.live_until(deadline, budget).await?;
            match tokio::time::timeout_at(deadline, self.ensure_declared(&live, queue)).await {
                Err(_) => return Err(QueueError::Timeout(budget)),
                Ok(Ok(())) => return Ok(()),
                Ok(Err(TopologyError::Refused(why))) => return Err(QueueError::Refused(why)),
                Ok(Err(TopologyError::Transient(err))) => {
                    debug!(queue, error = %err, "declaring the queue failed; trying again");
                    self.suspect();
                    pause(&mut backoff, deadline, budget).await?;
                }
            }
        }
    }
}

/// Sleeps for the next backoff step, but not past `deadline`.
///
/// # Errors
/// [`QueueError::Timeout`] (with `budget`) when the deadline has passed.
pub(super) async fn pause(
    backoff: &mut Backoff,
    deadline: Instant,
    budget: Duration,
) -> Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(QueueError::Timeout(budget));
    }
    tokio::time::sleep_until((now + backoff.next_pause()).min(deadline)).await;
    Ok(())
}

/// One live connection and what hangs off it.
pub(super) struct Live {
    /// Counts connections: 1 for the first.
    pub(super) generation: u64,
    pub(super) connection: Connection,
    /// The publishing channel, in confirm mode; replaced when it closes.
    publisher: Mutex<Channel>,
    /// Serializes replacing the publishing channel.
    reopening: tokio::sync::Mutex<()>,
    /// Held while a publish registers its confirm and queues its frames, so that the order
    /// of the confirms lapin expects is the order of the frames on the wire.
    sending: Mutex<()>,
    /// The logical queues whose topology is declared on this connection.
    declared: Mutex<HashSet<String>>,
    /// Serializes declarations.
    declaring: tokio::sync::Mutex<()>,
}

impl Live {
    fn new(generation: u64, connection: Connection, publisher: Channel) -> Self {
        Self {
            generation,
            connection,
            publisher: Mutex::new(publisher),
            reopening: tokio::sync::Mutex::new(()),
            sending: Mutex::new(()),
            declared: Mutex::new(HashSet::new()),
            declaring: tokio::sync::Mutex::new(()),
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    fn is_declared(&self, queue: &str) -> bool {
        lock(&self.declared).contains(queue)
    }

    fn mark_declared(&self, queue: &str) {
        lock(&self.declared).insert(queue.to_owned());
    }

    /// Forgets that `queue` is declared here (it was deleted under us), so that the next
    /// use declares it again.
    pub(super) fn forget(&self, queue: &str) {
        lock(&self.declared).remove(queue);
    }

    /// The publishing channel; a new one when the current one is closed (a channel error)
    /// while the connection lives.
    pub(super) async fn publisher(&self) -> lapin::Result<Channel> {
        let current = lock(&self.publisher).clone();
        if current.status().connected() {
            return Ok(current);
        }
        let _one_at_a_time = self.reopening.lock().await;
        let current = lock(&self.publisher).clone();
        if current.status().connected() {
            return Ok(current);
        }
        let channel = open_publisher(&self.connection).await?;
        debug!(
            generation = self.generation,
            "opened a new publishing channel"
        );
        *lock(&self.publisher) = channel.clone();
        Ok(channel)
    }

    /// Polls `send` (a `basic_publish`) once while holding the send lock: its first poll
    /// registers the confirm and queues the frames, both at once for every publisher.
    pub(super) async fn start_send<F: Future + Unpin>(&self, send: &mut F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| {
            let _in_order = lock(&self.sending);
            Poll::Ready(Pin::new(&mut *send).poll(cx))
        })
        .await
    }
}

async fn open_publisher(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Exponential backoff with jitter: each pause is drawn between half and all of a step that
/// doubles from `min` up to `max`.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            step: min,
        }
    }

    pub(super) fn reset(&mut self) {
        self.step = self.min;
    }

    pub(super) fn next_pause(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let micros = u64::try_from(step.as_micros()).unwrap_or(u64::MAX);
        let half = micros / 2;
        Duration::from_micros(half + fastrand::u64(0..=micros - half))
    }
}

/// How the watch over one connection ended.
enum End {
    /// Shutdown.
    Stop,
    /// The connection died, for this reason.
    Lost(String),
}

/// The supervisor: connect, publish the connection, watch it, start over.
async fn supervise(shared: Arc<Shared>) {
    let url = shared.display_url.clone();
    let mut backoff = Backoff::new(shared.options.reconnect_min, shared.options.reconnect_max);
    let mut generation = 0;
    let mut failures = 0_u32;
    let mut lost_at: Option<Instant> = None;
    loop {
        let attempt = tokio::select! {
            biased;
            () = shared.stop.cancelled() => break,
            attempt = connect(&shared, generation + 1) => attempt,
        };
        let live = match attempt {
            Ok(live) => live,
            Err(error) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(10) {
                    warn!(%url, attempt = failures, %error, "cannot connect to RabbitMQ; retrying");
                } else {
                    debug!(%url, attempt = failures, %error, "cannot connect to RabbitMQ; retrying");
                }
                tokio::select! {
                    biased;
                    () = shared.stop.cancelled() => break,
                    () = tokio::time::sleep(backoff.next_pause()) => continue,
                }
            }
        };
        generation += 1;
        match lost_at.take() {
            Some(lost) => info!(
                %url,
                generation,
                attempts = failures + 1,
                outage_ms = u64::try_from(lost.elapsed().as_millis()).unwrap_or(u64::MAX),
                "RabbitMQ connection re-established"
            ),
            None => info!(%url, "connected to RabbitMQ"),
        }
        failures = 0;
        backoff.reset();
        shared.live.send_replace(Some(Arc::clone(&live)));
        let end = watch_connection(&shared, &live).await;
        shared.live.send_replace(None);
        match end {
            End::Stop => {
                let _ = tokio::time::timeout(
                    CLOSE_WITHIN,
                    live.connection.close(200, "shutdown".into()),
                )
                .await;
                info!(%url, "RabbitMQ connection closed");
                break;
            }
            End::Lost(reason) => {
                warn!(%url, generation, %reason, "RabbitMQ connection lost; reconnecting");
                lost_at = Some(Instant::now());
            }
        }
    }
    shared.live.send_replace(None);
}

/// Connects, opens the publishing channel and declares the known topology.
async fn connect(shared: &Shared, generation: u64) -> std::result::Result<Arc<Live>, String> {
    let budget = shared.options.connect_timeout;
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("groundwork pid {}", std::process::id()).into());
    let opened = tokio::time::timeout(budget, async {
        let connection = Connection::connect_uri(shared.uri.clone(), properties).await?;
        let publisher = open_publisher(&connection).await?;
        Ok::<_, lapin::Error>((connection, publisher))
    })
    .await;
    let (connection, publisher) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(err)) => return Err(err.to_string()),
        Err(_) => return Err(format!("no connection within {budget:?}")),
    };
    let live = Arc::new(Live::new(generation, connection, publisher));
    for queue in shared.known() {
        match tokio::time::timeout(budget, shared.ensure_declared(&live, &queue)).await {
            Ok(Ok(())) => {}
            Ok(Err(TopologyError::Refused(why))) => {
                // Operations on this queue will report it; the others can go on.
                warn!(queue, %why, "the broker refused the topology of a queue");
            }
            Ok(Err(TopologyError::Transient(err))) => {
                return Err(format!("declaring queue {queue}: {err}"));
            }
            Err(_) => {
                return Err(format!(
                    "declaring queue {queue}: no answer within {budget:?}"
                ));
            }
        }
    }
    Ok(live)
}

/// Watches `live` until it dies or the supervisor stops.
async fn watch_connection(shared: &Shared, live: &Live) -> End {
    let mut events = Box::pin(live.connection.events_listener());
    let mut events_open = true;
    let mut last_error = None;
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return End::Stop,
            event = events.next(), if events_open => match event {
                Some(Event::Error(err)) => {
                    if live.is_connected() {
                        // A channel closed by the broker; its owner opens another one.
                        debug!(error = %err, "AMQP channel error");
                    } else {
                        last_error = Some(err.to_string());
                    }
                }
                Some(_) => {}
                None => events_open = false,
            },
            () = shared.suspect.notified() => {}
            _ = check.tick() => {}
        }
        if !live.is_connected() {
            return End::Lost(last_error.unwrap_or_else(|| describe(live.connection.status())));
        }
    }
}

fn describe(status: &lapin::ConnectionStatus) -> String {
    let state = if status.errored() {
        "failed"
    } else if status.closed() {
        "closed"
    } else if status.closing() {
        "closing"
    } else {
        "not connected"
    };
    format!("the connection is {state}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_max() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut step = Duration::from_millis(100);
        for _ in 0..10 {
            let pause = backoff.next_pause();
            assert!(
                pause >= step / 2 && pause <= step,
                "{pause:?} for step {step:?}"
            );
            step = (step * 2).min(Duration::from_secs(5));
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }
}
