//! `strata bench`: a db_bench-compatible benchmark of the LSM engine.
//!
//! Flag names and meanings follow RocksDB's db_bench (`--benchmarks`,
//! `--num`, `--reads`, `--key_size`, `--value_size`, `--threads`, `--sync`,
//! `--compaction_style`, `--histogram`, `--statistics`, ...), and so do the
//! output lines, so scripts written for db_bench parse it:
//!
//! ```text
//! fillrandom   :       2.345 micros/op 426439 ops/sec;   47.2 MB/s
//! Percentiles: P50: 1.92 P75: 2.41 P99: 8.10 P99.9: 35.00 P99.99: 120.00
//! ```
//!
//! Keys are db_bench's: the key number as 8 big-endian bytes, padded with
//! '0' to `--key_size`; values are slices of a pre-generated random buffer.
//! `fillseq` and `fillrandom` start from an empty database (as db_bench's
//! "fresh DB" benchmarks do) unless `--use_existing_db` is given.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strata_io::rng::Rng;
use strata_io::StorageRef;
use strata_lsm::table::TableOptions;
use strata_lsm::{CompactionStyle, Db, Options, ReadOptions, WriteOptions};

use crate::common::storage_for;
use crate::error::{CliError, Result};

/// The suite run when `--benchmarks` is not given.
pub const DEFAULT_BENCHMARKS: &str =
    "fillseq,fillrandom,overwrite,readrandom,readseq,seekrandom,readwhilewriting";

const KNOWN: &[&str] = &[
    "fillseq",
    "fillrandom",
    "overwrite",
    "readrandom",
    "multireadrandom",
    "readseq",
    "readreverse",
    "seekrandom",
    "readwhilewriting",
    "deleterandom",
    "stats",
];

