//! The WAL writer: group commit over segment files.
//!
//! Appenders encode their record into a shared pending buffer under a
//! mutex and take the next LSN. If no thread is writing, the appender
//! becomes the leader: it takes everything pending as one entry, writes it
//! (and, per the sync policy, syncs it in the same submission), then wakes
//! the others. While it does I/O, new appenders gather the next batch, so
//! under load one write and one fsync serve many records.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use strata_io::{OpenOptions, StorageRef};

use crate::format::{put_varint, EntryHeader, MAX_RECORD_LEN};
use crate::reader::{recover, Recovery};
use crate::segment::{recycle_path, segno_of, SegmentFile};
use crate::{Error, Lsn, Result};

mod options;
mod segment_io;

pub use options::{Preallocate, SyncPolicy, WalOptions};
use segment_io::Io;

/// How many waiters may poll at once (see `Inner::park`).
const MAX_SPINNERS: usize = 1;

/// How long a waiter polls before it sleeps (see `Inner::park`).
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);

/// Longest group-commit window (see `Inner::collect`).
const MAX_COLLECT_WAIT: Duration = Duration::from_micros(500);

/// Rounds a leader may run after its own record's round (see `wait_for`).
const EXTRA_LEADER_ROUNDS: usize = 1;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Written,
    Durable,
    /// Waiting only to become the leader (e.g. to purge segments).
    Leadership,
}

/// A thread asleep in `Inner::park`.
struct Waiter {
    id: u64,
    lsn: Lsn,
    need: Need,
    thread: std::thread::Thread,
}

/// Counters of a WAL since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended.
    pub records: u64,
    /// Entries (group-commit batches) written.
    pub batches: u64,
    /// Syncs of segment data issued by the writer (rotation syncs excluded).
    pub syncs: u64,
    /// Bytes written to segments, framing included.
    pub bytes_written: u64,
    /// Segments started.
    pub rotations: u64,
}

struct State {
    waiters: Vec<Waiter>,
    next_waiter_id: u64,
    stats: WalStats,
    /// Recent records per synced batch, and sync latency (ns): the
    /// group-commit window's estimates.
    batch_ewma: f64,
    sync_ewma_ns: f64,
    /// While the leader waits for a fuller batch: how many records it wants.
    collect_target: u32,
    next_lsn: Lsn,
    pending: Vec<u8>,
    spare: Vec<u8>,
    pending_first: Lsn,
    pending_count: u32,
    written: Lsn,
    durable: Lsn,
    leader: bool,
    failed: Option<strata_io::Stopped>,
    closed: bool,
    sync_wanted: Lsn,
    unsynced_bytes: u64,
    last_sync: Instant,
}

impl State {
    fn satisfies(&self, lsn: Lsn, need: Need) -> bool {
        match need {
            Need::Written => self.written >= lsn,
            Need::Durable => self.durable >= lsn,
            Need::Leadership => !self.leader,
        }
    }
}

/// The shared log.
///
/// Locks, and what each guards:
/// * `state`: LSNs, the pending batch, what is written and durable, the
///   waiters, the leader flag, the failure; `batch_cv` waits on it.
/// * `io`: the segment files and the active segment's write position.
/// * `flusher`: the background flusher's handle.
///
/// `io` is taken only by the leader (the thread that set `State::leader`),
/// after releasing `state`; the two are never held together, so the
/// leader does I/O while others append. `flusher` is taken alone.
struct Inner {
    storage: StorageRef,
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    batch_cv: Condvar,
    /// `State::written` and `State::durable`, published for waiters that
    /// check without the lock.
    written_pub: AtomicU64,
    durable_pub: AtomicU64,
    /// Waiters currently polling instead of sleeping.
    spinners: std::sync::atomic::AtomicUsize,
    io: Mutex<Io>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    rotations: AtomicU64,
}

