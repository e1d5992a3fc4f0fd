//! Reliable peer mode: the binary's side of it. The protocol-level behaviour (reconnects,
//! replacing the connection of a restarted peer, re-sending what it never acknowledged, key
//! questions, the half-close at end of input) is `chirp_peer::Session`, a sans-IO state
//! machine; without `--to`, `chirp_peer::Listener` first waits for a caller and judges its
//! key. This module only wires them up: standard input or the terminal UI in, the
//! `chirp_transport` driver for their requests, output formatting, and the advertisement on
//! the LAN (`chirp_lan::Advertiser`, withdrawn when the chat ends).
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
use chirp_lan::{Advertiser, LanPeer};
use chirp_peer::{Config, Input as SessionInput, KnownKeysPolicy, Output as SessionOutput};
use chirp_peer::{ListenOutput, Listener, Reply, Session, Transport};
use chirp_proto::{EndpointConfig, Event};
use chirp_transport::Handle;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, info_span};

use crate::files::FileWork;
use crate::input::{self, Input};
use crate::output::Output;

pub(crate) use chirp_peer::{KNOWN_KEYS_FILE, Report, ask_text};

/// Lines queued beyond what the transport accepted before standard input stops being read, so
/// that a peer that stops reading holds back whatever feeds us (memory stays bounded).
pub(crate) const MAX_PENDING: usize = 1024;

/// How long a chat that ended (Ctrl-C) waits for received files still being saved, to say how
/// their saves ended.
pub(crate) const SAVES_AFTER_EXIT: Duration = Duration::from_secs(30);

/// How long a peer that leaves before anyone called lets a refusal it just gave go out.
const EXIT_LINGER: Duration = Duration::from_millis(200);

