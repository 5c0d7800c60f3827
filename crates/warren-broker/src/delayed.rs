//! The `x-delayed-message` exchange, with the semantics of RabbitMQ's
//! community plugin (rabbitmq-delayed-message-exchange): the exchange routes
//! as its `x-delayed-type`, but a message whose `x-delay` header asks for
//! 1..=2^32-1 ms is held and routed only when that time has passed, with
//! `x-delay` turned negative so that it is not delayed again downstream.
//!
//! [`Schedule`] is the held messages in due order; it reads no clock. The
//! vhost routes what falls due (`vhost.rs`) from a timer task per exchange.
//! A durable exchange keeps its held messages in the store as the messages of
//! its own store id, with the due time in the key (`seq_for`), so that they
//! survive a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::types::AMQPValue;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::Message;

/// The exchange type.
pub const DELAYED_TYPE: &str = "x-delayed-message";

/// The longest delay the plugin honours (Erlang's timer limit); a longer or
/// non-positive one routes at once.
const MAX_DELAY_MS: i128 = 4_294_967_295;

/// Low bits of a held message's seq: a counter, so that messages due in the
/// same millisecond keep their order and their keys.
const COUNTER_BITS: u32 = 20;

/// Milliseconds since the Unix epoch: due times survive a restart, as the
/// plugin's do.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The delay a message asks for, if it is to be held: `x-delay` as an
/// integer, or a number in a string or float (the plugin converts those),
/// in 1..=2^32-1 ms.
pub fn requested_delay(message: &Message) -> Option<u64> {
    let headers = message.content.headers()?;
    let value = headers.inner().get("x-delay")?;
    let ms: i128 = match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).trim().parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        AMQPValue::Float(f) => f.trunc() as i128,
        AMQPValue::Double(f) => f.trunc() as i128,
        other => crate::queue::args::integer(other)?,
    };
    (1..=MAX_DELAY_MS).contains(&ms).then_some(ms as u64)
}

/// The message as it leaves the exchange: `x-delay` set to minus the delay
/// (a signed 32-bit integer, as the plugin writes it).
pub fn released(message: &Message, delay: u64) -> Option<Message> {
    let header = message.header_with(
        "x-delay",
        AMQPValue::LongInt(-(delay.min(i32::MAX as u64) as i32)),
    )?;
    let header = warren_codec::ContentHeader::parse(bytes::Bytes::from(header)).ok()?;
    Some(Message::new(
        message.address.clone(),
        header,
        message.content.body_bytes(),
    ))
}

/// The due time of a held message, from its seq.
pub fn due_of(seq: u64) -> u64 {
    seq >> COUNTER_BITS
}

/// The messages an exchange holds, in due order.
#[derive(Debug, Default)]
pub struct Schedule {
    held: BTreeMap<u64, Arc<Message>>,
    counter: u64,
}

impl Schedule {
    /// Hold a message until `due_ms`; returns its seq (the store key) and
    /// whether it is now the first due (the timer must be woken).
    pub fn hold(&mut self, due_ms: u64, message: Arc<Message>) -> (u64, bool) {
        let base = due_ms.min(u64::MAX >> COUNTER_BITS) << COUNTER_BITS;
        let mut seq = base | (self.counter & ((1 << COUNTER_BITS) - 1));
        // A full millisecond (2^20 messages) spills into the next free key.
        while self.held.contains_key(&seq) {
            seq = seq.saturating_add(1);
        }
        self.counter = self.counter.wrapping_add(1);
        let first = self.held.keys().next().is_none_or(|k| seq < *k);
        self.held.insert(seq, message);
        (seq, first)
    }

    /// A message read back from the store at start-up.
    pub fn restore(&mut self, seq: u64, message: Arc<Message>) {
        self.held.insert(seq, message);
    }

