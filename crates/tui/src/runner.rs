//! The terminal side: raw mode, the alternate screen, and the loop that feeds the [`App`] from
//! the keyboard, the network channel and its timer.
//!
//! The loop only ever waits in one `select!`, on the terminal's event stream, the network's
//! event channel, room in the command channel (while commands are queued), and the App's
//! timer (during a reconnect countdown, when a typing notice expires, and when a read marker is
//! due). It draws after an input only if the App says something changed, and it drains
//! whatever events are already queued before drawing, so a burst of a thousand messages costs
//! one frame, and an idle chat costs nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event, EventStream};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures_core::Stream;
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use tokio::sync::mpsc;
use tracing::debug;

use crate::api::{UiCommand, UiEvent, UnixMs};
use crate::app::{App, Config};

/// Network events handled before the screen is drawn again, so a burst is drawn once but the
/// keyboard still gets a turn.
const EVENT_BATCH: usize = 512;
/// How long a quitting UI waits for the network side to take its `Quit`.
const QUIT_GRACE: Duration = Duration::from_secs(1);
/// How often the local time zone is looked at again (daylight saving).
const TZ_CHECK: Duration = Duration::from_secs(60);

/// Wall-clock time for the App.
fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn local_offset() -> i32 {
    chrono::Local::now().offset().local_minus_utc()
}

