//! The `x-delayed-message` exchange. There is no oracle here (the plugin is
//! not in Debian's RabbitMQ), so these tests state the community plugin's
//! documented behaviour: `x-delayed-type` routing, `x-delay` in ms, the
//! header negated on release, no delay without the header, mandatory
//! publishes returned, and held messages kept across a restart.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use warren_integration_tests::*;

fn delayed_args(kind: &str) -> FieldTable {
    table([("x-delayed-type", lstr(kind))])
}

async fn declare_delayed(ch: &Channel, name: &str, durable: bool, args: FieldTable) {
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions {
            durable,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("exchange.declare x-delayed-message");
}

fn delayed_by(ms: i64) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(table([("x-delay", AMQPValue::LongLongInt(ms))]))
}

async fn declare_error(conn: &Connection, args: FieldTable) -> (u16, String) {
    let ch = open_channel(conn).await;
    let err = expect_err(
        "exchange.declare",
        ch.exchange_declare(
            "bad".into(),
            ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            args,
        )
        .await,
    );
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_delayed_type_is_required_and_must_be_a_real_type() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    assert_eq!(
        declare_error(&conn, FieldTable::default()).await,
        (
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type".into()
        )
    );
    assert_eq!(
        declare_error(&conn, delayed_args("x-delayed-message")).await,
        (
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'".into()
        )
    );
    let conn = connect(&broker).await;
    let (code, _) = declare_error(&conn, delayed_args("nonsense")).await;
    assert_eq!(code, 503, "an unknown type is a connection error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_held_for_their_delay_then_routed_with_the_delay_negated() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_delayed(&ch, "later", false, delayed_args("direct")).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "later", "k").await;
    let start = Instant::now();
    publish_props(&ch, "later", "k", b"slow", delayed_by(600)).await;
    publish_props(&ch, "later", "k", b"fast", delayed_by(200)).await;
    publish_props(&ch, "later", "k", b"now", BasicProperties::default()).await;
    publish_props(&ch, "later", "other-key", b"unbound", delayed_by(100)).await;
    let mut consumer = consume(&ch, "q", true).await;
    let now = next_delivery(&mut consumer).await;
    assert_eq!(now.data, b"now", "no x-delay: routed at once");
    let fast = next_delivery(&mut consumer).await;
    assert_eq!(fast.data, b"fast");
    assert!(start.elapsed() >= Duration::from_millis(200), "held 200 ms");
    assert_eq!(
        fast.properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delay").cloned()),
        Some(AMQPValue::LongInt(-200)),
        "released with x-delay negated"
    );
    let slow = next_delivery(&mut consumer).await;
    assert_eq!(slow.data, b"slow");
    assert!(start.elapsed() >= Duration::from_millis(600), "held 600 ms");
    assert_no_delivery(&mut consumer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandatory_delayed_publish_comes_back_as_the_plugin_cannot_route_it_yet() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_delayed(&ch, "later", false, delayed_args("fanout")).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "later", "").await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let confirm = ch
        .basic_publish(
            "later".into(),
            "".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"m",
            delayed_by(100),
        )
        .await
        .expect("basic.publish")
        .await
        .expect("confirm");
    let returned = confirm
        .take_message()
        .expect("returned: routed to no queue yet");
    assert_eq!(returned.reply_code, 312);
    // It is still delivered when due.
    let mut consumer = consume(&ch, "q", true).await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_survive_a_restart_and_a_deleted_exchange_drops_them() {
    for engine in [warren::EngineKind::Redb, warren::EngineKind::Sled] {
        let dir = tempfile::tempdir().expect("temp dir");
        let start = || async {
            warren::Broker::builder()
                .port(0)
                .data_dir(dir.path(), engine)
                .start()
                .await
                .expect("broker starts")
        };
        let broker = start().await;
        let (conn, ch) = connect_channel(&broker).await;
        declare_delayed(&ch, "later", true, delayed_args("topic")).await;
        declare_delayed(&ch, "doomed", true, delayed_args("fanout")).await;
        ch.queue_declare(
            "q".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue.declare");
        bind_queue(&ch, "q", "later", "a.*").await;
        bind_queue(&ch, "q", "doomed", "").await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        for (x, key, body) in [("later", "a.b", "kept"), ("doomed", "", "dropped")] {
            let confirm = ch
                .basic_publish(
                    x.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    delayed_by(1_500),
                )
                .await
                .expect("basic.publish")
                .await
                .expect("confirm");
            assert!(confirm.is_ack(), "confirmed once on disk");
        }
        ch.exchange_delete("doomed".into(), ExchangeDeleteOptions::default())
            .await
            .expect("exchange.delete");
        drop((ch, conn));
        broker.shutdown().await;

        let broker = start().await;
        let (_conn, ch) = connect_channel(&broker).await;
        assert_eq!(message_count(&ch, "q").await, 0, "still held");
        let mut consumer = consume(&ch, "q", true).await;
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, b"kept", "released after the restart");
        assert_no_delivery(&mut consumer).await;
        broker.shutdown().await;
    }
}
