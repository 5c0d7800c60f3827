//! The client's hot path: hand-written encoding of `basic.publish` + content and
//! `basic.ack`, and in-place parsing of the frames a consumer or a confirming
//! publisher receives (`basic.deliver`, content, confirms).
//!
//! Nothing here allocates per message: a publisher encodes a [`MsgTemplate`]'s
//! prebuilt method and header frames plus the body into one `BytesMut` for a whole
//! batch, and a reader walks its read buffer with [`next_frame`], which only borrows.

use bytes::{BufMut, BytesMut};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
pub const FRAME_OVERHEAD: usize = 8;

/// Class and method ids the client cares about.
pub const BASIC: u16 = 60;
pub const BASIC_PUBLISH: u16 = 40;
pub const BASIC_RETURN: u16 = 50;
pub const BASIC_DELIVER: u16 = 60;
pub const BASIC_ACK: u16 = 80;
pub const BASIC_NACK: u16 = 120;
pub const BASIC_CANCEL: u16 = 30;
pub const CONNECTION: u16 = 10;
pub const CONNECTION_CLOSE: u16 = 50;
pub const CONNECTION_CLOSE_OK: u16 = 51;
pub const CONNECTION_BLOCKED: u16 = 60;
pub const CONNECTION_UNBLOCKED: u16 = 61;
pub const CHANNEL: u16 = 20;
pub const CHANNEL_CLOSE: u16 = 40;

/// A broken frame from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    TooLarge { size: usize, max: u32 },
    BadFrameEnd(u8),
    UnknownType(u8),
    Malformed(&'static str),
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtoError::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds frame_max {max}")
            }
            ProtoError::BadFrameEnd(b) => write!(f, "bad frame end marker {b:#04x}"),
            ProtoError::UnknownType(t) => write!(f, "unknown frame type {t}"),
            ProtoError::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// One frame, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub kind: u8,
    pub channel: u16,
    pub payload: &'a [u8],
}

impl RawFrame<'_> {
    /// (class, method) of a method frame.
    pub fn method_ids(&self) -> Option<(u16, u16)> {
        if self.kind != FRAME_METHOD || self.payload.len() < 4 {
            return None;
        }
        let p = self.payload;
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ))
    }
}

