//! End-to-end tests of `chirp peer`: real processes on loopback, events read as `--json`.
//!
//! Every test picks free ports (never fixed ones), bounds every wait, and kills its children on
//! every path (see `common::Proc`). Sleeps are only used to stage a scenario (start B later),
//! never as assertions.

#![allow(clippy::print_stderr)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{
    CHIRP, Chirp, Proc, Stdout, WAIT, both_exit_ok, free_ports, have, lo, retry_bind, run_to_end,
};

// ---------------------------------------------------------------------------------------------
// Reliable mode
// ---------------------------------------------------------------------------------------------

/// 1. Both sides type 200 lines as fast as possible, at the same time; every line arrives once
///    and in order on the other side; then end of input on both, and both exit 0.
#[test]
fn reliable_both_ways_at_once_exactly_once_in_order_then_both_exit_0() {
    const N: usize = 200;
    let (mut a, mut b) = Chirp::pair(&[], &[]);
    let lines = |who: &str| -> Vec<String> {
        // Varying lengths, a few non-ASCII characters, and a long line now and then.
        (0..N)
            .map(|i| format!("{who} #{i:03} é✓ {}", "x".repeat((i * 37) % 1500)))
            .collect()
    };
    let (from_a, from_b) = (lines("A"), lines("B"));
    let blob = |ls: &[String]| -> Vec<u8> {
        ls.iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    let (blob_a, blob_b) = (blob(&from_a), blob(&from_b));
    {
        use std::io::Write as _;
        let (ia, ib) = (a.proc.stdin(), b.proc.stdin());
        std::thread::scope(|s| {
            s.spawn(|| {
                ia.write_all(&blob_a)
                    .and_then(|()| ia.flush())
                    .expect("write A")
            });
            s.spawn(|| {
                ib.write_all(&blob_b)
                    .and_then(|()| ib.flush())
                    .expect("write B")
            });
        });
    }
    let at_b = b.messages(N, WAIT);
    let at_a = a.messages(N, WAIT);
    assert!(
        at_b == from_a,
        "B got A's lines wrong (missing, duplicated or reordered)\n{}",
        first_diff(&from_a, &at_b)
    );
    assert!(
        at_a == from_b,
        "A got B's lines wrong (missing, duplicated or reordered)\n{}",
        first_diff(&from_b, &at_a)
    );
    // Each side says who sent the messages: the other side's address.
    for (c, other) in [(&a, b.addr_str()), (&b, a.addr_str())] {
        assert!(
            c.seen_of("message")
                .iter()
                .all(|m| m["from"] == other.as_str()),
            "{}",
            c.diag()
        );
        assert_eq!(c.seen_of("peer_up").len(), 1, "{}", c.diag());
        assert!(c.seen_of("error").is_empty(), "{}", c.diag());
    }

    both_exit_ok(&mut a, &mut b);
    // Nothing was delivered twice after the end either.
    assert_eq!(a.seen_of("message").len(), N, "{}", a.diag());
    assert_eq!(b.seen_of("message").len(), N, "{}", b.diag());
}

fn first_diff(want: &[String], got: &[String]) -> String {
    let i = want
        .iter()
        .zip(got)
        .position(|(w, g)| w != g)
        .unwrap_or(want.len().min(got.len()));
    let show = |v: &[String]| {
        v.get(i)
            .map_or("<none>".to_owned(), |s| s.chars().take(40).collect())
    };
    format!(
        "want {} lines, got {}; first difference at index {i}: want {:?}, got {:?}",
        want.len(),
        got.len(),
        show(want),
        show(got)
    )
}

/// Starts A, types three lines while nobody is there, starts B after `delay`; checks A stayed
/// quiet meanwhile and that B receives the early lines.
fn late_peer(a_extra: &[&str], delay: Duration) {
    let (mut a, mut b, b_addr) = retry_bind(|| {
        let [pa, pb] = free_ports();
        let mut a = Chirp::peer("A", lo(pa), lo(pb), a_extra)?;
        let early = [
            "typed before B existed 1",
            "typed before B existed 2",
            "//typed before B existed 3",
        ];
        for l in early {
            a.line(l);
        }
        std::thread::sleep(delay);
        a.poll();
        let b = Chirp::peer("B", lo(pb), lo(pa), &[])?;
        Ok((a, b, lo(pb)))
    });
    // While B did not exist A kept trying quietly: no error, no peer_down, nothing on stderr.
    let quiet: Vec<_> = a.seen.iter().filter(|v| v["type"] != "status").collect();
    assert!(
        quiet.is_empty(),
        "A was not quiet before B started: {quiet:?}\n{}",
        a.diag()
    );
    assert!(
        a.proc.try_status().is_none(),
        "A gave up before B started\n{}",
        a.diag()
    );
    common::assert_quiet_stderr(&a.proc, "while waiting for B");

    let t = Instant::now();
    let got = b.messages(3, WAIT);
    eprintln!("early lines delivered {:?} after B started", t.elapsed());
    assert_eq!(
        got,
        [
            "typed before B existed 1",
            "typed before B existed 2",
            "/typed before B existed 3"
        ],
        "{}",
        b.diag()
    );
    let up = a.wait_type("peer_up", WAIT);
    assert_eq!(up["peer"], b_addr.to_string());
    // And the other way too.
    b.line("hello A");
    assert_eq!(a.messages(1, WAIT), ["hello A"], "{}", a.diag());
    a.poll();
    assert!(
        a.seen_of("error").is_empty() && a.seen_of("peer_down").is_empty(),
        "{}",
        a.diag()
    );
    common::assert_quiet_stderr(&a.proc, "");
}

/// 2. B starts 1.5 s after A: A keeps trying quietly, and what was typed meanwhile arrives.
#[test]
fn start_order_late_peer_gets_lines_typed_before_it_existed() {
    late_peer(&[], Duration::from_millis(1500));
}

/// 2b. Same, but A's first attempt has already timed out (idle timeout 1 s, B starts after
///     1.5 s): A must retry quietly and keep the lines for the next attempt.
#[test]
fn start_order_late_peer_after_first_attempt_timed_out() {
    late_peer(&["--idle-timeout", "1"], Duration::from_millis(1500));
}

/// 3. End of input waits for acknowledgements: 50 lines then EOF at once; all 50 arrive and
///    A exits 0 (only once they are acknowledged); B sees A leave.
#[test]
fn eof_waits_until_everything_is_acknowledged_then_exits_0() {
    const N: usize = 50;
    let (mut a, mut b) = Chirp::pair(&[], &[]);
    let lines: Vec<String> = (0..N)
        .map(|i| format!("line {i} {}", "y".repeat(i * 20)))
        .collect();
    let mut blob = String::new();
    for l in &lines {
        blob.push_str(l);
        blob.push('\n');
    }
    a.proc.write(blob.as_bytes());
    a.proc.close_stdin();
    let got = b.messages(N, WAIT);
    assert!(got == lines, "{}", first_diff(&lines, &got));
    let status = a.exit(WAIT);
    a.drain();
    assert!(status.success(), "A exited with {status}\n{}", a.diag());
    assert!(a.seen_of("error").is_empty(), "{}", a.diag());
    let down = b.wait_type("peer_down", WAIT);
    assert_eq!(down["reason"], "left", "{}", b.diag());
    assert_eq!(down["peer"], a.addr_str());
    // B keeps trying to reach A, but A, leaving, accepts no new connection while it lingers
    // (else B would show A up again, a ghost that only the idle timeout would end).
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while let Some(v) = b.next_event(quiet_until.saturating_duration_since(Instant::now())) {
        assert_ne!(
            v["type"],
            "peer_up",
            "A came back while leaving\n{}",
            b.diag()
        );
    }

    // B sent nothing, so nothing of B's is unacknowledged: its end of input ends it at once,
    // with 0, although A is gone.
    let t = Instant::now();
    b.proc.close_stdin();
    let status = b.exit(WAIT);
    b.drain();
    assert!(
        status.success(),
        "B exited with {status} after {:?}\n{}",
        t.elapsed(),
        b.diag()
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "B took {:?} to leave",
        t.elapsed()
    );
}

/// 3b. Nobody ever answers: with `--idle-timeout 2`, a line then EOF ends with a non-zero exit
///     after the idle timeout and an error saying the message was not acknowledged.
#[test]
fn eof_with_no_peer_exits_nonzero_after_idle_timeout() {
    let start = Instant::now();
    let mut a = retry_bind(|| {
        let [pa, pb] = free_ports();
        Chirp::peer("A", lo(pa), lo(pb), &["--idle-timeout", "2"])
    });
    a.line("is anybody there?");
    a.proc.close_stdin();
    let status = a.exit(WAIT);
    let elapsed = start.elapsed();
    a.drain();
    eprintln!("exited with {status} after {elapsed:?}");
    assert!(
        !status.success(),
        "exit 0 although nothing was acknowledged\n{}",
        a.diag()
    );
    assert!(
        elapsed >= Duration::from_millis(1900),
        "gave up before the idle timeout: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(8),
        "took {elapsed:?} for a 2 s idle timeout"
    );
    let errors: Vec<String> = a
        .seen_of("error")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .chain(std::iter::once(a.proc.stderr()))
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("not acknowledged") && e.contains('1')),
        "no clear error about the unacknowledged message: {errors:?}\n{}",
        a.diag()
    );
}

