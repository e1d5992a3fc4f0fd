//! End-to-end chat latency and bulk drain time through the real `chirp` binary, on loopback.
//!
//! Every run starts fresh processes of the binary under test, on free ports of 127.0.0.1 and in
//! a fresh temporary directory, with `chirp impair` as the bad network:
//!
//! - `--path server`: `chirp serve`, a `chirp impair` proxy in front of it, and two
//!   `chirp connect --json` clients (alice, bob) in the room `#bench`, both talking to the
//!   proxy. A message crosses the impaired link twice (alice → proxy → server → proxy → bob), so
//!   the latency floor is twice the one-way `--delay` (~40 ms by default).
//! - `--path peer`: two `chirp peer --json` linked through `chirp impair --client A --via V`
//!   (the proxy's fixed wire; both directions impaired). One impaired hop: floor ~20 ms.
//!
//! Modes:
//!
//! - `latency` (default): once both sides are ready (joined, or `peer_up` on both), each side
//!   writes `--n` lines to its client's stdin at `--rate` lines/s (absolute deadlines from one
//!   start instant, both sides at once). Each line carries a tag, a sequence number and the time
//!   it was written (nanoseconds since an origin on this program's clock). A reader thread per
//!   child stamps each stdout line as it is read; latency = that stamp − the send time, for
//!   every line the other side displays. Both directions are pooled: p50 / p99 / p99.9 / max by
//!   nearest rank.
//! - `drain`: each side writes `--n` lines of 67 bytes (`A00001 xxx…`) as fast as its pipe takes
//!   them; the figures are the times from the start of writing until each side has displayed
//!   all of the other's lines, and the larger of the two.
//!
//! Every line is checked: missing, duplicated, reordered (displayed after a later one) and
//! damaged (text not exactly as written) lines are counted and must all be 0. At the end both
//! clients are asked for `/stats`: the table shows the sum over both of `redundant_copies`
//! (and of `startup_copies`, the part of them due to the start-of-connection default, if the
//! binary reports it), `packets_lost`, `retransmissions` and (if the binary reports one) any
//! `spurious*` counter, plus two byte figures per delivered message: `B/msg` = the two
//! clients' `bytes_sent` (in the server path this leaves out what the server sends), and
//! `wire B/msg` = every byte the proxy received in both directions (all senders; in the server
//! path each line crosses the proxy twice and the server also sends its sender an `ack`, so
//! this figure is not comparable with the peer path's). Both include acknowledgements,
//! keepalives and retransmissions.
//!
//! `--runs R` repeats each configuration with seeds `--seed`, `--seed`+1, … (fresh processes
//! each time); after the runs comes a median row (median of each figure; the correctness
//! counts are summed over the runs instead). `--loss-list` sweeps loss rates, R runs each.
//! `--json` prints one JSON object per run and per median instead of the table.
//!
//! The exit status is 1 if any run failed to start, did not complete within its time bound,
//! or lost, duplicated, reordered or damaged a line; 2 on a usage or setup error.
//!
//! ```text
//! cargo build --release -p chirp
//! cargo run --release -p chirp --example e2e_latency -- --path server --loss-list 0,0.05,0.1,0.2 --runs 3
//! cargo run --release -p chirp --example e2e_latency -- --path peer --loss 0.05 --runs 3
//! cargo run --release -p chirp --example e2e_latency -- --mode drain --heavy --path peer --n 3000
//! cargo run --release -p chirp --example e2e_latency -- --mode drain --heavy --path server --n 3000
//! # A/B against an older build:
//! cargo run --release -p chirp --example e2e_latency -- --chirp /tmp/old/chirp --loss 0.1
//! ```
//!
//! The binary under test is the `chirp` next to this example's executable
//! (`target/<profile>/chirp` for `target/<profile>/examples/e2e_latency`), so build it first;
//! `--chirp PATH` picks another one. The machine's load shows in the tail figures: run it on a
//! quiet machine, and compare builds on the same one.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitCode};
use std::sync::mpsc::RecvTimeoutError;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chirp_bench::children::{Children, Impairment, Out, is_impair_start};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

/// Nicks of the two clients in the server path, and their room.
const NICK_A: &str = "alice";
const NICK_B: &str = "bob";
const ROOM: &str = "#bench";

/// Bound of each start-up wait (a process's first line, a join, `peer_up`).
const SETUP_WAIT: Duration = Duration::from_secs(20);
/// Bound of the wait for both answers to `/stats`.
const STATS_WAIT: Duration = Duration::from_secs(10);
/// Bound of the wait for the proxy's next counters (it prints them every second).
const PROXY_STATS_WAIT: Duration = Duration::from_secs(3);
/// Latency mode gives up this long after the last line was due (unless `--timeout`).
const LATENCY_GRACE: Duration = Duration::from_secs(30);
/// Drain mode gives up after this long (unless `--timeout`).
const DRAIN_CAP: Duration = Duration::from_secs(600);
/// Bytes of each drain line, `A00001 ` included.
const DRAIN_LINE: usize = 67;

