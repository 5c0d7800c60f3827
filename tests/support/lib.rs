//! Shared helpers for Warren's integration tests.
//!
//! Every test starts its own in-process broker on an ephemeral port
//! ([`start_broker`]), talks to it with lapin, and — for what lapin cannot
//! produce (malformed frames, protocol violations) — with [`RawClient`], a tiny
//! AMQP client written on top of a plain `TcpStream` and `amq-protocol`'s frame
//! codec.
//!
//! All waits go through [`within`] (or take an explicit timeout) so that a
//! broken broker makes a test fail instead of hang.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

pub mod small_disk;

pub use amq_protocol;
pub use lapin;
pub use warren;

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::{basic, channel as ch, connection as conn, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use futures_util::{Stream, StreamExt};
use lapin::message::{BasicGetMessage, Delivery};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueDeclareOptions,
};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for any single wait in a test. Generous (the machine may be
/// heavily loaded): it only matters when something is broken, and then the
/// test fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(30);

/// How long to watch for something that must *not* happen (an extra delivery).
pub const QUIET: Duration = Duration::from_millis(300);

// ----- broker ---------------------------------------------------------------------

/// A broker with the default settings on 127.0.0.1 and an ephemeral port.
pub async fn start_broker() -> warren::Broker {
    start_broker_with(warren::Config::default()).await
}

/// A broker with custom settings on 127.0.0.1 and an ephemeral port.
pub async fn start_broker_with(config: warren::Config) -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .config(config)
        .start()
        .await
        .expect("start the broker")
}

/// `amqp://user:password@127.0.0.1:PORT/vhost` for this broker (vhost URL-encoded).
pub fn url_for(broker: &warren::Broker, user: &str, password: &str, vhost: &str) -> String {
    let vhost = vhost.replace('%', "%25").replace('/', "%2f");
    format!(
        "amqp://{user}:{password}@127.0.0.1:{}/{vhost}",
        broker.local_addr().port()
    )
}

// ----- waiting --------------------------------------------------------------------

/// Await `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Poll `cond` every 10 ms until it holds, failing the test after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

// ----- lapin ----------------------------------------------------------------------

/// Connect with lapin (guest/guest, vhost "/").
pub async fn connect(broker: &warren::Broker) -> Connection {
    try_connect(&broker.amqp_url())
        .await
        .expect("connect with lapin")
}

/// Connect with lapin to any URL, returning lapin's result.
pub async fn try_connect(url: &str) -> lapin::Result<Connection> {
    within(
        "lapin connect",
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
}

/// Open a channel.
pub async fn open_channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel())
        .await
        .expect("open a channel")
}

/// A connection and one channel on it.
pub async fn connect_channel(broker: &warren::Broker) -> (Connection, Channel) {
    let conn = connect(broker).await;
    let channel = open_channel(&conn).await;
    (conn, channel)
}

/// Assert that `err` is the broker closing a channel or the connection with
/// exactly this reply code and reply text.
///
/// lapin reports both channel.close and connection.close from the broker as
/// `ErrorKind::ProtocolError(AMQPError)`: `get_id()` is the reply code and
/// `get_message()` the reply text. It keeps neither the class/method ids of the
/// close frame nor which frame it was (its Soft/Hard kind is derived from the
/// code), so [`assert_channel_error`] / [`assert_connection_error`] check the
/// scope from the channel and connection state, and tests that need the
/// class/method ids use [`RawClient`].
#[track_caller]
pub fn assert_closed_with(err: &lapin::Error, code: u16, text: &str) {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => {
            assert_eq!(
                (e.get_id(), e.get_message().as_str()),
                (code, text),
                "unexpected close reply (code, text)"
            );
        }
        other => panic!("expected the broker to close with {code} {text:?}, got {other:?} ({err})"),
    }
}

/// Assert a channel-level error: `err` carries `code`/`text`, `channel` is
/// closed, and the connection survived (a new channel on it works).
pub async fn assert_channel_error(
    conn: &Connection,
    channel: &Channel,
    err: &lapin::Error,
    code: u16,
    text: &str,
) {
    assert_closed_with(err, code, text);
    eventually("lapin to mark the channel closed", || {
        !channel.status().connected()
    })
    .await;
    assert!(
        conn.status().connected(),
        "a channel error ({code}) must not close the connection"
    );
    let other = open_channel(conn).await;
    sync(&other).await;
}

