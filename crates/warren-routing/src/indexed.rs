//! An insertion-ordered hash map with O(1) removal, and a reference-counted destination set
//! built on it.
//!
//! Routing wants to copy a set of destinations into the caller's `Vec` as a plain slice walk,
//! while binding and unbinding want O(1) lookups; keeping the values in a `Vec` and a
//! key → position index gives both. Removal swaps the last entry into the hole, so iteration
//! order is insertion order only until the first removal; nothing relies on a particular order.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Clone)]
pub(crate) struct IndexedMap<K, V> {
    entries: Vec<(K, V)>,
    index: HashMap<K, usize>,
}

impl<K, V> Default for IndexedMap<K, V> {
    fn default() -> Self {
        IndexedMap {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash, V> IndexedMap<K, V> {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let pos = *self.index.get(key)?;
        self.entries.get(pos).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let pos = *self.index.get(key)?;
        self.entries.get_mut(pos).map(|(_, v)| v)
    }

    /// Applies `update` to the value for `key`, inserting `make()` first if it is absent.
    /// (A closure rather than a returned `&mut V` keeps this free of impossible-`None` arms.)
    pub(crate) fn upsert(
        &mut self,
        key: &K,
        make: impl FnOnce() -> V,
        update: impl FnOnce(&mut V),
    ) {
        if let Some(value) = self.get_mut(key) {
            update(value);
            return;
        }
        let mut value = make();
        update(&mut value);
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key.clone(), value));
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let pos = self.index.remove(key)?;
        if pos >= self.entries.len() {
            return None;
        }
        let (_, value) = self.entries.swap_remove(pos);
        if let Some((moved, _)) = self.entries.get(pos) {
            if let Some(slot) = self.index.get_mut(moved) {
                *slot = pos;
            }
        }
        Some(value)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }
}

/// A set of destinations where each member carries a reference count: several bindings
/// (differing only in arguments, or in routing key for fanout) can share one routing slot, and
/// the destination must stay routable until the last of them is removed.
#[derive(Debug, Clone)]
pub(crate) struct DestSet<D> {
    members: IndexedMap<D, usize>,
}

impl<D> Default for DestSet<D> {
    fn default() -> Self {
        DestSet {
            members: IndexedMap::default(),
        }
    }
}

impl<D: Clone + Eq + Hash> DestSet<D> {
    /// Adds one reference to `dest`.
    pub(crate) fn add(&mut self, dest: &D) {
        self.members
            .upsert(dest, || 0, |refs| *refs = refs.saturating_add(1));
    }

    /// Drops one reference to `dest`, removing it when none remain. Returns whether `dest` was
    /// present.
    pub(crate) fn release(&mut self, dest: &D) -> bool {
        let Some(refs) = self.members.get_mut(dest) else {
            return false;
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            self.members.remove(dest);
        }
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &D> {
        self.members.keys()
    }

    /// Appends every member to `out`. Members are distinct, so no deduplication is needed.
    pub(crate) fn extend_into(&self, out: &mut Vec<D>) {
        out.extend(self.members.keys().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_remove_keeps_index_consistent() {
        let mut m: IndexedMap<u32, &str> = IndexedMap::default();
        for (k, v) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            m.upsert(&k, || v, |_| ());
        }
        assert_eq!(m.remove(&2), Some("b"));
        assert_eq!(m.remove(&2), None);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get_mut(&4).copied(), Some("d"));
        assert_eq!(m.get_mut(&1).copied(), Some("a"));
        assert_eq!(m.remove(&4), Some("d"));
        assert_eq!(m.remove(&1), Some("a"));
        assert_eq!(m.remove(&3), Some("c"));
        assert!(m.is_empty());
    }

    #[test]
    fn dest_set_counts_references() {
        let mut s = DestSet::default();
        s.add(&7u32);
        s.add(&7u32);
        s.add(&8u32);
        assert_eq!(s.len(), 2);
        assert!(s.release(&7));
        assert_eq!(s.len(), 2);
        assert!(s.release(&7));
        assert_eq!(s.len(), 1);
        assert!(!s.release(&7));
        let mut out = vec![1u32];
        s.extend_into(&mut out);
        assert_eq!(out, vec![1, 8]);
    }
}
