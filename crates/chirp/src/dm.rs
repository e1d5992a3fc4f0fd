//! DM file transfer in `chirp connect` (`/send NICK PATH`, `/accept`, `/decline`; PROTOCOL.md
//! "Files between users"): the offer goes through the server as a chat request; once the
//! recipient accepts, both clients meet through the server's rendezvous and run the peer
//! file transfer (`chirp_files`, driven by a `chirp_peer::Session`) over an end-to-end
//! connection from the socket of their chat session: a [`crate::via::Link`], as `chirp peer
//! --via` uses. The server never sees the file.
//!
//! The sender hashes the file before the offer (the offer names the hash) on tokio's
//! blocking pool ([`crate::files::FileWork`]), as `chirp peer`'s `/send` does, so that chat
//! typed meanwhile goes out at once; the peer connection's offer reuses that hash. The
//! receiver saves the file (fsync and rename) there too.
//!
//! What it says goes to standard output (line and JSON mode) or, in the terminal UI, to the
//! bridge as [`DmNote`]s ([`DmFiles::take_notes`]).
//!
//! One transfer runs at a time (one peer connection and one relay per endpoint); transfers
//! accepted meanwhile wait their turn. The receiver accepts on the peer connection only the
//! file it accepted through the server (the same size and root hash) and declines anything
//! else, so a sender cannot pass more than the server's limit let through.
//!
//! A transfer whose peer connection is lost (either client killed or restarted, the path
//! dark for the idle timeout) resumes (PROTOCOL.md "Files between users", "Resuming"): both
//! sides abort that link; the sender offers the file again through the server until the
//! recipient answers ([`chirp_client::dm_resume::Reoffers`]), and the receiver accepts a
//! file it accepted before without asking ([`chirp_client::dm_resume::Accepted`]). The new
//! peer session asks only for what the verified partial file lacks.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chirp_chat::client::Session as ChatSession;
use chirp_chat::names::fold;
use chirp_chat::wire::ServerMsg;
use chirp_client::dm_resume::{Accepted, Due, REOFFER_EVERY, RESUME_WAIT, Reoffers};
use chirp_client::files::{DmNote, FileCommand};
use chirp_files::{Direction, FileEvent, FsStorage, Prepared, hash_hex};
use chirp_keys::{Fingerprint, PublicKey};
use chirp_peer::rendezvous::Answer;
use chirp_peer::{Input as SessionInput, Output as SessionOutput, Report, Transport};
use chirp_proto::Event;
use chirp_transport::Handle;
use chirp_tui::safe::line as safe;
use indicatif::HumanBytes;
use serde_json::json;
use tracing::debug;

use crate::files::FileWork;
use crate::output::{Output, print_event};
use crate::via::{Link, LinkTo};

/// How long a finished transfer's peer connection may take to close before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// How long an accepted transfer waits for the server to introduce the other side (which asks
/// as soon as it hears of the answer, unless it left meanwhile).
const MEET_WAIT: Duration = Duration::from_secs(60);

/// A command of line mode this module answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Send {
        to: String,
        path: String,
    },
    Accept(Option<u64>),
    Decline(Option<u64>),
    /// Stop sending a file of ours (`None`: the only one).
    Cancel(Option<u64>),
    /// The command, misused: the usage to show.
    Usage(&'static str),
}

impl From<FileCommand> for Command {
    fn from(c: FileCommand) -> Self {
        match c {
            FileCommand::Send { to, path } => Command::Send { to, path },
            FileCommand::Accept(id) => Command::Accept(id),
            FileCommand::Decline(id) => Command::Decline(id),
            FileCommand::Cancel(id) => Command::Cancel(id),
        }
    }
}

const SEND_USAGE: &str = "usage: /send NICK PATH (sends a file to NICK, who must be online)";

/// `/send`, `/accept`, `/decline`, `/cancel`, or `None` for any other line.
pub(crate) fn command(line: &str) -> Option<Command> {
    let line = line.trim();
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let id = |usage| match rest {
        "" => Command::Accept(None),
        n => n
            .parse()
            .map_or(Command::Usage(usage), |n| Command::Accept(Some(n))),
    };
    Some(match cmd {
        "/send" => match rest.split_once(' ') {
            Some((to, path)) if !path.trim().is_empty() => Command::Send {
                to: to.to_owned(),
                path: path.trim().to_owned(),
            },
            _ => Command::Usage(SEND_USAGE),
        },
        "/accept" => id("usage: /accept [ID] (the oldest offer without an ID)"),
        "/decline" => match id("usage: /decline [ID] (the oldest offer without an ID)") {
            Command::Accept(n) => Command::Decline(n),
            other => other,
        },
        "/cancel" => match id("usage: /cancel [ID] (the only file being sent without an ID)") {
            Command::Accept(n) => Command::Cancel(n),
            other => other,
        },
        _ => return None,
    })
}

/// One file, either way.
#[derive(Debug, Clone)]
struct Job {
    /// Our number for it (what the user types and sees).
    local: u64,
    /// The offer's id on the wire (the sender's).
    wire: u64,
    /// The other user.
    nick: String,
    name: String,
    size: u64,
    hash: [u8; 32],
    /// Ours to send (its path), or theirs to receive (`None`).
    path: Option<PathBuf>,
    /// Ours to send: the file as hashed for the offer, which the peer connection's offer
    /// reuses (boxed: its chunk hashes can be long).
    prepared: Option<Box<Prepared>>,
    /// Theirs to receive: the sender's static key as the server named it in the offer
    /// (`None` from an older server). The `meet` for this transfer must name the same key.
    key: Option<PublicKey>,
}

impl Job {
    fn direction(&self) -> Direction {
        if self.path.is_some() {
            Direction::Send
        } else {
            Direction::Receive
        }
    }
}

