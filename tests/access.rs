//! Users, vhosts and permissions: RabbitMQ's access rules over AMQP, with the
//! vhosts, users and permissions made through the HTTP management API the way
//! operators and test harnesses make them on RabbitMQ.

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;
use serde_json::json;
use warren_integration_tests::*;

/// A broker with vhost `v1`, user `bob`/`secret` and bob's permissions in v1.
async fn setup(configure: &str, write: &str, read: &str) -> (warren::Broker, Api) {
    let broker = start_broker_with_management().await;
    let api = Api::new(&broker, "guest", "guest");
    assert_eq!(api.put("/vhosts/v1", json!({})).await.0, 201);
    let user = json!({"password": "secret", "tags": ""});
    assert_eq!(api.put("/users/bob", user).await.0, 201);
    let perms = json!({"configure": configure, "write": write, "read": read});
    assert_eq!(api.put("/permissions/v1/bob", perms).await.0, 201);
    (broker, api)
}

async fn bob(broker: &warren::Broker) -> lapin::Connection {
    try_connect(&url_for(broker, "bob", "secret", "v1"))
        .await
        .expect("bob connects to v1")
}

fn refused(kind: &str, name: &str) -> String {
    format!("ACCESS_REFUSED - access to {kind} '{name}' in vhost 'v1' refused for user 'bob'")
}

#[tokio::test]
async fn a_user_without_permissions_on_a_vhost_is_refused_at_open() {
    let (broker, _api) = setup(".*", ".*", ".*").await;
    let err = expect_err(
        "bob opens /",
        try_connect(&url_for(&broker, "bob", "secret", "/")).await,
    );
    assert_closed_with(
        &err,
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'bob'",
    );
    let err = expect_err(
        "bob opens a missing vhost",
        try_connect(&url_for(&broker, "bob", "secret", "nope")).await,
    );
    assert_closed_with(&err, 530, "NOT_ALLOWED - vhost nope not found");
    // Wrong password: refused at login (403 ACCESS_REFUSED, as RabbitMQ).
    let err = expect_err(
        "bob with a wrong password",
        try_connect(&url_for(&broker, "bob", "wrong", "v1")).await,
    );
    assert!(format!("{err}").contains("ACCESS_REFUSED"), "{err}");
    bob(&broker).await;
}

#[tokio::test]
async fn configure_permission_guards_declare_and_delete() {
    let (broker, _api) = setup("^bob-", "^bob-|amq.default", "^bob-").await;
    let conn = bob(&broker).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "bob-q").await;
    let err = expect_err(
        "declare other",
        ch.queue_declare("other".into(), Default::default(), FieldTable::default())
            .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("queue", "other")).await;

    // A server-named queue is checked under its generated name.
    let ch = open_channel(&conn).await;
    let err = expect_err(
        "declare server-named",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
    );
    assert!(
        format!("{err}").contains("access to queue 'amq.gen-"),
        "{err}"
    );

    // Passive declares need no permission.
    let ch = open_channel(&conn).await;
    ch.exchange_declare(
        "amq.direct".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("passive declare of amq.direct");
    let err = expect_err(
        "declare exchange x",
        ch.exchange_declare(
            "x".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("exchange", "x")).await;

    // A dead-letter exchange needs write permission on it.
    let ch = open_channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("amq.fanout".into()),
    );
    let err = expect_err(
        "declare with a DLX bob may not write to",
        ch.queue_declare("bob-dl".into(), Default::default(), args)
            .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("exchange", "amq.fanout")).await;

    let ch = open_channel(&conn).await;
    ch.queue_delete("bob-q".into(), Default::default())
        .await
        .expect("delete bob-q");
}

