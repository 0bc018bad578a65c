//! The engine: `Db::open`, writes through the WAL into the memtable,
//! background flushes to L0 tables, background compactions (leveled or
//! tiered) recorded in the manifest, point reads and iterators at a
//! snapshot, write stalls, and recovery.
//!
//! Directory layout: `STRATA` (identity and format version), `LOCK`
//! (exclusive lock), `wal/` (the write-ahead log), `manifest/` (version
//! edits), `<number:06>.sst` (tables).
//!
//! Write path: under the write lock a batch gets consecutive sequence
//! numbers, goes to the WAL (written to the OS) and into the memtable, and
//! becomes visible; a `sync` write then waits, outside the lock, until the
//! WAL has fsynced it, so concurrent synced writers share one fsync. A
//! full memtable becomes immutable and the flush thread writes it to an L0
//! table, fsyncs it and the directory, records it in the manifest with the
//! WAL LSN it covers, and releases older WAL segments.
//!
//! By job: `recovery` (opening), `flush` (memtable switches and flushes,
//! inline ones in the deterministic mode), `compact` (compactions),
//! `stall` (backpressure), `version` (the tree), `stats`, `options`; this
//! file holds the shared state and the public API.
//!
//! Backpressure, as in RocksDB: when every memtable is full, or L0 holds
//! `level0_stop_writes_trigger` files, or the compaction debt passes the
//! hard limit, writers wait; at the slowdown triggers each write is
//! delayed so writers together get `delayed_write_rate`. Every wait is
//! counted in [`DbStats::stalls`].

mod compact;
mod flush;
mod multi_get;
mod options;
mod recovery;
mod stall;
mod stats;
mod version;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};
use strata_io::{FileLock, StorageRef};
use strata_wal::Wal;

use crate::batch::{self, BatchEntry, BatchOp, WriteBatch};
use crate::cache::{BlockCache, CacheStats};
use crate::iter::{DbIterator, InternalIterator, LevelIter, MemIter, MergingIter, ReadOptions};
use crate::key::Kind;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::picker::{LeveledPicker, Picker};
use crate::table::Table;
use crate::{Error, Result};

pub use options::{CompactionStyle, Options, WriteOptions};
pub use stats::{DbStats, LevelStats, StallStats};

use compact::RateLimiter;
use stall::Stall;
use stats::{Counters, StallCause};
use version::Version;

const IDENTITY: &str = "STRATA";
const IDENTITY_CONTENTS: &[u8] = b"strata-db format 1\n";

/// How long a waiting thread sleeps before it looks again (a safety net:
/// every state change also wakes waiters).
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Background work: the flush thread and the compaction threads.
struct BgState {
    closing: bool,
    /// The first failure of a flush or compaction; writes are refused.
    error: Option<strata_io::Stopped>,
    /// Files owned by running compactions.
    busy: HashSet<u64>,
    /// Compactions running.
    running: usize,
    /// A manual compaction runs or waits: no new automatic ones start.
    manual: bool,
}

/// State serialised by the write lock.
struct WriteState {
    /// Bytes written while slowed down and not yet paid for by a sleep.
    delay_debt: u64,
}

/// The shared engine.
///
/// Locks, and what each guards:
/// * `write`: the order of writes (sequence numbers, WAL appends, memtable
///   inserts, memtable switches) and the stall debt.
/// * `version`: the current tables and memtables (readers clone the `Arc`).
/// * `bg`: background state (`BgState`); `bg_cv` waits on it.
/// * `manifest`: the manifest log and the file-number counter.
/// * `snapshots`: the live snapshots' sequence numbers.
///
/// Order: `write`, then `bg`, then `version`; `manifest` and `snapshots`
/// are taken with no other lock held, and `version` is never held across
/// I/O or while waiting.
struct Inner {
    storage: StorageRef,
    dir: PathBuf,
    opts: Options,
    picker: Box<dyn Picker>,
    wal: Wal,
    manifest: Mutex<Manifest>,
    write: Mutex<WriteState>,
    last_seq: AtomicU64,
    version: RwLock<Arc<Version>>,
    bg: Mutex<BgState>,
    /// Signalled on every change of versions and background state.
    bg_cv: Condvar,
    stall: AtomicU8,
    snapshots: Mutex<BTreeMap<u64, usize>>,
    cache: Option<Arc<BlockCache>>,
    limiter: RateLimiter,
    stats: Counters,
    closed: AtomicBool,
    _lock: FileLock,
    recovery: RecoveryInfo,
}

