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
            let sources: Vec<(u64, ReadSource)> = st
                .segments
                .iter()
                .map(|(&b, s)| s.source().map(|src| (b, src)))
                .collect::<Result<_>>()?;
            (
                sources,
                st.leo(),
                self.truncations.load(std::sync::atomic::Ordering::SeqCst),
            )
        };
        // The latest offset of every key, over the whole log as planned.
        let mut latest: std::collections::HashMap<bytes::Bytes, u64> =
            std::collections::HashMap::new();
        // The base offset of each idempotent producer's last batch: that
        // batch stays (empty if need be) so producer state can be rebuilt
        // from the log, as Kafka's cleaner keeps it.
        let mut last_of_producer: std::collections::HashMap<i64, u64> =
            std::collections::HashMap::new();
        for (_, src) in &sources {
            let mut pos = 0u64;
            loop {
                let batches = src.read_from(pos, None, 4 << 20, leo, None)?;
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    pos += b.bytes.len() as u64;
                    if b.header.producer.id != batch::NO_PRODUCER_ID {
                        last_of_producer.insert(b.header.producer.id, b.base_offset());
                    }
                    for r in b.try_records()? {
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
        let opts = self.seg_opts();
        for (base, src) in sealed {
            let base = *base;
            let mut out: Vec<u8> = Vec::new();
            let mut pos = 0u64;
            let mut changed = false;
            let mut gap: Option<Gap> = None;
            let mut removed = 0u64;
            loop {
                let batches = src.read_from(pos, None, 4 << 20, u64::MAX, None)?;
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
                    let left = kept.header.record_count as usize;
                    removed += (n - left) as u64;
                    let producer_needs_it = b.header.producer.id != batch::NO_PRODUCER_ID
                        && last_of_producer.get(&b.header.producer.id) == Some(&b.base_offset());
                    if left == 0 && !producer_needs_it {
                        // Emptied: its offsets join a run of such batches
                        // that becomes one empty batch, so every batch
                        // still starts where the one before it ended (the
                        // check that protects base offsets outside the
                        // CRC) at the cost of one header per run.
                        changed |= n > 0 || b.header.producer.id != batch::NO_PRODUCER_ID;
                        gap = Some(match gap {
                            Some(g) => Gap {
                                last: b.last_offset(),
                                max_ts: g.max_ts.max(b.header.max_timestamp),
                                batches: g.batches + 1,
                                ..g
                            },
                            None => Gap {
                                base: b.base_offset(),
                                last: b.last_offset(),
                                epoch: b.header.leader_epoch,
                                max_ts: b.header.max_timestamp,
                                batches: 1,
                            },
                        });
                        if gap
                            .as_ref()
                            .is_some_and(|g| g.last - g.base >= i32::MAX as u64 / 2)
                        {
                            changed |= flush_gap(&mut out, gap.take())?;
                        }
                        continue;
                    }
                    changed |= flush_gap(&mut out, gap.take())?;
                    if left == n {
                        // Untouched: the producer's bytes, compressed or not.
                        out.extend_from_slice(&b.bytes);
                    } else {
                        changed = true;
                        out.extend_from_slice(&kept.bytes);
                    }
                }
            }
            changed |= flush_gap(&mut out, gap.take())?;
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

/// A run of batches the cleaner emptied, to be written as one empty batch.
struct Gap {
    base: u64,
    last: u64,
    epoch: i32,
    max_ts: i64,
    /// How many batches it stands for.
    batches: u32,
}

/// Writes `gap` as one empty batch; whether that changed the segment (a
/// run of one batch that was already an empty run is written as it was).
fn flush_gap(out: &mut Vec<u8>, gap: Option<Gap>) -> Result<bool> {
    let Some(g) = gap else { return Ok(false) };
    let b = batch::empty_span(g.base, g.last, g.epoch, g.max_ts)?;
    out.extend_from_slice(&b.bytes);
    Ok(g.batches > 1)
}
