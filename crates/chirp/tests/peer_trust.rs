//! Peer mode's key checks with real processes on loopback: no line reaches a peer whose key
//! is refused, however the starts race (each repro repeated), and a stranger on another port
//! of the peer's IP can neither capture the first-contact pin nor end the chat.

mod common;

use std::time::{Duration, Instant};

use common::{Chirp, WAIT, fingerprint, free_ports, lo, peer_home, retry_bind};

/// After the refusing side exited: anything the refused side was going to print has been
/// printed by now (the refusing side lingers after its refusal, and the refused one prints a
/// message the moment it arrives). Returns the messages it printed.
fn messages_seen(c: &mut Chirp) -> usize {
    let until = Instant::now() + Duration::from_millis(500);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if c.next_event(left).is_none() {
            break;
        }
    }
    c.seen_of("message").len()
}

const SECRET: &str = "this line must never reach a refused key";

#[test]
fn a_wrong_pin_leaks_no_line_to_a_peer_that_started_first() {
    // The repro: B starts first and dials A; A starts with a line to send and a pin that B's
    // key does not match. Before the fix, B printed A's line in 7 of 8 runs.
    const RUNS: usize = 8;
    let mut leaks = 0;
    for run in 0..RUNS {
        let (mut b, pa, pb) = retry_bind(|| {
            let [pa, pb] = free_ports();
            let b = Chirp::peer(&format!("B{run}"), lo(pb), lo(pa), &[])?;
            Ok((b, pa, pb))
        });
        let b_fp = fingerprint(&peer_home(&format!("B{run}"), lo(pb)));
        let wrong = fingerprint(&peer_home(&format!("other{run}"), lo(pb)));
        let mut a = Chirp::spawn_peer(&format!("A{run}"), lo(pa), lo(pb), &["--peer-key", &wrong]);
        a.line(SECRET);
        let err = a.wait_type("error", WAIT);
        let msg = err["message"].as_str().expect("text");
        assert!(
            msg.contains(&b_fp) && msg.contains(&wrong),
            "run {run}: {msg}"
        );
        let status = a.exit(WAIT);
        assert_eq!(status.code(), Some(1), "run {run}: {}", a.diag());
        leaks += messages_seen(&mut b);
    }
    assert_eq!(leaks, 0, "lines reached the refused peer in {RUNS} runs");
}

#[test]
fn an_impostor_at_a_known_address_gets_no_line() {
    // A and B chat once, so A remembers B's key. Then an impostor with another key takes B's
    // address and dials A, and A starts with a line to send. Before the fix, the impostor got
    // the line in 3 of 5 runs.
    const RUNS: usize = 5;
    let mut leaks = 0;
    for run in 0..RUNS {
        let (mut a, mut b) = Chirp::pair(&[], &[]);
        let (pa, pb) = (a.addr.port(), b.addr.port());
        a.line("hello B");
        assert_eq!(b.messages(1, WAIT), vec!["hello B"], "run {run}");
        a.proc.close_stdin();
        b.proc.close_stdin();
        assert!(a.exit(WAIT).success(), "run {run}: {}", a.diag());
        assert!(b.exit(WAIT).success(), "run {run}: {}", b.diag());
        drop(b);
        let real_fp = fingerprint(&peer_home("B", lo(pb)));
        let impostor_home = peer_home(&format!("impostor{run}"), lo(pb));
        let impostor_fp = fingerprint(&impostor_home);
        let home = impostor_home.display().to_string();
        let mut impostor =
            Chirp::peer("impostor", lo(pb), lo(pa), &["--home", &home]).expect("impostor starts");
        let mut a = Chirp::spawn_peer("A", lo(pa), lo(pb), &[]);
        a.line(SECRET);
        let err = a.wait_type("error", WAIT);
        let msg = err["message"].as_str().expect("text");
        assert!(
            msg.contains(&real_fp) && msg.contains(&impostor_fp),
            "run {run}: names both keys: {msg}"
        );
        assert_eq!(a.exit(WAIT).code(), Some(1), "run {run}: {}", a.diag());
        leaks += messages_seen(&mut impostor);
    }
    assert_eq!(leaks, 0, "lines reached the impostor in {RUNS} runs");
}

