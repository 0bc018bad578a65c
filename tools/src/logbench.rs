//! `strata logbench produce|consume`: the segmented log's benchmark, in the
//! manner of kafka-producer-perf-test and kafka-consumer-perf-test, with a
//! baseline of the bare disk measured in the same run (ratios inside one
//! run, since the machine is shared).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Records per second to offer, open loop: each batch is issued when
    /// due and its latency counts from then, so a stall counts against
    /// every batch queued behind it (-1: as fast as possible, closed loop).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    throughput: i64,
    /// fsync every batch before its append returns.
    #[arg(long)]
    sync: bool,
    /// Bytes per fetch when consuming.
    #[arg(long = "fetch-size", default_value_t = 1 << 20)]
    fetch_size: usize,
    /// I/O backend: auto (io_uring unless a probe finds it slower), std or
    /// uring.
    #[arg(long = "io", default_value = "auto")]
    io: String,
    /// produce: consumer threads tailing the log while it is produced (the
    /// usual Kafka pattern; shows what readers cost appenders).
    #[arg(long, default_value_t = 0)]
    consumers: usize,
    /// segment.bytes of the benchmark topic when it is created.
    #[arg(long = "segment-bytes", default_value_t = 1 << 30)]
    segment_bytes: u64,
    /// Append to segments with O_DIRECT, through the WAL's append path
    /// (on io_uring: a ring of the partition's own with its staging buffer
    /// and file registered). Reads stay buffered.
    #[arg(long)]
    direct: bool,
    /// With --direct: appends return once copied to the partition's
    /// 1 MiB staging buffer; full buffers are written while the next fills
    /// (up to 4 in flight). A process crash can then lose unflushed
    /// appends (log.direct.write.behind).
    #[arg(long = "write-behind")]
    write_behind: bool,
    /// With --direct: keep 8 MiB of each active segment written as zeros
    /// ahead of the appends (log.preallocate), so synced appends overwrite
    /// allocated blocks.
    #[arg(long)]
    preallocate: bool,
    /// Skip the bare-disk baseline.
    #[arg(long = "no-baseline")]
    no_baseline: bool,
    /// produce: also measure the disk's sequential write ceiling with fio
    /// (O_DIRECT, io_uring, 1 MiB writes, 8 in flight, 5 s) and give the
    /// produce rate as a share of it.
    #[arg(long = "fio-floor")]
    fio_floor: bool,
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
        "{:.3} ms avg latency, {:.3} ms max latency, {:.3} ms 50th, {:.3} ms 99th, {:.3} ms 99.9th, {:.3} ms 99.99th",
        h.mean() / 1000.0,
        ms(h.max()),
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.value_at_quantile(0.9999)),
    )
}

fn open_partition(
    storage: &StorageRef,
    dir: &Path,
    segment_bytes: u64,
    io: strata_log::SegmentIo,
) -> Result<(LogManager, Arc<Partition>)> {
    let opts = strata_log::ManagerOptions {
        direct_io: io.direct_io,
        write_behind: io.write_behind,
        preallocate: io.preallocate,
        ..strata_log::ManagerOptions::default()
    };
    let m = LogManager::open_with(storage.clone(), dir, opts).map_err(log_err)?;
    if !m.topics().iter().any(|(t, _)| t == TOPIC) {
        let cfg = LogConfig {
            retention_ms: None,
            segment_ms: None,
            segment_bytes,
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
    batch_bytes: usize,
}

fn produce(
    a: &Args,
    p: &Partition,
    n: u64,
    quiet: bool,
    h: &mut Histogram<u64>,
) -> Result<Produced> {
    let mut value = vec![0u8; a.record_size];
    strata_io::rng::Rng::new(42).fill(&mut value);
    // Records share the value's bytes, as a client reusing a buffer would.
    let value = bytes::Bytes::from(value);
    let started = Instant::now();
    // With a rate, open loop: each batch is due when its first record is,
    // and its latency counts from then (a stall delays every batch behind
    // it, and each of them says so).
    let sched = (a.throughput > 0).then(|| {
        crate::openloop::precise();
        crate::openloop::Schedule::new(a.throughput as f64)
    });
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
        let t = match &sched {
            Some(s) => s.wait(sent),
            None => Instant::now(),
        };
        p.append(b, 0, a.sync).map_err(log_err)?;
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        sent += k as u64;
        bytes += len;
        batches += 1;
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
        batch_bytes,
    })
}

/// The bare disk in the same run: `total` bytes appended to `f` from `at`
/// in chunks of one batch, then one fdatasync; with `sync`, an fdatasync
/// after every chunk, its latency recorded in `h`. Returns the seconds.
fn baseline(
    f: &strata_io::FileRef,
    at: &mut u64,
    total: u64,
    chunk: &[u8],
    sync: bool,
    h: &mut Histogram<u64>,
) -> Result<f64> {
    let started = Instant::now();
    let end = *at + total;
    while *at < end {
        let t = Instant::now();
        f.write_at(chunk, *at)?;
        if sync {
            f.sync_data()?;
        }
        h.saturating_record(t.elapsed().as_micros().max(1) as u64);
        *at += chunk.len() as u64;
    }
    f.sync_data()?;
    Ok(started.elapsed().as_secs_f64())
}

