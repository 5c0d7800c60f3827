//! The ready list: messages waiting for a consumer, in delivery order
//! (arrival order, or priority then arrival in a priority queue), with the
//! byte counts that paging and length limits need.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::message::Message;

/// The queue machine's clock: nanoseconds since a process-wide epoch. Time is
/// an argument of every command, so the machine is deterministic and tests
/// drive it with a virtual clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    const NEVER: Time = Time(u64::MAX);

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    pub fn now() -> Time {
        Time::of(Instant::now())
    }

    /// An instant before the epoch counts as the epoch (it is in the past).
    pub fn of(at: Instant) -> Time {
        Time(
            u64::try_from(at.saturating_duration_since(Time::epoch()).as_nanos())
                .unwrap_or(u64::MAX - 1)
                .min(u64::MAX - 1),
        )
    }

    pub fn instant(self) -> Instant {
        Time::epoch() + Duration::from_nanos(self.0)
    }

    pub fn after_ms(self, ms: u64) -> Time {
        Time(
            self.0
                .saturating_add(ms.saturating_mul(1_000_000))
                .min(u64::MAX - 1),
        )
    }
}

/// A message that left the ready list: in flight to a consumer, unacked, or
/// handed back. Always has its body.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// When the message expires (queue `x-message-ttl` or the message's `expiration`).
    pub expires_at: Option<Time>,
    /// Where its record is in the store, which must forget it when it leaves
    /// the queue for good.
    pub stored: Stored,
    /// Quorum queues: how many times it was returned before this delivery
    /// (sent as the `x-delivery-count` header). `None` in other queues.
    pub delivery_count: Option<u32>,
}

impl QueuedMessage {
    /// The content header to send: the publisher's bytes, with
    /// `x-delivery-count` set when the queue counts deliveries. As in
    /// RabbitMQ 3.10.8, `basic.get` always carries the count and a consumer's
    /// delivery only once the message was returned.
    pub fn wire_header(&self, for_get: bool) -> std::borrow::Cow<'_, [u8]> {
        use amq_protocol::types::AMQPValue;
        let header = self.message.content.header();
        match self.delivery_count {
            None => header.into(),
            Some(0) if !for_get => header.into(),
            Some(n) => self
                .message
                .header_with("x-delivery-count", AMQPValue::LongLongInt(i64::from(n)))
                .map_or(header.into(), Into::into),
        }
    }
}

/// Whether, and how, a message has a record in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    No,
    /// A persistent message of a durable queue: survives a restart.
    Durable,
    /// A transient message paged out to disk to save memory: wiped at start-up.
    Spilled,
}

/// A message in the ready list. A backlog of millions of messages is mostly
/// these, so they are kept to 32 bytes.
#[derive(Debug)]
pub(super) struct Ready {
    pub seq: u64,
    /// The message, while its body is in memory; `None` while it is only on
    /// disk (read back when it nears the head).
    pub message: Option<Arc<Message>>,
    /// When the message expires, [`Time::NEVER`] for never.
    expires_at: Time,
    /// Body length.
    pub size: u32,
    flags: u8,
    /// Effective priority in this queue (0 unless it is a priority queue).
    pub priority: u8,
}

const _: () = assert!(std::mem::size_of::<Ready>() == 32);

impl Ready {
    const REDELIVERED: u8 = 1;
    const DURABLE: u8 = 2;
    const SPILLED: u8 = 4;
    /// A read of its body from the store is under way.
    const LOADING: u8 = 8;
    /// Paged: its body is dropped from memory once its record is on disk.
    const PAGED: u8 = 16;

    pub fn new(m: QueuedMessage, priority: u8) -> Ready {
        let mut flags = 0;
        if m.redelivered {
            flags |= Ready::REDELIVERED;
        }
        flags |= match m.stored {
            Stored::No => 0,
            Stored::Durable => Ready::DURABLE,
            Stored::Spilled => Ready::SPILLED,
        };
        Ready {
            seq: m.seq,
            size: m.message.content.body().len().min(u32::MAX as usize) as u32,
            message: Some(m.message),
            expires_at: m.expires_at.unwrap_or(Time::NEVER),
            flags,
            priority,
        }
    }

    pub fn stored(&self) -> Stored {
        if self.flags & Ready::DURABLE != 0 {
            Stored::Durable
        } else if self.flags & Ready::SPILLED != 0 {
            Stored::Spilled
        } else {
            Stored::No
        }
    }

    pub fn expires_at(&self) -> Option<Time> {
        (self.expires_at != Time::NEVER).then_some(self.expires_at)
    }

    pub fn is_due(&self, now: Time) -> bool {
        self.expires_at != Time::NEVER && self.expires_at <= now
    }

    pub fn is_loaded(&self) -> bool {
        self.message.is_some()
    }

