//! Reads a table: validates the footer, loads the index, filter and
//! properties, answers point lookups (skipping the file when the bloom
//! filter says the key is absent) and iterates in both directions.
//! Every block is checksummed before use; damage is
//! [`Error::Corruption`] naming the file and the block's offset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_io::FileRef;

use super::block::{Block, BlockIter};
use super::bloom::{self, Bloom};
use super::format::{block_crc, BlockHandle, Footer, BLOCK_TRAILER_LEN, FOOTER_LEN};
use super::properties::Properties;
use crate::cache::BlockCache;
use crate::key::{self, Kind};
use crate::range_del::{self, RangeTombstone};
use crate::{Error, Result};

/// An open table.
pub struct Table {
    file: FileRef,
    path: PathBuf,
    index: Block,
    index_offset: u64,
    filter: Option<Bloom>,
    props: Properties,
    range_dels: Vec<RangeTombstone>,
    size: u64,
    /// Set when the table left the database: the file is deleted once the
    /// last reader (version, iterator) lets go of it.
    delete_on_drop: parking_lot::Mutex<Option<strata_io::StorageRef>>,
    /// The shared block cache and this table's id in it.
    cache: Option<(Arc<BlockCache>, u64)>,
}

impl Drop for Table {
    fn drop(&mut self) {
        if let Some(storage) = self.delete_on_drop.get_mut().take() {
            if let Err(e) = storage.remove_file(&self.path) {
                tracing::warn!(error = %e, "could not delete an obsolete table; the next open will");
            }
        }
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Where a batched point lookup in one table stands before any data block
/// is read ([`Table::plan_get`]).
#[derive(Debug)]
pub enum PlannedGet {
    /// Answered without a read: the block was cached, or no block can hold
    /// the key.
    Done(Option<(u64, Kind, Vec<u8>)>),
    /// This data block must be read.
    Read(BlockHandle),
}

/// What a point lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The newest visible version is a value.
    Value(Vec<u8>),
    /// The newest visible version is a tombstone.
    Deleted,
    /// The table has no visible version of the key.
    Absent,
    /// The bloom filter ruled the table out without reading a block.
    FilteredOut,
}

impl Table {
    /// Opens a table file, validating its footer and meta blocks.
    pub fn open(file: FileRef) -> Result<Table> {
        let path = file.path().to_path_buf();
        let size = file.len()?;
        if size < FOOTER_LEN as u64 {
            return Err(Error::corruption(&path, 0, "file too short to be a table"));
        }
        let mut fb = [0u8; FOOTER_LEN];
        let at = size - FOOTER_LEN as u64;
        file.read_exact_at(&mut fb, at)?;
        let footer = Footer::decode(&fb, size).map_err(|r| Error::corruption(&path, at, r))?;
        let (index, n) = read_block(&file, &path, footer.index)?;
        let index = Block::with_len(index, n)
            .map_err(|r| Error::corruption(&path, footer.index.offset, r))?;
        let filter = if footer.filter.size == 0 {
            None
        } else {
            let (raw, n) = read_block(&file, &path, footer.filter)?;
            Some(
                Bloom::decode(&raw[..n])
                    .map_err(|r| Error::corruption(&path, footer.filter.offset, r))?,
            )
        };
        let (raw, n) = read_block(&file, &path, footer.properties)?;
        let props = Properties::decode(&raw[..n])
            .map_err(|r| Error::corruption(&path, footer.properties.offset, r))?;
        let (raw, n) = read_block(&file, &path, footer.range_dels)?;
        let range_dels = range_del::decode(&raw[..n])
            .map_err(|r| Error::corruption(&path, footer.range_dels.offset, r))?;
        Ok(Table {
            cache: None,
            delete_on_drop: parking_lot::Mutex::new(None),
            range_dels,
            file,
            path,
            index_offset: footer.index.offset,
            index,
            filter,
            props,
            size,
        })
    }

