//! The endpoint: one per UDP socket. It routes datagrams to connections by connection ID,
//! accepts new connections, and exposes the sans-IO interface a driver calls.
//!
//! # Driving an endpoint
//!
//! Everything happens in reaction to one of three inputs, each followed by draining output
//! (str0m's "single-mutation rule"):
//!
//! ```text
//! loop {
//!     // input: exactly one of
//!     endpoint.handle_datagram(now, from, &buf);   // a datagram arrived
//!     endpoint.handle_timeout(now);                // the deadline from poll_timeout passed
//!     endpoint.send(conn, msg) / connect / close;  // the application asked for something
//!     // then drain, in this order, until each returns None:
//!     while let Some(t) = endpoint.poll_transmit(now) { socket.send_to(&t.contents, t.destination) }
//!     while let Some(ev) = endpoint.poll_event() { /* handle; may call send() → loop again */ }
//!     let deadline = endpoint.poll_timeout();      // sleep until then or until the next input
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque, hash_map};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{Span, debug, debug_span, trace};

use crate::config::TransportConfig;
use crate::connection::{
    CloseReason, ConnEvent, Connection, HandshakeStart, PingError, PingOutcome, SendError,
};
use crate::crypto::{CookieJar, InitialKeys, hash, mac};
use crate::handshake::{Handshake, StaticSecret};
use crate::rng::Rng;
use crate::stats::{ConnectionStats, ConnectionTotals, EndpointStats, EndpointTotals, PathSample};
use crate::trace::{MAX_TRACE_QUEUE, TraceEvent, TraceRecord, Tracer};
use crate::wire::{
    ConnectionId, Frame, Frames, MIN_INITIAL_SIZE, Packet, PacketType, RESET_PACKET_LEN,
    RESET_TOKEN_LEN, RefuseReason, encode_refuse, encode_reset, encode_retry,
};

/// A RETRY token (cookie) is honoured for this long after it was issued: long enough for one
/// round trip on a bad path, short enough that a captured one is soon useless.
const TOKEN_LIFETIME_SECS: u64 = 60;
/// Stateless answers (RETRY, REFUSE, RESET) waiting to be sent. Beyond this they are dropped,
/// so a flood of INITIALs cannot grow memory: each answer is smaller than the datagram that
/// caused it, and the client simply repeats its INITIAL.
const MAX_STATELESS_QUEUE: usize = 256;
/// Stateless answers (RETRY, REFUSE, RESET) per second, after a burst of
/// [`MAX_STATELESS_QUEUE`]. Each costs hashing, sealing and a send, several times what the
/// datagram that provoked it cost its sender: without a budget, a flood of forged INITIALs or
/// of DATA for unknown connections buys the server's whole core (8 µs an INITIAL, measured
/// with `chirp bench flood`). Beyond the budget they are dropped before any cryptography, as
/// cheaply as junk; real clients repeat what was not answered. 20,000 a second is a RETRY for
/// 10,000 new sessions a second, twice the handshake rate a server is meant to sustain.
const STATELESS_PER_SEC: f64 = 20_000.0;
/// Sources tracked by the handshake rate limiter. Only cookie-validated sources enter it, so
/// spoofed addresses cannot fill it; when it is full the idlest entry is replaced.
const MAX_RATE_LIMITED_SOURCES: usize = 4096;

/// When and how fast a source may complete handshakes.
#[derive(Debug, Clone, PartialEq)]
pub struct HandshakeLimit {
    /// "Under load": the limit applies only while at least this many connections are
    /// handshaking. Below it, every validated INITIAL is served.
    pub load_threshold: usize,
    /// Handshakes a source may start at once, under load.
    pub burst: f64,
    /// ... and per second after that.
    pub per_second: f64,
}

impl Default for HandshakeLimit {
    fn default() -> Self {
        Self {
            load_threshold: 256,
            burst: 32.0,
            per_second: 16.0,
        }
    }
}

/// A source of secrets (cookie keys, path-challenge keys): BLAKE2s-MAC in counter mode under a
/// master key derived from the endpoint's static secret and the seed. Unpredictable to anyone
/// without the static secret; deterministic for a simulation that fixes both.
#[derive(Clone)]
struct Secrets {
    master: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    fn new(identity: &StaticSecret, seed: u64) -> Self {
        Self {
            master: hash(&[
                b"chirp v2 endpoint secrets",
                &identity.0,
                &seed.to_be_bytes(),
            ]),
            counter: 0,
        }
    }

    fn next(&mut self) -> [u8; 32] {
        self.counter += 1;
        mac(&self.master, &[&self.counter.to_be_bytes()])
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports for IPv4
/// peers) become plain IPv4, so that one peer always compares equal to itself. A driver whose
/// socket is IPv6 maps them back when sending.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Identifies a connection within its endpoint. Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub u64);

/// Endpoint settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Settings applied to every connection.
    pub transport: TransportConfig,
    /// Accept connections that peers open to us (a server, or a peer in peer mode).
    pub accept_incoming: bool,
    /// Most connections at once; an INITIAL beyond it is answered with a stateless REFUSE
    /// ("server full", [`RefuseReason::ServerFull`]) and counted, so the client gives up at
    /// once instead of waiting out its idle timeout.
    pub max_connections: usize,
    /// If set, accept connections only from this IP address (peer mode: only the peer may
    /// open a connection, so a stranger cannot take its place). IPv4-mapped addresses count
    /// as IPv4.
    pub accept_only_from: Option<std::net::IpAddr>,
    /// This endpoint's static key (its identity in the handshake). `None`: a fresh key drawn
    /// when the endpoint is created, which suits tests and anonymous clients.
    pub identity: Option<StaticSecret>,
    /// Per-source handshake rate limit under load.
    pub handshake_limit: HandshakeLimit,
    /// Answer a DATA packet for a connection we do not know with a stateless RESET, so that
    /// a peer of ours from before a restart learns at once that its connection is gone.
    pub stateless_reset: bool,
    /// Let the application judge every peer's static key inside the handshake: when the
    /// peer's key arrives, the handshake pauses and [`Event::VerifyKey`] asks; it goes on
    /// after [`Endpoint::accept_key`] and ends with [`CloseReason::KeyRefused`] after
    /// [`Endpoint::refuse_key`]. Until then no application data goes out or is accepted on
    /// that connection, in either role. A connection opened with
    /// [`Endpoint::connect_expecting`] and an expected key is decided by that key instead.
    /// Off (every authenticated key is accepted) suits a server that anyone may use.
    pub verify_keys: bool,
    /// Record what every connection created from now on does, packet by packet, for
    /// [`Endpoint::poll_trace`] (a qlog writer drains it; see [`crate::trace`]). Off by
    /// default, and then free: no event is built. A driver that turns it on must drain
    /// `poll_trace` after every input, like `poll_event`.
    pub trace: bool,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            accept_incoming: true,
            max_connections: 4096,
            accept_only_from: None,
            identity: None,
            handshake_limit: HandshakeLimit::default(),
            stateless_reset: true,
            verify_keys: false,
            trace: false,
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The UDP payload.
    pub contents: Vec<u8>,
}

/// Something the application should know about. `Debug` shows a message's length, never its
/// bytes (they are user plaintext).
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection is up. `incoming` is true if the peer opened it.
    Connected {
        /// Which connection.
        conn: ConnectionHandle,
        /// The peer's address.
        remote: SocketAddr,
        /// Opened by the peer (true) or by us via [`Endpoint::connect`] (false).
        incoming: bool,
        /// The peer's static public key (X25519), authenticated by the handshake: its identity.
        remote_key: [u8; 32],
    },
    /// The peer proved it holds `remote_key`, and the handshake waits for the application to
    /// call [`Endpoint::accept_key`] or [`Endpoint::refuse_key`] on `conn`
    /// ([`EndpointConfig::verify_keys`]). Nothing has been sent that depends on the key: a
    /// client has not revealed its own identity, a server has not installed packet keys. The
    /// handle is the application's from here on: [`Event::Closed`] follows if the attempt
    /// ends, also when it ends before a verdict (the peer gave up, or no verdict came within
    /// [`crate::VERDICT_TIMEOUT`]). Meanwhile the connection keeps the paused handshake alive
    /// (PROTOCOL.md §5.8).
    VerifyKey {
        /// Which connection.
        conn: ConnectionHandle,
        /// The peer's address.
        remote: SocketAddr,
        /// Opened by the peer (true) or by us (false).
        incoming: bool,
        /// The peer's static public key (X25519), authenticated by the handshake.
        remote_key: [u8; 32],
    },
    /// A complete message arrived, in order, exactly once.
    Message {
        /// Which connection.
        conn: ConnectionHandle,
        /// Its bytes.
        data: Bytes,
    },
    /// The peer acknowledged `messages` more of the messages sent on this connection, in full.
    /// Acknowledgements follow the order of [`Endpoint::send`]: counting them tells the
    /// application exactly which of its messages arrived (the ones after them come back in
    /// `Closed::undelivered` if the connection ends first). An acknowledgement means the
    /// peer's endpoint holds the message and will deliver it in order.
    Acked {
        /// Which connection.
        conn: ConnectionHandle,
        /// How many more (at least 1).
        messages: u64,
    },
    /// What became of a ping asked for with [`Endpoint::ping`]: acknowledged, with its
    /// round-trip time; arrived, with its acknowledgement lost; or declared lost. Each ping
    /// has at most one outcome; pings still outstanding when the connection closes have none.
    Ping {
        /// Which connection.
        conn: ConnectionHandle,
        /// The id [`Endpoint::ping`] returned.
        id: u64,
        /// What became of it.
        outcome: PingOutcome,
    },
    /// The peer finished its message stream ([`Endpoint::finish`] on its side): it will send
    /// no more messages on this connection. Comes once, after every message it sent.
    PeerFinished {
        /// Which connection.
        conn: ConnectionHandle,
    },
    /// The send buffer, which was full, has room again.
    Writable {
        /// Which connection.
        conn: ConnectionHandle,
    },
    /// A complete message of the bulk channel ([`Endpoint::send_bulk`] on the peer's side)
    /// arrived, in bulk-channel order, exactly once. Bulk messages are ordered among
    /// themselves only: chat messages ([`Event::Message`]) never wait for them, nor they for
    /// chat.
    BulkMessage {
        /// Which connection.
        conn: ConnectionHandle,
        /// Its bytes.
        data: Bytes,
    },
    /// The bulk send buffer, which was full ([`Endpoint::send_bulk`] said
    /// [`crate::WriteError::Blocked`]), has room again.
    BulkWritable {
        /// Which connection.
        conn: ConnectionHandle,
    },
    /// The peer's address changed (NAT rebinding, migration: PROTOCOL.md §5.7) and the new
    /// one passed path validation, or the connection went back to the validated address it
    /// had before. A server that tells others where a client is (a rendezvous) follows it.
    PathChanged {
        /// Which connection.
        conn: ConnectionHandle,
        /// The peer's (validated) address from now on.
        remote: SocketAddr,
    },
    /// The connection ended. It is the last event for this handle.
    Closed {
        /// Which connection.
        conn: ConnectionHandle,
        /// Why.
        reason: CloseReason,
        /// Messages sent on this connection that the peer never acknowledged, in order: empty
        /// after a graceful close. The application may resend them on a new connection (a
        /// restarted peer) or report them as not delivered.
        undelivered: Vec<Bytes>,
    },
}