/// A consumer tailing the log from `from` until `stop`.
fn tail(p: &Partition, from: u64, fetch: usize, stop: &AtomicBool, consumed: &AtomicU64) {
    let mut at = from;
    while !stop.load(Ordering::Relaxed) {
        match p.read(at, fetch, None) {
            Ok(bs) => match bs.last() {
                Some(last) => {
                    at = last.last_offset() + 1;
                    let n: usize = bs.iter().map(|b| b.bytes.len()).sum();
                    consumed.fetch_add(n as u64, Ordering::Relaxed);
                }
                None => std::thread::sleep(Duration::from_micros(100)),
            },
            Err(e) => {
                eprintln!("strata logbench: consumer: {e}");
                return;
            }
        }
    }
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
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = crate::common::temp_dir("strata-logbench")?;
            tmp.path().to_path_buf()
        }
    };
    let storage = storage_for(&a.io, &dir)?;
    if (a.preallocate || a.write_behind) && !a.direct {
        return Err(CliError::Usage(
            "--preallocate and --write-behind need --direct".into(),
        ));
    }
    let io = strata_log::SegmentIo {
        direct_io: a.direct,
        write_behind: a.write_behind,
        preallocate: a.preallocate,
    };
    let (m, p) = open_partition(&storage, &dir, a.segment_bytes, io)?;
    match a.mode.as_str() {
        "produce" => {
            // Rounds of produce and baseline in turn, so both meet the same
            // disk: on a shared machine its speed drifts within a run.
            let rounds = if a.no_baseline { 1 } else { 10 };
            let (mut h, mut bh) = (hist()?, hist()?);
            let (mut records, mut bytes, mut secs, mut disk_secs) = (0u64, 0u64, 0f64, 0f64);
            let base_path = dir.join("logbench-baseline.tmp");
            let base_file = storage.open(&base_path, OpenOptions::create())?;
            base_file.set_len(0)?;
            let mut base_at = 0u64;
            let mut chunk = Vec::new();
            let stop = AtomicBool::new(false);
            let consumed = AtomicU64::new(0);
            let tail_from = p.log_end_offset();
            let produced: Result<()> = std::thread::scope(|sc| {
                for _ in 0..a.consumers {
                    sc.spawn(|| tail(&p, tail_from, a.fetch_size, &stop, &consumed));
                }
                let res = (|| -> Result<()> {
                    for r in 0..rounds {
                        let n = a.num_records * (r + 1) / rounds - a.num_records * r / rounds;
                        if n == 0 {
                            continue;
                        }
                        let got = produce(&a, &p, n, false, &mut h)?;
                        records += got.records;
                        bytes += got.bytes;
                        secs += got.secs;
                        if !a.no_baseline {
                            if chunk.len() != got.batch_bytes {
                                chunk = vec![0u8; got.batch_bytes];
                                strata_io::rng::Rng::new(7).fill(&mut chunk);
                            }
                            disk_secs += baseline(
                                &base_file,
                                &mut base_at,
                                got.bytes,
                                &chunk,
                                a.sync,
                                &mut bh,
                            )?;
                        }
                    }
                    Ok(())
                })();
                stop.store(true, Ordering::Relaxed);
                res
            });
            produced?;
            drop(base_file);
            storage.remove_file(&base_path)?;
            progress_done();
            let mbs = bytes as f64 / secs / 1e6;
            println!(
                "{records} records sent, {:.1} records/sec ({mbs:.2} MB/sec), {}{}.",
                records as f64 / secs,
                pct(&h),
                if a.throughput > 0 {
                    format!(
                        " (offered {} records/sec, open loop: latency from each batch's intended start)",
                        a.throughput
                    )
                } else {
                    String::new()
                }
            );
            if a.consumers > 0 {
                println!(
                    "{} consumers tailing the log read {:.2} MB/sec between them",
                    a.consumers,
                    consumed.load(Ordering::Relaxed) as f64 / (secs + disk_secs) / 1e6
                );
            }
            if !a.no_baseline {
                let disk = bytes as f64 / disk_secs / 1e6;
                println!(
                    "baseline: bare sequential write of the same bytes in {}-byte chunks{}, in turns with the produce (10 rounds): {disk:.2} MB/sec; produce / baseline = {:.2}",
                    chunk.len(),
                    if a.sync { ", fdatasync after each" } else { ", one fdatasync per round" },
                    mbs / disk
                );
                if a.sync {
                    println!(
                        "baseline: write+fdatasync P99 {:.3} ms, append P99 {:.3} ms; append / baseline P99 = {:.2}",
                        ms(bh.value_at_quantile(0.99)),
                        ms(h.value_at_quantile(0.99)),
                        h.value_at_quantile(0.99) as f64 / bh.value_at_quantile(0.99).max(1) as f64
                    );
                }
            }
            if a.fio_floor {
                if crate::fio::available() {
                    let job = crate::fio::WriteJob {
                        engine: "io_uring",
                        direct: true,
                        dsync: false,
                        bs: 1 << 20,
                        iodepth: 8,
                        rate: 0,
                        secs: 5.0,
                        size: 1 << 30,
                    };
                    let f = crate::fio::write(&dir, &job)?;
                    println!(
                        "floor: fio O_DIRECT sequential write, io_uring, 1 MiB x 8 in flight: {:.2} MB/sec; produce / floor = {:.2}",
                        f.bw / 1e6,
                        mbs / (f.bw / 1e6)
                    );
                } else {
                    println!("floor: fio not found (apt install fio): skipped");
                }
            }
        }
        _ => {
            let have = p.log_end_offset() - p.log_start_offset();
            if have < a.num_records {
                let mut setup = a.clone();
                setup.sync = false;
                setup.throughput = -1;
                produce(&setup, &p, a.num_records - have, false, &mut hist()?)?;
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
