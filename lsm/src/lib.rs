//! # strata-lsm: the key-value engine (not built yet)
//!
//! A log-structured merge tree over [`strata_wal`]: writes go to the WAL (group
//! commit) and then to a concurrent memtable keyed by user key, sequence number
//! and kind; full memtables are flushed to SSTables (prefix-compressed blocks
//! with restart points, an index block, bloom filters, a properties block and a
//! checksummed footer); a manifest of version edits records which tables form
//! each level. Leveled and tiered compaction, MVCC snapshots and iterators
//! follow in issues #3 and #4. Formats will be documented in docs/sstable.md
//! and docs/manifest.md.

pub use strata_wal as wal;
