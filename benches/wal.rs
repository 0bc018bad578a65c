//! Criterion benches of the WAL (figures in BENCHMARKS.md).
//!
//! * `wal_append_100B_never`: 1 thread appending 100-byte records with sync
//!   policy `Never`, next to a plain buffered write loop of the same bytes
//!   into a file in the same directory (the disk's sequential write rate as
//!   a buffered writer sees it), per backend.
//! * `wal_sync_always`: synced appends from 1, 4 and 16 threads (group
//!   commit), per backend. Latency percentiles come from `strata wal-bench`,
//!   which records every append in a histogram.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::io::{StdStorage, StorageRef, UringStorage};
use strata::wal::{Preallocate, SyncPolicy, Wal, WalOptions};

const RECORD: usize = 100;

fn backends() -> Vec<(&'static str, StorageRef)> {
    let mut v: Vec<(&'static str, StorageRef)> = vec![("std", Arc::new(StdStorage::new()))];
    match UringStorage::try_new() {
        Ok(u) => v.push(("uring", Arc::new(u))),
        Err(e) => eprintln!("io_uring unavailable, benchmarking std only: {e}"),
    }
    v
}

fn bench_dir() -> tempfile::TempDir {
    // Next to the build, on the same disk as a user's data would be, not tmpfs.
    tempfile::Builder::new()
        .prefix("strata-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

fn open(storage: &StorageRef, dir: &Path, opts: WalOptions) -> Wal {
    Wal::open(storage.clone(), dir, opts, |_, _| Ok(()))
        .expect("open WAL")
        .0
}

fn append_never(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_100B_never");
    g.throughput(Throughput::Bytes(RECORD as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    let record = vec![0xA5u8; RECORD];

    let tmp = bench_dir();
    {
        let path = tmp.path().join("raw");
        let file = std::fs::File::create(&path).expect("create");
        let mut w = std::io::BufWriter::with_capacity(64 << 10, file);
        let mut written = 0u64;
        g.bench_function("raw_buffered_write_loop", |b| {
            b.iter(|| {
                w.write_all(&record).expect("write");
                written += RECORD as u64;
                if written >= 256 << 20 {
                    // Keep the file bounded; rewinding costs one seek per 256 MiB.
                    w.flush().expect("flush");
                    w.get_ref().set_len(0).expect("truncate");
                    std::io::Seek::rewind(w.get_mut()).expect("rewind");
                    written = 0;
                }
            })
        });
    }

    for (name, storage) in backends() {
        for (label, write_buffer) in [("buffered_64k", 64 << 10), ("write_per_append", 0)] {
            let dir = tmp.path().join(format!("{name}-{label}"));
            let wal = open(
                &storage,
                &dir,
                WalOptions {
                    sync: SyncPolicy::Never,
                    write_buffer,
                    preallocate: Preallocate::Allocate,
                    recycle_segments: 4,
                    ..WalOptions::default()
                },
            );
            g.bench_function(BenchmarkId::new(label, name), |b| {
                b.iter(|| {
                    let lsn = wal.append(&record).expect("append");
                    if lsn.is_multiple_of(1_000_000) {
                        // Bound the disk used: release old segments for reuse.
                        wal.purge_before(lsn).expect("purge");
                    }
                })
            });
            wal.close().expect("close");
        }
    }
    g.finish();
}

fn sync_always(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_sync_always");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    let tmp = bench_dir();
    for (name, storage) in backends() {
        for threads in [1usize, 4, 16] {
            let dir = tmp.path().join(format!("{name}-{threads}"));
            let wal = open(
                &storage,
                &dir,
                WalOptions {
                    sync: SyncPolicy::Always,
                    preallocate: Preallocate::ZeroFill,
                    ..WalOptions::default()
                },
            );
            g.bench_function(BenchmarkId::new(name, format!("{threads}_threads")), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads as u64);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let wal = wal.clone();
                            s.spawn(move || {
                                let record = [0x5Au8; RECORD];
                                for _ in 0..per {
                                    wal.append(&record).expect("append");
                                }
                            });
                        }
                    });
                    // Report per op, counting what was actually appended.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * threads as u64) as f64)
                })
            });
            wal.close().expect("close");
        }
    }
    g.finish();
}

/// A storage that accepts and drops every write: what the WAL itself costs
/// per append, without the kernel.
mod null {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use strata::io::{File, FileLock, FileRef, OpenOptions, Result, Storage};

    pub struct NullStorage;
    struct NullFile(PathBuf);

    impl Storage for NullStorage {
        fn name(&self) -> &'static str {
            "null"
        }
        fn open(&self, path: &Path, _: OpenOptions) -> Result<FileRef> {
            Ok(Arc::new(NullFile(path.to_path_buf())))
        }
        fn remove_file(&self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn rename(&self, _: &Path, _: &Path) -> Result<()> {
            Ok(())
        }
        fn list_dir(&self, _: &Path) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn create_dir_all(&self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn sync_dir(&self, _: &Path) -> Result<()> {
            Ok(())
        }
        fn exists(&self, _: &Path) -> Result<bool> {
            Ok(false)
        }
        fn lock(&self, _: &Path) -> Result<FileLock> {
            Ok(FileLock::new(Box::new(())))
        }
    }

    impl File for NullFile {
        fn path(&self) -> &Path {
            &self.0
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> Result<usize> {
            Ok(0)
        }
        fn write_at(&self, _: &[u8], _: u64) -> Result<()> {
            Ok(())
        }
        fn sync_data(&self) -> Result<()> {
            Ok(())
        }
        fn sync_all(&self) -> Result<()> {
            Ok(())
        }
        fn len(&self) -> Result<u64> {
            Ok(0)
        }
        fn set_len(&self, _: u64) -> Result<()> {
            Ok(())
        }
        fn preallocate(&self, _: u64) -> Result<()> {
            Ok(())
        }
    }
}

fn append_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_cost");
    g.throughput(Throughput::Bytes(RECORD as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    let record = vec![0x3Cu8; RECORD];
    let storage: StorageRef = Arc::new(null::NullStorage);
    for (label, write_buffer) in [
        ("null_storage_buffered_64k", 64 << 10),
        ("null_storage_write_per_append", 0),
    ] {
        let wal = open(
            &storage,
            Path::new("/null"),
            WalOptions {
                sync: SyncPolicy::Never,
                write_buffer,
                // Segments never fill up as far as this WAL knows: no rotation.
                segment_size: u64::MAX,
                ..WalOptions::default()
            },
        );
        g.bench_function(label, |b| b.iter(|| wal.append(&record).expect("append")));
        wal.close().expect("close");
    }
    g.finish();
}

criterion_group!(benches, append_never, sync_always, append_cost);
criterion_main!(benches);
