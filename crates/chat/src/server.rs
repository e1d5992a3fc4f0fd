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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use bytes::Bytes;
use chirp_store::{Loaded, Op, Record};
use tracing::debug;

use crate::names;
use crate::wire::{self, ClientMsg, JoinReq, Msg, Presence, Resume, RoomInfo, ServerMsg, code};

/// A client's identity: its static public key.
pub type Key = [u8; 32];
/// The runner's name for one connection.
pub type SessionId = u64;

/// Server settings (every one can be set in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Messages replayed on join.
    pub history_on_join: usize,
    /// Messages kept in memory per conversation, for replay on join and after a reconnect.
    pub replay_cache: usize,
    /// Largest message text, in bytes.
    pub max_text: usize,
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            history_on_join: 50,
            replay_cache: 256,
            max_text: 8 * 1024,
            burst: 10,
            per_sec: 5,
            max_rooms_per_user: 32,
            max_sessions_per_ip: 16,
            presence_window_ms: 200,
            max_history_page: 200,
            max_names: 2000,
            max_age_ms: None,
        }
    }
}

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send one chat-protocol message to a session.
    Send {
        /// The session.
        to: SessionId,
        /// The encoded message.
        data: Bytes,
    },
    /// Close a session (after sending what was queued for it).
    Close {
        /// The session.
        session: SessionId,
        /// Why, for the transport's CLOSE.
        reason: String,
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
        /// The conversation.
        conv: String,
        /// Ids below this.
        before: Option<u64>,
        /// How many.
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
    /// Messages stored since start.
    pub messages: u64,
    /// Undecodable requests.
    pub malformed: u64,
    /// Requests refused by flood control.
    pub flood_refused: u64,
}

/// Token bucket in thousandths of a token, so that refill needs no floating point.
#[derive(Debug, Clone)]
struct Bucket {
    milli: u64,
    last_ms: i64,
}

impl Bucket {
    fn take(&mut self, now_ms: i64, burst: u32, per_sec: u32) -> bool {
        let cap = u64::from(burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0) as u64;
        // per_sec tokens per 1000 ms = per_sec milli-tokens per ms.
        self.milli = cap.min(
            self.milli
                .saturating_add(elapsed.saturating_mul(u64::from(per_sec))),
        );
        self.last_ms = self.last_ms.max(now_ms);
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
    /// Set by `hello`.
    client: Option<u64>,
    bucket: Bucket,
}

#[derive(Debug)]
struct User {
    nick: String,
    sessions: Vec<SessionId>,
    rooms: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Room {
    members: BTreeSet<Key>,
    pending: Vec<Presence>,
}

#[derive(Debug, Default)]
struct Conv {
    last_id: u64,
    recent: VecDeque<Record>,
}

#[derive(Debug)]
enum Pending {
    Message { record: Record, client: u64, c: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RefState {
    InFlight,
    Stored { conv: String, id: u64, ts: i64 },
}

/// Most remembered `(key, client, c)` references, for recognising resent messages.
const MAX_REFS: usize = 100_000;
/// Most undelivered DMs held for one user.
const MAX_OFFLINE_PER_USER: usize = 10_000;

/// The server core. See the module documentation.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    sessions: HashMap<SessionId, Session>,
    per_ip: HashMap<IpAddr, usize>,
    users: HashMap<Key, User>,
    /// Registered nicks: fold → (nick, key), and key → nick.
    nick_owner: HashMap<String, (String, Key)>,
    nick_of: HashMap<Key, String>,
    rooms: HashMap<String, Room>,
    topics: HashMap<String, (String, String)>,
    convs: HashMap<String, Conv>,
    offline: HashMap<Key, Vec<Record>>,
    refs: HashMap<(Key, u64, u64), RefState>,
    ref_order: VecDeque<(Key, u64, u64)>,
    pending: HashMap<u64, Vec<Pending>>,
    next_token: u64,
    presence_due: Option<i64>,
    dirty_rooms: BTreeSet<String>,
    out: VecDeque<Output>,
    stats: ServerStats,
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
    }
}

fn enc(m: &ServerMsg) -> Bytes {
    Bytes::from(m.encode())
}

impl Server {
    /// A server with the state loaded from the store.
    pub fn new(config: ServerConfig, loaded: Loaded) -> Self {
        let mut s = Server {
            config,
            sessions: HashMap::new(),
            per_ip: HashMap::new(),
            users: HashMap::new(),
            nick_owner: HashMap::new(),
            nick_of: HashMap::new(),
            rooms: HashMap::new(),
            topics: HashMap::new(),
            convs: HashMap::new(),
            offline: HashMap::new(),
            refs: HashMap::new(),
            ref_order: VecDeque::new(),
            pending: HashMap::new(),
            next_token: 1,
            presence_due: None,
            dirty_rooms: BTreeSet::new(),
            out: VecDeque::new(),
            stats: ServerStats::default(),
        };
        for (nick, key) in loaded.nicks {
            s.nick_owner.insert(names::fold(&nick), (nick.clone(), key));
            s.nick_of.insert(key, nick);
        }
        for (room, topic, by, _) in loaded.topics {
            s.topics.insert(room, (topic, by));
        }
        for (conv, last) in loaded.last_ids {
            s.convs.entry(conv).or_default().last_id = last;
        }
        for r in loaded.recent {
            if let Some((cid, c)) = r.client_ref {
                s.remember(
                    (r.from_key, cid, c),
                    RefState::Stored {
                        conv: r.conv.clone(),
                        id: r.id,
                        ts: r.ts_ms,
                    },
                );
            }
            let cap = s.config.replay_cache;
            let conv = s.convs.entry(r.conv.clone()).or_default();
            conv.last_id = conv.last_id.max(r.id);
            conv.recent.push_back(r);
            if conv.recent.len() > cap {
                conv.recent.pop_front();
            }
        }
        for r in loaded.undelivered {
            if let Some(k) = r.to_key {
                s.offline.entry(k).or_default().push(r);
            }
        }
        s
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            sessions: self.sessions.len(),
            users: self.users.len(),
            rooms: self.rooms.len(),
            ..self.stats
        }
    }

