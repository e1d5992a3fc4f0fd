//! File transfer in `chirp peer`'s line and JSON modes: the events (`file_offer`,
//! `file_progress`, `file_done`, `file_failed`, docs/JSON.md) and, in line mode on a terminal,
//! an indicatif progress bar per transfer. The transfers themselves are `chirp_files`, driven
//! by the peer session.
//!
//! Offering a file reads all of it (its hash), resuming one reads all the partial file (its
//! check), and saving a received one waits until it is on the disk (an fsync, seconds for a
//! large file): [`FileWork`] does all three on tokio's blocking pool, so that the task driving
//! the connection goes on carrying chat meanwhile.
//!
//! Names come from the peer: a human line shows them through [`safe::line`] (and JSON escapes
//! every unsafe character, see `output::json_line`).

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chirp_files::{Check, Direction, FileEvent, Finish, FsStorage, Storage, hash_hex};
use chirp_peer::{Input as SessionInput, Report};
use chirp_tui::safe;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::sync::mpsc;

use crate::output::{Output, print_event};

/// Seconds left at `rate` bytes per second for `left` bytes (`None` while the rate is 0).
fn eta_secs(left: u64, rate: u64) -> Option<u64> {
    (rate > 0).then(|| left.div_ceil(rate))
}

/// The start of a hash, for human lines (JSON has it whole).
fn short(hash: &[u8; 32]) -> String {
    hash_hex(hash)[..16].to_owned()
}

/// The human line of an offer from the peer: its key's whole fingerprint (what
/// `--auto-accept-from` takes) when known, so that the user can decide, and what to type.
fn offered_line(
    id: u64,
    name: &str,
    size: u64,
    hash: &[u8; 32],
    auto: bool,
    key: Option<&str>,
) -> String {
    let then = if auto {
        "accepted (trusted key)".to_owned()
    } else {
        format!("/accept {id} or /decline {id}")
    };
    let by = key.map_or_else(String::new, |k| format!(" (key {})", safe::line(k)));
    format!(
        "* the peer{by} offers file {id}: \"{}\" ({}, BLAKE3 {}…): {then}",
        safe::line(name),
        HumanBytes(size),
        short(hash)
    )
}

/// Prints one file event as a line (human or JSON). Progress has no human line: on a
/// terminal it is a bar ([`Bars`]), and elsewhere a line per update would only be noise.
pub(crate) fn print(out: Output, e: &FileEvent) {
    let json = out.json;
    match e {
        FileEvent::Offered {
            id,
            name,
            size,
            hash,
            auto,
            key,
        } => print_event(
            json,
            || offered_line(*id, name, *size, hash, *auto, key.as_deref()),
            json!({"type": "file_offer", "direction": "receive", "id": id, "name": name,
                   "size": size, "hash": hash_hex(hash), "auto": auto, "key": key}),
        ),
        FileEvent::Offering {
            id,
            name,
            size,
            hash,
        } => print_event(
            json,
            || {
                format!(
                    "* offering file {id}: \"{}\" ({}, BLAKE3 {}…): /cancel {id} stops it",
                    safe::line(name),
                    HumanBytes(*size),
                    short(hash)
                )
            },
            json!({"type": "file_offer", "direction": "send", "id": id, "name": name,
                   "size": size, "hash": hash_hex(hash)}),
        ),
        FileEvent::Progress {
            id,
            direction,
            bytes,
            total,
            rate,
        } => {
            if json {
                print_event(
                    true,
                    String::new,
                    json!({"type": "file_progress", "direction": direction.as_str(), "id": id,
                           "bytes": bytes, "total": total, "rate": rate,
                           "eta_secs": eta_secs(total.saturating_sub(*bytes), *rate)}),
                );
            }
        }
        FileEvent::Done {
            id,
            direction,
            name,
            size,
            hash,
            moved,
            resumed,
        } => print_event(
            json,
            || {
                let what = match direction {
                    Direction::Send => format!("file {id} \"{}\" sent", safe::line(name)),
                    Direction::Receive => {
                        format!(
                            "file {id} received and verified, saved as \"{}\"",
                            safe::line(name)
                        )
                    }
                };
                let resumed = if *resumed > 0 {
                    format!(", {} of it resumed", HumanBytes(*resumed))
                } else {
                    String::new()
                };
                format!(
                    "* {what} ({}{resumed}, BLAKE3 {})",
                    HumanBytes(*size),
                    hash_hex(hash)
                )
            },
            json!({"type": "file_done", "direction": direction.as_str(), "id": id, "name": name,
                   "size": size, "hash": hash_hex(hash), "moved": moved, "resumed": resumed}),
        ),
        FileEvent::Failed {
            id,
            direction,
            name,
            reason,
        } => print_event(
            json,
            || {
                format!(
                    "! file {id} \"{}\" ({}): {}",
                    safe::line(name),
                    direction.as_str(),
                    safe::line(reason)
                )
            },
            json!({"type": "file_failed", "direction": direction.as_str(), "id": id,
                   "name": name, "reason": reason}),
        ),
    }
}

