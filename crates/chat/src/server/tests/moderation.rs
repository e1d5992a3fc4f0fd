//! Moderation (issue 19): room roles bound to keys, every operator command and its forbidden
//! cases, modes, bans (by key, by address range, server-wide), server operators, the rates of
//! joins, nick changes and new rooms, and what survives a restart.

use super::*;
use crate::wire::{BanReq, RoomNick};

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, n))
}

/// A config with flood control out of the way (these tests send many requests at once).
fn config() -> ServerConfig {
    ServerConfig {
        burst: 1000,
        per_sec: 1000,
        ..ServerConfig::default()
    }
}

fn rn(room: &str, nick: &str) -> RoomNick {
    RoomNick {
        room: room.into(),
        nick: nick.into(),
    }
}

fn join(room: &str, key: Option<&str>) -> ClientMsg {
    ClientMsg::Join(JoinReq {
        room: room.into(),
        after: None,
        key: key.map(str::to_owned),
    })
}

impl H {
    /// `hello` of session `id` (key `k`, at address `from`), joining `rooms`.
    fn hello_at(&mut self, id: SessionId, from: IpAddr, k: Key, nick: &str, rooms: &[&str]) {
        self.s.connected(self.now, id, from, k);
        self.drain();
        self.send(id, hello_msg(id, nick, rooms));
    }

    /// The codes of the errors session `id` was sent (and drops the rest of its inbox).
    fn codes(&mut self, id: SessionId) -> Vec<String> {
        self.errors(id)
            .into_iter()
            .map(|(_, code, _)| code)
            .collect()
    }

    /// The moderation events session `id` was sent: (action, target, arg, by).
    fn mods(&mut self, id: SessionId) -> Vec<(String, Option<String>, Option<String>, String)> {
        self.take(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Mod(e) => Some((e.action, e.target, e.arg, e.by)),
                _ => None,
            })
            .collect()
    }

    /// Whether the last `say` of session `id` (as `c`) was stored and acknowledged.
    fn said(&mut self, id: SessionId, c: u64, room: &str) -> Result<(), String> {
        self.say(id, c, room, "hello");
        let out = self.take(id);
        if out
            .iter()
            .any(|m| matches!(m, ServerMsg::Ack { c: a, .. } if *a == c))
            || out
                .iter()
                .any(|m| matches!(m, ServerMsg::Msg(m) if m.c == Some(c)))
        {
            return Ok(());
        }
        out.into_iter()
            .find_map(|m| match m {
                ServerMsg::Error { code, .. } => Some(Err(code)),
                _ => None,
            })
            .unwrap_or_else(|| Err("no answer".into()))
    }

    /// The stored moderation entries, as the store would load them.
    fn stored_mod(&self) -> Vec<chirp_store::ModEntry> {
        let mut entries: Vec<chirp_store::ModEntry> = Vec::new();
        for op in &self.persisted {
            match op {
                Op::SetMod(e) => {
                    entries.retain(|x| {
                        (&x.scope, &x.kind, &x.subject) != (&e.scope, &e.kind, &e.subject)
                    });
                    entries.push(e.clone());
                }
                Op::ClearMod {
                    scope,
                    kind,
                    subject,
                } => entries.retain(|x| (&x.scope, &x.kind, &x.subject) != (scope, kind, subject)),
                _ => {}
            }
        }
        entries
    }

    fn in_room(&self, k: &Key, room: &str) -> bool {
        self.s.in_room(k, room)
    }
}

/// alice (1) creates #r and owns it; bob (2) and carol (3) join it.
fn room_of_three() -> H {
    let mut h = H::new(config());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.hello(3, key(3), "carol", &["#r"]);
    for id in 1..=3 {
        h.take(id);
    }
    h
}

