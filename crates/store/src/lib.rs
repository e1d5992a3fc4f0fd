//! chirp's durable chat history, behind one trait ([`Storage`]) with two implementations:
//!
//! - [`Sqlite`]: the embedded default. SQLite (through `rusqlite` with the bundled library) in
//!   WAL mode with `synchronous=FULL`, written by one thread that commits in groups.
//! - [`Postgres`]: PostgreSQL (through `tokio-postgres` with a `deadpool` pool), for one node
//!   or for a cluster of nodes sharing one database. One writer task per node commits in
//!   groups, its statements pipelined on one connection.
//!
//! # What both guarantee
//!
//! - [`Storage::write`] queues a batch of [`Op`]s at once (batches are committed in the order
//!   they were queued) and resolves only after the transaction holding them has committed.
//!   Batches that queue up while a commit runs share the next transaction (group commit); a
//!   lone batch is committed at once (no timer, no added latency).
//! - **Ids come from the database**, in the transaction that inserts the message: the next id
//!   of its conversation (`convs.last_id + 1`). Ids are unique and increasing per
//!   conversation, across every node writing to one database, and never reused (retention
//!   keeps `convs.last_id`). [`Outcome::Stored`] hands each id back.
//! - **A message is stored once.** A message whose sender key and client reference
//!   ([`NewMessage::client_ref`]) are already stored is not stored again: the write answers
//!   [`Outcome::Duplicate`] with the stored copy's id (a client resends after a lost
//!   acknowledgement, possibly to another node of a cluster).
//! - **A nick has one owner.** [`Op::SetNick`] binds a nick only if no other key holds it
//!   ([`Outcome::NickTaken`] otherwise): two nodes racing for one nick give one winner.
//! - Retention ([`Retention`]): by count per conversation and by age, applied when asked
//!   ([`Storage::prune`]), in its own transaction.
//! - **Read markers** ([`Op::ReadMarker`]) only move forward: a marker older than the one
//!   stored changes nothing, whichever node writes it.
//! - **Search** ([`Storage::search`]) is full-text over the stored texts of plain messages and
//!   actions: SQLite FTS5 (an index the database keeps in step with every insert, update
//!   and delete of `messages`, by triggers), PostgreSQL full-text search (a GIN index on
//!   `to_tsvector('simple', text)`). Words match whole (no stemming, case-insensitive) in
//!   both. A search runs under a time limit ([`SEARCH_TIMEOUT`]).
//! - Schemas are versioned: each backend lists its migrations, applies the missing ones at
//!   open, and refuses a database written by a newer chirp ([`StoreError::TooNew`]).
//!
//! The store knows nothing about chat rules: conversations are opaque names (`#room`, or a DM
//! conversation name chosen by the server).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

pub mod migrate;
mod postgres;
mod sqlite;

pub use postgres::{MIGRATIONS as POSTGRES_MIGRATIONS, Postgres};
pub use sqlite::{MIGRATIONS as SQLITE_MIGRATIONS, Reader, Sqlite};

/// Most words one [`Storage::search`] matches (all of them, in any order); more are refused.
pub const MAX_SEARCH_TERMS: usize = 8;
/// Longest word of a search, in bytes.
pub const MAX_SEARCH_TERM: usize = 64;
/// How long one search may run before it is stopped and fails: PostgreSQL's
/// `statement_timeout`, and SQLite's progress handler on its read connection.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The words of a search, as [`Storage::search`] takes them: `text` split at every character
/// that is not a letter or a digit, lowercased, each word at most [`MAX_SEARCH_TERM`] bytes
/// (longer ones are cut at a character boundary), duplicates dropped, in order. `None` if
/// there is no word, or more than [`MAX_SEARCH_TERMS`].
pub fn search_terms(text: &str) -> Option<Vec<String>> {
    let mut terms: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let mut w = word.to_lowercase();
        if w.len() > MAX_SEARCH_TERM {
            let mut end = MAX_SEARCH_TERM;
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            w.truncate(end);
        }
        if !terms.contains(&w) {
            if terms.len() == MAX_SEARCH_TERMS {
                return None;
            }
            terms.push(w);
        }
    }
    (!terms.is_empty()).then_some(terms)
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL failed (or could not be reached).
    #[error("PostgreSQL at {target}: {message}")]
    Postgres {
        /// Where (host and database; never the password).
        target: String,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer chirp.
    #[error("database {path} has schema version {found}; this chirp knows up to {known}")]
    TooNew {
        /// The database (file, or PostgreSQL target).
        path: PathBuf,
        /// Schema version found.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The writer has stopped (after a fatal error, or [`Storage::close`]).
    #[error("the database writer has stopped")]
    Stopped,
    /// The commit holding this batch failed; nothing of it was written.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The database address is not one chirp understands.
    #[error("invalid database address: {0}")]
    Address(String),
}

/// A message to store: everything but its id, which the database gives
/// ([`Outcome::Stored`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Conversation: a room name (`#room`) or a DM conversation name.
    pub conv: String,
    /// Server timestamp, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Sender's static public key.
    pub from_key: [u8; 32],
    /// Sender's nick when sent.
    pub from_nick: String,
    /// DM recipient's key (`None` for room messages).
    pub to_key: Option<[u8; 32]>,
    /// DM recipient's nick when sent.
    pub to_nick: Option<String>,
    /// 0: plain message; 1: `/me` action; 2: a moderation event (`text` describes it, as the
    /// chat server encodes it).
    pub kind: u8,
    /// The text.
    pub text: String,
    /// The sending client's (instance id, sequence number): with the sender's key, it names
    /// the message, so that a resend after a lost acknowledgement is recognised (and not
    /// stored twice) by any node.
    pub client_ref: Option<(u64, u64)>,
}

