//! Read markers and search (issue 19): markers move forward only and reach every session of
//! their user; a search reads only a conversation its user may read, within its bounds.

use super::*;
use crate::wire::{MAX_MARKERS, MAX_SEARCH_PAGE, ReadMarker};

fn open() -> ServerConfig {
    ServerConfig {
        burst: 100_000,
        per_sec: 100_000,
        max_sessions_per_ip: 1000,
        nick_claim_burst: 1000,
        ..ServerConfig::default()
    }
}

fn read(conv: &str, id: u64) -> ClientMsg {
    ClientMsg::Read {
        conv: conv.into(),
        id,
    }
}

fn search(id: u64, room: Option<&str>, with: Option<&str>, q: &str, limit: u32) -> ClientMsg {
    ClientMsg::Search {
        id: Some(id),
        room: room.map(Into::into),
        with: with.map(Into::into),
        q: q.into(),
        before: None,
        limit,
    }
}

/// The `marker` and `markers` messages in `got`, as (conv, id) pairs, in order.
fn markers(got: &[ServerMsg]) -> Vec<(String, u64)> {
    got.iter()
        .flat_map(|m| match m {
            ServerMsg::Marker { conv, id } => vec![(conv.clone(), *id)],
            ServerMsg::Markers { markers } => markers
                .iter()
                .map(|ReadMarker { conv, id }| (conv.clone(), *id))
                .collect(),
            _ => vec![],
        })
        .collect()
}

/// The `search_results` in `got`: (id, conv, hit ids, more).
fn results(got: &[ServerMsg]) -> Vec<(Option<u64>, String, Vec<u64>, bool)> {
    got.iter()
        .filter_map(|m| match m {
            ServerMsg::SearchResults {
                id,
                conv,
                hits,
                more,
            } => Some((
                *id,
                conv.clone(),
                hits.iter().map(|m| m.id).collect(),
                *more,
            )),
            _ => None,
        })
        .collect()
}

