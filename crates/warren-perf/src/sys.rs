//! Process figures: the broker's CPU time and RSS from /proc, this tool's own
//! CPU time from getrusage, and a few process-control helpers.

use std::time::Duration;

/// CPU time (user + system) and resident memory of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User + system CPU time.
    pub cpu: Duration,
    /// User CPU time alone (the rest of `cpu` was spent in the kernel).
    pub user: Duration,
    pub rss_kb: u64,
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// (utime, stime) in clock ticks from the text of /proc/PID/stat.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The command name is in parentheses and may hold spaces: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// A `Key:   123 kB` line's number from /proc/PID/status.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// A process to watch through /proc.
#[derive(Debug, Clone, Copy)]
pub struct ProcWatch {
    pub pid: u32,
    ticks: u64,
}

impl ProcWatch {
    /// Fails (with a message) if the process cannot be read.
    pub fn new(pid: u32) -> Result<ProcWatch, String> {
        let w = ProcWatch {
            pid,
            ticks: clock_ticks(),
        };
        w.sample().ok_or_else(|| {
            format!("cannot read /proc/{pid}/stat and /proc/{pid}/status: no such process?")
        })?;
        Ok(w)
    }

    pub fn sample(&self) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let (utime, stime) = parse_stat_cpu_ticks(&stat)?;
        let us = |t: u64| Duration::from_micros(t * 1_000_000 / self.ticks);
        Some(ProcSample {
            cpu: us(utime + stime),
            user: us(utime),
            rss_kb: parse_status_kb(&status, "VmRSS").unwrap_or(0),
        })
    }

    /// VmHWM: the process's peak RSS since it started.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_status_kb(&status, "VmHWM")
    }
}

/// This process's CPU time (user + system) and peak RSS (kB), from getrusage.
pub fn self_usage() -> ProcSample {
    // SAFETY: rusage is plain data; getrusage fills it and cannot fail for RUSAGE_SELF.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    ProcSample {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        user: tv(ru.ru_utime),
        rss_kb: ru.ru_maxrss as u64,
    }
}

/// Raise the open-files soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: plain-data struct passed to get/setrlimit.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur as u64;
            }
        }
        rl.rlim_cur as u64
    }
}

/// Send `sig` to the process group `pgid`.
pub fn kill_group(pgid: u32, sig: i32) -> bool {
    // SAFETY: kill has no memory effects; a negative pid addresses a process group.
    unsafe { libc::kill(-(pgid as i32), sig) == 0 }
}

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_comm() {
        let stat = "1234 (tokio runtime) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 555 1000 200";
        assert_eq!(parse_stat_cpu_ticks(stat), Some((250, 75)));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_proc_status() {
        let s = "Name:\twarren\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
    }

    #[test]
    fn reads_own_process() {
        let w = ProcWatch::new(std::process::id()).unwrap();
        let s = w.sample().unwrap();
        assert!(s.rss_kb > 0);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(self_usage().cpu > Duration::ZERO);
    }
}
