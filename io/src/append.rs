//! Appending to a file, the one path the WAL and the segmented log share.
//!
//! On a buffered file an append is a positional write at the end. On an
//! `O_DIRECT` file every write must cover whole aligned pages, so the
//! writer keeps the bytes of the last, partial page in an aligned staging
//! buffer and sends that page again, followed by the new bytes and zero
//! padding to the next page boundary. The file therefore ends on a page
//! boundary, with zeros after the logical end: formats read with this
//! writer must treat zeros after their last record as its end (the WAL's
//! zero fragment header, the log's zero padding and prepared zeros).
//!
//! Where the backend offers it ([`File::staged_writer`]), the staging
//! buffer and the file are registered with an io_uring ring of the
//! writer's own: the kernel pins the buffer once instead of on every
//! write, the file is looked up once, and the thread that appends submits
//! and reaps its own completions, with no other thread sharing the ring.

use std::ops::Range;

use crate::{AlignedBuf, FileRef, Result, SyncMode};

/// Staging buffers ("slots") and a way to write a range of one of them
/// to one file: through the file's ordinary writes (`PlainStaged`: each
/// write made when its slot is waited for) or through a
/// ring with the buffers and the file registered (the io_uring backend),
/// where a submitted write runs while the writer fills the next slot.
pub trait StagedWrites: Send + Sync {
    /// How many buffers; a slot is not touched while its write is in
    /// flight.
    fn slots(&self) -> usize;
    /// A slot's buffer (its length is its capacity).
    fn buf(&mut self, slot: usize) -> &mut [u8];
    /// Starts writing `buf(slot)[range]` at file offset `offset` and, with
    /// `sync`, making it durable (the caller waits for every earlier write
    /// first, so that a sync covers them).
    fn submit(
        &mut self,
        slot: usize,
        offset: u64,
        range: Range<usize>,
        sync: Option<SyncMode>,
    ) -> Result<()>;
    /// Waits for the slot's write, if any; its error if it failed.
    fn wait(&mut self, slot: usize) -> Result<()>;
    /// Starts writing `len` zero bytes at `offset` and making them durable
    /// (allocated, written blocks: later writes there are overwrites). At
    /// most one runs; nothing else writes to its range until
    /// [`StagedWrites::wait_zero_fill`] returns.
    fn zero_fill(&mut self, offset: u64, len: u64) -> Result<()>;
    /// Waits for the zero fill, if one runs.
    fn wait_zero_fill(&mut self) -> Result<()>;
    /// Short name of the path, for benchmark output: "plain" or "fixed".
    fn kind(&self) -> &'static str;
}

/// A write [`PlainStaged`] holds until its slot is waited for: where,
/// which bytes of the slot, and the sync after it.
type Queued = (u64, Range<usize>, Option<SyncMode>);

/// Staged writes through [`crate::File::write_batch`], for backends with no
/// [`crate::File::staged_writer`] of their own. A submitted write
/// is made when its slot is waited for (the writer waits before it reuses
/// a slot, and for all of them before a sync or a read), so with several
/// slots the file lags the writer by up to that many chunks, as it would
/// behind a ring with writes in flight, and every backend, the fault one
/// included, shows the same write-behind behaviour.
pub(crate) struct PlainStaged {
    file: FileRef,
    bufs: Vec<AlignedBuf>,
    queued: Vec<Option<Queued>>,
}

impl PlainStaged {
    /// `slots` staging buffers of `capacity` bytes for `file`.
    pub(crate) fn new(file: FileRef, slots: usize, capacity: usize) -> Self {
        let align = file.alignment().unwrap_or(1).max(8);
        let slots = slots.max(1);
        PlainStaged {
            bufs: (0..slots)
                .map(|_| AlignedBuf::zeroed(capacity, align))
                .collect(),
            queued: (0..slots).map(|_| None).collect(),
            file,
        }
    }
}