/// db_bench's booleans: `--flag`, `--flag=1`, `--flag=true`, `--flag=0`...
fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("expected 0/1 or true/false, got {s:?}")),
    }
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let m = match &t[i..] {
                "k" | "K" | "KB" | "KiB" => 1 << 10,
                "m" | "M" | "MB" | "MiB" => 1 << 20,
                "g" | "G" | "GB" | "GiB" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?} in {s:?}")),
            };
            (&t[..i], m)
        }
    };
    num.parse::<u64>()
        .map_err(|e| format!("{s:?}: {e}"))?
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Comma-separated benchmarks, run in order: fillseq, fillrandom,
    /// overwrite, readrandom, readseq, readreverse, seekrandom,
    /// readwhilewriting, deleterandom, stats.
    #[arg(long, default_value = DEFAULT_BENCHMARKS)]
    benchmarks: String,
    /// Keys in the database (and writes per fill benchmark).
    #[arg(long, default_value_t = 1_000_000)]
    num: u64,
    /// Reads per read benchmark [default: --num].
    #[arg(long)]
    reads: Option<u64>,
    /// Key size in bytes (at least 8).
    #[arg(long = "key_size", default_value_t = 16)]
    key_size: usize,
    /// Value size in bytes.
    #[arg(long = "value_size", default_value_t = 100)]
    value_size: usize,
    /// Threads per benchmark (readwhilewriting adds one writer).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// fsync the WAL before each write returns.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    sync: bool,
    /// Write without the WAL (lost on a crash unless flushed).
    #[arg(long = "disable_wal", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    disable_wal: bool,
    /// Database directory [default: a temporary directory, removed after].
    #[arg(long)]
    db: Option<PathBuf>,
    /// Keep the database in --db instead of starting fresh.
    #[arg(long = "use_existing_db", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    use_existing_db: bool,
    /// level or universal.
    #[arg(long = "compaction_style", default_value = "level")]
    compaction_style: CompactionStyle,
    /// Memtable size in bytes (k/M/G suffixes allowed).
    #[arg(long = "write_buffer_size", default_value = "64M", value_parser = parse_size)]
    write_buffer_size: u64,
    /// Memtables in memory at most.
    #[arg(long = "max_write_buffer_number", default_value_t = 2)]
    max_write_buffer_number: usize,
    /// Block cache size in bytes (k/M/G suffixes allowed).
    #[arg(long = "cache_size", default_value = "64M", value_parser = parse_size)]
    cache_size: u64,
    /// Keys per `multireadrandom` call (`Db::multi_get`).
    #[arg(long = "batch_size", default_value_t = 32)]
    batch_size: usize,
    /// Read tables with O_DIRECT: only the block cache caches them.
    #[arg(long = "use_direct_reads", default_value = "false", value_parser = parse_bool,
          num_args = 0..=1, default_missing_value = "true")]
    use_direct_reads: bool,
    /// Bloom filter bits per key (0: no filter).
    #[arg(long = "bloom_bits", default_value_t = 10)]
    bloom_bits: u32,
    /// Data block size in bytes.
    #[arg(long = "block_size", default_value_t = 4096)]
    block_size: usize,
    /// Compaction output file size.
    #[arg(long = "target_file_size_base", default_value = "64M", value_parser = parse_size)]
    target_file_size_base: u64,
    /// Target size of the level L0 compacts into.
    #[arg(long = "max_bytes_for_level_base", default_value = "256M", value_parser = parse_size)]
    max_bytes_for_level_base: u64,
    /// Levels.
    #[arg(long = "num_levels", default_value_t = 7)]
    num_levels: usize,
    /// L0 files (or sorted runs) that start a compaction.
    #[arg(long = "level0_file_num_compaction_trigger", default_value_t = 4)]
    level0_file_num_compaction_trigger: usize,
    /// L0 files that slow writes down.
    #[arg(long = "level0_slowdown_writes_trigger", default_value_t = 20)]
    level0_slowdown_writes_trigger: usize,
    /// L0 files that stop writes.
    #[arg(long = "level0_stop_writes_trigger", default_value_t = 36)]
    level0_stop_writes_trigger: usize,
    /// Compaction threads.
    #[arg(long = "max_background_compactions", default_value_t = 1)]
    max_background_compactions: usize,
    /// Compaction write rate limit in bytes/s (0: none).
    #[arg(long = "rate_limiter_bytes_per_sec", default_value = "0", value_parser = parse_size)]
    rate_limiter_bytes_per_sec: u64,
    /// Next() calls after each seek in seekrandom.
    #[arg(long = "seek_nexts", default_value_t = 0)]
    seek_nexts: usize,
    /// Print latency percentiles per benchmark.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    histogram: bool,
    /// Print the engine's statistics after the benchmarks.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    statistics: bool,
    /// Seed of the key and value generators.
    #[arg(long, default_value_t = 301)]
    seed: u64,
    /// I/O backend: auto (io_uring unless a probe in the database's
    /// directory finds it slower), std or uring.
    #[arg(long = "io", default_value = "auto")]
    io: String,
    /// One JSON object per benchmark instead of text.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    json: bool,
    /// Write a flamegraph (SVG) of the whole run to this file, sampled
    /// in-process at 999 Hz across all threads (background work included).
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// db_bench's key layout.
fn make_key(buf: &mut [u8], k: u64) {
    buf[..8].copy_from_slice(&k.to_be_bytes());
    buf[8..].fill(b'0');
}

/// Values: slices at moving offsets of a random buffer.
struct Values {
    data: Vec<u8>,
    pos: usize,
}

impl Values {
    fn new(seed: u64, size: usize) -> Values {
        let mut data = vec![0u8; (1 << 20).max(size * 2)];
        Rng::new(seed).fill(&mut data);
        Values { data, pos: 0 }
    }

    fn next(&mut self, len: usize) -> &[u8] {
        if self.pos + len > self.data.len() {
            self.pos = 0;
        }
        let s = &self.data[self.pos..self.pos + len];
        self.pos += len;
        s
    }
}

/// Which keys exist, as far as this run's writes say: a bitmap over key
/// numbers, for the live-data size behind space amplification.
struct KeySet {
    bits: Vec<AtomicU64>,
    /// False when the database held data this run did not write.
    known: AtomicBool,
}

