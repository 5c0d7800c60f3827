//! AMQP 0-9-1 framing and method codec for Warren.
//!
//! Pure: no sockets, no clock, no tokio. Bytes go in, frames and methods come out,
//! and outgoing frames are appended to a caller-owned [`bytes::BytesMut`].
//!
//! The split of work with `amq-protocol`:
//! - frames are cut by [`frame::decode_frame`], which checks the size against
//!   `frame_max` *before* buffering a payload, and hands out bodies as zero-copy
//!   [`bytes::Bytes`] slices of the read buffer;
//! - field tables are depth-checked by [`table_guard`] before `amq-protocol`
//!   (whose parser recurses without limit) ever sees them;
//! - the per-message hot path (`basic.publish`, `basic.ack`/`nack`/`reject` in,
//!   `basic.deliver`, `basic.get-ok`, `basic.return`, confirms out) is hand-written in
//!   [`hot`]; everything else goes through `amq-protocol`'s generated code.
#![forbid(unsafe_code)]

pub mod content;
pub mod error;
pub mod frame;
pub mod hot;
pub mod method;
pub mod raw_table;
pub mod reply;
pub mod table_guard;

pub use amq_protocol::protocol::{self as spec, AMQPClass};
pub use amq_protocol::types;
pub use content::{Content, ContentHeader};
pub use error::{FrameError, MethodError};
pub use frame::{decode_frame, Frame, PROTOCOL_HEADER};
pub use method::{decode_method, decode_method_bytes, encode_method, Method};
