//! [`Transfers`]: both directions of file transfer with one peer, sans IO (see the crate
//! documentation for the protocol, PROTOCOL.md §12 for the bytes).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::name;
use crate::storage::Storage;
use crate::wire::{
    self, Hash, MAX_CHUNK_SIZE, MAX_CHUNKS, MAX_HASHES_PER_MSG, MAX_RANGES, MAX_REASON_LEN,
    MIN_CHUNK_SIZE, Msg,
};

/// The chunk size a sender uses for files of up to [`MAX_CHUNKS`] chunks of it (larger files
/// use larger chunks, up to [`MAX_CHUNK_SIZE`]).
pub const DEFAULT_CHUNK_SIZE: u32 = 32 * 1024;

/// At most this many incoming offers are kept at once; more are declined.
pub const MAX_INCOMING: usize = 16;

/// Progress is reported at most this often per transfer.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// At most this many finished incoming transfers are remembered (see [`Transfers`]'s
/// `recent`): an offer again of one of them is answered with DONE at once.
pub const REMEMBER_FINISHED: usize = 64;

/// A finished incoming transfer is remembered for at least this long after the next message
/// from the peer (the first moment the state machine learns the time after it finished).
pub const REMEMBER_FOR: Duration = Duration::from_secs(600);

/// Most alternative names tried (`name (1)` … `name (999)`) before giving up.
const MAX_ALTERNATIVES: u32 = 1000;

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We send.
    Send,
    /// We receive.
    Receive,
}

impl Direction {
    /// `"send"` or `"receive"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Receive => "receive",
        }
    }
}

/// What the user is to hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// The peer offers a file (`auto`: accepted at once, the peer is trusted); otherwise
    /// answer with [`Transfers::accept`] or [`Transfers::decline`].
    Offered {
        /// The peer's id for it.
        id: u64,
        /// The name it will be saved under (sanitised; a suffix may still be added).
        name: String,
        /// Size in bytes.
        size: u64,
        /// Root hash.
        hash: Hash,
        /// Accepted without asking.
        auto: bool,
        /// The fingerprint of the sender's key, as the driver named it
        /// ([`Transfers::set_peer_key`]): shown with the offer, so that the user can decide.
        key: Option<String>,
    },
    /// Our offer went out.
    Offering {
        /// Our id for it.
        id: u64,
        /// The name offered.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Root hash.
        hash: Hash,
    },
    /// Bytes moved so far (at most every [`PROGRESS_EVERY`]).
    Progress {
        /// Which transfer.
        id: u64,
        /// Which way.
        direction: Direction,
        /// Bytes of the file the receiver holds verified (sent and acknowledged by a WANT or
        /// received, plus what was resumed).
        bytes: u64,
        /// The file's size.
        total: u64,
        /// Bytes per second moved in this run.
        rate: u64,
    },
    /// Finished: the receiver verified the whole file and saved it.
    Done {
        /// Which transfer.
        id: u64,
        /// Which way.
        direction: Direction,
        /// The name: as offered (sending) or as saved in the download directory (receiving).
        name: String,
        /// Size in bytes.
        size: u64,
        /// Root hash.
        hash: Hash,
        /// Bytes of chunks moved in this run (less than `size` after a resume).
        moved: u64,
        /// Bytes found verified in the partial file (receiving).
        resumed: u64,
    },
    /// Ended without the file (declined, cancelled, a bad chunk, a write error).
    Failed {
        /// Which transfer.
        id: u64,
        /// Which way.
        direction: Direction,
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Why [`Transfers::send_file`] cannot offer a file.
#[derive(Debug, thiserror::Error)]
pub enum SendFileError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// It is larger than the protocol allows.
    #[error("{path} is too large to send ({size} bytes)")]
    TooLarge {
        /// The path given.
        path: String,
        /// Its size.
        size: u64,
    },
}

/// A received file, every chunk of it verified, to be made durable and given its name: the
/// last step of receiving, and the one that may take long on a real disk (the fsync waits
/// for every byte written). [`Self::run`] carries it out on a [`Storage`]; the result goes
/// back to [`Transfers::finished`] with the finish.
///
/// With [`Transfers::finish_outside`] the state machine hands these out through
/// [`Transfers::poll_finish`], so that a driver runs them away from the task that carries the
/// chat (on a thread of their own, with a storage of their own over the same download
/// directory); otherwise it runs them inline, at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// Which finish this is, among those of its [`Transfers`].
    pub job: u64,
    /// The transfer's id (the peer's).
    pub id: u64,
    /// The partial file, held open by nobody (the state machine let go of it).
    pub part: String,
    /// The name chosen on accepting, tried first.
    pub name: String,
    /// The (sanitised) offered name: `name (1)` … are tried after `name`, should it have
    /// appeared meanwhile.
    pub offered: String,
    /// The file's size: the partial file is cut to it.
    pub size: u64,
}

impl Finish {
    /// Makes the partial file durable and renames it to the first free one of [`Self::name`],
    /// then `offered (1)`, … (never overwriting: a name that appears meanwhile is skipped).
    /// Returns the name it was saved under.
    ///
    /// It touches nothing but `storage`; on a real disk it may block for seconds.
    pub fn run<S: Storage + ?Sized>(&self, storage: &mut S) -> Result<String, FinishError> {
        // The name chosen on accepting first (its partial file is this one), then the others.
        let names = (0..MAX_ALTERNATIVES).map(|n| name::alternative(&self.offered, n));
        for cand in std::iter::once(self.name.clone()).chain(names) {
            if cand == self.part || storage.exists(&cand) {
                continue;
            }
            match storage.finish(&self.part, &cand, self.size) {
                Ok(()) => return Ok(cand),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(FinishError::Io {
                        part: self.part.clone(),
                        source,
                    });
                }
            }
        }
        Err(FinishError::NoFreeName)
    }
}

/// Why a received file could not be saved ([`Finish::run`]): its partial file stays, so
/// that an offer of the same file later resumes from it.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Making it durable or renaming it failed (a full disk at fsync, a read-only directory).
    #[error("cannot save {part}: {source}")]
    Io {
        /// The partial file.
        part: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Every alternative name is taken.
    #[error("no free name to save it under")]
    NoFreeName,
}

