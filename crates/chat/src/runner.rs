//! The tokio server: owns the [`Server`] core (by `&mut`, in one task), the transport and the
//! store, and carries out what the core asks.
//!
//! - Transport events become core inputs (`connected` / `message` / `disconnected`).
//! - `Output::Send` goes into a per-session queue flushed into the transport; a full send
//!   buffer waits for `Writable`. What the transport takes is reported to the core
//!   ([`Server::sent`]), which bounds each queue by bytes and streams replays only as it
//!   drains (see [`crate::server::MAX_QUEUED_BYTES`]), so one stuck client or one long
//!   request cannot grow the server's memory. `Output::Close` closes after the queue is sent,
//!   or, with `now` (too slow), drops the queue and aborts the connection at once.
//! - The store is any [`Storage`] (SQLite, or PostgreSQL). `Output::Persist` batches of one
//!   round are written as one [`Storage::write`]; a forwarder task awaits the commits in
//!   order and hands each token its outcomes (ids the store gave) back, and only then does the
//!   core acknowledge and fan out.
//! - `Output::ReadHistory`, `Output::ReadAfter` (what a replay needs that the core's cache no
//!   longer holds) and `Output::ReadUndelivered` are store reads in tasks of their own;
//!   failures are reported to the core, which answers them. The core hands out at most
//!   [`crate::server::MAX_READS`] at once and queues the rest.
//! - Shutdown: every session is told (`bye`), commits in flight are awaited, connections are
//!   closed gracefully (bounded wait), and the store is flushed and closed.
//! - [`Control`]: the caller is told when the server serves, and may hand it new [`Limits`]
//!   while it runs (a reloaded config file): the core applies them
//!   ([`Server::reconfigure`]), the store gets the new retention and prunes at once, and the
//!   caller is answered with what changed. The caller never waits on the runner for anything
//!   but that answer, and the runner never waits on the caller.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::UdpSocket as StdUdpSocket;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chirp_proto::{CloseReason, ConnectionHandle, EndpointConfig, Event, SendError, WriteError};
use chirp_store::{Op, Outcome, Record, Storage, StoreError, StoreFuture};
use chirp_transport::{Handle, Sent};
use tokio::sync::mpsc;
use tracing::{Span, debug, info, info_span, warn};

use crate::server::{Change, Limits, Output, Server, ServerConfig, SessionId};

mod nats;
pub use nats::BusError;

/// How long shutdown waits for connections to drain.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(3);
/// Close code for sessions the server ends (limits, slowness, shutdown).
const CLOSE_CODE: u64 = 0;
/// Messages (store writes' tokens) handed to the store and not yet committed, past which the
/// runner stops taking events from the transport until commits catch up. The transport then
/// stops reading its connections' streams, their flow control stops granting credit, and
/// senders wait: clients that send faster than the database commits are held back at their
/// own end, instead of queueing every message in the server's memory (issue 14: relaying
/// 1,000,000 messages had grown the server by 400 MB). Counted in messages, not writes: a
/// round of the runner writes up to [`MAX_READY_PER_ROUND`] of them at once.
const MAX_UNCOMMITTED: usize = 256;

/// Inputs of one kind (commits, transport events) taken in one round before the core's
/// output is carried out (see [`Runner::take_ready`]): enough for a round to fan out many
/// messages at once, few enough that one round's output stays small.
const MAX_READY_PER_ROUND: usize = 64;

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The core's settings.
    pub server: ServerConfig,
    /// A client silent for this long is presumed gone (shown as quit, "timed out").
    pub idle_timeout: Duration,
    /// Most connections at once.
    pub max_connections: usize,
    /// How often retention is applied.
    pub prune_every: Duration,
    /// The server's static secret key.
    pub identity: Option<chirp_proto::handshake::StaticSecret>,
    /// Cluster: the NATS server of the bus between the nodes (`nats://HOST:PORT`); the core's
    /// [`ServerConfig::cluster`] names this node. `None`: alone.
    pub bus: Option<String>,
    /// Cluster: the CA (PEM) the NATS server's certificate must chain to; TLS is then
    /// required.
    pub bus_ca: Option<std::path::PathBuf>,
    /// Cluster: told the number of other nodes this node hears from, when it changes.
    pub peers: Option<tokio::sync::watch::Sender<usize>>,
    /// Run the transport (handshakes, sealing and opening, socket I/O) on a thread of its own
    /// ([`chirp_transport::spawn_on_thread`]), so that it and the chat core each have a core;
    /// otherwise it is a task on the caller's runtime.
    pub transport_thread: bool,
    /// Write a qlog trace of every connection into this directory (the transport's
    /// `Options::qlog_dir`). `None` by default.
    pub qlog_dir: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics on this listener ([`crate::metrics::bind`]). It installs the
    /// process's global metrics recorder: one server per process.
    pub metrics: Option<Arc<std::net::TcpListener>>,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4096,
            prune_every: Duration::from_secs(60),
            identity: None,
            bus: None,
            bus_ca: None,
            peers: None,
            transport_thread: true,
            qlog_dir: None,
            metrics: None,
        }
    }
}