/// The transfer under way.
struct Active {
    job: Job,
    link: Link,
    /// The peer session's file id of this job, once it is offered there.
    peer_id: Option<u64>,
    /// Finished (done or failed): the peer connection closes, until then.
    closing: Option<Instant>,
    /// Given up if the server has not introduced the other side by then.
    meet_by: Instant,
    /// The peer connection was lost before the file arrived (why): the link ends, and the
    /// transfer waits to resume ([`DmFiles::interrupted`]).
    lost: Option<String>,
    /// The sender offered this file again (it lost this transfer's connection): the link
    /// ends, and the new offer, accepted already, takes over.
    superseded: bool,
}

/// What `chirp connect` needs to know for DM file transfers.
pub(crate) struct Setup {
    pub(crate) json: bool,
    pub(crate) bind: SocketAddr,
    pub(crate) downloads: PathBuf,
    pub(crate) known_keys: PathBuf,
    pub(crate) idle_timeout: Duration,
    /// The terminal UI shows what is said ([`DmFiles::take_notes`]); else it is printed.
    pub(crate) ui: bool,
    /// `--relay-only`: the peer connection goes through the server's relay, never direct,
    /// and the server does not give the other side our address.
    pub(crate) relay_only: bool,
    /// `--auto-accept-from`: offers whose sender's key (as the server names it) has one of
    /// these fingerprints are accepted without asking.
    pub(crate) auto_accept_from: Vec<Fingerprint>,
}

/// A `/send` whose file is being hashed (on the blocking pool).
struct Hashing {
    local: u64,
    to: String,
    path: PathBuf,
}

/// The DM file transfers of one `chirp connect`.
pub(crate) struct DmFiles {
    setup: Setup,
    next_local: u64,
    /// Our offers waiting for an answer.
    offered: Vec<Job>,
    /// Our `/send`s whose file is being hashed.
    hashing: Vec<Hashing>,
    work: FileWork,
    /// Offers to us waiting for `/accept` or `/decline`.
    waiting: Vec<Job>,
    /// Accepted both ways, waiting for the active transfer to end.
    queued: VecDeque<Job>,
    active: Option<Active>,
    /// What to show in the UI, in order (UI mode only).
    notes: Vec<DmNote>,
    /// Our files whose transfer was interrupted, offered again until the recipient answers.
    reoffers: Reoffers,
    /// Files we accepted and have not received yet: offered again by the same nick with the
    /// same key, they are accepted without asking.
    accepted: Accepted,
}

impl DmFiles {
    pub(crate) fn new(setup: Setup) -> Self {
        let work = FileWork::new(setup.downloads.clone());
        DmFiles {
            setup,
            next_local: 1,
            offered: Vec::new(),
            hashing: Vec::new(),
            work,
            waiting: Vec::new(),
            queued: VecDeque::new(),
            active: None,
            notes: Vec::new(),
            reoffers: Reoffers::default(),
            accepted: Accepted::default(),
        }
    }

    /// What the UI is to show since the last call (nothing in line mode: it was printed).
    pub(crate) fn take_notes(&mut self) -> Vec<DmNote> {
        std::mem::take(&mut self.notes)
    }

    fn out(&self) -> Output {
        Output {
            json: self.setup.json,
            path: None,
        }
    }

    /// How a transfer with `nick` goes, or (`None`) a command's answer.
    fn status(&mut self, nick: Option<&str>, text: &str) {
        if self.setup.ui {
            self.notes.push(DmNote::Status {
                nick: nick.map(str::to_owned),
                text: safe(text).into_owned(),
            });
        } else {
            self.out().status(text);
        }
    }

    fn error(&mut self, text: &str) {
        if self.setup.ui {
            self.notes.push(DmNote::Error(safe(text).into_owned()));
        } else {
            self.out().error(text);
        }
    }

    /// An event of `job`'s transfer, under our number for it.
    fn file_event(&mut self, job: &Job, e: FileEvent) {
        let e = renumber(e, job.local);
        if self.setup.ui {
            self.notes.push(DmNote::File {
                nick: job.nick.clone(),
                event: e,
            });
        } else {
            crate::files::print(self.out(), &e);
        }
    }

    /// A transfer that failed (or was refused, declined): `code` for scripts.
    fn failed(&mut self, job: &Job, code: &str, reason: &str) {
        if self.setup.ui {
            let e = FileEvent::Failed {
                id: job.local,
                direction: job.direction(),
                name: job.name.clone(),
                reason: reason.to_owned(),
            };
            return self.notes.push(DmNote::File {
                nick: job.nick.clone(),
                event: e,
            });
        }
        print_event(
            self.setup.json,
            || {
                format!(
                    "! file {} \"{}\" ({} {}): {}",
                    job.local,
                    safe(&job.name),
                    if job.path.is_some() { "to" } else { "from" },
                    safe(&job.nick),
                    safe(reason)
                )
            },
            json!({"type": "file_failed", "direction": job.direction().as_str(), "id": job.local,
                   "nick": job.nick, "name": job.name, "code": code, "reason": reason}),
        );
    }

    /// A transfer is under way, waits to start or to resume, or a file is being hashed for an
    /// offer.
    pub(crate) fn busy(&self) -> bool {
        self.active.is_some()
            || !self.queued.is_empty()
            || !self.hashing.is_empty()
            || !self.reoffers.is_empty()
    }

    /// A typed command.
    pub(crate) fn command(&mut self, session: &mut ChatSession, cmd: Command) {
        match cmd {
            Command::Usage(u) => self.error(u),
            Command::Send { to, path } => self.send(to, Path::new(&path)),
            Command::Accept(_) | Command::Decline(_) if self.waiting.is_empty() => {
                self.error("no file offer waits for an answer");
            }
            Command::Accept(id) => self.answer(session, id, true),
            Command::Decline(id) => self.answer(session, id, false),
            Command::Cancel(id) => self.cancel(id),
        }
    }