/// A write-ahead log. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`: recovers it under
    /// `opts.recovery`, passing every record to `replay` in LSN order, then
    /// starts a new segment for appends. Records replayed are durable when
    /// this returns.
    pub fn open(
        storage: StorageRef,
        dir: impl AsRef<Path>,
        opts: WalOptions,
        replay: impl FnMut(Lsn, &[u8]) -> Result<()>,
    ) -> Result<(Wal, Recovery)> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        strata_io::create_dir_durable(&*storage, &dir)?;
        let rec = recover(&*storage, &dir, opts.recovery, replay)?;
        let wal = Wal::open_recovered(storage, &dir, opts, &rec)?;
        Ok((wal, rec))
    }

    /// Opens the WAL in `dir` for appends after the caller recovered it with
    /// [`crate::recover`] (same `opts.recovery`, nothing written since):
    /// applies what recovery decided (a cut tail, discarded segments) and
    /// starts a new segment. Splitting the two lets a caller check what it
    /// replayed before anything on disk changes, so an open it refuses
    /// leaves the files as they were.
    pub fn open_recovered(
        storage: StorageRef,
        dir: impl AsRef<Path>,
        opts: WalOptions,
        rec: &Recovery,
    ) -> Result<Wal> {
        Wal::open_recovered_at(storage, dir, opts, rec, rec.next_lsn)
    }

    /// [`Wal::open_recovered`], with LSNs going on from at least
    /// `first_lsn`. A caller whose own records say LSNs up to
    /// `first_lsn - 1` were used (the engine's manifest) passes that mark,
    /// so a log that lost its tail (a power cut after a checkpoint, a cut
    /// at damage) never hands out an LSN twice. When the mark is past what
    /// recovery found, the caller vouches it needs none of the recovered
    /// records: every recovered segment is released before the new one
    /// starts, so the log holds no gap.
    pub fn open_recovered_at(
        storage: StorageRef,
        dir: impl AsRef<Path>,
        opts: WalOptions,
        rec: &Recovery,
        first_lsn: Lsn,
    ) -> Result<Wal> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        strata_io::create_dir_durable(&*storage, &dir)?;
        let mut changed = false;
        for p in rec.discarded.iter().rev() {
            storage.remove_file(p)?;
            changed = true;
        }
        let mut segments: VecDeque<SegmentFile> = rec.segments.iter().cloned().collect();
        let mut recycled = rec.recycled.clone();
        let next_lsn = rec.next_lsn.max(first_lsn);
        // Segment numbers never go back, recycled and discarded files
        // included: a reused number would give a recycled file's old
        // fragments the new segment's tag, and they would read as records.
        let next_segno = segments
            .iter()
            .map(|s| s.segno)
            .chain(
                rec.recycled
                    .iter()
                    .chain(&rec.discarded)
                    .filter_map(|p| segno_of(p)),
            )
            .max()
            .map_or(1, |n| n + 1);
        // Records recovered from the page cache after a process crash may
        // not be on disk yet (segments are sealed in the background under
        // `Never`/`Interval`): make them durable before anything new, since
        // new entries will vouch for them.
        for seg in &segments {
            storage
                .open(&seg.path, OpenOptions::existing())?
                .sync_data()?;
        }
        // A last segment holding no record is released once the new one
        // exists (not before: a WAL left without any segment would not
        // know where its LSNs had got to).
        let empty_last = match segments.back() {
            Some(last) if last.first_lsn >= rec.next_lsn && rec.truncated.is_none() => {
                segments.pop_back()
            }
            _ => None,
        };
        let (segments, empty_last) = if next_lsn > rec.next_lsn {
            // Skipping LSNs: nothing recovered is wanted (see above).
            for old in segments.into_iter().chain(empty_last) {
                release_segment(&*storage, &dir, opts.recycle_segments, &mut recycled, &old)?;
                changed = true;
            }
            (VecDeque::new(), None)
        } else {
            (segments, empty_last)
        };
        if changed {
            storage.sync_dir(&dir)?;
        }
        let last_lsn = next_lsn - 1;
        let io = Io {
            active: None,
            segments,
            recycled,
            enc: Vec::new(),
            sealing: None,
            preparing: None,
        };
        let inner = Arc::new(Inner {
            storage,
            dir,
            opts,
            state: Mutex::new(State {
                waiters: Vec::new(),
                next_waiter_id: 0,
                stats: WalStats::default(),
                batch_ewma: 1.0,
                sync_ewma_ns: 0.0,
                collect_target: 0,
                next_lsn,
                pending: Vec::new(),
                spare: Vec::new(),
                pending_first: next_lsn,
                pending_count: 0,
                written: last_lsn,
                durable: last_lsn,
                leader: false,
                failed: None,
                closed: false,
                sync_wanted: 0,
                unsynced_bytes: 0,
                last_sync: Instant::now(),
            }),
            batch_cv: Condvar::new(),
            written_pub: AtomicU64::new(last_lsn),
            durable_pub: AtomicU64::new(last_lsn),
            spinners: std::sync::atomic::AtomicUsize::new(0),
            io: Mutex::new(io),
            flusher: Mutex::new(None),
            rotations: AtomicU64::new(0),
        });
        {
            let mut io = inner.io.lock();
            inner.rotate(&mut io, next_lsn, next_segno)?;
            if let Some(last) = empty_last {
                let keep = inner.opts.recycle_segments;
                release_segment(&*inner.storage, &inner.dir, keep, &mut io.recycled, &last)?;
                inner.storage.sync_dir(&inner.dir)?;
            }
        }
        let tick = match inner.opts.sync {
            SyncPolicy::Interval { every, .. } if inner.opts.buffered() => {
                Some(every.min(inner.opts.buffer_flush_every))
            }
            SyncPolicy::Interval { every, .. } => Some(every),
            _ if inner.opts.buffered() => Some(inner.opts.buffer_flush_every),
            _ => None,
        };
        if let Some(tick) = tick {
            let weak = Arc::downgrade(&inner);
            let handle = std::thread::Builder::new()
                .name("strata-wal-flush".into())
                .spawn(move || flusher(weak, tick))
                .map_err(|e| {
                    Error::InvalidOption(format!("cannot start WAL flusher thread: {e}"))
                })?;
            *inner.flusher.lock() = Some(handle);
        }
        Ok(Wal { inner })
    }

    /// Appends a record and returns its LSN once the sync policy is met:
    /// durable for `Always`, written to the OS (or, with a write buffer,
    /// buffered) otherwise. On an I/O error the WAL stops accepting writes;
    /// every appender whose record was not yet acknowledged gets
    /// [`Error::Failed`], and a reopen recovers what reached the disk.
    pub fn append(&self, record: &[u8]) -> Result<Lsn> {
        if record.len() > MAX_RECORD_LEN {
            return Err(Error::RecordTooLarge {
                len: record.len(),
                max: MAX_RECORD_LEN,
            });
        }
        let inner = &*self.inner;
        let mut st = inner.state.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if let Some(e) = &st.failed {
            return Err(Error::Failed(e.clone()));
        }
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        if st.pending_count == 0 {
            st.pending_first = lsn;
        }
        st.pending_count += 1;
        put_varint(&mut st.pending, record.len() as u64);
        st.pending.extend_from_slice(record);
        if st.collect_target > 0 && st.pending_count >= st.collect_target {
            inner.batch_cv.notify_one();
        }
        if inner.opts.buffered() && st.pending.len() < inner.opts.write_buffer {
            return Ok(lsn);
        }
        let need = if inner.opts.sync == SyncPolicy::Always {
            Need::Durable
        } else {
            Need::Written
        };
        inner.wait_for(st, lsn, need)?;
        Ok(lsn)
    }

    /// Writes and fsyncs everything appended so far; returns the durable LSN.
    pub fn sync(&self) -> Result<Lsn> {
        let st = self.inner.state.lock();
        let target = st.next_lsn - 1;
        self.wait_durable_locked(st, target)?;
        Ok(target)
    }

    /// Hands every buffered record to the OS (no fsync).
    pub fn flush(&self) -> Result<()> {
        let st = self.inner.state.lock();
        let target = st.next_lsn - 1;
        self.inner.wait_for(st, target, Need::Written)
    }

    /// Returns once the record `lsn` (and all before it) is durable,
    /// syncing if no one else will.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<()> {
        let st = self.inner.state.lock();
        if lsn >= st.next_lsn {
            return Err(Error::InvalidOption(format!(
                "LSN {lsn} has not been appended (next is {})",
                st.next_lsn
            )));
        }
        self.wait_durable_locked(st, lsn)
    }

    fn wait_durable_locked(&self, mut st: MutexGuard<'_, State>, lsn: Lsn) -> Result<()> {
        if st.durable >= lsn {
            return Ok(());
        }
        st.sync_wanted = st.sync_wanted.max(lsn);
        self.inner.wait_for(st, lsn, Need::Durable)
    }

    /// Highest LSN known durable: it and every record before it survive a
    /// crash.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.state.lock().durable
    }

    /// Highest LSN handed to the OS.
    pub fn written_lsn(&self) -> Lsn {
        self.inner.state.lock().written
    }

    /// Highest LSN assigned so far (0 if none).
    pub fn last_lsn(&self) -> Lsn {
        self.inner.state.lock().next_lsn - 1
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        let st = self.inner.state.lock();
        let mut s = st.stats;
        s.rotations = self
            .inner
            .rotations
            .load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    /// The live segment files, oldest first.
    pub fn segments(&self) -> Vec<SegmentFile> {
        self.inner.io.lock().segments.iter().cloned().collect()
    }

    /// Empties the log for a caller that has checkpointed every record
    /// (the engine at a clean close, after flushing): the following
    /// records go to a new segment, every older segment and every file
    /// kept for reuse is deleted. The next open then reads one small,
    /// empty segment instead of the megabytes of the last one (recovery
    /// reads whole segment files, and recycled ones are full-size).
    /// LSNs continue. Fails if records are pending.
    pub fn clear(&self) -> Result<()> {
        let inner = &*self.inner;
        let next = {
            let st = inner.state.lock();
            if st.pending_count > 0 {
                return Err(Error::InvalidOption(
                    "clear with records not yet written".into(),
                ));
            }
            st.next_lsn
        };
        inner.with_leadership(|io| {
            inner.finish_seal(io)?;
            if let Some(ready) = inner.finish_prepare(io) {
                io.recycled.push(ready);
            }
            for p in std::mem::take(&mut io.recycled) {
                inner.storage.remove_file(&p)?;
            }
            let segno = io.segments.back().map_or(1, |s| s.segno + 1);
            inner.rotate(io, next, segno)?;
            while io.segments.len() > 1 {
                let Some(old) = io.segments.pop_front() else {
                    break;
                };
                inner.storage.remove_file(&old.path)?;
                // As in `purge_before`: what survives a crash stays a
                // contiguous run of segments.
                inner.storage.sync_dir(&inner.dir)?;
            }
            Ok(())
        })
    }

    /// Releases every segment whose records all have LSNs below `lsn` (a
    /// checkpoint: the caller no longer needs them for recovery). Released
    /// segments are kept for reuse up to `recycle_segments`, else deleted.
    /// The current segment is never released. Returns how many were.
    pub fn purge_before(&self, lsn: Lsn) -> Result<usize> {
        let inner = &*self.inner;
        inner.with_leadership(|io| {
            inner.finish_seal(io)?;
            let mut released = 0;
            while io.segments.len() > 1 && io.segments.get(1).is_some_and(|s| s.first_lsn <= lsn) {
                let Some(old) = io.segments.pop_front() else {
                    break;
                };
                let keep = inner.opts.recycle_segments;
                release_segment(&*inner.storage, &inner.dir, keep, &mut io.recycled, &old)?;
                // One directory sync per segment keeps the surviving set a
                // contiguous run of segments whatever a crash keeps.
                inner.storage.sync_dir(&inner.dir)?;
                released += 1;
            }
            Ok(released)
        })
    }

    /// Writes and syncs everything, then stops accepting appends.
    pub fn close(&self) -> Result<()> {
        let res = self.sync().map(|_| ());
        self.inner.state.lock().closed = true;
        {
            // The next segment's file, if one is being made, is finished
            // (and kept for the next open to reuse) before close returns.
            let mut io = self.inner.io.lock();
            if let Some(ready) = self.inner.finish_prepare(&mut io) {
                io.recycled.push(ready);
            }
        }
        if let Some(h) = self.inner.flusher.lock().take() {
            let _ = h.join();
        }
        res
    }
}

