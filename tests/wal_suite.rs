//! The WAL behaviour suite, run on every backend: std, io_uring (buffered
//! and O_DIRECT) and the fault-injecting in-memory backend. The io_uring
//! and std backends must pass the same suite.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use strata::io::fault::FaultStorage;
use strata::io::{StdStorage, StorageRef, UringStorage};
use strata::wal::{Preallocate, RecoveryMode, SyncPolicy, Wal, WalOptions};

struct Env {
    storage: StorageRef,
    dir: PathBuf,
    direct: bool,
    _tmp: Option<tempfile::TempDir>,
}

fn envs() -> Vec<(&'static str, Env)> {
    let mut out = Vec::new();
    let tmp = tempfile::tempdir().expect("tempdir");
    out.push((
        "std",
        Env {
            storage: Arc::new(StdStorage::new()),
            dir: tmp.path().join("wal"),
            direct: false,
            _tmp: Some(tmp),
        },
    ));
    match UringStorage::try_new() {
        Ok(u) => {
            let u: StorageRef = Arc::new(u);
            for direct in [false, true] {
                let tmp = tempfile::tempdir().expect("tempdir");
                out.push((
                    if direct { "uring+direct" } else { "uring" },
                    Env {
                        storage: u.clone(),
                        dir: tmp.path().join("wal"),
                        direct,
                        _tmp: Some(tmp),
                    },
                ));
            }
        }
        Err(e) if std::env::var_os("CI_REQUIRE_URING").is_some() => {
            panic!("io_uring required but unavailable: {e}")
        }
        Err(e) => eprintln!("io_uring unavailable here ({e}); running std and fault only"),
    }
    let fault = FaultStorage::new(7);
    fault.set_direct_alignment(Some(4096));
    out.push((
        "fault",
        Env {
            storage: Arc::new(fault),
            dir: PathBuf::from("/wal"),
            direct: true,
            _tmp: None,
        },
    ));
    out
}

fn opts(env: &Env) -> WalOptions {
    WalOptions {
        direct_io: env.direct,
        segment_size: 256 << 10,
        ..WalOptions::default()
    }
}

