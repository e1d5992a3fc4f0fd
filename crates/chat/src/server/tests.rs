//! Core tests with arbitrary keys and virtual time: no sockets, no store (commits are
//! simulated, and can be held back to show that nothing is shown before its commit).

use std::net::Ipv4Addr;

use super::*;

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn key(n: u8) -> Key {
    [n; 32]
}

struct H {
    s: Server,
    now: i64,
    /// Everything sent, per session, decoded.
    inbox: HashMap<SessionId, Vec<ServerMsg>>,
    closed: Vec<SessionId>,
    /// Persist batches not yet committed (when `auto_commit` is off).
    held: Vec<(u64, Vec<Op>)>,
    persisted: Vec<Op>,
    reads: Vec<(SessionId, String, Option<u64>, usize)>,
    auto_commit: bool,
    sends: usize,
}

impl H {
    fn new(config: ServerConfig) -> Self {
        Self::with(config, Loaded::default())
    }

    fn with(config: ServerConfig, loaded: Loaded) -> Self {
        H {
            s: Server::new(config, loaded),
            now: 1_000_000,
            inbox: HashMap::new(),
            closed: Vec::new(),
            held: Vec::new(),
            persisted: Vec::new(),
            reads: Vec::new(),
            auto_commit: true,
            sends: 0,
        }
    }

    fn drain(&mut self) {
        let mut guard = 0;
        while let Some(o) = self.s.poll_output() {
            guard += 1;
            assert!(guard < 1_000_000, "output never ends");
            match o {
                Output::Send { to, data } => {
                    self.sends += 1;
                    let m = ServerMsg::decode(&data).expect("server output decodes");
                    self.inbox.entry(to).or_default().push(m);
                }
                Output::Close { session, .. } => {
                    self.closed.push(session);
                    self.s.disconnected(self.now, session, "closed");
                }
                Output::Persist { token, ops } => {
                    self.persisted.extend(ops.iter().cloned());
                    if self.auto_commit {
                        self.s.committed(self.now, token, true);
                    } else {
                        self.held.push((token, ops));
                    }
                }
                Output::ReadHistory {
                    session,
                    conv,
                    before,
                    limit,
                } => self.reads.push((session, conv, before, limit)),
            }
        }
    }

    fn commit_held(&mut self) {
        for (token, _) in std::mem::take(&mut self.held) {
            self.s.committed(self.now, token, true);
        }
        self.drain();
    }

    fn connect(&mut self, id: SessionId, k: Key) {
        self.s.connected(self.now, id, IP, k);
        self.drain();
    }

    fn send(&mut self, id: SessionId, m: ClientMsg) {
        self.s.message(self.now, id, &m.encode());
        self.drain();
    }

    fn hello(&mut self, id: SessionId, k: Key, nick: &str, rooms: &[&str]) {
        self.connect(id, k);
        let rooms = rooms
            .iter()
            .map(|r| JoinReq {
                room: (*r).into(),
                after: None,
            })
            .collect();
        self.send(
            id,
            ClientMsg::Hello {
                v: wire::VERSION,
                nick: nick.into(),
                client: id,
                rooms,
                dms: vec![],
            },
        );
    }

    fn say(&mut self, id: SessionId, c: u64, room: &str, text: &str) {
        self.send(
            id,
            ClientMsg::Say {
                c,
                room: Some(room.into()),
                to: None,
                text: text.into(),
                action: false,
            },
        );
    }

    fn dm(&mut self, id: SessionId, c: u64, to: &str, text: &str) {
        self.send(
            id,
            ClientMsg::Say {
                c,
                room: None,
                to: Some(to.into()),
                text: text.into(),
                action: false,
            },
        );
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        if self.s.poll_timeout().is_some_and(|t| t <= self.now) {
            self.s.handle_timeout(self.now);
        }
        self.drain();
    }

    fn take(&mut self, id: SessionId) -> Vec<ServerMsg> {
        self.inbox.remove(&id).unwrap_or_default()
    }

