//! The chat client: a sans-IO [`Session`] (all the behaviour, no I/O, time comes in as `now`)
//! and, in [`driver`], the tokio glue that runs it over a [`chirp_transport`] endpoint.
//!
//! # The session
//!
//! Inputs are transport events ([`Session::handle_transport`]), the application's requests
//! ([`Session::say`], [`Session::join`], …, [`Session::finish`]), the answers to what it asked
//! of the transport ([`Session::connect_result`], [`Session::send_result`],
//! [`Session::key_verdict`], [`Session::stats_result`]) and timeouts
//! ([`Session::handle_timeout`]). Outputs are transport requests ([`Session::poll_io`]: connect,
//! send, close, check a key, verify a key, read statistics), application events
//! ([`Session::poll_event`]) and the next deadline ([`Session::poll_timeout`]). After every
//! input, call `poll_io` until `None` (answering each request), then `poll_event` until
//! `None`, then `poll_timeout`: the str0m rule.
//!
//! - **Connect and hello.** Inside the handshake, before our identity or any request goes
//!   out, the server's key is checked ([`Io::CheckKey`], answered by the driver from
//!   [`ClientConfig::server_key_check`]); on `Connected`, `hello` carries the nick, the rooms
//!   to (re)join with the last id seen in each, and the DM conversations to resume.
//! - **Reconnect.** A lost connection, a `bye` or a failed attempt is retried with exponential
//!   backoff (with jitter) for as long as the application wants; errors the server gives
//!   before `welcome` (nick taken, bad nick, version, too many sessions) and a server that
//!   refuses the very first connection (full) are fatal instead.
//! - **Failover.** A session may know several addresses of one service (the nodes of a
//!   cluster, which share one static key and one store: [`ClientConfig::alternates`]). It
//!   starts with the first; whenever a connection is lost or an attempt fails (the idle
//!   timeout declared the node unreachable, it closed, reset or refused), the next attempt
//!   goes to the next address, round and round, with the same backoff. Resuming from the last
//!   ids seen is the same at any address, so nothing is shown twice. A refusal on the first
//!   connection is fatal only once every address has refused in a row. The key check is
//!   told which address it judges ([`KeyCheck`]).
//! - **Exactly once.** Every `say` stays pending until its `ack` (or a refusal). After a
//!   reconnect the pending ones are sent again with the same `(client, c)`, which the server
//!   recognises, so nothing is stored twice. Every message shown is remembered by id per
//!   conversation and a non-history message at or below that id is dropped: nothing is shown
//!   twice, whatever the server resends.
//! - **No own echo.** `hello` asks for no own copy of room messages (`echo: false`): the
//!   server sends the `ack` in its place, in order, and the session shows the line from what
//!   it sent ([`Event::Message`] with `c`, then [`Event::Delivered`]), saving the echo's bytes.
//!   A server that echoes anyway, and DMs, whose own copy always comes, are shown from the
//!   echo as before, and the `ack` then only confirms.
//! - **Nothing wedges.** A message the transport can never carry (too large) or the server
//!   would refuse for its length is refused at once ([`Event::Refused`]), and the queue goes
//!   on.
//! - **Pacing.** Requests are paced by a token bucket mirroring the server's flood control
//!   (advertised in `welcome`), so a script piping many lines is slowed, not refused; while
//!   pacing holds requests back the application is told ([`Event::Pacing`]).
//! - **Finish.** [`Session::finish`] (end of input) waits until every pending message is
//!   acknowledged, closes gracefully and ends with [`Event::Finished`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_proto::{CloseReason, ConnectionHandle, ConnectionStats, SendError, WriteError};
use tracing::debug;

use crate::wire::{self, ClientMsg, JoinReq, Msg, Resume, ServerMsg, code};

pub mod driver;

pub use driver::{ClientHandle, Ended, spawn};

/// Decides whether the static key presented by the server at an address (one of
/// [`ClientConfig::server`] and [`ClientConfig::alternates`]) is acceptable: `Err` carries the
/// message to show.
pub type KeyCheck = Arc<dyn Fn(SocketAddr, &[u8; 32]) -> Result<(), String> + Send + Sync>;

/// Room left in a transport message for the JSON envelope around a `say`'s text (the
/// request's fields and JSON escaping of an ordinary text); a text whose request would not fit
/// is refused before it is queued.
const ENVELOPE: usize = 512;

/// Client settings.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server (with [`alternates`](Self::alternates), the first address tried).
    pub server: SocketAddr,
    /// More addresses of the same service (the other nodes of a cluster, sharing its key and
    /// its store), empty by default. When a connection is lost or an attempt fails, the next
    /// attempt goes to the next address of `server, alternates...`, after the last to `server`
    /// again. They must be of `server`'s address family (the socket is bound for it).
    pub alternates: Vec<SocketAddr>,
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
    /// Checks the server's key on every connection (used by the driver, at [`Io::CheckKey`]).
    pub server_key_check: Option<KeyCheck>,
    /// Pace requests to the server's advertised rate (on by default).
    pub pace: bool,
    /// Write a qlog trace of every connection to the server into this directory (the
    /// transport's `Options::qlog_dir`). `None` by default.
    pub qlog_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("alternates", &self.alternates)
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
            alternates: Vec::new(),
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
            qlog_dir: None,
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

/// What the session reports to the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Opening a connection (attempt 1 is the first).
    Connecting {
        /// Attempt number since the last successful session.
        attempt: u32,
    },
    /// The handshake completed and the server's key was accepted.
    Connected {
        /// The address connected to.
        server: SocketAddr,
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
    /// A chat message, shown once. Our own copy carries our `c` ([`Msg::c`]).
    Message(Msg),
    /// A message this client sent is stored.
    Delivered {
        /// Client sequence number (from [`Session::say`]).
        c: u64,
        /// Conversation.
        conv: String,
        /// Its id.
        id: u64,
        /// Server timestamp (ms).
        ts: i64,
    },
    /// A message this client sent was refused (by the server, or here, before it was sent).
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
    /// Pacing holds `held` requests back to stay within the server's flood control; the
    /// next goes in `next_in`. Reported when it starts holding requests back, and with
    /// `held: 0` once everything queued has gone out.
    Pacing {
        /// Requests waiting for the server's rate.
        held: usize,
        /// When the next one goes.
        next_in: Duration,
        /// The rate they go at, per second.
        per_sec: u32,
    },
    /// Anything else the server said (joined, parted, presence, nick, topic, list, who,
    /// history_end, bye), and `limits`, which the session has applied already.
    Server(ServerMsg),
    /// The connection was lost (or an attempt failed); retrying after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
        /// The address lost or not reached.
        server: SocketAddr,
        /// The address of the next attempt: the next one when there are several
        /// ([`ClientConfig::alternates`]), else `server` again.
        next: SocketAddr,
    },
    /// Link statistics (answer to [`Session::stats`]).
    Stats(Option<ConnectionStats>),
    /// The session cannot go on (key mismatch, nick taken, bad nick, server full...).
    Fatal(String),
    /// The session ended after [`Session::finish`]; `undelivered` messages never got an
    /// acknowledgement (0 unless it gave up).
    Finished {
        /// Messages not acknowledged.
        undelivered: usize,
    },
}

