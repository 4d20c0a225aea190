//! Per-operation latency samples and their exact percentiles (criterion reports means and
//! confidence intervals, not p99.9). Each publisher records into its own bounded buffer;
//! the buffers are merged and sorted once after the run.

use std::time::Duration;

use serde::Serialize;

/// Samples kept per recorder: enough for p99.9 to rest on 1000+ samples, small enough that a
/// long run cannot grow memory without bound (later samples are dropped, not the run).
pub const MAX_SAMPLES_PER_RECORDER: usize = 1 << 20;

/// A bounded buffer of latencies in nanoseconds.
#[derive(Debug, Default)]
pub struct LatencyRecorder {
    samples_ns: Vec<u64>,
}

impl LatencyRecorder {
    /// Records one latency (dropped once the buffer is full).
    pub fn record(&mut self, latency: Duration) {
        if self.samples_ns.len() < MAX_SAMPLES_PER_RECORDER {
            self.samples_ns
                .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        }
    }

    /// Moves another recorder's samples into this one.
    pub fn merge(&mut self, other: LatencyRecorder) {
        self.samples_ns.extend(other.samples_ns);
    }

    /// Exact percentiles of everything recorded.
    pub fn summary(mut self) -> LatencySummary {
        self.samples_ns.sort_unstable();
        let samples = &self.samples_ns;
        let at = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let rank = ((samples.len() as f64) * q).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1] as f64 / 1000.0
        };
        LatencySummary {
            samples: samples.len() as u64,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
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
