//! Under attack: this process sends junk at the server as fast as it can (random bytes,
//! forged INITIALs, RESETs with unknown tokens, DATA packets for unknown connections) while a
//! legitimate client measures the latency of its messages, before and during the flood. The
//! server's CPU time per junk datagram it received is the cost of an attack; compared at two
//! numbers of established sessions, it shows whether that cost grows with them (issue 14:
//! nothing on a datagram's path may scan all connections).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chirp_chat::client::{self, Event, Target};
use chirp_proto::{Endpoint, EndpointConfig};
use serde::Serialize;

use crate::BenchError;
use crate::fanout::Latency;
use crate::server::ProcSample;

/// What the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Junk {
    /// Random bytes of random length (1 to 1,400), most with an unknown type byte.
    Random,
    /// Well-formed INITIALs (fresh Noise message 1, padded) without a cookie: each costs the
    /// server a stateless RETRY.
    Initial,
    /// 18-byte RESETs with random tokens: each costs the server a token lookup.
    Reset,
    /// DATA packets for connection IDs the server does not know: each may cost it a stateless
    /// RESET.
    UnknownData,
}

impl Junk {
    /// Every kind, in the order a mixed flood cycles through them.
    pub const ALL: [Junk; 4] = [Junk::Random, Junk::Initial, Junk::Reset, Junk::UnknownData];
}

/// Datagrams prepared for a flood, sent round robin.
#[derive(Debug)]
pub struct Pool {
    datagrams: Vec<Vec<u8>>,
}

/// Distinct datagrams of each kind in a [`Pool`]: enough that the server sees many different
/// connection IDs and tokens, few enough to prepare in milliseconds.
const POOL_PER_KIND: usize = 256;

impl Pool {
    /// A pool of `kinds`, aimed at `server` (forged INITIALs name it as their destination).
    pub fn new(kinds: &[Junk], server: SocketAddr, seed: u64) -> Self {
        let mut rng = XorShift(seed | 1);
        let mut per_kind: Vec<Vec<Vec<u8>>> = Vec::new();
        for &kind in kinds {
            let v = match kind {
                Junk::Random => (0..POOL_PER_KIND)
                    .map(|_| {
                        let len = 1 + (rng.next() % 1400) as usize;
                        rng.bytes(len)
                    })
                    .collect(),
                Junk::Initial => forged_initials(server, POOL_PER_KIND, rng.next()),
                Junk::Reset => (0..POOL_PER_KIND)
                    .map(|_| [vec![0x02, 0x07], rng.bytes(16)].concat())
                    .collect(),
                Junk::UnknownData => (0..POOL_PER_KIND)
                    .map(|_| [vec![0x02, 0x04], rng.bytes(8 + 40)].concat())
                    .collect(),
            };
            per_kind.push(v);
        }
        // Interleaved, so that a mixed flood sends every kind all the time.
        let mut datagrams = Vec::new();
        for i in 0..POOL_PER_KIND {
            for v in &per_kind {
                if let Some(d) = v.get(i) {
                    datagrams.push(d.clone());
                }
            }
        }
        Self { datagrams }
    }

    /// Datagrams in the pool.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// True if the pool has nothing to send.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }
}

/// INITIALs as a real client's first flight, each from its own fresh connection (its own
/// Noise ephemeral key and connection IDs), so that they are well-formed and authentic under
/// the public initial keys.
fn forged_initials(server: SocketAddr, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let now = Instant::now();
    let mut ep = Endpoint::new(
        EndpointConfig {
            accept_incoming: false,
            max_connections: n + 1,
            ..EndpointConfig::default()
        },
        seed,
    );
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if ep.connect(now, server).is_err() {
            break;
        }
        // The connection's first datagram is its INITIAL.
        if let Some(t) = ep.poll_transmit(now) {
            out.push(t.contents);
        }
    }
    out
}

