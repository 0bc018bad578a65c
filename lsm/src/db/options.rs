//! Engine settings, named and defaulted as RocksDB users know them.

use crate::picker::{LeveledPicker, Picker, TieredPicker};
use crate::table::TableOptions;
use crate::{Error, Result};

/// How tables are merged in the background.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompactionStyle {
    /// Leveled: L0, then levels of non-overlapping tables each `ratio`
    /// times larger than the last. Lowest read and space amplification;
    /// each byte is rewritten about `ratio` times per level.
    #[default]
    Level,
    /// Tiered ("universal"): sorted runs merged when similar in size or
    /// too many. Roughly half the write amplification of leveled, at the
    /// price of more runs to read and up to
    /// `universal_max_size_amplification_percent` extra space.
    Universal,
}

impl std::str::FromStr for CompactionStyle {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "level" | "leveled" => Ok(CompactionStyle::Level),
            "universal" | "tiered" => Ok(CompactionStyle::Universal),
            other => Err(format!(
                "unknown compaction style {other:?} (expected level or universal)"
            )),
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Create the database if the directory has none. Default true.
    pub create_if_missing: bool,
    /// Memtable size that makes it immutable and queues a flush. Default 64 MiB.
    pub write_buffer_size: usize,
    /// Memtables in memory at most, the active one included; a writer that
    /// would need one more waits for a flush (a stall). Default 2.
    pub max_write_buffer_number: usize,
    /// Table settings (block size, bloom bits per key, restart interval).
    pub table: TableOptions,
    /// Whether writes wait for an fsync unless told otherwise. Default false.
    pub sync_by_default: bool,
    /// Size at which a compaction starts a new output table. Default 64 MiB.
    pub target_file_size: u64,
    /// Bytes of data blocks kept in memory; 0 disables the cache. Default 64 MiB.
    pub block_cache_size: usize,
    /// Read tables with O_DIRECT (RocksDB's `use_direct_reads`): the page
    /// cache no longer holds table data, only the block cache does, so
    /// memory is bounded by it and reads of cold blocks go to the disk.
    /// Default false.
    pub use_direct_reads: bool,
    /// Leveled or tiered compaction. Default leveled.
    pub compaction_style: CompactionStyle,
    /// Levels, L0 included. Default 7.
    pub num_levels: usize,
    /// L0 files (leveled) or sorted runs (universal) that start a
    /// compaction. Default 4.
    pub level0_file_num_compaction_trigger: usize,
    /// L0 files at which writes are slowed to `delayed_write_rate`. Default 20.
    pub level0_slowdown_writes_trigger: usize,
    /// L0 files at which writes wait for compaction. Default 36.
    pub level0_stop_writes_trigger: usize,
    /// Target size of the level L0 compacts into (leveled). Default 256 MiB.
    pub max_bytes_for_level_base: u64,
    /// Size ratio between levels (leveled). Default 10.
    pub max_bytes_for_level_multiplier: u64,
    /// Derive level targets from the largest level, so a small database
    /// has few levels (leveled; RocksDB's default too). Default true.
    pub level_compaction_dynamic_level_bytes: bool,
    /// Universal: runs merge while each is at most this percent larger
    /// than the sum of the newer ones picked. Default 1.
    pub universal_size_ratio: u64,
    /// Universal: fewest runs merged by the size-ratio rule. Default 2.
    pub universal_min_merge_width: usize,
    /// Universal: merge everything when the newer runs reach this percent
    /// of the oldest. Default 200.
    pub universal_max_size_amplification_percent: u64,
    /// Estimated compaction debt at which writes slow down. Default 64 GiB.
    pub soft_pending_compaction_bytes_limit: u64,
    /// Estimated compaction debt at which writes wait. Default 256 GiB.
    pub hard_pending_compaction_bytes_limit: u64,
    /// Bytes per second writers get while slowed down. Default 16 MiB/s.
    pub delayed_write_rate: u64,
    /// Compaction threads. Default 1.
    pub max_background_compactions: usize,
    /// Cap on compaction write bandwidth in bytes per second; 0 = none.
    /// Flushes are not limited: they free memtables writers wait for.
    pub rate_limit_bytes_per_sec: u64,
    /// Run compactions in the background. Off: only `compact_range`
    /// compacts, and L0 grows until the stop trigger. Default true.
    pub auto_compactions: bool,
    /// Keep the memtables in the WAL at `close` instead of flushing them to
    /// a table (RocksDB's `avoid_flush_during_shutdown`). Off (default):
    /// `close` flushes, so the next open replays no WAL. Either way, what
    /// an open replays from the WAL is flushed before the open returns.
    pub avoid_flush_during_shutdown: bool,
    /// Keep what an open replays from the WAL in the memtable (and the WAL
    /// segments holding it) instead of flushing it to a table before the
    /// open returns (RocksDB's `avoid_flush_during_recovery`). Off
    /// (default): opens stay cheap however often the database is reopened.
    pub avoid_flush_during_recovery: bool,
    /// Run flushes and compactions on background threads (default). Off:
    /// the deterministic mode for tests and simulation. No thread is
    /// started and nothing waits on time: a full memtable is flushed, and
    /// every compaction then due is run, by the writer that filled it,
    /// before its write returns; WAL segments are sealed inline. The same
    /// calls then make the same storage operations in the same order, so
    /// a crash at the Nth operation is a reproduction.
    pub background_threads: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            write_buffer_size: 64 << 20,
            max_write_buffer_number: 2,
            table: TableOptions::default(),
            sync_by_default: false,
            target_file_size: 64 << 20,
            block_cache_size: 64 << 20,
            use_direct_reads: false,
            compaction_style: CompactionStyle::Level,
            num_levels: 7,
            level0_file_num_compaction_trigger: 4,
            level0_slowdown_writes_trigger: 20,
            level0_stop_writes_trigger: 36,
            max_bytes_for_level_base: 256 << 20,
            max_bytes_for_level_multiplier: 10,
            level_compaction_dynamic_level_bytes: true,
            universal_size_ratio: 1,
            universal_min_merge_width: 2,
            universal_max_size_amplification_percent: 200,
            soft_pending_compaction_bytes_limit: 64 << 30,
            hard_pending_compaction_bytes_limit: 256 << 30,
            delayed_write_rate: 16 << 20,
            max_background_compactions: 1,
            rate_limit_bytes_per_sec: 0,
            auto_compactions: true,
            avoid_flush_during_shutdown: false,
            avoid_flush_during_recovery: false,
            background_threads: true,
        }
    }
}

