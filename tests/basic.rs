//! basic.qos / consume / cancel / publish / get / ack / nack / reject / recover,
//! message properties and sizes.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, AMQPClass};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRecoverOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use warren_integration_tests::*;

async fn qos(ch: &Channel, count: u16, global: bool) {
    within("basic.qos", ch.basic_qos(count, BasicQosOptions { global }))
        .await
        .expect("basic.qos-ok");
}

async fn publish_n(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish(ch, "", queue, format!("m{i}").as_bytes()).await;
    }
    sync(ch).await;
}

async fn ack(ch: &Channel, tag: u64, multiple: bool) {
    within("basic.ack", ch.basic_ack(tag, BasicAckOptions { multiple }))
        .await
        .expect("basic.ack written");
}

/// Send something that the broker answers with a channel error only
/// asynchronously, and return that error.
async fn async_error<T: std::fmt::Debug>(
    conn: &Connection,
    what: &str,
    f: impl std::future::Future<Output = lapin::Result<T>>,
) -> lapin::Error {
    let mut errors = Errors::new(conn);
    within(what, f)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    errors.next().await
}

// ----- qos --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_count_is_honoured_per_consumer() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    qos(&ch, 2, false).await;
    let mut consumer = consume(&ch, "q", false).await;
    publish_n(&ch, "q", 10).await;

    let first = next_deliveries(&mut consumer, 2).await;
    assert_eq!(bodies(&first), ["m0", "m1"]);
    assert_no_delivery(&mut consumer).await;

    first[0].ack(BasicAckOptions::default()).await.unwrap();
    let third = next_delivery(&mut consumer).await;
    assert_eq!(third.data, b"m2");
    assert_no_delivery(&mut consumer).await;

    // Acking both outstanding frees two slots.
    ack(&ch, third.delivery_tag, true).await;
    let more = next_deliveries(&mut consumer, 2).await;
    assert_eq!(bodies(&more), ["m3", "m4"]);
    assert_no_delivery(&mut consumer).await;
    assert_eq!(message_count(&ch, "q").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_applies_to_consumers_created_after_qos() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "unlimited").await;
    declare_queue(&ch, "limited").await;
    let mut c_unlimited = consume(&ch, "unlimited", false).await;
    qos(&ch, 1, false).await;
    let mut c_limited = consume(&ch, "limited", false).await;
    publish_n(&ch, "unlimited", 5).await;
    publish_n(&ch, "limited", 5).await;
    next_deliveries(&mut c_unlimited, 5).await;
    next_deliveries(&mut c_limited, 1).await;
    assert_no_delivery(&mut c_limited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_is_shared_by_the_channels_consumers() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q1").await;
    declare_queue(&ch, "q2").await;
    qos(&ch, 3, true).await;
    let c1 = consume(&ch, "q1", false).await;
    let c2 = consume(&ch, "q2", false).await;
    publish_n(&ch, "q1", 5).await;
    publish_n(&ch, "q2", 5).await;

    let mut both = futures_util::stream::select(c1, c2);
    let mut got = Vec::new();
    for _ in 0..3 {
        match within("a delivery", both.next()).await {
            Some(Ok(d)) => got.push(d),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    if let Ok(extra) = tokio::time::timeout(QUIET, both.next()).await {
        panic!("global prefetch 3 exceeded: {extra:?}");
    }
    got[0].ack(BasicAckOptions::default()).await.unwrap();
    match within("a delivery", both.next()).await {
        Some(Ok(_)) => {}
        other => panic!("expected one more delivery after an ack, got {other:?}"),
    }
    if let Ok(extra) = tokio::time::timeout(QUIET, both.next()).await {
        panic!("global prefetch 3 exceeded after one ack: {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_size_is_not_implemented() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    // amq-protocol always encodes prefetch_size 0: build basic.qos by hand.
    let mut payload = Vec::new();
    payload.extend_from_slice(&60u16.to_be_bytes());
    payload.extend_from_slice(&10u16.to_be_bytes());
    payload.extend_from_slice(&1000u32.to_be_bytes()); // prefetch_size
    payload.extend_from_slice(&0u16.to_be_bytes()); // prefetch_count
    payload.push(0); // global
    c.send_bytes(&raw_frame(1, 1, &payload)).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 540,
            text: "NOT_IMPLEMENTED - prefetch_size!=0 (1000)".into(),
            class_id: 60,
            method_id: 10,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_qos_is_accepted() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    qos(&ch, 10, true).await;
    qos(&ch, 0, false).await;
}

// ----- consume / cancel ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_server_generated_tag() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let mut tags = Vec::new();
    for _ in 0..5 {
        let consumer = consume(&ch, "q", true).await;
        let tag = consumer.tag().as_str().to_owned();
        assert!(tag.starts_with("amq.ctag-"), "{tag}");
        assert_eq!(tag.len(), 31, "{tag}");
        tags.push(tag);
        std::mem::forget(consumer);
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_consumer_tag_exchange_and_key() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "amq.direct", "rk").await;
    let mut consumer = consume_tag(&ch, "q", "my-tag", false).await;
    assert_eq!(consumer.tag().as_str(), "my-tag");
    publish(&ch, "amq.direct", "rk", b"a").await;
    publish(&ch, "", "q", b"b").await;
    let a = next_delivery(&mut consumer).await;
    let b = next_delivery(&mut consumer).await;
    assert_eq!(
        (
            a.delivery_tag,
            a.exchange.as_str(),
            a.routing_key.as_str(),
            a.redelivered
        ),
        (1, "amq.direct", "rk", false)
    );
    assert_eq!(
        (
            b.delivery_tag,
            b.exchange.as_str(),
            b.routing_key.as_str(),
            b.redelivered
        ),
        (2, "", "q", false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_consumer_tag_is_a_connection_error() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let _first = consume_tag(&ch, "q", "x", false).await;
    let err = expect_err(
        "second consume with tag x",
        within(
            "basic.consume",
            ch.basic_consume(
                "q".into(),
                "x".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_connection_error(
        &conn,
        &err,
        530,
        "NOT_ALLOWED - attempt to reuse consumer tag 'x'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_consumer_tag_on_different_channels_is_fine() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let ch2 = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let _a = consume_tag(&ch, "q", "x", false).await;
    let _b = consume_tag(&ch2, "q", "x", false).await;
    sync(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_conflicts() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let text = "ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use";

    // An exclusive consumer when another consumer exists.
    let _normal = consume(&ch, "q", false).await;
    let c = open_channel(&conn).await;
    let err = expect_err(
        "exclusive consume",
        within(
            "basic.consume",
            c.basic_consume(
                "q".into(),
                "".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(&conn, &c, &err, 403, text).await;

    // Any consumer when an exclusive one exists.
    declare_queue(&ch, "q2").await;
    let _excl = within(
        "basic.consume",
        ch.basic_consume(
            "q2".into(),
            "".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let c = open_channel(&conn).await;
    let err = expect_err(
        "consume next to an exclusive consumer",
        within(
            "basic.consume",
            c.basic_consume(
                "q2".into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &c,
        &err,
        403,
        "ACCESS_REFUSED - queue 'q2' in vhost '/' in exclusive use",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_missing_queue_is_404() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "consume missing",
        within(
            "basic.consume",
            ch.basic_consume(
                "missing-q".into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &ch,
        &err,
        404,
        "NOT_FOUND - no queue 'missing-q' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let mut consumer = consume_tag(&ch, "q", "c", true).await;
    publish(&ch, "", "q", b"before").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"before");
    within(
        "basic.cancel",
        ch.basic_cancel("c".into(), BasicCancelOptions::default()),
    )
    .await
    .expect("basic.cancel-ok");
    match within("the consumer to end", consumer.next()).await {
        None => {}
        Some(other) => panic!("expected the consumer stream to end, got {other:?}"),
    }
    publish(&ch, "", "q", b"after").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1, "no consumer any more");
    // Cancelling an unknown tag is fine.
    within(
        "basic.cancel",
        ch.basic_cancel("nope".into(), BasicCancelOptions::default()),
    )
    .await
    .expect("cancel of an unknown tag");
    sync(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requeues_nothing_but_keeps_unacked_deliveries_ackable() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let mut consumer = consume_tag(&ch, "q", "c", false).await;
    publish_n(&ch, "q", 2).await;
    let ds = next_deliveries(&mut consumer, 2).await;
    within(
        "basic.cancel",
        ch.basic_cancel("c".into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    // Unacked deliveries stay with the channel after cancel (RabbitMQ semantics).
    assert_eq!(message_count(&ch, "q").await, 0);
    ack(&ch, ds[1].delivery_tag, true).await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_deletion_cancels_consumers_with_basic_cancel() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let cch = open_channel(&conn).await;
    let mut consumer = consume(&cch, "q", true).await;
    publish(&ch, "", "q", b"m").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"m");

    within(
        "queue.delete",
        ch.queue_delete("q".into(), Default::default()),
    )
    .await
    .unwrap();
    // lapin advertises consumer_cancel_notify: the broker's basic.cancel ends the stream.
    match within("the consumer to be cancelled", consumer.next()).await {
        None => {}
        Some(other) => panic!("expected the consumer stream to end, got {other:?}"),
    }
    // The consumer's channel stays open.
    assert!(cch.status().connected());
    sync(&cch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_cancel_frame_on_queue_deletion() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    let declare = AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(
        amq_protocol::protocol::queue::Declare {
            queue: "q".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        },
    ));
    c.call(1, declare).await;
    let reply = c
        .call(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: "q".into(),
                consumer_tag: "ctag".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
        )
        .await;
    assert!(
        matches!(reply, (1, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ref ok))) if ok.consumer_tag.as_str() == "ctag"),
        "{reply:?}"
    );
    let (_conn, ch) = connect_channel(&broker).await;
    within(
        "queue.delete",
        ch.queue_delete("q".into(), Default::default()),
    )
    .await
    .unwrap();
    match c.expect_method().await {
        (1, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel))) => {
            assert_eq!(cancel.consumer_tag.as_str(), "ctag");
        }
        other => panic!("expected basic.cancel, got {other:?}"),
    }
}

// ----- publish ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_is_404() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = async_error(
        &conn,
        "basic.publish",
        ch.basic_publish(
            "missing-x".into(),
            "k".into(),
            Default::default(),
            b"m",
            Default::default(),
        ),
    )
    .await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        404,
        "NOT_FOUND - no exchange 'missing-x' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_default_exchange_without_queue_is_dropped_silently() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    publish(&ch, "", "no-such-queue", b"m").await;
    sync(&ch).await;
    assert!(ch.status().connected());
    // A queue created afterwards does not get it.
    declare_queue(&ch, "no-such-queue").await;
    assert_eq!(message_count(&ch, "no-such-queue").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_message_is_returned_before_its_confirm() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    within("confirm.select", ch.confirm_select(Default::default()))
        .await
        .unwrap();
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_priority(3);
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "amq.direct".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            props.clone(),
        ),
    )
    .await
    .unwrap();
    let confirmation = within("confirm", confirm).await.unwrap();
    assert!(confirmation.is_ack(), "unroutable messages are acked");
    // lapin attaches a basic.return to the confirm only if it arrived first.
    let returned = confirmation
        .take_message()
        .expect("basic.return must arrive before the ack");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "amq.direct");
    assert_eq!(returned.delivery.routing_key.as_str(), "nowhere");
    assert_eq!(returned.delivery.data, b"lost");
    assert_eq!(returned.delivery.properties, props);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_message_is_returned_without_confirms() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            Default::default(),
        ),
    )
    .await
    .unwrap();
    sync(&ch).await; // the return precedes the sync reply on the channel
    let returned = within("returned messages", ch.wait_for_confirms())
        .await
        .unwrap();
    assert_eq!(returned.len(), 1);
    assert_eq!(returned[0].reply_code, 312);
    assert_eq!(returned[0].reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned[0].delivery.exchange.as_str(), "");
    assert_eq!(returned[0].delivery.routing_key.as_str(), "nowhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_routable_message_is_not_returned() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    within("confirm.select", ch.confirm_select(Default::default()))
        .await
        .unwrap();
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"m",
            Default::default(),
        ),
    )
    .await
    .unwrap();
    let confirmation = within("confirm", confirm).await.unwrap();
    assert!(confirmation.is_ack());
    assert!(confirmation.take_message().is_none());
    assert_eq!(message_count(&ch, "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_publish_is_not_implemented() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let err = async_error(
        &conn,
        "basic.publish immediate",
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions {
                immediate: true,
                ..Default::default()
            },
            b"m",
            Default::default(),
        ),
    )
    .await;
    assert_connection_error(&conn, &err, 540, "NOT_IMPLEMENTED - immediate=true").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_publish_close_names_basic_publish() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: true,
        })),
    )
    .await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 540,
            text: "NOT_IMPLEMENTED - immediate=true".into(),
            class_id: 60,
            method_id: 40,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_must_match_the_login() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_props(
        &ch,
        "",
        "q",
        b"ok",
        BasicProperties::default().with_user_id("guest".into()),
    )
    .await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1);

    let err = async_error(
        &conn,
        "publish as bob",
        ch.basic_publish(
            "".into(),
            "q".into(),
            Default::default(),
            b"spoofed",
            BasicProperties::default().with_user_id("bob".into()),
        ),
    )
    .await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'",
    )
    .await;
    let ch2 = open_channel(&conn).await;
    assert_eq!(message_count(&ch2, "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_larger_than_max_message_size_is_406() {
    let broker = start_broker_with(warren::Config {
        max_message_size: 1024,
        ..Default::default()
    })
    .await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish(&ch, "", "q", &[7u8; 1024]).await; // exactly the limit is fine
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1);

    let err = async_error(
        &conn,
        "publish 2000 bytes",
        ch.basic_publish(
            "".into(),
            "q".into(),
            Default::default(),
            &[7u8; 2000],
            Default::default(),
        ),
    )
    .await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1024",
    )
    .await;
    let ch2 = open_channel(&conn).await;
    assert_eq!(message_count(&ch2, "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_crosses_frame_max_intact() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let body: Vec<u8> = (0..(1 << 20) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut consumer = consume(&ch, "q", false).await;
    publish(&ch, "", "q", &body).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body, "1 MiB body must arrive byte for byte");
    // Through basic.get too (requeue it first).
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = next_delivery(&mut consumer).await;
    assert!(d.redelivered);
    assert!(d.data == body);
    ack(&ch, d.delivery_tag, false).await;

    publish(&ch, "", "q", &[]).await; // and an empty body
    assert_eq!(next_delivery(&mut consumer).await.data, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_message_through_basic_get() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    publish(&ch, "", "q", &body).await;
    let m = get(&ch, "q").await.unwrap();
    assert!(m.delivery.data == body);
}

fn rich_headers() -> FieldTable {
    let nested = table([
        ("inner-str", lstr("deep")),
        ("inner-int", AMQPValue::LongInt(-7)),
        (
            "inner-table",
            AMQPValue::FieldTable(table([("leaf", AMQPValue::Boolean(false))])),
        ),
    ]);
    table([
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(60000)),
        ("i32", AMQPValue::LongInt(-320_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-64_000_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 12345,
            }),
        ),
        ("str", lstr("hello \u{00e9}\u{4e16}")),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        (
            "bytes",
            AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 254, 255])),
        ),
        ("void", AMQPValue::Void),
        (
            "array",
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongInt(1),
                lstr("two"),
                AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(true)])),
                AMQPValue::FieldTable(table([("k", lstr("v"))])),
            ])),
        ),
        ("table", AMQPValue::FieldTable(nested)),
    ])
}

