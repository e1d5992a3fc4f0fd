//! `chirp connect` on a terminal: the chat session wired to the terminal UI.
//!
//! Two tasks, no shared state, no cycle of waits: the UI runner (`chirp_tui::run`) owns the
//! terminal; the session task owns the [`Session`] and the [`Bridge`] by `&mut`, and carries
//! out what the session asks of the transport task. The runner never waits on the session
//! task (it queues commands until the channel has room), the transport task never waits on
//! it (events go out only when its channel has room), and the session task waits only on
//! those two. All the translation is `chirp_client::bridge` (pure, unit-tested); the tmux test
//! (`tests/tui.rs`) covers the whole.
//!
//! DM file transfers (`/send`, `/accept`, `/decline`) run in the session task too: the same
//! [`crate::dm::DmFiles`] as line mode, with the bridge showing what they say. Their peer
//! connections share the chat session's endpoint; the files are hashed on the blocking pool.
//!
//! While the UI runs, logs are switched off ([`log_writer`]): the terminal is the UI's.

use std::io::{IsTerminal as _, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chirp_chat::client::{ClientConfig, Event, Session, driver};
use chirp_client::bridge::{self, Action, Bridge, End};
use chirp_client::logs::{self, ChatLog};
use chirp_keys::Fingerprint;
use chirp_tui::{UiCommand, UiEvent, UnixMs};
use tokio::sync::mpsc;

use crate::dm::DmFiles;

pub(crate) use chirp_client::link::STATS_EVERY;

/// Whether `chirp connect` should open the terminal UI: only on a terminal (both ways), and
/// not when line mode was asked for.
pub(crate) fn wanted(line: bool, json: bool) -> bool {
    !line && !json && std::io::stdout().is_terminal() && std::io::stdin().is_terminal()
}

/// Whether log lines may go to stderr; off while the UI owns the terminal.
static LOGS_TO_TERMINAL: AtomicBool = AtomicBool::new(true);

/// The writer behind `tracing`: stderr, or nowhere while the terminal UI runs (a log line
/// written into the alternate screen would corrupt it until the next full repaint).
pub(crate) fn log_writer() -> Box<dyn Write> {
    if LOGS_TO_TERMINAL.load(Ordering::Relaxed) {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::sink())
    }
}

/// Logs off the terminal for as long as it lives.
pub(crate) struct LogsOff;

impl LogsOff {
    pub(crate) fn new() -> LogsOff {
        LOGS_TO_TERMINAL.store(false, Ordering::Relaxed);
        LogsOff
    }
}

