//! Durable definitions: what the broker writes to the store about vhosts, users,
//! permissions, exchanges, queues and bindings, and the keys it files them under. Messages are
//! written by the queues themselves (`queue/mod.rs`).
//!
//! RabbitMQ's rules: durable exchanges and durable, non-exclusive queues are
//! kept; a binding is kept when both its ends are durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};
use warren_store::{Op, Store};

use crate::message::Message;

/// One durable definition (stored as JSON: small, rare, readable when debugging).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetaRecord {
    /// Written once, when the default vhost and user were created: a store
    /// that has it never gets them again (an operator may have deleted them).
    Defaults,
    Vhost {
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        tags: Vec<String>,
    },
    User {
        name: String,
        password_hash: String,
        hashing_algorithm: String,
        tags: Vec<String>,
    },
    Permission {
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    Exchange {
        vhost: String,
        name: String,
        #[serde(rename = "type")]
        exchange_type: String,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
        /// An `x-delayed-message` exchange: the store id of its held messages.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store_id: Option<u64>,
    },
    Queue {
        vhost: String,
        name: String,
        id: u64,
        auto_delete: bool,
        arguments: FieldTable,
    },
    Binding {
        vhost: String,
        source: String,
        destination: String,
        destination_is_queue: bool,
        routing_key: String,
        arguments: FieldTable,
    },
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

impl MetaRecord {
    /// The store key: unique per exchange, queue, or binding identity.
    pub fn key(&self) -> Vec<u8> {
        match self {
            MetaRecord::Defaults => b"defaults".to_vec(),
            MetaRecord::Vhost { name, .. } => key(&[b"v", name.as_bytes()]),
            MetaRecord::User { name, .. } => key(&[b"u", name.as_bytes()]),
            MetaRecord::Permission { vhost, user, .. } => {
                key(&[b"p", vhost.as_bytes(), user.as_bytes()])
            }
            MetaRecord::Exchange { vhost, name, .. } => {
                key(&[b"x", vhost.as_bytes(), name.as_bytes()])
            }
            MetaRecord::Queue { vhost, name, .. } => {
                key(&[b"q", vhost.as_bytes(), name.as_bytes()])
            }
            MetaRecord::Binding {
                vhost,
                source,
                destination,
                destination_is_queue,
                routing_key,
                arguments,
            } => {
                let args = serde_json::to_vec(arguments).unwrap_or_default();
                let dest_kind: &[u8] = if *destination_is_queue { b"q" } else { b"x" };
                key(&[
                    b"b",
                    vhost.as_bytes(),
                    source.as_bytes(),
                    dest_kind,
                    destination.as_bytes(),
                    routing_key.as_bytes(),
                    &args,
                ])
            }
        }
    }
}

/// The broker's handle on the store.
#[derive(Debug)]
pub struct Persistence {
    pub store: Arc<Store>,
    next_queue_id: AtomicU64,
    streams_dir: Option<std::path::PathBuf>,
}

impl Persistence {
    pub fn new(
        store: Arc<Store>,
        next_queue_id: u64,
        streams_dir: Option<std::path::PathBuf>,
    ) -> Persistence {
        Persistence {
            store,
            next_queue_id: AtomicU64::new(next_queue_id),
            streams_dir,
        }
    }

    /// The directory of the stream with store id `id`.
    pub fn stream_dir(&self, id: u64) -> Option<std::path::PathBuf> {
        self.streams_dir.as_ref().map(|d| d.join(id.to_string()))
    }

    pub fn new_queue_id(&self) -> u64 {
        self.next_queue_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn put(&self, record: &MetaRecord) {
        match serde_json::to_vec(record) {
            Ok(value) => self.store.submit(Op::PutMeta {
                key: record.key(),
                value,
            }),
            Err(e) => tracing::error!("cannot encode a definition for the store: {e}"),
        }
    }

    pub fn delete(&self, record: &MetaRecord) {
        self.store.submit(Op::DelMeta { key: record.key() });
    }
}

impl warren_store::committer::Persistable for Message {
    fn encode(&self, out: &mut Vec<u8>) {
        warren_store::layout::encode_record(
            out,
            self.exchange(),
            self.routing_key(),
            self.cc(),
            self.content.header(),
            self.content.body(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn records_round_trip_through_json() {
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(5));
        let r = MetaRecord::Queue {
            vhost: "/".into(),
            name: "q".into(),
            id: 3,
            auto_delete: false,
            arguments: args,
        };
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<MetaRecord>(&json).unwrap(), r);
        assert_ne!(
            r.key(),
            MetaRecord::Exchange {
                vhost: "/".into(),
                name: "q".into(),
                exchange_type: "direct".into(),
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
                store_id: None,
            }
            .key()
        );
    }
}
