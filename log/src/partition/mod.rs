//! One partition: a directory of segments plus its metadata in the store.
//!
//! By job: `load` opens and recovers it; `local` is the local log
//! (appends, flushes and the durable end, reads, truncation, the log start
//! and retention); `cleaner` compacts `cleanup.policy=compact` topics;
//! `epochs` is the leader-epoch cache; producer state lives in
//! [`crate::producer`]. This file holds the shared state and its locks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use strata_io::StorageRef;

use crate::batch::{self, Batch, ProducerInfo, Record};
use crate::config::{CleanupPolicy, LogConfig};
use crate::meta::{decode_u64, part_prefix, Meta};
use crate::producer::{ProducerState, Verdict};
use crate::segment::{self, ReadSource, Segment, SegmentOptions};
use crate::{Error, Result};

mod cleaner;
mod epochs;
mod load;
mod local;

/// Snapshots of producer state kept per partition.
const SNAPSHOTS_KEPT: usize = 2;

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub first_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// The batch was a retried duplicate: these are the original's offsets
    /// and nothing was appended.
    pub duplicate: bool,
}

/// Files to fsync, taken under the partition lock and synced after it.
struct FlushPlan {
    files: Vec<strata_io::FileRef>,
    /// The log end they make durable.
    upto: u64,
    /// The partition's truncation count when the plan was taken.
    truncations: u64,
}

/// What a cleaner run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanerStats {
    /// Segments rewritten.
    pub segments_cleaned: usize,
    /// Records dropped (older versions of a key, expired tombstones).
    pub records_removed: u64,
    /// Bytes of the sealed segments before.
    pub bytes_before: u64,
    /// And after.
    pub bytes_after: u64,
}

/// What opening a partition found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read and checked batch by batch (those past the recovery
    /// point).
    pub segments_scanned: usize,
    /// Where a torn or damaged tail was cut off: file, offset, reason.
    pub truncated: Option<(PathBuf, u64, String)>,
    /// Segments after the cut, deleted.
    pub segments_dropped: usize,
    /// Batches replayed into the producer state.
    pub producer_batches_replayed: u64,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    log_start: u64,
    hwm: u64,
    recovery_point: u64,
    producers: ProducerState,
    /// (epoch, start offset), ascending.
    epochs: Vec<(i32, u64)>,
    failed: Option<strata_io::Stopped>,
    /// The cleaner has compacted everything below this offset (in memory:
    /// after a restart the whole log counts as dirty once).
    cleaned_to: u64,
}

impl State {
    fn leo(&self) -> u64 {
        self.segments
            .values()
            .next_back()
            .map_or(self.log_start, |s| s.next_offset())
    }

    fn active(&mut self) -> Result<&mut Segment> {
        self.segments
            .values_mut()
            .next_back()
            .ok_or_else(|| Error::InvalidArgument("partition has no segment".into()))
    }
}

/// A partition's log.
///
/// Locks: `state` guards the segments, offsets, producer and epoch state;
/// appends and truncations take it for writing, reads plan under it and
/// copy outside it. Fsyncs run outside it (see `FlushPlan`).
/// `durable_mx` (with `durable_cv`) is for waiters on the durable end: it
/// is taken after `state` and never held while taking `state`. `cleaner`
/// serialises cleaner runs and is taken before `state`.
pub struct Partition {
    topic: String,
    partition: u32,
    dir: PathBuf,
    storage: StorageRef,
    meta: Arc<Meta>,
    cfg: LogConfig,
    /// Segments append with O_DIRECT ([`crate::ManagerOptions::direct_io`]).
    direct_io: bool,
    /// ... writing behind ([`crate::ManagerOptions::write_behind`]).
    write_behind: bool,
    /// ... keeping zeros written ahead ([`crate::ManagerOptions::preallocate`]).
    preallocate: bool,
    state: RwLock<State>,
    /// Counts truncations. Reads copy bytes without holding `state` and
    /// then check this did not move; if it did, what they read may be gone
    /// and they read again.
    truncations: std::sync::atomic::AtomicU64,
    /// `State::recovery_point` (the durable log end), published for
    /// [`Partition::wait_durable`] without the partition lock; waiters
    /// sleep on `durable_cv` under `durable_mx` (taken after `state`, and
    /// never held while taking it).
    durable: std::sync::atomic::AtomicU64,
    durable_mx: parking_lot::Mutex<()>,
    durable_cv: parking_lot::Condvar,
    /// One cleaner run at a time (it works mostly without `state`; taken
    /// before it).
    cleaner: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl Partition {
    fn key(&self, field: &str) -> String {
        format!("{}{field}", part_prefix(&self.topic, self.partition))
    }

    fn seg_opts(&self) -> SegmentOptions {
        SegmentOptions {
            index_interval_bytes: self.cfg.index_interval_bytes,
            max_index_bytes: self.cfg.segment_index_bytes,
            compacted: self.cfg.cleanup_policy == CleanupPolicy::Compact,
            direct_io: self.direct_io,
            write_behind: self.write_behind,
            preallocate: self.preallocate,
            max_bytes: self.cfg.segment_bytes,
        }
    }

    /// This partition, stopped by `e`.
    fn stopped(&self, e: &Error) -> strata_io::Stopped {
        strata_io::Stopped::new(
            format!("partition {}-{}", self.topic, self.partition),
            e,
            e.raw_os_error(),
        )
    }

    fn check_failed(st: &State) -> Result<()> {
        match &st.failed {
            Some(e) => Err(Error::Failed(e.clone())),
            None => Ok(()),
        }
    }

    /// Producer state (for inspection and tests).
    pub fn producer_state(&self) -> ProducerState {
        self.state.read().producers.clone()
    }

    /// Segment base offsets and sizes, oldest first.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        self.state
            .read()
            .segments
            .values()
            .map(|s| (s.base(), s.size()))
            .collect()
    }

    /// Partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }
}