/// Assert a connection-level error: `err` carries `code`/`text` and the
/// connection is gone.
pub async fn assert_connection_error(conn: &Connection, err: &lapin::Error, code: u16, text: &str) {
    assert_closed_with(err, code, text);
    eventually("lapin to mark the connection closed", || {
        !conn.status().connected()
    })
    .await;
}

/// Unwrap the error of a lapin result, failing the test if it succeeded.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(what: &str, r: lapin::Result<T>) -> lapin::Error {
    match r {
        Ok(v) => panic!("{what}: expected an error from the broker, got Ok({v:?})"),
        Err(e) => e,
    }
}

/// A listener for the errors lapin reports on a connection (channel and
/// connection closes initiated by the broker). Create it *before* the error.
pub struct Errors(Pin<Box<dyn Stream<Item = lapin::Event> + Send>>);

impl Errors {
    pub fn new(conn: &Connection) -> Errors {
        Errors(Box::pin(conn.events_listener()))
    }

    /// The next error event.
    pub async fn next(&mut self) -> lapin::Error {
        within("an error event from lapin", async {
            loop {
                match self.0.next().await {
                    Some(lapin::Event::Error(e)) => return e,
                    Some(_) => continue,
                    None => panic!("lapin's event stream ended without an error"),
                }
            }
        })
        .await
    }
}

/// Declare a non-durable, non-exclusive queue with default arguments.
pub async fn declare_queue(channel: &Channel, name: &str) -> lapin::Queue {
    within(
        "queue.declare",
        channel.queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("declare queue {name:?}: {e}"))
}

/// Declare an exchange of the given type with default flags.
pub async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    within(
        "exchange.declare",
        channel.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("declare exchange {name:?}: {e}"))
}

/// Bind a queue.
pub async fn bind_queue(channel: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_queue_args(channel, queue, exchange, key, FieldTable::default()).await
}

/// Bind a queue with binding arguments.
pub async fn bind_queue_args(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) {
    within(
        "queue.bind",
        channel.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            Default::default(),
            args,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("bind {queue:?} to {exchange:?} with {key:?}: {e}"))
}

/// Publish a message (no properties) and wait until lapin has written it.
pub async fn publish(channel: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_props(channel, exchange, key, body, BasicProperties::default()).await
}

/// Publish a message with properties and wait until lapin has written it.
/// On a confirm channel this also waits for the confirm.
pub async fn publish_props(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = within(
        "basic.publish",
        channel.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        ),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", confirm)
        .await
        .expect("publisher confirm");
}

/// A round trip on the channel: when it returns, the broker has handled every
/// frame sent before it on this channel (including publishes).
pub async fn sync(channel: &Channel) {
    within(
        "a round trip (exchange.declare passive amq.direct)",
        channel.exchange_declare(
            "amq.direct".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .expect("round trip");
}

/// Number of ready messages in a queue (passive declare).
pub async fn message_count(channel: &Channel, queue: &str) -> u32 {
    within(
        "queue.declare passive",
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("passive declare of {queue:?}: {e}"))
    .message_count()
}

/// Start a consumer with a server-generated tag.
pub async fn consume(channel: &Channel, queue: &str, no_ack: bool) -> Consumer {
    consume_tag(channel, queue, "", no_ack).await
}

/// Start a consumer with the given tag.
pub async fn consume_tag(channel: &Channel, queue: &str, tag: &str, no_ack: bool) -> Consumer {
    within(
        "basic.consume",
        channel.basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("consume from {queue:?}: {e}"))
}

/// The next delivery of a consumer; fails if none arrives within [`WAIT`].
pub async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    match within("a delivery", consumer.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("consumer error instead of a delivery: {e}"),
        None => panic!("consumer ended instead of delivering"),
    }
}

/// Collect exactly `n` deliveries.
pub async fn next_deliveries(consumer: &mut Consumer, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_delivery(consumer).await);
    }
    out
}

