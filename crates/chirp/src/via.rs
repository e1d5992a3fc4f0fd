//! `chirp peer --via SERVER --to NICK`: a peer chat through NATs, introduced by a chirp server
//! acting as a rendezvous (docs/PROTOCOL.md, chat protocol, "Meeting a peer").
//!
//! One UDP socket, one endpoint, two state machines on it: the chat client session with the
//! server (`chirp_chat::client::Session`, our key bound to `--nick`) and, once the server has
//! introduced us, the peer session (`chirp_peer::Session`) with the peer's key pinned to the
//! one the server gave. Sharing the socket is the point: the address the server observes for
//! us is our NAT's mapping of that socket, which is where the peer dials us, and our own
//! packets to the peer leave through the same mapping and open it for the peer's.
//! `chirp_peer::rendezvous::Rendezvous` decides what to ask and what to make of the answer;
//! this module only routes events by connection and carries out requests, like `peer::drive`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chirp_chat::client::{self, ClientConfig, driver};
use chirp_chat::wire::ServerMsg;
use chirp_keys::{Fingerprint, Identity};
use chirp_peer::rendezvous::{Answer, Rendezvous, relayed_address};
use chirp_peer::{Config, Input as SessionInput, KnownKeysPolicy, Session};
use chirp_proto::{EndpointConfig, Event};
use chirp_transport::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, info_span};

use crate::files::FileWork;
use crate::output::Output;
use crate::peer::{
    MAX_PENDING, PeerOpts, Report, Request, View, now, on_session_request, pump_session,
};

/// How long after the introduction the direct attempt may take before the chat moves to the
/// server's relay (or, without one, the user is told; the attempts go on).
pub(crate) const DIRECT_WAIT: Duration = Duration::from_secs(3);

/// What `--via` adds to the peer options.
#[derive(Debug, Clone)]
pub(crate) struct ViaOpts {
    /// The server, as given (its name in known_keys) and resolved.
    pub(crate) server_name: String,
    pub(crate) server: SocketAddr,
    /// `--server-key`: the server's pinned fingerprint.
    pub(crate) server_key: Option<Fingerprint>,
    /// Our nick on the server.
    pub(crate) nick: String,
    /// The peer's nick.
    pub(crate) to: String,
}

