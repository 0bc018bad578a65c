//! The SSTable decoders on arbitrary bytes: a block (restart trailer and
//! entries, walked forwards, backwards and by seeks) and a whole table file
//! (footer, index, filter, properties, lookups, scans). Nothing may panic;
//! a cursor must end.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use strata_io::fault::FaultStorage;
use strata_io::{OpenOptions, Storage};
use strata_lsm::key;
use strata_lsm::table::block::Block;
use strata_lsm::table::Table;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Block::new(data.to_vec().into()) {
        for cmp in [key::compare as fn(&[u8], &[u8]) -> std::cmp::Ordering, |a: &[u8], b: &[u8]| a.cmp(b)] {
            let mut it = b.iter(cmp);
            it.seek_to_first();
            let mut n = 0;
            while it.valid() {
                n += 1;
                assert!(n <= data.len(), "cursor must advance");
                it.next();
            }
            it.seek_to_last();
            let mut m = 0;
            while it.valid() {
                m += 1;
                assert!(m <= data.len(), "cursor must retreat");
                it.prev();
            }
            it.seek(data.get(..data.len().min(9)).unwrap_or(&[]));
        }
    }
    let storage = FaultStorage::new(1);
    storage.create_dir_all(Path::new("/t")).expect("mkdir");
    storage.install(Path::new("/t/f.sst"), data).expect("install");
    let f = storage.open(Path::new("/t/f.sst"), OpenOptions::existing()).expect("open");
    if let Ok(t) = Table::open(f) {
        let t = Arc::new(t);
        let _ = t.get(b"key", u64::MAX >> 8);
        let mut it = t.iter();
        it.seek_to_first();
        let mut n = 0;
        while it.valid() && n < 100_000 {
            n += 1;
            it.next();
        }
        it.seek_to_last();
        it.prev();
    }
});
