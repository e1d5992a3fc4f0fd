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
            relay_only: false,
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
            addr: Some(a("203.0.113.2:40002")),
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
            addr: Some(a("198.51.100.1:40001")),
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
    assert_eq!(addr, Some(a("198.51.100.9:42222")));
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
    assert_eq!(addr, Some(a("198.51.100.1:40003")));
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

/// `--relay-only`: a side that asks for it is given to nobody by address (no `addr`, no
/// `local` in the other side's answer); it still learns the other's, and both get the relay.
#[test]
fn a_relay_only_side_is_introduced_without_its_address() {
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    h.send(
        1,
        ClientMsg::Meet {
            nick: "bob".into(),
            local: vec![a("10.0.1.2:5000")],
            relay_only: true,
        },
    );
    meet(&mut h, 2, "alice", &["10.0.2.2:6000"]);
    let [(token, Some(_))] = h.relay_out[..] else {
        panic!("a relay: {:?}", h.relay_out)
    };
    let relay = Some(data_encoding::HEXLOWER.encode(&token));
    assert_eq!(
        answers(&mut h, 2),
        vec![ServerMsg::Meet {
            nick: "alice".into(),
            key: hex(key(1)),
            addr: None,
            local: vec![],
            you: a("203.0.113.2:40002"),
            relay: relay.clone(),
        }],
        "bob learns alice's key and the relay, not where she is"
    );
    let [ServerMsg::Meet { addr, .. }] = answers(&mut h, 1)[..] else {
        panic!("alice is introduced too")
    };
    assert_eq!(
        addr,
        Some(a("203.0.113.2:40002")),
        "bob did not ask to hide"
    );
    assert_eq!(h.relay_caps, [None], "no file: no cap");
}

fn file_offer(h: &mut H, from: SessionId, to: &str, id: u64, size: u64) {
    h.send(
        from,
        ClientMsg::FileOffer {
            to: to.into(),
            id,
            name: "f.bin".into(),
            size,
            hash: "ab".repeat(32),
        },
    );
}

fn file_answer(h: &mut H, from: SessionId, to: &str, id: u64, accept: bool) {
    h.send(
        from,
        ClientMsg::FileAnswer {
            to: to.into(),
            id,
            accept,
        },
    );
}

/// Issue 18: the relay of a pair introduced for a file is capped at the offer's size plus
/// the bounded overhead ([`relay_cap`]); a pair whose offer was declined, never made, or
/// made to someone else, is not.
#[test]
fn the_relay_of_a_file_pair_is_capped_at_the_offered_size() {
    use crate::server::files::{RELAY_CAP_FIXED, relay_cap};
    assert_eq!(relay_cap(0), RELAY_CAP_FIXED);
    assert_eq!(relay_cap(4_000_000), 5_000_000 + RELAY_CAP_FIXED);
    assert_eq!(relay_cap(u64::MAX), u64::MAX, "saturates");
    let mut h = H::new(open());
    up(&mut h, 1, key(1), "alice", "198.51.100.1:40001");
    up(&mut h, 2, key(2), "bob", "203.0.113.2:40002");
    up(&mut h, 3, key(3), "carol", "192.0.2.3:40003");
    // Alice offers bob 4 MB (id 7) and carol 9 MB (id 8); bob accepts 7, and he and alice
    // meet: their relay is capped at 4 MB and the overhead.
    file_offer(&mut h, 1, "bob", 7, 4_000_000);
    file_offer(&mut h, 1, "carol", 8, 9_000_000);
    file_answer(&mut h, 2, "alice", 7, true);
    meet(&mut h, 2, "alice", &[]);
    meet(&mut h, 1, "bob", &[]);
    assert_eq!(h.relay_caps, [Some(relay_cap(4_000_000))]);
    // The pair is used up: the next introduction of the two is an ordinary one.
    meet(&mut h, 2, "alice", &[]);
    meet(&mut h, 1, "bob", &[]);
    assert_eq!(h.relay_caps[1..], [None]);
    // Bob "accepts" carol's offer id 8 (made to carol, not him): no pair.
    file_answer(&mut h, 2, "alice", 8, true);
    meet(&mut h, 2, "alice", &[]);
    meet(&mut h, 1, "bob", &[]);
    assert_eq!(h.relay_caps[2..], [None], "not an offer to bob");
    // Carol declines hers: no pair either; she accepts it after all: capped at its size.
    file_answer(&mut h, 3, "alice", 8, false);
    meet(&mut h, 3, "alice", &[]);
    meet(&mut h, 1, "carol", &[]);
    assert_eq!(h.relay_caps[3..], [None], "declined");
    file_answer(&mut h, 3, "alice", 8, true);
    meet(&mut h, 3, "alice", &[]);
    meet(&mut h, 1, "carol", &[]);
    assert_eq!(h.relay_caps[4..], [Some(relay_cap(9_000_000))]);
    // An accepted offer whose meet comes too late (after ASK_TTL_MS) gives no cap.
    file_offer(&mut h, 1, "bob", 9, 1000);
    file_answer(&mut h, 2, "alice", 9, true);
    h.now += ASK_TTL_MS + 1;
    meet(&mut h, 2, "alice", &[]);
    meet(&mut h, 1, "bob", &[]);
    assert_eq!(h.relay_caps[5..], [None], "expired");
}
