//! `chirp bench`: the load generator (`chirp-bench`) behind a command line. It starts the
//! server itself (this same binary's `serve`, in a temporary directory) unless given one,
//! runs the scenario and the raw-UDP reference in the same run, and prints a table or JSON.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chirp_bench::fanout::{self, FanoutConfig, FanoutReport};
use chirp_bench::flood::{self, FloodConfig, Junk};
use chirp_bench::handshake::{self, HandshakeConfig};
use chirp_bench::idle::{self, IdleConfig};
use chirp_bench::nat::{self, NatConfig, NatReport};
use chirp_bench::raw::{self, RawReport};
use chirp_bench::server::ServerProcess;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::addr;

pub(crate) const EXAMPLES: &str = "\
Every figure comes with the reference taken in the same run: plain UDP datagrams per second
over loopback on the same machine (one send and one receive per datagram). Runs are repeated
(--runs) and the median is shown; each run also checks that every member got every message
exactly once, in order, and the command exits 1 if one did not.

Examples:
  chirp bench fanout                                   # 100 members, 1 sender, 200 messages
  chirp bench fanout --members 1000 --messages 50 --runs 3
  chirp bench fanout --senders 10 --json
  chirp bench fanout --members 1000 --rate 20 --messages 200    # latency at a steady rate
  chirp bench fanout --server 127.0.0.1:7667 --server-pid 4242   # a server already running
  chirp bench fanout --rate 50 --server 127.0.0.1:7667 --server 127.0.0.1:7668
                             # a cluster's two nodes: the sender on the first, the members
                             # on both; add --server-pid for each node, in the same order
  chirp bench handshake --sessions 5000 --concurrency 64    # new sessions/s, setup time
  chirp bench idle --sessions 5000 --seconds 20         # memory per session, idle CPU
  chirp bench flood --sessions 0,10000                  # junk at full rate: cost, latency
  chirp bench flood --kinds initial --probes 500
  chirp bench raw --seconds 3
  sudo chirp bench nat                # peers through NATs in network namespaces (root)
  sudo chirp bench nat --lines 0      # the NAT matrix only: path, time to first message
  sudo chirp bench nat --loss-list 0,0.05,0.1 --delay 20 --runs 3 --json";

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// A room of M members, S of them sending as fast as the server takes it; deliveries
    /// per second and latency from send to delivery.
    Fanout(FanoutArgs),
    /// New sessions per second (handshake, hello, welcome), a fixed number in setup at once.
    Handshake(HandshakeArgs),
    /// N established, joined sessions held open: the server's memory per session above its
    /// empty baseline and its CPU while they idle.
    Idle(IdleArgs),
    /// Junk at the server as fast as this process can send it (random bytes, forged
    /// INITIALs, RESETs, DATA for unknown connections) while a client measures its latency;
    /// the server's CPU per junk datagram, with and without established sessions.
    Flood(FloodArgs),
    /// Plain UDP over loopback: the reference.
    Raw(RawArgs),
    /// Two `chirp peer --via` through real NATs in network namespaces it builds (root,
    /// iproute2, iptables): which path each NAT behaviour ends on, the time to first
    /// message, and the chat's latency with `chirp impair` in the direct or relayed path.
    #[command(after_help = NAT_EXAMPLES)]
    Nat(NatArgs),
}

const NAT_EXAMPLES: &str = "\
The topology: two homes, each behind a NAT namespace (iptables MASQUERADE, or MASQUERADE
--random-fully for a symmetric NAT) or on the public network itself, and a public router
namespace holding `chirp serve` (the rendezvous and relay). Everything runs this binary.

1. The NAT matrix (nothing impaired): endpoint-independent NATs both sides, one side without
   NAT, symmetric NATs both sides. Alice starts and waits at the server with a line typed;
   then bob; the time to first message runs from starting bob's process to alice's line on
   his screen. Each case shows the path both peers named (direct or relayed).
