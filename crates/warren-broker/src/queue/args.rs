//! Queue declare arguments: validation and the redeclare equivalence check, with
//! RabbitMQ 3.x's reply texts (which print values the way Erlang does).

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::AmqpError;

/// The queue type asked for with `x-queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    /// Accepted with classic semantics until quorum queues land.
    Quorum,
    /// Refused at declare time until streams land.
    Stream,
}

/// Overflow behaviour (`x-overflow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    #[default]
    DropHead,
    RejectPublish,
    RejectPublishDlx,
}

/// The arguments the broker understands, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArgs {
    pub queue_type: QueueType,
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub overflow: Overflow,
    pub single_active_consumer: bool,
}

/// The largest TTL RabbitMQ accepts (its timers' limit), in milliseconds.
const MAX_EXPIRY_TIMER: i128 = 4_294_967_295;

/// Keys compared when a queue is declared again (RabbitMQ's declare-args list).
const EQUIVALENCE_KEYS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-type",
    "x-single-active-consumer",
    "x-queue-version",
];

/// Erlang's name for a field-table value type, as RabbitMQ prints it.
pub use warren_routing::erl_fmt::type_name;

/// A value printed the way Erlang's `~p` prints RabbitMQ's decoded form.
pub fn erlang_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::LongString(s) => format!("<<\"{}\">>", String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => format!("<<\"{}\">>", s.as_str()),
        AMQPValue::Float(f) => format!("{f:?}"),
        AMQPValue::Double(f) => format!("{f:?}"),
        AMQPValue::Void => "undefined".into(),
        other => integer(other).map_or_else(|| format!("{other:?}"), |i| i.to_string()),
    }
}

/// Any integer-typed value, whatever its wire width.
pub fn integer(v: &AMQPValue) -> Option<i128> {
    Some(match *v {
        AMQPValue::ShortShortInt(i) => i as i128,
        AMQPValue::ShortShortUInt(i) => i as i128,
        AMQPValue::ShortInt(i) => i as i128,
        AMQPValue::ShortUInt(i) => i as i128,
        AMQPValue::LongInt(i) => i as i128,
        AMQPValue::LongUInt(i) => i as i128,
        AMQPValue::LongLongInt(i) => i as i128,
        AMQPValue::Timestamp(i) => i as i128,
        _ => return None,
    })
}

fn string(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

impl QueueArgs {
    /// Validate declare arguments. `what` is RabbitMQ's resource name, e.g. `queue 'q' in vhost '/'`.
    pub fn parse(table: &FieldTable, what: &str) -> Result<QueueArgs, AmqpError> {
        let mut a = QueueArgs::default();
        for (key, value) in table.inner() {
            let key = key.as_str();
            let invalid = |reason: String| {
                AmqpError::precondition_failed(format!("invalid arg '{key}' for {what}: {reason}"))
            };
            let unacceptable = || invalid(format!("{{unacceptable_type,{}}}", type_name(value)));
            let not_integer = || invalid(format!("\"expected integer, got {}\"", type_name(value)));
            let bad_type = || {
                AmqpError::precondition_failed(format!(
                    "invalid type '{}' for arg '{key}' in {what}",
                    type_name(value)
                ))
            };
            match key {
                "x-message-ttl" => {
                    let n = integer(value).ok_or_else(not_integer)?;
                    if n < 0 {
                        return Err(invalid(format!("{{value_negative,{n}}}")));
                    }
                    if n > MAX_EXPIRY_TIMER {
                        return Err(invalid(format!("{{value_too_big,{n}}}")));
                    }
                    a.message_ttl = Some(n as u64);
                }
                "x-expires" => {
                    let n = integer(value).ok_or_else(not_integer)?;
                    if n == 0 {
                        return Err(invalid(format!("{{value_zero,{n}}}")));
                    }
                    if n < 0 {
                        return Err(invalid(format!("{{value_negative,{n}}}")));
                    }
                    if n > MAX_EXPIRY_TIMER {
                        return Err(invalid(format!("{{value_too_big,{n}}}")));
                    }
                    a.expires = Some(n as u64);
                }
                "x-max-length" | "x-max-length-bytes" => {
                    let n = integer(value).ok_or_else(not_integer)?;
                    if n < 0 {
                        return Err(invalid(format!("{{value_negative,{n}}}")));
                    }
                    if key == "x-max-length" {
                        a.max_length = Some(n as u64);
                    } else {
                        a.max_length_bytes = Some(n as u64);
                    }
                }
                "x-max-priority" => {
                    let n = integer(value).ok_or_else(not_integer)?;
                    if n < 0 {
                        return Err(invalid(format!("{{value_negative,{n}}}")));
                    }
                    if n > 255 {
                        return Err(invalid(format!("{{max_value_exceeded,{n}}}")));
                    }
                    a.max_priority = Some(n as u8);
                }
                "x-dead-letter-exchange" => {
                    a.dead_letter_exchange = Some(string(value).ok_or_else(bad_type)?);
                }
                "x-dead-letter-routing-key" => {
                    a.dead_letter_routing_key = Some(string(value).ok_or_else(bad_type)?);
                }
                "x-overflow" => {
                    let s = string(value).ok_or_else(unacceptable)?;
                    a.overflow = match s.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        _ => return Err(invalid("invalid_overflow".to_string())),
                    };
                }
                "x-queue-mode" => {
                    let s = string(value).ok_or_else(unacceptable)?;
                    if s != "default" && s != "lazy" {
                        return Err(invalid(format!("\"unsupported queue mode '{s}'\"")));
                    }
                }
                "x-single-active-consumer" => match value {
                    AMQPValue::Boolean(b) => a.single_active_consumer = *b,
                    _ => return Err(unacceptable()),
                },
                "x-queue-type" => {
                    let s = string(value).ok_or_else(unacceptable)?;
                    a.queue_type = match s.as_str() {
                        "classic" => QueueType::Classic,
                        "quorum" => QueueType::Quorum,
                        "stream" => QueueType::Stream,
                        _ => return Err(invalid(format!("\"unsupported queue type '{s}'\""))),
                    };
                }
                _ => {}
            }
        }
        if a.queue_type == QueueType::Classic {
            for key in ["x-max-in-memory-length", "x-max-in-memory-bytes"] {
                if table.contains_key(key) {
                    return Err(AmqpError::precondition_failed(format!(
                        "invalid arg '{key}' for {what} of queue type rabbit_classic_queue"
                    )));
                }
            }
        }
        if a.dead_letter_routing_key.is_some() && a.dead_letter_exchange.is_none() {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'x-dead-letter-routing-key' for {what}: routing_key_but_no_dlx_defined"
            )));
        }
        Ok(a)
    }
}

