//! The boundary between the UI and the network: what the network tells the UI
//! ([`UiEvent`]) and what the UI asks of the network ([`UiCommand`]).
//!
//! Both directions are plain data sent over tokio channels (see [`crate::run`]); neither side
//! ever waits on the other. Times are wall-clock Unix milliseconds ([`UnixMs`]), as the server
//! stamps them, so that history from the server and live messages sort and print alike.

use std::fmt;
use std::time::Duration;

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMs = u64;

/// A place messages are shown in: the status buffer, a room, or a direct conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BufferId {
    /// Server notices, command replies and errors that belong to no conversation. Always
    /// present, always first; nothing can be sent to it.
    Status,
    /// A room, named with its leading `#` (`"#rust"`).
    Room(String),
    /// A direct conversation, named by the *other* party's nick (also for messages we sent
    /// to them). `chirp peer` shows its one peer as a `Dm`.
    Dm(String),
}

impl BufferId {
    /// The name shown in the buffer list and accepted by `/buffer`.
    pub fn name(&self) -> &str {
        match self {
            BufferId::Status => "status",
            BufferId::Room(name) | BufferId::Dm(name) => name,
        }
    }
}

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many reacted to a message with one emoji.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionCount {
    /// The emoji, as the server passed it on (hostile: shown through [`crate::safe`]).
    pub emoji: String,
    /// How many users.
    pub count: u64,
}

/// One chat message as the server (or peer) reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatMessage {
    /// The server's id for the stored message, if it has one. Ids order history pages
    /// ([`UiCommand::FetchHistory`]) and let the UI drop a message it already shows.
    pub id: Option<u64>,
    /// The sender's nick.
    pub from: String,
    /// The text, possibly several lines.
    pub text: String,
    /// `true` for an action (`/me waves`), shown as `* nick waves`.
    pub action: bool,
    /// When the server stored it.
    pub ts: UnixMs,
    /// Edited since it was sent (`text` is the newest).
    pub edited: bool,
    /// Deleted (`text` is empty): shown as "message deleted".
    pub deleted: bool,
    /// Its reactions, in the order each emoji was first used.
    pub reactions: Vec<ReactionCount>,
}

/// Where the link to the server or peer stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LinkState {
    /// The first attempt is under way.
    #[default]
    Connecting,
    /// Up and running.
    Connected,
    /// The link was lost; the next attempt starts in `in_secs` seconds from when this status
    /// was handed to the UI (the UI counts down by itself).
    Reconnecting {
        /// Seconds until the next attempt.
        in_secs: u32,
    },
    /// Gone for good (the network task ended); the text says why.
    Disconnected(String),
}

/// Which way a peer connection goes (`chirp peer --via`), shown in the status bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPath {
    /// Straight to the peer.
    Direct,
    /// Through the rendezvous server's relay (still encrypted end to end).
    Relayed,
}

impl LinkPath {
    /// The word shown: `direct` or `relayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPath::Direct => "direct",
            LinkPath::Relayed => "relayed",
        }
    }
}

/// A snapshot of the link, shown in the status bar and the `/stats` panel.
///
/// Send one whenever something changes and about once a second while connected: every
/// snapshot with an RTT adds a point to the `/stats` RTT sparkline.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkStatus {
    /// Connection state.
    pub state: LinkState,
    /// Fingerprint of the server's (or peer's) static key, as printed by `chirp id`.
    pub fingerprint: Option<String>,
    /// The path of a peer connection introduced by a server (`chirp peer --via`); `None`
    /// elsewhere.
    pub path: Option<LinkPath>,
    /// Smoothed round-trip time.
    pub rtt: Option<Duration>,
    /// Share of datagrams lost over the last minute, in percent.
    pub loss_pct_last_minute: Option<f64>,
    /// Retransmitted datagrams since the connection started.
    pub retransmissions: u64,
    /// Every counter for the `/stats` panel, in display order (`("datagrams sent", 1234)`).
    pub counters: Vec<(String, u64)>,
    /// Messages the client holds back to keep to the server's rate (its flood control); 0
    /// when nothing waits.
    pub held: usize,
}

/// A room as listed by `/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Name with its leading `#`.
    pub name: String,
    /// Number of members.
    pub members: usize,
    /// Topic, if set.
    pub topic: Option<String>,
}

