//! Write stalls: the state recomputed from the tree whenever it changes,
//! and the backpressure a writer meets (RocksDB's triggers: memtables, L0
//! files, pending compaction bytes).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::stats::StallCause;
use super::{Inner, WriteState};
use crate::{Error, Result};

/// Write-stall state, recomputed whenever the tables change; kept in an
/// `AtomicU8` so writers read it without a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Stall {
    None = 0,
    /// Writes are delayed to `delayed_write_rate`.
    L0Slowdown = 1,
    PendingSlowdown = 2,
    /// Writes wait until compaction catches up.
    L0Stop = 3,
    PendingStop = 4,
}

impl Stall {
    pub(super) fn from_u8(b: u8) -> Stall {
        match b {
            1 => Stall::L0Slowdown,
            2 => Stall::PendingSlowdown,
            3 => Stall::L0Stop,
            4 => Stall::PendingStop,
            _ => Stall::None,
        }
    }

    pub(super) fn is_stop(self) -> bool {
        matches!(self, Stall::L0Stop | Stall::PendingStop)
    }

    /// What the statistics count a wait under.
    pub(super) fn cause(self) -> Option<StallCause> {
        match self {
            Stall::None => None,
            Stall::L0Slowdown => Some(StallCause::L0Slowdown),
            Stall::PendingSlowdown => Some(StallCause::PendingSlowdown),
            Stall::L0Stop => Some(StallCause::L0Stop),
            Stall::PendingStop => Some(StallCause::PendingStop),
        }
    }
}

impl Inner {
    /// Recomputes the write-stall state from the tables (RocksDB skips the
    /// L0 and debt triggers when automatic compaction is off).
    pub(super) fn update_stall(&self) {
        let o = &self.opts;
        let state = if !o.auto_compactions {
            Stall::None
        } else {
            let v = self.version.read().clone();
            let l0 = v.levels.first().map_or(0, Vec::len);
            let pending = self.picker.pending_bytes(&v.shape(&HashSet::new()));
            if l0 >= o.level0_stop_writes_trigger {
                Stall::L0Stop
            } else if pending >= o.hard_pending_compaction_bytes_limit {
                Stall::PendingStop
            } else if l0 >= o.level0_slowdown_writes_trigger {
                Stall::L0Slowdown
            } else if pending >= o.soft_pending_compaction_bytes_limit {
                Stall::PendingSlowdown
            } else {
                Stall::None
            }
        };
        self.stall.store(state as u8, Ordering::Release);
    }

    pub(super) fn stall_state(&self) -> Stall {
        Stall::from_u8(self.stall.load(Ordering::Acquire))
    }

    /// Applies backpressure before a write of `bytes` (the caller holds
    /// the write lock, so stalled writers queue behind it).
    pub(super) fn throttle(&self, w: &mut WriteState, bytes: u64, no_slowdown: bool) -> Result<()> {
        if !self.opts.background_threads {
            // Compactions run inline until none is due: the tree never
            // reaches a trigger that would have the writer wait.
            return Ok(());
        }
        loop {
            let state = self.stall_state();
            let Some(cause) = state.cause() else {
                return Ok(());
            };
            let stop = state.is_stop();
            if no_slowdown {
                return Err(Error::WriteStall(format!(
                    "{cause:?}: compaction is behind (L0 files {}, pending {} bytes)",
                    self.version.read().levels.first().map_or(0, Vec::len),
                    self.picker
                        .pending_bytes(&self.version.read().shape(&HashSet::new()))
                )));
            }
            if stop {
                let t0 = Instant::now();
                let mut bg = self.bg.lock();
                while self.stall_state().is_stop() {
                    self.wait_bg(&mut bg)?;
                }
                drop(bg);
                self.stats.stall(cause, t0.elapsed().as_micros() as u64);
                continue;
            }
            // Slowdown: pay for the bytes at `delayed_write_rate`, in
            // sleeps of at least a millisecond (shorter ones are noise).
            w.delay_debt += bytes;
            let rate = self.opts.delayed_write_rate;
            if w.delay_debt.saturating_mul(1000) >= rate {
                let us = w.delay_debt.saturating_mul(1_000_000) / rate;
                w.delay_debt = 0;
                let t0 = Instant::now();
                std::thread::sleep(Duration::from_micros(us));
                self.stats.stall(cause, t0.elapsed().as_micros() as u64);
            }
            return Ok(());
        }
    }
}
