//! Queues: ready messages in order, consumers in round-robin, and dispatch.
//!
//! Each queue has its own lock, held only for short, non-blocking work, so
//! unrelated queues never contend. Dispatch runs in whichever task made progress
//! possible (a publisher adding a message, a consumer freeing credit) and hands
//! messages to consumers' connections through their inboxes.
//!
//! Messages that die here (rejected, expired, dropped by a length limit) are
//! collected while the lock is held and dead-lettered after it is released
//! (`dead_letter.rs`), so that one queue's lock is never held while another's
//! is taken. Time-based work (message TTL, queue expiry) runs in a small
//! per-queue timer task started only for queues that need one (`expiry.rs`).
//!
//! Durable queues write persistent messages to the store (`warren-store`) and
//! keep only the first few megabytes of them in memory; the rest wait on disk
//! and are read back ahead of the consumers (`paging.rs`), so memory does not
//! grow with the backlog.

pub mod args;
mod credit;
mod dead_letter;
mod expiry;
mod paging;

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use amq_protocol::types::FieldTable;
use parking_lot::Mutex;
use tokio::sync::Notify;
use warren_store::{Op, Store};

use crate::connection::handle::{ConnEvent, ConnHandle, ConnectionId};
use crate::error::AmqpError;
use crate::message::{Address, Message};
use crate::vhost::VHost;

use args::Overflow;
pub use args::QueueArgs;
pub use credit::Credit;
pub use dead_letter::DeathReason;

/// A message that left the ready list: in flight to a consumer, unacked, or
/// handed back. Always has its body.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// When the message expires (queue `x-message-ttl` or the message's `expiration`).
    pub expires_at: Option<Instant>,
    /// Written to the store (persistent message in a durable queue): it must be
    /// deleted there when it leaves the queue for good.
    pub persisted: bool,
}

/// A message in the ready list. A backlog of millions of messages is mostly
/// these, so they are kept to 32 bytes.
#[derive(Debug)]
struct Ready {
    seq: u64,
    /// The message, while its body is in memory; `None` while it is only on
    /// disk (read back when it nears the head) or being read ([`Ready::LOADING`]).
    message: Option<Arc<Message>>,
    /// When the message expires (queue `x-message-ttl` or the message's `expiration`).
    expires_at: Deadline,
    /// Body length.
    size: u32,
    /// [`Ready::REDELIVERED`], [`Ready::PERSISTED`], [`Ready::LOADING`].
    flags: u8,
    /// Effective priority in this queue (0 unless it is a priority queue).
    priority: u8,
}

const _: () = assert!(std::mem::size_of::<Ready>() == 32);

impl Ready {
    const REDELIVERED: u8 = 1;
    /// Written to the store: it must be deleted there when it leaves the queue.
    const PERSISTED: u8 = 2;
    /// Its body is being read back from the store.
    const LOADING: u8 = 4;

    fn new(
        seq: u64,
        message: Option<Arc<Message>>,
        size: u32,
        expires_at: Option<Instant>,
        redelivered: bool,
        persisted: bool,
        priority: u8,
    ) -> Ready {
        let mut flags = 0;
        if redelivered {
            flags |= Ready::REDELIVERED;
        }
        if persisted {
            flags |= Ready::PERSISTED;
        }
        Ready {
            seq,
            message,
            expires_at: Deadline::new(expires_at),
            size,
            flags,
            priority,
        }
    }

    fn loaded(m: QueuedMessage, priority: u8) -> Ready {
        let size = m.message.content.body().len() as u32;
        Ready::new(
            m.seq,
            Some(m.message),
            size,
            m.expires_at,
            m.redelivered,
            m.persisted,
            priority,
        )
    }

    fn persisted(&self) -> bool {
        self.flags & Ready::PERSISTED != 0
    }

    /// The message with its body, if it is in memory.
    fn into_queued(self) -> Result<QueuedMessage, Ready> {
        let persisted = self.persisted();
        match self.message {
            Some(message) => Ok(QueuedMessage {
                seq: self.seq,
                message,
                redelivered: self.flags & Ready::REDELIVERED != 0,
                expires_at: self.expires_at.get(),
                persisted,
            }),
            None => Err(self),
        }
    }

    fn is_loaded(&self) -> bool {
        self.message.is_some()
    }
}

/// An optional deadline in 8 bytes (`Option<Instant>` takes 16): nanoseconds
/// since a process-wide epoch, `u64::MAX` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline(u64);