#[test]
fn the_creator_owns_the_room_and_events_are_stored_in_its_history() {
    let mut h = H::new(config());
    h.hello(1, key(1), "alice", &["#r"]);
    let out = h.take(1);
    assert!(
        out.contains(&ServerMsg::Modes {
            room: "#r".into(),
            modes: String::new(),
            role: "owner".into(),
        }),
        "{out:?}"
    );
    // Stored as an entry; a creation is no event (the room's first id is its first message's).
    let entries = h.stored_mod();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].scope.as_str(), entries[0].kind.as_str()),
        ("#r", "owner")
    );
    assert!(!h.stored.iter().any(|r| r.conv == "#r"));
    h.hello(2, key(2), "bob", &["#r"]);
    assert_eq!(h.s.role("#r", &key(2)), Role::Member);
    // An action is an event: a record of the room with an id, shown to every member...
    h.send(1, ClientMsg::Voice(rn("#r", "bob")));
    let ev = h.take(2).into_iter().find_map(|m| match m {
        ServerMsg::Mod(e) => Some(e),
        _ => None,
    });
    let ev = ev.expect("the voice event");
    assert_eq!(
        (
            ev.action.as_str(),
            ev.target.as_deref(),
            ev.by.as_str(),
            ev.history
        ),
        ("voice", Some("bob"), "alice", false)
    );
    let stored: Vec<&Record> = h.stored.iter().filter(|r| r.conv == "#r").collect();
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].id, stored[0].kind), (ev.id, EVENT_KIND));
    // ...and replayed with the history to whoever joins later.
    h.hello(3, key(3), "carol", &["#r"]);
    let out = h.take(3);
    assert!(
        out.iter().any(
            |m| matches!(m, ServerMsg::Mod(e) if e.history && e.action == "voice" && e.id == ev.id)
        ),
        "{out:?}"
    );
    // A room that exists already keeps its owner: a later creator-to-be does not take it.
    for id in 1..=3 {
        h.s.disconnected(h.now, id, "left");
    }
    h.drain();
    h.hello(4, key(4), "dave", &["#r"]);
    assert_eq!(h.s.role("#r", &key(4)), Role::Member);
    assert_eq!(h.s.role("#r", &key(1)), Role::Owner);
}

#[test]
fn only_the_owner_ops_and_deops() {
    let mut h = room_of_three();
    // A member cannot op, not even itself.
    h.send(2, ClientMsg::Op(rn("#r", "bob")));
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    assert_eq!(h.s.role("#r", &key(2)), Role::Member);
    // The owner can.
    h.send(1, ClientMsg::Op(rn("#r", "bob")));
    assert!(h.codes(1).is_empty());
    assert_eq!(h.s.role("#r", &key(2)), Role::Op);
    let seen = h.mods(3);
    assert_eq!(
        seen,
        vec![("op".into(), Some("bob".into()), None, "alice".into())]
    );
    // bob learns his new role.
    assert!(h.take(2).contains(&ServerMsg::Modes {
        room: "#r".into(),
        modes: String::new(),
        role: "op".into()
    }));
    // An operator cannot make operators: that is the owner's.
    h.send(2, ClientMsg::Op(rn("#r", "carol")));
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    assert_eq!(h.s.role("#r", &key(3)), Role::Member);
    // Nor take it from another operator.
    h.send(2, ClientMsg::Deop(rn("#r", "bob")));
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    // The role is bound to the key: bob renamed is still an operator.
    h.send(
        2,
        ClientMsg::Nick {
            nick: "robert".into(),
        },
    );
    assert_eq!(h.s.role("#r", &key(2)), Role::Op);
    h.send(1, ClientMsg::Deop(rn("#r", "robert")));
    assert_eq!(h.s.role("#r", &key(2)), Role::Member);
    // Unknown nick, unknown room.
    h.send(1, ClientMsg::Op(rn("#r", "nobody")));
    assert_eq!(h.codes(1), vec![code::NO_SUCH_NICK]);
    h.send(1, ClientMsg::Op(rn("#nowhere", "carol")));
    assert_eq!(h.codes(1), vec![code::NOT_IN_ROOM]);
}