/// A key-value database. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    threads: Arc<Threads>,
}

/// What opening the database found and did, as [`Db::recovery`] reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// WAL batches replayed into the memtable (those newer than the tables).
    pub wal_batches_replayed: u64,
    /// Where the WAL was cut: a torn tail, or damage nothing later showed
    /// to be durable; the records after it were not recovered.
    pub wal_cut: Option<strata_wal::Damage>,
    /// Where the manifest was cut, likewise (the edits after it were lost).
    pub manifest_cut: Option<strata_wal::Damage>,
    /// Tables left by a flush or compaction that never reached the
    /// manifest, deleted.
    pub orphans_deleted: u64,
}

/// One table, as [`Db::tables`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// File number (`<number:06>.sst`).
    pub number: u64,
    /// Bytes.
    pub size: u64,
    /// Entries (all versions, deletes included).
    pub entries: u64,
    /// Smallest user key (range tombstones included).
    pub smallest: Vec<u8>,
    /// Largest user key (range tombstones included).
    pub largest: Vec<u8>,
    /// The file.
    pub path: PathBuf,
}

/// A consistent read view: reads through it see the database as of its
/// creation, and compactions keep the versions it needs. Released on drop.
pub struct Snapshot {
    seq: u64,
    inner: Arc<Inner>,
}

impl Snapshot {
    /// The sequence number it reads at.
    pub fn seqno(&self) -> u64 {
        self.seq
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut s = self.inner.snapshots.lock();
        if let Some(n) = s.get_mut(&self.seq) {
            *n -= 1;
            if *n == 0 {
                s.remove(&self.seq);
            }
        }
    }
}

/// Applies one batch entry to a memtable at sequence number `seq`.
fn apply(mem: &Memtable, e: &BatchEntry<'_>, seq: u64) {
    match e.op {
        BatchOp::Put => mem.insert(e.key, seq, Kind::Put, e.value),
        BatchOp::Delete => mem.insert(e.key, seq, Kind::Delete, &[]),
        BatchOp::DeleteRange => mem.delete_range(e.key, e.value, seq),
    }
}

/// Drops `x` in this (background) thread once the writers and readers
/// still holding it let go, waiting up to 100 ms: freeing a memtable's
/// millions of nodes, or unlinking a large table, takes tens of
/// milliseconds, which must not land on whichever put or get happens to
/// drop the last reference. A long-lived iterator may still hold it; then
/// the iterator's drop frees it.
fn release_here<T>(x: Arc<T>) {
    if Arc::strong_count(&x) == 1 {
        return;
    }
    let deadline = Instant::now() + Duration::from_millis(100);
    while Arc::strong_count(&x) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
    drop(x);
}

fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

impl Db {
    /// Opens the database in `dir`, creating it if allowed, and recovers:
    /// the manifest names the tables and their levels, and WAL records
    /// newer than the last flush are replayed into the memtable (a torn
    /// WAL tail is cut off).
    pub fn open(storage: StorageRef, dir: impl AsRef<Path>, opts: Options) -> Result<Db> {
        recovery::open(storage, dir.as_ref(), opts)
    }

