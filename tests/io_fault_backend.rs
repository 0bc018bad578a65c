//! The fault-injecting backend models power loss faithfully: only synced
//! data and directory-synced names are sure to survive; unsynced writes
//! survive as none, all or a seeded subset, possibly torn at sectors;
//! failures hit the Nth operation; a failed fsync loses its pages.

use std::path::Path;

use strata::io::fault::{CrashKeep, Errno, FaultStorage, OpClass, SECTOR};
use strata::io::{Error, OpenOptions, Storage};

fn setup(seed: u64) -> FaultStorage {
    let s = FaultStorage::new(seed);
    strata::io::create_dir_durable(&s, Path::new("/d")).expect("mkdir");
    s
}

/// `/d/sub/deeper/f`, written and fsynced, its directory fsynced too.
fn write_synced_file_in_deeper(s: &FaultStorage) {
    let f = s
        .open(Path::new("/d/sub/deeper/f"), OpenOptions::create())
        .expect("create");
    f.write_at(b"data", 0).expect("write");
    f.sync_all().expect("fsync file");
    s.sync_dir(Path::new("/d/sub/deeper"))
        .expect("fsync its directory");
}

#[test]
fn a_new_directory_needs_its_parent_synced_and_takes_its_files_with_it() {
    let s = setup(3);
    s.set_crash_keep(CrashKeep::None);
    s.create_dir_all(Path::new("/d/sub/deeper")).expect("mkdir");
    write_synced_file_in_deeper(&s);
    s.crash();
    let s = s.reopen();
    assert!(
        !s.exists(Path::new("/d/sub")).expect("exists"),
        "the directory's entry was never made durable"
    );
    assert!(!s.exists(Path::new("/d/sub/deeper/f")).expect("exists"));
    assert!(s.list_dir(Path::new("/d")).expect("list").is_empty());

    // The helper syncs each parent of what it creates: all survive.
    strata::io::create_dir_durable(&s, Path::new("/d/sub/deeper")).expect("mkdir");
    write_synced_file_in_deeper(&s);
    s.crash();
    let s = s.reopen();
    let f = s
        .open(Path::new("/d/sub/deeper/f"), OpenOptions::existing())
        .expect("the file survives with its directories");
    assert_eq!(f.read_all().expect("read"), b"data");
}

#[test]
fn synced_data_survives_and_unsynced_data_is_dropped_with_keep_none() {
    let s = setup(1);
    s.set_crash_keep(CrashKeep::None);
    let f = s
        .open(Path::new("/d/f"), OpenOptions::create())
        .expect("create");
    f.write_at(b"durable", 0).expect("write");
    f.sync_data().expect("sync");
    s.sync_dir(Path::new("/d")).expect("dirsync");
    f.write_at(b"lost", 7).expect("write");
    s.crash();
    let s = s.reopen();
    assert!(
        matches!(f.len(), Err(Error::Crashed { .. })),
        "old handles are dead after a crash"
    );
    let f = s
        .open(Path::new("/d/f"), OpenOptions::existing())
        .expect("reopen");
    assert_eq!(f.read_all().expect("read"), b"durable");
}

#[test]
fn a_new_file_needs_its_directory_synced() {
    let s = setup(2);
    s.set_crash_keep(CrashKeep::None);
    let f = s
        .open(Path::new("/d/new"), OpenOptions::create())
        .expect("create");
    f.write_at(b"data", 0).expect("write");
    f.sync_all().expect("fsync file only");
    s.crash();
    let s = s.reopen();
    assert!(
        !s.exists(Path::new("/d/new")).expect("exists"),
        "name was never made durable"
    );

    let f = s
        .open(Path::new("/d/new"), OpenOptions::create())
        .expect("create");
    f.write_at(b"data", 0).expect("write");
    f.sync_all().expect("fsync");
    s.sync_dir(Path::new("/d")).expect("dirsync");
    s.remove_file(Path::new("/d/new")).expect("remove");
    s.crash();
    let s = s.reopen();
    assert!(
        s.exists(Path::new("/d/new")).expect("exists"),
        "unsynced removal is undone by the crash"
    );
}

#[test]
fn keep_all_keeps_every_unsynced_write_and_rename() {
    let s = setup(3);
    s.set_crash_keep(CrashKeep::All);
    let f = s
        .open(Path::new("/d/a"), OpenOptions::create())
        .expect("create");
    f.write_at(b"kept", 0).expect("write");
    s.rename(Path::new("/d/a"), Path::new("/d/b"))
        .expect("rename");
    s.crash();
    let s = s.reopen();
    let f = s
        .open(Path::new("/d/b"), OpenOptions::existing())
        .expect("renamed file");
    assert_eq!(f.read_all().expect("read"), b"kept");
}

#[test]
fn subsets_differ_by_seed_and_repeat_for_the_same_seed() {
    let outcome = |seed: u64| -> Vec<u8> {
        let s = setup(seed);
        s.set_crash_keep(CrashKeep::Subset);
        let f = s
            .open(Path::new("/d/f"), OpenOptions::create())
            .expect("create");
        f.write_at(&[0u8; 64], 0).expect("w");
        f.sync_data().expect("sync");
        s.sync_dir(Path::new("/d")).expect("dirsync");
        for i in 0..64u8 {
            f.write_at(&[i + 1], u64::from(i)).expect("write");
        }
        s.crash();
        let s = s.reopen();
        let s = s.reopen();
        s.contents(Path::new("/d/f")).expect("contents")
    };
    assert_eq!(outcome(9), outcome(9), "same seed, same crash");
    let distinct: std::collections::BTreeSet<Vec<u8>> = (0..8).map(outcome).collect();
    assert!(distinct.len() > 4, "seeds choose different subsets");
    // Out-of-order persistence: some later write kept while an earlier lost.
    assert!(
        (0..8)
            .map(outcome)
            .any(|c| c.windows(2).any(|w| w[0] == 0 && w[1] != 0)),
        "a later write can survive an earlier one"
    );
}

