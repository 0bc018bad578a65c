//! A Raft node's durable files (docs/raft.md) on arbitrary bytes: the
//! term-and-vote file and the snapshot file. Nothing may panic; an
//! accepted snapshot's data fits the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_replication::raft::storage::{decode_hard_state, decode_snapshot};

fuzz_target!(|data: &[u8]| {
    let _ = decode_hard_state(data);
    if let Ok(s) = decode_snapshot(data) {
        assert!(s.data.len() + 24 == data.len());
    }
});
