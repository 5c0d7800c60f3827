//! A published message, shared (`Arc`) by every queue it was routed to.

use std::sync::Arc;

use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_value;
use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use warren_codec::{Content, ContentHeader};

#[derive(Debug, Clone)]
pub struct Message {
    /// Where it was published to; shared with the connection's other messages
    /// to the same exchange and routing key (see [`AddressCache`]).
    pub address: Arc<Address>,
    /// The publisher's content header, passed through byte for byte, and the
    /// body: small ones copied together into one allocation of their own, so a
    /// queued message does not keep the socket read buffer alive. The message
    /// is shared (`Arc`) by every queue and delivery, never copied per queue.
    pub content: Content,
}

/// The exchange and routing key a message was published with, and the extra
/// routing keys of its `CC` and `BCC` headers (sender-selected distribution).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Address {
    pub exchange: String,
    pub routing_key: String,
    pub cc: Vec<String>,
}

impl Address {
    pub fn new(exchange: String, routing_key: String, cc: Vec<String>) -> Arc<Address> {
        Arc::new(Address {
            exchange,
            routing_key,
            cc,
        })
    }
}

impl Message {
    pub fn new(address: Arc<Address>, header: ContentHeader, body: Bytes) -> Message {
        Message {
            address,
            content: Content::new(header, body),
        }
    }

    pub fn exchange(&self) -> &str {
        &self.address.exchange
    }

    pub fn routing_key(&self) -> &str {
        &self.address.routing_key
    }

    pub fn cc(&self) -> &[String] {
        &self.address.cc
    }

    /// Rough bytes this message costs a connection's outbound buffer.
    pub fn wire_size(&self) -> usize {
        self.content.body().len()
            + self.content.header().len()
            + self.routing_key().len()
            + self.exchange().len()
            + 64
    }

    /// The content header with one header field set (replaced if present);
    /// the other properties and header values keep the publisher's bytes.
    /// `None` if the header cannot be decoded or encoded.
    pub fn header_with(&self, key: &str, value: AMQPValue) -> Option<Vec<u8>> {
        // As RabbitMQ's rabbit_basic:add_header: the top level is sorted by
        // key; every value keeps the bytes (and nested field order) it came with.
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = match self.content.headers_table() {
            Some(t) => warren_codec::raw_table::entries(t)?
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            None => Vec::new(),
        };
        let (value, _) = gen_value(&value)(WriteContext::from(Vec::new()))
            .ok()?
            .into_inner();
        warren_codec::raw_table::set_value(&mut headers, key.as_bytes(), value);
        self.content
            .header_with_table(&warren_codec::raw_table::encode(&headers), false)
    }

    /// The routing key, then any `CC`/`BCC` keys.
    pub fn routing_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.routing_key()).chain(self.cc().iter().map(String::as_str))
    }
}

/// A connection's recently used addresses, so that a backlog of messages
/// published with the same exchange and routing key shares one copy of them
/// instead of holding its own. Direct-mapped and small: a publisher cycling
/// through more keys than it has slots only loses the sharing.
#[derive(Debug, Default)]
pub struct AddressCache {
    slots: Vec<Option<Arc<Address>>>,
}

impl AddressCache {
    const SLOTS: usize = 32;

    /// The address for `exchange` and `routing_key` (messages with CC/BCC keys
    /// get their own).
    pub fn get(&mut self, exchange: &str, routing_key: &str, cc: Vec<String>) -> Arc<Address> {
        if !cc.is_empty() {
            return Address::new(exchange.to_owned(), routing_key.to_owned(), cc);
        }
        if self.slots.is_empty() {
            self.slots.resize(AddressCache::SLOTS, None);
        }
        let slot = &mut self.slots[slot_of(exchange, routing_key)];
        match slot {
            Some(a) if a.exchange == exchange && a.routing_key == routing_key => a.clone(),
            _ => {
                let a = Address::new(exchange.to_owned(), routing_key.to_owned(), Vec::new());
                *slot = Some(a.clone());
                a
            }
        }
    }
}

/// FNV-1a over the exchange and the key: cheap for short names.
fn slot_of(exchange: &str, routing_key: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in exchange
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(routing_key.as_bytes())
    {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h as usize % AddressCache::SLOTS
}

fn keys_of(v: Option<&AMQPValue>) -> Vec<String> {
    match v {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|k| match k {
                AMQPValue::LongString(s) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Sender-selected distribution: the `CC` and `BCC` header keys, and the header
/// to deliver (without `BCC`, which RabbitMQ removes before delivery).
pub fn sender_selected(header: ContentHeader) -> (ContentHeader, Vec<String>) {
    // Cheap check on the raw bytes first: most messages have neither key.
    if !header.has_header("CC") && !header.has_header("BCC") {
        return (header, Vec::new());
    }
    let Some(props) = header.properties() else {
        return (header, Vec::new());
    };
    let Some(headers) = props.headers() else {
        return (header, Vec::new());
    };
    let mut keys = keys_of(headers.inner().get("CC"));
    let bcc = keys_of(headers.inner().get("BCC"));
    if !headers.contains_key("BCC") {
        return (header, keys);
    }
    keys.extend(bcc);
    let stripped = header.without_header("BCC");
    (stripped.unwrap_or(header), keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_cache_shares_equal_addresses_only() {
        let mut cache = AddressCache::default();
        let a = cache.get("", "q1", Vec::new());
        let b = cache.get("", "q1", Vec::new());
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.get("x", "q1", Vec::new());
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((c.exchange.as_str(), c.routing_key.as_str()), ("x", "q1"));
        // CC keys make a message's address its own.
        let d = cache.get("", "q1", vec!["k".into()]);
        assert!(!Arc::ptr_eq(&a, &d));
        assert_eq!(d.cc, vec!["k".to_string()]);
        // Many keys: every answer is still right, whatever was evicted.
        for i in 0..200 {
            let k = format!("key-{i}");
            assert_eq!(cache.get("", &k, Vec::new()).routing_key, k);
        }
        assert_eq!(cache.get("", "q1", Vec::new()).routing_key, "q1");
    }
}
