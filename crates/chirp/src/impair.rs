//! `chirp impair`: a userspace UDP proxy that does to datagrams what bad networks do.
//!
//! # Design
//!
//! The proxy's logic is [`chirp_netsim::Proxy`], a sans-IO core: the client table, every
//! client's pair of seeded [`Link`](chirp_netsim::Link)s, the fixed wire, the delivery
//! wake-ups, the held-bytes cap, idle expiry and the counters. It reads no clock and owns no
//! socket, so its decisions are a pure function of the seed and of the datagrams and times it
//! is given, and it is tested in virtual time in `chirp-netsim`.
//!
//! This file is the thin driver around it: clap arguments, sockets, signals and output. One
//! task owns the core and every socket. It `select!`s over the listen socket, a channel fed by
//! one small reader task per upstream socket, the core's `poll_timeout`, the stats tick and
//! the signals; after each input it carries out the core's events (bind an upstream socket for
//! a new client, close an expired one's, log refusals) and then its transmits.
//!
//! Memory is bounded: the core caps clients and held bytes and forgets idle clients, and the
//! reader channel is bounded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chirp_netsim::{
    ClientId, Direction, DirectionStats, Event, GilbertElliott, LinkConfig, Proxy, ProxyConfig,
    Transmit,
};
use clap::Args;
use serde_json::{Value, json};
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
With --rate, each direction is a bottleneck of that bandwidth: a datagram waits behind those
before it until its bytes are on the wire, then the delay and the other impairments apply; a
datagram that finds the queue (--queue bytes) full is dropped (counted as queue drops).
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

  # A 100 Mbit/s bottleneck each way, 20 ms each way: the queue defaults to one
  # bandwidth-delay product (500,000 bytes here); 1 % random loss after the queue:
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --rate 100mbit --delay 20 --loss 0.01

  # A slow uplink with a shallow buffer (10 datagrams of 1,200 bytes):
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --rate 2MB/s --queue 12000

  # Replay an earlier run exactly; counters every 5 s as JSON lines:
  chirp impair --listen 127.0.0.1:7000 --to 127.0.0.1:6000 --loss 0.3 --seed 42 \\
      --stats-every 5 --json";

/// Delays are capped at one hour: longer ones are surely typos, and keep `Instant` sums sane.
const MAX_DELAY_MS: u64 = 3_600_000;
/// Total bytes held for delayed delivery, over all clients and directions. Beyond it,
/// datagrams are dropped (counted as `overflow`), like a router whose buffers are full.
/// Each held copy is charged [`chirp_netsim::HELD_OVERHEAD`] bytes on top of its payload.
const MAX_HELD_BYTES: usize = 64 << 20;
/// The highest --rate: 100 Gbit/s, far beyond what a userspace proxy forwards.
const MAX_RATE: u64 = 12_500_000_000;
/// The largest --queue: a queue longer than the held-bytes cap could never fill.
const MAX_QUEUE_BYTES: u64 = MAX_HELD_BYTES as u64;
/// The least default --queue: 16 datagrams of 1,500 bytes, so a path without delay still
/// absorbs a small burst.
const MIN_DEFAULT_QUEUE: u64 = 24_000;
/// Datagrams read by upstream reader tasks and not yet processed. When full, readers wait
/// and the kernel buffers (then drops), which keeps memory bounded.
const READER_CHANNEL: usize = 256;

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
    /// Bandwidth of each direction, e.g. 100mbit, 1.5mbit, 10MB/s, 500kB/s, 2MiB/s (bit units:
    /// bit, kbit, mbit, gbit; byte units: B/s, kB/s, MB/s, GB/s, KiB/s, MiB/s). Datagrams
    /// wait their turn in a drop-tail queue of --queue bytes; a full queue drops them.
    #[arg(long, value_name = "RATE", value_parser = rate)]
    rate: Option<u64>,
    /// Size of the --rate queue per direction, in bytes. Default: one bandwidth-delay product
    /// (the rate times 2 x --delay), at least 24,000 bytes (16 datagrams of 1,500).
    #[arg(long, value_name = "BYTES", requires = "rate", value_parser = clap::value_parser!(u64).range(1..=MAX_QUEUE_BYTES))]
    queue: Option<u64>,
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

