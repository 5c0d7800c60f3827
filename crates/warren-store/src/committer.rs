//! The storage thread and its group commit.
//!
//! Every connection hands its writes to [`Store::submit`] (non-blocking), and
//! asks for a [`Store::barrier`] when it must know they are durable (before a
//! publisher confirm or tx.commit-ok). The thread blocks for the first request,
//! drains everything else already queued, applies it all as one batch with
//! one fsync, then runs the barriers' callbacks in order. Under load one fsync
//! covers the writes of every connection that arrived meanwhile; when idle a
//! lone write is flushed at once, so latency stays at one fsync.
//!
//! A batch the engine fails is answered `false` and retried ahead of the next
//! one (`committer/retry.rs`): a full disk is not permanent.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::kv::{Kv, KvOp};
use crate::layout::{self, MessageRecord, Recovered};
use crate::StoreError;

mod retry;
pub use retry::HealthListener;

use crate::stream_log::SharedLog;
use retry::{Health, Retained, RETRY_EVERY};

/// A message as the store encodes it (implemented by the broker's message type),
/// encoded on the storage thread so that publishers never pay for it.
pub trait Persistable: Send + Sync {
    fn encode(&self, out: &mut Vec<u8>);
}

/// A change to durable state.
pub enum Op {
    PutMeta {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DelMeta {
        key: Vec<u8>,
    },
    PutMessage {
        queue: u64,
        seq: u64,
        message: Arc<dyn Persistable>,
    },
    DelMessage {
        queue: u64,
        seq: u64,
    },
    /// A transient message paged out of memory (wiped at start-up).
    SpillMessage {
        queue: u64,
        seq: u64,
        message: Arc<dyn Persistable>,
    },
    DelSpilled {
        queue: u64,
        seq: u64,
    },
    /// Drop every message of a queue (queue deleted).
    DelQueue {
        queue: u64,
    },
    /// Messages up to `upto` may have been delivered (for `redelivered` after a crash).
    Delivered {
        queue: u64,
        upto: u64,
    },
    /// The exact delivery mark at a clean stop (`None`: nothing was delivered);
    /// replaces any mark written ahead.
    SetDelivered {
        queue: u64,
        upto: Option<u64>,
    },
    /// Append a message to a stream's log. Appends to one log in one batch
    /// share a write and an fsync; a barrier after them answers once they are
    /// on disk (`false` if the append failed: nothing of it is kept).
    AppendStream {
        log: Arc<SharedLog>,
        timestamp_ms: i64,
        message: Arc<dyn Persistable>,
    },
    /// A stream was deleted: remove its log.
    DropStream {
        log: Arc<SharedLog>,
    },
}

type Callback = Box<dyn FnOnce(bool) + Send>;
type ReadCallback = Box<dyn FnOnce(Vec<(u64, Fetched)>) + Send>;

/// One message read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Found(MessageRecord),
    /// No such record, or one that cannot be decoded.
    Missing,
    /// The engine could not be read (an I/O error): ask again later.
    Unavailable,
}

enum Request {
    Op(Op),
    Barrier(Callback),
    /// Read messages back (paging a long queue in); served after the writes
    /// queued before it, so it always sees them.
    Read {
        queue: u64,
        seqs: Vec<u64>,
        done: ReadCallback,
    },
    Stop(mpsc::Sender<()>),
}

/// The store while the broker is rebuilt from it, before the storage thread starts.
pub struct Recovery {
    kv: Box<dyn Kv>,
    pub recovered: Recovered,
}

impl Recovery {
    /// Read definitions and delivery marks.
    pub fn open(kv: Box<dyn Kv>) -> Result<Recovery, StoreError> {
        let recovered = layout::recover(kv.as_ref())?;
        Ok(Recovery { kv, recovered })
    }

    /// Stream a queue's messages in order; a malformed record is an error.
    pub fn scan_queue(
        &self,
        queue: u64,
        f: &mut dyn FnMut(u64, MessageRecord),
    ) -> Result<(), StoreError> {
        let mut bad = None;
        layout::scan_queue(
            self.kv.as_ref(),
            queue,
            &mut |seq, v| match layout::decode_record(&bytes::Bytes::copy_from_slice(v)) {
                Some(r) => {
                    f(seq, r);
                    true
                }
                None => {
                    bad = Some(format!("message {seq} of queue id {queue} is malformed"));
                    false
                }
            },
        )?;
        match bad {
            Some(d) => Err(StoreError::Read(d)),
            None => Ok(()),
        }
    }

