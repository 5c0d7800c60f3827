//! Group-commit throughput of the storage thread, per engine (redb, sled).
//!
//! Each iteration submits N `Op::PutMessage` and then one `barrier`, and waits for the
//! barrier's callback: the messages are on disk (one fsync per group commit). The storage
//! thread starts committing as soon as the first op arrives, so N ops may end up in more
//! than one commit; "batch N" is the number of messages per barrier, as a publisher that
//! confirms every N messages would produce. Sequence numbers wrap at `WINDOW`, so the store
//! stays small (later iterations overwrite earlier records) and the numbers do not drift
//! as the file grows.
//!
//! `churn` is the steady state of a queue whose consumer keeps up: each iteration puts N
//! messages and deletes the N put by the previous iteration, then waits for one barrier.
//!
//! Run with `cargo bench -p warren-store --bench store` (add `-- --quick` for a fast pass).
//! The stores live in a temporary directory (`TMPDIR`, else `/tmp`): point `TMPDIR` at the
//! disk the broker's data directory will be on for numbers that mean something.
//! Throughput is in messages per second.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use warren_store::committer::Persistable;
use warren_store::{layout, EngineKind, Op, Store};

/// Records per queue before sequence numbers wrap around.
const WINDOW: u64 = 10_000;
const QUEUE: u64 = 1;

/// A message as the broker hands it to the store (encoded on the storage thread).
struct Record {
    header: Vec<u8>,
    body: Vec<u8>,
}

impl Record {
    fn new(body_len: usize) -> Arc<Record> {
        // class 60, weight 0, body size, flags = delivery-mode, delivery-mode 2.
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&(body_len as u64).to_be_bytes());
        header.extend_from_slice(&[0x10, 0x00, 2]);
        Arc::new(Record {
            header,
            body: vec![0x5a; body_len],
        })
    }
}

impl Persistable for Record {
    fn encode(&self, out: &mut Vec<u8>) {
        layout::encode_record(out, "amq.direct", "bench", &[], &self.header, &self.body);
    }
}

/// A started store in a fresh temporary directory (dropped after the store).
struct Bench {
    store: Store,
    _dir: tempfile::TempDir,
    next_seq: u64,
}

impl Bench {
    fn open(kind: EngineKind) -> Bench {
        let dir = tempfile::Builder::new()
            .prefix("warren-store-bench")
            .tempdir()
            .expect("temporary directory");
        let kv = warren_store::open(kind, dir.path()).expect("open engine");
        let (store, _) = Store::open(kv).expect("start store");
        Bench {
            store,
            _dir: dir,
            next_seq: 0,
        }
    }

    /// Wait until everything submitted so far is on disk.
    fn barrier(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        self.store.barrier(move |ok| {
            let _ = tx.send(ok);
        });
        assert!(rx.recv().expect("barrier callback"), "group commit failed");
    }

    /// Submit `n` puts; returns the first sequence number used.
    fn put(&mut self, n: u64, record: &Arc<Record>) -> u64 {
        let first = self.next_seq;
        for _ in 0..n {
            let message: Arc<dyn Persistable> = record.clone();
            self.store.submit(Op::PutMessage {
                queue: QUEUE,
                seq: self.next_seq % WINDOW,
                message,
            });
            self.next_seq += 1;
        }
        first
    }

    fn delete(&self, first: u64, n: u64) {
        for seq in first..first + n {
            self.store.submit(Op::DelMessage {
                queue: QUEUE,
                seq: seq % WINDOW,
            });
        }
    }
}

const ENGINES: [EngineKind; 2] = [EngineKind::Redb, EngineKind::Sled];
const SIZES: [(&str, usize); 2] = [("16B", 16), ("1KiB", 1024)];
const BATCHES: [u64; 3] = [1, 100, 1000];

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
}

fn group_commit(c: &mut Criterion) {
    for kind in ENGINES {
        let mut group = c.benchmark_group(format!("group_commit/{}", kind.as_str()));
        configure(&mut group);
        for (label, len) in SIZES {
            let record = Record::new(len);
            let mut bench = Bench::open(kind);
            for n in BATCHES {
                group.throughput(Throughput::Elements(n));
                group.bench_function(format!("{label}/batch{n}"), |b| {
                    b.iter(|| {
                        bench.put(n, &record);
                        bench.barrier();
                    })
                });
            }
        }
        group.finish();
    }
}

fn churn(c: &mut Criterion) {
    for kind in ENGINES {
        let mut group = c.benchmark_group(format!("churn/{}", kind.as_str()));
        configure(&mut group);
        let record = Record::new(1024);
        for n in [1u64, 100] {
            let mut bench = Bench::open(kind);
            let mut previous: Option<u64> = None;
            group.throughput(Throughput::Elements(n));
            group.bench_function(format!("1KiB/batch{n}"), |b| {
                b.iter(|| {
                    let first = bench.put(n, &record);
                    if let Some(prev) = previous.replace(first) {
                        bench.delete(prev, n);
                    }
                    bench.barrier();
                })
            });
        }
        group.finish();
    }
}

/// Plots are off (they triple the run time); `-- --plotting-backend plotters` brings them back.
fn config() -> Criterion {
    Criterion::default().without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = group_commit, churn
}
criterion_main!(benches);
