//! Socket-free tests of the connection state machine: a scripted client feeds
//! frames in and reads frames out, with a virtual clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel as ch, connection as conn, queue, AMQPClass};
use amq_protocol::types::{FieldTable, LongString};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedReceiver;
use warren_codec::frame::{
    decode_frame, encode_frame, Frame, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT,
};
use warren_codec::{decode_method, encode_method, Method};

use super::{ConnEvent, Connection};
use crate::broker::{Broker, Config};

struct Client {
    conn: Connection,
    inbox: UnboundedReceiver<ConnEvent>,
    now: Instant,
    received: BytesMut,
}

impl Client {
    fn new(broker: &Arc<Broker>) -> Client {
        Client::from(broker, "127.0.0.1:40000")
    }

    fn from(broker: &Arc<Broker>, peer: &str) -> Client {
        let (handle, inbox) = broker.register_connection();
        let now = Instant::now();
        let peer: SocketAddr = peer.parse().unwrap();
        Client {
            conn: Connection::new(broker.clone(), handle, peer, now),
            inbox,
            now,
            received: BytesMut::new(),
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        self.conn.handle_input(&mut buf, self.now);
        self.pump();
    }

    /// Deliver queued events (deliveries) to the connection, as the driver does.
    fn pump(&mut self) {
        while let Ok(ev) = self.inbox.try_recv() {
            self.conn.handle_event(ev, self.now);
        }
        if let Some(out) = self.conn.take_output(self.now) {
            self.received.extend_from_slice(&out);
        }
    }

    fn send(&mut self, channel: u16, m: AMQPClass) {
        let mut out = BytesMut::new();
        encode_method(&mut out, channel, &m);
        self.send_bytes(&out);
    }

    fn frames(&mut self) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some(f) = decode_frame(&mut self.received, 0).unwrap() {
            v.push(f);
        }
        v
    }

    fn methods(&mut self) -> Vec<(u16, Method)> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f {
                Frame::Method { channel, payload } => {
                    Some((channel, decode_method(&payload).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn handshake(&mut self, heartbeat: u16) {
        self.handshake_with(heartbeat, FieldTable::default());
    }

    fn handshake_with(&mut self, heartbeat: u16, client_properties: FieldTable) {
        self.send_bytes(b"AMQP\x00\x00\x09\x01");
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
                client_properties,
                mechanism: "PLAIN".into(),
                response: LongString::from(&b"\0guest\0guest"[..]),
                locale: "en_US".into(),
            })),
        );
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
                channel_max: 2047,
                frame_max: 131072,
                heartbeat,
            })),
        );
        self.send(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
                virtual_host: "/".into(),
            })),
        );
        let ms = self.methods();
        assert!(
            matches!(
                ms.last(),
                Some((
                    0,
                    Method::Other(AMQPClass::Connection(conn::AMQPMethod::OpenOk(_)))
                ))
            ),
            "{ms:?}"
        );
    }

    fn open_channel(&mut self, id: u16) {
        self.send(id, AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {})));
        assert!(matches!(
            self.methods().last(),
            Some((
                _,
                Method::Other(AMQPClass::Channel(ch::AMQPMethod::OpenOk(_)))
            ))
        ));
    }

    fn declare(&mut self, channel: u16, name: &str) {
        self.send(
            channel,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: name.into(),
                ..Default::default()
            })),
        );
        self.methods();
    }

    fn publish(&mut self, channel: u16, routing_key: &str, body: &[u8]) {
        let out = publish_frames(channel, routing_key, body);
        self.send_bytes(&out);
    }

    fn close_code(&mut self) -> Option<(u16, String, bool)> {
        self.methods().into_iter().find_map(|(_, m)| match m {
            Method::Other(AMQPClass::Connection(conn::AMQPMethod::Close(c))) => {
                Some((c.reply_code, c.reply_text.to_string(), true))
            }
            Method::Other(AMQPClass::Channel(ch::AMQPMethod::Close(c))) => {
                Some((c.reply_code, c.reply_text.to_string(), false))
            }
            _ => None,
        })
    }
}

/// basic.publish, content header and one body frame, as bytes.
fn publish_frames(channel: u16, routing_key: &str, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method(
        &mut out,
        channel,
        &AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: routing_key.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    let mut header = BytesMut::new();
    header.put_u16(60);
    header.put_u16(0);
    header.put_u64(body.len() as u64);
    header.put_u16(0);
    encode_frame(&mut out, FRAME_HEADER, channel, &header);
    encode_frame(&mut out, FRAME_BODY, channel, body);
    out
}

/// A frame envelope around arbitrary bytes (any frame type).
fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    encode_frame(&mut out, kind, channel, payload);
    out
}

