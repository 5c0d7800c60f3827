//! Errors found while decoding bytes from a client.

use thiserror::Error;

/// A framing error: always fatal for the connection (501 FRAME_ERROR).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// `size` counts the payload only; `max` is the negotiated frame_max.
    #[error(
        "frame of type {kind} with a {size}-byte payload exceeds the negotiated frame_max {max}"
    )]
    TooLarge { kind: u8, size: u64, max: u32 },
    /// Texts follow RabbitMQ, which prints the frame as Erlang terms.
    #[error(
        "type {kind}, all octets = {}: {{invalid_frame_end_marker,{end}}}",
        crate::reply::erlang_binary(payload)
    )]
    BadFrameEnd {
        kind: u8,
        payload: bytes::Bytes,
        end: u8,
    },
    #[error(
        "type {kind}, all octets = {}: unknown_frame",
        crate::reply::erlang_binary(payload)
    )]
    UnknownType { kind: u8, payload: bytes::Bytes },
}

/// A method frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MethodError {
    /// Class or method id this server does not know (503 COMMAND_INVALID).
    #[error("unknown method {class_id}.{method_id}")]
    Unknown { class_id: u16, method_id: u16 },
    /// Truncated or malformed arguments (502 SYNTAX_ERROR).
    #[error("malformed arguments for method {class_id}.{method_id}")]
    Syntax { class_id: u16, method_id: u16 },
    /// A field table nested deeper than [`crate::table_guard::MAX_DEPTH`] (502 SYNTAX_ERROR).
    #[error("field table nested too deeply in method {class_id}.{method_id}")]
    TooDeep { class_id: u16, method_id: u16 },
}

impl MethodError {
    pub fn ids(&self) -> (u16, u16) {
        match *self {
            MethodError::Unknown {
                class_id,
                method_id,
            }
            | MethodError::Syntax {
                class_id,
                method_id,
            }
            | MethodError::TooDeep {
                class_id,
                method_id,
            } => (class_id, method_id),
        }
    }
}
