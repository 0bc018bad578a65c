//! SSTables: immutable sorted files of internal keys (see docs/sstable.md).
//!
//! ```text
//! data block 0 | ... | data block n-1 | filter block | properties block | index block | footer
//! ```
//! Each block is followed by a 5-byte trailer (compression type, CRC-32).

pub mod block;
pub mod bloom;
mod builder;
pub mod format;
pub mod properties;
mod reader;

pub use builder::{TableBuilder, TableOptions};
pub use reader::{Lookup, PlannedGet, Table, TableIter};