/// End-to-end latency and drain time through the real chirp binary (see the source's top
/// comment for the setup).
#[derive(Debug, Parser)]
#[command(name = "e2e_latency")]
struct Args {
    /// The chirp binary to test [default: the `chirp` in this example's target directory].
    #[arg(long, value_name = "PATH")]
    chirp: Option<PathBuf>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Latency)]
    mode: Mode,
    /// Through a server (two impaired hops) or peer to peer (one).
    #[arg(long, value_enum, default_value_t = Route::Server)]
    path: Route,
    /// Lines each side writes [default: 1000 for latency, 3000 for drain].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=999_999))]
    n: Option<u64>,
    /// Latency mode: lines per second each side writes.
    #[arg(long, value_name = "PER_SEC", default_value_t = 50.0)]
    rate: f64,
    /// Latency mode: bytes per line (at least the 22 of tag, number and send time).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    size: usize,
    /// Loss probability of the proxy, each direction [default: 0, or 0.35 with --heavy].
    #[arg(long, value_name = "P", value_parser = probability, conflicts_with = "loss_list")]
    loss: Option<f64>,
    /// Several loss probabilities, one table row (median of --runs runs) each: 0,0.05,0.1.
    #[arg(long, value_name = "P,P,...", value_delimiter = ',', value_parser = probability)]
    loss_list: Vec<f64>,
    /// One-way delay of the proxy in ms [default: 20].
    #[arg(long, value_name = "MS")]
    delay: Option<u64>,
    /// Extra random delay 0..=MS per datagram [default: 2, or 30 with --heavy].
    #[arg(long, value_name = "MS")]
    jitter: Option<u64>,
    /// Probability that the proxy holds a datagram back by --reorder-delay [default: 0, or 0.3
    /// with --heavy].
    #[arg(long, value_name = "P", value_parser = probability)]
    reorder: Option<f64>,
    /// How long a reordered datagram is held back, ms [default: chirp impair's, 30].
    #[arg(long, value_name = "MS")]
    reorder_delay: Option<u64>,
    /// Duplication probability [default: 0, or 0.3 with --heavy].
    #[arg(long, value_name = "P", value_parser = probability)]
    dup: Option<f64>,
    /// Corruption probability [default: 0, or 0.05 with --heavy].
    #[arg(long, value_name = "P", value_parser = probability)]
    corrupt: Option<f64>,
    /// The heavy preset: loss 0.35, dup 0.3, reorder 0.3, corrupt 0.05, delay 20, jitter 30
    /// (any of them given explicitly wins).
    #[arg(long)]
    heavy: bool,
    /// Seed of the proxy in the first run; run k uses seed + k.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Runs per configuration, each with fresh processes.
    #[arg(long, value_name = "R", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    runs: u64,
    /// Give up on a run after this many seconds of measuring [default: N/rate + 30 for
    /// latency, 600 for drain].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// One JSON object per line (per run, and per median) instead of the table.
    #[arg(long)]
    json: bool,
    /// Latency mode: list on stderr every line later than MS, with its direction, number and
    /// latency (where in the run the tail comes from).
    #[arg(long, value_name = "MS")]
    show_slow: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Paced lines both ways; percentiles of the delivery latency.
    Latency,
    /// Lines as fast as possible both ways; time until all have arrived.
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Route {
    /// Two `chirp connect` clients through `chirp serve`, the proxy in front of the server.
    Server,
    /// Two `chirp peer`s, the proxy between them.
    Peer,
}

/// For clap: a probability in `[0, 1]`.
fn probability(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("'{s}' is not a probability from 0 to 1")),
    }
}

/// What the proxy does to datagrams: the flags given, the defaults of the mode otherwise.
fn impairment(a: &Args, loss: Option<f64>) -> Impairment {
    let heavy = |h: f64, normal: f64| if a.heavy { h } else { normal };
    Impairment {
        loss: loss.unwrap_or(heavy(0.35, 0.0)),
        delay_ms: a.delay.unwrap_or(20),
        jitter_ms: a.jitter.unwrap_or(if a.heavy { 30 } else { 2 }),
        reorder: a.reorder.unwrap_or(heavy(0.3, 0.0)),
        reorder_delay_ms: a.reorder_delay,
        dup: a.dup.unwrap_or(heavy(0.3, 0.0)),
        corrupt: a.corrupt.unwrap_or(heavy(0.05, 0.0)),
        rate: None,
    }
}

/// Everything a run needs besides the impairment and seed.
#[derive(Debug)]
struct Config {
    chirp: PathBuf,
    mode: Mode,
    route: Route,
    n: usize,
    rate: f64,
    size: usize,
    /// How long a run may measure before it counts as incomplete.
    limit: Duration,
    show_slow: Option<Duration>,
}

/// Which child a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Server,
    Proxy,
    A,
    B,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Server => "server",
            Who::Proxy => "proxy",
            Who::A => "client A",
            Who::B => "client B",
        }
    }
}

