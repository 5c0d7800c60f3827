//! Warren's message store.
//!
//! - [`kv`]: the engine seam — an ordered key-value store with atomic, durable
//!   batches. Two engines implement it: [`redb_engine`] (the default) and
//!   [`sled_engine`] (the design card's choice, kept supported), plus an
//!   in-memory one for tests ([`memory_engine`]), and a fault-injecting
//!   wrapper for tests ([`fault_engine`]).
//! - [`layout`]: how broker data maps onto keys (metadata, messages, delivery marks).
//! - [`committer`]: the storage thread. Writes from every connection go through
//!   one queue; the thread applies everything that arrived meanwhile as one
//!   transaction with one fsync (group commit), then runs the callbacks waiting
//!   for it (publisher confirms, tx.commit-ok). Tokio's workers never block on disk.
#![forbid(unsafe_code)]

pub mod committer;
pub mod fault_engine;
pub mod kv;
pub mod layout;
pub mod memory_engine;
pub mod redb_engine;
pub mod sled_engine;
pub mod stream_log;

use std::path::{Path, PathBuf};

pub use committer::{Fetched, Op, Recovery, Store};
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
}

/// Open the engine of `kind` in `dir` (created if missing), holding the
/// directory's lock file for as long as the engine lives.
///
/// A small marker file (`STORE`) records which engine the directory was
/// initialised with. If it is there but the engine comes up empty, the engine
/// lost its data (sled, for one, starts empty from a damaged file); start-up is
/// refused rather than serving an empty broker.
pub fn open(kind: EngineKind, dir: &Path) -> Result<Box<dyn Kv>, StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let lock = DirLock::acquire(dir)?;
    let (file, engine): (PathBuf, Box<dyn Kv>) = match kind {
        EngineKind::Redb => {
            let f = dir.join("warren.redb");
            let e = redb_engine::RedbKv::open(&f, lock)?;
            (f, Box::new(e))
        }
        EngineKind::Sled => {
            let f = dir.join("warren.sled");
            let e = sled_engine::SledKv::open(&f, lock)?;
            (f, Box::new(e))
        }
    };
    check_marker(kind, dir, &file, engine)
}

fn check_marker(
    kind: EngineKind,
    dir: &Path,
    file: &Path,
    mut engine: Box<dyn Kv>,
) -> Result<Box<dyn Kv>, StoreError> {
    let marker = dir.join("STORE");
    let dir_err = |source| StoreError::Dir {
        path: dir.to_owned(),
        source,
    };
    match std::fs::read_to_string(&marker) {
        Ok(recorded) => {
            let recorded = recorded.trim();
            if recorded != kind.as_str() {
                return Err(StoreError::Open {
                    path: file.to_owned(),
                    detail: format!(
                        "{} holds a {recorded} store; start with --store {recorded}",
                        dir.display()
                    ),
                });
            }
            if engine.get(layout::VERSION_KEY)?.is_none() {
                return Err(StoreError::Corrupt {
                    path: file.to_owned(),
                    detail: format!(
                        "the data directory was initialised ({} exists) but the store came up empty",
                        marker.display()
                    ),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new directory: write the version first, then the marker.
            engine.apply(&[KvOp::Put(
                layout::VERSION_KEY.to_vec(),
                layout::VERSION.to_vec(),
            )])?;
            let mut f = std::fs::File::create(&marker).map_err(dir_err)?;
            std::io::Write::write_all(&mut f, kind.as_str().as_bytes()).map_err(dir_err)?;
            f.sync_all().map_err(dir_err)?;
        }
        Err(e) => return Err(dir_err(e)),
    }
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
