//! The set of memtables and tables that reads see, replaced whole (copy
//! on write) by flushes and compactions, so a reader holds a consistent
//! view for as long as it keeps the `Arc`.
//!
//! Invariants:
//! * L0 tables are ordered newest first (by largest sequence number: the
//!   runs in L0 hold disjoint sequence ranges); their keys may overlap.
//! * Deeper levels hold tables sorted by key whose key ranges do not
//!   overlap; compactions split outputs only between user keys.
//! * For any user key, a version in a shallower place (memtable, then L0
//!   newest first, then L1, L2, ...) is newer than one deeper down, so a
//!   point read stops at the first place that has the key.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use strata_wal::Lsn;

use crate::iter::LevelFile;
use crate::key::{self, Kind};
use crate::memtable::Memtable;
use crate::picker::{FileInfo, TreeShape};
use crate::range_del;
use crate::table::Table;

/// A table in a level, with its user-key range.
pub(crate) struct Sst {
    pub table: Arc<Table>,
    pub number: u64,
    /// Smallest user key of its entries and range tombstones.
    pub smallest: Vec<u8>,
    /// Largest user key, or a range tombstone's end if that is larger.
    pub largest: Vec<u8>,
    /// `largest` is a range tombstone's (exclusive) end.
    pub largest_exclusive: bool,
}

impl Sst {
    pub fn new(table: Arc<Table>, number: u64) -> Sst {
        let props = table.properties();
        let mut lo: Option<Vec<u8>> = None;
        let mut hi: Option<(Vec<u8>, bool)> = None;
        if props.entries > 0 {
            lo = Some(key::user_key(&props.smallest).to_vec());
            hi = Some((key::user_key(&props.largest).to_vec(), false));
        }
        for t in table.range_tombstones() {
            if lo.as_ref().is_none_or(|l| t.start < *l) {
                lo = Some(t.start.clone());
            }
            if hi.as_ref().is_none_or(|(h, _)| t.end > *h) {
                hi = Some((t.end.clone(), true));
            }
        }
        let (largest, largest_exclusive) = hi.unwrap_or_default();
        Sst {
            table,
            number,
            smallest: lo.unwrap_or_default(),
            largest,
            largest_exclusive,
        }
    }

    pub fn size(&self) -> u64 {
        self.table.size()
    }

    pub fn max_seqno(&self) -> u64 {
        self.table.properties().max_seqno
    }

    /// Every key of the table is below `user_key`.
    pub fn before(&self, user_key: &[u8]) -> bool {
        match self.largest.as_slice().cmp(user_key) {
            Ordering::Less => true,
            Ordering::Equal => self.largest_exclusive,
            Ordering::Greater => false,
        }
    }

    pub fn contains(&self, user_key: &[u8]) -> bool {
        self.smallest.as_slice() <= user_key && !self.before(user_key)
    }

    pub fn level_file(&self) -> LevelFile {
        LevelFile {
            table: self.table.clone(),
            largest: self.largest.clone(),
            largest_exclusive: self.largest_exclusive,
        }
    }
}

/// What the reads of a version see.
pub(crate) struct Version {
    pub mem: Arc<Memtable>,
    /// Memtables waiting to be flushed, newest first, each with the last
    /// WAL LSN it holds.
    pub imms: Vec<(Arc<Memtable>, Lsn)>,
    /// Tables per level.
    pub levels: Vec<Vec<Arc<Sst>>>,
}

/// Orders a level as the invariants want it.
pub(crate) fn sort_level(level: usize, files: &mut [Arc<Sst>]) {
    if level == 0 {
        files.sort_by(|a, b| {
            b.max_seqno()
                .cmp(&a.max_seqno())
                .then(b.number.cmp(&a.number))
        });
    } else {
        files.sort_by(|a, b| a.smallest.cmp(&b.smallest));
    }
}

impl Version {
    /// The same tables with other memtables.
    pub fn with_memtables(&self, mem: Arc<Memtable>, imms: Vec<(Arc<Memtable>, Lsn)>) -> Version {
        Version {
            mem,
            imms,
            levels: self.levels.clone(),
        }
    }

    /// Tables that may hold `user_key`, newest first.
    /// The first half of a point lookup of `user_key` at `seq`: the newest
    /// range tombstone over it from every source, and its newest version
    /// in the memtables (the first, newest first, that has one: see the
    /// invariants). Tables are the caller's (one by one, or batched).
    pub fn lookup_start(&self, user_key: &[u8], seq: u64) -> (u64, Option<(u64, Kind, Vec<u8>)>) {
        let mut hidden_below = self.mem.max_covering(user_key, seq);
        for (imm, _) in &self.imms {
            hidden_below = hidden_below.max(imm.max_covering(user_key, seq));
        }
        for f in self.tables_for_key(user_key) {
            hidden_below = hidden_below.max(range_del::max_covering(
                f.table.range_tombstones(),
                user_key,
                seq,
            ));
        }
        let mut best = self.mem.get_entry(user_key, seq);
        for (imm, _) in &self.imms {
            if best.is_some() {
                break;
            }
            best = imm.get_entry(user_key, seq);
        }
        (hidden_below, best)
    }

    pub fn tables_for_key<'a>(&'a self, user_key: &'a [u8]) -> impl Iterator<Item = &'a Arc<Sst>> {
        let l0 = self
            .levels
            .first()
            .into_iter()
            .flatten()
            .filter(move |f| f.contains(user_key));
        let deeper = self.levels.iter().skip(1).filter_map(move |files| {
            let i = files.partition_point(|f| f.before(user_key));
            files.get(i).filter(|f| f.contains(user_key))
        });
        l0.chain(deeper)
    }

    pub fn find(&self, number: u64) -> Option<(usize, &Arc<Sst>)> {
        self.levels
            .iter()
            .enumerate()
            .find_map(|(l, fs)| fs.iter().find(|f| f.number == number).map(|f| (l, f)))
    }

    /// The tree as pickers see it.
    pub fn shape(&self, busy: &HashSet<u64>) -> TreeShape {
        TreeShape {
            levels: self
                .levels
                .iter()
                .map(|fs| {
                    fs.iter()
                        .map(|f| FileInfo {
                            number: f.number,
                            size: f.size(),
                            smallest: f.smallest.clone(),
                            largest: f.largest.clone(),
                            busy: busy.contains(&f.number),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    /// This version with `removed` tables gone and `added` ones in place.
    pub fn edit(&self, removed: &[u64], added: &[(usize, Arc<Sst>)]) -> Version {
        let mut levels: Vec<Vec<Arc<Sst>>> = self
            .levels
            .iter()
            .map(|fs| {
                fs.iter()
                    .filter(|f| !removed.contains(&f.number))
                    .cloned()
                    .collect()
            })
            .collect();
        for (l, f) in added {
            if let Some(level) = levels.get_mut(*l) {
                level.push(f.clone());
            }
        }
        for (l, fs) in levels.iter_mut().enumerate() {
            sort_level(l, fs);
        }
        Version {
            mem: self.mem.clone(),
            imms: self.imms.clone(),
            levels,
        }
    }

    /// The first pair of overlapping tables in a sorted level, if any.
    pub fn overlap_in_level(&self) -> Option<(usize, u64, u64)> {
        for (l, fs) in self.levels.iter().enumerate().skip(1) {
            for w in fs.windows(2) {
                if !w[0].before(&w[1].smallest) {
                    return Some((l, w[0].number, w[1].number));
                }
            }
        }
        None
    }
}
