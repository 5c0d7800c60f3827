//! sled 0.34: one tree; a batch is one `sled::Batch` (atomic) followed by
//! `flush()` (fsync). sled buffers writes in process memory until flushed, so
//! the flush is what makes a confirm safe.
//!
//! After an I/O error sled fails every later call with that error (its
//! "global error"), so a failed write reopens the tree: the next write then
//! succeeds once the disk does, and the reopened tree shows what was flushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::kv::{Kv, KvOp};
use crate::{DirLock, StoreError};

/// How long to wait for a sled handle of this process to let go of its file.
const LINGERING_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

pub struct SledKv {
    /// `None` after a failed write whose reopen failed too; retried on the next write.
    db: Option<sled::Db>,
    path: PathBuf,
    _lock: DirLock,
}

impl SledKv {
    pub fn open(path: &Path, lock: DirLock) -> Result<SledKv, StoreError> {
        Ok(SledKv {
            db: Some(open_db(path)?),
            path: path.to_owned(),
            _lock: lock,
        })
    }

    fn db(&self) -> Result<&sled::Db, StoreError> {
        self.db.as_ref().ok_or_else(|| {
            StoreError::Read(format!(
                "{}: closed after a failed write and not reopened yet (is the disk full?)",
                self.path.display()
            ))
        })
    }

    /// Close and reopen the tree (dropping the old handle first).
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.db = None;
        self.db = Some(open_db(&self.path)?);
        Ok(())
    }

    fn write(&self, batch: &[KvOp]) -> Result<(), StoreError> {
        let err =
            |e: &dyn std::fmt::Display| StoreError::Write(format!("{}: {e}", self.path.display()));
        let db = self.db()?;
        // Resolve the batch in order first: a DelPrefix must also cancel puts
        // made earlier in the same batch, which sled::Batch cannot see.
        let mut overlay: BTreeMap<Vec<u8>, Option<&[u8]>> = BTreeMap::new();
        for op in batch {
            match op {
                KvOp::Put(k, v) => {
                    overlay.insert(k.clone(), Some(v.as_slice()));
                }
                KvOp::Del(k) => {
                    overlay.insert(k.clone(), None);
                }
                KvOp::DelPrefix(p) => {
                    for (k, v) in overlay.iter_mut() {
                        if k.starts_with(p) {
                            *v = None;
                        }
                    }
                    for item in db.scan_prefix(p) {
                        let (k, _) = item.map_err(|e| err(&e))?;
                        overlay.insert(k.to_vec(), None);
                    }
                }
            }
        }
        let mut b = sled::Batch::default();
        for (k, v) in overlay {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        db.apply_batch(b).map_err(|e| err(&e))?;
        db.flush().map_err(|e| err(&e))?;
        Ok(())
    }
}

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        // We flush at every group commit ourselves.
        .flush_every_ms(None)
        // Like redb's: keep the page cache small so a backlog stays on disk.
        .cache_capacity(32 * 1024 * 1024);
    // We hold the directory's LOCK, so no other broker has this store. If
    // sled's own file lock is still taken, it is a handle of this process
    // that sled's background threads release shortly after the store was
    // closed (a broker restarted in the same process): wait for it.
    let mut waited = std::time::Duration::ZERO;
    let opened = loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && waited < LINGERING_LOCK_WAIT =>
            {
                std::thread::sleep(LOCK_POLL);
                waited += LOCK_POLL;
            }
            other => break other,
        }
    };
    let db = opened.map_err(|e| match e {
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        other => StoreError::Open {
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })?;
    Ok(db)
}

impl crate::kv::Reopen for SledKv {
    fn is_open(&self) -> bool {
        self.db.is_some()
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        SledKv::reopen(self)
    }

    fn write(&self, batch: &[KvOp]) -> Result<(), StoreError> {
        SledKv::write(self, batch)
    }
}

impl Kv for SledKv {
    fn apply(&mut self, batch: &[KvOp]) -> Result<(), StoreError> {
        crate::kv::apply_reopening(self, batch)
    }

    fn scan_from(
        &self,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.db()?.range(start..) {
            let (k, v) = item.map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sled"
    }
}