fn rich_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(rich_headers())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("replies".into())
        .with_expiration("60000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        .with_user_id("guest".into())
        .with_app_id("warren-tests".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_round_trip() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let props = rich_properties();
    let mut consumer = consume(&ch, "q", true).await;
    publish_props(&ch, "", "q", b"{}", props.clone()).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, props);
    publish_props(&ch, "", "q", b"{}", BasicProperties::default()).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, BasicProperties::default());
    // And through basic.get.
    within(
        "cancel",
        ch.basic_cancel(consumer.tag(), Default::default()),
    )
    .await
    .unwrap();
    publish_props(&ch, "", "q", b"{}", props.clone()).await;
    assert_eq!(get(&ch, "q").await.unwrap().delivery.properties, props);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_header_bytes_round_trip_exactly() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.call(
        1,
        AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(
            amq_protocol::protocol::queue::Declare {
                queue: "q".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                nowait: false,
                arguments: FieldTable::default(),
            },
        )),
    )
    .await;
    let props = rich_properties();
    c.publish(1, "", "q", props.clone(), b"payload").await;
    // The header frame payload exactly as we sent it.
    let sent = encode_frame(&AMQPFrame::Header(
        1,
        amq_protocol::frame::AMQPContentHeader {
            class_id: 60,
            body_size: 7,
            properties: props,
        },
    ));
    let sent_payload = sent[7..sent.len() - 1].to_vec();

    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: true,
        })),
    )
    .await;
    let (kind, channel, _get_ok) = c.read_raw_frame().await.expect("get-ok");
    assert_eq!((kind, channel), (1, 1));
    let (kind, channel, header) = c.read_raw_frame().await.expect("content header");
    assert_eq!((kind, channel), (2, 1));
    assert_eq!(
        header, sent_payload,
        "content header must be relayed byte for byte"
    );
    let (kind, _, body) = c.read_raw_frame().await.expect("body");
    assert_eq!((kind, body.as_slice()), (3, &b"payload"[..]));
}

