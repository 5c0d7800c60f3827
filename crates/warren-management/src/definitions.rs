//! `/api/definitions`: export and import in RabbitMQ's JSON format
//! (administrators only).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use warren_broker::{definitions, Broker};

use crate::auth::Need;
use crate::json::{bad_request, not_found};
use crate::routes::{guarded, once_durable, Peer, Shared};

pub fn routes() -> Router<Arc<Broker>> {
    Router::new()
        .route("/api/definitions", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

async fn export_all(State(b): Shared, ConnectInfo(peer): Peer, headers: HeaderMap) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        Json(definitions::export(b, None)).into_response()
    })
}

async fn export_vhost(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Response {
    guarded(&b, &headers, peer, Need::Administrator, |b| {
        if b.vhost(&vhost).is_none() {
            return not_found();
        }
        Json(definitions::export(b, Some(&vhost))).into_response()
    })
}

fn import(b: &Broker, body: &Bytes, vhost: Option<&str>) -> Response {
    if vhost.is_some_and(|v| b.vhost(v).is_none()) {
        return not_found();
    }
    let Ok(defs) = serde_json::from_slice::<serde_json::Value>(body) else {
        return bad_request("failed_to_parse_json");
    };
    match definitions::import(b, &defs, vhost) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad_request(&e),
    }
}

async fn import_all(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        import(b, &body, None)
    });
    once_durable(&b, reply).await
}

async fn import_vhost(
    State(b): Shared,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    body: Bytes,
) -> Response {
    let reply = guarded(&b, &headers, peer, Need::Administrator, |b| {
        import(b, &body, Some(&vhost))
    });
    once_durable(&b, reply).await
}
