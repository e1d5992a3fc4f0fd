//! `chirp connect` in the terminal UI: the translation between the chat session
//! ([`chirp_chat::client::Session`]) and the UI ([`chirp_tui`]). Pure: time comes in.
//!
//! [`Bridge::on_event`] turns session events into [`UiEvent`]s; [`Bridge::on_command`] turns
//! [`UiCommand`]s into an [`Action`], which [`perform`] carries out on the session (the
//! driver owns both by `&mut`, in one task).
//!
//! What the translation has to get right:
//! - **Delivery states.** The UI shows its own messages as pending until they are stored, and
//!   matches later echoes by id. The server's copy of our own message carries our client
//!   sequence number (`c`): it marks the message delivered at once and is not shown again.
//!   Our messages from another session of ours carry none, and are shown as our own.
//! - **History.** Each page the UI asks for is a `history` request with an id, and the
//!   `history_end` carrying that id closes it: the messages collected for its buffer are the
//!   page. The backlog a first join replays ends with a `history_end` without an id: it is
//!   collected and handed over as one page, above the join line. A live message in the same
//!   buffer hands it over first (it is older). Every `FetchHistory` is answered: a lost
//!   connection answers the open ones with what they have; a request the server never
//!   answers (refused) is answered empty after [`PAGE_TIMEOUT`], and a join backlog whose end
//!   never comes is shown after [`BACKLOG_WAIT`] (both only as safety nets).
//! - **The link.** Once a second the session is asked for its connection statistics; the
//!   status bar gets the smoothed RTT, retransmissions and the loss over the last minute
//!   ([`crate::link`]).
//! - **Pacing.** While the session holds requests back to the server's rate, the status bar
//!   says how many.
//! - **Failover.** With several server addresses, a lost one is reported with the address
//!   the session moves to, and a connection to another address than the last one says so.
//! - **Changes to messages.** Live `edited`, `deleted` and `reaction` events (and those of a
//!   catch-up) change the line shown; replayed ones (`history`) change nothing, since the
//!   copies of a history page carry their state. Typing notices of ignored nicks are dropped.
//! - **Unread counts** follow the read markers: the bridge counts the messages of others
//!   above each conversation's marker ([`crate::unread::Unread`], as line mode does), and a
//!   `marker` (from this UI's `read`, or another device's) tells the UI how many are left.
//! - **Search.** Each `/search` is a `search` request with an id; its `search_results` go to
//!   the buffer that asked, with the words it asked for (so the same search again pages on).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chirp_chat::client::{Event, Session, Target};
use chirp_chat::names::fold;
use chirp_chat::wire::{ClientMsg, Msg, Presence, ReactReq, ServerMsg};
use chirp_keys::PublicKey;
use chirp_tui::{
    BufferId, ChatMessage, LinkState, LinkStatus, ReactionCount, RoomInfo, UiCommand, UiEvent,
    UnixMs,
};

use crate::files::{DmNote, FileCommand, FileView};
use crate::ignore::{Change, IgnoreList};
use crate::line::SEARCH_PAGE;
use crate::link::{LossWindow, update_link};
use crate::unread::Unread;

/// Searches waiting for their results at most (an older one's answer is then not shown).
const MAX_SEARCHES: usize = 16;

/// A history request the server never answered (it refused it) is answered with an empty
/// page after this long, so the UI can ask again.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// A join's backlog whose `history_end` has not come after this long is shown as it is.
pub const BACKLOG_WAIT: Duration = Duration::from_secs(2);
/// The same nick quitting in several shared rooms within this time is shown once.
const QUIT_DEDUP: Duration = Duration::from_secs(5);

/// Whether two buffers are the same conversation (names compared as the server folds them).
fn same_buffer(a: &BufferId, b: &BufferId) -> bool {
    match (a, b) {
        (BufferId::Room(x), BufferId::Room(y)) | (BufferId::Dm(x), BufferId::Dm(y)) => {
            fold(x) == fold(y)
        }
        (BufferId::Status, BufferId::Status) => true,
        _ => false,
    }
}

/// Server timestamps are signed milliseconds; anything before 1970 is nonsense, shown as 0.
fn ts(ms: i64) -> UnixMs {
    u64::try_from(ms).unwrap_or(0)
}

/// What the session should be asked to do for a [`UiCommand`] ([`perform`] does it).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `say`; then report the returned sequence number with [`Bridge::sent`].
    Say {
        /// Where.
        target: Target,
        /// The text.
        text: String,
        /// A `/me` action.
        action: bool,
        /// The UI's id for it.
        local_id: u64,
    },
    /// Join a room.
    Join(String),
    /// Leave a room.
    Part(String),
    /// Change nick.
    Nick(String),
    /// Set a room's topic.
    Topic(String, String),
    /// List rooms.
    List,
    /// List a room's members.
    Who(String),
    /// A moderation request (`/kick`, `/ban`, …).
    Moderate(ClientMsg),
    /// An edit, deletion or reaction ([`Session::amend`]).
    Amend(ClientMsg),
    /// A typing notice to a room or to a nick ([`Session::typing`], which keeps to the
    /// server's rate).
    Typing {
        /// The room.
        room: Option<String>,
        /// Or the nick.
        to: Option<String>,
    },
    /// Move the read marker of a conversation (`#room` or `@…`).
    Read {
        /// The conversation.
        conv: String,
        /// The last id read.
        id: u64,
    },
    /// Search a conversation; then report its id with [`Bridge::search_sent`].
    Search {
        /// The conversation.
        target: Target,
        /// The words.
        query: String,
        /// Only messages older than this id.
        before: Option<u64>,
    },
    /// Ask for a history page; then report its id with [`Bridge::page_sent`].
    History {
        /// The conversation.
        target: Target,
        /// Messages before this id.
        before: Option<u64>,
        /// How many.
        limit: u32,
    },
    /// Leave: wait for every acknowledgement, then close.
    Finish,
    /// A DM file transfer command: the driver's (it owns the transfers' peer connections),
    /// which hands it to them instead of calling [`perform`].
    File(FileCommand),
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
    /// The `history` request's id, once the session has taken it.
    id: Option<u64>,
    buffer: BufferId,
    asked: Instant,
    messages: Vec<(ChatMessage, bool)>,
}

/// A `/search` waiting for its results.
#[derive(Debug)]
struct SearchReq {
    /// The `search` request's id, once the session has taken it.
    id: Option<u64>,
    buffer: BufferId,
    query: String,
}

/// How the session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Finished; this many messages were never acknowledged.
    Finished(usize),
    /// The session could not go on.
    Fatal(String),
}

