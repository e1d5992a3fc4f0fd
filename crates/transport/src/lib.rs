//! The tokio driver for [`chirp_proto::Endpoint`].
//!
//! # Layout
//!
//! - [`bind`]: opens the UDP socket (with generous buffers) so that errors such as "address in
//!   use" surface synchronously, before any task exists.
//! - [`spawn`]: starts the one task that owns the endpoint. It multiplexes with `select!` the
//!   socket, the endpoint's timer, commands from the application, and room in the event
//!   channel; after every input it drains `poll_transmit` and `poll_event` as the core asks.
//!   Socket I/O is batched through `quinn-udp` (`udp` module): a batch of datagrams per
//!   `recvmmsg`, and runs of datagrams to one peer as one GSO send where the kernel can.
//! - [`Handle`]: the application's side: connect, send, close, stats. Cheap to clone; the task
//!   ends when every handle is dropped.
//! - [`Options`]: what the driver does beyond the endpoint: a qlog directory
//!   ([`Options::qlog_dir`]), into which a writer thread of its own writes one trace per
//!   connection. The driver drains `Endpoint::poll_trace` after every input like the events
//!   and hands the records to that thread through a bounded queue that never blocks it: when
//!   the writer is behind, records are dropped, counted (`EndpointStats::trace_dropped`) and
//!   noted in their files (`chirp_qlog::spawn_writer`).
//!
//! There is no lock around protocol state: the task owns the endpoint through `&mut`, and the
//! application talks to it only through channels. Events are delivered through a bounded
//! channel, and the task stops polling events while it is full: an application that stops
//! reading stops granting flow-control credit, so memory stays bounded end to end.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod relay;
mod udp;

pub use relay::{RELAY_BYTES, RELAY_DATAGRAMS, RelayStats};

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_proto::{
    ConnectError, ConnectionHandle, ConnectionStats, Endpoint, EndpointConfig, EndpointStats,
    EndpointTotals, Event, PathSample, SendError,
};
use chirp_qlog::{QlogDir, QlogSender, TraceSink, WriterHandle};
use tokio::net::UdpSocket;

use crate::relay::{Incoming, Relays};
use crate::udp::UdpIo;
use chirp_proto::wire::RelayToken;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, trace, warn};

/// Largest UDP payload we read. Datagrams up to the IPv4 maximum (65,507 bytes) arrive whole,
/// so `--plain` peers are never truncated and oversized junk is seen, counted and dropped.
pub const RECV_BUFFER: usize = 65_536;
/// Socket receive buffer requested from the kernel: a burst of a few thousand datagrams fits
/// while the task is busy, instead of being dropped by the kernel.
const SO_RCVBUF: usize = 4 << 20;
const SO_SNDBUF: usize = 1 << 20;
/// Most datagrams one call of `flush_transmits` sends before the loop's other work.
const MAX_FLUSH: usize = 1024;
/// Datagrams sent between two reads while the driver has many to send (see
/// `flush_transmits`), and most datagrams read at each of those turns.
const SEND_TURN: usize = 128;
/// Events buffered towards the application before the task stops polling the endpoint.
const EVENT_CHANNEL: usize = 1024;
/// Datagrams read in one wake-up before output is drained again (bounds latency under load):
/// reading stops at the first `recvmmsg` batch that reaches it (a batch is at most 32 buffers,
/// more datagrams where GRO coalesced them).
const RECV_BATCH: usize = 64;

/// Opens a UDP socket on `addr` with large kernel buffers.
pub fn bind(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Listen on v4-mapped addresses too when bound to [::]; harmless otherwise.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max, and a smaller buffer only
    // means more drops under bursts, which the protocol recovers from.
    let _ = socket.set_recv_buffer_size(SO_RCVBUF);
    let _ = socket.set_send_buffer_size(SO_SNDBUF);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Fresh entropy for the endpoint's connection-ID generator.
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // The OS generator failing is not something a chat can work around; fall back to the
    // time mixed with the process ID, which is still unique per process.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        return t.map_or(0, |d| d.as_nanos() as u64) ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(b)
}

/// A fresh static key from the OS generator.
fn random_identity() -> io::Result<chirp_proto::handshake::StaticSecret> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
    Ok(chirp_proto::handshake::StaticSecret(k))
}