    /// `/cancel [ID]`: stops sending our file `id` (`None`: the only one), wherever it is:
    /// being hashed, offered (or offered again after an interruption: [`Reoffers`] forgets
    /// it), waiting its turn, or under way. Under way, its peer session sends CANCEL (the
    /// recipient deletes its partial file) and says `file_failed` (`cancelled`), and the
    /// connection closes as after any transfer, so nothing is offered again. Before that, the
    /// offer through the server is not taken back (the protocol has no way to): a later
    /// answer to it finds nothing here.
    fn cancel(&mut self, id: Option<u64>) {
        // A transfer that ended (its connection closing) is no longer ours to cancel.
        let active = self
            .active
            .as_ref()
            .filter(|a| a.closing.is_none())
            .map(|a| &a.job);
        // Ours, in the order they were sent: (number, name, nick).
        let mut ours: Vec<(u64, String, String)> = self
            .hashing
            .iter()
            .map(|h| {
                let name = h.path.file_name().map_or_else(
                    || h.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                (h.local, name, h.to.clone())
            })
            .chain(
                self.offered
                    .iter()
                    .chain(&self.queued)
                    .chain(active)
                    .filter(|j| j.path.is_some())
                    .map(|j| (j.local, j.name.clone(), j.nick.clone())),
            )
            .collect();
        ours.sort_by_key(|o| o.0);
        let local = match id {
            Some(n) if ours.iter().any(|o| o.0 == n) => n,
            Some(n) => return self.error(&format!("no file {n} is being sent")),
            None => match &ours[..] {
                [] => return self.error("no file is being sent"),
                [one] => one.0,
                several => {
                    let list: Vec<String> = several
                        .iter()
                        .map(|(n, name, nick)| format!("{n} \"{name}\" to {nick}"))
                        .collect();
                    let text = format!(
                        "several files are being sent ({}): say which, /cancel ID",
                        list.join(", ")
                    );
                    return self.error(&text);
                }
            },
        };
        if let Some(at) = self.hashing.iter().position(|h| h.local == local) {
            // Its hash, when it comes, finds no `/send` waiting for it.
            let h = self.hashing.remove(at);
            return self.status(
                None,
                &format!("file {local} ({}) cancelled", h.path.display()),
            );
        }
        if let Some(a) = self.active.as_mut().filter(|a| a.job.local == local) {
            if let (Some(peer), Some(peer_id)) = (a.link.peer(), a.peer_id) {
                // The session says `file_failed` (and the receiver hears CANCEL); the
                // connection then closes (`on_file`).
                peer.handle_input(now(), SessionInput::CancelFile(Some(peer_id)));
                return;
            }
            // Not connected to the recipient yet: there is nothing to tell them.
            let job = a.job.clone();
            self.failed(&job, "cancelled", "cancelled");
            return self.finish(now());
        }
        let job = match self.offered.iter().position(|j| j.local == local) {
            Some(at) => {
                // Offered again no more, should it be waiting to resume.
                self.reoffers.answered(local);
                Some(self.offered.remove(at))
            }
            None => self
                .queued
                .iter()
                .position(|j| j.local == local)
                .and_then(|at| self.queued.remove(at)),
        };
        if let Some(job) = job {
            self.failed(&job, "cancelled", "cancelled");
        }
    }

    /// `/send`: the file is hashed on the blocking pool; [`Self::hashed`] makes the offer.
    fn send(&mut self, to: String, path: &Path) {
        if let Err(e) = chirp_chat::names::nick(&to) {
            return self.error(&format!("/send {to}: {e}"));
        }
        let local = self.next_local;
        self.next_local += 1;
        self.hashing.push(Hashing {
            local,
            to,
            path: path.to_owned(),
        });
        self.work
            .hash(path.to_owned(), chirp_files::Config::default().chunk_size);
    }

    /// The next file hashed for a `/send`, or received file saved (never ends: pass it to
    /// [`Self::on_hashed`]).
    pub(crate) async fn hashed(&mut self) -> SessionInput {
        self.work.recv().await
    }

    /// A file was hashed for a `/send`: the offer goes to the server. (A received file saved
    /// goes to the active transfer's peer session.)
    pub(crate) fn on_hashed(&mut self, session: &mut ChatSession, input: SessionInput) {
        let SessionInput::FileHashed { path, result } = input else {
            // A received file saved: the active transfer's peer session asked for it.
            if let Some(peer) = self.active.as_mut().and_then(|a| a.link.peer()) {
                peer.handle_input(now(), input);
            }
            return;
        };
        // Two `/send`s of one file hash the same: the first waiting takes it.
        let Some(at) = self.hashing.iter().position(|h| h.path == path) else {
            return;
        };
        let Hashing { local, to, path } = self.hashing.remove(at);
        let prepared = match result {
            Ok(p) => p,
            Err(e) => return self.error(&format!("cannot send {}: {e}", path.display())),
        };
        // The same file to the same user, interrupted and waiting to resume: that transfer
        // is offered again now (two of one file would take each other's place at the
        // receiver, which accepts a renewed offer in place of the one under way).
        let who = fold(&to);
        let waiting = self.offered.iter().find(|j| {
            j.hash == prepared.root && fold(&j.nick) == who && self.reoffers.contains(j.local)
        });
        if let Some(j) = waiting {
            let text = format!(
                "file {} to {} was interrupted and waits to resume: offering it again now",
                j.local,
                safe(&j.nick)
            );
            let (nick, wire, name, size) = (j.nick.clone(), j.wire, j.name.clone(), j.size);
            session.file_offer(nick.clone(), wire, name, size, hash_hex(&prepared.root));
            return self.status(Some(&nick), &text);
        }
        let wire = wire_id();
        let (name, size, hash) = (prepared.name.clone(), prepared.size, prepared.root);
        let job = Job {
            local,
            wire,
            nick: to.clone(),
            name: name.clone(),
            size,
            hash,
            path: Some(path),
            prepared: Some(prepared),
            key: None,
        };
        session.file_offer(to.clone(), wire, name.clone(), size, hash_hex(&hash));
        if self.setup.ui {
            let e = FileEvent::Offering {
                id: local,
                name: name.clone(),
                size,
                hash,
            };
            self.file_event(&job, e);
            let text = format!("file {local} is sent once {} accepts it", safe(&to));
            self.status(Some(&to), &text);
        } else {
            print_event(
                self.setup.json,
                || {
                    format!(
                        "* offering file {} \"{}\" ({}) to {}; it is sent once they accept",
                        job.local,
                        safe(&name),
                        HumanBytes(size),
                        safe(&to)
                    )
                },
                json!({"type": "file_offer", "direction": "send", "id": job.local, "to": to,
                       "name": name, "size": size, "hash": hash_hex(&hash)}),
            );
        }
        self.offered.push(job);
    }

    fn answer(&mut self, session: &mut ChatSession, id: Option<u64>, accept: bool) {
        let at = match id {
            None => Some(0),
            Some(n) => self.waiting.iter().position(|j| j.local == n),
        };
        let Some(at) = at else {
            return self.error(&format!("no file offer {} waits", id.unwrap_or(0)));
        };
        let job = self.waiting.remove(at);
        if !accept {
            session.file_answer(job.nick.clone(), job.wire, false);
            if self.setup.ui {
                let reason = "declined".to_owned();
                return self.failed(&job, "declined", &reason);
            }
            return self.status(None, &format!("declined file {}", job.local));
        }
        self.accept(session, job);
    }

    /// Accepts `job`, an offer to us: the answer goes to the sender, and the transfer waits
    /// its turn.
    fn accept(&mut self, session: &mut ChatSession, job: Job) {
        session.file_answer(job.nick.clone(), job.wire, true);
        let text = format!(
            "accepted file {} from {}; connecting to them end to end",
            job.local,
            safe(&job.nick)
        );
        self.status(Some(&job.nick), &text);
        // Should the transfer be interrupted, the sender's next offer of it is taken as is.
        let from = fold(&job.nick);
        self.accepted
            .remember(now(), job.local, &from, job.key, job.size, job.hash);
        self.queued.push_back(job);
    }

    /// A message of the server about files (`true`), or not ours (`false`).
    pub(crate) fn on_server(&mut self, session: &mut ChatSession, m: &ServerMsg) -> bool {
        match m {
            ServerMsg::FileOffer {
                from,
                id,
                name,
                size,
                hash,
                key,
            } => {
                let Some(hash) = parse_hash(hash) else {
                    // The server checks hashes: an older or hostile one. Dropped.
                    debug!(%from, "a file offer with a malformed hash; dropped");
                    return true;
                };
                // The server names the sender's key as hex digits; anything else is a hostile
                // server's, and the offer is dropped rather than shown without its key.
                let key = match key.as_deref().map(PublicKey::from_hex) {
                    None => None,
                    Some(Some(k)) => Some(k),
                    Some(None) => {
                        debug!(%from, "a file offer with a malformed key; dropped");
                        return true;
                    }
                };
                // Under the next number, should it be a new offer.
                let job = Job {
                    local: self.next_local,
                    wire: *id,
                    nick: from.clone(),
                    name: name.clone(),
                    size: *size,
                    hash,
                    path: None,
                    prepared: None,
                    key,
                };
                if self.offered_again(session, &job) {
                    return true;
                }
                self.next_local += 1;
                self.offered(session, job);
            }
            ServerMsg::FileAnswer { from, id, accept } => {
                let fold = chirp_chat::names::fold(from);
                let Some(at) = self
                    .offered
                    .iter()
                    .position(|j| j.wire == *id && chirp_chat::names::fold(&j.nick) == fold)
                else {
                    // Another device's offer, or an answer given twice.
                    return true;
                };
                let job = self.offered.remove(at);
                let again = if self.reoffers.answered(job.local) {
                    " again: resuming from what they hold"
                } else {
                    ""
                };
                if *accept {
                    let text = format!(
                        "{} accepted file {}{again}; connecting to them end to end",
                        safe(from),
                        job.local
                    );
                    self.status(Some(&job.nick), &text);
                    self.queued.push_back(job);
                } else {
                    self.failed(&job, "declined", &format!("{from} declined it"));
                }
            }
            ServerMsg::FileRefused {
                to,
                id,
                code,
                message,
            } => {
                let fold = chirp_chat::names::fold(to);
                let Some(at) = self
                    .offered
                    .iter()
                    .position(|j| j.wire == *id && chirp_chat::names::fold(&j.nick) == fold)
                else {
                    return true;
                };
                // An interrupted transfer waits for the recipient to come back: its offer is
                // made again until then (or until it is given up).
                let local = self.offered[at].local;
                if code == chirp_chat::wire::code::OFFLINE && self.reoffers.contains(local) {
                    debug!(
                        local,
                        "the recipient is still offline; offering again later"
                    );
                    return true;
                }
                let job = self.offered.remove(at);
                self.reoffers.answered(job.local);
                self.failed(&job, code, message);
            }
            ServerMsg::MeetWait { ttl_ms, .. } => {
                if let Some(a) = self.active.as_mut() {
                    a.link.waiting(now(), Duration::from_millis(*ttl_ms));
                }
            }
            ServerMsg::Meet {
                nick,
                key,
                addr,
                local,
                you,
                relay,
            } => {
                let Some(a) = self.active.as_mut() else {
                    return true;
                };
                if let Err(e) = check_meet_key(&a.job, nick, key) {
                    let job = a.job.clone();
                    self.failed(&job, "key_mismatch", &e);
                    self.finish(now());
                    return true;
                }
                let answer = Answer {
                    nick,
                    key,
                    addr: *addr,
                    local,
                    you: *you,
                    relay: relay.as_deref(),
                };
                let mut reports = Vec::new();
                let result = a.link.introduced(now(), &answer, &mut reports);
                let job = a.job.clone();
                match result {
                    Ok(()) => {
                        if let Some(peer) = a.link.peer() {
                            let storage = FsStorage::new(self.setup.downloads.clone());
                            peer.enable_files(Box::new(storage), Vec::new());
                            // The offer reuses the hash made for the server's offer
                            // (`SessionOutput::HashFile` is answered with it in `pump`).
                            peer.hash_files_outside();
                            peer.check_files_outside();
                            peer.finish_files_outside();
                            if let Some(path) = &job.path {
                                peer.handle_input(now(), SessionInput::SendFile(path.clone()));
                            }
                        }
                        self.show_reports(&job, reports);
                    }
                    Err(e) => {
                        self.show_reports(&job, reports);
                        self.failed(&job, "meet", &e);
                        self.finish(now());
                    }
                }
            }
            _ => return false,
        }
        true
    }

    /// A new offer to us: shown, and accepted at once if the server named a sender's key that
    /// `--auto-accept-from` lists (an offer without a key, from an older server, never is);
    /// else it waits for `/accept` or `/decline`.
    fn offered(&mut self, session: &mut ChatSession, job: Job) {
        let fingerprint = job.key.map(|k| k.fingerprint());
        let auto = trusted(&self.setup.auto_accept_from, job.key.as_ref());
        if self.setup.ui {
            let e = FileEvent::Offered {
                id: job.local,
                name: job.name.clone(),
                size: job.size,
                hash: job.hash,
                auto,
                key: fingerprint.map(|f| f.to_string()),
            };
            self.file_event(&job, e);
        } else {
            let then = if auto {
                "accepted (trusted key)".to_owned()
            } else {
                format!("/accept {} or /decline {}", job.local, job.local)
            };
            let by = match fingerprint {
                Some(f) => format!(" (key {f})"),
                None => String::new(),
            };
            print_event(
                self.setup.json,
                || {
                    format!(
                        "* {}{by} offers file {}: \"{}\" ({}, BLAKE3 {}…): {then}",
                        safe(&job.nick),
                        job.local,
                        safe(&job.name),
                        HumanBytes(job.size),
                        &hash_hex(&job.hash)[..16],
                    )
                },
                json!({"type": "file_offer", "direction": "receive", "id": job.local,
                       "from": job.nick, "key": fingerprint.map(|f| f.to_string()),
                       "name": job.name, "size": job.size, "hash": hash_hex(&job.hash),
                       "auto": auto}),
            );
        }
        if auto {
            self.accept(session, job);
        } else {
            self.waiting.push(job);
        }
    }

    /// `offer` (an offer to us, under the number a new one would get), if of a file we know
    /// (`true`; `false`: a new offer, for the user to answer):
    ///
    /// - a repeat of an offer waiting for an answer, queued or under way (the sender of an
    ///   interrupted file offers it until it is answered): nothing to do;
    /// - another offer of a file waiting for an answer: the answer goes to the latest;
    /// - an offer again of a file we accepted and have not received (the sender lost its
    ///   transfer, or restarted): accepted without asking, under the number it had, and it
    ///   takes the place of any transfer of it still under way. The new peer session resumes
    ///   from the verified partial file.
    fn offered_again(&mut self, session: &mut ChatSession, offer: &Job) -> bool {
        let (from, wire, size, hash) = (offer.nick.as_str(), offer.wire, offer.size, offer.hash);
        let who = fold(from);
        let same_offer = |j: &Job| j.wire == wire && fold(&j.nick) == who;
        let active = self.active.as_ref().map(|a| &a.job);
        if self
            .waiting
            .iter()
            .chain(&self.queued)
            .chain(active)
            .any(same_offer)
        {
            return true;
        }
        let same_file =
            |j: &Job| j.path.is_none() && j.size == size && j.hash == hash && fold(&j.nick) == who;
        if let Some(j) = self.waiting.iter_mut().find(|j| same_file(j)) {
            j.wire = wire;
            j.key = offer.key;
            return true;
        }
        // Only from the key it was accepted from (as the server names it).
        let key = offer.key.as_ref();
        let Some(local) = self.accepted.accepted(now(), &who, key, size, hash) else {
            return false;
        };
        // The sender gave up any earlier attempt at it.
        self.queued.retain(|j| !same_file(j));
        if let Some(a) = self.active.as_mut().filter(|a| same_file(&a.job)) {
            a.superseded = true;
        }
        let job = Job {
            local,
            ..offer.clone()
        };
        session.file_answer(job.nick.clone(), wire, true);
        let text = format!(
            "{} offers file {local} again, accepted earlier: resuming from what we hold",
            safe(from)
        );
        if self.setup.ui {
            self.status(Some(from), &text);
        } else {
            print_event(
                self.setup.json,
                || format!("* {text}"),
                json!({"type": "file_offer", "direction": "receive", "id": local, "from": from,
                       "key": job.key.map(|k| k.fingerprint().to_string()), "name": job.name,
                       "size": size, "hash": hash_hex(&hash), "auto": true, "resume": true}),
            );
        }
        self.queued.push_back(job);
        true
    }

    /// The active transfer's peer connection was lost, or the sender offered its file again:
    /// the link ends. A file of ours that was lost is offered again through the server
    /// ([`Reoffers`]) until the recipient answers; a file we receive waits for that offer.
    async fn interrupted(&mut self, handle: &Handle) -> anyhow::Result<()> {
        let Some(mut a) = self.active.take() else {
            return Ok(());
        };
        // Its connection, if still open (the sender offered again before it timed out), is
        // aborted: the transport would hand the next transfer with that peer the same one.
        // Nothing else the session asks is carried out (after a loss, its attempt to
        // reconnect to where the peer was).
        if let Some(peer) = a.link.peer() {
            peer.handle_input(now(), SessionInput::Interrupt);
            while let Some(out) = peer.poll_output() {
                if let SessionOutput::Transport(t @ Transport::Abort { .. }) = out {
                    crate::peer::execute(handle, t).await?;
                }
            }
        }
        a.link.end(handle).await?;
        let Some(reason) = a.lost.filter(|_| !a.superseded) else {
            return Ok(());
        };
        let mut job = a.job;
        let (local, nick, name) = (job.local, safe(&job.nick).into_owned(), safe(&job.name));
        let sending = job.path.is_some();
        let text = if sending {
            let now = now();
            let left = self
                .reoffers
                .lost(now, local)
                .saturating_duration_since(now);
            format!(
                "file {local} \"{name}\" to {nick} interrupted: {reason}; offering it again \
                 every {} s for up to {} min, until {nick} takes it back and it resumes from \
                 what they hold",
                REOFFER_EVERY.as_secs(),
                left.as_secs().div_ceil(60)
            )
        } else {
            format!(
                "file {local} \"{name}\" from {nick} interrupted: {reason}; the partial file \
                 is kept, and the transfer resumes when {nick} offers it again (accepted \
                 without asking)"
            )
        };
        if self.setup.ui {
            self.status(Some(&job.nick), &text);
        } else {
            let resume_secs = sending.then(|| RESUME_WAIT.as_secs());
            print_event(
                self.setup.json,
                || format!("* {text}"),
                json!({"type": "file_interrupted", "direction": job.direction().as_str(),
                       "id": local, "nick": job.nick, "name": job.name, "reason": reason,
                       "resume_secs": resume_secs}),
            );
        }
        if sending {
            // A new id: the recipient tells this round's offers (repeated until answered)
            // from the last round's.
            job.wire = wire_id();
            self.offered.push(job);
        }
        Ok(())
    }

    /// An interrupted file of ours: offered again through the server, or given up.
    fn reoffer(&mut self, session: &mut ChatSession, due: Due) {
        let (Due::Offer(local) | Due::GiveUp(local)) = due;
        let Some(at) = self.offered.iter().position(|j| j.local == local) else {
            return;
        };
        if let Due::Offer(_) = due {
            let j = &self.offered[at];
            let (to, name) = (j.nick.clone(), j.name.clone());
            session.file_offer(to, j.wire, name, j.size, hash_hex(&j.hash));
            return;
        }
        let job = self.offered.remove(at);
        let text = format!(
            "{} did not take it back within {} min; /send it again to resume from what they hold",
            job.nick,
            RESUME_WAIT.as_secs() / 60
        );
        self.failed(&job, "gave_up", &text);
    }

    /// The chat session is (again) up: the active transfer's `meet`, if still needed.
    pub(crate) fn welcome(&mut self, session: &mut ChatSession) {
        if let Some(a) = self.active.as_mut()
            && let Some(ask) = a.link.welcome()
        {
            ask.send(session);
        }
    }

    /// Starts the next queued transfer if none is under way.
    pub(crate) fn start_next(&mut self, session: &mut ChatSession, local: SocketAddr) {
        if self.active.is_some() {
            return;
        }
        let Some(job) = self.queued.pop_front() else {
            return;
        };
        let mut link = Link::new(
            LinkTo {
                // The server in use (of a cluster's, the one this session is connected to):
                // the one that introduces us and relays.
                server_name: session.server().to_string(),
                server: session.server(),
                to: job.nick.clone(),
                pin: None,
                bind: self.setup.bind,
                local,
                relay_only: self.setup.relay_only,
            },
            self.setup.idle_timeout,
            self.setup.known_keys.clone(),
            // The path is reported when the peer connection is up ("relayed" or "direct").
            true,
        );
        if let Some(ask) = link.welcome() {
            ask.send(session);
        }
        self.active = Some(Active {
            job,
            link,
            peer_id: None,
            closing: None,
            meet_by: now() + MEET_WAIT,
            lost: None,
            superseded: false,
        });
    }

    /// When [`Self::on_timeout`] is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let reoffer = self.reoffers.poll_timeout();
        let Some(a) = self.active.as_ref() else {
            return reoffer;
        };
        let meet_by = (!a.link.has_peer()).then_some(a.meet_by);
        [
            a.link.poll_timeout(),
            a.closing.map(|t| t + CLOSE_WAIT),
            meet_by,
            reoffer,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) async fn on_timeout(
        &mut self,
        handle: &Handle,
        session: &mut ChatSession,
    ) -> anyhow::Result<()> {
        let now = now();
        for due in self.reoffers.poll(now) {
            self.reoffer(session, due);
        }
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if a.closing.is_some_and(|t| now >= t + CLOSE_WAIT) {
            return self.end(handle).await;
        }
        if !a.link.has_peer() && now >= a.meet_by {
            let job = a.job.clone();
            let text = format!(
                "{} did not meet us within {} s (gone offline?)",
                job.nick,
                MEET_WAIT.as_secs()
            );
            self.failed(&job, "meet", &text);
            return self.end(handle).await;
        }
        let mut reports = Vec::new();
        let ask = a.link.on_timeout(handle, now, &mut reports).await?;
        if let Some(ask) = ask {
            ask.send(session);
        }
        let job = a.job.clone();
        self.show_reports(&job, reports);
        Ok(())
    }

    /// An event of a connection that is not the chat session's.
    pub(crate) async fn on_event(&mut self, handle: &Handle, ev: Event) -> anyhow::Result<()> {
        let Some(a) = self.active.as_mut() else {
            // No peer connection is ours: refuse whoever dials us.
            if let Event::VerifyKey { conn, .. } = ev {
                handle.verify_key(conn, false).await?;
            }
            return Ok(());
        };
        let mut reports = Vec::new();
        a.link.on_event(handle, &mut reports, ev).await?;
        let job = a.job.clone();
        self.show_reports(&job, reports);
        Ok(())
    }

    /// Carries out what the active transfer's peer session asks until it asks for nothing.
    pub(crate) async fn pump(&mut self, handle: &Handle) -> anyhow::Result<()> {
        loop {
            let Some(a) = self.active.as_mut() else {
                return Ok(());
            };
            if a.lost.is_some() || a.superseded {
                self.interrupted(handle).await?;
                continue;
            }
            a.link.prepare(handle).await?;
            let Some(peer) = a.link.peer() else {
                return Ok(());
            };
            let Some(out) = peer.poll_output() else {
                return Ok(());
            };
            match out {
                SessionOutput::Transport(t) => {
                    if let Some(reply) = crate::peer::execute(handle, t).await? {
                        peer.handle_reply(now(), reply);
                    }
                }
                SessionOutput::Report(r) => {
                    let job = a.job.clone();
                    self.on_report(&job, r);
                }
                // The peer connection closed after the transfer: the link ends.
                SessionOutput::Exit { .. } => self.end(handle).await?,
                SessionOutput::Fatal(text) => {
                    let job = a.job.clone();
                    self.failed(&job, "transport", &text);
                    self.end(handle).await?;
                }
                // The file was hashed for the server's offer: that hash is the answer (the
                // receiver accepts only the file with the hash it accepted).
                SessionOutput::HashFile { path, .. } => {
                    let result = match &a.job.prepared {
                        Some(p) if p.path == path => Ok(p.clone()),
                        _ => Err(format!("{} is not the file offered", path.display())),
                    };
                    peer.handle_input(now(), SessionInput::FileHashed { path, result });
                }
                SessionOutput::FinishFile(finish) => self.work.finish(finish),
                SessionOutput::CheckFile(check) => self.work.check(check),
            }
        }
    }

    /// The active transfer is over: its link ends, the next may start.
    async fn end(&mut self, handle: &Handle) -> anyhow::Result<()> {
        if let Some(mut a) = self.active.take() {
            a.link.end(handle).await?;
        }
        Ok(())
    }

    /// The active transfer finished: its peer connection closes (bounded by [`CLOSE_WAIT`]).
    fn finish(&mut self, now: Instant) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if a.closing.is_some() {
            return;
        }
        a.closing = Some(now);
        if let Some(peer) = a.link.peer() {
            peer.handle_input(now, SessionInput::Leave);
        }
    }

