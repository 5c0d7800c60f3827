//! Store write failures injected under the engine seam (the fault engine):
//! exactly the confirms a failed write covers are nacked, the connection is
//! blocked with "low on disk" while writes fail, and everything resumes once
//! they succeed, without a restart.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use lapin::Confirmation;
use warren::fault_engine::{Fault, FaultControl, FaultKv};
use warren_integration_tests::*;

async fn start(dir: &std::path::Path, control: &FaultControl) -> warren::Broker {
    let control = control.clone();
    warren::Broker::builder()
        .port(0)
        .config(warren::Config {
            // The free-space alarm is not what this test is about.
            disk_free_limit: None,
            ..Default::default()
        })
        .data_dir(dir, warren::EngineKind::Redb)
        .wrap_engine(move |kv| Box::new(FaultKv::new(kv, control.clone())))
        .start()
        .await
        .expect("broker starts")
}

fn persistent(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(id.into())
}

async fn publish(ch: &lapin::Channel, id: &str) -> lapin::PublisherConfirm {
    within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "q".into(),
            BasicPublishOptions::default(),
            id.as_bytes(),
            persistent(id),
        ),
    )
    .await
    .expect("basic.publish")
}

fn is_ack(c: lapin::Result<Confirmation>) -> bool {
    match c {
        Ok(Confirmation::Ack(_)) => true,
        Ok(Confirmation::Nack(_)) => false,
        other => panic!("unexpected confirm: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_nacks_exactly_the_confirms_it_covers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = FaultControl::new();
    let broker = start(dir.path(), &control).await;
    let (conn, ch) = connect_channel(&broker).await;
    let mut events = Box::pin(conn.events_listener());
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

    for i in 0..3 {
        let c = publish(&ch, &format!("ok-{i}")).await;
        assert!(is_ack(within("confirm", c).await), "ok-{i} is confirmed");
    }

    control.fail(Fault::NoSpace);
    let c = publish(&ch, "failed").await;
    assert!(
        !is_ack(within("confirm", c).await),
        "the write failed: nack"
    );
    // The failing store raises the disk alarm: this publisher is blocked.
    let reason = within("connection.blocked", async {
        loop {
            match events.next().await {
                Some(lapin::Event::ConnectionBlocked(r)) => return r,
                Some(_) => continue,
                None => panic!("the connection ended"),
            }
        }
    })
    .await;
    assert_eq!(reason, "low on disk");

    // Published while blocked (lapin holds it back until unblocked): not
    // confirmed while writes fail...
    let later = {
        let ch = ch.clone();
        tokio::spawn(async move {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "q".into(),
                    BasicPublishOptions::default(),
                    b"later",
                    persistent("later"),
                )
                .await?;
            confirm.await
        })
    };
    tokio::time::sleep(QUIET).await;
    assert!(
        !later.is_finished(),
        "nothing is confirmed while the store cannot write"
    );
    assert!(broker.core().store().is_some_and(|s| s.is_failing()));
    // ...and confirmed once they succeed again, with no restart.
    control.heal();
    let confirmed = within("confirm after healing", later)
        .await
        .expect("the publishing task");
    assert!(is_ack(confirmed));
    let unblocked = within("connection.unblocked", async {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
                Ok(Some(lapin::Event::ConnectionUnblocked)) => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert!(unblocked || !conn.status().blocked());
    assert!(!broker.core().alarms().disk());

    // Everything is there (the nacked message too: at-least-once).
    let (_c2, ch2) = connect_channel(&broker).await;
    assert_eq!(message_count(&ch2, "q").await, 5);
    broker.shutdown().await;
}
