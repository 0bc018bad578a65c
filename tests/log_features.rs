//! The segmented log's features one at a time: committed reads and the
//! leader-epoch cache (a fence), the cleaner of compacted topics (also
//! while appends go on), mapped reads through truncation, time and
//! retention, background maintenance, concurrent readers, the durable end.

use std::sync::Arc;

mod log_common;

use log_common::{open, read_all, recs, reopen, small_config, to_m, MRec};
use strata::io::fault::FaultStorage;
use strata::io::StorageRef;
use strata::log::batch::{self, ProducerInfo, Record};
use strata::log::{Error, LogConfig, LogManager, Partition};

#[test]
fn committed_reads_stop_at_the_high_watermark_and_epochs_answer_end_offsets() {
    let fault = FaultStorage::new(6);
    let storage: StorageRef = Arc::new(fault.clone());
    let (mgr, p) = open(&storage);
    p.assign_epoch(1).expect("epoch");
    for i in 0..4 {
        p.append_records(&recs(2, &format!("k{i}")), ProducerInfo::NONE, 1, false)
            .expect("append");
    }
    p.assign_epoch(3).expect("epoch");
    p.append_records(&recs(2, "k9"), ProducerInfo::NONE, 3, false)
        .expect("append");
    assert_eq!(p.set_high_watermark(5).expect("hwm"), 5);
    let got: Vec<u64> = p
        .read_committed(0, 1 << 20)
        .expect("read")
        .iter()
        .flat_map(|b| b.records())
        .map(|r| r.offset)
        .collect();
    // Whole batches below the watermark only: [0,1], [2,3].
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(p.end_offset_for_epoch(1), Some((1, 8)));
    assert_eq!(p.end_offset_for_epoch(2), Some((1, 8)));
    assert_eq!(p.end_offset_for_epoch(3), Some((3, 10)));
    assert_eq!(p.end_offset_for_epoch(0), None);
    // Truncation drops the epochs that started past the new end, durably.
    assert_eq!(p.truncate_to(7).expect("truncate"), 6);
    assert_eq!(p.epochs(), vec![(1, 0)]);
    let (mgr, p) = reopen(mgr, p, &storage);
    assert_eq!(p.epochs(), vec![(1, 0)]);
    assert_eq!(p.log_end_offset(), 6);
    // An epoch assigned at the end by a leader that wrote nothing goes
    // with a truncation to that end (a follower must not keep announcing
    // it), durably.
    p.assign_epoch(4).expect("epoch");
    assert_eq!(p.epochs(), vec![(1, 0), (4, 6)]);
    assert_eq!(p.truncate_to(6).expect("truncate"), 6);
    assert_eq!(p.epochs(), vec![(1, 0)]);
    let (mgr, p) = reopen(mgr, p, &storage);
    assert_eq!(p.epochs(), vec![(1, 0)]);
    // Consumer-group offsets.
    mgr.commit_offset("g1", "t", 0, 4, b"meta").expect("commit");
    assert_eq!(
        mgr.fetch_offset("g1", "t", 0).expect("fetch"),
        Some((4, b"meta".to_vec()))
    );
    assert_eq!(mgr.fetch_offset("g2", "t", 0).expect("fetch"), None);
    assert!(mgr.commit_offset("", "t", 0, 1, b"").is_err());
    // Several at once (one synced write), listed back by group.
    mgr.commit_offsets(
        "g3",
        &[
            ("t".into(), 0, 7, b"a".to_vec()),
            ("u".into(), 2, 9, Vec::new()),
        ],
    )
    .expect("commit several");
    assert_eq!(
        mgr.group_offsets("g3").expect("list"),
        vec![
            ("t".to_string(), 0, 7, b"a".to_vec()),
            ("u".to_string(), 2, 9, Vec::new())
        ]
    );
    assert!(mgr
        .commit_offsets("g3", &[("bad/name".into(), 0, 1, Vec::new())])
        .is_err());
    assert_eq!(
        mgr.group_offsets("g3").expect("list").len(),
        2,
        "all or none"
    );
    assert!(mgr.partition("t", 5).is_err());
    assert!(mgr
        .create_topic("bad/name", 1, LogConfig::default())
        .is_err());
}

