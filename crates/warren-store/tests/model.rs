//! A model checker in the style of redb's fuzzer: random batches of Put / Del /
//! DelPrefix go through the fault-injecting engine over each real engine, and
//! are mirrored into a `BTreeMap`. After every step the engine must hold
//! exactly the model; after an injected fault it must hold the state before
//! the batch or after it (atomicity), never anything else; a reopen must show
//! the last durable state. As the committer does, the writes of a failed batch
//! are retried ahead of the next one, so re-applying a batch that may have
//! committed must be harmless.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use warren_store::fault_engine::{Fault, FaultControl, FaultKv};
use warren_store::memory_engine::MemoryKv;
use warren_store::{layout, open, EngineKind, Kv, KvOp};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Step {
    Apply(Vec<KvOp>),
    /// Apply, with this fault injected.
    Fail(Fault, Vec<KvOp>),
    /// Close the engine and open it again (real engines).
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct keys under few prefixes, so that ops collide.
    (prop::sample::select(vec![b'a', b'b', b'c']), 0u8..4).prop_map(|(p, k)| vec![p, k])
}

fn op() -> impl Strategy<Value = KvOp> {
    prop_oneof![
        6 => (key(), prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(k, v)| KvOp::Put(k, v)),
        3 => key().prop_map(KvOp::Del),
        1 => prop::sample::select(vec![b'a', b'b', b'c']).prop_map(|p| KvOp::DelPrefix(vec![p])),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let batch = || prop::collection::vec(op(), 0..8);
    let fault = prop::sample::select(vec![Fault::NoSpace, Fault::Io, Fault::Ambiguous]);
    prop_oneof![
        6 => batch().prop_map(Step::Apply),
        3 => (fault, batch()).prop_map(|(f, b)| Step::Fail(f, b)),
        1 => Just(Step::Reopen),
    ]
}

fn apply_to_model(model: &mut Model, batch: &[KvOp]) {
    for op in batch {
        match op {
            KvOp::Put(k, v) => {
                model.insert(k.clone(), v.clone());
            }
            KvOp::Del(k) => {
                model.remove(k);
            }
            KvOp::DelPrefix(p) => model.retain(|k, _| !k.starts_with(p)),
        }
    }
}

fn contents(kv: &dyn Kv) -> Model {
    let mut m = Model::new();
    kv.scan_from(b"", &mut |k, v| {
        m.insert(k.to_vec(), v.to_vec());
        true
    })
    .expect("scan the engine");
    m
}

/// An engine under test that can be reopened on the same files.
struct Subject {
    kind: Option<EngineKind>,
    dir: tempfile::TempDir,
    control: FaultControl,
    kv: Option<FaultKv>,
}

impl Subject {
    fn new(kind: Option<EngineKind>) -> Subject {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = FaultControl::new();
        let kv = Some(FaultKv::new(inner(kind, dir.path()), control.clone()));
        Subject {
            kind,
            dir,
            control,
            kv,
        }
    }

    fn kv(&mut self) -> &mut FaultKv {
        self.kv.as_mut().expect("the engine is open")
    }

    fn reopen(&mut self) {
        if self.kind.is_none() {
            return; // nothing is durable in memory
        }
        drop(self.kv.take());
        self.kv = Some(FaultKv::new(
            inner(self.kind, self.dir.path()),
            self.control.clone(),
        ));
    }
}

fn inner(kind: Option<EngineKind>, dir: &Path) -> Box<dyn Kv> {
    match kind {
        Some(k) => open(k, dir).expect("open the engine"),
        None => {
            let mut m = MemoryKv::default();
            m.apply(&[KvOp::Put(
                layout::VERSION_KEY.to_vec(),
                layout::VERSION.to_vec(),
            )])
            .expect("memory apply");
            Box::new(m)
        }
    }
}

fn check(kind: Option<EngineKind>, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut s = Subject::new(kind);
    let mut model = Model::new();
    model.insert(layout::VERSION_KEY.to_vec(), layout::VERSION.to_vec());
    // Writes of failed batches, retried ahead of the next one.
    let mut retained: Vec<KvOp> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::Apply(batch) | Step::Fail(_, batch) => {
                let mut full = retained.clone();
                full.extend(batch.iter().cloned());
                let mut after = model.clone();
                apply_to_model(&mut after, &full);
                if let Step::Fail(fault, _) = step {
                    s.control.fail_once(*fault);
                }
                let result = s.kv().apply(&full);
                let got = contents(s.kv());
                match (step, result) {
                    (Step::Apply(_), Ok(())) => {
                        prop_assert_eq!(&got, &after, "step {}: after a successful batch", i);
                        model = after;
                        retained.clear();
                    }
                    (Step::Fail(fault, _), Err(_)) => {
                        if *fault == Fault::Ambiguous {
                            prop_assert!(got == model || got == after, "step {}: not atomic", i);
                        } else {
                            prop_assert_eq!(
                                &got,
                                &model,
                                "step {}: a refused batch left traces",
                                i
                            );
                        }
                        model = got;
                        retained = full;
                    }
                    (step, result) => {
                        return Err(TestCaseError::fail(format!(
                            "step {i}: {step:?} returned {result:?}"
                        )))
                    }
                }
            }
            Step::Reopen => {
                s.reopen();
                prop_assert_eq!(&contents(s.kv()), &model, "step {}: after reopening", i);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_engine_matches_the_model(steps in prop::collection::vec(step(), 1..40)) {
        check(None, &steps)?;
    }
}

proptest! {
    // Real files: fewer cases (each reopen is a real open).
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn redb_matches_the_model(steps in prop::collection::vec(step(), 1..30)) {
        check(Some(EngineKind::Redb), &steps)?;
    }

    #[test]
    fn sled_matches_the_model(steps in prop::collection::vec(step(), 1..30)) {
        check(Some(EngineKind::Sled), &steps)?;
    }
}
