//! Injected EIO and ENOSPC: the appenders of the failing batch get the
//! error, the WAL accepts nothing more (a failed fsync is never retried),
//! and nothing acknowledged before the failure is lost, whether the process
//! then reopens the WAL or the machine loses power.

use std::collections::HashMap;
use std::sync::Arc;

use strata::io::fault::{CrashKeep, Errno, FaultStorage, OpClass};
use strata::wal::{Error, Lsn, Preallocate, SyncPolicy, Wal, WalOptions};

const DIR: &str = "/wal";

fn open(storage: &FaultStorage, sync: SyncPolicy) -> (Wal, Vec<(Lsn, Vec<u8>)>) {
    let mut got = Vec::new();
    let opts = WalOptions {
        sync,
        segment_size: 16 << 10,
        preallocate: Preallocate::None,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(Arc::new(storage.clone()), DIR, opts, |lsn, r| {
        got.push((lsn, r.to_vec()));
        Ok(())
    })
    .expect("open");
    (wal, got)
}

fn rec(t: usize, i: usize) -> Vec<u8> {
    format!("thread {t} record {i} {}", "x".repeat(i * 37 % 700)).into_bytes()
}

/// Acked (lsn -> record), errors seen, records whose append failed, durable LSN.
type Outcome = (HashMap<Lsn, Vec<u8>>, Vec<Error>, Vec<Vec<u8>>, Lsn);

/// Runs `threads` appenders until each has seen an error, with the failure
/// armed after `warmup` successful appends. Returns acked (lsn -> record),
/// the errors seen, and records that failed.
fn run(
    storage: &FaultStorage,
    sync: SyncPolicy,
    class: OpClass,
    errno: Errno,
    sticky: bool,
    threads: usize,
) -> Outcome {
    let (wal, _) = open(storage, sync);
    let mut acked = HashMap::new();
    for i in 0..20 {
        let r = rec(99, i);
        acked.insert(wal.append(&r).expect("warm-up append"), r);
    }
    let durable_before = wal.sync().expect("sync");
    storage.fail(class, 3, errno, sticky);
    let results: Vec<(Vec<u8>, Result<Lsn, Error>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let wal = wal.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..200 {
                        let r = rec(t, i);
                        let res = wal.append(&r);
                        let failed = res.is_err();
                        out.push((r, res));
                        if failed {
                            break;
                        }
                    }
                    out
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut errors = Vec::new();
    let mut failed = Vec::new();
    for (r, res) in results {
        match res {
            Ok(lsn) => {
                acked.insert(lsn, r);
            }
            Err(e) => {
                errors.push(e);
                failed.push(r);
            }
        }
    }
    // Once failed, the WAL stays failed: no retry of the write or fsync.
    let syncs_before = storage.stats().syncs;
    assert!(matches!(wal.append(b"after"), Err(Error::Failed(_))));
    assert!(matches!(wal.sync(), Err(Error::Failed(_))));
    assert_eq!(
        storage.stats().syncs,
        syncs_before,
        "a failed WAL must not sync again"
    );
    let durable = wal.durable_lsn().max(durable_before);
    drop(wal);
    (acked, errors, failed, durable)
}

fn check_recovered(
    got: &[(Lsn, Vec<u8>)],
    acked: &HashMap<Lsn, Vec<u8>>,
    failed: &[Vec<u8>],
    must_have_up_to: Lsn,
    what: &str,
) {
    for (i, (lsn, r)) in got.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1, "{what}: recovered LSNs are a prefix");
        match acked.get(lsn) {
            Some(a) => assert_eq!(a, r, "{what}: LSN {lsn} changed"),
            None => assert!(
                failed.contains(r),
                "{what}: LSN {lsn} holds a record never appended"
            ),
        }
    }
    let last = got.last().map_or(0, |g| g.0);
    assert!(
        last >= must_have_up_to,
        "{what}: lost acknowledged records: have {last}, need {must_have_up_to}"
    );
}

