//! Headers exchange: binding validation and the per-binding matcher.
//!
//! Semantics follow `rabbit_exchange_type_headers.erl` of RabbitMQ 3.13/4.x:
//!
//! * `x-match` is `all` (the default when absent), `any`, `all-with-x` or `any-with-x`, and must
//!   be a `longstr`; `validate_binding` rejects anything else with the texts reproduced below.
//! * The `x-match` argument itself is never a condition. Other binding arguments whose key
//!   starts with `x-` are ignored by `all`/`any` and are conditions under the `-with-x` modes.
//! * A condition whose value is void matches when the header is present, whatever its value.
//!   Any other condition matches when the header is present and its value is `=:=` to the
//!   binding value, where the message header has had its type tag stripped
//!   (`mc:routing_headers/2`). So integers of any width compare by value (`1` in a `long`
//!   equals `1` in an `unsignedbyte`), an integer never equals a float, a `longstr` equals a
//!   byte array with the same bytes, while values nested in tables and arrays keep their type
//!   tags and must agree on them too. (An empty table and an empty array are both the Erlang
//!   list `[]`, so they are equal at top level.)
//! * `all` over zero conditions matches every message; `any` over zero conditions matches
//!   none. A message without headers is matched as an empty table. The routing key is ignored.
//!
//! Known deliberate difference: RabbitMQ 4.x scales a *message* header of type `timestamp` by
//! 1000 before comparing (`mc_amqpl:routing_value/2`), so a timestamp header can never equal
//! the same timestamp in a binding there. That looks accidental; Warren compares timestamps
//! as the integers they are, as RabbitMQ 3.x did.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};

use crate::erl_fmt;
use crate::BindingError;

/// Nesting depth beyond which table/array values are treated as unequal, so that hostile,
/// deeply nested headers cannot exhaust the stack during routing.
const MAX_DEPTH: usize = 64;

/// The `x-match` bytes, if the value is a string. `ShortString` only arises from values built
/// in-process (it has no wire tag of its own) and is accepted as the string it is.
fn string_bytes(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        _ => None,
    }
}

/// RabbitMQ's `validate_binding` for headers exchanges.
pub(crate) fn validate(args: &FieldTable) -> Result<(), BindingError> {
    let Some(x_match) = args.inner().get("x-match") else {
        return Ok(()); // the spec is vague; RabbitMQ allows omitting it
    };
    match string_bytes(x_match) {
        Some(b"all" | b"any" | b"all-with-x" | b"any-with-x") => Ok(()),
        Some(other) => Err(BindingError(format!(
            "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
            erl_fmt::binary(other)
        ))),
        None => Err(BindingError(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            erl_fmt::type_name(x_match),
            erl_fmt::value(x_match)
        ))),
    }
}

/// One binding's arguments, compiled once at bind time into the list of conditions to check.
#[derive(Debug, Clone)]
pub(crate) struct HeadersMatcher {
    /// `any`/`any-with-x` rather than `all`/`all-with-x`.
    any: bool,
    conditions: Box<[Condition]>,
}

#[derive(Debug, Clone)]
struct Condition {
    key: Box<str>,
    /// `None` for a void binding value: presence of the header is enough.
    expected: Option<AMQPValue>,
}

impl HeadersMatcher {
    pub(crate) fn compile(args: &FieldTable) -> Self {
        let mode = args.inner().get("x-match").and_then(string_bytes);
        // Unknown modes cannot get past `validate`; like RabbitMQ, fall back to `all`.
        let (any, with_x) = match mode {
            Some(b"any") => (true, false),
            Some(b"all-with-x") => (false, true),
            Some(b"any-with-x") => (true, true),
            _ => (false, false),
        };
        let conditions = args
            .inner()
            .iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                k != "x-match" && (with_x || !k.starts_with("x-"))
            })
            .map(|(k, v)| Condition {
                key: k.as_str().into(),
                expected: match v {
                    AMQPValue::Void => None,
                    v => Some(v.clone()),
                },
            })
            .collect();
        HeadersMatcher { any, conditions }
    }

    pub(crate) fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let holds = |c: &Condition| {
            let Some(actual) = headers.and_then(|h| h.inner().get(&*c.key)) else {
                return false;
            };
            match &c.expected {
                None => true,
                Some(expected) => header_eq(expected, actual, 0),
            }
        };
        if self.any {
            self.conditions.iter().any(holds)
        } else {
            self.conditions.iter().all(holds)
        }
    }
}

