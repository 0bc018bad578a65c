//! Opening a database: recovery. Everything is read and checked before
//! anything on disk changes (docs/manifest.md gives the order): the
//! identity file, the manifest (replayed without writing), the tables it
//! names, the WAL records newer than the tables (replayed into a memtable),
//! the agreement of WAL and manifest, the levels' key ranges. Only then are
//! the manifest and the WAL opened for writing (a torn tail cut for good),
//! WAL segments the tables cover released, orphan tables deleted and the
//! background threads started; what the WAL replayed is flushed to a table
//! before the open returns, so reopening stays cheap.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use strata_io::{OpenOptions, StorageRef};
use strata_wal::{SyncPolicy, Wal, WalOptions};

use super::compact::RateLimiter;
use super::stats::Counters;
use super::version::{sort_level, Sst, Version};
use super::{
    apply, open_table, table_path, BgState, Db, Inner, Options, RecoveryInfo, Stall, Threads,
    WriteState, IDENTITY, IDENTITY_CONTENTS,
};
use crate::batch;
use crate::cache::BlockCache;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::{Error, Result};

/// [`Db::open`].
pub(super) fn open(storage: StorageRef, dir: &Path, opts: Options) -> Result<Db> {
    opts.validate()?;
    let dir = dir.to_path_buf();
    let exists = storage.exists(&dir)?;
    if !exists && !opts.create_if_missing {
        return Err(Error::InvalidArgument(format!(
            "{}: no database here (create_if_missing is off)",
            dir.display()
        )));
    }
    strata_io::create_dir_durable(&*storage, &dir)?;
    let lock = storage.lock(&dir.join("LOCK")).map_err(|e| match e {
        strata_io::Error::Locked { path } => Error::InvalidArgument(format!(
            "{}: the database is open in another process or handle",
            path.display()
        )),
        e => e.into(),
    })?;
    let identity = dir.join(IDENTITY);
    if storage.exists(&identity)? {
        let f = storage.open(&identity, OpenOptions::existing())?;
        if f.read_all()? != IDENTITY_CONTENTS {
            return Err(Error::corruption(
                &identity,
                0,
                "not a Strata database identity file",
            ));
        }
    } else {
        let others: Vec<String> = storage
            .list_dir(&dir)?
            .into_iter()
            // A creation cut short (a kill between writing the identity's
            // temporary file and renaming it) leaves that file: not data.
            .filter(|n| n != "LOCK" && *n != format!("{IDENTITY}.tmp"))
            .collect();
        if !others.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{}: not a Strata database (it holds {} and no {IDENTITY} file)",
                dir.display(),
                others.join(", ")
            )));
        }
        if !opts.create_if_missing {
            return Err(Error::InvalidArgument(format!(
                "{}: no database here",
                dir.display()
            )));
        }
        strata_io::write_file_atomic(&*storage, &identity, IDENTITY_CONTENTS)?;
    }

    let cache =
        (opts.block_cache_size > 0).then(|| Arc::new(BlockCache::new(opts.block_cache_size)));
    // Everything is read and checked before anything on disk changes
    // (a torn manifest or WAL tail cut for good, orphans deleted): an
    // open that refuses leaves the files as they were, so putting a
    // damaged file back from a copy brings the database back.
    let man = Manifest::recover(&*storage, &dir.join("manifest"))?;
    let state = man.state.clone();
    // If the manifest lost its tail, say so with whatever that breaks:
    // a cut that was damage rather than a torn write lost an edit the
    // database had acted on.
    let manifest_cut = |e: Error| match (&man.recovery.truncated, e) {
        (
            Some(cut),
            Error::Corruption {
                path,
                offset,
                reason,
            },
        ) => Error::Corruption {
            path,
            offset,
            reason: format!(
                "{reason} (the manifest was cut at {} offset {}: {}; if that was damage \
                 rather than a torn write, an edit the database had acted on is lost)",
                cut.path.display(),
                cut.offset,
                cut.reason
            ),
        },
        (_, e) => e,
    };
    let mut levels: Vec<Vec<Arc<Sst>>> = vec![Vec::new(); opts.num_levels];
    for meta in state.tables.values() {
        let level = meta.level as usize;
        let path = table_path(&dir, meta.number);
        let Some(slot) = levels.get_mut(level) else {
            return Err(Error::InvalidArgument(format!(
                "{}: table {} is in level {level} but num_levels is {}",
                dir.display(),
                meta.number,
                opts.num_levels
            )));
        };
        let f = storage
            .open(&path, OpenOptions::existing().direct(opts.use_direct_reads))
            .map_err(|e| {
                if e.is_not_found() {
                    manifest_cut(Error::corruption(
                        &path,
                        0,
                        "table named by the manifest is missing",
                    ))
                } else {
                    e.into()
                }
            })?;
        let table = Arc::new(open_table(f, cache.as_ref(), meta.number)?);
        slot.push(Arc::new(Sst::new(table, meta.number)));
    }
    for (l, fs) in levels.iter_mut().enumerate() {
        sort_level(l, fs);
    }

    let mem = Arc::new(Memtable::new());
    let mut last_seq = state.last_seq;
    let flushed_seq = state.last_seq;
    let wal_opts = WalOptions {
        sync: SyncPolicy::Never,
        background_seal: opts.background_threads,
        ..WalOptions::default()
    };
    let wal_dir = dir.join("wal");
    let mut replayed = 0u64;
    let wal_rec = strata_wal::recover(&*storage, &wal_dir, wal_opts.recovery, |lsn, rec| {
        // The WAL names the segment and the entry's offset.
        let (first, entries) = batch::decode(rec).map_err(|r| strata_wal::Error::Corruption {
            path: PathBuf::new(),
            offset: 0,
            reason: format!("WAL record {lsn} is not a write batch: {r}"),
        })?;
        // Skip by sequence number, not by WAL LSN: a crash can lose an
        // unsynced WAL tail that a flush already made durable in a
        // table, and the next life then hands out those LSNs again;
        // sequence numbers only ever grow. A batch lies whole in one
        // memtable, and memtables are flushed in order, so a batch is
        // in a table exactly when its last number is.
        if first + entries.len() as u64 - 1 <= flushed_seq {
            return Ok(());
        }
        for (i, e) in entries.iter().enumerate() {
            apply(&mem, e, first + i as u64);
        }
        last_seq = last_seq.max(first + entries.len() as u64 - 1);
        replayed += 1;
        Ok(())
    })?;
    // WAL segments are released only after a durable manifest edit
    // covers them, so the log starts at or before the first record the
    // tables lack. A later start means the manifest lost such an edit
    // (damage read as a torn tail) and the records between are gone.
    if let Some(first) = wal_rec.segments.first() {
        if first.first_lsn > state.log_lsn + 1 {
            return Err(manifest_cut(Error::corruption(
                &first.path,
                0,
                format!(
                    "the WAL starts at LSN {} but the tables hold its records only up to LSN {}: \
                     the records between were released by a flush the manifest no longer has",
                    first.first_lsn, state.log_lsn
                ),
            )));
        }
    }

    let version = Version {
        mem,
        imms: Vec::new(),
        levels,
    };
    if let Some((l, a, b)) = version.overlap_in_level() {
        return Err(Error::corruption(
            &dir.join("manifest"),
            0,
            format!("tables {a} and {b} overlap in level {l}"),
        ));
    }

    // Checked: commit to the recovered state.
    let mut recovery = RecoveryInfo {
        wal_batches_replayed: replayed,
        wal_cut: wal_rec.truncated.clone(),
        manifest_cut: man.recovery.truncated.clone(),
        orphans_deleted: 0,
    };
    for (what, cut) in [
        ("WAL", &recovery.wal_cut),
        ("manifest", &recovery.manifest_cut),
    ] {
        if let Some(c) = cut {
            tracing::warn!(
                file = %c.path.display(),
                offset = c.offset,
                reason = %c.reason,
                "{what} cut at a torn tail; what followed it is not recovered"
            );
        }
    }
    let manifest = Manifest::open_recovered(storage.clone(), man)?;
    // LSNs go on past the manifest's mark even when the WAL lost its tail
    // (a power cut after a flush, a cut at damage): a reused LSN would
    // blind the check above to a manifest that lost a flush edit. Only
    // when replay found every record in tables: then none is wanted.
    let first_lsn = if replayed == 0 { state.log_lsn + 1 } else { 0 };
    let wal = Wal::open_recovered_at(storage.clone(), &wal_dir, wal_opts, &wal_rec, first_lsn)?;
    // When replay skipped every batch, the tables hold every record of
    // the old segments (a flush at close cannot release the segment it
    // was writing): release them now, not at the next flush. Decided by
    // what replay found, never by the manifest's log LSN: a WAL cut at
    // damage or a power cut hands out lower LSNs again, and releasing by
    // the old mark would drop segments holding records no table has.
    if replayed == 0 {
        wal.purge_before(wal.last_lsn() + 1)?;
    }
    // Files a crash left behind (a flush or compaction that never
    // reached the manifest).
    for name in storage.list_dir(&dir)? {
        if let Some(num) = name
            .strip_suffix(".sst")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if !state.tables.keys().any(|(_, n)| *n == num) {
                storage.remove_file(&dir.join(&name))?;
                recovery.orphans_deleted += 1;
            }
        }
    }
    let inner = Arc::new(Inner {
        storage,
        dir,
        picker: opts.picker(),
        limiter: RateLimiter::new(opts.rate_limit_bytes_per_sec),
        stats: Counters::new(opts.num_levels),
        opts,
        wal,
        manifest: Mutex::new(manifest),
        write: Mutex::new(WriteState { delay_debt: 0 }),
        last_seq: AtomicU64::new(last_seq),
        version: RwLock::new(Arc::new(version)),
        bg: Mutex::new(BgState {
            closing: false,
            error: None,
            busy: HashSet::new(),
            running: 0,
            manual: false,
        }),
        bg_cv: Condvar::new(),
        stall: AtomicU8::new(Stall::None as u8),
        snapshots: Mutex::new(Default::default()),
        cache,
        closed: AtomicBool::new(false),
        _lock: lock,
        recovery,
    });
    inner.update_stall();
    let threads = Arc::new(Threads {
        inner: inner.clone(),
        handles: Mutex::new(Vec::new()),
    });
    if inner.opts.background_threads {
        threads.spawn("strata-flush", {
            let w = inner.clone();
            move || w.flush_loop()
        })?;
        for i in 0..inner.opts.max_background_compactions {
            let w = inner.clone();
            threads.spawn(&format!("strata-compact-{i}"), move || w.compaction_loop())?;
        }
    }
    let db = Db { inner, threads };
    // What the WAL replayed goes to a table now (as RocksDB does), so
    // its segments are released: otherwise every open would start a
    // segment and replay all the older ones, and a database opened
    // and closed often (a CLI, a test suite, a crash loop) would grow
    // its WAL and its open time without bound. A crash during this
    // flush is a crash during an ordinary flush.
    if replayed > 0 && !db.inner.opts.avoid_flush_during_recovery {
        db.flush()?;
    }
    Ok(db)
}
