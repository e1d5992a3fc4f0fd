//! Edits, deletions and reactions, and typing notices (issue 19).
//!
//! # Edits, deletions, reactions
//!
//! A change to a message is an event in the message's conversation: the store checks it and
//! makes it in one transaction with the event's record ([`Op::Amend`]: the message must
//! still be there, and an edit or a member's deletion must be its sender's), which takes the
//! next id of the conversation. So a change is fanned out after its commit like a message,
//! published to the other nodes of a cluster like a message, caught up on after a reconnect
//! and replayed in order. The permission checks the store cannot make are made here first:
//! membership of the room (or being a party of the DM), and a room operator's right to
//! delete anyone's message there.
//!
//! Events carry absolute values (an edit its whole new text, a reaction its emoji's count
//! after it), and copies of a message sent after a change carry its state then (`edited`,
//! `deleted`, `reactions`): a client that applies the events it gets live or in a catch-up,
//! in order, ends with the state of the server, and one that pages back through history
//! takes the messages' state as it comes (see PROTOCOL.md, "Edits, deletions, reactions").
//! The replay cache is changed with the store, so that a copy from the cache says the same
//! as one from the store.
//!
//! # Typing notices
//!
//! Forwarded to the room's members (or the DM's other party) and never stored: at most one
//! per user and conversation every [`TYPING_INTERVAL_MS`], the rest dropped and counted
//! ([`super::ServerStats::typing_dropped`]; those of a member who may not speak there,
//! [`super::ServerStats::typing_refused`]). In a cluster they go over the bus to the other
//! nodes' sessions.

use std::collections::HashMap;

use chirp_store::{Amend, Change, Outcome, Record, Refusal, kind};

use super::{Key, Op, Pending, Server, SessionId, dm_conv, enc};
use crate::bus::{Bus, Subject};
use crate::names;
use crate::server::moderation::Role;
use crate::wire::{
    ClientMsg, MAX_EMOJI_BYTES, ReactReq, Reactions, ServerMsg, TYPING_INTERVAL_MS, code,
};

/// Most `(user, conversation)` pairs whose last typing notice is remembered: past it, the
/// entries older than [`TYPING_INTERVAL_MS`] are dropped (they limit nothing any more), and
/// if all are recent the notice is dropped.
const MAX_TYPING_ENTRIES: usize = 65_536;

/// The other party of a DM conversation: key and nick.
type Party = (Key, String);

/// When each user last had a typing notice forwarded, per conversation.
#[derive(Debug, Default)]
pub(super) struct Typing {
    last: HashMap<(Key, String), i64>,
}

impl Typing {
    /// Whether `key` may have a typing notice in `conv` forwarded at `now_ms` (and, if so,
    /// it is counted as forwarded).
    pub(super) fn take(&mut self, now_ms: i64, key: Key, conv: &str) -> bool {
        if let Some(at) = self.last.get_mut(&(key, conv.to_owned())) {
            if now_ms.saturating_sub(*at) < TYPING_INTERVAL_MS {
                return false;
            }
            *at = now_ms;
            return true;
        }
        if self.last.len() >= MAX_TYPING_ENTRIES {
            self.last
                .retain(|_, at| now_ms.saturating_sub(*at) < TYPING_INTERVAL_MS);
            if self.last.len() >= MAX_TYPING_ENTRIES {
                return false;
            }
        }
        self.last.insert((key, conv.to_owned()), now_ms);
        true
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.last.len()
    }
}

