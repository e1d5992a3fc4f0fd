//! Edits, deletions, reactions and typing notices (issue 19): every permission check and its
//! forbidden cases, what members see, what is stored, what a later join or a resume replays,
//! and the typing rate limit.

use super::*;
use crate::wire::{ReactReq, Reactions, TYPING_INTERVAL_MS};

/// Flood control out of the way (these tests send many requests at once).
fn config() -> ServerConfig {
    ServerConfig {
        burst: 1000,
        per_sec: 1000,
        ..ServerConfig::default()
    }
}

/// alice (1) creates #r and owns it; bob (2) and carol (3) join it; bob says "hello bob"
/// (id 1) and carol "hi from carol" (id 2).
fn room() -> H {
    let mut h = H::new(config());
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.hello(3, key(3), "carol", &["#r"]);
    h.say(2, 1, "#r", "hello bob");
    h.say(3, 1, "#r", "hi from carol");
    for id in 1..=3 {
        h.take(id);
    }
    h
}

fn edit(id: u64, text: &str) -> ClientMsg {
    ClientMsg::Edit {
        room: Some("#r".into()),
        with: None,
        id,
        text: text.into(),
    }
}

fn delete(id: u64) -> ClientMsg {
    ClientMsg::Delete {
        room: Some("#r".into()),
        with: None,
        id,
    }
}

fn react(room: &str, id: u64, emoji: &str) -> ClientMsg {
    ClientMsg::React(ReactReq {
        room: Some(room.into()),
        with: None,
        id,
        emoji: emoji.into(),
    })
}

fn unreact(id: u64, emoji: &str) -> ClientMsg {
    ClientMsg::Unreact(ReactReq {
        room: Some("#r".into()),
        with: None,
        id,
        emoji: emoji.into(),
    })
}

fn typing(room: &str) -> ClientMsg {
    ClientMsg::Typing {
        room: Some(room.into()),
        to: None,
    }
}

impl H {
    /// The error codes session `id` was sent (the rest of its inbox is dropped).
    fn error_codes(&mut self, id: SessionId) -> Vec<String> {
        self.errors(id).into_iter().map(|e| e.1).collect()
    }

    /// The edit, deletion and reaction events session `id` was sent, as
    /// `(kind, id, target, by, text or emoji, count)`.
    fn changes(&mut self, id: SessionId) -> Vec<(&'static str, u64, u64, String, String, u64)> {
        self.take(id)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Edited {
                    id,
                    target,
                    by,
                    text,
                    ..
                } => Some(("edited", id, target, by, text, 0)),
                ServerMsg::Deleted { id, target, by, .. } => {
                    Some(("deleted", id, target, by, String::new(), 0))
                }
                ServerMsg::Reaction {
                    id,
                    target,
                    by,
                    emoji,
                    count,
                    removed,
                    ..
                } => Some((
                    if removed { "unreacted" } else { "reacted" },
                    id,
                    target,
                    by,
                    emoji,
                    count,
                )),
                _ => None,
            })
            .collect()
    }

    /// The stored message `id` of `conv`.
    fn stored_msg(&self, conv: &str, id: u64) -> &Record {
        self.stored
            .iter()
            .find(|r| r.conv == conv && r.id == id)
            .expect("stored")
    }
}

#[test]
fn a_sender_edits_its_own_message_and_nobody_else_can() {
    let mut h = room();
    // alice owns the room, carol is a member: neither may edit bob's message.
    h.send(1, edit(1, "alice was here"));
    h.send(3, edit(1, "carol was here"));
    assert_eq!(h.error_codes(1), vec![code::FORBIDDEN]);
    assert_eq!(h.error_codes(3), vec![code::FORBIDDEN]);
    assert_eq!(h.stored_msg("#r", 1).text, "hello bob");
    assert!(
        !h.persisted
            .iter()
            .any(|op| matches!(op, Op::Message(m) if m.kind == kind::EDIT))
    );
    h.send(2, edit(1, "hello, bob here"));
    let seen = (
        "edited",
        3,
        1,
        "bob".to_owned(),
        "hello, bob here".to_owned(),
        0,
    );
    for id in 1..=3 {
        assert_eq!(h.changes(id), vec![seen.clone()], "session {id}");
    }
    let m = h.stored_msg("#r", 1);
    assert_eq!((m.text.as_str(), m.edited), ("hello, bob here", true));
    // A message that is not there, an event, and a bad text.
    h.send(2, edit(99, "x"));
    h.send(2, edit(3, "x"));
    h.send(2, edit(1, "bad\u{1b}[2J"));
    assert_eq!(
        h.error_codes(2),
        vec![code::NO_SUCH_MESSAGE, code::NO_SUCH_MESSAGE, code::BAD_TEXT]
    );
}

