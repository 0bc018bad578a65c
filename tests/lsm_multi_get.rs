//! `Db::multi_get` answers exactly what `Db::get` answers, key by key, on
//! every real backend, with and without O_DIRECT table reads, on a
//! database several times larger than its block cache (so the batched
//! reads really go to the files), at the present and at a snapshot; and a
//! damaged block is an error naming the file, never a wrong answer or a
//! panic. (The model test in `lsm_db.rs` runs `multi_get` against a map
//! through flushes, compactions, range deletions and reopens.)

use std::path::Path;
use std::sync::Arc;

use strata::io::rng::Rng;
use strata::io::{DirectSync, StdStorage, StorageRef, UringStorage};
use strata::lsm::table::TableOptions;
use strata::lsm::{Db, Options, WriteOptions};

fn key(i: u64) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

fn value(i: u64, round: u64) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

fn options(direct: bool) -> Options {
    Options {
        write_buffer_size: 256 << 10,
        block_cache_size: 32 << 10,
        use_direct_reads: direct,
        table: TableOptions {
            block_size: 4096,
            ..TableOptions::default()
        },
        ..Options::default()
    }
}

fn backends() -> Vec<(&'static str, StorageRef)> {
    let mut v: Vec<(&'static str, StorageRef)> = vec![("std", Arc::new(StdStorage::new()))];
    match UringStorage::try_new() {
        Ok(u) => v.push(("uring", Arc::new(u.with_direct_sync(DirectSync::RwfDsync)))),
        Err(e) => eprintln!("io_uring unavailable: {e}"),
    }
    v
}

const N: u64 = 12_000;

/// Writes N keys in rounds with flushes and a compaction between, deletes
/// some, range-deletes some, and leaves the last round in the memtable.
fn fill(db: &Db) -> strata::lsm::Snapshot {
    let w = WriteOptions::default();
    for i in 0..N {
        db.put(&key(i), &value(i, 0), w).expect("put");
    }
    db.flush().expect("flush");
    db.compact_range(None, None).expect("compact");
    for i in (0..N).step_by(3) {
        db.put(&key(i), &value(i, 1), w).expect("put");
    }
    for i in (0..N).step_by(7) {
        db.delete(&key(i), w).expect("delete");
    }
    db.flush().expect("flush");
    let snap = db.snapshot();
    db.delete_range(&key(5000), &key(5400), w)
        .expect("delete_range");
    for i in (0..N).step_by(11) {
        db.put(&key(i), &value(i, 2), w).expect("put");
    }
    snap
}

fn check_batches(db: &Db, snap: Option<&strata::lsm::Snapshot>, seed: u64) {
    let mut rng = Rng::new(seed);
    for _ in 0..60 {
        let n = 1 + rng.below(40) as usize;
        // Some keys twice, some absent (past N).
        let keys: Vec<Vec<u8>> = (0..n).map(|_| key(rng.below(N + N / 10))).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let got = db.multi_get(&refs, snap).expect("multi_get");
        for (k, g) in keys.iter().zip(&got) {
            assert_eq!(
                g,
                &db.get(k, snap).expect("get"),
                "{}",
                String::from_utf8_lossy(k)
            );
        }
    }
}

#[test]
fn multi_get_answers_what_get_answers_on_every_backend() {
    for (name, storage) in backends() {
        for direct in [false, true] {
            let tmp = tempfile::tempdir().expect("tmp");
            let db =
                Db::open(storage.clone(), tmp.path().join("db"), options(direct)).expect("open");
            let snap = fill(&db);
            check_batches(&db, None, 1);
            check_batches(&db, Some(&snap), 2);
            let found = db
                .multi_get(
                    &[&key(3)[..], &key(7)[..], &key(5100)[..], &key(N + 5)[..]],
                    None,
                )
                .expect("multi_get");
            assert_eq!(
                found,
                vec![Some(value(3, 1)), None, None, None],
                "{name} direct={direct}"
            );
            drop(snap);
            db.close().expect("close");
        }
    }
}

/// A flipped byte in a table's data block: multi_get fails with the file
/// named (or, for a key the damage does not reach, answers as before).
#[test]
fn a_damaged_block_is_an_error_naming_the_file() {
    for (name, storage) in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("db");
        {
            let db = Db::open(storage.clone(), &dir, options(false)).expect("open");
            for i in 0..N {
                db.put(&key(i), &value(i, 0), WriteOptions::default())
                    .expect("put");
            }
            db.flush().expect("flush");
            db.compact_range(None, None).expect("compact");
            db.close().expect("close");
        }
        let sst = largest_table(&dir);
        let mut bytes = std::fs::read(&sst).expect("read table");
        bytes[100] ^= 0x40;
        std::fs::write(&sst, &bytes).expect("write table");
        let db = Db::open(storage.clone(), &dir, options(false)).expect("reopen");
        let keys: Vec<Vec<u8>> = (0..N).map(key).collect();
        let mut errors = 0;
        for chunk in keys.chunks(32) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            match db.multi_get(&refs, None) {
                Ok(got) => {
                    for (k, g) in chunk.iter().zip(got) {
                        let i: u64 = String::from_utf8_lossy(&k[3..]).parse().expect("num");
                        assert_eq!(g, Some(value(i, 0)), "{name}");
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&sst.file_name().expect("name").to_string_lossy().to_string()),
                        "{name}: {msg}"
                    );
                    errors += 1;
                }
            }
        }
        assert!(errors > 0, "{name}: the damaged block was never reported");
        db.close().expect("close");
    }
}

fn largest_table(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a table")
}
