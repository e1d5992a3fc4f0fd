//! Issue 18, "Resume" for files between users of `chirp serve` (PROTOCOL.md "Files between
//! users", "Resuming"), with real processes on loopback: a real server, two `chirp connect
//! --json` clients and, for a dropped path, a real `chirp impair` proxy.
//!
//! The sender is `--relay-only`, so the file goes through the server's relay at its 1 MiB/s
//! per pair: an 8 MiB file takes about 8 s, long enough to interrupt it half-way. Both clients
//! run with `--idle-timeout 3`, so that a lost peer connection is noticed within seconds.
//!
//! Each test proves that the transfer did not start over: the receiver's `file_done` says
//! `resumed > 0` (bytes found verified in its partial file) and `moved + resumed == size`,
//! the sender's `moved` is less than the size, and the saved file is byte-exact.
//!
//! - The receiver is killed (SIGKILL) and restarted with the same home and downloads: the
//!   sender, still running, says the transfer is interrupted and offers the file again until
//!   the receiver is back (a `/send` of the same file meanwhile joins that transfer); the
//!   restarted receiver accepts and resumes from its `.part`.
//! - The same, with the receiver trusting the sender's key (`--auto-accept-from`): nobody
//!   types `/accept`, before or after the restart.
//! - The sender is killed and restarted: `/send` of the same file again is accepted by the
//!   receiver without asking (it had accepted that file from that nick) and resumes.
//! - The path between the sender and the server goes dark (the proxy in between is killed)
//!   for longer than the idle timeout while both clients stay up, then comes back (a proxy on
//!   the same port): both say the transfer is interrupted, and it resumes by itself.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{CHIRP, Chirp, Proc, Server, Stdout, WAIT, connect_json as client, fresh_noise};
use serde_json::Value;

/// Bound on a whole transfer through the relay (about 8 s) on a loaded 2-core machine.
const TRANSFER_WAIT: Duration = Duration::from_secs(90);

/// The file: 8 MiB, about 8 s through the relay's 1 MiB/s.
const SIZE: usize = 8 * 1024 * 1024 + 4321;

/// What both clients pass: a lost peer connection is noticed within 3 s.
const IDLE: &[&str] = &["--idle-timeout", "3"];

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// A client that is up (its `connected` event has come), with [`IDLE`] and `extra`.
fn up(name: &str, server: std::net::SocketAddr, home: &Path, nick: &str, extra: &[&str]) -> Chirp {
    let args: Vec<&str> = IDLE.iter().chain(extra).copied().collect();
    let mut c = client(name, server, home, nick, &[], &args);
    c.wait_for("connected", WAIT, |v| v["type"] == "connected");
    c
}

/// One test's server and the directories of its two clients: alice (relay only, offering from
/// `src`) and bob (saving into `downloads`). Restarted clients keep their home.
struct World {
    srv: Server,
    _data: tempfile::TempDir,
    ha: tempfile::TempDir,
    hb: tempfile::TempDir,
    downloads: tempfile::TempDir,
    src: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let data = tmp();
        World {
            srv: Server::start(data.path(), "127.0.0.1:0", &[]),
            _data: data,
            ha: tmp(),
            hb: tmp(),
            downloads: tmp(),
            src: tmp(),
        }
    }

    /// Alice, up, through `server` (the server's address, or a proxy's).
    fn alice_via(&self, name: &str, server: std::net::SocketAddr) -> Chirp {
        up(name, server, self.ha.path(), "alice", &["--relay-only"])
    }

    fn alice(&self, name: &str) -> Chirp {
        self.alice_via(name, self.srv.addr)
    }

    /// Bob, up, saving into `downloads`, with `extra`.
    fn bob(&self, name: &str, extra: &[&str]) -> Chirp {
        let dl = self.downloads.path().display().to_string();
        let args: Vec<&str> = ["--downloads", dl.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        up(name, self.srv.addr, self.hb.path(), "bob", &args)
    }

    fn downloads(&self) -> &Path {
        self.downloads.path()
    }
}

