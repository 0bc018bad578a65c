//! # Strata
//!
//! A storage engine and a replicated log, written from scratch. This umbrella
//! crate re-exports the parts, lowest first:
//!
//! * [`io`]: the storage I/O layer (std, io_uring and fault-injecting backends).
//! * [`wal`]: the write-ahead log (checksummed records, group commit, recovery).
//! * [`lsm`]: the key-value engine (memtable, SSTables, manifest, leveled
//!   and tiered compaction, snapshots, iterators, range deletes).
//! * [`log`]: the Kafka-like segmented log (segments and indexes,
//!   retention, key compaction, idempotent producers, leader epochs).
//! * [`replication`]: ISR replication (not written yet: the crate is empty).

#![forbid(unsafe_code)]

pub use strata_io as io;
pub use strata_log as log;
pub use strata_lsm as lsm;
pub use strata_replication as replication;
pub use strata_wal as wal;
