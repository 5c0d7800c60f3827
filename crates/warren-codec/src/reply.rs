//! AMQP reply codes, from one table, with the names RabbitMQ prefixes its reply texts with.

/// A reply code as sent in `channel.close` / `connection.close` / `basic.return`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyCode(pub u16);

macro_rules! reply_codes {
    ($($name:ident = $value:expr, $text:expr, $hard:expr;)*) => {
        impl ReplyCode {
            $(pub const $name: ReplyCode = ReplyCode($value);)*

            /// The constant name RabbitMQ puts before " - " in reply texts.
            pub fn name(self) -> &'static str {
                match self.0 { $($value => $text,)* _ => "UNKNOWN" }
            }

            /// Whether the code closes the whole connection rather than one channel.
            pub fn is_hard(self) -> bool {
                match self.0 { $($value => $hard,)* _ => true }
            }
        }
    };
}

reply_codes! {
    REPLY_SUCCESS = 200, "REPLY_SUCCESS", false;
    CONTENT_TOO_LARGE = 311, "CONTENT_TOO_LARGE", false;
    NO_ROUTE = 312, "NO_ROUTE", false;
    NO_CONSUMERS = 313, "NO_CONSUMERS", false;
    CONNECTION_FORCED = 320, "CONNECTION_FORCED", true;
    INVALID_PATH = 402, "INVALID_PATH", true;
    ACCESS_REFUSED = 403, "ACCESS_REFUSED", false;
    NOT_FOUND = 404, "NOT_FOUND", false;
    RESOURCE_LOCKED = 405, "RESOURCE_LOCKED", false;
    PRECONDITION_FAILED = 406, "PRECONDITION_FAILED", false;
    FRAME_ERROR = 501, "FRAME_ERROR", true;
    SYNTAX_ERROR = 502, "SYNTAX_ERROR", true;
    COMMAND_INVALID = 503, "COMMAND_INVALID", true;
    CHANNEL_ERROR = 504, "CHANNEL_ERROR", true;
    UNEXPECTED_FRAME = 505, "UNEXPECTED_FRAME", true;
    RESOURCE_ERROR = 506, "RESOURCE_ERROR", true;
    NOT_ALLOWED = 530, "NOT_ALLOWED", true;
    NOT_IMPLEMENTED = 540, "NOT_IMPLEMENTED", true;
    INTERNAL_ERROR = 541, "INTERNAL_ERROR", true;
}
