//! The peer session: one `chirp peer`'s whole protocol-level behaviour, sans IO.
//!
//! Both sides connect to each other at start and whenever the link is lost; the core resolves
//! simultaneous opens, so exactly one connection results whichever side starts first.
//!
//! # A second connection with the peer's key
//!
//! A connection that comes up with the peer's key while the chat's connection is up does not
//! take its place at once: it may be the peer that restarted, but it may as well be
//! `chirp ping --as-me` run by the peer's user (it presents the same key), which acknowledges
//! whatever is sent to it and shows none of it. The chat's connection stays the one lines are
//! sent on, and the new one is set aside (a *candidate*) until either
//!
//! - it carries what only a chat sends: a message, or the end of the peer's message stream
//!   (a ping sends neither); or
//! - the chat's connection ends ([`Event::Closed`]: the transport closes it when the peer
//!   closes it, when the peer's endpoint answers it with a stateless RESET, which a restarted
//!   peer does to the first packet we send on it, or after the idle timeout without a packet,
//!   which keepalives prevent on a live path) and the candidate comes from the same address
//!   as the connection that ended, or from the address the user gave: the peer at that
//!   address started over. A candidate from another port (ping's) is never adopted that way:
//!   it must carry a message.
//!
//! Healthy, for the connection lines go to, means up and not closed: the transport is the
//! judge of liveness. A restarted peer is adopted promptly either way: its first line is
//! proof, and our first packet on the old connection (a line, or a keepalive within 15 s)
//! draws the RESET that ends it.
//!
//! # A connection while no chat is up
//!
//! While no connection is up (our own attempt is still handshaking, or finds nobody), a
//! connection with the peer's key is adopted at once if it is our own attempt, or comes from
//! the address the user gave or from the address of the chat's last connection: only the peer
//! is there. One from anywhere else is a peer behind a NAT that changes ports (it reaches us
//! only that way) or `chirp ping --as-me` run by the peer's user, which presents the same key
//! but is no chat: it is set aside as a candidate until it carries a message or the peer's FIN,
//! as above, or a [`HELLO`]. Every session sends a [`HELLO`] first on each connection it
//! adopts, so a peer behind such a NAT is up at once, and a ping (which sends no message) never
//! becomes the chat's connection: it is answered by the transport, and nothing of the chat
//! goes to it. A [`HELLO`] on a candidate set aside while the chat has a healthy connection
//! does not take over (a second `chirp peer` with the same key is no reason to leave the
//! first); it makes the candidate the chat's successor from whatever address it came, should
//! the chat's connection end.
//!
//! When the chat moves to another connection, the lines the old one never got acknowledged are
//! sent again on the new one, ahead of anything typed since.
//!
//! Delivery is known per message: the core counts, per connection, the messages the peer has
//! acknowledged ([`Event::Acked`], in send order), so the session keeps the ids of the messages
//! in flight on each connection in that order, and pops one per acknowledgement. A message
//! handed back by a dying connection keeps its id on the next one.
//!
//! End of input is a half-close ([`Input::EndOfInput`]): our lines are the last, the core sends
//! them and then a FIN, and we go on receiving until the peer has finished too; the connection
//! then closes by itself with everything delivered both ways (`chirp_proto::Endpoint::finish`).
//! A side whose peer finished, and which has nothing queued nor unacknowledged, finishes too
//! after [`FINISH_WHEN_IDLE`]: a chat partner who left gets no later lines, but a script still
//! feeding lines keeps its half open until its own end of input. `/quit` ([`Input::Leave`])
//! is a graceful close instead: our lines are delivered, the peer's later ones are not.
//!
//! # Files
//!
//! With [`Session::enable_files`], the session also drives a [`chirp_files::Transfers`]
//! (`/send`, `/accept`, `/decline`; PROTOCOL.md §12). Its messages start with `0xff` and are
//! told apart from chat lines by that byte. Chat lines always go first. Chunks and hash lists
//! go to the transport as [`Transport::SendBulk`], for its bulk channel (PROTOCOL.md §4.7),
//! which never delays a chat message; the control messages (offer, accept, decline, want,
//! done, cancel) as [`Transport::Send`], on the chat's message stream, so a peer learns that
//! the other side supports the bulk channel before it receives bulk data: the sender sends
//! chunks only once the receiver accepted there. Bulk data is bounded by the transport's bulk
//! send buffer (`chirp_proto::TransportConfig::bulk_send_buffer`): once it refuses a message
//! the file layer waits for [`Event::BulkWritable`], while chat and control messages go on.
//! A file message that arrives on either channel ([`Event::BulkMessage`] or
//! [`Event::Message`]) goes to the file layer alike. With [`Session::hash_files_outside`],
//! [`Session::check_files_outside`] and [`Session::finish_files_outside`], the three file
//! operations that may take seconds, hashing a file to offer, checking the partial file a
//! resumed transfer left, and making a received one durable (fsync) and renaming it, are asked
//! of the driver ([`Output::HashFile`], [`Output::CheckFile`], [`Output::FinishFile`]) and
//! their results come back as inputs ([`Input::FileHashed`], [`Input::FileChecked`],
//! [`Input::FileFinished`]): chat goes on meanwhile; WANT waits for the check, and DONE for
//! the received file to be saved. `/quit` while a received file is being saved waits for the
//! save (at most [`LEAVE_SAVE_WAIT`]), so that DONE goes out before the close; Ctrl-C does
//! not wait, and says which files the sender will not hear of. File messages are never re-sent on
//! another connection: when the chat moves to a new one, the file layer starts over there
//! (the sender offers again, the receiver resumes from what it holds verified). End of input
//! waits until no transfer is under way; `/quit` does not.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chirp_files::{Check, FileEvent, Finish, FinishError, Prepared, Storage, Transfers, Transmit};
use chirp_keys::{Fingerprint, PublicKey};
use chirp_proto::{
    CloseReason, ConnectError, ConnectionHandle, ConnectionStats, Event, SendError, WriteError,
    close_code,
};
use tracing::{debug, warn};

use crate::trust::{KeyPolicy, PeerVerdict, unconfirmed_refusal};

/// Longest wait after leaving for the closing connection to drain (normally 3 PTO, well under
/// a second on a healthy path).
pub const LINGER: Duration = Duration::from_secs(2);

/// How long an interrupt (Ctrl-C) waits for the transport to send the CLOSE.
pub const INTERRUPT_LINGER: Duration = Duration::from_millis(50);

/// How long to wait before trying again when a connection cannot even be started.
pub const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// How long to wait before trying again after the peer refused our key.
pub const KEY_REFUSED_RETRY: Duration = Duration::from_secs(10);

/// The message a session sends first on each connection it adopts as the chat's (PROTOCOL.md
/// §4.5): the bytes `ff 00`, which tell the other side that this connection is a chirp peer's
/// chat and not `chirp ping` (which presents the same key but sends no message). It starts
/// with the file layer's tag, so a peer that does not know it drops it as a file message of an
/// unknown type (§12.2) rather than show it.
pub const HELLO: &[u8] = &[chirp_files::TAG, 0x00];

/// A refusal of a connection from another port is shown once per this long: a stranger (or a
/// peer that keeps retrying) must not flood the screen.
pub const REFUSAL_REPEAT: Duration = Duration::from_secs(60);

/// The last refusal shown, so that the same one is not shown again within [`REFUSAL_REPEAT`]
/// (shared by the chat's [`Session`] and the waiting [`crate::listen::Listener`]).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    last: Option<(String, Instant)>,
}

impl Refusals {
    /// Whether `text` is to be shown now (and is then remembered as the last one shown).
    pub(crate) fn fresh(&mut self, now: Instant, text: &str) -> bool {
        let repeat = self.last.as_ref().is_some_and(|(last, at)| {
            last == text && now.saturating_duration_since(*at) < REFUSAL_REPEAT
        });
        if !repeat {
            self.last = Some((text.to_owned(), now));
        }
        !repeat
    }
}

/// After the peer finished, how long a side with nothing queued and everything acknowledged
/// waits for another line of its own before it finishes too.
pub const FINISH_WHEN_IDLE: Duration = Duration::from_secs(1);

