//! The leader's side of the WAL: writing an entry into the active segment
//! (with O_DIRECT page handling), rotating to a new or recycled segment, and
//! sealing the old one.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strata_io::{AlignedBuf, AppendWriter, FileRef, OpenOptions, SyncMode};

use super::{Inner, Preallocate, SyncPolicy};
use crate::format::{
    encode_fragments, encoded_len, segment_tag, EntryHeader, SegmentHeader, BLOCK_SIZE,
    FRAGMENT_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::segment::{prepare_path, segment_path, SegmentFile};
use crate::Lsn;

pub(super) struct Active {
    pub(super) segno: u64,
    /// The segment file and its end: the shared append path of strata-io
    /// (with O_DIRECT it resends the partial last page and zero-pads).
    pub(super) writer: AppendWriter,
    /// Bytes of the file already allocated (`Preallocate::Allocate` grows
    /// this in steps ahead of `offset`).
    pub(super) allocated: u64,
    /// The file held an earlier segment: the bytes after the end of the
    /// log are that segment's, possibly a fragment cut in half by the last
    /// write (see `end_marker`).
    pub(super) recycled: bool,
    /// When the segment was started: the first half's duration paces the
    /// preparation of the next one.
    pub(super) opened: std::time::Instant,
}

pub(super) struct Io {
    pub(super) active: Option<Active>,
    pub(super) segments: VecDeque<SegmentFile>,
    pub(super) recycled: Vec<PathBuf>,
    pub(super) enc: Vec<u8>,
    /// The background fsync of the previous segment, if still running.
    pub(super) sealing: Option<JoinHandle<strata_io::Result<()>>>,
    /// The next segment's file being made on a background thread, if any
    /// (`prepare_next`).
    pub(super) preparing: Option<Preparing>,
}

/// A next segment being made in the background.
pub(super) struct Preparing {
    handle: JoinHandle<strata_io::Result<PathBuf>>,
    pace: Arc<Pace>,
}

impl Preparing {
    /// Waits for the file (its path once ready). Whoever waits has
    /// nothing to gain from the pacing, so it ends: the rest of the zero
    /// fill goes at full speed.
    pub(super) fn join(self) -> std::thread::Result<strata_io::Result<PathBuf>> {
        self.pace.hurry.store(true, Ordering::Relaxed);
        self.handle.join()
    }
}

/// How a background zero fill keeps pace with the segment it will follow.
///
/// A pace from time alone (the first half's duration) fails a log that
/// idles and then bursts: a segment opened before an idle minute gets a
/// fill spread over most of a minute, and the burst then fills the segment
/// in a second and waits at the rotation for the rest. So the fill also
/// follows the active segment's progress, staying `LEAD` ahead of it, and
/// a rotation that has to wait ends the pacing.
pub(super) struct Pace {
    /// Set by a waiter: fill at full speed.
    hurry: AtomicBool,
    /// The active segment's end, updated after each append.
    end: AtomicU64,
    /// Where the fill started (the active segment was half full) and where
    /// the active segment ends.
    from: u64,
    to: u64,
}

/// How far ahead of the active segment's progress the fill keeps.
const LEAD: f64 = 0.25;

impl Pace {
    fn new(from: u64, to: u64) -> Pace {
        Pace {
            hurry: AtomicBool::new(false),
            end: AtomicU64::new(from),
            from,
            to,
        }
    }

    /// Whether a fill that has done `done` of its work (0..=1) may go on
    /// now, whatever the time pace says.
    fn may_go(&self, done: f64) -> bool {
        if self.hurry.load(Ordering::Relaxed) {
            return true;
        }
        let end = self.end.load(Ordering::Relaxed);
        let progress =
            end.saturating_sub(self.from) as f64 / self.to.saturating_sub(self.from).max(1) as f64;
        done < progress + LEAD
    }
}

impl Inner {
    pub(super) fn write_entry(
        &self,
        io: &mut Io,
        header: &EntryHeader,
        records: &[u8],
        sync: bool,
    ) -> strata_io::Result<u64> {
        let hdr = header.encode();
        let payload_len = hdr.len() + records.len();
        let (offset, segno) = match &io.active {
            Some(a) => (a.writer.end(), a.segno),
            None => {
                return Err(strata_io::Error::InvalidArgument(
                    "WAL has no open segment".into(),
                ))
            }
        };
        if offset > SEGMENT_HEADER_LEN as u64
            && offset + encoded_len(offset, payload_len) as u64 > self.opts.segment_size
        {
            self.rotate(io, header.first_lsn, segno + 1)?;
        }
        if sync {
            // Durable through this entry means every earlier segment too.
            self.finish_seal(io)?;
        }
        let Some(active) = io.active.as_mut() else {
            return Err(strata_io::Error::InvalidArgument(
                "WAL has no open segment".into(),
            ));
        };
        let offset = active.writer.end();
        let end = offset + encoded_len(offset, payload_len) as u64;
        if self.opts.preallocate == Preallocate::Allocate && end > active.allocated {
            let want = next_allocation(active.allocated, end, self.opts.segment_size);
            active.writer.file().preallocate(want)?;
            active.allocated = want;
        }
        io.enc.clear();
        encode_fragments(
            &mut io.enc,
            offset,
            segment_tag(active.segno),
            &[&hdr, records],
        );
        let entry_len = io.enc.len();
        let marker = if active.recycled {
            end_marker_len(offset + entry_len as u64)
        } else {
            0
        };
        io.enc.resize(entry_len + marker, 0);
        active
            .writer
            .append(&io.enc, marker, sync.then_some(SyncMode::Data))?;
        if let Some(p) = &io.preparing {
            p.pace.end.store(active.writer.end(), Ordering::Relaxed);
        }
        self.prepare_next(io);
        Ok(entry_len as u64)
    }

    /// Once the active segment is half full and no file waits for reuse,
    /// makes the next segment's file on a background thread: created,
    /// preallocated as the options say (zero-filled or fallocated),
    /// synced, then renamed to a reusable `.recycle` name and its directory
    /// synced. The rotation then renames a ready file instead of writing
    /// and syncing 64 MiB of zeros while every appender waits (that stall
    /// set the WAL's P99 with 4 KiB records: BENCHMARKS.md). Not with
    /// `background_seal` off (no threads) or `Preallocate::None`.
    fn prepare_next(&self, io: &mut Io) {
        let Some(active) = io.active.as_ref() else {
            return;
        };
        if !self.opts.background_seal
            || self.opts.preallocate == Preallocate::None
            || !io.recycled.is_empty()
            || io.preparing.is_some()
            || active.writer.end() < self.opts.segment_size / 2
        {
            return;
        }
        let segno = active.segno + 1;
        // The second half will take about as long as the first: spread the
        // zero fill over most of that, so the appenders' syncs meet a
        // little of it each instead of all of it at once.
        let budget = active
            .opened
            .elapsed()
            .mul_f64(0.75)
            .min(Duration::from_secs(10));
        let pace = Arc::new(Pace::new(active.writer.end(), self.opts.segment_size));
        let fill_pace = pace.clone();
        let (storage, dir, opts) = (self.storage.clone(), self.dir.clone(), self.opts.clone());
        let spawned = std::thread::Builder::new()
            .name("strata-wal-prepare".into())
            .spawn(move || {
                let tmp = prepare_path(&dir, segno);
                let made = (|| {
                    let f = storage.open(&tmp, OpenOptions::create_new().direct(opts.direct_io))?;
                    match opts.preallocate {
                        Preallocate::ZeroFill => {
                            zero_fill_paced(&f, opts.segment_size, budget, &fill_pace)?
                        }
                        _ => f.preallocate(opts.segment_size)?,
                    }
                    f.sync_all()?;
                    drop(f);
                    let ready = crate::segment::recycle_path(&dir, segno);
                    storage.rename(&tmp, &ready)?;
                    storage.sync_dir(&dir)?;
                    Ok(ready)
                })();
                if made.is_err() {
                    let _ = storage.remove_file(&tmp);
                }
                made
            });
        // Without a thread the rotation makes the file inline, as before.
        io.preparing = spawned.ok().map(|handle| Preparing { handle, pace });
    }

    /// The file the background preparation made, once it is done (waits
    /// for it); `None` if none ran or it failed (logged: the rotation
    /// then makes the file inline and meets the error itself if it lasts).
    pub(super) fn finish_prepare(&self, io: &mut Io) -> Option<PathBuf> {
        let p = io.preparing.take()?;
        match p.join() {
            Ok(Ok(path)) => Some(path),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "preparing the next WAL segment failed; making it inline");
                None
            }
            Err(_) => {
                tracing::warn!("the WAL segment preparation thread panicked; making it inline");
                None
            }
        }
    }

    /// Waits for the background seal of the previous segment, if any.
    pub(super) fn finish_seal(&self, io: &mut Io) -> strata_io::Result<()> {
        match io.sealing.take() {
            Some(h) => join_seal(h),
            None => Ok(()),
        }
    }

    /// Seals the active segment (fsync) and starts segment `segno` whose
    /// first record will be `first_lsn`, reusing a recycled file if any.
    pub(super) fn rotate(&self, io: &mut Io, first_lsn: Lsn, segno: u64) -> strata_io::Result<()> {
        if let Some(mut old) = io.active.take() {
            // At most one seal in flight.
            self.finish_seal(io)?;
            if self.opts.sync == SyncPolicy::Always || !self.opts.background_seal {
                // Everything in it is synced already: this costs nothing
                // (or the caller asked for no threads).
                old.writer.sync_data()?;
            } else {
                // Seal in the background, as Kafka flushes a rolled segment:
                // with unsynced policies nobody waits for this data to be
                // durable, and syncing 64 MiB inline would stall appends.
                // Recovery treats a lost tail of a segment that no later
                // entry vouches for as a torn tail.
                let file = old.writer.file().clone();
                match std::thread::Builder::new()
                    .name("strata-wal-seal".into())
                    .spawn(move || file.sync_data())
                {
                    Ok(h) => io.sealing = Some(h),
                    Err(_) => old.writer.sync_data()?,
                }
            }
        }
        let path = segment_path(&self.dir, segno);
        let opts = OpenOptions::existing().direct(self.opts.direct_io);
        if let Some(ready) = self.finish_prepare(io) {
            io.recycled.push(ready);
        }
        let (file, allocated, recycled) = match io.recycled.pop() {
            Some(from) => {
                self.storage.rename(&from, &path)?;
                let f = self.storage.open(&path, opts)?;
                let len = f.len()?;
                (f, len, true)
            }
            None => {
                let f = self.storage.open(
                    &path,
                    OpenOptions {
                        create: true,
                        create_new: true,
                        ..opts
                    },
                )?;
                let allocated = match self.opts.preallocate {
                    Preallocate::None => 0,
                    Preallocate::Allocate => {
                        let n =
                            next_allocation(0, SEGMENT_HEADER_LEN as u64, self.opts.segment_size);
                        f.preallocate(n)?;
                        n
                    }
                    Preallocate::ZeroFill => {
                        zero_fill(&f, self.opts.segment_size)?;
                        self.opts.segment_size
                    }
                };
                (f, allocated, false)
            }
        };
        let header = SegmentHeader { segno, first_lsn }.encode();
        let mut writer = AppendWriter::new(file, 0)?;
        writer.append(&header, 0, None)?;
        // The header (and for a new file its length) must be durable before
        // any record, so a segment with records always has a valid header.
        writer.file().sync_all()?;
        let active = Active {
            segno,
            writer,
            allocated,
            recycled,
            opened: std::time::Instant::now(),
        };
        self.storage.sync_dir(&self.dir)?;
        io.segments.push_back(SegmentFile {
            segno,
            path,
            first_lsn,
        });
        io.active = Some(active);
        self.rotations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// How many zeros after an entry ending at file offset `end` end the log
/// there: a zero fragment header where the reader will look next (at
/// `end`, or at the next block when the rest of this one is trailer). In a
/// recycled file the bytes there are the old segment's; a new entry
/// shorter than the old one leaves half an old fragment behind, which
/// would read as damage (a torn tail reported at every open) rather than
/// as the end. The next entry overwrites the marker.
fn end_marker_len(end: u64) -> usize {
    let room = BLOCK_SIZE as u64 - end % BLOCK_SIZE as u64;
    if room < FRAGMENT_HEADER_LEN as u64 {
        (room + FRAGMENT_HEADER_LEN as u64) as usize
    } else {
        FRAGMENT_HEADER_LEN
    }
}

/// First allocation of a new segment under `Preallocate::Allocate`.
const FIRST_ALLOCATION: u64 = 1 << 20;

/// How far to allocate a segment whose writes reach `end`, given `allocated`
/// so far: 1 MiB first, then the whole segment. A segment that holds a few
/// records (a short-lived process, a database opened and closed again)
/// costs a megabyte instead of the whole segment; a busy one pays one more
/// `fallocate`. (Doubling steps cost busy segments about a fifth of their
/// buffered append throughput in `strata wal-bench --prealloc allocate`:
/// each `fallocate` over a range with dirty pages waits on them.)
fn next_allocation(allocated: u64, end: u64, segment_size: u64) -> u64 {
    let want = if allocated < FIRST_ALLOCATION {
        FIRST_ALLOCATION
    } else {
        segment_size
    };
    want.min(segment_size).max(end)
}

fn join_seal(h: JoinHandle<strata_io::Result<()>>) -> strata_io::Result<()> {
    h.join().unwrap_or_else(|_| {
        Err(strata_io::Error::InvalidArgument(
            "WAL segment seal thread panicked".into(),
        ))
    })
}

/// [`zero_fill`] spread over `budget`: 256 KiB at a time, each handed to
/// writeback at once, with pauses between. A burst of 64 MiB of writes
/// (and the flush that ends it) in front of an appender's fdatasync made
/// that fdatasync wait for all of it (BENCHMARKS.md). A pause ends early
/// when `pace` says the active segment is catching up or someone waits.
fn zero_fill_paced(
    file: &FileRef,
    len: u64,
    budget: Duration,
    pace: &Pace,
) -> strata_io::Result<()> {
    /// How often a pause looks at the active segment's progress.
    const POLL: Duration = Duration::from_millis(2);
    const PIECE: usize = 256 << 10;
    let align = file.alignment().unwrap_or(1).max(8);
    let zeros = AlignedBuf::zeroed(PIECE, align);
    let len = len.div_ceil(align as u64) * align as u64;
    let pieces = len.div_ceil(PIECE as u64).max(1);
    let started = Instant::now();
    let mut off = 0u64;
    let mut k = 0u64;
    while off < len {
        let n = ((len - off) as usize).min(PIECE);
        file.write_at(&zeros[..n], off)?;
        file.start_writeback(off, n as u64)?;
        off += n as u64;
        k += 1;
        let done = k as f64 / pieces as f64;
        let due = budget.mul_f64(done);
        while !pace.may_go(done) {
            match due.checked_sub(started.elapsed()) {
                Some(wait) if !wait.is_zero() => std::thread::sleep(wait.min(POLL)),
                _ => break,
            }
        }
    }
    Ok(())
}

fn zero_fill(file: &FileRef, len: u64) -> strata_io::Result<()> {
    let align = file.alignment().unwrap_or(1) as u64;
    strata_io::write_zeros(&**file, 0, len.next_multiple_of(align))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_io::{StdStorage, Storage};

    /// Runs a paced fill of 4 MiB with an hour's time budget on a thread
    /// and reports whether it finished within a minute: it finishes only
    /// if something other than the clock lets it go.
    fn fill_finishes(pace: Arc<Pace>, set: impl FnOnce(&Pace)) -> bool {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = StdStorage::new()
            .open(&dir.path().join("next"), OpenOptions::create_new())
            .expect("open");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = pace.clone();
        std::thread::spawn(move || {
            let _ = tx.send(zero_fill_paced(&f, 4 << 20, Duration::from_secs(3600), &p));
        });
        set(&pace);
        let done = rx.recv_timeout(Duration::from_secs(60));
        pace.hurry.store(true, Ordering::Relaxed);
        matches!(done, Ok(Ok(())))
    }

    #[test]
    fn a_waiting_rotation_ends_the_pacing() {
        let pace = Arc::new(Pace::new(32 << 20, 64 << 20));
        assert!(fill_finishes(pace, |p| p
            .hurry
            .store(true, Ordering::Relaxed)));
    }

    #[test]
    fn the_fill_keeps_up_with_a_segment_that_fills_faster_than_its_first_half() {
        // The first half took an hour (an idle log); the second fills at
        // once. The fill follows the progress, not the hour.
        let pace = Arc::new(Pace::new(32 << 20, 64 << 20));
        assert!(fill_finishes(pace, |p| p
            .end
            .store(64 << 20, Ordering::Relaxed)));
    }

    #[test]
    fn the_fill_stays_a_quarter_ahead_of_the_active_segment() {
        let pace = Pace::new(100, 200);
        assert!(pace.may_go(0.0));
        assert!(pace.may_go(0.24));
        assert!(!pace.may_go(0.26));
        pace.end.store(150, Ordering::Relaxed);
        assert!(pace.may_go(0.74));
        assert!(!pace.may_go(0.76));
        pace.hurry.store(true, Ordering::Relaxed);
        assert!(pace.may_go(1.0));
    }
}
