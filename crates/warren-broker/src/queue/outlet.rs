//! What a queue needs of the outside: a consumer's connection ([`Outlet`])
//! and the vhost that holds the queue ([`Home`]). The connection and the
//! vhost implement these, so the queue imports neither of them.

use std::sync::Arc;

use super::{Queue, QueuedMessage};
use crate::message::Message;

/// A connection's id, unique for the life of the broker.
pub type ConnectionId = u64;

/// A message on its way to a consumer's connection.
#[derive(Debug)]
pub struct Handover {
    pub channel: u16,
    pub consumer_tag: Arc<str>,
    pub no_ack: bool,
    pub queue: Arc<Queue>,
    pub message: QueuedMessage,
}

/// A consumer's connection, as its queues see it.
pub trait Outlet: Send + Sync + std::fmt::Debug {
    fn connection_id(&self) -> ConnectionId;
    /// Whether the connection may take another delivery now (its buffer is
    /// not full); a connection that says no wakes its queues when it drains.
    fn has_room_for_delivery(&self) -> bool;
    /// Queue a delivery; it comes back if the connection is gone.
    fn hand_over(&self, delivery: Handover) -> Result<(), Handover>;
    /// The queue behind a consumer went away (server-sent `basic.cancel`).
    fn consumer_cancelled(&self, channel: u16, consumer_tag: Arc<str>);
    /// A `basic.get` that had to wait for a read may ask again.
    fn get_ready(&self, channel: u16);
}

/// The vhost that holds a queue.
pub trait Home: Send + Sync {
    /// Route a dead-lettered message through `exchange`: `targets` gets the
    /// queues it reaches. False if there is no such exchange (the message is
    /// then dropped, as in RabbitMQ).
    fn route_dead_letter(
        &self,
        exchange: &str,
        message: &Message,
        targets: &mut Vec<Arc<Queue>>,
    ) -> bool;
    /// The queue expired (`x-expires`): remove it.
    fn remove_expired(&self, queue: &Arc<Queue>);
}
