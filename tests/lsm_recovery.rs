//! Recovery's refusals and repairs: directories that are not databases,
//! locks, damaged or missing tables, manifests and WALs cut or holding what
//! cannot be applied (each refused naming the file and offset, the refusal
//! changing nothing), reused LSNs after a lost WAL tail, a creation cut
//! short, and stopped components keeping their errno.

use std::path::Path;
use std::sync::Arc;

mod common;

use common::small_options;
use strata::io::fault::{CrashKeep, Errno, FaultStorage, OpClass};
use strata::io::{OpenOptions, Storage, StorageRef};
use strata::lsm::{Db, Error, Options, WriteBatch, WriteOptions};

#[test]
fn a_directory_that_is_not_a_database_is_refused() {
    let fault = FaultStorage::new(9);
    fault.create_dir_all(Path::new("/stuff")).expect("mkdir");
    fault
        .install(Path::new("/stuff/notes.txt"), b"hello")
        .expect("file");
    let storage: StorageRef = Arc::new(fault);
    let err = Db::open(storage.clone(), "/stuff", Options::default())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("not a Strata database"), "{err}");
    let err = Db::open(
        storage,
        "/nothing",
        Options {
            create_if_missing: false,
            ..Options::default()
        },
    )
    .err()
    .expect("must fail");
    assert!(err.to_string().contains("no database"), "{err}");
}

#[test]
fn a_locked_database_is_refused_until_closed() {
    let storage: StorageRef = Arc::new(FaultStorage::new(10));
    let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
    let err = Db::open(storage.clone(), "/db", Options::default())
        .err()
        .expect("second open fails");
    assert!(err.to_string().contains("open in another process"), "{err}");
    db.close().expect("close");
    assert!(
        db.put(b"k", b"v", WriteOptions::default()).is_err(),
        "a closed database refuses writes"
    );
    assert!(db.flush().is_err());
    drop(db);
    let db = Db::open(storage, "/db", Options::default()).expect("open after close");
    db.close().expect("close");
}

#[test]
fn a_missing_or_damaged_table_is_corruption_naming_the_file() {
    let fault = FaultStorage::new(11);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage.clone(), "/db", small_options()).expect("open");
    for i in 0..200u32 {
        db.put(
            format!("k{i}").as_bytes(),
            &[7u8; 40],
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.flush().expect("flush");
    assert!(db.table_count() > 0);
    db.close().expect("close");
    drop(db);
    let tables: Vec<String> = storage
        .list_dir(Path::new("/db"))
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".sst"))
        .collect();
    let victim = Path::new("/db").join(&tables[0]);
    // A flipped bit in the footer.
    let len = fault.contents(&victim).expect("contents").len() as u64;
    fault.corrupt(&victim, len - 20, 3).expect("flip");
    match Db::open(storage.clone(), "/db", small_options()) {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, victim),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("damaged table accepted"),
    }
    fault.corrupt(&victim, len - 20, 3).expect("flip back");
    storage.remove_file(&victim).expect("remove");
    match Db::open(storage, "/db", small_options()) {
        Err(Error::Corruption { path, reason, .. }) => {
            assert_eq!(path, victim);
            assert!(reason.contains("missing"), "{reason}");
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("missing table accepted"),
    }
    let _ = OpenOptions::existing();
}

