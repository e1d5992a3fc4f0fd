//! Issue 12: request ids echoed in `history_end`, the sender's own copy of a message carrying
//! its `c`, and a client catching up on everything it missed (from the store, a bounded page
//! at a time, before live traffic resumes), also after a restart.

use super::*;

fn wide_open(replay_cache: usize) -> ServerConfig {
    ServerConfig {
        burst: 100_000,
        per_sec: 100_000,
        max_sessions_per_ip: 1000,
        nick_claim_burst: 1000,
        replay_cache,
        ..ServerConfig::default()
    }
}

fn history(
    id: Option<u64>,
    room: Option<&str>,
    with: Option<&str>,
    before: Option<u64>,
) -> ClientMsg {
    ClientMsg::History {
        id,
        room: room.map(Into::into),
        with: with.map(Into::into),
        before,
        limit: 2,
    }
}

/// A `hello` as `nick` with client instance `client`, resuming `rooms` (room, after).
fn resume(h: &mut H, id: SessionId, k: Key, nick: &str, client: u64, rooms: &[(&str, u64)]) {
    h.connect(id, k);
    let rooms = rooms
        .iter()
        .map(|(r, a)| JoinReq {
            room: (*r).into(),
            after: Some(*a),
            key: None,
        })
        .collect();
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: nick.into(),
        client,
        rooms,
        dms: vec![],
        echo: true,
    };
    h.send(id, hello);
}

/// What the reference client shows of `got`, by its rule: a non-history message at or below
/// the last id seen in its conversation is dropped. Returns the ids shown, and how many were
/// dropped as already seen.
fn shown(got: &[ServerMsg], conv: &str, mut seen: u64) -> (Vec<u64>, usize) {
    let (mut ids, mut dropped) = (Vec::new(), 0);
    for m in got {
        if let ServerMsg::Msg(m) = m {
            if m.conv != conv {
                continue;
            }
            if !m.history && m.id <= seen {
                dropped += 1;
                continue;
            }
            seen = seen.max(m.id);
            ids.push(m.id);
        }
    }
    (ids, dropped)
}

#[test]
fn history_ids_are_echoed_and_answers_may_overtake_an_ack_or_each_other() {
    let mut h = H::new(wide_open(5));
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=8 {
        h.say(1, c, "#r", "x");
    }
    h.take(1);
    // A `say` whose commit is slow: the history asked after it is answered first.
    h.auto_commit = false;
    h.say(1, 100, "#r", "slow");
    h.send(1, history(Some(7), Some("#r"), None, Some(8)));
    let got = h.take(1);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(matches!(&got[0], ServerMsg::Msg(m) if m.id == 6 && m.history));
    assert_eq!(
        got[2],
        ServerMsg::HistoryEnd {
            id: Some(7),
            conv: "#r".into(),
            count: 2
        }
    );
    h.commit_held();
    assert!(matches!(
        h.take(1).last(),
        Some(ServerMsg::Ack { c: 100, .. })
    ));
    h.auto_commit = true;
    // A page from the store (older than the cache) is overtaken by one from the cache.
    h.send(1, history(Some(8), Some("#r"), None, Some(3)));
    assert_eq!(h.reads.last(), Some(&(1, "#r".to_owned(), Some(3), 2)));
    assert_eq!(h.read_ids.last(), Some(&Some(8)));
    h.send(1, history(Some(9), Some("#r"), None, None));
    assert!(matches!(
        h.take(1).last(),
        Some(ServerMsg::HistoryEnd {
            id: Some(9),
            count: 2,
            ..
        })
    ));
    let page: Vec<Record> = h.stored.iter().filter(|r| r.id < 3).cloned().collect();
    h.s.history_loaded(1, "#r", Some(8), Ok(page));
    h.drain();
    let got = h.take(1);
    assert_eq!(
        got.last(),
        Some(&ServerMsg::HistoryEnd {
            id: Some(8),
            conv: "#r".into(),
            count: 2
        })
    );
    // A read that failed: its error, then the end that closes the request.
    h.send(1, history(Some(10), Some("#r"), None, Some(2)));
    h.s.history_loaded(1, "#r", Some(10), Err("disk on fire".into()));
    h.drain();
    let got = h.take(1);
    assert!(matches!(&got[0], ServerMsg::Error { code, .. } if code == code::STORE));
    assert_eq!(
        got[1],
        ServerMsg::HistoryEnd {
            id: Some(10),
            conv: "#r".into(),
            count: 0
        }
    );
    // Refused requests: the error, then an empty end with the id (only when there is one).
    h.send(1, history(Some(11), Some("#Nope"), None, None));
    h.send(1, history(Some(12), None, Some("nobody"), None));
    h.send(1, history(None, Some("#nope"), None, None));
    h.send(1, history(Some(13), Some("#r"), Some("alice"), None));
    let got = h.take(1);
    let codes: Vec<(Option<&str>, Option<u64>, Option<&str>)> = got
        .iter()
        .map(|m| match m {
            ServerMsg::Error { code, .. } => (Some(code.as_str()), None, None),
            ServerMsg::HistoryEnd { id, conv, count: 0 } => (None, *id, Some(conv.as_str())),
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (Some(code::NOT_IN_ROOM), None, None),
            (None, Some(11), Some("#nope")),
            (Some(code::NO_SUCH_NICK), None, None),
            (None, Some(12), Some("")),
            (Some(code::NOT_IN_ROOM), None, None),
            (Some(code::BAD_REQUEST), None, None),
            (None, Some(13), Some("")),
        ]
    );
    // Before `hello`, and refused by flood control: the same.
    h.connect(2, key(2));
    h.send(2, history(Some(14), Some("#r"), None, None));
    let got = h.take(2);
    assert!(matches!(&got[0], ServerMsg::Error { code, .. } if code == code::STATE));
    assert!(matches!(
        &got[1],
        ServerMsg::HistoryEnd {
            id: Some(14),
            count: 0,
            ..
        }
    ));
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    for _ in 0..11 {
        h.send(1, history(Some(15), Some("#r"), None, None));
    }
    let got = h.take(1);
    let flood = got
        .iter()
        .position(|m| matches!(m, ServerMsg::Error { code, .. } if code == code::FLOOD))
        .expect("refused by flood control");
    assert!(matches!(
        &got[flood + 1],
        ServerMsg::HistoryEnd {
            id: Some(15),
            count: 0,
            ..
        }
    ));
}

