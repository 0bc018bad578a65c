//! One segment of a partition: `<base>.log` (batches back to back),
//! `<base>.index` (sparse offset index) and `<base>.timeindex` (time
//! index). Formats: docs/segment.md.
//!
//! The indexes are derived data: they are written unsynced as batches are
//! appended, fsynced when the segment is flushed or sealed, checked when a
//! sealed segment is opened (rebuilt from the log if missing or
//! inconsistent) and always rebuilt for segments recovery scans. A sealed
//! segment's indexes are memory-mapped where the backend can map.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use strata_io::{AppendWriter, FileRef, Mapped, OpenOptions, Storage};

use crate::batch::{Batch, BatchHeader, Parsed, HEADER_LEN, LOG_OVERHEAD};
use crate::{Error, Result};

mod read;

pub use read::{epoch_at, ReadSource};

/// Bytes of an offset index entry: relative offset u32, position u32 (BE).
pub const INDEX_ENTRY: usize = 8;
/// Bytes of a time index entry: timestamp i64, relative offset u32 (BE).
pub const TIME_ENTRY: usize = 12;

/// File name of a segment's log, index or time index.
pub fn file_name(base: u64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

/// The base offset a segment file name carries, if it is one.
pub fn parse_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// Index bytes: owned and growing for the active segment, mapped (or read)
/// for a sealed one.
enum IndexBytes {
    Owned(Vec<u8>),
    Mapped(Mapped),
}

impl IndexBytes {
    fn bytes(&self) -> &[u8] {
        match self {
            IndexBytes::Owned(v) => v,
            IndexBytes::Mapped(m) => m,
        }
    }
}

/// Where an index is kept.
struct Index {
    path: PathBuf,
    file: FileRef,
    bytes: IndexBytes,
    /// Bytes written to the file (the owned form may run ahead only
    /// between `push` and the write that follows it).
    written: usize,
}

impl Index {
    fn entries(&self) -> &[u8] {
        self.bytes.bytes()
    }

    fn push(&mut self, entry: &[u8]) -> Result<()> {
        if let IndexBytes::Mapped(m) = &self.bytes {
            self.bytes = IndexBytes::Owned(m.to_vec());
        }
        if let IndexBytes::Owned(v) = &mut self.bytes {
            v.extend_from_slice(entry);
        }
        self.file.write_at(entry, self.written as u64)?;
        self.written += entry.len();
        Ok(())
    }
}

/// Options a segment needs.
#[derive(Clone, Copy, Debug)]
pub struct SegmentOptions {
    /// Bytes of log between offset index entries.
    pub index_interval_bytes: u64,
    /// Largest index file; a full index rolls the segment.
    pub max_index_bytes: u64,
    /// A compacted topic's segment: its batches may hold fewer records
    /// than offsets (the cleaner removed some).
    pub compacted: bool,
    /// Append with `O_DIRECT` (through [`AppendWriter`], the WAL's path):
    /// the page cache is bypassed for writes, and the active segment's file
    /// ends on a page boundary, zero-padded, until it is sealed.
    pub direct_io: bool,
    /// With `direct_io`: an append returns once its bytes are in the
    /// writer's buffer, and full 1 MiB chunks are written while the next
    /// fills, up to 4 in flight. Unflushed appends then live in this
    /// process until written: a process crash can lose them (up to 4 MiB
    /// per active segment), as RocksDB's `manual_wal_flush` can; without
    /// it an append returns once written, and only a power cut loses
    /// unflushed ones, as with buffered writes.
    pub write_behind: bool,
    /// With `direct_io`: keep the next 8 MiB of the active segment written
    /// as zeros ahead of the appends (up to `max_bytes`), so that synced
    /// appends overwrite allocated blocks (`log.preallocate`).
    pub preallocate: bool,
    /// `segment.bytes`: how far preallocation may go.
    pub max_bytes: u64,
}

/// Checks, outside the batch CRC, that a batch sits where it should: its
/// base offset where the previous batch ended (or at the segment base),
/// as many records as offsets unless compacted, and a leader epoch no
/// smaller than the previous batch's. These fields are not covered by
/// Kafka's CRC (a leader stamps them in place), so their position is
/// what protects them. `prev` is (next offset, epoch) of the batch before.
fn check_position(
    h: &BatchHeader,
    prev: (u64, i32),
    compacted: bool,
) -> std::result::Result<(), &'static str> {
    if h.base_offset != prev.0 {
        return Err("batch base offset does not follow the batch before it");
    }
    if !compacted && u64::from(h.record_count) != u64::from(h.last_offset_delta) + 1 {
        return Err("batch holds fewer records than offsets in a segment never compacted");
    }
    if h.leader_epoch < prev.1 {
        return Err("batch leader epoch smaller than the batch before it");
    }
    Ok(())
}

