//! Reliable peer mode: the binary's side of it. The protocol-level behaviour (reconnects,
//! replacing the connection of a restarted peer, re-sending what it never acknowledged, key
//! questions, the half-close at end of input) is `chirp_peer::Session`, a sans-IO state
//! machine; this module only wires it up: standard input or the terminal UI in, the
//! `chirp_transport` driver for its requests, and output formatting.
//!
//! The driver loop ([`drive`]) follows the sans-IO rule: after every input (a [`Request`]
//! from the user, an event of the transport, a timer, Ctrl-C) it polls the session's output
//! until there is none, carrying out each transport request and handing back its reply at
//! once. Line mode prints reports ([`print`]); the terminal UI shows them (`peer_ui`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chirp_keys::{Fingerprint, Identity};
use chirp_peer::{Config, Input as SessionInput, KnownKeysPolicy, Output as SessionOutput};
use chirp_peer::{Reply, Session, Transport};
use chirp_proto::{EndpointConfig, Event};
use chirp_transport::Handle;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, info_span};

use crate::input::{self, Input};
use crate::output::Output;

pub(crate) use chirp_peer::{KNOWN_KEYS_FILE, Report, ask_text};

/// Lines queued beyond what the transport accepted before standard input stops being read, so
/// that a peer that stops reading holds back whatever feeds us (memory stays bounded).
pub(crate) const MAX_PENDING: usize = 1024;

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
    /// A request of the terminal UI (through `chirp_client::peer_bridge`): a message with the
    /// UI's id, the link statistics, leaving, a key answer.
    Session(SessionInput),
    /// Standard input failed.
    InputFailed(std::io::Error),
}

/// Prints a report in line mode. Delivery reports and link snapshots are for the UI only.
pub(crate) fn print(out: Output, report: Report) {
    match report {
        Report::Status(text) => out.status(&text),
        Report::Up { peer, .. } => out.peer_up(&peer),
        Report::Down { peer, reason } => out.peer_down(&peer, &reason),
        Report::Message { from, data } => out.message(&from, &data),
        Report::Error(text) | Report::Failed { reason: text, .. } => out.error(&text),
        Report::Stats { peer, stats } => out.stats(&peer, &stats),
        Report::AskKey { from, fingerprint } => out.status(&format!(
            "{} Type /accept to trust it (it is then remembered for the peer), /refuse to \
             refuse it.",
            ask_text(&from, &fingerprint)
        )),
        Report::Delivered(_) | Report::Link(_) => {}
    }
}

/// Where reports go.
pub(crate) enum View {
    /// Printed on stdout, one line each.
    Lines(Output),
    /// To the terminal UI's bridge, which must keep reading until the loop ends.
    Ui(mpsc::Sender<Report>),
}

