//! Flushes: memtable switches, the flush thread (or, without background
//! threads, the writer itself running flushes and compactions inline), and
//! writing an immutable memtable to an L0 table recorded in the manifest.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use strata_io::OpenOptions;
use strata_wal::Lsn;

use super::stats::{Counters, StallCause};
use super::version::Sst;
use super::{open_table, release_here, table_path, Inner, WAIT_SLICE};
use crate::manifest::{Edit, TableMeta};
use crate::memtable::Memtable;
use crate::table::TableBuilder;
use crate::{Error, Result};

impl Inner {
    /// Makes the memtable immutable (the caller holds the write lock),
    /// first waiting while every memtable slot is taken.
    pub(super) fn switch_memtable(&self, lsn: Lsn) -> Result<()> {
        let full = || self.version.read().imms.len() + 1 >= self.opts.max_write_buffer_number;
        if full() {
            let t0 = Instant::now();
            let mut bg = self.bg.lock();
            while full() {
                self.wait_bg(&mut bg)?;
            }
            drop(bg);
            self.stats
                .stall(StallCause::Memtable, t0.elapsed().as_micros() as u64);
        }
        self.install(|old| {
            let mut imms = Vec::with_capacity(old.imms.len() + 1);
            imms.push((old.mem.clone(), lsn));
            imms.extend(old.imms.iter().cloned());
            old.with_memtables(Arc::new(Memtable::new()), imms)
        });
        Ok(())
    }

    /// In the deterministic mode (no background threads): flushes every
    /// immutable memtable, then runs the compactions due until none is,
    /// in the calling thread (which holds the write lock). A failure is
    /// recorded as a background failure would be.
    pub(super) fn run_inline(&self) -> Result<()> {
        if self.opts.background_threads {
            return Ok(());
        }
        self.check_bg_error()?;
        let res = (|| {
            while !self.version.read().imms.is_empty() {
                self.flush_oldest()?;
            }
            if !self.opts.auto_compactions {
                return Ok(());
            }
            loop {
                // (The lock is released before the task runs: installing
                // its result takes it again.)
                let next = self.pick(&self.bg.lock());
                let Some(task) = next else {
                    return Ok(());
                };
                self.run_task(&task)?;
                self.update_stall();
            }
        })();
        if let Err(e) = &res {
            self.fail(e);
        }
        res
    }

    pub(super) fn wait_flushed(&self) -> Result<()> {
        let mut bg = self.bg.lock();
        while !self.version.read().imms.is_empty() {
            self.wait_bg(&mut bg)?;
        }
        if let Some(e) = &bg.error {
            return Err(Error::Background(e.clone()));
        }
        Ok(())
    }

    pub(super) fn flush_loop(self: Arc<Self>) {
        loop {
            {
                let mut bg = self.bg.lock();
                loop {
                    let pending = !self.version.read().imms.is_empty();
                    if bg.closing && (!pending || bg.error.is_some()) {
                        return;
                    }
                    if pending && bg.error.is_none() {
                        break;
                    }
                    self.bg_cv.wait_for(&mut bg, WAIT_SLICE);
                }
            }
            if let Err(e) = self.flush_oldest() {
                self.fail(&e);
            }
        }
    }

    /// A builder for a new table file with a fresh number.
    pub(super) fn new_table(&self) -> Result<(u64, TableBuilder)> {
        let n = self.manifest.lock().new_file_number();
        let f = self
            .storage
            .open(&table_path(&self.dir, n), OpenOptions::create_new())?;
        Ok((n, TableBuilder::new(f, self.opts.table)))
    }

    pub(super) fn open_sst(&self, number: u64) -> Result<Arc<Sst>> {
        let f = self.storage.open(
            &table_path(&self.dir, number),
            OpenOptions::existing().direct(self.opts.use_direct_reads),
        )?;
        let table = Arc::new(open_table(f, self.cache.as_ref(), number)?);
        Ok(Arc::new(Sst::new(table, number)))
    }

    /// Writes the oldest immutable memtable to a new L0 table.
    pub(super) fn flush_oldest(&self) -> Result<()> {
        let Some((imm, lsn)) = self.version.read().imms.last().cloned() else {
            return Ok(());
        };
        let (number, mut b) = self.new_table()?;
        for (k, v) in imm.entries() {
            b.add(&k, &v)?;
        }
        for t in imm.range_tombstones() {
            b.add_range_tombstone(t);
        }
        let (size, props) = b.finish()?;
        self.storage.sync_dir(&self.dir)?;
        let meta = TableMeta {
            level: 0,
            number,
            size,
            min_seqno: props.min_seqno,
            max_seqno: props.max_seqno,
            smallest: props.smallest.clone(),
            largest: props.largest.clone(),
        };
        self.manifest.lock().apply(&[
            Edit::AddTable(meta),
            Edit::LogLsn(lsn),
            Edit::NextFile(number + 1),
            Edit::LastSeq(props.max_seqno),
        ])?;
        let sst = self.open_sst(number)?;
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.flushed_bytes.fetch_add(size, Ordering::Relaxed);
        Counters::add(&self.stats.level_written, 0, size);
        // Records up to `lsn` live in tables now. Released before the
        // memtable leaves the version, so a caller waiting for the flush
        // (`Db::flush`, an open replaying the WAL) finds the WAL released.
        self.wal.purge_before(lsn + 1)?;
        self.install(|old| {
            let mut v = old.edit(&[], &[(0, sst)]);
            v.imms.retain(|(m, _)| !Arc::ptr_eq(m, &imm));
            v
        });
        if self.opts.background_threads {
            release_here(imm);
        }
        Ok(())
    }
}