#[test]
fn operators_kick_members_and_nobody_else_kicks() {
    let mut h = room_of_three();
    // A member kicks: refused, nothing happens.
    h.send(
        2,
        ClientMsg::Kick {
            room: "#r".into(),
            nick: "carol".into(),
            reason: None,
        },
    );
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    assert!(h.in_room(&key(3), "#r"));
    h.send(1, ClientMsg::Op(rn("#r", "bob")));
    for id in 1..=3 {
        h.take(id);
    }
    // An operator kicks the owner: refused.
    h.send(
        2,
        ClientMsg::Kick {
            room: "#r".into(),
            nick: "alice".into(),
            reason: None,
        },
    );
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    assert!(h.in_room(&key(1), "#r"));
    // An operator kicks a member: out at once, told by whom and why, and everyone sees it.
    h.send(
        2,
        ClientMsg::Kick {
            room: "#r".into(),
            nick: "carol".into(),
            reason: Some("spam".into()),
        },
    );
    assert!(!h.in_room(&key(3), "#r"));
    let out = h.take(3);
    assert_eq!(
        out,
        vec![
            ServerMsg::Kicked {
                room: "#r".into(),
                by: "bob".into(),
                reason: Some("spam".into()),
                banned: false,
            },
            ServerMsg::Parted { room: "#r".into() },
        ]
    );
    assert_eq!(
        h.mods(1),
        vec![(
            "kick".into(),
            Some("carol".into()),
            Some("spam".into()),
            "bob".into()
        )]
    );
    // carol cannot speak there any more, but may come back (a kick is not a ban).
    assert_eq!(h.said(3, 1, "#r"), Err(code::NOT_IN_ROOM.into()));
    h.send(3, join("#r", None));
    assert!(h.in_room(&key(3), "#r"));
    // Kicking someone not there.
    h.send(
        2,
        ClientMsg::Kick {
            room: "#r".into(),
            nick: "nobody".into(),
            reason: None,
        },
    );
    assert_eq!(h.codes(2), vec![code::NO_SUCH_NICK]);
    // Both actions (the op and the kick) are in the room's history, nothing else.
    let kinds: Vec<u8> = h
        .stored
        .iter()
        .filter(|r| r.conv == "#r")
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, vec![EVENT_KIND, EVENT_KIND]);
}

#[test]
fn a_muted_member_reads_but_does_not_speak() {
    let mut h = room_of_three();
    // A member mutes: refused.
    h.send(3, ClientMsg::Mute(rn("#r", "bob")));
    assert_eq!(h.codes(3), vec![code::FORBIDDEN]);
    h.send(1, ClientMsg::Mute(rn("#r", "bob")));
    assert_eq!(h.s.role("#r", &key(2)), Role::Muted);
    assert_eq!(h.said(2, 1, "#r"), Err(code::MUTED.into()));
    // Nothing of it was stored or shown.
    assert!(
        !h.stored
            .iter()
            .any(|r| r.from_key == key(2) && r.kind != EVENT_KIND)
    );
    // He still reads the room.
    assert_eq!(h.said(3, 1, "#r"), Ok(()));
    assert!(
        h.take(2)
            .iter()
            .any(|m| matches!(m, ServerMsg::Msg(m) if m.from == "carol"))
    );
    // An operator cannot mute the owner.
    h.send(1, ClientMsg::Op(rn("#r", "carol")));
    h.send(3, ClientMsg::Mute(rn("#r", "alice")));
    assert_eq!(h.codes(3), vec![code::FORBIDDEN]);
    h.send(3, ClientMsg::Unmute(rn("#r", "bob")));
    assert_eq!(h.said(2, 2, "#r"), Ok(()));
}

