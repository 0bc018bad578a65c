//! The storage API behaves the same on every backend: std, io_uring
//! (buffered and O_DIRECT) and the fault-injecting one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::io::fault::FaultStorage;
use strata::io::{
    write_file_atomic, AlignedBuf, AppendWriter, DirectSync, Error, OpenOptions, ReadReq,
    StdStorage, StorageRef, SyncMode, UringStorage,
};

fn backends() -> Vec<(&'static str, StorageRef, PathBuf, Option<tempfile::TempDir>)> {
    let mut out: Vec<(&'static str, StorageRef, PathBuf, Option<tempfile::TempDir>)> = Vec::new();
    let t = tempfile::tempdir().expect("tmp");
    out.push((
        "std",
        Arc::new(StdStorage::new()),
        t.path().to_path_buf(),
        Some(t),
    ));
    // io_uring with each way of making a synced O_DIRECT write durable.
    for (name, how) in [
        ("uring", DirectSync::RwfDsync),
        ("uring-linked-fsync", DirectSync::LinkedFsync),
        ("uring-then-fdatasync", DirectSync::ThenFdatasync),
    ] {
        match UringStorage::try_new() {
            Ok(u) => {
                let t = tempfile::tempdir().expect("tmp");
                out.push((
                    name,
                    Arc::new(u.with_direct_sync(how)),
                    t.path().to_path_buf(),
                    Some(t),
                ));
            }
            Err(e) => eprintln!("io_uring unavailable: {e}"),
        }
    }
    match UringStorage::try_new_sqpoll(10) {
        Ok(u) => {
            let t = tempfile::tempdir().expect("tmp");
            out.push(("uring-sqpoll", Arc::new(u), t.path().to_path_buf(), Some(t)));
        }
        Err(e) => eprintln!("io_uring with SQPOLL unavailable: {e}"),
    }
    let f = FaultStorage::new(3);
    f.set_direct_alignment(Some(4096));
    out.push(("fault", Arc::new(f), PathBuf::from("/t"), None));
    out
}

#[test]
fn files_read_write_length_and_truncate_alike() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root.join("d")).expect("mkdir");
        let p = root.join("d/a");
        assert!(!s.exists(&p).expect("exists"), "{name}");
        assert!(
            s.open(&p, OpenOptions::existing()).is_err(),
            "{name}: open missing fails"
        );
        let f = s.open(&p, OpenOptions::create_new()).expect("create");
        assert!(
            s.open(&p, OpenOptions::create_new()).is_err(),
            "{name}: create_new on existing fails"
        );
        f.write_at(b"hello world", 0).expect("write");
        f.write_at(b"HELLO", 0).expect("overwrite");
        assert_eq!(f.append(b"!!").expect("append"), 11, "{name}");
        f.write_at(b"z", 20).expect("write past end");
        // A writeback hint changes nothing a reader sees, past the end too.
        f.start_writeback(0, 21).expect("writeback");
        f.start_writeback(0, 1 << 20)
            .expect("writeback past the end");
        assert_eq!(f.len().expect("len"), 21, "{name}");
        let mut buf = [0u8; 21];
        f.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"HELLO world!!\0\0\0\0\0\0\0z", "{name}");
        let mut big = [0u8; 30];
        assert_eq!(f.read_at(&mut big, 0).expect("short read"), 21, "{name}");
        assert!(
            matches!(f.read_exact_at(&mut big, 0), Err(Error::ShortRead { .. })),
            "{name}"
        );
        f.set_len(5).expect("truncate");
        assert_eq!(f.read_all().expect("read_all"), b"HELLO", "{name}");
        f.preallocate(1 << 16).expect("prealloc");
        assert!(f.len().expect("len") >= 1 << 16, "{name}");
        f.write_batch(&[(0, b"ab"), (4096, b"cd")], Some(SyncMode::Data))
            .expect("batch");
        f.sync_all().expect("fsync");
        let mut two = [0u8; 2];
        f.read_exact_at(&mut two, 4096).expect("read");
        assert_eq!(&two, b"cd", "{name}");
        drop(f);
        s.rename(&p, &root.join("d/b")).expect("rename");
        s.sync_dir(&root.join("d")).expect("sync dir");
        assert_eq!(
            s.list_dir(&root.join("d")).expect("list"),
            vec!["b".to_string()],
            "{name}"
        );
        write_file_atomic(&*s, &root.join("d/c"), b"atomic").expect("atomic");
        let c = s
            .open(&root.join("d/c"), OpenOptions::existing())
            .expect("open c");
        assert_eq!(c.read_all().expect("read"), b"atomic", "{name}");
        s.remove_file(&root.join("d/b")).expect("remove");
        assert_eq!(
            s.list_dir(&root.join("d")).expect("list"),
            vec!["c".to_string()],
            "{name}"
        );
        assert!(
            s.remove_file(&root.join("d/b"))
                .expect_err("gone")
                .is_not_found(),
            "{name}"
        );
    }
}