/// 4. B is killed (SIGKILL) and restarted on the same port: A reports peer_down then peer_up,
///    the line A typed while B was dead reaches the new B (once), and the chat goes on.
#[test]
fn restarted_peer_is_noticed_and_the_chat_goes_on() {
    let (mut a, mut b) = Chirp::pair(&[], &[]);
    let (pa, pb) = (a.addr, b.addr);
    a.line("before 1");
    assert_eq!(b.messages(1, WAIT), ["before 1"], "{}", b.diag());
    b.line("before 2");
    assert_eq!(a.messages(1, WAIT), ["before 2"], "{}", a.diag());
    assert_eq!(a.seen_of("peer_up").len(), 1, "{}", a.diag());
    assert_eq!(b.seen_of("peer_up").len(), 1, "{}", b.diag());

    b.proc.kill();
    a.line("typed while B was dead");
    // Let A try to send it to the dead port at least once (ICMP unreachable must not hurt).
    std::thread::sleep(Duration::from_millis(200));
    // The same peer restarted: same machine, same identity key (a new key would rightly be
    // refused, see `changed_peer_key_is_refused`).
    let home = common::peer_home("B", pb).display().to_string();
    let mut b2 = match Chirp::peer("B2", pb, pa, &["--home", &home]) {
        Ok(c) => c,
        Err(e) => panic!("cannot restart B on its port: {e}"),
    };

    let down = a.wait_type("peer_down", WAIT);
    assert_eq!(down["peer"], pb.to_string(), "{}", a.diag());
    assert!(
        down["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    a.wait_type("peer_up", WAIT);
    b2.wait_type("peer_up", WAIT);
    assert_eq!(
        b2.messages(1, WAIT),
        ["typed while B was dead"],
        "{}",
        b2.diag()
    );

    a.line("after 1");
    assert_eq!(b2.messages(1, WAIT), ["after 1"], "{}", b2.diag());
    b2.line("after 2");
    assert_eq!(a.messages(1, WAIT), ["after 2"], "{}", a.diag());

    // No crash, no error, and nothing delivered twice.
    a.poll();
    b2.poll();
    assert!(a.proc.try_status().is_none(), "A exited\n{}", a.diag());
    assert!(a.seen_of("error").is_empty(), "{}", a.diag());
    assert!(b2.seen_of("error").is_empty(), "{}", b2.diag());
    assert_eq!(b2.seen_of("message").len(), 2, "{}", b2.diag());
    assert_eq!(a.seen_of("message").len(), 2, "{}", a.diag());

    // And both can still leave cleanly.
    a.proc.close_stdin();
    b2.line("/quit");
    let (sa, sb) = (a.exit(WAIT), b2.exit(WAIT));
    assert!(sa.success(), "A exited with {sa}\n{}", a.diag());
    assert!(sb.success(), "B2 exited with {sb}\n{}", b2.diag());
}

/// 5. `/stats`, `//` escape, unknown commands, `/help`, `/quit`.
#[test]
fn commands_stats_escape_unknown_help_quit() {
    let (mut a, mut b) = Chirp::pair(&[], &[]);
    for i in 0..5 {
        a.line(&format!("ping {i}"));
        b.line(&format!("pong {i}"));
    }
    assert_eq!(b.messages(5, WAIT).len(), 5);
    assert_eq!(a.messages(5, WAIT).len(), 5);

    // A's five lines, and its HELLO before them (PROTOCOL.md §4.5), are all acknowledged (B
    // has them); the acknowledgement may trail B's receipt by a moment, so ask again until it
    // shows, within the usual bound.
    let deadline = Instant::now() + WAIT;
    let s = loop {
        a.line("/stats");
        let s = a.wait_type("stats", WAIT);
        if s["messages_acked"].as_u64() >= Some(6) || Instant::now() >= deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(s["messages_acked"], 6, "{s}");
    assert_eq!(s["peer"], b.addr_str());
    let rtt = s["rtt_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no rtt_ms: {s}"));
    assert!(rtt > 0.0 && rtt < 5000.0, "rtt_ms {rtt}: {s}");
    for k in [
        "loss_percent",
        "retransmissions",
        "duplicates",
        "reordered",
        "corrupt",
        "malformed",
        "handshake_packets_lost",
    ] {
        assert!(s[k].is_number(), "stats has no numeric {k}: {s}");
    }
    assert!(s["messages_sent"].as_u64() >= Some(5), "{s}");
    // Acknowledged messages never outnumber the sent ones.
    assert!(
        s["messages_acked"].as_u64() <= s["messages_sent"].as_u64(),
        "{s}"
    );
    assert!(s["messages_received"].as_u64() >= Some(5), "{s}");

    a.line("//hi");
    a.line("/bogus");
    a.line("/bogus with words");
    a.line("after bogus");
    let e = a.wait_type("error", WAIT);
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("/bogus")),
        "{e}"
    );
    let e = a.wait_type("error", WAIT);
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("/bogus")),
        "{e}"
    );
    // In order, and nothing in between: the unknown commands were not sent.
    assert_eq!(b.messages(2, WAIT), ["/hi", "after bogus"], "{}", b.diag());

    a.line("/help");
    let h = a.wait_type("info", WAIT);
    let help = h["message"].as_str().unwrap_or_default();
    for w in ["/stats", "/quit", "//"] {
        assert!(help.contains(w), "help does not mention {w}: {help}");
    }

    // /quit leaves like end of input, with stdin still open.
    a.line("/quit");
    let status = a.exit(WAIT);
    assert!(status.success(), "A exited with {status}\n{}", a.diag());
    let down = b.wait_type("peer_down", WAIT);
    assert_eq!(down["reason"], "left");
    b.poll();
    assert_eq!(b.seen_of("message").len(), 7, "{}", b.diag());
    assert!(!b.seen.iter().any(|v| {
        v["text"]
            .as_str()
            .is_some_and(|t| t.contains("bogus") && t != "after bogus")
    }));
}