/// Damage that cuts the manifest's last edit reads as a torn tail; if that
/// edit was a flush that let the WAL release its segments, the older state
/// would silently lack those writes. The open is refused instead, naming
/// the gap and the cut, and it changes nothing: with the file put back,
/// the database opens whole.
#[test]
fn a_manifest_that_lost_a_flush_edit_is_refused_and_the_refusal_changes_nothing() {
    let fault = FaultStorage::new(12);
    let storage: StorageRef = Arc::new(fault.clone());
    let put = |db: &Db, i: u32| {
        db.put(
            format!("k{i:03}").as_bytes(),
            format!("v{i}").as_bytes(),
            WriteOptions::sync(true),
        )
        .expect("put");
    };
    // Life 1 leaves its writes in WAL segment 1.
    let db = Db::open(storage.clone(), "/db", wal_kept()).expect("open");
    (0..50).for_each(|i| put(&db, i));
    db.close().expect("close");
    drop(db);
    // Life 2's open replays segment 1 and flushes it to a table, which
    // releases the segment.
    let db = Db::open(storage.clone(), "/db", wal_kept()).expect("open");
    assert_eq!(db.recovery().wal_batches_replayed, 50);
    assert_eq!(
        db.wal_segment_count(),
        1,
        "the replayed segment is released"
    );
    db.close().expect("close");
    drop(db);

    // One byte off the end tears the flush's edit.
    let (seg, original) = cut_last_manifest_byte(&fault);
    match Db::open(storage.clone(), "/db", wal_kept()) {
        Err(Error::Corruption { path, reason, .. }) => {
            assert!(path.starts_with("/db/wal"), "{}", path.display());
            assert!(reason.contains("WAL starts at LSN"), "{reason}");
            assert!(reason.contains("the manifest was cut"), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a manifest missing a flush edit was accepted"),
    }
    // The refused open cut nothing and deleted no table.
    fault.install(&seg, &original).expect("restore");
    let db = Db::open(storage, "/db", wal_kept()).expect("open after restore");
    assert_eq!(db.recovery().manifest_cut, None);
    assert_eq!(db.recovery().orphans_deleted, 0);
    for i in 0..50u32 {
        assert_eq!(
            db.get(format!("k{i:03}").as_bytes(), None).expect("get"),
            Some(format!("v{i}").into_bytes()),
            "key {i}"
        );
    }
}

/// The newest `.wal` segment in `dir`.
fn newest_segment(fault: &FaultStorage, dir: &str) -> std::path::PathBuf {
    // A handle of the current "process" (the given one may predate a crash).
    let fault = fault.reopen();
    let last = fault
        .list_dir(Path::new(dir))
        .expect("list")
        .into_iter()
        .rfind(|n| n.ends_with(".wal"))
        .expect("a segment");
    Path::new(dir).join(last)
}

/// Cuts the last byte of the newest manifest segment of `/db` (tearing its
/// last edit); returns the segment and its bytes before the cut.
fn cut_last_manifest_byte(fault: &FaultStorage) -> (std::path::PathBuf, Vec<u8>) {
    let seg = newest_segment(fault, "/db/manifest");
    let original = fault.contents(&seg).expect("contents");
    fault
        .install(&seg, &original[..original.len() - 1])
        .expect("cut");
    (seg, original)
}

/// Options whose `close` leaves the memtable in the WAL, for tests of WAL
/// recovery.
fn wal_kept() -> Options {
    Options {
        avoid_flush_during_shutdown: true,
        ..Options::default()
    }
}

/// A damaged last WAL record is indistinguishable from a torn write: the
/// log is cut there, the records before it are recovered, and the open
/// says so in `Db::recovery`.
#[test]
fn a_torn_wal_tail_is_cut_and_reported() {
    let fault = FaultStorage::new(13);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage.clone(), "/db", wal_kept()).expect("open");
    for i in 0..10u32 {
        db.put(format!("k{i}").as_bytes(), b"v", WriteOptions::sync(true))
            .expect("put");
    }
    db.close().expect("close");
    drop(db);
    let seg = newest_segment(&fault, "/db/wal");
    let mut bytes = fault.contents(&seg).expect("contents");
    let end = bytes.iter().rposition(|&b| b != 0).expect("records");
    bytes[end] ^= 0xFF;
    fault.install(&seg, &bytes).expect("damage");
    let db = Db::open(storage, "/db", wal_kept()).expect("open");
    let r = db.recovery().clone();
    let cut = r.wal_cut.expect("the cut is reported");
    assert_eq!(cut.path, seg);
    assert_eq!(r.wal_batches_replayed, 9);
    assert_eq!(db.get(b"k8", None).expect("get"), Some(b"v".to_vec()));
    assert_eq!(db.get(b"k9", None).expect("get"), None);
}

/// Appends raw records to the WAL of the closed database at `/db`, as a
/// broken or hand-made writer would (their checksums are good).
fn append_raw_wal_records(storage: &StorageRef, records: &[Vec<u8>]) {
    let (wal, _) = strata::wal::Wal::open(
        storage.clone(),
        "/db/wal",
        strata::wal::WalOptions::default(),
        |_, _| Ok(()),
    )
    .expect("open wal");
    for r in records {
        wal.append(r).expect("append");
    }
    wal.close().expect("close wal");
}

/// A WAL record whose checksum is good but which the engine cannot apply
/// (an empty batch, sequence number 0, numbers past 2^56, trailing bytes)
/// refuses the open with corruption naming the segment and the offset, and
/// changes nothing.
#[test]
fn a_wal_record_that_is_not_a_valid_batch_is_corruption_naming_file_and_offset() {
    let mut empty = Vec::new();
    strata::lsm::wal::format::put_varint(&mut empty, 5);
    strata::lsm::wal::format::put_varint(&mut empty, 0);
    let mut b = WriteBatch::new();
    b.put(b"k", b"v");
    let mut trailing = b.encode(7);
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", empty, "no entries"),
        ("seqno 0", b.encode(0), "sequence number 0"),
        (
            "past 2^56",
            b.encode(strata::lsm::key::MAX_SEQNO + 1),
            "pass 2^56",
        ),
        ("trailing", trailing, "trailing bytes"),
    ];
    for (name, rec, want) in cases {
        let fault = FaultStorage::new(21);
        let storage: StorageRef = Arc::new(fault.clone());
        let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
        db.put(b"a", b"1", WriteOptions::sync(true)).expect("put");
        db.close().expect("close");
        drop(db);
        append_raw_wal_records(&storage, &[rec]);
        match Db::open(storage.clone(), "/db", Options::default()) {
            Err(Error::Corruption {
                path,
                offset,
                reason,
            }) => {
                assert!(
                    path.starts_with("/db/wal") && path.extension().is_some_and(|e| e == "wal"),
                    "{name}: {}",
                    path.display()
                );
                assert!(offset >= 32, "{name}: offset {offset} is inside the header");
                assert!(reason.contains(want), "{name}: {reason}");
            }
            Err(e) => panic!("{name}: wrong error: {e}"),
            Ok(_) => panic!("{name}: a bad batch was applied"),
        }
        // Refused twice the same way: the refusal changed nothing.
        assert!(
            matches!(
                Db::open(storage, "/db", Options::default()),
                Err(Error::Corruption { .. })
            ),
            "{name}"
        );
    }
}

