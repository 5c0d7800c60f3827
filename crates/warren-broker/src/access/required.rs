//! What each declare and bind needs from a user's permissions, in
//! `rabbit_channel`'s order. The AMQP channel and the HTTP management API
//! both check these lists, so a declare is allowed or refused alike on either.

use amq_protocol::types::{AMQPValue, FieldTable};

use super::{Perm, Permissions, Resource};

/// One permission on one named resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub perm: Perm,
    pub kind: Resource,
    pub name: String,
}

impl Check {
    fn new(perm: Perm, kind: Resource, name: &str) -> Check {
        Check {
            perm,
            kind,
            name: name.to_owned(),
        }
    }
}

impl Permissions {
    /// Whether these permissions allow `check`.
    pub fn permits(&self, check: &Check) -> bool {
        self.allows(
            check.perm,
            super::permission::resource_name(check.kind, &check.name),
        )
    }
}

/// A (non-passive) queue.declare: configure on the queue; with a
/// dead-letter exchange also read on the queue and write on that exchange.
pub fn queue_declare(queue: &str, arguments: &FieldTable) -> Vec<Check> {
    let mut checks = vec![Check::new(Perm::Configure, Resource::Queue, queue)];
    if let Some(dlx) = string_argument(arguments, "x-dead-letter-exchange") {
        checks.push(Check::new(Perm::Read, Resource::Queue, queue));
        checks.push(Check::new(Perm::Write, Resource::Exchange, &dlx));
    }
    checks
}

/// A (non-passive) exchange.declare: configure on the exchange; with an
/// alternate exchange also read on the exchange and write on the alternate.
pub fn exchange_declare(exchange: &str, arguments: &FieldTable) -> Vec<Check> {
    let mut checks = vec![Check::new(Perm::Configure, Resource::Exchange, exchange)];
    if let Some(ae) = string_argument(arguments, "alternate-exchange") {
        checks.push(Check::new(Perm::Read, Resource::Exchange, exchange));
        checks.push(Check::new(Perm::Write, Resource::Exchange, &ae));
    }
    checks
}

/// queue.delete: configure on the queue.
pub fn queue_delete(queue: &str) -> Check {
    Check::new(Perm::Configure, Resource::Queue, queue)
}

/// queue.purge: read on the queue.
pub fn queue_purge(queue: &str) -> Check {
    Check::new(Perm::Read, Resource::Queue, queue)
}

/// exchange.delete: configure on the exchange.
pub fn exchange_delete(exchange: &str) -> Check {
    Check::new(Perm::Configure, Resource::Exchange, exchange)
}

/// Binding or unbinding: write on the destination, then read on the source.
/// The default exchange as a source is left to the vhost, which refuses it.
pub fn binding(kind: Resource, destination: &str, source: &str) -> Vec<Check> {
    let mut checks = vec![Check::new(Perm::Write, kind, destination)];
    if !source.is_empty() {
        checks.push(Check::new(Perm::Read, Resource::Exchange, source));
    }
    checks
}

fn string_argument(arguments: &FieldTable, key: &str) -> Option<String> {
    match arguments.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key: &str, value: &str) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert(key.into(), AMQPValue::LongString(value.into()));
        t
    }

    #[test]
    fn a_dead_letter_exchange_adds_read_on_the_queue_and_write_on_it() {
        assert_eq!(
            queue_declare("q", &args("x-dead-letter-exchange", "dlx")),
            [
                Check::new(Perm::Configure, Resource::Queue, "q"),
                Check::new(Perm::Read, Resource::Queue, "q"),
                Check::new(Perm::Write, Resource::Exchange, "dlx"),
            ]
        );
        assert_eq!(queue_declare("q", &FieldTable::default()).len(), 1);
    }

    #[test]
    fn an_alternate_exchange_adds_read_on_the_exchange_and_write_on_it() {
        assert_eq!(
            exchange_declare("x", &args("alternate-exchange", "ae")),
            [
                Check::new(Perm::Configure, Resource::Exchange, "x"),
                Check::new(Perm::Read, Resource::Exchange, "x"),
                Check::new(Perm::Write, Resource::Exchange, "ae"),
            ]
        );
    }

    #[test]
    fn binding_from_the_default_exchange_checks_only_the_destination() {
        assert_eq!(binding(Resource::Queue, "q", "").len(), 1);
        assert_eq!(binding(Resource::Exchange, "d", "s").len(), 2);
    }
}