/// What the session asks of the transport. Each is answered as its doc says, before the next
/// [`Session::poll_io`].
#[derive(Debug, Clone, PartialEq)]
pub enum Io {
    /// Open a connection to the server; answer with [`Session::connect_result`].
    Connect {
        /// The server.
        server: SocketAddr,
    },
    /// Send one message; answer with [`Session::send_result`].
    Send {
        /// On this connection.
        conn: ConnectionHandle,
        /// The encoded request.
        data: Bytes,
    },
    /// Close gracefully (no answer).
    Close {
        /// The connection.
        conn: ConnectionHandle,
        /// The reason sent to the server.
        reason: &'static str,
    },
    /// Judge the server's key (pin, known keys); answer with [`Session::key_verdict`].
    CheckKey {
        /// The connection being opened.
        conn: ConnectionHandle,
        /// The address it is opened to.
        server: SocketAddr,
        /// The key the server proved it holds.
        key: [u8; 32],
    },
    /// Tell the transport whether the handshake may go on (no answer).
    VerifyKey {
        /// The connection.
        conn: ConnectionHandle,
        /// Accept the key.
        accept: bool,
    },
    /// Read the connection's statistics; answer with [`Session::stats_result`].
    Stats {
        /// The connection.
        conn: ConnectionHandle,
    },
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
    fn ready_at(&self, now: Instant) -> Instant {
        let ms = now.saturating_duration_since(self.last).as_millis() as u64;
        let milli = self.cap.min(self.milli + ms * self.per_sec);
        if milli >= 1000 || self.per_sec == 0 {
            now
        } else {
            // Round up so that the token is really there when we wake.
            now + Duration::from_millis((1000 - milli).div_ceil(self.per_sec) + 1)
        }
    }
}

/// What the driver holds for us between a [`Io::Send`] and its [`Session::send_result`].
#[derive(Debug)]
enum InDriver {
    Hello,
    Request(ClientMsg),
}

/// A `say` waiting for its `ack`.
#[derive(Debug)]
struct Pending {
    say: ClientMsg,
    /// Its own copy (a `msg` with its `c`) came and was shown: the `ack` only confirms.
    echoed: bool,
}

/// The addresses of the service and which one is in use: the failover rotation.
#[derive(Debug)]
struct Servers {
    /// `server`, then the `alternates`, as configured (never empty).
    list: Vec<SocketAddr>,
    /// Index of the address in use, or of the next attempt.
    at: usize,
    /// Attempts refused in a row (`CloseReason::Refused`) before any `welcome`.
    refused: usize,
}

impl Servers {
    fn new(config: &ClientConfig) -> Servers {
        let mut list = Vec::with_capacity(1 + config.alternates.len());
        list.push(config.server);
        list.extend(config.alternates.iter().copied());
        Servers {
            list,
            at: 0,
            refused: 0,
        }
    }

    fn current(&self) -> SocketAddr {
        // `at` is always reduced modulo the length, and the list holds `server` at least.
        self.list[self.at % self.list.len()]
    }

    /// The current address failed: the next attempt goes to the next one (after the last, the
    /// first). Returns (the address that failed, the next).
    fn advance(&mut self) -> (SocketAddr, SocketAddr) {
        let lost = self.current();
        self.at = (self.at + 1) % self.list.len();
        (lost, self.current())
    }
}

/// A chat client session: see the [module documentation](self).
pub struct Session {
    config: ClientConfig,
    servers: Servers,
    client_id: u64,
    /// xorshift state for the reconnect jitter.
    rng: u64,
    conn: Option<ConnectionHandle>,
    /// A connect was asked for and not yet answered.
    connecting: bool,
    /// `hello` is to go out on `conn` (handshake done).
    hello_due: bool,
    /// `welcome` received on `conn`.
    up: bool,
    /// `welcome` received at least once in this session.
    ever_up: bool,
    blocked: bool,
    in_driver: Option<InDriver>,
    nick: String,
    rooms: BTreeSet<String>,
    first_rooms: Vec<String>,
    last_seen: HashMap<String, u64>,
    /// When a typing notice last went out, per room or nick (at most 64 remembered).
    typing_sent: HashMap<String, Instant>,
    /// The keys given to join rooms that have one (`+k`), for rejoining after a reconnect.
    room_keys: HashMap<String, String>,
    /// The newest server time seen in each DM conversation: resumes go most recent first.
    dm_recent: HashMap<String, i64>,
    pending: BTreeMap<u64, Pending>,
    unsent: VecDeque<ClientMsg>,
    pace: Option<Pace>,
    /// An [`Event::Pacing`] with requests held back was reported and not yet its end.
    pacing_reported: bool,
    max_text: Option<usize>,
    attempt: u32,
    reconnect_at: Option<Instant>,
    down_since: Option<Instant>,
    finishing: bool,
    ended: bool,
    next_c: u64,
    next_history: u64,
    io: VecDeque<Io>,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.servers.current())
            .field("conn", &self.conn)
            .field("up", &self.up)
            .field("pending", &self.pending.len())
            .field("unsent", &self.unsent.len())
            .finish_non_exhaustive()
    }
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

/// What a closed connection means for the user.
fn close_text(reason: &CloseReason) -> String {
    match reason {
        CloseReason::PeerClosed { reason, .. } if !reason.is_empty() => {
            format!("server closed the connection: {reason}")
        }
        CloseReason::PeerClosed { .. } => "server closed the connection".into(),
        CloseReason::IdleTimeout => "no answer from the server".into(),
        CloseReason::Reset => "the server restarted".into(),
        CloseReason::Local => "closed".into(),
        CloseReason::Refused { reason } => format!("the server refused the connection: {reason}"),
        other => format!("{other:?}"),
    }
}