/// What the caller of [`run`] has of the server while it runs, beside stopping it.
#[derive(Debug, Default)]
pub struct Control {
    /// Told once the server serves: the store is open, the state loaded, and the transport
    /// runs on the socket.
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
    /// New limits to apply while running, each answered with what changed.
    pub reload: Option<mpsc::UnboundedReceiver<Reload>>,
}

/// New limits for a running server ([`Control::reload`]).
#[derive(Debug)]
pub struct Reload {
    /// The settings that can change live, all of them (what is unchanged is left as it is).
    pub limits: Limits,
    /// Answered with what changed (empty: nothing), once the core and the store have them.
    pub done: tokio::sync::oneshot::Sender<Vec<Change>>,
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store failed at start.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport could not start.
    #[error("cannot start the transport: {0}")]
    Transport(#[from] std::io::Error),
    /// The cluster bus could not be reached at start.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Metrics were asked for and could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug)]
struct Sess {
    queue: VecDeque<Bytes>,
    blocked: bool,
    close: Option<String>,
    /// Entered around the core's handling of this session's events, so that what the core
    /// logs about it says which session (and peer) it is.
    span: Span,
}

/// Runs the server on `socket` with `store` until `shutdown` resolves, then shuts down
/// gracefully. `control`: see [`Control`] (`Control::default()`: nothing).
pub async fn run(
    socket: StdUdpSocket,
    store: Box<dyn Storage>,
    config: RunnerConfig,
    control: Control,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    // Retention first, so that what is loaded (and replayed) is what is kept.
    match store.prune(now_ms()).await {
        Ok(n) if n > 0 => info!(deleted = n, "retention applied"),
        Err(e) => warn!(error = %e, "retention failed"),
        _ => {}
    }
    // Metrics first: a bad address is an error at start, before anything else is set up.
    let metrics = match &config.metrics {
        Some(l) => {
            let listener = crate::metrics::listener(l)?;
            let exporter = crate::metrics::Exporter::install()?;
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "serving metrics at /metrics");
            }
            Some((listener, exporter))
        }
        None => None,
    };
    // Undelivered DMs stay in the store until their recipient connects (`ReadUndelivered`).
    let loaded = store.load(config.server.cache_cap()).await?;
    let store: Arc<dyn Storage> = Arc::from(store);
    let (notes_tx, notes_rx) = nats::channel();
    let (bus, bus_task) = match &config.bus {
        Some(url) => {
            let (tx, task) = nats::start(url, config.bus_ca.as_deref(), notes_tx).await?;
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    info!(
        nicks = loaded.nicks.len(),
        conversations = loaded.last_ids.len(),
        "state loaded"
    );
    let mut core = Server::new(config.server.clone(), loaded);
    core.set_relay_secret(relay_secret());
    let mut ep = EndpointConfig {
        accept_incoming: true,
        max_connections: config.max_connections,
        identity: config.identity.clone(),
        ..EndpointConfig::default()
    };
    ep.transport.idle_timeout = config.idle_timeout;
    // Keepalives are the clients' to send (PROTOCOL.md §7.1): they keep their own NAT
    // bindings open, and the server's ACK tells them it is alive. A server that sent its own
    // as well would, with both on the default 15 s, ping every idle client just before the
    // client's own keepalive came due: a timer, a PING and an ACK more per client and
    // interval.
    ep.transport.keep_alive = None;
    let options = chirp_transport::Options {
        qlog_dir: config.qlog_dir.clone(),
        ..chirp_transport::Options::default()
    };
    let (handle, events, transport) = if config.transport_thread {
        let (h, e, thread) =
            chirp_transport::spawn_on_thread_with(socket, ep, "chirp-transport", options)?;
        (h, e, Transport::Thread(thread))
    } else {
        let (h, e, task) = chirp_transport::spawn_with(socket, ep, options)?;
        (h, e, Transport::Task(task))
    };
    let (commit_tx, commit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(forward_commits(commit_rx, done_tx));
    let (hist_tx, hist_rx) = mpsc::unbounded_channel();
    let (after_tx, after_rx) = mpsc::unbounded_channel();
    let (undelivered_tx, undelivered_rx) = mpsc::unbounded_channel();
    let (reading_tx, reading_rx) = mpsc::unbounded_channel();
    let (synced_tx, synced_rx) = mpsc::unbounded_channel();
    // The scrapes' requests: the HTTP task waits for the runner's answer, never the reverse.
    let (scrape_tx, scrape_rx) = mpsc::channel(4);
    let metrics_tasks = metrics.map(|(listener, exporter)| {
        [
            tokio::spawn(crate::metrics::serve(
                listener,
                exporter,
                scrape_tx,
                handle.clone(),
            )),
            tokio::spawn(crate::metrics::sample_paths(handle.clone())),
        ]
    });
    let mut r = Runner {
        bus,
        synced_tx,
        peers: config.peers.clone(),
        peers_seen: 0,
        core,
        handle,
        store,
        sessions: HashMap::new(),
        commit_tx,
        in_flight: 0,
        hist_tx,
        after_tx,
        undelivered_tx,
        reading_tx,
    };
    let reads = Reads {
        history: hist_rx,
        after: after_rx,
        undelivered: undelivered_rx,
        reading: reading_rx,
        synced: synced_rx,
        bus: notes_rx,
        scrapes: scrape_rx,
    };
    if let Some(ready) = control.ready {
        let _ = ready.send(());
    }
    r.run(
        events,
        done_rx,
        reads,
        control.reload,
        config.prune_every,
        shutdown,
    )
    .await;
    for task in metrics_tasks.into_iter().flatten() {
        task.abort();
    }
    drop(r.handle);
    // The bus task publishes what is queued (the goodbye that tells the other nodes this
    // one's members are gone) and flushes, then ends.
    r.bus = None;
    if let Some(task) = bus_task {
        if tokio::time::timeout(SHUTDOWN_LINGER, task).await.is_err() {
            warn!("the bus did not flush in time");
        }
    }
    match transport {
        Transport::Task(task) => task.abort(),
        // It ends by itself now that its last handle is gone, after sending what it holds.
        // Polled, not joined from the blocking pool: a thread that does not stop must not hold
        // a pool thread (and with it the runtime's shutdown) for ever.
        Transport::Thread(thread) => {
            let deadline = tokio::time::Instant::now() + SHUTDOWN_LINGER;
            while !thread.is_finished() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if thread.is_finished() {
                match thread.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "the transport stopped with an error"),
                    Err(_) => warn!("the transport thread panicked"),
                }
            } else {
                warn!("the transport thread did not stop in time; leaving it");
            }
        }
    }
    if let Err(e) = r.store.close().await {
        warn!(error = %e, "closing the store failed");
    }
    Ok(())
}

/// Where the transport driver runs.
enum Transport {
    Task(tokio::task::JoinHandle<std::io::Result<()>>),
    Thread(std::thread::JoinHandle<std::io::Result<()>>),
}

/// A store write in flight, its tokens with the number of ops each wrote, in order, and when
/// it was queued.
type Commit = (
    StoreFuture<Vec<Outcome>>,
    Vec<(u64, usize)>,
    std::time::Instant,
);
/// What a token's write did: one outcome per op, or why it failed.
type Committed = Vec<(u64, Result<Vec<Outcome>, String>)>;
type HistoryRead = (SessionId, String, Option<u64>, Result<Vec<Record>, String>);
type AfterRead = (SessionId, String, u64, Result<Vec<Record>, String>);
type UndeliveredRead = (SessionId, Result<Vec<(String, u64)>, String>);

/// The answer of a read marker or search read.
enum ReadingRead {
    Markers(crate::server::Key, Result<Vec<(String, u64)>, String>),
    Search {
        session: SessionId,
        id: Option<u64>,
        conv: String,
        limit: usize,
        hits: Result<Vec<Record>, String>,
    },
}

/// Answers of the store's reads, and what the bus brings.
struct Reads {
    history: mpsc::UnboundedReceiver<HistoryRead>,
    after: mpsc::UnboundedReceiver<AfterRead>,
    undelivered: mpsc::UnboundedReceiver<UndeliveredRead>,
    reading: mpsc::UnboundedReceiver<ReadingRead>,
    synced: mpsc::UnboundedReceiver<Synced>,
    bus: mpsc::Receiver<nats::Note>,
    scrapes: mpsc::Receiver<crate::metrics::ScrapeRequest>,
}

/// Awaits commits in the order they were queued (the writer commits in that order too) and
/// reports each token's outcomes.
async fn forward_commits(
    mut rx: mpsc::UnboundedReceiver<Commit>,
    tx: mpsc::UnboundedSender<Committed>,
) {
    // Looked up once, not per commit. A no-op unless the process installed a metrics
    // recorder (`crate::metrics`), which `run` does before it spawns this task.
    let latency = metrics::histogram!(crate::metrics::COMMIT_SECONDS);
    while let Some((done, tokens, queued)) = rx.recv().await {
        let result = done.await;
        latency.record(queued.elapsed());
        if let Err(e) = &result {
            warn!(error = %e, "store write failed");
        }
        let answers = match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                tokens
                    .into_iter()
                    .map(|(t, n)| (t, Ok(outcomes.by_ref().take(n).collect())))
                    .collect()
            }
            Err(e) => {
                let e = e.to_string();
                tokens
                    .into_iter()
                    .map(|(t, _)| (t, Err(e.clone())))
                    .collect()
            }
        };
        if tx.send(answers).is_err() {
            return;
        }
    }
}

