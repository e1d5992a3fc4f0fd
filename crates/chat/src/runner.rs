//! The tokio server: owns the [`Server`] core (by `&mut`, in one task), the transport and the
//! store, and carries out what the core asks.
//!
//! - Transport events become core inputs (`connected` / `message` / `disconnected`).
//! - `Output::Send` goes into a per-session queue flushed into the transport; a full send
//!   buffer waits for `Writable`. A session whose queue passes [`MAX_QUEUE`] is too slow to
//!   follow the chat and is closed, so one stuck client cannot grow the server's memory.
//! - `Output::Persist` batches of one round are written as one [`Store::write`]; a forwarder
//!   task awaits the commits in order and hands `(tokens, ok)` back, and only then does the
//!   core acknowledge and fan out.
//! - `Output::ReadHistory` runs on the blocking pool with the read connection.
//! - Shutdown: every session is told (`bye`), commits in flight are awaited, connections are
//!   closed gracefully (bounded wait), and the store is flushed and closed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::UdpSocket as StdUdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chirp_proto::{CloseReason, ConnectionHandle, EndpointConfig, Event, SendError, WriteError};
use chirp_store::{Op, Reader, Record, Store, StoreError};
use chirp_transport::Handle;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::server::{Output, Server, ServerConfig, SessionId};

/// Messages queued for one session before it is declared too slow and closed.
pub const MAX_QUEUE: usize = 8192;
/// How long shutdown waits for connections to drain.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(3);
/// Close code for sessions the server ends (limits, slowness, shutdown).
const CLOSE_CODE: u64 = 0;

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
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            idle_timeout: Duration::from_secs(30),
            max_connections: 4096,
            prune_every: Duration::from_secs(60),
            identity: None,
        }
    }
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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Debug, Default)]
struct Sess {
    queue: VecDeque<Bytes>,
    blocked: bool,
    close: Option<String>,
}

/// Runs the server on `socket` with `store` until `shutdown` resolves, then shuts down
/// gracefully.
pub async fn run(
    socket: StdUdpSocket,
    store: Store,
    config: RunnerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    // Retention first, so that what is loaded (and replayed) is what is kept.
    match store.prune(now_ms()).await {
        Ok(Ok(n)) if n > 0 => info!(deleted = n, "retention applied"),
        Ok(Err(e)) => warn!(error = %e, "retention failed"),
        _ => {}
    }
    let reader = store.reader()?;
    let loaded = reader.load(config.server.replay_cache, 1_000_000)?;
    info!(
        nicks = loaded.nicks.len(),
        conversations = loaded.last_ids.len(),
        undelivered = loaded.undelivered.len(),
        "state loaded"
    );
    let core = Server::new(config.server.clone(), loaded);
    let mut ep = EndpointConfig {
        accept_incoming: true,
        max_connections: config.max_connections,
        identity: config.identity.clone(),
        ..EndpointConfig::default()
    };
    ep.transport.idle_timeout = config.idle_timeout;
    let (handle, events, task) = chirp_transport::spawn(socket, ep)?;
    let (commit_tx, commit_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    tokio::spawn(forward_commits(commit_rx, done_tx));
    let (hist_tx, hist_rx) = mpsc::unbounded_channel();
    let mut r = Runner {
        core,
        handle,
        store,
        reader: Arc::new(Mutex::new(reader)),
        sessions: HashMap::new(),
        commit_tx,
        in_flight: 0,
        hist_tx,
    };
    r.run(events, done_rx, hist_rx, config.prune_every, shutdown)
        .await;
    drop(r.handle);
    task.abort();
    r.store.close();
    Ok(())
}

type Commit = (oneshot::Receiver<Result<(), StoreError>>, Vec<u64>);

/// Awaits commits in the order they were queued (the writer commits in that order too) and
/// reports each batch's tokens.
async fn forward_commits(
    mut rx: mpsc::UnboundedReceiver<Commit>,
    tx: mpsc::UnboundedSender<(Vec<u64>, bool)>,
) {
    while let Some((done, tokens)) = rx.recv().await {
        let ok = match done.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn!(error = %e, "store write failed");
                false
            }
            Err(_) => false,
        };
        if tx.send((tokens, ok)).is_err() {
            return;
        }
    }
}

struct Runner {
    core: Server,
    handle: Handle,
    store: Store,
    reader: Arc<Mutex<Reader>>,
    sessions: HashMap<SessionId, Sess>,
    commit_tx: mpsc::UnboundedSender<Commit>,
    in_flight: usize,
    hist_tx: mpsc::UnboundedSender<(SessionId, String, Vec<Record>)>,
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
        CloseReason::KeyMismatch { .. } => "key refused".into(),
    }
}

