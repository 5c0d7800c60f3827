//! Rendering of AMQP field values the way RabbitMQ's error messages show them.
//!
//! RabbitMQ formats binding-validation errors with `io_lib:format("... ~tp ...", [Term])`, where
//! `Term` is the value as `rabbit_binary_parser` decoded it: integers and floats as numbers,
//! strings and byte arrays as binaries (`<<"foo">>`), booleans as atoms, void as `undefined`,
//! decimals as `{Scale,Value}`, tables as `[{Key,Type,Value}]` and arrays as `[{Type,Value}]`.
//! Clients match on reply texts often enough that we reproduce the common cases exactly
//! (pretty-printer line wrapping of very long terms is not reproduced).

use std::fmt::Write as _;

use amq_protocol::types::AMQPValue;

/// The type atom `rabbit_binary_parser` tags a decoded field with. `ShortString` never comes
/// off the wire (RabbitMQ reads `s` as a short int); it is reported as `longstr`, the string
/// type it stands for.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// `~tp` of the decoded value.
pub fn value(v: &AMQPValue) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

fn write_value(s: &mut String, v: &AMQPValue) {
    match v {
        AMQPValue::Boolean(b) => s.push_str(if *b { "true" } else { "false" }),
        AMQPValue::ShortShortInt(i) => push_display(s, i),
        AMQPValue::ShortShortUInt(i) => push_display(s, i),
        AMQPValue::ShortInt(i) => push_display(s, i),
        AMQPValue::ShortUInt(i) => push_display(s, i),
        AMQPValue::LongInt(i) => push_display(s, i),
        AMQPValue::LongUInt(i) => push_display(s, i),
        AMQPValue::LongLongInt(i) => push_display(s, i),
        AMQPValue::Timestamp(i) => push_display(s, i),
        AMQPValue::Float(f) => s.push_str(&float(f64::from(*f))),
        AMQPValue::Double(f) => s.push_str(&float(*f)),
        AMQPValue::DecimalValue(d) => {
            let _ = write!(s, "{{{},{}}}", d.scale, d.value);
        }
        AMQPValue::ShortString(v) => s.push_str(&binary(v.as_str().as_bytes())),
        AMQPValue::LongString(v) => s.push_str(&binary(v.as_bytes())),
        AMQPValue::ByteArray(v) => s.push_str(&binary(v.as_slice())),
        AMQPValue::Void => s.push_str("undefined"),
        AMQPValue::FieldArray(a) => {
            s.push('[');
            for (i, item) in a.as_slice().iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{{{},", type_name(item));
                write_value(s, item);
                s.push('}');
            }
            s.push(']');
        }
        AMQPValue::FieldTable(t) => {
            s.push('[');
            for (i, (k, item)) in t.inner().iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "{{{},{},",
                    binary(k.as_str().as_bytes()),
                    type_name(item)
                );
                write_value(s, item);
                s.push('}');
            }
            s.push(']');
        }
    }
}

fn push_display(s: &mut String, v: impl std::fmt::Display) {
    let _ = write!(s, "{v}");
}

/// `~tp` of an Erlang binary: `<<"text">>` when printable as Latin-1 or ASCII,
/// `<<"text"/utf8>>` when printable only as UTF-8, otherwise the bytes `<<1,2,3>>`.
pub(crate) fn binary(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "<<>>".to_owned();
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        if text.chars().all(printable_unicode) {
            let suffix = if text.is_ascii() { "" } else { "/utf8" };
            return format!("<<\"{}\"{suffix}>>", escape(text.chars()));
        }
    }
    if bytes.iter().all(|&b| printable_unicode(char::from(b))) {
        // Latin-1: every byte is its own code point.
        return format!("<<\"{}\">>", escape(bytes.iter().map(|&b| char::from(b))));
    }
    let mut s = String::from("<<");
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        push_display(&mut s, b);
    }
    s.push_str(">>");
    s
}

/// `io_lib:printable_unicode_list/1` for one character.
fn printable_unicode(c: char) -> bool {
    matches!(c as u32,
        0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x1_0000..=0x10_FFFF)
        || matches!(
            c,
            '\n' | '\r' | '\t' | '\u{0B}' | '\u{08}' | '\u{0C}' | '\u{1B}'
        )
}

