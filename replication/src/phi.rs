//! The phi-accrual failure detector (Hayashibara et al., 2004), as Akka and
//! Cassandra use it: instead of "dead after T", a suspicion level
//! `phi = -log10(P(a heartbeat arrives later than now))` from the observed
//! intervals between heartbeats. Intervals are modelled as exponential
//! with the window's mean (Cassandra's choice: robust to the bursty
//! intervals of a loaded network), so `phi = elapsed / mean * log10(e)`.
//! A node is suspected once phi passes a threshold (8: a wrong suspicion
//! about once in 10^8 heartbeats under the model), and never before
//! `min_timeout_ms`, so one lost heartbeat never fences a broker.

use std::collections::VecDeque;

/// Heartbeat history of one node.
#[derive(Clone, Debug)]
pub struct PhiAccrual {
    intervals: VecDeque<u64>,
    window: usize,
    last: Option<u64>,
    /// The expected interval before any is observed.
    first_guess_ms: u64,
}

impl PhiAccrual {
    /// A detector expecting heartbeats every `expected_ms`, keeping the
    /// last `window` intervals.
    pub fn new(expected_ms: u64, window: usize) -> PhiAccrual {
        PhiAccrual {
            intervals: VecDeque::with_capacity(window),
            window: window.max(1),
            last: None,
            first_guess_ms: expected_ms.max(1),
        }
    }

    /// A heartbeat arrived at `now`.
    pub fn heartbeat(&mut self, now: u64) {
        if let Some(last) = self.last {
            if self.intervals.len() == self.window {
                self.intervals.pop_front();
            }
            self.intervals.push_back(now.saturating_sub(last));
        }
        self.last = Some(now.max(self.last.unwrap_or(0)));
    }

    fn mean(&self) -> f64 {
        if self.intervals.is_empty() {
            return self.first_guess_ms as f64;
        }
        let sum: u64 = self.intervals.iter().sum();
        (sum as f64 / self.intervals.len() as f64).max(1.0)
    }

    /// The suspicion level at `now` (0 before the first heartbeat).
    pub fn phi(&self, now: u64) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => {
                let elapsed = now.saturating_sub(last) as f64;
                elapsed / self.mean() * std::f64::consts::LOG10_E
            }
        }
    }

    /// Whether the node is suspected at `now`.
    pub fn suspect(&self, now: u64, threshold: f64, min_timeout_ms: u64) -> bool {
        let Some(last) = self.last else {
            return false;
        };
        now.saturating_sub(last) >= min_timeout_ms && self.phi(now) >= threshold
    }

    /// Time of the last heartbeat.
    pub fn last(&self) -> Option<u64> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_grows_with_silence_and_adapts_to_the_interval() {
        let mut fast = PhiAccrual::new(100, 16);
        let mut slow = PhiAccrual::new(100, 16);
        for i in 0..20 {
            fast.heartbeat(i * 100);
            slow.heartbeat(i * 400);
        }
        let (f_last, s_last) = (1900, 7600);
        // The same silence is far more suspicious from a fast heartbeater.
        assert!(fast.phi(f_last + 1000) > 3.0 * slow.phi(s_last + 1000));
        assert!(fast.phi(f_last + 200) < fast.phi(f_last + 2000));
        assert!(!fast.suspect(f_last + 500, 8.0, 1000));
        assert!(fast.suspect(f_last + 2000, 8.0, 1000));
        // The floor holds even when phi is high.
        assert!(!fast.suspect(f_last + 900, 1.0, 1000));
        assert!(!PhiAccrual::new(100, 4).suspect(10_000, 8.0, 0));
    }
}
