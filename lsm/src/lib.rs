//! # strata-lsm: the key-value engine (in progress)
//!
//! A log-structured merge tree over [`strata_wal`]: writes go to the WAL (group
//! commit) and then to a concurrent memtable keyed by user key, sequence number
//! and kind; full memtables are flushed to SSTables; a manifest of version
//! edits records which tables form each level.
//!
//! Built so far: internal keys ([`key`]: user key + 56-bit sequence number +
//! kind, newest version first) and SSTables ([`table`]: prefix-compressed
//! blocks with restart points, a bloom filter, a properties block, an index
//! block and a checksummed footer; every block carries a CRC-32, and any
//! damage is [`Error::Corruption`] naming file and offset). Format:
//! docs/sstable.md. The memtable, the engine (`Db`), the manifest, snapshots
//! and compaction come next (issues #3 and #4).

#![deny(clippy::unwrap_used)]

pub mod batch;
pub mod cache;
pub mod compaction;
mod db;
mod error;
pub mod iter;
pub mod key;
pub mod manifest;
pub mod memtable;
pub mod range_del;
pub mod table;

pub use batch::WriteBatch;
pub use db::{Db, Options, Snapshot, WriteOptions};
pub use error::{Error, Result};
pub use iter::{DbIterator, ReadOptions};
pub use strata_wal as wal;
