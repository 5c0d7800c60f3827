//! Warren, an AMQP 0-9-1 broker for RabbitMQ clients — as a library.
//!
//! Start a broker inside your own program or tests:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let broker = warren::Broker::builder().port(0).start().await?;
//! let url = broker.amqp_url(); // amqp://guest:guest@127.0.0.1:<port>/%2f
//! // ... connect with lapin, run the code under test ...
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use warren_store::EngineKind;
/// The engine seam and a fault-injecting engine, for tests that make the disk fail
/// (see [`BrokerBuilder::wrap_engine`]).
pub use warren_store::{fault_engine, Kv};

pub use warren_broker::Config;
use warren_broker::{Server, ServerHandle};

/// Builds and starts a broker.
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    port: u16,
    bind: Vec<IpAddr>,
    config: Config,
    storage: Storage,
    management_port: Option<u16>,
    definitions: Option<PathBuf>,
    wrap_engine: Option<EngineWrapper>,
}

/// A function applied to the opened storage engine (see [`BrokerBuilder::wrap_engine`]).
#[derive(Clone)]
struct EngineWrapper(Arc<WrapFn>);

type WrapFn = dyn Fn(Box<dyn Kv>) -> Box<dyn Kv> + Send + Sync;

impl std::fmt::Debug for EngineWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineWrapper")
    }
}

/// Where the broker keeps durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Everything in memory; nothing survives a restart (the library default).
    InMemory,
    /// Durable exchanges, queues, bindings and persistent messages on disk.
    Dir { path: PathBuf, engine: EngineKind },
}

impl Default for BrokerBuilder {
    fn default() -> Self {
        BrokerBuilder {
            port: 5672,
            bind: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            config: Config::default(),
            storage: Storage::InMemory,
            management_port: None,
            definitions: None,
            wrap_engine: None,
        }
    }
}

impl BrokerBuilder {
    /// TCP port for AMQP (0 picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Addresses to listen on (default 127.0.0.1).
    pub fn bind(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.bind = addrs.into_iter().collect();
        self
    }

    /// Replace the broker settings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Keep durable state in `path` with `engine` (default: in memory).
    pub fn data_dir(mut self, path: impl Into<PathBuf>, engine: EngineKind) -> Self {
        self.storage = Storage::Dir {
            path: path.into(),
            engine,
        };
        self
    }

    /// Serve the HTTP management API on this port (0 picks a free one) on the
    /// same addresses as AMQP. Off unless asked for (the `warren` command
    /// turns it on at 15672).
    pub fn management_port(mut self, port: Option<u16>) -> Self {
        self.management_port = port;
        self
    }

    /// Load a definitions file (RabbitMQ's JSON export: users, vhosts,
    /// permissions, queues, exchanges, bindings) at start, before clients are
    /// accepted — RabbitMQ's `load_definitions`. What exists already is kept.
    pub fn load_definitions(mut self, path: impl Into<PathBuf>) -> Self {
        self.definitions = Some(path.into());
        self
    }

    /// Wrap the storage engine once it is opened, before anything is read or
    /// written (with a data directory only). For tests: inject faults with
    /// [`fault_engine::FaultKv`].
    pub fn wrap_engine(
        mut self,
        wrap: impl Fn(Box<dyn Kv>) -> Box<dyn Kv> + Send + Sync + 'static,
    ) -> Self {
        self.wrap_engine = Some(EngineWrapper(Arc::new(wrap)));
        self
    }

    /// Bind the listeners and start serving.
    pub async fn start(self) -> std::io::Result<Broker> {
        let broker = match &self.storage {
            Storage::InMemory => warren_broker::Broker::new(self.config),
            Storage::Dir { path, engine } => {
                let (path, engine) = (path.clone(), *engine);
                let mut config = self.config;
                if config.streams_dir.is_none() {
                    config.streams_dir = Some(path.join("streams"));
                }
                let wrap = self.wrap_engine.clone();
                // Opening reads the whole store: keep it off the async workers.
                tokio::task::spawn_blocking(move || -> Result<_, String> {
                    let mut kv = warren_store::open(engine, &path).map_err(|e| e.to_string())?;
                    if let Some(w) = wrap {
                        kv = (w.0)(kv);
                    }
                    let recovery = warren_store::Recovery::open(kv).map_err(|e| e.to_string())?;
                    warren_broker::Broker::with_store(config, recovery)
                })
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .map_err(std::io::Error::other)?
            }
        };
        if let Some(path) = &self.definitions {
            load_definitions(&broker, path).await?;
        }
        warren_broker::memory::spawn_monitor(&broker, Duration::from_secs(1));
        if let Storage::Dir { path, .. } = &self.storage {
            warren_broker::disk::spawn_monitor(&broker, path.clone());
        }
        let mut addrs: Vec<SocketAddr> = self
            .bind
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect();
        if addrs.is_empty() {
            addrs.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port));
        }
        // With port 0 and several addresses, use the port the first one got for the rest.
        let first = Server::bind(broker.clone(), &addrs[..1]).await?;
        let port = first
            .local_addrs()
            .first()
            .map(|a| a.port())
            .unwrap_or(self.port);
        let rest: Vec<SocketAddr> = addrs[1..]
            .iter()
            .map(|a| SocketAddr::new(a.ip(), port))
            .collect();
        let mut handles = vec![first.start()];
        for a in rest {
            match Server::bind(broker.clone(), &[a]).await {
                Ok(s) => handles.push(s.start()),
                // An IPv6 loopback may be missing (containers): serve IPv4 alone then.
                Err(e) if a.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST) => {
                    tracing::warn!("not listening on {a}: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        let management = match self.management_port {
            Some(port) => Some(start_management(broker.clone(), &self.bind, port).await?),
            None => None,
        };
        Ok(Broker {
            handles,
            core: broker,
            management,
        })
    }
}

