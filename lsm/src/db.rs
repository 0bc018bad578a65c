//! The engine: `Db::open`, writes through the WAL into the memtable,
//! background flushes to level-0 tables recorded in the manifest, point
//! reads at a snapshot, and recovery.
//!
//! Directory layout: `STRATA` (identity and format version), `LOCK`
//! (exclusive lock), `wal/` (the write-ahead log), `manifest/` (version
//! edits), `<number:06>.sst` (tables).
//!
//! Write path: under the write lock a batch gets consecutive sequence
//! numbers, goes to the WAL (written to the OS) and into the memtable, and
//! becomes visible; a `sync` write then waits, outside the lock, until the
//! WAL has fsynced it, so concurrent synced writers share one fsync.
//! A full memtable becomes immutable and a background thread writes it to
//! a table, fsyncs it and the directory, records it in the manifest
//! together with the WAL LSN it covers, and releases older WAL segments.
//! A writer that fills a memtable while the previous one is still being
//! flushed waits for that flush (a write stall).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};
use strata_io::{FileLock, OpenOptions, StorageRef};
use strata_wal::{Lsn, SyncPolicy, Wal, WalOptions};

use crate::batch::{self, BatchEntry, BatchOp, WriteBatch};
use crate::cache::{BlockCache, CacheStats};
use crate::compaction::GcFilter;
use crate::iter::{DbIterator, InternalIterator, MemIter, MergingIter, ReadOptions};
use crate::key::Kind;
use crate::manifest::{Edit, Manifest, TableMeta};
use crate::memtable::Memtable;
use crate::range_del::{self, RangeTombstone};
use crate::table::properties::Properties;
use crate::table::{Table, TableBuilder, TableOptions};
use crate::{Error, Result};

const IDENTITY: &str = "STRATA";
const IDENTITY_CONTENTS: &[u8] = b"strata-db format 1\n";

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Create the database if the directory has none. Default true.
    pub create_if_missing: bool,
    /// Memtable size that triggers a flush. Default 64 MiB.
    pub write_buffer_size: usize,
    /// Table settings (block size, bloom bits per key, restart interval).
    pub table: TableOptions,
    /// Whether writes wait for an fsync unless told otherwise. Default false.
    pub sync_by_default: bool,
    /// Size at which a compaction starts a new output table. Default 64 MiB.
    pub target_file_size: u64,
    /// Bytes of data blocks kept in memory; 0 disables the cache. Default 64 MiB.
    pub block_cache_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            write_buffer_size: 64 << 20,
            table: TableOptions::default(),
            sync_by_default: false,
            target_file_size: 64 << 20,
            block_cache_size: 64 << 20,
        }
    }
}

/// Counters behind [`Db::stats`].
#[derive(Default)]
struct Counters {
    user_bytes: AtomicU64,
    flushes: AtomicU64,
    flushed_bytes: AtomicU64,
    compactions: AtomicU64,
    compacted_bytes: AtomicU64,
    gets: AtomicU64,
    tables_probed: AtomicU64,
    bloom_skips: AtomicU64,
    stalls: AtomicU64,
    stall_micros: AtomicU64,
}

/// Files and bytes of one level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Tables.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// What the engine has done since it was opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbStats {
    /// Per level (only level 0 until leveled compaction, issue #4).
    pub levels: Vec<LevelStats>,
    /// Key and value bytes written by the user.
    pub user_bytes: u64,
    /// Bytes written to the WAL (framing included).
    pub wal_bytes: u64,
    /// Memtable flushes and the table bytes they wrote.
    pub flushes: u64,
    /// Table bytes written by flushes.
    pub flushed_bytes: u64,
    /// Compactions and the table bytes they wrote.
    pub compactions: u64,
    /// Table bytes written by compactions.
    pub compacted_bytes: u64,
    /// Point reads.
    pub gets: u64,
    /// Tables whose blocks point reads searched.
    pub tables_probed: u64,
    /// Tables point reads skipped because the bloom filter ruled the key out.
    pub bloom_skips: u64,
    /// Writes that waited for a flush, and how long in total.
    pub stalls: u64,
    /// Total stall time in microseconds.
    pub stall_micros: u64,
    /// The block cache.
    pub cache: CacheStats,
}

