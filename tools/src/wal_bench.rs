//! `strata wal-bench`: WAL append throughput next to a plain write loop of
//! the same bytes, and synced appends from 1..N threads (group commit) with
//! latency percentiles, per I/O backend. Output lines follow db_bench's
//! shape so the same scripts parse them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strata_io::StorageRef;
use strata_wal::{Preallocate, SyncPolicy, Wal, WalOptions};

use crate::common::storage_for;
use crate::error::{CliError, Result};

mod open;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which part to run: append (sync never, 1 thread), sync (sync always,
    /// group commit) or all.
    #[arg(long, default_value = "all", value_parser = ["all", "append", "sync"])]
    only: String,
    /// Records per benchmark [default: 1000000 for append, 20000 for sync].
    #[arg(long)]
    num: Option<u64>,
    /// Record size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Writer thread counts for the sync benchmark, comma-separated.
    #[arg(long, default_value = "1,4,16", value_delimiter = ',')]
    threads: Vec<usize>,
    /// I/O backends to compare, comma-separated: std, uring.
    #[arg(long = "io", default_value = "std,uring", value_delimiter = ',')]
    backends: Vec<String>,
    /// Open segments with O_DIRECT.
    #[arg(long)]
    direct: bool,
    /// Segment preallocation: none, allocate (fallocate) or zero (written zeros).
    #[arg(long, default_value = "zero", value_parser = ["none", "allocate", "zero"])]
    prealloc: String,
    /// Bytes an append may leave buffered in the append benchmark (0: one
    /// write per append).
    #[arg(long, default_value_t = 64 << 10)]
    write_buffer: usize,
    /// Segment size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
    /// Directory to run in [default: a temporary directory, removed after].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print one JSON object per benchmark instead of text.
    #[arg(long)]
    json: bool,
    /// Open loop: offer synced appends at this many per second in all,
    /// each measured from its intended start (coordinated-omission
    /// correct), for --duration seconds per thread count and backend.
    #[arg(long)]
    rate: Option<f64>,
    /// Measure the closed-loop maximum of synced appends for each thread
    /// count, then offer 25, 50, 75 and 90% of the first backend's maximum
    /// to every backend, open loop; for one appender, the disk's floor
    /// (fio, or a bare write+fdatasync loop) at the same rates.
    #[arg(long = "rate-sweep")]
    rate_sweep: bool,
    /// Seconds per line of an open-loop step.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Rounds each line's seconds are split into; the lines of a step run
    /// their rounds in turns, so the disk's stalls fall on all alike.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Skip the disk's floor in open-loop runs.
    #[arg(long = "no-floor")]
    no_floor: bool,
}

struct Report {
    name: String,
    ops: u64,
    bytes: u64,
    /// Until the bytes were handed to the OS.
    elapsed: Duration,
    /// Until they were also fsynced.
    synced: Duration,
    threads: usize,
    hist: Option<Histogram<u64>>,
    extra: String,
    records_per_sync: f64,
}

impl Report {
    fn print(&self, json: bool) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ops_s = self.ops as f64 / secs;
        let mb_s = self.bytes as f64 / secs / 1_048_576.0;
        let micros_op = secs * 1e6 * self.threads as f64 / self.ops.max(1) as f64;
        let pct = |q: f64| {
            self.hist
                .as_ref()
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
                .unwrap_or(f64::NAN)
        };
        if json {
            let mut s = format!(
                "{{\"benchmark\":\"{}\",\"ops\":{},\"threads\":{},\"seconds\":{:.6},\"ops_per_sec\":{:.1},\"mb_per_sec\":{:.2},\"micros_per_op\":{:.3}",
                self.name, self.ops, self.threads, secs, ops_s, mb_s, micros_op
            );
            if self.hist.is_some() {
                s += &format!(
                    ",\"p50_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"p9999_us\":{:.2}",
                    pct(0.5),
                    pct(0.99),
                    pct(0.999),
                    pct(0.9999)
                );
            }
            println!("{s}}}");
            return;
        }
        println!(
            "{:<28} : {:>11.3} micros/op {:.0} ops/sec; {:>6.1} MB/s{}",
            self.name,
            micros_op,
            ops_s,
            mb_s,
            if self.extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.extra)
            }
        );
        if self.hist.is_some() {
            println!(
                "Percentiles: P50: {:.2} P75: {:.2} P99: {:.2} P99.9: {:.2} P99.99: {:.2}",
                pct(0.5),
                pct(0.75),
                pct(0.99),
                pct(0.999),
                pct(0.9999)
            );
        }
    }
}

