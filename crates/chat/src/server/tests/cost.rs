//! What one request costs, second round: undelivered DMs marked delivered only once sent,
//! in order across pages of conversations and dropped sessions; sessions closed as too slow
//! ignored at once; DM resumes with their own cap; room replays not waiting for the DM read.

use super::*;

fn wide_open() -> ServerConfig {
    ServerConfig {
        burst: 10_000,
        per_sec: 10_000,
        max_sessions_per_ip: 1000,
        nick_claim_burst: 1000,
        ..ServerConfig::default()
    }
}

/// A `hello` as `nick`, with `dms` resumes; `stuck`: its transport takes nothing.
fn hello_with(h: &mut H, id: SessionId, k: Key, nick: &str, stuck: bool, dms: Vec<Resume>) {
    if stuck {
        h.stuck.insert(id);
    }
    h.connect(id, k);
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: nick.into(),
        client: id,
        rooms: vec![],
        dms,
        echo: true,
    };
    h.send(id, hello);
}

fn dm_cursor(h: &H, k: &Key, conv: &str) -> u64 {
    h.persisted
        .iter()
        .filter_map(|op| match op {
            Op::DmCursor { key, conv: c, upto } if key == k && c == conv => Some(*upto),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_live_dm_while_more_pages_are_to_be_read_waits_for_the_older_ones() {
    let mut h = H::new(wide_open());
    let bob = key(100);
    h.hello(100, bob, "bob", &[]);
    h.s.disconnected(h.now, 100, "left");
    // 40 senders: two pages of conversations (32 + 8). 4 KiB each, so that the first page's
    // replays outlast a page of output.
    let text = |n: &str| format!("{n}{}", "x".repeat(4 * 1024));
    for i in 0..40u8 {
        h.hello(u64::from(i), key(i), &format!("s{i}"), &[]);
        h.dm(u64::from(i), 1, "bob", &text("one"));
        h.dm(u64::from(i), 2, "bob", &text("two"));
    }
    hello_with(&mut h, 101, bob, "bob", true, vec![]);
    assert!(
        matches!(h.s.sessions[&101].offline, Offline::More(_)),
        "the first page is being sent, the second not read yet"
    );
    // A new DM in a conversation of the second page: it must neither overtake the two older
    // ones nor mark them delivered.
    let late = dm_conv(&key(39), &bob);
    h.dm(39, 3, "bob", "three");
    assert!(ids_of(&h.inbox[&101], &late).is_empty());
    assert!(dm_cursor(&h, &bob, &late) < 1);
    h.unstick(101);
    let got = h.take(101);
    for i in 0..40u8 {
        let conv = dm_conv(&key(i), &bob);
        let want: Vec<u64> = if i == 39 { vec![1, 2, 3] } else { vec![1, 2] };
        assert_eq!(ids_of(&got, &conv), want, "from s{i}");
        assert_eq!(dm_cursor(&h, &bob, &conv), *want.last().unwrap_or(&0));
    }
    // Nothing comes twice.
    h.s.disconnected(h.now, 101, "left");
    h.hello(102, bob, "bob", &[]);
    assert!(h.msgs(102).is_empty());
}

#[test]
fn a_session_dropped_mid_replay_leaves_the_rest_owed_and_it_comes_once_in_order() {
    let mut h = H::new(wide_open());
    let (alice, bob) = (key(1), key(2));
    h.hello(1, alice, "alice", &[]);
    h.hello(2, bob, "bob", &[]);
    h.s.disconnected(h.now, 2, "left");
    let text = "y".repeat(8 * 1024);
    for c in 1..=20 {
        h.dm(1, c, "bob", &text);
    }
    // Bob comes back on a link that takes a page and a bit, then nothing.
    hello_with(&mut h, 3, bob, "bob", true, vec![]);
    h.take_bytes(3, 16 * 1024);
    // Two more while he is behind: they join his replay, in turn.
    h.dm(1, 21, "bob", &text);
    h.dm(1, 22, "bob", &text);
    let conv = dm_conv(&alice, &bob);
    let first = ids_of(&h.take(3), &conv);
    assert!(!first.is_empty() && first.len() < 20, "{first:?}");
    assert!(
        dm_cursor(&h, &bob, &conv) < 21,
        "nothing is marked delivered before it is sent"
    );
    // The link dies mid-replay; what was sent is marked delivered, the rest stays owed.
    h.s.disconnected(h.now, 3, "timed out");
    h.drain();
    assert_eq!(dm_cursor(&h, &bob, &conv), *first.last().unwrap_or(&0));
    hello_with(&mut h, 4, bob, "bob", false, vec![]);
    let second = ids_of(&h.take(4), &conv);
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(all, (1..=22).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(dm_cursor(&h, &bob, &conv), 22);
    // The same with a resume from the last id seen, as the reference client sends.
    for c in 23..=30 {
        h.dm(1, c, "bob", &text);
    }
    h.s.disconnected(h.now, 4, "left");
    h.dm(1, 31, "bob", "while away");
    let resume = vec![Resume {
        conv: conv.clone(),
        after: 30,
    }];
    hello_with(&mut h, 5, bob, "bob", false, resume);
    assert_eq!(ids_of(&h.take(5), &conv), vec![31]);
}

#[test]
fn a_session_closed_as_too_slow_is_dropped_at_once_and_its_requests_ignored() {
    let mut h = H::with(wide_open(), filled(&["#big"], 200, 8 * 1024));
    h.linger = true;
    h.hello(2, key(2), "alice", &["#big"]);
    stuck_hello(
        &mut h,
        1,
        key(1),
        vec![JoinReq {
            room: "#big".into(),
            after: Some(200),
            key: None,
        }],
    );
    for _ in 0..3 {
        let req = ClientMsg::History {
            id: None,
            room: Some("#big".into()),
            with: None,
            before: None,
            limit: 200,
        };
        h.send(1, req);
    }
    assert_eq!(h.closed_now, vec![1], "closed at once, its queue dropped");
    // Until its connection is gone, whatever it sends is ignored.
    h.take(1);
    h.take(2);
    let stored = h.stored.len();
    h.say(1, 1, "#big", "after the close");
    h.send(1, ClientMsg::List);
    assert_eq!(h.stored.len(), stored, "nothing stored");
    assert!(h.take(1).is_empty());
    assert!(h.msgs(2).is_empty());
}

/// A key per partner, beyond the 256 of `key`.
fn partner(i: u16) -> Key {
    let mut k = [7u8; 32];
    k[..2].copy_from_slice(&i.to_be_bytes());
    k
}

#[test]
fn dm_resumes_with_nothing_owed_do_not_count_and_the_rest_have_their_own_cap() {
    let bob = key(200);
    let mut loaded = Loaded {
        nicks: vec![("bob".into(), bob)],
        ..Loaded::default()
    };
    let n = MAX_DM_RESUMES as u16 + 44;
    let convs: Vec<String> = (0..n).map(|i| dm_conv(&partner(i), &bob)).collect();
    for (i, conv) in convs.iter().enumerate() {
        loaded.last_ids.push((conv.clone(), 3));
        for id in 1..=3 {
            loaded.recent.push(Record {
                conv: conv.clone(),
                id,
                ts_ms: 5,
                from_key: partner(i as u16),
                from_nick: format!("p{i}"),
                to_key: Some(bob),
                to_nick: Some("bob".into()),
                kind: 0,
                text: format!("{id}"),
                client_ref: None,
                ..Record::default()
            });
        }
    }
    let mut h = H::with(wide_open(), loaded);
    let resume = |conv: &String, after| Resume {
        conv: conv.clone(),
        after,
    };
    // 40 conversations seen to the end, 2 not, and 2 that are not bob's: no refusal.
    let mut dms: Vec<Resume> = convs[..40].iter().map(|c| resume(c, 3)).collect();
    dms.push(resume(&convs[40], 1));
    dms.push(resume(&convs[41], 2));
    dms.push(resume(&dm_conv(&key(1), &key(2)), 0));
    dms.push(resume(&"@zz".to_owned(), 0));
    hello_with(&mut h, 1, bob, "bob", false, dms);
    let got = h.take(1);
    let errors: Vec<_> = got
        .iter()
        .filter(|m| matches!(m, ServerMsg::Error { .. }))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ids_of(&got, &convs[40]), vec![2, 3]);
    assert_eq!(ids_of(&got, &convs[41]), vec![3]);
    assert!(convs[..40].iter().all(|c| ids_of(&got, c).is_empty()));
    // More owed conversations than the cap: the first ones listed are resumed, one error
    // counts the rest.
    let dms: Vec<Resume> = convs.iter().map(|c| resume(c, 2)).collect();
    hello_with(&mut h, 2, bob, "bob", false, dms);
    let got = h.take(2);
    let errors: Vec<String> = got
        .iter()
        .filter_map(|m| match m {
            ServerMsg::Error {
                code: c, message, ..
            } if c == code::TOO_MANY_ROOMS => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("44 more conversations not resumed"),
        "{}",
        errors[0]
    );
    assert!(
        errors[0].contains(&MAX_DM_RESUMES.to_string()),
        "{}",
        errors[0]
    );
    let resumed = convs.iter().filter(|c| ids_of(&got, c) == vec![3]).count();
    assert_eq!(resumed, MAX_DM_RESUMES);
    assert_eq!(ids_of(&got, &convs[MAX_DM_RESUMES - 1]), vec![3]);
    assert!(ids_of(&got, &convs[MAX_DM_RESUMES]).is_empty());
}

#[test]
fn room_replays_do_not_wait_for_the_undelivered_dm_read_but_dm_resumes_do() {
    let alice = key(1);
    // 8 KiB messages: a join's history is several pages of output.
    let mut loaded = filled(&["#big", "#other"], 100, 8 * 1024);
    // A DM conversation with the filler, seen up to 1.
    let conv = dm_conv(&key(9), &alice);
    loaded.last_ids.push((conv.clone(), 2));
    for id in 1..=2 {
        loaded.recent.push(Record {
            conv: conv.clone(),
            id,
            ts_ms: 5,
            from_key: key(9),
            from_nick: "filler".into(),
            to_key: Some(alice),
            to_nick: Some("alice".into()),
            kind: 0,
            text: format!("dm {id}"),
            client_ref: None,
            ..Record::default()
        });
    }
    let mut h = H::with(wide_open(), loaded);
    h.defer_reads = true;
    h.connect(1, alice);
    let hello = ClientMsg::Hello {
        v: wire::VERSION,
        nick: "alice".into(),
        client: 1,
        rooms: vec![JoinReq {
            room: "#big".into(),
            after: None,
            key: None,
        }],
        dms: vec![Resume {
            conv: conv.clone(),
            after: 1,
        }],
        echo: true,
    };
    h.send(1, hello);
    assert_eq!(h.deferred.len(), 1, "the DM read is pending");
    // And a join meanwhile.
    let join = ClientMsg::Join(JoinReq {
        room: "#other".into(),
        after: None,
        key: None,
    });
    h.send(1, join);
    assert_eq!(h.deferred.len(), 1, "the DM read is still pending");
    let got = h.take(1);
    for room in ["#big", "#other"] {
        assert_eq!(ids_of(&got, room), (51..=100).collect::<Vec<_>>(), "{room}");
    }
    let ends = got
        .iter()
        .filter(|m| matches!(m, ServerMsg::HistoryEnd { count: 50, .. }))
        .count();
    assert_eq!(ends, 2);
    assert!(ids_of(&got, &conv).is_empty(), "the DM resume waits");
    // The read answers: the DM conversation goes on.
    let (session, k, after) = h.deferred.remove(0);
    let page = h.undelivered(&k, after.as_deref(), UNDELIVERED_PAGE);
    h.s.undelivered_loaded(h.now, session, Ok(page));
    h.drain();
    assert_eq!(ids_of(&h.take(1), &conv), vec![2]);
}
