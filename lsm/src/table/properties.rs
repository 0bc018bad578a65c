//! The properties block: what a table holds, for the manifest, compaction
//! picking and `strata sst-dump`.
//!
//! ```text
//! entries | deletions | raw key bytes | raw value bytes | data blocks |
//! min seqno | max seqno   (varints)
//! | smallest key len varint | smallest key | largest key len varint | largest key
//! ```

use strata_wal::format::{get_varint, put_varint};

/// Summary of a table's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// Entries (puts and deletes).
    pub entries: u64,
    /// Tombstones among them.
    pub deletions: u64,
    /// Sum of internal key lengths.
    pub raw_key_bytes: u64,
    /// Sum of value lengths.
    pub raw_value_bytes: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// Smallest sequence number.
    pub min_seqno: u64,
    /// Largest sequence number.
    pub max_seqno: u64,
    /// Smallest internal key.
    pub smallest: Vec<u8>,
    /// Largest internal key.
    pub largest: Vec<u8>,
}

impl Properties {
    /// Encodes the block contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [
            self.entries,
            self.deletions,
            self.raw_key_bytes,
            self.raw_value_bytes,
            self.data_blocks,
            self.min_seqno,
            self.max_seqno,
        ] {
            put_varint(&mut out, v);
        }
        for k in [&self.smallest, &self.largest] {
            put_varint(&mut out, k.len() as u64);
            out.extend_from_slice(k);
        }
        out
    }

    /// Decodes block contents; every length is checked.
    pub fn decode(mut b: &[u8]) -> Result<Properties, &'static str> {
        let next = |b: &mut &[u8]| -> Result<u64, &'static str> {
            let (v, n) = get_varint(b).ok_or("bad varint in properties")?;
            *b = &b[n..];
            Ok(v)
        };
        let mut p = Properties {
            entries: next(&mut b)?,
            deletions: next(&mut b)?,
            raw_key_bytes: next(&mut b)?,
            raw_value_bytes: next(&mut b)?,
            data_blocks: next(&mut b)?,
            min_seqno: next(&mut b)?,
            max_seqno: next(&mut b)?,
            ..Properties::default()
        };
        for slot in [&mut p.smallest, &mut p.largest] {
            let len = usize::try_from(next(&mut b)?).map_err(|_| "key length overflows")?;
            let k = b.get(..len).ok_or("key runs past the properties block")?;
            slot.extend_from_slice(k);
            b = &b[len..];
        }
        if !b.is_empty() {
            return Err("trailing bytes in properties");
        }
        if p.deletions > p.entries || p.min_seqno > p.max_seqno && p.entries > 0 {
            return Err("inconsistent properties");
        }
        Ok(p)
    }
}
