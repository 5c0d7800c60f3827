//! Queues, exchanges and bindings over HTTP: list, declare, delete, purge,
//! bind — RabbitMQ's `/api/queues`, `/api/exchanges`, `/api/bindings`.
//! Declaring or deleting needs configure permission in the vhost, binding
//! needs write on the destination and read on the source, as over AMQP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use warren_broker::access::{Perm, Resource, User};
use warren_broker::definitions::{json_to_table, OPERATOR};
use warren_broker::exchange::Dest;
use warren_broker::vhost::{ExchangeDecl, QueueDecl, VHost};
use warren_broker::Broker;

use crate::auth::{authorize, Denied, Need};
use crate::json::{self, access_refused, amqp_error, bad_request, not_found};
use crate::routes::{body_object, guarded, once_durable, Peer, Shared};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/queues", get(list_queues))
        .route("/api/queues/{vhost}", get(list_vhost_queues))
        .route(
            "/api/queues/{vhost}/{name}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/exchanges", get(list_exchanges))
        .route("/api/exchanges/{vhost}", get(list_vhost_exchanges))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(get_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/bindings", get(list_bindings))
        .route("/api/bindings/{vhost}", get(list_vhost_bindings))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            post(post_binding).get(get_bindings_between),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(get_binding).delete(delete_binding),
        )
}

/// Why a topology request was refused.
enum Refused {
    Auth(Denied),
    Access,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Auth(d) => d.into_response(),
            Refused::Access => access_refused(),
        }
    }
}

/// The caller, if a management user with every (perm, resource, name) in `vhost`.
fn permitted(
    b: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
    vhost: &str,
    checks: &[(Perm, Resource, &str)],
) -> Result<Arc<User>, Refused> {
    let user = authorize(b, headers, peer, Need::Management).map_err(Refused::Auth)?;
    let Some(p) = b.access.permission(vhost, &user.name) else {
        return Err(Refused::Access);
    };
    for (perm, kind, name) in checks {
        let name = if *kind == Resource::Exchange && name.is_empty() {
            "amq.default"
        } else {
            name
        };
        if !p.allows(*perm, name) {
            return Err(Refused::Access);
        }
    }
    Ok(user)
}

fn flag(fields: &serde_json::Map<String, Value>, key: &str, default: bool) -> bool {
    fields.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true")
}

// ----- queues ------------------------------------------------------------------------

/// The JSON of every item `items` yields in one vhost (404 if it is missing)
/// or in all of them, sorted by vhost then as `items` orders them.
fn listing(b: &Broker, vhost: Option<&str>, items: impl Fn(&VHost) -> Vec<Value>) -> Response {
    let vhosts = match vhost {
        Some(name) => match b.vhost(name) {
            Some(v) => vec![v],
            None => return not_found(),
        },
        None => b.vhosts(),
    };
    let list: Vec<Value> = vhosts.iter().flat_map(|v| items(v)).collect();
    Json(list).into_response()
}

fn queues_response(b: &Broker, vhost: Option<&str>) -> Response {
    listing(b, vhost, |v| {
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        qs.iter().map(|q| json::queue(&v.name, q)).collect()
    })
}

async fn list_queues(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        queues_response(b, None)
    })
}

async fn list_vhost_queues(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        queues_response(b, Some(&vhost))
    })
}

async fn get_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        match b.vhost(&vhost).and_then(|v| v.queue(&name)) {
            Some(q) => Json(json::queue(&vhost, &q)).into_response(),
            None => not_found(),
        }
    })
}

async fn put_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if name.starts_with("amq.") {
        return access_refused();
    }
    if let Err(e) = warren_broker::names::check_short("queue name", &name) {
        return bad_request(&e);
    }
    if let Err(r) = permitted(
        &b,
        &headers,
        peer,
        &vhost,
        &[(Perm::Configure, Resource::Queue, &name)],
    ) {
        return r.into_response();
    }
    let Some(v) = b.vhost(&vhost) else {
        return not_found();
    };
    let Some(fields) = body_object(&body) else {
        return bad_request("not_json");
    };
    let arguments = match json_to_table(fields.get("arguments")) {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let decl = QueueDecl {
        name: name.clone(),
        passive: false,
        durable: flag(&fields, "durable", false),
        exclusive: false,
        auto_delete: flag(&fields, "auto_delete", false),
        arguments,
        server_named: false,
    };
    let existed = v.queue(&name).is_some();
    let reply = match v.declare_queue(&decl, OPERATOR) {
        Ok(_) if existed => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(e) => amqp_error(&e),
    };
    once_durable(&b, reply).await
}

