//! A reader whose output is stuck (a terminal paused with Ctrl-S, a full pipe) must not stall
//! the link: the transport keeps acknowledging and sending keepalives, flow control holds the
//! sender back, and once output resumes every line arrives in order.

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn peer(me: u16, to: u16) -> Guard {
    let child = Command::new(env!("CARGO_BIN_EXE_chirp"))
        .args(["peer", "--json", "--idle-timeout", "5"])
        .args([
            "--bind",
            &format!("127.0.0.1:{me}"),
            "--to",
            &format!("127.0.0.1:{to}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn chirp");
    Guard(child)
}

fn reader(child: &mut Child) -> mpsc::Receiver<serde_json::Value> {
    let out = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str(&line) else {
                continue;
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn stuck_output_does_not_kill_the_link() {
    const LINES: usize = 3000;
    let (pa, pb) = (free_port(), free_port());
    let mut a = peer(pa, pb);
    let mut b = peer(pb, pa);
    let a_events = reader(&mut a.0);
    // b's stdout is not read at all for now: its pipe (64 KiB) fills and b's writes block.
    let mut a_in = a.0.stdin.take().expect("piped");
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
    let b_events = reader(&mut b.0);
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
    drop(b.0.stdin.take());
    for g in [&mut a, &mut b] {
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = g.0.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < end, "did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}");
    }
}