/// The translation between the session and the UI. Pure: no I/O, time comes in.
#[derive(Debug)]
pub struct Bridge {
    /// Our nick as the server spells it.
    nick: String,
    /// Sends awaiting their ack: client sequence number → the UI's `local_id`.
    sends: HashMap<u64, u64>,
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
    /// The address of the last connection (a failover moves to another).
    server: Option<SocketAddr>,
    /// Nicks whose messages are not shown (`/ignore`).
    ignores: IgnoreList,
    /// Others' messages above the read markers, per conversation.
    unread: Unread,
    /// Searches asked for, oldest first.
    searches: VecDeque<SearchReq>,
    /// DM file transfers under way (their progress line).
    files: FileView,
}

impl Bridge {
    /// A bridge for a session that asked for `nick`.
    pub fn new(nick: String) -> Bridge {
        Bridge {
            nick,
            sends: HashMap::new(),
            backlog: Vec::new(),
            backlog_shown: HashSet::new(),
            pages: VecDeque::new(),
            dm_convs: HashMap::new(),
            topics: HashMap::new(),
            rooms: HashSet::new(),
            quits: VecDeque::new(),
            link: LinkStatus::default(),
            loss: LossWindow::default(),
            server: None,
            ignores: IgnoreList::default(),
            unread: Unread::default(),
            searches: VecDeque::new(),
            files: FileView::default(),
        }
    }

    /// Hides the messages of the nicks in `ignores` (the list loaded at start).
    pub fn with_ignores(mut self, ignores: IgnoreList) -> Bridge {
        self.ignores = ignores;
        self
    }

    /// Whether `ev` is a message the UI does not show (from an ignored nick; ours never are).
    pub fn hides(&self, ev: &Event) -> bool {
        matches!(ev, Event::Message(m) if !self.is_me(&m.from) && self.ignores.is_ignored(&m.from))
    }

    /// Our nick as the server spells it.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// The ignore list, to save when it changed ([`IgnoreList::take_dirty`]).
    pub fn ignores_mut(&mut self) -> &mut IgnoreList {
        &mut self.ignores
    }

    /// The first events for the UI.
    pub fn start(&self, greeting: String) -> Vec<UiEvent> {
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
    pub fn connected(&self) -> bool {
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
            edited: m.edited,
            deleted: m.deleted,
            reactions: m
                .reactions
                .iter()
                .map(|r| ReactionCount {
                    emoji: r.emoji.clone(),
                    count: r.count,
                })
                .collect(),
        }
    }

    /// The buffer of conversation `conv` (`room` set in a room), if known: a DM conversation
    /// is known from its messages, or else from `other`, the other party when we know it.
    fn conv_buffer(
        &mut self,
        conv: &str,
        room: Option<&str>,
        other: Option<&str>,
    ) -> Option<BufferId> {
        if let Some(room) = room {
            return Some(BufferId::Room(room.to_owned()));
        }
        if conv.starts_with('#') {
            return Some(BufferId::Room(conv.to_owned()));
        }
        if let Some(nick) = self.dm_convs.get(conv) {
            return Some(BufferId::Dm(nick.clone()));
        }
        let other = other.filter(|n| !self.is_me(n))?;
        self.dm_convs.insert(conv.to_owned(), other.to_owned());
        Some(BufferId::Dm(other.to_owned()))
    }

    /// The conversation name (`#room`, `@…`) of a room or DM buffer, if known.
    fn buffer_conv(&self, buffer: &BufferId) -> Option<String> {
        match buffer {
            BufferId::Room(r) => Some(fold(r)),
            BufferId::Dm(n) => self
                .dm_convs
                .iter()
                .find(|(_, nick)| fold(nick) == fold(n))
                .map(|(conv, _)| conv.clone()),
            BufferId::Status => None,
        }
    }

