//! State shared by every connection: configuration, users and virtual hosts.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;

use crate::access::Access;
use crate::alarm::{AlarmSource, Alarms};
use crate::connection::handle::{ConnEvent, ConnHandle, ConnectionId};
use crate::persist::Persistence;
use crate::vhost::VHost;
use warren_store::{Recovery, Store};

/// Broker-wide settings (RabbitMQ's defaults).
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame offered in connection.tune.
    pub frame_max: u32,
    /// Most channels per connection offered in connection.tune.
    pub channel_max: u16,
    /// Heartbeat interval offered in connection.tune, seconds.
    pub heartbeat: u16,
    /// Largest message body accepted (RabbitMQ 3.x: 128 MiB).
    pub max_message_size: u64,
    /// Time allowed from TCP accept to connection.open-ok.
    pub handshake_timeout: Duration,
    /// A delivery not acknowledged within this time closes its channel with
    /// 406 and requeues its messages (RabbitMQ's `consumer_timeout`, 30 min);
    /// `None` never times out.
    pub consumer_timeout: Option<Duration>,
    /// Where streams keep their logs (one directory per stream); `None`: no
    /// streams (an in-memory broker).
    pub streams_dir: Option<std::path::PathBuf>,
    /// The user, password and vhost created on first start, when the store is
    /// new (RabbitMQ's `default_user`, `default_pass`, `default_vhost`); the
    /// user gets the `administrator` tag and full permissions on the vhost.
    pub default_user: String,
    pub default_pass: String,
    pub default_vhost: String,
    /// Users who may only connect from a loopback address.
    pub loopback_users: Vec<String>,
    /// Resident memory above which publishers are blocked (RabbitMQ's memory
    /// alarm); `None` disables the alarm.
    pub memory_high_watermark: Option<u64>,
    /// Free space of the data directory below which publishers are blocked
    /// (RabbitMQ's `disk_free_limit`, 50 MB); `None` disables the alarm. Not
    /// used without a data directory.
    pub disk_free_limit: Option<u64>,
    /// `product` and `version` announced in connection.start. Clients key
    /// behaviour on them, so the default names the RabbitMQ Warren emulates.
    pub server_product: String,
    pub server_version: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: 60,
            max_message_size: 128 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            consumer_timeout: Some(Duration::from_secs(30 * 60)),
            streams_dir: None,
            default_user: "guest".into(),
            default_pass: "guest".into(),
            default_vhost: "/".into(),
            loopback_users: vec!["guest".into()],
            memory_high_watermark: crate::memory::default_watermark(),
            disk_free_limit: Some(crate::disk::DEFAULT_DISK_FREE_LIMIT),
            server_product: "RabbitMQ".into(),
            server_version: "3.10.8".into(),
        }
    }
}

/// Why a login was refused (logged; the client sees a generic text, as with RabbitMQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    UnknownUser(String),
    BadPassword(String),
    LoopbackOnly(String),
}

impl std::fmt::Display for LoginRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginRefused::UnknownUser(u) => write!(f, "user '{u}' - invalid credentials"),
            LoginRefused::BadPassword(u) => write!(f, "user '{u}' - invalid credentials"),
            LoginRefused::LoopbackOnly(u) => write!(f, "user '{u}' can only connect via localhost"),
        }
    }
}

#[derive(Debug)]
pub struct Broker {
    pub config: Config,
    pub(crate) persist: OnceLock<Arc<Persistence>>,
    pub(crate) vhosts: DashMap<String, Arc<VHost>>,
    /// Users and permissions.
    pub access: Access,
    pub(crate) connections: DashMap<ConnectionId, Arc<ConnHandle>>,
    next_connection: AtomicU64,
    warned_quorum: AtomicBool,
    alarms: Alarms,
    /// Live direct reply-to consumers: (connection, channel) → the key in their address.
    reply_consumers: DashMap<(ConnectionId, u16), u64>,
}

impl Broker {
    /// A broker that keeps everything in memory.
    pub fn new(config: Config) -> Arc<Broker> {
        let broker = Broker::build(config);
        broker.create_defaults();
        broker
    }

    /// A broker on a store: durable definitions and messages are read back
    /// from `recovery`, then the storage thread starts and takes every write.
    pub fn with_store(config: Config, recovery: Recovery) -> Result<Arc<Broker>, String> {
        let next_id = crate::recovery::next_queue_id(&recovery.recovered);
        let broker = Broker::build(config);
        let restored = crate::recovery::restore(&broker, &recovery)?;
        // Definitions and messages are back: now start writing.
        let store = Arc::new(recovery.start().map_err(|e| e.to_string())?);
        let persist = Arc::new(Persistence::new(
            store,
            next_id,
            broker.config.streams_dir.clone(),
        ));
        for v in broker.vhosts.iter() {
            v.attach_persistence(persist.clone());
        }
        for id in restored.orphans {
            persist
                .store
                .submit(warren_store::Op::DelQueue { queue: id });
        }
        for record in &restored.stale {
            persist.delete(record);
        }
        // A store that cannot write raises the disk alarm until a write succeeds.
        let weak = Arc::downgrade(&broker);
        persist.store.set_health_listener(Box::new(move |failing| {
            if let Some(b) = weak.upgrade() {
                b.set_alarm(AlarmSource::StoreFailing, failing);
            }
        }));
        let _ = broker.persist.set(persist);
        if !restored.defaults_created {
            // A new store, or one written before vhosts were recorded.
            for v in broker.vhosts() {
                let meta = v.meta.read().clone();
                broker.put_vhost(&v.name, meta);
            }
            broker.create_defaults();
        }
        for q in &restored.queues {
            q.start_timers();
        }
        for (v, x) in &restored.delayed {
            v.start_delay_timer(x);
        }
        Ok(broker)
    }