#[test]
fn the_cleaner_keeps_the_latest_record_per_key_with_its_offset_and_drops_old_tombstones() {
    use strata::log::CleanupPolicy;
    let fault = FaultStorage::new(8);
    let storage: StorageRef = Arc::new(fault.clone());
    let mgr = LogManager::open(storage.clone(), "/logs").expect("open");
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1000,
        ..small_config()
    };
    mgr.create_topic("c", 1, cfg).expect("create");
    let p = mgr.partition("c", 0).expect("partition");
    // Null keys are refused in a compacted topic.
    let keyless = Record::new(1, None, Some(b"v"));
    assert!(matches!(
        p.append_records(&[keyless], ProducerInfo::NONE, 0, false),
        Err(Error::InvalidBatch(_))
    ));
    // 400 writes over 10 keys; key 3 ends with a tombstone (at time 10_000
    // + i), key 4 with an early tombstone then a value.
    let mut latest: std::collections::BTreeMap<String, (u64, Option<Vec<u8>>)> = Default::default();
    for i in 0..400u64 {
        let k = format!("key{}", i % 10);
        let tomb = (k == "key3" && i >= 390) || (k == "key4" && i == 104);
        let v = format!("value-{i}");
        let r = Record::new(
            10_000 + i as i64,
            Some(k.as_bytes()),
            (!tomb).then_some(v.as_bytes()),
        );
        let a = p
            .append_records(&[r], ProducerInfo::NONE, 0, false)
            .expect("append");
        latest.insert(k, (a.first_offset, (!tomb).then(|| v.into_bytes())));
    }
    let end = p.log_end_offset();
    let segments_before = p.segments().len();
    assert!(segments_before > 3);
    // Tombstones are young at time 10_500: kept.
    let s = p.compact(10_500).expect("compact");
    assert!(s.segments_cleaned > 0 && s.records_removed > 300, "{s:?}");
    assert!(s.bytes_after < s.bytes_before / 4, "{s:?}");
    assert_eq!(p.log_end_offset(), end);
    let check = |p: &Partition, tombstones_kept: bool| {
        let (_, recs) = read_all(p, 0).expect("read");
        let mut seen = std::collections::BTreeMap::new();
        for r in &recs {
            let k = String::from_utf8(r.key.clone()).expect("utf8");
            seen.entry(k).or_insert_with(Vec::new).push(r.offset);
        }
        for (k, (off, v)) in &latest {
            let offs = seen.get(k).cloned().unwrap_or_default();
            // The latest record is there, at its own offset, with its value.
            if v.is_some() || tombstones_kept {
                assert_eq!(offs.last(), Some(off), "{k}");
                let r = recs.iter().find(|r| r.offset == *off).expect("latest");
                assert_eq!(r.value, v.clone().unwrap_or_default());
            } else {
                assert!(
                    offs.is_empty() || offs.last() != Some(off) || v.is_some(),
                    "{k}"
                );
            }
        }
        recs.len()
    };
    let n_before = check(&p, true);
    assert!(n_before < 60, "{n_before} records left");
    // Later the tombstones expire and go (the one in the active segment stays).
    p.roll().expect("roll");
    p.compact(1_000_000).expect("compact");
    check(&p, false);
    let (_, recs) = read_all(&p, 0).expect("read");
    assert!(recs
        .iter()
        .all(|r| !(r.key == b"key3" && r.value.is_empty())));
    // Survives a reopen, offsets and all; appends continue after the end.
    drop(p);
    mgr.close().expect("close");
    drop(mgr);
    let mgr = LogManager::open(storage, "/logs").expect("reopen");
    let p = mgr.partition("c", 0).expect("partition");
    check(&p, false);
    assert_eq!(p.log_end_offset(), end);
    let a = p
        .append_records(
            &[Record::new(1, Some(b"key1"), Some(b"x"))],
            ProducerInfo::NONE,
            0,
            true,
        )
        .expect("append");
    assert_eq!(a.first_offset, end);
    // A delete-policy topic has no cleaner.
    mgr.create_topic("d", 1, small_config()).expect("create");
    assert!(mgr.partition("d", 0).expect("p").compact(0).is_err());
}

