//! Routes and handlers. Each handler authorizes, calls one broker verb and
//! shapes the reply as RabbitMQ does (201 created, 204 updated or deleted,
//! 404 with a JSON body, 400 `bad_request` with a reason).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use warren_broker::admin::{AdminError, PasswordChange};
use warren_broker::vhost::VHostMeta;
use warren_broker::Broker;

use crate::auth::{authorize, Need};
use crate::json::{self, bad_request, not_found};
use crate::vhost_access::visible_vhosts;

pub(crate) type Shared = State<Arc<Broker>>;
pub(crate) type Peer = ConnectInfo<SocketAddr>;

pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/vhosts", get(list_vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(get_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/users", get(list_users))
        .route(
            "/api/users/{user}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .merge(crate::topology::routes())
        .merge(crate::definitions::routes())
        .with_state(broker)
}

/// Run `f` if the caller is authorized.
pub(crate) fn guarded(
    broker: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
    need: Need,
    f: impl FnOnce(&Broker) -> Response,
) -> Response {
    match authorize(broker, headers, peer, need) {
        Ok(_) => f(broker),
        Err(denied) => denied.into_response(),
    }
}

/// A request body as a JSON object; an empty body is an empty object.
pub(crate) fn body_object(body: &Bytes) -> Option<serde_json::Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Answer a change only once it is on disk, as RabbitMQ answers after its
/// database write: a 2xx reply means the change survives a crash.
pub(crate) async fn once_durable(b: &Broker, reply: Response) -> Response {
    if !reply.status().is_success() || b.definitions_on_disk().await {
        return reply;
    }
    tracing::error!("a definition change could not be written to the store");
    json::error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the change could not be written to the store; see the broker log",
    )
}

pub(crate) fn created_or_updated(created: bool) -> Response {
    if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn admin_result(r: Result<(), AdminError>) -> Response {
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(AdminError::NotFound) => not_found(),
        Err(AdminError::BadRequest(reason)) => bad_request(&reason),
    }
}

// ----- overview --------------------------------------------------------------------

async fn overview(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let user = match authorize(&b, &headers, peer, Need::Management) {
        Ok(u) => u,
        Err(denied) => return denied.into_response(),
    };
    // Totals over the vhosts the user may see (every vhost for monitors).
    let vhosts = visible_vhosts(&b, &user);
    let queues: usize = vhosts.iter().map(|v| v.queues().len()).sum();
    let exchanges: usize = vhosts.iter().map(|v| v.exchanges().len()).sum();
    let version = &b.config.server_version;
    Json(json!({
        "management_version": version,
        "rabbitmq_version": version,
        "product_name": b.config.server_product,
        "product_version": version,
        "cluster_name": "warren",
        "node": json::NODE,
        "warren_version": env!("CARGO_PKG_VERSION"),
        "object_totals": {
            "connections": b.connection_count(),
            "queues": queues,
            "exchanges": exchanges,
        },
    }))
    .into_response()
}

async fn whoami(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    match authorize(&b, &headers, peer, Need::Management) {
        Ok(u) => Json(json!({ "name": u.name, "tags": u.tags })).into_response(),
        Err(denied) => denied.into_response(),
    }
}

// ----- vhosts ----------------------------------------------------------------------

async fn list_vhosts(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    let user = match authorize(&b, &headers, peer, Need::Management) {
        Ok(u) => u,
        Err(denied) => return denied.into_response(),
    };
    let list: Vec<Value> = visible_vhosts(&b, &user)
        .iter()
        .map(|v| json::vhost(v))
        .collect();
    Json(list).into_response()
}

async fn get_vhost(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        match b.vhost(&name) {
            Some(v) => Json(json::vhost(&v)).into_response(),
            None => not_found(),
        }
    })
}