/// After `/quit`, how long the session waits for received files being saved (their fsync) to
/// be saved, so that their DONE reaches the sender before the chat closes.
pub const LEAVE_SAVE_WAIT: Duration = Duration::from_secs(10);

/// The file layer's storage, as the session holds it.
pub type FileStorage = Box<dyn Storage + Send>;

/// What a session is for.
#[derive(Debug, Clone)]
pub struct Config {
    /// The peer's address, as the user gave it.
    pub to: SocketAddr,
    /// The transport's idle timeout (for messages that mention it).
    pub idle_timeout: Duration,
    /// Someone can answer a question about a key ([`Report::AskKey`]); otherwise a key that
    /// needs confirming is refused.
    pub can_ask: bool,
}

/// What the user asks of the session.
#[derive(Debug)]
pub enum Input {
    /// A message to send, with the caller's id for it (`None`: nobody tracks it, as in line
    /// mode). Answered with [`Report::Delivered`] once the peer acknowledges it, or
    /// [`Report::Failed`] (an id) / [`Report::Error`] (no id).
    Send {
        /// The message.
        data: Bytes,
        /// The caller's id.
        local_id: Option<u64>,
    },
    /// `/stats`: answered with [`Report::Stats`], or an error while no connection is up.
    Stats,
    /// The link statistics, for a status bar: answered with [`Report::Link`].
    Link,
    /// Leave once everything sent is acknowledged (`/quit`): a graceful close. Received files
    /// being saved are waited for first (at most [`LEAVE_SAVE_WAIT`]), so that their DONE goes
    /// out; a [`Report::Status`] says so.
    Leave,
    /// End of input: a half-close (see the module documentation).
    EndOfInput,
    /// The answer to [`Report::AskKey`]: trust that key or not. A yes with no question open
    /// accepts the oldest file offer waiting, if any (`/accept`).
    KeyAnswer(bool),
    /// `/send PATH`: offer a file ([`Report::File`] follows its progress).
    SendFile(PathBuf),
    /// `/accept ID`: accept a file offer (`None`: the oldest waiting).
    AcceptFile(Option<u64>),
    /// `/decline [ID]`: decline a file offer or stop receiving it (`None`: the oldest
    /// waiting).
    DeclineFile(Option<u64>),
    /// `/cancel [ID]`: stop sending a file, offered or under way (`None`: the only one sent;
    /// several are an error that names them). The receiver deletes its partial file.
    CancelFile(Option<u64>),
    /// The driver carried out [`Output::HashFile`] for `path`: the file to offer, or why it
    /// cannot be (a message for the user).
    FileHashed {
        /// The path of the [`Output::HashFile`].
        path: PathBuf,
        /// What [`chirp_files::prepare`] returned (its error as text).
        result: Result<Box<Prepared>, String>,
    },
    /// The driver carried out [`Output::FinishFile`]: the name the received file was saved
    /// under, or why it could not be.
    FileFinished {
        /// The [`Output::FinishFile`]'s finish.
        finish: Finish,
        /// What [`Finish::run`] returned.
        result: Result<String, FinishError>,
    },
    /// The driver carried out [`Output::CheckFile`]: which chunks the partial file holds
    /// verified, or why it could not be read.
    FileChecked {
        /// The [`Output::CheckFile`]'s check.
        check: Check,
        /// What [`Check::run`] returned.
        result: std::io::Result<Vec<bool>>,
    },
    /// Ctrl-C: close at once and end with status 130 (a [`Report::Status`] names the received
    /// files being saved, whose sender is then not told that they arrived).
    Interrupt,
}

/// A request to the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Open a connection to `to`, or reuse the open one (answer with [`Reply::Connect`]).
    Connect {
        /// Where.
        to: SocketAddr,
    },
    /// Queue a message (answer with [`Reply::Send`]).
    Send {
        /// On which connection.
        conn: ConnectionHandle,
        /// The message.
        data: Bytes,
    },
    /// Queue a message on the bulk channel (file chunks and hash lists:
    /// `chirp_proto::Endpoint::send_bulk`; answer with [`Reply::Send`], `Blocked` meaning
    /// wait for [`Event::BulkWritable`]), so that chat is never held back behind it.
    SendBulk {
        /// On which connection.
        conn: ConnectionHandle,
        /// The message.
        data: Bytes,
    },
    /// Half-close (answer with [`Reply::Finish`]).
    Finish {
        /// Which connection.
        conn: ConnectionHandle,
    },
    /// Close gracefully (`chirp_proto::Endpoint::close`).
    Close {
        /// Which connection.
        conn: ConnectionHandle,
        /// CLOSE code.
        code: u64,
        /// CLOSE reason.
        reason: String,
    },
    /// Close at once (`chirp_proto::Endpoint::abort`).
    Abort {
        /// Which connection.
        conn: ConnectionHandle,
        /// CLOSE code.
        code: u64,
        /// CLOSE reason.
        reason: String,
    },
    /// The verdict on the key an [`Event::VerifyKey`] asked about.
    VerifyKey {
        /// Which connection.
        conn: ConnectionHandle,
        /// Accept (true) or refuse.
        accept: bool,
    },
    /// Accept new incoming connections or not.
    SetAcceptIncoming(bool),
    /// The statistics of a connection (answer with [`Reply::Stats`]).
    Stats {
        /// Which connection.
        conn: ConnectionHandle,
    },
}

/// The transport's answer to a [`Transport`] request that asks for one. The driver hands it
/// back right after carrying out the request, before any other input.
#[derive(Debug)]
pub enum Reply {
    /// To [`Transport::Connect`].
    Connect(Result<ConnectionHandle, ConnectError>),
    /// To [`Transport::Send`].
    Send(Result<(), SendError>),
    /// To [`Transport::Finish`].
    Finish(Result<(), SendError>),
    /// To [`Transport::Stats`].
    Stats(Option<Box<ConnectionStats>>),
}

/// What the session tells the user. (No `Debug` of contents: a message is user plaintext.)
pub enum Report {
    /// Informational status (a key remembered on first contact).
    Status(String),
    /// The peer is reachable, with this key.
    Up {
        /// Its address.
        peer: String,
        /// Its key's fingerprint.
        fingerprint: String,
    },
    /// The peer went away (the session is already trying to reach it again).
    Down {
        /// Its address.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A message from the peer.
    Message {
        /// Its address, or "previous session" for a message of a replaced connection.
        from: String,
        /// The message.
        data: Bytes,
    },
    /// An error the user should see (the chat may continue).
    Error(String),
    /// The answer to [`Input::Stats`].
    Stats {
        /// The peer's address.
        peer: String,
        /// The statistics.
        stats: Box<ConnectionStats>,
    },
    /// The peer acknowledged the message with this id.
    Delivered(u64),
    /// The message with this id cannot be delivered.
    Failed {
        /// The id.
        local_id: u64,
        /// Why.
        reason: String,
    },
    /// Answer to [`Input::Link`]: `None` while no connection is up.
    Link(Option<Box<ConnectionStats>>),
    /// A key seen for the first time, from another port of the peer's IP: should it be
    /// trusted? Answered with [`Input::KeyAnswer`].
    AskKey {
        /// The address it came from.
        from: String,
        /// Its fingerprint.
        fingerprint: String,
    },
    /// `chirp peer --via`: the connection now goes this way (reported by the `--via` loop,
    /// not by the session: at the introduction, on the move to the relay, and when the
    /// connection moves to a direct path).
    Path {
        /// The peer's address on that path (the relayed path's synthetic one when relayed).
        peer: String,
        /// Through the server's relay, rather than straight to the peer.
        relayed: bool,
    },
    /// A file transfer's news (an offer, progress, the end). Names in it come from the peer:
    /// hostile text.
    File(FileEvent),
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::Message { from, data } => f
                .debug_struct("Message")
                .field("from", from)
                .field("len", &data.len())
                .finish(),
            Report::Status(t) => f.debug_tuple("Status").field(t).finish(),
            Report::Up { peer, .. } => f.debug_struct("Up").field("peer", peer).finish(),
            Report::Down { peer, reason } => f
                .debug_struct("Down")
                .field("peer", peer)
                .field("reason", reason)
                .finish(),
            Report::Error(t) => f.debug_tuple("Error").field(t).finish(),
            Report::Stats { .. } => f.write_str("Stats"),
            Report::Delivered(id) => f.debug_tuple("Delivered").field(id).finish(),
            Report::Failed { local_id, reason } => f
                .debug_struct("Failed")
                .field("local_id", local_id)
                .field("reason", reason)
                .finish(),
            Report::Link(s) => f.debug_tuple("Link").field(&s.is_some()).finish(),
            Report::AskKey { from, .. } => f.debug_struct("AskKey").field("from", from).finish(),
            Report::Path { peer, relayed } => f
                .debug_struct("Path")
                .field("peer", peer)
                .field("relayed", relayed)
                .finish(),
            Report::File(e) => f.debug_tuple("File").field(e).finish(),
        }
    }
}

