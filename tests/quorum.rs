//! Quorum queues on one node, as RabbitMQ 3.10.8 serves them: their own
//! argument rules, `x-delivery-count` and `x-delivery-limit`, no global QoS,
//! and every message kept on disk whatever its delivery mode.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use warren_integration_tests::*;

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn quorum<const N: usize>(extra: [(&str, AMQPValue); N]) -> FieldTable {
    let mut t = table(extra);
    t.insert("x-queue-type".into(), lstr("quorum"));
    t
}

/// Declare on a fresh channel; the error text if it is refused.
async fn declare(
    conn: &Connection,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> Result<(), String> {
    let ch = open_channel(conn).await;
    match within(
        "queue.declare",
        ch.queue_declare(name.into(), options, args),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(err) => match err.kind() {
            lapin::ErrorKind::ProtocolError(e) => {
                Err(format!("{} {}", e.get_id(), e.get_message()))
            }
            _ => Err(err.to_string()),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_validate_their_own_arguments() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let q = |n: &str| format!("queue '{n}' in vhost '/'");
    // Celery 5.5's delayed-delivery queues: a TTL past the classic timer limit.
    let celery = quorum([
        ("x-message-ttl", AMQPValue::LongLongInt(134_217_728_000)),
        ("x-dead-letter-exchange", lstr("celery_delayed_26")),
        ("x-dead-letter-strategy", lstr("at-least-once")),
        ("x-overflow", lstr("reject-publish")),
    ]);
    assert_eq!(
        declare(&conn, "celery_delayed_27", durable(), celery).await,
        Ok(())
    );
    for (args, accepted) in [
        (quorum([("x-delivery-limit", AMQPValue::LongInt(3))]), true),
        (quorum([("x-delivery-limit", lstr("x"))]), true),
        (
            quorum([("x-max-in-memory-length", AMQPValue::LongInt(5))]),
            true,
        ),
        (
            quorum([("x-single-active-consumer", AMQPValue::Boolean(true))]),
            true,
        ),
        (quorum([("x-overflow", lstr("reject-publish-dlx"))]), true),
        (quorum([("x-queue-leader-locator", lstr("balanced"))]), true),
        (quorum([("x-random-thing", AMQPValue::LongInt(1))]), true),
        (table([("x-delivery-limit", AMQPValue::LongInt(3))]), false),
    ] {
        let name = "args";
        let got = declare(&conn, name, durable(), args.clone()).await;
        assert_eq!(got.is_ok(), accepted, "{args:?}: {got:?}");
        if got.is_ok() {
            let ch = open_channel(&conn).await;
            ch.queue_delete(name.into(), QueueDeleteOptions::default())
                .await
                .expect("queue.delete");
        }
    }
    let refused = [
        (
            "p1",
            durable(),
            quorum([("x-max-priority", AMQPValue::LongInt(10))]),
            format!(
                "406 PRECONDITION_FAILED - invalid arg 'x-max-priority' for {} of queue type rabbit_quorum_queue",
                q("p1")
            ),
        ),
        (
            "p2",
            durable(),
            quorum([("x-queue-mode", lstr("lazy"))]),
            format!(
                "406 PRECONDITION_FAILED - invalid arg 'x-queue-mode' for {} of queue type rabbit_quorum_queue",
                q("p2")
            ),
        ),
        (
            "p3",
            durable(),
            quorum([("x-dead-letter-strategy", lstr("bogus"))]),
            format!(
                "406 PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for {}: invalid_dlx_strategy",
                q("p3")
            ),
        ),
        (
            "p4",
            QueueDeclareOptions {
                durable: false,
                auto_delete: true,
                ..Default::default()
            },
            quorum([]),
            format!(
                "406 PRECONDITION_FAILED - invalid property 'auto-delete' for {}",
                q("p4")
            ),
        ),
        (
            "p5",
            durable(),
            table([("x-dead-letter-strategy", lstr("at-least-once"))]),
            format!(
                "406 PRECONDITION_FAILED - invalid arg 'x-dead-letter-strategy' for {} of queue type rabbit_classic_queue",
                q("p5")
            ),
        ),
        (
            "p6",
            durable(),
            table([("x-message-ttl", AMQPValue::LongLongInt(315_360_000_001))]),
            format!(
                "406 PRECONDITION_FAILED - invalid arg 'x-message-ttl' for {}: {{value_too_large,315360000001}}",
                q("p6")
            ),
        ),
        (
            "",
            durable(),
            quorum([]),
            "406 PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue"
                .to_string(),
        ),
    ];
    for (name, options, args, text) in refused {
        assert_eq!(declare(&conn, name, options, args).await, Err(text));
    }
    // A redeclare compares the arguments quorum queues take, in their order
    // (checked against RabbitMQ 3.10.8).
    assert_eq!(
        declare(
            &conn,
            "celery_delayed_27",
            durable(),
            quorum([("x-delivery-limit", AMQPValue::LongInt(3))])
        )
        .await,
        Err(format!(
            "406 PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for {}: received none but current is the value 'celery_delayed_26' of type 'longstr'",
            q("celery_delayed_27")
        ))
    );
}

async fn setup_dead_letters(ch: &Channel) {
    ch.exchange_declare(
        "dlx".into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    declare_queue(ch, "dead").await;
    bind_queue(ch, "dead", "dlx", "").await;
}

fn header(props: &BasicProperties, key: &str) -> Option<AMQPValue> {
    props.headers().as_ref()?.inner().get(key).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_counted_and_the_delivery_limit_dead_letters() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    setup_dead_letters(&ch).await;
    ch.queue_declare(
        "dl".into(),
        durable(),
        quorum([
            ("x-delivery-limit", AMQPValue::LongInt(2)),
            ("x-dead-letter-exchange", lstr("dlx")),
        ]),
    )
    .await
    .expect("queue.declare");
    publish(&ch, "", "dl", b"m1").await;
    // Delivered three times (counts 0, 1, 2); the third return passes the limit.
    for expected in 0..3i64 {
        let m = get(&ch, "dl").await.expect("a message");
        assert_eq!(m.delivery.redelivered, expected > 0);
        assert_eq!(
            header(&m.delivery.properties, "x-delivery-count"),
            Some(AMQPValue::LongLongInt(expected))
        );
        m.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .expect("basic.nack");
    }
    sync(&ch).await;
    assert!(get(&ch, "dl").await.is_none(), "dropped past the limit");
    let dead = get(&ch, "dead").await.expect("dead-lettered");
    assert_eq!(dead.delivery.data, b"m1");
    assert_eq!(
        header(&dead.delivery.properties, "x-first-death-reason"),
        Some(lstr("delivery_limit"))
    );
    assert_eq!(
        header(&dead.delivery.properties, "x-delivery-count"),
        None,
        "the dead-lettered copy is the message as published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_sees_the_count_grow_when_its_channel_closes() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    ch.queue_declare("cc".into(), durable(), quorum([]))
        .await
        .expect("queue.declare");
    publish(&ch, "", "cc", b"c1").await;
    let first = open_channel(&conn).await;
    let mut consumer = consume(&first, "cc", false).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(
        header(&d.properties, "x-delivery-count"),
        None,
        "a first delivery to a consumer has no count (basic.get has 0)"
    );
    first.close(200, "bye".into()).await.expect("channel.close");
    let mut again = consume(&ch, "cc", false).await;
    let d = next_delivery(&mut again).await;
    assert!(d.redelivered);
    assert_eq!(
        header(&d.properties, "x-delivery-count"),
        Some(AMQPValue::LongLongInt(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_qos_is_refused_with_540_and_priorities_are_ignored() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    ch.queue_declare("pq".into(), durable(), quorum([]))
        .await
        .expect("queue.declare");
    for p in [1u8, 9, 5] {
        publish_props(
            &ch,
            "",
            "pq",
            p.to_string().as_bytes(),
            BasicProperties::default().with_priority(p),
        )
        .await;
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let m = get_opts(&ch, "pq", true).await.expect("a message");
        order.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    assert_eq!(order, ["1", "9", "5"], "a quorum queue is FIFO");

    let other = open_channel(&conn).await;
    other
        .basic_qos(10, BasicQosOptions { global: true })
        .await
        .expect("basic.qos");
    let err = expect_err(
        "basic.consume with global qos",
        other
            .basic_consume(
                "pq".into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await,
    );
    assert_connection_error(
        &conn,
        &err,
        540,
        "NOT_IMPLEMENTED - queue 'pq' in vhost '/' does not support global qos",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_message_in_a_quorum_queue_survives_a_restart() {
    for engine in [warren::EngineKind::Redb, warren::EngineKind::Sled] {
        let dir = tempfile::tempdir().expect("a temp dir");
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
        ch.queue_declare("tq".into(), durable(), quorum([]))
            .await
            .expect("queue.declare");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        let confirm = ch
            .basic_publish(
                "".into(),
                "tq".into(),
                BasicPublishOptions::default(),
                b"t",
                BasicProperties::default().with_delivery_mode(1),
            )
            .await
            .expect("basic.publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        drop((ch, conn));
        broker.shutdown().await;

        let broker = start().await;
        let (_conn, ch) = connect_channel(&broker).await;
        let m = get(&ch, "tq").await.expect("kept across the restart");
        assert_eq!(m.delivery.data, b"t");
        assert_eq!(m.delivery.properties.delivery_mode(), &Some(1));
        broker.shutdown().await;
    }
}

async fn refusing_target(ch: &Channel, dlx: &str, target: &str) {
    ch.exchange_declare(
        dlx.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    ch.queue_declare(
        target.into(),
        QueueDeclareOptions::default(),
        table([
            ("x-max-length", AMQPValue::LongInt(1)),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await
    .expect("queue.declare");
    bind_queue(ch, target, dlx, "").await;
    publish(ch, "", target, b"occupant").await;
}

/// Reject one message from `source`, whose dead-letter target is full; then
/// make room in the target and return what reaches it within 3 s.
async fn dead_letter_into_a_full_target(ch: &Channel, source: &str, target: &str) -> Vec<Vec<u8>> {
    publish(ch, "", source, b"m").await;
    let m = get(ch, source).await.expect("a message");
    m.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .expect("basic.reject");
    sync(ch).await;
    assert_eq!(
        message_count(ch, source).await,
        0,
        "not ready in the source"
    );
    let occupant = get_opts(ch, target, true).await.expect("the occupant");
    assert_eq!(occupant.delivery.data, b"occupant");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Some(m) = get_opts(ch, target, true).await {
            got.push(m.delivery.data.clone());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_dead_lettering_keeps_a_refused_message_until_the_target_takes_it() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    refusing_target(&ch, "dlx1", "full1").await;
    ch.queue_declare(
        "alo".into(),
        durable(),
        quorum([
            ("x-dead-letter-exchange", lstr("dlx1")),
            ("x-dead-letter-strategy", lstr("at-least-once")),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await
    .expect("queue.declare");
    assert_eq!(
        dead_letter_into_a_full_target(&ch, "alo", "full1").await,
        [b"m".to_vec()],
        "offered again once the target had room"
    );

    // At most once (the default): the refused dead-letter is gone.
    refusing_target(&ch, "dlx2", "full2").await;
    ch.queue_declare(
        "amo".into(),
        durable(),
        quorum([
            ("x-dead-letter-exchange", lstr("dlx2")),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await
    .expect("queue.declare");
    assert!(dead_letter_into_a_full_target(&ch, "amo", "full2")
        .await
        .is_empty());
}
