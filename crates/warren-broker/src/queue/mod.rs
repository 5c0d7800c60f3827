//! Queues: ready messages in order, consumers in round-robin, and dispatch.
//!
//! Each queue has its own lock, held only for short, non-blocking work, so
//! unrelated queues never contend. Dispatch runs in whichever task made progress
//! possible (a publisher adding a message, a consumer freeing credit) and hands
//! messages to consumers' connections through their inboxes.
//!
//! The ready list is the seam where a store will sit: it is only touched through
//! the methods below.

pub mod args;
mod credit;

use std::collections::VecDeque;
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use parking_lot::Mutex;

use crate::connection::handle::{ConnEvent, ConnHandle, ConnectionId};
use crate::error::AmqpError;
use crate::message::Message;

pub use args::QueueArgs;
pub use credit::Credit;

/// A message in a queue, with its position (for requeue in the original place).
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub seq: u64,
    pub message: Arc<Message>,
    pub redelivered: bool,
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

#[derive(Debug, Default)]
struct QueueState {
    ready: VecDeque<QueuedMessage>,
    next_seq: u64,
    consumers: VecDeque<Consumer>,
    /// Whether consumers have different priorities (otherwise plain round-robin).
    mixed_priorities: bool,
    had_consumer: bool,
    deleted: bool,
}

impl QueueState {
    fn update_priorities(&mut self) {
        let first = self.consumers.front().map(|c| c.priority);
        self.mixed_priorities = self.consumers.iter().any(|c| Some(c.priority) != first);
    }

    /// The next consumer to deliver to, with its credit already reserved.
    fn choose_consumer(&mut self) -> Option<Consumer> {
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

impl Queue {
    pub fn new(
        name: String,
        vhost: String,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: Option<ConnectionId>,
        arguments: FieldTable,
        args: QueueArgs,
    ) -> Queue {
        Queue {
            name,
            vhost,
            durable,
            auto_delete,
            exclusive_owner,
            arguments,
            args,
            state: Mutex::new(QueueState::default()),
        }
    }

    /// Add a message at the tail and deliver what can be delivered.
    /// Returns false if the queue was deleted meanwhile.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> bool {
        let mut st = self.state.lock();
        if st.deleted {
            return false;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.ready.push_back(QueuedMessage {
            seq,
            message,
            redelivered: false,
        });
        self.dispatch(&mut st);
        true
    }

    /// Put unacknowledged messages back in their original positions, marked redelivered.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        for mut m in messages {
            m.redelivered = true;
            let at = match st.ready.binary_search_by_key(&m.seq, |r| r.seq) {
                Ok(i) | Err(i) => i,
            };
            st.ready.insert(at, m);
        }
        self.dispatch(&mut st);
    }

    /// Put back a message that never reached its consumer (the channel went away
    /// while it was in flight), without marking it redelivered.
    pub fn return_undelivered(self: &Arc<Self>, m: QueuedMessage) {
        let mut st = self.state.lock();
        if st.deleted {
            return;
        }
        let at = match st.ready.binary_search_by_key(&m.seq, |r| r.seq) {
            Ok(i) | Err(i) => i,
        };
        st.ready.insert(at, m);
        self.dispatch(&mut st);
    }

    /// `basic.get`: the head message and how many remain.
    pub fn get(&self) -> Option<(QueuedMessage, u32)> {
        let mut st = self.state.lock();
        let m = st.ready.pop_front()?;
        Some((m, st.ready.len() as u32))
    }

    /// Try again to deliver (credit was freed or a connection drained).
    pub fn kick(self: &Arc<Self>) {
        let mut st = self.state.lock();
        self.dispatch(&mut st);
    }

    pub fn add_consumer(self: &Arc<Self>, consumer: Consumer) -> Result<(), AmqpError> {
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
        st.update_priorities();
        self.dispatch(&mut st);
        Ok(())
    }

    pub fn remove_consumer(&self, conn: ConnectionId, channel: u16, tag: &str) -> ConsumerRemoved {
        let mut st = self.state.lock();
        let before = st.consumers.len();
        st.consumers.retain(|c| !c.is(conn, channel, tag));
        st.update_priorities();
        if st.consumers.len() == before {
            ConsumerRemoved::NotFound
        } else if self.auto_delete && st.consumers.is_empty() && st.had_consumer && !st.deleted {
            ConsumerRemoved::RemovedLastOfAutoDelete
        } else {
            ConsumerRemoved::Removed
        }
    }

    pub fn purge(&self) -> u32 {
        let mut st = self.state.lock();
        let n = st.ready.len() as u32;
        st.ready.clear();
        n
    }

    pub fn message_count(&self) -> u32 {
        self.state.lock().ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.state.lock().consumers.len() as u32
    }

    pub fn counts(&self) -> (u32, u32) {
        let st = self.state.lock();
        (st.ready.len() as u32, st.consumers.len() as u32)
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
        for c in st.consumers.drain(..) {
            c.conn.notify(ConnEvent::ConsumerCancelled {
                channel: c.channel,
                consumer_tag: c.tag.clone(),
            });
        }
        n
    }

    /// Hand ready messages to consumers that have room, round-robin.
    fn dispatch(self: &Arc<Self>, st: &mut QueueState) {
        while !st.ready.is_empty() && !st.consumers.is_empty() {
            let Some(consumer) = st.choose_consumer() else {
                break;
            };
            let Some(message) = st.ready.pop_front() else {
                consumer.unreserve();
                st.consumers.push_front(consumer);
                break;
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
                Ok(()) => st.consumers.push_back(consumer),
                Err(ConnEvent::Deliver { message, .. }) => {
                    // The connection is gone; its cleanup will remove the consumer.
                    st.ready.push_front(message);
                    consumer.unreserve();
                    st.consumers.push_back(consumer);
                    // Avoid spinning on a dead consumer: stop this round.
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::handle::ConnHandle;
    use bytes::Bytes;
    use tokio::sync::mpsc::UnboundedReceiver;
    use warren_codec::ContentHeader;

    fn message() -> Arc<Message> {
        let raw = Bytes::from_static(&[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        Arc::new(Message {
            exchange: String::new(),
            routing_key: "q".into(),
            header: ContentHeader::parse(raw).unwrap(),
            body: Bytes::from_static(b"x"),
        })
    }

    fn queue() -> Arc<Queue> {
        Arc::new(Queue::new(
            "q".into(),
            "/".into(),
            false,
            false,
            None,
            FieldTable::default(),
            QueueArgs::default(),
        ))
    }

    fn consumer(
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

    fn count(rx: &mut UnboundedReceiver<ConnEvent>) -> usize {
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }

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
        let (first, _) = q.get().unwrap();
        let (second, _) = q.get().unwrap();
        q.requeue([second, first]);
        let (m, left) = q.get().unwrap();
        assert_eq!((m.seq, m.redelivered, left), (0, true, 2));
    }
}
