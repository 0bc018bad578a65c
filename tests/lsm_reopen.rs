//! Reopening is cheap: a database opened, written once and closed a
//! thousand times (a CLI, a test suite, a cron job) stays small on disk and
//! its opens do not grow slower, because each open flushes what the WAL
//! replayed and releases the segments, `close` flushes the memtable, and
//! the manifest starts each open from a snapshot. Std backend, real
//! directory: disk usage is what the file system allocated.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use strata::io::{StdStorage, StorageRef};
use strata::lsm::{Db, Options, WriteOptions};

/// Bytes the file system allocated for everything under `dir`, and files.
fn usage(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        let m = e.metadata().expect("metadata");
        if m.is_dir() {
            let (b, f) = usage(&e.path());
            bytes += b + m.blocks() * 512;
            files += f;
        } else {
            bytes += m.blocks() * 512;
            files += 1;
        }
    }
    (bytes, files)
}

/// Values of varying length: a write into a recycled segment is sometimes
/// shorter than the old one it overwrites.
fn value(i: u32) -> String {
    format!("value{i}-{}", "x".repeat((i as usize * 37) % 50))
}

/// A quarter of the lives close cleanly (the memtable is flushed at close);
/// the others leave their write in the WAL, as a process killed after its
/// synced write returned does, so the next open replays and flushes it.
#[test]
fn a_thousand_short_lived_opens_stay_small_and_replay_nothing_old() {
    const LIVES: u32 = 1000;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let storage: StorageRef = Arc::new(StdStorage::new());
    let mut first_replayed = None;
    for i in 0..LIVES {
        // Three lives in a row that leave their write in the WAL: the
        // third writes into a recycled segment file and the next open
        // reads it back.
        let killed = i % 4 != 0;
        let opts = Options {
            avoid_flush_during_shutdown: killed,
            ..Options::default()
        };
        let db = Db::open(storage.clone(), &dir, opts).expect("open");
        let r = db.recovery();
        // At most the one write of the life before is replayed, never the
        // history.
        assert!(
            r.wal_batches_replayed <= 1,
            "open {i} replayed {} batches",
            r.wal_batches_replayed
        );
        // Recycled segment files still hold an old segment's bytes after
        // the new entries: they must read as the end, not as a torn tail.
        assert_eq!(r.wal_cut, None, "open {i}");
        if i == 1 {
            first_replayed = Some(r.wal_batches_replayed);
        }
        assert!(
            db.wal_segment_count() <= 1,
            "open {i}: {} WAL segments live ({:?}, {:?})",
            db.wal_segment_count(),
            std::fs::read_dir(dir.join("wal"))
                .expect("ls")
                .map(|e| e.expect("e").file_name())
                .collect::<Vec<_>>(),
            db.recovery()
        );
        db.put(
            format!("key{i:05}").as_bytes(),
            value(i).as_bytes(),
            WriteOptions::sync(true),
        )
        .expect("put");
        db.close().expect("close");
        drop(db);
    }
    assert_eq!(
        first_replayed,
        Some(0),
        "a clean close leaves nothing to replay"
    );
    let (bytes, files) = usage(&dir);
    assert!(
        bytes < 16 << 20,
        "{LIVES} opens left {bytes} bytes in {files} files"
    );
    let db = Db::open(storage, &dir, Options::default()).expect("open");
    for i in 0..LIVES {
        assert_eq!(
            db.get(format!("key{i:05}").as_bytes(), None).expect("get"),
            Some(value(i).into_bytes()),
            "key {i}"
        );
    }
    // Compactions run between the short lives: L0 does not pile up with a
    // table per open. (Increasing keys never overlap, so the L0 merges'
    // outputs stay side by side in the last level: a table per four opens.)
    assert!(
        db.level_file_counts()[0] <= Options::default().level0_stop_writes_trigger
            && db.table_count() < LIVES as usize / 2,
        "{} tables after {LIVES} opens (per level {:?})",
        db.table_count(),
        db.level_file_counts()
    );
}

/// A clean close leaves nothing for the next open to read back: the
/// memtable goes to a table and the WAL is emptied (old and recycled
/// segments deleted, one fresh segment), so the next open neither replays
/// nor reads megabytes of log.
#[test]
fn a_clean_close_leaves_an_empty_wal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    let storage: StorageRef = Arc::new(StdStorage::new());
    let opts = Options {
        write_buffer_size: 4 << 20,
        ..Options::default()
    };
    let db = Db::open(storage.clone(), &dir, opts.clone()).expect("open");
    let value = vec![b'v'; 1000];
    for i in 0..12_000u32 {
        db.put(
            format!("k{i:06}").as_bytes(),
            &value,
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.close().expect("close");
    drop(db);
    let wal: Vec<(String, u64)> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|e| {
            let e = e.expect("entry");
            let len = e.metadata().expect("metadata").len();
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect();
    assert_eq!(wal.len(), 1, "one segment, no recycled files: {wal:?}");
    assert!(wal[0].1 <= 1 << 20, "a fresh segment: {wal:?}");
    let db = Db::open(storage, &dir, opts).expect("open");
    assert_eq!(db.recovery().wal_batches_replayed, 0);
    assert_eq!(
        db.get(b"k011999", None).expect("get"),
        Some(value.clone()),
        "the data is in tables"
    );
}