impl Event {
    /// The connection the event is about (every event is about one).
    pub fn conn(&self) -> ConnectionHandle {
        match self {
            Event::Connected { conn, .. }
            | Event::VerifyKey { conn, .. }
            | Event::Message { conn, .. }
            | Event::Acked { conn, .. }
            | Event::Ping { conn, .. }
            | Event::PeerFinished { conn }
            | Event::Writable { conn }
            | Event::BulkMessage { conn, .. }
            | Event::BulkWritable { conn }
            | Event::PathChanged { conn, .. }
            | Event::Closed { conn, .. } => *conn,
        }
    }
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connected {
                conn,
                remote,
                incoming,
                remote_key,
            } => f
                .debug_struct("Connected")
                .field("conn", conn)
                .field("remote", remote)
                .field("incoming", incoming)
                .field("remote_key", &format_args!("{:02x?}..", &remote_key[..4]))
                .finish(),
            Self::VerifyKey {
                conn,
                remote,
                incoming,
                remote_key,
            } => f
                .debug_struct("VerifyKey")
                .field("conn", conn)
                .field("remote", remote)
                .field("incoming", incoming)
                .field("remote_key", &format_args!("{:02x?}..", &remote_key[..4]))
                .finish(),
            Self::Message { conn, data } => f
                .debug_struct("Message")
                .field("conn", conn)
                .field("len", &data.len())
                .finish_non_exhaustive(),
            Self::Acked { conn, messages } => f
                .debug_struct("Acked")
                .field("conn", conn)
                .field("messages", messages)
                .finish(),
            Self::Ping { conn, id, outcome } => f
                .debug_struct("Ping")
                .field("conn", conn)
                .field("id", id)
                .field("outcome", outcome)
                .finish(),
            Self::Writable { conn } => f.debug_struct("Writable").field("conn", conn).finish(),
            Self::BulkMessage { conn, data } => f
                .debug_struct("BulkMessage")
                .field("conn", conn)
                .field("len", &data.len())
                .finish_non_exhaustive(),
            Self::BulkWritable { conn } => {
                f.debug_struct("BulkWritable").field("conn", conn).finish()
            }
            Self::PeerFinished { conn } => {
                f.debug_struct("PeerFinished").field("conn", conn).finish()
            }
            Self::PathChanged { conn, remote } => f
                .debug_struct("PathChanged")
                .field("conn", conn)
                .field("remote", remote)
                .finish(),
            Self::Closed {
                conn,
                reason,
                undelivered,
            } => f
                .debug_struct("Closed")
                .field("conn", conn)
                .field("reason", reason)
                .field("undelivered", &undelivered.len())
                .finish(),
        }
    }
}

/// Why [`Endpoint::connect`] failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The connection table is full.
    #[error("too many connections")]
    TooManyConnections,
    /// The Noise library refused to start a handshake (a bad static key).
    #[error("handshake setup failed")]
    Handshake,
}

/// A peer's stateless-reset token, compared in constant time (as a hash-map key too: a
/// lookup ends in an equality test against the entry with the same hash).
#[derive(Clone, Copy)]
struct ResetToken([u8; RESET_TOKEN_LEN]);

impl std::fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetToken(..)")
    }
}

