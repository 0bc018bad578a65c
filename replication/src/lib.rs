//! # strata-replication: ISR replication of the segmented log
//!
//! Kafka's replication protocol (leader and followers per partition, an
//! in-sync replica set, a controller that elects leaders), written once as
//! state machines with no I/O of their own, no threads and no clock: every
//! input carries the time, outputs are messages (and, for the controller,
//! state to persist). The same code runs in [`sim`], a seeded simulator
//! that owns time, the network and the disks, and in the network server.
//!
//! * [`replica`]: one replica of one partition. Followers fetch from their
//!   log end with their leader epoch and last epoch; the leader answers
//!   with batches, its high watermark, or where the follower diverged
//!   (KIP-320), and the follower truncates by epoch, never to its high
//!   watermark (KIP-101, KIP-279).
//! * [`broker`]: a node: registration (broker epochs, KIP-903),
//!   heartbeats, routing to its replicas.
//! * [`controller`]: registrations, phi-accrual failure detection
//!   ([`phi`]), ISR changes by compare-and-set on the partition epoch,
//!   elections from the ISR, then the Eligible Leader Replicas (KIP-966).
//! * Messages: [`msg`]; between the nodes of a cluster they travel as
//!   [`codec`]'s bytes in Strata's peer frames (docs/cluster.md). Retries:
//!   [`backoff`] (exponential, full jitter).
//! * The controller replicated by Raft ([`raft`], [`quorum`]), as KRaft
//!   does; the simulator runs it too (`controller_voters`).
//! * On disk: the replicas' logs are `strata-log` partitions; the
//!   controller keeps one state file (text records and a CRC-32 line,
//!   replaced by write-temp, fsync, rename, fsync directory; damage is
//!   refused), described in docs/replication.md.
//!
//! Guarantees (docs/replication.md has each rule and the failure it
//! prevents): an acks=all write is acknowledged only once every member of
//! the ISR, at least min.insync.replicas of them, has *fsynced* it, so no
//! number of simultaneous crashes, not even of every node at once, loses
//! it; a leader epoch has one leader; replicas agree on every offset below
//! the high watermark, which never goes back on a leader; a deposed leader
//! is fenced by its epoch.

#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]

pub mod backoff;
pub mod broker;
pub mod codec;
pub mod controller;
mod error;
pub mod group;
pub mod msg;
pub mod phi;
pub mod quorum;
pub mod raft;
pub mod replica;
pub mod sim;

pub use error::{Error, Result};
pub use strata_log as log;