/// Our address on the way to `server`, with our socket's `port`: the local candidate we list
/// for a peer behind the same NAT. `None` if the system has no route there.
fn local_candidate(bind: SocketAddr, server: SocketAddr, port: u16) -> Option<SocketAddr> {
    if !bind.ip().is_unspecified() {
        return Some(SocketAddr::new(bind.ip(), port));
    }
    // Connecting a UDP socket sends nothing: it only asks the kernel for the route's source.
    let any: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(server).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

/// Runs `chirp peer --via` until the chat ends; returns the exit code.
pub(crate) async fn run(opts: PeerOpts, via: ViaOpts) -> anyhow::Result<u8> {
    let key_path = opts.home.join(crate::id::KEY_FILE);
    let (identity, _) = Identity::load_or_create(&key_path)
        .with_context(|| format!("cannot load the identity key {}", key_path.display()))?;
    if let Err(e) = chirp_chat::names::nick(&via.nick) {
        anyhow::bail!("bad --nick: {e}");
    }
    if let Err(e) = chirp_chat::names::nick(&via.to) {
        anyhow::bail!("bad --to (with --via, the peer's nick on the server): {e}");
    }
    let socket = crate::bind_socket(opts.bind)?;
    let secret = chirp_proto::handshake::StaticSecret(*identity.secret());
    let mut config = EndpointConfig {
        identity: Some(secret.clone()),
        // Nobody opens a connection to us: the peer's attempt meets ours (a simultaneous
        // open, which needs no accepting), and the server is dialled by us.
        accept_incoming: false,
        // Every key is judged inside its handshake: the server's by the chat session, the
        // peer's by the peer session (pinned to the key the server introduced).
        verify_keys: true,
        max_connections: 8,
        ..EndpointConfig::default()
    };
    config.transport.idle_timeout = opts.idle_timeout;
    let options = chirp_transport::Options {
        qlog_dir: opts.qlog.clone(),
        ..chirp_transport::Options::default()
    };
    let (handle, events, task) = chirp_transport::spawn_with(socket, config, options)
        .context("cannot start the transport")?;
    let local = handle.local_addr();
    let notices = Arc::new(Mutex::new(Vec::new()));
    let mut client_config = ClientConfig::new(via.server, via.nick.clone());
    client_config.identity = Some(secret);
    client_config.idle_timeout = opts.idle_timeout;
    let sink = Arc::clone(&notices);
    client_config.server_key_check = Some(crate::trust::server_key_check(
        vec![(via.server_name.clone(), via.server)],
        via.server_key,
        opts.home.join(crate::peer::KNOWN_KEYS_FILE),
        move |notice| {
            if let Ok(mut n) = sink.lock() {
                n.push(notice);
            }
        },
    ));
    let banner = format!(
        "chirp peer on {local}, asking {} to introduce us to {} (as {}; reliable, encrypted \
         end to end; our fingerprint {}; /help for commands)",
        via.server_name,
        via.to,
        via.nick,
        identity.public().fingerprint()
    );
    let link = Link::new(
        LinkTo {
            server_name: via.server_name.clone(),
            server: via.server,
            to: via.to.clone(),
            pin: opts.peer_key,
            bind: opts.bind,
            local: handle.local_addr(),
            relay_only: false,
        },
        opts.idle_timeout,
        opts.home.join(crate::peer::KNOWN_KEYS_FILE),
        opts.tui,
    );
    let state = Via {
        client: client::Session::new(
            client_config,
            Instant::now(),
            chirp_transport::random_seed(),
        ),
        link,
        notices,
        via: via.clone(),
        wait_reported: false,
        files: crate::peer::FileOpts::of(&opts),
    };
    let span = info_span!("peer", %local, via = %via.server, to = %via.to);
    let (req_tx, req_rx) = mpsc::channel(64);
    if opts.tui {
        let (report_tx, report_rx) = mpsc::channel(256);
        let ui = crate::peer_ui::Info {
            me: local.to_string(),
            peer: format!("{} via {}", via.to, via.server_name),
            banner,
            idle_timeout: opts.idle_timeout,
            bell: opts.bell,
            waiting: false,
        };
        let view = View::Ui(report_tx.clone());
        let peer = tokio::spawn(
            async move {
                let result = state.drive(handle, view, req_rx, events, task).await;
                if let Err(e) = &result {
                    let _ = report_tx.send(Report::Error(format!("{e:#}"))).await;
                }
                result
            }
            .instrument(span),
        );
        return crate::peer_ui::run(ui, report_rx, req_tx, peer).await;
    }
    let out = Output {
        json: opts.json,
        path: None,
    };
    out.status(&banner);
    crate::peer::read_stdin(req_tx);
    state
        .drive(
            handle,
            View::Lines(out, crate::files::Bars::for_stdout(opts.json)),
            req_rx,
            events,
            task,
        )
        .instrument(span)
        .await
}

/// The loop's state: the two sessions on the one endpoint.
struct Via {
    client: client::Session,
    /// The rendezvous and the peer connection it leads to.
    link: Link,
    /// First-contact notices of the server-key check (it runs inside `perform`).
    notices: Arc<Mutex<Vec<String>>>,
    via: ViaOpts,
    /// "Waiting for the peer to ask" was said.
    wait_reported: bool,
    /// File transfer on the peer session once it exists.
    files: crate::peer::FileOpts,
}

/// A peer connection through a rendezvous, beside a chat session on the same endpoint: asks
/// the server to introduce us to a nick, then runs a peer session with the key the server gave
/// pinned, direct if possible, else through the server's relay (moving back to a direct path
/// once it answers). `chirp peer --via` runs one for its chat; `chirp connect` one per DM file
/// transfer (`crate::dm`). The driver hands it the peer connection's events, its timer and the
/// server's `meet` answers; it carries out the transport requests of the path (relay, probes)
/// and says what the user should see as [`Report`]s.
pub(crate) struct Link {
    rendezvous: Rendezvous,
    /// Created when the server introduces the peer.
    peer: Option<Session<KnownKeysPolicy>>,
    /// The server, its name (for messages), the peer's nick.
    server: SocketAddr,
    server_name: String,
    to: String,
    idle_timeout: Duration,
    known_keys: std::path::PathBuf,
    /// Report the path at connection (the UI's status bar needs it; line mode names it in
    /// `peer_up` instead).
    path_on_connect: bool,
    /// When to give up waiting for the direct path (relay, or say so).
    direct_deadline: Option<Instant>,
    /// The relay token of the introduction, if the server relays.
    relay: Option<[u8; 16]>,
    /// The peer connection goes through the relay.
    relayed: bool,
    /// The peer's direct address (the introduction's candidate): probed while relayed.
    direct: Option<SocketAddr>,
    /// Relay only: never direct (no local candidates, the server withholds our address, the
    /// peer's is not dialled or probed).
    relay_only: bool,
    /// The peer session dials the relayed path: the transport is to use the relay first
    /// ([`Self::prepare`]).
    relay_pending: bool,
}

/// A `meet` to send: whom, our local addresses, and whether our address is to be withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MeetAsk {
    pub(crate) nick: String,
    pub(crate) local: Vec<SocketAddr>,
    pub(crate) relay_only: bool,
}