/// What the driver does beyond what the endpoint's configuration says.
#[derive(Default)]
pub struct Options {
    /// Write a qlog trace of every connection into this directory (created if missing): one
    /// JSON-SEQ file per connection, named by its original destination connection ID and
    /// our role (see `chirp-qlog`). Turns on `EndpointConfig::trace`. `None`: no tracing, and
    /// the protocol core records nothing.
    ///
    /// The files are written by a thread of their own (`chirp-qlog`), never by the driver: a
    /// slow disk cannot slow the endpoint. The driver hands records over through a bounded
    /// queue ([`chirp_qlog::WRITER_QUEUE`]); when the writer is that far behind, records are
    /// dropped, counted in `EndpointStats::trace_dropped` ([`Handle::endpoint_stats`]),
    /// logged (a warning at most every 10 s) and noted in their files as
    /// `chirp:events_dropped`.
    pub qlog_dir: Option<PathBuf>,
    /// Trace records go into this sink, on the writer thread, instead of a qlog directory:
    /// for an application that keeps traces its own way, and for tests. Turns on
    /// `EndpointConfig::trace` too; setting it and [`Self::qlog_dir`] is an error.
    pub trace_sink: Option<Box<dyn TraceSink>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("qlog_dir", &self.qlog_dir)
            .field("trace_sink", &self.trace_sink.as_ref().map(|_| "..."))
            .finish()
    }
}

/// The driver task has stopped (its socket failed or it was shut down).
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("the transport task has stopped")]
pub struct Stopped;

enum Command {
    Connect {
        remote: SocketAddr,
        reuse: bool,
        expected_key: Option<[u8; 32]>,
        reply: oneshot::Sender<Result<ConnectionHandle, ConnectError>>,
    },
    Send(
        ConnectionHandle,
        Bytes,
        oneshot::Sender<Result<(), SendError>>,
    ),
    SendBulk(
        ConnectionHandle,
        Bytes,
        oneshot::Sender<Result<(), SendError>>,
    ),
    SendBatch(
        Vec<(ConnectionHandle, Vec<Bytes>)>,
        oneshot::Sender<Vec<Sent>>,
    ),
    Finish(ConnectionHandle, oneshot::Sender<Result<(), SendError>>),
    Close {
        conn: ConnectionHandle,
        code: u64,
        reason: String,
        graceful: bool,
    },
    Stats(ConnectionHandle, oneshot::Sender<Option<ConnectionStats>>),
    EndpointStats(oneshot::Sender<EndpointStats>),
    Totals(oneshot::Sender<EndpointTotals>),
    SamplePaths(oneshot::Sender<Vec<PathSample>>),
    SendBuffered(ConnectionHandle, oneshot::Sender<Option<u64>>),
    BulkBuffered(ConnectionHandle, oneshot::Sender<Option<u64>>),
    WaitIdle(oneshot::Sender<()>),
    AcceptIncoming(bool),
    KeyVerdict(ConnectionHandle, bool),
    ProbePath(ConnectionHandle, Option<SocketAddr>),
    Relay(RelayToken, Option<(SocketAddr, SocketAddr)>, Option<u64>),
    UseRelay(Option<relay::Client>),
    RelayStats(oneshot::Sender<RelayStats>),
}

/// What [`Handle::send_batch`] did with one connection's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The connection.
    pub conn: ConnectionHandle,
    /// How many of its messages were queued, from the first: the rest were not tried.
    pub taken: usize,
    /// Why the next one was not: `Blocked` (wait for [`Event::Writable`]) or the connection
    /// is gone or closing. `None` if all were taken.
    pub stopped: Option<SendError>,
}

/// The application's handle on the driver task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Message bytes are never formatted: they are user plaintext.
        match self {
            Command::Connect { remote, reuse, .. } => write!(f, "Connect({remote}, reuse {reuse})"),
            Command::Send(c, b, _) => write!(f, "Send({c:?}, {} bytes)", b.len()),
            Command::SendBulk(c, b, _) => write!(f, "SendBulk({c:?}, {} bytes)", b.len()),
            Command::SendBatch(b, _) => write!(f, "SendBatch({} connections)", b.len()),
            Command::Finish(c, _) => write!(f, "Finish({c:?})"),
            Command::Close { conn, code, .. } => write!(f, "Close({conn:?}, {code})"),
            Command::Stats(c, _) => write!(f, "Stats({c:?})"),
            Command::EndpointStats(_) => write!(f, "EndpointStats"),
            Command::Totals(_) => write!(f, "Totals"),
            Command::SamplePaths(_) => write!(f, "SamplePaths"),
            Command::SendBuffered(c, _) => write!(f, "SendBuffered({c:?})"),
            Command::BulkBuffered(c, _) => write!(f, "BulkBuffered({c:?})"),
            Command::WaitIdle(_) => write!(f, "WaitIdle"),
            Command::AcceptIncoming(a) => write!(f, "AcceptIncoming({a})"),
            Command::KeyVerdict(c, a) => write!(f, "KeyVerdict({c:?}, {a})"),
            Command::ProbePath(c, a) => write!(f, "ProbePath({c:?}, {a:?})"),
            // Tokens are capabilities: never logged.
            Command::Relay(_, pair, cap) => write!(f, "Relay({pair:?}, cap {cap:?})"),
            Command::UseRelay(c) => write!(f, "UseRelay({:?})", c.map(|c| c.relay)),
            Command::RelayStats(_) => write!(f, "RelayStats"),
        }
    }
}