/// Checks an emoji of a reaction: 1 to [`MAX_EMOJI_BYTES`] bytes, at most 10 code points, no
/// letters or digits (but the keycap sequences `1️⃣`, `#️⃣`, `*️⃣`), no spaces, controls or
/// direction overrides. Not a full emoji table: what it lets through is short and inert when
/// printed.
pub fn emoji(e: &str) -> Result<(), String> {
    if e.is_empty() || e.len() > MAX_EMOJI_BYTES || e.chars().count() > 10 {
        return Err(format!(
            "a reaction is one emoji (1 to {MAX_EMOJI_BYTES} bytes)"
        ));
    }
    let keycap = e.ends_with('\u{20E3}');
    let bad = e.chars().find(|&c| {
        c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
            || (c.is_alphanumeric() && !(keycap && c.is_ascii_digit()))
            || (c.is_ascii() && !(keycap && matches!(c, '0'..='9' | '#' | '*')))
    });
    match bad {
        Some(c) => Err(format!(
            "a reaction is one emoji; U+{:04X} is not part of one",
            c as u32
        )),
        None => Ok(()),
    }
}

/// How a stored edit, deletion or reaction is sent to a member (`None`: another kind).
pub(super) fn amend_msg(r: &Record, history: bool) -> Option<ServerMsg> {
    let room = r.to_key.is_none().then(|| r.conv.clone());
    let target = r.target?;
    let (conv, id, ts, by) = (r.conv.clone(), r.id, r.ts_ms, r.from_nick.clone());
    Some(match r.kind {
        kind::EDIT => ServerMsg::Edited {
            conv,
            room,
            id,
            ts,
            by,
            target,
            text: r.text.clone(),
            history,
        },
        kind::DELETE => ServerMsg::Deleted {
            conv,
            room,
            id,
            ts,
            by,
            target,
            history,
        },
        kind::REACT | kind::UNREACT => ServerMsg::Reaction {
            conv,
            room,
            id,
            ts,
            by,
            target,
            emoji: r.text.clone(),
            count: r.reactions.first().map_or(0, |x| x.1),
            removed: r.kind == kind::UNREACT,
            history,
        },
        _ => return None,
    })
}

/// A message's reactions as the protocol carries them.
pub(super) fn reactions(r: &Record) -> Vec<Reactions> {
    r.reactions
        .iter()
        .map(|(emoji, count)| Reactions {
            emoji: emoji.clone(),
            count: *count,
        })
        .collect()
}

/// Whether a record from the bus is a well-formed edit, deletion or reaction (another node
/// checked it, but nothing is trusted for having come over the bus).
pub(super) fn valid_event(r: &Record, max_text: usize) -> bool {
    match (r.kind, r.target) {
        (kind::EDIT, Some(t)) => t < r.id && names::text(&r.text, max_text).is_ok(),
        (kind::DELETE, Some(t)) => t < r.id && r.text.is_empty(),
        (kind::REACT | kind::UNREACT, Some(t)) => {
            t < r.id && emoji(&r.text).is_ok() && r.reactions.len() == 1
        }
        _ => false,
    }
}

impl Server {
    /// The conversation a change or a typing notice names: a room `key` is in, or the DM
    /// conversation with a known nick.
    fn conv_named(
        &self,
        key: &Key,
        room: Option<&str>,
        with: Option<&str>,
    ) -> Result<(String, Option<Party>), (&'static str, String)> {
        match (room, with) {
            (Some(r), None) => {
                let r = names::fold(r);
                if self.in_room(key, &r) {
                    Ok((r, None))
                } else {
                    Err((code::NOT_IN_ROOM, format!("you are not in {r}")))
                }
            }
            (None, Some(w)) => match self.nick_owner.get(&names::fold(w)) {
                Some((nick, other)) => Ok((dm_conv(key, other), Some((*other, nick.clone())))),
                None => Err((code::NO_SUCH_NICK, format!("no user is called '{w}'"))),
            },
            _ => Err((
                code::BAD_REQUEST,
                "name exactly one of room and with".into(),
            )),
        }
    }

