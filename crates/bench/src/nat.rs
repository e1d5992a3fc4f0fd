//! `chirp bench nat`: the figures of peers through NATs (issue 17), in network namespaces this
//! module builds and tears down itself.
//!
//! ```text
//!   home1 10.218.1.2 ── nat1 ── 10.217.1.2 ─┐                ┌─ 10.217.2.2 ── nat2 ── 10.218.2.2 home2
//!                      MASQUERADE          10.217.1.1 pub 10.217.2.1     MASQUERADE
//!                                (router; `chirp serve`, and `chirp impair` where asked)
//! ```
//!
//! The topology is `crates/chirp/tests/rendezvous.rs`'s: each home behind its own NAT namespace
//! (`iptables MASQUERADE`: endpoint-independent mapping; with `--random-fully`: a new port per
//! destination, symmetric), or directly on the public router ("no NAT"). The public router
//! holds the rendezvous server. Two `chirp peer --via` (alice in home1, bob in home2) meet
//! through it.
//!
//! - **Matrix** ([`Matrix`]): the three NAT behaviours of the issue, nothing in the path but
//!   the NATs and veth links. Alice starts first and waits at the server with a line typed;
//!   the time to first message runs from starting bob's process to that line's arrival on
//!   his stdout, and the path (`direct` or `relayed`) is the one both `peer_up` events name.
//! - **Latency under impairment** ([`Cell`]): `chirp impair` in the public namespace, steered
//!   into the path by `iptables` NAT rules there, so that the peers need no configuration and
//!   see the addresses they would see without it:
//!   - *direct* paths: the proxy's fixed wire (`--client A --via V`) carries the peers'
//!     datagrams between the two public addresses (DNAT of each direction of that one flow
//!     to the proxy's end for it, SNAT of the proxy's sends back to the other peer's public
//!     address). Only the peer-to-peer flow crosses it; the server sessions do not. One
//!     impaired hop: `--delay`, `--jitter` and the loss rate, each direction.
//!   - the *relayed* path: the proxy in front of the server (DNAT of everything sent to the
//!     server's port), so both peers' server sessions and the relay's traffic cross it,
//!     twice per message (alice → relay, relay → bob). Each crossing gets half the delay and
//!     jitter and the loss `1 - sqrt(1 - p)`: end to end, the relayed path has the direct
//!     path's delay and loss, and what differs is the relay (and a second crossing of a
//!     userspace proxy).
//!
//!   Both sides write `lines` lines at `rate` lines/s at once; latency runs from the write to
//!   the other side's stdout line, both directions pooled. Every line is checked: none
//!   missing, duplicated, reordered or damaged. The reference, in the same run: the direct
//!   path without any NAT, through the same impairment.
//!
//! Everything a run starts is killed and its namespaces deleted when the run ends, on every
//! path; namespaces left by a bench that was killed (`chirp-nb-PID-…` of a dead pid) are
//! deleted at the start of the next. It needs root, `ip` (iproute2) and `iptables`:
//! [`preflight`] says why it cannot run here.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher as _, Hasher as _};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ChildStdin, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::children::{Children, Impairment, Out, is_impair_start};
use crate::netns::{Namespaces, have, sweep_leftovers};
use crate::{BenchError, median, quantile};

/// Bound on each start-up wait: a process's first line, alice waiting at the server, both
/// `peer_up` (the relayed path takes its 3 s more).
const SETUP_LIMIT: Duration = Duration::from_secs(20);
/// How long the measurement waits for the last lines after the last was written.
const GRACE: Duration = Duration::from_secs(30);
/// The line alice types before bob arrives: the first message.
const FIRST: &str = "first";

/// How a home reaches the public network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Nat {
    /// On the public network itself.
    None,
    /// `MASQUERADE`: one mapping per socket whatever the destination (endpoint-independent
    /// mapping, the common home router).
    EndpointIndependent,
    /// `MASQUERADE --random-fully`: a random port per destination (symmetric).
    Symmetric,
}

/// The path a chat took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Peer to peer, through the NATs.
    Direct,
    /// Through the server's relay.
    Relayed,
}

impl PathKind {
    /// `direct` or `relayed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relayed => "relayed",
        }
    }
}

/// One NAT case: alice's side, bob's, and the path expected.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Case {
    /// Short name, for tables.
    pub name: &'static str,
    /// Alice's and bob's NAT.
    pub sides: [Nat; 2],
    /// The path the design gives this case.
    pub expected: PathKind,
}

