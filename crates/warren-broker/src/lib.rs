//! Warren's broker core: virtual hosts, exchanges, queues, consumers, and the
//! connection and channel state machines, plus the tokio driver that runs them.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod alarm;
pub mod broker;
pub mod connection;
pub mod definitions;
pub mod delayed;
pub mod disk;
pub mod error;
pub mod exchange;
pub mod memory;
pub mod message;
pub mod names;
pub mod persist;
pub mod queue;
mod recovery;
pub mod server;
pub mod vhost;
mod vhost_delayed;

pub use broker::{Broker, Config};
pub use server::{Server, ServerHandle};
