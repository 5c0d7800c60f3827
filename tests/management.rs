//! The HTTP management API: RabbitMQ's status codes, bodies and auth rules for
//! vhosts, users and permissions (checked against RabbitMQ 3.10.8's replies).

use serde_json::json;
use warren_integration_tests::*;

#[tokio::test]
async fn vhosts_users_and_permissions_round_trip() {
    let broker = start_broker_with_management().await;
    let api = Api::new(&broker, "guest", "guest");
    assert_eq!(
        api.put("/vhosts/v1", json!({"description": "d"})).await.0,
        201
    );
    assert_eq!(
        api.put("/vhosts/v1", json!({"description": "d2"})).await.0,
        204
    );
    let (status, v) = api.get("/vhosts/v1").await;
    assert_eq!(status, 200);
    assert_eq!(
        (v["name"].clone(), v["description"].clone()),
        (json!("v1"), json!("d2"))
    );
    assert_eq!(
        api.get("/vhosts/nope").await,
        (
            404,
            json!({"error": "Object Not Found", "reason": "Not Found"})
        )
    );

    assert_eq!(
        api.put(
            "/users/bob",
            json!({"password": "secret", "tags": "monitoring"})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api.put("/users/bob", json!({"password": "secret", "tags": ""}))
            .await
            .0,
        204
    );
    let (status, u) = api.get("/users/bob").await;
    assert_eq!(status, 200);
    assert_eq!(
        u["hashing_algorithm"],
        json!("rabbit_password_hashing_sha256")
    );
    assert_eq!(u["tags"], json!([]));
    assert_eq!(
        api.put("/users/carl", json!({"password": "x"})).await,
        (
            400,
            json!({"error": "bad_request", "reason": "tags_not_present"})
        )
    );

    let perms = json!({"configure": "^bob-", "write": ".*", "read": ".*"});
    assert_eq!(api.put("/permissions/v1/bob", perms.clone()).await.0, 201);
    assert_eq!(api.put("/permissions/v1/bob", perms).await.0, 204);
    assert_eq!(
        api.get("/permissions/v1/bob").await,
        (
            200,
            json!({"user": "bob", "vhost": "v1", "configure": "^bob-", "write": ".*", "read": ".*"})
        )
    );
    assert_eq!(
        api.put("/permissions/v1/carl", json!({"write": ".*"}))
            .await,
        (
            400,
            json!({"error": "bad_request", "reason": "[{key_missing,configure},{key_missing,read}]"})
        )
    );
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(
        api.put("/permissions/nope/bob", all.clone()).await,
        (
            400,
            json!({"error": "bad_request", "reason": "vhost_or_user_not_found"})
        )
    );
    assert_eq!(
        api.put(
            "/permissions/v1/bob",
            json!({"configure": "(", "write": "", "read": ""})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        api.put_raw("/vhosts/v2", "not json").await,
        (400, json!({"error": "bad_request", "reason": "not_json"}))
    );

    // The creator of a vhost gets full permissions on it (RabbitMQ does this too).
    let (_, list) = api.get("/permissions").await;
    assert!(
        list.as_array().unwrap().contains(
            &json!({"user": "guest", "vhost": "v1", "configure": ".*", "write": ".*", "read": ".*"})
        ),
        "{list}"
    );
    let (_, list) = api.get("/users/bob/permissions").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    assert_eq!(api.delete("/permissions/v1/bob").await.0, 204);
    assert_eq!(api.delete("/permissions/v1/bob").await.0, 404);
    assert_eq!(api.delete("/vhosts/v1").await.0, 204);
    assert_eq!(api.delete("/vhosts/v1").await.0, 404);
}

#[tokio::test]
async fn the_api_checks_credentials_and_tags_like_rabbitmq() {
    let broker = start_broker_with_management().await;
    let api = Api::new(&broker, "guest", "guest");
    assert_eq!(
        api.get("/whoami").await,
        (200, json!({"name": "guest", "tags": ["administrator"]}))
    );
    let (status, overview) = api.get("/overview").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            overview["product_name"].clone(),
            overview["rabbitmq_version"].clone()
        ),
        (json!("RabbitMQ"), json!("3.10.8")),
        "clients and harnesses read the emulated product and version here"
    );
    assert_eq!(api.anonymous().get("/users").await.0, 401);
    assert_eq!(
        Api::new(&broker, "guest", "wrong").get("/users").await,
        (
            401,
            json!({"error": "not_authorized", "reason": "Login failed"})
        )
    );
    assert_eq!(
        api.put("/users/plain", json!({"password": "p", "tags": ""}))
            .await
            .0,
        201
    );
    assert_eq!(
        Api::new(&broker, "plain", "p").get("/whoami").await,
        (
            401,
            json!({"error": "not_authorised", "reason": "Not management user"})
        )
    );
    assert_eq!(
        api.put(
            "/users/watcher",
            json!({"password": "p", "tags": "monitoring"})
        )
        .await
        .0,
        201
    );
    let watcher = Api::new(&broker, "watcher", "p");
    assert_eq!(watcher.get("/whoami").await.0, 200);
    assert_eq!(
        watcher.put("/vhosts/mine", json!({})).await,
        (
            401,
            json!({"error": "not_authorised", "reason": "Not administrator user"})
        )
    );
}

