//! The connection state machine, sans-IO: bytes and events in, bytes out.
//!
//! The driver (see [`crate::server`]) feeds it what the socket read
//! ([`Connection::handle_input`]), what other tasks sent it
//! ([`Connection::handle_event`]) and the passing of time
//! ([`Connection::handle_timeout`]), and writes out what
//! [`Connection::take_output`] returns. Nothing here touches a socket or a clock,
//! so tests can drive it frame by frame.
//!
//! Files: `handshake.rs` (start → tune → open), `channel.rs` (channel lifecycle),
//! `topology.rs` (exchange/queue methods), `consume.rs` (qos, consume, get, acks),
//! `publish.rs` (content assembly, routing, confirms, tx), `deliver.rs` (events from queues).

mod authz;
mod channel;
mod confirm;
mod consume;
mod deliver;
mod flow;
pub mod handle;
mod handshake;
mod publish;
mod reply_to;
mod topology;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{channel as ch, connection as conn, AMQPClass};
use bytes::{Bytes, BytesMut};
use warren_codec::frame::{
    decode_frame, decode_protocol_header, encode_heartbeat, Frame, ProtocolHeaderCheck,
    PROTOCOL_HEADER,
};
use warren_codec::{decode_method, decode_method_bytes, encode_method, Method, MethodError};

use crate::broker::Broker;
use crate::error::AmqpError;
use crate::message::AddressCache;
use crate::queue::{Handover, Queue};
use crate::vhost::VHost;
use channel::Channel;
pub use handle::{ConnEvent, ConnHandle, ConnectionId};

/// Frame size limit until connection.tune-ok (RabbitMQ's initial frame_max).
const HANDSHAKE_FRAME_MAX: u32 = 8192;
/// How long to wait for connection.close-ok after sending connection.close.
const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(3);
/// After close-ok, how long to wait for the client to close its end: the
/// negotiated heartbeat, but at most this (RabbitMQ's `?CLOSING_TIMEOUT` in
/// `rabbit_reader:close_connection/1`).
const DRAIN_TIMEOUT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ProtocolHeader,
    StartOk,
    TuneOk,
    Open,
    Opened,
    /// We sent connection.close and wait for close-ok.
    Closing,
    /// The client closed and got close-ok. Whatever it still sends is read and
    /// dropped until it closes its end or `close_deadline` passes, as in
    /// RabbitMQ's `closed` state: closing the socket with unread bytes in it
    /// would reset the connection, and a client that wrote publishes behind its
    /// connection.close (amqplib does) would get EPIPE instead of close-ok.
    Draining,
    /// Done: flush the output and close the socket.
    Closed,
}

/// What the client said it can handle (connection.start-ok capabilities).
#[derive(Debug, Clone, Copy, Default)]
struct ClientCaps {
    consumer_cancel_notify: bool,
    connection_blocked: bool,
    authentication_failure_close: bool,
}

pub struct Connection {
    broker: Arc<Broker>,
    handle: Arc<ConnHandle>,
    peer: SocketAddr,
    phase: Phase,
    out: BytesMut,
    frame_max: u32,
    channel_max: u16,
    heartbeat: u16,
    caps: ClientCaps,
    user: String,
    client_name: String,
    vhost: Option<Arc<VHost>>,
    /// The user's permissions in the vhost, as of registry generation `perms_generation`.
    perms: Option<Arc<crate::access::Permissions>>,
    perms_generation: u64,
    channels: HashMap<u16, Channel>,
    exclusive_queues: Vec<Arc<Queue>>,
    started: Instant,
    last_recv: Instant,
    last_send: Instant,
    close_deadline: Option<Instant>,
    close_reason: Option<String>,
    cleaned_up: bool,
    /// Whether the client ever published (only publishers are blocked by alarms).
    has_published: bool,
    /// connection.blocked was sent and not yet followed by unblocked.
    sent_blocked: bool,
    /// Source of channel epochs.
    next_epoch: u64,
    /// Scratch list of the queues a message routes to (reused per publish).
    routed: Vec<Arc<Queue>>,
    /// Recent exchange/routing-key pairs, shared by the messages published with them.
    addresses: AddressCache,
    /// Flow-control pauses outstanding (reading is paused while > 0).
    flow_paused: usize,
    /// A `basic.get` whose queue is reading its head from disk: input stops
    /// here (later methods must not overtake it) until the queue says to retry.
    waiting_get: Option<(u16, Method)>,
    /// Bytes handed to the store since the last flow-control barrier (flow.rs).
    unsynced_bytes: usize,
    /// Input processing stopped mid-buffer (a waiting `basic.get`); cleared
    /// by [`resume_input`](Self::resume_input).
    input_paused: bool,
}

