//! Frame cutting, method decoding and content headers.
//!
//! Input: `[frame_max:u32][bytes...]`; frame_max is mapped into 8192..=131072.
//! Checks:
//! - `decode_frame` never panics, consumes exactly one frame's bytes (never more
//!   than it was given), nothing on `None` or an oversize header, and exactly
//!   the bad frame on a bad end marker or an unknown type;
//! - feeding the same bytes one at a time yields the same frames and the same end;
//! - every method payload goes through `decode_method`, and the hand-written hot
//!   methods agree with amq-protocol's decoder on the same bytes;
//! - every header payload goes through `ContentHeader::parse` and its accessors,
//!   and the rewriting helpers keep every other property unchanged; kept with a
//!   body (`Content`), it reads the same.
#![no_main]
use amq_protocol::protocol::{basic, parse_class, AMQPClass};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use nom::Parser;
use warren_codec::frame::{decode_frame, Frame};
use warren_codec::{decode_method, Content, ContentHeader, FrameError, Method, MethodError};

#[derive(Debug, PartialEq)]
enum End {
    NeedMore(Vec<u8>),
    Failed(FrameError),
}

fn cut_all(input: &[u8], frame_max: u32) -> (Vec<Frame>, End) {
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    let mut consumed = 0usize;
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, frame_max) {
            Ok(Some(f)) => {
                let used = before - buf.len();
                // A frame is header(7) + payload + end(1); the size field says how long.
                let size = u32::from_be_bytes(input[consumed + 3..consumed + 7].try_into().unwrap()) as usize;
                assert_eq!(used, size + 8, "consumed {used} bytes for a frame of size {size}");
                assert!(consumed + used <= input.len());
                assert!(used as u64 <= frame_max as u64 + warren_codec::frame::FRAME_MAX_TOLERANCE);
                match &f {
                    Frame::Method { payload, .. } | Frame::Header { payload, .. } | Frame::Body { payload, .. } => {
                        assert_eq!(&payload[..], &input[consumed + 7..consumed + 7 + size]);
                    }
                    Frame::Heartbeat { .. } => {}
                }
                assert_eq!(input[consumed + used - 1], 0xCE);
                consumed += used;
                assert_eq!(&buf[..], &input[consumed..], "buffer no longer holds the unread input");
                frames.push(f);
            }
            Ok(None) => {
                assert_eq!(&buf[..], &input[consumed..]);
                return (frames, End::NeedMore(buf.to_vec()));
            }
            Err(e) => {
                let used = before - buf.len();
                match &e {
                    // Refused from the 7-byte header alone, before buffering anything.
                    FrameError::TooLarge { .. } => assert_eq!(used, 0, "an oversize frame must be refused before it is consumed"),
                    // Read whole, then judged (as RabbitMQ does): exactly that frame is consumed.
                    FrameError::BadFrameEnd { payload, .. } | FrameError::UnknownType { payload, .. } => {
                        let size = u32::from_be_bytes(input[consumed + 3..consumed + 7].try_into().unwrap()) as usize;
                        assert_eq!(used, size + 8, "a bad frame must consume exactly itself");
                        assert_eq!(&payload[..], &input[consumed + 7..consumed + 7 + size]);
                    }
                }
                assert_eq!(&buf[..], &input[consumed + used..], "buffer no longer holds the unread input");
                let _ = e.to_string(); // the reply text is built from the payload
                return (frames, End::Failed(e));
            }
        }
    }
}

fn cut_bytewise(input: &[u8], frame_max: u32) -> (Vec<Frame>, End) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for &b in input {
        buf.extend_from_slice(&[b]);
        loop {
            match decode_frame(&mut buf, frame_max) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, End::Failed(e)),
            }
        }
    }
    (frames, End::NeedMore(buf.to_vec()))
}

/// The hand-written hot decoders must agree with amq-protocol's generated one.
fn check_hot_against_amq_protocol(payload: &[u8], ours: &Result<Method, MethodError>) {
    let theirs = nom::combinator::all_consuming(parse_class)
        .parse_complete(payload)
        .ok()
        .map(|(_, c)| c);
    let hot = matches!(
        ours,
        Ok(Method::Publish(_) | Method::Ack { .. } | Method::Nack { .. } | Method::Reject { .. } | Method::Qos { .. })
    ) || (payload.len() >= 4
        && payload[..2] == [0, 60]
        && matches!(u16::from_be_bytes([payload[2], payload[3]]), 10 | 40 | 80 | 90 | 120));
    if !hot {
        return;
    }
    match (ours, theirs) {
        (Ok(Method::Publish(p)), Some(AMQPClass::Basic(basic::AMQPMethod::Publish(q)))) => {
            assert_eq!(p.exchange(), q.exchange.as_str());
            assert_eq!(p.routing_key(), q.routing_key.as_str());
            assert_eq!(p.mandatory, q.mandatory);
            assert_eq!(p.immediate, q.immediate);
        }
        (Ok(Method::Ack { delivery_tag, multiple }), Some(AMQPClass::Basic(basic::AMQPMethod::Ack(q)))) => {
            assert_eq!((*delivery_tag, *multiple), (q.delivery_tag, q.multiple));
        }
        (Ok(Method::Nack { delivery_tag, multiple, requeue }), Some(AMQPClass::Basic(basic::AMQPMethod::Nack(q)))) => {
            assert_eq!((*delivery_tag, *multiple, *requeue), (q.delivery_tag, q.multiple, q.requeue));
        }
        (Ok(Method::Reject { delivery_tag, requeue }), Some(AMQPClass::Basic(basic::AMQPMethod::Reject(q)))) => {
            assert_eq!((*delivery_tag, *requeue), (q.delivery_tag, q.requeue));
        }
        (Ok(Method::Qos { prefetch_count, global, .. }), Some(AMQPClass::Basic(basic::AMQPMethod::Qos(q)))) => {
            assert_eq!((*prefetch_count, *global), (q.prefetch_count, q.global));
        }
        (Err(_), None) => {}
        (ours, theirs) => panic!("hot decoder and amq-protocol disagree on {payload:02x?}: ours {ours:?}, amq-protocol {theirs:?}"),
    }
}