impl KeySet {
    fn new(num: u64) -> KeySet {
        KeySet {
            bits: (0..num.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            known: AtomicBool::new(true),
        }
    }

    fn set(&self, k: u64, present: bool) {
        let (w, b) = ((k / 64) as usize, 1u64 << (k % 64));
        if let Some(word) = self.bits.get(w) {
            if present {
                word.fetch_or(b, Ordering::Relaxed);
            } else {
                word.fetch_and(!b, Ordering::Relaxed);
            }
        }
    }

    fn clear(&self) {
        for w in &self.bits {
            w.store(0, Ordering::Relaxed);
        }
        self.known.store(true, Ordering::Relaxed);
    }

    fn count(&self) -> Option<u64> {
        self.known.load(Ordering::Relaxed).then(|| {
            self.bits
                .iter()
                .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
                .sum()
        })
    }
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// One thread's tally.
struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    bytes: u64,
    found: u64,
}

impl Tally {
    fn new() -> Result<Tally> {
        Ok(Tally {
            hist: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
                .map_err(|e| CliError::Usage(format!("histogram: {e}")))?,
            ops: 0,
            bytes: 0,
            found: 0,
        })
    }

    fn record(&mut self, t0: Instant) {
        let ns = t0.elapsed().as_nanos() as u64;
        let _ = self.hist.record(ns.max(1));
        self.ops += 1;
    }

    fn merge(&mut self, o: &Tally) -> Result<()> {
        self.hist
            .add(&o.hist)
            .map_err(|e| CliError::Usage(format!("histogram: {e}")))?;
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.found += o.found;
        Ok(())
    }
}

/// A finished benchmark.
pub struct Outcome {
    pub name: String,
    pub tally_ops: u64,
    pub found: u64,
    pub seconds: f64,
    pub threads: usize,
    pub bytes: u64,
    hist: Histogram<u64>,
}

impl Outcome {
    fn print(&self, histogram: bool, json: bool) {
        let secs = self.seconds.max(1e-9);
        let ops_s = self.tally_ops as f64 / secs;
        let micros = secs * 1e6 * self.threads as f64 / self.tally_ops.max(1) as f64;
        let mb_s = self.bytes as f64 / secs / 1_048_576.0;
        let p = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        if json {
            println!(
                "{{\"benchmark\":\"{}\",\"ops\":{},\"found\":{},\"threads\":{},\"seconds\":{:.6},\"micros_per_op\":{:.3},\"ops_per_sec\":{:.1},\"mb_per_sec\":{:.2},\"p50_us\":{:.2},\"p75_us\":{:.2},\"p99_us\":{:.2},\"p999_us\":{:.2},\"p9999_us\":{:.2},\"max_us\":{:.2}}}",
                self.name, self.tally_ops, self.found, self.threads, secs, micros, ops_s, mb_s,
                p(0.5), p(0.75), p(0.99), p(0.999), p(0.9999), self.hist.max() as f64 / 1000.0
            );
            return;
        }
        let extra = match self.name.as_str() {
            "readrandom" | "readwhilewriting" | "seekrandom" | "multireadrandom" => {
                format!(" ({} of {} found)", self.found, self.tally_ops)
            }
            _ => String::new(),
        };
        println!(
            "{:<12} : {:>11.3} micros/op {:.0} ops/sec; {:>6.1} MB/s{extra}",
            self.name, micros, ops_s, mb_s
        );
        if histogram {
            let h = &self.hist;
            println!(
                "Count: {} Average: {:.4}  StdDev: {:.2}",
                h.len(),
                h.mean() / 1000.0,
                h.stdev() / 1000.0
            );
            println!(
                "Min: {:.2}  Median: {:.2}  Max: {:.2}",
                h.min() as f64 / 1000.0,
                p(0.5),
                h.max() as f64 / 1000.0
            );
            println!(
                "Percentiles: P50: {:.2} P75: {:.2} P99: {:.2} P99.9: {:.2} P99.99: {:.2}",
                p(0.5),
                p(0.75),
                p(0.99),
                p(0.999),
                p(0.9999)
            );
        }
    }
}

impl Args {
    fn options(&self) -> Options {
        Options {
            write_buffer_size: self.write_buffer_size as usize,
            max_write_buffer_number: self.max_write_buffer_number,
            block_cache_size: self.cache_size as usize,
            use_direct_reads: self.use_direct_reads,
            table: TableOptions {
                block_size: self.block_size,
                bloom_bits_per_key: self.bloom_bits,
                ..TableOptions::default()
            },
            target_file_size: self.target_file_size_base,
            compaction_style: self.compaction_style,
            num_levels: self.num_levels,
            level0_file_num_compaction_trigger: self.level0_file_num_compaction_trigger,
            level0_slowdown_writes_trigger: self.level0_slowdown_writes_trigger,
            level0_stop_writes_trigger: self.level0_stop_writes_trigger,
            max_bytes_for_level_base: self.max_bytes_for_level_base,
            max_background_compactions: self.max_background_compactions,
            rate_limit_bytes_per_sec: self.rate_limiter_bytes_per_sec,
            ..Options::default()
        }
    }

