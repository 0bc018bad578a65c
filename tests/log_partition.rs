//! The segmented log against a model: appends, reads, rolls, flushes,
//! retention, log-start moves, truncation, reopens and power cuts on the
//! fault-injecting backend (a case replays its storage operations);
//! idempotent producers under retries and restarts; damaged indexes and
//! batches. The features one at a time are in `log_features.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod log_common;

use log_common::{open, open_direct, producer, read_all, recs, to_m, MRec};
use proptest::prelude::*;
use strata::io::fault::{CrashKeep, FaultStorage};
use strata::io::StorageRef;
use strata::log::batch::{self, ProducerInfo, Record};
use strata::log::{Error, Partition, SegmentIo};

const DIRECT: SegmentIo = SegmentIo {
    direct_io: true,
    write_behind: false,
    preallocate: false,
};

const WRITE_BEHIND: SegmentIo = SegmentIo {
    direct_io: true,
    write_behind: true,
    preallocate: false,
};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[derive(Default, Debug)]
struct Model {
    /// Batches: (base offset, records).
    batches: Vec<(u64, Vec<MRec>)>,
    start: u64,
    end: u64,
    /// Log end offset known durable.
    durable: u64,
}

impl Model {
    fn records_from(&self, from: u64) -> Vec<MRec> {
        self.batches
            .iter()
            .flat_map(|(_, rs)| rs.iter())
            .filter(|r| r.offset >= from)
            .cloned()
            .collect()
    }

    fn cut_to(&mut self, end: u64) {
        self.batches.retain(|(b, _)| *b < end);
        self.end = end;
        self.durable = self.durable.min(end);
    }

