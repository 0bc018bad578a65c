//! `strata torture --log`: kill-mode torture of the segmented log. The
//! child appends batches (some fsynced), rolls, flushes, truncates and
//! moves the log start; the parent kills it with SIGKILL at a seeded moment,
//! opens the log itself and requires exactly the records of every
//! acknowledged operation at their offsets, with the one in flight applied
//! whole or not at all (an interrupted truncation may have cut part of the
//! way, never past its target), and nothing else.

use std::path::Path;
use std::time::{Duration, Instant};

use strata_io::rng::Rng;
use strata_log::batch::{ProducerInfo, Record};
use strata_log::{LogConfig, LogManager};

use super::harness::{child_loop, kill_cycle, report, Workload as _};
use super::Args;
use crate::common::storage_for;
use crate::error::{CliError, Result};

const TOPIC: &str = "torture";

/// One operation on the log.
#[derive(Clone, Debug)]
enum Op {
    /// Records of `len` value bytes each; fsync if `sync`.
    Append {
        n: u64,
        len: usize,
        sync: bool,
    },
    Roll,
    Flush,
    /// `truncate_to(end - back)`.
    Truncate {
        back: u64,
    },
    /// Watermark to the end, then `delete_records_before(start + ahead)`.
    DeleteBefore {
        ahead: u64,
    },
}

/// The seeded operations of one cycle, the same in parent and child.
struct Workload {
    rng: Rng,
    n: u64,
    sync_per_mille: u64,
}

impl super::harness::Workload for Workload {
    type Op = Op;

    fn count(&self) -> u64 {
        self.n
    }

    fn child_flags(a: &Args) -> Vec<String> {
        let mut flags = vec![
            "--log".into(),
            format!("--io={}", a.io),
            format!("--sync_ratio={}", a.sync_ratio),
        ];
        if a.direct {
            flags.push("--direct".into());
        }
        flags
    }

    fn new(a: &Args, cycle: u64) -> Workload {
        Workload {
            rng: Rng::new(a.seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ cycle),
            n: 0,
            sync_per_mille: (a.sync_ratio.clamp(0.0, 1.0) * 1000.0) as u64,
        }
    }

    fn next(&mut self) -> Op {
        self.n += 1;
        match self.rng.below(1000) {
            0..=899 => Op::Append {
                n: 1 + self.rng.below(5),
                len: self.rng.below(300) as usize,
                sync: self.rng.below(1000) < self.sync_per_mille,
            },
            900..=929 => Op::Roll,
            930..=959 => Op::Flush,
            960..=984 => Op::Truncate {
                back: 1 + self.rng.below(30),
            },
            _ => Op::DeleteBefore {
                ahead: 1 + self.rng.below(40),
            },
        }
    }
}

fn value(cycle: u64, op: u64, i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("c{cycle}:o{op}:r{i}:").into_bytes();
    v.resize(v.len() + len, b'v');
    v
}

/// The log as the parent expects it: its start and its batches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    start: u64,
    /// (base offset, values).
    batches: Vec<(u64, Vec<Vec<u8>>)>,
}

impl Model {
    fn end(&self) -> u64 {
        self.batches
            .last()
            .map_or(self.start, |(b, v)| b + v.len() as u64)
            .max(self.start)
    }

    fn apply(&mut self, cycle: u64, op_n: u64, op: &Op) {
        match op {
            Op::Append { n, len, .. } => {
                let base = self.end();
                let vals = (0..*n).map(|i| value(cycle, op_n, i, *len)).collect();
                self.batches.push((base, vals));
            }
            Op::Roll | Op::Flush => {}
            Op::Truncate { back } => {
                let end = self.end();
                let to = end.saturating_sub(*back);
                if to >= end {
                    return;
                }
                if to <= self.start {
                    self.batches.clear();
                    self.start = to;
                    return;
                }
                // Whole batches: the first one holding `to` or later goes;
                // one that starts at or below the start empties the log.
                if let Some(i) = self
                    .batches
                    .iter()
                    .position(|(b, v)| b + v.len() as u64 > to)
                {
                    if self.batches[i].0 <= self.start {
                        self.batches.clear();
                    } else {
                        self.batches.truncate(i);
                    }
                }
            }
            Op::DeleteBefore { ahead } => {
                let s = (self.start + ahead).min(self.end());
                if s > self.start {
                    self.start = s;
                    self.batches.retain(|(b, v)| b + v.len() as u64 > s);
                }
            }
        }
    }