/// What comes out of the session.
#[derive(Debug)]
pub enum Output {
    /// Carry this out (and hand back the [`Reply`] if it asks for one).
    Transport(Transport),
    /// Tell the user.
    Report(Report),
    /// The chat is over: let the transport drain for at most `linger` (so that our CLOSE, and
    /// the answers to the peer's retransmissions, go out), then exit with `code`.
    Exit {
        /// The process exit status.
        code: u8,
        /// How long to let what is closing drain.
        linger: Duration,
    },
    /// The session cannot go on (the transport refused to start a handshake at all).
    Fatal(String),
    /// Hash the file at `path` for an offer ([`chirp_files::prepare`] with `chunk_size`),
    /// away from the task that drives the connection, and hand the result back as
    /// [`Input::FileHashed`]. Only with [`Session::hash_files_outside`]; chat goes on
    /// meanwhile.
    HashFile {
        /// The path the user gave.
        path: PathBuf,
        /// The preferred chunk size.
        chunk_size: u32,
    },
    /// Save a received file ([`Finish::run`] on a storage over the download directory: an
    /// fsync, which may take seconds, and a rename), away from the task that drives the
    /// connection, and hand the result back as [`Input::FileFinished`]. Only with
    /// [`Session::finish_files_outside`]; chat goes on meanwhile, and the transfer is done
    /// (DONE, [`FileEvent::Done`]) only once the result says the file was saved.
    FinishFile(Finish),
    /// Check the partial file a resumed transfer left ([`Check::run`] on a storage over the
    /// download directory: it reads and hashes the whole file, about a second for 1 GB), away
    /// from the task that drives the connection, and hand the result back as
    /// [`Input::FileChecked`]. Only with [`Session::check_files_outside`]; chat goes on
    /// meanwhile, and the transfer asks the sender for the chunks it lacks only after it.
    CheckFile(Check),
}

/// The question of [`Report::AskKey`], for line mode and the UI alike.
pub fn ask_text(from: &str, fingerprint: &str) -> String {
    format!(
        "{from} presents key {fingerprint}, never seen before, from another port than the one \
         given: the peer behind a NAT that changes ports, or a stranger on the same host or NAT?"
    )
}

/// A message waiting for the transport, with the caller's id for it.
struct Outgoing {
    data: Bytes,
    local_id: Option<u64>,
}

/// Whether `/quit` waits for received files being saved ([`LEAVE_SAVE_WAIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveWait {
    /// Not asked to leave with a save in progress.
    No,
    /// The close waits until the saves are done, or until then.
    Until(Instant),
    /// The wait is over: the close goes ahead.
    Over,
}

/// A message the transport took and the peer has not acknowledged yet.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// A chat line, with the caller's id.
    Line(Option<u64>),
    /// A file-layer control message, or the [`HELLO`] (bulk messages are not counted: `Acked`
    /// counts the message stream only).
    Control,
}

/// The file layer and what the session keeps for it.
struct Files {
    transfers: Transfers<FileStorage>,
    /// Keys whose offers are accepted without asking.
    trusted: Vec<Fingerprint>,
    /// A control message taken from the file layer that the transport has not taken yet (the
    /// request is under way, or the message stream was blocked): it goes first once the
    /// connection is writable.
    held: Option<Transmit>,
    /// The same for a bulk message (the bulk channel was blocked): it goes first once the
    /// bulk channel is writable.
    held_bulk: Option<Transmit>,
    /// `/send` hashes the file outside ([`Output::HashFile`]) instead of inline.
    hash_outside: bool,
    /// Files being hashed outside: an end of input waits for their offers.
    hashing: usize,
}

impl Files {
    /// Whether a transfer is under way or a file is being hashed for one.
    fn busy(&self) -> bool {
        self.hashing > 0 || self.transfers.busy()
    }
}

/// A connection up with the peer's key, set aside while the chat has another, or while it has
/// none and this one came from an address other than the peer's (see the module
/// documentation).
#[derive(Debug, Clone, Copy)]
struct Candidate {
    conn: ConnectionHandle,
    remote: SocketAddr,
    key: PublicKey,
    /// It sent a [`HELLO`]: a chirp peer's chat, not a ping.
    hello: bool,
}

/// The request whose [`Reply`] the session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Connect,
    Send(ConnectionHandle),
    /// The [`HELLO`] on this connection.
    Hello(ConnectionHandle),
    /// A file-layer message (the session's `files.held`, or `files.held_bulk` if `bulk`,
    /// until the reply).
    SendFile {
        conn: ConnectionHandle,
        bulk: bool,
    },
    Finish,
    /// Statistics for [`Input::Stats`] (true) or [`Input::Link`] (false).
    Stats(bool),
}

/// The peer session (see the module documentation).
pub struct Session<P> {
    config: Config,
    policy: P,
    out: VecDeque<Output>,
    awaiting: Option<Awaiting>,
    /// Inputs that came while a reply was awaited: handled once it has come.
    deferred: VecDeque<Input>,
    /// The connection lines go to (handshaking or up).
    conn: Option<ConnectionHandle>,
    remote: Option<SocketAddr>,
    up: bool,
    /// A connection being replaced: sending waits until its `Closed` event has handed back the
    /// lines it never got acknowledged, so that they go out before anything newer.
    replacing: Option<ConnectionHandle>,
    /// Connections that came up with the peer's key while `conn` was up, or from an address
    /// not the peer's while it was not, in order of arrival: never sent on until one proves
    /// to be the peer's chat (see the module documentation).
    candidates: Vec<Candidate>,
    /// The chat's connection, while our [`HELLO`] still has to be sent on it.
    hello_owed: Option<ConnectionHandle>,
    /// Lines not yet accepted by the transport (send buffer full, or between connections).
    pending: VecDeque<Outgoing>,
    /// Per connection, the ids of the messages the transport took and the peer has not yet
    /// acknowledged, in send order.
    inflight: HashMap<ConnectionHandle, VecDeque<Sent>>,
    /// File transfer, once enabled ([`Session::enable_files`]).
    files: Option<Files>,
    /// The user asked to leave (end of input or `/quit`).
    leaving: bool,
    /// Leaving at end of input: a half-close (finish), not a close.
    half_close: bool,
    /// Leaving with nothing left for a successor to take over: new connections are refused
    /// (see [`Self::refuse_successors_when_done`]).
    refusing: bool,
    /// The connection a close or finish has been requested on.
    closing: Option<ConnectionHandle>,
    /// The connection whose peer has finished its stream.
    peer_finished: Option<ConnectionHandle>,
    /// When to finish our half too after the peer finished, if still idle then.
    finish_at: Option<Instant>,
    /// When to try `connect` again after it failed outright.
    retry_at: Option<Instant>,
    /// The handshake paused on a key only the user can judge, with its address and key.
    asking: Option<(ConnectionHandle, SocketAddr, PublicKey)>,
    /// The last non-fatal refusal shown, and when.
    refusals: Refusals,
    /// The connection whose send buffer refused the last message: sending waits for its
    /// `Writable` (or its end).
    blocked: Option<ConnectionHandle>,
    /// The connection whose bulk send buffer refused the last bulk message: bulk sending
    /// waits for its `BulkWritable` (or its end).
    bulk_blocked: Option<ConnectionHandle>,
    /// After `/quit` with received files being saved: the close waits for them, a bounded
    /// time.
    save_wait: SaveWait,
    /// The exit has been decided: inputs are ignored from then on.
    ended: bool,
}