    fn validate(&self) -> Result<Vec<String>> {
        let usage = |m: String| Err(CliError::Usage(m));
        if self.key_size < 8 {
            return usage(format!(
                "--key_size={}: must be at least 8 (the key number takes 8 bytes)",
                self.key_size
            ));
        }
        if self.threads == 0 || self.threads > 1024 {
            return usage(format!("--threads={}: must be 1..=1024", self.threads));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return usage(format!(
                "--batch_size={}: must be 1..=4096",
                self.batch_size
            ));
        }
        if self.num == 0 {
            return usage("--num=0: must be at least 1".into());
        }
        if self.use_existing_db && self.db.is_none() {
            return usage("--use_existing_db needs --db".into());
        }
        let names: Vec<String> = self
            .benchmarks
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() {
            return usage("--benchmarks is empty".into());
        }
        for n in &names {
            if !KNOWN.contains(&n.as_str()) {
                return usage(format!(
                    "--benchmarks: unknown benchmark {n:?} (known: {})",
                    KNOWN.join(", ")
                ));
            }
        }
        self.options().validate()?;
        Ok(names)
    }
}

/// What runs the benchmarks: the database and where it lives.
struct Bench {
    args: Args,
    storage: StorageRef,
    dir: PathBuf,
    db: Option<Db>,
    keys: KeySet,
}

impl Bench {
    fn db(&self) -> Result<&Db> {
        self.db
            .as_ref()
            .ok_or_else(|| CliError::Usage("no database open".into()))
    }

    /// Closes, deletes and reopens the database empty.
    fn fresh(&mut self) -> Result<()> {
        if let Some(db) = self.db.take() {
            db.close()?;
        }
        if self.dir.exists() {
            // Only ever delete a Strata database (or an empty directory).
            let entries: Vec<_> = std::fs::read_dir(&self.dir)
                .map_err(|e| CliError::Local {
                    what: format!("read {}", self.dir.display()),
                    source: e,
                })?
                .filter_map(|e| e.ok())
                .collect();
            if !entries.is_empty() && !self.dir.join("STRATA").exists() {
                return Err(CliError::Usage(format!(
                    "--db {}: the directory holds files but no Strata database; refusing to delete it",
                    self.dir.display()
                )));
            }
            std::fs::remove_dir_all(&self.dir).map_err(|e| CliError::Local {
                what: format!("remove {}", self.dir.display()),
                source: e,
            })?;
        }
        self.db = Some(Db::open(
            self.storage.clone(),
            &self.dir,
            self.args.options(),
        )?);
        self.keys.clear();
        Ok(())
    }

    fn write_opts(&self) -> WriteOptions {
        WriteOptions {
            sync: self.args.sync,
            disable_wal: self.args.disable_wal,
            ..WriteOptions::default()
        }
    }

