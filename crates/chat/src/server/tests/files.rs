//! Issue 18, DM file transfer through the server: an offer is routed to every session of the
//! recipient and nowhere else, the answer back to the sender's sessions; an offer over
//! `max_file_size`, to an offline nick, to an unknown one or malformed is refused with
//! `file_refused` and reaches nobody; nothing of it is stored.

use super::*;
use crate::server::files::{DEFAULT_MAX_FILE_SIZE, MAX_NAME};

const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn offer(h: &mut H, from: SessionId, to: &str, id: u64, name: &str, size: u64, hash: &str) {
    h.send(
        from,
        ClientMsg::FileOffer {
            to: to.into(),
            id,
            name: name.into(),
            size,
            hash: hash.into(),
        },
    );
}

/// The (code, message) of every `file_refused` for offer `id` to `to` that `session` got.
fn refusals(h: &mut H, session: SessionId, to: &str, id: u64) -> Vec<(String, String)> {
    h.take(session)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::FileRefused {
                to: t,
                id: i,
                code,
                message,
            } if t == to && i == id => Some((code, message)),
            _ => None,
        })
        .collect()
}

fn three_users() -> H {
    let mut h = H::new(ServerConfig {
        max_file_size: 1000,
        ..ServerConfig::default()
    });
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.hello(3, key(2), "bob", &[]);
    h.hello(4, key(3), "carol", &[]);
    for s in 1..=4 {
        h.take(s);
    }
    h
}

#[test]
fn the_default_size_limit_is_one_gibibyte() {
    assert_eq!(ServerConfig::default().max_file_size, DEFAULT_MAX_FILE_SIZE);
    assert_eq!(DEFAULT_MAX_FILE_SIZE, 1 << 30);
}

#[test]
fn an_offer_reaches_every_session_of_the_recipient_and_the_answer_the_sender() {
    let mut h = three_users();
    let persisted = h.persisted.len();
    // A nick in another case is the same nick.
    offer(&mut h, 1, "BOB", 7, "report.pdf", 1000, HASH);
    let expected = ServerMsg::FileOffer {
        from: "alice".into(),
        id: 7,
        name: "report.pdf".into(),
        size: 1000,
        hash: HASH.into(),
        key: Some(data_encoding::HEXLOWER.encode(&key(1))),
    };
    assert_eq!(h.take(2), vec![expected.clone()]);
    assert_eq!(h.take(3), vec![expected]);
    assert!(h.take(1).is_empty(), "the sender gets no refusal");
    assert!(h.take(4).is_empty(), "carol learns nothing");
    assert_eq!(h.s.stats().file_offers, 1);
    // Bob accepts on one of his sessions: alice hears it, nobody else.
    h.send(
        3,
        ClientMsg::FileAnswer {
            to: "alice".into(),
            id: 7,
            accept: true,
        },
    );
    assert_eq!(
        h.take(1),
        vec![ServerMsg::FileAnswer {
            from: "bob".into(),
            id: 7,
            accept: true
        }]
    );
    for s in 2..=4 {
        assert!(h.take(s).is_empty(), "session {s}");
    }
    // Nothing of it was stored: no operation for the store at all.
    assert_eq!(h.persisted.len(), persisted);
}

/// The forwarded offer names the key of the session that made it (the key its nick is bound
/// to): each sender's own, whatever the recipient or the id, and never the recipient's.
#[test]
fn the_forwarded_offer_names_the_senders_key() {
    let mut h = three_users();
    let named = |h: &mut H, session| -> Vec<Option<String>> {
        h.take(session)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::FileOffer { key, .. } => Some(key),
                _ => None,
            })
            .collect()
    };
    let hex = |k: Key| Some(data_encoding::HEXLOWER.encode(&k));
    offer(&mut h, 4, "bob", 1, "a", 10, HASH);
    assert_eq!(named(&mut h, 2), vec![hex(key(3))]);
    offer(&mut h, 1, "bob", 1, "a", 10, HASH);
    assert_eq!(named(&mut h, 3), vec![hex(key(3)), hex(key(1))]);
    // Bob, from his second device, offers carol a file: his key, the same from either.
    offer(&mut h, 3, "carol", 2, "b", 10, HASH);
    assert_eq!(named(&mut h, 4), vec![hex(key(2))]);
}

#[test]
fn an_offer_over_the_size_limit_is_refused_and_reaches_nobody() {
    let mut h = three_users();
    offer(&mut h, 1, "bob", 8, "big.iso", 1001, HASH);
    let got = refusals(&mut h, 1, "bob", 8);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, code::TOO_LARGE);
    assert!(
        got[0].1.contains("1001 bytes") && got[0].1.contains("at most 1000 bytes"),
        "{}",
        got[0].1
    );
    assert!(h.take(2).is_empty());
    assert!(h.take(3).is_empty());
    assert_eq!(h.s.stats().file_offers, 0);
}

#[test]
fn an_offer_to_an_offline_or_unknown_user_is_refused() {
    let mut h = three_users();
    // Carol leaves: her nick stays hers, but she has no session.
    h.s.disconnected(h.now, 4, "left");
    h.drain();
    offer(&mut h, 1, "carol", 9, "a.txt", 10, HASH);
    let got = refusals(&mut h, 1, "carol", 9);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, code::OFFLINE);
    assert!(got[0].1.contains("carol is not online"), "{}", got[0].1);
    offer(&mut h, 1, "dave", 10, "a.txt", 10, HASH);
    assert_eq!(refusals(&mut h, 1, "dave", 10)[0].0, code::NO_SUCH_NICK);
    // A session that is closing does not count as online.
    h.s.disconnected(h.now, 2, "left");
    h.s.disconnected(h.now, 3, "left");
    h.drain();
    offer(&mut h, 1, "bob", 11, "a.txt", 10, HASH);
    assert_eq!(refusals(&mut h, 1, "bob", 11)[0].0, code::OFFLINE);
    // An answer to an offline sender is an error too.
    h.hello(5, key(3), "carol", &[]);
    h.take(5);
    h.s.disconnected(h.now, 1, "left");
    h.drain();
    h.send(
        5,
        ClientMsg::FileAnswer {
            to: "alice".into(),
            id: 9,
            accept: true,
        },
    );
    assert_eq!(h.errors(5)[0].1, code::OFFLINE);
}

#[test]
fn malformed_offers_are_refused() {
    let mut h = three_users();
    for (id, name, hash) in [
        (1, "", HASH),
        (2, "bad\u{1b}[2Jname", HASH),
        (3, &*"n".repeat(MAX_NAME + 1), HASH),
        (4, "ok", "abcd"),
        (5, "ok", &*HASH.to_uppercase()),
    ] {
        offer(&mut h, 1, "bob", id, name, 10, hash);
        let got = refusals(&mut h, 1, "bob", id);
        assert_eq!(got.len(), 1, "offer {id}: {got:?}");
        assert_eq!(got[0].0, code::BAD_REQUEST, "offer {id}");
    }
    offer(&mut h, 1, "alice", 6, "ok", 10, HASH);
    assert_eq!(refusals(&mut h, 1, "alice", 6)[0].0, code::BAD_REQUEST);
    assert!(h.take(2).is_empty());
    assert!(h.take(3).is_empty());
}
