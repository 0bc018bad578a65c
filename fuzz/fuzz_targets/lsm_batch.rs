//! The engine's write-batch decoder (the payload of every WAL record the
//! engine replays) on arbitrary bytes, alone and through a whole recovery.
//! Nothing may panic; a batch that decodes names at least one write, its
//! sequence numbers fit in 56 bits, and it survives a re-encoding; an open
//! that replays bytes it cannot apply refuses with corruption naming the
//! WAL segment.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_io::fault::FaultStorage;
use strata_io::StorageRef;
use strata_lsm::batch::{decode, BatchOp};
use strata_lsm::key::MAX_SEQNO;
use strata_lsm::{Db, Error, Options, WriteBatch};
use strata_wal::{Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    let decoded = decode(data);
    if let Ok((first, entries)) = &decoded {
        assert!(!entries.is_empty(), "a batch with no writes decoded");
        assert!(*first >= 1, "sequence number 0 decoded");
        assert!(first + entries.len() as u64 - 1 <= MAX_SEQNO, "past 2^56");
        let mut b = WriteBatch::new();
        for e in entries {
            match e.op {
                BatchOp::Put => b.put(e.key, e.value),
                BatchOp::Delete => b.delete(e.key),
                BatchOp::DeleteRange => b.delete_range(e.key, e.value),
            };
        }
        let again = b.encode(*first);
        assert_eq!(decode(&again).as_ref().ok(), Some(&(*first, entries.clone())));
    }

    // The same bytes as the record of a WAL the engine replays.
    let fault = FaultStorage::new(1);
    let storage: StorageRef = Arc::new(fault);
    // No threads: thousands of opens a second, the same replay path.
    let opts = Options {
        background_threads: false,
        ..Options::default()
    };
    let Ok(db) = Db::open(storage.clone(), "/db", opts.clone()) else {
        return;
    };
    drop(db);
    let Ok((wal, _)) = Wal::open(storage.clone(), "/db/wal", WalOptions::default(), |_, _| Ok(())) else {
        return;
    };
    if wal.append(data).is_err() {
        return;
    }
    drop(wal);
    match Db::open(storage, "/db", opts) {
        // Applied: it must have been a valid batch.
        Ok(_) => assert!(decoded.is_ok() && decoded.map_or(0, |d| d.0) > 0),
        Err(Error::Corruption { path, .. }) => {
            assert!(decoded.is_err(), "a valid batch was refused");
            assert!(path.starts_with(Path::new("/db/wal")), "{}", path.display());
        }
        Err(e) => panic!("replaying a bad record: {e}"),
    }
});
