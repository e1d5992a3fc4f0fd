//! `chirp peer --via SERVER --to NICK` through real NATs (issue 17), in network namespaces the
//! test creates:
//!
//! ```text
//!   home1 10.218.1.2 ── nat1 ── 10.217.1.2 ─┐                ┌─ 10.217.2.2 ── nat2 ── 10.218.2.2 home2
//!                      MASQUERADE          10.217.1.1 pub 10.217.2.1     MASQUERADE
//!                                          (router; `chirp serve` on 10.217.1.1)
//! ```
//!
//! Each home sits behind its own NAT namespace (`iptables -t nat ... MASQUERADE` on its outer
//! interface; with `--random-fully`, a NAT that gives every destination another port), or
//! directly on the public router ("no NAT"). Two symmetric NATs leave no direct path: the
//! chat then goes through the server's relay. The public namespace routes between the NATs'
//! outer addresses and holds the rendezvous server; nothing routes to the homes' private
//! networks. Two peers, alice (home1) and bob (home2), each ask the server to meet the other,
//! and then chat 500 lines each way, which must arrive exactly once and in order; the test
//! asserts which path they used (direct: each sees the other at the other's public address).
//!
//! Skipped with a message where namespaces cannot be made ([`common::netns`]);
//! `CHIRP_REQUIRE_NETNS=1` makes that a failure. Everything is torn down on every path.

#![allow(clippy::print_stderr)] // skip notices and figures

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{self, Netns, Skip, iptables, random_port, run};
use common::tmux::{Tmux, tmux_installed};
use common::{CHIRP, Chirp, Proc, Stdout, WAIT, both_exit_ok, have};

/// Lines each way.
const LINES: usize = 500;
/// Bound on receiving them all on a loaded 2-core machine (normally about a second).
const CHAT_WAIT: Duration = Duration::from_secs(90);

/// Reports a skip (or fails, with `CHIRP_REQUIRE_NETNS` set).
fn skip(test: &str, why: &Skip) {
    netns::skip(
        test,
        why,
        "root, iproute2, iptables with NAT support (conntrack too for a remapping), and \
         permission to create network namespaces",
    );
}

/// How a home reaches the public network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// On the public network itself.
    None,
    /// Plain MASQUERADE: one mapping per socket (the source port kept where free), whatever
    /// the destination: endpoint-independent mapping, the common home router.
    Masquerade,
    /// MASQUERADE --random-fully: a random port for every new destination (symmetric, or
    /// address-dependent, mapping).
    Symmetric,
}

/// The public address of side `i` (1 or 2): its NAT's outer address, or its own.
fn public_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 217, i, 2))
}

/// The server's address (the public router's side of link 1).
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 217, 1, 1);

struct Lab {
    /// Declared first: dropped last, after the processes below have been killed.
    ns: Netns,
    public: String,
    home: [String; 2],
    /// The NAT namespaces and their outer interfaces, where there is a NAT.
    nat: [Option<(String, String)>; 2],
    iptables: &'static str,
}