fn is(v: &Value, ty: &str, direction: &str) -> bool {
    v["type"] == ty && v["direction"] == direction
}

/// The receiver holds some of the file (written: progress follows the write), less than all.
fn some_progress(receiver: &mut Chirp) {
    receiver.wait_for("some progress", TRANSFER_WAIT, |v| {
        is(v, "file_progress", "receive")
            && v["bytes"]
                .as_u64()
                .is_some_and(|n| n >= 1 << 20 && n < SIZE as u64 / 2)
    });
}

/// `file_done` (or the `file_failed` that ends the wait early, which fails the test).
fn done(c: &mut Chirp, direction: &str) -> Value {
    let v = c.wait_for("file_done", TRANSFER_WAIT, |v| {
        is(v, "file_failed", direction) || is(v, "file_done", direction)
    });
    assert_eq!(v["type"], "file_done", "{v}\n{}", c.diag());
    v
}

/// The receiver's `file_done` shows a resume (not everything moved again), the sender's moved
/// less than the file, and the saved file is the one sent; nothing else is in `downloads`.
fn assert_resumed(got: &Value, sent: &Value, hash: &Value, downloads: &Path, bytes: &[u8]) {
    let size = bytes.len() as u64;
    let (moved, resumed) = (
        got["moved"].as_u64().expect("moved"),
        got["resumed"].as_u64().expect("resumed"),
    );
    assert!(resumed > 0, "the receiver started over: {got}");
    assert_eq!(moved + resumed, size, "{got}");
    assert!(
        sent["moved"].as_u64().is_some_and(|m| m < size),
        "the sender sent it all again: {sent}"
    );
    assert_eq!(&got["hash"], hash, "{got}");
    assert_eq!(&sent["hash"], hash, "{sent}");
    let name = got["name"].as_str().expect("saved name");
    assert_eq!(name, "big.bin", "{got}");
    let received = std::fs::read(downloads.join(name)).expect("the received file");
    assert!(
        received == bytes,
        "the received file differs from the one sent"
    );
    let left: Vec<String> = std::fs::read_dir(downloads)
        .expect("downloads")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["big.bin"], "no partial file is left");
}

/// The file, the offer made and accepted, and the transfer under way (some progress).
struct Started {
    bytes: Vec<u8>,
    path: String,
    /// The sender's `file_offer`.
    offered: Value,
}

/// Alice offers bob the file; bob accepts it (types `/accept`, unless `auto`: then he trusts
/// alice's key and the offer says it was accepted at once), and some of it arrives.
fn start(alice: &mut Chirp, bob: &mut Chirp, src: &Path, auto: bool) -> Started {
    let bytes = fresh_noise(SIZE);
    let path = src.join("big.bin");
    std::fs::write(&path, &bytes).expect("write the file");
    let path = path.display().to_string();
    alice.line(&format!("/send bob {path}"));
    let offered = alice.wait_for("our offer", WAIT, |v| is(v, "file_offer", "send"));
    let offer = bob.wait_for("the offer", WAIT, |v| is(v, "file_offer", "receive"));
    assert_eq!(offer["hash"], offered["hash"]);
    assert_eq!(offer["auto"], auto, "{offer}");
    if !auto {
        bob.line(&format!("/accept {}", offer["id"]));
    }
    some_progress(bob);
    Started {
        bytes,
        path,
        offered,
    }
}

fn part_len(downloads: &Path, hash: &Value) -> u64 {
    let hash = hash.as_str().expect("hash");
    let part = downloads.join(format!("big.bin.{}.part", &hash[..16]));
    std::fs::metadata(&part)
        .unwrap_or_else(|e| panic!("no {}: {e}", part.display()))
        .len()
}

