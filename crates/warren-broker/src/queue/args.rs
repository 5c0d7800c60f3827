//! Queue declare arguments: validation and the redeclare equivalence check, with
//! RabbitMQ 3.x's reply texts (which print values the way Erlang does).

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::AmqpError;

/// The queue type asked for with `x-queue-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    #[default]
    Classic,
    /// A quorum queue (on one node: every message is kept on disk).
    Quorum,
    /// Refused at declare time until streams land.
    Stream,
}

impl QueueType {
    /// RabbitMQ's module for the type, as its error texts name it.
    pub fn module(self) -> &'static str {
        match self {
            QueueType::Classic => "rabbit_classic_queue",
            QueueType::Quorum => "rabbit_quorum_queue",
            QueueType::Stream => "rabbit_stream_queue",
        }
    }

    /// The name in `x-queue-type` and the management API.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }

    /// The declare arguments this type takes (RabbitMQ 3.10.8's
    /// `capabilities()`): they are validated, and compared on a redeclare.
    /// An argument another type takes is refused; any other is ignored.
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            QueueType::Classic => &[
                "x-expires",
                "x-message-ttl",
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-max-length",
                "x-max-length-bytes",
                "x-max-priority",
                "x-overflow",
                "x-queue-mode",
                "x-queue-version",
                "x-single-active-consumer",
                "x-queue-type",
                "x-queue-master-locator",
            ],
            QueueType::Quorum => &[
                "x-dead-letter-exchange",
                "x-dead-letter-routing-key",
                "x-dead-letter-strategy",
                "x-expires",
                "x-max-length",
                "x-max-length-bytes",
                "x-max-in-memory-length",
                "x-max-in-memory-bytes",
                "x-overflow",
                "x-single-active-consumer",
                "x-queue-type",
                "x-quorum-initial-group-size",
                "x-delivery-limit",
                "x-message-ttl",
                "x-queue-leader-locator",
            ],
            QueueType::Stream => &[
                "x-max-length-bytes",
                "x-queue-type",
                "x-max-age",
                "x-stream-max-segment-size-bytes",
                "x-initial-cluster-size",
                "x-queue-leader-locator",
            ],
        }
    }

    fn takes(self, key: &str) -> bool {
        self.arguments().contains(&key)
    }

    /// The type a declare asks for, if `x-queue-type` names one.
    pub fn declared(table: &FieldTable) -> Option<QueueType> {
        match table.inner().get("x-queue-type") {
            None => Some(QueueType::Classic),
            Some(v) => match string(v)?.as_str() {
                "classic" => Some(QueueType::Classic),
                "quorum" => Some(QueueType::Quorum),
                "stream" => Some(QueueType::Stream),
                _ => None,
            },
        }
    }
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
    /// Quorum queues: how many times a message may be returned before it is
    /// dropped or dead-lettered (`x-delivery-limit`).
    pub delivery_limit: Option<u64>,
    /// `x-dead-letter-strategy: at-least-once`.
    pub dead_letter_at_least_once: bool,
    /// Streams: drop segments older than this (`x-max-age`).
    pub max_age_ms: Option<u64>,
    /// Streams: segment file size (`x-stream-max-segment-size-bytes`).
    pub max_segment_bytes: Option<u64>,
}

/// The longest TTL or expiry RabbitMQ accepts: ten years, in milliseconds.
const MAX_EXPIRY: i128 = 315_360_000_000;

