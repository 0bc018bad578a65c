//! `strata logbench produce|consume`: the segmented log's benchmark, in the
//! manner of kafka-producer-perf-test and kafka-consumer-perf-test, with a
//! baseline of the bare disk measured in the same run (ratios inside one
//! run, since the machine is shared).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strata_io::{OpenOptions, StorageRef};
use strata_log::batch::{self, ProducerInfo, Record};
use strata_log::{LogConfig, LogManager, Partition};

use crate::common::storage_for;
use crate::error::{CliError, Result};

const TOPIC: &str = "logbench";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// produce or consume.
    #[arg(value_parser = ["produce", "consume"])]
    mode: String,
    /// Log directory [default: a temporary directory, removed after].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Records to produce (or to consume; produced first if the log holds
    /// fewer).
    #[arg(long = "num-records", default_value_t = 1_000_000)]
    num_records: u64,
    /// Bytes of each record's value.
    #[arg(long = "record-size", default_value_t = 1024)]
    record_size: usize,
    /// Records per batch (one append each).
    #[arg(long = "batch-size", default_value_t = 100)]
    batch_size: usize,
    /// Records per second to stay under (-1: as fast as possible).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    throughput: i64,
    /// fsync every batch before its append returns.
    #[arg(long)]
    sync: bool,
    /// Bytes per fetch when consuming.
    #[arg(long = "fetch-size", default_value_t = 1 << 20)]
    fetch_size: usize,
    /// I/O backend: std or uring.
    #[arg(long = "io", default_value = "std")]
    io: String,
    /// Skip the bare-disk baseline.
    #[arg(long = "no-baseline")]
    no_baseline: bool,
}

/// A progress line on stderr, only when it is a terminal.
fn progress(msg: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r{msg:<60}");
    }
}

fn progress_done() {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r{:<60}\r", "");
    }
}

fn hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| CliError::Usage(format!("histogram: {e}")))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "{:.3} ms avg latency, {:.3} ms max latency, {:.3} ms 50th, {:.3} ms 99th, {:.3} ms 99.9th",
        h.mean() / 1000.0,
        ms(h.max()),
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
    )
}

fn open_partition(storage: &StorageRef, dir: &Path) -> Result<(LogManager, Arc<Partition>)> {
    let m = LogManager::open(storage.clone(), dir).map_err(log_err)?;
    if !m.topics().iter().any(|(t, _)| t == TOPIC) {
        let cfg = LogConfig {
            retention_ms: None,
            segment_ms: None,
            ..LogConfig::default()
        };
        m.create_topic(TOPIC, 1, cfg).map_err(log_err)?;
    }
    let p = m.partition(TOPIC, 0).map_err(log_err)?;
    Ok((m, p))
}