impl MeetAsk {
    /// Hands it to the chat session.
    pub(crate) fn send(self, session: &mut client::Session) {
        session.meet(self.nick, self.local, self.relay_only);
    }
}

/// Where a [`Link`] goes: the server that introduces, the nick, and our side of it.
pub(crate) struct LinkTo {
    /// The server's name (as given; for messages) and address.
    pub(crate) server_name: String,
    pub(crate) server: SocketAddr,
    /// The peer's nick.
    pub(crate) to: String,
    /// A key the peer must have besides the one the server gives (`--peer-key`).
    pub(crate) pin: Option<Fingerprint>,
    /// The address our socket was bound to, and its local address.
    pub(crate) bind: SocketAddr,
    pub(crate) local: SocketAddr,
    /// Through the server's relay only (`--relay-only`): our address is given to nobody.
    pub(crate) relay_only: bool,
}

impl Link {
    pub(crate) fn new(
        to: LinkTo,
        idle_timeout: Duration,
        known_keys: std::path::PathBuf,
        path_on_connect: bool,
    ) -> Self {
        // Relay only: no local address is listed either.
        let candidates: Vec<SocketAddr> = if to.relay_only {
            Vec::new()
        } else {
            local_candidate(to.bind, to.server, to.local.port())
                .into_iter()
                .collect()
        };
        Link {
            rendezvous: Rendezvous::new(&to.to, to.pin, candidates),
            peer: None,
            server: to.server,
            server_name: to.server_name,
            to: to.to,
            idle_timeout,
            known_keys,
            path_on_connect,
            direct_deadline: None,
            relay: None,
            relayed: false,
            direct: None,
            relay_only: to.relay_only,
            relay_pending: false,
        }
    }

    /// The peer session, once the server introduced the peer.
    pub(crate) fn peer(&mut self) -> Option<&mut Session<KnownKeysPolicy>> {
        self.peer.as_mut()
    }

    /// Whether the server introduced the peer (the peer session exists).
    pub(crate) fn has_peer(&self) -> bool {
        self.peer.is_some()
    }

    /// The peer connection goes through the relay.
    pub(crate) fn relayed(&self) -> bool {
        self.relayed
    }

    /// The chat session with the server is up (again): the `meet` to send, if still needed.
    pub(crate) fn welcome(&mut self) -> Option<MeetAsk> {
        let (nick, local) = self.rendezvous.welcome()?;
        Some(MeetAsk {
            nick,
            local,
            relay_only: self.relay_only,
        })
    }

    /// The server holds our `meet` for `ttl`.
    pub(crate) fn waiting(&mut self, now: Instant, ttl: Duration) {
        self.rendezvous.waiting(now, ttl);
    }

