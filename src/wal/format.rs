//! The WAL's byte format (normative text: `docs/format.md`): segment header, record frames,
//! record payloads and the CRC that covers them.
//!
//! This is the only module that knows byte offsets. It is pure: no I/O, no clocks, and every
//! decoder returns an error value for bad bytes instead of panicking or allocating what a
//! length field claims.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, ProcessEvent};

/// Unit of O_DIRECT I/O and of the segment header: every write is a multiple of it.
pub const BLOCK_BYTES: usize = 4096;
/// Frames start at multiples of this, so a length word never straddles a sector.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Bytes of the frame header that precedes every payload.
pub const FRAME_HEADER_BYTES: usize = 16;
/// Largest payload a frame may carry; a larger length word is damage, not an allocation.
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;
/// Largest whole frame (header + payload + padding).
pub const MAX_FRAME_BYTES: usize =
    align_up(FRAME_HEADER_BYTES + MAX_PAYLOAD_BYTES, FRAME_ALIGN_BYTES);
/// Bytes reserved for the segment header; records start at this offset.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// First bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PMWALSEG";
/// Format version written by this crate (and the only one it reads).
pub const FORMAT_VERSION: u32 = 1;

/// Encoded bytes of the meaningful part of the segment header (the rest of the block is zero).
const SEGMENT_HEADER_USED_BYTES: usize = 44;

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub const fn align_down_u64(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// The kind of a record frame. The numbers are on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A process event ([`WalEntry`]).
    Event = 1,
    /// An acknowledgement watermark ([`CheckpointEntry`]).
    Checkpoint = 2,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<RecordKind> {
        match byte {
            1 => Some(RecordKind::Event),
            2 => Some(RecordKind::Checkpoint),
            _ => None,
        }
    }
}

/// One durable process event: the ticket's `WalEntry`, with the CRC moved into the frame
/// header (a checksum cannot cover itself, and the header's CRC also protects length and kind).
///
/// Field order is the on-disk order (bincode legacy encoding concatenates fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalEntry {
    /// Position in the log, from 1, gap-free, never reused.
    pub sequence: u64,
    /// When the entry was appended.
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub timestamp: DateTime<Utc>,
    /// The event.
    pub event: ProcessEvent,
    /// What happened.
    pub kind: EventKind,
}

/// "Every event up to and including `acked_through` has been acknowledged by the broker."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// Highest acknowledged sequence (0: none).
    pub acked_through: u64,
    /// When the checkpoint was written.
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub timestamp: DateTime<Utc>,
}

/// A decoded record.
// Records are handled one at a time; boxing the large variant would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A process event.
    Event(WalEntry),
    /// An acknowledgement watermark.
    Checkpoint(CheckpointEntry),
}

/// The fixed part at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The segment's number; equals the number in its file name.
    pub segment_number: u64,
    /// Sequence of the first event written to this segment.
    pub first_sequence: u64,
    /// When the segment was started, nanoseconds since the Unix epoch.
    pub created_unix_ns: i64,
}

/// Why a segment header was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// All bytes zero: a segment prepared ahead of time that never received a write.
    #[error("segment header is blank (prepared, never written)")]
    Blank,
    /// Fewer bytes than a header.
    #[error("segment header is truncated")]
    Truncated,
    /// The first eight bytes are not [`SEGMENT_MAGIC`].
    #[error("segment header magic is wrong")]
    BadMagic,
    /// The header CRC does not match.
    #[error("segment header checksum mismatch")]
    BadChecksum,
    /// A version this build cannot read.
    #[error("segment format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
}