    fn show_reports(&mut self, job: &Job, reports: Vec<Report>) {
        for r in reports {
            self.on_report(job, r);
        }
    }

    /// A report of the peer session (or the link) of `job`.
    fn on_report(&mut self, job: &Job, r: Report) {
        let about = |text: &str| format!("file {} with {}: {text}", job.local, job.nick);
        let nick = Some(job.nick.as_str());
        match r {
            Report::File(e) => self.on_file(job, e),
            Report::Status(text) => self.status(nick, &about(&text)),
            Report::Error(text) => self.error(&about(&text)),
            Report::Up { peer, .. } => self.status(nick, &about(&format!("connected to {peer}"))),
            Report::Down { reason, .. } => {
                self.status(nick, &about(&format!("connection lost: {reason}")));
                // Unless the file is through (the connection was closing), the transfer is
                // interrupted: the pump ends the link, and the file waits to resume.
                if let Some(a) = self.active.as_mut()
                    && a.closing.is_none()
                {
                    a.lost.get_or_insert(reason);
                }
            }
            Report::Path { relayed, .. } => {
                let path = if relayed { "relayed" } else { "direct" };
                self.status(nick, &about(&format!("the connection is {path}")));
            }
            // Nothing else is asked of this connection: no chat, no stats, no key question
            // (the key is pinned).
            _ => {}
        }
    }

