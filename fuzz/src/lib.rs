//! Shared code of Warren's fuzz targets: frame builders (for the seed corpora and
//! the handshake prefix), a tiny deterministic PRNG, a stack-limited worker
//! thread, and the sans-IO connection driver used by `connection` and
//! `connection_raw`.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, channel as ch, connection as conn, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::{BufMut, BytesMut};
use warren_broker::connection::Connection;
use warren_broker::{Broker, Config};
use warren_codec::frame::{decode_frame, encode_frame, Frame, FRAME_BODY, FRAME_HEADER};
use warren_codec::{decode_method, encode_method, Method};

// ---------------------------------------------------------------------------
// Frame builders

pub const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// One method frame.
pub fn method(channel: u16, m: AMQPClass) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_method(&mut out, channel, &m);
    out.to_vec()
}

/// One raw frame.
pub fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(&mut out, kind, channel, payload);
    out.to_vec()
}

/// A basic content header payload: class 60, weight 0, body size, flags, properties.
pub fn content_header(body_size: u64, flags: u16, props: &[u8]) -> Vec<u8> {
    let mut h = BytesMut::new();
    h.put_u16(60);
    h.put_u16(0);
    h.put_u64(body_size);
    h.put_u16(flags);
    h.put_slice(props);
    h.to_vec()
}

/// basic.publish + header + one body frame.
pub fn publish(channel: u16, exchange: &str, routing_key: &str, flags: u16, props: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: true,
            immediate: false,
        })),
    );
    v.extend(frame(FRAME_HEADER, channel, &content_header(body.len() as u64, flags, props)));
    if !body.is_empty() {
        v.extend(frame(FRAME_BODY, channel, body));
    }
    v
}

/// A field table on the wire (length prefix included), from `(key, tag, value bytes)`.
pub fn table(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, tag, v) in entries {
        body.push(k.len() as u8);
        body.extend_from_slice(k.as_bytes());
        body.push(*tag);
        body.extend_from_slice(v);
    }
    let mut t = (body.len() as u32).to_be_bytes().to_vec();
    t.extend(body);
    t
}

/// A long string value (length prefix included).
pub fn long_str(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// Protocol header, start-ok PLAIN guest/guest, tune-ok, open "/".
pub fn handshake(frame_max: u32, heartbeat: u16) -> Vec<u8> {
    let mut caps = FieldTable::default();
    for c in ["consumer_cancel_notify", "authentication_failure_close", "connection.blocked", "publisher_confirms", "basic.nack"] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props.insert("connection_name".into(), AMQPValue::LongString(LongString::from("fuzz")));
    let mut v = PROTOCOL_HEADER.to_vec();
    v.extend(method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongString::from(&b"\0guest\0guest"[..]),
            locale: "en_US".into(),
        })),
    ));
    v.extend(method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::TuneOk(conn::TuneOk {
            channel_max: 2047,
            frame_max,
            heartbeat,
        })),
    ));
    v.extend(method(
        0,
        AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
            virtual_host: "/".into(),
        })),
    ));
    v
}

pub fn channel_open(channel: u16) -> Vec<u8> {
    method(channel, AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {})))
}

// ---------------------------------------------------------------------------
// PRNG

/// xorshift64*: deterministic choices (chunk sizes, clock steps) from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// A worker thread with a chosen stack size

type Job = Box<dyn FnOnce() + Send>;

pub struct Worker {
    jobs: Mutex<mpsc::Sender<(Job, mpsc::Sender<()>)>>,
}

fn worker(stack: usize, slot: &'static OnceLock<Worker>) -> &'static Worker {
    slot.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Job, mpsc::Sender<()>)>();
        std::thread::Builder::new()
            .name(format!("fuzz-worker-{}k", stack / 1024))
            .stack_size(stack)
            .spawn(move || {
                while let Ok((job, done)) = rx.recv() {
                    job();
                    let _ = done.send(());
                }
            })
            .expect("spawn fuzz worker");
        Worker { jobs: Mutex::new(tx) }
    })
}