fn broker() -> Arc<Broker> {
    Broker::new(Config::default())
}

#[test]
fn handshake_offers_rabbitmq_tuning() {
    let b = broker();
    let mut c = Client::new(&b);
    c.send_bytes(b"AMQP\x00\x00\x09\x01");
    let ms = c.methods();
    let Some((0, Method::Other(AMQPClass::Connection(conn::AMQPMethod::Start(s))))) = ms.first()
    else {
        panic!("{ms:?}")
    };
    assert_eq!(s.mechanisms.to_string(), "PLAIN AMQPLAIN");
    c.send(
        0,
        AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(&b"\0guest\0guest"[..]),
            locale: "en_US".into(),
        })),
    );
    let ms = c.methods();
    let Some((0, Method::Other(AMQPClass::Connection(conn::AMQPMethod::Tune(t))))) = ms.first()
    else {
        panic!("{ms:?}")
    };
    assert_eq!(
        (t.channel_max, t.frame_max, t.heartbeat),
        (2047, 131072, 60)
    );
}

#[test]
fn wrong_protocol_header_gets_ours_back() {
    let b = broker();
    let mut c = Client::new(&b);
    c.send_bytes(b"AMQP\x01\x01\x00\x0a");
    assert_eq!(&c.received[..], b"AMQP\x00\x00\x09\x01");
    assert!(c.conn.is_closed());
}

#[test]
fn guest_is_refused_from_a_remote_address() {
    let b = broker();
    let mut c = Client::from(&b, "10.1.2.3:5000");
    c.send_bytes(b"AMQP\x00\x00\x09\x01");
    c.methods();
    c.send(
        0,
        AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(&b"\0guest\0guest"[..]),
            locale: "en_US".into(),
        })),
    );
    // Without authentication_failure_close the socket is simply closed.
    assert!(c.conn.is_closed());
    assert!(c.methods().is_empty());
}

#[test]
fn publish_then_get_round_trips_body() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    c.declare(1, "q");
    c.publish(1, "q", b"hello");
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: true,
        })),
    );
    let frames = c.frames();
    assert_eq!(frames.len(), 3, "{frames:?}");
    assert_eq!(
        frames[2],
        Frame::Body {
            channel: 1,
            payload: Bytes::from_static(b"hello")
        }
    );
}

#[test]
fn prefetch_limits_deliveries_exactly() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    c.declare(1, "q");
    for i in 0..10 {
        c.publish(1, "q", format!("m{i}").as_bytes());
    }
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 3,
            global: false,
        })),
    );
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        })),
    );
    let delivered = |ms: &[(u16, Method)]| {
        ms.iter()
            .filter(|(_, m)| {
                matches!(
                    m,
                    Method::Other(AMQPClass::Basic(basic::AMQPMethod::Deliver(_)))
                )
            })
            .count()
    };
    let ms = c.methods();
    assert_eq!(delivered(&ms), 3);
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 2,
            multiple: true,
        })),
    );
    assert_eq!(delivered(&c.methods()), 2);
}

#[test]
fn unknown_delivery_tag_closes_the_channel_only() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 99,
            multiple: false,
        })),
    );
    assert_eq!(
        c.close_code(),
        Some((
            406,
            "PRECONDITION_FAILED - unknown delivery tag 99".into(),
            false
        ))
    );
    c.open_channel(2);
}

#[test]
fn oversize_frame_is_a_frame_error() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    // A header announcing 1 MiB: refused from the 7-byte header alone.
    c.send_bytes(&[FRAME_BODY, 0, 1, 0, 0x10, 0, 0]);
    let (code, _, hard) = c.close_code().unwrap();
    assert_eq!((code, hard), (501, true));
}

#[test]
fn heartbeat_on_a_channel_is_unexpected() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.send_bytes(&[FRAME_HEARTBEAT, 0, 1, 0, 0, 0, 0, 0xCE]);
    assert_eq!(
        c.close_code().map(|(code, _, hard)| (code, hard)),
        Some((505, true))
    );
}

#[test]
fn silent_peer_is_dropped_after_two_heartbeat_intervals() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(1);
    let start = c.now;
    // The broker sends heartbeats while the client is silent...
    c.now = start + Duration::from_millis(600);
    c.conn.handle_timeout(c.now);
    c.pump();
    assert!(c
        .frames()
        .iter()
        .any(|f| matches!(f, Frame::Heartbeat { channel: 0 })));
    assert!(!c.conn.is_closed());
    // ...and gives up after two intervals without hearing from it.
    c.now = start + Duration::from_millis(2100);
    c.conn.handle_timeout(c.now);
    assert!(c.conn.is_closed());
}