async fn delete_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = permitted(
        &b,
        &headers,
        peer,
        &vhost,
        &[(Perm::Configure, Resource::Queue, &name)],
    ) {
        return r.into_response();
    }
    let Some(v) = b.vhost(&vhost) else {
        return not_found();
    };
    if v.queue(&name).is_none() {
        return not_found();
    }
    let reply = match v.delete_queue(
        &name,
        truthy(&q, "if-unused"),
        truthy(&q, "if-empty"),
        OPERATOR,
    ) {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => amqp_error(&e),
    };
    once_durable(&b, reply).await
}

async fn purge_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    if let Err(r) = permitted(
        &b,
        &headers,
        peer,
        &vhost,
        &[(Perm::Read, Resource::Queue, &name)],
    ) {
        return r.into_response();
    }
    match b.vhost(&vhost).and_then(|v| v.queue(&name)) {
        Some(q) => {
            q.purge();
            once_durable(&b, StatusCode::NO_CONTENT.into_response()).await
        }
        None => not_found(),
    }
}

// ----- exchanges -----------------------------------------------------------------------

fn exchanges_response(b: &Broker, vhost: Option<&str>) -> Response {
    listing(b, vhost, |v| {
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        xs.iter().map(|x| json::exchange(&v.name, x)).collect()
    })
}

async fn list_exchanges(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        exchanges_response(b, None)
    })
}

async fn list_vhost_exchanges(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        exchanges_response(b, Some(&vhost))
    })
}

async fn get_exchange(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        match b.vhost(&vhost).and_then(|v| v.exchange(&name)) {
            Some(x) => Json(json::exchange(&vhost, &x)).into_response(),
            None => not_found(),
        }
    })
}

async fn put_exchange(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if name.is_empty() || name.starts_with("amq.") {
        return access_refused();
    }
    if let Err(e) = warren_broker::names::check_short("exchange name", &name) {
        return bad_request(&e);
    }
    if let Err(r) = permitted(
        &b,
        &headers,
        peer,
        &vhost,
        &[(Perm::Configure, Resource::Exchange, &name)],
    ) {
        return r.into_response();
    }
    let Some(v) = b.vhost(&vhost) else {
        return not_found();
    };
    let Some(fields) = body_object(&body) else {
        return bad_request("not_json");
    };
    let arguments = match json_to_table(fields.get("arguments")) {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let decl = ExchangeDecl {
        name: name.clone(),
        kind: fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("direct")
            .to_owned(),
        passive: false,
        durable: flag(&fields, "durable", false),
        auto_delete: flag(&fields, "auto_delete", false),
        internal: flag(&fields, "internal", false),
        arguments,
    };
    let existed = v.exchange(&name).is_some();
    let reply = match v.declare_exchange(&decl) {
        Ok(()) if existed => StatusCode::NO_CONTENT.into_response(),
        Ok(()) => StatusCode::CREATED.into_response(),
        Err(e) => amqp_error(&e),
    };
    once_durable(&b, reply).await
}

async fn delete_exchange(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if name.is_empty() || name.starts_with("amq.") {
        return access_refused();
    }
    if let Err(r) = permitted(
        &b,
        &headers,
        peer,
        &vhost,
        &[(Perm::Configure, Resource::Exchange, &name)],
    ) {
        return r.into_response();
    }
    let Some(v) = b.vhost(&vhost) else {
        return not_found();
    };
    if v.exchange(&name).is_none() {
        return not_found();
    }
    let reply = match v.delete_exchange(&name, truthy(&q, "if-unused")) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => amqp_error(&e),
    };
    once_durable(&b, reply).await
}

// ----- bindings ------------------------------------------------------------------------

/// Every binding in the listed vhosts, the default exchange's implicit
/// ones (one per queue) first, as RabbitMQ lists them.
fn bindings_of(vhosts: &[Arc<VHost>], keep: impl Fn(&str, &Dest) -> bool) -> Vec<Value> {
    let mut list = Vec::new();
    for v in vhosts {
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        for q in qs {
            let dest = Dest::Queue(q.name.as_str().into());
            if keep("", &dest) {
                list.push(json::binding(
                    &v.name,
                    "",
                    &dest,
                    &q.name,
                    &Default::default(),
                ));
            }
        }
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        for x in xs.iter().filter(|x| !x.is_default()) {
            let mut bs = x.bindings.read().bindings();
            bs.sort_by(|a, b| {
                (a.1.as_str(), dest_name(&a.0)).cmp(&(b.1.as_str(), dest_name(&b.0)))
            });
            for (dest, key, args) in bs {
                if keep(&x.name, &dest) {
                    list.push(json::binding(&v.name, &x.name, &dest, &key, &args));
                }
            }
        }
    }
    list
}

