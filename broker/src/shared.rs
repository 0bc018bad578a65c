//! What every layer of a node shares, the cluster driver included: the
//! settings, the logs, the advertised endpoint, the high-watermark
//! notification and the metrics.

use std::time::Instant;

use strata_log::{LogConfig, LogManager, Partition};
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The configuration of a cluster topic's replica logs: the broker's
/// topic defaults (per-topic configs at creation are not replicated
/// yet), compacted for `__consumer_offsets`.
pub(crate) fn replica_log_config(base: &LogConfig, topic: &str) -> LogConfig {
    let mut cfg = base.clone();
    if topic == crate::offsets::TOPIC {
        // Committed offsets: only the newest per key matters. The value
        // is a constant the log's parser takes.
        if let Err(e) = cfg.set("cleanup.policy", "compact") {
            tracing::error!(error = %e, "cleanup.policy=compact refused");
        }
    }
    cfg
}

/// The part of the broker's state the cluster driver sees.
pub struct Shared {
    pub(crate) cfg: ServerConfig,
    pub(crate) logs: LogManager,
    /// The advertised host and port.
    pub(crate) host: String,
    pub(crate) port: i32,
    /// Woken whenever a high watermark moves (long-polling fetches).
    pub(crate) data: Notify,
    pub(crate) start: Instant,
    pub(crate) metrics: Metrics,
}

impl Shared {
    /// Milliseconds on the broker's monotonic clock (group sessions and
    /// rebalances run on it, never on wall time).
    pub(crate) fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// The partition's current leader epoch (the newest in its epoch
    /// cache).
    pub(crate) fn epoch(p: &Partition) -> i32 {
        p.latest_epoch().unwrap_or(0)
    }

    /// Moves the high watermark over what is fsynced; wakes fetches. In
    /// memory: the flusher stores it now and then.
    pub(crate) fn advance_hw(&self, p: &Partition) -> strata_log::Result<()> {
        let durable = p.durable_end_offset();
        if durable > p.high_watermark() {
            p.advance_high_watermark(durable);
            self.data.notify_waiters();
        }
        Ok(())
    }
}
