//! Counters and the statistics report.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache::CacheStats;

/// Why writers waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StallCause {
    /// Every memtable was full and waiting to be flushed.
    Memtable,
    /// Too many L0 files (slowdown).
    L0Slowdown,
    /// Too many L0 files (stop).
    L0Stop,
    /// Compaction debt over the soft limit (slowdown).
    PendingSlowdown,
    /// Compaction debt over the hard limit (stop).
    PendingStop,
}

pub(crate) const CAUSES: usize = 5;

impl StallCause {
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Live counters, updated without locks.
pub(crate) struct Counters {
    pub user_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub flushed_bytes: AtomicU64,
    pub compactions: AtomicU64,
    pub compacted_bytes: AtomicU64,
    pub compaction_read_bytes: AtomicU64,
    pub compaction_micros: AtomicU64,
    pub gets: AtomicU64,
    pub tables_probed: AtomicU64,
    pub bloom_skips: AtomicU64,
    pub stall_counts: [AtomicU64; CAUSES],
    pub stall_micros: [AtomicU64; CAUSES],
    pub rate_limit_micros: AtomicU64,
    /// Per level: bytes compactions read from it and wrote into it, and
    /// compactions that wrote into it.
    pub level_read: Vec<AtomicU64>,
    pub level_written: Vec<AtomicU64>,
    pub level_compactions: Vec<AtomicU64>,
}

impl Counters {
    pub(crate) fn new(levels: usize) -> Self {
        let v = || (0..levels).map(|_| AtomicU64::new(0)).collect();
        Counters {
            user_bytes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushed_bytes: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            compacted_bytes: AtomicU64::new(0),
            compaction_read_bytes: AtomicU64::new(0),
            compaction_micros: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            tables_probed: AtomicU64::new(0),
            bloom_skips: AtomicU64::new(0),
            stall_counts: Default::default(),
            stall_micros: Default::default(),
            rate_limit_micros: AtomicU64::new(0),
            level_read: v(),
            level_written: v(),
            level_compactions: v(),
        }
    }

    pub(crate) fn stall(&self, cause: StallCause, micros: u64) {
        self.stall_counts[cause.index()].fetch_add(1, Ordering::Relaxed);
        self.stall_micros[cause.index()].fetch_add(micros, Ordering::Relaxed);
    }

    pub(crate) fn add(v: &[AtomicU64], i: usize, n: u64) {
        if let Some(c) = v.get(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One level.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LevelStats {
    /// Tables.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Target size (leveled; 0 where the level takes no data yet, or tiered).
    pub target_bytes: u64,
    /// Bytes compactions read from this level.
    pub read_bytes: u64,
    /// Bytes flushes (L0) and compactions wrote into this level.
    pub write_bytes: u64,
    /// Compactions that wrote into this level.
    pub compactions: u64,
}

/// Write stalls by cause: how many times writers waited and for how long.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallStats {
    /// All memtables full, waiting for a flush.
    pub memtable: (u64, u64),
    /// Slowed down by the L0 file count.
    pub l0_slowdown: (u64, u64),
    /// Stopped by the L0 file count.
    pub l0_stop: (u64, u64),
    /// Slowed down by the compaction debt.
    pub pending_slowdown: (u64, u64),
    /// Stopped by the compaction debt.
    pub pending_stop: (u64, u64),
}

impl StallStats {
    /// Stall events of every cause.
    pub fn count(&self) -> u64 {
        self.all().iter().map(|x| x.1 .0).sum()
    }

    /// Microseconds writers spent stalled, all causes.
    pub fn micros(&self) -> u64 {
        self.all().iter().map(|x| x.1 .1).sum()
    }

    fn all(&self) -> [(&'static str, (u64, u64)); CAUSES] {
        [
            ("memtable", self.memtable),
            ("l0-slowdown", self.l0_slowdown),
            ("l0-stop", self.l0_stop),
            ("pending-slowdown", self.pending_slowdown),
            ("pending-stop", self.pending_stop),
        ]
    }
}

/// What the engine holds and has done since it was opened.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DbStats {
    /// Per level, L0 first.
    pub levels: Vec<LevelStats>,
    /// Key and value bytes written by the user.
    pub user_bytes: u64,
    /// Bytes written to the WAL (framing included).
    pub wal_bytes: u64,
    /// Memtable flushes.
    pub flushes: u64,
    /// Table bytes written by flushes.
    pub flushed_bytes: u64,
    /// Compactions finished.
    pub compactions: u64,
    /// Table bytes written by compactions.
    pub compacted_bytes: u64,
    /// Table bytes read by compactions.
    pub compaction_read_bytes: u64,
    /// Time spent compacting, summed over threads.
    pub compaction_micros: u64,
    /// Compactions running now.
    pub running_compactions: u64,
    /// Estimated bytes compaction still has to rewrite (what stalls watch).
    pub pending_compaction_bytes: u64,
    /// Point reads.
    pub gets: u64,
    /// Tables whose blocks point reads searched.
    pub tables_probed: u64,
    /// Tables point reads skipped because the bloom filter ruled the key out.
    pub bloom_skips: u64,
    /// Write stalls by cause.
    pub stalls: StallStats,
    /// Time compactions waited for the rate limiter.
    pub rate_limit_micros: u64,
    /// The block cache.
    pub cache: CacheStats,
}

impl DbStats {
    /// (WAL + flush + compaction bytes) / user bytes, as RocksDB's
    /// statistics compute it.
    pub fn write_amplification(&self) -> f64 {
        (self.wal_bytes + self.flushed_bytes + self.compacted_bytes) as f64
            / self.user_bytes.max(1) as f64
    }

    /// Tables searched per point read (bloom-skipped tables not counted).
    pub fn read_amplification(&self) -> f64 {
        self.tables_probed as f64 / self.gets.max(1) as f64
    }

    /// Table bytes over the bytes of the deepest non-empty level: what a
    /// fully compacted tree would need, the usual estimate of live data.
    pub fn space_amplification(&self) -> f64 {
        let total = self.sst_bytes();
        let last = self
            .levels
            .iter()
            .rev()
            .find(|l| l.bytes > 0)
            .map_or(0, |l| l.bytes);
        if last == 0 {
            return 0.0;
        }
        total as f64 / last as f64
    }

    /// Bytes of all tables.
    pub fn sst_bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.bytes).sum()
    }

