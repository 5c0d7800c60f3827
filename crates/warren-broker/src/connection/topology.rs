//! exchange.* and queue.* methods.

use std::sync::Arc;

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::ShortString;

use super::Connection;
use crate::access::{required, Resource};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::Dest;
use crate::names;
use crate::queue::args::QueueType;
use crate::vhost::{ExchangeDecl, QueueDecl, VHost};

impl Connection {
    pub(super) fn vhost(&self) -> AmqpResult<Arc<VHost>> {
        self.vhost
            .clone()
            .ok_or_else(|| AmqpError::channel_error("connection is not open"))
    }

    /// Resolve an empty queue name to the channel's last declared queue.
    pub(super) fn resolve_queue_name(&mut self, channel: u16, name: &str) -> AmqpResult<String> {
        if !name.is_empty() {
            return Ok(name.to_owned());
        }
        self.channel_mut(channel)?
            .last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    pub(super) fn on_exchange_declare(&mut self, id: u16, d: exchange::Declare) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        // RabbitMQ checks the type before the name (a 503 wins over a 403).
        if !d.passive
            && warren_routing::ExchangeKind::parse(d.kind.as_str()).is_none()
            && d.kind.as_str() != crate::delayed::DELAYED_TYPE
        {
            return Err(AmqpError::command_invalid(format!(
                "invalid exchange type '{}'",
                d.kind.as_str()
            )));
        }
        let name = strip_cr_lf(d.exchange.as_str());
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if !d.passive {
            self.permit_all(&required::exchange_declare(&name, &d.arguments))?;
        }
        vhost.declare_exchange(&ExchangeDecl {
            name,
            kind: d.kind.as_str().to_owned(),
            passive: d.passive,
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            arguments: d.arguments,
        })?;
        if !d.nowait {
            self.send_method(
                id,
                AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
            );
        }
        Ok(())
    }