#[test]
fn a_stranger_on_another_port_cannot_capture_the_pin() {
    // B waits for A at PA. A stranger from another port of the same IP dials B first. B has
    // nobody to ask (JSON mode), so it refuses the stranger with an error that says how to
    // accept such a key, keeps running, and accepts the real A when it comes.
    let (mut b, pa, pb, px) = retry_bind(|| {
        let [pa, pb, px] = free_ports();
        let b = Chirp::peer("B", lo(pb), lo(pa), &[])?;
        Ok((b, pa, pb, px))
    });
    b.line("for A only");
    let stranger_home = peer_home("stranger", lo(px));
    let stranger_fp = fingerprint(&stranger_home);
    let home = stranger_home.display().to_string();
    let mut stranger =
        Chirp::peer("stranger", lo(px), lo(pb), &["--home", &home]).expect("stranger starts");
    stranger.line("from the stranger");
    let err = b.wait_type("error", WAIT);
    let msg = err["message"].as_str().expect("text");
    assert!(
        msg.contains(&stranger_fp) && msg.contains("--peer-key"),
        "names the key and the flag: {msg}"
    );
    assert!(
        b.proc.try_status().is_none(),
        "B keeps running: {}",
        b.diag()
    );
    drop(stranger);
    // B remembered nothing for A's address.
    let known = peer_home("B", lo(pb)).join("known_keys");
    let remembered = std::fs::read_to_string(&known).unwrap_or_default();
    assert!(remembered.is_empty(), "B remembered a key: {remembered}");

    let mut a = Chirp::peer("A", lo(pa), lo(pb), &[]).expect("A starts");
    assert_eq!(a.messages(1, WAIT), vec!["for A only"]);
    a.line("the real A");
    assert_eq!(b.messages(1, WAIT), vec!["the real A"]);
    assert!(
        b.seen_of("message")
            .iter()
            .all(|m| m["text"] != "from the stranger"),
        "{}",
        b.diag()
    );
    let a_fp = fingerprint(&peer_home("A", lo(pa)));
    let remembered = std::fs::read_to_string(&known).expect("known_keys written");
    let stored: Vec<String> = remembered
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, hex)| {
            let key = chirp_keys::PublicKey::from_hex(hex.trim()).expect("a key in hex");
            format!("{name} {}", key.fingerprint())
        })
        .collect();
    assert_eq!(
        stored,
        vec![format!("{} {a_fp}", lo(pa))],
        "B remembered exactly A's key, under A's address"
    );
}

#[test]
fn a_pinned_peer_is_accepted_from_another_port() {
    // What a port-changing NAT looks like on one host: A binds one port, B expects another.
    // With a pin, B accepts A's key from any port of that IP, and they chat.
    let ((mut a, mut b), _) = retry_bind(|| {
        let [pa, pb, pdecoy] = free_ports();
        let a_fp = fingerprint(&peer_home("A", lo(pa)));
        let b_fp = fingerprint(&peer_home("B", lo(pb)));
        let b = Chirp::peer("B", lo(pb), lo(pdecoy), &["--peer-key", &a_fp])?;
        let a = Chirp::peer("A", lo(pa), lo(pb), &["--peer-key", &b_fp])?;
        Ok(((a, b), pdecoy))
    });
    a.line("through the remapping");
    assert_eq!(b.messages(1, WAIT), vec!["through the remapping"]);
    b.line("and back");
    assert_eq!(a.messages(1, WAIT), vec!["and back"]);
    assert!(b.seen_of("error").is_empty(), "{}", b.diag());
}