/// Whether the terminal is in our mode (raw, alternate screen) and needs restoring.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was: cooked mode, main screen, no bracketed paste, cursor
/// shown. Acts once per [`TerminalGuard::enter`]: the panic hook restores, then unwinding
/// drops the guard, and a second "leave the alternate screen" would move the cursor back to
/// where it was saved, so the shell's next lines would overwrite the panic message.
fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = disable_raw_mode();
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Raw mode and the alternate screen for as long as it lives. Dropping it (also while
/// unwinding) restores the terminal, and a panic hook restores it *before* the panic message
/// is printed, so the message is readable and the shell is usable after any exit.
#[derive(Debug)]
pub struct TerminalGuard {
    _private: (),
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen and enables bracketed paste.
    pub fn enter() -> io::Result<TerminalGuard> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, an error below still restores the terminal through Drop.
        let guard = TerminalGuard { _private: () };
        execute!(io::stdout(), EnterAlternateScreen, EnableBracketedPaste)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

async fn next_input<S>(stream: &mut S) -> Option<io::Result<Event>>
where
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// A sleep until `at` (wall clock), or forever.
async fn sleep_until(at: Option<UnixMs>) {
    match at {
        Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
async fn terminate_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup());
    match (term, hup) {
        (Ok(mut term), Ok(mut hup)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Queues commands for the network; a `Quit` starts the grace period after which the UI
/// leaves whether or not the network took it.
fn enqueue(
    cmds: Vec<UiCommand>,
    outbox: &mut VecDeque<UiCommand>,
    quit_by: &mut Option<tokio::time::Instant>,
) {
    for cmd in cmds {
        if matches!(cmd, UiCommand::Quit { .. }) && quit_by.is_none() {
            *quit_by = Some(tokio::time::Instant::now() + QUIT_GRACE);
        }
        outbox.push_back(cmd);
    }
}

/// Runs the chat UI on this terminal until the user quits (or stdin ends).
///
/// `events` brings what the network reports; `commands` takes what the user asks for. The UI
/// never waits on the network: commands queue here until the channel has room, and the last
/// one before returning is always [`UiCommand::Quit`] (given up to a second to be taken). When
/// `events` closes, the status bar says the link is gone and the UI stays up until the user
/// quits, so the conversation can still be read.
///
/// Nothing else may write to the terminal meanwhile: send logs to a file, or nowhere.
pub async fn run(
    config: Config,
    events: mpsc::Receiver<UiEvent>,
    commands: mpsc::Sender<UiCommand>,
) -> io::Result<()> {
    let _guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    let mut app = App::new(config);
    app.set_utc_offset(local_offset());
    let mut input = EventStream::new();
    let bell = |out: &mut CrosstermBackend<io::Stdout>| {
        out.write_all(b"\x07")?;
        Write::flush(out)
    };
    drive(
        &mut terminal,
        &mut input,
        &mut app,
        events,
        commands,
        terminate_signal(),
        bell,
    )
    .await
}

/// The loop of [`run`], over any backend and input stream, so that tests can run it on
/// ratatui's `TestBackend` with keys from a channel. Returns once a `Quit` was handed over
/// (or its grace period ran out).
async fn drive<B, S>(
    terminal: &mut Terminal<B>,
    input: &mut S,
    app: &mut App,
    mut events: mpsc::Receiver<UiEvent>,
    commands: mpsc::Sender<UiCommand>,
    terminate: impl Future<Output = ()>,
    mut bell: impl FnMut(&mut B) -> io::Result<()>,
) -> io::Result<()>
where
    B: Backend,
    S: Stream<Item = io::Result<Event>> + Unpin,
{
    let mut tz_checked = Instant::now();
    let mut outbox: VecDeque<UiCommand> = VecDeque::new();
    let mut events_open = true;
    let mut quit_by: Option<tokio::time::Instant> = None;
    let mut terminated = false;
    tokio::pin!(terminate);

    loop {
        if app.take_full_redraw() {
            terminal.clear()?;
        }
        if app.take_dirty() {
            terminal.draw(|frame| app.render(frame))?;
        }
        if app.take_bell() {
            bell(terminal.backend_mut())?;
        }
        if quit_by.is_some() && outbox.is_empty() {
            break;
        }
        let timer = app.poll_timeout();
        let quit_deadline = quit_by;
        tokio::select! {
            input_event = next_input(input) => match input_event {
                Some(Ok(Event::Key(key))) => {
                    let cmds = app.handle_key(key, now_ms());
                    enqueue(cmds, &mut outbox, &mut quit_by);
                }
                Some(Ok(Event::Paste(text))) => app.handle_paste(&text, now_ms()),
                Some(Ok(Event::Resize(..))) => app.handle_resize(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                // The terminal is gone: nothing more can be typed.
                None => enqueue(vec![UiCommand::Quit { reason: None }], &mut outbox, &mut quit_by),
            },
            event = events.recv(), if events_open => match event {
                Some(event) => {
                    app.handle_event(event, now_ms());
                    for _ in 1..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(event) => app.handle_event(event, now_ms()),
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    debug!("network event channel closed");
                    events_open = false;
                    app.network_gone(now_ms());
                }
            },
            permit = commands.reserve(), if !outbox.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(cmd) = outbox.pop_front() {
                        permit.send(cmd);
                    }
                }
                // Nobody takes commands any more; quitting needs nobody's consent.
                Err(_) => {
                    outbox.clear();
                    if quit_by.is_none() {
                        app.network_gone(now_ms());
                    }
                }
            },
            () = sleep_until(timer) => app.handle_timeout(now_ms()),
            () = async move {
                match quit_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => break,
            () = &mut terminate, if !terminated => {
                terminated = true;
                enqueue(vec![UiCommand::Quit { reason: None }], &mut outbox, &mut quit_by);
            }
        }
        // Read markers and typing notices the App decided on after an event, a paste or a
        // timeout.
        enqueue(app.take_commands(), &mut outbox, &mut quit_by);
        if tz_checked.elapsed() >= TZ_CHECK {
            tz_checked = Instant::now();
            app.set_utc_offset(local_offset());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::{TestBackend, WindowSize};
    use ratatui::buffer::Cell;
    use ratatui::layout::{Position, Size};

    use super::*;
    use crate::api::{BufferId, ChatMessage};

    /// A `TestBackend` that counts frames (flushes).
    struct Counting {
        inner: TestBackend,
        frames: usize,
        bells: usize,
    }

    impl Backend for Counting {
        fn draw<'a, I>(&mut self, content: I) -> io::Result<()>
        where
            I: Iterator<Item = (u16, u16, &'a Cell)>,
        {
            self.inner.draw(content)
        }
        fn hide_cursor(&mut self) -> io::Result<()> {
            self.inner.hide_cursor()
        }
        fn show_cursor(&mut self) -> io::Result<()> {
            self.inner.show_cursor()
        }
        fn get_cursor_position(&mut self) -> io::Result<Position> {
            self.inner.get_cursor_position()
        }
        fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> io::Result<()> {
            self.inner.set_cursor_position(position)
        }
        fn clear(&mut self) -> io::Result<()> {
            self.inner.clear()
        }
        fn size(&self) -> io::Result<Size> {
            self.inner.size()
        }
        fn window_size(&mut self) -> io::Result<WindowSize> {
            self.inner.window_size()
        }
        fn flush(&mut self) -> io::Result<()> {
            self.frames += 1;
            Backend::flush(&mut self.inner)
        }
    }

    /// Keys typed by the test.
    struct Keys(mpsc::UnboundedReceiver<io::Result<Event>>);

    impl Stream for Keys {
        type Item = io::Result<Event>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }

    fn press(code: KeyCode) -> io::Result<Event> {
        Ok(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
    }

    fn ctrl_c() -> io::Result<Event> {
        Ok(Event::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        )))
    }

    struct Rig {
        terminal: Terminal<Counting>,
        app: App,
        keys: mpsc::UnboundedSender<io::Result<Event>>,
        input: Keys,
        events: mpsc::Sender<UiEvent>,
        events_rx: Option<mpsc::Receiver<UiEvent>>,
        commands: Option<mpsc::Sender<UiCommand>>,
        commands_rx: mpsc::Receiver<UiCommand>,
    }

    fn rig(command_capacity: usize) -> Rig {
        let backend = Counting {
            inner: TestBackend::new(60, 12),
            frames: 0,
            bells: 0,
        };
        let (keys, keys_rx) = mpsc::unbounded_channel();
        let (events, events_rx) = mpsc::channel(1024);
        let (commands, commands_rx) = mpsc::channel(command_capacity);
        let mut app = App::new(Config::default());
        app.handle_event(UiEvent::SelfNick("me".into()), 0);
        app.handle_event(
            UiEvent::Join {
                room: "#a".into(),
                nick: "me".into(),
                ts: 0,
            },
            0,
        );
        Rig {
            terminal: Terminal::new(backend).expect("test backend never fails"),
            app,
            keys,
            input: Keys(keys_rx),
            events,
            events_rx: Some(events_rx),
            commands: Some(commands),
            commands_rx,
        }
    }

    impl Rig {
        /// Runs the loop until it returns (bounded by the test's timeout).
        async fn drive(&mut self) -> io::Result<()> {
            let events = self.events_rx.take().expect("driven once");
            let commands = self.commands.take().expect("driven once");
            let run = drive(
                &mut self.terminal,
                &mut self.input,
                &mut self.app,
                events,
                commands,
                std::future::pending(),
                |b: &mut Counting| {
                    b.bells += 1;
                    Ok(())
                },
            );
            tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("the loop ends by itself")
        }

        fn type_line(&self, text: &str) {
            for c in text.chars() {
                self.keys
                    .send(press(KeyCode::Char(c)))
                    .expect("rig holds the receiver");
            }
            self.keys
                .send(press(KeyCode::Enter))
                .expect("rig holds the receiver");
        }

        fn screen(&self) -> String {
            let buf = self.terminal.backend().inner.buffer();
            (0..buf.area.height)
                .map(|y| {
                    (0..buf.area.width)
                        .map(|x| buf[(x, y)].symbol())
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    }

    #[tokio::test]
    async fn a_stuck_network_never_blocks_typing_or_quitting() {
        // Room for one command, and nobody reads it: the network is stuck.
        let mut rig = rig(1);
        rig.type_line("first");
        rig.type_line("second");
        rig.type_line("third");
        for c in "still typing".chars() {
            rig.keys
                .send(press(KeyCode::Char(c)))
                .expect("receiver held");
        }
        rig.keys.send(ctrl_c()).expect("receiver held");
        let started = std::time::Instant::now();
        rig.drive().await.expect("no terminal error");
        let took = started.elapsed();
        // Every line was echoed and the input line kept up, although only one command got
        // through.
        let screen = rig.screen();
        for line in [
            "<me> first",
            "<me> second",
            "<me> third",
            "[#a] still typing",
        ] {
            assert!(screen.contains(line), "{line:?} missing:\n{screen}");
        }
        // The first key of "first" told the room we are typing; that took the one place.
        assert!(matches!(
            rig.commands_rx.try_recv(),
            Ok(UiCommand::Typing { .. })
        ));
        assert!(
            rig.commands_rx.try_recv().is_err(),
            "the rest never got room"
        );
        // Quitting waited for the grace period, not for the network.
        assert!(took >= QUIT_GRACE && took < QUIT_GRACE * 5, "{took:?}");
    }

    #[tokio::test]
    async fn quit_is_handed_over_and_the_loop_returns() {
        let mut rig = rig(8);
        rig.type_line("hello");
        rig.keys.send(ctrl_c()).expect("receiver held");
        let started = std::time::Instant::now();
        rig.drive().await.expect("no terminal error");
        assert!(
            started.elapsed() < QUIT_GRACE,
            "no grace needed when the network keeps up"
        );
        assert!(matches!(
            rig.commands_rx.try_recv(),
            Ok(UiCommand::Typing { .. })
        ));
        assert!(matches!(
            rig.commands_rx.try_recv(),
            Ok(UiCommand::Send { .. })
        ));
        assert_eq!(
            rig.commands_rx.try_recv().ok(),
            Some(UiCommand::Quit { reason: None })
        );
    }

    #[tokio::test]
    async fn a_burst_is_drawn_in_a_few_frames_and_idle_draws_nothing() {
        let mut rig = rig(8);
        for i in 0..400u64 {
            let event = UiEvent::Message {
                buffer: BufferId::Room("#a".into()),
                msg: ChatMessage {
                    id: Some(i),
                    from: "bob".into(),
                    text: format!("burst {i} for me"),
                    action: false,
                    ts: i,
                    ..ChatMessage::default()
                },
                own: false,
            };
            rig.events.try_send(event).expect("fits the channel");
        }
        let keys = rig.keys.clone();
        let quit_later = async move {
            // Idle for a while before quitting: no frames meanwhile.
            tokio::time::sleep(Duration::from_millis(300)).await;
            keys.send(ctrl_c()).expect("receiver held");
        };
        let (result, ()) = tokio::join!(rig.drive(), quit_later);
        result.expect("no terminal error");
        let frames = rig.terminal.backend().frames;
        // The first frame, the burst (one or two, depending on when the loop first looked),
        // and the frame after Ctrl+C.
        assert!((2..=4).contains(&frames), "{frames} frames");
        assert!(
            rig.screen().contains("burst 399 for me"),
            "{}",
            rig.screen()
        );
        assert!(rig.terminal.backend().bells >= 1, "mentions ring the bell");
    }

    #[tokio::test]
    async fn the_ui_stays_up_when_the_network_goes_away() {
        let mut rig = rig(8);
        let (events_tx, events_rx) = mpsc::channel(1);
        rig.events_rx = Some(events_rx);
        drop(events_tx);
        let keys = rig.keys.clone();
        let quit_later = async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            keys.send(ctrl_c()).expect("receiver held");
        };
        let (result, ()) = tokio::join!(rig.drive(), quit_later);
        result.expect("no terminal error");
        assert!(rig.screen().contains("disconnected"), "{}", rig.screen());
    }
}
