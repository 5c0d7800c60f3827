//! In-memory queue cost per message: publish → get → ack without consumers, and publish
//! to one consumer whose connection inbox is drained as a connection task would.
//!
//! Run with `cargo bench -p warren-broker --bench queue` (add `-- --quick` for a fast
//! pass). Throughput is in messages.

use std::hint::black_box;
use std::sync::{Arc, Weak};
use std::time::Duration;

use amq_protocol::types::FieldTable;
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use warren_broker::connection::{ConnEvent, ConnHandle};
use warren_broker::message::{Address, Message};
use warren_broker::queue::{Consumer, Credit, Enqueued, Got, Handover, Queue, QueueArgs};
use warren_broker::vhost::VHost;
use warren_codec::ContentHeader;

const BODY_LEN: usize = 256;

/// A transient message: content header with delivery-mode 1 and a 256-byte body.
fn message() -> Arc<Message> {
    let mut raw = BytesMut::new();
    raw.put_u16(60); // class
    raw.put_u16(0); // weight
    raw.put_u64(BODY_LEN as u64);
    raw.put_u16(1 << 12); // flags: delivery-mode
    raw.put_u8(1);
    Arc::new(Message::new(
        Address::new(String::new(), "bench".into(), vec![]),
        ContentHeader::parse(raw.freeze()).unwrap(),
        Bytes::from(vec![0x5a; BODY_LEN]),
    ))
}

/// A transient, non-durable queue with default arguments and no vhost behind it.
fn queue() -> Arc<Queue> {
    Arc::new(Queue::new(
        "bench".into(),
        "/".into(),
        false,
        false,
        None,
        FieldTable::default(),
        QueueArgs::default(),
        Weak::<VHost>::new(),
    ))
}

fn without_consumers(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_no_consumer");
    let msg = message();

    group.throughput(Throughput::Elements(1));
    group.bench_function("publish_get_ack", |b| {
        let q = queue();
        let (conn, _inbox) = ConnHandle::new(1);
        b.iter(|| {
            assert_eq!(q.publish(msg.clone()), Enqueued::Accepted);
            let Got::Message(m, _) = q.get(false, &conn, 1) else {
                panic!("a message");
            };
            q.ack(std::slice::from_ref(&m));
            black_box(m);
        })
    });

    // With a backlog: publish 1000, then get and ack them one by one.
    const BACKLOG: usize = 1000;
    group.throughput(Throughput::Elements(BACKLOG as u64));
    group.bench_function("publish_1000_then_get_ack_1000", |b| {
        let q = queue();
        let (conn, _inbox) = ConnHandle::new(1);
        b.iter(|| {
            for _ in 0..BACKLOG {
                q.publish(msg.clone());
            }
            while let Got::Message(m, _) = q.get(false, &conn, 1) {
                q.ack(std::slice::from_ref(&m));
                black_box(m);
            }
        })
    });
    group.finish();
}

fn with_one_consumer(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_one_consumer");
    group.throughput(Throughput::Elements(1));
    let msg = message();

    for no_ack in [false, true] {
        let name = if no_ack {
            "publish_deliver_no_ack"
        } else {
            "publish_deliver_ack"
        };
        group.bench_function(name, |b| {
            let q = queue();
            let (conn, mut rx) = ConnHandle::new(1);
            let credit = Arc::new(Credit::new(0)); // unlimited prefetch
            let channel_credit = Arc::new(Credit::new(0));
            q.add_consumer(Consumer {
                tag: "ctag".into(),
                channel: 1,
                conn: conn.clone(),
                no_ack,
                exclusive: false,
                credit: credit.clone(),
                channel_credit: channel_credit.clone(),
                priority: 0,
                stream_start: None,
            })
            .unwrap();
            b.iter(|| {
                assert_eq!(q.publish(msg.clone()), Enqueued::Accepted);
                // What the connection task does with the delivery (short of encoding it).
                match rx.try_recv() {
                    Ok(ConnEvent::Deliver(Handover { queue, message, .. })) => {
                        conn.delivery_taken(message.message.wire_size());
                        if !no_ack {
                            queue.ack(std::slice::from_ref(&message));
                            credit.release(1);
                            channel_credit.release(1);
                        }
                        black_box(message);
                    }
                    other => panic!("expected a delivery, got {other:?}"),
                }
            })
        });
    }
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
    targets = without_consumers, with_one_consumer
}
criterion_main!(benches);