struct Runner {
    core: Server,
    handle: Handle,
    store: Arc<dyn Storage>,
    /// Cluster: the bus task (`None`: alone).
    bus: Option<mpsc::UnboundedSender<nats::Cmd>>,
    synced_tx: mpsc::UnboundedSender<Synced>,
    peers: Option<tokio::sync::watch::Sender<usize>>,
    peers_seen: usize,
    sessions: HashMap<SessionId, Sess>,
    commit_tx: mpsc::UnboundedSender<Commit>,
    /// Messages written and not yet committed ([`MAX_UNCOMMITTED`]).
    in_flight: usize,
    hist_tx: mpsc::UnboundedSender<HistoryRead>,
    after_tx: mpsc::UnboundedSender<AfterRead>,
    undelivered_tx: mpsc::UnboundedSender<UndeliveredRead>,
    reading_tx: mpsc::UnboundedSender<ReadingRead>,
}

impl Runner {
    /// The span of session `sid` (none if it is gone).
    fn span(&self, sid: SessionId) -> Span {
        self.sessions
            .get(&sid)
            .map_or_else(Span::none, |s| s.span.clone())
    }
}

/// The secret relay tokens are derived under, fresh per start: a token names a pair this
/// process introduced and cannot be guessed. Without OS randomness, a secret derived from the
/// time and the process (tokens of a guessable secret could be forged: said in the log).
fn relay_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    if getrandom::fill(&mut s).is_err() {
        warn!("no OS randomness: relay tokens are derived from a weak secret");
        for (i, chunk) in s.chunks_mut(8).enumerate() {
            let x = chirp_transport::random_seed().rotate_left(i as u32 * 13);
            chunk.copy_from_slice(&x.to_le_bytes());
        }
    }
    s
}

