//! RabbitMQ extensions: TTL, max-length, dead-lettering, priorities,
//! sender-selected distribution, single active consumer, direct reply-to,
//! consumer priorities.

use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel};
use warren_integration_tests::*;

async fn declare_args(ch: &Channel, name: &str, args: FieldTable) {
    within(
        "queue.declare",
        ch.queue_declare(name.into(), QueueDeclareOptions::default(), args),
    )
    .await
    .unwrap_or_else(|e| panic!("declare {name}: {e}"));
}

fn expiring(ms: &str) -> BasicProperties {
    BasicProperties::default().with_expiration(ms.into())
}

async fn drain_bodies(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = get_opts(ch, queue, true).await {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    out
}

fn x_death(props: &BasicProperties) -> FieldTable {
    let headers = props.headers().as_ref().expect("headers");
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => match a.as_slice().first() {
            Some(AMQPValue::FieldTable(t)) => t.clone(),
            other => panic!("x-death[0]: {other:?}"),
        },
        other => panic!("x-death: {other:?}"),
    }
}

fn str_field(t: &FieldTable, key: &str) -> String {
    match t.inner().get(key) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("{key}: {other:?}"),
    }
}

// ----- TTL ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_ttl_zero_expires_without_a_consumer() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_props(&ch, "", "q", b"gone", expiring("0")).await;
    publish_props(&ch, "", "q", b"kept", expiring("60000")).await;
    sync(&ch).await;
    assert_eq!(drain_bodies(&ch, "q").await, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_ttl_expires_messages() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_props(&ch, "", "q", b"short", expiring("50")).await;
    publish(&ch, "", "q", b"forever").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(drain_bodies(&ch, "q").await, ["forever"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_message_ttl_expires_messages() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_args(&ch, "q", table([("x-message-ttl", AMQPValue::LongInt(50))])).await;
    publish(&ch, "", "q", b"m").await;
    sync(&ch).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(get(&ch, "q").await.is_none());
    eventually_count(&ch, "q", 0).await;
}

async fn eventually_count(ch: &Channel, queue: &str, n: u32) {
    within("the message count to settle", async {
        while message_count(ch, queue).await != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_expiration_property_is_406() {
    for (exp, reason) in [
        ("abc", "no_integer".to_string()),
        ("-5", "{value_negative,-5}".to_string()),
        ("10x", "{leftover_string,\"x\"}".to_string()),
    ] {
        let broker = start_broker().await;
        let (conn, ch) = connect_channel(&broker).await;
        declare_queue(&ch, "q").await;
        let mut errors = Errors::new(&conn);
        within(
            "publish",
            ch.basic_publish(
                "".into(),
                "q".into(),
                Default::default(),
                b"m",
                expiring(exp),
            ),
        )
        .await
        .unwrap();
        let err = errors.next().await;
        assert_channel_error(
            &conn,
            &ch,
            &err,
            406,
            &format!("PRECONDITION_FAILED - invalid expiration '{exp}': {reason}"),
        )
        .await;
    }
}

// rabbit_misc:check_expiry/1 refuses values above 2^32-1 ms (MAX_EXPIRY_TIMER).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn expiration_above_ten_years_is_406() {
    // RabbitMQ 3.10.8 takes up to ten years (315360000000 ms), well past 2^32.
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    publish_props(&ch, "", "q", b"2^32", expiring("4294967296")).await;
    publish_props(&ch, "", "q", b"max", expiring("315360000000")).await;
    let mut errors = Errors::new(&conn);
    within(
        "publish",
        ch.basic_publish(
            "".into(),
            "q".into(),
            Default::default(),
            b"m",
            expiring("315360000001"),
        ),
    )
    .await
    .unwrap();
    let err = errors.next().await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - invalid expiration '315360000001': {value_too_large,315360000001}",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn ttl_arguments_above_ten_years_are_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    for arg in ["x-message-ttl", "x-expires"] {
        within(
            "queue.declare past 2^32 ms",
            ch.queue_declare(
                "q.long".into(),
                QueueDeclareOptions::default(),
                table([(arg, AMQPValue::LongLongInt(315_360_000_000))]),
            ),
        )
        .await
        .expect("ten years is accepted");
        ch.queue_delete("q.long".into(), Default::default())
            .await
            .expect("queue.delete");
        let ch = open_channel(&conn).await;
        let err = expect_err(
            arg,
            within(
                "queue.declare",
                ch.queue_declare(
                    "q.args".into(),
                    QueueDeclareOptions::default(),
                    table([(arg, AMQPValue::LongLongInt(315_360_000_001))]),
                ),
            )
            .await,
        );
        assert_channel_error(
            &conn,
            &ch,
            &err,
            406,
            &format!("PRECONDITION_FAILED - invalid arg '{arg}' for queue 'q.args' in vhost '/': {{value_too_large,315360000001}}"),
        )
        .await;
    }
}

async fn queue_exists(conn: &lapin::Connection, name: &str) -> bool {
    let probe = open_channel(conn).await;
    let r = within(
        "passive declare",
        probe.queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await;
    match r {
        Ok(_) => {
            let _ = probe.close(200, "OK".into()).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_expires_when_unused() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_args(&ch, "temp", table([("x-expires", AMQPValue::LongInt(100))])).await;
    // Leave it alone (a passive declare would renew its lease).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        !queue_exists(&conn, "temp").await,
        "expired after 100 ms unused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_expiry_is_renewed_by_declares_and_postponed_by_consumers() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let args = || table([("x-expires", AMQPValue::LongInt(1000))]);
    declare_args(&ch, "temp", args()).await;
    // Redeclaring renews the lease (RabbitMQ resets the timer on queue.declare):
    // 1.6 s of redeclares every 200 ms outlive the 1 s lease.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        declare_args(&ch, "temp", args()).await;
    }
    // A consumer keeps it alive indefinitely.
    let consumer = consume(&ch, "temp", true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(queue_exists(&conn, "temp").await, "in use: must not expire");
    // Once unused again, it expires.
    within(
        "cancel",
        ch.basic_cancel(consumer.tag(), Default::default()),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!queue_exists(&conn, "temp").await, "unused again: expired");
}

// ----- max-length -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_drops_from_the_head() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_args(&ch, "q", table([("x-max-length", AMQPValue::LongInt(2))])).await;
    for i in 0..5 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    sync(&ch).await;
    assert_eq!(drain_bodies(&ch, "q").await, ["m3", "m4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_length_reject_publish_nacks_the_publisher() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_args(
        &ch,
        "q",
        table([
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", lstr("reject-publish")),
        ]),
    )
    .await;
    within("confirm.select", ch.confirm_select(Default::default()))
        .await
        .unwrap();
    let mut results = Vec::new();
    for i in 0..3 {
        let c = within(
            "publish",
            ch.basic_publish(
                "".into(),
                "q".into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                Default::default(),
            ),
        )
        .await
        .unwrap();
        results.push(within("confirm", c).await.unwrap().is_ack());
    }
    assert_eq!(results, [true, true, false]);
    assert_eq!(drain_bodies(&ch, "q").await, ["m0", "m1"]);
}

// ----- dead-lettering -------------------------------------------------------------

async fn dlx_setup(ch: &Channel, extra: &[(&str, AMQPValue)]) {
    declare_queue(ch, "dlq").await;
    let mut args = table([
        ("x-dead-letter-exchange", lstr("")),
        ("x-dead-letter-routing-key", lstr("dlq")),
    ]);
    for (k, v) in extra {
        args.insert((*k).into(), v.clone());
    }
    declare_args(ch, "work", args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_message_is_dead_lettered_with_x_death() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    dlx_setup(&ch, &[]).await;
    publish(&ch, "", "work", b"bad").await;
    let m = get(&ch, "work").await.unwrap();
    within(
        "reject",
        m.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    sync(&ch).await;
    let dead = get_opts(&ch, "dlq", true).await.expect("dead-lettered");
    assert_eq!(dead.delivery.data, b"bad");
    assert_eq!(dead.delivery.routing_key.as_str(), "dlq");
    let death = x_death(&dead.delivery.properties);
    assert_eq!(str_field(&death, "reason"), "rejected");
    assert_eq!(str_field(&death, "queue"), "work");
    assert_eq!(str_field(&death, "exchange"), "");
    assert_eq!(
        death.inner().get("routing-keys"),
        Some(&AMQPValue::FieldArray(FieldArray::from(vec![lstr("work")])))
    );
    assert!(matches!(
        death.inner().get("count"),
        Some(AMQPValue::LongLongInt(1))
    ));
    assert!(matches!(
        death.inner().get("time"),
        Some(AMQPValue::Timestamp(_))
    ));
}

/// A client-supplied x-death count at i64::MAX must not overflow (found by fuzzing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_death_count_saturates_instead_of_overflowing() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    dlx_setup(&ch, &[]).await;
    let death = table([
        ("count", AMQPValue::LongLongInt(i64::MAX)),
        ("reason", lstr("rejected")),
        ("queue", lstr("work")),
    ]);
    let headers = table([(
        "x-death",
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    )]);
    publish_props(
        &ch,
        "",
        "work",
        b"old",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    let m = get(&ch, "work").await.unwrap();
    within(
        "reject",
        m.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    sync(&ch).await;
    let dead = get_opts(&ch, "dlq", true).await.expect("dead-lettered");
    let death = x_death(&dead.delivery.properties);
    assert!(matches!(
        death.inner().get("count"),
        Some(AMQPValue::LongLongInt(i64::MAX))
    ));
}

fn death_queues(props: &BasicProperties) -> Vec<(String, i64)> {
    let headers = props.headers().as_ref().expect("headers");
    match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|d| match d {
                AMQPValue::FieldTable(t) => (
                    str_field(t, "queue"),
                    match t.inner().get("count") {
                        Some(AMQPValue::LongLongInt(n)) => *n,
                        other => panic!("count: {other:?}"),
                    },
                ),
                other => panic!("x-death entry: {other:?}"),
            })
            .collect(),
        other => panic!("x-death: {other:?}"),
    }
}

/// A -(rejected)-> B -(expired)-> C -(expired)-> A. RabbitMQ 3.10.8 reorders
/// `x-death` on each update (see quorum.rs), and its cycle check reads that
/// order: the second time round, on the way from B to C, the deaths before
/// C's entry are B's alone -- no rejection -- so the message is dropped as
/// a cycle; in newest-first order A's rejection would come first and let it
/// through. With its own dead-letter routing key a message also loses its
/// `CC` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_cycle_is_cut_where_rabbitmq_cuts_it() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let to = |q: &str| {
        table([
            ("x-dead-letter-exchange", lstr("")),
            ("x-dead-letter-routing-key", lstr(q)),
        ])
    };
    declare_args(&ch, "A", to("B")).await;
    for (q, next) in [("B", "C"), ("C", "A")] {
        let mut args = to(next);
        args.insert("x-message-ttl".into(), AMQPValue::LongInt(20));
        declare_args(&ch, q, args).await;
    }
    let cc = table([(
        "CC",
        AMQPValue::FieldArray(FieldArray::from(vec![lstr("nowhere")])),
    )]);
    publish_props(
        &ch,
        "",
        "A",
        b"m",
        BasicProperties::default().with_headers(cc),
    )
    .await;
    let m = get(&ch, "A").await.expect("published");
    within(
        "reject",
        m.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    let back = within("the message back in A", async {
        loop {
            if let Some(m) = get(&ch, "A").await {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let props = &back.delivery.properties;
    assert_eq!(
        death_queues(props),
        [
            ("C".to_owned(), 1),
            ("A".to_owned(), 1),
            ("B".to_owned(), 1)
        ]
    );
    assert!(
        !props.headers().as_ref().unwrap().contains_key("CC"),
        "CC dropped with the dead-letter routing key"
    );
    within(
        "reject",
        back.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await
    .unwrap();
    // B then C: dropped on the way to C, so nothing comes back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for q in ["A", "B", "C"] {
        assert_eq!(message_count(&ch, q).await, 0, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_with_requeue_is_not_dead_lettered() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    dlx_setup(&ch, &[]).await;
    publish(&ch, "", "work", b"again").await;
    let m = get(&ch, "work").await.unwrap();
    within(
        "reject",
        m.delivery.reject(BasicRejectOptions { requeue: true }),
    )
    .await
    .unwrap();
    sync(&ch).await;
    assert_eq!(message_count(&ch, "dlq").await, 0);
    assert_eq!(message_count(&ch, "work").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_is_dead_lettered() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    dlx_setup(&ch, &[("x-message-ttl", AMQPValue::LongInt(30))]).await;
    publish(&ch, "", "work", b"late").await;
    let mut consumer = consume(&ch, "dlq", true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"late");
    assert_eq!(str_field(&x_death(&d.properties), "reason"), "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflowed_message_is_dead_lettered() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    dlx_setup(&ch, &[("x-max-length", AMQPValue::LongInt(1))]).await;
    publish(&ch, "", "work", b"first").await;
    publish(&ch, "", "work", b"second").await;
    sync(&ch).await;
    let dead = get_opts(&ch, "dlq", true).await.expect("dead-lettered");
    assert_eq!(dead.delivery.data, b"first");
    assert_eq!(
        str_field(&x_death(&dead.delivery.properties), "reason"),
        "maxlen"
    );
    assert_eq!(drain_bodies(&ch, "work").await, ["second"]);
}

// ----- priorities ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_highest_priority_first() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_args(
        &ch,
        "pq",
        table([("x-max-priority", AMQPValue::LongInt(10))]),
    )
    .await;
    for (body, prio) in [
        ("low", 1u8),
        ("none", 0),
        ("high", 9),
        ("mid", 5),
        ("high2", 9),
    ] {
        let props = if prio == 0 {
            BasicProperties::default()
        } else {
            BasicProperties::default().with_priority(prio)
        };
        publish_props(&ch, "", "pq", body.as_bytes(), props).await;
    }
    sync(&ch).await;
    assert_eq!(
        drain_bodies(&ch, "pq").await,
        ["high", "high2", "mid", "low", "none"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_priority_wins_while_it_has_capacity() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let low_ch = open_channel(&conn).await;
    let high_ch = open_channel(&conn).await;
    let mut low = consume(&low_ch, "q", true).await;
    let mut high = within(
        "consume",
        high_ch.basic_consume(
            "q".into(),
            "high".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            table([("x-priority", AMQPValue::LongInt(10))]),
        ),
    )
    .await
    .unwrap();
    for i in 0..5 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(
        bodies(&next_deliveries(&mut high, 5).await),
        ["m0", "m1", "m2", "m3", "m4"]
    );
    assert_no_delivery(&mut low).await;
}

// ----- sender-selected distribution -----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_headers_add_routing_keys() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    for (q, key) in [("qa", "a"), ("qb", "b"), ("qc", "c")] {
        declare_queue(&ch, q).await;
        bind_queue(&ch, q, "amq.direct", key).await;
    }
    let headers = table([
        (
            "CC",
            AMQPValue::FieldArray(FieldArray::from(vec![lstr("b")])),
        ),
        (
            "BCC",
            AMQPValue::FieldArray(FieldArray::from(vec![lstr("c")])),
        ),
        ("other", lstr("kept")),
    ]);
    publish_props(
        &ch,
        "amq.direct",
        "a",
        b"m",
        BasicProperties::default().with_headers(headers),
    )
    .await;
    sync(&ch).await;
    for q in ["qa", "qb", "qc"] {
        let m = get_opts(&ch, q, true)
            .await
            .unwrap_or_else(|| panic!("{q} must get a copy"));
        let h = m.delivery.properties.headers().clone().unwrap();
        assert!(h.inner().contains_key("CC"), "CC is kept");
        assert!(
            !h.inner().contains_key("BCC"),
            "BCC is removed before delivery"
        );
        assert_eq!(h.inner().get("other"), Some(&lstr("kept")));
        assert_eq!(m.delivery.routing_key.as_str(), "a");
    }
}

// ----- single active consumer ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_gets_everything_until_it_leaves() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_args(
        &ch,
        "sac",
        table([("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await;
    let ch1 = open_channel(&conn).await;
    let ch2 = open_channel(&conn).await;
    let mut first = consume_tag(&ch1, "sac", "first", true).await;
    let mut second = consume_tag(&ch2, "sac", "second", true).await;
    for i in 0..4 {
        publish(&ch, "", "sac", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(
        bodies(&next_deliveries(&mut first, 4).await),
        ["m0", "m1", "m2", "m3"]
    );
    assert_no_delivery(&mut second).await;
    within(
        "cancel",
        ch1.basic_cancel("first".into(), Default::default()),
    )
    .await
    .unwrap();
    publish(&ch, "", "sac", b"m4").await;
    assert_eq!(next_delivery(&mut second).await.data, b"m4");
}

// ----- direct reply-to --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_round_trip() {
    let broker = start_broker().await;
    let (_sconn, server) = connect_channel(&broker).await;
    declare_queue(&server, "rpc").await;
    let mut requests = consume(&server, "rpc", true).await;

    let (_cconn, client) = connect_channel(&broker).await;
    let mut replies = consume(&client, "amq.rabbitmq.reply-to", true).await;
    publish_props(
        &client,
        "",
        "rpc",
        b"ping",
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("c1".into()),
    )
    .await;

    let req = next_delivery(&mut requests).await;
    let reply_to = req
        .properties
        .reply_to()
        .clone()
        .expect("reply_to")
        .to_string();
    assert!(
        reply_to.starts_with("amq.rabbitmq.reply-to."),
        "reply_to must be rewritten to a routable address: {reply_to}"
    );
    publish_props(
        &server,
        "",
        &reply_to,
        b"pong",
        BasicProperties::default().with_correlation_id("c1".into()),
    )
    .await;
    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(
        reply.properties.correlation_id().clone().unwrap().as_str(),
        "c1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_requires_a_no_ack_reply_consumer() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "consume reply-to with acks",
        within(
            "basic.consume",
            ch.basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - reply consumer cannot acknowledge",
    )
    .await;

    let ch = open_channel(&conn).await;
    let mut errors = Errors::new(&conn);
    within(
        "publish",
        ch.basic_publish(
            "".into(),
            "rpc".into(),
            Default::default(),
            b"x",
            BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
        ),
    )
    .await
    .unwrap();
    let err = errors.next().await;
    assert_channel_error(
        &conn,
        &ch,
        &err,
        406,
        "PRECONDITION_FAILED - fast reply consumer does not exist",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_still_applies_with_consumer_arguments() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    within("qos", ch.basic_qos(1, BasicQosOptions::default()))
        .await
        .unwrap();
    let mut c = within(
        "consume",
        ch.basic_consume(
            "q".into(),
            "".into(),
            Default::default(),
            table([("x-priority", AMQPValue::LongInt(3))]),
        ),
    )
    .await
    .unwrap();
    for i in 0..3 {
        publish(&ch, "", "q", format!("m{i}").as_bytes()).await;
    }
    assert_eq!(next_delivery(&mut c).await.data, b"m0");
    assert_no_delivery(&mut c).await;
}
