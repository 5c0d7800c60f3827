//! basic.qos, consume, cancel, get, ack/nack/reject and recover.

use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;
use warren_codec::hot;
use warren_codec::reply::ReplyCode;
use warren_codec::Method;

use super::channel::{requeue_all, ChannelConsumer, Unacked};
use super::Connection;
use crate::access::{Perm, Resource};
use crate::error::{AmqpError, AmqpResult};
use crate::names;
use crate::queue::args::QueueType;
use crate::queue::{Consumer, Credit, Got, Queue, QueuedMessage, StreamStart};

impl Connection {
    pub(super) fn on_qos(
        &mut self,
        id: u16,
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    ) -> AmqpResult<()> {
        if prefetch_size != 0 {
            return Err(AmqpError::not_implemented(format!(
                "prefetch_size!=0 ({prefetch_size})"
            )));
        }
        let c = self.channel_mut(id)?;
        if global {
            c.channel_credit.set_limit(prefetch_count as u32);
        } else {
            // As in RabbitMQ 3.10: a per-consumer limit lifts the channel-wide one.
            c.consumer_prefetch = prefetch_count as u32;
            c.channel_credit.set_limit(0);
        }
        let queues: Vec<Arc<Queue>> = c.consumers.values().map(|cc| cc.queue.clone()).collect();
        self.send_method(
            id,
            AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
        );
        for q in queues {
            q.kick();
        }
        Ok(())
    }

