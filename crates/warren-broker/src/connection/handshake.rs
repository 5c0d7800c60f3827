//! connection.start → start-ok → tune → tune-ok → open → open-ok.

use std::time::Instant;

use amq_protocol::protocol::{connection as conn, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use nom::Parser;
use warren_codec::frame::Frame;
use warren_codec::{decode_method, Method};

use super::{Connection, Phase};
use crate::error::AmqpError;

const MECHANISMS: &str = "PLAIN AMQPLAIN";

impl Connection {
    pub(super) fn send_start(&mut self) {
        let mut caps = FieldTable::default();
        for cap in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "authentication_failure_close",
            "per_consumer_qos",
            "consumer_priorities",
            "direct_reply_to",
            "connection.blocked",
        ] {
            caps.insert(cap.into(), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
        let cfg = &self.broker.config;
        let platform = format!("Warren {} (Rust)", env!("CARGO_PKG_VERSION"));
        let information = format!(
            "Warren {}, an AMQP 0-9-1 broker that behaves like RabbitMQ {}",
            env!("CARGO_PKG_VERSION"),
            cfg.server_version
        );
        // Client libraries switch behaviour on product and version (kombu picks
        // Celery's global QoS only for "RabbitMQ" 3.3–3.x), so Warren presents
        // itself as the RabbitMQ it emulates; `platform` ("Warren <version> (Rust)")
        // and `information` name it. No extra keys: clients compare the key set.
        for (k, v) in [
            ("product", cfg.server_product.as_str()),
            ("version", cfg.server_version.as_str()),
            ("platform", platform.as_str()),
            ("copyright", "Copyright (c) the Warren authors"),
            ("information", information.as_str()),
            ("cluster_name", "warren"),
        ] {
            props.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
        }
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Start(conn::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: props,
                mechanisms: LongString::from(MECHANISMS),
                locales: LongString::from("en_US"),
            })),
        );
    }

    pub(super) fn handle_handshake_frame(&mut self, frame: Frame, now: Instant) {
        let payload = match frame {
            Frame::Method {
                channel: 0,
                payload,
            } => payload,
            Frame::Heartbeat { channel: 0 } => return,
            _ => {
                return self.connection_error(
                    AmqpError::unexpected_frame(
                        "expected a method frame on channel 0 during the handshake",
                    ),
                    now,
                )
            }
        };
        let method = match decode_method(&payload) {
            Ok(m) => m,
            Err(e) => return self.method_decode_error(e, &payload, now),
        };
        let ids = method.ids();
        let result = match (self.phase, method) {
            (
                Phase::StartOk,
                Method::Other(AMQPClass::Connection(conn::AMQPMethod::StartOk(s))),
            ) => self.on_start_ok(s, now),
            (Phase::TuneOk, Method::Other(AMQPClass::Connection(conn::AMQPMethod::TuneOk(t)))) => {
                self.on_tune_ok(t)
            }
            (Phase::Open, Method::Other(AMQPClass::Connection(conn::AMQPMethod::Open(o)))) => {
                self.on_open(o)
            }
            (_, Method::Other(AMQPClass::Connection(conn::AMQPMethod::Close(_)))) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(conn::AMQPMethod::CloseOk(conn::CloseOk {})),
                );
                self.close_reason =
                    Some("client closed the connection during the handshake".into());
                self.phase = Phase::Closed;
                Ok(())
            }
            (phase, _) => Err(AmqpError::channel_error(format!(
                "unexpected method in connection state {}",
                match phase {
                    Phase::StartOk => "starting",
                    Phase::TuneOk => "tuning",
                    _ => "opening",
                }
            ))),
        };
        if let Err(e) = result {
            self.connection_error(e.during(ids), now);
        }
    }

    fn on_start_ok(&mut self, s: conn::StartOk, now: Instant) -> Result<(), AmqpError> {
        if let Some(AMQPValue::FieldTable(caps)) = s.client_properties.inner().get("capabilities") {
            let flag = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            self.caps.consumer_cancel_notify = flag("consumer_cancel_notify");
            self.caps.authentication_failure_close = flag("authentication_failure_close");
            self.caps.connection_blocked = flag("connection.blocked");
        }
        if let Some(AMQPValue::LongString(n)) = s.client_properties.inner().get("connection_name") {
            self.client_name = String::from_utf8_lossy(n.as_bytes()).into_owned();
        }
        let mechanism = s.mechanism.as_str().to_owned();
        let (user, password) = match mechanism.as_str() {
            "PLAIN" => parse_plain(s.response.as_bytes()),
            "AMQPLAIN" => parse_amqplain(s.response.as_bytes()),
            other => {
                return Err(AmqpError::command_invalid(format!(
                    "unknown authentication mechanism '{other}'"
                )))
            }
        }
        .ok_or_else(|| {
            AmqpError::syntax_error(format!("malformed {mechanism} authentication response"))
        })?;
        if let Err(why) = self.broker.authenticate(&user, &password, self.peer.ip()) {
            tracing::warn!(peer = %self.peer, "{mechanism} login refused: {why}");
            let text = format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            );
            self.close_reason = Some(format!("{mechanism} login refused: {why}"));
            if self.caps.authentication_failure_close {
                let err = AmqpError::access_refused(text);
                self.connection_error(err, now);
            } else {
                self.cleanup();
                self.phase = Phase::Closed;
            }
            return Ok(());
        }
        self.user = user;
        let cfg = &self.broker.config;
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::Tune(conn::Tune {
                channel_max: cfg.channel_max,
                frame_max: cfg.frame_max,
                heartbeat: cfg.heartbeat,
            })),
        );
        self.phase = Phase::TuneOk;
        Ok(())
    }

    fn on_tune_ok(&mut self, t: conn::TuneOk) -> Result<(), AmqpError> {
        let cfg = &self.broker.config;
        check_negotiated(
            "channel_max",
            t.channel_max as u32,
            cfg.channel_max as u32,
            0,
        )?;
        check_negotiated("frame_max", t.frame_max, cfg.frame_max, 4096)?;
        self.channel_max = t.channel_max;
        self.frame_max = t.frame_max;
        self.heartbeat = t.heartbeat;
        self.phase = Phase::Open;
        Ok(())
    }

    fn on_open(&mut self, o: conn::Open) -> Result<(), AmqpError> {
        let name = o.virtual_host.as_str();
        let vhost = self
            .broker
            .vhost(name)
            .ok_or_else(|| AmqpError::not_allowed(format!("vhost {name} not found")))?;
        if self.broker.access.permission(name, &self.user).is_none() {
            tracing::warn!(peer = %self.peer, user = %self.user, vhost = name, "vhost access refused: the user has no permissions there");
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{name}' refused for user '{}'",
                self.user
            )));
        }
        self.vhost = Some(vhost);
        let _ = self.handle.identity.set(super::handle::Identity {
            user: self.user.clone(),
            vhost: name.to_owned(),
        });
        self.send_method(
            0,
            AMQPClass::Connection(conn::AMQPMethod::OpenOk(conn::OpenOk {})),
        );
        self.phase = Phase::Opened;
        tracing::info!(
            conn = self.id(),
            peer = %self.peer,
            user = %self.user,
            vhost = name,
            client = %self.client_name,
            "connection opened"
        );
        Ok(())
    }
}