#[test]
fn only_the_sending_client_s_own_copy_carries_its_sequence_number() {
    let mut h = H::new(wide_open(256));
    // Alice on two devices (client instances 1 and 2), Bob, and Carol (DM recipient).
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(1), "alice", &["#r"]);
    h.hello(3, key(2), "bob", &["#r"]);
    h.hello(4, key(3), "carol", &[]);
    for s in 1..=4 {
        h.take(s);
    }
    h.say(1, 5, "#r", "room");
    h.dm(1, 6, "carol", "dm");
    let c_of = |h: &mut H, s| -> Vec<(u64, Option<u64>)> {
        h.msgs(s).iter().map(|m| (m.id, m.c)).collect()
    };
    assert_eq!(c_of(&mut h, 1), vec![(1, Some(5)), (1, Some(6))]);
    assert_eq!(c_of(&mut h, 2), vec![(1, None), (1, None)]);
    assert_eq!(c_of(&mut h, 3), vec![(1, None)]);
    assert_eq!(c_of(&mut h, 4), vec![(1, None)]);
    // A DM to oneself: the sending session's copy (once) carries it, the other device's not.
    h.dm(2, 7, "alice", "note");
    assert_eq!(c_of(&mut h, 2), vec![(1, Some(7))]);
    assert_eq!(c_of(&mut h, 1), vec![(1, None)]);
    // The wire: `c` only where it is set.
    h.say(2, 8, "#r", "again");
    let bob = h.take(3);
    let ServerMsg::Msg(m) = &bob[0] else {
        panic!("{bob:?}")
    };
    assert!(!String::from_utf8_lossy(&ServerMsg::Msg(m.clone()).encode()).contains("\"c\""));
    h.take(1);
    h.take(2);
    // Messages missed while away (the sender's echo among them): the catch-up copy to a new
    // session of the same client instance carries `c`; another instance's does not.
    h.s.disconnected(h.now, 1, "timed out");
    h.s.disconnected(h.now, 2, "timed out");
    h.hello(5, key(4), "dave", &["#r"]);
    h.say(5, 1, "#r", "while away");
    resume(&mut h, 6, key(1), "alice", 1, &[("#r", 1)]);
    resume(&mut h, 7, key(1), "alice", 2, &[("#r", 1)]);
    h.say(6, 9, "#r", "from the new session");
    assert_eq!(c_of(&mut h, 6), vec![(2, None), (3, None), (4, Some(9))]);
    assert_eq!(c_of(&mut h, 7), vec![(2, Some(8)), (3, None), (4, None)]);
    let _ = c_of(&mut h, 3);
    let _ = c_of(&mut h, 5);
}

