//! A minimal AMQP 0-9-1 client: handshake (PLAIN), channel open and the setup
//! methods (declare, bind, qos, confirm.select, consume), encoded and decoded with
//! `warren-codec`/`amq-protocol`. The per-message path lives in [`crate::proto`] and
//! runs on the raw socket handed out by [`Conn::into_parts`].

use std::time::Duration;

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_codec::{decode_method, encode_method, Method};

use crate::proto::{self, RawFrame};
use crate::url::AmqpUrl;
use crate::{bail, Error, Result};

/// How long any setup method may wait for its reply.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a connection.
#[derive(Debug, Clone)]
pub struct ConnOpts {
    /// Heartbeat to ask for, seconds (0: off; this client never sends heartbeats
    /// from the hot path, so keep it off for load runs).
    pub heartbeat: u16,
    /// Largest frame to ask for (0: take the broker's).
    pub frame_max: u32,
    /// `connection_name` client property.
    pub name: String,
}

impl Default for ConnOpts {
    fn default() -> Self {
        ConnOpts {
            heartbeat: 0,
            frame_max: 0,
            name: "warren-perf".to_owned(),
        }
    }
}

/// An open connection, used for setup; data loops take it apart with [`Conn::into_parts`].
pub struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub frame_max: u32,
    pub channel_max: u16,
    /// Broker product and version from connection.start.
    pub server: String,
}

fn short(s: &str, what: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| Error(format!("{what} '{s}' is longer than 255 bytes")))
}

fn prop_str(t: &FieldTable, key: &str) -> Option<String> {
    match t.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn method_name(class_id: u16, method_id: u16) -> String {
    let known = match (class_id, method_id) {
        (10, 10) => "connection.start",
        (10, 11) => "connection.start-ok",
        (10, 30) => "connection.tune",
        (10, 31) => "connection.tune-ok",
        (10, 40) => "connection.open",
        (10, 50) => "connection.close",
        (20, 10) => "channel.open",
        (20, 40) => "channel.close",
        (40, 10) => "exchange.declare",
        (40, 20) => "exchange.delete",
        (50, 10) => "queue.declare",
        (50, 20) => "queue.bind",
        (50, 30) => "queue.purge",
        (50, 40) => "queue.delete",
        (60, 10) => "basic.qos",
        (60, 20) => "basic.consume",
        (60, 40) => "basic.publish",
        (60, 80) => "basic.ack",
        (60, 90) => "basic.reject",
        (60, 120) => "basic.nack",
        (85, 10) => "confirm.select",
        (0, 0) => "no method",
        _ => "",
    };
    if known.is_empty() {
        format!("method {class_id}.{method_id}")
    } else {
        known.to_owned()
    }
}

/// Turn a decoded method back into amq-protocol's form (the codec decodes the
/// hot basic methods by hand).
fn to_class(m: Method) -> Option<AMQPClass> {
    Some(match m {
        Method::Other(c) => c,
        Method::Ack {
            delivery_tag,
            multiple,
        } => AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
            delivery_tag,
            multiple,
        })),
        Method::Nack {
            delivery_tag,
            multiple,
            requeue,
        } => AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag,
            multiple,
            requeue,
        })),
        _ => return None,
    })
}

/// Describe a connection.close or channel.close sent by the broker.
pub fn describe_close(payload: &[u8]) -> String {
    match decode_method(payload).ok().and_then(to_class) {
        Some(AMQPClass::Connection(connection::AMQPMethod::Close(c))) => format!(
            "broker closed the connection: {} {} (in reply to {})",
            c.reply_code,
            c.reply_text,
            method_name(c.class_id, c.method_id)
        ),
        Some(AMQPClass::Channel(channel::AMQPMethod::Close(c))) => format!(
            "broker closed the channel: {} {} (in reply to {})",
            c.reply_code,
            c.reply_text,
            method_name(c.class_id, c.method_id)
        ),
        _ => "broker sent a close this client could not decode".to_owned(),
    }
}

impl Conn {
    /// Connect, run the handshake and open the virtual host.
    pub async fn open(url: &AmqpUrl, opts: &ConnOpts) -> Result<Conn> {
        match tokio::time::timeout(RPC_TIMEOUT, Conn::open_inner(url, opts)).await {
            Ok(r) => r,
            Err(_) => bail!(
                "connecting to {}: no connection.open-ok within {}s",
                url.addr(),
                RPC_TIMEOUT.as_secs()
            ),
        }
    }

