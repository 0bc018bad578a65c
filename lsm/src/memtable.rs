//! The memtable: a concurrent skiplist (crossbeam-skiplist) of internal
//! keys, so readers never block writers. Writes are serialised by the
//! engine (sequence numbers are assigned in order); reads at a snapshot see
//! exactly the entries with a sequence number at or below it.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use crossbeam_skiplist::SkipMap;
use parking_lot::Mutex;

use crate::range_del::RangeTombstone;

use crate::key::{self, Kind};
use crate::table::Lookup;

/// An internal key ordered by [`key::compare`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalKey(pub Vec<u8>);

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        key::compare(&self.0, &other.0)
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Per-entry bookkeeping counted against the write buffer besides key and
/// value bytes (skiplist node, tower, allocation headers: an estimate).
const ENTRY_OVERHEAD: usize = 64;

/// A memtable.
#[derive(Debug, Default)]
pub struct Memtable {
    map: SkipMap<InternalKey, Vec<u8>>,
    bytes: AtomicUsize,
    range_dels: Mutex<Vec<RangeTombstone>>,
    max_seq: std::sync::atomic::AtomicU64,
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts one version.
    pub fn insert(&self, user_key: &[u8], seqno: u64, kind: Kind, value: &[u8]) {
        let k = key::encode(user_key, seqno, kind);
        self.bytes.fetch_add(
            k.len() + value.len() + ENTRY_OVERHEAD,
            AtomicOrdering::Relaxed,
        );
        self.max_seq.fetch_max(seqno, AtomicOrdering::Relaxed);
        self.map.insert(InternalKey(k), value.to_vec());
    }

    /// Adds a range tombstone over `[start, end)` at `seqno`.
    pub fn delete_range(&self, start: &[u8], end: &[u8], seqno: u64) {
        self.bytes.fetch_add(
            start.len() + end.len() + ENTRY_OVERHEAD,
            AtomicOrdering::Relaxed,
        );
        self.max_seq.fetch_max(seqno, AtomicOrdering::Relaxed);
        self.range_dels.lock().push(RangeTombstone {
            start: start.to_vec(),
            end: end.to_vec(),
            seqno,
        });
    }

    /// The newest range tombstone hiding `key` at `snapshot` (0 if none).
    pub fn max_covering(&self, key: &[u8], snapshot: u64) -> u64 {
        crate::range_del::max_covering(&self.range_dels.lock(), key, snapshot)
    }

    /// Its range tombstones.
    pub fn range_tombstones(&self) -> Vec<RangeTombstone> {
        self.range_dels.lock().clone()
    }

    /// The largest sequence number in it (0 if empty).
    pub fn max_seqno(&self) -> u64 {
        self.max_seq.load(AtomicOrdering::Relaxed)
    }

    /// The newest version of `user_key` at or below `snapshot`, with its
    /// sequence number.
    pub fn get_entry(&self, user_key: &[u8], snapshot: u64) -> Option<(u64, Kind, Vec<u8>)> {
        let target = InternalKey(key::seek_key(user_key, snapshot));
        let e = self.map.lower_bound(Bound::Included(&target))?;
        let p = key::parse(&e.key().0)?;
        (p.user_key == user_key).then(|| (p.seqno, p.kind, e.value().clone()))
    }

    /// The newest version of `user_key` at or below `snapshot`.
    pub fn get(&self, user_key: &[u8], snapshot: u64) -> Lookup {
        let target = InternalKey(key::seek_key(user_key, snapshot));
        let Some(e) = self.map.lower_bound(Bound::Included(&target)) else {
            return Lookup::Absent;
        };
        match key::parse(&e.key().0) {
            Some(p) if p.user_key == user_key => match p.kind {
                Kind::Put => Lookup::Value(e.value().clone()),
                Kind::Delete => Lookup::Deleted,
            },
            _ => Lookup::Absent,
        }
    }

    /// Approximate memory used, for the flush trigger.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    /// Entries (all versions).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether empty (no entries and no range tombstones).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.range_dels.lock().is_empty()
    }

    /// The first entry.
    pub fn first(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.map
            .front()
            .map(|e| (e.key().0.clone(), e.value().clone()))
    }

    /// The last entry.
    pub fn last(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.map
            .back()
            .map(|e| (e.key().0.clone(), e.value().clone()))
    }

    /// The first entry after `bound` (forward) or the last before it.
    pub fn bound(&self, bound: Bound<&InternalKey>, forward: bool) -> Option<(Vec<u8>, Vec<u8>)> {
        let e = if forward {
            self.map.lower_bound(bound)
        } else {
            self.map.upper_bound(bound)
        };
        e.map(|e| (e.key().0.clone(), e.value().clone()))
    }

    /// Appends to `out` up to `n` entries from `from` on, forwards in key
    /// order or backwards: one walk of the skiplist's bottom level, so a
    /// cursor pays one seek per batch rather than per entry.
    pub fn scan(
        &self,
        from: Bound<&InternalKey>,
        forward: bool,
        n: usize,
        out: &mut std::collections::VecDeque<(Vec<u8>, Vec<u8>)>,
    ) {
        let copy = |e: crossbeam_skiplist::map::Entry<'_, InternalKey, Vec<u8>>| {
            (e.key().0.clone(), e.value().clone())
        };
        if forward {
            out.extend(self.map.range((from, Bound::Unbounded)).take(n).map(copy));
        } else {
            out.extend(
                self.map
                    .range((Bound::Unbounded, from))
                    .rev()
                    .take(n)
                    .map(copy),
            );
        }
    }

    /// Every entry in internal-key order (for flushing).
    pub fn entries(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        self.map
            .iter()
            .map(|e| (e.key().0.clone(), e.value().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_see_the_newest_version_at_their_snapshot() {
        let m = Memtable::new();
        m.insert(b"k", 1, Kind::Put, b"v1");
        m.insert(b"k", 5, Kind::Delete, b"");
        m.insert(b"k", 7, Kind::Put, b"v7");
        m.insert(b"ka", 2, Kind::Put, b"x");
        assert_eq!(m.get(b"k", 0), Lookup::Absent);
        assert_eq!(m.get(b"k", 4), Lookup::Value(b"v1".to_vec()));
        assert_eq!(m.get(b"k", 5), Lookup::Deleted);
        assert_eq!(m.get(b"k", 100), Lookup::Value(b"v7".to_vec()));
        assert_eq!(m.get(b"j", 100), Lookup::Absent);
        assert_eq!(m.get(b"ka", 1), Lookup::Absent);
        let keys: Vec<_> = m
            .entries()
            .map(|(k, _)| key::parse(&k).map(|p| p.seqno))
            .collect();
        assert_eq!(keys, vec![Some(7), Some(5), Some(1), Some(2)]);
        assert!(m.approximate_bytes() > 0);
    }
}