impl<P> std::fmt::Debug for Session<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("to", &self.config.to)
            .field("conn", &self.conn)
            .field("up", &self.up)
            .field("candidates", &self.candidates.len())
            .field("pending", &self.pending.len())
            .field("leaving", &self.leaving)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<P: KeyPolicy> Session<P> {
    /// A session that starts by connecting to `config.to` (poll its output).
    pub fn new(config: Config, policy: P) -> Self {
        let mut s = Self {
            config,
            policy,
            out: VecDeque::new(),
            awaiting: None,
            deferred: VecDeque::new(),
            conn: None,
            remote: None,
            up: false,
            replacing: None,
            candidates: Vec::new(),
            hello_owed: None,
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            files: None,
            leaving: false,
            half_close: false,
            refusing: false,
            closing: None,
            peer_finished: None,
            finish_at: None,
            retry_at: None,
            asking: None,
            refusals: Refusals::default(),
            blocked: None,
            bulk_blocked: None,
            save_wait: SaveWait::No,
            ended: false,
        };
        s.ask(Awaiting::Connect, Transport::Connect { to: s.config.to });
        s
    }

    /// Dials `to` from now on (`chirp peer --via` moving to a relayed path): an attempt in
    /// progress that is not up is abandoned (its queued lines stay queued). A connection that
    /// is up stays.
    pub fn redirect(&mut self, now: Instant, to: SocketAddr) {
        self.config.to = to;
        if self.up || self.ended {
            return;
        }
        if let Some(conn) = self.conn.take() {
            self.transport(Transport::Abort {
                conn,
                code: close_code::NO_ERROR,
                reason: "redirected".into(),
            });
        }
        self.connect(now);
    }

    /// Enables file transfer: files are read and saved through `storage`, and offers from a
    /// key in `trusted` are accepted without asking. Without it, offers are declined.
    pub fn enable_files(&mut self, storage: FileStorage, trusted: Vec<Fingerprint>) {
        let config = chirp_files::Config::default();
        self.files = Some(Files {
            transfers: Transfers::new(config, storage),
            trusted,
            held: None,
            held_bulk: None,
            hash_outside: false,
            hashing: 0,
        });
    }

    /// From now on `/send` does not read the file itself: it asks the driver to hash it
    /// ([`Output::HashFile`]), so that a large file does not stall the task that drives the
    /// connection. Needs [`Self::enable_files`] first.
    pub fn hash_files_outside(&mut self) {
        if let Some(f) = self.files.as_mut() {
            f.hash_outside = true;
        }
    }

    /// From now on a received file is not saved inline: the session asks the driver to do it
    /// ([`Output::FinishFile`]), so that its fsync does not stall the task that drives the
    /// connection. Needs [`Self::enable_files`] first.
    pub fn finish_files_outside(&mut self) {
        if let Some(f) = self.files.as_mut() {
            f.transfers.finish_outside();
        }
    }

    /// From now on the partial file a resumed transfer left is not checked inline: the session
    /// asks the driver to do it ([`Output::CheckFile`]), so that reading and hashing it does
    /// not stall the task that drives the connection. Needs [`Self::enable_files`] first.
    pub fn check_files_outside(&mut self) {
        if let Some(f) = self.files.as_mut() {
            f.transfers.check_outside();
        }
    }

    /// Messages waiting for the transport: a line-mode driver stops reading input while there
    /// are too many, so that whatever feeds it is held back.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The next thing to do. Call it after every input until it returns `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(f) = self.files.as_mut() {
            while let Some(e) = f.transfers.poll_event() {
                self.out.push_back(Output::Report(Report::File(e)));
            }
            while let Some(job) = f.transfers.poll_finish() {
                self.out.push_back(Output::FinishFile(job));
            }
            while let Some(check) = f.transfers.poll_check() {
                self.out.push_back(Output::CheckFile(check));
            }
        }
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let save_wait = match self.save_wait {
            SaveWait::Until(t) => Some(t),
            SaveWait::No | SaveWait::Over => None,
        };
        [self.retry_at, self.finish_at, save_wait]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires due timers: reconnecting, finishing after the peer finished.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        if self.retry_at.is_some_and(|t| now >= t) {
            self.retry_at = None;
            self.connect(now);
        }
        if self.finish_at.is_some_and(|t| now >= t) {
            self.finish_at = None;
            self.finish_if_idle(now, true);
        }
        if matches!(self.save_wait, SaveWait::Until(t) if now >= t) {
            self.save_wait = SaveWait::Over;
            let saving = self.saving();
            if !saving.is_empty() {
                self.report(Report::Status(format!(
                    "leaving while {saving} is still being saved: it will be saved, but the \
                     sender is not told that it arrived"
                )));
            }
            self.flush(now);
        }
    }

    /// The transport's answer to the request the session is waiting on.
    pub fn handle_reply(&mut self, now: Instant, reply: Reply) {
        let Some(awaiting) = self.awaiting.take() else {
            debug_assert!(false, "a reply nobody asked for: {reply:?}");
            return;
        };
        match (awaiting, reply) {
            (Awaiting::Connect, Reply::Connect(r)) => self.on_connected(now, r),
            (Awaiting::Send(conn), Reply::Send(r)) => self.on_sent(now, conn, r),
            (Awaiting::Hello(conn), Reply::Send(r)) => self.on_hello_sent(conn, r),
            (Awaiting::SendFile { conn, bulk }, Reply::Send(r)) => {
                self.on_file_sent(conn, bulk, r);
            }
            (Awaiting::Finish, Reply::Finish(_)) => {}
            (Awaiting::Stats(line), Reply::Stats(stats)) => self.on_stats(line, stats),
            (awaiting, reply) => {
                debug_assert!(false, "reply {reply:?} to {awaiting:?}");
            }
        }
        if !self.ended {
            self.flush(now);
        }
        while self.awaiting.is_none() && !self.ended {
            let Some(input) = self.deferred.pop_front() else {
                break;
            };
            self.handle_input(now, input);
        }
    }

    /// A request from the user.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        if self.ended {
            return;
        }
        if self.awaiting.is_some() {
            self.deferred.push_back(input);
            return;
        }
        match input {
            Input::Send { data, local_id } => {
                // A new line: not idle (see `finish_if_idle`).
                self.finish_at = None;
                if self.leaving {
                    self.fail(local_id, "leaving: that line was not sent".into());
                    return;
                }
                if chirp_files::is_file_msg(&data) {
                    // The peer would take it for file transfer (PROTOCOL.md §4.5).
                    let reason = "not sent: a message may not start with the byte 0xff".into();
                    self.fail(local_id, reason);
                    return;
                }
                self.pending.push_back(Outgoing { data, local_id });
                self.flush(now);
            }
            Input::Stats => match (self.conn, self.up) {
                (Some(conn), true) => self.ask(Awaiting::Stats(true), Transport::Stats { conn }),
                _ => {
                    let text = format!("not connected to {} yet", self.config.to);
                    self.report(Report::Error(text));
                }
            },
            Input::Link => match (self.conn, self.up) {
                (Some(conn), true) => self.ask(Awaiting::Stats(false), Transport::Stats { conn }),
                _ => self.report(Report::Link(None)),
            },
            Input::Leave => {
                self.leaving = true;
                let saving = self.saving();
                if self.save_wait == SaveWait::No && !saving.is_empty() {
                    self.save_wait = SaveWait::Until(now + LEAVE_SAVE_WAIT);
                    self.report(Report::Status(format!(
                        "leaving once {saving} is saved (every byte is in), so that the sender \
                         hears that it arrived: at most {} s",
                        LEAVE_SAVE_WAIT.as_secs()
                    )));
                }
                self.flush(now);
            }
            Input::EndOfInput => {
                // After `/quit` (already leaving), the end of input changes nothing.
                if !self.leaving {
                    self.leaving = true;
                    self.half_close = true;
                    self.flush(now);
                }
            }
            Input::KeyAnswer(true) if self.asking.is_none() && self.files.is_some() => {
                self.on_file_input(now, Input::AcceptFile(None));
            }
            Input::KeyAnswer(yes) => self.answer(yes),
            input @ (Input::SendFile(_)
            | Input::AcceptFile(_)
            | Input::DeclineFile(_)
            | Input::CancelFile(_)
            | Input::FileHashed { .. }
            | Input::FileFinished { .. }
            | Input::FileChecked { .. }) => {
                self.on_file_input(now, input);
            }
            Input::Interrupt => {
                let saving = self.saving();
                if !saving.is_empty() {
                    self.report(Report::Status(format!(
                        "interrupted while {saving} was being saved: it will be saved, but the \
                         sender is not told that it arrived"
                    )));
                }
                let conns: Vec<_> = self.conn.into_iter().collect();
                self.end(
                    &conns,
                    close_code::NO_ERROR,
                    "interrupted",
                    130,
                    INTERRUPT_LINGER,
                );
            }
        }
    }

    /// An event of the protocol core.
    pub fn handle_event(&mut self, now: Instant, ev: Event) {
        if self.ended {
            return;
        }
        match ev {
            Event::VerifyKey {
                conn,
                remote,
                remote_key,
                ..
            } => self.on_verify(now, conn, remote, PublicKey(remote_key)),
            Event::Connected {
                conn,
                remote,
                remote_key,
                ..
            } => {
                // Its key passed `on_verify` before the handshake could complete.
                let candidate = Candidate {
                    conn,
                    remote,
                    key: PublicKey(remote_key),
                    hello: false,
                };
                if self.up && self.conn.is_some_and(|c| c != conn) {
                    // The chat has a connection up: the new one waits until it proves to be
                    // the peer's chat (or the chat's connection ends).
                    debug!(?conn, %remote, "another connection with the peer's key: set aside");
                    self.candidates.push(candidate);
                } else if self.conn == Some(conn) || self.peers_address(remote) {
                    // Our own attempt, or the peer's while ours had not come up (it restarted,
                    // or its attempt won the race against ours).
                    self.adopt(now, candidate);
                } else {
                    // A peer behind a port-changing NAT, or `chirp ping --as-me`: it waits
                    // until it proves to be a chat (its HELLO, a message or its FIN).
                    debug!(?conn, %remote, "the peer's key from another address: set aside");
                    self.candidates.push(candidate);
                }
            }
            Event::Message { conn, data } if data[..] == *HELLO => self.on_hello(now, conn),
            Event::Message { conn, data } | Event::BulkMessage { conn, data }
                if chirp_files::is_file_msg(&data) =>
            {
                self.adopt_if_candidate(now, conn);
                self.on_file_message(now, conn, &data);
            }
            Event::Message { conn, data } => {
                // A message proves a candidate to be the peer's chat (a ping sends none).
                self.adopt_if_candidate(now, conn);
                let from = if Some(conn) == self.conn {
                    self.peer_name()
                } else {
                    "previous session".into()
                };
                self.report(Report::Message { from, data });
            }
            Event::Acked { conn, messages } => {
                if let Some(ids) = self.inflight.get_mut(&conn) {
                    let n = usize::try_from(messages)
                        .unwrap_or(usize::MAX)
                        .min(ids.len());
                    let delivered: Vec<u64> = ids
                        .drain(..n)
                        .filter_map(|s| match s {
                            Sent::Line(id) => id,
                            Sent::Control => None,
                        })
                        .collect();
                    for id in delivered {
                        self.report(Report::Delivered(id));
                    }
                }
                self.finish_if_idle(now, false);
                self.flush(now);
            }
            Event::PeerFinished { conn } => {
                debug!(?conn, "the peer finished its stream");
                // So does the end of the peer's stream: a ping never ends it.
                self.adopt_if_candidate(now, conn);
                if Some(conn) == self.conn {
                    self.peer_finished = Some(conn);
                    self.finish_if_idle(now, false);
                }
            }
            Event::Writable { conn } if Some(conn) == self.conn => {
                self.blocked = None;
                self.flush(now);
            }
            // The peer session asks for no pings; the core follows the peer's address itself.
            Event::Writable { .. } | Event::Ping { .. } | Event::PathChanged { .. } => {}
            Event::BulkWritable { conn } if Some(conn) == self.conn => {
                self.bulk_blocked = None;
                self.flush(now);
            }
            Event::BulkWritable { .. } => {}
            // Bulk data is file data; anything else there is dropped (taking it releases its
            // flow-control credit).
            Event::BulkMessage { conn, data } => {
                debug!(
                    ?conn,
                    len = data.len(),
                    "a bulk message that is no file message: dropped"
                );
            }
            Event::Closed {
                conn,
                reason,
                undelivered,
            } => self.on_closed(now, conn, reason, undelivered),
        }
    }

    fn on_closed(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        reason: CloseReason,
        undelivered: Vec<Bytes>,
    ) {
        if self.hello_owed == Some(conn) {
            self.hello_owed = None;
        }
        if let Some((_, remote, _)) = self.asking.filter(|a| a.0 == conn) {
            // The question stays open: its answer decides the key's next attempt.
            let text = format!(
                "{remote} gave up waiting for an answer; /accept (Alt+Y) still trusts its key \
                 for its next attempt"
            );
            self.report(Report::Status(text));
        }
        // Lines the peer never acknowledged go first in the queue, in their order, each with
        // its id. They are the last ones sent on `conn` (every `Acked` comes before `Closed`),
        // so ids pair with them from the back; any older id left over was acknowledged.
        // File-layer messages are not sent again: they were about that connection's state,
        // and the file layer starts over from the receiver's verified data on the next one.
        let mut ids: VecDeque<Option<u64>> = self
            .inflight
            .remove(&conn)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| match s {
                Sent::Line(id) => Some(id),
                Sent::Control => None,
            })
            .collect();
        let lines = undelivered
            .into_iter()
            .filter(|d| !chirp_files::is_file_msg(d));
        for data in lines.rev() {
            let local_id = ids.pop_back().flatten();
            self.pending.push_front(Outgoing { data, local_id });
        }
        for id in ids.into_iter().flatten() {
            self.report(Report::Delivered(id));
        }
        if Some(conn) != self.conn {
            if self.replacing == Some(conn) {
                self.replacing = None;
            }
            // A candidate that never proved itself (a ping's, typically) ends unnoticed.
            self.candidates.retain(|c| c.conn != conn);
            // A replaced connection; its lines now go out on the current one.
            self.flush(now);
            return;
        }
        let was_up = std::mem::take(&mut self.up);
        self.files_down();
        let peer_left = self.peer_finished.take() == Some(conn);
        self.finish_at = None;
        self.conn = None;
        // Leaving with everything delivered, there is nothing for a successor to take over.
        let successor = (!self.leaving || !self.pending.is_empty())
            .then(|| self.successor())
            .flatten();
        if let Some(next) = successor {
            // The peer at the address of the connection that ended started a new one: it
            // restarted (our packets on the old one drew its RESET), or dropped the old one
            // first. It takes over, with the lines the old one never got acknowledged.
            if was_up {
                let why = if peer_left {
                    "left".to_owned()
                } else {
                    describe(&reason, self.config.idle_timeout)
                };
                self.down(why);
            }
            self.adopt(now, next);
            return;
        }
        if self.leaving {
            // Until now a restarted peer could still take over what we were draining; from
            // here on the chat is over.
            let code = self.exit_code(&reason, peer_left);
            self.end(&[], close_code::NO_ERROR, "", code, LINGER);
            return;
        }
        match &reason {
            // It finished (its end of input), and so did we once idle: it left.
            _ if peer_left => self.down("left".into()),
            // Our handshake found nobody: keep trying quietly.
            CloseReason::IdleTimeout if !was_up => {}
            CloseReason::PeerClosed {
                code: close_code::KEY_MISMATCH,
                ..
            } => {
                let why = "it refused our key (it pins or remembers another)";
                if was_up {
                    self.down(why.into());
                } else {
                    // Never up (our handshake had not finished): not "down", refused.
                    let text = format!("{} {why}; trying again in 10 s", self.peer_name());
                    self.report(Report::Error(text));
                }
                // Trying again at once would only be refused again, and flood the peer's
                // screen with refusals: try again later.
                self.retry_at = Some(now + KEY_REFUSED_RETRY);
                return;
            }
            CloseReason::PeerClosed { .. } => self.down("left".into()),
            other => {
                let why = describe(other, self.config.idle_timeout);
                self.down(why);
            }
        }
        self.connect(now);
    }

    // ----- Internals -----

    fn report(&mut self, r: Report) {
        self.out.push_back(Output::Report(r));
    }

    fn transport(&mut self, t: Transport) {
        self.out.push_back(Output::Transport(t));
    }

    /// A request whose reply the session waits for before anything else.
    fn ask(&mut self, awaiting: Awaiting, t: Transport) {
        debug_assert!(self.awaiting.is_none(), "one request at a time");
        self.awaiting = Some(awaiting);
        self.transport(t);
    }

    fn fail(&mut self, local_id: Option<u64>, reason: String) {
        self.report(match local_id {
            Some(local_id) => Report::Failed { local_id, reason },
            None => Report::Error(reason),
        });
    }

    fn peer_name(&self) -> String {
        self.remote.unwrap_or(self.config.to).to_string()
    }

    fn down(&mut self, reason: String) {
        let peer = self.peer_name();
        self.report(Report::Down { peer, reason });
    }

    fn connect(&mut self, now: Instant) {
        if self.awaiting.is_some() {
            // A reply is still awaited: try again right after it.
            self.retry_at = Some(now);
            return;
        }
        let to = self.config.to;
        self.ask(Awaiting::Connect, Transport::Connect { to });
    }

    fn on_connected(&mut self, now: Instant, r: Result<ConnectionHandle, ConnectError>) {
        match r {
            Ok(conn) if self.candidates.iter().any(|c| c.conn == conn) => {
                // The transport reused a connection to the peer that is already up (ours
                // ended meanwhile): its `Connected` has come and gone.
                self.adopt_if_candidate(now, conn);
            }
            Ok(conn) => {
                debug!(?conn, "connecting");
                self.conn = Some(conn);
                self.blocked = None;
                self.bulk_blocked = None;
                self.up = false;
            }
            Err(ConnectError::Handshake) => {
                self.ended = true;
                self.out.push_back(Output::Fatal(
                    "cannot start a handshake: the identity key was refused".into(),
                ));
            }
            Err(ConnectError::TooManyConnections) => {
                // Transient (connections still draining); never a reason to quit the chat.
                debug!("connection table full; retrying shortly");
                self.conn = None;
                self.retry_at = Some(now + CONNECT_RETRY);
            }
        }
    }

    fn on_sent(&mut self, now: Instant, conn: ConnectionHandle, r: Result<(), SendError>) {
        match r {
            Ok(()) => {
                if let Some(m) = self.pending.pop_front() {
                    let sent = Sent::Line(m.local_id);
                    self.inflight.entry(conn).or_default().push_back(sent);
                }
            }
            Err(SendError::Write(WriteError::TooLarge { size, max })) => {
                let reason = format!("message of {size} bytes not sent: the limit is {max}");
                let local_id = self.pending.pop_front().and_then(|m| m.local_id);
                self.fail(local_id, reason);
            }
            // Gone without the `Closed` every held connection reports: a bug in the core, but
            // no reason to stop chatting. Start over (its unacknowledged lines, which only
            // `Closed` could hand back, are lost; say so in the logs).
            Err(SendError::UnknownConnection) => {
                warn!(
                    ?conn,
                    "connection vanished without a Closed event; reconnecting"
                );
                let lost = self.inflight.remove(&conn).unwrap_or_default();
                let ids = lost.into_iter().filter_map(|s| match s {
                    Sent::Line(id) => id,
                    Sent::Control => None,
                });
                for local_id in ids {
                    let reason = "lost with its connection (not resent)".to_owned();
                    self.report(Report::Failed { local_id, reason });
                }
                if self.conn == Some(conn) {
                    self.conn = None;
                    self.up = false;
                    self.files_down();
                }
                if self.replacing == Some(conn) {
                    self.replacing = None;
                }
                self.retry_at = Some(now);
            }
            // Blocked: wait for Writable. Closed: the Closed event brings a new connection.
            Err(_) => self.blocked = Some(conn),
        }
    }

    fn on_stats(&mut self, line: bool, stats: Option<Box<ConnectionStats>>) {
        let report = match (line, stats) {
            (true, Some(stats)) => Report::Stats {
                peer: self.peer_name(),
                stats,
            },
            (true, None) => Report::Error("no connection".into()),
            (false, s) => Report::Link(s),
        };
        self.report(report);
    }

    /// Hands the next queued line to the transport (one request at a time: the reply brings
    /// the next), and once leaving and done, closes or finishes.
    fn flush(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        self.refuse_successors_when_done();
        if self.awaiting.is_some() {
            return;
        }
        let Some(conn) = self.conn else { return };
        if self.replacing.is_some() {
            return; // The old connection's lines must go first.
        }
        let stream_open = self.blocked != Some(conn);
        if stream_open && self.hello_owed == Some(conn) {
            let data = Bytes::from_static(HELLO);
            self.ask(Awaiting::Hello(conn), Transport::Send { conn, data });
            return;
        }
        if stream_open && let Some(msg) = self.pending.front() {
            let data = msg.data.clone();
            self.ask(Awaiting::Send(conn), Transport::Send { conn, data });
            return;
        }
        // Chat lines first; then the file layer (never after our FIN): its control messages
        // while the message stream takes them, its bulk data while the bulk channel does.
        if self.up && self.closing != Some(conn) && self.send_file_message(now, conn, stream_open) {
            return;
        }
        // At end of input, transfers in progress finish first (`/quit` leaves at once).
        let files_busy = self.half_close && self.files.as_ref().is_some_and(Files::busy);
        // After `/quit`, received files being saved are waited for a bounded time.
        let saves_wait = matches!(self.save_wait, SaveWait::Until(_))
            && self
                .files
                .as_ref()
                .is_some_and(|f| f.transfers.saving().next().is_some());
        if self.leaving
            && self.pending.is_empty()
            && !files_busy
            && !saves_wait
            && self.closing != Some(conn)
        {
            self.closing = Some(conn);
            let sent = self.inflight.get(&conn).is_some_and(|ids| !ids.is_empty());
            if self.half_close && (self.up || sent) {
                // End of input: a half-close. Our lines are the last; the core sends them and
                // then the FIN, and goes on receiving until the peer finishes too.
                self.ask(Awaiting::Finish, Transport::Finish { conn });
            } else {
                // Graceful: the core first waits until everything sent is acknowledged.
                self.transport(Transport::Close {
                    conn,
                    code: close_code::NO_ERROR,
                    reason: "bye".into(),
                });
            }
            return;
        }
        self.finish_if_idle(now, false);
    }

    /// Leaving, with every line acknowledged and no file transfer to resume, no connection
    /// can take anything over any more: the endpoint stops accepting them now rather than when
    /// the chat's connection closes. The transport runs apart from the session, so between its
    /// close and our hearing of it the peer, which dials again as soon as the close reaches
    /// it, would find a connection accepted that dies with this process (a ghost on its side).
    fn refuse_successors_when_done(&mut self) {
        if self.refusing || !self.leaving || self.replacing.is_some() || !self.pending.is_empty() {
            return;
        }
        let unacknowledged = self.inflight.values().any(|sent| !sent.is_empty());
        let files_busy = self.files.as_ref().is_some_and(|f| f.transfers.busy());
        if !unacknowledged && !files_busy {
            debug!("leaving with everything delivered: refusing new connections");
            self.refusing = true;
            self.transport(Transport::SetAcceptIncoming(false));
        }
    }

    /// After the peer finished: finish our half too once nothing is queued and everything is
    /// acknowledged, and has stayed so for [`FINISH_WHEN_IDLE`] (`fire`: that time is up).
    fn finish_if_idle(&mut self, now: Instant, fire: bool) {
        let Some(conn) = self.conn.filter(|&c| self.peer_finished == Some(c)) else {
            self.finish_at = None;
            return;
        };
        let idle = self.pending.is_empty()
            && self.files.as_ref().is_none_or(|f| !f.busy())
            && self.replacing.is_none()
            && self.awaiting.is_none()
            && self.inflight.get(&conn).is_none_or(VecDeque::is_empty);
        if self.leaving || self.closing == Some(conn) || !idle {
            self.finish_at = None;
            return;
        }
        if !fire {
            self.finish_at.get_or_insert(now + FINISH_WHEN_IDLE);
            return;
        }
        debug!(?conn, "the peer finished and we are idle: finishing too");
        self.closing = Some(conn);
        self.ask(Awaiting::Finish, Transport::Finish { conn });
    }

    /// `c`, up with the peer's key, becomes the chat's connection. The one it replaces, if any,
    /// is aborted; sending waits for that one's `Closed`, which hands back the lines it never
    /// got acknowledged, so that they go out first.
    fn adopt(&mut self, now: Instant, c: Candidate) {
        self.candidates.retain(|other| other.conn != c.conn);
        if let Some(old) = self.conn.filter(|&old| old != c.conn) {
            if self.up {
                self.down("restarted".into());
            }
            self.replacing = Some(old);
            self.transport(Transport::Abort {
                conn: old,
                code: close_code::NO_ERROR,
                reason: "replaced".into(),
            });
        }
        debug!(conn = ?c.conn, remote = %c.remote, "the chat's connection");
        self.conn = Some(c.conn);
        self.blocked = None;
        self.bulk_blocked = None;
        self.remote = Some(c.remote);
        self.up = true;
        self.hello_owed = Some(c.conn);
        self.retry_at = None;
        self.report(Report::Up {
            peer: c.remote.to_string(),
            fingerprint: c.key.fingerprint().to_string(),
        });
        if let Some(f) = self.files.as_mut() {
            // Whatever was under way on the old connection starts over on this one, from
            // what the receiver holds verified.
            f.held = None;
            f.held_bulk = None;
            f.transfers.disconnected();
            let fingerprint = c.key.fingerprint();
            f.transfers
                .set_auto_accept(f.trusted.contains(&fingerprint));
            f.transfers.set_peer_key(Some(fingerprint.to_string()));
            f.transfers.connected();
        }
        self.flush(now);
    }

    /// `conn` carried what only the peer's chat sends: if it was set aside, it takes over.
    fn adopt_if_candidate(&mut self, now: Instant, conn: ConnectionHandle) {
        if let Some(c) = self.candidates.iter().find(|c| c.conn == conn).copied() {
            debug!(?conn, "a connection set aside carried the peer's chat");
            self.adopt(now, c);
        }
    }

    /// Once the chat's connection has ended: the newest candidate from the address that
    /// connection had, or from the address the user gave, or that sent a [`HELLO`], if any
    /// (removed from the list). Any other candidate, a ping's, must prove itself instead.
    fn successor(&mut self) -> Option<Candidate> {
        let i = self
            .candidates
            .iter()
            .rposition(|c| c.hello || self.peers_address(c.remote))?;
        Some(self.candidates.remove(i))
    }

    /// Whether `a` is the address the user gave, or the one the chat's last connection had:
    /// where only the peer itself can be.
    fn peers_address(&self, a: SocketAddr) -> bool {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let a = canonical(a);
        a == canonical(self.config.to) || self.remote.is_some_and(|r| canonical(r) == a)
    }

    /// The peer's [`HELLO`] on `conn`: a candidate is a chat, not a ping. While the chat has no
    /// connection up it takes over at once; otherwise it is the chat's successor should that
    /// connection end.
    fn on_hello(&mut self, now: Instant, conn: ConnectionHandle) {
        let Some(c) = self.candidates.iter_mut().find(|c| c.conn == conn) else {
            return;
        };
        c.hello = true;
        let c = *c;
        if !self.up {
            debug!(?conn, "a connection set aside said HELLO");
            self.adopt(now, c);
        }
    }

    fn on_hello_sent(&mut self, conn: ConnectionHandle, r: Result<(), SendError>) {
        match r {
            Ok(()) => {
                self.hello_owed = None;
                self.inflight
                    .entry(conn)
                    .or_default()
                    .push_back(Sent::Control);
            }
            // Blocked: sent once the connection is writable.
            Err(SendError::Write(WriteError::Blocked)) => self.blocked = Some(conn),
            // The connection is ending (its `Closed` follows), or cannot take a message.
            Err(_) => self.hello_owed = None,
        }
    }

    /// The chat is over. Accept no new connection: the peer reconnects as soon as our close
    /// reaches it, and must find nobody rather than a connection that dies with this process.
    /// Then close `conns`, and any connection set aside, at once, and linger up to `linger`
    /// while what is closing drains.
    fn end(
        &mut self,
        conns: &[ConnectionHandle],
        code: u64,
        reason: &str,
        exit: u8,
        linger: Duration,
    ) {
        self.transport(Transport::SetAcceptIncoming(false));
        let set_aside: Vec<_> = self.candidates.drain(..).map(|c| c.conn).collect();
        for &conn in conns.iter().chain(&set_aside) {
            self.transport(Transport::Abort {
                conn,
                code,
                reason: reason.to_owned(),
            });
        }
        self.out.push_back(Output::Exit { code: exit, linger });
        self.ended = true;
        self.retry_at = None;
        self.finish_at = None;
    }

    /// Exit code once the connection has closed while leaving. `peer_left`: the peer had
    /// finished, and we received all it sent; then, with nothing of ours undelivered, the chat
    /// ended well however the connection then went (its CLOSE may have been lost).
    fn exit_code(&mut self, reason: &CloseReason, peer_left: bool) -> u8 {
        let undelivered = self.pending.len();
        let clean = matches!(reason, CloseReason::Local | CloseReason::PeerClosed { .. });
        if undelivered == 0 && (clean || peer_left) {
            return 0;
        }
        let why = match reason {
            // A graceful close that had to give up: the peer stopped taking our data.
            CloseReason::Local => "the peer stopped accepting data".to_owned(),
            other => describe(other, self.config.idle_timeout),
        };
        let text = format!(
            "{undelivered} message(s) were not acknowledged by {}: {why}",
            self.peer_name()
        );
        self.report(Report::Error(text));
        1
    }

    /// The handshake of `conn` paused on the other side's `key`: is it the peer's? The accept
    /// policy is the [`KeyPolicy`]'s.
    fn on_verify(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        remote: SocketAddr,
        key: PublicKey,
    ) {
        let verdict = self.policy.verdict(self.config.to, remote, key);
        let verify = |accept| Transport::VerifyKey { conn, accept };
        match verdict {
            PeerVerdict::Accept(notice) => {
                if let Some(n) = notice {
                    self.report(Report::Status(n));
                }
                self.transport(verify(true));
            }
            PeerVerdict::Ask
                if self
                    .asking
                    .as_ref()
                    .is_some_and(|&(_, _, asked)| asked == key) =>
            {
                // The same key trying again (its earlier attempt may have given up waiting):
                // the open question now stands for this attempt.
                if let Some(asking) = self.asking.as_mut() {
                    asking.0 = conn;
                    asking.1 = remote;
                }
            }
            PeerVerdict::Ask if self.config.can_ask && self.asking.is_none() => {
                debug!(?conn, %remote, "asking the user about a first-contact key");
                self.asking = Some((conn, remote, key));
                self.report(Report::AskKey {
                    from: remote.to_string(),
                    fingerprint: key.fingerprint().to_string(),
                });
            }
            PeerVerdict::Ask => {
                // Nobody to ask (or a question is already open): refuse, and say how to
                // accept it next time.
                self.transport(verify(false));
                let text = unconfirmed_refusal(self.config.to, remote, key);
                self.show_refusal(now, text);
            }
            PeerVerdict::Refuse { reason, fatal } => {
                self.transport(verify(false));
                if !fatal {
                    self.show_refusal(now, reason);
                    return;
                }
                self.report(Report::Error(reason));
                // The chat ends: the connection we had (if any) is closed too, so that the
                // peer hears of it now rather than by its idle timeout.
                let conns: Vec<_> = self.conn.filter(|&old| old != conn).into_iter().collect();
                self.end(
                    &conns,
                    close_code::APPLICATION_MIN,
                    "key refused",
                    1,
                    LINGER,
                );
            }
        }
    }

    /// Shows a refusal that does not end the chat, unless the same one was shown recently.
    fn show_refusal(&mut self, now: Instant, text: String) {
        if !self.refusals.fresh(now, &text) {
            debug!("refused the same key again");
            return;
        }
        self.report(Report::Error(text));
    }

    /// The user's answer to [`Report::AskKey`]. A yes remembers the key for the peer's
    /// address, so that it is accepted from any port from now on, also if the connection that
    /// asked gave up while the user was thinking (the peer's next attempt gets in).
    fn answer(&mut self, yes: bool) {
        let Some((conn, remote, key)) = self.asking.take() else {
            let text = "no question is open (/accept and /refuse answer one about a new key)";
            self.report(Report::Error(text.into()));
            return;
        };
        if !yes {
            self.transport(Transport::VerifyKey {
                conn,
                accept: false,
            });
            let text = format!("refused key {} from {remote}", key.fingerprint());
            self.report(Report::Status(text));
            return;
        }
        match self.policy.remember(self.config.to, key) {
            Ok(place) => {
                let text = format!(
                    "key {} from {remote} accepted, and remembered for {} {place}",
                    key.fingerprint(),
                    self.config.to,
                );
                self.report(Report::Status(text));
                self.transport(Transport::VerifyKey { conn, accept: true });
            }
            Err(e) => {
                self.transport(Transport::VerifyKey {
                    conn,
                    accept: false,
                });
                self.report(Report::Error(e));
            }
        }
    }
}