impl NewMessage {
    /// The stored message, once the database gave it `id`.
    pub fn with_id(self, id: u64) -> Record {
        Record {
            conv: self.conv,
            id,
            ts_ms: self.ts_ms,
            from_key: self.from_key,
            from_nick: self.from_nick,
            to_key: self.to_key,
            to_nick: self.to_nick,
            kind: self.kind,
            text: self.text,
            client_ref: self.client_ref,
            target: None,
            edited: false,
            deleted: false,
            reactions: Vec::new(),
        }
    }
}

/// The `kind` of a stored record. Kinds 0 and 1 are messages, which the others refer to.
pub mod kind {
    /// A plain message.
    pub const MESSAGE: u8 = 0;
    /// A `/me` action.
    pub const ACTION: u8 = 1;
    /// A moderation event (its text is the chat server's encoding of it).
    pub const EVENT: u8 = 2;
    /// An edit of message `target`: the text is its new text (emptied when the message is
    /// deleted).
    pub const EDIT: u8 = 3;
    /// The deletion of message `target` (no text).
    pub const DELETE: u8 = 4;
    /// A reaction added to message `target`: the text is the emoji, `reactions` its count
    /// after this.
    pub const REACT: u8 = 5;
    /// A reaction taken back from message `target`, as [`REACT`].
    pub const UNREACT: u8 = 6;

    /// Whether a record of this kind is a message (something that can be edited, deleted
    /// and reacted to).
    pub fn is_message(kind: u8) -> bool {
        kind == MESSAGE || kind == ACTION
    }
}

/// A stored chat message (room message or DM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Conversation: a room name (`#room`) or a DM conversation name.
    pub conv: String,
    /// Id, increasing within `conv`.
    pub id: u64,
    /// Server timestamp, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Sender's static public key.
    pub from_key: [u8; 32],
    /// Sender's nick when sent.
    pub from_nick: String,
    /// DM recipient's key (`None` for room messages).
    pub to_key: Option<[u8; 32]>,
    /// DM recipient's nick when sent.
    pub to_nick: Option<String>,
    /// 0: plain message; 1: `/me` action; 2: a moderation event.
    pub kind: u8,
    /// The text.
    pub text: String,
    /// The sending client's (instance id, sequence number).
    pub client_ref: Option<(u64, u64)>,
    /// For an edit, deletion or reaction ([`kind::EDIT`] and after): the id of the message
    /// in `conv` it is about.
    pub target: Option<u64>,
    /// A message whose text was edited (`text` is the newest).
    pub edited: bool,
    /// A deleted message (its text is gone from the store: `text` is empty), or an edit
    /// whose text went with the message it edited.
    pub deleted: bool,
    /// A message: its reactions as `(emoji, count)`, in the order each emoji was first
    /// used. A [`kind::REACT`] or [`kind::UNREACT`] record: its emoji's count after it.
    pub reactions: Vec<(String, u64)>,
}

/// A change to a stored message, recorded as an event with the next id of its
/// conversation ([`Op::Amend`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amend {
    /// The conversation.
    pub conv: String,
    /// The id of the message changed.
    pub target: u64,
    /// Server timestamp, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Who changes it.
    pub by_key: [u8; 32],
    /// Their nick.
    pub by_nick: String,
    /// In a DM conversation: the other party (as a message's `to_key`), so that the event
    /// goes where the conversation's messages go.
    pub to_key: Option<[u8; 32]>,
    /// Their nick.
    pub to_nick: Option<String>,
    /// Only a message sent by this key may be changed (`None`: anyone's, as a room operator
    /// deletes).
    pub author: Option<[u8; 32]>,
    /// What changes.
    pub change: Change,
}