/// Declare arguments in the order RabbitMQ validates them (`declare_args()`),
/// so that a declare with several bad ones gets the same error.
const VALIDATION_ORDER: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-quorum-initial-group-size",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
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
    /// Whether a dead-lettered message stays in this queue until its targets
    /// took it: RabbitMQ's `at-least-once` strategy, which quorum queues honour
    /// only with `x-overflow: reject-publish` (otherwise it is at most once).
    pub fn dead_letters_at_least_once(&self) -> bool {
        self.dead_letter_at_least_once
            && self.queue_type == QueueType::Quorum
            && self.overflow == Overflow::RejectPublish
    }

    /// Validate declare arguments as RabbitMQ 3.10.8 does: `x-queue-type`
    /// first, then the arguments the type takes in RabbitMQ's order, then
    /// arguments only other types take. `what` is RabbitMQ's resource name,
    /// e.g. `queue 'q' in vhost '/'`.
    pub fn parse(table: &FieldTable, what: &str) -> Result<QueueArgs, AmqpError> {
        let args = table.inner();
        let queue_type = match args.get("x-queue-type") {
            None => QueueType::Classic,
            Some(v) => {
                let invalid = |reason: String| {
                    AmqpError::precondition_failed(format!(
                        "invalid arg 'x-queue-type' for {what}: {reason}"
                    ))
                };
                let s = string(v)
                    .ok_or_else(|| invalid(format!("{{unacceptable_type,{}}}", type_name(v))))?;
                QueueType::declared(table)
                    .ok_or_else(|| invalid(format!("\"unsupported queue type '{s}'\"")))?
            }
        };
        let mut a = QueueArgs {
            queue_type,
            ..QueueArgs::default()
        };
        for key in VALIDATION_ORDER {
            if !queue_type.takes(key) {
                continue;
            }
            if let Some(value) = args.get(*key) {
                a.take(key, value, table, what)?;
            }
        }
        if let Some(v) = args.get("x-delivery-limit").and_then(integer) {
            // RabbitMQ validates no value here; a negative one means none.
            a.delivery_limit = u64::try_from(v).ok();
        }
        for key in args.keys() {
            let key = key.as_str();
            let known = [QueueType::Classic, QueueType::Quorum, QueueType::Stream]
                .iter()
                .any(|t| t.takes(key));
            if known && !queue_type.takes(key) {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid arg '{key}' for {what} of queue type {}",
                    queue_type.module()
                )));
            }
        }
        Ok(a)
    }

    /// Validate one argument the queue's type takes, and keep what the
    /// broker uses of it.
    fn take(
        &mut self,
        key: &str,
        value: &AMQPValue,
        table: &FieldTable,
        what: &str,
    ) -> Result<(), AmqpError> {
        let invalid = |reason: String| {
            AmqpError::precondition_failed(format!("invalid arg '{key}' for {what}: {reason}"))
        };
        let unacceptable = || invalid(format!("{{unacceptable_type,{}}}", type_name(value)));
        let integer_value = || {
            integer(value)
                .ok_or_else(|| invalid(format!("\"expected integer, got {}\"", type_name(value))))
        };
        let non_negative = || {
            let n = integer_value()?;
            if n < 0 {
                return Err(invalid(format!("{{value_negative,{n}}}")));
            }
            Ok(n as u64)
        };
        let expiry = |n: i128| {
            if n < 0 {
                Err(invalid(format!("{{value_negative,{n}}}")))
            } else if n > MAX_EXPIRY {
                Err(invalid(format!("{{value_too_large,{n}}}")))
            } else {
                Ok(n as u64)
            }
        };
        let one_of = |choices: &[&str], error: &str| {
            let s = string(value).ok_or_else(unacceptable)?;
            if choices.contains(&s.as_str()) {
                Ok(s)
            } else {
                Err(invalid(error.to_string()))
            }
        };
        match key {
            "x-expires" => {
                let n = integer_value()?;
                if n == 0 {
                    return Err(invalid(format!("{{value_zero,{n}}}")));
                }
                self.expires = Some(expiry(n)?);
            }
            "x-message-ttl" => self.message_ttl = Some(expiry(integer_value()?)?),
            "x-dead-letter-exchange" => {
                self.dead_letter_exchange = Some(string(value).ok_or_else(|| {
                    AmqpError::precondition_failed(format!(
                        "invalid type '{}' for arg '{key}' in {what}",
                        type_name(value)
                    ))
                })?);
            }
            "x-dead-letter-routing-key" => {
                let rk = string(value).ok_or_else(|| {
                    AmqpError::precondition_failed(format!(
                        "invalid type '{}' for arg '{key}' in {what}",
                        type_name(value)
                    ))
                })?;
                if !table.contains_key("x-dead-letter-exchange") {
                    return Err(invalid("routing_key_but_no_dlx_defined".into()));
                }
                self.dead_letter_routing_key = Some(rk);
            }
            "x-dead-letter-strategy" => {
                // Dead-lettering is at least once for every queue here, so
                // both strategies behave the same (see the README).
                let s = one_of(&["at-most-once", "at-least-once"], "invalid_dlx_strategy")?;
                self.dead_letter_at_least_once = s == "at-least-once";
            }
            "x-max-length" => self.max_length = Some(non_negative()?),
            "x-max-length-bytes" => self.max_length_bytes = Some(non_negative()?),
            "x-max-in-memory-length" | "x-max-in-memory-bytes" => {
                non_negative()?;
            }
            "x-stream-max-segment-size-bytes" => self.max_segment_bytes = Some(non_negative()?),
            "x-max-priority" => {
                let n = non_negative()?;
                if n > 255 {
                    return Err(invalid(format!("{{max_value_exceeded,{n}}}")));
                }
                self.max_priority = Some(n as u8);
            }
            "x-overflow" => {
                let s = one_of(
                    &["drop-head", "reject-publish", "reject-publish-dlx"],
                    "invalid_overflow",
                )?;
                self.overflow = match s.as_str() {
                    "reject-publish" => Overflow::RejectPublish,
                    "reject-publish-dlx" => Overflow::RejectPublishDlx,
                    _ => Overflow::DropHead,
                };
            }
            "x-queue-mode" => {
                let s = string(value).ok_or_else(unacceptable)?;
                if s != "default" && s != "lazy" {
                    return Err(invalid(format!("\"unsupported queue mode '{s}'\"")));
                }
            }
            "x-queue-version" => {
                let n = non_negative()?;
                if n != 1 && n != 2 {
                    return Err(invalid(format!("\"unsupported queue version '{n}'\"")));
                }
            }
            "x-single-active-consumer" => match value {
                AMQPValue::Boolean(b) => self.single_active_consumer = *b,
                _ => return Err(unacceptable()),
            },
            "x-quorum-initial-group-size" | "x-initial-cluster-size" => {
                let size = non_negative()?;
                if size == 0 {
                    return Err(invalid("{value_zero,0}".into()));
                }
            }
            "x-max-age" => {
                let s = string(value).ok_or_else(unacceptable)?;
                self.max_age_ms =
                    Some(max_age_ms(&s).ok_or_else(|| invalid("invalid_max_age".into()))?);
            }
            "x-queue-leader-locator" => {
                one_of(
                    &["client-local", "balanced", "random", "least-leaders"],
                    "invalid_queue_locator_arg",
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A stream's `x-max-age` (`"7D"`, `"1h"`, ...) in milliseconds: a positive
/// number and one unit of Y, M, D, h, m, s.
pub fn max_age_ms(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok().filter(|n| *n > 0)?;
    let unit: u64 = match &s[digits..] {
        "Y" => 365 * 86_400_000,
        "M" => 30 * 86_400_000,
        "D" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Compare the arguments of a redeclare with those the queue was created
/// with: the ones its type takes.
pub fn check_equivalent(
    queue_type: QueueType,
    current: &FieldTable,
    received: &FieldTable,
    what: &str,
) -> Result<(), AmqpError> {
    check_equivalent_keys(current, received, what, queue_type.arguments())
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
        let e =
            check_equivalent(QueueType::Classic, &cur, &FieldTable::default(), what).unwrap_err();
        assert_eq!(
            e.text,
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received none but current is the value '1000' of type 'signedint'"
        );
        assert!(check_equivalent(QueueType::Classic, &cur, &cur.clone(), what).is_ok());
        // Unknown keys are not compared.
        let other = table(&[
            ("x-message-ttl", AMQPValue::LongInt(1000)),
            ("foo", AMQPValue::Boolean(true)),
        ]);
        assert!(check_equivalent(QueueType::Classic, &cur, &other, what).is_ok());
    }
}