/// Reliable peers over `[::1]`, if this machine has IPv6 loopback.
#[test]
fn reliable_over_ipv6_loopback() {
    if !common::ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let (mut a, mut b) = retry_bind(|| {
        let ports: Vec<u16> = {
            let s: Vec<UdpSocket> = (0..2)
                .map(|_| UdpSocket::bind("[::1]:0").expect("bind ::1"))
                .collect();
            s.iter()
                .map(|s| s.local_addr().expect("addr").port())
                .collect()
        };
        let v6 = |p: u16| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p));
        let a = Chirp::spawn_peer("A6", v6(ports[0]), v6(ports[1]), &[]);
        let b = Chirp::spawn_peer("B6", v6(ports[1]), v6(ports[0]), &[]);
        let (mut a, mut b) = (a, b);
        a.started()?;
        b.started()?;
        Ok((a, b))
    });
    a.line("over v6");
    b.line("back over v6");
    assert_eq!(b.messages(1, WAIT), ["over v6"], "{}", b.diag());
    assert_eq!(a.messages(1, WAIT), ["back over v6"], "{}", a.diag());
    let m = &b.seen_of("message")[0];
    assert_eq!(m["from"], a.addr_str(), "{}", b.diag());
    a.proc.close_stdin();
    assert!(a.exit(WAIT).success(), "{}", a.diag());
}

