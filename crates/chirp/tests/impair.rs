//! `chirp impair` with real sockets on 127.0.0.1: the proxy runs as a child process, the
//! clients and servers are plain `std::net::UdpSocket`s.
//!
//! Every socket is bound to port 0 (the proxy's own --listen/--via get a port that was just
//! free), every wait is bounded, and the child is killed on every path by [`Proxy`]'s `Drop`.

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest wait for anything the proxy should do promptly (start, exit, a reply).
const PROMPT: Duration = Duration::from_secs(10);
/// Silence after which no more datagrams are expected.
const QUIET: Duration = Duration::from_millis(300);

/// A port on 127.0.0.1 that was free a moment ago.
fn free_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local address")
}

/// A UDP socket on 127.0.0.1 with a short read timeout.
fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("set read timeout");
    s
}

fn addr_of(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("local address")
}

/// Datagram `i` tagged `tag`: 32 bytes, recognisable, never all zeros.
fn payload(tag: u8, i: u32) -> Vec<u8> {
    let mut d = vec![tag; 32];
    d[..4].copy_from_slice(&i.to_be_bytes());
    d
}

/// Datagrams `0..n` tagged `tag`.
fn payloads(tag: u8, n: u32) -> Vec<Vec<u8>> {
    (0..n).map(|i| payload(tag, i)).collect()
}

fn index(d: &[u8]) -> u32 {
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Receives until `want` datagrams arrived, or nothing came for [`QUIET`], or [`PROMPT`]
/// passed. Returns `(source, datagram)` pairs.
fn recv_some(s: &UdpSocket, want: usize) -> Received {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while out.len() < want && last.elapsed() < QUIET && start.elapsed() < PROMPT {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((from, buf[..n].to_vec()));
            last = Instant::now();
        }
    }
    out
}

/// Sends `payloads` to `to` in batches of `batch`, collecting replies after each batch (so
/// no socket buffer overflows). `replies_per` is how many replies each datagram should get.
fn exchange(
    s: &UdpSocket,
    to: SocketAddr,
    payloads: &[Vec<u8>],
    batch: usize,
    replies_per: usize,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    for chunk in payloads.chunks(batch) {
        for p in chunk {
            s.send_to(p, to).expect("send to the proxy");
        }
        got.extend(
            recv_some(s, chunk.len() * replies_per)
                .into_iter()
                .map(|(_, d)| d),
        );
    }
    got
}

/// Datagrams with their sender.
type Received = Vec<(SocketAddr, Vec<u8>)>;

/// A UDP echo server on a thread; it remembers everything it received.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Received>>,
}

