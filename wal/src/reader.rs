//! Recovery: reads every segment of a WAL directory in order, replays the
//! records, and decides what each kind of damage means under the chosen
//! [`RecoveryMode`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use strata_io::{OpenOptions, Storage};

use crate::format::{
    decode_entry, read_fragment, segment_tag, EntryHeader, FragmentRead, FragmentType,
    SegmentHeader, BLOCK_SIZE, FRAGMENT_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::segment::{list_segments, SegmentFile};
use crate::{Error, Lsn, Result};

/// What recovery does with a record it cannot read (RocksDB's WAL recovery
/// modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Default. Damage after the last durable record (writes a crash cut
    /// short or lost) is a torn tail and is cut off; damage to records that
    /// were durable is [`Error::Corruption`] naming file and offset.
    #[default]
    TolerateCorruptedTail,
    /// Any bad or incomplete record, even at the tail, is an error.
    AbsoluteConsistency,
    /// Stop at the first bad record and recover everything before it;
    /// later records and segments are dropped. Never fails on damage.
    PointInTime,
    /// Skip bad records and keep reading; the replayed LSNs may have gaps,
    /// each reported in [`Recovery::skipped`].
    SkipAnyCorruptedRecords,
}

impl std::str::FromStr for RecoveryMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tolerate-tail" | "tolerate_corrupted_tail" => Ok(RecoveryMode::TolerateCorruptedTail),
            "absolute" | "absolute_consistency" => Ok(RecoveryMode::AbsoluteConsistency),
            "point-in-time" | "point_in_time" => Ok(RecoveryMode::PointInTime),
            "skip" | "skip_any_corrupted_records" => Ok(RecoveryMode::SkipAnyCorruptedRecords),
            other => Err(Error::InvalidOption(format!(
                "unknown recovery mode {other:?}: expected tolerate-tail, absolute, point-in-time or skip"
            ))),
        }
    }
}

/// A place where recovery found damage or the end of the valid log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// What recovery found.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Segments that remain part of the log, oldest first.
    pub segments: Vec<SegmentFile>,
    /// Records replayed.
    pub records: u64,
    /// Highest LSN replayed (0 if none).
    pub last_lsn: Lsn,
    /// The LSN a writer continuing this log assigns next.
    pub next_lsn: Lsn,
    /// Where the log was cut because its tail was torn or, in point-in-time
    /// mode, damaged; `None` if it ended cleanly.
    pub truncated: Option<Damage>,
    /// Damaged stretches skipped (skip mode only).
    pub skipped: Vec<Damage>,
    /// Segment files that are no longer part of the log (after a
    /// point-in-time stop, or a last segment whose creation a crash cut
    /// short); a writer deletes them before writing.
    pub discarded: Vec<PathBuf>,
    /// Files kept for recycling.
    pub recycled: Vec<PathBuf>,
}

/// A complete entry found in a segment.
pub(crate) struct FoundEntry<'a> {
    pub offset: usize,
    pub next: usize,
    pub header: EntryHeader,
    pub payload: Cow<'a, [u8]>,
}

/// Why reading stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Eof,
    Zeros,
    Stale,
    Bad(&'static str),
}

impl Stop {
    fn describe(self) -> &'static str {
        match self {
            Stop::Eof => "end of file",
            Stop::Zeros => "unwritten (zero) bytes",
            Stop::Stale => "data of an earlier use of a recycled file",
            Stop::Bad(r) => r,
        }
    }

    fn is_clean_end(self) -> bool {
        matches!(self, Stop::Eof | Stop::Zeros | Stop::Stale)
    }
}

