//! The node's flusher: the one thread that fsyncs partitions' logs for
//! the driver, so the thread that steps the state machines never waits
//! for a disk. Each pass takes every request queued so far and fsyncs
//! each partition once (a group commit across partitions and produces),
//! then tells the driver which partitions are durable to where they now
//! are; the driver moves their high watermarks. A failed fsync is fatal
//! for the node (never retried): the driver stops the process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam::channel::{self, Sender};
use strata_log::Partition;

use super::Input;
use crate::error::{io, Result};
use crate::state::Shared;

/// Asks for an fsync of a partition's log.
pub(super) struct FlushRequest {
    pub partition: u32,
    pub log: Arc<Partition>,
}

/// Starts the flusher; requests go in on the returned sender, answers
/// come back to the driver as [`Input::Flushed`] on `done`.
pub(super) fn spawn(done: Sender<Input>, shared: Arc<Shared>) -> Result<Sender<FlushRequest>> {
    let (tx, rx) = channel::unbounded::<FlushRequest>();
    std::thread::Builder::new()
        .name("strata-flusher".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut pass: BTreeMap<u32, Arc<Partition>> = BTreeMap::new();
                pass.insert(first.partition, first.log);
                while let Ok(r) = rx.try_recv() {
                    pass.insert(r.partition, r.log);
                }
                let mut flushed = Vec::with_capacity(pass.len());
                for (id, log) in pass {
                    let t = Instant::now();
                    let res =
                        tracing::debug_span!("flush", partition = id).in_scope(|| log.flush());
                    shared.metrics.fsync.observe(t.elapsed());
                    if let Err(e) = res {
                        let _ = done.send(Input::FlushFailed {
                            partition: id,
                            error: e,
                        });
                        return;
                    }
                    flushed.push(id);
                }
                if done.send(Input::Flushed(flushed)).is_err() {
                    return; // the driver is gone
                }
            }
        })
        .map_err(io("starting the flusher"))?;
    Ok(tx)
}

/// The driver's bookkeeping of flushes: which partitions have a request
/// out, and which were asked again meanwhile.
#[derive(Default)]
pub(super) struct Flushes {
    in_flight: std::collections::BTreeSet<u32>,
    again: std::collections::BTreeSet<u32>,
}

impl Flushes {
    /// Whether a request for `p` should go out now (none in flight);
    /// else it goes out when the one in flight comes back.
    pub fn want(&mut self, p: u32) -> bool {
        if self.in_flight.contains(&p) {
            self.again.insert(p);
            false
        } else {
            self.in_flight.insert(p);
            true
        }
    }

    /// `p` came back; whether to send it again (asked meanwhile).
    pub fn done(&mut self, p: u32) -> bool {
        self.in_flight.remove(&p);
        if self.again.remove(&p) {
            self.in_flight.insert(p);
            true
        } else {
            false
        }
    }
}
