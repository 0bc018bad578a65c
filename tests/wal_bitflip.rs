//! Every single-bit flip in a WAL file is detected: recovery either fails
//! with a corruption error or reports a cut (torn tail / skipped damage),
//! and never returns a wrong record under any recovery mode. In the default
//! mode, a flip in any record that a later record vouches for as durable
//! is an error naming the file, never a silent truncation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::io::fault::FaultStorage;
use strata::io::StorageRef;
use strata::wal::{Error, Lsn, Preallocate, RecoveryMode, SyncPolicy, Wal, WalOptions};

const DIR: &str = "/wal";

struct Fixture {
    storage: FaultStorage,
    records: Vec<Vec<u8>>,
    /// (file, unused, length)
    files: Vec<(PathBuf, u64, u64)>,
}

fn build(
    policy: SyncPolicy,
    prealloc: Preallocate,
    n: u64,
    seg: u64,
    rec_len: impl Fn(u64) -> usize,
) -> Fixture {
    let storage = FaultStorage::new(1);
    let sref: StorageRef = Arc::new(storage.clone());
    let opts = WalOptions {
        sync: policy,
        preallocate: prealloc,
        segment_size: seg,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(sref.clone(), DIR, opts, |_, _| Ok(())).expect("open");
    let mut records = Vec::new();
    for i in 0..n {
        let len = rec_len(i);
        let r: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j * 7) as u8).collect();
        wal.append(&r).expect("append");
        records.push(r);
    }
    wal.close().expect("close");
    drop(wal);
    let mut files = Vec::new();
    for name in sref.list_dir(Path::new(DIR)).expect("list") {
        let p = Path::new(DIR).join(&name);
        let len = storage.contents(&p).expect("contents").len() as u64;
        files.push((p, 0, len));
    }
    Fixture {
        storage,
        records,
        files,
    }
}

/// Records recovered, and whether recovery reported a cut.
type Recovered = (Vec<(Lsn, Vec<u8>)>, bool);

fn recover(storage: &FaultStorage, mode: RecoveryMode) -> Result<Recovered, Error> {
    let mut got = Vec::new();
    let rec = strata::wal::recover(storage, Path::new(DIR), mode, |lsn, r| {
        got.push((lsn, r.to_vec()));
        Ok(())
    })?;
    let cut = rec.truncated.is_some() || !rec.skipped.is_empty() || !rec.discarded.is_empty();
    Ok((got, cut))
}

/// Flips every bit of the bytes `pick` selects in every file and checks all
/// modes. `in_log` says whether a byte belongs to the log proper (flips in
/// unused preallocated space past the end change nothing and need not be
/// reported); `durable` whether damage there must be an error.
fn sweep(
    fx: &Fixture,
    pick: impl Fn(u64) -> bool,
    in_log: impl Fn(&Path, u64) -> bool,
    expect_error_before: impl Fn(&Path, u64) -> bool,
) -> usize {
    let n = fx.records.len() as u64;
    let mut flips = 0;
    for (path, _, len) in &fx.files {
        let mut off = 0u64;
        while off < *len {
            if !pick(off) {
                off += 1;
                continue;
            }
            for bit in 0..8u8 {
                fx.storage.corrupt(path, off, bit).expect("flip");
                flips += 1;
                for mode in [
                    RecoveryMode::TolerateCorruptedTail,
                    RecoveryMode::AbsoluteConsistency,
                    RecoveryMode::PointInTime,
                    RecoveryMode::SkipAnyCorruptedRecords,
                ] {
                    match recover(&fx.storage, mode) {
                        Ok((got, cut)) => {
                            for (lsn, r) in &got {
                                let want =
                                    lsn.checked_sub(1).and_then(|i| fx.records.get(i as usize));
                                assert!(
                                    want == Some(r),
                                    "{mode:?}: flip {}:{off} bit {bit} returned a wrong record at LSN {lsn}",
                                    path.display()
                                );
                            }
                            assert!(
                                cut || (got.len() as u64) < n || !in_log(path, off),
                                "{mode:?}: flip {}:{off} bit {bit} went undetected",
                                path.display()
                            );
                            if mode != RecoveryMode::SkipAnyCorruptedRecords {
                                // Without skipping, what comes back is a prefix.
                                for (i, (lsn, _)) in got.iter().enumerate() {
                                    assert_eq!(*lsn, i as u64 + 1, "{mode:?}: not a prefix");
                                }
                            }
                            assert!(
                                !(mode == RecoveryMode::TolerateCorruptedTail && expect_error_before(path, off)),
                                "flip {}:{off} bit {bit} damaged a durable record but recovery truncated silently",
                                path.display()
                            );
                            assert!(
                                mode != RecoveryMode::AbsoluteConsistency || !in_log(path, off),
                                "absolute mode accepted a flip"
                            );
                        }
                        Err(Error::Corruption { path: p, .. }) => {
                            assert!(
                                mode == RecoveryMode::TolerateCorruptedTail
                                    || mode == RecoveryMode::AbsoluteConsistency,
                                "{mode:?} must not fail on damage"
                            );
                            assert!(p.starts_with(DIR), "error names the file: {}", p.display());
                        }
                        Err(e) => panic!("{mode:?}: unexpected error kind {e}"),
                    }
                }
                fx.storage.corrupt(path, off, bit).expect("flip back");
            }
            off += 1;
        }
    }
    flips
}