impl Drop for LogsOff {
    fn drop(&mut self) {
        LOGS_TO_TERMINAL.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Hands events to the UI. Once the UI is gone they are dropped: the session is finishing.
pub(crate) async fn emit(ui: &mpsc::Sender<UiEvent>, events: Vec<UiEvent>) {
    for e in events {
        if ui.send(e).await.is_err() {
            return;
        }
    }
}

/// Hands what the DM transfers said to the UI.
async fn show_files(ui: &mpsc::Sender<UiEvent>, bridge: &mut Bridge, dm: &mut DmFiles) {
    for note in dm.take_notes() {
        emit(ui, bridge.on_dm_file(note)).await;
    }
}

/// The session task: the session, the bridge and the DM transfers, transport events and UI
/// commands in, until the session ends.
#[allow(clippy::too_many_arguments)] // the task's channels and its files, each used once
async fn session_task(
    mut session: Session,
    mut bridge: Bridge,
    mut dm: DmFiles,
    ignore_path: PathBuf,
    mut log: Option<ChatLog>,
    handle: chirp_transport::Handle,
    mut tevents: mpsc::Receiver<chirp_proto::Event>,
    mut notices: mpsc::UnboundedReceiver<String>,
    ui: mpsc::Sender<UiEvent>,
    mut commands: mpsc::Receiver<UiCommand>,
) -> End {
    let key_check = session.config().server_key_check.clone();
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commands_open = true;
    let local = handle.local_addr();
    loop {
        if driver::perform(&mut session, &handle, key_check.as_ref())
            .await
            .is_err()
        {
            return End::Fatal("the transport stopped".into());
        }
        while let Some(ev) = session.poll_event() {
            match &ev {
                Event::Server(m) if dm.on_server(&mut session, m) => {
                    show_files(&ui, &mut bridge, &mut dm).await;
                    continue;
                }
                Event::Welcome { .. } => dm.welcome(&mut session),
                _ => {}
            }
            if let Some(l) = &mut log
                && !bridge.hides(&ev)
            {
                let logged = match &ev {
                    Event::Message(m) => l.append(m, bridge.nick()),
                    Event::Server(m) => match logs::Change::of(m) {
                        Some(c) => l.append_change(&c, bridge.nick()),
                        None => Ok(false),
                    },
                    _ => Ok(false),
                };
                if let Err(e) = logged {
                    let text = format!("cannot write the log: {e}; no more messages are logged");
                    emit(&ui, vec![UiEvent::Error(text)]).await;
                    log = None;
                }
            }
            let (out, end) = bridge.on_event(ev, now_ms(), Instant::now());
            emit(&ui, out).await;
            if let Some(end) = end {
                // Let the CLOSE go out (and be repeated if lost) before the endpoint goes.
                let _ = driver::perform(&mut session, &handle, None).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), handle.wait_idle()).await;
                return end;
            }
        }
        // The last ids logged, once per batch of events.
        if let Some(l) = &mut log
            && let Err(e) = l.flush()
        {
            let text = format!("cannot write the log: {e}; no more messages are logged");
            emit(&ui, vec![UiEvent::Error(text)]).await;
            log = None;
        }
        // What the events asked of the file transfer's peer session (after an introduction,
        // its first packet) and of the session (a `meet` for the next transfer, which may
        // start once the pump ended the last) goes out now: before waiting, or nothing may
        // wake us to send it.
        let pumped = dm.pump(&handle).await;
        dm.start_next(&mut session, local);
        show_files(&ui, &mut bridge, &mut dm).await;
        if let Err(e) = pumped {
            return End::Fatal(format!("{e:#}"));
        }
        if driver::perform(&mut session, &handle, key_check.as_ref())
            .await
            .is_err()
        {
            return End::Fatal("the transport stopped".into());
        }
        let wake = [session.poll_timeout(), dm.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            ev = tevents.recv() => match ev {
                Some(ev) if session.connection() == Some(ev.conn()) => {
                    session.handle_transport(Instant::now(), ev)
                }
                // Another connection: a file transfer's peer connection, or one of an
                // earlier server connection (which the session ignores).
                Some(ev) => {
                    let result = dm.on_event(&handle, ev).await;
                    show_files(&ui, &mut bridge, &mut dm).await;
                    if let Err(e) = result {
                        return End::Fatal(format!("{e:#}"));
                    }
                }
                None => return End::Fatal("the transport stopped".into()),
            },
            input = dm.hashed() => {
                dm.on_hashed(&mut session, input);
                show_files(&ui, &mut bridge, &mut dm).await;
            }
            cmd = commands.recv(), if commands_open => {
                // The UI closes its side only after handing over `Quit` (or giving up on it).
                let cmd = cmd.unwrap_or(UiCommand::Quit { reason: None });
                if matches!(cmd, UiCommand::Quit { .. }) {
                    commands_open = false;
                }
                let now = Instant::now();
                let mut out = match bridge.on_command(cmd, now) {
                    Action::File(cmd) => {
                        dm.command(&mut session, cmd.into());
                        show_files(&ui, &mut bridge, &mut dm).await;
                        Vec::new()
                    }
                    action => bridge::perform(&mut bridge, &mut session, now, action),
                };
                if bridge.ignores_mut().take_dirty()
                    && let Err(e) = bridge.ignores_mut().save(&ignore_path)
                {
                    out.push(UiEvent::Error(format!(
                        "cannot save the ignore list {}: {e}",
                        ignore_path.display()
                    )));
                }
                emit(&ui, out).await;
            }
            Some(text) = notices.recv() => {
                emit(&ui, vec![UiEvent::Info { buffer: None, text }]).await;
            }
            () = driver::sleep_until(wake) => {
                session.handle_timeout(Instant::now());
                let result = dm.on_timeout(&handle, &mut session).await;
                show_files(&ui, &mut bridge, &mut dm).await;
                if let Err(e) = result {
                    return End::Fatal(format!("{e:#}"));
                }
            }
            _ = tick.tick() => {
                let out = bridge.tick(Instant::now());
                emit(&ui, out).await;
                if bridge.connected() {
                    // The answer comes back as `Event::Stats`.
                    session.stats();
                }
            }
        }
    }
}

