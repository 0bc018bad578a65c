//! The bodies of the frames cluster nodes send each other
//! (docs/cluster.md) on arbitrary bytes: the protocol message and the Raft
//! message decoders. Nothing may panic or allocate past the input, and
//! whatever decodes encodes back to exactly the same bytes (every field
//! has one encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_replication::codec::{decode_msg, decode_raft, encode_msg, encode_raft};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode_msg(data) {
        assert_eq!(encode_msg(&m), data);
    }
    if let Ok(m) = decode_raft(data) {
        assert_eq!(encode_raft(&m), data);
    }
});
