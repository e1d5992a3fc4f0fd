//! The sans-IO chat server core: sessions, users (keys), nicks, rooms, DMs, presence,
//! flood control and limits. No sockets, no tokio, no clock: the runner feeds it events with
//! the time (`now_ms`, milliseconds since the Unix epoch) and carries out its [`Output`]s.
//!
//! # How a message travels through it
//!
//! [`Server::message`] decodes a `say`, checks flood control, size, names and membership,
//! gives the message the next id of its conversation, and emits [`Output::Persist`]. Nothing is
//! shown to anyone yet. Only when the runner reports the commit ([`Server::committed`]) does
//! the core fan the message out to every session of every member (the sender's own sessions
//! included, so that all devices of one key show the same conversation) and acknowledge it to
//! the sender. So an acknowledged message is on disk, and a message anybody saw is on disk:
//! after a crash no id is ever reused for a different message.
//!
//! # Presence without storms
//!
//! A join, part or quit is not broadcast at once: it is queued on its room and flushed after
//! `presence_window_ms` as one `presence` message carrying every change of that window (and
//! flushed early, before any chat message in that room, to keep order). A mass reconnect of
//! `n` members therefore costs each member about one message per window, not `n`. The member
//! list goes only to the joining user (`joined`), never to everyone.
//!
//! # Bounded output
//!
//! The core counts the bytes it has queued for each session and not yet seen taken by the
//! transport (the runner reports that with [`Server::sent`]). Replays (a join's history, a
//! resume, DMs received while away, a slow reader catching up) are never encoded up front:
//! each session keeps one cursor per conversation it is owed, and the core encodes the next
//! messages only while that session's queue is under [`PAGE_BYTES`]: from the replay cache,
//! or, for what the cache no longer holds, from a page read from the store
//! ([`Output::ReadAfter`], [`REPLAY_READ`] messages or about [`PAGE_BYTES`] at most, one at a
//! time per session). So a client away for any number of messages gets every one, and the
//! server holds at most a page for it. A live message for a session that is behind joins its
//! replay instead of overtaking it (the replay takes it from the cache, or reads it back from
//! the store), so a client always sees a conversation in id order, with no gap and nothing
//! twice. Everything else counts against
//! [`MAX_QUEUED_BYTES`]; a session that would pass it is closed as too slow at once (its
//! queue dropped, its requests ignored) and resumes on reconnect. So one request, however
//! long, costs a bounded amount of memory.
//!
//! # DMs received while away
//!
//! They stay in the store. When their recipient connects, the core asks for the DM
//! conversations holding some, [`UNDELIVERED_PAGE`] at a time, and replays each like a resume;
//! other DM replays (resumes, new DMs) wait for the pages, rooms do not. A DM is marked
//! delivered (`Op::DmCursor`) only as it is queued for one of the recipient's sessions: live,
//! or by a replay (marked when it ends, or when its session does).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use bytes::Bytes;
use chirp_store::{Loaded, NewMessage, Op, Outcome, Record, kind};
use tracing::{debug, info, warn};

use crate::bus::Subject;
use crate::claims::{ClaimLimiter, LookAlikes, Refused};
use crate::names;
use crate::wire::{self, ClientMsg, JoinReq, Msg, Presence, Resume, RoomInfo, ServerMsg, code};

/// A client's identity: its static public key.
pub type Key = [u8; 32];
/// The runner's name for one connection.
pub type SessionId = u64;

/// One day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;
/// Days without connecting after which a nick may be claimed by another key, by default.
pub const DEFAULT_NICK_EXPIRY_DAYS: i64 = 180;
/// No nick expires in the first minutes after a (re)start: a user connected when the server
/// stopped was seen later than the store says, and gets this long to come back.
const RESTART_GRACE_MS: i64 = 10 * 60 * 1000;
/// A nick owner's last-seen time is written at most this often (at a connect, at the last
/// disconnect, every this long while connected, and at shutdown), so expiry is exact to within
/// this; after a crash the store is at most about this much behind for a connected owner.
const SEEN_RESOLUTION_MS: i64 = 60 * 60 * 1000;
/// Connected nick owners whose last-seen time is refreshed in one [`Server::handle_timeout`]
/// at most; the rest are due at once and wait for the next call.
const SEEN_REFRESH_PER_TICK: usize = 256;
/// Most source networks (IPv4 addresses, IPv6 /64s, /56s and /48s) whose recent nick claims
/// are remembered. While that many have budgets not yet refilled, a key's first nick from a
/// network not among them is refused ([`Refused::Busy`]) rather than one of them forgotten.
const MAX_CLAIM_NETS: usize = 65_536;
/// Expired nick bindings aged out in one [`Server::handle_timeout`] at most (one store batch);
/// the rest are due at once and wait for the next call.
const AGE_OUT_PER_TICK: usize = 1024;

/// Server settings (every one can be set in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Messages replayed on join.
    pub history_on_join: usize,
    /// Messages kept in memory per conversation, for replay on join and after a reconnect
    /// (older ones are read from the store).
    pub replay_cache: usize,
    /// Largest message text, in bytes.
    pub max_text: usize,
    /// Largest file a user may offer another (a DM file transfer, `--max-file-size`): a
    /// larger offer is refused with `file_refused` (`too_large`). See the `files` module.
    pub max_file_size: u64,
    /// Flood control: burst.
    pub burst: u32,
    /// Flood control: sustained requests per second.
    pub per_sec: u32,
    /// Rooms one user may be in at once.
    pub max_rooms_per_user: usize,
    /// Sessions at once from one source IP address.
    pub max_sessions_per_ip: usize,
    /// Presence changes are batched over this window.
    pub presence_window_ms: i64,
    /// Largest `/history` page.
    pub max_history_page: u32,
    /// Most names in a `joined` or `who` answer.
    pub max_names: usize,
    /// Retention by age (as in the store): older messages are never replayed from memory.
    pub max_age_ms: Option<i64>,
    /// Retention by count (as in the store): the replay cache of a conversation never holds
    /// more ([`ServerConfig::cache_cap`]).
    pub max_per_conv: Option<u64>,
    /// A nick whose key has not connected for this long may be claimed by another key
    /// (`None`: nicks never expire).
    pub nick_expiry_ms: Option<i64>,
    /// New nicks (a first nick for a key) claimed at once from one source network (an IPv4
    /// address or an IPv6 /64; the /56 around a /64 gets twice as many, the /48 four times,
    /// and a claim must fit all three)...
    pub nick_claim_burst: u32,
    /// ...and per hour after that.
    pub nick_claims_per_hour: u32,
    /// Joins one key may make at once (`join` requests; a `hello`'s rooms are bounded by
    /// `max_rooms_per_user`)...
    pub join_burst: u32,
    /// ...and per hour after that.
    pub joins_per_hour: u32,
    /// Nick changes one key may make at once...
    pub nick_change_burst: u32,
    /// ...and per hour after that.
    pub nick_changes_per_hour: u32,
    /// Rooms one key may create per hour (at most this many at once too).
    pub rooms_per_hour: u32,
    /// Server operators, by key fingerprint: they ban server-wide, list sessions and
    /// disconnect one, and count as owner in every room.
    pub opers: Vec<chirp_keys::Fingerprint>,
    /// This server is a node of a cluster (`None`: it is alone, the only writer of its
    /// database). See the `cluster` module.
    pub cluster: Option<ClusterConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            history_on_join: 50,
            replay_cache: 256,
            max_text: 8 * 1024,
            max_file_size: files::DEFAULT_MAX_FILE_SIZE,
            burst: 10,
            per_sec: 5,
            max_rooms_per_user: 32,
            max_sessions_per_ip: 16,
            presence_window_ms: 200,
            max_history_page: 200,
            max_names: 2000,
            max_age_ms: None,
            max_per_conv: None,
            nick_expiry_ms: Some(DEFAULT_NICK_EXPIRY_DAYS * DAY_MS),
            nick_claim_burst: 5,
            nick_claims_per_hour: 6,
            join_burst: 20,
            joins_per_hour: 120,
            nick_change_burst: 3,
            nick_changes_per_hour: 30,
            rooms_per_hour: 20,
            opers: Vec::new(),
            cluster: None,
        }
    }
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Cluster: publish `data` (an encoded [`crate::bus::Bus`]) on the bus.
    Publish {
        /// Where.
        subject: Subject,
        /// What.
        data: Bytes,
    },
    /// Cluster: subscribe to `subject`, and hand what arrives to [`Server::bus`].
    Follow(Subject),
    /// Cluster: unsubscribe.
    Unfollow(Subject),
    /// Cluster: once every subscription asked for so far is active at the bus, read from
    /// the store what the bus may have missed, and hand it back:
    /// - for a room (`#…`), its moderation entries ([`chirp_store::Storage::moderation`]) to
    ///   [`Server::moderation_loaded`], then its highest id
    ///   ([`chirp_store::Storage::last_id`]) to [`Server::synced`];
    /// - for a DM conversation (`@…`), its highest id to [`Server::synced`];
    /// - for `""`, the server-wide moderation entries to [`Server::moderation_loaded`].
    Sync {
        /// The conversation, or `""`.
        conv: String,
    },
    /// Send one chat-protocol message to a session.
    Send {
        /// The session.
        to: SessionId,
        /// The encoded message.
        data: Bytes,
    },
    /// Close a session: after sending what was queued for it (an error saying why), or, if
    /// `now`, at once, dropping what is queued for it (a client too slow to read it).
    Close {
        /// The session.
        session: SessionId,
        /// Why, for the transport's CLOSE.
        reason: String,
        /// Drop the session's queue and abort its connection now: waiting for a client that
        /// does not read would hold its queue (and the transport's send buffer) for ever.
        now: bool,
    },
    /// Relay RELAY datagrams with `token` between the two addresses of `pair` (PROTOCOL.md
    /// §11: `chirp_transport::Handle::relay`), or stop (`None`). Emitted again with new
    /// addresses when one of the two sessions moves, and with `None` when either ends.
    Relay {
        /// The pair's token.
        token: [u8; 16],
        /// The two sessions' addresses.
        pair: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
        /// At most this many bytes of RELAY datagrams, both ways together, for a pair
        /// introduced for a file ([`files::relay_cap`] of its size); `None`: no cap. Set
        /// with a new pair; a move keeps the pair's cap and count.
        cap: Option<u64>,
    },
    /// Write these operations durably, then call [`Server::committed`] with `token`.
    Persist {
        /// Identifies the batch.
        token: u64,
        /// What to write.
        ops: Vec<Op>,
    },
    /// Read a history page from the store, then call [`Server::history_loaded`].
    ReadHistory {
        /// Who asked.
        session: SessionId,
        /// The request's `id`, to hand back.
        id: Option<u64>,
        /// The conversation.
        conv: String,
        /// Ids below this.
        before: Option<u64>,
        /// How many.
        limit: usize,
    },
    /// Read what a session missed of `conv` and the replay cache no longer holds: a page of
    /// [`chirp_store::Reader::after`] (ids `after + 1..=upto`, at most `limit` messages and
    /// about `max_bytes`), then call [`Server::replay_loaded`] with `token`, or with the error.
    ReadAfter {
        /// The session being replayed to.
        session: SessionId,
        /// Names this read, to hand back.
        token: u64,
        /// The conversation.
        conv: String,
        /// Ids after this one...
        after: u64,
        /// ...up to this one (all committed).
        upto: u64,
        /// At most this many messages.
        limit: usize,
        /// Stop once their texts and nicks reach this many bytes.
        max_bytes: usize,
    },
    /// Read the read markers of `key` ([`chirp_store::Storage::markers`], at most `limit`),
    /// then call [`Server::markers_loaded`].
    ReadMarkers {
        /// The user.
        key: Key,
        /// At most this many.
        limit: usize,
    },
    /// Search `conv` for the messages holding every word of `terms`
    /// ([`chirp_store::Storage::search`]), then call [`Server::search_loaded`].
    Search {
        /// Who asked.
        session: SessionId,
        /// The request's `id`, to hand back.
        id: Option<u64>,
        /// The conversation.
        conv: String,
        /// The words ([`chirp_store::search_terms`]).
        terms: Vec<String>,
        /// Ids below this.
        before: Option<u64>,
        /// How many at most (hand it back too).
        limit: usize,
    },
    /// Read the DM conversations in which `key` has undelivered messages (a page of
    /// [`chirp_store::Reader::undelivered`]), then call [`Server::undelivered_loaded`].
    ReadUndelivered {
        /// The session that connected.
        session: SessionId,
        /// Its user.
        key: Key,
        /// Conversations after this one, in name order.
        after: Option<String>,
        /// How many conversations.
        limit: usize,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sessions connected.
    pub sessions: usize,
    /// Users (keys) online.
    pub users: usize,
    /// Rooms with members.
    pub rooms: usize,
    /// Room members (a user in two rooms counts twice): members here, not other nodes'.
    pub members: usize,
    /// Messages accepted from this node's clients and handed to the store.
    pub accepted: u64,
    /// Messages stored since start.
    pub messages: u64,
    /// Messages queued for a session as they came (fan-out) or as it caught up (replay):
    /// one per message per session.
    pub deliveries: u64,
    /// History pages answered from the memory cache.
    pub history_cached: u64,
    /// History pages read from the store.
    pub history_reads: u64,
    /// Searches handed to the store.
    pub searches: u64,
    /// Undecodable requests.
    pub malformed: u64,
    /// Requests refused by flood control.
    pub flood_refused: u64,
    /// Sessions closed because their output passed [`MAX_QUEUED_BYTES`].
    pub too_slow: u64,
    /// Rendezvous introductions made (`meet` answered on both sides).
    pub meets: u64,
    /// DM file offers forwarded to their recipient (`file_offer`).
    pub file_offers: u64,
    /// Edits stored (asked for here).
    pub edits: u64,
    /// Deletions stored (asked for here).
    pub deletes: u64,
    /// Reactions stored (asked for here).
    pub reactions: u64,
    /// Reactions taken back (asked for here).
    pub unreactions: u64,
    /// Typing notices forwarded.
    pub typing: u64,
    /// Typing notices dropped by the rate limit: more than one per user and conversation in
    /// [`crate::wire::TYPING_INTERVAL_MS`].
    pub typing_dropped: u64,
    /// Typing notices dropped because their sender may not speak in the room (muted, or not
    /// voiced in a moderated room).
    pub typing_refused: u64,
}