/// The processes of one run, their output, and their directory.
#[derive(Debug)]
struct Lab {
    // Declared first: the children are killed before their directory is removed.
    children: Children<Who>,
    a_in: Option<ChildStdin>,
    b_in: Option<ChildStdin>,
    chirp: PathBuf,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(chirp: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("chirp-e2e-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        Ok(Self {
            children: Children::new(),
            a_in: None,
            b_in: None,
            chirp: chirp.to_owned(),
            dir,
        })
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Starts `chirp args` as `who`; clients get a stdin pipe, the others none.
    fn spawn(&mut self, who: Who, args: &[String]) -> anyhow::Result<()> {
        let stderr = self.dir.path().join(format!("{who:?}.stderr"));
        let mut cmd = Command::new(&self.chirp);
        cmd.args(args)
            // Keys and data default to the XDG directories: never the user's own.
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("XDG_DATA_HOME", self.dir.path().join("xdg-data"));
        let client = matches!(who, Who::A | Who::B);
        let stdin = self.children.spawn(who, who.name(), cmd, stderr, client)?;
        match who {
            Who::A => self.a_in = stdin,
            Who::B => self.b_in = stdin,
            Who::Server | Who::Proxy => {}
        }
        Ok(())
    }

    /// The error for `who`'s stdout having closed: it exited (or crashed).
    fn exited(&mut self, who: Who) -> anyhow::Error {
        anyhow::anyhow!("{}", self.children.exited(who))
    }

    /// Reads lines until `done` says so; an error on timeout or if a child's stdout closes.
    fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(Who, &str) -> bool,
    ) -> anyhow::Result<()> {
        self.children
            .wait_for(what, SETUP_WAIT, |who, _, line| done(who, line))?;
        Ok(())
    }
}

/// `N` distinct free UDP ports on 127.0.0.1, released again (a child binds them next).
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let sockets = (0..N)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind 127.0.0.1:0 to find a free port")?;
    let mut ports = [0u16; N];
    for (port, s) in ports.iter_mut().zip(&sockets) {
        *port = s
            .local_addr()
            .context("cannot read a local address")?
            .port();
    }
    Ok(ports)
}

fn lo(port: u16) -> String {
    SocketAddr::from(([127, 0, 0, 1], port)).to_string()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn json_type(line: &str) -> Option<(String, Value)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let t = v.get("type")?.as_str()?.to_owned();
    Some((t, v))
}

/// Starts the proxy with `route_flags` and waits for its start line.
fn start_proxy(
    lab: &mut Lab,
    route_flags: &[String],
    imp: &Impairment,
    seed: u64,
) -> anyhow::Result<()> {
    let mut args = strings(&["impair", "--json", "--stats-every", "1"]);
    args.extend_from_slice(route_flags);
    args.extend(imp.flags(seed));
    lab.spawn(Who::Proxy, &args)?;
    lab.wait_for("start line from the proxy", |who, line| {
        who == Who::Proxy && is_impair_start(line)
    })
}

/// Server, proxy in front of it, both clients joined to [`ROOM`].
fn start_server_path(lab: &mut Lab, imp: &Impairment, seed: u64) -> anyhow::Result<()> {
    let [ps, pl] = free_ports()?;
    let data = lab.path("data");
    let serve = strings(&[
        "serve",
        "--bind",
        &lo(ps),
        "--data-dir",
        &data,
        "--burst",
        "100000",
        "--per-sec",
        "100000",
    ]);
    lab.spawn(Who::Server, &serve)?;
    lab.wait_for("first line from the server", |who, _| who == Who::Server)?;
    start_proxy(
        lab,
        &strings(&["--listen", &lo(pl), "--to", &lo(ps)]),
        imp,
        seed,
    )?;
    for (who, nick, home) in [(Who::A, NICK_A, "a"), (Who::B, NICK_B, "b")] {
        let home = lab.path(home);
        let args = strings(&[
            "connect",
            &lo(pl),
            "--nick",
            nick,
            "--join",
            ROOM,
            "--json",
            "--home",
            &home,
        ]);
        lab.spawn(who, &args)?;
    }
    let mut joined = [false; 2];
    lab.wait_for("both clients' joins", |who, line| {
        if let Some((t, v)) = json_type(line) {
            if t == "join" && v["self"] == true {
                match who {
                    Who::A => joined[0] = true,
                    Who::B => joined[1] = true,
                    Who::Server | Who::Proxy => {}
                }
            }
        }
        joined == [true; 2]
    })
}