#[test]
fn direct_files_demand_aligned_writes() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root).expect("mkdir");
        let p = root.join("direct");
        let f = s
            .open(&p, OpenOptions::create().direct(true))
            .expect("open direct");
        let Some(align) = f.alignment() else {
            eprintln!("{name}: file system refused O_DIRECT; buffered instead");
            continue;
        };
        let mut buf = AlignedBuf::zeroed(2 * align, align);
        buf[..5].copy_from_slice(b"abcde");
        f.write_at(&buf, 0).expect("aligned write");
        assert!(
            matches!(f.write_at(&buf[..100], 0), Err(Error::Misaligned { .. })),
            "{name}: short length"
        );
        assert!(
            matches!(f.write_at(&buf, 7), Err(Error::Misaligned { .. })),
            "{name}: odd offset"
        );
        f.write_batch(&[(align as u64, &buf)], Some(SyncMode::Data))
            .expect("linked write+sync");
        let mut back = AlignedBuf::zeroed(align, align);
        f.read_exact_at(&mut back, align as u64).expect("read");
        assert_eq!(&back[..5], b"abcde", "{name}");
        assert_eq!(f.len().expect("len"), 3 * align as u64, "{name}");
    }
}

#[test]
fn large_batches_span_several_ring_submissions() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root).expect("mkdir");
        let f = s
            .open(&root.join("batch"), OpenOptions::create())
            .expect("open");
        let bufs: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().repeat(3)).collect();
        let writes: Vec<(u64, &[u8])> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64 * 12, b.as_slice()))
            .collect();
        f.write_batch(&writes, Some(SyncMode::All)).expect("batch");
        let all = f.read_all().expect("read");
        assert_eq!(all.len(), 3600, "{name}");
        for (i, chunk) in all.chunks(12).enumerate() {
            assert_eq!(
                chunk,
                (i as u32).to_le_bytes().repeat(3).as_slice(),
                "{name}"
            );
        }
    }
}

/// A synced batch of O_DIRECT writes larger than one ring: with
/// RWF_DSYNC the writes go unlinked, several submissions of them.
#[test]
fn large_synced_direct_batches_land_whole() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root).expect("mkdir");
        let f = s
            .open(&root.join("dbatch"), OpenOptions::create().direct(true))
            .expect("open");
        let Some(align) = f.alignment() else {
            eprintln!("{name}: file system refused O_DIRECT; buffered instead");
            continue;
        };
        let bufs: Vec<AlignedBuf> = (0..150u8)
            .map(|i| {
                let mut b = AlignedBuf::zeroed(align, align);
                b.fill(i);
                b
            })
            .collect();
        // Out of order, as nothing links them.
        let writes: Vec<(u64, &[u8])> = bufs
            .iter()
            .enumerate()
            .rev()
            .map(|(i, b)| ((i * align) as u64, &b[..]))
            .collect();
        f.write_batch(&writes, Some(SyncMode::Data)).expect("batch");
        assert_eq!(f.len().expect("len"), (150 * align) as u64, "{name}");
        let mut back = AlignedBuf::zeroed(align, align);
        for i in 0..150 {
            f.read_exact_at(&mut back, (i * align) as u64)
                .expect("read");
            assert!(back.iter().all(|&b| b == i as u8), "{name}: block {i}");
        }
    }
}

