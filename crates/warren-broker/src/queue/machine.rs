//! The queue as a sans-IO state machine: commands in, [`Effects`] out.
//!
//! The machine holds the ready list, the consumers, paging and delivery-mark
//! bookkeeping, and the queue's limits; it owns no store, connection or vhost
//! and reads no clock (time is an argument). The broker's [`Queue`](super::Queue)
//! runs each command under the queue's lock and then performs the effects;
//! `machine_tests.rs` drives it with a simulated store and a virtual clock.
//! Paging is in `paging.rs`, delivery marks in `marks.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::args::{Overflow, QueueArgs, QueueType};
use super::consumers::{Consumers, Slot};
use super::effects::DeathReason;
use super::effects::{Death, Delivery, Effects, StorageOp};
use super::ready::{QueuedMessage, Ready, ReadyList, Stored, Time};
use crate::message::Message;

/// Where a queue may keep message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// No store (`--in-memory`): everything stays in memory.
    None,
    /// Transient queue: may spill transient bodies to disk to save memory.
    Spill,
    /// Durable queue: persistent messages are written; transient ones may spill.
    Durable,
}

/// What became of a published message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Accepted,
    /// Refused by `x-overflow: reject-publish(-dlx)`: the publisher gets a nack.
    Rejected,
    /// The queue was deleted meanwhile.
    Gone,
}

/// The answer to `basic.get`.
#[derive(Debug)]
pub enum Got {
    Message(QueuedMessage, u32),
    Empty,
    /// The head is being read from disk (or its delivery mark written): ask
    /// again when the queue says so (`Effects::wake_getters`).
    Wait,
}

/// What removing a consumer left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerRemoved {
    NotFound,
    Removed,
    /// The last consumer of an auto-delete queue left: delete the queue.
    RemovedLastOfAutoDelete,
}

/// Why a consumer was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerRefused {
    Deleted,
    ExclusiveInUse,
}

/// What the timer found due.
#[derive(Debug, PartialEq, Eq)]
pub struct Tick {
    /// When to look again.
    pub next: Option<Time>,
    /// `x-expires` ran out: delete the queue.
    pub expire_queue: bool,
}

#[derive(Debug)]
pub struct QueueMachine<C> {
    pub(super) args: QueueArgs,
    pub(super) storage: Storage,
    pub(super) auto_delete: bool,
    pub(super) ready: ReadyList,
    pub(super) consumers: Consumers<C>,
    pub(super) next_seq: u64,
    deleted: bool,
    /// Last consume, get or redeclare (for `x-expires`).
    last_used: Time,
    /// The nearest deadline the timer knows of.
    timer_at: Option<Time>,
    // Paging (paging.rs).
    /// A page-in read is under way.
    pub(super) loading: bool,
    /// Paged messages whose bodies are dropped once their writes are on disk.
    pub(super) paged: VecDeque<(u64, u8)>,
    /// A sync covering `paged` is under way.
    pub(super) syncing: bool,
    /// Dead messages whose bodies are being read for dead-lettering.
    pub(super) dying: Vec<(Ready, DeathReason)>,
    /// Records that could not be read back (logged; should stay 0).
    pub unreadable: u64,
    /// After a failed read: no reads before this time.
    pub(super) retry_reads_at: Option<Time>,
    // Delivery marks (marks.rs).
    pub(super) mark_durable: u64,
    pub(super) mark_pending: bool,
    pub(super) delivered_max: Option<u64>,
    /// Quorum queues: how often each returned message came back (the rest
    /// were never returned). Not kept across a restart.
    returns: HashMap<u64, u32>,
}

impl<C: Slot> QueueMachine<C> {
    pub fn new(args: QueueArgs, storage: Storage, auto_delete: bool, now: Time) -> Self {
        let by_priority = args.max_priority.is_some_and(|p| p > 0);
        QueueMachine {
            args,
            storage,
            auto_delete,
            ready: ReadyList::new(by_priority),
            consumers: Consumers::new(),
            next_seq: 0,
            deleted: false,
            last_used: now,
            timer_at: None,
            loading: false,
            paged: VecDeque::new(),
            syncing: false,
            dying: Vec::new(),
            unreadable: 0,
            retry_reads_at: None,
            mark_durable: if storage == Storage::Durable {
                0
            } else {
                u64::MAX
            },
            mark_pending: false,
            delivered_max: None,
            returns: HashMap::new(),
        }
    }

