//! Paging over TCP: backlogs past a queue's in-memory window (8 MiB of
//! bodies) are read back from disk for `basic.get` as well as for consumers,
//! and a transient backlog pages to disk when memory is short.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_integration_tests::*;

async fn start(dir: &std::path::Path) -> warren::Broker {
    // No memory monitor: the last test sets the memory pressure itself.
    let config = warren::Config {
        memory_high_watermark: None,
        ..warren::Config::default()
    };
    warren::Broker::builder()
        .port(0)
        .config(config)
        .data_dir(dir, warren::EngineKind::Redb)
        .start()
        .await
        .expect("broker starts on the data directory")
}

fn body(i: u32) -> Vec<u8> {
    let mut b = vec![b'.'; 1024];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b
}

fn index(data: &[u8]) -> u32 {
    u32::from_be_bytes(data[..4].try_into().expect("4 bytes"))
}

/// Publish `n` 1 KiB messages with confirms.
async fn publish_confirmed(ch: &lapin::Channel, queue: &str, n: u32, persistent: bool) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm.select");
    let props = BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    let mut confirms = Vec::new();
    for i in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i),
                props.clone(),
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(within("confirm", c).await.expect("confirm").is_ack());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_drains_a_backlog_past_the_window_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = 12_000; // ~12 MiB: the tail is only on disk after the restart
    {
        let broker = start(dir.path()).await;
        let (_conn, ch) = connect_channel(&broker).await;
        ch.queue_declare(
            "deep".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare");
        publish_confirmed(&ch, "deep", n, true).await;
        broker.shutdown().await;
    }
    let broker = start(dir.path()).await;
    let (_conn, ch) = connect_channel(&broker).await;
    for i in 0..n {
        // A method pipelined behind a get that waits for the disk is
        // answered too, after the get.
        let (m, declared) = within(
            "a get and a declare pipelined behind it",
            futures_util::future::join(
                get_opts(&ch, "deep", true),
                ch.queue_declare(
                    "deep".into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                ),
            ),
        )
        .await;
        let m = m.unwrap_or_else(|| panic!("message {i} of {n} is there"));
        assert_eq!(index(&m.delivery.data), i, "in order");
        assert_eq!(
            declared.expect("passive declare").message_count(),
            n - i - 1
        );
    }
    assert!(get(&ch, "deep").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_backlog_pages_to_disk_when_memory_is_short() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = start(dir.path()).await;
    // The memory monitor sets this past half the watermark; RSS cannot be
    // steered from a test, so set it directly (this test binary's only use).
    warren_broker::queue::set_memory_short(true);
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "wide").await;
    let n = 12_000;
    publish_confirmed(&ch, "wide", n, false).await;
    warren_broker::queue::set_memory_short(false);
    let store = std::fs::metadata(dir.path().join("warren.redb"))
        .expect("the store file")
        .len();
    assert!(
        store > 4 << 20,
        "bodies past the window went to disk (store: {store} B)"
    );
    let mut consumer = consume(&ch, "wide", false).await;
    for i in 0..n {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(index(&d.data), i, "in order");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
}
