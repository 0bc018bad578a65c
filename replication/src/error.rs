/// Result of a replication operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the replication core: what the local log refused. The node
/// that gets one stops (as a broker halts on a failed log directory): a
/// failed fsync is never retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local log failed (I/O, a failed fsync, corruption).
    #[error("partition {partition}: {source}")]
    Log {
        /// The partition.
        partition: u32,
        /// What the log said.
        source: strata_log::Error,
    },
    /// A Raft node's durable state does not decode.
    #[error("raft state: {0}")]
    BadRaftState(String),
    /// The controller's durable state does not decode.
    #[error("controller state: {0}")]
    BadControllerState(String),
}