impl<P: KeyPolicy> Session<P> {
    /// `/send`, `/accept ID`, `/decline`, `/cancel`, and the driver's answers to file work.
    fn on_file_input(&mut self, now: Instant, input: Input) {
        let Some(f) = self.files.as_mut() else {
            self.report(Report::Error("file transfer is not enabled".into()));
            return;
        };
        let result = match input {
            Input::SendFile(path) if f.hash_outside => {
                f.hashing += 1;
                let chunk_size = f.transfers.chunk_size();
                self.out.push_back(Output::HashFile { path, chunk_size });
                return;
            }
            Input::SendFile(path) => f.transfers.send_file(&path).map_err(|e| e.to_string()),
            Input::FileHashed { path, result } => {
                f.hashing = f.hashing.saturating_sub(1);
                debug!(path = %path.display(), ok = result.is_ok(), "a file was hashed");
                result.map(|p| f.transfers.offer_file(*p))
            }
            Input::FileFinished { finish, result } => {
                f.transfers.finished(&finish, result);
                // DONE (or DECLINE) for the peer.
                self.flush(now);
                return;
            }
            Input::FileChecked { check, result } => {
                f.transfers.checked(&check, result);
                // WANT (or DECLINE) for the peer.
                self.flush(now);
                return;
            }
            Input::AcceptFile(id) => f.transfers.accept(id),
            Input::DeclineFile(id) => f.transfers.decline(id),
            Input::CancelFile(id) => f.transfers.cancel(id),
            _ => return,
        };
        if let Err(e) = result {
            self.report(Report::Error(e));
        }
        self.flush(now);
    }

