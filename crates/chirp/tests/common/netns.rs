//! Network namespaces for the NAT tests (`nat.rs`, `rendezvous.rs`): bounded setup commands, the
//! skip rule, and [`Netns`], a set of namespaces deleted (with whatever still runs in them) on
//! every path.
//!
//! Only the tests' own namespaces and private addresses inside them are used; the root
//! namespace is never changed (veths are created directly inside their namespaces). A test
//! that cannot run here (not root, no `ip` or `iptables`, namespaces or NAT not permitted)
//! says so on stderr and passes, unless `CHIRP_REQUIRE_NETNS=1` makes that a failure.

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{Proc, Stdout, have};

/// Bound on one setup or teardown command (they normally take milliseconds).
pub(crate) const CMD: Duration = Duration::from_secs(10);

/// Runs `program args` to completion, bounded by [`CMD`]: its stdout, or what went wrong. Never
/// panics once `program` has started (it runs in `Drop` too).
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let argv: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let mut p = Proc::spawn(program, program, &argv, Stdout::Raw);
    p.close_stdin();
    let Some(status) = p.wait_exit(CMD) else {
        return Err(format!(
            "{program} {} did not finish within {CMD:?}",
            args.join(" ")
        ));
    };
    let mut out = Vec::new();
    // Exited: the reader thread drains what is left, then the channel closes.
    while let Ok(chunk) = p.recv(Duration::from_secs(2)) {
        out.extend_from_slice(&chunk);
    }
    if status.success() {
        return Ok(String::from_utf8_lossy(&out).into_owned());
    }
    // Give the stderr reader a moment to see EOF too.
    let deadline = Instant::now() + Duration::from_millis(500);
    while p.stderr().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "`{program} {}` failed ({status}): {}",
        args.join(" "),
        p.stderr().trim()
    ))
}

/// `ip ARGS`, panicking with its error (for steps that cannot fail once namespaces work).
pub(crate) fn ip(args: &[&str]) {
    if let Err(e) = run("ip", args) {
        panic!("network setup failed: {e}");
    }
}

/// Why the test cannot run here.
pub(crate) struct Skip(pub(crate) String);

/// Reports a skip (or fails, with `CHIRP_REQUIRE_NETNS` set).
pub(crate) fn skip(test: &str, why: &Skip) {
    if std::env::var_os("CHIRP_REQUIRE_NETNS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!(
            "{test} cannot run, and CHIRP_REQUIRE_NETNS is set: {}",
            why.0
        );
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "SKIPPED {test}: {} (this test needs root, iproute2, iptables with NAT support, and \
             permission to create network namespaces)",
            why.0
        );
    }
}

/// Whether we run as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// A random port in 20000..60000 (every namespace is fresh, so any port is free).
pub(crate) fn random_port() -> u16 {
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    20_000 + (r % 40_000) as u16
}

/// The `iptables` programs present (the nft-backed one first), or why there are none.
pub(crate) fn iptables() -> Result<Vec<&'static str>, Skip> {
    if !is_root() {
        return Err(Skip("not running as root".into()));
    }
    if !have("ip") {
        return Err(Skip("`ip` (iproute2) is not installed".into()));
    }
    let found: Vec<&str> = ["iptables", "iptables-legacy"]
        .into_iter()
        .filter(|p| have(p))
        .collect();
    if found.is_empty() {
        return Err(Skip("`iptables` is not installed".into()));
    }
    Ok(found)
}

/// Namespaces of one test, named uniquely per process and test; deleted on drop, with
/// whatever still runs in them (the veths and NAT rules go with them).
pub(crate) struct Netns {
    /// Test-unique prefix of names (also of interface names, which are at most 15 bytes).
    pub(crate) tag: String,
    names: Vec<String>,
}

impl Netns {
    /// An empty set (`short`: a letter or two naming the test, for interface names).
    pub(crate) fn new(short: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Netns {
            tag: format!("{short}{}-{n}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// Creates namespace `role` (its full name is returned), with `lo` up.
    pub(crate) fn add(&mut self, role: &str) -> Result<String, Skip> {
        let name = format!("chirp-{role}-{}", self.tag);
        // A namespace of that name can only be left over from a killed run with our pid.
        let _ = run("ip", &["netns", "del", &name]);
        run("ip", &["netns", "add", &name])
            .map_err(|e| Skip(format!("cannot create a network namespace: {e}")))?;
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Ok(name)
    }

    /// A veth pair between namespaces `a` and `b`, named `{tag}{x}` and `{tag}{y}`, with
    /// addresses `addr_a` and `addr_b` (CIDR), both up. Returns the two interface names.
    pub(crate) fn link(
        &self,
        (a, x, addr_a): (&str, char, &str),
        (b, y, addr_b): (&str, char, &str),
    ) -> Result<(String, String), Skip> {
        let (ia, ib) = (format!("{}{x}", self.tag), format!("{}{y}", self.tag));
        run(
            "ip",
            &[
                "link", "add", &ia, "netns", a, "type", "veth", "peer", "name", &ib, "netns", b,
            ],
        )
        .map_err(|e| Skip(format!("cannot create a veth pair: {e}")))?;
        for (ns, dev, addr) in [(a, &ia, addr_a), (b, &ib, addr_b)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        Ok((ia, ib))
    }

    /// Runs `cmd` in namespace `ns` (through `sh -c`), panicking with its error.
    pub(crate) fn sh(&self, ns: &str, cmd: &str) -> String {
        run("ip", &["netns", "exec", ns, "sh", "-c", cmd])
            .unwrap_or_else(|e| panic!("`{cmd}` in {ns} failed: {e}"))
    }

    /// Turns IPv4 forwarding on in `ns` (a router).
    pub(crate) fn forward(&self, ns: &str) {
        self.sh(ns, "echo 1 > /proc/sys/net/ipv4/ip_forward");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.names {
            // Anything still running in the namespace (the chirps are normally gone already:
            // they are declared after the namespaces, so dropped before them).
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    // SIGKILL returns at once; `Command` (not `run`) cannot panic here.
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", pid])
                        .status();
                }
            }
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("warning: could not delete network namespace {ns}: {e}");
                }
            }
        }
    }
}