/// Assert that the consumer receives nothing for [`QUIET`].
pub async fn assert_no_delivery(consumer: &mut Consumer) {
    if let Ok(item) = tokio::time::timeout(QUIET, consumer.next()).await {
        match item {
            Some(Ok(d)) => panic!(
                "unexpected delivery: tag {} body {:?}",
                d.delivery_tag,
                String::from_utf8_lossy(&d.data)
            ),
            Some(Err(e)) => panic!("unexpected consumer error: {e}"),
            None => panic!("consumer ended unexpectedly"),
        }
    }
}

/// basic.get with manual acks.
pub async fn get(channel: &Channel, queue: &str) -> Option<BasicGetMessage> {
    get_opts(channel, queue, false).await
}

/// basic.get.
pub async fn get_opts(channel: &Channel, queue: &str, no_ack: bool) -> Option<BasicGetMessage> {
    within(
        "basic.get",
        channel.basic_get(queue.into(), BasicGetOptions { no_ack }),
    )
    .await
    .unwrap_or_else(|e| panic!("basic.get from {queue:?}: {e}"))
}

/// Bodies of deliveries, as strings.
pub fn bodies<'a>(ds: impl IntoIterator<Item = &'a Delivery>) -> Vec<String> {
    ds.into_iter()
        .map(|d| String::from_utf8_lossy(&d.data).into_owned())
        .collect()
}

/// A field table from (key, value) pairs.
pub fn table<const N: usize>(pairs: [(&str, AMQPValue); N]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(k.into(), v);
    }
    t
}

/// A long-string field value.
pub fn lstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

// ----- raw client -----------------------------------------------------------------

/// connection.close or channel.close as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub code: u16,
    pub text: String,
    pub class_id: u16,
    pub method_id: u16,
}

/// Negotiation choices of a raw client.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// None: echo the server's value.
    pub channel_max: Option<u16>,
    pub frame_max: Option<u32>,
    pub heartbeat: Option<u16>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            channel_max: None,
            frame_max: None,
            heartbeat: Some(0),
        }
    }
}

/// What the server offered during the handshake.
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub start: conn::Start,
    pub tune: conn::Tune,
}

/// A minimal AMQP 0-9-1 client over a raw socket, for protocol-level tests.
pub struct RawClient {
    stream: TcpStream,
    pub hello: Option<ServerHello>,
    /// The frame_max sent in tune-ok (used to split published bodies).
    pub frame_max: u32,
}

/// Serialize one frame.
pub fn encode_frame(frame: &AMQPFrame) -> Vec<u8> {
    let ctx = gen_frame(frame)(WriteContext::from(Vec::new())).expect("serialize frame");
    ctx.write
}

/// Serialize a method as a method frame.
pub fn encode_method(channel: u16, method: AMQPClass) -> Vec<u8> {
    encode_frame(&AMQPFrame::Method(channel, method))
}

/// A frame envelope around arbitrary payload bytes.
pub fn raw_frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.push(kind);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

/// The client properties a raw client announces: the capabilities of
/// RabbitMQ's Java client.
pub fn client_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "authentication_failure_close",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("product".into(), lstr("warren-raw-test-client"));
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