/// What an [`Amend`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The message's text becomes this; it is marked edited. Earlier versions are not kept:
    /// the message holds the newest text, and each edit event its own.
    Edit(String),
    /// The message's text is removed (overwritten, not hidden), with the text of every edit
    /// event of it, and its reactions; it is marked deleted.
    Delete,
    /// `by_key` reacts with this emoji (once per key and emoji).
    React(String),
    /// `by_key` takes back its reaction with this emoji.
    Unreact(String),
}

/// Why an [`Op::Amend`] changed nothing ([`Outcome::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No message with that id in the conversation (never, pruned, or not a message), or it
    /// is deleted.
    NoMessage,
    /// The message was sent by another key than [`Amend::author`].
    NotAuthor,
    /// The reaction is there already, or was not there to take back.
    Unchanged,
    /// The message has [`MAX_EMOJIS`] different reactions already.
    TooManyEmojis,
}

/// Most different emojis one message's reactions may use.
pub const MAX_EMOJIS: usize = 20;

/// One change to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Append a message with the next id of its conversation ([`Outcome::Stored`]), unless it
    /// is already stored ([`Outcome::Duplicate`]).
    Message(NewMessage),
    /// Bind `nick` to `key`, replacing the key's previous nick, if no other key holds `fold`
    /// ([`Outcome::NickTaken`] otherwise: release an expired holder first, with
    /// [`Op::ReleaseNick`]).
    SetNick {
        /// Nick as the user spelled it.
        nick: String,
        /// Its case-folded form, the unique key.
        fold: String,
        /// The owner.
        key: [u8; 32],
        /// When the owner was seen (ms since the epoch): now.
        seen_ms: i64,
    },
    /// The owner of a nick was seen connected at `ts_ms` (ms since the epoch; an older time
    /// than the one stored changes nothing). Nothing happens if `key` holds no nick.
    Seen {
        /// The owner.
        key: [u8; 32],
        /// When.
        ts_ms: i64,
    },
    /// `key` no longer holds a nick (it expired: another key claims it, or it is aged out),
    /// provided its owner was last seen at or before `seen_by` ([`Outcome::NickKept`]
    /// otherwise: in a cluster, another node may have seen the owner since this one did).
    ReleaseNick {
        /// The former owner.
        key: [u8; 32],
        /// The latest last-seen time (ms since the epoch) at which the nick is released.
        seen_by: i64,
    },
    /// Set a room's topic.
    SetTopic {
        /// The room.
        room: String,
        /// The topic.
        topic: String,
        /// Who set it.
        by: String,
        /// When (ms since the epoch).
        ts_ms: i64,
    },
    /// Sets one moderation entry (replacing the one with the same scope, kind and subject).
    SetMod(ModEntry),
    /// Changes a stored message (edit, delete, reaction) if [`Amend::author`] allows it and
    /// it is a message still there, and stores the event that records the change with the
    /// next id of the conversation ([`Outcome::Amended`], or [`Outcome::Refused`] with
    /// nothing changed).
    Amend(Amend),
    /// Removes one moderation entry (nothing happens if there is none).
    ClearMod {
        /// As in [`ModEntry::scope`].
        scope: String,
        /// As in [`ModEntry::kind`].
        kind: String,
        /// As in [`ModEntry::subject`].
        subject: String,
    },
    /// `key` has read conversation `conv` up to id `upto`: its read marker there moves to
    /// `upto`, unless it is already at or past it (markers never move back).
    ReadMarker {
        /// The reader.
        key: [u8; 32],
        /// The conversation.
        conv: String,
        /// The last id read.
        upto: u64,
    },
    /// Everything up to `upto` in DM conversation `conv` has been handed to `key`.
    DmCursor {
        /// The recipient.
        key: [u8; 32],
        /// The conversation.
        conv: String,
        /// Highest id handed over.
        upto: u64,
    },
}

/// One moderation setting: a room role, ban, mute, invitation or mode, or a server-wide ban.
/// The store keeps one per `(scope, kind, subject)`; their meaning is the chat server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModEntry {
    /// A room (`#room`), or `""` for the whole server.
    pub scope: String,
    /// What it is (`owner`, `op`, `ban`, `mode`, ...).
    pub kind: String,
    /// What it applies to (a key in hex, an address range, a mode letter).
    pub subject: String,
    /// Its value, if the kind has one (a room's `+k` key, a ban's reason).
    pub value: String,
    /// The nick that set it.
    pub by: String,
    /// When (ms since the epoch).
    pub ts_ms: i64,
}