async fn load_definitions(
    broker: &Arc<warren_broker::Broker>,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let fail = |what: String| {
        std::io::Error::other(format!(
            "cannot load definitions from {}: {what}",
            path.display()
        ))
    };
    // Start-up, before any client: a plain read is fine here.
    let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let defs: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| fail(format!("not JSON ({e})")))?;
    warren_broker::definitions::import(broker, &defs, None).map_err(fail)?;
    if !broker.definitions_on_disk().await {
        return Err(fail("the store failed while writing them".into()));
    }
    tracing::info!(file = %path.display(), "definitions loaded");
    Ok(())
}

/// A running broker.
pub struct Broker {
    handles: Vec<ServerHandle>,
    core: Arc<warren_broker::Broker>,
    management: Option<Management>,
}

/// The running management API: its addresses and how to stop it.
struct Management {
    addrs: Vec<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_management(
    broker: Arc<warren_broker::Broker>,
    bind: &[IpAddr],
    port: u16,
) -> std::io::Result<Management> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    let ips: Vec<IpAddr> = if bind.is_empty() {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
    } else {
        bind.to_vec()
    };
    for ip in ips {
        // With port 0, the other addresses take the port the first one got.
        let port = addrs.first().map_or(port, |a: &SocketAddr| a.port());
        let listener = match tokio::net::TcpListener::bind(SocketAddr::new(ip, port)).await {
            Ok(l) => l,
            Err(e) if ip == IpAddr::V6(Ipv6Addr::LOCALHOST) => {
                tracing::warn!("management API not listening on [::1]:{port}: {e}");
                continue;
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen for the management API on {ip}:{port}: {e} (use --management-port to pick another port, or --no-management)"),
                ))
            }
        };
        addrs.push(listener.local_addr()?);
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let broker = broker.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = warren_management::serve(broker, listener, shutdown).await {
                tracing::error!("management API stopped: {e}");
            }
        }));
    }
    Ok(Management { addrs, stop, tasks })
}

impl Broker {
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The first address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    /// Every address the broker listens on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.handles
            .iter()
            .flat_map(|h| h.local_addrs().iter().copied())
            .collect()
    }

    /// `amqp://guest:guest@<addr>/%2f` (the configured default user and
    /// vhost), ready for a client.
    pub fn amqp_url(&self) -> String {
        let a = self.local_addr();
        let host = match a.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let cfg = &self.core.config;
        format!(
            "amqp://{}:{}@{host}:{}/{}",
            url_encode(&cfg.default_user),
            url_encode(&cfg.default_pass),
            a.port(),
            url_encode(&cfg.default_vhost)
        )
    }

    /// Where the management API listens, if it runs.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management
            .as_ref()
            .and_then(|m| m.addrs.first().copied())
    }

    /// The broker core (users, vhosts, queues), for embedding programs.
    pub fn core(&self) -> &Arc<warren_broker::Broker> {
        &self.core
    }

    /// Number of open client connections.
    pub fn connection_count(&self) -> usize {
        self.handles
            .first()
            .map(|h| h.broker.connection_count())
            .unwrap_or(0)
    }

    /// Close every connection (320 CONNECTION_FORCED), stop listening, and
    /// write out everything pending to the store.
    pub async fn shutdown(self) {
        if let Some(m) = self.management {
            let _ = m.stop.send(true);
            for t in m.tasks {
                let _ = t.await;
            }
        }
        for h in self.handles {
            h.shutdown(Duration::from_secs(5)).await;
        }
        let core = self.core.clone();
        let _ = tokio::task::spawn_blocking(move || core.close_store()).await;
    }
}

/// Percent-encode everything but unreserved URL characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
