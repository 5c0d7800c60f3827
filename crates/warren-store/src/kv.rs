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

/// An engine that refuses all work after an I/O error until it is reopened
/// (redb and sled both do).
pub(crate) trait Reopen {
    fn is_open(&self) -> bool;
    fn reopen(&mut self) -> Result<(), StoreError>;
    fn write(&self, batch: &[KvOp]) -> Result<(), StoreError>;
}

/// `Kv::apply` for such an engine: reopen first if a failed write closed it,
/// and close-and-reopen after a failed write, so that the next batch finds
/// a working engine once the disk works again.
pub(crate) fn apply_reopening(engine: &mut impl Reopen, batch: &[KvOp]) -> Result<(), StoreError> {
    if !engine.is_open() {
        engine
            .reopen()
            .map_err(|e| StoreError::Write(format!("reopening after a failed write: {e}")))?;
    }
    let result = engine.write(batch);
    if result.is_err() {
        if let Err(e) = engine.reopen() {
            tracing::warn!("reopening the store after a failed write failed, will retry: {e}");
        }
    }
    result
}