#[test]
fn a_killed_receiver_restarts_and_the_sender_resumes_by_itself() {
    let w = World::new();
    let mut alice = w.alice("alice");
    let mut bob = w.bob("bob", &[]);
    let s = start(&mut alice, &mut bob, w.src.path(), false);
    let hash = s.offered["hash"].clone();

    bob.proc.kill();
    let held = part_len(w.downloads(), &hash);
    assert!(held > 0 && held < SIZE as u64, "{held}");
    assert!(!w.downloads().join("big.bin").exists());

    // The sender notices within its idle timeout, says so, and keeps offering.
    let i = alice.wait_for("the interruption", WAIT, |v| {
        is(v, "file_interrupted", "send") || v["type"] == "file_failed"
    });
    assert_eq!(i["type"], "file_interrupted", "{i}\n{}", alice.diag());
    assert_eq!(i["id"], s.offered["id"], "{i}");
    assert_eq!(i["nick"], "bob", "{i}");
    assert!(i["resume_secs"].as_u64().is_some_and(|s| s > 0), "{i}");
    // A `/send` of the same file meanwhile joins the waiting transfer (no second one).
    alice.line(&format!("/send bob {}", s.path));
    alice.wait_for("the waiting transfer named", WAIT, |v| {
        v["type"] == "status"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("waits to resume"))
    });

    // Bob comes back (same home, same downloads) and accepts the renewed offer.
    let mut bob = w.bob("bob2", &[]);
    let again = bob.wait_for("the offer again", WAIT, |v| is(v, "file_offer", "receive"));
    assert_eq!(again["hash"], hash, "{again}");
    assert_eq!(again["from"], "alice", "{again}");
    bob.line(&format!("/accept {}", again["id"]));

    let got = done(&mut bob, "receive");
    let sent = done(&mut alice, "send");
    // The sender's transfer is the one it started: the same number.
    assert_eq!(sent["id"], s.offered["id"], "{sent}");
    assert_resumed(&got, &sent, &hash, w.downloads(), &s.bytes);
    assert!(
        !alice
            .seen_of("file_failed")
            .iter()
            .any(|v| v["direction"] == "send"),
        "{}",
        alice.diag()
    );
    assert_eq!(alice.seen_of("file_offer").len(), 1, "{}", alice.diag());
    common::both_exit_ok(&mut alice, &mut bob);
}

/// The same with `--auto-accept-from` alice's key: bob never types `/accept`, not even after
/// his restart (when he remembers nothing): the renewed offer names alice's key, so it is
/// accepted at once, and the transfer resumes from the `.part`.
#[test]
fn a_killed_receiver_that_trusts_the_sender_resumes_without_accept() {
    let w = World::new();
    let alice_fp = common::fingerprint(w.ha.path());
    let trusting = ["--auto-accept-from", alice_fp.as_str()];
    let mut alice = w.alice("alice");
    let mut bob = w.bob("bob", &trusting);
    let s = start(&mut alice, &mut bob, w.src.path(), true);
    let hash = s.offered["hash"].clone();

    bob.proc.kill();
    let held = part_len(w.downloads(), &hash);
    assert!(held > 0 && held < SIZE as u64, "{held}");
    let i = alice.wait_for("the interruption", WAIT, |v| {
        is(v, "file_interrupted", "send") || v["type"] == "file_failed"
    });
    assert_eq!(i["type"], "file_interrupted", "{i}\n{}", alice.diag());

    let mut bob = w.bob("bob2", &trusting);
    let again = bob.wait_for("the offer again", WAIT, |v| is(v, "file_offer", "receive"));
    assert_eq!(again["hash"], hash, "{again}");
    assert_eq!(again["key"], alice_fp.as_str(), "{again}");
    assert_eq!(again["auto"], true, "{again}");

    let got = done(&mut bob, "receive");
    let sent = done(&mut alice, "send");
    assert_eq!(sent["id"], s.offered["id"], "{sent}");
    assert_resumed(&got, &sent, &hash, w.downloads(), &s.bytes);
    assert!(
        bob.seen_of("error").is_empty(),
        "bob typed nothing, and nothing failed\n{}",
        bob.diag()
    );
    common::both_exit_ok(&mut alice, &mut bob);
}