/// Reads the entry starting at `pos`: assembles its fragments and decodes
/// its header. Errors carry the offset to report.
pub(crate) fn read_entry(
    buf: &[u8],
    pos: usize,
    tag: u32,
) -> std::result::Result<FoundEntry<'_>, (usize, Stop)> {
    let mut p = pos;
    let mut start = pos;
    let mut assembled: Option<Vec<u8>> = None;
    loop {
        match read_fragment(buf, p, tag) {
            FragmentRead::Trailer { next } => {
                if assembled.is_none() {
                    start = next;
                }
                p = next;
            }
            FragmentRead::Fragment {
                kind,
                payload,
                next,
            } => match (&mut assembled, kind) {
                (None, FragmentType::Full) => return finish(start, next, Cow::Borrowed(payload)),
                (None, FragmentType::First) => {
                    assembled = Some(payload.to_vec());
                    p = next;
                }
                (None, _) => return Err((p, Stop::Bad("continuation fragment without a first"))),
                (Some(v), FragmentType::Middle) => {
                    v.extend_from_slice(payload);
                    p = next;
                }
                (Some(v), FragmentType::Last) => {
                    v.extend_from_slice(payload);
                    let v = std::mem::take(v);
                    return finish(start, next, Cow::Owned(v));
                }
                (Some(_), _) => {
                    return Err((start, Stop::Bad("entry interrupted by another entry")))
                }
            },
            FragmentRead::Eof if assembled.is_none() => return Err((p, Stop::Eof)),
            FragmentRead::Zeros if assembled.is_none() => return Err((p, Stop::Zeros)),
            FragmentRead::Stale if assembled.is_none() => return Err((p, Stop::Stale)),
            FragmentRead::Bad(r) if assembled.is_none() => return Err((p, Stop::Bad(r))),
            _ => return Err((start, Stop::Bad("entry cut short"))),
        }
    }
}

fn finish(
    start: usize,
    next: usize,
    payload: Cow<'_, [u8]>,
) -> std::result::Result<FoundEntry<'_>, (usize, Stop)> {
    match decode_entry(&payload) {
        Ok(d) => {
            let header = d.header;
            Ok(FoundEntry {
                offset: start,
                next,
                header,
                payload,
            })
        }
        Err(r) => Err((start, Stop::Bad(r))),
    }
}

/// The first complete, valid entry of this segment at or after `from`,
/// found by trying every byte offset (after damage, the next entry may
/// start anywhere).
pub(crate) fn find_entry_after(buf: &[u8], from: usize, tag: u32) -> Option<FoundEntry<'_>> {
    let tag_bytes = tag.to_le_bytes();
    let mut p = from;
    while p + FRAGMENT_HEADER_LEN <= buf.len() {
        // Jump to the next byte that could be a FULL or FIRST type byte:
        // preallocated segments are mostly zeros, scanned in bulk here.
        match buf
            .get(p + 6..)
            .and_then(|t| t.iter().position(|&b| b == 1 || b == 2))
        {
            Some(skip) => p += skip,
            None => return None,
        }
        if p + FRAGMENT_HEADER_LEN > buf.len() {
            return None;
        }
        let room = BLOCK_SIZE - p % BLOCK_SIZE;
        // Cheap filters first: a FULL or FIRST fragment of this segment.
        let plausible = room >= FRAGMENT_HEADER_LEN
            && matches!(buf.get(p + 6), Some(1) | Some(2))
            && buf.get(p + 7..p + 11) == Some(&tag_bytes[..]);
        if plausible {
            if let Ok(e) = read_entry(buf, p, tag) {
                return Some(e);
            }
        }
        p += 1;
    }
    None
}

/// Whether any valid entry of this segment at or after `from` says record
/// `want` had been made durable before it was written.
fn certifies(buf: &[u8], from: usize, tag: u32, want: Lsn) -> bool {
    let mut p = from;
    while let Some(e) = find_entry_after(buf, p, tag) {
        if e.header.synced_lsn >= want {
            return true;
        }
        p = e.next.max(e.offset + 1);
    }
    false
}

