//! Fanout exchange index: every bound destination receives every message.

use std::hash::Hash;

use crate::indexed::DestSet;

/// The set of bound destinations. The routing key is still part of a fanout binding's identity
/// (see [`crate::BindingTable`]), so one destination may hold several bindings; the reference
/// count keeps it routable until the last one goes.
#[derive(Debug, Clone)]
pub(crate) struct FanoutIndex<D> {
    dests: DestSet<D>,
}

impl<D> Default for FanoutIndex<D> {
    fn default() -> Self {
        FanoutIndex {
            dests: DestSet::default(),
        }
    }
}

impl<D: Clone + Eq + Hash> FanoutIndex<D> {
    pub(crate) fn add(&mut self, dest: &D) {
        self.dests.add(dest);
    }

    pub(crate) fn remove(&mut self, dest: &D) {
        self.dests.release(dest);
    }

    pub(crate) fn route(&self, out: &mut Vec<D>) {
        self.dests.extend_into(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_everything_once() {
        let mut ix = FanoutIndex::default();
        ix.add(&1u32);
        ix.add(&2);
        ix.add(&1);
        let mut out = vec![9];
        ix.route(&mut out);
        out.sort_unstable();
        assert_eq!(out, vec![1, 2, 9]);
        ix.remove(&1);
        ix.remove(&1);
        let mut out = Vec::new();
        ix.route(&mut out);
        assert_eq!(out, vec![2]);
    }
}
