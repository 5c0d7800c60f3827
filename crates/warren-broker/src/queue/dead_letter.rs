//! Dead-lettering: messages rejected without requeue, expired, or dropped by a
//! length limit are republished to the queue's `x-dead-letter-exchange` with an
//! `x-death` header, as RabbitMQ 3.x does.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::Bytes;
use warren_codec::{raw_table, ContentHeader};

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

/// An `x-death` element as it is on the wire: a table as its fields (key,
/// value with its type octet) in their order, anything else as its bytes.
enum DeathEntry {
    Table(Vec<(Vec<u8>, Vec<u8>)>),
    Other(Vec<u8>),
}

impl DeathEntry {
    fn field(&self, key: &str) -> Option<AMQPValue> {
        let DeathEntry::Table(fields) = self else {
            return None;
        };
        let (_, v) = fields.iter().find(|(k, _)| k == key.as_bytes())?;
        amq_protocol::types::parsing::parse_value(&v[..])
            .ok()
            .map(|(_, v)| v)
    }

    /// Its (queue, reason), what RabbitMQ groups and matches deaths by.
    fn key(&self) -> Option<(Option<String>, Option<String>)> {
        match self {
            DeathEntry::Table(_) => Some((
                text(self.field("queue").as_ref()),
                text(self.field("reason").as_ref()),
            )),
            DeathEntry::Other(_) => None,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            DeathEntry::Table(fields) => {
                let mut out = vec![b'F'];
                out.extend_from_slice(&raw_table::encode(fields));
                out
            }
            DeathEntry::Other(raw) => raw.clone(),
        }
    }
}

/// A `long` (signed 64-bit) field value, the type RabbitMQ gives `count`.
fn long(n: i64) -> Vec<u8> {
    let mut v = vec![b'l'];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

/// RabbitMQ 3.10.8's `group_by_queue_and_reason`, run on an `x-death` of two
/// or more entries before each update: one entry per (queue, reason) -- the
/// first, given a `count` (the number of duplicates) if it has none -- in
/// the REVERSE of their order (a fold that prepends). So with three or more
/// deaths the array is no longer newest first: after deaths in queues 4, 3,
/// 2, 1 it reads 1, 3, 4, 2 (Celery's delayed delivery shows it). Entries
/// that are not tables (RabbitMQ fails on those) are kept, in the same
/// reversed order.
fn group_by_queue_and_reason(entries: Vec<DeathEntry>) -> Vec<DeathEntry> {
    if entries.len() < 2 {
        return entries;
    }
    let keys: Vec<_> = entries.iter().map(DeathEntry::key).collect();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let Some(key) = key else {
            out.push(i);
            continue;
        };
        if !seen.contains(key) {
            seen.push(key.clone());
            out.push(i);
        }
    }
    let mut entries: Vec<Option<DeathEntry>> = entries.into_iter().map(Some).collect();
    out.iter()
        .rev()
        .filter_map(|&i| {
            let mut e = entries[i].take()?;
            if let (Some(key), DeathEntry::Table(fields)) = (&keys[i], &mut e) {
                if !fields.iter().any(|(k, _)| k == b"count") {
                    let n = keys.iter().filter(|k| k.as_ref() == Some(key)).count();
                    fields.insert(0, (b"count".to_vec(), long(n as i64)));
                }
            }
            Some(e)
        })
        .collect()
}