#[test]
fn a_resume_past_the_cache_reads_the_store_and_live_messages_wait_their_turn() {
    let mut h = H::new(wide_open(16));
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    for c in 1..=3 {
        h.say(1, c, "#r", "seen");
    }
    assert_eq!(shown(&h.take(2), "#r", 0).0, vec![1, 2, 3]);
    h.s.disconnected(h.now, 2, "timed out");
    for c in 4..=503 {
        h.say(1, c, "#r", &format!("missed {c}"));
    }
    // Bob comes back; the store is slow to answer, and Alice goes on talking meanwhile.
    h.defer_after = true;
    resume(&mut h, 3, key(2), "bob", 3, &[("#r", 3)]);
    assert_eq!(h.after_reads.len(), 1, "one read at a time");
    let (_, _, conv, after, upto, limit, max) = h.after_reads[0].clone();
    assert_eq!((conv.as_str(), after, upto), ("#r", 3, 503));
    assert_eq!((limit, max), (REPLAY_READ, PAGE_BYTES));
    let mut c = 504;
    let mut rounds = 0;
    loop {
        // More per read than the cache holds, for a while: each read goes on to the newest.
        for _ in 0..if rounds < 6 { 20 } else { 0 } {
            h.say(1, c, "#r", &format!("live {c}"));
            c += 1;
        }
        assert!(h.after_reads.len() <= 1, "one read at a time");
        if !h.answer_after() {
            break;
        }
        h.drain();
        rounds += 1;
        assert!(rounds < 10, "{rounds} reads");
    }
    let got = h.take(3);
    assert!(
        !got.iter().any(|m| matches!(m, ServerMsg::Error { .. })),
        "{got:?}"
    );
    let last = c - 1;
    let (ids, dropped) = shown(&got, "#r", 3);
    assert_eq!(ids, (4..=last).collect::<Vec<_>>());
    assert_eq!(dropped, 0, "nothing sent twice");
    assert!(
        got.iter()
            .all(|m| !matches!(m, ServerMsg::Msg(m) if m.history))
    );
    // Caught up: live messages flow again, at once.
    h.say(1, c, "#r", "now");
    assert_eq!(shown(&h.take(3), "#r", last).0, vec![last + 1]);
    assert!(h.after_reads.is_empty());
}

/// The store's state as `Reader::load` gives it to a restarted server.
fn reloaded(h: &H, nicks: &[(&str, u8)], cache: usize) -> Loaded {
    let mut last_ids: HashMap<String, u64> = HashMap::new();
    for r in &h.stored {
        let e = last_ids.entry(r.conv.clone()).or_default();
        *e = (*e).max(r.id);
    }
    let mut recent: Vec<Record> = Vec::new();
    for (conv, last) in &last_ids {
        let mut page: Vec<Record> = h
            .stored
            .iter()
            .filter(|r| &r.conv == conv && r.id + cache as u64 > *last)
            .cloned()
            .collect();
        page.sort_by_key(|r| r.id);
        recent.extend(page);
    }
    Loaded {
        nicks: nicks.iter().map(|(n, k)| ((*n).into(), key(*k))).collect(),
        last_ids: last_ids.into_iter().collect(),
        recent,
        ..Loaded::default()
    }
}

#[test]
fn after_a_restart_a_client_catches_up_from_the_store_and_ids_go_on() {
    let mut h = H::new(wide_open(32));
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.take(2);
    h.s.disconnected(h.now, 2, "timed out");
    // Big messages: a store page stops at about PAGE_BYTES.
    let big = "b".repeat(8 * 1024);
    for c in 1..=300 {
        let text = if c % 3 == 0 {
            big.clone()
        } else {
            format!("m{c}")
        };
        h.say(1, c, "#r", &text);
    }
    // `kill -9` and restart: only the store is left.
    let loaded = reloaded(&h, &[("alice", 1), ("bob", 2)], 32);
    let stored = h.stored.clone();
    let mut h = H::with(wide_open(32), loaded);
    h.stored = stored;
    h.stuck.insert(3);
    resume(&mut h, 3, key(2), "bob", 3, &[("#r", 0)]);
    let mut got = Vec::new();
    let mut guard = 0;
    while h.outstanding.get(&3).copied().unwrap_or(0) > 0 {
        assert!(h.outstanding[&3] <= PAGE_BYTES + ONE_MESSAGE);
        got.extend(h.take(3));
        h.take_bytes(3, 20_000);
        guard += 1;
        assert!(guard < 10_000);
    }
    got.extend(h.take(3));
    let (ids, dropped) = shown(&got, "#r", 0);
    assert_eq!(ids, (1..=300).collect::<Vec<_>>());
    assert_eq!(dropped, 0);
    // A page of 8 KiB messages holds about PAGE_BYTES of them, not REPLAY_READ.
    assert!(h.after_most <= REPLAY_READ);
    assert!(h.after_answered >= 300 / 3 * 8 * 1024 / PAGE_BYTES);
    // The restarted server gives the next id after the stored ones.
    h.unstick(3);
    h.hello(4, key(1), "alice", &["#r"]);
    h.say(4, 1, "#r", "after the restart");
    assert_eq!(h.msgs(3).last().map(|m| m.id), Some(301));
}

