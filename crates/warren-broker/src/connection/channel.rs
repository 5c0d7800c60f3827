//! Channels: their state, opening and closing, and the method dispatch table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{
    access, basic, channel as ch, confirm, exchange, queue, tx, AMQPClass,
};
use bytes::{Bytes, BytesMut};
use warren_codec::method::Publish;
use warren_codec::{ContentHeader, Method};

use super::Connection;
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::queue::{ConsumerRemoved, Credit, Queue, QueuedMessage};

/// A message delivered on this channel and not yet acknowledged.
#[derive(Debug)]
pub(super) struct Unacked {
    pub queue: Arc<Queue>,
    pub message: QueuedMessage,
    /// The consumer's prefetch credit (None for basic.get).
    pub credit: Option<Arc<Credit>>,
    /// When it was sent, for the consumer timeout.
    pub delivered_at: Instant,
}

/// The channel's direct reply-to consumer.
#[derive(Debug)]
pub(super) struct ReplyConsumer {
    pub tag: Arc<str>,
    /// Random key in the reply address, so replies cannot be aimed at other channels.
    pub key: u64,
}

#[derive(Debug)]
pub(super) struct ChannelConsumer {
    pub queue: Arc<Queue>,
    pub credit: Arc<Credit>,
    pub no_ack: bool,
}

/// Where the channel is in receiving a published message.
#[derive(Debug, Default)]
pub(super) enum Content {
    #[default]
    Idle,
    /// basic.publish seen; the content header comes next.
    Header(Publish),
    /// Header seen; body frames until `header.body_size` bytes arrived.
    Body {
        publish: Publish,
        header: ContentHeader,
        body: BodyParts,
    },
}

/// A body kept zero-copy when it arrives in one frame.
#[derive(Debug, Default)]
pub(super) enum BodyParts {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl BodyParts {
    pub fn len(&self) -> usize {
        match self {
            BodyParts::Empty => 0,
            BodyParts::One(b) => b.len(),
            BodyParts::Many(b) => b.len(),
        }
    }
    pub fn push(&mut self, part: Bytes) {
        *self = match std::mem::take(self) {
            BodyParts::Empty => BodyParts::One(part),
            BodyParts::One(first) => {
                let mut m = BytesMut::with_capacity(first.len() + part.len());
                m.extend_from_slice(&first);
                m.extend_from_slice(&part);
                BodyParts::Many(m)
            }
            BodyParts::Many(mut m) => {
                m.extend_from_slice(&part);
                BodyParts::Many(m)
            }
        }
    }
    pub fn freeze(self) -> Bytes {
        match self {
            BodyParts::Empty => Bytes::new(),
            BodyParts::One(b) => b,
            BodyParts::Many(m) => m.freeze(),
        }
    }
}

pub(super) use super::confirm::Confirms;

/// Work held back until tx.commit.
#[derive(Debug, Default)]
pub(super) struct Tx {
    /// A committed persistent message went to a durable queue: commit-ok waits for the disk.
    pub needs_sync: bool,
    pub publishes: Vec<(Arc<Message>, bool)>,
    /// Acks/nacks/rejects and the deliveries they took from the unacked set.
    pub acks: Vec<(Method, Vec<(u64, Unacked)>)>,
}

#[derive(Debug)]
pub(super) struct Channel {
    pub id: u16,
    /// Distinguishes this channel from a later one with the same number
    /// (for answers from the store that arrive after a close).
    pub epoch: u64,
    /// We sent channel.close and wait for close-ok.
    pub closing: bool,
    pub content: Content,
    /// The last queue declared on this channel (for empty queue names).
    pub last_queue: Option<String>,
    pub next_delivery_tag: u64,
    pub unacked: BTreeMap<u64, Unacked>,
    pub consumers: HashMap<Arc<str>, ChannelConsumer>,
    /// basic.qos global=false: prefetch for consumers created from now on.
    pub consumer_prefetch: u32,
    /// basic.qos global=true: one limit shared by the channel.
    pub channel_credit: Arc<Credit>,
    pub confirms: Option<Confirms>,
    pub tx: Option<Tx>,
    pub reply_consumer: Option<ReplyConsumer>,
}

impl Channel {
    pub fn new(id: u16, epoch: u64) -> Channel {
        Channel {
            id,
            epoch,
            closing: false,
            content: Content::Idle,
            last_queue: None,
            next_delivery_tag: 1,
            unacked: BTreeMap::new(),
            consumers: HashMap::new(),
            consumer_prefetch: 0,
            channel_credit: Arc::new(Credit::new(0)),
            confirms: None,
            tx: None,
            reply_consumer: None,
        }
    }
}

impl Connection {
    pub(super) fn channel_mut(&mut self, id: u16) -> AmqpResult<&mut Channel> {
        self.channels
            .get_mut(&id)
            .ok_or_else(|| AmqpError::channel_error("expected 'channel.open'"))
    }