/// Sequence numbers have 56 bits: a write that would pass the last one is
/// refused with an error instead of being stored under a clamped number.
#[test]
fn a_write_past_the_last_sequence_number_is_refused() {
    let fault = FaultStorage::new(22);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
    db.close().expect("close");
    drop(db);
    let max = strata::lsm::key::MAX_SEQNO;
    let mut b = WriteBatch::new();
    b.put(b"last", b"v");
    append_raw_wal_records(&storage, &[b.encode(max - 1)]);
    let db = Db::open(storage, "/db", Options::default()).expect("open");
    assert_eq!(db.get(b"last", None).expect("get"), Some(b"v".to_vec()));
    db.put(b"one", b"more", WriteOptions::default())
        .expect("the last number is usable");
    let err = db
        .put(b"two", b"many", WriteOptions::default())
        .expect_err("past 2^56");
    assert!(
        err.to_string().contains("sequence numbers exhausted"),
        "{err}"
    );
    assert_eq!(db.get(b"one", None).expect("get"), Some(b"more".to_vec()));
    assert_eq!(db.get(b"two", None).expect("get"), None);
}

/// Each open starts the manifest from a snapshot and releases the older
/// segments. Damage that cuts that snapshot must not read as a torn tail
/// of an empty manifest: the open would serve an empty database and
/// delete every table as an orphan. It is refused, naming the manifest,
/// and the refusal changes nothing.
#[test]
fn a_manifest_whose_snapshot_is_cut_is_refused_not_read_as_empty() {
    let fault = FaultStorage::new(23);
    let storage: StorageRef = Arc::new(fault.clone());
    for life in 0..3u32 {
        let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
        db.put(
            format!("k{life}").as_bytes(),
            b"v",
            WriteOptions::sync(true),
        )
        .expect("put");
        db.close().expect("close");
    }
    let mdir = Path::new("/db/manifest");
    let segs: Vec<String> = storage
        .list_dir(mdir)
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert_eq!(
        segs.len(),
        1,
        "older manifest segments were released: {segs:?}"
    );
    let seg = mdir.join(&segs[0]);
    let original = fault.contents(&seg).expect("contents");
    // Past the segment header, into the first record (the snapshot).
    fault.install(&seg, &original[..40]).expect("cut");
    match Db::open(storage.clone(), "/db", Options::default()) {
        Err(Error::Corruption { path, reason, .. }) => {
            assert_eq!(path, seg);
            assert!(reason.contains("no readable snapshot"), "{reason}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(db) => panic!(
            "opened with a lost snapshot: {} tables, k0 = {:?}",
            db.table_count(),
            db.get(b"k0", None)
        ),
    }
    fault.install(&seg, &original).expect("restore");
    let db = Db::open(storage, "/db", Options::default()).expect("open after restore");
    for life in 0..3u32 {
        assert_eq!(
            db.get(format!("k{life}").as_bytes(), None).expect("get"),
            Some(b"v".to_vec())
        );
    }
}

/// A life of `/db` whose unsynced writes (`a000`..`a099`, after a synced
/// `first` if `synced_first`) reach a table by a flush, then a power cut
/// that drops the WAL tail holding them; the next life's storage.
fn flush_then_lose_the_wal_tail(fault: &FaultStorage, synced_first: bool) -> StorageRef {
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage, "/db", Options::default()).expect("open");
    if synced_first {
        db.put(b"first", b"1", WriteOptions::sync(true))
            .expect("put");
    }
    for i in 0..100u32 {
        db.put(format!("a{i:03}").as_bytes(), b"x", WriteOptions::default())
            .expect("put");
    }
    db.flush().expect("flush");
    fault.crash();
    drop(db);
    Arc::new(fault.reopen())
}

