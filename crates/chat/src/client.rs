//! The client session: one task that owns a transport endpoint and the session state, and
//! talks to the application through a command channel ([`ClientHandle`]) and an event channel
//! ([`Event`]).
//!
//! - **Connect and hello.** Inside the handshake, before our identity or any request goes
//!   out, the server's key is checked (pin or known-keys, through
//!   [`ClientConfig::server_key_check`] at `VerifyKey`); on `Connected`, `hello` carries the nick, the rooms to
//!   (re)join with the last id seen in each, and the DM conversations to resume.
//! - **Reconnect.** A lost connection, a `bye` or a failed attempt is retried with exponential
//!   backoff (with jitter) for as long as the application wants; errors the server gives
//!   before `welcome` (nick taken, bad nick, version) are fatal instead.
//! - **Exactly once.** Every `say` stays pending until its `ack` (or a refusal). After a
//!   reconnect the pending ones are sent again with the same `(client, c)`, which the server
//!   recognises, so nothing is stored twice. Every message shown is remembered by id per
//!   conversation and a non-history message at or below that id is dropped: nothing is shown
//!   twice, whatever the server resends.
//! - **Pacing.** Requests are paced by a token bucket mirroring the server's flood control
//!   (advertised in `welcome`), so a script piping many lines is slowed, not refused.
//! - **Finish.** [`ClientHandle::finish`] (end of input) waits until every pending message is
//!   acknowledged, closes gracefully and ends with [`Event::Finished`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chirp_proto::{
    CloseReason, ConnectionHandle, ConnectionStats, EndpointConfig, SendError, WriteError,
};
use chirp_transport::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::wire::{self, ClientMsg, JoinReq, Msg, Resume, ServerMsg};

/// Decides whether the server's static key is acceptable: `Err` carries the message to show.
pub type KeyCheck = Arc<dyn Fn(&[u8; 32]) -> Result<(), String> + Send + Sync>;

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server.
    pub server: SocketAddr,
    /// Local address to bind (port 0: any).
    pub bind: SocketAddr,
    /// The nick wanted.
    pub nick: String,
    /// Rooms to join at the first connection.
    pub rooms: Vec<String>,
    /// This client's static key (its identity). `None`: a fresh key per run.
    pub identity: Option<chirp_proto::handshake::StaticSecret>,
    /// The server is presumed gone after this long without a packet.
    pub idle_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// When finishing, give up after being disconnected this long.
    pub give_up_after: Duration,
    /// Checks the server's key on every connection.
    pub server_key_check: Option<KeyCheck>,
    /// Pace requests to the server's advertised rate (on by default).
    pub pace: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("nick", &self.nick)
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults for `server` and `nick`.
    pub fn new(server: SocketAddr, nick: impl Into<String>) -> Self {
        let bind = if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        Self {
            server,
            bind,
            nick: nick.into(),
            rooms: Vec::new(),
            identity: None,
            idle_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            give_up_after: Duration::from_secs(30),
            server_key_check: None,
            pace: true,
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A room.
    Room(String),
    /// A nick (DM).
    Nick(String),
}

#[derive(Debug)]
enum Command {
    Request(ClientMsg),
    Stats,
    Finish,
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Opening a connection (attempt 1 is the first).
    Connecting {
        /// Attempt number since the last successful session.
        attempt: u32,
    },
    /// The handshake completed and the server's key was accepted.
    Connected {
        /// The server's static key.
        server_key: [u8; 32],
    },
    /// The server accepted `hello`.
    Welcome {
        /// The nick this session has.
        nick: String,
        /// The largest message text the server accepts, in bytes.
        max_text: usize,
    },
    /// A chat message, shown once.
    Message(Msg),
    /// A message this client sent is stored.
    Delivered {
        /// Client sequence number (from [`ClientHandle::say`]).
        c: u64,
        /// Conversation.
        conv: String,
        /// Its id.
        id: u64,
        /// Server timestamp (ms).
        ts: i64,
    },
    /// A message this client sent was refused.
    Refused {
        /// Client sequence number.
        c: u64,
        /// Error code.
        code: String,
        /// Why.
        message: String,
    },
    /// An error not tied to a message.
    Error {
        /// Error code.
        code: String,
        /// Why.
        message: String,
    },
    /// Anything else the server said (joined, parted, presence, nick, topic, list, who,
    /// history_end, bye).
    Server(ServerMsg),
    /// The connection was lost; retrying after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// Link statistics (answer to [`ClientHandle::stats`]).
    Stats(Option<ConnectionStats>),
    /// The session cannot go on (key mismatch, nick taken, bad nick...).
    Fatal(String),
    /// The session ended after [`ClientHandle::finish`]; `undelivered` messages never got an
    /// acknowledgement (0 unless it gave up).
    Finished {
        /// Messages not acknowledged.
        undelivered: usize,
    },
}

/// The application's side of a session.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    tx: mpsc::Sender<Command>,
    next_c: Arc<AtomicU64>,
}