    /// The table's properties.
    pub fn properties(&self) -> &Properties {
        &self.props
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The data block an index entry points to, and its file offset.
    fn data_block(&self, index_value: &[u8]) -> Result<(Block, u64)> {
        let h = BlockHandle::decode(index_value).ok_or_else(|| {
            Error::corruption(&self.path, self.index_offset, "bad block handle in index")
        })?;
        if let Some((c, id)) = &self.cache {
            if let Some(b) = c.get(&(*id, h.offset)) {
                return Ok((b, h.offset));
            }
        }
        let spare = self.cache.as_ref().and_then(|(c, id)| {
            let len = usize::try_from(h.size).ok()? + BLOCK_TRAILER_LEN;
            c.take_buffer(&(*id, h.offset), len)
        });
        let (raw, n) = read_block_into(&self.file, &self.path, h, spare)?;
        let b = Block::with_len(raw, n).map_err(|r| Error::corruption(&self.path, h.offset, r))?;
        if let Some((c, id)) = &self.cache {
            c.insert((*id, h.offset), b.clone());
        }
        Ok((b, h.offset))
    }

    /// Opens a table whose data blocks go through `cache` under `id`
    /// (unique per table file, e.g. its file number).
    pub fn open_cached(file: FileRef, cache: Arc<BlockCache>, id: u64) -> Result<Table> {
        let mut t = Table::open(file)?;
        t.cache = Some((cache, id));
        Ok(t)
    }

    /// Deletes the file once nothing uses this table any more.
    pub fn delete_when_unused(&self, storage: strata_io::StorageRef) {
        *self.delete_on_drop.lock() = Some(storage);
    }

    /// The table's range tombstones.
    pub fn range_tombstones(&self) -> &[RangeTombstone] {
        &self.range_dels
    }

    /// The newest version of `user_key` with a sequence number <= `snapshot`.
    pub fn get(&self, user_key: &[u8], snapshot: u64) -> Result<Lookup> {
        if self
            .filter
            .as_ref()
            .is_some_and(|f| !f.may_contain(bloom::hash(user_key)))
        {
            return Ok(Lookup::FilteredOut);
        }
        Ok(match self.get_entry(user_key, snapshot)? {
            Some((_, Kind::Put, v)) => Lookup::Value(v),
            Some((_, Kind::Delete, _)) => Lookup::Deleted,
            None => Lookup::Absent,
        })
    }

    /// False when the bloom filter rules `user_key` out.
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.may_contain(bloom::hash(user_key)))
    }

    /// Like [`Table::get`] with the version's sequence number; `None` also
    /// when the bloom filter rules the key out.
    pub fn get_entry(
        &self,
        user_key: &[u8],
        snapshot: u64,
    ) -> Result<Option<(u64, Kind, Vec<u8>)>> {
        if !self.may_contain(user_key) {
            return Ok(None);
        }
        self.get_entry_unfiltered(user_key, snapshot)
    }

    /// [`Table::get_entry`] for a caller that consulted [`Table::may_contain`].
    pub fn get_entry_unfiltered(
        &self,
        user_key: &[u8],
        snapshot: u64,
    ) -> Result<Option<(u64, Kind, Vec<u8>)>> {
        let Some(idx) = self.seek_index(user_key, snapshot)? else {
            return Ok(None);
        };
        let (block, at) = self.data_block(idx.value())?;
        self.search(&block, at, user_key, snapshot)
    }

    /// The index entry of the data block that would hold `user_key` at
    /// `snapshot`; `None` past the last block.
    fn seek_index(&self, user_key: &[u8], snapshot: u64) -> Result<Option<BlockIter>> {
        // Kind::Put has the larger trailer, so this sorts before every
        // version of the key at `snapshot` or older.
        let target = key::seek_key(user_key, snapshot);
        let mut idx = self.index.iter(key::compare);
        idx.seek(&target);
        if let Some(r) = idx.error() {
            return Err(Error::corruption(
                &self.path,
                self.index_offset,
                format!("index block: {r}"),
            ));
        }
        Ok(idx.valid().then_some(idx))
    }