    fn drop_before(&mut self, start: u64) {
        self.start = start;
        self.batches
            .retain(|(_, rs)| rs.last().is_some_and(|r| r.offset >= start));
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append { n: u8, vlen: u16, sync: bool },
    Read { at: u16, max: u16 },
    Roll,
    Flush,
    Retention,
    DeleteBefore(u16),
    Truncate(u16),
    TimeLookup(u16),
    Reopen,
    Crash { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..6, 0u16..300, any::<bool>()).prop_map(|(n, vlen, sync)| Op::Append { n, vlen, sync }),
        4 => (any::<u16>(), 1u16..3000).prop_map(|(at, max)| Op::Read { at, max }),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => Just(Op::Retention),
        1 => any::<u16>().prop_map(Op::DeleteBefore),
        1 => any::<u16>().prop_map(Op::Truncate),
        1 => any::<u16>().prop_map(Op::TimeLookup),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

fn check_whole(p: &Partition, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.log_end_offset(), m.end);
    prop_assert_eq!(p.log_start_offset(), m.start);
    let (bases, got) = read_all(p, m.start).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let want_bases: Vec<u64> = m.batches.iter().map(|(b, _)| *b).collect();
    prop_assert_eq!(bases, want_bases);
    prop_assert_eq!(got, m.records_from(m.start));
    Ok(())
}

fn run(ops: &[Op], io: SegmentIo) -> Result<(), TestCaseError> {
    run_traced(ops, io).map(|_| ())
}

/// [`run`], returning the storage operations it made. `io.direct_io`: segments
/// append with O_DIRECT (512-byte alignment on the fault backend, whose
/// power cuts tear at 512-byte sectors).
fn run_traced(ops: &[Op], io: SegmentIo) -> Result<Vec<String>, TestCaseError> {
    let fault = FaultStorage::new(7);
    fault.set_trace(true);
    fault.set_torn_writes(true);
    fault.set_direct_alignment(Some(512));
    let mut storage: StorageRef = Arc::new(fault.clone());
    let (mut mgr, mut p) = open_direct(&storage, io);
    let mut m = Model::default();
    let mut clock = 1_000i64;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Append { n, vlen, sync } => {
                let recs: Vec<Record> = (0..*n)
                    .map(|j| {
                        clock += 1 + (j as i64 % 2);
                        let key = format!("k{}", (i + j as usize) % 7);
                        let value = vec![b'a' + (i % 26) as u8; *vlen as usize];
                        Record::new(clock, Some(key.as_bytes()), Some(&value))
                    })
                    .collect();
                let a = p
                    .append_records(&recs, ProducerInfo::NONE, 0, *sync)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(a.first_offset, m.end);
                prop_assert_eq!(a.last_offset, m.end + u64::from(*n) - 1);
                let rs = recs
                    .iter()
                    .enumerate()
                    .map(|(j, r)| MRec {
                        offset: m.end + j as u64,
                        ..to_m(r)
                    })
                    .collect();
                m.batches.push((m.end, rs));
                m.end += u64::from(*n);
                if *sync {
                    m.durable = m.end;
                }
            }
            Op::Read { at, max } => {
                let span = m.end - m.start + 1;
                let from = m.start + u64::from(*at) % span;
                let bs = p
                    .read(from, *max as usize, None)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(bs.is_empty(), from == m.end);
                let got: Vec<MRec> = bs
                    .iter()
                    .flat_map(|b| b.records())
                    .filter(|r| r.offset >= from)
                    .map(|r| to_m(&r))
                    .collect();
                let want = m.records_from(from);
                prop_assert_eq!(&got[..], &want[..got.len()]);
                // Out of range is an error, not an empty answer.
                let out_of_range = matches!(
                    p.read(m.end + 1, 100, None),
                    Err(Error::OffsetOutOfRange { .. })
                );
                prop_assert!(out_of_range);
            }
            Op::Roll => p.roll().map_err(|e| TestCaseError::fail(e.to_string()))?,
            Op::Flush => {
                p.flush().map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.durable = m.end;
            }
            Op::Retention => {
                let before: u64 = p.segments().iter().map(|s| s.1).sum();
                p.enforce_retention(clock)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let after: u64 = p.segments().iter().map(|s| s.1).sum();
                let start = p.log_start_offset();
                prop_assert!(start >= m.start && start <= m.end);
                // Only whole old segments go, and only while over the limit.
                if start > m.start {
                    prop_assert!(before > 6000);
                    prop_assert!(after >= 6000, "{} -> {}", before, after);
                }
                m.drop_before(start);
            }
            Op::DeleteBefore(x) => {
                let hwm = p
                    .set_high_watermark(m.end)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(hwm, m.end);
                let to = m.start + u64::from(*x) % (m.end - m.start + 1);
                let s = p
                    .delete_records_before(to)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(s, to.max(m.start));
                m.drop_before(s);
                let below = matches!(
                    p.read(s.saturating_sub(1), 100, None),
                    Err(Error::OffsetOutOfRange { .. })
                );
                prop_assert!(below || s == 0);
            }
            Op::Truncate(x) => {
                let to = m.start + u64::from(*x) % (m.end - m.start + 1);
                let end = p
                    .truncate_to(to)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                // By whole batches: the first batch holding `to` or later
                // goes; a cut at or below the log start empties the log.
                let want = if to >= m.end {
                    m.end
                } else if to <= m.start {
                    to
                } else {
                    let b = m
                        .batches
                        .iter()
                        .find(|(_, rs)| rs.last().is_some_and(|r| r.offset >= to))
                        .map_or(m.end, |(b, _)| *b);
                    b.max(m.start)
                };
                prop_assert_eq!(end, want);
                if want < m.end && want <= m.start {
                    m.batches.clear();
                    m.start = want;
                    m.end = want;
                    m.durable = want;
                } else {
                    m.cut_to(want);
                }
            }
            Op::TimeLookup(x) => {
                let ts = 1000 + i64::from(*x) % (clock - 999);
                let got = p
                    .offset_for_timestamp(ts)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = m
                    .records_from(m.start)
                    .iter()
                    .find(|r| r.ts >= ts)
                    .map(|r| r.offset);
                prop_assert_eq!(got, want, "timestamp {}", ts);
            }
            Op::Reopen => {
                drop(p);
                mgr.close()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                drop(mgr);
                (mgr, p) = open_direct(&storage, io);
                m.durable = m.end;
                check_whole(&p, &m)?;
            }
            Op::Crash { seed } => {
                drop(p);
                drop(mgr);
                fault.set_crash_keep(CrashKeep::Random);
                fault.crash_seeded(*seed);
                storage = Arc::new(fault.reopen());
                (mgr, p) = open_direct(&storage, io);
                let end = p.log_end_offset();
                // Everything flushed survives; a start moved durably past
                // data the cut lost stands, with the log empty from there.
                let floor = m.durable.max(m.start);
                prop_assert!(
                    end >= floor && end <= m.end.max(m.start),
                    "recovered end {} outside [{}, {}]",
                    end,
                    floor,
                    m.end
                );
                prop_assert!(
                    end == m.end || m.batches.iter().any(|(b, _)| *b == end) || end == m.start,
                    "recovered end {} is not a batch boundary",
                    end
                );
                m.cut_to(end);
                if end == m.start {
                    m.batches.clear();
                }
                m.durable = end;
                check_whole(&p, &m)?;
            }
        }
        prop_assert_eq!(p.log_end_offset(), m.end, "after op {} {:?}", i, op);
    }
    check_whole(&p, &m)?;
    Ok(fault.trace())
}

