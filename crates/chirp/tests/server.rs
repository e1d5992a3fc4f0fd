//! `chirp serve` and `chirp connect` as real processes on loopback: rooms, DMs, history across
//! restarts, `kill -9` durability, offline delivery, nick ownership, multi-device, flood
//! control, name errors, graceful shutdown and server-key checks. Every wait is bounded.
//! (200 sessions in one room run in `crates/chat/tests/sessions.rs`: 200 processes are too
//! heavy for a 2-core machine.)

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::connect_json as client;
use common::{CHIRP, Chirp, Proc, Server, Stdout, WAIT};
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// [`client`] named after its nick, with its home `homes/home`, and no extra arguments: what
/// nearly every test starts. (Tests that share a home between nicks call `client`.)
fn user(
    homes: &tempfile::TempDir,
    home: &str,
    server: SocketAddr,
    nick: &str,
    rooms: &[&str],
) -> Chirp {
    client(nick, server, &homes.path().join(home), nick, rooms, &[])
}

/// Waits until the client is in the server's session and in every room given.
fn ready(c: &mut Chirp, rooms: &[&str]) {
    c.wait_type("connected", WAIT);
    let mut want: BTreeSet<&str> = rooms.iter().copied().collect();
    while !want.is_empty() {
        let v = c.wait_for("joined", WAIT, |v| v["type"] == "join" && v["self"] == true);
        want.remove(v["room"].as_str().unwrap_or(""));
    }
}

fn message(c: &mut Chirp, text: &str) -> Value {
    c.wait_for(&format!("message {text:?}"), WAIT, |v| {
        v["type"] == "message" && v["text"] == text
    })
}

/// Waits until every text in `want` has arrived as a message (in any order, since different
/// conversations are not ordered with each other); returns them by text.
fn all_messages(c: &mut Chirp, want: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<Value> = want
            .iter()
            .filter_map(|t| {
                c.seen
                    .iter()
                    .find(|v| v["type"] == "message" && v["text"] == *t)
                    .cloned()
            })
            .collect();
        if found.len() == want.len() {
            return found;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            c.next_event(left).is_some(),
            "{}: not all of {want:?} arrived\n{}",
            c.proc.name,
            c.diag()
        );
    }
}