/// The message as it leaves for the dead-letter exchange: `x-death` updated,
/// `expiration` removed, routed with the dead-letter routing key (and then
/// without its `CC` header). As RabbitMQ 3.10.8 (`rabbit_dead_letter:make_msg`)
/// does it: the top level of the headers is sorted by key, everything else
/// -- nested tables, the other `x-death` entries -- keeps the bytes and field
/// order it arrived with; a new first death is written in RabbitMQ's field
/// order (count, reason, queue, time, exchange, routing-keys,
/// original-expiration), an entry added to or counted again in an existing
/// `x-death` with its fields sorted by key.
fn dead_lettered(
    m: &Message,
    queue: &str,
    reason: DeathReason,
    dlx: &str,
    dl_routing_key: Option<&str>,
) -> Option<Message> {
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = match m.content.headers_table() {
        Some(t) => raw_table::entries(t)?
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
        None => Vec::new(),
    };
    let reason = reason.as_str();
    // The death, in the order RabbitMQ builds it.
    let mut info: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"reason".to_vec(), raw_table::long_string(reason)),
        (b"queue".to_vec(), raw_table::long_string(queue)),
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut time = vec![b'T'];
    time.extend_from_slice(&now.to_be_bytes());
    info.push((b"time".to_vec(), time));
    info.push((b"exchange".to_vec(), raw_table::long_string(m.exchange())));
    // The routing key, then the CC keys that are long strings (BCC keys were
    // removed from the headers at publish).
    let mut keys = vec![raw_table::long_string(m.routing_key())];
    if let Some(cc) = headers.iter().find(|(k, _)| k == b"CC") {
        for e in raw_table::array_elements(&cc.1).unwrap_or_default() {
            if e.first() == Some(&b'S') {
                keys.push(e.to_vec());
            }
        }
    }
    info.push((b"routing-keys".to_vec(), raw_table::encode_array(&keys)));
    if let Some(exp) = m.content.expiration() {
        info.push((b"original-expiration".to_vec(), raw_table::long_string(exp)));
    }
    let first = |info: Vec<(Vec<u8>, Vec<u8>)>| {
        let mut t = vec![(b"count".to_vec(), long(1))];
        t.extend(info);
        t
    };
    let existing = headers
        .iter()
        .find(|(k, _)| k == b"x-death")
        .map(|(_, v)| raw_table::array_elements(v));
    let deaths = match existing {
        // The first death: x-first-death-* set, the entry in creation order.
        None => {
            for (k, v) in [
                ("x-first-death-reason", reason),
                ("x-first-death-queue", queue),
                ("x-first-death-exchange", m.exchange()),
            ] {
                raw_table::set_value(&mut headers, k.as_bytes(), raw_table::long_string(v));
            }
            vec![DeathEntry::Table(first(info))]
        }
        // Not an array: RabbitMQ starts it again (and leaves x-first-death-* alone).
        Some(None) => vec![DeathEntry::Table(first(info))],
        Some(Some(elements)) => {
            let entries = elements
                .into_iter()
                .map(
                    |e| match raw_table::fields(e.get(5..).unwrap_or_default()) {
                        Some(f) if e.first() == Some(&b'F') => DeathEntry::Table(
                            f.into_iter()
                                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                                .collect(),
                        ),
                        _ => DeathEntry::Other(e.to_vec()),
                    },
                )
                .collect();
            let this = Some((Some(queue.to_owned()), Some(reason.to_owned())));
            let (matched, others): (Vec<_>, Vec<_>) = group_by_queue_and_reason(entries)
                .into_iter()
                .partition(|e| e.key() == this);
            let mut entry = match matched.into_iter().next() {
                Some(e @ DeathEntry::Table(_)) => {
                    // A count that is not an integer counts as 0 (RabbitMQ fails on it).
                    let count = e
                        .field("count")
                        .and_then(|v| crate::queue::args::integer(&v))
                        .map_or(0, |n| n.clamp(i64::MIN as i128, i64::MAX as i128) as i64);
                    let DeathEntry::Table(mut fields) = e else {
                        unreachable!()
                    };
                    let count = long(count.saturating_add(1));
                    match fields.iter().position(|(k, _)| k == b"count") {
                        Some(at) => fields[at].1 = count,
                        None => fields.insert(0, (b"count".to_vec(), count)),
                    }
                    fields
                }
                _ => first(info),
            };
            entry.sort_by(|a, b| a.0.cmp(&b.0));
            std::iter::once(DeathEntry::Table(entry))
                .chain(others)
                .collect()
        }
    };
    let encoded: Vec<Vec<u8>> = deaths.iter().map(DeathEntry::encode).collect();
    raw_table::set_value(&mut headers, b"x-death", raw_table::encode_array(&encoded));
    if dl_routing_key.is_some() {
        // lists:keydelete: the first CC entry goes.
        if let Some(at) = headers.iter().position(|(k, _)| k == b"CC") {
            headers.remove(at);
        }
    }
    let raw = m
        .content
        .header_with_table(&raw_table::encode(&headers), true)?;
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
