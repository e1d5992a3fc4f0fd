//! Read markers and search end to end (issue 19): a real `chirp serve` and `chirp connect
//! --json` processes on loopback. One user on two devices (two processes with the same key and
//! nick): reading on one moves the marker on the other, whose unread count drops to zero; a
//! `/search` finds the stored messages with every word, newest first,
//! and nobody outside the room gets results from it.

mod common;

use common::{Chirp, Server, WAIT, connect_json as client};
use serde_json::Value;

/// Waits for `c`'s own join of `room`.
fn joined(c: &mut Chirp, room: &str) {
    c.wait_for(&format!("joined {room}"), WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == room
    });
}

/// Waits for the live message `text`; returns it.
fn message(c: &mut Chirp, text: &str) -> Value {
    c.wait_for(&format!("message {text:?}"), WAIT, |v| {
        v["type"] == "message" && v["text"] == text
    })
}

fn marker(c: &mut Chirp) -> Value {
    c.wait_for("a read marker", WAIT, |v| v["type"] == "marker")
}

fn ends_ok(c: &mut Chirp) {
    c.proc.close_stdin();
    let st = c.exit(WAIT);
    c.drain();
    assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
}

#[test]
fn reading_on_one_device_clears_the_unread_count_on_another_and_search_finds_messages() {
    let data = tempfile::tempdir().expect("tempdir");
    let homes = tempfile::tempdir().expect("tempdir");
    let h = |n: &str| homes.path().join(n);
    let srv = Server::start(data.path(), "127.0.0.1:0", &[]);
    // alice's laptop and phone: one key (one home), one nick.
    let mut laptop = client("laptop", srv.addr, &h("alice"), "alice", &["#r"], &[]);
    joined(&mut laptop, "#r");
    let mut phone = client("phone", srv.addr, &h("alice"), "alice", &["#r"], &[]);
    joined(&mut phone, "#r");
    let mut bob = client("bob", srv.addr, &h("bob"), "bob", &["#r"], &[]);
    joined(&mut bob, "#r");
    let texts = [
        "the red fox jumps",
        "a blue whale sings",
        "the red planet turns",
    ];
    let mut last = 0;
    for t in texts {
        bob.line(t);
        let on_laptop = message(&mut laptop, t);
        let on_phone = message(&mut phone, t);
        assert_eq!(on_laptop["id"], on_phone["id"]);
        last = on_phone["id"].as_u64().expect("an id");
    }
    // The laptop reads: its marker, and the phone's, move to the newest message, and the
    // phone counts nothing unread any more (it had three).
    laptop.line("/read");
    let m = marker(&mut laptop);
    assert_eq!(
        (m["conv"].as_str(), m["id"].as_u64()),
        (Some("#r"), Some(last)),
        "{m}"
    );
    let m = marker(&mut phone);
    assert_eq!(
        (m["conv"].as_str(), m["id"].as_u64(), m["unread"].as_u64()),
        (Some("#r"), Some(last), Some(0)),
        "{m}"
    );
    // A new message is unread on the phone until one of the devices reads again.
    bob.line("one more");
    message(&mut laptop, "one more");
    message(&mut phone, "one more");
    phone.line("/read");
    let m = marker(&mut laptop);
    assert_eq!(
        (m["id"].as_u64(), m["unread"].as_u64()),
        (Some(last + 1), Some(0)),
        "{m}"
    );

    // Search: every word must match, newest first.
    laptop.line("/search red");
    let r = laptop.wait_type("search_results", WAIT);
    let hits: Vec<&str> = r["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|h| h["text"].as_str())
        .collect();
    assert_eq!(hits, ["the red planet turns", "the red fox jumps"], "{r}");
    laptop.line("/search red fox");
    let r = laptop.wait_type("search_results", WAIT);
    assert_eq!(r["hits"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(r["hits"][0]["text"], "the red fox jumps", "{r}");
    // carol is not in #r: a search from her room finds none of #r's messages.
    let mut carol = client("carol", srv.addr, &h("carol"), "carol", &["#other"], &[]);
    joined(&mut carol, "#other");
    // alice's markers are hers: bob got none.
    assert!(bob.seen_of("marker").is_empty(), "bob got alice's markers");
    carol.line("/search red");
    let r = carol.wait_type("search_results", WAIT);
    assert_eq!(r["conv"], "#other", "{r}");
    assert_eq!(r["hits"].as_array().map(Vec::len), Some(0), "{r}");
    for c in [&mut laptop, &mut phone, &mut bob, &mut carol] {
        ends_ok(c);
    }
}
