//! Nodes of a cluster, simulated: several cores, one shared store (ids given at commit, as the
//! database does), and a bus that delivers each publication to the nodes following its
//! subject, in order, and that a test can make drop messages or go down. Everything a node
//! asks of the store is answered from the shared records.

use super::*;
use crate::bus::Bus;

/// One shared database.
#[derive(Default)]
struct Db {
    records: Vec<Record>,
    last: HashMap<String, u64>,
    /// fold → (nick, key), and each owner's last-seen time.
    nicks: HashMap<String, (String, Key)>,
    seen: HashMap<Key, i64>,
}

impl Db {
    fn commit(&mut self, ops: &[Op]) -> Vec<Outcome> {
        ops.iter()
            .map(|op| match op {
                Op::Message(m) => {
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
                _ => Outcome::Done,
            })
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

struct Net {
    nodes: Vec<Server>,
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
                    self.output(i, o);
                }
            }
            if let Some((from, subject, data)) = self.bus.pop_front() {
                any = true;
                for i in 0..self.nodes.len() {
                    // NATS delivers to the publisher too, when it follows the subject.
                    if self.follows[i].contains(&subject) {
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
                let out = self.db.commit(&ops);
                n.committed(now, token, Ok(out));
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
            Output::Sync { conv } => {
                let last = self.db.last.get(&conv).copied().unwrap_or(0);
                n.synced(now, &conv, Ok(last));
            }
        }
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
