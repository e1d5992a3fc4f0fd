//! `chirp connect` on a terminal: the chat session (`chirp_chat::client`) wired to the terminal
//! UI (`chirp_tui`).
//!
//! Three tasks, no shared state: the session task owns the connection, the UI runner owns the
//! terminal, and the bridge task in between owns a [`Bridge`], which translates session
//! events into [`UiEvent`]s and [`UiCommand`]s into session calls ([`Action`]). The bridge
//! itself is pure (time comes in as arguments), so the mapping is unit-tested without a
//! network or a terminal; the tmux test (`tests/tui.rs`) covers the whole.
//!
//! What the translation has to get right:
//! - **Delivery states.** The UI shows its own messages as pending until `Delivered`, and
//!   matches later echoes by id. The server sends the room's copy of a message (our echo)
//!   *before* the sender's `ack`, so an echo of our own arriving while sends are pending is
//!   held back until the ack that names it (then dropped: the UI already shows the message).
//! - **History.** Pages asked for by the UI end with the server's `history_end`, and so does
//!   the backlog a first join replays: it is collected and handed over as one page, above the
//!   join line. A live message in the same buffer hands it over first (it is older), and so
//!   does a wait of [`BACKLOG_WAIT`] (an end marker that never came). Every `FetchHistory`
//!   is answered.
//! - **The link.** Once a second the session is asked for its connection statistics; the
//!   status bar gets the smoothed RTT, retransmissions and the loss over the last minute,
//!   computed from the lost/acknowledged packet counters over a sliding window
//!   ([`LossWindow`]).
//!
//! While the UI runs, logs are switched off ([`log_writer`]): the terminal is the UI's.
//!
//! # Layout
//!
//! - [`wanted`], [`log_writer`]: when the UI is used; the switchable log writer.
//! - [`connect`]: spawns the session, the bridge task and the UI; the exit code.
//! - [`Bridge`], [`Action`]: the pure translation both ways.
//! - [`LossWindow`]: loss % over a sliding minute.
//! - `key_check`: the server-key check, reporting through the UI instead of stdout.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chirp_chat::client::{self, ClientConfig, ClientHandle, Event, Target};
use chirp_chat::names::fold;
use chirp_chat::wire::{Msg, Presence, ServerMsg};
use chirp_keys::{Fingerprint, PublicKey};
use chirp_proto::ConnectionStats;
use chirp_tui::{
    BufferId, ChatMessage, LinkState, LinkStatus, RoomInfo, UiCommand, UiEvent, UnixMs,
};
use tokio::sync::mpsc;

/// How often the link statistics are refreshed (each refresh is a sparkline point).
pub(crate) const STATS_EVERY: Duration = Duration::from_secs(1);
/// The window of "loss over the last minute".
const LOSS_WINDOW: Duration = Duration::from_secs(60);
/// A history request the server never answered (it refused it, or the answer was lost with
/// the connection) is answered with an empty page after this long, so the UI can ask again.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// A join's backlog whose `history_end` has not come after this long is shown as it is.
const BACKLOG_WAIT: Duration = Duration::from_secs(2);
/// The same nick quitting in several shared rooms within this time is shown once.
const QUIT_DEDUP: Duration = Duration::from_secs(5);

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

/// Server timestamps are signed milliseconds; anything before 1970 is nonsense, shown as 0.
fn ts(ms: i64) -> UnixMs {
    u64::try_from(ms).unwrap_or(0)
}

/// Loss over a sliding window, from cumulative lost/acknowledged packet counters.
///
/// Keeps one sample per statistics answer (about one a second, so at most ~61 samples) and
/// compares the newest with the oldest still inside the window. A counter going backwards means
/// a new connection (counters restart), which restarts the window.
#[derive(Debug, Default)]
pub(crate) struct LossWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl LossWindow {
    /// Records the cumulative counters at `now`; returns the loss in percent over the window,
    /// or over the whole connection if nothing was sent in the window (`None` before any
    /// packet was lost or acknowledged at all).
    pub(crate) fn record(&mut self, now: Instant, lost: u64, acked: u64) -> Option<f64> {
        if self
            .samples
            .back()
            .is_some_and(|&(_, l, a)| lost < l || acked < a)
        {
            self.samples.clear();
        }
        self.samples.push_back((now, lost, acked));
        // Keep the newest sample at or before the window's start as the baseline, so a full
        // minute is covered even though samples are not exactly a second apart.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, ..)| now.saturating_duration_since(t) >= LOSS_WINDOW)
        {
            self.samples.pop_front();
        }
        let &(_, l0, a0) = self.samples.front()?;
        let (dl, da) = if self.samples.len() == 1 {
            // The first sample of a connection: everything so far is inside the window.
            (lost, acked)
        } else {
            (lost - l0, acked - a0)
        };
        if dl + da == 0 {
            // Nothing sent in the window (a quiet link): the connection's figure so far, rather
            // than none (the status bar used to lose its loss figure a second after a burst).
            let all = lost + acked;
            return (all > 0).then(|| lost as f64 * 100.0 / all as f64);
        }
        let total = dl + da;
        (total > 0).then(|| dl as f64 * 100.0 / total as f64)
    }

    /// Forgets everything (the connection is gone).
    pub(crate) fn reset(&mut self) {
        self.samples.clear();
    }
}

/// A statistics snapshot into the status bar: smoothed RTT, loss over the last minute (of
/// packets sent after the handshake), retransmissions and the `/stats` counters.
pub(crate) fn update_link(
    link: &mut LinkStatus,
    loss: &mut LossWindow,
    s: &ConnectionStats,
    now: Instant,
) {
    link.rtt = Some(s.srtt);
    // Handshake packets lost before the other side was listening are not the path's loss.
    let lost = s.packets_lost.saturating_sub(s.handshake_packets_lost);
    link.loss_pct_last_minute = loss.record(now, lost, s.packets_acked);
    link.retransmissions = s.retransmissions;
    link.counters = counters(s);
}

