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
//! * [`replication`]: ISR replication as state machines (replica, broker,
//!   controller on Raft, group coordinator) and the cluster simulator.
//! * [`broker`]: the Kafka-protocol broker that serves them to Kafka
//!   clients, alone or as a node of a cluster.

#![forbid(unsafe_code)]

pub use strata_broker as broker;
pub use strata_io as io;
pub use strata_log as log;
pub use strata_lsm as lsm;
pub use strata_replication as replication;
pub use strata_wal as wal;