/// Two peers with the proxy's fixed wire between them, both up.
fn start_peer_path(lab: &mut Lab, imp: &Impairment, seed: u64) -> anyhow::Result<()> {
    let [pa, pb, pl, pv] = free_ports()?;
    let wire = strings(&[
        "--listen",
        &lo(pl),
        "--to",
        &lo(pb),
        "--client",
        &lo(pa),
        "--via",
        &lo(pv),
    ]);
    start_proxy(lab, &wire, imp, seed)?;
    for (who, me, to, home) in [(Who::A, pa, pl, "a"), (Who::B, pb, pv, "b")] {
        let home = lab.path(home);
        let args = strings(&[
            "peer",
            "--bind",
            &lo(me),
            "--to",
            &lo(to),
            "--json",
            "--home",
            &home,
        ]);
        lab.spawn(who, &args)?;
    }
    let mut up = [false; 2];
    lab.wait_for("peer_up on both peers", |who, line| {
        if json_type(line).is_some_and(|(t, _)| t == "peer_up") {
            match who {
                Who::A => up[0] = true,
                Who::B => up[1] = true,
                Who::Server | Who::Proxy => {}
            }
        }
        up == [true; 2]
    })
}

/// Line `seq` of side `tag` in latency mode, written `sent_ns` after the origin, padded with
/// `x` to `size` bytes.
fn latency_line(tag: char, seq: usize, sent_ns: u64, size: usize) -> String {
    let mut s = format!("{tag}{seq:06} {sent_ns:013} ");
    let pad = size.saturating_sub(s.len()).max(1);
    s.extend(std::iter::repeat_n('x', pad));
    s
}

/// Line `seq` of side `tag` in drain mode: [`DRAIN_LINE`] bytes for up to 5 digits.
fn drain_line(tag: char, seq: usize) -> String {
    let mut s = format!("{tag}{seq:05} ");
    let pad = DRAIN_LINE.saturating_sub(s.len()).max(1);
    s.extend(std::iter::repeat_n('x', pad));
    s
}

/// What one side displayed of the other's lines.
#[derive(Debug)]
struct Tracker {
    /// The sender's tag.
    tag: char,
    seen: Vec<bool>,
    distinct: usize,
    duplicated: u64,
    reordered: u64,
    damaged: u64,
    highest: Option<usize>,
    latencies: Vec<Duration>,
    /// Lines later than `Config::show_slow`: number and latency.
    slow: Vec<(usize, Duration)>,
    /// When the last missing line arrived.
    done_at: Option<Instant>,
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
            slow: Vec::new(),
            done_at: None,
        }
    }

    fn complete(&self) -> bool {
        self.distinct == self.seen.len()
    }

    /// A displayed line: checked against what was written, and counted.
    fn on_text(&mut self, text: &str, at: Instant, cfg: &Config, origin: Instant) {
        let Some((seq, sent)) = self.parse(text, cfg) else {
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
        if let Some(sent) = sent {
            let latency = at.duration_since(origin).saturating_sub(sent);
            self.latencies.push(latency);
            if cfg.show_slow.is_some_and(|t| latency > t) {
                self.slow.push((seq, latency));
            }
        }
        if self.complete() {
            self.done_at = Some(at);
        }
    }

    /// The sequence number of `text` if it is exactly a line the sender wrote, and in latency
    /// mode when it was written (since the origin).
    fn parse(&self, text: &str, cfg: &Config) -> Option<(usize, Option<Duration>)> {
        let rest = text.strip_prefix(self.tag)?;
        let (digits, rest) = rest.split_once(' ')?;
        let seq: usize = digits.parse().ok()?;
        if seq >= self.seen.len() {
            return None;
        }
        match cfg.mode {
            Mode::Drain => (text == drain_line(self.tag, seq)).then_some((seq, None)),
            Mode::Latency => {
                let (sent, _) = rest.split_once(' ')?;
                let sent_ns: u64 = sent.parse().ok()?;
                (text == latency_line(self.tag, seq, sent_ns, cfg.size))
                    .then_some((seq, Some(Duration::from_nanos(sent_ns))))
            }
        }
    }
}

/// The state of one run's measurement, fed every line of every child.
#[derive(Debug)]
struct Measure<'a> {
    cfg: &'a Config,
    origin: Instant,
    /// What A displayed (B's lines), what B displayed (A's).
    at_a: Tracker,
    at_b: Tracker,
    stats: [Option<Value>; 2],
    proxy_stats: Option<(Instant, Value)>,
    notes: Vec<String>,
}