/// Options of `chirp peer` in reliable mode.
#[derive(Debug, Clone)]
pub(crate) struct PeerOpts {
    pub(crate) bind: SocketAddr,
    /// The peer's address; `None`: wait for a caller.
    pub(crate) to: Option<SocketAddr>,
    /// The peer picked on the LAN (`--lan`), whose address is `to`.
    pub(crate) lan_peer: Option<LanPeer>,
    /// The name to advertise on the LAN (`None`: `--no-advertise`).
    pub(crate) advertise: Option<String>,
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
    /// Write a qlog trace of every connection into this directory.
    pub(crate) qlog: Option<PathBuf>,
    /// Where received files are saved.
    pub(crate) downloads: PathBuf,
    /// Offers from these keys are accepted without asking.
    pub(crate) auto_accept_from: Vec<Fingerprint>,
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

/// Prints a report in line mode, with file transfers' progress bars on a terminal. Delivery
/// reports and link snapshots are for the UI only.
pub(crate) fn print_with(out: Output, bars: Option<&crate::files::Bars>, report: Report) {
    if let Report::File(e) = report {
        match bars {
            Some(bars) => bars.show(out, &e),
            None => crate::files::print(out, &e),
        }
        return;
    }
    let print = |report| match bars {
        Some(bars) => bars.suspend(|| print_report(out, report)),
        None => print_report(out, report),
    };
    print(report);
}

fn print_report(out: Output, report: Report) {
    match report {
        Report::File(e) => crate::files::print(out, &e),
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
        Report::Path { peer, relayed } => out.path(&peer, relayed),
        Report::Delivered(_) | Report::Link(_) => {}
    }
}

/// Where reports go.
pub(crate) enum View {
    /// Printed on stdout, one line each (with progress bars for file transfers on a
    /// terminal).
    Lines(Output, Option<crate::files::Bars>),
    /// To the terminal UI's bridge, which must keep reading until the loop ends.
    Ui(mpsc::Sender<Report>),
}

impl View {
    pub(crate) async fn show(&self, report: Report) {
        match self {
            View::Lines(out, bars) => print_with(*out, bars.as_ref(), report),
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
    let config = endpoint_config(&opts, &identity);
    let options = chirp_transport::Options {
        qlog_dir: opts.qlog.clone(),
        ..chirp_transport::Options::default()
    };
    let (handle, events, task) = chirp_transport::spawn_with(socket, config, options)
        .context("cannot start the transport")?;
    let local = handle.local_addr();
    let fingerprint = identity.public().fingerprint();
    // On the LAN from now until the chat ends. A failure to advertise is shown, and the chat
    // goes on without it.
    let (advertiser, lan_note) = advertise(&opts, local, fingerprint);
    let not_advertised = match &advertiser {
        Some(Err(e)) => Some(format!("not advertised on the LAN: {e}")),
        _ => None,
    };
    let peer = match (&opts.lan_peer, opts.to) {
        (Some(p), _) => format!(
            "{} at {} (advertised key {})",
            p.name, p.addr, p.fingerprint
        ),
        (None, Some(to)) => to.to_string(),
        (None, None) => "whoever calls".into(),
    };
    let banner = format!(
        "chirp peer on {local}, talking to {peer} (reliable, encrypted; our fingerprint \
         {fingerprint}{}; /help for commands)",
        lan_note.as_deref().unwrap_or("")
    );
    let span = info_span!("peer", %local, to = ?opts.to);
    let (req_tx, req_rx) = mpsc::channel(64);
    // Hashing files to offer and saving received ones, on the blocking pool.
    let work = FileWork::new(opts.downloads.clone());
    let result = if opts.tui {
        let (report_tx, report_rx) = mpsc::channel(256);
        if let Some(text) = not_advertised {
            // The channel is new and empty: this fits.
            let _ = report_tx.try_send(Report::Error(text));
        }
        let ui = crate::peer_ui::Info {
            me: local.to_string(),
            peer: opts.to.map_or_else(|| "peer".into(), |to| to.to_string()),
            banner,
            idle_timeout: opts.idle_timeout,
            bell: opts.bell,
            waiting: opts.to.is_none(),
        };
        let phase = start(&opts);
        let view = View::Ui(report_tx.clone());
        let task_opts = opts.clone();
        let peer = tokio::spawn(
            async move {
                let transport = Running {
                    handle,
                    events,
                    task,
                };
                let result = drive(phase, &task_opts, transport, work, view, req_rx).await;
                // A failure (the socket, the transport) is shown in the UI, not only after it.
                if let Err(e) = &result {
                    let _ = report_tx.send(Report::Error(format!("{e:#}"))).await;
                }
                result
            }
            .instrument(span),
        );
        crate::peer_ui::run(ui, report_rx, req_tx, peer).await
    } else {
        let out = Output {
            json: opts.json,
            path: None,
        };
        out.status(&banner);
        if let Some(text) = not_advertised {
            out.error(&text);
        }
        read_stdin(req_tx);
        drive(
            start(&opts),
            &opts,
            Running {
                handle,
                events,
                task,
            },
            work,
            View::Lines(out, crate::files::Bars::for_stdout(opts.json)),
            req_rx,
        )
        .instrument(span)
        .await
    };
    // Goodbye packets, so that the peer leaves the others' lists at once. (The daemon is
    // stopped on its own thread; this waits a bounded time for it.)
    if let Some(Ok(adv)) = advertiser {
        let _ = tokio::task::spawn_blocking(move || adv.stop()).await;
    }
    result
}

/// The transport of `chirp peer`'s endpoint for `identity`.
fn endpoint_config(opts: &PeerOpts, identity: &Identity) -> EndpointConfig {
    let mut config = EndpointConfig {
        identity: Some(chirp_proto::handshake::StaticSecret(*identity.secret())),
        // A peer is a two-party chat: the only one who may open a connection to us is the peer
        // (anyone, while we wait for a caller: its key is judged before anything is taken).
        accept_only_from: opts.to.map(|to| to.ip()),
        // Its key is checked inside every handshake, whichever side opens it: nothing of
        // ours goes out, and nothing of its is taken, before the key passed (`on_verify`).
        verify_keys: true,
        // One connection, plus transients while a restarted peer replaces the old one.
        max_connections: 4,
        ..EndpointConfig::default()
    };
    config.transport.idle_timeout = opts.idle_timeout;
    config
}

/// Starts the LAN advertisement if asked to: the advertiser (or why it failed), and a note
/// for the banner.
fn advertise(
    opts: &PeerOpts,
    local: SocketAddr,
    fingerprint: Fingerprint,
) -> (
    Option<Result<Advertiser, chirp_lan::LanError>>,
    Option<String>,
) {
    let Some(name) = &opts.advertise else {
        return (None, None);
    };
    match Advertiser::start(name, local, fingerprint) {
        // Bound to a loopback address: nobody on the LAN could reach us.
        Ok(None) => (None, None),
        Ok(Some(adv)) => (
            Some(Ok(adv)),
            Some(format!("; on the LAN as {}", chirp_tui::safe::line(name))),
        ),
        Err(e) => (Some(Err(e)), None),
    }
}

/// How the chat starts: calling the peer, or waiting for one to call.
fn start(opts: &PeerOpts) -> Phase {
    let known = opts.home.join(KNOWN_KEYS_FILE);
    match opts.to {
        Some(to) => Phase::Chat(session(opts, to, opts.peer_key)),
        None => Phase::Listen(Listener::new(
            opts.peer_key,
            opts.can_ask,
            KnownKeysPolicy { pin: None, known },
        )),
    }
}

/// The session with the peer at `to`, with the key policy of `pin` and the known-keys file.
fn session(opts: &PeerOpts, to: SocketAddr, pin: Option<Fingerprint>) -> Session<KnownKeysPolicy> {
    let config = Config {
        to,
        idle_timeout: opts.idle_timeout,
        can_ask: opts.can_ask,
    };
    let policy = KnownKeysPolicy {
        pin,
        known: opts.home.join(KNOWN_KEYS_FILE),
    };
    new_session(opts, config, policy)
}

/// A peer session with file transfer as the options say (`--downloads`,
/// `--auto-accept-from`): every peer session is made here, direct or through `--via`.
pub(crate) fn new_session(
    opts: &PeerOpts,
    config: Config,
    policy: KnownKeysPolicy,
) -> Session<KnownKeysPolicy> {
    let mut session = Session::new(config, policy);
    enable_files(&FileOpts::of(opts), &mut session);
    session
}

/// What file transfer in a peer session takes from the options.
#[derive(Debug, Clone)]
pub(crate) struct FileOpts {
    /// `--downloads`.
    pub(crate) downloads: PathBuf,
    /// `--auto-accept-from`.
    auto_accept_from: Vec<Fingerprint>,
}

impl FileOpts {
    pub(crate) fn of(opts: &PeerOpts) -> Self {
        Self {
            downloads: opts.downloads.clone(),
            auto_accept_from: opts.auto_accept_from.clone(),
        }
    }
}

/// Turns on file transfer in `session` (its driver hashes and saves files with a
/// `files::FileWork` over `files.downloads`).
pub(crate) fn enable_files(files: &FileOpts, session: &mut Session<KnownKeysPolicy>) {
    let storage = chirp_files::FsStorage::new(files.downloads.clone());
    session.enable_files(Box::new(storage), files.auto_accept_from.clone());
    // A large file is hashed, a resumed one's partial file checked, and a received one made
    // durable, on the blocking pool
    // (`files::FileWork`), not on the loop's task.
    session.hash_files_outside();
    session.check_files_outside();
    session.finish_files_outside();
}

/// Where the chat loop is: waiting for a caller, or chatting.
// One per process, for its whole life: the sizes of the variants do not matter.
#[allow(clippy::large_enum_variant)]
enum Phase {
    Listen(Listener<KnownKeysPolicy>),
    Chat(Session<KnownKeysPolicy>),
}

impl Phase {
    fn handle_event(&mut self, ev: Event) {
        match self {
            Phase::Listen(l) => l.handle_event(now(), ev),
            Phase::Chat(s) => s.handle_event(now(), ev),
        }
    }

    fn handle_input(&mut self, input: SessionInput) {
        match self {
            Phase::Listen(l) => l.handle_input(input),
            Phase::Chat(s) => s.handle_input(now(), input),
        }
    }

    fn handle_timeout(&mut self) {
        if let Phase::Chat(s) = self {
            s.handle_timeout(now());
        }
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        match self {
            Phase::Listen(_) => None,
            Phase::Chat(s) => s.poll_timeout(),
        }
    }

    fn pending(&self) -> usize {
        match self {
            Phase::Listen(l) => l.pending(),
            Phase::Chat(s) => s.pending(),
        }
    }
}

pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// The endpoint's transport, running: its handle, its events, and its task.
struct Running {
    handle: Handle,
    events: mpsc::Receiver<Event>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Runs the chat (waiting for a caller first, in `Phase::Listen`) over the transport until it
/// ends, with `work` hashing and saving files for it; returns the exit code.
async fn drive(
    mut phase: Phase,
    opts: &PeerOpts,
    transport: Running,
    mut work: FileWork,
    view: View,
    mut requests: mpsc::Receiver<Request>,
) -> anyhow::Result<u8> {
    let Running {
        handle,
        mut events,
        task,
    } = transport;
    let mut requests_open = true;
    // Created once: a Ctrl-C that arrives while a handler runs is still seen.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if let Some(code) = pump(&mut phase, opts, &handle, &view, &work).await? {
            work.saves_after_exit(&view, SAVES_AFTER_EXIT).await;
            return Ok(code);
        }
        // In line mode, stop taking lines while too many wait for the transport (so that
        // whatever feeds standard input is held back). The terminal UI's sends come at typing
        // speed and its `Leave` must always get through.
        let held = matches!(view, View::Lines(..)) && phase.pending() >= MAX_PENDING;
        let timer = phase.poll_timeout();
        let sleep = async move {
            match timer {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            req = requests.recv(), if requests_open && !held => match req {
                Some(req) => on_request(&mut phase, &view, req).await?,
                None => {
                    // End of input: a half-close.
                    requests_open = false;
                    phase.handle_input(SessionInput::EndOfInput);
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
                phase.handle_event(ev);
            }
            () = sleep => phase.handle_timeout(),
            input = work.recv() => phase.handle_input(input),
            _ = &mut ctrl_c => phase.handle_input(SessionInput::Interrupt),
        }
    }
}

/// Carries out everything the listener, then the session, asks for until it asks for nothing
/// more. `Some(code)` once the chat is over (after letting the transport drain).
async fn pump(
    phase: &mut Phase,
    opts: &PeerOpts,
    handle: &Handle,
    view: &View,
    work: &FileWork,
) -> anyhow::Result<Option<u8>> {
    while let Phase::Listen(listener) = phase {
        let Some(out) = listener.poll_output() else {
            return Ok(None);
        };
        match out {
            ListenOutput::Transport(t) => {
                // Key verdicts: no reply.
                execute(handle, t).await?;
            }
            // In line mode, the question about a caller (the UI asks it itself).
            ListenOutput::Report(Report::AskKey { from, fingerprint })
                if matches!(view, View::Lines(..)) =>
            {
                let question = chirp_peer::listen::ask_text(&from, &fingerprint);
                view.show(Report::Status(format!(
                    "{question} Type /accept to chat with it (its key is then remembered for \
                     its address), /refuse to refuse it."
                )))
                .await;
            }
            ListenOutput::Report(r) => view.show(r).await,
            ListenOutput::Exit { code } => {
                // A refusal just given still goes out.
                let _ = tokio::time::timeout(EXIT_LINGER, handle.wait_idle()).await;
                return Ok(Some(code));
            }
            ListenOutput::Chosen { to, key, queued } => {
                debug!(%to, "chatting with the caller");
                // Its key is pinned for the rest of the chat: a restart of the peer (from any
                // port) is accepted, anyone else refused.
                let mut session = session(opts, to, Some(key.fingerprint()));
                for input in queued {
                    session.handle_input(now(), input);
                }
                *phase = Phase::Chat(session);
            }
        }
    }
    let Phase::Chat(session) = phase else {
        return Ok(None);
    };
    pump_session(session, handle, view, work).await
}

/// Carries out everything the session asks for until it asks for nothing more. `Some(code)`
/// once the chat is over (after letting the transport drain).
pub(crate) async fn pump_session(
    session: &mut Session<KnownKeysPolicy>,
    handle: &Handle,
    view: &View,
    work: &FileWork,
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
            SessionOutput::HashFile { path, chunk_size } => work.hash(path, chunk_size),
            SessionOutput::FinishFile(finish) => work.finish(finish),
            SessionOutput::CheckFile(check) => work.check(check),
        }
    }
    Ok(None)
}

/// One transport request; the reply if it has one.
pub(crate) async fn execute(handle: &Handle, t: Transport) -> anyhow::Result<Option<Reply>> {
    Ok(match t {
        Transport::Connect { to } => Some(Reply::Connect(handle.connect_or_reuse(to).await?)),
        Transport::Send { conn, data } => Some(Reply::Send(handle.send(conn, data).await?)),
        Transport::SendBulk { conn, data } => {
            Some(Reply::Send(handle.send_bulk(conn, data).await?))
        }
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
async fn on_request(phase: &mut Phase, view: &View, req: Request) -> anyhow::Result<()> {
    if let Some(input) = request_input(view, req).await? {
        phase.handle_input(input);
    }
    Ok(())
}

/// [`on_request`] for a session driven elsewhere (`chirp peer --via`).
pub(crate) async fn on_session_request(
    session: &mut Session<KnownKeysPolicy>,
    view: &View,
    req: Request,
) -> anyhow::Result<()> {
    if let Some(input) = request_input(view, req).await? {
        session.handle_input(now(), input);
    }
    Ok(())
}

/// What a request of the user asks of the session, line-mode commands parsed; `None` for a
/// command answered here (`/help`, an unknown one).
async fn request_input(view: &View, req: Request) -> anyhow::Result<Option<SessionInput>> {
    let input = match req {
        Request::Line(line) => match input::parse(&line) {
            Input::Message(m) => SessionInput::Send {
                data: Bytes::from(m),
                local_id: None,
            },
            Input::Stats => SessionInput::Stats,
            Input::Quit => SessionInput::Leave,
            // Without a number: the key question if one is open, else the oldest file offer.
            Input::Accept(None) => SessionInput::KeyAnswer(true),
            Input::Accept(Some(id)) => SessionInput::AcceptFile(Some(id)),
            Input::Refuse => SessionInput::KeyAnswer(false),
            Input::Send(path) => SessionInput::SendFile(PathBuf::from(path)),
            Input::Decline(id) => SessionInput::DeclineFile(id),
            Input::Cancel(id) => SessionInput::CancelFile(id),
            Input::Help => {
                if let View::Lines(out, _) = view {
                    out.info(input::HELP);
                }
                return Ok(None);
            }
            Input::Unknown(cmd) => {
                let text = format!(
                    "unknown command {cmd} (not sent); /help lists commands, //text sends a \
                     literal /"
                );
                view.show(Report::Error(text)).await;
                return Ok(None);
            }
        },
        Request::Session(input) => input,
        Request::InputFailed(e) => return Err(e).context("cannot read standard input"),
    };
    Ok(Some(input))
}

#[cfg(test)]
mod tests {
    //! The driver with real transports on loopback: two peers in this process, on one thread.

    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{Receiver as GateRx, RecvTimeoutError};
    use std::sync::{Arc, Mutex};

    use chirp_files::{Direction, FileEvent, FsStorage, Storage};

    use super::*;

    /// The longest the test waits for anything, and a held save for its gate.
    const WAIT: Duration = Duration::from_secs(20);

    /// Which operation of [`Slow`] waits for the gate.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Slowed {
        /// `finish`: the fsync and the rename of a received file.
        Finish,
        /// `read` of a partial file: the check of a resume.
        ReadPart,
    }

    /// The download directory, whose `slowed` operation says that it started and then waits
    /// until the test opens the gate, as on a slow disk (at most [`WAIT`]; at once if the
    /// test is gone); `ended` once it returns.
    struct Slow {
        disk: FsStorage,
        slowed: Slowed,
        started: mpsc::UnboundedSender<()>,
        gate: Arc<Mutex<GateRx<()>>>,
        ended: Arc<AtomicBool>,
    }

    impl Slow {
        /// Waits for the gate, then does `op`.
        fn gated<T>(&mut self, op: impl FnOnce(&mut FsStorage) -> io::Result<T>) -> io::Result<T> {
            let _ = self.started.send(());
            let result = match self.gate.lock() {
                Err(_) => Err(io::Error::other("poisoned")),
                Ok(gate) => match gate.recv_timeout(WAIT) {
                    Err(RecvTimeoutError::Timeout) => {
                        Err(io::Error::other("the test never opened the gate"))
                    }
                    // A message lets one operation through; the sender dropped, every one.
                    _ => op(&mut self.disk),
                },
            };
            self.ended.store(true, Ordering::SeqCst);
            result
        }
    }

    impl Storage for Slow {
        fn source_len(&mut self, path: &Path) -> io::Result<u64> {
            self.disk.source_len(path)
        }
        fn read_source(&mut self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.disk.read_source(path, offset, buf)
        }
        fn exists(&mut self, name: &str) -> bool {
            self.disk.exists(name)
        }
        fn len(&mut self, name: &str) -> io::Result<Option<u64>> {
            self.disk.len(name)
        }
        fn read(&mut self, name: &str, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if self.slowed == Slowed::ReadPart && name.ends_with(".part") {
                return self.gated(|disk| disk.read(name, offset, buf));
            }
            self.disk.read(name, offset, buf)
        }
        fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
            self.disk.write(name, offset, data)
        }
        fn finish(&mut self, part: &str, name: &str, size: u64) -> io::Result<()> {
            if self.slowed == Slowed::Finish {
                return self.gated(|disk| disk.finish(part, name, size));
            }
            self.disk.finish(part, name, size)
        }
        fn close(&mut self, name: &str) {
            self.disk.close(name);
        }
        fn remove(&mut self, name: &str) -> io::Result<()> {
            self.disk.remove(name)
        }
        fn close_source(&mut self, path: &Path) {
            self.disk.close_source(path);
        }
    }

    /// One peer's driver, running: what to ask of it, and everything it showed.
    struct Driver {
        requests: mpsc::Sender<Request>,
        reports: mpsc::Receiver<Report>,
        seen: Vec<Report>,
        task: JoinHandle<anyhow::Result<u8>>,
    }

    impl Drop for Driver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl Driver {
        async fn ask(&self, input: SessionInput) {
            self.requests
                .send(Request::Session(input))
                .await
                .expect("the driver runs");
        }

        async fn say(&self, text: &str) {
            let data = Bytes::copy_from_slice(text.as_bytes());
            self.ask(SessionInput::Send {
                data,
                local_id: None,
            })
            .await;
        }

        /// Waits (at most [`WAIT`]) until the driver shows a report that `f` accepts.
        async fn until(&mut self, what: &str, f: impl Fn(&Report) -> bool) {
            let deadline = tokio::time::Instant::now() + WAIT;
            while !self.seen.iter().any(&f) {
                match tokio::time::timeout_at(deadline, self.reports.recv()).await {
                    Ok(Some(r)) => self.seen.push(r),
                    Ok(None) => panic!("the driver ended before {what}: {:?}", self.seen),
                    Err(_) => panic!("no {what} within {WAIT:?}: {:?}", self.seen),
                }
            }
        }

        fn done(&self, direction: Direction) -> Option<&FileEvent> {
            self.seen.iter().find_map(|r| match r {
                Report::File(e @ FileEvent::Done { direction: d, .. }) if *d == direction => {
                    Some(e)
                }
                _ => None,
            })
        }
    }

    fn said(text: &'static str) -> impl Fn(&Report) -> bool {
        move |r| matches!(r, Report::Message { data, .. } if data == text.as_bytes())
    }

    /// Starts `chirp peer`'s driver (`drive`) on `socket`, as `run` does, with `work`.
    fn start_peer(
        socket: std::net::UdpSocket,
        identity: &Identity,
        opts: PeerOpts,
        work: FileWork,
    ) -> Driver {
        let config = endpoint_config(&opts, identity);
        let (handle, events, task) = chirp_transport::spawn(socket, config).expect("transport");
        let (requests, req_rx) = mpsc::channel(64);
        let (report_tx, reports) = mpsc::channel(1024);
        let transport = super::Running {
            handle,
            events,
            task,
        };
        let task = tokio::spawn(async move {
            let phase = start(&opts);
            drive(phase, &opts, transport, work, View::Ui(report_tx), req_rx).await
        });
        Driver {
            requests,
            reports,
            seen: Vec::new(),
            task,
        }
    }

    fn opts(
        home: PathBuf,
        to: SocketAddr,
        downloads: PathBuf,
        trusted: Vec<Fingerprint>,
    ) -> PeerOpts {
        PeerOpts {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            to: Some(to),
            lan_peer: None,
            advertise: None,
            json: false,
            idle_timeout: Duration::from_secs(30),
            home,
            peer_key: None,
            tui: false,
            bell: false,
            can_ask: false,
            qlog: None,
            downloads,
            auto_accept_from: trusted,
        }
    }

    /// Two `chirp peer` drivers on loopback, A and B, B trusting A's key (offers are accepted
    /// at once), B's file work on a disk whose `slowed` operation waits for the test's gate.
    struct Two {
        dir: tempfile::TempDir,
        a: Driver,
        b: Driver,
        /// B's download directory.
        dl_b: PathBuf,
        /// Says each time the slowed operation starts.
        started: mpsc::UnboundedReceiver<()>,
        /// A message lets one slowed operation through; dropped, every one.
        open_gate: Option<std::sync::mpsc::Sender<()>>,
        /// A slowed operation has returned.
        ended: Arc<AtomicBool>,
    }

    impl Two {
        fn start(slowed: Slowed) -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = |p: &str| dir.path().join(p);
            let (dl_a, dl_b) = (path("dl-a"), path("dl-b"));
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let sock_a = chirp_transport::bind(loopback).expect("bind");
            let sock_b = chirp_transport::bind(loopback).expect("bind");
            let (addr_a, addr_b) = (
                sock_a.local_addr().expect("addr"),
                sock_b.local_addr().expect("addr"),
            );
            let (id_a, id_b) = (
                Identity::generate().expect("key"),
                Identity::generate().expect("key"),
            );
            let (started_tx, started) = mpsc::unbounded_channel();
            let (open_gate, gate) = std::sync::mpsc::channel();
            let gate = Arc::new(Mutex::new(gate));
            let ended = Arc::new(AtomicBool::new(false));
            let (dl, op_ended) = (dl_b.clone(), Arc::clone(&ended));
            let slow = FileWork::with_storage(Arc::new(move || -> Box<dyn Storage + Send> {
                Box::new(Slow {
                    disk: FsStorage::new(dl.clone()),
                    slowed,
                    started: started_tx.clone(),
                    gate: Arc::clone(&gate),
                    ended: Arc::clone(&op_ended),
                })
            }));
            let a = start_peer(
                sock_a,
                &id_a,
                opts(path("home-a"), addr_b, dl_a.clone(), Vec::new()),
                FileWork::new(dl_a),
            );
            let trusted = vec![id_a.public().fingerprint()];
            let b = start_peer(
                sock_b,
                &id_b,
                opts(path("home-b"), addr_a, dl_b.clone(), trusted),
                slow,
            );
            Self {
                dir,
                a,
                b,
                dl_b,
                started,
                open_gate: Some(open_gate),
                ended,
            }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        /// Writes `data` as A's file `name` and has A offer it.
        async fn send(&self, name: &str, data: &[u8]) {
            std::fs::write(self.path(name), data).expect("write");
            self.a.ask(SessionInput::SendFile(self.path(name))).await;
        }

        /// Waits until the slowed operation has started.
        async fn held(&mut self, what: &str) {
            tokio::time::timeout(WAIT, self.started.recv())
                .await
                .unwrap_or_else(|_| panic!("B never started {what}"))
                .expect("the disk is there");
        }

        /// A line from A to B and one back, while the slowed operation is held (`line` says
        /// while what); both arrive before it ends.
        async fn lines_cross(&mut self, line: &'static str) {
            let (a, b) = (&mut self.a, &mut self.b);
            a.say(line).await;
            b.until("A's line", said(line)).await;
            b.say("and one back").await;
            a.until("B's line", said("and one back")).await;
            assert!(
                !self.ended.load(Ordering::SeqCst),
                "the lines crossed only after the slowed operation"
            );
        }

        /// What is left in B's download directory.
        fn left(&self) -> Vec<std::ffi::OsString> {
            let mut left: Vec<_> = std::fs::read_dir(&self.dl_b)
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            left.sort();
            left
        }
    }

    /// Lets one slowed operation of [`Two`]'s disk through.
    fn let_one_through(open_gate: &Option<std::sync::mpsc::Sender<()>>) {
        let gate = open_gate.as_ref().expect("not opened for good");
        gate.send(()).expect("the disk waits");
    }

    fn done(d: Direction) -> impl Fn(&Report) -> bool {
        move |r| matches!(r, Report::File(FileEvent::Done { direction, .. }) if *direction == d)
    }

    fn status(text: String) -> impl Fn(&Report) -> bool {
        move |r| matches!(r, Report::Status(t) if *t == text)
    }

    /// A's test file.
    fn tape() -> Vec<u8> {
        (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Waits (at most [`WAIT`]) for the driver's task to end; its exit code.
    async fn exit_of(d: &mut Driver) -> u8 {
        tokio::time::timeout(WAIT, &mut d.task)
            .await
            .expect("the driver ends")
            .expect("no panic")
            .expect("no error")
    }

    /// The receiver's save of a file (fsync and rename) is held by a slow disk: meanwhile,
    /// chat lines cross both ways through the real drivers and transports (all on this one
    /// thread: a save run on the loop would stall them all), and neither side says the file is
    /// done, nor is it under its name. Once the disk lets the save through, both say done and
    /// the file is there, byte for byte, with no partial file left.
    #[tokio::test(flavor = "current_thread")]
    async fn chat_flows_while_a_received_file_is_being_saved() {
        let mut t = Two::start(Slowed::Finish);
        let data = tape();
        t.send("tape.wav", &data).await;
        t.held("saving the file").await;

        // The save is held: chat goes on, both ways.
        t.lines_cross("a line while B saves").await;
        let (a, b) = (&mut t.a, &mut t.b);
        assert!(a.done(Direction::Send).is_none(), "{:?}", a.seen);
        assert!(b.done(Direction::Receive).is_none(), "{:?}", b.seen);
        assert!(!t.dl_b.join("tape.wav").exists());

        let_one_through(&t.open_gate);
        b.until("B's file_done", done(Direction::Receive)).await;
        a.until("A's file_done", done(Direction::Send)).await;
        let Some(FileEvent::Done { name, .. }) = b.done(Direction::Receive) else {
            unreachable!("waited for it");
        };
        assert_eq!(name, "tape.wav");
        assert!(std::fs::read(t.dl_b.join("tape.wav")).expect("saved") == data);
        assert_eq!(t.left(), ["tape.wav"], "no partial file left");
    }

    /// B holds the first part of the file from an earlier attempt: the check of that partial
    /// file (read and hashed whole) is held by a slow disk. Meanwhile chat lines cross both
    /// ways, B asks for nothing (its partial file does not grow) and nobody is done. Once the
    /// disk lets the check through, only the rest moves, and the file is saved byte for byte.
    #[tokio::test(flavor = "current_thread")]
    async fn chat_flows_while_a_resumed_files_partial_file_is_checked() {
        let mut t = Two::start(Slowed::ReadPart);
        let data = tape();
        std::fs::write(t.path("tape.wav"), &data).expect("write");
        let chunk = chirp_files::DEFAULT_CHUNK_SIZE;
        let mut source = FsStorage::new(PathBuf::new());
        let prepared = chirp_files::prepare(&mut source, &t.path("tape.wav"), chunk).expect("hash");
        let part = chirp_files::name::part_name("tape.wav", &prepared.root);
        let kept = 45 * chunk as usize;
        std::fs::create_dir_all(&t.dl_b).expect("mkdir");
        std::fs::write(t.dl_b.join(&part), &data[..kept]).expect("write");
        t.send("tape.wav", &data).await;
        t.held("checking the partial file").await;

        t.lines_cross("a line while B checks").await;
        let (a, b) = (&mut t.a, &mut t.b);
        let len = std::fs::metadata(t.dl_b.join(&part)).expect("part").len();
        assert_eq!(len, kept as u64, "no chunk before the check's result");
        assert!(a.done(Direction::Send).is_none(), "{:?}", a.seen);
        assert!(b.done(Direction::Receive).is_none(), "{:?}", b.seen);

        // Every read of the partial file goes through from now on.
        t.open_gate = None;
        b.until("B's file_done", done(Direction::Receive)).await;
        a.until("A's file_done", done(Direction::Send)).await;
        let Some(FileEvent::Done {
            name,
            resumed,
            moved,
            ..
        }) = b.done(Direction::Receive)
        else {
            unreachable!("waited for it");
        };
        assert_eq!(
            (name.as_str(), *resumed, *moved),
            ("tape.wav", kept as u64, (data.len() - kept) as u64)
        );
        assert!(std::fs::read(t.dl_b.join("tape.wav")).expect("saved") == data);
        assert_eq!(t.left(), ["tape.wav"], "no partial file left");
    }

    /// `/quit` while the received file is being saved: B says it waits for the save and stays
    /// (a line from A still gets through); once the disk lets the save through, A hears that
    /// the file arrived and B leaves with status 0.
    #[tokio::test(flavor = "current_thread")]
    async fn quit_during_a_save_waits_for_it_and_the_sender_hears_done() {
        let mut t = Two::start(Slowed::Finish);
        t.send("tape.wav", &tape()).await;
        t.held("saving the file").await;
        let (a, b) = (&mut t.a, &mut t.b);
        b.ask(SessionInput::Leave).await;
        let waiting = "leaving once file 1 (\"tape.wav\") is saved (every byte is in), so that \
                       the sender hears that it arrived: at most 10 s";
        b.until("B's wait", status(waiting.into())).await;
        a.say("still there?").await;
        b.until("A's line", said("still there?")).await;
        assert!(!b.task.is_finished(), "B left before the save");
        assert!(a.done(Direction::Send).is_none(), "{:?}", a.seen);

        let_one_through(&t.open_gate);
        a.until("A's file_done", done(Direction::Send)).await;
        b.until("B's file_done", done(Direction::Receive)).await;
        assert_eq!(exit_of(b).await, 0);
        assert_eq!(t.left(), ["tape.wav"]);
    }

    /// Ctrl-C while the received file is being saved: B says at once that the sender will
    /// not hear of it, waits for the save to end, says that the file was saved, and exits
    /// with 130.
    #[tokio::test(flavor = "current_thread")]
    async fn ctrl_c_during_a_save_says_that_the_file_was_saved() {
        let mut t = Two::start(Slowed::Finish);
        t.send("tape.wav", &tape()).await;
        t.held("saving the file").await;
        let b = &mut t.b;
        b.ask(SessionInput::Interrupt).await;
        let interrupted = "interrupted while file 1 (\"tape.wav\") was being saved: it will be \
                           saved, but the sender is not told that it arrived";
        b.until("B's note", status(interrupted.into())).await;
        assert!(!b.task.is_finished(), "B ended before the save");
        let_one_through(&t.open_gate);
        b.until("B's word", status("file 1 saved as \"tape.wav\"".into()))
            .await;
        assert_eq!(exit_of(b).await, 130);
        assert_eq!(t.left(), ["tape.wav"]);
    }
}
