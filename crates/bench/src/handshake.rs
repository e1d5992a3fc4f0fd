//! New sessions per second: each opens a connection (Noise XX handshake, address validation),
//! says `hello` and waits for `welcome`, then leaves; a fixed number are in setup at once.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_chat::client::Event;
use chirp_proto::handshake::StaticSecret;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::BenchError;
use crate::fanout::{Latency, Nicks, fresh_key, session_config};
use crate::server::ProcSample;
use crate::swarm::{Fleet, Scenario, Sessions, place};

/// What to run.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// The server.
    pub server: SocketAddr,
    /// Its pid, for its CPU and memory (`None`: not measured).
    pub server_pid: Option<u32>,
    /// Sessions to set up in all.
    pub sessions: usize,
    /// At most this many in setup at once. They take turns with this many identities (and
    /// nicks), so that after the first round no session claims a new nick: what is measured
    /// is session setup, not the database's nick writes.
    pub concurrency: usize,
    /// A session not welcomed within this counts as failed.
    pub timeout: Duration,
    /// Sockets (swarms, each its own loopback address and thread) the sessions share; no
    /// more than `concurrency`.
    pub sockets: usize,
}

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct HandshakeReport {
    /// Sessions attempted.
    pub sessions: usize,
    /// Welcomed.
    pub completed: usize,
    /// Not welcomed in time (or refused).
    pub failed: usize,
    /// From the first attempt to the last welcome, seconds.
    pub elapsed_s: f64,
    /// Completed sessions per second over that time.
    pub sessions_per_sec: f64,
    /// From starting the client to `welcome`: socket, handshake, `hello`.
    pub setup_ms: Latency,
    /// Server CPU over the run, percent of one core (if its pid was given).
    pub server_cpu_percent: Option<f64>,
}

/// One swarm's part: its lanes each set up one session at a time, one after another.
struct Handshake {
    server: SocketAddr,
    timeout: Duration,
    progress: ProgressBar,
    /// Each lane's nick and key.
    lanes: Vec<(String, StaticSecret)>,
    /// Sessions still to start.
    left: usize,
    /// Sessions in setup: their lane and start.
    in_flight: HashMap<usize, (usize, Instant)>,
    /// Their deadlines.
    timers: BTreeSet<(Instant, usize)>,
    setups: Vec<Duration>,
    failed: usize,
    last: Option<Instant>,
}

impl Handshake {
    /// Starts the next session on `lane`, if any is left.
    fn start(&mut self, now: Instant, lane: usize, sessions: &mut Sessions) {
        if self.left == 0 {
            return;
        }
        self.left -= 1;
        let Some((nick, key)) = self.lanes.get(lane) else {
            return;
        };
        let c = session_config(self.server, nick.clone(), key.clone(), false);
        let i = sessions.add(c);
        self.in_flight.insert(i, (lane, now));
        self.timers.insert((now + self.timeout, i));
    }

    /// Session `i` is out of setup: welcomed (`ok`) or not.
    fn ended_setup(&mut self, i: usize, ok: bool, sessions: &mut Sessions) {
        let Some((lane, t0)) = self.in_flight.remove(&i) else {
            return;
        };
        let now = Instant::now();
        self.timers.remove(&(t0 + self.timeout, i));
        if ok {
            self.setups.push(now.saturating_duration_since(t0));
            self.last = self.last.max(Some(now));
        } else {
            self.failed += 1;
        }
        self.progress.inc(1);
        // Leaving: the session says goodbye and closes on its own.
        sessions.finish(now, i);
        self.start(now, lane, sessions);
    }
}

impl Scenario for Handshake {
    fn on_event(&mut self, _now: Instant, i: usize, event: Event, sessions: &mut Sessions) {
        match event {
            Event::Welcome { .. } => self.ended_setup(i, true, sessions),
            Event::Fatal(_) | Event::Finished { .. } => self.ended_setup(i, false, sessions),
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    fn handle_timeout(&mut self, now: Instant, sessions: &mut Sessions) {
        while let Some(&(t, i)) = self.timers.first() {
            if t > now {
                return;
            }
            self.ended_setup(i, false, sessions);
        }
    }

    fn is_done(&self) -> bool {
        self.left == 0 && self.in_flight.is_empty()
    }
}

/// Sets up `config.sessions` sessions, `config.concurrency` at a time.
pub async fn run(
    config: &HandshakeConfig,
    progress: &ProgressBar,
) -> Result<HandshakeReport, BenchError> {
    let concurrency = config.concurrency.clamp(1, config.sessions.max(1));
    let sockets = config.sockets.clamp(1, concurrency);
    let keys: Vec<_> = (0..concurrency).map(|_| fresh_key()).collect();
    let nicks = Nicks::new();
    let before = ProcSample::read_opt(config.server_pid)?;
    progress.set_length(config.sessions as u64);
    let template = session_config(config.server, nicks.get(0), keys[0].clone(), false);
    let start = Instant::now();
    // Lane `j` (and session `j`, `j + concurrency`, ...) is the swarm `place(j)`'s.
    // Room in each endpoint for every session of the run: a session that left is still
    // closing while its lane's next one connects, and a full endpoint would refuse that one
    // (it would retry after its backoff, a quarter of a second).
    let fleet = Fleet::start(
        sockets,
        &template,
        config.sessions.max(concurrency),
        concurrency + sockets,
        |k| {
            let lanes: Vec<_> = (0..concurrency)
                .filter(|&j| place(j, sockets) == k)
                .map(|j| (nicks.get(j), keys[j].clone()))
                .collect();
            let left = (0..config.sessions)
                .filter(|&i| place(i % concurrency, sockets) == k)
                .count();
            let scenario = Handshake {
                server: config.server,
                timeout: config.timeout,
                progress: progress.clone(),
                lanes,
                left,
                in_flight: HashMap::new(),
                timers: BTreeSet::new(),
                setups: Vec::new(),
                failed: 0,
                last: None,
            };
            let setup = |me: &mut Handshake, sessions: &mut Sessions| {
                let now = Instant::now();
                for lane in 0..me.lanes.len() {
                    me.start(now, lane, sessions);
                }
            };
            (scenario, setup)
        },
    )?;
    let parts = fleet.join().await?;
    let after = ProcSample::read_opt(config.server_pid)?;
    let mut setups: Vec<Duration> = Vec::with_capacity(config.sessions);
    let mut failed = 0;
    let mut last = start;
    for (h, _) in parts {
        setups.extend_from_slice(&h.setups);
        failed += h.failed;
        last = last.max(h.last.unwrap_or(start));
    }
    let elapsed = last.saturating_duration_since(start).as_secs_f64();
    setups.sort_unstable();
    Ok(HandshakeReport {
        sessions: config.sessions,
        completed: setups.len(),
        failed,
        elapsed_s: elapsed,
        sessions_per_sec: if elapsed > 0.0 {
            setups.len() as f64 / elapsed
        } else {
            0.0
        },
        setup_ms: Latency::of_sorted(&setups),
        server_cpu_percent: before.zip(after).map(|(a, b)| b.cpu_percent_since(&a)),
    })
}