impl Echo {
    fn start() -> Self {
        let s = socket();
        let addr = addr_of(&s);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut got = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while Instant::now() < deadline {
                match s.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        got.push((from, buf[..n].to_vec()));
                        let _ = s.send_to(&buf[..n], from);
                    }
                    // Asked to stop and nothing left in the socket buffer.
                    Err(_) if flag.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            got
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server once its socket buffer is empty; returns what it received, with the
    /// sender.
    fn finish(mut self) -> Received {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("echo thread panicked"))
            .unwrap_or_default()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Spawns `chirp impair ARGS` with no stdin and the given stdout and stderr.
fn spawn_impair(args: &[&str], stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chirp"))
        .arg("impair")
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn chirp")
}

/// The proxy child process; killed when dropped.
struct Proxy {
    child: Child,
    lines: mpsc::Receiver<String>,
    start_line: String,
}

impl Proxy {
    /// Starts `chirp impair ARGS` and waits for its start line (printed once bound).
    fn start(args: &[&str]) -> Self {
        let mut child = spawn_impair(args, Stdio::piped(), Stdio::inherit());
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Self {
            child,
            lines,
            start_line: String::new(),
        };
        proxy.start_line = proxy
            .lines
            .recv_timeout(PROMPT)
            .expect("the proxy printed no start line");
        proxy
    }

    /// Starts `chirp impair --listen L --to TO EXTRA...` on a listen address L that was just
    /// free; returns the proxy and L.
    fn start_to(to: SocketAddr, extra: &[&str]) -> (Self, SocketAddr) {
        let listen = free_addr();
        let (l, t) = (listen.to_string(), to.to_string());
        let mut args = vec!["--listen", l.as_str(), "--to", t.as_str()];
        args.extend_from_slice(extra);
        (Self::start(&args), listen)
    }

    /// Waits (at most [`PROMPT`]) for a printed line that satisfies `pred`; returns every line
    /// read meanwhile, that one last, so callers can keep them with what [`Self::terminate`]
    /// returns.
    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PROMPT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = pred(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {what} within {PROMPT:?}; got {seen:#?}"),
            }
        }
    }

    /// Sends SIGTERM; returns everything printed after the start line and the exit status.
    fn terminate(mut self) -> (Vec<String>, ExitStatus) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + PROMPT;
        let exit = loop {
            if let Some(s) = self.child.try_wait().expect("wait for chirp") {
                break s;
            }
            assert!(Instant::now() < deadline, "chirp did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut lines = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(PROMPT) {
            lines.push(l);
        }
        (lines, exit)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The final `impair_stats` object (with `--json`).
fn final_stats(lines: &[String]) -> Value {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["type"] == "impair_stats" && v["final"] == true)
        .unwrap_or_else(|| panic!("no final impair_stats line in {lines:#?}"))
}

fn num(v: &Value, dir: &str, key: &str) -> u64 {
    v[dir][key]
        .as_u64()
        .unwrap_or_else(|| panic!("{dir}.{key} missing in {v}"))
}

/// Every datagram is accounted for, in both directions.
fn assert_balanced(stats: &Value) {
    for dir in ["up", "down"] {
        let n = |k| num(stats, dir, k);
        assert_eq!(
            n("received") + n("duplicated"),
            n("forwarded")
                + n("lost")
                + n("queue_drops")
                + n("oversize")
                + n("rejected")
                + n("overflow")
                + n("send_errors")
                + n("in_flight"),
            "{dir} does not add up: {stats}"
        );
    }
}

/// Stops the proxy, checks it exited 0, returns its final JSON stats.
fn stop_json(proxy: Proxy) -> Value {
    let (lines, status) = proxy.terminate();
    assert!(status.success(), "exit status {status}");
    let stats = final_stats(&lines);
    assert_balanced(&stats);
    stats
}

#[test]
fn relays_intact_and_in_order_both_ways() {
    let echo = Echo::start();
    let (proxy, listen) = Proxy::start_to(echo.addr, &["--json"]);
    let start: Value = serde_json::from_str(&proxy.start_line).expect("JSON start line");
    assert_eq!(start["type"], "impair_start");
    assert_eq!(start["listen"], listen.to_string());

    let client = socket();
    let sent = payloads(b'a', 200);
    let got = exchange(&client, listen, &sent, 20, 1);
    assert_eq!(
        got, sent,
        "not every datagram came back intact and in order"
    );

    let seen = echo.finish();
    assert_eq!(seen.len(), 200);
    // The server saw the proxy's upstream socket, not the client, and answered it.
    assert!(seen.iter().all(|(from, _)| *from != addr_of(&client)));
    let stats = stop_json(proxy);
    for dir in ["up", "down"] {
        assert_eq!(num(&stats, dir, "received"), 200);
        assert_eq!(num(&stats, dir, "forwarded"), 200);
        assert_eq!(num(&stats, dir, "bytes_forwarded"), 200 * 32);
    }
    assert_eq!(stats["clients"], 1);
}

#[test]
fn loss_drops_about_half_and_the_final_stats_agree() {
    let echo = Echo::start();
    let (proxy, listen) = Proxy::start_to(echo.addr, &["--loss", "0.5", "--seed", "1", "--json"]);
    let client = socket();
    let sent = payloads(b'l', 200);
    let mut back = exchange(&client, listen, &sent, 50, 1);
    // Stop the proxy first, then collect what it forwarded but nobody had read yet, so the
    // counts compare exactly.
    let stats = stop_json(proxy);
    let seen = echo.finish();
    back.extend(recv_some(&client, usize::MAX).into_iter().map(|(_, d)| d));
    let (s, c) = (seen.len() as u64, back.len() as u64);
    assert!(
        (50..=150).contains(&s),
        "{s} of 200 reached the server at 50 % loss"
    );
    assert!(
        c <= s,
        "more echoes ({c}) than datagrams at the server ({s})"
    );
    assert_eq!(num(&stats, "up", "received"), 200);
    assert_eq!(num(&stats, "up", "forwarded"), s);
    assert_eq!(num(&stats, "up", "lost"), 200 - s);
    assert_eq!(num(&stats, "down", "received"), s);
    assert_eq!(num(&stats, "down", "forwarded"), c);
    assert_eq!(num(&stats, "down", "lost"), s - c);
}

#[test]
fn same_seed_loses_the_same_datagrams() {
    let run = |seed: &str| {
        let echo = Echo::start();
        let (proxy, listen) = Proxy::start_to(echo.addr, &["--loss", "0.3", "--seed", seed]);
        assert!(
            proxy.start_line.contains(&format!("seed {seed}")),
            "{}",
            proxy.start_line
        );
        let client = socket();
        let sent = payloads(b's', 100);
        exchange(&client, listen, &sent, 50, 1);
        drop(proxy);
        echo.finish()
            .into_iter()
            .map(|(_, d)| index(&d))
            .collect::<Vec<_>>()
    };
    let a = run("7");
    assert_eq!(a, run("7"), "same seed, different losses");
    assert_ne!(a, run("8"), "different seeds, same losses");
}

#[test]
fn duplication_delivers_every_datagram_twice() {
    let echo = Echo::start();
    let (proxy, listen) = Proxy::start_to(echo.addr, &["--dup", "1.0", "--json"]);
    let client = socket();
    let sent = payloads(b'd', 50);
    let mut back = exchange(&client, listen, &sent, 10, 4);
    let mut seen: Vec<Vec<u8>> = echo.finish().into_iter().map(|(_, d)| d).collect();
    seen.sort();
    back.sort();
    let times = |k: usize| -> Vec<Vec<u8>> {
        sent.iter()
            .flat_map(|d| std::iter::repeat_n(d.clone(), k))
            .collect()
    };
    assert_eq!(seen, times(2), "the server must see each datagram twice");
    // Each of the two copies is echoed and duplicated again on the way back.
    assert_eq!(back, times(4), "the client must get each datagram 4 times");
    let stats = stop_json(proxy);
    assert_eq!(num(&stats, "up", "duplicated"), 50);
    assert_eq!(num(&stats, "down", "duplicated"), 100);
}

#[test]
fn corruption_changes_bytes_but_not_length() {
    let echo = Echo::start();
    let (proxy, listen) =
        Proxy::start_to(echo.addr, &["--corrupt", "1.0", "--seed", "3", "--json"]);
    let client = socket();
    let sent = payloads(b'c', 50);
    let back = exchange(&client, listen, &sent, 10, 1);
    let seen = echo.finish();
    // Nothing is delayed, so the order is kept and datagram k is sent datagram k.
    assert_eq!(seen.len(), 50);
    for ((_, got), orig) in seen.iter().zip(&sent) {
        assert_eq!(got.len(), orig.len());
        let flipped: u32 = got
            .iter()
            .zip(orig)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum();
        assert!((1..=3).contains(&flipped), "{flipped} bits flipped");
    }
    assert_eq!(back.len(), 50);
    assert!(back.iter().all(|d| d.len() == 32));
    let stats = stop_json(proxy);
    assert_eq!(num(&stats, "up", "corrupted"), 50);
    assert_eq!(num(&stats, "down", "corrupted"), 50);
}

#[test]
fn delay_applies_in_both_directions() {
    let echo = Echo::start();
    let (_proxy, listen) = Proxy::start_to(echo.addr, &["--delay", "200"]);
    let client = socket();
    for i in 0..3 {
        let t = Instant::now();
        client.send_to(&payload(b't', i), listen).expect("send");
        let mut buf = [0u8; 64];
        let rtt = loop {
            if let Ok((n, _)) = client.recv_from(&mut buf) {
                assert_eq!(&buf[..n], payload(b't', i).as_slice());
                break t.elapsed();
            }
            assert!(t.elapsed() < PROMPT, "no echo");
        };
        assert!(rtt >= Duration::from_millis(400), "round trip {rtt:?}");
        assert!(rtt < Duration::from_secs(3), "round trip {rtt:?}");
    }
}

#[test]
fn reordering_lets_later_datagrams_overtake() {
    let echo = Echo::start();
    let (_proxy, listen) = Proxy::start_to(
        echo.addr,
        &["--reorder", "0.3", "--reorder-delay", "50", "--seed", "5"],
    );
    let client = socket();
    for i in 0..60 {
        client.send_to(&payload(b'r', i), listen).expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
    let back = recv_some(&client, 60);
    let seen: Vec<u32> = echo.finish().iter().map(|(_, d)| index(d)).collect();
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..60).collect::<Vec<_>>(),
        "reordering lost something"
    );
    assert_ne!(seen, sorted, "nothing was reordered");
    assert_eq!(back.len(), 60);
}

#[test]
fn mtu_drops_oversize_datagrams() {
    let echo = Echo::start();
    let (proxy, listen) = Proxy::start_to(echo.addr, &["--mtu", "100", "--json"]);
    let client = socket();
    let sent = vec![vec![1u8; 100], vec![2u8; 101], vec![3u8; 60_000]];
    let back = exchange(&client, listen, &sent, 3, 1);
    assert_eq!(back, vec![vec![1u8; 100]]);
    let stats = stop_json(proxy);
    assert_eq!(num(&stats, "up", "oversize"), 2);
    assert_eq!(num(&stats, "up", "bytes_received"), 100 + 101 + 60_000);
}

#[test]
fn large_datagrams_pass_unchanged() {
    let echo = Echo::start();
    let (_proxy, listen) = Proxy::start_to(echo.addr, &[]);
    let client = socket();
    let big: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let back = exchange(&client, listen, std::slice::from_ref(&big), 1, 1);
    assert_eq!(back, vec![big]);
}

#[test]
fn each_client_gets_only_its_own_replies() {
    let echo = Echo::start();
    let (proxy, listen) = Proxy::start_to(echo.addr, &["--stats-every", "1"]);
    let (a, b) = (socket(), socket());
    for i in 0..20 {
        a.send_to(&payload(b'A', i), listen).expect("send");
        b.send_to(&payload(b'B', i), listen).expect("send");
    }
    let got_a = recv_some(&a, 20);
    let got_b = recv_some(&b, 20);
    let want = |tag| payloads(tag, 20);
    assert_eq!(
        got_a.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
        want(b'A')
    );
    assert_eq!(
        got_b.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
        want(b'B')
    );

    // Two upstream sockets: the server saw two distinct sources, neither a client.
    let seen = echo.finish();
    let mut sources: Vec<SocketAddr> = seen.iter().map(|(from, _)| *from).collect();
    sources.sort_unstable();
    sources.dedup();
    assert_eq!(sources.len(), 2);
    assert!(!sources.contains(&addr_of(&a)) && !sources.contains(&addr_of(&b)));

    // --stats-every 1: a periodic line (awaited, not slept for), then the final one.
    let mut lines = proxy.wait_line("periodic stats", |l| l.contains("] stats up:"));
    let (rest, status) = proxy.terminate();
    lines.extend(rest);
    assert!(status.success());
    assert_eq!(
        lines.iter().filter(|l| l.contains("new client")).count(),
        2,
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("] stats up: received 40")),
        "no periodic stats line in {lines:#?}"
    );
    let last = lines.last().expect("a final line");
    assert!(
        last.contains("final stats up: received 40 (1280 B), forwarded 40 (1280 B), lost 0")
            && last.ends_with("| clients 2"),
        "{last}"
    );
}