/// A check of what an earlier attempt left in a partial file, against the chunk-hash list
/// (step 3 of the protocol, on a resume): it reads and hashes the whole partial file, about a
/// second for 1 GB, so, like a [`Finish`], a driver may run it away from the task that
/// carries the chat ([`Transfers::check_outside`], [`Transfers::poll_check`]). [`Self::run`]
/// carries it out on a [`Storage`]; the result goes back to [`Transfers::checked`] with the
/// check. WANT goes out only after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Which check this is, among those of its [`Transfers`].
    pub job: u64,
    /// The transfer's id (the peer's).
    pub id: u64,
    /// The partial file (it is not written while it is checked).
    pub part: String,
    /// The file's size.
    pub size: u64,
    /// Its chunk size.
    pub chunk_size: u32,
    /// Each chunk's hash, in order (the list, already checked against the root hash).
    pub hashes: Vec<Hash>,
}

impl Check {
    /// Which chunks the partial file holds verified: `true` for each whole chunk of it that
    /// matches its hash (one that cannot be read counts as missing). An error only if the
    /// partial file's length cannot be had (it is not a regular file).
    ///
    /// It touches nothing but `storage`; on a real disk it reads the whole partial file.
    pub fn run<S: Storage + ?Sized>(&self, storage: &mut S) -> std::io::Result<Vec<bool>> {
        let chunks = self.hashes.len();
        let mut have = vec![false; chunks];
        let part_len = storage.len(&self.part)?.unwrap_or(0);
        let mut buf = vec![0; self.chunk_size as usize];
        for (c, (hash, held)) in self.hashes.iter().zip(have.iter_mut()).enumerate() {
            let c = c as u64;
            let start = c * u64::from(self.chunk_size);
            let len = wire::chunk_len(self.size, self.chunk_size, c);
            if start + len > part_len {
                break;
            }
            let b = &mut buf[..len as usize];
            *held = storage.read(&self.part, start, b).is_ok() && wire::chunk_hash(b) == *hash;
        }
        Ok(have)
    }
}

/// A message for the peer: `bulk` messages (chunks and chunk-hash lists) go on the bulk
/// channel, the others on the ordinary message stream.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// The encoded message.
    pub data: Bytes,
    /// Bulk data (counts against the sender's window).
    pub bulk: bool,
}

/// Settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Chunk size for files we send (clamped to the protocol's bounds).
    pub chunk_size: u32,
    /// Accept offers without asking (the peer's key is trusted with `--auto-accept-from`).
    pub auto_accept: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            auto_accept: false,
        }
    }
}

/// A transfer's rate and the last time progress was reported.
#[derive(Debug, Clone, Copy)]
struct Clock {
    started: Option<Instant>,
    last_report: Option<Instant>,
}

impl Clock {
    fn new() -> Self {
        Self {
            started: None,
            last_report: None,
        }
    }

    fn rate(&mut self, now: Instant, moved: u64) -> u64 {
        let started = *self.started.get_or_insert(now);
        let secs = now.saturating_duration_since(started).as_secs_f64();
        if secs < 0.001 {
            0
        } else {
            (moved as f64 / secs) as u64
        }
    }

    /// Whether progress is due now (and then, remembers that it was reported).
    fn due(&mut self, now: Instant) -> bool {
        let due = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_EVERY);
        if due {
            self.last_report = Some(now);
        }
        due
    }
}

#[derive(Debug)]
enum SendStage {
    /// Offered; waiting for ACCEPT.
    Offered,
    /// Sending the chunk-hash list from this index, then waiting for WANT.
    Hashes(u64),
    /// Sending wanted chunks.
    Sending,
}

#[derive(Debug)]
struct Outgoing {
    path: PathBuf,
    name: String,
    size: u64,
    chunk_size: u32,
    root: Hash,
    hashes: Vec<Hash>,
    stage: SendStage,
    /// Chunk ranges still to send, `[start, end)`.
    queue: VecDeque<(u64, u64)>,
    /// Bytes of the file the receiver does not need (it had them) plus bytes sent.
    covered: u64,
    /// Chunk bytes sent in this run.
    moved: u64,
    clock: Clock,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvStage {
    /// Waiting for the user (or, after a reconnect, for the sender's new offer).
    Offered,
    /// Accepted; receiving the chunk-hash list.
    Hashes,
    /// The list is in; the partial file is being checked against it ([`Check`] with this
    /// job): WANT waits for the result.
    Checking(u64),
    /// Receiving chunks.
    Receiving,
}

#[derive(Debug)]
struct Incoming {
    /// Sanitised offered name.
    name: String,
    size: u64,
    chunk_size: u32,
    root: Hash,
    chunks: u64,
    stage: RecvStage,
    /// The user accepted it: a new offer of the same file after a reconnect is accepted too.
    accepted: bool,
    /// The name it is saved under (chosen on accepting).
    save_as: Option<String>,
    hashes: Vec<Hash>,
    /// Verified chunks held in the partial file.
    have: Vec<bool>,
    missing: u64,
    /// Bytes held verified.
    held: u64,
    /// Chunk bytes received in this run.
    moved: u64,
    /// Bytes found verified in the partial file when the list arrived.
    resumed: u64,
    clock: Clock,
}

/// A received file being saved ([`Finish`]): no longer an incoming transfer (its id is free
/// for the peer's next offer), but its name stays reserved and DONE waits for the result.
#[derive(Debug)]
struct Finishing {
    id: u64,
    /// Sanitised offered name.
    name: String,
    /// The name chosen on accepting.
    save_as: String,
    size: u64,
    root: Hash,
    moved: u64,
    resumed: u64,
}

/// An incoming transfer that ended with the file saved: remembered (the last
/// [`REMEMBER_FINISHED`], for [`REMEMBER_FOR`]) so that the same offer again, after a link
/// that dropped before our DONE got through, is answered with DONE rather than taken for a
/// new file (a second copy, or the user asked again).
#[derive(Debug)]
struct Received {
    id: u64,
    root: Hash,
    size: u64,
    /// The name it was saved under.
    saved: String,
    /// Forgotten after this; `None` until the state machine next learns the time.
    until: Option<Instant>,
}

/// A file hashed for sending, ready for [`Transfers::offer_file`]: made by [`prepare`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Where it is read from.
    pub path: PathBuf,
    /// The name offered (the last component of `path`).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunk size.
    pub chunk_size: u32,
    /// Each chunk's hash, in order.
    pub hashes: Vec<Hash>,
    /// The root hash over `hashes`.
    pub root: Hash,
}