fn new_hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .map_err(|e| CliError::Usage(format!("histogram: {e}")))
}

fn record(i: u64, size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

pub fn run(a: Args) -> Result<()> {
    if a.value_size == 0 {
        return Err(CliError::Usage("--value-size must be at least 1".into()));
    }
    if a.threads.iter().any(|&t| t == 0 || t > 1024) {
        return Err(CliError::Usage(
            "--threads: each count must be 1..=1024".into(),
        ));
    }
    let prealloc = match a.prealloc.as_str() {
        "none" => Preallocate::None,
        "allocate" => Preallocate::Allocate,
        _ => Preallocate::ZeroFill,
    };
    let tmp;
    let base = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| CliError::Local {
                what: format!("create {}", d.display()),
                source: e,
            })?;
            d.clone()
        }
        None => {
            tmp = crate::common::temp_dir("strata-wal-bench")?;
            tmp.path().to_path_buf()
        }
    };
    let storages: Vec<(String, StorageRef)> = a
        .backends
        .iter()
        .map(|b| Ok((b.clone(), storage_for(b, &base)?)))
        .collect::<Result<_>>()?;
    if !a.json {
        println!(
            "strata wal-bench: records of {} bytes, segments preallocated: {}, O_DIRECT: {}, dir {}",
            a.value_size,
            a.prealloc,
            a.direct,
            base.display()
        );
    }
    if a.rate.is_some() || a.rate_sweep {
        return open_loop(&a, &storages, &base, prealloc);
    }
    let mut run_no = 0;
    let mut previous: Option<PathBuf> = None;
    // Each benchmark gets a new directory and the previous one is deleted,
    // so no benchmark runs beside the writeback of an earlier one's data.
    let mut fresh = |what: &str| -> Result<PathBuf> {
        if let Some(p) = previous.take() {
            std::fs::remove_dir_all(&p).map_err(|e| CliError::Local {
                what: format!("remove {}", p.display()),
                source: e,
            })?;
        }
        run_no += 1;
        let d = base.join(format!("{run_no:03}-{what}"));
        previous = Some(d.clone());
        std::fs::create_dir_all(&d).map_err(|e| CliError::Local {
            what: format!("create {}", d.display()),
            source: e,
        })?;
        Ok(d)
    };
    if a.only == "all" || a.only == "append" {
        let num = a.num.unwrap_or(1_000_000);
        let raw = raw_write_loop(&fresh("raw")?, num, a.value_size, a.write_buffer.max(1))?;
        raw.print(a.json);
        let raw_disk = to_disk(&raw, "raw-write+fdatasync".into());
        raw_disk.print(a.json);
        let raw_small = raw_write_loop(&fresh("raw-small")?, num.min(200_000), a.value_size, 0)?;
        raw_small.print(a.json);
        for (name, storage) in &storages {
            // Zero-filling a segment is a second write of it: for throughput
            // runs, allocate instead (it only pays off for synced writes).
            let opts = WalOptions {
                sync: SyncPolicy::Never,
                write_buffer: a.write_buffer,
                direct_io: a.direct,
                preallocate: match prealloc {
                    Preallocate::ZeroFill => Preallocate::Allocate,
                    p => p,
                },
                segment_size: a.segment_size,
                ..WalOptions::default()
            };
            let mut r = append_bench(
                storage,
                &fresh("append")?,
                opts.clone(),
                num,
                a.value_size,
                1,
            )?;
            r.name = format!("wal-append-never/{name}");
            r.extra = format!("{:.0}% of raw", 100.0 * ratio(&r, &raw));
            r.print(a.json);
            let mut d = to_disk(&r, format!("wal-append-never+sync/{name}"));
            d.extra = format!("{:.0}% of raw+fdatasync", 100.0 * ratio(&d, &raw_disk));
            d.print(a.json);
            let opts = WalOptions {
                write_buffer: 0,
                ..opts
            };
            let mut r = append_bench(
                storage,
                &fresh("append1")?,
                opts,
                num.min(200_000),
                a.value_size,
                1,
            )?;
            r.name = format!("wal-append-never-unbuf/{name}");
            r.extra = format!(
                "{:.0}% of raw write per record",
                100.0 * ratio(&r, &raw_small)
            );
            r.print(a.json);
        }
    }
    if a.only == "all" || a.only == "sync" {
        let num = a.num.unwrap_or(20_000);
        for (name, storage) in &storages {
            let mut single = None;
            for &t in &a.threads {
                let opts = synced_options(&a, prealloc);
                let mut r = append_bench(storage, &fresh("sync")?, opts, num, a.value_size, t)?;
                r.name = format!("wal-sync/{name}/t{t}");
                let ops_s = r.ops as f64 / r.elapsed.as_secs_f64().max(1e-9);
                match single {
                    None if t == 1 => single = Some(ops_s),
                    Some(s) => r.extra = format!("{:.1}x one thread; ", ops_s / s),
                    None => {}
                }
                r.extra += &format!("{:.1} records per fsync", r.records_per_sync);
                r.print(a.json);
            }
        }
    }
    std::io::stdout().flush().ok();
    Ok(())
}

