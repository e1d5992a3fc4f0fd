//! Edits, deletions, reactions and typing notices end to end (issue 19): a real `chirp serve`
//! and two `chirp connect --json` clients on loopback. alice edits and deletes her messages,
//! bob reacts to one and sees all of it live; bob's own forbidden attempts are refused; after
//! bob reconnects, the replayed history shows the edited text, the deleted message and the
//! reaction count; and once the server has stopped, the deleted text is nowhere in its SQLite
//! files.

mod common;

use common::{Chirp, Server, WAIT, connect_json as client};
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn joined(c: &mut Chirp, room: &str) {
    c.wait_for(&format!("joined {room}"), WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == room
    });
}

/// The id of alice's `text`, as `c` was sent it (live or replayed).
fn message(c: &mut Chirp, text: &str) -> Value {
    c.wait_for(&format!("message {text:?}"), WAIT, |v| {
        v["type"] == "message" && v["text"] == text
    })
}

fn error(c: &mut Chirp, code: &str) -> Value {
    c.wait_for(&format!("error {code}"), WAIT, |v| {
        v["type"] == "error" && v["code"] == code
    })
}

fn id(v: &Value) -> u64 {
    v["id"].as_u64().expect("an id")
}

/// Delivered ids of `c`'s own messages, in order, `n` of them.
fn delivered(c: &mut Chirp, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| id(&c.wait_type("delivered", WAIT)))
        .collect()
}

#[test]
fn edits_deletions_and_reactions_are_seen_live_and_in_replayed_history() {
    let data = tmp();
    let homes = tmp();
    let h = |n: &str| homes.path().join(n);
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut alice = client("alice", srv.addr, &h("a"), "alice", &["#r"], &[]);
    joined(&mut alice, "#r");
    let mut bob = client("bob", srv.addr, &h("b"), "bob", &["#r"], &[]);
    joined(&mut bob, "#r");

    const SECRET: &str = "the launch code is swordfish-4471";
    alice.line("first draft");
    alice.line(SECRET);
    let ids = delivered(&mut alice, 2);
    let (first, secret) = (ids[0], ids[1]);
    assert_eq!(id(&message(&mut bob, "first draft")), first);
    message(&mut bob, SECRET);

    // bob may not edit or delete alice's message (he is no operator of #r).
    bob.line(&format!("/edit {first} bob was here"));
    error(&mut bob, "forbidden");
    bob.line(&format!("/delete {first}"));
    error(&mut bob, "forbidden");
    // Typing: bob sees alice's notice; she does not see her own.
    alice.line("/typing");
    let t = bob.wait_type("typing", WAIT);
    assert_eq!(
        (t["from"].as_str(), t["room"].as_str()),
        (Some("alice"), Some("#r"))
    );

    alice.line(&format!("/edit {first} final text"));
    let e = bob.wait_type("edited", WAIT);
    assert_eq!(
        (e["target"].as_u64(), e["text"].as_str(), e["by"].as_str()),
        (Some(first), Some("final text"), Some("alice"))
    );
    bob.line(&format!("/react {first} 👍"));
    let r = alice.wait_type("reaction", WAIT);
    assert_eq!(
        (
            r["target"].as_u64(),
            r["emoji"].as_str(),
            r["count"].as_u64(),
            r["by"].as_str()
        ),
        (Some(first), Some("👍"), Some(1), Some("bob"))
    );
    bob.wait_type("reaction", WAIT);
    alice.line(&format!("/delete {secret}"));
    let d = bob.wait_type("deleted", WAIT);
    assert_eq!(d["target"].as_u64(), Some(secret));
    alice.wait_type("deleted", WAIT);
    // A deleted message takes no reaction.
    bob.line(&format!("/react {secret} 🎉"));
    error(&mut bob, "no_such_message");

    // bob leaves and comes back as a new process: the history replayed on his join shows
    // the state of each message.
    bob.proc.close_stdin();
    assert!(bob.exit(WAIT).success(), "{}", bob.diag());
    let mut bob = client("bob again", srv.addr, &h("b"), "bob", &["#r"], &[]);
    joined(&mut bob, "#r");
    let m = message(&mut bob, "final text");
    assert_eq!(
        (
            m["id"].as_u64(),
            m["history"].as_bool(),
            m["edited"].as_bool()
        ),
        (Some(first), Some(true), Some(true))
    );
    assert_eq!(
        m["reactions"],
        serde_json::json!([{"emoji": "👍", "count": 1}])
    );
    let gone = bob.wait_for("the deleted message", WAIT, |v| {
        v["type"] == "message" && v["id"].as_u64() == Some(secret)
    });
    assert_eq!(
        (gone["deleted"].as_bool(), gone["text"].as_str()),
        (Some(true), Some(""))
    );
    bob.wait_for("the replayed deletion", WAIT, |v| {
        v["type"] == "deleted" && v["target"].as_u64() == Some(secret) && v["history"] == true
    });
    bob.wait_type("history_end", WAIT);
    let replayed = format!("{:?}", bob.seen_of("message"));
    assert!(!replayed.contains("swordfish"), "{replayed}");

    for c in [&mut alice, &mut bob] {
        c.proc.close_stdin();
        let st = c.exit(WAIT);
        assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
    }
    // Stopped cleanly: the WAL is checkpointed into the database. No file of the data
    // directory holds the deleted text (SQLite overwrote it: secure_delete), while the
    // edited message's text is there.
    srv.terminate();
    let mut found_final = false;
    for entry in std::fs::read_dir(data.path()).expect("data dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let has = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(
            !has("swordfish"),
            "the deleted text is in {}",
            path.display()
        );
        assert!(
            !has("first draft"),
            "the edited-away text is in {}",
            path.display()
        );
        found_final |= has("final text");
    }
    assert!(found_final, "the database holds the edited text");
}

