//! The broker's one error type. Errors stay typed to the edge: a log
//! failure is a [`Error::Log`], a socket or thread failure an
//! [`Error::Io`] naming what was being done, a bad setting an
//! [`Error::Config`]; none becomes a string on the way.

/// Errors of the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad setting or flag value (the message names it).
    #[error("{0}")]
    Config(String),
    /// The segmented log failed (I/O, a failed fsync, corruption).
    #[error("log: {0}")]
    Log(#[from] strata_log::Error),
    /// The replication core's durable state (the controller quorum's
    /// log) failed to open or decode.
    #[error("controller quorum: {0}")]
    Replication(#[from] strata_replication::Error),
    /// The data directory holds another layout than this node runs (a
    /// single node's topics under a cluster node, or the reverse, or the
    /// cluster layout of an earlier version): nothing is migrated.
    #[error("{0}")]
    DataDir(String),
    /// An operating-system call of the broker itself (binding a socket,
    /// starting a thread).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of a broker operation.
pub type Result<T> = std::result::Result<T, Error>;

/// An [`Error::Io`] maker for `map_err`.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