impl Deadline {
    const NONE: Deadline = Deadline(u64::MAX);

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    fn new(at: Option<Instant>) -> Deadline {
        match at {
            // An instant before the epoch is in the past: 0 keeps it due.
            Some(t) => Deadline(
                u64::try_from(t.saturating_duration_since(Deadline::epoch()).as_nanos())
                    .unwrap_or(u64::MAX - 1)
                    .min(u64::MAX - 1),
            ),
            None => Deadline::NONE,
        }
    }

    fn get(self) -> Option<Instant> {
        (self != Deadline::NONE).then(|| Deadline::epoch() + Duration::from_nanos(self.0))
    }

    fn is_due(self, now: Instant) -> bool {
        self != Deadline::NONE && self.0 <= Deadline::new(Some(now)).0
    }
}

/// A consumer as the queue sees it.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub tag: Arc<str>,
    pub channel: u16,
    pub conn: Arc<ConnHandle>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch (`basic.qos global=false`).
    pub credit: Arc<Credit>,
    /// Shared per-channel prefetch (`basic.qos global=true`).
    pub channel_credit: Arc<Credit>,
    /// `x-priority`: higher-priority consumers are served first while they have room.
    pub priority: i32,
}

impl Consumer {
    fn is(&self, conn: ConnectionId, channel: u16, tag: &str) -> bool {
        self.conn.id == conn && self.channel == channel && &*self.tag == tag
    }

