//! WAL settings.

use std::time::Duration;

use crate::format::SEGMENT_HEADER_LEN;
use crate::reader::RecoveryMode;
use crate::{Error, Result};

/// When appended records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `append` returns after the record is fsynced (group commit shares
    /// the fsync among concurrent appenders).
    Always,
    /// `append` returns after the record is written to the OS; a sync runs
    /// when `every` has passed since the last one (a background thread sees
    /// to it when idle) or `bytes` have been written since.
    Interval {
        /// Longest time written records stay unsynced.
        every: Duration,
        /// Most bytes written between syncs.
        bytes: u64,
    },
    /// `append` returns after the record is written to the OS; syncs only
    /// on [`Wal::sync`], segment rotation and close.
    Never,
}

/// How new segment files get their space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preallocate {
    /// Let the file grow with each write.
    None,
    /// `fallocate` ahead of the writes (fewer extent updates): 1 MiB when
    /// the segment starts, the whole segment once the writes pass that, so
    /// a segment holding little costs little disk.
    Allocate,
    /// Write zeros over the whole segment at creation, so every later
    /// fdatasync only overwrites allocated, written blocks: about half the
    /// cost of one that grows the file, paid once per segment. The choice
    /// for synced appends of a page or more: on ext4 the first write into
    /// a fallocated (unwritten) block converts it, and the fdatasync then
    /// writes that metadata too (a journal commit, or without a journal
    /// the inode's block), so `Allocate` gains nothing there (BENCHMARKS.md: 1.5x the synced
    /// 4 KiB appends/s). The next segment is filled in the background.
    ZeroFill,
}

/// WAL settings.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// When records become durable. Default: `Always`.
    pub sync: SyncPolicy,
    /// A segment is closed and a new one started once a write would take it
    /// past this size. Default 64 MiB.
    pub segment_size: u64,
    /// How new segments are preallocated. Default: `Allocate`.
    pub preallocate: Preallocate,
    /// How many segments released by [`Wal::purge_before`] are kept for
    /// reuse instead of deleted (reused files are already allocated and
    /// written). Default 4.
    pub recycle_segments: usize,
    /// Open segments with `O_DIRECT` (writes are padded to the file system's
    /// alignment). Default off.
    pub direct_io: bool,
    /// How damage found at open is handled. Default: tolerate a torn tail.
    pub recovery: RecoveryMode,
    /// With `Never` or `Interval`, appends return as soon as their record is
    /// buffered while fewer than this many bytes are pending; a background
    /// thread hands them to the OS every `buffer_flush_every`. 0 (default):
    /// every append is written to the OS before it returns.
    pub write_buffer: usize,
    /// Longest time a buffered record waits before it is written to the OS.
    pub buffer_flush_every: Duration,
    /// Under `Never`/`Interval`, fsync a full segment on a background
    /// thread (default) rather than inline in the append that rotated.
    /// Off for deterministic runs: no thread, the same operation order.
    pub background_seal: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync: SyncPolicy::Always,
            segment_size: 64 << 20,
            preallocate: Preallocate::Allocate,
            recycle_segments: 4,
            direct_io: false,
            recovery: RecoveryMode::TolerateCorruptedTail,
            write_buffer: 0,
            buffer_flush_every: Duration::from_millis(5),
            background_seal: true,
        }
    }
}

impl WalOptions {
    pub(super) fn validate(&self) -> Result<()> {
        if self.segment_size < (SEGMENT_HEADER_LEN as u64) * 2 {
            return Err(Error::InvalidOption(format!(
                "segment_size {} is too small",
                self.segment_size
            )));
        }
        if self.write_buffer > 1 << 30 {
            return Err(Error::InvalidOption("write_buffer over 1 GiB".into()));
        }
        if let SyncPolicy::Interval { every, .. } = self.sync {
            if every.is_zero() {
                return Err(Error::InvalidOption("sync interval of zero".into()));
            }
        }
        Ok(())
    }

    pub(super) fn buffered(&self) -> bool {
        self.write_buffer > 0 && self.sync != SyncPolicy::Always
    }
}
