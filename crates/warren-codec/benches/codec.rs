//! Per-message codec cost: decoding a `basic.publish` (method + content header + body
//! frames) and encoding a delivery and a publisher confirm, each against amq-protocol's
//! own `parse_frame`/`gen_frame` on the same bytes.
//!
//! Run with `cargo bench -p warren-codec --bench codec` (add `-- --quick` for a fast pass).
//! Throughput is in messages (one publish, delivery or confirm per iteration).

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, AMQPClass, BasicProperties};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warren_codec::frame::{decode_frame, Frame};
use warren_codec::{decode_method_bytes, hot, Content, ContentHeader, Method};

const CHANNEL: u16 = 1;
const FRAME_MAX: u32 = 131_072;
const EXCHANGE: &str = "amq.topic";
const ROUTING_KEY: &str = "orders.eu.created";
const CONSUMER_TAG: &str = "amq.ctag-3kD0v5gLqN2h8pR1sT7wYx";

const SIZES: [(&str, usize); 2] = [("32B", 32), ("1KiB", 1024)];

fn properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id("msg-0001".into())
}

/// amq-protocol's encoding of one frame.
fn amqp_bytes(frame: &AMQPFrame) -> Vec<u8> {
    let (bytes, _) = gen_frame(frame)(WriteContext::from(Vec::new()))
        .expect("gen_frame")
        .into_inner();
    bytes
}

/// The three frames of a `basic.publish` as a client sends them, encoded by amq-protocol.
fn publish_wire(body_len: usize) -> Vec<u8> {
    let method = AMQPFrame::Method(
        CHANNEL,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: EXCHANGE.into(),
            routing_key: ROUTING_KEY.into(),
            mandatory: false,
            immediate: false,
        })),
    );
    let header = AMQPFrame::Header(
        CHANNEL,
        AMQPContentHeader {
            class_id: 60,
            body_size: body_len as u64,
            properties: properties(),
        },
    );
    let body = AMQPFrame::Body(CHANNEL, vec![0x5a; body_len]);
    let mut wire = amqp_bytes(&method);
    wire.extend(amqp_bytes(&header));
    wire.extend(amqp_bytes(&body));
    wire
}

/// Warren's decode path for one publish: cut three frames from the read buffer, decode
/// the method by hand, validate the content header, keep the body as a zero-copy slice.
fn warren_decode(buf: &mut BytesMut) -> (Method, ContentHeader, Bytes) {
    let method = match decode_frame(buf, FRAME_MAX) {
        Ok(Some(Frame::Method { payload, .. })) => decode_method_bytes(&payload).expect("method"),
        other => panic!("expected a method frame, got {other:?}"),
    };
    let header = match decode_frame(buf, FRAME_MAX) {
        Ok(Some(Frame::Header { payload, .. })) => ContentHeader::parse(payload).expect("header"),
        other => panic!("expected a header frame, got {other:?}"),
    };
    let body = match decode_frame(buf, FRAME_MAX) {
        Ok(Some(Frame::Body { payload, .. })) => payload,
        other => panic!("expected a body frame, got {other:?}"),
    };
    (method, header, body)
}

/// amq-protocol's decode path for the same bytes.
fn amqp_decode(mut input: &[u8]) -> [AMQPFrame; 3] {
    let mut next = || {
        let (rest, frame) = parse_frame(input).expect("parse_frame");
        input = rest;
        frame
    };
    [next(), next(), next()]
}

fn decode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    group.throughput(Throughput::Elements(1));
    for (label, len) in SIZES {
        let wire = publish_wire(len);

        // Sanity: both decoders agree on what the bytes say.
        let (method, header, body) = warren_decode(&mut BytesMut::from(&wire[..]));
        assert!(matches!(&method, Method::Publish(p) if p.routing_key() == ROUTING_KEY));
        assert_eq!((header.body_size, body.len()), (len as u64, len));
        assert!(matches!(&amqp_decode(&wire)[2], AMQPFrame::Body(_, b) if b.len() == len));

        // Each iteration copies the wire bytes into a reused read buffer (what the socket
        // read does) and decodes them; the decoded values are dropped at the end of the
        // iteration, so the buffer's storage is reclaimed and stays hot in cache.
        group.bench_with_input(BenchmarkId::new("warren", label), &wire, |b, wire| {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            b.iter(|| {
                buf.extend_from_slice(wire);
                black_box(warren_decode(black_box(&mut buf)));
            })
        });
        // The same, then header and body put together as the broker keeps them
        // (small contents are copied into one buffer of their own).
        group.bench_with_input(
            BenchmarkId::new("warren_content", label),
            &wire,
            |b, wire| {
                let mut buf = BytesMut::with_capacity(64 * 1024);
                b.iter(|| {
                    buf.extend_from_slice(wire);
                    let (method, header, body) = warren_decode(black_box(&mut buf));
                    black_box((method, Content::new(header, body)));
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("amq_protocol", label), &wire, |b, wire| {
            let mut buf = Vec::with_capacity(64 * 1024);
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(wire);
                black_box(amqp_decode(black_box(&buf[..])));
            })
        });
    }
    group.finish();
}