#[test]
fn every_bit_flip_in_synced_segments_is_detected() {
    // Every bit of three segments: two sealed, one last.
    let fx = build(SyncPolicy::Always, Preallocate::None, 45, 1200, |i| {
        20 + (i as usize * 7) % 60
    });
    assert!(fx.files.len() >= 3, "{:?}", fx.files);
    let last_path = fx.files.last().expect("file").0.clone();
    // Damage to the last entry of the last segment is indistinguishable
    // from a torn write and may be cut off; anywhere else it is an error.
    let last_entry_start = last_entry_offset(&fx.storage, &last_path);
    let flips = sweep(
        &fx,
        |_| true,
        |_, _| true,
        |p, off| p != last_path || off < last_entry_start,
    );
    eprintln!("checked {flips} flips x 4 modes");
}

#[test]
fn bit_flips_in_records_spanning_blocks_are_detected() {
    // Records larger than a 32 KiB block (FIRST/MIDDLE/LAST fragments) and
    // block trailers. Every bit near block boundaries and fragment headers,
    // every 61st byte of long payloads.
    let fx = build(
        SyncPolicy::Always,
        Preallocate::None,
        6,
        200 << 10,
        |i| match i {
            1 => 70_000,
            3 => 40_000,
            _ => 100 + i as usize,
        },
    );
    let last_path = fx.files.last().expect("file").0.clone();
    let last_entry_start = last_entry_offset(&fx.storage, &last_path);
    let block = strata::wal::format::BLOCK_SIZE as u64;
    let flips = sweep(
        &fx,
        |off| off % 61 == 0 || off % block < 64 || off % block > block - 64,
        |_, _| true,
        |p, off| p != last_path || off < last_entry_start,
    );
    eprintln!("checked {flips} flips x 4 modes");
}

/// Offset where the last entry of a segment begins.
fn last_entry_offset(storage: &FaultStorage, path: &Path) -> u64 {
    scan(storage, path).0
}

/// Offset just past the last entry of a segment.
fn log_end_offset(storage: &FaultStorage, path: &Path) -> u64 {
    scan(storage, path).1
}

fn scan(storage: &FaultStorage, path: &Path) -> (u64, u64) {
    let bytes = storage.contents(path).expect("contents");
    let tag = strata::wal::format::segment_tag(
        path.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("segno"),
    );
    let mut pos = strata::wal::format::SEGMENT_HEADER_LEN;
    let mut last = pos;
    loop {
        match strata::wal::format::read_fragment(&bytes, pos, tag) {
            strata::wal::format::FragmentRead::Fragment { kind, next, .. } => {
                if matches!(
                    kind,
                    strata::wal::format::FragmentType::Full
                        | strata::wal::format::FragmentType::First
                ) {
                    last = pos;
                }
                pos = next;
            }
            strata::wal::format::FragmentRead::Trailer { next } => pos = next,
            _ => return (last as u64, pos as u64),
        }
    }
}

#[test]
fn bit_flips_in_preallocated_and_unsynced_logs_never_return_wrong_records() {
    // Never-synced batches (no durability promise) and a zero-filled
    // segment: every flip must still be caught or cut, never misread.
    let fx = build(SyncPolicy::Never, Preallocate::ZeroFill, 20, 8 << 10, |i| {
        10 + (i as usize * 17) % 300
    });
    let path = fx.files[0].0.clone();
    let log_end = log_end_offset(&fx.storage, &path);
    let flips = sweep(
        &fx,
        |off| off < log_end + 64 || off % 97 == 0,
        |_, off| off < log_end,
        |_, off| off < strata::wal::format::SEGMENT_HEADER_LEN as u64,
    );
    eprintln!("checked {flips} flips x 4 modes");
}
