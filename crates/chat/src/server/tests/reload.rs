//! Issue 16: the limits a running server takes without a restart ([`Server::reconfigure`]).

use super::*;

/// The limits of the default config, with `f` applied.
fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = ServerConfig::default().limits();
    f(&mut l);
    l
}

#[test]
fn the_same_limits_change_nothing_and_tell_nobody() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.take(1);
    let same = ServerConfig::default().limits();
    assert_eq!(h.s.reconfigure(h.now, &same), vec![]);
    assert_eq!(h.s.limits(), same);
    h.drain();
    assert!(h.take(1).is_empty());
}

#[test]
fn changes_are_named_as_in_the_config_file_with_both_values() {
    let old = Limits::default();
    let new = limits(|l| {
        l.burst = 3;
        l.per_sec = 1;
        l.max_text = 4096;
        l.max_per_conv = Some(100);
        l.max_age_ms = Some(7 * DAY_MS);
        l.nick_expiry_ms = None;
    });
    let shown: Vec<String> = old.changes(&new).iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "max_message_size 8192 -> 4096",
            "burst 10 -> 3",
            "per_sec 5 -> 1",
            "retention_count none -> 100",
            "retention_days none -> 7",
            "nick_expiry_days 180 -> 0 (never)",
        ]
    );
    assert_eq!(
        new.retention(),
        chirp_store::Retention {
            max_per_conv: Some(100),
            max_age: Some(std::time::Duration::from_secs(7 * 86_400)),
        }
    );
    // And back: the reverse changes.
    assert_eq!(new.changes(&old).len(), 6);
    assert_eq!(
        ServerConfig::default().limits(),
        Limits::default(),
        "limits() reads what set_limits() writes"
    );
    let mut c = ServerConfig::default();
    c.set_limits(&new);
    assert_eq!(c.limits(), new);
}

/// A lower flood limit holds at once for a session already up, its client is told the new
/// limits, and a higher one lets more through.
#[test]
fn flood_control_changes_at_once_and_clients_are_told() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.take(1);
    // A full bucket (10) under the old limits...
    let changes = h.s.reconfigure(
        h.now,
        &limits(|l| {
            l.burst = 3;
            l.per_sec = 1;
        }),
    );
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!((h.s.limits().burst, h.s.limits().per_sec), (3, 1));
    h.drain();
    assert_eq!(
        h.take(1),
        vec![ServerMsg::Limits {
            burst: 3,
            per_sec: 1,
            max_text: 8192
        }]
    );
    // ...is cut to the new burst: the 4th request is refused, naming the new limits.
    for c in 1..=5 {
        h.say(1, c, "#r", "spam");
    }
    let errs = h.errors(1);
    assert_eq!(
        errs.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![Some(4), Some(5)]
    );
    assert!(
        errs[0]
            .2
            .contains("at most 1 requests per second (bursts of 3)"),
        "{}",
        errs[0].2
    );
    // 1/s: after 999 ms still nothing, after 1000 ms one.
    h.advance(999);
    h.say(1, 6, "#r", "too soon");
    assert_eq!(h.errors(1).len(), 1);
    h.advance(1);
    h.say(1, 7, "#r", "ok");
    assert!(h.errors(1).is_empty());
    // Raised: the bucket refills to the new burst at the new rate.
    h.s.reconfigure(h.now, &limits(|l| l.burst = 20));
    h.advance(5_000);
    for c in 10..30 {
        h.say(1, c, "#r", "many");
    }
    assert!(h.errors(1).is_empty(), "20 at once now fit");
    h.say(1, 30, "#r", "one more");
    assert_eq!(h.errors(1).len(), 1);
}

/// The time before a change counts at the old rate: a session that waited 2 s at 5/s has its
/// 10 back, whatever the new rate.
#[test]
fn time_before_a_change_refills_at_the_old_rate() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.take(1);
    for c in 1..=10 {
        h.say(1, c, "#r", "burst");
    }
    h.advance(2_000);
    h.s.reconfigure(h.now, &limits(|l| l.per_sec = 1));
    h.drain();
    h.take(1);
    for c in 11..=20 {
        h.say(1, c, "#r", "again");
    }
    assert!(h.errors(1).is_empty());
}

/// A session that has not said hello yet keeps the token its hello is owed, and gets the
/// limits in its welcome rather than in a `limits` message.
#[test]
fn a_session_before_hello_keeps_its_hello_token_and_learns_the_limits_from_welcome() {
    let mut h = H::new(ServerConfig::default());
    h.connect(1, key(1));
    h.s.reconfigure(h.now, &limits(|l| l.burst = 1));
    h.drain();
    assert!(h.take(1).is_empty(), "nothing before welcome");
    h.send(1, hello_msg(1, "alice", &["#r"]));
    let got = h.take(1);
    assert!(
        matches!(got[0], ServerMsg::Welcome { burst: 1, .. }),
        "{got:?}"
    );
    // The hello took its own token: the burst of 1 is still there.
    h.say(1, 1, "#r", "one");
    h.say(1, 2, "#r", "two");
    let errs = h.errors(1);
    assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![Some(2)]);
}