    pub(super) fn on_consume(&mut self, id: u16, c: basic::Consume) -> AmqpResult<()> {
        if c.queue.as_str() == super::reply_to::REPLY_TO {
            return self.on_reply_consume(id, c);
        }
        let vhost = self.vhost()?;
        let name = self.resolve_queue_name(id, c.queue.as_str())?;
        self.permit(Perm::Read, Resource::Queue, &name)?;
        let queue = vhost.usable_queue(&name, self.id())?;
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            names::consumer_tag().into()
        } else {
            c.consumer_tag.as_str().into()
        };
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => crate::queue::args::integer(v)
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| {
                    AmqpError::precondition_failed(format!(
                        "invalid arg 'x-priority' for queue '{}' in vhost '{}': \"expected integer, got {}\"",
                        name,
                        queue.vhost,
                        crate::queue::args::type_name(v)
                    ))
                })?,
        };
        let handle = self.handle.clone();
        let stream_start = match queue.stream() {
            Some(_) => self.stream_consume_checks(id, &queue, &c)?,
            None => None,
        };
        let chan = self.channel_mut(id)?;
        if chan.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        if queue.args.queue_type == QueueType::Quorum && chan.channel_credit.limit() > 0 {
            return Err(AmqpError::not_implemented(format!(
                "queue '{}' in vhost '{}' does not support global qos",
                queue.name, queue.vhost
            )));
        }
        let credit = Arc::new(Credit::new(chan.consumer_prefetch));
        let consumer = Consumer {
            tag: tag.clone(),
            channel: id,
            conn: handle,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            credit: credit.clone(),
            channel_credit: chan.channel_credit.clone(),
            priority,
            stream_start,
        };
        // Deliveries reach this connection through its inbox, which is drained only
        // after this frame's output, so consume-ok still precedes them.
        queue.add_consumer(consumer)?;
        if !c.nowait {
            self.send_method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::try_new(tag.to_string()).unwrap_or_default(),
                })),
            );
        }
        self.channel_mut(id)?.consumers.insert(
            tag,
            ChannelConsumer {
                queue,
                credit,
                no_ack: c.no_ack,
            },
        );
        Ok(())
    }

    pub(super) fn on_cancel(&mut self, id: u16, c: basic::Cancel) -> AmqpResult<()> {
        let conn_id = self.id();
        let tag = c.consumer_tag.as_str();
        let broker = self.broker.clone();
        let chan = self.channel_mut(id)?;
        if chan
            .reply_consumer
            .as_ref()
            .is_some_and(|rc| &*rc.tag == tag)
        {
            chan.reply_consumer = None;
            broker.set_reply_consumer(conn_id, id, None);
        }
        if let Some(cc) = chan.consumers.remove(tag) {
            let outcome = cc.queue.remove_consumer(conn_id, id, tag);
            self.consumer_removed(&cc.queue, outcome);
        }
        if !c.nowait {
            self.send_method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                    consumer_tag: c.consumer_tag,
                })),
            );
        }
        Ok(())
    }

    /// The queue behind a waiting `basic.get` has its head in memory: run the
    /// get again (from the top: the queue or the permissions may have changed).
    pub(super) fn retry_get(&mut self, channel: u16, now: Instant) {
        match self.waiting_get.take() {
            Some((id, get)) if id == channel => {
                let ids = get.ids();
                if let Err(e) = self.handle_channel_method(id, get, now) {
                    self.fail(id, e.during(ids), now);
                }
            }
            other => self.waiting_get = other,
        }
    }

    pub(super) fn on_get(&mut self, id: u16, g: basic::Get, now: Instant) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let name = self.resolve_queue_name(id, g.queue.as_str())?;
        self.permit(Perm::Read, Resource::Queue, &name)?;
        let queue = vhost.usable_queue(&name, self.id())?;
        if queue.stream().is_some() {
            return Err(not_for_streams("basic.get", &queue));
        }
        let frame_max = self.frame_max;
        let (message, remaining) = match queue.get(g.no_ack, &self.handle, id) {
            Got::Message(m, remaining) => (m, remaining),
            Got::Empty => {
                self.send_method(
                    id,
                    AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                );
                return Ok(());
            }
            Got::Wait => {
                let get = Method::Other(AMQPClass::Basic(basic::AMQPMethod::Get(g)));
                self.waiting_get = Some((id, get));
                return Ok(());
            }
        };
        let chan = self.channel_mut(id)?;
        let tag = chan.next_delivery_tag;
        chan.next_delivery_tag += 1;
        let m = message.message.clone();
        let redelivered = message.redelivered;
        // Only a rewritten header (a quorum queue's count) is kept apart; the
        // publisher's bytes stay shared with `m`.
        let rewritten = match message.wire_header(true) {
            std::borrow::Cow::Owned(h) => Some(h),
            std::borrow::Cow::Borrowed(_) => None,
        };
        if !g.no_ack {
            chan.unacked.insert(
                tag,
                Unacked {
                    queue,
                    message,
                    credit: None,
                    delivered_at: now,
                },
            );
        }
        hot::encode_get_ok(
            &mut self.out,
            id,
            tag,
            redelivered,
            m.exchange(),
            m.routing_key(),
            remaining,
        );
        let header = rewritten.as_deref().unwrap_or(m.content.header());
        hot::encode_content(&mut self.out, id, header, m.content.body(), frame_max);
        Ok(())
    }

    /// basic.ack / nack / reject. The tags are settled at once (a second ack of
    /// the same tag is an error even inside a transaction, as in RabbitMQ); in a
    /// transaction the effect on the queues waits for tx.commit.
    pub(super) fn on_ack(&mut self, id: u16, m: Method) -> AmqpResult<()> {
        let taken = self.take_unacked(id, &m)?;
        if !matches!(m, Method::Ack { .. }) {
            if let Some((_, u)) = taken.iter().find(|(_, u)| u.queue.stream().is_some()) {
                return Err(not_for_streams("basic.nack and basic.reject", &u.queue));
            }
        }
        if let Some(tx) = self.channel_mut(id)?.tx.as_mut() {
            tx.acks.push((m, taken));
            return Ok(());
        }
        self.settle_taken(id, &m, taken.into_iter().map(|(_, u)| u).collect())
    }

    /// Remove the deliveries an ack/nack/reject names from the unacked set.
    fn take_unacked(&mut self, id: u16, m: &Method) -> AmqpResult<Vec<(u64, Unacked)>> {
        let (tag, multiple) = match *m {
            Method::Ack {
                delivery_tag,
                multiple,
            }
            | Method::Nack {
                delivery_tag,
                multiple,
                ..
            } => (delivery_tag, multiple),
            Method::Reject { delivery_tag, .. } => (delivery_tag, false),
            _ => return Ok(Vec::new()),
        };
        let unknown = || AmqpError::precondition_failed(format!("unknown delivery tag {tag}"));
        let chan = self.channel_mut(id)?;
        if multiple {
            if tag != 0 && !chan.unacked.contains_key(&tag) {
                return Err(unknown());
            }
            let upto = if tag == 0 { u64::MAX } else { tag };
            let rest = chan.unacked.split_off(&upto.saturating_add(1));
            let taken = std::mem::replace(&mut chan.unacked, rest);
            Ok(taken.into_iter().collect())
        } else {
            let u = chan.unacked.remove(&tag).ok_or_else(unknown)?;
            Ok(vec![(tag, u)])
        }
    }

    /// Put deliveries taken by a rolled-back transaction back in the unacked set.
    pub(super) fn untake(&mut self, id: u16, taken: Vec<(u64, Unacked)>) -> AmqpResult<()> {
        let chan = self.channel_mut(id)?;
        chan.unacked.extend(taken);
        Ok(())
    }

    /// Apply an ack/nack/reject to deliveries already taken from the unacked set.
    pub(super) fn settle_taken(
        &mut self,
        id: u16,
        m: &Method,
        taken: Vec<Unacked>,
    ) -> AmqpResult<()> {
        let requeue = match *m {
            Method::Ack { .. } => None,
            Method::Nack { requeue, .. } | Method::Reject { requeue, .. } => Some(requeue),
            _ => return Ok(()),
        };
        let chan = self.channel_mut(id)?;
        let channel_credit = chan.channel_credit.clone();
        let consumer_deliveries = taken.iter().filter(|u| u.credit.is_some()).count() as u32;
        channel_credit.release(consumer_deliveries);
        if requeue == Some(true) {
            requeue_all(taken);
        } else {
            let mut queues: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
            for u in taken {
                if let Some(c) = &u.credit {
                    c.release(1);
                }
                match queues.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                    Some((_, v)) => v.push(u.message),
                    None => queues.push((u.queue, vec![u.message])),
                }
            }
            for (q, messages) in queues {
                if requeue == Some(false) {
                    q.reject(messages);
                } else {
                    q.ack(&messages);
                }
                // Freed credit may let the queue deliver more.
                q.kick();
            }
        }
        if consumer_deliveries > 0 && channel_credit.limit() > 0 {
            let queues: Vec<Arc<Queue>> = self
                .channel_mut(id)?
                .consumers
                .values()
                .map(|c| c.queue.clone())
                .collect();
            for q in queues {
                q.kick();
            }
        }
        Ok(())
    }

    pub(super) fn on_recover(&mut self, id: u16, requeue: bool, reply: bool) -> AmqpResult<()> {
        if !requeue {
            return Err(AmqpError::not_implemented("requeue=false"));
        }
        let chan = self.channel_mut(id)?;
        let unacked = std::mem::take(&mut chan.unacked);
        let n = unacked.values().filter(|u| u.credit.is_some()).count() as u32;
        chan.channel_credit.release(n);
        requeue_all(unacked.into_values());
        if reply {
            self.send_method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
            );
        }
        Ok(())
    }
}

