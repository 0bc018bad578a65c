//! Helpers shared by the engine's integration tests.

use std::path::Path;

use strata::io::fault::FaultStorage;
use strata::io::Storage;
use strata::lsm::table::TableOptions;
use strata::lsm::Options;

/// Tiny memtables and blocks: a few writes flush many times.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn small_options() -> Options {
    Options {
        write_buffer_size: 2048,
        table: TableOptions {
            block_size: 128,
            ..TableOptions::default()
        },
        ..Options::default()
    }
}

/// Bytes of all tables in `/db` on the fault backend.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn table_bytes(fault: &FaultStorage) -> u64 {
    fault
        .list_dir(Path::new("/db"))
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".sst"))
        .map(|n| {
            fault
                .contents(&Path::new("/db").join(n))
                .expect("contents")
                .len() as u64
        })
        .sum()
}
