//! Paging: a durable queue keeps the bodies of its first few megabytes of
//! persistent messages in memory; later ones stay on disk (they are already
//! there) and are read back through the storage thread ahead of the head, so a
//! backlog of millions of messages costs only their small index entries.
//!
//! Priority queues are not paged (their order is not the disk order).

use std::sync::Arc;
use std::time::Instant;

use warren_codec::ContentHeader;
use warren_store::MessageRecord;

use super::{Queue, QueueState, Ready};
use crate::message::{Address, Message};

/// Bodies kept in memory per queue before new persistent messages stay on disk.
pub const PAGE_BYTES: u64 = 8 * 1024 * 1024;
/// Most messages read back per page-in.
const LOAD_BATCH: usize = 2048;

impl Queue {
    /// Whether a new persistent message of `size` bytes should stay on disk.
    pub(super) fn should_page(&self, st: &QueueState, size: u32) -> bool {
        st.max_priority.is_none() && (st.unloaded > 0 || st.loaded_bytes + size as u64 > PAGE_BYTES)
    }

    /// Read the next on-disk bodies when the in-memory part runs low.
    pub(super) fn maybe_page_in(self: &Arc<Self>, st: &mut QueueState) {
        if st.loading || st.unloaded == 0 || st.loaded_bytes >= PAGE_BYTES / 2 {
            return;
        }
        let Some((store, id)) = self.store.get() else {
            return;
        };
        let mut seqs = Vec::new();
        let mut bytes = 0u64;
        for r in st.ready.iter_mut() {
            if r.message.is_none() && r.flags & Ready::LOADING == 0 {
                r.flags |= Ready::LOADING;
                seqs.push(r.seq);
                bytes += r.size as u64;
                if seqs.len() >= LOAD_BATCH || bytes >= PAGE_BYTES / 2 {
                    break;
                }
            }
        }
        if seqs.is_empty() {
            return;
        }
        st.loading = true;
        let queue = Arc::downgrade(self);
        store.read(*id, seqs, move |records| {
            if let Some(q) = queue.upgrade() {
                q.on_loaded(records);
            }
        });
    }

    /// Bodies read back from the store (runs on the storage thread).
    fn on_loaded(self: &Arc<Self>, records: Vec<(u64, Option<MessageRecord>)>) {
        let mut dead = Vec::new();
        {
            let mut st = self.state.lock();
            st.loading = false;
            for (seq, record) in records {
                self.fill(&mut st, seq, record);
            }
            self.dispatch(&mut st, &mut dead);
        }
        self.dispose(dead);
    }

    /// Put a body read from disk into its ready entry (if it is still waiting).
    fn fill(&self, st: &mut QueueState, seq: u64, record: Option<MessageRecord>) {
        let Ok(i) = st.ready.binary_search_by_key(&seq, |r| r.seq) else {
            return; // gone meanwhile (purged, expired)
        };
        if st.ready[i].is_loaded() {
            return;
        }
        let last = &mut st.last_address;
        match record.and_then(|r| message_from_record(r, last).ok()) {
            Some(m) => {
                let size = st.ready[i].size as u64;
                st.ready[i].message = Some(Arc::new(m));
                st.ready[i].flags &= !Ready::LOADING;
                st.unloaded -= 1;
                st.loaded_bytes += size;
            }
            None => {
                // Cannot happen unless the disk lost it: say so, and drop the entry
                // rather than wedge the queue.
                tracing::error!(queue = %self.name, seq, "a paged-out message could not be read back from the store");
                let _ = st.remove(i);
            }
        }
    }

    /// Read one on-disk message now, waiting for it (basic.get on a paged head).
    pub(super) fn load_now(&self, seq: u64) {
        let Some((store, id)) = self.store.get() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        store.read(*id, vec![seq], move |records| {
            let _ = tx.send(records);
        });
        let records = block_on_store(|| rx.recv().ok()).unwrap_or_default();
        let mut st = self.state.lock();
        for (seq, record) in records {
            self.fill(&mut st, seq, record);
        }
    }

    /// Load the bodies of dead messages that are still on disk (dead-lettering needs them).
    pub(super) fn load_dead(&self, entries: &mut [(Ready, super::DeathReason)]) {
        let Some((store, id)) = self.store.get() else {
            return;
        };
        let seqs: Vec<u64> = entries
            .iter()
            .filter(|(r, _)| !r.is_loaded())
            .map(|(r, _)| r.seq)
            .collect();
        if seqs.is_empty() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        store.read(*id, seqs, move |records| {
            let _ = tx.send(records);
        });
        let records = block_on_store(|| rx.recv().ok()).unwrap_or_default();
        for (seq, record) in records {
            if let (Some(entry), Some(m)) = (
                entries.iter_mut().find(|(r, _)| r.seq == seq),
                record.and_then(|r| message_from_record(r, &mut None).ok()),
            ) {
                entry.0.message = Some(Arc::new(m));
            }
        }
    }

    /// Restore a message read back from the store at start-up: in memory while
    /// the queue's budget lasts, otherwise only its index entry.
    pub fn restore(
        &self,
        seq: u64,
        record: MessageRecord,
        redelivered: bool,
    ) -> Result<(), String> {
        let mut st = self.state.lock();
        let message = message_from_record(record, &mut st.last_address).map_err(|_| {
            format!(
                "stored message {seq} of queue '{}' has a malformed content header",
                self.name
            )
        })?;
        let expires_at = self.expiry_of(&message, Instant::now());
        st.next_seq = st.next_seq.max(seq + 1);
        if redelivered {
            st.mark_durable = st.mark_durable.max(seq + 1);
            st.delivered_max = Some(st.delivered_max.map_or(seq, |m| m.max(seq)));
        }
        let priority = st.priority_of(&message);
        let size = message.content.body().len() as u32;
        let message = if self.should_page(&st, size) {
            None
        } else {
            Some(Arc::new(message))
        };
        st.push_back(Ready::new(
            seq,
            message,
            size,
            expires_at,
            redelivered,
            true,
            priority,
        ));
        Ok(())
    }
}

/// A message read back from the store. Consecutive messages with the same
/// address share it (`last`), as they did before they were written.
fn message_from_record(r: MessageRecord, last: &mut Option<Arc<Address>>) -> Result<Message, ()> {
    let header = ContentHeader::parse(r.header).map_err(|_| ())?;
    let address = match last {
        Some(a) if a.exchange == r.exchange && a.routing_key == r.routing_key && a.cc == r.cc => {
            a.clone()
        }
        _ => {
            let a = Address::new(r.exchange, r.routing_key, r.cc);
            *last = Some(a.clone());
            a
        }
    };
    Ok(Message::new(address, header, r.body))
}

/// Wait for the storage thread without stalling the other tasks of this tokio
/// worker (they move to another worker meanwhile).
pub(super) fn block_on_store<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