// ---------------------------------------------------------------------------------------------
// --plain
// ---------------------------------------------------------------------------------------------

/// A tiny UDP tool in Python. It receives on one socket and sends from another, so a reply
/// that reaches it proves chirp sent it to `--to`, not back to the datagram's source.
/// Prints `ready RX_PORT TX_PORT`, then answers commands read from stdin, one per line:
/// - `send PORT HEX`: sends the bytes from the TX socket to 127.0.0.1:PORT; prints `sent`
/// - `recv`: waits (15 s at most) on the RX socket; prints `got SRC_PORT HEX` or `timeout`
/// - `peek_tx`: prints `got ...` if anything arrived on the TX socket, else `empty`
const PY_UDP: &str = r#"
import socket, sys
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); rx.bind(("127.0.0.1", 0)); rx.settimeout(15)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); tx.bind(("127.0.0.1", 0))
print("ready", rx.getsockname()[1], tx.getsockname()[1], flush=True)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd = line.split()
    if cmd[0] == "send":
        tx.sendto(bytes.fromhex(cmd[2] if len(cmd) > 2 else ""), ("127.0.0.1", int(cmd[1])))
        print("sent", flush=True)
    elif cmd[0] == "recv":
        try:
            data, src = rx.recvfrom(65536)
            print("got", src[1], data.hex(), flush=True)
        except socket.timeout:
            print("timeout", flush=True)
    elif cmd[0] == "peek_tx":
        tx.setblocking(False)
        try:
            data, src = tx.recvfrom(65536)
            print("got", src[1], data.hex(), flush=True)
        except BlockingIOError:
            print("empty", flush=True)
        tx.setblocking(True)
