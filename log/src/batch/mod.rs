//! Record batches: Kafka's v2 (magic 2) format, byte for byte, so a batch
//! a producer sent is stored, replicated and served unchanged. Byte
//! layout, checksum and validation rules: docs/segment.md.
//!
//! ```text
//! offset  size  field                     (fixed fields big-endian, as Kafka)
//!  0      8     base offset               \
//!  8      4     batch length               | outside the CRC: checked by
//! 12      4     partition leader epoch     | position (see below)
//! 16      1     magic = 2                 /
//! 17      4     crc                       CRC-32C of bytes 21..end
//! 21      2     attributes                bits 0-2 compression, 3 timestamp type,
//!                                         4 transactional, 5 control
//! 23      4     last offset delta
//! 27      8     base timestamp            (the first record's)
//! 35      8     max timestamp
//! 43      8     producer id               (-1: none)
//! 51      2     producer epoch
//! 53      4     base sequence
//! 57      4     record count
//! 61            records (compressed as one body when bits 0-2 are set)
//!
//! record := length varint | attributes i8 | timestamp delta varlong
//!           | offset delta varint | key length varint (-1 null) | key
//!           | value length varint (-1 null) | value
//!           | header count varint | (key len varint, key, value len varint, value)*
//! ```
//!
//! Varints are zigzag LEB128 as in Kafka (and protobuf's sint32/sint64).
//! The checksum is Kafka's: CRC-32C from the attributes to the end, so a
//! leader stamps base offset and leader epoch in place without touching
//! it and clients verify what they fetch. The fields it leaves out are
//! checked by where the batch sits instead (the segment does this, see
//! `segment/`): the length by the CRC's end, the base offset by the
//! previous batch's end (or the segment's base), the epoch against the
//! leader-epoch cache.

use bytes::{BufMut, Bytes, BytesMut};

use crate::compression::{self, Compression};
use crate::{Error, Result};

/// Bytes before the records.
pub const HEADER_LEN: usize = 61;
/// Bytes of the base offset and length fields, the part of the header a
/// reader needs to find the batch's end.
pub const LOG_OVERHEAD: usize = 12;
/// The only format this reads and writes.
pub const MAGIC: u8 = 2;
/// Producer id meaning "not an idempotent producer".
pub const NO_PRODUCER_ID: i64 = -1;
/// Largest batch accepted (the length field is an i32; this is far below).
pub const MAX_BATCH_LEN: usize = 64 << 20;

const ATTR_COMPRESSION_MASK: u16 = 0x07;
/// Bytes of the fixed fields the checksum covers start here.
pub const CRC_FROM: usize = 21;
const ATTR_TIMESTAMP_TYPE: u16 = 0x08;
const ATTR_TRANSACTIONAL: u16 = 0x10;
const ATTR_CONTROL: u16 = 0x20;
const ATTR_KNOWN: u16 =
    ATTR_COMPRESSION_MASK | ATTR_TIMESTAMP_TYPE | ATTR_TRANSACTIONAL | ATTR_CONTROL;

/// A header of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: Bytes,
    /// Header value (`None`: null).
    pub value: Option<Bytes>,
}

/// One record as a producer hands it in and a consumer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset (assigned by the log; ignored when building).
    pub offset: u64,
    /// Timestamp in milliseconds.
    pub timestamp: i64,
    /// Key (`None`: null).
    pub key: Option<Bytes>,
    /// Value (`None`: null, a tombstone in compacted topics).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a key and a value at `timestamp`.
    pub fn new(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
        Record {
            offset: 0,
            timestamp,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers: Vec::new(),
        }
    }
}

/// Who produced a batch, for idempotence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Producer id (`NO_PRODUCER_ID`: none).
    pub id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence number of the batch's first record.
    pub base_sequence: i32,
}

impl ProducerInfo {
    /// No idempotent producer.
    pub const NONE: ProducerInfo = ProducerInfo {
        id: NO_PRODUCER_ID,
        epoch: -1,
        base_sequence: -1,
    };
}

/// The fixed fields of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (of the batch as written; a compacted
    /// batch may have lost its first records and keeps this).
    pub base_offset: u64,
    /// Bytes after the length field.
    pub batch_length: u32,
    /// Epoch of the leader that appended it.
    pub leader_epoch: i32,
    /// The stored checksum.
    pub crc: u32,
    /// Attribute bits.
    pub attributes: u16,
    /// `last offset - base offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Producer.
    pub producer: ProducerInfo,
    /// Records in the batch.
    pub record_count: u32,
}