    /// The records from the start on, as (offset, value).
    fn records(&self) -> Records {
        self.batches
            .iter()
            .flat_map(|(b, vs)| {
                vs.iter()
                    .enumerate()
                    .map(move |(i, v)| (b + i as u64, v.clone()))
            })
            .filter(|(o, _)| *o >= self.start)
            .collect()
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_interval_bytes: 512,
        segment_index_bytes: 1024,
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

fn open(
    a: &Args,
    dir: &Path,
) -> std::result::Result<(LogManager, std::sync::Arc<strata_log::Partition>), String> {
    let storage = storage_for(&a.io, dir).map_err(|e| e.to_string())?;
    let opts = strata_log::ManagerOptions {
        direct_io: a.direct,
        ..strata_log::ManagerOptions::default()
    };
    let m = LogManager::open_with(storage, dir, opts).map_err(|e| format!("open: {e}"))?;
    if m.topics().is_empty() {
        m.create_topic(TOPIC, 1, config())
            .map_err(|e| format!("create: {e}"))?;
    }
    let p = m
        .partition(TOPIC, 0)
        .map_err(|e| format!("recovery failed: {e}"))?;
    Ok((m, p))
}

/// The child: run the cycle's operations until killed.
pub(super) fn child(a: &Args, dir: &Path) -> Result<i32> {
    let (_m, p) = open(a, dir).map_err(CliError::Usage)?;
    let fail = |e: strata_log::Error| CliError::Usage(format!("log: {e}"));
    child_loop::<Workload>(a, |op, n| {
        match op {
            Op::Append {
                n: count,
                len,
                sync,
            } => {
                let recs: Vec<Record> = (0..*count)
                    .map(|i| Record::new(n as i64, None, Some(&value(a.cycle, n, i, *len))))
                    .collect();
                p.append_records(&recs, ProducerInfo::NONE, 0, *sync)
                    .map_err(fail)?;
            }
            Op::Roll => p.roll().map_err(fail)?,
            Op::Flush => p.flush().map_err(fail)?,
            Op::Truncate { back } => {
                let to = p.log_end_offset().saturating_sub(*back);
                p.truncate_to(to).map_err(fail)?;
            }
            Op::DeleteBefore { ahead } => {
                let end = p.log_end_offset();
                p.set_high_watermark(end).map_err(fail)?;
                let to = (p.log_start_offset() + ahead).min(end);
                p.delete_records_before(to).map_err(fail)?;
            }
        }
        Ok(())
    })
}

/// Records as (offset, value).
type Records = Vec<(u64, Vec<u8>)>;

/// Reads the recovered log whole: its start and its records.
fn recovered(a: &Args, dir: &Path) -> std::result::Result<(u64, Records), String> {
    let (m, p) = open(a, dir)?;
    let start = p.log_start_offset();
    let end = p.log_end_offset();
    let mut at = start;
    let mut recs = Vec::new();
    while at < end {
        let bs = p
            .read(at, 64 << 10, None)
            .map_err(|e| format!("read at {at}: {e}"))?;
        let Some(last) = bs.last() else {
            return Err(format!("read at {at} below the end {end} returned nothing"));
        };
        let next = last.last_offset() + 1;
        for b in &bs {
            for r in b.records() {
                if r.offset >= start {
                    recs.push((r.offset, r.value.map(|v| v.to_vec()).unwrap_or_default()));
                }
            }
        }
        at = next;
    }
    drop(p);
    m.close().map_err(|e| format!("close: {e}"))?;
    Ok((start, recs))
}

/// Runs log kill cycles; the exit code.
pub(super) fn run(a: &Args, dir: &Path, exe: &Path) -> Result<i32> {
    let started = Instant::now();
    let mut rng = Rng::new(a.seed ^ 0x1065);
    let mut model = Model::default();
    let (mut cycles, mut issued, mut acked_total, mut records_checked) = (0u64, 0u64, 0u64, 0u64);
    let mut failure = None;
    for cycle in 0..a.cycles {
        if a.duration > 0 && started.elapsed() >= Duration::from_secs(a.duration) {
            break;
        }
        let kill_after = Duration::from_millis(1 + rng.below(a.max_kill_ms.max(1)));
        let (intent, acked) = match kill_cycle::<Workload>(a, exe, dir, cycle, kill_after)? {
            Ok(k) => (k.intent, k.acked),
            Err(f) => {
                failure = Some(f);
                break;
            }
        };
        let mut w = Workload::new(a, cycle);
        let mut after = model.clone();
        for _ in 0..acked {
            let op = w.next();
            after.apply(cycle, w.n, &op);
        }
        let in_flight = (intent > acked).then(|| w.next());
        let (start, got) = match recovered(a, dir) {
            Ok(v) => v,
            Err(e) => {
                failure = Some(format!("cycle {cycle}: {e}"));
                break;
            }
        };
        let matches = |m: &Model| m.start == start && m.records() == got;
        let ok = if matches(&after) {
            Some(after.clone())
        } else if let Some(op) = &in_flight {
            let mut whole = after.clone();
            whole.apply(cycle, w.n, op);
            if matches(&whole) {
                Some(whole)
            } else if matches!(op, Op::Truncate { .. }) {
                // Cut part of the way (later segments gone, the last one
                // not yet cut): a prefix of the log before it, by whole
                // batches, that still reaches the target.
                let before = after.records();
                let got_end = got.last().map_or(start, |(o, _)| o + 1);
                let prefix = got.len() <= before.len() && before[..got.len()] == got[..];
                (start == after.start && prefix && got_end >= whole.end()).then(|| Model {
                    start,
                    batches: after
                        .batches
                        .iter()
                        .filter(|(b, v)| b + v.len() as u64 <= got_end)
                        .cloned()
                        .collect(),
                })
            } else {
                None
            }
        } else {
            None
        };
        match ok {
            Some(m) => model = m,
            None => {
                let want = after.records();
                let first_diff = want
                    .iter()
                    .zip(got.iter())
                    .position(|(x, y)| x != y)
                    .unwrap_or(want.len().min(got.len()));
                let show = |r: Option<&(u64, Vec<u8>)>| {
                    r.map(|(o, v)| {
                        format!("{o}={}", String::from_utf8_lossy(&v[..v.len().min(24)]))
                    })
                };
                failure = Some(format!(
                    "cycle {cycle} (killed after {acked} acknowledged operations, in flight: {in_flight:?}): expected start {} and {} records, recovered start {start} and {} records; first difference at record {first_diff}: expected {:?}, found {:?}",
                    after.start,
                    want.len(),
                    got.len(),
                    show(want.get(first_diff)),
                    show(got.get(first_diff)),
                ));
                break;
            }
        }
        records_checked += got.len() as u64;
        cycles += 1;
        issued += intent;
        acked_total += acked;
    }
    let summary = format!(
        "strata torture --log: {cycles} kill cycles, {issued} operations issued, {acked_total} acknowledged and checked, {records_checked} records compared, log [{}, {}), {:.1} s",
        model.start,
        model.end(),
        started.elapsed().as_secs_f64()
    );
    Ok(report(a, summary, failure))
}
