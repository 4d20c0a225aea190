//! Counters shared between the ring thread (the only writer) and handles (readers), and the
//! snapshot type `stats()` returns. Relaxed atomics: each figure is individually exact; a
//! snapshot is not a single instant across figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError, TryLockError};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::error::WalError;
use crate::io::BackendKind;

/// Log2 buckets in [`WalStats::sync_latency_buckets`]: bucket i counts latencies in
/// [2^i, 2^(i+1)) µs (bucket 0 also counts 0 µs; the last one everything above).
pub const LATENCY_BUCKETS: usize = 32;

/// Largest latency the histogram tells apart (µs): one hour. Longer ones count as one hour.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// Significant decimal digits kept: a recorded latency is known within 1 %.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

/// A latency histogram in microseconds (`hdrhistogram`, 1 % precision up to
/// [`LATENCY_MAX_US`]) that one thread records into and any thread reads.
///
/// `hdrhistogram::Histogram` is not `Sync`, so it lives behind a lock; but the recording
/// thread is the WAL's ring thread, which must never wait for a reader that a busy scheduler
/// has paused while holding that lock. So there are two halves, and readers go one at a time
/// (the `readers` lock) and hold at most one half at a time: a recorder's `try_lock` on one
/// of the two always succeeds. A snapshot adds both halves. Each half is allocated once, at
/// its full size, so recording never allocates either.
#[derive(Debug)]
pub(crate) struct LatencyHistogram {
    halves: [Mutex<Histogram<u64>>; 2],
    readers: Mutex<()>,
}

fn empty_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_SIGNIFICANT_DIGITS)
        .expect("bounds 1..=3.6e9 with 2 significant digits are valid for hdrhistogram")
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            halves: [
                Mutex::new(empty_latency_histogram()),
                Mutex::new(empty_latency_histogram()),
            ],
            readers: Mutex::new(()),
        }
    }
}

impl LatencyHistogram {
    /// Records one latency (values above [`LATENCY_MAX_US`] count as that). Does not wait
    /// for readers.
    pub fn record_us(&self, latency_us: u64) {
        for half in &self.halves {
            let guard = match half.try_lock() {
                Ok(guard) => Some(guard),
                // A panic while recording leaves a histogram that is still a valid histogram.
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(mut histogram) = guard {
                histogram.saturating_record(latency_us);
                return;
            }
        }
        // Only reachable with more than one recording thread: then waiting is correct.
        let mut histogram = self.halves[0]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        histogram.saturating_record(latency_us);
    }

    /// Everything recorded so far, as one histogram.
    pub fn snapshot(&self) -> Histogram<u64> {
        let _one_reader = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = empty_latency_histogram();
        for half in &self.halves {
            let half = half.lock().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides: adding cannot fall out of range.
            let added = total.add(&*half);
            debug_assert!(added.is_ok(), "halves share the total's bounds");
        }
        total
    }
}

/// Latency quantile `q` (0..=1) of a snapshot in µs, within 1 % (the top of the value's
/// bucket); 0 when empty.
pub(crate) fn latency_quantile_us(histogram: &Histogram<u64>, q: f64) -> u64 {
    if histogram.is_empty() {
        return 0;
    }
    histogram.value_at_quantile(q.clamp(0.0, 1.0))
}

/// A snapshot folded into log2 buckets: bucket i counts [2^i, 2^(i+1)) µs.
pub(crate) fn log2_buckets(histogram: &Histogram<u64>) -> [u64; LATENCY_BUCKETS] {
    let mut buckets = [0u64; LATENCY_BUCKETS];
    for value in histogram.iter_recorded() {
        // Every value in an hdrhistogram bucket has the same log2 once the bucket is narrower
        // than a power of two, which holds from the lowest value on with 2 digits.
        let us = value.value_iterated_to().max(1);
        let bucket = (u64::BITS - us.leading_zeros() - 1) as usize;
        buckets[bucket.min(LATENCY_BUCKETS - 1)] += value.count_at_value();
    }
    buckets
}

/// Live counters.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub events_appended: AtomicU64,
    pub record_bytes: AtomicU64,
    pub device_bytes_written: AtomicU64,
    pub group_writes: AtomicU64,
    pub syncs: AtomicU64,
    pub records_synced: AtomicU64,
    pub next_sequence: AtomicU64,
    pub durable_sequence: AtomicU64,
    pub acked_through: AtomicU64,
    pub segments: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub queued_commands: AtomicU64,
    pub queued_commands_max: AtomicU64,
    pub sync_latency: LatencyHistogram,
    pub write_latency: LatencyHistogram,
    pub poisoned: AtomicBool,
    pub poison: Mutex<Option<WalError>>,
}