"#;

struct Py {
    proc: Proc,
    rx_port: u16,
    tx_port: u16,
}

impl Py {
    fn start() -> Py {
        let mut proc = Proc::spawn(
            "python",
            "python3",
            &["-u".into(), "-c".into(), PY_UDP.into()],
            Stdout::Lines,
        );
        let ready = Py::reply_of(&mut proc);
        let f: Vec<&str> = ready.split_whitespace().collect();
        assert!(f.len() == 3 && f[0] == "ready", "python helper: {ready:?}");
        Py {
            rx_port: f[1].parse().expect("rx port"),
            tx_port: f[2].parse().expect("tx port"),
            proc,
        }
    }

    fn reply_of(proc: &mut Proc) -> String {
        match proc.recv(WAIT) {
            Ok(l) => String::from_utf8(l).expect("python prints ASCII"),
            Err(e) => panic!(
                "python helper did not answer ({e}); stderr:\n{}",
                proc.stderr()
            ),
        }
    }

    fn cmd(&mut self, cmd: &str) -> String {
        self.proc.write(format!("{cmd}\n").as_bytes());
        Py::reply_of(&mut self.proc)
    }

    fn send(&mut self, port: u16, data: &[u8]) {
        assert_eq!(self.cmd(&format!("send {port} {}", hex(data))), "sent");
    }

