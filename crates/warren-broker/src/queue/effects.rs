//! What a queue command asks its caller to do: the machine's output.
//!
//! Storage work must reach the storage thread in the order the machine chose
//! it (a read after the write it reads, a barrier after the writes it covers),
//! so the caller performs [`Effects::storage`] before it releases the queue's
//! lock (each is a non-blocking channel send). Everything else — deliveries,
//! dead-lettering into other queues, cancel notices — runs after the lock is
//! released, so that one queue's lock is never held while another's is taken.

use std::sync::Arc;

use smallvec::SmallVec;

use super::ready::{QueuedMessage, Stored};
use crate::message::Message;

/// A request to the store. Completions come back as commands:
/// [`Read`](StorageOp::Read) → `loaded`, [`Sync`](StorageOp::Sync) → `written`,
/// [`Mark`](StorageOp::Mark) → `marked`.
#[derive(Debug)]
pub enum StorageOp {
    /// Write a message record.
    Write {
        seq: u64,
        message: Arc<Message>,
        stored: Stored,
    },
    /// Forget a record (the message left the queue for good).
    Forget { seq: u64, stored: Stored },
    /// Read bodies back: ahead of the head (`page_in`), or of dead messages.
    Read { seqs: Vec<u64>, page_in: bool },
    /// Say when every write so far (up to `upto`) is on disk.
    Sync { upto: u64 },
    /// Durably note that messages up to `upto` may have been delivered.
    Mark { upto: u64 },
}

/// The completion of a [`StorageOp::Read`], per message.
#[derive(Debug)]
pub enum ReadBack {
    Body(Arc<Message>),
    /// The store has no such record (or cannot decode it).
    Missing,
    /// The store could not be read now: ask again later.
    Unavailable,
}

/// A message for a consumer.
#[derive(Debug)]
pub struct Delivery<C> {
    pub consumer: C,
    pub message: QueuedMessage,
}

/// Why a message was dead-lettered (the `reason` in `x-death`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    Rejected,
    Expired,
    MaxLen,
    /// Returned more often than the quorum queue's `x-delivery-limit`.
    DeliveryLimit,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxLen => "maxlen",
            DeathReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message that died here (rejected, expired, dropped by a length limit), for
/// the dead-letter exchange. Its record in this queue's store is forgotten only
/// after the dead-letter targets hold it (at-least-once).
#[derive(Debug)]
pub struct Death {
    pub message: QueuedMessage,
    pub reason: DeathReason,
}

/// Effects live on the caller's stack: the few a publish or an ack makes fit
/// inline, so a command allocates only for a large batch of deliveries.
#[derive(Debug)]
pub struct Effects<C> {
    pub storage: SmallVec<[StorageOp; 2]>,
    pub deliveries: SmallVec<[Delivery<C>; 4]>,
    pub deaths: Vec<Death>,
    /// Consumers told their queue is gone.
    pub cancelled: Vec<C>,
    /// A deadline nearer than any before appeared: wake the timer.
    pub wake_timer: bool,
    /// Bodies or marks arrived: `basic.get`s waiting for them may retry.
    pub wake_getters: bool,
}

impl<C> Default for Effects<C> {
    fn default() -> Self {
        Effects {
            storage: SmallVec::new(),
            deliveries: SmallVec::new(),
            deaths: Vec::new(),
            cancelled: Vec::new(),
            wake_timer: false,
            wake_getters: false,
        }
    }
}

impl<C> Effects<C> {
    pub fn store(&mut self, op: StorageOp) {
        self.storage.push(op);
    }

    pub fn forget(&mut self, seq: u64, stored: Stored) {
        if stored != Stored::No {
            self.storage.push(StorageOp::Forget { seq, stored });
        }
    }
}
