//! Streams over AMQP 0-9-1 (`x-queue-type: stream`), checked against what
//! RabbitMQ 3.10.8 does: an append-only log read by every consumer from its
//! own `x-stream-offset`, prefetch and manual acks required, acks only give
//! credit back, and the operations a stream refuses.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use warren_integration_tests::*;

async fn start(dir: &std::path::Path) -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .data_dir(dir, warren::EngineKind::Redb)
        .start()
        .await
        .expect("broker starts")
}

fn stream_args<const N: usize>(extra: [(&str, AMQPValue); N]) -> FieldTable {
    let mut t = table(extra);
    t.insert("x-queue-type".into(), lstr("stream"));
    t
}

async fn declare_stream(ch: &Channel, name: &str, args: FieldTable) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("stream declared");
}

async fn publish_confirmed(ch: &Channel, queue: &str, bodies: impl IntoIterator<Item = String>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    for b in bodies {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(c.is_ack());
    }
}

/// Consume from `offset` with prefetch 100; ack each; return (body, x-stream-offset)
/// of what arrives within `wait`.
async fn read_from(
    conn: &Connection,
    queue: &str,
    offset: Option<AMQPValue>,
    wait: Duration,
) -> Vec<(String, i64)> {
    let ch = open_channel(conn).await;
    ch.basic_qos(100, BasicQosOptions::default())
        .await
        .expect("basic.qos");
    let args = match offset {
        Some(v) => table([("x-stream-offset", v)]),
        None => FieldTable::default(),
    };
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .expect("basic.consume");
    let mut got = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(wait, consumer.next()).await {
        let offset = match d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned())
        {
            Some(AMQPValue::LongLongInt(o)) => o,
            other => panic!("x-stream-offset header: {other:?}"),
        };
        got.push((String::from_utf8_lossy(&d.data).into_owned(), offset));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    let _ = ch.close(200, "done".into()).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_independently_from_their_offsets() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = start(dir.path()).await;
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    declare_stream(&ch, "st", stream_args([])).await;
    publish_confirmed(&ch, "st", (0..10).map(|i| format!("m{i}"))).await;
    let short = Duration::from_millis(500);
    let first = read_from(&conn, "st", Some(lstr("first")), short).await;
    assert_eq!(first.len(), 10);
    assert!(first
        .iter()
        .enumerate()
        .all(|(i, (b, o))| *b == format!("m{i}") && *o == i as i64));
    // Read again: nothing was removed by the acks.
    assert_eq!(
        read_from(&conn, "st", Some(lstr("first")), short).await,
        first
    );
    assert_eq!(
        read_from(&conn, "st", Some(AMQPValue::LongLongInt(7)), short).await,
        first[7..]
    );
    assert_eq!(
        read_from(&conn, "st", Some(lstr("last")), short).await,
        first[9..]
    );
    assert!(read_from(&conn, "st", Some(lstr("next")), short)
        .await
        .is_empty());
    assert!(
        read_from(&conn, "st", None, short).await.is_empty(),
        "next by default"
    );
    assert_eq!(
        read_from(&conn, "st", Some(AMQPValue::LongLongInt(-1)), short)
            .await
            .len(),
        10
    );
    assert_eq!(
        read_from(&conn, "st", Some(lstr("1h")), short).await.len(),
        10
    );
    assert_eq!(message_count(&ch, "st").await, 10);

    // A consumer at "next" gets what is published after it attached.
    let reader = open_channel(&conn).await;
    reader
        .basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut live = reader
        .basic_consume(
            "st".into(),
            "live".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    publish_confirmed(&ch, "st", ["later".to_string()]).await;
    let d = next_delivery(&mut live).await;
    assert_eq!(d.data, b"later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_refuses_what_rabbitmq_refuses() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = start(dir.path()).await;
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    declare_stream(&ch, "st", stream_args([])).await;
    publish_confirmed(&ch, "st", ["m".to_string()]).await;

    let ch = open_channel(&conn).await;
    let err = expect_err(
        "basic.consume without prefetch",
        ch.basic_consume(
            "st".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - consumer prefetch count is not set for 'queue 'st' in vhost '/''",
    )
    .await;

    let refused = [
        ("basic.get", 540, "NOT_IMPLEMENTED - basic.get not supported by stream queues queue 'st' in vhost '/'"),
        ("queue.purge", 540, "NOT_IMPLEMENTED - queue.purge not supported by stream queues queue 'st' in vhost '/'"),
        ("no-ack consume", 540, "NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues queue 'st' in vhost '/'"),
        ("bad offset", 541, "INTERNAL_ERROR"),
        ("nack", 540, "NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues queue 'st' in vhost '/'"),
    ];
    for (what, code, text) in refused {
        let conn = connect(&broker).await;
        let ch = open_channel(&conn).await;
        ch.basic_qos(10, BasicQosOptions::default())
            .await
            .expect("qos");
        let err = match what {
            "basic.get" => expect_err(
                what,
                ch.basic_get("st".into(), BasicGetOptions::default())
                    .await
                    .map(|_| ()),
            ),
            "queue.purge" => expect_err(
                what,
                ch.queue_purge("st".into(), QueuePurgeOptions::default())
                    .await
                    .map(|_| ()),
            ),
            "no-ack consume" => expect_err(
                what,
                ch.basic_consume(
                    "st".into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
            ),
            "bad offset" => expect_err(
                what,
                ch.basic_consume(
                    "st".into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    table([("x-stream-offset", lstr("bogus"))]),
                )
                .await
                .map(|_| ()),
            ),
            _ => {
                let mut c = ch
                    .basic_consume(
                        "st".into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        table([("x-stream-offset", lstr("first"))]),
                    )
                    .await
                    .expect("consume");
                let d = next_delivery(&mut c).await;
                // Listen before the nack: the close may come back at once.
                let mut errors = Errors::new(&conn);
                d.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .expect("nack sent");
                errors.next().await
            }
        };
        assert_connection_error(&conn, &err, code, text).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_a_restart_and_retention_drops_old_segments() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = start(dir.path()).await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_stream(
        &ch,
        "small",
        stream_args([
            (
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongLongInt(2_000),
            ),
            ("x-max-length-bytes", AMQPValue::LongLongInt(6_000)),
        ]),
    )
    .await;
    publish_confirmed(
        &ch,
        "small",
        (0..200).map(|i| format!("record {i:04} {}", "x".repeat(40))),
    )
    .await;
    let kept = read_from(
        &conn,
        "small",
        Some(lstr("first")),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        !kept.is_empty() && kept.len() < 200,
        "old segments dropped: {} kept",
        kept.len()
    );
    assert_eq!(kept.last().map(|(_, o)| *o), Some(199));
    assert!(
        kept[0].1 > 0,
        "reading from first starts at the oldest kept"
    );
    drop((ch, conn));
    broker.shutdown().await;

    let broker = start(dir.path()).await;
    let conn = connect(&broker).await;
    let again = read_from(
        &conn,
        "small",
        Some(lstr("first")),
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(again, kept, "the log is back after a restart");
    let ch = open_channel(&conn).await;
    ch.queue_delete("small".into(), QueueDeleteOptions::default())
        .await
        .expect("queue.delete");
    eventually("the stream's log is removed", || {
        std::fs::read_dir(dir.path().join("streams")).map_or(true, |mut d| d.next().is_none())
    })
    .await;
    broker.shutdown().await;
}

/// Publish one message with a confirm; true if acked.
async fn confirmed(ch: &Channel, queue: &str, body: &str) -> bool {
    let c = ch
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    c.is_ack()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_stream_publishes_until_space_returns() {
    let Some(disk) = warren_integration_tests::small_disk::SmallDisk::mount(16 * 1024 * 1024)
    else {
        return;
    };
    let broker = warren::Broker::builder()
        .port(0)
        .config(warren::Config {
            disk_free_limit: None,
            ..Default::default()
        })
        .data_dir(disk.data_dir(), warren::EngineKind::Redb)
        .start()
        .await
        .expect("broker starts");
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    declare_stream(&ch, "st", stream_args([])).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    assert!(confirmed(&ch, "st", "before").await);
    disk.fill();
    let big = "x".repeat(64 * 1024);
    let mut nacked = false;
    for _ in 0..50 {
        if !confirmed(&ch, "st", &big).await {
            nacked = true;
            break;
        }
    }
    assert!(nacked, "a publish that cannot be written is nacked");
    disk.free();
    assert!(confirmed(&ch, "st", "after").await, "writes work again");
    let read = read_from(&conn, "st", Some(lstr("first")), Duration::from_millis(500)).await;
    let bodies: Vec<&str> = read.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(bodies.first(), Some(&"before"));
    assert_eq!(bodies.last(), Some(&"after"));
    assert!(
        read.windows(2).all(|w| w[1].1 == w[0].1 + 1),
        "no hole and no torn record in the log"
    );
    drop((ch, conn));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_stream_cancels_its_consumers() {
    let dir = tempfile::tempdir().expect("dir");
    let broker = start(dir.path()).await;
    let conn = connect(&broker).await;
    let ch = open_channel(&conn).await;
    declare_stream(&ch, "st", stream_args([])).await;
    let reader = open_channel(&conn).await;
    reader
        .basic_qos(10, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = reader
        .basic_consume(
            "st".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    ch.queue_delete("st".into(), QueueDeleteOptions::default())
        .await
        .expect("queue.delete");
    // A server-sent basic.cancel ends lapin's consumer.
    let next = tokio::time::timeout(Duration::from_secs(5), consumer.next()).await;
    assert!(
        matches!(next, Ok(None)),
        "the consumer was cancelled: {next:?}"
    );
    assert!(reader.status().connected(), "the channel stays open");
}