/// Token bucket in thousandths of a token, so that refill needs no floating point.
#[derive(Debug, Clone)]
struct Bucket {
    milli: u64,
    last_ms: i64,
}

impl Bucket {
    /// Adds what `per_sec` brings from `last_ms` to `now_ms`, up to the cap.
    fn refill(&mut self, now_ms: i64, burst: u32, per_sec: u32) {
        let cap = u64::from(burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0) as u64;
        // per_sec tokens per 1000 ms = per_sec milli-tokens per ms. Refill stops at the cap;
        // a new session's extra token (its hello's) is above it and stays until spent.
        if self.milli < cap {
            self.milli = cap.min(
                self.milli
                    .saturating_add(elapsed.saturating_mul(u64::from(per_sec))),
            );
        }
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn take(&mut self, now_ms: i64, burst: u32, per_sec: u32) -> bool {
        self.refill(now_ms, burst, per_sec);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Session {
    key: Key,
    ip: IpAddr,
    /// With `ip`, the address the transport observes for the session ([`Server::observed`]).
    port: u16,
    /// Set by `hello`.
    client: Option<u64>,
    /// `echo` of `hello`: when false, the `ack` of this session's room messages takes the
    /// place of their own copy, in order (see [`Server::message_committed`]).
    echo: bool,
    bucket: Bucket,
    /// Bytes of `Output::Send` for this session that the transport has not taken yet.
    queued: usize,
    /// Being closed by the server: nothing more is queued for it, and its requests are
    /// ignored.
    closing: bool,
    /// What this session is owed, one cursor per conversation, streamed in `order`.
    replays: HashMap<String, Replay>,
    order: VecDeque<String>,
    /// DM conversations whose replay waits (outside `order`) until the undelivered DMs have
    /// all been read: older undelivered messages of theirs may be in a page not read yet.
    held: Vec<String>,
    /// Replays from the current page of undelivered DMs not finished yet: the next page is
    /// read when none is left.
    store_owed: usize,
    /// The user's DMs received while it was away, read from the store in pages.
    offline: Offline,
    /// Its `history` requests read from the store and not answered yet.
    history_reads: usize,
}

impl Session {
    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.ip, self.port)
    }

    /// Gives back the memory of the replay tables once they are empty: every session has
    /// replays when it joins, and an idle one keeps none (issue 14: an idle session must be
    /// small).
    fn release_drained(&mut self) {
        if self.replays.is_empty() {
            self.replays = HashMap::new();
        }
        if self.order.is_empty() {
            self.order = VecDeque::new();
        }
        if self.held.is_empty() {
            self.held = Vec::new();
        }
    }

    /// Whether the user's undelivered DMs are still being read from the store (a page was
    /// asked for, or more pages are to come): a DM conversation not covered by a page yet
    /// waits, so that no newer DM overtakes (and marks delivered) an older one.
    fn reading_dms(&self) -> bool {
        matches!(self.offline, Offline::Reading | Offline::More(_))
    }

    /// Whether what this session is sent of a DM conversation marks it delivered in the store
    /// (not after the undelivered DMs could not be read: the next connection reads them again).
    fn marks_dms(&self) -> bool {
        self.offline != Offline::Failed
    }

    /// The delivery marks of the DM replays in progress: what they sent is delivered.
    fn dm_marks(&self) -> Vec<Op> {
        if !self.marks_dms() {
            return Vec::new();
        }
        self.replays
            .iter()
            .filter(|(_, r)| r.delivered > 0)
            .map(|(conv, r)| Op::DmCursor {
                key: self.key,
                conv: conv.clone(),
                upto: r.delivered,
            })
            .collect()
    }
}

/// A conversation being streamed to one session: from the replay cache, and from the store
/// (a page at a time) for what the cache no longer holds.
#[derive(Debug)]
struct Replay {
    /// The last id sent (or known not to exist).
    after: u64,
    /// A first join: ids up to `upto` are history, and `history_end` follows them.
    history: Option<HistoryPart>,
    /// `joined` comes first (a join's answer waits for its turn with its replay).
    joined: bool,
    /// From a page of undelivered DMs: it runs while later pages are still to be read.
    from_store: bool,
    /// Waiting in `Session::held` for the undelivered DMs to be read.
    held: bool,
    /// A DM conversation: the highest id this replay has sent, the delivery mark it leaves
    /// in the store (0: none yet).
    delivered: u64,
    /// Messages after `after` read from the store, oldest first: one page at most
    /// ([`REPLAY_READ`] messages, about [`PAGE_BYTES`]).
    page: VecDeque<Record>,
    /// A store read in flight ([`Output::ReadAfter`]): its token and the last id it covers.
    /// The replay waits for it.
    reading: Option<(u64, u64)>,
}

impl Replay {
    /// A resume: everything after `after`, as live messages.
    fn after(after: u64) -> Self {
        Replay {
            after,
            history: None,
            joined: false,
            from_store: false,
            held: false,
            delivered: 0,
            page: VecDeque::new(),
            reading: None,
        }
    }
}

/// What a replay sends next.
enum Next {
    /// The oldest message of the page read from the store.
    Page(Record),
    /// A message from the replay cache.
    Cached(Record),
    /// Nothing at hand: read the store up to this id.
    Read(u64),
    /// Nothing more: the replay is over.
    End,
}

#[derive(Debug)]
struct HistoryPart {
    upto: u64,
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Offline {
    /// Nothing (more) to read.
    Done,
    /// A page was asked for: DM replays not from a page wait for the read to finish, and
    /// live DMs join them meanwhile, so that no newer DM overtakes an older one.
    Reading,
    /// Read the conversations after this one once the current page's replays are done
    /// (DM replays not from a page still wait).
    More(String),
    /// The store could not say: DMs flow, but mark nothing delivered.
    Failed,
}

#[derive(Debug)]
struct User {
    nick: String,
    sessions: Vec<SessionId>,
    rooms: RoomSet,
    /// Read markers (`reading`).
    markers: reading::Markers,
}

/// A user's rooms, in name order: a sorted `Vec` (at most `max_rooms_per_user`, a few
/// dozen), which costs a fraction of a B-tree node for the one or two rooms most users are
/// in (issue 14: an idle session must be small).
#[derive(Debug, Default)]
struct RoomSet(Vec<String>);

impl RoomSet {
    fn contains(&self, room: &str) -> bool {
        self.0.binary_search_by(|r| r.as_str().cmp(room)).is_ok()
    }

    /// Adds `room`; false if it was there.
    fn insert(&mut self, room: String) -> bool {
        match self.0.binary_search(&room) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, room);
                true
            }
        }
    }

    /// Removes `room`; false if it was not there.
    fn remove(&mut self, room: &str) -> bool {
        match self.0.binary_search_by(|r| r.as_str().cmp(room)) {
            Ok(i) => {
                self.0.remove(i);
                if self.0.is_empty() {
                    self.0 = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }
}

impl IntoIterator for RoomSet {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a RoomSet {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[derive(Debug, Default)]
struct Room {
    /// Members connected here.
    members: BTreeSet<Key>,
    pending: Vec<Presence>,
    /// Cluster: members connected to other nodes, with the nodes.
    remote: HashMap<Key, cluster::RemoteMember>,
}

#[derive(Debug, Default)]
struct Conv {
    /// The highest id the store has given (ids come from the store, in the transaction that
    /// stores the message): every message up to it that exists is in the store. Commits come
    /// in id order.
    committed: u64,
    /// The newest stored messages (`replay_cache` at most), oldest first.
    recent: VecDeque<Record>,
    /// What `recent` holds, in bytes ([`record_bytes`]).
    bytes: usize,
    /// When `recent` was last added to (the [`Server::cache_order`] tick), 0: never.
    used: u64,
    /// `recent` was emptied to keep the caches under [`MAX_CACHE_BYTES`]: an empty cache does
    /// not mean an empty conversation.
    trimmed: bool,
    /// Cluster: `committed` is the store's, as of a read made after this node subscribed to
    /// the conversation's subject ([`Output::Sync`]); until then messages wait in `backlog`
    /// and joins in `waiting`. Alone, a server's conversations are always in sync.
    synced: bool,
    /// Cluster: a [`Output::Sync`] is in flight.
    syncing: bool,
    /// Cluster: messages that arrived while not in sync.
    backlog: Vec<cluster::Arrival>,
    /// Cluster: joins (session, resume point) waiting for the sync.
    waiting: Vec<(SessionId, Option<u64>)>,
}

impl Conv {
    fn push(&mut self, r: Record, cap: usize) -> isize {
        let mut delta = record_bytes(&r) as isize;
        self.recent.push_back(r);
        while self.recent.len() > cap {
            delta -= self.pop().map_or(0, |b| b as isize);
        }
        self.bytes = self.bytes.saturating_add_signed(delta);
        delta
    }

    /// Drops the oldest cached message; its bytes.
    fn pop(&mut self) -> Option<usize> {
        let b = record_bytes(&self.recent.pop_front()?);
        Some(b)
    }
}

/// The memory a cached record holds: the struct and its strings.
fn record_bytes(r: &Record) -> usize {
    std::mem::size_of::<Record>()
        + r.conv.len()
        + r.from_nick.len()
        + r.to_nick.as_ref().map_or(0, String::len)
        + r.text.len()
}

/// The replay caches of all conversations together hold at most this many bytes of messages
/// ([`record_bytes`]): past it, the caches of the conversations written to least recently are
/// emptied (their messages are read from the store when needed). The cache saves store reads
/// for joins, resumes and slow readers of busy conversations; 16 MiB is 256 messages of about
/// 300 bytes for 200 conversations, and keeps the whole of it within the 20 MB that relaying
/// a million messages may grow the server by (issue 14), beside [`MAX_REF_BYTES`]. One
/// conversation's cache (`replay_cache` messages of at most `max_text`, 2 MiB by default)
/// always fits.
const MAX_CACHE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
enum Pending {
    /// A `say` being stored: the message, and the sending client's instance and `c`.
    Message {
        msg: NewMessage,
        client: u64,
        c: u64,
    },
    /// A nick binding (op `op` of its batch), in a cluster or when it claims an expired
    /// nick: published once the store has bound it, undone if another node's key got it
    /// first or the expired owner turns out to have been seen since. `old`: the key's nick
    /// before.
    Nick {
        op: usize,
        key: Key,
        nick: String,
        old: Option<String>,
    },
    /// The release of `key`'s expired `nick` (op `op` of its batch): undone if the store has
    /// seen the owner since (another node of a cluster did), announced to the other nodes
    /// otherwise.
    Release { op: usize, key: Key, nick: String },
    /// A moderation event being stored (op 0 of its batch), shown once stored.
    Event { msg: NewMessage },
    /// Cluster: what to tell the other nodes once the batch is stored (a moderation change).
    Publish(crate::bus::Bus),
    /// An edit, deletion or reaction of message `target` asked for by `session` (op 0 of its
    /// batch): shown once stored, or `session` is told why not.
    Amend { session: SessionId, target: u64 },
}

/// What is remembered of a `(key, client, c)` reference: a fixed 32 bytes, no heap. The
/// conversation is kept as a keyed hash of its name (the resend names it again, and the name
/// it names is checked against the hash), not as its name: a DM conversation's name is 130
/// bytes, which made an entry of 100,000 several times larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefState {
    InFlight,
    Stored { conv: u64, id: u64, ts: i64 },
}

/// A `(key, client instance, c)` reference.
type RefKey = (Key, u64, u64);

/// Most remembered `(key, client, c)` references, for recognising resent messages: the last
/// `MAX_REFS / 2` messages at least are recognised, however many were sent since. A resend
/// comes after a lost `ack`, seconds later; 50,000 messages is minutes of a busy server.
/// At 81 bytes a slot (key 48, state 32, control 1) in tables of 65,536 slots, the two
/// generations cost at most [`MAX_REF_BYTES`].
const MAX_REFS: usize = 100_000;
#[cfg(test)]
/// The memory [`Refs`] holds at most: two tables of `(MAX_REFS / 2 * 8 / 7)` rounded up to a
/// power of two (65,536) slots of a key, a state and a control byte (hashbrown's layout).
const MAX_REF_BYTES: usize =
    2 * 65_536 * (std::mem::size_of::<RefKey>() + std::mem::size_of::<RefState>() + 1);

/// Recent message references, in two generations: new ones go into `current`; when it holds
/// `MAX_REFS / 2`, it becomes `previous` (the older `previous` is dropped whole). So the
/// bound is in entries and in bytes, with no per-entry order list to keep.
#[derive(Debug, Default)]
struct Refs {
    current: HashMap<RefKey, RefState>,
    previous: HashMap<RefKey, RefState>,
}

impl Refs {
    fn get(&self, r: &RefKey) -> Option<RefState> {
        self.current
            .get(r)
            .or_else(|| self.previous.get(r))
            .copied()
    }

    fn insert(&mut self, r: RefKey, state: RefState) {
        self.previous.remove(&r);
        self.current.insert(r, state);
        if self.current.len() >= MAX_REFS / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
    }

    fn remove(&mut self, r: &RefKey) {
        self.current.remove(r);
        self.previous.remove(r);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// The bytes its tables hold (slots allocated, full or not).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<RefKey>() + std::mem::size_of::<RefState>() + 1;
        (self.current.capacity() + self.previous.capacity()) * 8 / 7 * slot
    }
}
/// Replays (and live messages) are encoded for a session only while less than this is queued
/// for it: enough to keep a fast link busy, and what a replay costs in memory, however much
/// it replays.
pub const PAGE_BYTES: usize = 64 * 1024;
/// Bound on the bytes queued for one session (and not yet taken by its transport, which
/// itself buffers at most its send buffer). Replays stop at [`PAGE_BYTES`]; this leaves room
/// for two of the largest `history` pages (200 messages of 8 KiB) on top of the answers and
/// events of the moment. A session whose queue would pass it is closed ("too slow"); its
/// client reconnects and resumes from the last ids it saw. The bound grows with the settings
/// if their largest history page needs more.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// Store reads ([`Output::ReadHistory`], [`Output::ReadAfter`], [`Output::ReadUndelivered`])
/// handed to the runner at once, server-wide; the others wait in a queue, in order, for one to
/// finish. The runner reads on one connection, one read at a time: more in flight would buy
/// nothing and hold a blocking thread (and a page's memory) each while they wait for it.
pub const MAX_READS: usize = 4;
/// `history` requests of one session read from the store at once (in flight, or waiting for
/// one of [`MAX_READS`]); one more is refused with `busy` (and its `history_end`) until one
/// is answered. Each of its replays and its undelivered DMs read one page at a time of their
/// own, so a session has at most this many reads plus two outstanding, and the queue of
/// waiting reads is bounded by the sessions.
pub const MAX_HISTORY_READS: usize = 2;
/// DM conversations with undelivered messages read from the store at a time.
const UNDELIVERED_PAGE: usize = 32;
/// Most messages one store read of a replay brings ([`Output::ReadAfter`]); it also stops at
/// about [`PAGE_BYTES`] of text, so a replay holds one such page at most, however much a
/// session missed.
pub const REPLAY_READ: usize = 256;
/// Most DM conversations one `hello` resumes (after dropping those with nothing owed): a
/// replay cursor each, and their output paced like every replay. Clients list their most
/// recent conversations first; the rest are refused with one `too_many_rooms`.
pub const MAX_DM_RESUMES: usize = 256;

/// The server core. See the module documentation.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    /// Boxed: a session is a few hundred bytes, and a hash table keeps up to twice as many
    /// slots as entries.
    sessions: HashMap<SessionId, Box<Session>>,
    per_ip: HashMap<IpAddr, usize>,
    users: HashMap<Key, User>,
    /// Registered nicks: fold → (nick, key), and key → nick.
    nick_owner: HashMap<String, (String, Key)>,
    nick_of: HashMap<Key, String>,
    /// Registered nicks by look-alike key, for refusing look-alikes of another key's nick.
    nick_look: LookAlikes<Key>,
    /// When each nick owner was last seen (as last written to the store), for nick expiry.
    seen: HashMap<Key, i64>,
    /// Connected nick owners by when their last-seen time is next due to be refreshed
    /// (`seen` + [`SEEN_RESOLUTION_MS`]), each key once (`seen_queued`); a key that is no
    /// longer connected leaves when its turn comes.
    seen_due: BinaryHeap<Reverse<(i64, Key)>>,
    seen_queued: HashSet<Key>,
    /// Nick owners not connected, by last-seen time: the oldest binding expires first. With
    /// nick expiry on, a binding is aged out (forgotten here and released in the store) once
    /// it has expired, so the nick tables hold the keys seen within the expiry period, not
    /// every key ever seen ([`Server::age_out`]).
    by_seen: BTreeSet<(i64, Key)>,
    /// New nick claims per source network.
    claims: ClaimLimiter,
    /// Rooms that exist (members, messages or a topic) by look-alike key.
    room_look: LookAlikes<String>,
    /// The time of the first connection since this core started.
    started_ms: Option<i64>,
    rooms: HashMap<String, Room>,
    topics: HashMap<String, (String, String)>,
    convs: HashMap<String, Conv>,
    /// Conversations with cached messages by when they were last written to, oldest first,
    /// and the bytes all caches hold: kept under [`MAX_CACHE_BYTES`].
    cache_order: BTreeMap<u64, String>,
    cache_bytes: usize,
    cache_tick: u64,
    refs: Refs,
    /// Keys the hashes of conversation names in `refs`, so that no client can pick names
    /// whose hashes collide.
    conv_hasher: std::hash::RandomState,
    pending: HashMap<u64, Vec<Pending>>,
    next_token: u64,
    /// Names the next [`Output::ReadAfter`].
    next_read: u64,
    presence_due: Option<i64>,
    dirty_rooms: BTreeSet<String>,
    out: VecDeque<Output>,
    stats: ServerStats,
    /// [`MAX_QUEUED_BYTES`], or more if the settings allow larger history pages.
    queue_limit: usize,
    /// Cluster state (`None`: alone).
    cluster: Option<cluster::State>,
    /// Room roles, bans, mutes, invitations and modes; server-wide bans; per-key rates.
    moderation: moderation::Moderation,
    /// Rendezvous requests, per session that made any (`meet`).
    meets: HashMap<SessionId, meet::Meets>,
    /// When each user last had a typing notice forwarded, per conversation.
    typing: amend::Typing,
    /// The relays of each session that has any: (token, the other session).
    relays: HashMap<SessionId, Vec<([u8; 16], SessionId)>>,
    /// The last file offers each session made that were forwarded, for the relay's cap.
    offers: HashMap<SessionId, VecDeque<files::Forwarded>>,
    /// Accepted file offers waiting for their `meet`: the relay of that pair is capped.
    file_pairs: Vec<files::FilePair>,
    /// Keys the relay tokens ([`Server::set_relay_secret`]).
    relay_secret: [u8; 32],
    relay_count: u64,
    /// Store reads handed to the runner and not answered yet ([`MAX_READS`] at most)...
    reads: usize,
    /// ...and the reads waiting for one of them to finish, oldest first.
    read_queue: VecDeque<Output>,
}

/// The DM conversation name of two keys: the same whoever sends.
pub fn dm_conv(a: &Key, b: &Key) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let hex = data_encoding::HEXLOWER;
    format!("@{}-{}", hex.encode(lo), hex.encode(hi))
}

fn dm_has(conv: &str, key: &Key) -> bool {
    let hex = data_encoding::HEXLOWER.encode(key);
    conv.strip_prefix('@')
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(a, b)| a == hex || b == hex)
}