/// What one [`Op`] of a committed batch did (one per op, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (every op but a message or a nick).
    Done,
    /// The message is stored with this id.
    Stored {
        /// Its id in its conversation.
        id: u64,
    },
    /// The message was stored before (same sender key and client reference): not stored
    /// again. Where and how it was stored.
    Duplicate {
        /// The conversation the stored copy is in.
        conv: String,
        /// Its id.
        id: u64,
        /// Its timestamp.
        ts_ms: i64,
    },
    /// [`Op::Amend`]: the change is made, and this is the event recording it (with its id,
    /// and for a reaction its emoji's count after it).
    Amended(Box<Record>),
    /// [`Op::Amend`]: nothing changed, for this reason.
    Refused(Refusal),
    /// The nick is bound.
    NickBound,
    /// Another key holds the nick: nothing changed.
    NickTaken,
    /// [`Op::ReleaseNick`]: the owner was seen after the given time (at `seen_ms`), so it
    /// keeps the nick. (A key that holds no nick is [`Outcome::Done`].)
    NickKept {
        /// When the owner was last seen, as stored.
        seen_ms: i64,
    },
}

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many messages per conversation (`None`: no limit).
    pub max_per_conv: Option<u64>,
    /// Delete messages older than this (`None`: no limit).
    pub max_age: Option<Duration>,
}

/// Store settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most operations in one transaction.
    pub max_batch: usize,
    /// Retention applied by [`Storage::prune`].
    pub retention: Retention,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            retention: Retention::default(),
        }
    }
}

/// Counters of the writer, for benches and `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Operations committed.
    pub ops: u64,
}

/// Everything the server needs in memory at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// `(nick, key)` bindings.
    pub nicks: Vec<(String, [u8; 32])>,
    /// `(key, ms since the epoch)`: when each nick's owner was last seen connected.
    pub seen: Vec<([u8; 32], i64)>,
    /// `(room, topic, set_by, ts_ms)`.
    pub topics: Vec<(String, String, String, i64)>,
    /// `(conversation, highest id ever given)`.
    pub last_ids: Vec<(String, u64)>,
    /// The newest messages of each conversation (at most `recent` each), oldest first.
    pub recent: Vec<Record>,
    /// Every moderation entry.
    pub moderation: Vec<ModEntry>,
}

/// A boxed store answer. Every request is queued (or started) when the method is called, not
/// when the future is first polled: writes keep the order of the calls.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// A durable chat history: what the server needs of a database. See the crate documentation
/// for what every implementation guarantees.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Writes `ops` in one transaction (possibly shared with other batches, committed in the
    /// order of the calls); resolves after the commit, with one [`Outcome`] per op.
    fn write(&self, ops: Vec<Op>) -> StoreFuture<Vec<Outcome>>;
    /// Applies the retention policy as of `now_ms`; resolves to the number of messages deleted.
    fn prune(&self, now_ms: i64) -> StoreFuture<u64>;
    /// Replaces the retention policy ([`StoreConfig::retention`]) for the prunes asked for
    /// after this call (a running server's config was reloaded). A stopped store ignores it.
    fn set_retention(&self, retention: Retention);
    /// The server's start-up state: nicks, topics, id high-water marks and the last `recent`
    /// messages of every conversation (undelivered DMs are read when their recipient
    /// connects: [`Storage::undelivered`]).
    fn load(&self, recent: usize) -> StoreFuture<Loaded>;
    /// Up to `limit` messages of `conv` with ids below `before` (or the newest), oldest first.
    fn history(&self, conv: String, before: Option<u64>, limit: usize) -> StoreFuture<Vec<Record>>;
    /// The messages of `conv` with ids in `after + 1..=upto`, oldest first: at most `limit`,
    /// and no more once their texts and nicks add up to `max_bytes` (one at least, if any).
    fn after(
        &self,
        conv: String,
        after: u64,
        upto: u64,
        limit: usize,
        max_bytes: usize,
    ) -> StoreFuture<Vec<Record>>;
    /// The DM conversations in which `key` has messages not yet handed to it, after
    /// `after_conv` in name order, at most `limit`: `(conversation, id of the first such
    /// message)`.
    fn undelivered(
        &self,
        key: [u8; 32],
        after_conv: Option<String>,
        limit: usize,
    ) -> StoreFuture<Vec<(String, u64)>>;
    /// The messages of `conv` whose text holds every word of `terms` ([`search_terms`]),
    /// with ids below `before` (or any), newest first, at most `limit`. Plain messages and
    /// actions only (kinds 0 and 1). Fails if it runs past [`SEARCH_TIMEOUT`].
    fn search(
        &self,
        conv: String,
        terms: Vec<String>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreFuture<Vec<Record>>;
    /// The read markers of `key` (`(conversation, last id read)`), at most `limit`, the
    /// conversations in name order.
    fn markers(&self, key: [u8; 32], limit: usize) -> StoreFuture<Vec<(String, u64)>>;
    /// Number of messages stored in `conv`.
    fn count(&self, conv: String) -> StoreFuture<u64>;
    /// The highest id given in `conv` so far (0: none): what a node of a cluster compares
    /// with the last id it saw, to find messages it missed.
    fn last_id(&self, conv: String) -> StoreFuture<u64>;
    /// The moderation entries of one scope (a room, or `""` for the server), as stored now:
    /// what a node of a cluster reads again when the bus may have lost changes.
    fn moderation(&self, scope: String) -> StoreFuture<Vec<ModEntry>>;
    /// Writer counters so far.
    fn stats(&self) -> WriterStats;
    /// Commits everything queued, then stops the writer; resolves when it has.
    fn close(&self) -> StoreFuture<()>;
}

