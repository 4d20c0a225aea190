//! The WAL layer's error type.

use std::io;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything that can go wrong in the WAL, with the operation and path involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// A filesystem operation failed (outside the write path; the log is still usable).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A write or sync failed earlier: nothing written since the last successful sync can be
    /// trusted, so the log refuses all further work. Reopen it to recover what is durable.
    #[error("WAL is poisoned: {op} {path} failed: {source}")]
    Poisoned {
        /// The failed operation.
        op: &'static str,
        /// The segment file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another process (or another `Wal` in this one) has the directory open.
    #[error("WAL directory {dir} is locked by another writer (lock file {lock_path})")]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
        /// The lock file.
        lock_path: PathBuf,
    },
    /// The disk budget is used up; nothing durable was dropped. Acknowledge events (checkpoint)
    /// so sealed segments can be deleted, or raise `wal_max_bytes`.
    #[error("WAL is full: {used_bytes} of {budget_bytes} budget bytes in use")]
    WalFull {
        /// Bytes of segment files (counted at their maximum size).
        used_bytes: u64,
        /// `wal_max_bytes`.
        budget_bytes: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid WAL configuration: {field} must be {requirement}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// A segment was written by a newer, incompatible version of this crate.
    #[error("{path}: segment format version {version} is not supported")]
    UnsupportedVersion {
        /// The segment.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// A file named like a segment is not provably one of this log's segments: its header
    /// is not a valid segment header, no valid record in it proves it ours, and it is not a
    /// blank (all-zero) prepared segment. Opening for writing refuses rather than overwrite,
    /// zero or later delete bytes that may belong to someone else; nothing was changed.
    #[error(
        "{path} is named like a WAL segment but is not one of this log's segments ({reason}); \
         nothing was changed: move the file out of the WAL directory to open the log"
    )]
    NotASegment {
        /// The file.
        path: PathBuf,
        /// What was found instead of a segment header.
        reason: String,
    },
    /// A record does not fit in an empty segment (only with tiny `segment_max_bytes`).
    #[error("record of {frame_bytes} bytes does not fit in a segment of {segment_max_bytes} bytes")]
    RecordTooLarge {
        /// Encoded frame size.
        frame_bytes: usize,
        /// `segment_max_bytes`.
        segment_max_bytes: u64,
    },
    /// `checkpoint` named a sequence that was never appended.
    #[error("checkpoint {requested} is beyond the last appended sequence {last_sequence}")]
    CheckpointAhead {
        /// The sequence asked for.
        requested: u64,
        /// The last sequence appended.
        last_sequence: u64,
    },
    /// The log was closed (or its thread has exited).
    #[error("WAL is closed")]
    Closed,
    /// A batch failed part-way (a segment could not be created: disk budget or ENOSPC). Its
    /// first events, `durable_first..=durable_last`, are durable and keep those sequences
    /// (they are delivered like any other); the remaining `failed_events` were not written
    /// and took no sequence. `source` says why.
    #[error(
        "batch only partly durable: events {durable_first}..={durable_last} are durable, \
         the remaining {failed_events} were not written: {source}"
    )]
    BatchPartlyDurable {
        /// Sequence of the batch's first event.
        durable_first: u64,
        /// Sequence of the batch's last durable event.
        durable_last: u64,
        /// Events of the batch that were not written.
        failed_events: usize,
        /// Why the rest of the batch failed.
        #[source]
        source: Box<WalError>,
    },
}

impl WalError {
    /// For a batch that failed part-way ([`WalError::BatchPartlyDurable`]): the sequences
    /// of its events that are durable nevertheless. `None` for every other error (then none
    /// of the batch was written).
    pub fn durable_batch_prefix(&self) -> Option<RangeInclusive<u64>> {
        match self {
            WalError::BatchPartlyDurable {
                durable_first,
                durable_last,
                ..
            } => Some(*durable_first..=*durable_last),
            _ => None,
        }
    }

    /// An `Io` error.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
