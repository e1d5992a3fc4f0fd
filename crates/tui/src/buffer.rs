//! One buffer's state: its lines, unread counts, marker, scroll position and members.

use std::collections::VecDeque;

use crate::api::{BufferId, ReactionCount, UnixMs};
use crate::editor::InputHistory;

/// Where one of our own messages stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendState {
    /// Not sent from this UI (someone else's, or ours from history).
    None,
    /// Handed to the network, not yet confirmed stored.
    Pending { local_id: u64 },
    /// Confirmed stored by the server.
    Delivered,
    /// Not delivered; Alt+R sends it again under the same `local_id`.
    Failed { local_id: u64, reason: String },
}

/// What kind of status line an event makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Join,
    Part,
    Quit,
    Nick,
    Topic,
    Info,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Chat {
        id: Option<u64>,
        from: String,
        text: String,
        action: bool,
        own: bool,
        /// Mentions our nick.
        highlight: bool,
        send: SendState,
        /// Edited since it was sent: shown with "(edited)".
        edited: bool,
        /// Deleted: shown as "message deleted" (`text` is empty).
        deleted: bool,
        /// Reaction counts, shown after the text.
        reactions: Vec<ReactionCount>,
    },
    Event {
        kind: EventKind,
        text: String,
    },
}

/// One line (before wrapping) of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Unique for the App's lifetime; identifies the entry for the unread marker and search
    /// even when history is inserted above it.
    pub(crate) seq: u64,
    pub(crate) ts: UnixMs,
    pub(crate) kind: EntryKind,
}

impl Entry {
    pub(crate) fn text(&self) -> &str {
        match &self.kind {
            EntryKind::Chat { text, .. } | EntryKind::Event { text, .. } => text,
        }
    }

    pub(crate) fn id(&self) -> Option<u64> {
        match &self.kind {
            EntryKind::Chat { id, .. } => *id,
            EntryKind::Event { .. } => None,
        }
    }
}

/// Whether older history can be fetched for a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum History {
    /// The server may have older messages.
    More,
    /// A `FetchHistory` is out; do not send another.
    Fetching,
    /// The start of history is loaded (or the buffer has no server history).
    Complete,
}

#[derive(Debug)]
pub(crate) struct Buffer {
    pub(crate) id: BufferId,
    pub(crate) entries: VecDeque<Entry>,
    pub(crate) unread: u32,
    pub(crate) highlights: u32,
    /// The last entry seen when the user left this buffer; the unread marker line is drawn
    /// below it while newer entries exist.
    pub(crate) marker_after: Option<u64>,
    /// Rows scrolled up from the bottom (0: following new messages).
    pub(crate) scroll: usize,
    /// Members, sorted case-insensitively (rooms only).
    pub(crate) members: Vec<String>,
    pub(crate) topic: Option<String>,
    /// For rooms: whether we are in it (a parted room keeps its buffer).
    pub(crate) joined: bool,
    pub(crate) history: History,
    pub(crate) input_history: InputHistory,
    /// Who is typing here, each until when it is shown (at most [`MAX_TYPING`], sorted by
    /// arrival).
    pub(crate) typing: Vec<(String, UnixMs)>,
    /// When we last told the server we are typing here.
    pub(crate) typing_sent: Option<UnixMs>,
    /// The newest server id seen live here (messages and their changes).
    pub(crate) newest_id: Option<u64>,
    /// The read marker as far as we know it: sent by us, or reported by the server.
    pub(crate) read_id: u64,
}

/// Most people shown typing in one buffer (past this, the oldest notice is forgotten).
pub(crate) const MAX_TYPING: usize = 8;

impl Buffer {
    pub(crate) fn new(id: BufferId) -> Buffer {
        let history = match id {
            BufferId::Status => History::Complete,
            _ => History::More,
        };
        Buffer {
            joined: matches!(id, BufferId::Room(_)),
            id,
            entries: VecDeque::new(),
            unread: 0,
            highlights: 0,
            marker_after: None,
            scroll: 0,
            members: Vec::new(),
            topic: None,
            history,
            input_history: InputHistory::default(),
            typing: Vec::new(),
            typing_sent: None,
            newest_id: None,
            read_id: 0,
        }
    }

    /// The chat entry of server id `id`, if it is loaded.
    pub(crate) fn chat_mut(&mut self, id: u64) -> Option<&mut EntryKind> {
        self.entries
            .iter_mut()
            .rev()
            .find(|e| e.id() == Some(id))
            .map(|e| &mut e.kind)
    }

    /// Notes a live id of this conversation (for the read marker).
    pub(crate) fn saw_id(&mut self, id: u64) {
        self.newest_id = Some(self.newest_id.map_or(id, |n| n.max(id)));
    }

    /// `nick` is typing, shown until `until`.
    pub(crate) fn typing(&mut self, nick: &str, until: UnixMs) {
        self.typing
            .retain(|(n, _)| n.to_lowercase() != nick.to_lowercase());
        if self.typing.len() >= MAX_TYPING {
            self.typing.remove(0);
        }
        self.typing.push((nick.to_owned(), until));
    }

    /// `nick` stopped typing (a message of theirs came).
    pub(crate) fn stopped_typing(&mut self, nick: &str) {
        self.typing
            .retain(|(n, _)| n.to_lowercase() != nick.to_lowercase());
    }

    pub(crate) fn has_id(&self, id: u64) -> bool {
        // Recent ids are near the end, where live duplicates (echoes) land.
        self.entries.iter().rev().any(|e| e.id() == Some(id))
    }

    pub(crate) fn set_members(&mut self, mut nicks: Vec<String>) {
        nicks.sort_by_key(|n| n.to_lowercase());
        nicks.dedup();
        self.members = nicks;
    }

    pub(crate) fn add_member(&mut self, nick: &str) {
        if !self.members.iter().any(|m| m == nick) {
            let at = self
                .members
                .partition_point(|m| m.to_lowercase() < nick.to_lowercase());
            self.members.insert(at, nick.to_owned());
        }
    }

    /// Removes `nick`; whether it was there.
    pub(crate) fn remove_member(&mut self, nick: &str) -> bool {
        let before = self.members.len();
        self.members.retain(|m| m != nick);
        self.members.len() != before
    }

    /// Nicks for Tab completion: recent speakers first, then the other members.
    pub(crate) fn completion_nicks(&self) -> Vec<&str> {
        let mut nicks: Vec<&str> = Vec::new();
        for e in self.entries.iter().rev().take(200) {
            if let EntryKind::Chat {
                from, own: false, ..
            } = &e.kind
            {
                if !nicks.contains(&from.as_str()) {
                    nicks.push(from);
                }
            }
        }
        for m in &self.members {
            if !nicks.contains(&m.as_str()) {
                nicks.push(m);
            }
        }
        if let BufferId::Dm(peer) = &self.id {
            if !nicks.contains(&peer.as_str()) {
                nicks.push(peer);
            }
        }
        nicks
    }
}