/// The issue's NAT behaviours, in the order of the figures.
pub const MATRIX: [Case; 3] = [
    Case {
        name: "endpoint-independent both",
        sides: [Nat::EndpointIndependent, Nat::EndpointIndependent],
        expected: PathKind::Direct,
    },
    Case {
        name: "one side without NAT",
        sides: [Nat::EndpointIndependent, Nat::None],
        expected: PathKind::Direct,
    },
    Case {
        name: "symmetric both",
        sides: [Nat::Symmetric, Nat::Symmetric],
        expected: PathKind::Relayed,
    },
];

/// The latency cases: the reference first.
pub const LATENCY_CASES: [Case; 3] = [
    Case {
        name: "reference: direct, no NAT",
        sides: [Nat::None, Nat::None],
        expected: PathKind::Direct,
    },
    Case {
        name: "direct, endpoint-independent both",
        sides: [Nat::EndpointIndependent, Nat::EndpointIndependent],
        expected: PathKind::Direct,
    },
    Case {
        name: "relayed, symmetric both",
        sides: [Nat::Symmetric, Nat::Symmetric],
        expected: PathKind::Relayed,
    },
];

/// What to run.
#[derive(Debug, Clone)]
pub struct NatConfig {
    /// The `chirp` binary whose `serve`, `peer` and `impair` run.
    pub chirp: PathBuf,
    /// Runs of every matrix case and latency cell.
    pub runs: u32,
    /// Lines each side writes per latency run; 0 skips the latency part.
    pub lines: u32,
    /// Lines per second each side writes.
    pub rate: f64,
    /// Bytes per line (at least 22: tag, number, send time).
    pub size: usize,
    /// Loss rates of the path, one latency row each.
    pub losses: Vec<f64>,
    /// One-way delay of the path.
    pub delay: Duration,
    /// Extra random delay of the path, uniform in 0..=jitter.
    pub jitter: Duration,
    /// Seed of the first impaired run; each further run adds 1.
    pub seed: u64,
    /// Set from outside (Ctrl-C) to end at the next wait, tearing everything down.
    pub stop: Arc<AtomicBool>,
}

/// Nearest-rank latency figures of one run, or medians over runs, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Quantiles {
    /// The smallest: at least the configured delay when the impairment is in the path.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
}

/// One run of a matrix case.
#[derive(Debug, Clone, Serialize)]
pub struct FirstRun {
    /// The path both peers named.
    pub path: PathKind,
    /// From starting bob's process to alice's line on his screen.
    pub first_message_ms: f64,
}

/// A NAT case of the matrix over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// The case.
    pub case: Case,
    /// Each run.
    pub runs: Vec<FirstRun>,
    /// Median time to first message.
    pub first_message_ms: f64,
    /// Every run took the expected path.
    pub as_expected: bool,
}

/// One impaired latency run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    /// The proxy's seed.
    pub seed: u64,
    /// The path both peers named.
    pub path: PathKind,
    /// Time to first message through the impaired path.
    pub first_message_ms: f64,
    /// Lines written, both sides.
    pub expected: u64,
    /// Distinct lines displayed by the other side.
    pub delivered: u64,
    /// Not displayed within the time bound.
    pub missing: u64,
    /// Displayed twice.
    pub duplicated: u64,
    /// Displayed after a later one.
    pub reordered: u64,
    /// Displayed, but not as written.
    pub damaged: u64,
    /// Latency of the lines displayed.
    pub latency_ms: Quantiles,
}

impl LatencyRun {
    fn clean(&self) -> bool {
        self.missing + self.duplicated + self.reordered + self.damaged == 0
    }
}

/// A latency case at one loss rate, over its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The case.
    pub case: Case,
    /// Loss rate of the whole path, each direction.
    pub loss: f64,
    /// Each run.
    pub runs: Vec<LatencyRun>,
    /// Medians over the runs.
    pub median_ms: Quantiles,
    /// Median time to first message.
    pub first_message_ms: f64,
    /// Median p99 over the reference's median p99 at the same loss rate.
    pub p99_to_reference: f64,
    /// Median p99 over the path's one-way delay.
    pub p99_to_delay: f64,
    /// Every run took the expected path and delivered every line once, in order, intact.
    pub clean: bool,
}

/// Everything `chirp bench nat` measured.
#[derive(Debug, Clone, Serialize)]
pub struct NatReport {
    /// The NAT cases without impairment.
    pub matrix: Vec<Matrix>,
    /// Share of the matrix's NAT behaviours whose every run ended direct.
    pub direct_share: f64,
    /// The latency cells, by loss rate, reference first.
    pub latency: Vec<Cell>,
    /// Every matrix case took its expected path and every latency run was clean.
    pub clean: bool,
}