    /// The first half of a batched point lookup ([`crate::Db::multi_get`]):
    /// finds the data block that would hold `user_key` and, when it is in
    /// the block cache, answers from it; otherwise says which block to
    /// read, for the caller to read with others at once and pass to
    /// [`Table::finish_get`]. The caller consulted [`Table::may_contain`].
    pub fn plan_get(&self, user_key: &[u8], snapshot: u64) -> Result<PlannedGet> {
        let Some(idx) = self.seek_index(user_key, snapshot)? else {
            return Ok(PlannedGet::Done(None));
        };
        let h = BlockHandle::decode(idx.value()).ok_or_else(|| {
            Error::corruption(&self.path, self.index_offset, "bad block handle in index")
        })?;
        if let Some((c, id)) = &self.cache {
            if let Some(b) = c.get(&(*id, h.offset)) {
                return Ok(PlannedGet::Done(
                    self.search(&b, h.offset, user_key, snapshot)?,
                ));
            }
        }
        Ok(PlannedGet::Read(h))
    }

    /// The bytes of block `h` (trailer included) to read for
    /// [`Table::finish_get`].
    pub fn block_len(h: BlockHandle) -> Option<usize> {
        usize::try_from(h.size)
            .ok()
            .and_then(|s| s.checked_add(BLOCK_TRAILER_LEN))
    }

    /// The second half: `raw` holds block `h` as read from the file
    /// ([`Table::block_len`] bytes); it is checked and cached, once however
    /// many keys of a batch want it, then searched with [`Table::search_block`].
    pub fn load_block(&self, h: BlockHandle, raw: Arc<[u8]>) -> Result<Block> {
        let n = check_block(&self.path, h, &raw)?;
        let b = Block::with_len(raw, n).map_err(|r| Error::corruption(&self.path, h.offset, r))?;
        if let Some((c, id)) = &self.cache {
            c.insert((*id, h.offset), b.clone());
        }
        Ok(b)
    }

    /// The newest version of `user_key` at `snapshot` in data block `b`
    /// (block `h` of this table).
    pub fn search_block(
        &self,
        b: &Block,
        h: BlockHandle,
        user_key: &[u8],
        snapshot: u64,
    ) -> Result<Option<(u64, Kind, Vec<u8>)>> {
        self.search(b, h.offset, user_key, snapshot)
    }

    /// The table's file (for reads submitted with others).
    pub fn file(&self) -> &FileRef {
        &self.file
    }

    /// The newest version of `user_key` at `snapshot` in data block `block`
    /// (at file offset `at`).
    fn search(
        &self,
        block: &Block,
        at: u64,
        user_key: &[u8],
        snapshot: u64,
    ) -> Result<Option<(u64, Kind, Vec<u8>)>> {
        let target = key::seek_key(user_key, snapshot);
        let mut it = block.iter(key::compare);
        it.seek(&target);
        if let Some(r) = it.error() {
            return Err(Error::corruption(
                &self.path,
                at,
                format!("data block: {r}"),
            ));
        }
        if !it.valid() {
            return Ok(None);
        }
        let p = key::parse(it.key()).ok_or_else(|| {
            Error::corruption(&self.path, at, "malformed internal key in data block")
        })?;
        if p.user_key != user_key {
            return Ok(None);
        }
        Ok(Some((p.seqno, p.kind, it.value().to_vec())))
    }

    /// Whether the table has a bloom filter.
    pub fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// The index: per data block, its last key, offset and size.
    pub fn index_entries(&self) -> Result<Vec<(Vec<u8>, u64, u64)>> {
        let mut out = Vec::new();
        let mut idx = self.index.iter(key::compare);
        idx.seek_to_first();
        while idx.valid() {
            let h = BlockHandle::decode(idx.value()).ok_or_else(|| {
                Error::corruption(&self.path, self.index_offset, "bad block handle in index")
            })?;
            out.push((idx.key().to_vec(), h.offset, h.size));
            idx.next();
        }
        if let Some(r) = idx.error() {
            return Err(Error::corruption(
                &self.path,
                self.index_offset,
                format!("index block: {r}"),
            ));
        }
        Ok(out)
    }

