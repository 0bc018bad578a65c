//! Criterion benches of the LSM core (figures in BENCHMARKS.md): memtable
//! insert, block encode/decode, table point lookups (hit, and miss with and
//! without the bloom filter), and scans. 16-byte keys, 100-byte values, as
//! in db_bench.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strata::io::{OpenOptions, StdStorage, StorageRef};
use strata::lsm::cache::BlockCache;
use strata::lsm::key::{self, Kind};
use strata::lsm::memtable::Memtable;
use strata::lsm::table::block::{Block, BlockBuilder};
use strata::lsm::table::{Lookup, Table, TableBuilder, TableOptions};
use strata::lsm::{Db, Options, ReadOptions, WriteOptions};

const N: u64 = 100_000;

fn user_key(i: u64) -> [u8; 16] {
    // db_bench's shape: an 8-byte big-endian integer padded to 16 bytes.
    let mut k = [b'0'; 16];
    k[..8].copy_from_slice(&i.to_be_bytes());
    k
}

fn scramble(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % N
}

fn memtable_insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("memtable");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    let value = [7u8; 100];
    g.bench_function("insert_random", |b| {
        let mem = Memtable::new();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            mem.insert(&user_key(scramble(i) + i * N), i, Kind::Put, &value);
        })
    });
    g.finish();
}

fn block_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("block");
    let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..34u64)
        .map(|i| (key::encode(&user_key(i), 1, Kind::Put), vec![3u8; 100]))
        .collect();
    let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("encode_4k", |b| {
        let mut builder = BlockBuilder::new(16);
        b.iter(|| {
            for (k, v) in &entries {
                builder.add(k, v);
            }
            builder.finish()
        })
    });
    let mut builder = BlockBuilder::new(16);
    for (k, v) in &entries {
        builder.add(k, v);
    }
    let raw: Arc<[u8]> = builder.finish().into();
    g.bench_function("decode_and_scan_4k", |b| {
        b.iter(|| {
            let block = Block::new(raw.clone()).expect("block");
            let mut it = block.iter(key::compare);
            it.seek_to_first();
            let mut n = 0;
            while it.valid() {
                n += it.value().len();
                it.next();
            }
            n
        })
    });
    g.finish();
}

fn build_table(storage: &StorageRef, dir: &Path, bloom_bits: u32) -> Arc<Table> {
    let path = dir.join(format!("bench-{bloom_bits}.sst"));
    let f = storage
        .open(
            &path,
            OpenOptions {
                create: true,
                truncate: true,
                ..OpenOptions::default()
            },
        )
        .expect("create");
    let mut b = TableBuilder::new(
        f,
        TableOptions {
            bloom_bits_per_key: bloom_bits,
            ..TableOptions::default()
        },
    );
    for i in 0..N {
        b.add(
            &key::encode(&user_key(i * 2), i + 1, Kind::Put),
            &[5u8; 100],
        )
        .expect("add");
    }
    b.finish().expect("finish");
    let f = storage.open(&path, OpenOptions::existing()).expect("open");
    Arc::new(
        Table::open_cached(
            f,
            Arc::new(BlockCache::new(64 << 20)),
            u64::from(bloom_bits),
        )
        .expect("table"),
    )
}

fn table_lookups(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .prefix("strata-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tmp");
    let storage: StorageRef = Arc::new(StdStorage::new());
    let mut g = c.benchmark_group("table_get");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for bloom in [10u32, 0] {
        let t = build_table(&storage, tmp.path(), bloom);
        let mut i = 0u64;
        g.bench_function(BenchmarkId::new("hit", format!("bloom{bloom}")), |b| {
            b.iter(|| {
                i += 1;
                let r = t
                    .get(&user_key(scramble(i) * 2), u64::MAX >> 8)
                    .expect("get");
                assert!(matches!(r, Lookup::Value(_)));
            })
        });
        g.bench_function(BenchmarkId::new("miss", format!("bloom{bloom}")), |b| {
            b.iter(|| {
                i += 1;
                t.get(&user_key(scramble(i) * 2 + 1), u64::MAX >> 8)
                    .expect("get")
            })
        });
    }
    g.finish();
    let t = build_table(&storage, tmp.path(), 10);
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("table_100k", |b| {
        b.iter(|| {
            let mut it = t.iter();
            it.seek_to_first();
            let mut n = 0u64;
            while it.valid() {
                n += 1;
                it.next();
            }
            assert_eq!(n, N);
        })
    });
    let db_dir = tmp.path().join("db");
    let db = Db::open(
        storage.clone(),
        &db_dir,
        Options {
            write_buffer_size: 4 << 20,
            ..Options::default()
        },
    )
    .expect("db");
    for i in 0..N {
        db.put(&user_key(scramble(i)), &[9u8; 100], WriteOptions::default())
            .expect("put");
    }
    db.compact_range(None, None).expect("compact");
    g.bench_function("db_iter_100k", |b| {
        b.iter(|| {
            let mut it = db.iter(ReadOptions::default());
            it.seek_to_first();
            let mut n = 0u64;
            while it.valid() {
                n += 1;
                it.next();
            }
            n
        })
    });
    g.finish();
    db.close().expect("close");
}

criterion_group!(benches, memtable_insert, block_codec, table_lookups);
criterion_main!(benches);
