//! WAL configuration: every limit is a named value with its unit, validated once at open.

use std::path::PathBuf;

use super::error::WalError;
use super::format::{BLOCK_BYTES, MAX_FRAME_BYTES, SEGMENT_HEADER_BYTES};
use crate::io::Preallocation;

/// Bytes at the end of every segment that only checkpoint and watermark records may use
/// (at least; the space past the rotation point counts).
pub const CHECKPOINT_RESERVE_BYTES: u64 = 4 * BLOCK_BYTES as u64;

/// Default of [`WalConfig::recycle_segments_max`].
pub const DEFAULT_RECYCLE_SEGMENTS_MAX: usize = 0;

/// Largest accepted [`WalConfig::recycle_segments_max`]: recycled segments still count against
/// `wal_max_bytes`, and one or two are enough to always have one ready.
pub const RECYCLE_SEGMENTS_LIMIT: usize = 8;

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// `fdatasync` after every group write; `append` resolves only after it (the default).
    #[default]
    EveryGroup,
    /// Explicitly weaker: `append` resolves once the group is *written*; an `fdatasync` runs
    /// at most every `sync_interval_ms` (and on `sync`/`close`). A crash can lose what was
    /// acknowledged in the last interval. `stats().durable_sequence` always tells the truth.
    Interval {
        /// Longest time between a write and its sync.
        sync_interval_ms: u64,
    },
}

/// Where each group write starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupStart {
    /// At the write head: the next group rewrites the partly filled last block, its
    /// committed prefix byte for byte. Relies on the device writing each 512-byte sector
    /// atomically (every sector of a torn rewrite is old or new, and both agree on the
    /// prefix). The default: no space is lost to padding (docs/benchmarks.md).
    #[default]
    AfterTail,
    /// On the next block boundary: no acknowledged byte is ever written again, at the cost
    /// of up to one block of zero padding per group (a segment holding small groups fills
    /// much sooner). Readers recognise the zeros between groups as group padding
    /// (docs/format.md §7.2), not damage.
    FreshBlock,
}

/// Which I/O backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BackendChoice {
    /// io_uring when the ring can be created and the filesystem accepts O_DIRECT, else
    /// portable (logged once).
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// Always the portable backend.
    Portable,
    /// The fault-injection model on [`WalConfig::sim_disk`] (tests only: the `testing`
    /// feature; see [`crate::io::sim`]).
    #[cfg(any(test, feature = "testing"))]
    Simulated,
}

/// Configuration of a [`crate::wal::Wal`]. Defaults: 100 MiB segments rotated at 80%, 1 MiB
/// groups, a 4 GiB budget, a sync after every group.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Directory holding the segments (created with mode 0700 if missing).
    pub dir: PathBuf,
    /// Largest size of a segment file (a multiple of 4096).
    pub segment_max_bytes: u64,
    /// Rotation point in percent of `segment_max_bytes`: a group that would take the segment
    /// past it goes to the next segment.
    pub segment_rotate_percent: u8,
    /// Soft cap on the record bytes of one group write (one record may exceed it).
    pub group_max_bytes: usize,
    /// Disk budget: total bytes of segment files (each counted at `segment_max_bytes`).
    /// Appends that need a segment beyond it fail with [`WalError::WalFull`].
    pub wal_max_bytes: u64,
    /// When appends become durable.
    pub sync: SyncPolicy,
    /// Which I/O backend to use.
    pub backend: BackendChoice,
    /// How new segments reserve their space.
    pub preallocation: Preallocation,
    /// Where each group write starts.
    pub group_start: GroupStart,
    /// Segments kept for recycling: a sealed segment whose events a durable checkpoint covers
    /// is, instead of being deleted, kept (at most this many, oldest first) and later renamed
    /// to the next segment number and overwritten, so steady-state group writes overwrite
    /// blocks that were written before instead of converting fresh extents at every sync
    /// (docs/format.md §7.8; docs/benchmarks.md, "One awaiting caller"). 0 turns recycling
    /// off: acknowledged segments are deleted and every new segment is a new file.
    pub recycle_segments_max: usize,
    /// Commands in flight to the ring thread: the channel holds this many and the writer's
    /// own queue this many more; senders wait when both are full (a stalled disk holds
    /// callers back instead of growing memory).
    pub queue_max_commands: usize,
    /// The simulated disk used with [`BackendChoice::Simulated`] (tests only: the `testing`
    /// feature).
    #[cfg(any(test, feature = "testing"))]
    pub sim_disk: Option<crate::io::sim::SimDisk>,
}

