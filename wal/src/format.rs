//! Byte layout of WAL segments: the segment header, fragments within 32 KiB
//! blocks, and entries (one group-commit batch of records). See the crate
//! documentation and docs/wal.md for the diagrams.

use crate::Lsn;

/// Size of the segment header at offset 0.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Segment magic, version 1.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRWAL\x00\x01";
/// Fragments never cross a multiple of this (absolute file offset).
pub const BLOCK_SIZE: usize = 32 * 1024;
/// crc (4) + length (2) + type (1) + segment tag (4).
pub const FRAGMENT_HEADER_LEN: usize = 11;
/// first LSN (8) + record count (4) + synced LSN (8).
pub const ENTRY_HEADER_MAX: usize = 25;
/// Largest record accepted by `append` (the entry count and varint lengths
/// would allow more; this bounds memory a corrupt length can ask for).
pub const MAX_RECORD_LEN: usize = 64 << 20;

/// Fragment types. Zero is never written, so zeroed (preallocated) space
/// reads as "nothing here".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragmentType {
    /// A whole entry.
    Full = 1,
    /// The first piece of an entry that continues in the next block(s).
    First = 2,
    /// A middle piece.
    Middle = 3,
    /// The last piece.
    Last = 4,
}

impl FragmentType {
    /// Parses a type byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(FragmentType::Full),
            2 => Some(FragmentType::First),
            3 => Some(FragmentType::Middle),
            4 => Some(FragmentType::Last),
            _ => None,
        }
    }
}

/// The low 32 bits of a segment number, stored in every fragment so bytes
/// left in a recycled file by its previous life are told from new records.
pub fn segment_tag(segno: u64) -> u32 {
    segno as u32
}

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment number (also in the file name).
    pub segno: u64,
    /// LSN of the first record this segment holds or would hold.
    pub first_lsn: Lsn,
}

impl SegmentHeader {
    /// Encodes the 32-byte header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..16].copy_from_slice(&self.segno.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        // 24..28 reserved (flags), zero.
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and validates a header; `None` if magic, checksum or reserved
    /// bytes are wrong.
    pub fn decode(b: &[u8]) -> Option<SegmentHeader> {
        let b = b.get(..SEGMENT_HEADER_LEN)?;
        if b.get(0..8)? != SEGMENT_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(b.get(28..32)?.try_into().ok()?);
        if crc != crc32fast::hash(b.get(0..28)?) || b.get(24..28)? != [0u8; 4] {
            return None;
        }
        Some(SegmentHeader {
            segno: u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
            first_lsn: u64::from_le_bytes(b.get(16..24)?.try_into().ok()?),
        })
    }
}

