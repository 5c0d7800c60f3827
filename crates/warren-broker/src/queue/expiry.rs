//! The per-queue timer: expires messages at the head (`x-message-ttl`,
//! per-message `expiration`) and deletes the queue after `x-expires` of disuse.
//!
//! Started only for queues that need it, and woken through `Queue::timer`
//! when a nearer deadline may have appeared. It holds the queue alive only
//! until the queue is deleted, which wakes it to exit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Dead, Queue};

/// Start the timer task; false when there is no tokio runtime (plain unit tests).
pub(super) fn spawn(queue: &Arc<Queue>) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let queue = queue.clone();
    runtime.spawn(async move {
        loop {
            if queue.is_deleted() {
                return;
            }
            let next = queue.tick(Instant::now());
            if queue.is_deleted() {
                return;
            }
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = queue.timer.notified() => {}
                    }
                }
                None => queue.timer.notified().await,
            }
        }
    });
    true
}

impl Queue {
    /// Do the time-based work due at `now`; returns when to look again.
    fn tick(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        let mut dead = Dead::new();
        let (next, expire_queue) = {
            let mut st = self.state.lock();
            st.expire_head(now, &mut dead);
            let head = st.ready.front().and_then(|m| m.expires_at.get());
            let unused_until = self
                .args
                .expires
                .filter(|_| st.consumers.is_empty())
                .map(|ms| st.last_used + Duration::from_millis(ms));
            let expire_queue = unused_until.is_some_and(|t| t <= now);
            let next = match (head, unused_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (next, expire_queue)
        };
        self.dispose(dead);
        if expire_queue {
            tracing::debug!(queue = %self.name, "queue expired (x-expires)");
            if let Some(vhost) = self.vhost_ref.upgrade() {
                vhost.drop_queue(self);
            }
            return None;
        }
        next
    }
}
