use std::io;
use std::path::PathBuf;

/// Result of a storage operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the storage layer. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system (or the fault backend imitating it) failed an operation.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation, e.g. "write", "fdatasync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error (its raw errno is kept: EIO, ENOSPC, ...).
        #[source]
        source: io::Error,
    },
    /// `read_exact_at` reached the end of the file.
    #[error("{}: short read at offset {offset}: wanted {wanted} bytes, got {got}", path.display())]
    ShortRead {
        /// The file.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// Bytes requested.
        wanted: usize,
        /// Bytes available.
        got: usize,
    },
    /// A write to an `O_DIRECT` file was not aligned.
    #[error("{}: direct I/O write not aligned to {align}: offset {offset}, length {len}", path.display())]
    Misaligned {
        /// The file.
        path: PathBuf,
        /// Required alignment.
        align: usize,
        /// Offset of the write.
        offset: u64,
        /// Length of the write.
        len: usize,
    },
    /// The fault backend simulated a crash; handles opened before it are dead.
    #[error("{}: handle from before a simulated crash", path.display())]
    Crashed {
        /// The file.
        path: PathBuf,
    },
    /// Another holder has the lock.
    #[error("{}: locked by another process or handle", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A caller passed something unusable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The raw OS error number, if this is an OS error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// True for "no space left on device".
    pub fn is_no_space(&self) -> bool {
        self.raw_os_error() == Some(libc::ENOSPC)
    }

    /// True when the path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A component (a WAL, an engine's background work, a log partition) that
/// stopped accepting writes after an error, as every later call reports it.
/// One type for all, cloneable (each caller gets a copy), keeping the OS
/// error number of the cause: a caller can tell a full disk (ENOSPC) from a
/// failing one (EIO) whichever layer stopped. Nothing is retried after it
/// (a failed fsync may have lost the data it covered); reopening recovers
/// what reached the disk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{component} stopped after an earlier error and accepts no writes until reopened: {reason}"
)]
pub struct Stopped {
    /// What stopped, e.g. "WAL /var/db/wal", "partition events-0".
    pub component: String,
    /// The error that stopped it.
    pub reason: String,
    /// Its OS error number, when it came from the OS.
    pub errno: Option<i32>,
}

impl Stopped {
    /// `component` stopped because of `cause` (with its errno, if any).
    pub fn new(
        component: impl Into<String>,
        cause: &dyn std::fmt::Display,
        errno: Option<i32>,
    ) -> Stopped {
        Stopped {
            component: component.into(),
            reason: cause.to_string(),
            errno,
        }
    }

    /// The OS error number of the cause (EIO, ENOSPC, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }

    /// True when the cause was "no space left on device".
    pub fn is_no_space(&self) -> bool {
        self.errno == Some(libc::ENOSPC)
    }
}
