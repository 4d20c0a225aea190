//! Per-operation latencies and their percentiles (criterion reports means and confidence
//! intervals, not p99.9). Each publisher records into its own `hdrhistogram` (not `Sync`, so
//! one per publisher, nothing shared while measuring); the histograms are merged once after
//! the run. Every sample counts, however long the run: memory depends on the range of values,
//! not on their number.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Significant decimal digits kept: any recorded value is known within 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram_ns: Histogram<u64>,
    /// The largest sample, exactly (the histogram knows it only within its precision).
    max_ns: u64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        // Auto-resizing from 1 ns: it grows to cover whatever is recorded and never saturates.
        let histogram_ns = Histogram::new(SIGNIFICANT_DIGITS)
            .expect("3 significant digits is within hdrhistogram's 0..=5");
        LatencyRecorder {
            histogram_ns,
            max_ns: 0,
        }
    }
}

impl LatencyRecorder {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.record_n(latency, 1);
    }

    /// Records `count` operations that each took `latency` (a batch's events).
    pub fn record_n(&mut self, latency: Duration, count: u64) {
        let value_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // Auto-resize makes every value up to 2^63 recordable; only larger ones saturate.
        // (`saturating_record_n` would clamp to the current size instead of growing.)
        if self.histogram_ns.record_n(value_ns, count).is_err() {
            self.histogram_ns.saturating_record_n(value_ns, count);
        }
        self.max_ns = self.max_ns.max(value_ns);
    }

    /// Adds another recorder's samples to this one.
    pub fn merge(&mut self, other: LatencyRecorder) {
        // Both auto-resize, so adding cannot run out of range.
        let _ = self.histogram_ns.add(&other.histogram_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Samples recorded.
    pub fn samples(&self) -> u64 {
        self.histogram_ns.len()
    }

    /// Percentiles of everything recorded (0 when nothing was).
    pub fn summary(self) -> LatencySummary {
        let histogram = &self.histogram_ns;
        let at = |q: f64| -> f64 {
            if histogram.is_empty() {
                return 0.0;
            }
            // The upper end of the sample's bucket, never above the largest sample seen.
            histogram.value_at_quantile(q).min(self.max_ns) as f64 / 1000.0
        };
        LatencySummary {
            samples: histogram.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: self.max_ns as f64 / 1000.0,
        }
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    /// Samples behind the figures.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}
