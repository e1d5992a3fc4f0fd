//! The core as one node of a cluster: several servers share one database (PostgreSQL) and
//! tell each other what happened over a message bus (NATS). Still sans-IO: the core asks the
//! runner to publish ([`Output::Publish`]), to subscribe ([`Output::Follow`]) and to read a
//! conversation's high-water mark ([`Output::Sync`]); what arrives comes back through
//! [`Server::bus`] and [`Server::synced`].
//!
//! # Messages: the database orders, the bus only hurries
//!
//! A message gets its id from the database, in the transaction that stores it, and is
//! published only after that commit. A node fans out a conversation's messages in id order,
//! with no gap and nothing twice, whether they were sent here or arrived from the bus:
//!
//! - the next id (`committed + 1`): fanned out at once;
//! - an id seen already (our own message coming back, or one a gap read fetched): dropped;
//! - an id further on: the ones between are missing (the bus dropped them, or they are still
//!   on their way). `committed` moves to the id before this one and every session here in
//!   the conversation gets a replay from the old `committed`, which reads the missing ones
//!   from the database ([`Output::ReadAfter`]) and then takes the new one from the cache.
//!
//! A node trusts its `committed` for a conversation only after a *sync*: a read of the
//! database's high-water mark made after its subscription to the conversation's subject is
//! active. Messages that come before (local or remote) wait in the conversation's backlog,
//! and joins wait to start their replays; the first sync starts from the oldest message
//! waiting (or the high-water mark), and everything up to the mark that has not arrived is
//! read from the database. After a bus reconnect every conversation is synced again, so a
//! message the bus lost while it was down is read even if no later message shows the gap.
//!
//! # Presence and nicks
//!
//! A node publishes its members' joins, parts and quits on the room's subject, and keeps the
//! members of other nodes (per node) for `who`, `joined` and presence lines. A node that
//! starts following a room asks for its members ([`Bus::Who`]); each node answers with its
//! own ([`Bus::Members`]). The first member joining a room on a node may get its `joined` list
//! before the answers come: the members they name are then shown to it as joins. Nodes beat every [`ClusterConfig::beat_ms`]; a node silent for
//! [`ClusterConfig::node_timeout_ms`] (or one that said goodbye) is gone, and its members are
//! shown as quit. A nick is bound by the database's unique constraint: a node publishes a
//! binding once the store made it ([`Outcome::NickBound`]); when another node's key got the
//! nick first ([`Outcome::NickTaken`]), the sessions that asked are told and closed.

use super::*;
use crate::bus::{Bus, MAX_BEAT_ROOMS, Member, ModChange};

/// Backlog entries kept per conversation while it waits for its sync; remote messages past
/// it are dropped (they are in the store, and the sync's read or the next gap finds them).
const MAX_BACKLOG: usize = 4096;

/// Settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster (a restarted node takes a new one, so that
    /// nothing of its previous life is mistaken for it).
    pub node: String,
    /// How often this node says it is alive, in milliseconds.
    pub beat_ms: i64,
    /// A node not heard from for this long is gone: its members are shown as quit.
    pub node_timeout_ms: i64,
}

impl ClusterConfig {
    /// A node called `node`, beating every second, presumed gone after 5 s of silence.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            beat_ms: 1000,
            node_timeout_ms: 5000,
        }
    }
}

/// A stored message that reached this node: sent here (`Local`: its sender's client
/// instance and `c` are here, to acknowledge), or from the bus.
#[derive(Debug)]
pub(crate) enum Arrival {
    Remote(Record),
    Local { record: Record, client: u64, c: u64 },
}

impl Arrival {
    fn record(&self) -> &Record {
        match self {
            Arrival::Remote(r) | Arrival::Local { record: r, .. } => r,
        }
    }
}