/// The session task has ended.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
#[error("the chat session has ended")]
pub struct Ended;

impl ClientHandle {
    async fn request(&self, m: ClientMsg) -> Result<(), Ended> {
        self.tx.send(Command::Request(m)).await.map_err(|_| Ended)
    }

    /// Sends a message; returns its client sequence number (see [`Event::Delivered`]).
    pub async fn say(&self, target: Target, text: String, action: bool) -> Result<u64, Ended> {
        let c = self.next_c.fetch_add(1, Ordering::Relaxed);
        let (room, to) = match target {
            Target::Room(r) => (Some(r), None),
            Target::Nick(n) => (None, Some(n)),
        };
        self.request(ClientMsg::Say {
            c,
            room,
            to,
            text,
            action,
        })
        .await?;
        Ok(c)
    }

    /// Joins a room.
    pub async fn join(&self, room: String) -> Result<(), Ended> {
        self.request(ClientMsg::Join(JoinReq { room, after: None }))
            .await
    }

    /// Leaves a room.
    pub async fn part(&self, room: String) -> Result<(), Ended> {
        self.request(ClientMsg::Part { room }).await
    }

    /// Changes nick.
    pub async fn nick(&self, nick: String) -> Result<(), Ended> {
        self.request(ClientMsg::Nick { nick }).await
    }

    /// Sets a room's topic.
    pub async fn topic(&self, room: String, topic: String) -> Result<(), Ended> {
        self.request(ClientMsg::Topic { room, topic }).await
    }

    /// Lists rooms.
    pub async fn list(&self) -> Result<(), Ended> {
        self.request(ClientMsg::List).await
    }

    /// Lists a room's members.
    pub async fn who(&self, room: String) -> Result<(), Ended> {
        self.request(ClientMsg::Who { room }).await
    }

