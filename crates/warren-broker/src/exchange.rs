//! Exchanges: a type, flags, arguments and the binding table routing reads.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use parking_lot::RwLock;
use warren_routing::{BindingTable, ExchangeKind};

use crate::delayed::{Delayed, DELAYED_TYPE};

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dest {
    Queue(Arc<str>),
    Exchange(Arc<str>),
}

#[derive(Debug)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// `alternate-exchange` argument: where unroutable messages go.
    pub alternate: Option<String>,
    pub bindings: RwLock<BindingTable<Dest>>,
    /// An `x-delayed-message` exchange (routing as `kind`, its
    /// `x-delayed-type`): the messages it holds.
    pub delayed: Option<Arc<Delayed>>,
}

impl Exchange {
    pub fn new(
        name: String,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Exchange {
        let alternate = match arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        Exchange {
            name,
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            alternate,
            bindings: RwLock::new(BindingTable::new(kind)),
            delayed: None,
        }
    }

    /// Make this an `x-delayed-message` exchange.
    pub fn with_delay(mut self, delayed: Delayed) -> Exchange {
        self.delayed = Some(Arc::new(delayed));
        self
    }

    /// The type clients declared: `x-delayed-message`, or the routing kind.
    pub fn type_name(&self) -> &'static str {
        match self.delayed {
            Some(_) => DELAYED_TYPE,
            None => self.kind.as_str(),
        }
    }

    /// The built-in exchanges every vhost has, RabbitMQ's set.
    pub fn builtins() -> Vec<Exchange> {
        [
            ("", ExchangeKind::Direct, false),
            ("amq.direct", ExchangeKind::Direct, false),
            ("amq.fanout", ExchangeKind::Fanout, false),
            ("amq.topic", ExchangeKind::Topic, false),
            ("amq.headers", ExchangeKind::Headers, false),
            ("amq.match", ExchangeKind::Headers, false),
            ("amq.rabbitmq.trace", ExchangeKind::Topic, true),
        ]
        .into_iter()
        .map(|(name, kind, internal)| {
            Exchange::new(
                name.to_owned(),
                kind,
                true,
                false,
                internal,
                FieldTable::default(),
            )
        })
        .collect()
    }

    pub fn is_default(&self) -> bool {
        self.name.is_empty()
    }
}