    /// Reads every data block from the file (never from the cache),
    /// checking its checksum, its structure, and that its keys are well
    /// formed and in order; returns the number of blocks. The first damage
    /// found is [`Error::Corruption`] naming the block's offset.
    pub fn verify(&self) -> Result<u64> {
        let mut blocks = 0;
        let mut prev: Option<Vec<u8>> = None;
        for (last, offset, size) in self.index_entries()? {
            let (raw, n) = read_block(&self.file, &self.path, BlockHandle { offset, size })?;
            let b =
                Block::with_len(raw, n).map_err(|r| Error::corruption(&self.path, offset, r))?;
            let mut it = b.iter(key::compare);
            it.seek_to_first();
            while it.valid() {
                if key::parse(it.key()).is_none() {
                    return Err(Error::corruption(
                        &self.path,
                        offset,
                        "malformed internal key in data block",
                    ));
                }
                if prev
                    .as_deref()
                    .is_some_and(|p| key::compare(p, it.key()) != std::cmp::Ordering::Less)
                {
                    return Err(Error::corruption(
                        &self.path,
                        offset,
                        "keys out of order in data block",
                    ));
                }
                prev = Some(it.key().to_vec());
                it.next();
            }
            if let Some(r) = it.error() {
                return Err(Error::corruption(
                    &self.path,
                    offset,
                    format!("data block: {r}"),
                ));
            }
            if prev.as_deref() != Some(last.as_slice()) {
                return Err(Error::corruption(
                    &self.path,
                    offset,
                    "data block's last key differs from its index entry",
                ));
            }
            blocks += 1;
        }
        Ok(blocks)
    }

    /// A cursor over every entry (all versions), in internal-key order.
    pub fn iter(self: &Arc<Self>) -> TableIter {
        TableIter {
            table: self.clone(),
            index: self.index.iter(key::compare),
            data: None,
            data_at: 0,
            err: None,
        }
    }
}

/// Reads and checks a block: the buffer (trailer included) and the length
/// of its contents.
fn read_block(file: &FileRef, path: &Path, h: BlockHandle) -> Result<(Arc<[u8]>, usize)> {
    read_block_into(file, path, h, None)
}

/// [`read_block`] into `spare` when it is given, unshared and long enough.
fn read_block_into(
    file: &FileRef,
    path: &Path,
    h: BlockHandle,
    spare: Option<Arc<[u8]>>,
) -> Result<(Arc<[u8]>, usize)> {
    let len = usize::try_from(h.size)
        .ok()
        .and_then(|s| s.checked_add(BLOCK_TRAILER_LEN))
        .ok_or_else(|| Error::corruption(path, h.offset, "block size overflows"))?;
    // Read straight into the shared buffer the block will live in (one
    // allocation, no copy); the trailer stays behind its end.
    // (`collect` from an exact-size iterator allocates the Arc once.)
    let mut arc: Arc<[u8]> = match spare {
        Some(b) if b.len() >= len && Arc::strong_count(&b) == 1 => b,
        _ => std::iter::repeat_n(0u8, len).collect(),
    };
    let buf = Arc::get_mut(&mut arc)
        .and_then(|b| b.get_mut(..len))
        .ok_or_else(|| Error::corruption(path, h.offset, "block buffer is shared"))?;
    file.read_exact_at(buf, h.offset).map_err(|e| match e {
        strata_io::Error::ShortRead { .. } => {
            Error::corruption(path, h.offset, "block runs past end of file")
        }
        e => e.into(),
    })?;
    let n = check_block(path, h, &arc)?;
    Ok((arc, n))
}

/// Checks a block read from the file (its checksum and compression kind);
/// returns the length of its contents.
fn check_block(path: &Path, h: BlockHandle, raw: &[u8]) -> Result<usize> {
    let len = Table::block_len(h)
        .filter(|&l| l <= raw.len())
        .ok_or_else(|| Error::corruption(path, h.offset, "block runs past end of file"))?;
    let (contents, trailer) = raw[..len].split_at(len - BLOCK_TRAILER_LEN);
    let kind = trailer[0];
    let stored = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
    if stored != block_crc(contents, kind) {
        return Err(Error::corruption(path, h.offset, "block checksum mismatch"));
    }
    if kind != 0 {
        return Err(Error::corruption(
            path,
            h.offset,
            format!("unknown block compression {kind}"),
        ));
    }
    Ok(len - BLOCK_TRAILER_LEN)
}