fn fragment_crc(kind: u8, tag: u32, len: u16, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&tag.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Bytes an entry with `payload_len` bytes of payload occupies when written
/// starting at absolute file offset `offset` (fragment headers and block
/// trailers included).
pub fn encoded_len(offset: u64, payload_len: usize) -> usize {
    let mut pos = offset as usize;
    let start = pos;
    let mut left = payload_len;
    let mut first = true;
    while first || left > 0 {
        let room = BLOCK_SIZE - pos % BLOCK_SIZE;
        if room < FRAGMENT_HEADER_LEN {
            pos += room;
            continue;
        }
        let take = left.min(room - FRAGMENT_HEADER_LEN);
        pos += FRAGMENT_HEADER_LEN + take;
        left -= take;
        first = false;
    }
    pos - start
}

/// Appends to `out` the fragments of an entry whose payload is the
/// concatenation of `parts`, as written starting at absolute file offset
/// `offset`; block trailers too small for a header are zero-filled.
pub fn encode_fragments(out: &mut Vec<u8>, offset: u64, tag: u32, parts: &[&[u8]]) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut pos = offset as usize;
    let mut left = total;
    let mut part = 0usize;
    let mut part_off = 0usize;
    let mut first = true;
    while first || left > 0 {
        let room = BLOCK_SIZE - pos % BLOCK_SIZE;
        if room < FRAGMENT_HEADER_LEN {
            out.resize(out.len() + room, 0);
            pos += room;
            continue;
        }
        let take = left.min(room - FRAGMENT_HEADER_LEN);
        let kind = match (first, take == left) {
            (true, true) => FragmentType::Full,
            (true, false) => FragmentType::First,
            (false, true) => FragmentType::Last,
            (false, false) => FragmentType::Middle,
        } as u8;
        let header_at = out.len();
        out.resize(out.len() + FRAGMENT_HEADER_LEN, 0);
        let body_at = out.len();
        let mut need = take;
        while need > 0 {
            let p = parts[part];
            let n = need.min(p.len() - part_off);
            out.extend_from_slice(&p[part_off..part_off + n]);
            part_off += n;
            need -= n;
            if part_off == p.len() {
                part += 1;
                part_off = 0;
            }
        }
        let len = take as u16;
        let crc = fragment_crc(kind, tag, len, &out[body_at..]);
        let h = &mut out[header_at..body_at];
        h[0..4].copy_from_slice(&crc.to_le_bytes());
        h[4..6].copy_from_slice(&len.to_le_bytes());
        h[6] = kind;
        h[7..11].copy_from_slice(&tag.to_le_bytes());
        pos += FRAGMENT_HEADER_LEN + take;
        left -= take;
        first = false;
    }
}

/// What sits at a position of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum FragmentRead<'a> {
    /// A fragment whose checksum and tag are good.
    Fragment {
        /// Its type.
        kind: FragmentType,
        /// Its payload.
        payload: &'a [u8],
        /// Offset just past it.
        next: usize,
    },
    /// The block trailer is too small for a header (and is zero): continue at `next`.
    Trailer {
        /// The next block's start.
        next: usize,
    },
    /// End of the file.
    Eof,
    /// An all-zero header: nothing was written here (preallocated or lost).
    Zeros,
    /// A well-formed fragment of another segment (a recycled file's past).
    Stale,
    /// Bytes that are not a valid fragment.
    Bad(&'static str),
}

/// Reads the fragment at absolute offset `pos` of segment bytes `buf`,
/// validating every byte before use.
pub fn read_fragment(buf: &[u8], pos: usize, tag: u32) -> FragmentRead<'_> {
    if pos >= buf.len() {
        return FragmentRead::Eof;
    }
    let room = BLOCK_SIZE - pos % BLOCK_SIZE;
    if room < FRAGMENT_HEADER_LEN {
        let end = (pos + room).min(buf.len());
        return match buf.get(pos..end) {
            Some(t) if t.iter().all(|&b| b == 0) => FragmentRead::Trailer { next: pos + room },
            _ => FragmentRead::Bad("non-zero block trailer"),
        };
    }
    let Some(h) = buf.get(pos..pos + FRAGMENT_HEADER_LEN) else {
        return if buf[pos..].iter().all(|&b| b == 0) {
            FragmentRead::Zeros
        } else {
            FragmentRead::Bad("truncated fragment header")
        };
    };
    if h.iter().all(|&b| b == 0) {
        return FragmentRead::Zeros;
    }
    let crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let len = u16::from_le_bytes([h[4], h[5]]);
    let kind_byte = h[6];
    let file_tag = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
    let Some(kind) = FragmentType::from_u8(kind_byte) else {
        return FragmentRead::Bad("unknown fragment type");
    };
    let body = pos + FRAGMENT_HEADER_LEN;
    if usize::from(len) > room - FRAGMENT_HEADER_LEN {
        return FragmentRead::Bad("fragment length crosses its block");
    }
    let Some(payload) = buf.get(body..body + usize::from(len)) else {
        return FragmentRead::Bad("fragment runs past end of file");
    };
    if fragment_crc(kind_byte, file_tag, len, payload) != crc {
        return FragmentRead::Bad("fragment checksum mismatch");
    }
    if file_tag != tag {
        return FragmentRead::Stale;
    }
    FragmentRead::Fragment {
        kind,
        payload,
        next: body + usize::from(len),
    }
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    // Into a stack buffer first: one capacity check instead of one per byte
    // (this runs once per append, under the WAL's lock).
    let mut b = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        b[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    b[n] = v as u8;
    out.extend_from_slice(&b[..=n]);
}