pub use crate::netns::preflight;

/// Runs the matrix, then (with `lines` > 0) the latency cells, `progress` told of each run.
pub fn run(config: &NatConfig, mut progress: impl FnMut(&str)) -> Result<NatReport, BenchError> {
    if let Err(why) = preflight() {
        return Err(BenchError::Stuck(format!(
            "cannot build the namespaces: {why}"
        )));
    }
    sweep_leftovers();
    let mut matrix = Vec::new();
    for case in MATRIX {
        let mut runs = Vec::new();
        for i in 0..config.runs {
            progress(&format!("{} ({}/{})", case.name, i + 1, config.runs));
            let run = first_message(config, case)?;
            runs.push(run);
        }
        let mut times: Vec<f64> = runs.iter().map(|r| r.first_message_ms).collect();
        matrix.push(Matrix {
            case,
            first_message_ms: median(&mut times).unwrap_or(f64::NAN),
            as_expected: runs.iter().all(|r| r.path == case.expected),
            runs,
        });
    }
    let direct = matrix
        .iter()
        .filter(|m| m.runs.iter().all(|r| r.path == PathKind::Direct))
        .count();
    let direct_share = direct as f64 / matrix.len() as f64;

    let mut latency = Vec::new();
    if config.lines > 0 {
        let mut runs: Vec<Vec<LatencyRun>> = vec![Vec::new(); config.losses.len() * 3];
        let mut seed = config.seed;
        // Rounds: each round runs every cell once, so that the machine's noise falls on all.
        for round in 0..config.runs {
            for (l, &loss) in config.losses.iter().enumerate() {
                for (c, case) in LATENCY_CASES.into_iter().enumerate() {
                    progress(&format!(
                        "{}, loss {:.0} % ({}/{})",
                        case.name,
                        loss * 100.0,
                        round + 1,
                        config.runs
                    ));
                    let run = latency_run(config, case, loss, seed)?;
                    seed += 1;
                    runs[l * 3 + c].push(run);
                }
            }
        }
        for (l, &loss) in config.losses.iter().enumerate() {
            let mut reference_p99 = f64::NAN;
            for (c, case) in LATENCY_CASES.into_iter().enumerate() {
                let runs = std::mem::take(&mut runs[l * 3 + c]);
                let med = |f: fn(&LatencyRun) -> f64| {
                    let mut v: Vec<f64> = runs.iter().map(f).collect();
                    median(&mut v).unwrap_or(f64::NAN)
                };
                let median_ms = Quantiles {
                    min: med(|r| r.latency_ms.min),
                    p50: med(|r| r.latency_ms.p50),
                    p99: med(|r| r.latency_ms.p99),
                    p999: med(|r| r.latency_ms.p999),
                    max: med(|r| r.latency_ms.max),
                };
                if c == 0 {
                    reference_p99 = median_ms.p99;
                }
                let delay_ms = config.delay.as_secs_f64() * 1e3;
                latency.push(Cell {
                    case,
                    loss,
                    first_message_ms: med(|r| r.first_message_ms),
                    p99_to_reference: median_ms.p99 / reference_p99,
                    p99_to_delay: median_ms.p99 / delay_ms,
                    median_ms,
                    clean: runs.iter().all(|r| r.clean() && r.path == case.expected),
                    runs,
                });
            }
        }
    }
    let clean = matrix.iter().all(|m| m.as_expected) && latency.iter().all(|c| c.clean);
    Ok(NatReport {
        matrix,
        direct_share,
        latency,
        clean,
    })
}

/// One matrix run: the path and the time to first message, nothing impaired.
fn first_message(config: &NatConfig, case: Case) -> Result<FirstRun, BenchError> {
    let mut lab = Lab::new(config, case.sides)?;
    let server = lab.serve()?;
    let (path, first) = lab.meet(&server, case.expected)?;
    Ok(FirstRun {
        path,
        first_message_ms: ms(first),
    })
}

