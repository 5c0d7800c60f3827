//! Memory pressure as queues see it: once the broker's memory passes half of
//! the high watermark (RabbitMQ's classic `vm_memory_high_watermark_paging_ratio`,
//! 0.5), queues page transient messages to disk too, so that a transient
//! backlog larger than memory does not end in the memory alarm.

use std::sync::atomic::{AtomicBool, Ordering};

static MEMORY_SHORT: AtomicBool = AtomicBool::new(false);

/// Set by the memory monitor.
pub fn set_memory_short(short: bool) {
    MEMORY_SHORT.store(short, Ordering::Relaxed);
}

pub fn memory_short() -> bool {
    MEMORY_SHORT.load(Ordering::Relaxed)
}