impl BatchHeader {
    /// Offset of the last record the batch was written with.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// Next offset after this batch.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// Total bytes of the batch on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Sequence number of the last record.
    pub fn last_sequence(&self) -> i32 {
        if self.producer.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.producer.base_sequence) + i64::from(self.last_offset_delta);
        // Sequences wrap at i32::MAX back to 0, as in Kafka.
        (last % (i64::from(i32::MAX) + 1)) as i32
    }

    /// The batch's compression codec.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or(Compression::None)
    }

    /// Whether the batch is a control batch (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Parses and checks the fixed fields of the batch starting at `buf[0]`
    /// (which must hold at least [`HEADER_LEN`] bytes). The checksum is not
    /// checked here (see [`Batch::parse`]).
    pub fn parse(buf: &[u8]) -> std::result::Result<BatchHeader, &'static str> {
        if buf.len() < HEADER_LEN {
            return Err("batch header truncated");
        }
        let be_u64 = |at: usize| u64::from_be_bytes(arr8(&buf[at..at + 8]));
        let be_u32 = |at: usize| u32::from_be_bytes(arr4(&buf[at..at + 4]));
        let be_u16 = |at: usize| u16::from_be_bytes([buf[at], buf[at + 1]]);
        let base_offset = be_u64(0);
        let batch_length = be_u32(8);
        if base_offset > i64::MAX as u64 {
            return Err("negative base offset");
        }
        if (batch_length as usize) < HEADER_LEN - LOG_OVERHEAD {
            return Err("batch length shorter than the header");
        }
        if batch_length as usize > MAX_BATCH_LEN {
            return Err("batch length over the limit");
        }
        if buf[16] != MAGIC {
            return Err("unsupported magic (record format version)");
        }
        let attributes = be_u16(21);
        if attributes & !ATTR_KNOWN != 0 {
            return Err("unknown attribute bits");
        }
        if Compression::from_attributes(attributes).is_none() {
            return Err("unknown compression codec");
        }
        let last_offset_delta = be_u32(23);
        if last_offset_delta > i32::MAX as u32 {
            return Err("negative last offset delta");
        }
        if base_offset
            .checked_add(u64::from(last_offset_delta))
            .is_none_or(|l| l > i64::MAX as u64)
        {
            return Err("last offset overflows");
        }
        let record_count = be_u32(57);
        if record_count > i32::MAX as u32 {
            return Err("negative record count");
        }
        if u64::from(record_count) > u64::from(last_offset_delta) + 1 {
            return Err("more records than offsets");
        }
        Ok(BatchHeader {
            base_offset,
            batch_length,
            leader_epoch: be_u32(12) as i32,
            crc: be_u32(17),
            attributes,
            last_offset_delta,
            base_timestamp: be_u64(27) as i64,
            max_timestamp: be_u64(35) as i64,
            producer: ProducerInfo {
                id: be_u64(43) as i64,
                epoch: be_u16(51) as i16,
                base_sequence: be_u32(53) as i32,
            },
            record_count,
        })
    }
}

fn arr8(b: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    a
}

fn arr4(b: &[u8]) -> [u8; 4] {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    a
}

/// A whole, checked batch: its header and its bytes (shared, not copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Its fixed fields.
    pub header: BatchHeader,
    /// All of its bytes, header included.
    pub bytes: Bytes,
}

/// What [`Batch::parse`] found at a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole valid batch.
    Batch(Batch),
    /// The bytes end inside a batch (a torn tail when at a file's end).
    Incomplete,
    /// Damage: the reason.
    Invalid(&'static str),
}

