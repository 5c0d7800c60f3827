//! Writes the seed corpora under `fuzz/seeds/<target>/`:
//! `cargo +nightly run --release --example gen_seeds` (from `fuzz/`).
//!
//! The seeds are valid traffic (publishes with headers and bodies, declares with
//! arguments, confirms, transactions, bindings, direct reply-to, ...), so the
//! fuzzer starts from deep inside the state machine instead of at the first byte.

use std::path::Path;

use amq_protocol::protocol::{basic, channel as ch, confirm, connection as conn, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use warren_codec::frame::{FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT};
use warren_fuzz::{channel_open, content_header, frame, handshake, long_str, method, publish, table, PROTOCOL_HEADER};

const F_CONTENT_TYPE: u16 = 1 << 15;
const F_HEADERS: u16 = 1 << 13;
const F_DELIVERY_MODE: u16 = 1 << 12;
const F_PRIORITY: u16 = 1 << 11;
const F_CORRELATION_ID: u16 = 1 << 10;
const F_REPLY_TO: u16 = 1 << 9;
const F_EXPIRATION: u16 = 1 << 8;
const F_MESSAGE_ID: u16 = 1 << 7;
const F_TIMESTAMP: u16 = 1 << 6;
const F_USER_ID: u16 = 1 << 4;

fn sstr(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn ft(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn ls(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn m(channel: u16, c: AMQPClass) -> Vec<u8> {
    method(channel, c)
}

fn declare_q(channel: u16, name: &str, args: FieldTable) -> Vec<u8> {
    m(channel, AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare { queue: name.into(), arguments: args, ..Default::default() })))
}

fn consume(channel: u16, q: &str, tag: &str, no_ack: bool, args: FieldTable) -> Vec<u8> {
    m(channel, AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume { queue: q.into(), consumer_tag: tag.into(), no_ack, arguments: args, ..Default::default() })))
}

fn get(channel: u16, q: &str, no_ack: bool) -> Vec<u8> {
    m(channel, AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get { queue: q.into(), no_ack })))
}

fn ack(channel: u16, tag: u64, multiple: bool) -> Vec<u8> {
    m(channel, AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: tag, multiple })))
}

fn rich_props() -> (u16, Vec<u8>) {
    let mut p = Vec::new();
    p.extend(sstr("text/plain"));
    p.extend(table(&[
        ("CC", b'A', &long_str(&[b'S', 0, 0, 0, 2, b'q', b'2'])),
        ("BCC", b'S', &long_str(b"q3")),
        ("x-count", b'I', &7i32.to_be_bytes()),
        ("nested", b'F', &table(&[("deep", b't', &[1])])),
    ]));
    p.push(2); // delivery mode
    p.push(5); // priority
    p.extend(sstr("corr-1"));
    p.extend(sstr("amq.rabbitmq.reply-to"));
    p.extend(sstr("60000"));
    p.extend(sstr("msg-1"));
    p.extend(1_700_000_000u64.to_be_bytes());
    p.extend(sstr("guest"));
    (
        F_CONTENT_TYPE | F_HEADERS | F_DELIVERY_MODE | F_PRIORITY | F_CORRELATION_ID | F_REPLY_TO | F_EXPIRATION | F_MESSAGE_ID | F_TIMESTAMP | F_USER_ID,
        p,
    )
}

