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
    /// From issue to durable, nanoseconds: the time fio reports (it times
    /// from issue), so the ratio to fio's percentiles compares like with
    /// like.
    pub service: Histogram<u64>,
    ops: u64,
    secs: f64,
}

impl Line {
    /// An empty line.
    pub fn new() -> Result<Line> {
        Ok(Line {
            hist: histogram()?,
            delay: histogram()?,
            service: histogram()?,
            ops: 0,
            secs: 0.0,
        })
    }

    /// Operations completed per second over all rounds.
    pub fn achieved(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    /// `offered ... achieved ...; latency us P50 ... max ...; issued late by
    /// P50 ... P99 ...; from issue P50 ... P99.9 ...`.
    pub fn text(&self, rate: f64) -> String {
        let [p50, p99, p999, p9999, max] = percentiles_us(&self.hist);
        format!(
            "offered {rate:.0}/s achieved {:.0}/s; latency us P50 {p50:.0} P99 {p99:.0} P99.9 {p999:.0} P99.99 {p9999:.0} max {max:.0}; issued late by P50 {:.0} P99 {:.0} us; from issue P50 {:.0} P99 {:.0} P99.9 {:.0} us",
            self.achieved(),
            self.delay.value_at_quantile(0.5) as f64 / 1000.0,
            self.delay.value_at_quantile(0.99) as f64 / 1000.0,
            self.service.value_at_quantile(0.5) as f64 / 1000.0,
            self.service.value_at_quantile(0.99) as f64 / 1000.0,
            self.service.value_at_quantile(0.999) as f64 / 1000.0,
        )
    }

    fn add(&mut self, [h, d, s]: Hists) -> Result<()> {
        self.hist
            .add(h)
            .and_then(|()| self.delay.add(d))
            .and_then(|()| self.service.add(s))
            .map_err(|e| CliError::Usage(format!("histogram: {e}")))
    }
}

/// One appender's histograms: latency, issue delay and service time.
type Hists = [Histogram<u64>; 3];

/// Records one operation that was due at `due`, issued at `issued` and is
/// done now.
fn record_op(hs: &mut Hists, due: Instant, issued: Instant) {
    let done = Instant::now();
    hs[0].saturating_record(done.duration_since(due).as_nanos() as u64);
    hs[1].saturating_record(issued.duration_since(due).as_nanos() as u64);
    hs[2].saturating_record(done.duration_since(issued).as_nanos() as u64);
}

fn hists() -> Result<Hists> {
    Ok([histogram()?, histogram()?, histogram()?])
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
    let all: Vec<Result<Hists>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let wal = wal.clone();
                let recs = recs.clone();
                s.spawn(move || -> Result<Hists> {
                    precise();
                    let mut hs = hists()?;
                    let mut k = t as u64;
                    while k < total {
                        let due = sched.wait(k);
                        let issued = Instant::now();
                        wal.append(&recs[(k % 1024) as usize])?;
                        record_op(&mut hs, due, issued);
                        k += threads as u64;
                    }
                    Ok(hs)
                })
            })
            .collect();
        join_all(handles)
    });
    line.secs += sched.start().elapsed().as_secs_f64();
    line.ops += total;
    for r in all {
        line.add(r?)?;
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
        let path = dir.join("bare-floor.dat");
        let file = prefill(&path, size)?;
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
        let mut hs = hists()?;
        let total = ((rate * secs) as u64).max(1);
        let bs = self.buf.len() as u64;
        let sched = Schedule::new(rate);
        for k in 0..total {
            let due = sched.wait(k);
            let issued = Instant::now();
            if self.at + bs > self.size {
                self.at = 0;
            }
            self.file
                .write_all_at(&self.buf, self.at)
                .map_err(|e| local("write", &self.path, e))?;
            self.file
                .sync_data()
                .map_err(|e| local("fdatasync", &self.path, e))?;
            record_op(&mut hs, due, issued);
            self.at += bs;
        }
        line.secs += sched.start().elapsed().as_secs_f64();
        line.ops += total;
        line.add(hs)
    }
}

/// Creates `path` written in full with zeros and synced, so the writes
/// measured on it are overwrites, as in the WAL's zero-filled segments.
fn prefill(path: &Path, size: u64) -> Result<std::fs::File> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| local("create", path, e))?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        file.write_all_at(&zeros, at)
            .map_err(|e| local("write", path, e))?;
        at += zeros.len() as u64;
    }
    file.sync_all().map_err(|e| local("fsync", path, e))?;
    Ok(file)
}

/// fio's floor taken in rounds beside the other lines: `bs`-byte O_DSYNC
/// writes at the same rate, one fio run per round, its latency bins merged.
pub struct Fio {
    pub engine: &'static str,
    dir: std::path::PathBuf,
    size: u64,
    bs: usize,
    /// Latency from issue (fio's measure), nanoseconds.
    pub hist: Histogram<u64>,
    ops: f64,
    secs: f64,
}

impl Fio {
    /// A line for `engine` in `dir`, whose file of `size` bytes is written
    /// now (fio would otherwise lay it out inside the first round).
    pub fn new(engine: &'static str, dir: &Path, bs: usize, size: u64) -> Result<Fio> {
        prefill(&dir.join(crate::fio::FILE), size)?;
        Ok(Fio {
            engine,
            dir: dir.to_path_buf(),
            size,
            bs,
            hist: histogram()?,
            ops: 0.0,
            secs: 0.0,
        })
    }

    /// One round of `secs` seconds at `rate` writes per second.
    pub fn round(&mut self, rate: f64, secs: f64) -> Result<()> {
        let job = crate::fio::WriteJob {
            engine: self.engine,
            direct: false,
            dsync: true,
            bs: self.bs,
            iodepth: 1,
            rate: rate.round().max(1.0) as u64,
            secs,
            size: self.size,
        };
        let f = crate::fio::write(&self.dir, &job)?;
        self.hist
            .add(&f.hist)
            .map_err(|e| CliError::Usage(format!("histogram: {e}")))?;
        self.ops += f.iops * secs;
        self.secs += secs;
        Ok(())
    }

    /// `achieved ...; latency us (from issue ...) P50 ... max ...`.
    pub fn text(&self) -> String {
        let [p50, p99, p999, p9999, max] = percentiles_us(&self.hist);
        format!(
            "achieved {:.0}/s; latency us (from issue, not intended start) P50 {p50:.0} P99 {p99:.0} P99.9 {p999:.0} P99.99 {p9999:.0} max {max:.0}",
            self.ops / self.secs.max(1e-9)
        )
    }
}

fn local(what: &str, path: &Path, e: std::io::Error) -> CliError {
    CliError::Local {
        what: format!("{what} {}", path.display()),
        source: e,
    }
}