impl Measure<'_> {
    fn on_line(&mut self, who: Who, at: Instant, line: &str) {
        let (me, other_nick) = match who {
            Who::A => (0, NICK_B),
            Who::B => (1, NICK_A),
            Who::Proxy => {
                if let Some((t, v)) = json_type(line) {
                    if t == "impair_stats" {
                        self.proxy_stats = Some((at, v));
                    }
                }
                return;
            }
            Who::Server => return,
        };
        let Some((t, v)) = json_type(line) else {
            self.note(format!("{}: not JSON: {line}", who.name()));
            return;
        };
        match t.as_str() {
            "message" => {
                // In the server path a client also sees its own lines: only the other's count.
                let from_other = match self.cfg.route {
                    Route::Server => v["from"] == other_nick && v["history"] != true,
                    Route::Peer => true,
                };
                if from_other {
                    let text = v["text"].as_str().unwrap_or_default();
                    let tracker = if me == 0 {
                        &mut self.at_a
                    } else {
                        &mut self.at_b
                    };
                    tracker.on_text(text, at, self.cfg, self.origin);
                }
            }
            "stats" => self.stats[me] = Some(v),
            "error" | "disconnected" | "peer_down" | "pacing" => {
                self.note(format!("{}: {line}", who.name()));
            }
            _ => {}
        }
    }

    /// Something worth a look, shown on stderr after the run (the first few of them).
    fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// Feeds lines until `done`, or until `until` (then `Ok(false)`). A child's stdout closing
    /// is an error: nothing should exit during a run.
    fn pump(
        &mut self,
        lab: &mut Lab,
        until: Instant,
        done: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<bool> {
        loop {
            if done(self) {
                return Ok(true);
            }
            let left = until.saturating_duration_since(Instant::now());
            match lab.children.recv_timeout(left) {
                Ok(Out {
                    who,
                    at,
                    line: Some(line),
                }) => self.on_line(who, at, &line),
                Ok(Out {
                    who, line: None, ..
                }) => {
                    return Err(lab.exited(who).context("during the measurement"));
                }
                Err(RecvTimeoutError::Timeout) => return Ok(false),
                Err(RecvTimeoutError::Disconnected) => bail!("every child's output closed"),
            }
        }
    }
}

