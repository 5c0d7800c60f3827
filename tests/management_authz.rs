//! Who sees and changes what through the HTTP management API: RabbitMQ
//! 3.10.8's vhost rules (`rabbit_mgmt_util:filter_vhost`,
//! `is_authorized_vhost`, `list_visible_vhosts`) and the same permission
//! checks on HTTP declares as on AMQP ones (the API declares through
//! `rabbit_channel` there).

use std::collections::BTreeSet;

use lapin::types::FieldTable;
use serde_json::{json, Value};
use warren_integration_tests::*;

/// Vhosts `a` and `b`, each with a queue, an exchange and a binding between
/// them; `mgr` (tag management) and `mon` (tag monitoring) with permissions on
/// `a` only. Returns the broker and guest's (administrator's) API.
async fn two_vhosts() -> (warren::Broker, Api) {
    let broker = start_broker_with_management().await;
    let api = Api::new(&broker, "guest", "guest");
    for v in ["a", "b"] {
        assert_eq!(api.put(&format!("/vhosts/{v}"), json!({})).await.0, 201);
        let q = format!("/queues/{v}/q{v}");
        assert_eq!(api.put(&q, json!({})).await.0, 201);
        let x = format!("/exchanges/{v}/x{v}");
        assert_eq!(api.put(&x, json!({"type": "direct"})).await.0, 201);
        let b = format!("/bindings/{v}/e/x{v}/q/q{v}");
        assert_eq!(api.post(&b, json!({"routing_key": "k"})).await.0, 201);
    }
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    for (user, tags) in [("mgr", "management"), ("mon", "monitoring")] {
        let body = json!({"password": "pw", "tags": tags});
        assert_eq!(api.put(&format!("/users/{user}"), body).await.0, 201);
        let perms = format!("/permissions/a/{user}");
        assert_eq!(api.put(&perms, all.clone()).await.0, 201);
    }
    (broker, api)
}