impl DbStats {
    /// (WAL + flush + compaction bytes) / user bytes.
    pub fn write_amplification(&self) -> f64 {
        (self.wal_bytes + self.flushed_bytes + self.compacted_bytes) as f64
            / self.user_bytes.max(1) as f64
    }

    /// Tables searched per point read.
    pub fn read_amplification(&self) -> f64 {
        self.tables_probed as f64 / self.gets.max(1) as f64
    }
}

impl std::fmt::Display for DbStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "level  files        bytes")?;
        for (i, l) in self.levels.iter().enumerate() {
            writeln!(f, "L{i:<5} {:>5} {:>12}", l.files, l.bytes)?;
        }
        writeln!(f, "user bytes written: {}", self.user_bytes)?;
        writeln!(
            f,
            "wal bytes: {}  flushed: {} ({} flushes)  compacted: {} ({} compactions)",
            self.wal_bytes,
            self.flushed_bytes,
            self.flushes,
            self.compacted_bytes,
            self.compactions
        )?;
        writeln!(f, "write amplification: {:.2}", self.write_amplification())?;
        writeln!(
            f,
            "gets: {}  tables probed: {}  bloom skips: {}  read amplification: {:.2}",
            self.gets,
            self.tables_probed,
            self.bloom_skips,
            self.read_amplification()
        )?;
        writeln!(
            f,
            "block cache: {} hits, {} misses, {} bytes",
            self.cache.hits, self.cache.misses, self.cache.usage
        )?;
        write!(
            f,
            "write stalls: {} ({} us)",
            self.stalls, self.stall_micros
        )
    }
}

/// Per-write settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Return only once the write survives power loss.
    pub sync: bool,
}

/// What the reads of a version see.
struct Version {
    mem: Arc<Memtable>,
    /// The memtable being flushed and the last WAL LSN it holds.
    imm: Option<(Arc<Memtable>, Lsn)>,
    /// Level-0 tables, newest first.
    tables: Vec<Arc<Table>>,
}

struct FlushState {
    /// A flush is wanted (an immutable memtable exists).
    pending: bool,
    closing: bool,
    error: Option<String>,
}

struct Inner {
    storage: StorageRef,
    dir: PathBuf,
    opts: Options,
    wal: Wal,
    manifest: Mutex<Manifest>,
    write: Mutex<()>,
    last_seq: AtomicU64,
    version: RwLock<Arc<Version>>,
    flush: Mutex<FlushState>,
    flush_cv: Condvar,
    snapshots: Mutex<std::collections::BTreeMap<u64, usize>>,
    compaction: Mutex<()>,
    cache: Option<Arc<BlockCache>>,
    stats: Counters,
    closed: std::sync::atomic::AtomicBool,
    _lock: FileLock,
}

/// A key-value database. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    flusher: Arc<FlusherGuard>,
}

/// A consistent read view: reads through it see the database as of its
/// creation. Released on drop.
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

fn table_number(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".sst")?
        .parse()
        .ok()
}

fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