/// A fast, non-cryptographic generator: junk needs variety, not secrecy.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A flood in progress on its own thread: sends the pool round robin at `server` as fast as
/// the socket takes it, until stopped or `limit` has passed.
#[derive(Debug)]
pub struct Flood {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64, BenchError>>,
}

impl Flood {
    /// Starts flooding `server` with `pool` from a socket bound to `from`.
    pub fn start(
        pool: Pool,
        from: SocketAddr,
        server: SocketAddr,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let socket = UdpSocket::bind(from).map_err(BenchError::io("bind the flood socket"))?;
        socket
            .connect(server)
            .map_err(BenchError::io("aim the flood socket"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || {
                let started = Instant::now();
                let mut sent = 0u64;
                if pool.is_empty() {
                    return Ok(0);
                }
                // Checking the flag and the clock every datagram would cost more than
                // sending; every 256 is within a millisecond.
                let mut next = 0;
                loop {
                    for _ in 0..256 {
                        // A datagram the socket refused (ICMP from the server's port, a
                        // full buffer) is not counted, and the flood goes on.
                        if socket.send(&pool.datagrams[next]).is_ok() {
                            sent += 1;
                        }
                        next = (next + 1) % pool.datagrams.len();
                    }
                    if flag.load(Ordering::Relaxed) || started.elapsed() >= limit {
                        break;
                    }
                }
                Ok(sent)
            })
            .map_err(BenchError::io("start the flood thread"))?;
        Ok(Self { stop, thread })
    }

    /// Stops the flood; returns how many datagrams it sent.
    pub fn stop(self) -> Result<u64, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| BenchError::Stuck("the flood thread panicked".into()))?
    }
}

/// Datagrams the kernel dropped because the receive buffer of the UDP socket(s) bound to
/// `addr` was full (`/proc/net/udp`, `drops` column; summed over sockets sharing the port).
/// `None` if the file cannot be read or no such socket is listed.
pub fn kernel_drops(addr: SocketAddr) -> Option<u64> {
    let path = if addr.is_ipv4() {
        "/proc/net/udp"
    } else {
        "/proc/net/udp6"
    };
    let text = std::fs::read_to_string(path).ok()?;
    parse_drops(&text, addr.port())
}

/// The `drops` of every socket on local port `port` in a `/proc/net/udp` listing, summed.
fn parse_drops(text: &str, port: u16) -> Option<u64> {
    let mut found = None;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(local) = fields.get(1) else {
            continue;
        };
        let Some((_, p)) = local.rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() != Some(port) {
            continue;
        }
        let drops: u64 = fields.last()?.parse().ok()?;
        *found.get_or_insert(0) += drops;
    }
    found
}

/// The server's cost of a flood: its CPU time over the datagrams that reached its socket.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FloodCost {
    /// Datagrams the flood sent.
    pub sent: u64,
    /// Of those, dropped by the kernel (the server's receive buffer was full).
    pub kernel_drops: u64,
    /// Sent per second.
    pub sent_per_sec: f64,
    /// The server's CPU over the flood, percent of one core.
    pub server_cpu_percent: f64,
    /// Server CPU time per datagram that reached it, microseconds.
    pub cpu_us_per_datagram: f64,
}

impl FloodCost {
    /// `sent` datagrams, `drops` of them dropped by the kernel, with the server's figures
    /// before and after.
    fn of(sent: u64, drops: u64, before: &ProcSample, after: &ProcSample) -> Self {
        let secs = after.at.saturating_duration_since(before.at).as_secs_f64();
        let cpu_percent = after.cpu_percent_since(before);
        let reached = sent.saturating_sub(drops).max(1);
        Self {
            sent,
            kernel_drops: drops,
            sent_per_sec: sent as f64 / secs.max(1e-9),
            server_cpu_percent: cpu_percent,
            cpu_us_per_datagram: cpu_percent / 100.0 * secs * 1e6 / reached as f64,
        }
    }
}

