//! The engine seam: an ordered key-value store with atomic, durable batches.

use crate::StoreError;

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    /// Delete every key starting with this prefix.
    DelPrefix(Vec<u8>),
}

pub trait Kv: Send {
    /// Apply the batch atomically; when this returns Ok the batch is on disk
    /// (fsync or the engine's equivalent).
    fn apply(&mut self, batch: &[KvOp]) -> Result<(), StoreError>;

    /// Visit keys from `start` onwards, in key order, until `f` returns false.
    fn scan_from(
        &self,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Visit every key with `prefix`, in key order, until `f` returns false.
    fn scan(
        &self,
        prefix: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.scan_from(prefix, &mut |k, v| k.starts_with(prefix) && f(k, v))
    }

    /// One value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut found = None;
        self.scan_from(key, &mut |k, v| {
            if k == key {
                found = Some(v.to_vec());
            }
            false
        })?;
        Ok(found)
    }

    /// The engine's name, for logs.
    fn name(&self) -> &'static str;
}

/// The smallest key greater than every key that starts with `prefix`
/// (`None` when there is none, i.e. the prefix is all 0xFF).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
