//! An append-only log for streams, in segment files rather than the
//! key-value store: a stream is read far more than it is changed, from any
//! offset by many readers, and dropped from the front a whole segment at a
//! time.
//!
//! Offsets number the records from 0 for the life of the stream. A segment
//! file is named after its first offset and holds records of
//! `len u32 | crc32 u32 | offset u64 | timestamp i64 | data` (big-endian; the
//! checksum covers offset, timestamp and data). A batch is one write and one
//! fsync. At open every segment is checked: a torn or corrupt record at the
//! end of the last segment (a crash mid-write) is cut off; anywhere else it
//! stops the open with an error naming the file.
//!
//! Blocking file I/O: callers run it off the async workers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

/// Bytes before a record's data.
const HEADER: u64 = 24;
/// The largest record accepted or read back (bounds allocation on a corrupt
/// length): above Warren's 128 MiB message limit.
pub const MAX_RECORD: u64 = 256 << 20;
/// Bytes between two points of a segment's in-memory index.
const INDEX_EVERY: u64 = 64 << 10;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub data: Bytes,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    /// Bytes of whole records (what readers may read).
    len: u64,
    count: u64,
    first_ts: i64,
    last_ts: i64,
    /// (offset, file position) of some records, for seeking.
    index: Vec<(u64, u64)>,
}

impl Segment {
    fn empty(first: u64, path: PathBuf) -> Segment {
        Segment {
            first,
            path,
            len: 0,
            count: 0,
            first_ts: 0,
            last_ts: 0,
            index: Vec::new(),
        }
    }

    fn next(&self) -> u64 {
        self.first + self.count
    }

    fn note(&mut self, offset: u64, ts: i64, pos: u64, size: u64) {
        if self.count == 0 {
            self.first_ts = ts;
        }
        if self
            .index
            .last()
            .is_none_or(|(_, p)| pos >= p + INDEX_EVERY)
        {
            self.index.push((offset, pos));
        }
        self.last_ts = ts;
        self.count += 1;
        self.len = pos + size;
    }
}

/// A stream's log.
#[derive(Debug)]
pub struct StreamLog {
    dir: PathBuf,
    max_segment_bytes: u64,
    segments: Vec<Segment>,
    active: File,
    /// Whether the directory entry of every segment is on disk.
    dir_synced: bool,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.segment"))
}

fn corrupt(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("stream segment {}: {what}", path.display()),
    )
}

/// Read the record at the reader's position: `Ok(None)` at a clean end, or
/// where the rest is not a whole, valid record.
fn read_record(
    r: &mut impl Read,
    expected: u64,
    left: u64,
) -> io::Result<Option<(i64, Bytes, u64)>> {
    if left < HEADER {
        return Ok(None);
    }
    let mut h = [0u8; HEADER as usize];
    if r.read_exact(&mut h).is_err() {
        return Ok(None);
    }
    let field = |at: usize, n: usize| &h[at..at + n];
    let len = u64::from(u32::from_be_bytes(
        field(0, 4).try_into().unwrap_or_default(),
    ));
    let crc = u32::from_be_bytes(field(4, 4).try_into().unwrap_or_default());
    let offset = u64::from_be_bytes(field(8, 8).try_into().unwrap_or_default());
    let ts = i64::from_be_bytes(field(16, 8).try_into().unwrap_or_default());
    if len > MAX_RECORD || HEADER + len > left || offset != expected {
        return Ok(None);
    }
    let mut data = vec![0u8; len as usize];
    if r.read_exact(&mut data).is_err() {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[8..]);
    hasher.update(&data);
    if hasher.finalize() != crc {
        return Ok(None);
    }
    Ok(Some((ts, Bytes::from(data), HEADER + len)))
}

fn encode_record(out: &mut Vec<u8>, offset: u64, ts: i64, data: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&offset.to_be_bytes());
    hasher.update(&ts.to_be_bytes());
    hasher.update(data);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&hasher.finalize().to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(data);
}

