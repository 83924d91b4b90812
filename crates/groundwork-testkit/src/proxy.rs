//! The fault-injection TCP proxy.
//!
//! One accept task owns the listening socket (while there is one) and, in a [`JoinSet`],
//! one task per proxied connection. The proxy talks to them through a [`watch`] channel
//! holding the [`Mode`] and a cut epoch: a connection closes as soon as the epoch differs
//! from the one it was accepted under. A registry of live connection ids lets
//! [`TcpProxy::set_mode`] and [`TcpProxy::cut_existing`] wait until every connection they
//! cut is really closed.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long [`TcpProxy::set_mode`] keeps trying to listen on the proxy's port again after
/// [`Mode::Refuse`].
const REBIND_FOR: Duration = Duration::from_secs(5);
/// The pause between two attempts to listen again.
const REBIND_PAUSE: Duration = Duration::from_millis(20);
/// The pause after a failed `accept` (out of file descriptors, for instance).
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);
/// The most bytes read from a socket at once.
const CHUNK: usize = 16 * 1024;
/// The most chunks read ahead of the writer, per direction.
const IN_FLIGHT: usize = 16;

/// What a [`TcpProxy`] does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Forward bytes both ways, as soon as they arrive. The default.
    #[default]
    Pass,
    /// Nothing listens on the proxy's port: connecting fails with
    /// [`io::ErrorKind::ConnectionRefused`], as when the service's host is up but the service
    /// is down. Live connections are closed.
    ///
    /// Any other mode listens on the same port again.
    Refuse,
    /// Connections are accepted and never answered, as behind a firewall dropping packets or
    /// a crashed host: nothing is forwarded, nothing is closed. Live connections freeze the
    /// same way: bytes in either direction are held back and the sockets stay open.
    ///
    /// Leaving this mode closes every connection it froze or accepted (the sessions broke
    /// while the network was gone; clients must reconnect).
    BlackHole,
    /// Forward bytes both ways, each chunk delivered this long after it was read (in each
    /// direction, so a round trip takes at least twice as long). The delay applies to the
    /// bytes read after the mode is set; live connections stay open.
    Delay(Duration),
    /// Connections are accepted and closed at once, as by a proxy or load balancer in front
    /// of a dead service. Live connections are closed.
    Close,
}

/// What the connection tasks watch.
#[derive(Debug, Clone, Copy)]
struct Control {
    /// The current mode.
    mode: Mode,
    /// Bumped whenever live connections must close.
    epoch: u64,
}

/// The ids of the live connections.
#[derive(Debug, Default)]
struct Registry {
    /// The id of the next accepted connection, which is also how many were accepted.
    next_id: u64,
    /// The ids of the connections whose task still runs.
    live: BTreeSet<u64>,
}

/// What the proxy and its tasks share.
#[derive(Debug, Default)]
struct Shared {
    registry: Mutex<Registry>,
    /// Notified whenever a connection closes.
    closed: Notify,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once no connection with an id below `end` is live.
    async fn wait_closed_before(&self, end: u64) {
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.registry().live.first().is_none_or(|&id| id >= end) {
                return;
            }
            closed.await;
        }
    }
}

/// Keeps a connection in the registry while its task runs (also when it is aborted).
struct Live {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.shared.registry().live.remove(&self.id);
        self.shared.closed.notify_waiters();
    }
}

/// What the proxy asks of its accept task.
enum Command {
    /// Accept on this listener from now on.
    Listen(TcpListener),
    /// Close the listener, then answer.
    Unlisten(oneshot::Sender<()>),
}

