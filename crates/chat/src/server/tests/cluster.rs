//! Nodes of a cluster, simulated: several cores, one shared store (ids given at commit, as the
//! database does), and a bus that delivers each publication to the nodes following its
//! subject, in order, and that a test can make drop messages or go down. Everything a node
//! asks of the store is answered from the shared records.

use super::*;
use crate::bus::Bus;
use chirp_store::ModEntry;
use std::collections::BTreeMap;

/// One shared database.
#[derive(Default)]
struct Db {
    records: Vec<Record>,
    last: HashMap<String, u64>,
    /// fold → (nick, key), and each owner's last-seen time.
    nicks: HashMap<String, (String, Key)>,
    seen: HashMap<Key, i64>,
    /// Moderation entries by (scope, kind, subject).
    mods: BTreeMap<(String, String, String), ModEntry>,
    /// (key, conversation) → last id read.
    markers: BTreeMap<(Key, String), u64>,
}

impl Db {
    fn commit(&mut self, ops: &[Op]) -> Vec<Outcome> {
        ops.iter()
            .map(|op| match op {
                Op::Message(m) => {
                    // A resend (same key and client reference) is not stored again.
                    if let Some(r) = m.client_ref.and_then(|cref| {
                        self.records
                            .iter()
                            .find(|r| r.from_key == m.from_key && r.client_ref == Some(cref))
                    }) {
                        return Outcome::Duplicate {
                            conv: r.conv.clone(),
                            id: r.id,
                            ts_ms: r.ts_ms,
                        };
                    }
                    let id = self.last.entry(m.conv.clone()).or_default();
                    *id += 1;
                    self.records.push(m.clone().with_id(*id));
                    Outcome::Stored { id: *id }
                }
                Op::SetNick {
                    nick,
                    fold,
                    key,
                    seen_ms,
                } => {
                    if self.nicks.get(fold).is_some_and(|(_, k)| k != key) {
                        return Outcome::NickTaken;
                    }
                    self.nicks.retain(|_, (_, k)| k != key);
                    self.nicks.insert(fold.clone(), (nick.clone(), *key));
                    self.seen.insert(*key, *seen_ms);
                    Outcome::NickBound
                }
                Op::Seen { key, ts_ms } => {
                    if let Some(t) = self.seen.get_mut(key) {
                        *t = (*t).max(*ts_ms);
                    }
                    Outcome::Done
                }
                Op::ReleaseNick { key, seen_by } => match self.seen.get(key).copied() {
                    Some(seen_ms) if seen_ms > *seen_by => Outcome::NickKept { seen_ms },
                    Some(_) => {
                        self.nicks.retain(|_, (_, k)| k != key);
                        self.seen.remove(key);
                        Outcome::Done
                    }
                    None => Outcome::Done,
                },
                Op::SetMod(e) => {
                    let k = (e.scope.clone(), e.kind.clone(), e.subject.clone());
                    self.mods.insert(k, e.clone());
                    Outcome::Done
                }
                Op::ClearMod {
                    scope,
                    kind,
                    subject,
                } => {
                    self.mods
                        .remove(&(scope.clone(), kind.clone(), subject.clone()));
                    Outcome::Done
                }
                Op::ReadMarker { key, conv, upto } => {
                    let m = self.markers.entry((*key, conv.clone())).or_default();
                    *m = (*m).max(*upto);
                    Outcome::Done
                }
                _ => Outcome::Done,
            })
            .collect()
    }

    fn markers(&self, key: &Key) -> Vec<(String, u64)> {
        self.markers
            .iter()
            .filter(|((k, _), _)| k == key)
            .map(|((_, conv), &id)| (conv.clone(), id))
            .collect()
    }

    fn holder(&self, nick: &str) -> Option<Key> {
        self.nicks.get(&names::fold(nick)).map(|&(_, k)| k)
    }

    fn after(&self, conv: &str, after: u64, upto: u64, limit: usize) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .records
            .iter()
            .filter(|r| r.conv == conv && r.id > after && r.id <= upto)
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v.truncate(limit);
        v
    }
}

/// An answer the test holds back (the database did the work; the node has not heard yet).
enum Held {
    /// A commit's outcomes: the records are in the database already.
    Commit {
        node: usize,
        token: u64,
        outcomes: Vec<Outcome>,
    },
    /// A replay read or a sync, answered from the database as it is when released.
    Answer { node: usize, output: Output },
}

/// The kinds of answer a test can hold back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Hold {
    Commits,
    Reads,
    Syncs,
}

impl Hold {
    /// The kind of a read or sync a node asked for.
    fn of(o: &Output) -> Option<Hold> {
        match o {
            Output::ReadAfter { .. } => Some(Hold::Reads),
            Output::Sync { .. } => Some(Hold::Syncs),
            _ => None,
        }
    }
}

struct Net {
    nodes: Vec<Server>,
    /// Killed nodes: their outputs are lost, and the bus no longer reaches them.
    dead: Vec<bool>,
    /// Answers of these kinds to these nodes wait in `held` until [`Net::release`].
    hold: HashSet<(usize, Hold)>,
    held: VecDeque<Held>,
    follows: Vec<HashSet<Subject>>,
    db: Db,
    /// What each node's sessions were sent, decoded.
    inbox: HashMap<(usize, SessionId), Vec<ServerMsg>>,
    /// Publications in flight: (from node, subject, data).
    bus: VecDeque<(usize, Subject, Bytes)>,
    /// Drop the next publications of `Bus::Msg` (counted down).
    drop_msgs: usize,
    /// The bus is down: publications are lost.
    down: bool,
    now: i64,
    reads_after: usize,
}

impl Net {
    fn new(n: usize) -> Net {
        Net::with(n, ServerConfig::default())
    }

    /// `n` nodes with `config` (each its own node name).
    fn with(n: usize, config: ServerConfig) -> Net {
        let nodes = (0..n)
            .map(|i| {
                let config = ServerConfig {
                    cluster: Some(ClusterConfig::new(format!("n{i}"))),
                    ..config.clone()
                };
                Server::new(config, Loaded::default())
            })
            .collect();
        let mut net = Net {
            nodes,
            dead: vec![false; n],
            hold: HashSet::new(),
            held: VecDeque::new(),
            follows: vec![HashSet::new(); n],
            db: Db::default(),
            inbox: HashMap::new(),
            bus: VecDeque::new(),
            drop_msgs: 0,
            down: false,
            now: 1_000_000,
            reads_after: 0,
        };
        net.run();
        net
    }