    fn on_file(&mut self, job: &Job, e: FileEvent) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        match e {
            // The sender's offer on the peer connection: the file accepted through the server,
            // or nothing.
            FileEvent::Offered { id, size, hash, .. } if job.path.is_none() => {
                let Some(peer) = a.link.peer() else { return };
                if size == job.size && hash == job.hash && a.peer_id.is_none() {
                    a.peer_id = Some(id);
                    peer.handle_input(now(), SessionInput::AcceptFile(Some(id)));
                } else {
                    peer.handle_input(now(), SessionInput::DeclineFile(Some(id)));
                    let text = "the peer offered another file than the one accepted (size or \
                                hash differ); declined";
                    self.error(&format!("file {} with {}: {text}", job.local, job.nick));
                }
            }
            FileEvent::Offering { id, .. } => a.peer_id = Some(id),
            FileEvent::Offered { .. } => {}
            e @ FileEvent::Progress { .. } => self.file_event(job, e),
            e @ (FileEvent::Done { .. } | FileEvent::Failed { .. }) => {
                if event_id(&e) != a.peer_id {
                    return;
                }
                if job.path.is_none() {
                    // Received, or failed for good (a bad chunk, a write error): a later offer
                    // of it is asked about again.
                    self.accepted.forget(&fold(&job.nick), job.size, job.hash);
                }
                self.file_event(job, e);
                self.finish(now());
            }
        }
    }
}