impl PartialEq for ResetToken {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for ResetToken {}

impl Hash for ResetToken {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

/// What the endpoint's indexes, timer set and counters hold for one connection. Brought up to
/// date by [`Endpoint::sync`] after every call into the connection, so that nothing has to
/// look at every connection to find one.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Indexed {
    remote: Option<SocketAddr>,
    remote_cid: Option<ConnectionId>,
    reset_token: Option<ResetToken>,
    deadline: Option<Instant>,
    handshaking: bool,
    racing: bool,
}

impl Indexed {
    fn of(c: &Connection) -> Self {
        Self {
            remote: Some(c.remote),
            remote_cid: c.remote_cid(),
            reset_token: c.peer_reset_token.map(ResetToken),
            deadline: c.poll_timeout(),
            handshaking: c.is_handshaking(),
            racing: c.is_racing_client(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    conn: Connection,
    /// Entered around every call into the connection, so that each log line it causes says
    /// which connection (our connection ID) and peer it is about.
    span: Span,
    indexed: Indexed,
    /// In `Endpoint::transmit_ready` / `event_ready`.
    transmit_queued: bool,
    event_queued: bool,
    /// `Event::Connected` was reported: its handshake completed.
    connected: bool,
    /// Its (lost, acked) packet counts at the last `sample_paths`.
    sampled: (u64, u64),
}

/// Which ready queues a connection joins after a call into it.
#[derive(Debug, Clone, Copy)]
struct Ready {
    transmit: bool,
    event: bool,
}

impl Ready {
    /// An input reached it (a datagram, a timer, the application): it may have anything.
    const BOTH: Self = Self {
        transmit: true,
        event: true,
    };
    /// It just returned nothing to a poll, and nothing changed that could make it ready.
    const NONE: Self = Self {
        transmit: false,
        event: false,
    };
}

/// A sans-IO endpoint: all the connections behind one UDP socket.
///
/// The work of every call is proportional to what happened, not to how many connections
/// there are (issue 14): datagrams are routed through hash indexes (connection ID, peer
/// address, the peer's reset token), deadlines sit in an ordered set, and only connections
/// that an input or a poll may have made ready are polled, round robin.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    /// `config.transport`, shared by every connection rather than copied into each.
    transport: Arc<TransportConfig>,
    rng: Rng,
    // Ordered, so that `connections` lists them deterministically.
    // Boxed: a connection is a few KiB, and a B-tree keeps its values in nodes that are
    // half empty on average; boxes keep the nodes small and the connections tightly packed.
    conns: BTreeMap<ConnectionHandle, Box<Entry>>,
    by_cid: HashMap<ConnectionId, ConnectionHandle>,
    /// Client INITIALs are addressed to a random ID until the client learns ours.
    by_initial: HashMap<(SocketAddr, ConnectionId), ConnectionHandle>,
    /// By peer address (a client may run many connections from one socket).
    by_remote: HashMap<SocketAddr, Handles>,
    /// Our handshaking clients that have not heard the server yet, by peer address: the
    /// connections a simultaneous open can involve.
    racing: HashMap<SocketAddr, Handles>,
    /// By the peer's connection ID, once known.
    by_remote_cid: HashMap<ConnectionId, Handles>,
    /// By the peer's address and reset token, once known.
    by_reset_token: HashMap<(SocketAddr, ResetToken), Handles>,
    /// Each connection's next deadline, in order; one entry per connection with a timer.
    timers: BTreeSet<(Instant, ConnectionHandle)>,
    /// Connections that may have a datagram to send or an event to report, in round-robin
    /// order (each goes to the back after it produced one), so that one busy connection
    /// cannot starve the others.
    transmit_ready: VecDeque<ConnectionHandle>,
    event_ready: VecDeque<ConnectionHandle>,
    /// Connections still handshaking (the rate limiter's measure of load).
    handshaking: usize,
    next_handle: u64,
    stats: EndpointStats,
    /// The counters of the connections removed, summed (for `totals`).
    gone: ConnectionTotals,
    identity: StaticSecret,
    /// Keys RESET tokens. Derived from the static key alone, so that after a restart the
    /// endpoint can still authenticate RESETs for connections it had before.
    reset_key: [u8; 32],
    secrets: Secrets,
    cookies: CookieJar,
    /// The instant cookie timestamps count from (the first input).
    epoch: Option<Instant>,
    stateless: VecDeque<Transmit>,
    /// Handshake tokens per source IP: (tokens, last refill).
    limiter: HashMap<IpAddr, (f64, Instant)>,
    /// The budget of stateless answers ([`STATELESS_PER_SEC`]): tokens and last refill.
    stateless_budget: (f64, Option<Instant>),
    /// Where every received packet is decrypted (reused: no allocation per packet).
    scratch: Vec<u8>,
    /// Trace records waiting for [`Self::poll_trace`] (tracing on only; bounded by
    /// [`MAX_TRACE_QUEUE`]).
    trace: VecDeque<TraceRecord>,
}

impl Endpoint {
    /// Creates an endpoint. `seed` keys the generator of connection IDs: the driver passes OS
    /// entropy, tests a constant (the core itself never reads the OS).
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let identity = config.identity.clone().unwrap_or_else(|| {
            let mut k = [0u8; 32];
            for chunk in k.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            StaticSecret(k)
        });
        let mut secrets = Secrets::new(&identity, seed);
        let reset_key = hash(&[b"chirp v2 stateless reset", &identity.0]);
        let cookies = CookieJar::new(secrets.next(), 0);
        Self {
            transport: Arc::new(crate::connection::effective_config(&config.transport)),
            config,
            rng,
            identity,
            reset_key,
            secrets,
            cookies,
            epoch: None,
            stateless: VecDeque::new(),
            scratch: Vec::new(),
            trace: VecDeque::new(),
            limiter: HashMap::new(),
            stateless_budget: (MAX_STATELESS_QUEUE as f64, None),
            conns: BTreeMap::new(),
            by_cid: HashMap::new(),
            by_initial: HashMap::new(),
            by_remote: HashMap::new(),
            racing: HashMap::new(),
            by_remote_cid: HashMap::new(),
            by_reset_token: HashMap::new(),
            timers: BTreeSet::new(),
            transmit_ready: VecDeque::new(),
            event_ready: VecDeque::new(),
            handshaking: 0,
            next_handle: 0,
            stats: EndpointStats::default(),
            gone: ConnectionTotals::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Starts or stops accepting connections that peers open (`EndpointConfig::accept_incoming`).
    /// An application that is leaving stops, so that a peer trying to reconnect meanwhile
    /// finds nobody, rather than a connection that vanishes with the process. Existing
    /// connections are not affected; refused INITIALs are counted in `refused`.
    pub fn set_accept_incoming(&mut self, accept: bool) {
        self.config.accept_incoming = accept;
    }

    fn new_cid(&mut self) -> ConnectionId {
        loop {
            let cid = ConnectionId(self.rng.next_u64());
            if cid.0 != 0 && !self.by_cid.contains_key(&cid) {
                return cid;
            }
        }
    }

    fn insert(&mut self, mut conn: Connection) -> ConnectionHandle {
        let handle = ConnectionHandle(self.next_handle);
        self.next_handle += 1;
        if self.config.trace {
            conn.enable_trace();
        }
        self.by_cid.insert(conn.local_cid, handle);
        let span = debug_span!("conn", cid = %conn.local_cid, remote = %conn.remote);
        self.conns.insert(
            handle,
            Box::new(Entry {
                conn,
                span,
                indexed: Indexed::default(),
                transmit_queued: false,
                event_queued: false,
                connected: false,
                sampled: (0, 0),
            }),
        );
        self.stats.handshakes_started += 1;
        self.sync(handle, Ready::BOTH);
        handle
    }

    fn conn(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conns.get(&h).map(|e| &e.conn)
    }

    /// Calls `f` on connection `h`, then brings the endpoint's view of it up to date (see
    /// [`Self::sync`]): it may now have anything to send or report.
    fn with_conn<R>(
        &mut self,
        h: ConnectionHandle,
        f: impl FnOnce(&mut Connection) -> R,
    ) -> Option<R> {
        let e = self.conns.get_mut(&h)?;
        let r = e.span.in_scope(|| f(&mut e.conn));
        self.sync(h, Ready::BOTH);
        Some(r)
    }

    /// Brings the indexes, the timer set and the handshaking count up to date with connection
    /// `h` after a call into it, and queues it as `ready` says. Constant work (a few hash and
    /// ordered-set operations), whatever the number of connections.
    fn sync(&mut self, h: ConnectionHandle, ready: Ready) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        if let Some(tracer) = e.conn.tracer() {
            collect_trace(&mut self.trace, &mut self.stats, h, tracer);
        }
        if ready.transmit && !e.transmit_queued {
            e.transmit_queued = true;
            self.transmit_ready.push_back(h);
        }
        if ready.event && !e.event_queued {
            e.event_queued = true;
            self.event_ready.push_back(h);
        }
        let new = Indexed::of(&e.conn);
        let old = std::mem::replace(&mut e.indexed, new);
        if old.remote.is_some() && old.remote != new.remote {
            // Migration: the span follows the peer.
            e.span
                .record("remote", tracing::field::display(e.conn.remote));
        }
        if old != new {
            self.reindex(h, old, new);
        }
    }

    /// Moves connection `h` in the indexes from what they held (`old`) to `new`.
    fn reindex(&mut self, h: ConnectionHandle, old: Indexed, new: Indexed) {
        if old.remote != new.remote {
            multi_remove(&mut self.by_remote, old.remote, h);
            multi_insert(&mut self.by_remote, new.remote, h);
        }
        let racing = |i: &Indexed| i.remote.filter(|_| i.racing);
        if racing(&old) != racing(&new) {
            multi_remove(&mut self.racing, racing(&old), h);
            multi_insert(&mut self.racing, racing(&new), h);
        }
        // One-to-many as well: a peer may give two connections the same ID or token, and
        // neither may hide the other.
        if old.remote_cid != new.remote_cid {
            multi_remove(&mut self.by_remote_cid, old.remote_cid, h);
            multi_insert(&mut self.by_remote_cid, new.remote_cid, h);
        }
        let token_key = |i: &Indexed| i.remote.zip(i.reset_token);
        let (old_token, new_token) = (token_key(&old), token_key(&new));
        if old_token != new_token {
            multi_remove(&mut self.by_reset_token, old_token, h);
            multi_insert(&mut self.by_reset_token, new_token, h);
        }
        if old.deadline != new.deadline {
            if let Some(t) = old.deadline {
                self.timers.remove(&(t, h));
            }
            if let Some(t) = new.deadline {
                self.timers.insert((t, h));
            }
        }
        match (old.handshaking, new.handshaking) {
            (false, true) => self.handshaking += 1,
            (true, false) => self.handshaking -= 1,
            _ => {}
        }
    }

    /// Opens a connection to `remote`. Call `poll_transmit` afterwards to send its first packet.
    /// [`Event::Connected`] follows when the peer answers; messages written before then wait.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, ConnectError> {
        self.connect_expecting(now, remote, None)
    }

    /// Like [`Self::connect`], but the peer must prove it holds the static key
    /// `expected_key` (a pinned or remembered key). Any other key ends the connection with
    /// [`CloseReason::KeyMismatch`] before our own identity is sent.
    pub fn connect_expecting(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        expected_key: Option<[u8; 32]>,
    ) -> Result<ConnectionHandle, ConnectError> {
        let identity = self.identity.0;
        self.open(now, remote, expected_key, &identity)
    }

    /// Like [`Self::connect_expecting`], but the handshake proves `identity` rather than the
    /// endpoint's own static key: the peer sees this connection as that key's. A load
    /// generator runs many users, each with a key of its own, over one socket this way.
    pub fn connect_as(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        expected_key: Option<[u8; 32]>,
        identity: &StaticSecret,
    ) -> Result<ConnectionHandle, ConnectError> {
        self.open(now, remote, expected_key, &identity.0)
    }

    fn open(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        expected_key: Option<[u8; 32]>,
        identity: &[u8; 32],
    ) -> Result<ConnectionHandle, ConnectError> {
        if self.conns.len() >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        let remote = canonical(remote);
        let local = self.new_cid();
        let initial = ConnectionId(self.rng.next_u64());
        let mut handshake = Handshake::initiator(identity).map_err(|_| ConnectError::Handshake)?;
        let message = handshake.write(&[]).map_err(|_| ConnectError::Handshake)?;
        let start = HandshakeStart {
            handshake,
            message,
            challenge_key: self.secrets.next(),
            reset_token: self.reset_token(local),
            verify: self.config.verify_keys,
        };
        let conn = Connection::client(
            Arc::clone(&self.transport),
            local,
            initial,
            remote,
            now,
            start,
            expected_key,
        );
        let handle = self.insert(conn);
        debug!(?handle, %remote, cid = %local, "connecting");
        Ok(handle)
    }

    /// An open connection (handshaking or established, not closing) whose peer is at `remote`.
    /// Peer mode asks this before opening its own: the peer may already have opened one to us,
    /// and a second would look to the peer like a restart.
    ///
    /// The handle returned is the application's from now on, like one from [`Self::connect`]:
    /// its [`Event::Closed`] is reported (with what it could not deliver) even if its
    /// handshake never completes, whereas an incoming handshake nobody asked for ends silently.
    pub fn find_open(&mut self, remote: SocketAddr) -> Option<ConnectionHandle> {
        let remote = canonical(remote);
        let h = self
            .by_remote
            .get(&remote)?
            .iter()
            .copied()
            .find(|&h| self.conn(h).is_some_and(Connection::is_open))?;
        self.with_conn(h, Connection::hand_out);
        Some(h)
    }

    /// Accepts the peer's key that [`Event::VerifyKey`] asked about: the handshake goes on
    /// ([`Event::Connected`] follows). Call `poll_transmit` afterwards. Harmless if the
    /// question is no longer open.
    pub fn accept_key(&mut self, now: Instant, conn: ConnectionHandle) {
        self.with_conn(conn, |c| c.key_verdict(now, true));
    }

    /// Refuses the peer's key that [`Event::VerifyKey`] asked about: the attempt ends with
    /// [`CloseReason::KeyRefused`] (a CLOSE with code `KEY_MISMATCH` tells the peer), and
    /// nothing the application queued on it is sent. Harmless if the question is no longer
    /// open.
    pub fn refuse_key(&mut self, now: Instant, conn: ConnectionHandle) {
        self.with_conn(conn, |c| c.key_verdict(now, false));
    }

    /// Queues one message (0 to 64 KiB) on `conn`, copying it. Call `poll_transmit`
    /// afterwards.
    pub fn send(&mut self, conn: ConnectionHandle, data: &[u8]) -> Result<(), SendError> {
        self.send_bytes(conn, Bytes::copy_from_slice(data))
    }

    /// Queues one message (0 to 64 KiB) on `conn` without copying it: the connection keeps a
    /// reference to `data` until the peer has acknowledged it, so one message sent to many
    /// connections (a room's fan-out) is one buffer for all of them. Call `poll_transmit`
    /// afterwards.
    pub fn send_bytes(&mut self, conn: ConnectionHandle, data: Bytes) -> Result<(), SendError> {
        self.with_conn(conn, |c| c.write(data))
            .ok_or(SendError::UnknownConnection)?
    }

    /// Queues one message (0 to 64 KiB) on the **bulk channel** of `conn`, without copying
    /// it: a second message stream beside the one [`Self::send_bytes`] writes, for bulk data
    /// such as a file's chunks (PROTOCOL.md §4.7). Bulk messages arrive in order among
    /// themselves, each exactly once ([`Event::BulkMessage`]), with their own reassembly and
    /// flow control: a lost bulk packet never holds back a chat message, and chat data (new,
    /// retransmitted and its proactive copies) goes out before any bulk data whenever both
    /// are ready, bulk taking what room and congestion window chat leaves.
    ///
    /// `Err(Write(Blocked))` once the bulk send buffer
    /// ([`crate::TransportConfig::bulk_send_buffer`]) is full: wait for
    /// [`Event::BulkWritable`], or keep [`Self::bulk_buffered`] under a bound of your own.
    /// A FIN covers the bulk channel too ([`Self::finish`]: sent once every bulk
    /// byte is acknowledged), and a graceful [`Self::close`] waits for bulk data as for chat;
    /// bulk messages are not handed back in `Closed::undelivered`.
    ///
    /// **Only send bulk data to a peer known to support it** (one whose application said so
    /// on the message stream, e.g. by accepting a file offer, or that sent bulk data
    /// itself): version 2 has no transport parameters, and a peer that predates the bulk
    /// channel drops every packet carrying a BULK frame as malformed. Call `poll_transmit`
    /// afterwards.
    pub fn send_bulk(&mut self, conn: ConnectionHandle, data: Bytes) -> Result<(), SendError> {
        self.with_conn(conn, |c| c.write_bulk(data))
            .ok_or(SendError::UnknownConnection)?
    }

    /// Bulk bytes written on `conn` ([`Self::send_bulk`], with their length prefixes) and not
    /// yet acknowledged by the peer: a sender keeps its own window by keeping this bounded.
    /// Zero once every bulk message has arrived (and before the first).
    pub fn bulk_buffered(&self, conn: ConnectionHandle) -> Option<u64> {
        self.conn(conn).map(Connection::bulk_buffered)
    }

    /// Bulk bytes held for the peer of `conn` (out of order, partial or not yet polled).
    /// Bounded by [`crate::TransportConfig::bulk_receive_window`].
    pub fn bulk_recv_buffered(&self, conn: ConnectionHandle) -> Option<u64> {
        self.conn(conn).map(Connection::bulk_recv_buffered)
    }

    /// Asks the peer of `conn` for an acknowledgement, to measure the round trip (`chirp
    /// ping`): the next DATA packet to it carries a PING frame, and [`Event::Ping`] reports
    /// what became of that packet under the returned id (ids count from 0 per connection):
    /// acknowledged, with its round-trip time less the peer's acknowledgement delay; known to
    /// have arrived only from a later packet's acknowledgement (its own was lost: no round
    /// trip); or declared lost by loss detection. A lost ping is not sent again. Only DATA
    /// packets carry it, so an acknowledgement also proves that the peer completed the
    /// handshake and accepted our key; a ping asked for earlier waits for that. Nothing
    /// changes on the wire: any packet with a PING frame is acknowledged. Call
    /// `poll_transmit` afterwards.
    pub fn ping(&mut self, conn: ConnectionHandle) -> Result<u64, PingError> {
        self.with_conn(conn, Connection::ping)
            .ok_or(PingError::UnknownConnection)?
    }

    /// Probes `addr` as another path to the peer of `conn`, or stops probing (`None`)
    /// (PROTOCOL.md §5.7.1). While the connection is established on a validated path elsewhere,
    /// a probe (a PATH_CHALLENGE padded to 1200 bytes, outside loss recovery and congestion
    /// control) goes to `addr` at once, then after 1 s, 2 s, 4 s … up to every 15 s
    /// ([`crate::PROBE_INTERVAL_MIN`], [`crate::PROBE_INTERVAL_MAX`]). When `addr` answers, the client
    /// side of the connection moves there ([`Event::PathChanged`]) and the server side follows
    /// by the usual path validation; probing pauses while the connection is at `addr`.
    /// For peers that reached each other through a relay and keep trying the direct path
    /// (both sides should probe: each side's probes open its own NAT for the other's). Probing
    /// the address already probed changes nothing. False if `conn` is unknown. Call
    /// `poll_transmit` afterwards.
    pub fn probe_path(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        addr: Option<SocketAddr>,
    ) -> bool {
        self.with_conn(conn, |c| c.probe_path(now, addr)).is_some()
    }

    /// Half-closes `conn`: the messages sent so far are the last (later sends fail with
    /// [`SendError::Closed`]), and the peer learns so reliably, after all of them
    /// ([`Event::PeerFinished`] on its side). Receiving goes on. Once the peer has finished
    /// too and each side holds everything the other sent, the connection closes by itself
    /// ([`Event::Closed`] with nothing undelivered; [`CloseReason::Local`] on the side that
    /// closes first, `PeerClosed` with reason "finished" on the other). Call `poll_transmit`
    /// afterwards.
    pub fn finish(&mut self, conn: ConnectionHandle) -> Result<(), SendError> {
        self.with_conn(conn, Connection::finish_stream)
            .ok_or(SendError::UnknownConnection)?
    }

    /// Closes `conn` gracefully: whatever was sent is first delivered and acknowledged (bounded
    /// by the idle timeout), then CLOSE tells the peer. [`Event::Closed`] follows.
    pub fn close(&mut self, now: Instant, conn: ConnectionHandle, code: u64, reason: &str) {
        self.with_conn(conn, |c| c.close(now, code, reason, true));
    }

    /// Closes `conn` at once, abandoning unacknowledged data.
    pub fn abort(&mut self, now: Instant, conn: ConnectionHandle, code: u64, reason: &str) {
        self.with_conn(conn, |c| c.close(now, code, reason, false));
    }

    /// Statistics of `conn`.
    pub fn stats(&self, conn: ConnectionHandle) -> Option<ConnectionStats> {
        self.conn(conn).map(Connection::stats)
    }

    /// The largest datagram `conn` sends now, bytes: 1,200 until path MTU discovery raises it
    /// (PROTOCOL.md §6.9). (Not in [`ConnectionStats`], which every connection holds a copy of:
    /// an idle connection must stay small.)
    pub fn max_datagram(&self, conn: ConnectionHandle) -> Option<usize> {
        self.conn(conn).map(Connection::max_datagram)
    }

    /// Endpoint-wide counters.
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.stats
    }

