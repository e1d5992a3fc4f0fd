//! `chirp peer` through a real port-remapping NAT, in network namespaces the test creates:
//!
//! ```text
//!   ns a (private)              ns nat (router)                        ns b (public)
//!   10.213.1.2 ── veth ── 10.213.1.1 | 10.213.2.1 ── veth ── 10.213.2.2
//!   default via 10.213.1.1      ip_forward=1; POSTROUTING -o outer:
//!                               MASQUERADE --random-fully
//! ```
//!
//! A (in `a`) talks to B at 10.213.2.2; B (in `b`) is told A is at the NAT's outer address with
//! A's own port, 10.213.2.1:PORT_A, but `--random-fully` maps A's source port to a random one, so
//! A's packets reach B from another port of that IP (B has no route to 10.213.1.0/24: only NATed
//! packets reach it). With `--peer-key` on both sides they chat; without a pin, B refuses the
//! never-seen key from an unexpected port in `--json` mode, says how to accept it, and carries on.
//!
//! Only private addresses inside the test's own namespaces are used; the root namespace is never
//! changed (the veths are created directly inside the namespaces). The namespaces (and anything
//! still running in them) are removed on every path by [`Lab`]'s `Drop`. The test is skipped,
//! with a message on stderr, where it cannot run: not root, no `ip` or `iptables`, namespaces not
//! permitted, or no NAT support in the kernel. `CHIRP_REQUIRE_NETNS=1` turns a skip into a
//! failure (for a CI machine that must run it).

#![allow(clippy::print_stderr)] // skip notices

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::netns::{self, Skip, ip, is_root, random_port, run};
use common::{CHIRP, Chirp, Proc, Stdout, WAIT, both_exit_ok, fingerprint, have};

/// A's address inside the private namespace.
const A_IP: [u8; 4] = [10, 213, 1, 2];
/// The NAT's inner address (A's default route).
const NAT_IN: &str = "10.213.1.1";
/// The NAT's outer address: what B sees A's packets come from.
const NAT_OUT: [u8; 4] = [10, 213, 2, 1];
/// B's address on the public side.
const B_IP: [u8; 4] = [10, 213, 2, 2];

/// Reports a skip (or fails, with `CHIRP_REQUIRE_NETNS` set).
fn skip(test: &str, why: &Skip) {
    netns::skip(
        test,
        why,
        "root, iproute2, iptables with NAT support, and permission to create network namespaces",
    );
}

/// The three namespaces of one test, deleted (with whatever still runs in them) on drop.
struct Lab {
    a: String,
    nat: String,
    b: String,
}

