//! Blocks: sorted key/value entries with prefix-compressed keys and restart
//! points (the LevelDB layout).
//!
//! ```text
//! entry:    shared varint | unshared varint | value_len varint | key[shared..] | value
//! trailer:  restart offset u32 LE x N | N u32 LE
//! ```
//!
//! Every `restart_interval`-th entry stores its whole key (shared = 0) and
//! its offset is listed in the trailer, so a reader binary-searches the
//! restart points and then scans at most an interval of entries. Every
//! length read is checked against the block before it is used.

use std::cmp::Ordering;
use std::sync::Arc;

use strata_wal::format::{get_varint, put_varint};

/// Builds one block.
#[derive(Debug)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    interval: usize,
    counter: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    /// A builder restarting key compression every `interval` entries.
    pub fn new(interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::new(),
            restarts: vec![0],
            interval: interval.max(1),
            counter: 0,
            last_key: Vec::new(),
            entries: 0,
        }
    }

    /// Appends an entry; keys must come in increasing order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter < self.interval {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
            0
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.counter += 1;
        self.entries += 1;
    }

    /// Bytes the finished block would take.
    pub fn size_estimate(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Entries added.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Finishes the block and resets the builder for the next one.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts = vec![0];
        self.counter = 0;
        self.last_key.clear();
        self.entries = 0;
        out
    }
}

/// A decoded, validated block.
#[derive(Clone, Debug)]
pub struct Block {
    data: Arc<[u8]>,
    /// The block is `data[..len]`.
    len: usize,
    /// Where the restart array starts: entries live in `..restarts_at`.
    restarts_at: usize,
    num_restarts: usize,
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
}

impl Block {
    /// Validates the restart trailer of `data`.
    pub fn new(data: Arc<[u8]>) -> Result<Block, &'static str> {
        let len = data.len();
        Self::with_len(data, len)
    }

    /// A block made of the first `len` bytes of `data` (the rest, e.g. a
    /// checksum trailer read along with it, is ignored).
    pub fn with_len(data: Arc<[u8]>, len: usize) -> Result<Block, &'static str> {
        let data_all = data;
        let data = data_all.get(..len).ok_or("block length past its buffer")?;
        let n = data
            .len()
            .checked_sub(4)
            .ok_or("block shorter than its trailer")?;
        let num = le32(data, n).ok_or("block shorter than its trailer")? as usize;
        let restarts_at = num
            .checked_mul(4)
            .and_then(|r| n.checked_sub(r))
            .ok_or("restart count exceeds the block")?;
        if num == 0 && restarts_at > 0 {
            return Err("entries without a restart point");
        }
        let mut prev = None;
        for i in 0..num {
            let r = le32(data, restarts_at + 4 * i).ok_or("restart array truncated")? as usize;
            if (r >= restarts_at && restarts_at > 0) || prev.is_some_and(|p| r <= p) {
                return Err("restart point out of order or out of range");
            }
            prev = Some(r);
        }
        if num > 0 && le32(data, restarts_at) != Some(0) {
            return Err("first restart point is not at offset 0");
        }
        Ok(Block {
            data: data_all,
            len,
            restarts_at,
            num_restarts: num,
        })
    }

    /// An iterator over the block, ordered by `cmp`.
    pub fn iter(&self, cmp: fn(&[u8], &[u8]) -> Ordering) -> BlockIter {
        BlockIter {
            block: self.clone(),
            cmp,
            pos: self.restarts_at,
            next: self.restarts_at,
            key: Vec::new(),
            value: 0..0,
            err: None,
        }
    }

    fn restart(&self, i: usize) -> usize {
        le32(&self.data, self.restarts_at + 4 * i).map_or(0, |r| r as usize)
    }

    /// Raw bytes, restart array included.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The buffer the block lives in (possibly longer than the block).
    pub fn into_buffer(self) -> Arc<[u8]> {
        self.data
    }
}

/// A cursor over a block's entries. Invalid when positioned past either
/// end or after a decoding error (see [`BlockIter::error`]).
#[derive(Debug)]
pub struct BlockIter {
    block: Block,
    cmp: fn(&[u8], &[u8]) -> Ordering,
    /// Offset of the current entry (`restarts_at` when invalid).
    pos: usize,
    /// Offset of the entry after it.
    next: usize,
    key: Vec<u8>,
    value: std::ops::Range<usize>,
    err: Option<&'static str>,
}

impl BlockIter {
    /// Whether the cursor is on an entry.
    pub fn valid(&self) -> bool {
        self.err.is_none() && self.pos < self.block.restarts_at
    }