/// The distinct `vhost` fields of a listing.
fn vhosts_in(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["vhost"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `name` fields of a listing.
fn names_in(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn not_authorised(reason: &str) -> (u16, Value) {
    (401, json!({"error": "not_authorised", "reason": reason}))
}

const NOT_IN_VHOST: &str = "User not authorised to access virtual host";

#[tokio::test]
async fn listings_show_only_the_vhosts_a_management_user_may_enter() {
    let (broker, admin) = two_vhosts().await;
    let mgr = Api::new(&broker, "mgr", "pw");
    for path in ["/queues", "/exchanges", "/bindings"] {
        let (status, list) = mgr.get(path).await;
        assert_eq!((status, vhosts_in(&list)), (200, set(&["a"])), "{path}");
        let (status, list) = admin.get(path).await;
        assert_eq!(status, 200);
        assert!(vhosts_in(&list).contains("b"), "{path}: {list}");
    }
    let (status, list) = mgr.get("/vhosts").await;
    assert_eq!((status, names_in(&list)), (200, set(&["a"])));
    // A single vhost, the permissions and the definitions are administrators' only.
    for path in [
        "/vhosts/a",
        "/vhosts/a/permissions",
        "/permissions",
        "/definitions",
        "/definitions/a",
    ] {
        assert_eq!(
            mgr.get(path).await,
            not_authorised("Not administrator user"),
            "{path}"
        );
    }
    // Object totals count what the user may see.
    let (_, overview) = mgr.get("/overview").await;
    assert_eq!(
        (
            overview["object_totals"]["queues"].clone(),
            overview["object_totals"]["exchanges"].clone()
        ),
        (json!(1), json!(8)),
        "qa, and xa with a's seven built-in exchanges: {overview}"
    );
}

#[tokio::test]
async fn a_vhost_the_user_may_not_enter_is_refused_and_left_unchanged() {
    let (broker, admin) = two_vhosts().await;
    let mgr = Api::new(&broker, "mgr", "pw");
    for path in [
        "/queues/b",
        "/exchanges/b",
        "/bindings/b",
        "/queues/b/qb",
        "/exchanges/b/xb",
        "/bindings/b/e/xb/q/qb",
        "/bindings/b/e/xb/q/qb/k",
    ] {
        assert_eq!(
            mgr.get(path).await,
            not_authorised(NOT_IN_VHOST),
            "GET {path}"
        );
    }
    let writes = [
        mgr.put("/queues/b/new", json!({})).await,
        mgr.put("/exchanges/b/new", json!({"type": "fanout"})).await,
        mgr.post("/bindings/b/e/xb/q/qb", json!({"routing_key": "k2"}))
            .await,
        mgr.delete("/bindings/b/e/xb/q/qb/k").await,
        mgr.delete("/queues/b/qb/contents").await,
        mgr.delete("/queues/b/qb").await,
        mgr.delete("/exchanges/b/xb").await,
    ];
    for (i, reply) in writes.into_iter().enumerate() {
        assert_eq!(reply, not_authorised(NOT_IN_VHOST), "write #{i}");
    }
    let (_, bindings) = admin.get("/bindings/b/e/xb/q/qb").await;
    assert_eq!(bindings.as_array().map(Vec::len), Some(1), "{bindings}");
    assert_eq!(admin.get("/queues/b/qb").await.0, 200);
    assert_eq!(admin.get("/exchanges/b/xb").await.0, 200);
    assert_eq!(admin.get("/queues/b/new").await.0, 404);

    // A vhost that does not exist is not found, not refused (as in RabbitMQ).
    let missing = (
        404,
        json!({"error": "Object Not Found", "reason": "Not Found"}),
    );
    assert_eq!(mgr.get("/queues/nope").await, missing);
    assert_eq!(mgr.get("/queues/nope/q").await, missing);
    assert_eq!(
        mgr.put("/queues/nope/q", json!({})).await,
        (
            404,
            json!({"error": "not_found", "reason": "vhost_not_found"})
        )
    );
}

#[tokio::test]
async fn monitoring_users_learn_of_every_vhost_but_see_inside_only_their_own() {
    let (broker, _admin) = two_vhosts().await;
    let mon = Api::new(&broker, "mon", "pw");
    let (status, list) = mon.get("/vhosts").await;
    assert_eq!((status, names_in(&list)), (200, set(&["/", "a", "b"])));
    // RabbitMQ 3.10.8 filters queue, exchange and binding listings by the
    // vhosts a user may log in to unless it is an administrator.
    for path in ["/queues", "/exchanges", "/bindings"] {
        let (status, list) = mon.get(path).await;
        assert_eq!((status, vhosts_in(&list)), (200, set(&["a"])), "{path}");
    }
    assert_eq!(mon.get("/queues/b").await, not_authorised(NOT_IN_VHOST));
    assert_eq!(
        mon.put("/queues/b/new", json!({})).await,
        not_authorised(NOT_IN_VHOST)
    );
    // Monitors see the whole broker's totals.
    let (_, overview) = mon.get("/overview").await;
    assert_eq!(overview["object_totals"]["queues"], json!(2), "{overview}");
}

/// Vhost `v1` and `bob` (tag management) with these permissions in it.
async fn bob_in_v1(configure: &str, write: &str, read: &str) -> (warren::Broker, Api, Api) {
    let broker = start_broker_with_management().await;
    let admin = Api::new(&broker, "guest", "guest");
    assert_eq!(admin.put("/vhosts/v1", json!({})).await.0, 201);
    let user = json!({"password": "secret", "tags": "management"});
    assert_eq!(admin.put("/users/bob", user).await.0, 201);
    let perms = json!({"configure": configure, "write": write, "read": read});
    assert_eq!(admin.put("/permissions/v1/bob", perms).await.0, 201);
    let bob = Api::new(&broker, "bob", "secret");
    (broker, admin, bob)
}

#[tokio::test]
async fn http_declares_check_dead_letter_and_alternate_exchanges_as_amqp_does() {
    let (broker, admin, bob) = bob_in_v1(".*", "^bob-", "^bob-").await;
    let refused = not_authorised("Access refused.");
    let dlx = |x: &str| json!({"arguments": {"x-dead-letter-exchange": x}});
    let ae = |x: &str| json!({"type": "fanout", "arguments": {"alternate-exchange": x}});

    // A dead-letter exchange needs write on it, and read on the queue.
    assert_eq!(bob.put("/queues/v1/bob-q", dlx("dlx")).await, refused);
    assert_eq!(admin.get("/queues/v1/bob-q").await.0, 404, "not declared");
    assert_eq!(bob.put("/queues/v1/other", dlx("bob-dlx")).await, refused);
    assert_eq!(bob.put("/queues/v1/bob-q", dlx("bob-dlx")).await.0, 201);

    // An alternate exchange likewise: write on it, read on the exchange.
    assert_eq!(bob.put("/exchanges/v1/bob-x", ae("ae")).await, refused);
    assert_eq!(
        admin.get("/exchanges/v1/bob-x").await.0,
        404,
        "not declared"
    );
    assert_eq!(
        bob.put("/exchanges/v1/other-x", ae("bob-ae")).await,
        refused
    );
    assert_eq!(bob.put("/exchanges/v1/bob-x", ae("bob-ae")).await.0, 201);

    // Binding: write on the destination, read on the source.
    assert_eq!(
        bob.post("/bindings/v1/e/bob-x/q/other", json!({})).await,
        refused
    );
    assert_eq!(
        bob.post("/bindings/v1/e/bob-x/q/bob-q", json!({})).await.0,
        201
    );

    // The same declare over AMQP is refused by the same rule.
    let conn = try_connect(&url_for(&broker, "bob", "secret", "v1"))
        .await
        .expect("bob connects to v1");
    let ch = open_channel(&conn).await;
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), lstr("dlx"));
    let err = expect_err(
        "declare with a dead-letter exchange bob may not write to",
        ch.queue_declare("bob-q2".into(), Default::default(), args)
            .await,
    );
    let text = "ACCESS_REFUSED - access to exchange 'dlx' in vhost 'v1' refused for user 'bob'";
    assert_channel_error(&conn, &ch, &err, 403, text).await;
}

#[tokio::test]
async fn an_administrator_enters_every_vhost_but_needs_permissions_to_change_one() {
    let (broker, admin, _bob) = bob_in_v1(".*", ".*", ".*").await;
    let root = json!({"password": "pw", "tags": "administrator"});
    assert_eq!(admin.put("/users/root", root).await.0, 201);
    let root = Api::new(&broker, "root", "pw");
    assert_eq!(admin.put("/queues/v1/q", json!({})).await.0, 201);
    assert_eq!(root.get("/queues/v1").await.0, 200);
    assert_eq!(root.get("/queues/v1/q").await.0, 200);
    let (_, list) = root.get("/queues").await;
    assert_eq!(names_in(&list), set(&["q"]));
    assert_eq!(
        root.put("/queues/v1/q2", json!({})).await,
        not_authorised("Access refused.")
    );
    assert_eq!(
        root.delete("/queues/v1/q").await,
        not_authorised("Access refused.")
    );
}
