//! Read markers and search: what a user has read, and finding what was said.
//!
//! # Read markers
//!
//! A user (a key) has one marker per conversation: the last id it has read there. A `read`
//! moves it forward only (one at or below it changes nothing), is stored
//! ([`Op::ReadMarker`], which keeps the larger of two in the store as well), and is told to
//! every session of the user ([`ServerMsg::Marker`]): on this node at once, on the others
//! through the user's bus subject ([`Bus::Marker`]), which every node with a session of the
//! user follows. So reading on one device clears the unread count on the others.
//!
//! The markers of a user are held in memory only while it is connected: when its first
//! session says `hello`, the core asks the store for them ([`Output::ReadMarkers`], at most
//! [`MAX_MARKERS`]) and sends them to each of its sessions ([`ServerMsg::Markers`], only when
//! there are any); they are forgotten with its last session. A user has at most
//! [`MAX_MARKERS`]; a `read` of one more conversation is refused (`too_many_markers`).
//!
//! # Search
//!
//! A `search` names a room the user is in, or the DM conversation with a nick: never another
//! conversation, so a user only ever searches what it may read (a banned or kicked user is no
//! longer in the room; an invite-only room is joined only by those let in). Its cost is
//! bounded before the store sees it: at most [`MAX_SEARCH_QUERY`] bytes and
//! [`chirp_store::MAX_SEARCH_TERMS`] words, a page of at most [`MAX_SEARCH_PAGE`], reads of a
//! session counted with its `history` reads ([`MAX_HISTORY_READS`]) and queued with every
//! other store read ([`MAX_READS`](super::MAX_READS)); the store stops a search after
//! [`chirp_store::SEARCH_TIMEOUT`]. The answer is checked again when it comes: a user put
//! out of the room meanwhile gets no hits.

use std::collections::btree_map::Entry;

use chirp_store::{Op, Record, search_terms};
use tracing::debug;

use super::{MAX_HISTORY_READS, Output, Server, dm_conv, dm_has, to_msg};
use crate::bus::{Bus, Subject};
use crate::names;
use crate::server::{Key, SessionId};
use crate::wire::{
    ClientMsg, MAX_MARKERS, MAX_SEARCH_PAGE, MAX_SEARCH_QUERY, ReadMarker, ServerMsg, code,
};

/// A connected user's read markers.
#[derive(Debug, Default)]
pub(super) struct Markers {
    /// Conversation → last id read: the store's (once read) merged with every move since.
    by_conv: std::collections::BTreeMap<String, u64>,
    /// The store's markers have been read (or failed to be): `by_conv` is what there is.
    loaded: bool,
}

impl Server {
    /// A `hello` was accepted for `session` of `key`: its markers are sent to it, or read
    /// first if this is the user's first session.
    pub(super) fn markers_hello(&mut self, session: SessionId, key: Key) {
        let Some(user) = self.users.get(&key) else {
            return;
        };
        if user.markers.loaded {
            self.send_markers(session, key);
        } else if user.sessions.len() == 1 {
            // The first session: nobody asked yet. (Later sessions get them with it.)
            self.read(Output::ReadMarkers {
                key,
                limit: MAX_MARKERS,
            });
        }
    }

    /// The answer to [`Output::ReadMarkers`]: the markers of `key` as stored, or why they
    /// could not be read. Each of the user's sessions gets them (merged with any move made
    /// meanwhile).
    pub fn markers_loaded(&mut self, key: Key, markers: Result<Vec<(String, u64)>, String>) {
        self.read_done();
        let Some(user) = self.users.get_mut(&key) else {
            // Gone meanwhile: nothing to tell.
            return;
        };
        user.markers.loaded = true;
        match markers {
            Ok(stored) => {
                for (conv, id) in stored {
                    if user.markers.by_conv.len() >= MAX_MARKERS
                        && !user.markers.by_conv.contains_key(&conv)
                    {
                        break;
                    }
                    let e = user.markers.by_conv.entry(conv).or_default();
                    *e = (*e).max(id);
                }
                for session in user.sessions.clone() {
                    self.send_markers(session, key);
                }
            }
            Err(e) => {
                debug!(error = %e, "read markers unreadable");
                let m = "your read markers could not be read; unread counts start from now";
                for session in user.sessions.clone() {
                    self.fail(session, None, code::STORE, m.into());
                }
            }
        }
    }