/// Progress bars for the transfers under way, drawn on stdout (a terminal), above the lines
/// printed meanwhile. A clone draws on the same bars.
#[derive(Clone)]
pub(crate) struct Bars {
    multi: MultiProgress,
    bars: Arc<Mutex<HashMap<(bool, u64), ProgressBar>>>,
}

impl Bars {
    /// Bars if stdout is a terminal and the output is for humans.
    pub(crate) fn for_stdout(json: bool) -> Option<Bars> {
        (!json && std::io::stdout().is_terminal()).then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Runs `f` (which prints a line) with the bars out of the way.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    /// Shows `e`: progress moves a bar; anything else is a line, and an end removes the bar.
    pub(crate) fn show(&self, out: Output, e: &FileEvent) {
        let Ok(mut bars) = self.bars.lock() else {
            return print(out, e);
        };
        match e {
            FileEvent::Progress {
                id,
                direction,
                bytes,
                total,
                ..
            } => {
                let key = (*direction == Direction::Send, *id);
                let bar = bars.entry(key).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new(*total));
                    // The template is a constant that parses; the fallback is never taken.
                    let style = ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    bar.set_style(style);
                    let verb = match direction {
                        Direction::Send => "sending",
                        Direction::Receive => "receiving",
                    };
                    bar.set_message(format!("{verb} {id}"));
                    bar.enable_steady_tick(Duration::from_millis(500));
                    bar
                });
                bar.set_position(*bytes);
            }
            FileEvent::Done { id, direction, .. } | FileEvent::Failed { id, direction, .. } => {
                if let Some(bar) = bars.remove(&(*direction == Direction::Send, *id)) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.multi.suspend(|| print(out, e));
            }
            _ => self.multi.suspend(|| print(out, e)),
        }
    }
}

/// A storage over the download directory, made for each piece of [`FileWork`].
type MakeStorage = Arc<dyn Fn() -> Box<dyn Storage + Send> + Send + Sync>;

/// The file work a peer session asks of its driver, done on tokio's blocking pool away from
/// the task that drives the connection: hashing a file for an offer (the session's
/// `Output::HashFile`, answered with `Input::FileHashed`), checking the partial file of a
/// resumed one (`Output::CheckFile`, answered with `Input::FileChecked`) and saving a received
/// one (`Output::FinishFile`: an fsync and a rename, answered with `Input::FileFinished`). The
/// answers come back through [`FileWork::recv`].
pub(crate) struct FileWork {
    tx: mpsc::Sender<SessionInput>,
    rx: mpsc::Receiver<SessionInput>,
    storage: MakeStorage,
    /// Saves started whose result has not been taken by [`Self::recv`].
    saving: AtomicUsize,
}

impl FileWork {
    /// Results waiting to be taken: a job done waits (on its own thread) for room.
    const QUEUE: usize = 16;

    /// Work on the download directory `downloads` (sources are read at the paths given).
    pub(crate) fn new(downloads: PathBuf) -> Self {
        Self::with_storage(Arc::new(move || -> Box<dyn Storage + Send> {
            Box::new(FsStorage::new(downloads.clone()))
        }))
    }

    /// Work on the storage `storage` makes (tests put a slow disk in).
    pub(crate) fn with_storage(storage: MakeStorage) -> Self {
        let (tx, rx) = mpsc::channel(Self::QUEUE);
        Self {
            tx,
            rx,
            storage,
            saving: AtomicUsize::new(0),
        }
    }

