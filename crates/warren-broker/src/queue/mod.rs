//! Queues. The queue's logic is a sans-IO state machine (`machine.rs`, with
//! `paging.rs` and `marks.rs`): commands in, [`Effects`](effects::Effects)
//! out. [`Queue`] is its driver: it runs each command under the queue's own
//! short-held lock, hands storage work to the storage thread before releasing
//! it, then performs the rest — deliveries into connections' inboxes,
//! dead-lettering into other queues, cancel notices — without the lock, so
//! that one queue's lock is never held while another's is taken.
//!
//! Storage completions (a read, a sync, a delivery mark) come back as
//! commands too, run on a tokio worker: the storage thread runs no queue
//! logic, and no worker waits on the disk. Time-based work (message TTL, queue
//! expiry) runs in a small per-queue timer task started only for queues that
//! need one (`expiry.rs`).

pub mod args;
mod command;
mod consumers;
mod credit;
mod dead_letter;
mod dlx_retry;
mod effects;
mod expiry;
mod machine;
#[cfg(test)]
mod machine_tests;
mod marks;
mod outlet;
mod paging;
mod pressure;
mod ready;
mod records;
mod stream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use amq_protocol::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_store::{Fetched, MessageRecord, Op, Store};

use crate::error::AmqpError;
use crate::message::{Address, Message};

pub use args::{QueueArgs, QueueType};
pub use consumers::Slot;
pub use credit::Credit;
pub use effects::DeathReason;
use effects::{Effects, ReadBack, StorageOp};
pub use machine::{ConsumerRefused, ConsumerRemoved, Enqueued, Got, QueueMachine, Storage};
pub use marks::MARK_AHEAD;
pub use outlet::{ConnectionId, Handover, Home, Outlet};
pub use pressure::{memory_short, set_memory_short};
pub use ready::{QueuedMessage, Stored, Time};
pub(crate) use records::message_from_record;
pub use stream::{StreamStart, StreamState};