impl Db {
    /// Opens the database in `dir`, creating it if allowed, and recovers:
    /// the manifest names the tables, and WAL records newer than the last
    /// flush are replayed into the memtable (a torn WAL tail is cut off).
    pub fn open(storage: StorageRef, dir: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let dir = dir.as_ref().to_path_buf();
        let exists = storage.exists(&dir)?;
        if !exists && !opts.create_if_missing {
            return Err(Error::InvalidArgument(format!(
                "{}: no database here (create_if_missing is off)",
                dir.display()
            )));
        }
        storage.create_dir_all(&dir)?;
        let lock = storage.lock(&dir.join("LOCK")).map_err(|e| match e {
            strata_io::Error::Locked { path } => Error::InvalidArgument(format!(
                "{}: the database is open in another process or handle",
                path.display()
            )),
            e => e.into(),
        })?;
        let identity = dir.join(IDENTITY);
        if storage.exists(&identity)? {
            let f = storage.open(&identity, OpenOptions::existing())?;
            if f.read_all()? != IDENTITY_CONTENTS {
                return Err(Error::corruption(
                    &identity,
                    0,
                    "not a Strata database identity file",
                ));
            }
        } else {
            let others: Vec<String> = storage
                .list_dir(&dir)?
                .into_iter()
                .filter(|n| n != "LOCK")
                .collect();
            if !others.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{}: not a Strata database (it holds {} and no {IDENTITY} file)",
                    dir.display(),
                    others.join(", ")
                )));
            }
            if !opts.create_if_missing {
                return Err(Error::InvalidArgument(format!(
                    "{}: no database here",
                    dir.display()
                )));
            }
            strata_io::write_file_atomic(&*storage, &identity, IDENTITY_CONTENTS)?;
        }

        let cache =
            (opts.block_cache_size > 0).then(|| Arc::new(BlockCache::new(opts.block_cache_size)));
        let manifest = Manifest::open(storage.clone(), &dir.join("manifest"))?;
        let state = manifest.state().clone();
        let mut metas: Vec<&TableMeta> = state.tables.values().collect();
        // Newest first: a higher file number was flushed later.
        metas.sort_by_key(|m| std::cmp::Reverse(m.number));
        let mut tables = Vec::new();
        for meta in metas {
            let path = table_path(&dir, meta.number);
            let f = storage.open(&path, OpenOptions::existing()).map_err(|e| {
                if e.is_not_found() {
                    Error::corruption(&path, 0, "table named by the manifest is missing")
                } else {
                    e.into()
                }
            })?;
            tables.push(Arc::new(open_table(f, cache.as_ref(), meta.number)?));
        }
        // Files a crash left behind (a flush that never reached the manifest).
        for name in storage.list_dir(&dir)? {
            if let Some(num) = name
                .strip_suffix(".sst")
                .and_then(|n| n.parse::<u64>().ok())
            {
                if !state.tables.keys().any(|(_, n)| *n == num) {
                    storage.remove_file(&dir.join(&name))?;
                }
            }
        }

        let mem = Arc::new(Memtable::new());
        let mut last_seq = state.last_seq;
        let log_lsn = state.log_lsn;
        let wal_opts = WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        };
        let wal_dir = dir.join("wal");
        let (wal, _) = Wal::open(storage.clone(), &wal_dir, wal_opts, |lsn, rec| {
            if lsn <= log_lsn {
                return Ok(());
            }
            let (first, entries) =
                batch::decode(rec).map_err(|r| strata_wal::Error::Corruption {
                    path: wal_dir.clone(),
                    offset: 0,
                    reason: format!("WAL record {lsn} is not a write batch: {r}"),
                })?;
            for (i, e) in entries.iter().enumerate() {
                apply(&mem, e, first + i as u64);
            }
            last_seq = last_seq.max(first + entries.len() as u64 - 1);
            Ok(())
        })?;

        let inner = Arc::new(Inner {
            storage,
            dir,
            opts,
            wal,
            manifest: Mutex::new(manifest),
            write: Mutex::new(()),
            last_seq: AtomicU64::new(last_seq),
            version: RwLock::new(Arc::new(Version {
                mem,
                imm: None,
                tables,
            })),
            flush: Mutex::new(FlushState {
                pending: false,
                closing: false,
                error: None,
            }),
            flush_cv: Condvar::new(),
            snapshots: Mutex::new(Default::default()),
            compaction: Mutex::new(()),
            cache,
            stats: Counters::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
            _lock: lock,
        });
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("strata-flush".into())
            .spawn(move || worker.flush_loop())
            .map_err(|e| Error::InvalidArgument(format!("cannot start the flush thread: {e}")))?;
        Ok(Db {
            flusher: Arc::new(FlusherGuard {
                inner: inner.clone(),
                handle: Mutex::new(Some(handle)),
            }),
            inner,
        })
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
        inner.check_flush_error()?;
        let lsn = {
            let _w = inner.write.lock();
            let first = inner.last_seq.load(Ordering::Acquire) + 1;
            let rec = b.encode(first);
            let lsn = inner.wal.append(&rec)?;
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
            if v.mem.approximate_bytes() >= inner.opts.write_buffer_size {
                inner.switch_memtable(lsn)?;
            }
            lsn
        };
        if opts.sync || inner.opts.sync_by_default {
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
        self.inner.stats.gets.fetch_add(1, Ordering::Relaxed);
        let v = self.inner.version.read().clone();
        // The newest range tombstone over `key`, from every source.
        let mut hidden_below = v.mem.max_covering(key, seq);
        if let Some((imm, _)) = &v.imm {
            hidden_below = hidden_below.max(imm.max_covering(key, seq));
        }
        for t in &v.tables {
            hidden_below =
                hidden_below.max(range_del::max_covering(t.range_tombstones(), key, seq));
        }
        // The newest point version: sources newest first, skipping any
        // whose entries are all older than what was already found.
        let mut best: Option<(u64, Kind, Vec<u8>)> = v.mem.get_entry(key, seq);
        if let Some((imm, _)) = &v.imm {
            if best.is_none() {
                best = imm.get_entry(key, seq);
            }
        }
        for t in &v.tables {
            if best
                .as_ref()
                .is_some_and(|b| b.0 >= t.properties().max_seqno)
            {
                continue;
            }
            if !t.may_contain(key) {
                self.inner.stats.bloom_skips.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.inner
                .stats
                .tables_probed
                .fetch_add(1, Ordering::Relaxed);
            if let Some(e) = t.get_entry_unfiltered(key, seq)? {
                if best.as_ref().is_none_or(|b| e.0 > b.0) {
                    best = Some(e);
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
        if let Some((imm, _)) = &v.imm {
            children.push(Box::new(MemIter::new(imm.clone())));
        }
        for t in &v.tables {
            children.push(Box::new(t.iter()));
        }
        let mut tombstones = v.mem.range_tombstones();
        if let Some((imm, _)) = &v.imm {
            tombstones.extend(imm.range_tombstones());
        }
        for t in &v.tables {
            tombstones.extend(t.range_tombstones().iter().cloned());
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

    /// Writes the memtable to a table and waits until it is in the manifest.
    pub fn flush(&self) -> Result<()> {
        let inner = &*self.inner;
        inner.check_open()?;
        {
            let _w = inner.write.lock();
            if inner.version.read().mem.is_empty() {
                return inner.wait_flushed();
            }
            let lsn = inner.wal.last_lsn();
            inner.switch_memtable(lsn)?;
        }
        inner.wait_flushed()
    }

    /// Merges every table into new ones, dropping versions no snapshot can
    /// see, deletes that hide nothing any more and what range deletes
    /// cover; flushes the memtable first. Until leveled compaction exists
    /// (issue #4) the whole key space is compacted whatever range is given.
    pub fn compact_range(&self, _start: Option<&[u8]>, _end: Option<&[u8]>) -> Result<()> {
        self.flush()?;
        self.inner.compact_all()
    }

    /// Counters since open: levels, bytes written at each stage, read and
    /// write amplification, bloom skips, cache, stalls. `Display` prints them.
    pub fn stats(&self) -> DbStats {
        let c = &self.inner.stats;
        let v = self.inner.version.read().clone();
        let l0 = LevelStats {
            files: v.tables.len() as u64,
            bytes: v.tables.iter().map(|t| t.size()).sum(),
        };
        DbStats {
            levels: vec![l0],
            user_bytes: c.user_bytes.load(Ordering::Relaxed),
            wal_bytes: self.inner.wal.stats().bytes_written,
            flushes: c.flushes.load(Ordering::Relaxed),
            flushed_bytes: c.flushed_bytes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            compacted_bytes: c.compacted_bytes.load(Ordering::Relaxed),
            gets: c.gets.load(Ordering::Relaxed),
            tables_probed: c.tables_probed.load(Ordering::Relaxed),
            bloom_skips: c.bloom_skips.load(Ordering::Relaxed),
            stalls: c.stalls.load(Ordering::Relaxed),
            stall_micros: c.stall_micros.load(Ordering::Relaxed),
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

    /// Number of level-0 tables.
    pub fn table_count(&self) -> usize {
        self.inner.version.read().tables.len()
    }

    /// Syncs the WAL, stops the flush thread and releases the lock (once
    /// every clone is dropped). Unflushed writes stay in the WAL.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        // Wait out a write or flush in progress before the flusher stops.
        drop(self.inner.write.lock());
        self.inner.wal.sync()?;
        self.flusher.stop();
        self.inner.manifest.lock().close()?;
        self.inner.check_flush_error()
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn check_flush_error(&self) -> Result<()> {
        match &self.flush.lock().error {
            Some(e) => Err(Error::Background(e.clone())),
            None => Ok(()),
        }
    }

    /// A builder for a new table file with a fresh number.
    fn new_table(&self) -> Result<(u64, TableBuilder)> {
        let n = self.manifest.lock().new_file_number();
        let f = self
            .storage
            .open(&table_path(&self.dir, n), OpenOptions::create_new())?;
        Ok((n, TableBuilder::new(f, self.opts.table)))
    }

    fn compact_all(&self) -> Result<()> {
        let _one_at_a_time = self.compaction.lock();
        let inputs = self.version.read().tables.clone();
        if inputs.is_empty() {
            return Ok(());
        }
        let snapshots: Vec<u64> = self.snapshots.lock().keys().copied().collect();
        let tombstones: Vec<RangeTombstone> = inputs
            .iter()
            .flat_map(|t| t.range_tombstones().iter().cloned())
            .collect();
        let mut gc = GcFilter::new(&snapshots, &tombstones, true);
        let children: Vec<Box<dyn InternalIterator>> = inputs
            .iter()
            .map(|t| Box::new(t.iter()) as Box<dyn InternalIterator>)
            .collect();
        let mut merged = MergingIter::new(children);
        merged.seek_to_first();
        let mut outputs: Vec<(u64, TableBuilder)> = Vec::new();
        let mut done: Vec<(u64, u64, Properties)> = Vec::new();
        while merged.valid() {
            if gc.keep(merged.key()) {
                let full = outputs
                    .last()
                    .is_none_or(|(_, b)| b.file_size() >= self.opts.target_file_size);
                if full {
                    if let Some((n, b)) = outputs.pop() {
                        let (size, props) = b.finish()?;
                        done.push((n, size, props));
                    }
                    outputs.push(self.new_table()?);
                }
                if let Some((_, b)) = outputs.last_mut() {
                    b.add(merged.key(), merged.value())?;
                }
            }
            merged.next();
        }
        if let Some(e) = merged.error() {
            return Err(Error::corruption(
                &self.dir,
                0,
                format!("compaction input: {e}"),
            ));
        }
        let kept: Vec<RangeTombstone> = tombstones
            .iter()
            .filter(|t| gc.keep_tombstone(t))
            .cloned()
            .collect();
        if !kept.is_empty() && outputs.is_empty() {
            outputs.push(self.new_table()?);
        }
        if let Some((_, b)) = outputs.last_mut() {
            kept.into_iter().for_each(|t| b.add_range_tombstone(t));
        }
        if let Some((n, b)) = outputs.pop() {
            let (size, props) = b.finish()?;
            done.push((n, size, props));
        }
        self.storage.sync_dir(&self.dir)?;
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        let written: u64 = done.iter().map(|d| d.1).sum();
        self.stats
            .compacted_bytes
            .fetch_add(written, Ordering::Relaxed);
        let mut edits: Vec<Edit> = Vec::new();
        let input_numbers: Vec<u64> = inputs
            .iter()
            .filter_map(|t| table_number(t.path()))
            .collect();
        for n in &input_numbers {
            edits.push(Edit::RemoveTable {
                level: 0,
                number: *n,
            });
        }
        let mut new_tables = Vec::new();
        for (n, size, props) in &done {
            edits.push(Edit::AddTable(TableMeta {
                level: 0,
                number: *n,
                size: *size,
                min_seqno: props.min_seqno,
                max_seqno: props.max_seqno,
                smallest: props.smallest.clone(),
                largest: props.largest.clone(),
            }));
            let path = table_path(&self.dir, *n);
            let f = self.storage.open(&path, OpenOptions::existing())?;
            new_tables.push(Arc::new(open_table(f, self.cache.as_ref(), *n)?));
        }
        let next = done.iter().map(|d| d.0 + 1).max().unwrap_or(1);
        edits.push(Edit::NextFile(next));
        self.manifest.lock().apply(&edits)?;
        {
            let mut ver = self.version.write();
            let old = ver.clone();
            // Tables flushed while this ran are newer than every output.
            let mut tables: Vec<Arc<Table>> = old
                .tables
                .iter()
                .filter(|t| !inputs.iter().any(|i| Arc::ptr_eq(i, t)))
                .cloned()
                .collect();
            tables.extend(new_tables);
            *ver = Arc::new(Version {
                mem: old.mem.clone(),
                imm: old.imm.clone(),
                tables,
            });
        }
        for t in &inputs {
            t.delete_when_unused(self.storage.clone());
        }
        Ok(())
    }

    /// Makes the memtable immutable (the caller holds the write lock),
    /// first waiting for an earlier flush to finish.
    fn switch_memtable(&self, lsn: Lsn) -> Result<()> {
        let t0 = std::time::Instant::now();
        self.wait_flushed()?;
        let waited = t0.elapsed();
        if waited > std::time::Duration::from_micros(100) {
            // The writer waited for the previous flush: a write stall.
            self.stats.stalls.fetch_add(1, Ordering::Relaxed);
            self.stats
                .stall_micros
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
        let mut ver = self.version.write();
        let old = ver.clone();
        *ver = Arc::new(Version {
            mem: Arc::new(Memtable::new()),
            imm: Some((old.mem.clone(), lsn)),
            tables: old.tables.clone(),
        });
        drop(ver);
        self.flush.lock().pending = true;
        self.flush_cv.notify_all();
        Ok(())
    }

    fn wait_flushed(&self) -> Result<()> {
        let mut f = self.flush.lock();
        while f.pending && f.error.is_none() {
            self.flush_cv.wait(&mut f);
        }
        drop(f);
        self.check_flush_error()
    }

    fn flush_loop(self: Arc<Self>) {
        loop {
            {
                let mut f = self.flush.lock();
                while !f.pending && !f.closing {
                    self.flush_cv.wait(&mut f);
                }
                if !f.pending && f.closing {
                    return;
                }
            }
            let res = self.flush_immutable();
            let mut f = self.flush.lock();
            f.pending = false;
            if let Err(e) = res {
                f.error = Some(e.to_string());
            }
            drop(f);
            self.flush_cv.notify_all();
        }
    }

    /// Writes the immutable memtable to a new level-0 table.
    fn flush_immutable(&self) -> Result<()> {
        let Some((imm, lsn)) = self.version.read().imm.clone() else {
            return Ok(());
        };
        let (number, mut b) = self.new_table()?;
        let path = table_path(&self.dir, number);
        for (k, v) in imm.entries() {
            b.add(&k, &v)?;
        }
        for t in imm.range_tombstones() {
            b.add_range_tombstone(t);
        }
        let (size, props) = b.finish()?;
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.flushed_bytes.fetch_add(size, Ordering::Relaxed);
        self.storage.sync_dir(&self.dir)?;
        let meta = TableMeta {
            level: 0,
            number,
            size,
            min_seqno: props.min_seqno,
            max_seqno: props.max_seqno,
            smallest: props.smallest.clone(),
            largest: props.largest.clone(),
        };
        self.manifest.lock().apply(&[
            Edit::AddTable(meta),
            Edit::LogLsn(lsn),
            Edit::NextFile(number + 1),
            Edit::LastSeq(props.max_seqno),
        ])?;
        let f = self.storage.open(&path, OpenOptions::existing())?;
        let table = Arc::new(open_table(f, self.cache.as_ref(), number)?);
        {
            let mut ver = self.version.write();
            let old = ver.clone();
            let mut tables = Vec::with_capacity(old.tables.len() + 1);
            tables.push(table);
            tables.extend(old.tables.iter().cloned());
            *ver = Arc::new(Version {
                mem: old.mem.clone(),
                imm: None,
                tables,
            });
        }
        // Records up to `lsn` live in tables now.
        self.wal.purge_before(lsn + 1)?;
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.wal.sync() {
            tracing::warn!(error = %e, dir = %self.dir.display(), "WAL sync on close failed");
        }
    }
}

/// Stops the flush thread when the last `Db` clone goes away.
struct FlusherGuard {
    inner: Arc<Inner>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl FlusherGuard {
    fn stop(&self) {
        self.inner.flush.lock().closing = true;
        self.inner.flush_cv.notify_all();
        if let Some(h) = self.handle.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
