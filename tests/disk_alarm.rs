//! The disk alarm (RabbitMQ's `disk_free_limit`): below the limit, publishing
//! connections get `connection.blocked` "low on disk" and are not read; once
//! space returns they get `connection.unblocked` and go on.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lapin::Confirmation;
use warren_integration_tests::small_disk::SmallDisk;
use warren_integration_tests::*;

async fn start(dir: &std::path::Path, limit: u64) -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .config(warren::Config {
            disk_free_limit: Some(limit),
            ..Default::default()
        })
        .data_dir(dir, warren::EngineKind::Redb)
        .start()
        .await
        .expect("broker starts")
}

async fn next_block_event(
    events: &mut (impl futures_util::Stream<Item = lapin::Event> + Unpin),
) -> Option<String> {
    within("connection.blocked or unblocked", async {
        loop {
            match events.next().await {
                Some(lapin::Event::ConnectionBlocked(r)) => return Some(r),
                Some(lapin::Event::ConnectionUnblocked) => return None,
                Some(_) => continue,
                None => panic!("the connection ended"),
            }
        }
    })
    .await
}

async fn publish_confirmed(ch: &lapin::Channel, body: &[u8]) -> bool {
    let c = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        ),
    )
    .await
    .expect("basic.publish");
    matches!(within("confirm", c).await, Ok(Confirmation::Ack(_)))
}

async fn setup(broker: &warren::Broker) -> (lapin::Connection, lapin::Channel) {
    let (conn, ch) = connect_channel(broker).await;
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select-ok");
    within(
        "queue.declare",
        ch.queue_declare(
            "q".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare-ok");
    (conn, ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_above_the_free_space_blocks_publishers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path(), u64::MAX / 2).await;
    let (conn, ch) = setup(&broker).await;
    let mut events = Box::pin(conn.events_listener());
    // Not a publisher yet: not blocked, methods still work.
    sync(&ch).await;
    within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("basic.publish");
    assert_eq!(
        next_block_event(&mut events).await.as_deref(),
        Some("low on disk")
    );
    assert!(broker.core().alarms().disk());
    // A consumer connection (never published) is not blocked.
    let (_c2, ch2) = connect_channel(&broker).await;
    sync(&ch2).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_are_unblocked_when_space_returns() {
    let Some(disk) = SmallDisk::mount(32 * 1024 * 1024) else {
        return;
    };
    let limit = 16 * 1024 * 1024;
    let broker = start(&disk.data_dir(), limit).await;
    let (conn, ch) = setup(&broker).await;
    let mut events = Box::pin(conn.events_listener());
    assert!(publish_confirmed(&ch, b"before").await);

    disk.fill_leaving(limit / 2);
    assert_eq!(
        next_block_event(&mut events).await.as_deref(),
        Some("low on disk")
    );
    disk.free();
    assert_eq!(
        next_block_event(&mut events).await,
        None,
        "connection.unblocked"
    );
    assert!(publish_confirmed(&ch, b"after").await);
    drop(conn);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_brokers_have_no_disk_alarm() {
    let broker = start_broker_with(warren::Config {
        disk_free_limit: Some(u64::MAX / 2),
        ..Default::default()
    })
    .await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish(&ch, "", "q", b"x").await;
    sync(&ch).await;
    assert!(!broker.core().alarms().disk());
    broker.shutdown().await;
}