impl SegmentHeader {
    /// Encodes the header into a full, zero-padded header block.
    pub fn encode_block(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut block = [0u8; SEGMENT_HEADER_BYTES];
        block[0..8].copy_from_slice(&SEGMENT_MAGIC);
        block[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16: flags, zero in version 1.
        block[16..24].copy_from_slice(&self.segment_number.to_le_bytes());
        block[24..32].copy_from_slice(&self.first_sequence.to_le_bytes());
        block[32..40].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        let crc = crc32fast::hash(&block[0..40]);
        block[40..44].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// Decodes and validates a header from the start of a segment.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        // A crash between creating a segment and preallocating it (or no preallocation)
        // leaves a short or empty file: as blank as a zeroed one, not a damaged header.
        let present = &bytes[..bytes.len().min(SEGMENT_HEADER_USED_BYTES)];
        if present.iter().all(|&b| b == 0) {
            return Err(HeaderError::Blank);
        }
        let Some(used) = bytes.get(..SEGMENT_HEADER_USED_BYTES) else {
            return Err(HeaderError::Truncated);
        };
        if used[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        if crc32fast::hash(&used[0..40]) != le_u32(&used[40..44]) {
            return Err(HeaderError::BadChecksum);
        }
        let version = le_u32(&used[8..12]);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        Ok(SegmentHeader {
            version,
            segment_number: le_u64(&used[16..24]),
            first_sequence: le_u64(&used[24..32]),
            created_unix_ns: le_u64(&used[32..40]) as i64,
        })
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// The one bincode configuration of the format: bincode 1.x-compatible "legacy" (fixed-width
/// little-endian integers), with a decode limit so a damaged length cannot allocate.
fn bincode_config() -> impl bincode::config::Config {
    bincode::config::legacy().with_limit::<MAX_PAYLOAD_BYTES>()
}

/// An error encoding a record payload (only possible for payloads over the size limit).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// bincode refused the value.
    #[error("bincode encoding failed: {0}")]
    Bincode(#[from] bincode::error::EncodeError),
    /// The payload would exceed [`MAX_PAYLOAD_BYTES`].
    #[error("record payload of {payload_bytes} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")]
    TooLarge {
        /// Encoded size.
        payload_bytes: usize,
    },
}

/// Encodes the event part of a [`WalEntry`] payload; done on the caller's thread so the ring
/// thread only copies bytes into frames (see [`write_event_frame`]).
pub fn encode_event(event: &ProcessEvent) -> Result<Vec<u8>, EncodeError> {
    // Sized up front: every string costs its bytes plus an 8-byte length, and the fixed
    // fields stay under 256 bytes, so the buffer is allocated once.
    let strings = 4 + event.command_line.len() + 2 * event.platform_metadata.len();
    let mut bytes = Vec::with_capacity(event.text_bytes() + 8 * strings + 256);
    bincode::serde::encode_into_std_write(event, &mut bytes, bincode_config())?;
    if bytes.len() + EVENT_FIXED_PAYLOAD_BYTES > MAX_PAYLOAD_BYTES {
        return Err(EncodeError::TooLarge {
            payload_bytes: bytes.len() + EVENT_FIXED_PAYLOAD_BYTES,
        });
    }
    Ok(bytes)
}

/// Payload bytes of a [`WalEntry`] besides the event: sequence (8), timestamp (8), kind (4).
pub const EVENT_FIXED_PAYLOAD_BYTES: usize = 20;

/// Bytes one frame occupies on disk for a payload of `payload_bytes`.
pub const fn frame_len(payload_bytes: usize) -> usize {
    align_up(FRAME_HEADER_BYTES + payload_bytes, FRAME_ALIGN_BYTES)
}

/// Writes one event frame at the start of `out` (which must hold [`frame_len`] of
/// `EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len()` bytes) and returns its length.
///
/// `event_bytes` comes from [`encode_event`]. The payload is assembled exactly as bincode's
/// legacy configuration encodes [`WalEntry`] (fields concatenated in order; the enum as a u32
/// variant index); the golden test in `tests/` and the round-trip tests keep the two equal.
pub fn write_event_frame(
    out: &mut [u8],
    segment_number: u64,
    sequence: u64,
    timestamp: DateTime<Utc>,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    let timestamp_ns = timestamp.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let kind_index: u32 = match kind {
        EventKind::Start => 0,
        EventKind::Stop => 1,
        EventKind::Modify => 2,
    };
    let payload_len = EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len();
    let payload = &mut out[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len];
    let (fixed, rest) = payload.split_at_mut(16);
    fixed[0..8].copy_from_slice(&sequence.to_le_bytes());
    fixed[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    rest[..event_bytes.len()].copy_from_slice(event_bytes);
    rest[event_bytes.len()..].copy_from_slice(&kind_index.to_le_bytes());
    finish_frame(out, segment_number, RecordKind::Event, payload_len)
}

/// Bytes of a checkpoint frame.
pub const CHECKPOINT_FRAME_BYTES: usize = frame_len(16);

/// Writes one checkpoint frame at the start of `out` (at least [`CHECKPOINT_FRAME_BYTES`])
/// and returns its length.
pub fn write_checkpoint_frame(
    out: &mut [u8],
    segment_number: u64,
    checkpoint: &CheckpointEntry,
) -> usize {
    let timestamp_ns = checkpoint
        .timestamp
        .timestamp_nanos_opt()
        .unwrap_or(i64::MAX);
    let payload = &mut out[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + 16];
    payload[0..8].copy_from_slice(&checkpoint.acked_through.to_le_bytes());
    payload[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    finish_frame(out, segment_number, RecordKind::Checkpoint, 16)
}

/// Fills in the header of the frame whose payload is already in place after it, zeroes the
/// padding and returns the frame length.
fn finish_frame(
    out: &mut [u8],
    segment_number: u64,
    kind: RecordKind,
    payload_len: usize,
) -> usize {
    assert!(
        payload_len <= MAX_PAYLOAD_BYTES,
        "payload size checked by the encoder"
    );
    let mut header = [0u8; 8];
    header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[4] = kind as u8;
    let crc = frame_crc(
        segment_number,
        &header,
        &out[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len],
    );
    out[0..8].copy_from_slice(&header);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out[12..16].fill(0);
    let len = frame_len(payload_len);
    out[FRAME_HEADER_BYTES + payload_len..len].fill(0);
    len
}

/// Appends an event frame to a `Vec` (tests and tools).
pub fn push_event_frame(
    out: &mut Vec<u8>,
    segment_number: u64,
    sequence: u64,
    timestamp: DateTime<Utc>,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    let start = out.len();
    out.resize(
        start + frame_len(EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len()),
        0,
    );
    write_event_frame(
        &mut out[start..],
        segment_number,
        sequence,
        timestamp,
        kind,
        event_bytes,
    )
}

/// Appends a checkpoint frame to a `Vec` (tests and tools).
pub fn push_checkpoint_frame(
    out: &mut Vec<u8>,
    segment_number: u64,
    checkpoint: &CheckpointEntry,
) -> usize {
    let start = out.len();
    out.resize(start + CHECKPOINT_FRAME_BYTES, 0);
    write_checkpoint_frame(&mut out[start..], segment_number, checkpoint)
}

/// CRC-32 (IEEE) over the segment number, the first eight header bytes and the payload.
/// Covering the segment number means bytes left over from another segment never validate.
fn frame_crc(segment_number: u64, header_first8: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&segment_number.to_le_bytes());
    hasher.update(header_first8);
    hasher.update(payload);
    hasher.finalize()
}

/// What the bytes at one frame position are.
#[derive(Debug, PartialEq)]
pub enum FrameProbe<'a> {
    /// A zero length word: padding, or the end of the records.
    Zero,
    /// Not a valid frame (bad length, kind, reserved bytes, CRC or payload encoding).
    Invalid,
    /// More bytes are needed to decide (only when the caller has more to give).
    NeedMore {
        /// Bytes needed from the probe position.
        bytes: usize,
    },
    /// A valid frame.
    Valid {
        /// Its kind.
        kind: RecordKind,
        /// Its payload (CRC already verified).
        payload: &'a [u8],
        /// Bytes it occupies, padding included.
        frame_bytes: usize,
    },
}

/// Examines the bytes at the start of `window` as a frame of segment `segment_number`.
///
/// `at_end` says that `window` holds everything up to the end of the segment, so a frame that
/// runs past it is torn (`Invalid`) rather than incomplete (`NeedMore`).
pub fn probe_frame(window: &[u8], segment_number: u64, at_end: bool) -> FrameProbe<'_> {
    if window.len() < FRAME_HEADER_BYTES {
        if window.len() >= 4 && le_u32(window) == 0 {
            return FrameProbe::Zero;
        }
        return if at_end {
            if window.iter().all(|&b| b == 0) {
                FrameProbe::Zero
            } else {
                FrameProbe::Invalid
            }
        } else {
            FrameProbe::NeedMore {
                bytes: FRAME_HEADER_BYTES,
            }
        };
    }
    let payload_len = le_u32(&window[0..4]) as usize;
    if payload_len == 0 {
        return FrameProbe::Zero;
    }
    let Some(kind) = RecordKind::from_byte(window[4]) else {
        return FrameProbe::Invalid;
    };
    if payload_len > MAX_PAYLOAD_BYTES || window[5..8] != [0, 0, 0] || window[12..16] != [0; 4] {
        return FrameProbe::Invalid;
    }
    let frame_bytes = frame_len(payload_len);
    if window.len() < FRAME_HEADER_BYTES + payload_len {
        return if at_end {
            FrameProbe::Invalid
        } else {
            FrameProbe::NeedMore { bytes: frame_bytes }
        };
    }
    let payload = &window[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len];
    if frame_crc(segment_number, &window[0..8], payload) != le_u32(&window[8..12]) {
        return FrameProbe::Invalid;
    }
    FrameProbe::Valid {
        kind,
        payload,
        frame_bytes: frame_bytes.min(window.len()),
    }
}

/// Why a CRC-valid payload did not decode (a writer bug or a deliberate forgery, never bit rot).
#[derive(Debug, thiserror::Error)]
#[error("record payload does not decode: {0}")]
pub struct PayloadError(#[from] bincode::error::DecodeError);

/// Decodes a verified payload.
pub fn decode_payload(kind: RecordKind, payload: &[u8]) -> Result<Record, PayloadError> {
    let config = bincode_config();
    Ok(match kind {
        RecordKind::Event => {
            let (entry, _) = bincode::serde::decode_from_slice::<WalEntry, _>(payload, config)?;
            Record::Event(entry)
        }
        RecordKind::Checkpoint => {
            let (entry, _) =
                bincode::serde::decode_from_slice::<CheckpointEntry, _>(payload, config)?;
            Record::Checkpoint(entry)
        }
    })
}

/// Reads only the sequence of a verified event payload (its first eight bytes).
pub fn event_payload_sequence(payload: &[u8]) -> Option<u64> {
    payload.get(..8).map(le_u64)
}

/// Encodes a whole [`WalEntry`] with bincode itself (tests and tools; the writer uses
/// [`write_event_frame`]).
pub fn encode_entry_with_bincode(entry: &WalEntry) -> Result<Vec<u8>, EncodeError> {
    Ok(bincode::serde::encode_to_vec(entry, bincode_config())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sequence: u64) -> WalEntry {
        let mut event = ProcessEvent::new(7, "init", DateTime::from_timestamp_nanos(11));
        event.command_line = vec!["/sbin/init".into(), "splash".into()];
        event
            .platform_metadata
            .insert("linux.cgroup".into(), "/".into());
        WalEntry {
            sequence,
            timestamp: DateTime::from_timestamp_nanos(1_700_000_000_123_456_789),
            event,
            kind: EventKind::Modify,
        }
    }

    fn frame_of(entry: &WalEntry, segment: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let event_bytes = encode_event(&entry.event).unwrap();
        let len = push_event_frame(
            &mut out,
            segment,
            entry.sequence,
            entry.timestamp,
            entry.kind,
            &event_bytes,
        );
        assert_eq!(len, out.len());
        out
    }

    #[test]
    fn hand_assembled_payload_equals_bincode_encoding() {
        let entry = entry(42);
        let frame = frame_of(&entry, 3);
        let expected = encode_entry_with_bincode(&entry).unwrap();
        assert_eq!(
            &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + expected.len()],
            &expected[..]
        );
        assert_eq!(frame.len() % FRAME_ALIGN_BYTES, 0);
    }

    #[test]
    fn frame_round_trips_and_is_bound_to_its_segment() {
        let entry = entry(9);
        let frame = frame_of(&entry, 5);
        match probe_frame(&frame, 5, true) {
            FrameProbe::Valid {
                kind,
                payload,
                frame_bytes,
            } => {
                assert_eq!(kind, RecordKind::Event);
                assert_eq!(frame_bytes, frame.len());
                assert_eq!(event_payload_sequence(payload), Some(9));
                assert_eq!(decode_payload(kind, payload).unwrap(), Record::Event(entry));
            }
            other => panic!("expected a valid frame, got {other:?}"),
        }
        assert_eq!(probe_frame(&frame, 6, true), FrameProbe::Invalid);
    }

    #[test]
    fn every_single_bit_flip_in_a_frame_is_detected() {
        let frame = frame_of(&entry(1), 1);
        let payload_len = le_u32(&frame) as usize;
        for bit in 0..(FRAME_HEADER_BYTES + payload_len) * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(probe_frame(&damaged, 1, true), FrameProbe::Valid { .. }),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn checkpoint_round_trips() {
        let checkpoint = CheckpointEntry {
            acked_through: 77,
            timestamp: DateTime::from_timestamp_nanos(5),
        };
        let mut out = vec![];
        push_checkpoint_frame(&mut out, 2, &checkpoint);
        let FrameProbe::Valid { kind, payload, .. } = probe_frame(&out, 2, true) else {
            panic!("checkpoint frame invalid");
        };
        assert_eq!(
            decode_payload(kind, payload).unwrap(),
            Record::Checkpoint(checkpoint)
        );
    }

    #[test]
    fn incomplete_frames_ask_for_more_or_are_torn_at_the_end() {
        let frame = frame_of(&entry(1), 1);
        let cut = &frame[..frame.len() - 12];
        assert!(matches!(
            probe_frame(cut, 1, false),
            FrameProbe::NeedMore { .. }
        ));
        assert_eq!(probe_frame(cut, 1, true), FrameProbe::Invalid);
        assert!(matches!(
            probe_frame(&frame[..5], 1, false),
            FrameProbe::NeedMore { .. }
        ));
        assert_eq!(probe_frame(&[0u8; 3], 1, true), FrameProbe::Zero);
    }

    #[test]
    fn oversized_length_is_invalid_without_allocating() {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[4] = 1;
        assert_eq!(probe_frame(&bytes, 1, false), FrameProbe::Invalid);
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            segment_number: 12,
            first_sequence: 1000,
            created_unix_ns: 1_700_000_000_000_000_000,
        };
        let block = header.encode_block();
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        assert_eq!(SegmentHeader::decode(&[0u8; 4096]), Err(HeaderError::Blank));
        assert_eq!(
            SegmentHeader::decode(&block[..10]),
            Err(HeaderError::Truncated)
        );
        let mut damaged = block;
        damaged[20] ^= 0x10;
        assert_eq!(
            SegmentHeader::decode(&damaged),
            Err(HeaderError::BadChecksum)
        );
        damaged = block;
        damaged[0] = b'X';
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::BadMagic));
    }
}
