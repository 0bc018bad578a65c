//! Open-loop load for the latency benchmarks (`wal-bench --rate`,
//! `logbench produce --throughput`): operation `k` of a run at `rate` per
//! second has an intended start of `start + k / rate`, and its latency is
//! measured from that intended start, not from when it was issued. A
//! stall therefore counts against every operation queued behind it, as
//! wrk2 and HdrHistogram's expected-interval correction count it; a closed
//! loop (the next operation issued when the last returns) would hide the
//! stall in a single slow sample ("coordinated omission").
//!
//! An operation is never issued before it is due; one that is late (the
//! previous ones ran long) is issued at once.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::{CliError, Result};

/// How long before an operation is due its thread stops sleeping and
/// spins, at most.
const SPIN: Duration = Duration::from_micros(30);

/// The share of one core all of a run's spinning may take. Spinning 30 us
/// before each of 65,000 appends a second would take about two cores, on
/// a 2-core machine all the CPU the measured I/O path needs (it raised
/// the median P50 of 16 appenders 1.4x on std and 2.3x on io_uring:
/// BENCHMARKS.md), so at high rates each wait spins less and sleeps more.
const SPIN_CPU: f64 = 0.25;

/// Sets this thread's timer slack to the minimum, so its sleeps end close
/// to when they were asked to.
pub fn precise() {
    if !strata_io::precise_timers() {
        tracing::debug!("timer slack unchanged: sleeps may end up to 50 us late");
    }
}

/// The intended start times of a run at a fixed rate.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
    spin: Duration,
}

impl Schedule {
    /// A schedule of `rate` operations per second from now.
    pub fn new(rate: f64) -> Schedule {
        Schedule {
            start: Instant::now(),
            interval_ns: 1e9 / rate,
            spin: SPIN.min(Duration::from_secs_f64(SPIN_CPU / rate)),
        }
    }

    /// When operation `k` is due.
    pub fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_nanos((k as f64 * self.interval_ns) as u64)
    }

    /// Sleeps until operation `k` is due (not at all if it is late) and
    /// returns its due time, from which its latency is measured. The last
    /// stretch is spun, since a sleeping thread wakes tens of
    /// microseconds late and that delay would count as the operation's
    /// (up to 30 us, less at rates where spinning would eat the CPU).
    /// Call [`precise`] once per thread first.
    pub fn wait(&self, k: u64) -> Instant {
        let due = self.due(k);
        let now = Instant::now();
        if due > now + self.spin {
            std::thread::sleep(due - now - self.spin);
        }
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        due
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }
}

/// A latency histogram in nanoseconds, up to ten minutes.
pub fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .map_err(|e| CliError::Usage(format!("histogram: {e}")))
}

/// `P50 P99 P99.9 P99.99 max`, in microseconds, of a nanosecond histogram.
pub fn percentiles_us(h: &Histogram<u64>) -> [f64; 5] {
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
    [
        q(0.5),
        q(0.99),
        q(0.999),
        q(0.9999),
        h.max() as f64 / 1000.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_due_at_even_intervals_from_the_start() {
        let s = Schedule::new(1000.0);
        assert_eq!(s.due(0), s.start());
        assert_eq!(s.due(1000) - s.start(), Duration::from_secs(1));
        assert_eq!(s.due(3) - s.due(2), Duration::from_millis(1));
    }

    #[test]
    fn spinning_takes_at_most_a_quarter_of_a_core_in_all() {
        // One wait per operation: rate x spin is the CPU spun per second.
        for rate in [100.0, 5_000.0, 65_000.0, 1_000_000.0] {
            let s = Schedule::new(rate);
            assert!(s.spin <= SPIN);
            assert!(rate * s.spin.as_secs_f64() <= SPIN_CPU + 1e-9, "{rate}/s");
        }
        // Low rates keep the full spin, so their sleeps' late wake-ups
        // do not count as latency.
        assert_eq!(Schedule::new(5_000.0).spin, SPIN);
    }

    #[test]
    fn a_late_operation_counts_from_its_due_time_not_its_issue() {
        let s = Schedule::new(1_000_000.0);
        std::thread::sleep(Duration::from_millis(5));
        // Operation 10 was due 10 us after the start, long past: its
        // latency includes the 5 ms it waited to be issued.
        let issued = Instant::now();
        let due = s.wait(10);
        assert_eq!(due, s.due(10));
        assert!(due < issued);
        assert!(due.elapsed() >= Duration::from_millis(5));
    }
}