    /// When [`Self::on_timeout`] is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.rendezvous.poll_timeout(),
            self.peer.as_ref().and_then(Session::poll_timeout),
            self.direct_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The server's `meet` answer: the peer session is created (pinned to the key given).
    /// `Err`: the answer is unusable (what to tell the user). A second introduction is
    /// ignored.
    pub(crate) fn introduced(
        &mut self,
        now: Instant,
        answer: &Answer<'_>,
        reports: &mut Vec<Report>,
    ) -> Result<(), String> {
        if self.peer.is_some() {
            debug!("a second introduction; the peer session goes on");
            return Ok(());
        }
        let intro = self.rendezvous.answer(answer)?;
        // Relay only (ours, or the peer's: then the server gave no address to dial).
        let direct = intro.candidate.filter(|_| !self.relay_only);
        let synthetic = relayed_address(self.server);
        if direct.is_none() && intro.relay.is_none() {
            return Err(format!(
                "{} introduced {} without a relay, and the connection must be relayed (relay \
                 only); giving up",
                self.server_name, intro.nick
            ));
        }
        let seen = match intro.public {
            Some(public) => format!("seen at {public}"),
            None => "its address withheld (relay only)".to_owned(),
        };
        let how = match direct {
            Some(to) => format!("connecting to {to}"),
            None => format!(
                "connecting through {}'s relay only (the peer shows as {synthetic})",
                self.server_name
            ),
        };
        let text = format!(
            "{} introduced {} (key {}), {seen}; we are seen at {}; {how}",
            self.server_name,
            intro.nick,
            intro.key.fingerprint(),
            intro.you,
        );
        reports.push(Report::Status(text));
        let config = Config {
            to: direct.unwrap_or(synthetic),
            idle_timeout: self.idle_timeout,
            can_ask: false,
        };
        let policy = KnownKeysPolicy {
            // The key the server introduced, and no other.
            pin: Some(intro.key.fingerprint()),
            known: self.known_keys.clone(),
        };
        self.peer = Some(Session::new(config, policy));
        self.relay = intro.relay;
        self.direct = direct;
        if direct.is_some() {
            self.direct_deadline = Some(now + DIRECT_WAIT);
        } else {
            self.relay_pending = true;
        }
        Ok(())
    }

    /// Carries out what the introduction asks of the transport before the peer session's
    /// first packet: for a relay-only connection, the relay. Call it before pumping the peer
    /// session.
    pub(crate) async fn prepare(&mut self, handle: &Handle) -> anyhow::Result<()> {
        if !std::mem::take(&mut self.relay_pending) {
            return Ok(());
        }
        if let Some(token) = self.relay {
            let synthetic = relayed_address(self.server);
            handle
                .use_relay(Some((token, self.server, synthetic)))
                .await?;
            self.relayed = true;
        }
        Ok(())
    }

    /// An event of the endpoint about a connection that is not the chat session's.
    pub(crate) async fn on_event(
        &mut self,
        handle: &Handle,
        reports: &mut Vec<Report>,
        ev: Event,
    ) -> anyhow::Result<()> {
        let Some(peer) = self.peer.as_mut() else {
            // Before the introduction no other connection is ours: refuse, ignore the rest.
            if let Event::VerifyKey { conn, .. } = ev {
                handle.verify_key(conn, false).await?;
            }
            return Ok(());
        };
        let synthetic = relayed_address(self.server);
        match &ev {
            // Its key passed the pin: the peer is reached.
            Event::Connected { conn, remote, .. } => {
                self.direct_deadline = None;
                let relayed = *remote == synthetic;
                if relayed && let Some(direct) = self.direct {
                    // Keep trying the direct path; the connection moves there once it answers
                    // (PROTOCOL.md §5.7.1).
                    handle.probe_path(*conn, Some(direct)).await?;
                }
                if self.path_on_connect {
                    let peer = remote.to_string();
                    reports.push(Report::Path { peer, relayed });
                }
            }
            // A direct connection (or attempt) ended before we moved to the relay: the other
            // side may have moved already (its 3 s ran out just before ours would have, as our
            // attempt completed), or the direct path broke. Give the direct path another 3 s,
            // then follow it to the relay.
            Event::Closed { .. }
                if !self.relayed && self.relay.is_some() && self.direct_deadline.is_none() =>
            {
                self.direct_deadline = Some(now() + DIRECT_WAIT);
            }
            Event::PathChanged { remote, .. } => {
                let relayed = *remote == synthetic;
                let text = match (self.relayed, relayed) {
                    (true, false) => format!(
                        "the direct path to {} at {remote} works: the connection moved off the \
                         relay",
                        self.to
                    ),
                    (false, true) => format!(
                        "the direct path to {} stopped answering: the connection is back on the \
                         relay",
                        self.to
                    ),
                    _ => format!(
                        "{} now at {remote} (its NAT changed its mapping, or it moved); the \
                         connection follows it",
                        self.to
                    ),
                };
                reports.push(Report::Status(text));
                if self.relayed != relayed {
                    self.relayed = relayed;
                    let peer = remote.to_string();
                    reports.push(Report::Path { peer, relayed });
                }
            }
            _ => {}
        }
        peer.handle_event(now(), ev);
        Ok(())
    }