/// A case of the model test is a reproduction: the same operations and
/// crash seeds make the same storage operations, recoveries included.
#[test]
fn a_log_case_replays_the_same_storage_operations() {
    let mut ops = Vec::new();
    for i in 0..30u16 {
        ops.push(Op::Append {
            n: (i % 5 + 1) as u8,
            vlen: i * 7 % 300,
            sync: i % 4 == 0,
        });
        match i % 10 {
            3 => ops.push(Op::Roll),
            5 => ops.push(Op::Crash {
                seed: u64::from(i) * 7919,
            }),
            7 => ops.push(Op::Reopen),
            9 => ops.push(Op::Truncate(i * 3)),
            _ => {}
        }
    }
    let first = run_traced(&ops, SegmentIo::default()).expect("the model holds");
    let second = run_traced(&ops, SegmentIo::default()).expect("the model holds");
    assert!(first.iter().any(|op| op.starts_with("crash kept")));
    assert!(
        first.iter().any(|op| op.contains("/meta/")),
        "the metadata store is traced"
    );
    assert_eq!(first, second);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_a_vec_model_through_reopens_and_power_cuts(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, SegmentIo::default())?;
    }

    /// The same with segments appended through O_DIRECT: padded tails,
    /// resent partial pages and sectors torn by a power cut never lose a
    /// flushed batch or show an unwritten one.
    #[test]
    fn a_direct_io_log_matches_the_model_through_reopens_and_power_cuts(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, DIRECT)?;
    }

    /// ... and writing behind: appends held in the writer's buffers until
    /// a read, flush, roll or truncation; a power cut loses only unflushed
    /// ones.
    #[test]
    fn a_write_behind_log_matches_the_model_through_reopens_and_power_cuts(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, WRITE_BEHIND)?;
    }
}

/// Found by the directory model (a new directory is pending until its
/// parent is synced): the partition directory was never made durable, so a
/// power cut took the whole partition, flushed batch included.
#[test]
fn regression_a_power_cut_lost_the_new_partition_directory_with_its_flushed_batch() {
    run(
        &[
            Op::Append {
                n: 1,
                vlen: 0,
                sync: true,
            },
            Op::Crash {
                seed: 5010472632020906469,
            },
        ],
        SegmentIo::default(),
    )
    .expect("a flushed batch in a new partition survives a power cut");
}

/// Found once crash choices followed the generated seed: recovery cut a
/// torn tail but kept the writeback mark of the longer file, and the next
/// append underflowed computing what to write back (a panic).
#[test]
fn regression_an_append_after_a_cut_tail_underflowed_the_writeback_mark() {
    run(
        &[
            Op::Append {
                n: 1,
                vlen: 0,
                sync: false,
            },
            Op::Truncate(4766),
            Op::Append {
                n: 5,
                vlen: 109,
                sync: false,
            },
            Op::Crash {
                seed: 16614906597525398968,
            },
            Op::Append {
                n: 1,
                vlen: 156,
                sync: true,
            },
        ],
        SegmentIo::default(),
    )
    .expect("appends after a cut tail work");
}