#[test]
fn enospc_on_write_fails_the_batch_and_keeps_everything_acknowledged() {
    for threads in [1, 4] {
        let storage = FaultStorage::new(11);
        let (acked, errors, failed, durable) = run(
            &storage,
            SyncPolicy::Always,
            OpClass::Write,
            Errno::Enospc,
            true,
            threads,
        );
        assert!(!errors.is_empty());
        assert!(
            errors
                .iter()
                .any(|e| e.raw_os_error() == Some(libc_enospc())),
            "the failing batch sees ENOSPC: {errors:?}"
        );
        assert!(errors.iter().all(|e| matches!(e, Error::Failed(_))));
        let max_acked = acked.keys().copied().max().unwrap_or(0);
        assert!(
            durable >= max_acked,
            "with sync always every ack is durable"
        );
        // The disk has space again (space freed): reopen without a crash.
        storage.clear_failures();
        let (wal, got) = open(&storage, SyncPolicy::Always);
        check_recovered(&got, &acked, &failed, max_acked, "reopen after ENOSPC");
        // And the log is usable again.
        wal.append(b"after recovery").expect("append after reopen");
        wal.close().expect("close");
        // Then power loss on top.
        storage.set_crash_keep(CrashKeep::Subset);
        storage.crash();
        let storage = storage.reopen();
        let storage = storage.reopen();
        let (_, got) = open(&storage, SyncPolicy::Always);
        check_recovered(
            &got[..got.len().min(max_acked as usize)],
            &acked,
            &failed,
            max_acked,
            "crash after ENOSPC",
        );
    }
}

#[test]
fn eio_on_fsync_fails_the_batch_and_power_loss_keeps_everything_acknowledged() {
    for threads in [1, 4] {
        for keep in [CrashKeep::None, CrashKeep::Subset, CrashKeep::All] {
            let storage = FaultStorage::new(12 + threads as u64);
            let (acked, errors, failed, durable) = run(
                &storage,
                SyncPolicy::Always,
                OpClass::Sync,
                Errno::Eio,
                false,
                threads,
            );
            assert!(
                errors.iter().any(|e| e.raw_os_error() == Some(libc_eio())),
                "the failing batch sees EIO: {errors:?}"
            );
            let max_acked = acked.keys().copied().max().unwrap_or(0);
            assert!(durable >= max_acked);
            storage.set_crash_keep(keep);
            storage.crash();
            let storage = storage.reopen();
            let storage = storage.reopen();
            let storage = storage.reopen();
            let (_, got) = open(&storage, SyncPolicy::Always);
            check_recovered(&got, &acked, &failed, max_acked, "crash after EIO on fsync");
        }
    }
}

#[test]
fn eio_on_write_with_sync_never_keeps_every_synced_record() {
    let storage = FaultStorage::new(21);
    let (acked, errors, failed, durable) = run(
        &storage,
        SyncPolicy::Never,
        OpClass::Write,
        Errno::Eio,
        false,
        3,
    );
    assert!(errors.iter().any(|e| e.raw_os_error() == Some(libc_eio())));
    storage.set_crash_keep(CrashKeep::Subset);
    storage.crash();
    let storage = storage.reopen();
    let (_, got) = open(&storage, SyncPolicy::Never);
    check_recovered(
        &got,
        &acked,
        &failed,
        durable,
        "crash after EIO with sync never",
    );
}

#[test]
fn enospc_while_creating_a_segment_reaches_the_appender() {
    // Rotation creates and preallocates a file: fail that.
    let storage = FaultStorage::new(5);
    let (wal, _) = open(&storage, SyncPolicy::Always);
    let mut acked = HashMap::new();
    let mut failed = Vec::new();
    let mut i = 0;
    while wal.segments().len() < 2 {
        let r = rec(0, i);
        acked.insert(wal.append(&r).expect("append"), r);
        i += 1;
    }
    // Next rotation: sync of the old segment is op 1, create is op 2.
    let before = wal.segments().len();
    storage.fail(OpClass::Mutating, 2, Errno::Enospc, true);
    let err = loop {
        let r = rec(1, i);
        i += 1;
        match wal.append(&r) {
            Ok(lsn) => {
                acked.insert(lsn, r);
            }
            Err(e) => {
                failed.push(r);
                break e;
            }
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc_enospc()), "{err}");
    assert!(wal.segments().len() <= before + 1);
    drop(wal);
    storage.clear_failures();
    storage.crash();
    let storage = storage.reopen();
    let (_, got) = open(&storage, SyncPolicy::Always);
    let max_acked = acked.keys().copied().max().unwrap_or(0);
    check_recovered(&got, &acked, &failed, max_acked, "ENOSPC in rotation");
}

fn libc_enospc() -> i32 {
    28
}

fn libc_eio() -> i32 {
    5
}
