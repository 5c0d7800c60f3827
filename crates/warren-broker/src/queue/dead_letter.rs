//! Dead-lettering: messages rejected without requeue, expired, or dropped by a
//! length limit are republished to the queue's `x-dead-letter-exchange` with an
//! `x-death` header, as RabbitMQ 3.x does.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::generation::gen_value;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use warren_codec::ContentHeader;

use super::effects::{Death, DeathReason};
use super::machine::Enqueued;
use super::Queue;
use crate::message::{Address, Message};

impl Queue {
    /// Republish dead messages to the queue's dead-letter exchange (if it has
    /// one and it exists, as in RabbitMQ), then forget them here. The targets
    /// hold a message (their writes are queued to the store ahead of this
    /// queue's delete) before the source forgets it: at least once. Call
    /// without the lock.
    pub(super) fn dead_letter(self: &Arc<Self>, deaths: &mut Vec<Death>) {
        if deaths.is_empty() {
            return;
        }
        let exchange = self
            .args
            .dead_letter_exchange
            .as_deref()
            .and_then(|dlx| Some((dlx, self.vhost_ref.upgrade()?)));
        let routing_key = self.args.dead_letter_routing_key.as_deref();
        let mut targets = Vec::new();
        for Death { message, reason } in deaths.drain(..) {
            if let Some((dlx, home)) = &exchange {
                match dead_lettered(&message.message, &self.name, reason, dlx, routing_key) {
                    Some(dead) => {
                        let dead = Arc::new(dead);
                        targets.clear();
                        home.route_dead_letter(dlx, &dead, &mut targets);
                        let mut refused = Vec::new();
                        for q in &targets {
                            if reason != DeathReason::Rejected && is_cycle(&dead, &q.name) {
                                tracing::debug!(queue = %q.name, "dead-letter cycle detected; message dropped");
                                continue;
                            }
                            if q.publish(dead.clone()) == Enqueued::Rejected {
                                refused.push(q.clone());
                            }
                        }
                        if !refused.is_empty() && self.args.dead_letters_at_least_once() {
                            // Kept here (and on disk) until the targets take it.
                            self.park_dead_letter(dead, refused, message.seq, message.stored);
                            continue;
                        }
                    }
                    None => tracing::warn!(
                        queue = %self.name,
                        "a message could not be dead-lettered (its properties could not be re-encoded); it is dropped"
                    ),
                }
            }
            self.forget(message.seq, message.stored);
        }
    }
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn deaths_of(headers: &FieldTable) -> Vec<AMQPValue> {
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    }
}

/// RabbitMQ's rule: delivering to `queue` closes a cycle if `queue` already
/// appears in `x-death` and no death along the way was a rejection.
fn is_cycle(message: &Message, queue: &str) -> bool {
    let Some(headers) = message.content.headers() else {
        return false;
    };
    let deaths = deaths_of(&headers);
    let mut cycle = Vec::new();
    for d in &deaths {
        let AMQPValue::FieldTable(t) = d else {
            return false;
        };
        cycle.push(t);
        if text(t.inner().get("queue")).as_deref() == Some(queue) {
            return cycle
                .iter()
                .all(|t| text(t.inner().get("reason")).as_deref() != Some("rejected"));
        }
    }
    false
}

