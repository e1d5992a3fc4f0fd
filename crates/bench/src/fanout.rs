//! A room of M members, S of them sending: deliveries per second, the latency of each
//! delivery, and a check that every member got every message exactly once, in order.
//!
//! Against a cluster (several servers, the nodes of one `chirp serve --cluster`): the senders
//! connect to the first node and the other members are spread round robin over all the nodes,
//! starting with the second ([`node_of`]), so that most deliveries cross from one node to
//! another. The latency is then also given apart for the members on the senders' node and
//! for those on the others, and every node's share (members, deliveries, latency, CPU,
//! memory) is reported.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chirp_chat::client::{ClientConfig, Event, Target};
use chirp_chat::wire::ServerMsg;
use chirp_proto::handshake::StaticSecret;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::server::{CLK_TCK, CpuFigures, CpuSample, ProcSample};
use crate::swarm::{Fleet, MAX_SETUP, Scenario, Sessions, place};
use crate::{BenchError, quantile};

/// The room the members join.
pub const ROOM: &str = "#bench";

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The server, or the nodes of one cluster (see [`node_of`] for who connects where); at
    /// least one.
    pub servers: Vec<SocketAddr>,
    /// Their pids, in the same order, for their CPU time and memory (empty: not measured).
    pub server_pids: Vec<u32>,
    /// Processes the servers depend on (a database, a message bus), whose CPU time is
    /// measured over the same interval, with their descendants'
    /// ([`crate::server::tree_cpu_ticks`]).
    pub service_pids: Vec<u32>,
    /// Members of the room (each its own client session).
    pub members: usize,
    /// How many of them send (the first ones).
    pub senders: usize,
    /// Messages each sender sends.
    pub messages: usize,
    /// Messages per second each sender sends; `None`: as fast as its session queues them.
    /// Latency is measured from the moment a message is handed to the sender's session, so
    /// at full speed it includes the time it waited in the sender's own queue.
    pub rate: Option<f64>,
    /// The whole run (joining included) must end within this; what has not arrived by then
    /// is counted lost.
    pub limit: Duration,
    /// Sockets (swarms, each its own loopback address and thread) the members share.
    pub sockets: usize,
}

/// Latency from a send to a delivery, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// The p50, p99 and largest of `sorted` (ascending), in milliseconds; zeros if empty.
    pub fn of_sorted(sorted: &[Duration]) -> Self {
        let ms = |q: f64| quantile(sorted, q).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        Self {
            p50: ms(0.5),
            p99: ms(0.99),
            max: ms(1.0),
        }
    }
}

/// The server's figures over the fan-out (of a cluster: the sum over its nodes).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerFigures {
    /// CPU used while the messages went out, percent of one core (a cluster's nodes
    /// together may use more than one).
    pub cpu_percent: f64,
    /// ... in seconds of CPU time.
    pub cpu_s: f64,
    /// Resident memory when the members had joined, KiB.
    pub rss_kib_joined: u64,
    /// ... and at the end.
    pub rss_kib_end: u64,
}

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    /// Room size.
    pub members: usize,
    /// Senders among them.
    pub senders: usize,
    /// Messages per sender.
    pub messages: usize,
    /// Deliveries expected: every sender's messages to every other member.
    pub expected: u64,
    /// Deliveries that arrived (in order, once).
    pub delivered: u64,
    /// Expected and never arrived.
    pub lost: u64,
    /// Arrived again.
    pub duplicated: u64,
    /// Arrived after one sent later by the same sender.
    pub reordered: u64,
    /// From the first send to the last delivery, seconds.
    pub elapsed_s: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_sec: f64,
    /// Send to delivery.
    pub latency_ms: Latency,
    /// Datagrams the members' sockets received over the whole run (joining included).
    pub datagrams_in: u64,
    /// The server's CPU and memory, if its pid was given; of a cluster, the sum over its
    /// nodes (every node's pid must be given).
    pub server: Option<ServerFigures>,
    /// Against a cluster: the latency to the members on the senders' node (the first)...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_same_node_ms: Option<Latency>,
    /// ... and to those on the other nodes: the message crossed from one node to another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_other_nodes_ms: Option<Latency>,
    /// Against a cluster: each node's share, in the order the servers were given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeReport>,
    /// The services' CPU over the fan-out, if their pids were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<CpuFigures>,
    /// This process's (the load generator's: every member's session) over the fan-out.
    pub load_generator: CpuFigures,
}

