//! Method frames: decoding (hot methods by hand, the rest through amq-protocol after
//! a table-depth check) and encoding of the rare methods.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{gen_class, parse_class, AMQPClass};
use bytes::{Bytes, BytesMut};

use crate::error::MethodError;
use crate::frame::{encode_frame, FRAME_METHOD};
use crate::hot;
use crate::table_guard::{check_table, Skip, TableShapeError};

/// `basic.publish`, decoded by hand: it arrives once per message. The exchange
/// name and routing key stay in the frame they arrived in (see
/// [`decode_method_bytes`]): no allocation per publish.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The exchange name's text, its routing key's length octet, then the
    /// routing key's text (both validated UTF-8).
    names: Bytes,
    exchange_len: u8,
    pub mandatory: bool,
    pub immediate: bool,
}

impl Publish {
    /// A publish to `exchange` with `routing_key` (each cut to 255 bytes, the
    /// most a short string holds, at a character boundary).
    pub fn new(exchange: &str, routing_key: &str, mandatory: bool, immediate: bool) -> Publish {
        let exchange = short(exchange);
        let routing_key = short(routing_key);
        let mut names = Vec::with_capacity(exchange.len() + 1 + routing_key.len());
        names.extend_from_slice(exchange.as_bytes());
        names.push(routing_key.len() as u8);
        names.extend_from_slice(routing_key.as_bytes());
        Publish {
            names: Bytes::from(names),
            exchange_len: exchange.len() as u8,
            mandatory,
            immediate,
        }
    }

    /// Validate the arguments of a `basic.publish` (`args`, with `args_bytes`
    /// the same bytes as a shared handle when there is one).
    pub(crate) fn decode(args: &[u8], args_bytes: Option<&Bytes>) -> Option<Publish> {
        // ticket:u16 exchange:shortstr routing-key:shortstr bits:u8
        let exchange_len = *args.get(2)?;
        let rk_at = 3 + exchange_len as usize;
        let rk_len = *args.get(rk_at)? as usize;
        let end = rk_at + 1 + rk_len;
        if args.len() != end + 1 {
            return None;
        }
        std::str::from_utf8(args.get(3..rk_at)?).ok()?;
        std::str::from_utf8(args.get(rk_at + 1..end)?).ok()?;
        let bits = args[end];
        let names = match args_bytes {
            Some(b) => b.slice(3..end),
            None => Bytes::copy_from_slice(&args[3..end]),
        };
        Some(Publish {
            names,
            exchange_len,
            mandatory: bits & 1 != 0,
            immediate: bits & 2 != 0,
        })
    }

    pub fn exchange(&self) -> &str {
        let text = self.names.get(..self.exchange_len as usize);
        std::str::from_utf8(text.unwrap_or_default()).unwrap_or_default()
    }

    pub fn routing_key(&self) -> &str {
        let text = self.names.get(self.exchange_len as usize + 1..);
        std::str::from_utf8(text.unwrap_or_default()).unwrap_or_default()
    }
}

impl PartialEq for Publish {
    fn eq(&self, other: &Publish) -> bool {
        (
            self.exchange(),
            self.routing_key(),
            self.mandatory,
            self.immediate,
        ) == (
            other.exchange(),
            other.routing_key(),
            other.mandatory,
            other.immediate,
        )
    }
}

impl Eq for Publish {}

/// `s` cut to at most 255 bytes at a character boundary.
fn short(s: &str) -> &str {
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A decoded method from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Publish(Publish),
    Ack {
        delivery_tag: u64,
        multiple: bool,
    },
    Nack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    Reject {
        delivery_tag: u64,
        requeue: bool,
    },
    /// Decoded by hand because amq-protocol drops `prefetch_size`, which must be refused.
    Qos {
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    },
    Other(AMQPClass),
}

impl Method {
    pub fn ids(&self) -> (u16, u16) {
        match self {
            Method::Publish(_) => (60, 40),
            Method::Ack { .. } => (60, 80),
            Method::Nack { .. } => (60, 120),
            Method::Reject { .. } => (60, 90),
            Method::Qos { .. } => (60, 10),
            Method::Other(m) => (m.get_amqp_class_id(), m.get_amqp_method_id()),
        }
    }
}