impl Session {
    /// A session that connects at `now`. `seed` gives the client id (which the server uses to
    /// recognise resent messages) and the reconnect jitter: pass a random one.
    pub fn new(config: ClientConfig, now: Instant, seed: u64) -> Self {
        Session {
            nick: config.nick.clone(),
            first_rooms: config.rooms.clone(),
            servers: Servers::new(&config),
            config,
            client_id: seed,
            rng: seed | 1,
            conn: None,
            connecting: false,
            hello_due: false,
            up: false,
            ever_up: false,
            blocked: false,
            in_driver: None,
            rooms: BTreeSet::new(),
            last_seen: HashMap::new(),
            typing_sent: HashMap::new(),
            room_keys: HashMap::new(),
            dm_recent: HashMap::new(),
            pending: BTreeMap::new(),
            unsent: VecDeque::new(),
            pace: None,
            pacing_reported: false,
            max_text: None,
            attempt: 0,
            reconnect_at: Some(now),
            down_since: None,
            finishing: false,
            ended: false,
            next_c: 1,
            next_history: 1,
            io: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The address in use: of the current connection, or of the next attempt.
    pub fn server(&self) -> SocketAddr {
        self.servers.current()
    }

    /// Every address of the service, in the order they are tried: [`ClientConfig::server`],
    /// then [`ClientConfig::alternates`].
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers.list
    }

    /// Requests accepted and not yet handed to the transport. A driver reading from a pipe
    /// stops reading while this is high, so that memory stays bounded.
    pub fn backlog(&self) -> usize {
        self.unsent.len() + usize::from(self.in_driver.is_some())
    }

    /// Messages sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The session has ended ([`Event::Finished`] or [`Event::Fatal`] was emitted).
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The current connection, if any.
    pub fn connection(&self) -> Option<ConnectionHandle> {
        self.conn
    }

    // ----- application requests -----

    /// Sends a message; returns its client sequence number (see [`Event::Delivered`],
    /// [`Event::Refused`]). A text longer than the server takes, or than one transport message
    /// can carry, is refused at once.
    pub fn say(&mut self, _now: Instant, target: Target, text: String, action: bool) -> u64 {
        let c = self.next_c;
        self.next_c += 1;
        let limit = self
            .max_text
            .unwrap_or(usize::MAX)
            .min(chirp_proto::MAX_MESSAGE_SIZE - ENVELOPE);
        if text.len() > limit {
            let message = match self.max_text {
                Some(max) if text.len() > max => format!(
                    "message too long: {} bytes, the server takes at most {max} (not sent)",
                    text.len()
                ),
                _ => format!(
                    "message too long: {} bytes, at most {limit} fit in one message (not sent)",
                    text.len()
                ),
            };
            self.events.push_back(Event::Refused {
                c,
                code: code::BAD_TEXT.to_owned(),
                message,
            });
            self.check_finished();
            return c;
        }
        let (room, to) = match target {
            Target::Room(r) => (Some(r), None),
            Target::Nick(n) => (None, Some(n)),
        };
        let m = ClientMsg::Say {
            c,
            room,
            to,
            text,
            action,
        };
        self.pending.insert(
            c,
            Pending {
                say: m.clone(),
                echoed: false,
            },
        );
        self.unsent.push_back(m);
        c
    }

    /// Joins a room.
    pub fn join(&mut self, room: String) {
        self.join_with_key(room, None);
    }

    /// Joins a room that has a key (mode `+k`); the key is given again when the session
    /// rejoins after a reconnect.
    pub fn join_with_key(&mut self, room: String, key: Option<String>) {
        if let Some(k) = &key {
            self.room_keys.insert(crate::names::fold(&room), k.clone());
        }
        self.unsent.push_back(ClientMsg::Join(JoinReq {
            room,
            after: None,
            key,
        }));
    }

    /// Sends a moderation request ([`ClientMsg::Op`], [`ClientMsg::Kick`], [`ClientMsg::Ban`],
    /// [`ClientMsg::Mode`], [`ClientMsg::Sessions`], ...). Its answer comes as
    /// [`Event::Server`] (a [`ServerMsg::Mod`] in the room, [`ServerMsg::Sessions`]) or as
    /// [`Event::Error`]. A `say` or `hello` is not one: use [`Session::say`].
    pub fn moderate(&mut self, m: ClientMsg) {
        if matches!(m, ClientMsg::Say { .. } | ClientMsg::Hello { .. }) {
            debug!("not a moderation request; dropped");
            return;
        }
        self.unsent.push_back(m);
    }

    /// Edits, deletes or reacts to a message ([`ClientMsg::Edit`], [`ClientMsg::Delete`],
    /// [`ClientMsg::React`], [`ClientMsg::Unreact`]). What it did comes as [`Event::Server`]
    /// ([`ServerMsg::Edited`], [`ServerMsg::Deleted`], [`ServerMsg::Reaction`], to every
    /// member), or as [`Event::Error`].
    pub fn amend(&mut self, m: ClientMsg) {
        if !matches!(
            m,
            ClientMsg::Edit { .. }
                | ClientMsg::Delete { .. }
                | ClientMsg::React(_)
                | ClientMsg::Unreact(_)
        ) {
            debug!("not an edit, deletion or reaction; dropped");
            return;
        }
        self.unsent.push_back(m);
    }

    /// Tells the others in a room (`room`) or a DM (`to`) that this user is typing. Sent only
    /// while the session is up (a notice that waited would be stale), and at most once every
    /// [`crate::wire::TYPING_INTERVAL_MS`] per conversation, as the server forwards no more.
    pub fn typing(&mut self, now: Instant, room: Option<String>, to: Option<String>) {
        if !self.up {
            return;
        }
        let conv = room.clone().or_else(|| to.clone()).unwrap_or_default();
        let due = self.typing_sent.get(&conv).is_none_or(|&at| {
            now.saturating_duration_since(at)
                >= Duration::from_millis(crate::wire::TYPING_INTERVAL_MS as u64)
        });
        if !due {
            return;
        }
        if self.typing_sent.len() >= 64 {
            self.typing_sent.clear();
        }
        self.typing_sent.insert(conv, now);
        self.unsent.push_back(ClientMsg::Typing { room, to });
    }

    /// Asks the server to introduce this session to a session of `nick` (the rendezvous of
    /// `chirp peer --via`), listing our `local` addresses as further candidates. The answer
    /// comes as [`Event::Server`] with [`ServerMsg::Meet`] once `nick` has asked for us too
    /// (with [`ServerMsg::MeetWait`] until then); requests wait, like every other, for
    /// `welcome`. `relay_only`: the server gives `nick` no address of ours, and the two
    /// connect through its relay.
    pub fn meet(&mut self, nick: String, local: Vec<std::net::SocketAddr>, relay_only: bool) {
        self.unsent.push_back(ClientMsg::Meet {
            nick,
            local,
            relay_only,
        });
    }

    /// Offers a file to `to` (a DM file transfer, PROTOCOL.md "Files between users"): only
    /// its description goes to the server. The answer comes as [`Event::Server`] with
    /// [`ServerMsg::FileAnswer`], or [`ServerMsg::FileRefused`] if the server did not pass it
    /// on (`to` offline, the file over the server's limit).
    pub fn file_offer(&mut self, to: String, id: u64, name: String, size: u64, hash: String) {
        self.unsent.push_back(ClientMsg::FileOffer {
            to,
            id,
            name,
            size,
            hash,
        });
    }

    /// Answers `to`'s file offer `id` (a [`ServerMsg::FileOffer`]).
    pub fn file_answer(&mut self, to: String, id: u64, accept: bool) {
        self.unsent
            .push_back(ClientMsg::FileAnswer { to, id, accept });
    }

    /// Leaves a room.
    pub fn part(&mut self, room: String) {
        self.unsent.push_back(ClientMsg::Part { room });
    }

    /// Changes nick.
    pub fn nick(&mut self, nick: String) {
        self.unsent.push_back(ClientMsg::Nick { nick });
    }

    /// Sets a room's topic.
    pub fn topic(&mut self, room: String, topic: String) {
        self.unsent.push_back(ClientMsg::Topic { room, topic });
    }

    /// Lists rooms.
    pub fn list(&mut self) {
        self.unsent.push_back(ClientMsg::List);
    }

    /// Lists a room's members.
    pub fn who(&mut self, room: String) {
        self.unsent.push_back(ClientMsg::Who { room });
    }

    /// Asks for `limit` messages before `before` in a room or DM conversation. Returns the
    /// request's id, which the `history_end` closing its page carries.
    pub fn history(&mut self, target: Target, before: Option<u64>, limit: u32) -> u64 {
        let id = self.next_history;
        self.next_history += 1;
        let (room, with) = match target {
            Target::Room(r) => (Some(r), None),
            Target::Nick(n) => (None, Some(n)),
        };
        self.unsent.push_back(ClientMsg::History {
            id: Some(id),
            room,
            with,
            before,
            limit,
        });
        id
    }

    /// Tells the server this user has read `conv` up to `id`: its read marker there moves
    /// forward, and every session of the user gets [`ServerMsg::Marker`] (as
    /// [`Event::Server`]).
    pub fn read(&mut self, conv: String, id: u64) {
        self.unsent.push_back(ClientMsg::Read { conv, id });
    }

    /// Searches the stored history of a room or DM conversation for `q` (words), newest
    /// first, `limit` at most, below id `before`. Returns the request's id, which the
    /// [`ServerMsg::SearchResults`] answering it carries (as [`Event::Server`]).
    pub fn search(&mut self, target: Target, q: String, before: Option<u64>, limit: u32) -> u64 {
        let id = self.next_history;
        self.next_history += 1;
        let (room, with) = match target {
            Target::Room(r) => (Some(r), None),
            Target::Nick(n) => (None, Some(n)),
        };
        self.unsent.push_back(ClientMsg::Search {
            id: Some(id),
            room,
            with,
            q,
            before,
            limit,
        });
        id
    }

    /// Asks for link statistics ([`Event::Stats`]).
    pub fn stats(&mut self) {
        match self.conn.filter(|_| self.up) {
            Some(conn) => self.io.push_back(Io::Stats { conn }),
            None => self.events.push_back(Event::Stats(None)),
        }
    }

    /// Finishes: waits for every acknowledgement, then closes ([`Event::Finished`]).
    pub fn finish(&mut self, _now: Instant) {
        self.finishing = true;
        self.check_finished();
    }

    // ----- answers from the driver -----

    /// The answer to [`Io::Connect`].
    pub fn connect_result<E: std::fmt::Display>(
        &mut self,
        now: Instant,
        result: Result<ConnectionHandle, E>,
    ) {
        self.connecting = false;
        if self.ended {
            if let Ok(conn) = result {
                self.io.push_back(Io::Close {
                    conn,
                    reason: "bye",
                });
            }
            return;
        }
        match result {
            Ok(conn) => {
                self.conn = Some(conn);
                self.up = false;
                self.blocked = false;
                self.hello_due = false;
            }
            Err(e) => {
                self.down_since.get_or_insert(now);
                self.servers.refused = 0;
                let (server, next) = self.servers.advance();
                let retry_in = self.backoff(now);
                self.events.push_back(Event::Disconnected {
                    reason: format!("cannot connect: {e}"),
                    retry_in,
                    server,
                    next,
                });
            }
        }
    }

    /// The answer to [`Io::Send`].
    pub fn send_result(
        &mut self,
        _now: Instant,
        conn: ConnectionHandle,
        result: Result<(), SendError>,
    ) {
        let Some(what) = self.in_driver.take() else {
            return;
        };
        let current = Some(conn) == self.conn;
        match (what, result) {
            (_, Ok(())) => {}
            (InDriver::Hello, Err(e)) => {
                // The connection is going away; its `Closed` brings the reconnect.
                debug!(error = %e, "hello not sent");
            }
            (InDriver::Request(m), Err(_)) if !current => {
                // An old connection: a `say` is queued again from `pending` already; anything
                // else goes again on the next connection.
                if !matches!(m, ClientMsg::Say { .. }) {
                    self.unsent.push_front(m);
                }
            }
            (InDriver::Request(m), Err(e @ SendError::Write(WriteError::TooLarge { .. }))) => {
                // It can never go: say so and go on.
                self.drop_request(m, "not_sent", &format!("not sent: {e}"));
            }
            (InDriver::Request(m), Err(SendError::Write(WriteError::Blocked))) => {
                self.unsent.push_front(m);
                self.blocked = true;
            }
            (InDriver::Request(m), Err(SendError::Closed | SendError::UnknownConnection)) => {
                // The connection is going away and its `Closed` is on its way: nothing more
                // goes into it, and this request goes again on the next one (a `say` from
                // `pending`).
                self.unsent.push_front(m);
                self.blocked = true;
            }
        }
    }

    /// The answer to [`Io::CheckKey`]: `Err` carries what to tell the user.
    pub fn key_verdict(
        &mut self,
        _now: Instant,
        conn: ConnectionHandle,
        verdict: Result<(), String>,
    ) {
        let ours = Some(conn) == self.conn;
        let accept = ours && verdict.is_ok();
        self.io.push_back(Io::VerifyKey { conn, accept });
        if let (true, Err(msg)) = (ours, verdict) {
            self.conn = None;
            self.end(Event::Fatal(msg));
        }
    }

    /// The answer to [`Io::Stats`].
    pub fn stats_result(&mut self, stats: Option<ConnectionStats>) {
        self.events.push_back(Event::Stats(stats));
    }

    // ----- transport and time -----

    /// Takes one event of the transport endpoint.
    pub fn handle_transport(&mut self, now: Instant, ev: chirp_proto::Event) {
        use chirp_proto::Event as T;
        if self.ended {
            return;
        }
        match ev {
            T::VerifyKey {
                conn, remote_key, ..
            } => {
                if Some(conn) == self.conn && self.config.server_key_check.is_some() {
                    self.io.push_back(Io::CheckKey {
                        conn,
                        server: self.servers.current(),
                        key: remote_key,
                    });
                } else {
                    let accept = Some(conn) == self.conn;
                    self.io.push_back(Io::VerifyKey { conn, accept });
                }
            }
            T::Connected {
                conn, remote_key, ..
            } if Some(conn) == self.conn => {
                self.events.push_back(Event::Connected {
                    server: self.servers.current(),
                    server_key: remote_key,
                });
                self.hello_due = true;
            }
            T::Message { conn, data } if Some(conn) == self.conn => {
                match ServerMsg::decode(&data) {
                    Ok(m) => self.on_server(now, m),
                    // A newer server's message this version does not know is skipped
                    // (PROTOCOL.md, "Compatibility"): nothing else depends on it.
                    Err(e) => debug!(error = %e, "undecodable message from the server; skipped"),
                }
            }
            T::Writable { conn } if Some(conn) == self.conn => self.blocked = false,
            T::Closed { conn, reason, .. } if Some(conn) == self.conn => {
                self.on_closed(now, &reason)
            }
            _ => {}
        }
    }

    /// When [`Session::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let pace_at = match &self.pace {
            Some(p) if self.can_send() && self.config.pace && !self.unsent.is_empty() => {
                Some(p.ready_at(p.last))
            }
            _ => None,
        };
        [pace_at, self.reconnect_at, self.give_up_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if self.give_up_at().is_some_and(|g| g <= now) {
            self.end(Event::Finished {
                undelivered: self.pending.len(),
            });
            return;
        }
        if self.reconnect_at.is_some_and(|r| r <= now) && !self.connecting && self.conn.is_none() {
            self.reconnect_at = None;
            self.attempt += 1;
            self.connecting = true;
            self.events.push_back(Event::Connecting {
                attempt: self.attempt,
            });
            self.io.push_back(Io::Connect {
                server: self.servers.current(),
            });
        }
    }