impl StagedWrites for PlainStaged {
    fn slots(&self) -> usize {
        self.bufs.len()
    }
    fn buf(&mut self, slot: usize) -> &mut [u8] {
        &mut self.bufs[slot]
    }
    fn submit(
        &mut self,
        slot: usize,
        offset: u64,
        range: Range<usize>,
        sync: Option<SyncMode>,
    ) -> Result<()> {
        self.wait(slot)?;
        self.queued[slot] = Some((offset, range, sync));
        Ok(())
    }
    fn wait(&mut self, slot: usize) -> Result<()> {
        let Some((offset, range, sync)) = self.queued.get_mut(slot).and_then(Option::take) else {
            return Ok(());
        };
        if range.is_empty() {
            return match sync {
                Some(SyncMode::Data) => self.file.sync_data(),
                Some(SyncMode::All) => self.file.sync_all(),
                None => Ok(()),
            };
        }
        self.file
            .write_batch(&[(offset, &self.bufs[slot][range])], sync)
    }
    fn zero_fill(&mut self, offset: u64, len: u64) -> Result<()> {
        write_zeros(&*self.file, offset, len)?;
        self.file.sync_data()
    }
    fn wait_zero_fill(&mut self) -> Result<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "plain"
    }
}

/// Writes `len` zeros at `offset` (both aligned for a direct file) in
/// 1 MiB writes: preallocation by written blocks.
pub fn write_zeros(file: &dyn crate::File, offset: u64, len: u64) -> Result<()> {
    let align = file.alignment().unwrap_or(8).max(8);
    let zeros = AlignedBuf::zeroed(CHUNK, align);
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(CHUNK as u64) as usize;
        file.write_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Bytes of file one slot covers: a chunk is written whole once full, so
/// a run of appends becomes 1 MiB writes whatever the appends' sizes.
pub const CHUNK: usize = 1 << 20;
/// Room past a chunk for the zero padding of its last page and the zeros
/// an append asks for after itself (the WAL's end marker: under a 32 KiB
/// block).
const SLACK: usize = 64 << 10;

/// Appends to one file; see the module note. One writer per file.
pub struct AppendWriter {
    file: FileRef,
    /// The logical end: bytes appended so far (and found at open).
    end: u64,
    /// The first failed write or sync: every later call fails with it, as
    /// the file's tail is unknown from then on (never retried).
    failed: Option<(std::io::ErrorKind, String)>,
    /// `Some` for an O_DIRECT file.
    direct: Option<Direct>,
}

/// The O_DIRECT state: slot `cur` holds the file's bytes from `start`
/// (page-aligned) to the logical end; its bytes from `sent` on have not
/// been submitted yet.
struct Direct {
    align: usize,
    staged: Box<dyn StagedWrites>,
    cur: usize,
    start: u64,
    /// Page-aligned: the slot's bytes before it are on their way or written.
    sent: usize,
    /// Writes may be in flight in other slots.
    in_flight: bool,
    /// Bytes appended to the current slot and not submitted.
    pending: bool,
    /// Zero-fill ahead ([`AppendWriter::prepare_ahead`]): keep this many
    /// bytes past the end written as zeros, durably, up to `limit`.
    ahead: u64,
    limit: u64,
    /// The file holds written zeros (or data) up to here.
    prepared: u64,
    /// The zero fill running, if any: its range.
    zeroing: Option<(u64, u64)>,
}

impl Direct {
    /// Before a data write reaching `end`: a zero fill of that range must
    /// be over, or it could land after the data.
    fn clear_zeroing(&mut self, end: u64) -> Result<()> {
        if let Some((from, to)) = self.zeroing {
            if end > from {
                self.staged.wait_zero_fill()?;
                self.prepared = self.prepared.max(to);
                self.zeroing = None;
            }
        }
        Ok(())
    }

    /// Starts the next zero fill when less than `ahead` is prepared past
    /// the current chunk, where no data write can reach.
    fn maybe_zero_fill(&mut self, end: u64) -> Result<()> {
        if self.ahead == 0 || self.zeroing.is_some() {
            return Ok(());
        }
        let floor = self.start + CHUNK as u64;
        if self.prepared >= end + self.ahead || self.prepared.max(floor) >= self.limit {
            return Ok(());
        }
        // Page-aligned, as O_DIRECT writes must be (a recovered file's
        // length need not be).
        let from = self.prepared.max(floor).next_multiple_of(self.align as u64);
        if from >= self.limit {
            return Ok(());
        }
        let to = (from + self.ahead / 2).min(self.limit);
        self.staged.zero_fill(from, to - from)?;
        self.zeroing = Some((from, to));
        Ok(())
    }
}

impl std::fmt::Debug for AppendWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendWriter")
            .field("path", &self.file.path())
            .field("end", &self.end)
            .field("kind", &self.kind())
            .finish()
    }
}