/// One node's share of a fan-out against a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Where it listens.
    pub server: SocketAddr,
    /// Members connected to it (the senders among them, on the first).
    pub members: usize,
    /// Deliveries to its members.
    pub delivered: u64,
    /// Send (on the first node) to delivery on this one.
    pub latency_ms: Latency,
    /// Its CPU and memory, if its pid was given.
    pub figures: Option<ServerFigures>,
}

/// Which of `servers` servers member `n` connects to, with `senders` senders (members
/// `0..senders`): the senders to the first; the other members round robin over all of them,
/// starting with the second, so that the nodes hold as many members as can be and most
/// deliveries cross nodes. With one server, that one.
pub fn node_of(n: usize, senders: usize, servers: usize) -> usize {
    if servers <= 1 || n < senders {
        0
    } else {
        (n - senders + 1) % servers
    }
}

impl FanoutReport {
    /// Every message reached every member exactly once, in order.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0
    }
}

/// What one member saw.
#[derive(Debug, Default)]
struct Seen {
    /// The server it is connected to (see [`node_of`]).
    node: usize,
    latencies_us: Vec<u64>,
    delivered: u64,
    duplicated: u64,
    reordered: u64,
    last_at: Option<Instant>,
}

pub(crate) fn fresh_key() -> StaticSecret {
    let mut k = [0u8; 32];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&chirp_transport::random_seed().to_le_bytes());
    }
    StaticSecret(k)
}

/// A bench session's configuration: `nick` with `identity`, in [`ROOM`] if `join`. (Its
/// `bind` is unused: a swarm runs it on its own socket.)
pub(crate) fn session_config(
    server: SocketAddr,
    nick: String,
    identity: StaticSecret,
    join: bool,
) -> ClientConfig {
    let mut c = ClientConfig::new(server, nick);
    c.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    if join {
        c.rooms = vec![ROOM.into()];
    }
    c.identity = Some(identity);
    c
}

/// The first failure any swarm of a run met (a session that could not go on).
#[derive(Debug, Default)]
pub(crate) struct Failure(Mutex<Option<String>>);

impl Failure {
    /// Records `why`, unless a failure is recorded already.
    pub(crate) fn set(&self, why: String) {
        if let Ok(mut f) = self.0.lock() {
            f.get_or_insert(why);
        }
    }

    /// The failure recorded, if any.
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|f| f.clone())
    }
}

/// Nicks of one run: a random prefix, so that a server that outlives the run (`--server`)
/// does not find them bound to the keys of an earlier run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Nicks(u32);

impl Nicks {
    pub(crate) fn new() -> Self {
        Self(chirp_transport::random_seed() as u32)
    }

    pub(crate) fn get(self, i: usize) -> String {
        format!("b{:08x}x{i}", self.0)
    }
}

/// What the swarms of one run share with the thread that runs it.
#[derive(Debug, Default)]
struct Shared {
    /// Members that have joined.
    joined: AtomicUsize,
    /// Members that have every message they expect.
    complete: AtomicUsize,
    /// Set once every member has joined: the time sends are measured from.
    epoch: OnceLock<Instant>,
    /// The run is over (everything arrived, or the limit passed).
    done: AtomicBool,
    failure: Failure,
}

/// One member, in the swarm that runs it.
#[derive(Debug)]
struct Member {
    /// Its number in the room (senders first).
    n: usize,
    own: String,
    joined: bool,
    want: u64,
    /// Per sender: which messages arrived, and the highest number so far.
    got: Vec<Vec<bool>>,
    highest: Vec<Option<u64>>,
    seen: Seen,
    /// A sender: its next message, and when it goes (with a rate).
    next: usize,
    next_at: Option<Instant>,
}

/// One swarm's part of the fan-out.
struct Fanout {
    shared: Arc<Shared>,
    progress: ProgressBar,
    senders: usize,
    messages: usize,
    /// Between two messages of a sender, with a rate.
    gap: Option<Duration>,
    /// By session index.
    members: Vec<Option<Member>>,
    /// The session indices of its senders (a few): what the timer looks at.
    sending: Vec<usize>,
    started: bool,
}