/// On the std backend sealed segments are memory-mapped and reads hand out
/// slices of the map. Truncating into a sealed segment while a reader
/// still holds such slices must not shrink the mapped file under it.
#[test]
fn reads_of_mapped_segments_stay_valid_through_truncation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let storage = strata::io::open_storage(strata::io::Backend::Std);
    let mgr = LogManager::open(storage.clone(), tmp.path()).expect("open");
    mgr.create_topic("t", 1, small_config()).expect("create");
    let p = mgr.partition("t", 0).expect("partition");
    for i in 0..150 {
        p.append_records(&recs(3, &format!("k{i}")), ProducerInfo::NONE, 0, false)
            .expect("append");
    }
    assert!(p.segments().len() > 3);
    // Hold batches read from the first (sealed, mapped) segment.
    let held = p.read(0, 1 << 20, None).expect("read");
    let before: Vec<Vec<MRec>> = held
        .iter()
        .map(|b| b.records().iter().map(to_m).collect())
        .collect();
    // Cut into that segment: the log ends after its first two batches.
    let end = p.truncate_to(held[2].base_offset()).expect("truncate");
    assert_eq!(end, held[2].base_offset());
    assert_eq!(p.segments().len(), 1);
    // The held slices still read as they did.
    let after: Vec<Vec<MRec>> = held
        .iter()
        .map(|b| b.records().iter().map(to_m).collect())
        .collect();
    assert_eq!(before, after);
    // And the log reads and grows from the cut, also after a reopen.
    let a = p
        .append_records(&recs(1, "new"), ProducerInfo::NONE, 0, true)
        .expect("append");
    assert_eq!(a.first_offset, end);
    drop(p);
    mgr.close().expect("close");
    drop(mgr);
    let mgr = LogManager::open(storage, tmp.path()).expect("reopen");
    let p = mgr.partition("t", 0).expect("partition");
    let (_, got) = read_all(&p, 0).expect("read");
    assert_eq!(got.len() as u64, end + 1);
    assert_eq!(got[..end as usize], before.concat()[..end as usize]);
}

#[test]
fn segments_roll_by_age_and_expire_by_retention_ms() {
    let fault = FaultStorage::new(9);
    let storage: StorageRef = Arc::new(fault.clone());
    let mgr = LogManager::open(storage, "/logs").expect("open");
    let cfg = LogConfig {
        segment_ms: Some(1000),
        retention_ms: Some(5000),
        retention_bytes: None,
        ..LogConfig::default()
    };
    mgr.create_topic("aged", 1, cfg).expect("create");
    let p = mgr.partition("aged", 0).expect("partition");
    // Timestamps 0, 400, ..., 9600: a new segment whenever the first
    // batch of the active one is 1000 ms older.
    for i in 0..25i64 {
        let r = Record::new(i * 400, Some(b"k"), Some(b"v"));
        p.append_records(&[r], ProducerInfo::NONE, 0, false)
            .expect("append");
    }
    let segs = p.segments();
    assert_eq!(segs.len(), 9, "{segs:?}");
    // At 10_000 everything older than 5000 goes: segments whose newest
    // record is below 5000 (batches 0..=12), never the active segment.
    let n = p.enforce_retention(10_000).expect("retention");
    assert!(n >= 3, "{n}");
    let start = p.log_start_offset();
    let first = p.read(start, 1 << 20, None).expect("read");
    let oldest = first[0].records()[0].timestamp;
    assert!(p.segments().len() == 9 - n);
    // What is left has a record at or after 5000 in every segment, and the
    // records before the start are gone.
    assert!(first
        .iter()
        .flat_map(|b| b.records())
        .any(|r| r.timestamp >= 5000));
    assert!(oldest >= 2800, "{oldest}");
    assert!(matches!(
        p.read(start - 1, 100, None),
        Err(Error::OffsetOutOfRange { .. })
    ));
    assert_eq!(p.offset_for_timestamp(0).expect("lookup"), Some(start));
    assert_eq!(p.offset_for_timestamp(9601).expect("lookup"), None);
    assert_eq!(p.offset_for_timestamp(9600).expect("lookup"), Some(24));
    // ListOffsets answers the found record's own timestamp, not the one
    // asked for: 5001 finds the record stamped 5200 (offset 13).
    assert_eq!(
        p.record_for_timestamp(5001).expect("lookup"),
        Some((13, 5200))
    );
    assert_eq!(
        p.record_for_timestamp(9600).expect("lookup"),
        Some((24, 9600))
    );
    // -3 (KIP-734): the newest timestamp and its record.
    assert_eq!(p.max_timestamp_record().expect("max"), Some((24, 9600)));
    // An older record stamped later than every other: it is the maximum,
    // wherever it sits.
    p.append_records(
        &[Record::new(50_000, Some(b"k"), Some(b"late"))],
        ProducerInfo::NONE,
        0,
        false,
    )
    .expect("append");
    p.append_records(
        &[Record::new(100, Some(b"k"), Some(b"early"))],
        ProducerInfo::NONE,
        0,
        false,
    )
    .expect("append");
    assert_eq!(p.max_timestamp_record().expect("max"), Some((25, 50_000)));
}