impl Connection {
    pub fn new(
        broker: Arc<Broker>,
        handle: Arc<ConnHandle>,
        peer: SocketAddr,
        now: Instant,
    ) -> Connection {
        Connection {
            broker,
            handle,
            peer,
            phase: Phase::ProtocolHeader,
            out: BytesMut::with_capacity(4096),
            frame_max: HANDSHAKE_FRAME_MAX,
            channel_max: 0,
            heartbeat: 0,
            caps: ClientCaps::default(),
            user: String::new(),
            client_name: String::new(),
            vhost: None,
            perms: None,
            perms_generation: u64::MAX,
            channels: HashMap::new(),
            exclusive_queues: Vec::new(),
            started: now,
            last_recv: now,
            last_send: now,
            close_deadline: None,
            close_reason: None,
            cleaned_up: false,
            has_published: false,
            sent_blocked: false,
            next_epoch: 0,
            routed: Vec::new(),
            addresses: AddressCache::default(),
            flow_paused: 0,
            waiting_get: None,
            unsynced_bytes: 0,
            input_paused: false,
        }
    }

    pub fn id(&self) -> ConnectionId {
        self.handle.id
    }

    /// The connection is finished: flush what [`take_output`](Self::take_output) returns, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the driver should read more from the socket. False while the
    /// client is not reading what we send (back-pressure through TCP).
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Closed => return false,
            // Nothing read is kept, so nothing to hold back.
            Phase::Draining => return true,
            _ => {}
        }
        self.handle.writer_backlog() < handle::READ_STOP
            && !self.blocked_by_alarm()
            && self.flow_paused == 0
            && self.waiting_get.is_none()
    }

    /// A publishing connection is not read while a resource alarm is raised.
    fn blocked_by_alarm(&self) -> bool {
        self.has_published && self.broker.alarms().blocked_reason().is_some()
    }

    /// Why the connection ended, for the log.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The vhost the connection opened ("" before connection.open).
    pub fn vhost_name(&self) -> &str {
        self.vhost.as_ref().map_or("", |v| v.name.as_str())
    }

    /// Bytes to write to the socket, if any.
    pub fn take_output(&mut self, now: Instant) -> Option<Bytes> {
        if self.out.is_empty() {
            return None;
        }
        self.last_send = now;
        Some(self.out.split().freeze())
    }

    /// Frames left in `buf` while input was paused, processed once it may go
    /// on (nothing new was read, so the heartbeat clock is not touched).
    pub fn resume_input(&mut self, buf: &mut BytesMut, now: Instant) {
        if self.input_paused && self.wants_read() {
            self.input_paused = false;
            let last_recv = self.last_recv;
            self.handle_input(buf, now);
            self.last_recv = last_recv;
        }
    }

    /// Process every complete frame in `buf`.
    pub fn handle_input(&mut self, buf: &mut BytesMut, now: Instant) {
        self.last_recv = now;
        loop {
            if self.waiting_get.is_some() {
                // The rest waits in `buf` until the get is answered.
                self.input_paused = true;
                break;
            }
            match self.phase {
                Phase::Closed => {
                    buf.clear();
                    break;
                }
                Phase::ProtocolHeader => match decode_protocol_header(buf) {
                    ProtocolHeaderCheck::NeedMore => break,
                    ProtocolHeaderCheck::Accepted => {
                        self.send_start();
                        self.phase = Phase::StartOk;
                        continue;
                    }
                    ProtocolHeaderCheck::Refused => {
                        self.out.extend_from_slice(&PROTOCOL_HEADER);
                        self.close_reason = Some("unsupported protocol header".into());
                        self.phase = Phase::Closed;
                        break;
                    }
                },
                _ => {}
            }
            let limit = if matches!(self.phase, Phase::Opened | Phase::Closing | Phase::Draining) {
                self.frame_max
            } else {
                HANDSHAKE_FRAME_MAX
            };
            match decode_frame(buf, limit) {
                Ok(Some(frame)) => self.handle_frame(frame, now),
                Ok(None) => break,
                // A whole frame of an unknown type was consumed; once closing,
                // RabbitMQ ignores it instead of failing the connection.
                Err(warren_codec::FrameError::UnknownType { .. })
                    if matches!(self.phase, Phase::Closing | Phase::Draining) =>
                {
                    continue
                }
                Err(e) => {
                    let err = AmqpError::frame_error(match e {
                        // RabbitMQ's wording; its limit is the payload room, frame_max - 8.
                        warren_codec::FrameError::TooLarge { kind, size, max } => {
                            format!(
                                "type {kind}, all octets = <<>>: {{frame_too_large,{size},{}}}",
                                max.saturating_sub(8)
                            )
                        }
                        other => other.to_string(),
                    });
                    self.connection_error(err, now);
                    // The byte stream can no longer be trusted: stop reading it.
                    buf.clear();
                    self.phase = Phase::Closed;
                    break;
                }
            }
        }
        self.flush_confirms();
        self.limit_store_backlog();
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) {
        match self.phase {
            Phase::Closing => return self.handle_frame_while_closing(frame),
            Phase::Draining => return self.handle_frame_while_draining(frame),
            Phase::Closed | Phase::ProtocolHeader => return,
            Phase::StartOk | Phase::TuneOk | Phase::Open => {
                return self.handle_handshake_frame(frame, now)
            }
            Phase::Opened => {}
        }
        match frame {
            Frame::Heartbeat { channel: 0 } => {}
            Frame::Heartbeat { .. } => self.connection_error(
                AmqpError::unexpected_frame("type 8, all octets = <<>>"),
                now,
            ),
            Frame::Method { channel, payload } => {
                let method = match decode_method_bytes(&payload) {
                    Ok(m) => m,
                    Err(e) => return self.method_decode_error(e, &payload, now),
                };
                if channel == 0 {
                    self.handle_connection_method(method, now);
                } else {
                    let ids = method.ids();
                    if let Err(e) = self.handle_channel_method(channel, method, now) {
                        self.fail(channel, e.during(ids), now);
                    }
                }
            }
            Frame::Header { channel, payload } => {
                if let Err(e) = self.handle_content_header(channel, payload) {
                    self.fail(channel, e, now);
                }
            }
            Frame::Body { channel, payload } => {
                if let Err(e) = self.handle_content_body(channel, payload) {
                    self.fail(channel, e, now);
                }
            }
        }
    }

    fn method_decode_error(&mut self, e: MethodError, payload: &[u8], now: Instant) {
        let ids = e.ids();
        let err = match e {
            MethodError::Unknown {
                class_id,
                method_id,
            } => AmqpError::command_invalid(format!("unknown method {class_id}.{method_id}")),
            // RabbitMQ's wording: the method's argument bytes, as an Erlang binary.
            MethodError::Syntax { .. } => AmqpError::frame_error(format!(
                "cannot decode {}",
                warren_codec::reply::erlang_binary(payload.get(4..).unwrap_or_default())
            )),
            MethodError::TooDeep { .. } => AmqpError::syntax_error(format!(
                "field table nested deeper than {} levels",
                warren_codec::table_guard::MAX_DEPTH
            )),
        };
        self.connection_error(err.during(ids), now);
    }

    fn handle_connection_method(&mut self, method: Method, now: Instant) {
        let ids = method.ids();
        match method {
            Method::Other(AMQPClass::Connection(conn::AMQPMethod::Close(c))) => {
                self.close_reason = Some(format!(
                    "client closed the connection: {} {}",
                    c.reply_code, c.reply_text
                ));
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
                self.cleanup();
                self.phase = Phase::Draining;
                self.close_deadline = Some(now + self.drain_timeout());
            }
            Method::Other(AMQPClass::Connection(conn::AMQPMethod::CloseOk(_))) => {}
            Method::Other(AMQPClass::Connection(conn::AMQPMethod::UpdateSecret(_))) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::UpdateSecretOk(
                        conn::UpdateSecretOk {},
                    )),
                );
            }
            Method::Other(AMQPClass::Connection(_)) => self.connection_error(
                AmqpError::channel_error("unexpected method in connection state running")
                    .during(ids),
                now,
            ),
            _ => self.connection_error(
                AmqpError::channel_error("unexpected method in connection state running")
                    .during(ids),
                now,
            ),
        }
    }

    fn handle_frame_while_closing(&mut self, frame: Frame) {
        if let Frame::Method {
            channel: 0,
            payload,
        } = frame
        {
            match decode_method(&payload) {
                Ok(Method::Other(AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)))) => {
                    self.phase = Phase::Closed;
                }
                Ok(Method::Other(AMQPClass::Connection(conn::AMQPMethod::Close(_)))) => {
                    self.send_method(
                        0,
                        AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                    );
                    self.phase = Phase::Closed;
                }
                _ => {}
            }
        }
    }

    /// After close-ok: frames are dropped unprocessed (a publish behind the
    /// close is not routed); only another connection.close is answered, and a
    /// close-ok ends the connection, as RabbitMQ's `handle_method0` does when
    /// closed.
    fn handle_frame_while_draining(&mut self, frame: Frame) {
        let Frame::Method {
            channel: 0,
            payload,
        } = frame
        else {
            return;
        };
        match decode_method(&payload) {
            Ok(Method::Other(AMQPClass::Connection(conn::AMQPMethod::Close(_)))) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
            }
            Ok(Method::Other(AMQPClass::Connection(conn::AMQPMethod::CloseOk(_)))) => {
                self.phase = Phase::Closed;
            }
            _ => {}
        }
    }

    /// How long a drained connection waits for the client to close its end:
    /// the negotiated heartbeat if below [`DRAIN_TIMEOUT_MAX`], else that.
    fn drain_timeout(&self) -> Duration {
        let hb = Duration::from_secs(self.heartbeat as u64);
        if hb.is_zero() || hb > DRAIN_TIMEOUT_MAX {
            DRAIN_TIMEOUT_MAX
        } else {
            hb
        }
    }

    /// Report an error: channel errors close the channel, connection errors the connection.
    fn fail(&mut self, channel: u16, err: AmqpError, now: Instant) {
        if err.is_connection_error() || channel == 0 {
            self.connection_error(err, now);
        } else {
            self.channel_error(channel, err);
        }
    }

    /// Send connection.close and wait (briefly) for close-ok.
    fn connection_error(&mut self, err: AmqpError, now: Instant) {
        if matches!(self.phase, Phase::Closing | Phase::Draining | Phase::Closed) {
            return;
        }
        tracing::debug!(conn = self.id(), code = err.code.0, text = %err.text, "closing connection on error");
        self.close_reason = Some(err.text.clone());
        self.flush_confirms();
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Close(conn::Close {
                reply_code: err.code.0,
                reply_text: short(&err.text),
                class_id: err.class_id,
                method_id: err.method_id,
            })),
        );
        self.cleanup();
        self.phase = Phase::Closing;
        self.close_deadline = Some(now + CLOSE_OK_TIMEOUT);
    }

    /// Events from queues and the broker.
    pub fn handle_event(&mut self, ev: ConnEvent, now: Instant) {
        match ev {
            ConnEvent::Deliver(Handover {
                channel,
                consumer_tag,
                no_ack,
                queue,
                message,
            }) => self.on_deliver(channel, consumer_tag, no_ack, queue, message, now),
            ConnEvent::ConsumerCancelled {
                channel,
                consumer_tag,
            } => self.on_consumer_cancelled(channel, consumer_tag),
            ConnEvent::Drained => self.on_drained(),
            ConnEvent::DirectReply {
                channel,
                key,
                message,
            } => self.on_direct_reply(channel, key, message),
            ConnEvent::Alarm => self.on_alarm(),
            ConnEvent::FlowResume => self.flow_paused = self.flow_paused.saturating_sub(1),
            ConnEvent::GetReady { channel } => self.retry_get(channel, now),
            ConnEvent::Persisted {
                channel,
                epoch,
                upto,
                ok,
            } => self.on_persisted(channel, epoch, upto, ok),
            ConnEvent::TxCommitted { channel, epoch, ok } => {
                self.on_tx_committed(channel, epoch, ok)
            }
            ConnEvent::ForceClose { code, text } => {
                let err = AmqpError::raw(warren_codec::reply::ReplyCode(code), text);
                self.connection_error(err, now);
            }
        }
    }

    /// Tell a publishing client it is blocked (or unblocked), if it understands
    /// it. As in RabbitMQ, only connections that publish are blocked, and only
    /// the change between blocked and unblocked is sent (not a change of reason).
    pub(super) fn on_alarm(&mut self) {
        if self.phase != Phase::Opened || !self.caps.connection_blocked {
            return;
        }
        match self.broker.alarms().blocked_reason() {
            Some(reason) if !self.sent_blocked && self.has_published => {
                self.sent_blocked = true;
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::Blocked(conn::Blocked {
                        reason: reason.into(),
                    })),
                );
            }
            None if self.sent_blocked => {
                self.sent_blocked = false;
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::Unblocked(conn::Unblocked {})),
                );
            }
            _ => {}
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Closing => self.close_deadline,
            // RabbitMQ's heartbeat sender runs on until the socket closes.
            Phase::Draining => match (self.close_deadline, self.heartbeat) {
                (Some(d), hb) if hb > 0 => {
                    Some(d.min(self.last_send + Duration::from_secs(hb as u64) / 2))
                }
                (d, _) => d,
            },
            Phase::Opened => {
                let heartbeat = (self.heartbeat > 0).then(|| {
                    let hb = Duration::from_secs(self.heartbeat as u64);
                    (self.last_send + hb / 2).min(self.last_recv + hb * 2)
                });
                [heartbeat, self.consumer_deadline().map(|(_, at)| at)]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => Some(self.started + self.broker.config.handshake_timeout),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Closed => {}
            Phase::Closing => {
                if self.close_deadline.is_some_and(|d| now >= d) {
                    self.phase = Phase::Closed;
                }
            }
            Phase::Draining => {
                let hb = Duration::from_secs(self.heartbeat as u64);
                if self.close_deadline.is_none_or(|d| now >= d) {
                    self.phase = Phase::Closed;
                } else if !hb.is_zero() && now >= self.last_send + hb / 2 {
                    encode_heartbeat(&mut self.out);
                }
            }
            Phase::Opened => {
                self.expire_deliveries(now);
                if self.heartbeat == 0 || self.phase != Phase::Opened {
                    return;
                }
                let hb = Duration::from_secs(self.heartbeat as u64);
                if !self.wants_read() {
                    // We are not reading: the client's silence proves nothing.
                    self.last_recv = now;
                }
                if now >= self.last_recv + hb * 2 {
                    self.close_reason = Some(format!(
                        "missed heartbeats from client, timeout: {}s",
                        self.heartbeat
                    ));
                    self.cleanup();
                    self.phase = Phase::Closed;
                } else if now >= self.last_send + hb / 2 {
                    encode_heartbeat(&mut self.out);
                }
            }
            _ => {
                if now >= self.started + self.broker.config.handshake_timeout {
                    self.close_reason = Some("handshake timeout".into());
                    self.cleanup();
                    self.phase = Phase::Closed;
                }
            }
        }
    }

    /// The channel whose oldest unacknowledged delivery times out first, and when.
    fn consumer_deadline(&self) -> Option<(u16, Instant)> {
        let timeout = self.broker.config.consumer_timeout?;
        self.channels
            .iter()
            .filter(|(_, c)| !c.closing)
            .filter_map(|(id, c)| {
                let (_, oldest) = c.unacked.first_key_value()?;
                Some((*id, oldest.delivered_at + timeout))
            })
            .min_by_key(|(_, at)| *at)
    }

    /// Close, as RabbitMQ does, each channel holding a delivery unacknowledged
    /// past the consumer timeout; closing requeues its messages.
    fn expire_deliveries(&mut self, now: Instant) {
        let Some(timeout) = self.broker.config.consumer_timeout else {
            return;
        };
        while let Some((id, at)) = self.consumer_deadline() {
            if at > now {
                return;
            }
            tracing::warn!(
                conn = self.id(),
                channel = id,
                "a consumer on channel {id} timed out waiting for a delivery acknowledgement ({} ms); closing the channel",
                timeout.as_millis()
            );
            self.fail(
                id,
                AmqpError::precondition_failed(format!(
                    "delivery acknowledgement on channel {id} timed out. Timeout value used: {} ms. This timeout value can be configured, see consumers doc guide to learn more",
                    timeout.as_millis()
                )),
                now,
            );
        }
    }

    /// The socket is gone: release everything the connection held. Idempotent.
    pub fn cleanup(&mut self) {
        if self.cleaned_up {
            return;
        }
        self.cleaned_up = true;
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            if let Some(mut c) = self.channels.remove(&id) {
                self.release_channel(&mut c);
            }
        }
        if let Some(vhost) = self.vhost.clone() {
            for q in self.exclusive_queues.drain(..) {
                vhost.drop_queue(&q);
            }
        }
        self.broker.unregister_connection(self.id());
    }

    fn send_method(&mut self, channel: u16, method: AMQPClass) {
        encode_method(&mut self.out, channel, &method);
    }

    fn send_channel_close(&mut self, channel: u16, err: &AmqpError) {
        self.send_method(
            channel,
            AMQPClass::Channel(ch::AMQPMethod::Close(ch::Close {
                reply_code: err.code.0,
                reply_text: short(&err.text),
                class_id: err.class_id,
                method_id: err.method_id,
            })),
        );
    }
}

/// A short string for a reply text, cut to 255 bytes on a character boundary.
/// A reply text as a short string: cut to 255 bytes ending in "..." as RabbitMQ does.
pub(crate) fn short(s: &str) -> amq_protocol::types::ShortString {
    if s.len() <= 255 {
        return amq_protocol::types::ShortString::try_new(s).unwrap_or_default();
    }
    let mut end = 252;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    amq_protocol::types::ShortString::try_new(format!("{}...", &s[..end])).unwrap_or_default()
}

#[cfg(test)]
mod tests;
