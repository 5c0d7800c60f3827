//! The `RESULT {json}` line and the figures in it.

use serde_json::{json, Map, Value};

use crate::engine::Outcome;
use crate::hist::Histogram;

/// Round to `d` decimals (for readable JSON).
pub fn round(v: f64, d: i32) -> f64 {
    if !v.is_finite() {
        return 0.0;
    }
    let m = 10f64.powi(d);
    (v * m).round() / m
}

/// Latency percentiles in microseconds, from a histogram of nanoseconds.
pub fn latency_json(h: &Histogram) -> Value {
    if h.count() == 0 {
        return Value::Null;
    }
    let us = |ns: u64| round(ns as f64 / 1000.0, 1);
    json!({
        "count": h.count(),
        "min": us(h.min()),
        "mean": round(h.mean() / 1000.0, 1),
        "p50": us(h.percentile(50.0)),
        "p90": us(h.percentile(90.0)),
        "p99": us(h.percentile(99.0)),
        "p99_9": us(h.percentile(99.9)),
        "max": us(h.max()),
    })
}

/// µs of CPU per message.
pub fn per_msg_us(cpu: std::time::Duration, msgs: u64) -> Value {
    if msgs == 0 {
        Value::Null
    } else {
        json!(round(cpu.as_secs_f64() * 1e6 / msgs as f64, 3))
    }
}

/// The client and broker CPU/RSS figures of a run, per `basis` messages.
pub fn cpu_json(o: &Outcome, basis: u64, pid: Option<u32>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "client".into(),
        json!({
            "cpu_s": round(o.client_cpu.as_secs_f64(), 3),
            "user_s": round(o.client_user.as_secs_f64(), 3),
            "sys_s": round(o.client_cpu.saturating_sub(o.client_user).as_secs_f64(), 3),
            "cpu_us_per_msg": per_msg_us(o.client_cpu, basis),
            "user_us_per_msg": per_msg_us(o.client_user, basis),
            "cpu_pct": round(o.client_cpu.as_secs_f64() / o.elapsed.as_secs_f64().max(1e-9) * 100.0, 1),
            "peak_rss_kb": o.client_peak_rss_kb,
        }),
    );
    m.insert(
        "client_cpu_us_per_msg".into(),
        per_msg_us(o.client_cpu, basis),
    );
    match o.broker {
        Some(b) => {
            m.insert(
                "broker".into(),
                json!({
                    "pid": pid,
                    "cpu_s": round(b.cpu.as_secs_f64(), 3),
                    "user_s": round(b.user.as_secs_f64(), 3),
                    "sys_s": round(b.cpu.saturating_sub(b.user).as_secs_f64(), 3),
                    "cpu_us_per_msg": per_msg_us(b.cpu, basis),
                    "user_us_per_msg": per_msg_us(b.user, basis),
                    "cpu_pct": round(b.cpu.as_secs_f64() / o.elapsed.as_secs_f64().max(1e-9) * 100.0, 1),
                    "rss_start_kb": b.rss_start_kb,
                    "rss_end_kb": b.rss_end_kb,
                    "rss_peak_kb": b.rss_peak_kb,
                }),
            );
            m.insert("broker_cpu_us_per_msg".into(), per_msg_us(b.cpu, basis));
        }
        None => {
            m.insert("broker".into(), Value::Null);
            m.insert("broker_cpu_us_per_msg".into(), Value::Null);
        }
    }
    m.insert("cpu_per_msg_basis".into(), json!(basis));
    m
}

/// The standard figures of one engine run.
pub fn outcome_json(o: &Outcome) -> Map<String, Value> {
    let mut m = Map::new();
    let secs = |d: Option<std::time::Duration>| d.map(|d| round(d.as_secs_f64(), 3));
    m.insert("elapsed_s".into(), json!(round(o.elapsed.as_secs_f64(), 3)));
    m.insert("published".into(), json!(o.published));
    m.insert("publish_rate".into(), json!(round(o.publish_rate(), 1)));
    m.insert("confirmed".into(), json!(o.confirmed));
    m.insert("confirm_rate".into(), json!(round(o.confirm_rate(), 1)));
    m.insert("nacked".into(), json!(o.nacked));
    m.insert("returned".into(), json!(o.returned));
    m.insert("delivered".into(), json!(o.delivered));
    m.insert("deliver_rate".into(), json!(round(o.deliver_rate(), 1)));
    m.insert("publish_done_s".into(), json!(secs(o.publish_done)));
    m.insert("deliver_done_s".into(), json!(secs(o.deliver_done)));
    m.insert("blocked_events".into(), json!(o.blocked));
    m.insert("stalled".into(), json!(o.stalled));
    m
}

/// Print the result line; returns the process exit code (1 on errors or a stall).
pub fn emit(mut v: Map<String, Value>, errors: &[String], stalled: bool) -> i32 {
    let ok = errors.is_empty() && !stalled;
    v.insert("ok".into(), json!(ok));
    v.insert("errors".into(), json!(errors));
    println!("RESULT {}", Value::Object(v));
    for e in errors {
        eprintln!("warren-perf: error: {e}");
    }
    if stalled {
        eprintln!("warren-perf: the run stalled: no message moved for the whole --stall-timeout");
    }
    if ok {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_in_microseconds() {
        let mut h = Histogram::new();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(v);
        }
        let j = latency_json(&h);
        assert_eq!(j["count"], 4);
        assert_eq!(j["p50"], 2.0);
        assert_eq!(j["max"], 1000.0);
        assert!(latency_json(&Histogram::new()).is_null());
    }

    #[test]
    fn per_message_cpu() {
        let d = std::time::Duration::from_millis(500);
        assert_eq!(per_msg_us(d, 1_000_000), json!(0.5));
        assert!(per_msg_us(d, 0).is_null());
        assert_eq!(round(f64::NAN, 1), 0.0);
    }
}