fn as_integer(v: &AMQPValue) -> Option<i128> {
    Some(match *v {
        AMQPValue::ShortShortInt(i) => i.into(),
        AMQPValue::ShortShortUInt(i) => i.into(),
        AMQPValue::ShortInt(i) => i.into(),
        AMQPValue::ShortUInt(i) => i.into(),
        AMQPValue::LongInt(i) => i.into(),
        AMQPValue::LongUInt(i) => i.into(),
        AMQPValue::LongLongInt(i) => i.into(),
        AMQPValue::Timestamp(i) => i.into(),
        _ => return None,
    })
}

fn as_float(v: &AMQPValue) -> Option<f64> {
    match *v {
        AMQPValue::Float(f) => Some(f.into()),
        AMQPValue::Double(f) => Some(f),
        _ => None,
    }
}

/// Binary payload: `longstr` and byte arrays both decode to Erlang binaries.
fn as_binary(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        v => string_bytes(v),
    }
}

/// Erlang `=:=` between the decoded (type-stripped) values.
fn header_eq(a: &AMQPValue, b: &AMQPValue, depth: usize) -> bool {
    if let (Some(x), Some(y)) = (as_integer(a), as_integer(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (as_float(a), as_float(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (as_binary(a), as_binary(b)) {
        return x == y;
    }
    match (a, b) {
        (AMQPValue::Boolean(x), AMQPValue::Boolean(y)) => x == y,
        (AMQPValue::DecimalValue(x), AMQPValue::DecimalValue(y)) => x == y,
        (AMQPValue::Void, AMQPValue::Void) => true,
        (AMQPValue::FieldTable(x), AMQPValue::FieldTable(y)) => table_eq(x, y, depth + 1),
        (AMQPValue::FieldArray(x), AMQPValue::FieldArray(y)) => array_eq(x, y, depth + 1),
        // Both decode to the Erlang list `[]`.
        (AMQPValue::FieldTable(t), AMQPValue::FieldArray(a))
        | (AMQPValue::FieldArray(a), AMQPValue::FieldTable(t)) => {
            t.inner().is_empty() && a.as_slice().is_empty()
        }
        _ => false,
    }
}

/// Equality of values nested in a table or array, which keep their `{Type, Value}` tags.
fn tagged_eq(a: &AMQPValue, b: &AMQPValue, depth: usize) -> bool {
    erl_fmt::type_name(a) == erl_fmt::type_name(b) && header_eq(a, b, depth)
}

fn table_eq(a: &FieldTable, b: &FieldTable, depth: usize) -> bool {
    depth <= MAX_DEPTH
        && a.inner().len() == b.inner().len()
        && a.inner()
            .iter()
            .zip(b.inner())
            .all(|((ka, va), (kb, vb))| ka == kb && tagged_eq(va, vb, depth))
}

fn array_eq(a: &FieldArray, b: &FieldArray, depth: usize) -> bool {
    depth <= MAX_DEPTH
        && a.as_slice().len() == b.as_slice().len()
        && a.as_slice()
            .iter()
            .zip(b.as_slice())
            .all(|(x, y)| tagged_eq(x, y, depth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{ByteArray, LongString, ShortString};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    fn m(args: &[(&str, AMQPValue)], headers: &[(&str, AMQPValue)]) -> bool {
        HeadersMatcher::compile(&table(args)).matches(Some(&table(headers)))
    }

    #[test]
    fn validation_messages_match_rabbitmq() {
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(validate(&table(&[("x-match", s(ok))])), Ok(()));
        }
        assert_eq!(validate(&table(&[])), Ok(()));
        assert_eq!(validate(&table(&[("x-other", s("foo"))])), Ok(()));
        assert_eq!(
            validate(&table(&[("x-match", s("foo"))])).map_err(|e| e.to_string()),
            Err("Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x".into())
        );
        assert_eq!(
            validate(&table(&[("x-match", s("ALL"))])).map_err(|e| e.to_string()),
            Err("Invalid x-match field value <<\"ALL\">>; expected all, any, all-with-x, or any-with-x".into())
        );
        assert_eq!(
            validate(&table(&[("x-match", AMQPValue::LongInt(1))])).map_err(|e| e.to_string()),
            Err("Invalid x-match field type signedint (value 1); expected longstr".into())
        );
        assert_eq!(
            validate(&table(&[("x-match", AMQPValue::Void)])).map_err(|e| e.to_string()),
            Err("Invalid x-match field type void (value undefined); expected longstr".into())
        );
        assert_eq!(
            validate(&table(&[(
                "x-match",
                AMQPValue::ByteArray(ByteArray::from(&b"all"[..]))
            )]))
            .map_err(|e| e.to_string()),
            Err("Invalid x-match field type binary (value <<\"all\">>); expected longstr".into())
        );
    }

    #[test]
    fn all_and_any() {
        let args = [("a", s("1")), ("b", s("2"))];
        assert!(m(&args, &[("a", s("1")), ("b", s("2")), ("c", s("3"))]));
        assert!(!m(&args, &[("a", s("1"))]));
        assert!(!m(&args, &[("a", s("1")), ("b", s("3"))]));
        let any = [("x-match", s("any")), ("a", s("1")), ("b", s("2"))];
        assert!(m(&any, &[("a", s("1"))]));
        assert!(m(&any, &[("b", s("2")), ("a", s("0"))]));
        assert!(!m(&any, &[("a", s("2")), ("c", s("1"))]));
    }

    #[test]
    fn empty_conditions() {
        assert!(m(&[], &[]));
        assert!(m(&[("x-match", s("all"))], &[("a", s("1"))]));
        assert!(!m(&[("x-match", s("any"))], &[("a", s("1"))]));
        assert!(HeadersMatcher::compile(&table(&[])).matches(None));
        assert!(!HeadersMatcher::compile(&table(&[("x-match", s("any"))])).matches(None));
        assert!(!HeadersMatcher::compile(&table(&[("a", s("1"))])).matches(None));
        // Only x- keys, not counted under plain all/any.
        assert!(m(&[("x-foo", s("1"))], &[]));
        assert!(!m(
            &[("x-match", s("any")), ("x-foo", s("1"))],
            &[("x-foo", s("1"))]
        ));
    }

    #[test]
    fn x_keys_only_count_with_x() {
        let hdrs = [("x-foo", s("1")), ("a", s("1"))];
        assert!(m(&[("x-foo", s("2")), ("a", s("1"))], &hdrs));
        assert!(!m(
            &[
                ("x-match", s("all-with-x")),
                ("x-foo", s("2")),
                ("a", s("1"))
            ],
            &hdrs
        ));
        assert!(m(
            &[
                ("x-match", s("all-with-x")),
                ("x-foo", s("1")),
                ("a", s("1"))
            ],
            &hdrs
        ));
        assert!(m(&[("x-match", s("any-with-x")), ("x-foo", s("1"))], &hdrs));
        assert!(!m(
            &[("x-match", s("any-with-x")), ("x-foo", s("3"))],
            &hdrs
        ));
        // x-match itself is never a condition, even with -with-x.
        assert!(m(&[("x-match", s("all-with-x"))], &[]));
        assert!(!m(
            &[("x-match", s("any-with-x"))],
            &[("x-match", s("any-with-x"))]
        ));
    }

    #[test]
    fn void_means_presence() {
        let args = [("a", AMQPValue::Void)];
        assert!(m(&args, &[("a", s("whatever"))]));
        assert!(m(&args, &[("a", AMQPValue::Void)]));
        assert!(m(&args, &[("a", AMQPValue::LongInt(5))]));
        assert!(!m(&args, &[("b", s("x"))]));
        // A void header only satisfies a void condition.
        assert!(!m(&[("a", s(""))], &[("a", AMQPValue::Void)]));
    }

    #[test]
    fn value_equality_is_erlang_exact_equality() {
        use AMQPValue::*;
        let ints = [
            ShortShortInt(1),
            ShortShortUInt(1),
            ShortInt(1),
            ShortUInt(1),
            LongInt(1),
            LongUInt(1),
            LongLongInt(1),
            Timestamp(1),
        ];
        for a in &ints {
            for b in &ints {
                assert!(m(&[("k", a.clone())], &[("k", b.clone())]), "{a:?} {b:?}");
            }
            assert!(!m(&[("k", a.clone())], &[("k", Double(1.0))]));
            assert!(!m(&[("k", Double(1.0))], &[("k", a.clone())]));
            assert!(!m(&[("k", a.clone())], &[("k", Boolean(true))]));
            assert!(!m(&[("k", a.clone())], &[("k", s("1"))]));
        }
        assert!(!m(&[("k", LongLongInt(-1))], &[("k", LongLongInt(1))]));
        assert!(!m(
            &[("k", ShortShortInt(-1))],
            &[("k", ShortShortUInt(255))]
        ));
        assert!(m(&[("k", Float(1.5))], &[("k", Double(1.5))]));
        assert!(
            !m(&[("k", Float(0.1))], &[("k", Double(0.1))]),
            "f32 0.1 is not f64 0.1"
        );
        assert!(!m(&[("k", Double(f64::NAN))], &[("k", Double(f64::NAN))]));
        let short = ShortString(amq_protocol::types::ShortString::from("v"));
        let bytes = ByteArray(amq_protocol::types::ByteArray::from(&b"v"[..]));
        assert!(m(&[("k", s("v"))], &[("k", short.clone())]));
        assert!(m(&[("k", short)], &[("k", bytes.clone())]));
        assert!(m(&[("k", bytes)], &[("k", s("v"))]));
        assert!(!m(&[("k", s("v"))], &[("k", s("V"))]));
        assert!(m(&[("k", Boolean(false))], &[("k", Boolean(false))]));
        assert!(!m(&[("k", Boolean(false))], &[("k", Boolean(true))]));
        let d = |scale, value| DecimalValue(amq_protocol::types::DecimalValue { scale, value });
        assert!(m(&[("k", d(2, 100))], &[("k", d(2, 100))]));
        assert!(!m(&[("k", d(2, 100))], &[("k", d(1, 10))]));
    }

    #[test]
    fn nested_values_keep_their_types() {
        use AMQPValue::*;
        let nested = |v: AMQPValue| FieldTable(table(&[("n", v)]));
        assert!(m(
            &[("k", nested(LongInt(1)))],
            &[("k", nested(LongInt(1)))]
        ));
        assert!(!m(
            &[("k", nested(LongInt(1)))],
            &[("k", nested(LongLongInt(1)))]
        ));
        assert!(m(
            &[("k", nested(s("x")))],
            &[("k", nested(ShortString("x".into())))]
        ));
        let arr = |v: Vec<AMQPValue>| FieldArray(v.into());
        assert!(m(
            &[("k", arr(vec![LongInt(1), s("a")]))],
            &[("k", arr(vec![LongInt(1), s("a")]))]
        ));
        assert!(!m(
            &[("k", arr(vec![LongInt(1)]))],
            &[("k", arr(vec![ShortInt(1)]))]
        ));
        assert!(!m(
            &[("k", arr(vec![LongInt(1)]))],
            &[("k", arr(vec![LongInt(1), LongInt(1)]))]
        ));
        assert!(!m(&[("k", arr(vec![]))], &[("k", nested(LongInt(1)))]));
        // An empty table and an empty array are both `[]` to Erlang, but only at top level.
        let empty_table = FieldTable(table(&[]));
        assert!(m(&[("k", arr(vec![]))], &[("k", empty_table.clone())]));
        assert!(m(&[("k", empty_table.clone())], &[("k", arr(vec![]))]));
        assert!(!m(
            &[("k", arr(vec![arr(vec![])]))],
            &[("k", arr(vec![empty_table]))]
        ));
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut v = AMQPValue::LongInt(1);
        for _ in 0..200 {
            v = AMQPValue::FieldArray(vec![v].into());
        }
        assert!(!m(&[("k", v.clone())], &[("k", v)]));
    }
}
