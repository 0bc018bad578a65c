//! The parts of the `strata` tool that other code reuses: the Kafka wire
//! framing and request decoding of `strata serve` (also driven by the
//! fuzz target `kafka_request` and by `strata kbench`).
//!
//! Design, format and guarantees: docs/kafka-protocol.md.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod wire;