    /// A live change to a message (`history` ones change nothing: the copies shown carry
    /// their state): handed over after any backlog of its buffer, which is older.
    fn amend_event(
        &mut self,
        buffer: Option<BufferId>,
        history: bool,
        ev: UiEvent,
    ) -> Vec<UiEvent> {
        let Some(buffer) = buffer.filter(|_| !history) else {
            return Vec::new();
        };
        let mut out = self.flush_backlog_where(true, |b, _| *b == buffer);
        out.push(ev);
        out
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
    pub fn flush_backlog(&mut self) -> Vec<UiEvent> {
        // Possibly more: the UI asks, and an empty answer ends it.
        self.flush_backlog_where(true, |_, _| true)
    }

    /// Translates one session event. `Some(End)`: the session is over.
    pub fn on_event(
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
            // The requests sent went with the connection: their pages end with what came,
            // and the UI may ask again.
            let mut i = 0;
            while i < self.pages.len() {
                if self.pages[i].id.is_some() {
                    if let Some(p) = self.pages.remove(i) {
                        out.push(UiEvent::HistoryPage {
                            buffer: p.buffer,
                            messages: p.messages,
                            more: true,
                        });
                    }
                } else {
                    i += 1;
                }
            }
        }
        let mut end = None;
        match ev {
            Event::Connecting { .. } => {
                self.link.state = LinkState::Connecting;
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Connected { server, server_key } => {
                if self.server.is_some_and(|last| last != server) {
                    out.push(UiEvent::Info {
                        buffer: None,
                        text: format!("connected to {server}"),
                    });
                }
                self.server = Some(server);
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
            Event::Delivered { c, id, ts: t, .. } => {
                if let Some(local_id) = self.sends.remove(&c) {
                    out.push(UiEvent::Delivered {
                        local_id,
                        id: Some(id),
                        ts: Some(ts(t)),
                    });
                }
            }
            Event::Refused { c, code, message } => match self.sends.remove(&c) {
                Some(local_id) => out.push(UiEvent::Failed {
                    local_id,
                    reason: message,
                }),
                None => out.push(UiEvent::Error(format!("{message} ({code})"))),
            },
            Event::Error { code, message } => {
                out.push(UiEvent::Error(format!("{message} ({code})")));
            }
            Event::Pacing { held, .. } => {
                self.link.held = held;
                out.push(UiEvent::Link(self.link.clone()));
            }
            Event::Server(m) => self.on_server(m, wall, now, &mut out),
            Event::Disconnected {
                reason,
                retry_in,
                server,
                next,
            } => {
                let in_secs =
                    u32::try_from(retry_in.as_millis().div_ceil(1000)).unwrap_or(u32::MAX);
                self.link.state = LinkState::Reconnecting { in_secs };
                self.link.rtt = None;
                self.link.loss_pct_last_minute = None;
                self.link.held = 0;
                self.loss.reset();
                let text = if server == next {
                    format!("disconnected: {reason}; reconnecting in {in_secs} s")
                } else {
                    format!(
                        "disconnected from {server}: {reason}; reconnecting to {next} in {in_secs} s"
                    )
                };
                out.push(UiEvent::Info { buffer: None, text });
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
        // An ignored nick's messages are not shown, live or from history (ours never are
        // hidden: a nick we hold is ours).
        if !own && self.ignores.is_ignored(&m.from) {
            return;
        }
        let buffer = self.buffer_of(&m);
        let msg = Self::chat(&m);
        if m.history {
            // A page the UI asked for in this buffer collects it (the oldest request first:
            // the server answers one conversation's requests in order).
            if let Some(p) = self
                .pages
                .iter_mut()
                .find(|p| p.id.is_some() && same_buffer(&p.buffer, &buffer))
            {
                p.messages.push((msg, own));
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
        if !own {
            self.unread.message(&m.conv, m.id);
        }
        // A live message is newer than any backlog of its buffer: that goes first.
        out.extend(self.flush_backlog_where(true, |b, _| *b == buffer));
        // Our own copy names our send: the UI shows it already (its local echo), and it is
        // stored, since the server sends copies only after storing.
        if let Some(local_id) = m.c.and_then(|c| self.sends.remove(&c)) {
            out.push(UiEvent::Delivered {
                local_id,
                id: Some(m.id),
                ts: Some(ts(m.ts)),
            });
            return;
        }
        out.push(UiEvent::Message { buffer, msg, own });
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
                self.ignores.renamed(&old, &new);
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
            ServerMsg::HistoryEnd {
                id: Some(id),
                count,
                conv,
            } => {
                let Some(i) = self.pages.iter().position(|p| p.id == Some(id)) else {
                    // Not one of ours (a page already answered when its connection was lost).
                    return;
                };
                if let Some(page) = self.pages.remove(i) {
                    if let BufferId::Dm(n) = &page.buffer {
                        self.dm_convs.insert(conv, n.clone());
                    }
                    out.push(UiEvent::HistoryPage {
                        buffer: page.buffer,
                        messages: page.messages,
                        // The server caps pages at its own size: only an empty page means
                        // the start was reached.
                        more: count > 0,
                    });
                }
            }
            ServerMsg::HistoryEnd {
                id: None,
                conv,
                count,
            } if conv.starts_with('#') => {
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
            ServerMsg::Bye { reason } => out.push(UiEvent::Info {
                buffer: None,
                text: format!("the server says goodbye: {reason}"),
            }),
            // The operator changed them: the input line follows (the session paces itself).
            ServerMsg::Limits {
                burst,
                per_sec,
                max_text,
            } => {
                let max_text = usize::try_from(max_text).unwrap_or(usize::MAX);
                out.push(UiEvent::MessageLimit(max_text));
                out.push(UiEvent::Info {
                    buffer: None,
                    text: format!(
                        "the server's limits changed: {burst} requests at once, then {per_sec} a second; messages up to {max_text} bytes"
                    ),
                });
            }
            ServerMsg::Mod(e) => {
                let text = crate::moderation::describe(&e);
                out.push(UiEvent::Info {
                    buffer: Some(BufferId::Room(e.room)),
                    text,
                });
            }
            ServerMsg::Kicked {
                room,
                by,
                reason,
                banned,
            } => {
                self.rooms.remove(&fold(&room));
                let what = if banned { "banned" } else { "kicked" };
                let why = reason.map(|r| format!(": {r}")).unwrap_or_default();
                out.push(UiEvent::Part {
                    room,
                    nick: self.nick.clone(),
                    reason: Some(format!("{what} by {by}{why}")),
                    ts: wall,
                });
            }
            ServerMsg::Modes { room, modes, role } => {
                let m = if modes.is_empty() {
                    "no modes".to_owned()
                } else {
                    format!("modes {modes}")
                };
                out.push(UiEvent::Info {
                    buffer: Some(BufferId::Room(room.clone())),
                    text: format!("{room} has {m}; you are {role}"),
                });
            }
            ServerMsg::Sessions { sessions, silent } => {
                let text = crate::moderation::describe_sessions(&sessions, &silent);
                out.push(UiEvent::Info { buffer: None, text });
            }
            ServerMsg::Edited {
                conv,
                room,
                id,
                by,
                target,
                text,
                history,
                ..
            } => {
                let buffer = self.conv_buffer(&conv, room.as_deref(), Some(&by));
                let ev = UiEvent::Edited {
                    buffer: buffer.clone().unwrap_or(BufferId::Status),
                    id,
                    target,
                    text,
                };
                out.extend(self.amend_event(buffer, history, ev));
            }
            ServerMsg::Deleted {
                conv,
                room,
                id,
                by,
                target,
                history,
                ..
            } => {
                let buffer = self.conv_buffer(&conv, room.as_deref(), Some(&by));
                let ev = UiEvent::Deleted {
                    buffer: buffer.clone().unwrap_or(BufferId::Status),
                    id,
                    target,
                };
                out.extend(self.amend_event(buffer, history, ev));
            }
            ServerMsg::Reaction {
                conv,
                room,
                id,
                by,
                target,
                emoji,
                count,
                history,
                ..
            } => {
                let buffer = self.conv_buffer(&conv, room.as_deref(), Some(&by));
                let ev = UiEvent::Reaction {
                    buffer: buffer.clone().unwrap_or(BufferId::Status),
                    id,
                    target,
                    emoji,
                    count,
                };
                out.extend(self.amend_event(buffer, history, ev));
            }
            ServerMsg::Typing { conv, room, from } => {
                if self.is_me(&from) || self.ignores.is_ignored(&from) {
                    return;
                }
                if let Some(buffer) = self.conv_buffer(&conv, room.as_deref(), Some(&from)) {
                    out.push(UiEvent::Typing { buffer, nick: from });
                }
            }
            ServerMsg::Markers { markers } => {
                for m in markers {
                    self.marker(&m.conv, m.id, out);
                }
            }
            ServerMsg::Marker { conv, id } => self.marker(&conv, id, out),
            ServerMsg::SearchResults {
                id: Some(id),
                hits,
                more,
                ..
            } => {
                let Some(i) = self.searches.iter().position(|s| s.id == Some(id)) else {
                    return;
                };
                let Some(req) = self.searches.remove(i) else {
                    return;
                };
                let hits = hits
                    .iter()
                    .filter(|m| self.is_me(&m.from) || !self.ignores.is_ignored(&m.from))
                    .map(Self::chat)
                    .collect();
                out.push(UiEvent::SearchResults {
                    buffer: req.buffer,
                    query: req.query,
                    hits,
                    more,
                });
            }
            // Handled by the session (welcome, ack, error, msg).
            _ => {}
        }
    }

    /// The user's read marker in `conv` is at `id` (from this UI or another device).
    fn marker(&mut self, conv: &str, id: u64, out: &mut Vec<UiEvent>) {
        let unread = self.unread.marker(conv, id);
        if let Some(buffer) = self.conv_buffer(conv, None, None) {
            out.push(UiEvent::ReadMarker { buffer, id, unread });
        }
    }

    /// `/ignore [NICK]` and `/unignore NICK`: what to tell the user.
    fn ignore(&mut self, nick: Option<String>, add: bool) -> Action {
        let text = match nick {
            None => self.ignores.describe(),
            Some(n) if add && self.is_me(&n) => "you cannot ignore yourself".to_owned(),
            Some(n) if add => match self.ignores.add(&n) {
                Change::Done => format!("ignoring {n}: their messages are not shown"),
                Change::Unchanged => format!("{n} is already ignored"),
                Change::Full => "the ignore list is full: /unignore someone first".to_owned(),
            },
            Some(n) => match self.ignores.remove(&n) {
                Change::Unchanged => format!("{n} is not ignored"),
                _ => format!("no longer ignoring {n}"),
            },
        };
        Action::Reply(vec![UiEvent::Info { buffer: None, text }])
    }

    /// Translates one UI command into what to ask of the session.
    pub fn on_command(&mut self, cmd: UiCommand, now: Instant) -> Action {
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
                    id: None,
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
            UiCommand::Moderate { command, room } => {
                match crate::moderation::request(command, room.map(|r| fold(&r)).as_deref()) {
                    Ok(req) => Action::Moderate(req),
                    Err(e) => Action::Reply(vec![UiEvent::Error(e.message)]),
                }
            }
            UiCommand::Ignore(nick) => self.ignore(nick, true),
            UiCommand::Unignore(nick) => self.ignore(Some(nick), false),
            UiCommand::Edit { buffer, id, text } => match Self::place(&buffer) {
                Some((room, with)) => Action::Amend(ClientMsg::Edit {
                    room,
                    with,
                    id,
                    text,
                }),
                None => Self::no_conversation(),
            },
            UiCommand::Delete { buffer, id } => match Self::place(&buffer) {
                Some((room, with)) => Action::Amend(ClientMsg::Delete { room, with, id }),
                None => Self::no_conversation(),
            },
            UiCommand::React {
                buffer,
                id,
                emoji,
                remove,
            } => match Self::place(&buffer) {
                Some((room, with)) => {
                    let r = ReactReq {
                        room,
                        with,
                        id,
                        emoji,
                    };
                    Action::Amend(if remove {
                        ClientMsg::Unreact(r)
                    } else {
                        ClientMsg::React(r)
                    })
                }
                None => Self::no_conversation(),
            },
            UiCommand::Typing { buffer } => match Self::place(&buffer) {
                Some((room, to)) => Action::Typing { room, to },
                None => Action::Reply(Vec::new()),
            },
            // A DM not yet known by its conversation name (no message seen) has no marker
            // to move.
            UiCommand::Read { buffer, id } => match self.buffer_conv(&buffer) {
                Some(conv) => Action::Read { conv, id },
                None => Action::Reply(Vec::new()),
            },
            UiCommand::Search {
                buffer,
                query,
                before,
            } => {
                let target = match &buffer {
                    BufferId::Room(r) => Target::Room(r.clone()),
                    BufferId::Dm(n) => Target::Nick(n.clone()),
                    BufferId::Status => return Self::no_conversation(),
                };
                if self.searches.len() >= MAX_SEARCHES {
                    self.searches.pop_front();
                }
                self.searches.push_back(SearchReq {
                    id: None,
                    buffer,
                    query: query.clone(),
                });
                Action::Search {
                    target,
                    query,
                    before,
                }
            }
            UiCommand::Quit { .. } => Action::Finish,
            // `chirp connect` never asks (its server key is pinned or trusted on first use).
            UiCommand::Answer(_) => Action::Reply(Vec::new()),
            UiCommand::SendFile { to: Some(to), path } => {
                Action::File(FileCommand::Send { to, path })
            }
            // The UI names the nick in `chirp connect` (`None` is peer mode's).
            UiCommand::SendFile { to: None, .. } => Action::Reply(vec![UiEvent::Error(
                "usage: /send NICK PATH (or /send PATH in a DM buffer, to its nick)".into(),
            )]),
            UiCommand::AcceptFile(id) => Action::File(FileCommand::Accept(id)),
            UiCommand::DeclineFile(id) => Action::File(FileCommand::Decline(id)),
            UiCommand::CancelFile(id) => Action::File(FileCommand::Cancel(id)),
        }
    }

    /// What the DM file transfers said ([`DmNote`]): offers, progress in the status bar, a
    /// line in the DM buffer of the other user when a transfer ends.
    pub fn on_dm_file(&mut self, note: DmNote) -> Vec<UiEvent> {
        let mut out = Vec::new();
        match note {
            DmNote::Status { nick, text } => out.push(UiEvent::Info {
                buffer: nick.map(BufferId::Dm),
                text,
            }),
            DmNote::Error(text) => out.push(UiEvent::Error(text)),
            DmNote::File { nick, event } => {
                let buffer = Some(BufferId::Dm(nick.clone()));
                self.files.on_event(&nick, buffer, event, &mut out);
            }
        }
        out
    }

    /// Where a request about a message of `buffer` goes: `(room, with)`.
    fn place(buffer: &BufferId) -> Option<(Option<String>, Option<String>)> {
        match buffer {
            BufferId::Room(r) => Some((Some(r.clone()), None)),
            BufferId::Dm(n) => Some((None, Some(n.clone()))),
            BufferId::Status => None,
        }
    }

    fn no_conversation() -> Action {
        Action::Reply(vec![UiEvent::Error(
            "that works in a room or a conversation, not in the status buffer".into(),
        )])
    }

    /// The session took the newest `search` request: `id` is its id.
    pub fn search_sent(&mut self, id: u64) {
        if let Some(s) = self.searches.iter_mut().rev().find(|s| s.id.is_none()) {
            s.id = Some(id);
        }
    }

    /// The session took the newest `history` request: `id` is its id.
    pub fn page_sent(&mut self, id: u64) {
        if let Some(p) = self.pages.iter_mut().rev().find(|p| p.id.is_none()) {
            p.id = Some(id);
        }
    }

    /// The session took a `say`: `c` is its sequence number.
    pub fn sent(&mut self, c: u64, local_id: u64) {
        self.sends.insert(c, local_id);
    }

    /// A request could not even be handed to the session (it has ended).
    pub fn not_sent(&mut self, action: &Action) -> Vec<UiEvent> {
        match action {
            Action::Say { local_id, .. } => vec![UiEvent::Failed {
                local_id: *local_id,
                reason: "the chat session has ended".into(),
            }],
            Action::History { .. } => self.expire_pages(None),
            Action::Search { .. } => {
                self.searches.retain(|s| s.id.is_some());
                vec![UiEvent::Error("the chat session has ended".into())]
            }
            // Nothing to tell: the user asked for neither.
            Action::Typing { .. } | Action::Read { .. } => Vec::new(),
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
    pub fn tick(&mut self, now: Instant) -> Vec<UiEvent> {
        let mut out = self.expire_pages(Some(now));
        out.extend(self.flush_backlog_where(true, |_, since| {
            now.saturating_duration_since(since) >= BACKLOG_WAIT
        }));
        out
    }
}

/// Carries out an [`Action`] on the session; returns what to tell the UI at once.
pub fn perform(
    bridge: &mut Bridge,
    session: &mut Session,
    now: Instant,
    action: Action,
) -> Vec<UiEvent> {
    if session.is_ended() {
        return bridge.not_sent(&action);
    }
    match action {
        Action::Say {
            target,
            text,
            action: me,
            local_id,
        } => {
            let c = session.say(now, target, text, me);
            bridge.sent(c, local_id);
        }
        Action::Join(room) => session.join(room),
        Action::Part(room) => session.part(room),
        Action::Nick(nick) => session.nick(nick),
        Action::Topic(room, topic) => session.topic(room, topic),
        Action::List => session.list(),
        Action::Who(room) => session.who(room),
        Action::Moderate(req) => session.moderate(req),
        Action::Amend(req) => session.amend(req),
        Action::Typing { room, to } => session.typing(now, room, to),
        Action::Read { conv, id } => session.read(conv, id),
        Action::Search {
            target,
            query,
            before,
        } => {
            let id = session.search(target, query, before, SEARCH_PAGE);
            bridge.search_sent(id);
        }
        Action::History {
            target,
            before,
            limit,
        } => {
            let id = session.history(target, before, limit);
            bridge.page_sent(id);
        }
        Action::Finish => session.finish(now),
        // The driver carries these out itself; one without DM transfers says so.
        Action::File(_) => {
            return vec![UiEvent::Error(
                "file transfer is not available in this client".into(),
            )];
        }
        Action::Reply(events) => return events,
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chirp_proto::ConnectionStats;

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
            ..Msg::default()
        }
    }

    fn dm(conv: &str, id: u64, from: &str, to: &str) -> Msg {
        Msg {
            room: None,
            to: Some(to.into()),
            ..msg(conv, id, from, "psst", false)
        }
    }

    /// A server's address, and another node of its cluster.
    const A: ([u8; 4], u16) = ([10, 0, 0, 1], 7667);
    const B: ([u8; 4], u16) = ([10, 0, 0, 2], 7667);

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

    /// What the UI is told of a delivery seen in our echo (server time `ts`).
    fn delivered_at(local_id: u64, id: u64, ts: u64) -> UiEvent {
        UiEvent::Delivered {
            local_id,
            id: Some(id),
            ts: Some(ts),
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

    /// The operator changed the server's limits: the input line takes the new size.
    #[test]
    fn new_limits_change_the_input_lines_limit_and_are_said() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Limits {
                burst: 3,
                per_sec: 1,
                max_text: 100,
            }),
            now,
        );
        assert_eq!(out[0], UiEvent::MessageLimit(100));
        assert!(
            matches!(&out[1], UiEvent::Info { text, .. } if text.contains("3 requests at once, then 1 a second")),
            "{out:?}"
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
                server: A.into(),
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
                server: A.into(),
                next: A.into(),
            },
            now,
        );
        assert!(out.iter().any(|e| matches!(e, UiEvent::Link(l)
                if l.state == LinkState::Reconnecting { in_secs: 2 } && l.rtt.is_none())));
        assert!(out.contains(&UiEvent::Info {
            buffer: None,
            text: "disconnected: no answer from the server; reconnecting in 2 s".into()
        }));
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
    fn our_echo_is_matched_by_its_sequence_number_and_not_shown_twice() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        b.sent(1, 7);
        // The server sends our copy (tagged with our `c`) before the ack: it marks the local
        // echo delivered at once, and is not shown again.
        let echo = Msg {
            c: Some(1),
            ..msg("#t", 40, "alice", "hi", false)
        };
        let out = ev(&mut b, Event::Message(echo), now);
        assert_eq!(out, vec![delivered_at(7, 40, 1040)]);
        // The ack that follows changes nothing.
        assert!(ev(&mut b, stored(1, 40), now).is_empty());
        // Our messages from another session (no `c`) are shown as own, at once, even while a
        // send of this session is pending.
        b.sent(2, 8);
        let out = ev(
            &mut b,
            Event::Message(msg("#t", 41, "Alice", "hi", false)),
            now,
        );
        assert!(
            matches!(&out[..], [UiEvent::Message { own: true, msg, .. }] if msg.id == Some(41))
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
        assert!(matches!(&out[..], [UiEvent::Failed { local_id: 8, .. }]));
        // A `c` that is not a send of ours (already resolved) shows the message.
        let stray = Msg {
            c: Some(2),
            ..msg("#t", 42, "alice", "late", false)
        };
        let out = ev(&mut b, Event::Message(stray), now);
        assert!(
            matches!(&out[..], [UiEvent::Message { own: true, msg, .. }] if msg.id == Some(42))
        );
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
        b.page_sent(1);
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
                id: Some(1),
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
        b.page_sent(2);
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::HistoryEnd {
                id: Some(2),
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
        // A request the server never answers (it refused it) is answered with an empty page,
        // in time.
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
    fn pages_are_told_apart_by_request_id_not_by_order() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        for (buffer, id) in [
            (BufferId::Room("#a".into()), 5),
            (BufferId::Room("#b".into()), 6),
        ] {
            b.on_command(
                UiCommand::FetchHistory {
                    buffer,
                    before_id: None,
                    limit: 10,
                },
                now,
            );
            b.page_sent(id);
        }
        assert!(ev(&mut b, Event::Message(msg("#b", 3, "bob", "b3", true)), now).is_empty());
        assert!(ev(&mut b, Event::Message(msg("#a", 9, "bob", "a9", true)), now).is_empty());
        // The second request's answer comes first; a join's end (no id) answers neither.
        let end = |id, conv: &str, count| {
            Event::Server(ServerMsg::HistoryEnd {
                id,
                conv: conv.into(),
                count,
            })
        };
        let out = ev(&mut b, end(Some(6), "#b", 1), now);
        assert!(
            matches!(&out[..], [UiEvent::HistoryPage { buffer: BufferId::Room(r), messages, more: true }]
                if r == "#b" && messages.len() == 1 && messages[0].0.text == "b3"),
            "{out:?}"
        );
        let out = ev(&mut b, end(Some(5), "#a", 1), now);
        assert!(
            matches!(&out[..], [UiEvent::HistoryPage { buffer: BufferId::Room(r), messages, .. }]
                if r == "#a" && messages[0].0.text == "a9"),
            "{out:?}"
        );
        // A lost connection answers the pages still open with what they have.
        b.on_command(
            UiCommand::FetchHistory {
                buffer: BufferId::Room("#a".into()),
                before_id: Some(9),
                limit: 10,
            },
            now,
        );
        b.page_sent(7);
        let out = ev(
            &mut b,
            Event::Disconnected {
                reason: "gone".into(),
                retry_in: Duration::from_secs(1),
                server: A.into(),
                next: A.into(),
            },
            now,
        );
        assert!(out.iter().any(|e| matches!(e, UiEvent::HistoryPage { buffer: BufferId::Room(r), more: true, .. } if r == "#a")));
        // Its late end (from before the reconnect) is ignored.
        assert!(ev(&mut b, end(Some(7), "#a", 0), now).is_empty());
    }

    #[test]
    fn a_failover_names_the_address_lost_and_the_one_moved_to() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let connected = |server: ([u8; 4], u16)| Event::Connected {
            server: server.into(),
            server_key: [7; 32],
        };
        let info = |out: &[UiEvent]| -> Vec<String> {
            out.iter()
                .filter_map(|e| match e {
                    UiEvent::Info { text, .. } => Some(text.clone()),
                    _ => None,
                })
                .collect()
        };
        // The first connection is no news (the greeting named the addresses).
        assert!(info(&ev(&mut b, connected(A), now)).is_empty());
        let out = ev(
            &mut b,
            Event::Disconnected {
                reason: "no answer from the server".into(),
                retry_in: Duration::from_millis(300),
                server: A.into(),
                next: B.into(),
            },
            now,
        );
        assert_eq!(
            info(&out),
            vec![
                "disconnected from 10.0.0.1:7667: no answer from the server; reconnecting to \
                 10.0.0.2:7667 in 1 s"
            ]
        );
        assert_eq!(
            info(&ev(&mut b, connected(B), now)),
            vec!["connected to 10.0.0.2:7667"]
        );
        // Back to the same address: nothing to say.
        assert!(info(&ev(&mut b, connected(B), now)).is_empty());
    }

    #[test]
    fn pacing_shows_in_the_status_bar_until_everything_is_sent() {
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        let out = ev(
            &mut b,
            Event::Pacing {
                held: 12,
                next_in: Duration::from_millis(150),
                per_sec: 5,
            },
            now,
        );
        assert!(matches!(&out[..], [UiEvent::Link(l)] if l.held == 12));
        let out = ev(
            &mut b,
            Event::Pacing {
                held: 0,
                next_in: Duration::ZERO,
                per_sec: 5,
            },
            now,
        );
        assert!(matches!(&out[..], [UiEvent::Link(l)] if l.held == 0));
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

    /// Issue 19: a moderation command typed in the UI becomes the same request as in line
    /// mode (in the buffer's room unless it names one), and its answers are shown.
    #[test]
    fn moderation_in_the_ui_becomes_requests_and_events_are_shown() {
        use chirp_chat::wire::{ClientMsg, ModEvent};
        use chirp_tui::command::{self, Command, Context};
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        let typed = |line: &str| match command::parse(line, Context::ChatUi) {
            Ok(Command::Mod(m)) => m,
            other => panic!("{line}: {other:?}"),
        };
        let kick = b.on_command(
            UiCommand::Moderate {
                command: typed("/kick bob spam"),
                room: Some("#R".into()),
            },
            now,
        );
        assert_eq!(
            kick,
            Action::Moderate(ClientMsg::Kick {
                room: "#r".into(),
                nick: "bob".into(),
                reason: Some("spam".into()),
            })
        );
        // From the status buffer, a command must name its room.
        let refused = b.on_command(
            UiCommand::Moderate {
                command: typed("/op bob"),
                room: None,
            },
            now,
        );
        assert!(
            matches!(&refused, Action::Reply(e) if matches!(&e[..], [UiEvent::Error(t)] if t.contains("name one"))),
            "{refused:?}"
        );
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Mod(ModEvent {
                room: "#r".into(),
                id: 3,
                ts: 0,
                by: "ann".into(),
                action: "kick".into(),
                target: Some("bob".into()),
                arg: Some("spam".into()),
                history: false,
            })),
            now,
        );
        assert_eq!(
            out,
            [UiEvent::Info {
                buffer: Some(BufferId::Room("#r".into())),
                text: "ann kicked bob (spam)".into(),
            }]
        );
        // Kicked ourselves: we left the room, and why.
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Kicked {
                room: "#r".into(),
                by: "carol".into(),
                reason: None,
                banned: true,
            }),
            now,
        );
        assert!(
            matches!(&out[..], [UiEvent::Part { nick, reason: Some(r), .. }] if nick == "ann" && r == "banned by carol"),
            "{out:?}"
        );
    }

    /// Issue 19: `/ignore` in the UI hides a nick's messages, live and in history pages.
    #[test]
    fn ignored_nicks_are_not_shown_in_the_ui() {
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        let said = b.on_command(UiCommand::Ignore(Some("Bob".into())), now);
        assert!(
            matches!(&said, Action::Reply(e) if matches!(&e[..], [UiEvent::Info { text, .. }] if text.starts_with("ignoring Bob"))),
            "{said:?}"
        );
        assert!(b.ignores_mut().take_dirty());
        assert!(b.hides(&Event::Message(msg("#r", 1, "bob", "x", false))));
        assert!(ev(&mut b, Event::Message(msg("#r", 1, "bob", "x", false)), now).is_empty());
        let shown = ev(
            &mut b,
            Event::Message(msg("#r", 2, "carol", "y", false)),
            now,
        );
        assert!(matches!(&shown[..], [UiEvent::Message { .. }]), "{shown:?}");
        // History of the ignored nick is not collected into pages either.
        assert!(
            ev(
                &mut b,
                Event::Message(msg("#r", 0, "BOB", "old", true)),
                now
            )
            .is_empty()
        );
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::HistoryEnd {
                id: None,
                conv: "#r".into(),
                count: 1,
            }),
            now,
        );
        assert!(
            out.iter().all(
                |e| !matches!(e, UiEvent::HistoryPage { messages, .. } if !messages.is_empty())
            ),
            "{out:?}"
        );
        // Ourselves: refused.
        let said = b.on_command(UiCommand::Ignore(Some("ANN".into())), now);
        assert!(
            matches!(&said, Action::Reply(e) if matches!(&e[..], [UiEvent::Info { text, .. }] if text.contains("yourself"))),
            "{said:?}"
        );
        b.on_command(UiCommand::Unignore("bob".into()), now);
        assert!(!b.hides(&Event::Message(msg("#r", 4, "bob", "x", false))));
    }