#[test]
fn a_moderated_room_hears_only_operators_and_voiced_members() {
    let mut h = room_of_three();
    h.send(
        2,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+m".into(),
            key: None,
        },
    );
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+m".into(),
            key: None,
        },
    );
    // Every member is told the room's modes.
    assert!(h.take(3).contains(&ServerMsg::Modes {
        room: "#r".into(),
        modes: "+m".into(),
        role: "member".into()
    }));
    assert_eq!(h.said(2, 1, "#r"), Err(code::MUTED.into()));
    assert_eq!(h.said(1, 1, "#r"), Ok(()));
    h.send(1, ClientMsg::Voice(rn("#r", "bob")));
    assert_eq!(h.said(2, 2, "#r"), Ok(()));
    assert_eq!(h.said(3, 1, "#r"), Err(code::MUTED.into()));
    // A muted member stays silent even when voiced rooms would let him speak.
    h.send(1, ClientMsg::Mute(rn("#r", "bob")));
    assert_eq!(h.said(2, 3, "#r"), Err(code::MUTED.into()));
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "-m".into(),
            key: None,
        },
    );
    assert_eq!(h.said(3, 2, "#r"), Ok(()));
    // A mode change that is no mode change.
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+x".into(),
            key: None,
        },
    );
    assert_eq!(h.codes(1), vec![code::BAD_REQUEST]);
}

#[test]
fn a_banned_key_is_put_out_and_cannot_come_back_until_unbanned() {
    let mut h = room_of_three();
    // A member bans: refused.
    h.send(
        2,
        ClientMsg::Ban(BanReq {
            room: Some("#r".into()),
            target: Some("carol".into()),
            ..BanReq::default()
        }),
    );
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    h.send(
        1,
        ClientMsg::Ban(BanReq {
            room: Some("#r".into()),
            target: Some("carol".into()),
            reason: Some("flooding".into()),
            ..BanReq::default()
        }),
    );
    assert!(!h.in_room(&key(3), "#r"));
    assert!(h.take(3).contains(&ServerMsg::Kicked {
        room: "#r".into(),
        by: "alice".into(),
        reason: Some("flooding".into()),
        banned: true,
    }));
    let fp = fingerprint(&key(3));
    assert_eq!(
        h.mods(2),
        vec![(
            "ban".into(),
            Some(format!("carol ({fp})")),
            Some("flooding".into()),
            "alice".into()
        )]
    );
    // A join is refused; so is one after reconnecting, under another nick, in the hello.
    h.send(3, join("#r", None));
    assert_eq!(h.codes(3), vec![code::BANNED]);
    h.s.disconnected(h.now, 3, "left");
    h.hello(4, key(3), "carol2", &["#r"]);
    assert_eq!(h.codes(4), vec![code::BANNED]);
    assert!(!h.in_room(&key(3), "#r"));
    // The owner cannot be banned by an operator.
    h.send(1, ClientMsg::Op(rn("#r", "bob")));
    h.send(
        2,
        ClientMsg::Ban(BanReq {
            room: Some("#r".into()),
            target: Some("alice".into()),
            ..BanReq::default()
        }),
    );
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    assert!(h.in_room(&key(1), "#r"));
    // Lifted (by fingerprint this time): carol joins again.
    h.send(
        2,
        ClientMsg::Unban(BanReq {
            room: Some("#r".into()),
            target: Some(fp.clone()),
            ..BanReq::default()
        }),
    );
    assert!(h.codes(2).is_empty());
    h.send(4, join("#r", None));
    assert!(h.in_room(&key(3), "#r"));
    assert!(h.stored_mod().iter().all(|e| e.kind != "ban"));
}

#[test]
fn an_address_range_ban_holds_for_fresh_keys() {
    let mut h = H::new(config());
    h.hello_at(1, ip(1), key(1), "alice", &["#r"]);
    h.hello_at(2, ip(66), key(2), "troll", &["#r"]);
    h.send(
        1,
        ClientMsg::Ban(BanReq {
            room: Some("#r".into()),
            net: Some("198.51.100.64/26".into()),
            ..BanReq::default()
        }),
    );
    assert!(h.codes(1).is_empty());
    // Put out by its address.
    assert!(!h.in_room(&key(2), "#r"));
    // A fresh key from the range cannot join; one from outside can.
    h.hello_at(3, ip(70), key(3), "troll2", &["#r"]);
    assert_eq!(h.codes(3), vec![code::BANNED]);
    h.hello_at(4, ip(5), key(4), "dave", &["#r"]);
    assert!(h.codes(4).is_empty());
    assert!(h.in_room(&key(4), "#r"));
    // A range that is no range.
    h.send(
        1,
        ClientMsg::Ban(BanReq {
            room: Some("#r".into()),
            net: Some("198.51.100.0/99".into()),
            ..BanReq::default()
        }),
    );
    assert_eq!(h.codes(1), vec![code::BAD_REQUEST]);
}

