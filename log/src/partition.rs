//! One partition: a directory of segments plus its metadata in the store.

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
/// is taken after `state` and never held while taking `state`.
pub struct Partition {
    topic: String,
    partition: u32,
    dir: PathBuf,
    storage: StorageRef,
    meta: Arc<Meta>,
    cfg: LogConfig,
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

    fn seg_opts(cfg: &LogConfig) -> SegmentOptions {
        SegmentOptions {
            index_interval_bytes: cfg.index_interval_bytes,
            max_index_bytes: cfg.segment_index_bytes,
        }
    }

    /// Opens (creating if needed) the partition in `dir` and recovers it:
    /// segments past the recovery point are read batch by batch and a torn
    /// or damaged tail is cut off (with every segment after it); indexes
    /// found missing or inconsistent are rebuilt; producer state is loaded
    /// from its latest snapshot and the batches after it.
    pub fn open(
        storage: StorageRef,
        meta: Arc<Meta>,
        dir: &Path,
        topic: &str,
        partition: u32,
        cfg: LogConfig,
    ) -> Result<(Partition, RecoveryReport)> {
        cfg.validate()?;
        strata_io::create_dir_durable(&*storage, dir)?;
        let p = Partition {
            topic: topic.to_string(),
            partition,
            dir: dir.to_path_buf(),
            storage: storage.clone(),
            meta,
            cfg,
            state: RwLock::new(State {
                segments: BTreeMap::new(),
                log_start: 0,
                hwm: 0,
                recovery_point: 0,
                producers: ProducerState::default(),
                epochs: Vec::new(),
                failed: None,
                cleaned_to: 0,
            }),
            truncations: std::sync::atomic::AtomicU64::new(0),
            durable: std::sync::atomic::AtomicU64::new(0),
            durable_mx: parking_lot::Mutex::new(()),
            durable_cv: parking_lot::Condvar::new(),
        };
        let report = p.recover()?;
        Ok((p, report))
    }

