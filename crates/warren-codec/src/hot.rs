//! Hand-written codec for the methods that travel once per message.
//!
//! amq-protocol builds flag-name strings and temporary vectors for every one of
//! these (≈150 ns to encode a deliver); these take a few nanoseconds. The
//! round-trip tests in `method.rs` keep them honest against amq-protocol.

use bytes::{BufMut, BytesMut};

use crate::frame::{
    begin_frame, end_frame, FRAME_BODY, FRAME_HEADER, FRAME_METHOD, FRAME_OVERHEAD,
};
use crate::method::Method;

/// Decode a hot basic-class method from its arguments. `None`: not a hot method;
/// `Some(None)`: a hot method with malformed arguments.
pub(crate) fn decode_hot(method_id: u16, args: &[u8]) -> Option<Option<Method>> {
    Some(match method_id {
        10 => decode_qos(args),
        80 => tag_and_bits(args).map(|(delivery_tag, bits)| Method::Ack {
            delivery_tag,
            multiple: bits & 1 != 0,
        }),
        90 => tag_and_bits(args).map(|(delivery_tag, bits)| Method::Reject {
            delivery_tag,
            requeue: bits & 1 != 0,
        }),
        120 => tag_and_bits(args).map(|(delivery_tag, bits)| Method::Nack {
            delivery_tag,
            multiple: bits & 1 != 0,
            requeue: bits & 2 != 0,
        }),
        _ => return None,
    })
}

fn tag_and_bits(args: &[u8]) -> Option<(u64, u8)> {
    if args.len() != 9 {
        return None;
    }
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&args[..8]);
    Some((u64::from_be_bytes(tag), args[8]))
}

fn decode_qos(args: &[u8]) -> Option<Method> {
    // prefetch-size:u32 prefetch-count:u16 bits:u8
    if args.len() != 7 {
        return None;
    }
    Some(Method::Qos {
        prefetch_size: u32::from_be_bytes([args[0], args[1], args[2], args[3]]),
        prefetch_count: u16::from_be_bytes([args[4], args[5]]),
        global: args[6] & 1 != 0,
    })
}

fn put_short_str(out: &mut BytesMut, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.put_u8(b.len() as u8);
    out.put_slice(b);
}

/// `basic.deliver` method frame.
pub fn encode_deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    out.reserve(32 + consumer_tag.len() + exchange.len() + routing_key.len());
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(60);
    put_short_str(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    end_frame(out, at);
}

/// `basic.get-ok` method frame.
pub fn encode_get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(71);
    out.put_u64(delivery_tag);
    out.put_u8(redelivered as u8);
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    out.put_u32(message_count);
    end_frame(out, at);
}

/// `basic.return` method frame.
pub fn encode_return(
    out: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &str,
    exchange: &str,
    routing_key: &str,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(50);
    out.put_u16(reply_code);
    put_short_str(out, reply_text);
    put_short_str(out, exchange);
    put_short_str(out, routing_key);
    end_frame(out, at);
}

/// Publisher-confirm `basic.ack` (or `basic.nack` when `ack` is false).
pub fn encode_confirm(
    out: &mut BytesMut,
    channel: u16,
    ack: bool,
    delivery_tag: u64,
    multiple: bool,
) {
    let at = begin_frame(out, FRAME_METHOD, channel);
    out.put_u16(60);
    out.put_u16(if ack { 80 } else { 120 });
    out.put_u64(delivery_tag);
    out.put_u8(multiple as u8);
    end_frame(out, at);
}

/// Content header frame (the publisher's raw bytes) and the body, split so that no
/// frame exceeds `frame_max` (0 = unlimited).
pub fn encode_content(
    out: &mut BytesMut,
    channel: u16,
    header_raw: &[u8],
    body: &[u8],
    frame_max: u32,
) {
    let at = begin_frame(out, FRAME_HEADER, channel);
    out.put_slice(header_raw);
    end_frame(out, at);
    let chunk = if frame_max == 0 {
        usize::MAX
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    };
    out.reserve(body.len() + FRAME_OVERHEAD * (body.len() / chunk + 1));
    for part in body.chunks(chunk) {
        let at = begin_frame(out, FRAME_BODY, channel);
        out.put_slice(part);
        end_frame(out, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame, Frame};
    use amq_protocol::protocol::{basic, parse_class, AMQPClass};

    fn parse(out: &mut BytesMut) -> AMQPClass {
        match decode_frame(out, 0).unwrap().unwrap() {
            Frame::Method { payload, .. } => parse_class(&payload[..]).unwrap().1,
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn deliver_matches_amq_protocol() {
        let mut out = BytesMut::new();
        encode_deliver(&mut out, 5, "ctag", 9, true, "ex", "rk");
        assert_eq!(
            parse(&mut out),
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 9,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
            }))
        );
    }

    #[test]
    fn get_ok_return_and_confirms_match_amq_protocol() {
        let mut out = BytesMut::new();
        encode_get_ok(&mut out, 1, 3, false, "", "q", 12);
        encode_return(&mut out, 1, 312, "NO_ROUTE", "ex", "rk");
        encode_confirm(&mut out, 1, true, 10, true);
        encode_confirm(&mut out, 1, false, 11, false);
        assert_eq!(
            parse(&mut out),
            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 3,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
                message_count: 12,
            }))
        );
        assert_eq!(
            parse(&mut out),
            AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
            }))
        );
        assert_eq!(
            parse(&mut out),
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 10,
                multiple: true
            }))
        );
        assert_eq!(
            parse(&mut out),
            AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                delivery_tag: 11,
                multiple: false,
                requeue: false
            }))
        );
    }

    #[test]
    fn body_is_split_at_frame_max() {
        let mut out = BytesMut::new();
        let body = bytes::Bytes::from(vec![7u8; 10_000]);
        encode_content(
            &mut out,
            2,
            &[0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0x27, 0x10, 0, 0],
            &body,
            4096,
        );
        assert!(matches!(
            decode_frame(&mut out, 4096).unwrap(),
            Some(Frame::Header { .. })
        ));
        let mut total = 0;
        while let Some(f) = decode_frame(&mut out, 4096).unwrap() {
            match f {
                Frame::Body { payload, .. } => {
                    assert!(payload.len() <= 4088);
                    total += payload.len();
                }
                f => panic!("{f:?}"),
            }
        }
        assert_eq!(total, 10_000);
    }
}
