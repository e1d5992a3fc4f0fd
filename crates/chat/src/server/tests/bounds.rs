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
            Op::ReleaseNick { key, .. } => Some(*key),
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

fn older(id: u64) -> ClientMsg {
    ClientMsg::History {
        id: Some(id),
        room: Some("#r".into()),
        with: None,
        before: Some(3),
        limit: 10,
    }
}

impl H {
    /// Answers the `n`th `ReadHistory` seen (an empty page).
    fn answer_history(&mut self, n: usize) {
        let (session, conv, _, _) = self.reads[n].clone();
        let id = self.read_ids[n];
        self.s.history_loaded(session, &conv, id, Ok(Vec::new()));
        self.drain();
    }
}

/// History reads in flight: `MAX_HISTORY_READS` per session (one more is refused with `busy`
/// and closed by its `history_end`), `MAX_READS` server-wide (the rest wait, in order; a read
/// of a session that ended meanwhile is dropped).
#[test]
fn store_reads_are_bounded_per_session_and_server_wide() {
    let config = ServerConfig {
        replay_cache: 5,
        ..roomy()
    };
    let mut h = H::with(config, filled(&["#r"], 20, 10));
    for i in 1..=7 {
        h.hello(i, many_key(i as usize), &format!("u{i}"), &["#r"]);
    }
    h.inbox.clear();
    assert!(h.reads.is_empty());
    for id in 1..=MAX_HISTORY_READS as u64 + 1 {
        h.send(1, older(id));
    }
    assert_eq!(h.reads.len(), MAX_HISTORY_READS);
    let got = h.take(1);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(&got[0], ServerMsg::Error { code, .. } if code == code::BUSY));
    let last = MAX_HISTORY_READS as u64 + 1;
    assert!(matches!(&got[1], ServerMsg::HistoryEnd { id: Some(i), count: 0, .. } if *i == last));
    // Six more sessions ask one page each: the server hands the runner MAX_READS at once.
    for i in 2..=7 {
        h.send(i, older(100 + i));
    }
    assert_eq!(h.reads.len(), MAX_READS);
    // Session 7's read waits; it leaves.
    h.s.disconnected(h.now, 7, "left");
    h.drain();
    let mut answered = 0;
    while answered < h.reads.len() {
        h.answer_history(answered);
        answered += 1;
        assert!(h.reads.len() - answered <= MAX_READS);
    }
    let sessions: Vec<SessionId> = h.reads.iter().map(|r| r.0).collect();
    assert_eq!(sessions, vec![1, 1, 2, 3, 4, 5, 6], "in order, without 7's");
    for i in 1..=6 {
        assert!(
            h.take(i)
                .iter()
                .any(|m| matches!(m, ServerMsg::HistoryEnd { id: Some(_), .. })),
            "session {i} got its page"
        );
    }
    // Answered: session 1 may ask again.
    h.send(1, older(9));
    assert_eq!(h.reads.len(), 8);
    assert!(h.errors(1).is_empty());
}

/// The replay caches of all conversations hold at most `MAX_CACHE_BYTES`: past it, the
/// caches written to least recently are emptied. Nothing else is lost with them: ids go on
/// (no id is given twice), `history` and a first join read what the cache no longer holds
/// from the store.
#[test]
fn conversation_caches_are_bounded_in_bytes_and_ids_survive_a_trim() {
    let mut h = H::new(roomy());
    let rooms: Vec<String> = (0..10).map(|i| format!("#c{i}")).collect();
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    h.hello(1, key(1), "alice", &names);
    let text = "y".repeat(8000);
    let mut c = 0;
    for room in &rooms {
        for _ in 0..300 {
            c += 1;
            h.say(1, c, room, &text);
            let held: usize = h.s.convs.values().map(|cv| cv.bytes).sum();
            assert_eq!(held, h.s.cache_bytes);
            assert!(h.s.cache_bytes <= MAX_CACHE_BYTES, "{}", h.s.cache_bytes);
        }
        h.take(1);
    }
    let counted: usize =
        h.s.convs
            .values()
            .flat_map(|cv| cv.recent.iter())
            .map(record_bytes)
            .sum();
    assert_eq!(counted, h.s.cache_bytes);
    assert!(
        h.s.cache_bytes > MAX_CACHE_BYTES / 2,
        "the bound was reached"
    );
    let c0 = &h.s.convs["#c0"];
    assert!(c0.trimmed && c0.recent.is_empty());
    assert_eq!(c0.committed, 300);
    // The next message of a trimmed conversation gets the next id.
    h.say(1, c + 1, "#c0", "after the trim");
    let acks: Vec<u64> = h
        .take(1)
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Ack { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(acks, vec![301]);
    let ids: Vec<u64> = h
        .stored
        .iter()
        .filter(|r| r.conv == "#c0")
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, (1..=301).collect::<Vec<_>>(), "each id once");
    // History older than what is cached now is read from the store.
    h.send(
        1,
        ClientMsg::History {
            id: Some(1),
            room: Some("#c0".into()),
            with: None,
            before: None,
            limit: 5,
        },
    );
    assert_eq!(h.reads, vec![(1, "#c0".to_owned(), None, 5)]);
    // A first join of a trimmed room replays its last 50 from the store.
    let c1 = &h.s.convs["#c1"];
    assert!(c1.trimmed);
    h.hello(2, key(2), "carol", &["#c1"]);
    let got = h.msgs(2);
    let history: Vec<u64> = got.iter().filter(|m| m.history).map(|m| m.id).collect();
    assert_eq!(history, (251..=300).collect::<Vec<_>>());
}