/// A consumer as the queue sees it.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub tag: Arc<str>,
    pub channel: u16,
    pub conn: Arc<dyn Outlet>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos global=false`).
    pub credit: Arc<Credit>,
    /// Shared per-channel prefetch (`basic.qos global=true`).
    pub channel_credit: Arc<Credit>,
    /// `x-priority`: higher-priority consumers are served first while they have room.
    pub priority: i32,
    /// A stream consumer's `x-stream-offset` (`None`: next).
    pub stream_start: Option<StreamStart>,
}

/// Names a consumer: its connection, channel and tag.
#[derive(Debug)]
pub struct ConsumerKey {
    pub conn: ConnectionId,
    pub channel: u16,
    pub tag: String,
}

impl Slot for Arc<Consumer> {
    type Key = ConsumerKey;

    fn has_key(&self, key: &ConsumerKey) -> bool {
        self.conn.connection_id() == key.conn
            && self.channel == key.channel
            && *self.tag == *key.tag
    }
    fn try_reserve(&self) -> bool {
        if !self.conn.has_room_for_delivery() {
            return false;
        }
        if self.no_ack {
            return true;
        }
        if !self.credit.try_take() {
            return false;
        }
        if !self.channel_credit.try_take() {
            self.credit.release(1);
            return false;
        }
        true
    }

    fn unreserve(&self) {
        if !self.no_ack {
            self.credit.release(1);
            self.channel_credit.release(1);
        }
    }

    fn priority(&self) -> i32 {
        self.priority
    }

    fn no_ack(&self) -> bool {
        self.no_ack
    }

    fn exclusive(&self) -> bool {
        self.exclusive
    }
}

type Machine = QueueMachine<Arc<Consumer>>;

/// What the queue's lock guards.
#[derive(Debug)]
struct Locked {
    machine: Machine,
    /// Connections whose `basic.get` waits for the head to be read or marked.
    getters: Vec<(Arc<dyn Outlet>, u16)>,
    /// The address of the last message read back (shared with the next ones
    /// when it is the same, as it was before they were written).
    last_address: Option<Arc<Address>>,
}

#[derive(Debug)]
pub struct Queue {
    pub name: String,
    pub vhost: String,
    pub durable: bool,
    pub auto_delete: bool,
    /// The connection that declared an exclusive queue.
    pub exclusive_owner: Option<ConnectionId>,
    pub arguments: FieldTable,
    pub args: QueueArgs,
    /// The vhost, for dead-lettering and expiry (weak: the vhost owns the queue).
    vhost_ref: Weak<dyn Home>,
    /// Wakes the timer task when a nearer deadline appears.
    timer: Notify,
    timer_started: AtomicBool,
    /// The store and this queue's id in it (a broker with a store).
    store: OnceLock<(Arc<Store>, u64)>,
    /// The id this queue had in the store, while the broker is being recovered.
    recovered_id: OnceLock<u64>,
    /// Where storage completions run (the runtime the queue was made on).
    runtime: Option<tokio::runtime::Handle>,
    /// A stream: its log and readers (the machine then holds nothing).
    stream: OnceLock<Arc<StreamState>>,
    /// Dead-letters a target refused, kept until it takes them (`dlx_retry.rs`).
    parked: Mutex<Vec<dlx_retry::Parked>>,
    state: Mutex<Locked>,
}

impl Queue {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        vhost: String,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<ConnectionId>,
        arguments: FieldTable,
        args: QueueArgs,
        vhost_ref: Weak<dyn Home>,
    ) -> Queue {
        let machine = QueueMachine::new(args.clone(), Storage::None, auto_delete, Time::now());
        Queue {
            name,
            vhost,
            durable,
            auto_delete,
            exclusive_owner,
            arguments,
            args,
            vhost_ref,
            timer: Notify::new(),
            timer_started: AtomicBool::new(false),
            store: OnceLock::new(),
            recovered_id: OnceLock::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            stream: OnceLock::new(),
            parked: Mutex::new(Vec::new()),
            state: Mutex::new(Locked {
                machine,
                getters: Vec::new(),
                last_address: None,
            }),
        }
    }

    /// Give this queue its place in `store` under `id`: durable records for a
    /// durable queue, spilled transient bodies for any queue.
    pub fn attach_store(&self, store: Arc<Store>, id: u64) {
        if self.store.set((store, id)).is_ok() {
            self.state.lock().machine.set_storage(if self.durable {
                Storage::Durable
            } else {
                Storage::Spill
            });
        }
    }

    /// This queue is being restored from the store under `id` (it is attached
    /// once recovery is over; its messages are paged as they are restored).
    pub(crate) fn set_recovered_id(&self, id: u64) {
        let _ = self.recovered_id.set(id);
        self.state.lock().machine.set_storage(Storage::Durable);
    }

    pub(crate) fn recovered_id(&self) -> Option<u64> {
        self.recovered_id.get().copied()
    }

    /// The queue's id in the store, if it is stored.
    pub fn store_id(&self) -> Option<u64> {
        self.store.get().map(|(_, id)| *id)
    }

    /// Make this queue a stream over `state`'s log.
    pub fn attach_stream(&self, state: Arc<StreamState>) {
        let _ = self.stream.set(state);
    }

    /// The stream, if this queue is one.
    pub fn stream(&self) -> Option<&Arc<StreamState>> {
        self.stream.get()
    }

    /// Whether publishing `message` here means writing it to disk first
    /// (quorum queues and streams keep every message).
    pub fn persists(&self, message: &Message) -> bool {
        self.durable
            && self.store.get().is_some()
            && (message.content.is_persistent() || self.args.queue_type != QueueType::Classic)
    }

    /// Run a command: the machine under the lock, storage work before the
    /// lock is released (in the machine's order), everything else after.
    fn run<R>(
        self: &Arc<Self>,
        command: impl FnOnce(&mut Locked, &mut Effects<Arc<Consumer>>) -> R,
    ) -> R {
        let mut out = Effects::default();
        let (result, getters) = {
            let mut st = self.state.lock();
            let result = command(&mut st, &mut out);
            for op in out.storage.drain(..) {
                self.perform(op);
            }
            let getters = if out.wake_getters {
                std::mem::take(&mut st.getters)
            } else {
                Vec::new()
            };
            (result, getters)
        };
        self.finish(&mut out, getters);
        result
    }

    /// The effects that run without the lock.
    fn finish(
        self: &Arc<Self>,
        out: &mut Effects<Arc<Consumer>>,
        getters: Vec<(Arc<dyn Outlet>, u16)>,
    ) {
        for d in out.deliveries.drain(..) {
            let handover = Handover {
                channel: d.consumer.channel,
                consumer_tag: d.consumer.tag.clone(),
                no_ack: d.consumer.no_ack,
                queue: self.clone(),
                message: d.message,
            };
            if let Err(Handover { message, .. }) = d.consumer.conn.hand_over(handover) {
                // The connection is gone; its cleanup removes the consumer.
                // Until then the message waits (no dispatch: it would pick
                // the same consumer again).
                d.consumer.unreserve();
                self.take_back(message, d.consumer.no_ack);
            }
        }
        self.dead_letter(&mut out.deaths);
        for c in out.cancelled.drain(..) {
            c.conn.consumer_cancelled(c.channel, c.tag.clone());
        }
        for (conn, channel) in getters {
            conn.get_ready(channel);
        }
        if out.wake_timer {
            self.ensure_timer();
            self.timer.notify_one();
        }
    }

    /// A delivery its connection could not take: back to the ready list (and
    /// back on disk, if a no-ack delivery had already forgotten it there).
    fn take_back(self: &Arc<Self>, m: QueuedMessage, forgotten: bool) {
        self.run(|st, out| {
            if forgotten && m.stored != Stored::No {
                out.store(StorageOp::Write {
                    seq: m.seq,
                    message: m.message.clone(),
                    stored: m.stored,
                });
            }
            st.machine.put_back(m)
        });
    }

    /// Hand one storage request to the storage thread (under the lock).
    fn perform(self: &Arc<Self>, op: StorageOp) {
        let Some((store, id)) = self.store.get() else {
            return;
        };
        let id = *id;
        match op {
            StorageOp::Write {
                seq,
                message,
                stored,
            } => store.submit(match stored {
                Stored::Spilled => Op::SpillMessage {
                    queue: id,
                    seq,
                    message,
                },
                _ => Op::PutMessage {
                    queue: id,
                    seq,
                    message,
                },
            }),
            StorageOp::Forget { seq, stored } => forget(store, id, seq, stored),
            StorageOp::Read { seqs, page_in } => {
                let queue = Arc::downgrade(self);
                store.read(id, seqs, move |records| {
                    if let Some(q) = queue.upgrade() {
                        q.complete(move |q| q.on_read(records, page_in));
                    }
                });
            }
            StorageOp::Sync { upto } => {
                let queue = Arc::downgrade(self);
                store.barrier(move |ok| {
                    if let Some(q) = queue.upgrade() {
                        q.complete(move |q| {
                            q.run(|st, out| st.machine.written(upto, ok, Time::now(), out))
                        });
                    }
                });
            }
            StorageOp::Mark { upto } => {
                store.submit(Op::Delivered { queue: id, upto });
                let queue = Arc::downgrade(self);
                store.barrier(move |ok| {
                    if let Some(q) = queue.upgrade() {
                        q.complete(move |q| {
                            q.run(|st, out| st.machine.marked(upto, ok, Time::now(), out))
                        });
                    }
                });
            }
        }
    }

    /// Forget a record outside the lock (after dead-lettering it).
    fn forget(&self, seq: u64, stored: Stored) {
        if let Some((store, id)) = self.store.get() {
            forget(store, *id, seq, stored);
        }
    }

    /// Run a storage completion as a queue command on a tokio worker, never
    /// on the storage thread that reports it.
    /// (Without a runtime — benches and unit tests, which have no store —
    /// it runs at once.)
    fn complete(self: Arc<Self>, f: impl FnOnce(&Arc<Queue>) + Send + 'static) {
        match self.runtime.clone() {
            Some(rt) => {
                rt.spawn(async move { f(&self) });
            }
            None => f(&self),
        }
    }

    /// Bodies read back from the store.
    fn on_read(self: &Arc<Self>, records: Vec<(u64, Fetched)>, page_in: bool) {
        self.run(|st, out| {
            let messages = records
                .into_iter()
                .map(|(seq, r)| {
                    let m = match r {
                        Fetched::Found(r) => {
                            match records::message_from_record(r, &mut st.last_address) {
                                Some(m) => ReadBack::Body(Arc::new(m)),
                                None => ReadBack::Missing,
                            }
                        }
                        Fetched::Missing => ReadBack::Missing,
                        Fetched::Unavailable => ReadBack::Unavailable,
                    };
                    (seq, m)
                })
                .collect();
            st.machine.loaded(messages, page_in, Time::now(), out)
        });
    }

    /// At a clean stop: replace the delivery mark written ahead with the exact
    /// one, so that only messages really handed out come back redelivered.
    pub fn write_exact_mark(&self) {
        if let Some((store, id)) = self.store.get() {
            if self.durable {
                let upto = self.state.lock().machine.exact_mark();
                store.submit(Op::SetDelivered { queue: *id, upto });
            }
        }
    }

    /// Start the timer task if this queue has time-based work (TTL, expiry).
    pub fn start_timers(self: &Arc<Self>) {
        if self.args.message_ttl.is_some() || self.args.expires.is_some() {
            self.ensure_timer();
        }
    }

    fn ensure_timer(self: &Arc<Self>) {
        if !self.timer_started.swap(true, Ordering::Relaxed) && !expiry::spawn(self) {
            self.timer_started.store(false, Ordering::Relaxed);
        }
    }

    /// Add a message at the tail and deliver what can be delivered.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        if let Some(s) = self.stream.get() {
            if let Some((store, _)) = self.store.get() {
                s.publish(store, message);
            }
            return Enqueued::Accepted;
        }
        let spill = pressure::memory_short();
        self.run(|st, out| st.machine.publish(message, Time::now(), spill, out))
    }

    /// Put unacknowledged messages back in their original positions, marked redelivered.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        if self.stream.get().is_some() {
            return; // nothing left a stream
        }
        self.run(|st, out| st.machine.requeue(messages, Time::now(), out));
    }

    /// Put back a message that never reached its consumer (the channel went away
    /// while it was in flight), without marking it redelivered.
    pub fn return_undelivered(self: &Arc<Self>, m: QueuedMessage) {
        if self.stream.get().is_some() {
            return;
        }
        self.run(|st, out| st.machine.return_undelivered(m, Time::now(), out));
    }

    /// Messages acknowledged by a consumer.
    pub fn ack(self: &Arc<Self>, messages: &[QueuedMessage]) {
        if messages.iter().any(|m| m.stored != Stored::No) {
            self.run(|st, out| {
                let settled = messages.iter().map(|m| (m.seq, m.stored));
                st.machine.ack(settled, out)
            });
        }
    }

    /// Messages rejected or nacked without requeue: dead-letter them (or drop them).
    pub fn reject(self: &Arc<Self>, messages: Vec<QueuedMessage>) {
        if self.stream.get().is_some() {
            return;
        }
        self.run(|st, out| st.machine.reject(messages, out));
    }

    /// `basic.get` for `conn`'s `channel`. On [`Got::Wait`] the head is being
    /// read from disk: the connection is told ([`Outlet::get_ready`]) when it may ask again.
    pub fn get<O: Outlet + 'static>(
        self: &Arc<Self>,
        no_ack: bool,
        conn: &Arc<O>,
        channel: u16,
    ) -> Got {
        self.run(|st, out| {
            let got = st.machine.get(no_ack, Time::now(), out);
            if matches!(got, Got::Wait) {
                st.getters.push((conn.clone() as Arc<dyn Outlet>, channel));
            }
            got
        })
    }

    /// The queue was declared again (it counts as used for `x-expires`).
    pub fn touch(self: &Arc<Self>) {
        self.run(|st, out| st.machine.touch(Time::now(), out));
    }

    /// Try again to deliver (credit was freed or a connection drained).
    pub fn kick(self: &Arc<Self>) {
        if let Some(s) = self.stream.get() {
            s.wake_all();
            return;
        }
        self.run(|st, out| st.machine.kick(Time::now(), out));
    }

    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), AmqpError> {
        if let Some(s) = self.stream.get() {
            if self.is_deleted() {
                return Err(AmqpError::not_found(format!(
                    "no queue '{}' in vhost '{}'",
                    self.name, self.vhost
                )));
            }
            let start = consumer.stream_start.unwrap_or(StreamStart::Next);
            return s.add(self, Arc::new(consumer), start);
        }
        let added = self.run(|st, out| {
            st.machine
                .add_consumer(Arc::new(consumer), Time::now(), out)
        });
        added.map_err(|refused| match refused {
            ConsumerRefused::Deleted => AmqpError::not_found(format!(
                "no queue '{}' in vhost '{}'",
                self.name, self.vhost
            )),
            ConsumerRefused::ExclusiveInUse => AmqpError::access_refused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )),
        })
    }

    pub fn remove_consumer(
        self: &Arc<Self>,
        conn: ConnectionId,
        channel: u16,
        tag: &str,
    ) -> ConsumerRemoved {
        if let Some(s) = self.stream.get() {
            let n = s.remove(|k| k.conn == conn && k.channel == channel && k.tag == tag);
            return if n == 0 {
                ConsumerRemoved::NotFound
            } else {
                ConsumerRemoved::Removed
            };
        }
        self.run(|st, out| {
            let key = ConsumerKey {
                conn,
                channel,
                tag: tag.to_owned(),
            };
            st.machine.cancel(&key, Time::now(), out)
        })
    }

    pub fn purge(self: &Arc<Self>) -> u32 {
        self.run(|st, out| st.machine.purge(out))
    }

    pub fn message_count(&self) -> u32 {
        if let Some(s) = self.stream.get() {
            return s.log.len().min(u32::MAX as u64) as u32;
        }
        self.state.lock().machine.message_count()
    }

    /// Ready messages and consumers (expired head messages are not counted).
    pub fn counts(self: &Arc<Self>) -> (u32, u32) {
        if let Some(s) = self.stream.get() {
            return (self.message_count(), s.consumer_count());
        }
        self.run(|st, out| st.machine.counts(Time::now(), out))
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().machine.is_deleted()
    }

    /// Mark deleted; tell consumers; returns how many ready messages were dropped.
    pub fn mark_deleted(self: &Arc<Self>) -> u32 {
        if let Some(s) = self.stream.get() {
            s.delete(self.store.get().map(|(store, _)| &**store));
        }
        let dropped = self.run(|st, out| st.machine.delete(out));
        self.timer.notify_one(); // the timer task, if any, ends
        dropped
    }

    /// Records that could not be read back from the store (should stay 0).
    pub fn unreadable(&self) -> u64 {
        self.state.lock().machine.unreadable
    }

    /// Restore a message read back from the store at start-up.
    pub fn restore(
        &self,
        seq: u64,
        record: MessageRecord,
        redelivered: bool,
    ) -> Result<(), String> {
        let mut st = self.state.lock();
        let message =
            records::message_from_record(record, &mut st.last_address).ok_or_else(|| {
                format!(
                    "stored message {seq} of queue '{}' has a malformed content header",
                    self.name
                )
            })?;
        st.machine
            .restore(seq, Arc::new(message), redelivered, Time::now());
        Ok(())
    }
}

fn forget(store: &Store, queue: u64, seq: u64, stored: Stored) {
    match stored {
        Stored::Durable => store.submit(Op::DelMessage { queue, seq }),
        Stored::Spilled => store.submit(Op::DelSpilled { queue, seq }),
        Stored::No => {}
    }
}
