//! Iterators: cursors over internal keys from each source (memtables,
//! tables), a merging cursor over all of them, and the user-facing
//! [`DbIterator`] that shows, for each user key, the newest version visible
//! at its snapshot and hides deleted keys, forwards and backwards, within
//! optional bounds.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use crate::key::{self, Kind};
use crate::memtable::{InternalKey, Memtable};
use crate::range_del::RangeTombstone;
use crate::table::{Table, TableIter};
use crate::{Error, Result};

/// A cursor over internal keys in [`key::compare`] order.
pub trait InternalIterator: Send {
    /// Whether it is on an entry.
    fn valid(&self) -> bool;
    /// The internal key.
    fn key(&self) -> &[u8];
    /// The value.
    fn value(&self) -> &[u8];
    /// To the first entry.
    fn seek_to_first(&mut self);
    /// To the last entry.
    fn seek_to_last(&mut self);
    /// To the first entry >= `target`.
    fn seek(&mut self, target: &[u8]);
    /// Forward one entry.
    fn next(&mut self);
    /// Back one entry.
    fn prev(&mut self);
    /// The error that stopped it, if any.
    fn error(&self) -> Option<Error>;
}

/// A cursor over a memtable. It holds no borrow of the skiplist: it copies
/// a batch of entries (the current one first) in one walk of the bottom
/// level, and seeks again only when the batch runs out or the direction
/// changes. Batches start small (a seek often reads a few entries) and
/// double up to 256 for long scans. Writers may insert meanwhile; readers
/// filter by sequence number, and every entry at or below their snapshot
/// was in the memtable before the cursor was made.
pub struct MemIter {
    mem: Arc<Memtable>,
    buf: std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    forward: bool,
    batch: usize,
}

const MEM_BATCH_MIN: usize = 16;
const MEM_BATCH_MAX: usize = 256;

impl MemIter {
    /// A cursor over `mem`.
    pub fn new(mem: Arc<Memtable>) -> Self {
        MemIter {
            mem,
            buf: std::collections::VecDeque::new(),
            forward: true,
            batch: MEM_BATCH_MIN,
        }
    }

    fn fill(&mut self, from: Bound<&InternalKey>, forward: bool, batch: usize) {
        self.buf.clear();
        self.forward = forward;
        self.batch = batch;
        self.mem.scan(from, forward, batch, &mut self.buf);
    }

    /// Moves one entry in `forward` direction.
    fn step(&mut self, forward: bool) {
        let Some((k, _)) = self.buf.pop_front() else {
            return;
        };
        if self.forward != forward {
            // Turned around: the batch runs the other way.
            self.fill(Bound::Excluded(&InternalKey(k)), forward, MEM_BATCH_MIN);
        } else if self.buf.is_empty() {
            let batch = (self.batch * 2).min(MEM_BATCH_MAX);
            self.fill(Bound::Excluded(&InternalKey(k)), forward, batch);
        }
    }
}

impl InternalIterator for MemIter {
    fn valid(&self) -> bool {
        !self.buf.is_empty()
    }
    fn key(&self) -> &[u8] {
        self.buf.front().map_or(&[], |c| &c.0)
    }
    fn value(&self) -> &[u8] {
        self.buf.front().map_or(&[], |c| &c.1)
    }
    fn seek_to_first(&mut self) {
        self.fill(Bound::Unbounded, true, MEM_BATCH_MIN);
    }
    fn seek_to_last(&mut self) {
        self.fill(Bound::Unbounded, false, MEM_BATCH_MIN);
    }
    fn seek(&mut self, target: &[u8]) {
        self.fill(
            Bound::Included(&InternalKey(target.to_vec())),
            true,
            MEM_BATCH_MIN,
        );
    }
    fn next(&mut self) {
        self.step(true);
    }
    fn prev(&mut self) {
        self.step(false);
    }
    fn error(&self) -> Option<Error> {
        None
    }
}

impl InternalIterator for TableIter {
    fn valid(&self) -> bool {
        TableIter::valid(self)
    }
    fn key(&self) -> &[u8] {
        TableIter::key(self)
    }
    fn value(&self) -> &[u8] {
        TableIter::value(self)
    }
    fn seek_to_first(&mut self) {
        TableIter::seek_to_first(self)
    }
    fn seek_to_last(&mut self) {
        TableIter::seek_to_last(self)
    }
    fn seek(&mut self, target: &[u8]) {
        TableIter::seek(self, target)
    }
    fn next(&mut self) {
        TableIter::next(self)
    }
    fn prev(&mut self) {
        TableIter::prev(self)
    }
    fn error(&self) -> Option<Error> {
        TableIter::error(self).map(Error::duplicate)
    }
}