fn conn(s: SessionId) -> ConnectionHandle {
    ConnectionHandle(s)
}

fn reason_text(r: &CloseReason) -> String {
    match r {
        CloseReason::PeerClosed { .. } => "left".into(),
        CloseReason::Local => "closed by the server".into(),
        CloseReason::IdleTimeout => "timed out".into(),
        CloseReason::ProtocolViolation { detail, .. } => format!("protocol error: {detail}"),
        CloseReason::Reset => "reconnecting".into(),
        CloseReason::KeyMismatch { .. } | CloseReason::KeyRefused { .. } => "key refused".into(),
        // Only a client is refused; the server opens no connections. For completeness.
        CloseReason::Refused { reason } => format!("refused: {reason}"),
    }
}

impl Runner {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<Event>,
        mut done_rx: mpsc::UnboundedReceiver<Committed>,
        mut reads: Reads,
        mut reload: Option<mpsc::UnboundedReceiver<Reload>>,
        prune_every: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        // Retention was applied at start: the first tick is one period later.
        let mut prune =
            tokio::time::interval_at(tokio::time::Instant::now() + prune_every, prune_every);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let timer = self.core.poll_timeout().map(|due| {
                let wait = due.saturating_sub(now_ms()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            tokio::select! {
                ev = events.recv(), if self.in_flight < MAX_UNCOMMITTED => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => {
                        warn!("transport stopped");
                        return;
                    }
                },
                Some(answers) = done_rx.recv() => self.committed(answers),
                Some((session, conv, id, page)) = reads.history.recv() => {
                    self.core.history_loaded(session, &conv, id, page);
                }
                Some((session, conv, token, page)) = reads.after.recv() => {
                    self.core.replay_loaded(now_ms(), session, &conv, token, page);
                }
                Some((session, page)) = reads.undelivered.recv() => {
                    self.core.undelivered_loaded(now_ms(), session, page);
                }
                Some(read) = reads.reading.recv() => match read {
                    ReadingRead::Markers(key, markers) => self.core.markers_loaded(key, markers),
                    ReadingRead::Search { session, id, conv, limit, hits } => {
                        self.core.search_loaded(session, id, &conv, limit, hits);
                    }
                },
                Some(Synced { conv, moderation, last }) = reads.synced.recv() => {
                    if let Some(entries) = moderation {
                        self.core.moderation_loaded(now_ms(), &conv, entries);
                    }
                    if let Some(last) = last {
                        self.core.synced(now_ms(), &conv, last);
                    }
                }
                Some(note) = reads.bus.recv() => self.on_bus(note),
                Some(reply) = reads.scrapes.recv() => {
                    let _ = reply.send(crate::metrics::Snapshot {
                        server: self.core.stats(),
                        writer: self.store.stats(),
                        peers: self.core.cluster_peers().map(|(_, n)| n),
                    });
                    continue;
                }
                Some(r) = recv(&mut reload) => self.reconfigure(r),
                () = sleep_until(timer) => self.core.handle_timeout(now_ms()),
                _ = prune.tick() => self.prune(),
                () = &mut shutdown => break,
            }
            self.take_ready(&mut events, &mut done_rx, &mut reads.bus)
                .await;
            self.drain().await;
            self.report_peers();
        }
        info!("shutting down: telling clients, flushing the database");
        self.core.shutdown(now_ms(), "server shutting down");
        self.drain().await;
        // Commits in flight still get their acknowledgements out.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_LINGER;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(answers)) => {
                    self.committed(answers);
                    self.drain().await;
                }
                _ => break,
            }
        }
        let ids: Vec<_> = self.sessions.keys().copied().collect();
        for s in ids {
            let _ = self
                .handle
                .close(conn(s), CLOSE_CODE, "server shutting down")
                .await;
        }
        let _ = tokio::time::timeout(SHUTDOWN_LINGER, self.handle.wait_idle()).await;
    }

    /// Applies retention now. The writer does it between commits; its answer is only logged.
    fn prune(&self) {
        let pruned = self.store.prune(now_ms());
        tokio::spawn(async move {
            match pruned.await {
                Ok(n) if n > 0 => debug!(deleted = n, "retention applied"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "retention failed"),
            }
        });
    }

    /// New limits: the core's, and the store's retention (applied at once).
    fn reconfigure(&mut self, r: Reload) {
        let retention = self.core.limits().retention();
        let changes = self.core.reconfigure(now_ms(), &r.limits);
        for c in &changes {
            info!(setting = c.setting, from = %c.from, to = %c.to, "setting changed");
        }
        if r.limits.retention() != retention {
            self.store.set_retention(r.limits.retention());
            self.prune();
        }
        // The caller may have stopped waiting: nothing to do about it.
        let _ = r.done.send(changes);
    }

    fn on_bus(&mut self, note: nats::Note) {
        let now = now_ms();
        match note {
            nats::Note::Message(data) => self.core.bus(now, &data),
            nats::Note::Flushed(conv) => {
                // Every subscription asked for before is active: what the store says now,
                // and everything published after, covers the conversation (`Output::Sync`
                // says what is read for which).
                let moderation = (conv.is_empty() || conv.starts_with('#'))
                    .then(|| self.store.moderation(conv.clone()));
                let last = (!conv.is_empty()).then(|| self.store.last_id(conv.clone()));
                let tx = self.synced_tx.clone();
                tokio::spawn(async move {
                    let moderation = match moderation {
                        Some(read) => Some(read.await.map_err(|e| e.to_string())),
                        None => None,
                    };
                    let last = match last {
                        Some(read) => Some(read.await.map_err(|e| e.to_string())),
                        None => None,
                    };
                    let _ = tx.send(Synced {
                        conv,
                        moderation,
                        last,
                    });
                });
            }
            nats::Note::Reconnected => self.core.bus_reconnected(now),
        }
    }

    fn report_peers(&mut self) {
        let (Some(tx), Some((_, n))) = (&self.peers, self.core.cluster_peers()) else {
            return;
        };
        if n != self.peers_seen {
            self.peers_seen = n;
            tx.send_replace(n);
        }
    }

    fn to_bus(&self, cmd: nats::Cmd) {
        if let Some(bus) = &self.bus {
            let _ = bus.send(cmd);
        }
    }

    /// A store write committed (each token with its outcomes) or failed.
    fn committed(&mut self, answers: Committed) {
        let now = now_ms();
        self.in_flight -= answers.len();
        for (t, result) in answers {
            self.core.committed(now, t, result);
        }
    }

    /// Takes the commits, bus messages and transport events that are already waiting (at
    /// most [`MAX_READY_PER_ROUND`] of each) before the core's output is carried out. Under
    /// load one round then fans out many messages: each member's connection gets them
    /// together and packs several into one datagram, the store gets their writes as one
    /// batch, and the transport is asked once. (On a node of a cluster, the messages of the
    /// other nodes' members arrive on the bus: taken one per round, they went out one per
    /// datagram.) With no load a round is one input, as before: nothing waits for company.
    async fn take_ready(
        &mut self,
        events: &mut mpsc::Receiver<Event>,
        done_rx: &mut mpsc::UnboundedReceiver<Committed>,
        bus: &mut mpsc::Receiver<nats::Note>,
    ) {
        for _ in 0..MAX_READY_PER_ROUND {
            let Ok(answers) = done_rx.try_recv() else {
                break;
            };
            self.committed(answers);
        }
        for _ in 0..MAX_READY_PER_ROUND {
            let Ok(note) = bus.try_recv() else {
                break;
            };
            self.on_bus(note);
        }
        for _ in 0..MAX_READY_PER_ROUND {
            if self.in_flight >= MAX_UNCOMMITTED {
                break;
            }
            let Ok(ev) = events.try_recv() else {
                break;
            };
            self.on_event(ev).await;
        }
    }

    async fn on_event(&mut self, ev: Event) {
        let now = now_ms();
        match ev {
            Event::Connected {
                conn,
                remote,
                remote_key,
                ..
            } => {
                let span = info_span!("session", id = conn.0, %remote);
                span.in_scope(|| debug!("connected"));
                span.in_scope(|| {
                    self.core.connected(now, conn.0, remote.ip(), remote_key);
                    self.core.observed(conn.0, remote);
                });
                self.sessions.insert(
                    conn.0,
                    Sess {
                        queue: VecDeque::new(),
                        blocked: false,
                        close: None,
                        span,
                    },
                );
            }
            // Never asked: the server's endpoint accepts every authenticated key
            // (`verify_keys` is off); a key is an identity, not a credential, here.
            Event::VerifyKey { conn, .. } => {
                let _ = self.handle.verify_key(conn, true).await;
            }
            Event::Message { conn, data } => {
                let span = self.span(conn.0);
                span.in_scope(|| self.core.message(now, conn.0, &data));
            }
            // The server's messages need no per-message receipt: a client that missed some
            // catches up from the history when it comes back.
            Event::Acked { .. } => {}
            // A client half-closing its stream (`Endpoint::finish`) only says it sends no more.
            Event::PeerFinished { .. } => {}
            // The server asks for no pings.
            Event::Ping { .. } => {}
            // Nothing moves bulk data through the server yet: a client's is dropped (taking
            // it releases its flow-control credit), and the server writes none.
            Event::BulkMessage { .. } | Event::BulkWritable { .. } => {}
            // A client's NAT rebinding (or move), validated: a rendezvous answer gives the
            // new address.
            Event::PathChanged { conn, remote } => {
                let span = self.span(conn.0);
                span.in_scope(|| {
                    debug!(%remote, "address changed");
                    self.core.observed(conn.0, remote);
                });
            }
            Event::Writable { conn } => {
                if let Some(s) = self.sessions.get_mut(&conn.0) {
                    s.blocked = false;
                }
                self.flush(vec![conn.0]).await;
            }
            Event::Closed { conn, reason, .. } => {
                let span = self
                    .sessions
                    .remove(&conn.0)
                    .map_or_else(Span::none, |s| s.span);
                span.in_scope(|| {
                    debug!(?reason, "closed");
                    self.core.disconnected(now, conn.0, &reason_text(&reason));
                });
            }
        }
    }

    /// Carries out everything the core has asked for, until it asks for nothing more (what
    /// the transport takes lets the core go on with its replays).
    async fn drain(&mut self) {
        while self.drain_once().await {}
    }

    /// One round of [`Self::drain`]: false if the core had nothing to do.
    async fn drain_once(&mut self) -> bool {
        let mut ops: Vec<Op> = Vec::new();
        let mut tokens = Vec::new();
        let mut touched = Vec::new();
        let mut any = false;
        while let Some(o) = self.core.poll_output() {
            any = true;
            match o {
                Output::Send { to, data } => {
                    // The core bounds this queue by bytes (it closes a session before it
                    // would pass `MAX_QUEUED_BYTES`).
                    if let Some(s) = self.sessions.get_mut(&to) {
                        s.queue.push_back(data);
                        if s.queue.len() == 1 {
                            touched.push(to);
                        }
                    }
                }
                Output::Close {
                    session,
                    reason,
                    now,
                } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        if now {
                            // A client too slow to read what it is sent: what waits for it is
                            // dropped and its connection aborted at once (a graceful close
                            // would wait for it to read, which it may never do).
                            s.queue.clear();
                            s.close = None;
                            let _ = self.handle.abort(conn(session), CLOSE_CODE, &reason).await;
                        } else {
                            s.close = Some(reason);
                            touched.push(session);
                        }
                    }
                }
                Output::Publish { subject, data } => {
                    self.to_bus(nats::Cmd::Publish(subject, data));
                }
                Output::Follow(subject) => self.to_bus(nats::Cmd::Follow(subject)),
                Output::Unfollow(subject) => self.to_bus(nats::Cmd::Unfollow(subject)),
                Output::Sync { conv } => match &self.bus {
                    Some(_) => self.to_bus(nats::Cmd::Barrier(conv)),
                    // Without a bus (a core configured as a node but run alone), the store's
                    // mark is all there is.
                    None => self.on_bus(nats::Note::Flushed(conv)),
                },
                Output::Persist { token, ops: o } => {
                    tokens.push((token, o.len()));
                    ops.extend(o);
                }
                Output::Relay { token, pair, cap } => {
                    // The transport forwards RELAY datagrams of the pair (PROTOCOL.md §11).
                    let _ = self.handle.relay(token, pair, cap).await;
                }
                Output::ReadHistory {
                    session,
                    id,
                    conv,
                    before,
                    limit,
                } => {
                    let page = self.store.history(conv.clone(), before, limit);
                    let tx = self.hist_tx.clone();
                    tokio::spawn(async move {
                        let page = page.await;
                        if let Err(e) = &page {
                            warn!(error = %e, "history read failed");
                        }
                        let _ = tx.send((session, conv, id, page.map_err(|e| e.to_string())));
                    });
                }
                Output::ReadAfter {
                    session,
                    token,
                    conv,
                    after,
                    upto,
                    limit,
                    max_bytes,
                } => {
                    let page = self
                        .store
                        .after(conv.clone(), after, upto, limit, max_bytes);
                    let tx = self.after_tx.clone();
                    tokio::spawn(async move {
                        let page = page.await;
                        if let Err(e) = &page {
                            warn!(error = %e, "replay read failed");
                        }
                        // The core is told either way: the session's replay waits for this.
                        let _ = tx.send((session, conv, token, page.map_err(|e| e.to_string())));
                    });
                }
                Output::ReadMarkers { key, limit } => {
                    let read = self.store.markers(key, limit);
                    let tx = self.reading_tx.clone();
                    tokio::spawn(async move {
                        let markers = read.await;
                        if let Err(e) = &markers {
                            warn!(error = %e, "read markers read failed");
                        }
                        let _ = tx.send(ReadingRead::Markers(
                            key,
                            markers.map_err(|e| e.to_string()),
                        ));
                    });
                }
                Output::Search {
                    session,
                    id,
                    conv,
                    terms,
                    before,
                    limit,
                } => {
                    let read = self.store.search(conv.clone(), terms, before, limit);
                    let tx = self.reading_tx.clone();
                    tokio::spawn(async move {
                        let hits = read.await;
                        if let Err(e) = &hits {
                            warn!(error = %e, "search failed");
                        }
                        let _ = tx.send(ReadingRead::Search {
                            session,
                            id,
                            conv,
                            limit,
                            hits: hits.map_err(|e| e.to_string()),
                        });
                    });
                }
                Output::ReadUndelivered {
                    session,
                    key,
                    after,
                    limit,
                } => {
                    let page = self.store.undelivered(key, after, limit);
                    let tx = self.undelivered_tx.clone();
                    tokio::spawn(async move {
                        let page = page.await;
                        if let Err(e) = &page {
                            warn!(error = %e, "undelivered DMs read failed");
                        }
                        // The core is told either way: its replays wait for this answer.
                        let _ = tx.send((session, page.map_err(|e| e.to_string())));
                    });
                }
            }
        }
        if !tokens.is_empty() {
            let done = self.store.write(ops);
            self.in_flight += tokens.len();
            let _ = self
                .commit_tx
                .send((done, tokens, std::time::Instant::now()));
        }
        // A session can be touched twice in one round (a message, then a graceful close):
        // flush it once.
        touched.sort_unstable();
        touched.dedup();
        self.flush(touched).await;
        any
    }

    /// Hands the queues of `sids` to the transport, in one round trip for all of them (a
    /// message into a room reaches every member's queue at once), as far as each connection
    /// takes them; tells the core how much each took, and closes the sessions that asked to
    /// be once their queue is empty.
    async fn flush(&mut self, sids: Vec<SessionId>) {
        let batch: Vec<_> = sids
            .iter()
            .filter_map(|&sid| {
                let s = self.sessions.get(&sid)?;
                let ready = !s.blocked && !s.queue.is_empty();
                // `Bytes` clones share the encoded message: one buffer for the whole room.
                ready.then(|| (conn(sid), s.queue.iter().cloned().collect()))
            })
            .collect();
        let sent = if batch.is_empty() {
            Vec::new()
        } else {
            match self.handle.send_batch(batch).await {
                Ok(sent) => sent,
                Err(_) => return, // The transport is stopping.
            }
        };
        for Sent {
            conn: c,
            taken,
            stopped,
        } in sent
        {
            let sid = c.0;
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            let taken = taken.min(s.queue.len());
            let mut bytes: usize = s.queue.drain(..taken).map(|d| d.len()).sum();
            match stopped {
                None => {}
                Some(SendError::Write(WriteError::Blocked)) => s.blocked = true,
                Some(e) => {
                    // The connection is gone (its `Closed` follows) or refuses this message:
                    // what is dropped is no longer queued either, for the core's count.
                    debug!(session = sid, error = %e, "send failed; dropping the queue");
                    bytes += s.queue.drain(..).map(|d| d.len()).sum::<usize>();
                }
            }
            if bytes > 0 {
                self.core.sent(now_ms(), sid, bytes);
            }
        }
        for sid in sids {
            let Some(s) = self.sessions.get_mut(&sid) else {
                continue;
            };
            if s.queue.is_empty()
                && let Some(reason) = s.close.take()
            {
                // Graceful: what was queued (an error saying why) arrives first.
                let _ = self.handle.close(conn(sid), CLOSE_CODE, &reason).await;
            }
        }
    }
}

/// The next item of `rx`; never, without one.
async fn recv<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What the store said for one `Output::Sync` (each read, if it was asked for).
struct Synced {
    conv: String,
    moderation: Option<Result<Vec<chirp_store::ModEntry>, String>>,
    last: Option<Result<u64, String>>,
}