/// For clap: a bandwidth in bytes per second, from `100mbit`, `1.5mbit`, `10MB/s`, ...
///
/// Bit units are SI and case-insensitive (`bit`, `kbit`, `mbit`, `gbit`, with or without
/// `/s`); byte units spell the B in capitals (`B/s`, `kB/s`, `MB/s`, `GB/s`, `KiB/s`,
/// `MiB/s`, `GiB/s`), so that `mb` never has to mean one or the other.
fn rate(s: &str) -> Result<u64, String> {
    const BYTE_UNITS: [(&str, f64); 8] = [
        ("GiB/s", 1_073_741_824.0),
        ("MiB/s", 1_048_576.0),
        ("KiB/s", 1_024.0),
        ("GB/s", 1e9),
        ("MB/s", 1e6),
        ("kB/s", 1e3),
        ("KB/s", 1e3),
        ("B/s", 1.0),
    ];
    const BIT_UNITS: [(&str, f64); 4] = [
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("bit", 1.0 / 8.0),
    ];
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower.strip_suffix("/s").unwrap_or(&lower);
    let unit = BYTE_UNITS
        .iter()
        .find_map(|&(u, f)| t.strip_suffix(u).map(|n| (n, f)))
        .or_else(|| {
            BIT_UNITS
                .iter()
                .find_map(|&(u, f)| lower.strip_suffix(u).map(|n| (&t[..n.len()], f)))
        });
    let Some((number, factor)) = unit else {
        return Err(format!(
            "'{s}' has no unit; write e.g. 100mbit, 1.5mbit, 10MB/s or 500kB/s"
        ));
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{s}': '{}' is not a number", number.trim()))?;
    let bytes = n * factor;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("'{s}' is less than one byte per second"));
    }
    if bytes > MAX_RATE as f64 {
        return Err(format!(
            "'{s}' is above the most the proxy models (100 Gbit/s)"
        ));
    }
    // Finite and in 1..=MAX_RATE here, so the conversion neither truncates nor saturates.
    Ok(bytes.round() as u64)
}

/// The --rate queue when --queue is not given: one bandwidth-delay product, at least
/// [`MIN_DEFAULT_QUEUE`].
fn default_queue(rate: u64, delay_ms: u64) -> u64 {
    let bdp = u128::from(rate) * u128::from(2 * delay_ms) / 1_000;
    u64::try_from(bdp)
        .unwrap_or(MAX_QUEUE_BYTES)
        .clamp(MIN_DEFAULT_QUEUE, MAX_QUEUE_BYTES)
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
    if let Some(rate) = a.rate {
        let queue = a.queue.unwrap_or_else(|| default_queue(rate, a.delay));
        // At most MAX_QUEUE_BYTES (64 MiB) by the clap range and `default_queue`.
        config = config.with_rate(rate, usize::try_from(queue).unwrap_or(usize::MAX));
    }
    config
}

/// A rate in bytes per second in words: "100 Mbit/s (12.5 MB/s)".
fn describe_rate(bytes_per_sec: u64) -> String {
    let bits = bytes_per_sec as f64 * 8.0;
    let (value, unit) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        (bits, "bit/s")
    };
    let value = format!("{value:.3}");
    let value = value.trim_end_matches('0').trim_end_matches('.');
    format!("{value} {unit} ({bytes_per_sec} B/s)")
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
    if let Some(rate) = a.rate {
        let queue = a.queue.unwrap_or_else(|| default_queue(rate, a.delay));
        parts.push(format!(
            "rate {}, drop-tail queue {queue} B",
            describe_rate(rate)
        ));
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

/// One direction's counters as a JSON object.
fn stats_json(d: &DirectionStats) -> Value {
    json!({
        "received": d.received, "forwarded": d.forwarded, "lost": d.lost,
        "queue_drops": d.queue_drops,
        "duplicated": d.duplicated, "reordered": d.reordered, "corrupted": d.corrupted,
        "oversize": d.oversize, "rejected": d.rejected, "overflow": d.overflow,
        "send_errors": d.send_errors, "in_flight": d.in_flight,
        "bytes_received": d.bytes_received, "bytes_forwarded": d.bytes_forwarded,
    })
}

/// One direction's counters in words; the rare ones only when not zero.
fn stats_human(d: &DirectionStats) -> String {
    let mut s = format!(
        "received {} ({} B), forwarded {} ({} B), lost {}, duplicated {}, reordered {}, \
         corrupted {}, oversize {}",
        d.received,
        d.bytes_received,
        d.forwarded,
        d.bytes_forwarded,
        d.lost,
        d.duplicated,
        d.reordered,
        d.corrupted,
        d.oversize
    );
    for (name, v) in [
        ("queue drops", d.queue_drops),
        ("rejected", d.rejected),
        ("overflow", d.overflow),
        ("send errors", d.send_errors),
        ("in flight", d.in_flight),
    ] {
        if v > 0 {
            let _ = write!(s, ", {name} {v}");
        }
    }
    s
}

/// A client's upstream socket and the task reading it.
#[derive(Debug)]
struct Upstream {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    reader: JoinHandle<()>,
}

/// What an upstream reader task reports.
#[derive(Debug)]
enum Read {
    Datagram {
        client: ClientId,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Failed {
        client: ClientId,
        error: std::io::Error,
    },
}

/// Reads one upstream socket and passes everything to the main task.
fn spawn_reader(
    client: ClientId,
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Read>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; chirp_transport::RECV_BUFFER];
        loop {
            let msg = match socket.recv_from(&mut buf).await {
                Ok((n, from)) => Read::Datagram {
                    client,
                    from,
                    data: buf[..n].to_vec(),
                },
                Err(e) if transient(&e) => continue,
                Err(error) => Read::Failed { client, error },
            };
            let failed = matches!(msg, Read::Failed { .. });
            // The main task has gone (shutting down): nothing left to do.
            if tx.send(msg).await.is_err() || failed {
                return;
            }
        }
    })
}

