//! Publisher flow control. A connection that has handed the store more than
//! [`STORE_WINDOW`] bytes of writes not yet known to be on disk stops reading
//! its socket until the store has caught up with them (TCP then slows the
//! publisher). It waits only for the storage thread, which always makes
//! progress on its own — never for a consumer or another connection — so no
//! cycle of waits can form between connections that publish to each other's
//! queues. Memory and disk alarms are the other reasons a publisher waits.

use super::handle::ConnEvent;
use super::Connection;

/// Unsynced store writes a connection may have outstanding.
pub(super) const STORE_WINDOW: usize = 16 << 20;

impl Connection {
    /// A published message of `bytes` went to the store.
    pub(super) fn note_store_write(&mut self, bytes: usize) {
        self.unsynced_bytes += bytes;
    }

    /// Past the window: pause reading until the store has written everything
    /// handed to it so far.
    pub(super) fn limit_store_backlog(&mut self) {
        if self.unsynced_bytes < STORE_WINDOW {
            return;
        }
        let Some(store) = self.broker.store().cloned() else {
            return;
        };
        self.unsynced_bytes = 0;
        self.flow_paused += 1;
        let handle = self.handle.clone();
        store.barrier(move |_ok| handle.notify(ConnEvent::FlowResume));
    }
}
