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

/// A binary as Erlang's `~p` prints it (RabbitMQ's frame error texts):
/// `<<"text">>` when every byte is printable, `<<0,60,...>>` otherwise.
pub fn erlang_binary(b: &[u8]) -> String {
    let printable = !b.is_empty()
        && b.iter().all(|c| {
            (32..127).contains(c) || matches!(c, b'\n' | b'\r' | b'\t' | 8 | 11 | 12 | 27)
        });
    if printable {
        let mut s = String::from("<<\"");
        for &c in b {
            match c {
                b'"' => s.push_str("\\\""),
                b'\\' => s.push_str("\\\\"),
                b'\n' => s.push_str("\\n"),
                b'\r' => s.push_str("\\r"),
                b'\t' => s.push_str("\\t"),
                8 => s.push_str("\\b"),
                11 => s.push_str("\\v"),
                12 => s.push_str("\\f"),
                27 => s.push_str("\\e"),
                c => s.push(c as char),
            }
        }
        s.push_str("\">>");
        s
    } else {
        let parts: Vec<String> = b.iter().map(|c| c.to_string()).collect();
        format!("<<{}>>", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erlang_binaries() {
        assert_eq!(super::erlang_binary(b""), "<<>>");
        assert_eq!(super::erlang_binary(b"xx"), "<<\"xx\">>");
        assert_eq!(super::erlang_binary(&[0, 60, 0, 10]), "<<0,60,0,10>>");
    }
}
