//! `chirp impair`: a userspace UDP proxy that does to datagrams what bad networks do.
//!
//! # Design
//!
//! One task owns everything that changes: the client table, every client's pair of
//! [`Link`]s (the seeded impairment model from `chirp-netsim`), the delivery timers and the
//! counters. It `select!`s over the listen socket, a channel fed by one small reader task per
//! upstream socket, the earliest delivery time, the stats and expiry ticks, and the signals.
//!
//! - A datagram from client C on `--listen` is offered to C's "up" link; one from C's upstream
//!   socket (only from `--to`) to C's "down" link. Links never read the clock: the real time
//!   is passed in as `now`, so each direction's decisions are a pure function of the seed and
//!   the sequence of datagrams.
//! - Deliveries: after every offer, whatever is already due is sent at once (so a zero delay
//!   costs no timer round trip); a min-heap of `(time, client)` wake-ups covers the rest.
//!   The heap always holds, for every client with datagrams in flight, an entry no later than
//!   that client's next delivery; stale entries are harmless (popping one delivers nothing).
//! - Memory is bounded: at most `--max-clients` clients, idle ones expire, the reader channel
//!   is bounded, and datagrams held for delayed delivery are capped in total bytes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chirp_netsim::{GilbertElliott, LinkConfig, LinkStats, Path};
use clap::Args;
use serde::Serialize;
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::addr;

pub(crate) const EXAMPLES: &str = "\
How it works: each client C that sends to --listen gets its own upstream socket. C's datagrams
are impaired and forwarded to --to from that socket; replies arriving on it (from --to only) are
impaired and sent back to C from --listen. Every impairment applies in both directions, each
direction with its own random stream. The seed is printed at start: --seed N replays a run.
Counters (received, forwarded, lost, duplicated, reordered, corrupted, oversize, bytes; per
direction: up = client to server, down = server to client) are printed every --stats-every
seconds and always at exit (Ctrl-C or SIGTERM, exit code 0).

Fixed wire between two peers (--client and --via):
  Two `chirp peer`s each send to one fixed address, so neither can be a \"server\" behind a
  proxy that learns clients as they come. With --client A --via V the proxy is a wire with
  two ends: L (--listen) faces peer A, V (--via) faces peer B (--to). Datagrams from A to L go
  to B from V; datagrams from B to V go to A from L, even before A has sent anything.
  Datagrams on L from anyone but A, and on V from anyone but B, are dropped and counted.
    peer A:  chirp peer --bind A --to L
    peer B:  chirp peer --bind B --to V
    proxy:   chirp impair --listen L --to B --client A --via V [impairments]

Examples:
  # A server on 6000; clients talk to 7000 instead and suffer 20 % loss, 50-60 ms delay:
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --loss 0.2 --delay 50 --jitter 10

  # Two reliable peers over a bad wire (peers on 5000 and 6000, the proxy on 7000 and 7001):
  chirp peer --bind 127.0.0.1:5000 --to 127.0.0.1:7000
  chirp peer --bind 127.0.0.1:6000 --to 127.0.0.1:7001
  chirp impair --listen 127.0.0.1:7000 --via 127.0.0.1:7001 \\
      --client 127.0.0.1:5000 --to 127.0.0.1:6000 --loss 0.1 --reorder 0.05 --dup 0.02

  # Bursty loss: a burst starts with probability 0.02 per datagram and ends with 0.25
  # (mean burst 4 datagrams, about 7 % loss on average):
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --burst 0.02,0.25

  # Replay an earlier run exactly; counters every 5 s as JSON lines:
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --loss 0.3 --seed 42 \\
      --stats-every 5 --json";