    fn build(config: Config) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            persist: OnceLock::new(),
            vhosts: DashMap::new(),
            access: Access::default(),
            connections: DashMap::new(),
            next_connection: AtomicU64::new(1),
            warned_quorum: AtomicBool::new(false),
            alarms: Alarms::default(),
            reply_consumers: DashMap::new(),
        })
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.get(name).map(|v| v.value().clone())
    }

    /// The vhost, created if missing (recovery of definitions).
    pub(crate) fn vhost_or_create(&self, name: &str) -> Arc<VHost> {
        self.vhosts
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(VHost::new(name, self.persist.get().cloned())))
            .clone()
    }

    /// The store, if this broker has one.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.persist.get().map(|p| &p.store)
    }

    /// Write out everything pending and close the store (clean shutdown).
    /// Call after the connections are closed (their unacked messages requeued).
    pub fn close_store(&self) {
        if let Some(s) = self.store() {
            for v in self.vhosts.iter() {
                for q in v.queues() {
                    q.write_exact_mark();
                }
            }
            s.close();
        }
    }

    /// Check a login. Loopback-only users are refused from other addresses.
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<(), LoginRefused> {
        if self.access.user(user).is_none() {
            return Err(LoginRefused::UnknownUser(user.to_owned()));
        }
        if self.access.check_password(user, password).is_none() {
            return Err(LoginRefused::BadPassword(user.to_owned()));
        }
        let loopback = match peer {
            IpAddr::V4(a) => a.is_loopback(),
            IpAddr::V6(a) => {
                a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        };
        if !loopback && self.config.loopback_users.iter().any(|u| u == user) {
            return Err(LoginRefused::LoopbackOnly(user.to_owned()));
        }
        Ok(())
    }

    pub fn register_connection(
        &self,
    ) -> (
        Arc<ConnHandle>,
        tokio::sync::mpsc::UnboundedReceiver<ConnEvent>,
    ) {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (handle, rx) = ConnHandle::new(id);
        self.connections.insert(id, handle.clone());
        (handle, rx)
    }

    pub fn connection(&self, id: ConnectionId) -> Option<Arc<ConnHandle>> {
        self.connections.get(&id).map(|c| c.value().clone())
    }

    pub fn unregister_connection(&self, id: ConnectionId) {
        self.connections.remove(&id);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Ask every connection to close with 320 CONNECTION_FORCED (shutdown).
    pub fn close_all(&self, text: &str) {
        for c in self.connections.iter() {
            c.notify(ConnEvent::ForceClose {
                code: 320,
                text: text.to_owned(),
            });
        }
    }

    pub(crate) fn set_reply_consumer(&self, conn: ConnectionId, channel: u16, key: Option<u64>) {
        match key {
            Some(k) => {
                self.reply_consumers.insert((conn, channel), k);
            }
            None => {
                self.reply_consumers.remove(&(conn, channel));
            }
        }
    }

    /// Whether a direct reply-to address still has its consumer.
    pub(crate) fn reply_consumer_alive(&self, conn: ConnectionId, channel: u16, key: u64) -> bool {
        self.reply_consumers
            .get(&(conn, channel))
            .is_some_and(|k| *k == key)
    }

    /// The raised resource alarms (publishers are blocked while any is).
    pub fn alarms(&self) -> &Alarms {
        &self.alarms
    }

    /// Raise or clear an alarm and tell every connection.
    pub fn set_alarm(&self, source: AlarmSource, on: bool) {
        if !self.alarms.set(source, on) {
            return;
        }
        let resource = match source {
            AlarmSource::Memory => "memory",
            AlarmSource::DiskFree | AlarmSource::StoreFailing => "disk",
        };
        let still = match source {
            AlarmSource::Memory => self.alarms.memory(),
            _ => self.alarms.disk(),
        };
        if on {
            tracing::warn!(
                "{resource} resource limit alarm set: {}; publishers will be blocked until this alarm clears",
                source.describe()
            );
        } else if still {
            tracing::info!(
                "no longer true: {}; the {resource} alarm stays set for another reason",
                source.describe()
            );
        } else {
            tracing::info!("{resource} resource limit alarm cleared; unblocking publishers");
        }
        for c in self.connections.iter() {
            c.notify(ConnEvent::Alarm);
        }
    }

    /// Log once that quorum queues live on this node only.
    pub fn note_quorum_declared(&self) {
        if !self.warned_quorum.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "a quorum queue was declared; on a single node its messages are kept on disk but not replicated"
            );
        }
    }
}
