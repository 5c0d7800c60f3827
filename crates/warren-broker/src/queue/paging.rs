//! Paging, by bytes, for every queue and every message: a queue keeps the
//! bodies of its first few megabytes in memory and the rest on disk, read back
//! ahead of the head, so memory does not grow with the backlog.
//!
//! - A persistent message of a durable queue is written anyway; past the
//!   queue's in-memory budget it is *paged*: its body is dropped once its
//!   write is on disk (never before, so a failed write loses nothing).
//! - A transient message is paged the same way (written to the store's spill
//!   space, wiped at start-up) once paging has begun, or when the broker is
//!   short of memory (`spill`).
//! - Once anything is on disk, everything after it is paged too until the
//!   reads catch up, so the in-memory part stays a prefix of the queue.
//! - A head whose body is on disk is always read, whatever the budget: a
//!   queue never stalls waiting for memory.

use std::sync::Arc;

use super::consumers::Slot;
use super::effects::DeathReason;
use super::effects::{Death, Effects, ReadBack, StorageOp};
use super::machine::{QueueMachine, Storage};
use super::ready::{QueuedMessage, Ready, Stored, Time};
use crate::message::Message;

/// Bodies kept in memory per queue before new messages are paged.
pub const PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Most messages read back per page-in.
const LOAD_BATCH: usize = 2048;
/// After a failed read, how long before reading again.
const READ_RETRY_MS: u64 = 1_000;

impl<C: Slot> QueueMachine<C> {
    /// Whether a new message of `size` body bytes is paged.
    pub(super) fn should_page(&self, size: u64, persistent: bool, spill: bool) -> bool {
        if self.storage == Storage::None {
            return false;
        }
        let paging = self.ready.unloaded > 0 || !self.paged.is_empty();
        let over_budget = self.ready.loaded_bytes + size > PAGE_BYTES;
        paging || (over_budget && (persistent || spill))
    }

    /// Ask the store to say when the paged messages' writes are on disk.
    pub(super) fn sync_paged(&mut self, out: &mut Effects<C>) {
        if self.syncing {
            return;
        }
        if let Some(&(upto, _)) = self.paged.back() {
            self.syncing = true;
            out.store(StorageOp::Sync { upto });
        }
    }

    /// Completion of a [`StorageOp::Sync`]: writes up to `upto` are on disk
    /// (`ok`), so paged bodies up to there may leave memory. After a failure
    /// the bodies stay; the next command asks again.
    pub fn written(&mut self, upto: u64, ok: bool, now: Time, out: &mut Effects<C>) {
        self.syncing = false;
        if !ok {
            return;
        }
        while let Some(&(seq, priority)) = self.paged.front() {
            if seq > upto {
                break;
            }
            self.paged.pop_front();
            if let Ok(i) = self.ready.position(priority, seq) {
                if self.ready.get(i).is_some_and(Ready::is_paged) {
                    self.ready.unload(i);
                }
            }
        }
        self.dispatch(now, out);
    }

    /// Read the next bodies from disk when the in-memory part runs low, or
    /// at once when the head itself is on disk.
    pub(super) fn page_in(&mut self, now: Time, out: &mut Effects<C>) {
        if self.retry_reads_at.is_some_and(|at| now < at) {
            return;
        }
        if self.retry_reads_at.take().is_some() && !self.dying.is_empty() {
            // Dead messages whose read failed: read them again.
            let seqs = self.dying.iter().map(|(r, _)| r.seq).collect();
            out.store(StorageOp::Read {
                seqs,
                page_in: false,
            });
        }
        if self.loading || self.ready.unloaded == 0 {
            return;
        }
        let head_on_disk = self.ready.front().is_some_and(|r| !r.is_loaded());
        if !head_on_disk && self.ready.loaded_bytes >= PAGE_BYTES / 2 {
            return;
        }
        let mut seqs = Vec::new();
        let mut bytes = 0u64;
        for r in self.ready.iter_mut() {
            if !r.is_loaded() && !r.is_loading() {
                r.set_loading(true);
                seqs.push(r.seq);
                bytes += r.size as u64;
                if seqs.len() >= LOAD_BATCH || bytes >= PAGE_BYTES / 2 {
                    break;
                }
            }
        }
        if !seqs.is_empty() {
            self.loading = true;
            out.store(StorageOp::Read {
                seqs,
                page_in: true,
            });
        }
    }

