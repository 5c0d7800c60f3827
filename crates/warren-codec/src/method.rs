//! Method frames: decoding (hot methods by hand, the rest through amq-protocol after
//! a table-depth check) and encoding of the rare methods.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{gen_class, parse_class, AMQPClass};
use bytes::BytesMut;

use crate::error::MethodError;
use crate::frame::{encode_frame, FRAME_METHOD};
use crate::hot;
use crate::table_guard::{check_table, Skip, TableShapeError};

/// `basic.publish`, decoded by hand: it arrives once per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub exchange: String,
    pub routing_key: String,
    pub mandatory: bool,
    pub immediate: bool,
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
    fn hot_methods_match_amq_protocol() {
        let p = basic::Publish {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            mandatory: true,
            immediate: false,
        };
        assert_eq!(
            roundtrip(AMQPClass::Basic(basic::AMQPMethod::Publish(p))),
            Method::Publish(Publish {
                exchange: "ex".into(),
                routing_key: "rk".into(),
                mandatory: true,
                immediate: false
            })
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