/// One table of a sorted level, with its user-key upper bound.
#[derive(Clone)]
pub struct LevelFile {
    /// The table.
    pub table: Arc<Table>,
    /// Its largest user key.
    pub largest: Vec<u8>,
    /// Whether `largest` itself is outside the table (a range tombstone's
    /// exclusive end).
    pub largest_exclusive: bool,
}

impl LevelFile {
    /// Whether every key of the table is below `user_key`.
    pub fn before(&self, user_key: &[u8]) -> bool {
        match self.largest.as_slice().cmp(user_key) {
            Ordering::Less => true,
            Ordering::Equal => self.largest_exclusive,
            Ordering::Greater => false,
        }
    }
}

/// A cursor over a level of non-overlapping tables sorted by key: one
/// table open at a time, so a merge over a deep tree compares one cursor
/// per level, not one per table.
pub struct LevelIter {
    files: Vec<LevelFile>,
    idx: usize,
    cur: Option<TableIter>,
}

impl LevelIter {
    /// A cursor over `files` (sorted, non-overlapping).
    pub fn new(files: Vec<LevelFile>) -> Self {
        LevelIter {
            files,
            idx: 0,
            cur: None,
        }
    }

    fn open(&mut self, i: usize) -> bool {
        self.idx = i;
        self.cur = self.files.get(i).map(|f| f.table.iter());
        self.cur.is_some()
    }

    fn stuck(&self) -> bool {
        self.cur
            .as_ref()
            .is_some_and(|c| !c.valid() && c.error().is_none())
    }

    fn skip_forward(&mut self) {
        while self.stuck() {
            if !self.open(self.idx + 1) {
                return;
            }
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_first();
            }
        }
    }

    fn skip_backward(&mut self) {
        while self.stuck() {
            if self.idx == 0 {
                self.cur = None;
                return;
            }
            self.open(self.idx - 1);
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_last();
            }
        }
    }
}

impl InternalIterator for LevelIter {
    fn valid(&self) -> bool {
        self.cur.as_ref().is_some_and(|c| c.valid())
    }
    fn key(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| c.key())
    }
    fn value(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| c.value())
    }
    fn seek_to_first(&mut self) {
        if self.open(0) {
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_first();
            }
            self.skip_forward();
        }
    }
    fn seek_to_last(&mut self) {
        if let Some(last) = self.files.len().checked_sub(1) {
            self.open(last);
            if let Some(c) = self.cur.as_mut() {
                c.seek_to_last();
            }
            self.skip_backward();
        }
    }
    fn seek(&mut self, target: &[u8]) {
        let uk = key::user_key(target);
        let i = self.files.partition_point(|f| f.before(uk));
        if self.open(i) {
            if let Some(c) = self.cur.as_mut() {
                c.seek(target);
            }
            self.skip_forward();
        }
    }
    fn next(&mut self) {
        if let Some(c) = self.cur.as_mut() {
            c.next();
        }
        self.skip_forward();
    }
    fn prev(&mut self) {
        if let Some(c) = self.cur.as_mut() {
            c.prev();
        }
        self.skip_backward();
    }
    fn error(&self) -> Option<Error> {
        self.cur
            .as_ref()
            .and_then(|c| c.error().map(Error::duplicate))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Backward,
}

/// Merges sorted cursors into one. Internal keys are unique across sources
/// (every version has its own sequence number), so there are no ties.
pub struct MergingIter {
    children: Vec<Box<dyn InternalIterator>>,
    current: Option<usize>,
    dir: Direction,
}

impl MergingIter {
    /// Merges `children`.
    pub fn new(children: Vec<Box<dyn InternalIterator>>) -> Self {
        MergingIter {
            children,
            current: None,
            dir: Direction::Forward,
        }
    }

    fn pick(&mut self, want: Ordering) {
        let mut best: Option<usize> = None;
        for (i, c) in self.children.iter().enumerate() {
            if !c.valid() {
                continue;
            }
            best = match best {
                Some(b) if key::compare(c.key(), self.children[b].key()) != want => Some(b),
                _ => Some(i),
            };
        }
        self.current = best;
    }
}