impl Lab {
    /// Creates the topology, or says why it cannot be created here.
    fn new() -> Result<Lab, Skip> {
        if !is_root() {
            return Err(Skip("not running as root".into()));
        }
        if !have("ip") {
            return Err(Skip("`ip` (iproute2) is not installed".into()));
        }
        let iptables: Vec<&str> = ["iptables", "iptables-legacy"]
            .into_iter()
            .filter(|p| have(p))
            .collect();
        if iptables.is_empty() {
            return Err(Skip("`iptables` is not installed".into()));
        }
        // Unique per test process and per test: tests run in parallel threads.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let lab = Lab {
            a: format!("chirp-a-{pid}-{n}"),
            nat: format!("chirp-nat-{pid}-{n}"),
            b: format!("chirp-b-{pid}-{n}"),
        };
        // Interface names are at most 15 bytes: "c" + pid (≤ 7 digits) + "-" + n + 1 letter.
        let veth = |x: char| format!("c{pid}-{n}{x}");
        let (a_in, nat_in, nat_out, b_out) = (veth('a'), veth('i'), veth('o'), veth('b'));
        for ns in lab.names() {
            // A namespace of that name can only be left over from a killed run with our pid.
            let _ = run("ip", &["netns", "del", ns]);
        }
        // From here on, `lab`'s Drop removes whatever was created.
        for ns in lab.names() {
            run("ip", &["netns", "add", ns])
                .map_err(|e| Skip(format!("cannot create a network namespace: {e}")))?;
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Each veth pair is created directly inside its two namespaces.
        run(
            "ip",
            &[
                "link", "add", &a_in, "netns", &lab.a, "type", "veth", "peer", "name", &nat_in,
                "netns", &lab.nat,
            ],
        )
        .map_err(|e| Skip(format!("cannot create a veth pair: {e}")))?;
        ip(&[
            "link", "add", &nat_out, "netns", &lab.nat, "type", "veth", "peer", "name", &b_out,
            "netns", &lab.b,
        ]);
        let ifaces = [
            (&lab.a, &a_in, "10.213.1.2/24"),
            (&lab.nat, &nat_in, "10.213.1.1/24"),
            (&lab.nat, &nat_out, "10.213.2.1/24"),
            (&lab.b, &b_out, "10.213.2.2/24"),
        ];
        for (ns, dev, addr) in ifaces {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // A reaches everything through the NAT; B has no route back to 10.213.1.0/24.
        ip(&["-n", &lab.a, "route", "add", "default", "via", NAT_IN]);
        let forward = "echo 1 > /proc/sys/net/ipv4/ip_forward";
        if let Err(e) = run("ip", &["netns", "exec", &lab.nat, "sh", "-c", forward]) {
            panic!("cannot turn forwarding on in {}: {e}", lab.nat);
        }
        let mut errors = Vec::new();
        let masquerade = iptables.iter().any(|prog| {
            let rule = [
                "netns",
                "exec",
                &lab.nat,
                prog,
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-o",
                &nat_out,
                "-j",
                "MASQUERADE",
                "--random-fully",
            ];
            run("ip", &rule).map_err(|e| errors.push(e)).is_ok()
        });
        if !masquerade {
            return Err(Skip(format!(
                "cannot add the MASQUERADE --random-fully rule (no NAT support in this kernel?): {}",
                errors.join("; ")
            )));
        }
        Ok(lab)
    }

    fn names(&self) -> [&str; 3] {
        [&self.a, &self.nat, &self.b]
    }

    /// `chirp peer --json` started in namespace `ns`, once it has bound its socket.
    fn peer(
        &self,
        name: &str,
        ns: &str,
        bind: SocketAddr,
        to: SocketAddr,
        home: &Path,
        extra: &[&str],
    ) -> Chirp {
        let mut args: Vec<String> = ["netns", "exec", ns, CHIRP, "peer", "--json"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend([
            "--bind".into(),
            bind.to_string(),
            "--to".into(),
            to.to_string(),
        ]);
        args.extend(["--home".into(), home.display().to_string()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        // `ip netns exec` execs the command itself: the child is chirp.
        let mut c = Chirp {
            proc: Proc::spawn(name, "ip", &args, Stdout::Lines),
            addr: bind,
            seen: Vec::new(),
        };
        if let Err(e) = c.started() {
            panic!("{name} did not start in {ns}: {e}");
        }
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Also removes the veths and the NAT rule with them.
        netns::teardown(&self.names());
    }
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// Both sides pin the other's key: they chat through the NAT, whose port remapping B sees.
#[test]
fn pinned_peers_chat_through_a_port_remapping_nat() {
    let start = Instant::now();
    let lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => return skip("pinned_peers_chat_through_a_port_remapping_nat", &why),
    };
    let (pa, pb) = (random_port(), random_port());
    let (home_a, home_b) = (tempdir(), tempdir());
    let (fp_a, fp_b) = (fingerprint(home_a.path()), fingerprint(home_b.path()));
    // B first, so that A's first handshake finds it.
    let mut b = lab.peer(
        "B",
        &lab.b,
        addr(B_IP, pb),
        addr(NAT_OUT, pa),
        home_b.path(),
        &["--peer-key", &fp_a],
    );
    let mut a = lab.peer(
        "A",
        &lab.a,
        addr(A_IP, pa),
        addr(B_IP, pb),
        home_a.path(),
        &["--peer-key", &fp_b],
    );

    let up = b.wait_type("peer_up", WAIT);
    let seen: SocketAddr = up["peer"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("peer_up without an address: {up}\n{}", b.diag()));
    assert_eq!(
        seen.ip(),
        std::net::IpAddr::from(NAT_OUT),
        "B sees A at the NAT's outer address\n{}",
        b.diag()
    );
    assert_ne!(
        seen.port(),
        pa,
        "the NAT did not remap A's port {pa} (it may pick the same one by chance, about 1 in \
         64000)\n{}",
        b.diag()
    );
    let up = a.wait_type("peer_up", WAIT);
    assert_eq!(up["peer"], addr(B_IP, pb).to_string(), "{}", a.diag());

    let to_b = ["through", "the", "NAT"];
    let to_a = ["and", "back", "again"];
    for (x, y) in to_b.iter().zip(to_a) {
        a.line(x);
        b.line(y);
    }
    let got = b.messages(3, WAIT);
    assert_eq!(
        got,
        to_b,
        "B's messages, in order\n{}\n{}",
        b.diag(),
        a.diag()
    );
    let got = a.messages(3, WAIT);
    assert_eq!(
        got,
        to_a,
        "A's messages, in order\n{}\n{}",
        a.diag(),
        b.diag()
    );
    for m in b.seen_of("message") {
        assert_eq!(m["from"], seen.to_string(), "{}", b.diag());
    }

    both_exit_ok(&mut a, &mut b);
    for c in [&a, &b] {
        assert!(c.seen_of("error").is_empty(), "{}", c.diag());
    }
    eprintln!(
        "A at {} was seen by B as {seen} (NAT remapped port {pa} to {}); took {:?}",
        a.addr,
        seen.port(),
        start.elapsed()
    );
}

/// B has never seen A's key and was not given it: a handshake from an unexpected port is
/// refused in JSON mode, with the fingerprint and the `--peer-key` to use, and B carries on.
#[test]
fn first_contact_through_nat_without_pin_is_refused_clearly() {
    let start = Instant::now();
    let lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            return skip(
                "first_contact_through_nat_without_pin_is_refused_clearly",
                &why,
            );
        }
    };
    let (pa, pb) = (random_port(), random_port());
    let (home_a, home_b) = (tempdir(), tempdir());
    let (fp_a, fp_b) = (fingerprint(home_a.path()), fingerprint(home_b.path()));
    let mut b = lab.peer(
        "B",
        &lab.b,
        addr(B_IP, pb),
        addr(NAT_OUT, pa),
        home_b.path(),
        &[],
    );
    // A knows B's key: only B's side lacks the pin.
    let mut a = lab.peer(
        "A",
        &lab.a,
        addr(A_IP, pa),
        addr(B_IP, pb),
        home_a.path(),
        &["--peer-key", &fp_b],
    );
    a.line("this must not arrive");

    let err = b.wait_type("error", WAIT);
    let msg = err["message"].as_str().unwrap_or_default().to_owned();
    let hint = format!("--peer-key {fp_a}");
    assert!(
        msg.contains(&hint),
        "the refusal names A's fingerprint and says to use `{hint}`: {msg}\n{}",
        b.diag()
    );
    let nat_ip = std::net::Ipv4Addr::from(NAT_OUT).to_string();
    assert!(
        msg.contains(&format!("{nat_ip}:")),
        "the refusal names the NAT's address it came from: {msg}\n{}",
        b.diag()
    );

    // B carries on: still running, still reading its input (a command gets its answer).
    assert!(
        b.proc.try_status().is_none(),
        "B exited after refusing a stranger\n{}",
        b.diag()
    );
    b.line("/stats");
    b.wait_for("answer to /stats", WAIT, |v| {
        v["type"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("not connected"))
    });
    assert!(b.proc.try_status().is_none(), "{}", b.diag());
    b.poll();
    assert!(b.seen_of("message").is_empty(), "{}", b.diag());
    assert!(b.seen_of("peer_up").is_empty(), "{}", b.diag());
    // (A is not checked: it pins B's key, so its side of each handshake completes, and it
    // reports the peer up until B's refusal closes the connection.)
    eprintln!(
        "B refused A's first contact: {msg}; took {:?}",
        start.elapsed()
    );
    // The chirps (then the namespaces) go on drop.
}
