//! DM file transfer through the server (PROTOCOL.md, "Files between users"): the server only
//! routes a file's description and the answer to it; the file goes over an end-to-end
//! encrypted peer connection the two clients open with the rendezvous (`meet`), directly or
//! through the relay, which the server cannot read.
//!
//! The rules:
//!
//! - **Both online.** An offer goes to the sessions the recipient has on this server now; a
//!   nick with none is refused with `file_refused` (`offline`). Nothing is stored: not the
//!   offer, not the file. (In a cluster, only this node's sessions count: a recipient
//!   connected to another node is offline here.)
//! - **Bounded.** An offer larger than [`ServerConfig::max_file_size`] is refused
//!   (`too_large`); offers and answers are requests like any other, under the session's
//!   flood control.
//! - **The relay counts.** The server remembers the last [`MAX_REMEMBERED`] offers each
//!   session made (id, recipient, size; never the name or hash) until the session ends. An
//!   answer that accepts one of them marks the two users as a *file pair* for
//!   [`ASK_TTL_MS`]; the relay of the `meet` that then introduces them forwards at most
//!   [`relay_cap`] of the size, both ways together, and drops and counts the rest. The
//!   relay cannot read the sealed bytes, but it can count them.
//! - **Checked, not trusted.** The name must be printable text of at most [`MAX_NAME`]
//!   bytes and the hash 64 lowercase hex digits; the receiving client still treats the name as
//!   hostile (it strips any path, never overwrites) and checks the file against the hash.
//!
//! [`ServerConfig::max_file_size`]: super::ServerConfig::max_file_size

use crate::names;
use crate::wire::{ServerMsg, code};

use super::meet::ASK_TTL_MS;
use super::{Key, Server, SessionId};

/// Offers remembered per session for the relay's cap (the oldest is forgotten first).
pub const MAX_REMEMBERED: usize = 16;
/// Accepted offers waiting for their `meet`, server-wide (the oldest is forgotten first).
pub const MAX_FILE_PAIRS: usize = 1024;
/// The fixed part of the relay's overhead allowance for a file pair: handshakes, the §12
/// offer (with its chunk hashes), acknowledgements and keepalives of a small file.
pub const RELAY_CAP_FIXED: u64 = 1 << 20;

/// The bytes of RELAY datagrams (both ways together) the relay forwards for a pair
/// introduced for a file of `size` bytes: the size, a quarter of it more (packet and RELAY
/// headers, AEAD tags and §12 framing, about 6 %; acknowledgements the other way, about 3 %;
/// retransmissions of up to about 15 % of the file), and [`RELAY_CAP_FIXED`].
pub fn relay_cap(size: u64) -> u64 {
    size.saturating_add(size / 4)
        .saturating_add(RELAY_CAP_FIXED)
}

/// An offer this server forwarded, as the relay's cap needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Forwarded {
    id: u64,
    to: Key,
    size: u64,
}

/// An accepted offer whose two users have not been introduced yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct FilePair {
    sender: Key,
    receiver: Key,
    size: u64,
    expires_ms: i64,
}

/// The default of `--max-file-size`: 1 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1 << 30;
/// Longest file name in an offer, in bytes (as most file systems allow).
pub const MAX_NAME: usize = 255;

/// A `file_offer` as it came.
#[derive(Debug)]
pub(super) struct Offer {
    pub(super) to: String,
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) hash: String,
}

