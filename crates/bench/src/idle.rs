//! N established, joined sessions held open and idle: the server's memory per session above
//! its empty baseline, and its CPU while they idle (keep-alives included).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chirp_chat::client::Event;
use chirp_chat::wire::ServerMsg;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::BenchError;
use crate::fanout::{Failure, Nicks, ROOM, fresh_key, session_config};
use crate::server::ProcSample;
use crate::swarm::{Fleet, MAX_SETUP, Scenario, Sessions, place};

/// Members per room of the idle sessions: each joins `#bench-K`, K = its number / this. The
/// joins' presence goes to every member of the room: with rooms of 1,000 the server fell
/// behind serving it at 30,000 sessions and dropped connections (clients saw RESETs), and one
/// room of 100,000 would measure nothing but that, not idle sessions.
pub const ROOM_MEMBERS: usize = 100;

/// What to run.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The server.
    pub server: SocketAddr,
    /// Its pid: this scenario is about its memory and CPU.
    pub server_pid: u32,
    /// Sessions to hold.
    pub sessions: usize,
    /// How long to watch them idle.
    pub idle: Duration,
    /// Joining must end within this.
    pub limit: Duration,
    /// Sockets (swarms, each its own loopback address and thread) the sessions share.
    pub sockets: usize,
}

/// What [`run`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Sessions established and joined.
    pub sessions: usize,
    /// Seconds they took to join, all together.
    pub join_s: f64,
    /// Server RSS before the first connected, KiB.
    pub rss_kib_empty: u64,
    /// ... once all had joined (and idled), KiB.
    pub rss_kib_held: u64,
    /// (held − empty) / sessions, bytes.
    pub bytes_per_session: f64,
    /// Server CPU over the idle period, percent of one core.
    pub idle_cpu_percent: f64,
    /// Seconds watched.
    pub idle_s: f64,
}

/// One swarm's part: its sessions join and idle; it counts the joined.
struct Idle {
    joined: Arc<AtomicUsize>,
    failure: Arc<Failure>,
    progress: ProgressBar,
    /// Global number of each of its sessions, and whether it has joined.
    sessions: Vec<(usize, bool)>,
}

impl Scenario for Idle {
    fn on_event(&mut self, _now: Instant, i: usize, event: Event, _: &mut Sessions) {
        let Some((n, joined)) = self.sessions.get_mut(i) else {
            return;
        };
        match event {
            Event::Server(ServerMsg::Joined { .. }) if !*joined => {
                *joined = true;
                self.joined.fetch_add(1, Ordering::Relaxed);
                self.progress.inc(1);
            }
            Event::Fatal(why) => self.failure.set(format!("session {n}: {why}")),
            Event::Disconnected { reason, .. } => {
                tracing::debug!(session = n, %reason, "disconnected");
            }
            _ => {}
        }
    }

    fn is_done(&self) -> bool {
        false
    }
}

/// Sessions established and joined, held open (idle) until [`Held::release`].
pub struct Held {
    fleet: Fleet<Idle>,
    /// How long they took to join, all together.
    pub joined_in: Duration,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("joined_in", &self.joined_in)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Ends every session (gracefully) and stops the swarms.
    pub async fn release(self) -> Result<(), BenchError> {
        self.fleet.shut_down().await.map(|_| ())
    }
}

/// Connects `sessions` sessions to `server` on `sockets` swarms, each joined to a room of
/// [`ROOM_MEMBERS`], and returns once all have joined (or fails by `limit`).
pub async fn hold(
    server: SocketAddr,
    sessions: usize,
    sockets: usize,
    limit: Duration,
    progress: &ProgressBar,
) -> Result<Held, BenchError> {
    let deadline = Instant::now() + limit;
    progress.set_length(sessions as u64);
    let start = Instant::now();
    let nicks = Nicks::new();
    let joined = Arc::new(AtomicUsize::new(0));
    let failure = Arc::new(Failure::default());
    let template = session_config(server, nicks.get(0), fresh_key(), true);
    let sockets = sockets.max(1);
    let fleet = Fleet::start(sockets, &template, sessions, MAX_SETUP, |k| {
        let scenario = Idle {
            joined: Arc::clone(&joined),
            failure: Arc::clone(&failure),
            progress: progress.clone(),
            sessions: Vec::new(),
        };
        let total = sessions;
        let setup = move |me: &mut Idle, s: &mut Sessions| {
            for n in (0..total).filter(|&n| place(n, sockets) == k) {
                let mut c = session_config(server, nicks.get(n), fresh_key(), true);
                c.rooms = vec![format!("{ROOM}-{}", n / ROOM_MEMBERS)];
                let i = s.add(c);
                if me.sessions.len() <= i {
                    me.sessions.resize(i + 1, (0, false));
                }
                me.sessions[i] = (n, false);
            }
        };
        (scenario, setup)
    })?;
    let all_joined = loop {
        if joined.load(Ordering::Relaxed) >= sessions {
            break Ok(());
        }
        if let Some(why) = failure.get() {
            break Err(BenchError::Stuck(why));
        }
        if Instant::now() >= deadline {
            break Err(BenchError::Stuck(format!(
                "{} of {} sessions did not join within the limit",
                sessions - joined.load(Ordering::Relaxed),
                sessions
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Err(e) = all_joined {
        fleet.shut_down().await?;
        return Err(e);
    }
    Ok(Held {
        fleet,
        joined_in: start.elapsed(),
    })
}

/// Connects and joins `sessions` sessions, then watches the server while they idle.
pub async fn run(config: &IdleConfig, progress: &ProgressBar) -> Result<IdleReport, BenchError> {
    let empty = ProcSample::read(config.server_pid)?;
    let held = hold(
        config.server,
        config.sessions,
        config.sockets,
        config.limit,
        progress,
    )
    .await?;
    // Let the joins' presence batches and acknowledgements settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcSample::read(config.server_pid)?;
    tokio::time::sleep(config.idle).await;
    let after = ProcSample::read(config.server_pid)?;
    let join_s = held.joined_in.as_secs_f64();
    held.release().await?;
    let rss = after.rss_kib;
    Ok(IdleReport {
        sessions: config.sessions,
        join_s,
        rss_kib_empty: empty.rss_kib,
        rss_kib_held: rss,
        bytes_per_session: rss.saturating_sub(empty.rss_kib) as f64 * 1024.0
            / config.sessions.max(1) as f64,
        idle_cpu_percent: after.cpu_percent_since(&before),
        idle_s: after.at.saturating_duration_since(before.at).as_secs_f64(),
    })
}