impl Batch {
    /// Reads the batch at the start of `buf`, checking the header, the
    /// checksum and every record (lengths, varints, offset deltas and count,
    /// timestamps against the header). `buf` may hold more after it.
    pub fn parse(buf: &Bytes) -> Parsed {
        if buf.len() < LOG_OVERHEAD {
            return Parsed::Incomplete;
        }
        let len = u32::from_be_bytes(arr4(&buf[8..12])) as usize;
        if len > MAX_BATCH_LEN {
            return Parsed::Invalid("batch length over the limit");
        }
        if buf.len() < HEADER_LEN.min(LOG_OVERHEAD + len) || buf.len() < LOG_OVERHEAD + len {
            // Check what can be checked of a partial header: a length
            // that could never be valid is damage, not a torn tail.
            if len < HEADER_LEN - LOG_OVERHEAD {
                return Parsed::Invalid("batch length shorter than the header");
            }
            return Parsed::Incomplete;
        }
        let header = match BatchHeader::parse(buf) {
            Ok(h) => h,
            Err(r) => return Parsed::Invalid(r),
        };
        let end = header.total_len();
        if checksum(&buf[..end]) != header.crc {
            return Parsed::Invalid("batch checksum mismatch");
        }
        let bytes = buf.slice(..end);
        // A compressed body was checked record by record when it was
        // produced; here the CRC vouches for it, so a read never
        // decompresses (Kafka serves fetches the same way).
        if header.compression() == Compression::None {
            if let Err(r) = check_records(&header, &bytes[HEADER_LEN..], false) {
                return Parsed::Invalid(r);
            }
        }
        Parsed::Batch(Batch { header, bytes })
    }

    /// Parses exactly one batch that must fill `bytes`.
    pub fn from_bytes(bytes: Bytes) -> Result<Batch> {
        match Batch::parse(&bytes) {
            Parsed::Batch(b) if b.bytes.len() == bytes.len() => Ok(b),
            Parsed::Batch(_) => Err(Error::InvalidBatch("bytes left after the batch".into())),
            Parsed::Incomplete => Err(Error::InvalidBatch("truncated batch".into())),
            Parsed::Invalid(r) => Err(Error::InvalidBatch(r.into())),
        }
    }

    /// Base offset.
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    /// Last offset.
    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }

    /// The uncompressed record bytes and where the first record starts.
    fn record_bytes(&self) -> Result<(Bytes, usize)> {
        match self.header.compression() {
            Compression::None => Ok((self.bytes.clone(), HEADER_LEN)),
            c => Ok((
                Bytes::from(compression::decompress(c, &self.bytes[HEADER_LEN..])?),
                0,
            )),
        }
    }

    /// [`Batch::from_bytes`] without the record walk: header and CRC only.
    /// For a producer's batch, whose records [`Batch::validate_for_append`]
    /// then walks once with the stricter rules.
    pub fn from_bytes_header_and_crc(bytes: Bytes) -> Result<Batch> {
        let bad = |r: &str| Error::InvalidBatch(r.to_string());
        if bytes.len() < HEADER_LEN {
            return Err(bad("truncated batch"));
        }
        let header = BatchHeader::parse(&bytes).map_err(bad)?;
        if header.total_len() != bytes.len() {
            return Err(bad(if header.total_len() > bytes.len() {
                "truncated batch"
            } else {
                "bytes left after the batch"
            }));
        }
        if checksum(&bytes) != header.crc {
            return Err(bad("batch checksum mismatch"));
        }
        Ok(Batch { header, bytes })
    }

    /// Checks a batch a producer sent before it is appended, as Kafka's
    /// LogValidator does: magic 2 (by `parse`), the CRC, then every record,
    /// decompressing the body if it is compressed; the offset deltas must
    /// be exactly 0..count and the last offset delta count - 1.
    pub fn validate_for_append(&self) -> Result<()> {
        let h = &self.header;
        if h.record_count == 0 || u64::from(h.record_count) != u64::from(h.last_offset_delta) + 1 {
            return Err(Error::InvalidBatch(format!(
                "a produced batch needs last offset delta = record count - 1 (got {} and {})",
                h.last_offset_delta, h.record_count
            )));
        }
        if h.is_control() {
            return Err(Error::InvalidBatch(
                "control batches come from the broker, not from producers".into(),
            ));
        }
        let (body, at) = self.record_bytes()?;
        check_records(h, &body[at..], true).map_err(|r| Error::InvalidBatch(r.into()))
    }

    /// The records. A compressed batch is decompressed; for one that fails
    /// to decompress (it passed its CRC, so it was stored that way) the
    /// result is empty: use [`Batch::try_records`] to see the error.
    pub fn records(&self) -> Vec<Record> {
        self.try_records().unwrap_or_default()
    }

    /// The records, or why a compressed body does not decode.
    pub fn try_records(&self) -> Result<Vec<Record>> {
        let (bytes, mut pos) = self.record_bytes()?;
        let mut out = Vec::with_capacity(self.header.record_count as usize);
        for _ in 0..self.header.record_count {
            match decode_record(&self.header, &bytes, pos) {
                Ok((r, next)) => {
                    out.push(r);
                    pos = next;
                }
                Err(r) => return Err(Error::InvalidBatch(r.into())),
            }
        }
        Ok(out)
    }

    /// Whether every record has a (non-null) key, read in place.
    pub fn every_record_has_a_key(&self) -> bool {
        if self.header.compression() != Compression::None {
            return self
                .try_records()
                .is_ok_and(|rs| rs.iter().all(|r| r.key.is_some()));
        }
        let mut pos = HEADER_LEN;
        for _ in 0..self.header.record_count {
            match walk_record(&self.header, &self.bytes, pos) {
                Ok(r) if r.key.is_some() => pos = r.end,
                _ => return false,
            }
        }
        true
    }

    /// The same batch with a new base offset and leader epoch stamped in
    /// place; the checksum does not cover them and stays as it is.
    pub fn with_offset_and_epoch(self, base_offset: u64, leader_epoch: i32) -> Batch {
        // In place when this is the only handle on the bytes (a producer's
        // fresh batch); a copy otherwise.
        let mut b = self
            .bytes
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        b[0..8].copy_from_slice(&base_offset.to_be_bytes());
        b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        Batch {
            header: BatchHeader {
                base_offset,
                leader_epoch,
                ..self.header
            },
            bytes: b.freeze(),
        }
    }
}

