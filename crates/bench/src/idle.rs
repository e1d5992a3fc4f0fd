//! N established, joined sessions held open and idle: the server's memory per session above
//! its empty baseline, and its CPU while they idle (keep-alives included).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_chat::client;
use indicatif::ProgressBar;
use serde::Serialize;

use crate::BenchError;
use crate::fanout::{Nicks, fresh_key, session_config, wait_joined};
use crate::server::ProcSample;

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

/// Connects and joins `sessions` sessions, then watches the server while they idle.
pub async fn run(config: &IdleConfig, progress: &ProgressBar) -> Result<IdleReport, BenchError> {
    let deadline = tokio::time::Instant::now() + config.limit;
    let empty = ProcSample::read(config.server_pid)?;
    progress.set_length(config.sessions as u64);
    let start = Instant::now();
    let nicks = Nicks::new();
    let mut clients = Vec::with_capacity(config.sessions);
    for i in 0..config.sessions {
        let c = session_config(config.server, nicks.get(i), fresh_key(), true);
        clients.push(client::spawn(c).map_err(BenchError::io("start a client session"))?);
    }
    let mut readers = Vec::with_capacity(clients.len());
    let mut handles = Vec::with_capacity(clients.len());
    for (i, (h, mut ev, task)) in clients.into_iter().enumerate() {
        wait_joined(&mut ev, deadline)
            .await
            .map_err(|e| BenchError::Stuck(format!("session {i}: {e}")))?;
        progress.inc(1);
        handles.push((h, task));
        // Read on while they idle (presence, keep-alive answers): a session whose events
        // nobody reads ends.
        readers.push(tokio::spawn(
            async move { while ev.recv().await.is_some() {} },
        ));
    }
    let join_s = start.elapsed().as_secs_f64();
    // Let the joins' presence batches and acknowledgements settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ProcSample::read(config.server_pid)?;
    tokio::time::sleep(config.idle).await;
    let after = ProcSample::read(config.server_pid)?;
    drop(handles);
    for r in readers {
        r.abort();
    }
    let held = after.rss_kib;
    Ok(IdleReport {
        sessions: config.sessions,
        join_s,
        rss_kib_empty: empty.rss_kib,
        rss_kib_held: held,
        bytes_per_session: held.saturating_sub(empty.rss_kib) as f64 * 1024.0
            / config.sessions.max(1) as f64,
        idle_cpu_percent: after.cpu_percent_since(&before),
        idle_s: after.at.saturating_duration_since(before.at).as_secs_f64(),
    })
}
