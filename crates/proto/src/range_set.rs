//! A set of `u64`s stored as disjoint half-open ranges.
//!
//! Used for received packet numbers (to build ACK frames), for acknowledged and lost byte
//! ranges of the send stream, and for the received byte ranges of the receive stream.
//!
//! The ranges live in one sorted `Vec`: a connection's sets hold one range, or a few while
//! packets are missing (bounded by the callers: `MAX_SEGMENTS`, the ACK range limit), so a
//! binary search and a short move beat a tree's nodes, and a one-range set costs one small
//! allocation rather than a B-tree node (issue 14: an idle connection must be small).

use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges, in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// True if no value is in the set.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of disjoint ranges.
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// The range holding `v`, if any: the last one starting at or before it.
    fn holding(&self, v: u64) -> Option<&Range<u64>> {
        let i = self.ranges.partition_point(|r| r.start <= v);
        self.ranges[..i].last().filter(|r| v < r.end)
    }

    /// Is `v` in the set?
    pub(crate) fn contains(&self, v: u64) -> bool {
        self.holding(v).is_some()
    }

    /// Is all of `r` in the set?
    pub(crate) fn contains_range(&self, r: Range<u64>) -> bool {
        r.is_empty() || self.holding(r.start).is_some_and(|h| r.end <= h.end)
    }

    /// Adds `r`, merging with neighbours. Returns true if any value was new.
    pub(crate) fn insert(&mut self, r: Range<u64>) -> bool {
        if r.is_empty() || self.contains_range(r.clone()) {
            return false;
        }
        // The ranges that overlap or touch `r` become one.
        let lo = self.ranges.partition_point(|x| x.end < r.start);
        let hi = self.ranges.partition_point(|x| x.start <= r.end);
        let merged = match self.ranges.get(lo..hi) {
            Some([first, .., last]) => first.start.min(r.start)..last.end.max(r.end),
            Some([only]) => only.start.min(r.start)..only.end.max(r.end),
            _ => r,
        };
        self.ranges.splice(lo..hi, std::iter::once(merged));
        if hi - lo > 1 {
            // Holes healed: the set may hold far fewer ranges than it has room for.
            self.release();
        }
        true
    }

    /// Removes `r` from the set, splitting ranges as needed.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let lo = self.ranges.partition_point(|x| x.end <= r.start);
        let hi = self.ranges.partition_point(|x| x.start < r.end);
        if lo >= hi {
            return;
        }
        let left = (self.ranges[lo].start < r.start).then(|| self.ranges[lo].start..r.start);
        let right = (self.ranges[hi - 1].end > r.end).then(|| r.end..self.ranges[hi - 1].end);
        self.ranges.splice(lo..hi, left.into_iter().chain(right));
        self.release();
    }

    /// Gives back memory the set no longer needs: all of it once empty, most of it after a
    /// burst of holes has healed.
    fn release(&mut self) {
        if self.ranges.is_empty() {
            self.ranges = Vec::new();
        } else if self.ranges.capacity() > 16 && self.ranges.len() <= self.ranges.capacity() / 4 {
            self.ranges.shrink_to(self.ranges.len() * 2);
        }
    }

    /// Smallest value, if any.
    pub(crate) fn min(&self) -> Option<u64> {
        self.ranges.first().map(|r| r.start)
    }

    /// Largest value, if any.
    #[cfg(test)]
    pub(crate) fn max(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.end - 1)
    }

    /// The lowest range.
    pub(crate) fn first(&self) -> Option<Range<u64>> {
        self.ranges.first().cloned()
    }

    /// Removes and returns the lowest range.
    pub(crate) fn pop_first(&mut self) -> Option<Range<u64>> {
        if self.ranges.is_empty() {
            return None;
        }
        let first = self.ranges.remove(0);
        self.release();
        Some(first)
    }

    /// Removes the lowest range(s) until at most `n` remain. Used to bound ACK state.
    pub(crate) fn truncate_low(&mut self, n: usize) {
        if self.ranges.len() > n {
            self.ranges.drain(..self.ranges.len() - n);
            self.release();
        }
    }

    /// Ranges in ascending order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + '_ {
        self.ranges.iter().cloned()
    }

    /// The parts of `r` not in the set, ascending.
    pub(crate) fn gaps_in(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if r.is_empty() {
            return out;
        }
        let mut pos = r.start;
        let from = self.ranges.partition_point(|x| x.end <= r.start);
        for x in self.ranges[from..].iter().take_while(|x| x.start < r.end) {
            if x.start > pos {
                out.push(pos..x.start);
            }
            pos = pos.max(x.end);
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_and_splits() {
        let mut s = RangeSet::new();
        assert!(s.insert(0..2));
        assert!(s.insert(4..6));
        assert!(s.insert(2..4));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..6]);
        assert!(!s.insert(1..5));
        s.remove(2..3);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0..2, 3..6]);
        assert_eq!(s.gaps_in(0..8), vec![2..3, 6..8]);
        assert_eq!(
            s.gaps_in(4..4),
            vec![],
            "empty ranges have no gaps (and do not panic)"
        );
        assert_eq!(s.gaps_in(9..9), vec![]);
        assert_eq!(s.min(), Some(0));
        assert_eq!(s.max(), Some(5));
    }

    proptest! {
        /// The set behaves exactly like a `BTreeSet` of its values.
        #[test]
        fn matches_model(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..8), 0..64)) {
            let mut s = RangeSet::new();
            let mut model = BTreeSet::new();
            for (ins, start, len) in ops {
                let r = start..start + len;
                if ins {
                    let new = r.clone().any(|v| !model.contains(&v));
                    prop_assert_eq!(s.insert(r.clone()), new);
                    model.extend(r);
                } else {
                    s.remove(r.clone());
                    for v in r { model.remove(&v); }
                }
                for v in 0..80 {
                    prop_assert_eq!(s.contains(v), model.contains(&v));
                }
                let gaps: Vec<u64> = s.gaps_in(10..50).into_iter().flatten().collect();
                let expect: Vec<u64> = (10..50).filter(|v| !model.contains(v)).collect();
                prop_assert_eq!(gaps, expect);
                prop_assert_eq!(s.min(), model.first().copied());
                prop_assert_eq!(s.max(), model.last().copied());
                // An empty set holds no memory.
                prop_assert!(!s.is_empty() || s.ranges.capacity() == 0);
                // Ranges are disjoint and non-adjacent.
                let rs: Vec<_> = s.iter().collect();
                for w in rs.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
            }
        }
    }
}