#[test]
fn a_smaller_max_text_refuses_longer_texts_and_a_larger_one_takes_them() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    h.take(1);
    h.s.reconfigure(h.now, &limits(|l| l.max_text = 10));
    h.drain();
    assert!(matches!(
        h.take(1)[..],
        [ServerMsg::Limits { max_text: 10, .. }]
    ));
    h.say(1, 1, "#r", &"x".repeat(11));
    let e = h.errors(1);
    assert_eq!(e[0].1, code::BAD_TEXT);
    assert!(e[0].2.contains("11 bytes (at most 10)"), "{}", e[0].2);
    h.s.reconfigure(h.now, &limits(|l| l.max_text = 60 * 1024));
    h.drain();
    h.take(1);
    h.say(1, 2, "#r", &"y".repeat(20_000));
    let got = h.take(1);
    assert!(
        got.iter().all(|m| !matches!(m, ServerMsg::Error { .. })),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|m| matches!(m, ServerMsg::Msg(m) if m.text.len() == 20_000))
    );
}

/// Counts apply to what comes next: sessions already over a lowered limit stay.
#[test]
fn lower_count_limits_apply_to_newcomers_and_leave_what_is_there() {
    let mut h = H::new(ServerConfig::default());
    for i in 1..=3 {
        h.hello(i, key(i as u8), &format!("u{i}"), &["#a", "#b"]);
    }
    h.s.reconfigure(
        h.now,
        &limits(|l| {
            l.max_sessions_per_ip = 2;
            l.max_rooms_per_user = 2;
        }),
    );
    h.drain();
    assert!(h.closed.is_empty());
    h.connect(4, key(4));
    assert_eq!(h.errors(4)[0].1, code::TOO_MANY_SESSIONS);
    h.send(
        1,
        ClientMsg::Join(JoinReq {
            room: "#c".into(),
            after: None,
            key: None,
        }),
    );
    let e = h.errors(1);
    assert_eq!(e[0].1, code::TOO_MANY_ROOMS);
    assert!(e[0].2.contains("at most 2"), "{}", e[0].2);
}

/// Retention: what a lower count or a shorter age no longer keeps leaves the replay caches at
/// once (the store is the runner's), so a newcomer's history holds only what is kept.
#[test]
fn lower_retention_empties_the_replay_caches_of_what_is_no_longer_kept() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &["#r"]);
    for c in 1..=5 {
        h.say(1, c, "#r", &format!("m{c}"));
        h.advance(1_000);
    }
    h.advance(10_000);
    h.say(1, 6, "#r", "m6");
    h.s.reconfigure(h.now, &limits(|l| l.max_per_conv = Some(4)));
    h.drain();
    h.hello(2, key(2), "bob", &["#r"]);
    let got: Vec<String> = h.msgs(2).into_iter().map(|m| m.text).collect();
    assert_eq!(got, vec!["m3", "m4", "m5", "m6"]);
    // Age: 5 s keeps only m6 (the others are 10 s older).
    h.s.reconfigure(
        h.now,
        &limits(|l| {
            l.max_per_conv = Some(4);
            l.max_age_ms = Some(5_000);
        }),
    );
    h.drain();
    h.hello(3, key(3), "carol", &["#r"]);
    let got: Vec<String> = h.msgs(3).into_iter().map(|m| m.text).collect();
    assert_eq!(got, vec!["m6"]);
    assert_eq!(
        h.s.cache_bytes,
        h.s.convs.values().map(|c| c.bytes).sum::<usize>(),
        "the caches' byte count follows"
    );
}

/// A shorter nick expiry takes effect at the next timeout: a binding already older than it is
/// aged out.
#[test]
fn a_shorter_nick_expiry_ages_out_bindings_already_past_it() {
    let mut h = H::new(ServerConfig::default());
    h.hello(1, key(1), "alice", &[]);
    h.s.disconnected(h.now, 1, "left");
    h.drain();
    // Past the restart grace, but far from 180 days.
    h.advance(2 * DAY_MS);
    h.hello(2, key(2), "alice", &[]);
    assert_eq!(h.errors(2)[0].1, code::NICK_TAKEN);
    h.s.reconfigure(h.now, &limits(|l| l.nick_expiry_ms = Some(DAY_MS)));
    h.drain();
    let due = h.s.poll_timeout().expect("an age-out is due");
    assert!(due <= h.now, "due at once: {due} > {}", h.now);
    h.advance(1);
    assert!(
        h.persisted
            .iter()
            .any(|op| matches!(op, Op::ReleaseNick { key: k, .. } if *k == key(1)))
    );
    h.hello(3, key(2), "alice", &[]);
    assert!(matches!(h.take(3)[0], ServerMsg::Welcome { ref nick, .. } if nick == "alice"));
}

#[test]
fn a_new_nick_claim_rate_applies_to_the_next_claim() {
    let mut h = H::new(ServerConfig::default());
    // Default burst 5 per address: lowered to 1, the second new key is refused.
    h.s.reconfigure(h.now, &limits(|l| l.nick_claim_burst = 1));
    h.hello(1, key(1), "alice", &[]);
    assert!(matches!(h.take(1)[0], ServerMsg::Welcome { .. }));
    h.hello(2, key(2), "bob", &[]);
    assert_eq!(h.errors(2)[0].1, code::NICK_RATE);
}
