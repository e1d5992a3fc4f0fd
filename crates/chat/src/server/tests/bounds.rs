//! Issue 14, "Memory": every table that remote input grows has a bound, in entries and in
//! bytes, shown here in virtual time.

use super::*;

fn many_key(i: usize) -> Key {
    let mut k = [0xAB; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    k
}

fn roomy() -> ServerConfig {
    ServerConfig {
        nick_claim_burst: 1_000_000,
        max_sessions_per_ip: 1_000_000,
        burst: 1_000_000,
        per_sec: 1_000_000,
        ..ServerConfig::default()
    }
}

/// The references that recognise resent messages: at most `MAX_REFS`, in at most
/// `MAX_REF_BYTES` (fixed-size entries: no conversation name is held per entry), and every
/// one of the last `MAX_REFS / 2` is still known.
#[test]
fn the_recent_references_are_bounded_in_entries_and_bytes() {
    const { assert!(std::mem::size_of::<RefState>() <= 32) };
    let mut h = H::new(ServerConfig::default());
    let conv = h.s.conv_hash(&dm_conv(&key(1), &key(2)));
    let n = 3 * MAX_REFS + 17;
    let mut most = 0;
    for i in 0..n {
        let r = (many_key(i % 1000), i as u64, 7);
        let state = RefState::Stored {
            conv,
            id: i as u64 + 1,
            ts: 0,
        };
        h.s.remember(r, state);
        if i % 10_000 == 0 || i + 1 == n {
            assert!(h.s.refs.len() <= MAX_REFS, "{} refs", h.s.refs.len());
            most = most.max(h.s.refs.bytes());
        }
    }
    assert!(most <= MAX_REF_BYTES, "{most} > {MAX_REF_BYTES}");
    // About 10 MB, whatever the conversations' names.
    const { assert!(MAX_REF_BYTES < 11 * 1024 * 1024) };
    for i in n - MAX_REFS / 2..n {
        let r = (many_key(i % 1000), i as u64, 7);
        assert!(h.s.refs.get(&r).is_some(), "ref {i} forgotten too early");
    }
    assert!(h.s.refs.get(&(many_key(0), 0, 7)).is_none());
}

/// A resend is recognised by the conversation it names again: acknowledged with the original
/// id (room and DM), and refused (`bad_request`, with its `c`) if it names another one.
#[test]
fn a_resend_is_acknowledged_by_the_conversation_it_names() {
    let mut h = H::new(roomy());
    h.hello(1, key(1), "alice", &["#a", "#b"]);
    h.hello(2, key(2), "bob", &["#a"]);
    h.take(1);
    h.say(1, 1, "#a", "one");
    h.dm(1, 2, "bob", "psst");
    // A thousand more messages between them and the resends.
    for c in 3..1003 {
        h.say(1, c, "#b", "filler");
    }
    h.take(1);
    let stored = h.stored.len();
    h.say(1, 1, "#a", "one");
    h.dm(1, 2, "bob", "psst");
    let acks: Vec<_> = h
        .take(1)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::Ack { c, conv, id, .. } => Some((c, conv, id)),
            _ => None,
        })
        .collect();
    let dm = dm_conv(&key(1), &key(2));
    assert_eq!(acks, vec![(1, "#a".into(), 1), (2, dm, 1)]);
    assert_eq!(h.stored.len(), stored, "nothing stored twice");
    // The same c naming another conversation: not taken for a resend, nor for a new message.
    h.say(1, 1, "#b", "one");
    let e = h.errors(1);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].0, e[0].1.as_str()), (Some(1), code::BAD_REQUEST));
    assert_eq!(h.stored.len(), stored);
}

/// Keys seen once and never again: once their nicks expire, the bindings leave every nick
/// table (and the store: `ReleaseNick`), a bounded batch per `handle_timeout`. Keys that came
/// back, or stay connected, keep theirs.
#[test]
fn nick_bindings_of_keys_never_seen_again_are_aged_out() {
    let expiry = 30 * DAY_MS;
    let mut h = H::new(ServerConfig {
        nick_expiry_ms: Some(expiry),
        ..roomy()
    });
    let n = 3 * AGE_OUT_PER_TICK + 5;
    for i in 0..n {
        let id = i as SessionId + 10;
        h.hello(id, many_key(i), &format!("u{i}"), &[]);
        h.s.disconnected(h.now, id, "left");
        h.drain();
    }
    h.take(1);
    // One stays, one comes back after 20 days.
    h.hello(1, key(1), "stays", &[]);
    h.advance(20 * DAY_MS);
    h.hello(2, many_key(0), "u0", &[]);
    h.s.disconnected(h.now, 2, "left");
    h.drain();
    assert_eq!(h.s.nick_of.len(), n + 1);
    // Just before the expiry: nothing goes.
    h.advance(10 * DAY_MS - 1000);
    assert_eq!(h.s.nick_of.len(), n + 1);
    let before = h.persisted.len();
    let mut calls = 0;
    h.now += 1000;
    while h.s.poll_timeout().is_some_and(|t| t <= h.now) {
        calls += 1;
        assert!(calls < 100, "handle_timeout is always due");
        let from = h.persisted.len();
        h.s.handle_timeout(h.now);
        h.drain();
        let released = h.persisted[from..]
            .iter()
            .filter(|o| matches!(o, Op::ReleaseNick { .. }))
            .count();
        assert!(released <= AGE_OUT_PER_TICK, "{released}");
    }
    let released: Vec<Key> = h.persisted[before..]
        .iter()
        .filter_map(|o| match o {
            Op::ReleaseNick { key } => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), n - 1);
    assert!(!released.contains(&many_key(0)));
    assert!(!released.contains(&key(1)));
    // Only the two bindings left, in every table.
    assert_eq!(h.s.nick_of.len(), 2);
    assert_eq!(h.s.nick_owner.len(), 2);
    assert_eq!(h.s.seen.len(), 2);
    assert_eq!(h.s.by_seen.len(), 1, "the connected one is not listed");
    assert!(h.s.nick_look.len() <= 2 * 4, "{}", h.s.nick_look.len());
    assert!(h.s.seen_due.len() <= 1 && h.s.seen_queued.len() <= 1);
    // The next to age out is u0, 20 days after the first ones.
    assert_eq!(h.s.age_out_due().map(|t| t - h.now), Some(20 * DAY_MS));
    // A freed nick is anyone's; its former key claims a nick as a new key does.
    h.hello(3, key(3), "u5", &[]);
    assert!(matches!(h.take(3)[0], ServerMsg::Welcome { ref nick, .. } if nick == "u5"));
}