/// A segment.
pub struct Segment {
    base: u64,
    dir: PathBuf,
    log: FileRef,
    /// Valid bytes of the log.
    size: u64,
    /// Offset after the last batch (`base` when empty).
    next_offset: u64,
    index: Index,
    time_index: Index,
    bytes_since_entry: u64,
    /// Largest record timestamp and the offset of the batch holding it.
    max_timestamp: i64,
    /// When the first batch was appended (ms), for time-based rolls.
    first_batch_time: Option<i64>,
    opts: SegmentOptions,
    /// A sealed segment's log, memory-mapped where the backend can: reads
    /// hand out slices of it (zero-copy `Bytes` that keep the map alive).
    /// The file is never shrunk while mapped (see `truncate_at`).
    map: Option<Bytes>,
    /// Log bytes handed to writeback so far.
    written_back: u64,
    /// The append path of the active segment, opened at its first append
    /// (with `direct_io`, through a second, O_DIRECT handle of the log,
    /// writing behind if asked: `log` stays the buffered handle readers
    /// use, and a read drains the writer first). In a mutex so that readers, who hold
    /// the segment shared, can drain it.
    writer: parking_lot::Mutex<Option<AppendWriter>>,
}

/// Log bytes between writeback hints.
const WRITEBACK_EVERY: u64 = 1 << 20;

/// Chunk writes a direct segment keeps in flight with `write_behind`
/// (4 x 1 MiB buffers).
const WRITE_BEHIND: usize = 4;

/// Zeros a direct segment's writer keeps prepared ahead of its appends
/// with `preallocate`.
const PREPARE_AHEAD: u64 = 8 << 20;

/// Zeros after the last batch of a direct segment: under one page of
/// padding, plus up to one and a half `PREPARE_AHEAD` and a 1 MiB chunk
/// of preallocation.
const DIRECT_PAD_MAX: u64 = 2 * PREPARE_AHEAD + (2 << 20);

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base", &self.base)
            .field("size", &self.size)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// What a scan of a segment's log found.
pub struct Scan {
    /// Bytes of whole valid batches from the start.
    pub valid_bytes: u64,
    /// Where and why the scan stopped early, if it did (`None`: the file
    /// ended cleanly at a batch boundary).
    pub stop: Option<(u64, &'static str)>,
    /// The batches' headers, in order.
    pub headers: Vec<(u64, BatchHeader)>,
}

impl Segment {
    /// Creates a new empty segment starting at `base` and syncs its
    /// directory (a new file counts only once its name is durable).
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        opts: SegmentOptions,
    ) -> Result<Segment> {
        let log = storage.open(&dir.join(file_name(base, "log")), OpenOptions::create_new())?;
        let index = new_index(storage, dir, base, "index")?;
        let time_index = new_index(storage, dir, base, "timeindex")?;
        storage.sync_dir(dir)?;
        Ok(Segment {
            base,
            dir: dir.to_path_buf(),
            log,
            size: 0,
            next_offset: base,
            index,
            time_index,
            bytes_since_entry: 0,
            max_timestamp: i64::MIN,
            first_batch_time: None,
            opts,
            map: None,
            written_back: 0,
            writer: parking_lot::Mutex::new(None),
        })
    }