/// What [`run`] does.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// The server, and its pid (its CPU time is the figure).
    pub server: SocketAddr,
    /// Its pid.
    pub server_pid: u32,
    /// What to send.
    pub kinds: Vec<Junk>,
    /// Messages the legitimate client sends in each phase (unloaded, then flooded).
    pub probes: usize,
    /// Time between two of them.
    pub probe_interval: Duration,
    /// Established, joined sessions the server holds (idle) during both phases: the cost of
    /// a junk datagram must not grow with them.
    pub sessions: usize,
    /// Sockets (swarms) those sessions share.
    pub sockets: usize,
    /// Everything (joining included) must end within this.
    pub limit: Duration,
}

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    /// What was sent.
    pub kinds: Vec<Junk>,
    /// Idle sessions the server held meanwhile.
    pub sessions: usize,
    /// The legitimate client's latency, send to its own copy, without the flood.
    pub unloaded_ms: Latency,
    /// ... and during it.
    pub flooded_ms: Latency,
    /// Flooded p99 over unloaded p99.
    pub p99_ratio: f64,
    /// Probe messages that never came back (in both phases).
    pub probes_lost: usize,
    /// What the flood cost the server.
    pub cost: FloodCost,
}

/// A legitimate client in [`crate::fanout::ROOM`]: it says a message every `interval` and
/// times each until its own copy comes back, `n` times.
async fn probe(
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    handle: &client::ClientHandle,
    n: usize,
    interval: Duration,
    limit: Instant,
) -> Result<(Vec<Duration>, usize), BenchError> {
    let mut sent: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    let mut latencies = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(interval);
    let mut said = 0;
    while latencies.len() < n && Instant::now() < limit {
        tokio::select! {
            _ = tick.tick(), if said < n => {
                let c = handle
                    .say(Target::Room(crate::fanout::ROOM.into()), format!("probe {said}"), false)
                    .await
                    .map_err(|_| BenchError::Stuck("the probe client ended".into()))?;
                sent.insert(c, Instant::now());
                said += 1;
            }
            ev = events.recv() => match ev {
                Some(Event::Message(m)) => {
                    if let Some(at) = m.c.and_then(|c| sent.remove(&c)) {
                        latencies.push(at.elapsed());
                    }
                }
                Some(Event::Fatal(why)) => return Err(BenchError::Stuck(format!("probe client: {why}"))),
                Some(_) => {}
                None => return Err(BenchError::Stuck("the probe client ended".into())),
            },
            () = tokio::time::sleep_until(limit.into()) => break,
        }
        if said == n && sent.is_empty() {
            break;
        }
    }
    Ok((latencies, sent.len()))
}

/// A legitimate client joins, measures its latency unloaded, then again while this process
/// floods the server with `config.kinds` as fast as it can; the server's CPU over the flood
/// gives its cost per junk datagram.
pub async fn run(
    config: &FloodConfig,
    progress: &indicatif::ProgressBar,
) -> Result<FloodReport, BenchError> {
    let limit = Instant::now() + config.limit;
    let held = crate::idle::hold(
        config.server,
        config.sessions,
        config.sockets,
        config.limit,
        progress,
    )
    .await?;
    let r = flood_and_probe(config, limit).await;
    held.release().await?;
    r
}

