//! Compaction: the threads that run the picker's tasks, the merge that
//! writes their outputs, manual `compact_range`, and the rate limiter on
//! compaction writes.
//!
//! A compaction owns its input files (`busy`) from pick to install, so
//! threads never share a file; leveled tasks over disjoint key ranges run
//! side by side. Outputs are complete, fsynced files before one manifest
//! edit swaps them for the inputs; a crash before that edit leaves only
//! orphan files, which the next open deletes. Inputs are deleted once no
//! version or iterator holds them. A compaction never blocks readers:
//! they keep the version they started with.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::stats::Counters;
use super::version::Sst;
use super::{table_path, BgState, Inner};
use crate::compaction::GcFilter;
use crate::iter::{InternalIterator, LevelIter, MergingIter};
use crate::key;
use crate::manifest::{Edit, TableMeta};
use crate::picker::Task;
use crate::range_del::RangeTombstone;
use crate::table::properties::Properties;
use crate::table::TableBuilder;
use crate::{Error, Result};

/// A token bucket on compaction writes (bytes per second; 0 = no limit).
/// Callers take what they need and sleep off any debt, so one large
/// request cannot starve others for long.
pub(crate) struct RateLimiter {
    rate: u64,
    /// Bytes available (negative: owed) and when it was last refilled.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(rate: u64) -> Self {
        RateLimiter {
            rate,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `bytes`, sleeping while the bucket is in debt; returns the
    /// time slept.
    pub(crate) fn request(&self, bytes: u64) -> Duration {
        if self.rate == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let rate = self.rate as f64;
        let wait = {
            let mut s = self.state.lock();
            let now = Instant::now();
            // At most 100 ms of burst accumulates.
            let refill = now.duration_since(s.1).as_secs_f64() * rate;
            s.0 = (s.0 + refill).min(rate / 10.0);
            s.1 = now;
            s.0 -= bytes as f64;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        wait
    }
}

/// The key right after `k` in byte order: `k` followed by a zero byte.
fn successor(k: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(k.len() + 1);
    s.extend_from_slice(k);
    s.push(0);
    s
}

/// The part of each tombstone inside `[lo, hi)` (`None`: unbounded).
fn clip(ts: &[RangeTombstone], lo: Option<&[u8]>, hi: Option<&[u8]>) -> Vec<RangeTombstone> {
    ts.iter()
        .filter_map(|t| {
            let start = match lo {
                Some(lo) if lo > t.start.as_slice() => lo.to_vec(),
                _ => t.start.clone(),
            };
            let end = match hi {
                Some(hi) if hi < t.end.as_slice() => hi.to_vec(),
                _ => t.end.clone(),
            };
            (start < end).then_some(RangeTombstone {
                start,
                end,
                seqno: t.seqno,
            })
        })
        .collect()
}

/// A finished output table.
struct Output {
    number: u64,
    size: u64,
    props: Properties,
}

impl Inner {
    /// The next automatic compaction, given what is already running.
    pub(super) fn pick(&self, bg: &BgState) -> Option<Task> {
        if bg.manual || bg.error.is_some() {
            return None;
        }
        if !self.picker.may_start(bg.running) {
            return None;
        }
        let v = self.version.read().clone();
        self.picker.pick(&v.shape(&bg.busy))
    }

    pub(super) fn compaction_loop(self: Arc<Self>) {
        loop {
            let task = {
                let mut bg = self.bg.lock();
                loop {
                    if bg.closing {
                        return;
                    }
                    if self.opts.auto_compactions {
                        if let Some(t) = self.pick(&bg) {
                            for (_, files) in &t.inputs {
                                bg.busy.extend(files.iter().copied());
                            }
                            bg.running += 1;
                            break t;
                        }
                    }
                    self.bg_cv.wait_for(&mut bg, super::WAIT_SLICE);
                }
            };
            let res = self.run_task(&task);
            {
                let mut bg = self.bg.lock();
                for (_, files) in &task.inputs {
                    for f in files {
                        bg.busy.remove(f);
                    }
                }
                bg.running -= 1;
            }
            match res {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => self.fail(&e),
            }
            self.update_stall();
            self.notify();
        }
    }

    pub(super) fn run_task(&self, task: &Task) -> Result<()> {
        let v = self.version.read().clone();
        let mut inputs = Vec::new();
        for (level, numbers) in &task.inputs {
            for n in numbers {
                match v.find(*n) {
                    Some((l, f)) if l == *level => inputs.push((l, f.clone())),
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "compaction input {n} is not in level {level} (engine bug)"
                        )))
                    }
                }
            }
        }
        // Hold the inputs, not the version: see the end of `merge`.
        drop(v);
        tracing::debug!(reason = %task.reason, output = task.output_level, files = inputs.len(), "compaction");
        self.merge(&inputs, task.output_level, task.bottom)
    }

    /// Merges `inputs` into new tables in `out_level` and swaps them in
    /// with one manifest edit.
    fn merge(&self, inputs: &[(usize, Arc<Sst>)], out_level: usize, bottom: bool) -> Result<()> {
        let t0 = Instant::now();
        let mut created = Vec::new();
        let res = self.write_outputs(inputs, out_level, bottom, &mut created);
        let outputs = match res {
            Ok(o) => o,
            Err(e) => {
                for n in created {
                    let _ = self.storage.remove_file(&table_path(&self.dir, n));
                }
                return Err(e);
            }
        };
        self.storage.sync_dir(&self.dir)?;
        let mut edits: Vec<Edit> = inputs
            .iter()
            .map(|(l, f)| Edit::RemoveTable {
                level: *l as u32,
                number: f.number,
            })
            .collect();
        for o in &outputs {
            edits.push(Edit::AddTable(TableMeta {
                level: out_level as u32,
                number: o.number,
                size: o.size,
                min_seqno: o.props.min_seqno,
                max_seqno: o.props.max_seqno,
                smallest: o.props.smallest.clone(),
                largest: o.props.largest.clone(),
            }));
        }
        if let Some(next) = outputs.iter().map(|o| o.number + 1).max() {
            edits.push(Edit::NextFile(next));
        }
        self.manifest.lock().apply(&edits)?;
        let mut added = Vec::new();
        for o in &outputs {
            added.push((out_level, self.open_sst(o.number)?));
        }
        let removed: Vec<u64> = inputs.iter().map(|(_, f)| f.number).collect();
        self.install(|old| old.edit(&removed, &added));
        debug_assert!(
            self.version.read().overlap_in_level().is_none(),
            "a compaction into L{out_level} left overlapping tables"
        );
        for (_, f) in inputs {
            f.table.delete_when_unused(self.storage.clone());
        }
        // The caller drops the inputs after this returns: wait (briefly)
        // for readers of the old version to let go, so the unlinks happen
        // in this thread and not in some reader's.
        // (Without background threads the caller is that thread, and
        // waiting on time is what the deterministic mode must not do.)
        let deadline = Instant::now() + Duration::from_millis(100);
        for (_, f) in inputs.iter().filter(|_| self.opts.background_threads) {
            while (Arc::strong_count(f) > 1 || Arc::strong_count(&f.table) > 1)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }

        let s = &self.stats;
        let written: u64 = outputs.iter().map(|o| o.size).sum();
        s.compactions.fetch_add(1, Ordering::Relaxed);
        s.compacted_bytes.fetch_add(written, Ordering::Relaxed);
        for (l, f) in inputs {
            s.compaction_read_bytes
                .fetch_add(f.size(), Ordering::Relaxed);
            Counters::add(&s.level_read, *l, f.size());
        }
        Counters::add(&s.level_written, out_level, written);
        Counters::add(&s.level_compactions, out_level, 1);
        s.compaction_micros
            .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The merge proper: writes the surviving entries into tables split
    /// at `target_file_size` between user keys; range tombstones go to
    /// the output whose key span they cover, clipped at its edges.
    fn write_outputs(
        &self,
        inputs: &[(usize, Arc<Sst>)],
        out_level: usize,
        bottom: bool,
        created: &mut Vec<u64>,
    ) -> Result<Vec<Output>> {
        let snapshots: Vec<u64> = self.snapshots.lock().keys().copied().collect();
        let tombstones: Vec<RangeTombstone> = inputs
            .iter()
            .flat_map(|(_, f)| f.table.range_tombstones().iter().cloned())
            .collect();
        let mut gc = GcFilter::new(&snapshots, &tombstones, bottom);
        let mut children: Vec<Box<dyn InternalIterator>> = Vec::new();
        let max_level = inputs.iter().map(|(l, _)| *l).max().unwrap_or(0);
        for level in 0..=max_level {
            let mut files: Vec<&Arc<Sst>> = inputs
                .iter()
                .filter(|(l, _)| *l == level)
                .map(|(_, f)| f)
                .collect();
            if level == 0 {
                children.extend(
                    files
                        .iter()
                        .map(|f| Box::new(f.table.iter()) as Box<dyn InternalIterator>),
                );
            } else if !files.is_empty() {
                files.sort_by(|a, b| a.smallest.cmp(&b.smallest));
                children.push(Box::new(LevelIter::new(
                    files.iter().map(|f| f.level_file()).collect(),
                )));
            }
        }
        let mut merged = MergingIter::new(children);
        merged.seek_to_first();
        // An L0 output must stay one sorted run: never split it.
        let split = out_level > 0;
        let target = self.opts.target_file_size;
        // The level below the output ("grandparents"): an output that
        // ends where one of their tables ends overlaps fewer of them when
        // it is compacted in turn, so outputs past half the target size
        // are cut at their boundaries (RocksDB's
        // level_compaction_dynamic_file_size), and any output is cut once
        // it overlaps 25 targets' worth of them (max_compaction_bytes).
        let grandparents: Vec<Arc<Sst>> = if split {
            self.version
                .read()
                .levels
                .get(out_level + 1)
                .cloned()
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut gp_idx = 0usize;
        let mut gp_overlap = 0u64;
        let mut outputs = Vec::new();
        let mut cur: Option<(u64, TableBuilder)> = None;
        // Lower edge of the current output's tombstone span.
        let mut lo: Option<Vec<u8>> = None;
        let mut last_user_key: Vec<u8> = Vec::new();
        let mut reported = 0u64;
        let mut steps = 0u64;
        while merged.valid() {
            let ikey = merged.key();
            // Tables check their keys as they are read; a key that still
            // does not parse must stop the compaction, not be copied on.
            if key::parse(ikey).is_none() {
                return Err(Error::Corruption {
                    path: self.dir.clone(),
                    offset: 0,
                    reason: "compaction input holds a malformed internal key".into(),
                });
            }
            if gc.keep(ikey) {
                let uk = key::user_key(ikey);
                let new_key = uk != last_user_key.as_slice();
                let mut crossed = false;
                if new_key {
                    while gp_idx < grandparents.len() && grandparents[gp_idx].before(uk) {
                        if cur.is_some() {
                            gp_overlap += grandparents[gp_idx].size();
                            crossed = true;
                        }
                        gp_idx += 1;
                    }
                }
                if let Some((_, b)) = &cur {
                    let size = b.file_size();
                    let cut = size >= target
                        || (crossed && size >= target / 2)
                        || gp_overlap >= target.saturating_mul(25);
                    if split && new_key && cut {
                        gp_overlap = 0;
                        let hi = successor(&last_user_key);
                        let (n, mut b) = cur.take().ok_or_else(|| {
                            Error::InvalidArgument("no output table (engine bug)".into())
                        })?;
                        for t in clip(&tombstones_kept(&gc, &tombstones), lo.as_deref(), Some(&hi))
                        {
                            b.add_range_tombstone(t);
                        }
                        outputs.push(self.finish_output(n, b, &mut reported)?);
                        lo = Some(hi);
                    }
                }
                if cur.is_none() {
                    let (n, b) = self.new_table()?;
                    created.push(n);
                    cur = Some((n, b));
                    reported = 0;
                }
                if let Some((_, b)) = cur.as_mut() {
                    b.add(ikey, merged.value())?;
                    let size = b.file_size();
                    if size - reported >= 256 << 10 {
                        self.rate_limit(size - reported);
                        reported = size;
                    }
                }
                last_user_key.clear();
                last_user_key.extend_from_slice(uk);
            }
            merged.next();
            steps += 1;
            if steps.is_multiple_of(4096) && self.bg.lock().closing {
                return Err(Error::Closed);
            }
        }
        if let Some(e) = merged.error() {
            return Err(Error::corruption(
                &self.dir,
                0,
                format!("compaction input: {e}"),
            ));
        }
        let rest = clip(&tombstones_kept(&gc, &tombstones), lo.as_deref(), None);
        if cur.is_none() && !rest.is_empty() {
            let (n, b) = self.new_table()?;
            created.push(n);
            cur = Some((n, b));
        }
        if let Some((n, mut b)) = cur.take() {
            for t in rest {
                b.add_range_tombstone(t);
            }
            outputs.push(self.finish_output(n, b, &mut reported)?);
        }
        Ok(outputs)
    }

    fn finish_output(&self, number: u64, b: TableBuilder, reported: &mut u64) -> Result<Output> {
        let (size, props) = b.finish()?;
        self.rate_limit(size.saturating_sub(*reported));
        *reported = 0;
        Ok(Output {
            number,
            size,
            props,
        })
    }

    fn rate_limit(&self, bytes: u64) {
        let slept = self.limiter.request(bytes);
        if !slept.is_zero() {
            self.stats
                .rate_limit_micros
                .fetch_add(slept.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// `compact_range`: waits for running compactions, holds new ones
    /// off, and merges every table overlapping the range (closed under
    /// overlap, across all levels) into the deepest level involved.
    pub(super) fn manual_compaction(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        {
            let mut bg = self.bg.lock();
            while bg.manual || bg.running > 0 {
                self.wait_bg(&mut bg)?;
            }
            if let Some(e) = &bg.error {
                return Err(Error::Background(e.clone()));
            }
            bg.manual = true;
        }
        let res = self.manual_inner(start, end);
        self.bg.lock().manual = false;
        self.update_stall();
        self.notify();
        res
    }

    fn manual_inner(&self, start: Option<&[u8]>, end: Option<&[u8]>) -> Result<()> {
        let v = self.version.read().clone();
        let whole = self.picker.manual_takes_all() || (start.is_none() && end.is_none());
        let mut chosen: Vec<(usize, Arc<Sst>)> = Vec::new();
        if whole {
            for (l, fs) in v.levels.iter().enumerate() {
                chosen.extend(fs.iter().map(|f| (l, f.clone())));
            }
        } else {
            // Grow the range until no unchosen table overlaps it: then no
            // version left out can be older than one moved below it.
            let mut lo: Vec<u8> = start.unwrap_or_default().to_vec();
            let mut hi: Option<Vec<u8>> = end.map(<[u8]>::to_vec);
            loop {
                let mut grew = false;
                for (l, fs) in v.levels.iter().enumerate() {
                    for f in fs {
                        if chosen.iter().any(|(_, c)| c.number == f.number) {
                            continue;
                        }
                        let below_hi = hi.as_deref().is_none_or(|h| f.smallest.as_slice() <= h);
                        if below_hi && !f.before(&lo) {
                            if f.smallest < lo {
                                lo = f.smallest.clone();
                            }
                            if hi.as_ref().is_some_and(|h| f.largest > *h) {
                                hi = Some(f.largest.clone());
                            }
                            chosen.push((l, f.clone()));
                            grew = true;
                        }
                    }
                }
                if !grew {
                    break;
                }
            }
        }
        if chosen.is_empty() {
            return Ok(());
        }
        let deepest = chosen.iter().map(|(l, _)| *l).max().unwrap_or(0);
        let out = self
            .picker
            .manual_output_level(&v.shape(&Default::default()), deepest, whole);
        drop(v);
        // Nothing overlapping lies below the output: it is the bottom.
        self.merge(&chosen, out, true)
    }
}

/// The input tombstones the output must keep.
fn tombstones_kept(gc: &GcFilter<'_>, ts: &[RangeTombstone]) -> Vec<RangeTombstone> {
    ts.iter()
        .filter(|t| gc.keep_tombstone(t))
        .cloned()
        .collect()
}
