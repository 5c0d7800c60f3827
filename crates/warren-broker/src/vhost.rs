//! A virtual host: its exchanges, queues and bindings, and the rules for changing them.
//!
//! Routing only reads (a map lookup and a read lock on one exchange's bindings).
//! Topology changes (declare, delete, bind) take the vhost's topology lock so that
//! multi-step changes — deleting a queue, its bindings and the auto-delete
//! exchanges left empty — are atomic with respect to each other.
//! Lock order: topology → exchange bindings → queue state.

use std::sync::{Arc, OnceLock};

use amq_protocol::types::FieldTable;
use dashmap::DashMap;
use parking_lot::Mutex;
use warren_routing::ExchangeKind;

use crate::delayed::{Delayed, DELAYED_TYPE};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::{Dest, Exchange};
use crate::message::Message;
use crate::persist::{MetaRecord, Persistence};
use crate::queue::args::{self, QueueType};
use crate::queue::{ConnectionId, Home, Queue, QueueArgs};

thread_local! {
    /// Scratch space for routing, reused by every publish on this thread.
    static DESTS: std::cell::RefCell<Vec<Dest>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The message's headers table, decoded at most once and only if needed.
struct LazyHeaders<'a> {
    msg: &'a Message,
    decoded: Option<Option<FieldTable>>,
}

impl<'a> LazyHeaders<'a> {
    fn new(msg: &'a Message) -> Self {
        LazyHeaders { msg, decoded: None }
    }

    fn get(&mut self) -> Option<&FieldTable> {
        let msg = self.msg;
        self.decoded
            .get_or_insert_with(|| {
                if msg.content.has_headers() {
                    msg.content.headers()
                } else {
                    None
                }
            })
            .as_ref()
    }
}

/// Longest exchange-to-exchange chain followed while routing.
const MAX_ROUTING_HOPS: usize = 64;

/// What routing did besides finding queues.
#[derive(Debug, Default, Clone, Copy)]
pub struct Routed {
    /// A delayed exchange holds the message, written to the store: a
    /// publisher confirm waits for that write.
    pub held_durably: bool,
}

/// The routing type an `x-delayed-message` exchange is declared with, as the
/// plugin checks it.
fn delayed_type(args: &FieldTable) -> AmqpResult<ExchangeKind> {
    let name = match args.inner().get("x-delayed-type") {
        Some(amq_protocol::types::AMQPValue::LongString(s)) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        _ => {
            return Err(AmqpError::precondition_failed(
                "Invalid argument, 'x-delayed-type' must be an existing exchange type",
            ))
        }
    };
    if name == DELAYED_TYPE {
        return Err(AmqpError::precondition_failed(
            "Invalid argument, 'x-delayed-message' can't be used for 'x-delayed-type'",
        ));
    }
    ExchangeKind::parse(&name)
        .ok_or_else(|| AmqpError::command_invalid(format!("invalid exchange type '{name}'")))
}

/// Open (or create) a stream's log in `dir`.
pub(crate) fn open_stream(
    dir: Option<std::path::PathBuf>,
    args: &QueueArgs,
    what: &str,
) -> AmqpResult<Arc<crate::queue::StreamState>> {
    use warren_store::stream_log::{Retention, SharedLog};
    /// RabbitMQ's default segment size (500 MB).
    const SEGMENT_BYTES: u64 = 500_000_000;
    let dir = dir.ok_or_else(|| {
        AmqpError::precondition_failed(format!(
            "cannot declare {what}: streams need a data directory"
        ))
    })?;
    let retention = Retention {
        max_bytes: args.max_length_bytes,
        max_age_ms: args.max_age_ms,
    };
    let log = SharedLog::open(
        &dir,
        args.max_segment_bytes.unwrap_or(SEGMENT_BYTES),
        retention,
    )
    .map_err(|e| AmqpError::internal_error(format!("cannot open the log of {what}: {e}")))?;
    Ok(crate::queue::StreamState::new(log))
}

/// The routing kind of a stored exchange.
pub(crate) fn stored_kind(exchange_type: &str, args: &FieldTable) -> Option<ExchangeKind> {
    if exchange_type == DELAYED_TYPE {
        delayed_type(args).ok()
    } else {
        ExchangeKind::parse(exchange_type)
    }
}

