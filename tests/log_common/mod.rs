//! Helpers shared by the segmented log's integration tests.
#![allow(dead_code)] // each test binary uses its own share of them

use std::sync::Arc;

use strata::io::StorageRef;
use strata::log::batch::{ProducerInfo, Record};
use strata::log::{Error, LogConfig, LogManager, ManagerOptions, Partition, SegmentIo};

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 200,
        segment_index_bytes: 256,
        retention_bytes: Some(6000),
        retention_ms: None,
        segment_ms: None,
        ..LogConfig::default()
    }
}

/// A record as the model keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MRec {
    pub offset: u64,
    pub ts: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Deterministic: no thread of the log's own, no wall clock, so a failing
/// case (crash seeds included) replays.
/// Closes the manager cleanly and opens the directory again.
pub fn reopen(
    mgr: LogManager,
    p: Arc<Partition>,
    storage: &StorageRef,
) -> (LogManager, Arc<Partition>) {
    drop(p);
    mgr.close().expect("close");
    drop(mgr);
    open(storage)
}

pub fn open(storage: &StorageRef) -> (LogManager, Arc<Partition>) {
    open_direct(storage, SegmentIo::default())
}

/// [`open`], appending as `io` says (O_DIRECT, preallocation).
pub fn open_direct(storage: &StorageRef, io: SegmentIo) -> (LogManager, Arc<Partition>) {
    let opts = ManagerOptions {
        background_threads: false,
        direct_io: io.direct_io,
        write_behind: io.write_behind,
        preallocate: io.preallocate,
        ..ManagerOptions::default()
    };
    let m = LogManager::open_with(storage.clone(), "/logs", opts).expect("open manager");
    if m.topics().is_empty() {
        m.create_topic("t", 1, small_config()).expect("create");
    }
    let p = m.partition("t", 0).expect("partition");
    (m, p)
}

/// Every record from `from` on, read batch by batch, with the batches'
/// base offsets.
pub fn read_all(p: &Partition, from: u64) -> Result<(Vec<u64>, Vec<MRec>), Error> {
    let mut out = Vec::new();
    let mut bases = Vec::new();
    let mut at = from;
    let end = p.log_end_offset();
    while at < end {
        let bs = p.read(at, 700, None)?;
        assert!(
            !bs.is_empty(),
            "read at {at} below the end {end} returned nothing"
        );
        for b in &bs {
            bases.push(b.base_offset());
            for r in b.records() {
                if r.offset >= from {
                    out.push(to_m(&r));
                }
            }
            at = b.last_offset() + 1;
        }
    }
    Ok((bases, out))
}

pub fn to_m(r: &Record) -> MRec {
    MRec {
        offset: r.offset,
        ts: r.timestamp,
        key: r.key.as_deref().unwrap_or_default().to_vec(),
        value: r.value.as_deref().unwrap_or_default().to_vec(),
    }
}

pub fn producer(id: i64, epoch: i16, seq: i32) -> ProducerInfo {
    ProducerInfo {
        id,
        epoch,
        base_sequence: seq,
    }
}

pub fn recs(n: usize, tag: &str) -> Vec<Record> {
    (0..n)
        .map(|i| {
            Record::new(
                5000 + i as i64,
                Some(tag.as_bytes()),
                Some(format!("{tag}{i}").as_bytes()),
            )
        })
        .collect()
}
