//! `connections`: N idle connections with one channel each; broker RSS per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{fail_early, Ctx};
use crate::cli::ConnectionsArgs;
use crate::client::{Conn, ConnOpts};
use crate::report::{self, round};
use crate::sys;

pub async fn connections(ctx: &Ctx, a: ConnectionsArgs) -> i32 {
    let params = serde_json::to_value(&a).unwrap_or(Value::Null);
    let limit = sys::raise_nofile_limit();
    if limit != 0 && (a.count as u64) + 64 > limit {
        return fail_early(
            ctx,
            "connections",
            params,
            format!(
                "{} connections need more file descriptors than this process may open ({limit}); raise `ulimit -n`",
                a.count
            )
            .into(),
        );
    }
    if ctx.broker.is_none() {
        eprintln!("warren-perf: without --broker-pid there is no RSS per connection to report");
    }
    let url = Arc::new(ctx.url.clone());
    let before = ctx.broker.and_then(|b| b.sample());
    let client0 = sys::self_usage();
    let t0 = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(a.count);
    let mut errors: Vec<String> = Vec::new();
    let mut set = JoinSet::new();
    let mut launched = 0usize;
    let mut last_print = Instant::now();
    let mut server = String::new();
    while conns.len() + errors.len() < a.count {
        while launched < a.count && set.len() < a.concurrency.max(1) && errors.is_empty() {
            let url = url.clone();
            let i = launched;
            set.spawn(async move {
                let opts = ConnOpts {
                    name: format!("warren-perf idle {i}"),
                    ..Default::default()
                };
                let mut c = Conn::open(&url, &opts).await?;
                c.channel_open(1).await?;
                c.shrink();
                Ok::<Conn, crate::Error>(c)
            });
            launched += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(c))) => {
                if server.is_empty() {
                    server = c.server.clone();
                }
                conns.push(c);
            }
            Some(Ok(Err(e))) => {
                errors.push(format!("connection {}: {e}", conns.len() + errors.len()))
            }
            Some(Err(e)) => errors.push(format!("connection task failed: {e}")),
            None => break,
        }
        if !ctx.global.quiet && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let rss = ctx
                .broker
                .and_then(|b| b.sample())
                .map(|s| format!("  broker rss {:.1} MiB", s.rss_kb as f64 / 1024.0))
                .unwrap_or_default();
            eprintln!(
                "[connections] {:6.1}s  open {}{rss}",
                t0.elapsed().as_secs_f64(),
                conns.len()
            );
        }
    }
    let open_s = t0.elapsed();
    let opened = conns.len() as u64;
    let client_open = sys::self_usage().cpu.saturating_sub(client0.cpu);
    let after_open = ctx.broker.and_then(|b| b.sample());
    if !ctx.global.quiet {
        eprintln!(
            "[connections] {opened} open in {:.2}s; holding {}s",
            open_s.as_secs_f64(),
            a.hold
        );
    }
    // Hold.
    let hold_end = Instant::now() + Duration::from_secs_f64(a.hold.max(0.0));
    let mut peak = after_open.map(|s| s.rss_kb).unwrap_or(0);
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_millis(250).min(hold_end - Instant::now())).await;
        if let Some(s) = ctx.broker.and_then(|b| b.sample()) {
            peak = peak.max(s.rss_kb);
        }
    }
    let held = ctx.broker.and_then(|b| b.sample());
    // Close.
    let t1 = Instant::now();
    let mut set = JoinSet::new();
    for c in conns {
        set.spawn(c.close());
    }
    while set.join_next().await.is_some() {}
    let close_s = t1.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = ctx.broker.and_then(|b| b.sample());

    let mut m = ctx.head("connections", params, &server);
    m.insert("opened".into(), json!(opened));
    m.insert("open_s".into(), json!(round(open_s.as_secs_f64(), 3)));
    m.insert(
        "open_rate".into(),
        json!(round(opened as f64 / open_s.as_secs_f64().max(1e-9), 1)),
    );
    m.insert("close_s".into(), json!(round(close_s.as_secs_f64(), 3)));
    m.insert(
        "client_cpu_us_per_conn".into(),
        report::per_msg_us(client_open, opened),
    );
    match (before, after_open, held) {
        (Some(b), Some(o), Some(h)) => {
            m.insert("broker_rss_before_kb".into(), json!(b.rss_kb));
            m.insert("broker_rss_open_kb".into(), json!(h.rss_kb));
            m.insert("broker_rss_peak_kb".into(), json!(peak.max(h.rss_kb)));
            m.insert(
                "broker_rss_after_close_kb".into(),
                json!(after_close.map(|s| s.rss_kb)),
            );
            let per = if opened > 0 {
                Some(round(
                    (h.rss_kb as f64 - b.rss_kb as f64) / opened as f64,
                    2,
                ))
            } else {
                None
            };
            m.insert("broker_rss_per_conn_kb".into(), json!(per));
            m.insert(
                "broker_cpu_us_per_conn_open".into(),
                report::per_msg_us(o.cpu.saturating_sub(b.cpu), opened),
            );
            m.insert(
                "broker_cpu_idle_hold_pct".into(),
                json!(round(
                    h.cpu.saturating_sub(o.cpu).as_secs_f64() / a.hold.max(1e-9) * 100.0,
                    2
                )),
            );
        }
        _ => {
            m.insert("broker_rss_per_conn_kb".into(), Value::Null);
        }
    }
    report::emit(m, &errors, false)
}