/// Every (class, method) pair of AMQP 0-9-1 with RabbitMQ's extensions.
const KNOWN: &[(u16, &[u16])] = &[
    (
        10,
        &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51, 60, 61, 70, 71],
    ),
    (20, &[10, 11, 20, 21, 40, 41]),
    (30, &[10, 11]),
    (40, &[10, 11, 20, 21, 30, 31, 40, 51]),
    (50, &[10, 11, 20, 21, 30, 31, 40, 41, 50, 51]),
    (
        60,
        &[
            10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 111, 120,
        ],
    ),
    (85, &[10, 11]),
    (90, &[10, 11, 20, 21, 30, 31]),
];

fn is_known(class_id: u16, method_id: u16) -> bool {
    KNOWN
        .iter()
        .any(|(c, ms)| *c == class_id && ms.contains(&method_id))
}

/// Decode a method frame payload.
pub fn decode_method(payload: &[u8]) -> Result<Method, MethodError> {
    decode(payload, None)
}

/// [`decode_method`] for a payload cut from a read buffer: a `basic.publish`
/// keeps its exchange name and routing key in it instead of copying them.
pub fn decode_method_bytes(payload: &Bytes) -> Result<Method, MethodError> {
    decode(payload, Some(payload))
}

fn decode(payload: &[u8], shared: Option<&Bytes>) -> Result<Method, MethodError> {
    if payload.len() < 4 {
        return Err(MethodError::Syntax {
            class_id: 0,
            method_id: 0,
        });
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    let syntax = MethodError::Syntax {
        class_id,
        method_id,
    };
    if !is_known(class_id, method_id) {
        return Err(MethodError::Unknown {
            class_id,
            method_id,
        });
    }
    if class_id == 60 {
        if method_id == 40 {
            let args = shared.map(|b| b.slice(4..));
            return Publish::decode(&payload[4..], args.as_ref())
                .map(Method::Publish)
                .ok_or(syntax);
        }
        if let Some(hot) = hot::decode_hot(method_id, &payload[4..]) {
            return hot.ok_or(syntax);
        }
    }
    guard_tables(class_id, method_id, payload)?;
    match nom::combinator::all_consuming(parse_class).parse_complete(payload) {
        Ok((_, class)) => Ok(Method::Other(class)),
        Err(_) => Err(syntax),
    }
}

use nom::Parser;

/// Depth-check the field table of the methods that carry one, before amq-protocol parses it.
fn guard_tables(class_id: u16, method_id: u16, payload: &[u8]) -> Result<(), MethodError> {
    let s = Skip::new(payload, 4);
    let table_at = match (class_id, method_id) {
        (10, 10) => s.fixed(2),
        (10, 11) => Some(s),
        (40, 10) => s
            .fixed(2)
            .and_then(Skip::short_str)
            .and_then(Skip::short_str)
            .and_then(|s| s.fixed(1)),
        (40, 30) | (40, 40) | (50, 20) => s
            .fixed(2)
            .and_then(Skip::short_str)
            .and_then(Skip::short_str)
            .and_then(Skip::short_str)
            .and_then(|s| s.fixed(1)),
        (50, 50) => s
            .fixed(2)
            .and_then(Skip::short_str)
            .and_then(Skip::short_str)
            .and_then(Skip::short_str),
        (50, 10) => s
            .fixed(2)
            .and_then(Skip::short_str)
            .and_then(|s| s.fixed(1)),
        (60, 20) => s
            .fixed(2)
            .and_then(Skip::short_str)
            .and_then(Skip::short_str)
            .and_then(|s| s.fixed(1)),
        _ => return Ok(()),
    };
    let syntax = MethodError::Syntax {
        class_id,
        method_id,
    };
    let Some(at) = table_at else {
        return Err(syntax);
    };
    match check_table(at.rest()) {
        Ok(_) => Ok(()),
        Err(TableShapeError::TooDeep) => Err(MethodError::TooDeep {
            class_id,
            method_id,
        }),
        Err(TableShapeError::Malformed) => Err(syntax),
    }
}

/// Append one method frame, encoded by amq-protocol.
pub fn encode_method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let mut scratch = Vec::with_capacity(64);
    match gen_class(method)(WriteContext::from(std::mem::take(&mut scratch))) {
        Ok(ctx) => {
            let (bytes, _) = ctx.into_inner();
            encode_frame(out, FRAME_METHOD, channel, &bytes);
        }
        // Only reachable with a value the broker built itself, never from client input.
        Err(e) => debug_assert!(false, "failed to encode method: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame, Frame};
    use amq_protocol::protocol::{basic, queue};
    use amq_protocol::types::{AMQPValue, FieldTable};

    fn roundtrip(m: AMQPClass) -> Method {
        let mut out = BytesMut::new();
        encode_method(&mut out, 1, &m);
        match decode_frame(&mut out, 0).unwrap().unwrap() {
            Frame::Method { payload, .. } => decode_method(&payload).unwrap(),
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn publish_names_stay_in_the_frame() {
        let mut payload = vec![0, 60, 0, 40, 0, 0, 2];
        payload.extend_from_slice(b"ex");
        payload.push(3);
        payload.extend_from_slice("rk\u{e9}".as_bytes()[..3].as_ref());
        payload.push(2);
        // "rk" plus the first byte of a two-byte character: not UTF-8.
        assert!(decode_method(&payload).is_err());
        let mut payload = vec![0, 60, 0, 40, 0, 0, 2];
        payload.extend_from_slice(b"ex");
        payload.push(3);
        payload.extend_from_slice(b"key");
        payload.push(1);
        let shared = Bytes::from(payload.clone());
        let Ok(Method::Publish(p)) = decode_method_bytes(&shared) else {
            panic!("not a publish");
        };
        assert_eq!((p.exchange(), p.routing_key()), ("ex", "key"));
        assert!(p.mandatory && !p.immediate);
        assert_eq!(decode_method(&payload), Ok(Method::Publish(p)));
        // Wrong lengths are refused, not read past.
        for cut in 4..payload.len() {
            assert!(decode_method(&payload[..cut]).is_err(), "cut {cut}");
        }
        let long = "\u{e9}".repeat(200);
        let p = Publish::new("", &long, false, true);
        assert_eq!(p.routing_key().len(), 254);
        assert_eq!(p.exchange(), "");
    }

    #[test]
    fn hot_methods_match_amq_protocol() {
        let p = basic::Publish {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            mandatory: true,
            immediate: false,
        };
        assert_eq!(
            roundtrip(AMQPClass::Basic(basic::AMQPMethod::Publish(p))),
            Method::Publish(Publish::new("ex", "rk", true, false))
        );
        let a = basic::Nack {
            delivery_tag: 77,
            multiple: true,
            requeue: false,
        };
        assert_eq!(
            roundtrip(AMQPClass::Basic(basic::AMQPMethod::Nack(a))),
            Method::Nack {
                delivery_tag: 77,
                multiple: true,
                requeue: false
            }
        );
    }

    #[test]
    fn other_methods_go_through_amq_protocol() {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongInt(5));
        let d = queue::Declare {
            queue: "q".into(),
            durable: true,
            arguments: args,
            ..Default::default()
        };
        let m = AMQPClass::Queue(queue::AMQPMethod::Declare(d));
        assert_eq!(roundtrip(m.clone()), Method::Other(m));
    }

    #[test]
    fn unknown_and_truncated() {
        assert_eq!(
            decode_method(&[0, 99, 0, 1]),
            Err(MethodError::Unknown {
                class_id: 99,
                method_id: 1
            })
        );
        assert_eq!(
            decode_method(&[0, 50, 0, 10, 0]),
            Err(MethodError::Syntax {
                class_id: 50,
                method_id: 10
            })
        );
    }

    #[test]
    fn deep_tables_are_refused_before_parsing() {
        // queue.declare with an argument table nested 10,000 deep
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            let mut next = vec![b'A'];
            next.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            next.extend_from_slice(&inner);
            inner = next;
        }
        let mut entry = vec![1, b'k'];
        entry.extend_from_slice(&inner);
        let mut p = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        p.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        p.extend_from_slice(&entry);
        assert_eq!(
            decode_method(&p),
            Err(MethodError::TooDeep {
                class_id: 50,
                method_id: 10
            })
        );
    }
}