    fn run_one(&mut self, name: &str) -> Result<Option<Outcome>> {
        if name == "stats" {
            let db = self.db()?;
            db.wait_for_compactions()?;
            let s = db.stats();
            let kv = (self.args.key_size + self.args.value_size) as u64;
            let on_disk = dir_bytes(&self.dir);
            let live = self.keys.count();
            println!(
                "{:<12} : waited for background work to finish; user writes {:.1} MB; disk writes {:.1} MB (flush {:.1} + compaction {:.1} + WAL {:.1} MB); live {}; db dir {:.1} MB",
                "stats",
                s.user_bytes as f64 / 1048576.0,
                (s.flushed_bytes + s.compacted_bytes + s.wal_bytes) as f64 / 1048576.0,
                s.flushed_bytes as f64 / 1048576.0,
                s.compacted_bytes as f64 / 1048576.0,
                s.wal_bytes as f64 / 1048576.0,
                live.map_or("unknown (existing database)".to_string(), |n| format!(
                    "{:.1} MB ({n} keys x {kv} B)",
                    (n * kv) as f64 / 1048576.0
                )),
                on_disk as f64 / 1048576.0
            );
            println!("{s}");
            if let Some(n) = live.filter(|&n| n > 0) {
                println!(
                    "space amplification (db dir / live data): {:.2}",
                    on_disk as f64 / (n * kv) as f64
                );
            }
            return Ok(None);
        }
        if matches!(name, "fillseq" | "fillrandom") && !self.args.use_existing_db {
            self.fresh()?;
        }
        let a = self.args.clone();
        let db = self.db()?.clone();
        let keys = &self.keys;
        let wo = self.write_opts();
        let threads = a.threads;
        let reads = a.reads.unwrap_or(a.num);
        let per_thread = |total: u64, t: usize| {
            total / threads as u64 + u64::from((t as u64) < total % threads as u64)
        };
        let progress = Progress::new(
            name,
            match name {
                "fillseq" | "fillrandom" | "overwrite" | "deleterandom" => a.num,
                "readseq" | "readreverse" => reads.min(a.num) * threads as u64,
                _ => reads,
            },
        );
        let stop = AtomicBool::new(false);
        let start = Instant::now();
        let mut elapsed = Duration::ZERO;
        let results: Vec<Result<Tally>> = std::thread::scope(|s| {
            let writer = (name == "readwhilewriting").then(|| {
                let (db, a, stop) = (&db, &a, &stop);
                s.spawn(move || -> Result<Tally> {
                    let mut tally = Tally::new()?;
                    let mut rng = Rng::new(a.seed.wrapping_mul(1000) + threads as u64 + 1);
                    let mut values = Values::new(a.seed + threads as u64, a.value_size);
                    let mut key = vec![0u8; a.key_size];
                    while !stop.load(Ordering::Relaxed) {
                        let k = rng.below(a.num);
                        make_key(&mut key, k);
                        db.put(&key, values.next(a.value_size), wo)?;
                        keys.set(k, true);
                        tally.ops += 1;
                    }
                    Ok(tally)
                })
            });
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (db, a, progress, keys) = (&db, &a, &progress, keys);
                    let name = name.to_string();
                    s.spawn(move || -> Result<Tally> {
                        let mut tally = Tally::new()?;
                        let mut rng = Rng::new(a.seed.wrapping_mul(1000) + t as u64 + 1);
                        let mut values = Values::new(a.seed + t as u64, a.value_size);
                        let mut key = vec![0u8; a.key_size];
                        let row = (a.key_size + a.value_size) as u64;
                        match name.as_str() {
                            "fillseq" | "fillrandom" | "overwrite" => {
                                let n = per_thread(a.num, t);
                                let base: u64 = (0..t).map(|i| per_thread(a.num, i)).sum();
                                for i in 0..n {
                                    let k = if name == "fillseq" {
                                        base + i
                                    } else {
                                        rng.below(a.num)
                                    };
                                    make_key(&mut key, k);
                                    let v = values.next(a.value_size);
                                    let t0 = Instant::now();
                                    db.put(&key, v, wo)?;
                                    tally.record(t0);
                                    keys.set(k, true);
                                    tally.bytes += row;
                                    progress.tick();
                                }
                            }
                            "deleterandom" => {
                                for _ in 0..per_thread(a.num, t) {
                                    let k = rng.below(a.num);
                                    make_key(&mut key, k);
                                    let t0 = Instant::now();
                                    db.delete(&key, wo)?;
                                    tally.record(t0);
                                    keys.set(k, false);
                                    progress.tick();
                                }
                            }
                            "readrandom" | "readwhilewriting" => {
                                for _ in 0..per_thread(reads, t) {
                                    make_key(&mut key, rng.below(a.num));
                                    let t0 = Instant::now();
                                    let got = db.get(&key, None)?;
                                    tally.record(t0);
                                    if let Some(v) = got {
                                        tally.found += 1;
                                        tally.bytes += (a.key_size + v.len()) as u64;
                                    }
                                    progress.tick();
                                }
                            }
                            "multireadrandom" => {
                                // As db_bench: ops count keys, the
                                // histogram has one sample per call.
                                let n = per_thread(reads, t);
                                let mut batch = vec![vec![0u8; a.key_size]; a.batch_size];
                                let mut done = 0;
                                while done < n {
                                    let k = (a.batch_size as u64).min(n - done) as usize;
                                    for b in batch.iter_mut().take(k) {
                                        make_key(b, rng.below(a.num));
                                    }
                                    let refs: Vec<&[u8]> =
                                        batch[..k].iter().map(Vec::as_slice).collect();
                                    let t0 = Instant::now();
                                    let got = db.multi_get(&refs, None)?;
                                    tally.record(t0);
                                    tally.ops += k as u64 - 1;
                                    for v in got.iter().flatten() {
                                        tally.found += 1;
                                        tally.bytes += (a.key_size + v.len()) as u64;
                                    }
                                    done += k as u64;
                                    for _ in 0..k {
                                        progress.tick();
                                    }
                                }
                            }
                            "seekrandom" => {
                                let mut it = db.iter(ReadOptions::default());
                                for _ in 0..per_thread(reads, t) {
                                    make_key(&mut key, rng.below(a.num));
                                    let t0 = Instant::now();
                                    it.seek(&key);
                                    let mut n = 0;
                                    while it.valid() && n <= a.seek_nexts {
                                        tally.bytes += (it.key().len() + it.value().len()) as u64;
                                        n += 1;
                                        if n <= a.seek_nexts {
                                            it.next();
                                        }
                                    }
                                    it.status()?;
                                    tally.record(t0);
                                    tally.found += u64::from(n > 0);
                                    progress.tick();
                                }
                            }
                            "readseq" | "readreverse" => {
                                // Each thread reads the key space once (db_bench), up to --reads.
                                let mut it = db.iter(ReadOptions::default());
                                let forward = name == "readseq";
                                if forward {
                                    it.seek_to_first();
                                } else {
                                    it.seek_to_last();
                                }
                                let mut t0 = Instant::now();
                                while it.valid() && tally.ops < reads {
                                    tally.bytes += (it.key().len() + it.value().len()) as u64;
                                    tally.found += 1;
                                    if forward {
                                        it.next();
                                    } else {
                                        it.prev();
                                    }
                                    tally.record(t0);
                                    t0 = Instant::now();
                                    progress.tick();
                                }
                                it.status()?;
                            }
                            other => {
                                return Err(CliError::Usage(format!("unknown benchmark {other}")))
                            }
                        }
                        Ok(tally)
                    })
                })
                .collect();
            let r: Vec<Result<Tally>> = handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(CliError::Usage("a benchmark thread panicked".into()))
                    })
                })
                .collect();
            elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            if let Some(w) = writer {
                if let Ok(Err(e)) = w.join() {
                    return vec![Err(e)];
                }
            }
            r
        });
        progress.finish();
        let mut total = Tally::new()?;
        for r in results {
            total.merge(&r?)?;
        }
        Ok(Some(Outcome {
            name: name.to_string(),
            tally_ops: total.ops,
            found: total.found,
            seconds: elapsed.as_secs_f64(),
            threads,
            bytes: total.bytes,
            hist: total.hist,
        }))
    }
}

