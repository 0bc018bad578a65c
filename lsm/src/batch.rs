//! Write batches: several puts and deletes applied atomically, with
//! consecutive sequence numbers. A batch is one WAL record:
//!
//! ```text
//! first seqno varint | count varint | count x entry
//! entry: op u8 (0 delete, 1 put, 2 delete range) | key len varint | key
//!        | (put: value, delete range: end key) len varint | bytes
//! ```

use strata_wal::format::{get_varint, put_varint};

/// What a batch entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Delete one key.
    Delete = 0,
    /// Set one key.
    Put = 1,
    /// Delete every key in `[key, value)`.
    DeleteRange = 2,
}

/// An atomic group of writes.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<u8>,
    count: u32,
    /// Key and value bytes (for write amplification).
    payload: u64,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Put as u8);
        put_varint(&mut self.ops, key.len() as u64);
        self.ops.extend_from_slice(key);
        put_varint(&mut self.ops, value.len() as u64);
        self.ops.extend_from_slice(value);
        self.count += 1;
        self.payload += (key.len() + value.len()) as u64;
        self
    }

    /// Key and value bytes in the batch.
    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::Delete as u8);
        put_varint(&mut self.ops, key.len() as u64);
        self.ops.extend_from_slice(key);
        self.count += 1;
        self.payload += key.len() as u64;
        self
    }

    /// Deletes every key in `[start, end)`.
    pub fn delete_range(&mut self, start: &[u8], end: &[u8]) -> &mut Self {
        self.ops.push(BatchOp::DeleteRange as u8);
        put_varint(&mut self.ops, start.len() as u64);
        self.ops.extend_from_slice(start);
        put_varint(&mut self.ops, end.len() as u64);
        self.ops.extend_from_slice(end);
        self.count += 1;
        self.payload += (start.len() + end.len()) as u64;
        self
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The WAL record for this batch starting at sequence number `first`.
    pub fn encode(&self, first: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(15 + self.ops.len());
        put_varint(&mut out, first);
        put_varint(&mut out, u64::from(self.count));
        out.extend_from_slice(&self.ops);
        out
    }
}

/// One decoded write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchEntry<'a> {
    /// What it does.
    pub op: BatchOp,
    /// The user key (for a range: its start).
    pub key: &'a [u8],
    /// The value (puts), the end key (ranges), empty for deletes.
    pub value: &'a [u8],
}

/// Decodes a batch record into its first sequence number and writes; every
/// length is checked.
pub fn decode(rec: &[u8]) -> Result<(u64, Vec<BatchEntry<'_>>), &'static str> {
    let (first, a) = get_varint(rec).ok_or("batch shorter than its header")?;
    let (count, b) = rec
        .get(a..)
        .and_then(get_varint)
        .ok_or("batch shorter than its header")?;
    let count = usize::try_from(count).map_err(|_| "batch count overflows")?;
    // Each entry takes a sequence number from `first` on; none is 0 and
    // none passes 2^56 (the internal key's 56 bits).
    if count == 0 {
        return Err("batch with no entries");
    }
    if first == 0 {
        return Err("batch starts at sequence number 0");
    }
    if first
        .checked_add(count as u64 - 1)
        .is_none_or(|last| last > crate::key::MAX_SEQNO)
    {
        return Err("batch sequence numbers pass 2^56");
    }
    let mut rest = rec.get(a + b..).ok_or("batch shorter than its header")?;
    if count > rest.len() / 2 {
        return Err("batch count exceeds its length");
    }
    let mut out = Vec::with_capacity(count);
    let take = |rest: &mut &'_ [u8]| -> Result<usize, &'static str> {
        let (v, n) = get_varint(rest).ok_or("bad length in batch")?;
        *rest = &rest[n..];
        usize::try_from(v).map_err(|_| "length overflows")
    };
    for _ in 0..count {
        let (&k, r) = rest.split_first().ok_or("batch truncated")?;
        rest = r;
        let op = match k {
            0 => BatchOp::Delete,
            1 => BatchOp::Put,
            2 => BatchOp::DeleteRange,
            _ => return Err("unknown write kind in batch"),
        };
        let klen = take(&mut rest)?;
        let key = rest.get(..klen).ok_or("key runs past the batch")?;
        rest = &rest[klen..];
        let value = if op != BatchOp::Delete {
            let vlen = take(&mut rest)?;
            let v = rest.get(..vlen).ok_or("value runs past the batch")?;
            rest = &rest[vlen..];
            v
        } else {
            &[]
        };
        out.push(BatchEntry { op, key, value });
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the batch");
    }
    Ok((first, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_reject_damage() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1")
            .delete(b"b")
            .put(b"", b"")
            .delete_range(b"c", b"f");
        let rec = b.encode(42);
        let (first, e) = decode(&rec).expect("decode");
        assert_eq!(first, 42);
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[1],
            BatchEntry {
                op: BatchOp::Delete,
                key: b"b",
                value: b""
            }
        );
        assert_eq!(
            e[3],
            BatchEntry {
                op: BatchOp::DeleteRange,
                key: b"c",
                value: b"f"
            }
        );
        for cut in 0..rec.len() {
            assert!(decode(&rec[..cut]).is_err(), "truncated at {cut}");
        }
        let mut extra = rec.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
    }
}