    /// Opens an existing segment. With `scan`, every batch is read and
    /// checked, a bad or torn tail is cut off (the file is truncated and
    /// synced) and the indexes are rebuilt; `Scan::stop` says what was cut.
    /// Without, the segment is trusted up to its length and its indexes
    /// are checked and rebuilt only if missing or inconsistent; `Err` if a
    /// rebuild meets damage (the data was flushed: it is reported, not cut).
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        opts: SegmentOptions,
        scan: bool,
    ) -> Result<(Segment, Option<(u64, &'static str)>)> {
        let log_path = dir.join(file_name(base, "log"));
        let log = storage.open(&log_path, OpenOptions::existing())?;
        let len = log.len()?;
        let mut seg = Segment {
            base,
            dir: dir.to_path_buf(),
            log,
            size: len,
            next_offset: base,
            index: open_index(storage, dir, base, "index")?,
            time_index: open_index(storage, dir, base, "timeindex")?,
            bytes_since_entry: 0,
            max_timestamp: i64::MIN,
            first_batch_time: None,
            opts,
            map: None,
            written_back: len,
            writer: parking_lot::Mutex::new(None),
        };
        if !scan && seg.indexes_look_sane() {
            seg.load_tail_facts()?;
            return Ok((seg, None));
        }
        let s = seg.scan_log(0, len, base)?;
        if s.stop.is_some() && !scan {
            let (at, why) = s.stop.unwrap_or((0, ""));
            return Err(Error::corruption(seg.log.path(), at, why));
        }
        if s.valid_bytes < len {
            seg.log.set_len(s.valid_bytes)?;
            seg.log.sync_data()?;
        }
        seg.size = s.valid_bytes;
        // Writeback starts from the new end: past it lies nothing now.
        seg.written_back = s.valid_bytes;
        seg.rebuild_indexes(storage, &s.headers)?;
        Ok((seg, s.stop))
    }

    /// Reads the log from `from` to `to` and checks every batch, each at
    /// its position: the first must start at `first_offset` (the segment
    /// base when `from` is 0, an index entry's offset otherwise), each
    /// next one where the one before ended.
    pub fn scan_log(&self, from: u64, to: u64, first_offset: u64) -> Result<Scan> {
        let mut scan = self.scan_batches(from, to, first_offset)?;
        if let Some((at, _)) = scan.stop {
            if self.opts.direct_io && to - at < DIRECT_PAD_MAX && self.zeros(at, to)? {
                // The zero padding of the last direct write to a segment
                // that was not sealed: the end, not damage.
                scan.stop = None;
            }
        }
        Ok(scan)
    }

    /// Whether the log's bytes from `from` to `to` are all zero.
    fn zeros(&self, from: u64, to: u64) -> Result<bool> {
        let mut buf = vec![0xffu8; (to - from) as usize];
        let got = self.log.read_full_at(&mut buf, from)?;
        Ok(got == buf.len() && buf.iter().all(|&b| b == 0))
    }

    fn scan_batches(&self, from: u64, to: u64, first_offset: u64) -> Result<Scan> {
        const CHUNK: u64 = 1 << 20;
        let mut headers = Vec::new();
        let mut pos = from;
        // The bytes from `pos` on that have been read.
        let mut buf = Bytes::new();
        let stop = |pos: u64, why: &'static str, headers: Vec<(u64, BatchHeader)>| Scan {
            valid_bytes: pos,
            stop: Some((pos, why)),
            headers,
        };
        let mut prev = (first_offset, 0i32);
        while pos < to {
            match Batch::parse(&buf) {
                Parsed::Batch(b) => {
                    if let Err(why) = check_position(&b.header, prev, self.opts.compacted) {
                        return Ok(stop(pos, why, headers));
                    }
                    let n = b.bytes.len();
                    prev = (b.header.next_offset(), b.header.leader_epoch);
                    headers.push((pos, b.header));
                    pos += n as u64;
                    buf = buf.slice(n..);
                }
                Parsed::Incomplete => {
                    if pos + buf.len() as u64 >= to {
                        return Ok(stop(pos, "batch cut short by the end of the file", headers));
                    }
                    let need = if buf.len() >= LOG_OVERHEAD {
                        LOG_OVERHEAD as u64
                            + u64::from(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]))
                    } else {
                        0
                    };
                    let n = need.max(CHUNK).min(to - pos) as usize;
                    let mut fresh = vec![0u8; n];
                    let got = self.log.read_full_at(&mut fresh, pos)?;
                    if got <= buf.len() {
                        return Ok(stop(pos, "batch cut short by the end of the file", headers));
                    }
                    fresh.truncate(got);
                    buf = Bytes::from(fresh);
                }
                Parsed::Invalid(why) => return Ok(stop(pos, why, headers)),
            }
        }
        Ok(Scan {
            valid_bytes: pos,
            stop: None,
            headers,
        })
    }

    fn indexes_look_sane(&self) -> bool {
        let idx = self.index.entries();
        let tix = self.time_index.entries();
        if !idx.len().is_multiple_of(INDEX_ENTRY) || !tix.len().is_multiple_of(TIME_ENTRY) {
            return false;
        }
        let mut last = (None::<u32>, None::<u32>);
        for e in idx.chunks_exact(INDEX_ENTRY) {
            let (rel, pos) = index_entry(e);
            if last.0.is_some_and(|r| rel <= r) || last.1.is_some_and(|p| pos <= p) {
                return false;
            }
            if u64::from(pos) >= self.size {
                return false;
            }
            last = (Some(rel), Some(pos));
        }
        let mut last_ts = i64::MIN;
        let mut last_rel = None::<u32>;
        for e in tix.chunks_exact(TIME_ENTRY) {
            let (ts, rel) = time_entry(e);
            if ts < last_ts || last_rel.is_some_and(|r| rel < r) {
                return false;
            }
            last_ts = ts;
            last_rel = Some(rel);
        }
        // An empty index for a non-empty log is fine only if the log is
        // shorter than one index interval (the first entry is at byte 0,
        // so a non-empty log always has one).
        !(self.size > 0 && idx.is_empty())
    }

    /// For a trusted sealed segment: the next offset and the max
    /// timestamp, from the last index entry on.
    fn load_tail_facts(&mut self) -> Result<()> {
        let (rel, start) = self
            .index
            .entries()
            .chunks_exact(INDEX_ENTRY)
            .last()
            .map_or((0, 0), index_entry);
        let s = self.scan_log(u64::from(start), self.size, self.base + u64::from(rel))?;
        if let Some((at, why)) = s.stop {
            return Err(Error::corruption(self.log.path(), at, why));
        }
        if let Some((_, h)) = s.headers.last() {
            self.next_offset = h.next_offset();
        }
        self.max_timestamp = self
            .time_index
            .entries()
            .chunks_exact(TIME_ENTRY)
            .last()
            .map_or(i64::MIN, |e| time_entry(e).0);
        for (_, h) in &s.headers {
            self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        }
        if self.first_batch_time.is_none() {
            self.first_batch_time = s.headers.first().map(|(_, h)| h.base_timestamp);
        }
        Ok(())
    }

    /// Writes fresh indexes for the batches `headers` (all of the log).
    fn rebuild_indexes(
        &mut self,
        storage: &dyn Storage,
        headers: &[(u64, BatchHeader)],
    ) -> Result<()> {
        for (ext, ix) in [
            ("index", &mut self.index),
            ("timeindex", &mut self.time_index),
        ] {
            let path = self.dir.join(file_name(self.base, ext));
            let tmp = self.dir.join(file_name(self.base, &format!("{ext}.tmp")));
            let f = storage.open(&tmp, OpenOptions::create())?;
            f.set_len(0)?;
            f.sync_data()?;
            storage.rename(&tmp, &path)?;
            storage.sync_dir(&self.dir)?;
            *ix = Index {
                path,
                file: storage.open(
                    &self.dir.join(file_name(self.base, ext)),
                    OpenOptions::existing(),
                )?,
                bytes: IndexBytes::Owned(Vec::new()),
                written: 0,
            };
        }
        self.next_offset = self.base;
        self.max_timestamp = i64::MIN;
        self.bytes_since_entry = 0;
        self.first_batch_time = None;
        for (pos, h) in headers {
            self.note_batch(*pos, h)?;
        }
        Ok(())
    }

    /// Index bookkeeping for a batch at `pos`.
    fn note_batch(&mut self, pos: u64, h: &BatchHeader) -> Result<()> {
        let rel = (h.base_offset.max(self.base) - self.base) as u32;
        if pos == 0 || self.bytes_since_entry >= self.opts.index_interval_bytes {
            let mut e = [0u8; INDEX_ENTRY];
            e[..4].copy_from_slice(&rel.to_be_bytes());
            e[4..].copy_from_slice(&(pos as u32).to_be_bytes());
            self.index.push(&e)?;
            if h.max_timestamp > self.time_index_last_ts() {
                let mut t = [0u8; TIME_ENTRY];
                t[..8].copy_from_slice(&h.max_timestamp.to_be_bytes());
                t[8..].copy_from_slice(&rel.to_be_bytes());
                self.time_index.push(&t)?;
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += h.total_len() as u64;
        self.next_offset = h.next_offset();
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
        if self.first_batch_time.is_none() {
            self.first_batch_time = Some(h.base_timestamp);
        }
        Ok(())
    }

    fn time_index_last_ts(&self) -> i64 {
        self.time_index
            .entries()
            .chunks_exact(TIME_ENTRY)
            .last()
            .map_or(i64::MIN, |e| time_entry(e).0)
    }

    /// Appends a batch (its offsets already assigned). Not durable until
    /// [`Segment::flush`].
    /// `storage` opens the O_DIRECT handle at the first append of a
    /// `direct_io` segment.
    pub fn append(&mut self, storage: &dyn Storage, b: &Batch) -> Result<()> {
        let size = self.size;
        let direct = self.opts.direct_io;
        let slot = self.writer.get_mut();
        let writer = match slot {
            Some(w) => w,
            None => {
                let file = if direct {
                    // A second handle: the writer's. Readers keep the
                    // buffered `log` (a direct write drops the pages it
                    // covers from the cache, so they never read stale
                    // bytes).
                    storage.open(self.log.path(), OpenOptions::existing().direct(true))?
                } else {
                    self.log.clone()
                };
                let depth = if self.opts.write_behind {
                    WRITE_BEHIND
                } else {
                    1
                };
                let mut w = AppendWriter::with_depth(file, size, depth)?;
                if self.opts.preallocate {
                    w.prepare_ahead(PREPARE_AHEAD, self.opts.max_bytes);
                }
                slot.insert(w)
            }
        };
        writer.append(&b.bytes, 0, None)?;
        let pos = self.size;
        self.size += b.bytes.len() as u64;
        // Start writing back every MiB, so the fsync at a roll (in some
        // appender's path) finds little dirty data and the tail stays short.
        // Direct writes leave nothing dirty.
        if !direct && self.size.saturating_sub(self.written_back) >= WRITEBACK_EVERY {
            self.log
                .start_writeback(self.written_back, self.size - self.written_back)?;
            self.written_back = self.size;
        }
        self.note_batch(pos, &b.header)
    }

    /// The log file, for a flush: fsyncing it makes the segment's batches
    /// durable. The indexes are not synced then: recovery rebuilds them for
    /// every segment it scans (the active one always), so a flush costs one
    /// fdatasync.
    pub fn log_file(&self) -> Result<FileRef> {
        self.settle()?;
        Ok(self.log.clone())
    }

    /// Writes what the append path holds back (write-behind), so that the
    /// file has every appended byte: before a read or a flush.
    fn settle(&self) -> Result<()> {
        if !self.opts.write_behind {
            // Every append was written before it returned: nothing held.
            return Ok(());
        }
        let mut slot = self.writer.lock();
        match slot.as_mut() {
            Some(w) if w.has_pending() => Ok(w.drain()?),
            _ => Ok(()),
        }
    }

    /// Maps a sealed segment's log for zero-copy reads.
    ///
    /// Safe only under the rule of [`strata_io::File::map_readonly`]: a
    /// mapped file is never shrunk or rewritten while any map of it (or a
    /// `Bytes` slice handed to a reader) lives, or readers would fault or
    /// see bytes change. This module keeps the rule in four places: only
    /// sealed segments are mapped, and nothing appends to a sealed one;
    /// [`Segment::truncate_at`] writes the kept prefix of a mapped log to a
    /// new file and renames it over the old; indexes are rebuilt into new
    /// files renamed into place (`rebuild_indexes`); the cleaner and
    /// retention replace or unlink whole files, and an unlinked inode lives
    /// on for the maps that hold it.
    pub fn map_log(&mut self) -> Result<()> {
        if self.map.is_none() {
            self.map = self.log.map_readonly(self.size)?.map(Bytes::from_owner);
        }
        Ok(())
    }

    /// Seals the segment: makes the log and its indexes durable (a sealed
    /// segment's indexes are trusted at open if consistent) and maps the
    /// log and the indexes read-only.
    pub fn seal(&mut self) -> Result<()> {
        if let Some(mut w) = self.writer.get_mut().take() {
            w.drain()?;
            if w.file().alignment().is_some() && self.log.len()? > self.size {
                // The zero padding of the last direct write goes: a sealed
                // segment is trusted up to its length at the next open.
                self.log.set_len(self.size)?;
            }
        }
        self.log.sync_data()?;
        self.index.file.sync_data()?;
        self.time_index.file.sync_data()?;
        self.map_log()?;
        for ix in [&mut self.index, &mut self.time_index] {
            if let Some(m) = ix.file.map_readonly(ix.written as u64)? {
                ix.bytes = IndexBytes::Mapped(m);
            }
        }
        Ok(())
    }

    /// The position of the first batch that may hold `offset` (from the
    /// index: the last entry at or below it).
    /// The last index entry at or below `offset`: (its offset, its
    /// position); the segment's start if none.
    fn lookup(&self, offset: u64) -> (u64, u64) {
        let rel = offset.saturating_sub(self.base).min(u64::from(u32::MAX)) as u32;
        let idx = self.index.entries();
        let n = idx.len() / INDEX_ENTRY;
        let (mut lo, mut hi) = (0usize, n);
        // Last entry with relative offset <= rel.
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (r, _) = index_entry(&idx[mid * INDEX_ENTRY..(mid + 1) * INDEX_ENTRY]);
            if r <= rel {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            (self.base, 0)
        } else {
            let (rel, pos) = index_entry(&idx[(lo - 1) * INDEX_ENTRY..lo * INDEX_ENTRY]);
            (self.base + u64::from(rel), u64::from(pos))
        }
    }

    /// Position of the first batch whose last offset is at least `offset`
    /// (`None` if none in this segment), with its header.
    /// Each header on the way must start where the one before ended (the
    /// first at the index entry's offset): base offsets are outside the
    /// batch CRC.
    pub fn find(&self, offset: u64) -> Result<Option<(u64, BatchHeader)>> {
        self.settle()?;
        let (mut expect, mut pos) = self.lookup(offset);
        let mut hdr = [0u8; HEADER_LEN];
        while pos < self.size {
            let got = self.log.read_full_at(&mut hdr, pos)?;
            if got < HEADER_LEN {
                return Err(Error::corruption(
                    self.log.path(),
                    pos,
                    "batch header cut short",
                ));
            }
            let h =
                BatchHeader::parse(&hdr).map_err(|r| Error::corruption(self.log.path(), pos, r))?;
            if h.base_offset != expect {
                return Err(Error::corruption(
                    self.log.path(),
                    pos,
                    format!(
                        "batch base offset {} where {expect} was due (the batch before it or \
                         the offset index says so)",
                        h.base_offset
                    ),
                ));
            }
            expect = h.next_offset();
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches from position `pos`: at most `max_bytes` (but at
    /// least one batch), only batches whose last offset is below `upper`.
    /// Each batch is checked; the batches share one buffer.
    pub fn read_from(&self, pos: u64, max_bytes: usize, upper: u64) -> Result<Vec<Batch>> {
        self.source()?.read_from(pos, None, max_bytes, upper, None)
    }

    /// What a reader needs to read this segment's batches without holding
    /// the segment: its file, its map and its size now. Appends only add
    /// bytes past that size; a truncation or replacement must be detected
    /// by the caller (the partition counts them).
    pub fn source(&self) -> Result<ReadSource> {
        self.settle()?;
        Ok(ReadSource {
            log: self.log.clone(),
            map: self.map.clone(),
            size: self.size,
            base: self.base,
            next_offset: self.next_offset,
            compacted: self.opts.compacted,
        })
    }

    /// Cuts the segment to the batches before position `pos` (rewriting
    /// the log into a new file if its indexes are mapped, so no map sees a
    /// shrinking file) and rebuilds its indexes; durable on return.
    pub fn truncate_at(&mut self, storage: &dyn Storage, pos: u64) -> Result<()> {
        // The next append opens a writer at the new end (re-reading its
        // partial page); what this one holds lands before the scan and
        // the cut.
        if let Some(mut w) = self.writer.get_mut().take() {
            w.drain()?;
        }
        let s = self.scan_log(0, pos, self.base)?;
        if let Some((at, why)) = s.stop {
            return Err(Error::corruption(self.log.path(), at, why));
        }
        match self.map.take() {
            // Mapped: readers may hold slices of the map, and shrinking the
            // file under them would fault. The kept prefix goes to a new
            // file that replaces the old one; the old inode lives on for them.
            Some(m) => {
                let path = self.log.path().to_path_buf();
                let tmp = self.dir.join(file_name(self.base, "log.tmp"));
                let f = storage.open(&tmp, OpenOptions::create())?;
                f.set_len(0)?;
                f.write_at(&m[..pos as usize], 0)?;
                f.sync_data()?;
                drop(f);
                storage.rename(&tmp, &path)?;
                storage.sync_dir(&self.dir)?;
                self.log = storage.open(&path, OpenOptions::existing())?;
            }
            None => {
                self.log.set_len(pos)?;
                self.log.sync_data()?;
            }
        }
        self.size = pos;
        self.written_back = self.written_back.min(pos);
        self.rebuild_indexes(storage, &s.headers)?;
        self.index.file.sync_data()?;
        self.time_index.file.sync_data()?;
        Ok(())
    }

    /// Base offset.
    pub fn base(&self) -> u64 {
        self.base
    }
    /// Next offset.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
    /// Bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Largest timestamp (`i64::MIN` when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// First batch's timestamp.
    pub fn first_batch_time(&self) -> Option<i64> {
        self.first_batch_time
    }
    /// Whether the offset index is full.
    pub fn index_full(&self) -> bool {
        (self.index.written + INDEX_ENTRY) as u64 > self.opts.max_index_bytes
            || (self.time_index.written + TIME_ENTRY) as u64 > self.opts.max_index_bytes
    }
    /// Log file path.
    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    /// The position from which batches may hold a timestamp at or after
    /// `ts` (time index: the entry before the first one reaching `ts`).
    pub fn time_lookup(&self, ts: i64) -> u64 {
        let tix = self.time_index.entries();
        // Timestamps never decrease along the index: the entries below `ts`
        // are a prefix.
        let entry = |i: usize| time_entry(&tix[i * TIME_ENTRY..(i + 1) * TIME_ENTRY]);
        let (mut lo, mut hi) = (0usize, tix.len() / TIME_ENTRY);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if entry(mid).0 < ts {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let below = lo;
        match below.checked_sub(1) {
            Some(i) => self.lookup(self.base + u64::from(entry(i).1)).1,
            None => 0,
        }
    }

    /// Deletes the segment's files (the caller syncs the directory).
    pub fn delete(self, storage: &dyn Storage) -> Result<()> {
        for ext in ["log", "index", "timeindex"] {
            let p = self.dir.join(file_name(self.base, ext));
            match storage.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Paths of the index files (for tests and tools).
    pub fn index_paths(&self) -> (PathBuf, PathBuf) {
        (self.index.path.clone(), self.time_index.path.clone())
    }
}

fn index_entry(e: &[u8]) -> (u32, u32) {
    (
        u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
    )
}

fn time_entry(e: &[u8]) -> (i64, u32) {
    let mut t = [0u8; 8];
    t.copy_from_slice(&e[..8]);
    (
        i64::from_be_bytes(t),
        u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
    )
}

fn new_index(storage: &dyn Storage, dir: &Path, base: u64, ext: &str) -> Result<Index> {
    let path = dir.join(file_name(base, ext));
    let file = storage.open(&path, OpenOptions::create())?;
    file.set_len(0)?;
    Ok(Index {
        path,
        file,
        bytes: IndexBytes::Owned(Vec::new()),
        written: 0,
    })
}

/// Opens an index as found; a missing one reads as empty (and the segment
/// then fails the sanity check and is rebuilt).
fn open_index(storage: &dyn Storage, dir: &Path, base: u64, ext: &str) -> Result<Index> {
    let path = dir.join(file_name(base, ext));
    let file: FileRef = match storage.open(&path, OpenOptions::existing()) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => storage.open(&path, OpenOptions::create())?,
        Err(e) => return Err(e.into()),
    };
    let len = file.len()?;
    let bytes = match file.map_readonly(len)? {
        Some(m) => IndexBytes::Mapped(m),
        None => IndexBytes::Owned(file.read_all()?),
    };
    Ok(Index {
        path,
        file,
        bytes,
        written: len as usize,
    })
}