/// What the network side tells the UI. Feed them to [`crate::App::handle_event`] (the runner
/// does this for events arriving on its channel).
#[derive(Debug, Clone, PartialEq)]
pub enum UiEvent {
    /// Our own nick: after logging in, and after the server accepted a `/nick`. Needed for
    /// highlights and to tell our messages from others'.
    SelfNick(String),
    /// Opens a buffer (if needed) and shows it: `chirp peer` opens its peer's `Dm` this way
    /// at start, so that typing goes to the peer at once.
    Open(BufferId),
    /// A live message. `own` is true for messages *we* sent from another session (or that the
    /// server echoes back): the UI matches them against its pending local echo by `id`, so
    /// the network side should send [`UiEvent::Delivered`] (with the id) before any echo.
    Message {
        /// Where it belongs (for a DM: the other party).
        buffer: BufferId,
        /// The message.
        msg: ChatMessage,
        /// Sent by us.
        own: bool,
    },
    /// A message we sent (`UiCommand::Send { local_id, .. }`) is stored by the server.
    Delivered {
        /// The `local_id` of the send.
        local_id: u64,
        /// The server's id for it.
        id: Option<u64>,
        /// The server's timestamp, which replaces the local one.
        ts: Option<UnixMs>,
    },
    /// A message we sent could not be delivered; it is marked failed and can be retried.
    Failed {
        /// The `local_id` of the send.
        local_id: u64,
        /// Why, for the user.
        reason: String,
    },
    /// Someone (possibly we) joined a room. Our own join opens the room's buffer and shows it.
    Join {
        /// The room.
        room: String,
        /// Who joined.
        nick: String,
        /// When.
        ts: UnixMs,
    },
    /// Someone (possibly we) left a room. Our own part keeps the buffer, marked as left.
    Part {
        /// The room.
        room: String,
        /// Who left.
        nick: String,
        /// Their parting words.
        reason: Option<String>,
        /// When.
        ts: UnixMs,
    },
    /// Someone disconnected: shown in every room they were in and in their DM.
    Quit {
        /// Who.
        nick: String,
        /// Why.
        reason: Option<String>,
        /// When.
        ts: UnixMs,
    },
    /// Someone changed nick (if `old` is ours, ours changes too).
    NickChange {
        /// Old nick.
        old: String,
        /// New nick.
        new: String,
        /// When.
        ts: UnixMs,
    },
    /// A room's topic (on join, and when someone changes it).
    Topic {
        /// The room.
        room: String,
        /// The topic; `None` clears it.
        topic: Option<String>,
        /// Who set it, when it was just changed.
        by: Option<String>,
        /// When.
        ts: UnixMs,
    },
    /// The full member list of a room (replaces what the UI had).
    Members {
        /// The room.
        room: String,
        /// Nicks, in any order.
        nicks: Vec<String>,
    },
    /// The answer to [`UiCommand::List`]; shown in the status buffer, and the names feed Tab
    /// completion.
    RoomList(Vec<RoomInfo>),
    /// Older messages for a buffer, answering [`UiCommand::FetchHistory`] (or a backlog sent
    /// on join). Oldest first; they go above what is loaded, and ids already shown are
    /// skipped. `more == false` means the start of history was reached.
    HistoryPage {
        /// The buffer.
        buffer: BufferId,
        /// The messages, oldest first, each with `own` set if we sent it.
        messages: Vec<(ChatMessage, bool)>,
        /// Whether older messages remain.
        more: bool,
    },
    /// Informational text for a buffer (`None`: the status buffer), e.g. a `/who` reply.
    Info {
        /// Where to show it.
        buffer: Option<BufferId>,
        /// The text.
        text: String,
    },
    /// An error the user should see, shown in the current buffer.
    Error(String),
    /// The largest message the server accepts, in bytes of UTF-8 (replaces
    /// [`crate::Config::max_message_bytes`]).
    MessageLimit(usize),
    /// A new snapshot of the link.
    Link(LinkStatus),
    /// A yes/no question only the user can answer (peer mode: trust a key never seen
    /// before?). Shown in the current buffer; Alt+Y or Alt+N answers it with
    /// [`UiCommand::Answer`]. Typing goes on meanwhile: a question can come at any moment,
    /// so no plain key answers it by accident.
    Ask {
        /// The question, shown as it is (the runner adds the keys to press).
        question: String,
    },
    /// A file is offered to us (by the peer, or through the server by a user): shown in the
    /// current buffer; `/accept [ID]` or
    /// Alt+Y (with no question open: the oldest offer) accepts it with
    /// [`UiCommand::AcceptFile`], `/decline [ID]` or Alt+N declines it.
    FileOffer {
        /// The offer's number.
        id: u64,
        /// What to show (the name already made safe to print).
        text: String,
    },
    /// An offer is no longer waiting for an answer (accepted, declined, ended).
    FileAnswered {
        /// The offer's number.
        id: u64,
    },
    /// The file transfers' progress line for the status bar (bytes, rate, ETA); `None`:
    /// none under way.
    FileProgress(Option<String>),
    /// Message `target` of `buffer` was edited: its text is now `text` (shown with
    /// "(edited)"). `id` is the event's own id in the conversation.
    Edited {
        /// Where the message is.
        buffer: BufferId,
        /// The event's id.
        id: u64,
        /// The message edited.
        target: u64,
        /// Its whole new text.
        text: String,
    },
    /// Message `target` of `buffer` was deleted: shown as "message deleted", in place.
    Deleted {
        /// Where the message is.
        buffer: BufferId,
        /// The event's id.
        id: u64,
        /// The message deleted.
        target: u64,
    },
    /// `count` users have reacted to message `target` with `emoji` now (0: none any more).
    Reaction {
        /// Where the message is.
        buffer: BufferId,
        /// The event's id.
        id: u64,
        /// The message.
        target: u64,
        /// The emoji.
        emoji: String,
        /// How many have reacted with it after this event.
        count: u64,
    },
    /// `nick` is typing in `buffer`: shown in the status bar for a few seconds, or until a
    /// message of theirs arrives there.
    Typing {
        /// Where.
        buffer: BufferId,
        /// Who.
        nick: String,
    },
    /// The user's read marker in `buffer` is at `id` (set from this UI or another device of
    /// the same user): `unread` messages above it are left, so the buffer's unread count
    /// goes down to that if it was higher.
    ReadMarker {
        /// The conversation.
        buffer: BufferId,
        /// The last id read.
        id: u64,
        /// Messages above the marker that this client has seen.
        unread: usize,
    },
    /// The answer to [`UiCommand::Search`]: matches, newest first; `more`: asking again with
    /// `before` the last one's id may find older ones.
    SearchResults {
        /// The conversation searched.
        buffer: BufferId,
        /// The words looked for.
        query: String,
        /// The matching messages, newest first.
        hits: Vec<ChatMessage>,
        /// The page was full.
        more: bool,
    },
}

