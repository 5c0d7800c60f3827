//! The HTTP management API, in RabbitMQ's shape (`/api/...` on port 15672 with
//! HTTP basic auth), so `rabbitmqadmin`, curl scripts and test harnesses written
//! for RabbitMQ manage Warren unchanged.
//!
//! Covered: overview, whoami, vhosts, users, permissions, definitions, and
//! queues, exchanges and bindings (list, declare, delete, purge, bind), each
//! visible and changeable only as RabbitMQ 3.10.8 allows the user. Handlers
//! are thin: the verbs live in `warren_broker::admin` and the vhosts.
#![forbid(unsafe_code)]

mod auth;
mod definitions;
mod json;
mod routes;
mod topology;
mod vhost_access;

use std::sync::Arc;

use tokio::net::TcpListener;

/// Serve the API on `listener` until `shutdown` resolves.
pub async fn serve(
    broker: Arc<warren_broker::Broker>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = routes::router(broker);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