impl Handle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Stopped> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Opens a connection; [`Event::Connected`] follows when the peer answers.
    pub async fn connect(
        &self,
        remote: SocketAddr,
    ) -> Result<Result<ConnectionHandle, ConnectError>, Stopped> {
        self.call(|reply| Command::Connect {
            remote,
            reuse: false,
            expected_key: None,
            reply,
        })
        .await
    }

    /// Like [`Self::connect`], but the peer must prove it holds `expected_key` (pinned or
    /// remembered); any other key ends the connection with `CloseReason::KeyMismatch` before
    /// our identity is revealed to it.
    pub async fn connect_expecting(
        &self,
        remote: SocketAddr,
        expected_key: [u8; 32],
    ) -> Result<Result<ConnectionHandle, ConnectError>, Stopped> {
        self.call(|reply| Command::Connect {
            remote,
            reuse: false,
            expected_key: Some(expected_key),
            reply,
        })
        .await
    }

    /// Like [`Self::connect`], but returns the connection to `remote` that is already open (for
    /// example one the peer opened to us moments ago), if there is one.
    pub async fn connect_or_reuse(
        &self,
        remote: SocketAddr,
    ) -> Result<Result<ConnectionHandle, ConnectError>, Stopped> {
        self.call(|reply| Command::Connect {
            remote,
            reuse: true,
            expected_key: None,
            reply,
        })
        .await
    }

    /// Queues one message. `Err(Blocked)` means wait for [`Event::Writable`].
    pub async fn send(
        &self,
        conn: ConnectionHandle,
        data: Bytes,
    ) -> Result<Result<(), SendError>, Stopped> {
        self.call(|r| Command::Send(conn, data, r)).await
    }

    /// Queues one message on the bulk channel ([`chirp_proto::Endpoint::send_bulk`]): chat
    /// messages go out before it and a lost bulk packet never holds one back. Only for a
    /// peer known to support it. `Err(Blocked)` means wait for [`Event::BulkWritable`].
    pub async fn send_bulk(
        &self,
        conn: ConnectionHandle,
        data: Bytes,
    ) -> Result<Result<(), SendError>, Stopped> {
        self.call(|r| Command::SendBulk(conn, data, r)).await
    }

    /// Queues messages on many connections in one round trip to the driver: a server fans
    /// one message out to a room this way, the same shared bytes to every member, rather
    /// than awaiting one reply per member. Each connection's messages go in order; the first
    /// one refused stops that connection's list (see [`Sent`]), the others go on.
    pub async fn send_batch(
        &self,
        batch: Vec<(ConnectionHandle, Vec<Bytes>)>,
    ) -> Result<Vec<Sent>, Stopped> {
        self.call(|r| Command::SendBatch(batch, r)).await
    }

    /// Half-closes ([`chirp_proto::Endpoint::finish`]): no more sends; receiving goes on, and
    /// the connection closes by itself once the peer has finished too.
    pub async fn finish(&self, conn: ConnectionHandle) -> Result<Result<(), SendError>, Stopped> {
        self.call(|r| Command::Finish(conn, r)).await
    }

    /// Closes gracefully: everything sent is delivered and acknowledged first.
    pub async fn close(
        &self,
        conn: ConnectionHandle,
        code: u64,
        reason: &str,
    ) -> Result<(), Stopped> {
        self.close_with(conn, code, reason, true).await
    }

    /// Closes at once, abandoning unacknowledged data.
    pub async fn abort(
        &self,
        conn: ConnectionHandle,
        code: u64,
        reason: &str,
    ) -> Result<(), Stopped> {
        self.close_with(conn, code, reason, false).await
    }

    async fn close_with(
        &self,
        conn: ConnectionHandle,
        code: u64,
        reason: &str,
        graceful: bool,
    ) -> Result<(), Stopped> {
        let cmd = Command::Close {
            conn,
            code,
            reason: reason.to_owned(),
            graceful,
        };
        self.tx.send(cmd).await.map_err(|_| Stopped)
    }

    /// Link statistics of `conn`.
    pub async fn stats(&self, conn: ConnectionHandle) -> Result<Option<ConnectionStats>, Stopped> {
        self.call(|r| Command::Stats(conn, r)).await
    }

    /// Endpoint-wide counters. With a qlog writer ([`Options::qlog_dir`]), `trace_dropped`
    /// also counts the trace records it could not keep up with.
    pub async fn endpoint_stats(&self) -> Result<EndpointStats, Stopped> {
        self.call(Command::EndpointStats).await
    }

    /// The endpoint's counters with every connection's summed, and the connections in each
    /// state ([`Endpoint::totals`]): for a metrics scrape (it visits every connection).
    /// `trace_dropped` counts as in [`Self::endpoint_stats`].
    pub async fn totals(&self) -> Result<EndpointTotals, Stopped> {
        self.call(Command::Totals).await
    }

    /// Every established connection's smoothed RTT and its loss since the previous call
    /// ([`Endpoint::sample_paths`]): for metrics, on a fixed period.
    pub async fn sample_paths(&self) -> Result<Vec<PathSample>, Stopped> {
        self.call(Command::SamplePaths).await
    }

    /// Resolves once no connection is left, closing and draining ones included. A process that
    /// closed its connections awaits this (with a timeout of its own) before exiting, so that
    /// its CLOSE can be repeated, with its final acknowledgements, if the first one was lost.
    /// With a qlog writer ([`Options::qlog_dir`]), also once it has written and flushed every
    /// trace record handed to it, so that a process that exits then leaves complete files.
    pub async fn wait_idle(&self) -> Result<(), Stopped> {
        self.call(Command::WaitIdle).await
    }

    /// Starts or stops accepting connections that peers open (see
    /// `Endpoint::set_accept_incoming`): a leaving application stops first.
    pub async fn set_accept_incoming(&self, accept: bool) -> Result<(), Stopped> {
        self.tx
            .send(Command::AcceptIncoming(accept))
            .await
            .map_err(|_| Stopped)
    }

    /// The application's verdict on the key that `Event::VerifyKey` asked about
    /// (`EndpointConfig::verify_keys`): `true` lets the handshake of `conn` go on, `false` ends
    /// it with `CloseReason::KeyRefused` before any application data moves.
    pub async fn verify_key(&self, conn: ConnectionHandle, accept: bool) -> Result<(), Stopped> {
        self.tx
            .send(Command::KeyVerdict(conn, accept))
            .await
            .map_err(|_| Stopped)
    }

    /// As a relay (PROTOCOL.md §11): forward RELAY datagrams carrying `token` between the
    /// two addresses of `pair` (either way, unopened, rate-limited), or stop (`None`). Sent
    /// again with new addresses when one of the two moves. `cap`: the bytes the pair may
    /// pass in all, both ways together (a pair introduced for a file); it applies to a new
    /// pair, and a move keeps the pair's cap and count.
    pub async fn relay(
        &self,
        token: RelayToken,
        pair: Option<(SocketAddr, SocketAddr)>,
        cap: Option<u64>,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Command::Relay(token, pair, cap))
            .await
            .map_err(|_| Stopped)
    }

    /// As a peer: reach `synthetic`, an address of no real host, through the relay at `relay`
    /// with `token`: what the endpoint sends to `synthetic` goes to the relay wrapped in RELAY
    /// datagrams, and what the relay forwards with `token` comes to the endpoint from
    /// `synthetic`. `None` stops.
    pub async fn use_relay(
        &self,
        relay: Option<(RelayToken, SocketAddr, SocketAddr)>,
    ) -> Result<(), Stopped> {
        let client = relay.map(|(token, relay, synthetic)| relay::Client {
            token,
            relay: SocketAddr::new(relay.ip().to_canonical(), relay.port()),
            synthetic,
        });
        self.tx
            .send(Command::UseRelay(client))
            .await
            .map_err(|_| Stopped)
    }

    /// Probes `addr` as another path to the peer of `conn`, or stops (`None`): see
    /// [`chirp_proto::Endpoint::probe_path`] (PROTOCOL.md §5.7.1). A peer on a relayed path
    /// probes the peer's direct address; the connection moves there once it answers.
    pub async fn probe_path(
        &self,
        conn: ConnectionHandle,
        addr: Option<SocketAddr>,
    ) -> Result<(), Stopped> {
        self.tx
            .send(Command::ProbePath(conn, addr))
            .await
            .map_err(|_| Stopped)
    }

    /// Counters of RELAY datagrams (forwarded, dropped, unwrapped).
    pub async fn relay_stats(&self) -> Result<RelayStats, Stopped> {
        self.call(Command::RelayStats).await
    }

    /// Bytes sent on `conn` and not yet acknowledged.
    pub async fn send_buffered(&self, conn: ConnectionHandle) -> Result<Option<u64>, Stopped> {
        self.call(|r| Command::SendBuffered(conn, r)).await
    }

    /// Bulk bytes sent on `conn` ([`Self::send_bulk`]) and not yet acknowledged.
    pub async fn bulk_buffered(&self, conn: ConnectionHandle) -> Result<Option<u64>, Stopped> {
        self.call(|r| Command::BulkBuffered(conn, r)).await
    }
}