/// Builds a batch from records. Offsets of the records are their position
/// (`base_offset + i`); timestamps are the records'.
pub fn build(
    base_offset: u64,
    leader_epoch: i32,
    producer: ProducerInfo,
    records: &[Record],
) -> Result<Batch> {
    build_compressed(
        base_offset,
        leader_epoch,
        producer,
        records,
        Compression::None,
    )
}

/// [`build`] with the records compressed by `codec`.
pub fn build_compressed(
    base_offset: u64,
    leader_epoch: i32,
    producer: ProducerInfo,
    records: &[Record],
    codec: Compression,
) -> Result<Batch> {
    if records.is_empty() {
        return Err(Error::InvalidBatch(
            "a batch needs at least one record".into(),
        ));
    }
    if records.len() > i32::MAX as usize {
        return Err(Error::InvalidBatch("too many records".into()));
    }
    let fields = Fields {
        base_offset,
        leader_epoch,
        attributes: codec.bits(), // create time, not transactional
        last_offset_delta: (records.len() - 1) as u32,
        base_timestamp: records[0].timestamp,
        producer,
    };
    assemble(
        &fields,
        records.iter().enumerate().map(|(i, r)| (i as i32, r)),
    )
}

/// Rebuilds `batch` keeping only the records `keep` accepts, with the same
/// base offset, last offset delta, producer fields and epoch (so offsets
/// and producer state stay exact). A batch left with no record stays as an
/// empty batch (Kafka's cleaner keeps such batches too): every batch still
/// starts where the one before it ended, so base offsets stay checkable
/// by position. The result is uncompressed.
pub fn filter(batch: &Batch, mut keep: impl FnMut(&Record) -> bool) -> Result<Batch> {
    let kept: Vec<Record> = batch
        .try_records()?
        .into_iter()
        .filter(|r| keep(r))
        .collect();
    let h = &batch.header;
    let fields = Fields {
        base_offset: h.base_offset,
        leader_epoch: h.leader_epoch,
        attributes: h.attributes & !ATTR_COMPRESSION_MASK,
        last_offset_delta: h.last_offset_delta,
        base_timestamp: h.base_timestamp,
        producer: h.producer,
    };
    let deltas = kept.iter().map(|r| ((r.offset - h.base_offset) as i32, r));
    assemble(&fields, deltas)
}

/// An empty batch spanning offsets `base..=last` (the cleaner's stand-in
/// for batches it emptied), with no producer.
pub fn empty_span(base: u64, last: u64, leader_epoch: i32, timestamp: i64) -> Result<Batch> {
    let delta = last
        .checked_sub(base)
        .filter(|&d| d <= i32::MAX as u64)
        .ok_or_else(|| Error::InvalidBatch(format!("empty span {base}..={last}")))?;
    let fields = Fields {
        base_offset: base,
        leader_epoch,
        attributes: 0,
        last_offset_delta: delta as u32,
        base_timestamp: timestamp,
        producer: ProducerInfo::NONE,
    };
    assemble(&fields, std::iter::empty())
}