    /// Start the storage thread.
    pub fn start(mut self) -> Result<Store, StoreError> {
        // Spilled transient messages belong to the previous run.
        self.kv.apply(&[
            KvOp::Put(layout::VERSION_KEY.to_vec(), layout::VERSION.to_vec()),
            KvOp::DelPrefix(vec![layout::SPILLED]),
        ])?;
        let engine_name = self.kv.name();
        let (tx, rx) = mpsc::channel();
        let health = Arc::new(Health::default());
        let h = health.clone();
        let kv = self.kv;
        let thread = std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || run(kv, rx, h))
            .map_err(|e| StoreError::Write(format!("cannot start the storage thread: {e}")))?;
        Ok(Store {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            health,
            engine_name,
        })
    }
}

/// Most requests folded into one batch (bounds memory and latency under load).
const MAX_BATCH: usize = 65_536;

/// The handle to the storage thread.
pub struct Store {
    tx: Mutex<Option<Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    health: Arc<Health>,
    engine_name: &'static str,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine_name)
            .finish()
    }
}

impl Store {
    /// Open and start at once (for callers that need no recovery).
    pub fn open(kv: Box<dyn Kv>) -> Result<(Store, Recovered), StoreError> {
        let mut r = Recovery::open(kv)?;
        let recovered = std::mem::take(&mut r.recovered);
        Ok((r.start()?, recovered))
    }