2. Latency with `chirp impair` in the path (--lines > 0): per loss rate in --loss-list, the
   reference (direct, no NAT), direct through endpoint-independent NATs, and relayed between
   symmetric NATs. On a direct path the proxy's fixed wire carries the peer-to-peer flow
   between the two public addresses (iptables DNAT/SNAT on the public router steer it there;
   the peers see the addresses they would see without it): one crossing, --delay, --jitter
   and the loss rate each way. On the relayed path the proxy sits in front of the server
   (DNAT of the server's port), so a message crosses it twice, each crossing with half the
   delay and jitter and the loss 1 - sqrt(1 - p): end to end the same path as the direct one,
   plus the relay. Both peers write --lines lines at --rate/s at once; latency is from the
   write to the other side's screen, both directions pooled, every line checked.

Runs alternate between the cases, each on fresh namespaces and processes; medians are shown,
with the ratio to the reference of the same run. Namespaces are removed on every path
(Ctrl-C too; those of a killed bench at the next start). Exit status: 0 if every case took
its expected path and every line arrived once, in order, intact; 1 if not; 77 if it cannot
run here (not root, no `ip` or `iptables`), saying why.

Examples:
  sudo chirp bench nat
  sudo chirp bench nat --lines 0 --runs 5
  sudo chirp bench nat --loss-list 0.1 --delay 40 --jitter 0 --lines 2000 --json";

/// Exit status of `chirp bench nat` when it cannot run here (automake's "skipped").
const SKIPPED: u8 = 77;

#[derive(Debug, Args)]
struct NatArgs {
    /// Runs of every case (each on fresh namespaces); medians are shown.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Lines each peer writes per latency run (0: the NAT matrix only).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    lines: u32,
    /// Lines per second each peer writes.
    #[arg(long, value_name = "PER_SEC", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,
    /// Bytes per line.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = clap::value_parser!(u64).range(22..=1000))]
    size: u64,
    /// Loss rates of the impaired path, each direction, comma separated: one row each.
    #[arg(long, value_name = "P,P,...", value_delimiter = ',', default_value = "0,0.05,0.1", value_parser = probability)]
    loss_list: Vec<f64>,
    /// One-way delay of the impaired path, in ms.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    delay: u64,
    /// Extra random delay of the path, uniform in 0..=MS (it never reorders).
    #[arg(long, value_name = "MS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    jitter: u64,
    /// Seed of the proxy in the first impaired run; each further run adds 1.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

/// For clap: a probability below 1.
fn probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability from 0 to below 1")),
    }
}

#[derive(Debug, Args)]
struct FloodArgs {
    /// Established, idle sessions the server holds during the flood; several (comma
    /// separated) run the flood once for each, on a fresh server each time, to show whether
    /// the cost of junk grows with them.
    #[arg(long, value_delimiter = ',', default_value = "0,10000", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    sessions: Vec<u32>,
    /// What to send (comma separated): random, initial, reset, data.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,initial,reset,data"
    )]
    kinds: Vec<JunkKind>,
    /// Messages the measuring client sends, unloaded and then flooded.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..=100_000))]
    probes: u32,
    /// Milliseconds between two of them.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    interval: u64,
    /// Sockets the idle sessions share.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    sockets: u32,
    /// Each run must end within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    limit: u64,
    #[command(flatten)]
    target: ServerArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// `--kinds` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum JunkKind {
    Random,
    Initial,
    Reset,
    Data,
}

