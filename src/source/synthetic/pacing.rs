//! Rate control for the synthetic source: how many events are due at a given time since
//! the source started, and how long to wait for the next one.
//!
//! Pure (elapsed durations in, counts and durations out). Event k (from 0) is due k / rate
//! seconds after the start, so the average rate holds over any long window. A consumer
//! that falls behind by more than one batch does not get an unbounded burst afterwards:
//! the slots it could not take are forgiven and counted (no event is lost, since events
//! are only generated when taken).

use std::num::NonZeroU64;
use std::time::Duration;

const NANOS_PER_S: u128 = 1_000_000_000;

/// Paces events at a fixed rate, or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacer {
    /// `None`: as fast as the consumer takes them.
    events_per_s: Option<NonZeroU64>,
    max_batch_events: u64,
    /// Slots used so far: events handed out plus slots forgiven.
    next_slot: u64,
    emitted: u64,
}

impl Pacer {
    /// A pacer at `events_per_s` (`None`: unpaced) handing out at most `max_batch_events`
    /// (> 0) at a time.
    pub fn new(events_per_s: Option<NonZeroU64>, max_batch_events: u64) -> Self {
        assert!(
            max_batch_events > 0,
            "validated by the source configuration"
        );
        Pacer {
            events_per_s,
            max_batch_events,
            next_slot: 0,
            emitted: 0,
        }
    }

    /// Events handed out so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Slots skipped because the consumer was more than a batch behind.
    pub fn forgiven(&self) -> u64 {
        self.next_slot - self.emitted
    }

    /// How long after `elapsed` the next event is due (zero: now).
    pub fn wait(&self, elapsed: Duration) -> Duration {
        let Some(rate) = self.events_per_s else {
            return Duration::ZERO;
        };
        let rate = u128::from(rate.get());
        let due_ns = (u128::from(self.next_slot) * NANOS_PER_S).div_ceil(rate);
        let due = Duration::from_nanos(u64::try_from(due_ns).unwrap_or(u64::MAX));
        due.saturating_sub(elapsed)
    }

    /// Takes the events due at `elapsed` (at most one batch; possibly none) and returns
    /// how many the caller must now generate.
    pub fn take(&mut self, elapsed: Duration) -> u64 {
        let Some(rate) = self.events_per_s else {
            self.next_slot += self.max_batch_events;
            self.emitted += self.max_batch_events;
            return self.max_batch_events;
        };
        let slots_due = elapsed.as_nanos().saturating_mul(u128::from(rate.get())) / NANOS_PER_S + 1;
        let slots_due = u64::try_from(slots_due).unwrap_or(u64::MAX);
        let mut available = slots_due.saturating_sub(self.next_slot);
        if available > self.max_batch_events {
            self.next_slot += available - self.max_batch_events;
            available = self.max_batch_events;
        }
        self.next_slot += available;
        self.emitted += available;
        available
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(events_per_s: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(events_per_s)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn events_come_due_at_the_rate() {
        let mut pacer = Pacer::new(rate(100), 1000);
        assert_eq!(pacer.take(ms(0)), 1, "the first event is due at once");
        assert_eq!(pacer.take(ms(5)), 0);
        assert_eq!(pacer.wait(ms(5)), ms(5));
        assert_eq!(pacer.take(ms(10)), 1);
        assert_eq!(pacer.take(ms(1000)), 99, "slots up to 1 s: 101 in all");
        assert_eq!(pacer.emitted(), 101);
        assert_eq!(pacer.wait(ms(1000)), ms(10));
    }

    #[test]
    fn a_slow_consumer_gets_one_batch_and_the_rest_is_forgiven() {
        let mut pacer = Pacer::new(rate(1000), 50);
        assert_eq!(pacer.take(ms(1000)), 50);
        assert_eq!(pacer.forgiven(), 951);
        assert_eq!(pacer.take(ms(1000)), 0, "no burst after the batch");
        assert_eq!(pacer.wait(ms(1000)), ms(1));
    }

    #[test]
    fn unpaced_hands_out_whole_batches_at_once() {
        let mut pacer = Pacer::new(None, 64);
        assert_eq!(pacer.wait(ms(0)), Duration::ZERO);
        assert_eq!(pacer.take(ms(0)), 64);
        assert_eq!(pacer.take(ms(0)), 64);
        assert_eq!(pacer.emitted(), 128);
        assert_eq!(pacer.forgiven(), 0);
    }

    #[test]
    fn huge_rates_and_times_do_not_overflow() {
        let mut pacer = Pacer::new(rate(u64::MAX), 10);
        assert_eq!(pacer.take(Duration::MAX), 10);
        assert_eq!(pacer.wait(Duration::MAX), Duration::ZERO);
    }
}
