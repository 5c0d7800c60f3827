//! The storage thread when the engine fails: a failed batch answers its
//! barriers `false` (nacks exactly the confirms it covers), its writes are
//! retried ahead of later ones, and the store works again once the engine does.

use std::sync::mpsc;
use std::time::Duration;

use warren_store::fault_engine::{Fault, FaultControl, FaultKv};
use warren_store::{open, EngineKind, Op, Recovery, Store};

fn put(store: &Store, key: &str, value: &str) {
    store.submit(Op::PutMeta {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    });
}

fn del(store: &Store, key: &str) {
    store.submit(Op::DelMeta {
        key: key.as_bytes().to_vec(),
    });
}

/// Wait for a barrier's answer.
fn barrier(store: &Store) -> bool {
    let (tx, rx) = mpsc::channel();
    store.barrier(move |ok| {
        let _ = tx.send(ok);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the barrier is answered")
}

fn meta_after_reopen(dir: &std::path::Path, kind: EngineKind) -> Vec<(String, String)> {
    let r = Recovery::open(open(kind, dir).expect("reopen")).expect("recover");
    r.recovered
        .meta
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

fn start(dir: &std::path::Path, kind: EngineKind, control: &FaultControl) -> Store {
    let kv = FaultKv::new(open(kind, dir).expect("open"), control.clone());
    Store::open(Box::new(kv)).expect("start the store").0
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_failed_write_is_not_permanent_and_is_retried() {
    for kind in [EngineKind::Redb, EngineKind::Sled] {
        for fault in [Fault::NoSpace, Fault::Io, Fault::Ambiguous] {
            let dir = tempfile::tempdir().expect("tempdir");
            let control = FaultControl::new();
            {
                let store = start(dir.path(), kind, &control);
                put(&store, "kept", "1");
                put(&store, "acked", "1");
                assert!(barrier(&store));
                assert!(!store.is_failing());

                control.fail(fault);
                // An ack (delete) and a publish (put) while the disk fails:
                // the barrier covering them says they are not on disk.
                del(&store, "acked");
                put(&store, "nacked", "1");
                assert!(
                    !barrier(&store),
                    "{kind:?} {fault:?}: a failed batch is not confirmed"
                );
                assert!(store.is_failing());

                control.heal();
                put(&store, "after", "1");
                assert!(
                    barrier(&store),
                    "{kind:?} {fault:?}: once the engine works again, so does the store"
                );
                assert!(!store.is_failing());
                store.close();
            }
            // The delete of the failed batch was retried, not lost; the put
            // nacked then is written too (at-least-once).
            assert_eq!(
                meta_after_reopen(dir.path(), kind),
                pairs(&[("after", "1"), ("kept", "1"), ("nacked", "1")]),
                "{kind:?} {fault:?}"
            );
        }
    }
}

#[test]
fn failed_writes_are_retried_without_new_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = FaultControl::new();
    let store = start(dir.path(), EngineKind::Redb, &control);
    let (tx, rx) = mpsc::channel();
    store.set_health_listener(Box::new(move |failing| {
        let _ = tx.send(failing);
    }));
    control.fail(Fault::NoSpace);
    del(&store, "x");
    assert!(!barrier(&store));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
    control.heal();
    // Nobody writes: the storage thread retries by itself and reports health.
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(false));
    assert!(!store.is_failing());
    store.close();
}

#[test]
fn barriers_answer_only_for_the_batch_they_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = FaultControl::new();
    let store = start(dir.path(), EngineKind::Redb, &control);
    control.fail_once(Fault::Io);
    put(&store, "a", "1");
    let first = barrier(&store);
    put(&store, "b", "1");
    let second = barrier(&store);
    assert_eq!((first, second), (false, true));
    store.close();
    drop(store);
    assert_eq!(
        meta_after_reopen(dir.path(), EngineKind::Redb),
        pairs(&[("a", "1"), ("b", "1")])
    );
}

#[test]
fn a_slow_engine_still_answers_every_barrier_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let control = FaultControl::new();
    control.set_delay(Duration::from_millis(20));
    let store = start(dir.path(), EngineKind::Redb, &control);
    let (tx, rx) = mpsc::channel();
    for i in 0..20 {
        put(&store, &format!("k{i:02}"), "v");
        let tx = tx.clone();
        store.barrier(move |ok| {
            let _ = tx.send((i, ok));
        });
    }
    let got: Vec<(i32, bool)> = (0..20)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("answered"))
        .collect();
    assert_eq!(got, (0..20).map(|i| (i, true)).collect::<Vec<_>>());
    // Group commit: far fewer engine writes than barriers.
    assert!(control.applied() < 20, "{} applies", control.applied());
    store.close();
}