    /// Starts hashing the file at `path` (one blocking task per `/send`: they come at typing
    /// speed).
    pub(crate) fn hash(&self, path: PathBuf, chunk_size: u32) {
        let tx = self.tx.clone();
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || {
            let result = chirp_files::prepare(&mut *storage(), &path, chunk_size)
                .map(Box::new)
                .map_err(|e| e.to_string());
            // The loop has ended if the channel is closed: nobody is left to offer it to.
            let _ = tx.blocking_send(SessionInput::FileHashed { path, result });
        });
    }

    /// Starts saving a received file (one blocking task per file received, and a session
    /// receives at most `chirp_files::transfers::MAX_INCOMING` at once).
    pub(crate) fn finish(&self, finish: Finish) {
        self.saving.fetch_add(1, Ordering::Relaxed);
        let tx = self.tx.clone();
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || {
            let result = finish.run(&mut *storage());
            // If the loop has ended nobody hears of it: the file is saved (or its partial file
            // kept) all the same.
            let _ = tx.blocking_send(SessionInput::FileFinished { finish, result });
        });
    }

    /// Starts checking the partial file a resumed transfer left (one blocking task per
    /// resume, and a session receives at most `chirp_files::transfers::MAX_INCOMING` at once).
    pub(crate) fn check(&self, check: Check) {
        let tx = self.tx.clone();
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || {
            let result = check.run(&mut *storage());
            // The loop has ended if the channel is closed: nobody is left to resume.
            let _ = tx.blocking_send(SessionInput::FileChecked { check, result });
        });
    }

    /// The next piece of work done (never ends: this holds a sender itself).
    pub(crate) async fn recv(&mut self) -> SessionInput {
        let input = match self.rx.recv().await {
            Some(input) => input,
            None => std::future::pending().await,
        };
        if matches!(input, SessionInput::FileFinished { .. }) {
            self.saving.fetch_sub(1, Ordering::Relaxed);
        }
        input
    }

    /// Once the chat is over (Ctrl-C, or `/quit` that waited its time): waits for the saves of
    /// received files still running, at most `limit`, and shows how each ended (the session
    /// already said that the sender is not told). The process would wait for them anyway
    /// (tokio's runtime waits for its blocking tasks): this says what it waits for.
    pub(crate) async fn saves_after_exit(&mut self, view: &crate::peer::View, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.saving.load(Ordering::Relaxed) > 0 {
            let Ok(input) = tokio::time::timeout_at(deadline, self.recv()).await else {
                let text = format!(
                    "{} received file(s) still being saved after {} s: waiting for the disk",
                    self.saving.load(Ordering::Relaxed),
                    limit.as_secs()
                );
                view.show(Report::Error(text)).await;
                return;
            };
            let SessionInput::FileFinished { finish, result } = input else {
                continue;
            };
            let report = match result {
                Ok(saved) => Report::Status(format!("file {} saved as {saved:?}", finish.id)),
                Err(e) => Report::Error(format!("file {} not saved: {e}", finish.id)),
            };
            view.show(report).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An offer from a key not trusted names the key whole (what `--auto-accept-from` takes)
    /// and what to type; a trusted one says so; hostile text in the name is made safe.
    #[test]
    fn an_offer_line_names_the_key_and_the_answer() {
        let hash = [0xab; 32];
        let key = "abcd-efgh-ijkl-mnop-qrst-uvwx";
        assert_eq!(
            offered_line(3, "a\x1b[2Jb.txt", 2048, &hash, false, Some(key)),
            "* the peer (key abcd-efgh-ijkl-mnop-qrst-uvwx) offers file 3: \"a^[[2Jb.txt\" \
             (2.00 KiB, BLAKE3 abababababababab…): /accept 3 or /decline 3"
        );
        assert!(
            offered_line(3, "a", 1, &hash, true, Some(key)).ends_with(": accepted (trusted key)")
        );
        // A driver that names no key (none is known): no key in the line.
        assert!(
            offered_line(3, "a", 1, &hash, false, None).starts_with("* the peer offers file 3:")
        );
    }
}