#[test]
fn invite_only_rooms_take_the_invited_and_a_kick_ends_the_invitation() {
    let mut h = H::new(config());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &[]);
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+i".into(),
            key: None,
        },
    );
    h.send(2, join("#r", None));
    assert_eq!(h.codes(2), vec![code::INVITE_ONLY]);
    // Only operators invite.
    h.hello(3, key(3), "carol", &[]);
    h.send(3, ClientMsg::Invite(rn("#r", "bob")));
    assert_eq!(h.codes(3), vec![code::FORBIDDEN]);
    h.send(1, ClientMsg::Invite(rn("#r", "bob")));
    h.send(2, join("#r", None));
    assert!(h.in_room(&key(2), "#r"));
    // The invitation outlives a reconnect (the rejoin in the hello).
    h.s.disconnected(h.now, 2, "left");
    h.hello(4, key(2), "bob", &["#r"]);
    assert!(h.in_room(&key(2), "#r"));
    // A kick ends it.
    h.send(
        1,
        ClientMsg::Kick {
            room: "#r".into(),
            nick: "bob".into(),
            reason: None,
        },
    );
    h.take(4);
    h.send(4, join("#r", None));
    assert_eq!(h.codes(4), vec![code::INVITE_ONLY]);
}

#[test]
fn a_room_key_is_needed_to_join_and_never_shown() {
    let mut h = H::new(config());
    h.hello(1, key(1), "alice", &["#r"]);
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+k".into(),
            key: None,
        },
    );
    assert_eq!(h.codes(1), vec![code::BAD_REQUEST]);
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+k".into(),
            key: Some("s3cret".into()),
        },
    );
    h.hello(2, key(2), "bob", &[]);
    h.send(2, join("#r", None));
    assert_eq!(h.codes(2), vec![code::BAD_KEY]);
    h.send(2, join("#r", Some("wrong")));
    assert_eq!(h.codes(2), vec![code::BAD_KEY]);
    h.send(2, join("#r", Some("s3cret")));
    assert!(h.in_room(&key(2), "#r"));
    let out = h.take(2);
    assert!(out.contains(&ServerMsg::Modes {
        room: "#r".into(),
        modes: "+k".into(),
        role: "member".into()
    }));
    // The key is in no event and no message anyone is sent.
    assert!(h.stored.iter().all(|r| !r.text.contains("s3cret")));
    assert!(
        out.iter()
            .all(|m| !String::from_utf8_lossy(&m.encode()).contains("s3cret"))
    );
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "-k".into(),
            key: None,
        },
    );
    h.hello(3, key(3), "carol", &["#r"]);
    assert!(h.in_room(&key(3), "#r"));
}

#[test]
fn a_locked_topic_is_set_by_operators_only() {
    let mut h = room_of_three();
    h.send(
        2,
        ClientMsg::Topic {
            room: "#r".into(),
            topic: "free for all".into(),
        },
    );
    assert!(h.codes(2).is_empty());
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+t".into(),
            key: None,
        },
    );
    h.send(
        2,
        ClientMsg::Topic {
            room: "#r".into(),
            topic: "mine now".into(),
        },
    );
    assert_eq!(h.codes(2), vec![code::FORBIDDEN]);
    h.send(1, ClientMsg::Op(rn("#r", "bob")));
    h.send(
        2,
        ClientMsg::Topic {
            room: "#r".into(),
            topic: "set by an op".into(),
        },
    );
    assert!(h.codes(2).is_empty());
    assert!(
        h.take(3)
            .iter()
            .any(|m| matches!(m, ServerMsg::Topic { topic, .. } if topic == "set by an op"))
    );
}