impl RawClient {
    /// Open a TCP connection and send nothing yet.
    pub async fn tcp(addr: SocketAddr) -> RawClient {
        let stream = within("tcp connect", TcpStream::connect(addr))
            .await
            .expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            hello: None,
            frame_max: 131072,
        }
    }

    /// Connect and complete the handshake (guest/guest, vhost "/", no heartbeats),
    /// with no channel open.
    pub async fn open(addr: SocketAddr) -> RawClient {
        Self::open_with(addr, Tuning::default()).await
    }

    /// Connect and complete the handshake with the given tuning.
    pub async fn open_with(addr: SocketAddr, tuning: Tuning) -> RawClient {
        let mut c = Self::tcp(addr).await;
        c.start_and_tune(tuning).await;
        c.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Open(conn::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        match c.expect_method().await {
            (0, AMQPClass::Connection(conn::AMQPMethod::OpenOk(_))) => {}
            other => panic!("expected connection.open-ok, got {other:?}"),
        }
        c
    }

    /// Send the protocol header and read connection.start.
    pub async fn protocol_header(&mut self) -> conn::Start {
        self.send_bytes(b"AMQP\x00\x00\x09\x01").await;
        match self.expect_method().await {
            (0, AMQPClass::Connection(conn::AMQPMethod::Start(s))) => s,
            other => panic!("expected connection.start, got {other:?}"),
        }
    }

    /// Send connection.start-ok.
    pub async fn start_ok(
        &mut self,
        client_properties: FieldTable,
        mechanism: &str,
        response: &[u8],
    ) {
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::StartOk(conn::StartOk {
                client_properties,
                mechanism: mechanism.into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        )
        .await;
    }

    /// Read connection.tune and answer tune-ok; returns what was sent.
    pub async fn tune(&mut self, start: conn::Start, tuning: Tuning) -> conn::TuneOk {
        let tune = match self.expect_method().await {
            (0, AMQPClass::Connection(conn::AMQPMethod::Tune(t))) => t,
            other => panic!("expected connection.tune, got {other:?}"),
        };
        let tune_ok = conn::TuneOk {
            channel_max: tuning.channel_max.unwrap_or(tune.channel_max),
            frame_max: tuning.frame_max.unwrap_or(tune.frame_max),
            heartbeat: tuning.heartbeat.unwrap_or(tune.heartbeat),
        };
        self.frame_max = tune_ok.frame_max;
        self.hello = Some(ServerHello { start, tune });
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::TuneOk(tune_ok.clone())),
        )
        .await;
        tune_ok
    }

    /// Protocol header, start/start-ok (PLAIN guest/guest) and tune/tune-ok;
    /// returns what was sent in tune-ok.
    pub async fn start_and_tune(&mut self, tuning: Tuning) -> conn::TuneOk {
        let start = self.protocol_header().await;
        self.start_ok(client_properties(), "PLAIN", b"\0guest\0guest")
            .await;
        self.tune(start, tuning).await
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        within("socket write", self.stream.write_all(bytes))
            .await
            .expect("socket write");
    }

    /// Write, ignoring errors (the broker may already have closed the socket).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("socket write", self.stream.write_all(bytes)).await
    }

    pub async fn send_frame(&mut self, frame: &AMQPFrame) {
        self.send_bytes(&encode_frame(frame)).await
    }

    pub async fn send_method(&mut self, channel: u16, method: AMQPClass) {
        self.send_bytes(&encode_method(channel, method)).await
    }

    /// Read exactly `n` bytes, or fewer if the socket closes first.
    pub async fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        within("socket read", async {
            let mut buf = vec![0u8; n];
            while out.len() < n {
                match self.stream.read(&mut buf[..n - out.len()]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => out.extend_from_slice(&buf[..k]),
                }
            }
        })
        .await;
        out
    }

    /// The next frame, `None` if the socket was closed (cleanly or not).
    pub async fn read_frame(&mut self) -> Option<AMQPFrame> {
        within("a frame from the broker", self.read_frame_inner()).await
    }

    /// The next frame, or `Err` if nothing arrived within `d`.
    pub async fn read_frame_timeout(
        &mut self,
        d: Duration,
    ) -> Result<Option<AMQPFrame>, tokio::time::error::Elapsed> {
        tokio::time::timeout(d, self.read_frame_inner()).await
    }

    /// The next frame as raw bytes: (type, channel, payload); `None` on EOF.
    pub async fn read_raw_frame(&mut self) -> Option<(u8, u16, Vec<u8>)> {
        within("a frame from the broker", async {
            let mut head = [0u8; 7];
            self.stream.read_exact(&mut head).await.ok()?;
            let channel = u16::from_be_bytes([head[1], head[2]]);
            let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
            let mut rest = vec![0u8; size + 1];
            self.stream.read_exact(&mut rest).await.ok()?;
            assert_eq!(rest.pop(), Some(0xCE), "frame end marker");
            Some((head[0], channel, rest))
        })
        .await
    }

    async fn read_frame_inner(&mut self) -> Option<AMQPFrame> {
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head).await.ok()?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut rest = vec![0u8; size + 1];
        self.stream.read_exact(&mut rest).await.ok()?;
        let mut all = head.to_vec();
        all.extend_from_slice(&rest);
        match parse_frame(&all[..]) {
            Ok((_, f)) => Some(f),
            Err(e) => panic!("cannot parse a frame from the broker ({e:?}): {all:?}"),
        }
    }

    /// The next method frame, skipping heartbeats.
    pub async fn expect_method(&mut self) -> (u16, AMQPClass) {
        loop {
            match self.read_frame().await {
                Some(AMQPFrame::Method(ch, m)) => return (ch, m),
                Some(AMQPFrame::Heartbeat) => continue,
                Some(other) => panic!("expected a method frame, got {other:?}"),
                None => panic!("the broker closed the socket while a method frame was expected"),
            }
        }
    }

    /// Wait for connection.close (skipping other frames), answer close-ok and
    /// check that the broker then closes the socket.
    pub async fn expect_connection_close(&mut self) -> CloseInfo {
        let info = loop {
            match self.read_frame().await {
                Some(AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c)))) => {
                    break CloseInfo {
                        code: c.reply_code,
                        text: c.reply_text.as_str().to_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    }
                }
                Some(_) => continue,
                None => panic!("socket closed without connection.close"),
            }
        };
        let _ = self
            .try_send_bytes(&encode_method(
                0,
                AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
            ))
            .await;
        self.expect_eof().await;
        info
    }

    /// Wait for channel.close on `channel` (skipping other frames) and answer close-ok.
    pub async fn expect_channel_close(&mut self, channel: u16) -> CloseInfo {
        let info = loop {
            match self.read_frame().await {
                Some(AMQPFrame::Method(id, AMQPClass::Channel(ch::AMQPMethod::Close(c))))
                    if id == channel =>
                {
                    break CloseInfo {
                        code: c.reply_code,
                        text: c.reply_text.as_str().to_owned(),
                        class_id: c.class_id,
                        method_id: c.method_id,
                    }
                }
                Some(AMQPFrame::Method(0, AMQPClass::Connection(conn::AMQPMethod::Close(c)))) => {
                    panic!(
                        "expected channel.close, got connection.close {} {:?}",
                        c.reply_code, c.reply_text
                    )
                }
                Some(_) => continue,
                None => panic!("socket closed without channel.close"),
            }
        };
        self.send_method(
            channel,
            AMQPClass::Channel(ch::AMQPMethod::CloseOk(ch::CloseOk {})),
        )
        .await;
        info
    }

    /// Read (and drop) frames until the broker closes the socket.
    pub async fn expect_eof(&mut self) {
        within("the broker to close the socket", async {
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await
    }

    /// Open a channel and wait for open-ok.
    pub async fn open_channel(&mut self, id: u16) {
        self.send_method(id, AMQPClass::Channel(ch::AMQPMethod::Open(ch::Open {})))
            .await;
        match self.expect_method().await {
            (c, AMQPClass::Channel(ch::AMQPMethod::OpenOk(_))) if c == id => {}
            other => panic!("expected channel.open-ok on {id}, got {other:?}"),
        }
    }

    /// Send a method and return the next method frame (the reply).
    pub async fn call(&mut self, channel: u16, method: AMQPClass) -> (u16, AMQPClass) {
        self.send_method(channel, method).await;
        self.expect_method().await
    }

    /// basic.publish + content header + body frames, split at the negotiated frame_max.
    pub async fn publish(
        &mut self,
        channel: u16,
        exchange: &str,
        routing_key: &str,
        props: basic::AMQPProperties,
        body: &[u8],
    ) {
        let out = publish_frames(channel, exchange, routing_key, props, body, self.frame_max);
        self.send_bytes(&out).await;
    }

    /// Close the write half (FIN): the broker reads the end of the stream.
    pub async fn shutdown_write(&mut self) {
        within("socket shutdown", self.stream.shutdown())
            .await
            .expect("socket shutdown");
    }

    /// Read (and keep) everything until the broker closes the socket: `Ok`
    /// for a clean end of stream, `Err` for a reset; `None` if the socket is
    /// still open after `d`.
    pub async fn read_until_closed(&mut self, d: Duration) -> Option<std::io::Result<Vec<u8>>> {
        let mut all = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(d, read).await {
            Ok(Ok(())) => Some(Ok(all)),
            Ok(Err(e)) => Some(Err(e)),
            Err(_) => None,
        }
    }
}

/// basic.publish + content header + body frames split at `frame_max`, as bytes.
pub fn publish_frames(
    channel: u16,
    exchange: &str,
    routing_key: &str,
    props: basic::AMQPProperties,
    body: &[u8],
    frame_max: u32,
) -> Vec<u8> {
    let mut out = encode_method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: ShortString::from(exchange),
            routing_key: ShortString::from(routing_key),
            mandatory: false,
            immediate: false,
        })),
    );
    out.extend(encode_frame(&AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id: 60,
            body_size: body.len() as u64,
            properties: props,
        },
    )));
    for chunk in body.chunks(frame_max as usize - 8) {
        out.extend(encode_frame(&AMQPFrame::Body(channel, chunk.to_vec())));
    }
    out
}

