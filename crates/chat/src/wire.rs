//! The chat protocol: what clients and servers say to each other, one JSON object per
//! transport message, tagged by `"t"`. `docs/PROTOCOL.md` ("Chat protocol") is the reference;
//! the tests at the bottom check its examples.
//!
//! Decoding never panics: bytes that are not a known object of this version come back as
//! [`DecodeError`], which the server answers with a `bad_request` error and counts.

use serde::{Deserialize, Serialize};

/// Version of the chat protocol spoken in `hello` / `welcome`.
pub const VERSION: u32 = 1;

/// A conversation to resume: the last id the client saw in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// A room (`#name`) or a DM conversation name (`@…`, from the server).
    pub conv: String,
    /// The last id seen; the server sends everything after it (all of it, from its store).
    pub after: u64,
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First message on every connection.
    Hello {
        /// Protocol version ([`VERSION`]).
        v: u32,
        /// The nick wanted.
        nick: String,
        /// A random number per client process: with `c`, it names a message across reconnects
        /// so a resent message whose acknowledgement was lost is not stored twice.
        client: u64,
        /// Rooms to (re)join, each with the last id seen (`None`: replay recent history).
        #[serde(default)]
        rooms: Vec<JoinReq>,
        /// DM conversations to resume.
        #[serde(default)]
        dms: Vec<Resume>,
        /// `false`: this session gets no own copy of its room messages; their `ack` comes in
        /// its place, in order with the room's other messages (PROTOCOL.md, "No own echo").
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        echo: bool,
    },
    /// Join a room (created on first join).
    Join(JoinReq),
    /// Leave a room.
    Part {
        /// The room.
        room: String,
    },
    /// A message to a room (`room`) or a DM (`to`): exactly one of the two is set.
    Say {
        /// Client sequence number, echoed in `ack` or `error`.
        c: u64,
        /// Target room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Target nick (DM).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        /// The text.
        text: String,
        /// A `/me` action.
        #[serde(default, skip_serializing_if = "is_false")]
        action: bool,
    },
    /// Change nick.
    Nick {
        /// The new nick.
        nick: String,
    },
    /// Set a room's topic.
    Topic {
        /// The room.
        room: String,
        /// The new topic.
        topic: String,
    },
    /// List rooms.
    List,
    /// List a room's members.
    Who {
        /// The room.
        room: String,
    },
    /// Older messages of a room (`room`) or of the DM conversation with `with`.
    History {
        /// The client's id for this request, echoed in the `history_end` that closes its
        /// page, so that a client with several requests out knows which page is which.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The other party of a DM conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// Only ids below this (`None`: the newest).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// How many (the server caps it).
        limit: u32,
    },
    /// This user has read the conversation `conv` (a room, or a DM conversation name) up to
    /// id `id`: its read marker there moves forward (never back), and every session of the
    /// user is told ([`ServerMsg::Marker`]).
    Read {
        /// The conversation.
        conv: String,
        /// The last id read.
        id: u64,
    },
    /// Full-text search in the stored history of a room (`room`) or of the DM conversation
    /// with `with`: the messages holding every word of `q`, newest first, `limit` at most
    /// (the server caps it), with ids below `before`. Answered by one
    /// [`ServerMsg::SearchResults`] carrying `id`.
    Search {
        /// The client's id for this request, echoed in its answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The other party of a DM conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The words (letters and digits; everything else separates them).
        q: String,
        /// Only ids below this (`None`: from the newest): the next page starts below the
        /// oldest id of the last.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// How many (the server caps it).
        limit: u32,
    },
    /// Rendezvous: introduce this session to a session of `nick` for a direct peer connection
    /// (`chirp peer --via`). Answered by `meet` once `nick` has asked for this user too
    /// (mutual consent), by `meet_wait` until then (PROTOCOL.md, "Meeting a peer").
    Meet {
        /// Whom to meet.
        nick: String,
        /// This side's own addresses (on its LAN), as further candidates for the peer: at most
        /// [`MAX_MEET_LOCAL`].
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        local: Vec<std::net::SocketAddr>,
        /// Relay only: the server must not give this session's address to `nick` (it sends
        /// no `addr` and no `local`), and the two connect through its relay (`chirp connect
        /// --relay-only`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        relay_only: bool,
    },
    /// A DM file transfer: offer a file to `nick`'s sessions (PROTOCOL.md, "Files between
    /// users"). Only this description passes through the server; the file itself goes over
    /// an end-to-end peer connection the two open with `meet` once the offer is accepted.
    /// Forwarded as [`ServerMsg::FileOffer`], or refused with [`ServerMsg::FileRefused`].
    FileOffer {
        /// The recipient.
        to: String,
        /// The sender's id for this offer (the answer names it).
        id: u64,
        /// The file's name (without a path: the receiver strips one anyway).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its BLAKE3 root hash (PROTOCOL.md §12), 64 lowercase hex digits.
        hash: String,
    },
    /// The answer to a [`ServerMsg::FileOffer`]: forwarded to the offering nick's sessions as
    /// [`ServerMsg::FileAnswer`].
    FileAnswer {
        /// Who offered the file.
        to: String,
        /// The offer's id.
        id: u64,
        /// Accepted (the receiver then asks to `meet` the sender), or declined.
        accept: bool,
    },
    /// Room owner: make `nick` an operator of `room`.
    Op(RoomNick),
    /// Room owner: `nick` is an operator no more.
    Deop(RoomNick),
    /// Room operator: `nick` may speak in `room` while it is moderated (`+m`).
    Voice(RoomNick),
    /// Room operator: take back `voice`.
    Devoice(RoomNick),
    /// Room operator: `nick` may read `room` but not speak there.
    Mute(RoomNick),
    /// Room operator: take back `mute`.
    Unmute(RoomNick),
    /// Room operator: `nick` may join `room` while it is invite-only (`+i`), until kicked or
    /// banned.
    Invite(RoomNick),
    /// Room operator: put `nick` out of `room` (it may join again, unless banned).
    Kick {
        /// The room.
        room: String,
        /// Whom.
        nick: String,
        /// Why, shown to everyone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ban a key, or an address range, from a room (room operator) or, without `room`, from
    /// the whole server (server operator). Whoever it names is put out at once.
    Ban(BanReq),
    /// Lift a ban ([`ClientMsg::Ban`], naming it the same way).
    Unban(BanReq),
    /// Room operator: change a room's modes: `+i`/`-i` (invite only), `+m`/`-m` (moderated),
    /// `+t`/`-t` (topic locked to operators), `+k`/`-k` (a key to join, given in `key`).
    Mode {
        /// The room.
        room: String,
        /// One change: a sign and a letter.
        change: String,
        /// The room key, for `+k`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// Server operator: list the sessions connected to this server (in a cluster: to every
    /// node that answers within [`CLUSTER_ASK_MS`]).
    Sessions,
    /// Replace the text of one's own message `id` in a room (`room`) or a DM conversation
    /// (`with`): exactly one of the two is set.
    Edit {
        /// The room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The other party of the DM conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The message.
        id: u64,
        /// Its new text.
        text: String,
    },
    /// Delete message `id`: one's own, or (room operators) anyone's in their room. Its text
    /// is removed from the server's store.
    Delete {
        /// The room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The other party of the DM conversation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// The message.
        id: u64,
    },
    /// React to message `id` with an emoji (once per user and emoji).
    React(ReactReq),
    /// Take back one's reaction ([`ClientMsg::React`]).
    Unreact(ReactReq),
    /// This user is typing in a room (`room`) or to a nick (`to`). Ephemeral: forwarded,
    /// never stored; the server forwards at most one per user and conversation every
    /// [`TYPING_INTERVAL_MS`] and drops the rest.
    Typing {
        /// The room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// The nick typed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// Server operator: disconnect a session (an id from `sessions`).
    Kill {
        /// The session.
        session: u64,
        /// Why, told to it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// In a cluster, the node the session is on (as `sessions` names it); absent: the
        /// node this session is connected to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
}

/// A room and a nick in it: the argument of most room-moderation requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomNick {
    /// The room.
    pub room: String,
    /// The nick.
    pub nick: String,
}

/// What a `ban` or `unban` names: a nick (its key), a key (64 hex digits or its fingerprint),
/// and/or an address range (`203.0.113.0/24`, `2001:db8::/48`, or one address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanReq {
    /// The room (absent: server-wide, for server operators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// A nick, a key in hex, or a key's fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// An address range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// Why, shown to everyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The argument of `react` and `unreact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactReq {
    /// The room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The other party of the DM conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// The message.
    pub id: u64,
    /// The emoji: one emoji (a grapheme cluster of pictographic characters and their
    /// modifiers), at most [`MAX_EMOJI_BYTES`] bytes.
    pub emoji: String,
}

/// Longest emoji a reaction may use, in UTF-8 bytes (a family or flag sequence fits).
pub const MAX_EMOJI_BYTES: usize = 32;

/// The server forwards at most one `typing` per user and conversation in this many
/// milliseconds.
pub const TYPING_INTERVAL_MS: i64 = 3000;

/// In a cluster, how long a node waits for the other nodes' answers to a server operator's
/// `sessions` or `kill` before answering without them.
pub const CLUSTER_ASK_MS: i64 = 2000;

/// Most local addresses a `meet` may list.
pub const MAX_MEET_LOCAL: usize = 8;

/// A join request, alone or inside `hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReq {
    /// The room.
    pub room: String,
    /// Last id seen in it (a rejoin after reconnecting); `None` replays recent history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// The room's key, if it has one (mode `+k`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

fn yes() -> bool {
    true
}

/// Where a user has read a conversation up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMarker {
    /// A room, or a DM conversation name (`@…`).
    pub conv: String,
    /// The last id read.
    pub id: u64,
}

