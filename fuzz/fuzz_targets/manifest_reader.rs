//! The manifest reader on arbitrary edit records: the edit decoder alone,
//! then a manifest log holding the bytes as records, opened as the engine
//! opens it. Nothing may panic; what decodes must survive a re-encode.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_io::fault::FaultStorage;
use strata_io::StorageRef;
use strata_lsm::manifest::{decode, encode, Manifest};
use strata_wal::{Preallocate, Wal, WalOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(edits) = decode(data) {
        // Varints may be non-minimal on input; what we write decodes back.
        assert_eq!(decode(&encode(&edits)).ok(), Some(edits), "encode/decode must round-trip");
    }
    let storage: StorageRef = Arc::new(FaultStorage::new(1));
    let dir = Path::new("/m");
    let opts = WalOptions {
        preallocate: Preallocate::None,
        segment_size: 4 << 20,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(storage.clone(), dir, opts, |_, _| Ok(())).expect("wal");
    // Split the input into records at 0xFF bytes.
    for rec in data.split(|&b| b == 0xFF) {
        wal.append(rec).expect("append");
    }
    wal.close().expect("close");
    drop(wal);
    if let Ok(m) = Manifest::open(storage, dir) {
        let _ = m.state().tables.len();
    }
});