fn stored_markers(h: &H) -> Vec<(Key, String, u64)> {
    h.persisted
        .iter()
        .filter_map(|op| match op {
            Op::ReadMarker { key, conv, upto } => Some((*key, conv.clone(), *upto)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_marker_moves_forward_only_and_reaches_every_session_of_its_user() {
    let mut h = H::new(open());
    h.hello(1, key(1), "alice", &["#a"]);
    h.hello(2, key(1), "alice", &["#a"]);
    h.hello(3, key(2), "bob", &["#a"]);
    for c in 1..=3 {
        h.say(3, c, "#a", "hello");
    }
    for s in 1..=3 {
        h.take(s);
    }
    // Alice reads on her first device: both of hers are told, bob is not.
    h.send(1, read("#A", 2));
    assert_eq!(stored_markers(&h), vec![(key(1), "#a".to_owned(), 2)]);
    assert_eq!(markers(&h.take(1)), vec![("#a".to_owned(), 2)]);
    assert_eq!(markers(&h.take(2)), vec![("#a".to_owned(), 2)]);
    assert_eq!(markers(&h.take(3)), vec![]);
    // Back, or the same: nothing stored, nobody told.
    h.send(2, read("#a", 1));
    h.send(2, read("#a", 2));
    assert_eq!(stored_markers(&h).len(), 1);
    assert!(markers(&h.take(1)).is_empty() && markers(&h.take(2)).is_empty());
    // Past the last id: as far as there is.
    h.send(2, read("#a", 99));
    assert_eq!(stored_markers(&h)[1], (key(1), "#a".to_owned(), 3));
    assert_eq!(markers(&h.take(1)), vec![("#a".to_owned(), 3)]);
    // A third device gets them after its welcome.
    h.hello(4, key(1), "alice", &[]);
    let got = h.take(4);
    assert!(matches!(got[0], ServerMsg::Welcome { .. }), "{got:?}");
    assert_eq!(
        got[1],
        ServerMsg::Markers {
            markers: vec![ReadMarker {
                conv: "#a".into(),
                id: 3
            }]
        }
    );
    // All gone and back: read from the store.
    for s in [1, 2, 4] {
        h.s.disconnected(h.now, s, "bye");
    }
    h.drain();
    h.hello(5, key(1), "alice", &[]);
    assert_eq!(markers(&h.take(5)), vec![("#a".to_owned(), 3)]);
    // Bob, who never read, gets no `markers` at all.
    h.hello(6, key(2), "bob", &[]);
    assert!(
        !h.take(6)
            .iter()
            .any(|m| matches!(m, ServerMsg::Markers { .. }))
    );
}

#[test]
fn a_marker_is_only_for_a_conversation_of_ones_own_and_markers_are_bounded() {
    let mut h = H::new(open());
    h.hello(1, key(1), "alice", &["#a"]);
    h.hello(2, key(2), "bob", &["#b"]);
    h.hello(3, key(3), "carol", &[]);
    h.say(2, 1, "#b", "in b");
    h.dm(2, 2, "carol", "psst");
    h.say(1, 1, "#a", "in a");
    for s in 1..=3 {
        h.take(s);
    }
    let bob_carol = dm_conv(&key(2), &key(3));
    for conv in ["#b", bob_carol.as_str()] {
        h.send(1, read(conv, 1));
        let errors = h.errors(1);
        assert_eq!(errors.len(), 1, "{conv}: {errors:?}");
        assert_eq!(errors[0].1, code::NOT_IN_ROOM);
    }
    // Carol may mark her DM with bob.
    h.send(3, read(&bob_carol, 1));
    assert_eq!(markers(&h.take(3)), vec![(bob_carol.clone(), 1)]);
    assert_eq!(stored_markers(&h), vec![(key(3), bob_carol.clone(), 1)]);

    // A user with MAX_MARKERS markers stored may move them, but not start another.
    let mut h = H::new(open());
    for i in 0..MAX_MARKERS {
        h.persisted.push(Op::ReadMarker {
            key: key(1),
            conv: format!("#r{i:04}"),
            upto: 1,
        });
    }
    h.hello(1, key(1), "alice", &["#a", "#r0000"]);
    h.say(1, 1, "#a", "one");
    h.say(1, 2, "#r0000", "one");
    h.say(1, 3, "#r0000", "two");
    let got = h.take(1);
    assert_eq!(markers(&got).len(), MAX_MARKERS, "all of them sent");
    h.send(1, read("#a", 1));
    let errors = h.errors(1);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].1, code::TOO_MANY_MARKERS);
    h.send(1, read("#r0000", 2));
    assert_eq!(markers(&h.take(1)), vec![("#r0000".to_owned(), 2)]);
}

#[test]
fn a_search_reads_only_what_its_user_may_read() {
    let mut h = H::new(open());
    h.hello(1, key(1), "alice", &["#a"]);
    h.hello(2, key(2), "bob", &["#b"]);
    h.say(1, 1, "#a", "the rocket launch is at noon");
    h.say(2, 1, "#b", "rocket science");
    h.dm(1, 2, "bob", "a rocket for bob");
    h.take(1);
    h.take(2);
    // Bob is not in #a: refused before the store is asked, and the request is closed.
    h.send(2, search(7, Some("#a"), None, "rocket", 10));
    assert!(h.searches.is_empty(), "the store was not asked");
    let got = h.take(2);
    assert!(
        got.iter()
            .any(|m| matches!(m, ServerMsg::Error { code: c, .. } if c == code::NOT_IN_ROOM))
    );
    assert_eq!(
        results(&got),
        vec![(Some(7), "#a".to_owned(), vec![], false)]
    );
    // In #b, and in his DM with alice, he finds what is there and nothing else.
    h.send(2, search(8, Some("#B"), None, "ROCKET", 10));
    assert_eq!(
        results(&h.take(2)),
        vec![(Some(8), "#b".to_owned(), vec![1], false)]
    );
    h.send(2, search(9, None, Some("alice"), "rocket", 10));
    let dm = dm_conv(&key(1), &key(2));
    assert_eq!(
        results(&h.take(2)),
        vec![(Some(9), dm.clone(), vec![1], false)]
    );
    assert_eq!(
        h.searches.iter().map(|s| s.1.as_str()).collect::<Vec<_>>(),
        vec!["#b", dm.as_str()]
    );
    // Alice, out of #a (as a kick or a ban puts her out), gets nothing from it.
    h.send(1, ClientMsg::Part { room: "#a".into() });
    h.send(1, search(10, Some("#a"), None, "rocket", 10));
    let got = h.take(1);
    assert_eq!(
        results(&got),
        vec![(Some(10), "#a".to_owned(), vec![], false)]
    );
    // Nobody but the two of them reads their DM: carol's `with` names her own DM with bob.
    h.hello(3, key(3), "carol", &[]);
    h.send(3, search(11, None, Some("bob"), "rocket", 10));
    assert_eq!(
        results(&h.take(3)),
        vec![(Some(11), dm_conv(&key(2), &key(3)), vec![], false)]
    );
}

#[test]
fn a_search_is_bounded_and_paged_newest_first() {
    let mut h = H::new(open());
    h.hello(1, key(1), "alice", &["#a"]);
    for c in 1..=60 {
        let text = if c % 2 == 0 {
            "even rocket"
        } else {
            "odd rocket"
        };
        h.say(1, c, "#a", text);
    }
    h.take(1);
    // The page is capped, newest first, and says there may be more.
    h.send(1, search(1, Some("#a"), None, "rocket", 1000));
    assert_eq!(h.searches[0].4, MAX_SEARCH_PAGE as usize);
    let got = results(&h.take(1));
    assert_eq!(got[0].2.len(), MAX_SEARCH_PAGE as usize);
    assert_eq!(got[0].2[..3], [60, 59, 58]);
    assert!(got[0].3, "more");
    // The next page, below the last id seen.
    h.send(
        1,
        ClientMsg::Search {
            id: Some(2),
            room: Some("#a".into()),
            with: None,
            q: "even rocket".into(),
            before: Some(11),
            limit: 10,
        },
    );
    assert_eq!(
        results(&h.take(1)),
        vec![(Some(2), "#a".to_owned(), vec![10, 8, 6, 4, 2], false)]
    );
    // Refused before the store: no words, too many words, too long.
    let asked = h.searches.len();
    for q in [
        " -- ".to_owned(),
        "a b c d e f g h i".to_owned(),
        "x".repeat(wire::MAX_SEARCH_QUERY + 1),
    ] {
        h.send(1, search(3, Some("#a"), None, &q, 10));
        let got = h.take(1);
        assert!(
            got.iter()
                .any(|m| matches!(m, ServerMsg::Error { code: c, .. } if c == code::BAD_REQUEST)),
            "{q}: {got:?}"
        );
        assert_eq!(
            results(&got),
            vec![(Some(3), "#a".to_owned(), vec![], false)]
        );
    }
    assert_eq!(h.searches.len(), asked, "the store was not asked");
}
