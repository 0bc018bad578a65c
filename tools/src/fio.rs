//! The disk's floor, measured in the same run as Strata: fio (Debian's
//! `fio` package) with the same write size and offered rate, so each of
//! Strata's figures can be given as a ratio to what the disk does without
//! it. Where fio is missing the benchmarks say so and rely on their own
//! bare loops.
//!
//! fio paces a rated job but measures each write from when it was issued,
//! not from when it was due: a stall shows in one write, not in every write
//! queued behind it. Its percentiles are therefore a lower floor than an
//! open-loop (coordinated-omission-correct) measurement of the same disk.
//!
//! Synced writes are run with `sync=dsync` (O_DSYNC): each write returns
//! once durable, the one-call form of `write` + `fdatasync` (ext4 runs the
//! same data sync for both), so fio reports each operation's whole
//! latency. With `fdatasync=1` fio would report the write and the sync as
//! two latencies, and the percentile of their sum cannot be rebuilt from
//! them. The file is written in full first (`overwrite=1`), as the WAL
//! zero-fills its segments, so no write allocates blocks.
//!
//! fio's `json+` output carries every latency bin, so runs split into
//! rounds (taken in turns with Strata's, so the disk's stalls fall on
//! both alike) merge into one histogram, as Strata's rounds do.

use std::path::Path;
use std::process::Command;

use hdrhistogram::Histogram;

use crate::error::{CliError, Result};

/// One fio run's write results.
#[derive(Clone, Debug)]
pub struct FioResult {
    /// Completed writes per second.
    pub iops: f64,
    /// Bytes written per second.
    pub bw: f64,
    /// Every write's latency from issue, nanoseconds (fio's bins, each
    /// counted at its bin's value).
    pub hist: Histogram<u64>,
}

/// The file a job writes, in the directory given to [`write`].
pub const FILE: &str = "fio-floor.dat";

/// Whether fio can be run here.
pub fn available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A sequential-write job.
#[derive(Clone, Debug)]
pub struct WriteJob<'a> {
    /// `psync` or `io_uring`.
    pub engine: &'a str,
    /// O_DIRECT (`bs` must then be a multiple of the logical block size).
    pub direct: bool,
    /// O_DSYNC: every write durable when it returns.
    pub dsync: bool,
    /// Bytes per write.
    pub bs: usize,
    /// Writes in flight.
    pub iodepth: u32,
    /// Writes per second to offer (`rate_iops`; 0: as fast as it goes).
    pub rate: u64,
    /// Seconds.
    pub secs: f64,
    /// File size (written in full first; the writes wrap around).
    pub size: u64,
}

/// Runs `job` on a file in `dir` (left there: the caller removes the
/// directory when nothing is being measured, since a removal's discards
/// can stall the next run).
pub fn write(dir: &Path, job: &WriteJob) -> Result<FioResult> {
    let file = dir.join(FILE);
    let mut cmd = Command::new("fio");
    cmd.arg("--name=floor")
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--size={}", job.size))
        .arg(format!("--bs={}", job.bs))
        .arg("--rw=write")
        .arg(format!("--ioengine={}", job.engine))
        .arg(format!("--iodepth={}", job.iodepth))
        .arg(format!("--direct={}", u8::from(job.direct)))
        .arg("--overwrite=1")
        .arg(format!(
            "--runtime={}ms",
            (job.secs * 1000.0).max(100.0).round() as u64
        ))
        .arg("--time_based")
        .arg("--output-format=json+")
        .arg("--lat_percentiles=1");
    if job.dsync {
        cmd.arg("--sync=dsync");
    }
    if job.rate > 0 {
        cmd.arg(format!("--rate_iops={}", job.rate));
    }
    let out = cmd.output().map_err(|e| CliError::Local {
        what: "running fio".into(),
        source: e,
    })?;
    if !out.status.success() {
        return Err(CliError::Usage(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse(&out.stdout)
}

/// Reads fio's JSON output: the first job's write side.
fn parse(json: &[u8]) -> Result<FioResult> {
    let bad = |what: &str| CliError::Usage(format!("fio output: {what}"));
    // fio may print notes before the JSON object.
    let start = json
        .iter()
        .position(|&b| b == b'{')
        .ok_or_else(|| bad("no JSON"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&json[start..]).map_err(|e| bad(&e.to_string()))?;
    let w = &v["jobs"][0]["write"];
    let lat = &w["lat_ns"];
    let mut hist = crate::openloop::histogram()?;
    let bins = lat["bins"]
        .as_object()
        .ok_or_else(|| bad("no write latency bins (json+)"))?;
    for (ns, count) in bins {
        let ns: u64 = ns.parse().map_err(|_| bad("latency bin"))?;
        let count = count.as_u64().ok_or_else(|| bad("latency bin count"))?;
        hist.saturating_record_n(ns.max(1), count);
    }
    Ok(FioResult {
        hist,
        iops: w["iops"].as_f64().ok_or_else(|| bad("no write iops"))?,
        bw: w["bw_bytes"].as_f64().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json_is_read_after_any_notes() {
        let out = br#"note: both iodepth >= 1 and synchronous I/O engine are selected
{"fio version":"fio-3.33","jobs":[{"jobname":"floor","write":{"iops":199.8,"bw_bytes":19980,
"lat_ns":{"min":1,"max":313344,"mean":5.0,"percentile":{"50.000000":20096,"99.000000":240640,
"99.900000":313344,"99.990000":313344},"bins":{"20096":98,"240640":1,"313344":1}}}}]}"#;
        let r = parse(out).expect("parse");
        assert_eq!(r.iops, 199.8);
        assert_eq!(r.hist.len(), 100);
        assert!(r.hist.equivalent(r.hist.value_at_quantile(0.5), 20096));
        assert!(r.hist.equivalent(r.hist.max(), 313344));
        assert!(parse(b"fio: no such engine").is_err());
        assert!(parse(br#"{"jobs":[{"write":{"iops":1}}]}"#).is_err());
        assert!(parse(br#"{"jobs":[{"write":{"iops":1,"lat_ns":{"bins":{"x":1}}}}]}"#).is_err());
    }
}
