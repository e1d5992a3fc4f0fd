//! Moderation end to end (issue 19): real `chirp serve` and `chirp connect --json` processes
//! on loopback. A room's owner ops, mutes, kicks and bans a member from another client, the
//! member's forbidden attempts are refused, a room ban holds across the member's reconnect, and
//! a server operator (`--oper`) bans the key from the whole server: refused on connect with a
//! clear error.

mod common;

use common::{Chirp, Server, WAIT, connect_json as client, fingerprint};
use serde_json::Value;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Waits for `c`'s own join of `room`.
fn joined(c: &mut Chirp, room: &str) {
    c.wait_for(&format!("joined {room}"), WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == room
    });
}

/// Waits for the moderation event `action` (by `by`, on `target`) in `c`'s output.
fn mod_event(c: &mut Chirp, action: &str, by: &str, target: &str) -> Value {
    c.wait_for(&format!("mod {action} {target}"), WAIT, |v| {
        v["type"] == "mod"
            && v["action"] == action
            && v["by"] == by
            && v["target"].as_str().is_some_and(|t| t.starts_with(target))
    })
}

/// Waits for an error with `code`.
fn error(c: &mut Chirp, code: &str) -> Value {
    c.wait_for(&format!("error {code}"), WAIT, |v| {
        v["type"] == "error" && v["code"] == code
    })
}

fn message(c: &mut Chirp, text: &str) -> Value {
    c.wait_for(&format!("message {text:?}"), WAIT, |v| {
        v["type"] == "message" && v["text"] == text
    })
}

fn ends_ok(c: &mut Chirp) {
    c.proc.close_stdin();
    let st = c.exit(WAIT);
    c.drain();
    assert!(st.success(), "{} exit {st:?}\n{}", c.proc.name, c.diag());
}

#[test]
fn an_owner_moderates_a_member_and_bans_hold_across_reconnects() {
    let data = tmp();
    let homes = tmp();
    let h = |n: &str| homes.path().join(n);
    // The server operator's key, named on the command line by its fingerprint.
    let oper = fingerprint(&h("root"));
    let mut srv = Server::start(data.path(), "127.0.0.1:0", &["--oper", &oper]);
    let mut alice = client("alice", srv.addr, &h("a"), "alice", &["#r"], &[]);
    joined(&mut alice, "#r");
    // She created the room: she owns it.
    let modes = alice.wait_type("modes", WAIT);
    assert_eq!(
        (modes["room"].as_str(), modes["role"].as_str()),
        (Some("#r"), Some("owner"))
    );
    let mut bob = client("bob", srv.addr, &h("b"), "bob", &["#r"], &[]);
    joined(&mut bob, "#r");

    // A member may not kick, op himself, or change modes.
    bob.line("/kick alice");
    let e = error(&mut bob, "forbidden");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("operators")),
        "{e}"
    );
    bob.line("/op bob");
    error(&mut bob, "forbidden");
    bob.line("/mode +m");
    error(&mut bob, "forbidden");

    // The owner makes bob an operator: both see it, bob learns his role.
    alice.line("/op bob");
    // (His new role comes at once; the event once it is stored.)
    mod_event(&mut alice, "op", "alice", "bob");
    let role = bob.wait_type("modes", WAIT);
    assert_eq!(role["role"], "op");
    mod_event(&mut bob, "op", "alice", "bob");
    // An operator still cannot kick the owner.
    bob.line("/kick alice");
    error(&mut bob, "forbidden");
    alice.line("/deop bob");
    mod_event(&mut bob, "deop", "alice", "bob");

    // Muted, bob reads but cannot speak; unmuted, he can.
    alice.line("/mute bob");
    mod_event(&mut bob, "mute", "alice", "bob");
    bob.line("can you hear me");
    let e = error(&mut bob, "muted");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("muted")),
        "{e}"
    );
    alice.line("still here");
    message(&mut bob, "still here");
    alice.line("/unmute bob");
    mod_event(&mut bob, "unmute", "alice", "bob");
    bob.line("back again");
    message(&mut alice, "back again");

    // Kicked with a reason: told, out of the room, and free to come back.
    alice.line("/kick bob enough now");
    let k = mod_event(&mut alice, "kick", "alice", "bob");
    assert_eq!(k["arg"], "enough now");
    let kicked = bob.wait_type("kicked", WAIT);
    assert_eq!(
        (
            kicked["by"].as_str(),
            kicked["reason"].as_str(),
            kicked["banned"].as_bool()
        ),
        (Some("alice"), Some("enough now"), Some(false))
    );
    bob.wait_for("left #r", WAIT, |v| {
        v["type"] == "part" && v["self"] == true
    });
    bob.line("/join #r");
    joined(&mut bob, "#r");

    // Banned: put out, and refused on rejoin, and again after reconnecting.
    alice.line("/ban bob flooding");
    mod_event(&mut alice, "ban", "alice", "bob");
    let kicked = bob.wait_type("kicked", WAIT);
    assert_eq!(kicked["banned"], true);
    bob.line("/join #r");
    error(&mut bob, "banned");
    ends_ok(&mut bob);
    let mut bob = client("bob again", srv.addr, &h("b"), "bob", &["#r"], &[]);
    bob.wait_type("connected", WAIT);
    let e = error(&mut bob, "banned");
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("#r")),
        "{e}"
    );
    // The event is in the room's history: a newcomer's join replays it.
    let mut carol = client("carol", srv.addr, &h("c"), "carol", &["#r"], &[]);
    let replayed = mod_event(&mut carol, "ban", "alice", "bob");
    assert_eq!(replayed["history"], true);
    ends_ok(&mut carol);

    // A member cannot ban from the server; the server operator can: bob's session is told
    // and closed, and a reconnect is refused with a clear error (exit status non-zero).
    alice.line("/ban * bob");
    error(&mut alice, "forbidden");
    let mut root = client("root", srv.addr, &h("root"), "root", &[], &[]);
    root.wait_type("connected", WAIT);
    root.line("/sessions");
    let listed = root.wait_type("sessions", WAIT);
    let nicks: Vec<&str> = listed["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["nick"].as_str())
        .collect();
    assert!(
        nicks.contains(&"bob") && nicks.contains(&"alice"),
        "{listed}"
    );
    root.line("/ban * bob abuse");
    error(&mut bob, "banned");
    let st = bob.exit(WAIT);
    assert!(!st.success(), "{st:?}");
    let mut bob = client("bob banned", srv.addr, &h("b"), "bob", &[], &[]);
    let fatal = error(&mut bob, "fatal");
    assert!(
        fatal["message"]
            .as_str()
            .is_some_and(|m| m.contains("banned from this server")),
        "{fatal}"
    );
    let st = bob.exit(WAIT);
    assert!(!st.success(), "{st:?}");

    // Everything is stored: after a restart the room ban and the server ban still hold.
    ends_ok(&mut root);
    ends_ok(&mut alice);
    srv.terminate();
    let srv = Server::start(data.path(), "127.0.0.1:0", &["--oper", &oper]);
    let mut bob = client("bob after restart", srv.addr, &h("b"), "bob", &[], &[]);
    error(&mut bob, "fatal");
    let st = bob.exit(WAIT);
    assert!(!st.success(), "{st:?}");
    let mut alice = client(
        "alice after restart",
        srv.addr,
        &h("a"),
        "alice",
        &["#r"],
        &[],
    );
    joined(&mut alice, "#r");
    let modes = alice.wait_type("modes", WAIT);
    assert_eq!(modes["role"], "owner");
    ends_ok(&mut alice);
}