impl From<JunkKind> for Junk {
    fn from(k: JunkKind) -> Self {
        match k {
            JunkKind::Random => Junk::Random,
            JunkKind::Initial => Junk::Initial,
            JunkKind::Reset => Junk::Reset,
            JunkKind::Data => Junk::UnknownData,
        }
    }
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Members of the room (each its own session).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    members: u32,
    /// Senders among them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    senders: u32,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    messages: u32,
    /// Messages per second each sender sends (default: as fast as its session queues them;
    /// latency then includes the wait in the sender's own queue).
    #[arg(long, value_name = "PER_SEC", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: Option<u32>,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Each run ends after this many seconds; what has not arrived is counted lost.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    limit: u64,
    /// Sockets the bench's sessions share: each is one loop on a thread of its own, on a
    /// loopback address of its own (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    sockets: u32,
    #[command(flatten)]
    target: NodesArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The server under test of `fanout`: one, or the nodes of a cluster.
#[derive(Debug, Args)]
struct NodesArgs {
    /// A server already running (it must allow the bench's sessions from 127.0.0.1 and its
    /// rate); by default the bench starts its own. Given several times: the nodes of one
    /// cluster, where the senders connect to the first and the other members are spread
    /// round robin over all of them (starting with the second), so that most deliveries
    /// cross nodes; latency is then also shown for the members on the other nodes alone.
    #[arg(long = "server", value_name = "ADDR", value_parser = addr::remote_addr)]
    servers: Vec<SocketAddr>,
    /// The pid of that server, for its CPU and memory; with several --server, once for each,
    /// in the same order: the figures are summed over the nodes (CPU in percent of one core,
    /// so above 100 when the nodes together use more than a core) and shown per node too.
    #[arg(long = "server-pid", value_name = "PID", requires = "servers")]
    server_pids: Vec<u32>,
    /// The pid of a process the servers depend on (their PostgreSQL's postmaster, their
    /// nats-server), given once for each: their CPU over the fan-out, with their children's
    /// (PostgreSQL's backends), is shown beside the servers'.
    #[arg(long = "service-pid", value_name = "PID")]
    service_pids: Vec<u32>,
}

/// The servers a fan-out runs against, and the one the bench started if it did (stopped when
/// this is dropped).
struct NodesUnderTest {
    addrs: Vec<SocketAddr>,
    pids: Vec<u32>,
    _own: Option<ServerProcess>,
}

impl NodesArgs {
    /// The servers given, or a fresh one of this binary's sized for `sessions`.
    fn under_test(&self, sessions: usize) -> anyhow::Result<NodesUnderTest> {
        if !self.servers.is_empty() {
            anyhow::ensure!(
                self.server_pids.is_empty() || self.server_pids.len() == self.servers.len(),
                "{} --server-pid for {} --server: give one per server, in the same order",
                self.server_pids.len(),
                self.servers.len()
            );
            return Ok(NodesUnderTest {
                addrs: self.servers.clone(),
                pids: self.server_pids.clone(),
                _own: None,
            });
        }
        let own = own_server(sessions)?;
        Ok(NodesUnderTest {
            addrs: vec![own.addr()],
            pids: vec![own.pid()],
            _own: Some(own),
        })
    }
}

#[derive(Debug, Args)]
struct HandshakeArgs {
    /// Sessions to set up in all.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    sessions: u32,
    /// At most this many in setup at once (below the server's 256, past which its per-address
    /// handshake limit applies).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    concurrency: u32,
    /// A session not welcomed within this many seconds counts as failed.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Sockets the bench's sessions share: each is one loop on a thread of its own, on a
    /// loopback address of its own (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    sockets: u32,
    #[command(flatten)]
    target: ServerArgs,
    /// Print one JSON object instead of the line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// Sessions to hold.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    sessions: u32,
    /// How long to watch them idle.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Joining must end within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    limit: u64,
    /// Sockets the bench's sessions share: each is one loop on a thread of its own, on a
    /// loopback address of its own (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    sockets: u32,
    #[command(flatten)]
    target: ServerArgs,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// The server under test, for every scenario but `raw`.
#[derive(Debug, Args)]
struct ServerArgs {
    /// A server already running (it must allow the bench's sessions from 127.0.0.1 and its
    /// rate); by default the bench starts its own.
    #[arg(long, value_name = "ADDR", value_parser = addr::remote_addr)]
    server: Option<SocketAddr>,
    /// The pid of that server, for its CPU and memory.
    #[arg(long, value_name = "PID", requires = "server")]
    server_pid: Option<u32>,
}

/// Where the server under test listens and its pid, and the process if the bench started it
/// (it stops when this is dropped).
struct UnderTest {
    addr: SocketAddr,
    pid: Option<u32>,
    _own: Option<ServerProcess>,
}

impl UnderTest {
    /// Its pid, which `scenario` needs: it measures the server itself.
    fn measured_pid(&self, scenario: &str) -> anyhow::Result<u32> {
        self.pid.with_context(|| {
            format!("the {scenario} scenario measures the server: --server needs --server-pid")
        })
    }
}

impl ServerArgs {
    /// The server given, or a fresh one of this binary's sized for `sessions`.
    fn under_test(&self, sessions: usize) -> anyhow::Result<UnderTest> {
        if let Some(addr) = self.server {
            return Ok(UnderTest {
                addr,
                pid: self.server_pid,
                _own: None,
            });
        }
        let own = own_server(sessions)?;
        Ok(UnderTest {
            addr: own.addr(),
            pid: Some(own.pid()),
            _own: Some(own),
        })
    }
}

/// A fresh `serve` of this binary's, sized for `sessions`.
fn own_server(sessions: usize) -> anyhow::Result<ServerProcess> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    ServerProcess::start(&exe, sessions.min(100_000), &[])
        .context("cannot start the server under test")
}

#[derive(Debug, Args)]
struct RawArgs {
    /// How long to measure.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Runs; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Print one JSON object instead of the line.
    #[arg(long)]
    json: bool,
}

/// Datagram payload of the raw reference: about a chat message's packet.
const RAW_SIZE: usize = 200;
/// Measuring time of the raw reference beside a scenario.
const RAW_SECONDS: Duration = Duration::from_secs(1);

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    match args.scenario {
        Scenario::Raw(a) => run_raw(&a),
        Scenario::Fanout(a) => run_fanout(a).await,
        Scenario::Idle(a) => run_idle(a).await,
        Scenario::Handshake(a) => run_handshake(a).await,
        Scenario::Flood(a) => run_flood(a).await,
        Scenario::Nat(a) => run_nat(a).await,
    }
}