#[test]
fn torn_writes_keep_whole_sectors_only() {
    let mut saw_tear = false;
    for seed in 0..40 {
        let s = setup(seed);
        s.set_crash_keep(CrashKeep::All);
        s.set_torn_writes(true);
        let f = s
            .open(Path::new("/d/f"), OpenOptions::create())
            .expect("create");
        f.write_at(&vec![0u8; 4 * SECTOR], 0).expect("w");
        f.sync_data().expect("sync");
        s.sync_dir(Path::new("/d")).expect("dirsync");
        f.write_at(&vec![0xAB; 4 * SECTOR], 0).expect("big write");
        s.crash();
        let s = s.reopen();
        let s = s.reopen();
        let c = s.contents(Path::new("/d/f")).expect("contents");
        for sector in c.chunks(SECTOR) {
            assert!(
                sector.iter().all(|&b| b == 0) || sector.iter().all(|&b| b == 0xAB),
                "torn inside a sector"
            );
        }
        let kept = c.chunks(SECTOR).filter(|s| s[0] == 0xAB).count();
        saw_tear |= kept > 0 && kept < 4;
    }
    assert!(saw_tear, "some crash tore the write");
}

#[test]
fn the_nth_operation_fails_with_the_chosen_errno() {
    let s = setup(4);
    let f = s
        .open(Path::new("/d/f"), OpenOptions::create())
        .expect("create");
    s.fail(OpClass::Write, 3, Errno::Enospc, false);
    f.write_at(b"1", 0).expect("first");
    f.sync_data().expect("syncs do not count for Write");
    f.write_at(b"2", 1).expect("second");
    let e = f.write_at(b"3", 2).expect_err("third fails");
    assert!(e.is_no_space(), "{e}");
    f.write_at(b"4", 3).expect("not sticky");
    s.fail(OpClass::Sync, 1, Errno::Eio, true);
    assert_eq!(f.sync_data().expect_err("eio").raw_os_error(), Some(5));
    assert!(f.sync_data().is_err(), "sticky");
    assert_eq!(s.stats().injected_errors, 3);
}

#[test]
fn a_failed_fsync_loses_the_pages_it_covered_even_if_a_later_fsync_succeeds() {
    let s = setup(5);
    s.set_crash_keep(CrashKeep::None);
    let f = s
        .open(Path::new("/d/f"), OpenOptions::create())
        .expect("create");
    f.sync_all().expect("sync");
    s.sync_dir(Path::new("/d")).expect("dirsync");
    f.write_at(b"doomed", 0).expect("write");
    s.fail(OpClass::Sync, 1, Errno::Eio, false);
    assert!(f.sync_data().is_err());
    f.sync_data().expect("a retry 'succeeds'");
    assert_eq!(
        f.read_all().expect("read"),
        b"doomed",
        "the page cache still shows it"
    );
    s.crash();
    let s = s.reopen();
    let f = s
        .open(Path::new("/d/f"), OpenOptions::existing())
        .expect("open");
    assert_eq!(
        f.read_all().expect("read"),
        b"",
        "but it never reached the disk: retrying fsync lies"
    );
}

#[test]
fn bits_flip_on_read_when_asked() {
    let s = setup(6);
    let f = s
        .open(Path::new("/d/f"), OpenOptions::create())
        .expect("create");
    f.write_at(&[0u8; 256], 0).expect("write");
    s.flip_bits_on_read(1_000_000);
    let mut buf = [0u8; 256];
    f.read_exact_at(&mut buf, 0).expect("read");
    assert_eq!(
        buf.iter().map(|b| b.count_ones()).sum::<u32>(),
        1,
        "exactly one bit flipped"
    );
    assert_eq!(
        s.contents(Path::new("/d/f")).expect("contents"),
        vec![0u8; 256],
        "the stored data is intact"
    );
}

#[test]
fn a_storage_handle_from_before_a_crash_is_dead() {
    let old = setup(7);
    old.crash();
    assert!(matches!(
        old.open(Path::new("/d/zombie"), OpenOptions::create()),
        Err(Error::Crashed { .. })
    ));
    assert!(old.list_dir(Path::new("/d")).is_err());
    let new = old.reopen();
    new.open(Path::new("/d/alive"), OpenOptions::create())
        .expect("the next process works");
    assert!(!new.exists(Path::new("/d/zombie")).expect("exists"));
}

#[test]
fn a_crash_releases_the_crashed_process_locks() {
    let s = setup(8);
    let held = s.lock(Path::new("/d/LOCK")).expect("lock");
    assert!(s.lock(Path::new("/d/LOCK")).is_err());
    s.crash();
    let s2 = s.reopen();
    let _mine = s2
        .lock(Path::new("/d/LOCK"))
        .expect("the next process can lock");
    drop(held); // the dead process's guard must not release the new lock
    assert!(s2.lock(Path::new("/d/LOCK")).is_err());
}