impl View {
    pub(crate) async fn show(&self, report: Report) {
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
/// holds back whatever feeds us). End of input closes the channel, which means a half-close.
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
        let session = session(&opts);
        let view = View::Ui(report_tx.clone());
        let peer = tokio::spawn(
            async move {
                let result = drive(session, handle, view, req_rx, events, task).await;
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
    let out = Output {
        json: opts.json,
        path: None,
    };
    out.status(&banner);
    read_stdin(req_tx);
    drive(
        session(&opts),
        handle,
        View::Lines(out),
        req_rx,
        events,
        task,
    )
    .instrument(span)
    .await
}

/// The session for `opts`, with the key policy of `--peer-key` and the known-keys file.
fn session(opts: &PeerOpts) -> Session<KnownKeysPolicy> {
    let config = Config {
        to: opts.to,
        idle_timeout: opts.idle_timeout,
        can_ask: opts.can_ask,
    };
    let policy = KnownKeysPolicy {
        pin: opts.peer_key,
        known: opts.home.join(KNOWN_KEYS_FILE),
    };
    Session::new(config, policy)
}

pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs `session` over the transport until it ends; returns the exit code.
async fn drive(
    mut session: Session<KnownKeysPolicy>,
    handle: Handle,
    view: View,
    mut requests: mpsc::Receiver<Request>,
    mut events: mpsc::Receiver<Event>,
    task: JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<u8> {
    let mut requests_open = true;
    // Created once: a Ctrl-C that arrives while a handler runs is still seen.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if let Some(code) = pump(&mut session, &handle, &view).await? {
            return Ok(code);
        }
        // In line mode, stop taking lines while too many wait for the transport (so that
        // whatever feeds standard input is held back). The terminal UI's sends come at typing
        // speed and its `Leave` must always get through.
        let held = matches!(view, View::Lines(_)) && session.pending() >= MAX_PENDING;
        let timer = session.poll_timeout();
        let sleep = async move {
            match timer {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = requests.recv(), if requests_open && !held => match req {
                Some(req) => on_request(&mut session, &view, req).await?,
                None => {
                    // End of input: a half-close.
                    requests_open = false;
                    session.handle_input(now(), SessionInput::EndOfInput);
                }
            },
            ev = events.recv() => {
                let Some(ev) = ev else {
                    // Report why the transport stopped rather than just that it did.
                    return match task.await {
                        Ok(Err(e)) => Err(e).context("the transport failed"),
                        Ok(Ok(())) => Err(anyhow::anyhow!("the transport stopped unexpectedly")),
                        Err(e) => Err(e).context("the transport task panicked"),
                    };
                };
                session.handle_event(now(), ev);
            }
            () = sleep => session.handle_timeout(now()),
            _ = &mut ctrl_c => session.handle_input(now(), SessionInput::Interrupt),
        }
    }
}

/// Carries out everything the session asks for until it asks for nothing more. `Some(code)`
/// once the chat is over (after letting the transport drain).
pub(crate) async fn pump(
    session: &mut Session<KnownKeysPolicy>,
    handle: &Handle,
    view: &View,
) -> anyhow::Result<Option<u8>> {
    while let Some(out) = session.poll_output() {
        match out {
            SessionOutput::Transport(t) => {
                if let Some(reply) = execute(handle, t).await? {
                    session.handle_reply(now(), reply);
                }
            }
            SessionOutput::Report(r) => view.show(r).await,
            SessionOutput::Exit { code, linger } => {
                // If our CLOSE (which carries our final acknowledgements) is lost, the peer's
                // next packet is answered with another while we linger.
                let _ = tokio::time::timeout(linger, handle.wait_idle()).await;
                return Ok(Some(code));
            }
            SessionOutput::Fatal(text) => anyhow::bail!(text),
        }
    }
    Ok(None)
}

/// One transport request; the reply if it has one.
async fn execute(handle: &Handle, t: Transport) -> anyhow::Result<Option<Reply>> {
    Ok(match t {
        Transport::Connect { to } => Some(Reply::Connect(handle.connect_or_reuse(to).await?)),
        Transport::Send { conn, data } => Some(Reply::Send(handle.send(conn, data).await?)),
        Transport::Finish { conn } => Some(Reply::Finish(handle.finish(conn).await?)),
        Transport::Stats { conn } => Some(Reply::Stats(handle.stats(conn).await?.map(Box::new))),
        Transport::Close { conn, code, reason } => {
            handle.close(conn, code, &reason).await?;
            None
        }
        Transport::Abort { conn, code, reason } => {
            handle.abort(conn, code, &reason).await?;
            None
        }
        Transport::VerifyKey { conn, accept } => {
            handle.verify_key(conn, accept).await?;
            None
        }
        Transport::SetAcceptIncoming(accept) => {
            handle.set_accept_incoming(accept).await?;
            None
        }
    })
}

/// A request of the user: line-mode commands are parsed here, the rest goes to the session.
pub(crate) async fn on_request(
    session: &mut Session<KnownKeysPolicy>,
    view: &View,
    req: Request,
) -> anyhow::Result<()> {
    let input = match req {
        Request::Line(line) => match input::parse(&line) {
            Input::Message(m) => SessionInput::Send {
                data: Bytes::from(m),
                local_id: None,
            },
            Input::Stats => SessionInput::Stats,
            Input::Quit => SessionInput::Leave,
            Input::Accept => SessionInput::KeyAnswer(true),
            Input::Refuse => SessionInput::KeyAnswer(false),
            Input::Help => {
                if let View::Lines(out) = view {
                    out.info(input::HELP);
                }
                return Ok(());
            }
            Input::Unknown(cmd) => {
                let text = format!(
                    "unknown command {cmd} (not sent); /help lists commands, //text sends a \
                     literal /"
                );
                view.show(Report::Error(text)).await;
                return Ok(());
            }
        },
        Request::Session(input) => input,
        Request::InputFailed(e) => return Err(e).context("cannot read standard input"),
    };
    session.handle_input(now(), input);
    Ok(())
}
