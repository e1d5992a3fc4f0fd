//! `chirp connect` tried as a new user would (issue 12): each test is the repro of a bug found
//! that way, with a real server and a real client on loopback. Every wait is bounded.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Chirp, Guard, Server, WAIT, connect_json};
use serde_json::Value;

fn client(server: SocketAddr, home: &Path, nick: &str, rooms: &[&str]) -> Chirp {
    connect_json(nick, server, home, nick, rooms, &[])
}

fn joined(c: &mut Chirp, room: &str) {
    c.wait_for(&format!("joined {room}"), WAIT, |v| {
        v["type"] == "join" && v["self"] == true && v["room"] == room
    });
}

fn of_type<'a>(c: &'a Chirp, ty: &str) -> Vec<&'a Value> {
    c.seen_of(ty)
}

/// Bug 1: a line longer than ~64 KiB wedged `chirp connect`: no error, every later line stuck,
/// and no exit at end of input. Now it is refused at once and the chat goes on; so is a pasted
/// megabyte.
#[test]
fn a_line_over_64_kib_or_a_pasted_megabyte_is_refused_and_the_chat_goes_on() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let homes = tempfile::tempdir().expect("tempdir");
    let mut x = client(server.addr, &homes.path().join("x"), "x", &["#r"]);
    joined(&mut x, "#r");
    let mut input = Vec::new();
    input.extend(std::iter::repeat_n(b'y', 65_600));
    input.extend(b"\nafter\n");
    input.extend(std::iter::repeat_n(b'z', 1 << 20));
    input.extend(b"\nlast\n");
    x.proc.write(&input);
    x.proc.close_stdin();
    let st = x.exit(WAIT);
    x.drain();
    assert!(st.success(), "exit {st:?}\n{}", x.diag());
    let errors: Vec<String> = of_type(&x, "error")
        .iter()
        .map(|e| format!("{} {}", e["code"], e["message"]))
        .collect();
    assert_eq!(errors.len(), 2, "one clear error per long line: {errors:?}");
    assert!(errors.iter().all(|e| e.contains("bad_text")), "{errors:?}");
    assert!(errors[0].contains("65600"), "{errors:?}");
    assert!(errors[1].contains("1048576"), "{errors:?}");
    let texts: Vec<&str> = of_type(&x, "message")
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["after", "last"], "{}", x.diag());
    assert_eq!(of_type(&x, "delivered").len(), 2);
}