    async fn open_inner(url: &AmqpUrl, opts: &ConnOpts) -> Result<Conn> {
        let stream = TcpStream::connect(url.addr())
            .await
            .map_err(|e| Error(format!("cannot connect to {}: {e}", url.addr())))?;
        Conn::handshake(stream, url, opts)
            .await
            .map_err(|e| e.context(format!("AMQP handshake with {}", url.addr())))
    }

    /// Run the AMQP handshake on an already connected socket.
    pub async fn handshake(stream: TcpStream, url: &AmqpUrl, opts: &ConnOpts) -> Result<Conn> {
        stream.set_nodelay(true)?;
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(4096),
            frame_max: 4096,
            channel_max: 0,
            server: String::new(),
        };
        c.stream.write_all(&warren_codec::PROTOCOL_HEADER).await?;
        let start = match c.expect(0, 10, 10).await? {
            AMQPClass::Connection(connection::AMQPMethod::Start(s)) => s,
            m => bail!("expected connection.start, got {m:?}"),
        };
        let mechs = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !mechs.split(' ').any(|m| m == "PLAIN") {
            bail!("broker does not offer PLAIN authentication (offers '{mechs}')");
        }
        // Warren announces itself as the RabbitMQ it emulates; `platform` names it
        // ("Warren <version> (Rust)").
        let platform = prop_str(&start.server_properties, "platform").unwrap_or_default();
        c.server = match platform.strip_prefix("Warren ") {
            Some(rest) => format!("Warren {}", rest.trim_end_matches(" (Rust)")),
            None => format!(
                "{} {}",
                prop_str(&start.server_properties, "product").unwrap_or_else(|| "?".into()),
                prop_str(&start.server_properties, "version").unwrap_or_default()
            )
            .trim()
            .to_owned(),
        };
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        props.insert(
            "product".into(),
            AMQPValue::LongString(LongString::from("warren-perf")),
        );
        props.insert(
            "version".into(),
            AMQPValue::LongString(LongString::from(env!("CARGO_PKG_VERSION"))),
        );
        props.insert(
            "connection_name".into(),
            AMQPValue::LongString(LongString::from(opts.name.as_str())),
        );
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let mut response = Vec::with_capacity(2 + url.user.len() + url.password.len());
        response.push(0);
        response.extend_from_slice(url.user.as_bytes());
        response.push(0);
        response.extend_from_slice(url.password.as_bytes());
        c.send(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: "PLAIN".into(),
                response: LongString::from(response),
                locale: "en_US".into(),
            })),
        )
        .await?;
        let tune = match c.expect(0, 10, 30).await {
            Ok(AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            Ok(m) => bail!("expected connection.tune, got {m:?}"),
            Err(e) => bail!(
                "{e} (after start-ok: wrong user '{}' or password?)",
                url.user
            ),
        };
        let frame_max = match (tune.frame_max, opts.frame_max) {
            (0, 0) => 131_072,
            (0, mine) => mine,
            (theirs, 0) => theirs,
            (theirs, mine) => theirs.min(mine),
        };
        let heartbeat = if opts.heartbeat == 0 || tune.heartbeat == 0 {
            0
        } else {
            opts.heartbeat.min(tune.heartbeat)
        };
        c.frame_max = frame_max;
        c.channel_max = tune.channel_max;
        c.send(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max,
                heartbeat,
            })),
        )
        .await?;
        c.rpc(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: short(&url.vhost, "virtual host")?,
            })),
            (10, 41),
        )
        .await
        .map_err(|e| e.context(format!("opening virtual host '{}'", url.vhost)))?;
        Ok(c)
    }

    async fn read_more(&mut self) -> Result<()> {
        let need = proto::frame_need(&self.rbuf).max(16 * 1024);
        self.rbuf.reserve(need);
        let n = self.stream.read_buf(&mut self.rbuf).await?;
        if n == 0 {
            bail!("broker closed the TCP connection");
        }
        Ok(())
    }

    /// Send one method frame now.
    pub async fn send(&mut self, ch: u16, m: &AMQPClass) -> Result<()> {
        encode_method(&mut self.wbuf, ch, m);
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Read frames until a method `(class_id, method_id)` arrives on `ch`. Closes
    /// from the broker become errors; heartbeats, content and other methods are skipped.
    pub async fn expect(&mut self, ch: u16, class_id: u16, method_id: u16) -> Result<AMQPClass> {
        loop {
            if self.rbuf.starts_with(b"AMQP") {
                bail!(
                    "broker refused the protocol version (replied with header {:?})",
                    &self.rbuf[..self.rbuf.len().min(8)]
                );
            }
            let got = match proto::next_frame(&self.rbuf, self.frame_max.max(131_072))? {
                None => {
                    self.read_more().await?;
                    continue;
                }
                Some((f, n)) => {
                    let r = self.classify(f, ch, class_id, method_id);
                    (r, n)
                }
            };
            let (r, n) = got;
            self.rbuf.advance(n);
            match r {
                Step::Skip => {}
                Step::Got(m) => return Ok(*m),
                Step::ConnClosed(msg) => {
                    let _ = self
                        .send(
                            0,
                            &AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        )
                        .await;
                    return Err(Error(msg));
                }
                Step::ChanClosed(c, msg) => {
                    let _ = self
                        .send(
                            c,
                            &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        )
                        .await;
                    return Err(Error(msg));
                }
                Step::Bad(msg) => return Err(Error(msg)),
            }
        }
    }

    fn classify(&self, f: RawFrame<'_>, ch: u16, class_id: u16, method_id: u16) -> Step {
        let Some(ids) = f.method_ids() else {
            return Step::Skip;
        };
        if ids == (proto::CONNECTION, proto::CONNECTION_CLOSE) {
            return Step::ConnClosed(describe_close(f.payload));
        }
        if ids == (proto::CHANNEL, proto::CHANNEL_CLOSE) {
            return Step::ChanClosed(f.channel, describe_close(f.payload));
        }
        if f.channel != ch || ids != (class_id, method_id) {
            return Step::Skip;
        }
        match decode_method(f.payload) {
            Ok(m) => match to_class(m) {
                Some(c) => Step::Got(Box::new(c)),
                None => Step::Bad(format!(
                    "unexpected method {} from broker",
                    method_name(ids.0, ids.1)
                )),
            },
            Err(e) => Step::Bad(format!(
                "cannot decode {} from broker: {e}",
                method_name(ids.0, ids.1)
            )),
        }
    }

    /// Send a method and wait for its reply.
    pub async fn rpc(&mut self, ch: u16, m: AMQPClass, reply: (u16, u16)) -> Result<AMQPClass> {
        let name = method_name(m.get_amqp_class_id(), m.get_amqp_method_id());
        let fut = async {
            self.send(ch, &m).await?;
            self.expect(ch, reply.0, reply.1).await
        };
        match tokio::time::timeout(RPC_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => bail!("no reply to {name} within {}s", RPC_TIMEOUT.as_secs()),
        }
    }

    pub async fn channel_open(&mut self, ch: u16) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            (20, 11),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("channel.open {ch}")))
    }

    pub async fn qos(&mut self, ch: u16, prefetch: u16) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
                prefetch_count: prefetch,
                global: false,
            })),
            (60, 11),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("basic.qos prefetch {prefetch}")))
    }

    pub async fn confirm_select(&mut self, ch: u16) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
            (85, 11),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context("confirm.select"))
    }

    /// Declare a queue; returns its message count.
    pub async fn queue_declare(
        &mut self,
        ch: u16,
        name: &str,
        durable: bool,
        passive: bool,
        arguments: FieldTable,
    ) -> Result<u32> {
        let r = self
            .rpc(
                ch,
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: short(name, "queue name")?,
                    passive,
                    durable,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments,
                })),
                (50, 11),
            )
            .await
            .map_err(|e| e.context(format!("queue.declare '{name}'")))?;
        match r {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(ok.message_count),
            _ => Ok(0),
        }
    }

    pub async fn queue_delete(&mut self, ch: u16, name: &str) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
                queue: short(name, "queue name")?,
                if_unused: false,
                if_empty: false,
                nowait: false,
            })),
            (50, 41),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("queue.delete '{name}'")))
    }

    pub async fn queue_bind(
        &mut self,
        ch: u16,
        queue: &str,
        exchange: &str,
        key: &str,
    ) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                queue: short(queue, "queue name")?,
                exchange: short(exchange, "exchange name")?,
                routing_key: short(key, "routing key")?,
                nowait: false,
                arguments: FieldTable::default(),
            })),
            (50, 21),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("queue.bind '{queue}' to '{exchange}'")))
    }

    pub async fn exchange_declare(
        &mut self,
        ch: u16,
        name: &str,
        kind: &str,
        durable: bool,
    ) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                exchange: short(name, "exchange name")?,
                kind: short(kind, "exchange type")?,
                passive: false,
                durable,
                auto_delete: false,
                internal: false,
                nowait: false,
                arguments: FieldTable::default(),
            })),
            (40, 11),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("exchange.declare '{name}'")))
    }

    pub async fn exchange_delete(&mut self, ch: u16, name: &str) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
                exchange: short(name, "exchange name")?,
                if_unused: false,
                nowait: false,
            })),
            (40, 21),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("exchange.delete '{name}'")))
    }

    pub async fn consume(
        &mut self,
        ch: u16,
        queue: &str,
        tag: &str,
        no_ack: bool,
        arguments: FieldTable,
    ) -> Result<()> {
        self.rpc(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                queue: short(queue, "queue name")?,
                consumer_tag: short(tag, "consumer tag")?,
                no_local: false,
                no_ack,
                exclusive: false,
                nowait: false,
                arguments,
            })),
            (60, 21),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.context(format!("basic.consume '{queue}'")))
    }

    /// connection.close, then wait (briefly) for close-ok. Errors are ignored: the
    /// socket is dropped either way.
    pub async fn close(mut self) {
        let close = AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }));
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            self.send(0, &close).await?;
            // Deliveries still in flight are read and dropped until close-ok (or the
            // broker's own close) arrives.
            loop {
                while let Some((f, n)) = proto::next_frame(&self.rbuf, self.frame_max)? {
                    let ids = f.method_ids();
                    self.rbuf.advance(n);
                    if ids == Some((proto::CONNECTION, proto::CONNECTION_CLOSE_OK))
                        || ids == Some((proto::CONNECTION, proto::CONNECTION_CLOSE))
                    {
                        return Ok::<(), Error>(());
                    }
                }
                self.read_more().await?;
            }
        })
        .await;
    }

    /// Give back buffer memory (for connections that are only held open).
    pub fn shrink(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        self.wbuf = BytesMut::new();
    }

    /// The socket, any bytes already read past the last setup reply, and frame_max.
    pub fn into_parts(self) -> (TcpStream, BytesMut, u32) {
        (self.stream, self.rbuf, self.frame_max)
    }
}