impl Inner {
    /// Waits until record `lsn` is written or durable, leading a round of
    /// I/O whenever no other thread is.
    fn wait_for<'a>(&'a self, mut st: MutexGuard<'a, State>, lsn: Lsn, need: Need) -> Result<()> {
        loop {
            if st.satisfies(lsn, need) {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(Error::Failed(e.clone()));
            }
            if !st.leader {
                st.leader = true;
                st = self.lead(st);
                // Records that arrived during our I/O: write them at once
                // rather than wait for a woken thread to be scheduled (on a
                // busy machine that handoff costs more than the write).
                // Bounded, so the leader's own latency stays bounded.
                let mut extra = 0;
                while extra < EXTRA_LEADER_ROUNDS
                    && st.pending_count > 0
                    && !st.leader
                    && st.failed.is_none()
                {
                    st.leader = true;
                    st = self.lead(st);
                    extra += 1;
                }
                st = self.hand_over(st);
                continue;
            }
            match self.park(st, lsn, need) {
                Some(g) => st = g,
                None => return Ok(()),
            }
        }
    }

    /// Registers the calling thread as a waiter and sleeps without holding
    /// the state lock, so a finished batch wakes all its appenders at once
    /// instead of handing a mutex from one to the next. Returns `None` when
    /// the wait is over (the record is written/durable), or the relocked
    /// state when the caller must look again (it may have to lead).
    fn park<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        lsn: Lsn,
        need: Need,
    ) -> Option<MutexGuard<'a, State>> {
        let id = st.next_waiter_id;
        st.next_waiter_id += 1;
        st.waiters.push(Waiter {
            id,
            lsn,
            need,
            thread: std::thread::current(),
        });
        drop(st);
        // Spin briefly first: the batch we wait for is usually done within
        // one fsync, and on a VM a sleeping vCPU takes tens of microseconds
        // to wake, which would add to every group commit.
        // One spinner is enough to keep a vCPU awake; more would take CPU
        // from the leader and from io_uring's kernel workers.
        if self.spinners.fetch_add(1, Ordering::AcqRel) < MAX_SPINNERS {
            let spin_until = Instant::now() + SPIN_BEFORE_PARK;
            while Instant::now() < spin_until {
                if self.satisfied_fast(lsn, need) {
                    self.spinners.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                std::thread::yield_now();
            }
        }
        self.spinners.fetch_sub(1, Ordering::AcqRel);
        loop {
            std::thread::park();
            if self.satisfied_fast(lsn, need) {
                return None;
            }
            let mut st = self.state.lock();
            let registered = st.waiters.iter().any(|w| w.id == id);
            if registered && st.leader && st.failed.is_none() && !st.satisfies(lsn, need) {
                // A spurious wakeup: keep sleeping.
                drop(st);
                continue;
            }
            if registered {
                st.waiters.retain(|w| w.id != id);
            }
            return Some(st);
        }
    }

    /// Checks the published LSNs without the lock.
    fn satisfied_fast(&self, lsn: Lsn, need: Need) -> bool {
        match need {
            Need::Written => self.written_pub.load(Ordering::Acquire) >= lsn,
            Need::Durable => self.durable_pub.load(Ordering::Acquire) >= lsn,
            Need::Leadership => false,
        }
    }

    /// Wakes every waiter whose record is done (all of them after a
    /// failure), outside the lock.
    fn wake_finished<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let failed = st.failed.is_some();
        let (written, durable) = (st.written, st.durable);
        let mut woken = Vec::new();
        st.waiters.retain(|w| {
            let done = failed
                || match w.need {
                    Need::Written => written >= w.lsn,
                    Need::Durable => durable >= w.lsn,
                    Need::Leadership => false,
                };
            if done {
                woken.push(w.thread.clone());
            }
            !done
        });
        if !woken.is_empty() {
            MutexGuard::unlocked(&mut st, || woken.iter().for_each(|t| t.unpark()));
        }
        st
    }

    /// After leading: if threads still wait and nobody leads, wake one of
    /// them to take over.
    fn hand_over<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if st.leader || st.waiters.is_empty() {
            return st;
        }
        let w = st.waiters.remove(0);
        MutexGuard::unlocked(&mut st, || w.thread.unpark());
        st
    }

    /// One round of leadership: write what is pending, sync if due.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if self.opts.sync == SyncPolicy::Always {
            self.collect(&mut st);
        }
        let spare = std::mem::take(&mut st.spare);
        let batch = std::mem::replace(&mut st.pending, spare);
        let first = st.pending_first;
        let count = st.pending_count;
        st.pending_count = 0;
        st.pending_first = st.next_lsn;
        let last = if count > 0 {
            first + u64::from(count) - 1
        } else {
            st.written
        };
        let synced_lsn = st.durable;
        let batch_bytes = batch.len() as u64;
        let sync = last > st.durable
            && (st.sync_wanted > st.durable
                || match self.opts.sync {
                    SyncPolicy::Always => true,
                    SyncPolicy::Interval { every, bytes } => {
                        st.unsynced_bytes + batch_bytes >= bytes || st.last_sync.elapsed() >= every
                    }
                    SyncPolicy::Never => false,
                });
        let io_start = Instant::now();
        let res = MutexGuard::unlocked(&mut st, || {
            let mut io = self.io.lock();
            if count > 0 {
                let header = EntryHeader {
                    first_lsn: first,
                    count,
                    synced_lsn,
                };
                self.write_entry(&mut io, &header, &batch, sync)
            } else if sync {
                self.finish_seal(&mut io)?;
                match &mut io.active {
                    Some(a) => a.writer.sync_data().map(|()| 0),
                    None => Ok(0),
                }
            } else {
                Ok(0)
            }
        });
        match res {
            Ok(written_bytes) => {
                if sync && count > 0 {
                    let ns = io_start.elapsed().as_nanos().min(u128::from(u32::MAX)) as f64;
                    st.sync_ewma_ns = 0.8 * st.sync_ewma_ns + 0.2 * ns;
                    st.batch_ewma = 0.8 * st.batch_ewma + 0.2 * f64::from(count);
                }
                st.stats.records += u64::from(count);
                st.stats.batches += u64::from(count > 0);
                st.stats.syncs += u64::from(sync);
                st.stats.bytes_written += written_bytes;
                st.written = last;
                st.unsynced_bytes += batch_bytes;
                if sync {
                    st.durable = last;
                    st.unsynced_bytes = 0;
                    st.last_sync = Instant::now();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "WAL write failed; the log stops accepting writes");
                st.failed = Some(strata_io::Stopped::new(
                    format!("WAL {}", self.dir.display()),
                    &e,
                    e.raw_os_error(),
                ));
            }
        }
        let mut batch = batch;
        batch.clear();
        st.spare = batch;
        st.leader = false;
        self.written_pub.store(st.written, Ordering::Release);
        self.durable_pub.store(st.durable, Ordering::Release);
        self.wake_finished(st)
    }

    /// Group-commit window. When recent synced batches held several records
    /// and fewer are pending now, the threads whose records were just made
    /// durable are probably about to append again: wait for them, at most
    /// half a typical sync, so one fsync serves them all. Without this the
    /// appenders split into two halves that alternate between batches. A
    /// lone writer never waits (its batches hold one record).
    fn collect(&self, st: &mut MutexGuard<'_, State>) {
        let target = st.batch_ewma.round() as u32;
        if target <= 1 || st.pending_count == 0 || st.pending_count >= target {
            return;
        }
        let wait = Duration::from_nanos((st.sync_ewma_ns / 2.0) as u64).min(MAX_COLLECT_WAIT);
        let deadline = Instant::now() + wait;
        st.collect_target = target;
        while st.pending_count < target && st.failed.is_none() {
            if self.batch_cv.wait_until(st, deadline).timed_out() {
                break;
            }
        }
        st.collect_target = 0;
        // The window did not fill: expect smaller batches from now on.
        if st.pending_count < target {
            st.batch_ewma = 0.5 * st.batch_ewma + 0.5 * f64::from(st.pending_count);
        }
    }

    /// Runs `f` on the segment state as the leader, so no write or rotation
    /// runs at the same time.
    fn with_leadership<T>(&self, f: impl FnOnce(&mut Io) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock();
        while st.leader {
            st = match self.park(st, 0, Need::Leadership) {
                Some(g) => g,
                None => self.state.lock(),
            };
        }
        st.leader = true;
        let res = MutexGuard::unlocked(&mut st, || f(&mut self.io.lock()));
        st.leader = false;
        drop(self.hand_over(st));
        res
    }
}

