//! LAN discovery with real multicast: `chirp peer` advertises itself over mDNS (DNS-SD,
//! `_chirp._udp.local`), and `chirp peer --lan` finds it, in network namespaces on one bridge
//! that the test creates:
//!
//! ```text
//!   ns h0 10.214.0.2 ─ veth ─┐
//!   ns h1 10.214.0.3 ─ veth ─┼─ br0 (ns br: a bridge, multicast snooping off)
//!   ns h2 10.214.0.4 ─ veth ─┘
//! ```
//!
//! Each host has its loopback up, multicast on its link, and a route for 224.0.0.0/4 there.
//! Only private addresses inside the test's own namespaces are used (every test has its own
//! bridge, so the addresses repeat without meeting), and the root namespace is never changed.
//! The namespaces, and everything still running in them, go on every path
//! ([`Namespaces`]'s drop). The tests skip, saying why, where they cannot run (not root, no
//! `ip`, namespaces or bridges not permitted), unless `CHIRP_REQUIRE_NETNS=1`; the capture
//! test also needs `tshark` and `dumpcap`, the terminal test `tmux` (`CHIRP_REQUIRE_SERVICES=1`
//! makes their absence a failure).

#![allow(clippy::print_stderr)] // skip notices and timings

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{self, Namespaces, Skip, ip, preflight, run, unique};
use common::tmux::Tmux;
use common::{CHIRP, Chirp, Proc, Stdout, WAIT, both_exit_ok, fingerprint, have, run_to_end};
use serde_json::Value;

/// What these tests need, for the skip notice.
const NEEDS: &str = "root, iproute2 with bridge and veth support, and permission to create \
                     network namespaces";

/// How long a `--lan` browse listens (the first answers come within a second or two: the
/// advertiser probes for its name for ~750 ms before announcing it).
const BROWSE_SECS: &str = "4";

/// The hosts of one LAN, on one bridge; torn down on drop.
struct Lan {
    /// The host namespaces, in order.
    hosts: Vec<String>,
    /// Each host's interface on the bridge.
    links: Vec<String>,
    /// Declared last: dropped after everything that runs in the namespaces.
    _namespaces: Namespaces,
}

impl Lan {
    /// `count` hosts on one bridge, or why that cannot be built here.
    fn new(count: usize) -> Result<Lan, Skip> {
        preflight()?;
        let (pid, n) = unique();
        let bridge = format!("chirp-lbr-{pid}-{n}");
        let hosts: Vec<String> = (0..count)
            .map(|i| format!("chirp-l{i}-{pid}-{n}"))
            .collect();
        let mut all = vec![bridge.clone()];
        all.extend(hosts.iter().cloned());
        let namespaces = Namespaces::create(&all)?;
        run(
            "ip",
            &[
                "-n",
                &bridge,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        )
        .map_err(|e| Skip(format!("cannot create a bridge: {e}")))?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        let mut links = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            // Interface names are at most 15 bytes: "l" + pid (≤ 7 digits) + "-" + n + 2.
            let (link, port) = (format!("l{pid}-{n}h{i}"), format!("l{pid}-{n}p{i}"));
            run(
                "ip",
                &[
                    "link", "add", &link, "netns", host, "type", "veth", "peer", "name", &port,
                    "netns", &bridge,
                ],
            )
            .map_err(|e| Skip(format!("cannot create a veth pair: {e}")))?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", &port, "up"]);
            let cidr = format!("{}/24", Self::ip(i));
            ip(&["-n", host, "addr", "add", &cidr, "dev", &link]);
            ip(&["-n", host, "link", "set", &link, "multicast", "on"]);
            ip(&["-n", host, "link", "set", &link, "up"]);
            ip(&["-n", host, "route", "add", "224.0.0.0/4", "dev", &link]);
            links.push(link);
        }
        Ok(Lan {
            hosts,
            links,
            _namespaces: namespaces,
        })
    }

