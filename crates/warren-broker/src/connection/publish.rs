//! basic.publish: content assembly, routing, mandatory returns, confirms and tx.

use std::sync::Arc;

use amq_protocol::protocol::{confirm, tx, AMQPClass};
use bytes::Bytes;
use warren_codec::content::ContentHeaderError;
use warren_codec::hot;
use warren_codec::method::Publish;
use warren_codec::ContentHeader;

use super::channel::{
    expected_body, expected_header, expected_method, BodyParts, Confirms, Content, Tx,
};
use super::{ConnEvent, Connection};
use crate::access::{Perm, Resource};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::Exchange;
use crate::message::Message;
use crate::queue::Enqueued;
use crate::vhost::VHost;

impl Connection {
    pub(super) fn on_publish(&mut self, id: u16, p: Publish) -> AmqpResult<()> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        if !self.has_published {
            self.has_published = true;
            self.on_alarm();
        }
        self.channel_mut(id)?.content = Content::Header(p);
        Ok(())
    }

    /// A content header frame. Errors name basic.publish (60,40), except a
    /// header with no publish before it, which RabbitMQ reports with no method.
    pub(super) fn handle_content_header(&mut self, id: u16, payload: Bytes) -> AmqpResult<()> {
        self.content_header(id, payload)
            .map_err(|(e, in_publish)| if in_publish { e.during((60, 40)) } else { e })
    }

    fn content_header(&mut self, id: u16, payload: Bytes) -> Result<(), (AmqpError, bool)> {
        let max = self.broker.config.max_message_size;
        let Some(chan) = self.channels.get_mut(&id) else {
            return Err((AmqpError::channel_error("expected 'channel.open'"), false));
        };
        if chan.closing {
            return Ok(());
        }
        let publish = match std::mem::take(&mut chan.content) {
            Content::Header(p) => p,
            Content::Idle => return Err((expected_method(), false)),
            Content::Body { .. } => return Err((expected_body(), true)),
        };
        let header = ContentHeader::parse(payload).map_err(|e| {
            let e = match e {
                ContentHeaderError::TooDeep => {
                    AmqpError::syntax_error("headers table nested too deeply")
                }
                ContentHeaderError::Malformed => {
                    AmqpError::syntax_error("malformed content header")
                }
            };
            (e, true)
        })?;
        if header.class_id != 60 {
            let e = AmqpError::unexpected_frame(format!(
                "expected content header for class 60, got one for class {} instead",
                header.class_id
            ));
            return Err((e, true));
        }
        if header.body_size > max {
            let e = AmqpError::precondition_failed(format!(
                "message size {} is larger than configured max size {max}",
                header.body_size
            ));
            return Err((e, true));
        }
        if header.body_size == 0 {
            return self
                .complete_publish(id, publish, header, Bytes::new())
                .map_err(|e| (e, true));
        }
        chan.content = Content::Body {
            publish,
            header,
            body: BodyParts::Empty,
        };
        Ok(())
    }

    /// A content body frame (errors as for the header).
    pub(super) fn handle_content_body(&mut self, id: u16, payload: Bytes) -> AmqpResult<()> {
        let Some(chan) = self.channels.get_mut(&id) else {
            return Err(AmqpError::channel_error("expected 'channel.open'"));
        };
        if chan.closing {
            return Ok(());
        }
        let (body, header) = match &mut chan.content {
            Content::Body { body, header, .. } => (body, header),
            Content::Idle => return Err(expected_method()),
            Content::Header(_) => return Err(expected_header().during((60, 40))),
        };
        if (body.len() + payload.len()) as u64 > header.body_size {
            return Err(AmqpError::unexpected_frame(
                "content body is larger than the size declared in its content header",
            )
            .during((60, 40)));
        }
        body.push(payload);
        if (body.len() as u64) < header.body_size {
            return Ok(());
        }
        let Content::Body {
            publish,
            header,
            body,
        } = std::mem::take(&mut chan.content)
        else {
            return Ok(());
        };
        self.complete_publish(id, publish, header, body.freeze())
            .map_err(|e| e.during((60, 40)))
    }

    fn complete_publish(
        &mut self,
        id: u16,
        p: Publish,
        header: ContentHeader,
        body: Bytes,
    ) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        self.permit(Perm::Write, Resource::Exchange, p.exchange())?;
        let exchange = vhost
            .exchange(p.exchange())
            .ok_or_else(|| vhost.no_exchange(p.exchange()))?;
        if exchange.internal {
            return Err(AmqpError::access_refused(format!(
                "cannot publish to internal exchange '{}' in vhost '{}'",
                p.exchange(),
                vhost.name
            )));
        }
        if let Some(exp) = header.expiration() {
            check_expiration(exp)?;
        }
        if let Some(uid) = header.user_id() {
            if uid != self.user {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{uid}' but authenticated user was '{}'",
                    self.user
                )));
            }
        }
        let header = self.rewrite_reply_to(id, header)?;
        let (header, cc) = crate::message::sender_selected(header);
        let address = self.addresses.get(p.exchange(), p.routing_key(), cc);
        let message = Arc::new(Message::new(address, header, body));
        let chan = self.channel_mut(id)?;
        if let Some(tx) = chan.tx.as_mut() {
            tx.publishes.push((message, p.mandatory));
            return Ok(());
        }
        self.route_and_enqueue(&vhost, Some(exchange), id, message, p.mandatory)
    }

    /// Route a message, enqueue it, return it if unroutable and mandatory, and note its confirm.
    /// `exchange` is the one a fresh publish already looked up; a committed
    /// transaction passes `None` (the exchange may have gone since).
    fn route_and_enqueue(
        &mut self,
        vhost: &VHost,
        exchange: Option<Arc<Exchange>>,
        id: u16,
        message: Arc<Message>,
        mandatory: bool,
    ) -> AmqpResult<()> {
        // Reuse the connection's scratch list: no allocation per publish.
        let mut queues = std::mem::take(&mut self.routed);
        queues.clear();
        let mut held_durably = false;
        if let Some(x) = exchange.or_else(|| vhost.exchange(message.exchange())) {
            held_durably = vhost.route(&x, &message, &mut queues).held_durably;
        }
        let mut routed = false;
        let mut rejected = false;
        for q in &queues {
            match q.publish(message.clone()) {
                Enqueued::Accepted => routed = true,
                Enqueued::Rejected => {
                    routed = true;
                    rejected = true;
                }
                Enqueued::Gone => {}
            }
        }
        if queues.is_empty()
            && message.exchange().is_empty()
            && message.routing_key().starts_with(super::reply_to::REPLY_TO)
        {
            routed = self.route_direct_reply(&message);
        }
        if !routed && mandatory {
            hot::encode_return(
                &mut self.out,
                id,
                312,
                "NO_ROUTE",
                message.exchange(),
                message.routing_key(),
            );
            hot::encode_content(
                &mut self.out,
                id,
                message.content.header(),
                message.content.body(),
                self.frame_max,
            );
        }
        let needs_sync = held_durably || (routed && queues.iter().any(|q| q.persists(&message)));
        // Short of memory, transient messages may be paged to the store too.
        if needs_sync || (routed && crate::queue::memory_short()) {
            self.note_store_write(message.wire_size());
        }
        let mut frames = Vec::new();
        let chan = self.channel_mut(id)?;
        if let Some(c) = chan.confirms.as_mut() {
            c.published(needs_sync, rejected, &mut frames);
        } else if let Some(tx) = chan.tx.as_mut() {
            tx.needs_sync |= needs_sync;
        }
        self.write_confirms(id, &frames);
        queues.clear();
        self.routed = queues;
        Ok(())
    }

    fn write_confirms(&mut self, id: u16, frames: &[(bool, u64, bool)]) {
        for &(ack, tag, multiple) in frames {
            hot::encode_confirm(&mut self.out, id, ack, tag, multiple);
        }
    }

    /// The frames of one read are handled: send the confirms that are due,
    /// coalesced, and start one group-commit barrier per channel that needs it.
    pub(super) fn flush_confirms(&mut self) {
        let mut frames = Vec::new();
        let mut barriers = Vec::new();
        for (id, chan) in self.channels.iter_mut() {
            if let Some(c) = chan.confirms.as_mut() {
                if let Some(upto) = c.end_of_batch(&mut frames) {
                    barriers.push((*id, chan.epoch, upto));
                }
                for (ack, tag, multiple) in frames.drain(..) {
                    hot::encode_confirm(&mut self.out, *id, ack, tag, multiple);
                }
            }
        }
        if barriers.is_empty() {
            return;
        }
        let Some(store) = self.broker.store().cloned() else {
            return;
        };
        for (channel, epoch, upto) in barriers {
            let handle = self.handle.clone();
            store.barrier(move |ok| {
                handle.notify(ConnEvent::Persisted {
                    channel,
                    epoch,
                    upto,
                    ok,
                })
            });
        }
    }

    pub(super) fn on_persisted(&mut self, channel: u16, epoch: u64, upto: u64, ok: bool) {
        let mut frames = Vec::new();
        match self.channels.get_mut(&channel) {
            Some(c) if c.epoch == epoch && !c.closing => {
                if let Some(confirms) = c.confirms.as_mut() {
                    confirms.persisted(upto, ok, &mut frames);
                }
            }
            _ => return,
        }
        self.write_confirms(channel, &frames);
    }

    pub(super) fn on_tx_committed(&mut self, channel: u16, epoch: u64, ok: bool) {
        match self.channels.get(&channel) {
            Some(c) if c.epoch == epoch && !c.closing => {}
            _ => return,
        }
        if ok {
            self.send_method(
                channel,
                AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
            );
        } else {
            self.channel_error(
                channel,
                AmqpError::internal_error("the message store failed to write the transaction")
                    .during((90, 20)),
            );
        }
    }

    pub(super) fn on_confirm_select(&mut self, id: u16, nowait: bool) -> AmqpResult<()> {
        let chan = self.channel_mut(id)?;
        if chan.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        if chan.confirms.is_none() {
            chan.confirms = Some(Confirms::default());
        }
        if !nowait {
            self.send_method(
                id,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }

    pub(super) fn on_tx_select(&mut self, id: u16) -> AmqpResult<()> {
        let chan = self.channel_mut(id)?;
        if chan.confirms.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from confirm to tx mode",
            ));
        }
        if chan.tx.is_none() {
            chan.tx = Some(Tx::default());
        }
        self.send_method(id, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
        Ok(())
    }

    pub(super) fn on_tx_commit(&mut self, id: u16) -> AmqpResult<()> {
        let chan = self.channel_mut(id)?;
        let Some(tx) = chan.tx.as_mut() else {
            return Err(AmqpError::precondition_failed(
                "channel is not transactional",
            ));
        };
        let work = std::mem::take(tx);
        let vhost = self.vhost()?;
        for (message, mandatory) in work.publishes {
            self.route_and_enqueue(&vhost, None, id, message, mandatory)?;
        }
        for (ack, taken) in work.acks {
            self.settle_taken(id, &ack, taken.into_iter().map(|(_, u)| u).collect())?;
        }
        let chan = self.channel_mut(id)?;
        let epoch = chan.epoch;
        let needs_sync = chan
            .tx
            .as_mut()
            .is_some_and(|t| std::mem::take(&mut t.needs_sync));
        match self.broker.store().cloned() {
            // commit-ok only once the transaction's persistent messages are on disk.
            Some(store) if needs_sync => {
                let handle = self.handle.clone();
                store.barrier(move |ok| {
                    handle.notify(ConnEvent::TxCommitted {
                        channel: id,
                        epoch,
                        ok,
                    })
                });
            }
            _ => self.send_method(id, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}))),
        }
        Ok(())
    }

    pub(super) fn on_tx_rollback(&mut self, id: u16) -> AmqpResult<()> {
        let chan = self.channel_mut(id)?;
        let Some(tx) = chan.tx.as_mut() else {
            return Err(AmqpError::precondition_failed(
                "channel is not transactional",
            ));
        };
        let acks = std::mem::take(&mut tx.acks);
        *tx = Tx::default();
        // Rolled-back acks leave their messages unacknowledged, as before them.
        for (_, taken) in acks {
            self.untake(id, taken)?;
        }
        self.send_method(
            id,
            AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
        );
        Ok(())
    }
}

/// The longest expiration RabbitMQ 3.10.8 accepts: ten years, in milliseconds.
const MAX_EXPIRY: i64 = 315_360_000_000;

/// RabbitMQ's check of the `expiration` property: a non-negative integer of milliseconds.
fn check_expiration(exp: &str) -> AmqpResult<()> {
    let digits_end = exp
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map(|(i, _)| i)
        .unwrap_or(exp.len());
    let (number, rest) = exp.split_at(digits_end);
    let reason = match number.parse::<i64>() {
        Err(_) => "no_integer".to_string(),
        Ok(_) if !rest.is_empty() => format!("{{leftover_string,\"{rest}\"}}"),
        Ok(n) if n < 0 => format!("{{value_negative,{n}}}"),
        Ok(n) if n > MAX_EXPIRY => format!("{{value_too_large,{n}}}"),
        Ok(_) => return Ok(()),
    };
    Err(AmqpError::precondition_failed(format!(
        "invalid expiration '{exp}': {reason}"
    )))
}
