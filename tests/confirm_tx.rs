//! Publisher confirms and transactions.

use amq_protocol::frame::AMQPFrame;
use amq_protocol::protocol::{basic, confirm, queue, AMQPClass};
use lapin::options::{BasicAckOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use warren_integration_tests::*;

async fn confirm_select(ch: &Channel) {
    within(
        "confirm.select",
        ch.confirm_select(ConfirmSelectOptions::default()),
    )
    .await
    .expect("confirm.select-ok");
}

async fn tx_select(ch: &Channel) {
    within("tx.select", ch.tx_select())
        .await
        .expect("tx.select-ok");
}

async fn count_elsewhere(conn: &Connection, queue: &str) -> u32 {
    let ch = open_channel(conn).await;
    let n = message_count(&ch, queue).await;
    let _ = ch.close(200, "OK".into()).await;
    n
}

// ----- confirms -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_acked_with_lapin() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    confirm_select(&ch).await;
    confirm_select(&ch).await; // twice is fine
    let mut pending = Vec::new();
    for i in 0..50 {
        pending.push(
            within(
                "basic.publish",
                ch.basic_publish(
                    "".into(),
                    "q".into(),
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default(),
                ),
            )
            .await
            .unwrap(),
        );
    }
    for (i, p) in pending.into_iter().enumerate() {
        let c = within("confirm", p)
            .await
            .unwrap_or_else(|e| panic!("confirm {i}: {e}"));
        assert!(c.is_ack(), "publish {i} must be acked");
    }
    assert!(within("wait_for_confirms", ch.wait_for_confirms())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(message_count(&ch, "q").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_publishes_are_acked() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    confirm_select(&ch).await;
    for _ in 0..3 {
        let c = within(
            "publish",
            ch.basic_publish(
                "".into(),
                "nowhere".into(),
                Default::default(),
                b"m",
                Default::default(),
            ),
        )
        .await
        .unwrap();
        assert!(within("confirm", c).await.unwrap().is_ack());
    }
}

fn declare_q(name: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

/// Read basic.ack / basic.nack frames until everything up to `last` is confirmed.
/// Returns (delivery_tag, multiple) of each ack.
async fn collect_acks(c: &mut RawClient, last: u64) -> Vec<(u64, bool)> {
    let mut acks = Vec::new();
    let mut covered = 0;
    while covered < last {
        match c.read_frame().await {
            Some(AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Ack(a)))) => {
                acks.push((a.delivery_tag, a.multiple));
                covered = a.delivery_tag;
            }
            Some(AMQPFrame::Method(1, AMQPClass::Basic(basic::AMQPMethod::Nack(n)))) => {
                panic!("unexpected basic.nack {n:?}")
            }
            Some(AMQPFrame::Heartbeat) => {}
            Some(other) => panic!("unexpected frame {other:?}"),
            None => panic!("socket closed while waiting for confirms"),
        }
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_sequence_numbers_start_at_one_and_increase() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.call(1, declare_q("q")).await;
    let reply = c
        .call(
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await;
    assert!(
        matches!(
            reply,
            (1, AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)))
        ),
        "{reply:?}"
    );

    // One at a time: each is acked individually with its own sequence number.
    for n in 1..=3u64 {
        c.publish(1, "", "q", Default::default(), b"one").await;
        assert_eq!(collect_acks(&mut c, n).await, [(n, false)]);
    }

    // A burst: acks may be coalesced with multiple=true, but must be strictly
    // increasing and end exactly at the last sequence number.
    for _ in 0..20 {
        c.publish(1, "", "q", Default::default(), b"burst").await;
    }
    let acks = collect_acks(&mut c, 23).await;
    let mut prev = 3;
    for &(tag, multiple) in &acks {
        assert!(tag > prev, "ack tags must increase: {acks:?}");
        assert!(
            multiple || tag == prev + 1,
            "a single ack must not skip sequence numbers: {acks:?}"
        );
        prev = tag;
    }
    assert_eq!(prev, 23);
    // Unroutable messages are confirmed too.
    c.publish(1, "amq.direct", "nowhere", Default::default(), b"x")
        .await;
    assert_eq!(collect_acks(&mut c, 24).await, [(24, false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_nowait() {
    let broker = start_broker().await;
    let mut c = RawClient::open(broker.local_addr()).await;
    c.open_channel(1).await;
    c.call(1, declare_q("q")).await;
    c.send_method(
        1,
        AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
            nowait: true,
        })),
    )
    .await;
    c.publish(1, "", "q", Default::default(), b"m").await;
    // No select-ok: the first frame back is the ack.
    assert_eq!(collect_acks(&mut c, 1).await, [(1, false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_on_confirm_channel_is_404() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    confirm_select(&ch).await;
    let confirm = within(
        "publish",
        ch.basic_publish(
            "missing-x".into(),
            "k".into(),
            Default::default(),
            b"m",
            Default::default(),
        ),
    )
    .await
    .unwrap();
    let err = within("confirm", confirm)
        .await
        .expect_err("the channel is closed instead of a confirm");
    assert_channel_error(
        &conn,
        &ch,
        &err,
        404,
        "NOT_FOUND - no exchange 'missing-x' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_select_on_confirm_channel_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    confirm_select(&ch).await;
    let err = expect_err("tx.select", within("tx.select", ch.tx_select()).await);
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_on_tx_channel_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    tx_select(&ch).await;
    let err = expect_err(
        "confirm.select",
        within("confirm.select", ch.confirm_select(Default::default())).await,
    );
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
    )
    .await;
}

// ----- transactions -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_publishes_are_invisible_until_commit() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    tx_select(&ch).await;
    tx_select(&ch).await; // twice is fine
    for i in 0..3 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    sync(&ch).await;
    assert_eq!(count_elsewhere(&conn, "q").await, 0);
    within("tx.commit", ch.tx_commit())
        .await
        .expect("commit-ok");
    assert_eq!(count_elsewhere(&conn, "q").await, 3);
    // The channel stays transactional: the next batch waits for the next commit.
    publish(&ch, "", "q", b"m3").await;
    sync(&ch).await;
    assert_eq!(count_elsewhere(&conn, "q").await, 3);
    within("tx.commit", ch.tx_commit()).await.unwrap();
    assert_eq!(count_elsewhere(&conn, "q").await, 4);
    let ch2 = open_channel(&conn).await;
    let mut order = Vec::new();
    while let Some(m) = get_opts(&ch2, "q", true).await {
        order.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(order, ["m0", "m1", "m2", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_rollback_discards_publishes() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    tx_select(&ch).await;
    publish(&ch, "", "q", b"discarded").await;
    within("tx.rollback", ch.tx_rollback())
        .await
        .expect("rollback-ok");
    within("tx.commit", ch.tx_commit())
        .await
        .expect("empty commit");
    assert_eq!(count_elsewhere(&conn, "q").await, 0);
    publish(&ch, "", "q", b"kept").await;
    within("tx.commit", ch.tx_commit()).await.unwrap();
    assert_eq!(count_elsewhere(&conn, "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_publishes_are_lost_when_the_channel_closes() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    tx_select(&ch).await;
    publish(&ch, "", "q", b"lost").await;
    within("close", ch.close(200, "OK".into())).await.unwrap();
    assert_eq!(count_elsewhere(&conn, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_acks_are_held_until_commit() {
    let broker = start_broker().await;
    let (conn, setup) = connect_channel(&broker).await;
    declare_queue(&setup, "q").await;
    for i in 0..3 {
        publish(&setup, "", "q", format!("m{i}").as_bytes()).await;
    }

    // Uncommitted ack, then the channel closes: the message comes back.
    let ch = open_channel(&conn).await;
    tx_select(&ch).await;
    let m = get(&ch, "q").await.unwrap();
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    sync(&ch).await;
    within("close", ch.close(200, "OK".into())).await.unwrap();
    assert_eq!(count_elsewhere(&conn, "q").await, 3);

    // Committed ack: gone.
    let ch = open_channel(&conn).await;
    tx_select(&ch).await;
    let m = get(&ch, "q").await.unwrap();
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    within("tx.commit", ch.tx_commit()).await.unwrap();
    within("close", ch.close(200, "OK".into())).await.unwrap();
    assert_eq!(count_elsewhere(&conn, "q").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_ack_frees_prefetch_only_at_commit() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    within("qos", ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut consumer = consume(&ch, "q", false).await;
    tx_select(&ch).await;
    for i in 0..3 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    within("tx.commit", ch.tx_commit()).await.unwrap();
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"m0");
    d.ack(BasicAckOptions::default()).await.unwrap();
    assert_no_delivery(&mut consumer).await;
    within("tx.commit", ch.tx_commit()).await.unwrap();
    assert_eq!(next_delivery(&mut consumer).await.data, b"m1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_rollback_makes_acked_messages_ackable_again() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    tx_select(&ch).await;
    let m = get(&ch, "q").await.unwrap();
    let tag = m.delivery.delivery_tag;
    within("ack", ch.basic_ack(tag, Default::default()))
        .await
        .unwrap();
    within("tx.rollback", ch.tx_rollback()).await.unwrap();
    within("ack again", ch.basic_ack(tag, Default::default()))
        .await
        .unwrap();
    within("tx.commit", ch.tx_commit()).await.unwrap();
    assert!(ch.status().connected());
    within("close", ch.close(200, "OK".into())).await.unwrap();
    assert_eq!(count_elsewhere(&conn, "q").await, 0);
}

// RabbitMQ removes a tag from the channel's unacked set when the ack arrives,
// even inside a transaction (rabbit_channel handle_method basic.ack), so a
// second ack of the same tag before commit is an unknown delivery tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn tx_double_ack_before_commit_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish(&ch, "", "q", b"m").await;
    tx_select(&ch).await;
    let m = get(&ch, "q").await.unwrap();
    assert_eq!(m.delivery.delivery_tag, 1);
    within("ack", ch.basic_ack(1, Default::default()))
        .await
        .unwrap();
    let mut errors = Errors::new(&conn);
    within("ack again", ch.basic_ack(1, Default::default()))
        .await
        .unwrap();
    let err = errors.next().await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_ack_of_unknown_tag_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    tx_select(&ch).await;
    let mut errors = Errors::new(&conn);
    within("ack", ch.basic_ack(5, Default::default()))
        .await
        .unwrap();
    let err = errors.next().await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - unknown delivery tag 5",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_without_select_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err("tx.commit", within("tx.commit", ch.tx_commit()).await);
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - channel is not transactional",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_without_select_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err("tx.rollback", within("tx.rollback", ch.tx_rollback()).await);
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - channel is not transactional",
    )
    .await;
}