fn log_err(e: strata_log::Error) -> CliError {
    CliError::Usage(format!("log: {e}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a produce run measured.
struct Produced {
    records: u64,
    bytes: u64,
    secs: f64,
    hist: Histogram<u64>,
    batches: u64,
    batch_bytes: usize,
}

fn produce(a: &Args, p: &Partition, n: u64, quiet: bool) -> Result<Produced> {
    let mut value = vec![0u8; a.record_size];
    strata_io::rng::Rng::new(42).fill(&mut value);
    // Records share the value's bytes, as a client reusing a buffer would.
    let value = bytes::Bytes::from(value);
    let mut h = hist()?;
    let started = Instant::now();
    let (mut sent, mut bytes, mut batches, mut batch_bytes) = (0u64, 0u64, 0u64, 0usize);
    while sent < n {
        let k = (a.batch_size as u64).min(n - sent) as usize;
        let ts = now_ms();
        let recs: Vec<Record> = (0..k)
            .map(|_| Record {
                offset: 0,
                timestamp: ts,
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
            })
            .collect();
        let b = batch::build(0, 0, ProducerInfo::NONE, &recs).map_err(log_err)?;
        batch_bytes = b.bytes.len();
        let len = b.bytes.len() as u64;
        let t = Instant::now();
        p.append(b, 0, a.sync).map_err(log_err)?;
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        sent += k as u64;
        bytes += len;
        batches += 1;
        if a.throughput > 0 {
            // Stay under the rate: sleep until this many records are due.
            let due = Duration::from_secs_f64(sent as f64 / a.throughput as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if !quiet && batches % 1000 == 0 {
            progress(&format!("produce: {sent}/{n} records"));
        }
    }
    // Everything on disk before the clock stops, as the baseline's fsync.
    p.flush().map_err(log_err)?;
    Ok(Produced {
        records: sent,
        bytes,
        secs: started.elapsed().as_secs_f64(),
        hist: h,
        batches,
        batch_bytes,
    })
}

/// The bare disk in the same run: the same bytes written sequentially in
/// chunks of one batch, then one fdatasync; with `sync`, an fdatasync after
/// every chunk and its latency.
fn baseline(
    storage: &StorageRef,
    dir: &Path,
    total: u64,
    chunk: usize,
    sync: bool,
    count: u64,
) -> Result<(f64, Histogram<u64>)> {
    let path = dir.join("logbench-baseline.tmp");
    let f = storage.open(&path, OpenOptions::create())?;
    f.set_len(0)?;
    let mut buf = vec![0u8; chunk.max(1)];
    strata_io::rng::Rng::new(7).fill(&mut buf);
    let mut h = hist()?;
    let started = Instant::now();
    let mut at = 0u64;
    let mut n = 0u64;
    while at < total && n < count {
        let t = Instant::now();
        f.write_at(&buf, at)?;
        if sync {
            f.sync_data()?;
        }
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        at += buf.len() as u64;
        n += 1;
    }
    f.sync_data()?;
    let secs = started.elapsed().as_secs_f64();
    drop(f);
    storage.remove_file(&path)?;
    Ok((at as f64 / secs / 1e6, h))
}

/// Runs the benchmark.
pub fn run(a: Args) -> Result<()> {
    if a.record_size == 0 || a.batch_size == 0 || a.num_records == 0 {
        return Err(CliError::Usage(
            "--record-size, --batch-size and --num-records must be positive".into(),
        ));
    }
    if a.throughput == 0 || a.throughput < -1 {
        return Err(CliError::Usage(
            "--throughput must be positive, or -1 for no limit".into(),
        ));
    }
    if a.fetch_size == 0 {
        return Err(CliError::Usage("--fetch-size must be positive".into()));
    }
    let storage = storage_for(&a.io)?;
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = crate::common::temp_dir("strata-logbench")?;
            tmp.path().to_path_buf()
        }
    };
    let (m, p) = open_partition(&storage, &dir)?;
    match a.mode.as_str() {
        "produce" => {
            let r = produce(&a, &p, a.num_records, false)?;
            progress_done();
            let mbs = r.bytes as f64 / r.secs / 1e6;
            println!(
                "{} records sent, {:.1} records/sec ({:.2} MB/sec), {}.",
                r.records,
                r.records as f64 / r.secs,
                mbs,
                pct(&r.hist)
            );
            if !a.no_baseline {
                // The same bytes in the same chunks; with --sync, a
                // write+fdatasync per batch (up to 20,000 of them).
                let count = if a.sync {
                    r.batches.min(20_000)
                } else {
                    u64::MAX
                };
                let (disk, bh) = baseline(&storage, &dir, r.bytes, r.batch_bytes, a.sync, count)?;
                println!(
                    "baseline: bare sequential write of the same bytes in {}-byte chunks{}: {disk:.2} MB/sec; produce / baseline = {:.2}",
                    r.batch_bytes,
                    if a.sync { ", fdatasync after each" } else { ", one fdatasync" },
                    mbs / disk
                );
                if a.sync {
                    println!(
                        "baseline: write+fdatasync P99 {:.3} ms, append P99 {:.3} ms; append / baseline P99 = {:.2}",
                        ms(bh.value_at_quantile(0.99)),
                        ms(r.hist.value_at_quantile(0.99)),
                        r.hist.value_at_quantile(0.99) as f64 / bh.value_at_quantile(0.99).max(1) as f64
                    );
                }
            }
        }
        _ => {
            let have = p.log_end_offset() - p.log_start_offset();
            if have < a.num_records {
                let mut setup = a.clone();
                setup.sync = false;
                setup.throughput = -1;
                produce(&setup, &p, a.num_records - have, false)?;
                progress_done();
            }
            let mut h = hist()?;
            let started = Instant::now();
            let (mut at, mut records, mut bytes, mut fetches) =
                (p.log_start_offset(), 0u64, 0u64, 0u64);
            let end = p.log_end_offset();
            while at < end && records < a.num_records {
                let t = Instant::now();
                let bs = p.read(at, a.fetch_size, None).map_err(log_err)?;
                h.saturating_record(t.elapsed().as_micros().max(1) as u64);
                let Some(last) = bs.last() else { break };
                at = last.last_offset() + 1;
                for b in &bs {
                    records += u64::from(b.header.record_count);
                    bytes += b.bytes.len() as u64;
                }
                fetches += 1;
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{records} records consumed in {fetches} fetches of up to {} bytes, {:.1} records/sec ({:.2} MB/sec), fetch latency {}.",
                a.fetch_size,
                records as f64 / secs,
                bytes as f64 / secs / 1e6,
                pct(&h)
            );
        }
    }
    drop(p);
    m.close().map_err(log_err)?;
    Ok(())
}