    /// The messages due at `now_ms`, in due order.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<(u64, Arc<Message>)> {
        let later = self.held.split_off(&((now_ms + 1) << COUNTER_BITS));
        std::mem::replace(&mut self.held, later)
            .into_iter()
            .collect()
    }

    /// When the first held message is due.
    pub fn next_due(&self) -> Option<u64> {
        self.held.keys().next().map(|s| due_of(*s))
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// The delayed half of an `x-delayed-message` exchange.
#[derive(Debug, Default)]
pub struct Delayed {
    /// Where a durable exchange keeps its held messages in the store.
    pub store_id: Option<u64>,
    pub schedule: Mutex<Schedule>,
    /// Wakes the timer task: a nearer due time, or the exchange is gone.
    pub wake: Notify,
    pub deleted: AtomicBool,
    timer_started: AtomicBool,
}

impl Delayed {
    pub fn new(store_id: Option<u64>) -> Delayed {
        Delayed {
            store_id,
            ..Delayed::default()
        }
    }

    /// True the first time only: the caller starts the timer task.
    pub fn claim_timer(&self) -> bool {
        !self.timer_started.swap(true, Ordering::Relaxed)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    pub fn delete(&self) {
        self.deleted.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Address;
    use bytes::{BufMut, Bytes, BytesMut};
    use warren_codec::ContentHeader;

    fn message(headers: Option<amq_protocol::types::FieldTable>) -> Arc<Message> {
        let props = match headers {
            Some(h) => amq_protocol::protocol::basic::AMQPProperties::default().with_headers(h),
            None => amq_protocol::protocol::basic::AMQPProperties::default(),
        };
        let mut raw = BytesMut::new();
        raw.put_u16(60);
        raw.put_u16(0);
        raw.put_u64(1);
        let (raw, _) = amq_protocol::protocol::basic::gen_properties(&props)(
            amq_protocol::frame::WriteContext::from(raw.to_vec()),
        )
        .expect("encodes")
        .into_inner();
        Arc::new(Message::new(
            Address::new("x".into(), "k".into(), Vec::new()),
            ContentHeader::parse(Bytes::from(raw)).expect("parses"),
            Bytes::from_static(b"b"),
        ))
    }

    fn with_delay(v: AMQPValue) -> Arc<Message> {
        let mut h = amq_protocol::types::FieldTable::default();
        h.insert("x-delay".into(), v);
        message(Some(h))
    }

    #[test]
    fn x_delay_is_read_as_the_plugin_reads_it() {
        assert_eq!(requested_delay(&message(None)), None);
        assert_eq!(
            requested_delay(&with_delay(AMQPValue::LongInt(500))),
            Some(500)
        );
        assert_eq!(
            requested_delay(&with_delay(AMQPValue::LongLongInt(0))),
            None
        );
        assert_eq!(requested_delay(&with_delay(AMQPValue::LongInt(-5))), None);
        assert_eq!(
            requested_delay(&with_delay(AMQPValue::LongLongInt(4_294_967_296))),
            None,
            "past Erlang's timer limit routes at once"
        );
        assert_eq!(
            requested_delay(&with_delay(AMQPValue::LongString("250".into()))),
            Some(250)
        );
        assert_eq!(
            requested_delay(&with_delay(AMQPValue::Double(99.9))),
            Some(99)
        );
        assert_eq!(
            requested_delay(&with_delay(AMQPValue::LongString("soon".into()))),
            None
        );
    }

    #[test]
    fn a_released_message_carries_the_negated_delay_and_is_not_delayed_again() {
        let m = with_delay(AMQPValue::LongInt(300));
        let out = released(&m, 300).expect("re-encoded");
        let h = out.content.headers().expect("headers");
        assert_eq!(h.inner().get("x-delay"), Some(&AMQPValue::LongInt(-300)));
        assert_eq!(requested_delay(&out), None);
        assert_eq!(out.content.body(), b"b");
    }

    #[test]
    fn held_messages_come_out_in_due_order_when_due() {
        let mut s = Schedule::default();
        let m = message(None);
        let (late, first) = s.hold(2_000, m.clone());
        assert!(first);
        let (early, first) = s.hold(1_000, m.clone());
        assert!(first, "a nearer due time wakes the timer");
        let (same, first) = s.hold(1_000, m.clone());
        assert!(!first);
        assert!(early < same && same < late, "same millisecond keeps order");
        assert_eq!(due_of(early), 1_000);
        assert_eq!(s.next_due(), Some(1_000));
        assert!(s.take_due(999).is_empty());
        let due: Vec<u64> = s.take_due(1_000).into_iter().map(|(k, _)| k).collect();
        assert_eq!(due, [early, same]);
        assert_eq!(s.next_due(), Some(2_000));
        assert_eq!(s.take_due(5_000).len(), 1);
        assert!(s.is_empty());
    }
}
