//! `chirp peer` on a terminal: the peer chat loop (`peer`) wired to the terminal UI
//! (`chirp_tui`), as `tui` does for `chirp connect`.
//!
//! Three tasks, no shared state: the peer loop owns the connection, the UI runner owns the
//! terminal, and the bridge task in between owns a [`Bridge`], which turns the loop's
//! [`Report`]s into [`UiEvent`]s and [`UiCommand`]s into [`Request`]s. The bridge is pure
//! (time comes in as arguments), so the mapping is unit-tested here; the tmux test
//! (`tests/tui.rs`) covers the whole.
//!
//! What peer mode means for the UI:
//! - **One conversation.** The peer is a direct-message buffer named by its address, opened
//!   at start; the UI runs with `Config::peer`, which refuses the commands that need a server.
//!   There is no history to page through: the buffer says so at once.
//! - **Delivery marks.** A message is pending until the peer's transport acknowledges it
//!   (`Report::Delivered`), which is as close to "stored" as a server-less chat gets.
//! - **`/me`.** An action travels as the text `/me …` (what a line-mode peer types as `//me …`),
//!   and an incoming `/me …` is shown as an action.
//! - **The link.** Once a second the loop is asked for its statistics; the status bar gets the
//!   RTT, retransmissions and the loss over the last minute ([`LossWindow`]).
//!
//! The bridge never waits on the loop: requests queue in the bridge and go out as the channel
//! has room, because the loop itself waits on the bridge to take its reports.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chirp_client::peer_bridge::Bridge;
pub(crate) use chirp_client::peer_bridge::Info;
use chirp_peer::Input;
use chirp_tui::{UiCommand, UiEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::peer::{Report, Request};
use crate::tui::{LogsOff, STATS_EVERY, emit, now_ms};

/// The bridge task: reports and UI commands in, until the peer loop ends. Returns the last
/// error reported.
async fn bridge_task(
    mut bridge: Bridge,
    mut reports: mpsc::Receiver<Report>,
    requests: mpsc::Sender<Request>,
    ui: mpsc::Sender<UiEvent>,
    mut commands: mpsc::Receiver<UiCommand>,
) -> Option<String> {
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commands_open = true;
    // Requests the loop has not taken yet (it may be busy handing us reports).
    let mut outbox: VecDeque<Request> = VecDeque::new();
    loop {
        tokio::select! {
            report = reports.recv() => {
                // The loop has ended (and said why, if it failed).
                let Some(report) = report else {
                    return bridge.last_error().map(str::to_owned);
                };
                let out = bridge.on_report(report, now_ms(), Instant::now());
                emit(&ui, out).await;
            }
            cmd = commands.recv(), if commands_open => {
                // The UI closes its side only after handing over `Quit` (or giving up on it).
                let cmd = cmd.unwrap_or(UiCommand::Quit { reason: None });
                if matches!(cmd, UiCommand::Quit { .. }) {
                    commands_open = false;
                }
                let (req, out) = bridge.on_command(cmd);
                outbox.extend(req.map(Request::Session));
                emit(&ui, out).await;
            }
            permit = requests.reserve(), if !outbox.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(req) = outbox.pop_front() {
                        permit.send(req);
                    }
                }
                // The loop is gone; its reports end soon, and with them this task.
                Err(_) => outbox.clear(),
            },
            _ = tick.tick() => {
                // Skipped when the loop is busy: a status bar a second late is no loss.
                if bridge.connected() && outbox.is_empty() {
                    let _ = requests.try_send(Request::Session(Input::Link));
                }
            }
        }
    }
}

/// Runs the UI for the peer loop `peer` (already started, reporting into `reports` and
/// reading `requests`) until the user leaves and the loop has finished. Returns its exit code.
pub(crate) async fn run(
    info: Info,
    reports: mpsc::Receiver<Report>,
    requests: mpsc::Sender<Request>,
    mut peer: JoinHandle<anyhow::Result<u8>>,
) -> anyhow::Result<u8> {
    let (ui_tx, ui_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let bridge = Bridge::new(info.clone());
    // Nothing the UI needs is lost: the channel has room for these.
    for e in bridge.start() {
        let _ = ui_tx.try_send(e);
    }
    let config = chirp_tui::Config {
        peer: true,
        bell: info.bell,
        ..chirp_tui::Config::default()
    };
    let logs_off = LogsOff::new();
    let bridge = tokio::spawn(bridge_task(bridge, reports, requests, ui_tx, cmd_rx));
    // Even if the UI fails, its command channel closes, the bridge asks the loop to leave, and
    // what was sent still gets its chance to be acknowledged below.
    let ui = chirp_tui::run(config, ui_rx, cmd_tx).await;
    drop(logs_off);
    // The UI is gone and the loop is leaving: it waits for the peer to acknowledge everything.
    let code = match tokio::time::timeout(Duration::from_secs(1), &mut peer).await {
        Ok(code) => code,
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "chirp: waiting up to {} s for {} to acknowledge what you sent (Ctrl+C leaves now)",
                info.idle_timeout.as_secs(),
                info.peer
            );
            // Ctrl+C is the loop's own to handle now that the terminal is back to normal.
            peer.await
        }
    };
    let last_error = bridge.await.ok().flatten();
    ui.context("the terminal UI failed")?;
    let code = code.context("the peer task panicked")??;
    // 1: the chat failed (a refused key, messages never acknowledged); say why again, now
    // that the screen that said it is gone. (130 is Ctrl+C, which needs no explanation.)
    if code == 1 {
        if let Some(e) = last_error {
            let _ = writeln!(std::io::stderr(), "chirp: {e}");
        }
    }
    Ok(code)
}