async fn run_nat(a: NatArgs) -> anyhow::Result<u8> {
    if let Err(why) = nat::preflight() {
        #[allow(clippy::print_stderr)] // the reason it cannot run, then the skip status
        {
            eprintln!(
                "chirp bench nat: skipped: {why} (it needs root, iproute2, iptables with NAT \
                 support and permission to create network namespaces)"
            );
        }
        return Ok(SKIPPED);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let config = NatConfig {
        chirp: std::env::current_exe().context("cannot find this executable")?,
        runs: a.runs,
        lines: a.lines,
        rate: f64::from(a.rate),
        size: usize::try_from(a.size).unwrap_or(100),
        losses: a.loss_list.clone(),
        delay: Duration::from_millis(a.delay),
        jitter: Duration::from_millis(a.jitter),
        seed: a.seed,
        stop: Arc::clone(&stop),
    };
    let cases = config.runs as u64
        * (nat::MATRIX.len() as u64
            + if a.lines > 0 {
                (config.losses.len() * nat::LATENCY_CASES.len()) as u64
            } else {
                0
            });
    let progress = if a.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let p = ProgressBar::new(cases);
        p.set_style(
            ProgressStyle::with_template("{bar:40} run {pos}/{len}: {msg}, {elapsed}")
                .context("progress bar template")?,
        );
        p
    };
    let bar_ = progress.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        nat::run(&config, |what| {
            bar_.set_message(what.to_owned());
            bar_.inc(1);
        })
    });
    let result = tokio::select! {
        r = &mut task => r,
        _ = tokio::signal::ctrl_c() => {
            // The run ends at its next wait and tears its namespaces down on the way out.
            stop.store(true, Ordering::Relaxed);
            task.await
        }
    }
    .context("the NAT bench task")?;
    if stop.load(Ordering::Relaxed) {
        progress.finish_and_clear();
        #[allow(clippy::print_stderr)] // why nothing is printed
        {
            eprintln!("chirp bench nat: interrupted; its namespaces are removed");
        }
        return Ok(130);
    }
    let report = result.context("NAT bench")?;
    progress.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["scenario"] = json!("nat");
        v["delay_ms"] = json!(a.delay);
        v["jitter_ms"] = json!(a.jitter);
        v["lines"] = json!(a.lines);
        v["rate"] = json!(a.rate);
        writeln!(out, "{v}")?;
    } else {
        write_nat(&mut out, &a, &report)?;
    }
    Ok(if report.clean { 0 } else { 1 })
}

