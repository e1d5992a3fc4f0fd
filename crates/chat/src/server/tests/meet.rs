//! Issue 17, the rendezvous (`meet`): mutual consent, what the answer carries (observed
//! addresses following migrations, local addresses, keys), the bounds (pending requests,
//! rate, expiry) and a session's requests ending with it.

use std::net::SocketAddr;

use super::*;
use crate::server::meet::{ASK_TTL_MS, MAX_ASKS, MEET_BURST, MEET_PER_MIN};

fn open() -> ServerConfig {
    ServerConfig {
        burst: 100_000,
        per_sec: 100_000,
        max_sessions_per_ip: 1000,
        nick_claim_burst: 1000,
        ..ServerConfig::default()
    }
}

fn a(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// `id` connects with key `k` from `at` and says hello as `nick`.
fn up(h: &mut H, id: SessionId, k: Key, nick: &str, at: &str) {
    h.s.connected(h.now, id, a(at).ip(), k);
    h.s.observed(id, a(at));
    h.drain();
    h.send(id, hello_msg(id, nick, &[]));
    h.inbox.remove(&id);
}

fn meet(h: &mut H, id: SessionId, nick: &str, local: &[&str]) {
    let local = local.iter().map(|l| a(l)).collect();
    h.send(
        id,
        ClientMsg::Meet {
            nick: nick.into(),
            local,
        },
    );
}

/// The `meet` answers `id` got (and clears its inbox).
fn answers(h: &mut H, id: SessionId) -> Vec<ServerMsg> {
    h.inbox
        .remove(&id)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| matches!(m, ServerMsg::Meet { .. }))
        .collect()
}

fn errors(h: &mut H, id: SessionId) -> Vec<String> {
    h.inbox
        .remove(&id)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Error { code, .. } => Some(code),
            _ => None,
        })
        .collect()
}

fn hex(k: Key) -> String {
    data_encoding::HEXLOWER.encode(&k)
}

#[test]
fn both_sides_learn_each_other_only_once_both_asked() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    meet(&mut h, 1, "bob", &["10.0.1.2:5000"]);
    let got = h.inbox.remove(&1).unwrap_or_default();
    assert_eq!(
        got,
        vec![ServerMsg::MeetWait {
            nick: "bob".into(),
            ttl_ms: ASK_TTL_MS as u64
        }],
        "alice is only told her request waits"
    );
    assert!(
        h.inbox.remove(&2).is_none(),
        "bob learns nothing of a request he did not make"
    );
    // Bob asks for someone else: still nothing for either.
    up(&mut h, 3, key(3), "carol", "192.0.2.3:40003");
    meet(&mut h, 2, "carol", &[]);
    assert!(answers(&mut h, 1).is_empty());
    assert!(answers(&mut h, 2).is_empty());
    // Bob asks for alice (a differently cased nick is the same nick): both are introduced,
    // and the transport is told to relay between their addresses.
    meet(&mut h, 2, "Alice", &["10.0.2.2:6000"]);
    let [(token, pair)] = h.relay_out[..] else {
        panic!("one relay: {:?}", h.relay_out)
    };
    assert_eq!(
        pair,
        Some((a("203.0.113.2:40002"), a("198.51.100.1:40001")))
    );
    let relay = Some(data_encoding::HEXLOWER.encode(&token));
    assert_eq!(
        answers(&mut h, 1),
        vec![ServerMsg::Meet {
            nick: "bob".into(),
            key: hex(key(2)),
            addr: a("203.0.113.2:40002"),
            local: vec![a("10.0.2.2:6000")],
            you: a("198.51.100.1:40001"),
            relay: relay.clone(),
        }]
    );
    assert_eq!(
        answers(&mut h, 2),
        vec![ServerMsg::Meet {
            nick: "alice".into(),
            key: hex(key(1)),
            addr: a("198.51.100.1:40001"),
            local: vec![a("10.0.1.2:5000")],
            you: a("203.0.113.2:40002"),
            relay,
        }]
    );
    assert!(answers(&mut h, 3).is_empty(), "carol learns nothing");
    assert_eq!(h.s.stats().meets, 1);
    // Both requests are used up: bob's request for carol stays.
    assert_eq!(h.s.meet_requests(), 1);
}

