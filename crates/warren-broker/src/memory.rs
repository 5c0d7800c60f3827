//! The memory alarm: when the broker's resident memory passes the high
//! watermark, publishing connections are blocked (RabbitMQ's
//! `vm_memory_high_watermark`, 0.4 of RAM by default) until it falls back.
//! Unlike RabbitMQ, a fractional watermark is taken of the cgroup memory
//! limit when that is smaller than RAM (a container).

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::alarm::AlarmSource;
use crate::broker::Broker;

/// RabbitMQ's default: 40% of physical memory. `None` where it cannot be read.
pub fn default_watermark() -> Option<u64> {
    total_memory().map(|t| t / 10 * 4)
}

/// Memory available to the broker in bytes: physical memory (Linux
/// `/proc/meminfo`), or the cgroup memory limit when it is smaller (a
/// container), so that a fractional watermark is a fraction of what the
/// process may really use.
pub fn total_memory() -> Option<u64> {
    let host = meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    Some(match cgroup_limit() {
        Some(limit) if limit < host => limit,
        _ => host,
    })
}

/// `MemTotal` from the text of `/proc/meminfo`, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's cgroup memory limit, if it has one (v2, then v1).
fn cgroup_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let v2 = read("/proc/self/cgroup")
        .as_deref()
        .and_then(cgroup_v2_dir)
        .and_then(|dir| read(&format!("/sys/fs/cgroup{dir}/memory.max")));
    v2.or_else(|| read("/sys/fs/cgroup/memory.max"))
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .as_deref()
        .and_then(parse_cgroup_limit)
}

/// The cgroup v2 directory in `/proc/self/cgroup` (its `0::/path` line).
fn cgroup_v2_dir(proc_self_cgroup: &str) -> Option<String> {
    let dir = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim();
    Some(dir.trim_end_matches('/').to_owned())
}

/// A cgroup memory limit file: a number of bytes, or `max` for none.
/// (v1's "no limit" is a huge number; it loses against physical memory.)
fn parse_cgroup_limit(contents: &str) -> Option<u64> {
    match contents.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
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
        // Memory pressure is set on a change only: a process-wide flag, so
        // another broker in the same process (tests) does not undo it.
        let mut short = crate::queue::memory_short();
        loop {
            tick.tick().await;
            let Some(broker) = weak.upgrade() else { return };
            if let Some(rss) = resident_memory() {
                if (rss > limit / 2) != short {
                    short = !short;
                    crate::queue::set_memory_short(short);
                }
                broker.set_alarm(AlarmSource::Memory, rss > limit);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_limits_are_read_from_their_files() {
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("536870912\n"), Some(512 << 20));
        // cgroup v1 without a limit: a huge number, which physical memory beats.
        assert_eq!(
            parse_cgroup_limit("9223372036854771712\n"),
            Some(9_223_372_036_854_771_712)
        );
        assert_eq!(parse_cgroup_limit(""), None);
        assert_eq!(parse_cgroup_limit("garbage"), None);
    }

    #[test]
    fn the_cgroup_v2_directory_comes_from_proc_self_cgroup() {
        assert_eq!(
            cgroup_v2_dir("0::/system.slice/warren.service\n").as_deref(),
            Some("/system.slice/warren.service")
        );
        // Inside a container's cgroup namespace.
        assert_eq!(cgroup_v2_dir("0::/\n").as_deref(), Some(""));
        // cgroup v1 only: no unified line.
        assert_eq!(cgroup_v2_dir("4:memory:/docker/abc\n1:cpu:/x\n"), None);
    }

    #[test]
    fn mem_total_is_read_in_kibibytes() {
        let meminfo = "MemTotal:       16303780 kB\nMemFree:         1234 kB\n";
        assert_eq!(meminfo_total(meminfo), Some(16_303_780 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
    }
}
