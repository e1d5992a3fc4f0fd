//! A reader whose output is stuck (a terminal paused with Ctrl-S, a full pipe) must not stall
//! the link: the transport keeps acknowledging and sending keepalives, flow control holds the
//! sender back, and once output resumes every line arrives in order.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Guard, free_ports};

/// The peers' idle timeout: the shortest `chirp peer` allows, so that being stuck well past it
/// takes seconds. (`crates/netsim/tests/stuck_reader.rs` shows the same for twelve 5 s idle
/// timeouts in virtual time.)
const IDLE: Duration = Duration::from_secs(1);

/// `chirp peer` from port `me` to port `to` on 127.0.0.1, with an [`IDLE`] idle timeout.
fn peer(me: u16, to: u16) -> Guard {
    Guard::chirp(
        &[
            "peer",
            "--json",
            "--idle-timeout",
            &IDLE.as_secs().to_string(),
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
    // The stuck state, shown rather than slept for: a has handed every line over, and b's
    // transport has acknowledged them all (a's `/stats`), far more than b's application could
    // print into its pipe. So b's transport keeps working while its output is stuck.
    // The lines fit in b's receive window, so a takes them all (bounded wait: a hang here
    // would mean b's transport stopped taking data).
    let end = Instant::now() + Duration::from_secs(60);
    while !writer.is_finished() {
        assert!(Instant::now() < end, "a never took every line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut a_in = writer.join().expect("writer");
    let mut early = Vec::new();
    let stats = |a_in: &mut std::process::ChildStdin, early: &mut Vec<serde_json::Value>| {
        writeln!(a_in, "/stats").expect("write /stats");
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let v = a_events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to /stats; got {early:?}"));
            early.push(v.clone());
            if v["type"] == "stats" {
                return v;
            }
        }
    };
    let end = Instant::now() + Duration::from_secs(60);
    let acked = loop {
        let s = stats(&mut a_in, &mut early);
        // Every line, and the peer session's HELLO before them (PROTOCOL.md §4.5).
        if s["messages_acked"] == LINES + 1 {
            break s;
        }
        assert!(Instant::now() < end, "b never acknowledged every line: {s}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stuck for three idle timeouts more: b's keepalives and acknowledgements keep arriving
    // at a (asked every 200 ms), and neither side is declared dead.
    let since = Instant::now();
    let mut last = acked.clone();
    while since.elapsed() < 3 * IDLE {
        std::thread::sleep(Duration::from_millis(200));
        last = stats(&mut a_in, &mut early);
    }
    assert!(
        last["packets_received"].as_u64() > acked["packets_received"].as_u64(),
        "nothing from b in {:?} of stuck output: {acked} then {last}",
        3 * IDLE
    );
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
    drop(a_in);
    drop(b.take_stdin());
    for g in [&mut a, &mut b] {
        let status = g.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "{status}");
    }
}