#[test]
fn a_restarted_sender_sends_again_and_the_receiver_resumes_without_asking() {
    let w = World::new();
    let mut alice = w.alice("alice");
    let mut bob = w.bob("bob", &[]);
    let s = start(&mut alice, &mut bob, w.src.path(), false);
    let hash = s.offered["hash"].clone();
    let first = bob.seen_of("file_offer")[0]["id"].clone();

    alice.proc.kill();
    let mut alice = w.alice("alice2");
    alice.line(&format!("/send bob {}", s.path));
    let offered = alice.wait_for("our offer", WAIT, |v| is(v, "file_offer", "send"));
    assert_eq!(offered["hash"], hash);
    // Bob accepted this file from alice and does not have it: taken without asking, under
    // the number it had.
    let again = bob.wait_for("the offer again", WAIT, |v| is(v, "file_offer", "receive"));
    assert_eq!(again["auto"], true, "{again}");
    assert_eq!(again["resume"], true, "{again}");
    assert_eq!(again["id"], first, "{again}");

    let got = done(&mut bob, "receive");
    let sent = done(&mut alice, "send");
    assert_eq!(got["id"], first, "{got}");
    assert_resumed(&got, &sent, &hash, w.downloads(), &s.bytes);
    common::both_exit_ok(&mut alice, &mut bob);
}

/// `chirp impair --listen LISTEN --to TO --json`, once it printed its start line.
fn proxy(listen: &str, to: &str) -> Result<Proc, String> {
    let args: Vec<String> = ["impair", "--listen", listen, "--to", to, "--json"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let mut p = Proc::spawn("impair", CHIRP, &args, Stdout::Lines);
    match p.recv(WAIT) {
        Ok(line) if String::from_utf8_lossy(&line).contains("impair_start") => Ok(p),
        _ => Err(format!("the proxy did not start: {}", p.stderr())),
    }
}

#[test]
fn a_dark_path_interrupts_the_transfer_and_it_resumes_by_itself() {
    let w = World::new();
    let to = w.srv.addr.to_string();
    let (mut wire, listen) = common::retry_bind(|| {
        let [port] = common::free_ports();
        let listen = common::lo(port).to_string();
        Ok((proxy(&listen, &to)?, listen))
    });
    // Everything of alice's (the chat and, relayed, the peer connection) crosses the proxy.
    let via: std::net::SocketAddr = listen.parse().expect("listen address");
    let mut alice = w.alice_via("alice", via);
    let mut bob = w.bob("bob", &[]);
    let s = start(&mut alice, &mut bob, w.src.path(), false);
    let hash = s.offered["hash"].clone();

    // Dark for longer than the idle timeout: both sides give the peer connection up.
    wire.kill();
    for c in [&mut alice, &mut bob] {
        let i = c.wait_for("the interruption", WAIT, |v| {
            v["type"] == "file_interrupted" || v["type"] == "file_failed"
        });
        assert_eq!(i["type"], "file_interrupted", "{i}\n{}", c.diag());
    }
    // The path comes back on the same port (the proxy's new upstream socket makes alice a new
    // address for the server: her chat session reconnects).
    let _wire = common::retry_bind(|| proxy(&listen, &to));

    // Bob takes the renewed offer without asking, and it resumes.
    let again = bob.wait_for("the offer again", WAIT, |v| is(v, "file_offer", "receive"));
    assert_eq!(again["resume"], true, "{again}");
    let got = done(&mut bob, "receive");
    let sent = done(&mut alice, "send");
    assert_eq!(sent["id"], s.offered["id"], "{sent}");
    assert_resumed(&got, &sent, &hash, w.downloads(), &s.bytes);
    common::both_exit_ok(&mut alice, &mut bob);
}

/// Longer than the sender's re-offer period (3 s, `chirp_client::dm_resume::REOFFER_EVERY`)
/// twice over: a file that would still be offered again is offered within it.
const NO_REOFFER_WAIT: Duration = Duration::from_secs(7);

/// The first event of `c` within `wait` that satisfies `pred`, or `None` (the wait is bounded:
/// it reads events until the deadline, not until one comes).
fn any_within(
    c: &mut Chirp,
    wait: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> Option<Value> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        match c.next_event(left) {
            Some(v) if pred(&v) => return Some(v),
            Some(_) => {}
            None => return None,
        }
    }
}

