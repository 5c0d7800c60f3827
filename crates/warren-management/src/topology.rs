//! Queues, exchanges and bindings over HTTP: list, declare, delete, purge,
//! bind — RabbitMQ's `/api/queues`, `/api/exchanges`, `/api/bindings`.
//! Listings show only the vhosts the user may enter, and any request naming
//! another is refused (`vhost_access`). Declares, deletes and binds need the
//! same permissions as over AMQP (`warren_broker::access::required`).

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
use warren_broker::access::{required, Check, Resource, User};
use warren_broker::definitions::{json_to_table, OPERATOR};
use warren_broker::exchange::Dest;
use warren_broker::vhost::{ExchangeDecl, QueueDecl, VHost};
use warren_broker::Broker;

use crate::auth::{authorize, Need};
use crate::json::{self, access_refused, amqp_error, bad_request, error_body, not_found};
use crate::routes::{body_object, once_durable, Peer, Shared};
use crate::vhost_access::{authorize_in_vhost, entered_vhosts};

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

/// Whether the user's permissions in `vhost` allow every check (no
/// permissions there allow none: an administrator may look, not change).
fn permits(b: &Broker, user: &User, vhost: &str, checks: &[Check]) -> bool {
    b.access
        .permission(vhost, &user.name)
        .is_some_and(|p| checks.iter().all(|c| p.permits(c)))
}

/// Run `f` on the vhost if the caller may enter it; 404 if it does not exist.
fn in_vhost(
    b: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
    vhost: &str,
    f: impl FnOnce(&Arc<User>, &Arc<VHost>) -> Response,
) -> Response {
    match authorize_in_vhost(b, headers, peer, vhost) {
        Ok((user, Some(v))) => f(&user, &v),
        Ok((_, None)) => not_found(),
        Err(denied) => denied.into_response(),
    }
}

/// Run `f` on the vhosts whose contents the caller may list.
fn in_entered_vhosts(
    b: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
    f: impl FnOnce(&[Arc<VHost>]) -> Response,
) -> Response {
    match authorize(b, headers, peer, Need::Management) {
        Ok(user) => f(&entered_vhosts(b, &user)),
        Err(denied) => denied.into_response(),
    }
}

/// RabbitMQ's reply to a declare in a vhost that does not exist.
fn vhost_not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "not_found", "vhost_not_found")
}

fn flag(fields: &serde_json::Map<String, Value>, key: &str, default: bool) -> bool {
    fields.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn truthy(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true")
}

// ----- queues ------------------------------------------------------------------------

/// The JSON of every item `items` yields in `vhosts`, in vhost order.
fn listing(vhosts: &[Arc<VHost>], items: impl Fn(&VHost) -> Vec<Value>) -> Response {
    let list: Vec<Value> = vhosts.iter().flat_map(|v| items(v)).collect();
    Json(list).into_response()
}

fn queues_response(vhosts: &[Arc<VHost>]) -> Response {
    listing(vhosts, |v| {
        let mut qs = v.queues();
        qs.sort_by(|a, b| a.name.cmp(&b.name));
        qs.iter().map(|q| json::queue(&v.name, q)).collect()
    })
}

async fn list_queues(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    in_entered_vhosts(&b, &headers, peer, queues_response)
}

async fn list_vhost_queues(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| {
        queues_response(std::slice::from_ref(v))
    })
}

async fn get_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| match v.queue(&name) {
        Some(q) => Json(json::queue(&vhost, &q)).into_response(),
        None => not_found(),
    })
}

/// Checks in RabbitMQ's order: vhost access, name, vhost, body, reserved
/// name, then the permissions queue.declare needs over AMQP.
async fn put_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (user, v) = match authorize_in_vhost(&b, &headers, peer, &vhost) {
        Ok(found) => found,
        Err(denied) => return denied.into_response(),
    };
    if let Err(e) = warren_broker::names::check_short("queue name", &name) {
        return bad_request(&e);
    }
    let Some(v) = v else {
        return vhost_not_found();
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
    if let Err(e) = warren_broker::vhost::check_queue_name(&decl) {
        return amqp_error(&e);
    }
    if !permits(
        &b,
        &user,
        &vhost,
        &required::queue_declare(&name, &decl.arguments),
    ) {
        return access_refused();
    }
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
    let reply = in_vhost(&b, &headers, peer, &vhost, |user, v| {
        if v.queue(&name).is_none() {
            return not_found();
        }
        if !permits(&b, user, &vhost, &[required::queue_delete(&name)]) {
            return access_refused();
        }
        match v.delete_queue(
            &name,
            truthy(&q, "if-unused"),
            truthy(&q, "if-empty"),
            OPERATOR,
        ) {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => amqp_error(&e),
        }
    });
    once_durable(&b, reply).await
}

