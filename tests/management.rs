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