/// A new id for an offer on the wire. It tells our offers apart at the recipient and in its
/// answer, across our other devices' offers too: random, within what JSON numbers hold
/// exactly.
fn wire_id() -> u64 {
    chirp_transport::random_seed() >> 11
}

/// `e` under our number for the transfer.
fn renumber(e: FileEvent, local: u64) -> FileEvent {
    match e {
        FileEvent::Progress {
            direction,
            bytes,
            total,
            rate,
            ..
        } => FileEvent::Progress {
            id: local,
            direction,
            bytes,
            total,
            rate,
        },
        FileEvent::Done {
            direction,
            name,
            size,
            hash,
            moved,
            resumed,
            ..
        } => FileEvent::Done {
            id: local,
            direction,
            name,
            size,
            hash,
            moved,
            resumed,
        },
        FileEvent::Failed {
            direction,
            name,
            reason,
            ..
        } => FileEvent::Failed {
            id: local,
            direction,
            name,
            reason,
        },
        other => other,
    }
}

fn event_id(e: &FileEvent) -> Option<u64> {
    match e {
        FileEvent::Offered { id, .. }
        | FileEvent::Offering { id, .. }
        | FileEvent::Progress { id, .. }
        | FileEvent::Done { id, .. }
        | FileEvent::Failed { id, .. } => Some(*id),
    }
}