// ----- get ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_and_get_empty() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    assert!(get(&ch, "q").await.is_none(), "basic.get-empty");
    publish_n(&ch, "q", 3).await;

    let m = get(&ch, "q").await.unwrap();
    assert_eq!(m.message_count, 2);
    assert_eq!(
        (
            m.delivery.delivery_tag,
            m.delivery.redelivered,
            m.delivery.exchange.as_str(),
            m.delivery.routing_key.as_str(),
            m.delivery.data.as_slice()
        ),
        (1, false, "", "q", &b"m0"[..])
    );
    let m1 = get(&ch, "q").await.unwrap();
    assert_eq!((m1.delivery.delivery_tag, m1.message_count), (2, 1));
    assert_eq!(m1.delivery.data, b"m1");

    // nack requeue=true: back at the head, redelivered.
    within(
        "nack",
        m.delivery.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    let again = get(&ch, "q").await.unwrap();
    assert_eq!(
        (
            again.delivery.delivery_tag,
            again.delivery.redelivered,
            again.message_count,
            again.delivery.data.as_slice()
        ),
        (3, true, 1, &b"m0"[..])
    );

    // no_ack get: nothing to acknowledge, gone for good.
    let last = get_opts(&ch, "q", true).await.unwrap();
    assert_eq!(
        (last.delivery.data.as_slice(), last.message_count),
        (&b"m2"[..], 0)
    );
    assert!(get(&ch, "q").await.is_none());
    ack(&ch, 0, true).await; // ack everything outstanding (m1, m0)
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_from_missing_queue_is_404() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "get from missing queue",
        within(
            "basic.get",
            ch.basic_get("missing-q".into(), Default::default()),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &ch,
        &err,
        404,
        "NOT_FOUND - no queue 'missing-q' in vhost '/'",
    )
    .await;
}

