//! # strata-replication: ISR replication of the log (not built yet)
//!
//! Leader/follower fetch, high watermark, acks and min in-sync replicas,
//! leader epochs as fencing tokens, follower truncation by epoch, leader
//! election and phi-accrual failure detection, written as step functions over
//! events so the same code runs over TCP and over a seeded simulated network.
//! The wire format will be documented in docs/replication.md.

#![forbid(unsafe_code)]

pub use strata_log as log;
