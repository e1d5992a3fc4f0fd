//! Reliable peer mode: two symmetric peers over the protocol core.
//!
//! Both sides connect to each other at start and whenever the link is lost; the core resolves
//! simultaneous opens, so exactly one connection results whichever side starts first. Only the
//! peer's IP may open a connection to us. A second connection from the peer (it restarted)
//! replaces the first, and the lines the old one never got acknowledged are sent again on the
//! new one, ahead of anything typed since.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chirp_keys::{Fingerprint, Identity, PublicKey};
use chirp_proto::{
    CloseReason, ConnectError, ConnectionHandle, EndpointConfig, Event, SendError, WriteError,
    close_code,
};
use chirp_transport::Handle;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info_span};

use crate::input::{self, Input};
use crate::output::Output;

/// Longest wait after leaving for the closing connection to drain (normally 3 PTO, well under
/// a second on a healthy path).
const LINGER: Duration = Duration::from_secs(2);

/// Lines queued beyond what the transport accepted before standard input stops being read, so
/// that a peer that stops reading holds back whatever feeds us (memory stays bounded).
const MAX_PENDING: usize = 1024;

/// How long to wait before trying again when a connection cannot even be started.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// Options of `chirp peer` in reliable mode.
#[derive(Debug, Clone)]
pub(crate) struct PeerOpts {
    pub(crate) bind: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) json: bool,
    pub(crate) idle_timeout: Duration,
    /// Holds our identity key and the known-keys file.
    pub(crate) home: PathBuf,
    /// Talk only to a peer with this fingerprint.
    pub(crate) peer_key: Option<Fingerprint>,
}

/// File (in the home directory) of the keys seen on first contact, per peer address.
pub(crate) const KNOWN_KEYS_FILE: &str = "known_keys";

/// Runs until the user leaves. Returns the process exit code.
pub(crate) async fn run(opts: PeerOpts) -> anyhow::Result<u8> {
    let key_path = opts.home.join(crate::id::KEY_FILE);
    let (identity, _) = Identity::load_or_create(&key_path)
        .with_context(|| format!("cannot load the identity key {}", key_path.display()))?;
    let socket = crate::bind_socket(opts.bind)?;
    let mut config = EndpointConfig {
        identity: Some(chirp_proto::handshake::StaticSecret(*identity.secret())),
        // A peer is a two-party chat: the only one who may open a connection to us is the peer.
        accept_only_from: Some(opts.to.ip()),
        // One connection, plus transients while a restarted peer replaces the old one.
        max_connections: 4,
        ..EndpointConfig::default()
    };
    config.transport.idle_timeout = opts.idle_timeout;
    let (handle, events, task) =
        chirp_transport::spawn(socket, config).context("cannot start the transport")?;
    let out = Output { json: opts.json };
    let local = handle.local_addr();
    out.status(&format!(
        "chirp peer on {local}, talking to {} (reliable, encrypted; our fingerprint {}; /help for commands)",
        opts.to,
        identity.public().fingerprint()
    ));
    let span = info_span!("peer", %local, to = %opts.to);
    Peer::new(handle, out, opts)
        .run(events, task)
        .instrument(span)
        .await
}

struct Peer {
    handle: Handle,
    out: Output,
    opts: PeerOpts,
    /// The connection lines go to (handshaking or up).
    conn: Option<ConnectionHandle>,
    remote: Option<SocketAddr>,
    up: bool,
    /// A connection being replaced: sending waits until its `Closed` event has handed back the
    /// lines it never got acknowledged, so that they go out before anything newer.
    replacing: Option<ConnectionHandle>,
    /// Lines not yet accepted by the transport (send buffer full, or between connections).
    pending: VecDeque<Bytes>,
    /// The user asked to leave (end of input or `/quit`).
    leaving: bool,
    /// The connection a graceful close has been requested on.
    closing: Option<ConnectionHandle>,
    /// When to try `connect` again after it failed outright.
    retry_at: Option<Instant>,
}