/// The header fields a writer chooses.
struct Fields {
    base_offset: u64,
    leader_epoch: i32,
    attributes: u16,
    last_offset_delta: u32,
    base_timestamp: i64,
    producer: ProducerInfo,
}

/// Encodes a batch of `(offset delta, record)` and checks the result.
fn assemble<'a>(f: &Fields, records: impl Iterator<Item = (i32, &'a Record)>) -> Result<Batch> {
    let mut body = Vec::new();
    let mut rec = Vec::new();
    let (mut count, mut max_ts) = (0u32, f.base_timestamp);
    for (delta, r) in records {
        count += 1;
        max_ts = max_ts.max(r.timestamp);
        rec.clear();
        rec.push(0u8); // record attributes: unused
        put_varlong(&mut rec, r.timestamp.wrapping_sub(f.base_timestamp));
        put_varint(&mut rec, delta);
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i32);
        for h in &r.headers {
            put_bytes(&mut rec, Some(&h.key));
            put_bytes(&mut rec, h.value.as_deref());
        }
        put_varint(&mut body, rec.len() as i32);
        body.extend_from_slice(&rec);
    }
    if let Some(c) = Compression::from_attributes(f.attributes) {
        if c != Compression::None {
            body = compression::compress(c, &body)?;
        }
    }
    let total = HEADER_LEN + body.len();
    if total > MAX_BATCH_LEN {
        return Err(Error::InvalidBatch(format!(
            "batch of {total} bytes is over the {MAX_BATCH_LEN}-byte limit"
        )));
    }
    let mut b = BytesMut::with_capacity(total);
    b.put_u64(f.base_offset);
    b.put_u32((total - LOG_OVERHEAD) as u32);
    b.put_i32(f.leader_epoch);
    b.put_u8(MAGIC);
    b.put_u32(0); // crc, set below
    b.put_u16(f.attributes);
    b.put_u32(f.last_offset_delta);
    b.put_i64(f.base_timestamp);
    b.put_i64(max_ts);
    b.put_i64(f.producer.id);
    b.put_i16(f.producer.epoch);
    b.put_i32(f.producer.base_sequence);
    b.put_u32(count);
    b.put_slice(&body);
    let crc = checksum(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Batch::from_bytes(b.freeze())
}

/// The batch checksum, Kafka's: CRC-32C of the whole batch `b` from the
/// attributes (byte 21) to the end.
pub fn checksum(b: &[u8]) -> u32 {
    crc32c::crc32c(&b[CRC_FROM..])
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Zigzag LEB128 of an i32.
pub fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_uvarint(out, ((v << 1) ^ (v >> 31)) as u32 as u64);
}

/// Zigzag LEB128 of an i64.
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 of at most `max_bytes` bytes at `*pos`.
fn get_uvarint(
    buf: &[u8],
    pos: &mut usize,
    max_bytes: usize,
) -> std::result::Result<u64, &'static str> {
    let mut v = 0u64;
    for i in 0..max_bytes {
        let b = *buf.get(*pos).ok_or("varint runs past the record")?;
        *pos += 1;
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

fn get_varint(buf: &[u8], pos: &mut usize) -> std::result::Result<i32, &'static str> {
    let u = get_uvarint(buf, pos, 5)?;
    if u > u64::from(u32::MAX) {
        return Err("varint out of range");
    }
    let u = u as u32;
    Ok(((u >> 1) as i32) ^ -((u & 1) as i32))
}

fn get_varlong(buf: &[u8], pos: &mut usize) -> std::result::Result<i64, &'static str> {
    let u = get_uvarint(buf, pos, 10)?;
    Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
}

/// A nullable byte string: (start, len) in `buf`, or `None`.
fn get_bytes(
    buf: &[u8],
    pos: &mut usize,
    end: usize,
) -> std::result::Result<Option<(usize, usize)>, &'static str> {
    let len = get_varint(buf, pos)?;
    if len < -1 {
        return Err("negative length");
    }
    if len == -1 {
        return Ok(None);
    }
    let len = len as usize;
    if *pos + len > end {
        return Err("field runs past the record");
    }
    let at = *pos;
    *pos += len;
    Ok(Some((at, len)))
}