/// Whether an offer whose sender's key the server named as `key` is accepted without asking:
/// only a key named, and listed in `--auto-accept-from` (an older server names none).
fn trusted(auto_accept_from: &[Fingerprint], key: Option<&PublicKey>) -> bool {
    key.is_some_and(|k| auto_accept_from.contains(&k.fingerprint()))
}

/// A `meet` introducing `nick` with `key` for `job`: for a file we receive whose offer named
/// the sender's key, the key must be that one (else the server, or whoever speaks for it,
/// named one key in the offer and introduces another: the transfer is refused, whatever
/// `--auto-accept-from` says of either). An offer without a key (an older server) and our own
/// files are not checked here; the rendezvous checks the nick.
fn check_meet_key(job: &Job, nick: &str, key: &str) -> Result<(), String> {
    let Some(offered) = job.key.filter(|_| job.path.is_none()) else {
        return Ok(());
    };
    if fold(nick) != fold(&job.nick) {
        return Ok(());
    }
    match PublicKey::from_hex(key) {
        Some(k) if k == offered => Ok(()),
        Some(k) => Err(format!(
            "refused: the server introduced {} with key {}, but the offer came from key {}",
            safe(nick),
            k.fingerprint(),
            offered.fingerprint()
        )),
        None => Err(format!(
            "refused: the server introduced {} without a valid key; the offer came from key {}",
            safe(nick),
            offered.fingerprint()
        )),
    }
}