/// A member of a room connected to other nodes.
#[derive(Debug, Clone)]
pub(crate) struct RemoteMember {
    pub(crate) nick: String,
    /// The nodes it is connected to (usually one; more with several devices).
    pub(crate) nodes: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct State {
    config: ClusterConfig,
    /// When this node next beats.
    pub(crate) next_beat: i64,
    /// The other nodes, by when each was last heard from.
    pub(super) nodes: HashMap<String, i64>,
    /// The busiest rooms of each other node and their members there, from its last beat.
    room_counts: HashMap<String, Vec<(String, u64)>>,
    /// Conversations whose sync failed (the store could not say): tried again at the next
    /// beat.
    retry: BTreeSet<String>,
    /// Bus messages dropped as undecodable.
    dropped: u64,
    /// Moderation scopes (a room, or `""` for the server) being read again from the store,
    /// with the changes applied here since the read was asked for: applied again on top of
    /// what the read returns (see [`Server::moderation_loaded`]).
    pub(crate) mod_backlog: HashMap<String, Vec<ModChange>>,
    /// Server operators' requests waiting for other nodes' answers.
    pub(super) asks: super::opers::Asks,
}

/// The two keys of a DM conversation name.
fn dm_keys(conv: &str) -> Option<(Key, Key)> {
    let (a, b) = conv.strip_prefix('@')?.split_once('-')?;
    let hex = data_encoding::HEXLOWER;
    let a: Key = hex.decode(a.as_bytes()).ok()?.try_into().ok()?;
    let b: Key = hex.decode(b.as_bytes()).ok()?.try_into().ok()?;
    Some((a, b))
}

impl Server {
    pub(super) fn start_cluster(&mut self, config: ClusterConfig) {
        self.cluster = Some(State {
            config,
            next_beat: 0,
            nodes: HashMap::new(),
            room_counts: HashMap::new(),
            retry: BTreeSet::new(),
            dropped: 0,
            mod_backlog: HashMap::new(),
            asks: Default::default(),
        });
        let me = self.node().unwrap_or_default();
        self.follow(Subject::Nodes);
        self.follow(Subject::Nicks);
        self.follow(Subject::Node(me));
    }

    /// This node's name and the other nodes it hears from (`None`: not a cluster).
    pub fn cluster_peers(&self) -> Option<(&str, usize)> {
        self.cluster
            .as_ref()
            .map(|c| (c.config.node.as_str(), c.nodes.len()))
    }

    /// Bus messages dropped as undecodable.
    pub fn bus_dropped(&self) -> u64 {
        self.cluster.as_ref().map_or(0, |c| c.dropped)
    }

    pub(super) fn node(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.config.node.clone())
    }

    /// Whether this node may trust its `committed` for `conv` (always, alone).
    pub(super) fn conv_synced(&self, conv: &str) -> bool {
        self.cluster.is_none() || self.convs.get(conv).is_some_and(|c| c.synced)
    }

    /// Starts a sync of `conv` unless it is in sync or one is in flight.
    pub(super) fn ensure_sync(&mut self, conv: &str) {
        if self.cluster.is_none() || self.convs.get(conv).is_some_and(|c| c.synced) {
            return;
        }
        self.request_sync(conv);
    }

    fn request_sync(&mut self, conv: &str) {
        let cv = self.convs.entry(conv.to_owned()).or_default();
        if cv.syncing {
            return;
        }
        cv.syncing = true;
        if conv.starts_with('#') {
            // A room's moderation is read again with its mark (the runner reads both).
            self.track_mod_changes(conv);
        }
        self.out.push_back(Output::Sync {
            conv: conv.to_owned(),
        });
    }

    pub(super) fn follow(&mut self, s: Subject) {
        if self.cluster.is_some() {
            self.out.push_back(Output::Follow(s));
        }
    }

    pub(super) fn unfollow(&mut self, s: Subject) {
        if self.cluster.is_some() {
            self.out.push_back(Output::Unfollow(s));
        }
    }

    pub(super) fn publish(&mut self, subject: Subject, m: &Bus) {
        if self.cluster.is_some() {
            self.out.push_back(Output::Publish {
                subject,
                data: m.encode(),
            });
        }
    }

    /// The first member here joined `room`: follow it, sync it, ask for its members.
    pub(super) fn follow_room(&mut self, room: &str) {
        let Some(node) = self.node() else {
            return;
        };
        self.follow(Subject::Room(room.to_owned()));
        self.ensure_sync(room);
        let who = Bus::Who {
            node,
            room: room.to_owned(),
        };
        self.publish(Subject::Room(room.to_owned()), &who);
    }

    /// The last member here left `room`: its messages are no longer followed, so its
    /// `committed` is no longer kept up to date.
    pub(super) fn unfollow_room(&mut self, room: &str) {
        if self.cluster.is_none() {
            return;
        }
        self.unfollow(Subject::Room(room.to_owned()));
        if let Some(cv) = self.convs.get_mut(room) {
            cv.synced = false;
            cv.backlog.clear();
        }
    }