/// Post-handshake client traffic, one scenario per seed.
fn scenarios() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let (rich_flags, rich) = rich_props();

    // Queue with arguments, publishes, get, consume, acks.
    let mut s = channel_open(1);
    s.extend(declare_q(1, "dlq", FieldTable::default()));
    s.extend(declare_q(
        1,
        "q",
        ft(&[
            ("x-max-length", AMQPValue::LongInt(5)),
            ("x-message-ttl", AMQPValue::LongInt(1000)),
            ("x-dead-letter-exchange", ls("")),
            ("x-dead-letter-routing-key", ls("dlq")),
            ("x-max-priority", AMQPValue::ShortShortUInt(10)),
            ("x-overflow", ls("reject-publish")),
        ]),
    ));
    s.extend(publish(1, "", "q", 0, &[], b"hello"));
    s.extend(publish(1, "", "q", F_DELIVERY_MODE | F_PRIORITY, &[2, 9], b"persistent"));
    s.extend(publish(1, "", "q", F_EXPIRATION, &sstr("0"), b"expires"));
    s.extend(get(1, "q", false));
    s.extend(ack(1, 1, false));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: 1, global: false }))));
    s.extend(consume(1, "q", "c1", false, ft(&[("x-priority", AMQPValue::LongInt(3))])));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: 2, multiple: false, requeue: true }))));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject { delivery_tag: 3, requeue: false }))));
    s.extend(ack(1, 0, true));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel { consumer_tag: "c1".into(), nowait: false }))));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Recover(basic::Recover { requeue: true }))));
    s.extend(get(1, "dlq", true));
    out.push(("queue_args_publish_consume", s));

    // Rich properties: headers with CC/BCC, reply-to, expiration; body over several frames.
    let mut s = channel_open(1);
    s.extend(declare_q(1, "q", FieldTable::default()));
    s.extend(declare_q(1, "q2", FieldTable::default()));
    s.extend(declare_q(1, "q3", FieldTable::default()));
    s.extend(consume(1, "amq.rabbitmq.reply-to", "rpc", true, FieldTable::default()));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish { exchange: "".into(), routing_key: "q".into(), mandatory: true, immediate: false }))));
    s.extend(frame(FRAME_HEADER, 1, &content_header(10, rich_flags, &rich)));
    s.extend(frame(FRAME_BODY, 1, b"01234"));
    s.extend(frame(FRAME_BODY, 1, b"56789"));
    s.extend(get(1, "q2", true));
    s.extend(get(1, "q3", true));
    s.extend(consume(1, "q", "", true, FieldTable::default()));
    out.push(("rich_properties_reply_to", s));

    // Publisher confirms and a mandatory, unroutable publish (basic.return).
    let mut s = channel_open(2);
    s.extend(m(2, AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }))));
    s.extend(declare_q(2, "c", FieldTable::default()));
    s.extend(publish(2, "", "c", 0, &[], b"one"));
    s.extend(publish(2, "", "nowhere", 0, &[], b"returned"));
    s.extend(publish(2, "amq.direct", "c", 0, &[], b""));
    out.push(("confirms_and_return", s));

    // Transactions.
    let mut s = channel_open(1);
    s.extend(m(1, AMQPClass::Tx(tx::AMQPMethod::Select(tx::Select {}))));
    s.extend(declare_q(1, "t", FieldTable::default()));
    s.extend(publish(1, "", "t", 0, &[], b"tx1"));
    s.extend(m(1, AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))));
    s.extend(get(1, "t", false));
    s.extend(ack(1, 1, false));
    s.extend(publish(1, "", "t", 0, &[], b"tx2"));
    s.extend(m(1, AMQPClass::Tx(tx::AMQPMethod::Rollback(tx::Rollback {}))));
    s.extend(m(1, AMQPClass::Tx(tx::AMQPMethod::Commit(tx::Commit {}))));
    out.push(("transactions", s));

    // Exchanges and bindings: topic, headers with x-match, e2e binding, deletes.
    let mut s = channel_open(1);
    s.extend(m(1, AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare { exchange: "t".into(), kind: "topic".into(), durable: true, ..Default::default() }))));
    s.extend(m(1, AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare { exchange: "h".into(), kind: "headers".into(), arguments: ft(&[("alternate-exchange", ls("t"))]), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare { exchange: "f".into(), kind: "fanout".into(), auto_delete: true, ..Default::default() }))));
    s.extend(declare_q(1, "bq", ft(&[("x-queue-type", ls("classic"))])));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind { queue: "bq".into(), exchange: "t".into(), routing_key: "a.*.#".into(), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind { queue: "bq".into(), exchange: "h".into(), routing_key: "".into(), arguments: ft(&[("x-match", ls("any")), ("k", AMQPValue::LongInt(1))]), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind { destination: "f".into(), source: "t".into(), routing_key: "#".into(), ..Default::default() }))));
    s.extend(publish(1, "t", "a.b.c", 0, &[], b"topic"));
    s.extend(publish(1, "h", "", F_HEADERS, &table(&[("k", b'I', &1i32.to_be_bytes())]), b"headers"));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind { queue: "bq".into(), exchange: "t".into(), routing_key: "a.*.#".into(), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind { destination: "f".into(), source: "t".into(), routing_key: "#".into(), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge { queue: "bq".into(), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete { queue: "bq".into(), ..Default::default() }))));
    s.extend(m(1, AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete { exchange: "h".into(), ..Default::default() }))));
    out.push(("exchanges_bindings", s));

    // Channel lifecycle: flow, errors, close/close-ok, reuse, heartbeats, connection.close.
    let mut s = channel_open(1);
    s.extend(channel_open(3));
    s.extend(m(1, AMQPClass::Channel(ch::AMQPMethod::Flow(ch::Flow { active: true }))));
    s.extend(ack(3, 42, false)); // unknown delivery tag: channel error
    s.extend(m(3, AMQPClass::Channel(ch::AMQPMethod::CloseOk(ch::CloseOk {}))));
    s.extend(channel_open(3));
    s.extend(frame(FRAME_HEARTBEAT, 0, &[]));
    s.extend(declare_q(3, "", ft(&[("x-expires", AMQPValue::LongInt(5000))])));
    s.extend(m(1, AMQPClass::Channel(ch::AMQPMethod::Close(ch::Close { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 }))));
    s.extend(m(0, AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close { reply_code: 200, reply_text: "bye".into(), class_id: 0, method_id: 0 }))));
    out.push(("channel_lifecycle", s));

    // Exclusive queue, consumer with exclusive flag, server-named queue, passive declares.
    let mut s = channel_open(1);
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare { queue: "ex".into(), exclusive: true, auto_delete: true, ..Default::default() }))));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare { queue: "ex".into(), passive: true, ..Default::default() }))));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume { queue: "ex".into(), consumer_tag: "x".into(), exclusive: true, ..Default::default() }))));
    s.extend(publish(1, "", "ex", 0, &[], b"for-exclusive"));
    s.extend(m(1, AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare { queue: "amq.rabbitmq.reply-to.AAAAAAAAAAEAAQAAAAAAAAAA".into(), passive: true, ..Default::default() }))));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel { consumer_tag: "x".into(), nowait: true }))));
    out.push(("exclusive_and_passive", s));

    // A big body split in many frames.
    let mut s = channel_open(1);
    s.extend(declare_q(1, "big", FieldTable::default()));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish { exchange: "".into(), routing_key: "big".into(), mandatory: false, immediate: false }))));
    s.extend(frame(FRAME_HEADER, 1, &content_header(3000, 0, &[])));
    for _ in 0..3 {
        s.extend(frame(FRAME_BODY, 1, &[0x55; 1000]));
    }
    s.extend(consume(1, "big", "c", true, FieldTable::default()));
    out.push(("big_body", s));

    // Dead-lettering (reject, max-length, expiry) of a message that already has an x-death header.
    let death = table(&[
        ("count", b'l', &1i64.to_be_bytes()),
        ("reason", b'S', &long_str(b"rejected")),
        ("queue", b'S', &long_str(b"q")),
        ("exchange", b'S', &long_str(b"")),
        ("routing-keys", b'A', &long_str(&[b'S', 0, 0, 0, 1, b'q'])),
    ]);
    let mut arr = vec![b'F'];
    arr.extend(&death);
    let xdeath = table(&[("x-death", b'A', &long_str(&arr)), ("CC", b'A', &long_str(&[b'S', 0, 0, 0, 3, b'd', b'l', b'q']))]);
    let mut s = channel_open(1);
    s.extend(declare_q(1, "dlq", FieldTable::default()));
    s.extend(declare_q(1, "q", ft(&[("x-dead-letter-exchange", ls("")), ("x-dead-letter-routing-key", ls("dlq")), ("x-max-length", AMQPValue::LongInt(1))])));
    s.extend(publish(1, "", "q", F_HEADERS, &xdeath, b"d1"));
    s.extend(get(1, "q", false));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Reject(basic::Reject { delivery_tag: 1, requeue: false }))));
    s.extend(publish(1, "", "q", F_HEADERS, &xdeath, b"d2"));
    s.extend(publish(1, "", "q", F_HEADERS | F_EXPIRATION, &[&xdeath[..], &sstr("0")[..]].concat(), b"d3"));
    s.extend(get(1, "dlq", false));
    s.extend(get(1, "dlq", false));
    s.extend(m(1, AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: 0, multiple: true, requeue: true }))));
    out.push(("dead_letter_x_death", s));

    // Arrays and every field type in arguments.
    let mut arr = FieldArray::default();
    arr.push(AMQPValue::LongInt(1));
    arr.push(ls("x"));
    arr.push(AMQPValue::FieldTable(ft(&[("in", AMQPValue::Boolean(true))])));
    let mut s = channel_open(1);
    s.extend(declare_q(
        1,
        "types",
        ft(&[
            ("bool", AMQPValue::Boolean(true)),
            ("i8", AMQPValue::ShortShortInt(-1)),
            ("u8", AMQPValue::ShortShortUInt(1)),
            ("i16", AMQPValue::ShortInt(-2)),
            ("u16", AMQPValue::ShortUInt(2)),
            ("u32", AMQPValue::LongUInt(3)),
            ("i64", AMQPValue::LongLongInt(-4)),
            ("f32", AMQPValue::Float(1.5)),
            ("f64", AMQPValue::Double(2.5)),
            ("ts", AMQPValue::Timestamp(5)),
            ("void", AMQPValue::Void),
            ("arr", AMQPValue::FieldArray(arr)),
        ]),
    ));
    out.push(("all_field_types", s));
    out
}

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut next = vec![b'A'];
        next.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        next.extend_from_slice(&inner);
        inner = next;
    }
    let mut entry = vec![1, b'k'];
    entry.extend_from_slice(&inner);
    let mut t = (entry.len() as u32).to_be_bytes().to_vec();
    t.extend_from_slice(&entry);
    t
}