    /// Host `i`'s address.
    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 214, 0, 2 + i as u8)
    }

    /// `ip netns exec HOST chirp ARGS... --home HOME`, named `name` (stdout as JSON lines).
    fn chirp(&self, name: &str, host: usize, home: &Path, args: &[&str]) -> Chirp {
        let mut argv: Vec<String> = vec!["netns".into(), "exec".into(), self.hosts[host].clone()];
        argv.push(CHIRP.into());
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        argv.extend(["--home".into(), home.display().to_string()]);
        // `ip netns exec` execs the command itself: the child is chirp.
        Chirp {
            proc: Proc::spawn(name, "ip", &argv, Stdout::Lines),
            addr: SocketAddr::from((Self::ip(host), 0)),
            seen: Vec::new(),
        }
    }

    /// A `chirp peer --json ARGS...` on `host` waiting for a caller, once it has bound its
    /// socket; with the port it listens on.
    fn waiting_peer(&self, name: &str, host: usize, home: &Path, args: &[&str]) -> (Chirp, u16) {
        let mut argv = vec!["peer", "--json"];
        argv.extend_from_slice(args);
        let mut c = self.chirp(name, host, home, &argv);
        if let Err(e) = c.started() {
            panic!("{name} did not start: {e}");
        }
        let banner = c.seen[0]["message"].as_str().unwrap_or_default().to_owned();
        // "chirp peer on 0.0.0.0:PORT, talking to whoever calls (...)"
        let port = banner
            .strip_prefix("chirp peer on ")
            .and_then(|r| r.split(',').next())
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("no address in the banner {banner:?}"));
        assert!(
            banner.contains("talking to whoever calls"),
            "{name} waits for a caller: {banner}"
        );
        (c, port)
    }

    /// `chirp peer --lan --json` on `host`, run to its end: the peers it listed.
    fn browse(&self, host: usize, home: &Path) -> (Vec<Value>, String) {
        let mut argv: Vec<&str> = vec!["netns", "exec", &self.hosts[host], CHIRP];
        let home = home.display().to_string();
        argv.extend([
            "peer",
            "--lan",
            "--json",
            "--browse-secs",
            BROWSE_SECS,
            "--home",
            &home,
        ]);
        let (status, out, err) = run_to_end("ip", &argv, WAIT);
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let peers: Vec<Value> = events
            .iter()
            .filter(|v| v["type"] == "lan_peer")
            .cloned()
            .collect();
        // 0 when something was found, 1 (with an `error` event) when nothing was.
        let expected = if peers.is_empty() { 1 } else { 0 };
        assert_eq!(
            status.code(),
            Some(expected),
            "browse exit status\nstdout: {out}\nstderr: {err}"
        );
        for p in &peers {
            assert!(p["ts"].is_string(), "{p}");
        }
        (peers, format!("stdout: {out}\nstderr: {err}"))
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn lan(test: &str, hosts: usize) -> Option<Lan> {
    match Lan::new(hosts) {
        Ok(l) => Some(l),
        Err(why) => {
            netns::skip(test, &why, NEEDS);
            None
        }
    }
}

/// The entries named `name` in a browse's list.
fn named<'a>(peers: &'a [Value], name: &str) -> Vec<&'a Value> {
    peers.iter().filter(|p| p["name"] == name).collect()
}

/// 1. A waiting peer is listed on another host of the LAN with its name, address, port and
///    fingerprint, once.
#[test]
fn an_advertised_peer_is_found_on_the_lan() {
    let start = Instant::now();
    let Some(lan) = lan("an_advertised_peer_is_found_on_the_lan", 2) else {
        return;
    };
    let (home_a, home_b) = (tempdir(), tempdir());
    let fp_a = fingerprint(home_a.path());
    let (mut alice, port) = lan.waiting_peer("alice", 0, home_a.path(), &["--name", "alice"]);
    let banner = alice.seen[0]["message"].as_str().unwrap_or_default();
    assert!(banner.contains("on the LAN as alice"), "{banner}");

    let (peers, diag) = lan.browse(1, home_b.path());
    let found = named(&peers, "alice");
    assert_eq!(
        found.len(),
        1,
        "alice listed once\n{diag}\n{}",
        alice.diag()
    );
    let a = found[0];
    assert_eq!(
        a["address"],
        SocketAddr::from((Lan::ip(0), port)).to_string(),
        "{diag}"
    );
    assert_eq!(a["fingerprint"], fp_a.as_str(), "{diag}");
    // Nobody else is on this LAN (the browser does not advertise itself while browsing).
    assert_eq!(peers.len(), 1, "{diag}");

    // Alice is still waiting, and leaves cleanly.
    alice.poll();
    assert!(alice.proc.try_status().is_none(), "{}", alice.diag());
    alice.line("/quit");
    let status = alice.exit(WAIT);
    assert!(status.success(), "{}", alice.diag());
    eprintln!("alice found at {} in {:?}", a["address"], start.elapsed());
}