/// Run `f` on a long-lived thread whose stack is `stack` bytes, and wait for it.
/// One thread per distinct `slot`. A panic or a stack overflow in `f` aborts the
/// process (libFuzzer's panic hook), which is what a fuzz target wants.
pub fn run_with_stack<F, R>(slot: &'static OnceLock<Worker>, stack: usize, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let w = worker(stack, slot);
    let (rtx, rrx) = mpsc::channel();
    let (dtx, drx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = rtx.send(f());
    });
    w.jobs.lock().unwrap().send((job, dtx)).expect("worker alive");
    drx.recv().expect("worker finished the job");
    rrx.recv().expect("job produced a result")
}

pub type WorkerSlot = OnceLock<Worker>;

// ---------------------------------------------------------------------------
// The connection driver

/// What the client negotiated, to check the broker's output against.
#[derive(Clone, Copy, Debug)]
pub struct Negotiated {
    pub frame_max: u32,
}

/// `WARREN_FUZZ_TRACE=1` prints every frame the broker writes (for reading a reproducer).
pub fn tracing_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("WARREN_FUZZ_TRACE").is_some())
}

/// Checks the broker's output stream: it must be a protocol header (only as a
/// refusal, first and alone) or a sequence of well-formed frames.
pub struct OutputChecker {
    buf: BytesMut,
    first: bool,
    refused: bool,
    pub frame_max: u32,
}

impl OutputChecker {
    pub fn new() -> OutputChecker {
        OutputChecker { buf: BytesMut::new(), first: true, refused: false, frame_max: 131_072 }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.first {
            self.first = false;
            if bytes.starts_with(b"AMQP") {
                assert_eq!(bytes, PROTOCOL_HEADER, "refusal must be our protocol header, alone");
                self.refused = true;
                return;
            }
        }
        assert!(!self.refused, "output after the protocol-header refusal: {:02x?}", &bytes[..bytes.len().min(64)]);
        self.buf.extend_from_slice(bytes);
        loop {
            // Every frame the broker writes must fit the client's frame_max
            // (8-byte tolerance is for what clients send, not for us).
            let r = decode_frame(&mut self.buf, 0);
            let f = match r {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => panic!("broker wrote a malformed frame: {e}"),
            };
            if tracing_enabled() {
                match &f {
                    Frame::Method { channel, payload } => eprintln!("<- ch{channel} {:?}", decode_method(payload)),
                    other => eprintln!("<- {:?}", other),
                }
            }
            match &f {
                Frame::Method { channel, payload } => {
                    assert!(payload.len() + 8 <= self.frame_max as usize, "method frame of {} bytes > frame_max {}", payload.len() + 8, self.frame_max);
                    match decode_method(payload) {
                        Ok(m) => {
                            if let Method::Other(AMQPClass::Connection(conn::AMQPMethod::Tune(_))) = m {
                                assert_eq!(*channel, 0);
                            }
                        }
                        Err(e) => panic!("broker wrote an undecodable method on channel {channel}: {e:?} {:02x?}", &payload[..payload.len().min(64)]),
                    }
                }
                Frame::Body { payload, .. } => {
                    assert!(payload.len() + 8 <= self.frame_max as usize, "body frame of {} bytes > frame_max {}", payload.len() + 8, self.frame_max);
                }
                // A content header cannot be split, and the broker passes on the
                // publisher's bytes: a header frame the broker accepted (up to
                // frame_max + 8, RabbitMQ's tolerance) plus the direct reply-to
                // rewrite (21-byte "amq.rabbitmq.reply-to" becomes a 46-byte
                // address, +25) is the most it may send. Known and reported:
                // such a frame exceeds the negotiated frame_max.
                Frame::Header { payload, .. } => {
                    assert!(payload.len() + 8 <= self.frame_max as usize + 8 + 25, "header frame of {} bytes > frame_max {} + 33", payload.len() + 8, self.frame_max);
                }
                Frame::Heartbeat { channel } => assert_eq!(*channel, 0, "heartbeat on channel {channel}"),
            }
        }
    }

