//! Cutting frames out of the read buffer, and writing frame envelopes.
//!
//! Every frame is `type:u8 channel:u16 size:u32 payload[size] 0xCE`. The size is
//! checked against `frame_max` from the 7-byte header alone, before any payload is
//! buffered, so a client cannot make us hold more than one frame's worth of bytes.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::FrameError;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Bytes a frame adds around its payload: 7 of header, 1 of end marker.
pub const FRAME_OVERHEAD: usize = 8;

/// The only protocol header this server speaks; it is also the reply to any other.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";

/// RabbitMQ lets clients overshoot frame_max by up to this much ("clients get it wrong").
pub const FRAME_MAX_TOLERANCE: u64 = 8;

/// One frame, its payload a zero-copy slice of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Method { channel: u16, payload: Bytes },
    Header { channel: u16, payload: Bytes },
    Body { channel: u16, payload: Bytes },
    Heartbeat { channel: u16 },
}

impl Frame {
    pub fn channel(&self) -> u16 {
        match *self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => channel,
        }
    }
}

/// What the first 8 bytes of a connection said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolHeaderCheck {
    /// Fewer than 8 bytes so far.
    NeedMore,
    /// `AMQP 0 0 9 1` (or RabbitMQ's accepted 0-9 form `AMQP 1 1 0 9`).
    Accepted,
    /// Anything else: reply with [`PROTOCOL_HEADER`] and close.
    Refused,
}

/// Consume the protocol header from `buf` if it is complete.
pub fn decode_protocol_header(buf: &mut BytesMut) -> ProtocolHeaderCheck {
    if buf.len() < 8 {
        // A wrong first byte can be refused at once.
        if !buf.is_empty() && !b"AMQP".starts_with(&buf[..buf.len().min(4)]) {
            return ProtocolHeaderCheck::Refused;
        }
        return ProtocolHeaderCheck::NeedMore;
    }
    let head = buf.split_to(8);
    if head[..] == PROTOCOL_HEADER[..] || head[..] == b"AMQP\x01\x01\x00\x09"[..] {
        ProtocolHeaderCheck::Accepted
    } else {
        ProtocolHeaderCheck::Refused
    }
}

/// Cut the next complete frame from `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (and reserves room for them).
/// `frame_max` is the negotiated limit including the 8 bytes of envelope; 0 means none.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as u64;
    let total = size + FRAME_OVERHEAD as u64;
    if frame_max != 0 && total > frame_max as u64 + FRAME_MAX_TOLERANCE {
        return Err(FrameError::TooLarge {
            kind,
            size,
            max: frame_max,
        });
    }
    // Bounded by frame_max above (or by u32 when unlimited, which we never negotiate).
    let total = total as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    // As RabbitMQ: the whole frame is read, then the end marker checked, then the type.
    let end = buf[total - 1];
    let mut frame = buf.split_to(total);
    frame.advance(7);
    frame.truncate(total - FRAME_OVERHEAD);
    if end != FRAME_END {
        return Err(FrameError::BadFrameEnd {
            kind,
            payload: frame.freeze(),
            end,
        });
    }
    let known = matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY)
        || (kind == FRAME_HEARTBEAT && frame.is_empty());
    if !known {
        return Err(FrameError::UnknownType {
            kind,
            payload: frame.freeze(),
        });
    }
    let payload = frame.freeze();
    Ok(Some(match kind {
        FRAME_METHOD => Frame::Method { channel, payload },
        FRAME_HEADER => Frame::Header { channel, payload },
        FRAME_BODY => Frame::Body { channel, payload },
        _ => Frame::Heartbeat { channel },
    }))
}

/// Append a frame envelope around `payload`.
pub fn encode_frame(out: &mut BytesMut, kind: u8, channel: u16, payload: &[u8]) {
    out.reserve(payload.len() + FRAME_OVERHEAD);
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.put_u8(FRAME_END);
}

/// Start a frame whose payload length is not known yet; returns the offset to patch.
pub(crate) fn begin_frame(out: &mut BytesMut, kind: u8, channel: u16) -> usize {
    out.put_u8(kind);
    out.put_u16(channel);
    let at = out.len();
    out.put_u32(0);
    at
}

/// Patch the size of a frame started with [`begin_frame`] and close it.
pub(crate) fn end_frame(out: &mut BytesMut, size_at: usize) {
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

/// Append a heartbeat frame.
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_frames_and_waits_for_more() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, FRAME_BODY, 3, b"hello");
        encode_heartbeat(&mut out);
        let mut buf = BytesMut::new();
        for (i, b) in out.iter().enumerate() {
            buf.put_u8(*b);
            let got = decode_frame(&mut buf, 4096).unwrap();
            if i == 12 {
                assert_eq!(
                    got,
                    Some(Frame::Body {
                        channel: 3,
                        payload: Bytes::from_static(b"hello")
                    })
                );
            } else if i == 20 {
                assert_eq!(got, Some(Frame::Heartbeat { channel: 0 }));
            } else {
                assert_eq!(got, None, "byte {i}");
            }
        }
    }

    #[test]
    fn refuses_oversize_before_buffering() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0x40, 0, 0, 0][..]);
        assert!(matches!(
            decode_frame(&mut buf, 131072),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn tolerates_eight_bytes_over_frame_max() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, FRAME_BODY, 1, &[0u8; 4096]);
        let mut buf = out.clone();
        assert!(decode_frame(&mut buf, 4096).unwrap().is_some());
        let mut out = BytesMut::new();
        encode_frame(&mut out, FRAME_BODY, 1, &[0u8; 4097]);
        assert!(decode_frame(&mut out, 4096).is_err());
    }

    #[test]
    fn bad_end_and_unknown_type() {
        let mut out = BytesMut::new();
        encode_frame(&mut out, FRAME_BODY, 1, b"x");
        let n = out.len();
        out[n - 1] = 0;
        assert_eq!(
            decode_frame(&mut out, 0).unwrap_err().to_string(),
            "type 3, all octets = <<\"x\">>: {invalid_frame_end_marker,0}"
        );
        let mut out = BytesMut::new();
        encode_frame(&mut out, 9, 1, b"x");
        assert_eq!(
            decode_frame(&mut out, 0).unwrap_err().to_string(),
            "type 9, all octets = <<\"x\">>: unknown_frame"
        );
    }

    #[test]
    fn protocol_header() {
        let mut b = BytesMut::from(&b"AMQP\x00\x00\x09\x01rest"[..]);
        assert_eq!(
            decode_protocol_header(&mut b),
            ProtocolHeaderCheck::Accepted
        );
        assert_eq!(&b[..], b"rest");
        let mut b = BytesMut::from(&b"AMQP\x00\x00\x09\x02"[..]);
        assert_eq!(decode_protocol_header(&mut b), ProtocolHeaderCheck::Refused);
        let mut b = BytesMut::from(&b"GET "[..]);
        assert_eq!(decode_protocol_header(&mut b), ProtocolHeaderCheck::Refused);
        let mut b = BytesMut::from(&b"AMQ"[..]);
        assert_eq!(
            decode_protocol_header(&mut b),
            ProtocolHeaderCheck::NeedMore
        );
    }
}