/// Line mode's current conversation can be a DM (`/query NICK`): plain lines, `/edit`,
/// `/delete`, `/react`, `/unreact` and `/typing` then act on it, and `/join #room` makes the
/// room current again.
#[test]
fn the_message_commands_act_on_the_dm_a_query_made_current() {
    let data = tmp();
    let homes = tmp();
    let h = |n: &str| homes.path().join(n);
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut alice = client("alice", srv.addr, &h("a"), "alice", &["#r"], &[]);
    joined(&mut alice, "#r");
    let mut bob = client("bob", srv.addr, &h("b"), "bob", &["#r"], &[]);
    joined(&mut bob, "#r");

    alice.line("/query bob");
    let s = alice.wait_type("status", WAIT);
    assert!(
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains("DM with bob")),
        "{s}"
    );
    alice.line("psst");
    let dm = delivered(&mut alice, 1)[0];
    let m = message(&mut bob, "psst");
    assert_eq!(
        (id(&m), m["room"].is_null(), m["from"].as_str()),
        (dm, true, Some("alice"))
    );

    alice.line(&format!("/edit {dm} psst, edited"));
    let e = bob.wait_type("edited", WAIT);
    assert_eq!(
        (e["target"].as_u64(), e["text"].as_str()),
        (Some(dm), Some("psst, edited"))
    );
    assert!(e["room"].is_null(), "{e}");
    // The DM conversation (`@` and the two keys), where the rest must happen too.
    let conv = e["conv"].as_str().expect("a conv").to_owned();
    assert!(conv.starts_with('@'), "{conv}");

    bob.line("/query alice");
    bob.wait_type("status", WAIT);
    bob.line(&format!("/react {dm} 👍"));
    let r = alice.wait_type("reaction", WAIT);
    assert_eq!(
        (
            r["target"].as_u64(),
            r["count"].as_u64(),
            r["conv"].as_str()
        ),
        (Some(dm), Some(1), Some(conv.as_str()))
    );
    bob.line(&format!("/unreact {dm} 👍"));
    let r = alice.wait_for("the reaction taken back", WAIT, |v| {
        v["type"] == "reaction" && v["removed"] == true
    });
    assert_eq!(r["count"].as_u64(), Some(0), "{r}");
    bob.line("/typing");
    let t = alice.wait_type("typing", WAIT);
    assert_eq!(
        (t["from"].as_str(), t["conv"].as_str()),
        (Some("bob"), Some(conv.as_str()))
    );
    assert!(t["room"].is_null(), "{t}");

    alice.line(&format!("/delete {dm}"));
    let d = bob.wait_type("deleted", WAIT);
    assert_eq!(
        (d["target"].as_u64(), d["conv"].as_str()),
        (Some(dm), Some(conv.as_str()))
    );

    // Back to the room: plain lines go there again.
    alice.line("/join #r");
    alice.wait_type("status", WAIT);
    alice.line("to the room");
    let m = message(&mut bob, "to the room");
    assert_eq!(m["room"].as_str(), Some("#r"), "{m}");

    for c in [&mut alice, &mut bob] {
        c.proc.close_stdin();
        let st = c.exit(WAIT);
        assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
    }
    srv.terminate();
}

/// `--log-dir`: what came while the client was not running is logged from the join's replay,
/// in order, and what was logged already is not logged again; an edit and a deletion are
/// entries of their own.
#[test]
fn the_log_gets_what_was_missed_once_with_edits_and_deletions() {
    let data = tmp();
    let homes = tmp();
    let h = |n: &str| homes.path().join(n);
    let logs = homes.path().join("logs");
    let log_arg = logs.display().to_string();
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    let mut alice = client("alice", srv.addr, &h("a"), "alice", &["#r"], &[]);
    joined(&mut alice, "#r");
    let bob_args = ["--log-dir", log_arg.as_str()];
    let mut bob = client("bob", srv.addr, &h("b"), "bob", &["#r"], &bob_args);
    joined(&mut bob, "#r");
    bob.wait_type("history_end", WAIT);

    alice.line("one");
    let one = delivered(&mut alice, 1)[0];
    message(&mut bob, "one");
    alice.line(&format!("/edit {one} one, edited"));
    let edit = id(&bob.wait_type("edited", WAIT));
    let stop = |c: &mut Chirp| {
        c.proc.close_stdin();
        let st = c.exit(WAIT);
        assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
    };
    stop(&mut bob);

    // While bob is away.
    alice.line("two");
    alice.line("three");
    let ids = delivered(&mut alice, 2);
    let (two, three) = (ids[0], ids[1]);
    alice.line(&format!("/delete {two}"));
    let deletion = id(&alice.wait_type("deleted", WAIT));

    // bob is back: the join replays the history, all of it seen before but the rest.
    for _ in 0..2 {
        let mut bob = client("bob again", srv.addr, &h("b"), "bob", &["#r"], &bob_args);
        joined(&mut bob, "#r");
        bob.wait_type("history_end", WAIT);
        stop(&mut bob);
        let text = std::fs::read_to_string(logs.join("#r.log")).expect("the log");
        let entries: Vec<&str> = text
            .lines()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default())
            .collect();
        assert_eq!(
            entries,
            [
                format!("#{one} <alice> one"),
                format!("#{edit} * alice edited #{one}: one, edited"),
                format!("#{two} <alice> (message deleted)"),
                format!("#{three} <alice> three"),
                format!("#{deletion} * message #{two} deleted by alice"),
            ],
            "{text}"
        );
    }
    stop(&mut alice);
    srv.terminate();
}
