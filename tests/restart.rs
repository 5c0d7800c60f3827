//! Restart tests: RabbitMQ's durability rules, one by one, across a clean
//! stop (the in-process equivalent of SIGTERM) and a restart on the same data
//! directory, on both storage engines. Crashes (SIGKILL) are in `crash.rs`.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use warren_integration_tests::*;

async fn start(dir: &std::path::Path, engine: warren::EngineKind) -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .data_dir(dir, engine)
        .start()
        .await
        .expect("broker starts on the data directory")
}

fn engines() -> [warren::EngineKind; 2] {
    [warren::EngineKind::Redb, warren::EngineKind::Sled]
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

async fn exists_queue(ch: &lapin::Channel, name: &str) -> bool {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .is_ok()
}

async fn exists_exchange(ch: &lapin::Channel, name: &str) -> bool {
    ch.exchange_declare(
        name.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_follow_rabbitmq_durability_rules() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = start(dir.path(), engine).await;
            let (conn, ch) = connect_channel(&broker).await;
            ch.exchange_declare(
                "x.durable".into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.exchange_declare(
                "x.transient".into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.exchange_declare(
                "x.e2e".into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_declare(
                "q.durable".into(),
                durable(),
                table([("x-max-length", lapin::types::AMQPValue::LongInt(100))]),
            )
            .await
            .unwrap();
            ch.queue_declare(
                "q.transient".into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            ch.queue_declare(
                "q.exclusive".into(),
                QueueDeclareOptions {
                    durable: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
            bind_queue(&ch, "q.durable", "x.durable", "a.#").await;
            bind_queue(&ch, "q.transient", "x.durable", "b.#").await;
            bind_queue(&ch, "q.durable", "x.transient", "").await;
            ch.exchange_bind(
                "x.e2e".into(),
                "x.durable".into(),
                "c.#".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
            bind_queue(&ch, "q.durable", "x.e2e", "").await;
            drop(conn);
            broker.shutdown().await;
        }
        let broker = start(dir.path(), engine).await;
        let (_conn, ch) = connect_channel(&broker).await;
        assert!(
            exists_exchange(&ch, "x.durable").await,
            "{engine:?}: durable exchange lost"
        );
        assert!(exists_exchange(&ch, "x.e2e").await);
        assert!(
            !exists_exchange(&ch, "x.transient").await,
            "{engine:?}: transient exchange survived"
        );
        let ch = open_channel(&_conn).await;
        assert!(
            exists_queue(&ch, "q.durable").await,
            "{engine:?}: durable queue lost"
        );
        assert!(
            !exists_queue(&ch, "q.transient").await,
            "{engine:?}: transient queue survived"
        );
        let ch = open_channel(&_conn).await;
        assert!(
            !exists_queue(&ch, "q.exclusive").await,
            "{engine:?}: exclusive queue survived"
        );
        let ch = open_channel(&_conn).await;
        // The queue kept its arguments: redeclaring with others is refused.
        let err = ch
            .queue_declare("q.durable".into(), durable(), FieldTable::default())
            .await
            .unwrap_err();
        assert_closed_with(&err, 406, "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q.durable' in vhost '/': received none but current is the value '100' of type 'signedint'");
        // Bindings between durable ends survive (direct and through the e2e binding).
        let ch = open_channel(&_conn).await;
        publish(&ch, "x.durable", "a.1", b"direct").await;
        publish(&ch, "x.durable", "c.1", b"via-e2e").await;
        publish(&ch, "x.durable", "b.1", b"to-a-transient-queue").await;
        sync(&ch).await;
        assert_eq!(message_count(&ch, "q.durable").await, 2, "{engine:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_messages_survive_in_order_and_transient_ones_do_not() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = start(dir.path(), engine).await;
            let (conn, ch) = connect_channel(&broker).await;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            ch.queue_declare("q".into(), durable(), FieldTable::default())
                .await
                .unwrap();
            for i in 0..20 {
                let props = if i % 2 == 0 {
                    persistent()
                } else {
                    BasicProperties::default()
                };
                publish_props(&ch, "", "q", format!("m{i}").as_bytes(), props).await;
            }
            // m0 (persistent) and m1 (transient) acked; m2 (persistent) and m3
            // (transient) delivered and left unacked; the rest never delivered.
            for _ in 0..2 {
                let m = get(&ch, "q").await.expect("a message");
                m.delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            let _unacked = get(&ch, "q").await.expect("m2");
            let _unacked2 = get(&ch, "q").await.expect("m3");
            sync(&ch).await;
            drop(conn);
            broker.shutdown().await;
        }
        let broker = start(dir.path(), engine).await;
        let (_conn, ch) = connect_channel(&broker).await;
        let mut got = Vec::new();
        while let Some(m) = get_opts(&ch, "q", true).await {
            got.push((
                String::from_utf8(m.delivery.data.clone()).unwrap(),
                m.delivery.redelivered,
            ));
        }
        let bodies: Vec<&str> = got.iter().map(|(b, _)| b.as_str()).collect();
        // Acked m0 is gone; transient ones are gone; the unacked persistent one
        // (m2) comes back first, marked redelivered; the others in order.
        assert_eq!(
            bodies,
            vec!["m2", "m4", "m6", "m8", "m10", "m12", "m14", "m16", "m18"],
            "{engine:?}"
        );
        assert!(
            got[0].1,
            "{engine:?}: a message delivered before the stop must come back redelivered"
        );
        assert!(!got[8].1, "{engine:?}: m18 was never delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_never_come_back_after_a_clean_stop() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = start(dir.path(), engine).await;
            let (conn, ch) = connect_channel(&broker).await;
            ch.queue_declare("q".into(), durable(), FieldTable::default())
                .await
                .unwrap();
            for i in 0..500 {
                publish_props(&ch, "", "q", format!("m{i}").as_bytes(), persistent()).await;
            }
            let mut consumer = consume(&ch, "q", false).await;
            let ds = next_deliveries(&mut consumer, 500).await;
            let last = ds.last().unwrap().delivery_tag;
            ch.basic_ack(last, BasicAckOptions { multiple: true })
                .await
                .unwrap();
            sync(&ch).await;
            drop(consumer);
            drop(conn);
            // No wait for the store: the clean stop must flush the acks itself.
            broker.shutdown().await;
        }
        let broker = start(dir.path(), engine).await;
        let (_conn, ch) = connect_channel(&broker).await;
        assert_eq!(
            message_count(&ch, "q").await,
            0,
            "{engine:?}: acked messages came back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_broker_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start(dir.path(), warren::EngineKind::Redb).await;
    let err = warren::Broker::builder()
        .port(0)
        .data_dir(dir.path(), warren::EngineKind::Redb)
        .start()
        .await
        .err()
        .expect("the second broker must not start");
    assert!(
        err.to_string().contains("used by another running broker"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_store_stops_start_up_with_an_error_naming_the_file() {
    let engine = warren::EngineKind::Redb;
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start(dir.path(), engine).await;
        let (conn, ch) = connect_channel(&broker).await;
        ch.queue_declare("q".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        drop(conn);
        broker.shutdown().await;
    }
    let path = dir.path().join("warren.redb");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = warren::Broker::builder()
        .port(0)
        .data_dir(dir.path(), engine)
        .start()
        .await
        .err()
        .expect("start-up must refuse a corrupt store");
    assert!(
        err.to_string().contains("warren.redb"),
        "the error names the file: {err}"
    );
}

/// sled starts empty from a damaged file instead of failing; the directory's
/// STORE marker catches that, so no broker comes up having silently lost its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_that_lost_its_data_is_refused() {
    let engine = warren::EngineKind::Sled;
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start(dir.path(), engine).await;
        let (conn, ch) = connect_channel(&broker).await;
        ch.queue_declare("q".into(), durable(), FieldTable::default())
            .await
            .unwrap();
        drop(conn);
        broker.shutdown().await;
    }
    let path = dir.path().join("warren.sled").join("db");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len().min(4096);
    for b in bytes.iter_mut().take(n) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = warren::Broker::builder()
        .port(0)
        .data_dir(dir.path(), engine)
        .start()
        .await
        .err()
        .expect("start-up must refuse a store that lost its data");
    assert!(
        err.to_string().contains("warren.sled"),
        "the error names the store: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_keeps_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    start(dir.path(), warren::EngineKind::Redb)
        .await
        .shutdown()
        .await;
    let err = warren::Broker::builder()
        .port(0)
        .data_dir(dir.path(), warren::EngineKind::Sled)
        .start()
        .await
        .err()
        .expect("a redb directory must not be opened as sled");
    assert!(err.to_string().contains("--store redb"), "{err}");
}

/// Start on `dir` with the management API (for operator changes).
async fn start_managed(dir: &std::path::Path, engine: warren::EngineKind) -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .management_port(Some(0))
        .data_dir(dir, engine)
        .start()
        .await
        .expect("broker starts on the data directory")
}

#[tokio::test]
async fn vhosts_users_and_permissions_survive_a_restart() {
    use serde_json::json;
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let broker = start_managed(dir.path(), engine).await;
            let api = Api::new(&broker, "guest", "guest");
            let meta = json!({"description": "kept", "tags": "prod"});
            assert_eq!(api.put("/vhosts/v1", meta).await.0, 201);
            assert_eq!(api.put("/vhosts/gone", json!({})).await.0, 201);
            let user = json!({"password": "secret", "tags": "monitoring"});
            assert_eq!(api.put("/users/bob", user).await.0, 201);
            let perms =
                json!({"configure": "^bob-", "write": "^bob-|amq.default", "read": "^bob-"});
            assert_eq!(api.put("/permissions/v1/bob", perms).await.0, 201);
            assert_eq!(
                api.put("/users/temp", json!({"password": "t", "tags": ""}))
                    .await
                    .0,
                201
            );
            // A durable queue with a persistent message in v1 and in a vhost
            // that is deleted before the stop.
            for vhost in ["v1", "gone"] {
                let user = if vhost == "v1" { "bob" } else { "guest" };
                let pass = if vhost == "v1" { "secret" } else { "guest" };
                let conn = try_connect(&url_for(&broker, user, pass, vhost))
                    .await
                    .unwrap();
                let ch = open_channel(&conn).await;
                ch.confirm_select(Default::default()).await.unwrap();
                ch.queue_declare("bob-q".into(), durable(), FieldTable::default())
                    .await
                    .unwrap();
                ch.basic_publish(
                    "".into(),
                    "bob-q".into(),
                    Default::default(),
                    b"kept",
                    persistent(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
                conn.close(200, "bye".into()).await.unwrap();
            }
            assert_eq!(api.delete("/vhosts/gone").await.0, 204);
            assert_eq!(api.delete("/users/temp").await.0, 204);
            broker.shutdown().await;
        }
        let broker = start_managed(dir.path(), engine).await;
        let api = Api::new(&broker, "guest", "guest");
        let (_, v) = api.get("/vhosts/v1").await;
        assert_eq!(
            (v["description"].clone(), v["tags"].clone()),
            (json!("kept"), json!(["prod"])),
            "{engine:?}"
        );
        assert_eq!(
            api.get("/vhosts/gone").await.0,
            404,
            "{engine:?}: deleted vhost"
        );
        assert_eq!(
            api.get("/users/temp").await.0,
            404,
            "{engine:?}: deleted user"
        );
        let (_, u) = api.get("/users/bob").await;
        assert_eq!(u["tags"], json!(["monitoring"]), "{engine:?}");
        assert_eq!(
            api.get("/permissions/v1/bob").await,
            (
                200,
                json!({"user": "bob", "vhost": "v1", "configure": "^bob-", "write": "^bob-|amq.default", "read": "^bob-"})
            ),
            "{engine:?}"
        );
        // bob logs in with the same password, sees his message, and his
        // permissions still bind him.
        let conn = try_connect(&url_for(&broker, "bob", "secret", "v1"))
            .await
            .expect("bob logs in after the restart");
        let ch = open_channel(&conn).await;
        let got = get(&ch, "bob-q").await.expect("bob's persistent message");
        assert_eq!(got.delivery.data, b"kept", "{engine:?}");
        let err = expect_err(
            "declare outside bob's pattern",
            ch.queue_declare("other".into(), Default::default(), FieldTable::default())
                .await,
        );
        assert_closed_with(
            &err,
            403,
            "ACCESS_REFUSED - access to queue 'other' in vhost 'v1' refused for user 'bob'",
        );
        // Re-creating the deleted vhost gives an empty one: its queue went with it.
        assert_eq!(api.put("/vhosts/gone", json!({})).await.0, 201);
        assert_eq!(
            api.get("/queues/gone").await,
            (200, json!([])),
            "{engine:?}"
        );
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_deleted_default_user_stays_deleted() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let engine = warren::EngineKind::Redb;
    {
        let broker = start_managed(dir.path(), engine).await;
        let api = Api::new(&broker, "guest", "guest");
        assert_eq!(
            api.put(
                "/users/admin",
                json!({"password": "s3cret", "tags": "administrator"})
            )
            .await
            .0,
            201
        );
        let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
        assert_eq!(api.put("/permissions/%2F/admin", all).await.0, 201);
        assert_eq!(
            Api::new(&broker, "admin", "s3cret")
                .delete("/users/guest")
                .await
                .0,
            204
        );
        broker.shutdown().await;
    }
    let broker = start_managed(dir.path(), engine).await;
    let err = expect_err(
        "guest logs in after being deleted",
        try_connect(&url_for(&broker, "guest", "guest", "/")).await,
    );
    assert!(format!("{err}").contains("ACCESS_REFUSED"), "{err}");
    try_connect(&url_for(&broker, "admin", "s3cret", "/"))
        .await
        .expect("the operator's own admin logs in");
    broker.shutdown().await;
}
