//! Reading a segment's batches without holding the segment: a
//! [`ReadSource`] is its file, map and size at one moment.

use bytes::Bytes;
use strata_io::FileRef;

use super::check_position;
use crate::batch::{Batch, Parsed, HEADER_LEN, LOG_OVERHEAD};
use crate::{Error, Result};

/// A segment's bytes as a reader sees them at one moment (see
/// [`Segment::source`]).
#[derive(Clone)]
pub struct ReadSource {
    pub(super) log: FileRef,
    pub(super) map: Option<Bytes>,
    pub(super) size: u64,
    pub(super) base: u64,
    /// The offset after the segment's last batch at `size`.
    pub(super) next_offset: u64,
    pub(super) compacted: bool,
}

/// The epoch the leader-epoch cache `epochs` (ascending (epoch, start))
/// gives `offset`; `None` before its first entry.
pub fn epoch_at(epochs: &[(i32, u64)], offset: u64) -> Option<i32> {
    let i = epochs.partition_point(|&(_, s)| s <= offset);
    i.checked_sub(1).map(|i| epochs[i].0)
}

impl ReadSource {
    /// The segment's size when the source was taken.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads whole batches from position `pos`: at most `max_bytes` (but at
    /// least one batch), only batches whose last offset is below `upper`.
    /// Each batch is checked, its CRC and its position: its base offset
    /// where the batch before ended (the segment base at 0; after the last
    /// batch of the segment, its end offset; after the last one read, the
    /// next batch's base offset, peeked) and, with `epochs` (the leader
    /// epoch cache), its leader epoch the one the cache gives its offset.
    /// The batches share one buffer (or the map).
    pub fn read_from(
        &self,
        pos: u64,
        first_offset: Option<u64>,
        max_bytes: usize,
        upper: u64,
        epochs: Option<&[(i32, u64)]>,
    ) -> Result<Vec<Batch>> {
        let mut out: Vec<Batch> = Vec::new();
        if pos >= self.size {
            return Ok(out);
        }
        // Eight bytes more than asked: the next batch's base offset, to
        // check that the last batch returned ends where the next begins.
        let want = (max_bytes.max(HEADER_LEN) as u64 + 8).min(self.size - pos) as usize;
        let mut bytes = match &self.map {
            Some(m) => m.slice(pos as usize..pos as usize + want),
            None => {
                let mut buf = vec![0u8; want];
                let got = self.log.read_full_at(&mut buf, pos)?;
                buf.truncate(got);
                Bytes::from(buf)
            }
        };
        let mut at = pos;
        let bad = |at: u64, why: &str| Error::corruption(self.log.path(), at, why);
        // (next offset, epoch) of the batch before; unknown for the first
        // batch of a read that starts mid-segment.
        let mut prev: Option<(u64, i32)> = match first_offset {
            Some(o) => Some((o, i32::MIN)),
            None => (pos == 0).then_some((self.base, i32::MIN)),
        };
        loop {
            if bytes.is_empty() {
                if at == self.size && prev.is_some_and(|(next, _)| next != self.next_offset) {
                    return Err(bad(
                        at,
                        "the segment's last batch does not end at the segment's end offset",
                    ));
                }
                break;
            }
            match Batch::parse(&bytes) {
                Parsed::Batch(b) => {
                    if let Some(p) = prev {
                        if let Err(why) = check_position(&b.header, p, self.compacted) {
                            if out.is_empty() {
                                return Err(bad(at, why));
                            }
                            // Serve what came before; the next read reports it.
                            break;
                        }
                    }
                    if let Some(e) = epochs {
                        if epoch_at(e, b.base_offset()).is_some_and(|w| w != b.header.leader_epoch)
                        {
                            return Err(bad(
                                at,
                                "batch leader epoch disagrees with the leader-epoch cache",
                            ));
                        }
                    }
                    if b.last_offset() >= upper {
                        break;
                    }
                    let n = b.bytes.len();
                    prev = Some((b.header.next_offset(), b.header.leader_epoch));
                    out.push(b);
                    bytes = bytes.slice(n..);
                    at += n as u64;
                }
                Parsed::Incomplete if out.is_empty() => {
                    // The first batch is larger than max_bytes: read it whole.
                    if bytes.len() < LOG_OVERHEAD {
                        return Err(bad(at, "batch cut short"));
                    }
                    let len = LOG_OVERHEAD
                        + u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
                    if at + len as u64 > self.size {
                        return Err(bad(at, "batch runs past the segment"));
                    }
                    let whole = (len as u64 + 8).min(self.size - at) as usize;
                    bytes = match &self.map {
                        Some(m) => m.slice(at as usize..at as usize + whole),
                        None => {
                            let mut buf = vec![0u8; whole];
                            self.log.read_full_at(&mut buf, at)?;
                            Bytes::from(buf)
                        }
                    };
                }
                Parsed::Incomplete => {
                    if let (Some(head), Some((next, _))) = (bytes.get(..8), prev) {
                        let mut b8 = [0u8; 8];
                        b8.copy_from_slice(head);
                        if u64::from_be_bytes(b8) != next {
                            // This batch's base offset or the next one's is
                            // wrong: hold this one back; a read from here
                            // then tells which.
                            out.pop();
                            if out.is_empty() {
                                return Err(bad(
                                    at,
                                    "batch base offset does not follow the batch before it",
                                ));
                            }
                        }
                    }
                    break;
                }
                Parsed::Invalid(why) => {
                    if out.is_empty() {
                        return Err(bad(at, why));
                    }
                    // Serve what came before; the next read reports it.
                    break;
                }
            }
        }
        Ok(out)
    }
}
