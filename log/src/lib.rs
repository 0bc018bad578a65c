//! # strata-log: a Kafka-like segmented log
//!
//! A topic has partitions; a partition ([`Partition`]) is a directory of
//! segments named by base offset: `<base>.log` holds record batches back to
//! back ([`batch`]: Kafka's v2 format byte for byte, CRC-32C from the
//! attributes on, the fields outside the CRC checked by the batch's
//! position, compressed bodies stored as sent), `<base>.index` maps offsets to file
//! positions sparsely (an entry every `index.interval.bytes`) and
//! `<base>.timeindex` maps timestamps to offsets. Sealed segments' indexes
//! are memory-mapped (memmap2, through strata-io). Formats: docs/segment.md.
//!
//! Appends go through `strata_io::AppendWriter`, the WAL's append path:
//! buffered by default; with [`ManagerOptions::direct_io`] O_DIRECT (the
//! active segment zero-padded to a page until a roll cuts it), optionally
//! writing behind in 1 MiB chunks ([`ManagerOptions::write_behind`]) and
//! with zeros prepared ahead ([`ManagerOptions::preallocate`]).
//!
//! Everything else a partition knows lives in a Strata LSM database
//! (`<root>/meta`, [`meta`]): topic configurations, log start offsets,
//! recovery points, high watermarks, the leader-epoch cache, producer-state
//! snapshots and consumer-group committed offsets.
//!
//! Guarantees:
//! * An append returns offsets; with `sync` (or `flush.messages=1`), or
//!   after [`Partition::flush`], the batch survives power loss. Unflushed
//!   batches may be lost from the tail, never from the middle; a crash of
//!   the process alone loses none (with `write_behind`, up to 4 MiB of
//!   them per active segment).
//! * Recovery reads every batch past the recovery point (the last flush),
//!   cuts a torn or damaged tail there and deletes what follows; indexes
//!   found missing or inconsistent are rebuilt from the log. A batch that
//!   fails its checksum before the recovery point is reported on read as
//!   [`Error::Corruption`] with file and offset, never served.
//! * `truncate_to` is durable when it returns: nothing past the new end is
//!   read again, even after a crash.
//! * Concurrency: one writer at a time per partition; readers find their
//!   position under the partition's read lock, then copy and check the
//!   batches outside it (reading again if a truncation ran meanwhile), so
//!   an append waits on a reader's index lookup, not on its copy.
//! * Idempotent producers ([`producer`]): a retried batch returns its
//!   original offsets; a sequence gap or an old epoch is an error; the
//!   state survives restarts (snapshot at roll plus replay).
//! * Retention deletes whole segments by age or total size; a compacted
//!   topic's cleaner keeps the latest record per key, preserving offsets.
//!   [`LogManager`] runs both on a background thread (every 5 minutes by
//!   default, as Kafka's `log.retention.check.interval.ms`).

#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

pub mod batch;
pub mod compression;
pub mod config;
mod error;
pub mod manager;
pub mod meta;
pub mod partition;
pub mod producer;
pub mod segment;

pub use batch::{Batch, Header, ProducerInfo, Record};
pub use config::{CleanupPolicy, LogConfig};
pub use error::{Error, Result};
pub use manager::{LogManager, MaintenanceStats, ManagerOptions, SegmentIo};
pub use partition::{AppendInfo, CleanerStats, Partition, RecoveryReport};
pub use strata_lsm as lsm;
