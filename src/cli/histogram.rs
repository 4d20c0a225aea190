//! The latency histogram of `load`: an `hdrhistogram` of nanoseconds with two significant
//! digits (any recorded value is known within 1 %, whatever the number of samples), plus the
//! exact maximum. One per publisher task (the histogram is not `Sync`), merged at the end.
//! Owns no I/O.

use std::time::Duration;

/// Significant decimal digits kept by the histogram.
const SIGNIFICANT_DIGITS: u8 = 2;

/// Latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    histogram_ns: hdrhistogram::Histogram<u64>,
    /// The largest value recorded, exactly.
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        // Auto-resizing: it grows to the largest value recorded, so nothing saturates.
        let histogram_ns = hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS)
            .expect("2 significant digits is within hdrhistogram's 0..=5");
        Histogram {
            histogram_ns,
            max_ns: 0,
        }
    }
}

impl Histogram {
    /// Records one latency (saturating at 2^63 ns, about 292 years).
    pub fn record(&mut self, latency: Duration) {
        let value_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resize makes every value up to 2^63 recordable; only larger ones saturate.
        // (`saturating_record` would clamp to the current size instead of growing.)
        if self.histogram_ns.record(value_ns).is_err() {
            self.histogram_ns.saturating_record(value_ns);
        }
        self.max_ns = self.max_ns.max(value_ns);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        // Both auto-resize, so the sum cannot fall out of range.
        let _ = self.histogram_ns.add(&other.histogram_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Samples recorded.
    pub fn samples(&self) -> u64 {
        self.histogram_ns.len()
    }

    /// The value at quantile `q` (0..=1), in nanoseconds, within 1 %; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.histogram_ns.is_empty() {
            return 0;
        }
        // hdrhistogram answers with the top of the value's bucket; the true value is never
        // above the largest one seen.
        self.histogram_ns
            .value_at_quantile(q.clamp(0.0, 1.0))
            .min(self.max_ns)
    }

    /// The largest value recorded, exactly.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_one_percent(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) as f64 <= expected as f64 * 0.01
    }

    #[test]
    fn quantiles_follow_the_samples() {
        let mut histogram = Histogram::default();
        for micros in 1..=1000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let mut other = Histogram::default();
        other.record(Duration::from_millis(50));
        histogram.merge(&other);
        assert_eq!(histogram.samples(), 1001);
        for (q, expected_ns) in [(0.5, 501_000), (0.99, 991_000), (1.0, 50_000_000)] {
            let actual = histogram.quantile_ns(q);
            assert!(
                within_one_percent(actual, expected_ns),
                "q {q}: {actual} ns, expected {expected_ns}"
            );
        }
        assert_eq!(histogram.max_ns(), 50_000_000);
        assert_eq!(Histogram::default().quantile_ns(0.5), 0);
    }

    #[test]
    fn values_across_the_whole_range_keep_their_precision() {
        // From 1 ns to about 9 hours: each alone in a histogram comes back within 1 %.
        let mut value_ns = 1u64;
        while value_ns < 1 << 45 {
            for probe in [value_ns, value_ns + value_ns / 3, value_ns * 2 - 1] {
                let mut histogram = Histogram::default();
                histogram.record(Duration::from_nanos(probe));
                let back = histogram.quantile_ns(0.5);
                assert!(within_one_percent(back, probe), "{probe} -> {back}");
            }
            value_ns *= 2;
        }
    }

    #[test]
    fn a_million_samples_and_more_all_count() {
        // The benchmarks' previous recorder stopped at 2^20 samples: the tail after them was
        // lost. Every sample must count here.
        let mut histogram = Histogram::default();
        let fast = (1u64 << 20) + 10;
        for _ in 0..fast {
            histogram.record(Duration::from_micros(10));
        }
        for _ in 0..fast {
            histogram.record(Duration::from_millis(10));
        }
        assert_eq!(histogram.samples(), 2 * fast);
        assert!(within_one_percent(histogram.quantile_ns(0.75), 10_000_000));
        assert!(within_one_percent(histogram.quantile_ns(0.25), 10_000));
    }
}