/// A chat message as the server sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    /// The conversation: the room, or the DM conversation name (`@…`).
    pub conv: String,
    /// Set for room messages.
    #[serde(default)]
    pub room: Option<String>,
    /// Id, increasing within `conv`.
    pub id: u64,
    /// Server timestamp, milliseconds since the Unix epoch.
    pub ts: i64,
    /// Sender's nick.
    pub from: String,
    /// DM recipient's nick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The text.
    pub text: String,
    /// A `/me` action.
    #[serde(default, skip_serializing_if = "is_false")]
    pub action: bool,
    /// Replayed from history (on join or `/history`), not new.
    #[serde(default, skip_serializing_if = "is_false")]
    pub history: bool,
    /// Only on the sender's own copy, sent to the session(s) of the client instance (`client`
    /// in `hello`) that sent it, live or caught up after a reconnect (never on `history`
    /// copies): the client sequence number of its `say`, so that the client can match its
    /// echo without holding it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<u64>,
    /// Edited since it was sent (`text` is the newest): on copies sent after the edit
    /// (history, catch-up).
    #[serde(default, skip_serializing_if = "is_false")]
    pub edited: bool,
    /// Deleted (`text` is empty): on copies sent after the deletion.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// Its reactions when this copy was sent, in the order each emoji was first used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reactions>,
}

/// How many reacted to a message with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reactions {
    /// The emoji.
    pub emoji: String,
    /// How many users.
    pub count: u64,
}

/// One presence change inside a `presence` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Presence {
    /// Someone joined.
    Join {
        /// Who.
        nick: String,
    },
    /// Someone left the room.
    Part {
        /// Who.
        nick: String,
    },
    /// Someone left the server (or vanished: `reason` says "timed out").
    Quit {
        /// Who.
        nick: String,
        /// Why.
        reason: String,
    },
}

/// Room summary in a `list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room.
    pub room: String,
    /// Members online.
    pub members: u64,
    /// Its topic.
    pub topic: String,
}

