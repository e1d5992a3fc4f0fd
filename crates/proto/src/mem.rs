//! Giving memory back when a collection empties (issue 14: an idle connection must be small).
//!
//! A `BTreeMap` keeps its root node after its last entry is removed, and a `VecDeque` keeps
//! its buffer: a connection that goes quiet after a burst would hold them for good, a few
//! hundred bytes each, in every one of its maps and queues. Called where a collection shrinks;
//! constant work.

use std::collections::{BTreeMap, VecDeque};

/// See the [module documentation](self).
pub(crate) trait ReleaseIfEmpty {
    /// Frees the collection's memory if it holds nothing.
    fn release_if_empty(&mut self);
}

impl<K, V> ReleaseIfEmpty for BTreeMap<K, V> {
    fn release_if_empty(&mut self) {
        if self.is_empty() {
            *self = BTreeMap::new();
        }
    }
}

impl<T> ReleaseIfEmpty for VecDeque<T> {
    fn release_if_empty(&mut self) {
        if self.is_empty() && self.capacity() > 0 {
            *self = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_collections_hold_no_memory() {
        let mut d: VecDeque<u8> = (0..100).collect();
        d.clear();
        assert!(d.capacity() > 0);
        d.release_if_empty();
        assert_eq!(d.capacity(), 0);
        d.push_back(1);
        d.release_if_empty();
        assert_eq!(
            d.len(),
            1,
            "a collection with something in it is left alone"
        );

        let mut m: BTreeMap<u64, u64> = (0..100).map(|i| (i, i)).collect();
        m.retain(|_, _| false);
        m.release_if_empty();
        assert!(m.is_empty());
    }
}
