//! The disk alarm (RabbitMQ's `disk_free_limit`): when the free space of the
//! data directory's filesystem falls below the limit, publishing connections
//! are blocked until it is back above it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::alarm::AlarmSource;
use crate::broker::Broker;

/// RabbitMQ's default limit: 50 MB.
pub const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// Checks while free space is well above the limit are at most this far apart.
const MAX_INTERVAL: Duration = Duration::from_secs(10);
/// ...and at least this far.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// While the alarm is raised (to unblock publishers soon after space returns;
/// RabbitMQ waits its maximum, 10 s, here).
const ALARMED_INTERVAL: Duration = Duration::from_secs(1);

/// A limit as RabbitMQ writes it: bytes, with an optional unit.
/// `k`/`K`/`kiB`/`KiB`/`kib`/`KIB` are powers of 1024 (likewise `m`, `MiB`,
/// `g`, `GiB`...); `kB`/`KB`/`kb`/`Kb`, `MB`..., `GB`... are powers of 1000.
pub fn parse_limit(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits);
    let bad = || {
        format!("invalid disk free limit '{s}': use bytes, optionally with a unit such as 50MB, 500MiB or 1GB")
    };
    let num: u64 = num.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" | "kiB" | "KiB" | "kib" | "KIB" => 1 << 10,
        "m" | "M" | "MiB" | "mib" | "MIB" => 1 << 20,
        "g" | "G" | "GiB" | "gib" | "GIB" => 1 << 30,
        "kB" | "KB" | "kb" | "Kb" => 1_000,
        "MB" | "mb" | "Mb" => 1_000_000,
        "GB" | "gb" | "Gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    num.checked_mul(multiplier).ok_or_else(bad)
}

/// When to check again: RabbitMQ's estimate of how soon the disk could fill
/// (`2·(free − limit)` at 250 MB/s, between 100 ms and 10 s); sooner while alarmed.
pub fn next_check(free: u64, limit: u64, alarmed: bool) -> Duration {
    if alarmed {
        return ALARMED_INTERVAL;
    }
    let ms = free.saturating_sub(limit).saturating_mul(2) / 250_000;
    Duration::from_millis(ms).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// Bytes available to the broker on the filesystem holding `path`.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Watch the free space of `dir` and raise or clear the disk alarm. Ends with the broker.
pub fn spawn_monitor(broker: &Arc<Broker>, dir: PathBuf) {
    let Some(limit) = broker.config.disk_free_limit else {
        return;
    };
    let weak: Weak<Broker> = Arc::downgrade(broker);
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let Some(broker) = weak.upgrade() else { return };
            let alarmed = broker.alarms().is_raised(AlarmSource::DiskFree);
            let d = dir.clone();
            let free = tokio::task::spawn_blocking(move || free_space(&d)).await;
            let wait = match free {
                Ok(Ok(free)) => {
                    warned = false;
                    if (free < limit) != alarmed {
                        if free < limit {
                            tracing::warn!("free disk space is insufficient. Free bytes: {free}. Limit: {limit}");
                        } else {
                            tracing::info!(
                                "free disk space is sufficient. Free bytes: {free}. Limit: {limit}"
                            );
                        }
                        broker.set_alarm(AlarmSource::DiskFree, free < limit);
                    }
                    next_check(free, limit, free < limit)
                }
                Ok(Err(e)) => {
                    // Keep the last state, as RabbitMQ does, and say so once.
                    if !warned {
                        tracing::warn!("cannot measure free disk space of {}: {e}; the disk alarm keeps its last state", dir.display());
                        warned = true;
                    }
                    MAX_INTERVAL
                }
                Err(_) => return,
            };
            drop(broker);
            tokio::time::sleep(wait).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_like_rabbitmq() {
        assert_eq!(parse_limit("50000000"), Ok(50_000_000));
        assert_eq!(parse_limit("50MB"), Ok(50_000_000));
        assert_eq!(parse_limit("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_limit("500MiB"), Ok(500 << 20));
        assert_eq!(parse_limit("2G"), Ok(2 << 30));
        assert_eq!(parse_limit("64k"), Ok(64 << 10));
        assert_eq!(parse_limit("10kB"), Ok(10_000));
        assert!(parse_limit("").is_err());
        assert!(parse_limit("1.5GB").is_err());
        assert!(parse_limit("5TB").is_err());
        assert!(parse_limit("-1").is_err());
        assert!(parse_limit("99999999999999999999G").is_err());
    }

    #[test]
    fn checks_come_sooner_as_the_disk_fills() {
        let limit = 50_000_000;
        assert_eq!(next_check(u64::MAX, limit, false), MAX_INTERVAL);
        assert_eq!(next_check(limit + 1, limit, false), MIN_INTERVAL);
        // 1 GB above the limit: 2 GB at 250 MB/s = 8 s.
        assert_eq!(
            next_check(limit + 1_000_000_000, limit, false),
            Duration::from_secs(8)
        );
        assert_eq!(next_check(0, limit, true), ALARMED_INTERVAL);
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let dir = std::env::temp_dir();
        assert!(free_space(&dir).is_ok_and(|f| f > 0));
        assert!(free_space(Path::new("/no/such/dir/at/all")).is_err());
    }
}
