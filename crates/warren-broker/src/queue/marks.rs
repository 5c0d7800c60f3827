//! Delivery marks: a persistent message goes to a consumer only once the store
//! durably records that messages up to (at least) its seq may have been
//! delivered, so that after a crash it comes back with `redelivered` set.
//!
//! The mark runs [`MARK_AHEAD`] past the *head* being delivered, so dispatch
//! waits for the disk once per that many deliveries, and after a crash at most
//! that many messages that were never delivered come back redelivered (AMQP's
//! flag means "may have been delivered"). A clean stop writes the exact mark.

use super::consumers::Slot;
use super::effects::{Effects, StorageOp};
use super::machine::QueueMachine;
use super::ready::{QueuedMessage, Stored, Time};

/// How far past the head a delivery mark reaches.
pub const MARK_AHEAD: u64 = 1024;

impl<C: Slot> QueueMachine<C> {
    /// Whether message `seq` may go to a consumer now; if its mark is missing,
    /// ask for one (dispatch resumes when [`marked`](Self::marked) arrives).
    pub(super) fn may_deliver(&mut self, seq: u64, stored: Stored, out: &mut Effects<C>) -> bool {
        if stored != Stored::Durable || seq < self.mark_durable {
            return true;
        }
        if !self.mark_pending {
            self.mark_pending = true;
            out.store(StorageOp::Mark {
                upto: seq.saturating_add(MARK_AHEAD),
            });
        }
        false
    }

    pub(super) fn note_delivered(&mut self, m: &QueuedMessage) {
        if m.stored == Stored::Durable {
            self.delivered_max = Some(self.delivered_max.map_or(m.seq, |x| x.max(m.seq)));
        }
    }

    /// Completion of a [`StorageOp::Mark`]. After a failure nothing more is
    /// delivered until a later command asks again (no retry loop against a
    /// failing disk).
    pub fn marked(&mut self, upto: u64, ok: bool, now: Time, out: &mut Effects<C>) {
        self.mark_pending = false;
        if !ok {
            return;
        }
        self.mark_durable = self.mark_durable.max(upto.saturating_add(1));
        out.wake_getters = true;
        self.dispatch(now, out);
    }

    /// The exact mark for a clean stop: the highest persisted seq handed out
    /// (messages still unacked then are requeued first, so they count too).
    pub fn exact_mark(&self) -> Option<u64> {
        self.delivered_max
    }
}