    /// The timer: the `meet` to send again, if it is time; the move to the relay once the
    /// direct attempt has had its time.
    pub(crate) async fn on_timeout(
        &mut self,
        handle: &Handle,
        now: Instant,
        reports: &mut Vec<Report>,
    ) -> anyhow::Result<Option<MeetAsk>> {
        let ask = self
            .rendezvous
            .handle_timeout(now)
            .map(|(nick, local)| MeetAsk {
                nick,
                local,
                relay_only: self.relay_only,
            });
        if let Some(peer) = self.peer.as_mut() {
            peer.handle_timeout(now);
        }
        if self.direct_deadline.is_some_and(|d| now >= d) {
            self.direct_deadline = None;
            match (self.relay, self.peer.as_mut()) {
                (Some(token), Some(peer)) => {
                    // Both sides reach this at about the same time (each counts from the
                    // introduction both got at once) and dial the relayed path together.
                    let synthetic = relayed_address(self.server);
                    handle
                        .use_relay(Some((token, self.server, synthetic)))
                        .await?;
                    peer.redirect(now, synthetic);
                    self.relayed = true;
                    let text = format!(
                        "no direct path to {} within {} s (both sides behind NATs that give each \
                         destination another port?): relaying through {}, still encrypted end \
                         to end (the peer shows as {synthetic})",
                        self.to,
                        DIRECT_WAIT.as_secs(),
                        self.server_name
                    );
                    reports.push(Report::Status(text));
                }
                _ => {
                    let text = format!(
                        "no direct path to {} yet (both sides behind NATs that give each \
                         destination another port?), and the server offers no relay; still \
                         trying",
                        self.to
                    );
                    reports.push(Report::Error(text));
                }
            }
        }
        Ok(ask)
    }

    /// The link is over: the endpoint stops relaying for it.
    pub(crate) async fn end(&mut self, handle: &Handle) -> anyhow::Result<()> {
        self.peer = None;
        self.direct_deadline = None;
        if std::mem::take(&mut self.relayed) || self.relay.is_some() {
            handle.use_relay(None).await?;
        }
        Ok(())
    }
}

