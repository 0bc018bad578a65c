//! Merging tables into new ones while dropping what no reader can see.
//!
//! The rule (as in RocksDB): versions of one user key arrive newest first.
//! A version is dropped when a newer version of the same key was kept and
//! no live snapshot falls between the two sequence numbers (nobody can
//! read it). A version hidden by a range tombstone is dropped when no
//! snapshot falls between it and the tombstone. When the output is the
//! bottom of the tree, a tombstone (point or range) that every snapshot
//! sees is dropped too, together with everything it hides.

use crate::key::{self, Kind};
use crate::range_del::RangeTombstone;

/// Whether a live snapshot sees sequence numbers in `[lo, hi)` differently:
/// some snapshot `s` with `lo <= s < hi`.
fn snapshot_between(snapshots: &[u64], lo: u64, hi: u64) -> bool {
    // `snapshots` is sorted ascending.
    let i = snapshots.partition_point(|&s| s < lo);
    snapshots.get(i).is_some_and(|&s| s < hi)
}

/// Decides, entry by entry in internal-key order, what a compaction keeps.
pub struct GcFilter<'a> {
    snapshots: &'a [u64],
    tombstones: &'a [RangeTombstone],
    bottom: bool,
    /// The user key of the previous entry and the sequence number of the
    /// last version of it that was kept (or that shadows the rest).
    prev_key: Option<Vec<u8>>,
    shadow_seq: u64,
}

impl<'a> GcFilter<'a> {
    /// A filter for live `snapshots` (sorted ascending; the current state
    /// counts as a reader at +infinity) and the inputs' range tombstones.
    pub fn new(snapshots: &'a [u64], tombstones: &'a [RangeTombstone], bottom: bool) -> Self {
        GcFilter {
            snapshots,
            tombstones,
            bottom,
            prev_key: None,
            shadow_seq: u64::MAX,
        }
    }

    /// Whether to keep the entry with internal key `ikey`.
    pub fn keep(&mut self, ikey: &[u8]) -> bool {
        let Some(p) = key::parse(ikey) else {
            return true;
        };
        if self.prev_key.as_deref() != Some(p.user_key) {
            self.prev_key = Some(p.user_key.to_vec());
            self.shadow_seq = u64::MAX;
        }
        // Shadowed by a newer kept version with no snapshot in between.
        if self.shadow_seq != u64::MAX
            && !snapshot_between(self.snapshots, p.seqno, self.shadow_seq)
        {
            return false;
        }
        // Hidden by a range tombstone with no snapshot in between.
        let hidden = self.tombstones.iter().any(|t| {
            t.seqno > p.seqno
                && p.user_key >= t.start.as_slice()
                && p.user_key < t.end.as_slice()
                && !snapshot_between(self.snapshots, p.seqno, t.seqno)
        });
        if hidden {
            return false;
        }
        self.shadow_seq = p.seqno;
        // A delete every reader sees, at the bottom: nothing older remains
        // for it to hide once the versions it shadows are dropped.
        if self.bottom
            && p.kind == Kind::Delete
            && self.snapshots.first().is_none_or(|&s| p.seqno <= s)
        {
            return false;
        }
        true
    }

    /// Whether a range tombstone must be carried into the output.
    pub fn keep_tombstone(&self, t: &RangeTombstone) -> bool {
        !(self.bottom && self.snapshots.first().is_none_or(|&s| t.seqno <= s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        entries: &[(&[u8], u64, Kind)],
        snaps: &[u64],
        ts: &[RangeTombstone],
        bottom: bool,
    ) -> Vec<(Vec<u8>, u64)> {
        let mut f = GcFilter::new(snaps, ts, bottom);
        entries
            .iter()
            .filter_map(|(k, s, kind)| {
                let ik = key::encode(k, *s, *kind);
                f.keep(&ik).then(|| (k.to_vec(), *s))
            })
            .collect()
    }

    #[test]
    fn keeps_exactly_what_some_reader_can_see() {
        let e: &[(&[u8], u64, Kind)] = &[
            (b"a", 9, Kind::Put),
            (b"a", 5, Kind::Put),
            (b"a", 2, Kind::Put),
            (b"b", 4, Kind::Delete),
            (b"b", 1, Kind::Put),
        ];
        // No snapshots: newest of each; the bottom delete goes with what it hides.
        assert_eq!(run(e, &[], &[], true), vec![(b"a".to_vec(), 9)]);
        assert_eq!(
            run(e, &[], &[], false),
            vec![(b"a".to_vec(), 9), (b"b".to_vec(), 4)]
        );
        // A snapshot at 6 still needs a@5; one at 3 needs a@2 and b@1.
        assert_eq!(
            run(e, &[3, 6], &[], true),
            vec![
                (b"a".to_vec(), 9),
                (b"a".to_vec(), 5),
                (b"a".to_vec(), 2),
                (b"b".to_vec(), 4),
                (b"b".to_vec(), 1)
            ]
        );
        let t = [RangeTombstone {
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            seqno: 7,
        }];
        assert_eq!(run(e, &[], &t, true), vec![(b"a".to_vec(), 9)]);
        let f = GcFilter::new(&[], &t, true);
        assert!(!f.keep_tombstone(&t[0]));
        let f = GcFilter::new(&[6], &t, true);
        assert!(
            f.keep_tombstone(&t[0]),
            "a reader at 6 does not see the tombstone at 7"
        );
    }
}