/// RabbitMQ's rule: the client may lower a limit, but not remove it or raise it.
fn check_negotiated(what: &str, value: u32, server: u32, min: u32) -> Result<(), AmqpError> {
    if value != 0 && value < min {
        return Err(AmqpError::not_allowed(format!(
            "negotiated {what} = {value} is lower than the minimum allowed value ({min})"
        ))
        .during((10, 30)));
    }
    if server != 0 && (value == 0 || value > server) {
        // RabbitMQ says "(no limit)" only for channel_max.
        let shown = if value == 0 && what == "channel_max" {
            "0 (no limit)".to_string()
        } else {
            value.to_string()
        };
        return Err(AmqpError::not_allowed(format!(
            "negotiated {what} = {shown} is higher than the maximum allowed value ({server})"
        ))
        .during((10, 30)));
    }
    Ok(())
}

/// PLAIN: `[authzid] NUL user NUL password`.
fn parse_plain(resp: &[u8]) -> Option<(String, String)> {
    let mut parts = resp.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

/// AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD.
fn parse_amqplain(resp: &[u8]) -> Option<(String, String)> {
    let mut framed = (resp.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(resp);
    warren_codec::table_guard::check_table(&framed).ok()?;
    let (_, table) =
        nom::combinator::all_consuming(amq_protocol::types::parsing::parse_field_table)
            .parse_complete(&framed[..])
            .ok()?;
    let get = |k: &str| match table.inner().get(k)? {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    Some((get("LOGIN")?, get("PASSWORD")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_amqplain() {
        assert_eq!(
            parse_plain(b"\0guest\0guest"),
            Some(("guest".into(), "guest".into()))
        );
        assert_eq!(parse_plain(b"guest"), None);
        let mut t = Vec::new();
        for (k, v) in [("LOGIN", "u"), ("PASSWORD", "p")] {
            t.push(k.len() as u8);
            t.extend_from_slice(k.as_bytes());
            t.push(b'S');
            t.extend_from_slice(&(v.len() as u32).to_be_bytes());
            t.extend_from_slice(v.as_bytes());
        }
        assert_eq!(parse_amqplain(&t), Some(("u".into(), "p".into())));
        assert_eq!(parse_amqplain(&t[..5]), None);
    }

    #[test]
    fn tune_limits() {
        assert!(check_negotiated("frame_max", 131072, 131072, 8192).is_ok());
        assert!(check_negotiated("frame_max", 2048, 131072, 4096).is_err());
        let e = check_negotiated("channel_max", 0, 2047, 0).unwrap_err();
        assert_eq!(
            e.text,
            "NOT_ALLOWED - negotiated channel_max = 0 (no limit) is higher than the maximum allowed value (2047)"
        );
    }
}
