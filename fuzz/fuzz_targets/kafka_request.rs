//! `strata serve`'s request decoding on arbitrary frames: the header, the
//! API and version checks and the kafka-protocol body decoders. Nothing
//! may panic; an accepted request must carry the API key and version its
//! header announced.
//!
//! The broker's allocator (mimalloc) is used here too: kafka-protocol
//! 0.18 reserves `Vec` capacity from array counts read off the wire
//! before checking them against the frame (an open upstream issue);
//! mimalloc reserves such a range without committing it, so the decode
//! then fails on the missing bytes, where glibc's malloc refuses the
//! size and aborts. tools/tests/kafka_garbage.rs sends such frames to a
//! running broker.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_broker::wire::{decode_request, supported};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(Bytes::copy_from_slice(data)) {
        assert_eq!(req.header.request_api_key, req.api_key as i16);
        let (lo, hi) = supported(req.api_key).expect("served");
        assert!((lo..=hi).contains(&req.header.request_api_version));
    }
});