/// The WAL of the synced benchmarks, closed and open loop.
fn synced_options(a: &Args, prealloc: Preallocate) -> WalOptions {
    WalOptions {
        sync: SyncPolicy::Always,
        direct_io: a.direct,
        preallocate: prealloc,
        segment_size: a.segment_size,
        ..WalOptions::default()
    }
}

/// `--rate` and `--rate-sweep`.
fn open_loop(
    a: &Args,
    storages: &[(String, StorageRef)],
    base: &Path,
    prealloc: Preallocate,
) -> Result<()> {
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(CliError::Usage(format!("--rate {r}: must be positive")));
        }
    }
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 3600.0) {
        return Err(CliError::Usage(format!(
            "--duration {}: 0 to 3600 seconds",
            a.duration
        )));
    }
    if a.rounds == 0 || a.rounds > 1000 {
        return Err(CliError::Usage(format!("--rounds {}: 1 to 1000", a.rounds)));
    }
    let mut n = 0;
    let mut fresh = |what: &str| -> Result<PathBuf> {
        n += 1;
        let d = base.join(format!("open-{n:03}-{what}"));
        std::fs::create_dir_all(&d).map_err(|e| CliError::Local {
            what: format!("create {}", d.display()),
            source: e,
        })?;
        Ok(d)
    };
    // Nothing is deleted until the end: on this VM (ext4 mounted with
    // `discard`) removing a run's 64 MiB of segments sends discards that
    // can stall the next run's fsyncs.
    let mut used = Vec::new();
    let opts = synced_options(a, prealloc);
    let floor = !a.no_floor;
    let fio = floor && crate::fio::available();
    if floor && !fio {
        println!("fio not found (apt install fio): the floor is this tool's own write+fdatasync loop only");
    }
    println!(
        "strata wal-bench open loop: synced appends of {} bytes, {} s per line in {} rounds taken in turns, latency from each append's intended start (us)",
        a.value_size, a.duration, a.rounds
    );
    let round_secs = a.duration / a.rounds as f64;
    for &t in &a.threads {
        let steps: Vec<(String, f64)> = match a.rate {
            Some(r) => vec![(format!("{r:.0}/s"), r)],
            None => {
                let mut first = None;
                for (name, storage) in storages {
                    let d = fresh("max")?;
                    let r = append_bench(
                        storage,
                        &d,
                        opts.clone(),
                        a.num.unwrap_or(20_000),
                        a.value_size,
                        t,
                    )?;
                    used.push(d);
                    let max = r.ops as f64 / r.elapsed.as_secs_f64().max(1e-9);
                    println!("wal-max/{name}/t{t} : {max:.0} appends/s closed loop");
                    first.get_or_insert(max);
                }
                let max = first.unwrap_or(1.0);
                [25u32, 50, 75, 90]
                    .iter()
                    .map(|&p| (format!("{p}%"), max * f64::from(p) / 100.0))
                    .collect()
            }
        };
        for (label, rate) in &steps {
            let mut wals = Vec::new();
            for (name, storage) in storages {
                let d = fresh("open")?;
                wals.push((
                    name,
                    open::open_wal(storage, &d, opts.clone())?,
                    open::Line::new()?,
                ));
                used.push(d);
            }
            let mut bare = None;
            let mut fios = Vec::new();
            if floor && t == 1 {
                let size = ((rate * round_secs) as u64 * a.value_size as u64 + (1 << 20))
                    .clamp(1 << 20, 1 << 30);
                let d = fresh("bare")?;
                bare = Some((open::Bare::new(&d, a.value_size, size)?, open::Line::new()?));
                used.push(d);
                if fio {
                    for engine in ["psync", "io_uring"] {
                        let d = fresh("fio")?;
                        fios.push(open::Fio::new(engine, &d, a.value_size, size)?);
                        used.push(d);
                    }
                }
            }
            for _ in 0..a.rounds {
                for (_, wal, line) in wals.iter_mut() {
                    open::wal_round(wal, line, *rate, t, round_secs, a.value_size)?;
                }
                if let Some((b, line)) = bare.as_mut() {
                    b.round(line, *rate, round_secs)?;
                }
                for f in fios.iter_mut() {
                    f.round(*rate, round_secs)?;
                }
            }
            let mut p99s = Vec::new();
            for (name, wal, line) in wals {
                let st = wal.stats();
                wal.close()?;
                println!(
                    "wal-open/{name}/t{t}/{label} : {}; {:.1} records per fsync",
                    line.text(*rate),
                    st.records as f64 / st.syncs.max(1) as f64
                );
                p99s.push((
                    name.clone(),
                    line.hist.value_at_quantile(0.99),
                    line.service.value_at_quantile(0.99),
                ));
            }
            if let Some((_, line)) = bare {
                println!(
                    "floor/bare-write+fdatasync/t1/{label} : {}",
                    line.text(*rate)
                );
                let f99 = line.hist.value_at_quantile(0.99).max(1) as f64;
                let ratios: Vec<String> = p99s
                    .iter()
                    .map(|(n, p, _)| format!("{n} {:.2}x", *p as f64 / f99))
                    .collect();
                println!(
                    "ratio/t1/{label} : P99 / bare write+fdatasync P99 (same method, same rounds): {}",
                    ratios.join(", ")
                );
            }
            for f in &fios {
                println!("floor/fio-{}-dsync/t1/{label} : {}", f.engine, f.text());
            }
            if let Some(f) = fios.first() {
                let f99 = f.hist.value_at_quantile(0.99).max(1) as f64;
                let ratios: Vec<String> = p99s
                    .iter()
                    .map(|(n, p, s)| {
                        format!(
                            "{n} {:.2}x (from issue, as fio times: {:.2}x)",
                            *p as f64 / f99,
                            *s as f64 / f99
                        )
                    })
                    .collect();
                println!(
                    "ratio/t1/{label} : P99 / fio psync O_DSYNC P99 (same rounds): {}",
                    ratios.join(", ")
                );
            }
        }
    }
    for d in used {
        let _ = std::fs::remove_dir_all(d);
    }
    Ok(())
}