/// A TCP proxy on `127.0.0.1` in front of one upstream address, which can refuse, swallow,
/// slow down or close connections on demand (see [`Mode`]).
///
/// Dropping the proxy stops it: the port is closed and every proxied connection is closed
/// (the tasks are aborted). Create it inside a Tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use groundwork_testkit::{Mode, TcpProxy, upstream_of, with_port};
///
/// let url = "postgres://app@127.0.0.1:5432/test";
/// let proxy = TcpProxy::start(upstream_of(url).await?).await?;
/// let through_proxy = with_port(url, proxy.port());
/// assert_eq!(through_proxy, format!("postgres://app@127.0.0.1:{}/test", proxy.port()));
/// // ... start the service under test with `through_proxy`, then:
/// proxy.set_mode(Mode::Close).await?;
/// assert_eq!(proxy.mode(), Mode::Close);
/// # Ok(())
/// # }
/// ```
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    control: watch::Sender<Control>,
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    /// Serializes mode changes (a change from [`Mode::Refuse`] rebinds, and a change to it
    /// waits for the accept task).
    changing: tokio::sync::Mutex<()>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1` on an ephemeral port, in [`Mode::Pass`], forwarding to
    /// `upstream`. The upstream is only connected to when a client connects.
    ///
    /// # Errors
    /// When the proxy cannot listen.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (control, _) = watch::channel(Control {
            mode: Mode::Pass,
            epoch: 0,
        });
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(
            listener,
            receiver,
            upstream,
            control.subscribe(),
            Arc::clone(&shared),
        ));
        Ok(Self {
            addr,
            upstream,
            control,
            commands,
            shared,
            changing: tokio::sync::Mutex::new(()),
            task,
        })
    }

    /// The address clients connect to (`127.0.0.1` and [`port`](Self::port)). It stays the
    /// same for the proxy's whole life, across [`Mode::Refuse`].
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address connections are forwarded to.
    #[must_use]
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The current mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.control.borrow().mode
    }

    /// Switches to `mode`, and returns once it is in effect: connecting is refused after a
    /// change to [`Mode::Refuse`] and possible again after a change from it (on the same
    /// port), and every connection the change closes (see [`Mode`]) is closed. Bytes read
    /// after the change are treated by the new mode.
    ///
    /// # Errors
    /// When leaving [`Mode::Refuse`], if the port cannot be listened on again within 5
    /// seconds (another process took it); the proxy then stays in [`Mode::Refuse`].
    pub async fn set_mode(&self, mode: Mode) -> io::Result<()> {
        let _changing = self.changing.lock().await;
        let old = self.mode();
        if old == Mode::Refuse && mode != Mode::Refuse {
            let listener = self.rebind().await?;
            self.apply(old, mode);
            return self.commands.send(Command::Listen(listener)).map_err(gone);
        }
        let end = self.apply(old, mode);
        if mode == Mode::Refuse && old != Mode::Refuse {
            let (done, answer) = oneshot::channel();
            self.commands.send(Command::Unlisten(done)).map_err(gone)?;
            answer.await.map_err(gone)?;
        }
        if let Some(end) = end {
            self.shared.wait_closed_before(end).await;
        }
        Ok(())
    }

    /// Closes every live proxied connection, without changing the mode, and returns once
    /// they are closed. A connection counts as live once the proxy accepted it (see
    /// [`live_connections`](Self::live_connections)), not as soon as the client's `connect`
    /// returned.
    pub async fn cut_existing(&self) {
        let end = {
            let registry = self.shared.registry();
            self.control.send_modify(|control| control.epoch += 1);
            registry.next_id
        };
        self.shared.wait_closed_before(end).await;
    }

    /// How many proxied connections are open now (including those held by
    /// [`Mode::BlackHole`]). A connection is counted from when the proxy accepts it, which
    /// can be a moment after the client's `connect` returned.
    #[must_use]
    pub fn live_connections(&self) -> usize {
        self.shared.registry().live.len()
    }

    /// How many connections were accepted since the proxy started.
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.shared.registry().next_id
    }

    /// Publishes `mode`; when the change from `old` closes the live connections, returns the
    /// id below which they must be waited for.
    fn apply(&self, old: Mode, mode: Mode) -> Option<u64> {
        let closes = matches!(mode, Mode::Refuse | Mode::Close)
            || (old == Mode::BlackHole && mode != Mode::BlackHole);
        // Under the registry lock, so that every connection is either accepted under the
        // new epoch or counted below the returned id.
        let registry = self.shared.registry();
        self.control.send_modify(|control| {
            control.mode = mode;
            if closes {
                control.epoch += 1;
            }
        });
        closes.then_some(registry.next_id)
    }

    /// Listens on the proxy's port again, retrying for a while.
    async fn rebind(&self) -> io::Result<TcpListener> {
        let deadline = Instant::now() + REBIND_FOR;
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => return Ok(listener),
                Err(err) if Instant::now() >= deadline => {
                    return Err(io::Error::new(
                        err.kind(),
                        format!("cannot listen on {} again: {err}", self.addr),
                    ));
                }
                Err(_) => tokio::time::sleep(REBIND_PAUSE).await,
            }
        }
    }
}

impl fmt::Debug for TcpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("mode", &self.mode())
            .field("live_connections", &self.live_connections())
            .field("accepted", &self.accepted())
            .finish_non_exhaustive()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        // Dropping the accept task drops its listener and its set of connection tasks,
        // which aborts them.
        self.task.abort();
    }
}

/// The error of a proxy whose accept task is gone (it never ends while the proxy lives).
fn gone<E>(_: E) -> io::Error {
    io::Error::other("the proxy's accept task is gone")
}

/// Accepts connections while there is a listener, and runs one task per connection.
async fn accept_loop(
    listener: TcpListener,
    mut commands: mpsc::UnboundedReceiver<Command>,
    upstream: SocketAddr,
    control: watch::Receiver<Control>,
    shared: Arc<Shared>,
) {
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Listen(new)) => listener = Some(new),
                Some(Command::Unlisten(done)) => {
                    listener = None;
                    let _ = done.send(());
                }
                None => return,
            },
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(client) => {
                    let (live, epoch) = {
                        let mut registry = shared.registry();
                        let id = registry.next_id;
                        registry.next_id += 1;
                        registry.live.insert(id);
                        let live = Live { shared: Arc::clone(&shared), id };
                        (live, control.borrow().epoch)
                    };
                    connections.spawn(serve(client, upstream, control.clone(), epoch, live));
                }
                Err(_) => tokio::time::sleep(ACCEPT_PAUSE).await,
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// The next connection on `listener`; never, without a listener.
async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => Ok(listener.accept().await?.0),
        None => std::future::pending().await,
    }
}

/// Serves one accepted connection until it ends or is cut.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut control: watch::Receiver<Control>,
    epoch: u64,
    _live: Live,
) {
    let now = *control.borrow_and_update();
    if now.epoch != epoch {
        return;
    }
    match now.mode {
        Mode::Refuse | Mode::Close => return,
        // Held open until the mode changes away (which bumps the epoch).
        Mode::BlackHole => {
            cut(&mut control, epoch).await;
            return;
        }
        Mode::Pass | Mode::Delay(_) => {}
    }
    let mut server = tokio::select! {
        connected = TcpStream::connect(upstream) => match connected {
            Ok(server) => server,
            Err(_) => return,
        },
        () = cut(&mut control, epoch) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let mut cutting = control.clone();
    tokio::select! {
        _ = async {
            tokio::try_join!(
                forward(client_read, server_write, control.clone()),
                forward(server_read, client_write, control.clone()),
            )
        } => {}
        () = cut(&mut cutting, epoch) => {}
    }
    // Returning drops (closes) both sockets.
}

/// Resolves once connections accepted under `epoch` must close (or the proxy is gone).
async fn cut(control: &mut watch::Receiver<Control>, epoch: u64) {
    let _ = control.wait_for(|control| control.epoch != epoch).await;
}

/// Copies one direction: reads chunks as they come (stamping them with their delivery time)
/// and writes them when due, unless the mode is [`Mode::BlackHole`]; then the direction
/// freezes (the connection is closed when the mode changes away). Ends after passing on the
/// end of the stream, or on the first error.
async fn forward(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    control: watch::Receiver<Control>,
) -> io::Result<()> {
    let control = &control;
    let (chunks, mut due_chunks) = mpsc::channel::<(Option<Instant>, Vec<u8>)>(IN_FLIGHT);
    // `move`: the reader owns `chunks`, so that its end ends the writer.
    let reading = async move {
        loop {
            let mut chunk = vec![0; CHUNK];
            let read = from.read(&mut chunk).await?;
            if read == 0 {
                return Ok::<_, io::Error>(()); // dropping `chunks` ends the writer
            }
            chunk.truncate(read);
            let due = match control.borrow().mode {
                Mode::Delay(delay) => Some(Instant::now() + delay),
                _ => None,
            };
            if chunks.send((due, chunk)).await.is_err() {
                return Ok(());
            }
        }
    };
    let writing = async {
        while let Some((due, chunk)) = due_chunks.recv().await {
            if let Some(due) = due {
                tokio::time::sleep_until(due).await;
            }
            freeze_in_black_hole(control).await;
            to.write_all(&chunk).await?;
        }
        freeze_in_black_hole(control).await;
        to.shutdown().await
    };
    tokio::try_join!(reading, writing).map(|_| ())
}

/// Never returns while the mode is [`Mode::BlackHole`].
async fn freeze_in_black_hole(control: &watch::Receiver<Control>) {
    if control.borrow().mode == Mode::BlackHole {
        std::future::pending::<()>().await;
    }
}
