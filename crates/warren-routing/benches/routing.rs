//! Routing decisions per published message: `BindingTable::route` for each exchange type.
//!
//! Run with `cargo bench -p warren-routing --bench routing` (add `-- --quick` for a fast
//! pass). Throughput is in messages routed (one `route` call per iteration).

use std::hint::black_box;
use std::time::Duration;

use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warren_routing::{BindingTable, ExchangeKind};

fn no_args() -> FieldTable {
    FieldTable::default()
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Route once into a reused vector; returns how many destinations matched.
fn route_into(
    t: &BindingTable<u32>,
    key: &str,
    headers: Option<&FieldTable>,
    out: &mut Vec<u32>,
) -> usize {
    out.clear();
    t.route(black_box(key), black_box(headers), out);
    black_box(out.len())
}

fn direct(c: &mut Criterion) {
    let mut t = BindingTable::new(ExchangeKind::Direct);
    for i in 0..10_000u32 {
        t.bind(i, &format!("queue.{i}"), &no_args()).unwrap();
    }
    let mut group = c.benchmark_group("direct_10k");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    for (label, key, expected) in [("hit", "queue.4242", 1), ("miss", "queue.none", 0)] {
        assert_eq!(route_into(&t, key, None, &mut out), expected, "{key}");
        group.bench_function(label, |b| b.iter(|| route_into(&t, key, None, &mut out)));
    }
    group.finish();
}

/// `n` topic bindings: a quarter each of `pN.*.c`, `#.xN`, `stock.sN.#` and exact
/// `stock.sN.nyse`, plus one each of the literal `a.*.c`, `#.x` and `stock.#`.
fn topic_table(n: u32) -> BindingTable<u32> {
    let mut t = BindingTable::new(ExchangeKind::Topic);
    for i in 0..n {
        let pattern = match i % 4 {
            0 => format!("p{i}.*.c"),
            1 => format!("#.x{i}"),
            2 => format!("stock.s{i}.#"),
            _ => format!("stock.s{i}.nyse"),
        };
        t.bind(i, &pattern, &no_args()).unwrap();
    }
    for (j, pattern) in ["a.*.c", "#.x", "stock.#"].into_iter().enumerate() {
        t.bind(n + j as u32, pattern, &no_args()).unwrap();
    }
    t
}

fn topic(c: &mut Criterion) {
    for n in [1_000u32, 10_000] {
        let t = topic_table(n);
        let mut group = c.benchmark_group(format!("topic_{}k", n / 1000));
        group.throughput(Throughput::Elements(1));
        let mut out = Vec::new();
        for (key, expected) in [
            ("stock.s42.nyse", 2),  // stock.s42.#, stock.#
            ("stock.s43.nyse", 2),  // exact stock.s43.nyse, stock.#
            ("a.b.c", 1),           // a.*.c
            ("orders.eu.x", 1),     // #.x
            ("orders.eu.x41", 1),   // #.x41
            ("no.match.here", 0),   // nothing
            ("q.r.s.t.u.v.w.x", 1), // a long key through the leading `#` patterns
        ] {
            assert_eq!(route_into(&t, key, None, &mut out), expected, "{key}");
            group.bench_with_input(BenchmarkId::from_parameter(key), key, |b, key| {
                b.iter(|| route_into(&t, key, None, &mut out))
            });
        }
        group.finish();
    }
}

fn fanout(c: &mut Criterion) {
    let mut t = BindingTable::new(ExchangeKind::Fanout);
    for i in 0..100u32 {
        t.bind(i, "", &no_args()).unwrap();
    }
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    assert_eq!(route_into(&t, "", None, &mut out), 100);
    group.bench_function("100_destinations", |b| {
        b.iter(|| route_into(&t, "anything", None, &mut out))
    });
    group.finish();
}

/// 100 bindings: binding `i` asks for `region = r{i % 10}` and `kind = k{i}`.
fn headers_table(x_match: &str) -> BindingTable<u32> {
    let mut t = BindingTable::new(ExchangeKind::Headers);
    for i in 0..100u32 {
        let args = table(&[
            ("x-match", text(x_match)),
            ("region", text(&format!("r{}", i % 10))),
            ("kind", text(&format!("k{i}"))),
        ]);
        t.bind(i, "", &args).unwrap();
    }
    t
}

fn headers(c: &mut Criterion) {
    let message = table(&[
        ("region", text("r3")),
        ("kind", text("k13")),
        ("trace-id", text("6b1f0c2e-9d4a-4f7e-a1b2-3c4d5e6f7a8b")),
        ("retries", AMQPValue::LongInt(0)),
    ]);
    let mut group = c.benchmark_group("headers_100");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    // all: only binding 13 has both; any: the ten bindings of region r3 (13 is among them).
    for (x_match, expected) in [("all", 1), ("any", 10)] {
        let t = headers_table(x_match);
        assert_eq!(
            route_into(&t, "", Some(&message), &mut out),
            expected,
            "{x_match}"
        );
        group.bench_function(x_match, |b| {
            b.iter(|| route_into(&t, "", Some(&message), &mut out))
        });
    }
    group.finish();
}

/// Plots are off (they triple the run time); `-- --plotting-backend plotters` brings them back.
fn config() -> Criterion {
    Criterion::default()
        .without_plots()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = direct, topic, fanout, headers
}
criterion_main!(benches);