/// Bug 2: a refused `/join nohash` became the current room, so the next plain line went there
/// and was refused. Only a successful join changes where text goes.
#[test]
fn a_refused_join_does_not_change_where_text_goes() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let homes = tempfile::tempdir().expect("tempdir");
    let mut watcher = client(server.addr, &homes.path().join("w"), "watcher", &["#ok"]);
    joined(&mut watcher, "#ok");
    let mut x = client(server.addr, &homes.path().join("x"), "x", &["#ok"]);
    joined(&mut x, "#ok");
    x.proc.write(b"/join nohash\nhello\n");
    x.proc.close_stdin();
    let st = x.exit(WAIT);
    x.drain();
    assert!(st.success(), "exit {st:?}\n{}", x.diag());
    let m = watcher.wait_for("hello in #ok", WAIT, |v| {
        v["type"] == "message" && v["text"] == "hello"
    });
    assert_eq!(m["room"], "#ok");
    let errors: Vec<&Value> = of_type(&x, "error");
    assert_eq!(errors.len(), 1, "only the join is refused: {errors:?}");
    assert_eq!(errors[0]["code"], "bad_name", "{errors:?}");
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Bug 5: `chirp connect` read all of standard input into memory (200,000 piped lines took
/// 115 MB within half a second). Now it stops reading while a bounded number of lines waits
/// (the server's flood control lets 5 a second through), so the writer is held back.
#[test]
fn a_fast_pipe_is_held_back_and_memory_stays_bounded() {
    const LINES: usize = 200_000;
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let homes = tempfile::tempdir().expect("tempdir");
    let mut args: Vec<String> = ["connect", &server.addr.to_string(), "--nick", "x", "--json"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend([
        "--home".into(),
        homes.path().join("x").display().to_string(),
    ]);
    args.extend(["--join".into(), "#r".into()]);
    let mut x = Guard::chirp(&args, Stdio::null());
    let events = x.json_events();
    let deadline = Instant::now() + WAIT;
    while !events
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok_and(|v| v["type"] == "join")
    {
        assert!(Instant::now() < deadline, "never joined");
    }
    let written = Arc::new(AtomicUsize::new(0));
    let mut stdin = x.take_stdin();
    let progress = Arc::clone(&written);
    let writer = std::thread::spawn(move || {
        let line = format!("{}\n", "w".repeat(99));
        for _ in 0..LINES {
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
            progress.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Wait until the writer is held back: no progress for a second (or it finished, which is
    // the bug).
    let mut last = 0;
    let mut still_since = Instant::now();
    let deadline = Instant::now() + WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = written.load(Ordering::Relaxed);
        if now == LINES {
            break;
        }
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer neither stalled nor finished"
        );
    }
    let accepted = written.load(Ordering::Relaxed);
    let peak = peak_rss_kib(x.0.id());
    // Kill the client: the writer's pipe breaks and it ends.
    drop(x);
    writer.join().expect("writer thread");
    assert!(
        accepted < LINES / 10,
        "{accepted} of {LINES} lines were taken from the pipe at once"
    );
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
}

/// Bug 6: pacing was silent: a script writing faster than the server's flood control allows
/// was held back for seconds with no sign. Now it is told, in JSON as `pacing` events.
#[test]
fn pacing_is_announced_and_its_end_too() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        data.path(),
        "127.0.0.1:0",
        &["--burst", "3", "--per-sec", "10"],
    );
    let homes = tempfile::tempdir().expect("tempdir");
    let mut x = client(server.addr, &homes.path().join("x"), "x", &["#r"]);
    joined(&mut x, "#r");
    let mut lines = String::new();
    for i in 0..20 {
        lines.push_str(&format!("line {i}\n"));
    }
    x.proc.write(lines.as_bytes());
    x.proc.close_stdin();
    let st = x.exit(WAIT);
    x.drain();
    assert!(st.success(), "exit {st:?}\n{}", x.diag());
    assert_eq!(of_type(&x, "delivered").len(), 20);
    let pacing: Vec<(u64, u64)> = of_type(&x, "pacing")
        .iter()
        .map(|v| {
            (
                v["held"].as_u64().unwrap_or(0),
                v["per_sec"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(pacing.len() >= 2, "{pacing:?}\n{}", x.diag());
    assert!(pacing[0].0 > 0 && pacing[0].1 == 10, "{pacing:?}");
    assert_eq!(pacing.last().map(|p| p.0), Some(0), "{pacing:?}");
}

/// The other side of bug 2: a script that pipes lines the moment it starts, before the
/// server has confirmed `--join`, must not have them refused. They wait for the join and go
/// to the room, in order, and end of input waits for them.
#[test]
fn lines_piped_before_the_join_is_confirmed_wait_for_it() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data.path(), "127.0.0.1:0", &[]);
    let homes = tempfile::tempdir().expect("tempdir");
    let mut watcher = client(server.addr, &homes.path().join("w"), "watcher", &["#r"]);
    joined(&mut watcher, "#r");
    let mut x = client(server.addr, &homes.path().join("x"), "x", &["#r"]);
    x.proc.write(b"first\nsecond\n");
    x.proc.close_stdin();
    let st = x.exit(WAIT);
    x.drain();
    assert!(st.success(), "exit {st:?}\n{}", x.diag());
    assert!(of_type(&x, "error").is_empty(), "{}", x.diag());
    for text in ["first", "second"] {
        let m = watcher.wait_for(text, WAIT, |v| v["type"] == "message" && v["text"] == text);
        assert_eq!(m["room"], "#r");
    }
}
