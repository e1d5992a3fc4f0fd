//! Unread counts that follow the user's read markers: a conversation's unread messages are
//! those shown with an id above its marker, so a marker moved on another device (a
//! `marker` from the server) clears them here too.

use std::collections::{BTreeSet, HashMap};

/// Most unread ids remembered per conversation: past this, the oldest are forgotten (the
/// count stays at this).
pub const MAX_TRACKED: usize = 10_000;

/// Unread counts per conversation.
#[derive(Debug, Default)]
pub struct Unread {
    convs: HashMap<String, Conv>,
}

#[derive(Debug, Default)]
struct Conv {
    /// The last id read.
    marker: u64,
    /// Ids shown above the marker.
    above: BTreeSet<u64>,
}

impl Unread {
    /// A message of someone else's was shown: returns the conversation's unread count.
    pub fn message(&mut self, conv: &str, id: u64) -> usize {
        let c = self.convs.entry(conv.to_owned()).or_default();
        if id > c.marker {
            c.above.insert(id);
            if c.above.len() > MAX_TRACKED {
                c.above.pop_first();
            }
        }
        c.above.len()
    }

    /// The user's marker in `conv` is at `id` (markers only move forward; an older one
    /// changes nothing): returns the unread count.
    pub fn marker(&mut self, conv: &str, id: u64) -> usize {
        let c = self.convs.entry(conv.to_owned()).or_default();
        if id > c.marker {
            c.marker = id;
            c.above = c.above.split_off(&(id + 1));
        }
        c.above.len()
    }

    /// The unread count of `conv`.
    pub fn count(&self, conv: &str) -> usize {
        self.convs.get(conv).map_or(0, |c| c.above.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_clears_what_is_at_or_below_it_and_never_goes_back() {
        let mut u = Unread::default();
        for id in 1..=5 {
            assert_eq!(u.message("#a", id), id as usize);
        }
        assert_eq!(u.message("#b", 1), 1);
        assert_eq!(u.marker("#a", 3), 2);
        assert_eq!(u.marker("#a", 2), 2, "back: nothing changes");
        assert_eq!(u.message("#a", 3), 2, "at the marker: read already");
        assert_eq!(u.message("#a", 6), 3);
        assert_eq!(u.marker("#a", 6), 0);
        assert_eq!(u.count("#b"), 1);
        assert_eq!(u.count("#c"), 0);
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let mut u = Unread::default();
        for id in 1..=(MAX_TRACKED as u64 + 10) {
            u.message("#a", id);
        }
        assert_eq!(u.count("#a"), MAX_TRACKED);
        assert_eq!(u.marker("#a", 20), MAX_TRACKED - 10);
    }
}