/// Starts the driver task for `socket` (from [`bind`]). Returns the handle, the event stream and
/// the task, which ends when every [`Handle`] is dropped, or with the socket's error.
pub fn spawn(
    socket: StdUdpSocket,
    config: EndpointConfig,
) -> io::Result<(Handle, mpsc::Receiver<Event>, JoinHandle<io::Result<()>>)> {
    spawn_with(socket, config, Options::default())
}

/// [`spawn`] with [`Options`]. A qlog directory that cannot be created is an error here,
/// before any task exists; so are a qlog directory and a trace sink both set.
pub fn spawn_with(
    socket: StdUdpSocket,
    config: EndpointConfig,
    options: Options,
) -> io::Result<(Handle, mpsc::Receiver<Event>, JoinHandle<io::Result<()>>)> {
    let local_addr = socket.local_addr()?;
    let io = UdpIo::new(UdpSocket::from_std(socket)?)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
    let (endpoint, qlog) = new_endpoint(config, options, local_addr)?;
    let task = tokio::spawn(
        Driver {
            endpoint,
            relays: Relays::default(),
            io,
            cmd_rx,
            ev_tx,
            qlog,
        }
        .run(),
    );
    Ok((
        Handle {
            tx: cmd_tx,
            local_addr,
        },
        ev_rx,
        task,
    ))
}