    /// Tables, all levels.
    pub fn sst_files(&self) -> u64 {
        self.levels.iter().map(|l| l.files).sum()
    }
}

fn mb(b: u64) -> f64 {
    b as f64 / 1048576.0
}

impl std::fmt::Display for DbStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "level  files    size(MB)  target(MB)   read(MB)  write(MB)  compactions"
        )?;
        for (i, l) in self.levels.iter().enumerate() {
            writeln!(
                f,
                "L{i:<5} {:>5} {:>11.2} {:>11.2} {:>10.2} {:>10.2} {:>12}",
                l.files,
                mb(l.bytes),
                mb(l.target_bytes),
                mb(l.read_bytes),
                mb(l.write_bytes),
                l.compactions
            )?;
        }
        writeln!(
            f,
            "sum    {:>5} {:>11.2}",
            self.sst_files(),
            mb(self.sst_bytes())
        )?;
        writeln!(
            f,
            "user writes: {:.2} MB; wal: {:.2} MB; flushed: {:.2} MB in {} flushes; compacted: {:.2} MB written, {:.2} MB read in {} compactions ({:.1} s); running: {}; pending: {:.2} MB",
            mb(self.user_bytes),
            mb(self.wal_bytes),
            mb(self.flushed_bytes),
            self.flushes,
            mb(self.compacted_bytes),
            mb(self.compaction_read_bytes),
            self.compactions,
            self.compaction_micros as f64 / 1e6,
            self.running_compactions,
            mb(self.pending_compaction_bytes)
        )?;
        writeln!(f, "write amplification: {:.2}", self.write_amplification())?;
        writeln!(f, "space amplification: {:.2}", self.space_amplification())?;
        writeln!(
            f,
            "read amplification: {:.2} (gets: {}; tables probed: {}; bloom skips: {})",
            self.read_amplification(),
            self.gets,
            self.tables_probed,
            self.bloom_skips
        )?;
        writeln!(
            f,
            "block cache: {} hits, {} misses, {:.2} MB",
            self.cache.hits,
            self.cache.misses,
            mb(self.cache.usage)
        )?;
        write!(
            f,
            "write stalls: {} ({:.3} s)",
            self.stalls.count(),
            self.stalls.micros() as f64 / 1e6
        )?;
        for (name, (n, us)) in self.stalls.all() {
            if n > 0 {
                write!(f, "; {name}: {n} ({:.3} s)", us as f64 / 1e6)?;
            }
        }
        if self.rate_limit_micros > 0 {
            write!(
                f,
                "\nrate limiter: compactions waited {:.3} s",
                self.rate_limit_micros as f64 / 1e6
            )?;
        }
        Ok(())
    }
}