impl Fanout {
    /// Sender `i` says its messages due at `now`: all of them without a rate.
    fn send(&mut self, now: Instant, i: usize, sessions: &mut Sessions) {
        let Some(epoch) = self.shared.epoch.get().copied() else {
            return;
        };
        let Some(m) = self.members.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        while m.next < self.messages && m.next_at.is_none_or(|at| at <= now) {
            // Latency counts from the moment the message is handed to the session.
            let t = now.saturating_duration_since(epoch).as_micros();
            let text = format!("{} {} {t}", m.n, m.next);
            m.next += 1;
            if sessions
                .say(now, i, Target::Room(ROOM.into()), text)
                .is_none()
            {
                m.next = self.messages; // Its session has ended.
            }
            if let Some(gap) = self.gap {
                m.next_at = Some(m.next_at.unwrap_or(now) + gap);
            }
        }
    }

    /// Member `i` got `text` in the room.
    fn receive(&mut self, i: usize, text: &str) {
        let now = Instant::now();
        let Some(epoch) = self.shared.epoch.get().copied() else {
            return;
        };
        let Some(m) = self.members.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut f = text.split(' ').map(str::parse::<u64>);
        let (Some(Ok(s)), Some(Ok(k)), Some(Ok(t))) = (f.next(), f.next(), f.next()) else {
            return; // Not one of ours.
        };
        let Some(s) = usize::try_from(s).ok().filter(|&s| s < self.senders) else {
            return;
        };
        let Some(slot) = usize::try_from(k).ok().and_then(|k| m.got[s].get_mut(k)) else {
            return;
        };
        let seen = &mut m.seen;
        if std::mem::replace(slot, true) {
            seen.duplicated += 1;
            return;
        }
        if m.highest[s].is_some_and(|h| k < h) {
            seen.reordered += 1;
        }
        m.highest[s] = m.highest[s].max(Some(k));
        seen.delivered += 1;
        seen.last_at = Some(now);
        let sent = epoch + Duration::from_micros(t);
        seen.latencies_us.push(
            u64::try_from(now.saturating_duration_since(sent).as_micros()).unwrap_or(u64::MAX),
        );
        self.progress.inc(1);
        if seen.delivered == m.want {
            self.shared.complete.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn is_sending(&self, m: &Member) -> bool {
        m.n < self.senders && m.next < self.messages
    }
}

impl Scenario for Fanout {
    fn on_event(&mut self, _now: Instant, i: usize, event: Event, _: &mut Sessions) {
        let Some(m) = self.members.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        match event {
            Event::Server(ServerMsg::Joined { .. }) if !m.joined => {
                m.joined = true;
                self.shared.joined.fetch_add(1, Ordering::Relaxed);
            }
            Event::Message(msg) if !msg.history && msg.from != m.own => {
                self.receive(i, &msg.text);
            }
            Event::Fatal(why) => self.shared.failure.set(format!("member {}: {why}", m.n)),
            _ => {}
        }
    }

    fn poke(&mut self, now: Instant, sessions: &mut Sessions) {
        if self.started || self.shared.epoch.get().is_none() {
            return;
        }
        self.started = true;
        for k in 0..self.sending.len() {
            self.send(now, self.sending[k], sessions);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // Only with a rate; its senders only.
        self.gap?;
        self.sending
            .iter()
            .filter_map(|&i| self.members.get(i)?.as_ref())
            .filter(|m| self.is_sending(m))
            .filter_map(|m| m.next_at)
            .min()
    }

    fn handle_timeout(&mut self, now: Instant, sessions: &mut Sessions) {
        for k in 0..self.sending.len() {
            let i = self.sending[k];
            let due = self.members[i]
                .as_ref()
                .is_some_and(|m| self.is_sending(m) && m.next_at.is_some_and(|t| t <= now));
            if due {
                self.send(now, i, sessions);
            }
        }
    }

    fn is_done(&self) -> bool {
        self.shared.done.load(Ordering::Acquire)
    }
}

/// Waits until `count` of `shared` reaches `members`, a member fails, or `deadline` passes.
async fn wait_for(
    shared: &Shared,
    members: usize,
    deadline: Instant,
    what: &str,
    count: impl Fn(&Shared) -> usize,
) -> Result<(), BenchError> {
    loop {
        let n = count(shared);
        if n >= members {
            return Ok(());
        }
        if let Some(why) = shared.failure.get() {
            return Err(BenchError::Stuck(why));
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Stuck(format!(
                "{} of {members} members {what} within the limit",
                members - n
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the fan-out: connects and joins the members, lets the senders go, and waits until
/// every member has every message or the limit passes. `progress` counts deliveries.
pub async fn run(
    config: &FanoutConfig,
    progress: &ProgressBar,
) -> Result<FanoutReport, BenchError> {
    let deadline = Instant::now() + config.limit;
    let senders = config.senders.min(config.members);
    let nicks = Nicks::new();
    let shared = Arc::new(Shared::default());
    let expected_per_member = move |n: usize, messages: usize| {
        let from = if n < senders { senders - 1 } else { senders };
        (from * messages) as u64
    };
    let expected: u64 = (0..config.members)
        .map(|n| expected_per_member(n, config.messages))
        .sum();
    let Some(&first) = config.servers.first() else {
        return Err(BenchError::Stuck(
            "no server to run the fan-out against".into(),
        ));
    };
    let pids = &config.server_pids;
    if !pids.is_empty() && pids.len() != config.servers.len() {
        return Err(BenchError::Stuck(format!(
            "{} server pids for {} servers: give one per server, in the same order",
            pids.len(),
            config.servers.len()
        )));
    }
    let mut template = session_config(first, nicks.get(0), fresh_key(), true);
    template.pace = false;
    let sockets = config.sockets.max(1);
    let fleet = Fleet::start(sockets, &template, config.members, MAX_SETUP, |k| {
        let scenario = Fanout {
            shared: Arc::clone(&shared),
            progress: progress.clone(),
            senders,
            messages: config.messages,
            gap: config
                .rate
                .map(|r| Duration::from_secs_f64(1.0 / r.max(1e-3))),
            members: Vec::new(),
            sending: Vec::new(),
            started: false,
        };
        let (servers, total, messages) = (config.servers.clone(), config.members, config.messages);
        let setup = move |me: &mut Fanout, sessions: &mut Sessions| {
            for n in (0..total).filter(|&n| place(n, sockets) == k) {
                let node = node_of(n, senders, servers.len());
                let mut c = session_config(servers[node], nicks.get(n), fresh_key(), true);
                c.pace = false;
                let i = sessions.add(c);
                if me.members.len() <= i {
                    me.members.resize_with(i + 1, || None);
                }
                if n < senders {
                    me.sending.push(i);
                }
                let want = expected_per_member(n, messages);
                if want == 0 {
                    me.shared.complete.fetch_add(1, Ordering::Relaxed);
                }
                me.members[i] = Some(Member {
                    n,
                    own: nicks.get(n),
                    joined: false,
                    want,
                    got: vec![vec![false; messages]; senders],
                    highest: vec![None; senders],
                    seen: Seen {
                        node,
                        ..Seen::default()
                    },
                    next: 0,
                    next_at: None,
                });
            }
        };
        (scenario, setup)
    })?;
    let joined_count = |s: &Shared| s.joined.load(Ordering::Relaxed);
    let all_joined = wait_for(
        &shared,
        config.members,
        deadline,
        "did not join",
        joined_count,
    );
    if let Err(e) = all_joined.await {
        fleet.shut_down().await?;
        return Err(e);
    }
    let joined = read_all(pids)?;
    let services_joined = CpuSample::read(&config.service_pids)?;
    let me = std::process::id();
    let load_joined = ProcSample::read(me)?;
    progress.set_length(expected);
    let epoch = Instant::now();
    let _ = shared.epoch.set(epoch);
    fleet.poke();
    // What has not arrived by the limit is counted lost (and a failed member shows as such).
    let complete_count = |s: &Shared| s.complete.load(Ordering::Relaxed);
    let _ = wait_for(
        &shared,
        config.members,
        deadline,
        "were not complete",
        complete_count,
    )
    .await;
    shared.done.store(true, Ordering::Release);
    fleet.stop();
    let end = read_all(pids)?;
    let services_end = CpuSample::read(&config.service_pids)?;
    let load_end = ProcSample::read(me)?;
    let parts = fleet.join().await?;
    let datagrams_in = parts.iter().map(|(_, stats)| stats.datagrams_in).sum();
    let seen: Vec<Seen> = parts
        .into_iter()
        .flat_map(|(f, _)| f.members.into_iter().flatten().map(|m| m.seen))
        .collect();
    let last = seen.iter().filter_map(|s| s.last_at).max().unwrap_or(epoch);
    let elapsed = last.saturating_duration_since(epoch).as_secs_f64();
    let delivered: u64 = seen.iter().map(|s| s.delivered).sum();
    let latency_of = |keep: &dyn Fn(&Seen) -> bool| {
        let mut lat: Vec<u64> = seen
            .iter()
            .filter(|s| keep(s))
            .flat_map(|s| s.latencies_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let ms = |q: f64| quantile(&lat, q).map_or(0.0, |us| us as f64 / 1000.0);
        Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            max: ms(1.0),
        }
    };
    let figures: Vec<ServerFigures> = joined
        .iter()
        .zip(&end)
        .map(|(a, b)| ServerFigures {
            cpu_percent: b.cpu_percent_since(a),
            cpu_s: b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / CLK_TCK,
            rss_kib_joined: a.rss_kib,
            rss_kib_end: b.rss_kib,
        })
        .collect();
    let cluster = config.servers.len() > 1;
    let nodes = if cluster {
        config
            .servers
            .iter()
            .enumerate()
            .map(|(k, &server)| NodeReport {
                server,
                members: seen.iter().filter(|s| s.node == k).count(),
                delivered: seen
                    .iter()
                    .filter(|s| s.node == k)
                    .map(|s| s.delivered)
                    .sum(),
                latency_ms: latency_of(&|s: &Seen| s.node == k),
                figures: figures.get(k).copied(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(FanoutReport {
        members: config.members,
        senders,
        messages: config.messages,
        expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated: seen.iter().map(|s| s.duplicated).sum(),
        reordered: seen.iter().map(|s| s.reordered).sum(),
        elapsed_s: elapsed,
        deliveries_per_sec: if elapsed > 0.0 {
            delivered as f64 / elapsed
        } else {
            0.0
        },
        latency_ms: latency_of(&|_: &Seen| true),
        datagrams_in,
        server: (!figures.is_empty()).then(|| {
            figures
                .iter()
                .fold(ServerFigures::default(), |t, f| ServerFigures {
                    cpu_percent: t.cpu_percent + f.cpu_percent,
                    cpu_s: t.cpu_s + f.cpu_s,
                    rss_kib_joined: t.rss_kib_joined + f.rss_kib_joined,
                    rss_kib_end: t.rss_kib_end + f.rss_kib_end,
                })
        }),
        latency_same_node_ms: cluster.then(|| latency_of(&|s: &Seen| s.node == 0)),
        latency_other_nodes_ms: cluster.then(|| latency_of(&|s: &Seen| s.node != 0)),
        nodes,
        services: (!config.service_pids.is_empty()).then(|| services_end.since(&services_joined)),
        load_generator: CpuFigures {
            cpu_percent: load_end.cpu_percent_since(&load_joined),
            cpu_s: load_end.cpu_ticks.saturating_sub(load_joined.cpu_ticks) as f64 / CLK_TCK,
        },
    })
}

/// Every process's figures now, in order.
fn read_all(pids: &[u32]) -> Result<Vec<ProcSample>, BenchError> {
    pids.iter().map(|&p| ProcSample::read(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_go_to_the_first_node_and_the_others_round_robin() {
        // One server: everyone on it.
        assert!((0..10).all(|n| node_of(n, 2, 1) == 0));
        // Two servers, one sender: 10 members each side of 20.
        let nodes: Vec<usize> = (0..20).map(|n| node_of(n, 1, 2)).collect();
        assert_eq!(&nodes[..5], &[0, 1, 0, 1, 0]);
        assert_eq!(nodes.iter().filter(|&&k| k == 0).count(), 10);
        // Three servers, two senders: the senders on the first, then 1, 2, 0, 1, ...
        let nodes: Vec<usize> = (0..8).map(|n| node_of(n, 2, 3)).collect();
        assert_eq!(nodes, [0, 0, 1, 2, 0, 1, 2, 0]);
    }
}