    /// A file-layer message from the peer. Without file transfer enabled, an offer is
    /// declined (so that the sender hears why) and anything else dropped.
    fn on_file_message(&mut self, now: Instant, conn: ConnectionHandle, data: &Bytes) {
        if Some(conn) != self.conn {
            debug!(?conn, "a file message on a connection set aside: dropped");
            return;
        }
        match self.files.as_mut() {
            Some(f) => f.transfers.handle_message(now, data),
            None => {
                if let Ok(chirp_files::Msg::Offer { id, .. }) = chirp_files::Msg::decode(data) {
                    let decline = chirp_files::Msg::Decline {
                        id,
                        reason: b"file transfer is not enabled here".to_vec(),
                    };
                    self.pending.push_back(Outgoing {
                        data: decline.encode(),
                        local_id: None,
                    });
                }
            }
        }
        self.flush(now);
    }

    /// Hands the transport the file layer's next message, if any: a control message if the
    /// message stream is open (`stream_open`), else bulk data if the bulk channel is.
    /// Whether it did (a reply is then awaited).
    fn send_file_message(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        stream_open: bool,
    ) -> bool {
        let bulk_open = self.bulk_blocked != Some(conn);
        let Some(f) = self.files.as_mut() else {
            return false;
        };
        let mut next = None;
        if stream_open {
            next = f
                .held
                .take()
                .or_else(|| f.transfers.poll_transmit(now, false));
        }
        // `poll_transmit` hands out control messages first: bulk data only once none is left
        // (one stuck in `held` behind a blocked message stream does not hold bulk data back).
        if next.is_none() && bulk_open && !f.transfers.wants_transmit(false) {
            next = f
                .held_bulk
                .take()
                .or_else(|| f.transfers.poll_transmit(now, true));
        }
        let Some(t) = next else {
            return false;
        };
        let data = t.data.clone();
        let bulk = t.bulk;
        let request = if bulk {
            f.held_bulk = Some(t);
            Transport::SendBulk { conn, data }
        } else {
            f.held = Some(t);
            Transport::Send { conn, data }
        };
        self.ask(Awaiting::SendFile { conn, bulk }, request);
        true
    }