impl Options {
    /// Rejects settings the engine cannot run with, naming the option.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.write_buffer_size == 0 {
            return bad("write_buffer_size must be > 0".into());
        }
        if self.max_write_buffer_number < 2 {
            return bad("max_write_buffer_number must be >= 2".into());
        }
        if self.num_levels < 2 {
            return bad("num_levels must be >= 2".into());
        }
        if self.level0_file_num_compaction_trigger < 1 {
            return bad("level0_file_num_compaction_trigger must be >= 1".into());
        }
        if self.level0_slowdown_writes_trigger < self.level0_file_num_compaction_trigger
            || self.level0_stop_writes_trigger < self.level0_slowdown_writes_trigger
        {
            return bad(format!(
                "need level0_file_num_compaction_trigger ({}) <= level0_slowdown_writes_trigger ({}) <= level0_stop_writes_trigger ({})",
                self.level0_file_num_compaction_trigger,
                self.level0_slowdown_writes_trigger,
                self.level0_stop_writes_trigger
            ));
        }
        if self.max_bytes_for_level_multiplier < 2 {
            return bad("max_bytes_for_level_multiplier must be >= 2".into());
        }
        if self.soft_pending_compaction_bytes_limit > self.hard_pending_compaction_bytes_limit {
            return bad(
                "soft_pending_compaction_bytes_limit must be <= hard_pending_compaction_bytes_limit"
                    .into(),
            );
        }
        if self.delayed_write_rate == 0 {
            return bad("delayed_write_rate must be > 0".into());
        }
        if self.max_background_compactions == 0 {
            return bad("max_background_compactions must be >= 1".into());
        }
        if self.target_file_size == 0 {
            return bad("target_file_size must be > 0".into());
        }
        Ok(())
    }

    pub(crate) fn picker(&self) -> Box<dyn Picker> {
        match self.compaction_style {
            CompactionStyle::Level => Box::new(LeveledPicker {
                l0_trigger: self.level0_file_num_compaction_trigger,
                base_bytes: self.max_bytes_for_level_base,
                ratio: self.max_bytes_for_level_multiplier,
                max_levels: self.num_levels,
                dynamic: self.level_compaction_dynamic_level_bytes,
            }),
            CompactionStyle::Universal => Box::new(TieredPicker {
                size_ratio_percent: self.universal_size_ratio,
                min_merge_width: self.universal_min_merge_width,
                max_space_amp_percent: self.universal_max_size_amplification_percent,
                run_trigger: self.level0_file_num_compaction_trigger,
            }),
        }
    }
}

/// Per-write settings.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    /// Return only once the write survives power loss.
    pub sync: bool,
    /// Fail with [`Error::WriteStall`] instead of waiting when writes are
    /// slowed or stopped for compaction to catch up.
    pub no_slowdown: bool,
    /// Skip the WAL: faster, but the write is lost on a crash unless a
    /// flush wrote it to a table first. Cannot be combined with `sync`.
    pub disable_wal: bool,
}

impl WriteOptions {
    /// Options for a synced (`true`) or unsynced write.
    pub fn sync(sync: bool) -> Self {
        WriteOptions {
            sync,
            ..WriteOptions::default()
        }
    }
}