/// Each benchmark thread's result; a panicked thread is an error.
fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>) -> Vec<Result<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(CliError::Usage("benchmark thread panicked".into())))
        })
        .collect()
}

fn ratio(r: &Report, base: &Report) -> f64 {
    let a = r.bytes as f64 / r.elapsed.as_secs_f64().max(1e-9);
    let b = base.bytes as f64 / base.elapsed.as_secs_f64().max(1e-9);
    a / b
}

/// The same report timed to the final fsync: bytes on disk per second.
fn to_disk(r: &Report, name: String) -> Report {
    Report {
        name,
        ops: r.ops,
        bytes: r.bytes,
        elapsed: r.synced,
        synced: r.synced,
        threads: r.threads,
        hist: None,
        extra: String::new(),
        records_per_sync: r.records_per_sync,
    }
}

/// The disk's sequential write rate for the same bytes: a plain loop of
/// `write` calls through a `buffer`-byte buffer (0: one call per record),
/// timed once when the loop ends (page cache) and once after a final
/// fdatasync (on disk, as `dd conv=fdatasync` measures).
fn raw_write_loop(dir: &Path, num: u64, size: usize, buffer: usize) -> Result<Report> {
    let path = dir.join("raw.dat");
    let local = |what: &str, e: std::io::Error| CliError::Local {
        what: format!("{what} {}", path.display()),
        source: e,
    };
    let file = std::fs::File::create(&path).map_err(|e| local("create", e))?;
    let recs: Vec<Vec<u8>> = (0..1024).map(|i| record(i, size)).collect();
    let start = Instant::now();
    if buffer > 0 {
        let mut w = std::io::BufWriter::with_capacity(buffer, &file);
        for i in 0..num {
            w.write_all(&recs[(i % 1024) as usize])
                .map_err(|e| local("write", e))?;
        }
        w.flush().map_err(|e| local("write", e))?;
    } else {
        let mut f = &file;
        for i in 0..num {
            f.write_all(&recs[(i % 1024) as usize])
                .map_err(|e| local("write", e))?;
        }
    }
    let elapsed = start.elapsed();
    file.sync_data().map_err(|e| local("fdatasync", e))?;
    let synced = start.elapsed();
    std::fs::remove_file(&path).map_err(|e| local("remove", e))?;
    Ok(Report {
        synced,
        name: if buffer > 0 {
            "raw-write-buffered".into()
        } else {
            "raw-write-per-record".into()
        },
        ops: num,
        bytes: num * size as u64,
        elapsed,
        threads: 1,
        hist: None,
        extra: String::new(),
        records_per_sync: 0.0,
    })
}