// ----- ack / nack / reject ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_nack_reject_single_and_multiple() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 6).await;
    let mut consumer = consume(&ch, "q", false).await;
    let ds = next_deliveries(&mut consumer, 6).await;
    assert_eq!(
        ds.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    // ack 2 (single), then multiple up to 3 (acks 1 and 3).
    ack(&ch, 2, false).await;
    ack(&ch, 3, true).await;
    // reject 4 without requeue: dropped.
    within(
        "reject",
        ch.basic_reject(4, BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    // nack multiple up to 6 without requeue: 5 and 6 dropped.
    within(
        "nack",
        ch.basic_nack(
            6,
            BasicNackOptions {
                multiple: true,
                requeue: false,
            },
        ),
    )
    .await
    .unwrap();
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
    assert_no_delivery(&mut consumer).await;
    // Nothing is outstanding any more: acking tag 1 again is an error (checked
    // elsewhere); closing the channel requeues nothing.
    within("close", ch.close(200, "OK".into())).await.unwrap();
    let (_c2, ch2) = connect_channel(&broker).await;
    assert_eq!(message_count(&ch2, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_with_requeue_keeps_order() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 4).await;
    let mut consumer = consume(&ch, "q", false).await;
    let ds = next_deliveries(&mut consumer, 4).await;
    within(
        "nack",
        ch.basic_nack(
            ds[2].delivery_tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await
    .unwrap();
    let again = next_deliveries(&mut consumer, 3).await;
    assert_eq!(bodies(&again), ["m0", "m1", "m2"]);
    assert!(again.iter().all(|d| d.redelivered));
    assert_eq!(
        again.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(),
        [5, 6, 7]
    );
}

async fn unknown_tag_case(
    setup: impl for<'a> FnOnce(
        &'a Channel,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>,
    action: impl for<'a> FnOnce(
        &'a Channel,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = lapin::Result<()>> + Send + 'a>,
    >,
    text: &str,
) {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    setup(&ch).await;
    let err = async_error(&conn, "ack-like method", action(&ch)).await;
    assert_channel_error(&conn, &ch, &err, 406, text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_unknown_delivery_tag_is_406() {
    unknown_tag_case(
        |_| Box::pin(async {}),
        |ch| Box::pin(ch.basic_ack(99, BasicAckOptions { multiple: false })),
        "PRECONDITION_FAILED - unknown delivery tag 99",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_multiple_of_unknown_delivery_tag_is_406() {
    unknown_tag_case(
        |_| Box::pin(async {}),
        |ch| Box::pin(ch.basic_ack(99, BasicAckOptions { multiple: true })),
        "PRECONDITION_FAILED - unknown delivery tag 99",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_is_406() {
    unknown_tag_case(
        |ch| {
            Box::pin(async move {
                publish(ch, "", "q", b"m").await;
                let m = get(ch, "q").await.unwrap();
                assert_eq!(m.delivery.delivery_tag, 1);
                ack(ch, 1, false).await;
            })
        },
        |ch| Box::pin(ch.basic_ack(1, BasicAckOptions { multiple: false })),
        "PRECONDITION_FAILED - unknown delivery tag 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_tag_zero_without_multiple_is_406() {
    unknown_tag_case(
        |_| Box::pin(async {}),
        |ch| Box::pin(ch.basic_ack(0, BasicAckOptions { multiple: false })),
        "PRECONDITION_FAILED - unknown delivery tag 0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_tag_zero_with_multiple_and_nothing_outstanding_is_fine() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    ack(&ch, 0, true).await;
    sync(&ch).await;
    assert!(ch.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_of_unknown_delivery_tag_is_406() {
    unknown_tag_case(
        |_| Box::pin(async {}),
        |ch| Box::pin(ch.basic_reject(99, BasicRejectOptions { requeue: true })),
        "PRECONDITION_FAILED - unknown delivery tag 99",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_multiple_of_unknown_delivery_tag_is_406() {
    unknown_tag_case(
        |_| Box::pin(async {}),
        |ch| {
            Box::pin(ch.basic_nack(
                99,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            ))
        },
        "PRECONDITION_FAILED - unknown delivery tag 99",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_an_auto_ack_delivery_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let mut consumer = consume(&ch, "q", true).await;
    publish(&ch, "", "q", b"m").await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.delivery_tag, 1);
    let err = async_error(
        &conn,
        "basic.ack",
        ch.basic_ack(1, BasicAckOptions::default()),
    )
    .await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_messages_go_back_to_their_original_position() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 5).await;
    let m0 = get(&ch, "q").await.unwrap();
    let m1 = get(&ch, "q").await.unwrap();
    let m2 = get(&ch, "q").await.unwrap();
    assert_eq!(
        bodies([&m0.delivery, &m1.delivery, &m2.delivery]),
        ["m0", "m1", "m2"]
    );
    // Requeue m1 first, then m0: order in the queue must still be m0 m1 m3 m4.
    within(
        "reject m1",
        m1.delivery.reject(BasicRejectOptions { requeue: true }),
    )
    .await
    .unwrap();
    within(
        "nack m0",
        m0.delivery.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    sync(&ch).await;
    let mut order = Vec::new();
    while let Some(m) = get_opts(&ch, "q", true).await {
        order.push((
            String::from_utf8(m.delivery.data.clone()).unwrap(),
            m.delivery.redelivered,
        ));
    }
    assert_eq!(
        order,
        [
            ("m0".to_string(), true),
            ("m1".to_string(), true),
            ("m3".to_string(), false),
            ("m4".to_string(), false)
        ]
    );
    // m2 is still unacked on the channel.
    ack(&ch, m2.delivery.delivery_tag, false).await;
    sync(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_message_is_redelivered_to_a_consumer_in_place() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    qos(&ch, 1, false).await;
    let mut consumer = consume(&ch, "q", false).await;
    publish_n(&ch, "q", 3).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!((d.data.as_slice(), d.redelivered), (&b"m0"[..], false));
    d.reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let d = next_delivery(&mut consumer).await;
    assert_eq!((d.data.as_slice(), d.redelivered), (&b"m0"[..], true));
    d.ack(BasicAckOptions::default()).await.unwrap();
    let d = next_delivery(&mut consumer).await;
    assert_eq!((d.data.as_slice(), d.redelivered), (&b"m1"[..], false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_requeued_when_the_channel_closes() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 4).await;
    let cch = open_channel(&conn).await;
    let mut consumer = consume(&cch, "q", false).await;
    let ds = next_deliveries(&mut consumer, 4).await;
    ds[1].ack(BasicAckOptions::default()).await.unwrap();
    sync(&cch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
    within("close", cch.close(200, "OK".into())).await.unwrap();
    assert_eq!(message_count(&ch, "q").await, 3);
    let mut order = Vec::new();
    while let Some(m) = get_opts(&ch, "q", true).await {
        assert!(m.delivery.redelivered);
        order.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(order, ["m0", "m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_requeued_when_the_connection_closes() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 3).await;
    {
        let (cconn, cch) = connect_channel(&broker).await;
        let mut consumer = consume(&cch, "q", false).await;
        next_deliveries(&mut consumer, 3).await;
        let held = get(&ch, "q").await; // nothing left for basic.get
        assert!(held.is_none());
        within("close", cconn.close(200, "OK".into()))
            .await
            .unwrap();
    }
    eventually("the consumer connection to go", || {
        broker.connection_count() == 1
    })
    .await;
    assert_eq!(message_count(&ch, "q").await, 3);
    let m = get(&ch, "q").await.unwrap();
    assert!(m.delivery.redelivered);
    assert_eq!(
        (m.delivery.data.as_slice(), m.message_count),
        (&b"m0"[..], 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_requeued_when_the_socket_dies() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 2).await;
    let mut raw = RawClient::open(broker.local_addr()).await;
    raw.open_channel(1).await;
    raw.call(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "c".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    // Wait until both messages were delivered to the raw client.
    let mut delivered = 0;
    while delivered < 2 {
        if let Some(AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Deliver(_)))) =
            raw.read_frame().await
        {
            delivered += 1;
        }
    }
    assert_eq!(message_count(&ch, "q").await, 0);
    drop(raw);
    eventually("the raw connection to go", || {
        broker.connection_count() == 1
    })
    .await;
    assert_eq!(message_count(&ch, "q").await, 2);
}

// ----- recover ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_with_requeue_redelivers_unacked_messages() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let mut consumer = consume(&ch, "q", false).await;
    publish_n(&ch, "q", 2).await;
    let first = next_deliveries(&mut consumer, 2).await;
    assert!(first.iter().all(|d| !d.redelivered));
    within(
        "basic.recover",
        ch.basic_recover(BasicRecoverOptions { requeue: true }),
    )
    .await
    .expect("basic.recover-ok");
    let again = next_deliveries(&mut consumer, 2).await;
    assert_eq!(bodies(&again), ["m0", "m1"]);
    assert!(again.iter().all(|d| d.redelivered));
    assert_eq!(
        again.iter().map(|d| d.delivery_tag).collect::<Vec<_>>(),
        [3, 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_without_requeue_is_not_implemented() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "basic.recover requeue=false",
        within(
            "basic.recover",
            ch.basic_recover(BasicRecoverOptions { requeue: false }),
        )
        .await,
    );
    assert_connection_error(&conn, &err, 540, "NOT_IMPLEMENTED - requeue=false").await;
}

// ----- dispatch -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_between_consumers_of_one_queue() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let cha = open_channel(&conn).await;
    let chb = open_channel(&conn).await;
    let mut a = consume(&cha, "q", true).await;
    let mut b = consume(&chb, "q", true).await;
    publish_n(&ch, "q", 10).await;
    let got_a = next_deliveries(&mut a, 5).await;
    let got_b = next_deliveries(&mut b, 5).await;
    assert_eq!(bodies(&got_a), ["m0", "m2", "m4", "m6", "m8"]);
    assert_eq!(bodies(&got_b), ["m1", "m3", "m5", "m7", "m9"]);
    assert_no_delivery(&mut a).await;
    assert_no_delivery(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_consumer_is_skipped_by_round_robin() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let cha = open_channel(&conn).await;
    let chb = open_channel(&conn).await;
    qos(&cha, 1, false).await;
    let mut a = consume(&cha, "q", false).await;
    let mut b = consume(&chb, "q", false).await;
    publish_n(&ch, "q", 6).await;
    // a is full after one message; b gets the rest.
    let got_a = next_deliveries(&mut a, 1).await;
    let got_b = next_deliveries(&mut b, 5).await;
    assert_eq!(bodies(&got_a), ["m0"]);
    assert_eq!(bodies(&got_b), ["m1", "m2", "m3", "m4", "m5"]);
    assert_no_delivery(&mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_receives_backlog_in_order() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 100).await;
    let mut consumer = consume(&ch, "q", true).await;
    let ds = next_deliveries(&mut consumer, 100).await;
    let expected: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies(&ds), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_consumer_on_owner_connection() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let q = within(
        "declare",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    let name = q.name().as_str().to_owned();
    let mut consumer = consume(&ch, &name, true).await;
    publish(&ch, "", &name, b"m").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_of_a_deleted_queue_can_still_be_acked() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 2).await;
    let m = get(&ch, "q").await.unwrap();
    within(
        "queue.delete",
        ch.queue_delete("q".into(), Default::default()),
    )
    .await
    .unwrap();
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    sync(&ch).await;
    assert!(ch.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_nowait_delivers_without_consume_ok() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_n(&ch, "q", 1).await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "q".into(),
            consumer_tag: "nw".into(),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: true,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    match c.expect_method().await {
        (1, AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) => {
            assert_eq!((d.consumer_tag.as_str(), d.delivery_tag), ("nw", 1));
        }
        other => panic!("expected basic.deliver first, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_ignores_prefetch() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    qos(&ch, 1, false).await;
    qos(&ch, 1, true).await;
    publish_n(&ch, "q", 3).await;
    for i in 0..3 {
        let m = get(&ch, "q")
            .await
            .expect("basic.get is not limited by qos");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
    }
}