    fn send_markers(&mut self, session: SessionId, key: Key) {
        let Some(user) = self.users.get(&key) else {
            return;
        };
        if user.markers.by_conv.is_empty() {
            return;
        }
        let markers = user
            .markers
            .by_conv
            .iter()
            .map(|(conv, &id)| ReadMarker {
                conv: conv.clone(),
                id,
            })
            .collect();
        self.send(session, &ServerMsg::Markers { markers });
    }

    /// A `read`: `key` has read `conv` up to `id`.
    pub(super) fn read_request(&mut self, session: SessionId, key: Key, conv: String, id: u64) {
        let conv = if conv.starts_with('@') {
            conv
        } else {
            names::fold(&conv)
        };
        let readable = if conv.starts_with('@') {
            dm_has(&conv, &key)
        } else {
            self.in_room(&key, &conv)
        };
        if !readable {
            let m = format!("{conv} is not a room you are in nor one of your conversations");
            return self.fail(session, None, code::NOT_IN_ROOM, m);
        }
        // Not past the conversation's last id: a marker says what was read.
        let id = id.min(self.convs.get(&conv).map_or(0, |c| c.committed));
        if self.move_marker(key, &conv, id) == Moved::Full {
            let m = format!("at most {MAX_MARKERS} conversations have read markers");
            self.fail(session, None, code::TOO_MANY_MARKERS, m);
        }
    }

    /// Moves `key`'s marker in `conv` to `id` if that is forward: stored, told to the user's
    /// sessions here and published to the other nodes.
    fn move_marker(&mut self, key: Key, conv: &str, id: u64) -> Moved {
        let moved = self.set_marker(key, conv, id);
        if moved == Moved::Forward {
            self.persist(
                vec![Op::ReadMarker {
                    key,
                    conv: conv.to_owned(),
                    upto: id,
                }],
                Vec::new(),
            );
            self.tell_marker(key, conv, id);
            self.publish(
                Subject::User(key),
                &Bus::Marker {
                    key,
                    conv: conv.to_owned(),
                    id,
                },
            );
        }
        moved
    }

    /// Sets the marker in memory if `id` is past it.
    fn set_marker(&mut self, key: Key, conv: &str, id: u64) -> Moved {
        let Some(user) = self.users.get_mut(&key) else {
            return Moved::Not;
        };
        let full = user.markers.by_conv.len() >= MAX_MARKERS;
        match user.markers.by_conv.entry(conv.to_owned()) {
            Entry::Occupied(mut e) if *e.get() < id => {
                e.insert(id);
                Moved::Forward
            }
            Entry::Occupied(_) => Moved::Not,
            Entry::Vacant(_) if full => Moved::Full,
            Entry::Vacant(_) if id == 0 => Moved::Not,
            Entry::Vacant(e) => {
                e.insert(id);
                Moved::Forward
            }
        }
    }

    fn tell_marker(&mut self, key: Key, conv: &str, id: u64) {
        let Some(user) = self.users.get(&key) else {
            return;
        };
        // Before the store's markers are read, the sessions wait for them all (with this one
        // merged in).
        if !user.markers.loaded {
            return;
        }
        let m = super::enc(&ServerMsg::Marker {
            conv: conv.to_owned(),
            id,
        });
        for session in user.sessions.clone() {
            self.push_send(session, m.clone());
        }
    }

    /// Another node moved a marker of `key` (a bus message, checked by its decoder).
    pub(super) fn remote_marker(&mut self, key: Key, conv: &str, id: u64) {
        if self.set_marker(key, conv, id) == Moved::Forward {
            self.tell_marker(key, conv, id);
        }
    }

    /// The conversation a `history` or `search` (`request`) may read: a room `key` is in
    /// (folded), or its DM conversation with the holder of a nick.
    pub(super) fn readable_conv(
        &self,
        key: &Key,
        room: Option<&str>,
        with: Option<&str>,
        request: &str,
    ) -> Result<String, (&'static str, String)> {
        match (room, with) {
            (Some(r), None) => {
                let r = names::fold(r);
                if self.in_room(key, &r) {
                    Ok(r)
                } else {
                    Err((code::NOT_IN_ROOM, format!("join {r} to read its history")))
                }
            }
            (None, Some(w)) => match self.nick_owner.get(&names::fold(w)) {
                Some((_, other)) => Ok(dm_conv(key, other)),
                None => Err((code::NO_SUCH_NICK, format!("no user is called '{w}'"))),
            },
            _ => Err((
                code::BAD_REQUEST,
                format!("{request} needs exactly one of room and with"),
            )),
        }
    }