fn record(i: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn read_all(env: &Env, o: WalOptions) -> Vec<(u64, Vec<u8>)> {
    read_dir(env, &env.dir, o)
}

/// Reopens the WAL in `dir` and returns every record it replays.
fn read_dir(env: &Env, dir: &Path, o: WalOptions) -> Vec<(u64, Vec<u8>)> {
    let mut got = Vec::new();
    let (wal, _) = Wal::open(env.storage.clone(), dir, o, |lsn, r| {
        got.push((lsn, r.to_vec()));
        Ok(())
    })
    .expect("reopen");
    wal.close().expect("close");
    got
}

fn for_each_env(f: impl Fn(&str, &Env)) {
    for (name, env) in envs() {
        eprintln!("backend {name}");
        f(name, &env);
    }
}

#[test]
fn append_close_reopen_returns_every_record_in_order() {
    for_each_env(|name, env| {
        let (wal, rec) =
            Wal::open(env.storage.clone(), &env.dir, opts(env), |_, _| Ok(())).expect("open");
        assert_eq!(rec.records, 0);
        let mut expect = Vec::new();
        for i in 0..500u64 {
            // Sizes cross block boundaries: fragments of every type.
            let r = record(i, (i as usize * 37) % 70_000);
            let lsn = wal.append(&r).expect("append");
            assert_eq!(lsn, i + 1, "{name}: LSNs are consecutive from 1");
            expect.push((lsn, r));
        }
        assert_eq!(wal.durable_lsn(), 500);
        wal.close().expect("close");
        assert!(
            wal.append(b"x").is_err(),
            "{name}: closed WAL refuses appends"
        );
        let got = read_all(env, opts(env));
        assert_eq!(got.len(), expect.len(), "{name}");
        assert!(got == expect, "{name}: records differ after reopen");
        assert!(
            wal_files(env).len() > 1,
            "{name}: 17 MB of records in 256 KiB segments must rotate"
        );
    });
}

fn wal_files(env: &Env) -> Vec<String> {
    env.storage
        .list_dir(&env.dir)
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect()
}

#[test]
fn appends_after_reopen_continue_the_lsn_sequence() {
    for_each_env(|name, env| {
        let mut all = Vec::new();
        for round in 0..4u64 {
            let (wal, rec) =
                Wal::open(env.storage.clone(), &env.dir, opts(env), |_, _| Ok(())).expect("open");
            assert_eq!(rec.records, round * 10, "{name}");
            for i in 0..10 {
                let r = record(round * 100 + i, 50);
                let lsn = wal.append(&r).expect("append");
                assert_eq!(lsn, round * 10 + i + 1, "{name}");
                all.push((lsn, r));
            }
            wal.close().expect("close");
        }
        assert!(read_all(env, opts(env)) == all, "{name}");
    });
}

#[test]
fn concurrent_appenders_get_unique_lsns_and_all_records_survive() {
    for_each_env(|name, env| {
        let (wal, _) =
            Wal::open(env.storage.clone(), &env.dir, opts(env), |_, _| Ok(())).expect("open");
        let threads = 8;
        let per = 200u64;
        let results: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let wal = wal.clone();
                    s.spawn(move || {
                        (0..per)
                            .map(|i| {
                                let r = record(t * 1000 + i, 10 + (i as usize % 300));
                                (wal.append(&r).expect("append"), r)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        wal.close().expect("close");
        let mut expect: Vec<(u64, Vec<u8>)> = results.into_iter().flatten().collect();
        expect.sort();
        for (i, (lsn, _)) in expect.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1, "{name}: LSNs unique and dense");
        }
        assert!(read_all(env, opts(env)) == expect, "{name}");
    });
}

#[test]
fn purge_recycles_segments_and_recovery_ignores_their_old_records() {
    for_each_env(|name, env| {
        let o = WalOptions {
            segment_size: 64 << 10,
            recycle_segments: 2,
            ..opts(env)
        };
        let (wal, _) =
            Wal::open(env.storage.clone(), &env.dir, o.clone(), |_, _| Ok(())).expect("open");
        let mut expect = Vec::new();
        for i in 0..400u64 {
            let r = record(i, 1000);
            expect.push((wal.append(&r).expect("append"), r));
        }
        let segs = wal.segments();
        assert!(segs.len() >= 5, "{name}: {} segments", segs.len());
        let checkpoint = segs[3].first_lsn;
        let released = wal.purge_before(checkpoint).expect("purge");
        assert_eq!(released, 3, "{name}");
        let names = env.storage.list_dir(&env.dir).expect("list");
        assert_eq!(
            names.iter().filter(|n| n.ends_with(".recycle")).count(),
            2,
            "{name}: {names:?}"
        );
        // New segments reuse the recycled files, whose old records must not
        // come back.
        for i in 400..700u64 {
            let r = record(i, 1000);
            expect.push((wal.append(&r).expect("append"), r));
        }
        wal.close().expect("close");
        let got = read_all(env, o);
        let want: Vec<_> = expect
            .into_iter()
            .filter(|(lsn, _)| *lsn >= checkpoint)
            .collect();
        assert_eq!(got.first().map(|g| g.0), Some(checkpoint), "{name}");
        assert!(
            got == want,
            "{name}: recovered {} records, wanted {}",
            got.len(),
            want.len()
        );
    });
}

#[test]
fn every_sync_policy_and_preallocation_round_trips() {
    let policies = [
        (SyncPolicy::Always, 0),
        (SyncPolicy::Never, 0),
        (SyncPolicy::Never, 4096),
        (
            SyncPolicy::Interval {
                every: Duration::from_millis(2),
                bytes: 10_000,
            },
            0,
        ),
        (
            SyncPolicy::Interval {
                every: Duration::from_millis(2),
                bytes: 1 << 30,
            },
            4096,
        ),
    ];
    for_each_env(|name, env| {
        for (pi, (policy, buffer)) in policies.iter().enumerate() {
            for (ai, pre) in [
                Preallocate::None,
                Preallocate::Allocate,
                Preallocate::ZeroFill,
            ]
            .iter()
            .enumerate()
            {
                let dir = env.dir.join(format!("p{pi}-{ai}"));
                let o = WalOptions {
                    sync: *policy,
                    write_buffer: *buffer,
                    preallocate: *pre,
                    segment_size: 64 << 10,
                    ..opts(env)
                };
                let (wal, _) =
                    Wal::open(env.storage.clone(), &dir, o.clone(), |_, _| Ok(())).expect("open");
                let mut expect = Vec::new();
                for i in 0..300u64 {
                    let r = record(i, 400);
                    expect.push((wal.append(&r).expect("append"), r));
                }
                if *policy == SyncPolicy::Always {
                    assert_eq!(wal.durable_lsn(), 300, "{name}");
                }
                let d = wal.sync().expect("sync");
                assert_eq!(d, 300);
                assert_eq!(
                    wal.durable_lsn(),
                    300,
                    "{name}: sync makes everything durable"
                );
                wal.close().expect("close");
                let got = read_dir(env, &dir, o);
                assert!(
                    got == expect,
                    "{name} policy {policy:?} buffer {buffer} prealloc {pre:?}"
                );
            }
        }
    });
}

#[test]
fn interval_policy_syncs_in_the_background() {
    for_each_env(|name, env| {
        let o = WalOptions {
            sync: SyncPolicy::Interval {
                every: Duration::from_millis(5),
                bytes: 1 << 30,
            },
            ..opts(env)
        };
        let (wal, _) = Wal::open(env.storage.clone(), &env.dir, o, |_, _| Ok(())).expect("open");
        let lsn = wal.append(b"tick").expect("append");
        // Not a timing assertion: the flusher must get there eventually.
        let mut waited = 0;
        while wal.durable_lsn() < lsn {
            std::thread::sleep(Duration::from_millis(5));
            waited += 1;
            assert!(waited < 2000, "{name}: interval sync never happened");
        }
        wal.close().expect("close");
    });
}

#[test]
fn garbage_files_in_the_directory_are_ignored() {
    for_each_env(|name, env| {
        env.storage.create_dir_all(&env.dir).expect("mkdir");
        let other = env.dir.join("LOCK");
        let f = env
            .storage
            .open(&other, strata::io::OpenOptions::create())
            .expect("create");
        f.write_at(b"not a wal", 0).expect("write");
        drop(f);
        let (wal, _) =
            Wal::open(env.storage.clone(), &env.dir, opts(env), |_, _| Ok(())).expect("open");
        wal.append(b"a").expect("append");
        wal.close().expect("close");
        assert_eq!(read_all(env, opts(env)).len(), 1, "{name}");
    });
}

#[test]
fn a_non_wal_segment_file_is_reported_not_replayed() {
    for_each_env(|name, env| {
        env.storage.create_dir_all(&env.dir).expect("mkdir");
        for (i, body) in [
            &b"garbage garbage garbage garbage garbage garbage"[..],
            b"more garbage here, still not a WAL segment",
        ]
        .iter()
        .enumerate()
        {
            let p: &Path = &env.dir.join(format!("{:020}.wal", i + 1));
            let f = env
                .storage
                .open(p, strata::io::OpenOptions::create())
                .expect("create");
            f.write_at(body, 0).expect("write");
            f.sync_all().expect("sync");
        }
        let err = Wal::open(env.storage.clone(), &env.dir, opts(env), |_, _| Ok(()))
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("00000000000000000001.wal") && msg.contains("offset 0"),
            "{name}: {msg}"
        );
        // Point-in-time recovery accepts it and starts over.
        let o = WalOptions {
            recovery: RecoveryMode::PointInTime,
            ..opts(env)
        };
        let (wal, rec) =
            Wal::open(env.storage.clone(), &env.dir, o, |_, _| Ok(())).expect("pit open");
        assert_eq!(rec.records, 0);
        assert!(rec.truncated.is_some());
        wal.close().expect("close");
    });
}

#[test]
fn mixed_concurrent_calls_finish_and_lose_nothing() {
    // Appenders, syncers, durable-waiters and a purger at once, under each
    // policy: group commit must neither deadlock nor drop a record.
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::Never,
        SyncPolicy::Interval {
            every: Duration::from_millis(1),
            bytes: 4096,
        },
    ] {
        for_each_env(|name, env| {
            let dir = env
                .dir
                .join(format!("{policy:?}").replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
            let o = WalOptions {
                sync: policy,
                segment_size: 32 << 10,
                write_buffer: if policy == SyncPolicy::Never { 1024 } else { 0 },
                ..opts(env)
            };
            let (wal, _) =
                Wal::open(env.storage.clone(), &dir, o.clone(), |_, _| Ok(())).expect("open");
            let appended: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|s| {
                let mut hs = Vec::new();
                for t in 0..12u64 {
                    let wal = wal.clone();
                    hs.push(s.spawn(move || {
                        let mut mine = Vec::new();
                        for i in 0..150u64 {
                            let r = record(t * 10_000 + i, 20 + (i as usize * 13) % 400);
                            let lsn = wal.append(&r).expect("append");
                            match i % 25 {
                                0 => {
                                    wal.sync().expect("sync");
                                }
                                7 => wal.wait_durable(lsn).expect("wait durable"),
                                _ => {}
                            }
                            mine.push((lsn, r));
                        }
                        mine
                    }));
                }
                let purger = wal.clone();
                s.spawn(move || {
                    for _ in 0..20 {
                        let d = purger.durable_lsn();
                        purger.purge_before(d / 2).expect("purge");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
                hs.into_iter().map(|h| h.join().expect("thread")).collect()
            });
            wal.close().expect("close");
            let mut all: Vec<(u64, Vec<u8>)> = appended.into_iter().flatten().collect();
            all.sort();
            assert_eq!(all.len(), 1800);
            let got = read_dir(env, &dir, o);
            let start = got.first().map_or(1, |g| g.0);
            let want: Vec<_> = all.into_iter().filter(|(l, _)| *l >= start).collect();
            assert!(
                got == want,
                "{name} {policy:?}: {} recovered, {} expected",
                got.len(),
                want.len()
            );
        });
    }
}

/// Once the active segment is half full, the next segment's file is made
/// (preallocated as the options say, synced) on a background thread and
/// kept as a `.recycle` file, so a rotation renames it instead of
/// zero-filling a segment while appenders wait. A file a crash caught
/// half made (`.prepare`) is deleted at the next open.
#[test]
fn the_next_segment_is_prepared_in_the_background_and_a_half_made_one_is_discarded() {
    for_each_env(|name, env| {
        for prealloc in [Preallocate::ZeroFill, Preallocate::Allocate] {
            let o = WalOptions {
                preallocate: prealloc,
                ..opts(env)
            };
            let dir = env.dir.join(format!("{prealloc:?}"));
            let (wal, _) =
                Wal::open(env.storage.clone(), &dir, o.clone(), |_, _| Ok(())).expect("open");
            let mut n = 0u64;
            let mut expect = Vec::new();
            // Past half of the first 256 KiB segment.
            while n < 40 {
                let r = record(n, 4000);
                wal.append(&r).expect("append");
                expect.push(r);
                n += 1;
            }
            wal.close().expect("close waits for the preparation");
            let names = env.storage.list_dir(&dir).expect("list");
            assert!(
                names.iter().any(|f| f.ends_with(".recycle")),
                "{name} {prealloc:?}: the next segment was prepared: {names:?}"
            );
            assert!(
                !names.iter().any(|f| f.ends_with(".prepare")),
                "{name}: {names:?}"
            );
            drop(wal);
            // A crash in the middle of a preparation leaves a `.prepare`.
            let junk = dir.join("00000000000000000099.prepare");
            let f = env
                .storage
                .open(&junk, strata::io::OpenOptions::create())
                .expect("junk");
            f.write_at(&[0xAB; 4096], 0).expect("junk bytes");
            drop(f);
            let (wal, rec) =
                Wal::open(env.storage.clone(), &dir, o.clone(), |_, _| Ok(())).expect("reopen");
            assert_eq!(rec.records, n, "{name}");
            let names = env.storage.list_dir(&dir).expect("list");
            assert!(
                !names.iter().any(|f| f.ends_with(".prepare")),
                "{name}: {names:?}"
            );
            // Rotations take the prepared files; every record reads back.
            while n < 300 {
                let r = record(n, 4000);
                wal.append(&r).expect("append");
                expect.push(r);
                n += 1;
            }
            wal.close().expect("close");
            drop(wal);
            let got: Vec<Vec<u8>> = read_dir(env, &dir, o).into_iter().map(|(_, r)| r).collect();
            assert!(got == expect, "{name} {prealloc:?}: records differ");
        }
    });
}