async fn flood_and_probe(config: &FloodConfig, limit: Instant) -> Result<FloodReport, BenchError> {
    let cc = crate::fanout::session_config(
        config.server,
        format!("probe{}", std::process::id()),
        crate::fanout::fresh_key(),
        true,
    );
    let (handle, mut events, _task) =
        client::spawn(cc).map_err(BenchError::io("start the probe client"))?;
    // Joined: the room's `joined` (or `presence`) has come.
    loop {
        let ev = tokio::time::timeout_at(limit.into(), events.recv())
            .await
            .map_err(|_| BenchError::Stuck("the probe client did not join in time".into()))?;
        match ev {
            Some(Event::Server(chirp_chat::wire::ServerMsg::Joined { .. })) => break,
            Some(Event::Fatal(why)) => {
                return Err(BenchError::Stuck(format!("probe client: {why}")));
            }
            Some(_) => {}
            None => return Err(BenchError::Stuck("the probe client ended".into())),
        }
    }
    let (unloaded, lost_a) = probe(
        &mut events,
        &handle,
        config.probes,
        config.probe_interval,
        limit,
    )
    .await?;
    let flood_for = config.probe_interval * u32::try_from(config.probes).unwrap_or(u32::MAX)
        + Duration::from_secs(1);
    let pool = Pool::new(
        &config.kinds,
        config.server,
        crate::fanout::fresh_key().0[0].into(),
    );
    let drops_before = kernel_drops(config.server).unwrap_or(0);
    let before = ProcSample::read(config.server_pid)?;
    let flood = Flood::start(
        pool,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        config.server,
        flood_for,
    )?;
    let probed = probe(
        &mut events,
        &handle,
        config.probes,
        config.probe_interval,
        limit,
    )
    .await;
    let sent = flood.stop()?;
    let after = ProcSample::read(config.server_pid)?;
    let (flooded, lost_b) = probed?;
    let _ = handle.finish().await;
    let drops = kernel_drops(config.server)
        .unwrap_or(0)
        .saturating_sub(drops_before);
    let latency = |mut v: Vec<Duration>| {
        v.sort_unstable();
        Latency::of_sorted(&v)
    };
    let (unloaded_ms, flooded_ms) = (latency(unloaded), latency(flooded));
    Ok(FloodReport {
        kinds: config.kinds.clone(),
        sessions: config.sessions,
        p99_ratio: flooded_ms.p99 / unloaded_ms.p99.max(1e-3),
        unloaded_ms,
        flooded_ms,
        probes_lost: lost_a + lost_b,
        cost: FloodCost::of(sent, drops, &before, &after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_holds_every_kind_well_formed() {
        let server = SocketAddr::from(([127, 0, 0, 1], 7667));
        let pool = Pool::new(&Junk::ALL, server, 7);
        assert_eq!(pool.len(), 4 * POOL_PER_KIND);
        // Interleaved: random, INITIAL, RESET, DATA, random, ...
        let [_, initial, reset, data] = [0, 1, 2, 3].map(|i| &pool.datagrams[i]);
        assert_eq!(initial[..2], [0x02, 0x01], "an INITIAL");
        assert!(initial.len() >= 1200, "padded as a client's INITIAL is");
        assert_eq!(reset.len(), 18);
        assert_eq!(reset[..2], [0x02, 0x07]);
        assert_eq!(data[..2], [0x02, 0x04]);
        assert!(data.len() > 18, "long enough to be answered with a RESET");
        // Distinct connection IDs among the INITIALs.
        let mut dcids: Vec<&[u8]> = pool.datagrams[1..]
            .iter()
            .step_by(4)
            .map(|d| &d[2..10])
            .collect();
        dcids.sort();
        dcids.dedup();
        assert_eq!(dcids.len(), POOL_PER_KIND);
    }

    #[test]
    fn drops_are_read_for_the_port() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  812: 0100007F:1DF3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123 2 0000000000000000 17\n\
  813: 0100007F:1DF3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 124 2 0000000000000000 3\n\
  900: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 125 2 0000000000000000 99\n";
        assert_eq!(
            parse_drops(text, 7667),
            Some(20),
            "both sockets on the port"
        );
        assert_eq!(parse_drops(text, 8080), Some(99));
        assert_eq!(parse_drops(text, 1), None);
    }

    #[test]
    fn a_flood_sends_and_stops() {
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = sink.local_addr().expect("addr");
        let pool = Pool::new(&[Junk::Reset], to, 1);
        let flood = Flood::start(
            pool,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            to,
            Duration::from_secs(5),
        )
        .expect("start");
        std::thread::sleep(Duration::from_millis(50));
        let sent = flood.stop().expect("stop");
        assert!(sent > 0);
        let drops = kernel_drops(to);
        assert!(drops.is_some(), "the sink's socket is listed");
    }
}
