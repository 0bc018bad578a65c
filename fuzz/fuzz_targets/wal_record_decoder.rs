//! The WAL decoders on arbitrary bytes: the entry decoder, the fragment
//! reader at every offset, and a whole-segment dump. None may panic, and
//! what they accept must be internally consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wal::format::{decode_entry, get_varint, read_fragment, FragmentRead};

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = decode_entry(data) {
        assert_eq!(e.records.len() as u64, u64::from(e.header.count));
        assert!(e.header.synced_lsn < e.header.first_lsn);
        let total: usize = e.records.iter().map(|r| r.len()).sum();
        assert!(total <= data.len());
    }
    let _ = get_varint(data);
    let tag = data.first().copied().map_or(1, u32::from);
    let mut pos = 0;
    while pos < data.len().min(4096) {
        if let FragmentRead::Fragment { payload, next, .. } = read_fragment(data, pos, tag) {
            assert!(next > pos && next <= data.len());
            assert!(payload.len() < next - pos);
        }
        pos += 1;
    }
    let segno = data.get(1).copied().map_or(1, u64::from);
    let d = strata_wal::dump_segment(data, segno);
    for e in &d.entries {
        assert_eq!(e.records.len() as u64, u64::from(e.header.count));
        assert!((e.offset as usize) < data.len());
    }
});