    pub fn engine_name(&self) -> &'static str {
        self.engine_name
    }

    /// Whether the last write failed: its writes are kept and retried, and
    /// confirms wait until a write succeeds again.
    pub fn is_failing(&self) -> bool {
        self.health.failing.load(Ordering::SeqCst)
    }

    /// Call `listener` (on the storage thread) whenever [`is_failing`](Self::is_failing)
    /// changes; at once with `true` if it is failing already.
    pub fn set_health_listener(&self, listener: HealthListener) {
        self.health.listen(listener);
    }

    /// Hand a request to the thread; gives it back if the thread is gone.
    fn send(&self, r: Request) -> Result<(), Request> {
        match self.tx.lock() {
            Ok(guard) => match guard.as_ref() {
                Some(tx) => tx.send(r).map_err(|e| e.0),
                None => Err(r),
            },
            Err(_) => Err(r),
        }
    }

    /// Queue a write; it becomes durable with the next group commit.
    pub fn submit(&self, op: Op) {
        let _ = self.send(Request::Op(op));
    }

    /// Run `done(true)` once every write submitted before this call is on disk
    /// (`done(false)` if the store failed or is closed).
    pub fn barrier(&self, done: impl FnOnce(bool) + Send + 'static) {
        if let Err(Request::Barrier(done)) = self.send(Request::Barrier(Box::new(done))) {
            done(false);
        }
    }

    /// Read messages of a queue back; `done` runs on the storage thread.
    pub fn read(
        &self,
        queue: u64,
        seqs: Vec<u64>,
        done: impl FnOnce(Vec<(u64, Fetched)>) + Send + 'static,
    ) {
        if let Err(Request::Read { seqs, done, .. }) = self.send(Request::Read {
            queue,
            seqs,
            done: Box::new(done),
        }) {
            done(
                seqs.into_iter()
                    .map(|s| (s, Fetched::Unavailable))
                    .collect(),
            );
        }
    }

    /// Write out everything queued and stop the thread (clean shutdown).
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        if self.send(Request::Stop(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Some(t) = self.thread.lock().ok().and_then(|mut g| g.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(mut kv: Box<dyn Kv>, rx: Receiver<Request>, health: Arc<Health>) {
    let mut batch: Vec<KvOp> = Vec::new();
    let mut retained = Retained::default();
    let mut callbacks: Vec<Callback> = Vec::new();
    let mut reads: Vec<(u64, Vec<u64>, ReadCallback)> = Vec::new();
    let mut delivered: HashMap<u64, Option<u64>> = HashMap::new();
    let mut scratch = Vec::new();
    let mut appends = crate::stream_log::Appends::default();
    loop {
        // While writes are retained, wake up to retry them even if nothing new comes.
        let first = if retained.is_empty() {
            match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let mut stop: Option<mpsc::Sender<()>> = None;
        let mut n = 0;
        let mut next = first;
        while let Some(r) = next.take() {
            match r {
                Request::Op(Op::AppendStream {
                    log,
                    timestamp_ms,
                    message,
                }) => appends.add(&log, timestamp_ms, encoded(message.as_ref(), &mut scratch)),
                Request::Op(Op::DropStream { log }) => appends.drop_log(log),
                Request::Op(op) => translate(op, &mut batch, &mut delivered, &mut scratch),
                Request::Barrier(cb) => callbacks.push(cb),
                Request::Read { queue, seqs, done } => reads.push((queue, seqs, done)),
                Request::Stop(ack) => {
                    stop = Some(ack);
                    break;
                }
            }
            n += 1;
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        for (queue, upto) in delivered.drain() {
            match upto {
                Some(upto) => batch.push(KvOp::Put(
                    layout::delivered_key(queue),
                    upto.to_be_bytes().to_vec(),
                )),
                None => batch.push(KvOp::Del(layout::delivered_key(queue))),
            }
        }
        let ok = retained.commit(kv.as_mut(), &mut batch, &health);
        let ok = appends.write() && ok;
        for cb in callbacks.drain(..) {
            cb(ok);
        }
        for (queue, seqs, done) in reads.drain(..) {
            let records = seqs
                .into_iter()
                .map(|seq| {
                    // A message is in one of two places: durable or spilled.
                    let r =
                        match read_record(&retained, kv.as_ref(), &layout::message_key(queue, seq))
                        {
                            Fetched::Missing => read_record(
                                &retained,
                                kv.as_ref(),
                                &layout::spilled_key(queue, seq),
                            ),
                            found => found,
                        };
                    (seq, r)
                })
                .collect();
            done(records);
        }
        if let Some(ack) = stop {
            if !retained.is_empty() {
                tracing::error!(
                    "stopping with {} store changes that could not be written ({}); acked messages may be delivered again and unconfirmed ones may be missing after the restart",
                    retained.ops.len(),
                    kv.name()
                );
            }
            let _ = ack.send(());
            return;
        }
    }
}

/// A message's record, encoded in a reused buffer and copied out at its exact size.
fn encoded(message: &dyn Persistable, scratch: &mut Vec<u8>) -> Vec<u8> {
    scratch.clear();
    message.encode(scratch);
    scratch.clone()
}

/// Read one record: a write not on disk yet is still the latest value.
fn read_record(retained: &Retained, kv: &dyn Kv, key: &[u8]) -> Fetched {
    let value = match retained.value_of(key) {
        Some(v) => v.map(<[u8]>::to_vec),
        None => match kv.get(key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("store read failed: {e}; the message will be read again");
                return Fetched::Unavailable;
            }
        },
    };
    match value.and_then(|v| layout::decode_record(&bytes::Bytes::from(v))) {
        Some(r) => Fetched::Found(r),
        None => Fetched::Missing,
    }
}

fn translate(
    op: Op,
    batch: &mut Vec<KvOp>,
    delivered: &mut HashMap<u64, Option<u64>>,
    scratch: &mut Vec<u8>,
) {
    match op {
        Op::PutMeta { key, value } => batch.push(KvOp::Put(layout::meta_key(&key), value)),
        Op::DelMeta { key } => batch.push(KvOp::Del(layout::meta_key(&key))),
        Op::PutMessage {
            queue,
            seq,
            message,
        } => batch.push(KvOp::Put(
            layout::message_key(queue, seq),
            encoded(message.as_ref(), scratch),
        )),
        Op::DelMessage { queue, seq } => batch.push(KvOp::Del(layout::message_key(queue, seq))),
        Op::SpillMessage {
            queue,
            seq,
            message,
        } => batch.push(KvOp::Put(
            layout::spilled_key(queue, seq),
            encoded(message.as_ref(), scratch),
        )),
        Op::DelSpilled { queue, seq } => batch.push(KvOp::Del(layout::spilled_key(queue, seq))),
        Op::DelQueue { queue } => {
            delivered.remove(&queue);
            batch.push(KvOp::DelPrefix(layout::queue_prefix(queue)));
            batch.push(KvOp::DelPrefix(layout::spilled_prefix(queue)));
            batch.push(KvOp::Del(layout::delivered_key(queue)));
        }
        Op::Delivered { queue, upto } => {
            let e = delivered.entry(queue).or_insert(Some(upto));
            *e = Some(e.map_or(upto, |cur| cur.max(upto)));
        }
        Op::AppendStream { .. } | Op::DropStream { .. } => {}
        Op::SetDelivered { queue, upto } => {
            delivered.insert(queue, upto);
        }
    }
}