/// The next complete frame at the start of `buf` and its length on the wire, or
/// `None` when more bytes are needed. `frame_max` 0 means unlimited.
pub fn next_frame(buf: &[u8], frame_max: u32) -> Result<Option<(RawFrame<'_>, usize)>, ProtoError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(ProtoError::UnknownType(kind));
    }
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    let total = size + FRAME_OVERHEAD;
    if frame_max != 0 && total > frame_max as usize + 8 {
        return Err(ProtoError::TooLarge {
            size: total,
            max: frame_max,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(ProtoError::BadFrameEnd(buf[total - 1]));
    }
    Ok(Some((
        RawFrame {
            kind,
            channel,
            payload: &buf[7..7 + size],
        },
        total,
    )))
}

/// Bytes still needed to complete the frame at the start of `buf` (at least 1 when
/// incomplete), used to size the next read.
pub fn frame_need(buf: &[u8]) -> usize {
    if buf.len() < 7 {
        return 7 - buf.len();
    }
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    (size + FRAME_OVERHEAD).saturating_sub(buf.len()).max(1)
}

fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(255)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

fn frame_into(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(FRAME_END);
}

/// A message a publisher sends over and over: the `basic.publish` method frame and
/// the content header frame are built once; each send appends them and the body.
#[derive(Debug, Clone)]
pub struct MsgTemplate {
    prefix: Vec<u8>,
    channel: u16,
    body_size: usize,
    chunk: usize,
}

impl MsgTemplate {
    /// `delivery_mode` 1 (transient) or 2 (persistent); `frame_max` 0 = unlimited.
    pub fn new(
        channel: u16,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        delivery_mode: u8,
        body_size: usize,
        frame_max: u32,
    ) -> MsgTemplate {
        let mut method = Vec::with_capacity(16 + exchange.len() + routing_key.len());
        method.extend_from_slice(&BASIC.to_be_bytes());
        method.extend_from_slice(&BASIC_PUBLISH.to_be_bytes());
        method.extend_from_slice(&0u16.to_be_bytes()); // ticket
        put_short_str(&mut method, exchange);
        put_short_str(&mut method, routing_key);
        method.push(mandatory as u8);
        let mut header = Vec::with_capacity(15);
        header.extend_from_slice(&BASIC.to_be_bytes());
        header.extend_from_slice(&0u16.to_be_bytes()); // weight
        header.extend_from_slice(&(body_size as u64).to_be_bytes());
        header.extend_from_slice(&(1u16 << 12).to_be_bytes()); // delivery-mode present
        header.push(delivery_mode);
        let mut prefix = Vec::with_capacity(method.len() + header.len() + 16);
        frame_into(&mut prefix, FRAME_METHOD, channel, &method);
        frame_into(&mut prefix, FRAME_HEADER, channel, &header);
        let chunk = if frame_max == 0 {
            usize::MAX
        } else {
            (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
        };
        MsgTemplate {
            prefix,
            channel,
            body_size,
            chunk,
        }
    }

    pub fn body_size(&self) -> usize {
        self.body_size
    }

    /// Bytes one message takes on the wire.
    pub fn wire_size(&self) -> usize {
        let frames = if self.body_size == 0 {
            0
        } else {
            self.body_size.div_ceil(self.chunk)
        };
        self.prefix.len() + self.body_size + frames * FRAME_OVERHEAD
    }

    /// Append one message. `body` must be `body_size()` bytes long (it is cut or
    /// zero-padded otherwise, so the header's size stays true).
    #[inline]
    pub fn encode(&self, out: &mut BytesMut, body: &[u8]) {
        out.reserve(self.wire_size());
        out.put_slice(&self.prefix);
        if self.body_size == 0 {
            return;
        }
        let body = &body[..body.len().min(self.body_size)];
        let mut left = self.body_size;
        let mut at = 0usize;
        while left > 0 {
            let n = left.min(self.chunk);
            out.put_u8(FRAME_BODY);
            out.put_u16(self.channel);
            out.put_u32(n as u32);
            let have = body.len().saturating_sub(at).min(n);
            if have > 0 {
                out.put_slice(&body[at..at + have]);
            }
            if have < n {
                out.put_bytes(0, n - have);
            }
            out.put_u8(FRAME_END);
            at += n;
            left -= n;
        }
    }
}

/// Append a `basic.ack` (consumer acknowledgement) frame.
#[inline]
pub fn encode_ack(out: &mut BytesMut, channel: u16, delivery_tag: u64, multiple: bool) {
    out.reserve(21);
    out.put_u8(FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(13);
    out.put_u16(BASIC);
    out.put_u16(BASIC_ACK);
    out.put_u64(delivery_tag);
    out.put_u8(multiple as u8);
    out.put_u8(FRAME_END);
}

/// Delivery tag of a `basic.deliver` method payload (after the 4 id bytes).
#[inline]
pub fn deliver_tag(payload: &[u8]) -> Result<u64, ProtoError> {
    let args = payload
        .get(4..)
        .ok_or(ProtoError::Malformed("basic.deliver"))?;
    let n = *args.first().ok_or(ProtoError::Malformed("basic.deliver"))? as usize;
    let tag = args
        .get(1 + n..1 + n + 8)
        .ok_or(ProtoError::Malformed("basic.deliver"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(tag);
    Ok(u64::from_be_bytes(b))
}

/// (delivery_tag, multiple) of a `basic.ack`/`basic.nack` method payload.
#[inline]
pub fn confirm_args(payload: &[u8]) -> Result<(u64, bool), ProtoError> {
    let args = payload
        .get(4..13)
        .ok_or(ProtoError::Malformed("basic.ack/nack"))?;
    let mut b = [0u8; 8];
    b.copy_from_slice(&args[..8]);
    Ok((u64::from_be_bytes(b), args[8] & 1 != 0))
}

/// Body size of a content header frame payload.
#[inline]
pub fn header_body_size(payload: &[u8]) -> Result<u64, ProtoError> {
    let b = payload
        .get(4..12)
        .ok_or(ProtoError::Malformed("content header"))?;
    let mut s = [0u8; 8];
    s.copy_from_slice(b);
    Ok(u64::from_be_bytes(s))
}

/// Tracks publisher confirms, which may come with `multiple` set or one by one and
/// (in theory) out of order. Counts each tag once.
#[derive(Debug, Default)]
pub struct ConfirmTracker {
    /// Every tag below this is settled.
    low: u64,
    /// Settled tags at or above `low`.
    singles: std::collections::BTreeSet<u64>,
}

impl ConfirmTracker {
    pub fn new() -> ConfirmTracker {
        ConfirmTracker {
            low: 1,
            singles: Default::default(),
        }
    }

    /// Record an ack or nack; returns how many tags it newly settled.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> u64 {
        if tag < self.low {
            return 0;
        }
        if multiple {
            let already = self.singles.range(..=tag).count() as u64;
            let n = tag - self.low + 1 - already;
            self.singles = self.singles.split_off(&(tag + 1));
            self.low = tag + 1;
            self.absorb();
            n
        } else if tag == self.low {
            self.low += 1;
            self.absorb();
            1
        } else if self.singles.insert(tag) {
            1
        } else {
            0
        }
    }

    fn absorb(&mut self) {
        while self.singles.first() == Some(&self.low) {
            self.singles.pop_first();
            self.low += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_codec::frame::{decode_frame, Frame};
    use warren_codec::{decode_method, ContentHeader, Method};

    #[test]
    fn publish_template_decodes_with_broker_codec() {
        let t = MsgTemplate::new(3, "ex", "rk", false, 2, 10, 131072);
        let mut out = BytesMut::new();
        t.encode(&mut out, b"0123456789");
        t.encode(&mut out, b"abc"); // short body is padded
        assert_eq!(out.len(), 2 * t.wire_size());
        for body in [&b"0123456789"[..], &b"abc\0\0\0\0\0\0\0"[..]] {
            match decode_frame(&mut out, 131072).unwrap().unwrap() {
                Frame::Method { channel, payload } => {
                    assert_eq!(channel, 3);
                    match decode_method(&payload).unwrap() {
                        Method::Publish(p) => {
                            assert_eq!(p.exchange(), "ex");
                            assert_eq!(p.routing_key(), "rk");
                            assert!(!p.mandatory);
                        }
                        m => panic!("{m:?}"),
                    }
                }
                f => panic!("{f:?}"),
            }
            match decode_frame(&mut out, 131072).unwrap().unwrap() {
                Frame::Header { payload, .. } => {
                    let h = ContentHeader::parse(payload).unwrap();
                    assert_eq!(h.class_id, 60);
                    assert_eq!(h.body_size, 10);
                    assert_eq!(h.delivery_mode, Some(2));
                }
                f => panic!("{f:?}"),
            }
            match decode_frame(&mut out, 131072).unwrap().unwrap() {
                Frame::Body { payload, .. } => assert_eq!(&payload[..], body),
                f => panic!("{f:?}"),
            }
        }
        assert!(out.is_empty());
    }

    #[test]
    fn large_body_is_split_at_frame_max() {
        let t = MsgTemplate::new(1, "", "q", false, 1, 10_000, 4096);
        let mut out = BytesMut::new();
        t.encode(&mut out, &[7u8; 10_000]);
        assert_eq!(out.len(), t.wire_size());
        let mut frames = Vec::new();
        while let Some(f) = decode_frame(&mut out, 4096).unwrap() {
            frames.push(f);
        }
        let bodies: Vec<usize> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Body { payload, .. } => Some(payload.len()),
                _ => None,
            })
            .collect();
        assert_eq!(bodies, vec![4088, 4088, 1824]);
    }

    #[test]
    fn empty_body_has_no_body_frame() {
        let t = MsgTemplate::new(1, "", "q", false, 1, 0, 4096);
        let mut out = BytesMut::new();
        t.encode(&mut out, &[]);
        let mut n = 0;
        while decode_frame(&mut out, 4096).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2);
    }

    #[test]
    fn ack_decodes_with_broker_codec() {
        let mut out = BytesMut::new();
        encode_ack(&mut out, 7, 123_456, true);
        match decode_frame(&mut out, 0).unwrap().unwrap() {
            Frame::Method { channel, payload } => {
                assert_eq!(channel, 7);
                assert_eq!(
                    decode_method(&payload).unwrap(),
                    Method::Ack {
                        delivery_tag: 123_456,
                        multiple: true
                    }
                );
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn parses_broker_deliveries_in_place() {
        let mut out = BytesMut::new();
        warren_codec::hot::encode_deliver(&mut out, 2, "ctag-1", 99, false, "", "q");
        let header = [0u8, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x10, 0, 1];
        warren_codec::hot::encode_content(
            &mut out,
            2,
            &header,
            &bytes::Bytes::from_static(b"hello"),
            131072,
        );
        warren_codec::hot::encode_confirm(&mut out, 2, true, 42, true);
        let buf = &out[..];
        // Every prefix shorter than the first frame is "need more".
        let (first, n1) = next_frame(buf, 131072).unwrap().unwrap();
        for cut in 0..n1 {
            assert_eq!(next_frame(&buf[..cut], 131072).unwrap(), None);
            assert!(frame_need(&buf[..cut]) >= 1);
        }
        assert_eq!(first.method_ids(), Some((BASIC, BASIC_DELIVER)));
        assert_eq!(first.channel, 2);
        assert_eq!(deliver_tag(first.payload).unwrap(), 99);
        let (h, n2) = next_frame(&buf[n1..], 131072).unwrap().unwrap();
        assert_eq!(h.kind, FRAME_HEADER);
        assert_eq!(header_body_size(h.payload).unwrap(), 5);
        let (b, n3) = next_frame(&buf[n1 + n2..], 131072).unwrap().unwrap();
        assert_eq!((b.kind, b.payload), (FRAME_BODY, &b"hello"[..]));
        let (c, n4) = next_frame(&buf[n1 + n2 + n3..], 131072).unwrap().unwrap();
        assert_eq!(c.method_ids(), Some((BASIC, BASIC_ACK)));
        assert_eq!(confirm_args(c.payload).unwrap(), (42, true));
        assert_eq!(n1 + n2 + n3 + n4, buf.len());
    }

    #[test]
    fn refuses_broken_frames() {
        assert_eq!(
            next_frame(&[9, 0, 0, 0, 0, 0, 0, 0xCE], 0),
            Err(ProtoError::UnknownType(9))
        );
        assert_eq!(
            next_frame(&[1, 0, 0, 0, 0, 0, 0, 0], 0),
            Err(ProtoError::BadFrameEnd(0))
        );
        assert!(matches!(
            next_frame(&[3, 0, 1, 0, 1, 0, 0], 4096),
            Err(ProtoError::TooLarge { .. })
        ));
        assert!(deliver_tag(&[0, 60, 0, 60, 200, 1]).is_err());
        assert!(confirm_args(&[0, 60, 0, 80, 0]).is_err());
    }

    #[test]
    fn confirm_tracker_counts_each_tag_once() {
        let mut t = ConfirmTracker::new();
        assert_eq!(t.settle(1, false), 1);
        assert_eq!(t.settle(3, false), 1); // out of order
        assert_eq!(t.settle(3, false), 0); // duplicate
        assert_eq!(t.settle(5, true), 3); // 2, 4, 5
        assert_eq!(t.settle(4, false), 0);
        assert_eq!(t.settle(7, false), 1);
        assert_eq!(t.settle(6, false), 1); // absorbs 7
        assert_eq!(t.settle(8, true), 1);
        assert_eq!(t.settle(100, true), 92);
    }
}