/// Error codes (the `code` of an `error`); the `message` says it in words.
pub mod code {
    /// The message could not be decoded.
    pub const BAD_REQUEST: &str = "bad_request";
    /// Unsupported protocol version.
    pub const VERSION: &str = "version";
    /// A nick, room or topic that breaks the naming rules.
    pub const BAD_NAME: &str = "bad_name";
    /// The nick belongs to another key.
    pub const NICK_TAKEN: &str = "nick_taken";
    /// Too many new nicks claimed from this source network lately.
    pub const NICK_RATE: &str = "nick_rate";
    /// Flood control refused the request.
    pub const FLOOD: &str = "flood";
    /// Message text over the size limit (or with control characters).
    pub const BAD_TEXT: &str = "bad_text";
    /// Too many rooms joined.
    pub const TOO_MANY_ROOMS: &str = "too_many_rooms";
    /// Too many sessions from this address.
    pub const TOO_MANY_SESSIONS: &str = "too_many_sessions";
    /// Not in that room.
    pub const NOT_IN_ROOM: &str = "not_in_room";
    /// No such nick.
    pub const NO_SUCH_NICK: &str = "no_such_nick";
    /// The server could not store the message; it was not delivered.
    pub const STORE: &str = "store_failed";
    /// `hello` missing, or sent twice.
    pub const STATE: &str = "protocol_state";
    /// Too many of the session's `history` reads are waiting for the database.
    pub const BUSY: &str = "busy";
    /// A `meet` past the session's pending requests or its rate.
    pub const MEET_BUSY: &str = "meet_busy";
    /// The request needs a role this user does not have (room owner, room operator, server
    /// operator).
    pub const FORBIDDEN: &str = "forbidden";
    /// This key or address is banned (from the room, or from the server).
    pub const BANNED: &str = "banned";
    /// The room is invite-only (`+i`) and this user is not invited.
    pub const INVITE_ONLY: &str = "invite_only";
    /// The room has a key (`+k`) and the join did not give it.
    pub const BAD_KEY: &str = "bad_key";
    /// This user may not speak in the room: muted, or the room is moderated (`+m`) and it
    /// has no voice.
    pub const MUTED: &str = "muted";
    /// Too many joins, nick changes or new rooms lately.
    pub const RATE: &str = "rate";
    /// A server operator disconnected this session.
    pub const KILLED: &str = "killed";
    /// In a cluster, the node a request named did not answer in time (`kill` of a session
    /// on another node).
    pub const NOT_ANSWERING: &str = "not_answering";
    /// A file offered to a nick with no session on this server (nothing is kept for later).
    pub const OFFLINE: &str = "offline";
    /// A file offered that is larger than the server's `--max-file-size`.
    pub const TOO_LARGE: &str = "too_large";
    /// A `read` of a conversation past the user's read markers ([`super::MAX_MARKERS`]).
    pub const TOO_MANY_MARKERS: &str = "too_many_markers";
    /// No such message (there never was, it is deleted, or it is not a message) in that
    /// conversation.
    pub const NO_SUCH_MESSAGE: &str = "no_such_message";
    /// The reaction is there already, or was not there to take back.
    pub const UNCHANGED: &str = "unchanged";
}

/// A moderation action in a room, as the server stores it in the room's history (with an id,
/// in order with the messages) and sends it to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModEvent {
    /// The room.
    pub room: String,
    /// Id in the room's conversation (shared with its messages).
    pub id: u64,
    /// Server timestamp, milliseconds since the Unix epoch.
    pub ts: i64,
    /// Who did it (a nick).
    pub by: String,
    /// What: `owner`, `op`, `deop`, `voice`, `devoice`, `mute`, `unmute`, `invite`, `kick`,
    /// `ban`, `unban` or `mode`. A client shows an action it does not know as it comes.
    pub action: String,
    /// To whom: a nick, a key's fingerprint, or an address range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The mode change (`+i`, `-k`, ...) of a `mode`, or the reason of a `kick` or `ban`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
    /// Replayed from history (on join or `/history`), not new.
    #[serde(default, skip_serializing_if = "is_false")]
    pub history: bool,
}