impl InternalIterator for MergingIter {
    fn valid(&self) -> bool {
        self.current.is_some_and(|i| self.children[i].valid())
    }
    fn key(&self) -> &[u8] {
        self.current.map_or(&[], |i| self.children[i].key())
    }
    fn value(&self) -> &[u8] {
        self.current.map_or(&[], |i| self.children[i].value())
    }
    fn seek_to_first(&mut self) {
        self.children.iter_mut().for_each(|c| c.seek_to_first());
        self.dir = Direction::Forward;
        self.pick(Ordering::Less);
    }
    fn seek_to_last(&mut self) {
        self.children.iter_mut().for_each(|c| c.seek_to_last());
        self.dir = Direction::Backward;
        self.pick(Ordering::Greater);
    }
    fn seek(&mut self, target: &[u8]) {
        self.children.iter_mut().for_each(|c| c.seek(target));
        self.dir = Direction::Forward;
        self.pick(Ordering::Less);
    }
    fn next(&mut self) {
        let Some(cur) = self.current else { return };
        if self.dir == Direction::Backward {
            // Put every other child on its first entry after the current key.
            let k = self.children[cur].key().to_vec();
            for (i, c) in self.children.iter_mut().enumerate() {
                if i != cur {
                    c.seek(&k);
                    if c.valid() && key::compare(c.key(), &k) == Ordering::Equal {
                        c.next();
                    }
                }
            }
            self.dir = Direction::Forward;
        }
        self.children[cur].next();
        self.pick(Ordering::Less);
    }
    fn prev(&mut self) {
        let Some(cur) = self.current else { return };
        if self.dir == Direction::Forward {
            // Put every other child on its last entry before the current key.
            let k = self.children[cur].key().to_vec();
            for (i, c) in self.children.iter_mut().enumerate() {
                if i != cur {
                    c.seek(&k);
                    if c.valid() {
                        c.prev();
                    } else {
                        c.seek_to_last();
                    }
                }
            }
            self.dir = Direction::Backward;
        }
        self.children[cur].prev();
        self.pick(Ordering::Greater);
    }
    fn error(&self) -> Option<Error> {
        self.children.iter().find_map(|c| c.error())
    }
}

/// Bounds and snapshot of a user-facing iterator.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Read at this sequence number (a [`crate::Snapshot`]'s); latest if `None`.
    pub snapshot: Option<u64>,
    /// Smallest user key to show (inclusive).
    pub lower_bound: Option<Vec<u8>>,
    /// First user key not to show (exclusive).
    pub upper_bound: Option<Vec<u8>>,
    /// Show only keys starting with this (narrows the bounds).
    pub prefix: Option<Vec<u8>>,
}

/// The smallest key greater than every key starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// User-facing cursor: each live user key once, with its newest value at
/// the snapshot, in key order, forwards or backwards.
pub struct DbIterator {
    inner: MergingIter,
    seq: u64,
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
    key: Vec<u8>,
    value: Vec<u8>,
    valid: bool,
    /// Moving forward the inner cursor sits on the current entry; moving
    /// backward it sits just before the current user key's versions.
    dir: Direction,
    /// Range tombstones visible at the snapshot.
    tombstones: Vec<RangeTombstone>,
    /// Keeps memtables and tables alive while the cursor exists.
    _pins: Vec<Arc<dyn Send + Sync>>,
    /// A key no source should have produced (tables check theirs): the
    /// iterator stops on it and reports it.
    err: Option<Error>,
}

impl DbIterator {
    pub(crate) fn new(
        inner: MergingIter,
        seq: u64,
        opts: ReadOptions,
        tombstones: Vec<RangeTombstone>,
        pins: Vec<Arc<dyn Send + Sync>>,
    ) -> Self {
        let mut lower = opts.lower_bound;
        let mut upper = opts.upper_bound;
        if let Some(p) = opts.prefix {
            if lower.as_ref().is_none_or(|l| *l < p) {
                lower = Some(p.clone());
            }
            if let Some(end) = prefix_end(&p) {
                if upper.as_ref().is_none_or(|u| *u > end) {
                    upper = Some(end);
                }
            }
        }
        DbIterator {
            inner,
            seq,
            lower,
            upper,
            key: Vec::new(),
            value: Vec::new(),
            valid: false,
            dir: Direction::Forward,
            tombstones,
            _pins: pins,
            err: None,
        }
    }