#[tokio::test]
async fn write_and_read_permissions_guard_publish_bind_and_consume() {
    let (broker, api) = setup("^bob-", "^bob-|amq.default", "^bob-").await;
    let conn = bob(&broker).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "bob-q").await;

    // The default exchange is checked as amq.default.
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    publish(&ch, "", "bob-q", b"hello").await;
    let got = get(&ch, "bob-q").await.expect("the message bob published");
    assert_eq!(got.delivery.data, b"hello");

    // Binding needs read on the source exchange.
    let err = expect_err(
        "bind to amq.direct",
        ch.queue_bind(
            "bob-q".into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("exchange", "amq.direct")).await;

    // So does an exchange-to-exchange binding (write on the destination first).
    let ch = open_channel(&conn).await;
    declare_exchange(&ch, "bob-x", ExchangeKind::Fanout).await;
    let err = expect_err(
        "bind bob-x to amq.direct",
        ch.exchange_bind(
            "bob-x".into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("exchange", "amq.direct")).await;
    let ch = open_channel(&conn).await;
    let err = expect_err(
        "bind an exchange bob may not write to",
        ch.exchange_bind(
            "amq.fanout".into(),
            "bob-x".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("exchange", "amq.fanout")).await;

    // Publishing needs write on the exchange (checked before it is looked up).
    let ch = open_channel(&conn).await;
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let mut errors = Errors::new(&conn);
    let _ = ch
        .basic_publish(
            "no-such-exchange".into(),
            "k".into(),
            Default::default(),
            b"x",
            Default::default(),
        )
        .await;
    assert_closed_with(
        &errors.next().await,
        403,
        &refused("exchange", "no-such-exchange"),
    );

    // Consuming needs read on the queue, checked before it is looked up.
    let ch = open_channel(&conn).await;
    let err = expect_err(
        "consume from a queue bob may not read",
        ch.basic_consume(
            "nonexistent".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(&conn, &ch, &err, 403, &refused("queue", "nonexistent")).await;

    // A permission change applies to open connections at their next operation.
    let wide = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(api.put("/permissions/v1/bob", wide).await.0, 204);
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "other").await;
    bind_queue(&ch, "other", "amq.direct", "k").await;
    publish(&ch, "amq.direct", "k", b"routed").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "other").await, 1);
}

#[tokio::test]
async fn vhosts_are_isolated() {
    let (broker, _api) = setup(".*", ".*", ".*").await;
    let conn = bob(&broker).await;
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "shared-name").await;
    declare_exchange(&ch, "only-in-v1", ExchangeKind::Fanout).await;
    publish(&ch, "", "shared-name", b"in v1").await;
    sync(&ch).await;

    let (guest, gch) = connect_channel(&broker).await;
    declare_queue(&gch, "shared-name").await;
    assert_eq!(message_count(&gch, "shared-name").await, 0);
    let err = expect_err(
        "v1's exchange does not exist in /",
        gch.exchange_declare(
            "only-in-v1".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await,
    );
    assert_channel_error(
        &guest,
        &gch,
        &err,
        404,
        "NOT_FOUND - no exchange 'only-in-v1' in vhost '/'",
    )
    .await;
    assert_eq!(message_count(&ch, "shared-name").await, 1);
}

#[tokio::test]
async fn deleting_a_user_or_a_vhost_closes_their_connections() {
    let (broker, api) = setup(".*", ".*", ".*").await;
    let conn = bob(&broker).await;
    let mut errors = Errors::new(&conn);
    assert_eq!(api.delete("/users/bob").await.0, 204);
    assert_closed_with(
        &errors.next().await,
        320,
        "CONNECTION_FORCED - user 'bob' is deleted",
    );
    assert_eq!(api.delete("/users/bob").await.0, 404);
    let err = expect_err(
        "deleted bob logs in",
        try_connect(&url_for(&broker, "bob", "secret", "v1")).await,
    );
    assert!(format!("{err}").contains("ACCESS_REFUSED"), "{err}");

    // guest created v1, so guest has full permissions there.
    let conn = try_connect(&url_for(&broker, "guest", "guest", "v1"))
        .await
        .expect("guest opens v1");
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "doomed").await;
    let mut errors = Errors::new(&conn);
    assert_eq!(api.delete("/vhosts/v1").await.0, 204);
    assert_closed_with(
        &errors.next().await,
        320,
        "CONNECTION_FORCED - vhost 'v1' is down",
    );
    assert_eq!(api.get("/queues/v1").await.0, 404);
    assert_eq!(api.put("/vhosts/v1", json!({})).await.0, 201);
    let (status, queues) = api.get("/queues/v1").await;
    assert_eq!((status, queues), (200, json!([])), "a new v1 starts empty");
}

#[tokio::test]
async fn the_first_start_creates_the_configured_default_user_and_vhost() {
    let config = warren::Config {
        default_user: "admin".into(),
        default_pass: "p@ss/word".into(),
        default_vhost: "main".into(),
        ..Default::default()
    };
    let broker = start_broker_with(config).await;
    let conn = try_connect(&broker.amqp_url())
        .await
        .expect("amqp_url names the default user and vhost");
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let err = expect_err(
        "guest is not created when another default user is configured",
        try_connect(&url_for(&broker, "guest", "guest", "main")).await,
    );
    assert!(format!("{err}").contains("ACCESS_REFUSED"), "{err}");
    let err = expect_err(
        "no / vhost either",
        try_connect(&url_for(&broker, "admin", "p%40ss%2Fword", "/")).await,
    );
    assert_closed_with(&err, 530, "NOT_ALLOWED - vhost / not found");
}