impl AppendWriter {
    /// A writer that appends to `file` from `end` (the logical end of what
    /// it holds), each append written before it returns. For an O_DIRECT
    /// file the partial page before `end` is read back into the staging
    /// buffer, registered with a ring of the writer's own where the
    /// backend has one.
    pub fn new(file: FileRef, end: u64) -> Result<Self> {
        Self::with_depth(file, end, 1)
    }

    /// [`AppendWriter::new`] with up to `depth` chunk writes of an O_DIRECT
    /// file in flight (write-behind, where the backend submits
    /// asynchronously): an unsynced append only copies into the current
    /// 1 MiB chunk, and a full chunk is submitted while the next fills.
    /// Bytes not yet written are not in the file: [`AppendWriter::drain`]
    /// before reading what was appended ([`AppendWriter::has_pending`]),
    /// and a process crash loses them.
    pub fn with_depth(file: FileRef, end: u64, depth: usize) -> Result<Self> {
        let direct = match file.alignment() {
            None => None,
            Some(align) => {
                let cap = CHUNK + SLACK;
                let staged = match file.staged_writer(depth.clamp(1, 8), cap) {
                    Some(s) => s,
                    None => Box::new(PlainStaged::new(file.clone(), depth.clamp(1, 8), cap)),
                };
                Some(Direct {
                    align,
                    staged,
                    cur: 0,
                    start: end - end % align as u64,
                    sent: 0,
                    in_flight: false,
                    pending: false,
                    ahead: 0,
                    limit: 0,
                    prepared: file.len()?,
                    zeroing: None,
                })
            }
        };
        let mut w = AppendWriter {
            file,
            end,
            failed: None,
            direct,
        };
        w.load_tail()?;
        Ok(w)
    }

    /// Keeps up to `ahead` bytes past the end written as zeros and
    /// durable, but not past `limit` (a segment's largest size), filled
    /// in the background half of `ahead` at a time (on io_uring: writes and
    /// an fdatasync on the writer's ring; elsewhere inline). A synced
    /// O_DIRECT append into written blocks is an overwrite: the file
    /// system neither allocates nor changes the file's size, so
    /// `RWF_DSYNC` completes without a journal commit, and io_uring issues
    /// it inline instead of on a worker thread. The file's length runs
    /// ahead of the logical end by up to `ahead` plus a chunk, all zeros:
    /// readers of the format must take zeros after the last record as the
    /// end. O_DIRECT files only; 0 (the default) turns it off.
    pub fn prepare_ahead(&mut self, ahead: u64, limit: u64) {
        if let Some(d) = self.direct.as_mut() {
            let align = d.align as u64;
            d.ahead = ahead.div_ceil(2 * align) * 2 * align;
            d.limit = limit.div_ceil(align) * align;
        }
    }

    /// The file written to.
    pub fn file(&self) -> &FileRef {
        &self.file
    }

    /// The logical end: where the next append lands.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Whether appended bytes are staged or in flight, not yet in the
    /// file ([`AppendWriter::drain`] writes them).
    pub fn has_pending(&self) -> bool {
        self.direct
            .as_ref()
            .is_some_and(|d| d.in_flight || d.pending)
    }