/// Like [`spawn`], but the driver runs on a thread of its own, in a single-threaded runtime
/// of its own: the endpoint's work (handshakes, sealing and opening, socket I/O) then takes a
/// core of its own, beside the application's. Both sides of the channels work across
/// runtimes. The thread ends like [`spawn`]'s task, when every [`Handle`] is dropped, and its
/// join handle gives the driver's result.
pub fn spawn_on_thread(
    socket: StdUdpSocket,
    config: EndpointConfig,
    name: &str,
) -> io::Result<(
    Handle,
    mpsc::Receiver<Event>,
    std::thread::JoinHandle<io::Result<()>>,
)> {
    spawn_on_thread_with(socket, config, name, Options::default())
}

/// [`spawn_on_thread`] with [`Options`].
pub fn spawn_on_thread_with(
    socket: StdUdpSocket,
    config: EndpointConfig,
    name: &str,
    options: Options,
) -> io::Result<(
    Handle,
    mpsc::Receiver<Event>,
    std::thread::JoinHandle<io::Result<()>>,
)> {
    let local_addr = socket.local_addr()?;
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
    let (endpoint, qlog) = new_endpoint(config, options, local_addr)?;
    // Setting up the socket needs the thread's runtime; its errors come back before we return.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let io = match UdpSocket::from_std(socket).and_then(UdpIo::new) {
                    Ok(io) => {
                        let _ = ready_tx.send(Ok(()));
                        io
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                Driver {
                    endpoint,
                    relays: Relays::default(),
                    io,
                    cmd_rx,
                    ev_tx,
                    qlog,
                }
                .run()
                .await
            })
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(thread
                .join()
                .map_err(|_| io::Error::other("the transport thread panicked"))?
                .err()
                .unwrap_or_else(|| io::Error::other("the transport thread ended at once")));
        }
    }
    Ok((
        Handle {
            tx: cmd_tx,
            local_addr,
        },
        ev_rx,
        thread,
    ))
}

/// The endpoint for `config`, with a fresh static key if it has none, and its trace writer
/// if `options` asks for one.
fn new_endpoint(
    mut config: EndpointConfig,
    options: Options,
    local: SocketAddr,
) -> io::Result<(Endpoint, Option<Qlog>)> {
    if config.identity.is_none() {
        // An anonymous endpoint still needs an unpredictable static key: the core would derive
        // one from the seed, which is fine for simulations and not for the network.
        config.identity = Some(random_identity()?);
    }
    let sink: Option<Box<dyn TraceSink>> = match (options.qlog_dir, options.trace_sink) {
        (Some(_), Some(_)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a qlog directory and a trace sink: choose one",
            ));
        }
        (Some(dir), None) => Some(Box::new(QlogDir::new(&dir, Some(local))?)),
        (None, sink) => sink,
    };
    let qlog = sink.map(Qlog::start).transpose()?;
    config.trace = qlog.is_some();
    Ok((Endpoint::new(config, random_seed()), qlog))
}

