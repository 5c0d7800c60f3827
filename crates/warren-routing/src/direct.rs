//! Direct exchange index: exact routing-key equality, one hash lookup per publish.

use std::collections::HashMap;
use std::hash::Hash;

use crate::indexed::DestSet;

/// Routing key → destinations bound with exactly that key. Binding arguments play no part in
/// direct routing, so bindings that differ only in arguments share one reference-counted slot.
#[derive(Debug, Clone)]
pub(crate) struct DirectIndex<D> {
    by_key: HashMap<Box<str>, DestSet<D>>,
}

impl<D> Default for DirectIndex<D> {
    fn default() -> Self {
        DirectIndex {
            by_key: HashMap::new(),
        }
    }
}

impl<D: Clone + Eq + Hash> DirectIndex<D> {
    pub(crate) fn add(&mut self, routing_key: &str, dest: &D) {
        match self.by_key.get_mut(routing_key) {
            Some(set) => set.add(dest),
            None => {
                let mut set = DestSet::default();
                set.add(dest);
                self.by_key.insert(routing_key.into(), set);
            }
        }
    }

    pub(crate) fn remove(&mut self, routing_key: &str, dest: &D) {
        if let Some(set) = self.by_key.get_mut(routing_key) {
            set.release(dest);
            if set.is_empty() {
                self.by_key.remove(routing_key);
            }
        }
    }

    pub(crate) fn route(&self, routing_key: &str, out: &mut Vec<D>) {
        if let Some(set) = self.by_key.get(routing_key) {
            set.extend_into(out);
        }
    }

    #[cfg(test)]
    pub(crate) fn key_count(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(ix: &DirectIndex<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        ix.route(key, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn exact_match_only() {
        let mut ix = DirectIndex::default();
        ix.add("a", &1);
        ix.add("a", &2);
        ix.add("A", &3);
        ix.add("", &4);
        assert_eq!(routed(&ix, "a"), vec![1, 2]);
        assert_eq!(routed(&ix, "A"), vec![3]);
        assert_eq!(routed(&ix, ""), vec![4]);
        assert_eq!(routed(&ix, "a "), Vec::<u32>::new());
        assert_eq!(routed(&ix, "*"), Vec::<u32>::new());
    }

    #[test]
    fn shared_slot_survives_until_last_reference() {
        let mut ix = DirectIndex::default();
        ix.add("k", &1);
        ix.add("k", &1);
        ix.remove("k", &1);
        assert_eq!(routed(&ix, "k"), vec![1]);
        ix.remove("k", &1);
        assert_eq!(routed(&ix, "k"), Vec::<u32>::new());
        assert_eq!(ix.key_count(), 0, "empty keys are dropped");
    }
}