#[test]
fn a_member_deletes_only_its_own_message_and_an_operator_anyones() {
    let mut h = room();
    h.send(2, edit(1, "hello bob, edited secret"));
    h.take(2);
    // carol is no operator: bob's message is not hers to delete.
    h.send(3, delete(1));
    assert_eq!(h.error_codes(3), vec![code::FORBIDDEN]);
    assert!(!h.stored_msg("#r", 1).deleted);
    // carol deletes her own; alice, the owner, deletes bob's.
    h.send(3, delete(2));
    h.send(1, delete(1));
    let seen = h.changes(2);
    assert_eq!(
        seen,
        vec![
            ("deleted", 4, 2, "carol".to_owned(), String::new(), 0),
            ("deleted", 5, 1, "alice".to_owned(), String::new(), 0),
        ]
    );
    // Gone from the store, with the text of its edit; a deleted message is no message.
    let m = h.stored_msg("#r", 1);
    assert_eq!((m.text.as_str(), m.deleted), ("", true));
    assert_eq!(h.stored_msg("#r", 3).text, "");
    h.send(2, edit(1, "again"));
    h.send(1, delete(1));
    h.send(2, react("#r", 1, "👍"));
    assert_eq!(h.error_codes(2), vec![code::NO_SUCH_MESSAGE; 2]);
    assert_eq!(h.error_codes(1), vec![code::NO_SUCH_MESSAGE]);
    // A newcomer's replay (from the cache) shows the state, and no deleted text anywhere.
    h.hello(4, key(4), "dave", &["#r"]);
    let got = h.take(4);
    let texts: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.encode()).into_owned())
        .collect();
    assert!(
        texts.iter().all(|t| !t.contains("secret")
            && !t.contains("hello bob")
            && !t.contains("hi from carol")),
        "{texts:#?}"
    );
    let msgs: Vec<&Msg> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs.iter()
            .all(|m| m.deleted && m.text.is_empty() && m.history)
    );
    assert!(got.iter().any(|m| matches!(
        m,
        ServerMsg::Deleted {
            target: 1,
            history: true,
            ..
        }
    )));
}

#[test]
fn reactions_are_counted_once_per_user_and_only_by_members() {
    let mut h = room();
    h.hello(4, key(4), "dave", &["#elsewhere"]);
    h.take(4);
    // dave is not in #r: no reaction there, nor a typing notice.
    h.send(4, react("#r", 1, "👍"));
    h.send(4, typing("#r"));
    assert_eq!(h.error_codes(4), vec![code::NOT_IN_ROOM, code::NOT_IN_ROOM]);
    // Not emojis.
    for bad in ["", "ok", "👍 ", "\u{202e}👍", "👍👍👍👍👍👍👍👍👍👍👍"] {
        h.send(3, react("#r", 1, bad));
        assert_eq!(h.error_codes(3), vec![code::BAD_TEXT], "{bad:?}");
    }
    h.send(1, react("#r", 1, "👍"));
    h.send(3, react("#r", 1, "👍"));
    h.send(3, react("#r", 1, "👍"));
    h.send(3, react("#r", 1, "1️⃣"));
    h.send(3, unreact(1, "👍"));
    h.send(3, unreact(1, "👍"));
    let seen: Vec<(&str, u64, String, u64)> = h
        .changes(2)
        .into_iter()
        .map(|c| (c.0, c.2, c.4, c.5))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("reacted", 1, "👍".to_owned(), 1),
            ("reacted", 1, "👍".to_owned(), 2),
            ("reacted", 1, "1️⃣".to_owned(), 1),
            ("unreacted", 1, "👍".to_owned(), 1),
        ]
    );
    assert_eq!(h.error_codes(3), vec![code::UNCHANGED, code::UNCHANGED]);
    assert_eq!(
        h.stored_msg("#r", 1).reactions,
        vec![("👍".to_owned(), 1), ("1️⃣".to_owned(), 1)]
    );
    // A copy of the message sent now (history) carries the counts, from the cache.
    h.send(
        2,
        ClientMsg::History {
            id: Some(1),
            room: Some("#r".into()),
            with: None,
            before: Some(2),
            limit: 1,
        },
    );
    let m = h.msgs(2);
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0].reactions,
        vec![
            Reactions {
                emoji: "👍".into(),
                count: 1
            },
            Reactions {
                emoji: "1️⃣".into(),
                count: 1
            }
        ]
    );
}

#[test]
fn a_muted_member_may_delete_its_own_message_but_not_edit_or_react() {
    let mut h = room();
    h.send(
        1,
        ClientMsg::Mute(crate::wire::RoomNick {
            room: "#r".into(),
            nick: "bob".into(),
        }),
    );
    h.take(2);
    h.send(2, edit(1, "hm"));
    h.send(2, react("#r", 2, "👍"));
    assert_eq!(h.error_codes(2), vec![code::MUTED, code::MUTED]);
    // Its typing notices go nowhere.
    h.send(2, typing("#r"));
    assert!(
        !h.take(3)
            .iter()
            .any(|m| matches!(m, ServerMsg::Typing { .. }))
    );
    h.send(2, delete(1));
    assert!(h.stored_msg("#r", 1).deleted);
}