    pub(super) fn publish_presence(&mut self, room: &str, key: Key, ev: Presence) {
        let Some(node) = self.node() else {
            return;
        };
        let m = Bus::Presence {
            node,
            room: room.to_owned(),
            key,
            ev,
        };
        self.publish(Subject::Room(room.to_owned()), &m);
    }

    /// A message this node stored, for the other nodes: on its room's subject, or on the
    /// subjects of the DM's two keys.
    pub(super) fn publish_msg(&mut self, r: &Record) {
        let m = Bus::Msg {
            conv: r.conv.clone(),
            id: r.id,
            ts: r.ts_ms,
            from: r.from_key,
            nick: r.from_nick.clone(),
            to: r.to_key,
            to_nick: r.to_nick.clone(),
            kind: r.kind,
            text: r.text.clone(),
            cref: r.client_ref,
            target: r.target,
            count: r
                .reactions
                .first()
                .filter(|_| r.target.is_some())
                .map(|x| x.1),
        };
        match r.to_key {
            None => self.publish(Subject::Room(r.conv.clone()), &m),
            Some(to) => {
                let data = m.encode();
                self.out.push_back(Output::Publish {
                    subject: Subject::User(r.from_key),
                    data: data.clone(),
                });
                if to != r.from_key {
                    self.out.push_back(Output::Publish {
                        subject: Subject::User(to),
                        data,
                    });
                }
            }
        }
    }

    /// A stored message reached this node: fanned out in its place (see the module
    /// documentation). Alone, every message is the next one.
    pub(super) fn land(&mut self, now_ms: i64, a: Arrival) {
        if self.cluster.is_some() {
            let (conv, id) = (a.record().conv.clone(), a.record().id);
            let cv = self.convs.entry(conv.clone()).or_default();
            if !cv.synced {
                if cv.backlog.len() < MAX_BACKLOG || matches!(a, Arrival::Local { .. }) {
                    cv.backlog.push(a);
                }
                self.ensure_sync(&conv);
                return;
            }
            if id <= cv.committed {
                // Seen already: our own message back from the bus, or one a gap read brought.
                if let Arrival::Local { record, client, c } = a {
                    self.ack_local(&record, client, c);
                }
                return;
            }
            if id > cv.committed + 1 {
                self.fill_gap(now_ms, &conv, id - 1);
            }
        }
        match a {
            Arrival::Remote(r) => self.fan_out(r, None),
            Arrival::Local { record, client, c } => self.fan_out(record, Some((client, c))),
        }
    }

    /// Acknowledges a message sent here that a gap read reached before its commit was heard
    /// of: in its place in the catch-up that read it, or at once where that is over.
    fn ack_local(&mut self, r: &Record, client: u64, c: u64) {
        let senders = self.client_sessions(&r.from_key, client);
        self.ack_again(&senders, c, r.conv.clone(), r.id, r.ts_ms);
    }