fn dest_name(d: &Dest) -> &str {
    match d {
        Dest::Queue(n) | Dest::Exchange(n) => n,
    }
}

async fn list_bindings(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        Json(bindings_of(&b.vhosts(), |_, _| true)).into_response()
    })
}

async fn list_vhost_bindings(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        match b.vhost(&vhost) {
            Some(v) => Json(bindings_of(&[v], |_, _| true)).into_response(),
            None => not_found(),
        }
    })
}

/// Whether a URL's `props` segment (already percent-decoded once) names the
/// binding with this properties key; clients send it encoded once or twice.
fn same_binding(key: &Value, props: &str) -> bool {
    key == props || *key == json::quote_plus(props)
}

fn destination(kind: &str, name: &str) -> Option<Dest> {
    match kind {
        "q" => Some(Dest::Queue(name.into())),
        "e" => Some(Dest::Exchange(name.into())),
        _ => None,
    }
}

async fn get_bindings_between(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        let (Some(v), Some(d)) = (b.vhost(&vhost), destination(&kind, &dest)) else {
            return not_found();
        };
        Json(bindings_of(&[v], |s, x| s == source && *x == d)).into_response()
    })
}

async fn get_binding(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Response {
    guarded(&b, &headers, peer, Need::Management, |b| {
        let (Some(v), Some(d)) = (b.vhost(&vhost), destination(&kind, &dest)) else {
            return not_found();
        };
        bindings_of(&[v], |s, x| s == source && *x == d)
            .into_iter()
            .find(|b| same_binding(&b["properties_key"], &props))
            .map_or_else(not_found, |b| Json(b).into_response())
    })
}

async fn post_binding(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Response {
    let Some(d) = destination(&kind, &dest) else {
        return not_found();
    };
    let dest_kind = if kind == "q" {
        Resource::Queue
    } else {
        Resource::Exchange
    };
    let checks = [
        (Perm::Write, dest_kind, dest.as_str()),
        (Perm::Read, Resource::Exchange, source.as_str()),
    ];
    if let Err(r) = permitted(&b, &headers, peer, &vhost, &checks) {
        return r.into_response();
    }
    let Some(v) = b.vhost(&vhost) else {
        return not_found();
    };
    let Some(fields) = body_object(&body) else {
        return bad_request("not_json");
    };
    let args = match json_to_table(fields.get("arguments")) {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    let key = fields
        .get("routing_key")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Err(e) = warren_broker::names::check_short("routing key", &key) {
        return bad_request(&e);
    }
    let reply = match v.bind(&source, d, &key, &args, OPERATOR) {
        Ok(()) => (
            StatusCode::CREATED,
            [(
                header::LOCATION,
                format!(
                    "{}/{}",
                    json::quote_plus(&dest),
                    json::quote_plus(&json::properties_key(&key, &args))
                ),
            )],
        )
            .into_response(),
        Err(e) => amqp_error(&e),
    };
    once_durable(&b, reply).await
}

async fn delete_binding(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Response {
    let Some(d) = destination(&kind, &dest) else {
        return not_found();
    };
    let dest_kind = if kind == "q" {
        Resource::Queue
    } else {
        Resource::Exchange
    };
    let checks = [
        (Perm::Write, dest_kind, dest.as_str()),
        (Perm::Read, Resource::Exchange, source.as_str()),
    ];
    if let Err(r) = permitted(&b, &headers, peer, &vhost, &checks) {
        return r.into_response();
    }
    let Some(v) = b.vhost(&vhost) else {
        return not_found();
    };
    let Some(x) = v.exchange(&source) else {
        return not_found();
    };
    let found = x
        .bindings
        .read()
        .bindings()
        .into_iter()
        .find(|(dd, key, args)| {
            *dd == d && same_binding(&json::properties_key(key, args).into(), &props)
        });
    let Some((dd, key, args)) = found else {
        return not_found();
    };
    let reply = match v.unbind(&source, dd, &key, &args, OPERATOR) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => amqp_error(&e),
    };
    once_durable(&b, reply).await
}