    /// The peer's static public key, authenticated by the handshake (`None` until then).
    pub fn remote_key(&self, conn: ConnectionHandle) -> Option<[u8; 32]> {
        self.conn(conn).and_then(Connection::remote_key)
    }

    /// The peer address of `conn` (it follows the peer across NAT rebinding).
    pub fn remote(&self, conn: ConnectionHandle) -> Option<SocketAddr> {
        self.conn(conn).map(|c| c.remote)
    }

    /// Bytes written on `conn` and not yet acknowledged by the peer. Zero means everything
    /// sent has arrived.
    pub fn send_buffered(&self, conn: ConnectionHandle) -> Option<u64> {
        self.conn(conn).map(Connection::send_buffered)
    }

    /// Bytes held for the peer of `conn` (out of order, partial or not yet polled). Bounded by
    /// the receive window.
    pub fn recv_buffered(&self, conn: ConnectionHandle) -> Option<u64> {
        self.conn(conn).map(Connection::recv_buffered)
    }

    /// Packets sent on `conn` that are still awaiting acknowledgement or loss.
    pub fn sent_packets_tracked(&self, conn: ConnectionHandle) -> Option<usize> {
        self.conn(conn).map(Connection::sent_packets_tracked)
    }

    /// Handles of live connections, in order.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.conns.keys().copied()
    }