fn encode_deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_deliver");
    group.throughput(Throughput::Elements(1));
    for (label, len) in SIZES {
        // The content header as the publisher sent it (Warren passes it through raw).
        let header_frame = amqp_bytes(&AMQPFrame::Header(
            CHANNEL,
            AMQPContentHeader {
                class_id: 60,
                body_size: len as u64,
                properties: properties(),
            },
        ));
        let header_raw = Bytes::copy_from_slice(&header_frame[7..header_frame.len() - 1]);
        let body = Bytes::from(vec![0x5a; len]);

        // amq-protocol's frames are built once; only the delivery tag changes per message.
        let mut frames = [
            AMQPFrame::Method(
                CHANNEL,
                AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                    consumer_tag: CONSUMER_TAG.into(),
                    delivery_tag: 1,
                    redelivered: false,
                    exchange: EXCHANGE.into(),
                    routing_key: ROUTING_KEY.into(),
                })),
            ),
            AMQPFrame::Header(
                CHANNEL,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: len as u64,
                    properties: properties(),
                },
            ),
            AMQPFrame::Body(CHANNEL, body.to_vec()),
        ];

        // Sanity: both encoders produce the same bytes.
        let mut ours = BytesMut::new();
        hot::encode_deliver(
            &mut ours,
            CHANNEL,
            CONSUMER_TAG,
            1,
            false,
            EXCHANGE,
            ROUTING_KEY,
        );
        hot::encode_content(&mut ours, CHANNEL, &header_raw, &body, FRAME_MAX);
        let theirs: Vec<u8> = frames.iter().flat_map(amqp_bytes).collect();
        assert_eq!(&ours[..], &theirs[..], "encoders disagree");

        group.bench_function(BenchmarkId::new("warren", label), |b| {
            let mut out = BytesMut::with_capacity(4096);
            let mut tag = 0u64;
            b.iter(|| {
                out.clear();
                tag += 1;
                hot::encode_deliver(
                    &mut out,
                    CHANNEL,
                    CONSUMER_TAG,
                    tag,
                    false,
                    EXCHANGE,
                    ROUTING_KEY,
                );
                hot::encode_content(&mut out, CHANNEL, &header_raw, &body, FRAME_MAX);
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("amq_protocol", label), |b| {
            let mut out = Vec::with_capacity(4096);
            let mut tag = 0u64;
            b.iter(|| {
                tag += 1;
                if let AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) =
                    &mut frames[0]
                {
                    d.delivery_tag = tag;
                }
                out.clear();
                for frame in &frames {
                    let ctx = gen_frame(frame)(WriteContext::from(std::mem::take(&mut out)))
                        .expect("gen_frame");
                    out = ctx.into_inner().0;
                }
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn encode_confirm(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_confirm");
    group.throughput(Throughput::Elements(1));

    let mut ours = BytesMut::new();
    hot::encode_confirm(&mut ours, CHANNEL, true, 42, false);
    let mut ack = AMQPFrame::Method(
        CHANNEL,
        AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag: 42,
            multiple: false,
        })),
    );
    assert_eq!(&ours[..], &amqp_bytes(&ack)[..], "encoders disagree");

    group.bench_function("warren", |b| {
        let mut out = BytesMut::with_capacity(64);
        let mut tag = 0u64;
        b.iter(|| {
            out.clear();
            tag += 1;
            hot::encode_confirm(&mut out, CHANNEL, true, tag, false);
            black_box(&out);
        })
    });
    group.bench_function("amq_protocol", |b| {
        let mut out = Vec::with_capacity(64);
        let mut tag = 0u64;
        b.iter(|| {
            tag += 1;
            if let AMQPFrame::Method(_, AMQPClass::Basic(basic::AMQPMethod::Ack(a))) = &mut ack {
                a.delivery_tag = tag;
            }
            out.clear();
            let ctx =
                gen_frame(&ack)(WriteContext::from(std::mem::take(&mut out))).expect("gen_frame");
            out = ctx.into_inner().0;
            black_box(&out);
        })
    });
    group.finish();
}

/// Plots are off (they triple the run time); `-- --plotting-backend plotters` brings them back.
fn config() -> Criterion {
    Criterion::default()
        .without_plots()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode_publish, encode_deliver, encode_confirm
}
criterion_main!(benches);