/// What an operator says about a vhost (management API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VHostMeta {
    pub description: String,
    pub tags: Vec<String>,
}

#[derive(Debug)]
pub struct VHost {
    pub name: String,
    pub meta: parking_lot::RwLock<VHostMeta>,
    exchanges: DashMap<String, Arc<Exchange>>,
    queues: DashMap<String, Arc<Queue>>,
    topology: Mutex<()>,
    /// Where durable definitions and messages go (None: in-memory broker).
    persist: OnceLock<Arc<Persistence>>,
}

/// Flags of `exchange.declare`.
#[derive(Debug, Clone, Default)]
pub struct ExchangeDecl {
    pub name: String,
    pub kind: String,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// Flags of `queue.declare` (after the server-named / last-queue resolution).
#[derive(Debug, Clone, Default)]
pub struct QueueDecl {
    pub name: String,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// The name was generated by the broker (`amq.gen-…`), so the `amq.` prefix is fine.
    pub server_named: bool,
}

/// RabbitMQ's reserved-name rule for queue.declare: a client may not name a
/// queue `amq.*` (server-named `amq.gen-*` ones are fine; passive declares
/// only look). Checked before permissions and before the lookup.
pub fn check_queue_name(d: &QueueDecl) -> AmqpResult<()> {
    if !d.passive && !d.server_named && d.name.starts_with("amq.") {
        return Err(AmqpError::access_refused(format!(
            "queue name '{}' contains reserved prefix 'amq.*'",
            d.name
        )));
    }
    Ok(())
}

/// What a queue asks of its vhost: routing for dead-letters, removal on expiry.
impl Home for VHost {
    fn route_dead_letter(
        &self,
        exchange: &str,
        message: &Message,
        targets: &mut Vec<Arc<Queue>>,
    ) -> bool {
        match self.exchange(exchange) {
            Some(x) => {
                self.route(&x, message, targets);
                true
            }
            None => false,
        }
    }

    fn remove_expired(&self, queue: &Arc<Queue>) {
        self.drop_queue(queue);
    }
}

impl VHost {
    /// The store, once the broker has one.
    pub(crate) fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persist.get()
    }

    pub fn new(name: &str, persist: Option<Arc<Persistence>>) -> VHost {
        let cell = OnceLock::new();
        if let Some(p) = persist {
            let _ = cell.set(p);
        }
        let v = VHost {
            name: name.to_owned(),
            meta: parking_lot::RwLock::new(VHostMeta::default()),
            exchanges: DashMap::new(),
            queues: DashMap::new(),
            topology: Mutex::new(()),
            persist: cell,
        };
        for x in Exchange::builtins() {
            v.exchanges.insert(x.name.clone(), Arc::new(x));
        }
        v
    }

    fn queue_res(&self, name: &str) -> String {
        format!("queue '{}' in vhost '{}'", name, self.name)
    }

    fn exchange_res(&self, name: &str) -> String {
        format!("exchange '{}' in vhost '{}'", name, self.name)
    }

