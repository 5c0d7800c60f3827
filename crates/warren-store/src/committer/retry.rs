//! What the storage thread does when the engine fails a batch (a full disk,
//! an I/O error): answer the batch's barriers `false`, keep its writes and
//! retry them ahead of the next batch, so that the disk converges to what the
//! broker holds in memory once the engine works again, without a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::kv::{Kv, KvOp};

/// How often retained writes are retried when nothing else arrives.
pub(crate) const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Retained writes above which a warning is logged (then at each doubling):
/// they are held in memory until the disk takes them.
const WARN_RETAINED: usize = 100_000;

/// Called with `true` when writes start failing and `false` once one succeeds.
pub type HealthListener = Box<dyn Fn(bool) + Send + Sync>;

/// Whether the store is failing, shared by the handle and the storage thread.
#[derive(Default)]
pub(crate) struct Health {
    pub(crate) failing: AtomicBool,
    listener: Mutex<Option<HealthListener>>,
}

impl Health {
    /// Record the state; true if it changed.
    fn set(&self, failing: bool) -> bool {
        if self.failing.swap(failing, Ordering::SeqCst) == failing {
            return false;
        }
        if let Ok(l) = self.listener.lock() {
            if let Some(f) = l.as_ref() {
                f(failing);
            }
        }
        true
    }

    pub(crate) fn listen(&self, listener: HealthListener) {
        if let Ok(mut l) = self.listener.lock() {
            if self.failing.load(Ordering::SeqCst) {
                listener(true);
            }
            *l = Some(listener);
        }
    }
}

/// Writes of failed batches, in order, waiting to be retried.
#[derive(Default)]
pub(crate) struct Retained {
    pub(crate) ops: Vec<KvOp>,
    warn_at: Option<usize>,
}

impl Retained {
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Apply the retained writes followed by `batch` as one batch. True when
    /// they are all on disk; otherwise they are all retained. Leaves `batch` empty.
    pub(crate) fn commit(
        &mut self,
        kv: &mut dyn Kv,
        batch: &mut Vec<KvOp>,
        health: &Health,
    ) -> bool {
        if !self.ops.is_empty() {
            self.ops.append(batch);
            std::mem::swap(batch, &mut self.ops);
        }
        if batch.is_empty() {
            return true;
        }
        match kv.apply(batch) {
            Ok(()) => {
                if health.set(false) {
                    tracing::info!(
                        "the {} store writes again; {} retained changes are on disk and confirms resume",
                        kv.name(),
                        batch.len()
                    );
                }
                batch.clear();
                self.warn_at = None;
                true
            }
            Err(e) => {
                if health.set(true) {
                    tracing::error!(
                        "{e}; the publishes waiting for this write are nacked, and its {} changes (acks included) are kept in memory and retried every {}s. Free disk space or fix the storage device: the broker recovers by itself once writes succeed",
                        batch.len(),
                        RETRY_EVERY.as_secs()
                    );
                }
                std::mem::swap(batch, &mut self.ops);
                self.warn_if_large();
                false
            }
        }
    }

    fn warn_if_large(&mut self) {
        let at = *self.warn_at.get_or_insert(WARN_RETAINED);
        if self.ops.len() >= at {
            tracing::warn!(
                "{} store changes are waiting in memory for the disk to accept them; free disk space (publishers are blocked meanwhile)",
                self.ops.len()
            );
            self.warn_at = Some(at.saturating_mul(2));
        }
    }

    /// The newest retained value of `key`: `Some(None)` if it was deleted,
    /// `None` if no retained write touches it.
    pub(crate) fn value_of(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops.iter().rev().find_map(|op| match op {
            KvOp::Put(k, v) if k == key => Some(Some(v.as_slice())),
            KvOp::Del(k) if k == key => Some(None),
            KvOp::DelPrefix(p) if key.starts_with(p) => Some(None),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_retained_write_wins() {
        let r = Retained {
            ops: vec![
                KvOp::Put(b"a1".to_vec(), b"x".to_vec()),
                KvOp::Put(b"b1".to_vec(), b"y".to_vec()),
                KvOp::DelPrefix(b"a".to_vec()),
                KvOp::Put(b"a2".to_vec(), b"z".to_vec()),
                KvOp::Del(b"b1".to_vec()),
            ],
            warn_at: None,
        };
        assert_eq!(r.value_of(b"a1"), Some(None));
        assert_eq!(r.value_of(b"a2"), Some(Some(&b"z"[..])));
        assert_eq!(r.value_of(b"b1"), Some(None));
        assert_eq!(r.value_of(b"c"), None);
    }
}