/// Compare the arguments of a redeclare with those the queue was created with.
pub fn check_equivalent(
    current: &FieldTable,
    received: &FieldTable,
    what: &str,
) -> Result<(), AmqpError> {
    check_equivalent_keys(current, received, what, EQUIVALENCE_KEYS)
}

/// Compare the given argument keys of a redeclare.
pub fn check_equivalent_keys(
    current: &FieldTable,
    received: &FieldTable,
    what: &str,
    keys: &[&str],
) -> Result<(), AmqpError> {
    for key in keys {
        let cur = current.inner().get(*key);
        let new = received.inner().get(*key);
        let same = match (cur, new) {
            (None, None) => true,
            (Some(a), Some(b)) => values_equal(a, b),
            _ => false,
        };
        if !same {
            return Err(inequivalent(key, what, cur, new));
        }
    }
    Ok(())
}

/// RabbitMQ's "inequivalent arg" error: both values bare when both are present,
/// with their type when one side is missing.
pub fn inequivalent(
    key: &str,
    what: &str,
    current: Option<&AMQPValue>,
    received: Option<&AMQPValue>,
) -> AmqpError {
    let (cur, new) = match (current, received) {
        (Some(c), Some(r)) => (
            format!("'{}'", plain_value(c)),
            format!("'{}'", plain_value(r)),
        ),
        _ => {
            let show = |v: Option<&AMQPValue>| match v {
                None => "none".to_string(),
                Some(v) => format!("the value '{}' of type '{}'", plain_value(v), type_name(v)),
            };
            (show(current), show(received))
        }
    };
    AmqpError::precondition_failed(format!(
        "inequivalent arg '{key}' for {what}: received {new} but current is {cur}"
    ))
}

/// A value as Erlang's `~ts`/`~tp` prints it: strings bare, numbers plain.
fn plain_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        other => erlang_value(other),
    }
}

/// RabbitMQ compares an argument's type class (all integers alike) and value.
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => match (string(a), string(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn validates_values() {
        let what = "queue 'q' in vhost '/'";
        let e = QueueArgs::parse(&table(&[("x-message-ttl", AMQPValue::LongInt(-1))]), what)
            .unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        let a =
            QueueArgs::parse(&table(&[("x-max-length", AMQPValue::LongLongInt(5))]), what).unwrap();
        assert_eq!(a.max_length, Some(5));
        let e = QueueArgs::parse(
            &table(&[("x-max-length", AMQPValue::LongString("abc".into()))]),
            what,
        )
        .unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        );
    }

    #[test]
    fn equivalence_reports_both_sides() {
        let what = "queue 'q' in vhost '/'";
        let cur = table(&[("x-message-ttl", AMQPValue::LongInt(1000))]);
        let e = check_equivalent(&cur, &FieldTable::default(), what).unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"
        );
        assert!(check_equivalent(&cur, &cur.clone(), what).is_ok());
        // Unknown keys are not compared.
        let other = table(&[
            ("x-message-ttl", AMQPValue::LongInt(1000)),
            ("foo", AMQPValue::Boolean(true)),
        ]);
        assert!(check_equivalent(&cur, &other, what).is_ok());
    }
}