/// A power cut can take a WAL tail that a flush already put in a table;
/// the next life then hands out those LSNs again, below the manifest's
/// log LSN. Found by `strata torture --corrupt` (a WAL cut at damage does
/// the same): an open released WAL segments by the manifest's log LSN, so
/// records of the new life that an open had replayed but not flushed were
/// dropped with their segment. Segments are now released only by what the
/// WAL itself says the tables hold.
#[test]
fn reused_wal_lsns_below_the_manifest_mark_are_not_released_unflushed() {
    let fault = FaultStorage::new(24);
    fault.set_crash_keep(CrashKeep::None);
    let keep_wal = Options {
        avoid_flush_during_recovery: true,
        avoid_flush_during_shutdown: true,
        ..Options::default()
    };
    // Life 1: unsynced writes reach a table by a flush; the WAL tail
    // holding them is lost to a power cut.
    let storage = flush_then_lose_the_wal_tail(&fault, true);
    // Life 2: new writes take the lost LSNs again; kept in the WAL.
    let db = Db::open(storage.clone(), "/db", keep_wal.clone()).expect("open");
    db.put(b"second", b"2", WriteOptions::sync(true))
        .expect("put");
    db.close().expect("close");
    drop(db);
    // Life 3 replays them without flushing; life 4 must still have them.
    let db = Db::open(storage.clone(), "/db", keep_wal).expect("open");
    assert_eq!(db.get(b"second", None).expect("get"), Some(b"2".to_vec()));
    db.close().expect("close");
    drop(db);
    let db = Db::open(storage, "/db", Options::default()).expect("open");
    assert_eq!(db.get(b"second", None).expect("get"), Some(b"2".to_vec()));
    assert_eq!(db.get(b"a099", None).expect("get"), Some(b"x".to_vec()));
    assert_eq!(db.get(b"first", None).expect("get"), Some(b"1".to_vec()));
}