    /// At the end the output must not stop in the middle of a frame.
    pub fn finish(&self) {
        assert!(self.buf.is_empty(), "broker output ends with a partial frame of {} bytes", self.buf.len());
    }
}

impl Default for OutputChecker {
    fn default() -> Self {
        Self::new()
    }
}

/// Feed `prefix` then `data` to a fresh connection, in chunks and with a clock
/// chosen by `seed`; check everything it writes; then prove the broker still
/// serves a second, well-behaved client.
pub fn drive_connection(seed: u64, prefix: &[u8], frame_max: u32, data: &[u8]) {
    let broker = Broker::new(Config {
        memory_high_watermark: None,
        ..Config::default()
    });
    let mut rng = Rng::new(seed);
    let (handle, mut inbox) = broker.register_connection();
    let start = Instant::now();
    let mut now = start;
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut c = Connection::new(broker.clone(), handle.clone(), peer, now);
    let mut check = OutputChecker::new();
    check.frame_max = frame_max;
    let mut rbuf = BytesMut::new();

    let pump = |c: &mut Connection, now: Instant, check: &mut OutputChecker, inbox: &mut tokio_inbox::Inbox| {
        while let Ok(ev) = inbox.try_recv() {
            c.handle_event(ev, now);
        }
        if let Some(out) = c.take_output(now) {
            handle.queued_for_write(out.len());
            check.feed(&out);
            handle.written(out.len());
        }
    };

    // The prefix goes in one piece (it is not what is being fuzzed).
    if !prefix.is_empty() {
        rbuf.extend_from_slice(prefix);
        c.handle_input(&mut rbuf, now);
        pump(&mut c, now, &mut check, &mut inbox);
    }

    let mut rest = data;
    while !rest.is_empty() && !c.is_closed() {
        // Chunk sizes: mostly whole-ish reads, sometimes tiny ones.
        // Even seeds: one frame per read (deliveries are pumped between frames);
        // odd seeds: reads of random sizes.
        let mode = if seed & 1 == 0 { 5 } else { rng.below(16) };
        let n = match mode {
            0 | 1 => 1 + rng.below(8) as usize,
            2 | 3 => 1 + rng.below(64) as usize,
            4 => rest.len(),
            // Up to the end of the next frame, so that deliveries (which arrive as
            // events) are pumped between the client's frames, as on a real socket.
            _ => next_frame_len(&rbuf, rest).unwrap_or(rest.len()),
        }
        .clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        if tracing_enabled() {
            eprintln!("-> {n} bytes at t+{:?}{}", now - start, if c.wants_read() { "" } else { " (not reading)" });
        }
        // The broker's memory alarm goes on and off now and then (publishers get
        // connection.blocked/unblocked and are not read meanwhile); rarely the
        // broker shuts down (connection.close 320 to everyone).
        match rng.below(64) {
            0 => broker.set_memory_alarm(!broker.memory_alarm()),
            1 if rng.below(8) == 0 => broker.close_all("CONNECTION_FORCED - broker shutdown"),
            _ => {}
        }
        if c.wants_read() {
            rest = tail;
            rbuf.extend_from_slice(chunk);
            c.handle_input(&mut rbuf, now);
        } else if broker.memory_alarm() {
            // Not read while blocked, as the driver does: the bytes wait. Memory
            // is freed eventually.
            pump(&mut c, now, &mut check, &mut inbox);
            broker.set_memory_alarm(false);
        } else {
            rest = tail;
        }
        pump(&mut c, now, &mut check, &mut inbox);
        // Advance the clock: usually not at all, sometimes past timers.
        match rng.below(32) {
            0..=3 => now += Duration::from_millis(rng.below(2_000)),
            4 => {
                if let Some(t) = c.poll_timeout() {
                    if t > now {
                        now = t;
                    }
                }
            }
            _ => {}
        }
        if c.poll_timeout().is_some_and(|t| now >= t) {
            c.handle_timeout(now);
        }
        pump(&mut c, now, &mut check, &mut inbox);
    }
    // Let time run out on whatever state is left (heartbeats, close-ok wait, handshake timeout).
    for _ in 0..3 {
        let Some(t) = c.poll_timeout() else { break };
        now = now.max(t);
        c.handle_timeout(now);
        pump(&mut c, now, &mut check, &mut inbox);
    }
    if tracing_enabled() {
        eprintln!("end: closed={} reason={:?} unread={}", c.is_closed(), c.close_reason(), rest.len());
    }
    // The socket goes away, as the driver does it.
    c.cleanup();
    inbox.close();
    while let Ok(ev) = inbox.try_recv() {
        c.handle_event(ev, now);
    }
    if let Some(out) = c.take_output(now) {
        check.feed(&out);
    }
    if c.is_closed() {
        check.finish();
    }
    drop(c);

    broker.set_memory_alarm(false);
    probe_still_serving(&broker, now);
}

