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
}
