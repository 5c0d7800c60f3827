//! Resource alarms, as in RabbitMQ: while any is raised, connections that
//! publish are blocked (not read, and told with `connection.blocked` if they
//! understand it). The memory monitor raises one, the disk monitor and a
//! failing store raise the other.

use std::sync::atomic::{AtomicU8, Ordering};

/// What raised an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmSource {
    /// Resident memory above the high watermark.
    Memory,
    /// Free space of the data directory below `disk_free_limit`.
    DiskFree,
    /// The store cannot write (a full or failing disk).
    StoreFailing,
}

impl AlarmSource {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            AlarmSource::Memory => "resident memory is above the high watermark",
            AlarmSource::DiskFree => "free disk space is below disk_free_limit",
            AlarmSource::StoreFailing => "the store cannot write to disk",
        }
    }

    fn bit(self) -> u8 {
        match self {
            AlarmSource::Memory => 1,
            AlarmSource::DiskFree => 2,
            AlarmSource::StoreFailing => 4,
        }
    }
}

const DISK: u8 = 2 | 4;

/// The raised alarms (a set of [`AlarmSource`]s).
#[derive(Debug, Default)]
pub struct Alarms(AtomicU8);

impl Alarms {
    /// Raise or clear `source`; true if that changed anything.
    pub(crate) fn set(&self, source: AlarmSource, on: bool) -> bool {
        let old = if on {
            self.0.fetch_or(source.bit(), Ordering::SeqCst)
        } else {
            self.0.fetch_and(!source.bit(), Ordering::SeqCst)
        };
        (old & source.bit() != 0) != on
    }

    pub fn memory(&self) -> bool {
        self.0.load(Ordering::SeqCst) & AlarmSource::Memory.bit() != 0
    }

    /// The disk alarm: low on free space, or the store cannot write.
    pub fn disk(&self) -> bool {
        self.0.load(Ordering::SeqCst) & DISK != 0
    }

    pub fn is_raised(&self, source: AlarmSource) -> bool {
        self.0.load(Ordering::SeqCst) & source.bit() != 0
    }

    /// RabbitMQ's `connection.blocked` reason, `None` when no alarm is raised.
    pub fn blocked_reason(&self) -> Option<&'static str> {
        match (self.memory(), self.disk()) {
            (false, false) => None,
            (true, false) => Some("low on memory"),
            (false, true) => Some("low on disk"),
            (true, true) => Some("low on memory & disk"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_names_every_raised_resource() {
        let a = Alarms::default();
        assert_eq!(a.blocked_reason(), None);
        assert!(a.set(AlarmSource::StoreFailing, true));
        assert_eq!(a.blocked_reason(), Some("low on disk"));
        assert!(a.set(AlarmSource::DiskFree, true));
        assert!(!a.set(AlarmSource::DiskFree, true), "already raised");
        assert!(a.set(AlarmSource::Memory, true));
        assert_eq!(a.blocked_reason(), Some("low on memory & disk"));
        a.set(AlarmSource::StoreFailing, false);
        assert!(a.disk(), "free space is still low");
        a.set(AlarmSource::DiskFree, false);
        assert_eq!(a.blocked_reason(), Some("low on memory"));
        a.set(AlarmSource::Memory, false);
        assert_eq!(a.blocked_reason(), None);
    }
}