impl Lab {
    fn new(sides: [Nat; 2]) -> Result<Lab, Skip> {
        let tools = iptables()?;
        let mut ns = Netns::new("rv");
        let public = ns.add("pub")?;
        ns.forward(&public);
        let mut home = Vec::new();
        let mut nat = Vec::new();
        let letters = [['a', 'b', 'c', 'd'], ['e', 'f', 'g', 'h']];
        let mut chosen = tools[0];
        for (i, side) in sides.into_iter().enumerate() {
            let n = i as u8 + 1;
            let [lp, lo, li, lh] = letters[i];
            let router = format!("10.217.{n}.1");
            let h = ns.add(&format!("home{n}"))?;
            match side {
                Nat::None => {
                    ns.link(
                        (&public, lp, &format!("{router}/24")),
                        (&h, lo, &format!("10.217.{n}.2/24")),
                    )?;
                    ns.sh(&h, &format!("ip route add default via {router}"));
                    nat.push(None);
                }
                Nat::Masquerade | Nat::Symmetric => {
                    let r = ns.add(&format!("nat{n}"))?;
                    let (_, outer) = ns.link(
                        (&public, lp, &format!("{router}/24")),
                        (&r, lo, &format!("10.217.{n}.2/24")),
                    )?;
                    ns.link(
                        (&r, li, &format!("10.218.{n}.1/24")),
                        (&h, lh, &format!("10.218.{n}.2/24")),
                    )?;
                    ns.forward(&r);
                    ns.sh(&r, &format!("ip route add default via {router}"));
                    ns.sh(&h, &format!("ip route add default via 10.218.{n}.1"));
                    let mut errors = Vec::new();
                    let ok = tools.iter().any(|prog| {
                        let mut rule = vec![
                            "netns",
                            "exec",
                            &r,
                            prog,
                            "-t",
                            "nat",
                            "-A",
                            "POSTROUTING",
                            "-o",
                            &outer,
                            "-j",
                            "MASQUERADE",
                        ];
                        if side == Nat::Symmetric {
                            rule.push("--random-fully");
                        }
                        let r = run("ip", &rule).map_err(|e| errors.push(e));
                        if r.is_ok() {
                            chosen = prog;
                        }
                        r.is_ok()
                    });
                    if !ok {
                        return Err(Skip(format!(
                            "cannot add a MASQUERADE rule (no NAT support in this kernel?): {}",
                            errors.join("; ")
                        )));
                    }
                    // The router's own firewall, as on every home router: nothing from outside
                    // reaches the router itself. Without it, the peer's first packet (which
                    // arrives before our own first packet to the peer has left, and is aimed
                    // at the router's address) is taken as a flow to the router, and its
                    // conntrack entry collides with the mapping our packets to the peer then
                    // need: the NAT moves that mapping to another port, as a symmetric NAT
                    // would. A dropped packet leaves no entry (conntrack confirms an entry only
                    // after the filter table let its packet in).
                    ns.sh(&r, &format!("{chosen} -A INPUT -i {outer} -j DROP"));
                    nat.push(Some((r, outer)));
                }
            }
            home.push(h);
        }
        let [h1, h2] = <[String; 2]>::try_from(home).map_err(|_| Skip("two homes".into()))?;
        let [n1, n2] =
            <[Option<(String, String)>; 2]>::try_from(nat).map_err(|_| Skip("two sides".into()))?;
        Ok(Lab {
            ns,
            public,
            home: [h1, h2],
            nat: [n1, n2],
            iptables: chosen,
        })
    }

