//! `warren-perf`: a load-testing tool for AMQP 0-9-1 brokers (Warren and RabbitMQ).
//!
//! The data path runs on a minimal hand-written client ([`client`] for the
//! handshake and setup methods, [`proto`] for the per-message frames) so that the
//! tool costs far less per message than the broker it measures.
pub mod cli;
pub mod client;
pub mod engine;
pub mod hist;
pub mod proto;
pub mod report;
pub mod scenario;
pub mod sys;
pub mod url;

/// An error with a message that says what went wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(format!("I/O error: {e}"))
    }
}

impl From<proto::ProtoError> for Error {
    fn from(e: proto::ProtoError) -> Self {
        Error(format!("protocol error from broker: {e}"))
    }
}

impl Error {
    /// Prefix the message with what was being done.
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        Error(format!("{what}: {}", self.0))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// `Err(Error(format!(...)))`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::Error(format!($($t)*))) };
}
