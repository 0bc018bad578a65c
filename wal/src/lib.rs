//! # strata-wal: the write-ahead log
//!
//! Appends records, numbers them with consecutive LSNs (from 1), makes them
//! durable with group commit, and on open replays them and repairs a torn
//! tail. All I/O goes through [`strata_io`], so every durability claim is
//! tested on the fault-injecting backend.
//!
//! ## On-disk format (full diagrams in docs/wal.md)
//!
//! A WAL is a directory of segment files `<segno:020>.wal`. Each segment
//! starts with a 32-byte header, then is a sequence of 32 KiB blocks
//! (counted from file offset 0) holding fragments:
//!
//! ```text
//! segment header (offset 0):
//! +---------+---------+-----------+----------+--------+
//! | magic 8 | segno 8 | first LSN | reserved | crc32  |   crc32 over bytes 0..28
//! |"STRWAL\0\1"       |     8     |  4 (=0)  |   4    |
//! +---------+---------+-----------+----------+--------+
//! fragment (never crosses a block boundary; < 11 bytes left => zero trailer):
//! +--------+--------+------+-------------+-----------------+
//! | crc32 4| len 2  |type 1| seg tag 4   | payload (len)   |   crc32 over type, tag, len, payload
//! +--------+--------+------+-------------+-----------------+
//! type: 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST (0 never written: zeros = nothing here)
//! seg tag: low 32 bits of the segment number
//! entry (the payload of FULL, or of FIRST+MIDDLE*+LAST joined) = one group commit:
//! +------------------+--------------+---------------+------------------------------+
//! | first LSN varint | count varint | behind varint | count x (varint len, record) |
//! +------------------+--------------+---------------+------------------------------+
//! synced LSN = first LSN - behind (1 <= behind <= first LSN)
//! ```
//!
//! Fixed-width integers are little-endian. An entry larger than the rest of a block
//! is split into FIRST, MIDDLE.. and LAST fragments, so a reader
//! resynchronises at any block boundary, and after damage by trying each
//! byte offset for a fragment whose checksum and segment tag are good.
//!
//! ## Guarantees
//!
//! * `append` returns an LSN once the [`SyncPolicy`] is met; with `Always`
//!   the record survives power loss when `append` returns.
//! * Recovery returns exactly a prefix of what was appended (in the default
//!   mode), containing every record acknowledged as durable.
//! * Segment recycling: a reused file still holds its old records, but their
//!   fragments carry another segment tag, so they read as "end of log"; each
//!   write into a reused file ends with a zeroed fragment header, so a new
//!   entry shorter than an old one never leaves half a fragment to read as
//!   damage. Segment numbers and LSNs never go back.
//! * The synced LSN in each entry says which records were durable before it
//!   was written. A bad record followed by an entry whose synced LSN covers
//!   it is damage to durable data (an error naming file and offset); one
//!   that nothing later vouches for is a torn tail, cut off.
//! * A segment's header is durable before its first record. When a segment
//!   fills, it is fsynced ("sealed") inline under `SyncPolicy::Always` and
//!   in the background otherwise (like a Kafka segment roll), so a crash
//!   may cut a segment that others follow; the synced-LSN rule above decides
//!   whether that is a torn tail (the later segments are dropped) or damage.
//! * A failed write or fsync stops the WAL: it is never retried.

#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

mod error;
pub mod format;
mod reader;
mod segment;
mod writer;

pub use error::{Error, Result};
pub use reader::{dump_segment, recover, Damage, EntryInfo, Recovery, RecoveryMode, SegmentDump};
pub use segment::{segment_path, SegmentFile};
pub use writer::{Preallocate, SyncPolicy, Wal, WalOptions, WalStats};

/// Log sequence number: the position of a record in the log, from 1.
pub type Lsn = u64;