    pub fn is_loading(&self) -> bool {
        self.flags & Ready::LOADING != 0
    }

    pub fn set_loading(&mut self, on: bool) {
        self.set(Ready::LOADING, on);
    }

    pub fn is_paged(&self) -> bool {
        self.flags & Ready::PAGED != 0
    }

    pub fn set_paged(&mut self, on: bool) {
        self.set(Ready::PAGED, on);
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// The message with its body, if it is in memory.
    pub fn into_queued(self) -> Result<QueuedMessage, Ready> {
        let stored = self.stored();
        let redelivered = self.flags & Ready::REDELIVERED != 0;
        let expires_at = self.expires_at();
        match self.message {
            Some(message) => Ok(QueuedMessage {
                seq: self.seq,
                message,
                redelivered,
                expires_at,
                stored,
                delivery_count: None,
            }),
            None => Err(self),
        }
    }
}

/// Ready messages in delivery order, with their byte counts.
#[derive(Debug, Default)]
pub(super) struct ReadyList {
    entries: VecDeque<Ready>,
    /// Ordered by priority, then arrival (`x-max-priority`).
    by_priority: bool,
    /// Body bytes of every ready message (for `x-max-length-bytes`).
    pub bytes: u64,
    /// Body bytes held in memory.
    pub loaded_bytes: u64,
    /// Messages whose body is only on disk.
    pub unloaded: usize,
}

impl ReadyList {
    pub fn new(by_priority: bool) -> ReadyList {
        ReadyList {
            by_priority,
            ..ReadyList::default()
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn front(&self) -> Option<&Ready> {
        self.entries.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Ready> {
        self.entries.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Ready> {
        self.entries.iter_mut()
    }

    fn count_in(&mut self, r: &Ready) {
        self.bytes += r.size as u64;
        if r.is_loaded() {
            self.loaded_bytes += r.size as u64;
        } else {
            self.unloaded += 1;
        }
    }

    fn count_out(&mut self, r: &Ready) {
        self.bytes -= r.size as u64;
        if r.is_loaded() {
            self.loaded_bytes -= r.size as u64;
        } else {
            self.unloaded -= 1;
        }
    }

    /// Add a new message (the highest seq so far).
    pub fn push(&mut self, r: Ready) {
        if self.by_priority {
            return self.insert(r);
        }
        self.count_in(&r);
        self.entries.push_back(r);
    }

    /// Put a message back where it belongs (requeue): by seq, or by priority then seq.
    pub fn insert(&mut self, r: Ready) {
        self.count_in(&r);
        let at = match self.position(r.priority, r.seq) {
            Ok(i) | Err(i) => i,
        };
        self.entries.insert(at, r);
    }

    pub fn pop_front(&mut self) -> Option<Ready> {
        let r = self.entries.pop_front()?;
        self.count_out(&r);
        Some(r)
    }

    pub fn remove(&mut self, i: usize) -> Option<Ready> {
        let r = self.entries.remove(i)?;
        self.count_out(&r);
        Some(r)
    }

    pub fn drain(&mut self) -> impl Iterator<Item = Ready> + '_ {
        self.bytes = 0;
        self.loaded_bytes = 0;
        self.unloaded = 0;
        self.entries.drain(..)
    }

    /// Where the entry of (`priority`, `seq`) is, or would go.
    pub fn position(&self, priority: u8, seq: u64) -> Result<usize, usize> {
        if self.by_priority {
            let key = (std::cmp::Reverse(priority), seq);
            self.entries
                .binary_search_by(|r| (std::cmp::Reverse(r.priority), r.seq).cmp(&key))
        } else {
            self.entries.binary_search_by_key(&seq, |r| r.seq)
        }
    }

    pub fn get(&self, i: usize) -> Option<&Ready> {
        self.entries.get(i)
    }

    /// Give entry `i` its body back (read from the store).
    pub fn fill(&mut self, i: usize, message: Arc<Message>) {
        if let Some(r) = self.entries.get_mut(i) {
            if r.message.is_none() {
                self.unloaded -= 1;
                self.loaded_bytes += r.size as u64;
            }
            r.message = Some(message);
            r.set_loading(false);
        }
    }

    pub fn set_loading(&mut self, i: usize, on: bool) {
        if let Some(r) = self.entries.get_mut(i) {
            r.set_loading(on);
        }
    }

    /// Drop entry `i`'s body from memory (it is on disk).
    pub fn unload(&mut self, i: usize) {
        if let Some(r) = self.entries.get_mut(i) {
            if r.message.take().is_some() {
                self.unloaded += 1;
                self.loaded_bytes -= r.size as u64;
            }
            r.set_paged(false);
        }
    }

    /// Add a message restored from the store with only its index entry.
    pub fn push_unloaded(&mut self, mut r: Ready) {
        r.message = None;
        self.push(r);
    }
}