/// LSNs never go back: after a power cut took a WAL tail that a flush had
/// covered, the next life starts its WAL past the manifest's mark. With
/// reused LSNs, a manifest that later lost the flush edit of the new
/// life's writes looked consistent with the WAL and opened without them
/// (found by `strata torture --corrupt`); now the open refuses.
#[test]
fn after_lost_wal_tail_a_manifest_missing_a_flush_edit_is_still_refused() {
    let fault = FaultStorage::new(25);
    fault.set_crash_keep(CrashKeep::None);
    let storage = flush_then_lose_the_wal_tail(&fault, false);
    // Life 2 leaves its write in the WAL; life 3's open flushes it and
    // releases the segment.
    let keep = Options {
        avoid_flush_during_shutdown: true,
        ..Options::default()
    };
    let db = Db::open(storage.clone(), "/db", keep).expect("open");
    db.put(b"second", b"2", WriteOptions::sync(true))
        .expect("put");
    db.close().expect("close");
    drop(db);
    let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
    assert_eq!(db.recovery().wal_batches_replayed, 1);
    db.close().expect("close");
    drop(db);
    // Tear the open's flush edit.
    let (seg, original) = cut_last_manifest_byte(&fault);
    match Db::open(storage.clone(), "/db", Options::default()) {
        Err(Error::Corruption { reason, .. }) => {
            assert!(reason.contains("WAL starts at LSN"), "{reason}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(db) => panic!(
            "opened without the flush edit: second = {:?}",
            db.get(b"second", None)
        ),
    }
    fault.install(&seg, &original).expect("restore");
    let db = Db::open(storage, "/db", Options::default()).expect("open");
    assert_eq!(db.get(b"second", None).expect("get"), Some(b"2".to_vec()));
    assert_eq!(db.get(b"a042", None).expect("get"), Some(b"x".to_vec()));
}

/// A component that stops after an I/O error says so with one type
/// (`strata::io::Stopped`) that keeps the errno: a full disk is told from a
/// failing one whether the WAL or a background flush stopped.
#[test]
fn a_stopped_engine_keeps_the_errno_of_what_stopped_it() {
    const ENOSPC: i32 = 28;
    // The WAL: the failing write stops it.
    let fault = FaultStorage::new(26);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
    fault.fail(OpClass::Write, 1, Errno::Enospc, true);
    let first = db
        .put(b"k", b"v", WriteOptions::sync(true))
        .expect_err("disk full");
    assert_eq!(first.raw_os_error(), Some(ENOSPC), "{first}");
    let later = db
        .put(b"k2", b"v", WriteOptions::sync(true))
        .expect_err("stopped");
    match &later {
        Error::Wal(strata::wal::Error::Failed(s)) => {
            assert!(s.is_no_space(), "{s}");
            assert!(s.component.starts_with("WAL /db/wal"), "{s}");
        }
        e => panic!("wrong error: {e}"),
    }
    drop(db);
    fault.clear_failures();

    // A background flush: writes stop with the flush's errno.
    let fault = FaultStorage::new(27);
    let storage: StorageRef = Arc::new(fault.clone());
    let db = Db::open(storage, "/db", small_options()).expect("open");
    db.put(b"a", b"1", WriteOptions::default()).expect("put");
    fault.fail(OpClass::Sync, 1, Errno::Enospc, true);
    let err = db.flush().expect_err("the flush cannot sync its table");
    assert_eq!(err.raw_os_error(), Some(ENOSPC), "{err}");
    match db.put(b"b", b"2", WriteOptions::default()) {
        Err(Error::Background(s)) => assert!(s.is_no_space(), "{s}"),
        other => panic!("writes after a failed flush: {other:?}"),
    }
}

/// A process killed while creating a database (between writing the
/// identity's temporary file and renaming it) leaves that file behind; the
/// next open creates the database rather than refuse a directory it made
/// itself. Found by `strata torture --corrupt --seed=835` (a kill in the
/// first open).
#[test]
fn a_creation_cut_short_is_finished_by_the_next_open() {
    let fault = FaultStorage::new(28);
    strata::io::create_dir_durable(&fault, Path::new("/db")).expect("mkdir");
    fault
        .install(Path::new("/db/STRATA.tmp"), b"strata-d")
        .expect("leftover");
    let storage: StorageRef = Arc::new(fault);
    let db = Db::open(storage.clone(), "/db", Options::default()).expect("open");
    db.put(b"k", b"v", WriteOptions::sync(true)).expect("put");
    db.close().expect("close");
    drop(db);
    let names = storage.list_dir(Path::new("/db")).expect("list");
    assert!(!names.iter().any(|n| n == "STRATA.tmp"), "{names:?}");
    let db = Db::open(storage, "/db", Options::default()).expect("reopen");
    assert_eq!(db.get(b"k", None).expect("get"), Some(b"v".to_vec()));
}
