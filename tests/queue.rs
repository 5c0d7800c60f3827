//! queue.declare / bind / unbind / purge / delete, exclusive and auto-delete
//! queues, argument validation.

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use warren_integration_tests::*;

const LOCKED: &str = "It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.";

fn locked(q: &str) -> String {
    format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. {LOCKED}")
}

async fn declare_with(
    ch: &Channel,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    within(
        "queue.declare",
        ch.queue_declare(name.into(), options, args),
    )
    .await
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn exists(conn: &Connection, name: &str) -> bool {
    let ch = open_channel(conn).await;
    match declare_with(&ch, name, passive(), FieldTable::default()).await {
        Ok(_) => {
            let _ = ch.close(200, "OK".into()).await;
            true
        }
        Err(e) => {
            assert_closed_with(
                &e,
                404,
                &format!("NOT_FOUND - no queue '{name}' in vhost '/'"),
            );
            false
        }
    }
}

async fn delete(ch: &Channel, name: &str, options: QueueDeleteOptions) -> lapin::Result<u32> {
    within("queue.delete", ch.queue_delete(name.into(), options)).await
}

async fn purge(ch: &Channel, name: &str) -> lapin::Result<u32> {
    within(
        "queue.purge",
        ch.queue_purge(name.into(), QueuePurgeOptions::default()),
    )
    .await
}

/// Declare on a fresh channel expecting a channel error.
async fn declare_fails(
    conn: &Connection,
    name: &str,
    options: QueueDeclareOptions,
    args: FieldTable,
    code: u16,
    text: &str,
) {
    let ch = open_channel(conn).await;
    let err = expect_err(
        &format!("declare queue {name:?} {options:?} {args:?}"),
        declare_with(&ch, name, options, args).await,
    );
    assert_channel_error(conn, &ch, &err, code, text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let mut names = Vec::new();
    for _ in 0..20 {
        let q = declare_queue(&ch, "").await;
        let name = q.name().as_str().to_owned();
        assert!(name.starts_with("amq.gen-"), "{name}");
        assert_eq!(name.len(), 30, "{name}");
        assert!(
            name["amq.gen-".len()..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{name}"
        );
        assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
        names.push(name);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 20, "server-generated names are unique");
    // The queue is real: publish to it by name.
    publish(&ch, "", &names[0], b"m").await;
    assert_eq!(message_count(&ch, &names[0]).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    declare_fails(
        &conn,
        "missing-q",
        passive(),
        FieldTable::default(),
        404,
        "NOT_FOUND - no queue 'missing-q' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_amq_prefix_is_403() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    declare_fails(
        &conn,
        "amq.foo",
        QueueDeclareOptions::default(),
        FieldTable::default(),
        403,
        "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'",
    )
    .await;
    declare_fails(
        &conn,
        "amq.foo",
        passive(),
        FieldTable::default(),
        404,
        "NOT_FOUND - no queue 'amq.foo' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection() {
    let broker = start_broker().await;
    let (owner, och) = connect_channel(&broker).await;
    declare_with(
        &och,
        "excl",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The owner can use it.
    publish(&och, "", "excl", b"m").await;
    assert_eq!(message_count(&och, "excl").await, 1);

    let other = connect(&broker).await;
    let text = locked("excl");
    // Every way of touching it from another connection is refused.
    declare_fails(&other, "excl", passive(), FieldTable::default(), 405, &text).await;
    declare_fails(
        &other,
        "excl",
        QueueDeclareOptions::default(),
        FieldTable::default(),
        405,
        &text,
    )
    .await;
    declare_fails(
        &other,
        "excl",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
        405,
        &text,
    )
    .await;

    let ch = open_channel(&other).await;
    let err = expect_err(
        "consume",
        within(
            "basic.consume",
            ch.basic_consume(
                "excl".into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(&other, &ch, &err, 405, &text).await;

    let ch = open_channel(&other).await;
    let err = expect_err(
        "get",
        within("basic.get", ch.basic_get("excl".into(), Default::default())).await,
    );
    assert_channel_error(&other, &ch, &err, 405, &text).await;

    let ch = open_channel(&other).await;
    let err = expect_err(
        "bind",
        within(
            "queue.bind",
            ch.queue_bind(
                "excl".into(),
                "amq.fanout".into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(&other, &ch, &err, 405, &text).await;

    let ch = open_channel(&other).await;
    let err = expect_err("purge", purge(&ch, "excl").await);
    assert_channel_error(&other, &ch, &err, 405, &text).await;

    let ch = open_channel(&other).await;
    let err = expect_err("delete", delete(&ch, "excl", Default::default()).await);
    assert_channel_error(&other, &ch, &err, 405, &text).await;

    // Publishing to it from another connection is allowed.
    let ch = open_channel(&other).await;
    publish(&ch, "", "excl", b"from other").await;
    sync(&ch).await;
    assert_eq!(message_count(&och, "excl").await, 2);

    // When the owner goes away, so does the queue.
    within("close", owner.close(200, "OK".into()))
        .await
        .unwrap();
    eventually("the owner connection to be gone", || {
        broker.connection_count() == 1
    })
    .await;
    assert!(!exists(&other, "excl").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_flag_change_on_redeclare_is_405() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    declare_fails(
        &conn,
        "q",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
        405,
        &locked("q"),
    )
    .await;
    declare_with(
        &ch,
        "e",
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_fails(
        &conn,
        "e",
        QueueDeclareOptions::default(),
        FieldTable::default(),
        405,
        &locked("e"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_deleted_when_connection_drops_abruptly() {
    let broker = start_broker().await;
    let mut raw = RawClient::open(broker.local_addr()).await;
    raw.open_channel(1).await;
    let reply = raw
        .call(
            1,
            amq_protocol::protocol::AMQPClass::Queue(
                amq_protocol::protocol::queue::AMQPMethod::Declare(
                    amq_protocol::protocol::queue::Declare {
                        queue: "raw-excl".into(),
                        passive: false,
                        durable: false,
                        exclusive: true,
                        auto_delete: false,
                        nowait: false,
                        arguments: FieldTable::default(),
                    },
                ),
            ),
        )
        .await;
    assert!(
        matches!(
            reply,
            (
                1,
                amq_protocol::protocol::AMQPClass::Queue(
                    amq_protocol::protocol::queue::AMQPMethod::DeclareOk(_)
                )
            )
        ),
        "{reply:?}"
    );
    let (conn, _ch) = connect_channel(&broker).await;
    drop(raw); // no connection.close: just a dead socket
    eventually("the raw connection to be gone", || {
        broker.connection_count() == 1
    })
    .await;
    assert!(!exists(&conn, "raw-excl").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_with_its_last_consumer() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_with(
        &ch,
        "ad",
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // Keep the Consumer values alive: dropping one makes lapin cancel it.
    let _c1 = consume_tag(&ch, "ad", "c1", false).await;
    let _c2 = consume_tag(&ch, "ad", "c2", false).await;
    within(
        "cancel",
        ch.basic_cancel("c1".into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    assert!(exists(&conn, "ad").await, "one consumer is left");
    within(
        "cancel",
        ch.basic_cancel("c2".into(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();
    assert!(!exists(&conn, "ad").await, "the last consumer left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_consumer_channel_closes() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_with(
        &ch,
        "ad",
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let cch = open_channel(&conn).await;
    let _c = consume(&cch, "ad", false).await;
    within("close", cch.close(200, "OK".into())).await.unwrap();
    assert!(!exists(&conn, "ad").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_without_consumers_stays() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_with(
        &ch,
        "ad",
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, "", "ad", b"m").await;
    let _ = get(&ch, "ad").await.unwrap();
    // basic.get is not a consumer: the queue stays.
    assert!(exists(&conn, "ad").await);
}

async fn invalid_arg(name: &str, value: AMQPValue, text: &str) {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    declare_fails(
        &conn,
        "q.args",
        QueueDeclareOptions::default(),
        table([(name, value)]),
        406,
        text,
    )
    .await;
    assert!(
        !exists(&conn, "q.args").await,
        "a refused queue is not created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_message_ttl_negative() {
    invalid_arg(
        "x-message-ttl",
        AMQPValue::LongInt(-1),
        "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q.args' in vhost '/': {value_negative,-1}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_message_ttl_string() {
    invalid_arg(
        "x-message-ttl",
        lstr("1000"),
        "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q.args' in vhost '/': \"expected integer, got longstr\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_max_length_string() {
    invalid_arg(
        "x-max-length",
        lstr("abc"),
        "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q.args' in vhost '/': \"expected integer, got longstr\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_max_length_negative() {
    invalid_arg(
        "x-max-length",
        AMQPValue::LongInt(-1),
        "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q.args' in vhost '/': {value_negative,-1}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_max_length_bytes_negative() {
    invalid_arg(
        "x-max-length-bytes",
        AMQPValue::LongInt(-1),
        "PRECONDITION_FAILED - invalid arg 'x-max-length-bytes' for queue 'q.args' in vhost '/': {value_negative,-1}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_expires_zero_and_negative() {
    invalid_arg(
        "x-expires",
        AMQPValue::LongInt(0),
        "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q.args' in vhost '/': {value_zero,0}",
    )
    .await;
    invalid_arg(
        "x-expires",
        AMQPValue::LongInt(-5),
        "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q.args' in vhost '/': {value_negative,-5}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_overflow_unknown() {
    invalid_arg(
        "x-overflow",
        lstr("foo"),
        "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue 'q.args' in vhost '/': invalid_overflow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_dead_letter_exchange_integer() {
    invalid_arg(
        "x-dead-letter-exchange",
        AMQPValue::LongInt(5),
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q.args' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_dead_letter_routing_key_without_exchange() {
    invalid_arg(
        "x-dead-letter-routing-key",
        lstr("rk"),
        "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q.args' in vhost '/': routing_key_but_no_dlx_defined",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_queue_mode_unknown() {
    invalid_arg(
        "x-queue-mode",
        lstr("foo"),
        "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'q.args' in vhost '/': \"unsupported queue mode 'foo'\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_single_active_consumer_string() {
    invalid_arg(
        "x-single-active-consumer",
        lstr("yes"),
        "PRECONDITION_FAILED - invalid arg 'x-single-active-consumer' for queue 'q.args' in vhost '/': {unacceptable_type,longstr}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_max_priority_out_of_range() {
    invalid_arg(
        "x-max-priority",
        AMQPValue::LongInt(300),
        "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q.args' in vhost '/': {max_value_exceeded,300}",
    )
    .await;
    invalid_arg(
        "x-max-priority",
        AMQPValue::LongInt(-1),
        "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q.args' in vhost '/': {value_negative,-1}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arg_queue_type_unknown() {
    invalid_arg(
        "x-queue-type",
        lstr("foo"),
        "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'q.args' in vhost '/': \"unsupported queue type 'foo'\"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_quorum_queues_must_be_durable_and_not_exclusive() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    for kind in ["stream", "quorum"] {
        declare_fails(
            &conn,
            "q.args",
            QueueDeclareOptions::default(),
            table([("x-queue-type", lstr(kind))]),
            406,
            "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q.args' in vhost '/'",
        )
        .await;
    }
    declare_fails(
        &conn,
        "q.args",
        QueueDeclareOptions {
            durable: true,
            exclusive: true,
            ..Default::default()
        },
        table([("x-queue-type", lstr("quorum"))]),
        406,
        "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'q.args' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_quorum_queue_is_accepted_and_works() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let q = declare_with(
        &ch,
        "qq",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        table([("x-queue-type", lstr("quorum"))]),
    )
    .await
    .expect("durable quorum queue");
    assert_eq!(q.name().as_str(), "qq");
    publish(&ch, "", "qq", b"m").await;
    assert_eq!(get(&ch, "qq").await.unwrap().delivery.data, b"m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_arguments_are_accepted() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_with(
        &ch,
        "q",
        QueueDeclareOptions::default(),
        table([
            ("x-message-ttl", AMQPValue::LongInt(60_000)),
            ("x-max-length", AMQPValue::LongInt(100)),
            ("x-max-length-bytes", AMQPValue::LongLongInt(1 << 20)),
            ("x-expires", AMQPValue::LongInt(3_600_000)),
            ("x-overflow", lstr("reject-publish")),
            ("x-dead-letter-exchange", lstr("dlx")),
            ("x-dead-letter-routing-key", lstr("dead")),
            ("x-queue-mode", lstr("lazy")),
            ("x-single-active-consumer", AMQPValue::Boolean(false)),
            ("x-max-priority", AMQPValue::LongInt(10)),
            ("x-custom-thing", lstr("ignored")),
        ]),
    )
    .await
    .expect("valid arguments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_flags_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    declare_with(
        &ch,
        "d",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_fails(
        &conn,
        "q",
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    )
    .await;
    declare_fails(
        &conn,
        "d",
        QueueDeclareOptions::default(),
        FieldTable::default(),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'd' in vhost '/': received 'false' but current is 'true'",
    )
    .await;
    declare_fails(
        &conn,
        "q",
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q' in vhost '/': received 'true' but current is 'false'",
    )
    .await;
    // Passive ignores the flags.
    declare_with(
        &ch,
        "q",
        QueueDeclareOptions {
            passive: true,
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive with other flags");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_arguments_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "plain").await;
    declare_with(
        &ch,
        "ttl",
        QueueDeclareOptions::default(),
        table([("x-message-ttl", AMQPValue::LongInt(1000))]),
    )
    .await
    .unwrap();
    declare_with(
        &ch,
        "len",
        QueueDeclareOptions::default(),
        table([("x-max-length", AMQPValue::LongInt(10))]),
    )
    .await
    .unwrap();
    declare_with(
        &ch,
        "foo",
        QueueDeclareOptions::default(),
        table([("x-foo", AMQPValue::LongInt(1))]),
    )
    .await
    .unwrap();

    declare_fails(
        &conn,
        "plain",
        QueueDeclareOptions::default(),
        table([("x-message-ttl", AMQPValue::LongInt(1000))]),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'plain' in vhost '/': received the value '1000' of type 'signedint' but current is none",
    )
    .await;
    declare_fails(
        &conn,
        "ttl",
        QueueDeclareOptions::default(),
        FieldTable::default(),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'ttl' in vhost '/': received none but current is the value '1000' of type 'signedint'",
    )
    .await;
    declare_fails(
        &conn,
        "len",
        QueueDeclareOptions::default(),
        table([("x-max-length", AMQPValue::LongInt(20))]),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'len' in vhost '/': received '20' but current is '10'",
    )
    .await;
    // Unknown arguments are not compared.
    declare_with(
        &ch,
        "foo",
        QueueDeclareOptions::default(),
        table([("x-foo", AMQPValue::LongInt(2))]),
    )
    .await
    .expect("unknown argument changed");
    // Same arguments: fine.
    declare_with(
        &ch,
        "ttl",
        QueueDeclareOptions::default(),
        table([("x-message-ttl", AMQPValue::LongInt(1000))]),
    )
    .await
    .expect("same arguments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queue_name_refers_to_last_declared_queue() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let q = declare_queue(&ch, "").await;
    let name = q.name().as_str().to_owned();

    // bind "" with key "k": binds the last declared queue.
    bind_queue(&ch, "", "amq.direct", "k").await;
    publish(&ch, "amq.direct", "k", b"one").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, &name).await, 1);

    // bind "" with an empty key: the key is the queue's name.
    bind_queue(&ch, "", "amq.direct", "").await;
    publish(&ch, "amq.direct", &name, b"two").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, &name).await, 2);

    // purge "".
    assert_eq!(purge(&ch, "").await.unwrap(), 2);

    // get and consume "".
    publish(&ch, "", &name, b"three").await;
    assert_eq!(get(&ch, "").await.unwrap().delivery.data, b"three");
    let mut consumer = consume(&ch, "", true).await;
    publish(&ch, "", &name, b"four").await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"four");
    within(
        "cancel",
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
    )
    .await
    .unwrap();

    // delete "".
    publish(&ch, "", &name, b"five").await;
    assert_eq!(delete(&ch, "", Default::default()).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_queue_name_without_declared_queue_is_404() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let text = "NOT_FOUND - no previously declared queue";

    let ch = open_channel(&conn).await;
    let err = expect_err("delete ''", delete(&ch, "", Default::default()).await);
    assert_channel_error(&conn, &ch, &err, 404, text).await;

    let ch = open_channel(&conn).await;
    let err = expect_err(
        "bind ''",
        within(
            "queue.bind",
            ch.queue_bind(
                "".into(),
                "amq.direct".into(),
                "k".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 404, text).await;

    let ch = open_channel(&conn).await;
    let err = expect_err("purge ''", purge(&ch, "").await);
    assert_channel_error(&conn, &ch, &err, 404, text).await;

    let ch = open_channel(&conn).await;
    let err = expect_err(
        "consume ''",
        within(
            "basic.consume",
            ch.basic_consume(
                "".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 404, text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_declared_queue_is_per_channel() {
    let broker = start_broker().await;
    let conn = connect(&broker).await;
    let a = open_channel(&conn).await;
    let b = open_channel(&conn).await;
    declare_queue(&a, "qa").await;
    let err = expect_err("purge '' on b", purge(&b, "").await);
    assert_channel_error(
        &conn,
        &b,
        &err,
        404,
        "NOT_FOUND - no previously declared queue",
    )
    .await;
    assert_eq!(purge(&a, "").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_unbind() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "amq.direct", "k").await;
    bind_queue(&ch, "q", "amq.direct", "k").await; // idempotent
    publish(&ch, "amq.direct", "k", b"m").await;
    sync(&ch).await;
    assert_eq!(
        message_count(&ch, "q").await,
        1,
        "a duplicate binding delivers once"
    );

    within(
        "queue.unbind",
        ch.queue_unbind(
            "q".into(),
            "amq.direct".into(),
            "k".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    publish(&ch, "amq.direct", "k", b"m").await;
    sync(&ch).await;
    assert_eq!(
        message_count(&ch, "q").await,
        1,
        "unbound: not routed any more"
    );

    // Unbind is idempotent, also for missing queues and exchanges.
    for (q, x, k) in [
        ("q", "amq.direct", "k"),
        ("missing-q", "amq.direct", "k"),
        ("q", "missing-x", "k"),
        ("q", "amq.topic", "never-bound"),
    ] {
        within(
            "queue.unbind",
            ch.queue_unbind(q.into(), x.into(), k.into(), FieldTable::default()),
        )
        .await
        .unwrap_or_else(|e| panic!("unbind {q} {x} {k}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_errors() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let cases = [
        (
            "q",
            "missing-x",
            404,
            "NOT_FOUND - no exchange 'missing-x' in vhost '/'",
        ),
        (
            "missing-q",
            "amq.direct",
            404,
            "NOT_FOUND - no queue 'missing-q' in vhost '/'",
        ),
        (
            "missing-q",
            "missing-x",
            404,
            "NOT_FOUND - no exchange 'missing-x' in vhost '/'",
        ),
        (
            "q",
            "",
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        ),
    ];
    for (q, x, code, text) in cases {
        let c = open_channel(&conn).await;
        let err = expect_err(
            &format!("bind {q} to {x:?}"),
            within(
                "queue.bind",
                c.queue_bind(
                    q.into(),
                    x.into(),
                    "k".into(),
                    Default::default(),
                    FieldTable::default(),
                ),
            )
            .await,
        );
        assert_channel_error(&conn, &c, &err, code, text).await;
    }
    let c = open_channel(&conn).await;
    let err = expect_err(
        "unbind from ''",
        within(
            "queue.unbind",
            c.queue_unbind("q".into(), "".into(), "q".into(), FieldTable::default()),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &c,
        &err,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_the_number_of_messages() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    assert_eq!(purge(&ch, "q").await.unwrap(), 0);
    for i in 0..4 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(purge(&ch, "q").await.unwrap(), 4);
    assert_eq!(message_count(&ch, "q").await, 0);

    // Unacknowledged messages are not purged.
    for i in 0..3 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    let held = get(&ch, "q").await.unwrap();
    assert_eq!(purge(&ch, "q").await.unwrap(), 2);
    within(
        "reject",
        held.delivery
            .reject(lapin::options::BasicRejectOptions { requeue: true }),
    )
    .await
    .unwrap();
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1);

    let c = open_channel(&conn).await;
    let err = expect_err("purge missing", purge(&c, "missing-q").await);
    assert_channel_error(
        &conn,
        &c,
        &err,
        404,
        "NOT_FOUND - no queue 'missing-q' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_the_number_of_messages() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "amq.fanout", "").await;
    for i in 0..5 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(delete(&ch, "q", Default::default()).await.unwrap(), 5);
    assert!(!exists(&conn, "q").await);
    // Missing queue: fine, 0.
    assert_eq!(delete(&ch, "q", Default::default()).await.unwrap(), 0);
    assert_eq!(
        delete(
            &ch,
            "q",
            QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        0
    );
    // Its bindings went with it: a re-created queue is not bound.
    declare_queue(&ch, "q").await;
    publish(&ch, "amq.fanout", "", b"m").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_if_empty() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let _consumer = consume(&ch, "q", false).await;
    let c = open_channel(&conn).await;
    let err = expect_err(
        "delete if_unused",
        delete(
            &c,
            "q",
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &c,
        &err,
        406,
        "PRECONDITION_FAILED - queue 'q' in vhost '/' in use",
    )
    .await;

    declare_queue(&ch, "full").await;
    publish(&ch, "", "full", b"m").await;
    let c = open_channel(&conn).await;
    let err = expect_err(
        "delete if_empty",
        delete(
            &c,
            "full",
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &c,
        &err,
        406,
        "PRECONDITION_FAILED - queue 'full' in vhost '/' not empty",
    )
    .await;
    assert!(exists(&conn, "q").await);
    assert!(exists(&conn, "full").await);

    // Satisfied conditions: deleted.
    declare_queue(&ch, "idle").await;
    assert_eq!(
        delete(
            &ch,
            "idle",
            QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_message_and_consumer_counts() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let q = declare_queue(&ch, "facts").await;
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    for i in 0..3 {
        publish(&ch, "", "facts", format!("m{i}").as_bytes()).await;
    }
    let q = declare_with(&ch, "facts", passive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (3, 0));

    // A consumer with prefetch 1 holding one unacked message.
    let cconn = connect(&broker).await;
    let cch = open_channel(&cconn).await;
    within("qos", cch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = consume(&cch, "facts", false).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(
        (
            d.delivery_tag,
            d.redelivered,
            d.exchange.as_str(),
            d.routing_key.as_str()
        ),
        (1, false, "", "facts")
    );
    let q = declare_with(&ch, "facts", passive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (2, 1));
    let q = declare_queue(&ch, "facts").await; // non-passive: same counts
    assert_eq!((q.message_count(), q.consumer_count()), (2, 1));

    // The consumer's connection closes: its unacked message is requeued.
    within("close", cconn.close(200, "OK".into()))
        .await
        .unwrap();
    eventually("the consumer connection to be gone", || {
        broker.connection_count() == 1
    })
    .await;
    let q = declare_with(&ch, "facts", passive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (3, 0));

    // An auto-ack consumer drains the queue.
    let mut drain = consume(&ch, "facts", true).await;
    next_deliveries(&mut drain, 3).await;
    let q = declare_with(&ch, "facts", passive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!((q.message_count(), q.consumer_count()), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_with_cr_lf_are_stripped() {
    // RabbitMQ strips CR and LF from queue names.
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let q = declare_queue(&ch, "a\r\nb").await;
    assert_eq!(q.name().as_str(), "ab");
}

// RabbitMQ expands the empty-name shortcut only for basic.get/consume and
// queue.bind/unbind/purge/delete (rabbit_channel:expand_shortcuts), not for
// queue.declare: a passive declare of "" looks up a queue named "".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn passive_declare_with_empty_name_is_404() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "").await;
    let err = expect_err(
        "passive declare of ''",
        declare_with(&ch, "", passive(), FieldTable::default()).await,
    );
    assert_channel_error(
        &conn,
        &ch,
        &err,
        404,
        "NOT_FOUND - no queue '' in vhost '/'",
    )
    .await;
}

// RabbitMQ checks the reserved prefix before looking the queue up
// (rabbit_channel: check_name/2 runs first in a non-passive queue.declare), so
// a server-named queue cannot be redeclared by name; passive declares work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn redeclaring_a_server_named_queue_by_name_is_403() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let q = declare_queue(&ch, "").await;
    let name = q.name().as_str().to_owned();
    declare_with(&ch, &name, passive(), FieldTable::default())
        .await
        .expect("passive declare by name");
    declare_fails(
        &conn,
        &name,
        QueueDeclareOptions::default(),
        FieldTable::default(),
        403,
        &format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"),
    )
    .await;
}