    pub(super) fn on_exchange_delete(&mut self, id: u16, d: exchange::Delete) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let name = d.exchange.as_str();
        vhost.check_exchange_deletable(name)?;
        self.permit_all(&[required::exchange_delete(name)])?;
        vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
        if !d.nowait {
            self.send_method(
                id,
                AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
            );
        }
        Ok(())
    }

    pub(super) fn on_exchange_bind(&mut self, id: u16, b: exchange::Bind) -> AmqpResult<()> {
        self.permit_binding(
            Resource::Exchange,
            b.destination.as_str(),
            b.source.as_str(),
        )?;
        self.vhost()?.bind(
            b.source.as_str(),
            Dest::Exchange(b.destination.as_str().into()),
            b.routing_key.as_str(),
            &b.arguments,
            self.id(),
        )?;
        if !b.nowait {
            self.send_method(
                id,
                AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
            );
        }
        Ok(())
    }

    pub(super) fn on_exchange_unbind(&mut self, id: u16, u: exchange::Unbind) -> AmqpResult<()> {
        self.permit_binding(
            Resource::Exchange,
            u.destination.as_str(),
            u.source.as_str(),
        )?;
        self.vhost()?.unbind(
            u.source.as_str(),
            Dest::Exchange(u.destination.as_str().into()),
            u.routing_key.as_str(),
            &u.arguments,
            self.id(),
        )?;
        if !u.nowait {
            self.send_method(
                id,
                AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
            );
        }
        Ok(())
    }

    pub(super) fn on_queue_declare(&mut self, id: u16, d: queue::Declare) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let requested = strip_cr_lf(d.queue.as_str());
        let server_named = requested.is_empty() && !d.passive;
        if server_named {
            // Only classic queues may be server-named (RabbitMQ checks this first).
            if let Some(t @ (QueueType::Quorum | QueueType::Stream)) =
                QueueType::declared(&d.arguments)
            {
                return Err(AmqpError::precondition_failed(format!(
                    "Cannot declare a server-named queue for type {}",
                    t.module()
                )));
            }
        }
        // A passive declare of '' looks for a queue named '' (and finds none):
        // the "last declared queue" shortcut does not apply to declare.
        let name = if server_named {
            names::queue_name()
        } else {
            requested
        };
        if name == super::reply_to::REPLY_TO
            || d.passive
                && name.starts_with(super::reply_to::REPLY_TO)
                && self.reply_address_alive(&name)
        {
            self.send_method(
                id,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: ShortString::try_new(name).unwrap_or_default(),
                    message_count: 0,
                    consumer_count: 1,
                })),
            );
            return Ok(());
        }
        let decl = QueueDecl {
            name,
            passive: d.passive,
            durable: d.durable,
            exclusive: d.exclusive,
            auto_delete: d.auto_delete,
            arguments: d.arguments,
            server_named,
        };
        // A reserved name is refused before permissions are looked at.
        crate::vhost::check_queue_name(&decl)?;
        if !decl.passive {
            self.permit_all(&required::queue_declare(&decl.name, &decl.arguments))?;
        }
        let (q, messages, consumers) = vhost.declare_queue(&decl, self.id())?;
        if q.args.queue_type == QueueType::Quorum {
            self.broker.note_quorum_declared();
        }
        if q.exclusive_owner == Some(self.id())
            && !self.exclusive_queues.iter().any(|e| Arc::ptr_eq(e, &q))
        {
            self.exclusive_queues.push(q.clone());
        }
        self.channel_mut(id)?.last_queue = Some(q.name.clone());
        if !d.nowait {
            self.send_method(
                id,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: ShortString::try_new(q.name.clone()).unwrap_or_default(),
                    message_count: messages,
                    consumer_count: consumers,
                })),
            );
        }
        Ok(())
    }

    /// The queue and routing key of queue.bind/unbind: an empty queue name means
    /// the channel's last declared queue, and then an empty key means its name.
    fn binding_target(&mut self, id: u16, queue: &str, key: &str) -> AmqpResult<(String, String)> {
        let name = self.resolve_queue_name(id, queue)?;
        let key = if queue.is_empty() && key.is_empty() {
            name.clone()
        } else {
            key.to_owned()
        };
        Ok((name, key))
    }

    pub(super) fn on_queue_bind(&mut self, id: u16, b: queue::Bind) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let (name, key) = self.binding_target(id, b.queue.as_str(), b.routing_key.as_str())?;
        self.permit_binding(Resource::Queue, &name, b.exchange.as_str())?;
        vhost.bind(
            b.exchange.as_str(),
            Dest::Queue(name.as_str().into()),
            &key,
            &b.arguments,
            self.id(),
        )?;
        if !b.nowait {
            self.send_method(
                id,
                AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
            );
        }
        Ok(())
    }

    pub(super) fn on_queue_unbind(&mut self, id: u16, u: queue::Unbind) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let (name, key) = self.binding_target(id, u.queue.as_str(), u.routing_key.as_str())?;
        self.permit_binding(Resource::Queue, &name, u.exchange.as_str())?;
        vhost.unbind(
            u.exchange.as_str(),
            Dest::Queue(name.as_str().into()),
            &key,
            &u.arguments,
            self.id(),
        )?;
        self.send_method(
            id,
            AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
        );
        Ok(())
    }

    pub(super) fn on_queue_purge(&mut self, id: u16, p: queue::Purge) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let name = self.resolve_queue_name(id, p.queue.as_str())?;
        self.permit_all(&[required::queue_purge(&name)])?;
        let q = vhost.usable_queue(&name, self.id())?;
        if q.stream().is_some() {
            return Err(super::consume::not_for_streams("queue.purge", &q));
        }
        let n = q.purge();
        if !p.nowait {
            self.send_method(
                id,
                AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                    message_count: n,
                })),
            );
        }
        Ok(())
    }

    pub(super) fn on_queue_delete(&mut self, id: u16, d: queue::Delete) -> AmqpResult<()> {
        let vhost = self.vhost()?;
        let name = self.resolve_queue_name(id, d.queue.as_str())?;
        self.permit_all(&[required::queue_delete(&name)])?;
        let n = vhost.delete_queue(&name, d.if_unused, d.if_empty, self.id())?;
        self.exclusive_queues.retain(|q| q.name != name);
        if !d.nowait {
            self.send_method(
                id,
                AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                    message_count: n,
                })),
            );
        }
        Ok(())
    }
}

impl Connection {
    /// queue.bind/unbind and exchange.bind/unbind.
    fn permit_binding(
        &mut self,
        kind: Resource,
        destination: &str,
        source: &str,
    ) -> AmqpResult<()> {
        self.permit_all(&required::binding(kind, destination, source))
    }
}

/// RabbitMQ strips CR and LF from queue names.
fn strip_cr_lf(s: &str) -> String {
    s.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}