/// How long a stopping driver waits for its qlog writer to finish the files.
const QLOG_FINISH: Duration = Duration::from_secs(5);
/// How soon the driver hands over again the records that wait for the writer (see
/// `chirp_qlog::QlogSender::retry`), while any wait.
const QLOG_RETRY: Duration = Duration::from_millis(10);
/// Least time between two warnings that trace records are being dropped.
const QLOG_WARN_EVERY: Duration = Duration::from_secs(10);

/// The driver's side of its trace writer (a thread of `chirp-qlog`).
struct Qlog {
    sender: QlogSender,
    writer: WriterHandle,
    /// Woken by the writer whenever it has caught up, and when it has finished.
    progress: Arc<Notify>,
    /// When drops were last logged, and how many there were then.
    warned: (Option<Instant>, u64),
}

impl Qlog {
    fn start(sink: Box<dyn TraceSink>) -> io::Result<Self> {
        let progress = Arc::new(Notify::new());
        let wake = Arc::clone(&progress);
        let (sender, writer) =
            chirp_qlog::spawn_writer(sink, chirp_qlog::WRITER_QUEUE, "chirp-qlog", move || {
                wake.notify_one();
            })?;
        Ok(Self {
            sender,
            writer,
            progress,
            warned: (None, 0),
        })
    }

    /// Has the writer written everything handed to it? (`wait_idle` waits for this too, so
    /// that a process that ends once idle leaves complete traces.)
    fn caught_up(&self) -> bool {
        self.sender.caught_up()
    }

    /// Hands the endpoint's trace records to the writer (or drops them, counted, if it is
    /// behind): never waits.
    fn drain(&mut self, endpoint: &mut Endpoint) {
        self.sender.retry();
        while let Some(record) = endpoint.poll_trace() {
            self.sender.send(record);
        }
        let dropped = self.sender.dropped();
        let (last, then) = self.warned;
        if dropped > then {
            let now = now();
            if last.is_none_or(|t| now.saturating_duration_since(t) >= QLOG_WARN_EVERY) {
                warn!(
                    dropped,
                    "qlog: the trace writer is behind; records dropped (each file notes where, as chirp:events_dropped)"
                );
                self.warned = (Some(now), dropped);
            }
        }
    }

    fn dropped(&self) -> u64 {
        self.sender.dropped()
    }

    /// When to hand over again the records that wait for room, if any wait.
    fn retry_at(&self) -> Option<Instant> {
        (self.sender.waiting() > 0).then(|| now() + QLOG_RETRY)
    }

    /// The last records, then waits (a bounded time) for the writer to finish the files.
    async fn finish(mut self, endpoint: &mut Endpoint) {
        self.drain(endpoint);
        let deadline = tokio::time::Instant::now() + QLOG_FINISH;
        // A file's end (`Removed`) may wait for room: give it time.
        while self.sender.waiting() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
            self.sender.retry();
        }
        let Self {
            sender,
            writer,
            progress,
            ..
        } = self;
        drop(sender);
        while !writer.is_finished() {
            if tokio::time::timeout_at(deadline, progress.notified())
                .await
                .is_err()
            {
                warn!("qlog: the trace writer did not finish in time; the traces may be cut short");
                return;
            }
        }
    }

    /// Resolves when the writer reports progress (or has finished).
    async fn progressed(&self) {
        self.progress.notified().await;
    }
}