/// Check a segment file and build its index; `tail` allows cutting off a
/// bad end (the last segment).
fn load_segment(path: PathBuf, first: u64, tail: bool) -> io::Result<Segment> {
    let file = File::open(&path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut seg = Segment::empty(first, path);
    let mut pos = 0;
    while let Some((ts, _, n)) = read_record(&mut r, seg.next(), size - pos)? {
        seg.note(seg.next(), ts, pos, n);
        pos += n;
    }
    if pos < size {
        if !tail {
            return Err(corrupt(&seg.path, &format!("bad record at byte {pos}")));
        }
        tracing::warn!(
            segment = %seg.path.display(),
            cut = size - pos,
            "cutting a torn or corrupt record off the end of a stream segment (a crash during a write)"
        );
        OpenOptions::new()
            .write(true)
            .open(&seg.path)?
            .set_len(pos)?;
    }
    Ok(seg)
}

/// The part of a segment a read may cover.
#[derive(Debug)]
struct Extent {
    path: PathBuf,
    /// Where to start: an offset and its file position.
    cursor: u64,
    pos: u64,
    /// One past its last record, and the bytes of its whole records.
    next: u64,
    len: u64,
}

/// A read, planned under the log's lock and done without it.
#[derive(Debug)]
struct ReadPlan {
    offset: u64,
    extents: Vec<Extent>,
}

impl ReadPlan {
    /// Up to `max_records` records, stopping after `max_bytes` of data. A
    /// segment that retention removed meanwhile ends the read early
    /// (`NotFound` if nothing was read).
    fn read(self, max_records: usize, max_bytes: u64) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.extents {
            if out.len() >= max_records || bytes >= max_bytes {
                break;
            }
            let (mut cursor, mut pos) = (e.cursor, e.pos);
            let mut file = match File::open(&e.path) {
                Ok(f) => f,
                Err(err) if err.kind() == io::ErrorKind::NotFound && !out.is_empty() => break,
                Err(err) => return Err(err),
            };
            file.seek(SeekFrom::Start(pos))?;
            let mut r = BufReader::new(file);
            while cursor < e.next && out.len() < max_records && bytes < max_bytes {
                let Some((ts, data, n)) = read_record(&mut r, cursor, e.len - pos)? else {
                    return Err(corrupt(&e.path, &format!("bad record at byte {pos}")));
                };
                if cursor >= self.offset {
                    bytes += data.len() as u64;
                    out.push(Entry {
                        offset: cursor,
                        timestamp_ms: ts,
                        data,
                    });
                }
                cursor += 1;
                pos += n;
            }
        }
        Ok(out)
    }
}

impl StreamLog {
    /// Open (or create) the log in `dir`.
    pub fn open(dir: &Path, max_segment_bytes: u64) -> io::Result<StreamLog> {
        fs::create_dir_all(dir)?;
        let mut firsts = Vec::new();
        for e in fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(".segment")
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments: Vec<Segment> = Vec::with_capacity(firsts.len().max(1));
        for (i, first) in firsts.iter().enumerate() {
            let path = segment_path(dir, *first);
            if let Some(prev) = segments.last() {
                if prev.next() != *first {
                    return Err(corrupt(
                        &path,
                        &format!(
                            "starts at {first}, but the one before ends at {}",
                            prev.next()
                        ),
                    ));
                }
            }
            segments.push(load_segment(path, *first, i + 1 == firsts.len())?);
        }
        // A new log's file is made here but made durable by the first
        // append (on the storage thread): opening does no fsync, so a
        // declare never waits on the disk.
        let fresh = segments.is_empty();
        if fresh {
            let path = segment_path(dir, 0);
            File::create(&path)?;
            segments.push(load_segment(path, 0, true)?);
        }
        let active = match segments.last() {
            Some(s) => OpenOptions::new().append(true).open(&s.path)?,
            None => return Err(io::Error::other("a stream log without a segment")),
        };
        Ok(StreamLog {
            dir: dir.to_owned(),
            max_segment_bytes: max_segment_bytes.max(HEADER + 1),
            segments,
            active,
            dir_synced: !fresh,
        })
    }

    fn last(&self) -> &Segment {
        &self.segments[self.segments.len() - 1]
    }

    /// The first offset still in the log.
    pub fn first_offset(&self) -> u64 {
        self.segments[0].first
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.last().next()
    }

    /// Records in the log.
    pub fn len(&self) -> u64 {
        self.next_offset() - self.first_offset()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes in the log's segments.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Start a new segment at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        self.active.sync_data()?;
        let first = self.next_offset();
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        File::open(&self.dir)?.sync_all()?;
        self.active = file;
        self.segments.push(Segment::empty(first, path));
        Ok(())
    }

