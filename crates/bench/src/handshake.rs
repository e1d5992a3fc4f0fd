//! New sessions per second: each opens a connection (Noise XX handshake, address validation),
//! says `hello` and waits for `welcome`, then leaves; a fixed number are in setup at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chirp_chat::client::{self, Event};
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::fanout::{Latency, Nicks, fresh_key, session_config};
use crate::server::ProcSample;
use crate::{BenchError, quantile};

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

/// Sets up `config.sessions` sessions, `config.concurrency` at a time.
pub async fn run(
    config: &HandshakeConfig,
    progress: &ProgressBar,
) -> Result<HandshakeReport, BenchError> {
    let concurrency = config.concurrency.clamp(1, config.sessions.max(1));
    let keys: Vec<_> = (0..concurrency).map(|_| fresh_key()).collect();
    let nicks = Nicks::new();
    let slots = Arc::new(Semaphore::new(concurrency));
    let before = ProcSample::read_opt(config.server_pid)?;
    progress.set_length(config.sessions as u64);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut setups = Vec::with_capacity(config.sessions);
    let mut failed = 0;
    let mut last = start;
    for i in 0..config.sessions {
        let permit = Arc::clone(&slots)
            .acquire_owned()
            .await
            .map_err(|_| BenchError::Stuck("the session slots closed".into()))?;
        let c = session_config(
            config.server,
            nicks.get(i % concurrency),
            keys[i % concurrency].clone(),
            false,
        );
        let timeout = config.timeout;
        let t0 = Instant::now();
        let spawned = client::spawn(c).map_err(BenchError::io("start a client session"))?;
        tasks.spawn(async move {
            let _permit = permit;
            let (handle, mut ev, _task) = spawned;
            let welcomed = tokio::time::timeout(timeout, async {
                loop {
                    match ev.recv().await {
                        Some(Event::Welcome { .. }) => return true,
                        Some(Event::Fatal(_)) | None => return false,
                        Some(_) => {}
                    }
                }
            })
            .await
            .unwrap_or(false);
            let took = t0.elapsed();
            // Leaving: the session says goodbye and closes on its own.
            drop(handle);
            welcomed.then_some((took, Instant::now()))
        });
        while let Some(done) = tasks.try_join_next() {
            collect(done, &mut setups, &mut failed, &mut last, progress);
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(done, &mut setups, &mut failed, &mut last, progress);
    }
    let after = ProcSample::read_opt(config.server_pid)?;
    let elapsed = last.saturating_duration_since(start).as_secs_f64();
    setups.sort_unstable();
    let ms = |q: f64| quantile(&setups, q).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
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
        setup_ms: Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            max: ms(1.0),
        },
        server_cpu_percent: before.zip(after).map(|(a, b)| b.cpu_percent_since(&a)),
    })
}

fn collect(
    done: Result<Option<(Duration, Instant)>, tokio::task::JoinError>,
    setups: &mut Vec<Duration>,
    failed: &mut usize,
    last: &mut Instant,
    progress: &ProgressBar,
) {
    match done {
        Ok(Some((took, at))) => {
            setups.push(took);
            *last = (*last).max(at);
        }
        _ => *failed += 1,
    }
    progress.inc(1);
}