impl Shared {
    pub fn poison_error(&self) -> Option<WalError> {
        if !self.poisoned.load(Relaxed) {
            return None;
        }
        self.poison.lock().ok().and_then(|guard| guard.clone())
    }
}

/// A snapshot of a log's counters.
#[derive(Debug, Clone, Serialize)]
pub struct WalStats {
    /// The I/O backend in use.
    pub backend: BackendKind,
    /// Events made durable (or written, under the interval policy) since open.
    pub events_appended: u64,
    /// Bytes of record frames appended since open.
    pub record_bytes: u64,
    /// Bytes sent to the device (whole blocks, tail blocks rewritten).
    pub device_bytes_written: u64,
    /// Group writes issued.
    pub group_writes: u64,
    /// `fdatasync` calls completed.
    pub syncs: u64,
    /// Mean records made durable per sync.
    pub records_per_sync: f64,
    /// Syncs behind the sync latency figures.
    pub sync_latency_samples: u64,
    /// Median sync latency (µs, within 1 %).
    pub sync_latency_p50_us: u64,
    /// 99th percentile sync latency (µs, within 1 %).
    pub sync_latency_p99_us: u64,
    /// 99.9th percentile sync latency (µs, within 1 %).
    pub sync_latency_p999_us: u64,
    /// Longest sync (µs, within 1 %; at most [`LATENCY_MAX_US`]).
    pub sync_latency_max_us: u64,
    /// Sync latency histogram: bucket i counts [2^i, 2^(i+1)) µs.
    pub sync_latency_buckets: Vec<u64>,
    /// Group writes behind the write latency figures.
    pub write_latency_samples: u64,
    /// Median group write latency (µs, within 1 %), as the ring thread sees it: from handing
    /// the write to the backend until its completion is seen, so it includes the wait for
    /// the ring thread to submit the write and to notice its completion.
    pub write_latency_p50_us: u64,
    /// 99th percentile group write latency (µs, within 1 %), measured as the median is.
    pub write_latency_p99_us: u64,
    /// Sequence the next event will get.
    pub next_sequence: u64,
    /// Highest sequence on stable storage (0: none).
    pub durable_sequence: u64,
    /// Highest sequence acknowledged by the broker (newest durable checkpoint).
    pub acked_through: u64,
    /// Segment files in the directory (sealed, active, prepared).
    pub segments: u64,
    /// Segment files deleted since open.
    pub segments_deleted: u64,
    /// Commands the ring thread holds that are not yet in a group (appends, checkpoints,
    /// syncs); it stops taking commands from the channel while this is `queue_max_commands`.
    pub queued_commands: u64,
    /// The highest `queued_commands` since open.
    pub queued_commands_max: u64,
    /// Corrupt regions skipped when the log was opened.
    pub skipped_corrupt_at_open: u64,
    /// Whether the log is poisoned.
    pub poisoned: bool,
}