fn is_hash(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Server {
    /// The key of the user called `nick` and its live sessions here (none: offline).
    fn online(&self, nick: &str) -> Option<(Key, String, Vec<SessionId>)> {
        let (name, key) = self.nick_owner.get(&names::fold(nick))?.clone();
        let live = self
            .users
            .get(&key)
            .map(|u| {
                u.sessions
                    .iter()
                    .copied()
                    .filter(|s| self.sessions.get(s).is_some_and(|s| !s.closing))
                    .collect()
            })
            .unwrap_or_default();
        Some((key, name, live))
    }

    /// A `file_offer` from `session` (of user `key`).
    pub(super) fn file_offer(&mut self, session: SessionId, key: Key, offer: Offer) {
        let refuse = |this: &mut Self, code: &str, message: String| {
            let m = ServerMsg::FileRefused {
                to: offer.to.clone(),
                id: offer.id,
                code: code.into(),
                message,
            };
            this.send(session, &m);
        };
        if let Err(e) = names::text(&offer.name, MAX_NAME) {
            return refuse(self, code::BAD_REQUEST, format!("bad file name: {e}"));
        }
        if !is_hash(&offer.hash) {
            let text = "the hash must be 64 lowercase hex digits".to_owned();
            return refuse(self, code::BAD_REQUEST, text);
        }
        let max = self.config.max_file_size;
        if offer.size > max {
            let text = format!(
                "the file is {} bytes; this server passes files of at most {max} bytes",
                offer.size
            );
            return refuse(self, code::TOO_LARGE, text);
        }
        let Some((to_key, to_nick, live)) = self.online(&offer.to) else {
            let text = format!("no user is called '{}'", offer.to);
            return refuse(self, code::NO_SUCH_NICK, text);
        };
        if to_key == key {
            return refuse(
                self,
                code::BAD_REQUEST,
                "cannot send a file to yourself".into(),
            );
        }
        if live.is_empty() {
            let text = format!(
                "{to_nick} is not online; files go only to a user who is (nothing is kept for \
                 later)"
            );
            return refuse(self, code::OFFLINE, text);
        }
        let from = self.nick_of.get(&key).cloned().unwrap_or_default();
        self.stats.file_offers += 1;
        let remembered = self.offers.entry(session).or_default();
        if remembered.len() >= MAX_REMEMBERED {
            remembered.pop_front();
        }
        remembered.push_back(Forwarded {
            id: offer.id,
            to: to_key,
            size: offer.size,
        });
        let m = ServerMsg::FileOffer {
            from,
            id: offer.id,
            name: offer.name,
            size: offer.size,
            hash: offer.hash,
            // The key this session proved in its handshake, which the nick is bound to: a
            // recipient that trusts it may accept at once, and checks the `meet` against it.
            key: Some(data_encoding::HEXLOWER.encode(&key)),
        };
        for s in live {
            self.send(s, &m);
        }
    }

    /// A `file_answer` from `session` (of user `key`) to `to`'s offer `id`.
    pub(super) fn file_answer(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        to: &str,
        id: u64,
        accept: bool,
    ) {
        let (sender, live) = match self.online(to) {
            Some((k, _, live)) if k != key => (k, live),
            _ => {
                let text = format!("no other user is called '{to}'");
                return self.fail(session, None, code::NO_SUCH_NICK, text);
            }
        };
        if live.is_empty() {
            let text = format!("{to} is not online any more");
            return self.fail(session, None, code::OFFLINE, text);
        }
        if accept {
            self.file_pair(now_ms, sender, key, id, &live);
        }
        let from = self.nick_of.get(&key).cloned().unwrap_or_default();
        let m = ServerMsg::FileAnswer { from, id, accept };
        for s in live {
            self.send(s, &m);
        }
    }

    /// `receiver` accepted offer `id` of `sender` (whose sessions are `live`): if one of them
    /// made it, the two become a file pair until their `meet`.
    fn file_pair(&mut self, now_ms: i64, sender: Key, receiver: Key, id: u64, live: &[SessionId]) {
        let offer = live.iter().find_map(|s| {
            self.offers
                .get(s)?
                .iter()
                .find(|o| o.id == id && o.to == receiver)
                .copied()
        });
        let Some(offer) = offer else {
            // Not an offer this server forwarded (or one forgotten): no pair, no cap.
            return;
        };
        self.file_pairs
            .retain(|p| p.expires_ms > now_ms && (p.sender, p.receiver) != (sender, receiver));
        if self.file_pairs.len() >= MAX_FILE_PAIRS {
            self.file_pairs.remove(0);
        }
        self.file_pairs.push(FilePair {
            sender,
            receiver,
            size: offer.size,
            expires_ms: now_ms + ASK_TTL_MS,
        });
    }

    /// The relay cap for the introduction of `a` and `b`: a file pair's (used up), or none.
    pub(super) fn take_file_pair(&mut self, now_ms: i64, a: Key, b: Key) -> Option<u64> {
        let at = self.file_pairs.iter().position(|p| {
            p.expires_ms > now_ms
                && ((p.sender, p.receiver) == (a, b) || (p.sender, p.receiver) == (b, a))
        })?;
        Some(relay_cap(self.file_pairs.swap_remove(at).size))
    }
}
