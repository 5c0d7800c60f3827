//! The JSON RabbitMQ's management API returns, built from broker state.

use amq_protocol::types::{AMQPValue, FieldTable};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use warren_broker::access::{password, Permissions, User};
use warren_broker::exchange::Exchange;
use warren_broker::queue::Queue;
use warren_broker::vhost::VHost;

/// The node name shown in `cluster_state` and `node` fields.
pub const NODE: &str = "warren@localhost";

/// `{"error": ..., "reason": ...}` with a status, as RabbitMQ answers failures.
pub fn error_body(status: StatusCode, error: &str, reason: &str) -> Response {
    (status, Json(json!({ "error": error, "reason": reason }))).into_response()
}

pub fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "Object Not Found", "Not Found")
}

pub fn bad_request(reason: &str) -> Response {
    error_body(StatusCode::BAD_REQUEST, "bad_request", reason)
}

pub fn vhost(v: &VHost) -> Value {
    let meta = v.meta.read();
    json!({
        "name": v.name,
        "description": meta.description,
        "tags": meta.tags,
        "default_queue_type": "undefined",
        "metadata": { "description": meta.description, "tags": meta.tags },
        "tracing": false,
        "cluster_state": { NODE: "running" },
    })
}

pub fn user(u: &User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": password::SHA256,
        "tags": u.tags,
        "limits": {},
    })
}

pub fn permission(vhost: &str, user: &str, p: &Permissions) -> Value {
    json!({
        "user": user,
        "vhost": vhost,
        "configure": p.configure.source(),
        "write": p.write.source(),
        "read": p.read.source(),
    })
}

pub fn queue(vhost: &str, q: &std::sync::Arc<Queue>) -> Value {
    let (messages, consumers) = q.counts();
    json!({
        "name": q.name,
        "vhost": vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": table(&q.arguments),
        "type": "classic",
        "node": NODE,
        "state": "running",
        "messages": messages,
        "messages_ready": messages,
        "consumers": consumers,
    })
}

pub fn exchange(vhost: &str, x: &Exchange) -> Value {
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table(&x.arguments),
    })
}

/// A field table as plain JSON (what the HTTP API shows for arguments).
pub fn table(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.as_str().to_owned(), value(v, 0));
    }
    Value::Object(m)
}

/// Nested tables are bounded on the way in (the codec refuses depth > 64);
/// the depth limit here only keeps this function total.
fn value(v: &AMQPValue, depth: usize) -> Value {
    if depth > 64 {
        return Value::Null;
    }
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!(d.value as f64 / 10f64.powi(d.scale as i32)),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::Void => Value::Null,
        AMQPValue::FieldArray(a) => {
            Value::Array(a.as_slice().iter().map(|x| value(x, depth + 1)).collect())
        }
        AMQPValue::FieldTable(t) => {
            let mut m = Map::new();
            for (k, x) in t.inner() {
                m.insert(k.as_str().to_owned(), value(x, depth + 1));
            }
            Value::Object(m)
        }
    }
}