async fn purge_queue(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    let reply = in_vhost(&b, &headers, peer, &vhost, |user, v| {
        let Some(q) = v.queue(&name) else {
            return not_found();
        };
        if !permits(&b, user, &vhost, &[required::queue_purge(&name)]) {
            return access_refused();
        }
        q.purge();
        StatusCode::NO_CONTENT.into_response()
    });
    once_durable(&b, reply).await
}

// ----- exchanges -----------------------------------------------------------------------

fn exchanges_response(vhosts: &[Arc<VHost>]) -> Response {
    listing(vhosts, |v| {
        let mut xs = v.exchanges();
        xs.sort_by(|a, b| a.name.cmp(&b.name));
        xs.iter().map(|x| json::exchange(&v.name, x)).collect()
    })
}

async fn list_exchanges(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    in_entered_vhosts(&b, &headers, peer, exchanges_response)
}

async fn list_vhost_exchanges(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| {
        exchanges_response(std::slice::from_ref(v))
    })
}

async fn get_exchange(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| match v.exchange(&name) {
        Some(x) => Json(json::exchange(&vhost, &x)).into_response(),
        None => not_found(),
    })
}

/// Checks in RabbitMQ's order, as for queues: the permissions are those
/// exchange.declare needs over AMQP.
async fn put_exchange(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (user, v) = match authorize_in_vhost(&b, &headers, peer, &vhost) {
        Ok(found) => found,
        Err(denied) => return denied.into_response(),
    };
    if let Err(e) = warren_broker::names::check_short("exchange name", &name) {
        return bad_request(&e);
    }
    let Some(v) = v else {
        return vhost_not_found();
    };
    let Some(fields) = body_object(&body) else {
        return bad_request("not_json");
    };
    let arguments = match json_to_table(fields.get("arguments")) {
        Ok(t) => t,
        Err(e) => return bad_request(&e),
    };
    if name.is_empty() || name.starts_with("amq.") {
        return access_refused();
    }
    if !permits(
        &b,
        &user,
        &vhost,
        &required::exchange_declare(&name, &arguments),
    ) {
        return access_refused();
    }
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
    let reply = in_vhost(&b, &headers, peer, &vhost, |user, v| {
        if v.exchange(&name).is_none() {
            return not_found();
        }
        if let Err(e) = v.check_exchange_deletable(&name) {
            return amqp_error(&e);
        }
        if !permits(&b, user, &vhost, &[required::exchange_delete(&name)]) {
            return access_refused();
        }
        match v.delete_exchange(&name, truthy(&q, "if-unused")) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => amqp_error(&e),
        }
    });
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
    in_entered_vhosts(&b, &headers, peer, |vhosts| {
        Json(bindings_of(vhosts, |_, _| true)).into_response()
    })
}

async fn list_vhost_bindings(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| {
        Json(bindings_of(std::slice::from_ref(v), |_, _| true)).into_response()
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

/// What binding or unbinding `source` to `dest` needs, as over AMQP.
fn binding_checks(source: &str, dest: &Dest) -> Vec<Check> {
    match dest {
        Dest::Queue(q) => required::binding(Resource::Queue, q, source),
        Dest::Exchange(x) => required::binding(Resource::Exchange, x, source),
    }
}

async fn get_bindings_between(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest)): Path<(String, String, String, String)>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| {
        let Some(d) = destination(&kind, &dest) else {
            return not_found();
        };
        let list = bindings_of(std::slice::from_ref(v), |s, x| s == source && *x == d);
        Json(list).into_response()
    })
}

async fn get_binding(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Response {
    in_vhost(&b, &headers, peer, &vhost, |_, v| {
        let Some(d) = destination(&kind, &dest) else {
            return not_found();
        };
        bindings_of(std::slice::from_ref(v), |s, x| s == source && *x == d)
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
    let reply = in_vhost(&b, &headers, peer, &vhost, |user, v| {
        let Some(d) = destination(&kind, &dest) else {
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
        if !permits(&b, user, &vhost, &binding_checks(&source, &d)) {
            return access_refused();
        }
        match v.bind(&source, d, &key, &args, OPERATOR) {
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
        }
    });
    once_durable(&b, reply).await
}

async fn delete_binding(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> Response {
    let reply = in_vhost(&b, &headers, peer, &vhost, |user, v| {
        let (Some(d), Some(x)) = (destination(&kind, &dest), v.exchange(&source)) else {
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
        if !permits(&b, user, &vhost, &binding_checks(&source, &dd)) {
            return access_refused();
        }
        match v.unbind(&source, dd, &key, &args, OPERATOR) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => amqp_error(&e),
        }
    });
    once_durable(&b, reply).await
}
