//! Routing through the default, direct, fanout, topic and headers exchanges.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use warren_integration_tests::*;

/// Drain every queue with basic.get and return queue -> bodies.
async fn drain(ch: &Channel, queues: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for q in queues {
        let mut bodies = Vec::new();
        while let Some(m) = get_opts(ch, q, true).await {
            bodies.push(String::from_utf8(m.delivery.data.clone()).unwrap());
        }
        out.insert(q.to_string(), bodies);
    }
    out
}

/// Which queues (of `queues`) a message with this routing key reaches.
async fn route_key(ch: &Channel, exchange: &str, key: &str, queues: &[&str]) -> Vec<String> {
    publish(ch, exchange, key, key.as_bytes()).await;
    sync(ch).await;
    drain(ch, queues)
        .await
        .into_iter()
        .filter(|(_, bodies)| {
            assert!(bodies.len() <= 1, "duplicate copies: {bodies:?}");
            !bodies.is_empty()
        })
        .map(|(q, _)| q)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_routes_by_queue_name() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "alpha").await;
    declare_queue(&ch, "beta").await;
    publish(&ch, "", "alpha", b"to alpha").await;
    publish(&ch, "", "beta", b"to beta").await;
    publish(&ch, "", "gamma", b"nowhere").await;
    publish(&ch, "", "ALPHA", b"case matters").await;
    sync(&ch).await;
    let got = drain(&ch, &["alpha", "beta"]).await;
    assert_eq!(got["alpha"], ["to alpha"]);
    assert_eq!(got["beta"], ["to beta"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_routes_on_exact_key() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    for q in ["q1", "q2", "q3"] {
        declare_queue(&ch, q).await;
    }
    bind_queue(&ch, "q1", "amq.direct", "red").await;
    bind_queue(&ch, "q2", "amq.direct", "red").await;
    bind_queue(&ch, "q2", "amq.direct", "green").await;
    bind_queue(&ch, "q3", "amq.direct", "").await;
    let all = ["q1", "q2", "q3"];
    assert_eq!(
        route_key(&ch, "amq.direct", "red", &all).await,
        ["q1", "q2"]
    );
    assert_eq!(route_key(&ch, "amq.direct", "green", &all).await, ["q2"]);
    assert_eq!(route_key(&ch, "amq.direct", "", &all).await, ["q3"]);
    assert!(route_key(&ch, "amq.direct", "blue", &all).await.is_empty());
    assert!(route_key(&ch, "amq.direct", "Red", &all).await.is_empty());
    assert!(route_key(&ch, "amq.direct", "red.x", &all).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_direct_exchange_routes_like_amq_direct() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "logs", ExchangeKind::Direct).await;
    declare_queue(&ch, "errors").await;
    declare_queue(&ch, "all").await;
    bind_queue(&ch, "errors", "logs", "error").await;
    for sev in ["info", "warning", "error"] {
        bind_queue(&ch, "all", "logs", sev).await;
    }
    for sev in ["info", "warning", "error", "debug"] {
        publish(&ch, "logs", sev, sev.as_bytes()).await;
    }
    sync(&ch).await;
    let got = drain(&ch, &["errors", "all"]).await;
    assert_eq!(got["errors"], ["error"]);
    assert_eq!(got["all"], ["info", "warning", "error"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_ignores_the_routing_key() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q1").await;
    declare_queue(&ch, "q2").await;
    declare_queue(&ch, "unbound").await;
    bind_queue(&ch, "q1", "amq.fanout", "").await;
    bind_queue(&ch, "q2", "amq.fanout", "some-key").await;
    let qs = ["q1", "q2", "unbound"];
    assert_eq!(route_key(&ch, "amq.fanout", "", &qs).await, ["q1", "q2"]);
    assert_eq!(
        route_key(&ch, "amq.fanout", "anything.at.all", &qs).await,
        ["q1", "q2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_twenty_queues_delivers_one_copy_each() {
    let broker = start_broker().await;
    let (conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "broadcast", ExchangeKind::Fanout).await;
    let names: Vec<String> = (0..20).map(|i| format!("fan-{i}")).collect();
    let mut consumers = Vec::new();
    for n in &names {
        declare_queue(&ch, n).await;
        bind_queue(&ch, n, "broadcast", "").await;
        let cch = open_channel(&conn).await;
        consumers.push((cch.clone(), consume(&cch, n, true).await));
    }
    for i in 0..3 {
        publish(&ch, "broadcast", "", format!("news-{i}").as_bytes()).await;
    }
    for (_cch, consumer) in consumers.iter_mut() {
        let ds = next_deliveries(consumer, 3).await;
        assert_eq!(bodies(&ds), ["news-0", "news-1", "news-2"]);
        assert!(ds.iter().all(|d| d.exchange.as_str() == "broadcast"));
    }
    // No extra copies anywhere (checked concurrently to keep the test quick).
    futures_util::future::join_all(
        consumers
            .iter_mut()
            .map(|(_cch, consumer)| assert_no_delivery(consumer)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_wildcards() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let bindings = [
        ("t-a.*.c", "a.*.c"),
        ("t-#.c", "#.c"),
        ("t-a.#", "a.#"),
        ("t-#", "#"),
        ("t-*", "*"),
        ("t-a.b.c", "a.b.c"),
        ("t-*.*", "*.*"),
        ("t-a.#.c", "a.#.c"),
        ("t-empty", ""),
    ];
    for (q, key) in bindings {
        declare_queue(&ch, q).await;
        bind_queue(&ch, q, "amq.topic", key).await;
    }
    let qs: Vec<&str> = bindings.iter().map(|(q, _)| *q).collect();
    let cases: &[(&str, &[&str])] = &[
        (
            "a.b.c",
            &["t-#", "t-#.c", "t-a.#", "t-a.#.c", "t-a.*.c", "t-a.b.c"],
        ),
        ("a.c", &["t-#", "t-#.c", "t-*.*", "t-a.#", "t-a.#.c"]),
        ("a.b.b.c", &["t-#", "t-#.c", "t-a.#", "t-a.#.c"]),
        ("a.x.y.c", &["t-#", "t-#.c", "t-a.#", "t-a.#.c"]),
        ("c", &["t-#", "t-#.c", "t-*"]),
        ("a", &["t-#", "t-*", "t-a.#"]),
        ("a.b", &["t-#", "t-*.*", "t-a.#"]),
        ("b.c", &["t-#", "t-#.c", "t-*.*"]),
        ("x.a.b.c", &["t-#", "t-#.c"]),
        ("a..c", &["t-#", "t-#.c", "t-a.#", "t-a.#.c", "t-a.*.c"]),
        ("", &["t-#", "t-empty"]),
        ("A.B.C", &["t-#"]),
    ];
    for (key, expected) in cases {
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(
            route_key(&ch, "amq.topic", key, &qs).await,
            want,
            "routing key {key:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_copy_per_queue_with_overlapping_bindings() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "amq.topic", "a.*").await;
    bind_queue(&ch, "q", "amq.topic", "*.b").await;
    bind_queue(&ch, "q", "amq.topic", "#").await;
    assert_eq!(route_key(&ch, "amq.topic", "a.b", &["q"]).await, ["q"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_unbind_removes_only_that_pattern() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "amq.topic", "a.*").await;
    bind_queue(&ch, "q", "amq.topic", "*.b").await;
    within(
        "queue.unbind",
        ch.queue_unbind(
            "q".into(),
            "amq.topic".into(),
            "a.*".into(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap();
    assert!(route_key(&ch, "amq.topic", "a.c", &["q"]).await.is_empty());
    assert_eq!(route_key(&ch, "amq.topic", "a.b", &["q"]).await, ["q"]);
}

fn headers_props(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    BasicProperties::default().with_headers(t)
}

async fn headers_case(exchange: &str) {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    let bindings: [(&str, FieldTable); 5] = [
        (
            "h-all",
            table([
                ("x-match", lstr("all")),
                ("format", lstr("pdf")),
                ("type", lstr("report")),
            ]),
        ),
        (
            "h-any",
            table([
                ("x-match", lstr("any")),
                ("format", lstr("pdf")),
                ("type", lstr("report")),
            ]),
        ),
        ("h-default-all", table([("format", lstr("pdf"))])),
        ("h-no-args", FieldTable::default()),
        (
            "h-any-single",
            table([
                ("x-match", lstr("any")),
                ("priority", AMQPValue::LongInt(5)),
            ]),
        ),
    ];
    for (q, args) in &bindings {
        declare_queue(&ch, q).await;
        bind_queue_args(&ch, q, exchange, "ignored-key", args.clone()).await;
    }
    let qs: Vec<&str> = bindings.iter().map(|(q, _)| *q).collect();
    let cases: Vec<(BasicProperties, Vec<&str>)> = vec![
        (
            headers_props(&[("format", lstr("pdf")), ("type", lstr("report"))]),
            vec!["h-all", "h-any", "h-default-all", "h-no-args"],
        ),
        (
            headers_props(&[
                ("format", lstr("pdf")),
                ("type", lstr("report")),
                ("extra", AMQPValue::Boolean(true)),
            ]),
            vec!["h-all", "h-any", "h-default-all", "h-no-args"],
        ),
        (
            headers_props(&[("format", lstr("pdf"))]),
            vec!["h-any", "h-default-all", "h-no-args"],
        ),
        (
            headers_props(&[("format", lstr("zip")), ("type", lstr("report"))]),
            vec!["h-any", "h-no-args"],
        ),
        (headers_props(&[("type", lstr("log"))]), vec!["h-no-args"]),
        (BasicProperties::default(), vec!["h-no-args"]),
        // Integers match across integer types, not against strings.
        (
            headers_props(&[("priority", AMQPValue::LongLongInt(5))]),
            vec!["h-any-single", "h-no-args"],
        ),
        (
            headers_props(&[("priority", AMQPValue::ShortShortUInt(5))]),
            vec!["h-any-single", "h-no-args"],
        ),
        (headers_props(&[("priority", lstr("5"))]), vec!["h-no-args"]),
    ];
    for (i, (props, expected)) in cases.into_iter().enumerate() {
        let body = format!("case-{i}");
        publish_props(&ch, exchange, "whatever", body.as_bytes(), props.clone()).await;
        sync(&ch).await;
        let got: Vec<String> = drain(&ch, &qs)
            .await
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(q, _)| q)
            .collect();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "case {i}: headers {:?}", props.headers());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_all_and_any() {
    headers_case("amq.headers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amq_match_is_a_headers_exchange() {
    headers_case("amq.match").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_binding_ignores_x_arguments_unless_with_x() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "hx", ExchangeKind::Headers).await;
    declare_queue(&ch, "plain-all").await;
    declare_queue(&ch, "with-x").await;
    let args = |mode: &str| {
        table([
            ("x-match", lstr(mode)),
            ("x-tenant", lstr("acme")),
            ("kind", lstr("a")),
        ])
    };
    bind_queue_args(&ch, "plain-all", "hx", "", args("all")).await;
    bind_queue_args(&ch, "with-x", "hx", "", args("all-with-x")).await;
    let qs = ["plain-all", "with-x"];

    // Without the x- header: plain "all" ignores x-tenant and matches.
    publish_props(&ch, "hx", "", b"1", headers_props(&[("kind", lstr("a"))])).await;
    sync(&ch).await;
    let got = drain(&ch, &qs).await;
    assert_eq!(got["plain-all"], ["1"]);
    assert!(got["with-x"].is_empty());

    // With it: both.
    publish_props(
        &ch,
        "hx",
        "",
        b"2",
        headers_props(&[("kind", lstr("a")), ("x-tenant", lstr("acme"))]),
    )
    .await;
    sync(&ch).await;
    let got = drain(&ch, &qs).await;
    assert_eq!(got["plain-all"], ["2"]);
    assert_eq!(got["with-x"], ["2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_unbind_needs_the_same_arguments() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_queue(&ch, "q").await;
    let args = table([("x-match", lstr("any")), ("k", lstr("v"))]);
    bind_queue_args(&ch, "q", "amq.headers", "", args.clone()).await;
    // Unbinding with other arguments removes nothing.
    within(
        "queue.unbind",
        ch.queue_unbind(
            "q".into(),
            "amq.headers".into(),
            "".into(),
            table([("x-match", lstr("any")), ("k", lstr("other"))]),
        ),
    )
    .await
    .unwrap();
    publish_props(
        &ch,
        "amq.headers",
        "",
        b"1",
        headers_props(&[("k", lstr("v"))]),
    )
    .await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1);
    within(
        "queue.unbind",
        ch.queue_unbind("q".into(), "amq.headers".into(), "".into(), args),
    )
    .await
    .unwrap();
    publish_props(
        &ch,
        "amq.headers",
        "",
        b"2",
        headers_props(&[("k", lstr("v"))]),
    )
    .await;
    sync(&ch).await;
    assert_eq!(message_count(&ch, "q").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_exchange_bindings_into_topic_and_headers() {
    let broker = start_broker().await;
    let (_conn, ch) = connect_channel(&broker).await;
    declare_exchange(&ch, "entry", ExchangeKind::Fanout).await;
    declare_exchange(&ch, "by-topic", ExchangeKind::Topic).await;
    declare_exchange(&ch, "by-headers", ExchangeKind::Headers).await;
    for (dst, src) in [("by-topic", "entry"), ("by-headers", "entry")] {
        within(
            "exchange.bind",
            ch.exchange_bind(
                dst.into(),
                src.into(),
                "".into(),
                Default::default(),
                FieldTable::default(),
            ),
        )
        .await
        .unwrap();
    }
    declare_queue(&ch, "tq").await;
    declare_queue(&ch, "hq").await;
    bind_queue(&ch, "tq", "by-topic", "orders.#").await;
    bind_queue_args(&ch, "hq", "by-headers", "", table([("region", lstr("eu"))])).await;
    publish_props(
        &ch,
        "entry",
        "orders.new",
        b"both",
        headers_props(&[("region", lstr("eu"))]),
    )
    .await;
    publish_props(
        &ch,
        "entry",
        "orders.new",
        b"topic only",
        headers_props(&[("region", lstr("us"))]),
    )
    .await;
    publish_props(
        &ch,
        "entry",
        "users.new",
        b"headers only",
        headers_props(&[("region", lstr("eu"))]),
    )
    .await;
    sync(&ch).await;
    let got = drain(&ch, &["tq", "hq"]).await;
    assert_eq!(got["tq"], ["both", "topic only"]);
    assert_eq!(got["hq"], ["both", "headers only"]);
}