/// Appends through `AppendWriter` (the WAL's and the log's one path) land
/// byte for byte on every backend, direct or buffered, synced or not, and
/// on io_uring the direct ones use the writer's own ring with registered
/// buffer and file.
#[test]
fn append_writers_land_every_byte_on_every_backend() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root).expect("mkdir");
        // (direct, depth, zeros prepared ahead)
        for (direct, depth, ahead) in [
            (false, 1, 0),
            (true, 1, 0),
            (true, 4, 0),
            (true, 4, 4 << 20),
        ] {
            let path = root.join(format!("append-{direct}-{depth}-{ahead}"));
            let f = s
                .open(&path, OpenOptions::create().direct(direct))
                .expect("open");
            let mut w = AppendWriter::with_depth(f.clone(), 0, depth).expect("writer");
            w.prepare_ahead(ahead, 64 << 20);
            if direct && f.alignment().is_some() && name.starts_with("uring") {
                assert_eq!(w.kind(), "fixed", "{name}: registered buffers and file");
            }
            let mut want = Vec::new();
            for i in 0..300usize {
                // Sizes from 1 byte to past a 1 MiB chunk, so that chunks
                // fill and (at depth 4) several writes are in flight.
                let n = match i {
                    150 => (1 << 20) + 4321,
                    200..=260 => 70_000 + i,
                    _ => (i * 97) % 9000 + 1,
                };
                let rec: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
                let sync = match i % 7 {
                    0 => Some(SyncMode::Data),
                    1 => Some(SyncMode::All),
                    _ => None,
                };
                assert_eq!(w.append(&rec, 0, sync).expect("append"), want.len() as u64);
                want.extend_from_slice(&rec);
            }
            w.drain().expect("drain");
            assert!(!w.has_pending(), "{name}: drained");
            let len = f.len().expect("len");
            if ahead > 0 && f.alignment().is_some() {
                assert!(
                    len > want.len() as u64 + (1 << 20),
                    "{name}: zeros prepared ahead"
                );
                let mut zeros = vec![1u8; (len - want.len() as u64) as usize];
                f.read_exact_at(&mut zeros, want.len() as u64)
                    .expect("read");
                assert!(zeros.iter().all(|&b| b == 0), "{name}: zeros ahead");
            }
            let mut got = vec![0u8; want.len()];
            f.read_exact_at(&mut got, 0).expect("read");
            assert!(
                got == want,
                "{name} direct={direct} depth={depth}: bytes differ after drain"
            );
            drop(w);
            // A second writer continues the partial page the first left.
            let mut w = AppendWriter::new(f.clone(), want.len() as u64).expect("reopen");
            w.append(b"tail", 0, Some(SyncMode::Data)).expect("append");
            want.extend_from_slice(b"tail");
            let mut got = vec![0u8; want.len()];
            f.read_exact_at(&mut got, 0).expect("read");
            assert!(
                got == want,
                "{name} direct={direct} depth={depth}: bytes differ"
            );
        }
    }
}