/// The message as it leaves for the dead-letter exchange: `x-death` updated,
/// `expiration` removed, routed with the dead-letter routing key.
fn dead_lettered(
    m: &Message,
    queue: &str,
    reason: DeathReason,
    dlx: &str,
    dl_routing_key: Option<&str>,
) -> Option<Message> {
    let props = m.content.properties()?;
    let mut headers = props.headers().clone().unwrap_or_default();
    let mut deaths = deaths_of(&headers);
    let same = |d: &AMQPValue| match d {
        AMQPValue::FieldTable(t) => {
            text(t.inner().get("queue")).as_deref() == Some(queue)
                && text(t.inner().get("reason")).as_deref() == Some(reason.as_str())
        }
        _ => false,
    };
    let entry = match deaths.iter().position(same) {
        Some(i) => {
            let AMQPValue::FieldTable(mut t) = deaths.remove(i) else {
                return None;
            };
            let count = match t.inner().get("count") {
                Some(v) => crate::queue::args::integer(v).unwrap_or(0) as i64,
                None => 0,
            };
            t.insert(
                "count".into(),
                AMQPValue::LongLongInt(count.saturating_add(1)),
            );
            t
        }
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut t = FieldTable::default();
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            t.insert("reason".into(), long_string(reason.as_str()));
            t.insert("queue".into(), long_string(queue));
            t.insert("time".into(), AMQPValue::Timestamp(now));
            t.insert("exchange".into(), long_string(m.exchange()));
            let mut keys = FieldArray::default();
            keys.push(long_string(m.routing_key()));
            // CC keys are listed; BCC keys are not (they were removed from the headers).
            if let Some(h) = m.content.headers() {
                if let Some(AMQPValue::FieldArray(cc)) = h.inner().get("CC") {
                    for k in cc.as_slice() {
                        keys.push(k.clone());
                    }
                }
            }
            t.insert("routing-keys".into(), AMQPValue::FieldArray(keys));
            if let Some(exp) = props.expiration() {
                t.insert("original-expiration".into(), long_string(exp.as_str()));
            }
            t
        }
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(deaths)),
    );
    if !headers.contains_key("x-first-death-reason") {
        headers.insert("x-first-death-reason".into(), long_string(reason.as_str()));
        headers.insert("x-first-death-queue".into(), long_string(queue));
        headers.insert("x-first-death-exchange".into(), long_string(m.exchange()));
    }
    let props = without_expiration(&props);
    let mut raw = Vec::with_capacity(m.content.header().len() + 256);
    raw.extend_from_slice(&60u16.to_be_bytes());
    raw.extend_from_slice(&0u16.to_be_bytes());
    raw.extend_from_slice(&(m.content.body().len() as u64).to_be_bytes());
    let start = raw.len();
    let (mut raw, _) = gen_properties(&props)(WriteContext::from(raw))
        .ok()?
        .into_inner();
    // Splice in the headers table, encoded so that x-death entries keep RabbitMQ's
    // field order (amq-protocol would sort them).
    let mut at = start + 2;
    for present in [
        props.content_type().is_some(),
        props.content_encoding().is_some(),
    ] {
        if present {
            at += 1 + *raw.get(at)? as usize;
        }
    }
    let table = encode_headers(&headers)?;
    raw.splice(at..at, table);
    raw[start] |= 0x20; // the headers flag (bit 13 of the property flags)
    let header = ContentHeader::parse(Bytes::from(raw)).ok()?;
    let address = Address::new(
        dlx.to_owned(),
        dl_routing_key.unwrap_or(m.routing_key()).to_owned(),
        // With its own routing key the message loses CC/BCC; otherwise it keeps them.
        if dl_routing_key.is_some() {
            Vec::new()
        } else {
            m.cc().to_vec()
        },
    );
    Some(Message::new(address, header, m.content.body_bytes()))
}

/// RabbitMQ's field order inside an `x-death` entry.
const DEATH_FIELDS: &[&str] = &[
    "count",
    "reason",
    "queue",
    "time",
    "exchange",
    "routing-keys",
    "original-expiration",
];

/// Encode a headers table (length-prefixed). Keys are in sorted order, as RabbitMQ
/// sorts headers it rewrites; `x-death` entries keep RabbitMQ's own field order.
fn encode_headers(headers: &FieldTable) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    for (key, value) in headers.inner() {
        put_short_str(&mut body, key.as_str());
        match (key.as_str(), value) {
            ("x-death", AMQPValue::FieldArray(deaths)) => {
                let mut arr = Vec::new();
                for d in deaths.as_slice() {
                    match d {
                        AMQPValue::FieldTable(t) => {
                            arr.push(b'F');
                            arr.extend_from_slice(&encode_death(t)?);
                        }
                        other => arr.extend_from_slice(&encode_value(other)?),
                    }
                }
                body.push(b'A');
                body.extend_from_slice(&(arr.len() as u32).to_be_bytes());
                body.extend_from_slice(&arr);
            }
            _ => body.extend_from_slice(&encode_value(value)?),
        }
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

fn encode_death(t: &FieldTable) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let known = DEATH_FIELDS
        .iter()
        .filter_map(|k| t.inner().get(*k).map(|v| (*k, v)));
    let others = t
        .inner()
        .iter()
        .filter(|(k, _)| !DEATH_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v));
    for (k, v) in known.chain(others) {
        put_short_str(&mut body, k);
        body.extend_from_slice(&encode_value(v)?);
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    Some(out)
}

fn encode_value(v: &AMQPValue) -> Option<Vec<u8>> {
    let (bytes, _) = gen_value(v)(WriteContext::from(Vec::new()))
        .ok()?
        .into_inner();
    Some(bytes)
}

fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A copy of the properties without `expiration` (amq-protocol has no unsetter).
fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut n = AMQPProperties::default();
    let short = |s: &ShortString| s.clone();
    if let Some(v) = p.content_type() {
        n = n.with_content_type(short(v));
    }
    if let Some(v) = p.content_encoding() {
        n = n.with_content_encoding(short(v));
    }
    if let Some(v) = p.delivery_mode() {
        n = n.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        n = n.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        n = n.with_correlation_id(short(v));
    }
    if let Some(v) = p.reply_to() {
        n = n.with_reply_to(short(v));
    }
    if let Some(v) = p.message_id() {
        n = n.with_message_id(short(v));
    }
    if let Some(v) = p.timestamp() {
        n = n.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        n = n.with_type(short(v));
    }
    if let Some(v) = p.user_id() {
        n = n.with_user_id(short(v));
    }
    if let Some(v) = p.app_id() {
        n = n.with_app_id(short(v));
    }
    if let Some(v) = p.cluster_id() {
        n = n.with_cluster_id(short(v));
    }
    n
}
