//! Counters shared between the ring thread (the only writer) and handles (readers), and the
//! snapshot type `stats()` returns. Relaxed atomics: each figure is individually exact; a
//! snapshot is not a single instant across figures.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::error::WalError;
use crate::io::BackendKind;

/// Number of log2 latency buckets: bucket i counts latencies in [2^i, 2^(i+1)) µs.
pub const LATENCY_BUCKETS: usize = 32;

/// A log2-bucketed latency histogram in microseconds.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record_us(&self, latency_us: u64) {
        let bucket = (u64::BITS - latency_us.max(1).leading_zeros() - 1) as usize;
        self.buckets[bucket.min(LATENCY_BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    /// Counts per bucket.
    pub fn snapshot(&self) -> [u64; LATENCY_BUCKETS] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }
}

/// The upper bound (µs) of the bucket holding quantile `q` (0..=1) of a bucket snapshot.
pub fn bucket_quantile_us(buckets: &[u64; LATENCY_BUCKETS], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (index, &count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return 1u64 << (index + 1);
        }
    }
    1u64 << LATENCY_BUCKETS
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
    /// Median sync latency (µs, bucket upper bound).
    pub sync_latency_p50_us: u64,
    /// 99th percentile sync latency (µs, bucket upper bound).
    pub sync_latency_p99_us: u64,
    /// Sync latency histogram: bucket i counts [2^i, 2^(i+1)) µs.
    pub sync_latency_buckets: Vec<u64>,
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
        let buckets = self.sync_latency.snapshot();
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
            sync_latency_p50_us: bucket_quantile_us(&buckets, 0.5),
            sync_latency_p99_us: bucket_quantile_us(&buckets, 0.99),
            sync_latency_buckets: buckets.to_vec(),
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

    #[test]
    fn quantiles_come_from_the_right_buckets() {
        let histogram = LatencyHistogram::default();
        for _ in 0..98 {
            histogram.record_us(100); // bucket 6: [64, 128)
        }
        histogram.record_us(5000); // bucket 12
        histogram.record_us(0); // bucket 0
        let buckets = histogram.snapshot();
        assert_eq!(buckets[6], 98);
        assert_eq!(bucket_quantile_us(&buckets, 0.5), 128);
        assert_eq!(bucket_quantile_us(&buckets, 1.0), 8192);
        assert_eq!(bucket_quantile_us(&[0; LATENCY_BUCKETS], 0.5), 0);
    }
}