    /// Append a batch of `(timestamp ms, data)` records with one write and one
    /// fsync per segment touched; returns the offset of the first. On an error
    /// nothing of the batch is kept in the current segment.
    pub fn append(&mut self, batch: &[(i64, &[u8])]) -> io::Result<u64> {
        let start = self.next_offset();
        let mut buf = Vec::new();
        let mut pending: Vec<(i64, u64)> = Vec::new();
        for (ts, data) in batch {
            if data.len() as u64 > MAX_RECORD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a stream record of {} bytes is over the limit of {MAX_RECORD}",
                        data.len()
                    ),
                ));
            }
            let seg = self.last();
            let written = seg.len + buf.len() as u64;
            if written >= self.max_segment_bytes && (seg.count > 0 || !pending.is_empty()) {
                self.flush(&mut buf, &mut pending)?;
                self.roll()?;
            }
            let offset = self.next_offset() + pending.len() as u64;
            encode_record(&mut buf, offset, *ts, data);
            pending.push((*ts, HEADER + data.len() as u64));
        }
        self.flush(&mut buf, &mut pending)?;
        Ok(start)
    }

    /// Write and sync what is pending for the active segment.
    fn flush(&mut self, buf: &mut Vec<u8>, pending: &mut Vec<(i64, u64)>) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let before = self.last().len;
        let written = self
            .active
            .write_all(buf)
            .and_then(|()| self.active.sync_data());
        let written = match written {
            Ok(()) if !self.dir_synced => File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map(|()| self.dir_synced = true),
            other => other,
        };
        if let Err(e) = written {
            // Leave no partial record behind for the next append.
            let _ = self.active.set_len(before);
            return Err(e);
        }
        let mut pos = before;
        let last = self.segments.len() - 1;
        let seg = &mut self.segments[last];
        for (ts, size) in pending.drain(..) {
            seg.note(seg.next(), ts, pos, size);
            pos += size;
        }
        buf.clear();
        Ok(())
    }

    /// Up to `max_records` records from `from` (or from the first offset
    /// still kept, if `from` is older), stopping after `max_bytes` of data.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: u64) -> io::Result<Vec<Entry>> {
        self.plan(from).read(max_records, max_bytes)
    }

    /// Where a read from `from` goes: a snapshot of the segments' extents,
    /// so that the file I/O runs without the log's lock.
    fn plan(&self, from: u64) -> ReadPlan {
        let offset = from.max(self.first_offset());
        let at = self.segments.partition_point(|s| s.next() <= offset);
        let extents = self.segments[at..]
            .iter()
            .enumerate()
            .map(|(n, seg)| {
                // The first segment starts at the index point before `offset`.
                let i = seg.index.partition_point(|(o, _)| *o <= offset);
                let (cursor, pos) = match i.checked_sub(1).and_then(|i| seg.index.get(i)) {
                    Some(&(o, p)) if n == 0 => (o, p),
                    _ => (seg.first, 0),
                };
                Extent {
                    path: seg.path.clone(),
                    cursor,
                    pos,
                    next: seg.next(),
                    len: seg.len,
                }
            })
            .collect();
        ReadPlan { offset, extents }
    }

    /// The first offset whose record was appended at or after `ts` (the next
    /// offset if none was).
    pub fn offset_at(&self, ts: i64) -> io::Result<u64> {
        let Some(seg) = self
            .segments
            .iter()
            .find(|s| s.count > 0 && s.last_ts >= ts)
        else {
            return Ok(self.next_offset());
        };
        if seg.first_ts >= ts {
            return Ok(seg.first);
        }
        let mut from = seg.first;
        loop {
            let entries = self.read(from, 1024, u64::MAX)?;
            if let Some(e) = entries.iter().find(|e| e.timestamp_ms >= ts) {
                return Ok(e.offset);
            }
            match entries.last() {
                Some(e) => from = e.offset + 1,
                None => return Ok(self.next_offset()),
            }
        }
    }

    /// Delete whole segments from the front (never the one being written)
    /// while the log is over `max_bytes`, or while a segment's newest record
    /// is older than `max_age_ms` at `now_ms`. Returns how many went.
    pub fn retain(
        &mut self,
        max_bytes: Option<u64>,
        max_age_ms: Option<u64>,
        now_ms: i64,
    ) -> io::Result<usize> {
        let mut removed = 0;
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_big = max_bytes.is_some_and(|m| self.bytes() > m);
            let too_old =
                max_age_ms.is_some_and(|age| oldest.last_ts < now_ms.saturating_sub(age as i64));
            if !(too_big || too_old) {
                break;
            }
            fs::remove_file(&oldest.path)?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }
}

/// How much of a stream to keep (`x-max-length-bytes`, `x-max-age`); whole
/// segments are dropped from the front after an append.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age_ms: Option<u64>,
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// A stream's log as the broker shares it: the storage thread appends
/// (`Op::AppendStream`), readers read, both off the async workers.
pub struct SharedLog {
    log: RwLock<StreamLog>,
    retention: Retention,
    /// Told after each batch of appends (wakes the stream's readers).
    listener: OnceLock<Listener>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLog")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl SharedLog {
    pub fn open(dir: &Path, max_segment_bytes: u64, retention: Retention) -> io::Result<SharedLog> {
        Ok(SharedLog {
            log: RwLock::new(StreamLog::open(dir, max_segment_bytes)?),
            retention,
            listener: OnceLock::new(),
        })
    }

