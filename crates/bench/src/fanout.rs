//! A room of M members, S of them sending: deliveries per second, the latency of each
//! delivery, and a check that every member got every message exactly once, in order.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_chat::client::{self, ClientConfig, ClientHandle, Event, Target};
use chirp_chat::wire::ServerMsg;
use chirp_proto::handshake::StaticSecret;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::server::ProcSample;
use crate::{BenchError, quantile};

/// The room the members join.
pub const ROOM: &str = "#bench";

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutConfig {
    /// The server.
    pub server: SocketAddr,
    /// Its pid, for its CPU time and memory (`None`: not measured).
    pub server_pid: Option<u32>,
    /// Members of the room (each its own client session and socket).
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

/// The server's figures over the fan-out.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServerFigures {
    /// CPU used while the messages went out, percent of one core.
    pub cpu_percent: f64,
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
    /// The server's CPU and memory, if its pid was given.
    pub server: Option<ServerFigures>,
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

/// A bench session's configuration: from 127.0.0.1 (any port) with `identity`, in [`ROOM`]
/// if `join`.
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

/// Runs the fan-out: connects and joins the members, lets the senders go, and waits until
/// every member has every message or the limit passes. `progress` counts deliveries.
pub async fn run(
    config: &FanoutConfig,
    progress: &ProgressBar,
) -> Result<FanoutReport, BenchError> {
    let deadline = tokio::time::Instant::now() + config.limit;
    let senders = config.senders.min(config.members);
    let nicks = Nicks::new();
    let mut clients = Vec::with_capacity(config.members);
    for i in 0..config.members {
        let mut c = session_config(config.server, nicks.get(i), fresh_key(), true);
        c.pace = false;
        clients.push(client::spawn(c).map_err(BenchError::io("start a client session"))?);
    }
    for (i, (_, ev, _)) in clients.iter_mut().enumerate() {
        wait_joined(ev, deadline)
            .await
            .map_err(|e| BenchError::Stuck(format!("member {i}: {e}")))?;
    }
    let joined = ProcSample::read_opt(config.server_pid)?;
    let expected_per_member = |i: usize| {
        let from = if i < senders { senders - 1 } else { senders };
        (from * config.messages) as u64
    };
    let expected: u64 = (0..config.members).map(expected_per_member).sum();
    progress.set_length(expected);
    let epoch = Instant::now();
    let mut handles: Vec<ClientHandle> = Vec::with_capacity(config.members);
    let mut members = Vec::with_capacity(config.members);
    // Members say when they have all they expect, and keep reading until told to stop: a
    // session whose events nobody reads ends (the sender's would, expecting nothing).
    let (complete_tx, mut complete_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    for (i, (h, ev, task)) in clients.into_iter().enumerate() {
        handles.push(h);
        let member = Member {
            own: nicks.get(i),
            senders,
            messages: config.messages,
            want: expected_per_member(i),
            epoch,
            progress: progress.clone(),
            complete: complete_tx.clone(),
            stop: stop_rx.clone(),
        };
        members.push((tokio::spawn(member.receive(ev)), task));
    }
    drop(complete_tx);
    let mut sends = Vec::new();
    for (s, h) in handles.iter().take(senders).enumerate() {
        let h = h.clone();
        let messages = config.messages;
        let mut tick = config
            .rate
            .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(1e-3))));
        sends.push(tokio::spawn(async move {
            for k in 0..messages {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let t = epoch.elapsed().as_micros();
                let text = format!("{s} {k} {t}");
                if h.say(Target::Room(ROOM.into()), text, false).await.is_err() {
                    return;
                }
            }
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let mut complete = 0;
    while complete < config.members {
        match tokio::time::timeout_at(deadline, complete_rx.recv()).await {
            Ok(Some(())) => complete += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let _ = stop_tx.send(true);
    let mut seen = Vec::with_capacity(members.len());
    for (m, _task) in members {
        seen.push(
            m.await
                .map_err(|_| BenchError::Stuck("a member task panicked".into()))?,
        );
    }
    let end = ProcSample::read_opt(config.server_pid)?;
    drop(handles);
    let last = seen.iter().filter_map(|s| s.last_at).max().unwrap_or(epoch);
    let elapsed = last.saturating_duration_since(epoch).as_secs_f64();
    let delivered: u64 = seen.iter().map(|s| s.delivered).sum();
    let mut lat: Vec<u64> = seen
        .iter()
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let ms = |q: f64| quantile(&lat, q).map_or(0.0, |us| us as f64 / 1000.0);
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
        latency_ms: Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            max: ms(1.0),
        },
        server: joined.zip(end).map(|(a, b)| ServerFigures {
            cpu_percent: b.cpu_percent_since(&a),
            rss_kib_joined: a.rss_kib,
            rss_kib_end: b.rss_kib,
        }),
    })
}

pub(crate) async fn wait_joined(
    ev: &mut mpsc::Receiver<Event>,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    loop {
        match tokio::time::timeout_at(deadline, ev.recv()).await {
            Ok(Some(Event::Server(ServerMsg::Joined { .. }))) => return Ok(()),
            Ok(Some(Event::Fatal(why))) => return Err(why),
            Ok(Some(_)) => {}
            Ok(None) => return Err("its session ended".into()),
            Err(_) => return Err("did not join within the limit".into()),
        }
    }
}

/// One member's reader.
struct Member {
    own: String,
    senders: usize,
    messages: usize,
    want: u64,
    epoch: Instant,
    progress: ProgressBar,
    complete: mpsc::UnboundedSender<()>,
    stop: watch::Receiver<bool>,
}

impl Member {
    /// Checks that each sender's messages arrive once and in order, and times them; says so
    /// on `complete` once it has all it expects, and reads on until `stop`.
    async fn receive(mut self, mut ev: mpsc::Receiver<Event>) -> Seen {
        let mut seen = Seen::default();
        // Per sender: which messages arrived, and the highest number so far.
        let mut got = vec![vec![false; self.messages]; self.senders];
        let mut highest: Vec<Option<u64>> = vec![None; self.senders];
        if self.want == 0 {
            let _ = self.complete.send(());
        }
        loop {
            let m = tokio::select! {
                e = ev.recv() => match e {
                    Some(Event::Message(m)) if !m.history && m.from != self.own => m,
                    Some(_) => continue,
                    None => break,
                },
                _ = self.stop.changed() => break,
            };
            let now = Instant::now();
            let mut f = m.text.split(' ').map(str::parse::<u64>);
            let (Some(Ok(s)), Some(Ok(k)), Some(Ok(t))) = (f.next(), f.next(), f.next()) else {
                continue; // Not one of ours.
            };
            let Some(s) = usize::try_from(s).ok().filter(|&s| s < self.senders) else {
                continue;
            };
            let Some(slot) = usize::try_from(k).ok().and_then(|k| got[s].get_mut(k)) else {
                continue;
            };
            if std::mem::replace(slot, true) {
                seen.duplicated += 1;
                continue;
            }
            if highest[s].is_some_and(|h| k < h) {
                seen.reordered += 1;
            }
            highest[s] = highest[s].max(Some(k));
            seen.delivered += 1;
            seen.last_at = Some(now);
            let sent = self.epoch + Duration::from_micros(t);
            seen.latencies_us.push(
                u64::try_from(now.saturating_duration_since(sent).as_micros()).unwrap_or(u64::MAX),
            );
            self.progress.inc(1);
            if seen.delivered == self.want {
                let _ = self.complete.send(());
            }
        }
        seen
    }
}