#[test]
fn idempotent_producer_retries_are_never_appended_twice_across_restarts_and_crashes() {
    let fault = FaultStorage::new(3);
    let mut storage: StorageRef = Arc::new(fault.clone());
    let (mut mgr, mut p) = open(&storage);
    // Sequences 0..=2, 3..=5, 6..=8 from producer 9, epoch 0.
    let mut sent = Vec::new();
    for k in 0..3 {
        let b = batch::build(0, 0, producer(9, 0, 3 * k), &recs(3, "x")).expect("build");
        let a = p.append(b.clone(), 0, true).expect("append");
        assert!(!a.duplicate);
        sent.push((b, a));
    }
    let end = p.log_end_offset();
    // A retry of any of the last five batches returns its original offsets.
    for (b, a) in &sent {
        let r = p.append(b.clone(), 0, true).expect("retry");
        assert!(r.duplicate);
        assert_eq!(
            (r.first_offset, r.last_offset),
            (a.first_offset, a.last_offset)
        );
    }
    assert_eq!(p.log_end_offset(), end, "a duplicate was appended");
    // A gap in the sequence is refused, naming what was expected.
    let gap = batch::build(0, 0, producer(9, 0, 11), &recs(1, "x")).expect("build");
    match p.append(gap.clone(), 0, true) {
        Err(Error::OutOfOrderSequence { expected, got, .. }) => {
            assert_eq!((expected, got), (9, 11))
        }
        other => panic!("gap accepted: {other:?}"),
    }
    // A new producer must start at 0.
    let fresh = batch::build(0, 0, producer(10, 0, 4), &recs(1, "y")).expect("build");
    assert!(matches!(
        p.append(fresh.clone(), 0, true),
        Err(Error::OutOfOrderSequence { .. })
    ));
    // A roll snapshots the state; more batches follow in the new segment.
    p.roll().expect("roll");
    let b4 = batch::build(0, 0, producer(9, 0, 9), &recs(2, "x")).expect("build");
    let a4 = p.append(b4.clone(), 0, true).expect("append");
    // After a clean restart (snapshot + replay) retries are still caught.
    drop(p);
    mgr.close().expect("close");
    drop(mgr);
    (mgr, p) = open(&storage);
    let r = p.append(b4.clone(), 0, true).expect("retry after restart");
    assert!(r.duplicate);
    assert_eq!(r.first_offset, a4.first_offset);
    let r = p
        .append(sent[2].0.clone(), 0, true)
        .expect("retry after restart");
    assert!(r.duplicate);
    // After a power cut too (everything was appended with sync).
    drop(p);
    drop(mgr);
    fault.set_crash_keep(CrashKeep::None);
    fault.crash();
    storage = Arc::new(fault.reopen());
    let (_mgr, p) = open(&storage);
    let r = p.append(b4.clone(), 0, true).expect("retry after crash");
    assert!(r.duplicate, "a retry after a crash was appended again");
    // A new epoch fences the old one.
    let e1 = batch::build(0, 0, producer(9, 1, 0), &recs(1, "x")).expect("build");
    assert!(!p.append(e1.clone(), 0, true).expect("new epoch").duplicate);
    let old = batch::build(0, 0, producer(9, 0, 11), &recs(1, "x")).expect("build");
    assert!(matches!(
        p.append(old.clone(), 0, true),
        Err(Error::ProducerFenced { current: 1, .. })
    ));
}