    /// A `search`: refused (an `error`, then an empty `search_results` with its `id`), or
    /// read from the store.
    pub(super) fn search_request(&mut self, session: SessionId, key: Key, m: ClientMsg) {
        let ClientMsg::Search {
            id,
            room,
            with,
            q,
            before,
            limit,
        } = m
        else {
            return;
        };
        let conv = self.readable_conv(&key, room.as_deref(), with.as_deref(), "search");
        let checked = conv.and_then(|conv| {
            if q.len() > MAX_SEARCH_QUERY {
                return Err((
                    code::BAD_REQUEST,
                    format!("a search is at most {MAX_SEARCH_QUERY} bytes"),
                ));
            }
            let terms = search_terms(&q).ok_or_else(|| {
                (
                    code::BAD_REQUEST,
                    format!(
                        "search for 1 to {} words (letters and digits)",
                        chirp_store::MAX_SEARCH_TERMS
                    ),
                )
            })?;
            match self.sessions.get(&session) {
                Some(s) if s.history_reads >= MAX_HISTORY_READS => Err((
                    code::BUSY,
                    format!(
                        "too many history and search reads at once (at most {MAX_HISTORY_READS}); ask again after an answer"
                    ),
                )),
                _ => Ok((conv, terms)),
            }
        });
        match checked {
            Ok((conv, terms)) => {
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.history_reads += 1;
                }
                self.stats.searches += 1;
                self.read(Output::Search {
                    session,
                    id,
                    conv,
                    terms,
                    before,
                    limit: limit.clamp(1, MAX_SEARCH_PAGE) as usize,
                });
            }
            Err((code, message)) => {
                self.fail(session, None, code, message);
                let conv = self.history_conv(&key, room.as_deref(), with.as_deref());
                self.send_results(session, id, conv, &[], false);
            }
        }
    }

    /// The answer to [`Output::Search`] for `session` (`id`: the request's; `limit`: the
    /// page size asked of the store), or why the store could not search.
    pub fn search_loaded(
        &mut self,
        session: SessionId,
        id: Option<u64>,
        conv: &str,
        limit: usize,
        hits: Result<Vec<Record>, String>,
    ) {
        self.read_done();
        let key = match self.sessions.get_mut(&session) {
            Some(s) if !s.closing => {
                s.history_reads = s.history_reads.saturating_sub(1);
                s.key
            }
            _ => return,
        };
        // Still readable: the user may have been put out of the room meanwhile.
        let readable = if conv.starts_with('@') {
            dm_has(conv, &key)
        } else {
            self.in_room(&key, conv)
        };
        match hits {
            Ok(hits) if readable => {
                let more = hits.len() >= limit;
                self.send_results(session, id, conv.to_owned(), &hits, more);
            }
            Ok(_) => {
                let m = format!("join {conv} to read its history");
                self.fail(session, None, code::NOT_IN_ROOM, m);
                self.send_results(session, id, conv.to_owned(), &[], false);
            }
            Err(e) => {
                debug!(session, conv, error = %e, "search failed");
                let m = format!(
                    "the search of {conv} failed (or took too long); try fewer common words"
                );
                self.fail(session, None, code::STORE, m);
                self.send_results(session, id, conv.to_owned(), &[], false);
            }
        }
    }

    fn send_results(
        &mut self,
        session: SessionId,
        id: Option<u64>,
        conv: String,
        hits: &[Record],
        more: bool,
    ) {
        let hits = hits.iter().map(|r| to_msg(r, true)).collect();
        self.send(
            session,
            &ServerMsg::SearchResults {
                id,
                conv,
                hits,
                more,
            },
        );
    }

    /// Whether a queued read is still wanted when its turn comes ([`Server::read_done`]):
    /// `Some` for the reads of this module.
    pub(super) fn reading_wanted(&mut self, read: &Output) -> Option<bool> {
        match read {
            Output::ReadMarkers { key, .. } => Some(
                self.users
                    .get(key)
                    .is_some_and(|u| !u.markers.loaded && !u.sessions.is_empty()),
            ),
            Output::Search { session, .. } => Some(match self.sessions.get_mut(session) {
                Some(s) if s.closing => {
                    s.history_reads = s.history_reads.saturating_sub(1);
                    false
                }
                s => s.is_some(),
            }),
            _ => None,
        }
    }
}

/// What [`Server::set_marker`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moved {
    Forward,
    Not,
    /// A new conversation past [`MAX_MARKERS`].
    Full,
}
