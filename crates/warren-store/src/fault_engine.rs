//! A fault-injecting engine for tests: wraps any [`Kv`] and, as told through a
//! shared [`FaultControl`], makes `apply` fail the way a full or broken disk
//! does, or slows it down like a slow fsync.
//!
//! It sits on the engine seam, so everything above it (the committer, the
//! broker) runs unchanged; faults below an engine's own file I/O are the
//! engine's business and are covered by its own tests.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::kv::{Kv, KvOp};
use crate::StoreError;

/// How a failing `apply` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC: nothing of the batch is written.
    NoSpace,
    /// EIO: nothing of the batch is written.
    Io,
    /// The batch is in fact applied, but an error is returned (an fsync that
    /// reported failure after the data reached the engine): the caller cannot
    /// tell whether it committed.
    Ambiguous,
}

#[derive(Debug, Default)]
struct Plan {
    /// Applies to let through before failing (`None`: never fail).
    fail_after: Option<u64>,
    fault: Option<Fault>,
    /// Fail only once, then heal by itself.
    once: bool,
    delay: Duration,
    applied: u64,
    failed: u64,
}

/// The shared switchboard of one or more [`FaultKv`]s (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct FaultControl(Arc<Mutex<Plan>>);

impl FaultControl {
    pub fn new() -> FaultControl {
        FaultControl::default()
    }

    fn plan(&self) -> MutexGuard<'_, Plan> {
        // A test thread that panicked while holding it leaves a usable plan.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every `apply` from now on fails with `fault`, until [`heal`](Self::heal).
    pub fn fail(&self, fault: Fault) {
        self.fail_after(0, fault);
    }

    /// Let `n` more applies through, then fail every one with `fault`.
    pub fn fail_after(&self, n: u64, fault: Fault) {
        let mut p = self.plan();
        p.fail_after = Some(n);
        p.fault = Some(fault);
        p.once = false;
    }

    /// The next `apply` fails with `fault`; the ones after it succeed.
    pub fn fail_once(&self, fault: Fault) {
        self.fail(fault);
        self.plan().once = true;
    }

    /// Stop failing.
    pub fn heal(&self) {
        let mut p = self.plan();
        p.fail_after = None;
        p.fault = None;
    }

    /// Sleep this long in every `apply` (a slow fsync).
    pub fn set_delay(&self, delay: Duration) {
        self.plan().delay = delay;
    }

    /// Batches that reached the engine (ambiguous failures included).
    pub fn applied(&self) -> u64 {
        self.plan().applied
    }

    /// Applies that returned an error.
    pub fn failed(&self) -> u64 {
        self.plan().failed
    }

    /// Decide the fate of one apply: `Some(fault)` to fail it.
    fn next(&self) -> (Option<Fault>, Duration) {
        let mut p = self.plan();
        let fault = match p.fail_after {
            Some(0) => p.fault,
            Some(n) => {
                p.fail_after = Some(n - 1);
                None
            }
            None => None,
        };
        if fault.is_some() {
            p.failed += 1;
            if p.once {
                p.fail_after = None;
                p.fault = None;
            }
        }
        if fault.is_none() || fault == Some(Fault::Ambiguous) {
            p.applied += 1;
        }
        (fault, p.delay)
    }
}

/// An engine whose writes fail on demand.
pub struct FaultKv {
    inner: Box<dyn Kv>,
    control: FaultControl,
}

impl FaultKv {
    pub fn new(inner: Box<dyn Kv>, control: FaultControl) -> FaultKv {
        FaultKv { inner, control }
    }

    /// Give the wrapped engine back (to close and reopen it in a test).
    pub fn into_inner(self) -> Box<dyn Kv> {
        self.inner
    }
}

impl Kv for FaultKv {
    fn apply(&mut self, batch: &[KvOp]) -> Result<(), StoreError> {
        let (fault, delay) = self.control.next();
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        match fault {
            None => self.inner.apply(batch),
            Some(Fault::NoSpace) => Err(StoreError::Write(
                "injected fault: No space left on device (os error 28)".into(),
            )),
            Some(Fault::Io) => Err(StoreError::Write(
                "injected fault: Input/output error (os error 5)".into(),
            )),
            Some(Fault::Ambiguous) => {
                self.inner.apply(batch)?;
                Err(StoreError::Write(
                    "injected fault: fsync failed after the batch was written".into(),
                ))
            }
        }
    }

    fn scan_from(
        &self,
        start: &[u8],
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_from(start, f)
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}
