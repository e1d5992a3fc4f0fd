//! Reliable peer mode: two symmetric peers over the protocol core.
//!
//! Both sides connect to each other at start and whenever the link is lost; the core resolves
//! simultaneous opens, so exactly one connection results whichever side starts first. Only the
//! peer's IP may open a connection to us. A second connection from the peer (it restarted)
//! replaces the first, and the lines the old one never got acknowledged are sent again on the
//! new one, ahead of anything typed since.
//!
//! The chat loop ([`Peer`]) is the same for both faces of `chirp peer`. It takes [`Request`]s
//! (lines read from standard input by [`read_stdin`], or sends from the terminal UI) and gives
//! [`Report`]s, which line mode prints ([`print`]) and the terminal UI shows (`peer_ui`).
//!
//! Delivery is known per message: the transport counts, per connection, the messages the
//! peer has acknowledged ([`Event::Acked`], in send order), so the loop keeps the UI's ids of
//! the messages in flight on each connection in that order, and pops one per acknowledgement.
//! A message handed back by a dying connection keeps its id on the next one.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chirp_keys::{Fingerprint, Identity, PublicKey};
use chirp_proto::{
    CloseReason, ConnectError, ConnectionHandle, ConnectionStats, EndpointConfig, Event, SendError,
    WriteError, close_code,
};
use chirp_transport::Handle;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::input::{self, Input};
use crate::output::Output;

/// Longest wait after leaving for the closing connection to drain (normally 3 PTO, well under
/// a second on a healthy path).
const LINGER: Duration = Duration::from_secs(2);

/// How long Ctrl-C waits for the transport to send the CLOSE before the process exits.
const INTERRUPT_LINGER: Duration = Duration::from_millis(50);

/// Lines queued beyond what the transport accepted before standard input stops being read, so
/// that a peer that stops reading holds back whatever feeds us (memory stays bounded).
const MAX_PENDING: usize = 1024;

/// How long to wait before trying again when a connection cannot even be started.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// How long to wait before trying again after the peer refused our key.
const KEY_REFUSED_RETRY: Duration = Duration::from_secs(10);

/// A refusal of a connection from another port is shown once per this long: a stranger (or a
/// peer that keeps retrying) must not flood the screen.
const REFUSAL_REPEAT: Duration = Duration::from_secs(60);

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
    /// Show the terminal UI (stdin and stdout are a terminal, and no `--line`/`--json`).
    pub(crate) tui: bool,
    /// In the UI, ring the bell on messages from the peer.
    pub(crate) bell: bool,
    /// Someone can answer a question: the terminal UI, or line mode with standard input on a
    /// terminal (not `--json`). Otherwise a key that needs confirming is refused.
    pub(crate) can_ask: bool,
}

/// What the user asks of the chat loop.
pub(crate) enum Request {
    /// A line typed in line mode: a message, or a `/command` (see `input`).
    Line(Vec<u8>),
    /// A message from the terminal UI, with the UI's id for it: answered with
    /// [`Report::Delivered`] once the peer acknowledges it, or [`Report::Failed`].
    Send { data: Bytes, local_id: u64 },
    /// The link statistics, for the UI's status bar: answered with [`Report::Link`].
    Link,
    /// Leave once everything sent is acknowledged (end of input, `/quit`).
    Leave,
    /// Standard input failed.
    InputFailed(std::io::Error),
    /// The answer to [`Report::AskKey`] from the terminal UI: trust that key or not.
    KeyAnswer(bool),
}

/// What the chat loop tells the user. (No `Debug`: a message is user plaintext.)
pub(crate) enum Report {
    /// Informational status (a key remembered on first contact).
    Status(String),
    /// The peer is reachable, with this key.
    Up { peer: String, fingerprint: String },
    /// The peer went away (the loop is already trying to reach it again).
    Down { peer: String, reason: String },
    /// A message from the peer.
    Message { from: String, data: Bytes },
    /// An error the user should see (the chat may continue).
    Error(String),
    /// `/help` in line mode.
    Help,
    /// `/stats` in line mode.
    Stats {
        peer: String,
        stats: Box<ConnectionStats>,
    },
    /// The peer acknowledged the message with this UI id.
    Delivered(u64),
    /// The message with this UI id cannot be delivered.
    Failed { local_id: u64, reason: String },
    /// Answer to [`Request::Link`]: `None` while no connection is up.
    Link(Option<Box<ConnectionStats>>),
    /// A key seen for the first time, from another port of the peer's IP: should it be
    /// trusted? Line mode answers with `/accept` or `/refuse`, the UI with Alt+Y or Alt+N
    /// ([`Request::KeyAnswer`]): deliberate answers, since the question comes whenever the
    /// other side chooses, maybe mid-sentence.
    AskKey { from: String, fingerprint: String },
}

