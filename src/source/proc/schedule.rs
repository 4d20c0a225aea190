//! When to poll next: the poll interval, stretched while backpressure is active.
//!
//! Pure (durations in, durations out) so the policy is tested without a clock. Like
//! procmond, the interval is multiplied by a factor (1.5 by default) while the consumer
//! reports backpressure, and returns to normal when it is released.

use std::time::Duration;

use crate::source::error::SourceError;

/// procmond's slow-down factor while backpressure is active.
pub const DEFAULT_BACKPRESSURE_FACTOR: f64 = 1.5;

/// Longest accepted `poll_interval_ms` (one day): keeps every product finite.
pub const MAX_POLL_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;

/// Largest accepted backpressure factor.
pub const MAX_BACKPRESSURE_FACTOR: f64 = 100.0;

/// The polling policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSchedule {
    poll_interval: Duration,
    backpressure_factor: f64,
    slowed: bool,
}

impl PollSchedule {
    /// A schedule polling every `poll_interval_ms`, `backpressure_factor` times slower while
    /// slowed down.
    pub fn new(poll_interval_ms: u64, backpressure_factor: f64) -> Result<Self, SourceError> {
        if poll_interval_ms == 0 || poll_interval_ms > MAX_POLL_INTERVAL_MS {
            return Err(SourceError::InvalidConfig {
                field: "poll_interval_ms",
                requirement: "between 1 and 86400000 (one day)",
            });
        }
        if !(1.0..=MAX_BACKPRESSURE_FACTOR).contains(&backpressure_factor) {
            return Err(SourceError::InvalidConfig {
                field: "backpressure_factor",
                requirement: "a number from 1.0 to 100.0",
            });
        }
        Ok(PollSchedule {
            poll_interval: Duration::from_millis(poll_interval_ms),
            backpressure_factor,
            slowed: false,
        })
    }

    /// Turns the slow-down on (backpressure activated) or off (released). Returns whether
    /// the state changed.
    pub fn slow_down(&mut self, active: bool) -> bool {
        let changed = self.slowed != active;
        self.slowed = active;
        changed
    }

    /// Whether polling is currently slowed down.
    pub fn is_slowed(&self) -> bool {
        self.slowed
    }

    /// The configured (normal) interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The interval in force now: the normal one, or × the factor while slowed down.
    pub fn current_interval(&self) -> Duration {
        if self.slowed {
            // Finite and in range: both operands are bounded at construction.
            self.poll_interval.mul_f64(self.backpressure_factor)
        } else {
            self.poll_interval
        }
    }

    /// How long to wait before the next poll, given the time since the previous poll
    /// *started* (`None`: there was none, poll now). Polls are spaced by the current
    /// interval from start to start; a poll that overran is followed at once, never by a
    /// burst of catch-up polls.
    pub fn delay_before_next_poll(&self, since_last_poll_start: Option<Duration>) -> Duration {
        match since_last_poll_start {
            None => Duration::ZERO,
            Some(elapsed) => self.current_interval().saturating_sub(elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backpressure_stretches_the_interval_by_the_factor_and_release_restores_it() {
        let mut schedule = PollSchedule::new(1000, DEFAULT_BACKPRESSURE_FACTOR).unwrap();
        assert_eq!(schedule.current_interval(), Duration::from_millis(1000));
        assert!(schedule.slow_down(true));
        assert!(
            !schedule.slow_down(true),
            "a repeated signal is not a change"
        );
        assert!(schedule.is_slowed());
        assert_eq!(schedule.current_interval(), Duration::from_millis(1500));
        assert!(schedule.slow_down(false));
        assert_eq!(schedule.current_interval(), Duration::from_millis(1000));
    }

    #[test]
    fn the_delay_counts_from_the_previous_poll_start() {
        let mut schedule = PollSchedule::new(200, 1.5).unwrap();
        assert_eq!(schedule.delay_before_next_poll(None), Duration::ZERO);
        let since = |ms| Some(Duration::from_millis(ms));
        assert_eq!(
            schedule.delay_before_next_poll(since(50)),
            Duration::from_millis(150)
        );
        assert_eq!(schedule.delay_before_next_poll(since(200)), Duration::ZERO);
        assert_eq!(schedule.delay_before_next_poll(since(5000)), Duration::ZERO);
        schedule.slow_down(true);
        assert_eq!(
            schedule.delay_before_next_poll(since(50)),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        assert!(PollSchedule::new(0, 1.5).is_err());
        assert!(PollSchedule::new(MAX_POLL_INTERVAL_MS + 1, 1.5).is_err());
        for factor in [0.5, f64::NAN, f64::INFINITY, 1000.0, -1.0] {
            assert!(PollSchedule::new(100, factor).is_err(), "{factor}");
        }
        let extreme = PollSchedule::new(MAX_POLL_INTERVAL_MS, MAX_BACKPRESSURE_FACTOR);
        let mut extreme = extreme.unwrap();
        extreme.slow_down(true);
        assert_eq!(
            extreme.current_interval(),
            Duration::from_millis(MAX_POLL_INTERVAL_MS * 100)
        );
    }
}