#[test]
fn idle_clients_expire() {
    let echo = Echo::start();
    let (proxy, listen) = Proxy::start_to(
        echo.addr,
        &["--idle-timeout", "1", "--max-clients", "1", "--json"],
    );
    let (a, b) = (socket(), socket());
    assert_eq!(exchange(&a, listen, &[payload(b'x', 0)], 1, 1).len(), 1);
    // The table is full: b is turned away while a is active.
    assert!(exchange(&b, listen, &[payload(b'y', 0)], 1, 1).is_empty());
    // After the idle timeout a is forgotten (the proxy says so: no need to sleep for it)
    // and b gets its place.
    let mut lines = proxy.wait_line("a's expiry", |l| l.contains(r#""event":"expired""#));
    assert_eq!(exchange(&b, listen, &[payload(b'y', 1)], 1, 1).len(), 1);
    let (rest, status) = proxy.terminate();
    lines.extend(rest);
    assert!(status.success());
    let events: Vec<(String, u64)> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "impair_client")
        .map(|v| {
            (
                v["event"].as_str().unwrap_or("").to_owned(),
                v["index"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        events[..3],
        [
            ("new".to_owned(), 0),
            ("expired".to_owned(), 0),
            ("new".to_owned(), 1)
        ],
        "{lines:#?}"
    );
    let stats = final_stats(&lines);
    assert_balanced(&stats);
    assert_eq!(num(&stats, "up", "rejected"), 1);
    assert_eq!(num(&stats, "up", "forwarded"), 2);
}

#[test]
fn fixed_wire_links_two_peers_and_the_far_side_can_start() {
    let (a, b, stranger) = (socket(), socket(), socket());
    let v = free_addr();
    let (proxy, l) = Proxy::start_to(
        addr_of(&b),
        &[
            "--client",
            &addr_of(&a).to_string(),
            "--via",
            &v.to_string(),
            "--json",
        ],
    );
    let start: Value = serde_json::from_str(&proxy.start_line).expect("JSON start line");
    assert_eq!(start["via"], v.to_string());

    // B speaks first: A has sent nothing, yet B's datagrams reach it, from L.
    for i in 0..10 {
        b.send_to(&payload(b'B', i), v).expect("send");
    }
    let got = recv_some(&a, 10);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(from, _)| *from == l));
    assert_eq!(
        got.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
        payloads(b'B', 10)
    );
    // And A answers through L, arriving at B from V.
    for i in 0..10 {
        a.send_to(&payload(b'A', i), l).expect("send");
    }
    let got = recv_some(&b, 10);
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(from, _)| *from == v));

    // Anyone else is dropped at both ends.
    stranger.send_to(b"junk", l).expect("send");
    stranger.send_to(b"junk", v).expect("send");
    assert!(recv_some(&a, 1).is_empty());
    assert!(recv_some(&b, 1).is_empty());

    let stats = stop_json(proxy);
    assert_eq!(num(&stats, "up", "forwarded"), 10);
    assert_eq!(num(&stats, "down", "forwarded"), 10);
    assert_eq!(num(&stats, "up", "rejected"), 1);
    assert_eq!(num(&stats, "down", "rejected"), 1);
}

