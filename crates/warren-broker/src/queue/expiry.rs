//! The per-queue timer: expires messages at the head (`x-message-ttl`,
//! per-message `expiration`) and deletes the queue after `x-expires` of disuse.
//!
//! Started only for queues that need it, and woken through `Queue::timer`
//! when a nearer deadline may have appeared. It holds the queue alive only
//! until the queue is deleted, which wakes it to exit.

use std::sync::Arc;

use super::{Queue, Time};

/// Start the timer task; false when there is no tokio runtime (plain unit tests).
pub(super) fn spawn(queue: &Arc<Queue>) -> bool {
    let Some(runtime) = queue.runtime.clone() else {
        return false;
    };
    let queue = queue.clone();
    runtime.spawn(async move {
        loop {
            if queue.is_deleted() {
                return;
            }
            let tick = queue.run(|st, out| st.machine.tick(Time::now(), out));
            if tick.expire_queue {
                tracing::debug!(queue = %queue.name, "queue expired (x-expires)");
                if let Some(home) = queue.vhost_ref.upgrade() {
                    home.remove_expired(&queue);
                }
                return;
            }
            if queue.is_deleted() {
                return;
            }
            match tick.next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.instant().into()) => {}
                        _ = queue.timer.notified() => {}
                    }
                }
                None => queue.timer.notified().await,
            }
        }
    });
    true
}
