//! The JSON RabbitMQ's management API returns, built from broker state.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use warren_broker::access::{password, Permissions, User};
use warren_broker::definitions::table_to_json as table;
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
        "type": q.args.queue_type.as_str(),
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
        "type": x.type_name(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table(&x.arguments),
    })
}

/// A binding as the API lists it. `properties_key` names it in DELETE URLs:
/// the routing key, plus a digest of the arguments when there are any.
pub fn binding(
    vhost: &str,
    source: &str,
    dest: &warren_broker::exchange::Dest,
    key: &str,
    args: &amq_protocol::types::FieldTable,
) -> Value {
    let (destination, kind) = match dest {
        warren_broker::exchange::Dest::Queue(q) => (q.to_string(), "queue"),
        warren_broker::exchange::Dest::Exchange(e) => (e.to_string(), "exchange"),
    };
    json!({
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": key,
        "arguments": table(args),
        "properties_key": properties_key(key, args),
    })
}

pub fn properties_key(key: &str, args: &amq_protocol::types::FieldTable) -> String {
    let key = quote_plus(key);
    if args.inner().is_empty() {
        return key;
    }
    // FNV-1a over the arguments' JSON: stable across runs, opaque to clients.
    let text = table(args).to_string();
    let digest = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{key}~{digest:016x}")
}

/// URL form-encoding as RabbitMQ's API applies it to names in binding keys
/// and Location headers: unreserved characters stay, space is '+'.
pub fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'~' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An AMQP refusal from a broker verb as RabbitMQ's API reports it.
pub fn amqp_error(e: &warren_broker::error::AmqpError) -> Response {
    let reason = e.text.split_once(" - ").map_or(e.text.as_str(), |(_, r)| r);
    match e.code.0 {
        404 => error_body(StatusCode::NOT_FOUND, "not_found", reason),
        403 => access_refused(),
        _ => bad_request(reason),
    }
}

pub fn access_refused() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        "not_authorised",
        "Access refused.",
    )
}
