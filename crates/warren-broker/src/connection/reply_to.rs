//! Direct reply-to: RPC replies delivered straight to the requester's channel,
//! without a queue (RabbitMQ's `amq.rabbitmq.reply-to` pseudo-queue).
//!
//! The requester consumes from `amq.rabbitmq.reply-to` (no-ack) and publishes
//! with `reply_to = amq.rabbitmq.reply-to`; the broker rewrites that to
//! `amq.rabbitmq.reply-to.<token>`, where the token names the connection and
//! channel plus a random key, so that replies cannot be aimed at other channels.
//! Delivery is at-most-once, as in RabbitMQ.

use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::ShortString;
use base64::Engine;
use warren_codec::{hot, ContentHeader};

use super::channel::ReplyConsumer;
use super::{ConnEvent, Connection, ConnectionId};
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::names;

pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";
const PREFIX: &str = "amq.rabbitmq.reply-to.";

/// `amq.rabbitmq.reply-to.<base64(connection, channel, key)>`.
pub fn encode_name(conn: ConnectionId, channel: u16, key: u64) -> String {
    let mut raw = [0u8; 18];
    raw[..8].copy_from_slice(&conn.to_be_bytes());
    raw[8..10].copy_from_slice(&channel.to_be_bytes());
    raw[10..].copy_from_slice(&key.to_be_bytes());
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

pub fn decode_name(name: &str) -> Option<(ConnectionId, u16, u64)> {
    let token = name.strip_prefix(PREFIX)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    if raw.len() != 18 {
        return None;
    }
    let mut conn = [0u8; 8];
    conn.copy_from_slice(&raw[..8]);
    let mut key = [0u8; 8];
    key.copy_from_slice(&raw[10..]);
    Some((
        u64::from_be_bytes(conn),
        u16::from_be_bytes([raw[8], raw[9]]),
        u64::from_be_bytes(key),
    ))
}

impl Connection {
    pub(super) fn on_reply_consume(&mut self, id: u16, c: basic::Consume) -> AmqpResult<()> {
        if !c.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        let chan = self.channel_mut(id)?;
        if chan.reply_consumer.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            names::consumer_tag().into()
        } else {
            c.consumer_tag.as_str().into()
        };
        let key: u64 = rand::random();
        chan.reply_consumer = Some(ReplyConsumer {
            tag: tag.clone(),
            key,
        });
        self.broker
            .set_reply_consumer(self.handle.id, id, Some(key));
        if !c.nowait {
            self.send_method(
                id,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: ShortString::try_new(tag.to_string()).unwrap_or_default(),
                })),
            );
        }
        Ok(())
    }

    /// Rewrite `reply_to = amq.rabbitmq.reply-to` to this channel's reply address.
    pub(super) fn rewrite_reply_to(
        &mut self,
        id: u16,
        header: ContentHeader,
    ) -> AmqpResult<ContentHeader> {
        if header.reply_to() != Some(REPLY_TO) {
            return Ok(header);
        }
        let conn = self.id();
        let chan = self.channel_mut(id)?;
        let Some(rc) = &chan.reply_consumer else {
            return Err(AmqpError::precondition_failed(
                "fast reply consumer does not exist",
            ));
        };
        let name = encode_name(conn, id, rc.key);
        header
            .with_reply_to(&name)
            .ok_or_else(|| AmqpError::internal_error("could not rewrite the reply-to property"))
    }

    /// Route a message published to the default exchange with a reply-to routing
    /// key. Returns whether a live reply consumer was found.
    pub(super) fn route_direct_reply(&self, message: &Arc<Message>) -> bool {
        let Some((conn, channel, key)) = decode_name(message.routing_key()) else {
            return false;
        };
        let Some(handle) = self.broker.connection(conn) else {
            return false;
        };
        // A reply counts against the requester's buffer like a delivery. It
        // cannot wait in a queue, so past the limit it is dropped (as replies
        // to a requester that is gone are).
        if !handle.has_room() {
            tracing::warn!(
                conn,
                "a direct reply-to reply was dropped: the requesting connection is not reading its replies"
            );
            return false;
        }
        let ev = ConnEvent::DirectReply {
            channel,
            key,
            message: message.clone(),
        };
        handle.deliver(ev, message.wire_size()).is_ok()
    }

    pub(super) fn on_direct_reply(&mut self, channel: u16, key: u64, message: Arc<Message>) {
        self.handle.delivery_taken(message.wire_size());
        let frame_max = self.frame_max;
        let Some(chan) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(rc) = chan
            .reply_consumer
            .as_ref()
            .filter(|rc| rc.key == key && !chan.closing)
        else {
            return;
        };
        // RabbitMQ sends direct replies (no-ack, outside the channel's delivery
        // sequence) with delivery tag 1.
        let tag = 1;
        let consumer_tag = rc.tag.clone();
        hot::encode_deliver(
            &mut self.out,
            channel,
            &consumer_tag,
            tag,
            false,
            message.exchange(),
            message.routing_key(),
        );
        hot::encode_content(
            &mut self.out,
            channel,
            message.content.header(),
            message.content.body(),
            frame_max,
        );
    }

    /// `queue.declare(passive)` of a reply address: ok while the requester is connected.
    pub(super) fn reply_address_alive(&self, name: &str) -> bool {
        decode_name(name).is_some_and(|(conn, channel, key)| {
            self.broker.reply_consumer_alive(conn, channel, key)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_round_trip() {
        let n = super::encode_name(42, 7, 0xdead_beef);
        assert!(n.starts_with("amq.rabbitmq.reply-to."));
        assert_eq!(super::decode_name(&n), Some((42, 7, 0xdead_beef)));
        assert_eq!(super::decode_name("amq.rabbitmq.reply-to.nope"), None);
    }
}