    /// "buffered", or for an O_DIRECT file the staging path ("plain",
    /// "fixed").
    pub fn kind(&self) -> &'static str {
        match &self.direct {
            None => "buffered",
            Some(d) => d.staged.kind(),
        }
    }

    fn load_tail(&mut self) -> Result<()> {
        let end = self.end;
        let Some(d) = self.direct.as_mut() else {
            return Ok(());
        };
        let lead = (end - d.start) as usize;
        if lead == 0 {
            return Ok(());
        }
        let mut bytes = vec![0u8; lead];
        // An unaligned read: the backend reads the page around it.
        self.file.read_exact_at(&mut bytes, d.start)?;
        d.staged.buf(d.cur)[..lead].copy_from_slice(&bytes);
        Ok(())
    }

    /// Appends `bytes` at the end and with `sync` makes everything
    /// appended durable; returns where `bytes` landed. The last `trailer`
    /// bytes of `bytes` must be zeros: they are written after the record
    /// but do not count as appended (an end marker for a reader, which the
    /// next append overwrites). A caller that builds its record in a
    /// buffer adds them there, so a buffered append stays one write with
    /// no copy; a direct one writes them as padding (only when the
    /// append's last bytes are written: always at depth 1 or with `sync`).
    pub fn append(&mut self, bytes: &[u8], trailer: usize, sync: Option<SyncMode>) -> Result<u64> {
        self.check()?;
        if trailer > bytes.len() {
            return Err(crate::Error::InvalidArgument(format!(
                "{}: a trailer of {trailer} bytes in an append of {}",
                self.file.path().display(),
                bytes.len()
            )));
        }
        let res = self.append_inner(bytes, trailer, sync);
        self.note(res)
    }

    /// The sticky failure, if any.
    fn check(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, msg)) => Err(crate::Error::Io {
                op: "append",
                path: self.file.path().to_path_buf(),
                source: std::io::Error::new(*kind, format!("an earlier write failed: {msg}")),
            }),
        }
    }

    fn note<T>(&mut self, res: Result<T>) -> Result<T> {
        if let Err(e) = &res {
            let kind = match e {
                crate::Error::Io { source, .. } => source.kind(),
                _ => std::io::ErrorKind::Other,
            };
            self.failed = Some((kind, e.to_string()));
        }
        res
    }

    fn append_inner(
        &mut self,
        bytes: &[u8],
        trailer: usize,
        sync: Option<SyncMode>,
    ) -> Result<u64> {
        let at = self.end;
        let record = &bytes[..bytes.len() - trailer];
        let Some(d) = self.direct.as_mut() else {
            self.file.write_batch(&[(at, bytes)], sync)?;
            self.end = at + record.len() as u64;
            return Ok(at);
        };
        let zeros_after = trailer;
        let mut rest = record;
        let mut end = at;
        while !rest.is_empty() {
            let fill = (end - d.start) as usize;
            let n = rest.len().min(CHUNK - fill);
            d.staged.buf(d.cur)[fill..fill + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            end += n as u64;
            if fill + n == CHUNK {
                // A full chunk: on its way, and the next slot takes over
                // (once its own earlier write is done).
                let (slot, from) = (d.cur, d.sent);
                d.clear_zeroing(d.start + CHUNK as u64)?;
                d.staged
                    .submit(slot, d.start + from as u64, from..CHUNK, None)?;
                d.in_flight = true;
                d.cur = (d.cur + 1) % d.staged.slots();
                d.staged.wait(d.cur)?;
                d.start += CHUNK as u64;
                d.sent = 0;
            }
        }
        self.end = end;
        d.pending = end > d.start + d.sent as u64;
        if sync.is_some() || d.staged.slots() == 1 {
            Self::send_partial(d, end, zeros_after, sync)?;
        }
        d.maybe_zero_fill(end)?;
        Ok(at)
    }

    /// Submits the current slot's unsent bytes, zero-padded to a page
    /// (plus `zeros_after`), after every write in flight has finished, and
    /// waits for it.
    fn send_partial(
        d: &mut Direct,
        end: u64,
        zeros_after: usize,
        sync: Option<SyncMode>,
    ) -> Result<()> {
        if d.in_flight {
            for slot in 0..d.staged.slots() {
                d.staged.wait(slot)?;
            }
            d.in_flight = false;
        }
        let fill = (end - d.start) as usize;
        if !d.pending && zeros_after == 0 {
            // Nothing new since the last write of this slot: an empty
            // write, which only syncs.
            if let Some(mode) = sync {
                let at = d.start + d.sent as u64;
                d.staged.submit(d.cur, at, d.sent..d.sent, Some(mode))?;
                return d.staged.wait(d.cur);
            }
            return Ok(());
        }
        let padded = (fill + zeros_after).div_ceil(d.align) * d.align;
        let cap = d.staged.buf(d.cur).len();
        let padded = padded.min(cap - cap % d.align);
        d.clear_zeroing(d.start + padded as u64)?;
        let buf = d.staged.buf(d.cur);
        buf[fill..padded].fill(0);
        let from = d.sent;
        d.staged
            .submit(d.cur, d.start + from as u64, from..padded, sync)?;
        d.staged.wait(d.cur)?;
        // The partial last page goes again with the next write.
        d.sent = fill - fill % d.align;
        d.pending = false;
        Ok(())
    }

    /// Writes whatever is staged and waits for every write in flight:
    /// afterwards the file holds everything appended (not yet durable).
    pub fn drain(&mut self) -> Result<()> {
        self.check()?;
        let end = self.end;
        let res = match self.direct.as_mut() {
            Some(d) => Self::send_partial(d, end, 0, None).and_then(|()| d.clear_zeroing(u64::MAX)),
            None => Ok(()),
        };
        self.note(res)
    }

    /// Makes everything appended durable: drains, then `fdatasync`.
    pub fn sync_data(&mut self) -> Result<()> {
        self.drain()?;
        let res = self.file.sync_data();
        self.note(res)
    }
}

