/// Errors of the command-line tool.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the storage layer.
    #[error(transparent)]
    Io(#[from] strata_io::Error),
    /// From the WAL.
    #[error(transparent)]
    Wal(#[from] strata_wal::Error),
    /// From the LSM engine.
    #[error(transparent)]
    Lsm(#[from] strata_lsm::Error),
    /// From the broker (`strata serve`).
    #[error(transparent)]
    Broker(#[from] strata_broker::Error),
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
    /// A local file operation of the tool itself.
    #[error("{what}: {source}")]
    Local {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of a CLI command.
pub type Result<T> = std::result::Result<T, CliError>;