/// One latency run of `case` with the path's loss rate `loss`.
fn latency_run(
    config: &NatConfig,
    case: Case,
    loss: f64,
    seed: u64,
) -> Result<LatencyRun, BenchError> {
    let mut lab = Lab::new(config, case.sides)?;
    let server = lab.serve()?;
    match case.expected {
        PathKind::Direct => lab.impair_direct(loss, seed)?,
        PathKind::Relayed => lab.impair_server(&server, loss, seed)?,
    }
    let (path, first) = lab.meet(&server, case.expected)?;
    let mut run = lab.chat()?;
    run.seed = seed;
    run.path = path;
    run.first_message_ms = ms(first);
    Ok(run)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A random port in 20000..60000 (every namespace is fresh, so any port is free in it).
fn random_port() -> u16 {
    let r = RandomState::new().build_hasher().finish();
    20_000 + (r % 40_000) as u16
}

/// Who printed a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Server,
    Impair,
    Alice,
    Bob,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Impair => "impair",
            Self::Alice => "alice",
            Self::Bob => "bob",
        }
    }
}

/// The server's address (the public router's side of link 1).
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 217, 1, 1);

/// The public address of side `i` (0 or 1): its NAT's outer address, or its own.
fn public_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 217, i as u8 + 1, 2)
}

/// The server as the peers know it.
#[derive(Debug, Clone)]
struct Server {
    addr: SocketAddr,
    fingerprint: String,
}

/// One run's namespaces, processes and output.
struct Lab<'a> {
    // Dropped in this order: the processes, then their namespaces, then the directory.
    children: Children<Who>,
    alice_in: Option<ChildStdin>,
    bob_in: Option<ChildStdin>,
    ns: Namespaces,
    dir: tempfile::TempDir,
    config: &'a NatConfig,
    public: String,
    home: [String; 2],
    iptables: &'static str,
    /// The peers' ports (kept by their NATs when endpoint-independent).
    ports: [u16; 2],
}

