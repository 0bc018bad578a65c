//! Opening a partition: recovery of its segments past the recovery point
//! (a torn or damaged tail cut, with every segment after it), its indexes,
//! its producer state and leader epochs from the metadata store.

use super::*;

impl Partition {
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
        Self::open_with(
            storage,
            meta,
            dir,
            topic,
            partition,
            cfg,
            Default::default(),
        )
    }

    /// [`Partition::open`], with segments appended as `io` says
    /// ([`crate::ManagerOptions::direct_io`], [`crate::ManagerOptions::write_behind`],
    /// [`crate::ManagerOptions::preallocate`]).
    pub fn open_with(
        storage: StorageRef,
        meta: Arc<Meta>,
        dir: &Path,
        topic: &str,
        partition: u32,
        cfg: LogConfig,
        io: crate::SegmentIo,
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
            direct_io: io.direct_io,
            write_behind: io.direct_io && io.write_behind,
            preallocate: io.direct_io && io.preallocate,
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
            cleaner: parking_lot::Mutex::new(()),
        };
        let report = p.recover()?;
        Ok((p, report))
    }

    pub(super) fn recover(&self) -> Result<RecoveryReport> {
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
        let opts = self.seg_opts();
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let scan = bases.get(i + 1).is_none_or(|&next| next > rp);
            let (seg, stop) = Segment::open(storage, &self.dir, base, opts, scan)?;
            if scan {
                report.segments_scanned += 1;
            }
            if let Some(prev) = segments.values().next_back() {
                if prev.next_offset() != base {
                    return Err(Error::corruption(
                        seg.log_path(),
                        0,
                        format!(
                            "segment starts at offset {base} but the one before it ends at {}",
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
        // Every batch reaches its segment after its epoch's cache entry is
        // durable, so a batch past the recovery point whose epoch is not
        // the one the cache gives its offset is damage in a field the CRC
        // does not cover: the unflushed tail is cut there.
        let leo = st.leo();
        let mut at = rp.max(st.log_start).min(leo);
        let mut cut = None;
        while at < leo && cut.is_none() {
            let batches = Self::read_locked(&st, at, 1 << 20, leo)?;
            let Some(last) = batches.last() else { break };
            at = last.last_offset() + 1;
            cut = batches.iter().find_map(|b| {
                let want = segment::epoch_at(&st.epochs, b.base_offset());
                (want != Some(b.header.leader_epoch)).then_some((
                    b.base_offset(),
                    b.header.leader_epoch,
                    want,
                ))
            });
        }
        report.producer_batches_replayed = self.rebuild_producers(&mut st, dead)?;
        if let Some((offset, got, want)) = cut {
            let path = st
                .segments
                .range(..=offset)
                .next_back()
                .map(|(_, s)| s.log_path().to_path_buf())
                .unwrap_or_default();
            drop(st);
            tracing::warn!(file = %path.display(), offset, epoch = got, expected = ?want,
                "log cut at a batch whose leader epoch the epoch cache does not give (after the recovery point)");
            self.truncate_to(offset)?;
            report.truncated = Some((
                path,
                offset,
                format!("batch leader epoch {got} where the epoch cache gives {want:?}"),
            ));
        }
        Ok(report)
    }

    /// Loads producer state from the latest snapshot at or below the log
    /// end and replays the batches after it. Snapshots past the end (of
    /// data a crash or a truncation removed) are deleted with `dead`.
    pub(super) fn rebuild_producers(&self, st: &mut State, mut dead: Vec<String>) -> Result<u64> {
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
    pub(super) fn delete_all_segments(&self, st: &mut State) -> Result<()> {
        while let Some((_, s)) = st.segments.pop_last() {
            s.delete(&*self.storage)?;
        }
        self.storage.sync_dir(&self.dir)?;
        Ok(())
    }

    pub(super) fn drop_segments_below_start(&self, st: &mut State) -> Result<()> {
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
}
