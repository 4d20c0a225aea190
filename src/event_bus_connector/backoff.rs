//! Reconnect delays: exponential backoff with jitter and a cap.
//!
//! Pure: the caller sleeps; this only computes how long. The jitter source is a small
//! xorshift generator seeded by the caller, so tests are deterministic and many publishers
//! restarted together do not reconnect in lockstep.

use std::time::Duration;

/// Exponential backoff with "equal jitter": attempt n waits a uniformly random time in
/// `[d/2, d]` where `d = min(cap, base × 2ⁿ)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: u64,
    cap_ms: u64,
    attempt: u32,
    rng_state: u64,
}

impl Backoff {
    /// A backoff starting at `base_ms` and never above `cap_ms` (`base_ms ≥ 1`,
    /// `cap_ms ≥ base_ms`, validated by the connector's configuration).
    pub fn new(base_ms: u64, cap_ms: u64, seed: u64) -> Backoff {
        debug_assert!(base_ms >= 1 && cap_ms >= base_ms, "validated configuration");
        Backoff {
            base_ms,
            cap_ms,
            attempt: 0,
            // xorshift must not start at zero.
            rng_state: seed | 1,
        }
    }

    /// Failed attempts since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forgets past failures (after a connection that worked).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling_ms = self
            .base_ms
            .saturating_mul(1u64.checked_shl(self.attempt).unwrap_or(u64::MAX))
            .min(self.cap_ms);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling_ms / 2;
        let jitter = self.next_random() % (ceiling_ms - half + 1);
        Duration::from_millis(half + jitter)
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng_state = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_jittered_within_bounds_and_are_capped() {
        let mut backoff = Backoff::new(100, 30_000, 42);
        let mut ceiling = 100u64;
        for _ in 0..40 {
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay} vs {ceiling}"
            );
            ceiling = (ceiling * 2).min(30_000);
        }
        assert_eq!(backoff.attempts(), 40);
        backoff.reset();
        assert!(backoff.next_delay().as_millis() <= 100);
    }

    #[test]
    fn different_seeds_give_different_sequences() {
        let mut a = Backoff::new(1000, 1000, 1);
        let mut b = Backoff::new(1000, 1000, 2);
        let a: Vec<_> = (0..8).map(|_| a.next_delay()).collect();
        let b: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert_ne!(a, b);
    }
}
