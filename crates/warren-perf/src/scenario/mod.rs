//! The scenarios. Each returns the process exit code after printing its RESULT line.

mod connections;
mod startup;

pub use connections::connections;
pub use startup::startup;

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::cli::{
    BacklogArgs, FanoutArgs, Global, LatencyArgs, MsgArgs, RunLength, ThroughputArgs,
};
use crate::client::{parse_args_table, Conn, ConnOpts};
use crate::engine::{self, ConsumerSpec, Outcome, Plan, ProducerSpec, Stamp};
use crate::report::{self, round};
use crate::sys::ProcWatch;
use crate::url::AmqpUrl;
use crate::{Error, Result};

/// What every scenario gets.
pub struct Ctx {
    pub url: AmqpUrl,
    pub global: Global,
    pub broker: Option<ProcWatch>,
}

impl Ctx {
    fn stall_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.global.stall_timeout.max(0.1))
    }

    /// The common head of every result line.
    fn head(&self, scenario: &str, params: Value, server: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("scenario".into(), json!(scenario));
        m.insert("url".into(), json!(self.url.redacted()));
        m.insert("server".into(), json!(server));
        m.insert("params".into(), params);
        m.insert(
            "global".into(),
            serde_json::to_value(&self.global).unwrap_or(Value::Null),
        );
        m
    }
}

/// Share of `total` that part `i` of `parts` takes.
pub fn share(total: u64, parts: usize, i: usize) -> u64 {
    let parts = parts.max(1) as u64;
    total / parts + u64::from((i as u64) < total % parts)
}

/// Indexes of `n` items handled by worker `i` of `workers`: every item gets at least
/// one worker; with more workers than items they share items round-robin.
pub fn assign(n: usize, workers: usize, i: usize) -> Vec<usize> {
    if workers >= n {
        vec![i % n.max(1)]
    } else {
        (0..n).filter(|k| k % workers == i).collect()
    }
}

