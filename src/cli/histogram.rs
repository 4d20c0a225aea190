//! A fixed-size log-linear latency histogram for `load`: exact below 128 ns, then 128 linear
//! buckets per power of two, so any recorded value is known within 1/128 (< 1%) whatever the
//! number of samples. 7424 counters (58 KiB); one per publisher, merged at the end.

use std::time::Duration;

/// Linear sub-buckets per power of two, as a power of two.
const SUB_BUCKET_BITS: u32 = 7;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values below `SUB_BUCKETS` get one bucket each; above, 128 per power of two up to 2^64.
const BUCKETS: usize = SUB_BUCKETS + (64 - SUB_BUCKET_BITS as usize) * SUB_BUCKETS;

/// Latencies in nanoseconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max_ns: 0,
        }
    }
}

fn bucket_of(value_ns: u64) -> usize {
    if value_ns < SUB_BUCKETS as u64 {
        return value_ns as usize;
    }
    let exponent = u64::BITS - 1 - value_ns.leading_zeros();
    let shift = exponent - SUB_BUCKET_BITS;
    let sub = (value_ns >> shift) as usize - SUB_BUCKETS;
    SUB_BUCKETS + shift as usize * SUB_BUCKETS + sub
}

/// The middle of bucket `index` (exact for the unit buckets).
fn bucket_middle_ns(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let shift = (index - SUB_BUCKETS) / SUB_BUCKETS;
    let sub = (index - SUB_BUCKETS) % SUB_BUCKETS;
    let low = ((SUB_BUCKETS + sub) as u64) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// Records one latency (saturating at 2^64 - 1 ns, about 584 years).
    pub fn record(&mut self, latency: Duration) {
        let value_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(value_ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(value_ns);
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Samples recorded.
    pub fn samples(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), in nanoseconds, within 1%; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                // The true value is in this bucket and never above the maximum seen.
                return bucket_middle_ns(index).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// The largest value recorded, exactly.
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_within_one_percent() {
        let mut value = 1u64;
        while value < u64::MAX / 3 {
            for probe in [value, value + value / 3, value * 2 - 1] {
                let index = bucket_of(probe);
                assert!(index < BUCKETS);
                let middle = bucket_middle_ns(index);
                let error = middle.abs_diff(probe) as f64 / probe as f64;
                assert!(error < 0.01, "{probe} -> {middle}");
            }
            value *= 2;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
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
        let p50 = histogram.quantile_ns(0.5) as f64;
        assert!((p50 - 501_000.0).abs() / 501_000.0 < 0.01, "{p50}");
        let p99 = histogram.quantile_ns(0.99) as f64;
        assert!((p99 - 991_000.0).abs() / 991_000.0 < 0.01, "{p99}");
        let p100 = histogram.quantile_ns(1.0) as f64;
        assert!((p100 - 50e6).abs() / 50e6 < 0.01, "{p100}");
        assert_eq!(histogram.max_ns(), 50_000_000);
        assert_eq!(Histogram::default().quantile_ns(0.5), 0);
    }
}