/// Reads of a direct file need no alignment from the caller, and
/// `read_many` reads several files at once, short at end of file.
#[test]
fn unaligned_direct_reads_and_batched_reads_of_several_files() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root).expect("mkdir");
        let mut files = Vec::new();
        for (i, direct) in [(0u8, true), (1, false), (2, true)] {
            let f = s
                .open(
                    &root.join(format!("r{i}")),
                    OpenOptions::create().direct(direct),
                )
                .expect("open");
            let align = f.alignment().unwrap_or(4096);
            let mut buf = AlignedBuf::zeroed(3 * align, align);
            for (j, b) in buf.iter_mut().enumerate() {
                *b = (j % 251) as u8 ^ i;
            }
            f.write_batch(&[(0, &buf)], Some(SyncMode::Data))
                .expect("write");
            files.push((f, 3 * align));
        }
        // An unaligned read of a direct file.
        let (f0, len0) = &files[0];
        let mut odd = vec![0u8; 1000];
        let n = f0.read_at(&mut odd, 4001).expect("unaligned read");
        assert_eq!(n, 1000, "{name}");
        assert!(
            odd.iter()
                .enumerate()
                .all(|(j, &b)| b == ((4001 + j) % 251) as u8),
            "{name}"
        );
        let mut a = vec![0u8; 300];
        let mut b = vec![0u8; 5000];
        let mut c = vec![0u8; 64];
        let mut past = vec![0u8; 100];
        let mut reqs = vec![
            ReadReq {
                file: &*files[0].0,
                offset: 17,
                buf: &mut a,
            },
            ReadReq {
                file: &*files[1].0,
                offset: 4096,
                buf: &mut b,
            },
            ReadReq {
                file: &*files[2].0,
                offset: (files[2].1 - 64) as u64,
                buf: &mut c,
            },
            ReadReq {
                file: &*files[1].0,
                offset: (files[1].1 - 40) as u64,
                buf: &mut past,
            },
        ];
        let res: Vec<usize> = s
            .read_many(&mut reqs)
            .into_iter()
            .map(|r| r.expect("read"))
            .collect();
        assert_eq!(res, vec![300, 5000, 64, 40], "{name}");
        let at = |i: u8, off: usize, buf: &[u8]| {
            buf.iter()
                .enumerate()
                .all(|(j, &x)| x == ((off + j) % 251) as u8 ^ i)
        };
        assert!(at(0, 17, &a), "{name}");
        assert!(at(1, 4096, &b), "{name}");
        assert!(at(2, files[2].1 - 64, &c), "{name}");
        assert!(at(1, files[1].1 - 40, &past[..40]), "{name}");
        // A direct file whose length is not aligned: a read across its end
        // returns what there is (it once recursed forever here).
        f0.set_len((*len0 - 100) as u64).expect("set_len");
        let mut tail = vec![0u8; 1000];
        let n = f0
            .read_at(&mut tail, (*len0 - 600) as u64)
            .expect("read at the end");
        assert_eq!(n, 500, "{name}");
        assert!(at(0, *len0 - 600, &tail[..500]), "{name}");
    }
}

#[test]
fn missing_directories_and_bad_paths_are_errors_not_panics() {
    for (name, s, root, _t) in backends() {
        let missing = root.join("no/such/dir");
        assert!(s.list_dir(&missing).is_err(), "{name}");
        assert!(
            s.open(&missing.join("f"), OpenOptions::create()).is_err(),
            "{name}"
        );
        assert!(s.sync_dir(&missing).is_err(), "{name}");
        assert!(
            s.rename(&missing.join("a"), &missing.join("b")).is_err(),
            "{name}"
        );
        let _ = Path::new("/");
    }
}

#[test]
fn locks_are_exclusive_until_dropped() {
    for (name, s, root, _t) in backends() {
        s.create_dir_all(&root).expect("mkdir");
        let p = root.join("LOCK");
        let held = s.lock(&p).expect("first lock");
        match s.lock(&p) {
            Err(Error::Locked { path }) => assert_eq!(path, p, "{name}"),
            other => panic!("{name}: second lock must fail, got {other:?}"),
        }
        drop(held);
        let again = s.lock(&p).expect("lock after release");
        drop(again);
        assert!(s.lock(&root.join("no/dir/LOCK")).is_err(), "{name}");
    }
}