    /// Asks for `limit` messages before `before` in a room or DM conversation.
    pub async fn history(
        &self,
        target: Target,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(), Ended> {
        let (room, with) = match target {
            Target::Room(r) => (Some(r), None),
            Target::Nick(n) => (None, Some(n)),
        };
        self.request(ClientMsg::History {
            id: None,
            room,
            with,
            before,
            limit,
        })
        .await
    }

    /// Asks for link statistics ([`Event::Stats`]).
    pub async fn stats(&self) -> Result<(), Ended> {
        self.tx.send(Command::Stats).await.map_err(|_| Ended)
    }

    /// Finishes: waits for every acknowledgement, then closes ([`Event::Finished`]).
    pub async fn finish(&self) -> Result<(), Ended> {
        self.tx.send(Command::Finish).await.map_err(|_| Ended)
    }
}

/// Starts a session. Events arrive on the receiver; the task ends after [`Event::Finished`]
/// or [`Event::Fatal`] (or when the handle and the receiver are dropped).
pub fn spawn(
    config: ClientConfig,
) -> std::io::Result<(ClientHandle, mpsc::Receiver<Event>, JoinHandle<()>)> {
    let socket = chirp_transport::bind(config.bind)?;
    let mut ep = EndpointConfig {
        // A client only opens connections; nobody may open one to it.
        accept_incoming: false,
        max_connections: 4,
        identity: config.identity.clone(),
        // The server's key is checked inside the handshake (`server_key_check`).
        verify_keys: config.server_key_check.is_some(),
        ..EndpointConfig::default()
    };
    ep.transport.idle_timeout = config.idle_timeout;
    // Keepalives well inside both our idle timeout and (typically) the server's, so an idle
    // but present client is never taken for gone.
    ep.transport.keep_alive =
        Some((config.idle_timeout / 3).clamp(Duration::from_millis(200), Duration::from_secs(10)));
    let (handle, tevents, ttask) = chirp_transport::spawn(socket, ep)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let session = Session::new(config, handle, ev_tx);
    let task = tokio::spawn(async move {
        session.run(cmd_rx, tevents).await;
        ttask.abort();
    });
    Ok((
        ClientHandle {
            tx: cmd_tx,
            next_c: Arc::new(AtomicU64::new(1)),
        },
        ev_rx,
        task,
    ))
}

/// Token bucket in thousandths of a token (see the server's).
#[derive(Debug)]
struct Pace {
    milli: u64,
    cap: u64,
    per_sec: u64,
    last: Instant,
}

impl Pace {
    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.last).as_millis() as u64;
        self.milli = self.cap.min(self.milli + ms * self.per_sec);
        self.last = now;
    }

    /// When the next token is available (now if there is one).
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.milli >= 1000 || self.per_sec == 0 {
            now
        } else {
            // Round up so that the token is really there when we wake.
            now + Duration::from_millis((1000 - self.milli).div_ceil(self.per_sec) + 1)
        }
    }
}

struct Session {
    config: ClientConfig,
    handle: Handle,
    ev: mpsc::Sender<Event>,
    client_id: u64,
    conn: Option<ConnectionHandle>,
    /// `welcome` received on `conn`.
    up: bool,
    blocked: bool,
    nick: String,
    rooms: BTreeSet<String>,
    first_rooms: Vec<String>,
    last_seen: HashMap<String, u64>,
    /// The newest server time seen in each DM conversation: resumes go most recent first.
    dm_recent: HashMap<String, i64>,
    pending: BTreeMap<u64, ClientMsg>,
    unsent: VecDeque<ClientMsg>,
    pace: Option<Pace>,
    attempt: u32,
    reconnect_at: Option<Instant>,
    down_since: Option<Instant>,
    finishing: bool,
}

fn jitter(d: Duration) -> Duration {
    // ±25 %, so that many clients of a restarted server do not come back in lockstep.
    let r = chirp_transport::random_seed() % 501;
    d.mul_f64(0.75 + r as f64 / 1000.0)
}