#[test]
fn the_manager_applies_retention_and_cleaning_in_the_background() {
    use strata::log::{CleanupPolicy, ManagerOptions};
    let fault = FaultStorage::new(10);
    let storage: StorageRef = Arc::new(fault.clone());
    let opts = ManagerOptions {
        maintenance_interval: Some(std::time::Duration::from_millis(20)),
        ..ManagerOptions::default()
    };
    let mgr = LogManager::open_with(storage, "/logs", opts).expect("open");
    mgr.create_topic("sized", 1, small_config())
        .expect("create");
    let compacted = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..small_config()
    };
    mgr.create_topic("keyed", 1, compacted).expect("create");
    let sized = mgr.partition("sized", 0).expect("partition");
    let keyed = mgr.partition("keyed", 0).expect("partition");
    for i in 0..120 {
        sized
            .append_records(&recs(2, &format!("k{i}")), ProducerInfo::NONE, 0, false)
            .expect("append");
        let r = Record::new(i, Some(b"same-key"), Some(format!("v{i}").as_bytes()));
        keyed
            .append_records(&[r], ProducerInfo::NONE, 0, false)
            .expect("append");
    }
    // No call from here: the background thread must do it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let total: u64 = sized.segments().iter().map(|s| s.1).sum();
        let (_, left) = read_all(&keyed, keyed.log_start_offset()).expect("read");
        if sized.log_start_offset() > 0 && total < 6000 + 2048 && left.len() < 60 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no background retention or cleaning: start {}, {} bytes, {} keyed records",
            sized.log_start_offset(),
            total,
            left.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (_, left) = read_all(&keyed, 0).expect("read");
    assert_eq!(left.last().map(|r| r.value.clone()), Some(b"v119".to_vec()));
    mgr.close().expect("close");
}

/// Readers tailing the log while a writer appends and rolls: every read
/// sees whole batches, offsets without gaps or repeats, and the values
/// written at those offsets.
#[test]
fn concurrent_readers_see_whole_batches_in_order_while_the_writer_appends() {
    let fault = FaultStorage::new(11);
    let storage: StorageRef = Arc::new(fault.clone());
    let (_mgr, p) = open(&storage);
    let total = 3000u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut next = 0u64;
            while next < total {
                let n = 1 + next % 4;
                let recs: Vec<Record> = (next..next + n)
                    .map(|o| Record::new(o as i64, Some(b"k"), Some(format!("v{o}").as_bytes())))
                    .collect();
                let a = p
                    .append_records(&recs, ProducerInfo::NONE, 0, false)
                    .expect("append");
                assert_eq!(a.first_offset, next);
                next += n;
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                let mut at = 0u64;
                while at < total {
                    let bs = p.read(at, 300, None).expect("read");
                    for b in &bs {
                        assert_eq!(b.base_offset(), at, "a gap or a repeat");
                        for r in b.records() {
                            assert_eq!(
                                r.value.as_deref(),
                                Some(format!("v{}", r.offset).as_bytes())
                            );
                        }
                        at = b.last_offset() + 1;
                    }
                    if bs.is_empty() {
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
}

/// Reads copy bytes outside the partition lock (a truncation meanwhile
/// makes them read again). Under a writer that cuts two of every four
/// records it appends, tailing readers never fail and never see a record
/// at another offset. (The window between a read's plan and its copy is
/// microseconds, so this run rarely lands a truncation inside it: it
/// checks the outcome under concurrency, not that the retry fires.)
#[test]
fn reads_racing_truncations_never_fail_or_serve_misplaced_records() {
    // Real files: a truncation's fsync leaves readers a wide window.
    let tmp = tempfile::tempdir().expect("tmp");
    let storage = strata::io::open_storage(strata::io::Backend::Std);
    let mgr = LogManager::open(storage, tmp.path()).expect("open");
    mgr.create_topic("t", 1, small_config()).expect("create");
    let p = mgr.partition("t", 0).expect("partition");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for round in 0..200u64 {
                for _ in 0..4u64 {
                    // The value names the offset it gets (one writer).
                    let at = p.log_end_offset();
                    let r =
                        Record::new(round as i64, Some(b"k"), Some(format!("o{at}").as_bytes()));
                    p.append_records(&[r], ProducerInfo::NONE, 0, false)
                        .expect("append");
                }
                let end = p.log_end_offset();
                p.truncate_to(end - 2).expect("truncate");
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let end = p.log_end_offset();
                    let from = end.saturating_sub(10);
                    match p.read(from, 4096, None) {
                        Ok(bs) => {
                            let mut expect = None;
                            for b in &bs {
                                if let Some(e) = expect {
                                    assert_eq!(b.base_offset(), e, "batches not contiguous");
                                }
                                expect = Some(b.last_offset() + 1);
                                for r in b.records() {
                                    let want = format!("o{}", r.offset);
                                    assert_eq!(r.value.as_deref(), Some(want.as_bytes()));
                                }
                            }
                        }
                        Err(Error::OffsetOutOfRange { .. }) => {}
                        Err(e) => panic!("read failed during truncations: {e}"),
                    }
                }
            });
        }
    });
}