#[test]
fn server_operators_ban_server_wide_list_sessions_and_disconnect() {
    let oper: chirp_keys::Fingerprint = fingerprint(&key(9)).parse().expect("fingerprint");
    let mut h = H::new(ServerConfig {
        opers: vec![oper],
        ..config()
    });
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "mallory", &[]);
    h.hello(9, key(9), "root", &[]);
    for id in [1, 2, 9] {
        h.take(id);
    }
    // Not a server operator: refused, whatever the room roles.
    h.send(
        1,
        ClientMsg::Ban(BanReq {
            target: Some("mallory".into()),
            ..BanReq::default()
        }),
    );
    assert_eq!(h.codes(1), vec![code::FORBIDDEN]);
    h.send(1, ClientMsg::Sessions);
    assert_eq!(h.codes(1), vec![code::FORBIDDEN]);
    h.send(
        1,
        ClientMsg::Kill {
            session: 2,
            reason: None,
            node: None,
        },
    );
    assert_eq!(h.codes(1), vec![code::FORBIDDEN]);
    assert!(!h.closed.contains(&2));
    // The operator lists the sessions.
    h.send(9, ClientMsg::Sessions);
    let listed = h.take(9).into_iter().find_map(|m| match m {
        ServerMsg::Sessions { sessions, silent } => {
            assert!(silent.is_empty(), "alone, no node to wait for");
            Some(sessions)
        }
        _ => None,
    });
    let listed = listed.expect("sessions");
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 2, 9]
    );
    assert_eq!(listed[1].nick, "mallory");
    assert_eq!(listed[1].fingerprint, fingerprint(&key(2)));
    assert_eq!(listed[1].node, None, "a server alone names no node");
    // ...bans mallory's key from the server: her session is told and closed...
    h.send(
        9,
        ClientMsg::Ban(BanReq {
            target: Some("mallory".into()),
            reason: Some("abuse".into()),
            ..BanReq::default()
        }),
    );
    assert!(h.codes(9).is_empty());
    assert!(h.closed.contains(&2));
    assert_eq!(h.codes(2), vec![code::BANNED]);
    // ...and she is refused on connect with a clear error, before any hello.
    h.connect(5, key(2));
    let e = h.errors(5);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].1, code::BANNED);
    assert!(e[0].2.contains("banned from this server"), "{}", e[0].2);
    assert!(h.closed.contains(&5));
    // Stored server-wide (scope ""), with no room event.
    assert!(
        h.stored_mod()
            .iter()
            .any(|e| e.scope.is_empty() && e.kind == "ban")
    );
    // The operator disconnects a session; a session that is not there is an error.
    h.send(
        9,
        ClientMsg::Kill {
            session: 1,
            reason: Some("bye".into()),
            node: None,
        },
    );
    assert!(h.closed.contains(&1));
    h.send(
        9,
        ClientMsg::Kill {
            session: 77,
            reason: None,
            node: None,
        },
    );
    assert_eq!(h.codes(9), vec![code::NO_SUCH_NICK]);
    // An operator counts as owner in every room.
    h.hello(6, key(1), "alice", &["#r"]);
    h.send(9, join("#r", None));
    assert_eq!(h.s.role("#r", &key(9)), Role::Owner);
    h.send(9, ClientMsg::Op(rn("#r", "alice")));
    assert!(h.codes(9).is_empty());
    // A server ban by address range holds on connect too; lifting it lets keys back.
    h.send(
        9,
        ClientMsg::Ban(BanReq {
            net: Some("198.51.100.0/24".into()),
            ..BanReq::default()
        }),
    );
    h.s.connected(h.now, 7, ip(3), key(7));
    h.drain();
    assert_eq!(h.codes(7), vec![code::BANNED]);
    h.send(
        9,
        ClientMsg::Unban(BanReq {
            net: Some("198.51.100.0/24".into()),
            ..BanReq::default()
        }),
    );
    h.hello_at(8, ip(3), key(7), "newbie", &[]);
    assert!(h.codes(8).is_empty());
}