    /// Carries out every node's outputs and delivers the bus until all is quiet.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].poll_output() {
                    any = true;
                    if !self.dead[i] {
                        self.output(i, o);
                    }
                }
            }
            if let Some((from, subject, data)) = self.bus.pop_front() {
                any = true;
                for i in 0..self.nodes.len() {
                    // NATS delivers to the publisher too, when it follows the subject.
                    if self.follows[i].contains(&subject) && !self.dead[i] {
                        let _ = from;
                        self.nodes[i].bus(self.now, &data);
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("the nodes never went quiet");
    }

    fn output(&mut self, i: usize, o: Output) {
        if Hold::of(&o).is_some_and(|k| self.hold.contains(&(i, k))) {
            self.held.push_back(Held::Answer { node: i, output: o });
            return;
        }
        let now = self.now;
        let n = &mut self.nodes[i];
        match o {
            Output::Send { to, data } => {
                let m = ServerMsg::decode(&data).expect("decodes");
                self.inbox.entry((i, to)).or_default().push(m);
                n.sent(now, to, data.len());
            }
            Output::Close { session, .. } => n.disconnected(now, session, "closed"),
            Output::Persist { token, ops } => {
                let outcomes = self.db.commit(&ops);
                if self.hold.contains(&(i, Hold::Commits)) {
                    self.held.push_back(Held::Commit {
                        node: i,
                        token,
                        outcomes,
                    });
                } else {
                    n.committed(now, token, Ok(outcomes));
                }
            }
            Output::ReadHistory {
                session, id, conv, ..
            } => n.history_loaded(session, &conv, id, Ok(Vec::new())),
            Output::ReadAfter {
                session,
                token,
                conv,
                after,
                upto,
                limit,
                ..
            } => {
                self.reads_after += 1;
                let page = self.db.after(&conv, after, upto, limit);
                n.replay_loaded(now, session, &conv, token, Ok(page));
            }
            Output::ReadUndelivered { session, .. } => {
                n.undelivered_loaded(now, session, Ok(Vec::new()));
            }
            Output::ReadMarkers { key, .. } => n.markers_loaded(key, Ok(self.db.markers(&key))),
            Output::Search {
                session, id, conv, ..
            } => n.search_loaded(session, id, &conv, 10, Ok(Vec::new())),
            Output::Publish { subject, data } => {
                let is_msg = matches!(Bus::decode(&data), Ok(Bus::Msg { .. }));
                if self.down || (is_msg && self.drop_msgs > 0) {
                    if is_msg && !self.down {
                        self.drop_msgs -= 1;
                    }
                    return;
                }
                self.bus.push_back((i, subject, data));
            }
            Output::Follow(s) => {
                self.follows[i].insert(s);
            }
            Output::Unfollow(s) => {
                self.follows[i].remove(&s);
            }
            // The rendezvous is not part of these tests.
            Output::Relay { .. } => {}
            Output::Sync { conv } => {
                if conv.is_empty() || conv.starts_with('#') {
                    let entries = self
                        .db
                        .mods
                        .values()
                        .filter(|e| e.scope == conv)
                        .cloned()
                        .collect();
                    n.moderation_loaded(now, &conv, Ok(entries));
                }
                if !conv.is_empty() {
                    let last = self.db.last.get(&conv).copied().unwrap_or(0);
                    n.synced(now, &conv, Ok(last));
                }
            }
        }
    }

    /// Stops holding answers of `kind` to `node` and hands the held ones over, oldest first
    /// (reads and syncs see the database as it is now); then runs until all is quiet.
    fn release(&mut self, node: usize, kind: Hold) {
        self.hold.remove(&(node, kind));
        let now = self.now;
        let held = std::mem::take(&mut self.held);
        for h in held {
            let k = match &h {
                Held::Commit { node, .. } => (*node, Hold::Commits),
                Held::Answer { node, output } => (*node, Hold::of(output).expect("held kind")),
            };
            if k != (node, kind) {
                self.held.push_back(h);
                continue;
            }
            match h {
                Held::Commit {
                    node,
                    token,
                    outcomes,
                } if !self.dead[node] => self.nodes[node].committed(now, token, Ok(outcomes)),
                Held::Answer { node, output } if !self.dead[node] => self.output(node, output),
                _ => {}
            }
            self.run();
        }
        self.run();
    }

    /// Session `id` says hello on `node` as client instance `client` of key `k`, without own
    /// echo (as the reference client does), resuming `rooms` after the ids given.
    fn hello_quiet(
        &mut self,
        node: usize,
        id: SessionId,
        k: Key,
        nick: &str,
        client: u64,
        rooms: &[(&str, Option<u64>)],
    ) {
        let hello = ClientMsg::Hello {
            v: wire::VERSION,
            nick: nick.into(),
            client,
            rooms: rooms
                .iter()
                .map(|&(room, after)| JoinReq {
                    room: room.into(),
                    after,
                    key: None,
                })
                .collect(),
            dms: vec![],
            echo: false,
        };
        self.nodes[node].connected(self.now, id, IP, k);
        self.nodes[node].message(self.now, id, &hello.encode());
        self.run();
    }

    /// What the reference client shows in `room` from what session `id` of `node` was sent,
    /// `said` being its lines (`c`, text): see [`Member::view`].
    fn client_view(
        &self,
        node: usize,
        id: SessionId,
        room: &str,
        said: &[(u64, &str)],
    ) -> Vec<(u64, String)> {
        let m = Member {
            key: key(0),
            sessions: vec![(node, id)],
            said: said.iter().map(|&(c, t)| (c, t.to_owned())).collect(),
        };
        m.view(self, room).0
    }

    fn hello(&mut self, node: usize, id: SessionId, k: Key, nick: &str, rooms: &[&str]) {
        self.nodes[node].connected(self.now, id, IP, k);
        self.nodes[node].message(self.now, id, &hello_msg(id, nick, rooms).encode());
        self.run();
    }

    fn say(&mut self, node: usize, id: SessionId, c: u64, room: &str, text: &str) {
        let m = ClientMsg::Say {
            c,
            room: Some(room.into()),
            to: None,
            text: text.into(),
            action: false,
        };
        self.nodes[node].message(self.now, id, &m.encode());
        self.run();
    }

    /// The room messages session `id` of `node` was shown: (id, text), in order.
    fn shown(&self, node: usize, id: SessionId) -> Vec<(u64, String)> {
        self.inbox
            .get(&(node, id))
            .map(|v| {
                v.iter()
                    .filter_map(|m| match m {
                        ServerMsg::Msg(m) if !m.history => Some((m.id, m.text.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The members the last `who` answer to session `id` of `node` listed.
    fn last_who(&self, node: usize, id: SessionId) -> Vec<String> {
        self.inbox[&(node, id)]
            .iter()
            .rev()
            .find_map(|m| match m {
                ServerMsg::Who { members, .. } => Some(members.clone()),
                _ => None,
            })
            .expect("who")
    }

    fn presence(&self, node: usize, id: SessionId) -> Vec<Presence> {
        self.inbox
            .get(&(node, id))
            .map(|v| {
                v.iter()
                    .filter_map(|m| match m {
                        ServerMsg::Presence { events, .. } => Some(events.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last error session `id` of `node` was sent: (code, message).
    fn last_error(&self, node: usize, id: SessionId) -> Option<(String, String)> {
        self.inbox
            .get(&(node, id))?
            .iter()
            .rev()
            .find_map(|m| match m {
                ServerMsg::Error { code, message, .. } => Some((code.clone(), message.clone())),
                _ => None,
            })
    }

    fn welcomed(&self, node: usize, id: SessionId) -> Option<String> {
        self.inbox.get(&(node, id))?.iter().find_map(|m| match m {
            ServerMsg::Welcome { nick, .. } => Some(nick.clone()),
            _ => None,
        })
    }

    fn tick(&mut self, ms: i64) {
        self.now += ms;
        for n in &mut self.nodes {
            n.handle_timeout(self.now);
        }
        self.run();
    }
}

fn numbered(n: u64) -> Vec<(u64, String)> {
    (1..=n).map(|i| (i, format!("m{i}"))).collect()
}

#[test]
fn a_message_the_bus_dropped_is_read_from_the_store_when_the_next_shows_the_gap() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.say(0, 1, 1, "#r", "m1");
    net.drop_msgs = 1;
    net.say(0, 1, 2, "#r", "m2");
    // bob has not seen m2: nothing says it exists yet.
    assert_eq!(net.shown(1, 2), numbered(1));
    let reads = net.reads_after;
    net.say(0, 1, 3, "#r", "m3");
    // m3 shows the gap: m2 is read from the store, and bob sees all three once, in order.
    assert_eq!(net.shown(1, 2), numbered(3));
    assert!(net.reads_after > reads, "the gap was read from the store");
    // ann (the sender's node) saw each once too.
    assert_eq!(net.shown(0, 1), numbered(3));
}

#[test]
fn a_last_message_lost_while_the_bus_was_down_is_read_after_it_reconnects() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.say(0, 1, 1, "#r", "m1");
    net.down = true;
    net.say(0, 1, 2, "#r", "m2");
    net.say(0, 1, 3, "#r", "m3");
    assert_eq!(net.shown(1, 2), numbered(1));
    // No later message shows the gap; the reconnect's sync finds it.
    net.down = false;
    net.nodes[1].bus_reconnected(net.now);
    net.run();
    assert_eq!(net.shown(1, 2), numbered(3));
    // And the bus carries on: nothing twice.
    net.say(0, 1, 4, "#r", "m4");
    assert_eq!(net.shown(1, 2), numbered(4));
}

#[test]
fn messages_sent_on_two_nodes_at_once_are_shown_everywhere_in_id_order() {
    let mut net = Net::new(3);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.hello(2, 3, key(3), "cy", &["#r"]);
    // Both say before the bus delivers anything: ids interleave in the store.
    for k in 0..5u64 {
        for (node, sid) in [(0, 1), (1, 2)] {
            let m = ClientMsg::Say {
                c: k + 1,
                room: Some("#r".into()),
                to: None,
                text: format!("{node}-{k}"),
                action: false,
            };
            net.nodes[node].message(net.now, sid, &m.encode());
        }
    }
    net.run();
    let stored: Vec<(u64, String)> = net
        .db
        .after("#r", 0, u64::MAX, 100)
        .into_iter()
        .map(|r| (r.id, r.text))
        .collect();
    assert_eq!(stored.len(), 10);
    for (node, sid) in [(0, 1), (1, 2), (2, 3)] {
        assert_eq!(net.shown(node, sid), stored, "node {node}");
    }
}

#[test]
fn presence_and_member_lists_cross_nodes_and_a_silent_node_quits_its_members() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.tick(300);
    // ann saw bob join (from node 1), and bob's own join listed ann.
    assert!(
        net.presence(0, 1)
            .contains(&Presence::Join { nick: "bob".into() }),
        "{:?}",
        net.presence(0, 1)
    );
    // bob, the first member on node 1, learns of ann from its member list, or (when the list
    // went out before node 0 answered) as a join right after.
    let joined = net.inbox[&(1, 2)]
        .iter()
        .find_map(|m| match m {
            ServerMsg::Joined { members, .. } => Some(members.clone()),
            _ => None,
        })
        .expect("joined");
    let ann_joined = net
        .presence(1, 2)
        .contains(&Presence::Join { nick: "ann".into() });
    assert!(
        joined.contains(&"ann".to_owned()) != ann_joined,
        "ann is listed or joins, once: {joined:?} {:?}",
        net.presence(1, 2)
    );
    // A later /who lists both.
    net.nodes[1].message(net.now, 2, &ClientMsg::Who { room: "#r".into() }.encode());
    net.run();
    let who = net.last_who(1, 2);
    assert_eq!(who, vec!["ann".to_owned(), "bob".to_owned()]);
    // Both nodes beat; node 1 then goes silent (killed): after the timeout node 0 shows bob
    // as quit, once.
    net.tick(1000);
    net.follows[1].clear();
    let silent = net.nodes.remove(1);
    net.follows.remove(1);
    drop(silent);
    for _ in 0..7 {
        net.tick(1000);
    }
    let quits: Vec<_> = net
        .presence(0, 1)
        .into_iter()
        .filter(|p| matches!(p, Presence::Quit { nick, .. } if nick == "bob"))
        .collect();
    assert_eq!(quits.len(), 1, "{quits:?}");
    assert_eq!(net.nodes[0].cluster_peers(), Some(("n0", 0)));
}

#[test]
fn topics_renames_and_the_room_list_cross_nodes() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r", "#only0"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.tick(1000);
    // A topic set on node 1 reaches ann on node 0.
    let t = ClientMsg::Topic {
        room: "#r".into(),
        topic: "cluster talk".into(),
    };
    net.nodes[1].message(net.now, 2, &t.encode());
    net.run();
    assert!(
        net.inbox[&(0, 1)].iter().any(|m| matches!(
            m,
            ServerMsg::Topic { topic, by, .. } if topic == "cluster talk" && by == "bob"
        )),
        "{:?}",
        net.inbox[&(0, 1)]
    );
    // bob renames himself on node 1: ann on node 0 is told once, and `who` shows the new nick.
    net.nodes[1].message(
        net.now,
        2,
        &ClientMsg::Nick {
            nick: "robert".into(),
        }
        .encode(),
    );
    net.run();
    let renames = net.inbox[&(0, 1)]
        .iter()
        .filter(|m| matches!(m, ServerMsg::Nick { old, new } if old == "bob" && new == "robert"))
        .count();
    assert_eq!(renames, 1);
    net.nodes[0].message(net.now, 1, &ClientMsg::Who { room: "#r".into() }.encode());
    net.run();
    let who = net.last_who(0, 1);
    assert_eq!(who, vec!["ann".to_owned(), "robert".to_owned()]);
    // After a beat, bob's `list` on node 1 counts the members of both nodes and names the room
    // only node 0 has.
    net.tick(1000);
    net.nodes[1].message(net.now, 2, &ClientMsg::List.encode());
    net.run();
    let list = net.inbox[&(1, 2)]
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMsg::List { rooms } => Some(rooms.clone()),
            _ => None,
        })
        .expect("list");
    let counts: Vec<(&str, u64)> = list.iter().map(|r| (r.room.as_str(), r.members)).collect();
    assert_eq!(counts, vec![("#r", 2), ("#only0", 1)], "{list:?}");
}

/// Whether the user of session `id` on `node` is in `room` there.
fn member_here(net: &Net, node: usize, k: Key, room: &str) -> bool {
    net.nodes[node].in_room(&k, room)
}

/// The bus loses what is published before a node follows `chirp.nicks`, or while its
/// connection is down: the moderation changes it missed are in the store, and the node reads
/// them again when a room gets its first member there (and on every bus reconnection). Here
/// node 1 misses alice's claim of the room she created on node 0; bob, first on node 1 to
/// join, is taken for its creator at first, then corrected, and alice's ban puts him out.
/// A server-wide ban node 1 missed holds once its bus reconnects.
#[test]
fn moderation_the_bus_lost_is_read_again_from_the_store() {
    let oper: chirp_keys::Fingerprint = super::fingerprint(&key(9)).parse().expect("fp");
    let mut net = Net::with(
        2,
        ServerConfig {
            opers: vec![oper],
            ..ServerConfig::default()
        },
    );
    net.down = true;
    net.hello(0, 1, key(1), "alice", &["#r"]);
    net.down = false;
    assert_eq!(net.nodes[1].role("#r", &key(1)), super::Role::Member);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    assert_eq!(net.nodes[1].role("#r", &key(1)), super::Role::Owner);
    assert_eq!(net.nodes[1].role("#r", &key(2)), super::Role::Member);
    // bob is told his role again, after the one his join claimed.
    let roles: Vec<String> = net.inbox[&(1, 2)]
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Modes { role, .. } => Some(role.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        roles.last().map(String::as_str),
        Some("member"),
        "{roles:?}"
    );
    // The same on node 0, which heard bob's late claim: the earlier claim wins.
    assert_eq!(net.nodes[0].role("#r", &key(1)), super::Role::Owner);
    let ban = ClientMsg::Ban(crate::wire::BanReq {
        room: Some("#r".into()),
        target: Some("bob".into()),
        ..Default::default()
    });
    net.nodes[0].message(net.now, 1, &ban.encode());
    net.run();
    assert!(!member_here(&net, 1, key(2), "#r"));
    assert!(
        net.inbox[&(1, 2)]
            .iter()
            .any(|m| matches!(m, ServerMsg::Kicked { banned: true, .. }))
    );
    // A server-wide ban published while node 1's bus is down: it holds there once the bus
    // is back.
    net.hello(1, 3, key(3), "carol", &[]);
    net.hello(0, 9, key(9), "root", &[]);
    net.down = true;
    let kline = ClientMsg::Ban(crate::wire::BanReq {
        target: Some("carol".into()),
        ..Default::default()
    });
    net.nodes[0].message(net.now, 9, &kline.encode());
    net.run();
    net.down = false;
    assert_eq!(net.last_error(1, 3), None, "node 1 cannot know yet");
    net.nodes[1].bus_reconnected(net.now);
    net.run();
    assert_eq!(
        net.last_error(1, 3).map(|e| e.0),
        Some(code::BANNED.to_owned())
    );
}

#[test]
fn a_ban_or_a_kick_on_one_node_holds_on_every_node() {
    let oper: chirp_keys::Fingerprint = super::fingerprint(&key(9)).parse().expect("fp");
    let mut net = Net::with(
        2,
        ServerConfig {
            opers: vec![oper],
            ..ServerConfig::default()
        },
    );
    net.hello(0, 1, key(1), "alice", &["#r"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.hello(1, 3, key(3), "carol", &["#r"]);
    assert!(member_here(&net, 1, key(3), "#r"));
    // alice (node 0) owns #r on both nodes.
    assert_eq!(net.nodes[1].role("#r", &key(1)), super::Role::Owner);
    // She bans carol, who is connected to node 1: put out there at once...
    let ban = ClientMsg::Ban(crate::wire::BanReq {
        room: Some("#r".into()),
        target: Some("carol".into()),
        ..Default::default()
    });
    net.nodes[0].message(net.now, 1, &ban.encode());
    net.run();
    assert!(!member_here(&net, 1, key(3), "#r"));
    assert!(
        net.inbox[&(1, 3)]
            .iter()
            .any(|m| matches!(m, ServerMsg::Kicked { banned: true, .. }))
    );
    // ...and refused there when she comes back, through a new session.
    net.nodes[1].disconnected(net.now, 3, "left");
    net.hello(1, 4, key(3), "carol", &["#r"]);
    assert_eq!(
        net.last_error(1, 4).map(|e| e.0),
        Some(code::BANNED.to_owned())
    );
    assert!(!member_here(&net, 1, key(3), "#r"));
    // bob (node 1) sees the ban as an event of the room, stored once.
    assert!(
        net.inbox[&(1, 2)]
            .iter()
            .any(|m| matches!(m, ServerMsg::Mod(e) if e.action == "ban"))
    );
    assert_eq!(net.db.records.iter().filter(|r| r.conv == "#r").count(), 1);
    // A kick from node 0 of a member connected to node 1.
    let kick = ClientMsg::Kick {
        room: "#r".into(),
        nick: "bob".into(),
        reason: Some("enough".into()),
    };
    net.nodes[0].message(net.now, 1, &kick.encode());
    net.run();
    assert!(!member_here(&net, 1, key(2), "#r"));
    assert!(net.inbox[&(1, 2)].contains(&ServerMsg::Kicked {
        room: "#r".into(),
        by: "alice".into(),
        reason: Some("enough".into()),
        banned: false,
    }));
    // A server-wide ban by an operator on node 0 closes the key's session on node 1 and
    // refuses it on connect there.
    net.hello(0, 9, key(9), "root", &[]);
    let kline = ClientMsg::Ban(crate::wire::BanReq {
        target: Some("bob".into()),
        ..Default::default()
    });
    net.nodes[0].message(net.now, 9, &kline.encode());
    net.run();
    assert_eq!(
        net.last_error(1, 2).map(|e| e.0),
        Some(code::BANNED.to_owned())
    );
    net.nodes[1].connected(net.now, 5, IP, key(2));
    net.run();
    assert_eq!(
        net.last_error(1, 5).map(|e| e.0),
        Some(code::BANNED.to_owned())
    );
}

#[test]
fn a_node_that_shuts_down_says_goodbye_and_its_members_quit_at_once() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.tick(1000);
    net.nodes[1].shutdown(net.now, "server shutting down");
    net.run();
    // No waiting for the heartbeat timeout: the goodbye is enough.
    net.tick(300);
    let quit = net.presence(0, 1).into_iter().any(|p| {
        matches!(p, Presence::Quit { nick, reason } if nick == "bob" && reason == "server shutting down")
    });
    assert!(quit, "{:?}", net.presence(0, 1));
    assert_eq!(net.nodes[0].cluster_peers(), Some(("n0", 0)));
}

#[test]
fn a_bus_message_with_text_a_client_could_not_send_is_dropped() {
    let mut net = Net::new(1);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    let bad = Bus::Msg {
        conv: "#r".into(),
        id: 1,
        ts: 0,
        from: key(2),
        nick: "eve".into(),
        to: None,
        to_nick: None,
        kind: 0,
        text: "\u{1b}[2Jgone".into(),
        cref: None,
        target: None,
        count: None,
    };
    net.nodes[0].bus(net.now, &bad.encode());
    net.run();
    assert!(net.shown(0, 1).is_empty());
    assert_eq!(net.nodes[0].bus_dropped(), 1);
}

/// Nick expiry across nodes: a node that has not seen a nick's owner for the expiry period
/// cannot release the nick while another node sees the owner (the store has the later time),
/// and a claim relying on that release fails with a clear error; once the owner stays away
/// from every node, the nick is released everywhere and can be claimed.
#[test]
fn an_expired_nick_is_released_only_when_no_node_has_seen_its_owner() {
    let config = ServerConfig {
        nick_expiry_ms: Some(30 * DAY_MS),
        ..ServerConfig::default()
    };
    let mut net = Net::with(2, config);
    // bob claims the nick on node 0 and leaves; he comes back on node 1 and stays.
    net.hello(0, 1, key(1), "bob", &["#r"]);
    net.nodes[0].disconnected(net.now, 1, "left");
    net.run();
    net.tick(1000);
    net.hello(1, 2, key(1), "bob", &["#r"]);
    assert_eq!(net.welcomed(1, 2).as_deref(), Some("bob"));
    // 31 days pass a day at a time: node 1 records hourly that bob is still there.
    for _ in 0..31 {
        net.tick(DAY_MS);
    }
    // Node 0 has aged bob's binding out by its own clock; the store kept it, and node 0
    // knows again that the nick is bob's: a claim there is refused at once.
    assert_eq!(net.db.holder("bob"), Some(key(1)));
    net.hello(0, 3, key(3), "bob", &["#r"]);
    assert_eq!(net.welcomed(0, 3), None);
    assert_eq!(
        net.last_error(0, 3).map(|e| e.0).as_deref(),
        Some(code::NICK_TAKEN)
    );
    // bob leaves node 1 too. Node 0 saw him last a month ago; node 1 just now.
    net.nodes[1].disconnected(net.now, 2, "left");
    net.run();
    // A claim on node 0 after its own (stale) period but before bob's: node 0 takes the nick
    // to be free, welcomes the claim, and the store refuses it: the claimer is told why.
    net.now += 30 * DAY_MS - 1000;
    net.hello(0, 4, key(4), "bob", &["#r"]);
    assert_eq!(net.welcomed(0, 4).as_deref(), Some("bob"));
    let (code, message) = net.last_error(0, 4).expect("told");
    assert_eq!(code, code::NICK_TAKEN);
    assert!(message.contains("still in use by its owner"), "{message}");
    assert_eq!(net.db.holder("bob"), Some(key(1)));
    // A full period after bob left every node: released by the nodes as they age it out,
    // and forgotten by all of them: a new key claims it on node 1, and node 0 knows.
    net.tick(2000);
    assert_eq!(net.db.holder("bob"), None);
    net.hello(1, 5, key(5), "bob", &["#r"]);
    assert_eq!(net.welcomed(1, 5).as_deref(), Some("bob"));
    assert_eq!(net.db.holder("bob"), Some(key(5)));
    // bob's key comes back on node 0: the nick is key 5's now, and node 0 knows it.
    net.hello(0, 6, key(1), "bob", &["#r"]);
    assert_eq!(net.welcomed(0, 6), None);
    assert_eq!(
        net.last_error(0, 6).map(|e| e.0).as_deref(),
        Some(code::NICK_TAKEN)
    );
}

/// The owner of a nick comes back on one node just as another releases it as expired: the
/// node where the owner is binds it again.
#[test]
fn a_nick_released_elsewhere_while_its_owner_is_back_is_bound_again() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "bob", &["#r"]);
    // Node 1 stands for a node whose release went through just before bob reconnected to
    // node 0: the store forgets the binding, and node 1 says so on the bus.
    net.db.nicks.clear();
    net.db.seen.clear();
    let m = Bus::Nick {
        key: key(1),
        nick: None,
        old: None,
        rooms: Vec::new(),
    };
    net.bus.push_back((1, Subject::Nicks, m.encode()));
    net.run();
    assert_eq!(net.db.holder("bob"), Some(key(1)));
    // And a new key's claim of it on node 1 is refused.
    net.hello(1, 2, key(2), "bob", &["#r"]);
    assert_eq!(
        net.last_error(1, 2).map(|e| e.0).as_deref(),
        Some(code::NICK_TAKEN)
    );
}

/// Own lines as the reference client shows them (no own echo: from their `ack`s), one by one.
/// Node 1 stores bob's line (id 5) but hears of the commit only after node 0's next message
/// (id 6) has shown a gap: ids 3 and 4, which the bus lost, are being read back for bob, and
/// the read includes his own line. Its `ack` must come in its place in that catch-up: sent at
/// once, it would overtake 3 and 4, and the client, which drops anything at or below the last
/// id it showed, would never show them.
#[test]
fn a_line_stored_here_that_a_gap_read_covers_is_acknowledged_in_its_place() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello_quiet(1, 2, key(2), "bob", 20, &[("#r", None)]);
    net.say(0, 1, 1, "#r", "m1");
    net.say(0, 1, 2, "#r", "m2");
    net.drop_msgs = 2;
    net.say(0, 1, 3, "#r", "m3");
    net.say(0, 1, 4, "#r", "m4");
    net.hold.insert((1, Hold::Commits));
    net.hold.insert((1, Hold::Reads));
    net.say(1, 2, 1, "#r", "b5");
    assert_eq!(net.db.last["#r"], 5);
    net.say(0, 1, 5, "#r", "m6");
    net.release(1, Hold::Commits);
    net.release(1, Hold::Reads);
    let want: Vec<(u64, String)> = ["m1", "m2", "m3", "m4", "b5", "m6"]
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u64 + 1, (*t).to_owned()))
        .collect();
    assert_eq!(net.client_view(1, 2, "#r", &[(1, "b5")]), want);
    assert_eq!(net.shown(0, 1), want);
}

/// A node dies after storing ann's two lines (ids 4 and 5) and before anyone heard of them,
/// and the bus lost bob's line before them (id 3). ann's client fails over to node 1, resumes
/// after id 2 and resends both lines: they are stored already, and their `ack`s come in their
/// place in her catch-up, after id 3 (sent at once, they would overtake it for good). Node 1
/// learns from the store that ids up to 5 exist: bob, on node 1, is shown ann's lines too.
#[test]
fn lines_a_dead_node_stored_are_acknowledged_in_their_place_after_failover() {
    // No replay cache: a catch-up reads everything from the store (and waits for it).
    let config = ServerConfig {
        replay_cache: 0,
        ..ServerConfig::default()
    };
    let mut net = Net::with(2, config);
    net.hello_quiet(0, 1, key(1), "ann", 10, &[("#r", None)]);
    net.hello(1, 2, key(2), "bob", &["#r"]);
    net.say(1, 2, 1, "#r", "m1");
    net.say(1, 2, 2, "#r", "m2");
    net.drop_msgs = 1;
    net.say(1, 2, 3, "#r", "m3");
    // Node 0 stores ann's lines and is killed before it hears of the commit.
    net.hold.insert((0, Hold::Commits));
    net.say(0, 1, 1, "#r", "a4");
    net.say(0, 1, 2, "#r", "a5");
    assert_eq!(net.db.last["#r"], 5);
    net.dead[0] = true;
    assert_eq!(net.client_view(0, 1, "#r", &[]), numbered(2));
    // ann on node 1, with her catch-up's reads slow.
    net.hold.insert((1, Hold::Reads));
    net.hello_quiet(1, 3, key(1), "ann", 10, &[("#r", Some(2))]);
    net.say(1, 3, 1, "#r", "a4");
    net.say(1, 3, 2, "#r", "a5");
    net.release(1, Hold::Reads);
    let said = [(1, "a4"), (2, "a5")];
    let want = vec![
        (3, "m3".to_owned()),
        (4, "a4".to_owned()),
        (5, "a5".to_owned()),
    ];
    assert_eq!(net.client_view(1, 3, "#r", &said), want);
    // Each line acknowledged (once in place; a repeat is allowed and ignored).
    for c in [1, 2] {
        assert!(
            net.inbox[&(1, 3)]
                .iter()
                .any(|m| matches!(m, ServerMsg::Ack { c: x, .. } if *x == c)),
            "ack {c}"
        );
    }
    let all: Vec<(u64, String)> = ["m1", "m2", "m3", "a4", "a5"]
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u64 + 1, (*t).to_owned()))
        .collect();
    assert_eq!(net.shown(1, 2), all);
}

/// bob resumes on a node where nobody is in the room yet: the node follows the room and
/// syncs it, and messages arriving on the bus before the sync's answer wait in its backlog.
/// They come to bob in his catch-up, after the ones he missed before them, not before it.
#[test]
fn a_resume_waiting_for_its_sync_gets_the_backlog_after_what_it_missed() {
    let mut net = Net::new(2);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    for (c, t) in [(1, "m1"), (2, "m2"), (3, "m3")] {
        net.say(0, 1, c, "#r", t);
    }
    net.hold.insert((1, Hold::Syncs));
    net.hello_quiet(1, 2, key(2), "bob", 20, &[("#r", Some(1))]);
    net.say(0, 1, 4, "#r", "m4");
    net.say(0, 1, 5, "#r", "m5");
    net.release(1, Hold::Syncs);
    let want: Vec<(u64, String)> = numbered(5).split_off(1);
    assert_eq!(net.client_view(1, 2, "#r", &[]), want);
}

/// One step of [`every_member_sees_every_message_once_in_order_whatever_the_timing`].
#[derive(Debug, Clone)]
enum Step {
    /// Client `i` says its next line.
    Say(usize),
    /// Answers of a kind to a node start waiting, or are handed over.
    Hold(usize, Hold),
    Release(usize, Hold),
    /// The bus loses the next message publication.
    DropNext,
    /// A node dies (the first such step only); its client fails over to the spare node, resumes
    /// after the last id it showed and resends its lines not acknowledged.
    Kill(usize),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let hold = prop_oneof![Just(Hold::Commits), Just(Hold::Reads), Just(Hold::Syncs)];
    prop_oneof![
        6 => (0..3usize).prop_map(Step::Say),
        2 => (0..4usize, hold.clone()).prop_map(|(n, h)| Step::Hold(n, h)),
        2 => (0..4usize, hold).prop_map(|(n, h)| Step::Release(n, h)),
        1 => Just(Step::DropNext),
        1 => (0..3usize).prop_map(Step::Kill),
    ]
}

/// A member as the reference client sees the room: its sessions (node, id) in order, and the
/// lines it said (`c`, text).
struct Member {
    key: Key,
    sessions: Vec<(usize, SessionId)>,
    said: Vec<(u64, String)>,
}

impl Member {
    /// What its client showed in `room` over all its sessions, as the reference client shows
    /// it: messages, and its own lines rebuilt from their `ack`s (no own echo), with the
    /// client's duplicate check (a message at or below the last id shown is dropped, and the
    /// check carries over a reconnect as the client's last ids do; a repeated `ack` is
    /// ignored). `(id, text)` in the order shown, and the lines acknowledged.
    fn view(&self, net: &Net, room: &str) -> (Vec<(u64, String)>, HashSet<u64>) {
        let mut last = 0;
        let mut acked = HashSet::new();
        let mut out = Vec::new();
        for s in &self.sessions {
            for m in net.inbox.get(s).into_iter().flatten() {
                let (id, text) = match m {
                    ServerMsg::Msg(m) if !m.history && m.conv == room => (m.id, m.text.clone()),
                    ServerMsg::Ack { c, conv, id, .. } if conv == room && acked.insert(*c) => {
                        let said = self.said.iter().find(|s| s.0 == *c).expect("own line");
                        (*id, said.1.clone())
                    }
                    _ => continue,
                };
                if id > last {
                    last = id;
                    out.push((id, text));
                }
            }
        }
        (out, acked)
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Three nodes with a member each (no own echo, as the reference client) and a spare node;
    /// commits, replay reads and syncs answered late and in any interleaving, bus messages
    /// lost, a node killed with commits it never heard of and its member failing over: every
    /// member is shown every stored message once, in id order, with no hole, and every line
    /// is stored once and acknowledged.
    #[test]
    fn every_member_sees_every_message_once_in_order_whatever_the_timing(
        steps in proptest::collection::vec(step(), 1..60),
        small_cache in proptest::bool::ANY,
    ) {
        let config = ServerConfig {
            replay_cache: if small_cache { 2 } else { 256 },
            // Flood control is not what this is about.
            burst: 1000,
            ..ServerConfig::default()
        };
        let mut net = Net::with(4, config);
        let mut members: Vec<Member> = (0..3)
            .map(|i| Member {
                key: key(i as u8 + 1),
                sessions: vec![(i, i as SessionId + 1)],
                said: Vec::new(),
            })
            .collect();
        for (i, m) in members.iter().enumerate() {
            net.hello_quiet(i, i as SessionId + 1, m.key, &format!("u{i}"), 1, &[("#r", None)]);
        }
        let mut next_session = 10;
        let mut killed = false;
        let say = |net: &mut Net, m: &mut Member| {
            let c = m.said.len() as u64 + 1;
            let text = format!("{}-{c}", m.key[0]);
            let (node, sid) = *m.sessions.last().expect("session");
            net.say(node, sid, c, "#r", &text);
            m.said.push((c, text));
        };
        // Everyone has shown something before anything can fail (a resume needs a last id).
        for m in &mut members {
            say(&mut net, m);
        }
        for s in steps {
            match s {
                Step::Say(i) => say(&mut net, &mut members[i]),
                Step::Hold(n, h) => {
                    net.hold.insert((n, h));
                }
                Step::Release(n, h) => net.release(n, h),
                Step::DropNext => net.drop_msgs += 1,
                Step::Kill(n) if !killed => {
                    killed = true;
                    net.dead[n] = true;
                    let m = &mut members[n];
                    let (view, acked) = m.view(&net, "#r");
                    let after = view.last().map(|v| v.0);
                    next_session += 1;
                    m.sessions.push((3, next_session));
                    let nick = format!("u{n}");
                    net.hello_quiet(3, next_session, m.key, &nick, 1, &[("#r", after)]);
                    let resend: Vec<(u64, String)> =
                        m.said.iter().filter(|s| !acked.contains(&s.0)).cloned().collect();
                    for (c, text) in resend {
                        net.say(3, next_session, c, "#r", &text);
                    }
                }
                Step::Kill(_) => {}
            }
        }
        // Everything held is answered, the bus stops losing, and one more line shows any gap
        // the bus left at the end (a lost last message is only found by the next one, or by
        // a bus reconnect's sync).
        for n in 0..4 {
            for h in [Hold::Syncs, Hold::Commits, Hold::Reads] {
                net.release(n, h);
            }
        }
        net.drop_msgs = 0;
        let live = members
            .iter()
            .position(|m| !net.dead[m.sessions.last().expect("session").0])
            .expect("a member is alive");
        say(&mut net, &mut members[live]);
        let stored: Vec<(u64, String)> = net
            .db
            .after("#r", 0, u64::MAX, usize::MAX)
            .into_iter()
            .map(|r| (r.id, r.text))
            .collect();
        let lines: usize = members.iter().map(|m| m.said.len()).sum();
        proptest::prop_assert_eq!(stored.len(), lines, "every line stored once");
        for (i, m) in members.iter().enumerate() {
            let (view, acked) = m.view(&net, "#r");
            proptest::prop_assert_eq!(&view, &stored, "member {} saw", i);
            proptest::prop_assert_eq!(acked.len(), m.said.len(), "member {} acked", i);
        }
    }
}

/// Issue 19: a read marker set through one node reaches the user's sessions on the others
/// (and is stored once), and a session that connects to another node later reads it from the
/// shared store.
#[test]
fn a_read_marker_moved_on_one_node_reaches_the_users_sessions_on_every_node() {
    let mut net = Net::new(3);
    net.hello(0, 1, key(1), "ann", &["#r"]);
    net.hello(1, 2, key(1), "ann", &["#r"]);
    net.hello(1, 3, key(2), "bob", &["#r"]);
    net.say(1, 3, 1, "#r", "m1");
    net.say(1, 3, 2, "#r", "m2");
    net.inbox.clear();
    let read = ClientMsg::Read {
        conv: "#r".into(),
        id: 2,
    };
    net.nodes[0].message(net.now, 1, &read.encode());
    net.run();
    let marker = ServerMsg::Marker {
        conv: "#r".into(),
        id: 2,
    };
    for at in [(0, 1), (1, 2)] {
        let got = net.inbox.get(&at).cloned().unwrap_or_default();
        assert_eq!(got, vec![marker.clone()], "session {at:?}");
    }
    assert!(
        net.inbox.get(&(1, 3)).is_none_or(Vec::is_empty),
        "bob is not told"
    );
    assert_eq!(net.db.markers(&key(1)), vec![("#r".to_owned(), 2)]);
    // A third device, on the third node, starts from the marker.
    net.hello(2, 4, key(1), "ann", &[]);
    let got = net.inbox.get(&(2, 4)).cloned().unwrap_or_default();
    assert!(
        got.contains(&ServerMsg::Markers {
            markers: vec![wire::ReadMarker {
                conv: "#r".into(),
                id: 2
            }]
        }),
        "{got:?}"
    );
}

/// A `sessions` answer as `(node, id, nick)` of each session, and the silent nodes.
type Listed = (Vec<(String, u64, String)>, Vec<String>);

/// The sessions list (`sessions`, decoded) session `id` of `node` was last sent.
fn last_sessions(net: &Net, node: usize, id: SessionId) -> Option<Listed> {
    net.inbox
        .get(&(node, id))?
        .iter()
        .rev()
        .find_map(|m| match m {
            ServerMsg::Sessions { sessions, silent } => Some((
                sessions
                    .iter()
                    .map(|s| (s.node.clone().unwrap_or_default(), s.id, s.nick.clone()))
                    .collect(),
                silent.clone(),
            )),
            _ => None,
        })
}

/// Issue 19: a server operator lists the sessions of every node and disconnects one on
/// another node; a node that does not answer in time is named; a non-operator is refused.
#[test]
fn an_operator_lists_and_kills_sessions_across_nodes() {
    let oper: chirp_keys::Fingerprint = super::fingerprint(&key(9)).parse().expect("fp");
    let mut net = Net::with(
        3,
        ServerConfig {
            opers: vec![oper],
            ..ServerConfig::default()
        },
    );
    // Session 1 on node 0 and session 1 on node 1: ids are each node's own.
    net.hello(0, 1, key(1), "alice", &["#r"]);
    net.hello(1, 1, key(2), "bob", &["#r"]);
    net.hello(2, 3, key(3), "carol", &[]);
    net.hello(0, 9, key(9), "root", &[]);
    // The nodes hear of each other.
    net.tick(1000);
    assert_eq!(net.nodes[0].cluster_peers(), Some(("n0", 2)));

    // alice is no server operator: refused, and nothing is asked of the other nodes.
    let kill = |session, node: Option<&str>, reason: Option<&str>| ClientMsg::Kill {
        session,
        reason: reason.map(str::to_owned),
        node: node.map(str::to_owned),
    };
    net.nodes[0].message(net.now, 1, &ClientMsg::Sessions.encode());
    net.run();
    assert_eq!(
        net.last_error(0, 1).map(|e| e.0),
        Some(code::FORBIDDEN.to_owned())
    );
    assert_eq!(last_sessions(&net, 0, 1), None);
    net.nodes[0].message(net.now, 1, &kill(1, Some("n1"), None).encode());
    net.run();
    assert_eq!(
        net.last_error(0, 1).map(|e| e.0),
        Some(code::FORBIDDEN.to_owned())
    );
    assert_eq!(net.nodes[1].stats().sessions, 1, "bob is still connected");

    // root lists every node's sessions, each named by its node, once all have answered.
    net.nodes[0].message(net.now, 9, &ClientMsg::Sessions.encode());
    net.run();
    let want = vec![
        ("n0".to_owned(), 1, "alice".to_owned()),
        ("n0".to_owned(), 9, "root".to_owned()),
        ("n1".to_owned(), 1, "bob".to_owned()),
        ("n2".to_owned(), 3, "carol".to_owned()),
    ];
    assert_eq!(last_sessions(&net, 0, 9), Some((want.clone(), vec![])));

    // root disconnects bob on node 1 (not alice, session 1 of node 0).
    net.nodes[0].message(net.now, 9, &kill(1, Some("n1"), Some("spam")).encode());
    net.run();
    let (c, m) = net.last_error(1, 1).expect("bob is told");
    assert_eq!(c, code::KILLED);
    assert_eq!(m, "disconnected by server operator root: spam");
    assert_eq!(net.nodes[1].stats().sessions, 0);
    assert_eq!(net.nodes[0].stats().sessions, 2, "alice and root stay");
    assert_eq!(net.last_error(0, 9), None, "done: no error");
    // A session node 1 does not have is an error for root.
    net.nodes[0].message(net.now, 9, &kill(77, Some("n1"), None).encode());
    net.run();
    assert_eq!(
        net.last_error(0, 9),
        Some((
            code::NO_SUCH_NICK.to_owned(),
            "no session 77 on node n1".to_owned()
        ))
    );
    // So is a node the cluster does not have.
    net.nodes[0].message(net.now, 9, &kill(3, Some("n7"), None).encode());
    net.run();
    assert!(
        net.last_error(0, 9)
            .is_some_and(|(c, m)| c == code::NO_SUCH_NICK && m.contains("no node n7")),
        "{:?}",
        net.last_error(0, 9)
    );

    // Node 2 stops answering (not yet timed out as a node): the list waits for it, then
    // comes without it, naming it; a kill there says it did not answer.
    net.dead[2] = true;
    net.nodes[0].message(net.now, 9, &ClientMsg::Sessions.encode());
    net.nodes[0].message(net.now, 9, &kill(3, Some("n2"), None).encode());
    net.run();
    let answers = |net: &Net| {
        net.inbox[&(0, 9)]
            .iter()
            .filter(|m| matches!(m, ServerMsg::Sessions { .. }))
            .count()
    };
    assert_eq!(answers(&net), 1, "still waiting for n2");
    net.tick(wire::CLUSTER_ASK_MS - 1);
    assert_eq!(answers(&net), 1, "still waiting for n2");
    net.tick(1);
    assert_eq!(answers(&net), 2);
    let want = vec![
        ("n0".to_owned(), 1, "alice".to_owned()),
        ("n0".to_owned(), 9, "root".to_owned()),
    ];
    assert_eq!(
        last_sessions(&net, 0, 9),
        Some((want, vec!["n2".to_owned()]))
    );
    assert_eq!(
        net.last_error(0, 9).map(|e| e.0),
        Some(code::NOT_ANSWERING.to_owned())
    );
    assert_eq!(net.nodes[0].poll_timeout().map(|t| t > net.now), Some(true));
}