/// `/cancel` by the sender while the file is under way: the sender says `file_failed`
/// (`cancelled`), the receiver too (`cancelled by the sender: cancelled`) and deletes its
/// `.part`; the peer connection closes as after any transfer, so it is not taken for an
/// interruption: nothing is offered again (no `file_interrupted`, no offer at the receiver
/// for longer than the re-offer period), and both still leave cleanly.
#[test]
fn a_cancelled_transfer_is_not_offered_again_and_leaves_no_part() {
    let w = World::new();
    let mut alice = w.alice("alice");
    let mut bob = w.bob("bob", &[]);
    let s = start(&mut alice, &mut bob, w.src.path(), false);
    let hash = s.offered["hash"].clone();
    assert!(part_len(w.downloads(), &hash) > 0);

    alice.line("/cancel");
    let f = alice.wait_for("the cancel", WAIT, |v| is(v, "file_failed", "send"));
    assert_eq!(f["id"], s.offered["id"], "{f}");
    assert_eq!(f["reason"], "cancelled", "{f}");
    let f = bob.wait_for("the cancel", WAIT, |v| {
        is(v, "file_failed", "receive") || is(v, "file_done", "receive")
    });
    assert_eq!(f["type"], "file_failed", "{f}\n{}", bob.diag());
    assert_eq!(f["reason"], "cancelled by the sender: cancelled", "{f}");

    let again = any_within(&mut bob, NO_REOFFER_WAIT, |v| v["type"] == "file_offer");
    assert!(again.is_none(), "offered again: {again:?}\n{}", bob.diag());
    assert!(
        alice.seen_of("file_interrupted").is_empty() && bob.seen_of("file_interrupted").is_empty(),
        "{}\n{}",
        alice.diag(),
        bob.diag()
    );
    let left: Vec<String> = std::fs::read_dir(w.downloads())
        .expect("downloads")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "neither the file nor its .part: {left:?}");
    common::both_exit_ok(&mut alice, &mut bob);
}

/// `/cancel` by the sender while an interrupted transfer waits to resume (the receiver was
/// killed; the sender offers the file again every 3 s): the offers stop. The receiver, back,
/// hears of the file no more, for longer than the re-offer period; the sender says
/// `file_failed` with code `cancelled`. (The killed receiver's `.part` stays: nobody could
/// tell it.)
#[test]
fn a_transfer_cancelled_while_it_waits_to_resume_is_not_offered_again() {
    let w = World::new();
    let mut alice = w.alice("alice");
    let mut bob = w.bob("bob", &[]);
    let s = start(&mut alice, &mut bob, w.src.path(), false);

    bob.proc.kill();
    let i = alice.wait_for("the interruption", WAIT, |v| {
        is(v, "file_interrupted", "send") || v["type"] == "file_failed"
    });
    assert_eq!(i["type"], "file_interrupted", "{i}\n{}", alice.diag());
    alice.line(&format!("/cancel {}", s.offered["id"]));
    let f = alice.wait_for("the cancel", WAIT, |v| is(v, "file_failed", "send"));
    assert_eq!(f["id"], s.offered["id"], "{f}");
    assert_eq!(f["code"], "cancelled", "{f}");

    // Bob comes back: without the cancel, the next offer would reach him within 3 s.
    let mut bob = w.bob("bob2", &[]);
    let again = any_within(&mut bob, NO_REOFFER_WAIT, |v| v["type"] == "file_offer");
    assert!(again.is_none(), "offered again: {again:?}\n{}", bob.diag());
    alice.line("/cancel");
    let e = alice.wait_for("nothing to cancel", WAIT, |v| v["type"] == "error");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no file is being sent")),
        "{e}"
    );
    common::both_exit_ok(&mut alice, &mut bob);
}