    /// Every session here that sees `conv`: its room's members', or the two DM keys'.
    fn conv_sessions(&self, conv: &str) -> Vec<SessionId> {
        if !conv.starts_with('@') {
            return self.room_sessions(conv);
        }
        let Some((a, b)) = dm_keys(conv) else {
            return Vec::new();
        };
        let mut out: Vec<SessionId> = Vec::new();
        for k in [a, b] {
            if let Some(u) = self.users.get(&k) {
                out.extend(u.sessions.iter().copied());
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn empty_cache(&mut self, conv: &str) {
        if let Some(c) = self.convs.get_mut(conv) {
            self.cache_bytes = self.cache_bytes.saturating_sub(c.bytes);
            if c.used != 0 {
                self.cache_order.remove(&c.used);
            }
            c.recent = VecDeque::new();
            c.bytes = 0;
            c.used = 0;
            c.trimmed = true;
        }
    }

    /// Messages up to `upto` are stored and were not fanned out here: every session here in
    /// `conv` (but the joins waiting for the sync, whose replays start after it) is replayed
    /// from the old `committed`, which reads them from the store.
    pub(super) fn fill_gap(&mut self, now_ms: i64, conv: &str, upto: u64) {
        let Some(cv) = self.convs.get_mut(conv) else {
            return;
        };
        if upto <= cv.committed {
            return;
        }
        let from = std::mem::replace(&mut cv.committed, upto);
        let waiting: Vec<SessionId> = cv.waiting.iter().map(|w| w.0).collect();
        debug!(conv, from, upto, "gap: reading the missing messages");
        // The cache no longer follows on from what it holds.
        self.empty_cache(conv);
        for s in self.conv_sessions(conv) {
            if !waiting.contains(&s) {
                self.queue_replay(s, conv, Replay::after(from));
                self.pump(now_ms, s);
            }
        }
    }

    /// The answer to [`Output::Sync`] for `conv`: the store's highest id (read after the
    /// subscription was active), or why it could not be read (tried again at the next beat).
    pub fn synced(&mut self, now_ms: i64, conv: &str, result: Result<u64, String>) {
        if self.cluster.is_none() {
            return;
        }
        let Some(cv) = self.convs.get_mut(conv) else {
            return;
        };
        cv.syncing = false;
        if !conv.starts_with('@') && !self.rooms.contains_key(conv) {
            // Unfollowed meanwhile: what was read is not kept up to date.
            cv.synced = false;
            cv.backlog.clear();
            return;
        }
        let last = match result {
            Ok(l) => l,
            Err(e) => {
                warn!(conv, error = %e, "cannot read a conversation's last id; retrying");
                if let Some(c) = self.cluster.as_mut() {
                    c.retry.insert(conv.to_owned());
                }
                return;
            }
        };
        let mut backlog = std::mem::take(&mut cv.backlog);
        backlog.sort_by_key(|a| a.record().id);
        let mut stale_cache = false;
        if !cv.synced {
            // First sync since following: start from the oldest message waiting, or from the
            // store's mark; what came before is history (a join's replay, undelivered DMs).
            let base = backlog
                .first()
                .map_or(last, |a| a.record().id.saturating_sub(1).min(last));
            if base > cv.committed {
                cv.committed = base;
                stale_cache = true;
            }
            cv.synced = true;
        }
        if stale_cache {
            self.empty_cache(conv);
        }
        // The joins that waited start their replays first: the backlog then reaches them in
        // those replays, in its place after what they missed, not before it.
        let waiting = self
            .convs
            .get_mut(conv)
            .map(|c| std::mem::take(&mut c.waiting))
            .unwrap_or_default();
        for (session, after) in waiting {
            self.start_join_replay(now_ms, session, conv, after);
        }
        for a in backlog {
            self.land(now_ms, a);
        }
        self.fill_gap(now_ms, conv, last);
        for s in self.conv_sessions(conv) {
            self.pump(now_ms, s);
        }
    }

    /// The bus connection was re-established: what it carried while down may be lost, so
    /// every conversation in sync is synced again (a gap up to the store's mark is read), and
    /// every followed room's member list is asked for again.
    pub fn bus_reconnected(&mut self, now_ms: i64) {
        let Some(node) = self.node() else {
            return;
        };
        // Server-wide bans too: a sync of the scope `""` reads only those.
        self.track_mod_changes("");
        self.out.push_back(Output::Sync {
            conv: String::new(),
        });
        let convs: Vec<String> = self
            .convs
            .iter()
            .filter(|(_, c)| c.synced)
            .map(|(n, _)| n.clone())
            .collect();
        for conv in convs {
            self.request_sync(&conv);
        }
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let who = Bus::Who {
                node: node.clone(),
                room: room.clone(),
            };
            self.publish(Subject::Room(room), &who);
        }
        if let Some(c) = self.cluster.as_mut() {
            c.next_beat = now_ms;
        }
    }

    /// A bus message (untrusted bytes: checked, and dropped if bad).
    pub fn bus(&mut self, now_ms: i64, data: &[u8]) {
        let Some(me) = self.node() else {
            return;
        };
        let m = match Bus::decode(data) {
            Ok(m) => m,
            Err(e) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.dropped += 1;
                }
                debug!(error = %e, "bus message dropped");
                return;
            }
        };
        match m {
            Bus::Msg {
                conv,
                id,
                ts,
                from,
                nick,
                to,
                to_nick,
                kind,
                text,
                cref,
                target,
                count,
            } => {
                let wanted = match dm_keys(&conv) {
                    Some((a, b)) => {
                        to.is_some() && (self.users.contains_key(&a) || self.users.contains_key(&b))
                    }
                    None => to.is_none() && self.rooms.contains_key(&conv),
                };
                // Another node checked the text, but a message is not trusted for having come
                // over the bus: the same rules as for a client's.
                let reactions = match (kind, count) {
                    (chirp_store::kind::REACT | chirp_store::kind::UNREACT, Some(n)) => {
                        vec![(text.clone(), n)]
                    }
                    _ => Vec::new(),
                };
                let record = Record {
                    conv,
                    id,
                    ts_ms: ts,
                    from_key: from,
                    from_nick: nick,
                    to_key: to,
                    to_nick,
                    kind,
                    text,
                    client_ref: cref,
                    target,
                    edited: false,
                    deleted: false,
                    reactions,
                };
                let valid = if target.is_some() {
                    super::amend::valid_event(&record, self.config.max_text)
                } else {
                    names::text(&record.text, self.config.max_text).is_ok()
                };
                if !wanted || id == 0 || !valid {
                    if let Some(c) = self.cluster.as_mut() {
                        c.dropped += u64::from(wanted);
                    }
                    return;
                }
                self.land(now_ms, Arrival::Remote(record));
            }
            Bus::Presence {
                node,
                room,
                key,
                ev,
            } if node != me => self.remote_presence(now_ms, node, &room, key, ev),
            Bus::Typing {
                node,
                conv,
                from,
                nick,
                to,
            } if node != me => {
                // Only what this node would forward itself: a nick by the rules, to a room
                // followed here, or in the DM conversation of its two keys.
                let fits = match to {
                    None => self.rooms.contains_key(&conv),
                    Some(to) => conv == super::dm_conv(&from, &to),
                };
                if fits && names::nick(&nick).is_ok() {
                    self.typing_here(&conv, from, to, nick);
                }
            }
            Bus::Who { node, room } if node != me => {
                let Some(r) = self.rooms.get(&room) else {
                    return;
                };
                let members = r
                    .members
                    .iter()
                    .filter_map(|k| {
                        self.users.get(k).map(|u| Member {
                            key: *k,
                            nick: u.nick.clone(),
                        })
                    })
                    .collect();
                let answer = Bus::Members {
                    node: me,
                    room: room.clone(),
                    members,
                };
                self.publish(Subject::Room(room), &answer);
            }
            Bus::Members {
                node,
                room,
                members,
            } if node != me => {
                self.heard(now_ms, &node);
                let Some(r) = self.rooms.get_mut(&room) else {
                    return;
                };
                // Members this node did not know of: its sessions in the room learn them as
                // joins (a first join's member list went out before the answers came).
                let mut new = Vec::new();
                for m in members {
                    let known = r.members.contains(&m.key) || r.remote.contains_key(&m.key);
                    let e = r.remote.entry(m.key).or_insert_with(|| RemoteMember {
                        nick: m.nick.clone(),
                        nodes: Vec::new(),
                    });
                    e.nick = m.nick.clone();
                    if !e.nodes.contains(&node) {
                        e.nodes.push(node.clone());
                    }
                    if !known {
                        new.push(m.nick);
                    }
                }
                for nick in new {
                    self.queue_presence(now_ms, &room, Presence::Join { nick });
                }
            }
            Bus::Nick {
                key,
                nick,
                old,
                rooms,
            } => self.remote_nick(now_ms, key, nick, old, &rooms),
            Bus::Topic {
                node,
                room,
                topic,
                by,
            } if node != me => {
                if names::topic(&topic).is_err() || !self.rooms.contains_key(&room) {
                    return;
                }
                self.topics
                    .insert(room.clone(), (topic.clone(), by.clone()));
                self.flush_presence(&room);
                let data = enc(&ServerMsg::Topic {
                    room: room.clone(),
                    topic,
                    by,
                });
                self.send_room(&room, &data);
            }
            Bus::Mod(c) => self.remote_mod(now_ms, c),
            Bus::Marker { key, conv, id } => self.remote_marker(key, &conv, id),
            Bus::Kick {
                room,
                key,
                by,
                reason,
                banned,
            } => self.remote_kick(now_ms, &room, &key, &by, reason, banned),
            Bus::Beat { node, mut rooms } if node != me => {
                self.heard(now_ms, &node);
                rooms.truncate(MAX_BEAT_ROOMS);
                if let Some(c) = self.cluster.as_mut() {
                    c.room_counts.insert(node, rooms);
                }
            }
            Bus::Bye { node } if node != me => {
                self.drop_node(now_ms, &node, "server shutting down");
            }
            m @ (Bus::ListSessions { .. }
            | Bus::SessionList { .. }
            | Bus::KillSession { .. }
            | Bus::Killed { .. }) => self.opers_bus(now_ms, me, m),
            _ => {}
        }
    }