    /// Reserve room for one more delivery, or say why not.
    fn try_reserve(&self) -> bool {
        if !self.conn.has_room() {
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
}

/// How far past the head a delivery mark reaches (so dispatch waits for the
/// disk once per this many persisted messages). After a crash, up to this many
/// messages that were never delivered may come back marked `redelivered`,
/// which AMQP allows ("may have been delivered").
const MARK_AHEAD: u64 = 1024;

/// Flow control: a queue whose consumers fall this far behind pauses the
/// connections publishing to it (they stop reading their sockets, so TCP slows
/// the publishers) until the backlog is back under [`FLOW_LOW`]. Queues without
/// consumers never pause publishers (a backlog is the point of them).
pub const FLOW_HIGH: usize = 100_000;
pub const FLOW_LOW: usize = FLOW_HIGH / 2;

/// Messages that died while the queue lock was held, dead-lettered after it is released.
type Dead = Vec<(Ready, DeathReason)>;

#[derive(Debug)]
struct QueueState {
    ready: VecDeque<Ready>,
    /// Body bytes of the ready messages (for `x-max-length-bytes`).
    ready_bytes: u64,
    /// Body bytes of the ready messages held in memory.
    loaded_bytes: u64,
    /// Ready messages whose body is on disk (or being read).
    unloaded: usize,
    /// A page-in read is under way.
    loading: bool,
    next_seq: u64,
    consumers: VecDeque<Consumer>,
    /// Whether consumers have different priorities (otherwise plain round-robin).
    mixed_priorities: bool,
    had_consumer: bool,
    deleted: bool,
    /// Last consume, get or redeclare (for `x-expires`).
    last_used: Instant,
    /// Persisted messages with a seq below this are durably marked "may have
    /// been delivered" in the store, so they may be handed to consumers.
    mark_durable: u64,
    /// A mark is on its way to the disk.
    mark_pending: bool,
    /// Highest seq of a persisted message actually handed out (for the exact
    /// mark written at a clean stop).
    delivered_max: Option<u64>,
    /// Whether the timer task runs.
    timer_started: bool,
    /// `x-max-priority`: the ready list is ordered by priority, then arrival.
    max_priority: Option<u8>,
    /// Publishing connections paused until this queue's backlog shrinks (flow control).
    flow_waiters: Vec<Arc<ConnHandle>>,
    /// The address of the last message read back from the store (shared with
    /// the next ones when it is the same).
    last_address: Option<Arc<Address>>,
}

impl QueueState {
    fn new(max_priority: Option<u8>) -> QueueState {
        QueueState {
            ready: VecDeque::new(),
            ready_bytes: 0,
            loaded_bytes: 0,
            unloaded: 0,
            loading: false,
            next_seq: 0,
            consumers: VecDeque::new(),
            mixed_priorities: false,
            had_consumer: false,
            deleted: false,
            last_used: Instant::now(),
            mark_durable: 0,
            mark_pending: false,
            delivered_max: None,
            timer_started: false,
            max_priority,
            flow_waiters: Vec::new(),
            last_address: None,
        }
    }

    /// A message's priority in this queue (capped at the maximum, as in RabbitMQ).
    fn priority_of(&self, message: &Message) -> u8 {
        match self.max_priority {
            Some(max) => message.content.priority().unwrap_or(0).min(max),
            None => 0,
        }
    }

    fn update_priorities(&mut self) {
        let first = self.consumers.front().map(|c| c.priority);
        self.mixed_priorities = self.consumers.iter().any(|c| Some(c.priority) != first);
    }

    fn count_in(&mut self, r: &Ready) {
        self.ready_bytes += r.size as u64;
        if r.is_loaded() {
            self.loaded_bytes += r.size as u64;
        } else {
            self.unloaded += 1;
        }
    }

    fn count_out(&mut self, r: &Ready) {
        self.ready_bytes -= r.size as u64;
        if r.is_loaded() {
            self.loaded_bytes -= r.size as u64;
        } else {
            self.unloaded -= 1;
        }
    }

    fn push_back(&mut self, r: Ready) {
        if self.max_priority.is_some() {
            return self.insert_in_order(r);
        }
        self.count_in(&r);
        self.ready.push_back(r);
    }

    fn pop_front(&mut self) -> Option<Ready> {
        let r = self.ready.pop_front()?;
        self.count_out(&r);
        Some(r)
    }

    fn remove(&mut self, i: usize) -> Option<Ready> {
        let r = self.ready.remove(i)?;
        self.count_out(&r);
        Some(r)
    }

    /// Where a message belongs: higher priority first, then by arrival.
    fn position_of(&self, priority: u8, seq: u64) -> Result<usize, usize> {
        let key = (std::cmp::Reverse(priority), seq);
        self.ready
            .binary_search_by(|r| (std::cmp::Reverse(r.priority), r.seq).cmp(&key))
    }

    fn insert_in_order(&mut self, r: Ready) {
        self.count_in(&r);
        let at = match self.position_of(r.priority, r.seq) {
            Ok(i) | Err(i) => i,
        };
        self.ready.insert(at, r);
    }

    /// Drop expired messages from the head (RabbitMQ expires only at the head).
    fn expire_head(&mut self, now: Instant, dead: &mut Dead) {
        while self.ready.front().is_some_and(|m| m.expires_at.is_due(now)) {
            if let Some(m) = self.pop_front() {
                dead.push((m, DeathReason::Expired));
            }
        }
    }

    /// The next consumer to deliver to, with its credit already reserved.
    /// `single_active`: only the longest-registered consumer receives
    /// (`x-single-active-consumer`); the others wait their turn.
    fn choose_consumer(&mut self, single_active: bool) -> Option<Consumer> {
        if single_active {
            return if self.consumers.front().is_some_and(|c| c.try_reserve()) {
                self.consumers.pop_front()
            } else {
                None
            };
        }
        if !self.mixed_priorities {
            // Round-robin: the consumer served last went to the back.
            for _ in 0..self.consumers.len() {
                if self.consumers.front().is_some_and(|c| c.try_reserve()) {
                    return self.consumers.pop_front();
                }
                self.consumers.rotate_left(1);
            }
            return None;
        }
        // Highest priority first; round-robin among equals (deque order).
        let mut levels: Vec<i32> = self.consumers.iter().map(|c| c.priority).collect();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        for p in levels {
            for i in 0..self.consumers.len() {
                if self.consumers[i].priority == p && self.consumers[i].try_reserve() {
                    return self.consumers.remove(i);
                }
            }
        }
        None
    }
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
    vhost_ref: Weak<VHost>,
    /// Wakes the timer task when a nearer deadline appears.
    timer: Notify,
    /// The store and this queue's id in it (durable queues of a broker with a store).
    store: OnceLock<(Arc<Store>, u64)>,
    /// The id this queue had in the store, while the broker is being recovered.
    recovered_id: OnceLock<u64>,
    state: Mutex<QueueState>,
}

/// What removing a consumer left behind.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerRemoved {
    NotFound,
    Removed,
    /// The last consumer of an auto-delete queue left: delete the queue.
    RemovedLastOfAutoDelete,
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
        vhost_ref: Weak<VHost>,
    ) -> Queue {
        let max_priority = args.max_priority.filter(|p| *p > 0);
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
            store: OnceLock::new(),
            recovered_id: OnceLock::new(),
            state: Mutex::new(QueueState::new(max_priority)),
        }
    }

    /// Make this queue durable in `store` under `id`.
    pub fn attach_store(&self, store: Arc<Store>, id: u64) {
        let _ = self.store.set((store, id));
    }

    pub(crate) fn set_recovered_id(&self, id: u64) {
        let _ = self.recovered_id.set(id);
    }

    pub(crate) fn recovered_id(&self) -> Option<u64> {
        self.recovered_id.get().copied()
    }

    /// The queue's id in the store, if it is stored.
    pub fn store_id(&self) -> Option<u64> {
        self.store.get().map(|(_, id)| *id)
    }

    /// Whether publishing `message` here means writing it to disk first.
    pub fn persists(&self, message: &Message) -> bool {
        self.store.get().is_some() && message.content.is_persistent()
    }

    /// Forget messages that left the queue for good (acked, dropped, dead-lettered).
    fn settle(&self, messages: impl IntoIterator<Item = (u64, bool)>) {
        if let Some((store, id)) = self.store.get() {
            for (seq, persisted) in messages {
                if persisted {
                    store.submit(Op::DelMessage { queue: *id, seq });
                }
            }
        }
    }

    /// Whether the head may go to a consumer now. A persisted message is
    /// handed out only once the store durably says it may have been delivered,
    /// so that after a crash it comes back with `redelivered` set. The mark runs
    /// ahead of the head, so this waits for the disk once per [`MARK_AHEAD`]
    /// messages, not per message. Returns false while a mark is being written.
    fn delivery_marked(self: &Arc<Self>, st: &mut QueueState, seq: u64, persisted: bool) -> bool {
        if !persisted || seq < st.mark_durable {
            return true;
        }
        if !st.mark_pending {
            self.write_mark(st, seq, None);
        }
        false
    }

    /// Write a delivery mark covering `seq` and what follows; on the disk it
    /// lets dispatch resume (or wakes `done`).
    fn write_mark(
        self: &Arc<Self>,
        st: &mut QueueState,
        seq: u64,
        done: Option<std::sync::mpsc::Sender<()>>,
    ) {
        let Some((store, id)) = self.store.get() else {
            st.mark_durable = u64::MAX;
            return;
        };
        let upto = seq
            .max(st.next_seq.saturating_sub(1))
            .saturating_add(MARK_AHEAD);
        st.mark_pending = true;
        store.submit(Op::Delivered { queue: *id, upto });
        let queue = Arc::downgrade(self);
        store.barrier(move |_ok| {
            if let Some(q) = queue.upgrade() {
                let mut dead = Dead::new();
                {
                    let mut st = q.state.lock();
                    st.mark_durable = st.mark_durable.max(upto.saturating_add(1));
                    st.mark_pending = false;
                    q.dispatch(&mut st, &mut dead);
                }
                q.dispose(dead);
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        });
    }

    /// At a clean stop: replace the delivery mark written ahead with the exact
    /// one, so that only messages really handed out come back redelivered.
    /// (Messages still unacked then are requeued first, so they count too.)
    pub fn write_exact_mark(&self) {
        if let Some((store, id)) = self.store.get() {
            let st = self.state.lock();
            store.submit(Op::SetDelivered {
                queue: *id,
                upto: st.delivered_max,
            });
        }
    }

    /// basic.get of an unmarked persisted head: write the mark and wait for it.
    fn mark_now(self: &Arc<Self>, seq: u64) {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut st = self.state.lock();
            self.write_mark(&mut st, seq, Some(tx));
        }
        paging::block_on_store(|| rx.recv().ok());
    }

    /// Start the timer task if this queue has time-based work (TTL, expiry).
    pub fn start_timers(self: &Arc<Self>) {
        if self.args.message_ttl.is_some() || self.args.expires.is_some() {
            let mut st = self.state.lock();
            self.ensure_timer(&mut st);
        }
    }

    fn ensure_timer(self: &Arc<Self>, st: &mut QueueState) {
        if !st.timer_started && expiry::spawn(self) {
            st.timer_started = true;
        }
    }

    fn expiry_of(&self, message: &Message, now: Instant) -> Option<Instant> {
        let per_message = message
            .content
            .expiration()
            .and_then(|e| e.parse::<u64>().ok());
        let ttl = match (self.args.message_ttl, per_message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(now + Duration::from_millis(ttl))
    }

    /// Add a message at the tail and deliver what can be delivered.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        let mut dead = Dead::new();
        let outcome = {
            let mut st = self.state.lock();
            if st.deleted {
                return Enqueued::Gone;
            }
            let now = Instant::now();
            let expires_at = self.expiry_of(&message, now);
            if expires_at.is_some() {
                self.ensure_timer(&mut st);
                self.timer.notify_one();
            }
            let seq = st.next_seq;
            st.next_seq += 1;
            let persisted = self.persists(&message);
            if persisted {
                if let Some((store, id)) = self.store.get() {
                    store.submit(Op::PutMessage {
                        queue: *id,
                        seq,
                        message: message.clone(),
                    });
                }
            }
            let priority = st.priority_of(&message);
            let size = message.content.body().len() as u32;
            let message = if persisted && self.should_page(&st, size) {
                None
            } else {
                Some(message)
            };
            st.push_back(Ready::new(
                seq, message, size, expires_at, false, persisted, priority,
            ));
            self.dispatch(&mut st, &mut dead);
            self.enforce_limits(&mut st, seq, &mut dead)
        };
        self.dispose(dead);
        outcome
    }

    /// Apply `x-max-length` / `x-max-length-bytes` after adding message `seq`.
    fn enforce_limits(&self, st: &mut QueueState, seq: u64, dead: &mut Dead) -> Enqueued {
        let over = |st: &QueueState| {
            self.args
                .max_length
                .is_some_and(|m| st.ready.len() as u64 > m)
                || self
                    .args
                    .max_length_bytes
                    .is_some_and(|m| st.ready_bytes > m)
        };
        if !over(st) {
            return Enqueued::Accepted;
        }
        match self.args.overflow {
            Overflow::DropHead => {
                while over(st) {
                    match st.pop_front() {
                        Some(m) => dead.push((m, DeathReason::MaxLen)),
                        None => break,
                    }
                }
                Enqueued::Accepted
            }
            Overflow::RejectPublish | Overflow::RejectPublishDlx => {
                match st.ready.iter().rposition(|m| m.seq == seq) {
                    Some(i) => {
                        if let Some(m) = st.remove(i) {
                            if self.args.overflow == Overflow::RejectPublishDlx {
                                dead.push((m, DeathReason::MaxLen));
                            } else {
                                self.settle([(m.seq, m.persisted())]);
                            }
                        }
                        Enqueued::Rejected
                    }
                    None => Enqueued::Accepted,
                }
            }
        }
    }

    /// Put unacknowledged messages back in their original positions, marked redelivered.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        let mut dead = Dead::new();
        {
            let mut st = self.state.lock();
            if st.deleted {
                return;
            }
            for mut m in messages {
                m.redelivered = true;
                let p = st.priority_of(&m.message);
                st.insert_in_order(Ready::loaded(m, p));
            }
            self.timer.notify_one();
            self.dispatch(&mut st, &mut dead);
        }
        self.dispose(dead);
    }

    /// Put back a message that never reached its consumer (the channel went away
    /// while it was in flight), without marking it redelivered.
    pub fn return_undelivered(self: &Arc<Self>, m: QueuedMessage) {
        let mut dead = Dead::new();
        {
            let mut st = self.state.lock();
            if st.deleted {
                return;
            }
            let p = st.priority_of(&m.message);
            st.insert_in_order(Ready::loaded(m, p));
            self.dispatch(&mut st, &mut dead);
        }
        self.dispose(dead);
    }

    /// Messages acknowledged by a consumer.
    pub fn ack(&self, messages: &[QueuedMessage]) {
        self.settle(messages.iter().map(|m| (m.seq, m.persisted)));
    }

    /// Messages rejected or nacked without requeue: dead-letter them (or drop them).
    pub fn reject(self: &Arc<Self>, messages: Vec<QueuedMessage>) {
        let dead = messages
            .into_iter()
            .map(|m| {
                let p = m.message.content.priority().unwrap_or(0);
                (Ready::loaded(m, p), DeathReason::Rejected)
            })
            .collect();
        self.dispose(dead);
    }

    /// `basic.get`: the head message and how many remain. With `no_ack` the
    /// message leaves the queue for good.
    pub fn get(self: &Arc<Self>, no_ack: bool) -> Option<(QueuedMessage, u32)> {
        let mut dead = Dead::new();
        let got = loop {
            let mut st = self.state.lock();
            st.last_used = Instant::now();
            st.expire_head(Instant::now(), &mut dead);
            let head = st.ready.front()?;
            if !head.is_loaded() {
                // The head is on disk: read it now (rare: page-in normally runs ahead).
                let seq = head.seq;
                drop(st);
                self.load_now(seq);
                continue;
            }
            let (seq, persisted) = (head.seq, head.persisted());
            if persisted && seq >= st.mark_durable {
                drop(st);
                self.mark_now(seq);
                continue;
            }
            let Some(Ok(m)) = st.pop_front().map(Ready::into_queued) else {
                continue;
            };
            if m.persisted {
                st.delivered_max = Some(st.delivered_max.map_or(m.seq, |x| x.max(m.seq)));
            }
            if no_ack {
                self.settle([(m.seq, m.persisted)]);
            }
            self.maybe_page_in(&mut st);
            break Some((m, st.ready.len() as u32));
        };
        self.dispose(dead);
        got
    }

    /// The queue was declared again (it counts as used for `x-expires`).
    pub fn touch(&self) {
        self.state.lock().last_used = Instant::now();
        self.timer.notify_one();
    }

    /// Try again to deliver (credit was freed or a connection drained).
    pub fn kick(self: &Arc<Self>) {
        let mut dead = Dead::new();
        {
            let mut st = self.state.lock();
            self.dispatch(&mut st, &mut dead);
        }
        self.dispose(dead);
    }

    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), AmqpError> {
        let mut dead = Dead::new();
        {
            let mut st = self.state.lock();
            if st.deleted {
                return Err(AmqpError::not_found(format!(
                    "no queue '{}' in vhost '{}'",
                    self.name, self.vhost
                )));
            }
            let exclusive_in_use = st.consumers.iter().any(|c| c.exclusive);
            if exclusive_in_use || (consumer.exclusive && !st.consumers.is_empty()) {
                return Err(AmqpError::access_refused(format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.name, self.vhost
                )));
            }
            st.consumers.push_back(consumer);
            st.had_consumer = true;
            st.last_used = Instant::now();
            st.update_priorities();
            self.dispatch(&mut st, &mut dead);
        }
        self.dispose(dead);
        Ok(())
    }

    pub fn remove_consumer(&self, conn: ConnectionId, channel: u16, tag: &str) -> ConsumerRemoved {
        let mut st = self.state.lock();
        let before = st.consumers.len();
        st.consumers.retain(|c| !c.is(conn, channel, tag));
        st.update_priorities();
        if st.consumers.len() == before {
            return ConsumerRemoved::NotFound;
        }
        st.last_used = Instant::now();
        self.timer.notify_one();
        Queue::release_flow(&mut st);
        if self.auto_delete && st.consumers.is_empty() && st.had_consumer && !st.deleted {
            ConsumerRemoved::RemovedLastOfAutoDelete
        } else {
            ConsumerRemoved::Removed
        }
    }

    pub fn purge(&self) -> u32 {
        let mut st = self.state.lock();
        self.settle(st.ready.iter().map(|m| (m.seq, m.persisted())));
        let n = st.ready.len() as u32;
        st.ready.clear();
        st.ready_bytes = 0;
        st.loaded_bytes = 0;
        st.unloaded = 0;
        Queue::release_flow(&mut st);
        n
    }

    pub fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    /// Flow control: if this queue's consumers are far behind, register `conn`
    /// to be resumed later and return true (the connection should stop reading
    /// until one [`ConnEvent::FlowResume`] per true answer arrives).
    /// Never pauses a connection that consumes from this queue itself (it
    /// could not read the acks that let the backlog shrink).
    pub fn should_pause(&self, conn: &Arc<ConnHandle>) -> bool {
        let mut st = self.state.lock();
        if st.ready.len() < FLOW_HIGH
            || st.consumers.is_empty()
            || st.consumers.iter().any(|c| c.conn.id == conn.id)
        {
            return false;
        }
        if st.flow_waiters.iter().any(|w| w.id == conn.id) {
            return false; // already paused on this queue
        }
        st.flow_waiters.push(conn.clone());
        true
    }

    /// Resume paused publishers once the backlog is small again (or nobody consumes).
    fn release_flow(st: &mut QueueState) {
        if !st.flow_waiters.is_empty() && (st.ready.len() < FLOW_LOW || st.consumers.is_empty()) {
            for w in st.flow_waiters.drain(..) {
                w.notify(ConnEvent::FlowResume);
            }
        }
    }

    /// Ready messages and consumers (expired head messages are not counted).
    pub fn counts(self: &Arc<Self>) -> (u32, u32) {
        let mut dead = Dead::new();
        let counts = {
            let mut st = self.state.lock();
            st.expire_head(Instant::now(), &mut dead);
            (st.ready.len() as u32, st.consumers.len() as u32)
        };
        self.dispose(dead);
        counts
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Mark deleted; tell consumers; returns how many ready messages were dropped.
    pub fn mark_deleted(&self) -> u32 {
        let mut st = self.state.lock();
        st.deleted = true;
        let n = st.ready.len() as u32;
        st.ready.clear();
        st.ready_bytes = 0;
        st.loaded_bytes = 0;
        st.unloaded = 0;
        for w in st.flow_waiters.drain(..) {
            w.notify(ConnEvent::FlowResume);
        }
        for c in st.consumers.drain(..) {
            c.conn.notify(ConnEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
        self.timer.notify_one();
        n
    }

    /// Hand ready messages to consumers that have room, round-robin.
    fn dispatch(self: &Arc<Self>, st: &mut QueueState, dead: &mut Dead) {
        let now = Instant::now();
        let single_active = self.args.single_active_consumer;
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            st.expire_head(now, dead);
            let (seq, persisted) = match st.ready.front() {
                None => break,
                // The head's body is still on disk: wait for the page-in.
                Some(head) if !head.is_loaded() => break,
                Some(head) => (head.seq, head.persisted()),
            };
            if !self.delivery_marked(st, seq, persisted) {
                break;
            }
            let Some(consumer) = st.choose_consumer(single_active) else {
                break;
            };
            let message = match st.pop_front().map(Ready::into_queued) {
                Some(Ok(m)) => m,
                Some(Err(r)) => {
                    st.insert_in_order(r);
                    consumer.unreserve();
                    st.consumers.push_front(consumer);
                    break;
                }
                None => {
                    consumer.unreserve();
                    st.consumers.push_front(consumer);
                    break;
                }
            };
            let size = message.message.wire_size();
            let ev = ConnEvent::Deliver {
                channel: consumer.channel,
                consumer_tag: consumer.tag.clone(),
                no_ack: consumer.no_ack,
                queue: self.clone(),
                message,
            };
            match consumer.conn.deliver(ev, size) {
                Ok(()) => {
                    if persisted {
                        st.delivered_max = Some(st.delivered_max.map_or(seq, |m| m.max(seq)));
                        if consumer.no_ack {
                            // Delivered without ack: it has left the queue for good.
                            self.settle([(seq, true)]);
                        }
                    }
                    if single_active {
                        st.consumers.push_front(consumer);
                    } else {
                        st.consumers.push_back(consumer);
                    }
                }
                Err(ConnEvent::Deliver { message, .. }) => {
                    // The connection is gone; its cleanup will remove the consumer.
                    let p = st.priority_of(&message.message);
                    st.insert_in_order(Ready::loaded(message, p));
                    consumer.unreserve();
                    st.consumers.push_back(consumer);
                    break;
                }
                Err(_) => break,
            }
        }
        self.maybe_page_in(st);
        Queue::release_flow(st);
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use crate::connection::handle::ConnHandle;
    use bytes::Bytes;
    use tokio::sync::mpsc::UnboundedReceiver;
    use warren_codec::ContentHeader;

    pub fn message() -> Arc<Message> {
        let raw = Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        Arc::new(Message::new(
            crate::message::Address::new(String::new(), "q".into(), Vec::new()),
            ContentHeader::parse(raw).unwrap(),
            Bytes::from_static(b"x"),
        ))
    }

    pub fn queue() -> Arc<Queue> {
        queue_with(QueueArgs::default())
    }

    pub fn queue_with(args: QueueArgs) -> Arc<Queue> {
        Arc::new(Queue::new(
            "q".into(),
            "/".into(),
            false,
            false,
            None,
            FieldTable::default(),
            args,
            Weak::new(),
        ))
    }

    pub fn consumer(
        id: u64,
        tag: &str,
        prefetch: u32,
        priority: i32,
    ) -> (Consumer, UnboundedReceiver<ConnEvent>) {
        let (conn, rx) = ConnHandle::new(id);
        (
            Consumer {
                tag: tag.into(),
                channel: 1,
                conn,
                no_ack: false,
                exclusive: false,
                credit: Arc::new(Credit::new(prefetch)),
                channel_credit: Arc::new(Credit::new(0)),
                priority,
            },
            rx,
        )
    }

    pub fn count(rx: &mut UnboundedReceiver<ConnEvent>) -> usize {
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;

    #[test]
    fn round_robin_between_equal_consumers() {
        let q = queue();
        let (a, mut ra) = consumer(1, "a", 0, 0);
        let (b, mut rb) = consumer(2, "b", 0, 0);
        q.add_consumer(a).unwrap();
        q.add_consumer(b).unwrap();
        for _ in 0..10 {
            q.publish(message());
        }
        assert_eq!((count(&mut ra), count(&mut rb)), (5, 5));
    }

    #[test]
    fn higher_priority_consumer_first_until_full() {
        let q = queue();
        let (low, mut rl) = consumer(1, "low", 0, 0);
        let (high, mut rh) = consumer(2, "high", 3, 10);
        q.add_consumer(low).unwrap();
        q.add_consumer(high).unwrap();
        for _ in 0..10 {
            q.publish(message());
        }
        assert_eq!((count(&mut rh), count(&mut rl)), (3, 7));
    }

    #[test]
    fn requeued_messages_keep_their_position() {
        let q = queue();
        for _ in 0..3 {
            q.publish(message());
        }
        let (first, _) = q.get(false).unwrap();
        let (second, _) = q.get(false).unwrap();
        q.requeue([second, first]);
        let (m, left) = q.get(false).unwrap();
        assert_eq!((m.seq, m.redelivered, left), (0, true, 2));
    }
}

#[cfg(test)]
mod priority_tests {
    use super::*;
    use bytes::{BufMut, Bytes, BytesMut};
    use warren_codec::ContentHeader;

    fn message(priority: Option<u8>) -> Arc<Message> {
        let mut raw = BytesMut::new();
        raw.put_u16(60);
        raw.put_u16(0);
        raw.put_u64(1);
        match priority {
            Some(p) => {
                raw.put_u16(1 << 11);
                raw.put_u8(p);
            }
            None => raw.put_u16(0),
        }
        Arc::new(Message::new(
            crate::message::Address::new(String::new(), "q".into(), Vec::new()),
            ContentHeader::parse(raw.freeze()).unwrap(),
            Bytes::from_static(b"x"),
        ))
    }

    #[test]
    fn higher_priority_first_then_arrival_order() {
        let args = QueueArgs {
            max_priority: Some(5),
            ..Default::default()
        };
        let q = Arc::new(Queue::new(
            "p".into(),
            "/".into(),
            false,
            false,
            None,
            FieldTable::default(),
            args,
            Weak::new(),
        ));
        for p in [None, Some(3), Some(9), Some(3), Some(1)] {
            q.publish(message(p));
        }
        let order: Vec<u64> = std::iter::from_fn(|| q.get(true).map(|(m, _)| m.seq)).collect();
        // seq 2 has priority 9, capped to 5; then the two 3s in arrival order; then 1; then none (0).
        assert_eq!(order, vec![2, 1, 3, 4, 0]);
    }
}

#[cfg(test)]
mod single_active_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn only_the_first_consumer_receives_until_it_leaves() {
        let args = QueueArgs {
            single_active_consumer: true,
            ..Default::default()
        };
        let q = queue_with(args);
        let (a, mut ra) = consumer(1, "a", 0, 0);
        let (b, mut rb) = consumer(2, "b", 0, 0);
        q.add_consumer(a).unwrap();
        q.add_consumer(b).unwrap();
        for _ in 0..4 {
            q.publish(message());
        }
        assert_eq!((count(&mut ra), count(&mut rb)), (4, 0));
        q.remove_consumer(1, 1, "a");
        for _ in 0..3 {
            q.publish(message());
        }
        assert_eq!(count(&mut rb), 3);
    }
}

#[cfg(test)]
mod flow_tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn publishers_pause_while_consumers_lag_and_resume_when_drained() {
        let q = queue();
        let (publisher, mut publisher_inbox) = ConnHandle::new(99);
        assert!(!q.should_pause(&publisher), "no backlog yet");
        for _ in 0..FLOW_HIGH {
            q.publish(message());
        }
        // A backlog without consumers never pauses anyone.
        assert!(!q.should_pause(&publisher));
        let (slow, _slow_inbox) = consumer(1, "slow", 1, 0);
        q.add_consumer(slow).unwrap(); // takes one message (prefetch 1)
        q.publish(message());
        assert!(q.should_pause(&publisher), "consumers are far behind");
        assert!(
            !q.should_pause(&publisher),
            "one pause per waiting connection"
        );
        // A connection consuming from the queue itself is never paused.
        let (own, _own_inbox) = ConnHandle::new(1);
        assert!(!q.should_pause(&own));
        assert!(publisher_inbox.try_recv().is_err());
        q.purge();
        assert!(matches!(
            publisher_inbox.try_recv(),
            Ok(ConnEvent::FlowResume)
        ));
    }
}
