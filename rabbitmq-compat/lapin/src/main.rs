//! lapin (Rust) scenarios for the differential compatibility suite.
//!
//!     lapin-scenarios <scenario-name> <url> <prefix>
//!
//! Prints one JSON object (the observation) as the last stdout line.  Every
//! name used starts with <prefix>; "_resources" lists what the runner deletes.
use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind,
};
use serde_json::{json, Map, Value};

struct Ctx {
    prefix: String,
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Ctx {
    fn q(&mut self, s: &str) -> String {
        let n = format!("{}.{}", self.prefix, s);
        self.queues.push(n.clone());
        n
    }
    fn x(&mut self, s: &str) -> String {
        let n = format!("{}.{}", self.prefix, s);
        self.exchanges.push(n.clone());
        n
    }
    fn strip(&self, s: &str) -> String {
        s.replace(&self.prefix, "<prefix>")
    }
    fn err(&self, e: &lapin::Error) -> Value {
        match e.kind() {
            ErrorKind::ProtocolError(a) => json!({
                "kind": "ProtocolError",
                "code": a.get_id(),
                "text": self.strip(a.get_message().as_str()),
                "soft": e.is_amqp_soft_error(),
            }),
            other => json!({"kind": self.strip(&format!("{:?}", other))}),
        }
    }
}

type R = Result<(), lapin::Error>;

fn s(x: &str) -> ShortString {
    x.into()
}

fn value_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::LongString(x) => json!({"longstr": String::from_utf8_lossy(x.as_bytes())}),
        AMQPValue::ShortString(x) => json!({"shortstr": x.as_str()}),
        AMQPValue::Boolean(b) => json!({"bool": b}),
        AMQPValue::LongInt(i) => json!({"int32": i}),
        AMQPValue::LongLongInt(i) => json!({"int64": i}),
        AMQPValue::FieldTable(t) => json!({"table": table_json(t)}),
        other => json!({"other": format!("{:?}", other)}),
    }
}

fn table_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.as_str().to_string(), value_json(v));
    }
    Value::Object(m)
}

fn props_json(p: &BasicProperties) -> Value {
    json!({
        "content_type": p.content_type().as_ref().map(|x| x.as_str().to_string()),
        "content_encoding": p.content_encoding().as_ref().map(|x| x.as_str().to_string()),
        "delivery_mode": p.delivery_mode(),
        "priority": p.priority(),
        "correlation_id": p.correlation_id().as_ref().map(|x| x.as_str().to_string()),
        "reply_to": p.reply_to().as_ref().map(|x| x.as_str().to_string()),
        "expiration": p.expiration().as_ref().map(|x| x.as_str().to_string()),
        "message_id": p.message_id().as_ref().map(|x| x.as_str().to_string()),
        "timestamp": p.timestamp(),
        "kind": p.kind().as_ref().map(|x| x.as_str().to_string()),
        "user_id": p.user_id().as_ref().map(|x| x.as_str().to_string()),
        "app_id": p.app_id().as_ref().map(|x| x.as_str().to_string()),
        "headers": p.headers().as_ref().map(table_json),
    })
}

async fn declare_q(ch: &Channel, name: &str) -> Result<u32, lapin::Error> {
    let q = ch
        .queue_declare(s(name), QueueDeclareOptions::default(), FieldTable::default())
        .await?;
    Ok(q.message_count())
}

async fn publish(ch: &Channel, ex: &str, rk: &str, body: &[u8]) -> R {
    ch.basic_publish(s(ex), s(rk), BasicPublishOptions::default(), body, BasicProperties::default())
        .await?;
    Ok(())
}