    fn msgs(&mut self, id: SessionId) -> Vec<Msg> {
        self.take(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Msg(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn errors(&mut self, id: SessionId) -> Vec<(Option<u64>, String, String)> {
        self.take(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Error { c, code, message } => Some((c, code, message)),
                _ => None,
            })
            .collect()
    }
}

fn texts(m: &[Msg]) -> Vec<(&str, u64, &str, bool)> {
    m.iter()
        .map(|m| (m.from.as_str(), m.id, m.text.as_str(), m.history))
        .collect()
}

#[test]
fn a_nick_belongs_to_the_first_key_and_is_freed_by_a_change() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    assert!(matches!(h.take(1)[0], ServerMsg::Welcome { ref nick, .. } if nick == "alice"));
    // Another key, other case: refused with a clear error, and the session is closed.
    h.hello(2, key(2), "ALICE", &[]);
    let e = h.errors(2);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, code::NICK_TAKEN);
    assert!(e[0].2.contains("belongs to another key"), "{}", e[0].2);
    assert_eq!(h.closed, vec![2]);
    // Still refused while alice is offline: the binding is durable.
    h.s.disconnected(h.now, 1, "left");
    h.hello(3, key(2), "alice", &[]);
    assert_eq!(h.errors(3)[0].1, code::NICK_TAKEN);
    // The owner renames; the old nick is free for anyone.
    h.hello(4, key(1), "alice", &[]);
    h.send(4, ClientMsg::Nick { nick: "al".into() });
    assert!(h.take(4).contains(&ServerMsg::Nick {
        old: "alice".into(),
        new: "al".into()
    }));
    h.hello(5, key(2), "alice", &[]);
    assert!(h.errors(5).is_empty());
    // And "al" is now key 1's: key 2 cannot rename to it.
    h.send(5, ClientMsg::Nick { nick: "Al".into() });
    assert_eq!(h.errors(5)[0].1, code::NICK_TAKEN);
    // Every binding was persisted.
    let binds: Vec<_> = h
        .persisted
        .iter()
        .filter_map(|o| match o {
            Op::SetNick { nick, key, .. } => Some((nick.as_str(), key[0])),
            _ => None,
        })
        .collect();
    assert_eq!(binds, vec![("alice", 1), ("al", 1), ("alice", 2)]);
}

#[test]
fn room_messages_are_shown_and_acknowledged_only_after_commit() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#R"]);
    h.advance(1000);
    h.take(1);
    h.take(2);
    h.auto_commit = false;
    h.say(1, 7, "#r", "hello");
    h.say(1, 8, "#r", "again");
    assert!(
        h.take(1).is_empty() && h.take(2).is_empty(),
        "nothing before the commit"
    );
    assert_eq!(h.held.len(), 2);
    h.commit_held();
    assert_eq!(
        texts(&h.msgs(2)),
        vec![("alice", 1, "hello", false), ("alice", 2, "again", false)]
    );
    let a = h.take(1);
    let acks: Vec<_> = a
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack { c, id, conv, .. } => Some((*c, *id, conv.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![(7, 1, "#r"), (8, 2, "#r")]);
    // The sender sees its own message too (so all its devices agree).
    assert_eq!(
        a.iter().filter(|m| matches!(m, ServerMsg::Msg(_))).count(),
        2
    );
}

#[test]
fn a_failed_commit_is_an_error_and_nobody_sees_the_message() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.take(1);
    h.take(2);
    h.auto_commit = false;
    h.say(1, 1, "#r", "x");
    let (token, _) = h.held.pop().expect("persisted");
    h.s.committed(h.now, token, false);
    h.drain();
    assert!(h.msgs(2).is_empty());
    assert_eq!(
        h.errors(1),
        vec![(
            Some(1),
            code::STORE.to_owned(),
            "the server could not store this message; it was not delivered".to_owned()
        )]
    );
}