    fn on_file_sent(&mut self, conn: ConnectionHandle, bulk: bool, r: Result<(), SendError>) {
        let Some(f) = self.files.as_mut() else {
            return;
        };
        let held = if bulk { &mut f.held_bulk } else { &mut f.held };
        match r {
            // Only message-stream messages are counted by `Acked`.
            Ok(()) => {
                if held.take().is_some() && !bulk {
                    self.inflight
                        .entry(conn)
                        .or_default()
                        .push_back(Sent::Control);
                }
            }
            // Never too large (chunks fit a message by construction); dropped if it were.
            Err(SendError::Write(WriteError::TooLarge { .. })) => {
                warn!("a file message was refused as too large");
                *held = None;
            }
            // Blocked: kept, and sent once that channel is writable. Closed or gone: the
            // connection's end restarts the file layer.
            Err(_) if bulk => self.bulk_blocked = Some(conn),
            Err(_) => self.blocked = Some(conn),
        }
    }

    /// The received files being saved, as text for the user (empty if none): their names
    /// (sanitised on arrival), quoted.
    fn saving(&self) -> String {
        let Some(f) = self.files.as_ref() else {
            return String::new();
        };
        let names: Vec<String> = f
            .transfers
            .saving()
            .map(|(id, name)| format!("file {id} ({name:?})"))
            .collect();
        names.join(", ")
    }

    /// The chat's connection is gone: transfers wait for the next one.
    fn files_down(&mut self) {
        if let Some(f) = self.files.as_mut() {
            f.held = None;
            f.held_bulk = None;
            f.transfers.disconnected();
        }
    }
}

/// Why a connection ended, for the user.
pub fn describe(reason: &CloseReason, idle: Duration) -> String {
    match reason {
        CloseReason::IdleTimeout => format!("no answer for {} s", idle.as_secs()),
        CloseReason::PeerClosed { reason, .. } => format!("the peer closed ({reason})"),
        CloseReason::Local => "closed".into(),
        CloseReason::ProtocolViolation { detail, .. } => format!("protocol violation: {detail}"),
        CloseReason::KeyMismatch { .. } => "the peer's key is not the expected one".into(),
        CloseReason::KeyRefused { .. } => "we refused the peer's key".into(),
        CloseReason::Reset => "the peer restarted".into(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}