fn segment_files(storage: &StorageRef, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new("/logs/t-0");
    let mut v: Vec<PathBuf> = storage
        .list_dir(dir)
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .map(|n| dir.join(n))
        .collect();
    v.sort();
    v
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt_and_a_damaged_flushed_batch_is_reported() {
    let fault = FaultStorage::new(4);
    let storage: StorageRef = Arc::new(fault.clone());
    let (mgr, p) = open(&storage);
    for i in 0..60 {
        p.append_records(&recs(2, &format!("k{i}")), ProducerInfo::NONE, 0, false)
            .expect("append");
    }
    p.flush().expect("flush");
    assert!(p.segments().len() >= 3, "{:?}", p.segments());
    let mut m = Model {
        end: p.log_end_offset(),
        ..Model::default()
    };
    let (bases, got) = read_all(&p, 0).expect("read");
    let _ = bases;
    m.batches = vec![(0, got)];
    drop(p);
    mgr.close().expect("close");
    drop(mgr);

    // Garbage in one index, another index gone: both rebuilt.
    let idx = segment_files(&storage, "index");
    let bytes = fault.contents(&idx[0]).expect("index");
    let mut bad = bytes.clone();
    bad[5] ^= 0x80;
    fault.install(&idx[0], &bad).expect("damage");
    storage.remove_file(&idx[1]).expect("remove");
    let (mgr, p) = open(&storage);
    let (_, got) = read_all(&p, 0).expect("read after rebuild");
    assert_eq!(got, m.batches[0].1);
    for off in [0u64, 17, 55, 119] {
        let bs = p.read(off, 1, None).expect("read");
        let first = bs[0].records();
        assert!(first.iter().any(|r| r.offset == off), "offset {off}");
    }
    drop(p);
    mgr.close().expect("close");
    drop(mgr);

    // A flipped bit in a flushed batch of the first segment: reads of it
    // fail naming the file and offset; nothing wrong is served.
    let log = &segment_files(&storage, "log")[0];
    let mut bytes = fault.contents(log).expect("log");
    bytes[100] ^= 0x01;
    fault.install(log, &bytes).expect("damage");
    let (_mgr, p) = open(&storage);
    let err = read_all(&p, 0).expect_err("damage served");
    match err {
        Error::Corruption { path, .. } => assert_eq!(&path, log),
        e => panic!("wrong error {e}"),
    }
}

#[test]
fn a_torn_unflushed_tail_is_cut_at_the_last_whole_batch() {
    let fault = FaultStorage::new(5);
    let storage: StorageRef = Arc::new(fault.clone());
    let (mgr, p) = open(&storage);
    for i in 0..5 {
        p.append_records(&recs(1, &format!("k{i}")), ProducerInfo::NONE, 0, i == 2)
            .expect("append");
    }
    drop(p);
    drop(mgr);
    // Cut the last batch in half.
    let log = segment_files(&storage, "log").pop().expect("a segment");
    let bytes = fault.contents(&log).expect("log");
    fault
        .install(&log, &bytes[..bytes.len() - 10])
        .expect("cut");
    let (_mgr, p) = open(&storage);
    assert_eq!(p.log_end_offset(), 4);
    let (_, got) = read_all(&p, 0).expect("read");
    assert_eq!(got.len(), 4);
    // The log goes on from the cut.
    let a = p
        .append_records(&recs(1, "z"), ProducerInfo::NONE, 0, true)
        .expect("append");
    assert_eq!(a.first_offset, 4);
}

/// Base offset, length and leader epoch lie outside Kafka's CRC-32C (a
/// leader stamps offset and epoch in place). Every single flipped bit in
/// them, in a flushed batch of a sealed segment and in the unflushed last
/// batch, is caught by the batch's position: reads of the flushed batch
/// fail naming the file; recovery cuts the unflushed one. No record is
/// ever served under another offset or epoch.
#[test]
fn a_flipped_bit_in_base_offset_length_or_epoch_is_caught() {
    use strata::log::batch::{Batch, Parsed};
    // The same log every time (a fresh store per case: recovery rewrites).
    let build = || {
        let fault = FaultStorage::new(21);
        let storage: StorageRef = Arc::new(fault.clone());
        let (mgr, p) = open(&storage);
        for (i, epoch) in [1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4].into_iter().enumerate() {
            p.append_records(&recs(3, &format!("k{i}")), ProducerInfo::NONE, epoch, true)
                .expect("append");
            if i == 6 {
                p.roll().expect("roll");
            }
        }
        // One more, not flushed: the tail recovery scans.
        p.append_records(&recs(2, "tail"), ProducerInfo::NONE, 4, false)
            .expect("append");
        let (_, want) = read_all(&p, 0).expect("read");
        drop(p);
        drop(mgr);
        (fault, storage, want)
    };
    let (fault, storage, want) = build();
    let logs = segment_files(&storage, "log");
    assert!(logs.len() >= 2);
    let batches_of = |path: &PathBuf| {
        let bytes = bytes::Bytes::from(fault.contents(path).expect("log"));
        let mut out = Vec::new();
        let mut pos = 0;
        while let Parsed::Batch(b) = Batch::parse(&bytes.slice(pos..)) {
            out.push(pos);
            pos += b.bytes.len();
        }
        out
    };
    let sealed = batches_of(&logs[0]);
    assert!(sealed.len() >= 3);
    let last_log = logs.last().expect("segments").clone();
    let tail = *batches_of(&last_log).last().expect("a tail batch");
    let targets = [
        (logs[0].clone(), sealed[1], true),
        (logs[0].clone(), *sealed.last().expect("batch"), true),
        (last_log, tail, false),
    ];
    for (path, at, flushed) in targets {
        for byte in 0..16 {
            for bit in 0..8 {
                let (fault, storage, _) = build();
                let mut bad = fault.contents(&path).expect("log");
                bad[at + byte] ^= 1 << bit;
                fault.install(&path, &bad).expect("damage");
                let what = format!(
                    "{} byte {byte} bit {bit} of the batch at {at}",
                    path.display()
                );
                let opts = strata::log::ManagerOptions {
                    background_threads: false,
                    ..Default::default()
                };
                let opened = strata::log::LogManager::open_with(storage.clone(), "/logs", opts)
                    .and_then(|m| m.partition("t", 0).map(|p| (m, p)));
                match opened {
                    Err(Error::Corruption { path: f, .. }) => assert_eq!(f, path, "{what}"),
                    Err(e) => panic!("{what}: {e}"),
                    Ok((_m, p)) => match read_all(&p, 0) {
                        Err(Error::Corruption { path: f, .. }) => {
                            assert!(flushed, "{what}: the unflushed tail is cut, not reported");
                            assert_eq!(f, path, "{what}");
                        }
                        Err(e) => panic!("{what}: {e}"),
                        Ok((_, got)) => {
                            // Served: only what was written, at its offsets,
                            // the tail cut.
                            assert!(!flushed, "{what}: damage served");
                            assert!(got.len() < want.len(), "{what}: not cut");
                            assert_eq!(got[..], want[..got.len()], "{what}");
                            let epochs = p.epochs();
                            assert!(
                                epochs.iter().all(|&(e, _)| e <= 4),
                                "{what}: an epoch no leader had: {epochs:?}"
                            );
                        }
                    },
                }
            }
        }
    }
}

/// With O_DIRECT the active segment's file ends on a page boundary, zeros
/// after its last batch. A reopen reads the padding as the end (no torn
/// tail reported, nothing lost), a roll cuts it off the sealed segment,
/// and appends go on in the partial page.
#[test]
fn a_direct_io_segment_is_padded_to_a_page_and_the_padding_reads_as_its_end() {
    let fault = FaultStorage::new(6);
    fault.set_direct_alignment(Some(512));
    let storage: StorageRef = Arc::new(fault.clone());
    let (mgr, p) = open_direct(&storage, DIRECT);
    for i in 0..3 {
        p.append_records(&recs(1, &format!("k{i}")), ProducerInfo::NONE, 0, i == 1)
            .expect("append");
    }
    let active = segment_files(&storage, "log").pop().expect("a segment");
    let (_, size) = *p.segments().last().expect("a segment");
    let len = storage
        .open(&active, strata::io::OpenOptions::existing())
        .and_then(|f| f.len())
        .expect("len");
    assert!(
        len.is_multiple_of(512) && len > size,
        "padded: {len} vs {size} bytes of batches"
    );
    p.flush().expect("flush");
    drop(p);
    mgr.close().expect("close");
    drop(mgr);
    let opts = strata::log::ManagerOptions {
        background_threads: false,
        direct_io: true,
        ..Default::default()
    };
    let mgr = strata::log::LogManager::open_with(storage.clone(), "/logs", opts).expect("open");
    let (p, report) = mgr.partition_with_report("t", 0).expect("partition");
    let report = report.expect("opened by this call");
    assert!(
        report.truncated.is_none(),
        "padding read as damage: {:?}",
        report.truncated
    );
    assert_eq!(p.log_end_offset(), 3);
    // Roll: the sealed segment is cut to its batches.
    p.append_records(&recs(2, "after"), ProducerInfo::NONE, 0, false)
        .expect("append after reopen");
    p.roll().expect("roll");
    let sealed = &segment_files(&storage, "log")[0];
    let (_, sealed_size) = p.segments()[0];
    let sealed_len = storage
        .open(sealed, strata::io::OpenOptions::existing())
        .and_then(|f| f.len())
        .expect("len");
    assert_eq!(sealed_len, sealed_size, "a sealed segment keeps no padding");
    let (_, got) = read_all(&p, 0).expect("read");
    let keys: Vec<Vec<u8>> = got.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(keys[0], b"k0".to_vec(), "{keys:?}");
}

/// Direct segments with zeros prepared ahead (`preallocate`): the file
/// runs megabytes past the last batch, all zeros. Power cuts at several
/// points keep every flushed batch, show no unwritten one, and a reopen
/// reads the prepared zeros as the end; appends go on after it.
#[test]
fn a_preallocated_direct_log_keeps_flushed_batches_through_power_cuts() {
    for seed in 0..4u64 {
        let fault = FaultStorage::new(seed);
        fault.set_direct_alignment(Some(512));
        let opts = strata::log::ManagerOptions {
            background_threads: false,
            direct_io: true,
            write_behind: true,
            preallocate: true,
            ..Default::default()
        };
        let storage: StorageRef = Arc::new(fault.clone());
        let mgr = strata::log::LogManager::open_with(storage.clone(), "/logs", opts).expect("open");
        let cfg = strata::log::LogConfig {
            segment_bytes: 64 << 20,
            retention_ms: None,
            segment_ms: None,
            ..strata::log::LogConfig::default()
        };
        mgr.create_topic("t", 1, cfg).expect("create");
        let p = mgr.partition("t", 0).expect("partition");
        let value = vec![7u8; 1000];
        let mut flushed = 0;
        let batches = 60 + seed * 13;
        for i in 0..batches {
            let recs: Vec<Record> = (0..100)
                .map(|j| Record::new(1000 + j, Some(format!("k{i}").as_bytes()), Some(&value)))
                .collect();
            p.append_records(&recs, ProducerInfo::NONE, 0, false)
                .expect("append");
            if i % 17 == 16 {
                p.flush().expect("flush");
                flushed = p.log_end_offset();
            }
        }
        let len = storage
            .open(
                &segment_files(&storage, "log")[0],
                strata::io::OpenOptions::existing(),
            )
            .and_then(|f| f.len())
            .expect("len");
        let (_, size) = p.segments()[0];
        assert!(
            len > size + (4 << 20),
            "seed {seed}: zeros prepared ahead ({len} vs {size})"
        );
        let leo = p.log_end_offset();
        drop(p);
        drop(mgr);
        fault.set_crash_keep(if seed % 2 == 0 {
            CrashKeep::Random
        } else {
            CrashKeep::All
        });
        fault.crash_seeded(seed);
        let storage: StorageRef = Arc::new(fault.reopen());
        let mgr =
            strata::log::LogManager::open_with(storage.clone(), "/logs", opts).expect("reopen");
        let (p, report) = mgr.partition_with_report("t", 0).expect("partition");
        let end = p.log_end_offset();
        assert!(
            end >= flushed && end <= leo,
            "seed {seed}: end {end} outside [{flushed}, {leo}]"
        );
        if seed % 2 == 1 {
            // Everything was kept: the prepared zeros are the end, not damage.
            assert_eq!(end, leo, "seed {seed}");
            let report = report.expect("opened here");
            assert!(
                report.truncated.is_none(),
                "seed {seed}: {:?}",
                report.truncated
            );
        }
        let (_, got) = read_all(&p, 0).expect("read");
        assert_eq!(
            got.len() as u64,
            end,
            "seed {seed}: every record below the end reads"
        );
        assert!(got.iter().all(|r| r.value == value));
        let a = p
            .append_records(&recs(1, "after"), ProducerInfo::NONE, 0, true)
            .expect("append after the cut");
        assert_eq!(a.first_offset, end);
    }
}