/// Reads the file at `path` once, through `storage`, and hashes it for an offer: the chunk
/// size (`chunk_size`, clamped to the protocol's bounds, larger for a file of more than
/// [`MAX_CHUNKS`] chunks of it), each chunk's hash and the root hash.
///
/// This is the slow part of offering a large file (it reads all of it): it touches nothing
/// but `storage`, so a driver runs it on a thread of its own (e.g. `spawn_blocking`) and
/// hands the result to [`Transfers::offer_file`].
pub fn prepare<S: Storage + ?Sized>(
    storage: &mut S,
    path: &Path,
    chunk_size: u32,
) -> Result<Prepared, SendFileError> {
    let shown = path.display().to_string();
    let read = |source| SendFileError::Read {
        path: shown.clone(),
        source,
    };
    let size = storage.source_len(path).map_err(read)?;
    // Small files use the default chunk; large ones grow it to stay within MAX_CHUNKS.
    let chunk_size = u32::try_from(size.div_ceil(MAX_CHUNKS))
        .unwrap_or(u32::MAX)
        .max(chunk_size.clamp(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE));
    if chunk_size > MAX_CHUNK_SIZE {
        return Err(SendFileError::TooLarge { path: shown, size });
    }
    let count = wire::chunk_count(size, chunk_size);
    let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut buf = vec![0; chunk_size as usize];
    for i in 0..count {
        let len = wire::chunk_len(size, chunk_size, i) as usize;
        let b = &mut buf[..len];
        storage
            .read_source(path, i * u64::from(chunk_size), b)
            .map_err(read)?;
        hashes.push(wire::chunk_hash(b));
    }
    let root = wire::root_hash(&hashes);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok(Prepared {
        path: path.to_owned(),
        name,
        size,
        chunk_size,
        hashes,
        root,
    })
}

/// Both directions of file transfer with one peer (see the crate documentation).
///
/// Inputs: the user's [`Self::send_file`], [`Self::accept`], [`Self::decline`],
/// [`Self::cancel`]; the peer's
/// messages ([`Self::handle_message`]); the link going down and up ([`Self::disconnected`],
/// [`Self::connected`]); with [`Self::check_outside`] and [`Self::finish_outside`], the
/// results of checking a partial file to resume from ([`Self::checked`]) and of saving a
/// received file ([`Self::finished`]). Outputs: messages for the peer
/// ([`Self::poll_transmit`]), events for the user ([`Self::poll_event`]) and, likewise,
/// partial files to check ([`Self::poll_check`]) and received files to save
/// ([`Self::poll_finish`]). Files are read and written through the [`Storage`].
///
/// The last [`REMEMBER_FINISHED`] files received are remembered for [`REMEMBER_FOR`] (id, root
/// hash, size, the name saved under): the sender offers a file again after the link drops, and
/// if our DONE was lost with the link, that offer is answered with DONE at once, neither
/// saved a second time nor asked about again. (A sender that restarted and offers the very
/// same file under the same id meanwhile hears DONE too: the file is here.)
pub struct Transfers<S> {
    config: Config,
    storage: S,
    outgoing: BTreeMap<u64, Outgoing>,
    incoming: BTreeMap<u64, Incoming>,
    /// Received files being saved, by [`Finish::job`].
    finishing: BTreeMap<u64, Finishing>,
    /// Finishes for the driver to run ([`Self::finish_outside`]).
    finishes: VecDeque<Finish>,
    /// Finishes go to the driver instead of running inline.
    finish_outside: bool,
    /// Checks of partial files for the driver to run ([`Self::check_outside`]).
    checks: VecDeque<Check>,
    /// Checks go to the driver instead of running inline.
    check_outside: bool,
    /// Incoming transfers that ended with the file saved, oldest first.
    recent: VecDeque<Received>,
    next_job: u64,
    next_id: u64,
    control: VecDeque<Msg>,
    events: VecDeque<FileEvent>,
    /// Messages from the peer that were dropped (undecodable, or about no live transfer).
    dropped: u64,
    /// The fingerprint of the peer's key ([`Self::set_peer_key`]).
    peer_key: Option<String>,
}

