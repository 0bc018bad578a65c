//! Kafka's error codes and the small conversions every layer of the
//! broker uses (names, topic ids, a log error's code). The bottom of the
//! broker: it imports nothing of the broker's own.

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use strata_log::Error as LogError;

/// Kafka error codes the broker answers with.
pub mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_CONFIG: i16 = 40;
    pub const INVALID_REQUEST: i16 = 42;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const SECURITY_DISABLED: i16 = 54;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 75;
    pub const OFFSET_NOT_AVAILABLE: i16 = 78;
    pub const INVALID_RECORD: i16 = 87;
}

pub fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn topic_name(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A stable topic id (Metadata v10+) derived from the name: a single
/// node has no controller to hand out ids, and clients only compare them.
pub fn topic_id(name: &str) -> uuid::Uuid {
    let a = crc32c::crc32c(name.as_bytes());
    let b = crc32c::crc32c_append(a, b"strata-topic-id");
    let c = crc32c::crc32c_append(b, name.as_bytes());
    let d = crc32c::crc32c_append(c, b"v1");
    uuid::Uuid::from_u128(
        (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d),
    )
}

/// The Kafka error code of a log error.
pub fn log_code(e: &LogError) -> i16 {
    match e {
        LogError::UnknownTopicOrPartition(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        LogError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        LogError::InvalidBatch(_) => code::CORRUPT_MESSAGE,
        LogError::ProducerFenced { .. } => code::INVALID_PRODUCER_EPOCH,
        LogError::OutOfOrderSequence { .. } => code::OUT_OF_ORDER_SEQUENCE_NUMBER,
        LogError::StaleEpoch { .. } => code::FENCED_LEADER_EPOCH,
        LogError::InvalidArgument(_) => code::INVALID_REQUEST,
        LogError::Io(_) | LogError::Failed(_) | LogError::Corruption { .. } => {
            code::KAFKA_STORAGE_ERROR
        }
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}