    #[test]
    fn live_changes_reach_the_ui_and_replayed_ones_do_not() {
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        let edited = |history| {
            Event::Server(ServerMsg::Edited {
                conv: "#t".into(),
                room: Some("#t".into()),
                id: 9,
                ts: 0,
                by: "bob".into(),
                target: 4,
                text: "fixed".into(),
                history,
            })
        };
        assert_eq!(
            ev(&mut b, edited(false), now),
            [UiEvent::Edited {
                buffer: BufferId::Room("#t".into()),
                id: 9,
                target: 4,
                text: "fixed".into()
            }]
        );
        assert_eq!(ev(&mut b, edited(true), now), []);
        // In a DM, the buffer is the other party's, known from the conversation's messages.
        ev(&mut b, Event::Message(dm("@ab", 1, "bob", "ann")), now);
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Deleted {
                conv: "@ab".into(),
                room: None,
                id: 2,
                ts: 0,
                by: "ann".into(),
                target: 1,
                history: false,
            }),
            now,
        );
        assert_eq!(
            out,
            [UiEvent::Deleted {
                buffer: BufferId::Dm("bob".into()),
                id: 2,
                target: 1
            }]
        );
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Reaction {
                conv: "#t".into(),
                room: Some("#t".into()),
                id: 10,
                ts: 0,
                by: "bob".into(),
                target: 4,
                emoji: "👍".into(),
                count: 2,
                removed: false,
                history: false,
            }),
            now,
        );
        assert_eq!(
            out,
            [UiEvent::Reaction {
                buffer: BufferId::Room("#t".into()),
                id: 10,
                target: 4,
                emoji: "👍".into(),
                count: 2
            }]
        );
        // A message's state comes with its copy.
        let mut m = msg("#t", 4, "bob", "fixed", true);
        m.edited = true;
        m.reactions = vec![chirp_chat::wire::Reactions {
            emoji: "👍".into(),
            count: 2,
        }];
        let chat = Bridge::chat(&m);
        assert!(chat.edited && !chat.deleted);
        assert_eq!(
            chat.reactions,
            [ReactionCount {
                emoji: "👍".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn typing_is_shown_except_ours_and_ignored_nicks() {
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        let typing = |from: &str, room: Option<&str>| {
            Event::Server(ServerMsg::Typing {
                conv: room.map_or("@ab".into(), str::to_owned),
                room: room.map(str::to_owned),
                from: from.into(),
            })
        };
        assert_eq!(
            ev(&mut b, typing("bob", Some("#t")), now),
            [UiEvent::Typing {
                buffer: BufferId::Room("#t".into()),
                nick: "bob".into()
            }]
        );
        // A DM notice names its typist, the other party.
        assert_eq!(
            ev(&mut b, typing("bob", None), now),
            [UiEvent::Typing {
                buffer: BufferId::Dm("bob".into()),
                nick: "bob".into()
            }]
        );
        assert_eq!(ev(&mut b, typing("Ann", Some("#t")), now), []);
        b.ignores_mut().add("bob");
        assert_eq!(ev(&mut b, typing("bob", Some("#t")), now), []);
        // Asked for by the UI: to the room, or to the nick of a DM.
        assert_eq!(
            b.on_command(
                UiCommand::Typing {
                    buffer: BufferId::Dm("carol".into())
                },
                now
            ),
            Action::Typing {
                room: None,
                to: Some("carol".into())
            }
        );
    }

    #[test]
    fn markers_lower_unread_counts_and_the_ui_moves_them() {
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        for id in 1..=4 {
            ev(
                &mut b,
                Event::Message(msg("#t", id, "bob", "hi", false)),
                now,
            );
        }
        // Ours do not count.
        ev(
            &mut b,
            Event::Message(msg("#t", 5, "ann", "me", false)),
            now,
        );
        // Another device of ours read up to 3: one of bob's is left.
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Marker {
                conv: "#t".into(),
                id: 3,
            }),
            now,
        );
        assert_eq!(
            out,
            [UiEvent::ReadMarker {
                buffer: BufferId::Room("#t".into()),
                id: 3,
                unread: 1
            }]
        );
        let out = ev(
            &mut b,
            Event::Server(ServerMsg::Markers {
                markers: vec![chirp_chat::wire::ReadMarker {
                    conv: "#t".into(),
                    id: 5,
                }],
            }),
            now,
        );
        assert_eq!(
            out,
            [UiEvent::ReadMarker {
                buffer: BufferId::Room("#t".into()),
                id: 5,
                unread: 0
            }]
        );
        // The UI's marker: a room by its folded name; a DM by its conversation, once known.
        assert_eq!(
            b.on_command(
                UiCommand::Read {
                    buffer: BufferId::Room("#T".into()),
                    id: 5
                },
                now
            ),
            Action::Read {
                conv: "#t".into(),
                id: 5
            }
        );
        let dm_read = UiCommand::Read {
            buffer: BufferId::Dm("bob".into()),
            id: 1,
        };
        assert_eq!(
            b.on_command(dm_read.clone(), now),
            Action::Reply(Vec::new())
        );
        ev(&mut b, Event::Message(dm("@ab", 1, "bob", "ann")), now);
        assert_eq!(
            b.on_command(dm_read, now),
            Action::Read {
                conv: "@ab".into(),
                id: 1
            }
        );
    }

    #[test]
    fn search_results_go_to_the_buffer_that_asked() {
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        let a = b.on_command(
            UiCommand::Search {
                buffer: BufferId::Room("#t".into()),
                query: "rocket".into(),
                before: Some(40),
            },
            now,
        );
        assert_eq!(
            a,
            Action::Search {
                target: Target::Room("#t".into()),
                query: "rocket".into(),
                before: Some(40)
            }
        );
        b.search_sent(7);
        b.ignores_mut().add("spam");
        let results = |id| {
            Event::Server(ServerMsg::SearchResults {
                id: Some(id),
                conv: "#t".into(),
                hits: vec![
                    msg("#t", 30, "bob", "rocket", true),
                    msg("#t", 20, "spam", "rocket rocket", true),
                    msg("#t", 10, "ann", "a rocket", true),
                ],
                more: true,
            })
        };
        // Not ours: not shown.
        assert_eq!(ev(&mut b, results(6), now), []);
        let out = ev(&mut b, results(7), now);
        let [
            UiEvent::SearchResults {
                buffer,
                query,
                hits,
                more: true,
            },
        ] = &out[..]
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            (buffer, query.as_str()),
            (&BufferId::Room("#t".into()), "rocket")
        );
        let ids: Vec<_> = hits.iter().map(|m| m.id).collect();
        assert_eq!(
            ids,
            [Some(30), Some(10)],
            "newest first, ignored nicks left out"
        );
        // Answered once.
        assert_eq!(ev(&mut b, results(7), now), []);
    }

    #[test]
    fn edits_deletions_and_reactions_from_the_ui_become_requests() {
        let now = Instant::now();
        let mut b = Bridge::new("ann".into());
        assert_eq!(
            b.on_command(
                UiCommand::Edit {
                    buffer: BufferId::Room("#t".into()),
                    id: 4,
                    text: "x".into()
                },
                now
            ),
            Action::Amend(ClientMsg::Edit {
                room: Some("#t".into()),
                with: None,
                id: 4,
                text: "x".into()
            })
        );
        assert_eq!(
            b.on_command(
                UiCommand::Delete {
                    buffer: BufferId::Dm("bob".into()),
                    id: 2
                },
                now
            ),
            Action::Amend(ClientMsg::Delete {
                room: None,
                with: Some("bob".into()),
                id: 2
            })
        );
        assert_eq!(
            b.on_command(
                UiCommand::React {
                    buffer: BufferId::Room("#t".into()),
                    id: 4,
                    emoji: "👍".into(),
                    remove: true
                },
                now
            ),
            Action::Amend(ClientMsg::Unreact(ReactReq {
                room: Some("#t".into()),
                with: None,
                id: 4,
                emoji: "👍".into()
            }))
        );
        assert!(matches!(
            b.on_command(
                UiCommand::Delete {
                    buffer: BufferId::Status,
                    id: 2
                },
                now
            ),
            Action::Reply(e) if matches!(&e[..], [UiEvent::Error(_)])
        ));
    }

    /// Issue 18: `/send`, `/accept`, `/decline` in `chirp connect`'s UI become the driver's
    /// DM file commands; what the transfers say becomes an offer (hostile name made safe), a
    /// progress line in the status bar (bytes, rate, ETA), and a done line with the hash in
    /// the DM buffer, or an error with the reason.
    #[test]
    fn dm_files_flow_through_the_bridge() {
        use chirp_files::{Direction, FileEvent, hash_hex};
        let now = Instant::now();
        let mut b = Bridge::new("alice".into());
        assert_eq!(
            b.on_command(
                UiCommand::SendFile {
                    to: Some("bob".into()),
                    path: "/tmp/r.pdf".into()
                },
                now
            ),
            Action::File(FileCommand::Send {
                to: "bob".into(),
                path: "/tmp/r.pdf".into()
            })
        );
        assert!(matches!(
            b.on_command(
                UiCommand::SendFile {
                    to: None,
                    path: "/tmp/r.pdf".into()
                },
                now
            ),
            Action::Reply(ref e) if matches!(&e[..], [UiEvent::Error(t)] if t.contains("usage"))
        ));
        assert_eq!(
            b.on_command(UiCommand::AcceptFile(Some(3)), now),
            Action::File(FileCommand::Accept(Some(3)))
        );
        assert_eq!(
            b.on_command(UiCommand::DeclineFile(None), now),
            Action::File(FileCommand::Decline(None))
        );
        assert_eq!(
            b.on_command(UiCommand::CancelFile(Some(1)), now),
            Action::File(FileCommand::Cancel(Some(1)))
        );
        // An offer from bob with a hostile name: shown as a question, the escape as a mark.
        let hash = [0xab; 32];
        let out = b.on_dm_file(DmNote::File {
            nick: "bob".into(),
            event: FileEvent::Offered {
                id: 3,
                name: "evil\x1b[2Jname".into(),
                size: 2 << 20,
                hash,
                auto: false,
                key: Some("wxyz-wxyz-wxyz-wxyz-wxyz-wxyz".into()),
            },
        });
        let [UiEvent::FileOffer { id: 3, text }] = &out[..] else {
            panic!("an offer: {out:?}")
        };
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.starts_with(
                "bob (key wxyz-wxyz-wxy…) offers file 3: \"evil^[[2Jname\" (2.0 MiB, BLAKE3 abababab"
            ),
            "{text}"
        );
        // Progress: one line for the status bar.
        let out = b.on_dm_file(DmNote::File {
            nick: "bob".into(),
            event: FileEvent::Progress {
                id: 3,
                direction: Direction::Receive,
                bytes: 1 << 20,
                total: 2 << 20,
                rate: 512 << 10,
            },
        });
        assert_eq!(
            out,
            vec![UiEvent::FileProgress(Some(
                "↓3 50% 1.0 MiB/2.0 MiB 512.0 KiB/s ETA 2s".into()
            ))]
        );
        // Done: the progress line goes, the offer is closed, the DM buffer gets the hash.
        let out = b.on_dm_file(DmNote::File {
            nick: "bob".into(),
            event: FileEvent::Done {
                id: 3,
                direction: Direction::Receive,
                name: "r.pdf".into(),
                size: 2 << 20,
                hash,
                moved: 0,
                resumed: 0,
            },
        });
        assert_eq!(
            out[..2],
            [UiEvent::FileAnswered { id: 3 }, UiEvent::FileProgress(None)]
        );
        let UiEvent::Info {
            buffer: Some(BufferId::Dm(nick)),
            text,
        } = &out[2]
        else {
            panic!("a line in bob's buffer: {out:?}")
        };
        assert_eq!(nick, "bob");
        assert!(text.contains(&hash_hex(&hash)), "{text}");
        assert!(text.starts_with("file 3 received and verified"), "{text}");
        // A failure says why; a status goes to the DM buffer.
        let out = b.on_dm_file(DmNote::File {
            nick: "bob".into(),
            event: FileEvent::Failed {
                id: 5,
                direction: Direction::Send,
                name: "big.iso".into(),
                reason: "bob declined it".into(),
            },
        });
        assert_eq!(
            out,
            vec![UiEvent::Error("file 5 \"big.iso\": bob declined it".into())]
        );
        let out = b.on_dm_file(DmNote::Status {
            nick: Some("bob".into()),
            text: "the connection is relayed".into(),
        });
        assert_eq!(
            out,
            vec![UiEvent::Info {
                buffer: Some(BufferId::Dm("bob".into())),
                text: "the connection is relayed".into()
            }]
        );
    }
}