async fn put_vhost(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let user = match authorize(&b, &headers, peer, Need::Administrator) {
        Ok(u) => u,
        Err(denied) => return denied.into_response(),
    };
    {
        if let Err(e) = warren_broker::names::check_short("vhost name", &name) {
            return bad_request(&e);
        }
        let Some(fields) = body_object(&body) else {
            return bad_request("not_json");
        };
        let description = fields
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let meta = VHostMeta {
            description,
            tags: warren_broker::definitions::tags(fields.get("tags")),
        };
        let created = b.put_vhost(&name, meta);
        if created {
            // As in RabbitMQ, whoever creates a vhost gets full permissions on it.
            let _ = b.set_permissions(&name, &user.name, ".*", ".*", ".*");
        }
        once_durable(&b, created_or_updated(created)).await
    }
}

async fn delete_vhost(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        admin_result(b.delete_vhost(&name))
    });
    once_durable(&b, reply).await
}

async fn vhost_permissions(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        if b.vhost(&name).is_none() {
            return not_found();
        }
        permissions_where(b, |v, _| v == name)
    })
}

// ----- users -----------------------------------------------------------------------

async fn list_users(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        let list: Vec<Value> = b.access.users().iter().map(|u| json::user(u)).collect();
        Json(list).into_response()
    })
}

async fn get_user(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        match b.access.user(&name) {
            Some(u) => Json(json::user(&u)).into_response(),
            None => not_found(),
        }
    })
}

async fn put_user(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        let Some(fields) = body_object(&body) else {
            return bad_request("not_json");
        };
        let Some(tags) = fields.get("tags") else {
            return bad_request("tags_not_present");
        };
        if let Some(alg) = fields.get("hashing_algorithm").and_then(Value::as_str) {
            if alg != warren_broker::access::password::SHA256 {
                return bad_request(&format!(
                    "unsupported hashing_algorithm '{alg}' (Warren stores {})",
                    warren_broker::access::password::SHA256
                ));
            }
        }
        let password = match (fields.get("password"), fields.get("password_hash")) {
            (Some(Value::String(p)), _) => PasswordChange::Password(p.clone()),
            (_, Some(Value::String(h))) => PasswordChange::Hash(h.clone()),
            _ => PasswordChange::Keep,
        };
        match b.put_user(
            &name,
            password,
            warren_broker::definitions::tags(Some(tags)),
        ) {
            Ok(created) => created_or_updated(created),
            Err(AdminError::BadRequest(r)) => bad_request(&r),
            Err(AdminError::NotFound) => not_found(),
        }
    });
    once_durable(&b, reply).await
}

async fn delete_user(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        admin_result(b.delete_user(&name))
    });
    once_durable(&b, reply).await
}

async fn user_permissions(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        if b.access.user(&name).is_none() {
            return not_found();
        }
        permissions_where(b, |_, u| u == name)
    })
}

// ----- permissions -----------------------------------------------------------------

fn permissions_where(b: &Broker, keep: impl Fn(&str, &str) -> bool) -> Response {
    let list: Vec<Value> = b
        .access
        .permissions()
        .iter()
        .filter(|(v, u, _)| keep(v, u))
        .map(|(v, u, p)| json::permission(v, u, p))
        .collect();
    Json(list).into_response()
}

async fn list_permissions(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        permissions_where(b, |_, _| true)
    })
}

async fn get_permission(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        match b.access.permission(&vhost, &user) {
            Some(p) => Json(json::permission(&vhost, &user, &p)).into_response(),
            None => not_found(),
        }
    })
}

async fn put_permission(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        let Some(fields) = body_object(&body) else {
            return bad_request("not_json");
        };
        let keys = ["configure", "write", "read"];
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| !fields.contains_key(**k))
            .map(|k| format!("{{key_missing,{k}}}"))
            .collect();
        if !missing.is_empty() {
            return bad_request(&format!("[{}]", missing.join(",")));
        }
        let field = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
        match b.set_permissions(
            &vhost,
            &user,
            field("configure"),
            field("write"),
            field("read"),
        ) {
            Ok(created) => created_or_updated(created),
            Err(AdminError::BadRequest(r)) => bad_request(&r),
            Err(AdminError::NotFound) => not_found(),
        }
    });
    once_durable(&b, reply).await
}

async fn delete_permission(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        admin_result(b.clear_permissions(&vhost, &user))
    });
    once_durable(&b, reply).await
}
