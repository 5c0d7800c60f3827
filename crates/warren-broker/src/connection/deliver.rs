//! Events from queues: deliveries, server-sent cancels, and resuming after back-pressure.

use std::sync::Arc;
use std::time::Instant;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;
use warren_codec::hot;

use super::channel::Unacked;
use super::Connection;
use crate::queue::{Queue, QueuedMessage};

impl Connection {
    pub(super) fn on_deliver(
        &mut self,
        channel: u16,
        consumer_tag: Arc<str>,
        no_ack: bool,
        queue: Arc<Queue>,
        message: QueuedMessage,
        now: Instant,
    ) {
        self.handle.delivery_taken(message.message.wire_size());
        let frame_max = self.frame_max;
        let chan = match self.channels.get_mut(&channel) {
            Some(c) if !c.closing => c,
            _ => {
                // The channel went away while the message was in flight: give it back.
                queue.return_undelivered(message);
                return;
            }
        };
        let Some(consumer) = chan.consumers.get(&consumer_tag) else {
            if !no_ack {
                chan.channel_credit.release(1);
            }
            queue.return_undelivered(message);
            return;
        };
        let tag = chan.next_delivery_tag;
        chan.next_delivery_tag += 1;
        let m = message.message.clone();
        hot::encode_deliver(
            &mut self.out,
            channel,
            &consumer_tag,
            tag,
            message.redelivered,
            m.exchange(),
            m.routing_key(),
        );
        hot::encode_content(
            &mut self.out,
            channel,
            &message.wire_header(false),
            m.content.body(),
            frame_max,
        );
        if !consumer.no_ack {
            let credit = Some(consumer.credit.clone());
            chan.unacked.insert(
                tag,
                Unacked {
                    queue,
                    message,
                    credit,
                    delivered_at: now,
                },
            );
        }
    }

    /// The consumer's queue was deleted: forget the consumer and, if the client
    /// understands it, tell it with basic.cancel.
    pub(super) fn on_consumer_cancelled(&mut self, channel: u16, consumer_tag: Arc<str>) {
        let notify = self.caps.consumer_cancel_notify;
        let Some(chan) = self.channels.get_mut(&channel) else {
            return;
        };
        if chan.closing || chan.consumers.remove(&consumer_tag).is_none() {
            return;
        }
        if notify {
            self.send_method(
                channel,
                AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                    consumer_tag: ShortString::try_new(consumer_tag.to_string())
                        .unwrap_or_default(),
                    nowait: true,
                })),
            );
        }
    }

    /// The socket writer caught up: queues that skipped us may deliver again.
    pub(super) fn on_drained(&mut self) {
        let mut queues: Vec<Arc<Queue>> = Vec::new();
        for chan in self.channels.values() {
            for c in chan.consumers.values() {
                if !queues.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                    queues.push(c.queue.clone());
                }
            }
        }
        for q in queues {
            q.kick();
        }
    }
}