fn close_method(code: u16) -> BytesMut {
    let mut out = BytesMut::new();
    encode_method(
        &mut out,
        0,
        &AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
            reply_code: code,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    out
}

fn is_close_ok(m: &(u16, Method)) -> bool {
    matches!(
        m,
        (
            0,
            Method::Other(AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)))
        )
    )
}

#[test]
fn client_close_drains_what_follows_until_the_client_closes() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    c.declare(1, "q");
    let q = b.vhost("/").unwrap().queue("q").unwrap();
    // One read: a publish, connection.close, then frames the client had
    // buffered behind the close (amqplib's order).
    let mut input = publish_frames(1, "q", b"before");
    input.extend_from_slice(&close_method(200));
    for _ in 0..3 {
        input.extend_from_slice(&publish_frames(1, "q", b"after"));
    }
    input.extend_from_slice(&raw_frame(9, 1, b"unknown type")); // ignored, not fatal
    c.send_bytes(&input);
    let ms = c.methods();
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert!(is_close_ok(&ms[0]), "{ms:?}");
    // The publish before the close was routed, those behind it were not.
    assert_eq!(q.counts(), (1, 0));
    // The socket stays open and is read: RabbitMQ waits for the client to
    // close it, at most 30 s when heartbeats are off.
    assert!(!c.conn.is_closed());
    assert!(c.conn.wants_read());
    assert_eq!(
        c.conn.poll_timeout().map(|d| d - c.now),
        Some(Duration::from_secs(30))
    );
    c.send_bytes(&publish_frames(1, "q", b"later"));
    assert!(c.frames().is_empty());
    assert_eq!(q.counts(), (1, 0));
    // Another connection.close is answered again.
    c.send_bytes(&close_method(200));
    let ms = c.methods();
    assert!(ms.len() == 1 && is_close_ok(&ms[0]), "{ms:?}");
    assert!(!c.conn.is_closed());
    // The broker no longer counts the connection.
    assert_eq!(b.connection_count(), 0);
    // Time runs out.
    let deadline = c.conn.poll_timeout().unwrap();
    c.conn.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!c.conn.is_closed());
    c.conn.handle_timeout(deadline);
    assert!(c.conn.is_closed());
    assert!(!c.conn.wants_read());
}

#[test]
fn draining_ends_at_the_heartbeat_timeout_and_keeps_sending_heartbeats() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(4);
    let start = c.now;
    c.send_bytes(&close_method(200));
    assert!(c.methods().iter().any(is_close_ok));
    // The wait is the heartbeat (4 s < 30 s); a heartbeat goes out half-way.
    assert_eq!(
        c.conn.poll_timeout().map(|d| d - start),
        Some(Duration::from_secs(2))
    );
    c.now = start + Duration::from_secs(2);
    c.conn.handle_timeout(c.now);
    c.pump();
    assert!(c
        .frames()
        .iter()
        .any(|f| matches!(f, Frame::Heartbeat { channel: 0 })));
    assert!(!c.conn.is_closed());
    assert_eq!(
        c.conn.poll_timeout().map(|d| d - start),
        Some(Duration::from_secs(4))
    );
    c.now = start + Duration::from_secs(4);
    c.conn.handle_timeout(c.now);
    assert!(c.conn.is_closed());
}

#[test]
fn draining_ends_on_close_ok_or_a_broken_frame() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.send_bytes(&close_method(200));
    let mut close_ok = BytesMut::new();
    encode_method(
        &mut close_ok,
        0,
        &AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
    );
    c.send_bytes(&close_ok);
    assert!(c.conn.is_closed());

    let mut c = Client::new(&b);
    c.handshake(0);
    c.send_bytes(&close_method(200));
    assert!(c.methods().iter().any(is_close_ok));
    // A frame bigger than frame_max: the stream can no longer be followed.
    let mut big = BytesMut::new();
    big.put_u8(FRAME_BODY);
    big.put_u16(1);
    big.put_u32(10_000_000);
    c.send_bytes(&big);
    assert!(c.conn.is_closed());
    assert!(c.frames().is_empty(), "no connection.close after close-ok");
}

#[test]
fn handshake_must_finish_in_time() {
    let b = broker();
    let mut c = Client::new(&b);
    c.send_bytes(b"AMQP\x00\x00\x09\x01");
    let deadline = c.conn.poll_timeout().unwrap();
    assert_eq!(deadline - c.now, Duration::from_secs(10));
    c.conn.handle_timeout(deadline);
    assert!(c.conn.is_closed());
}

