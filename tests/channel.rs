//! Channel lifecycle, channel-level versus connection-level errors, channel.flow.

use lapin::options::{AccessRequestOptions, ChannelFlowOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use warren_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_use_and_close_channels() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let a = open_channel(&conn).await;
    let b = open_channel(&conn).await;
    assert_ne!(a.id(), b.id());
    declare_queue(&a, "q").await;
    publish(&b, "", "q", b"hello").await;
    within("channel.close", a.close(200, "OK".into()))
        .await
        .expect("channel.close-ok");
    assert!(!a.status().connected());
    // The other channel and the connection are unaffected.
    let m = get(&b, "q").await.expect("message still there");
    assert_eq!(m.delivery.data, b"hello");
    within("channel.close", b.close(200, "OK".into()))
        .await
        .expect("channel.close-ok");
    assert!(conn.status().connected());
    // Channels can be opened again afterwards.
    let c = open_channel(&conn).await;
    sync(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_on_one_connection() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let mut chans = Vec::new();
    for _ in 0..50 {
        chans.push(open_channel(&conn).await);
    }
    for (i, ch) in chans.iter().enumerate() {
        declare_queue(ch, &format!("q{i}")).await;
    }
    for (i, ch) in chans.iter().enumerate() {
        publish(ch, "", &format!("q{i}"), format!("m{i}").as_bytes()).await;
    }
    for (i, ch) in chans.iter().enumerate() {
        let m = get(ch, &format!("q{i}")).await.expect("message");
        assert_eq!(m.delivery.data, format!("m{i}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_closes_only_that_channel() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let good = open_channel(&conn).await;
    let bad = open_channel(&conn).await;
    declare_queue(&good, "q").await;

    let err = expect_err(
        "passive declare of a missing queue",
        within(
            "queue.declare",
            bad.queue_declare(
                "missing".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &bad,
        &err,
        404,
        "NOT_FOUND - no queue 'missing' in vhost '/'",
    )
    .await;

    // The sibling channel keeps working: publish, get, consume.
    publish(&good, "", "q", b"still here").await;
    let m = get(&good, "q").await.expect("message");
    assert_eq!(m.delivery.data, b"still here");
    let mut consumer = consume(&good, "q", true).await;
    publish(&good, "", "q", b"consumed").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"consumed");
    // Using the closed channel fails locally.
    assert!(bad.basic_qos(1, Default::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_requeues_only_that_channels_messages() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let a = open_channel(&conn).await;
    let b = open_channel(&conn).await;
    declare_queue(&a, "q").await;
    for i in 0..4 {
        publish(&a, "", "q", format!("m{i}").as_bytes()).await;
    }
    let ma = get(&a, "q").await.unwrap();
    let mb = get(&b, "q").await.unwrap();
    assert_eq!(
        (ma.delivery.data.as_slice(), mb.delivery.data.as_slice()),
        (&b"m0"[..], &b"m1"[..])
    );
    // Error on channel a: its unacked m0 goes back, b's m1 stays unacked.
    let mut errors = Errors::new(&conn);
    within("basic.ack", a.basic_ack(99, Default::default()))
        .await
        .expect("basic.ack sent");
    let err = errors.next().await;
    assert_channel_error(
        &conn,
        &a,
        &err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 99",
    )
    .await;
    assert_eq!(message_count(&b, "q").await, 3);
    let again = get(&b, "q").await.unwrap();
    assert_eq!(again.delivery.data, b"m0");
    assert!(again.delivery.redelivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_error_leaves_other_connections_working() {
    let broker = start_broker().await;
    let (conn_bad, ch_bad) = connect_channel(&broker).await;
    let (conn_good, ch_good) = connect_channel(&broker).await;
    declare_queue(&ch_good, "q").await;
    eventually("two connections", || broker.connection_count() == 2).await;

    let err = expect_err(
        "declare exchange of unknown type",
        within(
            "exchange.declare",
            ch_bad.exchange_declare(
                "x".into(),
                lapin::ExchangeKind::Custom("foo".into()),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_connection_error(
        &conn_bad,
        &err,
        503,
        "COMMAND_INVALID - invalid exchange type 'foo'",
    )
    .await;
    eventually("the failed connection to be gone", || {
        broker.connection_count() == 1
    })
    .await;

    assert!(conn_good.status().connected());
    publish(&ch_good, "", "q", b"ok").await;
    assert_eq!(get(&ch_good, "q").await.unwrap().delivery.data, b"ok");
    // And new connections are still accepted.
    let (_c3, ch3) = connect_channel(&broker).await;
    assert_eq!(message_count(&ch3, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_true_is_acknowledged() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let active = within(
        "channel.flow",
        ch.channel_flow(ChannelFlowOptions { active: true }),
    )
    .await
    .expect("channel.flow-ok");
    assert!(active);
    sync(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_false_is_not_implemented() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "channel.flow active=false",
        within(
            "channel.flow",
            ch.channel_flow(ChannelFlowOptions { active: false }),
        )
        .await,
    );
    assert_connection_error(&conn, &err, 540, "NOT_IMPLEMENTED - active=false").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_request_is_answered() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    within(
        "access.request",
        ch.access_request(
            "/data".into(),
            AccessRequestOptions {
                active: true,
                read: true,
                write: true,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("access.request-ok");
    sync(&ch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_connection_closes_its_channels() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let ch2 = open_channel(&conn).await;
    within("connection.close", conn.close(200, "OK".into()))
        .await
        .unwrap();
    assert!(!ch.status().connected());
    assert!(!ch2.status().connected());
    eventually("no connections", || broker.connection_count() == 0).await;
}
