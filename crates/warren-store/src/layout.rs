//! How broker data maps onto keys.
//!
//! | key | value |
//! |---|---|
//! | `V` | format version |
//! | `M` + metadata key (chosen by the broker) | metadata record (opaque here) |
//! | `m` + queue id (u64 BE) + seq (u64 BE) | a message ([`MessageRecord`]); the id may also be a delayed exchange's, whose seq starts with the due time |
//! | `d` + queue id (u64 BE) | highest seq delivered to a consumer (u64 BE) |
//! | `s` + queue id (u64 BE) + seq (u64 BE) | a transient message paged out of memory ([`MessageRecord`]); wiped at start-up |
//!
//! Big-endian ids keep a queue's messages adjacent and in order, so recovery
//! is one prefix scan per queue.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::kv::Kv;
use crate::StoreError;

pub const VERSION_KEY: &[u8] = b"V";
pub const VERSION: &[u8] = b"1";
pub const META: u8 = b'M';
pub const MESSAGE: u8 = b'm';
pub const DELIVERED: u8 = b'd';
pub const SPILLED: u8 = b's';

pub fn meta_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(META);
    k.extend_from_slice(key);
    k
}

pub fn message_key(queue: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(MESSAGE);
    k.extend_from_slice(&queue.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn spilled_key(queue: u64, seq: u64) -> Vec<u8> {
    let mut k = message_key(queue, seq);
    k[0] = SPILLED;
    k
}

pub fn spilled_prefix(queue: u64) -> Vec<u8> {
    let mut k = queue_prefix(queue);
    k[0] = SPILLED;
    k
}

pub fn queue_prefix(queue: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(MESSAGE);
    k.extend_from_slice(&queue.to_be_bytes());
    k
}

pub fn delivered_key(queue: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(DELIVERED);
    k.extend_from_slice(&queue.to_be_bytes());
    k
}

/// A stored message: what is needed to deliver it again, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub exchange: String,
    pub routing_key: String,
    pub cc: Vec<String>,
    /// The content header frame payload as the publisher sent it.
    pub header: Bytes,
    pub body: Bytes,
}

/// Encode a message record: short strings, a cc count, then length-prefixed
/// header and the body.
pub fn encode_record(
    out: &mut Vec<u8>,
    exchange: &str,
    routing_key: &str,
    cc: &[String],
    header: &[u8],
    body: &[u8],
) {
    out.reserve(16 + exchange.len() + routing_key.len() + header.len() + body.len());
    put_short(out, exchange);
    put_short(out, routing_key);
    out.extend_from_slice(&(cc.len().min(u16::MAX as usize) as u16).to_be_bytes());
    for k in cc.iter().take(u16::MAX as usize) {
        put_short(out, k);
    }
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
}

fn put_short(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn short(&mut self) -> Option<String> {
        let n = *self.take(1)?.first()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// Decode a record; `None` if it is truncated or malformed.
pub fn decode_record(data: &Bytes) -> Option<MessageRecord> {
    let mut r = Reader { data, pos: 0 };
    let exchange = r.short()?;
    let routing_key = r.short()?;
    let n = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
    let mut cc = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        cc.push(r.short()?);
    }
    let hlen = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
    let start = r.pos;
    r.take(hlen)?;
    let header = data.slice(start..start + hlen);
    let body = data.slice(r.pos..);
    Some(MessageRecord {
        exchange,
        routing_key,
        cc,
        header,
        body,
    })
}

/// Definitions and delivery marks read back at start-up (messages are streamed
/// separately, so that a long backlog is never all in memory at once).
#[derive(Debug, Default)]
pub struct Recovered {
    /// Metadata records, keyed by the broker's metadata key.
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Per queue id: messages up to this seq may have been delivered before the stop.
    pub delivered: BTreeMap<u64, u64>,
    /// Queue ids that have messages stored.
    pub queues_with_messages: Vec<u64>,
}

fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Read definitions and delivery marks. Any malformed record stops start-up
/// with an error naming what is wrong, rather than dropping data silently.
pub fn recover(kv: &dyn Kv) -> Result<Recovered, StoreError> {
    let mut out = Recovered::default();
    let mut bad: Option<String> = None;
    if let Some(v) = kv.get(VERSION_KEY)? {
        if v.as_slice() != VERSION {
            return Err(StoreError::Read(format!(
                "unsupported store format version {:?}; this Warren reads version {:?}",
                String::from_utf8_lossy(&v),
                String::from_utf8_lossy(VERSION)
            )));
        }
    }
    kv.scan(&[META], &mut |k, v| {
        out.meta.push((k[1..].to_vec(), v.to_vec()));
        true
    })?;
    kv.scan(&[DELIVERED], &mut |k, v| {
        match (be_u64(&k[1..]), be_u64(v)) {
            (Some(q), Some(upto)) => {
                out.delivered.insert(q, upto);
            }
            _ => bad = Some(format!("malformed delivery mark under key {k:?}")),
        }
        bad.is_none()
    })?;
    // Find the queues that hold messages by seeking from one queue's key
    // range to the next (one seek per queue; no message is read).
    let mut from = vec![MESSAGE];
    loop {
        let mut found = None;
        kv.scan_from(&from, &mut |k, _| {
            if k.first() == Some(&MESSAGE) {
                found = (k.len() == 17).then(|| be_u64(&k[1..9])).flatten();
                if found.is_none() {
                    bad = Some(format!("malformed message key {k:?}"));
                }
            }
            false
        })?;
        let Some(q) = found else { break };
        out.queues_with_messages.push(q);
        match q.checked_add(1) {
            Some(n) => from = queue_prefix(n),
            None => break,
        }
    }
    match bad {
        Some(detail) => Err(StoreError::Read(detail)),
        None => Ok(out),
    }
}

/// Stream one queue's messages in order: `f(seq, record bytes)`; stop when `f` returns false.
pub fn scan_queue(
    kv: &dyn Kv,
    queue: u64,
    f: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<(), StoreError> {
    let mut bad = None;
    kv.scan(&queue_prefix(queue), &mut |k, v| match (k.len() == 17)
        .then(|| be_u64(&k[9..17]))
        .flatten()
    {
        Some(seq) => f(seq, v),
        None => {
            bad = Some(format!("malformed message key {k:?}"));
            false
        }
    })?;
    match bad {
        Some(d) => Err(StoreError::Read(d)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncation_is_detected() {
        let mut v = Vec::new();
        encode_record(
            &mut v,
            "ex",
            "rk",
            &["a".into(), "b".into()],
            b"\x00\x3c",
            b"body",
        );
        let b = Bytes::from(v);
        let r = decode_record(&b).unwrap();
        assert_eq!(
            (
                r.exchange.as_str(),
                r.routing_key.as_str(),
                r.cc.len(),
                &r.header[..],
                &r.body[..]
            ),
            ("ex", "rk", 2, &b"\x00\x3c"[..], &b"body"[..])
        );
        for cut in 0..b.len() - 4 {
            assert!(decode_record(&b.slice(..cut)).is_none(), "cut {cut}");
        }
    }

    #[test]
    fn keys_sort_by_queue_then_seq() {
        assert!(message_key(1, 300) < message_key(2, 0));
        assert!(message_key(1, 2) < message_key(1, 256));
        assert!(message_key(1, 5).starts_with(&queue_prefix(1)));
    }
}