#[test]
fn unacked_messages_return_when_the_channel_closes() {
    let b = broker();
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    c.declare(1, "q");
    c.publish(1, "q", b"x");
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        })),
    );
    c.methods();
    let q = b.vhost("/").unwrap().queue("q").unwrap();
    assert_eq!(q.counts(), (0, 1));
    c.send(
        1,
        AMQPClass::Channel(ch::AMQPMethod::Close(ch::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    assert_eq!(q.counts(), (1, 0));
}

#[test]
fn memory_alarm_blocks_publishers_that_understand_it() {
    use amq_protocol::types::AMQPValue;
    let b = broker();
    let mut caps = FieldTable::default();
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let mut c = Client::new(&b);
    c.handshake_with(0, props);
    c.open_channel(1);
    c.declare(1, "q");
    b.set_alarm(crate::alarm::AlarmSource::Memory, true);
    c.pump();
    // Not a publisher yet: nothing is sent, and it is still read.
    assert!(c.methods().is_empty());
    assert!(c.conn.wants_read());
    c.publish(1, "q", b"x");
    let blocked = |ms: &[(u16, Method)]| {
        ms.iter().any(|(_, m)| {
            matches!(m, Method::Other(AMQPClass::Connection(conn::AMQPMethod::Blocked(b))) if b.reason.as_str() == "low on memory")
        })
    };
    assert!(blocked(&c.methods()));
    assert!(!c.conn.wants_read(), "a blocked publisher is not read");
    b.set_alarm(crate::alarm::AlarmSource::Memory, false);
    c.pump();
    assert!(c.methods().iter().any(|(_, m)| matches!(
        m,
        Method::Other(AMQPClass::Connection(conn::AMQPMethod::Unblocked(_)))
    )));
    assert!(c.conn.wants_read());
}

#[test]
fn disk_and_memory_alarms_block_together_and_unblock_when_both_clear() {
    use crate::alarm::AlarmSource;
    use amq_protocol::types::AMQPValue;
    let b = broker();
    let mut caps = FieldTable::default();
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let mut c = Client::new(&b);
    c.handshake_with(0, props);
    c.open_channel(1);
    c.declare(1, "q");
    b.set_alarm(AlarmSource::StoreFailing, true);
    b.set_alarm(AlarmSource::Memory, true);
    c.publish(1, "q", b"x");
    let reasons: Vec<String> = c
        .methods()
        .iter()
        .filter_map(|(_, m)| match m {
            Method::Other(AMQPClass::Connection(conn::AMQPMethod::Blocked(b))) => {
                Some(b.reason.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec!["low on memory & disk".to_string()]);
    let unblocked = |ms: &[(u16, Method)]| {
        ms.iter().any(|(_, m)| {
            matches!(
                m,
                Method::Other(AMQPClass::Connection(conn::AMQPMethod::Unblocked(_)))
            )
        })
    };
    b.set_alarm(AlarmSource::Memory, false);
    c.pump();
    assert!(!unblocked(&c.methods()), "the disk alarm is still raised");
    assert!(!c.conn.wants_read());
    b.set_alarm(AlarmSource::StoreFailing, false);
    c.pump();
    assert!(unblocked(&c.methods()));
    assert!(c.conn.wants_read());
}

#[test]
fn a_delivery_unacked_past_the_consumer_timeout_closes_its_channel_and_requeues() {
    let b = Broker::new(Config {
        consumer_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    });
    let mut c = Client::new(&b);
    c.handshake(0);
    c.open_channel(1);
    c.open_channel(2);
    c.declare(1, "q");
    c.publish(1, "q", b"x");
    c.send(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            ..Default::default()
        })),
    );
    c.methods();
    let q = b.vhost("/").unwrap().queue("q").unwrap();
    assert_eq!(q.counts(), (0, 1));
    let start = c.now;
    assert_eq!(
        c.conn.poll_timeout(),
        Some(start + Duration::from_secs(5)),
        "the timer is the delivery's deadline (no heartbeats here)"
    );
    c.now = start + Duration::from_millis(4_999);
    c.conn.handle_timeout(c.now);
    c.pump();
    assert_eq!(c.close_code(), None, "not yet");
    c.now = start + Duration::from_secs(5);
    c.conn.handle_timeout(c.now);
    c.pump();
    assert_eq!(
        c.close_code(),
        Some((
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 5000 ms. This timeout value can be configured, see consumers doc guide to learn more".into(),
            false
        ))
    );
    assert!(!c.conn.is_closed(), "only the channel closes");
    assert_eq!(q.counts(), (1, 0), "the message is back in the queue");
    // A channel without unacked deliveries sets no timer.
    assert_eq!(c.conn.poll_timeout(), None);
}