/// The DM conversations to resume in a `hello`: the most recent first (newest message seen;
/// then by name, so the choice is the same every time), at most the server's
/// [`MAX_DM_RESUMES`](crate::server::MAX_DM_RESUMES). The server skips those with nothing new,
/// and refuses the rest; older conversations are still read with `/history`.
fn dm_resumes(last_seen: &HashMap<String, u64>, recent: &HashMap<String, i64>) -> Vec<Resume> {
    let mut dms: Vec<(i64, &String, u64)> = last_seen
        .iter()
        .filter(|(c, _)| c.starts_with('@'))
        .map(|(c, &after)| (recent.get(c).copied().unwrap_or(i64::MIN), c, after))
        .collect();
    dms.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    dms.into_iter()
        .take(crate::server::MAX_DM_RESUMES)
        .map(|(_, conv, after)| Resume {
            conv: conv.clone(),
            after,
        })
        .collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn new(config: ClientConfig, handle: Handle, ev: mpsc::Sender<Event>) -> Self {
        Session {
            nick: config.nick.clone(),
            first_rooms: config.rooms.clone(),
            config,
            handle,
            ev,
            client_id: chirp_transport::random_seed(),
            conn: None,
            up: false,
            blocked: false,
            rooms: BTreeSet::new(),
            last_seen: HashMap::new(),
            dm_recent: HashMap::new(),
            pending: BTreeMap::new(),
            unsent: VecDeque::new(),
            pace: None,
            attempt: 0,
            reconnect_at: Some(Instant::now()),
            down_since: None,
            finishing: false,
        }
    }

    async fn emit(&self, e: Event) {
        let _ = self.ev.send(e).await;
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut tevents: mpsc::Receiver<chirp_proto::Event>,
    ) {
        let mut cmds_open = true;
        loop {
            if self.finishing && self.pending.is_empty() && self.unsent.is_empty() {
                if let Some(conn) = self.conn.take() {
                    let _ = self.handle.close(conn, 0, "bye").await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), self.handle.wait_idle()).await;
                }
                self.emit(Event::Finished { undelivered: 0 }).await;
                return;
            }
            let now = Instant::now();
            let pace_at = if self.up && !self.blocked && !self.unsent.is_empty() {
                Some(match (&mut self.pace, self.config.pace) {
                    (Some(p), true) => p.ready_at(now),
                    _ => now,
                })
            } else {
                None
            };
            let give_up_at = if self.finishing {
                self.down_since.map(|d| d + self.config.give_up_after)
            } else {
                None
            };
            let wake = [pace_at, self.reconnect_at, give_up_at]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(c) => self.on_command(c).await,
                    None => {
                        cmds_open = false;
                        self.finishing = true;
                    }
                },
                ev = tevents.recv() => match ev {
                    Some(ev) => {
                        if !self.on_transport(ev).await {
                            return;
                        }
                    }
                    None => {
                        self.emit(Event::Fatal("the transport stopped".into())).await;
                        return;
                    }
                },
                () = sleep_until(wake) => {
                    let now = Instant::now();
                    if give_up_at.is_some_and(|g| g <= now) {
                        self.emit(Event::Finished { undelivered: self.pending.len() }).await;
                        return;
                    }
                    if self.reconnect_at.is_some_and(|r| r <= now) {
                        self.reconnect_at = None;
                        self.connect().await;
                    }
                    self.pump().await;
                }
            }
        }
    }

    async fn on_command(&mut self, c: Command) {
        match c {
            Command::Request(m) => {
                if let ClientMsg::Say { c, .. } = &m {
                    self.pending.insert(*c, m.clone());
                }
                self.unsent.push_back(m);
                self.pump().await;
            }
            Command::Stats => {
                let s = match self.conn {
                    Some(c) => self.handle.stats(c).await.ok().flatten(),
                    None => None,
                };
                self.emit(Event::Stats(s)).await;
            }
            Command::Finish => self.finishing = true,
        }
    }

    async fn connect(&mut self) {
        self.attempt += 1;
        self.emit(Event::Connecting {
            attempt: self.attempt,
        })
        .await;
        match self.handle.connect(self.config.server).await {
            Ok(Ok(conn)) => {
                self.conn = Some(conn);
                self.up = false;
                self.blocked = false;
            }
            Ok(Err(e)) => {
                let retry = self.backoff();
                self.emit(Event::Disconnected {
                    reason: format!("cannot connect: {e}"),
                    retry_in: retry,
                })
                .await;
            }
            Err(_) => {}
        }
    }

    fn backoff(&mut self) -> Duration {
        let exp = self.attempt.saturating_sub(1).min(16);
        let d = self
            .config
            .backoff_min
            .saturating_mul(1 << exp)
            .min(self.config.backoff_max);
        let d = jitter(d);
        self.reconnect_at = Some(Instant::now() + d);
        d
    }

    async fn send_now(&mut self, conn: ConnectionHandle, m: &ClientMsg) -> bool {
        match self.handle.send(conn, Bytes::from(m.encode())).await {
            Ok(Ok(())) => true,
            Ok(Err(SendError::Write(WriteError::Blocked))) => {
                self.blocked = true;
                false
            }
            Ok(Err(e)) => {
                debug!(error = %e, "send failed");
                false
            }
            Err(_) => false,
        }
    }

    /// Sends queued requests as pacing and the send buffer allow.
    async fn pump(&mut self) {
        let Some(conn) = self.conn else { return };
        while self.up && !self.blocked {
            let Some(m) = self.unsent.front().cloned() else {
                return;
            };
            if self.config.pace {
                if let Some(p) = &mut self.pace {
                    let now = Instant::now();
                    if p.ready_at(now) > now {
                        return;
                    }
                    p.milli -= 1000;
                }
            }
            if !self.send_now(conn, &m).await {
                return;
            }
            self.unsent.pop_front();
        }
    }

    /// Returns false when the session must end.
    async fn on_transport(&mut self, ev: chirp_proto::Event) -> bool {
        use chirp_proto::Event as T;
        match ev {
            T::VerifyKey {
                conn, remote_key, ..
            } => {
                // Inside the handshake, before our own key (Noise message 3) or any request
                // goes out: a refused server learns nothing of us.
                let verdict = match &self.config.server_key_check {
                    Some(check) if Some(conn) == self.conn => check(&remote_key),
                    Some(_) => Err("not the connection we opened".to_owned()),
                    None => Ok(()),
                };
                let accept = verdict.is_ok();
                let _ = self.handle.verify_key(conn, accept).await;
                if let Err(msg) = verdict {
                    if Some(conn) == self.conn {
                        self.emit(Event::Fatal(msg)).await;
                        return false;
                    }
                }
            }
            T::Connected {
                conn, remote_key, ..
            } if Some(conn) == self.conn => {
                self.emit(Event::Connected {
                    server_key: remote_key,
                })
                .await;
                let hello = self.hello();
                self.send_now(conn, &hello).await;
            }
            T::Message { conn, data } if Some(conn) == self.conn => {
                match ServerMsg::decode(&data) {
                    Ok(m) => return self.on_server(m).await,
                    Err(e) => warn!(error = %e, "undecodable message from the server"),
                }
            }
            T::Writable { conn } if Some(conn) == self.conn => {
                self.blocked = false;
                self.pump().await;
            }
            T::Closed { conn, reason, .. } if Some(conn) == self.conn => {
                self.conn = None;
                self.up = false;
                self.down_since.get_or_insert_with(Instant::now);
                let reason = match reason {
                    CloseReason::PeerClosed { reason, .. } if !reason.is_empty() => {
                        format!("server closed the connection: {reason}")
                    }
                    CloseReason::PeerClosed { .. } => "server closed the connection".into(),
                    CloseReason::IdleTimeout => "no answer from the server".into(),
                    CloseReason::Reset => "the server restarted".into(),
                    CloseReason::Local => "closed".into(),
                    other => format!("{other:?}"),
                };
                // Everything not acknowledged goes again on the next connection, pending
                // messages first, in their original order.
                let others: Vec<ClientMsg> = self
                    .unsent
                    .drain(..)
                    .filter(|m| !matches!(m, ClientMsg::Say { .. }))
                    .collect();
                self.unsent = self.pending.values().cloned().chain(others).collect();
                let retry_in = self.backoff();
                self.emit(Event::Disconnected { reason, retry_in }).await;
            }
            _ => {}
        }
        true
    }

    fn hello(&self) -> ClientMsg {
        let mut rooms: Vec<JoinReq> = self
            .rooms
            .iter()
            .map(|r| JoinReq {
                room: r.clone(),
                // Nothing seen there yet (an empty room, or joined by another device):
                // recent history, marked as such, rather than everything the server holds.
                after: self.last_seen.get(r).copied(),
            })
            .collect();
        for r in &self.first_rooms {
            if !self.rooms.contains(&crate::names::fold(r)) {
                rooms.push(JoinReq {
                    room: r.clone(),
                    after: None,
                });
            }
        }
        let dms = dm_resumes(&self.last_seen, &self.dm_recent);
        ClientMsg::Hello {
            v: wire::VERSION,
            nick: self.nick.clone(),
            client: self.client_id,
            rooms,
            dms,
        }
    }

    /// Returns false when the session must end.
    async fn on_server(&mut self, m: ServerMsg) -> bool {
        match m {
            ServerMsg::Welcome {
                nick,
                burst,
                per_sec,
                max_text,
                ..
            } => {
                self.up = true;
                self.attempt = 0;
                self.down_since = None;
                self.first_rooms.clear();
                self.nick = nick.clone();
                self.pace = Some(Pace {
                    milli: u64::from(burst) * 1000,
                    cap: u64::from(burst) * 1000,
                    per_sec: u64::from(per_sec),
                    last: Instant::now(),
                });
                let max_text = usize::try_from(max_text).unwrap_or(usize::MAX);
                self.emit(Event::Welcome { nick, max_text }).await;
                self.pump().await;
            }
            ServerMsg::Error { code, message, .. } if !self.up => {
                // Refused before welcome: retrying would only be refused again.
                let _ = code;
                if let Some(conn) = self.conn.take() {
                    let _ = self.handle.close(conn, 0, "bye").await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.handle.wait_idle()).await;
                }
                self.emit(Event::Fatal(message)).await;
                return false;
            }
            ServerMsg::Error {
                c: Some(c),
                code,
                message,
            } => {
                self.pending.remove(&c);
                self.emit(Event::Refused { c, code, message }).await;
            }
            ServerMsg::Error {
                c: None,
                code,
                message,
            } => self.emit(Event::Error { code, message }).await,
            ServerMsg::Ack { c, conv, id, ts } => {
                if self.pending.remove(&c).is_some() {
                    self.emit(Event::Delivered { c, conv, id, ts }).await;
                }
            }
            ServerMsg::Msg(m) => {
                if m.conv.starts_with('@') {
                    let t = self.dm_recent.entry(m.conv.clone()).or_insert(m.ts);
                    *t = (*t).max(m.ts);
                }
                let seen = self.last_seen.entry(m.conv.clone()).or_insert(0);
                if m.history {
                    *seen = (*seen).max(m.id);
                } else if m.id <= *seen {
                    debug!(conv = %m.conv, id = m.id, "duplicate dropped");
                    return true;
                } else {
                    *seen = m.id;
                }
                self.emit(Event::Message(m)).await;
            }
            ServerMsg::Joined { ref room, .. } => {
                self.rooms.insert(room.clone());
                self.emit(Event::Server(m)).await;
            }
            ServerMsg::Parted { ref room } => {
                self.rooms.remove(room);
                self.emit(Event::Server(m)).await;
            }
            ServerMsg::Nick { ref old, ref new } => {
                if crate::names::fold(old) == crate::names::fold(&self.nick) {
                    self.nick = new.clone();
                }
                self.emit(Event::Server(m)).await;
            }
            other => self.emit(Event::Server(other)).await,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_resumes_go_most_recent_first_in_a_fixed_order_and_at_most_the_cap() {
        let n = crate::server::MAX_DM_RESUMES + 40;
        let mut last_seen = HashMap::new();
        let mut recent = HashMap::new();
        for i in 0..n {
            let conv = format!("@{i:04}");
            last_seen.insert(conv.clone(), i as u64 + 1);
            // Two conversations share each time: the name breaks the tie.
            recent.insert(conv, (i / 2) as i64);
        }
        last_seen.insert("#room".into(), 5);
        last_seen.insert("@never-timed".into(), 1);
        let dms = dm_resumes(&last_seen, &recent);
        assert_eq!(dms.len(), crate::server::MAX_DM_RESUMES);
        assert_eq!(dms[0].conv, format!("@{:04}", n - 2));
        assert_eq!(dms[0].after, (n - 1) as u64);
        assert_eq!(dms[1].conv, format!("@{:04}", n - 1));
        assert!(dms.iter().all(|r| r.conv.starts_with('@')));
        let times: Vec<i64> = dms.iter().map(|r| recent[&r.conv]).collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "most recent first");
        // The same every time, whatever the maps' order.
        for _ in 0..5 {
            let again: HashMap<_, _> = last_seen.clone().into_iter().collect();
            assert_eq!(dm_resumes(&again, &recent), dms);
        }
    }
}
