//! # strata-log: a Kafka-like segmented log (not built yet)
//!
//! Partitions made of segment files with offset and time indexes, retention
//! by size and time, key compaction, truncation and idempotent-producer state;
//! the log's own metadata lives in the LSM ([`strata_lsm`]). The segment
//! format will be documented in docs/segment.md.

pub use strata_lsm as lsm;
