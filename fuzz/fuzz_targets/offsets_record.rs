//! The records of `__consumer_offsets` (broker/src/offsets.rs) on
//! arbitrary bytes: the first byte splits the input into key and value
//! (a value of none when it is 0). Nothing may panic; a version-1 offset key
//! that decodes begins with its own re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_broker::offsets::{decode, offset_key, OffsetRecord};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let (key, value) = rest.split_at(at);
    let value = (split != 0).then_some(value);
    if let Ok(OffsetRecord::Offset {
        group,
        topic,
        partition,
        ..
    }) = decode(key, value)
    {
        // A version-1 key begins with its re-encoding (bytes after it
        // are ignored).
        if key.starts_with(&[0, 1]) {
            let again = offset_key(&group, &topic, partition);
            assert!(key.starts_with(&again));
        }
    }
});
