//! Moderation: room roles bound to keys, bans, mutes, invitations and modes, server operators
//! and server-wide bans, and the rate limits on joins, nick changes and new rooms.
//!
//! # Roles
//!
//! Whoever creates a room (joins it while it does not exist) is its owner. The owner makes
//! operators (`op`, `deop`); operators voice, mute, invite, kick and ban members and change
//! the room's modes. Every role is bound to a key, as nicks are: a nick is resolved to its
//! key when the role is given. A server operator (named by key fingerprint in the server's
//! config) counts as owner in every room, and alone may ban server-wide, list sessions and
//! disconnect one. An actor acts only on members ranked below it: an operator cannot kick,
//! ban or mute the owner or another operator.
//!
//! # What is stored
//!
//! Every setting is one [`ModEntry`] in the store (`scope`: the room, or `""` for the server),
//! written in the same batch as the room event that announces it: a record of kind
//! [`EVENT_KIND`] in the room's conversation, with an id like a message, replayed with the
//! history and shown to members as [`ServerMsg::Mod`]. Server-wide bans and `kill`s have no
//! room, and no event.
//!
//! # In a cluster
//!
//! A change is applied here at once and, once stored, published on the bus (`chirp.nicks`,
//! which every node follows): every node applies it, and puts out whoever a ban now names
//! among its own sessions. A kick of a member connected to another node is published the same
//! way (at once: it is not stored). The bus loses what is published while a node does not
//! follow it yet or its connection is down: a node reads a room's entries again from the
//! store when the room gets its first member there, and the server-wide bans whenever its
//! bus connection is (re)established ([`Server::moderation_loaded`]).

use super::*;
use crate::bus::{Bus, ModChange};
use crate::wire::{BanReq, ModEvent, RoomNick};
use chirp_store::ModEntry;

/// [`Record::kind`] of a stored moderation event.
pub const EVENT_KIND: u8 = 2;

/// [`ModEntry::kind`] values.
mod kind {
    pub(super) const OWNER: &str = "owner";
    pub(super) const OP: &str = "op";
    pub(super) const VOICE: &str = "voice";
    pub(super) const MUTE: &str = "mute";
    pub(super) const INVITE: &str = "invite";
    pub(super) const BAN: &str = "ban";
    pub(super) const MODE: &str = "mode";
}

/// Most entries of one kind one room keeps (bans, invitations, ...): past it, a new one is
/// refused. Bounds what a room's operators can make the server hold.
pub const MAX_ROOM_ENTRIES: usize = 1024;

/// Most keys whose join, nick and room-creation rates are tracked at once. While that many
/// have budgets not refilled yet, a key not among them is refused ([`code::RATE`]) rather
/// than one of them forgotten.
const MAX_RATED_KEYS: usize = 65_536;

/// A user's standing in a room, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Muted: may read, not speak.
    Muted,
    /// A member.
    Member,
    /// Voiced: speaks in a moderated room.
    Voice,
    /// Operator.
    Op,
    /// The room's owner (or a server operator).
    Owner,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Muted => "muted",
            Role::Member => "member",
            Role::Voice => "voice",
            Role::Op => "op",
            Role::Owner => "owner",
        }
    }
}