#[tokio::test]
async fn a_password_hash_made_by_rabbitmq_logs_in() {
    let broker = start_broker_with_management().await;
    let api = Api::new(&broker, "guest", "guest");
    // What RabbitMQ 3.10.8 stored for password "secret" (GET /api/users/bob there).
    let user = json!({
        "password_hash": "9kFsVtxGAF73ZCHla9LIEIB+MuNBbamTyfZDivRWOI7OSHNV",
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": "administrator",
    });
    assert_eq!(api.put("/users/imported", user).await.0, 201);
    assert_eq!(
        Api::new(&broker, "imported", "secret")
            .get("/whoami")
            .await
            .0,
        200
    );
    assert_eq!(
        Api::new(&broker, "imported", "other")
            .get("/whoami")
            .await
            .0,
        401
    );
    assert_eq!(
        api.put(
            "/permissions/%2F/imported",
            json!({"configure": ".*", "write": ".*", "read": ".*"})
        )
        .await
        .0,
        201
    );
    let conn = try_connect(&url_for(&broker, "imported", "secret", "/"))
        .await
        .expect("the imported user opens /");
    let ch = open_channel(&conn).await;
    declare_queue(&ch, "q").await;
    let (status, q) = api.get("/queues/%2F/q").await;
    assert_eq!(
        (status, q["name"].clone(), q["messages"].clone()),
        (200, json!("q"), json!(0))
    );
}

#[tokio::test]
async fn queues_exchanges_and_bindings_over_http_are_seen_over_amqp() {
    let broker = start_broker_with_management().await;
    let api = Api::new(&broker, "guest", "guest");
    let x = json!({"type": "topic", "durable": true, "arguments": {}});
    assert_eq!(api.put("/exchanges/%2F/hx", x.clone()).await.0, 201);
    assert_eq!(api.put("/exchanges/%2F/hx", x).await.0, 204);
    let q = json!({"durable": true, "arguments": {"x-max-length": 10}});
    assert_eq!(api.put("/queues/%2F/hq", q).await.0, 201);
    // Redeclaring with other properties fails as over AMQP, with its text.
    assert_eq!(
        api.put("/queues/%2F/hq", json!({"durable": false})).await,
        (
            400,
            json!({"error": "bad_request", "reason": "inequivalent arg 'durable' for queue 'hq' in vhost '/': received 'false' but current is 'true'"})
        )
    );
    assert_eq!(api.put("/queues/%2F/amq.x", json!({})).await.0, 401);
    // AMQP names are short strings: what HTTP creates, AMQP clients must be able to name.
    let long = "q".repeat(256);
    assert_eq!(
        api.put(&format!("/queues/%2F/{long}"), json!({})).await.0,
        400
    );
    assert_eq!(api.put(&format!("/vhosts/{long}"), json!({})).await.0, 400);
    assert_eq!(
        api.put(&format!("/queues/%2F/{}", &long[1..]), json!({}))
            .await
            .0,
        201
    );
    let bind = json!({"routing_key": "a.*", "arguments": {}});
    let (status, _) = api.post("/bindings/%2F/e/hx/q/hq", bind).await;
    assert_eq!(status, 201);
    assert_eq!(
        api.post("/bindings/%2F/e/nope/q/hq", json!({})).await,
        (
            404,
            json!({"error": "not_found", "reason": "no exchange 'nope' in vhost '/'"})
        )
    );

    let (conn, ch) = connect_channel(&broker).await;
    publish(&ch, "hx", "a.b", b"via http topology").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "hq").await, 1);
    let (_, info) = api.get("/queues/%2F/hq").await;
    assert_eq!(
        (info["messages"].clone(), info["durable"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(info["arguments"], json!({"x-max-length": 10}));

    let (_, between) = api.get("/bindings/%2F/e/hx/q/hq").await;
    assert_eq!(between.as_array().map(Vec::len), Some(1), "{between}");
    let props = between[0]["properties_key"].as_str().unwrap().to_owned();
    assert_eq!(props, "a.%2A", "RabbitMQ's form: the key URL-encoded");
    assert_eq!(api.delete("/queues/%2F/hq/contents").await.0, 204);
    assert_eq!(message_count(&ch, "hq").await, 0);
    assert_eq!(
        api.delete(&format!("/bindings/%2F/e/hx/q/hq/{props}"))
            .await
            .0,
        204
    );
    publish(&ch, "hx", "a.b", b"unrouted now").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "hq").await, 0);
    assert_eq!(api.delete("/queues/%2F/hq?if-empty=true").await.0, 204);
    assert_eq!(api.delete("/queues/%2F/hq").await.0, 404);
    assert_eq!(api.delete("/exchanges/%2F/hx").await.0, 204);
    assert_eq!(api.delete("/exchanges/%2F/amq.direct").await.0, 401);
    drop(conn);
}