/// One session, in a `sessions` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The id to give `kill`.
    pub id: u64,
    /// Its nick (empty before `hello`).
    pub nick: String,
    /// Its key's fingerprint.
    pub fingerprint: String,
    /// Its address.
    pub addr: std::net::SocketAddr,
    /// In a cluster, the node it is connected to (give it to `kill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What a server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `hello`: the session is up.
    Welcome {
        /// Protocol version.
        v: u32,
        /// The nick this session has.
        nick: String,
        /// Flood control: burst size.
        burst: u32,
        /// Flood control: sustained requests per second.
        per_sec: u32,
        /// Largest message text in bytes.
        max_text: u32,
    },
    /// The operator changed the limits of `welcome` while the session is up: these hold from
    /// now on.
    Limits {
        /// Flood control: burst size.
        burst: u32,
        /// Flood control: sustained requests per second.
        per_sec: u32,
        /// Largest message text in bytes.
        max_text: u32,
    },
    /// A chat message (room or DM).
    Msg(Msg),
    /// The message with client sequence `c` is stored durably with this id.
    Ack {
        /// The client's sequence number.
        c: u64,
        /// Its conversation.
        conv: String,
        /// Its id there.
        id: u64,
        /// Its server timestamp.
        ts: i64,
    },
    /// A request failed; `c` is set when it was a `say`. (A refused `history` request with an
    /// `id` is closed by a `history_end` with that id, right after its error.)
    Error {
        /// The client's sequence number, for `say`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        c: Option<u64>,
        /// Machine-readable code ([`code`]).
        code: String,
        /// What went wrong, for a person.
        message: String,
    },
    /// This user is now in `room` (sent to each of its sessions).
    Joined {
        /// The room.
        room: String,
        /// Its topic.
        topic: String,
        /// Members online (up to a cap), this user included.
        members: Vec<String>,
        /// Members left out of `members` by the cap.
        #[serde(default)]
        more: u64,
    },
    /// This user left `room`.
    Parted {
        /// The room.
        room: String,
    },
    /// Joins, parts and quits in a room, batched over a short window.
    Presence {
        /// The room.
        room: String,
        /// In order.
        events: Vec<Presence>,
    },
    /// A nick change of someone sharing a room with this user (or of this user).
    Nick {
        /// Old nick.
        old: String,
        /// New nick.
        new: String,
    },
    /// A room's topic changed.
    Topic {
        /// The room.
        room: String,
        /// The topic.
        topic: String,
        /// Who set it.
        by: String,
    },
    /// Answer to `list`.
    List {
        /// Rooms with members online.
        rooms: Vec<RoomInfo>,
    },
    /// Answer to `who`.
    Who {
        /// The room.
        room: String,
        /// Members online (up to a cap).
        members: Vec<String>,
        /// Members left out by the cap.
        #[serde(default)]
        more: u64,
    },
    /// End of a history page (its messages came before, with `history: true`), or of the
    /// messages replayed on a first join. Every `history` request with an `id` gets exactly one,
    /// with `count` 0 after its error if it was refused or its read failed.
    HistoryEnd {
        /// The `id` of the `history` request this page answers (absent for the messages
        /// replayed on a join, and for a request without one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The conversation paged.
        conv: String,
        /// Messages in the page.
        count: u64,
    },
    /// Rendezvous: the `meet` for `nick` is held until `nick` asks for this user too, for at
    /// most `ttl_ms`; nothing about `nick` is told (not even whether it is online).
    MeetWait {
        /// Whom this session asked for.
        nick: String,
        /// How long the request is held, in milliseconds.
        ttl_ms: u64,
    },
    /// Rendezvous: both sides asked for each other. Where the other side is and who it is:
    /// the address the server observes its session at, the local addresses it listed, and
    /// its static key (which the peer connection's handshake must then prove).
    Meet {
        /// The other side's nick.
        nick: String,
        /// Its static key, 64 lowercase hex digits.
        key: String,
        /// Its address as the server sees it (its NAT's public mapping); absent when the
        /// other side asked for relay only (then `local` is empty too, and the two connect
        /// through the relay).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        addr: Option<std::net::SocketAddr>,
        /// The local addresses it listed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        local: Vec<std::net::SocketAddr>,
        /// Where the server sees this session: with `addr`, it tells whether both sides are
        /// behind the same public address (the same NAT), where their local addresses are
        /// the way to each other.
        you: std::net::SocketAddr,
        /// The relay token (32 hex digits) under which this server forwards RELAY datagrams
        /// between the two sessions' addresses (PROTOCOL.md §11), for when no direct path
        /// works; absent from a server that does not relay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay: Option<String>,
    },
    /// A DM file transfer offered to this user by `from` (see [`ClientMsg::FileOffer`]).
    FileOffer {
        /// The sender's nick.
        from: String,
        /// The sender's id for the offer.
        id: u64,
        /// The file's name, as the sender gave it (hostile text).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its BLAKE3 root hash, 64 lowercase hex digits.
        hash: String,
        /// The static key `from` is bound to (the key of the session that made the offer),
        /// 64 lowercase hex digits: what a client that trusts listed keys accepts on, and
        /// what the `meet` for this transfer must then name. Absent from an older server
        /// (whose offers are never accepted without asking); a client that does not know
        /// it ignores it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// `from` answered this user's offer `id`.
    FileAnswer {
        /// The recipient who answered.
        from: String,
        /// The offer's id.
        id: u64,
        /// Accepted or declined.
        accept: bool,
    },
    /// The server did not forward this user's offer `id` to `to`: `code` says why
    /// ([`code::OFFLINE`]: no session of `to`; [`code::TOO_LARGE`]: over the server's
    /// `--max-file-size`; [`code::NO_SUCH_NICK`], [`code::BAD_REQUEST`]), `message` in words.
    FileRefused {
        /// The intended recipient.
        to: String,
        /// The offer's id.
        id: u64,
        /// Why (an error code).
        code: String,
        /// Why, in words.
        message: String,
    },
    /// A moderation action in a room (stored in its history).
    Mod(ModEvent),
    /// This user was put out of `room` by an operator (a `parted` follows).
    Kicked {
        /// The room.
        room: String,
        /// Who did it.
        by: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Banned as well: it cannot join again.
        #[serde(default, skip_serializing_if = "is_false")]
        banned: bool,
    },
    /// A room's modes (after `joined`, when it has any, and after each change): letters of
    /// `+imtk` that are set, and this user's role there.
    Modes {
        /// The room.
        room: String,
        /// The modes set, as `+imt` (empty: none).
        modes: String,
        /// This user's role: `owner`, `op`, `voice`, `muted` or `member`.
        role: String,
    },
    /// Answer to `sessions` (server operators).
    Sessions {
        /// The sessions on this server (in a cluster: on every node that answered).
        sessions: Vec<SessionInfo>,
        /// In a cluster, the other nodes that did not answer within [`CLUSTER_ASK_MS`]: their
        /// sessions are not listed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        silent: Vec<String>,
    },
    /// This user's read markers (after `welcome`, at most [`MAX_MARKERS`]), so that every
    /// device starts from where the user has read.
    Markers {
        /// One per conversation read.
        markers: Vec<ReadMarker>,
    },
    /// This user's read marker in `conv` moved to `id` (from this session or another of the
    /// user's, on any node).
    Marker {
        /// The conversation.
        conv: String,
        /// The last id read.
        id: u64,
    },
    /// Answer to `search`: the matching messages, newest first (each as a `msg` would carry
    /// it, with `history` true). `more`: the page is full, and the next may hold more (ask
    /// with `before` the last id here). A refused search gets an `error`, then this with no
    /// hits.
    SearchResults {
        /// The `id` of the `search` it answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The conversation searched (empty when the request named none that exists).
        conv: String,
        /// The matches.
        hits: Vec<Msg>,
        /// The page is full.
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// Message `target` of `conv` was edited: its text is now `text`. Stored in the
    /// conversation with its own id, so it is caught up on and replayed in order.
    Edited {
        /// The conversation.
        conv: String,
        /// Set in a room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// This event's id in `conv`.
        id: u64,
        /// Server timestamp, milliseconds since the Unix epoch.
        ts: i64,
        /// Who edited it (its sender).
        by: String,
        /// The message edited.
        target: u64,
        /// Its new text.
        text: String,
        /// Replayed from history, not new.
        #[serde(default, skip_serializing_if = "is_false")]
        history: bool,
    },
    /// Message `target` of `conv` was deleted (its text is gone from the server).
    Deleted {
        /// The conversation.
        conv: String,
        /// Set in a room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// This event's id in `conv`.
        id: u64,
        /// Server timestamp, milliseconds since the Unix epoch.
        ts: i64,
        /// Who deleted it: its sender, or a room operator.
        by: String,
        /// The message deleted.
        target: u64,
        /// Replayed from history, not new.
        #[serde(default, skip_serializing_if = "is_false")]
        history: bool,
    },
    /// `by` reacted to message `target` of `conv` with `emoji` (or took it back:
    /// `removed`); `count` users have reacted with it now.
    Reaction {
        /// The conversation.
        conv: String,
        /// Set in a room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// This event's id in `conv`.
        id: u64,
        /// Server timestamp, milliseconds since the Unix epoch.
        ts: i64,
        /// Who.
        by: String,
        /// The message.
        target: u64,
        /// The emoji.
        emoji: String,
        /// How many have reacted to `target` with `emoji` after this event.
        count: u64,
        /// Taken back.
        #[serde(default, skip_serializing_if = "is_false")]
        removed: bool,
        /// Replayed from history, not new.
        #[serde(default, skip_serializing_if = "is_false")]
        history: bool,
    },
    /// `from` is typing in `conv` (never stored; at most one per user and conversation every
    /// [`TYPING_INTERVAL_MS`]).
    Typing {
        /// The conversation.
        conv: String,
        /// Set in a room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Who.
        from: String,
    },
    /// The server is going away (shutdown); reconnect later.
    Bye {
        /// Why.
        reason: String,
    },
}

/// Most read markers the server keeps per user: past this, a `read` of another conversation
/// is refused (`too_many_markers`).
pub const MAX_MARKERS: usize = 512;
/// Largest `search` page (a larger `limit` is capped).
pub const MAX_SEARCH_PAGE: u32 = 50;
/// Longest `q` of a `search`, in bytes (a longer one is refused with `bad_request`).
pub const MAX_SEARCH_QUERY: usize = 256;

/// Bytes that are not a valid message of this protocol version.
#[derive(Debug, thiserror::Error)]
#[error("undecodable chat message: {0}")]
pub struct DecodeError(String);

impl ClientMsg {
    /// Decodes one transport message.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }

    /// Encodes for one transport message.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising these types cannot fail: no maps with non-string keys, no custom Serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl ServerMsg {
    /// Decodes one transport message.
    ///
    /// A `msg` whose tag comes first (as [`Self::encode`] writes every message, and as every
    /// example in PROTOCOL.md is) is decoded straight into [`Msg`]: serde's path for an
    /// internally tagged enum buffers every field before it knows the variant, which doubled
    /// what a client spends per chat message. Both paths accept and reject the same input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.starts_with(MSG_PREFIX) {
            return serde_json::from_slice::<TaggedMsg>(bytes)
                .map(|m| ServerMsg::Msg(m.0))
                .map_err(|e| DecodeError(e.to_string()));
        }
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }

    /// Encodes for one transport message.
    pub fn encode(&self) -> Vec<u8> {
        // See ClientMsg::encode.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// An error without a sequence number.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            c: None,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// How a `msg` begins when its tag comes first.
const MSG_PREFIX: &[u8] = br#"{"t":"msg","#;

/// A `msg` object, tag included, decoded into [`Msg`] without buffering: the one `t` key must
/// say `msg` (a second `t` is an error, as on the general path) and the other keys are
/// `Msg`'s.
struct TaggedMsg(Msg);

impl<'de> Deserialize<'de> for TaggedMsg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TaggedMsg;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a msg object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<TaggedMsg, A::Error> {
                let rest = WithoutTag { map, tagged: false };
                Msg::deserialize(serde::de::value::MapAccessDeserializer::new(rest)).map(TaggedMsg)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The keys and values of a map but its `t`, which it checks.
struct WithoutTag<A> {
    map: A,
    tagged: bool,
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for WithoutTag<A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::{Error as _, IntoDeserializer as _};
        loop {
            let Some(Key(key)) = self.map.next_key::<Key<'de>>()? else {
                return if self.tagged {
                    Ok(None)
                } else {
                    Err(A::Error::missing_field("t"))
                };
            };
            if key != "t" {
                return seed.deserialize(key.into_deserializer()).map(Some);
            }
            if std::mem::replace(&mut self.tagged, true) {
                return Err(A::Error::duplicate_field("t"));
            }
            let Key(tag) = self.map.next_value::<Key<'de>>()?;
            if tag != "msg" {
                return Err(A::Error::unknown_variant(&tag, &["msg"]));
            }
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

/// A string, borrowed from the input when it has no escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> serde::de::Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_owned().into()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
        }
        d.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `C:` / `S:` line of the examples in docs/PROTOCOL.md, "Chat protocol".
    fn doc_example_lines() -> Vec<(char, &'static str)> {
        const DOC: &str = include_str!("../../../docs/PROTOCOL.md");
        let start = DOC
            .find("### Examples\n\n```\nC: {\"t\":\"hello\"")
            .expect("examples");
        let end = start
            + DOC[start..]
                .find("documented_examples_decode")
                .expect("end");
        DOC[start..end]
            .lines()
            .filter_map(|l| {
                let (who, json) = l.split_once(": ")?;
                match who {
                    "C" => Some(('C', json)),
                    "S" => Some(('S', json)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The `C: ` / `S: ` lines of the section `heading` of docs/PROTOCOL.md (`### heading`, up
    /// to the next `### ` heading or the end).
    fn section_lines(heading: &str) -> Vec<&'static str> {
        const DOC: &str = include_str!("../../../docs/PROTOCOL.md");
        let start = DOC
            .find(&format!("### {heading}\n"))
            .unwrap_or_else(|| panic!("no section {heading}"));
        let end = DOC[start + 1..]
            .find("\n### ")
            .map_or(DOC.len(), |n| start + 1 + n);
        DOC[start..end]
            .lines()
            .filter(|l| l.starts_with("C: ") || l.starts_with("S: "))
            .collect()
    }

    /// Decodes every `C: ` / `S: ` line, checks that it encodes back to the same bytes, and
    /// returns the kinds seen (`C edit`, `S error`, ...).
    fn round_trip(lines: &[&str]) -> std::collections::BTreeSet<String> {
        let mut kinds = std::collections::BTreeSet::new();
        for l in lines {
            let json = &l.as_bytes()[3..];
            let again = if l.starts_with("C: ") {
                ClientMsg::decode(json)
                    .unwrap_or_else(|e| panic!("{l}: {e}"))
                    .encode()
            } else {
                ServerMsg::decode(json)
                    .unwrap_or_else(|e| panic!("{l}: {e}"))
                    .encode()
            };
            kinds.insert(format!("{} {}", &l[..1], l.split('"').nth(3).unwrap_or("")));
            assert_eq!(String::from_utf8_lossy(&again), &l[3..], "re-encoded");
        }
        kinds
    }

    /// The rendezvous examples of docs/PROTOCOL.md ("Meeting a peer") are what the code
    /// encodes, byte for byte, and decode to what they say.
    #[test]
    fn documented_meet_examples_are_exact() {
        let lines = section_lines("Meeting a peer");
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("address");
        let client = ClientMsg::Meet {
            nick: "bob".into(),
            local: vec![addr("10.0.1.2:5000")],
            relay_only: false,
        };
        let wait = ServerMsg::MeetWait {
            nick: "bob".into(),
            ttl_ms: crate::server::meet::ASK_TTL_MS as u64,
        };
        let meet = ServerMsg::Meet {
            nick: "bob".into(),
            key: "02".repeat(32),
            addr: Some(addr("203.0.113.2:40002")),
            local: vec![addr("10.0.2.2:6000")],
            you: addr("198.51.100.1:40001"),
            relay: Some("03".repeat(16)),
        };
        let expected = [
            format!("C: {}", String::from_utf8(client.encode()).expect("utf-8")),
            format!("S: {}", String::from_utf8(wait.encode()).expect("utf-8")),
            format!("S: {}", String::from_utf8(meet.encode()).expect("utf-8")),
        ];
        assert_eq!(lines, expected);
        assert_eq!(
            ClientMsg::decode(&lines[0].as_bytes()[3..]).expect("meet"),
            client
        );
        assert_eq!(
            ServerMsg::decode(&lines[1].as_bytes()[3..]).expect("wait"),
            wait
        );
        assert_eq!(
            ServerMsg::decode(&lines[2].as_bytes()[3..]).expect("meet"),
            meet
        );
        // `local` is optional both ways.
        let bare = ClientMsg::decode(br#"{"t":"meet","nick":"bob"}"#).expect("bare meet");
        assert_eq!(
            bare,
            ClientMsg::Meet {
                nick: "bob".into(),
                local: vec![],
                relay_only: false,
            }
        );
        // Relay only: the flag, and an answer without the other side's address.
        let relayed = ClientMsg::decode(br#"{"t":"meet","nick":"bob","relay_only":true}"#)
            .expect("relay-only meet");
        assert!(matches!(
            relayed,
            ClientMsg::Meet {
                relay_only: true,
                ..
            }
        ));
        let hidden = ServerMsg::decode(
            br#"{"t":"meet","nick":"bob","key":"0202020202020202020202020202020202020202020202020202020202020202","you":"198.51.100.1:40001","relay":"03030303030303030303030303030303"}"#,
        )
        .expect("a meet without addr");
        assert!(matches!(hidden, ServerMsg::Meet { addr: None, .. }));
        assert!(ClientMsg::decode(br#"{"t":"meet","nick":"bob","local":["nowhere"]}"#).is_err());
    }

    /// The file-offer examples of docs/PROTOCOL.md ("Files between users") are what the code
    /// encodes, byte for byte, and decode to what they say.
    #[test]
    fn documented_file_examples_are_exact() {
        let lines = section_lines("Files between users");
        let hash = "4bd1a9a8b0c3e5f7d2e6c8a1b3d5f7e9a2c4e6f8b1d3f5a7c9e2b4d6f8a1c3e5";
        let offer = ClientMsg::FileOffer {
            to: "bob".into(),
            id: 7,
            name: "report.pdf".into(),
            size: 123_456,
            hash: hash.into(),
        };
        let alice = "0101010101010101010101010101010101010101010101010101010101010101";
        let offered = ServerMsg::FileOffer {
            from: "alice".into(),
            id: 7,
            name: "report.pdf".into(),
            size: 123_456,
            hash: hash.into(),
            key: Some(alice.into()),
        };
        let answer = ClientMsg::FileAnswer {
            to: "alice".into(),
            id: 7,
            accept: true,
        };
        let answered = ServerMsg::FileAnswer {
            from: "bob".into(),
            id: 7,
            accept: true,
        };
        let refused = ServerMsg::FileRefused {
            to: "carol".into(),
            id: 8,
            code: code::OFFLINE.into(),
            message: "carol is not online; files go only to a user who is (nothing is kept \
                      for later)"
                .into(),
        };
        let utf8 = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
        let expected = [
            format!("C: {}", utf8(offer.encode())),
            format!("S: {}", utf8(offered.encode())),
            format!("C: {}", utf8(answer.encode())),
            format!("S: {}", utf8(answered.encode())),
            format!("S: {}", utf8(refused.encode())),
        ];
        assert_eq!(lines, expected);
        let json = |l: &'static str| &l.as_bytes()[3..];
        assert_eq!(ClientMsg::decode(json(lines[0])).expect("offer"), offer);
        assert_eq!(ServerMsg::decode(json(lines[1])).expect("offer"), offered);
        assert_eq!(ClientMsg::decode(json(lines[2])).expect("answer"), answer);
        assert_eq!(ServerMsg::decode(json(lines[3])).expect("answer"), answered);
        assert_eq!(ServerMsg::decode(json(lines[4])).expect("refused"), refused);
        // Every field is required, but the sender's key, which an older server does not send.
        assert!(ClientMsg::decode(br#"{"t":"file_answer","to":"alice","id":7}"#).is_err());
        assert!(
            ClientMsg::decode(br#"{"t":"file_offer","to":"bob","id":7,"name":"x","size":1}"#)
                .is_err()
        );
    }

    /// The sender's key in a forwarded `file_offer` is additive: an offer without it (an
    /// older server) decodes with none and encodes without the field, one with it round-trips,
    /// and a field this version does not know is skipped, as an older client skips `key`.
    #[test]
    fn file_offer_key_is_optional_both_ways() {
        let hash = "4bd1a9a8b0c3e5f7d2e6c8a1b3d5f7e9a2c4e6f8b1d3f5a7c9e2b4d6f8a1c3e5";
        let key = "0101010101010101010101010101010101010101010101010101010101010101";
        let old = format!(
            r#"{{"t":"file_offer","from":"alice","id":7,"name":"a","size":1,"hash":"{hash}"}}"#
        );
        let without = ServerMsg::FileOffer {
            from: "alice".into(),
            id: 7,
            name: "a".into(),
            size: 1,
            hash: hash.into(),
            key: None,
        };
        assert_eq!(
            ServerMsg::decode(old.as_bytes()).expect("old offer"),
            without
        );
        assert_eq!(without.encode(), old.as_bytes());
        let with = ServerMsg::FileOffer {
            from: "alice".into(),
            id: 7,
            name: "a".into(),
            size: 1,
            hash: hash.into(),
            key: Some(key.into()),
        };
        let new = with.encode();
        let text = String::from_utf8(new.clone()).expect("utf-8");
        assert!(text.ends_with(&format!(r#","key":"{key}"}}"#)), "{text}");
        assert_eq!(ServerMsg::decode(&new).expect("new offer"), with);
        let later = text.replace(r#""key""#, r#""kex":"x","key""#);
        assert_eq!(
            ServerMsg::decode(later.as_bytes()).expect("unknown field"),
            with
        );
        // What an older client sees of it: the same message with the key dropped.
        #[derive(Deserialize, PartialEq, Debug)]
        struct OldOffer {
            from: String,
            id: u64,
            name: String,
            size: u64,
            hash: String,
        }
        let seen: OldOffer = serde_json::from_slice(&new).expect("an older client's decode");
        assert_eq!(seen.hash, hash);
        assert_eq!((seen.from.as_str(), seen.id, seen.size), ("alice", 7, 1));
        assert_eq!(seen.name, "a");
    }

    /// The moderation examples of docs/PROTOCOL.md ("Moderation") decode, and encode back
    /// to the same bytes.
    #[test]
    fn documented_moderation_examples_are_exact() {
        let lines = section_lines("Moderation");
        assert!(lines.len() >= 20, "found {} example lines", lines.len());
        let kinds = round_trip(&lines);
        for k in [
            "C op",
            "C mode",
            "C kick",
            "C ban",
            "C join",
            "C sessions",
            "C kill",
            "S mod",
            "S modes",
            "S kicked",
            "S sessions",
            "S error",
        ] {
            assert!(kinds.contains(k), "no example of {k}: {kinds:?}");
        }
    }

    /// The read marker and search examples of docs/PROTOCOL.md ("Read markers and search")
    /// decode, and encode back to the same bytes.
    #[test]
    fn documented_reading_examples_are_exact() {
        let lines = section_lines("Read markers and search");
        let kinds = round_trip(&lines);
        for k in [
            "C read",
            "C search",
            "S marker",
            "S markers",
            "S search_results",
            "S error",
        ] {
            assert!(kinds.contains(k), "no example of {k}: {kinds:?}");
        }
        // What the examples say, field by field.
        assert_eq!(
            ClientMsg::decode(&lines[3].as_bytes()[3..]).expect("search"),
            ClientMsg::Search {
                id: Some(3),
                room: Some("#rust".into()),
                with: None,
                q: "borrow checker".into(),
                before: None,
                limit: 2,
            }
        );
        let ServerMsg::SearchResults { hits, more, .. } =
            ServerMsg::decode(&lines[4].as_bytes()[3..]).expect("results")
        else {
            panic!("not search_results: {}", lines[4]);
        };
        assert!(more);
        assert_eq!(hits.iter().map(|m| m.id).collect::<Vec<_>>(), vec![40, 31]);
        assert!(hits.iter().all(|m| m.history));
    }

    #[test]
    fn every_documented_example_decodes() {
        let lines = doc_example_lines();
        assert!(lines.len() >= 15, "found {} example lines", lines.len());
        for (who, json) in lines {
            let ok = match who {
                'C' => ClientMsg::decode(json.as_bytes()).is_ok(),
                _ => ServerMsg::decode(json.as_bytes()).is_ok(),
            };
            assert!(ok, "{who}: {json} does not decode");
        }
        // The `echo: false` example says what it means.
        let hello = br##"{"t":"hello","v":1,"nick":"alice","client":42,"rooms":[{"room":"#rust","after":18}],"echo":false}"##;
        assert!(
            doc_example_lines()
                .iter()
                .any(|&(_, j)| j.as_bytes() == hello.as_slice())
        );
        assert!(matches!(
            ClientMsg::decode(hello).expect("hello"),
            ClientMsg::Hello { echo: false, .. }
        ));
    }

    /// The examples of docs/PROTOCOL.md ("Edits, deletions, reactions, typing") decode, and
    /// encode back to the same bytes; every new message has one.
    #[test]
    fn documented_amend_examples_are_exact() {
        let lines = section_lines("Edits, deletions, reactions, typing");
        let kinds = round_trip(&lines);
        for k in [
            "C edit",
            "C delete",
            "C react",
            "C unreact",
            "C typing",
            "S edited",
            "S deleted",
            "S reaction",
            "S typing",
            "S msg",
            "S error",
        ] {
            assert!(kinds.contains(k), "no example of {k}: {kinds:?}");
        }
        // A copy of a message carries its state.
        let m = r##"{"t":"msg","conv":"#r","id":1,"ts":2,"from":"x","text":"","deleted":true,"edited":true,"reactions":[{"emoji":"👍","count":2}]}"##.as_bytes();
        let Ok(ServerMsg::Msg(m)) = ServerMsg::decode(m) else {
            panic!("not a msg");
        };
        assert!(m.deleted && m.edited);
        assert_eq!(
            m.reactions,
            vec![Reactions {
                emoji: "👍".into(),
                count: 2
            }]
        );
    }

    #[test]
    fn documented_examples_decode() {
        // The examples in docs/PROTOCOL.md, "Chat protocol".
        let hello = br##"{"t":"hello","v":1,"nick":"alice","client":42,"rooms":[{"room":"#rust","after":17}],"dms":[]}"##;
        assert_eq!(
            ClientMsg::decode(hello).expect("hello"),
            ClientMsg::Hello {
                v: 1,
                nick: "alice".into(),
                client: 42,
                rooms: vec![JoinReq {
                    room: "#rust".into(),
                    after: Some(17),
                    key: None,
                }],
                dms: vec![],
                echo: true,
            }
        );
        let say = br##"{"t":"say","c":3,"room":"#rust","text":"hi"}"##;
        assert_eq!(
            ClientMsg::decode(say).expect("say"),
            ClientMsg::Say {
                c: 3,
                room: Some("#rust".into()),
                to: None,
                text: "hi".into(),
                action: false
            }
        );
        let msg = br##"{"t":"msg","conv":"#rust","room":"#rust","id":18,"ts":1764650000000,"from":"alice","text":"hi","c":3}"##;
        let ServerMsg::Msg(m) = ServerMsg::decode(msg).expect("msg") else {
            panic!("not a msg");
        };
        assert_eq!(
            (m.id, m.history, m.action, m.c),
            (18, false, false, Some(3))
        );
        let history = br##"{"t":"history","id":7,"room":"#rust","before":18,"limit":1}"##;
        assert_eq!(
            ClientMsg::decode(history).expect("history"),
            ClientMsg::History {
                id: Some(7),
                room: Some("#rust".into()),
                with: None,
                before: Some(18),
                limit: 1
            }
        );
        let old = br##"{"t":"msg","conv":"#rust","room":"#rust","id":17,"ts":1764649990000,"from":"bob","text":"hello","history":true}"##;
        assert!(matches!(
            ServerMsg::decode(old).expect("msg"),
            ServerMsg::Msg(Msg {
                id: 17,
                history: true,
                c: None,
                ..
            })
        ));
        let end = br##"{"t":"history_end","id":7,"conv":"#rust","count":1}"##;
        assert_eq!(
            ServerMsg::decode(end).expect("history_end"),
            ServerMsg::HistoryEnd {
                id: Some(7),
                conv: "#rust".into(),
                count: 1
            }
        );
        let ack = br##"{"t":"ack","c":3,"conv":"#rust","id":18,"ts":1764650000000}"##;
        assert!(matches!(
            ServerMsg::decode(ack).expect("ack"),
            ServerMsg::Ack { c: 3, id: 18, .. }
        ));
        let welcome =
            br##"{"t":"welcome","v":1,"nick":"alice","burst":10,"per_sec":5,"max_text":8192}"##;
        assert!(matches!(
            ServerMsg::decode(welcome).expect("welcome"),
            ServerMsg::Welcome {
                burst: 10,
                per_sec: 5,
                ..
            }
        ));
        let limits = br##"{"t":"limits","burst":3,"per_sec":1,"max_text":4096}"##;
        assert_eq!(
            ServerMsg::decode(limits).expect("limits"),
            ServerMsg::Limits {
                burst: 3,
                per_sec: 1,
                max_text: 4096
            }
        );
        let joined =
            br##"{"t":"joined","room":"#rust","topic":"","members":["alice","bob"],"more":0}"##;
        assert!(matches!(
            ServerMsg::decode(joined).expect("joined"),
            ServerMsg::Joined { ref members, .. } if members.len() == 2
        ));
        assert_eq!(
            ClientMsg::List.encode(),
            br#"{"t":"list"}"#.to_vec(),
            "unit variants are bare tags"
        );
    }

    #[test]
    fn round_trips_and_garbage_is_an_error() {
        let m = ServerMsg::Presence {
            room: "#a".into(),
            events: vec![
                Presence::Join { nick: "x".into() },
                Presence::Quit {
                    nick: "y".into(),
                    reason: "timed out".into(),
                },
            ],
        };
        assert_eq!(ServerMsg::decode(&m.encode()).expect("decode"), m);
        for junk in [
            &b""[..],
            b"{",
            b"null",
            b"{\"t\":\"nope\"}",
            b"{\"t\":\"say\"}",
            b"\xff\xfe",
        ] {
            assert!(ClientMsg::decode(junk).is_err(), "{junk:?}");
        }
    }

    /// The general decoder: serde's internally tagged path for every variant.
    fn decode_general(bytes: &[u8]) -> Option<ServerMsg> {
        serde_json::from_slice(bytes).ok()
    }

    /// `msg` objects that begin with their tag take the direct path; it must accept and
    /// reject exactly what the general path does, with the same result.
    #[test]
    fn the_direct_msg_path_agrees_with_the_general_one() {
        let cases: &[&str] = &[
            r##"{"t":"msg","conv":"#a","room":"#a","id":1,"ts":2,"from":"x","text":"hi"}"##,
            r##"{"t":"msg","conv":"@a","room":null,"id":1,"ts":2,"from":"x","to":"y","text":"hi","action":true,"c":9}"##,
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","text":"hi","history":true}"##,
            // Escapes in keys and values; an unknown key (ignored by both).
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","te\u0078t":"\"q\"\n","new":[1,{"a":2}]}"##,
            // A second tag, the same or another.
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","text":"hi","t":"msg"}"##,
            r##"{"t":"msg","t":"ack","conv":"#a","id":1,"ts":2,"from":"x","text":"hi"}"##,
            // Missing, duplicated and mistyped fields.
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x"}"##,
            r##"{"t":"msg","conv":"#a","id":1,"id":1,"ts":2,"from":"x","text":"hi"}"##,
            r##"{"t":"msg","conv":"#a","id":-1,"ts":2,"from":"x","text":"hi"}"##,
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","text":7}"##,
            // Not an object to the end; trailing bytes.
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","text":"hi""##,
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","text":"hi"} x"##,
            r##"{"t":"msg","conv":"#a","id":1,"ts":2,"from":"x","text":"hi"}  "##,
            r##"{"t":"msg",}"##,
            r##"{"t":"msg","##,
        ];
        for json in cases {
            assert!(json.as_bytes().starts_with(MSG_PREFIX), "{json}");
            assert_eq!(
                ServerMsg::decode(json.as_bytes()).ok(),
                decode_general(json.as_bytes()),
                "{json}"
            );
        }
    }

    proptest::proptest! {
        /// Every `msg` the server encodes decodes to itself, on both paths.
        #[test]
        fn encoded_messages_decode_to_themselves(
            conv in ".{0,12}",
            room in proptest::option::of(".{0,12}"),
            id: u64,
            ts: i64,
            from in ".{0,12}",
            to in proptest::option::of(".{0,12}"),
            text in ".{0,40}",
            action: bool,
            history: bool,
            c in proptest::option::of(proptest::num::u64::ANY),
        ) {
            let m = ServerMsg::Msg(Msg { conv, room, id, ts, from, to, text, action, history, c, ..Msg::default() });
            let bytes = m.encode();
            proptest::prop_assert!(bytes.starts_with(MSG_PREFIX));
            proptest::prop_assert_eq!(ServerMsg::decode(&bytes).ok(), Some(m.clone()));
            proptest::prop_assert_eq!(decode_general(&bytes), Some(m));
        }

        /// Arbitrary bodies after the tag: both paths agree.
        #[test]
        fn both_paths_agree_on_any_body(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                r##""conv":"#a""##, r##""room":"#a""##, r##""room":null"##, r##""id":1"##,
                r##""ts":-2"##, r##""from":"x""##, r##""to":"y""##, r##""text":"hi""##,
                r##""action":true"##, r##""history":false"##, r##""c":3"##, r##""t":"msg""##,
                r##""t":"ack""##, r##""x":{"t":"msg"}"##, r##""id":"1""##, ",", ":", "}", "\"", "\\", "1",
            ]), 0..12),
        ) {
            let json = format!(r##"{{"t":"msg",{}}}"##, parts.join(","));
            proptest::prop_assert_eq!(
                ServerMsg::decode(json.as_bytes()).ok(),
                decode_general(json.as_bytes()),
                "{}", json
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = ClientMsg::decode(&bytes);
            let _ = ServerMsg::decode(&bytes);
        }
    }
}