fn escape(chars: impl Iterator<Item = char>) -> String {
    let mut s = String::new();
    for c in chars {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '\u{0B}' => s.push_str("\\v"),
            '\u{08}' => s.push_str("\\b"),
            '\u{0C}' => s.push_str("\\f"),
            '\u{1B}' => s.push_str("\\e"),
            c => s.push(c),
        }
    }
    s
}

/// Erlang's shortest round-trip float rendering (`io_lib_format:fwrite_g/1`): at least one
/// digit after the point, and scientific notation when that is shorter (`1000.0` prints as
/// `1.0e3`, `100.0` as `100.0`, `0.00001` as `1.0e-5`).
pub(crate) fn float(f: f64) -> String {
    if !f.is_finite() {
        // Erlang has no such floats; RabbitMQ would have refused the frame.
        return format!("{f}");
    }
    let sci = format!("{:e}", f.abs()); // shortest round-trip digits: "d.ddde±x"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i64 = exp.parse().unwrap_or(0);
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // value = 0.DIGITS × 10^place
    let place = exp + 1;
    let len = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let body = if place > 0 && place < len {
        let (int, frac) = digits.split_at(usize::try_from(place).unwrap_or(0));
        format!("{int}.{frac}")
    } else if place == 0 {
        format!("0.{digits}")
    } else {
        let exp_text = (place - 1).to_string();
        let exp_dot = if len == 1 { 2 } else { 1 };
        let exp_cost = i64::try_from(exp_text.len()).unwrap_or(i64::MAX) + 1 + exp_dot;
        let plain_fits = if place < 0 {
            2 - place <= exp_cost
        } else {
            place - len + 2 <= exp_cost
        };
        let zeros = |n: i64| "0".repeat(usize::try_from(n).unwrap_or(0));
        if plain_fits && place < 0 {
            format!("0.{}{digits}", zeros(-place))
        } else if plain_fits {
            format!("{digits}{}.0", zeros(place - len))
        } else {
            let (first, rest) = digits.split_at(1.min(digits.len()));
            let rest = if rest.is_empty() { "0" } else { rest };
            format!("{first}.{rest}e{exp_text}")
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{DecimalValue, FieldArray, FieldTable, LongString, ShortString};

    #[test]
    fn binaries() {
        assert_eq!(binary(b"foo"), r#"<<"foo">>"#);
        assert_eq!(binary(b""), "<<>>");
        assert_eq!(binary(b"a\"b\\c\n"), r#"<<"a\"b\\c\n">>"#);
        assert_eq!(binary("héllo".as_bytes()), r#"<<"héllo"/utf8>>"#);
        assert_eq!(binary(&[0xE9]), "<<\"\u{e9}\">>");
        assert_eq!(binary(&[0, 1, 255]), "<<0,1,255>>");
    }

    #[test]
    fn floats() {
        for (f, s) in [
            (1.0, "1.0"),
            (-1.5, "-1.5"),
            (0.0, "0.0"),
            (100.0, "100.0"),
            (1000.0, "1.0e3"),
            (123456.0, "123456.0"),
            (0.1, "0.1"),
            (0.01, "0.01"),
            (0.0001, "0.0001"),
            (0.00001, "1.0e-5"),
            (1.5e300, "1.5e300"),
            (12.375, "12.375"),
        ] {
            assert_eq!(float(f), s, "{f}");
        }
        assert_eq!(value(&AMQPValue::Float(0.5)), "0.5");
    }

    #[test]
    fn values() {
        assert_eq!(value(&AMQPValue::LongInt(-3)), "-3");
        assert_eq!(value(&AMQPValue::Boolean(true)), "true");
        assert_eq!(value(&AMQPValue::Void), "undefined");
        assert_eq!(
            value(&AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 314
            })),
            "{2,314}"
        );
        let mut t = FieldTable::default();
        t.insert(
            ShortString::from("k"),
            AMQPValue::LongString(LongString::from("v")),
        );
        t.insert(ShortString::from("n"), AMQPValue::ShortShortUInt(1));
        assert_eq!(
            value(&AMQPValue::FieldTable(t)),
            r#"[{<<"k">>,longstr,<<"v">>},{<<"n">>,unsignedbyte,1}]"#
        );
        let a = FieldArray::from(vec![AMQPValue::LongLongInt(7), AMQPValue::Void]);
        assert_eq!(
            value(&AMQPValue::FieldArray(a)),
            "[{long,7},{void,undefined}]"
        );
    }
}
