//! `x-dead-letter-strategy: at-least-once`: a dead-lettered message that a
//! target refused (its own `reject-publish` limit) stays in the source — its
//! record too — and is offered to that target again every second until it is
//! taken; only then does the source forget it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::machine::Enqueued;
use super::{Queue, Stored};
use crate::message::Message;

/// How often refused dead-letters are offered again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A dead-lettered message waiting for targets that refused it.
#[derive(Debug)]
pub(super) struct Parked {
    message: Arc<Message>,
    targets: Vec<Weak<Queue>>,
    seq: u64,
    stored: Stored,
}

impl Queue {
    /// Keep a refused dead-letter and make sure the retry task runs.
    pub(super) fn park_dead_letter(
        self: &Arc<Self>,
        message: Arc<Message>,
        targets: Vec<Arc<Queue>>,
        seq: u64,
        stored: Stored,
    ) {
        let first = {
            let mut parked = self.parked.lock();
            parked.push(Parked {
                message,
                targets: targets.iter().map(Arc::downgrade).collect(),
                seq,
                stored,
            });
            parked.len() == 1
        };
        if first {
            self.spawn_dead_letter_retry();
        }
    }

    /// Offer the parked dead-letters again; true while some are left.
    fn retry_dead_letters(&self) -> bool {
        let parked = std::mem::take(&mut *self.parked.lock());
        let mut left = Vec::new();
        for mut p in parked {
            p.targets.retain(|t| {
                t.upgrade().is_some_and(|q| {
                    !q.is_deleted() && q.publish(p.message.clone()) == Enqueued::Rejected
                })
            });
            if p.targets.is_empty() {
                self.forget(p.seq, p.stored);
            } else {
                left.push(p);
            }
        }
        let mut parked = self.parked.lock();
        parked.extend(left);
        !parked.is_empty()
    }

    fn spawn_dead_letter_retry(self: &Arc<Self>) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let queue = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                let Some(q) = queue.upgrade() else { return };
                if q.is_deleted() || !q.retry_dead_letters() {
                    return;
                }
            }
        });
    }
}