impl<'a> Lab<'a> {
    fn new(config: &'a NatConfig, sides: [Nat; 2]) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("chirp-bench-nat-")
            .tempdir()
            .map_err(BenchError::io("create a temporary directory"))?;
        let mut ns = Namespaces::new();
        let public = ns.add("pub")?;
        ns.sh(&public, "echo 1 > /proc/sys/net/ipv4/ip_forward")?;
        let letters = [['a', 'b', 'c', 'd'], ['e', 'f', 'g', 'h']];
        let mut home = Vec::new();
        let mut chosen = None;
        for (i, side) in sides.into_iter().enumerate() {
            let n = i + 1;
            let [lp, lo, li, lh] = letters[i];
            let router = format!("10.217.{n}.1");
            let h = ns.add(&format!("home{n}"))?;
            if side == Nat::None {
                ns.link(
                    (&public, lp, &format!("{router}/24")),
                    (&h, lo, &format!("10.217.{n}.2/24")),
                )?;
                ns.sh(&h, &format!("ip route add default via {router}"))?;
            } else {
                let r = ns.add(&format!("nat{n}"))?;
                let (_, outer) = ns.link(
                    (&public, lp, &format!("{router}/24")),
                    (&r, lo, &format!("10.217.{n}.2/24")),
                )?;
                ns.link(
                    (&r, li, &format!("10.218.{n}.1/24")),
                    (&h, lh, &format!("10.218.{n}.2/24")),
                )?;
                ns.sh(&r, "echo 1 > /proc/sys/net/ipv4/ip_forward")?;
                ns.sh(&r, &format!("ip route add default via {router}"))?;
                ns.sh(&h, &format!("ip route add default via 10.218.{n}.1"))?;
                let random = if side == Nat::Symmetric {
                    " --random-fully"
                } else {
                    ""
                };
                let mut errors = Vec::new();
                for prog in ["iptables", "iptables-legacy"] {
                    if chosen.is_some_and(|c| c != prog) || !have(prog) {
                        continue;
                    }
                    let rule =
                        format!("{prog} -t nat -A POSTROUTING -o {outer} -j MASQUERADE{random}");
                    match ns.sh(&r, &rule) {
                        Ok(_) => {
                            chosen = Some(prog);
                            break;
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                let Some(prog) = chosen else {
                    return Err(BenchError::Stuck(format!(
                        "cannot add a MASQUERADE rule (no NAT support in this kernel?): {}",
                        errors.join("; ")
                    )));
                };
                // The router's own firewall, as on every home router (and as in
                // tests/rendezvous.rs, which says why a NAT without it remaps ports).
                ns.sh(&r, &format!("{prog} -A INPUT -i {outer} -j DROP"))?;
            }
            home.push(h);
        }
        let iptables = match chosen {
            Some(p) => p,
            None if have("iptables") => "iptables",
            None => "iptables-legacy",
        };
        let [h1, h2] = <[String; 2]>::try_from(home)
            .map_err(|_| BenchError::Stuck("two homes expected".into()))?;
        let a = random_port();
        let b = loop {
            let p = random_port();
            if p != a {
                break p;
            }
        };
        Ok(Self {
            children: Children::new(),
            alice_in: None,
            bob_in: None,
            ns,
            dir,
            config,
            public,
            home: [h1, h2],
            iptables,
            ports: [a, b],
        })
    }

    /// Starts `chirp args` in namespace `ns` as `who`; the peers get a stdin pipe.
    fn spawn(&mut self, who: Who, ns: &str, args: &[String]) -> Result<(), BenchError> {
        let stderr = self.dir.path().join(format!("{}.stderr", who.name()));
        let peer = matches!(who, Who::Alice | Who::Bob);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(&self.config.chirp)
            .args(args)
            // Keys and data default to the XDG directories: never the user's own.
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_DATA_HOME", self.dir.path().join("xdg-data"));
        let stdin = self.children.spawn(who, who.name(), cmd, stderr, peer)?;
        match who {
            Who::Alice => self.alice_in = stdin,
            Who::Bob => self.bob_in = stdin,
            Who::Server | Who::Impair => {}
        }
        Ok(())
    }

    /// The next line of any child, by `until`; an error if a child's output closes, on
    /// timeout, or when the bench is stopped.
    fn next(
        &mut self,
        until: Instant,
        what: &str,
    ) -> Result<Option<(Who, Instant, String)>, BenchError> {
        loop {
            if self.config.stop.load(Ordering::Relaxed) {
                return Err(BenchError::Stuck("interrupted".into()));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self
                .children
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(Out {
                    who,
                    at,
                    line: Some(line),
                }) => return Ok(Some((who, at, line))),
                Ok(Out { who, .. }) => return Err(self.exited(who, what)),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(BenchError::Stuck("every child's output closed".into()));
                }
            }
        }
    }

    /// Reads lines until `done` says so, within [`SETUP_LIMIT`].
    fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(Who, Instant, &str) -> bool,
    ) -> Result<(), BenchError> {
        let until = Instant::now() + SETUP_LIMIT;
        loop {
            match self.next(until, what)? {
                Some((who, at, line)) => {
                    if done(who, at, &line) {
                        return Ok(());
                    }
                }
                None => {
                    return Err(BenchError::Stuck(format!(
                        "no {what} within {SETUP_LIMIT:?}{}",
                        self.tails()
                    )));
                }
            }
        }
    }

    fn exited(&mut self, who: Who, what: &str) -> BenchError {
        let ended = self.children.exited(who);
        BenchError::Stuck(format!("while waiting for {what}: {ended}"))
    }

    fn tails(&self) -> String {
        self.children.tails()
    }

    /// `chirp serve` on the public router.
    fn serve(&mut self) -> Result<Server, BenchError> {
        let addr = SocketAddr::from((SERVER_IP, random_port()));
        let data = self.dir.path().join("server");
        let args = strings(&[
            "serve",
            "--bind",
            &addr.to_string(),
            "--data-dir",
            &data.display().to_string(),
        ]);
        let public = self.public.clone();
        self.spawn(Who::Server, &public, &args)?;
        let mut fingerprint = None;
        self.wait_for("the server's first line", |who, _, line| {
            if who != Who::Server {
                return false;
            }
            fingerprint = line
                .split("key fingerprint ")
                .nth(1)
                .and_then(|r| r.split([' ', ';']).next())
                .map(str::to_owned);
            true
        })?;
        let fingerprint = fingerprint.ok_or_else(|| {
            BenchError::Stuck("no key fingerprint in the server's first line".into())
        })?;
        Ok(Server { addr, fingerprint })
    }

    /// `chirp impair` on the direct path: its fixed wire between the two public addresses,
    /// the flow steered through it by NAT rules on the public router.
    fn impair_direct(&mut self, loss: f64, seed: u64) -> Result<(), BenchError> {
        let alice = SocketAddr::from((public_ip(0), self.ports[0]));
        let bob = SocketAddr::from((public_ip(1), self.ports[1]));
        // The proxy's end facing alice on link 1, its end facing bob on link 2.
        let l = SocketAddr::from((SERVER_IP, random_port()));
        let v = SocketAddr::from((Ipv4Addr::new(10, 217, 2, 1), random_port()));
        let mut args = strings(&[
            "impair",
            "--listen",
            &l.to_string(),
            "--via",
            &v.to_string(),
            "--client",
            &alice.to_string(),
            "--to",
            &bob.to_string(),
        ]);
        args.extend(self.impairment(loss, self.config.delay, self.config.jitter, seed));
        self.start_impair(&args)?;
        let ipt = self.iptables;
        let (ai, ap, bi, bp) = (alice.ip(), alice.port(), bob.ip(), bob.port());
        // Each direction of the peers' flow goes into the proxy's end for it; what the proxy
        // sends comes out as from the other peer. Whichever of the two directions starts
        // first, its conntrack entry translates the other (its reply) the same way.
        let rules = [
            format!(
                "-t nat -A PREROUTING -p udp -s {ai} --sport {ap} -d {bi} --dport {bp} -j DNAT --to-destination {l}"
            ),
            format!(
                "-t nat -A PREROUTING -p udp -s {bi} --sport {bp} -d {ai} --dport {ap} -j DNAT --to-destination {v}"
            ),
            format!(
                "-t nat -A POSTROUTING -p udp -s {} --sport {} -d {ai} --dport {ap} -j SNAT --to-source {bob}",
                l.ip(),
                l.port()
            ),
            format!(
                "-t nat -A POSTROUTING -p udp -s {} --sport {} -d {bi} --dport {bp} -j SNAT --to-source {alice}",
                v.ip(),
                v.port()
            ),
        ];
        for rule in rules {
            self.ns.sh(&self.public, &format!("{ipt} {rule}"))?;
        }
        Ok(())
    }

    /// `chirp impair` in front of the server: everything sent to the server's port goes
    /// through it (both ways), each crossing half the path's delay and `1 - sqrt(1 - loss)`.
    fn impair_server(&mut self, server: &Server, loss: f64, seed: u64) -> Result<(), BenchError> {
        let p = SocketAddr::from((SERVER_IP, random_port()));
        let mut args = strings(&[
            "impair",
            "--listen",
            &p.to_string(),
            "--to",
            &server.addr.to_string(),
        ]);
        let hop_loss = 1.0 - (1.0 - loss).sqrt();
        args.extend(self.impairment(
            hop_loss,
            self.config.delay / 2,
            self.config.jitter / 2,
            seed,
        ));
        self.start_impair(&args)?;
        let rule = format!(
            "{} -t nat -A PREROUTING -p udp -d {} --dport {} -j DNAT --to-destination {p}",
            self.iptables,
            server.addr.ip(),
            server.addr.port()
        );
        self.ns.sh(&self.public, &rule)?;
        Ok(())
    }

    fn impairment(&self, loss: f64, delay: Duration, jitter: Duration, seed: u64) -> Vec<String> {
        let imp = Impairment {
            loss,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            jitter_ms: u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX),
            ..Impairment::default()
        };
        let mut flags = imp.flags(seed);
        flags.push("--json".into());
        flags
    }

