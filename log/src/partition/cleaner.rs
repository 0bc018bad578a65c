//! The cleaner of compacted topics.

use super::*;

impl Partition {
    /// Runs the cleaner of a compacted topic once: every sealed segment is
    /// rewritten keeping, for each key, only the record with the key's
    /// latest offset in the whole log, and dropping tombstones (null
    /// values) older than `delete.retention.ms` at `now_ms`. Offsets are
    /// preserved (a batch keeps its base offset and span; a batch left
    /// empty goes). Each segment is replaced by write-temp, fsync, rename,
    /// fsync directory, its indexes rebuilt; a crash leaves the old or the
    /// new segment whole.
    ///
    /// The work is done off the partition lock, so appends and reads go on:
    /// the segments to read are taken under a brief read lock (sealed ones
    /// never change in place), the key scan, the filtering and the new
    /// file's write and fsync run without it, and only the swap of a
    /// segment takes the write lock, after checking that no truncation,
    /// retention or other change touched that segment meanwhile (if one
    /// did, the rewrite is dropped and the next run redoes it).
    pub fn compact(&self, now_ms: i64) -> Result<CleanerStats> {
        if self.cfg.cleanup_policy != CleanupPolicy::Compact {
            return Err(Error::InvalidArgument(format!(
                "{}-{} is not a compacted topic (cleanup.policy=delete)",
                self.topic, self.partition
            )));
        }
        let _one = self.cleaner.lock();
        let (sources, leo, truncations) = {
            let st = self.state.read();
            Self::check_failed(&st)?;
            let sources: Vec<(u64, ReadSource)> =
                st.segments.iter().map(|(&b, s)| (b, s.source())).collect();
            (
                sources,
                st.leo(),
                self.truncations.load(std::sync::atomic::Ordering::SeqCst),
            )
        };
        // The latest offset of every key, over the whole log as planned.
        let mut latest: std::collections::HashMap<bytes::Bytes, u64> =
            std::collections::HashMap::new();
        for (_, src) in &sources {
            let mut pos = 0u64;
            loop {
                let batches = src.read_from(pos, 4 << 20, leo)?;
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    pos += b.bytes.len() as u64;
                    for r in b.records() {
                        if let Some(k) = r.key {
                            latest.insert(k, r.offset);
                        }
                    }
                }
            }
        }
        let mut stats = CleanerStats::default();
        let active_base = sources.last().map_or(leo, |(b, _)| *b);
        let sealed = &sources[..sources.len().saturating_sub(1)];
        let storage = &*self.storage;
        let opts = Self::seg_opts(&self.cfg);
        for (base, src) in sealed {
            let base = *base;
            let mut out: Vec<u8> = Vec::new();
            let mut pos = 0u64;
            let mut changed = false;
            let mut removed = 0u64;
            loop {
                let batches = src.read_from(pos, 4 << 20, u64::MAX)?;
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
                    removed += (n - left) as u64;
                    changed |= left != n;
                    if let Some(k) = kept {
                        out.extend_from_slice(&k.bytes);
                    }
                }
            }
            stats.bytes_before += src.size();
            if !changed {
                stats.bytes_after += src.size();
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
            let mut st = self.state.write();
            let untouched = self.truncations.load(std::sync::atomic::Ordering::SeqCst)
                == truncations
                && st.segments.keys().next_back() != Some(&base)
                && st
                    .segments
                    .get(&base)
                    .is_some_and(|s| s.size() == src.size());
            if !untouched {
                drop(st);
                if let Err(e) = storage.remove_file(&cleaned) {
                    tracing::warn!(error = %e, "could not remove an abandoned cleaner output");
                }
                stats.bytes_after += src.size();
                continue;
            }
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
            drop(st);
            stats.segments_cleaned += 1;
            stats.records_removed += removed;
            stats.bytes_after += out.len() as u64;
        }
        let mut st = self.state.write();
        st.cleaned_to = st.cleaned_to.max(active_base);
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
}