impl Runner {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<Event>,
        mut done_rx: mpsc::UnboundedReceiver<(Vec<u64>, bool)>,
        mut hist_rx: mpsc::UnboundedReceiver<(SessionId, String, Vec<Record>)>,
        prune_every: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut prune = tokio::time::interval(prune_every);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let timer = self.core.poll_timeout().map(|due| {
                let wait = due.saturating_sub(now_ms()).max(0) as u64;
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => {
                        warn!("transport stopped");
                        return;
                    }
                },
                Some((tokens, ok)) = done_rx.recv() => {
                    let now = now_ms();
                    self.in_flight -= 1;
                    for t in tokens {
                        self.core.committed(now, t, ok);
                    }
                }
                Some((session, conv, records)) = hist_rx.recv() => {
                    self.core.history_loaded(session, &conv, records);
                }
                () = sleep_until(timer) => self.core.handle_timeout(now_ms()),
                _ = prune.tick() => {
                    // Fire and forget: the writer applies it between commits.
                    drop(self.store.prune(now_ms()));
                }
                () = &mut shutdown => break,
            }
            self.drain().await;
        }
        info!("shutting down: telling clients, flushing the database");
        self.core.shutdown("server shutting down");
        self.drain().await;
        // Commits in flight still get their acknowledgements out.
        let deadline = tokio::time::Instant::now() + SHUTDOWN_LINGER;
        while self.in_flight > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some((tokens, ok))) => {
                    self.in_flight -= 1;
                    for t in tokens {
                        self.core.committed(now_ms(), t, ok);
                    }
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

    async fn on_event(&mut self, ev: Event) {
        let now = now_ms();
        match ev {
            Event::Connected {
                conn,
                remote,
                remote_key,
                ..
            } => {
                debug!(session = conn.0, %remote, "connected");
                self.sessions.insert(conn.0, Sess::default());
                self.core.connected(now, conn.0, remote.ip(), remote_key);
            }
            Event::Message { conn, data } => self.core.message(now, conn.0, &data),
            // The server's messages need no per-message receipt: a client that missed some
            // catches up from the history when it comes back.
            Event::Acked { .. } => {}
            Event::Writable { conn } => {
                if let Some(s) = self.sessions.get_mut(&conn.0) {
                    s.blocked = false;
                }
                self.flush(conn.0).await;
            }
            Event::Closed { conn, reason, .. } => {
                debug!(session = conn.0, ?reason, "closed");
                self.sessions.remove(&conn.0);
                self.core.disconnected(now, conn.0, &reason_text(&reason));
            }
        }
    }

    /// Carries out everything the core has asked for.
    async fn drain(&mut self) {
        let mut ops: Vec<Op> = Vec::new();
        let mut tokens = Vec::new();
        let mut touched = Vec::new();
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Send { to, data } => {
                    if let Some(s) = self.sessions.get_mut(&to) {
                        if s.queue.len() >= MAX_QUEUE {
                            if s.close.is_none() {
                                warn!(session = to, "client too slow; closing");
                                s.close = Some("too slow".into());
                                s.queue.clear();
                                touched.push(to);
                            }
                            continue;
                        }
                        s.queue.push_back(data);
                        if s.queue.len() == 1 {
                            touched.push(to);
                        }
                    }
                }
                Output::Close { session, reason } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.close = Some(reason);
                        touched.push(session);
                    }
                }
                Output::Persist { token, ops: o } => {
                    ops.extend(o);
                    tokens.push(token);
                }
                Output::ReadHistory {
                    session,
                    conv,
                    before,
                    limit,
                } => {
                    let reader = Arc::clone(&self.reader);
                    let tx = self.hist_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        // A poisoned lock only means an earlier read panicked; the connection
                        // itself is still usable.
                        let r = reader.lock().unwrap_or_else(|p| p.into_inner());
                        match r.history(&conv, before, limit) {
                            Ok(records) => {
                                let _ = tx.send((session, conv, records));
                            }
                            Err(e) => warn!(error = %e, "history read failed"),
                        }
                    });
                }
            }
        }
        if !tokens.is_empty() {
            let done = self.store.write(ops);
            self.in_flight += 1;
            let _ = self.commit_tx.send((done, tokens));
        }
        for s in touched {
            self.flush(s).await;
        }
    }

    async fn flush(&mut self, sid: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&sid) else {
                return;
            };
            if s.blocked {
                return;
            }
            let Some(data) = s.queue.front().cloned() else {
                if let Some(reason) = s.close.take() {
                    // Graceful: what was queued (an error saying why) arrives first.
                    let _ = self.handle.close(conn(sid), CLOSE_CODE, &reason).await;
                }
                return;
            };
            match self.handle.send(conn(sid), data).await {
                Ok(Ok(())) => {
                    s.queue.pop_front();
                }
                Ok(Err(SendError::Write(WriteError::Blocked))) => {
                    s.blocked = true;
                    return;
                }
                Ok(Err(e)) => {
                    debug!(session = sid, error = %e, "send failed; dropping the queue");
                    s.queue.clear();
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