    fn start_impair(&mut self, args: &[String]) -> Result<(), BenchError> {
        let public = self.public.clone();
        self.spawn(Who::Impair, &public, args)?;
        self.wait_for("the proxy's start", |who, _, line| {
            who == Who::Impair && is_impair_start(line)
        })
    }

    /// `chirp peer --via` on side `i`.
    fn peer(&mut self, i: usize, server: &Server) -> Result<(), BenchError> {
        let (who, nick, to) = if i == 0 {
            (Who::Alice, "alice", "bob")
        } else {
            (Who::Bob, "bob", "alice")
        };
        let home = self.dir.path().join(nick);
        let args = strings(&[
            "peer",
            "--json",
            "--bind",
            &format!("0.0.0.0:{}", self.ports[i]),
            "--via",
            &server.addr.to_string(),
            "--server-key",
            &server.fingerprint,
            "--nick",
            nick,
            "--to",
            to,
            "--home",
            &home.display().to_string(),
        ]);
        let ns = self.home[i].clone();
        self.spawn(who, &ns, &args)
    }

    /// Alice starts and waits at the server with [`FIRST`] typed; then bob starts. Returns
    /// the path both name and the time from starting bob's process to [`FIRST`] on his
    /// stdout.
    fn meet(
        &mut self,
        server: &Server,
        expected: PathKind,
    ) -> Result<(PathKind, Duration), BenchError> {
        self.peer(0, server)?;
        self.wait_for("alice waiting at the server", |who, _, line| {
            who == Who::Alice && line.contains("\"status\"") && line.contains("waiting for")
        })?;
        self.write(Who::Alice, FIRST)?;
        // From bob's start: a stamp taken here, not on a line a reader thread may read late.
        let origin = Instant::now();
        self.peer(1, server)?;
        let mut paths: [Option<(String, String)>; 2] = [None, None];
        let mut arrived = None;
        self.wait_for("both peers up and the first message", |who, at, line| {
            let i = match who {
                Who::Alice => 0,
                Who::Bob => 1,
                Who::Server | Who::Impair => return false,
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            match v["type"].as_str() {
                Some("peer_up") => {
                    paths[i] = Some((
                        v["path"].as_str().unwrap_or_default().to_owned(),
                        v["peer"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                Some("message") if i == 1 && v["text"] == FIRST => arrived = Some(at),
                _ => {}
            }
            paths.iter().all(Option::is_some) && arrived.is_some()
        })?;
        let (Some(arrived), [Some(pa), Some(pb)]) = (arrived, paths) else {
            return Err(BenchError::Stuck(
                "the peers did not say how they met".into(),
            ));
        };
        let path = match (pa.0.as_str(), pb.0.as_str()) {
            ("direct", "direct") => PathKind::Direct,
            ("relayed", "relayed") => PathKind::Relayed,
            (a, b) => {
                return Err(BenchError::Stuck(format!(
                    "the peers disagree on the path: alice {a}, bob {b}"
                )));
            }
        };
        if path == PathKind::Direct {
            // Direct: each talks to the other's public address.
            for (i, (_, peer)) in [(1, &pa), (0, &pb)] {
                let ip = peer.parse::<SocketAddr>().ok().map(|a| a.ip());
                if ip != Some(IpAddr::V4(public_ip(i))) {
                    return Err(BenchError::Stuck(format!(
                        "a direct path to {peer}, not to the peer's public address {}",
                        public_ip(i)
                    )));
                }
            }
        }
        if path != expected {
            tracing::warn!(?path, ?expected, "not the expected path");
        }
        Ok((path, arrived.saturating_duration_since(origin)))
    }

    fn write(&mut self, who: Who, line: &str) -> Result<(), BenchError> {
        let stdin = match who {
            Who::Alice => self.alice_in.as_mut(),
            Who::Bob => self.bob_in.as_mut(),
            Who::Server | Who::Impair => None,
        };
        let stdin =
            stdin.ok_or_else(|| BenchError::Stuck(format!("{} has no stdin", who.name())))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(BenchError::io(format!("write to {}", who.name())))
    }

    /// Both peers write their lines at the configured rate; every line is checked and timed.
    fn chat(&mut self) -> Result<LatencyRun, BenchError> {
        let n = self.config.lines as usize;
        let (rate, size) = (self.config.rate, self.config.size);
        let origin = Instant::now();
        let start = origin + Duration::from_millis(20);
        let writers = [(self.alice_in.take(), 'A'), (self.bob_in.take(), 'B')];
        let mut handles = Vec::new();
        for (stdin, tag) in writers {
            let mut stdin = stdin.ok_or_else(|| BenchError::Stuck("a peer has no stdin".into()))?;
            let stop = Arc::clone(&self.config.stop);
            let handle = std::thread::Builder::new()
                .name(format!("writer {tag}"))
                .spawn(move || -> std::io::Result<ChildStdin> {
                    for seq in 0..n {
                        // Absolute deadlines: a late wake-up does not delay the lines after it.
                        let due = start + Duration::from_secs_f64(seq as f64 / rate);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let sent = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        writeln!(stdin, "{}", line(tag, seq, sent, size))?;
                        stdin.flush()?;
                    }
                    Ok(stdin)
                })
                .map_err(BenchError::io("start a writer thread"))?;
            handles.push(handle);
        }
        // What alice displays are bob's lines, and the other way round.
        let mut at = [Tracker::new('B', n), Tracker::new('A', n)];
        let until = start + Duration::from_secs_f64(n as f64 / rate) + GRACE;
        while !at.iter().all(Tracker::complete) {
            let Some((who, when, text)) = self.next(until, "the chat's lines")? else {
                break;
            };
            let i = match who {
                Who::Alice => 0,
                Who::Bob => 1,
                Who::Server | Who::Impair => continue,
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            if v["type"] == "message"
                && let Some(t) = v["text"].as_str()
                && t != FIRST
            {
                at[i].on_text(t, when, origin, size);
            }
        }
        let complete = at.iter().all(Tracker::complete);
        if !complete {
            // Lines are missing: the peers go now, so that a writer blocked on a full pipe
            // (a stalled peer stops reading) gets an error instead of waiting for ever.
            self.children.kill_all();
        }
        for h in handles {
            match h.join() {
                Ok(Ok(_stdin)) => {}
                Ok(Err(e)) if complete => return Err(BenchError::io("write a line")(e)),
                Ok(Err(_)) => {}
                Err(_) => return Err(BenchError::Stuck("a writer thread panicked".into())),
            }
        }
        let mut latencies: Vec<Duration> = at
            .iter()
            .flat_map(|t| t.latencies.iter().copied())
            .collect();
        latencies.sort_unstable();
        let q = |p: f64| quantile(&latencies, p).map_or(f64::NAN, ms);
        let delivered: u64 = at.iter().map(|t| t.distinct as u64).sum();
        let expected = 2 * n as u64;
        Ok(LatencyRun {
            seed: 0,
            path: PathKind::Direct,
            first_message_ms: 0.0,
            expected,
            delivered,
            missing: expected - delivered,
            duplicated: at.iter().map(|t| t.duplicated).sum(),
            reordered: at.iter().map(|t| t.reordered).sum(),
            damaged: at.iter().map(|t| t.damaged).sum(),
            latency_ms: Quantiles {
                min: latencies.first().map_or(f64::NAN, |d| ms(*d)),
                p50: q(0.5),
                p99: q(0.99),
                p999: q(0.999),
                max: latencies.last().map_or(f64::NAN, |d| ms(*d)),
            },
        })
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Line `seq` of side `tag`, written `sent_ns` after the origin, padded with `x` to `size`.
fn line(tag: char, seq: usize, sent_ns: u64, size: usize) -> String {
    let mut s = format!("{tag}{seq:06} {sent_ns:013} ");
    let pad = size.saturating_sub(s.len()).max(1);
    s.extend(std::iter::repeat_n('x', pad));
    s
}

/// What one side displayed of the other's lines.
#[derive(Debug)]
struct Tracker {
    tag: char,
    seen: Vec<bool>,
    distinct: usize,
    duplicated: u64,
    reordered: u64,
    damaged: u64,
    highest: Option<usize>,
    latencies: Vec<Duration>,
}

impl Tracker {
    fn new(tag: char, n: usize) -> Self {
        Self {
            tag,
            seen: vec![false; n],
            distinct: 0,
            duplicated: 0,
            reordered: 0,
            damaged: 0,
            highest: None,
            latencies: Vec::with_capacity(n),
        }
    }

    fn complete(&self) -> bool {
        self.distinct == self.seen.len()
    }

    fn on_text(&mut self, text: &str, at: Instant, origin: Instant, size: usize) {
        let Some((seq, sent)) = self.parse(text, size) else {
            self.damaged += 1;
            return;
        };
        if std::mem::replace(&mut self.seen[seq], true) {
            self.duplicated += 1;
            return;
        }
        self.distinct += 1;
        if self.highest.is_some_and(|h| seq < h) {
            self.reordered += 1;
        }
        self.highest = self.highest.max(Some(seq));
        self.latencies
            .push(at.duration_since(origin).saturating_sub(sent));
    }

    /// The number and send time of `text` if it is exactly a line the sender wrote.
    fn parse(&self, text: &str, size: usize) -> Option<(usize, Duration)> {
        let rest = text.strip_prefix(self.tag)?;
        let (digits, rest) = rest.split_once(' ')?;
        let seq: usize = digits.parse().ok()?;
        if seq >= self.seen.len() {
            return None;
        }
        let (sent, _) = rest.split_once(' ')?;
        let sent_ns: u64 = sent.parse().ok()?;
        (text == line(self.tag, seq, sent_ns, size)).then_some((seq, Duration::from_nanos(sent_ns)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_checked_exactly() {
        let mut t = Tracker::new('A', 3);
        let origin = Instant::now();
        let at = origin + Duration::from_millis(30);
        t.on_text(&line('A', 0, 10_000_000, 100), at, origin, 100);
        t.on_text(&line('A', 2, 12_000_000, 100), at, origin, 100);
        t.on_text(&line('A', 1, 11_000_000, 100), at, origin, 100);
        t.on_text(&line('A', 1, 11_000_000, 100), at, origin, 100);
        t.on_text("A000001 damaged", at, origin, 100);
        t.on_text(&line('B', 0, 10_000_000, 100), at, origin, 100);
        assert!(t.complete());
        assert_eq!((t.duplicated, t.reordered, t.damaged), (1, 1, 2));
        assert_eq!(t.latencies[0], Duration::from_millis(20));
        assert_eq!(line('A', 7, 5, 100).len(), 100);
    }
}