/// Prints a report in line mode. Delivery reports and link snapshots are for the UI only.
pub(crate) fn print(out: Output, report: Report) {
    match report {
        Report::Status(text) => out.status(&text),
        Report::Up { peer, .. } => out.peer_up(&peer),
        Report::Down { peer, reason } => out.peer_down(&peer, &reason),
        Report::Message { from, data } => out.message(&from, &data),
        Report::Error(text) | Report::Failed { reason: text, .. } => out.error(&text),
        Report::Help => out.info(input::HELP),
        Report::Stats { peer, stats } => out.stats(&peer, &stats),
        Report::AskKey { from, fingerprint } => out.status(&format!(
            "{} Type /accept to trust it (it is then remembered for the peer), /refuse to \
             refuse it.",
            ask_text(&from, &fingerprint)
        )),
        Report::Delivered(_) | Report::Link(_) => {}
    }
}

/// The question of [`Report::AskKey`], for line mode and the UI alike.
pub(crate) fn ask_text(from: &str, fingerprint: &str) -> String {
    format!(
        "{from} presents key {fingerprint}, never seen before, from another port than the one \
         given: the peer behind a NAT that changes ports, or a stranger on the same host or NAT?"
    )
}

/// Where reports go.
pub(crate) enum View {
    /// Printed on stdout, one line each.
    Lines(Output),
    /// To the terminal UI's bridge, which must keep reading until the loop ends.
    Ui(mpsc::Sender<Report>),
}

impl View {
    async fn show(&self, report: Report) {
        match self {
            View::Lines(out) => print(*out, report),
            // Closed only once the bridge has ended, after the UI: nobody is left to tell.
            View::Ui(tx) => {
                let _ = tx.send(report).await;
            }
        }
    }
}

/// Reads standard input line by line into `requests` (bounded: a peer that stops reading
/// holds back whatever feeds us). End of input closes the channel, which means leave.
pub(crate) fn read_stdin(requests: mpsc::Sender<Request>) {
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).split(b'\n');
        loop {
            let req = match stdin.next_segment().await {
                Ok(Some(line)) => Request::Line(line),
                Ok(None) => return,
                Err(e) => Request::InputFailed(e),
            };
            let failed = matches!(req, Request::InputFailed(_));
            if requests.send(req).await.is_err() || failed {
                return;
            }
        }
    });
}

/// A message waiting for the transport, with the UI's id for it (none in line mode).
struct Outgoing {
    data: Bytes,
    local_id: Option<u64>,
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
        // Its key is checked inside every handshake, whichever side opens it: nothing of
        // ours goes out, and nothing of its is taken, before the key passed (`on_verify`).
        verify_keys: true,
        // One connection, plus transients while a restarted peer replaces the old one.
        max_connections: 4,
        ..EndpointConfig::default()
    };
    config.transport.idle_timeout = opts.idle_timeout;
    let (handle, events, task) =
        chirp_transport::spawn(socket, config).context("cannot start the transport")?;
    let local = handle.local_addr();
    let banner = format!(
        "chirp peer on {local}, talking to {} (reliable, encrypted; our fingerprint {}; /help for commands)",
        opts.to,
        identity.public().fingerprint()
    );
    let span = info_span!("peer", %local, to = %opts.to);
    let (req_tx, req_rx) = mpsc::channel(64);
    if opts.tui {
        let (report_tx, report_rx) = mpsc::channel(256);
        let ui = crate::peer_ui::Info {
            me: local.to_string(),
            peer: opts.to.to_string(),
            banner,
            idle_timeout: opts.idle_timeout,
            bell: opts.bell,
        };
        let peer = Peer::new(handle, View::Ui(report_tx.clone()), opts);
        let peer = tokio::spawn(
            async move {
                let result = peer.run(req_rx, events, task).await;
                // A failure (the socket, the transport) is shown in the UI, not only after it.
                if let Err(e) = &result {
                    let _ = report_tx.send(Report::Error(format!("{e:#}"))).await;
                }
                result
            }
            .instrument(span),
        );
        return crate::peer_ui::run(ui, report_rx, req_tx, peer).await;
    }
    let out = Output { json: opts.json };
    out.status(&banner);
    read_stdin(req_tx);
    Peer::new(handle, View::Lines(out), opts)
        .run(req_rx, events, task)
        .instrument(span)
        .await
}

