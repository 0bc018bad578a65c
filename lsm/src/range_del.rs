//! Range tombstones: `delete_range(start, end)` at sequence number `seq`
//! hides every version of every key in `[start, end)` with a smaller
//! sequence number, for readers whose snapshot is at or after `seq`.
//!
//! They are kept apart from point entries: a list per memtable, and a
//! range-tombstone block per table:
//!
//! ```text
//! count varint | count x (start len varint | start | end len varint | end | seqno varint)
//! ```
//!
//! Readers collect the tombstones of every source once (a list ordered by
//! nothing in particular) and test keys against it; a database with many
//! range deletes wants these fragmented and sorted, which is future work.

use strata_wal::format::{get_varint, put_varint};

/// One range tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeTombstone {
    /// First key covered.
    pub start: Vec<u8>,
    /// First key not covered.
    pub end: Vec<u8>,
    /// Its sequence number.
    pub seqno: u64,
}

impl RangeTombstone {
    /// Whether it hides version `seqno` of `key` for a reader at `snapshot`.
    pub fn covers(&self, key: &[u8], seqno: u64, snapshot: u64) -> bool {
        self.seqno <= snapshot
            && seqno < self.seqno
            && key >= self.start.as_slice()
            && key < self.end.as_slice()
    }
}

/// The newest tombstone sequence number hiding `key` at `snapshot` (0 if none).
pub fn max_covering(ts: &[RangeTombstone], key: &[u8], snapshot: u64) -> u64 {
    ts.iter()
        .filter(|t| t.seqno <= snapshot && key >= t.start.as_slice() && key < t.end.as_slice())
        .map(|t| t.seqno)
        .max()
        .unwrap_or(0)
}

/// Encodes a range-tombstone block.
pub fn encode(ts: &[RangeTombstone]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, ts.len() as u64);
    for t in ts {
        put_varint(&mut out, t.start.len() as u64);
        out.extend_from_slice(&t.start);
        put_varint(&mut out, t.end.len() as u64);
        out.extend_from_slice(&t.end);
        put_varint(&mut out, t.seqno);
    }
    out
}

/// Decodes a range-tombstone block; every length is checked.
pub fn decode(mut b: &[u8]) -> Result<Vec<RangeTombstone>, &'static str> {
    let num = |b: &mut &[u8]| -> Result<u64, &'static str> {
        let (v, n) = get_varint(b).ok_or("bad varint in range tombstones")?;
        *b = &b[n..];
        Ok(v)
    };
    let bytes = |b: &mut &[u8]| -> Result<Vec<u8>, &'static str> {
        let len = usize::try_from(num(b)?).map_err(|_| "length overflows")?;
        let v = b.get(..len).ok_or("key runs past the block")?.to_vec();
        *b = &b[len..];
        Ok(v)
    };
    let n = num(&mut b)?;
    if n > b.len() as u64 {
        return Err("tombstone count exceeds the block");
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = bytes(&mut b)?;
        let end = bytes(&mut b)?;
        let seqno = num(&mut b)?;
        out.push(RangeTombstone { start, end, seqno });
    }
    if !b.is_empty() {
        return Err("trailing bytes after range tombstones");
    }
    Ok(out)
}