fn queue_names(prefix: &Option<String>, n: usize) -> Vec<String> {
    let prefix = prefix
        .clone()
        .unwrap_or_else(|| format!("perf-q-{}", std::process::id()));
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Delete (to clear leftovers) and declare the queues, and the fanout exchange
/// with its bindings when given.
async fn setup(
    ctx: &Ctx,
    queues: &[String],
    msg: &MsgArgs,
    fanout: Option<&str>,
) -> Result<String> {
    let args = parse_args_table(&msg.queue_args)?;
    parse_args_table(&msg.consumer_args)?;
    let mut c = Conn::open(
        &ctx.url,
        &ConnOpts {
            name: "warren-perf setup".into(),
            ..Default::default()
        },
    )
    .await?;
    c.channel_open(1).await?;
    let mut ch = 1u16;
    for q in queues {
        // A leftover queue with other properties would refuse the declare.
        if c.queue_delete(ch, q).await.is_err() {
            ch += 1;
            c.channel_open(ch).await?;
        }
        c.queue_declare(ch, q, msg.persistent, false, args.clone())
            .await?;
    }
    if let Some(ex) = fanout {
        c.exchange_declare(ch, ex, "fanout", msg.persistent).await?;
        for q in queues {
            c.queue_bind(ch, q, ex, "").await?;
        }
    }
    let server = c.server.clone();
    c.close().await;
    Ok(server)
}

/// Sum of the queues' message counts (passive declares).
async fn queue_depth(ctx: &Ctx, queues: &[String]) -> Result<u64> {
    let mut c = Conn::open(&ctx.url, &ConnOpts::default()).await?;
    c.channel_open(1).await?;
    let mut total = 0u64;
    for q in queues {
        total += c
            .queue_declare(1, q, false, true, Default::default())
            .await? as u64;
    }
    c.close().await;
    Ok(total)
}

async fn teardown(ctx: &Ctx, queues: &[String], exchange: Option<&str>) {
    let r = async {
        let mut c = Conn::open(&ctx.url, &ConnOpts::default()).await?;
        c.channel_open(1).await?;
        for q in queues {
            c.queue_delete(1, q).await?;
        }
        if let Some(ex) = exchange {
            c.exchange_delete(1, ex).await?;
        }
        c.close().await;
        Ok::<(), Error>(())
    }
    .await;
    if let Err(e) = r {
        eprintln!("warren-perf: warning: cleaning up: {e}");
    }
}

fn check_msg(msg: &mut MsgArgs) {
    if !msg.auto_ack && msg.prefetch > 0 && msg.ack_every > msg.prefetch as u32 {
        eprintln!(
            "warren-perf: --ack-every {} > --prefetch {}: acking every {} instead",
            msg.ack_every, msg.prefetch, msg.prefetch
        );
        msg.ack_every = msg.prefetch as u32;
    }
    msg.ack_every = msg.ack_every.max(1);
}

fn consumer_spec(msg: &MsgArgs, queues: Vec<String>) -> ConsumerSpec {
    ConsumerSpec {
        queues,
        prefetch: msg.prefetch,
        ack_every: msg.ack_every,
        auto_ack: msg.auto_ack,
        // Checked when the run starts (parse_args_table on the queue args).
        arguments: parse_args_table(&msg.consumer_args).unwrap_or_default(),
    }
}

/// Duration and count of a run: count mode when only --count is given.
fn run_length(len: &RunLength) -> (Option<Duration>, Option<u64>) {
    match (len.duration, len.count) {
        (None, None) => (Some(Duration::from_secs(10)), None),
        (d, c) => (d.map(|d| Duration::from_secs_f64(d.max(0.0))), c),
    }
}

fn fail_early(ctx: &Ctx, scenario: &str, params: Value, e: Error) -> i32 {
    report::emit(ctx.head(scenario, params, ""), &[e.to_string()], false)
}

/// Messages that CPU is divided by: each message once (the larger of published
/// and delivered, so a fanout counts every delivery and a publish-only run every
/// publish).
fn basis(o: &Outcome) -> u64 {
    o.delivered.max(o.published)
}

#[allow(clippy::too_many_arguments)]
fn message_plan(
    ctx: &Ctx,
    label: &str,
    msg: &MsgArgs,
    producers: Vec<ProducerSpec>,
    consumers: Vec<ConsumerSpec>,
    stamp: Stamp,
    expect_delivered: Option<u64>,
    duration: Option<Duration>,
    fanout: u64,
) -> Plan {
    Plan {
        label: label.to_owned(),
        url: ctx.url.clone(),
        producers,
        consumers,
        body_size: msg.size,
        persistent: msg.persistent,
        stamp: if msg.size >= 8 { stamp } else { Stamp::None },
        expect_delivered,
        duration,
        stall_timeout: ctx.stall_timeout(),
        broker: ctx.broker,
        progress: !ctx.global.quiet,
        fanout,
    }
}

pub async fn throughput(ctx: &Ctx, mut a: ThroughputArgs) -> i32 {
    check_msg(&mut a.msg);
    let params = serde_json::to_value(&a).unwrap_or(Value::Null);
    if a.producers == 0 && a.consumers == 0 {
        return fail_early(
            ctx,
            "throughput",
            params,
            "need at least one producer or consumer".into(),
        );
    }
    let queues = queue_names(&a.msg.queue_prefix, a.queues.max(1));
    let (duration, count) = run_length(&a.len);
    if a.producers == 0 && duration.is_none() {
        return fail_early(ctx, "throughput", params, "--count needs producers".into());
    }
    let server = match setup(ctx, &queues, &a.msg, None).await {
        Ok(s) => s,
        Err(e) => return fail_early(ctx, "throughput", params, e),
    };
    let producers = (0..a.producers)
        .map(|i| ProducerSpec {
            targets: assign(queues.len(), a.producers, i)
                .into_iter()
                .map(|k| (String::new(), queues[k].clone()))
                .collect(),
            count: count.map(|c| share(c, a.producers, i)),
            rate: a.rate.map(|r| r / a.producers as f64),
            confirm_window: a.msg.confirm.unwrap_or(0),
        })
        .collect();
    let consumers = (0..a.consumers)
        .map(|j| {
            consumer_spec(
                &a.msg,
                assign(queues.len(), a.consumers, j)
                    .into_iter()
                    .map(|k| queues[k].clone())
                    .collect(),
            )
        })
        .collect();
    let expect = if a.consumers > 0 { count } else { None };
    let plan = message_plan(
        ctx,
        "throughput",
        &a.msg,
        producers,
        consumers,
        Stamp::Actual,
        expect,
        duration,
        1,
    );
    let o = engine::run(plan).await;
    if !a.msg.keep_queues {
        teardown(ctx, &queues, None).await;
    }
    let mut m = ctx.head(
        "throughput",
        params,
        if o.server.is_empty() {
            &server
        } else {
            &o.server
        },
    );
    m.extend(report::outcome_json(&o));
    m.insert("latency_us".into(), report::latency_json(&o.latency));
    m.extend(report::cpu_json(&o, basis(&o), ctx.global.broker_pid));
    report::emit(m, &o.errors, o.stalled)
}

pub async fn fanout(ctx: &Ctx, mut a: FanoutArgs) -> i32 {
    check_msg(&mut a.msg);
    let params = serde_json::to_value(&a).unwrap_or(Value::Null);
    let n = a.queues.max(1);
    let queues = queue_names(&a.msg.queue_prefix, n);
    let exchange = a
        .exchange
        .clone()
        .unwrap_or_else(|| format!("perf-fanout-{}", std::process::id()));
    let (duration, count) = run_length(&a.len);
    let server = match setup(ctx, &queues, &a.msg, Some(&exchange)).await {
        Ok(s) => s,
        Err(e) => return fail_early(ctx, "fanout", params, e),
    };
    let producers = (0..a.producers.max(1))
        .map(|i| ProducerSpec {
            targets: vec![(exchange.clone(), String::new())],
            count: count.map(|c| share(c, a.producers.max(1), i)),
            rate: a.rate.map(|r| r / a.producers.max(1) as f64),
            confirm_window: a.msg.confirm.unwrap_or(0),
        })
        .collect();
    let consumers = queues
        .iter()
        .map(|q| consumer_spec(&a.msg, vec![q.clone()]))
        .collect();
    let expect = count.map(|c| c * n as u64);
    let plan = message_plan(
        ctx,
        "fanout",
        &a.msg,
        producers,
        consumers,
        Stamp::Actual,
        expect,
        duration,
        n as u64,
    );
    let o = engine::run(plan).await;
    if !a.msg.keep_queues {
        teardown(ctx, &queues, Some(&exchange)).await;
    }
    let mut m = ctx.head(
        "fanout",
        params,
        if o.server.is_empty() {
            &server
        } else {
            &o.server
        },
    );
    m.extend(report::outcome_json(&o));
    m.insert("fanout_queues".into(), json!(n));
    m.insert("latency_us".into(), report::latency_json(&o.latency));
    m.extend(report::cpu_json(&o, basis(&o), ctx.global.broker_pid));
    report::emit(m, &o.errors, o.stalled)
}

pub async fn latency(ctx: &Ctx, mut a: LatencyArgs) -> i32 {
    check_msg(&mut a.msg);
    if a.msg.size < 8 {
        eprintln!("warren-perf: latency needs bodies of at least 8 bytes; using 8");
        a.msg.size = 8;
    }
    let params = serde_json::to_value(&a).unwrap_or(Value::Null);
    if a.rate <= 0.0 || a.producers == 0 || a.consumers == 0 {
        return fail_early(
            ctx,
            "latency",
            params,
            "need --rate > 0, producers and consumers".into(),
        );
    }
    let queues = queue_names(&a.msg.queue_prefix, a.queues.max(1));
    let (duration, count) = run_length(&a.len);
    let server = match setup(ctx, &queues, &a.msg, None).await {
        Ok(s) => s,
        Err(e) => return fail_early(ctx, "latency", params, e),
    };
    let producers = (0..a.producers)
        .map(|i| ProducerSpec {
            targets: assign(queues.len(), a.producers, i)
                .into_iter()
                .map(|k| (String::new(), queues[k].clone()))
                .collect(),
            count: count.map(|c| share(c, a.producers, i)),
            rate: Some(a.rate / a.producers as f64),
            confirm_window: a.msg.confirm.unwrap_or(0),
        })
        .collect();
    let consumers = (0..a.consumers)
        .map(|j| {
            consumer_spec(
                &a.msg,
                assign(queues.len(), a.consumers, j)
                    .into_iter()
                    .map(|k| queues[k].clone())
                    .collect(),
            )
        })
        .collect();
    let plan = message_plan(
        ctx,
        "latency",
        &a.msg,
        producers,
        consumers,
        Stamp::Scheduled,
        count,
        duration,
        1,
    );
    let o = engine::run(plan).await;
    if !a.msg.keep_queues {
        teardown(ctx, &queues, None).await;
    }
    let mut m = ctx.head(
        "latency",
        params,
        if o.server.is_empty() {
            &server
        } else {
            &o.server
        },
    );
    m.extend(report::outcome_json(&o));
    m.insert("target_rate".into(), json!(a.rate));
    m.insert(
        "undelivered".into(),
        json!(o.published.saturating_sub(o.delivered)),
    );
    m.insert(
        "max_send_lag_ms".into(),
        json!(round(o.max_send_lag.as_secs_f64() * 1000.0, 3)),
    );
    m.insert("latency_us".into(), report::latency_json(&o.latency));
    m.insert("latency_from".into(), json!("scheduled send time"));
    m.insert(
        "service_latency_us".into(),
        report::latency_json(&o.service_latency),
    );
    m.extend(report::cpu_json(&o, basis(&o), ctx.global.broker_pid));
    report::emit(m, &o.errors, o.stalled)
}

pub async fn backlog(ctx: &Ctx, mut a: BacklogArgs) -> i32 {
    check_msg(&mut a.msg);
    if a.msg.confirm.unwrap_or(0) == 0 {
        a.msg.confirm = Some(1000);
    }
    let params = serde_json::to_value(&a).unwrap_or(Value::Null);
    if a.producers == 0 || a.consumers == 0 || a.count == 0 {
        return fail_early(
            ctx,
            "backlog",
            params,
            "need --count > 0, producers and consumers".into(),
        );
    }
    let queues = queue_names(&a.msg.queue_prefix, a.queues.max(1));
    let server = match setup(ctx, &queues, &a.msg, None).await {
        Ok(s) => s,
        Err(e) => return fail_early(ctx, "backlog", params, e),
    };
    // Phase 1: publish with confirms, nobody consuming.
    let producers = (0..a.producers)
        .map(|i| ProducerSpec {
            targets: assign(queues.len(), a.producers, i)
                .into_iter()
                .map(|k| (String::new(), queues[k].clone()))
                .collect(),
            count: Some(share(a.count, a.producers, i)),
            rate: None,
            confirm_window: a.msg.confirm.unwrap_or(1000),
        })
        .collect();
    let plan = message_plan(
        ctx,
        "backlog publish",
        &a.msg,
        producers,
        Vec::new(),
        Stamp::None,
        None,
        None,
        1,
    );
    let p = engine::run(plan).await;
    let mut errors: Vec<String> = p
        .errors
        .iter()
        .map(|e| format!("publish phase: {e}"))
        .collect();
    let depth = if errors.is_empty() && !p.stalled {
        match queue_depth(ctx, &queues).await {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(format!("counting the backlog: {e}"));
                None
            }
        }
    } else {
        None
    };
    if let Some(d) = depth {
        if !ctx.global.quiet {
            eprintln!("[backlog] {d} messages queued; draining");
        }
    }
    // Phase 2: drain.
    let d = if errors.is_empty() && !p.stalled {
        let consumers = (0..a.consumers)
            .map(|j| {
                consumer_spec(
                    &a.msg,
                    assign(queues.len(), a.consumers, j)
                        .into_iter()
                        .map(|k| queues[k].clone())
                        .collect(),
                )
            })
            .collect();
        // A stream replay reads everything published (RabbitMQ's message
        // count for a stream lags behind, so it cannot say how many).
        let replay = a
            .msg
            .consumer_args
            .iter()
            .any(|arg| arg.starts_with("x-stream-offset="));
        let expect = if replay {
            a.count
        } else {
            depth.unwrap_or(a.count)
        }
        .max(1);
        let plan = message_plan(
            ctx,
            "backlog drain",
            &a.msg,
            Vec::new(),
            consumers,
            Stamp::None,
            Some(expect),
            None,
            1,
        );
        let d = engine::run(plan).await;
        errors.extend(d.errors.iter().map(|e| format!("drain phase: {e}")));
        Some(d)
    } else {
        None
    };
    if !a.msg.keep_queues {
        teardown(ctx, &queues, None).await;
    }
    let mut m = ctx.head(
        "backlog",
        params,
        if p.server.is_empty() {
            &server
        } else {
            &p.server
        },
    );
    m.insert("published".into(), json!(p.published));
    m.insert("confirmed".into(), json!(p.confirmed));
    m.insert("nacked".into(), json!(p.nacked));
    m.insert(
        "publish_s".into(),
        json!(round(p.publish_done.unwrap_or(p.elapsed).as_secs_f64(), 3)),
    );
    m.insert("publish_rate".into(), json!(round(p.publish_rate(), 1)));
    m.insert("queued_before_drain".into(), json!(depth));
    let mut phases = Map::new();
    let mut pm = report::outcome_json(&p);
    pm.extend(report::cpu_json(&p, p.published, ctx.global.broker_pid));
    phases.insert("publish".into(), Value::Object(pm));
    let mut stalled = p.stalled;
    if let Some(d) = &d {
        m.insert("drained".into(), json!(d.delivered));
        m.insert(
            "drain_s".into(),
            json!(round(d.deliver_done.unwrap_or(d.elapsed).as_secs_f64(), 3)),
        );
        m.insert("drain_rate".into(), json!(round(d.deliver_rate(), 1)));
        let mut dm = report::outcome_json(d);
        dm.extend(report::cpu_json(d, d.delivered, ctx.global.broker_pid));
        phases.insert("drain".into(), Value::Object(dm));
        stalled |= d.stalled;
    }
    m.insert(
        "publish_client_cpu_us_per_msg".into(),
        report::per_msg_us(p.client_cpu, p.published),
    );
    m.insert(
        "publish_broker_cpu_us_per_msg".into(),
        p.broker
            .map(|b| report::per_msg_us(b.cpu, p.published))
            .unwrap_or(Value::Null),
    );
    if let Some(d) = &d {
        m.insert(
            "drain_client_cpu_us_per_msg".into(),
            report::per_msg_us(d.client_cpu, d.delivered),
        );
        m.insert(
            "drain_broker_cpu_us_per_msg".into(),
            d.broker
                .map(|b| report::per_msg_us(b.cpu, d.delivered))
                .unwrap_or(Value::Null),
        );
    }
    m.insert("phases".into(), Value::Object(phases));
    m.insert("stalled".into(), json!(stalled));
    report::emit(m, &errors, stalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let parts: Vec<u64> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(parts, vec![4, 3, 3]);
        assert_eq!(share(5, 0, 0), 5);
    }

    #[test]
    fn every_queue_gets_a_worker() {
        // fewer workers than queues: each queue exactly once
        let mut all: Vec<usize> = (0..3).flat_map(|i| assign(7, 3, i)).collect();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        // more workers than queues: round-robin
        assert_eq!(
            (0..5).map(|i| assign(2, 5, i)).collect::<Vec<_>>(),
            vec![vec![0], vec![1], vec![0], vec![1], vec![0]]
        );
    }

    #[test]
    fn run_length_defaults() {
        let l = |d, c| {
            run_length(&RunLength {
                duration: d,
                count: c,
            })
        };
        assert_eq!(l(None, None), (Some(Duration::from_secs(10)), None));
        assert_eq!(l(None, Some(5)), (None, Some(5)));
        assert_eq!(
            l(Some(2.0), Some(5)),
            (Some(Duration::from_secs(2)), Some(5))
        );
    }
}