/// `chirp connect` with the terminal UI. `config` is complete except for the key check, which
/// is made here (from the `servers` given, (name, address) each, `pin` and the `known` keys
/// file) so that it reports through the UI. `bell`: ring on highlights; `local`: the ignore
/// list and the logs. Returns the exit code:
/// 0 when everything sent was stored.
pub(crate) async fn connect(
    mut config: ClientConfig,
    servers: Vec<(String, SocketAddr)>,
    pin: Option<Fingerprint>,
    known: PathBuf,
    bell: bool,
    local: crate::connect::Local,
    files: crate::dm::Setup,
) -> anyhow::Result<u8> {
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let greeting = crate::connect::greeting(&servers, &config.nick);
    // A first-contact notice goes to the status buffer: the terminal is the UI's.
    config.server_key_check = Some(crate::trust::server_key_check(
        servers,
        pin,
        known,
        move |notice| {
            let _ = notice_tx.send(notice);
        },
    ));
    let give_up = config.give_up_after;
    let bridge = Bridge::new(config.nick.clone()).with_ignores(local.ignores);
    let (handle, tevents, transport) =
        driver::start_transport(&config).context("cannot start the client")?;
    let session = Session::new(config, Instant::now(), chirp_transport::random_seed());
    let (ui_tx, ui_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    // Nothing the UI needs is lost: the channel has room for these.
    for e in bridge.start(greeting) {
        let _ = ui_tx.try_send(e);
    }
    let logs_off = LogsOff::new();
    let dm = DmFiles::new(files);
    let mut task = tokio::spawn(session_task(
        session,
        bridge,
        dm,
        local.ignore_path,
        local.log,
        handle,
        tevents,
        notice_rx,
        ui_tx,
        cmd_rx,
    ));
    let ui_config = chirp_tui::Config {
        bell,
        ..chirp_tui::Config::default()
    };
    let ui = chirp_tui::run(ui_config, ui_rx, cmd_tx).await;
    drop(logs_off);
    ui.context("the terminal UI failed")?;
    // The UI is gone; the session is making sure the server stored everything sent.
    let end = match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
        Ok(end) => end,
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "chirp: waiting up to {} s for the server to store what you sent (Ctrl+C leaves now)",
                give_up.as_secs()
            );
            tokio::select! {
                end = &mut task => end,
                _ = tokio::signal::ctrl_c() => {
                    task.abort();
                    transport.abort();
                    return Ok(130);
                }
                () = tokio::time::sleep(give_up + Duration::from_secs(5)) => {
                    task.abort();
                    Ok(End::Finished(usize::MAX))
                }
            }
        }
    };
    transport.abort();
    let end = end.context("the chat session task failed")?;
    match end {
        End::Finished(0) => Ok(0),
        End::Finished(usize::MAX) => {
            anyhow::bail!("the server could not be reached to store what you sent")
        }
        End::Finished(n) => anyhow::bail!(
            "{n} message(s) were never acknowledged by the server (it could not be reached)"
        ),
        End::Fatal(msg) => anyhow::bail!("{msg}"),
    }
}
