//! A small filesystem to fill up: a tmpfs mounted for one test.

use std::path::PathBuf;
use std::process::Command;

/// A tmpfs of `size` bytes mounted in a temporary directory, unmounted on drop.
pub struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (after saying why) when it cannot be mounted: the test then passes vacuously.
    pub fn mount(size: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { mount, _dir: dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a small tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.mount.join("data")
    }

    pub fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }

    /// Write to a filler file until the disk is full.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0xA5u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk may have gone in; fill the rest byte by byte.
        while f.write_all(&chunk[..1]).is_ok() {}
    }

    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    /// Write a filler file so that about `left` bytes stay free.
    pub fn fill_leaving(&self, left: u64) {
        use std::io::Write;
        let free = self.free_bytes();
        let mut f = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0x5Au8; 64 * 1024];
        let mut todo = free.saturating_sub(left);
        while todo > 0 {
            let n = todo.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).expect("write the filler");
            todo -= n as u64;
        }
        f.sync_all().expect("sync the filler");
    }

    /// Free bytes on the filesystem (from `df`, to stay free of unsafe code here).
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mount)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}