    pub(super) fn heard(&mut self, now_ms: i64, node: &str) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if c.nodes.insert(node.to_owned(), now_ms).is_none() {
            info!(node, peers = c.nodes.len(), "a node joined the cluster");
        }
    }

    fn remote_presence(&mut self, now_ms: i64, node: String, room: &str, key: Key, ev: Presence) {
        self.heard(now_ms, &node);
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let local = r.members.contains(&key);
        let show = match &ev {
            Presence::Join { nick } => {
                let m = r.remote.entry(key).or_insert_with(|| RemoteMember {
                    nick: nick.clone(),
                    nodes: Vec::new(),
                });
                m.nick = nick.clone();
                let new = m.nodes.is_empty();
                if !m.nodes.contains(&node) {
                    m.nodes.push(node);
                }
                new && !local
            }
            Presence::Part { .. } | Presence::Quit { .. } => match r.remote.get_mut(&key) {
                Some(m) => {
                    m.nodes.retain(|n| *n != node);
                    let gone = m.nodes.is_empty();
                    if gone {
                        r.remote.remove(&key);
                    }
                    gone && !local
                }
                None => false,
            },
        };
        if show {
            self.queue_presence(now_ms, room, ev);
        }
    }

    /// Node `node` is gone: its members quit (`reason`) wherever they are not also here or on
    /// another node.
    fn drop_node(&mut self, now_ms: i64, node: &str, reason: &str) {
        if let Some(c) = self.cluster.as_mut() {
            c.room_counts.remove(node);
            if c.nodes.remove(node).is_some() {
                info!(
                    node,
                    peers = c.nodes.len(),
                    reason,
                    "a node left the cluster"
                );
            }
        }
        let mut quits: Vec<(String, String)> = Vec::new();
        for (room, r) in &mut self.rooms {
            let members = &r.members;
            r.remote.retain(|k, m| {
                m.nodes.retain(|n| n != node);
                if m.nodes.is_empty() {
                    if !members.contains(k) {
                        quits.push((room.clone(), m.nick.clone()));
                    }
                    return false;
                }
                true
            });
        }
        for (room, nick) in quits {
            let ev = Presence::Quit {
                nick,
                reason: reason.to_owned(),
            };
            self.queue_presence(now_ms, &room, ev);
        }
    }

    /// Another node bound `nick` to `key` (or freed `key`'s nick); if it was a rename of a
    /// connected user (`old`), the members here of its `rooms` are told, once each.
    fn remote_nick(
        &mut self,
        now_ms: i64,
        key: Key,
        nick: Option<String>,
        old: Option<String>,
        rooms: &[String],
    ) {
        if nick.is_some() && self.nick_of.get(&key) == nick.as_ref() {
            return;
        }
        let had = self.unbind_nick(&key);
        let Some(nick) = nick else {
            // Another node released the nick as expired just as its owner came back here
            // (the store had not seen it yet): bound again, as a claim, which the store
            // refuses if another key got the nick in between.
            if let Some(had) = had.filter(|_| self.users.contains_key(&key)) {
                debug!(
                    nick = had,
                    "a nick released elsewhere while its owner is here"
                );
                self.bind_nick(now_ms, key, had, Vec::new());
            }
            return;
        };
        if let Some(old) = old {
            let mut told: HashSet<Key> = HashSet::new();
            for room in rooms.iter().take(self.config.max_rooms_per_user) {
                if let Some(r) = self.rooms.get_mut(room) {
                    if let Some(m) = r.remote.get_mut(&key) {
                        m.nick = nick.clone();
                    }
                    told.extend(r.members.iter().copied());
                }
            }
            let data = enc(&ServerMsg::Nick {
                old,
                new: nick.clone(),
            });
            for k in told {
                self.send_user(&k, &data);
            }
        }
        let fold = names::fold(&nick);
        if let Some((_, holder)) = self.nick_owner.get(&fold).cloned() {
            if holder != key {
                self.unbind_nick(&holder);
            }
        }
        self.nick_look.insert(&nick, key);
        self.nick_owner.insert(fold, (nick.clone(), key));
        self.nick_of.insert(key, nick);
        // Just bound, so seen now (another node keeps the store's time fresh while the
        // owner stays connected there): expiry here counts from now.
        self.set_seen(key, Some(now_ms));
    }

    /// The store released the expired `nick` of `key` on this node's word: the other nodes
    /// forget it too.
    pub(super) fn publish_release(&mut self, key: Key, nick: String) {
        debug!(nick, "an expired nick is released");
        let m = Bus::Nick {
            key,
            nick: None,
            old: None,
            rooms: Vec::new(),
        };
        self.publish(Subject::Nicks, &m);
    }

    /// The store answered a nick binding made here (`old`: the key's nick before; `kept`:
    /// a nick it claimed as expired was kept by its owner, seen since).
    pub(super) fn nick_committed(
        &mut self,
        key: Key,
        nick: String,
        old: Option<String>,
        kept: bool,
        outcome: Option<Outcome>,
    ) {
        match outcome {
            Some(Outcome::NickBound) => {
                let rooms = self
                    .users
                    .get(&key)
                    .map(|u| u.rooms.iter().cloned().collect())
                    .unwrap_or_default();
                let m = Bus::Nick {
                    key,
                    nick: Some(nick),
                    old,
                    rooms,
                };
                self.publish(Subject::Nicks, &m);
            }
            Some(Outcome::NickTaken) => {
                // Another node's key bound it first: this key does not hold it.
                if self.nick_of.get(&key) == Some(&nick) {
                    self.unbind_nick(&key);
                }
                let sessions = self
                    .users
                    .get(&key)
                    .map(|u| u.sessions.clone())
                    .unwrap_or_default();
                for s in sessions {
                    let m = if kept {
                        format!(
                            "nick '{nick}' is still in use by its owner (seen on another server of this cluster); pick another nick"
                        )
                    } else {
                        format!(
                            "nick '{nick}' was just taken by another key (on another server of this cluster); pick another nick"
                        )
                    };
                    self.fail(s, None, code::NICK_TAKEN, m);
                    self.close_session(s, code::NICK_TAKEN, false);
                }
            }
            _ => {}
        }
    }

    /// Beats, and finds the nodes gone silent; retries failed syncs.
    pub(super) fn cluster_timeout(&mut self, now_ms: i64) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if now_ms < c.next_beat {
            return;
        }
        c.next_beat = now_ms.saturating_add(c.config.beat_ms);
        // The busiest rooms here, for the other nodes' `list`: a beat's work grows with the
        // rooms this node has, once a second, never per message.
        let mut busiest: Vec<(&String, u64)> = self
            .rooms
            .iter()
            .map(|(n, r)| (n, r.members.len() as u64))
            .collect();
        if busiest.len() > MAX_BEAT_ROOMS {
            busiest.select_nth_unstable_by(MAX_BEAT_ROOMS, |a, b| b.1.cmp(&a.1));
            busiest.truncate(MAX_BEAT_ROOMS);
        }
        let rooms: Vec<(String, u64)> = busiest.into_iter().map(|(n, c)| (n.clone(), c)).collect();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let beat = Bus::Beat {
            node: c.config.node.clone(),
            rooms,
        };
        let cutoff = now_ms.saturating_sub(c.config.node_timeout_ms);
        let dead: Vec<String> = c
            .nodes
            .iter()
            .filter(|(_, t)| **t < cutoff)
            .map(|(n, _)| n.clone())
            .collect();
        let retry = std::mem::take(&mut c.retry);
        self.publish(Subject::Nodes, &beat);
        for n in dead {
            self.drop_node(now_ms, &n, "timed out");
        }
        for conv in retry {
            self.request_sync(&conv);
        }
    }

    /// The members the other nodes counted in their rooms at their last beat.
    pub(super) fn remote_room_counts(&self) -> impl Iterator<Item = (&str, u64)> {
        self.cluster
            .iter()
            .flat_map(|c| c.room_counts.values())
            .flatten()
            .map(|(r, n)| (r.as_str(), *n))
    }

    /// A topic set here, for the other nodes.
    pub(super) fn publish_topic(&mut self, room: &str, topic: &str, by: &str) {
        let Some(node) = self.node() else {
            return;
        };
        let m = Bus::Topic {
            node,
            room: room.to_owned(),
            topic: topic.to_owned(),
            by: by.to_owned(),
        };
        self.publish(Subject::Room(room.to_owned()), &m);
    }

    /// This node is stopping: the others learn it at once.
    pub(super) fn cluster_bye(&mut self) {
        if let Some(node) = self.node() {
            self.publish(Subject::Nodes, &Bus::Bye { node });
        }
    }
}
