//! The vhost's side of `x-delayed-message` exchanges (`delayed.rs`): holding
//! a message, writing it to the store when the exchange is durable, and the
//! per-exchange timer task that routes what falls due.

use std::sync::{Arc, Weak};
use std::time::Duration;

use warren_store::Op;

use crate::delayed::{now_ms, released, requested_delay, Delayed};
use crate::exchange::Exchange;
use crate::message::Message;
use crate::vhost::VHost;

impl VHost {
    /// Hold `msg` for `delay` ms; true if it was written to the store.
    pub(crate) fn hold(&self, d: &Delayed, msg: &Message, delay: u64) -> bool {
        let message = Arc::new(msg.clone());
        let mut schedule = d.schedule.lock();
        let (seq, first) = schedule.hold(now_ms().saturating_add(delay), message.clone());
        // Written under the schedule's lock, so that the delete after release
        // cannot reach the store ahead of this write.
        let durable = match (self.persistence(), d.store_id) {
            (Some(p), Some(queue)) => {
                p.store.submit(Op::PutMessage {
                    queue,
                    seq,
                    message,
                });
                true
            }
            _ => false,
        };
        drop(schedule);
        if first {
            d.wake.notify_one();
        }
        durable
    }

    /// Route the held messages that are due through `x`, then forget them in
    /// the store (after the target queues' writes: at least once).
    fn release_due(&self, x: &Exchange, d: &Delayed) {
        let due = d.schedule.lock().take_due(now_ms());
        let mut targets = Vec::new();
        for (seq, held) in due {
            let delay = requested_delay(&held).unwrap_or(0);
            let message = match released(&held, delay) {
                Some(m) => Arc::new(m),
                None => held,
            };
            targets.clear();
            self.route(x, &message, &mut targets);
            for q in &targets {
                let _ = q.publish(message.clone());
            }
            if let (Some(p), Some(queue)) = (self.persistence(), d.store_id) {
                p.store.submit(Op::DelMessage { queue, seq });
            }
        }
    }

    /// Start the timer task of a delayed exchange (once; not without a tokio
    /// runtime). It ends when the exchange or the vhost is gone.
    pub(crate) fn start_delay_timer(self: &Arc<Self>, x: &Arc<Exchange>) {
        let Some(d) = x.delayed.clone() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !d.claim_timer() {
            return;
        }
        let vhost: Weak<VHost> = Arc::downgrade(self);
        let x = x.clone();
        runtime.spawn(async move {
            loop {
                if d.is_deleted() {
                    return;
                }
                let Some(v) = vhost.upgrade() else { return };
                v.release_due(&x, &d);
                drop(v);
                let next = d.schedule.lock().next_due();
                match next {
                    Some(due) => {
                        let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = d.wake.notified() => {}
                        }
                    }
                    None => d.wake.notified().await,
                }
            }
        });
    }
}