fn to_msg(r: &Record, history: bool) -> Msg {
    let room = r.to_key.is_none().then(|| r.conv.clone());
    Msg {
        conv: r.conv.clone(),
        room,
        id: r.id,
        ts: r.ts_ms,
        from: r.from_nick.clone(),
        to: r.to_nick.clone(),
        text: r.text.clone(),
        action: r.kind == 1,
        history,
        c: None,
        edited: r.edited,
        deleted: r.deleted,
        reactions: amend::reactions(r),
    }
}

fn enc(m: &ServerMsg) -> Bytes {
    Bytes::from(m.encode())
}

/// A new message's encodings: everyone's, the sending client's own (with its `c`), and for
/// the sending sessions that asked for no echo (room messages only), its `ack`.
struct Copies<'a> {
    data: Bytes,
    own: Option<Bytes>,
    senders: &'a [SessionId],
    /// `(the ack, the senders that get it in place of the own copy)`.
    quiet: Option<(Bytes, &'a [SessionId])>,
}

impl Copies<'_> {
    /// The copy for session `to`.
    fn to(&self, to: SessionId) -> &Bytes {
        match (&self.quiet, &self.own) {
            (Some((ack, quiet)), _) if quiet.contains(&to) => ack,
            (_, Some(own)) if self.senders.contains(&to) => own,
            _ => &self.data,
        }
    }
}