    /// The next transport request. Call until `None` after every input, answering each.
    #[must_use]
    pub fn poll_io(&mut self, now: Instant) -> Option<Io> {
        if let Some(io) = self.io.pop_front() {
            return Some(io);
        }
        if self.in_driver.is_some() {
            return None;
        }
        let conn = self.conn?;
        if self.hello_due {
            self.hello_due = false;
            self.in_driver = Some(InDriver::Hello);
            return Some(Io::Send {
                conn,
                data: Bytes::from(self.hello().encode()),
            });
        }
        if !self.can_send() {
            return None;
        }
        if self.unsent.is_empty() {
            if std::mem::take(&mut self.pacing_reported) {
                self.events.push_back(Event::Pacing {
                    held: 0,
                    next_in: Duration::ZERO,
                    per_sec: self.pace_rate(),
                });
            }
            return None;
        }
        if self.config.pace {
            if let Some(p) = &mut self.pace {
                p.refill(now);
                let at = p.ready_at(now);
                if at > now {
                    if !self.pacing_reported {
                        self.pacing_reported = true;
                        let (held, per_sec) = (self.unsent.len(), self.pace_rate());
                        self.events.push_back(Event::Pacing {
                            held,
                            next_in: at - now,
                            per_sec,
                        });
                    }
                    return None;
                }
                p.milli -= 1000;
            }
        }
        let m = self.unsent.pop_front()?;
        let data = Bytes::from(m.encode());
        self.in_driver = Some(InDriver::Request(m));
        Some(Io::Send { conn, data })
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- inside -----

    fn can_send(&self) -> bool {
        self.conn.is_some() && self.up && !self.blocked && self.in_driver.is_none()
    }

    fn pace_rate(&self) -> u32 {
        self.pace
            .as_ref()
            .map_or(0, |p| u32::try_from(p.per_sec).unwrap_or(u32::MAX))
    }

    fn give_up_at(&self) -> Option<Instant> {
        if self.finishing {
            self.down_since.map(|d| d + self.config.give_up_after)
        } else {
            None
        }
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        // ±25 %, so that many clients of a restarted server do not come back in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        d.mul_f64(0.75 + (self.rng % 501) as f64 / 1000.0)
    }

    fn backoff(&mut self, now: Instant) -> Duration {
        let exp = self.attempt.saturating_sub(1).min(16);
        let d = self
            .config
            .backoff_min
            .saturating_mul(1 << exp)
            .min(self.config.backoff_max);
        let d = self.jitter(d);
        self.reconnect_at = Some(now + d);
        d
    }

    fn end(&mut self, ev: Event) {
        if let Some(conn) = self.conn.take() {
            self.io.push_back(Io::Close {
                conn,
                reason: "bye",
            });
        }
        self.events.push_back(ev);
        self.ended = true;
        self.reconnect_at = None;
    }

    fn check_finished(&mut self) {
        if self.finishing
            && !self.ended
            && self.pending.is_empty()
            && self.unsent.is_empty()
            && self.in_driver.is_none()
        {
            self.end(Event::Finished { undelivered: 0 });
        }
    }

    /// A request that can never go: refused (a `say`) or reported.
    fn drop_request(&mut self, m: ClientMsg, code: &str, why: &str) {
        match m {
            ClientMsg::Say { c, .. } => {
                self.pending.remove(&c);
                self.events.push_back(Event::Refused {
                    c,
                    code: code.to_owned(),
                    message: why.to_owned(),
                });
            }
            _ => self.events.push_back(Event::Error {
                code: code.to_owned(),
                message: why.to_owned(),
            }),
        }
        self.check_finished();
    }

    fn on_closed(&mut self, now: Instant, reason: &CloseReason) {
        self.conn = None;
        self.up = false;
        self.hello_due = false;
        self.blocked = false;
        self.down_since.get_or_insert(now);
        let text = close_text(reason);
        if matches!(reason, CloseReason::Refused { .. }) && !self.ever_up {
            // Refused on the very first connection (the server is full): say so at once
            // rather than retry in silence; a session that was up keeps trying instead. With
            // several addresses, the others are tried first: a cluster's other nodes may have
            // room.
            self.servers.refused += 1;
            if self.servers.refused >= self.servers.list.len() {
                let text = if self.servers.list.len() > 1 {
                    format!("{text} (and so did every other address given)")
                } else {
                    text
                };
                self.end(Event::Fatal(text));
                return;
            }
        } else {
            self.servers.refused = 0;
        }
        // Everything not acknowledged goes again on the next connection, pending messages
        // first, in their original order. (A `say` the driver still holds is among them; its
        // late `send_result` is then ignored.)
        let others: Vec<ClientMsg> = self
            .unsent
            .drain(..)
            .filter(|m| !matches!(m, ClientMsg::Say { .. }))
            .collect();
        self.unsent = self
            .pending
            .values()
            .map(|p| p.say.clone())
            .chain(others)
            .collect();
        // The lines are still waiting, now for the connection: `Disconnected` says so, and
        // pacing is reported afresh once they can go again.
        self.pacing_reported = false;
        // Whatever ended it, this address just failed us: the next attempt goes to the next
        // one (the same one when there is only one).
        let (server, next) = self.servers.advance();
        let retry_in = self.backoff(now);
        self.events.push_back(Event::Disconnected {
            reason: text,
            retry_in,
            server,
            next,
        });
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
                key: self.room_keys.get(r).cloned(),
            })
            .collect();
        for r in &self.first_rooms {
            if !self.rooms.contains(&crate::names::fold(r)) {
                rooms.push(JoinReq {
                    room: r.clone(),
                    after: None,
                    key: None,
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
            echo: false,
        }
    }

    /// Shows a message once: a non-history one at or below the highest id seen in its
    /// conversation is a duplicate.
    fn show(&mut self, m: Msg) {
        // Looked up before inserting: the conversation's name is copied once, not per message.
        if m.conv.starts_with('@') {
            match self.dm_recent.get_mut(&m.conv) {
                Some(t) => *t = (*t).max(m.ts),
                None => {
                    self.dm_recent.insert(m.conv.clone(), m.ts);
                }
            }
        }
        if self.seen(&m.conv, m.id, m.history) {
            self.events.push_back(Event::Message(m));
        }
    }

    /// Records that `id` of `conv` arrived; false if it is a duplicate (not history, and at or
    /// below the highest id seen there).
    fn seen(&mut self, conv: &str, id: u64, history: bool) -> bool {
        match self.last_seen.get_mut(conv) {
            Some(seen) if !history && id <= *seen => {
                debug!(conv, id, "duplicate dropped");
                false
            }
            Some(seen) => {
                *seen = (*seen).max(id);
                true
            }
            None => {
                self.last_seen.insert(conv.to_owned(), id);
                true
            }
        }
    }

    /// Our own copy of a room message, rebuilt from its `say` and `ack` (the server sends the
    /// ack in its place, `echo: false` in `hello`). `None` for a DM: its own copy always comes.
    fn own_copy(&self, said: ClientMsg, c: u64, conv: &str, id: u64, ts: i64) -> Option<Msg> {
        let ClientMsg::Say {
            room: Some(_),
            text,
            action,
            ..
        } = said
        else {
            return None;
        };
        Some(Msg {
            conv: conv.to_owned(),
            room: Some(conv.to_owned()),
            id,
            ts,
            from: self.nick.clone(),
            to: None,
            text,
            action,
            history: false,
            c: Some(c),
            ..Msg::default()
        })
    }

    /// The server's largest text: texts it will refuse for their length are refused now:
    /// every pending one (after `welcome`, all are sent again), or only those not sent yet
    /// (`unsent_only`: the server answers for the others). Returns it.
    fn set_max_text(&mut self, max_text: u32, unsent_only: bool) -> usize {
        let max_text = usize::try_from(max_text).unwrap_or(usize::MAX);
        self.max_text = Some(max_text);
        let too_long: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !unsent_only || self.unsent.contains(&p.say))
            .filter_map(|(c, p)| match &p.say {
                ClientMsg::Say { text, .. } if text.len() > max_text => Some(*c),
                _ => None,
            })
            .collect();
        for c in too_long {
            if let Some(m) = self.pending.get(&c).map(|p| p.say.clone()) {
                self.unsent.retain(|u| *u != m);
                self.drop_request(
                    m,
                    code::BAD_TEXT,
                    &format!(
                        "message too long: the server takes at most {max_text} bytes (not sent)"
                    ),
                );
            }
        }
        max_text
    }

    fn on_server(&mut self, now: Instant, m: ServerMsg) {
        match m {
            ServerMsg::Welcome {
                nick,
                burst,
                per_sec,
                max_text,
                ..
            } => {
                self.up = true;
                self.ever_up = true;
                self.attempt = 0;
                self.servers.refused = 0;
                self.down_since = None;
                self.first_rooms.clear();
                self.nick = nick.clone();
                self.pace = Some(Pace {
                    milli: u64::from(burst) * 1000,
                    cap: u64::from(burst) * 1000,
                    per_sec: u64::from(per_sec),
                    last: now,
                });
                let max_text = self.set_max_text(max_text, false);
                self.events.push_back(Event::Welcome { nick, max_text });
            }
            // The operator changed the limits: pace to the new ones from now on, keeping what
            // the bucket holds (up to the new burst).
            ServerMsg::Limits {
                burst,
                per_sec,
                max_text,
            } => {
                // (The application hears of it too: an input line may check lengths.)
                if let Some(p) = &mut self.pace {
                    p.refill(now);
                    p.cap = u64::from(burst) * 1000;
                    p.milli = p.milli.min(p.cap);
                    p.per_sec = u64::from(per_sec);
                }
                self.set_max_text(max_text, true);
                self.events.push_back(Event::Server(m));
            }
            ServerMsg::Error { code, message, .. } if !self.up => {
                // Refused before welcome: retrying would only be refused again.
                let _ = code;
                self.end(Event::Fatal(message));
            }
            ServerMsg::Error {
                c: Some(c),
                code,
                message,
            } => {
                self.pending.remove(&c);
                self.events.push_back(Event::Refused { c, code, message });
                self.check_finished();
            }
            ServerMsg::Error {
                c: None,
                code,
                message,
            } => self.events.push_back(Event::Error { code, message }),
            ServerMsg::Ack { c, conv, id, ts } => {
                if let Some(p) = self.pending.remove(&c) {
                    if !p.echoed
                        && let Some(own) = self.own_copy(p.say, c, &conv, id, ts)
                    {
                        self.show(own);
                    }
                    self.events.push_back(Event::Delivered { c, conv, id, ts });
                }
                self.check_finished();
            }
            ServerMsg::Msg(m) => {
                if let Some(p) = m.c.and_then(|c| self.pending.get_mut(&c)) {
                    p.echoed = true;
                }
                self.show(m);
            }
            ServerMsg::Joined { ref room, .. } => {
                self.rooms.insert(room.clone());
                self.events.push_back(Event::Server(m));
            }
            ServerMsg::Parted { ref room } => {
                self.rooms.remove(room);
                self.room_keys.remove(room);
                self.events.push_back(Event::Server(m));
            }
            // A room event has an id in the room's conversation, like a message: seen once,
            // and where a resume starts.
            ServerMsg::Mod(ref e) => {
                if self.seen(&e.room, e.id, e.history) {
                    self.events.push_back(Event::Server(m));
                }
            }
            // So are edits, deletions and reactions.
            ServerMsg::Edited {
                ref conv,
                id,
                history,
                ..
            }
            | ServerMsg::Deleted {
                ref conv,
                id,
                history,
                ..
            }
            | ServerMsg::Reaction {
                ref conv,
                id,
                history,
                ..
            } => {
                if self.seen(conv, id, history) {
                    self.events.push_back(Event::Server(m));
                }
            }
            ServerMsg::Nick { ref old, ref new } => {
                if crate::names::fold(old) == crate::names::fold(&self.nick) {
                    self.nick = new.clone();
                }
                self.events.push_back(Event::Server(m));
            }
            other => self.events.push_back(Event::Server(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chirp_proto::Event as T;
    use chirp_proto::wire::RefuseReason;

    /// The session alone in virtual time: its transport requests are answered here (connects
    /// succeed unless `connect_fails`, sends succeed, keys are accepted), and the server's side
    /// is whatever a test hands to [`Sim::says`] and [`Sim::lose`].
    struct Sim {
        s: Session,
        now: Instant,
        next_conn: u64,
        connect_fails: bool,
        /// Every `Io::Connect`'s address, in order.
        connects: Vec<SocketAddr>,
        /// Every request sent, with its connection.
        sent: Vec<(ConnectionHandle, ClientMsg)>,
        /// Every `Io::CheckKey`'s address.
        checks: Vec<SocketAddr>,
        events: Vec<Event>,
    }

    const A: ([u8; 4], u16) = ([10, 0, 0, 1], 7667);
    const B: ([u8; 4], u16) = ([10, 0, 0, 2], 7667);
    const C: ([u8; 4], u16) = ([10, 0, 0, 3], 7000);

    fn addr(a: ([u8; 4], u16)) -> SocketAddr {
        SocketAddr::from(a)
    }

    impl Sim {
        fn new(servers: &[([u8; 4], u16)], tweak: impl FnOnce(&mut ClientConfig)) -> Sim {
            let mut config = ClientConfig::new(addr(servers[0]), "me");
            config.alternates = servers[1..].iter().map(|&a| addr(a)).collect();
            config.rooms = vec!["#r".into()];
            tweak(&mut config);
            let now = Instant::now();
            let mut sim = Sim {
                s: Session::new(config, now, 42),
                now,
                next_conn: 0,
                connect_fails: false,
                connects: Vec::new(),
                sent: Vec::new(),
                checks: Vec::new(),
                events: Vec::new(),
            };
            sim.wait();
            sim
        }

        /// Answers every transport request, then collects the events.
        fn pump(&mut self) {
            let now = self.now;
            while let Some(io) = self.s.poll_io(now) {
                match io {
                    Io::Connect { server } => {
                        self.connects.push(server);
                        if self.connect_fails {
                            self.s
                                .connect_result(now, Err::<ConnectionHandle, _>("no route"));
                        } else {
                            self.next_conn += 1;
                            self.s.connect_result(
                                now,
                                Ok::<_, &str>(ConnectionHandle(self.next_conn)),
                            );
                        }
                    }
                    Io::Send { conn, data } => {
                        let m = ClientMsg::decode(&data).expect("the session sends valid requests");
                        self.sent.push((conn, m));
                        self.s.send_result(now, conn, Ok(()));
                    }
                    Io::CheckKey { conn, server, .. } => {
                        self.checks.push(server);
                        self.s.key_verdict(now, conn, Ok(()));
                    }
                    Io::Close { .. } | Io::VerifyKey { .. } | Io::Stats { .. } => {}
                }
            }
            while let Some(e) = self.s.poll_event() {
                self.events.push(e);
            }
        }

        /// Jumps the clock to the session's next deadline and fires it.
        fn wait(&mut self) {
            let at = self.s.poll_timeout().expect("the session has a deadline");
            assert!(at >= self.now, "a deadline in the past: a busy loop");
            self.now = at;
            self.s.handle_timeout(at);
            self.pump();
        }

        fn conn(&self) -> ConnectionHandle {
            self.s.connection().expect("a connection")
        }

        /// The handshake with the current address completes (its key is checked when a check
        /// is configured), and the server welcomes us.
        fn up(&mut self) {
            let (conn, remote) = (self.conn(), self.s.server());
            if self.s.config().server_key_check.is_some() {
                self.s.handle_transport(
                    self.now,
                    T::VerifyKey {
                        conn,
                        remote,
                        incoming: false,
                        remote_key: [7; 32],
                    },
                );
                self.pump();
            }
            self.s.handle_transport(
                self.now,
                T::Connected {
                    conn,
                    remote,
                    incoming: false,
                    remote_key: [7; 32],
                },
            );
            self.pump();
            self.says(ServerMsg::Welcome {
                v: wire::VERSION,
                nick: "me".into(),
                burst: 10,
                per_sec: 5,
                max_text: 4096,
            });
        }

        /// The server of the current connection says `m`.
        /// The server says this session is in `#r`, alone.
        fn joined_r(&mut self) {
            self.says(ServerMsg::Joined {
                room: "#r".into(),
                topic: String::new(),
                members: vec!["me".into()],
                more: 0,
            });
        }

        fn says(&mut self, m: ServerMsg) {
            let data = Bytes::from(m.encode());
            self.s.handle_transport(
                self.now,
                T::Message {
                    conn: self.conn(),
                    data,
                },
            );
            self.pump();
        }

        /// The current connection ends for `reason`.
        fn lose(&mut self, reason: CloseReason) {
            let conn = self.conn();
            self.s.handle_transport(
                self.now,
                T::Closed {
                    conn,
                    reason,
                    undelivered: Vec::new(),
                },
            );
            self.pump();
        }

        /// The `Disconnected` events so far: (lost, next, retry in).
        fn disconnects(&self) -> Vec<(SocketAddr, SocketAddr, Duration)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    Event::Disconnected {
                        server,
                        next,
                        retry_in,
                        ..
                    } => Some((*server, *next, *retry_in)),
                    _ => None,
                })
                .collect()
        }

        fn hellos(&self) -> Vec<(ConnectionHandle, ClientMsg)> {
            self.sent
                .iter()
                .filter(|(_, m)| matches!(m, ClientMsg::Hello { .. }))
                .cloned()
                .collect()
        }
    }

    fn room_msg(id: u64, text: &str) -> ServerMsg {
        ServerMsg::Msg(Msg {
            conv: "#r".into(),
            room: Some("#r".into()),
            id,
            ts: 1,
            from: "other".into(),
            to: None,
            text: text.into(),
            action: false,
            history: false,
            c: None,
            ..Msg::default()
        })
    }

    fn shown(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.text.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_address_is_tried_first_and_a_lost_one_moves_to_the_next_round_and_round() {
        let mut sim = Sim::new(&[A, B, C], |_| {});
        assert_eq!(sim.connects, vec![addr(A)]);
        assert_eq!(sim.s.servers(), &[addr(A), addr(B), addr(C)]);
        sim.up();
        let lost_at = sim.now;
        sim.lose(CloseReason::IdleTimeout);
        // Connected once and lost once: the next address, after the usual first backoff.
        let d = sim.disconnects();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].0, d[0].1), (addr(A), addr(B)));
        assert_eq!(sim.s.server(), addr(B));
        // B cannot even be dialled, C does not answer: round to A again, backing off more
        // each time since no attempt got as far as `welcome`.
        sim.connect_fails = true;
        sim.wait();
        assert_eq!(sim.connects, vec![addr(A), addr(B)]);
        assert_eq!(sim.now - lost_at, d[0].2, "the backoff the event announced");
        assert!(d[0].2 <= Duration::from_millis(313), "{:?}", d[0].2);
        sim.connect_fails = false;
        sim.wait();
        assert_eq!(sim.connects, vec![addr(A), addr(B), addr(C)]);
        sim.lose(CloseReason::IdleTimeout);
        sim.wait();
        assert_eq!(sim.connects, vec![addr(A), addr(B), addr(C), addr(A)]);
        let d = sim.disconnects();
        let hops: Vec<_> = d.iter().map(|&(lost, next, _)| (lost, next)).collect();
        assert_eq!(
            hops,
            vec![(addr(A), addr(B)), (addr(B), addr(C)), (addr(C), addr(A)),]
        );
        // (The first two are both the first step: the loss of a working connection starts
        // the count afresh.)
        assert!(
            d[1].2 <= Duration::from_millis(313) && d[2].2 > d[1].2,
            "{d:?}"
        );
        let attempts: Vec<u32> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Connecting { attempt } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts, vec![1, 1, 2, 3]);
        // A is back: the backoff starts over.
        sim.up();
        assert!(
            sim.events
                .iter()
                .any(|e| matches!(e, Event::Connected { server, .. } if *server == addr(A)))
        );
        sim.lose(CloseReason::Reset);
        assert!(
            sim.disconnects()
                .last()
                .is_some_and(|&(l, n, r)| l == addr(A)
                    && n == addr(B)
                    && r <= Duration::from_millis(313))
        );
    }

    #[test]
    fn a_single_address_is_retried_in_place() {
        let mut sim = Sim::new(&[A], |_| {});
        sim.up();
        sim.lose(CloseReason::IdleTimeout);
        sim.wait();
        sim.up();
        assert_eq!(sim.connects, vec![addr(A), addr(A)]);
        let d = sim.disconnects();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].0, d[0].1), (addr(A), addr(A)));
    }

    #[test]
    fn after_failover_the_next_address_resumes_from_the_last_ids_and_nothing_shows_twice() {
        let mut sim = Sim::new(&[A, B], |_| {});
        sim.up();
        sim.joined_r();
        sim.says(room_msg(4, "four"));
        sim.says(room_msg(5, "five"));
        // A line typed as A dies: it goes again to B, with the same `c`.
        let c = sim
            .s
            .say(sim.now, Target::Room("#r".into()), "typed".into(), false);
        sim.pump();
        sim.lose(CloseReason::IdleTimeout);
        sim.wait();
        sim.up();
        let hellos = sim.hellos();
        assert_eq!(hellos.len(), 2);
        assert_ne!(hellos[0].0, hellos[1].0, "a new connection");
        let ClientMsg::Hello { rooms, client, .. } = &hellos[1].1 else {
            unreachable!("filtered on Hello")
        };
        assert_eq!(
            rooms,
            &vec![JoinReq {
                room: "#r".into(),
                after: Some(5),
                key: None,
            }]
        );
        let ClientMsg::Hello { client: first, .. } = &hellos[0].1 else {
            unreachable!("filtered on Hello")
        };
        assert_eq!(
            client, first,
            "the same client id, so B's store knows the resent line"
        );
        let says: Vec<(ConnectionHandle, u64)> = sim
            .sent
            .iter()
            .filter_map(|(conn, m)| match m {
                ClientMsg::Say { c, .. } => Some((*conn, *c)),
                _ => None,
            })
            .collect();
        assert_eq!(says, vec![(hellos[0].0, c), (hellos[1].0, c)]);
        // B (which shares A's store) sends what it thinks we lack, overlapping: shown once.
        sim.says(room_msg(5, "five"));
        sim.says(room_msg(6, "six"));
        sim.says(ServerMsg::Ack {
            c,
            conv: "#r".into(),
            id: 7,
            ts: 2,
        });
        assert_eq!(shown(&sim.events), vec!["four", "five", "six", "typed"]);
        assert_eq!(
            sim.events
                .iter()
                .filter(|e| matches!(e, Event::Delivered { .. }))
                .count(),
            1
        );
        let connected: Vec<SocketAddr> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Connected { server, .. } => Some(*server),
                _ => None,
            })
            .collect();
        assert_eq!(connected, vec![addr(A), addr(B)]);
    }

    #[test]
    fn the_key_check_is_told_which_address_it_judges() {
        let check: KeyCheck = Arc::new(|_, _| Ok(()));
        let mut sim = Sim::new(&[A, B], |c| c.server_key_check = Some(check));
        sim.up();
        sim.lose(CloseReason::PeerClosed {
            code: 0,
            reason: "shutting down".into(),
        });
        sim.wait();
        sim.up();
        assert_eq!(sim.checks, vec![addr(A), addr(B)]);
    }

    #[test]
    fn a_refusal_at_first_contact_moves_on_and_is_fatal_once_every_address_refused() {
        let full = || CloseReason::Refused {
            reason: RefuseReason::ServerFull,
        };
        // One address: fatal at once, as before.
        let mut sim = Sim::new(&[A], |_| {});
        sim.lose(full());
        assert!(sim.s.is_ended());
        assert!(matches!(sim.events.last(), Some(Event::Fatal(m)) if !m.contains("every other")));
        // Two: B is tried; refused too, fatal, saying so.
        let mut sim = Sim::new(&[A, B], |_| {});
        sim.lose(full());
        assert!(!sim.s.is_ended());
        sim.wait();
        assert_eq!(sim.connects, vec![addr(A), addr(B)]);
        sim.lose(full());
        assert!(sim.s.is_ended());
        assert!(
            matches!(sim.events.last(), Some(Event::Fatal(m)) if m.contains("every other address")),
            "{:?}",
            sim.events.last()
        );
        // A refusal, then a node that does not answer, then a refusal: not every address in a
        // row, so it goes on trying.
        let mut sim = Sim::new(&[A, B], |_| {});
        sim.lose(full());
        sim.wait();
        sim.lose(CloseReason::IdleTimeout);
        sim.wait();
        sim.lose(full());
        assert!(!sim.s.is_ended());
        sim.wait();
        sim.up();
        assert!(
            sim.events
                .iter()
                .any(|e| matches!(e, Event::Welcome { .. }))
        );
    }

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

    /// `limits` mid-session: the texts not sent yet that are now too long are refused (those
    /// in flight are the server's to answer), and pacing follows the new rate at once.
    #[test]
    fn new_limits_refuse_unsent_texts_now_too_long_and_change_the_pace() {
        let mut sim = Sim::new(&[A], |_| {});
        sim.up();
        sim.joined_r();
        let long = "x".repeat(100);
        let cs: Vec<u64> = (0..12)
            .map(|_| {
                sim.s
                    .say(sim.now, Target::Room("#r".into()), long.clone(), false)
            })
            .collect();
        sim.pump();
        let says = |sim: &Sim| {
            sim.sent
                .iter()
                .filter(|(_, m)| matches!(m, ClientMsg::Say { .. }))
                .count()
        };
        assert_eq!(says(&sim), 10, "the burst of 10 went, 2 wait");
        sim.says(ServerMsg::Limits {
            burst: 2,
            per_sec: 1,
            max_text: 50,
        });
        let refused: Vec<u64> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Refused { c, code, .. } if code == code::BAD_TEXT => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(refused, cs[10..].to_vec(), "only the unsent ones");
        assert!(
            sim.events
                .iter()
                .any(|e| matches!(e, Event::Server(ServerMsg::Limits { burst: 2, .. }))),
            "the application hears of it"
        );
        // 1 a second now: three short lines go one second apart (the bucket is empty).
        for t in ["a", "b", "c"] {
            sim.s
                .say(sim.now, Target::Room("#r".into()), t.into(), false);
        }
        sim.pump();
        let start = sim.now;
        let mut at = Vec::new();
        while says(&sim) < 13 {
            let before = says(&sim);
            sim.wait();
            if says(&sim) > before {
                at.push(sim.now - start);
            }
            assert!(sim.now - start < Duration::from_secs(10), "stalled");
        }
        assert_eq!(at.len(), 3, "{at:?}");
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(995), "{at:?}");
        }
    }

    /// Issue 19: an older client skips a server message it does not know; a room event
    /// (`mod`) is shown once and counts for the resume like a message; a room key given to
    /// `join` is given again when the session rejoins.
    /// An edit, deletion or reaction counts for the resume like a message and is shown once;
    /// a client that does not know a server message (as one from before these did not
    /// know them) skips it and shows what follows.
    #[test]
    fn changes_count_for_the_resume_and_unknown_ones_are_skipped() {
        let mut sim = Sim::new(&[A], |_| {});
        sim.up();
        sim.joined_r();
        sim.says(room_msg(3, "three"));
        let edited = ServerMsg::Edited {
            conv: "#r".into(),
            room: Some("#r".into()),
            id: 4,
            ts: 1,
            by: "other".into(),
            target: 3,
            text: "three!".into(),
            history: false,
        };
        sim.says(edited.clone());
        sim.says(edited);
        // What a later server might send about a message: not known here, skipped.
        let conn = sim.conn();
        let future =
            br##"{"t":"pinned","conv":"#r","room":"#r","id":5,"ts":1,"by":"x","target":3}"##;
        sim.s.handle_transport(
            sim.now,
            T::Message {
                conn,
                data: Bytes::from_static(future),
            },
        );
        sim.pump();
        // A copy of a message with fields this client does not know is still shown.
        let unknown_fields = br##"{"t":"msg","conv":"#r","room":"#r","id":6,"ts":1,"from":"x","text":"six","edited":true,"pinned":true,"thread":{"root":3}}"##;
        sim.s.handle_transport(
            sim.now,
            T::Message {
                conn,
                data: Bytes::from_static(unknown_fields),
            },
        );
        sim.pump();
        sim.says(ServerMsg::Typing {
            conv: "#r".into(),
            room: Some("#r".into()),
            from: "x".into(),
        });
        let changes = sim
            .events
            .iter()
            .filter(|e| matches!(e, Event::Server(ServerMsg::Edited { .. })))
            .count();
        assert_eq!(changes, 1, "a repeated event is shown once");
        assert_eq!(shown(&sim.events), vec!["three", "six"]);
        assert!(
            sim.events
                .iter()
                .any(|e| matches!(e, Event::Server(ServerMsg::Typing { .. })))
        );
        assert_eq!(sim.s.last_seen.get("#r"), Some(&6));
    }

    #[test]
    fn unknown_server_messages_are_skipped_and_room_events_count_for_the_resume() {
        let mut sim = Sim::new(&[A], |_| {});
        sim.up();
        sim.joined_r();
        sim.says(room_msg(3, "three"));
        let conn = sim.conn();
        for raw in [
            &br##"{"t":"a_message_from_the_future","room":"#r","id":99}"##[..],
            br##"{"t":"msg","conv":"#r"}"##,
        ] {
            sim.s.handle_transport(
                sim.now,
                T::Message {
                    conn,
                    data: Bytes::from_static(raw),
                },
            );
            sim.pump();
        }
        sim.says(room_msg(4, "four"));
        assert_eq!(shown(&sim.events), vec!["three", "four"]);
        let ev = wire::ModEvent {
            room: "#r".into(),
            id: 5,
            ts: 1,
            by: "op".into(),
            action: "kick".into(),
            target: Some("troll".into()),
            arg: None,
            history: false,
        };
        sim.says(ServerMsg::Mod(ev.clone()));
        sim.says(ServerMsg::Mod(ev.clone()));
        let mods = sim
            .events
            .iter()
            .filter(|e| matches!(e, Event::Server(ServerMsg::Mod(_))))
            .count();
        assert_eq!(mods, 1, "a repeated event is shown once");
        assert_eq!(sim.s.last_seen.get("#r"), Some(&5));
        sim.s.join_with_key("#k".into(), Some("pw".into()));
        sim.pump();
        sim.says(ServerMsg::Joined {
            room: "#k".into(),
            topic: String::new(),
            members: vec!["me".into()],
            more: 0,
        });
        sim.lose(CloseReason::IdleTimeout);
        sim.wait();
        sim.up();
        let hellos = sim.hellos();
        let ClientMsg::Hello { rooms, .. } = &hellos[1].1 else {
            unreachable!("filtered on Hello")
        };
        assert!(
            rooms.contains(&JoinReq {
                room: "#r".into(),
                after: Some(5),
                key: None,
            }),
            "{rooms:?}"
        );
        assert!(
            rooms.contains(&JoinReq {
                room: "#k".into(),
                after: None,
                key: Some("pw".into()),
            }),
            "{rooms:?}"
        );
    }
}