#[test]
fn a_rate_limit_spaces_datagrams_and_drops_what_the_queue_cannot_hold() {
    let echo = Echo::start();
    // 80 kbit/s = 10,000 bytes/s: a 1,000-byte datagram takes 100 ms on the wire; the queue
    // holds 5 of them. A burst of 20 is sent within a few milliseconds.
    let (proxy, listen) = Proxy::start_to(
        echo.addr,
        &[
            "--rate", "80kbit", "--queue", "5000", "--seed", "1", "--json",
        ],
    );
    let start: Value = serde_json::from_str(&proxy.start_line).expect("JSON start line");
    assert_eq!(start["rate_bytes_per_sec"], 10_000);
    assert_eq!(start["queue_bytes"], 5_000);
    let client = socket();
    let sent_at = Instant::now();
    for i in 0..20 {
        let mut d = payload(b'r', i);
        d.resize(1_000, b'r');
        client.send_to(&d, listen).expect("send to the proxy");
    }
    let got = recv_some(&client, 20);
    let elapsed = sent_at.elapsed();
    // Five fit in the queue (a sixth only if the burst took longer than the first one's
    // 100 ms on the wire); each came back through the same limit down.
    let indices: Vec<u32> = got.iter().map(|(_, d)| index(d)).collect();
    assert!(
        indices == [0, 1, 2, 3, 4] || indices == [0, 1, 2, 3, 4, 5],
        "{indices:?}"
    );
    // Deliveries are never early: the fifth left the up queue 500 ms after the first entered.
    assert!(
        elapsed >= Duration::from_millis(500),
        "back after {elapsed:?}"
    );
    let stats = stop_json(proxy);
    let n = got.len() as u64;
    assert_eq!(num(&stats, "up", "forwarded"), n);
    assert_eq!(num(&stats, "up", "queue_drops"), 20 - n);
    assert_eq!(num(&stats, "up", "lost"), 0);
    assert_eq!(num(&stats, "down", "queue_drops"), 0);
    assert_eq!(num(&stats, "down", "forwarded"), n);
    drop(echo);
}