impl<S> std::fmt::Debug for Transfers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers")
            .field("outgoing", &self.outgoing.len())
            .field("incoming", &self.incoming.len())
            .field("finishing", &self.finishing.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// A hash as text (lower-case hex), for events and logs.
pub fn hash_hex(h: &Hash) -> String {
    hex(h)
}

fn reason_bytes(reason: &str) -> Vec<u8> {
    let mut r = reason.as_bytes().to_vec();
    r.truncate(MAX_REASON_LEN);
    r
}

impl<S: Storage> Transfers<S> {
    /// No transfers yet.
    pub fn new(config: Config, storage: S) -> Self {
        Self {
            config,
            storage,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            finishing: BTreeMap::new(),
            finishes: VecDeque::new(),
            finish_outside: false,
            checks: VecDeque::new(),
            check_outside: false,
            recent: VecDeque::new(),
            next_job: 1,
            next_id: 1,
            control: VecDeque::new(),
            events: VecDeque::new(),
            dropped: 0,
            peer_key: None,
        }
    }

    /// The storage (tests look inside).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The storage, to change (tests damage a partial file).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Accept offers without asking from now on, or not (the peer's key changed).
    pub fn set_auto_accept(&mut self, yes: bool) {
        self.config.auto_accept = yes;
    }

    /// The fingerprint of the peer's key from now on (the connection's, as the driver shows
    /// it), named in each [`FileEvent::Offered`].
    pub fn set_peer_key(&mut self, fingerprint: Option<String>) {
        self.peer_key = fingerprint;
    }

    /// Messages from the peer dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether anything is being sent or received.
    pub fn busy(&self) -> bool {
        !self.outgoing.is_empty()
            || !self.finishing.is_empty()
            || self.incoming.values().any(|i| i.accepted)
    }

    /// From now on a received file is not saved inline (its fsync may block for seconds):
    /// [`Self::poll_finish`] hands out a [`Finish`] to run elsewhere, and DONE (and
    /// [`FileEvent::Done`]) wait for its result, given back to [`Self::finished`].
    pub fn finish_outside(&mut self) {
        self.finish_outside = true;
    }

    /// The next received file to save (only with [`Self::finish_outside`]): call it after
    /// every input, run [`Finish::run`] on a storage over the same download directory, away
    /// from the task that carries the chat, and hand the result to [`Self::finished`].
    pub fn poll_finish(&mut self) -> Option<Finish> {
        self.finishes.pop_front()
    }

    /// From now on the partial file an earlier attempt left is not checked inline (it is read
    /// and hashed whole, about a second for 1 GB): [`Self::poll_check`] hands out a [`Check`]
    /// to run elsewhere, and WANT waits for its result, given back to [`Self::checked`]. A
    /// transfer with no partial file (or an empty one) has nothing to read and goes on at once.
    pub fn check_outside(&mut self) {
        self.check_outside = true;
    }

    /// The next partial file to check (only with [`Self::check_outside`]): call it after
    /// every input, run [`Check::run`] on a storage over the same download directory, away
    /// from the task that carries the chat, and hand the result to [`Self::checked`].
    pub fn poll_check(&mut self) -> Option<Check> {
        self.checks.pop_front()
    }

    /// The result of [`Check::run`] for `check`: the receiver asks for the chunks the partial
    /// file lacks (WANT), or, if it holds them all, saves the file; an error fails the
    /// transfer. A check this does not wait for (the link dropped meanwhile and the transfer
    /// started over, or it was handed out by another [`Transfers`]) is ignored.
    pub fn checked(&mut self, check: &Check, result: std::io::Result<Vec<bool>>) {
        // The job says which check (job numbers are per `Transfers`: the id, size and partial
        // file, whose name carries the root hash, make sure that it is one of ours).
        let waiting = self.incoming.get(&check.id).filter(|i| {
            i.stage == RecvStage::Checking(check.job)
                && i.size == check.size
                && i.save_as
                    .as_deref()
                    .is_some_and(|s| name::part_name(s, &i.root) == check.part)
        });
        let Some(chunks) = waiting.map(|i| i.chunks) else {
            debug!(
                job = check.job,
                "the result of a check nobody waits for: ignored"
            );
            return;
        };
        match result {
            Ok(have) if have.len() as u64 == chunks => self.resume_from(check.id, &have),
            Ok(_) => {
                let why = format!("cannot read {}: the check went wrong", check.part);
                self.fail_incoming(check.id, why, "cannot read the partial file");
            }
            Err(e) => {
                let why = format!("cannot read {}: {e}", check.part);
                self.fail_incoming(check.id, why, "cannot read the partial file");
            }
        }
    }

    /// The received files being saved now ([`Finish`]es handed out and not answered yet):
    /// their ids and the names they are saved under.
    pub fn saving(&self) -> impl Iterator<Item = (u64, &str)> {
        self.finishing.values().map(|f| (f.id, f.save_as.as_str()))
    }

    /// The result of [`Finish::run`] for `finish`: the name the file was saved under, which
    /// the sender now hears of (DONE) and the user too ([`FileEvent::Done`]); or why it could
    /// not be saved, which ends the transfer ([`FileEvent::Failed`], and DECLINE for the
    /// sender). A finish this does not wait for (already answered, or handed out by another
    /// [`Transfers`], whose job numbers are its own) is ignored.
    pub fn finished(&mut self, finish: &Finish, result: Result<String, FinishError>) {
        let job = finish.job;
        let ours = self.finishing.get(&job).is_some_and(|f| {
            f.id == finish.id
                && f.size == finish.size
                && name::part_name(&f.save_as, &f.root) == finish.part
        });
        let Some(f) = ours.then(|| self.finishing.remove(&job)).flatten() else {
            debug!(job, "the result of a finish nobody waits for: ignored");
            return;
        };
        let Finishing {
            id,
            name,
            size,
            root,
            moved,
            resumed,
            ..
        } = f;
        match result {
            Ok(saved) => {
                debug!(id, "received file saved");
                self.control.push_back(Msg::Done { id });
                if self.recent.len() >= REMEMBER_FINISHED {
                    self.recent.pop_front();
                }
                self.recent.push_back(Received {
                    id,
                    root,
                    size,
                    saved: saved.clone(),
                    until: None,
                });
                self.events.push_back(FileEvent::Done {
                    id,
                    direction: Direction::Receive,
                    name: saved,
                    size,
                    hash: root,
                    moved,
                    resumed,
                });
            }
            Err(e) => {
                warn!(id, error = %e, "a received file could not be saved");
                self.control.push_back(Msg::Decline {
                    id,
                    reason: reason_bytes("cannot save the file"),
                });
                self.events.push_back(FileEvent::Failed {
                    id,
                    direction: Direction::Receive,
                    name,
                    reason: e.to_string(),
                });
            }
        }
    }

    /// The chunk size preferred for files we send ([`prepare`]'s `chunk_size`).
    pub fn chunk_size(&self) -> u32 {
        self.config.chunk_size
    }

    /// The size and root hash that [`Self::send_file`] would offer for the file at `path` (it
    /// reads the whole file): what a DM file offer announces through a chat server before the
    /// peer connection exists.
    pub fn hash_file(&mut self, path: &Path) -> Result<(u64, Hash), SendFileError> {
        let p = prepare(&mut self.storage, path, self.config.chunk_size)?;
        self.storage.close_source(path);
        Ok((p.size, p.root))
    }

    /// Offers the file at `path` under the last component of its name: hashes it (reading it
    /// once, through the storage) and queues the offer. Returns our id for it.
    ///
    /// This reads the whole file on the caller's thread: a driver that must not stall (an
    /// async task) calls [`prepare`] elsewhere and hands the result to [`Self::offer_file`].
    pub fn send_file(&mut self, path: &Path) -> Result<u64, SendFileError> {
        let prepared = prepare(&mut self.storage, path, self.config.chunk_size)?;
        Ok(self.offer_file(prepared))
    }

    /// Offers a file [`prepare`]d for sending (read from this transfer's storage later on, by
    /// its path) and queues the offer. Returns our id for it.
    pub fn offer_file(&mut self, prepared: Prepared) -> u64 {
        let Prepared {
            path,
            name,
            size,
            chunk_size,
            hashes,
            root,
        } = prepared;
        let id = self.next_id;
        self.next_id += 1;
        debug!(id, size, chunk_size, "offering a file");
        self.outgoing.insert(
            id,
            Outgoing {
                path,
                name: name.clone(),
                size,
                chunk_size,
                root,
                hashes,
                stage: SendStage::Offered,
                queue: VecDeque::new(),
                covered: 0,
                moved: 0,
                clock: Clock::new(),
            },
        );
        self.offer(id);
        self.events.push_back(FileEvent::Offering {
            id,
            name,
            size,
            hash: root,
        });
        id
    }

    /// Accepts the peer's offer `id` (`None`: the oldest one waiting). `Err` with a message
    /// for the user if there is no such offer.
    pub fn accept(&mut self, id: Option<u64>) -> Result<u64, String> {
        let id = self.waiting(id)?;
        self.start_receiving(id);
        Ok(id)
    }

    /// Declines the peer's offer `id` (`None`: the oldest one waiting), or stops receiving it.
    pub fn decline(&mut self, id: Option<u64>) -> Result<u64, String> {
        let id = match id {
            Some(id) if self.incoming.contains_key(&id) => id,
            Some(id) if self.finishing.values().any(|f| f.id == id) => {
                return Err(format!(
                    "file {id} cannot be declined now: every byte of it is in, and it is being \
                     saved"
                ));
            }
            Some(id) => match self.recent.iter().rev().find(|r| r.id == id) {
                Some(r) => {
                    return Err(format!(
                        "file {id} cannot be declined: it was received (saved as {})",
                        r.saved
                    ));
                }
                None => return Err(format!("no file offer {id}")),
            },
            None => self.waiting(None)?,
        };
        self.fail_incoming(id, "declined".into(), "declined");
        Ok(id)
    }

    /// Cancels our file `id` (`None`: the only one we send), offered or under way: the
    /// receiver hears CANCEL, ends its side and deletes its partial file (the sender gave the
    /// file up: nobody offers it again to resume from it), and we end ours
    /// ([`FileEvent::Failed`], reason `cancelled`). `Err` with a message for the user if we
    /// send no file `id`, or (`None`) none or several (named, so that the user can choose).
    ///
    /// A file whose every chunk went out may be in already: a receiver saving it when the
    /// CANCEL arrives keeps it (its DONE then finds no transfer here).
    pub fn cancel(&mut self, id: Option<u64>) -> Result<u64, String> {
        let id = match id {
            Some(id) if self.outgoing.contains_key(&id) => id,
            Some(id) => return Err(format!("no file {id} is being sent")),
            None => {
                let mut ids = self.outgoing.keys();
                match (ids.next(), ids.next()) {
                    (None, _) => return Err("no file is being sent".to_owned()),
                    (Some(&id), None) => id,
                    (Some(_), Some(_)) => {
                        let list: Vec<String> = self
                            .outgoing
                            .iter()
                            .map(|(id, o)| format!("{id} \"{}\"", o.name))
                            .collect();
                        return Err(format!(
                            "several files are being sent ({}): say which, /cancel ID",
                            list.join(", ")
                        ));
                    }
                }
            }
        };
        debug!(id, "the user cancels a file we send");
        self.fail_outgoing(id, "cancelled".to_owned(), "cancelled");
        Ok(id)
    }

    /// The offer `id`, or the oldest one waiting for an answer.
    fn waiting(&self, id: Option<u64>) -> Result<u64, String> {
        let open = |i: &Incoming| i.stage == RecvStage::Offered && !i.accepted;
        match id {
            Some(id) if self.incoming.get(&id).is_some_and(open) => Ok(id),
            Some(id) => Err(format!("no file offer {id} is waiting for an answer")),
            None => self
                .incoming
                .iter()
                .find(|(_, i)| open(i))
                .map(|(&id, _)| id)
                .ok_or_else(|| "no file offer is waiting for an answer".to_owned()),
        }
    }

    /// The link to the peer is up (again): offers every unfinished outgoing file again (the
    /// receiver resumes from what it holds verified).
    pub fn connected(&mut self) {
        let ids: Vec<u64> = self.outgoing.keys().copied().collect();
        for id in ids {
            self.offer(id);
        }
    }

    /// The link to the peer is down: stop sending; wait for its return. Messages queued for
    /// the old link are dropped (they were about its state).
    pub fn disconnected(&mut self) {
        self.control.clear();
        for o in self.outgoing.values_mut() {
            o.stage = SendStage::Offered;
            o.queue.clear();
        }
        for i in self.incoming.values_mut() {
            // The sender offers again once the link is back; an accepted file resumes.
            i.stage = RecvStage::Offered;
            i.hashes = Vec::new();
            i.have = Vec::new();
        }
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<FileEvent> {
        self.events.pop_front()
    }

    /// Whether [`Self::poll_transmit`] has something (control or, if `bulk`, bulk data).
    pub fn wants_transmit(&self, bulk: bool) -> bool {
        !self.control.is_empty()
            || (bulk
                && self.outgoing.values().any(|o| match o.stage {
                    SendStage::Hashes(_) => true,
                    SendStage::Sending => !o.queue.is_empty(),
                    SendStage::Offered => false,
                }))
    }

    /// The next message for the peer: control messages first, then (if `bulk`: the caller's
    /// window has room) chunk-hash lists and chunks, in transfer order.
    pub fn poll_transmit(&mut self, now: Instant, bulk: bool) -> Option<Transmit> {
        if let Some(m) = self.control.pop_front() {
            return Some(Transmit {
                data: m.encode(),
                bulk: false,
            });
        }
        if !bulk {
            return None;
        }
        let id = self.outgoing.iter().find_map(|(&id, o)| match o.stage {
            SendStage::Hashes(_) => Some(id),
            SendStage::Sending if !o.queue.is_empty() => Some(id),
            _ => None,
        })?;
        let msg = self.next_bulk(now, id)?;
        Some(Transmit {
            data: msg.encode(),
            bulk: true,
        })
    }

    fn next_bulk(&mut self, now: Instant, id: u64) -> Option<Msg> {
        let o = self.outgoing.get_mut(&id)?;
        if let SendStage::Hashes(first) = o.stage {
            let end = (first + MAX_HASHES_PER_MSG).min(o.hashes.len() as u64);
            let hashes = o.hashes[first as usize..end as usize].to_vec();
            o.stage = if end == o.hashes.len() as u64 {
                // The list is out: WANT comes next.
                SendStage::Offered
            } else {
                SendStage::Hashes(end)
            };
            // Waiting for WANT: `Offered` is not re-offered unless the link drops.
            return Some(Msg::Hashes { id, first, hashes });
        }
        let (start, end) = o.queue.pop_front()?;
        if start + 1 < end {
            o.queue.push_front((start + 1, end));
        }
        let len = wire::chunk_len(o.size, o.chunk_size, start) as usize;
        let mut buf = vec![0; len];
        let read = self
            .storage
            .read_source(&o.path, start * u64::from(o.chunk_size), &mut buf);
        let reason = match read {
            Ok(()) if wire::chunk_hash(&buf) == o.hashes[start as usize] => None,
            Ok(()) => Some("the file changed while it was being sent".to_owned()),
            Err(e) => Some(format!("cannot read {}: {e}", o.path.display())),
        };
        if let Some(reason) = reason {
            self.fail_outgoing(id, reason.clone(), &reason);
            return self.control.pop_front();
        }
        o.moved += len as u64;
        o.covered += len as u64;
        if o.clock.due(now) {
            let rate = o.clock.rate(now, o.moved);
            self.events.push_back(FileEvent::Progress {
                id,
                direction: Direction::Send,
                bytes: o.covered,
                total: o.size,
                rate,
            });
        }
        Some(Msg::Chunk {
            id,
            index: start,
            data: Bytes::from(buf),
        })
    }

    /// A file-layer message from the peer (it starts with [`wire::TAG`]). Anything invalid is
    /// dropped and counted; a peer that breaks the protocol within a transfer fails that
    /// transfer.
    pub fn handle_message(&mut self, now: Instant, data: &Bytes) {
        self.forget_received(now);
        let msg = match wire::Msg::decode(data) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "dropped an invalid file message");
                self.dropped += 1;
                return;
            }
        };
        match msg {
            Msg::Offer {
                id,
                size,
                chunk_size,
                root,
                name,
            } => self.on_offer(id, size, chunk_size, root, &name),
            Msg::Hashes { id, first, hashes } => self.on_hashes(id, first, hashes),
            Msg::Chunk { id, index, data } => self.on_chunk(now, id, index, &data),
            Msg::Cancel { id, reason } => {
                if self.incoming.contains_key(&id) {
                    let why = format!(
                        "cancelled by the sender: {}",
                        String::from_utf8_lossy(&reason)
                    );
                    self.abandon_incoming(id, why);
                } else {
                    self.dropped += 1;
                }
            }
            Msg::Accept { id } => match self.outgoing.get_mut(&id) {
                Some(o) if matches!(o.stage, SendStage::Offered) => {
                    o.stage = SendStage::Hashes(0);
                    if o.hashes.is_empty() {
                        // An empty file has no list: WANT (of nothing) comes at once.
                        o.stage = SendStage::Offered;
                    }
                }
                _ => self.dropped += 1,
            },
            Msg::Want { id, ranges } => self.on_want(id, ranges),
            Msg::Decline { id, reason } => {
                if self.outgoing.contains_key(&id) {
                    let why = format!(
                        "declined by the receiver: {}",
                        String::from_utf8_lossy(&reason)
                    );
                    self.end_outgoing(id, why);
                } else {
                    self.dropped += 1;
                }
            }
            Msg::Done { id } => match self.outgoing.remove(&id) {
                Some(o) => {
                    self.storage.close_source(&o.path);
                    self.events.push_back(FileEvent::Done {
                        id,
                        direction: Direction::Send,
                        name: o.name,
                        size: o.size,
                        hash: o.root,
                        moved: o.moved,
                        resumed: 0,
                    });
                }
                None => self.dropped += 1,
            },
        }
    }

    /// Gives the transfers finished since the last message their time to be forgotten, and
    /// forgets those whose time is up.
    fn forget_received(&mut self, now: Instant) {
        for r in &mut self.recent {
            r.until.get_or_insert(now + REMEMBER_FOR);
        }
        self.recent.retain(|r| r.until.is_none_or(|t| now < t));
    }

    fn offer(&mut self, id: u64) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            return;
        };
        o.stage = SendStage::Offered;
        o.queue.clear();
        self.control.push_back(Msg::Offer {
            id,
            size: o.size,
            chunk_size: o.chunk_size,
            root: o.root,
            name: o.name.as_bytes().to_vec(),
        });
    }

    fn on_offer(&mut self, id: u64, size: u64, chunk_size: u32, root: Hash, offered: &[u8]) {
        let name = name::sanitize(offered);
        let saving = |f: &Finishing| f.id == id && f.root == root && f.size == size;
        if self.finishing.values().any(saving) {
            // Offered again after a reconnect while we save it: DONE follows the save.
            debug!(
                id,
                "the sender offered a file being saved again: DONE follows"
            );
            return;
        }
        let received = |r: &Received| r.id == id && r.root == root && r.size == size;
        if let Some(r) = self.recent.iter().find(|r| received(r)) {
            // Offered again after a link that dropped before our DONE got through: we have
            // it (no second copy, no question to the user).
            debug!(id, saved = %r.saved, "the sender offered a file already received: DONE");
            self.control.push_back(Msg::Done { id });
            return;
        }
        if let Some(i) = self.incoming.get_mut(&id) {
            let same = i.root == root && i.size == size && i.chunk_size == chunk_size;
            if same && i.accepted {
                // Offered again after a reconnect: resume.
                debug!(id, "the sender offered an accepted file again: resuming");
                self.start_receiving(id);
                return;
            }
            if same {
                return; // Still waiting for the user.
            }
            // The peer restarted and reuses the id for another file.
            self.end_incoming(id, "replaced by another offer".into());
        }
        if self.incoming.len() >= MAX_INCOMING {
            self.control.push_back(Msg::Decline {
                id,
                reason: b"too many offers at once".to_vec(),
            });
            return;
        }
        let chunks = wire::chunk_count(size, chunk_size);
        self.incoming.insert(
            id,
            Incoming {
                name: name.clone(),
                size,
                chunk_size,
                root,
                chunks,
                stage: RecvStage::Offered,
                accepted: false,
                save_as: None,
                hashes: Vec::new(),
                have: Vec::new(),
                missing: chunks,
                held: 0,
                moved: 0,
                resumed: 0,
                clock: Clock::new(),
            },
        );
        let auto = self.config.auto_accept;
        self.events.push_back(FileEvent::Offered {
            id,
            name,
            size,
            hash: root,
            auto,
            key: self.peer_key.clone(),
        });
        if auto {
            self.start_receiving(id);
        }
    }

    /// Accepted (now, or earlier and offered again): choose where it goes and ask for the list.
    fn start_receiving(&mut self, id: u64) {
        if self.incoming.get(&id).is_some_and(|i| i.save_as.is_none()) {
            let Some(save_as) = self.free_name(id) else {
                let why = "no free name to save it under".to_owned();
                self.fail_incoming(id, why, "no free name");
                return;
            };
            if let Some(i) = self.incoming.get_mut(&id) {
                i.save_as = Some(save_as);
            }
        }
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        i.accepted = true;
        i.stage = RecvStage::Hashes;
        i.hashes = Vec::new();
        i.moved = 0;
        i.clock = Clock::new();
        self.control.push_back(Msg::Accept { id });
        if i.chunks == 0 {
            self.list_complete(id);
        }
    }

    /// The first of `name`, `name (1)`, … that exists neither as a file nor as a name another
    /// transfer saves under, and whose partial file is absent or a regular file. The partial
    /// file's name carries the root hash: one that exists is this file's, from an earlier
    /// attempt (a resume continues it); anything else there (a symbolic link someone planted, a
    /// directory) makes the name unusable.
    fn free_name(&mut self, id: u64) -> Option<String> {
        let i = self.incoming.get(&id)?;
        let (base, root) = (i.name.clone(), i.root);
        (0..MAX_ALTERNATIVES)
            .map(|n| name::alternative(&base, n))
            .find(|cand| {
                let taken = self
                    .incoming
                    .iter()
                    .any(|(&other, i)| other != id && i.save_as.as_deref() == Some(cand))
                    || self.finishing.values().any(|f| f.save_as == *cand);
                if taken || self.storage.exists(cand) {
                    return false;
                }
                let part = name::part_name(cand, &root);
                match self.storage.len(&part) {
                    Ok(_) => true,
                    Err(e) => {
                        warn!(id, error = %e, "the partial file's name is unusable: another name");
                        false
                    }
                }
            })
    }

    fn on_hashes(&mut self, id: u64, first: u64, hashes: Vec<Hash>) {
        let Some(i) = self.incoming.get_mut(&id) else {
            self.dropped += 1;
            return;
        };
        if i.stage != RecvStage::Hashes {
            self.dropped += 1;
            return;
        }
        let fits = first == i.hashes.len() as u64 && first + hashes.len() as u64 <= i.chunks;
        if !fits {
            let why = "the sender broke the protocol (chunk-hash list out of order)".to_owned();
            self.fail_incoming(id, why, "protocol error");
            return;
        }
        i.hashes.extend_from_slice(&hashes);
        if i.hashes.len() as u64 == i.chunks {
            self.list_complete(id);
        }
    }

    /// The chunk-hash list is complete: check it against the offered hash, then check what the
    /// partial file holds against it ([`Check`]: inline, or by the driver with
    /// [`Self::check_outside`]), and then ask for the rest.
    fn list_complete(&mut self, id: u64) {
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        if wire::root_hash(&i.hashes) != i.root {
            let why = "the chunk-hash list does not match the offered hash".to_owned();
            self.fail_incoming(id, why, "hash mismatch");
            return;
        }
        let Some(save_as) = i.save_as.clone() else {
            return;
        };
        let part = name::part_name(&save_as, &i.root);
        // What an earlier attempt wrote is trusted only chunk by chunk, against the list.
        let part_len = match self.storage.len(&part) {
            Ok(l) => l.unwrap_or(0),
            Err(e) => {
                let why = format!("cannot read {part}: {e}");
                self.fail_incoming(id, why, "cannot read the partial file");
                return;
            }
        };
        if part_len == 0 {
            // Nothing to read: every chunk is missing.
            let have = vec![false; i.chunks as usize];
            self.resume_from(id, &have);
            return;
        }
        let job = self.next_job;
        self.next_job += 1;
        i.stage = RecvStage::Checking(job);
        let check = Check {
            job,
            id,
            part,
            size: i.size,
            chunk_size: i.chunk_size,
            hashes: i.hashes.clone(),
        };
        if self.check_outside {
            debug!(
                id,
                job, part_len, "a partial file to resume from: the driver checks it"
            );
            self.checks.push_back(check);
        } else {
            let result = check.run(&mut self.storage);
            self.checked(&check, result);
        }
    }

    /// The partial file holds the chunks `have` says, verified: ask for the rest (WANT), or
    /// save the file if it holds them all.
    fn resume_from(&mut self, id: u64, have: &[bool]) {
        let Some(i) = self.incoming.get_mut(&id) else {
            return;
        };
        let Some(save_as) = i.save_as.as_deref() else {
            return;
        };
        let part = name::part_name(save_as, &i.root);
        i.have = have.to_vec();
        i.missing = 0;
        i.held = 0;
        for (c, &held) in have.iter().enumerate() {
            if held {
                i.held += wire::chunk_len(i.size, i.chunk_size, c as u64);
            } else {
                i.missing += 1;
            }
        }
        i.resumed = i.held;
        if i.held > 0 {
            debug!(id, resumed = i.held, "resuming from the partial file");
        }
        let ranges = missing_ranges(&i.have);
        i.stage = RecvStage::Receiving;
        self.control.push_back(Msg::Want { id, ranges });
        if i.missing == 0 {
            if i.chunks == 0 {
                // The empty file: its partial file is created here.
                if let Err(e) = self.storage.write(&part, 0, &[]) {
                    let why = format!("cannot write {part}: {e}");
                    self.fail_incoming(id, why, "write error");
                    return;
                }
            }
            self.complete(id);
        }
    }

    fn on_chunk(&mut self, now: Instant, id: u64, index: u64, data: &[u8]) {
        let Some(i) = self.incoming.get_mut(&id) else {
            self.dropped += 1;
            return;
        };
        if i.stage != RecvStage::Receiving || index >= i.chunks {
            self.dropped += 1;
            return;
        }
        let expect = wire::chunk_len(i.size, i.chunk_size, index);
        if data.len() as u64 != expect || wire::chunk_hash(data) != i.hashes[index as usize] {
            // Never written: the partial file holds only verified chunks.
            warn!(id, index, "a chunk does not match its hash");
            let why = format!("chunk {index} does not match its hash");
            self.fail_incoming(id, why, "bad chunk");
            return;
        }
        let Some(save_as) = i.save_as.as_deref() else {
            return;
        };
        let part = name::part_name(save_as, &i.root);
        if let Err(e) = self
            .storage
            .write(&part, index * u64::from(i.chunk_size), data)
        {
            let why = format!("cannot write {part}: {e}");
            self.fail_incoming(id, why, "cannot save the file");
            return;
        }
        i.moved += expect;
        if !std::mem::replace(&mut i.have[index as usize], true) {
            i.missing -= 1;
            i.held += expect;
        }
        if i.missing == 0 {
            self.complete(id);
        } else if i.clock.due(now) {
            let rate = i.clock.rate(now, i.moved);
            self.events.push_back(FileEvent::Progress {
                id,
                direction: Direction::Receive,
                bytes: i.held,
                total: i.size,
                rate,
            });
        }
    }

    /// Every chunk is held and verified: the partial file is to become the file, under the
    /// name chosen on accepting, or the first free one if that one appeared meanwhile
    /// ([`Finish`]). It runs inline, or (with [`Self::finish_outside`]) goes to the driver;
    /// either way DONE waits for [`Self::finished`].
    fn complete(&mut self, id: u64) {
        let Some(save_as) = self.incoming.get(&id).and_then(|i| i.save_as.clone()) else {
            return;
        };
        let Some(Incoming {
            name,
            size,
            root,
            moved,
            resumed,
            ..
        }) = self.incoming.remove(&id)
        else {
            return;
        };
        let part = name::part_name(&save_as, &root);
        // Whoever runs the finish opens the partial file itself.
        self.storage.close(&part);
        let job = self.next_job;
        self.next_job += 1;
        let finish = Finish {
            job,
            id,
            part,
            name: save_as.clone(),
            offered: name.clone(),
            size,
        };
        self.finishing.insert(
            job,
            Finishing {
                id,
                name,
                save_as,
                size,
                root,
                moved,
                resumed,
            },
        );
        if self.finish_outside {
            debug!(id, job, "every chunk held: the driver saves the file");
            self.finishes.push_back(finish);
        } else {
            let result = finish.run(&mut self.storage);
            self.finished(&finish, result);
        }
    }

    fn on_want(&mut self, id: u64, ranges: Vec<(u64, u64)>) {
        let Some(o) = self.outgoing.get_mut(&id) else {
            self.dropped += 1;
            return;
        };
        let chunks = o.hashes.len() as u64;
        o.queue = ranges
            .into_iter()
            .map(|(s, e)| (s, e.min(chunks)))
            .filter(|(s, e)| s < e)
            .collect();
        let wanted: u64 = o
            .queue
            .iter()
            .flat_map(|&(s, e)| s..e)
            .map(|c| wire::chunk_len(o.size, o.chunk_size, c))
            .sum();
        o.covered = o.size - wanted.min(o.size);
        o.moved = 0;
        o.clock = Clock::new();
        o.stage = SendStage::Sending;
    }

    /// Ends an incoming transfer on our side, telling the sender.
    fn fail_incoming(&mut self, id: u64, reason: String, wire_reason: &str) {
        self.control.push_back(Msg::Decline {
            id,
            reason: reason_bytes(wire_reason),
        });
        self.end_incoming(id, reason);
    }

    /// The sender gave an incoming transfer up (CANCEL): it ends, and its partial file is
    /// deleted rather than kept for a resume that will not come.
    fn abandon_incoming(&mut self, id: u64, reason: String) {
        let part = self
            .incoming
            .get(&id)
            .and_then(|i| i.save_as.as_deref().map(|s| name::part_name(s, &i.root)));
        self.end_incoming(id, reason);
        if let Some(part) = part
            && let Err(e) = self.storage.remove(&part)
        {
            warn!(id, error = %e, "cannot delete the partial file of a cancelled transfer");
        }
    }

    fn end_incoming(&mut self, id: u64, reason: String) {
        if let Some(i) = self.incoming.remove(&id) {
            if let Some(s) = &i.save_as {
                self.storage.close(&name::part_name(s, &i.root));
            }
            self.events.push_back(FileEvent::Failed {
                id,
                direction: Direction::Receive,
                name: i.name,
                reason,
            });
        }
    }

    /// Ends an outgoing transfer on our side, telling the receiver.
    fn fail_outgoing(&mut self, id: u64, reason: String, wire_reason: &str) {
        self.control.push_back(Msg::Cancel {
            id,
            reason: reason_bytes(wire_reason),
        });
        self.end_outgoing(id, reason);
    }

    fn end_outgoing(&mut self, id: u64, reason: String) {
        if let Some(o) = self.outgoing.remove(&id) {
            self.storage.close_source(&o.path);
            self.events.push_back(FileEvent::Failed {
                id,
                direction: Direction::Send,
                name: o.name,
                reason,
            });
        }
    }
}

/// The `[start, end)` ranges of chunks not held, at most [`MAX_RANGES`] of them (beyond that,
/// the last range runs to the end: some held chunks are sent again, which is harmless).
fn missing_ranges(have: &[bool]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (c, &h) in have.iter().enumerate() {
        let c = c as u64;
        if h {
            continue;
        }
        match ranges.last_mut() {
            Some((_, end)) if *end == c => *end = c + 1,
            _ => ranges.push((c, c + 1)),
        }
    }
    if ranges.len() as u64 > MAX_RANGES {
        let keep = MAX_RANGES as usize - 1;
        let start = ranges[keep].0;
        let end = ranges.last().map_or(start, |r| r.1);
        ranges.truncate(keep);
        ranges.push((start, end));
    }
    ranges
}