    /// An `edit`, `delete`, `react` or `unreact` request.
    pub(super) fn amend_request(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        m: ClientMsg,
    ) {
        let (room, with, id, change) = match m {
            ClientMsg::Edit {
                room,
                with,
                id,
                text,
            } => {
                if let Err(e) = names::text(&text, self.config.max_text) {
                    return self.fail(session, None, code::BAD_TEXT, e);
                }
                (room, with, id, Change::Edit(text))
            }
            ClientMsg::Delete { room, with, id } => (room, with, id, Change::Delete),
            ClientMsg::React(ReactReq {
                room,
                with,
                id,
                emoji: e,
            }) => {
                if let Err(m) = emoji(&e) {
                    return self.fail(session, None, code::BAD_TEXT, m);
                }
                (room, with, id, Change::React(e))
            }
            ClientMsg::Unreact(ReactReq {
                room,
                with,
                id,
                emoji: e,
            }) => {
                if let Err(m) = emoji(&e) {
                    return self.fail(session, None, code::BAD_TEXT, m);
                }
                (room, with, id, Change::Unreact(e))
            }
            _ => return,
        };
        let (conv, dm) = match self.conv_named(&key, room.as_deref(), with.as_deref()) {
            Ok(c) => c,
            Err((code, m)) => return self.fail(session, None, code, m),
        };
        // Speaking rules hold for changes too: a muted member (or one without voice in a
        // moderated room) edits and reacts no more than it speaks. Deleting one's own
        // message is always allowed.
        if dm.is_none() && !matches!(change, Change::Delete) {
            if let Err(m) = self.may_speak(&conv, &key) {
                return self.fail(session, None, code::MUTED, m);
            }
        }
        // Whose message may be changed: an edit, only one's own; a deletion, one's own, or
        // anyone's for a room operator; a reaction, anyone's.
        let author = match &change {
            Change::Edit(_) => Some(key),
            Change::Delete if dm.is_none() && self.role(&conv, &key) >= Role::Op => None,
            Change::Delete => Some(key),
            Change::React(_) | Change::Unreact(_) => None,
        };
        let by_nick = self.nick_of.get(&key).cloned().unwrap_or_default();
        let (to_key, to_nick) = match dm {
            Some((k, n)) => (Some(k), Some(n)),
            None => (None, None),
        };
        let a = Amend {
            conv,
            target: id,
            ts_ms: now_ms,
            by_key: key,
            by_nick,
            to_key,
            to_nick,
            author,
            change,
        };
        self.persist(
            vec![Op::Amend(a)],
            vec![Pending::Amend {
                session,
                target: id,
            }],
        );
    }

    /// A change asked for by `session` was committed (or refused by the store, or not
    /// stored): members see it, or `session` is told why not.
    pub(super) fn amend_committed(
        &mut self,
        now_ms: i64,
        session: SessionId,
        target: u64,
        outcome: Option<Outcome>,
    ) {
        let (code, m) = match outcome {
            Some(Outcome::Amended(record)) => {
                match record.kind {
                    kind::EDIT => self.stats.edits += 1,
                    kind::DELETE => self.stats.deletes += 1,
                    kind::REACT => self.stats.reactions += 1,
                    kind::UNREACT => self.stats.unreactions += 1,
                    _ => {}
                }
                if self.cluster.is_some() {
                    self.publish_msg(&record);
                }
                return self.land(now_ms, super::Arrival::Remote(*record));
            }
            Some(Outcome::Refused(Refusal::NoMessage)) => (
                code::NO_SUCH_MESSAGE,
                format!("there is no message {target} there (or it was deleted)"),
            ),
            Some(Outcome::Refused(Refusal::NotAuthor)) => (
                code::FORBIDDEN,
                format!(
                    "message {target} is someone else's: only its sender edits it, and only its sender or an operator deletes it"
                ),
            ),
            Some(Outcome::Refused(Refusal::Unchanged)) => (
                code::UNCHANGED,
                "that reaction is there already (or was not there to take back)".into(),
            ),
            Some(Outcome::Refused(Refusal::TooManyEmojis)) => (
                code::BAD_TEXT,
                format!(
                    "message {target} has {} different reactions already",
                    chirp_store::MAX_EMOJIS
                ),
            ),
            _ => (
                code::STORE,
                "the server could not store the change; try again".into(),
            ),
        };
        self.fail(session, None, code, m);
    }

