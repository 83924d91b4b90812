//! [`RedisSubscription`]: a channel subscription that survives Redis restarts and network
//! failures.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use ::redis::aio::{PubSubSink, PubSubStream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::connection::Backoff;
use super::{RedisError, State};

/// Messages a subscription holds for its reader; past that, new messages are dropped (and
/// counted in [`RedisStats::messages_dropped`](super::RedisStats::messages_dropped)) rather
/// than stalling the connection.
pub const SUBSCRIPTION_BUFFER: usize = 1024;

/// The state a subscription's task reports.
#[derive(Debug, Clone, Copy, Default)]
struct Status {
    /// Subscribed on a connection that is up now.
    active: bool,
    /// How many times the subscription was made (the first time and every reconnection).
    generation: u64,
}

/// A subscription to one Redis channel, made by [`RedisClient::subscribe`](super::RedisClient::subscribe).
///
/// A background task owns a dedicated pub/sub connection: it connects and subscribes, with
/// exponential backoff and jitter after any failure, and forever, until this handle is
/// dropped. A `PING` every [`ping_interval`](super::RedisOptions::ping_interval), answered
/// within the connect timeout, tells a live connection from one the network black-holed,
/// which is then replaced.
///
/// Messages arrive in order through [`RedisSubscription::next`] (or as a
/// [`Stream`](futures_util::Stream)). Messages published while the subscription is not
/// active are lost — Redis pub/sub stores nothing — and so are messages arriving while
/// [`SUBSCRIPTION_BUFFER`] messages wait for the reader. A reader that must not miss an
/// invalidation can watch [`RedisSubscription::generation`] and resynchronise (drop its
/// local cache) when it changes.
#[derive(Debug)]
pub struct RedisSubscription {
    channel: String,
    messages: mpsc::Receiver<Vec<u8>>,
    status: watch::Receiver<Status>,
    task: AbortHandle,
}

impl Drop for RedisSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisSubscription {
    /// The channel subscribed to.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next message's payload. Waits as long as it takes, across reconnections;
    /// `None` only once the background task has ended (its runtime shut down).
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        self.messages.recv().await
    }

    /// Whether the subscription is in place on a connection that is up now.
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.status.borrow().active
    }

    /// How many times the subscription was made: 0 before the first `SUBSCRIBE` was
    /// confirmed, 1 after, and one more after each reconnection (messages may have been
    /// missed in between).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.status.borrow().generation
    }

    /// Waits until the subscription is active (at once if it is): a message published
    /// after this returns is delivered, unless the connection fails again.
    ///
    /// # Errors
    ///
    /// [`RedisError::Unavailable`] if the background task has ended (its runtime shut down).
    pub async fn subscribed(&mut self) -> Result<(), RedisError> {
        self.status
            .wait_for(|status| status.active)
            .await
            .map(drop)
            .map_err(|_| RedisError::Unavailable { source: None })
    }
}

impl futures_util::Stream for RedisSubscription {
    type Item = Vec<u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<u8>>> {
        self.messages.poll_recv(cx)
    }
}

/// Starts the task of a new subscription.
pub(super) fn start(
    runtime: &tokio::runtime::Handle,
    state: Arc<State>,
    client: ::redis::Client,
    channel: String,
) -> RedisSubscription {
    let (sender, messages) = mpsc::channel(SUBSCRIPTION_BUFFER);
    let (status_sender, status) = watch::channel(Status::default());
    let task = runtime
        .spawn(run(state, client, channel.clone(), sender, status_sender))
        .abort_handle();
    RedisSubscription {
        channel,
        messages,
        status,
        task,
    }
}

/// Counts a live subscription while its task runs (also when it is aborted).
struct Live(Arc<State>);

impl Live {
    fn new(state: Arc<State>) -> Self {
        state.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0
            .counters
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The subscription's task: connects, subscribes and forwards messages, again and again,
/// until the handle is dropped.
async fn run(
    state: Arc<State>,
    client: ::redis::Client,
    channel: String,
    sender: mpsc::Sender<Vec<u8>>,
    status: watch::Sender<Status>,
) {
    let live = Live::new(state);
    let state = &*live.0;
    let mut backoff = Backoff::new();
    loop {
        let connected = tokio::select! {
            connected = connect(state, &client, &channel) => connected,
            () = sender.closed() => return,
        };
        match connected {
            Ok((sink, stream)) => {
                backoff.reset();
                status.send_modify(|status| {
                    status.active = true;
                    status.generation += 1;
                });
                if status.borrow().generation > 1 {
                    state.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(channel, "Redis subscription restored");
                }
                let ended = forward(state, sink, stream, &sender).await;
                status.send_modify(|status| status.active = false);
                match ended {
                    Ended::Closed => return,
                    Ended::Lost(why) => {
                        tracing::warn!(channel, why, "Redis subscription lost; reconnecting");
                    }
                }
            }
            Err(err) => {
                tracing::debug!(channel, error = %err, "cannot subscribe to Redis");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.pause()) => {}
            () = sender.closed() => return,
        }
    }
}

/// Makes a pub/sub connection and subscribes, within the connect timeout.
async fn connect(
    state: &State,
    client: &::redis::Client,
    channel: &str,
) -> Result<(PubSubSink, PubSubStream), ConnectError> {
    let subscribe = async {
        let (mut sink, stream) = client.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok::<_, ::redis::RedisError>((sink, stream))
    };
    tokio::time::timeout(state.settings.connect_timeout, subscribe)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Redis)
}

#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Redis(::redis::RedisError),
}

/// Why [`forward`] returned.
enum Ended {
    /// The handle was dropped.
    Closed,
    /// The connection failed.
    Lost(&'static str),
}

/// Forwards messages to the handle, pinging every ping interval, until the connection
/// fails or the handle is dropped.
async fn forward(
    state: &State,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    sender: &mpsc::Sender<Vec<u8>>,
) -> Ended {
    let settings = state.settings;
    let counters = &state.counters;
    let mut ping_at = tokio::time::Instant::now() + settings.ping_interval;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Ended::Lost("the connection closed");
                };
                counters.messages.fetch_add(1, Ordering::Relaxed);
                match sender.try_send(message.get_payload_bytes().to_vec()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        counters.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ended::Closed,
                }
            }
            () = tokio::time::sleep_until(ping_at) => {
                let pong = tokio::time::timeout(
                    settings.connect_timeout,
                    sink.ping::<::redis::Value>(),
                )
                .await;
                match pong {
                    Ok(Ok(_)) => ping_at = tokio::time::Instant::now() + settings.ping_interval,
                    Ok(Err(_)) => return Ended::Lost("a PING failed"),
                    Err(_) => return Ended::Lost("a PING got no answer in time"),
                }
            }
            () = sender.closed() => return Ended::Closed,
        }
    }
}