/// Writes side `tag`'s lines to `stdin`; gives the pipe back when done.
fn spawn_writer(
    mut stdin: ChildStdin,
    tag: char,
    cfg: &Config,
    origin: Instant,
    start: Instant,
) -> anyhow::Result<JoinHandle<anyhow::Result<ChildStdin>>> {
    let (mode, n, rate, size) = (cfg.mode, cfg.n, cfg.rate, cfg.size);
    std::thread::Builder::new()
        .name(format!("writer {tag}"))
        .spawn(move || {
            for seq in 0..n {
                let line = match mode {
                    Mode::Drain => drain_line(tag, seq),
                    Mode::Latency => {
                        // Absolute deadlines: a late wake-up does not delay the lines after it.
                        let due = start + Duration::from_secs_f64(seq as f64 / rate);
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let sent = u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        latency_line(tag, seq, sent, size)
                    }
                };
                writeln!(stdin, "{line}")
                    .and_then(|()| stdin.flush())
                    .with_context(|| format!("cannot write line {seq} of side {tag}"))?;
            }
            Ok(stdin)
        })
        .context("cannot start a writer thread")
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
struct RunResult {
    loss: f64,
    /// The seed, or `None` for a median row.
    seed: Option<u64>,
    runs: usize,
    error: Option<String>,
    complete: bool,
    expected: u64,
    delivered: u64,
    missing: u64,
    duplicated: u64,
    reordered: u64,
    damaged: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    p999_ms: Option<f64>,
    max_ms: Option<f64>,
    a_to_b_s: Option<f64>,
    b_to_a_s: Option<f64>,
    drain_s: Option<f64>,
    redundant_copies: Option<f64>,
    startup_copies: Option<f64>,
    packets_lost: Option<f64>,
    retransmissions: Option<f64>,
    spurious: Option<f64>,
    bytes_per_msg: Option<f64>,
    wire_bytes_per_msg: Option<f64>,
}

impl RunResult {
    fn failed(&self) -> bool {
        self.error.is_some()
            || !self.complete
            || self.missing + self.duplicated + self.reordered + self.damaged > 0
    }
}

/// Nearest-rank percentile of a sorted, non-empty sample.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p / 100.0 * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sum of `key` in both clients' stats; `None` if either lacks it.
fn stat_sum(stats: &[Value; 2], key: &str) -> Option<f64> {
    let mut sum = 0.0;
    for s in stats {
        sum += s.get(key)?.as_f64()?;
    }
    Some(sum)
}

/// Sum of every counter whose name contains "spurious", if the binary reports any.
fn spurious_sum(stats: &[Value; 2]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for s in stats {
        for (k, v) in s.as_object().into_iter().flatten() {
            if k.contains("spurious") {
                if let Some(x) = v.as_f64() {
                    found = true;
                    sum += x;
                }
            }
        }
    }
    found.then_some(sum)
}

/// One run with fresh processes; a start-up that lost the race for a probed port is retried
/// once with new ports.
fn run_once(cfg: &Config, imp: &Impairment, seed: u64) -> RunResult {
    let mut result = RunResult {
        loss: imp.loss,
        seed: Some(seed),
        runs: 1,
        expected: 2 * cfg.n as u64,
        ..RunResult::default()
    };
    let mut outcome = measure(cfg, imp, seed, &mut result);
    if let Err(e) = &outcome {
        let text = format!("{e:#}");
        if text.contains("in use") {
            eprintln!("a probed port was taken before chirp bound it; retrying once ({text})");
            result = RunResult {
                loss: imp.loss,
                seed: Some(seed),
                runs: 1,
                expected: 2 * cfg.n as u64,
                ..RunResult::default()
            };
            outcome = measure(cfg, imp, seed, &mut result);
        }
    }
    if let Err(e) = outcome {
        result.error = Some(format!("{e:#}"));
    }
    result
}

/// Starts the processes, measures, fills in `r`.
fn measure(cfg: &Config, imp: &Impairment, seed: u64, r: &mut RunResult) -> anyhow::Result<()> {
    let mut lab = Lab::new(&cfg.chirp)?;
    match cfg.route {
        Route::Server => start_server_path(&mut lab, imp, seed)?,
        Route::Peer => start_peer_path(&mut lab, imp, seed)?,
    }
    let a_in = lab.a_in.take().context("client A has no stdin")?;
    let b_in = lab.b_in.take().context("client B has no stdin")?;
    let origin = Instant::now();
    let mut m = Measure {
        cfg,
        origin,
        at_a: Tracker::new('B', cfg.n),
        at_b: Tracker::new('A', cfg.n),
        stats: [None, None],
        proxy_stats: None,
        notes: Vec::new(),
    };
    let start = Instant::now();
    let writers = [
        spawn_writer(a_in, 'A', cfg, origin, start)?,
        spawn_writer(b_in, 'B', cfg, origin, start)?,
    ];
    let limit = start + cfg.limit;
    r.complete = m.pump(&mut lab, limit, |m| m.at_a.complete() && m.at_b.complete())?;

    // Statistics, if both writers are done (else their pipes are still in use: a side that
    // does not read its input any more).
    if writers.iter().all(JoinHandle::is_finished) {
        let mut stdins = Vec::new();
        for w in writers {
            let stdin = w
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
            stdins.push(stdin);
        }
        for stdin in &mut stdins {
            writeln!(stdin, "/stats")
                .and_then(|()| stdin.flush())
                .context("cannot ask a client for /stats")?;
        }
        let got = m.pump(&mut lab, Instant::now() + STATS_WAIT, |m| {
            m.stats.iter().all(Option::is_some)
        })?;
        if !got {
            m.note("no answer to /stats from both clients".to_owned());
        }
        let asked = Instant::now();
        m.pump(&mut lab, asked + PROXY_STATS_WAIT, |m| {
            m.proxy_stats.as_ref().is_some_and(|(at, _)| *at > asked)
        })?;
    } else {
        m.note(format!(
            "the writers had not finished after {} s: no statistics",
            cfg.limit.as_secs()
        ));
    }
    // Kill everything (the writers' pipes break, so they end too).
    drop(lab);

    for (t, from) in [(&m.at_b, 'A'), (&m.at_a, 'B')] {
        r.delivered += t.distinct as u64;
        r.missing += (t.seen.len() - t.distinct) as u64;
        r.duplicated += t.duplicated;
        r.reordered += t.reordered;
        r.damaged += t.damaged;
        if !t.complete() {
            m.notes.push(format!(
                "incomplete: {} of {} lines from {from} arrived",
                t.distinct,
                t.seen.len()
            ));
        }
    }
    let mut lat: Vec<Duration> = m
        .at_a
        .latencies
        .iter()
        .chain(&m.at_b.latencies)
        .copied()
        .collect();
    lat.sort_unstable();
    if cfg.mode == Mode::Latency {
        r.p50_ms = percentile(&lat, 50.0).map(ms);
        r.p99_ms = percentile(&lat, 99.0).map(ms);
        r.p999_ms = percentile(&lat, 99.9).map(ms);
        r.max_ms = lat.last().copied().map(ms);
    } else {
        let secs = |t: &Tracker| t.done_at.map(|d| d.duration_since(start).as_secs_f64());
        r.a_to_b_s = secs(&m.at_b);
        r.b_to_a_s = secs(&m.at_a);
        r.drain_s = r.a_to_b_s.zip(r.b_to_a_s).map(|(x, y)| x.max(y));
    }
    if let [Some(a), Some(b)] = &m.stats {
        let stats = [a.clone(), b.clone()];
        r.redundant_copies = stat_sum(&stats, "redundant_copies");
        r.startup_copies = stat_sum(&stats, "startup_copies");
        r.packets_lost = stat_sum(&stats, "packets_lost");
        r.retransmissions = stat_sum(&stats, "retransmissions");
        r.spurious = spurious_sum(&stats);
        if r.delivered > 0 {
            r.bytes_per_msg = stat_sum(&stats, "bytes_sent").map(|b| b / r.delivered as f64);
        }
    }
    if let Some((_, p)) = &m.proxy_stats {
        let up = p["up"]["bytes_received"].as_f64();
        let down = p["down"]["bytes_received"].as_f64();
        if r.delivered > 0 {
            r.wire_bytes_per_msg = up.zip(down).map(|(u, d)| (u + d) / r.delivered as f64);
        }
    }
    for (to, t) in [("A", &m.at_a), ("B", &m.at_b)] {
        if cfg.show_slow.is_some() {
            let list: Vec<String> = t
                .slow
                .iter()
                .map(|(seq, l)| format!("{seq}:{:.1}", ms(*l)))
                .collect();
            eprintln!(
                "  slow (seed {seed}) to {to}: {} lines: {}",
                list.len(),
                list.join(" ")
            );
        }
    }
    const SHOWN: usize = 5;
    for n in m.notes.iter().take(SHOWN) {
        eprintln!("  note (seed {seed}): {n}");
    }
    if m.notes.len() > SHOWN {
        eprintln!("  note (seed {seed}): … and {} more", m.notes.len() - SHOWN);
    }
    Ok(())
}

/// Median of the runs' `f` (the mean of the middle two for an even count); `None` unless
/// every run has it.
fn median(runs: &[RunResult], f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    let mut v = runs.iter().map(f).collect::<Option<Vec<f64>>>()?;
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// The median row of `runs`: figures are medians, correctness counts are sums.
fn summarize(runs: &[RunResult]) -> RunResult {
    let sum = |f: fn(&RunResult) -> u64| runs.iter().map(f).sum();
    let errors: Vec<String> = runs.iter().filter_map(|r| r.error.clone()).collect();
    RunResult {
        loss: runs.first().map_or(0.0, |r| r.loss),
        seed: None,
        runs: runs.len(),
        error: (!errors.is_empty()).then(|| format!("{} run(s) failed", errors.len())),
        complete: runs.iter().all(|r| r.complete),
        expected: sum(|r| r.expected),
        delivered: sum(|r| r.delivered),
        missing: sum(|r| r.missing),
        duplicated: sum(|r| r.duplicated),
        reordered: sum(|r| r.reordered),
        damaged: sum(|r| r.damaged),
        p50_ms: median(runs, |r| r.p50_ms),
        p99_ms: median(runs, |r| r.p99_ms),
        p999_ms: median(runs, |r| r.p999_ms),
        max_ms: median(runs, |r| r.max_ms),
        a_to_b_s: median(runs, |r| r.a_to_b_s),
        b_to_a_s: median(runs, |r| r.b_to_a_s),
        drain_s: median(runs, |r| r.drain_s),
        redundant_copies: median(runs, |r| r.redundant_copies),
        startup_copies: median(runs, |r| r.startup_copies),
        packets_lost: median(runs, |r| r.packets_lost),
        retransmissions: median(runs, |r| r.retransmissions),
        spurious: median(runs, |r| r.spurious),
        bytes_per_msg: median(runs, |r| r.bytes_per_msg),
        wire_bytes_per_msg: median(runs, |r| r.wire_bytes_per_msg),
    }
}

fn to_json(r: &RunResult, cfg: &Config, imp: &Impairment) -> Value {
    json!({
        "type": if r.seed.is_some() { "run" } else { "median" },
        "mode": format!("{:?}", cfg.mode).to_lowercase(),
        "path": format!("{:?}", cfg.route).to_lowercase(),
        "n": cfg.n, "rate": (cfg.mode == Mode::Latency).then_some(cfg.rate),
        "loss": r.loss, "delay_ms": imp.delay_ms, "jitter_ms": imp.jitter_ms, "reorder": imp.reorder,
        "reorder_delay_ms": imp.reorder_delay_ms, "dup": imp.dup, "corrupt": imp.corrupt,
        "seed": r.seed, "runs": r.runs, "ok": !r.failed(), "complete": r.complete,
        "error": r.error,
        "expected": r.expected, "delivered": r.delivered, "missing": r.missing,
        "duplicated": r.duplicated, "reordered": r.reordered, "damaged": r.damaged,
        "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "p999_ms": r.p999_ms, "max_ms": r.max_ms,
        "a_to_b_s": r.a_to_b_s, "b_to_a_s": r.b_to_a_s, "drain_s": r.drain_s,
        "redundant_copies": r.redundant_copies, "startup_copies": r.startup_copies,
        "packets_lost": r.packets_lost,
        "retransmissions": r.retransmissions, "spurious": r.spurious,
        "bytes_per_msg": r.bytes_per_msg, "wire_bytes_per_msg": r.wire_bytes_per_msg,
    })
}

fn header(mode: Mode) -> String {
    let figures = match mode {
        Mode::Latency => "p50 ms | p99 ms | p99.9 ms | max ms",
        Mode::Drain => "A→B s | B→A s | max s",
    };
    let cols = format!(
        "| loss | seed | msgs | {figures} | missing | dup | reord | damaged | redundant | at start | lost pkts | retx | spurious | B/msg | wire B/msg |"
    );
    let rule: String = cols
        .chars()
        .map(|c| if c == '|' { '|' } else { '-' })
        .collect();
    format!("{cols}\n{rule}")
}

fn row(r: &RunResult, mode: Mode) -> String {
    let f =
        |x: Option<f64>, prec: usize| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"));
    let seed = r
        .seed
        .map_or_else(|| format!("median of {}", r.runs), |s| s.to_string());
    let figures = match mode {
        Mode::Latency => format!(
            "{} | {} | {} | {}",
            f(r.p50_ms, 1),
            f(r.p99_ms, 1),
            f(r.p999_ms, 1),
            f(r.max_ms, 1)
        ),
        Mode::Drain => format!(
            "{} | {} | {}",
            f(r.a_to_b_s, 2),
            f(r.b_to_a_s, 2),
            f(r.drain_s, 2)
        ),
    };
    let mut s = format!(
        "| {} | {seed} | {}/{} | {figures} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.loss,
        r.delivered,
        r.expected,
        r.missing,
        r.duplicated,
        r.reordered,
        r.damaged,
        f(r.redundant_copies, 0),
        f(r.startup_copies, 0),
        f(r.packets_lost, 0),
        f(r.retransmissions, 0),
        f(r.spurious, 0),
        f(r.bytes_per_msg, 0),
        f(r.wire_bytes_per_msg, 0),
    );
    if let Some(e) = &r.error {
        s.push_str(&format!(" FAILED: {e}"));
    } else if !r.complete {
        s.push_str(" INCOMPLETE");
    } else if r.failed() {
        s.push_str(" FAILED: lines lost, duplicated, reordered or damaged");
    }
    s
}

/// The chirp binary: `--chirp`, else the one next to this example's executable.
fn chirp_binary(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match arg {
        Some(p) => p,
        None => {
            let exe = std::env::current_exe().context("cannot find this example's executable")?;
            // target/<profile>/examples/e2e_latency -> target/<profile>/chirp
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .with_context(|| format!("{} has no grandparent directory", exe.display()))?;
            profile_dir.join(format!("chirp{}", std::env::consts::EXE_SUFFIX))
        }
    };
    ensure!(
        path.is_file(),
        "no chirp binary at {}: run `cargo build --release -p chirp` first (or pass --chirp PATH)",
        path.display()
    );
    Ok(path)
}

fn run(args: Args) -> anyhow::Result<bool> {
    ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number of lines per second"
    );
    ensure!(
        args.size >= latency_line('A', 0, 0, 0).len(),
        "--size must be at least {} bytes",
        latency_line('A', 0, 0, 0).len()
    );
    let chirp = chirp_binary(args.chirp.clone())?;
    let n = match (args.n, args.mode) {
        (Some(n), _) => n,
        (None, Mode::Latency) => 1000,
        (None, Mode::Drain) => 3000,
    };
    let n = usize::try_from(n).context("--n is too large")?;
    let limit = match (args.timeout, args.mode) {
        (Some(s), _) => Duration::from_secs(s),
        (None, Mode::Latency) => Duration::from_secs_f64(n as f64 / args.rate) + LATENCY_GRACE,
        (None, Mode::Drain) => DRAIN_CAP,
    };
    let cfg = Config {
        chirp,
        mode: args.mode,
        route: args.path,
        n,
        rate: args.rate,
        size: args.size,
        limit,
        show_slow: args.show_slow.map(Duration::from_millis),
    };
    let losses: Vec<Option<f64>> = if args.loss_list.is_empty() {
        vec![args.loss]
    } else {
        args.loss_list.iter().copied().map(Some).collect()
    };

    let what = match cfg.mode {
        Mode::Latency => format!(
            "latency, {n} lines each way at {}/s, {} B each",
            cfg.rate, cfg.size
        ),
        Mode::Drain => format!("drain, {n} lines of {DRAIN_LINE} B each way, as fast as possible"),
    };
    let route = match cfg.route {
        Route::Server => "client → proxy → server → proxy → client",
        Route::Peer => "peer → proxy → peer",
    };
    eprintln!(
        "chirp {} ({what}; {route}; {} run(s) per row; each run bounded at {} s)",
        cfg.chirp.display(),
        args.runs,
        cfg.limit.as_secs()
    );
    if !args.json {
        println!(
            "{what}; {route}; impairment: {}",
            impairment(&args, losses[0]).describe(losses.len() > 1)
        );
        println!();
        println!("{}", header(cfg.mode));
    }

    let mut ok = true;
    let mut medians = Vec::new();
    for loss in losses {
        let imp = impairment(&args, loss);
        let mut results = Vec::new();
        for k in 0..args.runs {
            let seed = args.seed.wrapping_add(k);
            eprintln!("run: loss {}, seed {seed} …", imp.loss);
            let r = run_once(&cfg, &imp, seed);
            ok &= !r.failed();
            if args.json {
                println!("{}", to_json(&r, &cfg, &imp));
            } else {
                println!("{}", row(&r, cfg.mode));
            }
            results.push(r);
        }
        let m = summarize(&results);
        if args.json {
            println!("{}", to_json(&m, &cfg, &imp));
        } else if args.runs > 1 {
            println!("{}", row(&m, cfg.mode));
        }
        medians.push(m);
    }
    if !args.json && medians.len() > 1 {
        println!();
        println!("{}", header(cfg.mode));
        for m in &medians {
            println!("{}", row(m, cfg.mode));
        }
    }
    Ok(ok)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("e2e_latency: at least one run failed (see the table)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("e2e_latency: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