/// Stderr of an exited child once its reader thread has caught up with the error line (the
/// process may exit a moment before the pipe is drained).
fn final_stderr(c: &Chirp) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let e = c.proc.stderr();
        if e.contains("error") || Instant::now() >= deadline {
            return e;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ends_ok(c: &mut Chirp) {
    c.proc.close_stdin();
    let st = c.exit(WAIT);
    c.drain();
    assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
}

fn texts_of(c: &Chirp) -> Vec<String> {
    c.seen_of("message")
        .iter()
        .map(|v| v["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn three_clients_chat_in_a_room_and_in_dms() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let h = |n: &str| homes.path().join(n);
    let mut a = client("alice", srv.addr, &h("a"), "alice", &["#r"], &[]);
    let mut b = client("bob", srv.addr, &h("b"), "bob", &["#r"], &[]);
    let mut c = client("carol", srv.addr, &h("c"), "carol", &["#r"], &[]);
    ready(&mut a, &["#r"]);
    ready(&mut b, &["#r"]);
    ready(&mut c, &["#r"]);
    a.line("hello room");
    for x in [&mut a, &mut b, &mut c] {
        let m = message(x, "hello room");
        assert_eq!(m["from"], "alice");
        assert_eq!(m["room"], "#r");
        assert_eq!(m["history"], false);
        assert!(m["id"].as_u64().is_some() && m["ts"].is_string(), "{m}");
    }
    let d = a.wait_type("delivered", WAIT);
    assert_eq!(d["room"], "#r");
    b.line("/msg carol just between us");
    let dm = message(&mut c, "just between us");
    assert_eq!(dm["from"], "bob");
    assert_eq!(dm["room"], Value::Null);
    assert_eq!(dm["to"], "carol");
    // The sender's own view shows it too; then carol answers in the room.
    message(&mut b, "just between us");
    c.line("/me nods");
    for x in [&mut a, &mut b, &mut c] {
        let m = message(x, "nods");
        assert_eq!(
            (m["from"].as_str(), m["action"].as_bool()),
            (Some("carol"), Some(true))
        );
    }
    // Alice was never told the DM.
    assert!(!texts_of(&a).contains(&"just between us".to_owned()));
    for x in [&mut a, &mut b, &mut c] {
        ends_ok(x);
    }
}

#[test]
fn history_survives_a_restart() {
    let data = tmp();
    let homes = tmp();
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut a = user(&homes, "a", srv.addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    for t in ["one", "two", "three"] {
        a.line(t);
    }
    ends_ok(&mut a);
    assert_eq!(a.seen_of("delivered").len(), 3, "{}", a.diag());
    srv.terminate();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut b = user(&homes, "b", srv.addr, "bob", &["#r"]);
    ready(&mut b, &["#r"]);
    let got: Vec<Value> = (0..3).map(|_| b.wait_type("message", WAIT)).collect();
    let texts: Vec<&str> = got
        .iter()
        .map(|v| v["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, vec!["one", "two", "three"]);
    assert!(
        got.iter()
            .all(|v| v["history"] == true && v["from"] == "alice")
    );
    let ids: Vec<u64> = got.iter().filter_map(|v| v["id"].as_u64()).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    // The join's replay ends like a page.
    let end = b.wait_type("history_end", WAIT);
    assert_eq!(
        (end["room"].as_str(), end["count"].as_u64()),
        (Some("#r"), Some(3))
    );
    // /history pages further back: nothing older than id 1.
    b.line("/history 10");
    let end = b.wait_type("history_end", WAIT);
    assert_eq!(end["count"], 0);
    ends_ok(&mut b);
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let data = tmp();
    let homes = tmp();
    // No flood control in the way: this test is about durability under load.
    let fast = [
        "--burst",
        "1000",
        "--per-sec",
        "1000",
        "--history-on-join",
        "1000",
    ];
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &fast);
    let mut a = user(&homes, "a", srv.addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    let lines: String = (0..400).map(|i| format!("m{i}\n")).collect();
    a.proc.write(lines.as_bytes());
    // Kill the server while acknowledgements are still flowing.
    let deadline = Instant::now() + WAIT;
    while a.seen_of("delivered").len() < 20 && Instant::now() < deadline {
        a.next_event(Duration::from_millis(200));
    }
    srv.proc.kill();
    // Whatever else the client printed before it noticed.
    while a.next_event(Duration::from_millis(500)).is_some() {}
    let delivered: BTreeSet<u64> = a
        .seen_of("delivered")
        .iter()
        .filter_map(|v| v["id"].as_u64())
        .collect();
    assert!(delivered.len() >= 20, "{}", a.diag());
    a.proc.kill();
    let srv = Server::start(data.path(), "127.0.0.1:0", &fast);
    let mut b = user(&homes, "b", srv.addr, "bob", &["#r"]);
    ready(&mut b, &["#r"]);
    // The join replays history (up to 1000): read until quiet.
    let mut stored = BTreeSet::new();
    while let Some(v) = b.next_event(Duration::from_secs(2)) {
        if v["type"] == "message" && v["from"] == "alice" {
            let id = v["id"].as_u64().expect("id");
            // Ids are the conversation's: message id k carries text m{k-1} (sent in order).
            assert_eq!(v["text"], format!("m{}", id - 1), "{v}");
            stored.insert(id);
        }
    }
    let lost: Vec<_> = delivered.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but lost: {lost:?}\n{}",
        b.diag()
    );
    ends_ok(&mut b);
}

#[test]
fn an_offline_dm_is_delivered_on_reconnect() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let bob_home = homes.path().join("b");
    let mut b = client("bob", srv.addr, &bob_home, "bob", &[], &[]);
    ready(&mut b, &[]);
    ends_ok(&mut b);
    let mut a = user(&homes, "a", srv.addr, "alice", &[]);
    ready(&mut a, &[]);
    a.line("/msg bob while you were away");
    a.wait_type("delivered", WAIT);
    ends_ok(&mut a);
    let mut b = client("bob again", srv.addr, &bob_home, "bob", &[], &[]);
    let m = message(&mut b, "while you were away");
    assert_eq!(
        (m["from"].as_str(), m["to"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(m["room"], Value::Null);
    ends_ok(&mut b);
    // Delivered once: a third session does not get it again.
    let mut b = client("bob 3", srv.addr, &bob_home, "bob", &["#x"], &[]);
    ready(&mut b, &["#x"]);
    b.line("marker");
    message(&mut b, "marker");
    assert!(
        !texts_of(&b).contains(&"while you were away".to_owned()),
        "{}",
        b.diag()
    );
    ends_ok(&mut b);
}

#[test]
fn nick_theft_is_refused() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut a = user(&homes, "a", srv.addr, "alice", &[]);
    ready(&mut a, &[]);
    let mut m = client(
        "mallory",
        srv.addr,
        &homes.path().join("m"),
        "Alice",
        &[],
        &[],
    );
    let st = m.exit(WAIT);
    assert!(!st.success(), "{}", m.diag());
    assert!(
        final_stderr(&m).contains("belongs to another key"),
        "{}",
        m.diag()
    );
    // Not even while alice is away.
    ends_ok(&mut a);
    let mut m = client(
        "mallory 2",
        srv.addr,
        &homes.path().join("m"),
        "alice",
        &[],
        &[],
    );
    assert!(!m.exit(WAIT).success(), "{}", m.diag());
    // Renaming onto a taken nick is refused too, with a clear error, and the session goes on.
    let mut m = client(
        "mallory 3",
        srv.addr,
        &homes.path().join("m"),
        "mallory",
        &[],
        &[],
    );
    ready(&mut m, &[]);
    m.line("/nick alice");
    let e = m.wait_type("error", WAIT);
    assert_eq!(e["code"], "nick_taken", "{e}");
    ends_ok(&mut m);
}

#[test]
fn multi_device_sees_everything_on_both() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let alice_home = homes.path().join("a");
    let mut laptop = client("laptop", srv.addr, &alice_home, "alice", &["#r"], &[]);
    ready(&mut laptop, &["#r"]);
    let mut phone = client("phone", srv.addr, &alice_home, "alice", &["#r"], &[]);
    ready(&mut phone, &["#r"]);
    let mut b = user(&homes, "b", srv.addr, "bob", &["#r"]);
    ready(&mut b, &["#r"]);
    laptop.line("from the laptop");
    b.line("hi alice");
    b.line("/msg alice private");
    phone.line("/msg bob from the phone");
    for x in [&mut laptop, &mut phone] {
        let got = all_messages(
            x,
            &["from the laptop", "hi alice", "private", "from the phone"],
        );
        assert_eq!(got[0]["from"], "alice");
        assert_eq!(got[2]["to"], "alice");
        assert_eq!(
            (got[3]["from"].as_str(), got[3]["to"].as_str()),
            (Some("alice"), Some("bob"))
        );
    }
    all_messages(&mut b, &["from the laptop", "from the phone"]);
    for x in [&mut laptop, &mut phone, &mut b] {
        ends_ok(x);
    }
}

#[test]
fn flood_control_answers_with_an_error_and_paced_clients_are_not_refused() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut a = client(
        "flooder",
        srv.addr,
        &homes.path().join("a"),
        "flooder",
        &["#r"],
        &["--no-pace"],
    );
    ready(&mut a, &["#r"]);
    let lines: String = (0..30).map(|i| format!("spam {i}\n")).collect();
    a.proc.write(lines.as_bytes());
    ends_ok(&mut a);
    let floods: Vec<&Value> = a
        .seen
        .iter()
        .filter(|v| v["type"] == "error" && v["code"] == "flood")
        .collect();
    let delivered = a.seen_of("delivered").len();
    assert!(!floods.is_empty(), "{}", a.diag());
    assert!(
        floods[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most 5 requests per second"),
        "{}",
        floods[0]
    );
    assert_eq!(
        floods.len() + delivered,
        30,
        "every line answered: {}",
        a.diag()
    );
    // The normal client paces itself to the advertised rate: 15 lines, all stored.
    let mut b = user(&homes, "b", srv.addr, "paced", &["#r"]);
    ready(&mut b, &["#r"]);
    let lines: String = (0..15).map(|i| format!("calm {i}\n")).collect();
    b.proc.write(lines.as_bytes());
    ends_ok(&mut b);
    assert_eq!(b.seen_of("delivered").len(), 15, "{}", b.diag());
    assert!(b.seen_of("error").is_empty(), "{}", b.diag());
}

#[test]
fn bad_names_get_clear_errors() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    // Checked before connecting.
    let mut x = client(
        "spacey",
        srv.addr,
        &homes.path().join("x"),
        "al ice",
        &[],
        &[],
    );
    assert!(!x.exit(WAIT).success());
    let err = final_stderr(&x);
    assert!(err.contains("nick contains a space"), "{err}");
    let mut a = user(&homes, "a", srv.addr, "alice", &[]);
    ready(&mut a, &[]);
    let cases = [
        ("/join rust", "start with '#'"),
        // (`/join #a b` is the room #a with the key "b" since issue 19, as in IRC: a space
        // cannot be typed into a room name any more; an invisible one still is refused.)
        ("/join #a\u{200B}b", "invisible character"),
        ("/join #\u{202E}evil", "bidirectional"),
        ("/nick \u{202E}ecila", "bidirectional"),
        (
            &format!("/nick {}", "n".repeat(30)),
            "too long: 30 characters (at most 24)",
        ),
    ];
    for (line, want) in cases {
        a.line(line);
        let e = a.wait_type("error", WAIT);
        assert_eq!(e["code"], "bad_name", "{line}: {e}");
        assert!(
            e["message"].as_str().unwrap_or("").contains(want),
            "{line}: {e}"
        );
    }
    ends_ok(&mut a);
}

#[test]
fn graceful_shutdown_tells_clients_who_come_back_by_themselves() {
    let data = tmp();
    let homes = tmp();
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let addr = srv.addr;
    let mut a = user(&homes, "a", addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    a.line("before");
    a.wait_type("delivered", WAIT);
    srv.terminate();
    a.wait_for("goodbye", WAIT, |v| {
        v["type"] == "status" && v["message"].as_str().unwrap_or("").contains("goodbye")
    });
    a.wait_type("disconnected", WAIT);
    // Same port, same data: the client reconnects, rejoins, and nothing is shown twice.
    let _srv = Server::start(data.path(), &addr.to_string(), &[]);
    a.wait_type("connected", WAIT);
    a.line("after");
    message(&mut a, "after");
    ends_ok(&mut a);
    assert_eq!(texts_of(&a), vec!["before", "after"], "{}", a.diag());
}

fn other_fingerprint(dir: &Path) -> String {
    let out = std::process::Command::new(CHIRP)
        .args(["id", "--home", &dir.display().to_string()])
        .output()
        .expect("chirp id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_wrong_pinned_server_key_is_refused_naming_both() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let wrong = other_fingerprint(&homes.path().join("other"));
    assert_ne!(wrong, srv.fingerprint);
    let mut a = client(
        "alice",
        srv.addr,
        &homes.path().join("a"),
        "alice",
        &["#leak"],
        &["--server-key", &wrong],
    );
    a.line("must not reach a refused server");
    assert!(!a.exit(WAIT).success(), "{}", a.diag());
    let err = final_stderr(&a);
    assert!(
        err.contains(&wrong) && err.contains(&srv.fingerprint),
        "{err}"
    );
    // The right pin works. Nothing of alice's reached the server: her nick was never claimed
    // (another key takes it) and her room has no history.
    let mut b = client(
        "bob",
        srv.addr,
        &homes.path().join("b"),
        "alice",
        &["#leak"],
        &["--server-key", &srv.fingerprint],
    );
    ready(&mut b, &["#leak"]);
    b.line("/history");
    b.wait_type("history_end", WAIT);
    assert!(b.seen_of("message").is_empty(), "{}", b.diag());
    ends_ok(&mut b);
}

#[test]
fn a_changed_server_key_on_the_same_address_is_refused() {
    let homes = tmp();
    let (data_a, data_b) = (tmp(), tmp());
    let mut first = Server::start(data_a.path(), "127.0.0.1:0", &[]);
    let addr = first.addr;
    let home: PathBuf = homes.path().join("a");
    let mut a = client("alice", addr, &home, "alice", &[], &[]);
    ready(&mut a, &[]);
    ends_ok(&mut a);
    first.terminate();
    // Another server (another key) on the very same address.
    let second = Server::start(data_b.path(), &addr.to_string(), &[]);
    assert_ne!(first.fingerprint, second.fingerprint);
    let mut a = client("alice again", addr, &home, "alice", &[], &[]);
    assert!(!a.exit(WAIT).success(), "{}", a.diag());
    let err = final_stderr(&a);
    assert!(
        err.contains(&first.fingerprint) && err.contains(&second.fingerprint),
        "{err}"
    );
}

#[test]
fn a_vanished_client_is_shown_as_quit_after_the_idle_timeout() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &["--idle-timeout", "2"]);
    // Clients send keepalives well inside their own idle timeout, so a live one stays.
    let idle = ["--idle-timeout", "2"];
    let mut a = client(
        "alice",
        srv.addr,
        &homes.path().join("a"),
        "alice",
        &["#r"],
        &idle,
    );
    ready(&mut a, &["#r"]);
    let mut b = client(
        "bob",
        srv.addr,
        &homes.path().join("b"),
        "bob",
        &["#r"],
        &idle,
    );
    ready(&mut b, &["#r"]);
    a.wait_for("bob's join", WAIT, |v| {
        v["type"] == "join" && v["nick"] == "bob"
    });
    // Bob vanishes without a word.
    b.proc.kill();
    let q = a.wait_type("quit", WAIT);
    assert_eq!(
        (q["nick"].as_str(), q["reason"].as_str()),
        (Some("bob"), Some("timed out"))
    );
    // Alice, idle but present, was not timed out meanwhile. She has been idle about as long
    // as bob has been gone (a server idle timeout); rather than sleep on, wait for proof that
    // the server still keeps her session well after that: three more packets from it on her
    // connection (the acknowledgements of her keepalives, one per 1 s period: the server sends
    // none of its own). A session it had timed out gets none.
    let received = |a: &mut Chirp| {
        a.line("/stats");
        let s = a.wait_type("stats", WAIT);
        s["packets_received"]
            .as_u64()
            .unwrap_or_else(|| panic!("no packets_received in {s}"))
    };
    let at_quit = received(&mut a);
    let deadline = Instant::now() + WAIT;
    while received(&mut a) < at_quit + 3 {
        assert!(
            Instant::now() < deadline,
            "the server went quiet: {}",
            a.diag()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    a.line("still here");
    message(&mut a, "still here");
    assert!(a.seen_of("disconnected").is_empty(), "{}", a.diag());
    ends_ok(&mut a);
}

#[test]
fn after_a_crash_the_client_resends_by_itself_and_nothing_is_stored_twice() {
    let data = tmp();
    let homes = tmp();
    let fast = [
        "--burst",
        "1000",
        "--per-sec",
        "1000",
        "--history-on-join",
        "1000",
    ];
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &fast);
    let addr = srv.addr;
    // A crashed server says nothing: the client notices it through its idle timeout (short
    // here to keep the test quick).
    let idle = ["--idle-timeout", "3"];
    let mut a = client(
        "alice",
        addr,
        &homes.path().join("a"),
        "alice",
        &["#r"],
        &idle,
    );
    ready(&mut a, &["#r"]);
    const N: usize = 300;
    let lines: String = (0..N).map(|i| format!("m{i}\n")).collect();
    a.proc.write(lines.as_bytes());
    let deadline = Instant::now() + WAIT;
    while a.seen_of("delivered").len() < 20 && Instant::now() < deadline {
        a.next_event(Duration::from_millis(200));
    }
    srv.proc.kill();
    // Same address, same data: the client reconnects and resends what was not acknowledged
    // (some of which the dead server had stored: those must not be stored again).
    let _srv = Server::start(data.path(), &addr.to_string(), &fast);
    a.proc.close_stdin();
    let st = a.exit(Duration::from_secs(60));
    a.drain();
    assert!(st.success(), "{}", a.diag());
    assert_eq!(a.seen_of("delivered").len(), N, "{}", a.diag());
    assert!(
        !a.seen_of("disconnected").is_empty(),
        "the crash went unnoticed: {}",
        a.diag()
    );
    let mut b = user(&homes, "b", addr, "bob", &["#r"]);
    ready(&mut b, &["#r"]);
    let got = (0..N)
        .map(|_| b.wait_type("message", WAIT))
        .map(|v| {
            (
                v["id"].as_u64().unwrap_or(0),
                v["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect::<Vec<_>>();
    let want: Vec<(u64, String)> = (0..N).map(|i| (i as u64 + 1, format!("m{i}"))).collect();
    assert_eq!(got, want);
    // And nothing after them.
    assert!(
        b.next_event(Duration::from_secs(1))
            .is_none_or(|v| v["type"] != "message")
    );
    ends_ok(&mut b);
}

#[test]
fn every_setting_can_come_from_a_config_file() {
    let data = tmp();
    let homes = tmp();
    let conf = homes.path().join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "bind = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nhistory_on_join = 2\n",
            data.path().display()
        ),
    )
    .expect("write config");
    let mut proc = Proc::spawn(
        "server",
        CHIRP,
        &[
            "serve".into(),
            "--config".into(),
            conf.display().to_string(),
        ],
        Stdout::Lines,
    );
    let line = String::from_utf8_lossy(&proc.recv(WAIT).expect("start line")).into_owned();
    assert!(line.contains(&data.path().display().to_string()), "{line}");
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut a = user(&homes, "a", addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    for t in ["1", "2", "3", "4", "5"] {
        a.line(t);
    }
    ends_ok(&mut a);
    let mut b = user(&homes, "b", addr, "bob", &["#r"]);
    ready(&mut b, &["#r"]);
    b.line("mine");
    message(&mut b, "mine");
    // history_on_join = 2 from the file: only the last two are replayed.
    assert_eq!(texts_of(&b), vec!["4", "5", "mine"], "{}", b.diag());
    ends_ok(&mut b);
    // A misspelt key is an error naming it, not silently ignored.
    std::fs::write(&conf, "histroy_on_join = 2\n").expect("write config");
    let (status, _, err) = common::run_to_end(
        CHIRP,
        &["serve", "--config", &conf.display().to_string()],
        WAIT,
    );
    assert!(!status.success());
    assert!(err.contains("histroy_on_join"), "{err}");
}

#[test]
fn retention_by_count_applies_and_ids_keep_increasing() {
    let data = tmp();
    let homes = tmp();
    let keep3 = ["--retention-count", "3"];
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &keep3);
    let mut a = user(&homes, "a", srv.addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    for t in ["1", "2", "3", "4", "5"] {
        a.line(t);
    }
    ends_ok(&mut a);
    srv.terminate();
    // Retention is applied at start (and then every minute).
    let srv = Server::start(data.path(), "127.0.0.1:0", &keep3);
    let mut b = user(&homes, "b", srv.addr, "bob", &["#r"]);
    ready(&mut b, &["#r"]);
    b.line("6");
    let six = message(&mut b, "6");
    assert_eq!(six["id"], 6, "ids continue after deleted messages: {six}");
    let replayed: Vec<(u64, String)> = b
        .seen_of("message")
        .iter()
        .filter(|v| v["history"] == true)
        .map(|v| {
            (
                v["id"].as_u64().unwrap_or(0),
                v["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        replayed,
        vec![
            (3, "3".to_owned()),
            (4, "4".to_owned()),
            (5, "5".to_owned())
        ]
    );
    ends_ok(&mut b);
}

#[test]
fn a_restarted_server_is_noticed_within_a_round_trip_not_the_idle_timeout() {
    let data = tmp();
    let homes = tmp();
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let addr = srv.addr;
    // The default idle timeout (30 s): only the server's stateless RESET can make this quick.
    let mut a = user(&homes, "a", addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    srv.proc.kill();
    let _srv = Server::start(data.path(), &addr.to_string(), &[]);
    let t0 = Instant::now();
    a.line("after the restart");
    let down = a.wait_type("disconnected", Duration::from_secs(10));
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.contains("restarted")),
        "{down}"
    );
    let delivered = a.wait_type("delivered", Duration::from_secs(10));
    assert!(delivered["id"].as_u64().is_some(), "{delivered}");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "noticed and delivered after {took:?}, not after the 30 s idle timeout"
    );
}

/// Everything a finished client process said: its JSON events and its stderr, lower-cased.
fn all_output(c: &mut Chirp) -> String {
    c.drain();
    let _ = final_stderr(c);
    c.diag().to_lowercase()
}

/// Issue 12, bug 7: a full server (`--max-connections` reached) used to drop a newcomer's
/// INITIALs silently, and the newcomer gave up after 30 s with "no answer from the server".
/// The server now refuses it at once (a REFUSE packet, "server full"), and `chirp connect`
/// fails within a few seconds saying so. (The client maps `CloseReason::Refused` to a fatal
/// "server full, try later"; until it does, this test fails on the retry loop.)
#[test]
fn a_full_server_refuses_a_newcomer_at_once() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &["--max-connections", "1"]);
    let mut a = user(&homes, "a", srv.addr, "alice", &["#r"]);
    ready(&mut a, &["#r"]);
    let started = Instant::now();
    let mut b = user(&homes, "b", srv.addr, "bob", &["#r"]);
    let status = b.proc.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    let out = all_output(&mut b);
    let status = status.unwrap_or_else(|| panic!("still running after {took:?}:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(out.contains("server full"), "{out}");
    assert!(!out.contains("no answer"), "{out}");
    // The first client is untouched.
    a.line("still here");
    message(&mut a, "still here");
    ends_ok(&mut a);
}

/// Issue 12, bug 7: the chat server's per-address session cap (`too_many_sessions`) is also a
/// clear, immediate refusal: an error before `welcome` is fatal to `chirp connect`, which exits
/// at once naming the cap, rather than retrying.
#[test]
fn too_many_sessions_from_one_address_is_refused_at_once() {
    let data = tmp();
    let homes = tmp();
    let srv = Server::start(data.path(), "127.0.0.1:0", &["--max-sessions-per-ip", "1"]);
    let mut a = user(&homes, "a", srv.addr, "alice", &["#cap"]);
    ready(&mut a, &["#cap"]);
    let started = Instant::now();
    let mut b = user(&homes, "b", srv.addr, "bob", &[]);
    let status = b.proc.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    let out = all_output(&mut b);
    let status = status.unwrap_or_else(|| panic!("still running after {took:?}:\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(out.contains("too many sessions"), "{out}");
    assert!(out.contains("at most 1"), "{out}");
    // Said once, not twice (the refusal is an error message, then a close: both touch the
    // session in one round, and the server must flush it once; flushing it twice sent the
    // error twice and then panicked on the empty queue, taking the server down).
    let refusals = out
        .lines()
        .filter(|l| l.contains(r#""type":"error""#) && l.contains("too many sessions"))
        .count();
    assert_eq!(refusals, 1, "{out}");
    // The server is still there for the session it kept.
    a.line("still here");
    message(&mut a, "still here");
    ends_ok(&mut a);
}

/// Issue 12, bug 8: settings that make no sense are refused with a message naming the setting
/// and its range, before anything is bound: on the command line, in the config file, and in
/// the address given to `chirp connect` and `chirp peer --to`.
#[test]
fn out_of_range_settings_are_refused_before_serving() {
    let data = tmp();
    let dir = data.path().display().to_string();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--data-dir", dir.as_str()];
        args.extend_from_slice(extra);
        common::run_to_end(CHIRP, &args, Duration::from_secs(10))
    };
    for (flag, value, want) in [
        (
            "--max-connections",
            "0",
            "max_connections (--max-connections) must be 1 to 1000000, not 0",
        ),
        (
            "--max-message-size",
            "0",
            "max_message_size (--max-message-size) must be 1 to 61440, not 0",
        ),
        (
            "--retention-days",
            "0",
            "retention_days (--retention-days) must be 1 to 36500, not 0",
        ),
        (
            "--history-on-join",
            "1000000000",
            "history_on_join (--history-on-join) must be 0 to 1000, not 1000000000",
        ),
    ] {
        let (status, out, err) = serve(&[flag, value]);
        assert!(!status.success(), "{flag} {value}: {out}");
        assert!(err.contains(want), "{flag} {value}: {err}");
        assert!(!out.contains("listening"), "{flag} {value}: {out}");
    }
    let conf = data.path().join("server.toml");
    std::fs::write(&conf, "max_connections = 0\n").expect("write config");
    let (status, out, err) = serve(&["--config", &conf.display().to_string()]);
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("max_connections (--max-connections) must be 1 to 1000000"),
        "{err}"
    );

    let homes = tmp();
    let home = homes.path().display().to_string();
    for server in ["127.0.0.1:0", "localhost:0", "[::1]:0"] {
        let (status, out, err) = common::run_to_end(
            CHIRP,
            &[
                "connect", server, "--nick", "alice", "--home", &home, "--json",
            ],
            Duration::from_secs(10),
        );
        assert!(!status.success(), "{server}: {out}");
        assert!(
            err.contains("port 0 is out of range (1-65535)"),
            "{server}: {err}"
        );
    }
    let (status, out, err) = common::run_to_end(
        CHIRP,
        &[
            "peer",
            "--bind",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:0",
            "--home",
            &home,
            "--json",
        ],
        Duration::from_secs(10),
    );
    assert!(!status.success(), "{out}");
    assert!(err.contains("out of range (1-65535)"), "{err}");
}

/// Issue 14: a server with many connections must say which one a log line is about. With
/// debug logging on, the lines about a session carry its span (`session{id=… remote=…}`) and
/// those about a connection the endpoint's (`conn{cid=… remote=…}`); message text never
/// appears.
#[test]
fn server_log_lines_name_their_session_and_connection() {
    let data = tmp();
    let homes = tmp();
    let mut srv = Server::start_env(
        data.path(),
        "127.0.0.1:0",
        &[],
        &[("RUST_LOG", "chirp_chat=debug,chirp_proto=debug")],
    );
    let mut a = user(&homes, "a", srv.addr, "alice", &["#logs"]);
    ready(&mut a, &["#logs"]);
    a.line("a secret line");
    message(&mut a, "a secret line");
    ends_ok(&mut a);
    srv.terminate();
    // Strip the colours the log formatter adds.
    let raw = srv.proc.stderr();
    let mut log = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            log.push(c);
        }
    }
    assert!(
        log.lines().any(|l| l.contains("session{id=")
            && l.contains("remote=127.0.0.1:")
            && l.contains("connected")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("conn{cid=") && l.contains("remote=127.0.0.1:")),
        "{log}"
    );
    assert!(
        !log.contains("a secret line"),
        "message text is never logged:\n{log}"
    );
}