struct Peer {
    handle: Handle,
    view: View,
    opts: PeerOpts,
    /// The connection lines go to (handshaking or up).
    conn: Option<ConnectionHandle>,
    remote: Option<SocketAddr>,
    up: bool,
    /// A connection being replaced: sending waits until its `Closed` event has handed back the
    /// lines it never got acknowledged, so that they go out before anything newer.
    replacing: Option<ConnectionHandle>,
    /// Lines not yet accepted by the transport (send buffer full, or between connections).
    pending: VecDeque<Outgoing>,
    /// Per connection, the UI ids of the messages the transport took and the peer has not yet
    /// acknowledged, in send order (`None` for line mode's).
    inflight: HashMap<ConnectionHandle, VecDeque<Option<u64>>>,
    /// The user asked to leave (end of input or `/quit`).
    leaving: bool,
    /// The connection a graceful close has been requested on.
    closing: Option<ConnectionHandle>,
    /// When to try `connect` again after it failed outright.
    retry_at: Option<Instant>,
    /// The handshake paused on a key only the user can judge, with its address and key.
    asking: Option<(ConnectionHandle, SocketAddr, PublicKey)>,
    /// The last non-fatal refusal shown, and when: repeats within [`REFUSAL_REPEAT`] are
    /// only logged.
    last_refusal: Option<(String, Instant)>,
}