/// Reads a LEB128 varint; `None` if truncated or over 10 bytes.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// The header of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryHeader {
    /// LSN of the entry's first record; the others follow consecutively.
    pub first_lsn: Lsn,
    /// Number of records (at least 1).
    pub count: u32,
    /// Every record with an LSN up to this was durable before this entry was
    /// written. Recovery uses it to tell lost unsynced writes (a torn tail)
    /// from damage to synced data.
    pub synced_lsn: Lsn,
}

impl EntryHeader {
    /// Encodes the entry header: first LSN, count, and how far the synced
    /// LSN lies below the first LSN, as varints (a few bytes per entry,
    /// which matters when every write is its own entry).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(ENTRY_HEADER_MAX);
        put_varint(&mut b, self.first_lsn);
        put_varint(&mut b, u64::from(self.count));
        put_varint(&mut b, self.first_lsn.saturating_sub(self.synced_lsn));
        b
    }

    /// The last record's LSN.
    pub fn last_lsn(&self) -> Lsn {
        self.first_lsn + u64::from(self.count) - 1
    }
}

/// A decoded entry: its header and the records' byte ranges in the payload.
#[derive(Debug)]
pub struct DecodedEntry<'a> {
    /// The header.
    pub header: EntryHeader,
    /// The records in LSN order.
    pub records: Vec<&'a [u8]>,
}

