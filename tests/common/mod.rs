//! Helpers shared by the engine's integration tests.

use std::path::Path;

use strata::io::fault::FaultStorage;
use strata::io::Storage;

/// Bytes of all tables in `/db` on the fault backend.
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