    fn read_log(&self) -> std::sync::RwLockReadGuard<'_, StreamLog> {
        self.log.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Call `f` after every batch of appends.
    pub fn on_append(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.listener.set(Box::new(f));
    }

    /// Read without holding the log's lock during the file I/O, so that a
    /// slow read never holds up the storage thread's appends (and with them
    /// every other write of the broker).
    pub fn read(&self, from: u64, max_records: usize, max_bytes: u64) -> io::Result<Vec<Entry>> {
        let mut tries = 0;
        loop {
            let plan = self.read_log().plan(from);
            match plan.read(max_records, max_bytes) {
                // Retention removed the segment between the plan and the
                // read: plan again from what is left.
                Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 3 => tries += 1,
                other => return other,
            }
        }
    }

    pub fn first_offset(&self) -> u64 {
        self.read_log().first_offset()
    }

    pub fn next_offset(&self) -> u64 {
        self.read_log().next_offset()
    }

    pub fn len(&self) -> u64 {
        self.read_log().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn offset_at(&self, ts: i64) -> io::Result<u64> {
        self.read_log().offset_at(ts)
    }

    pub fn dir(&self) -> PathBuf {
        self.read_log().dir.clone()
    }
}

/// Encoded records with their timestamps, waiting to be appended.
type Records = Vec<(i64, Vec<u8>)>;

/// The stream appends and drops of one batch of the storage thread.
#[derive(Default)]
pub(crate) struct Appends {
    pending: Vec<(Arc<SharedLog>, Records)>,
    drops: Vec<Arc<SharedLog>>,
}

impl Appends {
    pub(crate) fn add(&mut self, log: &Arc<SharedLog>, ts: i64, record: Vec<u8>) {
        match self.pending.iter_mut().find(|(l, _)| Arc::ptr_eq(l, log)) {
            Some((_, records)) => records.push((ts, record)),
            None => self.pending.push((log.clone(), vec![(ts, record)])),
        }
    }

    pub(crate) fn drop_log(&mut self, log: Arc<SharedLog>) {
        self.drops.push(log);
    }