async fn get_bodies(ch: &Channel, q: &str) -> Result<Vec<String>, lapin::Error> {
    let mut out = vec![];
    while let Some(m) = ch.basic_get(s(q), BasicGetOptions { no_ack: true }).await? {
        out.push(String::from_utf8_lossy(&m.delivery.data).to_string());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------

async fn next_delivery(consumer: &mut lapin::Consumer) -> Option<lapin::message::Delivery> {
    match tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        _ => None,
    }
}

async fn publish_get_properties(conn: &Connection, c: &mut Ctx, o: &mut Map<String, Value>) -> R {
    let ch = conn.create_channel().await?;
    let q = c.q("props");
    o.insert("declare message_count".into(), json!(declare_q(&ch, &q).await?));
    let mut headers = FieldTable::default();
    headers.insert(s("x-string"), AMQPValue::LongString("hello".into()));
    headers.insert(s("x-int"), AMQPValue::LongInt(42));
    headers.insert(s("x-long"), AMQPValue::LongLongInt(1 << 40));
    headers.insert(s("x-bool"), AMQPValue::Boolean(true));
    let mut nested = FieldTable::default();
    nested.insert(s("inner"), AMQPValue::LongString("v".into()));
    headers.insert(s("x-table"), AMQPValue::FieldTable(nested));
    let props = BasicProperties::default()
        .with_content_type(s("application/json"))
        .with_content_encoding(s("utf-8"))
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id(s("corr-1"))
        .with_reply_to(s("reply-queue"))
        .with_expiration(s("60000"))
        .with_message_id(s("msg-1"))
        .with_timestamp(1_700_000_000)
        .with_type(s("test-type"))
        .with_user_id(s("guest"))
        .with_app_id(s("lapin-compat"))
        .with_headers(headers);
    ch.basic_publish(s(""), s(&q), BasicPublishOptions::default(), b"{\"n\":1}", props)
        .await?;
    publish(&ch, "", &q, b"plain").await?;
    let m = ch.basic_get(s(&q), BasicGetOptions { no_ack: false }).await?;
    match m {
        Some(m) => {
            let d = &m.delivery;
            o.insert(
                "get 1".into(),
                json!({
                    "delivery_tag": d.delivery_tag,
                    "redelivered": d.redelivered,
                    "exchange": d.exchange.as_str(),
                    "routing_key": c.strip(d.routing_key.as_str()),
                    "message_count": m.message_count,
                    "body": String::from_utf8_lossy(&d.data),
                    "properties": props_json(&d.properties),
                }),
            );
            d.ack(BasicAckOptions::default()).await?;
        }
        None => {
            o.insert("get 1".into(), Value::Null);
        }
    }
    let m = ch.basic_get(s(&q), BasicGetOptions { no_ack: true }).await?;
    o.insert(
        "get 2".into(),
        match m {
            Some(m) => json!({
                "delivery_tag": m.delivery.delivery_tag,
                "message_count": m.message_count,
                "body": String::from_utf8_lossy(&m.delivery.data),
                "properties": props_json(&m.delivery.properties),
            }),
            None => Value::Null,
        },
    );
    let m = ch.basic_get(s(&q), BasicGetOptions { no_ack: true }).await?;
    o.insert("get 3 (empty)".into(), json!(m.is_none()));
    ch.close(200, s("bye")).await?;
    Ok(())
}

async fn consume_prefetch_nack(conn: &Connection, c: &mut Ctx, o: &mut Map<String, Value>) -> R {
    let ch = conn.create_channel().await?;
    let q = c.q("work");
    declare_q(&ch, &q).await?;
    for i in 1..=4 {
        publish(&ch, "", &q, format!("m{i}").as_bytes()).await?;
    }
    ch.basic_qos(2, BasicQosOptions::default()).await?;
    let tag = format!("{}.ctag", c.prefix);
    let mut consumer = ch
        .basic_consume(s(&q), s(&tag), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    o.insert("consumer tag".into(), json!(c.strip(consumer.tag().as_str())));
    let mut events = vec![];
    let d1 = next_delivery(&mut consumer).await;
    let d2 = next_delivery(&mut consumer).await;
    // with prefetch 2 nothing more arrives until we ack/nack
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    o.insert("third delivery before ack".into(), json!(extra.is_ok()));
    let desc = |d: &lapin::message::Delivery| {
        json!({"tag": d.delivery_tag, "redelivered": d.redelivered,
               "body": String::from_utf8_lossy(&d.data)})
    };
    // Cancel before nack/ack so that no delivery races the requeue: the
    // second consumer then sees the queue in its settled order.
    ch.basic_cancel(s(&tag), BasicCancelOptions::default()).await?;
    if let (Some(d1), Some(d2)) = (d1, d2) {
        events.push(desc(&d1));
        events.push(desc(&d2));
        d1.nack(BasicNackOptions { multiple: false, requeue: true }).await?;
        d2.ack(BasicAckOptions::default()).await?;
        let tag2 = format!("{}.ctag2", c.prefix);
        let mut consumer = ch
            .basic_consume(s(&q), s(&tag2), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let mut acked = 1;
        while let Some(d) = next_delivery(&mut consumer).await {
            events.push(desc(&d));
            d.ack(BasicAckOptions::default()).await?;
            acked += 1;
            if acked == 4 {
                break;
            }
        }
        o.insert("acked".into(), json!(acked));
        ch.basic_cancel(s(&tag2), BasicCancelOptions::default()).await?;
    }
    o.insert("deliveries".into(), json!(events));
    let remaining = ch
        .queue_declare(s(&q), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await?;
    o.insert("remaining".into(), json!(remaining.message_count()));
    ch.close(200, s("bye")).await?;
    Ok(())
}

async fn confirms_mandatory(conn: &Connection, c: &mut Ctx, o: &mut Map<String, Value>) -> R {
    let ch = conn.create_channel().await?;
    let q = c.q("confirmed");
    declare_q(&ch, &q).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut results = vec![];
    for (label, rk, mandatory) in [
        ("routable", q.clone(), false),
        ("unroutable", format!("{}.nowhere", c.prefix), false),
        ("unroutable mandatory", format!("{}.nowhere", c.prefix), true),
        ("routable mandatory", q.clone(), true),
    ] {
        let conf = ch
            .basic_publish(
                s(""),
                s(&rk),
                BasicPublishOptions { mandatory, immediate: false },
                label.as_bytes(),
                BasicProperties::default().with_message_id(s(label)),
            )
            .await?
            .await?;
        let ret = conf.is_ack();
        let nack = conf.is_nack();
        let returned = conf.take_message().map(|m| {
            json!({
                "reply_code": m.reply_code,
                "reply_text": m.reply_text.as_str(),
                "exchange": m.delivery.exchange.as_str(),
                "routing_key": c.strip(m.delivery.routing_key.as_str()),
                "body": String::from_utf8_lossy(&m.delivery.data),
                "message_id": m.delivery.properties.message_id().as_ref().map(|x| x.as_str().to_string()),
            })
        });
        results.push(json!({"publish": label, "ack": ret, "nack": nack, "returned": returned}));
    }
    o.insert("confirms".into(), json!(results));
    // a batch, then wait_for_confirms
    for i in 0..5 {
        publish(&ch, "", &q, format!("batch{i}").as_bytes()).await?;
    }
    let returned = ch.wait_for_confirms().await?;
    o.insert("wait_for_confirms returned".into(), json!(returned.len()));
    // confirms to a non-existent exchange: channel error 404
    let r = ch
        .basic_publish(s(&format!("{}.missing-x", c.prefix)), s("k"), BasicPublishOptions::default(),
                       b"x", BasicProperties::default())
        .await;
    let r = match r {
        Ok(conf) => conf.await.map(|c| json!({"ack": c.is_ack(), "nack": c.is_nack()})),
        Err(e) => Err(e),
    };
    o.insert(
        "publish to missing exchange".into(),
        match r {
            Ok(v) => v,
            Err(e) => json!({"error": c.err(&e)}),
        },
    );
    let ch2 = conn.create_channel().await?;
    let n = ch2
        .queue_declare(s(&q), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await?;
    o.insert("queue message_count".into(), json!(n.message_count()));
    ch2.close(200, s("bye")).await?;
    Ok(())
}

async fn passive_declare_missing(conn: &Connection, c: &mut Ctx, o: &mut Map<String, Value>) -> R {
    let ch = conn.create_channel().await?;
    let name = format!("{}.does-not-exist", c.prefix);
    let r = ch
        .queue_declare(s(&name), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    o.insert(
        "queue.declare passive (missing)".into(),
        match &r {
            Ok(q) => json!({"ok": q.message_count()}),
            Err(e) => json!({"error": c.err(e)}),
        },
    );
    o.insert("channel connected after".into(), json!(ch.status().connected()));
    let again = ch
        .queue_declare(s(&name), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    o.insert(
        "same channel again".into(),
        match &again {
            Ok(_) => json!("ok"),
            Err(e) => json!({"error": c.err(e)}),
        },
    );
    let ch2 = conn.create_channel().await?;
    let r = ch2
        .exchange_declare(
            s(&format!("{}.missing-x", c.prefix)),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    o.insert(
        "exchange.declare passive (missing)".into(),
        match &r {
            Ok(_) => json!("ok"),
            Err(e) => json!({"error": c.err(e)}),
        },
    );
    // the connection survives channel errors
    let ch3 = conn.create_channel().await?;
    let q = c.q("exists");
    declare_q(&ch3, &q).await?;
    ch3.confirm_select(ConfirmSelectOptions::default()).await?;
    publish(&ch3, "", &q, b"x").await?;
    ch3.wait_for_confirms().await?;
    let p = ch3
        .queue_declare(s(&q), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await?;
    o.insert(
        "passive on existing".into(),
        json!({"queue": c.strip(p.name().as_str()), "message_count": p.message_count(),
               "consumer_count": p.consumer_count()}),
    );
    o.insert("connection connected".into(), json!(conn.status().connected()));
    ch3.close(200, s("bye")).await?;
    Ok(())
}

async fn exchange_bindings(conn: &Connection, c: &mut Ctx, o: &mut Map<String, Value>) -> R {
    let ch = conn.create_channel().await?;
    let src = c.x("src");
    let dst = c.x("dst");
    let qa = c.q("a");
    let qb = c.q("b");
    ch.exchange_declare(s(&src), ExchangeKind::Topic, ExchangeDeclareOptions::default(), FieldTable::default()).await?;
    ch.exchange_declare(s(&dst), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default()).await?;
    declare_q(&ch, &qa).await?;
    declare_q(&ch, &qb).await?;
    ch.queue_bind(s(&qa), s(&dst), s(""), QueueBindOptions::default(), FieldTable::default()).await?;
    ch.queue_bind(s(&qb), s(&src), s("direct.#"), QueueBindOptions::default(), FieldTable::default()).await?;
    ch.exchange_bind(s(&dst), s(&src), s("*.orange.*"), ExchangeBindOptions::default(), FieldTable::default()).await?;
    for rk in ["quick.orange.rabbit", "lazy.brown.fox", "direct.x", "a.orange.b.c"] {
        publish(&ch, &src, rk, rk.as_bytes()).await?;
    }
    publish(&ch, &dst, "anything", b"to-dst").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    o.insert("a (via e2e)".into(), json!(get_bodies(&ch, &qa).await?));
    o.insert("b (direct on src)".into(), json!(get_bodies(&ch, &qb).await?));
    ch.exchange_unbind(s(&dst), s(&src), s("*.orange.*"), ExchangeUnbindOptions::default(), FieldTable::default()).await?;
    publish(&ch, &src, "quick.orange.rabbit", b"after-unbind").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    o.insert("a after unbind".into(), json!(get_bodies(&ch, &qa).await?));
    // unbinding something that is not bound is not an error
    let r = ch.exchange_unbind(s(&dst), s(&src), s("*.orange.*"), ExchangeUnbindOptions::default(), FieldTable::default()).await;
    o.insert("unbind again".into(), match &r { Ok(_) => json!("ok"), Err(e) => json!({"error": c.err(e)}) });
    let ch2 = conn.create_channel().await?;
    let r = ch2
        .exchange_bind(s(&dst), s(&format!("{}.missing-src", c.prefix)), s("k"),
                       ExchangeBindOptions::default(), FieldTable::default())
        .await;
    o.insert("bind to missing source".into(), match &r { Ok(_) => json!("ok"), Err(e) => json!({"error": c.err(e)}) });
    ch.close(200, s("bye")).await?;
    Ok(())
}

async fn tx_counts(conn: &Connection, c: &mut Ctx, o: &mut Map<String, Value>) -> R {
    let ch = conn.create_channel().await?;
    let q = c.q("tx");
    declare_q(&ch, &q).await?;
    let count = |ch: Channel, q: String| async move {
        let r = ch
            .queue_declare(s(&q), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await?;
        Ok::<u32, lapin::Error>(r.message_count())
    };
    let obs = conn.create_channel().await?;
    ch.tx_select().await?;
    for i in 0..3 {
        publish(&ch, "", &q, format!("c{i}").as_bytes()).await?;
    }
    o.insert("before commit".into(), json!(count(obs.clone(), q.clone()).await?));
    ch.tx_commit().await?;
    o.insert("after commit".into(), json!(count(obs.clone(), q.clone()).await?));
    for i in 0..2 {
        publish(&ch, "", &q, format!("r{i}").as_bytes()).await?;
    }
    ch.tx_rollback().await?;
    o.insert("after rollback".into(), json!(count(obs.clone(), q.clone()).await?));
    // acks inside a transaction: get 2 with ack, rollback, then commit 1 ack
    let m1 = ch.basic_get(s(&q), BasicGetOptions { no_ack: false }).await?.unwrap();
    let m2 = ch.basic_get(s(&q), BasicGetOptions { no_ack: false }).await?.unwrap();
    o.insert("got".into(), json!([
        {"tag": m1.delivery.delivery_tag, "body": String::from_utf8_lossy(&m1.delivery.data)},
        {"tag": m2.delivery.delivery_tag, "body": String::from_utf8_lossy(&m2.delivery.data)},
    ]));
    m1.delivery.ack(BasicAckOptions::default()).await?;
    ch.tx_rollback().await?;
    m2.delivery.ack(BasicAckOptions::default()).await?;
    ch.tx_commit().await?;
    ch.close(200, s("bye")).await?;
    // closing the channel requeues the unacked (rolled-back) m1
    tokio::time::sleep(Duration::from_millis(200)).await;
    o.insert("after ack commit and close".into(), json!(count(obs.clone(), q.clone()).await?));
    // tx.commit without tx.select: 406 PRECONDITION_FAILED
    let ch3 = conn.create_channel().await?;
    let r = ch3.tx_commit().await;
    o.insert("commit without select".into(), match &r { Ok(_) => json!("ok"), Err(e) => json!({"error": c.err(e)}) });
    obs.close(200, s("bye")).await?;
    Ok(())
}

fn default_vhost(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
    match rest.split_once('/') {
        None => format!("{scheme}://{rest}/%2f"),
        Some((auth, "")) => format!("{scheme}://{auth}/%2f"),
        Some(_) => url.to_string(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: lapin-scenarios <scenario-name> <url> <prefix>");
        std::process::exit(2);
    }
    let (name, url, prefix) = (&args[1], &args[2], &args[3]);
    let mut c = Ctx { prefix: prefix.clone(), queues: vec![], exchanges: vec![] };
    let mut o = Map::new();
    // lapin reads "amqp://host/" as the empty vhost; the suite's URLs mean "/"
    let url = default_vhost(url);
    let conn = match Connection::connect(&url, ConnectionProperties::default()).await {
        Ok(conn) => conn,
        Err(e) => {
            println!("{}", json!({"connect error": format!("{e}")}));
            std::process::exit(1);
        }
    };
    let r = match name.as_str() {
        "publish-get-properties" => publish_get_properties(&conn, &mut c, &mut o).await,
        "consume-prefetch-nack-requeue" => consume_prefetch_nack(&conn, &mut c, &mut o).await,
        "confirms-mandatory-return" => confirms_mandatory(&conn, &mut c, &mut o).await,
        "passive-declare-missing" => passive_declare_missing(&conn, &mut c, &mut o).await,
        "exchange-bindings" => exchange_bindings(&conn, &mut c, &mut o).await,
        "tx-select-commit-rollback" => tx_counts(&conn, &mut c, &mut o).await,
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    };
    let mut status = 0;
    if let Err(e) = r {
        o.insert("error".into(), c.err(&e));
        status = 1;
    }
    let _ = conn.close(200, s("bye")).await;
    o.insert("_resources".into(), json!({"queues": c.queues, "exchanges": c.exchanges}));
    println!("{}", Value::Object(o));
    std::process::exit(status);
}
