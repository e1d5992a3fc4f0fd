//! Network namespaces for the tests that need a real network between `chirp` processes (a NAT
//! in `nat.rs`, NATs and a rendezvous server in `rendezvous.rs`, a LAN with multicast in
//! `lan.rs`), created by the test itself, with private test addresses inside them only; the
//! root namespace is never changed (veths are created directly inside their namespaces).
//!
//! - [`run`], [`ip`]: one setup command, bounded in time.
//! - [`Namespaces`]: the test's namespaces, created at once, deleted on drop with anything
//!   still running in them, on every path. [`Netns`]: the same, added one by one, with veth
//!   pairs between them.
//! - [`Skip`], [`skip`]: why a test cannot run here (not root, no `ip` or `iptables`,
//!   namespaces or NAT not permitted): it says so and passes, unless `CHIRP_REQUIRE_NETNS=1`
//!   (set by CI as root), where that is a failure.

#![allow(clippy::print_stderr)] // skip notices and teardown warnings

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

/// Why a test cannot run here.
#[derive(Debug)]
pub(crate) struct Skip(pub(crate) String);

/// Reports a skip (or fails, with `CHIRP_REQUIRE_NETNS` set). `needs` says what the test
/// needs, for the notice.
pub(crate) fn skip(test: &str, why: &Skip, needs: &str) {
    if std::env::var_os("CHIRP_REQUIRE_NETNS").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!(
            "{test} cannot run, and CHIRP_REQUIRE_NETNS is set: {}",
            why.0
        );
    }
    eprintln!("SKIPPED {test}: {} (this test needs {needs})", why.0);
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

/// Unique per test process and per call (tests run in parallel threads): `(pid, n)`, for
/// namespace and interface names.
pub(crate) fn unique() -> (u32, usize) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    (std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Root, and `ip`: what every namespace test needs before anything else.
pub(crate) fn preflight() -> Result<(), Skip> {
    if !is_root() {
        return Err(Skip("not running as root".into()));
    }
    if !have("ip") {
        return Err(Skip("`ip` (iproute2) is not installed".into()));
    }
    Ok(())
}

/// [`preflight`], and the `iptables` programs present (the nft-backed one first), or why there
/// are none.
pub(crate) fn iptables() -> Result<Vec<&'static str>, Skip> {
    preflight()?;
    let found: Vec<&str> = ["iptables", "iptables-legacy"]
        .into_iter()
        .filter(|p| have(p))
        .collect();
    if found.is_empty() {
        return Err(Skip("`iptables` is not installed".into()));
    }
    Ok(found)
}

/// Network namespaces created by a test, each with its loopback up; deleted, with whatever
/// still runs in them (and the interfaces inside), on drop.
#[derive(Debug)]
pub(crate) struct Namespaces(Vec<String>);

impl Namespaces {
    /// Creates the namespaces `names`, or says why it cannot here.
    pub(crate) fn create(names: &[String]) -> Result<Namespaces, Skip> {
        for ns in names {
            // A namespace of that name can only be left over from a killed run with our pid.
            let _ = run("ip", &["netns", "del", ns]);
        }
        let mut made = Namespaces(Vec::new());
        // From here on, `made`'s Drop removes whatever was created.
        for ns in names {
            run("ip", &["netns", "add", ns])
                .map_err(|e| Skip(format!("cannot create a network namespace: {e}")))?;
            made.0.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Ok(made)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        teardown(&self.0);
    }
}

/// Kills whatever still runs in the namespaces `names`, then deletes them (which removes their
/// interfaces, and any rules in them). Never panics.
pub(crate) fn teardown<S: AsRef<str>>(names: &[S]) {
    for ns in names {
        let ns = ns.as_ref();
        // Anything still running in the namespace (the chirps are normally gone already: they
        // are declared after the namespaces, so dropped before them).
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                // SIGKILL returns at once; `Command` (not `run`) cannot panic here.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }
        }
        if let Err(e) = run("ip", &["netns", "del", ns]) {
            eprintln!("warning: could not delete network namespace {ns}: {e}");
        }
    }
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
        let (pid, n) = unique();
        Netns {
            tag: format!("{short}{pid}-{n}"),
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
        teardown(&self.names);
    }
}