#[test]
fn a_lone_request_looks_the_same_whether_the_nick_exists_or_not() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    meet(&mut h, 1, "bob", &[]);
    meet(&mut h, 1, "nobody", &[]);
    let got = h.inbox.remove(&1).unwrap_or_default();
    assert_eq!(got.len(), 2);
    for (m, nick) in got.iter().zip(["bob", "nobody"]) {
        assert_eq!(
            *m,
            ServerMsg::MeetWait {
                nick: nick.into(),
                ttl_ms: ASK_TTL_MS as u64
            }
        );
    }
}

#[test]
fn the_answer_carries_the_address_after_a_migration() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    meet(&mut h, 1, "bob", &[]);
    // Alice's NAT rebinds (a new port, then a new address): the transport validates it.
    h.s.observed(1, a("198.51.100.1:41111"));
    h.s.observed(1, a("198.51.100.9:42222"));
    meet(&mut h, 2, "alice", &[]);
    let [ServerMsg::Meet { addr, .. }] = answers(&mut h, 2)[..] else {
        panic!("bob is introduced")
    };
    assert_eq!(addr, a("198.51.100.9:42222"));
    let [ServerMsg::Meet { you, .. }] = answers(&mut h, 1)[..] else {
        panic!("alice is introduced")
    };
    assert_eq!(you, a("198.51.100.9:42222"));
    // The per-address session count followed her: another session from the old IP is not
    // counted against it.
    assert_eq!(h.s.per_ip.get(&a("198.51.100.1:1").ip()), None);
    assert_eq!(h.s.per_ip.get(&a("198.51.100.9:1").ip()), Some(&1));
}

#[test]
fn a_request_expires() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    meet(&mut h, 1, "bob", &[]);
    h.advance(ASK_TTL_MS);
    meet(&mut h, 2, "alice", &[]);
    assert!(answers(&mut h, 1).is_empty(), "alice's request had lapsed");
    assert!(answers(&mut h, 2).is_empty());
    // Asking again (as `chirp peer` does before its request lapses) meets bob's.
    meet(&mut h, 1, "bob", &[]);
    assert_eq!(answers(&mut h, 1).len(), 1);
    assert_eq!(answers(&mut h, 2).len(), 1);
}

