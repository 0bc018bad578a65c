//! The README's log example, runnable: `cargo run --example log`.

use strata::io::{open_storage_in, Backend};
use strata::log::{LogConfig, LogManager, ProducerInfo, Record};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let logs = LogManager::open(open_storage_in(Backend::Auto, dir.path()), dir.path())?;
    logs.create_topic("events", 3, LogConfig::default())?;
    let p = logs.partition("events", 0)?;
    let recs = [
        Record::new(1_700_000_000_000, Some(b"user-1"), Some(b"signed up")),
        Record::new(1_700_000_000_500, Some(b"user-2"), Some(b"logged in")),
    ];
    // An idempotent producer: a retry of the same sequence returns the
    // original offsets instead of appending twice.
    let producer = ProducerInfo {
        id: 42,
        epoch: 0,
        base_sequence: 0,
    };
    let a = p.append_records(&recs, producer, 0, true)?; // fsynced when this returns
    let again = p.append_records(&recs, producer, 0, true)?;
    assert!(again.duplicate && again.first_offset == a.first_offset);
    p.set_high_watermark(p.log_end_offset())?;
    for batch in p.read_committed(0, 1 << 20)? {
        for r in batch.records() {
            println!(
                "offset {} at {}: {:?} = {:?}",
                r.offset,
                r.timestamp,
                r.key.as_deref().map(String::from_utf8_lossy),
                r.value.as_deref().map(String::from_utf8_lossy)
            );
        }
    }
    println!(
        "offset for 1_700_000_000_200: {:?}",
        p.offset_for_timestamp(1_700_000_000_200)?
    );
    logs.commit_offset("readers", "events", 0, 2, b"")?;
    logs.close()?;
    Ok(())
}
