//! Compaction under load: both styles keep every value while compactions
//! run many times beside readers and writers; a held snapshot keeps its
//! versions and releasing it lets compaction reclaim the space; write
//! stalls hold L0 back instead of letting it grow without bound.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

mod common;

use common::table_bytes;
use strata::io::fault::FaultStorage;
use strata::io::rng::Rng;
use strata::io::StorageRef;
use strata::lsm::table::TableOptions;
use strata::lsm::{CompactionStyle, Db, Error, Options, WriteOptions};

fn options(style: CompactionStyle) -> Options {
    Options {
        write_buffer_size: 4096,
        target_file_size: 8192,
        compaction_style: style,
        num_levels: 5,
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 8,
        level0_stop_writes_trigger: 12,
        max_bytes_for_level_base: 16 << 10,
        max_bytes_for_level_multiplier: 4,
        max_background_compactions: 2,
        table: TableOptions {
            block_size: 512,
            ..TableOptions::default()
        },
        ..Options::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// Random overwrites and deletes from a writer while a reader checks
/// keys it knows cannot change; then every key against the model.
fn churn(style: CompactionStyle, seed: u64) {
    let fault = FaultStorage::new(seed);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage.clone(), "/db", options(style)).expect("open");
    // Keys 0..100 are written once and then only read.
    for i in 0..100 {
        db.put(&key(i), b"fixed", WriteOptions::default())
            .expect("put");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (db, stop, reads) = (db.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 1);
            while !stop.load(Ordering::Relaxed) {
                let i = rng.below(100);
                assert_eq!(
                    db.get(&key(i), None).expect("get").as_deref(),
                    Some(&b"fixed"[..]),
                    "key {i} changed while compactions ran"
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = Rng::new(seed);
    for n in 0..6000u64 {
        let k = key(100 + rng.below(800));
        if rng.below(10) == 0 {
            db.delete(&k, WriteOptions::default()).expect("delete");
            model.remove(&k);
        } else {
            let v = format!("v{n}-{}", "x".repeat(rng.below(60) as usize)).into_bytes();
            db.put(&k, &v, WriteOptions::default()).expect("put");
            model.insert(k, v);
        }
    }
    db.wait_for_compactions().expect("idle");
    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader");
    let s = db.stats();
    assert!(s.compactions >= 10, "compactions must run many times: {s}");
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(
        s.levels[0].files < 2,
        "idle means L0 is under its trigger: {s}"
    );
    if style == CompactionStyle::Level {
        assert!(
            s.levels.iter().skip(1).filter(|l| l.files > 0).count() >= 2,
            "leveled data spreads over levels: {s}"
        );
    }
    let check = |db: &Db| {
        for i in 100..900 {
            assert_eq!(
                db.get(&key(i), None).expect("get"),
                model.get(&key(i)).cloned(),
                "key {i}"
            );
        }
        let mut it = db.iter(Default::default());
        it.seek(&key(100));
        let scanned: Vec<(Vec<u8>, Vec<u8>)> = std::iter::from_fn(|| {
            it.valid().then(|| {
                let e = (it.key().to_vec(), it.value().to_vec());
                it.next();
                e
            })
        })
        .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(scanned, want);
    };
    check(&db);
    db.close().expect("close");
    drop(db);
    let db = Db::open(storage, "/db", options(style)).expect("reopen");
    check(&db);
    db.close().expect("close");
}

#[test]
fn leveled_compaction_keeps_every_value_under_churn() {
    churn(CompactionStyle::Level, 21);
}

#[test]
fn tiered_compaction_keeps_every_value_under_churn() {
    churn(CompactionStyle::Universal, 22);
}

fn snapshot_reclaim(style: CompactionStyle) {
    let fault = FaultStorage::new(30);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage, "/db", options(style)).expect("open");
    for i in 0..500 {
        db.put(
            &key(i),
            format!("old{i}").as_bytes(),
            WriteOptions::default(),
        )
        .expect("put");
    }
    let snap = db.snapshot();
    let mut rng = Rng::new(31);
    for n in 0..20_000u64 {
        let i = rng.below(500);
        db.put(
            &key(i),
            format!("new{n}").as_bytes(),
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.wait_for_compactions().expect("idle");
    assert!(db.stats().compactions > 10);
    for i in 0..500 {
        assert_eq!(
            db.get(&key(i), Some(&snap)).expect("get"),
            Some(format!("old{i}").into_bytes()),
            "the snapshot lost key {i}"
        );
    }
    db.compact_range(None, None).expect("compact");
    let held = table_bytes(&fault);
    drop(snap);
    db.compact_range(None, None).expect("compact");
    let released = table_bytes(&fault);
    // Two versions per key while the snapshot lives, one after.
    assert!(
        released * 10 < held * 7,
        "releasing the snapshot frees its versions: {held} -> {released} bytes"
    );
    db.close().expect("close");
}

#[test]
fn a_held_snapshot_keeps_old_values_through_compactions_and_its_release_frees_them() {
    snapshot_reclaim(CompactionStyle::Level);
    snapshot_reclaim(CompactionStyle::Universal);
}

#[test]
fn write_stalls_bound_l0_and_are_counted() {
    let fault = FaultStorage::new(40);
    let storage: StorageRef = Arc::new(fault);
    // Compaction crawls at 256 KiB/s, so writers outrun it.
    let opts = Options {
        level0_file_num_compaction_trigger: 2,
        level0_slowdown_writes_trigger: 3,
        level0_stop_writes_trigger: 5,
        max_background_compactions: 1,
        rate_limit_bytes_per_sec: 256 << 10,
        delayed_write_rate: 1 << 20,
        ..options(CompactionStyle::Level)
    };
    let db = Db::open(storage, "/db", opts).expect("open");
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (db, watching) = (db.clone(), watching.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while watching.load(Ordering::Relaxed) {
                most = most.max(db.level_file_counts()[0]);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            most
        })
    };
    let mut refused = 0;
    for n in 0..8000u64 {
        let k = key(n % 3000);
        let v = [b'v'; 100];
        // Every tenth write would rather fail than wait.
        let no_slowdown = n % 10 == 0;
        match db.put(
            &k,
            &v,
            WriteOptions {
                no_slowdown,
                ..WriteOptions::default()
            },
        ) {
            Ok(()) => {}
            Err(Error::WriteStall(_)) if no_slowdown => refused += 1,
            Err(e) => panic!("write {n}: {e}"),
        }
    }
    watching.store(false, Ordering::Relaxed);
    let most_l0 = watcher.join().expect("watcher");
    let s = db.stats();
    assert!(s.stalls.count() > 0 && s.stalls.micros() > 0, "{s}");
    assert!(refused > 0, "no_slowdown writes are refused during a stall");
    // The stop trigger, plus the memtable already queued for flushing.
    assert!(most_l0 <= 6, "L0 reached {most_l0} files: {s}");
    assert!(s.rate_limit_micros > 0, "{s}");
    let text = s.to_string();
    assert!(
        text.contains("write stalls:") && text.contains("l0-"),
        "{text}"
    );
    db.close().expect("close");
}
