//! Table framing: block handles, the per-block trailer and the footer.
//!
//! ```text
//! block on disk:  contents | type u8 (0 = uncompressed) | crc32 u32 LE (of contents and type)
//! footer (80 B):  index | filter | properties | range tombstones   (handles: offset u64, size u64)
//!                 | format version u32 | crc32 u32 (of bytes 0..68) | magic u64
//! ```

/// Bytes after each block's contents.
pub const BLOCK_TRAILER_LEN: usize = 5;
/// Size of the footer at the end of every table.
pub const FOOTER_LEN: usize = 80;
/// Last 8 bytes of every table.
pub const TABLE_MAGIC: u64 = 0x5354_5241_5441_5354; // "STRATAST"
/// Format version written and accepted.
pub const FORMAT_VERSION: u32 = 1;

/// Where a block lives in the file (contents only, trailer excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockHandle {
    /// Byte offset.
    pub offset: u64,
    /// Length of the contents.
    pub size: u64,
}

impl BlockHandle {
    /// Varint encoding (used as index values).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        strata_wal::format::put_varint(out, self.offset);
        strata_wal::format::put_varint(out, self.size);
    }

    /// Decodes a varint handle; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<BlockHandle> {
        let (offset, n) = strata_wal::format::get_varint(b)?;
        let (size, m) = strata_wal::format::get_varint(b.get(n..)?)?;
        (n + m == b.len()).then_some(BlockHandle { offset, size })
    }
}

/// Checksum stored after a block.
pub fn block_crc(contents: &[u8], kind: u8) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(contents);
    h.update(&[kind]);
    h.finalize()
}

/// The decoded footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// The index block.
    pub index: BlockHandle,
    /// The bloom filter block.
    pub filter: BlockHandle,
    /// The properties block.
    pub properties: BlockHandle,
    /// The range tombstone block.
    pub range_dels: BlockHandle,
}

impl Footer {
    /// Encodes the 64-byte footer.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        let hs = [self.index, self.filter, self.properties, self.range_dels];
        for (i, h) in hs.iter().enumerate() {
            b[i * 16..i * 16 + 8].copy_from_slice(&h.offset.to_le_bytes());
            b[i * 16 + 8..i * 16 + 16].copy_from_slice(&h.size.to_le_bytes());
        }
        b[64..68].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&b[0..68]);
        b[68..72].copy_from_slice(&crc.to_le_bytes());
        b[72..80].copy_from_slice(&TABLE_MAGIC.to_le_bytes());
        b
    }

    /// Decodes and validates a footer of a file of `file_len` bytes: magic,
    /// version, checksum, and every handle inside the file before the footer.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Footer, &'static str> {
        if b.len() != FOOTER_LEN {
            return Err("footer has the wrong size");
        }
        let u64_at = |i: usize| -> u64 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        if u64_at(72) != TABLE_MAGIC {
            return Err("bad magic number: not a Strata table");
        }
        let mut v = [0u8; 4];
        v.copy_from_slice(&b[64..68]);
        if u32::from_le_bytes(v) != FORMAT_VERSION {
            return Err("unsupported table format version");
        }
        let mut c = [0u8; 4];
        c.copy_from_slice(&b[68..72]);
        if u32::from_le_bytes(c) != crc32fast::hash(&b[0..68]) {
            return Err("footer checksum mismatch");
        }
        let h = |i: usize| BlockHandle {
            offset: u64_at(i * 16),
            size: u64_at(i * 16 + 8),
        };
        let limit = file_len.saturating_sub(FOOTER_LEN as u64);
        let f = Footer {
            index: h(0),
            filter: h(1),
            properties: h(2),
            range_dels: h(3),
        };
        for h in [f.index, f.filter, f.properties, f.range_dels] {
            let end = h
                .offset
                .checked_add(h.size)
                .and_then(|e| e.checked_add(BLOCK_TRAILER_LEN as u64));
            if end.is_none_or(|e| e > limit) {
                return Err("block handle points outside the file");
            }
        }
        Ok(f)
    }
}
