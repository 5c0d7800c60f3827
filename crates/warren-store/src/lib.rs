//! Warren's message store.
//!
//! - [`kv`]: the engine seam — an ordered key-value store with atomic, durable
//!   batches. Two engines implement it: [`redb_engine`] (the default) and
//!   [`sled_engine`] (the design card's choice, kept supported), plus an
//!   in-memory one for tests ([`memory_engine`]).
//! - [`layout`]: how broker data maps onto keys (metadata, messages, delivery marks).
//! - [`committer`]: the storage thread. Writes from every connection go through
//!   one queue; the thread applies everything that arrived meanwhile as one
//!   transaction with one fsync (group commit), then runs the callbacks waiting
//!   for it (publisher confirms, tx.commit-ok). Tokio's workers never block on disk.
#![forbid(unsafe_code)]

pub mod committer;
pub mod kv;
pub mod layout;
pub mod memory_engine;
pub mod redb_engine;
pub mod sled_engine;

use std::path::{Path, PathBuf};

pub use committer::{Op, Recovery, Store};
pub use kv::{Kv, KvOp};
pub use layout::{MessageRecord, Recovered};

/// Which engine holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Redb,
    Sled,
}

impl EngineKind {
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "redb" => Some(EngineKind::Redb),
            "sled" => Some(EngineKind::Sled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Redb => "redb",
            EngineKind::Sled => "sled",
        }
    }
}

/// What went wrong in the store. Every variant names what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path} is used by another running broker (lock file {lock} is held); stop it or choose another --data-dir")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("cannot use data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store file {path} could not be opened: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error("the store file {path} is corrupt or unreadable: {detail}; refusing to start so that no data is silently dropped")]
    Corrupt { path: PathBuf, detail: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store read failed: {0}")]
    Read(String),
    #[error("the store stopped after an earlier write failure; restart the broker")]
    Poisoned,
}

/// Open the engine of `kind` in `dir` (created if missing), holding the
/// directory's lock file for as long as the engine lives.
pub fn open(kind: EngineKind, dir: &Path) -> Result<Box<dyn Kv>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let lock = DirLock::acquire(dir)?;
    let engine: Box<dyn Kv> = match kind {
        EngineKind::Redb => Box::new(redb_engine::RedbKv::open(&dir.join("warren.redb"), lock)?),
        EngineKind::Sled => Box::new(sled_engine::SledKv::open(&dir.join("warren.sled"), lock)?),
    };
    Ok(engine)
}

/// An exclusive lock on a data directory (released when dropped or when the process dies).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join("LOCK");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(_) => Err(StoreError::Locked {
                path: dir.to_owned(),
                lock: path,
            }),
        }
    }
}