impl Via {
    async fn drive(
        mut self,
        handle: Handle,
        view: View,
        mut requests: mpsc::Receiver<Request>,
        mut events: mpsc::Receiver<Event>,
        task: JoinHandle<std::io::Result<()>>,
    ) -> anyhow::Result<u8> {
        let mut requests_open = true;
        let mut work = FileWork::new(self.files.downloads.clone());
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            if let Some(code) = self.pump_all(&handle, &view, &work).await? {
                work.saves_after_exit(&view, crate::peer::SAVES_AFTER_EXIT)
                    .await;
                // The server hears that we leave; the peer connection has drained already.
                if let Some(conn) = self.client.connection() {
                    let _ = handle.close(conn, 0, "bye").await;
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), handle.wait_idle()).await;
                }
                return Ok(code);
            }
            // Lines are taken once there is a peer session to queue them (they wait in the
            // channel, holding standard input back, until the introduction).
            let held = match self.link.peer() {
                None => true,
                Some(p) => matches!(view, View::Lines(..)) && p.pending() >= MAX_PENDING,
            };
            let timer = [self.client.poll_timeout(), self.link.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                req = requests.recv(), if requests_open && !held => {
                    let Some(peer) = self.link.peer() else { continue };
                    match req {
                        Some(req) => on_session_request(peer, &view, req).await?,
                        None => {
                            requests_open = false;
                            peer.handle_input(now(), SessionInput::EndOfInput);
                        }
                    }
                }
                ev = events.recv() => {
                    let Some(ev) = ev else {
                        return match task.await {
                            Ok(Err(e)) => Err(e).context("the transport failed"),
                            Ok(Ok(())) => Err(anyhow::anyhow!("the transport stopped unexpectedly")),
                            Err(e) => Err(e).context("the transport task panicked"),
                        };
                    };
                    if self.client.connection() == Some(ev.conn()) {
                        self.client.handle_transport(now(), ev);
                    } else {
                        let mut reports = Vec::new();
                        self.link.on_event(&handle, &mut reports, ev).await?;
                        show_all(&view, reports).await;
                    }
                }
                () = driver::sleep_until(timer) => {
                    let now = now();
                    self.client.handle_timeout(now);
                    let mut reports = Vec::new();
                    if let Some(ask) = self.link.on_timeout(&handle, now, &mut reports).await? {
                        ask.send(&mut self.client);
                    }
                    show_all(&view, reports).await;
                }
                input = work.recv() => {
                    if let Some(peer) = self.link.peer() {
                        peer.handle_input(now(), input);
                    }
                }
                _ = &mut ctrl_c => match self.link.peer() {
                    Some(peer) => peer.handle_input(now(), SessionInput::Interrupt),
                    None => return Ok(130),
                },
            }
        }
    }

    /// Carries out what both sessions ask until neither asks for anything; `Some(code)` once
    /// the chat is over.
    async fn pump_all(
        &mut self,
        handle: &Handle,
        view: &View,
        work: &FileWork,
    ) -> anyhow::Result<Option<u8>> {
        loop {
            let key_check = self.client.config().server_key_check.clone();
            driver::perform(&mut self.client, handle, key_check.as_ref())
                .await
                .context("the transport stopped")?;
            let notices = self
                .notices
                .lock()
                .map(|mut n| std::mem::take(&mut *n))
                .unwrap_or_default();
            for n in notices {
                view.show(Report::Status(n)).await;
            }
            let mut again = false;
            while let Some(ev) = self.client.poll_event() {
                again = true;
                if let Some(code) = self.on_client(view, ev).await {
                    return Ok(Some(code));
                }
            }
            // Line mode names the path in `peer_up` and `stats`.
            let path = if self.link.relayed() {
                "relayed"
            } else {
                "direct"
            };
            let shown = match view {
                View::Lines(out, bars) => View::Lines(
                    Output {
                        path: Some(path),
                        ..*out
                    },
                    bars.clone(),
                ),
                View::Ui(tx) => View::Ui(tx.clone()),
            };
            self.link.prepare(handle).await?;
            if let Some(peer) = self.link.peer()
                && let Some(code) = pump_session(peer, handle, &shown, work).await?
            {
                return Ok(Some(code));
            }
            if !again {
                return Ok(None);
            }
        }
    }

    /// An event of the chat session with the server.
    async fn on_client(&mut self, view: &View, ev: client::Event) -> Option<u8> {
        let server = &self.via.server_name;
        match ev {
            client::Event::Welcome { nick, .. } => {
                if let Some(ask) = self.link.welcome() {
                    let text = format!(
                        "connected to {server} as {nick}; asking it to introduce us to {}",
                        ask.nick
                    );
                    view.show(Report::Status(text)).await;
                    ask.send(&mut self.client);
                }
            }
            client::Event::Server(ServerMsg::MeetWait { ttl_ms, .. }) => {
                self.link.waiting(now(), Duration::from_millis(ttl_ms));
                if !std::mem::replace(&mut self.wait_reported, true) {
                    let text = format!(
                        "waiting for {} to ask for us too (chirp peer --via {server} --to {})",
                        self.via.to, self.via.nick
                    );
                    view.show(Report::Status(text)).await;
                }
            }
            client::Event::Server(ServerMsg::Meet {
                nick,
                key,
                addr,
                local,
                you,
                relay,
            }) => {
                let answer = Answer {
                    nick: &nick,
                    key: &key,
                    addr,
                    local: &local,
                    you,
                    relay: relay.as_deref(),
                };
                let mut reports = Vec::new();
                let result = self.link.introduced(now(), &answer, &mut reports);
                if let Some(peer) = self.link.peer() {
                    // File transfer as in direct peer mode (`--downloads`, `--auto-accept-from`).
                    crate::peer::enable_files(&self.files, peer);
                }
                show_all(view, reports).await;
                if let Err(e) = result {
                    view.show(Report::Error(e)).await;
                    return Some(1);
                }
            }
            client::Event::Error { message, .. } => {
                view.show(Report::Error(format!("{server}: {message}")))
                    .await;
            }
            client::Event::Fatal(text) => {
                let text = format!("{server}: {text}");
                let alone = self.link.peer().is_none();
                view.show(Report::Error(text)).await;
                // Without a peer there is nothing left to do; with one, the peer connection
                // does not need the server any more.
                if alone {
                    return Some(1);
                }
            }
            client::Event::Disconnected { reason, .. } if self.link.peer().is_none() => {
                debug!(%reason, "rendezvous server connection lost");
            }
            _ => {}
        }
        None
    }
}

async fn show_all(view: &View, reports: Vec<Report>) {
    for r in reports {
        view.show(r).await;
    }
}