/// The leader-epoch cache is a fence: an epoch older than the newest is
/// refused, whether assigned or carried by a batch (a deposed leader's
/// append, a follower copying from one); the newest again is a no-op.
#[test]
fn stale_leader_epochs_are_refused_by_assignments_and_appends() {
    let fault = FaultStorage::new(30);
    let storage: StorageRef = Arc::new(fault.clone());
    let (_mgr, p) = open(&storage);
    p.assign_epoch(5).expect("epoch 5");
    p.assign_epoch(5).expect("the same epoch again");
    p.append_records(&recs(2, "a"), ProducerInfo::NONE, 5, false)
        .expect("append at 5");
    assert!(matches!(
        p.assign_epoch(4),
        Err(Error::StaleEpoch {
            epoch: 4,
            latest: 5
        })
    ));
    assert!(matches!(
        p.append_records(&recs(1, "b"), ProducerInfo::NONE, 3, false),
        Err(Error::StaleEpoch { epoch: 3, .. })
    ));
    let old =
        batch::build(p.log_end_offset(), 2, ProducerInfo::NONE, &recs(1, "c")).expect("batch");
    assert!(matches!(
        p.append_as_follower(&old, false),
        Err(Error::StaleEpoch { epoch: 2, .. })
    ));
    assert_eq!(p.log_end_offset(), 2, "nothing stale was appended");
    assert_eq!(p.epochs(), vec![(5, 0)]);
    p.assign_epoch(6).expect("a newer epoch");
    assert_eq!(p.epochs(), vec![(5, 0), (6, 2)]);
}

/// The durable log end moves with fsyncs only, and a waiter wakes when a
/// flush on another thread passes its offset.
#[test]
fn the_durable_end_follows_fsyncs_and_wakes_waiters() {
    let fault = FaultStorage::new(31);
    let storage: StorageRef = Arc::new(fault.clone());
    let (_mgr, p) = open(&storage);
    let short = std::time::Duration::from_millis(20);
    assert_eq!(p.durable_end_offset(), 0);
    p.append_records(&recs(3, "a"), ProducerInfo::NONE, 0, false)
        .expect("append");
    assert_eq!(p.log_end_offset(), 3);
    assert_eq!(p.durable_end_offset(), 0, "not fsynced yet");
    assert!(
        !p.wait_durable(3, short).expect("wait"),
        "times out unflushed"
    );
    let flusher = {
        let p = p.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(10));
            p.flush().expect("flush");
        })
    };
    assert!(p
        .wait_durable(3, std::time::Duration::from_secs(30))
        .expect("wait"));
    flusher.join().expect("flusher");
    assert_eq!(p.durable_end_offset(), 3);
    p.append_records(&recs(2, "b"), ProducerInfo::NONE, 0, true)
        .expect("synced append");
    assert_eq!(p.durable_end_offset(), 5);
    assert_eq!(p.truncate_to(4).expect("truncate"), 3);
    assert_eq!(p.durable_end_offset(), 3, "truncation lowers it");
}

