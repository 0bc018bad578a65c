//! Exponential backoff with full jitter (AWS's "Exponential Backoff And
//! Jitter"): the n-th retry waits a uniform time in `[0, min(cap, base *
//! 2^n)]`, so retrying nodes spread out instead of retrying in lockstep.
//! The randomness comes from the caller (the simulator's seeded generator
//! or the server's), which keeps the state machines deterministic.

/// Backoff parameters and the retry count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First ceiling, in milliseconds.
    pub base_ms: u64,
    /// Largest ceiling.
    pub cap_ms: u64,
    /// Retries so far.
    pub attempt: u32,
}

impl Backoff {
    /// A backoff that has not retried yet.
    pub fn new(base_ms: u64, cap_ms: u64) -> Backoff {
        Backoff {
            base_ms,
            cap_ms,
            attempt: 0,
        }
    }

    /// The wait before the next retry, drawn with `random` (any 64 random
    /// bits), and one more attempt counted.
    pub fn next_delay(&mut self, random: u64) -> u64 {
        let ceiling = self
            .base_ms
            .saturating_mul(1u64 << self.attempt.min(32))
            .min(self.cap_ms)
            .max(1);
        self.attempt = self.attempt.saturating_add(1);
        random % (ceiling + 1)
    }

    /// Forgets the retries (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_delays_stay_under_them() {
        let mut b = Backoff::new(10, 100);
        let mut rng = strata_io::rng::Rng::new(1);
        let mut max_seen = [0u64; 6];
        for _ in 0..2000 {
            b.reset();
            for m in max_seen.iter_mut() {
                let d = b.next_delay(rng.next_u64());
                *m = (*m).max(d);
            }
        }
        // Ceilings 10, 20, 40, 80, 100, 100: each reached (nearly), never passed.
        let ceilings = [10, 20, 40, 80, 100, 100];
        for (m, c) in max_seen.iter().zip(ceilings) {
            assert!(*m <= c && *m >= c * 9 / 10, "max {m} for ceiling {c}");
        }
    }
}