    /// The next thing to do, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Server::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<i64> {
        self.presence_due
    }

    /// Time has reached `now_ms`: flushes batched presence.
    pub fn handle_timeout(&mut self, now_ms: i64) {
        if self.presence_due.is_some_and(|d| d <= now_ms) {
            self.presence_due = None;
            for room in std::mem::take(&mut self.dirty_rooms) {
                self.flush_presence(&room);
            }
        }
    }

    /// A connection completed its handshake; `key` is the client's static key.
    pub fn connected(&mut self, _now_ms: i64, session: SessionId, ip: IpAddr, key: Key) {
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
            });
            return;
        }
        *n += 1;
        self.sessions.insert(
            session,
            Session {
                key,
                ip,
                client: None,
                bucket: Bucket {
                    milli: u64::from(self.config.burst) * 1000,
                    last_ms: i64::MIN / 2,
                },
            },
        );
    }

    /// A connection ended (`reason`: "left", "timed out", ...).
    pub fn disconnected(&mut self, now_ms: i64, session: SessionId, reason: &str) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
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

    /// The server is shutting down: every session is told.
    pub fn shutdown(&mut self, reason: &str) {
        let bye = enc(&ServerMsg::Bye {
            reason: reason.to_owned(),
        });
        let ids: Vec<_> = self.sessions.keys().copied().collect();
        for id in ids {
            self.out.push_back(Output::Send {
                to: id,
                data: bye.clone(),
            });
        }
    }

    /// The batch persisted under `token` has committed (`ok`) or failed.
    pub fn committed(&mut self, now_ms: i64, token: u64, ok: bool) {
        let Some(items) = self.pending.remove(&token) else {
            return;
        };
        for item in items {
            match item {
                Pending::Message { record, client, c } => {
                    self.message_committed(now_ms, record, client, c, ok)
                }
            }
        }
    }

    /// A history page read from the store, for `session`.
    pub fn history_loaded(&mut self, session: SessionId, conv: &str, records: Vec<Record>) {
        self.send_page(session, conv, records.iter());
    }

    /// A message from a session.
    pub fn message(&mut self, now_ms: i64, session: SessionId, data: &[u8]) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let key = s.key;
        let hello_done = s.client.is_some();
        let msg = match ClientMsg::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
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
                },
                false,
            ) => self.hello(now_ms, session, key, v, nick, client, rooms, dms),
            (ClientMsg::Hello { .. }, true) => {
                self.send(session, &ServerMsg::error(code::STATE, "hello sent twice"))
            }
            (_, false) => self.send(session, &ServerMsg::error(code::STATE, "send hello first")),
            (m, true) => {
                let c = match &m {
                    ClientMsg::Say { c, .. } => Some(*c),
                    _ => None,
                };
                if !self.take_token(now_ms, session) {
                    self.stats.flood_refused += 1;
                    let msg = format!(
                        "flood control: at most {} requests per second (bursts of {}); not sent, slow down",
                        self.config.per_sec, self.config.burst
                    );
                    self.send(
                        session,
                        &ServerMsg::Error {
                            c,
                            code: code::FLOOD.into(),
                            message: msg,
                        },
                    );
                    return;
                }
                self.request(now_ms, session, key, m);
            }
        }
    }

    fn take_token(&mut self, now_ms: i64, session: SessionId) -> bool {
        let (burst, per_sec) = (self.config.burst, self.config.per_sec);
        self.sessions
            .get_mut(&session)
            .is_some_and(|s| s.bucket.take(now_ms, burst, per_sec))
    }

    fn send(&mut self, to: SessionId, m: &ServerMsg) {
        self.out.push_back(Output::Send { to, data: enc(m) });
    }

    fn send_user(&mut self, key: &Key, data: &Bytes) {
        if let Some(u) = self.users.get(key) {
            for &to in &u.sessions {
                self.out.push_back(Output::Send {
                    to,
                    data: data.clone(),
                });
            }
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

    fn persist(&mut self, ops: Vec<Op>, pending: Vec<Pending>) {
        let token = self.next_token;
        self.next_token += 1;
        if !pending.is_empty() {
            self.pending.insert(token, pending);
        }
        self.out.push_back(Output::Persist { token, ops });
    }

    fn remember(&mut self, r: (Key, u64, u64), state: RefState) {
        if self.refs.insert(r, state).is_none() {
            self.ref_order.push_back(r);
            if self.ref_order.len() > MAX_REFS {
                if let Some(old) = self.ref_order.pop_front() {
                    self.refs.remove(&old);
                }
            }
        }
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
        rooms: Vec<JoinReq>,
        dms: Vec<Resume>,
    ) {
        let close = |s: &mut Self, reason: &str| {
            s.out.push_back(Output::Close {
                session,
                reason: reason.into(),
            })
        };
        if v != wire::VERSION {
            let m = format!(
                "protocol version {v} is not supported (this server speaks {})",
                wire::VERSION
            );
            self.fail(session, None, code::VERSION, m);
            return close(self, "version");
        }
        if let Err(e) = names::nick(&nick) {
            self.fail(session, None, code::BAD_NAME, e);
            return close(self, "bad nick");
        }
        if let Some((owner_nick, owner)) = self.nick_owner.get(&names::fold(&nick)) {
            if *owner != key {
                let m = format!(
                    "nick '{owner_nick}' belongs to another key; pick another nick (nicks are bound to the first key that claims them)"
                );
                self.fail(session, None, code::NICK_TAKEN, m);
                return close(self, "nick taken");
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.client = Some(client);
        }
        // Bind the nick (a changed nick frees the old one).
        if self.nick_of.get(&key) != Some(&nick) {
            if self.users.contains_key(&key) {
                self.rename(key, nick.clone());
            } else {
                self.bind_nick(key, nick.clone());
            }
        }
        let user = self.users.entry(key).or_insert_with(|| User {
            nick: nick.clone(),
            sessions: Vec::new(),
            rooms: BTreeSet::new(),
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
        // Rooms the user is already in through another device: tell this one.
        for room in &current {
            if !rooms.iter().any(|j| names::fold(&j.room) == *room) {
                self.send_joined(session, room);
            }
        }
        for j in rooms {
            self.join(now_ms, session, key, j);
        }
        // DMs: missed while connected before (resume), then stored while offline.
        for r in dms {
            if dm_has(&r.conv, &key) {
                self.replay(now_ms, session, &r.conv, Some(r.after));
            }
        }
        if let Some(msgs) = self.offline.remove(&key) {
            let mut cursors: HashMap<String, u64> = HashMap::new();
            for r in &msgs {
                let m = enc(&ServerMsg::Msg(to_msg(r, false)));
                self.out.push_back(Output::Send {
                    to: session,
                    data: m,
                });
                let e = cursors.entry(r.conv.clone()).or_default();
                *e = (*e).max(r.id);
            }
            let ops = cursors
                .into_iter()
                .map(|(conv, upto)| Op::DmCursor { key, conv, upto })
                .collect();
            self.persist(ops, Vec::new());
        }
    }

    fn bind_nick(&mut self, key: Key, nick: String) {
        if let Some(old) = self.nick_of.remove(&key) {
            self.nick_owner.remove(&names::fold(&old));
        }
        let fold = names::fold(&nick);
        self.nick_owner.insert(fold.clone(), (nick.clone(), key));
        self.nick_of.insert(key, nick.clone());
        self.persist(vec![Op::SetNick { nick, fold, key }], Vec::new());
    }

    /// Renames an online user and tells everyone sharing a room with it, once each.
    fn rename(&mut self, key: Key, new: String) {
        self.bind_nick(key, new.clone());
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
            ClientMsg::Join(j) => self.join(now_ms, session, key, j),
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
                if let Err(e) = names::nick(&nick) {
                    return self.fail(session, None, code::BAD_NAME, e);
                }
                match self.nick_owner.get(&names::fold(&nick)) {
                    Some((n, owner)) if *owner != key => {
                        let m = format!("nick '{n}' belongs to another key; pick another nick");
                        self.fail(session, None, code::NICK_TAKEN, m)
                    }
                    _ => self.rename(key, nick),
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
                self.flush_presence(&room);
                let data = enc(&ServerMsg::Topic {
                    room: room.clone(),
                    topic,
                    by,
                });
                self.send_room(&room, &data);
            }
            ClientMsg::List => {
                let mut rooms: Vec<RoomInfo> = self
                    .rooms
                    .iter()
                    .map(|(name, r)| RoomInfo {
                        room: name.clone(),
                        members: r.members.len() as u64,
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
            ClientMsg::History {
                room,
                with,
                before,
                limit,
            } => {
                let conv = match (room, with) {
                    (Some(r), None) => {
                        let r = names::fold(&r);
                        if !self.in_room(&key, &r) {
                            return self.fail(
                                session,
                                None,
                                code::NOT_IN_ROOM,
                                format!("join {r} to read its history"),
                            );
                        }
                        r
                    }
                    (None, Some(w)) => match self.nick_owner.get(&names::fold(&w)) {
                        Some((_, other)) => dm_conv(&key, other),
                        None => {
                            return self.fail(
                                session,
                                None,
                                code::NO_SUCH_NICK,
                                format!("no user is called '{w}'"),
                            );
                        }
                    },
                    _ => {
                        return self.fail(
                            session,
                            None,
                            code::BAD_REQUEST,
                            "history needs exactly one of room and with".into(),
                        );
                    }
                };
                let limit = limit.clamp(1, self.config.max_history_page) as usize;
                self.history(now_ms, session, conv, before, limit);
            }
        }
    }

    fn history(
        &mut self,
        now_ms: i64,
        session: SessionId,
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
        let whole = oldest.is_none_or(|o| o <= 1);
        if whole || below.len() >= limit {
            let start = below.len().saturating_sub(limit);
            self.send_page(session, &conv, below[start..].iter());
        } else {
            self.out.push_back(Output::ReadHistory {
                session,
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
        records: impl Iterator<Item = &'a Record>,
    ) {
        let mut count = 0;
        for r in records {
            count += 1;
            let data = enc(&ServerMsg::Msg(to_msg(r, true)));
            self.out.push_back(Output::Send { to: session, data });
        }
        self.send_history_end(session, conv, count);
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
    }

    fn join(&mut self, now_ms: i64, session: SessionId, key: Key, j: JoinReq) {
        if let Err(e) = names::room(&j.room) {
            return self.fail(session, None, code::BAD_NAME, e);
        }
        let room = names::fold(&j.room);
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
            self.rooms
                .entry(room.clone())
                .or_default()
                .members
                .insert(key);
            self.queue_presence(now_ms, &room, Presence::Join { nick });
            for s in sessions {
                self.send_joined(s, &room);
            }
        } else {
            self.send_joined(session, &room);
        }
        self.replay(now_ms, session, &room, j.after);
    }

    /// Sends `session` the messages of `conv` after `after` (missed while away: not marked as
    /// history), or the last `history_on_join` (marked as history).
    /// Drops cached messages of `conv` that retention by age has deleted from the store.
    fn expire(&mut self, now_ms: i64, conv: &str) {
        let (Some(age), Some(c)) = (self.config.max_age_ms, self.convs.get_mut(conv)) else {
            return;
        };
        let cutoff = now_ms.saturating_sub(age);
        while c.recent.front().is_some_and(|r| r.ts_ms < cutoff) {
            c.recent.pop_front();
        }
    }

    fn replay(&mut self, now_ms: i64, session: SessionId, conv: &str, after: Option<u64>) {
        self.expire(now_ms, conv);
        let Some(c) = self.convs.get(conv) else {
            if after.is_none() {
                self.send_history_end(session, conv, 0);
            }
            return;
        };
        let msgs: Vec<Bytes> = match after {
            Some(a) => {
                if c.last_id > a && c.recent.front().is_some_and(|r| r.id > a + 1) {
                    let first = c.recent.front().map_or(0, |r| r.id);
                    let m = format!(
                        "{conv}: messages {}..{} were missed and are no longer replayed; /history shows them",
                        a + 1,
                        first - 1
                    );
                    self.out.push_back(Output::Send {
                        to: session,
                        data: enc(&ServerMsg::error(code::GAP, m)),
                    });
                }
                let c = &self.convs[conv];
                c.recent
                    .iter()
                    .filter(|r| r.id > a)
                    .map(|r| enc(&ServerMsg::Msg(to_msg(r, false))))
                    .collect()
            }
            None => {
                let n = self.config.history_on_join;
                let skip = c.recent.len().saturating_sub(n);
                c.recent
                    .iter()
                    .skip(skip)
                    .map(|r| enc(&ServerMsg::Msg(to_msg(r, true))))
                    .collect()
            }
        };
        let count = msgs.len() as u64;
        for data in msgs {
            self.out.push_back(Output::Send { to: session, data });
        }
        // A first join's history ends like a page, so that a client can show all of it at
        // once, above the join (a resume's messages are live ones and need no end).
        if after.is_none() {
            self.send_history_end(session, conv, count);
        }
    }

    fn send_history_end(&mut self, session: SessionId, conv: &str, count: u64) {
        self.send(
            session,
            &ServerMsg::HistoryEnd {
                conv: conv.to_owned(),
                count,
            },
        );
    }

    fn leave_room(&mut self, now_ms: i64, room: &str, key: &Key, ev: Presence) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.members.remove(key);
        if r.members.is_empty() {
            // Nobody left to tell.
            self.rooms.remove(room);
            self.dirty_rooms.remove(room);
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

    fn send_room(&mut self, room: &str, data: &Bytes) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for k in &r.members {
            if let Some(u) = self.users.get(k) {
                for &to in &u.sessions {
                    self.out.push_back(Output::Send {
                        to,
                        data: data.clone(),
                    });
                }
            }
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
        match self.refs.get(&r).cloned() {
            // A resend of a message still being stored: its ack will follow.
            Some(RefState::InFlight) => return,
            // A resend of a stored message (its ack was lost): acknowledge again.
            Some(RefState::Stored { conv, id, ts }) => {
                return self.send(session, &ServerMsg::Ack { c, conv, id, ts });
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
        let cv = self.convs.entry(conv.clone()).or_default();
        cv.last_id += 1;
        let record = Record {
            conv,
            id: cv.last_id,
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
        self.persist(
            vec![Op::Message(record.clone())],
            vec![Pending::Message { record, client, c }],
        );
    }

    fn message_committed(&mut self, _now_ms: i64, record: Record, client: u64, c: u64, ok: bool) {
        let key = record.from_key;
        let r = (key, client, c);
        // The sessions of the sending client instance (normally one; a reconnect may have
        // replaced it meanwhile).
        let senders: Vec<SessionId> = self
            .users
            .get(&key)
            .map(|u| {
                u.sessions
                    .iter()
                    .copied()
                    .filter(|s| self.sessions.get(s).and_then(|s| s.client) == Some(client))
                    .collect()
            })
            .unwrap_or_default();
        if !ok {
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
        self.stats.messages += 1;
        self.remember(
            r,
            RefState::Stored {
                conv: record.conv.clone(),
                id: record.id,
                ts: record.ts_ms,
            },
        );
        let data = enc(&ServerMsg::Msg(to_msg(&record, false)));
        match record.to_key {
            None => {
                self.flush_presence(&record.conv);
                self.send_room(&record.conv, &data);
            }
            Some(to) => {
                self.send_user(&key, &data);
                if to != key {
                    if self.users.contains_key(&to) {
                        self.send_user(&to, &data);
                        self.persist(
                            vec![Op::DmCursor {
                                key: to,
                                conv: record.conv.clone(),
                                upto: record.id,
                            }],
                            Vec::new(),
                        );
                    } else {
                        let q = self.offline.entry(to).or_default();
                        if q.len() < MAX_OFFLINE_PER_USER {
                            q.push(record.clone());
                        }
                    }
                }
            }
        }
        let ack = enc(&ServerMsg::Ack {
            c,
            conv: record.conv.clone(),
            id: record.id,
            ts: record.ts_ms,
        });
        for s in senders {
            self.out.push_back(Output::Send {
                to: s,
                data: ack.clone(),
            });
        }
        let cap = self.config.replay_cache;
        let cv = self.convs.entry(record.conv.clone()).or_default();
        cv.recent.push_back(record);
        if cv.recent.len() > cap {
            cv.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
