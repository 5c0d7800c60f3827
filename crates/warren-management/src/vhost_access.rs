//! Which vhosts a management user may look into, by RabbitMQ 3.10.8's rules
//! (`rabbit_mgmt_util`): an administrator enters every vhost, anyone else
//! the vhosts they may log in to (hold permissions in). Monitors (and
//! administrators) also learn every vhost's name and the broker's totals.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use warren_broker::access::User;
use warren_broker::vhost::VHost;
use warren_broker::Broker;

use crate::auth::{authorize, Denied, Need};

/// RabbitMQ's `is_monitor`: sees the whole broker's names and totals.
pub fn is_monitor(user: &User) -> bool {
    user.has_tag("administrator") || user.has_tag("monitoring")
}

/// Whether the user may see into (and, permissions allowing, change) `vhost`.
pub fn may_enter(b: &Broker, user: &User, vhost: &str) -> bool {
    user.has_tag("administrator") || b.access.permission(vhost, &user.name).is_some()
}

/// The vhosts whose queues, exchanges and bindings the user's listings show
/// (RabbitMQ's `filter_vhost`).
pub fn entered_vhosts(b: &Broker, user: &User) -> Vec<Arc<VHost>> {
    let mut vhosts = b.vhosts();
    vhosts.retain(|v| may_enter(b, user, &v.name));
    vhosts
}

/// The vhosts the user learns of in `/api/vhosts` and the overview's totals
/// (RabbitMQ's `list_visible_vhosts`).
pub fn visible_vhosts(b: &Broker, user: &User) -> Vec<Arc<VHost>> {
    let mut vhosts = b.vhosts();
    if !is_monitor(user) {
        vhosts.retain(|v| b.access.permission(&v.name, &user.name).is_some());
    }
    vhosts
}

/// RabbitMQ's `is_authorized_vhost`: a management user who may enter
/// `vhost`. A vhost that does not exist is not a refusal: the caller gets
/// `None` and answers 404 as RabbitMQ does.
pub fn authorize_in_vhost(
    b: &Broker,
    headers: &HeaderMap,
    peer: SocketAddr,
    vhost: &str,
) -> Result<(Arc<User>, Option<Arc<VHost>>), Denied> {
    let user = authorize(b, headers, peer, Need::Management)?;
    match b.vhost(vhost) {
        None => Ok((user, None)),
        Some(v) if may_enter(b, &user, vhost) => Ok((user, Some(v))),
        Some(_) => Err(Denied::NotInVHost),
    }
}
