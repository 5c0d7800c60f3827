//! An in-memory engine: the reference model for the conformance tests.

use std::collections::BTreeMap;

use crate::kv::{Kv, KvOp};
use crate::StoreError;

#[derive(Debug, Default)]
pub struct MemoryKv {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Kv for MemoryKv {
    fn apply(&mut self, batch: &[KvOp]) -> Result<(), StoreError> {
        for op in batch {
            match op {
                KvOp::Put(k, v) => {
                    self.map.insert(k.clone(), v.clone());
                }
                KvOp::Del(k) => {
                    self.map.remove(k);
                }
                KvOp::DelPrefix(p) => self.map.retain(|k, _| !k.starts_with(p)),
            }
        }
        Ok(())
    }

    fn scan_from(
        &self,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for (k, v) in self.map.range(start.to_vec()..) {
            if !f(k, v) {
                break;
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