/// Runs `chirp impair ARGS` that should fail at once; returns its status and stderr.
fn run_failing(args: &[&str]) -> (ExitStatus, String) {
    let mut child = spawn_impair(args, Stdio::null(), Stdio::piped());
    let deadline = Instant::now() + PROMPT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for chirp") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chirp impair {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err).expect("read stderr");
    }
    (status, err)
}

#[test]
fn bad_arguments_are_rejected_clearly() {
    let to = free_addr().to_string();
    let (status, err) = run_failing(&["--listen", "127.0.0.1:0", "--to", &to, "--loss", "1.5"]);
    assert!(!status.success());
    assert!(
        err.contains("--loss") && err.contains("from 0 to 1"),
        "{err}"
    );

    let (status, err) = run_failing(&["--listen", "127.0.0.1:0", "--to", &to, "--burst", "0.1"]);
    assert!(!status.success());
    assert!(err.contains("P_ENTER,P_EXIT"), "{err}");

    let (status, err) = run_failing(&["--listen", "127.0.0.1:0", "--to", &to, "--rate", "100mb"]);
    assert!(!status.success());
    assert!(err.contains("100mbit"), "{err}");

    let (status, err) = run_failing(&["--listen", "127.0.0.1:0", "--to", &to, "--queue", "9000"]);
    assert!(!status.success());
    assert!(err.contains("--rate"), "{err}");

    let (status, err) = run_failing(&[
        "--listen",
        "127.0.0.1:0",
        "--to",
        &to,
        "--client",
        "127.0.0.1:9",
    ]);
    assert!(!status.success());
    assert!(err.contains("--via"), "{err}");
}

#[test]
fn listen_address_in_use_is_reported() {
    let taken = socket();
    let (status, err) = run_failing(&[
        "--listen",
        &addr_of(&taken).to_string(),
        "--to",
        &free_addr().to_string(),
    ]);
    assert!(!status.success());
    assert!(err.contains("in use"), "{err}");
}
