//! wal placeholder
