//! HTTP basic auth against the broker's users, with RabbitMQ's rules and
//! replies: management tags to use the API, `administrator` to change users,
//! vhosts and permissions, loopback-only users only from loopback.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use warren_broker::access::User;
use warren_broker::Broker;

use crate::json::error_body;

/// What the caller must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Management,
    Administrator,
}

/// Why a request was refused (turned into RabbitMQ's reply by `IntoResponse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    NoCredentials,
    LoginFailed,
    NotManagement,
    NotAdministrator,
    /// May not enter the vhost the request names (no permissions there).
    NotInVHost,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (error, reason) = match self {
            Denied::NoCredentials => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        "Basic realm=\"RabbitMQ Management\"",
                    )],
                )
                    .into_response()
            }
            Denied::LoginFailed => ("not_authorized", "Login failed"),
            Denied::NotManagement => ("not_authorised", "Not management user"),
            Denied::NotAdministrator => ("not_authorised", "Not administrator user"),
            Denied::NotInVHost => (
                "not_authorised",
                "User not authorised to access virtual host",
            ),
        };
        error_body(StatusCode::UNAUTHORIZED, error, reason)
    }
}

/// Check the request's credentials; the user, or why not.
pub fn authorize(
    broker: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
    need: Need,
) -> Result<Arc<User>, Denied> {
    let (name, password) = basic_credentials(headers).ok_or(Denied::NoCredentials)?;
    if broker.authenticate(&name, &password, peer.ip()).is_err() {
        tracing::warn!(user = %name, %peer, "management API login refused");
        return Err(Denied::LoginFailed);
    }
    let user = broker.access.user(&name).ok_or(Denied::LoginFailed)?;
    if !user.is_management() {
        return Err(Denied::NotManagement);
    }
    if need == Need::Administrator && !user.has_tag("administrator") {
        return Err(Denied::NotAdministrator);
    }
    Ok(user)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}
