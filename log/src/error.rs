use std::path::PathBuf;

/// Result of a log operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the segmented log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Io(#[from] strata_io::Error),
    /// The metadata store (the LSM) failed.
    #[error("metadata store: {0}")]
    Meta(#[from] strata_lsm::Error),
    /// Bytes on disk are damaged.
    #[error("corrupt {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The directory was written in a format this build does not read.
    #[error("unsupported on-disk format: {0}")]
    UnsupportedFormat(String),
    /// A batch handed in does not decode or breaks a rule.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// An offset outside the log.
    #[error("offset {offset} is out of range: the log holds [{start}, {end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// Log start offset.
        start: u64,
        /// Log end offset.
        end: u64,
    },
    /// The producer's epoch is older than one the log has seen: a newer
    /// instance of the producer fenced it.
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        /// Producer id.
        producer_id: i64,
        /// The epoch of the request.
        epoch: i16,
        /// The epoch the log holds.
        current: i16,
    },
    /// A batch's first sequence number is not the next one expected.
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {got} out of order, expected {expected}"
    )]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// Producer epoch.
        epoch: i16,
        /// The next sequence the log expects.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// No such topic or partition.
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    /// A bad option or argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A leader epoch older than the newest this partition has seen (Kafka's
    /// FENCED_LEADER_EPOCH): a deposed leader's batch or assignment.
    #[error("leader epoch {epoch} is older than the partition's latest epoch {latest}")]
    StaleEpoch {
        /// The epoch given.
        epoch: i32,
        /// The newest epoch in the leader-epoch cache.
        latest: i32,
    },
    /// A failed fsync or write earlier stopped this partition.
    #[error(transparent)]
    Failed(strata_io::Stopped),
}

impl Error {
    /// The OS error number behind this error, if any (EIO, ENOSPC, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io(e) => e.raw_os_error(),
            Error::Meta(e) => e.raw_os_error(),
            Error::Failed(s) => s.raw_os_error(),
            _ => None,
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
