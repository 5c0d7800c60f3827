//! The load engine shared by the message scenarios: producer and consumer
//! connections on the hand-written hot path, a coordinator that prints progress
//! each second, watches for stalls and decides when the run is over, and the
//! figures it hands back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::client::{describe_close, Conn, ConnOpts};
use crate::hist::Histogram;
use crate::proto::{self, ConfirmTracker, MsgTemplate};
use crate::sys::{self, ProcSample, ProcWatch};
use crate::url::AmqpUrl;
use crate::{bail, Error, Result};

/// Bytes a publisher encodes before one write.
const BATCH_BYTES: usize = 128 * 1024;
const POLL: Duration = Duration::from_millis(5);

/// What a publisher writes into the first 8 bytes of each body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Nothing (bodies shorter than 8 bytes).
    None,
    /// The time the batch was encoded (latency as the publisher saw it).
    Actual,
    /// The time the message was due by the rate schedule: a publisher that falls
    /// behind (because the broker pushes back) cannot hide the delay.
    Scheduled,
}

#[derive(Debug, Clone)]
pub struct ProducerSpec {
    /// (exchange, routing key) pairs, used round-robin.
    pub targets: Vec<(String, String)>,
    /// Messages to send; `None`: until the run stops.
    pub count: Option<u64>,
    /// Messages per second for this producer; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Unconfirmed messages allowed in flight; 0: no publisher confirms.
    pub confirm_window: u64,
}

#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub queues: Vec<String>,
    /// 0: no basic.qos.
    pub prefetch: u16,
    /// Send one `basic.ack` (multiple when > 1) every this many deliveries.
    pub ack_every: u32,
    pub auto_ack: bool,
    /// basic.consume arguments.
    pub arguments: amq_protocol::types::FieldTable,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub label: String,
    pub url: AmqpUrl,
    pub producers: Vec<ProducerSpec>,
    pub consumers: Vec<ConsumerSpec>,
    pub body_size: usize,
    pub persistent: bool,
    pub stamp: Stamp,
    /// Stop once this many deliveries arrived (and every producer finished).
    pub expect_delivered: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop (and report a stall) when nothing moved for this long.
    pub stall_timeout: Duration,
    pub broker: Option<ProcWatch>,
    pub progress: bool,
    /// Deliveries per published message (fanout: the number of queues), for the
    /// backlog estimate in progress lines.
    pub fanout: u64,
}

/// Broker figures over the measured window.
#[derive(Debug, Clone, Copy)]
pub struct BrokerFigures {
    pub cpu: Duration,
    pub user: Duration,
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub rss_peak_kb: u64,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the start of the measured window to the stop decision.
    pub elapsed: Duration,
    /// When the last producer had sent (and, with confirms, settled) its count.
    pub publish_done: Option<Duration>,
    /// When the expected number of deliveries was reached.
    pub deliver_done: Option<Duration>,
    pub published: u64,
    pub confirmed: u64,
    pub nacked: u64,
    pub returned: u64,
    pub delivered: u64,
    /// Latency samples in nanoseconds, from the time in bytes 0..8 of the body
    /// (the scheduled send time in latency runs, the actual one otherwise).
    pub latency: Histogram,
    /// From the actual send time (bytes 8..16), in latency runs with bodies of 16
    /// bytes or more: the broker's part without the publisher's lateness.
    pub service_latency: Histogram,
    /// Largest delay of a publish behind its rate schedule.
    pub max_send_lag: Duration,
    pub blocked: u64,
    pub client_cpu: Duration,
    pub client_user: Duration,
    pub client_peak_rss_kb: u64,
    pub broker: Option<BrokerFigures>,
    pub stalled: bool,
    pub errors: Vec<String>,
    pub server: String,
}

impl Outcome {
    pub fn publish_rate(&self) -> f64 {
        rate(self.published, self.publish_done.unwrap_or(self.elapsed))
    }
    pub fn deliver_rate(&self) -> f64 {
        rate(self.delivered, self.deliver_done.unwrap_or(self.elapsed))
    }
    pub fn confirm_rate(&self) -> f64 {
        rate(self.confirmed, self.publish_done.unwrap_or(self.elapsed))
    }
}

pub fn rate(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        0.0
    } else {
        n as f64 / s
    }
}