impl WalConfig {
    /// The defaults for a directory.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_max_bytes: 100 * 1024 * 1024,
            segment_rotate_percent: 80,
            group_max_bytes: 1024 * 1024,
            wal_max_bytes: 4 * 1024 * 1024 * 1024,
            sync: SyncPolicy::EveryGroup,
            backend: BackendChoice::Auto,
            preallocation: Preallocation::Fallocate,
            group_start: GroupStart::AfterTail,
            queue_max_commands: 64 * 1024,
            recycle_segments_max: DEFAULT_RECYCLE_SEGMENTS_MAX,
            #[cfg(any(test, feature = "testing"))]
            sim_disk: None,
        }
    }

    /// Byte offset past which a segment receives no more events. At least
    /// [`CHECKPOINT_RESERVE_BYTES`] below the end: that reserve is for checkpoint and
    /// watermark records, so a checkpoint can always land without a new segment.
    pub fn segment_rotate_bytes(&self) -> u64 {
        (self.segment_max_bytes / 100 * u64::from(self.segment_rotate_percent))
            .min(self.segment_max_bytes - CHECKPOINT_RESERVE_BYTES)
    }

    /// Bytes of one group buffer: the carried tail block, a full group, one oversized
    /// record and the padding to the next block.
    pub(crate) fn group_buffer_bytes(&self) -> usize {
        SEGMENT_HEADER_BYTES + self.group_max_bytes + MAX_FRAME_BYTES + BLOCK_BYTES
    }

    /// Checks every value; called by `Wal::open`.
    pub fn validate(&self) -> Result<(), WalError> {
        let invalid = |field: &'static str, requirement: &'static str| {
            Err(WalError::InvalidConfig { field, requirement })
        };
        if !self.segment_max_bytes.is_multiple_of(BLOCK_BYTES as u64)
            || self.segment_max_bytes < 64 * 1024
        {
            return invalid("segment_max_bytes", "a multiple of 4096, at least 65536");
        }
        if !(10..=100).contains(&self.segment_rotate_percent) {
            return invalid("segment_rotate_percent", "between 10 and 100");
        }
        if self.group_max_bytes < BLOCK_BYTES || self.group_max_bytes > 64 * 1024 * 1024 {
            return invalid("group_max_bytes", "between 4096 and 64 MiB");
        }
        if self.wal_max_bytes < 2 * self.segment_max_bytes {
            return invalid(
                "wal_max_bytes",
                "at least two segments (2 × segment_max_bytes)",
            );
        }
        if let SyncPolicy::Interval { sync_interval_ms } = self.sync
            && !(1..=60_000).contains(&sync_interval_ms)
        {
            return invalid("sync.sync_interval_ms", "between 1 and 60000");
        }
        #[cfg(any(test, feature = "testing"))]
        if self.backend == BackendChoice::Simulated && self.sim_disk.is_none() {
            return invalid("sim_disk", "set when backend is Simulated");
        }
        if self.recycle_segments_max > RECYCLE_SEGMENTS_LIMIT {
            return invalid("recycle_segments_max", "at most 8");
        }
        if self.queue_max_commands == 0 {
            return invalid("queue_max_commands", "at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rotate_at_80_percent() {
        let config = WalConfig::new("/tmp/x");
        config.validate().unwrap();
        assert_eq!(config.segment_rotate_bytes(), 80 * 1024 * 1024);
    }

    #[test]
    fn every_segment_keeps_a_checkpoint_reserve() {
        let mut config = WalConfig::new("/tmp/x");
        config.segment_max_bytes = 64 * 1024;
        config.segment_rotate_percent = 100;
        config.validate().unwrap();
        assert_eq!(
            config.segment_rotate_bytes(),
            64 * 1024 - CHECKPOINT_RESERVE_BYTES
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let mut config = WalConfig::new("/tmp/x");
        config.segment_max_bytes = 100_000;
        let Err(WalError::InvalidConfig { field, .. }) = config.validate() else {
            panic!("accepted an unaligned segment size");
        };
        assert_eq!(field, "segment_max_bytes");
        let mut config = WalConfig::new("/tmp/x");
        config.wal_max_bytes = config.segment_max_bytes;
        assert!(config.validate().is_err());
        let mut config = WalConfig::new("/tmp/x");
        config.sync = SyncPolicy::Interval {
            sync_interval_ms: 0,
        };
        assert!(config.validate().is_err());
    }
}