impl Server {
    /// A server with the state loaded from the store. Undelivered DMs are not held: they are
    /// read from the store when their recipient connects ([`Output::ReadUndelivered`]).
    pub fn new(config: ServerConfig, loaded: Loaded) -> Self {
        let queue_limit = limits::queue_limit(&config);
        let claims = ClaimLimiter::new(
            config.nick_claim_burst,
            config.nick_claims_per_hour,
            MAX_CLAIM_NETS,
        );
        let mut s = Server {
            queue_limit,
            config,
            sessions: HashMap::new(),
            per_ip: HashMap::new(),
            users: HashMap::new(),
            nick_owner: HashMap::new(),
            nick_of: HashMap::new(),
            nick_look: LookAlikes::default(),
            seen: HashMap::new(),
            seen_due: BinaryHeap::new(),
            seen_queued: HashSet::new(),
            by_seen: BTreeSet::new(),
            claims,
            room_look: LookAlikes::default(),
            started_ms: None,
            rooms: HashMap::new(),
            topics: HashMap::new(),
            convs: HashMap::new(),
            cache_order: BTreeMap::new(),
            cache_bytes: 0,
            cache_tick: 0,
            refs: Refs::default(),
            conv_hasher: std::hash::RandomState::new(),
            pending: HashMap::new(),
            next_token: 1,
            next_read: 1,
            presence_due: None,
            dirty_rooms: BTreeSet::new(),
            out: VecDeque::new(),
            stats: ServerStats::default(),
            reads: 0,
            read_queue: VecDeque::new(),
            meets: HashMap::new(),
            typing: amend::Typing::default(),
            relays: HashMap::new(),
            offers: HashMap::new(),
            file_pairs: Vec::new(),
            relay_secret: [0; 32],
            relay_count: 0,
            cluster: None,
            moderation: moderation::Moderation::load(loaded.moderation),
        };
        if let Some(c) = s.config.cluster.clone() {
            s.start_cluster(c);
        }
        for (nick, key) in loaded.nicks {
            if let Some(other) = s.nick_look.insert(&nick, key) {
                let other = s.nick_of.get(&other).cloned().unwrap_or_default();
                warn!(
                    nick,
                    other,
                    "two keys hold look-alike nicks (claimed before look-alikes were refused); both keep them"
                );
            }
            s.nick_owner.insert(names::fold(&nick), (nick.clone(), key));
            s.nick_of.insert(key, nick);
        }
        s.seen.extend(loaded.seen);
        let owners: Vec<Key> = s.nick_of.keys().copied().collect();
        for key in owners {
            s.index_seen(key);
        }
        let rooms = loaded.topics.iter().map(|t| &t.0);
        for room in rooms.chain(loaded.last_ids.iter().map(|c| &c.0)) {
            if room.starts_with('#') {
                s.room_look.insert(room, room.clone());
            }
        }
        for (room, topic, by, _) in loaded.topics {
            s.topics.insert(room, (topic, by));
        }
        for (conv, last) in loaded.last_ids {
            let c = s.convs.entry(conv).or_default();
            c.committed = last;
        }
        for r in loaded.recent {
            if let Some((cid, c)) = r.client_ref {
                let conv = s.conv_hash(&r.conv);
                s.remember(
                    (r.from_key, cid, c),
                    RefState::Stored {
                        conv,
                        id: r.id,
                        ts: r.ts_ms,
                    },
                );
            }
            let conv = s.convs.entry(r.conv.clone()).or_default();
            conv.committed = conv.committed.max(r.id);
            s.cache(r);
        }
        s
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            sessions: self.sessions.len(),
            users: self.users.len(),
            rooms: self.rooms.len(),
            // A scrape's work, not a message's.
            members: self.rooms.values().map(|r| r.members.len()).sum(),
            ..self.stats
        }
    }

    /// The next thing to do, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Server::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<i64> {
        let seen = self.seen_due.peek().map(|Reverse((due, _))| *due);
        let beat = self.cluster.as_ref().map(|c| c.next_beat);
        [
            self.presence_due,
            seen,
            self.age_out_due(),
            beat,
            self.asks_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// When the oldest nick binding of a key not connected expires (not before the first
    /// [`RESTART_GRACE_MS`] after the first connection), if expiry is on.
    fn age_out_due(&self) -> Option<i64> {
        let expiry = self.config.nick_expiry_ms?;
        let started = self.started_ms?;
        let &(seen, _) = self.by_seen.first()?;
        let seen = if seen == i64::MIN { started } else { seen };
        Some(
            seen.saturating_add(expiry)
                .max(started.saturating_add(RESTART_GRACE_MS)),
        )
    }

    /// Ages out the nick bindings that have expired ([`Server::nick_expired`]), the oldest
    /// first, at most [`AGE_OUT_PER_TICK`] per call: each is forgotten in memory and released
    /// in the store ([`Op::ReleaseNick`]), as a claim of the nick by another key would. Its
    /// key gets a nick again as any new key does.
    fn age_out(&mut self, now_ms: i64) {
        let mut ops = Vec::new();
        let mut pending = Vec::new();
        while ops.len() < AGE_OUT_PER_TICK {
            let Some(&(_, key)) = self.by_seen.first() else {
                break;
            };
            let Some(seen_by) = self.expired_by(now_ms, &key) else {
                break;
            };
            // `unbind_nick` takes it out of `by_seen`.
            if let Some(nick) = self.unbind_nick(&key) {
                debug!(nick, "an expired nick is aged out");
                pending.push(Pending::Release {
                    op: ops.len(),
                    key,
                    nick,
                });
            }
            self.set_seen(key, None);
            ops.push(Op::ReleaseNick { key, seen_by });
        }
        if !ops.is_empty() {
            self.persist(ops, pending);
        }
    }

    /// The store kept the nick of `key` that this node released as expired: another node
    /// saw its owner at `seen_ms`. The binding is restored here, unless the nick or the key
    /// has been bound since.
    fn release_kept(&mut self, key: Key, nick: String, seen_ms: i64) {
        debug!(nick, "an expired nick's owner was seen elsewhere: kept");
        let fold = names::fold(&nick);
        if self.nick_of.contains_key(&key) || self.nick_owner.contains_key(&fold) {
            return;
        }
        self.nick_look.insert(&nick, key);
        self.nick_owner.insert(fold, (nick.clone(), key));
        self.nick_of.insert(key, nick);
        self.set_seen(key, Some(seen_ms));
    }

    /// Sets (or, with `None`, forgets) the last-seen time of `key`, keeping `by_seen` in step.
    fn set_seen(&mut self, key: Key, ts: Option<i64>) {
        self.unindex_seen(&key);
        match ts {
            Some(t) => self.seen.insert(key, t),
            None => self.seen.remove(&key),
        };
        self.index_seen(key);
    }

    /// Takes `key` out of `by_seen`.
    fn unindex_seen(&mut self, key: &Key) {
        let t = self.seen.get(key).copied().unwrap_or(i64::MIN);
        self.by_seen.remove(&(t, *key));
    }

    /// Puts `key` in `by_seen` if it holds a nick and is not connected.
    fn index_seen(&mut self, key: Key) {
        if self.nick_of.contains_key(&key) && !self.users.contains_key(&key) {
            let t = self.seen.get(&key).copied().unwrap_or(i64::MIN);
            self.by_seen.insert((t, key));
        }
    }

    /// Time has reached `now_ms`: flushes batched presence, and records that connected nick
    /// owners are still connected (each at most once per [`SEEN_RESOLUTION_MS`], at most
    /// [`SEEN_REFRESH_PER_TICK`] of them per call, in one store batch).
    pub fn handle_timeout(&mut self, now_ms: i64) {
        if self.presence_due.is_some_and(|d| d <= now_ms) {
            self.presence_due = None;
            for room in std::mem::take(&mut self.dirty_rooms) {
                self.flush_presence(&room);
            }
        }
        self.refresh_seen(now_ms);
        self.age_out(now_ms);
        self.asks_timeout(now_ms);
        self.cluster_timeout(now_ms);
    }

    /// The refresh part of [`Server::handle_timeout`]: the connected owners whose turn has
    /// come are recorded as seen now, and queued again for an hour later; owners no longer
    /// connected leave the queue (a disconnect records them itself).
    fn refresh_seen(&mut self, now_ms: i64) {
        let mut ops = Vec::new();
        for _ in 0..SEEN_REFRESH_PER_TICK {
            let Some(&Reverse((due, key))) = self.seen_due.peek() else {
                break;
            };
            if due > now_ms {
                break;
            }
            self.seen_due.pop();
            if !self.users.contains_key(&key) || !self.nick_of.contains_key(&key) {
                self.seen_queued.remove(&key);
                continue;
            }
            let last = self.seen.get(&key).copied().unwrap_or(i64::MIN);
            let last = if now_ms.saturating_sub(last) >= SEEN_RESOLUTION_MS {
                self.set_seen(key, Some(now_ms));
                ops.push(Op::Seen { key, ts_ms: now_ms });
                now_ms
            } else {
                last
            };
            self.seen_due
                .push(Reverse((last.saturating_add(SEEN_RESOLUTION_MS), key)));
        }
        if !ops.is_empty() {
            self.persist(ops, Vec::new());
        }
    }

    /// `key` is connected: its last-seen time will be refreshed while it stays.
    fn queue_seen_refresh(&mut self, key: Key) {
        if self.nick_of.contains_key(&key) && self.seen_queued.insert(key) {
            let last = self.seen.get(&key).copied().unwrap_or(i64::MIN);
            self.seen_due
                .push(Reverse((last.saturating_add(SEEN_RESOLUTION_MS), key)));
        }
    }

    /// The transport took `bytes` of what was queued for `session` (the sum of the `data` of
    /// its `Output::Send`s it accepted). Below [`PAGE_BYTES`], the session's replays go on.
    pub fn sent(&mut self, now_ms: i64, session: SessionId, bytes: usize) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.queued = s.queued.saturating_sub(bytes);
        self.pump(now_ms, session);
    }

    /// A page of [`Output::ReadUndelivered`]: `(conversation, first undelivered id)`, or why
    /// the store could not say.
    pub fn undelivered_loaded(
        &mut self,
        now_ms: i64,
        session: SessionId,
        page: Result<Vec<(String, u64)>, String>,
    ) {
        self.read_done();
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.offline != Offline::Reading || s.closing {
            return;
        }
        let key = s.key;
        match page {
            Ok(page) => {
                s.offline = match page.last() {
                    Some((conv, _)) if page.len() >= UNDELIVERED_PAGE => {
                        Offline::More(conv.clone())
                    }
                    _ => Offline::Done,
                };
                for (conv, first) in page {
                    if dm_has(&conv, &key) {
                        let r = Replay {
                            from_store: true,
                            ..Replay::after(first.saturating_sub(1))
                        };
                        self.queue_replay(session, &conv, r);
                    }
                }
            }
            Err(e) => {
                s.offline = Offline::Failed;
                debug!(session, error = %e, "undelivered DMs unreadable");
                let m = "the direct messages sent to you while you were away could not be read; reconnect to get them";
                self.fail(session, None, code::STORE, m.into());
            }
        }
        // Every page read: the held DM conversations go on.
        if let Some(s) = self.sessions.get_mut(&session) {
            if !s.reading_dms() {
                for conv in std::mem::take(&mut s.held) {
                    if let Some(r) = s.replays.get_mut(&conv) {
                        if std::mem::take(&mut r.held) {
                            s.order.push_back(conv);
                        }
                    }
                }
            }
        }
        self.pump(now_ms, session);
    }

    /// A connection completed its handshake; `key` is the client's static key.
    pub fn connected(&mut self, now_ms: i64, session: SessionId, ip: IpAddr, key: Key) {
        self.started_ms.get_or_insert(now_ms);
        if self.server_banned(&key, ip) {
            let msg =
                "you are banned from this server (your key or your address); ask its operators";
            self.send(session, &ServerMsg::error(code::BANNED, msg));
            self.out.push_back(Output::Close {
                session,
                reason: "banned".into(),
                now: false,
            });
            return;
        }
        let n = self.per_ip.entry(ip).or_default();
        if *n >= self.config.max_sessions_per_ip {
            let msg = format!(
                "too many sessions from {ip} (at most {}); close one and try again",
                self.config.max_sessions_per_ip
            );
            self.send(session, &ServerMsg::error(code::TOO_MANY_SESSIONS, msg));
            self.out.push_back(Output::Close {
                session,
                reason: "too many sessions".into(),
                now: false,
            });
            return;
        }
        *n += 1;
        self.sessions.insert(
            session,
            Box::new(Session {
                key,
                ip,
                port: 0,
                client: None,
                echo: true,
                // Full, plus one token for the hello: after `welcome` a client has `burst`
                // requests, as the client's own pacing (which starts then) assumes.
                bucket: Bucket {
                    milli: (u64::from(self.config.burst) + 1) * 1000,
                    last_ms: now_ms,
                },
                queued: 0,
                closing: false,
                replays: HashMap::new(),
                order: VecDeque::new(),
                held: Vec::new(),
                store_owed: 0,
                offline: Offline::Done,
                history_reads: 0,
            }),
        );
    }

    /// A connection ended (`reason`: "left", "timed out", ...).
    pub fn disconnected(&mut self, now_ms: i64, session: SessionId, reason: &str) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        self.meet_gone(session);
        self.offers.remove(&session);
        // What its DM replays sent is delivered; the rest stays owed.
        let marks = s.dm_marks();
        if !marks.is_empty() {
            self.persist(marks, Vec::new());
        }
        if let Some(n) = self.per_ip.get_mut(&s.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&s.ip);
            }
        }
        let Some(user) = self.users.get_mut(&s.key) else {
            return;
        };
        user.sessions.retain(|&x| x != session);
        if !user.sessions.is_empty() {
            return;
        }
        // Last device gone: the user quits every room.
        let Some(user) = self.users.remove(&s.key) else {
            return;
        };
        self.unfollow(Subject::User(s.key));
        self.index_seen(s.key);
        self.saw(now_ms, s.key);
        for room in user.rooms {
            self.leave_room(
                now_ms,
                &room,
                &s.key,
                Presence::Quit {
                    nick: user.nick.clone(),
                    reason: reason.to_owned(),
                },
            );
        }
    }

    /// The server is shutting down at `now_ms`: every session is told, and every connected
    /// nick owner is recorded as seen now (so that a nick does not expire just after a
    /// restart because its owner stayed connected longer than the expiry period).
    pub fn shutdown(&mut self, now_ms: i64, reason: &str) {
        self.cluster_bye();
        let bye = enc(&ServerMsg::Bye {
            reason: reason.to_owned(),
        });
        let ids: Vec<_> = self.sessions.keys().copied().collect();
        let mut marks = Vec::new();
        for id in ids {
            self.push_send(id, bye.clone());
            if let Some(s) = self.sessions.get(&id) {
                marks.extend(s.dm_marks());
            }
        }
        // What the DM replays in progress have sent is delivered.
        if !marks.is_empty() {
            self.persist(marks, Vec::new());
        }
        let mut online: Vec<Key> = self
            .users
            .keys()
            .filter(|k| self.nick_of.contains_key(*k))
            .copied()
            .collect();
        online.sort_unstable();
        let seen: Vec<Op> = online
            .into_iter()
            .map(|key| {
                self.set_seen(key, Some(now_ms));
                Op::Seen { key, ts_ms: now_ms }
            })
            .collect();
        if !seen.is_empty() {
            self.persist(seen, Vec::new());
        }
    }

    /// The batch persisted under `token` has committed (`ok`) or failed.
    pub fn committed(&mut self, now_ms: i64, token: u64, result: Result<Vec<Outcome>, String>) {
        let Some(items) = self.pending.remove(&token) else {
            return;
        };
        let outcome = |op: usize| result.as_ref().ok().and_then(|v| v.get(op)).cloned();
        // A claim of an expired nick whose owner was seen since fails for that reason.
        let kept = result
            .as_ref()
            .is_ok_and(|v| v.iter().any(|o| matches!(o, Outcome::NickKept { .. })));
        for item in items {
            match item {
                // A `say` is op 0 of its batch.
                Pending::Message { msg, client, c } => {
                    self.message_committed(now_ms, msg, client, c, outcome(0))
                }
                Pending::Event { msg } => self.event_committed(now_ms, msg, outcome(0)),
                Pending::Amend { session, target } => {
                    self.amend_committed(now_ms, session, target, outcome(0))
                }
                Pending::Nick { op, key, nick, old } => {
                    self.nick_committed(key, nick, old, kept, outcome(op))
                }
                // After the claim's `Nick` (queued before it), which frees the nick here if
                // the claim failed.
                Pending::Release { op, key, nick } => match outcome(op) {
                    Some(Outcome::NickKept { seen_ms }) => self.release_kept(key, nick, seen_ms),
                    Some(Outcome::Done) => self.publish_release(key, nick),
                    _ => {}
                },
                Pending::Publish(m) => match &result {
                    Ok(_) => self.publish_mod(m),
                    // Applied here only: the other nodes would hold what the store does not.
                    Err(e) => warn!(error = %e, "a moderation change was not stored"),
                },
            }
        }
    }

    /// The page of [`Output::ReadHistory`] for `session` (`id`: the request's), or why the
    /// store could not read it.
    pub fn history_loaded(
        &mut self,
        session: SessionId,
        conv: &str,
        id: Option<u64>,
        page: Result<Vec<Record>, String>,
    ) {
        self.read_done();
        match self.sessions.get_mut(&session) {
            Some(s) if !s.closing => s.history_reads = s.history_reads.saturating_sub(1),
            _ => return,
        }
        match page {
            Ok(records) => self.send_page(session, conv, id, records.iter()),
            Err(e) => {
                debug!(session, conv, error = %e, "history read failed");
                let m = format!("the history of {conv} could not be read; try again later");
                self.fail(session, None, code::STORE, m);
                if let Some(id) = id {
                    self.send_history_end(session, conv, Some(id), 0);
                }
            }
        }
    }

    /// A message from a session.
    pub fn message(&mut self, now_ms: i64, session: SessionId, data: &[u8]) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        // Being closed: whatever it asks would only be dropped (or cost its peers).
        if s.closing {
            return;
        }
        let key = s.key;
        let hello_done = s.client.is_some();
        let decoded = ClientMsg::decode(data);
        if decoded.is_err() {
            self.stats.malformed += 1;
        }
        // Every request costs a token, whatever becomes of it: a `hello`, or one refused as
        // malformed or out of state, as much as a `list`. Otherwise garbage would get an
        // answer each, and a `hello` (the dearest request) could be repeated at will.
        if !self.take_token(now_ms, session) {
            let c = match &decoded {
                Ok(ClientMsg::Say { c, .. }) => Some(*c),
                _ => None,
            };
            self.refuse_flood(session, c);
            if let Ok(m) = &decoded {
                self.refuse_history(session, &key, m);
            }
            return;
        }
        let msg = match decoded {
            Ok(m) => m,
            Err(e) => {
                debug!(session, error = %e, "malformed request");
                self.send(session, &ServerMsg::error(code::BAD_REQUEST, e.to_string()));
                return;
            }
        };
        match (msg, hello_done) {
            (
                ClientMsg::Hello {
                    v,
                    nick,
                    client,
                    rooms,
                    dms,
                    echo,
                },
                false,
            ) => self.hello(now_ms, session, key, v, nick, client, echo, rooms, dms),
            (ClientMsg::Hello { .. }, true) => {
                self.send(session, &ServerMsg::error(code::STATE, "hello sent twice"))
            }
            (m, false) => {
                self.send(session, &ServerMsg::error(code::STATE, "send hello first"));
                self.refuse_history(session, &key, &m);
            }
            (m, true) => self.request(now_ms, session, key, m),
        }
    }

    fn refuse_flood(&mut self, session: SessionId, c: Option<u64>) {
        self.stats.flood_refused += 1;
        let message = format!(
            "flood control: at most {} requests per second (bursts of {}); not sent, slow down",
            self.config.per_sec, self.config.burst
        );
        self.send(
            session,
            &ServerMsg::Error {
                c,
                code: code::FLOOD.into(),
                message,
            },
        );
    }

    fn take_token(&mut self, now_ms: i64, session: SessionId) -> bool {
        let (burst, per_sec) = (self.config.burst, self.config.per_sec);
        self.sessions
            .get_mut(&session)
            .is_some_and(|s| s.bucket.take(now_ms, burst, per_sec))
    }

    fn send(&mut self, to: SessionId, m: &ServerMsg) {
        self.push_send(to, enc(m));
    }

    /// Queues `data` for `to` within its byte bound; false if it was not queued. A session
    /// whose queue would pass it is too slow to follow: it is closed at once instead and gets
    /// nothing more (its client resumes from the last ids it saw when it reconnects, so no
    /// message is lost with it).
    fn push_send(&mut self, to: SessionId, data: Bytes) -> bool {
        let limit = self.queue_limit;
        match self.sessions.get_mut(&to) {
            // Not a session (any more): only `connected`'s refusal, one error.
            None => {}
            Some(s) if s.closing => return false,
            Some(s) if s.queued.saturating_add(data.len()) > limit => {
                self.stats.too_slow += 1;
                debug!(session = to, queued = s.queued, "client too slow; closing");
                self.close_session(to, "too slow", true);
                return false;
            }
            Some(s) => s.queued += data.len(),
        }
        self.out.push_back(Output::Send { to, data });
        true
    }

    /// Closes `session`: nothing more is queued for it, its requests are ignored, and what its
    /// DM replays sent is marked delivered. `now`: its queue is dropped and its connection
    /// aborted (a client that does not read), else what is queued (an error saying why) goes
    /// first.
    fn close_session(&mut self, session: SessionId, reason: &str, now: bool) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.closing {
            return;
        }
        let marks = s.dm_marks();
        s.closing = true;
        s.replays.clear();
        s.order.clear();
        s.held.clear();
        s.store_owed = 0;
        self.out.push_back(Output::Close {
            session,
            reason: reason.into(),
            now,
        });
        if !marks.is_empty() {
            self.persist(marks, Vec::new());
        }
    }

    fn send_user(&mut self, key: &Key, data: &Bytes) {
        let Some(u) = self.users.get(key) else {
            return;
        };
        for to in u.sessions.clone() {
            self.push_send(to, data.clone());
        }
    }

    /// A new message of `conv` for `to` (`dm_to`: a DM's recipient): queued now, unless `to`
    /// is still being replayed `conv`, is behind (its queue is past [`PAGE_BYTES`]), or is
    /// having its undelivered DMs read. Then the message stays in the replay cache (it is
    /// added there right after this) and the session's replay of `conv` takes it in turn, so
    /// that nothing overtakes an older message and a slow reader costs a cursor, not a copy.
    /// A DM is marked delivered to its recipient only when it is queued for one of its
    /// sessions, here or by the replay.
    fn deliver(&mut self, to: SessionId, conv: &str, id: u64, data: &Bytes, dm_to: Option<&Key>) {
        let Some(s) = self.sessions.get_mut(&to) else {
            return;
        };
        if s.closing || s.replays.contains_key(conv) {
            return;
        }
        let held = conv.starts_with('@') && s.reading_dms();
        if s.queued >= PAGE_BYTES || held {
            return self.queue_replay(to, conv, Replay::after(id.saturating_sub(1)));
        }
        let key = s.key;
        let marks = s.marks_dms() && dm_to == Some(&key);
        let pushed = self.push_send(to, data.clone());
        if pushed {
            self.stats.deliveries += 1;
        }
        if pushed && marks {
            let op = Op::DmCursor {
                key,
                conv: conv.to_owned(),
                upto: id,
            };
            self.persist(vec![op], Vec::new());
        }
    }

    fn deliver_user(&mut self, key: &Key, conv: &str, id: u64, copies: &Copies<'_>, dm_to: &Key) {
        let Some(u) = self.users.get(key) else {
            return;
        };
        for to in u.sessions.clone() {
            self.deliver(to, conv, id, copies.to(to), Some(dm_to));
        }
    }

    fn fail(&mut self, session: SessionId, c: Option<u64>, code: &str, message: String) {
        self.send(
            session,
            &ServerMsg::Error {
                c,
                code: code.into(),
                message,
            },
        );
    }

    /// Hands a store read to the runner if fewer than [`MAX_READS`] are in flight, else queues
    /// it behind the others.
    fn read(&mut self, read: Output) {
        if self.reads < MAX_READS {
            self.reads += 1;
            self.out.push_back(read);
        } else {
            self.read_queue.push_back(read);
        }
    }

    /// A store read was answered: the next ones waiting go, skipping those no longer wanted
    /// (their session ended or is closing, or their replay moved on).
    fn read_done(&mut self) {
        self.reads = self.reads.saturating_sub(1);
        while self.reads < MAX_READS {
            let Some(read) = self.read_queue.pop_front() else {
                return;
            };
            let wanted = match &read {
                Output::ReadHistory { session, .. } => match self.sessions.get_mut(session) {
                    Some(s) if s.closing => {
                        s.history_reads = s.history_reads.saturating_sub(1);
                        false
                    }
                    s => s.is_some(),
                },
                Output::ReadAfter {
                    session,
                    token,
                    conv,
                    ..
                } => self.sessions.get(session).is_some_and(|s| {
                    !s.closing
                        && s.replays
                            .get(conv)
                            .is_some_and(|r| r.reading.is_some_and(|(t, _)| t == *token))
                }),
                Output::ReadUndelivered { session, .. } => self
                    .sessions
                    .get(session)
                    .is_some_and(|s| !s.closing && s.offline == Offline::Reading),
                other => self.reading_wanted(other).unwrap_or(false),
            };
            if wanted {
                self.reads += 1;
                self.out.push_back(read);
            }
        }
    }

    fn persist(&mut self, ops: Vec<Op>, pending: Vec<Pending>) {
        let token = self.next_token;
        self.next_token += 1;
        if !pending.is_empty() {
            self.pending.insert(token, pending);
        }
        self.out.push_back(Output::Persist { token, ops });
    }

    fn remember(&mut self, r: RefKey, state: RefState) {
        self.refs.insert(r, state);
    }

    /// The keyed hash of a conversation name that `refs` keeps.
    fn conv_hash(&self, conv: &str) -> u64 {
        use std::hash::BuildHasher as _;
        self.conv_hasher.hash_one(conv)
    }

    #[allow(clippy::too_many_arguments)]
    fn hello(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        v: u32,
        nick: String,
        client: u64,
        echo: bool,
        rooms: Vec<JoinReq>,
        dms: Vec<Resume>,
    ) {
        let close = |s: &mut Self, reason: &str| s.close_session(session, reason, false);
        if v != wire::VERSION {
            let m = format!(
                "protocol version {v} is not supported (this server speaks {})",
                wire::VERSION
            );
            self.fail(session, None, code::VERSION, m);
            return close(self, "version");
        }
        let nick = match names::nick(&nick) {
            Ok(nick) => nick,
            Err(e) => {
                self.fail(session, None, code::BAD_NAME, e);
                return close(self, "bad nick");
            }
        };
        let released = match self.check_claim(now_ms, session, key, &nick) {
            Ok(released) => released,
            Err((code, m)) => {
                self.fail(session, None, code, m);
                return close(self, code);
            }
        };
        if let Some(s) = self.sessions.get_mut(&session) {
            s.client = Some(client);
            s.echo = echo;
        }
        // Bind the nick (a changed nick frees the old one).
        if self.nick_of.get(&key) != Some(&nick) {
            if self.users.contains_key(&key) {
                self.rename(now_ms, key, nick.clone(), released);
            } else {
                self.bind_nick(now_ms, key, nick.clone(), released);
            }
        } else {
            self.saw(now_ms, key);
        }
        self.queue_seen_refresh(key);
        self.unindex_seen(&key);
        if !self.users.contains_key(&key) {
            self.follow(Subject::User(key));
        }
        let user = self.users.entry(key).or_insert_with(|| User {
            nick: nick.clone(),
            sessions: Vec::new(),
            rooms: RoomSet::default(),
            markers: reading::Markers::default(),
        });
        user.sessions.push(session);
        let current: Vec<String> = user.rooms.iter().cloned().collect();
        self.send(
            session,
            &ServerMsg::Welcome {
                v: wire::VERSION,
                nick,
                burst: self.config.burst,
                per_sec: self.config.per_sec,
                max_text: u32::try_from(self.config.max_text).unwrap_or(u32::MAX),
            },
        );
        self.markers_hello(session, key);
        let (rooms, dms) = self.hello_lists(session, key, rooms, dms);
        // Rooms the user is already in through another device: tell this one (nothing to
        // replay: it gets their messages from now on).
        for room in &current {
            if !rooms.iter().any(|j| names::fold(&j.room) == *room) {
                let after = self.convs.get(room).map_or(0, |c| c.committed);
                let r = Replay {
                    joined: true,
                    ..Replay::after(after)
                };
                self.queue_replay(session, room, r);
            }
        }
        for j in rooms {
            self.join(now_ms, session, key, j);
        }
        // DMs stored while away are read from the store, a page of conversations at a time;
        // DM resumes (missed while connected before) wait for the pages (each merges with its
        // conversation's entry), so that every DM conversation comes in id order. Rooms go on
        // meanwhile.
        if let Some(s) = self.sessions.get_mut(&session) {
            s.offline = Offline::Reading;
            self.read(Output::ReadUndelivered {
                session,
                key,
                after: None,
                limit: UNDELIVERED_PAGE,
            });
        }
        for r in dms {
            self.queue_replay(session, &r.conv, Replay::after(r.after));
        }
        self.pump(now_ms, session);
    }

    /// A `hello`'s rooms and DM resumes, each conversation once (its first entry wins), and
    /// no more than the limits allow: `max_rooms_per_user` rooms to join, plus the first one
    /// past the limit and up to as many bad names, each refused with its own error as a
    /// `join` would be; and [`MAX_DM_RESUMES`] DM resumes, counting only the user's own
    /// conversations with something newer than `after` (the client lists its most recent
    /// first). One error counts what was left out. So what a `hello` costs is bounded by the
    /// limits, however long its lists.
    fn hello_lists(
        &mut self,
        session: SessionId,
        key: Key,
        rooms: Vec<JoinReq>,
        dms: Vec<Resume>,
    ) -> (Vec<JoinReq>, Vec<Resume>) {
        let max = self.config.max_rooms_per_user;
        let mut seen = HashSet::new();
        let (mut valid, mut invalid, mut left_rooms) = (0usize, 0usize, 0usize);
        let rooms: Vec<JoinReq> = rooms
            .into_iter()
            .filter(|j| seen.insert(names::fold(&j.room)))
            .filter(|j| {
                let keep = if names::room(&j.room).is_ok() {
                    valid += 1;
                    valid <= max + 1
                } else {
                    invalid += 1;
                    invalid <= max
                };
                left_rooms += usize::from(!keep);
                keep
            })
            .collect();
        seen.clear();
        // A resume with nothing owed (nothing after `after`) costs nothing and counts for
        // nothing: a client that saw many conversations lists them all.
        let mut dms: Vec<Resume> = dms
            .into_iter()
            .filter(|r| seen.insert(r.conv.clone()))
            .filter(|r| {
                dm_has(&r.conv, &key)
                    && self
                        .convs
                        .get(&r.conv)
                        .is_some_and(|c| c.committed > r.after)
            })
            .collect();
        let left_dms = dms.len().saturating_sub(MAX_DM_RESUMES);
        dms.truncate(MAX_DM_RESUMES);
        if left_rooms > 0 || left_dms > 0 {
            let m = format!(
                "hello lists more rooms than the limit of {max} or more direct conversations than the limit of {MAX_DM_RESUMES}: {left_rooms} more rooms were not joined and {left_dms} more conversations not resumed"
            );
            self.fail(session, None, code::TOO_MANY_ROOMS, m);
        }
        (rooms, dms)
    }

    /// Whether `key` may take `nick` (normalized and valid) now. Refused while another key
    /// holds the nick in any case, or a look-alike of it ([`names::look_alike_keys`]), unless
    /// that key's hold has expired ([`Server::nick_expired`]); a key may always take back its
    /// own nick. A key's first nick also needs a claim from its source network's budget
    /// (`nick_claim_burst`, `nick_claims_per_hour`). `Ok` lists the keys whose expired nicks
    /// the claim ends; `Err` is an error code and message.
    fn check_claim(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        nick: &str,
    ) -> Result<Vec<Key>, (&'static str, String)> {
        let fold = names::fold(nick);
        if self
            .nick_of
            .get(&key)
            .is_some_and(|n| names::fold(n) == fold)
        {
            return Ok(Vec::new());
        }
        let mut holders = self.nick_look.others(nick, &key);
        if let Some((_, k)) = self.nick_owner.get(&fold) {
            if *k != key && !holders.contains(k) {
                holders.insert(0, *k);
            }
        }
        let mut released = Vec::new();
        for h in holders {
            if self.nick_expired(now_ms, &h) {
                released.push(h);
                continue;
            }
            let theirs = self.nick_of.get(&h).cloned().unwrap_or_default();
            let m = if names::fold(&theirs) == fold {
                format!(
                    "nick '{theirs}' belongs to another key; pick another nick (nicks are bound to the first key that claims them)"
                )
            } else {
                format!(
                    "nick '{nick}' looks like '{theirs}', which belongs to another key; pick another nick"
                )
            };
            return Err((code::NICK_TAKEN, m));
        }
        if !self.nick_of.contains_key(&key) {
            let ip = self.sessions.get(&session).map(|s| s.ip);
            let m = match ip.map(|ip| self.claims.take(now_ms, ip)) {
                Some(Err(Refused::Network(wait_ms))) => format!(
                    "too many new nicks from your network lately (at most {} at once, then {} per hour); try again in {} min",
                    self.config.nick_claim_burst,
                    self.config.nick_claims_per_hour,
                    wait_ms.div_ceil(60_000)
                ),
                Some(Err(Refused::Busy(wait_ms))) => format!(
                    "too many new nicks from too many networks lately; try again in {} min",
                    wait_ms.div_ceil(60_000)
                ),
                _ => return Ok(released),
            };
            return Err((code::NICK_RATE, m));
        }
        Ok(released)
    }

    /// Whether the nick of `owner` may be claimed by another key: expiry is on, the owner is
    /// not connected, and was last seen `nick_expiry_ms` ago or longer (a time not recorded
    /// counts from the start; nothing expires in the first [`RESTART_GRACE_MS`]).
    fn nick_expired(&self, now_ms: i64, owner: &Key) -> bool {
        self.expired_by(now_ms, owner).is_some()
    }

    /// If the nick of `owner` has expired ([`Server::nick_expired`]): the latest last-seen
    /// time at which it has, for the store to check against the time it has
    /// ([`Op::ReleaseNick`]): in a cluster, another node may have seen the owner since.
    fn expired_by(&self, now_ms: i64, owner: &Key) -> Option<i64> {
        let expiry = self.config.nick_expiry_ms?;
        if self.users.contains_key(owner) {
            return None;
        }
        let started = self.started_ms.unwrap_or(now_ms);
        if now_ms.saturating_sub(started) < RESTART_GRACE_MS {
            return None;
        }
        let seen = self.seen.get(owner).copied().unwrap_or(started);
        (now_ms.saturating_sub(seen) >= expiry).then(|| now_ms.saturating_sub(expiry))
    }

    /// The owner of a nick was connected at `now_ms`: recorded (at most once per
    /// [`SEEN_RESOLUTION_MS`]) for nick expiry.
    fn saw(&mut self, now_ms: i64, key: Key) {
        if !self.nick_of.contains_key(&key) {
            return;
        }
        let last = self.seen.get(&key).copied();
        if last.is_some_and(|t| now_ms.saturating_sub(t) < SEEN_RESOLUTION_MS) {
            return;
        }
        self.set_seen(key, Some(now_ms));
        self.persist(vec![Op::Seen { key, ts_ms: now_ms }], Vec::new());
    }

    /// Forgets the nick of `key` in memory (not in the store).
    fn unbind_nick(&mut self, key: &Key) -> Option<String> {
        self.unindex_seen(key);
        let old = self.nick_of.remove(key)?;
        self.nick_look.remove(&old, key);
        let fold = names::fold(&old);
        if self.nick_owner.get(&fold).is_some_and(|(_, k)| k == key) {
            self.nick_owner.remove(&fold);
        }
        Some(old)
    }

    /// Binds `nick` to `key` (freeing its previous nick), after ending the expired holds of
    /// `released` that the claim overrides.
    fn bind_nick(&mut self, now_ms: i64, key: Key, nick: String, released: Vec<Key>) {
        let old_nick = self.nick_of.get(&key).cloned();
        let mut ops = Vec::with_capacity(released.len() + 1);
        let mut releases = Vec::with_capacity(released.len());
        for r in released {
            // `released` holds only keys whose nicks have expired.
            let seen_by = self.expired_by(now_ms, &r).unwrap_or(now_ms);
            if let Some(old) = self.unbind_nick(&r) {
                debug!(old, new = nick, "an expired nick is claimed by another key");
                releases.push(Pending::Release {
                    op: ops.len(),
                    key: r,
                    nick: old,
                });
            }
            self.set_seen(r, None);
            ops.push(Op::ReleaseNick { key: r, seen_by });
        }
        self.unbind_nick(&key);
        let fold = names::fold(&nick);
        self.nick_look.insert(&nick, key);
        self.nick_owner.insert(fold.clone(), (nick.clone(), key));
        self.nick_of.insert(key, nick.clone());
        self.set_seen(key, Some(now_ms));
        let mut pending = Vec::with_capacity(releases.len() + 1);
        if self.cluster.is_some() || !releases.is_empty() {
            pending.push(Pending::Nick {
                op: ops.len(),
                key,
                nick: nick.clone(),
                old: old_nick,
            });
        }
        pending.extend(releases);
        ops.push(Op::SetNick {
            nick,
            fold,
            key,
            seen_ms: now_ms,
        });
        self.persist(ops, pending);
    }

    /// Renames an online user and tells everyone sharing a room with it, once each.
    fn rename(&mut self, now_ms: i64, key: Key, new: String, released: Vec<Key>) {
        self.bind_nick(now_ms, key, new.clone(), released);
        let Some(user) = self.users.get_mut(&key) else {
            return;
        };
        let old = std::mem::replace(&mut user.nick, new.clone());
        let mut targets: HashSet<Key> = HashSet::new();
        targets.insert(key);
        for room in &user.rooms {
            if let Some(r) = self.rooms.get(room) {
                targets.extend(r.members.iter().copied());
            }
        }
        let data = enc(&ServerMsg::Nick { old, new });
        for k in targets {
            self.send_user(&k, &data);
        }
    }

    fn request(&mut self, now_ms: i64, session: SessionId, key: Key, m: ClientMsg) {
        match m {
            ClientMsg::Hello { .. } => {}
            ClientMsg::Join(j) => {
                if !self.in_room(&key, &names::fold(&j.room)) {
                    if let Err(m) = self.take_rate(now_ms, key, Rated::Join) {
                        return self.fail(session, None, code::RATE, m);
                    }
                }
                self.join(now_ms, session, key, j)
            }
            ClientMsg::Part { room } => {
                let room = names::fold(&room);
                let nick = self.nick_of.get(&key).cloned().unwrap_or_default();
                let in_room = self
                    .users
                    .get_mut(&key)
                    .is_some_and(|u| u.rooms.remove(&room));
                if !in_room {
                    return self.fail(
                        session,
                        None,
                        code::NOT_IN_ROOM,
                        format!("you are not in {room}"),
                    );
                }
                self.leave_room(now_ms, &room, &key, Presence::Part { nick });
                let data = enc(&ServerMsg::Parted { room });
                self.send_user(&key, &data);
            }
            ClientMsg::Say {
                c,
                room,
                to,
                text,
                action,
            } => self.say(now_ms, session, key, c, room, to, text, action),
            ClientMsg::Nick { nick } => {
                let nick = match names::nick(&nick) {
                    Ok(nick) => nick,
                    Err(e) => return self.fail(session, None, code::BAD_NAME, e),
                };
                let same = self.nick_of.get(&key).is_some_and(|n| *n == nick);
                if !same && self.nick_of.contains_key(&key) {
                    if let Err(m) = self.take_rate(now_ms, key, Rated::Nick) {
                        return self.fail(session, None, code::RATE, m);
                    }
                }
                match self.check_claim(now_ms, session, key, &nick) {
                    Ok(released) => self.rename(now_ms, key, nick, released),
                    Err((code, m)) => self.fail(session, None, code, m),
                }
            }
            ClientMsg::Topic { room, topic } => {
                let room = names::fold(&room);
                if let Err(e) = names::topic(&topic) {
                    return self.fail(session, None, code::BAD_NAME, e);
                }
                if !self.in_room(&key, &room) {
                    return self.fail(
                        session,
                        None,
                        code::NOT_IN_ROOM,
                        format!("you are not in {room}"),
                    );
                }
                if let Err(m) = self.may_set_topic(&room, &key) {
                    return self.fail(session, None, code::FORBIDDEN, m);
                }
                let by = self.nick_of.get(&key).cloned().unwrap_or_default();
                self.topics
                    .insert(room.clone(), (topic.clone(), by.clone()));
                self.persist(
                    vec![Op::SetTopic {
                        room: room.clone(),
                        topic: topic.clone(),
                        by: by.clone(),
                        ts_ms: now_ms,
                    }],
                    Vec::new(),
                );
                self.publish_topic(&room, &topic, &by);
                self.flush_presence(&room);
                let data = enc(&ServerMsg::Topic {
                    room: room.clone(),
                    topic,
                    by,
                });
                self.send_room(&room, &data);
            }
            ClientMsg::List => {
                // In a cluster, with the members the other nodes' heartbeats counted.
                let mut counts: HashMap<&str, u64> = self
                    .rooms
                    .iter()
                    .map(|(name, r)| (name.as_str(), r.members.len() as u64))
                    .collect();
                for (room, n) in self.remote_room_counts() {
                    *counts.entry(room).or_default() += n;
                }
                let mut rooms: Vec<RoomInfo> = counts
                    .into_iter()
                    .map(|(name, members)| RoomInfo {
                        room: name.to_owned(),
                        members,
                        topic: self
                            .topics
                            .get(name)
                            .map(|t| t.0.clone())
                            .unwrap_or_default(),
                    })
                    .collect();
                rooms.sort_by(|a, b| b.members.cmp(&a.members).then(a.room.cmp(&b.room)));
                rooms.truncate(self.config.max_names);
                self.send(session, &ServerMsg::List { rooms });
            }
            ClientMsg::Who { room } => {
                let room = names::fold(&room);
                let (members, more) = self.member_names(&room);
                self.send(
                    session,
                    &ServerMsg::Who {
                        room,
                        members,
                        more,
                    },
                );
            }
            m @ ClientMsg::History { .. } => self.history_request(now_ms, session, key, m),
            ClientMsg::Read { conv, id } => self.read_request(session, key, conv, id),
            m @ ClientMsg::Search { .. } => self.search_request(session, key, m),
            ClientMsg::Meet {
                nick,
                local,
                relay_only,
            } => self.meet(now_ms, session, key, &nick, local, relay_only),
            ClientMsg::FileOffer {
                to,
                id,
                name,
                size,
                hash,
            } => self.file_offer(
                session,
                key,
                files::Offer {
                    to,
                    id,
                    name,
                    size,
                    hash,
                },
            ),
            ClientMsg::FileAnswer { to, id, accept } => {
                self.file_answer(now_ms, session, key, &to, id, accept)
            }
            m @ (ClientMsg::Edit { .. }
            | ClientMsg::Delete { .. }
            | ClientMsg::React(_)
            | ClientMsg::Unreact(_)) => self.amend_request(now_ms, session, key, m),
            ClientMsg::Typing { room, to } => self.typing_request(now_ms, session, key, room, to),
            m => self.moderate(now_ms, session, key, m),
        }
    }

    /// A `history` request: refused with an error (and, with an `id`, closed by an empty
    /// `history_end`), answered from the cache, or read from the store.
    fn history_request(&mut self, now_ms: i64, session: SessionId, key: Key, m: ClientMsg) {
        let ClientMsg::History {
            id,
            room,
            with,
            before,
            limit,
        } = &m
        else {
            return;
        };
        let refused = self.readable_conv(&key, room.as_deref(), with.as_deref(), "history");
        match refused {
            Ok(conv) => {
                let limit = (*limit).clamp(1, self.config.max_history_page) as usize;
                self.history(now_ms, session, *id, conv, *before, limit);
            }
            Err((code, message)) => {
                self.fail(session, None, code, message);
                self.refuse_history(session, &key, &m);
            }
        }
    }

    fn history(
        &mut self,
        now_ms: i64,
        session: SessionId,
        id: Option<u64>,
        conv: String,
        before: Option<u64>,
        limit: usize,
    ) {
        self.expire(now_ms, &conv);
        let c = self.convs.get(&conv);
        let recent = c.map(|c| &c.recent);
        let oldest = recent.and_then(|r| r.front()).map(|r| r.id);
        let bound = before.unwrap_or(u64::MAX);
        // The cache answers when it holds everything the page needs: the whole conversation
        // (its first id is 1 or it is empty), or at least `limit` messages below `before`.
        let below: Vec<Record> = recent
            .map(|r| r.iter().filter(|m| m.id < bound).cloned().collect())
            .unwrap_or_default();
        // (Emptied by the bound on all caches, it says nothing.)
        let whole = match oldest {
            Some(o) => o <= 1,
            None => c.is_none_or(|c| !c.trimmed),
        };
        if whole || below.len() >= limit {
            let start = below.len().saturating_sub(limit);
            self.stats.history_cached += 1;
            self.send_page(session, &conv, id, below[start..].iter());
        } else {
            let Some(s) = self.sessions.get(&session) else {
                return;
            };
            if s.history_reads >= MAX_HISTORY_READS {
                let m = format!(
                    "too many history reads at once (at most {MAX_HISTORY_READS}); ask again after a history_end"
                );
                self.fail(session, None, code::BUSY, m);
                if let Some(id) = id {
                    self.send_history_end(session, &conv, Some(id), 0);
                }
                return;
            }
            if let Some(s) = self.sessions.get_mut(&session) {
                s.history_reads += 1;
            }
            self.stats.history_reads += 1;
            self.read(Output::ReadHistory {
                session,
                id,
                conv,
                before,
                limit,
            });
        }
    }

    fn send_page<'a>(
        &mut self,
        session: SessionId,
        conv: &str,
        id: Option<u64>,
        records: impl Iterator<Item = &'a Record>,
    ) {
        let mut count = 0;
        for r in records {
            count += 1;
            self.push_send(session, enc(&record_msg(r, true)));
        }
        self.send_history_end(session, conv, id, count);
    }

    fn in_room(&self, key: &Key, room: &str) -> bool {
        self.users.get(key).is_some_and(|u| u.rooms.contains(room))
    }

    fn member_names(&self, room: &str) -> (Vec<String>, u64) {
        let Some(r) = self.rooms.get(room) else {
            return (Vec::new(), 0);
        };
        let mut names: Vec<String> = r
            .members
            .iter()
            .filter_map(|k| self.users.get(k).map(|u| u.nick.clone()))
            .chain(
                r.remote
                    .iter()
                    .filter(|(k, _)| !r.members.contains(*k))
                    .map(|(_, m)| m.nick.clone()),
            )
            .collect();
        names.sort_by_key(|n| names::fold(n));
        let more = names.len().saturating_sub(self.config.max_names) as u64;
        names.truncate(self.config.max_names);
        (names, more)
    }

    fn send_joined(&mut self, session: SessionId, room: &str) {
        let (members, more) = self.member_names(room);
        let topic = self
            .topics
            .get(room)
            .map(|t| t.0.clone())
            .unwrap_or_default();
        self.send(
            session,
            &ServerMsg::Joined {
                room: room.to_owned(),
                topic,
                members,
                more,
            },
        );
        if let Some(key) = self.sessions.get(&session).map(|s| s.key) {
            self.send_modes_if_any(session, room, &key);
        }
    }

    fn join(&mut self, now_ms: i64, session: SessionId, key: Key, j: JoinReq) {
        if let Err(e) = names::room(&j.room) {
            return self.fail(session, None, code::BAD_NAME, e);
        }
        let room = names::fold(&j.room);
        if let Err(e) = self.check_room_name(&room) {
            return self.fail(session, None, code::BAD_NAME, e);
        }
        // Created: it does not exist and has no owner (an owned room emptied of everything
        // keeps its owner).
        let created = !self.room_known(&room) && !self.moderation.knows(&room);
        if !self.in_room(&key, &room) {
            let ip = self.sessions.get(&session).map(|s| s.ip);
            if let Err((code, m)) = self.may_join(&room, &key, ip, j.key.as_deref()) {
                return self.fail(session, None, code, m);
            }
            let full = self
                .users
                .get(&key)
                .is_some_and(|u| u.rooms.len() >= self.config.max_rooms_per_user);
            if created && !full {
                if let Err(m) = self.take_rate(now_ms, key, Rated::NewRoom) {
                    return self.fail(session, None, code::RATE, m);
                }
            }
        }
        let Some(user) = self.users.get_mut(&key) else {
            return;
        };
        if !user.rooms.contains(&room) {
            if user.rooms.len() >= self.config.max_rooms_per_user {
                let m = format!(
                    "cannot join {room}: you are in {} rooms already (at most {}); /part one first",
                    user.rooms.len(),
                    self.config.max_rooms_per_user
                );
                return self.fail(session, None, code::TOO_MANY_ROOMS, m);
            }
            user.rooms.insert(room.clone());
            let nick = user.nick.clone();
            let sessions = user.sessions.clone();
            let first = !self.rooms.contains_key(&room);
            if first {
                self.room_look.insert(&room, room.clone());
            }
            self.rooms
                .entry(room.clone())
                .or_default()
                .members
                .insert(key);
            if first {
                self.follow_room(&room);
            }
            self.publish_presence(&room, key, Presence::Join { nick: nick.clone() });
            self.queue_presence(now_ms, &room, Presence::Join { nick });
            // The user's other devices learn it now; this session with its replay.
            for s in sessions.into_iter().filter(|&s| s != session) {
                self.send_joined(s, &room);
            }
            if created {
                self.room_created(now_ms, &room, key);
            }
        }
        if !self.conv_synced(&room) {
            // Its replay starts from what the store says, once the sync has read it.
            self.ensure_sync(&room);
            if let Some(c) = self.convs.get_mut(&room) {
                c.waiting.push((session, j.after));
            }
            return;
        }
        self.start_join_replay(now_ms, session, &room, j.after);
    }

    /// A join's replay: from `after` (a resume), or the room's recent history.
    fn start_join_replay(
        &mut self,
        now_ms: i64,
        session: SessionId,
        room: &str,
        after: Option<u64>,
    ) {
        let mut r = match after {
            Some(a) => Replay::after(a),
            None => self.first_join(now_ms, room),
        };
        r.joined = true;
        self.queue_replay(session, room, r);
        self.pump(now_ms, session);
    }

    /// A first join's replay: the last `history_on_join` cached messages, as history.
    fn first_join(&mut self, now_ms: i64, conv: &str) -> Replay {
        self.expire(now_ms, conv);
        let (after, upto) = match self.convs.get(conv) {
            Some(c) => {
                let skip = c.recent.len().saturating_sub(self.config.history_on_join);
                let upto = c.recent.back().map_or(c.committed, |r| r.id);
                let after = c.recent.get(skip).map_or(upto, |r| r.id.saturating_sub(1));
                // A cache emptied by the bound on all caches: the rest of the history is read
                // from the store by the replay.
                let short = c.recent.len() < self.config.history_on_join;
                let n = self.config.history_on_join as u64;
                let after = if c.trimmed && short {
                    upto.saturating_sub(n)
                } else {
                    after
                };
                (after, upto)
            }
            None => (0, 0),
        };
        Replay {
            history: Some(HistoryPart { upto, count: 0 }),
            ..Replay::after(after)
        }
    }

    /// Adds `r` to what `session` is owed. One replay per conversation: a second one merges
    /// into the first (from the earlier point on, owing what either owed). A DM conversation
    /// not from a page of undelivered DMs is held while they are read (a held one starts with
    /// the page that lists it, or after the last page), so no DM replay has sent anything
    /// when a page merges into it.
    fn queue_replay(&mut self, session: SessionId, conv: &str, r: Replay) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.closing {
            return;
        }
        match s.replays.get_mut(conv) {
            Some(old) => {
                if r.after < old.after {
                    // From the earlier point on: what was read past it does not follow it.
                    old.after = r.after;
                    old.page.clear();
                    old.reading = None;
                }
                old.joined |= r.joined;
                if old.history.is_none() {
                    old.history = r.history;
                }
                if r.from_store && !old.from_store {
                    old.from_store = true;
                    s.store_owed += 1;
                    if std::mem::take(&mut old.held) {
                        s.order.push_back(conv.to_owned());
                    }
                }
            }
            None => {
                let held = conv.starts_with('@') && s.reading_dms() && !r.from_store;
                s.store_owed += usize::from(r.from_store);
                if held {
                    s.held.push(conv.to_owned());
                } else {
                    s.order.push_back(conv.to_owned());
                }
                s.replays.insert(conv.to_owned(), Replay { held, ..r });
            }
        }
    }

    /// Forgets `session`'s replay of `conv` (at the front of its order): done, or no longer
    /// owed.
    fn end_replay(&mut self, session: SessionId, conv: &str) -> Option<Replay> {
        let s = self.sessions.get_mut(&session)?;
        s.order.pop_front();
        let r = s.replays.remove(conv);
        s.release_drained();
        let r = r?;
        s.store_owed = s.store_owed.saturating_sub(usize::from(r.from_store));
        Some(r)
    }

    /// Streams what `session` is owed while its queue is under [`PAGE_BYTES`]; called again
    /// by [`Server::sent`] as the transport takes it. Work is per message sent. Room replays
    /// never wait for the undelivered DMs; the next page of those is read once the current
    /// page's conversations are sent.
    fn pump(&mut self, now_ms: i64, session: SessionId) {
        loop {
            let Some(s) = self.sessions.get_mut(&session) else {
                return;
            };
            if s.closing {
                return;
            }
            let key = s.key;
            if s.store_owed == 0 {
                if let Offline::More(after) = &s.offline {
                    let after = Some(after.clone());
                    s.offline = Offline::Reading;
                    self.read(Output::ReadUndelivered {
                        session,
                        key,
                        after,
                        limit: UNDELIVERED_PAGE,
                    });
                    continue;
                }
            }
            if s.queued >= PAGE_BYTES {
                return;
            }
            let Some(conv) = s.order.front().cloned() else {
                return;
            };
            if s.replays.get(&conv).is_none_or(|r| r.held) {
                // A stale entry (the replay ended, or is held again).
                s.order.pop_front();
                s.release_drained();
                continue;
            }
            let member = if conv.starts_with('@') {
                dm_has(&conv, &key)
            } else {
                self.in_room(&key, &conv)
            };
            if member {
                if !self.replay_step(now_ms, session, key, &conv) {
                    // It waits for the store.
                    return;
                }
            } else {
                // Parted meanwhile: nothing more is owed.
                self.end_replay(session, &conv);
            }
        }
    }

    /// One step of `session`'s replay of `conv`: its `joined`, one message (from the page read
    /// from the store, or from the cache), a store read for what the cache no longer holds, or
    /// its end (`history_end` for a first join, the delivery mark for DMs received while away).
    /// False if it waits for the store.
    fn replay_step(&mut self, now_ms: i64, session: SessionId, key: Key, conv: &str) -> bool {
        if !self.conv_synced(conv) {
            // The sync pumps the sessions of the conversation when it is done.
            self.ensure_sync(conv);
            return false;
        }
        self.expire(now_ms, conv);
        let Server {
            sessions, convs, ..
        } = self;
        let Some(s) = sessions.get_mut(&session) else {
            return false;
        };
        let (client, echo) = (s.client, s.echo);
        let Some(r) = s.replays.get_mut(conv) else {
            return false;
        };
        if std::mem::take(&mut r.joined) {
            self.send_joined(session, conv);
            return true;
        }
        if r.reading.is_some() {
            return false;
        }
        let after = r.after;
        while r.page.front().is_some_and(|m| m.id <= after) {
            r.page.pop_front();
        }
        let next = match r.page.front() {
            Some(m) => Next::Page(m.clone()),
            None => {
                let (recent, committed) = convs
                    .get(conv)
                    .map_or((None, 0), |c| (Some(&c.recent), c.committed));
                let recent = recent.filter(|c| !c.is_empty());
                // The cache is in id order: the next message is found by bisection. Ids
                // between two cached messages were never stored (a failed commit).
                let i = recent.map_or(0, |c| c.partition_point(|m| m.id <= after));
                match recent.and_then(|c| c.get(i)) {
                    Some(m) if i > 0 || m.id == after.saturating_add(1) => Next::Cached(m.clone()),
                    // The cache starts later: what lies between is read from the store, and
                    // on up to the last message committed, in case the cache has moved on by
                    // the time the page comes (a busy room, a small cache).
                    Some(_) => Next::Read(committed),
                    None => {
                        let top = recent.and_then(|c| c.back()).map_or(0, |m| m.id);
                        if committed > top.max(after) {
                            Next::Read(committed)
                        } else {
                            Next::End
                        }
                    }
                }
            }
        };
        let history_upto = r.history.as_ref().map(|h| h.upto);
        let dm = conv.starts_with('@');
        match next {
            Next::Page(m) | Next::Cached(m) => {
                let history = history_upto.is_some_and(|u| m.id <= u);
                if !history && r.history.is_some() {
                    // The history part is over: its end comes before the live messages after it.
                    let count = r.history.take().map_or(0, |h| h.count);
                    self.send_history_end(session, conv, None, count);
                    return true;
                }
                if r.page.front().is_some_and(|p| p.id == m.id) {
                    r.page.pop_front();
                }
                r.after = m.id;
                if let (true, Some(h)) = (history, r.history.as_mut()) {
                    h.count += 1;
                }
                let mut msg = to_msg(&m, history);
                // The sending client's own copy carries its sequence number; without echo, a
                // room message's own copy is its ack (in its place, as live).
                if !history && m.from_key == key {
                    msg.c = m.client_ref.filter(|x| Some(x.0) == client).map(|x| x.1);
                }
                let data = match msg.c {
                    Some(c) if !echo && !dm => enc(&ServerMsg::Ack {
                        c,
                        conv: msg.conv,
                        id: msg.id,
                        ts: msg.ts,
                    }),
                    _ if !kind::is_message(m.kind) => enc(&record_msg(&m, history)),
                    _ => enc(&ServerMsg::Msg(msg)),
                };
                let pushed = self.push_send(session, data);
                if pushed {
                    self.stats.deliveries += 1;
                }
                if pushed && dm {
                    self.replay_delivered(session, conv, m.id);
                }
                true
            }
            Next::Read(upto) => {
                let token = self.next_read;
                self.next_read += 1;
                r.reading = Some((token, upto));
                self.read(Output::ReadAfter {
                    session,
                    token,
                    conv: conv.to_owned(),
                    after,
                    upto,
                    limit: REPLAY_READ,
                    max_bytes: PAGE_BYTES,
                });
                false
            }
            Next::End => {
                let Some(r) = self.end_replay(session, conv) else {
                    return true;
                };
                if let Some(h) = r.history {
                    self.send_history_end(session, conv, None, h.count);
                }
                // What a DM replay sent is delivered: marked once, at its end (or when its
                // session ends first).
                let marks = self.sessions.get(&session).is_some_and(|s| s.marks_dms());
                if r.delivered > 0 && marks {
                    let op = Op::DmCursor {
                        key,
                        conv: conv.to_owned(),
                        upto: r.delivered,
                    };
                    self.persist(vec![op], Vec::new());
                }
                true
            }
        }
    }

    /// A page of [`Output::ReadAfter`] `token` for `session`'s replay of `conv` (ids after its
    /// cursor, oldest first), or why the store could not read it. Stale answers (the replay
    /// ended or started again meanwhile) are ignored. A read that failed closes the session
    /// with a `store_failed` error: skipping what it could not read would leave a hole the
    /// client could not see; reconnecting resumes from the last id it got.
    pub fn replay_loaded(
        &mut self,
        now_ms: i64,
        session: SessionId,
        conv: &str,
        token: u64,
        page: Result<Vec<Record>, String>,
    ) {
        self.read_done();
        let cutoff = self.config.max_age_ms.map(|a| now_ms.saturating_sub(a));
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.closing {
            return;
        }
        let Some(r) = s.replays.get_mut(conv) else {
            return;
        };
        let Some((_, upto)) = r.reading.filter(|(t, _)| *t == token) else {
            return;
        };
        r.reading = None;
        match page {
            Ok(records) => {
                let last = records.last().map_or(upto, |m| m.id.min(upto));
                let after = r.after;
                r.page = records
                    .into_iter()
                    .filter(|m| m.conv == conv && m.id > after && m.id <= upto)
                    // Retention by age: what the store is about to delete is not replayed.
                    .filter(|m| cutoff.is_none_or(|c| m.ts_ms >= c))
                    .take(REPLAY_READ)
                    .collect();
                if r.page.is_empty() {
                    // Nothing (left) there: the cursor moves past what was read.
                    r.after = r.after.max(last);
                }
            }
            Err(e) => {
                debug!(session, conv, error = %e, "replay read failed");
                let m = format!(
                    "the messages you missed in {conv} could not be read; reconnect to get them"
                );
                self.fail(session, None, code::STORE, m);
                self.close_session(session, "store failed", false);
                return;
            }
        }
        self.pump(now_ms, session);
    }

    /// `session`'s replay of the DM conversation `conv` has sent up to `id`.
    fn replay_delivered(&mut self, session: SessionId, conv: &str, id: u64) {
        if let Some(r) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.replays.get_mut(conv))
        {
            r.delivered = r.delivered.max(id);
        }
    }

    /// Drops cached messages of `conv` that retention by age has deleted from the store.
    fn expire(&mut self, now_ms: i64, conv: &str) {
        let (Some(age), Some(c)) = (self.config.max_age_ms, self.convs.get_mut(conv)) else {
            return;
        };
        let cutoff = now_ms.saturating_sub(age);
        while c.recent.front().is_some_and(|r| r.ts_ms < cutoff) {
            let b = c.pop().unwrap_or(0);
            c.bytes = c.bytes.saturating_sub(b);
            self.cache_bytes = self.cache_bytes.saturating_sub(b);
        }
    }

    /// The end of a history page (`id`: the request's), or of a first join's history.
    fn send_history_end(&mut self, session: SessionId, conv: &str, id: Option<u64>, count: u64) {
        self.send(
            session,
            &ServerMsg::HistoryEnd {
                id,
                conv: conv.to_owned(),
                count,
            },
        );
    }

    /// The conversation a `history` request names, as far as it can be told: the room
    /// (folded), the DM conversation with an existing nick, or nothing.
    fn history_conv(&self, key: &Key, room: Option<&str>, with: Option<&str>) -> String {
        match (room, with) {
            (Some(r), None) => names::fold(r),
            (None, Some(w)) => self
                .nick_owner
                .get(&names::fold(w))
                .map(|(_, other)| dm_conv(key, other))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// A `history` request with an `id` that gets no page (refused, or its read failed) is
    /// still closed by a `history_end` with that id (and `count` 0), right after its error,
    /// so that a client always knows when a request is over (`error` has no field for it).
    fn refuse_history(&mut self, session: SessionId, key: &Key, m: &ClientMsg) {
        if let ClientMsg::History {
            id: Some(id),
            room,
            with,
            ..
        } = m
        {
            let conv = self.history_conv(key, room.as_deref(), with.as_deref());
            self.send_history_end(session, &conv, Some(*id), 0);
        }
    }

    /// Whether the room (folded) exists: it has members, messages or a topic. (A room that
    /// has none of these but has an owner keeps it: see [`Server::join`].)
    fn room_known(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
            || self.convs.contains_key(room)
            || self.topics.contains_key(room)
    }

    /// A room that does not exist yet may not look like one that does (UTS #39 skeletons of
    /// the folded names).
    fn check_room_name(&self, room: &str) -> Result<(), String> {
        if self.room_known(room) {
            return Ok(());
        }
        match self.room_look.others(room, &room.to_owned()).first() {
            Some(other) => Err(format!(
                "room '{room}' looks like '{other}', which already exists; join {other}, or pick a name that looks different"
            )),
            None => Ok(()),
        }
    }

    fn leave_room(&mut self, now_ms: i64, room: &str, key: &Key, ev: Presence) {
        self.publish_presence(room, *key, ev.clone());
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.members.remove(key);
        if r.members.is_empty() {
            self.unfollow_room(room);
            // Nobody left to tell.
            self.rooms.remove(room);
            self.dirty_rooms.remove(room);
            if !self.room_known(room) {
                self.room_look.remove(room, &room.to_owned());
            }
        } else {
            self.queue_presence(now_ms, room, ev);
        }
    }

    fn queue_presence(&mut self, now_ms: i64, room: &str, ev: Presence) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.pending.push(ev);
            self.dirty_rooms.insert(room.to_owned());
            if self.presence_due.is_none() {
                self.presence_due = Some(now_ms.saturating_add(self.config.presence_window_ms));
            }
        }
    }

    fn flush_presence(&mut self, room: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut r.pending);
        let data = enc(&ServerMsg::Presence {
            room: room.to_owned(),
            events,
        });
        self.send_room(room, &data);
    }

    /// Every session of every member of `room`.
    fn room_sessions(&self, room: &str) -> Vec<SessionId> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|k| self.users.get(k))
            .flat_map(|u| u.sessions.iter().copied())
            .collect()
    }

    fn send_room(&mut self, room: &str, data: &Bytes) {
        for to in self.room_sessions(room) {
            self.push_send(to, data.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn say(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        c: u64,
        room: Option<String>,
        to: Option<String>,
        text: String,
        action: bool,
    ) {
        if let Err(e) = names::text(&text, self.config.max_text) {
            return self.fail(session, Some(c), code::BAD_TEXT, e);
        }
        let client = self
            .sessions
            .get(&session)
            .and_then(|s| s.client)
            .unwrap_or(0);
        let r = (key, client, c);
        // The conversation the request names (whether the user may write there is checked
        // below): a resend names the same one as the original.
        let named = match (&room, &to) {
            (Some(room), None) => Some(names::fold(room)),
            (None, Some(to)) => self
                .nick_owner
                .get(&names::fold(to))
                .map(|(_, k)| dm_conv(&key, k)),
            _ => None,
        };
        match self.refs.get(&r) {
            // A resend of a message still being stored: its ack will follow.
            Some(RefState::InFlight) => return,
            // A resend of a stored message (its ack was lost): acknowledge again. Without
            // echo, unless a catch-up replay of the room has yet to reach the message: the ack
            // comes there, in its place (sent now, it would overtake the messages before it).
            Some(RefState::Stored { conv: hash, id, ts }) => {
                let Some(conv) = named.filter(|n| self.conv_hash(n) == hash) else {
                    let m = format!(
                        "message {c} was already stored in another conversation than this one names; a new message needs a new c"
                    );
                    return self.fail(session, Some(c), code::BAD_REQUEST, m);
                };
                return self.ack_again(&[session], c, conv, id, ts);
            }
            None => {}
        }
        let from_nick = self.nick_of.get(&key).cloned().unwrap_or_default();
        let (conv, to_key, to_nick) = match (room, to) {
            (Some(room), None) => {
                let room = names::fold(&room);
                if !self.in_room(&key, &room) {
                    return self.fail(
                        session,
                        Some(c),
                        code::NOT_IN_ROOM,
                        format!("you are not in {room}; /join {room} first"),
                    );
                }
                if let Err(m) = self.may_speak(&room, &key) {
                    return self.fail(session, Some(c), code::MUTED, m);
                }
                (room, None, None)
            }
            (None, Some(to)) => match self.nick_owner.get(&names::fold(&to)) {
                Some((n, k)) => (dm_conv(&key, k), Some(*k), Some(n.clone())),
                None => {
                    return self.fail(
                        session,
                        Some(c),
                        code::NO_SUCH_NICK,
                        format!("no user is called '{to}'"),
                    );
                }
            },
            _ => {
                return self.fail(
                    session,
                    Some(c),
                    code::BAD_REQUEST,
                    "say needs exactly one of room and to".into(),
                );
            }
        };
        let msg = NewMessage {
            conv,
            ts_ms: now_ms,
            from_key: key,
            from_nick,
            to_key,
            to_nick,
            kind: u8::from(action),
            text,
            client_ref: Some((client, c)),
        };
        self.remember(r, RefState::InFlight);
        self.stats.accepted += 1;
        self.persist(
            vec![Op::Message(msg.clone())],
            vec![Pending::Message { msg, client, c }],
        );
    }

    /// A `say` was stored (with the id the store gave it), or found stored already (a resend
    /// whose original reached the store through another server, or before a restart), or
    /// could not be stored (`None`).
    fn message_committed(
        &mut self,
        now_ms: i64,
        msg: NewMessage,
        client: u64,
        c: u64,
        outcome: Option<Outcome>,
    ) {
        let key = msg.from_key;
        let r = (key, client, c);
        // The sessions of the sending client instance (normally one; a reconnect may have
        // replaced it meanwhile).
        let senders = self.client_sessions(&key, client);
        let record = match outcome {
            Some(Outcome::Stored { id }) => msg.with_id(id),
            Some(Outcome::Duplicate { conv, id, ts_ms }) => {
                return self.already_stored(now_ms, &senders, r, &msg.conv, conv, id, ts_ms);
            }
            _ => {
                self.refs.remove(&r);
                for s in senders {
                    self.fail(
                        s,
                        Some(c),
                        code::STORE,
                        "the server could not store this message; it was not delivered".into(),
                    );
                }
                return;
            }
        };
        self.stats.messages += 1;
        let conv_hash = self.conv_hash(&record.conv);
        self.remember(
            r,
            RefState::Stored {
                conv: conv_hash,
                id: record.id,
                ts: record.ts_ms,
            },
        );
        if self.cluster.is_some() {
            self.publish_msg(&record);
        }
        self.land(now_ms, Arrival::Local { record, client, c });
    }

    /// Fans a stored message out to the sessions here that should see it, and acknowledges
    /// it to its sender's sessions if it was sent here (`local`: the sending client instance
    /// and its `c`). The caller has checked its place in the conversation (the next id, or
    /// behind a replay that covers the gap).
    fn fan_out(&mut self, record: Record, local: Option<(u64, u64)>) {
        let key = record.from_key;
        // The sessions of the sending client instance (normally one; a reconnect may have
        // replaced it meanwhile).
        let senders = match local {
            Some((client, _)) => self.client_sessions(&key, client),
            None => Vec::new(),
        };
        let c = local.map_or(0, |l| l.1);
        // Commits come in id order: every message of the conversation up to this one is in
        // the store now.
        let cv = self.convs.entry(record.conv.clone()).or_default();
        cv.committed = cv.committed.max(record.id);
        // Encoded once for everyone, and once more for the sending client's own sessions
        // (normally one), whose copy carries its sequence number `c`.
        let msg = to_msg(&record, false);
        let own = (!senders.is_empty()).then(|| {
            enc(&ServerMsg::Msg(Msg {
                c: Some(c),
                ..msg.clone()
            }))
        });
        // No sender here (a message from the bus): no ack to encode.
        let ack = (!senders.is_empty()).then(|| {
            enc(&ServerMsg::Ack {
                c,
                conv: record.conv.clone(),
                id: record.id,
                ts: record.ts_ms,
            })
        });
        // Senders without echo, for a room message: the ack goes where the own copy would,
        // through `deliver`, so it keeps its place among the room's messages (behind a replay
        // the session is catching up with, it comes in the replay, see `replay_next`).
        let quiet: Vec<SessionId> = if record.to_key.is_none() {
            senders
                .iter()
                .copied()
                .filter(|s| self.sessions.get(s).is_some_and(|s| !s.echo))
                .collect()
        } else {
            Vec::new()
        };
        let data = if kind::is_message(record.kind) {
            enc(&ServerMsg::Msg(msg))
        } else {
            enc(&record_msg(&record, false))
        };
        let copies = Copies {
            data,
            own,
            senders: &senders,
            quiet: ack
                .clone()
                .filter(|_| !quiet.is_empty())
                .map(|a| (a, quiet.as_slice())),
        };
        let (conv, id) = (record.conv.as_str(), record.id);
        // Quiet senders the room's fan-out reached (or queued a replay for).
        let mut reached = Vec::new();
        match record.to_key {
            None => {
                self.flush_presence(conv);
                for to in self.room_sessions(conv) {
                    if quiet.contains(&to) {
                        reached.push(to);
                    }
                    self.deliver(to, conv, id, copies.to(to), None);
                }
            }
            Some(to) => {
                // Marked delivered to `to` only as one of its sessions is sent it ([`deliver`],
                // or the replay that takes it in turn); with none, it waits in the store until
                // `to` connects.
                self.deliver_user(&key, conv, id, &copies, &to);
                if to != key {
                    self.deliver_user(&to, conv, id, &copies, &to);
                }
            }
        }
        if let Some(ack) = ack {
            for s in senders {
                // A quiet sender outside the room now (it left before the commit) is not part
                // of the fan-out: its ack comes on its own, as to everyone else.
                if !reached.contains(&s) {
                    self.push_send(s, ack.clone());
                }
            }
        }
        if record.target.is_some() {
            self.amend_cache(&record);
        }
        self.cache(record);
    }

    /// The store already held the message `r` names (`conv`, `id`, `ts_ms`): it was stored
    /// before this server saw it (sent to another node of a cluster, or before a restart, and
    /// resent after its ack was lost). It is acknowledged again and not shown again: whoever
    /// saw it saw it then, and members catch up on it from the store. A node of a cluster
    /// that had not heard of it (the node that stored it died before publishing it) learns
    /// here that the conversation goes on at least to `id`: its sessions catch up to it.
    #[allow(clippy::too_many_arguments)]
    fn already_stored(
        &mut self,
        now_ms: i64,
        senders: &[SessionId],
        r: RefKey,
        named: &str,
        conv: String,
        id: u64,
        ts: i64,
    ) {
        let c = r.2;
        if conv != named {
            self.refs.remove(&r);
            for &s in senders {
                let m = format!(
                    "message {c} was already stored in another conversation than this one names; a new message needs a new c"
                );
                self.fail(s, Some(c), code::BAD_REQUEST, m);
            }
            return;
        }
        let hash = self.conv_hash(&conv);
        self.remember(r, RefState::Stored { conv: hash, id, ts });
        let behind = self.convs.get(&conv).is_some_and(|cv| cv.committed < id);
        if self.cluster.is_some() && self.conv_synced(&conv) && behind {
            self.fill_gap(now_ms, &conv, id);
        }
        self.ack_again(senders, c, conv, id, ts);
    }

    /// Acknowledges again message `c` of `senders`' client instance, stored before as `id`
    /// of `conv` (a resend, or a message a gap read showed before its commit was heard of).
    /// Without own echo the `ack` of a room message is the client's own copy, so it goes in
    /// its place: a session whose catch-up of the room has yet to reach `id` gets it there
    /// (sent now, it would overtake the messages before it, and the client, which drops what
    /// is at or below the last id it showed, would never show those). Everyone else gets it
    /// now: they were sent everything up to `id` already, or they see `conv` as history.
    fn ack_again(&mut self, senders: &[SessionId], c: u64, conv: String, id: u64, ts: i64) {
        let now: Vec<SessionId> = senders
            .iter()
            .copied()
            .filter(|&s| !self.replay_brings_ack(s, &conv, id))
            .collect();
        self.send_ack(&now, c, conv, id, ts);
    }

    /// Whether `session`'s catch-up of `conv` will send message `id` in its place, as live,
    /// with its `ack` (no own echo, a room): its replay has not reached `id` and does not
    /// take it as history, or it waits for the room's sync to resume before `id`.
    fn replay_brings_ack(&self, session: SessionId, conv: &str, id: u64) -> bool {
        if conv.starts_with('@') || self.sessions.get(&session).is_none_or(|s| s.echo) {
            return false;
        }
        if let Some(r) = self
            .sessions
            .get(&session)
            .and_then(|s| s.replays.get(conv))
        {
            return r.after < id && r.history.as_ref().is_none_or(|h| id > h.upto);
        }
        self.convs.get(conv).is_some_and(|cv| {
            cv.waiting
                .iter()
                .any(|&(s, after)| s == session && after.is_some_and(|a| a < id))
        })
    }

    /// The sessions of `key`'s client instance `client` (normally one; a reconnect may have
    /// replaced it meanwhile).
    fn client_sessions(&self, key: &Key, client: u64) -> Vec<SessionId> {
        self.users
            .get(key)
            .map(|u| {
                u.sessions
                    .iter()
                    .copied()
                    .filter(|s| self.sessions.get(s).and_then(|s| s.client) == Some(client))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Acknowledges message `c` (stored as `id` of `conv`) to `senders`, on its own.
    fn send_ack(&mut self, senders: &[SessionId], c: u64, conv: String, id: u64, ts: i64) {
        if senders.is_empty() {
            return;
        }
        let ack = enc(&ServerMsg::Ack { c, conv, id, ts });
        for &s in senders {
            self.push_send(s, ack.clone());
        }
    }

    /// Adds a stored message to its conversation's replay cache, and keeps all caches under
    /// [`MAX_CACHE_BYTES`] by emptying those written to least recently.
    fn cache(&mut self, record: Record) {
        let cap = self.config.cache_cap();
        self.cache_tick += 1;
        let tick = self.cache_tick;
        let Some(cv) = self.convs.get_mut(&record.conv) else {
            return;
        };
        let old = std::mem::replace(&mut cv.used, tick);
        let name = if old != 0 {
            self.cache_order.remove(&old)
        } else {
            None
        };
        let name = name.unwrap_or_else(|| record.conv.clone());
        let delta = cv.push(record, cap);
        self.cache_order.insert(tick, name);
        self.cache_bytes = self.cache_bytes.saturating_add_signed(delta);
        while self.cache_bytes > MAX_CACHE_BYTES {
            let Some((_, conv)) = self.cache_order.pop_first() else {
                break;
            };
            if let Some(c) = self.convs.get_mut(&conv) {
                self.cache_bytes = self.cache_bytes.saturating_sub(c.bytes);
                c.recent = VecDeque::new();
                c.bytes = 0;
                c.used = 0;
                c.trimmed = true;
            }
        }
    }
}

mod amend;
pub use amend::emoji;
mod cluster;
use cluster::Arrival;
pub use cluster::ClusterConfig;
mod limits;
pub use limits::{Change, Limits};
mod moderation;
mod opers;
mod reading;
pub use moderation::{EVENT_KIND, MAX_ROOM_ENTRIES, Net, Role, fingerprint};
use moderation::{Rated, record_msg};
pub mod files;
pub mod meet;

#[cfg(test)]
mod tests;