/// `num` appends split over `threads` threads. Synced appends record the
/// latency of each; unsynced ones of every 16th, since reading the clock
/// would otherwise cost as much as the append itself.
fn append_bench(
    storage: &StorageRef,
    dir: &Path,
    opts: WalOptions,
    num: u64,
    size: usize,
    threads: usize,
) -> Result<Report> {
    let sync = opts.sync;
    let (wal, _) = Wal::open(storage.clone(), dir, opts, |_, _| Ok(()))?;
    let recs: Arc<Vec<Vec<u8>>> = Arc::new((0..1024).map(|i| record(i, size)).collect());
    let per = num / threads as u64;
    let sample = if sync == SyncPolicy::Always { 1 } else { 16 };
    let start = Instant::now();
    let hists: Vec<Result<Histogram<u64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let wal = wal.clone();
                let recs = recs.clone();
                s.spawn(move || -> Result<Histogram<u64>> {
                    let mut h = new_hist()?;
                    for i in 0..per {
                        let r = &recs[((i + t as u64 * 7919) % 1024) as usize];
                        if i % sample == 0 {
                            let t0 = Instant::now();
                            wal.append(r)?;
                            h.saturating_record(t0.elapsed().as_nanos() as u64);
                        } else {
                            wal.append(r)?;
                        }
                    }
                    Ok(h)
                })
            })
            .collect();
        join_all(handles)
    });
    wal.flush()?;
    let elapsed = start.elapsed();
    wal.sync()?;
    let synced = start.elapsed();
    let mut hist = new_hist()?;
    for h in hists {
        hist.add(h?)
            .map_err(|e| CliError::Usage(format!("histogram: {e}")))?;
    }
    wal.close()?;
    let stats = wal.stats();
    let ops = per * threads as u64;
    Ok(Report {
        synced,
        name: String::new(),
        ops,
        bytes: ops * size as u64,
        elapsed,
        threads,
        hist: Some(hist),
        extra: String::new(),
        records_per_sync: stats.records as f64 / stats.syncs.max(1) as f64,
    })
}
