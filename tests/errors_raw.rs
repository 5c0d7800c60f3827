//! Protocol violations only a hand-written client can produce.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
use amq_protocol::protocol::{basic, channel as ch, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable};
use warren_integration_tests::*;

async fn opened(broker: &warren::Broker) -> RawClient {
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c
}

fn publish_method(channel: u16) -> Vec<u8> {
    encode_method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

fn header_frame(channel: u16, class_id: u16, body_size: u64) -> Vec<u8> {
    encode_frame(&AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id,
            body_size,
            properties: Default::default(),
        },
    ))
}

fn qos_method(channel: u16) -> Vec<u8> {
    encode_method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 1,
            global: false,
        })),
    )
}

fn declare(name: &str, arguments: FieldTable) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments,
    }))
}

/// The broker must still serve new connections.
async fn broker_still_works(broker: &warren::Broker) {
    let (_conn, ch) = connect_channel(broker).await;
    declare_queue(&ch, "still-alive").await;
    publish(&ch, "", "still-alive", b"ok").await;
    assert_eq!(get(&ch, "still-alive").await.unwrap().delivery.data, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_channel_open_is_a_connection_error() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.send_method(1, AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {})))
        .await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 504,
            text: "CHANNEL_ERROR - second 'channel.open' seen".into(),
            class_id: 20,
            method_id: 10,
        }
    );
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_on_unopened_channel_is_a_connection_error() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.send_method(7, declare("q", FieldTable::default())).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 504,
            text: "CHANNEL_ERROR - expected 'channel.open'".into(),
            class_id: 50,
            method_id: 10,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_number_can_be_reused_after_close() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let reply = c
        .call(
            1,
            AMQPClass::Channel(ch::AMQPMethod::Close(ch::Close {
                reply_code: 200,
                reply_text: "OK".into(),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await;
    assert!(
        matches!(reply, (1, AMQPClass::Channel(ch::AMQPMethod::CloseOk(_)))),
        "{reply:?}"
    );
    c.open_channel(1).await;
    let reply = c.call(1, declare("q", FieldTable::default())).await;
    assert!(
        matches!(
            reply,
            (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))
        ),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_after_a_channel_error_are_ignored_until_close_ok() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let passive = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: "missing".into(),
        passive: true,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }));
    c.send_method(1, passive).await;
    // Sent before we saw channel.close: must be dropped, not answered.
    c.send_method(1, declare("q", FieldTable::default())).await;
    let close = c.expect_channel_close(1).await;
    assert_eq!(
        close,
        CloseInfo {
            code: 404,
            text: "NOT_FOUND - no queue 'missing' in vhost '/'".into(),
            class_id: 50,
            method_id: 10,
        }
    );
    // Reopen and use the channel: the first reply is to the new request.
    c.open_channel(1).await;
    let reply = c.call(1, declare("q2", FieldTable::default())).await;
    match reply {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => {
            assert_eq!(ok.queue.as_str(), "q2")
        }
        other => panic!("expected declare-ok for q2, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_on_a_nonzero_channel_is_unexpected_frame() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.send_frame(&AMQPFrame::InvalidHeartbeat(1)).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 505, "{close:?}");
    assert!(close.text.starts_with("UNEXPECTED_FRAME - "), "{close:?}");
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_a_frame_error() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    // Only the 7-byte header announcing 200000 bytes: the broker must refuse
    // from the header alone, without waiting for (or buffering) the payload.
    let mut head = vec![3u8];
    head.extend_from_slice(&1u16.to_be_bytes());
    head.extend_from_slice(&200_000u32.to_be_bytes());
    c.send_bytes(&head).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_of_exactly_frame_max_is_accepted() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.call(1, declare("q", FieldTable::default())).await;
    // Body frames filling frame_max exactly (131072 - 8 bytes of payload).
    let body = vec![9u8; 131_072 - 8];
    let mut out = publish_method(1);
    out.extend(header_frame(1, 60, body.len() as u64));
    out.extend(encode_frame(&AMQPFrame::Body(1, body)));
    c.send_bytes(&out).await;
    let reply = c.call(1, declare("q", FieldTable::default())).await;
    match reply {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => assert_eq!(ok.message_count, 1),
        other => panic!("expected declare-ok, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frame_end_is_a_frame_error() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let mut frame = qos_method(1);
    *frame.last_mut().unwrap() = 0x00;
    c.send_bytes(&frame).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_frame_type_is_a_frame_error() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.send_bytes(&raw_frame(9, 1, b"??")).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_class_is_command_invalid() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let mut payload = Vec::new();
    payload.extend_from_slice(&99u16.to_be_bytes());
    payload.extend_from_slice(&10u16.to_be_bytes());
    payload.extend_from_slice(b"junk");
    c.send_bytes(&raw_frame(1, 1, &payload)).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 503, "{close:?}");
    assert!(close.text.starts_with("COMMAND_INVALID - "), "{close:?}");
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_method_arguments_close_the_connection() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    // queue.declare with its arguments cut off in the middle of the queue name.
    let full = encode_method(
        1,
        declare("a-rather-long-queue-name", FieldTable::default()),
    );
    let payload = &full[7..7 + 10];
    c.send_bytes(&raw_frame(1, 1, payload)).await;
    let close = c.expect_connection_close().await;
    assert!(
        close.code >= 500,
        "a malformed method is a hard (connection) error: {close:?}"
    );
    broker_still_works(&broker).await;
}

// Content frames out of order. Every case is a connection error 505; the
// exact texts (and the method named in the close frame) are RabbitMQ's, from
// rabbit_command_assembler.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_frames_out_of_order_are_unexpected_frame_errors() {
    let broker = start_broker().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "stray body",
            encode_frame(&AMQPFrame::Body(1, b"stray".to_vec())),
        ),
        ("stray header", header_frame(1, 60, 5)),
        (
            "method instead of header",
            [publish_method(1), qos_method(1)].concat(),
        ),
        (
            "body instead of header",
            [
                publish_method(1),
                encode_frame(&AMQPFrame::Body(1, b"x".to_vec())),
            ]
            .concat(),
        ),
        (
            "header of another class",
            [publish_method(1), header_frame(1, 50, 5)].concat(),
        ),
        (
            "method instead of body",
            [
                publish_method(1),
                header_frame(1, 60, 10),
                encode_frame(&AMQPFrame::Body(1, b"12345".to_vec())),
                qos_method(1),
            ]
            .concat(),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = opened(&broker).await;
        c.send_bytes(&bytes).await;
        let close = c.expect_connection_close().await;
        assert_eq!(close.code, 505, "{what}: {close:?}");
        assert!(
            close.text.starts_with("UNEXPECTED_FRAME - "),
            "{what}: {close:?}"
        );
    }
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn body_frame_without_publish_is_unexpected() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.send_frame(&AMQPFrame::Body(1, b"stray".to_vec())).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 505,
            text: "UNEXPECTED_FRAME - expected method frame, got non method frame instead".into(),
            class_id: 0,
            method_id: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn header_frame_without_publish_is_unexpected() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.send_bytes(&header_frame(1, 60, 5)).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 505,
            text: "UNEXPECTED_FRAME - expected method frame, got non method frame instead".into(),
            class_id: 0,
            method_id: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn method_instead_of_content_header_is_unexpected() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let mut out = publish_method(1);
    out.extend(qos_method(1));
    c.send_bytes(&out).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 505,
            text: "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead".into(),
            class_id: 60,
            method_id: 40,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn body_instead_of_content_header_is_unexpected() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let mut out = publish_method(1);
    out.extend(encode_frame(&AMQPFrame::Body(1, b"early".to_vec())));
    c.send_bytes(&out).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 505,
            text: "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead".into(),
            class_id: 60,
            method_id: 40,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn content_header_for_another_class_is_unexpected() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let mut out = publish_method(1);
    out.extend(header_frame(1, 50, 5));
    c.send_bytes(&out).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 505,
            text: "UNEXPECTED_FRAME - expected content header for class 60, got one for class 50 instead".into(),
            class_id: 60,
            method_id: 40,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn method_instead_of_content_body_is_unexpected() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let mut out = publish_method(1);
    out.extend(header_frame(1, 60, 10));
    out.extend(encode_frame(&AMQPFrame::Body(1, b"12345".to_vec())));
    out.extend(qos_method(1));
    c.send_bytes(&out).await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 505,
            text: "UNEXPECTED_FRAME - expected content body, got non content body frame instead"
                .into(),
            class_id: 60,
            method_id: 40,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_on_one_channel_does_not_block_another() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    c.open_channel(2).await;
    c.call(1, declare("q", FieldTable::default())).await;
    // Interleave: publish+header on channel 1, then a whole method on channel 2,
    // then the body on channel 1. Content assembly is per channel.
    let mut out = publish_method(1);
    out.extend(header_frame(1, 60, 3));
    out.extend(encode_method(2, declare("q2", FieldTable::default())));
    out.extend(encode_frame(&AMQPFrame::Body(1, b"abc".to_vec())));
    c.send_bytes(&out).await;
    match c.expect_method().await {
        (2, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => {
            assert_eq!(ok.queue.as_str(), "q2")
        }
        other => panic!("expected declare-ok on channel 2, got {other:?}"),
    }
    match c.call(1, declare("q", FieldTable::default())).await {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => assert_eq!(ok.message_count, 1),
        other => panic!("expected declare-ok on channel 1, got {other:?}"),
    }
}

fn nested_array(depth: usize) -> AMQPValue {
    let mut v = AMQPValue::LongInt(1);
    for _ in 0..depth {
        v = AMQPValue::FieldArray(FieldArray::from(vec![v]));
    }
    v
}

fn nested_table(depth: usize) -> AMQPValue {
    let mut v = AMQPValue::LongInt(1);
    for _ in 0..depth {
        v = AMQPValue::FieldTable(table([("n", v)]));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderately_nested_tables_are_accepted() {
    let broker = start_broker().await;
    let mut c = opened(&broker).await;
    let args = table([
        ("x-nested-a", nested_array(20)),
        ("x-nested-t", nested_table(20)),
    ]);
    match c.call(1, declare("q", args)).await {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {}
        other => panic!("expected declare-ok, got {other:?}"),
    }
}

/// Hand-encode `depth` nested arrays around a long int: 'A' len ( 'A' len ( ... 'I' 1 ) ).
fn deep_array_bytes(depth: usize) -> Vec<u8> {
    let mut inner = vec![b'I', 0, 0, 0, 1];
    for _ in 0..depth {
        let mut outer = vec![b'A'];
        outer.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        outer.extend_from_slice(&inner);
        inner = outer;
    }
    inner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_deeply_nested_table_does_not_crash_the_broker() {
    // 20000 levels in ~100 KB: a recursive parser would overflow its stack.
    // RabbitMQ's reply to this is not recorded; what matters is that the
    // broker answers (accepts or refuses with a connection error) and survives.
    let broker = start_broker().await;
    let (_watch_conn, watch) = connect_channel(&broker).await;
    declare_queue(&watch, "watch").await;

    let mut c = opened(&broker).await;
    let value = deep_array_bytes(20_000);
    let mut table_bytes = vec![b"x-deep".len() as u8];
    table_bytes.extend_from_slice(b"x-deep");
    table_bytes.extend_from_slice(&value);
    // queue.declare: ticket, queue name, flags, arguments table.
    let mut payload = Vec::new();
    payload.extend_from_slice(&50u16.to_be_bytes());
    payload.extend_from_slice(&10u16.to_be_bytes());
    payload.extend_from_slice(&0u16.to_be_bytes());
    payload.push(4);
    payload.extend_from_slice(b"deep");
    payload.push(0);
    payload.extend_from_slice(&(table_bytes.len() as u32).to_be_bytes());
    payload.extend_from_slice(&table_bytes);
    assert!(payload.len() < 131_072 - 8);
    c.send_bytes(&raw_frame(1, 1, &payload)).await;
    match c.read_frame().await {
        Some(AMQPFrame::Method(1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)))) => {}
        Some(AMQPFrame::Method(
            0,
            AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::Close(close)),
        )) => {
            assert!(close.reply_code >= 500, "{close:?}");
        }
        other => panic!("expected declare-ok or connection.close, got {other:?}"),
    }
    // The broker and its other connections are fine.
    publish(&watch, "", "watch", b"alive").await;
    assert_eq!(get(&watch, "watch").await.unwrap().delivery.data, b"alive");
    broker_still_works(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_deeply_nested_headers_do_not_crash_the_broker() {
    let broker = start_broker().await;
    let (_watch_conn, watch) = connect_channel(&broker).await;
    declare_queue(&watch, "watch").await;

    let mut c = opened(&broker).await;
    c.call(1, declare("q", FieldTable::default())).await;
    // Content header: class 60, weight 0, body size 1, flags = headers only, table.
    let value = deep_array_bytes(20_000);
    let mut table_bytes = vec![1u8, b'h'];
    table_bytes.extend_from_slice(&value);
    let mut header = Vec::new();
    header.extend_from_slice(&60u16.to_be_bytes());
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&1u64.to_be_bytes());
    header.extend_from_slice(&0x2000u16.to_be_bytes());
    header.extend_from_slice(&(table_bytes.len() as u32).to_be_bytes());
    header.extend_from_slice(&table_bytes);
    let mut out = publish_method(1);
    out.extend(raw_frame(2, 1, &header));
    out.extend(encode_frame(&AMQPFrame::Body(1, b"x".to_vec())));
    c.send_bytes(&out).await;
    // Whatever the broker decides about the message, it must stay up.
    let _ = c
        .read_frame_timeout(std::time::Duration::from_millis(500))
        .await;
    publish(&watch, "", "watch", b"alive").await;
    assert_eq!(get(&watch, "watch").await.unwrap().delivery.data, b"alive");
    broker_still_works(&broker).await;
}

// RabbitMQ limits how many channels are open (rabbit_reader:create_channel),
// reporting "number of channels opened (N) has reached the negotiated
// channel_max (N)" as a connection error that names no method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn opening_more_channels_than_channel_max_is_refused() {
    let broker = start_broker().await;
    let mut c = RawClient::open_with(
        broker.local_addr(),
        Tuning {
            channel_max: Some(2),
            ..Default::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send_method(3, AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {})))
        .await;
    assert_eq!(
        c.expect_connection_close().await,
        CloseInfo {
            code: 530,
            text: "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)".into(),
            class_id: 0,
            method_id: 0,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_more_channels_than_channel_max_is_a_530_connection_error() {
    let broker = start_broker().await;
    let mut c = RawClient::open_with(
        broker.local_addr(),
        Tuning {
            channel_max: Some(2),
            ..Default::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.open_channel(2).await;
    c.send_method(3, AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {})))
        .await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 530, "{close:?}");
    assert!(close.text.starts_with("NOT_ALLOWED - "), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_negotiated_frame_max_are_refused() {
    // The client lowered frame_max to 8192: a 9000-byte body frame is too big,
    // even though the broker's own limit is 131072.
    let broker = start_broker().await;
    let mut c = RawClient::open_with(
        broker.local_addr(),
        Tuning {
            frame_max: Some(8192),
            ..Default::default()
        },
    )
    .await;
    c.open_channel(1).await;
    let mut out = publish_method(1);
    out.extend(header_frame(1, 60, 9000));
    out.extend(encode_frame(&AMQPFrame::Body(1, vec![1u8; 9000])));
    c.send_bytes(&out).await;
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 501, "{close:?}");
    assert!(close.text.starts_with("FRAME_ERROR - "), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_respect_the_clients_frame_max() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    publish(&ch, "", "q", &body).await;
    // The get below is on another connection: make sure the message is queued.
    sync(&ch).await;

    let mut c = RawClient::open_with(
        broker.local_addr(),
        Tuning {
            frame_max: Some(8192),
            ..Default::default()
        },
    )
    .await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: "q".into(),
            no_ack: true,
        })),
    )
    .await;
    let (kind, _, _) = c.read_raw_frame().await.expect("get-ok");
    assert_eq!(kind, 1);
    let (kind, _, _) = c.read_raw_frame().await.expect("header");
    assert_eq!(kind, 2);
    let mut received = Vec::new();
    while received.len() < body.len() {
        let (kind, channel, payload) = c.read_raw_frame().await.expect("body frame");
        assert_eq!((kind, channel), (3, 1));
        assert!(
            payload.len() + 8 <= 8192,
            "body frame of {} bytes exceeds the negotiated frame_max",
            payload.len() + 8
        );
        received.extend(payload);
    }
    assert!(received == body);
}