fn write_nat(out: &mut impl std::io::Write, a: &NatArgs, r: &NatReport) -> anyhow::Result<()> {
    writeln!(
        out,
        "NAT matrix (nothing impaired), {} run(s) each:",
        a.runs
    )?;
    writeln!(
        out,
        "| NAT case | expected | paths | time to first message ms (median) | runs ms |"
    )?;
    writeln!(out, "|---|---|---|---:|---|")?;
    for m in &r.matrix {
        let paths: Vec<&str> = m.runs.iter().map(|x| x.path.name()).collect();
        let times: Vec<String> = m
            .runs
            .iter()
            .map(|x| format!("{:.1}", x.first_message_ms))
            .collect();
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} |",
            m.case.name,
            m.case.expected.name(),
            paths.join(", "),
            m.first_message_ms,
            times.join(", ")
        )?;
    }
    writeln!(
        out,
        "NAT behaviours ending direct: {:.0} % ({} of {})",
        r.direct_share * 100.0,
        (r.direct_share * r.matrix.len() as f64).round(),
        r.matrix.len()
    )?;
    if !r.latency.is_empty() {
        writeln!(
            out,
            "\nLatency with chirp impair in the path ({} ms + 0-{} ms one way), {} lines each way at {}/s, median of {} run(s):",
            a.delay, a.jitter, a.lines, a.rate, a.runs
        )?;
        writeln!(
            out,
            "| loss | case | path | min / p50 / p99 / p99.9 / max ms | p99 / reference | p99 / delay | first message ms | clean |"
        )?;
        writeln!(out, "|---:|---|---|---|---:|---:|---:|---|")?;
        for c in &r.latency {
            let m = c.median_ms;
            let paths: Vec<&str> = c.runs.iter().map(|x| x.path.name()).collect();
            writeln!(
                out,
                "| {:.0} % | {} | {} | {:.1} / {:.1} / {:.1} / {:.1} / {:.1} | {:.2} | {:.2} | {:.1} | {} |",
                c.loss * 100.0,
                c.case.name,
                paths.join(", "),
                m.min,
                m.p50,
                m.p99,
                m.p999,
                m.max,
                c.p99_to_reference,
                c.p99_to_delay,
                c.first_message_ms,
                if c.clean { "yes" } else { "NO" }
            )?;
        }
    }
    writeln!(
        out,
        "{}",
        if r.clean {
            "every case took its expected path; every line arrived once, in order, intact"
        } else {
            "A CASE TOOK ANOTHER PATH, OR LINES WERE LOST, DUPLICATED, REORDERED OR DAMAGED"
        }
    )?;
    Ok(())
}

fn raw_median(runs: u32, seconds: Duration) -> anyhow::Result<(f64, Vec<RawReport>)> {
    let reports = (0..runs)
        .map(|_| raw::run(seconds, RAW_SIZE).context("raw UDP reference"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rates: Vec<f64> = reports.iter().map(|r| r.packets_per_sec).collect();
    let median = chirp_bench::median(&mut rates).context("no raw run")?;
    Ok((median, reports))
}

fn run_raw(a: &RawArgs) -> anyhow::Result<u8> {
    let (median, reports) = raw_median(a.runs, Duration::from_secs(a.seconds))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            json!({"scenario": "raw", "packets_per_sec": median, "runs": reports})
        )?;
    } else {
        writeln!(
            out,
            "raw UDP over loopback, {RAW_SIZE}-byte datagrams: {median:.0} packets/s (median of {})",
            a.runs
        )?;
    }
    Ok(0)
}

async fn run_handshake(a: HandshakeArgs) -> anyhow::Result<u8> {
    let sessions = a.sessions as usize;
    let concurrency = a.concurrency as usize;
    let under = a.target.under_test(sessions)?;
    let progress = bar(a.json, sessions as u64, "sessions")?;
    let r = handshake::run(
        &HandshakeConfig {
            server: under.addr,
            server_pid: under.pid,
            sessions,
            concurrency,
            timeout: Duration::from_secs(a.timeout),
            sockets: a.sockets as usize,
        },
        &progress,
    )
    .await
    .context("handshake run")?;
    progress.finish_and_clear();
    drop(under);
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", json!({"scenario": "handshake", "report": r}))?;
    } else {
        let cpu = r
            .server_cpu_percent
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.0} %"));
        writeln!(
            out,
            "handshake: {} of {} sessions welcomed ({} at once) in {:.1} s: {:.0} sessions/s; setup p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {cpu}",
            r.completed,
            r.sessions,
            concurrency,
            r.elapsed_s,
            r.sessions_per_sec,
            r.setup_ms.p50,
            r.setup_ms.p99,
            r.setup_ms.max,
        )?;
    }
    Ok(if r.failed == 0 { 0 } else { 1 })
}

