use std::path::PathBuf;

/// Result of a WAL operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the WAL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Io(#[from] strata_io::Error),
    /// Bytes on disk are damaged where the recovery mode does not allow it.
    #[error("corrupt WAL {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or sync failed; the WAL accepts nothing more. Reopen
    /// it to recover what reached the disk.
    #[error(transparent)]
    Failed(strata_io::Stopped),
    /// A record over the size limit.
    #[error("record of {len} bytes exceeds the {max}-byte limit")]
    RecordTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
    /// A bad option or argument.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl Error {
    /// The OS error number behind this error, if any (EIO, ENOSPC, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            Error::Failed(e) => e.raw_os_error(),
            _ => None,
        }
    }
}