/// Delays are capped at one hour: longer ones are surely typos, and keep `Instant` sums sane.
const MAX_DELAY_MS: u64 = 3_600_000;
/// Total bytes held for delayed delivery, over all clients and directions. Beyond it,
/// datagrams are dropped (counted as `overflow`), like a router whose buffers are full.
const MAX_HELD_BYTES: usize = 64 << 20;
/// Bookkeeping charged per held datagram on top of its payload, so a flood of empty
/// datagrams is bounded too.
const HELD_OVERHEAD: usize = 64;
/// Datagrams read by upstream reader tasks and not yet processed. When full, readers wait
/// and the kernel buffers (then drops), which keeps memory bounded.
const READER_CHANNEL: usize = 256;
/// How often idle clients are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Options of `chirp impair`.
#[derive(Debug, Args)]
pub(crate) struct ImpairArgs {
    /// Address clients send to, IP:PORT (with --client: the end that faces peer A).
    #[arg(long, value_name = "ADDR", value_parser = addr::local_addr)]
    listen: SocketAddr,
    /// Where datagrams are forwarded: the server (with --client: peer B), IP:PORT.
    #[arg(long, value_name = "ADDR", value_parser = addr::remote_addr)]
    to: SocketAddr,
    /// Fixed wire: the one client (peer A), known in advance; datagrams from --to reach it
    /// even before it has sent anything. Requires --via.
    #[arg(long, value_name = "ADDR", value_parser = addr::remote_addr, requires = "via")]
    client: Option<SocketAddr>,
    /// Fixed wire: local address of the end facing --to (peer B sends here). Requires --client.
    #[arg(long, value_name = "ADDR", value_parser = addr::local_addr, requires = "client")]
    via: Option<SocketAddr>,

    /// Probability that a datagram is lost, 0 to 1.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    loss: f64,
    /// Burst loss (Gilbert-Elliott): per-datagram probabilities of entering and of leaving a
    /// burst during which everything is lost, e.g. 0.02,0.25.
    #[arg(long, value_name = "P_ENTER,P_EXIT", value_parser = burst)]
    burst: Option<GilbertElliott>,
    /// Probability that a datagram is delivered twice, 0 to 1.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    dup: f64,
    /// Probability that a datagram is held back by --reorder-delay so later ones overtake it.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    reorder: f64,
    /// Extra delay of a datagram held back by --reorder, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    reorder_delay: u64,
    /// Probability that 1 to 3 bits of a datagram are flipped (length unchanged), 0 to 1.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    corrupt: f64,
    /// One-way delay added to every datagram, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    delay: u64,
    /// Extra random delay, uniform in 0..=MS, per datagram (never reorders by itself).
    #[arg(long, value_name = "MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    jitter: u64,
    /// Datagrams with a payload longer than this many bytes are dropped (65535: no limit).
    #[arg(long, value_name = "BYTES", default_value_t = 65_535, value_parser = clap::value_parser!(u64).range(0..=65_535))]
    mtu: u64,
    /// Seed of every random decision; the default is random and is printed at start.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Most clients served at once; datagrams from further clients are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_clients: u64,
    /// Forget a client (and close its upstream socket) after this many seconds without
    /// traffic in either direction. Not applied to the fixed wire.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout: u64,
    /// Print the counters every SECS seconds (0: only at exit).
    #[arg(long, value_name = "SECS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    stats_every: u64,
    /// Print one JSON object per line (types impair_start, impair_client, impair_stats).
    #[arg(long)]
    json: bool,
}

/// For clap: a probability in `[0, 1]`.
fn probability(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let p: f64 = s.parse().map_err(|_| {
        format!("'{s}' is not a number; expected a probability from 0 to 1, e.g. 0.2 for 20 %")
    })?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!(
            "{s} is not a probability: it must be from 0 to 1 (e.g. 0.2 for 20 %)"
        ));
    }
    Ok(p)
}

/// For clap: `P_ENTER,P_EXIT` of the simple Gilbert model (all lost in the bad state).
fn burst(s: &str) -> Result<GilbertElliott, String> {
    let Some((enter, exit)) = s.split_once(',') else {
        return Err(format!(
            "'{s}' should be two probabilities P_ENTER,P_EXIT, e.g. 0.02,0.25"
        ));
    };
    let enter = probability(enter).map_err(|e| format!("burst P_ENTER: {e}"))?;
    let exit = probability(exit).map_err(|e| format!("burst P_EXIT: {e}"))?;
    Ok(GilbertElliott::gilbert(enter, exit))
}

/// Errors from ICMP messages about earlier datagrams, or momentary conditions: the socket is
/// still fine, so they are counted (on send) or ignored (on receive), never fatal.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    )
}

