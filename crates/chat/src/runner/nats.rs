//! The runner's side of the cluster bus: one task owns the NATS client and carries out the
//! core's bus requests in order (publish, subscribe, unsubscribe, and the barrier a sync
//! needs); one small task per subscription forwards what arrives. The core never waits for
//! the bus: what it asks is queued here, and what comes back is an input like any other.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::bus::Subject;

/// Bus messages waiting for the core, past which the subscription tasks wait (and NATS, past
/// its own buffer, drops: the core then finds the gap, see `server::cluster`).
const INBOUND: usize = 65_536;
/// Messages NATS buffers per subscription for its forwarding task.
const SUBSCRIPTION_CAPACITY: usize = 65_536;
/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the core asked of the bus.
#[derive(Debug)]
pub(super) enum Cmd {
    Publish(Subject, Bytes),
    Follow(Subject),
    Unfollow(Subject),
    /// Answered with `Flushed(conv)` once every subscription asked for before is active at
    /// the server.
    Barrier(String),
}

/// What the bus tells the runner.
#[derive(Debug)]
pub(super) enum Note {
    /// A message on a followed subject.
    Message(Bytes),
    /// The barrier for this conversation's sync passed.
    Flushed(String),
    /// The connection came back (or NATS dropped messages for us): what was sent meanwhile
    /// may be lost.
    Reconnected,
}

/// Errors connecting to the bus.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {message}")]
pub struct BusError {
    url: String,
    message: String,
}

/// Connects to NATS at `url` and starts the bus task; `cmds` feeds it, `notes` is what it
/// reports. With `ca` (a PEM file), TLS is required and the server's certificate verified
/// against it; a `tls://` URL requires TLS too, verified against the system's roots.
pub(super) async fn start(
    url: &str,
    ca: Option<&std::path::Path>,
    notes: mpsc::Sender<Note>,
) -> Result<(mpsc::UnboundedSender<Cmd>, tokio::task::JoinHandle<()>), BusError> {
    let events = notes.clone();
    let mut options = async_nats::ConnectOptions::new();
    if let Some(ca) = ca {
        options = options
            .add_root_certificates(ca.to_owned())
            .require_tls(true);
    }
    let client = options
        .connection_timeout(CONNECT_TIMEOUT)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        // Back quickly after a NATS restart: at most a second between attempts.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64).saturating_mul(100).min(1000))
        })
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        info!("bus connection (re)established");
                        let _ = events.send(Note::Reconnected).await;
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        warn!("the bus dropped messages for this node (slow consumer)");
                        let _ = events.send(Note::Reconnected).await;
                    }
                    async_nats::Event::Disconnected => warn!("bus connection lost; reconnecting"),
                    other => debug!(event = %other, "bus event"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| {
            // The causes too (a refused certificate says why only there).
            let mut message = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            BusError {
                url: url.to_owned(),
                message,
            }
        })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(client, rx, notes));
    Ok((tx, task))
}

/// The channel for the bus's notes.
pub(super) fn channel() -> (mpsc::Sender<Note>, mpsc::Receiver<Note>) {
    mpsc::channel(INBOUND)
}

async fn run(
    client: async_nats::Client,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    notes: mpsc::Sender<Note>,
) {
    let mut subs: HashMap<Subject, tokio::task::JoinHandle<()>> = HashMap::new();
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Publish(subject, data) => {
                // While disconnected the client buffers; past its buffer this fails, and the
                // other nodes find the gap.
                if let Err(e) = client.publish(subject.name(), data).await {
                    debug!(error = %e, "bus publish failed");
                }
            }
            Cmd::Follow(subject) => {
                if subs.contains_key(&subject) {
                    continue;
                }
                match client.subscribe(subject.name()).await {
                    Ok(mut sub) => {
                        let notes = notes.clone();
                        let task = tokio::spawn(async move {
                            while let Some(m) = sub.next().await {
                                if notes.send(Note::Message(m.payload)).await.is_err() {
                                    return;
                                }
                            }
                        });
                        subs.insert(subject, task);
                    }
                    Err(e) => warn!(error = %e, subject = subject.name(), "bus subscribe failed"),
                }
            }
            Cmd::Unfollow(subject) => {
                // Dropping the subscriber (with its task) unsubscribes.
                if let Some(task) = subs.remove(&subject) {
                    task.abort();
                }
            }
            Cmd::Barrier(conv) => {
                // The server has every earlier SUB once it answered this round trip.
                if let Err(e) = client.flush().await {
                    debug!(error = %e, "bus flush failed; the sync reads anyway");
                }
                if notes.send(Note::Flushed(conv)).await.is_err() {
                    break;
                }
            }
        }
    }
    for (_, task) in subs {
        task.abort();
    }
    // Whatever was published is handed to the server before the client goes.
    let _ = client.flush().await;
}