#[test]
fn multi_device_gets_everything_on_both_including_its_own_messages() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(1), "alice", &[]);
    h.hello(3, key(2), "bob", &["#r"]);
    // Device 2 learns it is in #r.
    assert!(
        h.take(2)
            .iter()
            .any(|m| matches!(m, ServerMsg::Joined { room, .. } if room == "#r"))
    );
    h.take(1);
    h.say(1, 1, "#r", "from phone");
    h.say(3, 1, "#r", "from bob");
    h.dm(3, 2, "alice", "psst");
    h.dm(2, 1, "bob", "reply");
    let want = vec![
        ("alice", 1, "from phone", false),
        ("bob", 2, "from bob", false),
        ("bob", 1, "psst", false),
        ("alice", 2, "reply", false),
    ];
    assert_eq!(texts(&h.msgs(1)), want);
    assert_eq!(texts(&h.msgs(2)), want);
    assert_eq!(texts(&h.msgs(3)), want);
    // Joining from one device joins the user: both devices hear of it.
    h.send(
        2,
        ClientMsg::Join(JoinReq {
            room: "#s".into(),
            after: None,
        }),
    );
    for s in [1, 2] {
        assert!(
            h.take(s)
                .iter()
                .any(|m| matches!(m, ServerMsg::Joined { room, .. } if room == "#s")),
            "session {s}"
        );
    }
    // One device leaving is not a quit; the last one is.
    h.s.disconnected(h.now, 1, "left");
    h.advance(1000);
    assert!(h.take(3).is_empty());
    h.s.disconnected(h.now, 2, "timed out");
    h.advance(1000);
    assert_eq!(
        h.take(3),
        vec![ServerMsg::Presence {
            room: "#r".into(),
            events: vec![Presence::Quit {
                nick: "alice".into(),
                reason: "timed out".into()
            }]
        }]
    );
}

#[test]
fn dms_to_offline_users_are_stored_and_delivered_on_connect() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.s.disconnected(h.now, 2, "left");
    h.dm(1, 1, "bob", "one");
    h.dm(1, 2, "BOB", "two");
    h.dm(1, 3, "carol", "nobody");
    assert_eq!(h.errors(1)[0].1, code::NO_SUCH_NICK);
    h.take(1);
    h.hello(3, key(2), "bob", &[]);
    let got = h.msgs(3);
    assert_eq!(
        texts(&got),
        vec![("alice", 1, "one", false), ("alice", 2, "two", false)]
    );
    assert_eq!(got[0].to.as_deref(), Some("bob"));
    assert_eq!(got[0].room, None);
    assert!(h.persisted.contains(&Op::DmCursor {
        key: key(2),
        conv: dm_conv(&key(1), &key(2)),
        upto: 2
    }));
    // Delivered once only.
    h.s.disconnected(h.now, 3, "left");
    h.hello(4, key(2), "bob", &[]);
    assert!(h.msgs(4).is_empty());
}

#[test]
fn undelivered_dms_survive_a_restart_through_the_loaded_state() {
    let conv = dm_conv(&key(1), &key(2));
    let rec = Record {
        conv: conv.clone(),
        id: 4,
        ts_ms: 5,
        from_key: key(1),
        from_nick: "alice".into(),
        to_key: Some(key(2)),
        to_nick: Some("bob".into()),
        kind: 0,
        text: "while you were out".into(),
        client_ref: None,
    };
    let loaded = Loaded {
        nicks: vec![("alice".into(), key(1)), ("bob".into(), key(2))],
        last_ids: vec![(conv.clone(), 4)],
        recent: vec![rec.clone()],
        undelivered: vec![rec],
        ..Loaded::default()
    };
    let mut h = H::with(ServerConfig::default(), loaded);
    h.hello(1, key(2), "bob", &[]);
    assert_eq!(
        texts(&h.msgs(1)),
        vec![("alice", 4, "while you were out", false)]
    );
    // Ids continue after the loaded high-water mark.
    h.hello(2, key(1), "alice", &[]);
    h.dm(2, 1, "bob", "next");
    assert_eq!(h.msgs(1)[0].id, 5);
}