    /// The decoding error that stopped the cursor, if any.
    pub fn error(&self) -> Option<&'static str> {
        self.err
    }

    /// The current key (valid cursors only).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The current value (valid cursors only).
    pub fn value(&self) -> &[u8] {
        self.block.data.get(self.value.clone()).unwrap_or(&[])
    }

    fn invalidate(&mut self, err: Option<&'static str>) {
        self.pos = self.block.restarts_at;
        self.next = self.block.restarts_at;
        if err.is_some() {
            self.err = err;
        }
    }

    /// Decodes the entry at `at`, whose predecessor's key is in `self.key`.
    fn decode_at(&mut self, at: usize) -> bool {
        let end = self.block.restarts_at;
        let data = &self.block.data[..end];
        let mut p = at;
        let mut field = || -> Option<usize> {
            let (v, n) = get_varint(data.get(p..)?)?;
            p += n;
            usize::try_from(v).ok()
        };
        let (Some(shared), Some(unshared), Some(vlen)) = (field(), field(), field()) else {
            self.invalidate(Some("bad entry header"));
            return false;
        };
        if shared > self.key.len() {
            self.invalidate(Some("entry shares more than the previous key"));
            return false;
        }
        let Some(key_end) = p.checked_add(unshared) else {
            self.invalidate(Some("entry key length overflows"));
            return false;
        };
        let Some(val_end) = key_end.checked_add(vlen).filter(|&e| e <= end) else {
            self.invalidate(Some("entry runs past the block"));
            return false;
        };
        self.key.truncate(shared);
        self.key.extend_from_slice(&data[p..key_end]);
        self.value = key_end..val_end;
        self.pos = at;
        self.next = val_end;
        true
    }

    /// Positions at the first entry.
    pub fn seek_to_first(&mut self) {
        self.err = None;
        self.key.clear();
        if self.block.restarts_at == 0 {
            self.invalidate(None);
        } else {
            self.decode_at(0);
        }
    }

    /// Positions at the last entry.
    pub fn seek_to_last(&mut self) {
        self.err = None;
        if self.block.num_restarts == 0 || self.block.restarts_at == 0 {
            self.invalidate(None);
            return;
        }
        self.seek_restart(self.block.num_restarts - 1);
        while self.valid() && self.next < self.block.restarts_at {
            let n = self.next;
            self.decode_at(n);
        }
    }

    fn seek_restart(&mut self, i: usize) {
        self.key.clear();
        let r = self.block.restart(i);
        self.decode_at(r);
    }

    /// Moves to the next entry.
    pub fn next(&mut self) {
        if !self.valid() {
            return;
        }
        if self.next >= self.block.restarts_at {
            self.invalidate(None);
            return;
        }
        let n = self.next;
        self.decode_at(n);
    }

    /// Moves to the previous entry: rescans from the restart point before
    /// the current entry (blocks keep no back links).
    pub fn prev(&mut self) {
        if !self.valid() {
            return;
        }
        let cur = self.pos;
        if cur == 0 {
            self.invalidate(None);
            return;
        }
        // The last restart point strictly before the current entry.
        let lo = self.last_restart_where(|it, i| it.block.restart(i) < cur);
        self.seek_restart(lo);
        while self.valid() && self.next < cur {
            let n = self.next;
            self.decode_at(n);
        }
    }

    /// Binary search over restart points: the last `i` for which `before`
    /// holds (0 if none), where `before` holds for a prefix of them.
    fn last_restart_where(&mut self, mut before: impl FnMut(&mut Self, usize) -> bool) -> usize {
        let mut lo = 0;
        let mut hi = self.block.num_restarts;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if before(self, mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Positions at the first entry whose key is >= `target`.
    pub fn seek(&mut self, target: &[u8]) {
        self.err = None;
        if self.block.num_restarts == 0 || self.block.restarts_at == 0 {
            self.invalidate(None);
            return;
        }
        // Last restart point whose key is < target (a damaged restart
        // entry stops the cursor; the error is kept).
        let lo = self.last_restart_where(|it, i| {
            it.seek_restart(i);
            it.valid() && (it.cmp)(&it.key, target) == Ordering::Less
        });
        if self.err.is_some() {
            return;
        }
        self.seek_restart(lo);
        while self.valid() && (self.cmp)(&self.key, target) == Ordering::Less {
            self.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_cmp(a: &[u8], b: &[u8]) -> Ordering {
        a.cmp(b)
    }

    fn build(entries: &[(Vec<u8>, Vec<u8>)], interval: usize) -> Block {
        let mut b = BlockBuilder::new(interval);
        for (k, v) in entries {
            b.add(k, v);
        }
        Block::new(b.finish().into()).expect("valid block")
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn iterates_both_ways_and_seeks_like_a_sorted_map(
            map in prop::collection::btree_map(prop::collection::vec(0u8..4, 0..6), prop::collection::vec(any::<u8>(), 0..20), 0..60),
            interval in 1usize..20,
            probes in prop::collection::vec(prop::collection::vec(0u8..4, 0..6), 0..20),
        ) {
            let entries: Vec<(Vec<u8>, Vec<u8>)> = map.clone().into_iter().collect();
            let block = build(&entries, interval);
            let mut it = block.iter(bytes_cmp);
            it.seek_to_first();
            let mut fwd = Vec::new();
            while it.valid() {
                fwd.push((it.key().to_vec(), it.value().to_vec()));
                it.next();
            }
            prop_assert_eq!(&fwd, &entries);
            it.seek_to_last();
            let mut back = Vec::new();
            while it.valid() {
                back.push((it.key().to_vec(), it.value().to_vec()));
                it.prev();
            }
            back.reverse();
            prop_assert_eq!(&back, &entries);
            for p in probes {
                it.seek(&p);
                let want = map.range(p.clone()..).next();
                match want {
                    Some((k, v)) => {
                        prop_assert!(it.valid());
                        prop_assert_eq!(it.key(), &k[..]);
                        prop_assert_eq!(it.value(), &v[..]);
                    }
                    None => prop_assert!(!it.valid()),
                }
            }
            prop_assert!(it.error().is_none());
        }
    }

    #[test]
    fn damaged_blocks_are_rejected_or_stop_the_cursor_without_panicking() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..50u32)
            .map(|i| (format!("key{i:04}").into_bytes(), vec![i as u8; 7]))
            .collect();
        let good = build(&entries, 4).bytes().to_vec();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                if let Ok(b) = Block::new(bad.into()) {
                    let mut it = b.iter(bytes_cmp);
                    it.seek_to_first();
                    let mut n = 0;
                    while it.valid() && n < 1000 {
                        it.next();
                        n += 1;
                    }
                    it.seek(b"key0025");
                    it.seek_to_last();
                    it.prev();
                }
            }
        }
        assert!(Block::new(vec![1, 2].into()).is_err());
        assert!(Block::new(vec![0, 0, 0, 0, 255, 255, 255, 0].into()).is_err());
    }
}