    /// The next datagram on the RX socket: (source port, bytes).
    fn recv(&mut self) -> (u16, Vec<u8>) {
        let r = self.cmd("recv");
        let f: Vec<&str> = r.split_whitespace().collect();
        assert!(
            f.len() >= 2 && f[0] == "got",
            "python received nothing: {r:?}"
        );
        (
            f[1].parse().expect("port"),
            unhex(f.get(2).copied().unwrap_or("")),
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `chirp peer --plain --json` on a fresh port, sending to `to`.
fn plain(name: &str, to: SocketAddr) -> Chirp {
    retry_bind(|| {
        let [p] = free_ports();
        Chirp::peer(name, lo(p), to, &["--plain"])
    })
}

/// 6. `--plain` against a Python UDP script, both directions, byte for byte.
#[test]
fn plain_interop_with_python_bytes_exact_replies_go_to_the_to_address() {
    let mut py = Py::start();
    let mut c = plain("chirp", lo(py.rx_port));
    let status = c.seen[0]["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        status.contains("UNRELIABLE and UNENCRYPTED"),
        "status: {status}"
    );
    let port = c.addr.port();
    let py_tx = lo(py.tx_port).to_string();

    // Python -> chirp: text exact; the sender is Python's TX socket.
    py.send(port, "hello from python, é✓".as_bytes());
    let m = c.wait_type("message", WAIT);
    assert_eq!(m["text"], "hello from python, é✓");
    assert_eq!(m["from"], py_tx);

    // A 60,000-byte datagram, then the largest IPv4 UDP payload: whole, not truncated.
    for len in [60_000usize, 65_507] {
        let big: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        py.send(port, &big);
        let m = c.wait_type("message", WAIT);
        let text = m["text"].as_str().unwrap_or_default();
        assert_eq!(
            text.len(),
            len,
            "a {len}-byte datagram arrived as {} bytes",
            text.len()
        );
        assert!(
            text.as_bytes() == big.as_slice(),
            "the {len}-byte datagram arrived altered"
        );
    }

    // Invalid UTF-8 is shown lossily, and chirp carries on.
    py.send(port, b"\xff\xfeok");
    let m = c.wait_type("message", WAIT);
    assert_eq!(m["text"], "\u{fffd}\u{fffd}ok");
    // An empty datagram is a message too (and no crash).
    py.send(port, b"");
    let m = c.wait_type("message", WAIT);
    assert_eq!(m["text"], "");

    // chirp -> Python: each line is one datagram of exactly its bytes, no newline, sent from
    // chirp's --bind port to --to (Python's RX socket, which never sent anything).
    for (typed, wire) in [
        ("reply from chirp", "reply from chirp"),
        ("héllo wörld ✓", "héllo wörld ✓"),
        ("//slash", "/slash"),
        ("trailing CR\r", "trailing CR"),
    ] {
        c.line(typed);
        let (src, data) = py.recv();
        assert_eq!(src, port, "chirp did not send from its --bind port");
        assert!(
            data == wire.as_bytes(),
            "sent {typed:?}, python got {:?}",
            String::from_utf8_lossy(&data)
        );
    }
    let long: String = (0..60_000)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect();
    c.line(&long);
    let (_, data) = py.recv();
    assert_eq!(
        data.len(),
        60_000,
        "a 60,000-byte line went out as {} bytes",
        data.len()
    );
    assert!(data == long.as_bytes());
    assert_eq!(
        py.cmd("peek_tx"),
        "empty",
        "chirp replied to the source address instead of --to"
    );

    c.line("/stats");
    let s = c.wait_type("stats", WAIT);
    assert_eq!(s["mode"], "plain", "{s}");
    assert_eq!(s["datagrams_received"], 5, "{s}");
    assert_eq!(s["datagrams_sent"], 5, "{s}");
    c.line("/bogus");
    let e = c.wait_type("error", WAIT);
    assert!(
        e["message"].as_str().is_some_and(|m| m.contains("/bogus")),
        "{e}"
    );

    c.proc.close_stdin();
    let st = c.exit(WAIT);
    assert!(st.success(), "exited with {st}\n{}", c.diag());
    common::assert_quiet_stderr(&c.proc, "");
}

/// Chirp in `--plain` mode talking with an nc-like peer: a connected UDP socket bound to
/// `--to` (what `nc -u -p TO_PORT CHIRP_IP CHIRP_PORT` does), in both directions.
fn exchange_with_connected_socket(c: &mut Chirp, peer: &UdpSocket) {
    peer.send(b"typed in nc\n").expect("send");
    let m = c.wait_type("message", WAIT);
    // nc sends the newline: plain mode prints the datagram as it is.
    assert_eq!(m["text"], "typed in nc\n");
    assert_eq!(m["from"], peer.local_addr().expect("addr").to_string());
    c.line("answer from chirp");
    peer.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 65_536];
    let n = peer.recv(&mut buf).expect("no reply from chirp");
    assert_eq!(&buf[..n], b"answer from chirp");
}

/// Reads a child's raw stdout until exactly `want` has arrived (or more, or the time is up).
fn read_exact_output(p: &mut Proc, want: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want.len() {
        match p.recv(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    got
}

/// 7. `--plain` with `socat` and `nc -u` (OpenBSD netcat), when installed; the same exchange
///    with an nc-like connected socket always runs.
#[test]
fn plain_interop_with_socat_and_nc() {
    // Always: a connected UDP socket, as nc -u uses.
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut c = plain("chirp", peer.local_addr().expect("addr"));
    peer.connect(c.addr).expect("connect");
    exchange_with_connected_socket(&mut c, &peer);
    // /quit ends plain mode too, with stdin still open.
    c.line("/quit");
    assert!(c.exit(WAIT).success(), "{}", c.diag());

    let socat = have("socat");
    let nc = have("nc") && {
        let (_, out, err) = run_to_end("nc", &["-h"], WAIT);
        format!("{out}{err}").contains("OpenBSD")
    };
    if socat {
        let [p] = free_ports();
        exchange_with_socat(p);
    } else {
        eprintln!("socat not installed: socat part skipped");
    }
    if nc {
        let [p] = free_ports();
        exchange_with_nc(p);
    } else {
        eprintln!("OpenBSD nc not installed: nc part skipped");
    }
}

fn exchange_with_socat(p: u16) {
    exchange_with(p, "socat", |chirp_port| {
        vec![
            "-t".into(),
            "1".into(),
            "-".into(),
            format!("UDP:127.0.0.1:{chirp_port},bind=127.0.0.1:{p}"),
        ]
    });
}

fn exchange_with_nc(p: u16) {
    exchange_with(p, "nc", |chirp_port| {
        [
            "-u",
            "-s",
            "127.0.0.1",
            "-p",
            &p.to_string(),
            "127.0.0.1",
            &chirp_port.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    });
}

fn exchange_with(tool_port: u16, tool: &str, args: impl Fn(u16) -> Vec<String>) {
    let mut c = plain("chirp", lo(tool_port));
    let mut t = Proc::spawn(tool, tool, &args(c.addr.port()), Stdout::Raw);
    let typed = format!("hello from {tool}\n");
    t.write(typed.as_bytes());
    let m = c.wait_for(&format!("a message from {tool}"), WAIT, |v| {
        v["type"] == "message"
    });
    assert_eq!(m["text"], typed.as_str(), "{tool} stderr: {}", t.stderr());
    assert_eq!(m["from"], lo(tool_port).to_string());
    c.line("reply to the tool");
    let got = read_exact_output(&mut t, b"reply to the tool");
    assert!(
        got == b"reply to the tool",
        "{tool} printed {:?}; stderr: {}",
        String::from_utf8_lossy(&got),
        t.stderr()
    );
    c.proc.close_stdin();
    assert!(c.exit(WAIT).success(), "{}", c.diag());
}

// ---------------------------------------------------------------------------------------------
// Errors and help
// ---------------------------------------------------------------------------------------------

fn chirp_fails(args: &[&str], expect: &str) {
    let start = Instant::now();
    let (status, out, err) = run_to_end(CHIRP, args, WAIT);
    assert!(!status.success(), "chirp {args:?} succeeded; stdout: {out}");
    assert!(
        err.contains(expect),
        "chirp {args:?}: stderr lacks {expect:?}: {err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "chirp {args:?} took {:?} to fail",
        start.elapsed()
    );
}

/// 8. Clear errors: address in use, unparsable address, port out of range.
#[test]
fn clear_errors_for_bad_addresses() {
    let held = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let busy = held.local_addr().expect("addr").to_string();
    let [other] = free_ports();
    let other = lo(other).to_string();
    chirp_fails(&["peer", "--bind", &busy, "--to", &other], "in use");
    chirp_fails(
        &["peer", "--plain", "--bind", &busy, "--to", &other],
        "in use",
    );
    chirp_fails(
        &["peer", "--json", "--bind", &busy, "--to", &other],
        "in use",
    );
    drop(held);

    chirp_fails(
        &["peer", "--bind", "127.0.0.1:0", "--to", "nonsense"],
        "expected IP:PORT",
    );
    chirp_fails(
        &["peer", "--bind", "nonsense", "--to", &other],
        "expected IP:PORT",
    );
    chirp_fails(
        &[
            "peer",
            "--plain",
            "--bind",
            "127.0.0.1:0",
            "--to",
            "nonsense",
        ],
        "expected IP:PORT",
    );
    chirp_fails(
        &["peer", "--bind", "127.0.0.1:0", "--to", "127.0.0.1:70000"],
        "out of range",
    );
    chirp_fails(
        &["peer", "--bind", "127.0.0.1:70000", "--to", &other],
        "out of range",
    );
    chirp_fails(
        &["peer", "--bind", "127.0.0.1:0", "--to", "127.0.0.1:0"],
        "out of range",
    );
}

/// 9. Help and version.
#[test]
fn help_and_version() {
    for args in [&["--help"][..], &["peer", "--help"][..]] {
        let (status, out, err) = run_to_end(CHIRP, args, WAIT);
        assert!(status.success(), "chirp {args:?}: {status}\n{err}");
        assert!(
            out.contains("Examples"),
            "chirp {args:?} has no examples:\n{out}"
        );
        assert!(
            out.contains("--bind") || args.len() == 1,
            "chirp {args:?}:\n{out}"
        );
    }
    let (status, out, _) = run_to_end(CHIRP, &["--version"], WAIT);
    assert!(status.success());
    assert_eq!(out.trim(), format!("chirp {}", env!("CARGO_PKG_VERSION")));
}