/// 2. `chirp peer --lan --to alice` calls the peer advertised as alice; lines cross both ways,
///    each exactly once and in order.
#[test]
fn a_peer_is_called_by_its_advertised_name() {
    let start = Instant::now();
    let Some(lan) = lan("a_peer_is_called_by_its_advertised_name", 2) else {
        return;
    };
    let (home_a, home_b) = (tempdir(), tempdir());
    let (fp_a, fp_b) = (fingerprint(home_a.path()), fingerprint(home_b.path()));
    // A waiting peer in a script has nobody to ask about a caller's key: it takes bob's only.
    let (mut alice, port) = lan.waiting_peer(
        "alice",
        0,
        home_a.path(),
        &["--name", "alice", "--peer-key", &fp_b],
    );
    let mut bob = lan.chirp(
        "bob",
        1,
        home_b.path(),
        &[
            "peer",
            "--lan",
            "--to",
            "alice",
            "--json",
            "--no-advertise",
            "--browse-secs",
            BROWSE_SECS,
        ],
    );
    if let Err(e) = bob.started() {
        panic!("bob did not start: {e}\n{}", alice.diag());
    }
    let banner = bob.seen[0]["message"].as_str().unwrap_or_default();
    let alice_addr = SocketAddr::from((Lan::ip(0), port)).to_string();
    assert!(
        banner.contains(&format!("talking to alice at {alice_addr}"))
            && banner.contains(&format!("advertised key {fp_a}")),
        "{banner}"
    );
    assert!(
        !banner.contains("on the LAN as"),
        "--no-advertise: {banner}"
    );

    let up = bob.wait_type("peer_up", WAIT);
    assert_eq!(up["peer"], alice_addr.as_str(), "{}", bob.diag());
    let up = alice.wait_type("peer_up", WAIT);
    let bob_seen: SocketAddr = up["peer"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("peer_up without an address: {up}"));
    assert_eq!(bob_seen.ip(), std::net::IpAddr::from(Lan::ip(1)));

    let to_alice = ["found you", "on the LAN", "by name"];
    let to_bob = ["hello bob", "no address", "typed"];
    for (x, y) in to_alice.iter().zip(to_bob) {
        bob.line(x);
        alice.line(y);
    }
    let got = alice.messages(3, WAIT);
    assert_eq!(got, to_alice, "{}\n{}", alice.diag(), bob.diag());
    let got = bob.messages(3, WAIT);
    assert_eq!(got, to_bob, "{}\n{}", bob.diag(), alice.diag());

    both_exit_ok(&mut alice, &mut bob);
    for c in [&alice, &bob] {
        assert_eq!(c.seen_of("message").len(), 3, "exactly once\n{}", c.diag());
        assert!(c.seen_of("error").is_empty(), "{}", c.diag());
    }
    // Bob trusted alice's key on first contact at the address he called, as with --to ADDR:
    // the advertised fingerprint decided nothing.
    let known = std::fs::read_to_string(home_b.path().join("known_keys")).expect("known_keys");
    assert!(known.contains(&alice_addr), "{known}");
    eprintln!("bob called alice by name: {:?}", start.elapsed());
}

/// 3. `--no-advertise` keeps a peer off the lists; another peer on the same LAN, advertised
///    (bound to a specific address), shows that the browse works.
#[test]
fn no_advertise_is_not_found() {
    let Some(lan) = lan("no_advertise_is_not_found", 3) else {
        return;
    };
    let (home_a, home_b, home_c) = (tempdir(), tempdir(), tempdir());
    // (No --name: a name is for advertising, and --name conflicts with --no-advertise.)
    let (mut alice, _) = lan.waiting_peer("alice", 0, home_a.path(), &["--no-advertise"]);
    let banner = alice.seen[0]["message"].as_str().unwrap_or_default();
    assert!(!banner.contains("on the LAN"), "{banner}");
    // Carol binds her own address (not the wildcard): that address alone is advertised.
    let carol_bind = SocketAddr::from((Lan::ip(2), netns::random_port())).to_string();
    let (mut carol, carol_port) = lan.waiting_peer(
        "carol",
        2,
        home_c.path(),
        &["--name", "carol", "--bind", &carol_bind],
    );

    let (peers, diag) = lan.browse(1, home_b.path());
    // Carol alone: alice, under whatever name, is not there.
    let c = named(&peers, "carol");
    assert_eq!(c.len(), 1, "{diag}\n{}", carol.diag());
    assert_eq!(
        c[0]["address"],
        SocketAddr::from((Lan::ip(2), carol_port)).to_string()
    );
    assert_eq!(peers.len(), 1, "{diag}");
    for p in [&mut alice, &mut carol] {
        p.line("/quit");
        assert!(p.exit(WAIT).success(), "{}", p.diag());
    }
}

