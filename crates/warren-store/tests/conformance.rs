//! The same behaviour from every engine: atomic batches, prefix deletes,
//! ordered scans, recovery after reopening, and the group-commit store on top.

use std::sync::mpsc;
use std::sync::Arc;

use warren_store::committer::Persistable;
use warren_store::{open, EngineKind, Kv, KvOp, Op, Store};

struct Msg(&'static str);

impl Persistable for Msg {
    fn encode(&self, out: &mut Vec<u8>) {
        warren_store::layout::encode_record(out, "ex", "rk", &[], b"\x00\x3c", self.0.as_bytes());
    }
}

fn engines() -> Vec<EngineKind> {
    vec![EngineKind::Redb, EngineKind::Sled]
}

fn scan_all(kv: &dyn Kv, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v = Vec::new();
    kv.scan(prefix, &mut |k, val| {
        v.push((k.to_vec(), val.to_vec()));
        true
    })
    .unwrap();
    v
}

#[test]
fn kv_semantics_match_the_memory_model() {
    for kind in engines() {
        let dir = tempfile::tempdir().unwrap();
        let mut kv = open(kind, dir.path()).unwrap();
        let mut model = warren_store::memory_engine::MemoryKv::default();
        // `open` writes the format version into a new directory.
        model
            .apply(&[KvOp::Put(
                warren_store::layout::VERSION_KEY.to_vec(),
                warren_store::layout::VERSION.to_vec(),
            )])
            .unwrap();
        let batches = vec![
            vec![
                KvOp::Put(b"a1".to_vec(), b"x".to_vec()),
                KvOp::Put(b"a2".to_vec(), b"y".to_vec()),
                KvOp::Put(b"b1".to_vec(), b"z".to_vec()),
            ],
            vec![
                KvOp::Del(b"a1".to_vec()),
                KvOp::Put(b"a3".to_vec(), b"w".to_vec()),
            ],
            // A prefix delete also removes what the same batch put earlier.
            vec![
                KvOp::Put(b"c1".to_vec(), b"v".to_vec()),
                KvOp::DelPrefix(b"c".to_vec()),
            ],
            vec![
                KvOp::DelPrefix(b"a".to_vec()),
                KvOp::Put(b"a9".to_vec(), b"after".to_vec()),
            ],
        ];
        for b in &batches {
            kv.apply(b).unwrap();
            model.apply(b).unwrap();
            assert_eq!(
                scan_all(kv.as_ref(), b""),
                scan_all(&model, b""),
                "{}",
                kind.as_str()
            );
        }
        assert_eq!(
            scan_all(kv.as_ref(), b"a"),
            vec![(b"a9".to_vec(), b"after".to_vec())]
        );
        drop(kv);
        let kv = open(kind, dir.path()).unwrap();
        assert_eq!(
            scan_all(kv.as_ref(), b""),
            scan_all(&model, b""),
            "{} after reopen",
            kind.as_str()
        );
    }
}

#[test]
fn a_second_broker_on_the_same_directory_is_refused() {
    for kind in engines() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(kind, dir.path()).unwrap();
        let err = open(kind, dir.path()).err().expect("second open must fail");
        assert!(
            err.to_string().contains("used by another running broker"),
            "{err}"
        );
    }
}

#[test]
fn group_commit_store_recovers_what_was_written() {
    for kind in engines() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, recovered) = Store::open(open(kind, dir.path()).unwrap()).unwrap();
            assert!(recovered.queues_with_messages.is_empty() && recovered.meta.is_empty());
            store.submit(Op::PutMeta {
                key: b"q/a".to_vec(),
                value: b"{}".to_vec(),
            });
            for seq in 0..5 {
                store.submit(Op::PutMessage {
                    queue: 7,
                    seq,
                    message: Arc::new(Msg("hello")),
                });
            }
            store.submit(Op::DelMessage { queue: 7, seq: 1 });
            store.submit(Op::Delivered { queue: 7, upto: 2 });
            store.submit(Op::PutMessage {
                queue: 8,
                seq: 0,
                message: Arc::new(Msg("gone")),
            });
            store.submit(Op::DelQueue { queue: 8 });
            let (tx, rx) = mpsc::channel();
            store.barrier(move |ok| tx.send(ok).unwrap());
            assert!(rx.recv().unwrap());
            store.close();
        }
        let r = warren_store::Recovery::open(open(kind, dir.path()).unwrap()).unwrap();
        assert_eq!(r.recovered.meta, vec![(b"q/a".to_vec(), b"{}".to_vec())]);
        assert_eq!(r.recovered.queues_with_messages, vec![7]);
        assert_eq!(r.recovered.delivered.get(&7), Some(&2));
        let mut got = Vec::new();
        r.scan_queue(7, &mut |seq, rec| got.push((seq, rec)))
            .unwrap();
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![0, 2, 3, 4], "{}", kind.as_str());
        assert_eq!(&got[0].1.body[..], b"hello");
        // Paging reads go through the storage thread.
        let store = r.start().unwrap();
        let (tx, rx) = mpsc::channel();
        store.read(7, vec![3, 1], move |recs| tx.send(recs).unwrap());
        let recs = rx.recv().unwrap();
        assert_eq!(recs[0].0, 3);
        let warren_store::Fetched::Found(r) = &recs[0].1 else {
            panic!("seq 3 is there: {:?}", recs[0].1);
        };
        assert_eq!(&r.body[..], b"hello");
        assert_eq!(
            recs[1].1,
            warren_store::Fetched::Missing,
            "seq 1 was deleted"
        );
    }
}

#[test]
fn an_engine_reopens_at_once_after_it_is_dropped() {
    // A broker restarted inside the same process (tests, embedding programs)
    // opens the directory right after the old store was closed.
    for kind in engines() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40u32 {
            let mut kv = open(kind, dir.path())
                .unwrap_or_else(|e| panic!("{kind:?}: reopen #{i} right after closing: {e}"));
            kv.apply(&[KvOp::Put(i.to_be_bytes().to_vec(), vec![1; 4096])])
                .unwrap();
        }
    }
}
