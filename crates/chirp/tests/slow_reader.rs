//! A reader whose output is stuck (a terminal paused with Ctrl-S, a full pipe) must not stall
//! the link: the transport keeps acknowledging and sending keepalives, flow control holds the
//! sender back, and once output resumes every line arrives in order.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Guard, free_ports};

/// `chirp peer` from port `me` to port `to` on 127.0.0.1, with a 5 s idle timeout.
fn peer(me: u16, to: u16) -> Guard {
    Guard::chirp(
        &[
            "peer",
            "--json",
            "--idle-timeout",
            "5",
            "--bind",
            &format!("127.0.0.1:{me}"),
            "--to",
            &format!("127.0.0.1:{to}"),
        ],
        Stdio::null(),
    )
}

#[test]
fn stuck_output_does_not_kill_the_link() {
    const LINES: usize = 3000;
    let [pa, pb] = free_ports();
    let mut a = peer(pa, pb);
    let mut b = peer(pb, pa);
    let a_events = a.json_events();
    // b's stdout is not read at all for now: its pipe (64 KiB) fills and b's writes block.
    let mut a_in = a.take_stdin();
    let writer = std::thread::spawn(move || {
        for i in 0..LINES {
            writeln!(a_in, "{i:05} {}", "x".repeat(90)).expect("write");
        }
        a_in
    });
    // Well past the 5 s idle timeout.
    std::thread::sleep(Duration::from_secs(12));
    let early: Vec<serde_json::Value> = a_events.try_iter().collect();
    assert!(
        early.iter().all(|v| v["type"] != "peer_down"),
        "a declared the stuck reader dead: {early:?}"
    );
    // Output resumes: everything arrives, once, in order.
    let b_events = b.json_events();
    let end = Instant::now() + Duration::from_secs(60);
    let mut got = 0;
    while got < LINES {
        let left = end.saturating_duration_since(Instant::now());
        let v = b_events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {got} of {LINES} lines"));
        if v["type"] == "message" {
            let text = v["text"].as_str().expect("text");
            assert!(
                text.starts_with(&format!("{got:05} ")),
                "line {got} is {text:?}"
            );
            got += 1;
        }
        assert_ne!(v["type"], "peer_down", "b saw a go away: {v}");
    }
    let a_in = writer.join().expect("writer");
    drop(a_in);
    drop(b.take_stdin());
    for g in [&mut a, &mut b] {
        let status = g.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "{status}");
    }
}
