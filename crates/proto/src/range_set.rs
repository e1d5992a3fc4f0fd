//! A set of `u64`s stored as disjoint half-open ranges.
//!
//! Used for received packet numbers (to build ACK frames), for acknowledged and lost byte
//! ranges of the send stream, and for the received byte ranges of the receive stream.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges, keyed by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// True if no value is in the set.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of disjoint ranges.
    pub(crate) fn range_count(&self) -> usize {
        self.map.len()
    }

    /// Is `v` in the set?
    pub(crate) fn contains(&self, v: u64) -> bool {
        self.map
            .range(..=v)
            .next_back()
            .is_some_and(|(_, &end)| v < end)
    }

    /// Is all of `r` in the set?
    pub(crate) fn contains_range(&self, r: Range<u64>) -> bool {
        r.is_empty()
            || self
                .map
                .range(..=r.start)
                .next_back()
                .is_some_and(|(_, &end)| r.end <= end)
    }

    /// Adds `r`, merging with neighbours. Returns true if any value was new.
    pub(crate) fn insert(&mut self, r: Range<u64>) -> bool {
        if r.is_empty() || self.contains_range(r.clone()) {
            return false;
        }
        let (mut start, mut end) = (r.start, r.end);
        // Merge with a range that starts before and touches us.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
                self.map.remove(&s);
            }
        }
        // Swallow ranges that start inside or adjacent to us.
        while let Some((&s, &e)) = self.map.range(start..=end).next() {
            end = end.max(e);
            self.map.remove(&s);
        }
        self.map.insert(start, end);
        true
    }

    /// Removes `r` from the set, splitting ranges as needed.
    pub(crate) fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .map
            .range(..r.end)
            .rev()
            .take_while(|&(_, &e)| e > r.start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            if s < r.start {
                self.map.insert(s, r.start);
            }
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// Smallest value, if any.
    pub(crate) fn min(&self) -> Option<u64> {
        self.map.first_key_value().map(|(&s, _)| s)
    }

    /// Largest value, if any.
    #[cfg(test)]
    pub(crate) fn max(&self) -> Option<u64> {
        self.map.last_key_value().map(|(_, &e)| e - 1)
    }

    /// The lowest range.
    pub(crate) fn first(&self) -> Option<Range<u64>> {
        self.map.first_key_value().map(|(&s, &e)| s..e)
    }

    /// Removes and returns the lowest range.
    pub(crate) fn pop_first(&mut self) -> Option<Range<u64>> {
        self.map.pop_first().map(|(s, e)| s..e)
    }

    /// Removes the lowest range(s) until at most `n` remain. Used to bound ACK state.
    pub(crate) fn truncate_low(&mut self, n: usize) {
        while self.map.len() > n {
            self.map.pop_first();
        }
    }

    /// Ranges in ascending order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }

    /// The parts of `r` not in the set, ascending.
    pub(crate) fn gaps_in(&self, r: Range<u64>) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        if r.is_empty() {
            return out;
        }
        let mut pos = r.start;
        let first = self
            .map
            .range(..=r.start)
            .next_back()
            .map(|(&s, &e)| (s, e));
        for (s, e) in first
            .into_iter()
            .chain(self.map.range(r.start + 1..r.end).map(|(&s, &e)| (s, e)))
        {
            if e <= pos {
                continue;
            }
            if s > pos {
                out.push(pos..s.min(r.end));
            }
            pos = pos.max(e);
            if pos >= r.end {
                break;
            }
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
                // Ranges are disjoint and non-adjacent.
                let rs: Vec<_> = s.iter().collect();
                for w in rs.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
            }
        }
    }
}