#[test]
fn flood_control_refuses_with_an_error_then_refills() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.take(1);
    for c in 1..=12 {
        h.say(1, c, "#r", "spam");
    }
    let errs = h.errors(1);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0].0, Some(11));
    assert_eq!(errs[0].1, code::FLOOD);
    assert!(
        errs[0].2.contains("at most 5 requests per second"),
        "{}",
        errs[0].2
    );
    assert_eq!(h.s.stats().messages, 10);
    // 5/s: after 200 ms exactly one more fits.
    h.advance(200);
    h.say(1, 13, "#r", "ok");
    h.say(1, 14, "#r", "too soon");
    let errs = h.errors(1);
    assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![Some(14)]);
}

#[test]
fn limits_and_bad_names_get_clear_errors() {
    let config = ServerConfig {
        max_rooms_per_user: 2,
        max_sessions_per_ip: 3,
        max_text: 100,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "al\u{202E}ice", &[]);
    let e = h.errors(1);
    assert_eq!(e[0].1, code::BAD_NAME);
    assert!(e[0].2.contains("bidirectional"), "{}", e[0].2);
    h.hello(2, key(1), "alice", &["#a", "#b", "#c", "nohash"]);
    let e = h.errors(2);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].1, code::TOO_MANY_ROOMS);
    assert!(e[0].2.contains("at most 2"), "{}", e[0].2);
    assert_eq!(e[1].1, code::BAD_NAME);
    assert!(e[1].2.contains("start with '#'"), "{}", e[1].2);
    h.say(2, 1, "#a", &"x".repeat(101));
    let e = h.errors(2);
    assert_eq!(e[0].1, code::BAD_TEXT);
    assert!(e[0].2.contains("101 bytes (at most 100)"), "{}", e[0].2);
    h.say(2, 2, "#zzz", "x");
    assert_eq!(h.errors(2)[0].1, code::NOT_IN_ROOM);
    h.send(
        2,
        ClientMsg::Topic {
            room: "#a".into(),
            topic: "bad\u{7}".into(),
        },
    );
    assert_eq!(h.errors(2)[0].1, code::BAD_NAME);
    // Sessions per IP: 2 open (1 was closed for its bad nick), 3 more: the third is refused.
    h.connect(3, key(3));
    h.connect(4, key(4));
    h.connect(5, key(5));
    assert_eq!(h.errors(5)[0].1, code::TOO_MANY_SESSIONS);
    assert!(h.closed.contains(&5));
    // Garbage is answered, not fatal.
    h.s.message(h.now, 2, b"\xff{not json");
    h.drain();
    assert_eq!(h.errors(2)[0].1, code::BAD_REQUEST);
    assert_eq!(h.s.stats().malformed, 1);
}

#[test]
fn presence_is_batched_so_mass_joins_cost_linear_messages() {
    let mut h = H::new(ServerConfig {
        max_sessions_per_ip: 1000,
        ..ServerConfig::default()
    });
    let n = 200u64;
    for i in 0..n {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.to_le_bytes());
        h.hello(i + 1, k, &format!("u{i}"), &["#big"]);
    }
    let before = h.sends;
    h.advance(1000);
    // One presence message per member for the whole burst.
    assert_eq!(h.sends - before, n as usize);
    let last = h.take(1).into_iter().last().expect("presence");
    let ServerMsg::Presence { events, .. } = last else {
        panic!("{last:?}")
    };
    assert_eq!(events.len(), n as usize);
    // Everything together, per session: welcome, joined, the (empty) history's end, one
    // presence batch. Linear, not n².
    assert_eq!(h.sends, 4 * n as usize, "{} sends", h.sends);
}

