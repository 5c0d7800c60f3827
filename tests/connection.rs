//! Connection handshake, authentication, tuning, heartbeats and timeouts.

use std::time::Duration;

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{connection as conn, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, LongString};
use warren_integration_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_handshake_negotiates_rabbitmq_tune_values() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    assert!(conn.status().connected());
    let cfg = conn.configuration();
    assert_eq!(cfg.channel_max(), 2047);
    assert_eq!(cfg.frame_max(), 131072);
    assert_eq!(cfg.heartbeat(), 60);
    eventually("the broker to count the connection", || {
        broker.connection_count() == 1
    })
    .await;

    let ch = open_channel(&conn).await;
    assert_eq!(ch.id(), 1, "the first channel lapin opens is number 1");

    within("connection.close", conn.close(200, "bye".into()))
        .await
        .expect("clean close");
    eventually("the broker to forget the connection", || {
        broker.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tune_offers_rabbitmq_defaults() {
    let broker = start_broker().await;
    let c = RawClient::open(broker.local_addr()).await;
    let tune = c.hello.as_ref().unwrap().tune.clone();
    assert_eq!(
        (tune.channel_max, tune.frame_max, tune.heartbeat),
        (2047, 131072, 60)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_properties_and_capabilities() {
    let broker = start_broker().await;
    let c = RawClient::open(broker.local_addr()).await;
    let start = &c.hello.as_ref().unwrap().start;
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(start.locales.to_string(), "en_US");
    let mechanisms = start.mechanisms.to_string();
    assert!(
        mechanisms.split(' ').any(|m| m == "PLAIN"),
        "mechanisms {mechanisms:?} must offer PLAIN"
    );

    let props = start.server_properties.inner();
    match props.get("product") {
        Some(AMQPValue::LongString(s)) => assert_eq!(s.to_string(), "RabbitMQ"),
        other => panic!("product: {other:?}"),
    }
    for key in ["version", "platform", "copyright", "information"] {
        assert!(
            matches!(props.get(key), Some(AMQPValue::LongString(_))),
            "server property {key} missing or not a longstr: {:?}",
            props.get(key)
        );
    }
    let caps = match props.get("capabilities") {
        Some(AMQPValue::FieldTable(t)) => t.inner().clone(),
        other => panic!("capabilities: {other:?}"),
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert_eq!(
            caps.get(cap),
            Some(&AMQPValue::Boolean(true)),
            "capability {cap}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_403() {
    let broker = start_broker().await;
    let err = expect_err(
        "login with a wrong password",
        try_connect(&url_for(&broker, "guest", "wrong", "/")).await,
    );
    assert_closed_with(
        &err,
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
    );
    eventually("the refused connection to go away", || {
        broker.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_refused_with_403() {
    let broker = start_broker().await;
    let err = expect_err(
        "login as an unknown user",
        try_connect(&url_for(&broker, "nobody", "guest", "/")).await,
    );
    assert_closed_with(
        &err,
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_refused_with_530() {
    let broker = start_broker().await;
    let err = expect_err(
        "open vhost nope",
        try_connect(&url_for(&broker, "guest", "guest", "nope")).await,
    );
    assert_closed_with(&err, 530, "NOT_ALLOWED - vhost nope not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_close_names_connection_open() {
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.start_and_tune(Tuning::default()).await;
    c.send_method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
            virtual_host: "nope".into(),
        })),
    )
    .await;
    let close = c.expect_connection_close().await;
    assert_eq!(
        close,
        CloseInfo {
            code: 530,
            text: "NOT_ALLOWED - vhost nope not found".into(),
            class_id: 10,
            method_id: 40,
        }
    );
}

async fn assert_header_refused(header: &[u8]) {
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.send_bytes(header).await;
    let reply = c.read_bytes(16).await;
    assert_eq!(
        reply,
        b"AMQP\x00\x00\x09\x01".to_vec(),
        "reply to protocol header {header:?}"
    );
    c.expect_eof().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_amqp_version_gets_0_9_1_header_back() {
    assert_header_refused(b"AMQP\x00\x00\x09\x02").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_1_0_header_gets_0_9_1_header_back() {
    assert_header_refused(b"AMQP\x00\x01\x00\x00").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_gets_0_9_1_header_back() {
    assert_header_refused(b"HTTP/1.1 200 OK\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_0_9_header_is_accepted_as_0_9_1() {
    // RabbitMQ treats the 0-9 header (AMQP 1 1 0 9) as 0-9-1.
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.send_bytes(b"AMQP\x01\x01\x00\x09").await;
    match c.expect_method().await {
        (0, AMQPClass::Connection(conn::AMQPMethod::Start(_))) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_handshake_timeout() {
    let broker = start_broker_with(warren::Config {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    // Nothing sent at all: the broker must give up and close the socket.
    tokio::time::timeout(Duration::from_secs(5), c.expect_eof())
        .await
        .expect("the broker closes a silent socket after its handshake timeout");
    eventually("the connection to be forgotten", || {
        broker.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_stalling_in_the_handshake_is_closed_after_timeout() {
    let broker = start_broker_with(warren::Config {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.send_bytes(b"AMQP\x00\x00\x09\x01").await;
    match c.expect_method().await {
        (0, AMQPClass::Connection(conn::AMQPMethod::Start(_))) => {}
        other => panic!("expected connection.start, got {other:?}"),
    }
    // No start-ok: the broker must close the socket.
    tokio::time::timeout(Duration::from_secs(5), c.expect_eof())
        .await
        .expect("the broker closes a stalled handshake");
}

fn one_second_heartbeats() -> warren::Config {
    warren::Config {
        heartbeat: 1,
        ..Default::default()
    }
}

fn heartbeat_tuning() -> Tuning {
    Tuning {
        heartbeat: Some(1),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_offers_configured_heartbeat_and_sends_heartbeats() {
    let broker = start_broker_with(one_second_heartbeats()).await;
    let mut c = RawClient::open_with(broker.local_addr(), heartbeat_tuning()).await;
    assert_eq!(c.hello.as_ref().unwrap().tune.heartbeat, 1);
    let frame = c
        .read_frame_timeout(Duration::from_secs(3))
        .await
        .expect("a frame within 3 s");
    assert_eq!(frame, Some(AMQPFrame::Heartbeat));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_disconnected_after_missed_heartbeats() {
    let broker = start_broker_with(one_second_heartbeats()).await;
    let mut c = RawClient::open_with(broker.local_addr(), heartbeat_tuning()).await;
    eventually("the broker to count the connection", || {
        broker.connection_count() == 1
    })
    .await;
    // We never send anything: with heartbeat 1 s the broker gives up after ~2 s.
    tokio::time::timeout(Duration::from_secs(6), c.expect_eof())
        .await
        .expect("the broker closes the socket of a client that misses heartbeats");
    eventually("the connection to be forgotten", || {
        broker.connection_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sending_heartbeats_stays_connected() {
    let broker = start_broker_with(one_second_heartbeats()).await;
    let mut c = RawClient::open_with(broker.local_addr(), heartbeat_tuning()).await;
    let heartbeat = encode_frame(&AMQPFrame::Heartbeat);
    // 3.6 s: well past the 2 s the broker allows a silent client.
    for _ in 0..18 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send_bytes(&heartbeat).await;
    }
    // Still alive: a channel opens (heartbeats from the broker are skipped).
    c.open_channel(1).await;
    assert_eq!(broker.connection_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_disabled_by_client_keeps_idle_connection_open() {
    let broker = start_broker_with(one_second_heartbeats()).await;
    // heartbeat 0 in tune-ok: no heartbeats either way.
    let mut c = RawClient::open(broker.local_addr()).await;
    match c.read_frame_timeout(Duration::from_millis(2500)).await {
        Err(_) => {}
        Ok(f) => panic!("expected silence with heartbeats disabled, got {f:?}"),
    }
    c.open_channel(1).await;
}

async fn tune_ok_refused(tuning: Tuning, text: &str) {
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.start_and_tune(tuning).await;
    let close = c.expect_connection_close().await;
    assert_eq!(
        close,
        CloseInfo {
            code: 530,
            text: text.into(),
            class_id: 10,
            method_id: 30,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_frame_max_above_server_limit_is_refused() {
    tune_ok_refused(
        Tuning {
            frame_max: Some(200_000),
            ..Default::default()
        },
        "NOT_ALLOWED - negotiated frame_max = 200000 is higher than the maximum allowed value (131072)",
    )
    .await;
}

// RabbitMQ (rabbit_reader:get_client_value_detail/2) adds " (no limit)" only
// for channel_max = 0; frame_max = 0 is reported as a plain 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn tune_ok_frame_max_zero_is_refused() {
    tune_ok_refused(
        Tuning {
            frame_max: Some(0),
            ..Default::default()
        },
        "NOT_ALLOWED - negotiated frame_max = 0 is higher than the maximum allowed value (131072)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_frame_max_below_minimum_is_refused() {
    tune_ok_refused(
        Tuning {
            frame_max: Some(2048),
            ..Default::default()
        },
        // RabbitMQ 3.x's minimum is 4096 (4.x raised it to 8192).
        "NOT_ALLOWED - negotiated frame_max = 2048 is lower than the minimum allowed value (4096)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_channel_max_zero_is_refused() {
    tune_ok_refused(
        Tuning {
            channel_max: Some(0),
            ..Default::default()
        },
        "NOT_ALLOWED - negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_lower_limits_are_accepted() {
    let broker = start_broker().await;
    let mut c = RawClient::open_with(
        broker.local_addr(),
        Tuning {
            channel_max: Some(10),
            frame_max: Some(8192),
            heartbeat: Some(0),
        },
    )
    .await;
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_secret_is_answered() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    let reply = c
        .call(
            0,
            AMQPClass::Connection(conn::AMQPMethod::UpdateSecret(conn::UpdateSecret {
                new_secret: LongString::from("guest"),
                reason: "token refresh".into(),
            })),
        )
        .await;
    match reply {
        (0, AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(_))) => {}
        other => panic!("expected connection.update-secret-ok, got {other:?}"),
    }
    // The connection is still usable.
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_secret_with_lapin() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    within(
        "update-secret",
        conn.update_secret("guest".into(), "refresh".into()),
    )
    .await
    .expect("update-secret-ok");
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "after-update-secret").await;
}

fn client_close() -> Vec<u8> {
    encode_method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
}

/// What amqplib does: connection.close written ahead of publishes still in
/// its buffers, all in one write. As RabbitMQ, the broker answers close-ok,
/// drops what follows and keeps the socket open until the client closes its
/// end; closing at once would reset the socket under the client's writes
/// (EPIPE, and the close-ok possibly lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_with_frames_behind_it_is_drained_until_the_client_closes() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    let q = "close-drain";
    match c
        .call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q.into(),
                ..Default::default()
            })),
        )
        .await
    {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))) => {}
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
    let frame_max = c.frame_max;
    let publish = |body: &[u8]| publish_frames(1, "", q, Default::default(), body, frame_max);
    let mut out = publish(b"before the close");
    out.extend(client_close());
    // ~1 MB behind the close: far more than one read of the broker.
    for _ in 0..1000 {
        out.extend(publish(&[b'x'; 1000]));
    }
    c.send_bytes(&out).await;
    match c.expect_method().await {
        (0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    // The socket stays open and keeps being read.
    for _ in 0..3 {
        c.send_bytes(&publish(&[b'y'; 1000])).await;
    }
    assert!(
        c.read_until_closed(Duration::from_millis(500))
            .await
            .is_none(),
        "the broker closed the socket before the client did"
    );
    eventually("the connection to be forgotten", || {
        broker.connection_count() == 0
    })
    .await;
    // The client closes its end: the broker closes too, without a reset.
    c.shutdown_write().await;
    match c.read_until_closed(WAIT).await {
        Some(Ok(rest)) => assert!(rest.is_empty(), "unexpected bytes {rest:?}"),
        Some(Err(e)) => panic!("the socket was reset: {e}"),
        None => panic!("the broker did not close the socket after the client's FIN"),
    }
    // Only the publish ahead of the close was routed.
    let mut other = RawClient::open(broker.local_addr()).await;
    other.open_channel(1).await;
    match other
        .call(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: q.into(),
                passive: true,
                ..Default::default()
            })),
        )
        .await
    {
        (1, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok))) => assert_eq!(ok.message_count, 1),
        other => panic!("expected queue.declare-ok, got {other:?}"),
    }
}

/// A client that never closes its end: the broker closes the socket after the
/// negotiated heartbeat (RabbitMQ: min(heartbeat, 30 s)), sending heartbeats
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_waits_at_most_the_heartbeat_for_the_client() {
    let broker = start_broker().await;
    let mut c = RawClient::open_with(
        broker.local_addr(),
        Tuning {
            heartbeat: Some(1),
            ..Tuning::default()
        },
    )
    .await;
    c.send_bytes(&client_close()).await;
    let sent = std::time::Instant::now();
    match c.expect_method().await {
        (0, AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) => {}
        other => panic!("expected connection.close-ok, got {other:?}"),
    }
    match c.read_until_closed(WAIT).await {
        Some(Ok(rest)) => {
            // Only heartbeat frames (8, channel 0, empty, frame end).
            assert!(
                rest.chunks(8).all(|f| f == [8, 0, 0, 0, 0, 0, 0, 0xCE]),
                "{rest:?}"
            )
        }
        Some(Err(e)) => panic!("the socket was reset: {e}"),
        None => panic!("the broker kept the socket open"),
    }
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_connection_forced() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    let shutdown = tokio::spawn(broker.shutdown());
    let close = c.expect_connection_close().await;
    assert_eq!(close.code, 320);
    assert!(
        close.text.starts_with("CONNECTION_FORCED - "),
        "text {:?}",
        close.text
    );
    within("broker shutdown", shutdown).await.unwrap();
}

/// AMQPLAIN response: a field table without its length prefix.
fn amqplain(user: &str, password: &str) -> Vec<u8> {
    let mut t = Vec::new();
    for (k, v) in [("LOGIN", user), ("PASSWORD", password)] {
        t.push(k.len() as u8);
        t.extend_from_slice(k.as_bytes());
        t.push(b'S');
        t.extend_from_slice(&(v.len() as u32).to_be_bytes());
        t.extend_from_slice(v.as_bytes());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqplain_login_works() {
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    let start = c.protocol_header().await;
    c.start_ok(client_properties(), "AMQPLAIN", &amqplain("guest", "guest"))
        .await;
    c.tune(start, Tuning::default()).await;
    c.send_method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    match c.expect_method().await {
        (0, AMQPClass::Connection(conn::AMQPMethod::OpenOk(_))) => {}
        other => panic!("expected connection.open-ok, got {other:?}"),
    }
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqplain_wrong_password_is_refused() {
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.protocol_header().await;
    c.start_ok(client_properties(), "AMQPLAIN", &amqplain("guest", "nope"))
        .await;
    let close = c.expect_connection_close().await;
    assert_eq!(
        (close.code, close.text.as_str()),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism AMQPLAIN. For details see the broker logfile."
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_login_without_authentication_failure_close_just_closes_the_socket() {
    // A client that does not announce authentication_failure_close gets no
    // connection.close: RabbitMQ simply closes the socket.
    let broker = start_broker().await;
    let mut c = RawClient::tcp(broker.local_addr()).await;
    c.protocol_header().await;
    c.start_ok(Default::default(), "PLAIN", b"\0guest\0wrong")
        .await;
    match c.read_frame().await {
        None => {}
        Some(frame) => panic!("expected the socket to be closed, got {frame:?}"),
    }
}