    /// Whether it is on a key.
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current user key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Its value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// `Err` if a source failed (e.g. a damaged block); the cursor is then invalid.
    pub fn status(&self) -> Result<()> {
        if let Some(e) = &self.err {
            return Err(e.duplicate());
        }
        match self.inner.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn malformed(&mut self) {
        self.err = Some(Error::Corruption {
            path: std::path::PathBuf::from("(memtable)"),
            offset: 0,
            reason: "malformed internal key".into(),
        });
        self.valid = false;
    }

    /// The kind a reader sees for this version: a put hidden by a range
    /// tombstone reads as a delete.
    fn effective(&self, uk: &[u8], seqno: u64, kind: Kind) -> Kind {
        if kind == Kind::Put
            && self
                .tombstones
                .iter()
                .any(|t| t.covers(uk, seqno, self.seq))
        {
            Kind::Delete
        } else {
            kind
        }
    }

    fn in_upper(&self, uk: &[u8]) -> bool {
        self.upper.as_ref().is_none_or(|u| uk < u.as_slice())
    }

    fn in_lower(&self, uk: &[u8]) -> bool {
        self.lower.as_ref().is_none_or(|l| uk >= l.as_slice())
    }

    /// From the inner cursor's position, finds the next visible live key.
    fn find_next_user_entry(&mut self, mut skipping: Option<Vec<u8>>) {
        self.dir = Direction::Forward;
        while self.inner.valid() {
            let Some(p) = key::parse(self.inner.key()) else {
                self.malformed();
                return;
            };
            if !self.in_upper(p.user_key) {
                break;
            }
            if p.seqno <= self.seq && skipping.as_deref() != Some(p.user_key) {
                match self.effective(p.user_key, p.seqno, p.kind) {
                    Kind::Delete => skipping = Some(p.user_key.to_vec()),
                    Kind::Put => {
                        // Reuse the buffers: no allocation per step.
                        self.key.clear();
                        self.key.extend_from_slice(p.user_key);
                        self.value.clear();
                        self.value.extend_from_slice(self.inner.value());
                        self.valid = true;
                        return;
                    }
                }
            }
            self.inner.next();
        }
        self.valid = false;
    }

    /// From the inner cursor's position, moving backward, finds the previous
    /// visible live key: versions of a key arrive oldest first, so the last
    /// visible one before the key changes is the newest.
    fn find_prev_user_entry(&mut self) {
        self.dir = Direction::Backward;
        let mut found: Option<(Vec<u8>, Kind, Vec<u8>)> = None;
        while self.inner.valid() {
            let Some(p) = key::parse(self.inner.key()) else {
                self.malformed();
                return;
            };
            if let Some((k, kind, _)) = &found {
                if p.user_key != k.as_slice() {
                    if *kind == Kind::Put {
                        break;
                    }
                    found = None;
                }
            }
            if !self.in_lower(p.user_key) {
                break;
            }
            if p.seqno <= self.seq && self.in_upper(p.user_key) {
                let kind = self.effective(p.user_key, p.seqno, p.kind);
                found = Some((p.user_key.to_vec(), kind, self.inner.value().to_vec()));
            }
            self.inner.prev();
        }
        match found {
            Some((k, Kind::Put, v)) if self.in_lower(&k) => {
                self.key = k;
                self.value = v;
                self.valid = true;
            }
            _ => self.valid = false,
        }
    }

    /// To the first live key (within bounds).
    pub fn seek_to_first(&mut self) {
        match self.lower.clone() {
            Some(l) => self.inner.seek(&key::encode(&l, key::MAX_SEQNO, Kind::Put)),
            None => self.inner.seek_to_first(),
        }
        self.find_next_user_entry(None);
    }

    /// To the last live key (within bounds).
    pub fn seek_to_last(&mut self) {
        match self.upper.clone() {
            Some(u) => {
                self.inner.seek(&key::encode(&u, key::MAX_SEQNO, Kind::Put));
                if self.inner.valid() {
                    self.inner.prev();
                } else {
                    self.inner.seek_to_last();
                }
            }
            None => self.inner.seek_to_last(),
        }
        self.find_prev_user_entry();
    }

    /// To the first live key >= `target` (and within bounds).
    pub fn seek(&mut self, target: &[u8]) {
        let t = match &self.lower {
            Some(l) if l.as_slice() > target => l.clone(),
            _ => target.to_vec(),
        };
        self.inner.seek(&key::encode(&t, key::MAX_SEQNO, Kind::Put));
        self.find_next_user_entry(None);
    }

    /// To the last live key <= `target` (and within bounds).
    pub fn seek_for_prev(&mut self, target: &[u8]) {
        // `(target, 0, Delete)` sorts after every real version of target
        // (sequence numbers start at 1): seek there, then step back.
        self.inner.seek(&key::encode(target, 0, Kind::Delete));
        if self.inner.valid() {
            self.inner.prev();
        } else {
            self.inner.seek_to_last();
        }
        self.find_prev_user_entry();
        if self.valid && !self.in_upper(&self.key.clone()) {
            self.valid = false;
        }
    }

    /// To the next live key.
    pub fn next(&mut self) {
        if !self.valid {
            return;
        }
        let cur = self.key.clone();
        if self.dir == Direction::Backward {
            // The inner cursor is before `cur`'s versions: go to the first.
            self.inner
                .seek(&key::encode(&cur, key::MAX_SEQNO, Kind::Put));
        }
        self.find_next_user_entry(Some(cur));
    }

    /// To the previous live key.
    pub fn prev(&mut self) {
        if !self.valid {
            return;
        }
        if self.dir == Direction::Forward {
            // Step back to just before the current key's versions.
            let cur = self.key.clone();
            self.inner
                .seek(&key::encode(&cur, key::MAX_SEQNO, Kind::Put));
            if self.inner.valid() {
                self.inner.prev();
            } else {
                self.inner.seek_to_last();
            }
        }
        self.find_prev_user_entry();
    }
}