/// Decodes an entry payload; every length is checked against what remains.
pub fn decode_entry(payload: &[u8]) -> Result<DecodedEntry<'_>, &'static str> {
    let (first_lsn, a) = get_varint(payload).ok_or("bad entry first LSN")?;
    let (count, b) = payload
        .get(a..)
        .and_then(get_varint)
        .ok_or("bad entry count")?;
    let (behind, c) = payload
        .get(a + b..)
        .and_then(get_varint)
        .ok_or("bad entry synced LSN")?;
    let count = u32::try_from(count).map_err(|_| "entry count out of range")?;
    if behind == 0 || behind > first_lsn {
        return Err("entry synced LSN out of range");
    }
    let header = EntryHeader {
        first_lsn,
        count,
        synced_lsn: first_lsn - behind,
    };
    if header.count == 0 {
        return Err("entry with zero records");
    }
    if header.first_lsn == 0
        || header
            .first_lsn
            .checked_add(u64::from(header.count))
            .is_none()
    {
        return Err("entry LSN out of range");
    }
    if header.synced_lsn >= header.first_lsn {
        return Err("entry claims itself durable");
    }
    let mut rest = payload
        .get(a + b + c..)
        .ok_or("entry shorter than its header")?;
    // Each record takes at least one byte, which bounds a corrupt count.
    if header.count as usize > rest.len() {
        return Err("entry record count exceeds its length");
    }
    let mut records = Vec::with_capacity(header.count as usize);
    for _ in 0..header.count {
        let (len, n) = get_varint(rest).ok_or("bad record length")?;
        let len = usize::try_from(len).map_err(|_| "record length overflows")?;
        let body = rest.get(n..).ok_or("bad record length")?;
        let rec = body.get(..len).ok_or("record runs past its entry")?;
        records.push(rec);
        rest = &body[len..];
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the last record");
    }
    Ok(DecodedEntry { header, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads back the entry payload written by `encode_fragments` at `offset`.
    fn read_back(buf: &[u8], offset: usize, tag: u32) -> Vec<u8> {
        let mut pos = offset;
        let mut out = Vec::new();
        loop {
            match read_fragment(buf, pos, tag) {
                FragmentRead::Fragment {
                    kind,
                    payload,
                    next,
                } => {
                    out.extend_from_slice(payload);
                    pos = next;
                    if matches!(kind, FragmentType::Full | FragmentType::Last) {
                        return out;
                    }
                }
                FragmentRead::Trailer { next } => pos = next,
                other => panic!("unexpected {other:?} at {pos}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn fragments_round_trip_at_any_offset(offset in 0usize..70_000, len in 0usize..80_000, seed: u8) {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let mut out = vec![0u8; offset];
            encode_fragments(&mut out, offset as u64, 9, &[&payload[..len / 2], &payload[len / 2..]]);
            prop_assert_eq!(out.len() - offset, encoded_len(offset as u64, len));
            prop_assert_eq!(read_back(&out, offset, 9), payload);
            // No fragment crosses a block boundary: every block is parsed
            // from its start by the loop above, so reaching the end proves it.
        }

        #[test]
        fn varints_round_trip(v: u64) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            prop_assert_eq!(get_varint(&b), Some((v, b.len())));
        }
    }

    #[test]
    fn varint_rejects_overlong_and_truncated() {
        assert_eq!(get_varint(&[0x80]), None);
        assert_eq!(get_varint(&[0xff; 11]), None);
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u64::MAX, 10))
        );
    }

    #[test]
    fn another_segments_fragment_reads_as_stale_and_damage_as_bad() {
        let mut out = Vec::new();
        encode_fragments(&mut out, 0, 5, &[b"hello"]);
        assert_eq!(read_fragment(&out, 0, 6), FragmentRead::Stale);
        assert!(matches!(
            read_fragment(&out, 0, 5),
            FragmentRead::Fragment { .. }
        ));
        out[FRAGMENT_HEADER_LEN] ^= 1;
        assert_eq!(
            read_fragment(&out, 0, 5),
            FragmentRead::Bad("fragment checksum mismatch")
        );
        assert_eq!(read_fragment(&[0u8; 20], 0, 5), FragmentRead::Zeros);
        assert_eq!(read_fragment(&out, out.len(), 5), FragmentRead::Eof);
    }

    #[test]
    fn entries_decode_exactly_and_reject_inconsistent_headers() {
        let mut p = EntryHeader {
            first_lsn: 10,
            count: 2,
            synced_lsn: 9,
        }
        .encode()
        .to_vec();
        put_varint(&mut p, 3);
        p.extend_from_slice(b"abc");
        put_varint(&mut p, 0);
        let d = decode_entry(&p).expect("valid");
        assert_eq!(d.records, vec![&b"abc"[..], &b""[..]]);
        assert_eq!(d.header.last_lsn(), 11);
        let mut extra = p.clone();
        extra.push(0);
        assert!(decode_entry(&extra).is_err(), "trailing bytes");
        assert!(decode_entry(&p[..p.len() - 2]).is_err(), "truncated");
        // Header bytes: first LSN 10, count 2, behind 1 (one byte each).
        assert_eq!(&p[..3], &[10, 2, 1]);
        let mut selfsync = p.clone();
        selfsync[2] = 0;
        assert!(
            decode_entry(&selfsync).is_err(),
            "synced LSN must precede the entry"
        );
        let mut below_zero = p.clone();
        below_zero[2] = 11;
        assert!(decode_entry(&below_zero).is_err(), "synced LSN below 0");
        let mut zero = p;
        zero[1] = 0;
        assert!(decode_entry(&zero).is_err(), "empty entry");
    }

    #[test]
    fn segment_header_round_trips_and_detects_damage() {
        let h = SegmentHeader {
            segno: 7,
            first_lsn: 1234,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Some(h));
        for i in 0..SEGMENT_HEADER_LEN {
            b[i] ^= 0x10;
            assert_eq!(SegmentHeader::decode(&b), None, "flip at byte {i}");
            b[i] ^= 0x10;
        }
    }
}