/// `a` and `b` are the same endpoint, treating `::ffff:1.2.3.4` as `1.2.3.4`.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// `addr` in the form a socket bound to `local` can send to (v4 destinations from a dual-stack
/// IPv6 socket become v4-mapped), or `None` if the families cannot meet.
fn reachable_from(local: SocketAddr, addr: SocketAddr) -> Option<SocketAddr> {
    match (local.ip(), addr.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Some(addr),
        (IpAddr::V6(_), IpAddr::V4(v4)) => Some(SocketAddr::new(
            IpAddr::V6(v4.to_ipv6_mapped()),
            addr.port(),
        )),
        (IpAddr::V4(_), IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(|v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
    }
}

/// Local address for a client's upstream socket: loopback if the server is local (nothing
/// else needs to reach it), else any address; always the server's family; any free port.
fn upstream_bind(to: SocketAddr) -> SocketAddr {
    let ip = match to.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Seed of client number `index`'s two links: distinct for every index under one run seed
/// (odd multiplier: a bijection), and client 0 uses the run seed itself.
fn client_seed(seed: u64, index: u64) -> u64 {
    seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn link_config(a: &ImpairArgs) -> LinkConfig {
    let ms = Duration::from_millis;
    let mut config = LinkConfig::ideal(ms(a.delay))
        .with_jitter(ms(a.jitter))
        .with_loss(a.loss)
        .with_duplicate(a.dup)
        .with_reorder(a.reorder, ms(a.reorder_delay))
        .with_corrupt(a.corrupt)
        // At most 65 535 by the clap range, so the conversion cannot fail on any target
        // chirp builds for; saturate anyway rather than panic.
        .with_mtu(usize::try_from(a.mtu).unwrap_or(usize::MAX));
    config.burst = a.burst;
    config
}

/// A probability as a percentage without noise: 0.5 -> "50 %", 0.025 -> "2.5 %".
fn percent(p: f64) -> String {
    let s = format!("{:.3}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} %")
}

/// The active impairments in words, for the start line.
fn describe(a: &ImpairArgs) -> String {
    let mut parts = Vec::new();
    if a.loss > 0.0 {
        parts.push(format!("loss {}", percent(a.loss)));
    }
    if let Some(ge) = a.burst {
        parts.push(format!(
            "burst loss (enter {}, exit {}: mean burst {:.1} datagrams, {} lost on average)",
            ge.p_good_to_bad,
            ge.p_bad_to_good,
            ge.mean_bad_run(),
            percent(ge.mean_loss())
        ));
    }
    if a.dup > 0.0 {
        parts.push(format!("duplication {}", percent(a.dup)));
    }
    if a.reorder > 0.0 {
        parts.push(format!(
            "reordering {} (held back {} ms)",
            percent(a.reorder),
            a.reorder_delay
        ));
    }
    if a.corrupt > 0.0 {
        parts.push(format!("corruption {}", percent(a.corrupt)));
    }
    if a.delay > 0 || a.jitter > 0 {
        if a.jitter > 0 {
            parts.push(format!("delay {} ms + jitter 0-{} ms", a.delay, a.jitter));
        } else {
            parts.push(format!("delay {} ms", a.delay));
        }
    }
    if a.mtu < 65_535 {
        parts.push(format!("datagrams over {} B dropped", a.mtu));
    }
    if parts.is_empty() {
        "no impairment (a plain relay)".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Writes one line to stdout; a closed stdout is no reason to stop relaying.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Up: client to server. Down: server to client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

/// What the proxy itself counts per direction (the links count the impairments).
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    received: u64,
    bytes_received: u64,
    rejected: u64,
    overflow: u64,
    forwarded: u64,
    bytes_forwarded: u64,
    send_errors: u64,
}

/// One direction's counters as printed. Every datagram is accounted for:
/// `received + duplicated = forwarded + lost + oversize + rejected + overflow + send_errors
/// + in_flight`.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct DirectionStats {
    /// Datagrams read from the socket.
    received: u64,
    /// Datagram copies sent on (duplicates included).
    forwarded: u64,
    /// Dropped by --loss or --burst.
    lost: u64,
    /// Extra copies made by --dup.
    duplicated: u64,
    /// Copies held back by --reorder.
    reordered: u64,
    /// Copies with flipped bits.
    corrupted: u64,
    /// Dropped for exceeding --mtu.
    oversize: u64,
    /// Dropped as not from a known peer (wrong source, client table full, client expired).
    rejected: u64,
    /// Dropped because too many bytes were already held for delayed delivery.
    overflow: u64,
    /// Copies the operating system refused to send.
    send_errors: u64,
    /// Copies waiting for their delivery time.
    in_flight: u64,
    bytes_received: u64,
    bytes_forwarded: u64,
}

impl DirectionStats {
    fn new(c: &Counters) -> Self {
        Self {
            received: c.received,
            bytes_received: c.bytes_received,
            rejected: c.rejected,
            overflow: c.overflow,
            forwarded: c.forwarded,
            bytes_forwarded: c.bytes_forwarded,
            send_errors: c.send_errors,
            ..Self::default()
        }
    }

    fn add_link(&mut self, s: &LinkStats) {
        // Queue and blackout drops cannot happen (no rate limit or blackout is configured);
        // fold them into `lost` anyway so the sum above holds whatever the model does.
        self.lost += s.lost + s.queue_drops + s.blackout_drops;
        self.duplicated += s.duplicated;
        self.reordered += s.reordered;
        self.corrupted += s.corrupted;
        self.oversize += s.oversize;
    }

    fn human(&self) -> String {
        let mut s = format!(
            "received {} ({} B), forwarded {} ({} B), lost {}, duplicated {}, reordered {}, \
             corrupted {}, oversize {}",
            self.received,
            self.bytes_received,
            self.forwarded,
            self.bytes_forwarded,
            self.lost,
            self.duplicated,
            self.reordered,
            self.corrupted,
            self.oversize
        );
        for (name, v) in [
            ("rejected", self.rejected),
            ("overflow", self.overflow),
            ("send errors", self.send_errors),
            ("in flight", self.in_flight),
        ] {
            if v > 0 {
                let _ = write!(s, ", {name} {v}");
            }
        }
        s
    }
}

/// One client: its address, its upstream socket and its two links.
#[derive(Debug)]
struct Client {
    addr: SocketAddr,
    index: u64,
    upstream: Arc<UdpSocket>,
    upstream_local: SocketAddr,
    /// `a_to_b` is up (client to server), `b_to_a` is down.
    path: Path,
    last_seen: Instant,
    /// This client's share of [`Proxy::held_bytes`].
    held_bytes: usize,
    reader: JoinHandle<()>,
    /// The fixed wire's client never expires.
    fixed: bool,
}

impl Client {
    fn next_delivery(&self) -> Option<Instant> {
        match (
            self.path.a_to_b.next_delivery(),
            self.path.b_to_a.next_delivery(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn in_flight(&self) -> usize {
        self.path.a_to_b.in_flight() + self.path.b_to_a.in_flight()
    }
}

/// What an upstream reader task reports.
#[derive(Debug)]
enum Upstream {
    Datagram {
        client: u64,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Failed {
        client: u64,
        error: std::io::Error,
    },
}

/// Reads one upstream socket and passes everything to the main task.
fn spawn_reader(client: u64, socket: Arc<UdpSocket>, tx: mpsc::Sender<Upstream>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; chirp_transport::RECV_BUFFER];
        loop {
            let msg = match socket.recv_from(&mut buf).await {
                Ok((n, from)) => Upstream::Datagram {
                    client,
                    from,
                    data: buf[..n].to_vec(),
                },
                Err(e) if transient(&e) => continue,
                Err(error) => Upstream::Failed { client, error },
            };
            let failed = matches!(msg, Upstream::Failed { .. });
            // The main task has gone (shutting down): nothing left to do.
            if tx.send(msg).await.is_err() || failed {
                return;
            }
        }
    })
}

/// Counts a datagram and its bytes in `c`.
fn count_received(c: &mut Counters, len: usize) {
    c.received += 1;
    c.bytes_received = c.bytes_received.saturating_add(len as u64);
}

fn held_charge(len: usize) -> usize {
    len.saturating_add(HELD_OVERHEAD)
}

/// The proxy's whole state, owned by the one main task.
#[derive(Debug)]
struct Proxy {
    listen: UdpSocket,
    listen_local: SocketAddr,
    to: SocketAddr,
    config: LinkConfig,
    seed: u64,
    /// `--client`: the fixed wire's one client.
    fixed: Option<SocketAddr>,
    max_clients: usize,
    idle_timeout: Duration,
    json: bool,
    clients: HashMap<u64, Client>,
    by_addr: HashMap<SocketAddr, u64>,
    next_index: u64,
    /// Wake-ups `(time, client index)`; see the module docs for the invariant.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    held_bytes: usize,
    up: Counters,
    down: Counters,
    /// Link counters of expired clients, so totals never go backwards.
    retired_up: DirectionStats,
    retired_down: DirectionStats,
    reader_tx: mpsc::Sender<Upstream>,
    table_full_reported: bool,
}

impl Proxy {
    /// Binds the listen socket (and, for the fixed wire, the --via socket) and checks that
    /// the addresses can talk to each other.
    fn new(a: &ImpairArgs, seed: u64, reader_tx: mpsc::Sender<Upstream>) -> anyhow::Result<Self> {
        let listen = UdpSocket::from_std(crate::bind_socket(a.listen)?)
            .context("cannot use the listen socket")?;
        let listen_local = listen
            .local_addr()
            .context("cannot read the listen address")?;
        let mut proxy = Self {
            listen,
            listen_local,
            to: a.to,
            config: link_config(a),
            seed,
            fixed: a.client,
            max_clients: usize::try_from(a.max_clients).unwrap_or(usize::MAX),
            idle_timeout: Duration::from_secs(a.idle_timeout),
            json: a.json,
            clients: HashMap::new(),
            by_addr: HashMap::new(),
            next_index: 0,
            timers: BinaryHeap::new(),
            held_bytes: 0,
            up: Counters::default(),
            down: Counters::default(),
            retired_up: DirectionStats::default(),
            retired_down: DirectionStats::default(),
            reader_tx,
            table_full_reported: false,
        };
        if let (Some(client), Some(via)) = (a.client, a.via) {
            if reachable_from(listen_local, client).is_none() {
                anyhow::bail!(
                    "--client {client} is IPv6 but --listen {listen_local} is IPv4; use the same family"
                );
            }
            if reachable_from(via, a.to).is_none() {
                anyhow::bail!(
                    "--to {} is IPv6 but --via {via} is IPv4; use the same family",
                    a.to
                );
            }
            proxy.add_client(client, via, true, Instant::now())?;
        }
        Ok(proxy)
    }

    /// Creates client `addr` with an upstream socket bound to `bind`.
    fn add_client(
        &mut self,
        addr: SocketAddr,
        bind: SocketAddr,
        fixed: bool,
        now: Instant,
    ) -> anyhow::Result<u64> {
        let std_socket = crate::bind_socket(bind)?;
        let socket =
            Arc::new(UdpSocket::from_std(std_socket).context("cannot use the upstream socket")?);
        let upstream_local = socket
            .local_addr()
            .context("cannot read the upstream address")?;
        let index = self.next_index;
        self.next_index += 1;
        let reader = spawn_reader(index, Arc::clone(&socket), self.reader_tx.clone());
        let client = Client {
            addr,
            index,
            upstream: socket,
            upstream_local,
            path: Path::symmetric(self.config.clone(), client_seed(self.seed, index)),
            last_seen: now,
            held_bytes: 0,
            reader,
            fixed,
        };
        if !fixed {
            // The fixed wire's one client is described by the start line instead.
            self.report_client("new", &client);
        }
        self.by_addr.insert(addr, index);
        self.clients.insert(index, client);
        Ok(index)
    }

    fn report_client(&self, event: &str, c: &Client) {
        if self.json {
            emit(
                &json!({
                    "type": "impair_client", "ts": crate::output::now_utc(), "event": event,
                    "client": c.addr.to_string(), "index": c.index,
                    "upstream": c.upstream_local.to_string(),
                })
                .to_string(),
            );
        } else {
            let what = if event == "new" {
                "new client"
            } else {
                "client"
            };
            let tail = if event == "new" {
                ""
            } else {
                " expired (idle)"
            };
            emit(&format!(
                "[{}] * {what} #{} {} (upstream socket {}){tail}",
                chrono::Local::now().format("%H:%M:%S"),
                c.index,
                c.addr,
                c.upstream_local
            ));
        }
    }

    /// A datagram from a client on the listen socket.
    async fn on_listen(&mut self, from: SocketAddr, data: Vec<u8>, now: Instant) {
        count_received(&mut self.up, data.len());
        let id = if let Some(fixed) = self.fixed {
            // The fixed wire has exactly one client, created at start with index 0.
            if !same_endpoint(from, fixed) {
                debug!(%from, "dropped: not the --client");
                self.up.rejected += 1;
                return;
            }
            0
        } else if let Some(&id) = self.by_addr.get(&from) {
            id
        } else if self.clients.len() >= self.max_clients {
            if !self.table_full_reported {
                self.table_full_reported = true;
                warn!(
                    max = self.max_clients,
                    "client table full: datagrams from new clients are dropped until idle ones expire"
                );
            }
            self.up.rejected += 1;
            return;
        } else {
            match self.add_client(from, upstream_bind(self.to), false, now) {
                Ok(id) => id,
                Err(e) => {
                    warn!("cannot serve client {from}: {e:#}");
                    self.up.rejected += 1;
                    return;
                }
            }
        };
        self.offer(id, Dir::Up, data, now).await;
    }

    /// A datagram on a client's upstream socket.
    async fn on_upstream(&mut self, id: u64, from: SocketAddr, data: Vec<u8>, now: Instant) {
        count_received(&mut self.down, data.len());
        if !self.clients.contains_key(&id) {
            // Read just before the client expired.
            self.down.rejected += 1;
            return;
        }
        if !same_endpoint(from, self.to) {
            debug!(%from, "dropped: not from --to");
            self.down.rejected += 1;
            return;
        }
        self.offer(id, Dir::Down, data, now).await;
    }

    /// Puts a datagram into a client's link, sends whatever is due, and keeps a wake-up for
    /// the rest.
    async fn offer(&mut self, id: u64, dir: Dir, data: Vec<u8>, now: Instant) {
        let charge = held_charge(data.len());
        if self.held_bytes.saturating_add(charge) > MAX_HELD_BYTES {
            match dir {
                Dir::Up => self.up.overflow += 1,
                Dir::Down => self.down.overflow += 1,
            }
            return;
        }
        let Some(client) = self.clients.get_mut(&id) else {
            // Callers check that the client exists; count it anyway so the totals add up.
            match dir {
                Dir::Up => self.up.rejected += 1,
                Dir::Down => self.down.rejected += 1,
            }
            return;
        };
        client.last_seen = now;
        let before_next = client.next_delivery();
        let link = match dir {
            Dir::Up => &mut client.path.a_to_b,
            Dir::Down => &mut client.path.b_to_a,
        };
        let before = link.in_flight();
        link.send(now, data);
        // Every copy has the original length (corruption flips bits, never resizes).
        let added = link
            .in_flight()
            .saturating_sub(before)
            .saturating_mul(charge);
        client.held_bytes = client.held_bytes.saturating_add(added);
        self.held_bytes = self.held_bytes.saturating_add(added);
        self.deliver_due(id, now).await;
        // Keep the wake-up invariant: a new entry is needed only if this client's next
        // delivery moved earlier (or it had none); otherwise an existing entry covers it.
        let next = self.clients.get(&id).and_then(Client::next_delivery);
        if let Some(next) = next {
            if before_next.is_none_or(|b| next < b) {
                self.timers.push(Reverse((next, id)));
            }
        }
    }

    /// Sends every datagram of client `id` whose time has come.
    async fn deliver_due(&mut self, id: u64, now: Instant) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let mut due = Vec::new();
        while let Some(d) = client.path.a_to_b.poll_deliver(now) {
            due.push((Dir::Up, d));
        }
        while let Some(d) = client.path.b_to_a.poll_deliver(now) {
            due.push((Dir::Down, d));
        }
        if due.is_empty() {
            return;
        }
        let upstream = Arc::clone(&client.upstream);
        let client_addr = reachable_from(self.listen_local, client.addr).unwrap_or(client.addr);
        let to = reachable_from(client.upstream_local, self.to).unwrap_or(self.to);
        let released: usize = due.iter().map(|(_, d)| held_charge(d.len())).sum();
        client.held_bytes = client.held_bytes.saturating_sub(released);
        self.held_bytes = self.held_bytes.saturating_sub(released);
        for (dir, data) in due {
            let (result, counters) = match dir {
                Dir::Up => (upstream.send_to(&data, to).await, &mut self.up),
                Dir::Down => (
                    self.listen.send_to(&data, client_addr).await,
                    &mut self.down,
                ),
            };
            match result {
                Ok(_) => {
                    counters.forwarded += 1;
                    counters.bytes_forwarded =
                        counters.bytes_forwarded.saturating_add(data.len() as u64);
                }
                // UDP promises nothing; a refused or failed send is one more lost datagram.
                Err(e) => {
                    counters.send_errors += 1;
                    debug!(?dir, "send failed: {e}");
                }
            }
        }
    }

    /// The earliest pending wake-up.
    fn next_wakeup(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Delivers everything due at `now`, for every client whose wake-up has come.
    async fn on_timer(&mut self, now: Instant) {
        let mut ids = Vec::new();
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.deliver_due(id, now).await;
            if let Some(next) = self.clients.get(&id).and_then(Client::next_delivery) {
                self.timers.push(Reverse((next, id)));
            }
        }
    }

    /// Forgets clients idle for longer than the timeout with nothing in flight.
    fn expire_idle(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .clients
            .values()
            .filter(|c| {
                !c.fixed
                    && c.in_flight() == 0
                    && now.saturating_duration_since(c.last_seen) >= self.idle_timeout
            })
            .map(|c| c.index)
            .collect();
        for id in expired {
            if let Some(c) = self.clients.remove(&id) {
                c.reader.abort();
                self.by_addr.remove(&c.addr);
                self.retired_up.add_link(&c.path.a_to_b.stats());
                self.retired_down.add_link(&c.path.b_to_a.stats());
                self.report_client("expired", &c);
            }
        }
        if self.clients.len() < self.max_clients {
            self.table_full_reported = false;
        }
    }

    /// A reader task failed for good: drop that client (or, for the fixed wire, give up).
    fn on_reader_failed(&mut self, id: u64, error: &std::io::Error) -> anyhow::Result<()> {
        let Some(c) = self.clients.remove(&id) else {
            return Ok(());
        };
        c.reader.abort();
        self.by_addr.remove(&c.addr);
        self.retired_up.add_link(&c.path.a_to_b.stats());
        self.retired_down.add_link(&c.path.b_to_a.stats());
        // Copies still in flight will never be sent: count them as send errors so the totals
        // still add up, and give back their share of the memory budget.
        self.up.send_errors += c.path.a_to_b.in_flight() as u64;
        self.down.send_errors += c.path.b_to_a.in_flight() as u64;
        self.held_bytes = self.held_bytes.saturating_sub(c.held_bytes);
        if c.fixed {
            return Err(anyhow::anyhow!("{error}"))
                .with_context(|| format!("cannot receive on --via {}", c.upstream_local));
        }
        warn!(client = %c.addr, "upstream socket failed, client dropped: {error}");
        Ok(())
    }

    fn stats(&self) -> (DirectionStats, DirectionStats) {
        let mut up = DirectionStats::new(&self.up);
        let mut down = DirectionStats::new(&self.down);
        for (total, retired) in [(&mut up, &self.retired_up), (&mut down, &self.retired_down)] {
            total.lost += retired.lost;
            total.duplicated += retired.duplicated;
            total.reordered += retired.reordered;
            total.corrupted += retired.corrupted;
            total.oversize += retired.oversize;
        }
        for c in self.clients.values() {
            up.add_link(&c.path.a_to_b.stats());
            down.add_link(&c.path.b_to_a.stats());
            up.in_flight += c.path.a_to_b.in_flight() as u64;
            down.in_flight += c.path.b_to_a.in_flight() as u64;
        }
        (up, down)
    }

    fn print_stats(&self, last: bool) {
        let (up, down) = self.stats();
        if self.json {
            emit(
                &json!({
                    "type": "impair_stats", "ts": crate::output::now_utc(), "final": last,
                    "clients": self.clients.len(), "up": up, "down": down,
                })
                .to_string(),
            );
        } else {
            emit(&format!(
                "[{}] {}stats up: {} | down: {} | clients {}",
                chrono::Local::now().format("%H:%M:%S"),
                if last { "final " } else { "" },
                up.human(),
                down.human(),
                self.clients.len()
            ));
        }
    }

    fn print_start(&self, a: &ImpairArgs) {
        let via = self
            .clients
            .get(&0)
            .filter(|c| c.fixed)
            .map(|c| c.upstream_local);
        if self.json {
            emit(
                &json!({
                    "type": "impair_start", "ts": crate::output::now_utc(),
                    "listen": self.listen_local.to_string(), "to": self.to.to_string(),
                    "client": self.fixed.map(|c| c.to_string()),
                    "via": via.map(|v| v.to_string()),
                    "loss": a.loss,
                    "burst": a.burst.map(|b| [b.p_good_to_bad, b.p_bad_to_good]),
                    "dup": a.dup, "reorder": a.reorder, "reorder_delay_ms": a.reorder_delay,
                    "corrupt": a.corrupt, "delay_ms": a.delay, "jitter_ms": a.jitter,
                    "mtu": a.mtu, "seed": self.seed.to_string(),
                })
                .to_string(),
            );
            return;
        }
        let route = match (self.fixed, via) {
            (Some(client), Some(via)) => format!(
                "fixed wire {client} <-> {} [proxy] {via} <-> {}",
                self.listen_local, self.to
            ),
            _ => format!(
                "{} -> {} (each client gets its own upstream socket; replies go back to it)",
                self.listen_local, self.to
            ),
        };
        emit(&format!(
            "* chirp impair: {route}; both directions: {}; seed {} (replay with --seed {})",
            describe(a),
            self.seed,
            self.seed
        ));
    }

    /// Stops the reader tasks (the runtime would on exit anyway; this is tidier).
    fn shutdown(&mut self) {
        for c in self.clients.values() {
            c.reader.abort();
        }
    }
}

/// SIGINT (Ctrl-C) and SIGTERM, registered at once so a signal sent right after the start
/// line is already caught.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals")
    }
}

/// Runs the proxy until SIGINT or SIGTERM. Returns the exit code.
pub(crate) async fn run(args: ImpairArgs) -> anyhow::Result<u8> {
    let seed = args.seed.unwrap_or_else(chirp_transport::random_seed);
    let mut signals = Signals::new()?;
    let (reader_tx, mut reader_rx) = mpsc::channel(READER_CHANNEL);
    let mut proxy = Proxy::new(&args, seed, reader_tx)?;
    proxy.print_start(&args);

    let mut stats_tick = (args.stats_every > 0).then(|| {
        let every = Duration::from_secs(args.stats_every);
        tokio::time::interval_at(tokio::time::Instant::now() + every, every)
    });
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; chirp_transport::RECV_BUFFER];

    let result = loop {
        let wakeup = proxy.next_wakeup();
        let sleep = async {
            match wakeup {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let stats = async {
            match stats_tick.as_mut() {
                Some(i) => i.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = proxy.listen.recv_from(&mut buf) => match r {
                Ok((n, from)) => proxy.on_listen(from, buf[..n].to_vec(), Instant::now()).await,
                Err(e) if transient(&e) => debug!("receive on --listen: {e}"),
                Err(e) => break Err(e).context("cannot receive on --listen"),
            },
            Some(msg) = reader_rx.recv() => match msg {
                Upstream::Datagram { client, from, data } => {
                    proxy.on_upstream(client, from, data, Instant::now()).await;
                }
                Upstream::Failed { client, error } => {
                    if let Err(e) = proxy.on_reader_failed(client, &error) {
                        break Err(e);
                    }
                }
            },
            () = sleep => proxy.on_timer(Instant::now()).await,
            _ = stats => proxy.print_stats(false),
            _ = sweep.tick() => proxy.expire_idle(Instant::now()),
            () = signals.recv() => break Ok(0),
        }
    };
    proxy.shutdown();
    proxy.print_stats(true);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_checked() {
        assert_eq!(probability("0"), Ok(0.0));
        assert_eq!(probability(" 1 "), Ok(1.0));
        assert_eq!(probability("0.25"), Ok(0.25));
        for bad in ["1.5", "-0.1", "NaN", "inf", "half", ""] {
            assert!(probability(bad).is_err(), "{bad} accepted");
        }
        let b = burst("0.02,0.25");
        assert_eq!(b, Ok(GilbertElliott::gilbert(0.02, 0.25)));
        assert!(burst("0.02").is_err());
        assert!(burst("0.02,2").is_err());
    }

    #[test]
    fn client_seeds_differ_and_client_zero_uses_the_run_seed() {
        assert_eq!(client_seed(7, 0), 7);
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|i| client_seed(7, i)).collect();
        assert_eq!(seeds.len(), 1000);
    }

    #[test]
    fn addresses_meet_across_families() {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 5));
        let v6any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 5));
        assert!(same_endpoint(v4, mapped));
        assert!(!same_endpoint(v4, v6));
        assert_eq!(reachable_from(v6any, v4), Some(mapped));
        assert_eq!(reachable_from(v4, mapped), Some(v4));
        assert_eq!(reachable_from(v4, v6), None);
        assert_eq!(upstream_bind(v4).ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(percent(0.5), "50 %");
        assert_eq!(percent(0.025), "2.5 %");
    }
}
