//! The README's WAL example, runnable: `cargo run --example wal`.

use strata::io::{open_storage_in, Backend};
use strata::wal::{SyncPolicy, Wal, WalOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // io_uring where it is there and not slower here, std otherwise.
    let storage = open_storage_in(Backend::Auto, dir.path());
    let opts = WalOptions {
        sync: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let (wal, recovery) = Wal::open(
        storage.clone(),
        dir.path().join("wal"),
        opts.clone(),
        |_lsn, _record| Ok(()),
    )?;
    assert_eq!(recovery.records, 0);
    let lsn = wal.append(b"hello")?; // durable when this returns
    wal.purge_before(lsn)?; // after a checkpoint: release old segments
    wal.close()?;
    drop(wal);
    let (wal, recovery) = Wal::open(storage, dir.path().join("wal"), opts, |lsn, record| {
        println!("replayed {lsn}: {:?}", String::from_utf8_lossy(record));
        Ok(())
    })?;
    println!("{} record(s) recovered", recovery.records);
    wal.close()?;
    Ok(())
}
