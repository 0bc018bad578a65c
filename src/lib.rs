//! # Strata
//!
//! A storage engine and a replicated log, written from scratch. This umbrella
//! crate re-exports the parts, lowest first:
//!
//! * [`io`]: the storage I/O layer (std, io_uring and fault-injecting backends).
//! * [`wal`]: the write-ahead log (checksummed records, group commit, recovery).
//! * [`lsm`]: the key-value engine (in progress).
//! * [`log`]: the segmented log (in progress).
//! * [`replication`]: ISR replication (in progress).

pub use strata_io as io;
pub use strata_log as log;
pub use strata_lsm as lsm;
pub use strata_replication as replication;
pub use strata_wal as wal;