async fn run_idle(a: IdleArgs) -> anyhow::Result<u8> {
    let sessions = a.sessions as usize;
    let under = a.target.under_test(sessions)?;
    let server_pid = under.measured_pid("idle")?;
    let progress = bar(a.json, sessions as u64, "joined")?;
    let r = idle::run(
        &IdleConfig {
            server: under.addr,
            server_pid,
            sessions,
            idle: Duration::from_secs(a.seconds),
            limit: Duration::from_secs(a.limit),
            sockets: a.sockets as usize,
        },
        &progress,
    )
    .await
    .context("idle run")?;
    progress.finish_and_clear();
    drop(under);
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", json!({"scenario": "idle", "report": r}))?;
    } else {
        writeln!(
            out,
            "idle: {} sessions joined in {:.1} s; server RSS {:.1} MiB empty, {:.1} MiB holding them: {:.0} bytes per session; CPU while idle {:.1} % of one core over {:.0} s",
            r.sessions,
            r.join_s,
            r.rss_kib_empty as f64 / 1024.0,
            r.rss_kib_held as f64 / 1024.0,
            r.bytes_per_session,
            r.idle_cpu_percent,
            r.idle_s
        )?;
    }
    Ok(0)
}

async fn run_flood(a: FloodArgs) -> anyhow::Result<u8> {
    let kinds: Vec<Junk> = a.kinds.iter().map(|&k| k.into()).collect();
    let mut reports = Vec::new();
    for &n in &a.sessions {
        let sessions = n as usize;
        // A fresh server for each count (unless one is given), so that runs do not inherit
        // each other's sessions.
        // Room for the measuring client beside the idle sessions.
        let under = a.target.under_test(sessions + 1)?;
        let server_pid = under.measured_pid("flood")?;
        let progress = bar(a.json, sessions as u64, "joined")?;
        let r = flood::run(
            &FloodConfig {
                server: under.addr,
                server_pid,
                kinds: kinds.clone(),
                probes: a.probes as usize,
                probe_interval: Duration::from_millis(a.interval),
                sessions,
                sockets: a.sockets as usize,
                limit: Duration::from_secs(a.limit),
            },
            &progress,
        )
        .await
        .with_context(|| format!("flood run with {sessions} sessions"))?;
        progress.finish_and_clear();
        drop(under);
        reports.push(r);
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", json!({"scenario": "flood", "runs": reports}))?;
    } else {
        writeln!(
            out,
            "| sessions | junk sent/s | kernel drops | server CPU % | server µs per junk datagram | probe p99 unloaded ms | probe p99 flooded ms | ratio | probes lost |"
        )?;
        writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &reports {
            writeln!(
                out,
                "| {} | {:.0} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2}x | {} |",
                r.sessions,
                r.cost.sent_per_sec,
                r.cost.kernel_drops,
                r.cost.server_cpu_percent,
                r.cost.cpu_us_per_datagram,
                r.unloaded_ms.p99,
                r.flooded_ms.p99,
                r.p99_ratio,
                r.probes_lost
            )?;
        }
    }
    Ok(if reports.iter().all(|r| r.probes_lost == 0) {
        0
    } else {
        1
    })
}

/// A progress bar on a terminal, none for JSON or a pipe.
fn bar(json: bool, len: u64, what: &str) -> anyhow::Result<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return Ok(ProgressBar::hidden());
    }
    let p = ProgressBar::new(len);
    p.set_style(
        ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what}, {{per_sec}}, ETA {{eta}}"
        ))
        .context("progress bar template")?,
    );
    Ok(p)
}