/// RabbitMQ's 540 for what streams do not do.
pub(super) fn not_for_streams(what: &str, queue: &Queue) -> AmqpError {
    AmqpError::not_implemented(format!(
        "{what} not supported by stream queues queue '{}' in vhost '{}'",
        queue.name, queue.vhost
    ))
}

impl Connection {
    /// What RabbitMQ asks of a stream consumer: manual acks and a prefetch;
    /// and where it starts (`x-stream-offset`).
    fn stream_consume_checks(
        &mut self,
        id: u16,
        queue: &Queue,
        c: &basic::Consume,
    ) -> AmqpResult<Option<StreamStart>> {
        if c.no_ack {
            return Err(not_for_streams("automatic acknowledgement", queue));
        }
        if self.channel_mut(id)?.consumer_prefetch == 0 {
            return Err(AmqpError::precondition_failed(format!(
                "consumer prefetch count is not set for 'queue '{}' in vhost '{}''",
                queue.name, queue.vhost
            )));
        }
        match c.arguments.inner().get("x-stream-offset") {
            None => Ok(None),
            // RabbitMQ fails this with a bare internal error.
            Some(v) => StreamStart::parse(v)
                .map(Some)
                .ok_or_else(|| AmqpError::raw(ReplyCode::INTERNAL_ERROR, "INTERNAL_ERROR".into())),
        }
    }
}
