//! Protocol errors: a reply code, RabbitMQ's reply text, and the method that failed.

use warren_codec::reply::ReplyCode;

/// An error to report to the client with `channel.close` or `connection.close`.
///
/// Whether it closes the channel or the connection follows from the code
/// ([`ReplyCode::is_hard`]), as in RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: ReplyCode,
    /// The full reply text, `"<CODE_NAME> - <detail>"`, as RabbitMQ formats it.
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
    /// The method ids are settled (possibly as "no method", 0,0) and `during` keeps them.
    method_fixed: bool,
}

impl AmqpError {
    pub fn new(code: ReplyCode, detail: impl std::fmt::Display) -> Self {
        AmqpError {
            code,
            text: format!("{} - {}", code.name(), detail),
            class_id: 0,
            method_id: 0,
            method_fixed: false,
        }
    }

    /// An error with a reply code and a text already formatted (e.g. from an operator).
    pub fn raw(code: ReplyCode, text: String) -> Self {
        AmqpError {
            code,
            text,
            class_id: 0,
            method_id: 0,
            method_fixed: true,
        }
    }

    /// Report no method (0,0) in the close frame, as RabbitMQ does for some errors.
    pub fn no_method(mut self) -> Self {
        self.method_fixed = true;
        self
    }

    /// Record which method caused the error (sent back in the close frame).
    pub fn during(mut self, (class_id, method_id): (u16, u16)) -> Self {
        if !self.method_fixed {
            self.class_id = class_id;
            self.method_id = method_id;
            self.method_fixed = true;
        }
        self
    }

    pub fn is_connection_error(&self) -> bool {
        self.code.is_hard()
    }

    pub fn access_refused(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::ACCESS_REFUSED, detail)
    }
    pub fn not_found(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::NOT_FOUND, detail)
    }
    pub fn resource_locked(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::RESOURCE_LOCKED, detail)
    }
    pub fn precondition_failed(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::PRECONDITION_FAILED, detail)
    }
    pub fn frame_error(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::FRAME_ERROR, detail)
    }
    pub fn syntax_error(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::SYNTAX_ERROR, detail)
    }
    pub fn command_invalid(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::COMMAND_INVALID, detail)
    }
    pub fn channel_error(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::CHANNEL_ERROR, detail)
    }
    pub fn unexpected_frame(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::UNEXPECTED_FRAME, detail)
    }
    pub fn not_allowed(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::NOT_ALLOWED, detail)
    }
    pub fn not_implemented(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::NOT_IMPLEMENTED, detail)
    }
    pub fn internal_error(detail: impl std::fmt::Display) -> Self {
        Self::new(ReplyCode::INTERNAL_ERROR, detail)
    }
}

impl std::fmt::Display for AmqpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text, self.code.0)
    }
}

impl std::error::Error for AmqpError {}

pub type AmqpResult<T> = Result<T, AmqpError>;