#[test]
fn join_replays_recent_history_and_resume_sends_only_what_was_missed() {
    let config = ServerConfig {
        history_on_join: 3,
        replay_cache: 5,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=4 {
        h.say(1, c, "#r", &format!("m{c}"));
    }
    h.hello(2, key(2), "bob", &["#r"]);
    let all = h.take(2);
    let got: Vec<Msg> = all
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts(&got),
        vec![
            ("alice", 2, "m2", true),
            ("alice", 3, "m3", true),
            ("alice", 4, "m4", true)
        ]
    );
    // The first join's replay ends like a history page, after its messages.
    assert_eq!(
        all.last(),
        Some(&ServerMsg::HistoryEnd {
            conv: "#r".into(),
            count: 3
        })
    );
    // Bob drops, misses m5, m6, reconnects with after = 4.
    h.s.disconnected(h.now, 2, "timed out");
    h.advance(1000);
    h.say(1, 5, "#r", "m5");
    h.say(1, 6, "#r", "m6");
    h.connect(3, key(2));
    h.send(
        3,
        ClientMsg::Hello {
            v: 1,
            nick: "bob".into(),
            client: 9,
            rooms: vec![JoinReq {
                room: "#r".into(),
                after: Some(4),
            }],
            dms: vec![],
        },
    );
    let all = h.take(3);
    // A resume's messages are live ones: no history end.
    assert!(
        !all.iter()
            .any(|m| matches!(m, ServerMsg::HistoryEnd { .. })),
        "{all:?}"
    );
    let got: Vec<Msg> = all
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        texts(&got),
        vec![("alice", 5, "m5", false), ("alice", 6, "m6", false)]
    );
    // A gap longer than the cache is reported rather than hidden.
    h.s.disconnected(h.now, 3, "left");
    for c in 7..=14 {
        h.advance(1000);
        h.say(1, c, "#r", "more");
    }
    h.connect(4, key(2));
    h.send(
        4,
        ClientMsg::Hello {
            v: 1,
            nick: "bob".into(),
            client: 9,
            rooms: vec![JoinReq {
                room: "#r".into(),
                after: Some(6),
            }],
            dms: vec![],
        },
    );
    let all = h.take(4);
    assert!(
        all.iter()
            .any(|m| matches!(m, ServerMsg::Error { code, .. } if code == code::GAP))
    );
    let ids: Vec<u64> = all
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![10, 11, 12, 13, 14]);
}

#[test]
fn history_pages_come_from_the_cache_or_the_store() {
    let config = ServerConfig {
        replay_cache: 5,
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=8 {
        h.advance(1000);
        h.say(1, c, "#r", "x");
    }
    h.take(1);
    h.send(
        1,
        ClientMsg::History {
            room: Some("#r".into()),
            with: None,
            before: Some(8),
            limit: 2,
        },
    );
    let page = h.take(1);
    assert_eq!(page.len(), 3);
    assert!(matches!(&page[0], ServerMsg::Msg(m) if m.id == 6 && m.history));
    assert_eq!(
        page[2],
        ServerMsg::HistoryEnd {
            conv: "#r".into(),
            count: 2
        }
    );
    assert!(h.reads.is_empty());
    // Older than the cache holds: the store is asked.
    h.advance(1000);
    h.send(
        1,
        ClientMsg::History {
            room: Some("#r".into()),
            with: None,
            before: Some(4),
            limit: 50,
        },
    );
    assert_eq!(h.reads, vec![(1, "#r".to_owned(), Some(4), 50)]);
    // Not a member: refused.
    h.hello(2, key(2), "bob", &[]);
    h.send(
        2,
        ClientMsg::History {
            room: Some("#r".into()),
            with: None,
            before: None,
            limit: 5,
        },
    );
    assert_eq!(h.errors(2)[0].1, code::NOT_IN_ROOM);
}

#[test]
fn a_resent_message_is_stored_once_and_acknowledged_again() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.say(1, 1, "#r", "once");
    h.take(1);
    // The client reconnects (same client instance id 1) and resends c = 1.
    h.s.disconnected(h.now, 1, "timed out");
    h.connect(3, key(1));
    h.send(
        3,
        ClientMsg::Hello {
            v: 1,
            nick: "alice".into(),
            client: 1,
            rooms: vec![],
            dms: vec![],
        },
    );
    h.take(3);
    h.say(3, 1, "#r", "once");
    assert!(matches!(
        h.take(3)[..],
        [ServerMsg::Ack { c: 1, id: 1, .. }]
    ));
    assert_eq!(h.msgs(2).len(), 1);
    assert_eq!(h.s.stats().messages, 1);
}