    /// Feeds one received UDP datagram. Call it for every datagram from the socket, then drain
    /// `poll_transmit` and `poll_event`. Malformed, forged and unroutable datagrams are dropped
    /// and counted; nothing here panics on any input, and nothing but a cookie-validated
    /// INITIAL allocates state that outlives the call.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let from = canonical(from);
        self.epoch.get_or_insert(now);
        self.stats.datagrams_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        let packet = match Packet::new_checked(datagram) {
            Ok(p) => p,
            Err(e) => {
                trace!(%from, %e, "dropping datagram");
                // Whom to charge: a datagram without a valid header cannot be routed by its
                // connection ID. Charge the one connection at that address, if any.
                self.stats.malformed_dropped += 1;
                if let Some(&h) = self.by_remote.get(&from).and_then(|hs| hs.first())
                    && let Some(e) = self.conns.get_mut(&h)
                {
                    // A counter (and a trace record) only: nothing about the connection
                    // changes, so there is nothing to sync but the trace.
                    e.conn.count_malformed(now, datagram.len());
                    if let Some(tracer) = e.conn.tracer() {
                        collect_trace(&mut self.trace, &mut self.stats, h, tracer);
                    }
                }
                return;
            }
        };
        if packet.header.ty == PacketType::Reset {
            self.handle_reset(now, from, packet.token);
            return;
        }
        let handle = match self.route(now, from, &packet, datagram.len()) {
            Some(h) => h,
            None => return,
        };
        // Every packet is decrypted in the one buffer the endpoint keeps for it.
        let mut scratch = std::mem::take(&mut self.scratch);
        self.with_conn(handle, |c| {
            c.handle_packet(now, from, &packet, datagram.len(), &mut scratch);
        });
        self.scratch = scratch;
    }

    fn route(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &Packet<'_>,
        datagram_len: usize,
    ) -> Option<ConnectionHandle> {
        let header = &packet.header;
        if let Some(&h) = self.by_cid.get(&header.dst_cid) {
            return Some(h);
        }
        if header.ty != PacketType::Initial {
            // Only a client INITIAL may open a connection: a stray ACCEPT or DATA packet for a
            // connection we no longer have must never create one.
            self.stats.unknown_connection += 1;
            if header.ty.is_data()
                && self.config.stateless_reset
                && datagram_len > RESET_PACKET_LEN
                && self.take_stateless(now)
            {
                // Probably a peer from before our restart: tell it, statelessly, so it need not
                // wait for its idle timeout. Smaller than what provoked it, so never an
                // amplifier; only we can compute the token, so nobody else can forge it.
                self.queue_stateless(from, encode_reset(&self.reset_token(header.dst_cid)));
                self.stats.resets_sent += 1;
            }
            return None;
        }
        if let Some(&h) = self.by_initial.get(&(from, header.dst_cid)) {
            return Some(h); // A retransmitted client INITIAL.
        }
        if datagram_len < MIN_INITIAL_SIZE {
            // Unpadded: not from a conforming client, and answering it could amplify.
            self.stats.refused += 1;
            return None;
        }
        // A tokenless INITIAL is answered statelessly (RETRY, or REFUSE when full) unless we
        // are racing the sender: past the budget of such answers it is dropped here, before
        // the key derivation and the decryption it would cost.
        if packet.token.is_empty()
            && !self.racing.contains_key(&from)
            && !self.stateless_available(now)
        {
            self.stats.stateless_dropped += 1;
            return None;
        }
        // Authenticate with the (public) initial key and find Noise message 1: junk and
        // damaged datagrams stop here, before anything is allocated or answered.
        let Ok(payload) = packet.open(&InitialKeys::client_key(header.dst_cid.0)) else {
            self.stats.corrupt_dropped += 1;
            return None;
        };
        let mut msg1 = None;
        for frame in Frames::new(&payload) {
            match frame {
                Ok(Frame::Handshake(m)) => msg1 = Some(m),
                Ok(Frame::Padding { .. } | Frame::Ping | Frame::Ack(_)) => {}
                _ => {
                    self.stats.malformed_dropped += 1;
                    return None;
                }
            }
        }
        let Some(msg1) = msg1 else {
            self.stats.malformed_dropped += 1;
            return None;
        };
        let peer_cid = header.src_cid?;
        if self.by_remote_cid.contains_key(&peer_cid) {
            // A late copy of an INITIAL from a peer we are already connected to (typically the
            // yielding side of a simultaneous open). A restarted peer would have a fresh ID.
            self.stats.stale_initials += 1;
            return None;
        }
        // Simultaneous open: we are also trying to reach this address. Exactly one side must
        // yield, and both must agree which without talking: the one with the smaller ID does.
        // No token is needed: we chose to contact this address ourselves.
        let racing = self
            .racing
            .get(&from)
            .and_then(|hs| hs.first())
            .and_then(|&h| Some((h, self.conn(h)?.local_cid)));
        if let Some((h, local)) = racing {
            if local < peer_cid {
                let start = self.respond(msg1, local)?;
                debug!(?h, "simultaneous open: yielding to the peer's connection");
                self.with_conn(h, |c| {
                    c.become_server(now, header, start);
                    c.initial_route = Some((from, header.dst_cid));
                });
                self.by_initial.insert((from, header.dst_cid), h);
                return Some(h);
            }
            trace!("simultaneous open: ignoring the peer's attempt, it will answer ours");
            // The peer is evidently up: repeat our INITIAL now rather than at the next probe
            // timeout (up to a second away). One INITIAL answers one INITIAL of the same
            // padded size, so this cannot amplify.
            self.with_conn(h, Connection::nudge_handshake);
            return None;
        }
        let stranger = self
            .config
            .accept_only_from
            .is_some_and(|ip| ip.to_canonical() != from.ip());
        if !self.config.accept_incoming || stranger {
            // Silent: a peer-mode endpoint does not tell strangers it exists.
            self.stats.refused += 1;
            return None;
        }
        if self.conns.len() >= self.config.max_connections {
            // Full: say so at once, statelessly, rather than leave the client waiting out its
            // idle timeout. No cookie is needed first: like a RETRY, the answer is far smaller
            // than the padded INITIAL that provoked it, and it allocates nothing.
            self.stats.refused += 1;
            if !self.take_stateless(now) {
                return None;
            }
            self.send_refusal(
                from,
                header.dst_cid,
                peer_cid,
                RefuseReason::ServerFull,
                datagram_len,
            );
            return None;
        }
        let secs = self.secs(now);
        let fresh = &mut self.secrets;
        self.cookies.maybe_rotate(secs, || fresh.next());
        if !self
            .cookies
            .verify(packet.token, &from, secs, TOKEN_LIFETIME_SECS)
        {
            if !packet.token.is_empty() {
                self.stats.invalid_tokens += 1;
            }
            if self.take_stateless(now) {
                self.send_retry(from, header.dst_cid, peer_cid, secs);
            }
            return None;
        }
        if !self.handshake_allowed(now, from.ip()) {
            self.stats.rate_limited += 1;
            return None;
        }
        let local = self.new_cid();
        let start = self.respond(msg1, local)?;
        let mut conn =
            Connection::server(Arc::clone(&self.transport), local, header, from, now, start);
        conn.initial_route = Some((from, header.dst_cid));
        let h = self.insert(conn);
        self.by_initial.insert((from, header.dst_cid), h);
        debug!(?h, %from, cid = %local, "accepted connection");
        Some(h)
    }

    /// The token that authenticates our RESET for packets addressed to `cid`.
    fn reset_token(&self, cid: ConnectionId) -> [u8; RESET_TOKEN_LEN] {
        let full = mac(&self.reset_key, &[&cid.0.to_be_bytes()]);
        let mut t = [0u8; RESET_TOKEN_LEN];
        t.copy_from_slice(&full[..RESET_TOKEN_LEN]);
        t
    }

    /// The responder's side of Noise message 1 → message 2, for our connection ID `local`.
    /// `None` (counted) if message 1 is not one.
    fn respond(&mut self, msg1: &[u8], local: ConnectionId) -> Option<HandshakeStart> {
        let started = Handshake::responder(&self.identity.0).and_then(|mut hs| {
            hs.read(msg1)?;
            let message = hs.write(&[])?;
            Ok((hs, message))
        });
        match started {
            Ok((handshake, message)) => Some(HandshakeStart {
                handshake,
                message,
                challenge_key: self.secrets.next(),
                reset_token: self.reset_token(local),
                verify: self.config.verify_keys,
            }),
            Err(e) => {
                trace!(%e, "bad Noise message 1");
                self.stats.malformed_dropped += 1;
                None
            }
        }
    }

    /// Seconds since the first input: the clock of cookie timestamps.
    fn secs(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    /// Answers an INITIAL without a valid token, statelessly: a RETRY carrying a cookie that
    /// binds the client's address and the time. Only a client that receives at that address
    /// can repeat its INITIAL with it.
    fn send_retry(&mut self, to: SocketAddr, odcid: ConnectionId, client: ConnectionId, secs: u64) {
        let cookie = self.cookies.issue(&to, secs);
        let retry = encode_retry(client, odcid, &cookie, &InitialKeys::retry_key(odcid.0));
        if self.queue_stateless(to, retry) {
            self.stats.retries_sent += 1;
        }
    }

    /// Answers an INITIAL (to `odcid`, from the client `client`) that we will not take, for
    /// `reason`, with a REFUSE: it echoes both connection IDs and is authenticated under the
    /// refuse key of `odcid`, so it is as hard to forge as a RETRY. Never larger than the
    /// `provoked_by` bytes that caused it.
    fn send_refusal(
        &mut self,
        to: SocketAddr,
        odcid: ConnectionId,
        client: ConnectionId,
        reason: RefuseReason,
        provoked_by: usize,
    ) {
        let refuse = encode_refuse(client, odcid, reason, &InitialKeys::refuse_key(odcid.0));
        if refuse.len() > provoked_by {
            return;
        }
        if self.queue_stateless(to, refuse) {
            self.stats.refusals_sent += 1;
        }
    }

    /// Refills the budget of stateless answers to `now`; true if one is left.
    fn stateless_available(&mut self, now: Instant) -> bool {
        let (tokens, last) = &mut self.stateless_budget;
        if let Some(l) = *last {
            let secs = now.saturating_duration_since(l).as_secs_f64();
            *tokens = (*tokens + secs * STATELESS_PER_SEC).min(MAX_STATELESS_QUEUE as f64);
        }
        *last = Some(now);
        *tokens >= 1.0
    }

    /// Takes one stateless answer from the budget; false (counted as dropped) if none is left.
    fn take_stateless(&mut self, now: Instant) -> bool {
        if self.stateless_available(now) {
            self.stateless_budget.0 -= 1.0;
            true
        } else {
            self.stats.stateless_dropped += 1;
            false
        }
    }

    /// Queues a stateless answer, unless the bounded queue is full (then it is dropped and
    /// counted: the other side repeats whatever provoked it).
    fn queue_stateless(&mut self, to: SocketAddr, contents: Vec<u8>) -> bool {
        if self.stateless.len() >= MAX_STATELESS_QUEUE {
            self.stats.stateless_dropped += 1;
            return false;
        }
        self.stateless.push_back(Transmit {
            destination: to,
            contents,
        });
        true
    }

    /// A RESET: ends the connection to `from` whose peer gave us this token, if any.
    fn handle_reset(&mut self, now: Instant, from: SocketAddr, token: &[u8]) {
        let hit = <[u8; RESET_TOKEN_LEN]>::try_from(token)
            .ok()
            .and_then(|t| self.by_reset_token.get(&(from, ResetToken(t))))
            .and_then(|hs| hs.first().copied());
        match hit {
            Some(h) => {
                self.stats.resets_received += 1;
                self.with_conn(h, |c| c.on_reset(now));
            }
            None => self.stats.unknown_connection += 1,
        }
    }

    /// The per-source token bucket, consulted only under load.
    fn handshake_allowed(&mut self, now: Instant, ip: IpAddr) -> bool {
        let limit = &self.config.handshake_limit;
        if self.handshaking < limit.load_threshold {
            return true;
        }
        if !self.limiter.contains_key(&ip) && self.limiter.len() >= MAX_RATE_LIMITED_SOURCES {
            // Replace the entry that has been idle longest.
            let idlest = self
                .limiter
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| *k);
            if let Some(k) = idlest {
                self.limiter.remove(&k);
            }
        }
        let (tokens, last) = self.limiter.entry(ip).or_insert((limit.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * limit.per_second).min(limit.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Fires every timer that is due. Call it when the instant from `poll_timeout` has passed
    /// (calling it early is harmless), then drain `poll_transmit` and `poll_event`.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Everything due now, taken out at once: each connection fires once per call, even
        // if its next deadline were due again at once.
        let later = self.timers.split_off(&after(now));
        let due = std::mem::replace(&mut self.timers, later);
        for (_, h) in due {
            if let Some(e) = self.conns.get_mut(&h) {
                e.indexed.deadline = None;
                self.stats.connection_visits += 1;
                e.span.in_scope(|| e.conn.handle_timeout(now));
            }
            self.sync(h, Ready::BOTH);
        }
    }

    /// The next datagram to send, if any. Call it after every input until it returns `None`.
    /// Allocates the datagram; a driver on the hot path passes a buffer of its own to
    /// [`Self::poll_transmit_into`] instead.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        let mut contents = Vec::new();
        let destination = self.poll_transmit_into(now, &mut contents)?;
        Some(Transmit {
            destination,
            contents,
        })
    }

    /// [`Self::poll_transmit`] into `buf`: the next datagram replaces what `buf` held, and its
    /// destination is returned. A driver that passes the same buffer every time allocates
    /// nothing per datagram. `None`: nothing to send (`buf` keeps its memory; its contents are
    /// then unspecified).
    #[must_use]
    pub fn poll_transmit_into(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<SocketAddr> {
        if let Some(t) = self.stateless.pop_front() {
            *buf = t.contents;
            self.count_sent(buf.len());
            return Some(t.destination);
        }
        let mut due_checked = false;
        loop {
            while let Some(h) = self.transmit_ready.pop_front() {
                let Some(e) = self.conns.get_mut(&h) else {
                    continue; // Removed since it was queued.
                };
                e.transmit_queued = false;
                self.stats.connection_visits += 1;
                let Some(destination) = e.span.in_scope(|| e.conn.poll_transmit(now, buf)) else {
                    self.sync(h, Ready::NONE);
                    continue;
                };
                // To the back of the queue: it may have more, after the others had their
                // turn. Sending may also have changed what it has to report.
                self.sync(h, Ready::BOTH);
                self.count_sent(buf.len());
                return Some(destination);
            }
            if due_checked {
                return None;
            }
            // A connection whose deadline has come may send what is due (a copy, a delayed
            // ACK) before its timer fires: `Connection::poll_transmit` looks at `now` itself.
            // Once per call, when nothing else is ready.
            due_checked = true;
            for &(_, h) in self.timers.range(..after(now)) {
                if let Some(e) = self.conns.get_mut(&h)
                    && !e.transmit_queued
                {
                    e.transmit_queued = true;
                    self.transmit_ready.push_back(h);
                }
            }
        }
    }

    fn count_sent(&mut self, bytes: usize) {
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += bytes as u64;
    }

    /// The endpoint's counters, every connection's counters summed (the ones gone
    /// included), and how many connections are in each state: for metrics. It visits every
    /// open connection, so it is for a scrape every few seconds, not for a path that runs
    /// per datagram.
    pub fn totals(&self) -> EndpointTotals {
        let mut t = EndpointTotals {
            endpoint: self.stats,
            connections: self.gone,
            ..EndpointTotals::default()
        };
        for e in self.conns.values() {
            t.connections.add(&e.conn.stats());
            if e.conn.is_handshaking() {
                t.handshaking += 1;
            } else if e.conn.is_established() {
                t.established += 1;
            } else {
                t.closing += 1;
            }
        }
        t
    }

    /// Calls `f` with the path of every established connection that has measured its
    /// round-trip time: its smoothed RTT, and the fraction of packets lost since the
    /// previous call. A driver calls it on a fixed period (a histogram of these is the
    /// distribution of the connections' RTT and loss over time); like [`Self::totals`] it
    /// visits every connection.
    pub fn sample_paths(&mut self, mut f: impl FnMut(PathSample)) {
        for e in self.conns.values_mut() {
            if !e.conn.is_established() {
                continue;
            }
            let s = e.conn.stats();
            if s.srtt.is_zero() {
                continue;
            }
            let (lost, acked) = (s.packets_lost, s.packets_acked);
            let (dl, da) = (
                lost.saturating_sub(e.sampled.0),
                acked.saturating_sub(e.sampled.1),
            );
            e.sampled = (lost, acked);
            let loss = (dl + da > 0).then(|| dl as f64 / (dl + da) as f64);
            f(PathSample { srtt: s.srtt, loss });
        }
    }

    /// The instant at which `handle_timeout` must next be called, if any timer is armed.
    /// Re-read it after every input: inputs move deadlines.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// The next event, if any. Call it after every input until it returns `None`. Message
    /// events release flow-control credit, so an application that stops polling stops the
    /// peer once the receive window is full, and memory stays bounded.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            let h = self.event_ready.pop_front()?;
            let Some(e) = self.conns.get_mut(&h) else {
                continue; // Removed since it was queued.
            };
            e.event_queued = false;
            self.stats.connection_visits += 1;
            let ev = e.span.in_scope(|| e.conn.poll_event());
            let remote = e.conn.remote;
            let Some(ev) = ev else {
                if e.conn.is_drained() {
                    self.remove(h);
                } else {
                    self.sync(h, Ready::NONE);
                }
                continue;
            };
            if matches!(ev, ConnEvent::Connected { .. }) && !e.connected {
                e.connected = true;
                self.stats.handshakes_completed += 1;
            }
            // Back in the queue for its next event; and a delivered message releases
            // flow-control credit, which may have to be announced.
            self.sync(h, Ready::BOTH);
            return Some(match ev {
                ConnEvent::Connected {
                    incoming,
                    remote_key,
                } => Event::Connected {
                    conn: h,
                    remote,
                    incoming,
                    remote_key,
                },
                ConnEvent::VerifyKey {
                    incoming,
                    remote_key,
                } => Event::VerifyKey {
                    conn: h,
                    remote,
                    incoming,
                    remote_key,
                },
                ConnEvent::Message(data) => Event::Message { conn: h, data },
                ConnEvent::Acked(messages) => Event::Acked { conn: h, messages },
                ConnEvent::Ping(id, outcome) => Event::Ping {
                    conn: h,
                    id,
                    outcome,
                },
                ConnEvent::Writable => Event::Writable { conn: h },
                ConnEvent::BulkMessage(data) => Event::BulkMessage { conn: h, data },
                ConnEvent::BulkWritable => Event::BulkWritable { conn: h },
                ConnEvent::PeerFinished => Event::PeerFinished { conn: h },
                ConnEvent::PathChanged => Event::PathChanged { conn: h, remote },
                ConnEvent::Closed(reason, undelivered) => Event::Closed {
                    conn: h,
                    reason,
                    undelivered,
                },
            });
        }
    }

    /// The next trace record, if tracing is on ([`EndpointConfig::trace`]) and any is waiting.
    /// Call it after every input until it returns `None`, like [`Self::poll_event`]. A
    /// connection's records come in the order it made them, starting with
    /// [`TraceEvent::Started`] and ending with [`TraceEvent::Removed`].
    pub fn poll_trace(&mut self) -> Option<TraceRecord> {
        self.trace.pop_front()
    }

    fn remove(&mut self, h: ConnectionHandle) {
        if let Some(mut e) = self.conns.remove(&h) {
            if let Some(tracer) = e.conn.tracer() {
                // `Started` is always recorded, so there is a last instant.
                if let Some(at) = tracer.last_at {
                    tracer.push(at, TraceEvent::Removed);
                }
                collect_trace(&mut self.trace, &mut self.stats, h, tracer);
            }
            self.gone.add(&e.conn.stats());
            if !e.connected {
                let f = &mut self.stats.handshakes_failed;
                match e.conn.close_reason() {
                    Some(CloseReason::IdleTimeout) | None => f.timeout += 1,
                    Some(CloseReason::Refused { .. }) => f.refused += 1,
                    Some(CloseReason::KeyMismatch { .. } | CloseReason::KeyRefused { .. }) => {
                        f.key += 1
                    }
                    Some(CloseReason::ProtocolViolation { .. }) => f.protocol += 1,
                    Some(
                        CloseReason::PeerClosed { .. } | CloseReason::Local | CloseReason::Reset,
                    ) => f.closed += 1,
                }
            }
            self.by_cid.remove(&e.conn.local_cid);
            if let Some(key) = e.conn.initial_route {
                self.by_initial.remove(&key);
            }
            self.reindex(h, e.indexed, Indexed::default());
            debug!(?h, "connection removed");
        }
    }
}