// ----- management API -----------------------------------------------------------------

/// A broker with the management API on an ephemeral port.
pub async fn start_broker_with_management() -> warren::Broker {
    warren::Broker::builder()
        .port(0)
        .management_port(Some(0))
        .start()
        .await
        .expect("start the broker")
}

/// A client for the broker's HTTP management API (RabbitMQ's /api), logged
/// in as one user. Requests run on a blocking thread so the broker keeps
/// serving on the test's runtime.
#[derive(Clone)]
pub struct Api {
    base: String,
    auth: Option<String>,
}

/// Status and JSON body (Null when empty) of an API reply.
pub type ApiReply = (u16, serde_json::Value);

impl Api {
    pub fn new(broker: &warren::Broker, user: &str, password: &str) -> Api {
        use base64::Engine;
        let addr = broker
            .management_addr()
            .expect("the broker serves the management API");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Api {
            base: format!("http://127.0.0.1:{}/api", addr.port()),
            auth: Some(format!("Basic {token}")),
        }
    }

    /// The same API without credentials.
    pub fn anonymous(&self) -> Api {
        Api {
            base: self.base.clone(),
            auth: None,
        }
    }

    pub async fn get(&self, path: &str) -> ApiReply {
        self.call("GET", path, None).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> ApiReply {
        self.call("PUT", path, Some(body.to_string())).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> ApiReply {
        self.call("POST", path, Some(body.to_string())).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> ApiReply {
        self.call("POST", path, Some(body.to_owned())).await
    }

    /// PUT with a raw body (for malformed-input tests).
    pub async fn put_raw(&self, path: &str, body: &str) -> ApiReply {
        self.call("PUT", path, Some(body.to_owned())).await
    }

    pub async fn delete(&self, path: &str) -> ApiReply {
        self.call("DELETE", path, None).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<String>) -> ApiReply {
        let url = format!("{}{path}", self.base);
        let auth = self.auth.clone();
        let method = method.to_owned();
        let what = format!("{method} {url}");
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(WAIT))
                .build()
                .into();
            let req = ureq::http::Request::builder()
                .method(method.as_str())
                .uri(&url)
                .header("content-type", "application/json");
            let req = match &auth {
                Some(a) => req.header("authorization", a),
                None => req,
            };
            let req = req
                .body(body.unwrap_or_default())
                .expect("a well-formed request");
            let mut resp = agent.run(req).expect("the management API answers");
            let status = resp.status().as_u16();
            let text = resp
                .body_mut()
                .read_to_string()
                .expect("a readable response body");
            let json = if text.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            };
            (status, json)
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

// ----- crash tests ---------------------------------------------------------------

/// A body that carries its id, then `len` bytes of a pattern derived from it,
/// so that any corruption shows (see [`checked_id`]).
pub fn checked_body(id: &str, len: u32) -> Vec<u8> {
    let mut b = id.as_bytes().to_vec();
    b.push(b'|');
    let seed = id
        .bytes()
        .fold(7u8, |a, c| a.wrapping_mul(31).wrapping_add(c));
    b.extend((0..len).map(|i| seed.wrapping_add(i as u8)));
    b
}

/// The id of a [`checked_body`], if the body is intact.
pub fn checked_id(body: &[u8], len: u32) -> Option<String> {
    let end = body.iter().position(|b| *b == b'|')?;
    let id = String::from_utf8(body[..end].to_vec()).ok()?;
    (body == checked_body(&id, len).as_slice()).then_some(id)
}