    /// A stored edit, deletion or reaction being fanned out: the message it changes, if in
    /// the replay cache, is changed there too (and, for a deletion, the texts of its edits).
    pub(super) fn amend_cache(&mut self, event: &Record) {
        let Some(target) = event.target else {
            return;
        };
        let Some(cv) = self.convs.get_mut(&event.conv) else {
            return;
        };
        let mut freed = 0usize;
        for r in cv.recent.iter_mut() {
            if r.id == target && kind::is_message(r.kind) {
                match event.kind {
                    kind::EDIT => {
                        freed = freed.wrapping_add(r.text.len());
                        r.text = event.text.clone();
                        freed = freed.wrapping_sub(r.text.len());
                        r.edited = true;
                    }
                    kind::DELETE => {
                        freed = freed.wrapping_add(r.text.len());
                        r.text = String::new();
                        r.deleted = true;
                        r.reactions = Vec::new();
                    }
                    kind::REACT | kind::UNREACT => {
                        let count = event.reactions.first().map_or(0, |x| x.1);
                        match r.reactions.iter().position(|x| x.0 == event.text) {
                            Some(i) if count == 0 => {
                                r.reactions.remove(i);
                            }
                            Some(i) => r.reactions[i].1 = count,
                            None if count > 0 => r.reactions.push((event.text.clone(), count)),
                            None => {}
                        }
                    }
                    _ => {}
                }
            } else if event.kind == kind::DELETE && r.kind == kind::EDIT && r.target == Some(target)
            {
                freed = freed.wrapping_add(r.text.len());
                r.text = String::new();
                r.deleted = true;
            }
        }
        // The bytes the cache holds follow its texts (a longer edit grows it).
        let delta = freed as isize;
        cv.bytes = cv.bytes.saturating_add_signed(-delta);
        self.cache_bytes = self.cache_bytes.saturating_add_signed(-delta);
    }

    /// A `typing` request: forwarded to whoever sees the conversation, at most once per
    /// user and conversation every [`TYPING_INTERVAL_MS`].
    pub(super) fn typing_request(
        &mut self,
        now_ms: i64,
        session: SessionId,
        key: Key,
        room: Option<String>,
        to: Option<String>,
    ) {
        let (conv, dm) = match self.conv_named(&key, room.as_deref(), to.as_deref()) {
            Ok(c) => c,
            Err((code, m)) => return self.fail(session, None, code, m),
        };
        if dm.is_none() && self.may_speak(&conv, &key).is_err() {
            self.stats.typing_refused += 1;
            return;
        }
        if !self.typing.take(now_ms, key, &conv) {
            self.stats.typing_dropped += 1;
            return;
        }
        let from = self.nick_of.get(&key).cloned().unwrap_or_default();
        let to = dm.map(|d| d.0);
        self.stats.typing += 1;
        self.typing_here(&conv, key, to, from.clone());
        if let Some(node) = self.node() {
            let m = Bus::Typing {
                node,
                conv: conv.clone(),
                from: key,
                nick: from,
                to,
            };
            let subject = match to {
                None => Subject::Room(conv),
                Some(to) => Subject::User(to),
            };
            self.publish(subject, &m);
        }
    }

    /// Shows `nick` (`key`) typing in `conv` to the sessions here that see it, but `key`'s
    /// own (`to`: the other party of a DM).
    pub(super) fn typing_here(&mut self, conv: &str, key: Key, to: Option<Key>, nick: String) {
        let room = to.is_none().then(|| conv.to_owned());
        let data = enc(&ServerMsg::Typing {
            conv: conv.to_owned(),
            room,
            from: nick,
        });
        let sessions: Vec<SessionId> = match to {
            None => self
                .room_sessions(conv)
                .into_iter()
                .filter(|s| self.sessions.get(s).is_some_and(|s| s.key != key))
                .collect(),
            Some(to) if to != key => self
                .users
                .get(&to)
                .map(|u| u.sessions.to_vec())
                .unwrap_or_default(),
            Some(_) => Vec::new(),
        };
        for s in sessions {
            self.push_send(s, data.clone());
        }
    }
}
