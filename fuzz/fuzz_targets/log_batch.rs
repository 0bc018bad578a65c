//! The segmented log's decoders on arbitrary bytes: a record batch (header,
//! checksum, every record), the records of an accepted batch and their
//! re-encoding (compressed bodies decompressed), a producer-state snapshot, and a whole segment file opened
//! with recovery (scan, torn-tail cut, index rebuild) then read. Nothing
//! may panic; an accepted batch must re-encode to an accepted batch with
//! the same records.
#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_io::fault::FaultStorage;
use strata_io::Storage;
use strata_log::batch::{self, Batch, Parsed};
use strata_log::producer::ProducerState;
use strata_log::segment::{Segment, SegmentOptions};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Parsed::Batch(b) = Batch::parse(&bytes) {
        let recs = b.records();
        assert_eq!(recs.len(), b.header.record_count as usize);
        let _ = b.validate_for_append();
        if let Ok(again) = batch::filter(&b, |_| true) {
            assert_eq!(again.records(), recs);
            assert_eq!(again.header.base_offset, b.header.base_offset);
            assert_eq!(again.header.next_offset(), b.header.next_offset());
        }
        let moved = b.clone().with_offset_and_epoch(7, 3);
        assert!(matches!(Batch::parse(&moved.bytes), Parsed::Batch(_)));
    }
    let _ = ProducerState::decode(data);

    let storage = FaultStorage::new(1);
    let dir = Path::new("/p");
    storage.create_dir_all(dir).expect("mkdir");
    storage
        .install(&dir.join("00000000000000000000.log"), data)
        .expect("install");
    let opts = SegmentOptions {
        index_interval_bytes: 64,
        max_index_bytes: 1 << 20,
        compacted: data.first().is_some_and(|b| b & 1 == 1),
        direct_io: false,
        write_behind: false,
        preallocate: false,
        max_bytes: 1 << 30,
    };
    if let Ok((seg, _)) = Segment::open(&storage, dir, 0, opts, true) {
        let mut at = 0;
        while let Ok(Some((pos, h))) = seg.find(at) {
            let Ok(bs) = seg.read_from(pos, 1 << 16, u64::MAX) else { break };
            let Some(last) = bs.last() else { break };
            assert!(last.last_offset() >= h.base_offset);
            at = last.last_offset() + 1;
        }
        let _ = seg.time_lookup(i64::MAX / 2);
    }
});