/// 64 lowercase hex digits as bytes.
fn parse_hash(h: &str) -> Option<[u8; 32]> {
    let b = h.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

fn now() -> Instant {
    crate::peer::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_misuse_shows_the_usage() {
        assert_eq!(
            command("/send bob /tmp/a b.txt"),
            Some(Command::Send {
                to: "bob".into(),
                path: "/tmp/a b.txt".into()
            })
        );
        assert_eq!(command("/send bob"), Some(Command::Usage(SEND_USAGE)));
        assert_eq!(command("/accept"), Some(Command::Accept(None)));
        assert_eq!(command("/accept 3"), Some(Command::Accept(Some(3))));
        assert_eq!(command("/decline 2"), Some(Command::Decline(Some(2))));
        assert_eq!(command("/decline"), Some(Command::Decline(None)));
        assert_eq!(command("/cancel"), Some(Command::Cancel(None)));
        assert_eq!(command("/cancel 4"), Some(Command::Cancel(Some(4))));
        assert!(matches!(command("/cancel all"), Some(Command::Usage(_))));
        assert!(matches!(command("/accept x"), Some(Command::Usage(_))));
        assert_eq!(command("/sendx bob f"), None);
        assert_eq!(command("hello"), None);
        assert_eq!(command("/join #a"), None);
    }

    fn receiving(key: Option<PublicKey>) -> Job {
        Job {
            local: 1,
            wire: 7,
            nick: "Alice".into(),
            name: "a".into(),
            size: 1,
            hash: [0; 32],
            path: None,
            prepared: None,
            key,
        }
    }

    #[test]
    fn only_a_named_and_listed_key_is_trusted() {
        let (alice, carol) = (PublicKey([1; 32]), PublicKey([3; 32]));
        let list = [alice.fingerprint()];
        assert!(trusted(&list, Some(&alice)));
        assert!(!trusted(&list, Some(&carol)));
        // An older server names no key: never accepted unasked, whatever is listed.
        assert!(!trusted(&list, None));
        assert!(!trusted(&[], Some(&alice)));
    }

    /// The server cannot name one key in the offer and introduce another at the meet.
    #[test]
    fn the_meet_must_name_the_key_the_offer_named() {
        let (alice, mallory) = (PublicKey([1; 32]), PublicKey([9; 32]));
        let job = receiving(Some(alice));
        assert_eq!(check_meet_key(&job, "alice", &alice.to_hex()), Ok(()));
        let e = check_meet_key(&job, "alice", &mallory.to_hex()).expect_err("another key");
        assert!(e.contains(&mallory.fingerprint().to_string()), "{e}");
        assert!(e.contains(&alice.fingerprint().to_string()), "{e}");
        let e = check_meet_key(&job, "alice", "not hex").expect_err("no key");
        assert!(e.contains("without a valid key"), "{e}");
        // No key in the offer (an older server): the meet's key is what the handshake proves,
        // as before. Our own file: the recipient's key was never named.
        assert_eq!(
            check_meet_key(&receiving(None), "alice", &mallory.to_hex()),
            Ok(())
        );
        let sending = Job {
            path: Some(PathBuf::from("/f")),
            ..receiving(Some(alice))
        };
        assert_eq!(check_meet_key(&sending, "alice", &mallory.to_hex()), Ok(()));
    }

    #[test]
    fn hashes_parse_only_as_64_lowercase_hex_digits() {
        let h = [0xab; 32];
        assert_eq!(parse_hash(&hash_hex(&h)), Some(h));
        assert_eq!(parse_hash(&"AB".repeat(32)), None);
        assert_eq!(parse_hash("abcd"), None);
        assert_eq!(parse_hash(&"g0".repeat(32)), None);
    }
}