/// Moves what connection `h` recorded into the endpoint's trace queue (and counts what does
/// not fit).
fn collect_trace(
    queue: &mut VecDeque<TraceRecord>,
    stats: &mut EndpointStats,
    conn: ConnectionHandle,
    tracer: &mut Tracer,
) {
    for (at, event) in tracer.events.drain(..) {
        if queue.len() >= MAX_TRACE_QUEUE {
            stats.trace_dropped += 1;
            continue;
        }
        queue.push_back(TraceRecord { conn, at, event });
    }
}

/// Removes `h` from the set under `key` in a one-to-many index (and the set, once empty).
fn multi_remove<K: Hash + Eq>(
    index: &mut HashMap<K, Handles>,
    key: Option<K>,
    h: ConnectionHandle,
) {
    if let Some(k) = key
        && let Some(hs) = index.get_mut(&k)
        && hs.remove(h)
    {
        index.remove(&k);
    }
}

/// Adds `h` under `key` in a one-to-many index.
fn multi_insert<K: Hash + Eq>(
    index: &mut HashMap<K, Handles>,
    key: Option<K>,
    h: ConnectionHandle,
) {
    if let Some(k) = key {
        match index.entry(k) {
            hash_map::Entry::Vacant(v) => {
                v.insert(Handles::One(h));
            }
            hash_map::Entry::Occupied(mut o) => o.get_mut().insert(h),
        }
    }
}

