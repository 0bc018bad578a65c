//! Writes a table: data blocks as entries arrive, then the filter, the
//! properties, the index and the footer; fsyncs before returning.

use std::cmp::Ordering;

use strata_io::FileRef;

use super::block::BlockBuilder;
use super::bloom;
use super::format::{block_crc, BlockHandle, Footer};
use super::properties::Properties;
use crate::key;
use crate::range_del::{self, RangeTombstone};
use crate::{Error, Result};

/// Table-building settings.
#[derive(Clone, Copy, Debug)]
pub struct TableOptions {
    /// Target size of a data block before its trailer. Default 4 KiB.
    pub block_size: usize,
    /// Entries between restart points. Default 16.
    pub restart_interval: usize,
    /// Bloom filter bits per key; 0 disables the filter. Default 10.
    pub bloom_bits_per_key: u32,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size: 4096,
            restart_interval: 16,
            bloom_bits_per_key: 10,
        }
    }
}

/// Bytes between writeback hints.
const WRITEBACK_EVERY: u64 = 1 << 20;

/// Builds one table file from entries in internal-key order.
pub struct TableBuilder {
    file: FileRef,
    opts: TableOptions,
    offset: u64,
    data: BlockBuilder,
    index: BlockBuilder,
    hashes: Vec<u64>,
    last_user_key: Option<Vec<u8>>,
    last_key: Vec<u8>,
    props: Properties,
    range_dels: Vec<RangeTombstone>,
    /// Bytes before this offset were handed to writeback.
    written_back: u64,
}

impl TableBuilder {
    /// Starts a table in an empty, writable file.
    pub fn new(file: FileRef, opts: TableOptions) -> Self {
        TableBuilder {
            file,
            data: BlockBuilder::new(opts.restart_interval),
            index: BlockBuilder::new(1),
            opts,
            offset: 0,
            hashes: Vec::new(),
            last_user_key: None,
            last_key: Vec::new(),
            props: Properties::default(),
            range_dels: Vec::new(),
            written_back: 0,
        }
    }

    /// Adds an entry; internal keys must be strictly increasing.
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        let parsed = key::parse(ikey)
            .ok_or_else(|| Error::InvalidArgument("malformed internal key".into()))?;
        if self.props.entries > 0 && key::compare(&self.last_key, ikey) != Ordering::Less {
            return Err(Error::InvalidArgument(
                "table entries must be added in increasing key order".into(),
            ));
        }
        if self.last_user_key.as_deref() != Some(parsed.user_key) {
            self.hashes.push(bloom::hash(parsed.user_key));
            self.last_user_key = Some(parsed.user_key.to_vec());
        }
        let p = &mut self.props;
        if p.entries == 0 {
            p.smallest = ikey.to_vec();
            p.min_seqno = parsed.seqno;
            p.max_seqno = parsed.seqno;
        }
        p.entries += 1;
        p.deletions += u64::from(parsed.kind == key::Kind::Delete);
        p.raw_key_bytes += ikey.len() as u64;
        p.raw_value_bytes += value.len() as u64;
        p.min_seqno = p.min_seqno.min(parsed.seqno);
        p.max_seqno = p.max_seqno.max(parsed.seqno);
        self.last_key.clear();
        self.last_key.extend_from_slice(ikey);
        self.data.add(ikey, value);
        if self.data.size_estimate() >= self.opts.block_size {
            self.flush_data()?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn file_size(&self) -> u64 {
        self.offset
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// Adds a range tombstone (stored in its own block).
    pub fn add_range_tombstone(&mut self, t: RangeTombstone) {
        self.range_dels.push(t);
    }

    fn write_block(&mut self, contents: &[u8]) -> Result<BlockHandle> {
        let handle = BlockHandle {
            offset: self.offset,
            size: contents.len() as u64,
        };
        let mut buf = Vec::with_capacity(contents.len() + 5);
        buf.extend_from_slice(contents);
        buf.push(0);
        buf.extend_from_slice(&block_crc(contents, 0).to_le_bytes());
        self.file.write_at(&buf, self.offset)?;
        self.offset += buf.len() as u64;
        // Write back as we go (RocksDB's bytes_per_sync): the fsync in
        // `finish` then has little left to do and holds the file system
        // journal briefly, which is what other writers (the WAL) wait on.
        if self.offset - self.written_back >= WRITEBACK_EVERY {
            self.file
                .start_writeback(self.written_back, self.offset - self.written_back)?;
            self.written_back = self.offset;
        }
        Ok(handle)
    }

    fn flush_data(&mut self) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        // The index key is the block's last key: every key in the block is
        // <= it and every key of the next block is greater.
        let last = self.data.last_key().to_vec();
        let contents = self.data.finish();
        let handle = self.write_block(&contents)?;
        let mut v = Vec::new();
        handle.encode_into(&mut v);
        self.index.add(&last, &v);
        self.props.data_blocks += 1;
        Ok(())
    }

    /// Writes the rest of the table, fsyncs it and returns its size and
    /// properties. The caller makes the file's name durable (directory sync).
    pub fn finish(mut self) -> Result<(u64, Properties)> {
        self.flush_data()?;
        self.props.largest = self.last_key.clone();
        let filter = if self.opts.bloom_bits_per_key > 0 {
            bloom::build(&self.hashes, self.opts.bloom_bits_per_key)
        } else {
            Vec::new()
        };
        let filter = self.write_block(&filter)?;
        for t in &self.range_dels {
            let p = &mut self.props;
            if p.entries == 0 && p.min_seqno == 0 && p.max_seqno == 0 {
                p.min_seqno = t.seqno;
            }
            p.min_seqno = p.min_seqno.min(t.seqno);
            p.max_seqno = p.max_seqno.max(t.seqno);
        }
        let props = self.props.encode();
        let properties = self.write_block(&props)?;
        let rd = range_del::encode(&self.range_dels);
        let range_dels = self.write_block(&rd)?;
        let index_contents = self.index.finish();
        let index = self.write_block(&index_contents)?;
        let footer = Footer {
            index,
            filter,
            properties,
            range_dels,
        }
        .encode();
        self.file.write_at(&footer, self.offset)?;
        self.offset += footer.len() as u64;
        self.file.sync_data()?;
        Ok((self.offset, self.props))
    }
}