#[test]
fn a_client_away_for_5000_messages_sees_each_once_in_order_under_the_bound() {
    let mut h = H::new(wide_open(256));
    h.hello(1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.say(1, 1, "#r", "before");
    assert_eq!(shown(&h.take(2), "#r", 0).0, vec![1]);
    h.s.disconnected(h.now, 2, "timed out");
    for c in 2..=5001 {
        h.advance(10);
        h.say(
            1,
            c,
            "#r",
            &format!("message {c} {}", "z".repeat(c as usize % 200)),
        );
    }
    h.take(1);
    // Bob's link takes 16 KiB per round trip; Alice talks on meanwhile.
    h.stuck.insert(3);
    resume(&mut h, 3, key(2), "bob", 3, &[("#r", 1)]);
    let mut got = Vec::new();
    let mut c = 5002;
    let mut rounds = 0;
    while h.outstanding.get(&3).copied().unwrap_or(0) > 0 {
        let queued = h.outstanding[&3];
        assert!(queued <= PAGE_BYTES + ONE_MESSAGE, "{queued} bytes queued");
        assert_eq!(h.s.sessions[&3].queued, queued);
        let held: usize = h.s.sessions[&3]
            .replays
            .values()
            .map(|r| r.page.len())
            .sum();
        assert!(held <= REPLAY_READ, "{held} messages held");
        got.extend(h.take(3));
        h.take_bytes(3, 16 * 1024);
        rounds += 1;
        if rounds % 10 == 0 {
            h.say(1, c, "#r", "live");
            c += 1;
        }
        assert!(rounds < 100_000);
    }
    got.extend(h.take(3));
    let (ids, dropped) = shown(&got, "#r", 1);
    assert_eq!(ids, (2..c).collect::<Vec<_>>());
    assert_eq!(dropped, 0, "nothing sent twice");
    assert!(c > 5002, "live messages came during the catch-up");
    assert!(
        !got.iter().any(|m| matches!(m, ServerMsg::Error { .. })),
        "no gap, no error"
    );
    // Pages of up to REPLAY_READ: some 20 reads for 5000 messages, not one per message.
    assert!(
        (19..=60).contains(&h.after_answered),
        "{}",
        h.after_answered
    );
}

#[test]
fn dms_missed_beyond_the_cache_come_from_the_store_and_are_marked_delivered() {
    let mut h = H::new(wide_open(16));
    h.hello(1, key(1), "alice", &[]);
    h.hello(2, key(2), "bob", &[]);
    h.s.disconnected(h.now, 2, "left");
    for c in 1..=100 {
        h.dm(1, c, "bob", &format!("d{c}"));
    }
    let conv = dm_conv(&key(1), &key(2));
    // Bob's phone connects: all 100 undelivered, in order, then marked delivered.
    h.hello(3, key(2), "bob", &[]);
    let (ids, dropped) = shown(&h.take(3), &conv, 0);
    assert_eq!((ids, dropped), ((1..=100).collect::<Vec<_>>(), 0));
    assert!(h.persisted.contains(&Op::DmCursor {
        key: key(2),
        conv: conv.clone(),
        upto: 100
    }));
    // Bob's laptop resumes the conversation from 40: 41..=100, again from the store.
    h.connect(4, key(2));
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: "bob".into(),
        client: 4,
        rooms: vec![],
        dms: vec![Resume {
            conv: conv.clone(),
            after: 40,
        }],
        echo: true,
    };
    h.send(4, hello);
    let (ids, dropped) = shown(&h.take(4), &conv, 40);
    assert_eq!((ids, dropped), ((41..=100).collect::<Vec<_>>(), 0));
}

#[test]
fn a_failed_store_read_closes_the_session_rather_than_skip() {
    let mut h = H::new(wide_open(4));
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=10 {
        h.say(1, c, "#r", "x");
    }
    h.defer_after = true;
    resume(&mut h, 2, key(2), "bob", 2, &[("#r", 0)]);
    let (session, token, conv, ..) = h.after_reads.pop_front().expect("a read");
    h.s.replay_loaded(h.now, session, &conv, token, Err("disk on fire".into()));
    h.drain();
    let got = h.take(2);
    assert!(got.iter().all(|m| !matches!(m, ServerMsg::Msg(_))));
    assert!(matches!(got.last(), Some(ServerMsg::Error { code, .. }) if code == code::STORE));
    assert_eq!(h.closed, vec![2]);
    // A stale answer (the session is gone) is ignored.
    h.s.replay_loaded(h.now, session, &conv, token, Ok(Vec::new()));
    h.drain();
}