#[test]
fn part_topic_list_and_who() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r", "#s"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.advance(1000);
    h.take(1);
    h.take(2);
    h.send(
        1,
        ClientMsg::Topic {
            room: "#r".into(),
            topic: "Rust talk".into(),
        },
    );
    let t = ServerMsg::Topic {
        room: "#r".into(),
        topic: "Rust talk".into(),
        by: "alice".into(),
    };
    assert_eq!(h.take(2), vec![t.clone()]);
    h.send(2, ClientMsg::Who { room: "#r".into() });
    assert_eq!(
        h.take(2),
        vec![ServerMsg::Who {
            room: "#r".into(),
            members: vec!["alice".into(), "bob".into()],
            more: 0
        }]
    );
    h.send(2, ClientMsg::List);
    let ServerMsg::List { rooms } = &h.take(2)[0] else {
        panic!()
    };
    assert_eq!(
        rooms[0],
        RoomInfo {
            room: "#r".into(),
            members: 2,
            topic: "Rust talk".into()
        }
    );
    assert_eq!(rooms.len(), 2);
    h.take(1);
    h.send(1, ClientMsg::Part { room: "#r".into() });
    assert!(h.take(1).contains(&ServerMsg::Parted { room: "#r".into() }));
    h.advance(1000);
    assert_eq!(
        h.take(2),
        vec![ServerMsg::Presence {
            room: "#r".into(),
            events: vec![Presence::Part {
                nick: "alice".into()
            }]
        }]
    );
    h.send(1, ClientMsg::Part { room: "#r".into() });
    assert_eq!(h.errors(1)[0].1, code::NOT_IN_ROOM);
}

#[test]
fn requests_before_hello_are_refused_and_bad_versions_closed() {
    let mut h = H::new(ServerConfig::default());
    h.connect(1, key(1));
    h.say(1, 1, "#r", "x");
    assert_eq!(h.errors(1)[0].1, code::STATE);
    h.send(
        1,
        ClientMsg::Hello {
            v: 99,
            nick: "a".into(),
            client: 1,
            rooms: vec![],
            dms: vec![],
        },
    );
    assert_eq!(h.errors(1)[0].1, code::VERSION);
    assert_eq!(h.closed, vec![1]);
}

#[test]
fn shutdown_says_bye_to_every_session() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.take(1);
    h.take(2);
    h.s.shutdown("server shutting down");
    h.drain();
    for s in [1, 2] {
        assert_eq!(
            h.take(s),
            vec![ServerMsg::Bye {
                reason: "server shutting down".into()
            }]
        );
    }
}

#[test]
fn messages_past_retention_age_are_not_replayed_from_memory() {
    let config = ServerConfig {
        max_age_ms: Some(10_000),
        ..ServerConfig::default()
    };
    let mut h = H::new(config);
    h.hello(1, key(1), "alice", &["#r"]);
    h.say(1, 1, "#r", "old");
    h.advance(8_000);
    h.say(1, 2, "#r", "new");
    h.advance(4_000);
    h.hello(2, key(2), "bob", &["#r"]);
    assert_eq!(texts(&h.msgs(2)), vec![("alice", 2, "new", true)]);
}
