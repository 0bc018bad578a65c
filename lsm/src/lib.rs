//! # strata-lsm: the key-value engine
//!
//! A log-structured merge tree over [`strata_wal`]. [`Db`] is the engine:
//! a write batch gets consecutive sequence numbers, goes to the WAL, then
//! into a concurrent memtable (crossbeam-skiplist) keyed by internal key
//! (user key, 56-bit sequence number, kind; newest first). Full memtables
//! are flushed in the background to SSTables, which the manifest (version
//! edits over the WAL machinery) records with the WAL position they cover.
//! Reads at a [`Snapshot`] see exactly the writes up to its sequence number;
//! iterators merge memtables and tables and show each live key once.
//!
//! On disk: SSTables ([`table`]: prefix-compressed blocks with restart
//! points, a bloom filter, properties, range tombstones, an index, and a
//! checksummed footer; docs/sstable.md) and the manifest (docs/manifest.md).
//!
//! Guarantees: a write acknowledged with `sync` survives power loss; a batch
//! is all or nothing after a crash; a table joins the database only through
//! a durable manifest edit after its file and directory are fsynced; any
//! damaged block is [`Error::Corruption`] naming file and offset, never
//! wrong data. Tables leave the disk when no version or iterator uses them.
//!
//! Point reads: [`Db::get`] looks in the memtables, then in each table
//! whose key range and bloom filter admit the key, newest first.
//! [`Db::multi_get`] answers a batch of keys the same way, but reads the
//! data blocks that are not cached all at once ([`strata_io::Storage::read_many`]:
//! one io_uring submission for the batch), RocksDB's MultiGet.
//! [`Options::use_direct_reads`] opens tables with O_DIRECT, so only the
//! block cache caches them.
//!
//! Compaction runs on background threads, leveled or tiered
//! ([`CompactionStyle`]; policies in [`picker`]), over levels L0..Ln kept
//! in the manifest. Writers meet backpressure instead of an unbounded
//! tree: too many memtables, L0 files or pending compaction bytes slow
//! them down or make them wait, and [`DbStats`] counts every stall along
//! with per-level sizes, reads and writes and the amplification figures.
//!
//! Reopening is cheap: an open flushes what the WAL replayed to a table and
//! releases the segments, `close` flushes the memtables, and the manifest
//! starts each open from a snapshot, so an open costs a few fsyncs however
//! often the database was opened before. With
//! [`Options::background_threads`] off the engine is deterministic (no
//! threads, no waiting on time: flushes and compactions run inline in the
//! writer), so a crash at the Nth storage operation replays exactly.

#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

pub mod batch;
pub mod cache;
pub mod compaction;
mod db;
mod error;
pub mod iter;
pub mod key;
pub mod manifest;
pub mod memtable;
pub mod picker;
pub mod range_del;
pub mod table;

pub use batch::WriteBatch;
pub use db::{
    CompactionStyle, Db, DbStats, LevelStats, Options, RecoveryInfo, Snapshot, StallStats,
    TableInfo, WriteOptions,
};
pub use error::{Error, Result};
pub use iter::{DbIterator, ReadOptions};
pub use strata_wal as wal;
