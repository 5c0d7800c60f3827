//! exchange.declare / delete / bind / unbind, internal and alternate exchanges.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};
use warren_integration_tests::*;

async fn declare(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> lapin::Result<()> {
    within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, options, args),
    )
    .await
}

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

async fn exists(conn: &Connection, name: &str) -> bool {
    let ch = open_channel(conn).await;
    match declare(
        &ch,
        name,
        ExchangeKind::Direct,
        passive(),
        FieldTable::default(),
    )
    .await
    {
        Ok(()) => {
            let _ = ch.close(200, "OK".into()).await;
            true
        }
        Err(e) => {
            assert_closed_with(
                &e,
                404,
                &format!("NOT_FOUND - no exchange '{name}' in vhost '/'"),
            );
            false
        }
    }
}

async fn delete(ch: &Channel, name: &str, if_unused: bool) -> lapin::Result<()> {
    within(
        "exchange.delete",
        ch.exchange_delete(
            name.into(),
            ExchangeDeleteOptions {
                if_unused,
                ..Default::default()
            },
        ),
    )
    .await
}

async fn e2e_bind(ch: &Channel, destination: &str, source: &str, key: &str) -> lapin::Result<()> {
    within(
        "exchange.bind",
        ch.exchange_bind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

async fn e2e_unbind(ch: &Channel, destination: &str, source: &str, key: &str) -> lapin::Result<()> {
    within(
        "exchange.unbind",
        ch.exchange_unbind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Declare `name` on a fresh channel expecting a channel error.
async fn declare_fails(
    conn: &Connection,
    name: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
    code: u16,
    text: &str,
) {
    let ch = open_channel(conn).await;
    let err = expect_err(
        &format!("declare exchange {name:?}"),
        declare(&ch, name, kind, options, args).await,
    );
    assert_channel_error(conn, &ch, &err, code, text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_all_four_types_and_redeclare() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    for (name, kind) in [
        ("x.direct", ExchangeKind::Direct),
        ("x.fanout", ExchangeKind::Fanout),
        ("x.topic", ExchangeKind::Topic),
        ("x.headers", ExchangeKind::Headers),
    ] {
        declare(
            &ch,
            name,
            kind.clone(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("declare {name}: {e}"));
        // Same properties: fine.
        declare(
            &ch,
            name,
            kind.clone(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("redeclare {name}: {e}"));
        // Passive: fine.
        declare(&ch, name, kind, passive(), FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("passive {name}: {e}"));
        assert!(exists(&conn, name).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_exchanges_exist() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    for name in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
        "amq.rabbitmq.trace",
    ] {
        assert!(exists(&conn, name).await, "{name} must exist");
    }
    assert!(!exists(&conn, "amq.rabbitmq.log").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_exchange_is_404() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    declare_fails(
        &conn,
        "x",
        ExchangeKind::Direct,
        passive(),
        FieldTable::default(),
        404,
        "NOT_FOUND - no exchange 'x' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_with_other_type_is_fine() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    declare(
        &ch,
        "x",
        ExchangeKind::Fanout,
        passive(),
        FieldTable::default(),
    )
    .await
    .expect("passive declare ignores the type");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_type_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    declare_fails(
        &conn,
        "x",
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_flags_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    for (flags, arg) in [
        (
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            "durable",
        ),
        (
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            "auto_delete",
        ),
        (
            ExchangeDeclareOptions {
                internal: true,
                ..Default::default()
            },
            "internal",
        ),
    ] {
        declare_fails(
            &conn,
            "x",
            ExchangeKind::Direct,
            flags,
            FieldTable::default(),
            406,
            &format!("PRECONDITION_FAILED - inequivalent arg '{arg}' for exchange 'x' in vhost '/': received 'true' but current is 'false'"),
        )
        .await;
    }
    declare_fails(
        &conn,
        "x",
        ExchangeKind::Direct,
        Default::default(),
        table([("alternate-exchange", lstr("ae"))]),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received the value 'ae' of type 'longstr' but current is none",
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
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
        403,
        "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'",
    )
    .await;
    declare_fails(
        &conn,
        "amq.foo",
        ExchangeKind::Direct,
        passive(),
        FieldTable::default(),
        404,
        "NOT_FOUND - no exchange 'amq.foo' in vhost '/'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_cannot_be_declared() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    for options in [ExchangeDeclareOptions::default(), passive()] {
        declare_fails(
            &conn,
            "",
            ExchangeKind::Direct,
            options,
            FieldTable::default(),
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_exchange_redeclare() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare(
        &ch,
        "amq.direct",
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("same properties as the built-in");
    declare_fails(
        &conn,
        "amq.direct",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in vhost '/': received 'fanout' but current is 'direct'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_exchange_type_is_a_connection_error() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "declare type foo",
        declare(
            &ch,
            "x",
            ExchangeKind::Custom("foo".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_connection_error(
        &conn,
        &err,
        503,
        "COMMAND_INVALID - invalid exchange type 'foo'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    delete(&ch, "never-existed", false)
        .await
        .expect("deleting a missing exchange is fine");
    declare_exchange(&ch, "x", ExchangeKind::Topic).await;
    delete(&ch, "x", false).await.expect("delete");
    assert!(!exists(&conn, "x").await);
    delete(&ch, "x", false).await.expect("delete again");
    delete(&ch, "x", true)
        .await
        .expect("delete if_unused of a missing exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_system_and_default_exchanges_is_403() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    let ch = open_channel(&conn).await;
    let err = expect_err("delete amq.direct", delete(&ch, "amq.direct", false).await);
    assert_channel_error(
        &conn,
        &ch,
        &err,
        403,
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed",
    )
    .await;
    let ch = open_channel(&conn).await;
    let err = expect_err("delete ''", delete(&ch, "", false).await);
    assert_channel_error(
        &conn,
        &ch,
        &err,
        403,
        "ACCESS_REFUSED - operation not permitted on the default exchange",
    )
    .await;
    assert!(exists(&conn, "amq.direct").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "x", "k").await;

    let ch2 = open_channel(&conn).await;
    let err = expect_err("delete if_unused", delete(&ch2, "x", true).await);
    assert_channel_error(
        &conn,
        &ch2,
        &err,
        406,
        "PRECONDITION_FAILED - exchange 'x' in vhost '/' in use",
    )
    .await;
    assert!(exists(&conn, "x").await);

    // Without bindings it goes.
    within(
        "queue.unbind",
        ch.queue_unbind("q".into(), "x".into(), "k".into(), FieldTable::default()),
    )
    .await
    .unwrap();
    delete(&ch, "x", true).await.expect("unused now");
    assert!(!exists(&conn, "x").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_of_exchange_that_is_only_a_destination() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "src", ExchangeKind::Direct).await;
    declare_exchange(&ch, "dst", ExchangeKind::Fanout).await;
    e2e_bind(&ch, "dst", "src", "k").await.unwrap();
    // Only bindings *from* an exchange make it "in use".
    delete(&ch, "dst", true).await.expect("dst is unused");
    assert!(!exists(&conn, "dst").await);
    // ... and the binding from src went with it.
    delete(&ch, "src", true)
        .await
        .expect("src has no bindings left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_exchange_removes_its_bindings() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Fanout).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "x", "").await;
    delete(&ch, "x", false).await.unwrap();
    // Re-created: the old binding must not come back.
    declare_exchange(&ch, "x", ExchangeKind::Fanout).await;
    publish(&ch, "x", "", b"m").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_binding_routes_and_unbind_stops_it() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "src", ExchangeKind::Topic).await;
    declare_exchange(&ch, "dst", ExchangeKind::Direct).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "dst", "a.b").await;
    e2e_bind(&ch, "dst", "src", "a.*").await.unwrap();

    publish(&ch, "src", "a.b", b"routed").await;
    publish(&ch, "src", "a.c", b"matches src but not dst").await;
    publish(&ch, "src", "x.b", b"matches nothing").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1);
    assert_eq!(get(&ch, "q").await.unwrap().delivery.data, b"routed");

    e2e_unbind(&ch, "dst", "src", "a.*").await.unwrap();
    publish(&ch, "src", "a.b", b"after unbind").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 0);
    // Unbind is idempotent.
    e2e_unbind(&ch, "dst", "src", "a.*").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_binding_chain_and_cycle() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    for x in ["x1", "x2", "x3"] {
        declare_exchange(&ch, x, ExchangeKind::Fanout).await;
    }
    e2e_bind(&ch, "x2", "x1", "").await.unwrap();
    e2e_bind(&ch, "x3", "x2", "").await.unwrap();
    e2e_bind(&ch, "x1", "x3", "").await.unwrap(); // a cycle
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "x3", "").await;
    bind_queue(&ch, "q", "x2", "").await; // two paths to one queue
    publish(&ch, "x1", "", b"once").await;
    sync(&ch).await;
    // Exactly one copy, despite two paths and a cycle.
    assert_eq!(message_count(&ch, "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_bind_errors() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    let cases = [
        (
            "x",
            "missing-x",
            404,
            "NOT_FOUND - no exchange 'missing-x' in vhost '/'",
        ),
        (
            "missing-x",
            "x",
            404,
            "NOT_FOUND - no exchange 'missing-x' in vhost '/'",
        ),
        (
            "x",
            "",
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        ),
        (
            "",
            "x",
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange",
        ),
    ];
    for (destination, source, code, text) in cases {
        let c = open_channel(&conn).await;
        let err = expect_err(
            &format!("bind {destination:?} <- {source:?}"),
            e2e_bind(&c, destination, source, "k").await,
        );
        assert_channel_error(&conn, &c, &err, code, text).await;
    }
    // Unbinding missing things is fine.
    e2e_unbind(&ch, "missing-a", "missing-b", "k")
        .await
        .unwrap();
    e2e_unbind(&ch, "x", "amq.direct", "not-bound")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let ad = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, "ad", ExchangeKind::Direct, ad, FieldTable::default())
        .await
        .unwrap();
    declare_queue(&ch, "q1").await;
    declare_queue(&ch, "q2").await;
    bind_queue(&ch, "q1", "ad", "k").await;
    bind_queue(&ch, "q2", "ad", "k").await;

    within(
        "queue.unbind",
        ch.queue_unbind("q1".into(), "ad".into(), "k".into(), FieldTable::default()),
    )
    .await
    .unwrap();
    assert!(exists(&conn, "ad").await, "one binding is left");
    within(
        "queue.unbind",
        ch.queue_unbind("q2".into(), "ad".into(), "k".into(), FieldTable::default()),
    )
    .await
    .unwrap();
    assert!(!exists(&conn, "ad").await, "the last binding was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_goes_when_its_bound_queue_is_deleted() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let ad = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, "ad", ExchangeKind::Fanout, ad, FieldTable::default())
        .await
        .unwrap();
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "ad", "").await;
    within(
        "queue.delete",
        ch.queue_delete("q".into(), Default::default()),
    )
    .await
    .unwrap();
    assert!(!exists(&conn, "ad").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_exchange_that_never_had_bindings_stays() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let ad = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare(&ch, "ad", ExchangeKind::Direct, ad, FieldTable::default())
        .await
        .unwrap();
    assert!(exists(&conn, "ad").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_exchange_refuses_publishes_but_routes_as_destination() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let internal = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    declare(
        &ch,
        "int",
        ExchangeKind::Fanout,
        internal,
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_exchange(&ch, "front", ExchangeKind::Direct).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "int", "").await;
    e2e_bind(&ch, "int", "front", "k").await.unwrap();

    // Through the front exchange it works.
    publish(&ch, "front", "k", b"via front").await;
    sync(&ch).await;
    assert_eq!(get(&ch, "q").await.unwrap().delivery.data, b"via front");

    // Directly it is refused.
    let pub_ch = open_channel(&conn).await;
    let mut errors = Errors::new(&conn);
    within(
        "basic.publish",
        pub_ch.basic_publish(
            "int".into(),
            "".into(),
            Default::default(),
            b"direct",
            Default::default(),
        ),
    )
    .await
    .expect("publish written");
    let err = errors.next().await;
    assert_channel_error(
        &conn,
        &pub_ch,
        &err,
        403,
        "ACCESS_REFUSED - cannot publish to internal exchange 'int' in vhost '/'",
    )
    .await;
    assert_eq!(message_count(&ch, "q").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_receives_unroutable_messages() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "ae", ExchangeKind::Fanout).await;
    declare_queue(&ch, "unrouted").await;
    bind_queue(&ch, "unrouted", "ae", "").await;
    declare(
        &ch,
        "main",
        ExchangeKind::Direct,
        Default::default(),
        table([("alternate-exchange", lstr("ae"))]),
    )
    .await
    .unwrap();
    declare_queue(&ch, "routed").await;
    bind_queue(&ch, "routed", "main", "good").await;

    publish(&ch, "main", "good", b"g").await;
    publish(&ch, "main", "bad", b"b").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "routed").await, 1);
    assert_eq!(message_count(&ch, "unrouted").await, 1);
    let m = get(&ch, "unrouted").await.unwrap();
    assert_eq!(m.delivery.data, b"b");
    // The message keeps its original exchange and routing key.
    assert_eq!(m.delivery.exchange.as_str(), "main");
    assert_eq!(m.delivery.routing_key.as_str(), "bad");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_publish_routed_by_alternate_exchange_is_not_returned() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "ae", ExchangeKind::Fanout).await;
    declare_queue(&ch, "unrouted").await;
    bind_queue(&ch, "unrouted", "ae", "").await;
    declare(
        &ch,
        "main",
        ExchangeKind::Direct,
        Default::default(),
        table([("alternate-exchange", lstr("ae"))]),
    )
    .await
    .unwrap();
    within("confirm.select", ch.confirm_select(Default::default()))
        .await
        .unwrap();
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "main".into(),
            "nowhere".into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"m",
            Default::default(),
        ),
    )
    .await
    .unwrap();
    let confirmation = within("confirm", confirm).await.unwrap();
    assert!(confirmation.is_ack());
    assert!(confirmation.take_message().is_none(), "no basic.return");
    assert_eq!(message_count(&ch, "unrouted").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_binding_with_invalid_x_match_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let c = open_channel(&conn).await;
    let err = expect_err(
        "bind with x-match foo",
        within(
            "queue.bind",
            c.queue_bind(
                "q".into(),
                "amq.headers".into(),
                "".into(),
                Default::default(),
                table([("x-match", lstr("foo"))]),
            ),
        )
        .await,
    );
    assert_channel_error(
        &conn,
        &c,
        &err,
        406,
        "PRECONDITION_FAILED - Invalid x-match field value <<\"foo\">>; expected all, any, all-with-x, or any-with-x",
    )
    .await;
    bind_queue_args(
        &ch,
        "q",
        "amq.headers",
        "",
        table([("x-match", lstr("any-with-x"))]),
    )
    .await;
}

// rabbit_channel checks the exchange type before anything else in a
// non-passive exchange.declare (rabbit_exchange:check_type/1), so an unknown
// type wins over the reserved-name and default-exchange checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn unknown_type_is_checked_before_the_reserved_prefix() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "declare amq.foo of type foo",
        declare(
            &ch,
            "amq.foo",
            ExchangeKind::Custom("foo".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_connection_error(
        &conn,
        &err,
        503,
        "COMMAND_INVALID - invalid exchange type 'foo'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn unknown_type_is_checked_before_the_default_exchange() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    let err = expect_err(
        "declare '' of type foo",
        declare(
            &ch,
            "",
            ExchangeKind::Custom("foo".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_connection_error(
        &conn,
        &err,
        503,
        "COMMAND_INVALID - invalid exchange type 'foo'",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_on_redeclare_of_existing_exchange_is_503() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "x", ExchangeKind::Direct).await;
    let err = expect_err(
        "redeclare x with type foo",
        declare(
            &ch,
            "x",
            ExchangeKind::Custom("foo".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_connection_error(
        &conn,
        &err,
        503,
        "COMMAND_INVALID - invalid exchange type 'foo'",
    )
    .await;
}

// RabbitMQ strips CR and LF from exchange names in exchange.declare/delete,
// as it does for queue names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn exchange_names_are_stripped_of_cr_lf() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "a\r\nb", ExchangeKind::Fanout).await;
    assert!(exists(&conn, "ab").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn alternate_exchange_argument_must_be_a_string() {
    let broker = start_broker().await;
    let (conn, _ch) = connect_channel(&broker).await;
    declare_fails(
        &conn,
        "x",
        ExchangeKind::Direct,
        Default::default(),
        table([("alternate-exchange", lapin::types::AMQPValue::LongInt(5))]),
        406,
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange 'x' in vhost '/'",
    )
    .await;
}