struct Shared {
    published: AtomicU64,
    confirmed: AtomicU64,
    nacked: AtomicU64,
    returned: AtomicU64,
    delivered: AtomicU64,
    blocked: AtomicU64,
    max_lag_ns: AtomicU64,
    producers_done: AtomicU64,
    /// ns since `t0` when the last producer finished / deliveries reached the target.
    publish_done_ns: AtomicU64,
    deliver_done_ns: AtomicU64,
    expect_delivered: u64,
    stop: watch::Sender<bool>,
    errors: Mutex<Vec<String>>,
    /// Body timestamps are nanoseconds since this instant.
    base: Instant,
    t0: Mutex<Option<Instant>>,
}

impl Shared {
    fn fail(&self, who: &str, e: Error) {
        if let Ok(mut errs) = self.errors.lock() {
            errs.push(format!("{who}: {e}"));
        }
        self.stop.send_replace(true);
    }

    fn since_t0_ns(&self) -> u64 {
        let t0 = self.t0.lock().ok().and_then(|g| *g);
        t0.map(|t| t.elapsed().as_nanos() as u64).unwrap_or(0)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Per-producer state shared between its writer and its confirm reader.
struct PState {
    settled: AtomicU64,
    notify: Notify,
    failed: AtomicBool,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// Open the connections, run the plan, and return the figures.
pub async fn run(plan: Plan) -> Outcome {
    let (stop, _) = watch::channel(false);
    let shared = Arc::new(Shared {
        published: AtomicU64::new(0),
        confirmed: AtomicU64::new(0),
        nacked: AtomicU64::new(0),
        returned: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        blocked: AtomicU64::new(0),
        max_lag_ns: AtomicU64::new(0),
        producers_done: AtomicU64::new(0),
        publish_done_ns: AtomicU64::new(0),
        deliver_done_ns: AtomicU64::new(0),
        expect_delivered: plan.expect_delivered.unwrap_or(u64::MAX),
        stop,
        errors: Mutex::new(Vec::new()),
        base: Instant::now(),
        t0: Mutex::new(None),
    });
    let mut server = String::new();
    let outcome = |errors: Vec<String>, server: String| Outcome {
        elapsed: Duration::ZERO,
        publish_done: None,
        deliver_done: None,
        published: 0,
        confirmed: 0,
        nacked: 0,
        returned: 0,
        delivered: 0,
        latency: Histogram::new(),
        service_latency: Histogram::new(),
        max_send_lag: Duration::ZERO,
        blocked: 0,
        client_cpu: Duration::ZERO,
        client_user: Duration::ZERO,
        client_peak_rss_kb: 0,
        broker: None,
        stalled: false,
        errors,
        server,
    };

    // Setup: consumers first, so that nothing published is missed.
    let mut consumer_conns = Vec::new();
    for (j, c) in plan.consumers.iter().enumerate() {
        let opts = ConnOpts {
            name: format!("warren-perf consumer {j}"),
            ..Default::default()
        };
        let r = async {
            let mut conn = Conn::open(&plan.url, &opts).await?;
            conn.channel_open(1).await?;
            if !c.auto_ack && c.prefetch > 0 {
                conn.qos(1, c.prefetch).await?;
            }
            for (k, q) in c.queues.iter().enumerate() {
                conn.consume(
                    1,
                    q,
                    &format!("perf-c{j}-{k}"),
                    c.auto_ack,
                    c.arguments.clone(),
                )
                .await?;
            }
            Ok::<Conn, Error>(conn)
        }
        .await;
        match r {
            Ok(conn) => {
                server = conn.server.clone();
                consumer_conns.push(conn);
            }
            Err(e) => {
                close_all(consumer_conns).await;
                return outcome(vec![format!("consumer {j}: {e}")], server);
            }
        }
    }
    let mut producer_conns = Vec::new();
    for (i, p) in plan.producers.iter().enumerate() {
        let opts = ConnOpts {
            name: format!("warren-perf producer {i}"),
            ..Default::default()
        };
        let r = async {
            let mut conn = Conn::open(&plan.url, &opts).await?;
            conn.channel_open(1).await?;
            if p.confirm_window > 0 {
                conn.confirm_select(1).await?;
            }
            Ok::<Conn, Error>(conn)
        }
        .await;
        match r {
            Ok(conn) => {
                server = conn.server.clone();
                producer_conns.push(conn);
            }
            Err(e) => {
                close_all(consumer_conns).await;
                close_all(producer_conns).await;
                return outcome(vec![format!("producer {i}: {e}")], server);
            }
        }
    }

    // The measured window starts here.
    let client0 = sys::self_usage();
    let broker0 = plan.broker.and_then(|b| b.sample());
    let t0 = Instant::now();
    if let Ok(mut g) = shared.t0.lock() {
        *g = Some(t0);
    }
    let mut consumers: Vec<JoinHandle<Result<(Histogram, Histogram)>>> = Vec::new();
    for (j, (conn, spec)) in consumer_conns
        .into_iter()
        .zip(plan.consumers.iter())
        .enumerate()
    {
        let shared = shared.clone();
        let spec = spec.clone();
        // 1: one timestamp (bytes 0..8); 2: also the actual send time (8..16).
        let stamps = match plan.stamp {
            Stamp::None => 0,
            Stamp::Actual => 1,
            Stamp::Scheduled if plan.body_size >= 16 => 2,
            Stamp::Scheduled => 1,
        };
        consumers.push(tokio::spawn(async move {
            let r = consumer(conn, spec, stamps, shared.clone()).await;
            if let Err(e) = &r {
                shared.fail(&format!("consumer {j}"), e.clone());
            }
            r
        }));
    }
    let mut producers: Vec<JoinHandle<()>> = Vec::new();
    for (i, (conn, spec)) in producer_conns
        .into_iter()
        .zip(plan.producers.iter())
        .enumerate()
    {
        let shared = shared.clone();
        let spec = spec.clone();
        let (size, persistent, stamp) = (plan.body_size, plan.persistent, plan.stamp);
        producers.push(tokio::spawn(async move {
            if let Err(e) = producer(i, conn, spec, size, persistent, stamp, shared.clone()).await {
                shared.fail(&format!("producer {i}"), e);
            }
        }));
    }

    // Coordinate.
    let n_producers = plan.producers.len() as u64;
    let mut last = [0u64; 3];
    let mut last_move = Instant::now();
    let mut last_sum = 0u64;
    let mut last_tick = t0;
    let mut last_cpu = (client0.cpu, broker0.map(|b| b.cpu));
    let mut rss_peak = broker0.map(|b| b.rss_kb).unwrap_or(0);
    let mut stalled = false;
    loop {
        tokio::time::sleep(POLL).await;
        let now = Instant::now();
        let cur = [
            shared.published.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed),
            shared.confirmed.load(Ordering::Relaxed) + shared.nacked.load(Ordering::Relaxed),
        ];
        if shared.stopped() {
            break;
        }
        let producers_done = shared.producers_done.load(Ordering::Relaxed) >= n_producers;
        match plan.expect_delivered {
            Some(e) if producers_done && cur[1] >= e => break,
            None if plan.duration.is_none() && producers_done => break,
            _ => {}
        }
        if let Some(d) = plan.duration {
            if now.duration_since(t0) >= d {
                break;
            }
        }
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            let dt = now.duration_since(last_tick).as_secs_f64();
            let client = sys::self_usage();
            let broker = plan.broker.and_then(|b| b.sample());
            if let Some(b) = broker {
                rss_peak = rss_peak.max(b.rss_kb);
            }
            if plan.progress {
                let mut line = format!(
                    "[{}] {:6.1}s  sent {:>9.0}/s  recv {:>9.0}/s  conf {:>9.0}/s  backlog {:>8}",
                    plan.label,
                    now.duration_since(t0).as_secs_f64(),
                    (cur[0] - last[0]) as f64 / dt,
                    (cur[1] - last[1]) as f64 / dt,
                    (cur[2] - last[2]) as f64 / dt,
                    if plan.consumers.is_empty() {
                        0
                    } else {
                        (cur[0] * plan.fanout).saturating_sub(cur[1])
                    }
                );
                line.push_str(&format!(
                    "  client {:3.0}% cpu",
                    pct(client.cpu.saturating_sub(last_cpu.0), dt)
                ));
                if let (Some(b), Some(prev)) = (broker, last_cpu.1) {
                    line.push_str(&format!(
                        "  broker {:3.0}% cpu {:.1} MiB",
                        pct(b.cpu.saturating_sub(prev), dt),
                        b.rss_kb as f64 / 1024.0
                    ));
                }
                if shared.blocked.load(Ordering::Relaxed) > 0 {
                    line.push_str("  (publishers were blocked by the broker)");
                }
                eprintln!("{line}");
            }
            last_cpu = (client.cpu, broker.map(|b| b.cpu).or(last_cpu.1));
            last = cur;
            last_tick = now;
        }
        let sum: u64 = cur.iter().sum();
        if sum != last_sum {
            last_sum = sum;
            last_move = now;
        }
        if now.duration_since(last_move) >= plan.stall_timeout {
            stalled = true;
            break;
        }
    }
    let elapsed = t0.elapsed();
    let client1 = sys::self_usage();
    let broker1 = plan.broker.and_then(|b| b.sample());
    let published = shared.published.load(Ordering::Relaxed);
    let confirmed = shared.confirmed.load(Ordering::Relaxed);
    let nacked = shared.nacked.load(Ordering::Relaxed);
    let delivered = shared.delivered.load(Ordering::Relaxed);
    shared.stop.send_replace(true);

    // Tear down.
    let mut latency = Histogram::new();
    let mut service_latency = Histogram::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    for h in producers {
        let _ = tokio::time::timeout_at(deadline.into(), h).await;
    }
    for h in consumers {
        if let Ok(Ok(Ok((hist, service)))) = tokio::time::timeout_at(deadline.into(), h).await {
            latency.merge(&hist);
            service_latency.merge(&service);
        }
    }
    let done = |v: u64| {
        if v == 0 {
            None
        } else {
            Some(Duration::from_nanos(v))
        }
    };
    let broker = match (broker0, broker1) {
        (Some(a), Some(b)) => Some(BrokerFigures {
            cpu: b.cpu.saturating_sub(a.cpu),
            user: b.user.saturating_sub(a.user),
            rss_start_kb: a.rss_kb,
            rss_end_kb: b.rss_kb,
            rss_peak_kb: rss_peak.max(b.rss_kb),
        }),
        _ => None,
    };
    let errors = shared.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let mut o = outcome(errors, server);
    o.elapsed = elapsed;
    o.publish_done =
        if n_producers > 0 && shared.producers_done.load(Ordering::Relaxed) >= n_producers {
            done(shared.publish_done_ns.load(Ordering::Relaxed))
        } else {
            None
        };
    o.deliver_done = done(shared.deliver_done_ns.load(Ordering::Relaxed));
    o.published = published;
    o.confirmed = confirmed;
    o.nacked = nacked;
    o.returned = shared.returned.load(Ordering::Relaxed);
    o.delivered = delivered;
    o.latency = latency;
    o.service_latency = service_latency;
    o.max_send_lag = Duration::from_nanos(shared.max_lag_ns.load(Ordering::Relaxed));
    o.blocked = shared.blocked.load(Ordering::Relaxed);
    o.client_cpu = client1.cpu.saturating_sub(client0.cpu);
    o.client_user = client1.user.saturating_sub(client0.user);
    o.client_peak_rss_kb = client1.rss_kb;
    o.broker = broker;
    o.stalled = stalled;
    o
}

fn pct(cpu: Duration, dt: f64) -> f64 {
    cpu.as_secs_f64() / dt * 100.0
}

async fn close_all(conns: Vec<Conn>) {
    for c in conns {
        c.close().await;
    }
}

/// The connection.close frame, for the data loops (which own the raw socket).
fn close_frame() -> BytesMut {
    use amq_protocol::protocol::{connection, AMQPClass};
    let mut out = BytesMut::new();
    warren_codec::encode_method(
        &mut out,
        0,
        &AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    out
}

async fn read_some(rd: &mut (impl AsyncReadExt + Unpin), rbuf: &mut BytesMut) -> Result<()> {
    let need = proto::frame_need(rbuf).max(64 * 1024);
    rbuf.reserve(need);
    if rd.read_buf(rbuf).await? == 0 {
        bail!("broker closed the TCP connection");
    }
    Ok(())
}

/// What a producer's writer did.
struct WriterEnd {
    sent: u64,
    max_lag_ns: u64,
    /// The count was reached.
    finished: bool,
    /// The frame stream is intact (no write was cut short), so connection.close can follow.
    clean: bool,
}

/// Everything a producer's writer needs.
struct Writer {
    templates: Vec<MsgTemplate>,
    spec: ProducerSpec,
    body_size: usize,
    stamp: Stamp,
    state: Arc<PState>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Encode messages `sent..sent + n` into `wbuf`. Bodies carry the due time of
    /// each message by the rate schedule (or `now_ns` without a schedule) in bytes
    /// 0..8 and the actual encode time in bytes 8..16.
    fn encode(
        &self,
        wbuf: &mut BytesMut,
        body: &mut [u8],
        rr: &mut usize,
        sent: u64,
        n: u64,
        start_ns: u64,
    ) {
        let now_ns = ns(self.shared.base.elapsed());
        let stamped = self.stamp != Stamp::None && self.body_size >= 8;
        if self.body_size >= 16 {
            body[8..16].copy_from_slice(&now_ns.to_be_bytes());
        }
        for k in sent..sent + n {
            if stamped {
                let ts = match (self.stamp, self.spec.rate) {
                    (Stamp::Scheduled, Some(r)) => start_ns + (k as f64 * 1e9 / r) as u64,
                    _ => now_ns,
                };
                body[..8].copy_from_slice(&ts.to_be_bytes());
            }
            self.templates[*rr].encode(wbuf, body);
            *rr += 1;
            if *rr == self.templates.len() {
                *rr = 0;
            }
        }
    }

    fn batch_max(&self) -> u64 {
        (BATCH_BYTES / self.templates[0].wire_size()).max(1) as u64
    }

    /// How many messages may go now (window and count), or `None` when the count is reached.
    fn room(&self, sent: u64) -> Option<u64> {
        let mut n = self.batch_max();
        if let Some(c) = self.spec.count {
            if sent >= c {
                return None;
            }
            n = n.min(c - sent);
        }
        let window = self.spec.confirm_window;
        if window > 0 {
            let outstanding = sent.saturating_sub(self.state.settled.load(Ordering::Acquire));
            n = n.min(window.saturating_sub(outstanding));
        }
        Some(n)
    }

    fn halted(&self) -> bool {
        self.shared.stopped() || self.state.failed.load(Ordering::Relaxed)
    }

    /// The async writer: batches as much as the window and rate allow into one write.
    async fn run_async(&self, wr: &mut OwnedWriteHalf) -> Result<WriterEnd> {
        let mut stop_rx = self.shared.stop.subscribe();
        let wire = self.templates[0].wire_size();
        let mut wbuf = BytesMut::with_capacity(BATCH_BYTES + wire);
        let mut body = vec![0u8; self.body_size];
        let start = Instant::now();
        let start_ns = ns(start.duration_since(self.shared.base));
        let mut end = WriterEnd {
            sent: 0,
            max_lag_ns: 0,
            finished: false,
            clean: true,
        };
        let mut rr = 0usize;
        loop {
            if self.halted() {
                break;
            }
            let Some(mut n) = self.room(end.sent) else {
                end.finished = true;
                break;
            };
            if n == 0 {
                // Window full: wait for confirms.
                tokio::select! {
                    _ = self.state.notify.notified() => {}
                    _ = stop_rx.changed() => {}
                }
                continue;
            }
            if let Some(r) = self.spec.rate {
                let due = (start.elapsed().as_secs_f64() * r).floor() as u64 + 1;
                if due <= end.sent {
                    let next = start + Duration::from_secs_f64(end.sent as f64 / r);
                    tokio::select! {
                        _ = tokio::time::sleep_until(next.into()) => {}
                        _ = stop_rx.changed() => {}
                    }
                    continue;
                }
                n = n.min(due - end.sent);
                let sched = Duration::from_secs_f64(end.sent as f64 / r);
                end.max_lag_ns = end
                    .max_lag_ns
                    .max(ns(start.elapsed().saturating_sub(sched)));
            }
            self.encode(&mut wbuf, &mut body, &mut rr, end.sent, n, start_ns);
            tokio::select! {
                r = wr.write_all(&wbuf) => r.map_err(|e| Error(format!("writing publishes: {e}")))?,
                _ = stop_rx.changed() => { end.clean = false; break; }
            }
            wbuf.clear();
            end.sent += n;
            self.shared.published.fetch_add(n, Ordering::Relaxed);
        }
        Ok(end)
    }

    /// The paced writer for fixed-rate latency runs: an OS thread that sleeps with
    /// microsecond precision (tokio's timer has 1 ms granularity, which would add up
    /// to a millisecond of lateness to every message) and writes to the socket's
    /// descriptor itself, waiting with poll(2) when the socket is full.
    fn run_paced(&self, fd: std::os::fd::RawFd) -> Result<WriterEnd> {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        }
        // SAFETY: the descriptor stays open (its OwnedWriteHalf lives in the async
        // producer until this thread is done) and ManuallyDrop never closes it.
        let mut sock = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
        let rate = self.spec.rate.unwrap_or(1.0).max(1e-9);
        let wire = self.templates[0].wire_size();
        let mut wbuf = BytesMut::with_capacity(BATCH_BYTES + wire);
        let mut body = vec![0u8; self.body_size];
        let start = Instant::now();
        let start_ns = ns(start.duration_since(self.shared.base));
        let mut end = WriterEnd {
            sent: 0,
            max_lag_ns: 0,
            finished: false,
            clean: true,
        };
        let mut rr = 0usize;
        'run: loop {
            if self.halted() {
                break;
            }
            let Some(mut n) = self.room(end.sent) else {
                end.finished = true;
                break;
            };
            if n == 0 {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            let elapsed = start.elapsed();
            let due = (elapsed.as_secs_f64() * rate).floor() as u64 + 1;
            if due <= end.sent {
                let next = Duration::from_secs_f64(end.sent as f64 / rate);
                std::thread::sleep(next.saturating_sub(elapsed).min(Duration::from_millis(100)));
                continue;
            }
            n = n.min(due - end.sent);
            let sched = Duration::from_secs_f64(end.sent as f64 / rate);
            end.max_lag_ns = end.max_lag_ns.max(ns(elapsed.saturating_sub(sched)));
            self.encode(&mut wbuf, &mut body, &mut rr, end.sent, n, start_ns);
            let mut off = 0usize;
            while off < wbuf.len() {
                match sock.write(&wbuf[off..]) {
                    Ok(0) => bail!("writing publishes: the socket accepts no more bytes"),
                    Ok(k) => off += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if self.halted() {
                            end.clean = false;
                            break 'run;
                        }
                        let mut pfd = libc::pollfd {
                            fd,
                            events: libc::POLLOUT,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd.
                        unsafe { libc::poll(&mut pfd, 1, 100) };
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => bail!("writing publishes: {e}"),
                }
            }
            wbuf.clear();
            end.sent += n;
            self.shared.published.fetch_add(n, Ordering::Relaxed);
        }
        Ok(end)
    }
}

async fn producer(
    id: usize,
    conn: Conn,
    spec: ProducerSpec,
    body_size: usize,
    persistent: bool,
    stamp: Stamp,
    shared: Arc<Shared>,
) -> Result<()> {
    let (stream, rbuf, frame_max) = conn.into_parts();
    let (rd, mut wr) = stream.into_split();
    let templates: Vec<MsgTemplate> = spec
        .targets
        .iter()
        .map(|(ex, rk)| {
            MsgTemplate::new(
                1,
                ex,
                rk,
                false,
                if persistent { 2 } else { 1 },
                body_size,
                frame_max,
            )
        })
        .collect();
    if templates.is_empty() {
        bail!("producer has no target");
    }
    let state = Arc::new(PState {
        settled: AtomicU64::new(0),
        notify: Notify::new(),
        failed: AtomicBool::new(false),
    });
    let reader = tokio::spawn(producer_reader(
        id,
        rd,
        rbuf,
        frame_max,
        state.clone(),
        shared.clone(),
    ));
    let window = spec.confirm_window;
    let paced = stamp == Stamp::Scheduled && spec.rate.is_some();
    let writer = Arc::new(Writer {
        templates,
        spec,
        body_size,
        stamp,
        state: state.clone(),
        shared: shared.clone(),
    });
    let end = if paced {
        use std::os::fd::AsRawFd;
        let fd = wr.as_ref().as_raw_fd();
        let w = writer.clone();
        match tokio::task::spawn_blocking(move || w.run_paced(fd)).await {
            Ok(r) => r?,
            Err(e) => bail!("paced publisher thread failed: {e}"),
        }
    } else {
        writer.run_async(&mut wr).await?
    };
    shared
        .max_lag_ns
        .fetch_max(end.max_lag_ns, Ordering::Relaxed);
    let mut stop_rx = shared.stop.subscribe();
    if end.finished {
        // Count reached: with confirms, wait until every message is settled.
        while window > 0
            && state.settled.load(Ordering::Acquire) < end.sent
            && !shared.stopped()
            && !state.failed.load(Ordering::Relaxed)
        {
            tokio::select! {
                _ = state.notify.notified() => {}
                _ = stop_rx.changed() => {}
            }
        }
        if !state.failed.load(Ordering::Relaxed)
            && (window == 0 || state.settled.load(Ordering::Acquire) >= end.sent)
        {
            shared
                .publish_done_ns
                .fetch_max(shared.since_t0_ns(), Ordering::Relaxed);
            shared.producers_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    if end.clean && !state.failed.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(Duration::from_secs(2), wr.write_all(&close_frame())).await;
        let _ = tokio::time::timeout(Duration::from_secs(3), reader).await;
    } else {
        reader.abort();
    }
    Ok(())
}

async fn producer_reader(
    id: usize,
    mut rd: OwnedReadHalf,
    mut rbuf: BytesMut,
    frame_max: u32,
    state: Arc<PState>,
    shared: Arc<Shared>,
) {
    let r = async {
        let mut tracker = ConfirmTracker::new();
        loop {
            let (mut acks, mut nacks, mut returns) = (0u64, 0u64, 0u64);
            let mut pos = 0usize;
            let mut closed = false;
            while let Some((f, n)) = proto::next_frame(&rbuf[pos..], frame_max)? {
                pos += n;
                match f.method_ids() {
                    Some((proto::BASIC, proto::BASIC_ACK)) => {
                        let (tag, multiple) = proto::confirm_args(f.payload)?;
                        acks += tracker.settle(tag, multiple);
                    }
                    Some((proto::BASIC, proto::BASIC_NACK)) => {
                        let (tag, multiple) = proto::confirm_args(f.payload)?;
                        nacks += tracker.settle(tag, multiple);
                    }
                    Some((proto::BASIC, proto::BASIC_RETURN)) => returns += 1,
                    Some((proto::CONNECTION, proto::CONNECTION_CLOSE_OK)) => closed = true,
                    Some((proto::CONNECTION, proto::CONNECTION_CLOSE))
                    | Some((proto::CHANNEL, proto::CHANNEL_CLOSE)) => {
                        bail!("{}", describe_close(f.payload))
                    }
                    Some((proto::CONNECTION, proto::CONNECTION_BLOCKED)) => {
                        shared.blocked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            rbuf.advance(pos);
            if acks + nacks > 0 {
                state.settled.fetch_add(acks + nacks, Ordering::Release);
                shared.confirmed.fetch_add(acks, Ordering::Relaxed);
                shared.nacked.fetch_add(nacks, Ordering::Relaxed);
                state.notify.notify_one();
            }
            if returns > 0 {
                shared.returned.fetch_add(returns, Ordering::Relaxed);
            }
            if closed {
                return Ok(());
            }
            read_some(&mut rd, &mut rbuf).await?;
        }
    }
    .await;
    if let Err(e) = r {
        state.failed.store(true, Ordering::Relaxed);
        state.notify.notify_one();
        if !shared.stopped() {
            shared.fail(
                &format!("producer {id}"),
                e.context("reading from the broker"),
            );
        }
    }
}

async fn consumer(
    conn: Conn,
    spec: ConsumerSpec,
    stamps: u8,
    shared: Arc<Shared>,
) -> Result<(Histogram, Histogram)> {
    let (mut stream, mut rbuf, frame_max): (TcpStream, BytesMut, u32) = conn.into_parts();
    let mut wbuf = BytesMut::with_capacity(4096);
    let mut hist = Histogram::new();
    let mut service = Histogram::new();
    let mut stop_rx = shared.stop.subscribe();
    let ack_every = spec.ack_every.max(1);
    let multiple = ack_every > 1;
    let mut last_tag = 0u64;
    let mut unacked = 0u32;
    // Content of the message being received: bytes left, and whether the next body
    // frame is its first.
    let mut remaining = 0u64;
    let mut first_body = false;
    loop {
        let now_ns = if stamps > 0 {
            ns(shared.base.elapsed())
        } else {
            0
        };
        let mut pos = 0usize;
        let mut delivered = 0u64;
        while let Some((f, n)) = proto::next_frame(&rbuf[pos..], frame_max)? {
            pos += n;
            let mut complete = false;
            match f.kind {
                proto::FRAME_METHOD => match f.method_ids() {
                    Some((proto::BASIC, proto::BASIC_DELIVER)) => {
                        last_tag = proto::deliver_tag(f.payload)?;
                    }
                    Some((proto::CONNECTION, proto::CONNECTION_CLOSE))
                    | Some((proto::CHANNEL, proto::CHANNEL_CLOSE)) => {
                        bail!("{}", describe_close(f.payload))
                    }
                    Some((proto::BASIC, proto::BASIC_CANCEL)) => {
                        bail!("broker cancelled the consumer (queue deleted?)")
                    }
                    _ => {}
                },
                proto::FRAME_HEADER => {
                    remaining = proto::header_body_size(f.payload)?;
                    first_body = true;
                    complete = remaining == 0;
                }
                proto::FRAME_BODY => {
                    if first_body && stamps > 0 && f.payload.len() >= 8 {
                        hist.record(now_ns.saturating_sub(be_u64(&f.payload[..8])));
                        if stamps > 1 && f.payload.len() >= 16 {
                            service.record(now_ns.saturating_sub(be_u64(&f.payload[8..16])));
                        }
                    }
                    first_body = false;
                    remaining = remaining.saturating_sub(f.payload.len() as u64);
                    complete = remaining == 0;
                }
                _ => {}
            }
            if complete {
                delivered += 1;
                if !spec.auto_ack {
                    unacked += 1;
                    if unacked >= ack_every {
                        proto::encode_ack(&mut wbuf, 1, last_tag, multiple);
                        unacked = 0;
                    }
                }
            }
        }
        rbuf.advance(pos);
        if !wbuf.is_empty() {
            stream
                .write_all(&wbuf)
                .await
                .map_err(|e| Error(format!("writing acks: {e}")))?;
            wbuf.clear();
        }
        if delivered > 0 {
            let before = shared.delivered.fetch_add(delivered, Ordering::Relaxed);
            if before < shared.expect_delivered && before + delivered >= shared.expect_delivered {
                shared
                    .deliver_done_ns
                    .store(shared.since_t0_ns(), Ordering::Relaxed);
            }
        }
        let need = proto::frame_need(&rbuf).max(64 * 1024);
        rbuf.reserve(need);
        tokio::select! {
            biased;
            _ = stop_rx.changed() => break,
            r = stream.read_buf(&mut rbuf) => {
                if r.map_err(|e| Error(format!("reading deliveries: {e}")))? == 0 {
                    bail!("broker closed the TCP connection");
                }
            }
        }
    }
    // Stop: ack what is left, close, and drop whatever is still in flight.
    if !spec.auto_ack && unacked > 0 {
        proto::encode_ack(&mut wbuf, 1, last_tag, true);
    }
    wbuf.extend_from_slice(&close_frame());
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(&wbuf).await?;
        loop {
            let mut pos = 0;
            while let Some((f, n)) = proto::next_frame(&rbuf[pos..], frame_max)? {
                pos += n;
                if f.method_ids() == Some((proto::CONNECTION, proto::CONNECTION_CLOSE_OK)) {
                    return Ok::<(), Error>(());
                }
            }
            rbuf.advance(pos);
            read_some(&mut stream, &mut rbuf).await?;
        }
    })
    .await;
    Ok((hist, service))
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Sample helper used by scenarios that measure outside the engine.
pub fn sample(w: Option<ProcWatch>) -> Option<ProcSample> {
    w.and_then(|w| w.sample())
}
