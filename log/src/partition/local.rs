//! The local log: appends (leader and follower), rolls, flushes and the
//! durable end, reads, offsets and the high watermark, truncation, the log
//! start and retention.

use super::*;

impl Partition {
    /// Appends a batch as leader: assigns its offsets from the log end and
    /// stamps `leader_epoch`. A batch from an idempotent producer is checked
    /// against its state first (a retried duplicate returns the original
    /// offsets). With `sync` (or `flush.messages=1`) the batch is fsynced
    /// before this returns.
    pub fn append(&self, b: Batch, leader_epoch: i32, sync: bool) -> Result<AppendInfo> {
        if leader_epoch < 0 {
            return Err(Error::InvalidArgument(format!(
                "leader epoch {leader_epoch}: a leader appends under an epoch of 0 or more"
            )));
        }
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
        if b.header.leader_epoch < 0 {
            return Err(Error::InvalidBatch(format!(
                "follower batch at offset {} carries no leader epoch",
                b.base_offset()
            )));
        }
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
    pub(super) fn append_locked(
        &self,
        st: &mut State,
        b: &Batch,
        sync: bool,
    ) -> Result<Option<FlushPlan>> {
        self.maybe_roll(st, b)?;
        let epoch = b.header.leader_epoch;
        if epoch >= 0 && st.epochs.last().is_none_or(|&(e, _)| epoch > e) {
            // The cache entry is durable before the batch reaches the
            // segment, so every batch on disk has its epoch in the cache
            // and recovery can treat a batch whose epoch the cache does not
            // give as damage (the epoch is outside the batch CRC).
            let put = self.meta.put_u64(
                &self.key(&format!("epoch/{epoch:010}")),
                b.base_offset(),
                true,
            );
            if let Err(e) = put {
                // Whether the entry is on disk is unknown: stop; a reopen
                // reads the cache as it is (an entry at the log end with no
                // batch is harmless, as a leader's fresh epoch is).
                st.failed = Some(self.stopped(&e));
                return Err(e);
            }
            st.epochs.push((epoch, b.base_offset()));
        }
        let res = st.active().and_then(|a| a.append(&*self.storage, b));
        if let Err(e) = res {
            // The file's tail is unknown now: stop; a reopen cuts it.
            st.failed = Some(self.stopped(&e));
            return Err(e);
        }
        st.producers.update(&b.header);
        if !(sync || self.cfg.flush_every_append) {
            return Ok(None);
        }
        match self.flush_plan(st) {
            Ok(plan) => Ok(Some(plan)),
            Err(e) => {
                // A write behind failed: the tail is unknown, as above.
                st.failed = Some(self.stopped(&e));
                Err(e)
            }
        }
    }

    pub(super) fn maybe_roll(&self, st: &mut State, b: &Batch) -> Result<()> {
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

    pub(super) fn roll_locked(&self, st: &mut State) -> Result<()> {
        let leo = st.leo();
        if st.active()?.size() == 0 {
            return Ok(());
        }
        if let Err(e) = st.active()?.seal() {
            st.failed = Some(self.stopped(&e));
            return Err(e);
        }
        let seg = Segment::create(&*self.storage, &self.dir, leo, self.seg_opts())?;
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
    /// Fails if writing what a direct segment held back fails.
    pub(super) fn flush_plan(&self, st: &State) -> Result<FlushPlan> {
        let rp = st.recovery_point;
        let from = st.segments.range(..=rp).next_back().map_or(0, |(&b, _)| b);
        Ok(FlushPlan {
            files: st
                .segments
                .range(from..)
                .map(|(_, s)| s.log_file())
                .collect::<Result<_>>()?,
            upto: st.leo(),
            truncations: self.truncations.load(std::sync::atomic::Ordering::SeqCst),
        })
    }

    /// Fsyncs a plan's files without the partition lock, so readers and
    /// other appenders go on meanwhile (and concurrent syncs share the
    /// disk's flush), then moves the recovery point.
    pub(super) fn complete_flush(&self, plan: FlushPlan) -> Result<()> {
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
    pub(super) fn set_recovery_point(&self, st: &mut State, rp: u64) {
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
        match plan {
            Ok(plan) => self.complete_flush(plan),
            Err(e) => {
                self.state.write().failed = Some(self.stopped(&e));
                Err(e)
            }
        }
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
                // The cache from the epoch holding `from` on (usually one
                // entry), to check each batch's epoch, which the batch CRC
                // does not cover.
                let first = st.epochs.partition_point(|&(_, s)| s <= from);
                let epochs = st.epochs[first.saturating_sub(1)..].to_vec();
                (generation, plan.map(|p| (p, epochs)), upper)
            };
            let Some(((src, pos, first), epochs)) = plan else {
                return Ok(Vec::new());
            };
            // Appends only add bytes past the size captured above; a
            // truncation meanwhile may have removed what was read: again.
            let res = src.read_from(pos, Some(first), max_bytes, upper, Some(&epochs));
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
    pub(super) fn plan_read(st: &State, from: u64) -> Result<Option<(ReadSource, u64, u64)>> {
        let start = st
            .segments
            .range(..=from)
            .next_back()
            .map_or(0, |(&b, _)| b);
        for (_, seg) in st.segments.range(start..) {
            if let Some((pos, h)) = seg.find(from)? {
                return Ok(Some((seg.source()?, pos, h.base_offset)));
            }
        }
        Ok(None)
    }

    /// A read while the caller holds the lock (recovery, the cleaner).
    pub(super) fn read_locked(
        st: &State,
        from: u64,
        max_bytes: usize,
        upper: u64,
    ) -> Result<Vec<Batch>> {
        if from >= upper {
            return Ok(Vec::new());
        }
        match Self::plan_read(st, from)? {
            Some((src, pos, first)) => src.read_from(pos, Some(first), max_bytes, upper, None),
            None => Ok(Vec::new()),
        }
    }

    /// The offset of the first record with a timestamp at or after `ts`
    /// (`None` if every record is older).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        Ok(self.record_for_timestamp(ts)?.map(|(o, _)| o))
    }

    /// The newest timestamp in the log and the offset of the first record
    /// that has it (ListOffsets' -3, KIP-734); `None` for an empty log.
    pub fn max_timestamp_record(&self) -> Result<Option<(u64, i64)>> {
        let max = {
            let st = self.state.read();
            st.segments
                .values()
                .filter(|s| s.first_batch_time().is_some())
                .map(|s| s.max_timestamp())
                .max()
        };
        match max {
            Some(ts) => self.record_for_timestamp(ts),
            None => Ok(None),
        }
    }

    /// The offset and timestamp of the first record with a timestamp at
    /// or after `ts` (`None` if every record is older): what ListOffsets
    /// by timestamp answers.
    pub fn record_for_timestamp(&self, ts: i64) -> Result<Option<(u64, i64)>> {
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
                        return Ok(Some((r.offset, r.timestamp)));
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

    /// Moves the high watermark in memory only (clamped to the log); the
    /// stored one, which only shortens what a restart must recompute, is
    /// written by [`Partition::set_high_watermark`]. For a caller that
    /// moves it on every request and stores it now and then.
    pub fn advance_high_watermark(&self, hwm: u64) -> u64 {
        let mut st = self.state.write();
        let h = hwm.clamp(st.log_start, st.leo());
        st.hwm = h;
        h
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
            // No batch goes, but an epoch assigned at the log end (a
            // leader that wrote nothing) starts at the cut and goes, as
            // Kafka's `truncateFromEnd`: otherwise a follower would keep
            // announcing an epoch its leader never wrote and diverge
            // forever.
            let leo = st.leo();
            let dead: Vec<String> = st
                .epochs
                .iter()
                .filter(|&&(_, s)| s >= offset)
                .map(|&(e, _)| self.key(&format!("epoch/{e:010}")))
                .collect();
            if !dead.is_empty() {
                st.epochs.retain(|&(_, s)| s < offset);
                self.meta.write(&[], &dead, true)?;
            }
            return Ok(leo);
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
        let seg = Segment::create(storage, &self.dir, offset, self.seg_opts())?;
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
}