#[test]
fn edits_and_deletions_in_a_dm_are_its_parties_own() {
    let mut h = room();
    h.dm(1, 7, "bob", "psst");
    h.take(1);
    h.take(2);
    let conv = dm_conv(&key(1), &key(2));
    // bob may neither edit nor delete alice's DM; carol is no party of it (the conversation
    // `with` names is her own with alice, where message 1 does not exist).
    h.send(
        2,
        ClientMsg::Edit {
            room: None,
            with: Some("alice".into()),
            id: 1,
            text: "x".into(),
        },
    );
    h.send(
        2,
        ClientMsg::Delete {
            room: None,
            with: Some("alice".into()),
            id: 1,
        },
    );
    assert_eq!(h.error_codes(2), vec![code::FORBIDDEN, code::FORBIDDEN]);
    h.send(
        3,
        ClientMsg::Delete {
            room: None,
            with: Some("alice".into()),
            id: 1,
        },
    );
    assert_eq!(h.error_codes(3), vec![code::NO_SUCH_MESSAGE]);
    h.send(
        1,
        ClientMsg::Edit {
            room: None,
            with: Some("bob".into()),
            id: 1,
            text: "psst, edited".into(),
        },
    );
    for id in [1, 2] {
        let got = h.take(id);
        assert!(
            got.iter().any(|m| matches!(m, ServerMsg::Edited { conv: c, room: None, target: 1, text, .. } if *c == conv && text == "psst, edited")),
            "{got:?}"
        );
    }
    assert!(h.take(3).is_empty());
}

#[test]
fn a_resumed_session_catches_up_on_changes_in_order() {
    let mut h = room();
    // bob goes away after id 2; meanwhile his message is edited (by him, on another device),
    // reacted to and carol's is deleted by alice.
    h.s.disconnected(h.now, 2, "gone");
    h.drain();
    h.hello(5, key(2), "bob", &["#r"]);
    h.take(5);
    h.send(5, edit(1, "hello, edited"));
    h.send(3, react("#r", 1, "🎉"));
    h.send(1, delete(2));
    h.s.disconnected(h.now, 5, "gone");
    h.drain();
    h.connect(6, key(2));
    h.send(
        6,
        ClientMsg::Hello {
            v: crate::wire::VERSION,
            nick: "bob".into(),
            client: 6,
            rooms: vec![JoinReq {
                room: "#r".into(),
                after: Some(2),
                key: None,
            }],
            dms: vec![],
            echo: true,
        },
    );
    let seen: Vec<(&str, u64, u64)> = h.changes(6).into_iter().map(|c| (c.0, c.1, c.2)).collect();
    assert_eq!(
        seen,
        vec![("edited", 3, 1), ("reacted", 4, 1), ("deleted", 5, 2)]
    );
}

#[test]
fn typing_notices_are_forwarded_at_most_once_in_three_seconds_and_never_stored() {
    let mut h = room();
    let persisted = h.persisted.len();
    h.send(1, typing("#r"));
    for id in [2, 3] {
        let got = h.take(id);
        assert_eq!(
            got,
            vec![ServerMsg::Typing {
                conv: "#r".into(),
                room: Some("#r".into()),
                from: "alice".into()
            }]
        );
    }
    assert!(h.take(1).is_empty(), "not to the typist");
    // A flood: dropped and counted, until 3 s have passed.
    for _ in 0..20 {
        h.send(1, typing("#r"));
        h.advance(100);
    }
    assert!(h.take(2).is_empty());
    assert_eq!(h.s.stats().typing_dropped, 20);
    h.advance(1000);
    h.send(1, typing("#r"));
    assert_eq!(h.take(2).len(), 1);
    assert_eq!(h.take(3).len(), 1);
    assert_eq!(h.s.stats().typing, 2);
    // To a nick: that user only.
    h.send(
        1,
        ClientMsg::Typing {
            room: None,
            to: Some("bob".into()),
        },
    );
    assert!(
        matches!(&h.take(2)[..], [ServerMsg::Typing { room: None, from, .. }] if from == "alice")
    );
    assert!(h.take(3).is_empty());
    assert_eq!(h.persisted.len(), persisted, "nothing stored");
}

#[test]
fn the_typing_table_is_bounded() {
    let mut t = super::super::amend::Typing::default();
    let mut now = 0;
    let mut kept = 0;
    for i in 0..70_000u32 {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        if t.take(now, k, "#r") {
            kept += 1;
        }
    }
    assert_eq!(t.len(), 65_536);
    assert_eq!(kept, 65_536, "past the bound, recent notices are dropped");
    // Once they are old, room is made.
    now += TYPING_INTERVAL_MS;
    assert!(t.take(now, [0xff; 32], "#r"));
    assert_eq!(t.len(), 1);
}
