//! Messages read back from the store.

use std::sync::Arc;

use warren_codec::ContentHeader;
use warren_store::MessageRecord;

use crate::message::{Address, Message};

/// A message read back from the store (`None`: its content header is
/// malformed). Consecutive messages with the same address share it (`last`),
/// as they did before they were written.
pub(crate) fn message_from_record(
    r: MessageRecord,
    last: &mut Option<Arc<Address>>,
) -> Option<Message> {
    let header = ContentHeader::parse(r.header).ok()?;
    let address = match last {
        Some(a) if a.exchange == r.exchange && a.routing_key == r.routing_key && a.cc == r.cc => {
            a.clone()
        }
        _ => {
            let a = Address::new(r.exchange, r.routing_key, r.cc);
            *last = Some(a.clone());
            a
        }
    };
    Some(Message::new(address, header, r.body))
}