enum Step {
    Skip,
    Got(Box<AMQPClass>),
    ConnClosed(String),
    ChanClosed(u16, String),
    Bad(String),
}

/// A field table from `key=value` strings: integers become long-long ints,
/// `true`/`false` booleans, anything else a long string.
pub fn parse_args_table(args: &[String]) -> Result<FieldTable> {
    let mut t = FieldTable::default();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            bail!("queue argument '{a}' is not KEY=VALUE");
        };
        let value = if let Ok(i) = v.parse::<i64>() {
            AMQPValue::LongLongInt(i)
        } else if v == "true" || v == "false" {
            AMQPValue::Boolean(v == "true")
        } else {
            AMQPValue::LongString(LongString::from(v))
        };
        t.insert(short(k, "argument name")?, value);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_table() {
        let t =
            parse_args_table(&["x-max-length=10".into(), "x-queue-type=quorum".into()]).unwrap();
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(10))
        );
        assert_eq!(
            t.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert!(parse_args_table(&["nope".into()]).is_err());
    }

    #[test]
    fn describes_closes() {
        let mut out = BytesMut::new();
        encode_method(
            &mut out,
            1,
            &AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: 404,
                reply_text: "NOT_FOUND - no queue 'x'".into(),
                class_id: 60,
                method_id: 20,
            })),
        );
        let (f, _) = proto::next_frame(&out, 0).unwrap().unwrap();
        assert_eq!(
            describe_close(f.payload),
            "broker closed the channel: 404 NOT_FOUND - no queue 'x' (in reply to basic.consume)"
        );
    }
}
