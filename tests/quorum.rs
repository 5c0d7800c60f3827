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

// ----- header bytes as RabbitMQ 3.10.8 writes them ---------------------------------

/// Length of the field value whose type octet is at `b[p]` (octet included).
fn value_len(b: &[u8], p: usize) -> usize {
    let n = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    match b[p] {
        b't' | b'b' | b'B' => 2,
        b's' | b'u' | b'U' => 3,
        b'I' | b'i' | b'f' => 5,
        b'l' | b'L' | b'd' | b'T' => 9,
        b'D' => 6,
        b'V' => 1,
        b'S' | b'x' | b'A' | b'F' => 5 + n(p + 1),
        t => panic!("field type {t}"),
    }
}

/// The fields of a table body (after its length prefix): key and value bytes
/// (type octet first), in wire order.
fn fields(body: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < body.len() {
        let k = body[p] as usize;
        let key = String::from_utf8(body[p + 1..p + 1 + k].to_vec()).unwrap();
        let v = p + 1 + k;
        let len = value_len(body, v);
        out.push((key, &body[v..v + len]));
        p = v + len;
    }
    out
}

/// The headers table of a content header payload, as its fields in wire order.
fn raw_headers(header: &[u8]) -> Vec<(String, &[u8])> {
    let flags = u16::from_be_bytes([header[12], header[13]]);
    assert!(flags & (1 << 13) != 0, "no headers");
    let mut p = 14;
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            p += 1 + header[p] as usize;
        }
    }
    let len = u32::from_be_bytes(header[p..p + 4].try_into().unwrap()) as usize;
    fields(&header[p + 4..p + 4 + len])
}

fn keys(fields: &[(String, &[u8])]) -> Vec<String> {
    fields.iter().map(|(k, _)| k.clone()).collect()
}

/// The text of a long-string value.
fn long_string(v: &[u8]) -> String {
    assert_eq!(v[0], b'S');
    String::from_utf8(v[5..].to_vec()).unwrap()
}

/// The elements of an array value, each with its type octet.
fn elements(v: &[u8]) -> Vec<&[u8]> {
    assert_eq!(v[0], b'A');
    let mut out = Vec::new();
    let mut p = 5;
    while p < v.len() {
        let len = value_len(v, p);
        out.push(&v[p..p + len]);
        p += len;
    }
    out
}

/// basic.get (no-ack) with a raw client: the content header payload as sent.
async fn raw_get_header(broker: &warren::Broker, queue: &str) -> Vec<u8> {
    use amq_protocol::protocol::{basic, AMQPClass};
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.send_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: queue.into(),
            no_ack: true,
        })),
    )
    .await;
    let (kind, _, _) = c.read_raw_frame().await.expect("get-ok");
    assert_eq!(kind, 1, "a get-ok method frame");
    let (kind, _, header) = c.read_raw_frame().await.expect("content header");
    assert_eq!(kind, 2);
    header
}

/// Celery's native delayed delivery sends a task through a chain of quorum
/// queues, each with a TTL and the next as its dead-letter target
/// (at-least-once). RabbitMQ 3.10.8 regroups `x-death` by (queue, reason)
/// before each update with a fold that reverses it, so after deaths in d3,
/// d2, d1, d0 the entries read d0, d2, d3, d1 -- not newest first; the first
/// death keeps its creation field order, later entries have sorted fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_after_a_chain_of_quorum_queues_is_in_rabbitmq_order() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "done").await;
    for (q, next) in [("d0", "done"), ("d1", "d0"), ("d2", "d1"), ("d3", "d2")] {
        ch.queue_declare(
            q.into(),
            durable(),
            quorum([
                ("x-message-ttl", AMQPValue::LongInt(20)),
                ("x-dead-letter-exchange", lstr("")),
                ("x-dead-letter-routing-key", lstr(next)),
                ("x-dead-letter-strategy", lstr("at-least-once")),
                ("x-overflow", lstr("reject-publish")),
            ]),
        )
        .await
        .expect("queue.declare");
    }
    publish(&ch, "", "d3", b"task").await;
    within("the message to pass the chain", async {
        while message_count(&ch, "done").await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let header = raw_get_header(&broker, "done").await;
    let headers = raw_headers(&header);
    assert_eq!(
        keys(&headers),
        [
            "x-death",
            "x-first-death-exchange",
            "x-first-death-queue",
            "x-first-death-reason"
        ]
    );
    assert_eq!(long_string(headers[2].1), "d3");
    let sorted = [
        "count",
        "exchange",
        "queue",
        "reason",
        "routing-keys",
        "time",
    ];
    let created = [
        "count",
        "reason",
        "queue",
        "time",
        "exchange",
        "routing-keys",
    ];
    let deaths: Vec<(String, Vec<String>)> = elements(headers[0].1)
        .into_iter()
        .map(|e| {
            assert_eq!(e[0], b'F');
            let f = fields(&e[5..]);
            let queue = f.iter().find(|(k, _)| k == "queue").expect("queue").1;
            (long_string(queue), keys(&f))
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = [
        ("d0", sorted),
        ("d2", sorted),
        ("d3", created),
        ("d1", sorted),
    ]
    .into_iter()
    .map(|(q, k)| (q.to_owned(), k.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(deaths, want);
}

/// Adding `x-delivery-count` rewrites the top level of the headers sorted by
/// key (rabbit_basic:add_header) but leaves nested tables as published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_delivery_count_leaves_nested_tables_in_their_order() {
    use amq_protocol::protocol::{basic, queue, AMQPClass};
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.call(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "qq".into(),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: quorum([]),
        })),
    )
    .await;
    // headers {"z": {"b": true, "a": true}, "a": "x"}: neither level sorted
    let mut nested = vec![b'F'];
    nested.extend_from_slice(&8u32.to_be_bytes());
    nested.extend_from_slice(b"\x01bt\x01\x01at\x01");
    let mut table = vec![1, b'z'];
    table.extend_from_slice(&nested);
    table.extend_from_slice(b"\x01aS\0\0\0\x01x");
    let mut header = vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 0];
    header.extend_from_slice(&(table.len() as u32).to_be_bytes());
    header.extend_from_slice(&table);
    let mut out = encode_method(
        1,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "".into(),
            routing_key: "qq".into(),
            mandatory: false,
            immediate: false,
        })),
    );
    out.extend(raw_frame(2, 1, &header));
    out.extend(raw_frame(3, 1, b"m"));
    c.send_bytes(&out).await;
    let (_conn, ch) = connect_channel(&broker).await;
    within("the message to be queued", async {
        while message_count(&ch, "qq").await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let got = raw_get_header(&broker, "qq").await;
    let headers = raw_headers(&got);
    assert_eq!(keys(&headers), ["a", "x-delivery-count", "z"]);
    assert_eq!(headers[1].1, b"l\0\0\0\0\0\0\0\0");
    assert_eq!(headers[2].1, &nested[..], "the nested table as published");
}