    /// Append each log's records (one write and fsync per log), apply
    /// retention, tell the readers, remove dropped logs. False if an append failed.
    pub(crate) fn write(&mut self) -> bool {
        let mut ok = true;
        for (shared, records) in self.pending.drain(..) {
            let batch: Vec<(i64, &[u8])> =
                records.iter().map(|(t, r)| (*t, r.as_slice())).collect();
            let mut log = shared.log.write().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = log.append(&batch) {
                tracing::error!(dir = %log.dir.display(), "cannot append to a stream: {e}; its publishers are nacked");
                ok = false;
            } else if shared.retention != Retention::default() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                if let Err(e) =
                    log.retain(shared.retention.max_bytes, shared.retention.max_age_ms, now)
                {
                    tracing::warn!(dir = %log.dir.display(), "cannot apply a stream's retention: {e}");
                }
            }
            drop(log);
            if let Some(f) = shared.listener.get() {
                f();
            }
        }
        for shared in self.drops.drain(..) {
            let dir = shared.dir();
            if let Err(e) = fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "cannot remove a deleted stream's log: {e}");
            }
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u64, from: u64) -> Vec<(i64, Vec<u8>)> {
        (from..from + n)
            .map(|i| (i as i64 * 10, format!("record {i}").into_bytes()))
            .collect()
    }

    fn append(log: &mut StreamLog, rs: &[(i64, Vec<u8>)]) -> u64 {
        let batch: Vec<(i64, &[u8])> = rs.iter().map(|(t, d)| (*t, d.as_slice())).collect();
        log.append(&batch).expect("append")
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.data).into_owned())
            .collect()
    }

    #[test]
    fn records_keep_their_offsets_across_segments_and_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = StreamLog::open(dir.path(), 300).expect("open");
        assert_eq!(append(&mut log, &records(10, 0)), 0);
        assert_eq!(append(&mut log, &records(15, 10)), 10);
        assert!(log.segments.len() >= 3, "small segments roll");
        let all = log.read(0, 100, u64::MAX).expect("read");
        assert_eq!(all.len(), 25);
        assert!(all.iter().enumerate().all(|(i, e)| e.offset == i as u64));
        assert_eq!(
            bodies(&log.read(17, 3, u64::MAX).expect("read")),
            ["record 17", "record 18", "record 19"]
        );
        drop(log);
        let mut log = StreamLog::open(dir.path(), 300).expect("reopen");
        assert_eq!((log.first_offset(), log.next_offset()), (0, 25));
        assert_eq!(append(&mut log, &records(1, 25)), 25);
        assert_eq!(
            bodies(&log.read(24, 10, u64::MAX).expect("read")),
            ["record 24", "record 25"]
        );
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_off_and_appends_continue() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = StreamLog::open(dir.path(), 1 << 20).expect("open");
        append(&mut log, &records(5, 0));
        let path = log.last().path.clone();
        drop(log);
        // A crash in the middle of the next record.
        let mut f = OpenOptions::new().append(true).open(&path).expect("file");
        let mut half = Vec::new();
        encode_record(&mut half, 5, 50, b"never finished");
        f.write_all(&half[..half.len() - 3]).expect("write");
        drop(f);
        let mut log = StreamLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(log.next_offset(), 5);
        append(&mut log, &records(1, 5));
        assert_eq!(
            bodies(&log.read(5, 1, u64::MAX).expect("read")),
            ["record 5"]
        );
        drop(log);
        // A flipped bit in the last record.
        let mut bytes = fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - 2] ^= 0x40;
        fs::write(&path, bytes).expect("write");
        let log = StreamLog::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(log.next_offset(), 5, "the corrupt record is gone");
    }

    #[test]
    fn corruption_before_the_last_segment_stops_the_open() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = StreamLog::open(dir.path(), 200).expect("open");
        append(&mut log, &records(20, 0));
        let first = log.segments[0].path.clone();
        drop(log);
        let mut bytes = fs::read(&first).expect("read");
        bytes[30] ^= 1;
        fs::write(&first, bytes).expect("write");
        let err = StreamLog::open(dir.path(), 200).expect_err("refused");
        assert!(err.to_string().contains("bad record"), "{err}");
    }

    #[test]
    fn a_huge_length_field_is_not_allocated() {
        let dir = tempfile::tempdir().expect("dir");
        let path = segment_path(dir.path(), 0);
        let mut rec = Vec::new();
        encode_record(&mut rec, 0, 0, b"x");
        rec[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        fs::write(&path, rec).expect("write");
        let log = StreamLog::open(dir.path(), 1 << 20).expect("open cuts it");
        assert!(log.is_empty());
    }

    #[test]
    fn retention_drops_whole_old_segments_but_never_the_active_one() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = StreamLog::open(dir.path(), 200).expect("open");
        append(&mut log, &records(40, 0));
        let segments = log.segments.len();
        let total = log.bytes();
        assert_eq!(log.retain(Some(total), None, 0).expect("retain"), 0);
        let removed = log.retain(Some(total / 2), None, 0).expect("retain");
        assert!(removed > 0 && log.bytes() <= total / 2);
        assert!(log.first_offset() > 0);
        let from_start = log.read(0, 1, u64::MAX).expect("read");
        assert_eq!(
            from_start[0].offset,
            log.first_offset(),
            "an old offset reads from the first kept"
        );
        // By age: records are 10 ms apart; everything older than 100 ms at t=390.
        let removed = log.retain(None, Some(100), 390).expect("retain");
        assert!(removed > 0);
        assert!(log.segments.len() < segments);
        assert!(log.retain(Some(0), None, 0).is_ok());
        assert_eq!(log.segments.len(), 1, "the active segment stays");
        assert_eq!(log.next_offset(), 40);
    }

    #[test]
    fn a_timestamp_finds_the_first_record_at_or_after_it() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = StreamLog::open(dir.path(), 250).expect("open");
        append(&mut log, &records(30, 0));
        assert_eq!(log.offset_at(-5).expect("offset"), 0);
        assert_eq!(log.offset_at(95).expect("offset"), 10);
        assert_eq!(log.offset_at(100).expect("offset"), 10);
        assert_eq!(log.offset_at(10_000).expect("offset"), 30);
    }

    #[test]
    fn a_read_planned_before_retention_reports_the_removed_segment() {
        let dir = tempfile::tempdir().expect("dir");
        let mut log = StreamLog::open(dir.path(), 200).expect("open");
        append(&mut log, &records(40, 0));
        let plan = log.plan(0);
        assert!(log.retain(Some(0), None, 0).expect("retain") > 0);
        let err = plan
            .read(10, u64::MAX)
            .expect_err("its first segment is gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // Planned again, the read starts at the first record still kept.
        let entries = log.read(0, 10, u64::MAX).expect("read");
        assert_eq!(entries[0].offset, log.first_offset());
    }
}
