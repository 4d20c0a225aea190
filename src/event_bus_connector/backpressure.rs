//! Backpressure hysteresis: when the publish buffer's occupancy crosses the activation
//! threshold (default 70 %) the collector is told to slow down, and when it falls back to
//! the release threshold (default 50 %) it is told it may resume.
//!
//! Pure: no I/O, no channels. The caller feeds every occupancy change to
//! [`Hysteresis::update`] and forwards the signal it returns; the state machine guarantees
//! one signal per crossing and never a release without an activation before it.

/// A change of backpressure state, sent on the connector's backpressure channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackpressureSignal {
    /// Occupancy reached the activation threshold: producers should slow down.
    Activated,
    /// Occupancy fell to the release threshold after an activation: producers may resume.
    Released,
}

/// The two-threshold state machine.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    activate_percent: u8,
    release_percent: u8,
    active: bool,
}

impl Hysteresis {
    /// A monitor that activates at `activate_percent` and releases at `release_percent` of
    /// the limit. Requires `release_percent < activate_percent <= 100` (validated by the
    /// connector's configuration).
    pub fn new(activate_percent: u8, release_percent: u8) -> Hysteresis {
        assert!(
            release_percent < activate_percent && activate_percent <= 100,
            "release threshold below activation threshold, both percentages"
        );
        Hysteresis {
            activate_percent,
            release_percent,
            active: false,
        }
    }

    /// Whether backpressure is currently active.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Feeds the current occupancy; returns the signal to send if a threshold was crossed.
    /// `occupied_bytes` may exceed `limit_bytes` (events spilled to the WAL still count).
    pub fn update(&mut self, occupied_bytes: u64, limit_bytes: u64) -> Option<BackpressureSignal> {
        let scaled = u128::from(occupied_bytes) * 100;
        let limit = u128::from(limit_bytes.max(1));
        if !self.active && scaled >= u128::from(self.activate_percent) * limit {
            self.active = true;
            return Some(BackpressureSignal::Activated);
        }
        if self.active && scaled <= u128::from(self.release_percent) * limit {
            self.active = false;
            return Some(BackpressureSignal::Released);
        }
        None
    }
}

/// Occupancy in whole percent of `limit_bytes`, capped at 100 (upstream's
/// `buffer_usage_percent`).
pub fn usage_percent(occupied_bytes: u64, limit_bytes: u64) -> u8 {
    let percent = u128::from(occupied_bytes) * 100 / u128::from(limit_bytes.max(1));
    u8::try_from(percent.min(100)).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_signal_per_crossing_with_hysteresis() {
        let mut monitor = Hysteresis::new(70, 50);
        let limit = 1000;
        let signals: Vec<_> = [
            0, 600, 699, 700, 800, 2000, 600, 510, 500, 400, 600, 699, 700,
        ]
        .into_iter()
        .filter_map(|occupied| monitor.update(occupied, limit))
        .collect();
        assert_eq!(
            signals,
            [
                BackpressureSignal::Activated,
                BackpressureSignal::Released,
                BackpressureSignal::Activated
            ]
        );
        assert!(monitor.is_active());
    }

    #[test]
    fn never_a_release_without_an_activation() {
        let mut monitor = Hysteresis::new(70, 50);
        for occupied in [0, 10, 500, 0, 690, 0] {
            assert_eq!(monitor.update(occupied, 1000), None);
        }
        assert!(!monitor.is_active());
    }

    #[test]
    fn a_jump_straight_over_both_thresholds_gives_one_signal_each_way() {
        let mut monitor = Hysteresis::new(70, 50);
        assert_eq!(
            monitor.update(u64::MAX, 1),
            Some(BackpressureSignal::Activated)
        );
        assert_eq!(monitor.update(u64::MAX, 1), None);
        assert_eq!(monitor.update(0, 1), Some(BackpressureSignal::Released));
        assert_eq!(monitor.update(0, 1), None);
    }

    #[test]
    fn usage_is_capped_at_one_hundred() {
        assert_eq!(usage_percent(0, 10), 0);
        assert_eq!(usage_percent(7, 10), 70);
        assert_eq!(usage_percent(50, 10), 100);
        assert_eq!(usage_percent(5, 0), 100);
    }
}
