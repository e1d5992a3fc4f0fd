//! Issue 13 (the bulk drain through the server): a session that says `echo: false` in `hello`
//! gets no own copy of its room messages; their `ack` takes the copy's place, in order with the
//! room's other messages, live and in a catch-up replay. DMs keep their own copy.

use super::*;

fn open() -> ServerConfig {
    ServerConfig {
        burst: 100_000,
        per_sec: 100_000,
        max_sessions_per_ip: 1000,
        nick_claim_burst: 1000,
        replay_cache: 30,
        ..ServerConfig::default()
    }
}

/// A `hello` without echo, as `nick`, client instance `id`, joining `rooms`.
fn quiet_hello(h: &mut H, id: SessionId, k: Key, nick: &str, rooms: &[&str]) {
    h.connect(id, k);
    let ClientMsg::Hello {
        v,
        nick,
        client,
        rooms,
        dms,
        ..
    } = hello_msg(id, nick, rooms)
    else {
        unreachable!("hello_msg makes a hello");
    };
    h.send(
        id,
        ClientMsg::Hello {
            v,
            nick,
            client,
            rooms,
            dms,
            echo: false,
        },
    );
}

/// `(kind, id)` of each room message or ack of `conv` in `got`, in order: `m` for a `msg`
/// without `c`, `own` for one with it, `ack` for an ack.
fn order(got: &[ServerMsg], conv: &str) -> Vec<(&'static str, u64)> {
    got.iter()
        .filter_map(|m| match m {
            ServerMsg::Msg(m) if m.conv == conv && m.c.is_some() => Some(("own", m.id)),
            ServerMsg::Msg(m) if m.conv == conv => Some(("m", m.id)),
            ServerMsg::Ack { conv: c, id, .. } if c == conv => Some(("ack", *id)),
            _ => None,
        })
        .collect()
}

#[test]
fn without_echo_the_ack_takes_the_own_copys_place_in_order() {
    let mut h = H::new(open());
    quiet_hello(&mut h, 1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    // Alice's other device (another client instance) and a session of hers with echo.
    h.hello(3, key(1), "alice", &["#r"]);
    h.advance(1000);
    for id in 1..=3 {
        h.take(id);
    }
    h.say(2, 1, "#r", "b1");
    h.say(1, 1, "#r", "a1");
    h.say(2, 2, "#r", "b2");
    h.say(3, 1, "#r", "a2");
    let a = h.take(1);
    assert_eq!(
        order(&a, "#r"),
        [("m", 1), ("ack", 2), ("m", 3), ("m", 4)],
        "{a:?}"
    );
    let b = h.take(2);
    assert_eq!(
        order(&b, "#r"),
        [
            ("own", 1),
            ("ack", 1),
            ("m", 2),
            ("own", 3),
            ("ack", 3),
            ("m", 4)
        ],
        "bob asked for his echo"
    );
    let a3 = h.take(3);
    // With echo, as before: its own copy with `c`, then the ack.
    assert_eq!(
        order(&a3, "#r"),
        [("m", 1), ("m", 2), ("m", 3), ("own", 4), ("ack", 4)]
    );
    // DMs keep the own copy without echo too.
    h.dm(1, 2, "bob", "psst");
    let a = h.take(1);
    let conv = a
        .iter()
        .find_map(|m| match m {
            ServerMsg::Ack { conv, .. } => Some(conv.clone()),
            _ => None,
        })
        .expect("acked");
    assert_eq!(order(&a, &conv), [("own", 1), ("ack", 1)]);
}

#[test]
fn a_quiet_sender_outside_the_room_still_gets_its_ack() {
    let mut h = H::new(open());
    quiet_hello(&mut h, 1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    h.take(1);
    h.auto_commit = false;
    h.say(1, 1, "#r", "bye all");
    h.send(1, ClientMsg::Part { room: "#r".into() });
    h.commit_held();
    let a = h.take(1);
    assert!(
        a.iter()
            .any(|m| matches!(m, ServerMsg::Ack { c: 1, id: 1, .. })),
        "{a:?}"
    );
    assert_eq!(ids_of(&h.take(2), "#r"), [1]);
}

#[test]
fn a_quiet_reader_behind_gets_its_ack_in_the_replay_in_its_place() {
    let mut h = H::new(open());
    h.hello(2, key(2), "bob", &["#r"]);
    h.stuck.insert(1);
    quiet_hello(&mut h, 1, key(1), "alice", &["#r"]);
    let text = "y".repeat(8 * 1024);
    for c in 1..=20 {
        h.say(2, c, "#r", &text);
    }
    // Alice, behind, says something: stored as id 21, then 20 more from bob.
    h.say(1, 1, "#r", "me too");
    for c in 21..=40 {
        h.say(2, c, "#r", &text);
    }
    let live = h.take(1);
    h.unstick(1);
    let got: Vec<ServerMsg> = live.into_iter().chain(h.take(1)).collect();
    let want: Vec<(&str, u64)> = (1..=41)
        .map(|id| if id == 21 { ("ack", 21) } else { ("m", id) })
        .collect();
    assert_eq!(order(&got, "#r"), want);
    assert!(h.after_answered >= 1, "part of it came from the store");
}

#[test]
fn a_resend_behind_a_replay_is_acknowledged_in_the_replay_not_before() {
    let mut h = H::new(open());
    quiet_hello(&mut h, 1, key(1), "alice", &["#r"]);
    h.hello(2, key(2), "bob", &["#r"]);
    let text = "z".repeat(8 * 1024);
    for c in 1..=20 {
        h.say(2, c, "#r", &text);
    }
    h.take(1);
    // Alice's message is stored as id 21, and the connection drops before she takes
    // anything more: the ack is lost. Then 20 more from bob.
    h.stuck.insert(1);
    h.say(1, 1, "#r", "late");
    h.s.disconnected(h.now, 1, "timed out");
    for c in 21..=40 {
        h.say(2, c, "#r", &text);
    }
    // She comes back stuck, resuming #r after 0, and resends c = 1 while the replay is still
    // in its first page: the ack would overtake ids 9..20. It comes in the replay instead.
    h.stuck.insert(3);
    h.connect(3, key(1));
    h.send(
        3,
        ClientMsg::Hello {
            v: wire::VERSION,
            nick: "alice".into(),
            client: 1,
            rooms: vec![JoinReq {
                room: "#r".into(),
                after: Some(0),
                key: None,
            }],
            dms: vec![],
            echo: false,
        },
    );
    h.say(3, 1, "#r", "late");
    let live = h.take(3);
    assert!(
        !live.iter().any(|m| matches!(m, ServerMsg::Ack { .. })),
        "no ack ahead of the replay"
    );
    h.unstick(3);
    let got: Vec<ServerMsg> = live.into_iter().chain(h.take(3)).collect();
    let want: Vec<(&str, u64)> = (1..=41)
        .map(|id| if id == 21 { ("ack", 21) } else { ("m", id) })
        .collect();
    assert_eq!(order(&got, "#r"), want, "one ack, in its place");
    assert_eq!(h.s.stats().messages, 41);
}