impl Peer {
    fn new(handle: Handle, view: View, opts: PeerOpts) -> Self {
        Self {
            handle,
            view,
            opts,
            conn: None,
            remote: None,
            up: false,
            replacing: None,
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            leaving: false,
            closing: None,
            retry_at: None,
            asking: None,
            last_refusal: None,
        }
    }

    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut events: mpsc::Receiver<Event>,
        task: JoinHandle<std::io::Result<()>>,
    ) -> anyhow::Result<u8> {
        self.connect().await?;
        let mut requests_open = true;
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
                req = requests.recv(), if requests_open && !self.input_held_back() => {
                    match req {
                        Some(req) => self.on_request(req).await?,
                        None => {
                            requests_open = false;
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
                    // Long enough for the transport to put the CLOSE on the wire.
                    let conns: Vec<_> = self.conn.into_iter().collect();
                    self.end(&conns, close_code::NO_ERROR, "interrupted", INTERRUPT_LINGER)
                        .await?;
                    return Ok(130);
                }
            }
        }
    }

    /// Whether to stop taking requests for now: in line mode, while too many lines wait for
    /// the transport (so that whatever feeds standard input is held back). The terminal UI's
    /// sends come at typing speed and its `Leave` must always get through.
    fn input_held_back(&self) -> bool {
        matches!(self.view, View::Lines(_)) && self.pending.len() >= MAX_PENDING
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
            match self.handle.send(conn, msg.data.clone()).await? {
                Ok(()) => {
                    if let Some(m) = self.pending.pop_front() {
                        self.inflight.entry(conn).or_default().push_back(m.local_id);
                    }
                }
                Err(SendError::Write(WriteError::TooLarge { size, max })) => {
                    let reason = format!("message of {size} bytes not sent: the limit is {max}");
                    let local_id = self.pending.pop_front().and_then(|m| m.local_id);
                    self.view
                        .show(match local_id {
                            Some(local_id) => Report::Failed { local_id, reason },
                            None => Report::Error(reason),
                        })
                        .await;
                }
                // Gone without the `Closed` every held connection reports: a bug in the core,
                // but no reason to stop chatting. Start over (its unacknowledged lines, which
                // only `Closed` could hand back, are lost; say so in the logs).
                Err(SendError::UnknownConnection) => {
                    warn!(
                        ?conn,
                        "connection vanished without a Closed event; reconnecting"
                    );
                    let lost = self.inflight.remove(&conn).unwrap_or_default();
                    for local_id in lost.into_iter().flatten() {
                        let reason = "lost with its connection (not resent)".to_owned();
                        self.view.show(Report::Failed { local_id, reason }).await;
                    }
                    self.conn = None;
                    self.up = false;
                    if self.replacing == Some(conn) {
                        self.replacing = None;
                    }
                    self.retry_at = Some(Instant::now());
                    break;
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

    async fn on_request(&mut self, req: Request) -> anyhow::Result<()> {
        match req {
            Request::Line(line) => self.on_line(&line).await,
            Request::Send { data, local_id } => {
                if self.leaving {
                    let reason = "leaving: not sent".to_owned();
                    self.view.show(Report::Failed { local_id, reason }).await;
                    return Ok(());
                }
                self.pending.push_back(Outgoing {
                    data,
                    local_id: Some(local_id),
                });
                self.flush().await
            }
            Request::Link => {
                let stats = match (self.conn, self.up) {
                    (Some(c), true) => self.handle.stats(c).await?.map(Box::new),
                    _ => None,
                };
                self.view.show(Report::Link(stats)).await;
                Ok(())
            }
            Request::Leave => self.leave().await,
            Request::InputFailed(e) => Err(e).context("cannot read standard input"),
            Request::KeyAnswer(yes) => self.answer(yes).await,
        }
    }

    async fn on_line(&mut self, line: &[u8]) -> anyhow::Result<()> {
        let parsed = input::parse(line);
        if self.leaving && matches!(parsed, Input::Message(_)) {
            let text = "leaving: that line was not sent".to_owned();
            self.view.show(Report::Error(text)).await;
            return Ok(());
        }
        let report = match parsed {
            Input::Message(m) => {
                self.pending.push_back(Outgoing {
                    data: Bytes::from(m),
                    local_id: None,
                });
                return self.flush().await;
            }
            Input::Stats => match (self.conn, self.up) {
                (Some(c), true) => match self.handle.stats(c).await? {
                    Some(s) => Report::Stats {
                        peer: self.peer_name(),
                        stats: Box::new(s),
                    },
                    None => Report::Error("no connection".into()),
                },
                _ => Report::Error(format!("not connected to {} yet", self.opts.to)),
            },
            Input::Quit => return self.leave().await,
            Input::Help => Report::Help,
            Input::Accept => return self.answer(true).await,
            Input::Refuse => return self.answer(false).await,
            Input::Unknown(cmd) => Report::Error(format!(
                "unknown command {cmd} (not sent); /help lists commands, //text sends a literal /"
            )),
        };
        self.view.show(report).await;
        Ok(())
    }

    async fn on_event(&mut self, ev: Event) -> anyhow::Result<Option<u8>> {
        match ev {
            Event::VerifyKey {
                conn,
                remote,
                remote_key,
                ..
            } => return self.on_verify(conn, remote, PublicKey(remote_key)).await,
            Event::Connected {
                conn,
                remote,
                remote_key,
                ..
            } => {
                // Its key passed `on_verify` before the handshake could complete.
                if let Some(old) = self.conn.filter(|&old| old != conn) {
                    // The peer opened a new connection: it restarted, or its attempt won the
                    // race against ours. The new one replaces the old; sending waits for the
                    // old one's Closed event, which hands back its unacknowledged lines.
                    if self.up {
                        self.down("restarted".into()).await;
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
                let up = Report::Up {
                    peer: remote.to_string(),
                    fingerprint: PublicKey(remote_key).fingerprint().to_string(),
                };
                self.view.show(up).await;
                self.flush().await?;
            }
            Event::Message { conn, data } => {
                let from = if Some(conn) == self.conn {
                    self.peer_name()
                } else {
                    "previous session".into()
                };
                self.view.show(Report::Message { from, data }).await;
            }
            Event::Acked { conn, messages } => {
                let mut delivered = Vec::new();
                if let Some(ids) = self.inflight.get_mut(&conn) {
                    for _ in 0..messages {
                        match ids.pop_front() {
                            Some(Some(id)) => delivered.push(id),
                            Some(None) => {}
                            None => break,
                        }
                    }
                }
                for id in delivered {
                    self.view.show(Report::Delivered(id)).await;
                }
            }
            Event::Writable { conn } if Some(conn) == self.conn => self.flush().await?,
            Event::Writable { .. } => {}
            Event::Closed {
                conn,
                reason,
                undelivered,
            } => {
                if let Some((_, remote, _)) = self.asking.filter(|a| a.0 == conn) {
                    // The question stays open: its answer decides the key's next attempt.
                    let text = format!(
                        "{remote} gave up waiting for an answer; /accept (Alt+Y) still trusts \
                         its key for its next attempt"
                    );
                    self.view.show(Report::Status(text)).await;
                }
                // Lines the peer never acknowledged go first in the queue, in their order, each
                // with its id. They are the last ones sent on `conn` (every `Acked` comes
                // before `Closed`), so ids pair with them from the back; any older id left
                // over was acknowledged.
                let mut ids = self.inflight.remove(&conn).unwrap_or_default();
                for data in undelivered.into_iter().rev() {
                    let local_id = ids.pop_back().flatten();
                    self.pending.push_front(Outgoing { data, local_id });
                }
                for id in ids.into_iter().flatten() {
                    self.view.show(Report::Delivered(id)).await;
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
                    // Until now a restarted peer could still take over what we were
                    // draining; from here on the chat is over.
                    let code = self.finish(&reason).await;
                    self.end(&[], close_code::NO_ERROR, "", LINGER).await?;
                    return Ok(Some(code));
                }
                match &reason {
                    // Our handshake found nobody: keep trying quietly.
                    CloseReason::IdleTimeout if !was_up => {}
                    CloseReason::PeerClosed {
                        code: close_code::KEY_MISMATCH,
                        ..
                    } => {
                        let why = "it refused our key (it pins or remembers another)";
                        if was_up {
                            self.down(why.into()).await;
                        } else {
                            // Never up (our handshake had not finished): not "down", refused.
                            let text = format!("{} {why}; trying again in 10 s", self.peer_name());
                            self.view.show(Report::Error(text)).await;
                        }
                        // Trying again at once would only be refused again, and flood the
                        // peer's screen with refusals: try again later.
                        self.retry_at = Some(Instant::now() + KEY_REFUSED_RETRY);
                        return Ok(None);
                    }
                    CloseReason::PeerClosed { .. } => self.down("left".into()).await,
                    other => {
                        self.down(describe(other, self.opts.idle_timeout)).await;
                    }
                }
                self.connect().await?;
            }
        }
        Ok(None)
    }

    /// The chat is over. Accept no new connection: the peer reconnects as soon as our close
    /// reaches it, and must find nobody rather than a connection that dies with this process
    /// (which it would show as up until its idle timeout). Then close `conns` at once, and
    /// linger up to `linger` while what is closing drains: if our CLOSE (which carries our
    /// final acknowledgements) is lost, the peer's next packet is answered with another, and
    /// the peer too can leave knowing all arrived.
    async fn end(
        &self,
        conns: &[ConnectionHandle],
        code: u64,
        reason: &str,
        linger: Duration,
    ) -> anyhow::Result<()> {
        self.handle.set_accept_incoming(false).await?;
        for &c in conns {
            self.handle.abort(c, code, reason).await?;
        }
        let _ = tokio::time::timeout(linger, self.handle.wait_idle()).await;
        Ok(())
    }

    async fn down(&self, reason: String) {
        let peer = self.peer_name();
        self.view.show(Report::Down { peer, reason }).await;
    }

    /// The handshake of `conn` paused on the other side's `key`: is it the peer's? The accept
    /// policy is [`crate::trust::peer_verdict`]'s. Returns the exit code if the chat ends.
    async fn on_verify(
        &mut self,
        conn: ConnectionHandle,
        remote: SocketAddr,
        key: PublicKey,
    ) -> anyhow::Result<Option<u8>> {
        use crate::trust::PeerVerdict;
        let known = self.opts.home.join(KNOWN_KEYS_FILE);
        let pin = self.opts.peer_key.as_ref();
        match crate::trust::peer_verdict(self.opts.to, remote, key, pin, &known) {
            PeerVerdict::Accept(notice) => {
                if let Some(n) = notice {
                    self.view.show(Report::Status(n)).await;
                }
                self.handle.verify_key(conn, true).await?;
            }
            PeerVerdict::Ask
                if self
                    .asking
                    .as_ref()
                    .is_some_and(|&(_, _, asked)| asked == key) =>
            {
                // The same key trying again (its earlier attempt may have given up waiting):
                // the open question now stands for this attempt.
                if let Some(asking) = self.asking.as_mut() {
                    asking.0 = conn;
                    asking.1 = remote;
                }
            }
            PeerVerdict::Ask if self.opts.can_ask && self.asking.is_none() => {
                debug!(?conn, %remote, "asking the user about a first-contact key");
                self.asking = Some((conn, remote, key));
                let ask = Report::AskKey {
                    from: remote.to_string(),
                    fingerprint: key.fingerprint().to_string(),
                };
                self.view.show(ask).await;
            }
            PeerVerdict::Ask => {
                // Nobody to ask (or a question is already open): refuse, and say how to
                // accept it next time.
                self.handle.verify_key(conn, false).await?;
                let text = crate::trust::unconfirmed_refusal(self.opts.to, remote, key);
                self.show_refusal(text).await;
            }
            PeerVerdict::Refuse { reason, fatal } => {
                self.handle.verify_key(conn, false).await?;
                if !fatal {
                    self.show_refusal(reason).await;
                    return Ok(None);
                }
                self.view.show(Report::Error(reason)).await;
                // The chat ends: the connection we had (if any) is closed too, so that the
                // peer hears of it now rather than by its idle timeout.
                let conns: Vec<_> = self.conn.filter(|&old| old != conn).into_iter().collect();
                self.end(&conns, close_code::APPLICATION_MIN, "key refused", LINGER)
                    .await?;
                return Ok(Some(1));
            }
        }
        Ok(None)
    }

    /// Shows a refusal that does not end the chat, unless the same one was shown recently.
    async fn show_refusal(&mut self, text: String) {
        let now = Instant::now();
        let repeat = self
            .last_refusal
            .as_ref()
            .is_some_and(|(last, at)| *last == text && now.duration_since(*at) < REFUSAL_REPEAT);
        if repeat {
            debug!("refused the same key again");
            return;
        }
        self.last_refusal = Some((text.clone(), now));
        self.view.show(Report::Error(text)).await;
    }

    /// The user's answer to [`Report::AskKey`]. A yes remembers the key for the peer's
    /// address, so that it is accepted from any port from now on, also if the connection
    /// that asked gave up while the user was thinking (the peer's next attempt gets in).
    async fn answer(&mut self, yes: bool) -> anyhow::Result<()> {
        let Some((conn, remote, key)) = self.asking.take() else {
            let text = "no question is open (/accept and /refuse answer one about a new key)";
            self.view.show(Report::Error(text.into())).await;
            return Ok(());
        };
        if !yes {
            self.handle.verify_key(conn, false).await?;
            let text = format!("refused key {} from {remote}", key.fingerprint());
            self.view.show(Report::Status(text)).await;
            return Ok(());
        }
        let known = self.opts.home.join(KNOWN_KEYS_FILE);
        match crate::trust::remember_peer(self.opts.to, key, &known) {
            Ok(()) => {
                let text = format!(
                    "key {} from {remote} accepted, and remembered for {} in {}",
                    key.fingerprint(),
                    self.opts.to,
                    known.display()
                );
                self.view.show(Report::Status(text)).await;
                self.handle.verify_key(conn, true).await?;
            }
            Err(e) => {
                self.handle.verify_key(conn, false).await?;
                self.view.show(Report::Error(e)).await;
            }
        }
        Ok(())
    }

    /// Exit code once the connection has closed while leaving.
    async fn finish(&self, reason: &CloseReason) -> u8 {
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
        let text = format!(
            "{undelivered} message(s) were not acknowledged by {}: {why}",
            self.peer_name()
        );
        self.view.show(Report::Error(text)).await;
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
        CloseReason::KeyRefused { .. } => "we refused the peer's key".into(),
        CloseReason::Reset => "the peer restarted".into(),
    }
}
