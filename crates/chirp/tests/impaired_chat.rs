//! The acceptance test of peer mode: two real `chirp peer` processes linked through a real
//! `chirp impair` proxy with 20 % loss, duplication, reordering and 1 % corruption, each sending
//! 2,000 lines at once. Every line must arrive exactly once and in order, and both must exit 0.

mod common;

use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Guard, free_ports, lo};

const LINES: usize = 2000;
const DEADLINE: Duration = Duration::from_secs(120);

/// Line `i` of `tag`. About 230 bytes: the transport packs many short lines into one
/// datagram, and 2,000 short lines fit in some 50 datagrams, too few for 5 % duplication to be
/// sure to happen (the statistics below check that it did). At this size each direction
/// carries some 400 datagrams.
fn line(tag: char, i: usize) -> String {
    format!(
        "{tag} {i:04} the quick brown fox {}",
        "jumps over the lazy dog ".repeat(8)
    )
}

/// Starts `chirp ARGS`; returns it, its stdin and its JSON events.
fn spawn(args: &[String]) -> (Guard, ChildStdin, mpsc::Receiver<serde_json::Value>) {
    let mut g = Guard::chirp(args, Stdio::inherit());
    let stdin = g.take_stdin();
    let rx = g.json_events();
    (g, stdin, rx)
}

#[test]
fn two_thousand_lines_each_way_through_a_bad_network() {
    let [pa, pb, pl, pv] = free_ports();
    let addr = |p: u16| lo(p).to_string();
    let impair_args: Vec<String> = [
        "impair",
        "--listen",
        &addr(pl),
        "--to",
        &addr(pb),
        "--client",
        &addr(pa),
        "--via",
        &addr(pv),
        "--loss",
        "0.2",
        "--dup",
        "0.05",
        "--reorder",
        "0.05",
        "--corrupt",
        "0.01",
        "--seed",
        "7",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut proxy, _proxy_in, proxy_out) = spawn(&impair_args);
    let peer = |me: u16, to: u16| -> Vec<String> {
        ["peer", "--bind", &addr(me), "--to", &addr(to), "--json"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (mut a, mut a_in, a_out) = spawn(&peer(pa, pl));
    let (mut b, mut b_in, b_out) = spawn(&peer(pb, pv));

    // Both type as fast as they can, at the same time.
    let writer = |mut w: ChildStdin, tag: char| {
        std::thread::spawn(move || {
            for i in 0..LINES {
                writeln!(w, "{}", line(tag, i)).expect("write stdin");
            }
            w
        })
    };
    let wa = writer(a_in, 'a');
    let wb = writer(b_in, 'b');

    let collect = |rx: &mpsc::Receiver<serde_json::Value>, tag: char| -> Vec<String> {
        let end = Instant::now() + DEADLINE;
        let mut got = Vec::new();
        while got.len() < LINES {
            let left = end.saturating_duration_since(Instant::now());
            let v = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{tag}: only {} of {LINES} lines", got.len()));
            if v["type"] == "message" {
                got.push(v["text"].as_str().expect("text").to_owned());
            }
        }
        got
    };
    let at_b = collect(&b_out, 'a');
    let at_a = collect(&a_out, 'b');
    for (tag, got) in [('a', &at_b), ('b', &at_a)] {
        let expect: Vec<String> = (0..LINES).map(|i| line(tag, i)).collect();
        assert!(
            got == &expect,
            "{tag}'s lines arrived out of order, twice, or damaged"
        );
    }
    a_in = wa.join().expect("writer a");
    b_in = wb.join().expect("writer b");

    // The link really was bad, and chirp saw it: ask A for its statistics.
    writeln!(a_in, "/stats").expect("write");
    let stats = loop {
        let v = a_out
            .recv_timeout(Duration::from_secs(10))
            .expect("stats answer");
        if v["type"] == "stats" {
            break v;
        }
    };
    assert!(stats["loss_percent"].as_f64() > Some(5.0), "{stats}");
    assert!(stats["retransmissions"].as_u64() > Some(0), "{stats}");
    assert!(stats["duplicates"].as_u64() > Some(0), "{stats}");

    // Nothing arrives twice later on, and both leave cleanly once all is acknowledged.
    drop(a_in);
    drop(b_in);
    assert!(a.wait_exit(Duration::from_secs(30)).success());
    assert!(b.wait_exit(Duration::from_secs(30)).success());
    for (rx, tag) in [(&a_out, 'b'), (&b_out, 'a')] {
        while let Ok(v) = rx.try_recv() {
            assert_ne!(v["type"], "message", "{tag}: an extra message arrived: {v}");
        }
    }

    // The proxy's own count: losses, duplicates and corruption all happened.
    let pid = proxy.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(proxy.wait_exit(Duration::from_secs(10)).success());
    let last = proxy_out
        .try_iter()
        .filter(|v| v["type"] == "impair_stats")
        .last()
        .expect("final stats");
    for dir in ["up", "down"] {
        for k in ["lost", "duplicated", "reordered", "corrupted"] {
            assert!(last[dir][k].as_u64() > Some(0), "{dir}.{k}: {last}");
        }
    }
}