#[tokio::test]
async fn definitions_export_and_import_in_rabbitmq_format() {
    let a = start_broker_with_management().await;
    let api = Api::new(&a, "guest", "guest");
    assert_eq!(api.put("/vhosts/shop", json!({})).await.0, 201);
    assert_eq!(
        api.put("/users/app", json!({"password": "pw", "tags": ""}))
            .await
            .0,
        201
    );
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(api.put("/permissions/shop/app", all).await.0, 201);
    let x = json!({"type": "fanout", "durable": true});
    assert_eq!(api.put("/exchanges/shop/orders", x).await.0, 201);
    let q = json!({"durable": true, "arguments": {"x-message-ttl": 60000}});
    assert_eq!(api.put("/queues/shop/orders.audit", q).await.0, 201);
    assert_eq!(
        api.post("/bindings/shop/e/orders/q/orders.audit", json!({}))
            .await
            .0,
        201
    );
    let (status, defs) = api.get("/definitions").await;
    assert_eq!(status, 200);
    assert_eq!(
        defs["queues"],
        json!([{"name": "orders.audit", "vhost": "shop", "durable": true, "auto_delete": false, "arguments": {"x-message-ttl": 60000}}])
    );
    assert_eq!(
        defs["bindings"],
        json!([{"source": "orders", "vhost": "shop", "destination": "orders.audit", "destination_type": "queue", "routing_key": "", "arguments": {}}])
    );

    // Load the export into a fresh broker: the app user works there at once.
    let b = start_broker_with_management().await;
    let api_b = Api::new(&b, "guest", "guest");
    assert_eq!(api_b.post("/definitions", defs.clone()).await.0, 204);
    assert_eq!(
        api_b.post_raw("/definitions", "garbage").await,
        (
            400,
            json!({"error": "bad_request", "reason": "failed_to_parse_json"})
        )
    );
    let conn = try_connect(&url_for(&b, "app", "pw", "shop"))
        .await
        .expect("app logs in on the second broker");
    let ch = open_channel(&conn).await;
    publish(&ch, "orders", "", b"order 1").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "orders.audit").await, 1);
    let (_, again) = api_b.get("/definitions").await;
    for key in [
        "users",
        "vhosts",
        "permissions",
        "queues",
        "exchanges",
        "bindings",
    ] {
        if key == "users" {
            continue; // guest's hash differs (a fresh salt on each broker)
        }
        assert_eq!(again[key], defs[key], "{key}");
    }
}

#[tokio::test]
async fn a_definitions_file_is_loaded_before_clients_connect() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("definitions.json");
    let defs = json!({
        "users": [{"name": "svc", "password_hash": "9kFsVtxGAF73ZCHla9LIEIB+MuNBbamTyfZDivRWOI7OSHNV",
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []}],
        "vhosts": [{"name": "apps"}],
        "permissions": [{"user": "svc", "vhost": "apps", "configure": "", "write": ".*", "read": ".*"}],
        "queues": [{"name": "jobs", "vhost": "apps", "durable": true, "auto_delete": false, "arguments": {}}],
        "exchanges": [], "bindings": []
    });
    std::fs::write(&file, defs.to_string()).unwrap();
    let broker = warren::Broker::builder()
        .port(0)
        .load_definitions(&file)
        .start()
        .await
        .expect("the broker starts with the definitions");
    let conn = try_connect(&url_for(&broker, "svc", "secret", "apps"))
        .await
        .expect("svc logs in");
    let ch = open_channel(&conn).await;
    publish(&ch, "", "jobs", b"job").await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "jobs").await, 1);

    std::fs::write(&file, "{ not json").unwrap();
    let err = warren::Broker::builder()
        .port(0)
        .load_definitions(&file)
        .start()
        .await
        .err()
        .expect("a broken file stops start-up");
    assert!(err.to_string().contains("definitions.json"), "{err}");
}
