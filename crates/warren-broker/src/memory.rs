//! The memory alarm: when the broker's resident memory passes the high
//! watermark, publishing connections are blocked (RabbitMQ's
//! `vm_memory_high_watermark`, 0.4 of RAM by default) until it falls back.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::alarm::AlarmSource;
use crate::broker::Broker;

/// RabbitMQ's default: 40% of physical memory. `None` where it cannot be read.
pub fn default_watermark() -> Option<u64> {
    total_memory().map(|t| t / 10 * 4)
}

/// Physical memory in bytes (Linux `/proc/meminfo`).
pub fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's resident memory in bytes (Linux `/proc/self/statm`).
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Check memory every `period` and raise or clear the alarm. Ends with the broker.
pub fn spawn_monitor(broker: &Arc<Broker>, period: Duration) {
    let Some(limit) = broker.config.memory_high_watermark else {
        return;
    };
    let weak: Weak<Broker> = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let Some(broker) = weak.upgrade() else { return };
            if let Some(rss) = resident_memory() {
                broker.set_alarm(AlarmSource::Memory, rss > limit);
            }
        }
    });
}
