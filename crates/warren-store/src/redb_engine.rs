//! redb: a copy-on-write B-tree; every batch is one write transaction committed
//! with `Durability::Immediate` (durable when commit returns).
//!
//! After an I/O error redb refuses all further work (`PreviousIo`) until the
//! database is reopened, which also repairs it; so a failed write reopens it,
//! and the next write succeeds once the disk does (a full disk is not permanent).

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::kv::{prefix_end, Kv, KvOp};
use crate::{DirLock, StoreError};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("warren");

/// redb's page cache. Its default (1 GiB) would hold a long backlog in memory
/// again; message bodies are read back once, ahead of the consumers, so a small
/// cache is enough.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

pub struct RedbKv {
    /// `None` after a failed write whose reopen failed too; retried on the next write.
    db: Option<Database>,
    path: PathBuf,
    _lock: DirLock,
}

impl RedbKv {
    pub fn open(path: &Path, lock: DirLock) -> Result<RedbKv, StoreError> {
        Ok(RedbKv {
            db: Some(open_db(path)?),
            path: path.to_owned(),
            _lock: lock,
        })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| {
            StoreError::Read(format!(
                "{}: closed after a failed write and not reopened yet (is the disk full?)",
                self.path.display()
            ))
        })
    }

    fn write(&self, batch: &[KvOp]) -> Result<(), StoreError> {
        let err =
            |e: &dyn std::fmt::Display| StoreError::Write(format!("{}: {e}", self.path.display()));
        let mut txn = self.db()?.begin_write().map_err(|e| err(&e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(DATA).map_err(|e| err(&e))?;
            for op in batch {
                match op {
                    KvOp::Put(k, v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(|e| err(&e))?;
                    }
                    KvOp::Del(k) => {
                        table.remove(k.as_slice()).map_err(|e| err(&e))?;
                    }
                    KvOp::DelPrefix(p) => match prefix_end(p) {
                        Some(end) => table
                            .retain_in(p.as_slice()..end.as_slice(), |_, _| false)
                            .map_err(|e| err(&e))?,
                        None => table
                            .retain_in(p.as_slice().., |_, _| false)
                            .map_err(|e| err(&e))?,
                    },
                }
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    /// Close and reopen the database (dropping the old handle first: it holds the file lock).
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.db = None;
        self.db = Some(open_db(&self.path)?);
        Ok(())
    }
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::Storage(s) => corrupt(s.to_string()),
            other => StoreError::Open {
                path: path.to_owned(),
                detail: other.to_string(),
            },
        })?;
    // Make sure the table exists so that reads of a fresh store succeed.
    let txn = db.begin_write().map_err(|e| corrupt(e.to_string()))?;
    txn.open_table(DATA).map_err(|e| corrupt(e.to_string()))?;
    txn.commit().map_err(|e| corrupt(e.to_string()))?;
    Ok(db)
}

impl crate::kv::Reopen for RedbKv {
    fn is_open(&self) -> bool {
        self.db.is_some()
    }

    fn reopen(&mut self) -> Result<(), StoreError> {
        RedbKv::reopen(self)
    }

    fn write(&self, batch: &[KvOp]) -> Result<(), StoreError> {
        RedbKv::write(self, batch)
    }
}

impl Kv for RedbKv {
    fn apply(&mut self, batch: &[KvOp]) -> Result<(), StoreError> {
        crate::kv::apply_reopening(self, batch)
    }

    fn scan_from(
        &self,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let txn = self.db()?.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(DATA).map_err(|e| err(&e))?;
        let range = table.range(start..).map_err(|e| err(&e))?;
        for item in range {
            let (k, v) = item.map_err(|e| err(&e))?;
            if !f(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "redb"
    }
}
