//! Regression test found by the `connection` fuzz target's seeds (for the
//! maintainers to move to `crates/warren-broker/tests/`; it uses only public API).
//!
//! A publisher controls the `x-death` header of its own messages. When such a
//! message is dead-lettered again for the same (queue, reason), the broker does
//! `count + 1` on the client-supplied `count` (queue/dead_letter.rs, in
//! `dead_lettered`): with `count = i64::MAX` that is an arithmetic overflow —
//! a panic in any build with overflow checks (debug builds, `cargo test`,
//! fuzzing), a silent wrap to `i64::MIN` in release builds.
//!
//! Stack (`cargo test`, warren 311d222):
//!   panicked at crates/warren-broker/src/queue/dead_letter.rs:144:61: attempt to add with overflow
//!   2: core::panicking::panic_const::panic_const_add_overflow
//!   3: warren_broker::queue::dead_letter::dead_lettered            queue/dead_letter.rs:144:61
//!   4: warren_broker::queue::Queue::dispose                        queue/dead_letter.rs:61:17
//!   5: warren_broker::queue::Queue::reject                         queue/mod.rs:665:14
//!   6: warren_broker::connection::Connection::settle_taken         connection/consume.rs:258:23
//!   7: warren_broker::connection::Connection::on_ack               connection/consume.rs:186:14
//!   8: warren_broker::connection::Connection::handle_channel_method connection/channel.rs:213:71
//!   9: warren_broker::connection::Connection::handle_frame         connection/mod.rs:251:42
//!  10: warren_broker::connection::Connection::handle_input         connection/mod.rs:207:41
//!
//! Suggested fix: `count.saturating_add(1)` (and the same care wherever a header
//! value from the client feeds arithmetic).

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

/// channel.open 1; queue.declare "dlq"; queue.declare "q" {x-dead-letter-exchange: "",
/// x-dead-letter-routing-key: "dlq"}; basic.publish "" "q" with headers
/// {x-death: [{count: l 0x7fffffffffffffff, reason: "rejected", queue: "q"}]}, body "x";
/// basic.get "q" (ack mode) -> tag 1; basic.reject 1 requeue=false; basic.get "dlq" no-ack.
const TRAFFIC: &str = "
010001000000050014000a00ce0100010000000f0032000a000003646c710000000000ce0100010000004b0032000a00
000171000000003e16782d646561642d6c65747465722d65786368616e6765530000000019782d646561642d6c657474
65722d726f7574696e672d6b65795300000003646c71ce0100010000000a003c0028000000017100ce02000100000053
003c0000000000000000000120000000004107782d64656174684100000034460000002f05636f756e746c7fffffffff
ffffff06726561736f6e530000000872656a6563746564057175657565530000000171ce0300010000000178ce010001
00000009003c00460000017100ce0100010000000d003c005a000000000000000100ce0100010000000b003c00460000
03646c7101ce";

#[test]
fn dead_lettering_a_message_with_x_death_count_i64_max_does_not_panic() {
    let broker = Broker::new(Config::default());
    let (handle, mut inbox) = broker.register_connection();
    let now = Instant::now();
    let mut c = Connection::new(broker.clone(), handle, "127.0.0.1:40000".parse().unwrap(), now);
    let mut out = BytesMut::new();
    for part in [HANDSHAKE, TRAFFIC] {
        // One frame at a time, pumping deliveries in between, as the driver does.
        let mut buf = BytesMut::from(&unhex(part)[..]);
        c.handle_input(&mut buf, now); // panics here before the fix
        while let Ok(ev) = inbox.try_recv() {
            c.handle_event(ev, now);
        }
        if let Some(o) = c.take_output(now) {
            out.extend_from_slice(&o);
        }
    }
    assert!(!c.is_closed());
    // The dead-lettered message is not lost: the last get on "dlq" returns its body.
    let mut bodies = Vec::new();
    while let Some(f) = decode_frame(&mut out, 0).unwrap() {
        if let Frame::Body { payload, .. } = f {
            bodies.push(payload);
        }
    }
    assert_eq!(bodies.len(), 2, "one body from get q, one from get dlq");
    assert_eq!(&bodies[1][..], b"x");
}
