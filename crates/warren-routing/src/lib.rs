//! Warren's exchange engine: the binding tables of the four built-in AMQP 0-9-1 exchange
//! types (direct, fanout, topic, headers) and the routing decision for a published message.
//!
//! This crate is deliberately pure: no I/O, no async, no locking. The broker owns one
//! [`BindingTable`] per exchange, keeps it behind whatever synchronisation it likes and calls
//! [`BindingTable::route`] on the publish path. RabbitMQ is the behavioural oracle; where its
//! semantics are subtle the module docs say which RabbitMQ source the behaviour follows.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod direct;
pub mod erl_fmt;
mod fanout;
mod headers;
mod indexed;
mod table;
mod topic;

use std::fmt;

pub use table::BindingTable;

/// The four built-in exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// Routes on exact routing-key equality.
    Direct,
    /// Routes to every bound destination, ignoring the routing key.
    Fanout,
    /// Routes on `.`-separated routing-key patterns with `*` and `#` wildcards.
    Topic,
    /// Routes on message header values, ignoring the routing key.
    Headers,
}

impl ExchangeKind {
    /// Parses the type name used in `exchange.declare`. Matching is exact and case-sensitive,
    /// as in RabbitMQ (`"Direct"` is an unknown exchange type there too).
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }

    /// The type name as it appears on the wire and in management listings.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

impl fmt::Display for ExchangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error from validating binding arguments.
///
/// `Display` is the reply-text detail RabbitMQ uses; the caller adds the
/// `"PRECONDITION_FAILED - "` prefix and closes the channel with 406.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingError(pub String);

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BindingError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips() {
        for kind in [
            ExchangeKind::Direct,
            ExchangeKind::Fanout,
            ExchangeKind::Topic,
            ExchangeKind::Headers,
        ] {
            assert_eq!(ExchangeKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn kind_parse_is_exact() {
        for s in [
            "",
            "Direct",
            "TOPIC",
            "x-delayed-message",
            " fanout",
            "headers ",
        ] {
            assert_eq!(ExchangeKind::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn binding_error_displays_its_text() {
        let e = BindingError("boom".into());
        assert_eq!(e.to_string(), "boom");
        let _: &dyn std::error::Error = &e;
    }
}