/// The core and the sockets it is driven over, owned by the one main task.
#[derive(Debug)]
struct Driver {
    core: Proxy,
    listen: UdpSocket,
    listen_local: SocketAddr,
    upstreams: HashMap<ClientId, Upstream>,
    reader_tx: mpsc::Sender<Read>,
    json: bool,
}

impl Driver {
    /// Binds the listen socket (and, for the fixed wire, the --via socket) and checks that
    /// the addresses can talk to each other.
    fn new(a: &ImpairArgs, seed: u64, reader_tx: mpsc::Sender<Read>) -> anyhow::Result<Self> {
        let listen = UdpSocket::from_std(crate::bind_socket(a.listen)?)
            .context("cannot use the listen socket")?;
        let listen_local = listen
            .local_addr()
            .context("cannot read the listen address")?;
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
        }
        let mut config = ProxyConfig::new(a.to, link_config(a), seed);
        config.fixed_client = a.client;
        config.max_clients = usize::try_from(a.max_clients).unwrap_or(usize::MAX);
        config.idle_timeout = Duration::from_secs(a.idle_timeout);
        config.max_held_bytes = MAX_HELD_BYTES;
        let mut driver = Self {
            core: Proxy::new(config, Instant::now()),
            listen,
            listen_local,
            upstreams: HashMap::new(),
            reader_tx,
            json: a.json,
        };
        if let (Some(id), Some(via)) = (driver.core.fixed_client(), a.via) {
            driver.bind_upstream(id, via)?;
        }
        Ok(driver)
    }

    /// Gives client `id` an upstream socket bound to `bind`, with its reader task.
    fn bind_upstream(&mut self, id: ClientId, bind: SocketAddr) -> anyhow::Result<SocketAddr> {
        let std_socket = crate::bind_socket(bind)?;
        let socket =
            Arc::new(UdpSocket::from_std(std_socket).context("cannot use the upstream socket")?);
        let local = socket
            .local_addr()
            .context("cannot read the upstream address")?;
        let reader = spawn_reader(id, Arc::clone(&socket), self.reader_tx.clone());
        self.upstreams.insert(
            id,
            Upstream {
                socket,
                local,
                reader,
            },
        );
        Ok(local)
    }

    /// Carries out what the core asks for after an input: its events first (so a new client
    /// has its socket), then its transmits.
    async fn flush(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                Event::ClientAdded { id, addr } => {
                    match self.bind_upstream(id, upstream_bind(self.core.config().to)) {
                        Ok(local) => self.report_client("new", id, addr, local),
                        Err(e) => {
                            warn!("cannot serve client {addr}: {e:#}");
                            self.core.handle_upstream_failed(id);
                        }
                    }
                }
                Event::ClientExpired { id, addr } => {
                    if let Some(u) = self.upstreams.remove(&id) {
                        u.reader.abort();
                        self.report_client("expired", id, addr, u.local);
                    }
                }
                Event::TableFull { max_clients } => warn!(
                    max = max_clients,
                    "client table full: datagrams from new clients are dropped until idle ones expire"
                ),
                Event::Refused {
                    direction,
                    from,
                    reason,
                } => debug!(%from, ?direction, ?reason, "dropped"),
            }
        }
        while let Some(t) = self.core.poll_transmit() {
            self.send(t).await;
        }
    }

    /// Sends one transmit from the socket the core says.
    async fn send(&mut self, t: Transmit) {
        let result = match t.direction {
            Direction::Up => match self.upstreams.get(&t.client) {
                Some(u) => {
                    let to = reachable_from(u.local, t.destination).unwrap_or(t.destination);
                    u.socket.send_to(&t.contents, to).await
                }
                None => Err(std::io::Error::new(
                    ErrorKind::NotConnected,
                    "no upstream socket",
                )),
            },
            Direction::Down => {
                let to = reachable_from(self.listen_local, t.destination).unwrap_or(t.destination);
                self.listen.send_to(&t.contents, to).await
            }
        };
        // UDP promises nothing; a refused or failed send is one more lost datagram.
        if let Err(e) = result {
            debug!(direction = ?t.direction, "send failed: {e}");
            self.core.handle_send_error(&t);
        }
    }

    fn report_client(&self, event: &str, id: ClientId, addr: SocketAddr, upstream: SocketAddr) {
        if self.json {
            emit(
                &json!({
                    "type": "impair_client", "ts": crate::output::now_utc(), "event": event,
                    "client": addr.to_string(), "index": id.0,
                    "upstream": upstream.to_string(),
                })
                .to_string(),
            );
        } else {
            let (what, tail) = if event == "new" {
                ("new client", "")
            } else {
                ("client", " expired (idle)")
            };
            emit(&format!(
                "[{}] * {what} #{} {addr} (upstream socket {upstream}){tail}",
                chrono::Local::now().format("%H:%M:%S"),
                id.0,
            ));
        }
    }

    /// A reader task failed for good: drop that client (or, for the fixed wire, give up).
    fn on_reader_failed(&mut self, id: ClientId, error: &std::io::Error) -> anyhow::Result<()> {
        let Some(u) = self.upstreams.remove(&id) else {
            return Ok(());
        };
        u.reader.abort();
        let addr = self.core.client_addr(id);
        self.core.handle_upstream_failed(id);
        if self.core.fixed_client() == Some(id) {
            return Err(anyhow::anyhow!("{error}"))
                .with_context(|| format!("cannot receive on --via {}", u.local));
        }
        if let Some(addr) = addr {
            warn!(client = %addr, "upstream socket failed, client dropped: {error}");
        }
        Ok(())
    }

    fn print_stats(&self, last: bool) {
        let s = self.core.stats();
        if self.json {
            emit(
                &json!({
                    "type": "impair_stats", "ts": crate::output::now_utc(), "final": last,
                    "clients": s.clients, "up": stats_json(&s.up), "down": stats_json(&s.down),
                })
                .to_string(),
            );
        } else {
            emit(&format!(
                "[{}] {}stats up: {} | down: {} | clients {}",
                chrono::Local::now().format("%H:%M:%S"),
                if last { "final " } else { "" },
                stats_human(&s.up),
                stats_human(&s.down),
                s.clients
            ));
        }
    }

    fn print_start(&self, a: &ImpairArgs) {
        let seed = self.core.config().seed;
        let to = self.core.config().to;
        let via = self
            .core
            .fixed_client()
            .and_then(|id| self.upstreams.get(&id))
            .map(|u| u.local);
        if self.json {
            emit(
                &json!({
                    "type": "impair_start", "ts": crate::output::now_utc(),
                    "listen": self.listen_local.to_string(), "to": to.to_string(),
                    "client": a.client.map(|c| c.to_string()),
                    "via": via.map(|v| v.to_string()),
                    "loss": a.loss,
                    "burst": a.burst.map(|b| [b.p_good_to_bad, b.p_bad_to_good]),
                    "dup": a.dup, "reorder": a.reorder, "reorder_delay_ms": a.reorder_delay,
                    "corrupt": a.corrupt, "delay_ms": a.delay, "jitter_ms": a.jitter,
                    "mtu": a.mtu, "seed": seed.to_string(),
                    "rate_bytes_per_sec": a.rate,
                    "queue_bytes": a.rate.map(|r| a.queue.unwrap_or_else(|| default_queue(r, a.delay))),
                })
                .to_string(),
            );
            return;
        }
        let route = match (a.client, via) {
            (Some(client), Some(via)) => format!(
                "fixed wire {client} <-> {} [proxy] {via} <-> {to}",
                self.listen_local
            ),
            _ => format!(
                "{} -> {to} (each client gets its own upstream socket; replies go back to it)",
                self.listen_local
            ),
        };
        emit(&format!(
            "* chirp impair: {route}; both directions: {}; seed {seed} (replay with --seed {seed})",
            describe(a),
        ));
    }

    /// Stops the reader tasks (the runtime would on exit anyway; this is tidier).
    fn shutdown(&mut self) {
        for u in self.upstreams.values() {
            u.reader.abort();
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
    let mut driver = Driver::new(&args, seed, reader_tx)?;
    driver.print_start(&args);

    let mut stats_tick = (args.stats_every > 0).then(|| {
        let every = Duration::from_secs(args.stats_every);
        tokio::time::interval_at(tokio::time::Instant::now() + every, every)
    });
    let mut buf = vec![0u8; chirp_transport::RECV_BUFFER];

    let result = loop {
        driver.flush().await;
        let wakeup = driver.core.poll_timeout();
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
            r = driver.listen.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    driver.core.handle_from_client(Instant::now(), from, buf[..n].to_vec());
                }
                Err(e) if transient(&e) => debug!("receive on --listen: {e}"),
                Err(e) => break Err(e).context("cannot receive on --listen"),
            },
            Some(msg) = reader_rx.recv() => match msg {
                Read::Datagram { client, from, data } => {
                    driver.core.handle_from_upstream(Instant::now(), client, from, data);
                }
                Read::Failed { client, error } => {
                    if let Err(e) = driver.on_reader_failed(client, &error) {
                        break Err(e);
                    }
                }
            },
            () = sleep => driver.core.handle_timeout(Instant::now()),
            _ = stats => driver.print_stats(false),
            () = signals.recv() => break Ok(0),
        }
    };
    driver.shutdown();
    driver.print_stats(true);
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
    fn rates_are_parsed_in_bits_and_bytes() {
        assert_eq!(rate("100mbit"), Ok(12_500_000));
        assert_eq!(rate("100Mbit/s"), Ok(12_500_000));
        assert_eq!(rate("1.5mbit"), Ok(187_500));
        assert_eq!(rate("1gbit"), Ok(125_000_000));
        assert_eq!(rate("800kbit"), Ok(100_000));
        assert_eq!(rate("8000bit"), Ok(1_000));
        assert_eq!(rate("10MB/s"), Ok(10_000_000));
        assert_eq!(rate(" 500kB/s "), Ok(500_000));
        assert_eq!(rate("2MiB/s"), Ok(2_097_152));
        assert_eq!(rate("1200B/s"), Ok(1_200));
        for bad in [
            "100", "100mb", "fast", "mbit", "-5mbit", "0mbit", "4bit", "NaNmbit", "1e12gbit",
            "10mB/s",
        ] {
            assert!(rate(bad).is_err(), "{bad} accepted");
        }
        // One bandwidth-delay product over the round trip, never below 16 full datagrams.
        assert_eq!(default_queue(12_500_000, 20), 500_000);
        assert_eq!(default_queue(12_500_000, 0), MIN_DEFAULT_QUEUE);
        assert_eq!(default_queue(MAX_RATE, 3_600_000), MAX_QUEUE_BYTES);
        assert_eq!(describe_rate(12_500_000), "100 Mbit/s (12500000 B/s)");
        assert_eq!(describe_rate(187_500), "1.5 Mbit/s (187500 B/s)");
    }

    #[test]
    fn addresses_meet_across_families() {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 5));
        let v6any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        let mapped = SocketAddr::from((Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5));
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 5));
        assert_eq!(reachable_from(v6any, v4), Some(mapped));
        assert_eq!(reachable_from(v4, mapped), Some(v4));
        assert_eq!(reachable_from(v4, v6), None);
        assert_eq!(upstream_bind(v4).ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(percent(0.5), "50 %");
        assert_eq!(percent(0.025), "2.5 %");
    }
}