    /// Where records may go (the store is attached after the queue is made).
    pub fn set_storage(&mut self, storage: Storage) {
        if self.storage == storage {
            return;
        }
        self.storage = storage;
        self.mark_durable = if storage == Storage::Durable {
            0
        } else {
            u64::MAX
        };
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn message_count(&self) -> u32 {
        self.ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    /// Whether a message is written to disk as a persistent record here.
    /// A quorum queue keeps every message, whatever its delivery mode.
    pub fn persists(&self, message: &Message) -> bool {
        self.storage == Storage::Durable
            && (message.content.is_persistent() || self.counts_deliveries())
    }

    /// Quorum queues count how often a message was returned.
    fn counts_deliveries(&self) -> bool {
        self.args.queue_type == QueueType::Quorum
    }

    /// A message leaves the ready list for a consumer: it carries its count.
    fn stamp(&mut self, m: &mut QueuedMessage) {
        if self.counts_deliveries() {
            m.delivery_count = Some(self.returns.remove(&m.seq).unwrap_or(0));
        }
    }

    /// A message goes back to the ready list with this count.
    fn remember_count(&mut self, m: &QueuedMessage) {
        if let Some(n) = m.delivery_count.filter(|n| *n > 0) {
            self.returns.insert(m.seq, n);
        }
    }

    /// A message's priority in this queue (capped at the maximum, as in RabbitMQ).
    pub(super) fn priority_of(&self, message: &Message) -> u8 {
        match self.args.max_priority {
            Some(max) if max > 0 => message.content.priority().unwrap_or(0).min(max),
            _ => 0,
        }
    }

    pub(super) fn expiry_of(&self, message: &Message, now: Time) -> Option<Time> {
        let per_message = message
            .content
            .expiration()
            .and_then(|e| e.parse::<u64>().ok());
        let ttl = match (self.args.message_ttl, per_message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(now.after_ms(ttl))
    }

    fn note_deadline(&mut self, at: Option<Time>, out: &mut Effects<C>) {
        if let Some(at) = at {
            if self.timer_at.is_none_or(|t| at < t) {
                self.timer_at = Some(at);
                out.wake_timer = true;
            }
        }
    }

    /// Add a message at the tail and deliver what can be delivered.
    /// `spill`: memory is short, so transient messages may be paged out too.
    pub fn publish(
        &mut self,
        message: Arc<Message>,
        now: Time,
        spill: bool,
        out: &mut Effects<C>,
    ) -> Enqueued {
        if self.deleted {
            return Enqueued::Gone;
        }
        let expires_at = self.expiry_of(&message, now);
        self.note_deadline(expires_at, out);
        let seq = self.next_seq;
        self.next_seq += 1;
        let persistent = self.persists(&message);
        let size = message.content.body().len() as u64;
        let page = self.should_page(size, persistent, spill);
        let stored = if persistent {
            Stored::Durable
        } else if page {
            Stored::Spilled
        } else {
            Stored::No
        };
        if stored != Stored::No {
            out.store(StorageOp::Write {
                seq,
                message: message.clone(),
                stored,
            });
        }
        let priority = self.priority_of(&message);
        let mut r = Ready::new(
            QueuedMessage {
                seq,
                message,
                redelivered: false,
                expires_at,
                stored,
                delivery_count: None,
            },
            priority,
        );
        if page {
            r.set_paged(true);
            self.paged.push_back((seq, priority));
        }
        self.ready.push(r);
        let outcome = self.enforce_limits(seq, priority, out);
        self.dispatch(now, out);
        outcome
    }

    /// Apply `x-max-length` / `x-max-length-bytes` after adding message `seq`.
    fn enforce_limits(&mut self, seq: u64, priority: u8, out: &mut Effects<C>) -> Enqueued {
        let over = |m: &QueueMachine<C>| {
            m.args
                .max_length
                .is_some_and(|max| m.ready.len() as u64 > max)
                || m.args
                    .max_length_bytes
                    .is_some_and(|max| m.ready.bytes > max)
        };
        if !over(self) {
            return Enqueued::Accepted;
        }
        match self.args.overflow {
            Overflow::DropHead => {
                while over(self) {
                    match self.ready.pop_front() {
                        Some(r) => self.die(r, DeathReason::MaxLen, out),
                        None => break,
                    }
                }
                Enqueued::Accepted
            }
            Overflow::RejectPublish | Overflow::RejectPublishDlx => {
                let Ok(i) = self.ready.position(priority, seq) else {
                    return Enqueued::Accepted;
                };
                if let Some(r) = self.ready.remove(i) {
                    self.paged.retain(|(s, _)| *s != seq);
                    if self.args.overflow == Overflow::RejectPublishDlx {
                        self.die(r, DeathReason::MaxLen, out);
                    } else {
                        out.forget(r.seq, r.stored());
                    }
                }
                Enqueued::Rejected
            }
        }
    }

    /// A message left the ready list without a consumer's ack: dead-letter it
    /// (reading its body first if it is on disk), or forget it.
    pub(super) fn die(&mut self, r: Ready, reason: DeathReason, out: &mut Effects<C>) {
        if !self.returns.is_empty() {
            self.returns.remove(&r.seq);
        }
        if self.args.dead_letter_exchange.is_none() {
            out.forget(r.seq, r.stored());
            return;
        }
        match r.into_queued() {
            Ok(message) => out.deaths.push(Death { message, reason }),
            Err(r) => {
                out.store(StorageOp::Read {
                    seqs: vec![r.seq],
                    page_in: false,
                });
                self.dying.push((r, reason));
            }
        }
    }

    /// Drop expired messages from the head (RabbitMQ expires only at the head).
    fn expire_head(&mut self, now: Time, out: &mut Effects<C>) {
        while self.ready.front().is_some_and(|r| r.is_due(now)) {
            if let Some(r) = self.ready.pop_front() {
                self.die(r, DeathReason::Expired, out);
            }
        }
    }

    /// Put unacknowledged messages back in their original positions, marked redelivered.
    pub fn requeue(
        &mut self,
        messages: impl IntoIterator<Item = QueuedMessage>,
        now: Time,
        out: &mut Effects<C>,
    ) {
        if self.deleted {
            return;
        }
        for mut m in messages {
            m.redelivered = true;
            let p = self.priority_of(&m.message);
            if let Some(n) = m.delivery_count {
                // A quorum queue drops (or dead-letters) a message returned
                // more often than its delivery limit.
                let n = n.saturating_add(1);
                m.delivery_count = Some(n);
                if self
                    .args
                    .delivery_limit
                    .is_some_and(|limit| u64::from(n) > limit)
                {
                    self.die(Ready::new(m, p), DeathReason::DeliveryLimit, out);
                    continue;
                }
                self.remember_count(&m);
            }
            self.note_deadline(m.expires_at, out);
            self.ready.insert(Ready::new(m, p));
        }
        self.dispatch(now, out);
    }

    /// Put back a message that never reached its consumer (the channel went
    /// away while it was in flight), without marking it redelivered.
    pub fn return_undelivered(&mut self, m: QueuedMessage, now: Time, out: &mut Effects<C>) {
        if self.deleted {
            return;
        }
        self.remember_count(&m);
        let p = self.priority_of(&m.message);
        self.ready.insert(Ready::new(m, p));
        self.dispatch(now, out);
    }

    /// Put back a message whose delivery failed (its connection is gone),
    /// without dispatching again.
    pub fn put_back(&mut self, m: QueuedMessage) {
        if self.deleted {
            return;
        }
        self.remember_count(&m);
        let p = self.priority_of(&m.message);
        self.ready.insert(Ready::new(m, p));
    }

    /// Messages acknowledged by a consumer: they leave the queue for good.
    pub fn ack(&mut self, settled: impl IntoIterator<Item = (u64, Stored)>, out: &mut Effects<C>) {
        for (seq, stored) in settled {
            out.forget(seq, stored);
        }
    }

    /// Messages rejected or nacked without requeue: dead-letter them (or drop them).
    pub fn reject(&mut self, messages: Vec<QueuedMessage>, out: &mut Effects<C>) {
        for m in messages {
            let p = self.priority_of(&m.message);
            self.die(Ready::new(m, p), DeathReason::Rejected, out);
        }
    }

    /// `basic.get`: the head message and how many remain. With `no_ack` the
    /// message leaves the queue for good.
    pub fn get(&mut self, no_ack: bool, now: Time, out: &mut Effects<C>) -> Got {
        self.last_used = now;
        self.expire_head(now, out);
        let Some(head) = self.ready.front() else {
            return Got::Empty;
        };
        if !head.is_loaded() {
            self.page_in(now, out);
            return Got::Wait;
        }
        let (seq, stored) = (head.seq, head.stored());
        if !self.may_deliver(seq, stored, out) {
            return Got::Wait;
        }
        let Some(Ok(mut m)) = self.ready.pop_front().map(Ready::into_queued) else {
            return Got::Empty;
        };
        self.stamp(&mut m);
        self.note_delivered(&m);
        if no_ack {
            out.forget(m.seq, m.stored);
        }
        self.page_in(now, out);
        Got::Message(m, self.ready.len() as u32)
    }

    /// The queue was declared again (it counts as used for `x-expires`).
    pub fn touch(&mut self, now: Time, out: &mut Effects<C>) {
        self.last_used = now;
        out.wake_timer = self.args.expires.is_some();
    }

    /// Try again to deliver (credit was freed or a connection drained).
    pub fn kick(&mut self, now: Time, out: &mut Effects<C>) {
        self.dispatch(now, out);
    }

    pub fn add_consumer(
        &mut self,
        consumer: C,
        now: Time,
        out: &mut Effects<C>,
    ) -> Result<(), ConsumerRefused> {
        if self.deleted {
            return Err(ConsumerRefused::Deleted);
        }
        if self.consumers.any_exclusive() || (consumer.exclusive() && !self.consumers.is_empty()) {
            return Err(ConsumerRefused::ExclusiveInUse);
        }
        self.consumers.add(consumer);
        self.last_used = now;
        self.dispatch(now, out);
        Ok(())
    }

    /// `basic.cancel` (or the consumer's channel closed).
    pub fn cancel(&mut self, key: &C::Key, now: Time, out: &mut Effects<C>) -> ConsumerRemoved {
        if self.consumers.remove(|c| c.has_key(key)) == 0 {
            return ConsumerRemoved::NotFound;
        }
        self.last_used = now;
        out.wake_timer = self.args.expires.is_some();
        if self.auto_delete
            && self.consumers.is_empty()
            && self.consumers.had_consumer
            && !self.deleted
        {
            ConsumerRemoved::RemovedLastOfAutoDelete
        } else {
            ConsumerRemoved::Removed
        }
    }

    /// Drop every ready message; returns how many.
    pub fn purge(&mut self, out: &mut Effects<C>) -> u32 {
        let n = self.ready.len() as u32;
        for r in self.ready.drain() {
            if r.stored() != Stored::No {
                out.storage.push(StorageOp::Forget {
                    seq: r.seq,
                    stored: r.stored(),
                });
            }
        }
        self.paged.clear();
        self.returns.clear();
        n
    }

    /// The queue is deleted: its consumers are cancelled; returns how many
    /// ready messages were dropped (the store drops the queue's records whole).
    pub fn delete(&mut self, out: &mut Effects<C>) -> u32 {
        self.deleted = true;
        let n = self.ready.len() as u32;
        self.ready.drain().for_each(drop);
        self.paged.clear();
        self.dying.clear();
        self.returns.clear();
        out.cancelled.extend(self.consumers.drain());
        out.wake_getters = true;
        n
    }

    /// Ready messages and consumers (expired head messages are not counted).
    pub fn counts(&mut self, now: Time, out: &mut Effects<C>) -> (u32, u32) {
        self.expire_head(now, out);
        (self.ready.len() as u32, self.consumers.len() as u32)
    }

    /// The time-based work due at `now`: expire messages, and say whether the
    /// queue itself expired (`x-expires`) and when to look again.
    pub fn tick(&mut self, now: Time, out: &mut Effects<C>) -> Tick {
        self.expire_head(now, out);
        self.dispatch(now, out);
        let head = self.ready.front().and_then(Ready::expires_at);
        let unused_until = self
            .args
            .expires
            .filter(|_| self.consumers.is_empty())
            .map(|ms| self.last_used.after_ms(ms));
        let expire_queue = unused_until.is_some_and(|t| t <= now);
        let next = [head, unused_until, self.retry_reads_at]
            .into_iter()
            .flatten()
            .min();
        self.timer_at = next;
        Tick { next, expire_queue }
    }

    /// Hand ready messages to consumers that have room.
    pub(super) fn dispatch(&mut self, now: Time, out: &mut Effects<C>) {
        let single_active = self.args.single_active_consumer;
        while !self.ready.is_empty() && !self.consumers.is_empty() {
            self.expire_head(now, out);
            let (seq, stored) = match self.ready.front() {
                None => break,
                // The head's body is on disk: wait for the page-in.
                Some(head) if !head.is_loaded() => break,
                Some(head) => (head.seq, head.stored()),
            };
            if !self.may_deliver(seq, stored, out) {
                break;
            }
            let Some(consumer) = self.consumers.next(single_active) else {
                break;
            };
            let Some(Ok(mut message)) = self.ready.pop_front().map(Ready::into_queued) else {
                consumer.unreserve();
                break;
            };
            self.stamp(&mut message);
            self.note_delivered(&message);
            if consumer.no_ack() {
                // Delivered without ack: it has left the queue for good.
                out.forget(message.seq, message.stored);
            }
            out.deliveries.push(Delivery { consumer, message });
        }
        self.page_in(now, out);
        self.sync_paged(out);
    }
}