/// A record's fields as positions in its batch, before any copy.
struct RawRecord {
    ts_delta: i64,
    off_delta: i32,
    key: Option<(usize, usize)>,
    value: Option<(usize, usize)>,
    /// Where the headers start and how many there are.
    headers: (usize, i32),
    /// Position after the record.
    end: usize,
}

/// Reads and checks the record at `pos` of `buf` (a batch, or its body):
/// its length, every varint and every length inside the record, an offset
/// delta within the batch, and nothing left over.
fn walk_record(
    h: &BatchHeader,
    buf: &[u8],
    pos: usize,
) -> std::result::Result<RawRecord, &'static str> {
    let mut p = pos;
    let len = get_varint(buf, &mut p)?;
    if len < 0 {
        return Err("negative record length");
    }
    let end = p + len as usize;
    if end > buf.len() {
        return Err("record runs past the batch");
    }
    let rec = &buf[..end];
    let _attributes = *rec.get(p).ok_or("record too short")?;
    p += 1;
    let ts_delta = get_varlong(rec, &mut p)?;
    let off_delta = get_varint(rec, &mut p)?;
    if off_delta < 0 || off_delta as u32 > h.last_offset_delta {
        return Err("record offset delta outside the batch");
    }
    let key = get_bytes(rec, &mut p, end)?;
    let value = get_bytes(rec, &mut p, end)?;
    let n = get_varint(rec, &mut p)?;
    if n < 0 {
        return Err("negative header count");
    }
    let headers_at = p;
    for _ in 0..n {
        get_bytes(rec, &mut p, end)?.ok_or("null header key")?;
        get_bytes(rec, &mut p, end)?;
    }
    if p != end {
        return Err("record length does not match its fields");
    }
    Ok(RawRecord {
        ts_delta,
        off_delta,
        key,
        value,
        headers: (headers_at, n),
        end,
    })
}

/// Decodes the record at `pos` of `bytes` (a whole batch); returns it and
/// the position after it. Keys, values and headers are slices of `bytes`.
fn decode_record(
    h: &BatchHeader,
    bytes: &Bytes,
    pos: usize,
) -> std::result::Result<(Record, usize), &'static str> {
    let r = walk_record(h, bytes, pos)?;
    let slice = |x: Option<(usize, usize)>| x.map(|(a, l)| bytes.slice(a..a + l));
    let mut headers = Vec::with_capacity(r.headers.1 as usize);
    let mut p = r.headers.0;
    for _ in 0..r.headers.1 {
        let k = get_bytes(bytes, &mut p, r.end)?.ok_or("null header key")?;
        let v = get_bytes(bytes, &mut p, r.end)?;
        headers.push(Header {
            key: bytes.slice(k.0..k.0 + k.1),
            value: slice(v),
        });
    }
    Ok((
        Record {
            offset: h.base_offset + r.off_delta as u64,
            timestamp: h.base_timestamp.wrapping_add(r.ts_delta),
            key: slice(r.key),
            value: slice(r.value),
            headers,
        },
        r.end,
    ))
}

/// Checks every record of a batch body: each one whole (`walk_record`),
/// the count, offset deltas strictly increasing (with `dense`, exactly
/// 0, 1, 2, ...: a producer's batch), timestamps no later than the
/// header's maximum, nothing after the last record.
fn check_records(
    h: &BatchHeader,
    body: &[u8],
    dense: bool,
) -> std::result::Result<(), &'static str> {
    let mut p = 0usize;
    let mut last_delta: i64 = -1;
    for _ in 0..h.record_count {
        let r = walk_record(h, body, p)?;
        if i64::from(r.off_delta) <= last_delta {
            return Err("record offset deltas out of order");
        }
        if dense && i64::from(r.off_delta) != last_delta + 1 {
            return Err("record offset deltas skip an offset");
        }
        last_delta = i64::from(r.off_delta);
        if h.base_timestamp
            .checked_add(r.ts_delta)
            .is_none_or(|t| t > h.max_timestamp)
        {
            return Err("record timestamp past the batch's max timestamp");
        }
        p = r.end;
    }
    if p != body.len() {
        return Err("bytes after the last record");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