#[test]
fn joins_nick_changes_and_new_rooms_are_rate_limited_per_key() {
    let mut h = H::new(ServerConfig {
        join_burst: 3,
        joins_per_hour: 60,
        nick_change_burst: 2,
        nick_changes_per_hour: 60,
        rooms_per_hour: 2,
        ..config()
    });
    h.hello(1, key(1), "alice", &[]);
    // Two new rooms, then the third is refused; joining an existing room still works.
    h.send(1, join("#a", None));
    h.send(1, join("#b", None));
    h.send(1, join("#c", None));
    assert_eq!(h.codes(1), vec![code::RATE]);
    assert!(!h.s.room_known("#c"));
    h.hello(2, key(2), "bob", &["#x"]);
    h.take(2);
    // alice's joins: 3 at once (one spent on the refused room), then one a minute.
    h.send(1, join("#x", None));
    assert_eq!(h.codes(1), vec![code::RATE]);
    assert!(!h.in_room(&key(1), "#x"));
    h.advance(60_000);
    h.send(1, join("#x", None));
    assert!(h.codes(1).is_empty());
    assert!(h.in_room(&key(1), "#x"));
    // Rejoining a room one is in costs nothing.
    h.send(1, join("#x", None));
    assert!(h.codes(1).is_empty());
    // New rooms come back at rooms_per_hour.
    h.advance(30 * 60_000);
    h.send(1, join("#c", None));
    assert!(h.codes(1).is_empty());
    assert!(h.in_room(&key(1), "#c"));
    // Nick changes: 2 at once, then one a minute; the rate is the key's, across sessions.
    h.send(1, ClientMsg::Nick { nick: "al".into() });
    h.send(1, ClientMsg::Nick { nick: "ali".into() });
    assert!(h.codes(1).is_empty());
    h.hello(3, key(1), "ali", &[]);
    h.send(
        3,
        ClientMsg::Nick {
            nick: "alicia".into(),
        },
    );
    assert_eq!(h.codes(3), vec![code::RATE]);
    assert_eq!(h.s.nick_of.get(&key(1)).map(String::as_str), Some("ali"));
}

#[test]
fn roles_bans_and_modes_survive_a_restart() {
    let mut h = room_of_three();
    h.send(1, ClientMsg::Op(rn("#r", "bob")));
    h.send(
        1,
        ClientMsg::Ban(BanReq {
            room: Some("#r".into()),
            target: Some("carol".into()),
            ..BanReq::default()
        }),
    );
    h.send(
        1,
        ClientMsg::Mode {
            room: "#r".into(),
            change: "+m".into(),
            key: None,
        },
    );
    let loaded = Loaded {
        nicks: h.s.nick_of.iter().map(|(k, n)| (n.clone(), *k)).collect(),
        last_ids: h.last_ids.iter().map(|(c, n)| (c.clone(), *n)).collect(),
        recent: h.stored.clone(),
        moderation: h.stored_mod(),
        ..Loaded::default()
    };
    let mut h2 = H::with(config(), loaded);
    h2.hello(1, key(1), "alice", &["#r"]);
    h2.hello(2, key(2), "bob", &["#r"]);
    h2.hello(3, key(3), "carol", &["#r"]);
    assert_eq!(h2.s.role("#r", &key(1)), Role::Owner);
    assert_eq!(h2.s.role("#r", &key(2)), Role::Op);
    assert_eq!(h2.codes(3), vec![code::BANNED]);
    h2.hello(4, key(4), "dave", &["#r"]);
    h2.take(4);
    assert_eq!(h2.said(4, 1, "#r"), Err(code::MUTED.into()));
    assert_eq!(h2.said(2, 1, "#r"), Ok(()));
}