/// An address range: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `203.0.113.0/24`, `2001:db8::/48` or one address (a /32 or /128). The address is
    /// cut to its prefix, so that one range has one spelling.
    pub fn parse(s: &str) -> Result<Net, String> {
        let bad =
            || format!("'{s}' is not an address range (e.g. 203.0.113.0/24 or 2001:db8::/48)");
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        let addr = match addr {
            IpAddr::V4(v) => {
                let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v) & mask).into())
            }
            IpAddr::V6(v) => {
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v) & mask).into())
            }
        };
        Ok(Net { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v) => v.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(u32::from(32 - self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(u32::from(128 - self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a ban names, as stored ([`ModEntry::subject`]): `fp:<fingerprint>` or `net:<range>`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Banned {
    Key(String),
    Net(Net),
}

impl Banned {
    fn subject(&self) -> String {
        match self {
            Banned::Key(fp) => format!("fp:{fp}"),
            Banned::Net(n) => format!("net:{n}"),
        }
    }

    fn parse(subject: &str) -> Option<Banned> {
        if let Some(fp) = subject.strip_prefix("fp:") {
            let fp: chirp_keys::Fingerprint = fp.parse().ok()?;
            return Some(Banned::Key(fp.to_string()));
        }
        Net::parse(subject.strip_prefix("net:")?)
            .ok()
            .map(Banned::Net)
    }

    fn shown(&self) -> String {
        match self {
            Banned::Key(fp) => fp.clone(),
            Banned::Net(n) => n.to_string(),
        }
    }

    fn matches(&self, fp: &str, ip: Option<IpAddr>) -> bool {
        match self {
            Banned::Key(k) => k == fp,
            Banned::Net(n) => ip.is_some_and(|ip| n.contains(ip)),
        }
    }
}

/// The fingerprint of a key, as people read it.
pub fn fingerprint(key: &Key) -> String {
    chirp_keys::PublicKey(*key).fingerprint().to_string()
}

/// One room's moderation state.
#[derive(Debug, Default)]
pub(crate) struct RoomMod {
    /// The owner, with when it claimed the room: of two claims (two nodes of a cluster saw
    /// the room created at once), the earlier one wins, then the lower key, on every node and
    /// at every load, whatever order they come in.
    owner: Option<(i64, Key)>,
    ops: HashSet<Key>,
    voiced: HashSet<Key>,
    muted: HashSet<Key>,
    invited: HashSet<Key>,
    /// By subject ([`Banned::subject`]).
    bans: BTreeMap<String, Banned>,
    invite_only: bool,
    moderated: bool,
    topic_lock: bool,
    key: Option<String>,
}

impl RoomMod {
    fn is_empty(&self) -> bool {
        self.owner.is_none()
            && self.ops.is_empty()
            && self.voiced.is_empty()
            && self.muted.is_empty()
            && self.invited.is_empty()
            && self.bans.is_empty()
            && !self.invite_only
            && !self.moderated
            && !self.topic_lock
            && self.key.is_none()
    }

    /// `+imtk`, the letters set (empty: none).
    fn modes(&self) -> String {
        let mut m = String::new();
        for (on, c) in [
            (self.invite_only, 'i'),
            (self.moderated, 'm'),
            (self.topic_lock, 't'),
            (self.key.is_some(), 'k'),
        ] {
            if on {
                m.push(c);
            }
        }
        if m.is_empty() { m } else { format!("+{m}") }
    }

    fn banned(&self, fp: &str, ip: Option<IpAddr>) -> bool {
        self.bans.values().any(|b| b.matches(fp, ip))
    }

    /// Applies one entry (`value: None`: cleared). Entries that do not parse are ignored.
    fn apply(&mut self, kind: &str, subject: &str, value: Option<&str>, ts_ms: i64) {
        let key = || -> Option<Key> {
            data_encoding::HEXLOWER
                .decode(subject.as_bytes())
                .ok()?
                .try_into()
                .ok()
        };
        let set = value.is_some();
        let flag = |s: &mut HashSet<Key>, k: Option<Key>| {
            if let Some(k) = k {
                if set {
                    s.insert(k);
                } else {
                    s.remove(&k);
                }
            }
        };
        match kind {
            kind::OWNER => match (set, key()) {
                (true, Some(k)) if self.owner.is_none_or(|o| (ts_ms, k) < o) => {
                    self.owner = Some((ts_ms, k));
                }
                (false, Some(k)) if self.owner.is_some_and(|o| o.1 == k) => self.owner = None,
                _ => {}
            },
            kind::OP => flag(&mut self.ops, key()),
            kind::VOICE => flag(&mut self.voiced, key()),
            kind::MUTE => flag(&mut self.muted, key()),
            kind::INVITE => flag(&mut self.invited, key()),
            kind::BAN => match (set, Banned::parse(subject)) {
                (true, Some(b)) => {
                    self.bans.insert(b.subject(), b);
                }
                (false, Some(b)) => {
                    self.bans.remove(&b.subject());
                }
                _ => {}
            },
            kind::MODE => match subject {
                "i" => self.invite_only = set,
                "m" => self.moderated = set,
                "t" => self.topic_lock = set,
                "k" => self.key = value.map(str::to_owned),
                _ => {}
            },
            _ => {}
        }
    }

    fn entries(&self, kind: &str) -> usize {
        match kind {
            kind::OP => self.ops.len(),
            kind::VOICE => self.voiced.len(),
            kind::MUTE => self.muted.len(),
            kind::INVITE => self.invited.len(),
            kind::BAN => self.bans.len(),
            _ => 0,
        }
    }
}

/// The moderation state of the server: every room's, and the server-wide bans.
#[derive(Debug, Default)]
pub(crate) struct Moderation {
    rooms: HashMap<String, RoomMod>,
    /// Server-wide bans, by subject.
    server_bans: BTreeMap<String, Banned>,
    /// Join, nick and room-creation budgets per key.
    rates: HashMap<Key, KeyRates>,
}

impl Moderation {
    /// The state the store holds.
    pub(crate) fn load(entries: Vec<ModEntry>) -> Moderation {
        let mut m = Moderation::default();
        for e in entries {
            m.apply(&e.scope, &e.kind, &e.subject, Some(&e.value), e.ts_ms);
        }
        m
    }

    fn apply(&mut self, scope: &str, kind: &str, subject: &str, value: Option<&str>, ts_ms: i64) {
        if scope.is_empty() {
            if kind == kind::BAN {
                match (value.is_some(), Banned::parse(subject)) {
                    (true, Some(b)) => {
                        self.server_bans.insert(b.subject(), b);
                    }
                    (false, Some(b)) => {
                        self.server_bans.remove(&b.subject());
                    }
                    _ => {}
                }
            }
            return;
        }
        let r = self.rooms.entry(scope.to_owned()).or_default();
        r.apply(kind, subject, value, ts_ms);
        if r.is_empty() {
            self.rooms.remove(scope);
        }
    }

    /// Replaces what is known of `scope` (a room, or `""`: the server-wide bans) with
    /// `entries`, the store's.
    pub(crate) fn replace(&mut self, scope: &str, entries: &[ModEntry]) {
        if scope.is_empty() {
            self.server_bans.clear();
        } else {
            self.rooms.remove(scope);
        }
        for e in entries.iter().filter(|e| e.scope == scope) {
            self.apply(&e.scope, &e.kind, &e.subject, Some(&e.value), e.ts_ms);
        }
    }

    /// Whether the ban with `subject` is in force in `scope`.
    fn has_ban(&self, scope: &str, subject: &str) -> bool {
        if scope.is_empty() {
            self.server_bans.contains_key(subject)
        } else {
            self.rooms
                .get(scope)
                .is_some_and(|r| r.bans.contains_key(subject))
        }
    }

    /// Whether the room has moderation state (an owner, at least): it exists.
    pub(crate) fn knows(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Whether `key` at `ip` is banned from the whole server.
    pub(crate) fn server_banned(&self, key: &Key, ip: IpAddr) -> bool {
        if self.server_bans.is_empty() {
            return false;
        }
        let fp = fingerprint(key);
        self.server_bans.values().any(|b| b.matches(&fp, Some(ip)))
    }

    pub(crate) fn room(&self, room: &str) -> Option<&RoomMod> {
        self.rooms.get(room)
    }
}

/// A token bucket counted per hour, in thousandths of a token.
#[derive(Debug, Clone, Copy)]
struct HourBucket {
    milli: u64,
    last_ms: i64,
}

impl HourBucket {
    fn full(burst: u32, now_ms: i64) -> Self {
        HourBucket {
            milli: u64::from(burst) * 1000,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64, burst: u32, per_hour: u32) {
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0) as u64;
        // per_hour tokens per 3,600,000 ms: per_hour / 3600 milli-tokens per ms.
        let add = elapsed.saturating_mul(u64::from(per_hour)) / 3600;
        self.milli = (u64::from(burst) * 1000).min(self.milli.saturating_add(add));
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes a token; the milliseconds until one comes if there is none.
    fn take(&mut self, now_ms: i64, burst: u32, per_hour: u32) -> Result<(), i64> {
        self.refill(now_ms, burst, per_hour);
        if self.milli >= 1000 {
            self.milli -= 1000;
            return Ok(());
        }
        let missing = 1000 - self.milli;
        let per_hour = u64::from(per_hour.max(1));
        Err(i64::try_from((missing * 3600).div_ceil(per_hour)).unwrap_or(i64::MAX))
    }

    fn is_full(&self, now_ms: i64, burst: u32, per_hour: u32) -> bool {
        let mut b = *self;
        b.refill(now_ms, burst, per_hour);
        b.milli >= u64::from(burst) * 1000
    }
}

/// What a key may still do this hour.
#[derive(Debug, Clone, Copy)]
struct KeyRates {
    joins: HourBucket,
    nicks: HourBucket,
    rooms: HourBucket,
}

/// Which budget a request takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rated {
    Join,
    Nick,
    NewRoom,
}

/// A change to make: an entry to set or clear, and how the room event shows it.
struct Action<'a> {
    room: &'a str,
    kind: &'static str,
    subject: String,
    /// `Some`: set (with this value); `None`: cleared.
    value: Option<String>,
    /// The event's `action`, `target` and `arg`.
    event: (&'static str, Option<String>, Option<String>),
}

/// The text of a stored event: what [`ModEvent`] adds to the record's room, id, time and
/// sender.
#[derive(Debug, Serialize, Deserialize)]
struct EventText {
    action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    arg: Option<String>,
}

use serde::{Deserialize, Serialize};

/// A stored event as members see it; `None` if its text does not parse (then it is not
/// shown).
pub(super) fn event_msg(r: &Record, history: bool) -> Option<ServerMsg> {
    let t: EventText = serde_json::from_str(&r.text).ok()?;
    Some(ServerMsg::Mod(ModEvent {
        room: r.conv.clone(),
        id: r.id,
        ts: r.ts_ms,
        by: r.from_nick.clone(),
        action: t.action,
        target: t.target,
        arg: t.arg,
        history,
    }))
}

/// The encoding of a stored record for a member: a message, or an event.
pub(super) fn record_msg(r: &Record, history: bool) -> ServerMsg {
    if r.kind == EVENT_KIND {
        if let Some(m) = event_msg(r, history) {
            return m;
        }
    }
    if let Some(m) = super::amend::amend_msg(r, history) {
        return m;
    }
    ServerMsg::Msg(to_msg(r, history))
}

impl Server {
    /// Whether `key` is a server operator.
    pub(super) fn is_oper(&self, key: &Key) -> bool {
        !self.config.opers.is_empty()
            && self
                .config
                .opers
                .contains(&chirp_keys::PublicKey(*key).fingerprint())
    }

    /// `key`'s role in `room`.
    pub(super) fn role(&self, room: &str, key: &Key) -> Role {
        if self.is_oper(key) {
            return Role::Owner;
        }
        let Some(r) = self.moderation.room(room) else {
            return Role::Member;
        };
        if r.owner.is_some_and(|o| o.1 == *key) {
            Role::Owner
        } else if r.ops.contains(key) {
            Role::Op
        } else if r.muted.contains(key) {
            Role::Muted
        } else if r.voiced.contains(key) {
            Role::Voice
        } else {
            Role::Member
        }
    }

    /// Takes one of `key`'s `what` budget; the refusal to send if there is none.
    pub(super) fn take_rate(&mut self, now_ms: i64, key: Key, what: Rated) -> Result<(), String> {
        let c = &self.config;
        let (jb, jh) = (c.join_burst, c.joins_per_hour);
        let (nb, nh) = (c.nick_change_burst, c.nick_changes_per_hour);
        let rh = c.rooms_per_hour;
        let rates = &mut self.moderation.rates;
        if !rates.contains_key(&key) && rates.len() >= MAX_RATED_KEYS {
            rates.retain(|_, r| {
                !(r.joins.is_full(now_ms, jb, jh)
                    && r.nicks.is_full(now_ms, nb, nh)
                    && r.rooms.is_full(now_ms, rh, rh))
            });
            if rates.len() >= MAX_RATED_KEYS {
                return Err("the server is busy; try again in a minute".into());
            }
        }
        let r = rates.entry(key).or_insert_with(|| KeyRates {
            joins: HourBucket::full(jb, now_ms),
            nicks: HourBucket::full(nb, now_ms),
            rooms: HourBucket::full(rh, now_ms),
        });
        let (bucket, burst, per_hour, what) = match what {
            Rated::Join => (&mut r.joins, jb, jh, "joins"),
            Rated::Nick => (&mut r.nicks, nb, nh, "nick changes"),
            Rated::NewRoom => (&mut r.rooms, rh, rh, "new rooms"),
        };
        bucket.take(now_ms, burst, per_hour).map_err(|wait_ms| {
            format!(
                "too many {what} lately (at most {burst} at once, then {per_hour} per hour); try again in {} s",
                (wait_ms + 999) / 1000
            )
        })
    }

    /// Whether `key` (at `ip`) may join `room` with `given` as its key: the error to send if
    /// not. An owner, operator or voiced member passes `+i` and `+k`; nobody passes a ban.
    pub(super) fn may_join(
        &self,
        room: &str,
        key: &Key,
        ip: Option<IpAddr>,
        given: Option<&str>,
    ) -> Result<(), (&'static str, String)> {
        let Some(r) = self.moderation.room(room) else {
            return Ok(());
        };
        let role = self.role(room, key);
        if role < Role::Owner && r.banned(&fingerprint(key), ip) {
            return Err((code::BANNED, format!("you are banned from {room}")));
        }
        if role >= Role::Voice {
            return Ok(());
        }
        if r.invite_only && !r.invited.contains(key) {
            return Err((
                code::INVITE_ONLY,
                format!("{room} is invite-only (+i); ask an operator for an /invite"),
            ));
        }
        if let Some(k) = &r.key {
            if given != Some(k.as_str()) {
                return Err((
                    code::BAD_KEY,
                    format!("{room} needs a key (+k): /join {room} KEY"),
                ));
            }
        }
        Ok(())
    }

    /// Whether `key` may speak in `room`: the error to send if not.
    pub(super) fn may_speak(&self, room: &str, key: &Key) -> Result<(), String> {
        let Some(r) = self.moderation.room(room) else {
            return Ok(());
        };
        match self.role(room, key) {
            Role::Muted => Err(format!("you are muted in {room}")),
            Role::Member if r.moderated => Err(format!(
                "{room} is moderated (+m): only operators and voiced members speak"
            )),
            _ => Ok(()),
        }
    }

    /// Whether `key` may set `room`'s topic: the error to send if not.
    pub(super) fn may_set_topic(&self, room: &str, key: &Key) -> Result<(), String> {
        let locked = self.moderation.room(room).is_some_and(|r| r.topic_lock);
        if locked && self.role(room, key) < Role::Op {
            return Err(format!(
                "the topic of {room} is locked (+t): only operators set it"
            ));
        }
        Ok(())
    }

    /// `key` created `room` by joining it: it is its owner. Stored (the entry), not shown as
    /// an event: creating a room is no moderation, and its first id stays its first message's.
    pub(super) fn room_created(&mut self, now_ms: i64, room: &str, key: Key) {
        if self
            .moderation
            .room(room)
            .is_some_and(|r| r.owner.is_some())
        {
            return;
        }
        let by = self.nick_of.get(&key).cloned().unwrap_or_default();
        let (subject, value) = (hex(&key), Some(String::new()));
        self.change(now_ms, room, kind::OWNER, subject, value, &by);
    }

    /// The room `modes` of `room` for `key`.
    pub(super) fn modes_msg(&self, room: &str, key: &Key) -> ServerMsg {
        ServerMsg::Modes {
            room: room.to_owned(),
            modes: self
                .moderation
                .room(room)
                .map(RoomMod::modes)
                .unwrap_or_default(),
            role: self.role(room, key).name().to_owned(),
        }
    }

    /// After a join: the room's modes and this user's role, if either is not plain (a room
    /// without modes, joined by a member, costs nothing more).
    pub(super) fn send_modes_if_any(&mut self, session: SessionId, room: &str, key: &Key) {
        let modes = self.moderation.room(room).map(RoomMod::modes);
        if modes.is_some_and(|m| !m.is_empty()) || self.role(room, key) != Role::Member {
            let m = self.modes_msg(room, key);
            self.send(session, &m);
        }
    }

    /// A moderation request from a session whose `hello` is done.
    pub(super) fn moderate(&mut self, now_ms: i64, session: SessionId, key: Key, m: ClientMsg) {
        let result = match m {
            ClientMsg::Op(t) => self.grant(now_ms, key, t, kind::OP, true),
            ClientMsg::Deop(t) => self.grant(now_ms, key, t, kind::OP, false),
            ClientMsg::Voice(t) => self.grant(now_ms, key, t, kind::VOICE, true),
            ClientMsg::Devoice(t) => self.grant(now_ms, key, t, kind::VOICE, false),
            ClientMsg::Mute(t) => self.grant(now_ms, key, t, kind::MUTE, true),
            ClientMsg::Unmute(t) => self.grant(now_ms, key, t, kind::MUTE, false),
            ClientMsg::Invite(t) => self.grant(now_ms, key, t, kind::INVITE, true),
            ClientMsg::Kick { room, nick, reason } => {
                self.kick_request(now_ms, key, &room, &nick, reason)
            }
            ClientMsg::Ban(b) => self.ban_request(now_ms, key, b, true),
            ClientMsg::Unban(b) => self.ban_request(now_ms, key, b, false),
            ClientMsg::Mode {
                room,
                change,
                key: k,
            } => self.mode(now_ms, key, &room, &change, k),
            ClientMsg::Sessions => self.list_sessions(now_ms, session, &key),
            ClientMsg::Kill {
                session: s,
                reason,
                node,
            } => self.kill(now_ms, session, key, s, node, reason),
            _ => Ok(()),
        };
        if let Err((code, message)) = result {
            self.fail(session, None, code, message);
        }
    }

    /// The room (folded) a request names, if the actor ranks at least `need` there.
    fn check_role(
        &self,
        key: &Key,
        room: &str,
        need: Role,
    ) -> Result<String, (&'static str, String)> {
        let room = names::fold(room);
        if !self.room_known(&room) && !self.moderation.knows(&room) {
            return Err((code::NOT_IN_ROOM, format!("no room is called {room}")));
        }
        if self.role(&room, key) < need {
            let who = if need == Role::Owner {
                "its owner"
            } else {
                "its operators"
            };
            return Err((code::FORBIDDEN, format!("only {who} may do that in {room}")));
        }
        Ok(room)
    }

    /// The key of a registered nick.
    fn nick_key(&self, nick: &str) -> Result<(String, Key), (&'static str, String)> {
        self.nick_owner
            .get(&names::fold(nick))
            .cloned()
            .ok_or_else(|| (code::NO_SUCH_NICK, format!("no user is called '{nick}'")))
    }

    /// `op`/`deop` (owner), `voice`/`devoice`/`mute`/`unmute`/`invite` (operators).
    fn grant(
        &mut self,
        now_ms: i64,
        actor: Key,
        t: RoomNick,
        what: &'static str,
        set: bool,
    ) -> Result<(), (&'static str, String)> {
        let need = if what == kind::OP {
            Role::Owner
        } else {
            Role::Op
        };
        let room = self.check_role(&actor, &t.room, need)?;
        let (nick, target) = self.nick_key(&t.nick)?;
        // Muting someone ranked as high as oneself is refused (an operator another one).
        if what == kind::MUTE && self.role(&room, &target) >= self.role(&room, &actor) {
            return Err((
                code::FORBIDDEN,
                format!("{nick} ranks as high as you in {room}"),
            ));
        }
        let full = self
            .moderation
            .room(&room)
            .is_some_and(|r| r.entries(what) >= MAX_ROOM_ENTRIES);
        if set && full {
            return Err((
                code::TOO_MANY_ROOMS,
                format!("{room} has {MAX_ROOM_ENTRIES} of those already; remove some first"),
            ));
        }
        let event = match (what, set) {
            (kind::OP, true) => "op",
            (kind::OP, false) => "deop",
            (kind::VOICE, true) => "voice",
            (kind::VOICE, false) => "devoice",
            (kind::MUTE, true) => "mute",
            (kind::MUTE, false) => "unmute",
            _ => "invite",
        };
        self.act(
            now_ms,
            actor,
            Action {
                room: &room,
                kind: what,
                subject: hex(&target),
                value: set.then(String::new),
                event: (event, Some(nick), None),
            },
        );
        // The target's sessions in the room learn their new role.
        if self.in_room(&target, &room) {
            let m = enc(&self.modes_msg(&room, &target));
            self.send_user(&target, &m);
        }
        Ok(())
    }

    fn kick_request(
        &mut self,
        now_ms: i64,
        actor: Key,
        room: &str,
        nick: &str,
        reason: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let room = self.check_role(&actor, room, Role::Op)?;
        let reason = check_reason(reason)?;
        let (nick, target) = self.nick_key(nick)?;
        if self.role(&room, &target) >= self.role(&room, &actor) {
            return Err((
                code::FORBIDDEN,
                format!("{nick} ranks as high as you in {room}"),
            ));
        }
        let present = self.in_room(&target, &room)
            || self
                .rooms
                .get(&room)
                .is_some_and(|r| r.remote.contains_key(&target));
        if !present {
            return Err((code::NOT_IN_ROOM, format!("{nick} is not in {room}")));
        }
        let by = self.nick_of.get(&actor).cloned().unwrap_or_default();
        // The kick ends an invitation too.
        let invited = self
            .moderation
            .room(&room)
            .is_some_and(|r| r.invited.contains(&target));
        let action = Action {
            room: &room,
            kind: kind::INVITE,
            subject: hex(&target),
            value: None,
            event: ("kick", Some(nick), reason.clone()),
        };
        self.act_with(now_ms, actor, action, invited);
        self.put_out(now_ms, &room, &target, &by, reason.clone(), false);
        self.publish_mod(Bus::Kick {
            room,
            key: target,
            by,
            reason,
            banned: false,
        });
        Ok(())
    }

    fn ban_request(
        &mut self,
        now_ms: i64,
        actor: Key,
        b: BanReq,
        set: bool,
    ) -> Result<(), (&'static str, String)> {
        let reason = check_reason(b.reason)?;
        let mut banned = Vec::new();
        let mut target_key = None;
        if let Some(t) = &b.target {
            let fp = match self.nick_owner.get(&names::fold(t)) {
                Some((_, k)) => {
                    target_key = Some(*k);
                    fingerprint(k)
                }
                None => match chirp_keys::PublicKey::from_hex(t) {
                    Some(k) if t.trim().len() == 64 => {
                        target_key = Some(k.0);
                        fingerprint(&k.0)
                    }
                    _ => match t.parse::<chirp_keys::Fingerprint>() {
                        Ok(fp) => fp.to_string(),
                        Err(_) => {
                            return Err((
                                code::NO_SUCH_NICK,
                                format!("'{t}' is no user's nick, nor a key or a fingerprint"),
                            ));
                        }
                    },
                },
            };
            banned.push(Banned::Key(fp));
        }
        if let Some(n) = &b.net {
            banned.push(Banned::Net(
                Net::parse(n).map_err(|e| (code::BAD_REQUEST, e))?,
            ));
        }
        if banned.is_empty() {
            return Err((
                code::BAD_REQUEST,
                "a ban names a nick, a key or an address range".into(),
            ));
        }
        let by = self.nick_of.get(&actor).cloned().unwrap_or_default();
        let Some(room) = b.room else {
            // Server-wide: server operators only; stored, no room event.
            if !self.is_oper(&actor) {
                return Err((
                    code::FORBIDDEN,
                    "only server operators ban from the whole server".into(),
                ));
            }
            for ban in banned {
                let value = set.then(|| reason.clone().unwrap_or_default());
                self.change(now_ms, "", kind::BAN, ban.subject(), value, &by);
                if set {
                    self.enforce_server_ban(&ban);
                }
            }
            return Ok(());
        };
        let room = self.check_role(&actor, &room, Role::Op)?;
        if let Some(k) = target_key {
            if set && self.role(&room, &k) >= self.role(&room, &actor) {
                return Err((
                    code::FORBIDDEN,
                    format!("that key ranks as high as you in {room}"),
                ));
            }
        }
        let full = self
            .moderation
            .room(&room)
            .is_some_and(|r| r.bans.len() >= MAX_ROOM_ENTRIES);
        if set && full {
            return Err((
                code::TOO_MANY_ROOMS,
                format!("{room} has {MAX_ROOM_ENTRIES} bans already; lift some first"),
            ));
        }
        for ban in banned {
            let shown = match (&ban, &b.target) {
                (Banned::Key(_), Some(t))
                    if target_key.is_some() && self.nick_owner.contains_key(&names::fold(t)) =>
                {
                    format!("{t} ({})", ban.shown())
                }
                _ => ban.shown(),
            };
            self.act(
                now_ms,
                actor,
                Action {
                    room: &room,
                    kind: kind::BAN,
                    subject: ban.subject(),
                    value: set.then(|| reason.clone().unwrap_or_default()),
                    event: (
                        if set { "ban" } else { "unban" },
                        Some(shown),
                        reason.clone(),
                    ),
                },
            );
            if set {
                self.enforce_room_ban(now_ms, &room, &ban, &by, reason.clone());
            }
        }
        Ok(())
    }

    fn mode(
        &mut self,
        now_ms: i64,
        actor: Key,
        room: &str,
        change: &str,
        key: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        let room = self.check_role(&actor, room, Role::Op)?;
        let bad = || {
            (
                code::BAD_REQUEST,
                format!("'{change}' is not a mode change: one of +i -i +m -m +t -t +k KEY -k"),
            )
        };
        let mut chars = change.chars();
        let set = match chars.next() {
            Some('+') => true,
            Some('-') => false,
            _ => return Err(bad()),
        };
        let letter = match (chars.next(), chars.next()) {
            (Some(c @ ('i' | 'm' | 't' | 'k')), None) => c,
            _ => return Err(bad()),
        };
        let value = match (letter, set) {
            ('k', true) => {
                let k = key.filter(|k| !k.is_empty()).ok_or((
                    code::BAD_REQUEST,
                    "+k needs the key: /mode #room +k KEY".to_owned(),
                ))?;
                if k.len() > 64 || k.chars().any(|c| c.is_control() || c.is_whitespace()) {
                    return Err((
                        code::BAD_NAME,
                        "a room key is at most 64 bytes, without spaces or control characters"
                            .into(),
                    ));
                }
                Some(k)
            }
            (_, true) => Some(String::new()),
            (_, false) => None,
        };
        self.act(
            now_ms,
            actor,
            Action {
                room: &room,
                kind: kind::MODE,
                subject: letter.to_string(),
                value,
                event: (
                    "mode",
                    None,
                    Some(format!("{}{letter}", if set { '+' } else { '-' })),
                ),
            },
        );
        // Every member learns the room's modes (each with its own role).
        let members: Vec<Key> = self
            .rooms
            .get(&room)
            .map(|r| r.members.iter().copied().collect())
            .unwrap_or_default();
        for k in members {
            let m = enc(&self.modes_msg(&room, &k));
            self.send_user(&k, &m);
        }
        Ok(())
    }

    /// `sessions`: this server's, and in a cluster every node's (see [`super::opers`]).
    fn list_sessions(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: &Key,
    ) -> Result<(), (&'static str, String)> {
        if !self.is_oper(key) {
            return Err((
                code::FORBIDDEN,
                "only server operators list sessions".into(),
            ));
        }
        self.sessions_request(now_ms, session)
    }

    /// `kill` of session `target` (of node `node`, in a cluster; `None`: here).
    fn kill(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        target: u64,
        node: Option<String>,
        reason: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        if !self.is_oper(&key) {
            return Err((
                code::FORBIDDEN,
                "only server operators disconnect sessions".into(),
            ));
        }
        let reason = check_reason(reason)?;
        let by = self.nick_of.get(&key).cloned().unwrap_or_default();
        self.kill_request(now_ms, session, by, target, node, reason)
    }

    /// Applies an action here, stores it with its room event, and tells the other nodes.
    fn act(&mut self, now_ms: i64, actor: Key, a: Action<'_>) {
        self.act_with(now_ms, actor, a, true);
    }

    /// [`Server::act`]; `change`: false when only the event is to be stored (the entry it
    /// would clear does not exist).
    fn act_with(&mut self, now_ms: i64, actor: Key, a: Action<'_>, change: bool) {
        let by = self.nick_of.get(&actor).cloned().unwrap_or_default();
        let (action, target, arg) = a.event;
        let text = serde_json::to_string(&EventText {
            action: action.to_owned(),
            target,
            arg,
        })
        .unwrap_or_default();
        let msg = NewMessage {
            conv: a.room.to_owned(),
            ts_ms: now_ms,
            from_key: actor,
            from_nick: by.clone(),
            to_key: None,
            to_nick: None,
            kind: EVENT_KIND,
            text,
            client_ref: None,
        };
        // The event is op 0 of its batch; the entry goes with it, in one transaction.
        let mut ops = vec![Op::Message(msg.clone())];
        let mut pending = vec![Pending::Event { msg }];
        if change {
            ops.push(mod_op(
                a.room,
                a.kind,
                &a.subject,
                a.value.clone(),
                &by,
                now_ms,
            ));
            let c = self.apply_change(now_ms, a.room, a.kind, a.subject, a.value, &by);
            pending.push(Pending::Publish(Bus::Mod(c)));
        }
        self.stats.accepted += 1;
        self.persist(ops, pending);
    }

    /// Sets (`value: Some`) or clears an entry here, stores it, and tells the other nodes;
    /// no event.
    fn change(
        &mut self,
        now_ms: i64,
        scope: &str,
        kind: &str,
        subject: String,
        value: Option<String>,
        by: &str,
    ) {
        let op = mod_op(scope, kind, &subject, value.clone(), by, now_ms);
        let c = self.apply_change(now_ms, scope, kind, subject, value, by);
        self.persist(vec![op], vec![Pending::Publish(Bus::Mod(c))]);
    }

    /// Applies a change here at once; the other nodes hear of it once it is stored (so a
    /// node that reads the store after missing it on the bus finds it: `moderation_loaded`).
    fn apply_change(
        &mut self,
        now_ms: i64,
        scope: &str,
        kind: &str,
        subject: String,
        value: Option<String>,
        by: &str,
    ) -> ModChange {
        self.moderation
            .apply(scope, kind, &subject, value.as_deref(), now_ms);
        let change = ModChange {
            scope: scope.to_owned(),
            kind: kind.to_owned(),
            subject,
            value,
            by: by.to_owned(),
            ts: now_ms,
        };
        self.note_mod_change(&change);
        change
    }

    /// Cluster: from now until [`Self::moderation_loaded`] for `scope`, the changes applied
    /// here are kept, to be applied again on top of what the store returns.
    pub(super) fn track_mod_changes(&mut self, scope: &str) {
        if let Some(c) = self.cluster.as_mut() {
            c.mod_backlog.entry(scope.to_owned()).or_default();
        }
    }

    fn note_mod_change(&mut self, change: &ModChange) {
        if let Some(backlog) = self
            .cluster
            .as_mut()
            .and_then(|c| c.mod_backlog.get_mut(&change.scope))
        {
            backlog.push(change.clone());
        }
    }

    /// Cluster: the store's moderation entries of `scope` (a room, or `""` for the
    /// server-wide bans), read after a subscription barrier (a room's first member here, the
    /// bus (re)connected; [`Output::Sync`]). A change the bus lost on its way here (published
    /// before this node followed, or while its connection was down) is in the store: the
    /// store's entries replace what this node knew of the scope, and the changes applied here
    /// since the read was asked for are applied again on top (each was stored before it was
    /// published, so none is lost and none undone). Then a ban learnt this way puts out the
    /// members it names, and a member here whose role changed (a room's owner claimed on two
    /// nodes: the earlier claim wins) is told.
    pub fn moderation_loaded(
        &mut self,
        now_ms: i64,
        scope: &str,
        result: Result<Vec<ModEntry>, String>,
    ) {
        let Some(backlog) = self
            .cluster
            .as_mut()
            .and_then(|c| c.mod_backlog.remove(scope))
        else {
            return;
        };
        let entries = match result {
            Ok(e) => e,
            Err(e) => {
                // The bus's changes stay applied; the next sync (a reconnect) tries again.
                warn!(scope, error = %e, "cannot read moderation from the store");
                return;
            }
        };
        let local: Vec<(Key, Role)> = if scope.is_empty() {
            Vec::new()
        } else {
            self.rooms
                .get(scope)
                .map(|r| {
                    r.members
                        .iter()
                        .map(|k| (*k, self.role(scope, k)))
                        .collect()
                })
                .unwrap_or_default()
        };
        self.moderation.replace(scope, &entries);
        for c in &backlog {
            self.moderation
                .apply(&c.scope, &c.kind, &c.subject, c.value.as_deref(), c.ts);
        }
        for e in entries.iter().filter(|e| e.kind == kind::BAN) {
            let Some(ban) = Banned::parse(&e.subject) else {
                continue;
            };
            if !self.moderation.has_ban(scope, &ban.subject()) {
                continue; // lifted since
            }
            if scope.is_empty() {
                self.enforce_server_ban(&ban);
            } else {
                let reason = Some(e.value.clone()).filter(|v| !v.is_empty());
                self.enforce_room_ban(now_ms, scope, &ban, &e.by, reason);
            }
        }
        for (key, before) in local {
            if self.role(scope, &key) == before {
                continue;
            }
            let sessions = self
                .users
                .get(&key)
                .filter(|u| u.rooms.contains(scope))
                .map(|u| u.sessions.clone())
                .unwrap_or_default();
            let m = self.modes_msg(scope, &key);
            for s in sessions {
                self.send(s, &m);
            }
        }
    }

    /// A room event was stored (op 0 of its batch): members see it, like a message.
    pub(super) fn event_committed(
        &mut self,
        now_ms: i64,
        msg: NewMessage,
        outcome: Option<Outcome>,
    ) {
        let Some(Outcome::Stored { id }) = outcome else {
            warn!(room = msg.conv, "a moderation event could not be stored");
            return;
        };
        let record = msg.with_id(id);
        self.stats.messages += 1;
        if self.cluster.is_some() {
            self.publish_msg(&record);
        }
        self.land(now_ms, cluster::Arrival::Remote(record));
    }

    /// Puts `key`'s user out of `room` here: it is told by whom and why, and leaves.
    fn put_out(
        &mut self,
        now_ms: i64,
        room: &str,
        key: &Key,
        by: &str,
        reason: Option<String>,
        banned: bool,
    ) {
        let Some(user) = self.users.get_mut(key) else {
            return;
        };
        if !user.rooms.remove(room) {
            return;
        }
        let nick = user.nick.clone();
        let kicked = enc(&ServerMsg::Kicked {
            room: room.to_owned(),
            by: by.to_owned(),
            reason,
            banned,
        });
        self.send_user(key, &kicked);
        self.leave_room(now_ms, room, key, Presence::Part { nick });
        let parted = enc(&ServerMsg::Parted {
            room: room.to_owned(),
        });
        self.send_user(key, &parted);
    }

    /// A room ban is in force: members here it names (by key, or by a session's address) are
    /// put out.
    fn enforce_room_ban(
        &mut self,
        now_ms: i64,
        room: &str,
        ban: &Banned,
        by: &str,
        reason: Option<String>,
    ) {
        let members: Vec<Key> = self
            .rooms
            .get(room)
            .map(|r| r.members.iter().copied().collect())
            .unwrap_or_default();
        for k in members {
            if self.role(room, &k) == Role::Owner {
                continue;
            }
            let fp = fingerprint(&k);
            let hit = ban.matches(&fp, None)
                || self.users.get(&k).is_some_and(|u| {
                    u.sessions
                        .iter()
                        .filter_map(|s| self.sessions.get(s))
                        .any(|s| ban.matches(&fp, Some(s.ip)))
                });
            if hit {
                self.put_out(now_ms, room, &k, by, reason.clone(), true);
            }
        }
    }

    /// A server-wide ban is in force: the sessions here it names are told and closed.
    fn enforce_server_ban(&mut self, ban: &Banned) {
        let hit: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !self.is_oper(&s.key) && ban.matches(&fingerprint(&s.key), Some(s.ip)))
            .map(|(&id, _)| id)
            .collect();
        for s in hit {
            self.fail(
                s,
                None,
                code::BANNED,
                "you are banned from this server".into(),
            );
            self.close_session(s, "banned", false);
        }
    }

    pub(super) fn publish_mod(&mut self, m: Bus) {
        if self.cluster.is_some() {
            self.out.push_back(Output::Publish {
                subject: Subject::Nicks,
                data: m.encode(),
            });
        }
    }

    /// A change another node made (from the bus).
    pub(super) fn remote_mod(&mut self, now_ms: i64, c: ModChange) {
        self.moderation
            .apply(&c.scope, &c.kind, &c.subject, c.value.as_deref(), c.ts);
        self.note_mod_change(&c);
        if c.kind != kind::BAN || c.value.is_none() {
            return;
        }
        let Some(ban) = Banned::parse(&c.subject) else {
            return;
        };
        if c.scope.is_empty() {
            self.enforce_server_ban(&ban);
        } else {
            let reason = c.value.filter(|v| !v.is_empty());
            self.enforce_room_ban(now_ms, &c.scope, &ban, &c.by, reason);
        }
    }

    /// A kick another node made (from the bus): the member is put out here if connected here.
    pub(super) fn remote_kick(
        &mut self,
        now_ms: i64,
        room: &str,
        key: &Key,
        by: &str,
        reason: Option<String>,
        banned: bool,
    ) {
        if reason.as_deref().is_some_and(|r| names::topic(r).is_err()) {
            return;
        }
        self.put_out(now_ms, room, key, by, reason, banned);
    }

    /// Whether `key` at `ip` is banned from the whole server.
    pub(super) fn server_banned(&self, key: &Key, ip: IpAddr) -> bool {
        !self.is_oper(key) && self.moderation.server_banned(key, ip)
    }
}

/// A reason is held to the rules of a topic (length, no control characters).
fn check_reason(reason: Option<String>) -> Result<Option<String>, (&'static str, String)> {
    match reason.filter(|r| !r.trim().is_empty()) {
        Some(r) => names::topic(&r)
            .map(|()| Some(r))
            .map_err(|e| (code::BAD_NAME, e)),
        None => Ok(None),
    }
}

fn hex(key: &Key) -> String {
    data_encoding::HEXLOWER.encode(key)
}

fn mod_op(
    scope: &str,
    kind: &str,
    subject: &str,
    value: Option<String>,
    by: &str,
    now_ms: i64,
) -> Op {
    match value {
        Some(value) => Op::SetMod(ModEntry {
            scope: scope.to_owned(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            value,
            by: by.to_owned(),
            ts_ms: now_ms,
        }),
        None => Op::ClearMod {
            scope: scope.to_owned(),
            kind: kind.to_owned(),
            subject: subject.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_ranges_parse_cut_and_match() {
        let n = Net::parse("203.0.113.77/24").expect("v4");
        assert_eq!(n.to_string(), "203.0.113.0/24");
        assert!(n.contains("203.0.113.1".parse().expect("ip")));
        assert!(n.contains("::ffff:203.0.113.9".parse().expect("mapped")));
        assert!(!n.contains("203.0.114.1".parse().expect("ip")));
        let one = Net::parse("198.51.100.7").expect("one address");
        assert_eq!(one.to_string(), "198.51.100.7/32");
        assert!(!one.contains("198.51.100.8".parse().expect("ip")));
        let v6 = Net::parse("2001:db8:1:2::5/48").expect("v6");
        assert_eq!(v6.to_string(), "2001:db8:1::/48");
        assert!(v6.contains("2001:db8:1:ffff::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db8:2::1".parse().expect("ip")));
        assert!(
            Net::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        for bad in ["", "1.2.3.4/33", "::/129", "nope", "1.2.3.4/x", "1.2.3/8"] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hour_buckets_refill_at_their_rate() {
        let mut b = HourBucket::full(2, 0);
        assert_eq!(b.take(0, 2, 60), Ok(()));
        assert_eq!(b.take(0, 2, 60), Ok(()));
        // 60 per hour: one a minute.
        assert_eq!(b.take(0, 2, 60), Err(60_000));
        assert_eq!(b.take(30_000, 2, 60), Err(30_000));
        assert_eq!(b.take(60_000, 2, 60), Ok(()));
        assert!(!b.is_full(60_000, 2, 60));
        assert!(b.is_full(60_000 + 120_000, 2, 60));
    }
}
