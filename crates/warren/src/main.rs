//! The `warren` command: runs the broker.

/// jemalloc: steadier resident memory than glibc's per-thread arenas when
/// messages are allocated and freed on different worker threads (see Cargo.toml).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Warren: an AMQP 0-9-1 message broker for RabbitMQ clients.
#[derive(Debug, Parser)]
#[command(name = "warren", version, about)]
struct Cli {
    /// AMQP port.
    #[arg(long, env = "WARREN_PORT", default_value_t = 5672)]
    port: u16,
    /// Addresses to listen on (repeat or separate with commas).
    #[arg(long, env = "WARREN_BIND", value_delimiter = ',', default_values_t = [IpAddr::from([127, 0, 0, 1]), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])])]
    bind: Vec<IpAddr>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive such as `warren_broker=debug`.
    #[arg(long, env = "WARREN_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Largest accepted message body, in bytes.
    #[arg(long, env = "WARREN_MAX_MESSAGE_SIZE", default_value_t = 128 * 1024 * 1024)]
    max_message_size: u64,
    /// Heartbeat interval offered to clients, seconds (0 disables).
    #[arg(long, env = "WARREN_HEARTBEAT", default_value_t = 60)]
    heartbeat: u16,
    /// A delivery not acknowledged within this many milliseconds closes its
    /// channel with 406 and requeues it (RabbitMQ's consumer_timeout). 0 disables.
    #[arg(long, env = "WARREN_CONSUMER_TIMEOUT", default_value_t = 1_800_000)]
    consumer_timeout: u64,
    /// Memory alarm threshold: a fraction of RAM (0.4, RabbitMQ's default; of
    /// the cgroup memory limit if smaller) or a number of bytes; publishers are
    /// blocked above it. 0 disables the alarm.
    #[arg(long, env = "WARREN_MEMORY_HIGH_WATERMARK", default_value = "0.4")]
    memory_high_watermark: f64,
    /// Disk alarm threshold: publishers are blocked while the data directory's
    /// filesystem has less free space. Bytes, or with a RabbitMQ unit (50MB,
    /// 1GB, 500MiB). 0 disables the alarm.
    #[arg(long, env = "WARREN_DISK_FREE_LIMIT", default_value = "50000000", value_parser = warren_broker::disk::parse_limit)]
    disk_free_limit: u64,
    /// Directory for durable state (default: $XDG_DATA_HOME/warren or
    /// ~/.local/share/warren; /var/lib/warren when run as a systemd service).
    #[arg(long, env = "WARREN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory: nothing survives a restart (for tests).
    #[arg(long, env = "WARREN_IN_MEMORY", conflicts_with = "data_dir")]
    in_memory: bool,
    /// HTTP management API port (RabbitMQ's /api), on the --bind addresses.
    #[arg(long, env = "WARREN_MANAGEMENT_PORT", default_value_t = 15672)]
    management_port: u16,
    /// Do not serve the HTTP management API.
    #[arg(long, env = "WARREN_NO_MANAGEMENT")]
    no_management: bool,
    /// User created on first start (empty data directory), with the
    /// administrator tag and full permissions on the default vhost.
    #[arg(long, env = "RABBITMQ_DEFAULT_USER", default_value = "guest")]
    default_user: String,
    /// Password of the user created on first start.
    #[arg(
        long,
        env = "RABBITMQ_DEFAULT_PASS",
        default_value = "guest",
        hide_env_values = true
    )]
    default_pass: String,
    /// Vhost created on first start.
    #[arg(long, env = "RABBITMQ_DEFAULT_VHOST", default_value = "/")]
    default_vhost: String,
    /// Definitions file to load at start (RabbitMQ's JSON export, as with its
    /// `load_definitions`): users, vhosts, permissions, queues, exchanges, bindings.
    #[arg(long, env = "WARREN_LOAD_DEFINITIONS")]
    load_definitions: Option<PathBuf>,
    /// Storage engine: redb (default) or sled.
    #[arg(long = "store", env = "WARREN_STORE", default_value = "redb", value_parser = parse_engine)]
    engine: warren::EngineKind,
}

fn parse_engine(s: &str) -> Result<warren::EngineKind, String> {
    warren::EngineKind::parse(s).ok_or_else(|| format!("unknown store '{s}': use redb or sled"))
}

/// The default data directory (printed at start-up).
fn default_data_dir() -> PathBuf {
    // systemd sets INVOCATION_ID for services.
    if std::env::var_os("INVOCATION_ID").is_some() {
        return PathBuf::from("/var/lib/warren");
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("warren");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/warren"),
        None => PathBuf::from("warren-data"),
    }
}

/// The watermark in bytes: below 1 it is a fraction of physical memory.
fn watermark(value: f64) -> Option<u64> {
    if value <= 0.0 {
        None
    } else if value < 1.0 {
        warren_broker::memory::total_memory().map(|t| (t as f64 * value) as u64)
    } else {
        Some(value as u64)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|e| {
        eprintln!(
            "warren: invalid --log-level '{}': {e}; using 'info'",
            cli.log_level
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> std::process::ExitCode {
    let config = warren::Config {
        max_message_size: cli.max_message_size,
        heartbeat: cli.heartbeat,
        consumer_timeout: (cli.consumer_timeout > 0)
            .then(|| std::time::Duration::from_millis(cli.consumer_timeout)),
        memory_high_watermark: watermark(cli.memory_high_watermark),
        disk_free_limit: (cli.disk_free_limit > 0).then_some(cli.disk_free_limit),
        default_user: cli.default_user.clone(),
        default_pass: cli.default_pass.clone(),
        default_vhost: cli.default_vhost.clone(),
        ..Default::default()
    };
    let mut builder = warren::Broker::builder()
        .port(cli.port)
        .bind(cli.bind)
        .config(config)
        .management_port((!cli.no_management).then_some(cli.management_port));
    if let Some(path) = &cli.load_definitions {
        builder = builder.load_definitions(path);
    }
    if cli.in_memory {
        tracing::info!("in-memory mode: nothing is written to disk and nothing survives a restart");
    } else {
        let dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
        tracing::info!(data_dir = %dir.display(), store = cli.engine.as_str(), "opening the message store");
        builder = builder.data_dir(dir, cli.engine);
    }
    let broker = match builder.start().await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addresses = ?broker.local_addrs(),
        "Warren started; connect with amqp://guest:guest@localhost:{}/",
        broker.local_addr().port()
    );
    if let Some(addr) = broker.management_addr() {
        tracing::info!("management API on http://localhost:{}/api/", addr.port());
    }
    wait_for_signal().await;
    tracing::info!("shutting down: closing client connections");
    broker.shutdown().await;
    tracing::info!("stopped");
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