    /// `chirp serve` in the public namespace: its process, address and key fingerprint.
    fn serve(&self, dir: &Path) -> (Proc, SocketAddr, String) {
        let bind = SocketAddr::from((SERVER_IP, random_port()));
        let args: Vec<String> = [
            "netns",
            "exec",
            &self.public,
            CHIRP,
            "serve",
            "--bind",
            &bind.to_string(),
            "--data-dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut proc = Proc::spawn("server", "ip", &args, Stdout::Lines);
        let line = match proc.recv(WAIT) {
            Ok(l) => String::from_utf8_lossy(&l).into_owned(),
            Err(_) => panic!("server did not start: {}", proc.stderr()),
        };
        let fingerprint = line
            .split("key fingerprint ")
            .nth(1)
            .and_then(|r| r.split([' ', ';']).next())
            .unwrap_or_else(|| panic!("no fingerprint in {line:?}"))
            .to_owned();
        (proc, bind, fingerprint)
    }

    /// `chirp peer --via` on side `i` (0 or 1) as `nick`, asking for `to`.
    fn peer(
        &self,
        i: usize,
        nick: &str,
        to: &str,
        server: (SocketAddr, &str),
        home: &Path,
    ) -> Chirp {
        let bind = SocketAddr::from(([0, 0, 0, 0], random_port()));
        let args: Vec<String> = [
            "netns",
            "exec",
            &self.home[i],
            CHIRP,
            "peer",
            "--json",
            "--bind",
            &bind.to_string(),
            "--via",
            &server.0.to_string(),
            "--server-key",
            server.1,
            "--nick",
            nick,
            "--to",
            to,
            "--home",
            &home.display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let mut c = Chirp {
            proc: Proc::spawn(nick, "ip", &args, Stdout::Lines),
            addr: bind,
            seen: Vec::new(),
        };
        if let Err(e) = c.started() {
            panic!("{nick} did not start: {e}");
        }
        c
    }
}

impl Lab {
    /// The shell command of a tmux pane running `chirp peer --via` in its terminal UI on side
    /// `i`, as `nick`, asking for `to` (exit code and pause as in `tui.rs`).
    fn peer_ui_command(
        &self,
        i: usize,
        nick: &str,
        to: &str,
        server: (SocketAddr, &str),
        home: &Path,
    ) -> String {
        format!(
            "ip netns exec {} timeout --foreground 120 '{CHIRP}' peer --bind 0.0.0.0:{} \
             --via {} --server-key {} --nick {nick} --to {to} --home '{}'; \
             echo \"chirp exited with $?\"; sleep 60",
            self.home[i],
            random_port(),
            server.0,
            server.1,
            home.display()
        )
    }

    /// Drops what the two NATs' public addresses send each other, in the public network.
    fn block_direct(&self) {
        for r in self.direct_rules() {
            self.ns
                .sh(&self.public, &format!("{} -I FORWARD {r}", self.iptables));
        }
    }

    /// Lifts [`Self::block_direct`].
    fn unblock_direct(&self) {
        for r in self.direct_rules() {
            self.ns
                .sh(&self.public, &format!("{} -D FORWARD {r}", self.iptables));
        }
    }

    fn direct_rules(&self) -> [String; 2] {
        let (p1, p2) = (public_ip(1), public_ip(2));
        [
            format!("-s {p1} -d {p2} -j DROP"),
            format!("-s {p2} -d {p1} -j DROP"),
        ]
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// The address in a `peer_up` event, which names the path `path`.
fn up_at(c: &mut Chirp, path: &str) -> SocketAddr {
    let up = c.wait_type("peer_up", WAIT);
    assert_eq!(up["path"], path, "{}", c.diag());
    up["peer"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("peer_up without an address: {up}\n{}", c.diag()))
}

/// Sends `lines` from each of `a` and `b`, numbered from `from`, and checks that each receives
/// the other's in order.
fn exchange(a: &mut Chirp, b: &mut Chirp, from: usize, lines: usize) {
    let text = |who: &str, i: usize| format!("{who} line {i:04}");
    for i in from..from + lines {
        a.line(&text("alice", i));
        b.line(&text("bob", i));
    }
    let want_b: Vec<String> = (from..from + lines).map(|i| text("alice", i)).collect();
    let want_a: Vec<String> = (from..from + lines).map(|i| text("bob", i)).collect();
    let got = b.messages(lines, CHAT_WAIT);
    assert!(
        got == want_b,
        "bob got alice's lines out of order\n{}",
        b.diag()
    );
    let got = a.messages(lines, CHAT_WAIT);
    assert!(
        got == want_a,
        "alice got bob's lines out of order\n{}",
        a.diag()
    );
}

/// After both exited: each received exactly `n` messages (none twice).
fn exactly(c: &Chirp, n: usize) {
    let got = c.seen_of("message").len();
    assert_eq!(
        got,
        n,
        "{} received {got} messages, not {n}\n{}",
        c.proc.name,
        c.diag()
    );
}

/// The NAT matrix case `sides`: alice and bob meet through the server, the path is direct,
/// and 500 lines each way arrive exactly once, in order. Returns the time from starting both
/// peers to the first message's arrival (docs/PERFORMANCE.md).
fn direct_chat(test: &str, sides: [Nat; 2]) -> Option<Duration> {
    let lab = match Lab::new(sides) {
        Ok(lab) => lab,
        Err(why) => {
            skip(test, &why);
            return None;
        }
    };
    let data = tempdir();
    let (_server, server, fp) = lab.serve(data.path());
    let (home_a, home_b) = (tempdir(), tempdir());
    let start = Instant::now();
    let mut a = lab.peer(0, "alice", "bob", (server, &fp), home_a.path());
    let mut b = lab.peer(1, "bob", "alice", (server, &fp), home_b.path());
    // Alice's first line goes at once: it waits in her input until the introduction.
    a.line("first");
    let (seen_by_a, seen_by_b) = (up_at(&mut a, "direct"), up_at(&mut b, "direct"));
    assert_eq!(b.messages(1, WAIT), ["first"], "{}", b.diag());
    let took = start.elapsed();
    // Direct: each talks to the other's public address (a relayed path would be the
    // server's), from the port the server observed.
    assert_eq!(seen_by_a.ip(), public_ip(2), "alice's path\n{}", a.diag());
    assert_eq!(seen_by_b.ip(), public_ip(1), "bob's path\n{}", b.diag());
    for (c, other) in [(&a, "bob"), (&b, "alice")] {
        let intro = c.seen_of("status");
        assert!(
            intro.iter().any(|v| v["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("introduced {other}")))),
            "{} was introduced to {other}\n{}",
            c.proc.name,
            c.diag()
        );
    }
    exchange(&mut a, &mut b, 0, LINES);
    a.line("/stats");
    let stats = a.wait_type("stats", WAIT);
    assert_eq!(stats["path"], "direct", "{}", a.diag());
    both_exit_ok(&mut a, &mut b);
    exactly(&a, LINES);
    exactly(&b, LINES + 1);
    for c in [&a, &b] {
        assert!(c.seen_of("error").is_empty(), "{}", c.diag());
        assert_eq!(
            c.seen_of("peer_up").len(),
            1,
            "one connection\n{}",
            c.diag()
        );
    }
    eprintln!("{test}: {sides:?}: direct; first message {took:?} after both peers started");
    Some(took)
}

#[test]
fn endpoint_independent_nats_connect_directly() {
    direct_chat(
        "endpoint_independent_nats_connect_directly",
        [Nat::Masquerade, Nat::Masquerade],
    );
}

#[test]
fn one_side_without_nat_connects_directly() {
    direct_chat(
        "one_side_without_nat_connects_directly",
        [Nat::Masquerade, Nat::None],
    );
}

/// Alice's NAT forgets its bindings and maps her socket to another port mid-chat
/// (`conntrack -F` with a new port range on the MASQUERADE rule): bob sees her packets come
/// from a new address, validates it and follows her (PROTOCOL.md §5.7), and nothing is lost:
/// no reconnection, every line once, in order.
#[test]
fn a_nat_rebinding_mid_chat_migrates_and_loses_nothing() {
    let test = "a_nat_rebinding_mid_chat_migrates_and_loses_nothing";
    if !have("conntrack") {
        return skip(test, &Skip("`conntrack` is not installed".into()));
    }
    let lab = match Lab::new([Nat::Masquerade, Nat::None]) {
        Ok(lab) => lab,
        Err(why) => return skip(test, &why),
    };
    let data = tempdir();
    let (_server, server, fp) = lab.serve(data.path());
    let (home_a, home_b) = (tempdir(), tempdir());
    let mut a = lab.peer(0, "alice", "bob", (server, &fp), home_a.path());
    let mut b = lab.peer(1, "bob", "alice", (server, &fp), home_b.path());
    let before = up_at(&mut b, "direct");
    assert_eq!(up_at(&mut a, "direct").ip(), public_ip(2), "{}", a.diag());
    exchange(&mut a, &mut b, 0, LINES / 2);

    let Some((nat, outer)) = &lab.nat[0] else {
        unreachable!("alice is behind a NAT")
    };
    let rule = format!(
        "{} -t nat -R POSTROUTING 1 -o {outer} -p udp -j MASQUERADE --to-ports 61000-61099 \
         && conntrack -F",
        lab.iptables
    );
    lab.ns.sh(nat, &rule);
    // Lines go both ways while the binding changes: alice's first packets after it carry
    // them from the new port.
    exchange(&mut a, &mut b, LINES / 2, LINES / 2);
    let is_move = |v: &serde_json::Value| {
        v["type"] == "status"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("now at 10.217.1.2:610"))
    };
    let seen = b.seen.iter().find(|v| is_move(v)).cloned();
    let moved = seen.unwrap_or_else(|| b.wait_for("alice's new address", WAIT, is_move));
    both_exit_ok(&mut a, &mut b);
    exactly(&a, LINES);
    exactly(&b, LINES);
    for c in [&a, &b] {
        assert_eq!(
            c.seen_of("peer_up").len(),
            1,
            "no reconnection\n{}",
            c.diag()
        );
        assert!(c.seen_of("peer_down").is_empty(), "{}", c.diag());
        assert!(c.seen_of("error").is_empty(), "{}", c.diag());
    }
    eprintln!("{test}: alice moved from {before} ({})", moved["message"]);
}

/// Both NATs give every destination another port: the port the server saw is not the one the
/// peer's packets would come from, so no direct path opens. After a few seconds both sides move
/// to the server's relay, and the chat goes through it, still end to end between the peers.
#[test]
fn symmetric_nats_fall_back_to_the_relay() {
    let test = "symmetric_nats_fall_back_to_the_relay";
    let lab = match Lab::new([Nat::Symmetric, Nat::Symmetric]) {
        Ok(lab) => lab,
        Err(why) => return skip(test, &why),
    };
    let data = tempdir();
    let (_server, server, fp) = lab.serve(data.path());
    let (home_a, home_b) = (tempdir(), tempdir());
    let start = Instant::now();
    let mut a = lab.peer(0, "alice", "bob", (server, &fp), home_a.path());
    let mut b = lab.peer(1, "bob", "alice", (server, &fp), home_b.path());
    a.line("first");
    // The relayed path is known to each endpoint by an address in 100::/64 (no real host's)
    // with the relay's port.
    let relayed: SocketAddr = format!("[100::1]:{}", server.port())
        .parse()
        .expect("address");
    assert_eq!(
        up_at(&mut a, "relayed"),
        relayed,
        "alice's path\n{}",
        a.diag()
    );
    assert_eq!(
        up_at(&mut b, "relayed"),
        relayed,
        "bob's path\n{}",
        b.diag()
    );
    assert_eq!(b.messages(1, WAIT), ["first"], "{}", b.diag());
    let took = start.elapsed();
    for c in [&a, &b] {
        assert!(
            c.seen_of("status").iter().any(|v| v["message"]
                .as_str()
                .is_some_and(|m| m.contains("relaying through"))),
            "{} says it relays\n{}",
            c.proc.name,
            c.diag()
        );
    }
    exchange(&mut a, &mut b, 0, LINES);
    a.line("/stats");
    let stats = a.wait_type("stats", WAIT);
    assert_eq!(stats["path"], "relayed", "{}", a.diag());
    both_exit_ok(&mut a, &mut b);
    exactly(&a, LINES);
    exactly(&b, LINES + 1);
    for c in [&a, &b] {
        assert_eq!(
            c.seen_of("peer_up").len(),
            1,
            "one connection\n{}",
            c.diag()
        );
    }
    eprintln!("{test}: relayed; first message {took:?} after both peers started");
}

/// How long the move to the direct path may take once it opens: the probes have backed off to
/// at most 15 s (PROTOCOL.md §5.7.1), plus a loaded machine's margin.
const MOVE_WAIT: Duration = Duration::from_secs(45);

/// The path events (`{"type":"path",...}`) seen so far.
fn paths(c: &Chirp) -> Vec<&serde_json::Value> {
    c.seen_of("path")
}

/// The texts of the messages seen so far, in order.
fn texts(c: &Chirp) -> Vec<String> {
    c.seen_of("message")
        .iter()
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect()
}

/// Reads events until `c` has seen `n` messages in all.
fn wait_messages(c: &mut Chirp, n: usize) {
    let deadline = Instant::now() + CHAT_WAIT;
    while c.seen_of("message").len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let got = c.seen_of("message").len();
        c.wait_for(&format!("message {} of {n}", got + 1), left, |v| {
            v["type"] == "message"
        });
    }
}

/// Both NATs map endpoint-independently, but a firewall in the public network first drops
/// what the two NATs send each other, so the direct attempt fails and the chat moves to the
/// relay. Then the firewall rule goes: the peers, which kept probing the direct path while
/// relayed, find it open and the connection moves there through path validation (PROTOCOL.md
/// §5.7.1), each side printing a `path` event and `/stats` saying `direct`. Lines sent before,
/// during and after the move arrive exactly once and in order, on one connection.
#[test]
fn a_relayed_chat_moves_to_the_direct_path_once_it_opens() {
    let test = "a_relayed_chat_moves_to_the_direct_path_once_it_opens";
    let lab = match Lab::new([Nat::Masquerade, Nat::Masquerade]) {
        Ok(lab) => lab,
        Err(why) => return skip(test, &why),
    };
    lab.block_direct();
    let data = tempdir();
    let (_server, server, fp) = lab.serve(data.path());
    let (home_a, home_b) = (tempdir(), tempdir());
    let mut a = lab.peer(0, "alice", "bob", (server, &fp), home_a.path());
    let mut b = lab.peer(1, "bob", "alice", (server, &fp), home_b.path());
    a.line("first");
    let relayed: SocketAddr = format!("[100::1]:{}", server.port())
        .parse()
        .expect("address");
    assert_eq!(up_at(&mut a, "relayed"), relayed, "{}", a.diag());
    assert_eq!(up_at(&mut b, "relayed"), relayed, "{}", b.diag());
    assert_eq!(b.messages(1, WAIT), ["first"], "{}", b.diag());
    let text = |who: &str, i: usize| format!("{who} line {i:04}");
    // Before: through the relay.
    exchange(&mut a, &mut b, 0, 100);
    assert!(
        paths(&a).is_empty() && paths(&b).is_empty(),
        "still relayed"
    );

    lab.unblock_direct();
    let opened = Instant::now();
    // During: a line each way every 50 ms until both have moved.
    let mut sent = 100;
    while paths(&a).is_empty() || paths(&b).is_empty() {
        assert!(
            opened.elapsed() < MOVE_WAIT,
            "no move to the direct path within {MOVE_WAIT:?} of it opening\n{}\n{}",
            a.diag(),
            b.diag()
        );
        a.line(&text("alice", sent));
        b.line(&text("bob", sent));
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
        a.poll();
        b.poll();
    }
    let took = opened.elapsed();
    for (c, other) in [(&a, public_ip(2)), (&b, public_ip(1))] {
        let p = paths(c);
        assert_eq!(p.len(), 1, "one move\n{}", c.diag());
        assert_eq!(p[0]["path"], "direct", "{}", c.diag());
        let at: SocketAddr = p[0]["peer"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("path event without an address\n{}", c.diag()));
        assert_eq!(at.ip(), other, "{}", c.diag());
    }
    // After: on the direct path.
    for i in sent..sent + 100 {
        a.line(&text("alice", i));
        b.line(&text("bob", i));
    }
    sent += 100;
    wait_messages(&mut a, sent);
    wait_messages(&mut b, sent + 1);
    a.line("/stats");
    let stats = a.wait_type("stats", WAIT);
    assert_eq!(stats["path"], "direct", "{}", a.diag());
    both_exit_ok(&mut a, &mut b);
    // Exactly once and in order, all of them.
    let want_a: Vec<String> = (0..sent).map(|i| text("bob", i)).collect();
    let want_b: Vec<String> = std::iter::once("first".to_owned())
        .chain((0..sent).map(|i| text("alice", i)))
        .collect();
    assert!(texts(&a) == want_a, "alice's messages\n{}", a.diag());
    assert!(texts(&b) == want_b, "bob's messages\n{}", b.diag());
    for c in [&a, &b] {
        assert_eq!(
            c.seen_of("peer_up").len(),
            1,
            "one connection, moved, never replaced\n{}",
            c.diag()
        );
        assert!(c.seen_of("peer_down").is_empty(), "{}", c.diag());
        assert!(c.seen_of("error").is_empty(), "{}", c.diag());
        assert!(
            c.seen_of("status").iter().any(|v| v["message"]
                .as_str()
                .is_some_and(|m| m.contains("moved off the relay"))),
            "{}",
            c.diag()
        );
    }
    eprintln!(
        "{test}: relayed, then direct {took:?} after the path opened ({sent} lines each way)"
    );
}

/// The same move seen in the terminal UI: alice's status bar says `relayed` while the direct
/// path is blocked, then `direct` once the chat has moved off the relay.
#[test]
fn the_status_bar_shows_relayed_then_direct() {
    let test = "the_status_bar_shows_relayed_then_direct";
    if !tmux_installed(test) {
        return;
    }
    let lab = match Lab::new([Nat::Masquerade, Nat::Masquerade]) {
        Ok(lab) => lab,
        Err(why) => return skip(test, &why),
    };
    lab.block_direct();
    let data = tempdir();
    let (_server, server, fp) = lab.serve(data.path());
    let (home_a, home_b) = (tempdir(), tempdir());
    let tmux_dir = tempdir();
    let tmux = Tmux::new(tmux_dir.path());
    tmux.start(
        "alice",
        &lab.peer_ui_command(0, "alice", "bob", (server, &fp), home_a.path()),
    );
    let mut b = lab.peer(1, "bob", "alice", (server, &fp), home_b.path());
    up_at(&mut b, "relayed");
    let status_bar = |s: &str, path: &str| {
        s.lines()
            .any(|l| l.contains(&format!("connected │ {path} │")))
    };
    tmux.wait_within("alice", "relayed in the status bar", MOVE_WAIT, |s| {
        status_bar(s, "relayed")
    });
    tmux.type_line("alice", "through the relay");
    assert_eq!(b.messages(1, WAIT), ["through the relay"], "{}", b.diag());
    lab.unblock_direct();
    let screen = tmux.wait_within("alice", "direct in the status bar", MOVE_WAIT, |s| {
        status_bar(s, "direct")
    });
    assert!(!status_bar(&screen, "relayed"), "{screen}");
    b.wait_type("path", MOVE_WAIT);
    tmux.type_line("alice", "straight to bob");
    assert_eq!(b.messages(1, WAIT), ["straight to bob"], "{}", b.diag());
    #[allow(clippy::print_stdout)] // the screen, for --nocapture
    {
        println!("--- alice ---\n{screen}---");
    }
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "a clean exit", |s| {
        s.contains("chirp exited with 0")
    });
}
