//! A published message, shared (`Arc`) by every queue it was routed to.

use amq_protocol::types::AMQPValue;
use bytes::Bytes;
use warren_codec::ContentHeader;

#[derive(Debug)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    /// Extra routing keys from the `CC` and `BCC` headers (sender-selected distribution).
    pub cc: Vec<String>,
    /// The publisher's content header, passed through byte for byte.
    pub header: ContentHeader,
    /// The body: one allocation, shared by every queue and delivery.
    pub body: Bytes,
}

impl Message {
    /// Rough bytes this message costs a connection's outbound buffer.
    pub fn wire_size(&self) -> usize {
        self.body.len() + self.header.raw.len() + self.routing_key.len() + self.exchange.len() + 64
    }

    /// The routing key, then any `CC`/`BCC` keys.
    pub fn routing_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.routing_key.as_str()).chain(self.cc.iter().map(String::as_str))
    }
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
