//! Many clients at once, and slow consumers that must not hold others up.

use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{basic, queue, AMQPClass};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::sync::Barrier;
use warren_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    const CLIENTS: usize = 200;
    const MESSAGES: usize = 5;
    let broker = start_broker().await;
    let url = broker.amqp_url();
    let all_connected = Arc::new(Barrier::new(CLIENTS + 1));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let url = url.clone();
        let all_connected = all_connected.clone();
        tasks.push(tokio::spawn(async move {
            let conn = try_connect(&url).await.expect("connect");
            let ch = open_channel(&conn).await;
            all_connected.wait().await;
            let q = format!("client-{i}");
            declare_queue(&ch, &q).await;
            let mut consumer = consume(&ch, &q, false).await;
            for m in 0..MESSAGES {
                publish(&ch, "", &q, format!("{i}-{m}").as_bytes()).await;
            }
            let ds = next_deliveries(&mut consumer, MESSAGES).await;
            let expected: Vec<String> = (0..MESSAGES).map(|m| format!("{i}-{m}")).collect();
            assert_eq!(bodies(&ds), expected);
            let last = ds.last().unwrap().delivery_tag;
            within(
                "ack",
                ch.basic_ack(last, lapin::options::BasicAckOptions { multiple: true }),
            )
            .await
            .unwrap();
            // Also some cross traffic through a shared fanout.
            publish(&ch, "amq.fanout", "", b"x").await;
            within("close", conn.close(200, "OK".into())).await.unwrap();
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), all_connected.wait())
        .await
        .expect("all clients connected in time");
    // Clients may already be closing once the barrier opens; none is extra.
    assert!(broker.connection_count() <= CLIENTS);
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("client finished in time")
            .expect("client succeeded");
    }
    eventually("every connection to be closed", || {
        broker.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_publishing_concurrently_on_one_connection() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let setup = open_channel(&conn).await;
    declare_queue(&setup, "sink").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let ch = open_channel(&conn).await;
        tasks.push(tokio::spawn(async move {
            within(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await
            .unwrap();
            for m in 0..50 {
                publish(&ch, "", "sink", format!("{i}-{m}").as_bytes()).await;
            }
        }));
    }
    for t in tasks {
        within("publisher", t).await.unwrap();
    }
    assert_eq!(message_count(&setup, "sink").await, 1000);
    // Per-channel order is kept.
    let mut next = [0usize; 20];
    while let Some(m) = get_opts(&setup, "sink", true).await {
        let s = String::from_utf8(m.delivery.data.clone()).unwrap();
        let (ch, seq) = s.split_once('-').unwrap();
        let (ch, seq): (usize, usize) = (ch.parse().unwrap(), seq.parse().unwrap());
        assert_eq!(seq, next[ch], "order of channel {ch}");
        next[ch] += 1;
    }
    assert_eq!(next, [50; 20]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_that_stops_reading_does_not_block_others() {
    const SLOW_MESSAGES: usize = 512;
    const BIG: usize = 64 * 1024; // 512 x 64 KiB = 32 MiB: far more than socket buffers hold
    const FAST_MESSAGES: usize = 200;

    let broker = start_broker().await;
    let (_setup_conn, setup) = connect_channel(&broker).await;
    declare_queue(&setup, "slow").await;
    declare_queue(&setup, "fast").await;

    // A raw client consumes "slow" with no-ack and then never reads its socket.
    let mut slow = RawClient::open(broker.local_addr()).await;
    slow.open_channel(1).await;
    let reply = slow
        .call(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "slow".into(),
                consumer_tag: "slow".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await;
    assert!(
        matches!(
            reply,
            (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)))
        ),
        "{reply:?}"
    );

    // A well-behaved consumer on another connection.
    let (_fast_conn, fast_ch) = connect_channel(&broker).await;
    let mut fast = consume(&fast_ch, "fast", true).await;

    // One publisher feeds both, with confirms: it must never be stalled.
    let (_pub_conn, pub_ch) = connect_channel(&broker).await;
    within("confirm.select", pub_ch.confirm_select(Default::default()))
        .await
        .unwrap();
    let publisher = tokio::spawn(async move {
        let big = vec![0xABu8; BIG];
        let per_fast = SLOW_MESSAGES / FAST_MESSAGES + 1;
        let mut fast_sent = 0;
        for i in 0..SLOW_MESSAGES {
            let c = pub_ch
                .basic_publish(
                    "".into(),
                    "slow".into(),
                    BasicPublishOptions::default(),
                    &big,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            drop(c);
            if i % per_fast == 0 && fast_sent < FAST_MESSAGES {
                publish(&pub_ch, "", "fast", format!("f{fast_sent}").as_bytes()).await;
                fast_sent += 1;
            }
        }
        while fast_sent < FAST_MESSAGES {
            publish(&pub_ch, "", "fast", format!("f{fast_sent}").as_bytes()).await;
            fast_sent += 1;
        }
        pub_ch.wait_for_confirms().await.expect("all confirms");
    });

    // Every fast message arrives, in order, while the slow consumer is stuck.
    for i in 0..FAST_MESSAGES {
        let d = next_delivery(&mut fast).await;
        assert_eq!(d.data, format!("f{i}").as_bytes());
    }
    tokio::time::timeout(Duration::from_secs(30), publisher)
        .await
        .expect("the publisher is not held up by the slow consumer")
        .unwrap();

    // The broker did not drop the slow consumer's messages: part is still queued.
    let queued = message_count(&setup, "slow").await;
    assert!(
        queued > 0,
        "with a consumer that does not read, messages must wait in the queue"
    );

    // Once the slow consumer reads again, it gets every message.
    let mut delivered = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while delivered < SLOW_MESSAGES {
            let (kind, _ch, payload) = slow.read_raw_frame().await.expect("frame");
            if kind == 1 && payload[..4] == [0, 60, 0, 60] {
                delivered += 1;
            }
        }
    })
    .await
    .expect("the slow consumer eventually receives everything");
    assert_eq!(message_count(&setup, "slow").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnects_leave_the_broker_consistent() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "work").await;
    for i in 0..20 {
        publish(&ch, "", "work", format!("m{i}").as_bytes()).await;
    }
    // Clients that consume (manual ack) and vanish mid-way, repeatedly.
    for _ in 0..10 {
        let mut raw = RawClient::open(broker.local_addr()).await;
        raw.open_channel(1).await;
        raw.call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "work".into(),
                passive: true,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await;
        raw.send_method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "work".into(),
                consumer_tag: "c".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await;
        let _ = raw.read_frame().await; // consume-ok (and maybe deliveries)
        drop(raw);
    }
    eventually("the raw clients to be gone", || {
        broker.connection_count() == 1
    })
    .await;
    // All 20 messages are back, in their original order.
    let mut order = Vec::new();
    while let Some(m) = get_opts(&ch, "work", true).await {
        order.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(order, expected);
}
