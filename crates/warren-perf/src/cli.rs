//! Command line.

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Load-testing tool for AMQP 0-9-1 brokers (Warren, RabbitMQ).
///
/// Prints progress each second on stderr and, at the end, one line
/// `RESULT {json}` on stdout with the scenario, its parameters and the figures.
#[derive(Debug, Parser)]
#[command(name = "warren-perf", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct Global {
    /// Broker URL: amqp://user:pass@host:port/vhost (vhost %-encoded, %2f is "/").
    #[arg(
        long,
        global = true,
        env = "WARREN_PERF_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    #[serde(skip)]
    pub url: String,
    /// PID of the broker: sample its CPU time and RSS (/proc) and report broker
    /// CPU µs per message and peak RSS.
    #[arg(long, global = true)]
    pub broker_pid: Option<u32>,
    /// Worker threads of the tool (1: a single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Give up (and report a stall) when no message moved for this many seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub stall_timeout: f64,
    /// No per-second progress lines.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Producers → queues → consumers, as fast as allowed; reports sent, confirmed
    /// and received msg/s.
    Throughput(ThroughputArgs),
    /// One producer → a fanout exchange bound to N queues, one consumer each;
    /// reports delivered msg/s (all queues together).
    Fanout(FanoutArgs),
    /// Publish at a fixed rate; latency percentiles measured from each message's
    /// scheduled send time (no coordinated omission).
    Latency(LatencyArgs),
    /// Publish N messages with no consumer (confirms on), then drain them;
    /// reports publish and drain msg/s separately.
    Backlog(BacklogArgs),
    /// Open N idle connections (one channel each), hold them, report broker RSS
    /// per connection (needs --broker-pid), close them.
    Connections(ConnectionsArgs),
    /// Start the broker with --cmd K times and measure spawn → connection.open-ok.
    Startup(StartupArgs),
}

/// Message and queue options shared by the message scenarios.
#[derive(Debug, Clone, Args, Serialize)]
pub struct MsgArgs {
    /// Message body size in bytes (the first 8 carry a timestamp when >= 8).
    #[arg(long, short = 's', default_value_t = 16)]
    pub size: usize,
    /// Persistent messages (delivery_mode 2) on durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Consumers use auto-ack (no_ack) instead of manual acks.
    #[arg(long)]
    pub auto_ack: bool,
    /// Manual acks: one basic.ack (multiple=true) every N deliveries.
    #[arg(long, default_value_t = 1)]
    pub ack_every: u32,
    /// basic.qos prefetch count per consumer channel (0: unlimited).
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u16,
    /// Publisher confirms with at most this many unconfirmed messages per
    /// producer (0: no confirms).
    #[arg(long)]
    pub confirm: Option<u64>,
    /// Queue names are PREFIX-0, PREFIX-1, ... (deleted and re-declared at start,
    /// deleted at the end). Default: perf-q-<pid>, so that publishes a broker is
    /// still working through from an earlier run cannot land in this run's queues.
    #[arg(long)]
    pub queue_prefix: Option<String>,
    /// Extra queue.declare argument KEY=VALUE (repeatable), e.g. x-queue-type=quorum.
    #[arg(long = "queue-arg")]
    pub queue_args: Vec<String>,
    /// Extra basic.consume argument KEY=VALUE (repeatable), e.g.
    /// x-stream-offset=first to replay a stream.
    #[arg(long = "consumer-arg")]
    pub consumer_args: Vec<String>,
    /// Leave the queues (and what is in them) in place at the end, e.g. to
    /// measure a broker's recovery of a backlog.
    #[arg(long)]
    pub keep_queues: bool,
}

/// How long a run lasts.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RunLength {
    /// Run for this many seconds (default 10 unless --count is given).
    #[arg(long, short = 'd')]
    pub duration: Option<f64>,
    /// Publish this many messages in total, and run until they are all delivered.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ThroughputArgs {
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, short = 'q', default_value_t = 1)]
    pub queues: usize,
    /// Total publish rate limit, msg/s across all producers (default: unlimited).
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub msg: MsgArgs,
    #[command(flatten)]
    pub len: RunLength,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    /// Queues bound to the exchange, one consumer each.
    #[arg(long, short = 'q', default_value_t = 4)]
    pub queues: usize,
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,
    /// Fanout exchange name (default: perf-fanout-<pid>).
    #[arg(long)]
    pub exchange: Option<String>,
    /// Total publish rate limit, msg/s (default: unlimited).
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub msg: MsgArgs,
    #[command(flatten)]
    pub len: RunLength,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct LatencyArgs {
    /// Publish rate, msg/s (total, split across producers).
    #[arg(long, short = 'r', default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, short = 'q', default_value_t = 1)]
    pub queues: usize,
    #[command(flatten)]
    pub msg: MsgArgs,
    #[command(flatten)]
    pub len: RunLength,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct BacklogArgs {
    /// Messages to publish before draining.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub count: u64,
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,
    /// Consumers draining the queue(s).
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: usize,
    #[arg(long, short = 'q', default_value_t = 1)]
    pub queues: usize,
    #[command(flatten)]
    pub msg: MsgArgs,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct ConnectionsArgs {
    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub count: usize,
    /// Seconds to hold them open (RSS is sampled at the end of the hold).
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct StartupArgs {
    /// Command that starts the broker in the foreground (run with `sh -c`, in its
    /// own process group, which is killed after each run).
    #[arg(long)]
    pub cmd: String,
    /// Port to connect to (default: the --url's port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Runs.
    #[arg(long, short = 'k', default_value_t = 5)]
    pub runs: usize,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Append the broker's stdout/stderr to this file (default: discarded).
    #[arg(long)]
    pub log: Option<String>,
}
