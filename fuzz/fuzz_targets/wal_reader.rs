//! WAL recovery on arbitrary segment files, in every recovery mode. It
//! must never panic; replayed LSNs must increase; and after a point-in-time
//! open (which accepts any damage) the log must work: a record appended
//! then is the last one a reopen replays.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_io::fault::FaultStorage;
use strata_io::Storage;
use strata_wal::{recover, Preallocate, RecoveryMode, Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    // Layout: [n_files] then per file [len_lo, len_hi] and its bytes; the
    // segment numbers are consecutive from the second byte.
    let Some((&n, mut rest)) = data.split_first() else { return };
    let first_segno = u64::from(rest.first().copied().unwrap_or(1)).max(1);
    let storage = FaultStorage::new(1);
    let dir = Path::new("/wal");
    storage.create_dir_all(dir).expect("mkdir");
    for i in 0..u64::from(n % 4) {
        if rest.len() < 2 {
            break;
        }
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let path = dir.join(format!("{:020}.wal", first_segno + i));
        storage.install(&path, body).expect("install");
    }
    for mode in [
        RecoveryMode::TolerateCorruptedTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
        RecoveryMode::SkipAnyCorruptedRecords,
    ] {
        let mut last = 0;
        let _ = recover(&storage, dir, mode, |lsn, _| {
            assert!(lsn > last, "LSNs must increase");
            last = lsn;
            Ok(())
        });
    }
    let opts = WalOptions {
        recovery: RecoveryMode::PointInTime,
        preallocate: Preallocate::None,
        segment_size: 1 << 16,
        ..WalOptions::default()
    };
    let sref: strata_io::StorageRef = Arc::new(storage.clone());
    let (wal, _) = Wal::open(sref.clone(), dir, opts.clone(), |_, _| Ok(())).expect("point-in-time open accepts any damage");
    let lsn = wal.append(b"fuzz marker").expect("append");
    wal.close().expect("close");
    drop(wal);
    let mut last = None;
    let (wal, _) = Wal::open(sref, dir, opts, |l, r| {
        last = Some((l, r.to_vec()));
        Ok(())
    })
    .expect("reopen");
    drop(wal);
    assert_eq!(last, Some((lsn, b"fuzz marker".to_vec())));
});