struct Driver {
    endpoint: Endpoint,
    relays: Relays,
    io: UdpIo,
    cmd_rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<Event>,
    qlog: Option<Qlog>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Errors a UDP socket reports for a *previous* datagram (ICMP unreachable and the like). They
/// say nothing about the socket itself, so the loop carries on.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

impl Driver {
    async fn run(self) -> io::Result<()> {
        // Disjoint locals, so `select!` can borrow the socket, the channels and the buffer at
        // once while the handlers mutate the endpoint.
        let Driver {
            mut endpoint,
            mut relays,
            mut io,
            mut cmd_rx,
            ev_tx,
            mut qlog,
        } = self;
        let mut idle_waiters: Vec<oneshot::Sender<()>> = Vec::new();
        let mut datagram = Vec::new();
        loop {
            let sent_all =
                flush_transmits(&mut endpoint, &mut relays, &mut io, &mut datagram).await;
            let events_blocked = !drain_events(&mut endpoint, &ev_tx);
            if let Some(qlog) = qlog.as_mut() {
                qlog.drain(&mut endpoint);
            }
            if !idle_waiters.is_empty()
                && endpoint.connections().next().is_none()
                && qlog.as_ref().is_none_or(Qlog::caught_up)
            {
                for w in idle_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            // With more to send, one round of everything else first (the timer fires at once):
            // what is due, commands, the socket. Sending never holds up the timers.
            let mut deadline = if sent_all {
                endpoint.poll_timeout()
            } else {
                Some(now())
            };
            // A qlog file's name or end waits for the writer to catch up: look again soon,
            // even if nothing else happens (only while one waits).
            if let Some(retry) = qlog.as_ref().and_then(Qlog::retry_at) {
                deadline = Some(deadline.map_or(retry, |d| d.min(retry)));
            }
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = io.readable() => {
                    r?;
                    // Drain what is queued, up to a few batches, before writing again.
                    read(&mut endpoint, &mut relays, &mut io, RECV_BATCH, Gate::Readiness)?;
                }
                () = timer => {
                    endpoint.handle_timeout(now());
                }
                cmd = cmd_rx.recv() => match cmd {
                    Some(cmd) => {
                        let trace_dropped = qlog.as_ref().map_or(0, Qlog::dropped);
                        apply(&mut endpoint, &mut relays, &mut idle_waiters, cmd, trace_dropped);
                    }
                    None => {
                        debug!("all handles dropped; transport stopping");
                        while !flush_transmits(&mut endpoint, &mut relays, &mut io, &mut datagram).await {}
                        if let Some(qlog) = qlog.take() {
                            qlog.finish(&mut endpoint).await;
                        }
                        return Ok(());
                    }
                },
                // Someone waits for idle, and the traces are not all on disk yet: the writer
                // says when it has caught up.
                () = progressed(qlog.as_ref()), if !idle_waiters.is_empty() => {}
                permit = ev_tx.reserve(), if events_blocked => {
                    // The application made room: hand over one event; the loop drains the rest.
                    // (If it went away, `drain_events` discards events from now on.)
                    if let (Ok(permit), Some(ev)) = (permit, endpoint.poll_event()) {
                        permit.send(ev);
                    }
                }
            }
        }
    }
}

/// [`Qlog::progressed`], or never without a writer.
async fn progressed(qlog: Option<&Qlog>) {
    match qlog {
        Some(q) => q.progressed().await,
        None => std::future::pending().await,
    }
}

/// Carries out one command. `trace_dropped`: the trace records the qlog writer dropped, added
/// to the endpoint's own in the counters reported.
fn apply(
    endpoint: &mut Endpoint,
    relays: &mut Relays,
    idle_waiters: &mut Vec<oneshot::Sender<()>>,
    cmd: Command,
    trace_dropped: u64,
) {
    let now = now();
    match cmd {
        Command::Relay(token, pair, cap) => relays.set(now, token, pair, cap),
        Command::UseRelay(client) => relays.client = client,
        Command::RelayStats(reply) => {
            let _ = reply.send(relays.stats);
        }
        Command::WaitIdle(reply) => idle_waiters.push(reply),
        Command::AcceptIncoming(accept) => endpoint.set_accept_incoming(accept),
        Command::KeyVerdict(conn, true) => endpoint.accept_key(now, conn),
        Command::KeyVerdict(conn, false) => endpoint.refuse_key(now, conn),
        Command::ProbePath(conn, addr) => {
            endpoint.probe_path(now, conn, addr);
        }
        Command::Connect {
            remote,
            reuse,
            expected_key,
            reply,
        } => {
            let existing = if reuse {
                endpoint.find_open(remote)
            } else {
                None
            };
            let _ = reply.send(
                existing.map_or_else(|| endpoint.connect_expecting(now, remote, expected_key), Ok),
            );
        }
        Command::Send(conn, data, reply) => {
            let _ = reply.send(endpoint.send_bytes(conn, data));
        }
        Command::SendBulk(conn, data, reply) => {
            let _ = reply.send(endpoint.send_bulk(conn, data));
        }
        Command::SendBatch(batch, reply) => {
            let sent = batch
                .into_iter()
                .map(|(conn, messages)| {
                    let mut taken = 0;
                    let mut stopped = None;
                    for m in messages {
                        if let Err(e) = endpoint.send_bytes(conn, m) {
                            stopped = Some(e);
                            break;
                        }
                        taken += 1;
                    }
                    Sent {
                        conn,
                        taken,
                        stopped,
                    }
                })
                .collect();
            let _ = reply.send(sent);
        }
        Command::Finish(conn, reply) => {
            let _ = reply.send(endpoint.finish(conn));
        }
        Command::Close {
            conn,
            code,
            reason,
            graceful,
        } => {
            if graceful {
                endpoint.close(now, conn, code, &reason);
            } else {
                endpoint.abort(now, conn, code, &reason);
            }
        }
        Command::Stats(conn, reply) => {
            let _ = reply.send(endpoint.stats(conn));
        }
        Command::EndpointStats(reply) => {
            let mut stats = endpoint.endpoint_stats();
            stats.trace_dropped += trace_dropped;
            let _ = reply.send(stats);
        }
        Command::Totals(reply) => {
            let mut totals = endpoint.totals();
            totals.endpoint.trace_dropped += trace_dropped;
            let _ = reply.send(totals);
        }
        Command::SamplePaths(reply) => {
            let mut v = Vec::new();
            endpoint.sample_paths(|p| v.push(p));
            let _ = reply.send(v);
        }
        Command::SendBuffered(conn, reply) => {
            let _ = reply.send(endpoint.send_buffered(conn));
        }
        Command::BulkBuffered(conn, reply) => {
            let _ = reply.send(endpoint.bulk_buffered(conn));
        }
    }
}

/// Sends what the endpoint has to send, at most [`MAX_FLUSH`] datagrams; false if there is
/// more. Each datagram is built in the driver's one buffer and copied into the socket's
/// batch: nothing is allocated per datagram.
///
/// Every [`SEND_TURN`] datagrams it reads what arrived meanwhile: a room's fan-out is
/// thousands of datagrams, and the members' ACKs that arrive while it goes out overflowed the
/// socket's receive buffer (the kernel dropped a third of them) when reading waited for the
/// end. What it reads may give it more to send: the bound returns to the loop, whose timers
/// would otherwise wait (a flood of handshakes kept one sending for minutes, with tens of
/// thousands of timers overdue).
async fn flush_transmits(
    endpoint: &mut Endpoint,
    relays: &mut Relays,
    io: &mut UdpIo,
    buf: &mut Vec<u8>,
) -> bool {
    let mut sent = 0;
    // What the relay forwards first (a bounded queue, filled by the last read).
    for (to, d) in std::mem::take(&mut relays.out) {
        io.send(to, &d).await;
    }
    let mut wrapped = Vec::new();
    loop {
        if sent == MAX_FLUSH {
            io.flush().await;
            return false;
        }
        let Some(destination) = endpoint.poll_transmit_into(now(), buf) else {
            break;
        };
        match relays.outgoing(destination, buf, &mut wrapped) {
            Some(relay) => io.send(relay, &wrapped).await,
            None => io.send(destination, buf).await,
        }
        sent += 1;
        if sent % SEND_TURN == 0
            && let Err(e) = read(endpoint, relays, io, SEND_TURN, Gate::Always)
        {
            // The main loop's next read sees an error that persists.
            trace!(%e, "socket error while sending");
        }
    }
    io.flush().await;
    true
}

/// Whether [`read`] trusts the runtime's readiness.
enum Gate {
    /// Read only if the runtime saw the socket become readable (the loop's `select!`).
    Readiness,
    /// Read anyway: a driver busy sending has not let the runtime look.
    Always,
}

/// Hands what the socket holds to the endpoint, up to `max` datagrams (whole `recvmmsg`
/// batches: the last may pass it). A transient error counts as a datagram, so that one that
/// repeats cannot keep the loop from going on; another is returned.
fn read(
    endpoint: &mut Endpoint,
    relays: &mut Relays,
    io: &mut UdpIo,
    max: usize,
    gate: Gate,
) -> io::Result<()> {
    let mut read = 0;
    while read < max {
        let now = now();
        let on_datagram = |from, d: &[u8]| match relays.incoming(now, from, d) {
            Incoming::Endpoint(from, d) => endpoint.handle_datagram(now, from, d),
            Incoming::Done => {}
        };
        let r = match gate {
            Gate::Readiness => io.try_recv(on_datagram),
            Gate::Always => io.recv_now(on_datagram),
        };
        match r {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if is_transient(&e) => {
                trace!(%e, "transient socket error");
                read += 1;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Moves events into the channel while it has room. Returns false if it filled up first.
fn drain_events(endpoint: &mut Endpoint, ev_tx: &mpsc::Sender<Event>) -> bool {
    loop {
        let permit = match ev_tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => return false,
            // Nobody listens any more; keep running for the handles that remain.
            Err(mpsc::error::TrySendError::Closed(())) => {
                while endpoint.poll_event().is_some() {}
                return true;
            }
        };
        match endpoint.poll_event() {
            Some(ev) => permit.send(ev),
            None => return true,
        }
    }
}