async fn run_fanout(a: FanoutArgs) -> anyhow::Result<u8> {
    let members = a.members as usize;
    let senders = (a.senders as usize).min(members);
    let messages = a.messages as usize;
    let mut reports: Vec<FanoutReport> = Vec::new();
    let mut raws = Vec::new();
    for run in 1..=a.runs {
        // A server of its own per run: every run starts from the same empty state.
        let under = a.target.under_test(members)?;
        let expected = (senders * messages * (members - 1)) as u64;
        let progress = bar(
            a.json,
            expected,
            &format!("deliveries, run {run}/{}", a.runs),
        )?;
        let report = fanout::run(
            &FanoutConfig {
                servers: under.addrs.clone(),
                server_pids: under.pids.clone(),
                service_pids: a.target.service_pids.clone(),
                members,
                senders,
                messages,
                rate: a.rate.map(f64::from),
                limit: Duration::from_secs(a.limit),
                sockets: a.sockets as usize,
            },
            &progress,
        )
        .await
        .context("fan-out run")?;
        progress.finish_and_clear();
        drop(under);
        // The reference right after, on the same machine, with the server stopped.
        let (raw, _) = tokio::task::spawn_blocking(|| raw_median(1, RAW_SECONDS))
            .await
            .context("raw reference task")??;
        raws.push(raw);
        reports.push(report);
    }
    let clean = reports.iter().all(FanoutReport::is_clean);
    let mut rates: Vec<f64> = reports.iter().map(|r| r.deliveries_per_sec).collect();
    let median = chirp_bench::median(&mut rates).context("no run")?;
    let raw = chirp_bench::median(&mut raws.clone()).context("no raw run")?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            json!({
                "scenario": "fanout",
                "members": members,
                "senders": senders,
                "messages": messages,
                "deliveries_per_sec": median,
                "raw_packets_per_sec": raw,
                "ratio_to_raw": median / raw,
                "clean": clean,
                "runs": reports,
                "raw_runs": raws,
            })
        )?;
    } else {
        writeln!(
            out,
            "fan-out: {members} members, {senders} sender(s) x {messages} messages, {} run(s)",
            a.runs
        )?;
        writeln!(
            out,
            "| run | deliveries/s | raw UDP packets/s | ratio | p50 ms | p99 ms | max ms | deliveries per datagram in | lost | dup | reordered | server CPU % | server RSS MiB |"
        )?;
        writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for (i, (r, raw)) in reports.iter().zip(&raws).enumerate() {
            let (cpu, rss) = r.server.map_or(("-".into(), "-".into()), |s| {
                (
                    format!("{:.0}", s.cpu_percent),
                    format!("{:.1}", s.rss_kib_end as f64 / 1024.0),
                )
            });
            writeln!(
                out,
                "| {} | {:.0} | {:.0} | {:.2}x | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {cpu} | {rss} |",
                i + 1,
                r.deliveries_per_sec,
                raw,
                r.deliveries_per_sec / raw,
                r.latency_ms.p50,
                r.latency_ms.p99,
                r.latency_ms.max,
                r.delivered as f64 / r.datagrams_in.max(1) as f64,
                r.lost,
                r.duplicated,
                r.reordered,
            )?;
        }
        if reports.iter().any(|r| !r.nodes.is_empty()) {
            write_nodes(&mut out, &reports)?;
        }
        if reports.iter().any(|r| r.services.is_some()) {
            for (i, r) in reports.iter().enumerate() {
                let services = r
                    .services
                    .map_or_else(|| "-".to_owned(), |c| format!("{:.0} %", c.cpu_percent));
                writeln!(
                    out,
                    "run {}: CPU of the services {services}, of this load generator {:.0} % (of one core)",
                    i + 1,
                    r.load_generator.cpu_percent
                )?;
            }
        }
        writeln!(
            out,
            "median: {median:.0} deliveries/s = {:.2}x raw UDP ({raw:.0} packets/s); {}",
            median / raw,
            if clean {
                "every message reached every member once, in order"
            } else {
                "MESSAGES WERE LOST, DUPLICATED OR REORDERED"
            }
        )?;
    }
    Ok(if clean { 0 } else { 1 })
}

/// A cluster's runs, node by node: where the members were, what each node delivered, its
/// latency (from the send on the first node), CPU and memory; then the members on other nodes
/// than the senders' together.
fn write_nodes(out: &mut impl std::io::Write, reports: &[FanoutReport]) -> anyhow::Result<()> {
    writeln!(
        out,
        "per node (the senders on the first; latency from the send there to the delivery on the node):"
    )?;
    writeln!(
        out,
        "| run | node | members | deliveries | p50 ms | p99 ms | max ms | CPU % | RSS MiB |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for (i, r) in reports.iter().enumerate() {
        for n in &r.nodes {
            let (cpu, rss) = n.figures.map_or(("-".into(), "-".into()), |s| {
                (
                    format!("{:.0}", s.cpu_percent),
                    format!("{:.1}", s.rss_kib_end as f64 / 1024.0),
                )
            });
            writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {cpu} | {rss} |",
                i + 1,
                n.server,
                n.members,
                n.delivered,
                n.latency_ms.p50,
                n.latency_ms.p99,
                n.latency_ms.max,
            )?;
        }
        if let Some(l) = r.latency_other_nodes_ms {
            let others = r.nodes.iter().skip(1);
            writeln!(
                out,
                "| {} | other nodes | {} | {} | {:.1} | {:.1} | {:.1} | | |",
                i + 1,
                others.clone().map(|n| n.members).sum::<usize>(),
                others.map(|n| n.delivered).sum::<u64>(),
                l.p50,
                l.p99,
                l.max,
            )?;
        }
    }
    Ok(())
}