/// The cleaner works off the partition lock: appends go on while it
/// rewrites segments, and what it swaps in never loses an append or the
/// latest record of a key.
#[test]
fn appends_go_on_while_the_cleaner_runs() {
    use strata::log::CleanupPolicy;
    let fault = FaultStorage::new(32);
    let storage: StorageRef = Arc::new(fault.clone());
    let (mgr, _) = open(&storage);
    let cfg = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        ..small_config()
    };
    mgr.create_topic("c", 1, cfg).expect("create");
    let p = mgr.partition("c", 0).expect("partition");
    let append = |i: u64| {
        let k = format!("key{}", i % 7);
        let v = format!("value-{i}");
        let r = Record::new(1_000 + i as i64, Some(k.as_bytes()), Some(v.as_bytes()));
        p.append_records(&[r], ProducerInfo::NONE, 0, false)
            .expect("append")
            .first_offset
    };
    for i in 0..200 {
        append(i);
    }
    let cleaner = {
        let p = p.clone();
        std::thread::spawn(move || {
            for _ in 0..30 {
                p.compact(0).expect("clean");
            }
        })
    };
    // Append until the cleaner's runs are over (bounded), so the two
    // overlap whatever the scheduling.
    let mut latest = std::collections::BTreeMap::new();
    let mut i = 200;
    while (i < 600 || !cleaner.is_finished()) && i < 20_000 {
        let off = append(i);
        latest.insert(format!("key{}", i % 7), (off, format!("value-{i}")));
        i += 1;
    }
    cleaner.join().expect("cleaner");
    p.compact(0).expect("a last run");
    assert_eq!(p.log_end_offset(), i);
    let (_, recs) = read_all(&p, p.log_start_offset()).expect("read");
    for (k, (off, v)) in &latest {
        let r = recs
            .iter()
            .rfind(|r| r.key == k.as_bytes())
            .unwrap_or_else(|| panic!("{k} lost"));
        assert_eq!((r.offset, r.value.as_slice()), (*off, v.as_bytes()), "{k}");
    }
    let offsets: Vec<u64> = recs.iter().map(|r| r.offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets in order");
}

/// A follower's batch of a new epoch reaches the segment, then the synced
/// write of that epoch's cache entry fails: the partition stops (no flush
/// may make the batch count), and after the power cut recovery assigns the
/// epoch from the batch itself, as Kafka's segment recovery does. Without
/// that, the cache stretched the previous epoch over the batch, and a
/// replication leader's divergence check passed a follower holding other
/// records at those offsets (simulator seed 11425).
#[test]
fn a_batch_whose_epoch_cache_entry_failed_is_never_written() {
    use strata::io::fault::{CrashKeep, Errno, OpClass};
    let fault = FaultStorage::new(11);
    let storage: StorageRef = Arc::new(fault.clone());
    let (mgr, p) = open(&storage);
    p.assign_epoch(1).expect("epoch");
    p.append_records(&recs(2, "a"), ProducerInfo::NONE, 1, true)
        .expect("append");
    // A leader of epoch 4 wrote the next batch; this replica copies it,
    // and the fsync of its epoch's cache entry fails.
    let b = batch::build(2, 4, ProducerInfo::NONE, &recs(3, "b")).expect("batch");
    fault.fail(OpClass::Sync, 1, Errno::Eio, false);
    assert!(
        p.append_as_follower(&b, false).is_err(),
        "the epoch entry's fsync failed"
    );
    fault.clear_failures();
    assert!(p.flush().is_err(), "stopped: nothing more counts");
    fault.set_crash_keep(CrashKeep::All);
    fault.crash();
    drop(p);
    drop(mgr);
    let storage: StorageRef = Arc::new(fault.reopen());
    let (_mgr, p) = open(&storage);
    // The cache entry comes first: the batch never reached the segment, so
    // no batch on disk has an epoch the cache lacks. The entry itself may
    // have survived (it then starts at the log end, as a fresh leader's).
    assert_eq!(p.log_end_offset(), 2, "the batch was not written");
    assert_eq!(p.end_offset_for_epoch(1), Some((1, 2)));
    let (_, got) = read_all(&p, 0).expect("read");
    assert_eq!(got.len(), 2);
}