/// The event record of a change `a` given id `id` (`count`: a reaction's count after it).
fn event_record(a: &Amend, id: u64, count: Option<u64>) -> Record {
    let (kind, text, reactions) = match &a.change {
        Change::Edit(t) => (kind::EDIT, t.clone(), Vec::new()),
        Change::Delete => (kind::DELETE, String::new(), Vec::new()),
        Change::React(e) => (
            kind::REACT,
            e.clone(),
            vec![(e.clone(), count.unwrap_or(0))],
        ),
        Change::Unreact(e) => (
            kind::UNREACT,
            e.clone(),
            vec![(e.clone(), count.unwrap_or(0))],
        ),
    };
    Record {
        conv: a.conv.clone(),
        id,
        ts_ms: a.ts_ms,
        from_key: a.by_key,
        from_nick: a.by_nick.clone(),
        to_key: a.to_key,
        to_nick: a.to_nick.clone(),
        kind,
        text,
        client_ref: None,
        target: Some(a.target),
        edited: false,
        deleted: false,
        reactions,
    }
}

/// Where the history lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (the default: `chirp.db` in the data directory).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://user@host:port/dbname`, or key=value).
    Postgres(String),
}

impl Database {
    /// Parses a `--database` value: a `postgres://` or `postgresql://` URL, or a file path
    /// (optionally `sqlite:PATH`).
    pub fn parse(s: &str) -> Result<Database, StoreError> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            s.parse::<tokio_postgres::Config>()
                .map_err(|e| StoreError::Address(format!("{}: {e}", postgres::redact(s))))?;
            return Ok(Database::Postgres(s.to_owned()));
        }
        let path = s.strip_prefix("sqlite:").unwrap_or(s);
        if path.is_empty() {
            return Err(StoreError::Address(
                "empty; give a postgres:// URL or a file path".into(),
            ));
        }
        Ok(Database::Sqlite(PathBuf::from(path)))
    }

    /// The database for logs and errors, without any password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(p) => p.display().to_string(),
            Database::Postgres(url) => postgres::redact(url),
        }
    }
}

/// Ops queued by one [`Storage::write`], and where to answer them.
type Batch = (
    Vec<Op>,
    tokio::sync::oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
);

/// Answers the batches a writer committed in one transaction: each its own share of the
/// outcomes, in order, or every one the error.
fn answer_batches(batch: Vec<Batch>, result: Result<Vec<Outcome>, StoreError>) {
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for (ops, done) in batch {
                let _ = done.send(Ok(outcomes.by_ref().take(ops.len()).collect()));
            }
        }
        Err(e) => {
            for (_, done) in batch {
                let _ = done.send(Err(StoreError::Commit(e.to_string())));
            }
        }
    }
}

/// Opens (creating or migrating) the database and starts its writer.
pub async fn open(db: &Database, config: StoreConfig) -> Result<Box<dyn Storage>, StoreError> {
    Ok(match db {
        Database::Sqlite(path) => {
            let path = path.clone();
            let s = tokio::task::spawn_blocking(move || Sqlite::open(&path, config))
                .await
                .map_err(|e| StoreError::Commit(format!("cannot open the database: {e}")))??;
            Box::new(s)
        }
        Database::Postgres(url) => Box::new(Postgres::connect(url, config).await?),
    })
}

#[cfg(test)]
mod tests;