impl Peer {
    fn new(handle: Handle, out: Output, opts: PeerOpts) -> Self {
        Self {
            handle,
            out,
            opts,
            conn: None,
            remote: None,
            up: false,
            replacing: None,
            pending: VecDeque::new(),
            leaving: false,
            closing: None,
            retry_at: None,
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        task: JoinHandle<std::io::Result<()>>,
    ) -> anyhow::Result<u8> {
        self.connect().await?;
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).split(b'\n');
        let mut stdin_open = true;
        // Created once: a Ctrl-C that arrives while a handler runs is still seen.
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            let retry = async {
                match self.retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                line = stdin.next_segment(), if stdin_open && self.pending.len() < MAX_PENDING => {
                    match line.context("cannot read standard input")? {
                        Some(line) => self.on_input(&line).await?,
                        None => {
                            stdin_open = false;
                            self.leave().await?;
                        }
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        // Report why the transport stopped rather than just that it did.
                        return match task.await {
                            Ok(Err(e)) => Err(e).context("the transport failed"),
                            Ok(Ok(())) => Err(anyhow::anyhow!("the transport stopped unexpectedly")),
                            Err(e) => Err(e).context("the transport task panicked"),
                        };
                    };
                    if let Some(code) = self.on_event(ev).await? {
                        return Ok(code);
                    }
                }
                () = retry => {
                    self.retry_at = None;
                    self.connect().await?;
                }
                _ = &mut ctrl_c => {
                    if let Some(c) = self.conn {
                        self.handle.abort(c, close_code::NO_ERROR, "interrupted").await?;
                        // Give the transport a moment to put the CLOSE on the wire.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return Ok(130);
                }
            }
        }
    }

    async fn connect(&mut self) -> anyhow::Result<()> {
        match self.handle.connect_or_reuse(self.opts.to).await? {
            Ok(conn) => {
                debug!(?conn, "connecting");
                self.conn = Some(conn);
                self.up = false;
                self.flush().await
            }
            Err(ConnectError::Handshake) => {
                anyhow::bail!("cannot start a handshake: the identity key was refused")
            }
            Err(ConnectError::TooManyConnections) => {
                // Transient (connections still draining); never a reason to quit the chat.
                debug!("connection table full; retrying shortly");
                self.conn = None;
                self.retry_at = Some(Instant::now() + CONNECT_RETRY);
                Ok(())
            }
        }
    }

    fn peer_name(&self) -> String {
        self.remote.unwrap_or(self.opts.to).to_string()
    }

    /// Hands queued lines to the transport until it pushes back; closes once leaving and done.
    async fn flush(&mut self) -> anyhow::Result<()> {
        let Some(conn) = self.conn else { return Ok(()) };
        if self.replacing.is_some() {
            return Ok(()); // The old connection's lines must go first.
        }
        while let Some(msg) = self.pending.front() {
            match self.handle.send(conn, msg.clone()).await? {
                Ok(()) => {
                    self.pending.pop_front();
                }
                Err(SendError::Write(WriteError::TooLarge { size, max })) => {
                    self.out.error(&format!(
                        "message of {size} bytes not sent: the limit is {max}"
                    ));
                    self.pending.pop_front();
                }
                // Blocked: wait for Writable. Closed: the Closed event brings a new connection.
                Err(_) => break,
            }
        }
        if self.leaving && self.pending.is_empty() && self.closing != Some(conn) {
            self.closing = Some(conn);
            // Graceful: the core first waits until everything sent is acknowledged.
            self.handle.close(conn, close_code::NO_ERROR, "bye").await?;
        }
        Ok(())
    }

    async fn leave(&mut self) -> anyhow::Result<()> {
        self.leaving = true;
        self.flush().await
    }