fn check_header(payload: bytes::Bytes) {
    let Ok(h) = ContentHeader::parse(payload.clone()) else {
        return;
    };
    assert_eq!(h.raw, payload);
    let _ = h.expiration();
    let _ = h.user_id();
    let _ = h.is_persistent();
    let props = h.properties();
    let headers = h.headers();
    if !h.has_headers {
        assert!(headers.is_none());
    }
    // Same properties, whichever decoder reads them.
    if let Some(p) = &props {
        assert_eq!(p.delivery_mode().as_ref(), h.delivery_mode.as_ref());
        assert_eq!(p.priority().as_ref(), h.priority.as_ref());
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), h.expiration());
        assert_eq!(p.user_id().as_ref().map(|s| s.as_str()), h.user_id());
        assert_eq!(p.reply_to().as_ref().map(|s| s.as_str()), h.reply_to());
    }

    // Kept with a body (copied together when small, apart when large), the
    // header reads the same.
    for len in [0usize, 1, 1000, 5000] {
        let body = bytes::Bytes::from(vec![0xabu8; len]);
        let c = Content::new(h.clone(), body.clone());
        assert_eq!(c.header(), &payload[..]);
        assert_eq!(c.body(), &body[..]);
        assert_eq!(c.body_bytes(), body);
        assert_eq!((c.delivery_mode(), c.priority()), (h.delivery_mode, h.priority));
        assert_eq!(c.expiration(), h.expiration());
        assert_eq!(c.user_id(), h.user_id());
        assert_eq!(c.reply_to(), h.reply_to());
        assert_eq!(c.has_headers(), h.has_headers);
        assert_eq!(c.has_header("CC"), h.has_header("CC"));
        assert_eq!(c.headers(), headers);
    }

    // The raw-bytes scan (used for CC/BCC on the hot path) agrees with the decoder.
    let has_bcc = h.has_header("BCC");
    assert_eq!(has_bcc, h.without_header("BCC").is_some(), "has_header and without_header disagree");
    if let Some(t) = &headers {
        assert_eq!(has_bcc, t.inner().contains_key("BCC"), "has_header(BCC) disagrees with the decoded table");
        assert_eq!(h.has_header("CC"), t.inner().contains_key("CC"), "has_header(CC) disagrees with the decoded table");
        for k in t.inner().keys() {
            assert!(h.has_header(k.as_str()), "decoded key {k:?} not found by has_header");
        }
    }
    if !h.has_headers {
        assert!(!has_bcc && !h.has_header("CC"));
    }

    if let Some(w) = h.without_header("BCC") {
        assert!(w.raw.len() < h.raw.len());
        assert_eq!((w.class_id, w.body_size, w.delivery_mode, w.priority), (h.class_id, h.body_size, h.delivery_mode, h.priority));
        assert_eq!(w.expiration(), h.expiration());
        assert_eq!(w.user_id(), h.user_id());
        assert_eq!(w.reply_to(), h.reply_to());
        assert!(w.has_headers);
        if props.is_some() {
            assert!(w.properties().is_some(), "dropping BCC made the header undecodable");
        }
    } else if let Some(t) = &headers {
        assert!(!t.inner().contains_key("BCC"), "BCC present but without_header found none");
    }

    match h.with_reply_to("x") {
        Some(r) => {
            assert!(h.reply_to().is_some());
            assert_eq!(r.reply_to(), Some("x"));
            assert_eq!((r.class_id, r.body_size, r.delivery_mode, r.priority), (h.class_id, h.body_size, h.delivery_mode, h.priority));
            assert_eq!(r.expiration(), h.expiration());
            assert_eq!(r.user_id(), h.user_id());
            assert_eq!(r.has_headers, h.has_headers);
            assert_eq!(r.headers(), headers);
        }
        None => assert!(h.reply_to().is_none(), "reply-to present but could not be rewritten"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((fm, input)) = data.split_first_chunk::<4>() else {
        return;
    };
    let frame_max = 8192 + u32::from_le_bytes(*fm) % (131_072 - 8192 + 1);

    let (frames, end) = cut_all(input, frame_max);
    let (frames2, end2) = cut_bytewise(input, frame_max);
    assert_eq!(frames, frames2, "byte-at-a-time feeding cut different frames");
    assert_eq!(end, end2, "byte-at-a-time feeding ended differently");

    for f in frames {
        match f {
            Frame::Method { payload, .. } => {
                let m = decode_method(&payload);
                if let Err(e) = &m {
                    let _ = e.ids();
                }
                check_hot_against_amq_protocol(&payload, &m);
            }
            Frame::Header { payload, .. } => check_header(payload),
            Frame::Body { .. } | Frame::Heartbeat { .. } => {}
        }
    }
});