/// Bytes of `rest` that complete the next frame, given what `rbuf` already holds.
fn next_frame_len(rbuf: &[u8], rest: &[u8]) -> Option<usize> {
    let at = |i: usize| if i < rbuf.len() { rbuf.get(i).copied() } else { rest.get(i - rbuf.len()).copied() };
    // Before the protocol header went through, frames do not line up: give it 8 bytes.
    if rbuf.is_empty() && rest.starts_with(b"AMQP") {
        return Some(8);
    }
    let size = u32::from_be_bytes([at(3)?, at(4)?, at(5)?, at(6)?]) as usize;
    (size + 8).checked_sub(rbuf.len()).filter(|n| *n > 0)
}

/// A new, well-behaved client can still log in, declare, publish and get.
fn probe_still_serving(broker: &Arc<Broker>, now: Instant) {
    let (handle, mut inbox) = broker.register_connection();
    let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let mut c = Connection::new(broker.clone(), handle, peer, now);
    let mut input = handshake(131_072, 0);
    input.extend(channel_open(1));
    input.extend(method(
        1,
        AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::Declare(
            amq_protocol::protocol::queue::Declare {
                queue: "".into(),
                exclusive: true,
                ..Default::default()
            },
        )),
    ));
    let mut buf = BytesMut::from(&input[..]);
    c.handle_input(&mut buf, now);
    let mut out = BytesMut::new();
    if let Some(o) = c.take_output(now) {
        out.extend_from_slice(&o);
    }
    let mut qname = None;
    while let Some(f) = decode_frame(&mut out, 0).expect("probe output decodes") {
        if let Frame::Method { payload, .. } = f {
            if let Ok(Method::Other(AMQPClass::Queue(amq_protocol::protocol::queue::AMQPMethod::DeclareOk(d)))) = decode_method(&payload) {
                qname = Some(d.queue.to_string());
            }
        }
    }
    let qname = qname.expect("a fresh client could not declare a queue after the fuzzed one");
    let mut input = publish(1, "", &qname, 0, &[], b"probe-body");
    input.extend(method(1, AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get { queue: qname.as_str().into(), no_ack: true }))));
    let mut buf = BytesMut::from(&input[..]);
    c.handle_input(&mut buf, now);
    while let Ok(ev) = inbox.try_recv() {
        c.handle_event(ev, now);
    }
    let mut out = BytesMut::new();
    if let Some(o) = c.take_output(now) {
        out.extend_from_slice(&o);
    }
    let mut got = false;
    while let Some(f) = decode_frame(&mut out, 0).expect("probe output decodes") {
        if let Frame::Body { payload, .. } = f {
            got |= &payload[..] == b"probe-body";
        }
    }
    assert!(got, "a fresh client's publish + get lost its message after the fuzzed connection");
    c.cleanup();
}

/// The connection's inbox type, named through the broker's API.
mod tokio_inbox {
    pub type Inbox = tokio::sync::mpsc::UnboundedReceiver<warren_broker::connection::ConnEvent>;
}