    pub fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no {}", self.exchange_res(name)))
    }

    pub fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::not_found(format!("no {}", self.queue_res(name)))
    }

    pub fn exchange(&self, name: &str) -> Option<Arc<Exchange>> {
        self.exchanges.get(name).map(|e| e.value().clone())
    }

    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        self.queues.get(name).map(|q| q.value().clone())
    }

    pub fn exchanges(&self) -> Vec<Arc<Exchange>> {
        self.exchanges.iter().map(|x| x.value().clone()).collect()
    }

    pub fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues.iter().map(|q| q.value().clone()).collect()
    }

    /// A queue this connection may use: exists, and is not another connection's exclusive queue.
    pub fn usable_queue(&self, name: &str, conn: ConnectionId) -> AmqpResult<Arc<Queue>> {
        let q = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        self.check_exclusive(&q, conn)?;
        Ok(q)
    }

    fn check_exclusive(&self, q: &Queue, conn: ConnectionId) -> AmqpResult<()> {
        match q.exclusive_owner {
            Some(owner) if owner != conn => Err(AmqpError::resource_locked(format!(
                "cannot obtain exclusive access to locked {}. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.",
                self.queue_res(&q.name)
            ))),
            _ => Ok(()),
        }
    }

    // ----- exchanges -------------------------------------------------------------

    pub fn declare_exchange(self: &Arc<Self>, d: &ExchangeDecl) -> AmqpResult<()> {
        let _t = self.topology.lock();
        if let Some(x) = self.exchange(&d.name) {
            if d.passive {
                return Ok(());
            }
            return self.check_exchange_equivalent(&x, d);
        }
        if d.passive {
            return Err(self.no_exchange(&d.name));
        }
        if d.name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        if let Some(v) = d.arguments.inner().get("alternate-exchange") {
            if !matches!(v, amq_protocol::types::AMQPValue::LongString(_)) {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid type '{}' for arg 'alternate-exchange' in {}",
                    args::type_name(v),
                    self.exchange_res(&d.name)
                )));
            }
        }
        let delayed = d.kind == DELAYED_TYPE;
        let kind = if delayed {
            delayed_type(&d.arguments)?
        } else {
            ExchangeKind::parse(&d.kind).ok_or_else(|| {
                AmqpError::command_invalid(format!("invalid exchange type '{}'", d.kind))
            })?
        };
        let mut x = Exchange::new(
            d.name.clone(),
            kind,
            d.durable,
            d.auto_delete,
            d.internal,
            d.arguments.clone(),
        );
        if delayed {
            let store_id = self
                .persist
                .get()
                .filter(|_| d.durable)
                .map(|p| p.new_queue_id());
            x = x.with_delay(Delayed::new(store_id));
        }
        if let (Some(p), Some(record)) = (self.persist.get(), self.exchange_record(&x)) {
            p.put(&record);
        }
        let x = Arc::new(x);
        self.exchanges.insert(d.name.clone(), x.clone());
        self.start_delay_timer(&x);
        Ok(())
    }

    fn check_exchange_equivalent(&self, x: &Exchange, d: &ExchangeDecl) -> AmqpResult<()> {
        let what = self.exchange_res(&x.name);
        let ineq = |arg: &str, received: String, current: String| {
            Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for {what}: received '{received}' but current is '{current}'"
            )))
        };
        if d.kind != x.type_name() {
            if ExchangeKind::parse(&d.kind).is_none() && d.kind != DELAYED_TYPE {
                return Err(AmqpError::command_invalid(format!(
                    "invalid exchange type '{}'",
                    d.kind
                )));
            }
            return ineq("type", d.kind.clone(), x.type_name().to_owned());
        }
        if d.durable != x.durable {
            return ineq("durable", d.durable.to_string(), x.durable.to_string());
        }
        if d.auto_delete != x.auto_delete {
            return ineq(
                "auto_delete",
                d.auto_delete.to_string(),
                x.auto_delete.to_string(),
            );
        }
        if d.internal != x.internal {
            return ineq("internal", d.internal.to_string(), x.internal.to_string());
        }
        args::check_equivalent_keys(&x.arguments, &d.arguments, &what, &["alternate-exchange"])
    }

    /// The default and `amq.*` exchanges cannot be deleted (checked before
    /// permissions, as in RabbitMQ).
    pub fn check_exchange_deletable(&self, name: &str) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::access_refused(format!(
                "deletion of system {} not allowed",
                self.exchange_res(name)
            )));
        }
        Ok(())
    }

    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        let _t = self.topology.lock();
        self.check_exchange_deletable(name)?;
        let Some(x) = self.exchange(name) else {
            return Ok(());
        };
        // Only bindings *from* the exchange make it "in use", as in RabbitMQ.
        if if_unused && !x.bindings.read().is_empty() {
            return Err(AmqpError::precondition_failed(format!(
                "{} in use",
                self.exchange_res(name)
            )));
        }
        self.remove_exchange_locked(name);
        Ok(())
    }

    /// Remove an exchange and every binding to it; cascades auto-delete.
    fn remove_exchange_locked(&self, name: &str) {
        if let Some((_, x)) = self.exchanges.remove(name) {
            if let Some(d) = &x.delayed {
                // Messages it still held are dropped, as the plugin drops them.
                d.delete();
                if let (Some(p), Some(id)) = (self.persist.get(), d.store_id) {
                    p.store.submit(warren_store::Op::DelQueue { queue: id });
                }
            }
            if let Some(p) = self.persist.get() {
                if let Some(record) = self.exchange_record(&x) {
                    p.delete(&record);
                }
                for (dest, key, args) in x.bindings.read().bindings() {
                    p.delete(&self.binding_record_any(&x.name, &dest, &key, &args));
                }
            }
        }
        self.unbind_destination_locked(&Dest::Exchange(name.into()));
    }

    /// Remove all bindings leading to `dest`, then auto-delete the sources left empty.
    fn unbind_destination_locked(&self, dest: &Dest) {
        let mut emptied = Vec::new();
        for x in self.exchanges.iter() {
            let mut b = x.bindings.write();
            if !b.has_destination(dest) {
                continue;
            }
            if let Some(p) = self.persist.get() {
                for (d, key, args) in b.bindings().into_iter().filter(|(d, _, _)| d == dest) {
                    p.delete(&self.binding_record_any(&x.name, &d, &key, &args));
                }
            }
            if b.unbind_all(dest) > 0 && b.is_empty() && x.auto_delete {
                emptied.push(x.name.clone());
            }
        }
        for name in emptied {
            self.remove_exchange_locked(&name);
        }
    }

    // ----- queues ----------------------------------------------------------------

    /// Declare (or check) a queue; returns it with its message and consumer counts.
    pub fn declare_queue(
        self: &Arc<Self>,
        d: &QueueDecl,
        conn: ConnectionId,
    ) -> AmqpResult<(Arc<Queue>, u32, u32)> {
        let _t = self.topology.lock();
        // The reserved prefix is checked before the lookup: redeclaring even an
        // existing amq.gen-* queue by name is refused, as in RabbitMQ.
        check_queue_name(d)?;
        if let Some(q) = self.queue(&d.name) {
            self.check_exclusive(&q, conn)?;
            if !d.passive {
                self.check_queue_equivalent(&q, d, conn)?;
            }
            q.touch();
            let (m, c) = q.counts();
            return Ok((q, m, c));
        }
        if d.passive {
            return Err(self.no_queue(&d.name));
        }
        let what = self.queue_res(&d.name);
        let parsed = QueueArgs::parse(&d.arguments, &what)?;
        if parsed.queue_type != QueueType::Classic {
            // RabbitMQ's order: auto-delete, then exclusive, then durable.
            let bad = if d.auto_delete {
                Some("auto-delete")
            } else if d.exclusive {
                Some("exclusive-owner")
            } else if !d.durable {
                Some("non-durable")
            } else {
                None
            };
            if let Some(prop) = bad {
                return Err(AmqpError::precondition_failed(format!(
                    "invalid property '{prop}' for {what}"
                )));
            }
        }
        // Every queue gets a place in the store: durable queues for their
        // records, all queues for transient messages paged out of memory.
        let stored = self.persist.get().map(|p| (p.clone(), p.new_queue_id()));
        let stream = match (parsed.queue_type, &stored) {
            (QueueType::Stream, Some((p, id))) => Some(open_stream(p.stream_dir(*id), &parsed, &what)?),
            (QueueType::Stream, None) => {
                return Err(AmqpError::precondition_failed(format!(
                    "cannot declare {what}: streams need a data directory (this broker runs --in-memory)"
                )))
            }
            _ => None,
        };
        let q = Arc::new(Queue::new(
            d.name.clone(),
            self.name.clone(),
            d.durable && !d.exclusive,
            d.auto_delete,
            d.exclusive.then_some(conn),
            d.arguments.clone(),
            parsed,
            Arc::<VHost>::downgrade(self),
        ));
        if let Some((p, id)) = &stored {
            if q.durable {
                p.put(&MetaRecord::Queue {
                    vhost: self.name.clone(),
                    name: d.name.clone(),
                    id: *id,
                    auto_delete: d.auto_delete,
                    arguments: d.arguments.clone(),
                });
            }
            q.attach_store(p.store.clone(), *id);
        }
        if let Some(s) = stream {
            q.attach_stream(s);
        }
        self.queues.insert(d.name.clone(), q.clone());
        q.start_timers();
        Ok((q, 0, 0))
    }

    fn check_queue_equivalent(
        &self,
        q: &Queue,
        d: &QueueDecl,
        conn: ConnectionId,
    ) -> AmqpResult<()> {
        let what = self.queue_res(&q.name);
        let ineq = |arg: &str, received: bool, current: bool| {
            Err(AmqpError::precondition_failed(format!(
                "inequivalent arg '{arg}' for {what}: received '{received}' but current is '{current}'"
            )))
        };
        // Exclusive queues are never durable, so the flag is not compared for them.
        if q.exclusive_owner.is_none() && d.durable != q.durable {
            return ineq("durable", d.durable, q.durable);
        }
        if d.auto_delete != q.auto_delete {
            return ineq("auto_delete", d.auto_delete, q.auto_delete);
        }
        if d.exclusive != q.exclusive_owner.is_some() {
            // RabbitMQ reports a changed exclusive flag as a lock conflict.
            let _ = conn;
            return Err(AmqpError::resource_locked(format!(
                "cannot obtain exclusive access to locked {what}. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
            )));
        }
        args::check_equivalent(q.args.queue_type, &q.arguments, &d.arguments, &what)
    }

    /// Delete a queue; returns the number of messages it held.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: ConnectionId,
    ) -> AmqpResult<u32> {
        let _t = self.topology.lock();
        let Some(q) = self.queue(name) else {
            return Ok(0);
        };
        self.check_exclusive(&q, conn)?;
        let (messages, consumers) = q.counts();
        if if_unused && consumers > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "{} in use",
                self.queue_res(name)
            )));
        }
        if if_empty && messages > 0 {
            return Err(AmqpError::precondition_failed(format!(
                "{} not empty",
                self.queue_res(name)
            )));
        }
        Ok(self.remove_queue_locked(&q))
    }

    /// Delete everything in the vhost (the vhost is being deleted): queues with
    /// their stored messages, exchanges and bindings.
    pub(crate) fn destroy(&self) {
        let _t = self.topology.lock();
        let queues: Vec<Arc<Queue>> = self.queues.iter().map(|q| q.value().clone()).collect();
        for q in queues {
            self.remove_queue_locked(&q);
        }
        let names: Vec<String> = self.exchanges.iter().map(|x| x.key().clone()).collect();
        for name in names {
            self.remove_exchange_locked(&name);
        }
    }

    /// Delete a queue that lost its reason to exist (auto-delete, exclusive owner gone).
    pub fn drop_queue(&self, q: &Arc<Queue>) {
        let _t = self.topology.lock();
        if self.queue(&q.name).is_some_and(|cur| Arc::ptr_eq(&cur, q)) {
            self.remove_queue_locked(q);
        }
    }

    fn remove_queue_locked(&self, q: &Arc<Queue>) -> u32 {
        self.queues.remove(&q.name);
        if let (Some(p), Some(id)) = (self.persist.get(), q.store_id()) {
            if q.durable {
                p.delete(&MetaRecord::Queue {
                    vhost: self.name.clone(),
                    name: q.name.clone(),
                    id,
                    auto_delete: q.auto_delete,
                    arguments: FieldTable::default(),
                });
            }
            p.store.submit(warren_store::Op::DelQueue { queue: id });
        }
        self.unbind_destination_locked(&Dest::Queue(q.name.as_str().into()));
        q.mark_deleted()
    }

    // ----- recovery (no writes back to the store) -------------------------------------

    /// Start writing to the store (after recovery): queues restored from it
    /// get their store handle.
    pub(crate) fn attach_persistence(&self, p: Arc<Persistence>) {
        for q in self.queues.iter() {
            if let Some(id) = q.recovered_id() {
                q.attach_store(p.store.clone(), id);
            }
        }
        let _ = self.persist.set(p);
    }

    pub(crate) fn restore_exchange(&self, x: Exchange) -> Arc<Exchange> {
        let x = Arc::new(x);
        self.exchanges.insert(x.name.clone(), x.clone());
        x
    }

    pub(crate) fn restore_queue(
        self: &Arc<Self>,
        name: &str,
        id: u64,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Result<Arc<Queue>, String> {
        let what = self.queue_res(name);
        let parsed = QueueArgs::parse(&arguments, &what)
            .map_err(|e| format!("stored {what}: {}", e.text))?;
        let q = Arc::new(Queue::new(
            name.to_owned(),
            self.name.clone(),
            true,
            auto_delete,
            None,
            arguments,
            parsed,
            Arc::<VHost>::downgrade(self),
        ));
        q.set_recovered_id(id);
        self.queues.insert(name.to_owned(), q.clone());
        Ok(q)
    }

    pub(crate) fn restore_binding(&self, source: &str, dest: Dest, key: &str, args: &FieldTable) {
        if let Some(x) = self.exchange(source) {
            let _ = x.bindings.write().bind(dest, key, args);
        }
    }

    // ----- bindings ----------------------------------------------------------------

    /// Add a binding (the source exchange is checked before the destination, as in RabbitMQ).
    pub fn bind(
        &self,
        source: &str,
        dest: Dest,
        routing_key: &str,
        arguments: &FieldTable,
        conn: ConnectionId,
    ) -> AmqpResult<()> {
        let _t = self.topology.lock();
        let x = self.binding_source(source)?;
        self.check_dest(&dest)?;
        self.check_dest_exclusive(&dest, conn)?;
        let record = self.binding_record(&x, &dest, routing_key, arguments);
        let added = x
            .bindings
            .write()
            .bind(dest, routing_key, arguments)
            .map_err(|e| AmqpError::precondition_failed(e.to_string()))?;
        if let (true, Some(p), Some(r)) = (added, self.persist.get(), record) {
            p.put(&r);
        }
        Ok(())
    }

    /// Remove a binding. Idempotent: a missing exchange, queue or binding is fine.
    pub fn unbind(
        &self,
        source: &str,
        dest: Dest,
        routing_key: &str,
        arguments: &FieldTable,
        conn: ConnectionId,
    ) -> AmqpResult<()> {
        let _t = self.topology.lock();
        if source.is_empty() || matches!(&dest, Dest::Exchange(d) if d.is_empty()) {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        let Some(x) = self.exchange(source) else {
            return Ok(());
        };
        self.check_dest_exclusive(&dest, conn)?;
        if let Some(p) = self.persist.get() {
            p.delete(&self.binding_record_any(&x.name, &dest, routing_key, arguments));
        }
        let emptied = {
            let mut b = x.bindings.write();
            b.unbind(&dest, routing_key, arguments) && b.is_empty()
        };
        if emptied && x.auto_delete {
            self.remove_exchange_locked(&x.name);
        }
        Ok(())
    }

    fn check_dest_exclusive(&self, dest: &Dest, conn: ConnectionId) -> AmqpResult<()> {
        match dest {
            Dest::Queue(q) => match self.queue(q) {
                Some(q) => self.check_exclusive(&q, conn),
                None => Ok(()),
            },
            Dest::Exchange(_) => Ok(()),
        }
    }

    /// The stored form of an exchange, if it is durable (built-ins are not stored).
    fn exchange_record(&self, x: &Exchange) -> Option<MetaRecord> {
        (x.durable && !x.is_default() && !x.name.starts_with("amq.")).then(|| {
            MetaRecord::Exchange {
                vhost: self.name.clone(),
                name: x.name.clone(),
                exchange_type: x.type_name().to_owned(),
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: x.arguments.clone(),
                store_id: x.delayed.as_ref().and_then(|d| d.store_id),
            }
        })
    }

    /// The stored form of a binding, if both its ends are durable.
    fn binding_record(
        &self,
        source: &Exchange,
        dest: &Dest,
        key: &str,
        args: &FieldTable,
    ) -> Option<MetaRecord> {
        let dest_durable = match dest {
            Dest::Queue(q) => self
                .queue(q)
                .is_some_and(|q| q.durable && q.store_id().is_some()),
            Dest::Exchange(x) => self.exchange(x).is_some_and(|x| x.durable),
        };
        (source.durable && dest_durable)
            .then(|| self.binding_record_any(&source.name, dest, key, args))
    }

    fn binding_record_any(
        &self,
        source: &str,
        dest: &Dest,
        key: &str,
        args: &FieldTable,
    ) -> MetaRecord {
        let (destination, destination_is_queue) = match dest {
            Dest::Queue(q) => (q.to_string(), true),
            Dest::Exchange(x) => (x.to_string(), false),
        };
        MetaRecord::Binding {
            vhost: self.name.clone(),
            source: source.to_owned(),
            destination,
            destination_is_queue,
            routing_key: key.to_owned(),
            arguments: args.clone(),
        }
    }

    fn binding_source(&self, source: &str) -> AmqpResult<Arc<Exchange>> {
        let x = self
            .exchange(source)
            .ok_or_else(|| self.no_exchange(source))?;
        if x.is_default() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        Ok(x)
    }

    fn check_dest(&self, dest: &Dest) -> AmqpResult<()> {
        match dest {
            Dest::Queue(q) if self.queue(q).is_none() => Err(self.no_queue(q)),
            Dest::Exchange(x) if self.exchange(x).is_none() => Err(self.no_exchange(x)),
            Dest::Exchange(x) if x.is_empty() => Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            )),
            _ => Ok(()),
        }
    }

    // ----- routing -----------------------------------------------------------------

    /// Every queue a message published to `exchange` reaches, each once, following
    /// exchange-to-exchange bindings and alternate exchanges.
    ///
    /// The common case (no exchange-to-exchange hop) allocates nothing beyond
    /// pushing to `out`; the headers table is decoded only if a headers exchange
    /// is on the way.
    pub fn route(&self, exchange: &Exchange, msg: &Message, out: &mut Vec<Arc<Queue>>) -> Routed {
        let mut routed = Routed::default();
        if exchange.is_default() {
            for key in msg.routing_keys() {
                if let Some(q) = self.queue(key) {
                    if !out.iter().any(|o| Arc::ptr_eq(o, &q)) {
                        out.push(q);
                    }
                }
            }
            return routed;
        }
        DESTS.with(|cell| {
            let mut dests = cell.borrow_mut();
            dests.clear();
            let mut headers = LazyHeaders::new(msg);
            self.route_one(exchange, msg, &mut headers, &mut dests, &mut routed);
            let mut visited: Vec<Arc<Exchange>> = Vec::new();
            let mut pending: Vec<Arc<Exchange>> = Vec::new();
            loop {
                for d in dests.drain(..) {
                    match d {
                        Dest::Queue(name) => {
                            if let Some(q) = self.queue(&name) {
                                if !out.iter().any(|o| Arc::ptr_eq(o, &q)) {
                                    out.push(q);
                                }
                            }
                        }
                        Dest::Exchange(name) => {
                            let Some(x) = self.exchange(&name) else {
                                continue;
                            };
                            let seen = std::ptr::eq(&*x, exchange)
                                || visited.iter().any(|v| Arc::ptr_eq(v, &x));
                            if !seen && visited.len() < MAX_ROUTING_HOPS {
                                visited.push(x.clone());
                                pending.push(x);
                            }
                        }
                    }
                }
                let Some(x) = pending.pop() else { break };
                self.route_one(&x, msg, &mut headers, &mut dests, &mut routed);
            }
        });
        routed
    }

    /// Route through one exchange; if nothing matches, through its alternate exchange(s).
    fn route_one(
        &self,
        x: &Exchange,
        msg: &Message,
        headers: &mut LazyHeaders,
        dests: &mut Vec<Dest>,
        routed: &mut Routed,
    ) {
        if let Some(d) = &x.delayed {
            if let Some(delay) = crate::delayed::requested_delay(msg) {
                // Held: it routes to nothing now (so a mandatory publish comes
                // back, as with the plugin) and through `x` when it is due.
                routed.held_durably |= self.hold(d, msg, delay);
                return;
            }
        }
        let before = dests.len();
        {
            let h = if x.kind == ExchangeKind::Headers {
                headers.get()
            } else {
                None
            };
            let bindings = x.bindings.read();
            for key in msg.routing_keys() {
                bindings.route(key, h, dests);
            }
        }
        if dests.len() > before {
            return;
        }
        let mut ae = x.alternate.clone();
        let mut hops = 0;
        while let Some(name) = ae.take() {
            hops += 1;
            if hops > MAX_ROUTING_HOPS || name == x.name {
                break;
            }
            let Some(alt) = self.exchange(&name) else {
                break;
            };
            let n = dests.len();
            if alt.is_default() {
                for key in msg.routing_keys() {
                    dests.push(Dest::Queue(key.into()));
                }
            } else {
                let h = if alt.kind == ExchangeKind::Headers {
                    headers.get()
                } else {
                    None
                };
                let bindings = alt.bindings.read();
                for key in msg.routing_keys() {
                    bindings.route(key, h, dests);
                }
            }
            if dests.len() > n {
                break;
            }
            ae = alt.alternate.clone();
        }
    }
}
