//! A published message, shared (`Arc`) by every queue it was routed to.

use bytes::Bytes;
use warren_codec::ContentHeader;

#[derive(Debug)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
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
}
