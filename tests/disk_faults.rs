//! A full or failing disk: publishes are nacked while writes fail, acks are
//! not lost, and everything works again once space returns, without a restart.
//!
//! The full-disk tests put the data directory on a small tmpfs (they need root
//! to mount one; without it they say so and pass).

use std::path::Path;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel};
use warren_integration_tests::small_disk::SmallDisk;
use warren_integration_tests::*;

async fn start(dir: &Path, engine: warren::EngineKind) -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .config(warren::Config {
            // This tiny disk is below the free-space limit from the start; the
            // alarm under test here is the one a failing write raises.
            disk_free_limit: None,
            ..Default::default()
        })
        .data_dir(dir, engine)
        .start()
        .await
        .expect("broker starts on the data directory")
}

fn persistent(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(id.into())
}

async fn declare_durable(ch: &Channel, name: &str) {
    within(
        "queue.declare",
        ch.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare-ok");
}

async fn confirming_channel(broker: &warren::Broker) -> (lapin::Connection, Channel) {
    let (conn, ch) = connect_channel(broker).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select-ok");
    (conn, ch)
}

/// Publish one persistent message and wait for its confirm: true for ack.
async fn publish_confirmed(ch: &Channel, queue: &str, id: &str, body: &[u8]) -> bool {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            persistent(id),
        ),
    )
    .await
    .expect("basic.publish");
    match within("the publisher confirm", confirm).await {
        Ok(Confirmation::Ack(_)) => true,
        Ok(Confirmation::Nack(_)) => false,
        other => panic!("unexpected confirm for {id}: {other:?}"),
    }
}

/// The message ids in a queue, in order (taken with basic.get and left there).
async fn ids_in(ch: &Channel, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(m) = within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions::default()),
    )
    .await
    .expect("basic.get")
    {
        ids.push(
            m.properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
        );
    }
    ids
}

async fn get_one(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    within(
        "basic.get",
        ch.basic_get(queue.into(), BasicGetOptions::default()),
    )
    .await
    .expect("basic.get")
    .expect("a message in the queue")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_not_permanent() {
    for engine in [warren::EngineKind::Redb, warren::EngineKind::Sled] {
        let Some(disk) = SmallDisk::mount(24 * 1024 * 1024) else {
            return;
        };
        let broker = start(&disk.data_dir(), engine).await;
        let (_pconn, pub_ch) = confirming_channel(&broker).await;
        declare_durable(&pub_ch, "q").await;
        for i in 0..3 {
            assert!(publish_confirmed(&pub_ch, "q", &format!("before-{i}"), b"x").await);
        }
        // A consumer on its own connection (never blocked) holds two messages.
        let (_cconn, cons_ch) = connect_channel(&broker).await;
        let first = get_one(&cons_ch, "q").await;
        let second = get_one(&cons_ch, "q").await;
        within(
            "ack before the fault",
            first.acker.ack(BasicAckOptions::default()),
        )
        .await
        .expect("basic.ack");

        disk.fill();
        // Publish until the store reports the disk full: a nack.
        let body = vec![7u8; 16 * 1024];
        let mut nacked = false;
        for i in 0..4000 {
            if !publish_confirmed(&pub_ch, "q", &format!("during-{i}"), &body).await {
                nacked = true;
                break;
            }
        }
        assert!(
            nacked,
            "{engine:?}: a publish is nacked once the disk is full"
        );
        // An ack while the disk is full must not be lost.
        within(
            "ack during the fault",
            second.acker.ack(BasicAckOptions::default()),
        )
        .await
        .expect("basic.ack");

        disk.free();
        assert!(
            publish_confirmed(&pub_ch, "q", "after", b"x").await,
            "{engine:?}: once space returns, persistent publishes are confirmed again"
        );
        // The consumer connection still works, and acks are written again.
        let third = get_one(&cons_ch, "q").await;
        assert_eq!(
            third.properties.message_id().as_ref().map(|s| s.as_str()),
            Some("before-2")
        );
        within(
            "ack after the fault",
            third.acker.ack(BasicAckOptions::default()),
        )
        .await
        .expect("basic.ack");
        // A round trip on the same channel: the broker has taken the ack
        // (frames are handled in order) before it is stopped.
        within(
            "queue.declare (passive) after the ack",
            cons_ch.queue_declare(
                "q".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .expect("queue.declare-ok");
        drop((_pconn, _cconn));
        broker.shutdown().await;

        let broker = start(&disk.data_dir(), engine).await;
        let (_conn, ch) = connect_channel(&broker).await;
        let ids = ids_in(&ch, "q").await;
        for acked in ["before-0", "before-1", "before-2"] {
            assert!(
                !ids.iter().any(|i| i == acked),
                "{engine:?}: {acked} was acked but came back: {ids:?}"
            );
        }
        assert_eq!(
            ids.last().map(|s| s.as_str()),
            Some("after"),
            "{engine:?}: {ids:?}"
        );
        broker.shutdown().await;
        drop(disk);
    }
}