impl Drop for AppendWriter {
    fn drop(&mut self) {
        // What was appended reaches the file, as a buffered write would
        // have; unsynced, so an error here loses only what a crash could.
        if let Err(e) = self.drain() {
            tracing::warn!(path = %self.file.path().display(), error = %e,
                "appended bytes not written when their writer closed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultStorage;
    use crate::{OpenOptions, Storage};
    use std::path::Path;

    fn open(direct: bool) -> (FaultStorage, FileRef) {
        let s = FaultStorage::new(1);
        s.set_direct_alignment(Some(512));
        s.create_dir_all(Path::new("/d")).expect("dir");
        let f = s
            .open(Path::new("/d/f"), OpenOptions::create().direct(direct))
            .expect("open");
        (s, f)
    }

    #[test]
    fn direct_appends_read_back_as_buffered_ones_and_end_on_a_page() {
        for direct in [false, true] {
            let (_s, f) = open(direct);
            let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
            let mut want = Vec::new();
            for i in 0..200usize {
                let rec: Vec<u8> = (0..(i * 37) % 1500 + 1)
                    .map(|j| (i + j) as u8 | 1)
                    .collect();
                let at = w.append(&rec, 0, None).expect("append");
                assert_eq!(at, want.len() as u64);
                want.extend_from_slice(&rec);
            }
            let mut got = vec![0u8; want.len()];
            f.read_exact_at(&mut got, 0).expect("read");
            assert_eq!(got, want);
            let len = f.len().expect("len");
            if direct {
                assert_eq!(len % 512, 0);
                assert!(len >= want.len() as u64 && len < want.len() as u64 + 512);
                let mut pad = vec![1u8; (len - want.len() as u64) as usize];
                f.read_exact_at(&mut pad, want.len() as u64).expect("pad");
                assert!(pad.iter().all(|&b| b == 0), "padding is zeros");
            } else {
                assert_eq!(len, want.len() as u64);
            }
        }
    }

    #[test]
    fn a_reopened_writer_continues_the_partial_page_also_after_a_cut() {
        let (_s, f) = open(true);
        let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
        w.append(&[7u8; 700], 0, None).expect("append");
        drop(w);
        let mut w = AppendWriter::new(f.clone(), 700).expect("reopen");
        w.append(&[9u8; 100], 0, None).expect("append");
        let mut got = vec![0u8; 800];
        f.read_exact_at(&mut got, 0).expect("read");
        assert!(got[..700].iter().all(|&b| b == 7) && got[700..].iter().all(|&b| b == 9));
        // Cut inside the first page (as a truncation does: drain, cut the
        // file, open a writer at the new end), then go on from there.
        w.drain().expect("drain");
        drop(w);
        f.set_len(300).expect("cut");
        let mut w = AppendWriter::new(f.clone(), 300).expect("writer at the cut");
        w.append(&[5u8; 10], 0, None).expect("append");
        f.read_exact_at(&mut got[..310], 0).expect("read");
        assert!(got[..300].iter().all(|&b| b == 7) && got[300..310].iter().all(|&b| b == 5));
        let mut after = [1u8; 8];
        f.read_exact_at(&mut after, 310).expect("read");
        assert_eq!(
            after, [0u8; 8],
            "the old bytes after a reset end are zeroed"
        );
    }

    #[test]
    fn a_large_append_grows_the_buffer_and_keeps_the_tail() {
        let (_s, f) = open(true);
        let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
        w.append(&[3u8; 100], 0, None).expect("append");
        let big: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
        w.append(&big, 0, Some(SyncMode::Data)).expect("append");
        let mut got = vec![0u8; 100 + big.len()];
        f.read_exact_at(&mut got, 0).expect("read");
        assert!(got[..100].iter().all(|&b| b == 3));
        assert_eq!(&got[100..], &big[..]);
    }

    #[test]
    fn a_trailer_is_written_but_not_counted() {
        for direct in [false, true] {
            let (_s, f) = open(direct);
            let mut old = AlignedBuf::zeroed(2048, 512);
            old.fill(0xff);
            f.write_at(&old, 0).expect("old bytes");
            let mut w = AppendWriter::new(f.clone(), 0).expect("writer");
            let mut rec = vec![1u8; 10];
            rec.resize(26, 0);
            w.append(&rec, 16, None).expect("append");
            assert_eq!(w.end(), 10);
            let mut got = [0xeeu8; 26];
            f.read_exact_at(&mut got, 0).expect("read");
            assert!(got[10..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn write_behind_holds_bytes_until_a_drain_or_a_sync_and_a_crash_keeps_synced_ones() {
        use crate::fault::{Errno, OpClass};
        let (s, f) = open(true);
        for dir in ["/", "/d"] {
            s.sync_dir(Path::new(dir))
                .expect("the file's name is durable");
        }
        let mut w = AppendWriter::with_depth(f.clone(), 0, 4).expect("writer");
        w.append(&[1u8; 3000], 0, None).expect("append");
        assert!(w.has_pending());
        assert_eq!(f.len().expect("len"), 0, "held back, not written");
        w.append(&[2u8; 3000], 0, Some(SyncMode::Data))
            .expect("synced");
        assert!(!w.has_pending());
        // 3 MiB more: three chunks fill, the first ones written behind.
        let big = vec![3u8; 3 << 20];
        w.append(&big, 0, None).expect("append");
        assert!(w.has_pending());
        s.crash();
        let s2 = s.reopen();
        let f2 = s2
            .open(Path::new("/d/f"), OpenOptions::existing().direct(true))
            .expect("reopen");
        let mut got = vec![0u8; 6000];
        f2.read_exact_at(&mut got, 0)
            .expect("the synced prefix survives");
        assert!(got[..3000].iter().all(|&b| b == 1) && got[3000..].iter().all(|&b| b == 2));
        drop(w);

        // A failed write is sticky: every later call fails, nothing is
        // retried over a tail that is unknown.
        let (s, f) = open(true);
        let mut w = AppendWriter::with_depth(f, 0, 2).expect("writer");
        s.fail(OpClass::Write, 1, Errno::Eio, false);
        w.append(&[1u8; 10], 0, None).expect("held back");
        assert!(w.drain().is_err(), "the write fails");
        assert!(w.append(&[1u8; 10], 0, None).is_err(), "sticky");
        assert!(w.sync_data().is_err(), "sticky");
    }

    #[test]
    fn zero_fill_ahead_stays_ahead_and_never_overwrites_data() {
        let (s, f) = open(true);
        for dir in ["/", "/d"] {
            s.sync_dir(Path::new(dir)).expect("sync dir");
        }
        let mut w = AppendWriter::with_depth(f.clone(), 0, 4).expect("writer");
        let (ahead, limit) = (4u64 << 20, 24u64 << 20);
        w.prepare_ahead(ahead, limit);
        let mut want = Vec::new();
        let mut synced = 0;
        let mut i = 0usize;
        while want.len() < (20 << 20) {
            let n = (i * 7919) % 200_000 + 1;
            let rec: Vec<u8> = (0..n).map(|j| ((i + j) % 255 + 1) as u8).collect();
            let sync = i.is_multiple_of(9).then_some(SyncMode::Data);
            w.append(&rec, 0, sync).expect("append");
            want.extend_from_slice(&rec);
            if sync.is_some() {
                synced = want.len();
            }
            let len = f.len().expect("len");
            assert!(
                len <= want.len() as u64 + 2 * ahead + CHUNK as u64,
                "zeros run {} bytes ahead",
                len - want.len() as u64
            );
            i += 1;
        }
        w.drain().expect("drain");
        let len = f.len().expect("len");
        assert!(len > want.len() as u64, "zeros were prepared ahead");
        assert!(len <= limit, "never past the limit");
        let mut got = vec![0u8; len as usize];
        f.read_exact_at(&mut got, 0).expect("read");
        assert!(got[..want.len()] == want[..], "data intact");
        assert!(got[want.len()..].iter().all(|&b| b == 0), "zeros after");
        // A power cut keeps the synced prefix; the rest is data or zeros.
        s.crash();
        let s2 = s.reopen();
        let f2 = s2
            .open(Path::new("/d/f"), OpenOptions::existing().direct(true))
            .expect("reopen");
        let mut got = vec![0u8; synced];
        f2.read_exact_at(&mut got, 0).expect("synced prefix");
        assert!(got[..] == want[..synced]);
        drop(w);
    }
}