/// What the UI asks of the network side. Commands are queued by the runner and handed to the
/// channel as it has room, so the UI never waits for the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiCommand {
    /// Send a message. `/msg nick text` and `/me text` become this too (a `Dm` buffer, and
    /// `action: true`). A retry (Alt+R or `/retry`) sends the same `local_id` and text again.
    /// Answer with [`UiEvent::Delivered`] or [`UiEvent::Failed`] for the `local_id`.
    Send {
        /// Room or DM (never [`BufferId::Status`]).
        buffer: BufferId,
        /// The text; may contain newlines (a multi-line paste is one message). Never longer
        /// than the message limit.
        text: String,
        /// `/me`.
        action: bool,
        /// The UI's id for this send, unique for the App's lifetime, starting at 1.
        local_id: u64,
    },
    /// `/join #room`.
    Join {
        /// Room name with its `#`.
        room: String,
    },
    /// `/part [#room] [reason]` (default: the current room), also `/close` in a room.
    Part {
        /// Room name with its `#`.
        room: String,
        /// Parting words.
        reason: Option<String>,
    },
    /// `/nick new`.
    Nick {
        /// The requested nick.
        nick: String,
    },
    /// `/topic [text]`: with `None`, asks for the current topic.
    Topic {
        /// The room.
        room: String,
        /// The new topic.
        topic: Option<String>,
    },
    /// `/list`: answer with [`UiEvent::RoomList`].
    List,
    /// `/who [#room]`: answer with [`UiEvent::Members`] (and an [`UiEvent::Info`] if wanted).
    Who {
        /// The room.
        room: String,
    },
    /// The user scrolled past the oldest loaded message: send up to `limit` messages older
    /// than `before_id` (`None`: the newest ones) as a [`UiEvent::HistoryPage`]. Not repeated
    /// for a buffer until that page arrives, so always answer: where there is no history (a
    /// peer, a failed query), with an empty page and `more: false`.
    FetchHistory {
        /// The buffer.
        buffer: BufferId,
        /// Oldest id the UI has, if any.
        before_id: Option<u64>,
        /// How many to send at most.
        limit: u32,
    },
    /// `/quit [reason]`, Ctrl+C, or Ctrl+D on an empty line. The runner returns after
    /// handing it over.
    Quit {
        /// Parting words.
        reason: Option<String>,
    },
    /// The user's answer to [`UiEvent::Ask`]: Alt+Y (true) or Alt+N (false).
    Answer(bool),
    /// `/send PATH` (peer mode: to the peer; `chirp connect`: in a DM buffer, to its nick),
    /// or `/send NICK PATH` (`chirp connect`): offer a file.
    SendFile {
        /// The nick to offer it to (`chirp connect`); `None` in peer mode.
        to: Option<String>,
        /// The file, as typed.
        path: String,
    },
    /// `/accept ID`, or Alt+Y / `/accept` with no question open: accept a file offer
    /// (`None`: the oldest waiting).
    AcceptFile(Option<u64>),
    /// `/decline [ID]`, or Alt+N with an offer open: decline a file offer (`None`: the
    /// oldest waiting).
    DeclineFile(Option<u64>),
    /// `/cancel [ID]`: stop sending a file (`None`: the only one being sent).
    CancelFile(Option<u64>),
    /// A moderation command (`/op`, `/kick`, `/ban`, `/mode`, …) as parsed: a request to the
    /// server, which judges it. Its answer comes as events (a room event, an error).
    Moderate {
        /// The command's arguments.
        command: crate::command::ModCommand,
        /// The current buffer's room, used when the command names none.
        room: Option<String>,
    },
    /// `/ignore NICK`: stop showing NICK's messages (`None`: list who is ignored). Answer
    /// with an [`UiEvent::Info`].
    Ignore(Option<String>),
    /// `/unignore NICK`.
    Unignore(String),
    /// `/edit ID TEXT`: replace the text of our message `id` in `buffer` (a room or DM).
    /// Its answer comes as [`UiEvent::Edited`] (or an error).
    Edit {
        /// The conversation.
        buffer: BufferId,
        /// The message.
        id: u64,
        /// Its new text.
        text: String,
    },
    /// `/delete ID`: delete message `id` in `buffer` (ours; operators: anyone's). Answered
    /// with [`UiEvent::Deleted`] (or an error).
    Delete {
        /// The conversation.
        buffer: BufferId,
        /// The message.
        id: u64,
    },
    /// `/react ID EMOJI` (`remove`: `/unreact`). Answered with [`UiEvent::Reaction`].
    React {
        /// The conversation.
        buffer: BufferId,
        /// The message.
        id: u64,
        /// The emoji, as typed (the server judges it).
        emoji: String,
        /// Take our reaction back.
        remove: bool,
    },
    /// The user is composing a message in `buffer` (sent at most once every
    /// [`crate::App`]'s typing interval, 3 s, per buffer).
    Typing {
        /// A room or DM.
        buffer: BufferId,
    },
    /// The user has seen `buffer` up to message `id`: move the read marker there (the
    /// user's other devices then clear their unread counts). Sent at most about once a
    /// second, for the newest id shown while the buffer is viewed at its bottom.
    Read {
        /// A room or DM.
        buffer: BufferId,
        /// The newest id shown.
        id: u64,
    },
    /// `/search WORDS`: search the server's stored history of `buffer`, newest first, below
    /// `before` (the same search again: the next page). Answer with
    /// [`UiEvent::SearchResults`].
    Search {
        /// A room or DM.
        buffer: BufferId,
        /// The words.
        query: String,
        /// Only messages older than this id.
        before: Option<u64>,
    },
}
