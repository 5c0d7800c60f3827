//! Regression tests (for the maintainers to move to `crates/warren-broker/tests/`;
//! public API only). Found while writing the `table_guard` differential.
//!
//! `ContentHeader::parse` accepts a headers table whose keys are not UTF-8
//! (`table_guard::check_table` checks shape and depth, not key bytes — and
//! RabbitMQ accepts such keys too, its short strings are binary), but
//! amq-protocol's `parse_properties` refuses it, so `ContentHeader::properties()`
//! and `headers()` return `None` for such a message, and the broker treats
//! "could not decode the headers" as "has no headers":
//!
//! 1. dead-lettering drops the message (`queue/dead_letter.rs`, `dead_lettered`:
//!    `let props = m.header.properties()?;` → `None` → `dispose` does `continue`):
//!    a rejected message never reaches the dead-letter queue. Data loss.
//! 2. sender-selected distribution is skipped (`message.rs`, `sender_selected`:
//!    `header.properties()` → `None` → returns the header unchanged, no keys):
//!    the BCC queue gets nothing, and the `BCC` header, which RabbitMQ always
//!    removes, is delivered to every consumer.
//!
//! (Likely the same for headers-exchange routing, `vhost.rs` `LazyHeaders`, and
//! `x-death` cycle detection: not checked here.)
//!
//! No panic: these are "loses data" bugs. Each test has a control showing the
//! same traffic works when the extra key is `k` instead of the byte 0xFF.

use std::time::Instant;

use bytes::BytesMut;
use warren_broker::connection::Connection;
use warren_broker::{Broker, Config};
use warren_codec::frame::{decode_frame, Frame};

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Protocol header, start-ok PLAIN guest/guest, tune-ok (2047, 131072, 0), open "/".
const HANDSHAKE: &str = "
414d515000000901010000000000be000a000b0000009a0c6361706162696c6974696573460000006f1c61757468
656e7469636174696f6e5f6661696c7572655f636c6f736574010a62617369632e6e61636b740112636f6e6e6563
74696f6e2e626c6f636b6564740116636f6e73756d65725f63616e63656c5f6e6f746966797401127075626c6973
6865725f636f6e6669726d7374010f636f6e6e656374696f6e5f6e616d65530000000466757a7a05504c41494e00
00000c00677565737400677565737405656e5f5553ce0100000000000c000a001f07ff000200000000ce01000000
000008000a0028012f0000ce";

/// Send `traffic` after the handshake; return the (header payload, body) of every
/// message the broker sent back.
fn run(traffic: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let broker = Broker::new(Config::default());
    let (handle, mut inbox) = broker.register_connection();
    let now = Instant::now();
    let mut c = Connection::new(broker.clone(), handle, "127.0.0.1:40000".parse().unwrap(), now);
    let mut out = BytesMut::new();
    for part in [unhex(HANDSHAKE), traffic.to_vec()] {
        let mut buf = BytesMut::from(&part[..]);
        c.handle_input(&mut buf, now);
        while let Ok(ev) = inbox.try_recv() {
            c.handle_event(ev, now);
        }
        if let Some(o) = c.take_output(now) {
            out.extend_from_slice(&o);
        }
    }
    assert!(!c.is_closed());
    let mut messages = Vec::new();
    let mut header = None;
    while let Some(f) = decode_frame(&mut out, 0).unwrap() {
        match f {
            Frame::Header { payload, .. } => header = Some(payload.to_vec()),
            Frame::Body { payload, .. } => messages.push((header.take().unwrap(), payload.to_vec())),
            _ => {}
        }
    }
    messages
}

/// channel.open 1; queue.declare "dlq"; queue.declare "q" {x-dead-letter-exchange: "",
/// x-dead-letter-routing-key: "dlq"}; basic.publish "" "q" with headers {0xFF: t true},
/// body "x"; basic.get "q" (ack mode) -> tag 1; basic.reject 1 requeue=false;
/// basic.get "dlq" no-ack.
const DEAD_LETTER: &str = "
010001000000050014000a00ce0100010000000f0032000a000003646c710000000000ce0100010000004b0032000a00
000171000000003e16782d646561642d6c65747465722d65786368616e6765530000000019782d646561642d6c657474
65722d726f7574696e672d6b65795300000003646c71ce0100010000000a003c0028000000017100ce02000100000016
003c0000000000000000000120000000000401ff7401ce0300010000000178ce01000100000009003c00460000017100
ce0100010000000d003c005a000000000000000100ce0100010000000b003c0046000003646c7101ce";

#[test]
fn rejected_message_with_a_non_utf8_header_key_is_dead_lettered() {
    let bad = unhex(DEAD_LETTER);
    // Control: the same traffic with the key "k" (0x6b) instead of 0xFF.
    let ok = String::from_utf8(DEAD_LETTER.split_whitespace().collect::<Vec<_>>().concat().into_bytes())
        .unwrap()
        .replace("0401ff7401", "04016b7401");
    let control = run(&unhex(&ok));
    assert_eq!(control.len(), 2, "control: get q, then get dlq");
    let got = run(&bad);
    // Before the fix: only the first get returns a message; the dead-lettered copy is gone.
    assert_eq!(got.len(), 2, "the rejected message was dropped instead of dead-lettered");
    assert_eq!(got[1].1, b"x");
}

/// channel.open 1; queue.declare "q"; queue.declare "q2"; basic.publish "" "q" with
/// headers {BCC: A["q2"], 0xFF: t true}, body "x"; basic.get "q" no-ack; basic.get "q2" no-ack.
const BCC: &str = "
010001000000050014000a00ce0100010000000d0032000a000001710000000000ce0100010000000e0032000a000002
71320000000000ce0100010000000a003c0028000000017100ce02000100000026003c00000000000000000001200000
0000140342434341000000075300000002713201ff7401ce0300010000000178ce01000100000009003c004600000171
01ce0100010000000a003c0046000002713201ce";

#[test]
fn bcc_is_honoured_and_stripped_when_another_header_key_is_not_utf8() {
    let ok = BCC.split_whitespace().collect::<Vec<_>>().concat().replace("01ff7401", "016b7401");
    let control = run(&unhex(&ok));
    assert_eq!(control.len(), 2, "control: the message in q and its BCC copy in q2");
    assert!(!control[0].0.windows(3).any(|w| w == b"BCC"), "control: BCC stripped");
    let got = run(&unhex(BCC));
    assert!(!got[0].0.windows(3).any(|w| w == b"BCC"), "the BCC header was delivered to the consumer of q");
    assert_eq!(got.len(), 2, "the BCC copy never reached q2");
}