impl Shared {
    pub fn snapshot(&self, backend: BackendKind, skipped_corrupt_at_open: u64) -> WalStats {
        let syncs = self.syncs.load(Relaxed);
        let latency = self.sync_latency.snapshot();
        let write_latency = self.write_latency.snapshot();
        WalStats {
            backend,
            events_appended: self.events_appended.load(Relaxed),
            record_bytes: self.record_bytes.load(Relaxed),
            device_bytes_written: self.device_bytes_written.load(Relaxed),
            group_writes: self.group_writes.load(Relaxed),
            syncs,
            records_per_sync: if syncs == 0 {
                0.0
            } else {
                self.records_synced.load(Relaxed) as f64 / syncs as f64
            },
            sync_latency_samples: latency.len(),
            sync_latency_p50_us: latency_quantile_us(&latency, 0.5),
            sync_latency_p99_us: latency_quantile_us(&latency, 0.99),
            sync_latency_p999_us: latency_quantile_us(&latency, 0.999),
            sync_latency_max_us: if latency.is_empty() { 0 } else { latency.max() },
            sync_latency_buckets: log2_buckets(&latency).to_vec(),
            write_latency_samples: write_latency.len(),
            write_latency_p50_us: latency_quantile_us(&write_latency, 0.5),
            write_latency_p99_us: latency_quantile_us(&write_latency, 0.99),
            next_sequence: self.next_sequence.load(Relaxed),
            durable_sequence: self.durable_sequence.load(Relaxed),
            acked_through: self.acked_through.load(Relaxed),
            segments: self.segments.load(Relaxed),
            segments_deleted: self.segments_deleted.load(Relaxed),
            queued_commands: self.queued_commands.load(Relaxed),
            queued_commands_max: self.queued_commands_max.load(Relaxed),
            skipped_corrupt_at_open,
            poisoned: self.poisoned.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within_one_percent(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) as f64 <= expected as f64 * 0.01
    }

    #[test]
    fn quantiles_follow_the_recorded_latencies() {
        let histogram = LatencyHistogram::default();
        for us in 1..=1000 {
            histogram.record_us(us);
        }
        histogram.record_us(250_000);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.len(), 1001);
        for (q, expected) in [(0.5, 501), (0.99, 991), (0.999, 1000), (1.0, 250_000)] {
            let actual = latency_quantile_us(&snapshot, q);
            assert!(
                within_one_percent(actual, expected),
                "q {q}: {actual} µs, expected {expected}"
            );
        }
        assert_eq!(
            latency_quantile_us(&LatencyHistogram::default().snapshot(), 0.5),
            0
        );
    }

    #[test]
    fn both_halves_count_and_out_of_range_values_saturate() {
        let histogram = LatencyHistogram::default();
        {
            // A reader holding the first half: the recorder uses the second.
            let _held = histogram.halves[0]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            histogram.record_us(100);
        }
        histogram.record_us(200);
        histogram.record_us(LATENCY_MAX_US * 10);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.len(), 3);
        assert_eq!(histogram.halves[1].lock().map(|h| h.len()).unwrap_or(0), 1);
        assert!(within_one_percent(
            latency_quantile_us(&snapshot, 0.33),
            100
        ));
        assert!(within_one_percent(
            latency_quantile_us(&snapshot, 0.66),
            200
        ));
        let top = latency_quantile_us(&snapshot, 1.0);
        assert!(within_one_percent(top, LATENCY_MAX_US), "{top}");
    }

    #[test]
    fn log2_buckets_count_each_power_of_two() {
        let histogram = LatencyHistogram::default();
        for _ in 0..98 {
            histogram.record_us(100); // bucket 6: [64, 128)
        }
        histogram.record_us(5000); // bucket 12: [4096, 8192)
        histogram.record_us(0); // bucket 0
        histogram.record_us(127); // still bucket 6
        histogram.record_us(128); // bucket 7
        let buckets = log2_buckets(&histogram.snapshot());
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[6], 99);
        assert_eq!(buckets[7], 1);
        assert_eq!(buckets[12], 1);
        assert_eq!(buckets.iter().sum::<u64>(), 102);
    }

    #[test]
    fn snapshots_fill_the_stats_fields() {
        let shared = Shared::default();
        for us in [100, 200, 300, 400] {
            shared.sync_latency.record_us(us);
        }
        let stats = shared.snapshot(BackendKind::Portable, 0);
        assert_eq!(stats.sync_latency_samples, 4);
        assert!(within_one_percent(stats.sync_latency_p50_us, 200));
        assert!(within_one_percent(stats.sync_latency_max_us, 400));
        assert_eq!(stats.sync_latency_buckets.len(), LATENCY_BUCKETS);
        assert_eq!(stats.sync_latency_buckets.iter().sum::<u64>(), 4);
    }
}