/// Releases a segment the log no longer needs: kept for reuse (renamed to
/// `.recycle`) while fewer than `keep` are, else deleted. The caller syncs
/// the directory.
fn release_segment(
    storage: &dyn strata_io::Storage,
    dir: &Path,
    keep: usize,
    recycled: &mut Vec<PathBuf>,
    seg: &SegmentFile,
) -> Result<()> {
    if recycled.len() < keep {
        let to = recycle_path(dir, seg.segno);
        storage.rename(&seg.path, &to)?;
        recycled.push(to);
    } else {
        storage.remove_file(&seg.path)?;
    }
    Ok(())
}

fn flusher(weak: Weak<Inner>, tick: Duration) {
    loop {
        std::thread::sleep(tick);
        let Some(inner) = weak.upgrade() else { return };
        let mut st = inner.state.lock();
        if st.closed || st.failed.is_some() {
            return;
        }
        let interval_due = match inner.opts.sync {
            SyncPolicy::Interval { every, .. } => {
                st.written > st.durable && st.last_sync.elapsed() >= every
            }
            _ => false,
        };
        if interval_due {
            st.sync_wanted = st.sync_wanted.max(st.written);
        }
        if (st.pending_count > 0 || interval_due) && !st.leader {
            st.leader = true;
            let st = inner.lead(st);
            drop(inner.hand_over(st));
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // No preparation thread outlives the log; its file stays for the
        // next open to reuse.
        if let Some(p) = self.io.get_mut().preparing.take() {
            let _ = p.join();
        }
        let st = self.state.get_mut();
        if st.closed || st.failed.is_some() {
            return;
        }
        // Best effort on drop: make what was appended durable. `close`
        // reports errors; drop can only log them.
        let mut st = self.state.lock();
        let target = st.next_lsn - 1;
        st.sync_wanted = target;
        if let Err(e) = self.wait_for(st, target, Need::Durable) {
            tracing::warn!(error = %e, "WAL sync on drop failed");
        }
    }
}
