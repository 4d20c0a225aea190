//! TEMPORARY: the format v2 API on top of v1, until the format change lands.
#![allow(dead_code, missing_docs)]
use chrono::{DateTime, Utc};

use super::super::format::{self, CheckpointEntry};
use crate::event::EventKind;

pub const WATERMARK_FRAME_BYTES: usize = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSeed {
    pub segment_number: u64,
    pub salt: u64,
}

pub fn new_wal_salt() -> u64 {
    1
}

pub fn header(
    segment_number: u64,
    first_sequence: u64,
    created_unix_ns: i64,
    _salt: u64,
) -> format::SegmentHeader {
    format::SegmentHeader {
        version: format::FORMAT_VERSION,
        segment_number,
        first_sequence,
        created_unix_ns,
    }
}

pub fn write_event_frame(
    out: &mut [u8],
    seed: FrameSeed,
    _watermark: u64,
    sequence: u64,
    timestamp: DateTime<Utc>,
    kind: EventKind,
    bytes: &[u8],
) -> usize {
    format::write_event_frame(out, seed.segment_number, sequence, timestamp, kind, bytes)
}

pub fn write_checkpoint_frame(
    out: &mut [u8],
    seed: FrameSeed,
    _watermark: u64,
    entry: &CheckpointEntry,
) -> usize {
    format::write_checkpoint_frame(out, seed.segment_number, entry)
}

pub fn write_watermark_frame(
    _out: &mut [u8],
    _seed: FrameSeed,
    _watermark: u64,
    _timestamp: DateTime<Utc>,
) -> usize {
    0
}
