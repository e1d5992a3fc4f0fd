//! File transfers in the terminal UI, for `chirp peer` ([`crate::peer_bridge`]) and for
//! `chirp connect`'s DM transfers ([`crate::bridge`]) alike: a transfer's [`FileEvent`]s
//! become [`UiEvent`]s. An offer is shown like a question (Alt+Y accepts, Alt+N declines, or
//! `/accept ID`, `/decline ID`); transfers under way share one progress line in the status
//! bar (bytes, rate, ETA); the end of each is a line in the conversation, with the hash.
//!
//! Names come from the other side: every one is shown through [`safe::line`].
//!
//! `chirp connect`'s DM transfers run in the binary (they own peer connections); the
//! bridge hands them a [`FileCommand`] and shows what they say as [`DmNote`]s.

use std::collections::BTreeMap;

use chirp_files::{Direction, FileEvent, hash_hex};
use chirp_tui::{BufferId, UiEvent, safe};

/// `n` bytes for people: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A key fingerprint in the short form the status bar shows (`fp abcd-efgh-ijk…`): enough to
/// tell keys apart at a glance; `/stats` shows it whole.
pub fn short_fingerprint(fp: &str) -> String {
    const SHOWN: usize = 13;
    if fp.chars().count() <= SHOWN + 1 {
        return fp.to_owned();
    }
    let mut short: String = fp.chars().take(SHOWN).collect();
    short.push('…');
    short
}

/// A file command of `chirp connect` (`/send`, `/accept`, `/decline`, `/cancel`), for its DM
/// transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCommand {
    /// Offer the file at `path` to `to` through the server.
    Send {
        /// The recipient's nick.
        to: String,
        /// The file, as typed.
        path: String,
    },
    /// Accept an offer (`None`: the oldest waiting).
    Accept(Option<u64>),
    /// Decline an offer (`None`: the oldest waiting).
    Decline(Option<u64>),
    /// Stop sending a file (`None`: the only one being sent).
    Cancel(Option<u64>),
}

/// What `chirp connect`'s DM transfers tell the user, for the UI to show
/// ([`crate::bridge::Bridge::on_dm_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmNote {
    /// How a transfer with `nick` goes (connecting, the path), or a command's answer
    /// (`nick`: `None`).
    Status {
        /// The other user, whose DM buffer it belongs to.
        nick: Option<String>,
        /// What to say (made safe to show by the sayer).
        text: String,
    },
    /// Something went wrong that is not a transfer's end (a command refused).
    Error(String),
    /// An event of a transfer with `nick`, numbered as the user types it.
    File {
        /// The other user.
        nick: String,
        /// What happened.
        event: FileEvent,
    },
}

/// The transfers under way, as the UI shows them.
#[derive(Debug, Default)]
pub struct FileView {
    /// Progress of the transfers under way, by (sending, id).
    progress: BTreeMap<(bool, u64), String>,
}

impl FileView {
    /// One event of a transfer with `who` (a peer's address, a nick: shown made safe), whose
    /// lines go to `buffer` (`None`: the status buffer).
    pub fn on_event(
        &mut self,
        who: &str,
        buffer: Option<BufferId>,
        e: FileEvent,
        out: &mut Vec<UiEvent>,
    ) {
        match e {
            FileEvent::Offered {
                id,
                name,
                size,
                hash,
                auto: false,
                key,
            } => out.push(UiEvent::FileOffer {
                id,
                text: format!(
                    "{}{} offers file {id}: \"{}\" ({}, BLAKE3 {}…).",
                    safe::line(who),
                    // Not trusted: whose key it is helps the user decide.
                    key.map_or_else(String::new, |k| format!(
                        " (key {})",
                        short_fingerprint(&safe::line(&k))
                    )),
                    safe::line(&name),
                    human_bytes(size),
                    &hash_hex(&hash)[..16]
                ),
            }),
            FileEvent::Offered { id, name, size, .. } => out.push(UiEvent::Info {
                buffer,
                text: format!(
                    "receiving file {id}: \"{}\" ({}; offers from this key are accepted)",
                    safe::line(&name),
                    human_bytes(size)
                ),
            }),
            FileEvent::Offering { id, name, size, .. } => out.push(UiEvent::Info {
                buffer,
                text: format!(
                    "offering file {id}: \"{}\" ({}; /cancel {id} stops it)",
                    safe::line(&name),
                    human_bytes(size)
                ),
            }),
            FileEvent::Progress {
                id,
                direction,
                bytes,
                total,
                rate,
            } => {
                let arrow = if direction == Direction::Send {
                    '↑'
                } else {
                    '↓'
                };
                let pct = (bytes.saturating_mul(100))
                    .checked_div(total)
                    .unwrap_or(100);
                let eta = match total.saturating_sub(bytes).checked_div(rate) {
                    Some(s) => format!("ETA {s}s"),
                    None => "ETA ?".into(),
                };
                let line = format!(
                    "{arrow}{id} {pct}% {}/{} {}/s {eta}",
                    human_bytes(bytes),
                    human_bytes(total),
                    human_bytes(rate)
                );
                self.progress
                    .insert((direction == Direction::Send, id), line);
                out.push(UiEvent::FileProgress(Some(self.progress_line())));
            }
            FileEvent::Done {
                id,
                direction,
                name,
                size,
                hash,
                ..
            } => {
                self.ended(id, direction, out);
                let what = match direction {
                    Direction::Send => format!("file {id} \"{}\" sent", safe::line(&name)),
                    Direction::Receive => format!(
                        "file {id} received and verified, saved as \"{}\"",
                        safe::line(&name)
                    ),
                };
                out.push(UiEvent::Info {
                    buffer,
                    text: format!("{what} ({}, BLAKE3 {})", human_bytes(size), hash_hex(&hash)),
                });
            }
            FileEvent::Failed {
                id,
                direction,
                name,
                reason,
            } => {
                self.ended(id, direction, out);
                out.push(UiEvent::Error(format!(
                    "file {id} \"{}\": {}",
                    safe::line(&name),
                    safe::line(&reason)
                )));
            }
        }
    }

    /// Transfer `id` ended: its offer is no longer open, its progress goes.
    fn ended(&mut self, id: u64, direction: Direction, out: &mut Vec<UiEvent>) {
        let sending = direction == Direction::Send;
        if !sending {
            out.push(UiEvent::FileAnswered { id });
        }
        if self.progress.remove(&(sending, id)).is_some() {
            let line = (!self.progress.is_empty()).then(|| self.progress_line());
            out.push(UiEvent::FileProgress(line));
        }
    }

    fn progress_line(&self) -> String {
        self.progress
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("  ")
    }
}