/// 4. The advertisement is standard DNS-SD, as another tool decodes it: captured on the LAN
///    while a peer starts, is browsed and leaves, `tshark` finds the PTR record of
///    `_chirp._udp.local` pointing at the instance, its SRV record with the port, its TXT record
///    with `v=1` and `fp=`, and, once the peer has left, the goodbye (the PTR with TTL 0).
#[test]
fn tshark_decodes_the_advertisement_as_dns_sd() {
    let test = "tshark_decodes_the_advertisement_as_dns_sd";
    let how = "install it with `apt-get install tshark`";
    if !chirp_testsvc::require_with("tshark", have("tshark"), how)
        || !chirp_testsvc::require_with("dumpcap", have("dumpcap"), how)
    {
        return;
    }
    let Some(lan) = lan(test, 2) else {
        return;
    };
    let (home_a, home_b, dir) = (tempdir(), tempdir(), tempdir());
    let fp_a = fingerprint(home_a.path());
    let pcap = dir.path().join("mdns.pcap");
    let pcap_s = pcap.display().to_string();
    let mut capture = Proc::spawn(
        "dumpcap",
        "ip",
        &[
            "netns",
            "exec",
            &lan.hosts[1],
            "dumpcap",
            "-i",
            &lan.links[1],
            "-f",
            "udp port 5353",
            "-P",
            "-q",
            "-w",
            &pcap_s,
        ]
        .map(str::to_owned),
        Stdout::Raw,
    );
    // dumpcap writes the file's header once it captures.
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&pcap).map_or(0, |m| m.len()) < 24 {
        assert!(
            capture.try_status().is_none(),
            "dumpcap exited: {}",
            capture.stderr()
        );
        assert!(Instant::now() < deadline, "dumpcap did not start capturing");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (mut alice, port) = lan.waiting_peer("alice", 0, home_a.path(), &["--name", "alice"]);
    let (peers, diag) = lan.browse(1, home_b.path());
    assert_eq!(named(&peers, "alice").len(), 1, "{diag}");
    alice.line("/quit");
    assert!(alice.exit(WAIT).success(), "{}", alice.diag());
    // The goodbye goes out as the peer leaves; give it time to cross the bridge.
    std::thread::sleep(Duration::from_millis(500));
    run("kill", &["-TERM", &capture.pid().to_string()]).expect("stop dumpcap");
    let status = capture.wait_exit(WAIT).expect("dumpcap stops on SIGTERM");
    assert!(status.success(), "dumpcap: {status}: {}", capture.stderr());

    let config = tempdir();
    let (ok, out, err) = run_tshark(&pcap_s, config.path());
    assert!(ok, "tshark failed: {err}");
    let packets: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let mut records = Vec::new();
    collect_records(&packets, &mut records);
    let show = || {
        records
            .iter()
            .map(|r| format!("  {r:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let instance = "alice._chirp._udp.local";
    let ptr = |ttl_zero: bool| {
        records.iter().any(|r| {
            r.get("dns.resp.type").map(String::as_str) == Some("12")
                && r.get("dns.resp.name").map(String::as_str) == Some("_chirp._udp.local")
                && r.get("dns.ptr.domain_name").map(String::as_str) == Some(instance)
                && (r.get("dns.resp.ttl").map(String::as_str) == Some("0")) == ttl_zero
        })
    };
    assert!(ptr(false), "a PTR record for _chirp._udp.local\n{}", show());
    // tshark shows an SRV record's owner name as RFC 2782's parts: service, proto, name.
    let srv = records.iter().any(|r| {
        let field = |k: &str| r.get(k).map(String::as_str);
        field("dns.resp.type") == Some("33")
            && field("dns.srv.service") == Some("alice")
            && field("dns.srv.proto") == Some("_chirp")
            && field("dns.srv.name") == Some("_udp.local")
            && r.get("dns.srv.port") == Some(&port.to_string())
    });
    assert!(srv, "an SRV record with port {port}\n{}", show());
    let txt = records.iter().any(|r| {
        r.get("dns.resp.type").map(String::as_str) == Some("16")
            && r.get("dns.resp.name").map(String::as_str) == Some(instance)
            && r.get("dns.txt").is_some_and(|t| {
                t.split('\u{1f}').any(|s| s == format!("fp={fp_a}"))
                    && t.split('\u{1f}').any(|s| s == "v=1")
            })
    });
    assert!(txt, "a TXT record with v=1 and fp={fp_a}\n{}", show());
    assert!(
        ptr(true),
        "the goodbye: the PTR record with TTL 0\n{}",
        show()
    );
}

/// 5. On terminals, as a person would: bob lists the LAN, picks alice by number; alice, waiting
///    in the chat UI, is asked about bob's key, accepts it (Alt+Y), and they chat.
#[test]
fn a_peer_is_picked_by_number_and_the_callee_is_asked_on_terminals() {
    let test = "a_peer_is_picked_by_number_and_the_callee_is_asked_on_terminals";
    if !chirp_testsvc::require_with(
        "tmux",
        have("tmux"),
        "install it with `apt-get install tmux`",
    ) {
        return;
    }
    let Some(lan) = lan(test, 2) else {
        return;
    };
    let (home_a, home_b, dir) = (tempdir(), tempdir(), tempdir());
    let (fp_a, fp_b) = (fingerprint(home_a.path()), fingerprint(home_b.path()));
    let (ha, hb) = (
        home_a.path().display().to_string(),
        home_b.path().display().to_string(),
    );
    let tmux = Tmux::new(dir.path()).join_wrapped();
    let ns = |i: usize| lan.hosts[i].as_str();
    tmux.start_argv(
        "alice",
        &[
            "ip",
            "netns",
            "exec",
            ns(0),
            CHIRP,
            "peer",
            "--name",
            "alice",
            "--home",
            &ha,
        ],
    );
    tmux.wait_for("alice", "the chat UI", |s| s.contains("connecting"));
    tmux.start_argv(
        "bob",
        &[
            "ip",
            "netns",
            "exec",
            ns(1),
            CHIRP,
            "peer",
            "--lan",
            "--no-advertise",
            "--browse-secs",
            BROWSE_SECS,
            "--home",
            &hb,
        ],
    );
    let list = tmux.wait_for("bob", "the question", |s| s.contains("Call which peer"));
    let row = format!("1. alice  {}:", Lan::ip(0));
    assert!(
        list.contains(&row) && list.contains(&fp_a) && list.contains("(1-1, q to quit)"),
        "{list}"
    );
    tmux.type_line("bob", "1");
    let ask = tmux.wait_for("alice", "the question about bob's key", |s| {
        s.contains("is calling") && s.contains(&fp_b)
    });
    assert!(ask.contains(&format!("{}:", Lan::ip(1))), "{ask}");
    tmux.keys("alice", "M-y");
    tmux.wait_for("bob", "alice up", |s| {
        s.contains(&format!("{}:", Lan::ip(0))) && s.contains("is up")
    });
    tmux.type_line("bob", "hello alice, picked you from the list");
    tmux.wait_for("alice", "bob's line", |s| {
        s.contains("hello alice, picked you from the list")
    });
    tmux.type_line("alice", "hi bob, accepted your key");
    tmux.wait_for("bob", "alice's line", |s| {
        s.contains("hi bob, accepted your key")
    });
    // Alice remembered bob's key for the address he called from, as she answered.
    let known = std::fs::read_to_string(home_a.path().join("known_keys")).expect("known_keys");
    assert!(known.contains(&format!("{}:", Lan::ip(1))), "{known}");
}

/// `tshark -r PCAP -Y mdns -T json --no-duplicate-keys` with an empty configuration:
/// (success, stdout, stderr).
fn run_tshark(pcap: &str, config: &Path) -> (bool, String, String) {
    let args: Vec<String> = [
        "-r",
        pcap,
        "-Y",
        "mdns",
        "-T",
        "json",
        "--no-duplicate-keys",
    ]
    .map(str::to_owned)
    .to_vec();
    let dir = config.display().to_string();
    let mut p = Proc::spawn_env(
        "tshark",
        "tshark",
        &args,
        Stdout::Raw,
        &[("WIRESHARK_CONFIG_DIR", &dir)],
    );
    p.close_stdin();
    let status = p
        .wait_exit(Duration::from_secs(120))
        .expect("tshark finishes within 120 s");
    let mut out = Vec::new();
    while let Ok(chunk) = p.recv(Duration::from_secs(5)) {
        out.extend_from_slice(&chunk);
    }
    (
        status.success(),
        String::from_utf8_lossy(&out).into_owned(),
        p.stderr(),
    )
}

/// Every DNS resource record in tshark's JSON (an object with `dns.resp.type`), as its fields;
/// a field that occurs several times (TXT strings) is joined with U+001F.
fn collect_records(v: &Value, out: &mut Vec<BTreeMap<String, String>>) {
    match v {
        Value::Object(map) => {
            if map.contains_key("dns.resp.type") {
                let record = map
                    .iter()
                    .filter_map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Array(items) => items
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join("\u{1f}"),
                            _ => return None,
                        };
                        Some((k.clone(), text))
                    })
                    .collect();
                out.push(record);
            }
            for child in map.values() {
                collect_records(child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                collect_records(child, out);
            }
        }
        _ => {}
    }
}
