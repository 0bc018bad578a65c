//! `strata wal-bench --rate R` and `--rate-sweep`: synced appends at a
//! fixed offered rate (open loop, latency from each append's intended
//! start: see `openloop`), beside the disk's floor at the same rate.
//!
//! This VM's disk stalls for 5-160 ms every second or so (seen with a bare
//! write+fdatasync loop in Python, nothing else running). Measured from
//! intended starts, one stall lands in every operation queued behind it,
//! so a step's P99 depends on which stalls it met. The lines of a step
//! (each backend, and the bare loop) therefore run in turns, a round of
//! each at a time, so the stalls fall on all of them alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use strata_io::StorageRef;
use strata_wal::{Wal, WalOptions};

use super::{join_all, record};
use crate::error::{CliError, Result};
use crate::openloop::{histogram, percentiles_us, precise, Schedule};

/// What one line of a step measured, over its rounds.
pub struct Line {
    /// Latency from intended start to durable, nanoseconds.
    pub hist: Histogram<u64>,
    /// How late each operation was issued after its intended start (the
    /// thread was still busy with earlier ones), nanoseconds: the part of
    /// the latency spent queued.
    pub delay: Histogram<u64>,
    ops: u64,
    secs: f64,
}

impl Line {
    /// An empty line.
    pub fn new() -> Result<Line> {
        Ok(Line {
            hist: histogram()?,
            delay: histogram()?,
            ops: 0,
            secs: 0.0,
        })
    }

    /// Operations completed per second over all rounds.
    pub fn achieved(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    /// `offered ... achieved ...; latency us P50 ... max ...; issued late by
    /// P50 ... P99 ...`.
    pub fn text(&self, rate: f64) -> String {
        let [p50, p99, p999, p9999, max] = percentiles_us(&self.hist);
        format!(
            "offered {rate:.0}/s achieved {:.0}/s; latency us P50 {p50:.0} P99 {p99:.0} P99.9 {p999:.0} P99.99 {p9999:.0} max {max:.0}; issued late by P50 {:.0} P99 {:.0} us",
            self.achieved(),
            self.delay.value_at_quantile(0.5) as f64 / 1000.0,
            self.delay.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }

    fn add(&mut self, h: Histogram<u64>, d: Histogram<u64>) -> Result<()> {
        self.hist
            .add(h)
            .and_then(|()| self.delay.add(d))
            .map_err(|e| CliError::Usage(format!("histogram: {e}")))
    }
}

/// One round of synced appends on `wal` from `threads` appenders for
/// `secs` seconds at `rate` appends per second in all: append `k` is due
/// at `k / rate` and goes to appender `k % threads`.
pub fn wal_round(
    wal: &Wal,
    line: &mut Line,
    rate: f64,
    threads: usize,
    secs: f64,
    size: usize,
) -> Result<()> {
    let recs: Arc<Vec<Vec<u8>>> = Arc::new((0..1024).map(|i| record(i, size)).collect());
    let total = ((rate * secs) as u64).max(threads as u64);
    let sched = Schedule::new(rate);
    type Hists = (Histogram<u64>, Histogram<u64>);
    let hists: Vec<Result<Hists>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let wal = wal.clone();
                let recs = recs.clone();
                s.spawn(move || -> Result<Hists> {
                    precise();
                    let (mut h, mut d) = (histogram()?, histogram()?);
                    let mut k = t as u64;
                    while k < total {
                        let due = sched.wait(k);
                        d.saturating_record(Instant::now().duration_since(due).as_nanos() as u64);
                        wal.append(&recs[(k % 1024) as usize])?;
                        h.saturating_record(due.elapsed().as_nanos() as u64);
                        k += threads as u64;
                    }
                    Ok((h, d))
                })
            })
            .collect();
        join_all(handles)
    });
    line.secs += sched.start().elapsed().as_secs_f64();
    line.ops += total;
    for r in hists {
        let (h, d) = r?;
        line.add(h, d)?;
    }
    Ok(())
}

/// Opens a WAL for a step's rounds.
pub fn open_wal(storage: &StorageRef, dir: &Path, opts: WalOptions) -> Result<Wal> {
    let (wal, _) = Wal::open(storage.clone(), dir, opts, |_, _| Ok(()))?;
    Ok(wal)
}

/// The floor the WAL is held to: `bs` bytes `write`n then `fdatasync`ed,
/// one after another, at the same rate and measured the same way, in a
/// file written in full first (as the WAL zero-fills its segments).
pub struct Bare {
    file: std::fs::File,
    path: std::path::PathBuf,
    size: u64,
    at: u64,
    buf: Vec<u8>,
}

impl Bare {
    /// A `size`-byte file in `dir` (left there for the caller to remove).
    pub fn new(dir: &Path, bs: usize, size: u64) -> Result<Bare> {
        use std::os::unix::fs::FileExt;
        let path = dir.join("bare-floor.dat");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| local("create", &path, e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < size {
            file.write_all_at(&zeros, at)
                .map_err(|e| local("write", &path, e))?;
            at += zeros.len() as u64;
        }
        file.sync_all().map_err(|e| local("fsync", &path, e))?;
        Ok(Bare {
            file,
            path,
            size,
            at: 0,
            buf: vec![0x5a; bs],
        })
    }

    /// One round: `rate` writes per second for `secs` seconds.
    pub fn round(&mut self, line: &mut Line, rate: f64, secs: f64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        precise();
        let (mut h, mut d) = (histogram()?, histogram()?);
        let total = ((rate * secs) as u64).max(1);
        let bs = self.buf.len() as u64;
        let sched = Schedule::new(rate);
        for k in 0..total {
            let due = sched.wait(k);
            d.saturating_record(Instant::now().duration_since(due).as_nanos() as u64);
            if self.at + bs > self.size {
                self.at = 0;
            }
            self.file
                .write_all_at(&self.buf, self.at)
                .map_err(|e| local("write", &self.path, e))?;
            self.file
                .sync_data()
                .map_err(|e| local("fdatasync", &self.path, e))?;
            h.saturating_record(due.elapsed().as_nanos() as u64);
            self.at += bs;
        }
        line.secs += sched.start().elapsed().as_secs_f64();
        line.ops += total;
        line.add(h, d)
    }
}

fn local(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::Local {
        what: format!("{what} {}", path.display()),
        source: e,
    }
}