    async fn on_input(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let parsed = input::parse(line);
        if self.leaving && matches!(parsed, Input::Message(_)) {
            self.out.error("leaving: that line was not sent");
            return Ok(());
        }
        match parsed {
            Input::Message(m) => {
                self.pending.push_back(Bytes::from(m));
                self.flush().await?;
            }
            Input::Stats => match (self.conn, self.up) {
                (Some(c), true) => match self.handle.stats(c).await? {
                    Some(s) => self.out.stats(&self.peer_name(), &s),
                    None => self.out.error("no connection"),
                },
                _ => self
                    .out
                    .error(&format!("not connected to {} yet", self.opts.to)),
            },
            Input::Quit => self.leave().await?,
            Input::Help => self.out.info(input::HELP),
            Input::Unknown(cmd) => {
                self.out.error(&format!(
                    "unknown command {cmd} (not sent); /help lists commands, //text sends a literal /"
                ));
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, ev: Event) -> anyhow::Result<Option<u8>> {
        match ev {
            Event::Connected {
                conn,
                remote,
                remote_key,
                ..
            } => {
                if let Err(refusal) = self.check_key(PublicKey(remote_key)) {
                    self.out.error(&refusal);
                    self.handle
                        .abort(conn, close_code::APPLICATION_MIN, "key refused")
                        .await?;
                    let _ = tokio::time::timeout(LINGER, self.handle.wait_idle()).await;
                    return Ok(Some(1));
                }
                if let Some(old) = self.conn.filter(|&old| old != conn) {
                    // The peer opened a new connection: it restarted, or its attempt won the
                    // race against ours. The new one replaces the old; sending waits for the
                    // old one's Closed event, which hands back its unacknowledged lines.
                    if self.up {
                        self.out.peer_down(&self.peer_name(), "restarted");
                    }
                    self.replacing = Some(old);
                    self.handle
                        .abort(old, close_code::NO_ERROR, "replaced")
                        .await?;
                }
                self.conn = Some(conn);
                self.remote = Some(remote);
                self.up = true;
                self.retry_at = None;
                self.out.peer_up(&remote.to_string());
                self.flush().await?;
            }
            Event::Message { conn, data } => {
                let from = if Some(conn) == self.conn {
                    self.peer_name()
                } else {
                    "previous session".into()
                };
                self.out.message(&from, &String::from_utf8_lossy(&data));
            }
            Event::Writable { conn } if Some(conn) == self.conn => self.flush().await?,
            Event::Writable { .. } => {}
            Event::Closed {
                conn,
                reason,
                undelivered,
            } => {
                // Lines the peer never acknowledged go first in the queue, in their order.
                for m in undelivered.into_iter().rev() {
                    self.pending.push_front(m);
                }
                if Some(conn) != self.conn {
                    if self.replacing == Some(conn) {
                        self.replacing = None;
                    }
                    // A replaced connection; its lines now go out on the current one.
                    return self.flush().await.map(|()| None);
                }
                let was_up = std::mem::take(&mut self.up);
                self.conn = None;
                if self.leaving {
                    let code = self.finish(&reason);
                    // Linger while the connection drains: if our CLOSE (which carries our
                    // final acknowledgements) is lost, the peer's next packet is answered
                    // with another, and the peer too can leave knowing all arrived.
                    let _ = tokio::time::timeout(LINGER, self.handle.wait_idle()).await;
                    return Ok(Some(code));
                }
                match &reason {
                    // Our handshake found nobody: keep trying quietly.
                    CloseReason::IdleTimeout if !was_up => {}
                    CloseReason::PeerClosed { .. } => {
                        self.out.peer_down(&self.peer_name(), "left");
                    }
                    other => self
                        .out
                        .peer_down(&self.peer_name(), &describe(other, self.opts.idle_timeout)),
                }
                self.connect().await?;
            }
        }
        Ok(None)
    }

    /// Is `key` the peer's? A pinned fingerprint decides; otherwise the key remembered for
    /// this address (trust on first use, like ssh's accept-new). `Err`: what to tell the user.
    fn check_key(&self, key: PublicKey) -> Result<(), String> {
        let known = self.opts.home.join(KNOWN_KEYS_FILE);
        let name = self.opts.to.to_string();
        let pin = self.opts.peer_key.as_ref();
        let notice = crate::trust::check("peer", "--peer-key", &name, key, pin, &known)?;
        if let Some(n) = notice {
            self.out.status(&n);
        }
        Ok(())
    }

    /// Exit code once the connection has closed while leaving.
    fn finish(&self, reason: &CloseReason) -> u8 {
        let undelivered = self.pending.len();
        if undelivered == 0 && matches!(reason, CloseReason::Local | CloseReason::PeerClosed { .. })
        {
            return 0;
        }
        let why = match reason {
            // A graceful close that had to give up: the peer stopped taking our data.
            CloseReason::Local => "the peer stopped accepting data".to_owned(),
            other => describe(other, self.opts.idle_timeout),
        };
        self.out.error(&format!(
            "{undelivered} message(s) were not acknowledged by {}: {why}",
            self.peer_name()
        ));
        1
    }
}

fn describe(reason: &CloseReason, idle: Duration) -> String {
    match reason {
        CloseReason::IdleTimeout => format!("no answer for {} s", idle.as_secs()),
        CloseReason::PeerClosed { reason, .. } => format!("the peer closed ({reason})"),
        CloseReason::Local => "closed".into(),
        CloseReason::ProtocolViolation { detail, .. } => format!("protocol violation: {detail}"),
        CloseReason::KeyMismatch { .. } => "the peer's key is not the expected one".into(),
        CloseReason::Reset => "the peer restarted".into(),
    }
}