    fn recover(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let storage = &*self.storage;
        let mut bases = Vec::new();
        let mut stray = Vec::new();
        for name in storage.list_dir(&self.dir)? {
            if let Some(b) = segment::parse_name(&name, "log") {
                bases.push(b);
            } else if name.ends_with(".tmp") || name.ends_with(".cleaned") {
                stray.push(name);
            }
        }
        bases.sort_unstable();
        for name in stray {
            storage.remove_file(&self.dir.join(name))?;
        }
        let meta_start = self.meta.get_u64(&self.key("start"))?.unwrap_or(0);
        let rp = self.meta.get_u64(&self.key("recovery"))?.unwrap_or(0);
        let mut segments: BTreeMap<u64, Segment> = BTreeMap::new();
        let opts = Self::seg_opts(&self.cfg);
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let scan = bases.get(i + 1).is_none_or(|&next| next > rp);
            let (seg, stop) = Segment::open(storage, &self.dir, base, opts, scan)?;
            if scan {
                report.segments_scanned += 1;
            }
            if let Some(prev) = segments.values().next_back() {
                if prev.next_offset() > base {
                    return Err(Error::corruption(
                        seg.log_path(),
                        0,
                        format!(
                            "segment starts at offset {base} but the one before it runs to {}",
                            prev.next_offset()
                        ),
                    ));
                }
            }
            let cut = stop.is_some();
            if let Some((at, why)) = stop {
                tracing::warn!(file = %seg.log_path().display(), offset = at, reason = why,
                    "log segment cut at a torn or damaged tail (after the recovery point)");
                report.truncated = Some((seg.log_path().to_path_buf(), at, why.to_string()));
            }
            segments.insert(base, seg);
            i += 1;
            if cut {
                // Everything after an unflushed cut is unflushed too.
                for &later in &bases[i..] {
                    let (s, _) = Segment::open(storage, &self.dir, later, opts, true)?;
                    s.delete(storage)?;
                    report.segments_dropped += 1;
                }
                if report.segments_dropped > 0 {
                    storage.sync_dir(&self.dir)?;
                }
                break;
            }
        }
        if segments.is_empty() {
            let s = Segment::create(storage, &self.dir, meta_start, opts)?;
            segments.insert(meta_start, s);
        }
        // Every segment but the last is sealed: map it for reads.
        let n = segments.len();
        for s in segments.values_mut().take(n - 1) {
            s.map_log()?;
        }
        let first_base = segments.keys().next().copied().unwrap_or(meta_start);
        let mut st = self.state.write();
        st.segments = segments;
        st.log_start = meta_start.max(first_base);
        // Segments wholly below the log start: a crash interrupted their
        // deletion.
        self.drop_segments_below_start(&mut st)?;
        let mut leo = st.leo();
        if st.log_start > leo {
            // The start was moved (durably) past data a crash then lost:
            // the start stands and the log begins again there, empty, as
            // Kafka does; offsets below it are never handed out again.
            self.delete_all_segments(&mut st)?;
            let start = st.log_start;
            st.segments
                .insert(start, Segment::create(storage, &self.dir, start, opts)?);
            leo = start;
        }
        st.hwm = self
            .meta
            .get_u64(&self.key("hwm"))?
            .unwrap_or(0)
            .clamp(st.log_start, leo);
        self.set_recovery_point(&mut st, rp.min(leo));
        // Leader epochs that start past the end were truncated away.
        let mut epochs = Vec::new();
        let mut dead = Vec::new();
        for (k, v) in self.meta.scan(&self.key("epoch/"))? {
            let e: i32 = self.meta.key_suffix(&k)?;
            let start = decode_u64(&v).ok_or_else(|| self.meta.bad(&k, "bad epoch start"))?;
            if start > leo {
                dead.push(k);
            } else {
                epochs.push((e, start));
            }
        }
        epochs.sort_unstable();
        st.epochs = epochs;
        report.producer_batches_replayed = self.rebuild_producers(&mut st, dead)?;
        Ok(report)
    }

    /// Loads producer state from the latest snapshot at or below the log
    /// end and replays the batches after it. Snapshots past the end (of
    /// data a crash or a truncation removed) are deleted with `dead`.
    fn rebuild_producers(&self, st: &mut State, mut dead: Vec<String>) -> Result<u64> {
        let leo = st.leo();
        let mut best: Option<(u64, ProducerState)> = None;
        for (k, v) in self.meta.scan(&self.key("pidsnap/"))? {
            let off: u64 = self.meta.key_suffix(&k)?;
            if off > leo {
                dead.push(k);
                continue;
            }
            match ProducerState::decode(&v) {
                Ok(s) => best = Some((off, s)),
                Err(why) => {
                    tracing::warn!(key = %k, why, "damaged producer snapshot ignored; replaying from an earlier point");
                    dead.push(k);
                }
            }
        }
        if !dead.is_empty() {
            self.meta.write(&[], &dead, true)?;
        }
        let (from, mut state) = best.unwrap_or_default();
        let from = from.max(st.log_start);
        let mut n = 0u64;
        let mut at = from;
        while at < leo {
            let batches = Self::read_locked(st, at, 1 << 20, leo)?;
            let Some(last) = batches.last() else { break };
            at = last.last_offset() + 1;
            for b in &batches {
                state.update(&b.header);
                n += 1;
            }
        }
        st.producers = state;
        Ok(n)
    }

    /// Deletes every segment, newest first (a crash midway leaves a prefix).
    fn delete_all_segments(&self, st: &mut State) -> Result<()> {
        while let Some((_, s)) = st.segments.pop_last() {
            s.delete(&*self.storage)?;
        }
        self.storage.sync_dir(&self.dir)?;
        Ok(())
    }

    fn drop_segments_below_start(&self, st: &mut State) -> Result<()> {
        let mut dropped = false;
        loop {
            let mut keys = st.segments.keys();
            let (Some(&first), Some(&second)) = (keys.next(), keys.next()) else {
                break;
            };
            if second > st.log_start {
                break;
            }
            if let Some(s) = st.segments.remove(&first) {
                s.delete(&*self.storage)?;
                dropped = true;
            }
        }
        if dropped {
            self.storage.sync_dir(&self.dir)?;
        }
        Ok(())
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

    /// Appends a batch as leader: assigns its offsets from the log end and
    /// stamps `leader_epoch`. A batch from an idempotent producer is checked
    /// against its state first (a retried duplicate returns the original
    /// offsets). With `sync` (or `flush.messages=1`) the batch is fsynced
    /// before this returns.
    pub fn append(&self, b: Batch, leader_epoch: i32, sync: bool) -> Result<AppendInfo> {
        if self.cfg.cleanup_policy == CleanupPolicy::Compact && !b.every_record_has_a_key() {
            return Err(Error::InvalidBatch(
                "a compacted topic needs a key on every record".into(),
            ));
        }
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        Self::check_epoch(&st, leader_epoch)?;
        if let Verdict::Duplicate {
            first_offset,
            last_offset,
        } = st.producers.check(&b.header)?
        {
            return Ok(AppendInfo {
                first_offset,
                last_offset,
                duplicate: true,
            });
        }
        let leo = st.leo();
        let b = b.with_offset_and_epoch(leo, leader_epoch);
        let flush = self.append_locked(&mut st, &b, sync)?;
        drop(st);
        if let Some(plan) = flush {
            self.complete_flush(plan)?;
        }
        Ok(AppendInfo {
            first_offset: b.base_offset(),
            last_offset: b.last_offset(),
            duplicate: false,
        })
    }

    /// Builds a batch of `records` and appends it (see [`Partition::append`]).
    pub fn append_records(
        &self,
        records: &[Record],
        producer: ProducerInfo,
        leader_epoch: i32,
        sync: bool,
    ) -> Result<AppendInfo> {
        let b = batch::build(0, leader_epoch, producer, records)?;
        self.append(b, leader_epoch, sync)
    }

    /// Appends a batch as a follower copying its leader: the batch keeps
    /// its offsets, which must start at the log end.
    pub fn append_as_follower(&self, b: &Batch, sync: bool) -> Result<()> {
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        Self::check_epoch(&st, b.header.leader_epoch)?;
        let leo = st.leo();
        if b.base_offset() != leo {
            return Err(Error::InvalidBatch(format!(
                "follower batch starts at offset {} but the log ends at {leo}",
                b.base_offset()
            )));
        }
        let flush = self.append_locked(&mut st, b, sync)?;
        drop(st);
        match flush {
            Some(plan) => self.complete_flush(plan),
            None => Ok(()),
        }
    }

    /// Appends under the lock; what to fsync afterwards, outside it, if the
    /// append must be durable before it returns.
    fn append_locked(&self, st: &mut State, b: &Batch, sync: bool) -> Result<Option<FlushPlan>> {
        self.maybe_roll(st, b)?;
        let res = st.active().and_then(|a| a.append(b));
        if let Err(e) = res {
            // The file's tail is unknown now: stop; a reopen cuts it.
            st.failed = Some(self.stopped(&e));
            return Err(e);
        }
        st.producers.update(&b.header);
        let epoch = b.header.leader_epoch;
        if epoch >= 0 && st.epochs.last().is_none_or(|&(e, _)| epoch > e) {
            st.epochs.push((epoch, b.base_offset()));
            self.meta.put_u64(
                &self.key(&format!("epoch/{epoch:010}")),
                b.base_offset(),
                true,
            )?;
        }
        Ok((sync || self.cfg.flush_every_append).then(|| self.flush_plan(st)))
    }

    fn maybe_roll(&self, st: &mut State, b: &Batch) -> Result<()> {
        let a = st.active()?;
        if a.size() == 0 {
            return Ok(());
        }
        let too_big = a.size() + b.bytes.len() as u64 > self.cfg.segment_bytes;
        let too_old = match (self.cfg.segment_ms, a.first_batch_time()) {
            (Some(ms), Some(first)) => b.header.max_timestamp.saturating_sub(first) >= ms,
            _ => false,
        };
        if too_big || too_old || a.index_full() {
            self.roll_locked(st)?;
        }
        Ok(())
    }

    fn roll_locked(&self, st: &mut State) -> Result<()> {
        let leo = st.leo();
        if st.active()?.size() == 0 {
            return Ok(());
        }
        if let Err(e) = st.active()?.seal() {
            st.failed = Some(self.stopped(&e));
            return Err(e);
        }
        let seg = Segment::create(&*self.storage, &self.dir, leo, Self::seg_opts(&self.cfg))?;
        st.segments.insert(leo, seg);
        self.set_recovery_point(st, leo);
        // The producer state at the roll, so a restart replays only the
        // newest segment; older snapshots beyond the kept ones go.
        let mut old: Vec<String> = self
            .meta
            .scan(&self.key("pidsnap/"))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let keep_from = old.len().saturating_sub(SNAPSHOTS_KEPT - 1);
        let dead: Vec<String> = old.drain(..keep_from).collect();
        self.meta.write(
            &[
                (
                    self.key(&format!("pidsnap/{leo:020}")),
                    st.producers.encode(),
                ),
                (self.key("recovery"), leo.to_be_bytes().to_vec()),
            ],
            &dead,
            false,
        )?;
        Ok(())
    }

    /// Starts a new segment now.
    pub fn roll(&self) -> Result<()> {
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        self.roll_locked(&mut st)
    }

    /// What makes everything appended so far durable: the logs of the
    /// segments from the one holding the recovery point on.
    fn flush_plan(&self, st: &State) -> FlushPlan {
        let rp = st.recovery_point;
        let from = st.segments.range(..=rp).next_back().map_or(0, |(&b, _)| b);
        FlushPlan {
            files: st
                .segments
                .range(from..)
                .map(|(_, s)| s.log_file())
                .collect(),
            upto: st.leo(),
            truncations: self.truncations.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Fsyncs a plan's files without the partition lock, so readers and
    /// other appenders go on meanwhile (and concurrent syncs share the
    /// disk's flush), then moves the recovery point.
    fn complete_flush(&self, plan: FlushPlan) -> Result<()> {
        for f in &plan.files {
            if let Err(e) = f.sync_data() {
                // Fatal for the partition, never retried: the kernel may
                // already have dropped the dirty pages.
                let e = Error::from(e);
                self.state.write().failed = Some(self.stopped(&e));
                return Err(e);
            }
        }
        {
            let mut st = self.state.write();
            // A truncation meanwhile may have cut what was synced; the
            // next flush records the point then.
            let same =
                plan.truncations == self.truncations.load(std::sync::atomic::Ordering::SeqCst);
            if !same || plan.upto <= st.recovery_point {
                return Ok(());
            }
            self.set_recovery_point(&mut st, plan.upto);
        }
        // Unsynced, and outside the lock: an older recovery point after a
        // crash (or from a slower flusher overtaken here) only means a
        // longer scan of data that is durable anyway.
        self.meta.put_u64(&self.key("recovery"), plan.upto, false)
    }

    /// Moves the durable log end and wakes [`Partition::wait_durable`].
    fn set_recovery_point(&self, st: &mut State, rp: u64) {
        st.recovery_point = rp;
        self.durable.store(rp, std::sync::atomic::Ordering::Release);
        let _g = self.durable_mx.lock();
        self.durable_cv.notify_all();
    }

    /// The durable log end: every batch below it is fsynced and survives
    /// a power cut (the high watermark of replication counts only this).
    pub fn durable_end_offset(&self) -> u64 {
        self.durable.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the durable log end reaches `offset` (someone else's
    /// flush or a synced append makes it move; this does not flush), at
    /// most `timeout`. `Ok(true)` once it has, `Ok(false)` on timeout, an
    /// error if the partition failed meanwhile.
    pub fn wait_durable(&self, offset: u64, timeout: std::time::Duration) -> Result<bool> {
        let deadline = std::time::Instant::now() + timeout;
        let mut g = self.durable_mx.lock();
        loop {
            if self.durable_end_offset() >= offset {
                return Ok(true);
            }
            // `state` is never taken under `durable_mx` (a flush takes them
            // the other way round).
            let failed =
                parking_lot::MutexGuard::unlocked(&mut g, || self.state.read().failed.clone());
            if let Some(e) = failed {
                return Err(Error::Failed(e));
            }
            // Looked at again under the lock: a flush that finished while
            // it was released notified before this wait could hear it.
            if self.durable_end_offset() >= offset {
                return Ok(true);
            }
            if self.durable_cv.wait_until(&mut g, deadline).timed_out() {
                return Ok(self.durable_end_offset() >= offset);
            }
        }
    }

    /// Makes every appended batch durable.
    pub fn flush(&self) -> Result<()> {
        let plan = {
            let st = self.state.read();
            Self::check_failed(&st)?;
            self.flush_plan(&st)
        };
        self.complete_flush(plan)
    }

    /// Reads whole batches from the one holding `from` on: up to
    /// `max_bytes` (at least one batch), and only batches wholly below
    /// `upper_bound` (the high watermark for committed reads; the log end
    /// if `None`). `from` must lie in `[log start, log end]`.
    pub fn read(
        &self,
        from: u64,
        max_bytes: usize,
        upper_bound: Option<u64>,
    ) -> Result<Vec<Batch>> {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            // Under the lock: the range, and where to read (an index lookup
            // and a few header reads). The copy and the checksums run after
            // it, so appenders do not wait on them.
            let (generation, plan, upper) = {
                let st = self.state.read();
                let leo = st.leo();
                if from < st.log_start || from > leo {
                    return Err(Error::OffsetOutOfRange {
                        offset: from,
                        start: st.log_start,
                        end: leo,
                    });
                }
                let upper = upper_bound.unwrap_or(leo).min(leo);
                if from >= upper {
                    return Ok(Vec::new());
                }
                let generation = self.truncations.load(SeqCst);
                let plan = Self::plan_read(&st, from)?;
                (generation, plan, upper)
            };
            let Some((src, pos)) = plan else {
                return Ok(Vec::new());
            };
            // Appends only add bytes past the size captured above; a
            // truncation meanwhile may have removed what was read: again.
            let res = src.read_from(pos, max_bytes, upper);
            if self.truncations.load(SeqCst) == generation {
                return res;
            }
        }
    }

    /// Reads committed batches: up to the high watermark.
    pub fn read_committed(&self, from: u64, max_bytes: usize) -> Result<Vec<Batch>> {
        let hwm = self.high_watermark();
        self.read(from, max_bytes, Some(hwm))
    }

    /// Where the batch holding `from` (or the first after it) is: its
    /// segment's bytes and its position.
    fn plan_read(st: &State, from: u64) -> Result<Option<(ReadSource, u64)>> {
        let start = st
            .segments
            .range(..=from)
            .next_back()
            .map_or(0, |(&b, _)| b);
        for (_, seg) in st.segments.range(start..) {
            if let Some((pos, _)) = seg.find(from)? {
                return Ok(Some((seg.source(), pos)));
            }
        }
        Ok(None)
    }

    /// A read while the caller holds the lock (recovery, the cleaner).
    fn read_locked(st: &State, from: u64, max_bytes: usize, upper: u64) -> Result<Vec<Batch>> {
        if from >= upper {
            return Ok(Vec::new());
        }
        match Self::plan_read(st, from)? {
            Some((src, pos)) => src.read_from(pos, max_bytes, upper),
            None => Ok(Vec::new()),
        }
    }

    /// The offset of the first record with a timestamp at or after `ts`
    /// (`None` if every record is older).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let st = self.state.read();
        let leo = st.leo();
        for seg in st.segments.values() {
            if seg.max_timestamp() < ts {
                continue;
            }
            let mut pos = seg.time_lookup(ts);
            loop {
                let batches = seg.read_from(pos, 1 << 20, leo)?;
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    pos += b.bytes.len() as u64;
                    if b.header.max_timestamp < ts {
                        continue;
                    }
                    if let Some(r) = b
                        .records()
                        .into_iter()
                        .find(|r| r.timestamp >= ts && r.offset >= st.log_start)
                    {
                        return Ok(Some(r.offset));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Log start offset: the first offset a read may ask for.
    pub fn log_start_offset(&self) -> u64 {
        self.state.read().log_start
    }

    /// Log end offset: the offset the next record gets.
    pub fn log_end_offset(&self) -> u64 {
        self.state.read().leo()
    }

    /// The offset up to which (exclusive) records are committed.
    pub fn high_watermark(&self) -> u64 {
        self.state.read().hwm
    }

    /// Sets the high watermark (replication does): clamped to the log.
    pub fn set_high_watermark(&self, hwm: u64) -> Result<u64> {
        let mut st = self.state.write();
        let h = hwm.clamp(st.log_start, st.leo());
        st.hwm = h;
        // Unsynced, like Kafka's periodic checkpoint: after a crash the
        // watermark may be lower, never past the data.
        self.meta.put_u64(&self.key("hwm"), h, false)?;
        Ok(h)
    }

    /// Removes every batch that holds an offset at or after `offset`
    /// (truncation is by whole batches: the new log end is the first such
    /// batch's base offset) and returns the new log end. Durable on return:
    /// nothing beyond it is read again, even after a crash.
    pub fn truncate_to(&self, offset: u64) -> Result<u64> {
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        self.truncations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if offset >= st.leo() {
            return Ok(st.leo());
        }
        if offset <= st.log_start {
            drop(st);
            self.truncate_fully_and_start_at(offset)?;
            return Ok(offset);
        }
        // Later segments first, newest first, so a crash midway leaves a
        // prefix of the log.
        let later: Vec<u64> = st
            .segments
            .range(offset + 1..)
            .map(|(&b, _)| b)
            .rev()
            .collect();
        let storage = &*self.storage;
        for b in later {
            if st.segments.len() == 1 {
                break;
            }
            if let Some(s) = st.segments.remove(&b) {
                s.delete(storage)?;
                storage.sync_dir(&self.dir)?;
            }
        }
        let log_start = st.log_start;
        let res = (|| {
            let seg = st.active()?;
            match seg.find(offset)? {
                // The batch to cut starts at or before the log start: the
                // log keeps nothing.
                Some((_, h)) if h.base_offset <= log_start => Ok(true),
                Some((pos, _)) => seg.truncate_at(storage, pos).map(|()| false),
                None => Ok(false),
            }
        })();
        if let Ok(true) = res {
            drop(st);
            self.truncate_fully_and_start_at(log_start)?;
            return Ok(log_start);
        }
        if let Err(e) = res {
            st.failed = Some(self.stopped(&e));
            return Err(e);
        }
        let leo = st.leo();
        let rp = st.recovery_point.min(leo);
        self.set_recovery_point(&mut st, rp);
        st.hwm = st.hwm.min(leo);
        let dead_epochs: Vec<String> = st
            .epochs
            .iter()
            .filter(|&&(_, s)| s >= leo)
            .map(|&(e, _)| self.key(&format!("epoch/{e:010}")))
            .collect();
        st.epochs.retain(|&(_, s)| s < leo);
        self.meta.write(
            &[
                (
                    self.key("recovery"),
                    st.recovery_point.to_be_bytes().to_vec(),
                ),
                (self.key("hwm"), st.hwm.to_be_bytes().to_vec()),
            ],
            &dead_epochs,
            true,
        )?;
        self.rebuild_producers(&mut st, Vec::new())?;
        Ok(leo)
    }

    /// Deletes the whole log and starts it empty at `offset`.
    pub fn truncate_fully_and_start_at(&self, offset: u64) -> Result<()> {
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        self.truncations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let storage = &*self.storage;
        self.delete_all_segments(&mut st)?;
        let mut dead: Vec<String> = self
            .meta
            .scan(&self.key("pidsnap/"))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        dead.extend(
            st.epochs
                .iter()
                .map(|&(e, _)| self.key(&format!("epoch/{e:010}"))),
        );
        let v = offset.to_be_bytes().to_vec();
        self.meta.write(
            &[
                (self.key("start"), v.clone()),
                (self.key("recovery"), v.clone()),
                (self.key("hwm"), v),
            ],
            &dead,
            true,
        )?;
        let seg = Segment::create(storage, &self.dir, offset, Self::seg_opts(&self.cfg))?;
        st.segments.insert(offset, seg);
        st.log_start = offset;
        st.hwm = offset;
        self.set_recovery_point(&mut st, offset);
        st.epochs.clear();
        st.producers = ProducerState::default();
        Ok(())
    }

    /// Moves the log start to `offset` (at most the high watermark, as
    /// Kafka's DeleteRecords) and deletes the segments wholly below it.
    /// Returns the new log start.
    pub fn delete_records_before(&self, offset: u64) -> Result<u64> {
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        if offset > st.hwm {
            return Err(Error::OffsetOutOfRange {
                offset,
                start: st.log_start,
                end: st.hwm,
            });
        }
        if offset > st.log_start {
            // The new start is durable before any file goes.
            self.meta.put_u64(&self.key("start"), offset, true)?;
            st.log_start = offset;
            self.drop_segments_below_start(&mut st)?;
        }
        Ok(st.log_start)
    }

    /// Applies retention (`retention.ms` by each segment's newest record,
    /// `retention.bytes` by total size): deletes whole segments from the
    /// oldest, never the active one. Returns the segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        if self.cfg.cleanup_policy == CleanupPolicy::Compact {
            // A compacted topic keeps the latest record per key instead.
            return Ok(0);
        }
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        let mut total: u64 = st.segments.values().map(|s| s.size()).sum();
        let mut new_start = st.log_start;
        let mut n = 0;
        let count = st.segments.len();
        for (i, s) in st.segments.values().enumerate() {
            if i + 1 == count {
                break;
            }
            let expired = self
                .cfg
                .retention_ms
                .is_some_and(|ms| s.max_timestamp() != i64::MIN && s.max_timestamp() < now_ms - ms);
            let oversize = self
                .cfg
                .retention_bytes
                .is_some_and(|limit| total.saturating_sub(s.size()) >= limit);
            if !(expired || oversize) {
                break;
            }
            total -= s.size();
            new_start = s.next_offset().max(new_start);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        // The next segment's base: records below it are gone.
        if let Some((&b, _)) = st.segments.iter().nth(n) {
            new_start = new_start.max(b);
        }
        self.meta.put_u64(&self.key("start"), new_start, true)?;
        st.log_start = new_start;
        st.hwm = st.hwm.max(new_start);
        self.drop_segments_below_start(&mut st)?;
        Ok(n)
    }

    /// Runs the cleaner of a compacted topic once: every sealed segment is
    /// rewritten keeping, for each key, only the record with the key's
    /// latest offset in the whole log, and dropping tombstones (null
    /// values) older than `delete.retention.ms` at `now_ms`. Offsets are
    /// preserved (a batch keeps its base offset and span; a batch left
    /// empty goes). Each segment is replaced by write-temp, fsync, rename,
    /// fsync directory, its indexes rebuilt; a crash leaves the old or the
    /// new segment whole. Appends wait while it runs.
    pub fn compact(&self, now_ms: i64) -> Result<CleanerStats> {
        if self.cfg.cleanup_policy != CleanupPolicy::Compact {
            return Err(Error::InvalidArgument(format!(
                "{}-{} is not a compacted topic (cleanup.policy=delete)",
                self.topic, self.partition
            )));
        }
        let mut st = self.state.write();
        Self::check_failed(&st)?;
        let leo = st.leo();
        // The latest offset of every key, over the whole log.
        let mut latest: std::collections::HashMap<bytes::Bytes, u64> =
            std::collections::HashMap::new();
        let mut at = st.log_start;
        while at < leo {
            let batches = Self::read_locked(&st, at, 4 << 20, leo)?;
            let Some(last) = batches.last() else { break };
            at = last.last_offset() + 1;
            for b in &batches {
                for r in b.records() {
                    if let Some(k) = r.key {
                        latest.insert(k, r.offset);
                    }
                }
            }
        }
        let mut stats = CleanerStats::default();
        st.cleaned_to = st.segments.keys().next_back().copied().unwrap_or(leo);
        let sealed: Vec<u64> = st.segments.keys().copied().collect();
        let sealed = &sealed[..sealed.len().saturating_sub(1)];
        let storage = &*self.storage;
        let opts = Self::seg_opts(&self.cfg);
        for &base in sealed {
            let Some(seg) = st.segments.get(&base) else {
                continue;
            };
            let mut out: Vec<u8> = Vec::new();
            let mut pos = 0u64;
            let mut changed = false;
            loop {
                let batches = seg.read_from(pos, 4 << 20, u64::MAX)?;
                if batches.is_empty() {
                    break;
                }
                for b in batches {
                    pos += b.bytes.len() as u64;
                    let n = b.header.record_count as usize;
                    let kept = batch::filter(&b, |r| {
                        let newest = r.key.as_ref().and_then(|k| latest.get(k)) == Some(&r.offset);
                        let dead_tombstone = r.value.is_none()
                            && r.timestamp < now_ms.saturating_sub(self.cfg.delete_retention_ms);
                        newest && !dead_tombstone
                    })?;
                    let left = kept.as_ref().map_or(0, |k| k.header.record_count as usize);
                    stats.records_removed += (n - left) as u64;
                    changed |= left != n;
                    if let Some(k) = kept {
                        out.extend_from_slice(&k.bytes);
                    }
                }
            }
            stats.bytes_before += seg.size();
            stats.bytes_after += if changed {
                out.len() as u64
            } else {
                seg.size()
            };
            if !changed {
                continue;
            }
            let log = self.dir.join(segment::file_name(base, "log"));
            let cleaned = self
                .dir
                .join(format!("{}.cleaned", segment::file_name(base, "log")));
            let f = storage.open(&cleaned, strata_io::OpenOptions::create())?;
            f.set_len(0)?;
            f.write_at(&out, 0)?;
            f.sync_data()?;
            drop(f);
            // Indexes first: a crash then leaves a log with no index, which
            // the next open rebuilds, never an index of the other log.
            for ext in ["index", "timeindex"] {
                match storage.remove_file(&self.dir.join(segment::file_name(base, ext))) {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            storage.sync_dir(&self.dir)?;
            storage.rename(&cleaned, &log)?;
            storage.sync_dir(&self.dir)?;
            let (mut fresh, _) = Segment::open(storage, &self.dir, base, opts, true)?;
            fresh.seal()?;
            st.segments.insert(base, fresh);
            stats.segments_cleaned += 1;
        }
        Ok(stats)
    }

    /// The share of the sealed segments' bytes the cleaner has not yet
    /// compacted (Kafka's cleanable ratio; the cleaner runs past
    /// `min.cleanable.dirty.ratio`).
    pub fn dirty_ratio(&self) -> f64 {
        let st = self.state.read();
        let n = st.segments.len().saturating_sub(1);
        let (mut dirty, mut total) = (0u64, 0u64);
        for s in st.segments.values().take(n) {
            total += s.size();
            if s.base() >= st.cleaned_to {
                dirty += s.size();
            }
        }
        if total == 0 {
            0.0
        } else {
            dirty as f64 / total as f64
        }
    }

    /// Records that `epoch` starts at the log end (a new leader does this
    /// before appending). Assigning the newest epoch again does nothing;
    /// an older one is refused ([`Error::StaleEpoch`]): epochs are fencing
    /// tokens and never go back.
    pub fn assign_epoch(&self, epoch: i32) -> Result<()> {
        let mut st = self.state.write();
        let leo = st.leo();
        Self::check_epoch(&st, epoch)?;
        if st.epochs.last().is_some_and(|&(e, _)| epoch == e) {
            return Ok(());
        }
        self.meta
            .put_u64(&self.key(&format!("epoch/{epoch:010}")), leo, true)?;
        st.epochs.push((epoch, leo));
        Ok(())
    }

    /// Refuses a leader epoch older than the newest in the cache (a batch
    /// from a deposed leader, or a cache that would go back). Negative
    /// epochs mean "none" (clients' own batches) and pass.
    fn check_epoch(st: &State, epoch: i32) -> Result<()> {
        match st.epochs.last() {
            Some(&(latest, _)) if epoch >= 0 && epoch < latest => {
                Err(Error::StaleEpoch { epoch, latest })
            }
            _ => Ok(()),
        }
    }

    /// The leader-epoch cache: (epoch, start offset), ascending.
    pub fn epochs(&self) -> Vec<(i32, u64)> {
        self.state.read().epochs.clone()
    }

    /// Kafka's OffsetsForLeaderEpoch: the end offset of `epoch` (the start
    /// of the next larger epoch, or the log end for the latest), and the
    /// largest epoch at or below the one asked for.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        let st = self.state.read();
        let i = st.epochs.iter().rposition(|&(e, _)| e <= epoch)?;
        let end = st.epochs.get(i + 1).map_or(st.leo(), |&(_, s)| s);
        Some((st.epochs[i].0, end))
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