    /// Completion of a [`StorageOp::Read`]: bodies read back (`None`: the
    /// record could not be read). Page-in reads fill the ready list; reads for
    /// dead messages send them on to dead-lettering.
    pub fn loaded(
        &mut self,
        records: Vec<(u64, ReadBack)>,
        page_in: bool,
        now: Time,
        out: &mut Effects<C>,
    ) {
        for (seq, message) in records {
            if let ReadBack::Unavailable = message {
                // Leave it on disk and try again after a pause (not in a loop
                // against a failing disk).
                self.retry_reads_at = Some(now.after_ms(READ_RETRY_MS));
                if let Some(i) = self.find(seq) {
                    self.ready.set_loading(i, false);
                }
                continue;
            }
            if let Some(i) = self.dying.iter().position(|(r, _)| r.seq == seq) {
                let (r, reason) = self.dying.swap_remove(i);
                self.dead_loaded(r, reason, message, out);
                continue;
            }
            let Some(i) = self.find(seq) else {
                continue; // gone meanwhile (purged, expired, deleted)
            };
            match message {
                ReadBack::Body(m) => self.ready.fill(i, m),
                ReadBack::Missing | ReadBack::Unavailable => {
                    // The disk lost it: say so and count it rather than wedge the queue.
                    self.unreadable += 1;
                    tracing::error!(
                        seq,
                        "a paged-out message could not be read back from the store; it is dropped"
                    );
                    if let Some(r) = self.ready.remove(i) {
                        out.forget(r.seq, r.stored());
                    }
                }
            }
        }
        if page_in {
            self.loading = false;
        }
        out.wake_getters = true;
        self.dispatch(now, out);
    }

    fn dead_loaded(
        &mut self,
        mut r: Ready,
        reason: DeathReason,
        message: ReadBack,
        out: &mut Effects<C>,
    ) {
        let ReadBack::Body(m) = message else {
            self.unreadable += 1;
            tracing::error!(
                seq = r.seq,
                "a message due for dead-lettering could not be read back from the store; it is dropped"
            );
            out.forget(r.seq, r.stored());
            return;
        };
        r.message = Some(m);
        if let Ok(message) = r.into_queued() {
            out.deaths.push(Death { message, reason });
        }
    }

    /// The ready-list index of message `seq`, wherever its priority put it.
    fn find(&self, seq: u64) -> Option<usize> {
        if let Ok(i) = self.ready.position(0, seq) {
            if self.ready.get(i).is_some_and(|r| r.seq == seq) {
                return Some(i);
            }
        }
        self.ready.iter().position(|r| r.seq == seq)
    }

    /// Restore a message read from the store at start-up: in memory while the
    /// queue's budget lasts, otherwise only its index entry.
    pub fn restore(&mut self, seq: u64, message: Arc<Message>, redelivered: bool, now: Time) {
        // The TTL starts again at recovery: records do not keep the deadline.
        let expires_at = self.expiry_of(&message, now);
        self.next_seq = self.next_seq.max(seq + 1);
        if redelivered {
            self.mark_durable = self.mark_durable.max(seq + 1);
            self.delivered_max = Some(self.delivered_max.map_or(seq, |m| m.max(seq)));
        }
        let size = message.content.body().len() as u64;
        let on_disk = self.should_page(size, true, false);
        let priority = self.priority_of(&message);
        let r = Ready::new(
            QueuedMessage {
                seq,
                message,
                redelivered,
                expires_at,
                stored: Stored::Durable,
                delivery_count: None,
            },
            priority,
        );
        if on_disk {
            self.ready.push_unloaded(r);
        } else {
            self.ready.push(r);
        }
    }
}