#[test]
fn requests_are_bounded_in_number_and_rate() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    for i in 0..MAX_ASKS {
        meet(&mut h, 1, &format!("friend{i}"), &[]);
    }
    assert!(errors(&mut h, 1).is_empty());
    meet(&mut h, 1, "onemore", &[]);
    assert_eq!(errors(&mut h, 1), vec![code::MEET_BUSY.to_owned()]);
    assert_eq!(h.s.meet_requests(), MAX_ASKS);
    // Asking for the same nick again refreshes its request, it takes no new place.
    meet(&mut h, 1, "friend0", &[]);
    assert!(errors(&mut h, 1).is_empty());
    assert_eq!(h.s.meet_requests(), MAX_ASKS);
    // The burst is spent now (MAX_ASKS + 2 requests): the rate holds the next back.
    assert_eq!(MEET_BURST as usize, MAX_ASKS + 2);
    meet(&mut h, 1, "friend1", &[]);
    assert_eq!(errors(&mut h, 1), vec![code::MEET_BUSY.to_owned()]);
    h.advance(60_000 / i64::from(MEET_PER_MIN));
    meet(&mut h, 1, "friend1", &[]);
    assert!(
        errors(&mut h, 1).is_empty(),
        "one more token a fifth of a minute later"
    );
    // Too many local addresses, or oneself: refused, before any state is kept.
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    let many: Vec<String> = (0..=crate::wire::MAX_MEET_LOCAL)
        .map(|i| format!("10.0.0.{i}:1"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    meet(&mut h, 2, "alice", &many);
    meet(&mut h, 2, "bob", &[]);
    meet(&mut h, 2, "not a nick!", &[]);
    assert_eq!(
        errors(&mut h, 2),
        vec![
            code::BAD_REQUEST.to_owned(),
            code::BAD_REQUEST.to_owned(),
            code::BAD_NAME.to_owned()
        ]
    );
    assert!(answers(&mut h, 1).is_empty());
}

#[test]
fn requests_end_with_their_session_and_need_hello() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    meet(&mut h, 1, "bob", &[]);
    h.s.disconnected(h.now, 1, "gone");
    h.drain();
    assert_eq!(h.s.meet_requests(), 0);
    meet(&mut h, 2, "alice", &[]);
    assert!(
        answers(&mut h, 2).is_empty(),
        "alice's request went with her session"
    );
    // Before hello, a meet is refused like any request.
    h.s.connected(h.now, 5, IP, key(5));
    h.drain();
    meet(&mut h, 5, "bob", &[]);
    assert_eq!(errors(&mut h, 5), vec![code::STATE.to_owned()]);
    // Alice's other device asks: the match is with it, not with the gone session.
    up(&mut h, 3, key(1), "alice", "198.51.100.1:40003");
    meet(&mut h, 3, "bob", &[]);
    let [ServerMsg::Meet { addr, .. }] = answers(&mut h, 2)[..] else {
        panic!("bob is introduced to alice's other session")
    };
    assert_eq!(addr, a("198.51.100.1:40003"));
}

#[test]
fn a_relay_follows_its_sessions_and_ends_with_either() {
    let mut h = H::new(open());
    h.s.set_relay_secret([9; 32]);
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    meet(&mut h, 1, "bob", &[]);
    meet(&mut h, 2, "alice", &[]);
    let [(token, Some(_))] = h.relay_out[..] else {
        panic!("a relay: {:?}", h.relay_out)
    };
    assert_eq!(h.s.relays(), 1);
    // The same meeting again gives another token: a token names one introduction.
    meet(&mut h, 1, "bob", &[]);
    meet(&mut h, 2, "alice", &[]);
    assert_eq!(h.relay_out.len(), 2);
    assert_ne!(h.relay_out[1].0, token);
    assert_eq!(h.s.relays(), 2);
    h.relay_out.clear();
    // Alice's NAT rebinds: both of her relays follow; an unchanged address changes nothing.
    h.s.observed(1, a("198.51.100.1:41111"));
    h.drain();
    h.s.observed(1, a("198.51.100.1:41111"));
    h.drain();
    assert_eq!(h.relay_out.len(), 2);
    for (_, pair) in &h.relay_out {
        assert_eq!(
            *pair,
            Some((a("198.51.100.1:41111"), a("203.0.113.2:40002")))
        );
    }
    h.relay_out.clear();
    // Bob leaves: both relays end.
    h.s.disconnected(h.now, 2, "gone");
    h.drain();
    assert_eq!(h.relay_out.len(), 2);
    assert!(h.relay_out.iter().all(|(_, p)| p.is_none()));
    assert_eq!(h.s.relays(), 0);
}

#[test]
fn a_session_holds_a_bounded_number_of_relays() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    for _ in 0..crate::server::meet::MAX_RELAYS + 1 {
        meet(&mut h, 1, "bob", &[]);
        meet(&mut h, 2, "alice", &[]);
        h.advance(10_000); // within the meet rate
    }
    assert_eq!(h.s.relays(), crate::server::meet::MAX_RELAYS);
    let ended: Vec<_> = h.relay_out.iter().filter(|(_, p)| p.is_none()).collect();
    assert_eq!(ended.len(), 1, "the oldest ended");
    assert_eq!(ended[0].0, h.relay_out[0].0);
}