/// The counters of the `/stats` panel, in display order.
fn counters(s: &ConnectionStats) -> Vec<(String, u64)> {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    [
        ("packets sent", s.packets_sent),
        ("packets received", s.packets_received),
        ("packets acked", s.packets_acked),
        ("packets lost", s.packets_lost),
        ("… of them in the handshake", s.handshake_packets_lost),
        ("retransmissions", s.retransmissions),
        ("redundant copies", s.redundant_copies),
        ("duplicates dropped", s.duplicates_dropped),
        ("out of order", s.out_of_order),
        ("corrupt dropped", s.corrupt_dropped),
        ("malformed dropped", s.malformed_dropped),
        ("probe timeouts", s.ptos),
        ("bytes sent", s.bytes_sent),
        ("bytes received", s.bytes_received),
        ("messages sent", s.messages_sent),
        ("messages received", s.messages_received),
        ("messages acked", s.messages_acked),
        ("min rtt µs", us(s.min_rtt)),
        ("rtt variance µs", us(s.rttvar)),
        ("cwnd bytes", s.cwnd),
        ("bytes in flight", s.bytes_in_flight),
        ("key updates", s.key_updates),
        ("migrations", s.migrations),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// What the session should be asked to do for a [`UiCommand`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// `say`; then report the returned sequence number with [`Bridge::sent`].
    Say {
        target: Target,
        text: String,
        action: bool,
        local_id: u64,
    },
    Join(String),
    Part(String),
    Nick(String),
    Topic(String, String),
    List,
    Who(String),
    History {
        target: Target,
        before: Option<u64>,
        limit: u32,
    },
    /// Leave: wait for every acknowledgement, then close.
    Finish,
    /// Nothing to ask the session; answer the UI directly.
    Reply(Vec<UiEvent>),
}

/// A join's replayed backlog, being collected until its `history_end`.
#[derive(Debug)]
struct Backlog {
    buffer: BufferId,
    /// When its first message came.
    since: Instant,
    /// In arrival order (oldest first), each with `own`.
    messages: Vec<(ChatMessage, bool)>,
}

/// A history page the UI asked for, being collected.
#[derive(Debug)]
struct PageReq {
    buffer: BufferId,
    asked: Instant,
    messages: Vec<(ChatMessage, bool)>,
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Finished; this many messages were never acknowledged.
    Finished(usize),
    /// The session could not go on.
    Fatal(String),
}

/// The translation between the session and the UI. Pure: no I/O, time comes in.
#[derive(Debug)]
pub(crate) struct Bridge {
    /// Our nick as the server spells it.
    nick: String,
    /// Sends awaiting their ack: client sequence number → the UI's `local_id`.
    sends: HashMap<u64, u64>,
    /// Echoes of our own messages that arrived before their ack.
    held: Vec<Msg>,
    /// Joins' replayed backlogs being collected.
    backlog: Vec<Backlog>,
    /// Buffers whose backlog was handed over since their join: more of it is newer than that
    /// page, so it goes below as messages (a page would go above).
    backlog_shown: HashSet<BufferId>,
    /// History pages asked for, oldest request first.
    pages: VecDeque<PageReq>,
    /// DM conversation (`@…`) → the other party's nick.
    dm_convs: HashMap<String, String>,
    /// Room → topic, for `/topic` without text.
    topics: HashMap<String, String>,
    /// Rooms we are in: a reconnect rejoins them, which is no news for the user.
    rooms: HashSet<String>,
    /// Recent quits, to show a quit once although every shared room reports it.
    quits: VecDeque<(String, Instant)>,
    link: LinkStatus,
    loss: LossWindow,
}

impl Bridge {
    pub(crate) fn new(nick: String) -> Bridge {
        Bridge {
            nick,
            sends: HashMap::new(),
            held: Vec::new(),
            backlog: Vec::new(),
            backlog_shown: HashSet::new(),
            pages: VecDeque::new(),
            dm_convs: HashMap::new(),
            topics: HashMap::new(),
            rooms: HashSet::new(),
            quits: VecDeque::new(),
            link: LinkStatus::default(),
            loss: LossWindow::default(),
        }
    }

    /// The first events for the UI.
    pub(crate) fn start(&self, greeting: String) -> Vec<UiEvent> {
        vec![
            UiEvent::SelfNick(self.nick.clone()),
            UiEvent::Info {
                buffer: None,
                text: greeting,
            },
            UiEvent::Link(self.link.clone()),
        ]
    }

    /// Whether the link is up (worth asking for statistics).
    pub(crate) fn connected(&self) -> bool {
        self.link.state == LinkState::Connected
    }

    fn is_me(&self, nick: &str) -> bool {
        fold(nick) == fold(&self.nick)
    }

    fn buffer_of(&mut self, m: &Msg) -> BufferId {
        if let Some(room) = &m.room {
            return BufferId::Room(room.clone());
        }
        let other = if self.is_me(&m.from) {
            m.to.clone().unwrap_or_else(|| m.from.clone())
        } else {
            m.from.clone()
        };
        self.dm_convs.insert(m.conv.clone(), other.clone());
        BufferId::Dm(other)
    }

    fn chat(m: &Msg) -> ChatMessage {
        ChatMessage {
            id: Some(m.id),
            from: m.from.clone(),
            text: m.text.clone(),
            action: m.action,
            ts: ts(m.ts),
        }
    }

    /// Whether a page request for `buffer` answers history of `conv`.
    fn page_matches(&self, buffer: &BufferId, conv: &str) -> bool {
        match buffer {
            BufferId::Room(r) => fold(r) == conv,
            BufferId::Dm(n) => self.dm_convs.get(conv).is_some_and(|o| fold(o) == fold(n)),
            BufferId::Status => false,
        }
    }

    /// Hands over the join backlogs for which `pick` holds, each as a page.
    fn flush_backlog_where(
        &mut self,
        more: bool,
        mut pick: impl FnMut(&BufferId, Instant) -> bool,
    ) -> Vec<UiEvent> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.backlog.len() {
            let b = &self.backlog[i];
            if !pick(&b.buffer, b.since) {
                i += 1;
                continue;
            }
            let Backlog {
                buffer, messages, ..
            } = self.backlog.remove(i);
            self.backlog_shown.insert(buffer.clone());
            out.push(UiEvent::HistoryPage {
                buffer,
                messages,
                more,
            });
        }
        out
    }

    /// Hands over every join backlog (the connection is gone: no end marker will come).
    pub(crate) fn flush_backlog(&mut self) -> Vec<UiEvent> {
        // Possibly more: the UI asks, and an empty answer ends it.
        self.flush_backlog_where(true, |_, _| true)
    }

    fn release_held(&mut self, out: &mut Vec<UiEvent>) {
        if !self.sends.is_empty() {
            return;
        }
        // Not ours after all (another session of ours sent them): show them now.
        for m in std::mem::take(&mut self.held) {
            let buffer = self.buffer_of(&m);
            out.push(UiEvent::Message {
                buffer,
                msg: Self::chat(&m),
                own: true,
            });
        }
    }

    /// Translates one session event. `Some(End)`: the session is over.
    pub(crate) fn on_event(
        &mut self,
        ev: Event,
        wall: UnixMs,
        now: Instant,
    ) -> (Vec<UiEvent>, Option<End>) {
        let mut out = Vec::new();
        if matches!(
            ev,
            Event::Disconnected { .. } | Event::Fatal(_) | Event::Finished { .. }
        ) {
            out.extend(self.flush_backlog());
        }
        let mut end = None;
        match ev {
            Event::Connecting { .. } => {
                self.link.state = LinkState::Connecting;
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Connected { server_key } => {
                self.link.fingerprint = Some(PublicKey(server_key).fingerprint().to_string());
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Welcome { nick, max_text } => {
                self.nick = nick.clone();
                self.link.state = LinkState::Connected;
                out.push(UiEvent::SelfNick(nick));
                // The input line refuses longer messages up front, keeping the text.
                out.push(UiEvent::MessageLimit(max_text));
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Message(m) => self.on_message(m, now, &mut out),
            Event::Delivered { c, conv, id, ts: t } => {
                if let Some(local_id) = self.sends.remove(&c) {
                    out.push(UiEvent::Delivered {
                        local_id,
                        id: Some(id),
                        ts: Some(ts(t)),
                    });
                    // Its echo is already shown, as the local echo.
                    self.held.retain(|m| !(m.conv == conv && m.id == id));
                }
                self.release_held(&mut out);
            }
            Event::Refused { c, code, message } => {
                match self.sends.remove(&c) {
                    Some(local_id) => out.push(UiEvent::Failed {
                        local_id,
                        reason: message,
                    }),
                    None => out.push(UiEvent::Error(format!("{message} ({code})"))),
                }
                self.release_held(&mut out);
            }
            Event::Error { code, message } => {
                out.push(UiEvent::Error(format!("{message} ({code})")));
            }
            Event::Server(m) => self.on_server(m, wall, now, &mut out),
            Event::Disconnected { reason, retry_in } => {
                let in_secs =
                    u32::try_from(retry_in.as_millis().div_ceil(1000)).unwrap_or(u32::MAX);
                self.link.state = LinkState::Reconnecting { in_secs };
                self.link.rtt = None;
                self.link.loss_pct_last_minute = None;
                self.loss.reset();
                out.push(UiEvent::Info {
                    buffer: None,
                    text: format!("disconnected: {reason}; reconnecting in {in_secs} s"),
                });
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Stats(Some(s)) => {
                update_link(&mut self.link, &mut self.loss, &s, now);
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Stats(None) => {}
            Event::Fatal(msg) => {
                self.link.state = LinkState::Disconnected(msg.clone());
                out.push(UiEvent::Error(msg.clone()));
                out.push(UiEvent::Link(self.link.clone()));
                end = Some(End::Fatal(msg));
            }
            Event::Finished { undelivered } => {
                self.link.state = LinkState::Disconnected("left".into());
                out.push(UiEvent::Link(self.link.clone()));
                end = Some(End::Finished(undelivered));
            }
        }
        (out, end)
    }

    fn on_message(&mut self, m: Msg, now: Instant, out: &mut Vec<UiEvent>) {
        let own = self.is_me(&m.from);
        let buffer = self.buffer_of(&m);
        let msg = Self::chat(&m);
        if m.history {
            let conv = m.conv.clone();
            if let Some(i) = (0..self.pages.len()).find(|&i| {
                let b = &self.pages[i].buffer;
                self.page_matches(b, &conv)
            }) {
                self.pages[i].messages.push((msg, own));
            } else if self.backlog_shown.contains(&buffer) {
                out.push(UiEvent::Message { buffer, msg, own });
            } else {
                match self.backlog.iter_mut().find(|b| b.buffer == buffer) {
                    Some(b) => b.messages.push((msg, own)),
                    None => self.backlog.push(Backlog {
                        buffer,
                        since: now,
                        messages: vec![(msg, own)],
                    }),
                }
            }
            return;
        }
        // A live message is newer than any backlog of its buffer: that goes first.
        out.extend(self.flush_backlog_where(true, |b, _| *b == buffer));
        if own && !self.sends.is_empty() {
            // Possibly the echo of a send whose ack is still to come (the server sends the
            // room's copy first): the UI must see `Delivered` first.
            self.held.push(m);
        } else {
            out.push(UiEvent::Message { buffer, msg, own });
        }
    }

    fn on_server(&mut self, m: ServerMsg, wall: UnixMs, now: Instant, out: &mut Vec<UiEvent>) {
        match m {
            ServerMsg::Joined {
                room,
                topic,
                members,
                more,
            } => {
                self.backlog_shown.remove(&BufferId::Room(room.clone()));
                if self.rooms.insert(fold(&room)) {
                    out.push(UiEvent::Join {
                        room: room.clone(),
                        nick: self.nick.clone(),
                        ts: wall,
                    });
                }
                let known = self.topics.get(&room).is_some_and(|t| *t == topic);
                if !topic.is_empty() && !known {
                    self.topics.insert(room.clone(), topic.clone());
                    out.push(UiEvent::Topic {
                        room: room.clone(),
                        topic: Some(topic),
                        by: None,
                        ts: wall,
                    });
                }
                if more > 0 {
                    out.push(UiEvent::Info {
                        buffer: Some(BufferId::Room(room.clone())),
                        text: format!("{} members, {more} not listed", members.len() as u64 + more),
                    });
                }
                out.push(UiEvent::Members {
                    room,
                    nicks: members,
                });
            }
            ServerMsg::Parted { room } => {
                self.rooms.remove(&fold(&room));
                out.push(UiEvent::Part {
                    room,
                    nick: self.nick.clone(),
                    reason: None,
                    ts: wall,
                });
            }
            ServerMsg::Presence { room, events } => {
                for ev in events {
                    match ev {
                        // Our own joins and parts come as `joined` / `parted`.
                        Presence::Join { nick } if !self.is_me(&nick) => out.push(UiEvent::Join {
                            room: room.clone(),
                            nick,
                            ts: wall,
                        }),
                        Presence::Part { nick } if !self.is_me(&nick) => out.push(UiEvent::Part {
                            room: room.clone(),
                            nick,
                            reason: None,
                            ts: wall,
                        }),
                        Presence::Quit { nick, reason } if !self.is_me(&nick) => {
                            self.quits
                                .retain(|(_, t)| now.saturating_duration_since(*t) < QUIT_DEDUP);
                            let key = fold(&nick);
                            if self.quits.iter().all(|(n, _)| *n != key) {
                                self.quits.push_back((key, now));
                                out.push(UiEvent::Quit {
                                    nick,
                                    reason: (!reason.is_empty()).then_some(reason),
                                    ts: wall,
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            ServerMsg::Nick { old, new } => {
                if self.is_me(&old) {
                    self.nick = new.clone();
                }
                out.push(UiEvent::NickChange { old, new, ts: wall });
            }
            ServerMsg::Topic { room, topic, by } => {
                self.topics.insert(room.clone(), topic.clone());
                out.push(UiEvent::Topic {
                    room,
                    topic: (!topic.is_empty()).then_some(topic),
                    by: Some(by),
                    ts: wall,
                });
            }
            ServerMsg::List { rooms } => out.push(UiEvent::RoomList(
                rooms
                    .into_iter()
                    .map(|r| RoomInfo {
                        name: r.room,
                        members: usize::try_from(r.members).unwrap_or(usize::MAX),
                        topic: (!r.topic.is_empty()).then_some(r.topic),
                    })
                    .collect(),
            )),
            ServerMsg::Who {
                room,
                members,
                more,
            } => {
                let mut text = format!("in {room}: {}", members.join(" "));
                if more > 0 {
                    text.push_str(&format!(" and {more} more"));
                }
                out.push(UiEvent::Info {
                    buffer: Some(BufferId::Room(room.clone())),
                    text,
                });
                out.push(UiEvent::Members {
                    room,
                    nicks: members,
                });
            }
            ServerMsg::HistoryEnd { conv, count, .. } => {
                let i = (0..self.pages.len())
                    .find(|&i| self.page_matches(&self.pages[i].buffer, &conv))
                    // An empty DM page names a conversation we have not seen: the oldest DM
                    // request is the one (the server answers in order).
                    .or_else(|| {
                        (!conv.starts_with('#'))
                            .then(|| {
                                self.pages
                                    .iter()
                                    .position(|p| matches!(p.buffer, BufferId::Dm(_)))
                            })
                            .flatten()
                    });
                if let Some(page) = i.and_then(|i| self.pages.remove(i)) {
                    out.push(UiEvent::HistoryPage {
                        buffer: page.buffer,
                        messages: page.messages,
                        // The server caps pages at its own size: only an empty page means
                        // the start was reached.
                        more: count > 0,
                    });
                } else if conv.starts_with('#') {
                    // The end of a join's backlog: all of it at once, above the join line.
                    let buffer = BufferId::Room(conv.clone());
                    let pages = self.flush_backlog_where(count > 0, |b, _| fold(b.name()) == conv);
                    if pages.is_empty() && count == 0 {
                        // A room without history: say so rather than offer to load some.
                        out.push(UiEvent::HistoryPage {
                            buffer,
                            messages: Vec::new(),
                            more: false,
                        });
                    }
                    out.extend(pages);
                }
            }
            ServerMsg::Bye { reason } => out.push(UiEvent::Info {
                buffer: None,
                text: format!("the server says goodbye: {reason}"),
            }),
            // Handled by the session (welcome, ack, error, msg).
            _ => {}
        }
    }

    /// Translates one UI command into what to ask of the session.
    pub(crate) fn on_command(&mut self, cmd: UiCommand, now: Instant) -> Action {
        match cmd {
            UiCommand::Send {
                buffer,
                text,
                action,
                local_id,
            } => match buffer {
                BufferId::Room(r) => Action::Say {
                    target: Target::Room(r),
                    text,
                    action,
                    local_id,
                },
                BufferId::Dm(n) => Action::Say {
                    target: Target::Nick(n),
                    text,
                    action,
                    local_id,
                },
                BufferId::Status => Action::Reply(vec![UiEvent::Failed {
                    local_id,
                    reason: "nothing can be sent to the status buffer".into(),
                }]),
            },
            UiCommand::Join { room } => Action::Join(room),
            UiCommand::Part { room, .. } => Action::Part(room),
            UiCommand::Nick { nick } => Action::Nick(nick),
            UiCommand::Topic {
                room,
                topic: Some(t),
            } => Action::Topic(room, t),
            UiCommand::Topic { room, topic: None } => {
                let text = match self.topics.get(&fold(&room)) {
                    Some(t) if !t.is_empty() => format!("topic of {room}: {t}"),
                    _ => format!("{room} has no topic"),
                };
                Action::Reply(vec![UiEvent::Info {
                    buffer: Some(BufferId::Room(room)),
                    text,
                }])
            }
            UiCommand::List => Action::List,
            UiCommand::Who { room } => Action::Who(room),
            UiCommand::FetchHistory {
                buffer,
                before_id,
                limit,
            } => {
                let target = match &buffer {
                    BufferId::Room(r) => Target::Room(r.clone()),
                    BufferId::Dm(n) => Target::Nick(n.clone()),
                    BufferId::Status => {
                        return Action::Reply(vec![UiEvent::HistoryPage {
                            buffer,
                            messages: Vec::new(),
                            more: false,
                        }]);
                    }
                };
                self.pages.push_back(PageReq {
                    buffer,
                    asked: now,
                    messages: Vec::new(),
                });
                Action::History {
                    target,
                    before: before_id,
                    limit,
                }
            }
            UiCommand::Quit { .. } => Action::Finish,
            // `chirp connect` never asks (its server key is pinned or trusted on first use).
            UiCommand::Answer(_) => Action::Reply(Vec::new()),
        }
    }

    /// The session took a `say`: `c` is its sequence number.
    pub(crate) fn sent(&mut self, c: u64, local_id: u64) {
        self.sends.insert(c, local_id);
    }

    /// A request could not even be handed to the session (it has ended).
    pub(crate) fn not_sent(&mut self, action: &Action) -> Vec<UiEvent> {
        match action {
            Action::Say { local_id, .. } => vec![UiEvent::Failed {
                local_id: *local_id,
                reason: "the chat session has ended".into(),
            }],
            Action::History { .. } => self.expire_pages(None),
            _ => vec![UiEvent::Error("the chat session has ended".into())],
        }
    }

    /// Answers, with an empty page, history requests older than [`PAGE_TIMEOUT`] (all of them
    /// with `now == None`).
    fn expire_pages(&mut self, now: Option<Instant>) -> Vec<UiEvent> {
        let mut out = Vec::new();
        while let Some(p) = self.pages.front() {
            if now.is_some_and(|now| now.saturating_duration_since(p.asked) < PAGE_TIMEOUT) {
                break;
            }
            if let Some(p) = self.pages.pop_front() {
                out.push(UiEvent::HistoryPage {
                    buffer: p.buffer,
                    messages: p.messages,
                    more: false,
                });
            }
        }
        out
    }

    /// Once a second.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<UiEvent> {
        let mut out = self.expire_pages(Some(now));
        out.extend(self.flush_backlog_where(true, |_, since| {
            now.saturating_duration_since(since) >= BACKLOG_WAIT
        }));
        out
    }
}

/// Carries out an [`Action`] on the session.
async fn perform(bridge: &mut Bridge, handle: &ClientHandle, action: Action) -> Vec<UiEvent> {
    let result = match action.clone() {
        Action::Say {
            target,
            text,
            action: me,
            local_id,
        } => handle.say(target, text, me).await.map(|c| {
            bridge.sent(c, local_id);
        }),
        Action::Join(room) => handle.join(room).await,
        Action::Part(room) => handle.part(room).await,
        Action::Nick(nick) => handle.nick(nick).await,
        Action::Topic(room, topic) => handle.topic(room, topic).await,
        Action::List => handle.list().await,
        Action::Who(room) => handle.who(room).await,
        Action::History {
            target,
            before,
            limit,
        } => handle.history(target, before, limit).await,
        Action::Finish => handle.finish().await,
        Action::Reply(events) => return events,
    };
    match result {
        Ok(()) => Vec::new(),
        Err(client::Ended) => bridge.not_sent(&action),
    }
}

/// Hands events to the UI. Once the UI is gone they are dropped: the session is finishing.
pub(crate) async fn emit(ui: &mpsc::Sender<UiEvent>, events: Vec<UiEvent>) {
    for e in events {
        if ui.send(e).await.is_err() {
            return;
        }
    }
}

/// The bridge task: session events and UI commands in, until the session ends.
async fn bridge_task(
    mut bridge: Bridge,
    handle: ClientHandle,
    mut events: mpsc::Receiver<Event>,
    mut notices: mpsc::UnboundedReceiver<String>,
    ui: mpsc::Sender<UiEvent>,
    mut commands: mpsc::Receiver<UiCommand>,
) -> End {
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut commands_open = true;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else {
                    return End::Fatal("the chat session stopped".into());
                };
                let (out, end) = bridge.on_event(ev, now_ms(), Instant::now());
                emit(&ui, out).await;
                if let Some(end) = end {
                    return end;
                }
            }
            cmd = commands.recv(), if commands_open => {
                // The UI closes its side only after handing over `Quit` (or giving up on it).
                let cmd = cmd.unwrap_or(UiCommand::Quit { reason: None });
                if matches!(cmd, UiCommand::Quit { .. }) {
                    commands_open = false;
                }
                let action = bridge.on_command(cmd, Instant::now());
                let out = perform(&mut bridge, &handle, action).await;
                emit(&ui, out).await;
            }
            Some(text) = notices.recv() => {
                emit(&ui, vec![UiEvent::Info { buffer: None, text }]).await;
            }
            _ = tick.tick() => {
                let out = bridge.tick(Instant::now());
                emit(&ui, out).await;
                if bridge.connected() {
                    // The answer comes back as `Event::Stats`.
                    let _ = handle.stats().await;
                }
            }
        }
    }
}

/// `chirp connect` with the terminal UI. `config` is complete except for the key check, which
/// is made here (from `server_name`, `pin` and the `known` keys file) so that it reports
/// through the UI. `bell`: ring on highlights. Returns the exit code: 0 when everything sent was stored.
pub(crate) async fn connect(
    mut config: ClientConfig,
    server_name: String,
    pin: Option<Fingerprint>,
    known: PathBuf,
    bell: bool,
) -> anyhow::Result<u8> {
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    // A first-contact notice goes to the status buffer: the terminal is the UI's.
    config.server_key_check = Some(crate::trust::server_key_check(
        server_name.clone(),
        pin,
        known,
        move |notice| {
            let _ = notice_tx.send(notice);
        },
    ));
    let give_up = config.give_up_after;
    let bridge = Bridge::new(config.nick.clone());
    let greeting = format!(
        "chirp connect to {server_name} ({}) as {}; /help for commands",
        config.server, config.nick
    );
    let (handle, events, session) = client::spawn(config).context("cannot start the client")?;
    let (ui_tx, ui_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    // Nothing the UI needs is lost: the channel has room for these.
    for e in bridge.start(greeting) {
        let _ = ui_tx.try_send(e);
    }
    let logs_off = LogsOff::new();
    let bridge = tokio::spawn(bridge_task(
        bridge, handle, events, notice_rx, ui_tx, cmd_rx,
    ));
    let ui_config = chirp_tui::Config {
        bell,
        ..chirp_tui::Config::default()
    };
    let ui = chirp_tui::run(ui_config, ui_rx, cmd_tx).await;
    drop(logs_off);
    ui.context("the terminal UI failed")?;
    // The UI is gone; the session is making sure the server stored everything sent.
    let mut bridge = bridge;
    let end = match tokio::time::timeout(Duration::from_secs(1), &mut bridge).await {
        Ok(end) => end,
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "chirp: waiting up to {} s for the server to store what you sent (Ctrl+C leaves now)",
                give_up.as_secs()
            );
            tokio::select! {
                end = &mut bridge => end,
                _ = tokio::signal::ctrl_c() => {
                    bridge.abort();
                    session.abort();
                    return Ok(130);
                }
                () = tokio::time::sleep(give_up + Duration::from_secs(5)) => {
                    bridge.abort();
                    session.abort();
                    Ok(End::Finished(usize::MAX))
                }
            }
        }
    };
    let end = end.context("the chat bridge failed")?;
    let _ = tokio::time::timeout(Duration::from_secs(3), session).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(conv: &str, id: u64, from: &str, text: &str, history: bool) -> Msg {
        let room = conv.starts_with('#').then(|| conv.to_owned());
        Msg {
            conv: conv.into(),
            room,
            id,
            ts: 1_000 + id as i64,
            from: from.into(),
            to: None,
            text: text.into(),
            action: false,
            history,
            c: None,
        }
    }

    fn dm(conv: &str, id: u64, from: &str, to: &str) -> Msg {
        Msg {
            room: None,
            to: Some(to.into()),
            ..msg(conv, id, from, "psst", false)
        }
    }

    fn ev(b: &mut Bridge, e: Event, now: Instant) -> Vec<UiEvent> {
        let (out, end) = b.on_event(e, 5, now);
        assert_eq!(end, None);
        out
    }

    /// The server stored our send `c` (in `#t`) as `id`, at 1234.
    fn stored(c: u64, id: u64) -> Event {
        Event::Delivered {
            c,
            conv: "#t".into(),
            id,
            ts: 1234,
        }
    }

    /// What the UI is told of that.
    fn delivered(local_id: u64, id: u64) -> UiEvent {
        UiEvent::Delivered {
            local_id,
            id: Some(id),
            ts: Some(1234),
        }
    }

    fn stats(lost: u64, acked: u64) -> ConnectionStats {
        ConnectionStats {
            srtt: Duration::from_millis(23),
            packets_lost: lost,
            packets_acked: acked,
            retransmissions: 4,
            ..ConnectionStats::default()
        }
    }

    #[test]
    fn loss_is_counted_over_the_last_minute_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LossWindow::default();
        assert_eq!(w.record(t0, 0, 0), None, "nothing sent yet");
        // 10 lost of 100 in the first seconds.
        assert_eq!(w.record(t0 + s(1), 10, 90), Some(10.0));
        // A clean minute follows: 300 acked, nothing lost.
        for i in 2..=59 {
            w.record(t0 + s(i), 10, 90 + i * 5);
        }
        // The loss happened in the first second, (0 s, 1 s]: inside the minute up to 60 s.
        let inside = w
            .record(t0 + s(60), 10, 390)
            .expect("packets in the window");
        assert_eq!(inside, 2.5, "10 lost of 400");
        // Once that second has left the window, the loss is zero.
        let after = w
            .record(t0 + s(61), 10, 395)
            .expect("packets in the window");
        assert_eq!(after, 0.0);
        assert!(w.samples.len() <= 62, "bounded: {}", w.samples.len());
        // A new connection's counters start from zero: the window restarts.
        assert_eq!(w.record(t0 + s(62), 1, 3), Some(25.0));
        w.reset();
        assert_eq!(w.record(t0 + s(63), 0, 0), None);
    }

    #[test]
    fn a_quiet_connection_keeps_its_loss_figure_for_its_first_minute() {
        // First sampled after its traffic, then idle: the figure stays (it used to vanish at
        // the second sample, and a status bar lost its "loss 0.0%").
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = LossWindow::default();
        assert_eq!(w.record(t0, 1, 19), Some(5.0));
        assert_eq!(w.record(t0 + s(1), 1, 19), Some(5.0));
        assert_eq!(w.record(t0 + s(30), 1, 19), Some(5.0));
    }

    #[test]
    fn handshake_losses_are_not_link_loss() {
        // Started before the other side: 2 INITIALs went nowhere, then 10 packets acked.
        let t0 = Instant::now();
        let (mut link, mut loss) = (LinkStatus::default(), LossWindow::default());
        let s = ConnectionStats {
            packets_lost: 2,
            handshake_packets_lost: 2,
            packets_acked: 10,
            ..ConnectionStats::default()
        };
        update_link(&mut link, &mut loss, &s, t0);
        assert_eq!(link.loss_pct_last_minute, Some(0.0));
        assert!(link.counters.contains(&("packets lost".to_owned(), 2)));
        // A data packet lost later is the path's.
        let s = ConnectionStats {
            packets_lost: 3,
            packets_acked: 19,
            ..s
        };
        update_link(&mut link, &mut loss, &s, t0 + Duration::from_secs(1));
        assert_eq!(
            link.loss_pct_last_minute,
            Some(10.0),
            "1 lost, 9 acked since"
        );
    }

    #[test]
    fn link_status_follows_the_session() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let start = b.start("hi".into());
        assert_eq!(start[0], UiEvent::SelfNick("alice".into()), "nick first");
        assert!(!b.connected());
        ev(&mut b, Event::Connecting { attempt: 1 }, now);
        let out = ev(
            &mut b,
            Event::Connected {
                server_key: [7; 32],
            },
            now,
        );
        let fp = PublicKey([7; 32]).fingerprint().to_string();
        assert!(matches!(&out[..], [UiEvent::Link(l)]
            if l.fingerprint.as_deref() == Some(fp.as_str()) && l.state == LinkState::Connecting));
        let out = ev(
            &mut b,
            Event::Welcome {
                nick: "Alice".into(),
                max_text: 2000,
            },
            now,
        );
        assert_eq!(out[0], UiEvent::SelfNick("Alice".into()));
        assert_eq!(out[1], UiEvent::MessageLimit(2000));
        assert!(b.connected());
        ev(&mut b, Event::Stats(Some(stats(0, 10))), now);
        let out = ev(
            &mut b,
            Event::Stats(Some(stats(1, 19))),
            now + Duration::from_secs(1),
        );
        let [UiEvent::Link(l)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(l.state, LinkState::Connected);
        assert_eq!(l.rtt, Some(Duration::from_millis(23)));
        assert_eq!(l.retransmissions, 4);
        // 1 lost, 9 acked since the first sample.
        assert_eq!(l.loss_pct_last_minute, Some(10.0));
        assert!(l.counters.contains(&("packets lost".to_owned(), 1)));
        let out = ev(
            &mut b,
            Event::Disconnected {
                reason: "no answer from the server".into(),
                retry_in: Duration::from_millis(1_200),
            },
            now,
        );
        assert!(out.iter().any(|e| matches!(e, UiEvent::Link(l)
                if l.state == LinkState::Reconnecting { in_secs: 2 } && l.rtt.is_none())));
        assert!(!b.connected());
        let (out, end) = b.on_event(Event::Fatal("nick taken".into()), 5, now);
        assert_eq!(end, Some(End::Fatal("nick taken".into())));
        assert!(out.contains(&UiEvent::Error("nick taken".into())));
    }

    #[test]
    fn sends_map_to_the_session_and_back() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let a = b.on_command(
            UiCommand::Send {
                buffer: BufferId::Room("#t".into()),
                text: "hi".into(),
                action: true,
                local_id: 7,
            },
            now,
        );
        assert_eq!(
            a,
            Action::Say {
                target: Target::Room("#t".into()),
                text: "hi".into(),
                action: true,
                local_id: 7
            }
        );
        let a = b.on_command(
            UiCommand::Send {
                buffer: BufferId::Dm("bob".into()),
                text: "x".into(),
                action: false,
                local_id: 8,
            },
            now,
        );
        assert!(matches!(a, Action::Say { target: Target::Nick(n), .. } if n == "bob"));
        assert!(matches!(
            b.on_command(
                UiCommand::Send {
                    buffer: BufferId::Status,
                    text: "x".into(),
                    action: false,
                    local_id: 9
                },
                now
            ),
            Action::Reply(r) if matches!(&r[..], [UiEvent::Failed { local_id: 9, .. }])
        ));
        b.sent(1, 7);
        b.sent(2, 8);
        let out = ev(&mut b, stored(1, 40), now);
        assert_eq!(out, vec![delivered(7, 40)]);
        let out = ev(
            &mut b,
            Event::Refused {
                c: 2,
                code: "no_such_nick".into(),
                message: "no user is called 'bob'".into(),
            },
            now,
        );
        assert_eq!(
            out,
            vec![UiEvent::Failed {
                local_id: 8,
                reason: "no user is called 'bob'".into()
            }]
        );
        // Other commands.
        assert_eq!(
            b.on_command(UiCommand::Join { room: "#x".into() }, now),
            Action::Join("#x".into())
        );
        assert_eq!(
            b.on_command(
                UiCommand::Part {
                    room: "#x".into(),
                    reason: Some("bye".into())
                },
                now
            ),
            Action::Part("#x".into())
        );
        assert_eq!(
            b.on_command(UiCommand::Nick { nick: "al".into() }, now),
            Action::Nick("al".into())
        );
        assert_eq!(
            b.on_command(
                UiCommand::Topic {
                    room: "#x".into(),
                    topic: Some("t".into())
                },
                now
            ),
            Action::Topic("#x".into(), "t".into())
        );
        assert_eq!(b.on_command(UiCommand::List, now), Action::List);
        assert_eq!(
            b.on_command(UiCommand::Who { room: "#x".into() }, now),
            Action::Who("#x".into())
        );
        assert_eq!(
            b.on_command(UiCommand::Quit { reason: None }, now),
            Action::Finish
        );
        // A session that has ended fails the send instead of leaving it pending.
        let a = b.on_command(
            UiCommand::Send {
                buffer: BufferId::Room("#t".into()),
                text: "late".into(),
                action: false,
                local_id: 10,
            },
            now,
        );
        assert!(matches!(
            &b.not_sent(&a)[..],
            [UiEvent::Failed { local_id: 10, .. }]
        ));
    }

    #[test]
    fn our_echo_waits_for_its_ack_and_is_not_shown_twice() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        b.sent(1, 7);
        // The server sends the room's copy before the ack.
        let out = ev(
            &mut b,
            Event::Message(msg("#t", 40, "alice", "hi", false)),
            now,
        );
        assert!(out.is_empty(), "held back: {out:?}");
        let out = ev(&mut b, stored(1, 40), now);
        assert_eq!(
            out,
            vec![delivered(7, 40)],
            "the UI shows its local echo; the server's copy is dropped"
        );
        // Our messages from another session (nothing pending here) are shown as own.
        let out = ev(
            &mut b,
            Event::Message(msg("#t", 41, "Alice", "hi", false)),
            now,
        );
        assert!(matches!(&out[..], [UiEvent::Message { own: true, .. }]));
        // One from another session while a send is pending: shown once the send resolves.
        b.sent(2, 8);
        assert!(
            ev(
                &mut b,
                Event::Message(msg("#t", 42, "alice", "other", false)),
                now
            )
            .is_empty()
        );
        let out = ev(
            &mut b,
            Event::Refused {
                c: 2,
                code: "flood".into(),
                message: "slow down".into(),
            },
            now,
        );
        assert!(matches!(out[0], UiEvent::Failed { local_id: 8, .. }));
        assert!(matches!(&out[1], UiEvent::Message { own: true, msg, .. } if msg.id == Some(42)));
        // Others' messages go straight through.
        let out = ev(
            &mut b,
            Event::Message(msg("#t", 43, "bob", "yo", false)),
            now,
        );
        assert!(
            matches!(&out[..], [UiEvent::Message { own: false, buffer: BufferId::Room(r), msg }]
            if r == "#t" && msg.text == "yo" && msg.ts == 1043)
        );
    }

    #[test]
    fn direct_messages_land_in_the_other_partys_buffer() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let out = ev(&mut b, Event::Message(dm("@k", 1, "bob", "alice")), now);
        assert!(
            matches!(&out[..], [UiEvent::Message { buffer: BufferId::Dm(n), .. }] if n == "bob")
        );
        let out = ev(&mut b, Event::Message(dm("@k", 2, "alice", "bob")), now);
        assert!(
            matches!(&out[..], [UiEvent::Message { buffer: BufferId::Dm(n), own: true, .. }] if n == "bob")
        );
    }

    #[test]
    fn history_pages_answer_every_fetch() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let a = b.on_command(
            UiCommand::FetchHistory {
                buffer: BufferId::Room("#t".into()),
                before_id: Some(50),
                limit: 2,
            },
            now,
        );
        assert_eq!(
            a,
            Action::History {
                target: Target::Room("#t".into()),
                before: Some(50),
                limit: 2
            }
        );
        assert!(ev(&mut b, Event::Message(msg("#t", 48, "bob", "a", true)), now).is_empty());
        assert!(
            ev(
                &mut b,
                Event::Message(msg("#t", 49, "alice", "b", true)),
                now
            )
            .is_empty()
        );
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::HistoryEnd {
                id: None,
                conv: "#t".into(),
                count: 2,
            }),
            now,
        );
        let [
            UiEvent::HistoryPage {
                buffer,
                messages,
                more: true,
            },
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(*buffer, BufferId::Room("#t".into()));
        let got: Vec<(Option<u64>, bool)> = messages.iter().map(|(m, own)| (m.id, *own)).collect();
        assert_eq!(
            got,
            vec![(Some(48), false), (Some(49), true)],
            "oldest first"
        );
        // The start of a DM conversation never seen: an empty page ends paging.
        b.on_command(
            UiCommand::FetchHistory {
                buffer: BufferId::Dm("bob".into()),
                before_id: None,
                limit: 2,
            },
            now,
        );
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::HistoryEnd {
                id: None,
                conv: "@xyz".into(),
                count: 0,
            }),
            now,
        );
        assert_eq!(
            out,
            vec![UiEvent::HistoryPage {
                buffer: BufferId::Dm("bob".into()),
                messages: vec![],
                more: false
            }]
        );
        // The status buffer has no history.
        let a = b.on_command(
            UiCommand::FetchHistory {
                buffer: BufferId::Status,
                before_id: None,
                limit: 2,
            },
            now,
        );
        assert!(
            matches!(a, Action::Reply(r) if matches!(&r[..], [UiEvent::HistoryPage { more: false, .. }]))
        );
        // A request the server never answers is answered with an empty page, in time.
        b.on_command(
            UiCommand::FetchHistory {
                buffer: BufferId::Room("#gone".into()),
                before_id: None,
                limit: 2,
            },
            now,
        );
        assert!(b.tick(now + Duration::from_secs(1)).is_empty());
        let out = b.tick(now + PAGE_TIMEOUT);
        assert!(
            matches!(&out[..], [UiEvent::HistoryPage { buffer: BufferId::Room(r), more: false, .. }] if r == "#gone")
        );
    }

    #[test]
    fn a_joins_backlog_waits_for_its_end_then_goes_above_the_join() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let joined = |room: &str| {
            Event::Server(ServerMsg::Joined {
                room: room.into(),
                topic: String::new(),
                members: vec!["alice".into()],
                more: 0,
            })
        };
        ev(&mut b, joined("#t"), now);
        ev(
            &mut b,
            Event::Message(msg("#t", 1, "bob", "old", true)),
            now,
        );
        // Neither statistics, nor a live message elsewhere, nor a quiet moment hand it over
        // half-way (the rest of it would land below the join line).
        assert!(
            ev(&mut b, Event::Stats(Some(stats(0, 1))), now)
                .iter()
                .all(|e| matches!(e, UiEvent::Link(_)))
        );
        let out = ev(
            &mut b,
            Event::Message(msg("#u", 9, "eve", "hi", false)),
            now,
        );
        assert!(matches!(&out[..], [UiEvent::Message { .. }]), "{out:?}");
        assert!(b.tick(now + Duration::from_secs(1)).is_empty());
        ev(
            &mut b,
            Event::Message(msg("#t", 2, "bob", "older", true)),
            now,
        );
        // Its end hands over all of it, as one page.
        let end = ServerMsg::HistoryEnd {
            id: None,
            conv: "#t".into(),
            count: 2,
        };
        let out = ev(&mut b, Event::Server(end), now);
        let [
            UiEvent::HistoryPage {
                buffer,
                messages,
                more: true,
            },
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(buffer, &BufferId::Room("#t".into()));
        let ids: Vec<Option<u64>> = messages.iter().map(|(m, _)| m.id).collect();
        assert_eq!(ids, vec![Some(1), Some(2)]);
        // A room with no history says so at once.
        ev(&mut b, joined("#empty"), now);
        let end = ServerMsg::HistoryEnd {
            id: None,
            conv: "#empty".into(),
            count: 0,
        };
        assert_eq!(
            ev(&mut b, Event::Server(end), now),
            vec![UiEvent::HistoryPage {
                buffer: BufferId::Room("#empty".into()),
                messages: Vec::new(),
                more: false
            }]
        );
        // An end that never comes: after a while, the backlog is shown as it is.
        ev(&mut b, joined("#v"), now);
        ev(&mut b, Event::Message(msg("#v", 1, "bob", "x", true)), now);
        assert!(b.tick(now + Duration::from_secs(1)).is_empty());
        let out = b.tick(now + BACKLOG_WAIT);
        assert!(
            matches!(&out[..], [UiEvent::HistoryPage { buffer: BufferId::Room(r), .. }] if r == "#v"),
            "{out:?}"
        );
    }

    #[test]
    fn a_joins_backlog_is_one_page_in_order() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Joined {
                room: "#t".into(),
                topic: "udp".into(),
                members: vec!["alice".into(), "bob".into()],
                more: 0,
            }),
            now,
        );
        assert!(
            matches!(&out[0], UiEvent::Join { room, nick, .. } if room == "#t" && nick == "alice")
        );
        assert!(out.contains(&UiEvent::Topic {
            room: "#t".into(),
            topic: Some("udp".into()),
            by: None,
            ts: 5
        }));
        assert!(out.contains(&UiEvent::Members {
            room: "#t".into(),
            nicks: vec!["alice".into(), "bob".into()]
        }));
        for id in 1..=3 {
            assert!(
                ev(
                    &mut b,
                    Event::Message(msg("#t", id, "bob", "old", true)),
                    now
                )
                .is_empty()
            );
        }
        // The next live event hands the backlog over first.
        let out = ev(
            &mut b,
            Event::Message(msg("#t", 4, "bob", "new", false)),
            now,
        );
        let [
            UiEvent::HistoryPage { messages, .. },
            UiEvent::Message { msg: live, .. },
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        let ids: Vec<Option<u64>> = messages.iter().map(|(m, _)| m.id).collect();
        assert_eq!(ids, vec![Some(1), Some(2), Some(3)]);
        assert_eq!(live.id, Some(4));
        assert!(b.flush_backlog().is_empty());
        // The rest of a backlog handed over early (the queue ran dry in the middle) is newer
        // than that page: it goes below, as messages.
        let out = ev(
            &mut b,
            Event::Message(msg("#t", 5, "bob", "late", true)),
            now,
        );
        assert!(matches!(&out[..], [UiEvent::Message { msg, .. }] if msg.id == Some(5)));
        // A reconnect rejoins: the member list is refreshed, but nothing else is news.
        let rejoined = ServerMsg::Joined {
            room: "#t".into(),
            topic: "udp".into(),
            members: vec!["alice".into()],
            more: 0,
        };
        let out = ev(&mut b, Event::Server(rejoined.clone()), now);
        assert_eq!(
            out,
            vec![UiEvent::Members {
                room: "#t".into(),
                nicks: vec!["alice".into()]
            }]
        );
        // After leaving, joining again is shown again.
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Parted { room: "#t".into() }),
            now,
        );
        assert!(matches!(&out[..], [UiEvent::Part { nick, .. }] if nick == "alice"));
        let out = ev(&mut b, Event::Server(rejoined), now);
        assert!(matches!(&out[0], UiEvent::Join { .. }), "{out:?}");
        // `/topic` without text answers from what the server said.
        let a = b.on_command(
            UiCommand::Topic {
                room: "#t".into(),
                topic: None,
            },
            now,
        );
        assert!(
            matches!(a, Action::Reply(r) if matches!(&r[..], [UiEvent::Info { text, .. }] if text.contains("udp")))
        );
    }

    #[test]
    fn presence_maps_and_a_quit_shows_once() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let batch = |room: &str| {
            Event::Server(ServerMsg::Presence {
                room: room.into(),
                events: vec![
                    Presence::Join {
                        nick: "alice".into(),
                    },
                    Presence::Join { nick: "bob".into() },
                    Presence::Part {
                        nick: "carol".into(),
                    },
                    Presence::Quit {
                        nick: "dave".into(),
                        reason: "timed out".into(),
                    },
                ],
            })
        };
        let out = ev(&mut b, batch("#a"), now);
        assert_eq!(out.len(), 3, "our own join comes as `joined`: {out:?}");
        assert!(
            matches!(&out[0], UiEvent::Join { nick, room, .. } if nick == "bob" && room == "#a")
        );
        assert!(matches!(&out[1], UiEvent::Part { nick, .. } if nick == "carol"));
        assert!(
            matches!(&out[2], UiEvent::Quit { nick, reason: Some(r), .. } if nick == "dave" && r == "timed out")
        );
        // Dave was in #b too: his quit is not shown again.
        let out = ev(&mut b, batch("#b"), now + Duration::from_millis(50));
        assert_eq!(out.len(), 2, "{out:?}");
        // Our own nick change follows us.
        ev(
            &mut b,
            Event::Server(ServerMsg::Nick {
                old: "alice".into(),
                new: "al".into(),
            }),
            now,
        );
        let out = ev(&mut b, Event::Message(msg("#a", 1, "al", "x", false)), now);
        assert!(matches!(&out[..], [UiEvent::Message { own: true, .. }]));
    }
}
