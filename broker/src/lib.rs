//! # strata-broker: the Kafka-protocol broker
//!
//! One broker that speaks Kafka's wire protocol over the segmented log,
//! so unmodified Kafka clients produce, consume, use consumer groups and
//! administer topics; alone or as one node of a cluster that replicates
//! over TCP with a Raft controller quorum. Protocol and behaviour:
//! docs/kafka-protocol.md; the cluster: docs/cluster.md.
//!
//! ## Layers
//! Each module imports only those below it:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | listener and framing | [`server`] | accept loop, one task per connection, request frames in, answers out, in order |
//! | dispatch | `dispatch` | the one place that names the handlers; unserved APIs get Kafka's answer |
//! | handlers | `handlers::{data, groups, admin, cluster}` | one module per API family; they never import each other |
//! | replica manager | `state`, [`offsets`] | the broker's shared state, the partition lookups every handler uses, committed offsets and group coordination |
//! | cluster driver | [`cluster`] | the replication core's state machines, driven by one thread with real time, sockets and disks |
//! | bottom | [`codes`], [`wire`], [`config`], [`error`], `metrics` | Kafka's error codes, the codec, settings, the error type |
//!
//! ## Threads
//! A tokio runtime runs the accept loop and one task per connection.
//! Disk work (appends, fsyncs, reads, offset commits) runs where it may
//! block (`block_in_place`), so a slow disk never holds the accept loop or
//! other connections' tasks. A fetch that finds too little waits on a
//! notification that the high watermark moved, up to its max_wait_ms. On
//! a single node a flusher thread fsyncs unsynced appends every
//! log.flush.interval.ms and moves the high watermark, which only ever
//! covers fsynced data; in a cluster the replication core moves it.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod cluster;
pub mod codes;
pub mod config;
mod dispatch;
pub mod error;
mod handlers;
mod metrics;
pub mod offsets;
pub mod server;
mod shared;
mod state;
pub mod wire;

pub use config::ServerConfig;
pub use error::{Error, Result};
pub use server::{run, Options};