/// Whether any entry of the given segments vouches for record `want`.
fn later_segments_certify(storage: &dyn Storage, segs: &[SegmentFile], want: Lsn) -> Result<bool> {
    for s in segs {
        let bytes = read_segment(storage, &s.path)?;
        if certifies(&bytes, SEGMENT_HEADER_LEN, segment_tag(s.segno), want) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn corruption(path: &Path, offset: usize, reason: String) -> Error {
    Error::Corruption {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// Reads a whole segment file.
fn read_segment(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let f = storage.open(path, OpenOptions::existing())?;
    Ok(f.read_all()?)
}

/// Replays every record of the WAL in `dir` through `replay`, in LSN order,
/// and reports what it found. Nothing is modified; a missing directory is an
/// empty log.
pub fn recover(
    storage: &dyn Storage,
    dir: &Path,
    mode: RecoveryMode,
    mut replay: impl FnMut(Lsn, &[u8]) -> Result<()>,
) -> Result<Recovery> {
    if !storage.exists(dir)? {
        return Ok(Recovery {
            next_lsn: 1,
            ..Recovery::default()
        });
    }
    let listing = list_segments(storage, dir)?;
    let mut rec = Recovery {
        recycled: listing.recycled,
        // A next segment a crash caught half made holds nothing.
        discarded: listing.unprepared,
        next_lsn: 1,
        ..Recovery::default()
    };
    let mut segs = listing.segments;
    let mut headers: Vec<Option<SegmentHeader>> = Vec::with_capacity(segs.len());
    for s in &segs {
        headers.push(read_header(storage, &s.path, s.segno)?);
    }
    // A last segment with no valid header and no record of its own was cut
    // short while being created: it never held anything.
    if let (Some(last), Some(None)) = (segs.last(), headers.last()) {
        let bytes = read_segment(storage, &last.path)?;
        if find_entry_after(&bytes, SEGMENT_HEADER_LEN, segment_tag(last.segno)).is_none() {
            rec.discarded.push(last.path.clone());
            segs.pop();
            headers.pop();
        }
    }
    let mut next: Option<Lsn> = None;
    let n = segs.len();
    let mut i = 0;
    while i < n {
        let seg = &segs[i];
        let last = i + 1 == n;
        let tag = segment_tag(seg.segno);
        let bytes = read_segment(storage, &seg.path)?;
        let end_lsn = if last {
            None
        } else {
            match headers[i + 1] {
                Some(h) => Some(h.first_lsn.saturating_sub(1)),
                None => {
                    let damage = format!("segment {} has a bad header", segs[i + 1].segno);
                    match mode {
                        RecoveryMode::PointInTime => None,
                        RecoveryMode::SkipAnyCorruptedRecords => None,
                        _ => return Err(corruption(&segs[i + 1].path, 0, damage)),
                    }
                }
            }
        };
        let mut cursor = match headers[i] {
            Some(h) => {
                if next.is_none() {
                    next = Some(h.first_lsn);
                }
                SEGMENT_HEADER_LEN
            }
            None => {
                let reason = "bad segment header".to_string();
                match mode {
                    RecoveryMode::PointInTime => {
                        rec.truncated = Some(damage(&seg.path, 0, reason));
                        rec.discarded
                            .extend(segs[i..].iter().map(|s| s.path.clone()));
                        break;
                    }
                    RecoveryMode::SkipAnyCorruptedRecords => {
                        rec.skipped.push(damage(&seg.path, 0, reason));
                        SEGMENT_HEADER_LEN
                    }
                    _ => return Err(corruption(&seg.path, 0, reason)),
                }
            }
        };
        rec.segments.push(SegmentFile {
            first_lsn: headers[i].map_or(0, |h| h.first_lsn),
            ..seg.clone()
        });
        let mut stop_all = false;
        loop {
            if let (Some(end), Some(nx)) = (end_lsn, next) {
                if nx > end {
                    break; // Sealed: anything further is from before a reopen.
                }
            }
            let (off, why) = match read_entry(&bytes, cursor, tag) {
                Ok(e) if next.is_some_and(|nx| e.header.first_lsn != nx) => {
                    (e.offset, Stop::Bad("entry LSN out of sequence"))
                }
                Ok(e) if end_lsn.is_some_and(|end| e.header.last_lsn() > end) => (
                    e.offset,
                    Stop::Bad("entry runs past the next segment's first LSN"),
                ),
                Ok(e) => {
                    replay_entry(&e, &seg.path, &mut replay)?;
                    rec.records += u64::from(e.header.count);
                    rec.last_lsn = e.header.last_lsn();
                    next = Some(rec.last_lsn + 1);
                    cursor = e.next;
                    continue;
                }
                Err(stop) => stop,
            };
            // Reading stopped before the segment's known end, or in the last segment.
            let want = next.unwrap_or(1);
            let later =
                find_entry_after(&bytes, off + 1, tag).filter(|e| e.header.first_lsn >= want);
            let describe = |why: Stop| format!("{} (next LSN {want})", why.describe());
            if let Some(end) = end_lsn {
                let reason = format!(
                    "{}; records {want}..={end} missing from a segment followed by others",
                    why.describe()
                );
                match mode {
                    RecoveryMode::PointInTime => {
                        rec.truncated = Some(damage(&seg.path, off, reason));
                        rec.discarded
                            .extend(segs[i + 1..].iter().map(|s| s.path.clone()));
                        stop_all = true;
                    }
                    RecoveryMode::SkipAnyCorruptedRecords => {
                        rec.skipped.push(damage(&seg.path, off, reason));
                        match later {
                            Some(e) if e.header.last_lsn() <= end => {
                                next = Some(e.header.first_lsn);
                                cursor = e.offset;
                                continue;
                            }
                            _ => next = Some(end + 1),
                        }
                    }
                    RecoveryMode::AbsoluteConsistency => {
                        return Err(corruption(&seg.path, off, reason))
                    }
                    RecoveryMode::TolerateCorruptedTail => {
                        // Segments are sealed in the background under
                        // unsynced policies, so a crash can cut a segment
                        // that others follow. That is a torn tail unless
                        // some later entry vouches the records were durable.
                        let vouched = certifies(&bytes, off + 1, tag, want)
                            || later_segments_certify(storage, &segs[i + 1..], want)?;
                        if vouched {
                            return Err(corruption(
                                &seg.path,
                                off,
                                format!("{reason}; a later record shows they were durable"),
                            ));
                        }
                        rec.truncated = Some(damage(&seg.path, off, reason));
                        rec.discarded
                            .extend(segs[i + 1..].iter().map(|s| s.path.clone()));
                        stop_all = true;
                    }
                }
                break;
            }
            // The last segment: damage is a torn tail unless a later entry
            // says the missing records had been made durable.
            let certified = certifies(&bytes, off + 1, tag, want);
            let clean = why.is_clean_end() && later.is_none();
            match mode {
                RecoveryMode::TolerateCorruptedTail => {
                    if certified {
                        return Err(corruption(
                            &seg.path,
                            off,
                            format!(
                                "{}; a later record shows the lost records were durable",
                                describe(why)
                            ),
                        ));
                    }
                    if !clean {
                        rec.truncated = Some(damage(&seg.path, off, describe(why)));
                    }
                }
                RecoveryMode::AbsoluteConsistency => {
                    if !clean {
                        return Err(corruption(&seg.path, off, describe(why)));
                    }
                }
                RecoveryMode::PointInTime => {
                    if !clean {
                        rec.truncated = Some(damage(&seg.path, off, describe(why)));
                    }
                }
                RecoveryMode::SkipAnyCorruptedRecords => {
                    if let Some(e) = later {
                        rec.skipped.push(damage(&seg.path, off, describe(why)));
                        next = Some(e.header.first_lsn);
                        cursor = e.offset;
                        continue;
                    }
                    if !clean {
                        rec.truncated = Some(damage(&seg.path, off, describe(why)));
                    }
                }
            }
            break;
        }
        if stop_all {
            break;
        }
        i += 1;
    }
    rec.next_lsn = next.unwrap_or(1).max(rec.last_lsn + 1);
    Ok(rec)
}

fn damage(path: &Path, offset: usize, reason: String) -> Damage {
    Damage {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

fn replay_entry(
    e: &FoundEntry<'_>,
    path: &Path,
    replay: &mut impl FnMut(Lsn, &[u8]) -> Result<()>,
) -> Result<()> {
    // Decoded once already when found; decoding again borrows the records
    // from the payload without keeping a self-referential struct.
    let d = decode_entry(&e.payload).map_err(|r| Error::Corruption {
        path: path.to_path_buf(),
        offset: e.offset as u64,
        reason: r.to_string(),
    })?;
    for (i, r) in d.records.iter().enumerate() {
        replay(e.header.first_lsn + i as u64, r).map_err(|err| match err {
            // A record the caller cannot apply: name where it lies.
            Error::Corruption {
                path: p,
                offset: 0,
                reason,
            } if p.as_os_str().is_empty() => Error::Corruption {
                path: path.to_path_buf(),
                offset: e.offset as u64,
                reason,
            },
            err => err,
        })?;
    }
    Ok(())
}

/// Reads and validates a segment's header; `None` if it is damaged, absent
/// or belongs to another segment number (a recycled file whose new header
/// never reached the disk).
pub(crate) fn read_header(
    storage: &dyn Storage,
    path: &Path,
    segno: u64,
) -> Result<Option<SegmentHeader>> {
    let f = storage.open(path, OpenOptions::existing())?;
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    match f.read_exact_at(&mut b, 0) {
        Ok(()) => Ok(SegmentHeader::decode(&b).filter(|h| h.segno == segno)),
        Err(strata_io::Error::ShortRead { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One entry of a segment, for inspection tools.
#[derive(Clone, Debug)]
pub struct EntryInfo {
    /// Byte offset of its first fragment.
    pub offset: u64,
    /// Its header.
    pub header: EntryHeader,
    /// Its records.
    pub records: Vec<Vec<u8>>,
}

/// What a single segment file holds, read without any knowledge of the
/// other segments: for `strata wal-dump` and the decoder fuzz target.
#[derive(Clone, Debug)]
pub struct SegmentDump {
    /// The header, if valid.
    pub header: Option<SegmentHeader>,
    /// Entries in file order, up to the first stop.
    pub entries: Vec<EntryInfo>,
    /// Where reading stopped and why ("end of file", "unwritten (zero)
    /// bytes", or the damage found).
    pub stop_offset: u64,
    /// Why it stopped.
    pub stop_reason: &'static str,
    /// Whether the stop is a clean end of the log.
    pub clean_end: bool,
    /// Valid entries found after the stop point (damage or a lost write
    /// before them).
    pub entries_after_stop: u64,
}

/// Decodes one segment's bytes. `segno` is the number from its file name.
pub fn dump_segment(bytes: &[u8], segno: u64) -> SegmentDump {
    let tag = segment_tag(segno);
    let header = bytes
        .get(..SEGMENT_HEADER_LEN)
        .and_then(SegmentHeader::decode)
        .filter(|h| h.segno == segno);
    let mut entries = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let (stop_offset, stop) = loop {
        match read_entry(bytes, pos, tag) {
            Ok(e) => {
                let records = decode_entry(&e.payload)
                    .map(|d| d.records.iter().map(|r| r.to_vec()).collect())
                    .unwrap_or_default();
                entries.push(EntryInfo {
                    offset: e.offset as u64,
                    header: e.header,
                    records,
                });
                pos = e.next;
            }
            Err(s) => break s,
        }
    };
    let mut entries_after_stop = 0;
    let mut p = stop_offset + 1;
    while let Some(e) = find_entry_after(bytes, p, tag) {
        entries_after_stop += 1;
        p = e.next.max(e.offset + 1);
    }
    SegmentDump {
        header,
        entries,
        stop_offset: stop_offset as u64,
        stop_reason: stop.describe(),
        clean_end: stop.is_clean_end() && entries_after_stop == 0,
        entries_after_stop,
    }
}