/// The connections under one key of a one-to-many index, in handle order. Almost always one,
/// kept inline: a one-element B-tree set would cost a whole node per key, per index.
#[derive(Debug)]
enum Handles {
    One(ConnectionHandle),
    Many(BTreeSet<ConnectionHandle>),
}

impl Handles {
    fn first(&self) -> Option<&ConnectionHandle> {
        match self {
            Handles::One(h) => Some(h),
            Handles::Many(s) => s.first(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &ConnectionHandle> {
        let (one, many) = match self {
            Handles::One(h) => (Some(h), None),
            Handles::Many(s) => (None, Some(s.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    fn insert(&mut self, h: ConnectionHandle) {
        match self {
            Handles::One(o) if *o == h => {}
            Handles::One(o) => *self = Handles::Many(BTreeSet::from([*o, h])),
            Handles::Many(s) => {
                s.insert(h);
            }
        }
    }

    /// Removes `h`; true if none is left.
    fn remove(&mut self, h: ConnectionHandle) -> bool {
        match self {
            Handles::One(o) => *o == h,
            Handles::Many(s) => {
                s.remove(&h);
                match (s.len(), s.first()) {
                    (1, Some(&only)) => *self = Handles::One(only),
                    _ => return s.is_empty(),
                }
                false
            }
        }
    }
}

/// The first key of the timer set past every deadline at `now`: entries below it are due.
/// (Handles count up from 0 and never reach `u64::MAX`.)
fn after(now: Instant) -> (Instant, ConnectionHandle) {
    (now, ConnectionHandle(u64::MAX))
}

#[cfg(test)]
mod tests {
    //! The bulk channel against a peer that breaks its rules: packets forged with the
    //! connection's real keys, as a hostile (authenticated) peer would send them.

    use std::time::Duration;

    use super::*;
    use crate::close_code;
    use crate::coding::put_varint;
    use crate::stream::MAX_MESSAGE_SIZE;
    use crate::wire::Frame;

    struct Two {
        now: Instant,
        a: Endpoint,
        b: Endpoint,
        ca: ConnectionHandle,
        cb: ConnectionHandle,
        events_b: Vec<Event>,
    }

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 2);

    impl Two {
        fn new(config: TransportConfig) -> Self {
            let now = Instant::now();
            let cfg = EndpointConfig {
                transport: config,
                ..EndpointConfig::default()
            };
            let mut a = Endpoint::new(cfg.clone(), 1);
            let mut b = Endpoint::new(cfg, 2);
            b.set_accept_incoming(true);
            let ca = a.connect(now, B).expect("room");
            let mut two = Self {
                now,
                a,
                b,
                ca,
                cb: ConnectionHandle(u64::MAX),
                events_b: Vec::new(),
            };
            two.run(Duration::from_secs(5));
            two.cb = two
                .events_b
                .iter()
                .find_map(|e| match e {
                    Event::Connected { conn, .. } => Some(*conn),
                    _ => None,
                })
                .expect("connected");
            two
        }

        /// Exchanges datagrams (a perfect network, 1 ms each way) for `d` of virtual time.
        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                while let Some(t) = self.a.poll_transmit(self.now) {
                    self.b.handle_datagram(self.now, A, &t.contents);
                }
                while let Some(t) = self.b.poll_transmit(self.now) {
                    self.a.handle_datagram(self.now, B, &t.contents);
                }
                while self.a.poll_event().is_some() {}
                while let Some(e) = self.b.poll_event() {
                    self.events_b.push(e);
                }
                self.now += Duration::from_millis(1);
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
        }

        /// `a` sends `b` a DATA packet holding exactly `frames`.
        fn forge(&mut self, frames: &[Frame<'_>]) {
            let mut plain = Vec::new();
            for f in frames {
                f.encode(&mut plain);
            }
            let now = self.now;
            let e = self.a.conns.get_mut(&self.ca).expect("open");
            let datagram = e.conn.forge_data_packet(now, &plain);
            self.b.handle_datagram(now, A, &datagram);
        }

        fn closed_b(&self) -> Option<&CloseReason> {
            self.events_b.iter().find_map(|e| match e {
                Event::Closed { reason, .. } => Some(reason),
                _ => None,
            })
        }
    }

    fn violation(code: u64) -> impl Fn(&CloseReason) -> bool {
        move |r| matches!(r, CloseReason::ProtocolViolation { code: c, .. } if *c == code)
    }

    #[test]
    fn bulk_beyond_the_advertised_limit_closes_with_flow_control() {
        let mut t = Two::new(TransportConfig::default());
        // Up to the initial limit before any BULK_MAX_DATA; the first BULK frame makes `b`
        // announce its window (`consumed + window`, nothing consumed), and up to that too.
        let initial = crate::connection::INITIAL_MAX_DATA;
        let window = t.b.config().transport.bulk_receive_window;
        assert!(window > initial);
        for offset in [initial - 1, window - 1] {
            t.forge(&[Frame::Bulk { offset, data: &[0] }]);
            t.run(Duration::from_millis(5));
            assert_eq!(t.closed_b(), None, "byte {offset} is within the limit");
        }
        assert_eq!(t.b.bulk_recv_buffered(t.cb), Some(2));
        // One byte beyond what `b` ever advertised.
        t.forge(&[Frame::Bulk {
            offset: window,
            data: &[0],
        }]);
        t.run(Duration::from_millis(5));
        let reason = t.closed_b().expect("closed");
        assert!(violation(close_code::FLOW_CONTROL)(reason), "{reason:?}");
    }

    #[test]
    fn without_a_bulk_max_data_the_initial_limit_binds() {
        let transport = TransportConfig {
            bulk_receive_window: crate::connection::INITIAL_MAX_DATA,
            ..TransportConfig::default()
        };
        let mut t = Two::new(transport);
        let limit = crate::connection::INITIAL_MAX_DATA;
        t.forge(&[Frame::Bulk {
            offset: limit - 1,
            data: &[0],
        }]);
        t.run(Duration::from_millis(5));
        assert_eq!(t.closed_b(), None);
        t.forge(&[Frame::Bulk {
            offset: limit,
            data: &[],
        }]);
        t.run(Duration::from_millis(5));
        assert_eq!(
            t.closed_b(),
            None,
            "a zero-length frame at the limit is fine"
        );
        t.forge(&[Frame::Bulk {
            offset: limit,
            data: &[0],
        }]);
        t.run(Duration::from_millis(5));
        let reason = t.closed_b().expect("closed");
        assert!(violation(close_code::FLOW_CONTROL)(reason), "{reason:?}");
    }

    #[test]
    fn a_bulk_message_above_the_maximum_closes_at_its_length_prefix() {
        let mut t = Two::new(TransportConfig::default());
        let mut prefix = Vec::new();
        put_varint(&mut prefix, MAX_MESSAGE_SIZE as u64 + 1);
        t.forge(&[Frame::Bulk {
            offset: 0,
            data: &prefix,
        }]);
        t.run(Duration::from_millis(5));
        let reason = t.closed_b().expect("closed");
        assert!(
            violation(close_code::MESSAGE_TOO_LARGE)(reason),
            "{reason:?}"
        );
    }

    #[test]
    fn bulk_gaps_beyond_the_segment_cap_are_dropped_unacknowledged_and_memory_stays_bounded() {
        let mut t = Two::new(TransportConfig::default());
        // One byte per gap: each would be a separate segment. The cap holds, the packets
        // beyond it are dropped whole (not acknowledged, so an honest sender would resend).
        let segments = crate::stream::MAX_SEGMENTS as u64;
        for i in 0..segments + 100 {
            t.forge(&[Frame::Bulk {
                offset: 10 + 2 * i,
                data: &[7],
            }]);
        }
        t.run(Duration::from_millis(5));
        assert_eq!(t.closed_b(), None, "dropping is not closing");
        assert_eq!(t.b.bulk_recv_buffered(t.cb), Some(segments));
        let stats = t.b.stats(t.cb).expect("open");
        assert_eq!(stats.no_buffer_dropped, 100, "{stats:?}");
        // The chat stream still works meanwhile: its own reassembly is untouched.
        t.a.send(t.ca, b"still here").expect("room");
        t.run(Duration::from_millis(20));
        assert!(
            t.events_b
                .iter()
                .any(|e| matches!(e, Event::Message { data, .. } if data[..] == b"still here"[..]))
        );
        // And the gaps, once filled in order, deliver what they held.
        let fill: Vec<u8> = (0..10 + 2 * segments).map(|_| 0).collect();
        t.forge(&[Frame::Bulk {
            offset: 0,
            data: &fill[..10],
        }]);
        t.run(Duration::from_millis(5));
        assert_eq!(t.closed_b(), None);
    }
}