fn nested_tables(depth: usize) -> Vec<u8> {
    let mut t = table(&[("leaf", b'S', &long_str(b"v"))]);
    for _ in 1..depth {
        t = table(&[("t", b'F', &t)]);
    }
    t
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let scen = scenarios();

    // connection: [knobs][seed:8][post-handshake bytes]
    for (i, (name, s)) in scen.iter().enumerate() {
        for knobs in [0u8, 0b0110] {
            let mut v = vec![knobs];
            v.extend((i as u64 * 7918 + knobs as u64 * 2).to_le_bytes());
            v.extend(s);
            write(&root.join("connection"), &format!("{name}_{knobs}"), &v);
        }
    }

    // connection_raw: [seed:8][protocol header + handshake + traffic]
    for (i, (name, s)) in scen.iter().enumerate() {
        let mut v = (i as u64 * 104_728).to_le_bytes().to_vec();
        v.extend(handshake(131_072, 0));
        v.extend(s);
        write(&root.join("connection_raw"), name, &v);
    }
    let raw_handshakes: Vec<(&str, Vec<u8>)> = vec![
        ("header_only", PROTOCOL_HEADER.to_vec()),
        ("wrong_header", b"AMQP\x01\x01\x00\x0a".to_vec()),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("handshake_heartbeat", handshake(8192, 1)),
        ("tune_no_limits", {
            let mut v = handshake(131_072, 0);
            let tune = method(0, AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk { channel_max: 2047, frame_max: 131_072, heartbeat: 0 })));
            let at = v.windows(tune.len()).position(|w| w == &tune[..]).unwrap();
            let bad = method(0, AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk { channel_max: 0, frame_max: 0, heartbeat: 0 })));
            v.splice(at..at + tune.len(), bad);
            v
        }),
        ("amqplain", {
            let mut v = PROTOCOL_HEADER.to_vec();
            let resp = {
                let t = table(&[("LOGIN", b'S', &long_str(b"guest")), ("PASSWORD", b'S', &long_str(b"guest"))]);
                t[4..].to_vec()
            };
            v.extend(m(0, AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk { client_properties: FieldTable::default(), mechanism: "AMQPLAIN".into(), response: LongString::from(resp), locale: "en_US".into() }))));
            v.extend(m(0, AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk { channel_max: 10, frame_max: 65536, heartbeat: 0 }))));
            v.extend(m(0, AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open { virtual_host: "/".into() }))));
            v.extend(channel_open(10));
            v.extend(channel_open(11));
            v
        }),
        ("bad_password", {
            let mut v = PROTOCOL_HEADER.to_vec();
            v.extend(m(0, AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk { client_properties: ft(&[("capabilities", AMQPValue::FieldTable(ft(&[("authentication_failure_close", AMQPValue::Boolean(true))])))]), mechanism: "PLAIN".into(), response: LongString::from(&b"\0guest\0nope"[..]), locale: "en_US".into() }))));
            v
        }),
        ("open_unknown_vhost", {
            let mut v = handshake(131_072, 0);
            let cut = v.len() - method(0, AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open { virtual_host: "/".into() }))).len();
            v.truncate(cut);
            v.extend(m(0, AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open { virtual_host: "nope".into() }))));
            v
        }),
    ];
    for (name, s) in raw_handshakes {
        let mut v = 2u64.to_le_bytes().to_vec();
        v.extend(s);
        write(&root.join("connection_raw"), name, &v);
    }

    // frame_decode: [frame_max:u32 LE][frames]
    for (name, s) in &scen {
        let mut v = 0u32.to_le_bytes().to_vec();
        v.extend(s);
        write(&root.join("frame_decode"), name, &v);
    }
    let (rich_flags, rich) = rich_props();
    let mut v = 5000u32.to_le_bytes().to_vec();
    v.extend(frame(FRAME_HEADER, 1, &content_header(1, rich_flags, &rich)));
    v.extend(frame(FRAME_HEARTBEAT, 0, &[]));
    write(&root.join("frame_decode"), "rich_header", &v);
    let mut v = 0u32.to_le_bytes().to_vec();
    v.extend(declare_q(1, "deep", FieldTable::default()));
    let n = v.len();
    v.truncate(n - 5); // drop the empty table and end marker, re-add a deep one
    let deep = nested_arrays(64);
    v.extend(&deep);
    v.push(0xCE);
    let size = (v.len() - 4 - 8) as u32;
    v[4 + 3..4 + 7].copy_from_slice(&size.to_be_bytes());
    write(&root.join("frame_decode"), "declare_depth_65", &v);

    // table_guard: bare tables.
    let tg = root.join("table_guard");
    write(&tg, "empty", &[0, 0, 0, 0]);
    write(&tg, "rich_headers", &rich[11..]);
    write(&tg, "arrays_64", &nested_arrays(63));
    write(&tg, "arrays_65", &nested_arrays(64));
    write(&tg, "tables_64", &nested_tables(64));
    write(&tg, "tables_65", &nested_tables(65));
    write(&tg, "non_utf8_key", &table(&[("\u{e9}", b't', &[1])]).iter().map(|&b| if b == 0xc3 { 0xff } else { b }).collect::<Vec<u8>>());
    let all = scen.iter().find(|(n, _)| *n == "all_field_types").unwrap();
    // the argument table is the tail of the queue.declare frame (minus the end marker)
    let decl = &all.1[channel_open(1).len()..];
    let start = 7 + 4 + 2 + 1 + "types".len() + 1;
    write(&tg, "all_types", &decl[start..decl.len() - 1]);
    println!("seeds written to {}", root.display());
}