    pub(super) fn handle_channel_method(
        &mut self,
        id: u16,
        method: Method,
        now: Instant,
    ) -> AmqpResult<()> {
        // Frames for a channel we are closing are dropped until its close-ok.
        if let Some(c) = self.channels.get(&id) {
            if c.closing {
                match method {
                    Method::Other(AMQPClass::Channel(ch::AMQPMethod::CloseOk(_))) => {
                        self.channels.remove(&id);
                    }
                    Method::Other(AMQPClass::Channel(ch::AMQPMethod::Close(_))) => {
                        self.send_method(
                            id,
                            AMQPClass::Channel(ch::AMQPMethod::CloseOk(ch::CloseOk {})),
                        );
                        self.channels.remove(&id);
                    }
                    _ => {}
                }
                return Ok(());
            }
            // A method where content was due: RabbitMQ blames basic.publish.
            match c.content {
                Content::Idle => {}
                Content::Header(_) => return Err(expected_header().during((60, 40))),
                Content::Body { .. } => return Err(expected_body().during((60, 40))),
            }
        }
        let method = match method {
            Method::Other(AMQPClass::Channel(ch::AMQPMethod::Open(_))) => {
                return self.open_channel(id)
            }
            other => other,
        };
        if !self.channels.contains_key(&id) {
            return Err(AmqpError::channel_error("expected 'channel.open'"));
        }
        match method {
            Method::Publish(p) => self.on_publish(id, p),
            Method::Ack {
                delivery_tag,
                multiple,
            } => self.on_ack(
                id,
                Method::Ack {
                    delivery_tag,
                    multiple,
                },
            ),
            m @ (Method::Nack { .. } | Method::Reject { .. }) => self.on_ack(id, m),
            Method::Qos {
                prefetch_size,
                prefetch_count,
                global,
            } => self.on_qos(id, prefetch_size, prefetch_count, global),
            Method::Other(AMQPClass::Channel(m)) => self.on_channel_class(id, m),
            Method::Other(AMQPClass::Access(access::AMQPMethod::Request(_))) => {
                self.send_method(
                    id,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            Method::Other(AMQPClass::Exchange(m)) => self.on_exchange_method(id, m),
            Method::Other(AMQPClass::Queue(m)) => self.on_queue_method(id, m),
            Method::Other(AMQPClass::Basic(m)) => self.on_basic_method(id, m, now),
            Method::Other(AMQPClass::Confirm(confirm::AMQPMethod::Select(s))) => {
                self.on_confirm_select(id, s.nowait)
            }
            Method::Other(AMQPClass::Tx(m)) => self.on_tx_method(id, m),
            Method::Other(AMQPClass::Connection(_)) => {
                let _ = now;
                Err(AmqpError::command_invalid("unimplemented method"))
            }
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    fn open_channel(&mut self, id: u16) -> AmqpResult<()> {
        if self.channels.contains_key(&id) {
            return Err(AmqpError::channel_error("second 'channel.open' seen"));
        }
        let open = self.channels.len();
        if self.channel_max != 0 && open >= self.channel_max as usize {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            ))
            .no_method());
        }
        self.next_epoch += 1;
        self.channels.insert(id, Channel::new(id, self.next_epoch));
        self.send_method(
            id,
            AMQPClass::Channel(ch::AMQPMethod::OpenOk(ch::OpenOk {})),
        );
        Ok(())
    }

    fn on_channel_class(&mut self, id: u16, m: ch::AMQPMethod) -> AmqpResult<()> {
        match m {
            ch::AMQPMethod::Close(_) => {
                self.flush_confirms();
                if let Some(mut c) = self.channels.remove(&id) {
                    self.release_channel(&mut c);
                }
                self.send_method(
                    id,
                    AMQPClass::Channel(ch::AMQPMethod::CloseOk(ch::CloseOk {})),
                );
                Ok(())
            }
            ch::AMQPMethod::CloseOk(_) => Ok(()),
            ch::AMQPMethod::Flow(f) => {
                if !f.active {
                    return Err(AmqpError::not_implemented("active=false"));
                }
                self.send_method(
                    id,
                    AMQPClass::Channel(ch::AMQPMethod::FlowOk(ch::FlowOk { active: true })),
                );
                Ok(())
            }
            ch::AMQPMethod::FlowOk(_) => Ok(()),
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    /// Close a channel on a channel-level error.
    pub(super) fn channel_error(&mut self, id: u16, err: AmqpError) {
        tracing::debug!(conn = self.id(), channel = id, code = err.code.0, text = %err.text, "closing channel on error");
        self.flush_confirms();
        let Some(mut c) = self.channels.remove(&id) else {
            return;
        };
        self.release_channel(&mut c);
        self.send_channel_close(id, &err);
        // Keep a closing shell so that frames in flight are dropped until close-ok.
        let mut shell = Channel::new(id, 0);
        shell.closing = true;
        self.channels.insert(id, shell);
    }

    /// Give back what a closing channel held: consumers leave their queues and
    /// unacknowledged messages are requeued.
    pub(super) fn release_channel(&mut self, c: &mut Channel) {
        let conn_id = self.id();
        if c.reply_consumer.take().is_some() {
            self.broker.set_reply_consumer(conn_id, c.id, None);
        }
        for (tag, consumer) in c.consumers.drain() {
            self.consumer_removed(
                &consumer.queue,
                consumer.queue.remove_consumer(conn_id, c.id, &tag),
            );
        }
        let mut unacked = std::mem::take(&mut c.unacked);
        // Acks held by an uncommitted transaction never happened: requeue those too.
        if let Some(tx) = c.tx.take() {
            for (_, taken) in tx.acks {
                unacked.extend(taken);
            }
        }
        requeue_all(unacked.into_values());
    }

    /// Auto-delete a queue whose last consumer just left.
    pub(super) fn consumer_removed(&mut self, queue: &Arc<Queue>, outcome: ConsumerRemoved) {
        if outcome == ConsumerRemoved::RemovedLastOfAutoDelete {
            if let Some(v) = self.vhost.clone() {
                v.drop_queue(queue);
            }
        }
    }

    /// Dispatch to the per-class handlers of the other files.
    fn on_basic_method(&mut self, id: u16, m: basic::AMQPMethod, now: Instant) -> AmqpResult<()> {
        match m {
            basic::AMQPMethod::Consume(c) => self.on_consume(id, c),
            basic::AMQPMethod::Cancel(c) => self.on_cancel(id, c),
            basic::AMQPMethod::Get(g) => self.on_get(id, g, now),
            basic::AMQPMethod::Recover(r) => self.on_recover(id, r.requeue, true),
            basic::AMQPMethod::RecoverAsync(r) => self.on_recover(id, r.requeue, false),
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    fn on_exchange_method(&mut self, id: u16, m: exchange::AMQPMethod) -> AmqpResult<()> {
        match m {
            exchange::AMQPMethod::Declare(d) => self.on_exchange_declare(id, d),
            exchange::AMQPMethod::Delete(d) => self.on_exchange_delete(id, d),
            exchange::AMQPMethod::Bind(b) => self.on_exchange_bind(id, b),
            exchange::AMQPMethod::Unbind(u) => self.on_exchange_unbind(id, u),
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    fn on_queue_method(&mut self, id: u16, m: queue::AMQPMethod) -> AmqpResult<()> {
        match m {
            queue::AMQPMethod::Declare(d) => self.on_queue_declare(id, d),
            queue::AMQPMethod::Bind(b) => self.on_queue_bind(id, b),
            queue::AMQPMethod::Unbind(u) => self.on_queue_unbind(id, u),
            queue::AMQPMethod::Purge(p) => self.on_queue_purge(id, p),
            queue::AMQPMethod::Delete(d) => self.on_queue_delete(id, d),
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }

    fn on_tx_method(&mut self, id: u16, m: tx::AMQPMethod) -> AmqpResult<()> {
        match m {
            tx::AMQPMethod::Select(_) => self.on_tx_select(id),
            tx::AMQPMethod::Commit(_) => self.on_tx_commit(id),
            tx::AMQPMethod::Rollback(_) => self.on_tx_rollback(id),
            _ => Err(AmqpError::command_invalid("unimplemented method")),
        }
    }
}

/// Requeue unacknowledged messages, one call per queue, keeping their order.
pub(super) fn requeue_all(items: impl IntoIterator<Item = Unacked>) {
    let mut by_queue: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
    for u in items {
        if let Some(c) = &u.credit {
            c.release(1);
        }
        match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
            Some((_, v)) => v.push(u.message),
            None => by_queue.push((u.queue, vec![u.message])),
        }
    }
    for (q, msgs) in by_queue {
        q.requeue(msgs);
    }
}

/// RabbitMQ's texts for content frames out of sequence (505 UNEXPECTED_FRAME).
pub(super) fn expected_method() -> AmqpError {
    AmqpError::unexpected_frame("expected method frame, got non method frame instead").no_method()
}

pub(super) fn expected_header() -> AmqpError {
    AmqpError::unexpected_frame(
        "expected content header for class 60, got non content header frame instead",
    )
}

pub(super) fn expected_body() -> AmqpError {
    AmqpError::unexpected_frame("expected content body, got non content body frame instead")
}