/// A progress line on stderr, only when stderr is a terminal.
struct Progress {
    name: String,
    total: u64,
    done: AtomicU64,
    on: bool,
    start: Instant,
}

impl Progress {
    fn new(name: &str, total: u64) -> Progress {
        Progress {
            name: name.to_string(),
            total: total.max(1),
            done: AtomicU64::new(0),
            on: std::io::stderr().is_terminal() && total >= 100_000,
            start: Instant::now(),
        }
    }

    fn tick(&self) {
        if !self.on {
            return;
        }
        let d = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if d.is_multiple_of(self.total / 100 + 1) {
            let pct = d.min(self.total) * 100 / self.total;
            let secs = self.start.elapsed().as_secs_f64();
            let bar = "#".repeat((pct / 4) as usize);
            eprint!(
                "\r{:<12} [{bar:<25}] {pct:>3}% {d}/{} ({:.0} ops/s)",
                self.name,
                self.total,
                d as f64 / secs.max(1e-9)
            );
        }
    }

    fn finish(&self) {
        if self.on {
            eprint!("\r{:<80}\r", "");
        }
    }
}

/// Runs the benchmarks; returns their outcomes (for tests and tools).
pub fn run(a: Args) -> Result<Vec<Outcome>> {
    let names = a.validate()?;
    let tmp;
    let dir = match &a.db {
        Some(d) => d.clone(),
        None => {
            tmp = crate::common::temp_dir("strata-bench")?;
            tmp.path().join("db")
        }
    };
    let storage = storage_for(&a.io, &dir)?;
    if !a.json {
        println!(
            "strata bench: {} keys of {} bytes, values of {} bytes, {} thread(s), compaction {:?}, sync {}, io {}, db {}",
            a.num,
            a.key_size,
            a.value_size,
            a.threads,
            a.compaction_style,
            a.sync,
            a.io,
            dir.display()
        );
    }
    let mut bench = Bench {
        storage,
        dir: dir.clone(),
        db: None,
        keys: KeySet::new(a.num),
        args: a.clone(),
    };
    let first_fresh = matches!(
        names.first().map(String::as_str),
        Some("fillseq" | "fillrandom")
    );
    if a.use_existing_db || first_fresh {
        if a.use_existing_db {
            bench.keys.known.store(false, Ordering::Relaxed);
            bench.db = Some(Db::open(
                bench.storage.clone(),
                &dir,
                Options {
                    create_if_missing: false,
                    ..a.options()
                },
            )?);
        }
    } else {
        bench.fresh()?;
    }
    let profiler = match &a.profile {
        Some(_) => Some(
            pprof::ProfilerGuardBuilder::default()
                .frequency(999)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .map_err(|e| {
                    CliError::Usage(format!("--profile: cannot start the profiler: {e}"))
                })?,
        ),
        None => None,
    };
    let mut outcomes = Vec::new();
    for name in &names {
        if let Some(o) = bench.run_one(name)? {
            o.print(a.histogram, a.json);
            outcomes.push(o);
        }
    }
    if let Some(db) = bench.db.take() {
        if a.statistics {
            db.wait_for_compactions()?;
            println!("{}", db.stats());
        }
        db.close()?;
    }
    if let (Some(guard), Some(path)) = (profiler, &a.profile) {
        let report = guard
            .report()
            .build()
            .map_err(|e| CliError::Usage(format!("--profile: {e}")))?;
        let file = std::fs::File::create(path).map_err(|e| CliError::Local {
            what: format!("create {}", path.display()),
            source: e,
        })?;
        report
            .flamegraph(file)
            .map_err(|e| CliError::Usage(format!("--profile: writing the flamegraph: {e}")))?;
        if !a.json {
            println!("flamegraph written to {}", path.display());
        }
    }
    Ok(outcomes)
}
