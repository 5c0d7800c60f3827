//! Prefetch credit: how many unacknowledged deliveries a consumer (or a whole
//! channel, for `basic.qos global=true`) may hold. Shared between the queue that
//! delivers and the channel that sees the acks, hence atomics.

use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, Default)]
pub struct Credit {
    /// 0 means unlimited.
    limit: AtomicU32,
    in_flight: AtomicU32,
}

impl Credit {
    pub fn new(limit: u32) -> Self {
        Credit {
            limit: AtomicU32::new(limit),
            in_flight: AtomicU32::new(0),
        }
    }

    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Take one unit if the limit allows it.
    pub fn try_take(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (limit == 0 || n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Give back `n` units (acked, rejected or requeued deliveries).
    pub fn release(&self, n: u32) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_releases() {
        let c = Credit::new(2);
        assert!(c.try_take() && c.try_take());
        assert!(!c.try_take());
        c.release(1);
        assert!(c.try_take());
        let unlimited = Credit::new(0);
        assert!((0..1000).all(|_| unlimited.try_take()));
    }
}