    /// Sets `key` to `value`.
    pub fn put(&self, key: &[u8], value: &[u8], opts: WriteOptions) -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(key, value);
        self.write(&b, opts)
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &[u8], opts: WriteOptions) -> Result<()> {
        let mut b = WriteBatch::new();
        b.delete(key);
        self.write(&b, opts)
    }

    /// Applies a batch atomically: after a crash it is there whole or not
    /// at all; readers see all of it or none.
    pub fn write(&self, b: &WriteBatch, opts: WriteOptions) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        inner.check_open()?;
        inner.check_bg_error()?;
        let sync = opts.sync || inner.opts.sync_by_default;
        if opts.disable_wal && sync {
            return Err(Error::InvalidArgument(
                "a write cannot be synced without the WAL (sync with disable_wal)".into(),
            ));
        }
        let lsn = {
            let mut w = inner.write.lock();
            inner.throttle(&mut w, b.payload_bytes(), opts.no_slowdown)?;
            let first = inner.last_seq.load(Ordering::Acquire) + 1;
            if first + b.len() as u64 - 1 > crate::key::MAX_SEQNO {
                return Err(Error::InvalidArgument(format!(
                    "sequence numbers exhausted: a batch of {} from {first} would pass 2^56",
                    b.len()
                )));
            }
            let rec = b.encode(first);
            let lsn = if opts.disable_wal {
                inner.wal.last_lsn()
            } else {
                inner.wal.append(&rec)?
            };
            inner
                .stats
                .user_bytes
                .fetch_add(b.payload_bytes(), Ordering::Relaxed);
            let v = inner.version.read().clone();
            let (_, entries) = batch::decode(&rec)
                .map_err(|r| Error::InvalidArgument(format!("batch encoding: {r}")))?;
            for (i, e) in entries.iter().enumerate() {
                apply(&v.mem, e, first + i as u64);
            }
            inner
                .last_seq
                .store(first + entries.len() as u64 - 1, Ordering::Release);
            let full = v.mem.approximate_bytes() >= inner.opts.write_buffer_size;
            drop(v);
            if full {
                inner.switch_memtable(lsn)?;
                inner.run_inline()?;
            }
            lsn
        };
        if sync {
            inner.wal.wait_durable(lsn)?;
        }
        Ok(())
    }

    /// Deletes every key in `[start, end)` (nothing if `start >= end`).
    pub fn delete_range(&self, start: &[u8], end: &[u8], opts: WriteOptions) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        b.delete_range(start, end);
        self.write(&b, opts)
    }

    /// The newest value of `key` (as of `snapshot` if given).
    pub fn get(&self, key: &[u8], snapshot: Option<&Snapshot>) -> Result<Option<Vec<u8>>> {
        let seq = match snapshot {
            Some(s) => s.seq,
            None => self.inner.last_seq.load(Ordering::Acquire),
        };
        let stats = &self.inner.stats;
        stats.gets.fetch_add(1, Ordering::Relaxed);
        let v = self.inner.version.read().clone();
        let (hidden_below, mut best) = v.lookup_start(key, seq);
        if best.is_none() {
            for f in v.tables_for_key(key) {
                if !f.table.may_contain(key) {
                    stats.bloom_skips.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats.tables_probed.fetch_add(1, Ordering::Relaxed);
                if let Some(e) = f.table.get_entry_unfiltered(key, seq)? {
                    best = Some(e);
                    break;
                }
            }
        }
        Ok(match best {
            Some((s, Kind::Put, value)) if s > hidden_below => Some(value),
            _ => None,
        })
    }

    /// A cursor over the live keys, at `opts.snapshot` (or now), within
    /// the bounds or prefix, forwards and backwards.
    pub fn iter(&self, opts: ReadOptions) -> DbIterator {
        let seq = opts
            .snapshot
            .unwrap_or_else(|| self.inner.last_seq.load(Ordering::Acquire));
        let v = self.inner.version.read().clone();
        let mut children: Vec<Box<dyn InternalIterator>> =
            vec![Box::new(MemIter::new(v.mem.clone()))];
        let mut tombstones = v.mem.range_tombstones();
        for (imm, _) in &v.imms {
            children.push(Box::new(MemIter::new(imm.clone())));
            tombstones.extend(imm.range_tombstones());
        }
        for (l, files) in v.levels.iter().enumerate() {
            for f in files {
                tombstones.extend(f.table.range_tombstones().iter().cloned());
            }
            if l == 0 {
                for f in files {
                    children.push(Box::new(f.table.iter()));
                }
            } else if !files.is_empty() {
                children.push(Box::new(LevelIter::new(
                    files.iter().map(|f| f.level_file()).collect(),
                )));
            }
        }
        tombstones.retain(|t| t.seqno <= seq);
        let pin: Arc<dyn Send + Sync> = v;
        DbIterator::new(MergingIter::new(children), seq, opts, tombstones, vec![pin])
    }

    /// A read view of the database as it is now.
    pub fn snapshot(&self) -> Snapshot {
        let seq = self.inner.last_seq.load(Ordering::Acquire);
        *self.inner.snapshots.lock().entry(seq).or_insert(0) += 1;
        Snapshot {
            seq,
            inner: self.inner.clone(),
        }
    }

    /// Writes the memtables to tables and waits until they are in the manifest.
    pub fn flush(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        {
            let _w = inner.write.lock();
            if !inner.version.read().mem.is_empty() {
                let lsn = inner.wal.last_lsn();
                inner.switch_memtable(lsn)?;
            }
            inner.run_inline()?;
        }
        inner.wait_flushed()
    }

    /// Compacts every table holding keys in `[start, end]` (`None`: no
    /// bound) down to one level, dropping versions no snapshot can see,
    /// deletes that hide nothing any more and what range deletes cover.
    /// Flushes the memtables first and waits for running compactions.
    /// Tiered (universal) compaction merges every run whatever the range.
    pub fn compact_range(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        self.flush()?;
        self.inner.manual_compaction(start, end)
    }

    /// Waits until no flush or compaction is running or due (RocksDB's
    /// `WaitForCompact`): the tree is in the shape the options ask for.
    pub fn wait_for_compactions(&self) -> Result<()> {
        {
            let _w = self.inner.write.lock();
            self.inner.run_inline()?;
        }
        self.inner.wait_idle()
    }

    /// Counters since open, the tree's shape and the amplification figures.
    /// `Display` prints them as a report.
    pub fn stats(&self) -> DbStats {
        let inner = &*self.inner;
        let c = &inner.stats;
        let v = inner.version.read().clone();
        let shape = v.shape(&HashSet::new());
        let targets = match inner.opts.compaction_style {
            CompactionStyle::Level => Some(
                LeveledPicker {
                    l0_trigger: inner.opts.level0_file_num_compaction_trigger,
                    base_bytes: inner.opts.max_bytes_for_level_base,
                    ratio: inner.opts.max_bytes_for_level_multiplier,
                    max_levels: inner.opts.num_levels,
                    dynamic: inner.opts.level_compaction_dynamic_level_bytes,
                }
                .targets(&shape),
            ),
            CompactionStyle::Universal => None,
        };
        let load = |a: &[AtomicU64], i: usize| a.get(i).map_or(0, |x| x.load(Ordering::Relaxed));
        let levels = v
            .levels
            .iter()
            .enumerate()
            .map(|(l, fs)| LevelStats {
                files: fs.len() as u64,
                bytes: fs.iter().map(|f| f.size()).sum(),
                target_bytes: targets
                    .as_ref()
                    .and_then(|t| t.bytes.get(l).copied())
                    .filter(|_| l > 0)
                    .unwrap_or(0),
                read_bytes: load(&c.level_read, l),
                write_bytes: load(&c.level_written, l),
                compactions: load(&c.level_compactions, l),
            })
            .collect();
        let stall = |cause: StallCause| {
            (
                c.stall_counts[cause.index()].load(Ordering::Relaxed),
                c.stall_micros[cause.index()].load(Ordering::Relaxed),
            )
        };
        DbStats {
            levels,
            user_bytes: c.user_bytes.load(Ordering::Relaxed),
            wal_bytes: inner.wal.stats().bytes_written,
            flushes: c.flushes.load(Ordering::Relaxed),
            flushed_bytes: c.flushed_bytes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            compacted_bytes: c.compacted_bytes.load(Ordering::Relaxed),
            compaction_read_bytes: c.compaction_read_bytes.load(Ordering::Relaxed),
            compaction_micros: c.compaction_micros.load(Ordering::Relaxed),
            running_compactions: inner.bg.lock().running as u64,
            pending_compaction_bytes: inner.picker.pending_bytes(&shape),
            gets: c.gets.load(Ordering::Relaxed),
            tables_probed: c.tables_probed.load(Ordering::Relaxed),
            bloom_skips: c.bloom_skips.load(Ordering::Relaxed),
            stalls: StallStats {
                memtable: stall(StallCause::Memtable),
                l0_slowdown: stall(StallCause::L0Slowdown),
                l0_stop: stall(StallCause::L0Stop),
                pending_slowdown: stall(StallCause::PendingSlowdown),
                pending_stop: stall(StallCause::PendingStop),
            },
            rate_limit_micros: c.rate_limit_micros.load(Ordering::Relaxed),
            cache: self.block_cache_stats(),
        }
    }

    /// Block cache counters (zero if the cache is disabled).
    pub fn block_cache_stats(&self) -> CacheStats {
        self.inner
            .cache
            .as_ref()
            .map(|c| c.stats())
            .unwrap_or_default()
    }

    /// WAL segments still needed for recovery (the current one included).
    pub fn wal_segment_count(&self) -> usize {
        self.inner.wal.segments().len()
    }

    /// Number of tables, all levels.
    pub fn table_count(&self) -> usize {
        self.inner.version.read().levels.iter().map(Vec::len).sum()
    }

    /// Tables per level, L0 first.
    pub fn level_file_counts(&self) -> Vec<usize> {
        self.inner
            .version
            .read()
            .levels
            .iter()
            .map(Vec::len)
            .collect()
    }

    /// Reads every block of every table from disk and checks it (RocksDB's
    /// `VerifyChecksum`); opening already checked the manifest, the WAL and
    /// each table's footer, index, filter and properties. Returns the
    /// tables and data blocks checked; the first damage is
    /// [`Error::Corruption`] naming file and offset.
    pub fn verify_checksums(&self) -> Result<(u64, u64)> {
        let v = self.inner.version.read().clone();
        let (mut tables, mut blocks) = (0, 0);
        for f in v.levels.iter().flatten() {
            blocks += f.table.verify()?;
            tables += 1;
        }
        Ok((tables, blocks))
    }

    /// What opening the database found and did: WAL batches replayed, a
    /// WAL or manifest tail cut, orphan tables deleted.
    pub fn recovery(&self) -> &RecoveryInfo {
        &self.inner.recovery
    }

    /// The tables per level: file number, size and user-key range.
    pub fn tables(&self) -> Vec<Vec<TableInfo>> {
        self.inner
            .version
            .read()
            .levels
            .iter()
            .map(|fs| {
                fs.iter()
                    .map(|f| TableInfo {
                        number: f.number,
                        size: f.size(),
                        entries: f.table.properties().entries,
                        smallest: f.smallest.clone(),
                        largest: f.largest.clone(),
                        path: f.table.path().to_path_buf(),
                    })
                    .collect()
            })
            .collect()
    }

    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Flushes the memtables to tables (unless
    /// `avoid_flush_during_shutdown`), syncs the WAL, stops the background
    /// threads (a running compaction is abandoned; its outputs are deleted)
    /// and releases the lock once every clone is dropped.
    pub fn close(&self) -> Result<()> {
        let flushed = if self.inner.opts.avoid_flush_during_shutdown
            || self.inner.closed.load(Ordering::Acquire)
            || self.inner.check_bg_error().is_err()
        {
            Ok(())
        } else {
            // Everything is in tables now: start the next open from an
            // empty WAL (held under the write lock, so no write slips in).
            self.flush().and_then(|()| {
                let _w = self.inner.write.lock();
                let v = self.inner.version.read().clone();
                if v.mem.is_empty() && v.imms.is_empty() {
                    self.inner.wal.clear()?;
                }
                Ok(())
            })
        };
        self.inner.closed.store(true, Ordering::Release);
        self.inner.notify();
        // Wait out a write in progress.
        drop(self.inner.write.lock());
        self.inner.wal.sync()?;
        self.threads.stop();
        self.inner.manifest.lock().close()?;
        flushed?;
        self.inner.check_bg_error()
    }
}

fn open_table(
    f: strata_io::FileRef,
    cache: Option<&Arc<BlockCache>>,
    number: u64,
) -> Result<Table> {
    match cache {
        Some(c) => Table::open_cached(f, c.clone(), number),
        None => Table::open(f),
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_bg_error(&self) -> Result<()> {
        match &self.bg.lock().error {
            Some(e) => Err(Error::Background(e.clone())),
            None => Ok(()),
        }
    }

    /// Wakes every waiter (after a change of version or background state).
    fn notify(&self) {
        let _g = self.bg.lock();
        self.bg_cv.notify_all();
    }

    /// Waits on the background condition variable; errors out when the
    /// database fails or closes.
    fn wait_bg(&self, bg: &mut MutexGuard<'_, BgState>) -> Result<()> {
        if let Some(e) = &bg.error {
            return Err(Error::Background(e.clone()));
        }
        if self.closed.load(Ordering::Acquire) || bg.closing {
            return Err(Error::Closed);
        }
        self.bg_cv.wait_for(bg, WAIT_SLICE);
        Ok(())
    }

    /// Replaces the version by `f(current)`; waiters are woken and the
    /// stall state recomputed.
    fn install(&self, f: impl FnOnce(&Version) -> Version) {
        {
            let mut v = self.version.write();
            let new = f(&v);
            *v = Arc::new(new);
        }
        self.update_stall();
        self.notify();
    }

    fn wait_idle(&self) -> Result<()> {
        let mut bg = self.bg.lock();
        loop {
            let flushing = !self.version.read().imms.is_empty();
            let due = self.opts.auto_compactions && self.pick(&bg).is_some();
            if !flushing && bg.running == 0 && !bg.manual && !due {
                return match &bg.error {
                    Some(e) => Err(Error::Background(e.clone())),
                    None => Ok(()),
                };
            }
            self.wait_bg(&mut bg)?;
        }
    }

    fn fail(&self, e: &Error) {
        let mut bg = self.bg.lock();
        if bg.error.is_none() {
            tracing::error!(error = %e, dir = %self.dir.display(), "background work failed; writes stop");
            bg.error = Some(strata_io::Stopped::new(
                format!("the background work of database {}", self.dir.display()),
                e,
                e.raw_os_error(),
            ));
        }
        self.bg_cv.notify_all();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.wal.sync() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "WAL sync on close failed");
        }
    }
}

/// The background threads; stopped when the last `Db` clone goes away.
struct Threads {
    inner: Arc<Inner>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| Error::InvalidArgument(format!("cannot start thread {name}: {e}")))?;
        self.handles.lock().push(h);
        Ok(())
    }

    fn stop(&self) {
        {
            let mut bg = self.inner.bg.lock();
            bg.closing = true;
            self.inner.bg_cv.notify_all();
        }
        for h in self.handles.lock().drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop();
    }
}
