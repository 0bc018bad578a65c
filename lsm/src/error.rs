use std::path::PathBuf;

/// Result of an LSM operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the LSM engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Io(#[from] strata_io::Error),
    /// The write-ahead log failed (its damage is reported as
    /// [`Error::Corruption`] instead, with the segment and offset).
    #[error(transparent)]
    Wal(strata_wal::Error),
    /// Bytes on disk are damaged or not what the format allows.
    #[error("corrupt {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset of the damaged structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A background flush or compaction failed; writes are refused until
    /// a reopen recovers from the WAL and the manifest.
    #[error(transparent)]
    Background(strata_io::Stopped),
    /// The write would have to wait for compaction to catch up and the
    /// caller asked not to (`WriteOptions::no_slowdown`).
    #[error("write stalled: {0}")]
    WriteStall(String),
    /// The database was closed.
    #[error("the database is closed")]
    Closed,
    /// A bad option or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An iterator's source failed with an error other than corruption
    /// (an I/O error while reading a block); the message is the source's.
    #[error("read failed: {0}")]
    ReadFailed(String),
}

impl From<strata_wal::Error> for Error {
    fn from(e: strata_wal::Error) -> Self {
        match e {
            strata_wal::Error::Corruption {
                path,
                offset,
                reason,
            } => Error::Corruption {
                path,
                offset,
                reason,
            },
            e => Error::Wal(e),
        }
    }
}

impl Error {
    /// The OS error number behind this error, if any (EIO, ENOSPC, ...),
    /// through the WAL and a stopped background as well.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            Error::Wal(e) => e.raw_os_error(),
            Error::Background(s) => s.raw_os_error(),
            _ => None,
        }
    }

    /// The same failure for another reader (I/O errors are not `Clone`):
    /// corruption keeps its file and offset, the rest their message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Corruption {
                path,
                offset,
                reason,
            } => Error::Corruption {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            e => Error::ReadFailed(e.to_string()),
        }
    }

    pub(crate) fn corruption(
        path: &std::path::Path,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }
}