/// A two-level cursor: the index picks the data block, the block cursor
/// walks it. Invalid at either end or after an error ([`TableIter::error`]).
pub struct TableIter {
    table: Arc<Table>,
    index: BlockIter,
    data: Option<BlockIter>,
    /// File offset of the data block `data` walks, for error reports.
    data_at: u64,
    err: Option<Error>,
}

impl TableIter {
    /// Whether the cursor is on an entry.
    pub fn valid(&self) -> bool {
        self.err.is_none() && self.data.as_ref().is_some_and(|d| d.valid())
    }

    /// The error that stopped the cursor, if any.
    pub fn error(&self) -> Option<&Error> {
        self.err.as_ref()
    }

    /// The current internal key.
    pub fn key(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], |d| d.key())
    }

    /// The current value.
    pub fn value(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], |d| d.value())
    }

    fn fail(&mut self, e: Error) {
        self.err = Some(e);
        self.data = None;
    }

    fn check_index(&mut self) -> bool {
        if let Some(r) = self.index.error() {
            let e = Error::corruption(
                &self.table.path,
                self.table.index_offset,
                format!("index block: {r}"),
            );
            self.fail(e);
            return false;
        }
        true
    }

    /// Loads the block the index cursor is on; `None` cursor if it is invalid.
    fn load(&mut self) -> bool {
        if !self.check_index() {
            return false;
        }
        if !self.index.valid() {
            self.data = None;
            return false;
        }
        match self.table.data_block(self.index.value()) {
            Ok((b, at)) => {
                self.data = Some(b.iter(key::compare));
                self.data_at = at;
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn check_data(&mut self) {
        if let Some(r) = self.data.as_ref().and_then(|d| d.error()) {
            let e = Error::corruption(&self.table.path, self.data_at, format!("data block: {r}"));
            self.fail(e);
            return;
        }
        // Readers and compactions act on the parsed key: one they cannot
        // parse is damage to report, never an entry to skip or copy.
        if self
            .data
            .as_ref()
            .is_some_and(|d| d.valid() && key::parse(d.key()).is_none())
        {
            let e = Error::corruption(
                &self.table.path,
                self.data_at,
                "malformed internal key in data block",
            );
            self.fail(e);
        }
    }

    /// Loads the block the index cursor is on and positions in it with
    /// `place`; returns false if there is no such block (or it failed).
    fn enter(&mut self, place: impl FnOnce(&mut BlockIter)) -> bool {
        if !self.load() {
            return false;
        }
        if let Some(d) = self.data.as_mut() {
            place(d);
        }
        self.check_data();
        true
    }

    /// Skips blocks with nothing (left) in the direction of travel.
    fn settle(&mut self, forward: bool) {
        while self.err.is_none() && self.data.as_ref().is_some_and(|d| !d.valid()) {
            if forward {
                self.index.next();
            } else {
                self.index.prev();
            }
            let entered = if forward {
                self.enter(BlockIter::seek_to_first)
            } else {
                self.enter(BlockIter::seek_to_last)
            };
            if !entered {
                return;
            }
        }
    }

    /// Positions at the first entry.
    pub fn seek_to_first(&mut self) {
        self.err = None;
        self.index.seek_to_first();
        if self.enter(BlockIter::seek_to_first) {
            self.settle(true);
        }
    }

    /// Positions at the last entry.
    pub fn seek_to_last(&mut self) {
        self.err = None;
        self.index.seek_to_last();
        if self.enter(BlockIter::seek_to_last) {
            self.settle(false);
        }
    }

    /// Positions at the first entry >= `target` (an internal key).
    pub fn seek(&mut self, target: &[u8]) {
        self.err = None;
        self.index.seek(target);
        if self.enter(|d| d.seek(target)) {
            self.settle(true);
        }
    }

    /// Moves to the next entry.
    pub fn next(&mut self) {
        if let Some(d) = self.data.as_mut() {
            d.next();
        }
        self.check_data();
        self.settle(true);
    }

    /// Moves to the previous entry.
    pub fn prev(&mut self) {
        if let Some(d) = self.data.as_mut() {
            d.prev();
        }
        self.check_data();
        self.settle(false);
    }
}
