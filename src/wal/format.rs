//! The WAL's byte format (normative text: `docs/format.md`): segment header, record frames,
//! record payloads and the CRC that covers them, for version 2 (written) and version 1 (still
//! read).
//!
//! This is the only module that knows byte offsets. It is pure apart from
//! [`new_wal_salt`] (which asks the OS for random bytes): no file I/O, no clocks, and every
//! decoder returns an error value for bad bytes instead of panicking or allocating what a
//! length field claims. It must never decide what damage *means* (that is recovery's job).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{EventKind, ProcessEvent};

mod view;

pub use view::{
    EntryView, EventView, PayloadError, RecordView, StrIter, StrList, StrPairs,
    decode_payload_owned, decode_payload_view,
};

/// Unit of O_DIRECT I/O and of the segment header: every write is a multiple of it.
pub const BLOCK_BYTES: usize = 4096;
/// Frames start at multiples of this, so a length word never straddles a sector.
pub const FRAME_ALIGN_BYTES: usize = 8;
/// Bytes of the (version 2) frame header that precedes every payload.
pub const FRAME_HEADER_BYTES: usize = 24;
/// Bytes of a version 1 frame header (read only).
pub const FRAME_HEADER_BYTES_V1: usize = 16;
/// Largest payload a frame may carry; a larger length word is damage, not an allocation.
pub const MAX_PAYLOAD_BYTES: usize = 2 * 1024 * 1024;
/// Largest whole frame (header + payload + padding).
pub const MAX_FRAME_BYTES: usize =
    align_up(FRAME_HEADER_BYTES + MAX_PAYLOAD_BYTES, FRAME_ALIGN_BYTES);
/// Bytes reserved for the segment header; records start at this offset.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// First bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PMWALSEG";
/// Format version written by this crate.
pub const FORMAT_VERSION: u32 = 2;
/// The previous format version, still read (never written by the log).
pub const FORMAT_VERSION_1: u32 = 1;

/// Encoded bytes of the meaningful part of a version 1 segment header.
const HEADER_USED_BYTES_V1: usize = 44;
/// Encoded bytes of the meaningful part of a version 2 segment header (the rest is zero but
/// for the salt's copy).
const HEADER_USED_BYTES_V2: usize = 52;
/// Offset of the second copy of the salt in a version 2 header block, in another 512-byte
/// sector than the header itself: it is read only when the header is damaged, so that one bad
/// sector at the start of the only segment does not make its frames unverifiable.
pub const SALT_COPY_OFFSET: usize = 2048;

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
    /// The durable watermark on its own ([`WatermarkEntry`]; version 2 only).
    Watermark = 3,
}

impl RecordKind {
    fn from_byte(byte: u8, layout: FrameLayout) -> Option<RecordKind> {
        match (byte, layout) {
            (1, _) => Some(RecordKind::Event),
            (2, _) => Some(RecordKind::Checkpoint),
            (3, FrameLayout::V2(_)) => Some(RecordKind::Watermark),
            _ => None,
        }
    }
}

/// One durable process event, with the CRC moved into the frame header (a checksum cannot
/// cover itself, and the header's CRC also protects length and kind).
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

/// "Every event up to and including `durable_watermark` was acknowledged to its caller as
/// durable." Written by a clean close, so the log knows its last sequence even if the last
/// event frame is later damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkEntry {
    /// Highest sequence acknowledged as durable (0: none).
    pub durable_watermark: u64,
    /// When the record was written.
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
    /// The durable watermark.
    Watermark(WatermarkEntry),
}

/// The fixed part at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version ([`FORMAT_VERSION`], or [`FORMAT_VERSION_1`] for an old segment).
    pub version: u32,
    /// The segment's number; equals the number in its file name.
    pub segment_number: u64,
    /// Sequence of the first event written to this segment.
    pub first_sequence: u64,
    /// When the segment was started, nanoseconds since the Unix epoch.
    pub created_unix_ns: i64,
    /// The per-WAL random salt mixed into every frame CRC (nonzero in version 2; 0 in
    /// version 1, which has none).
    pub salt: u64,
}

/// What a frame's CRC is seeded with in version 2: the segment number (from the file name)
/// and the per-WAL salt (from any valid header of the directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSeed {
    /// The segment the frame belongs to.
    pub segment_number: u64,
    /// The WAL's salt.
    pub salt: u64,
}

/// How the frames of one segment are laid out and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameLayout {
    /// Version 1: 16-byte header, CRC seeded with the segment number only.
    V1 {
        /// The segment the frame belongs to.
        segment_number: u64,
    },
    /// Version 2: 24-byte header with the durable watermark, CRC seeded with number and salt.
    V2(FrameSeed),
}

impl FrameLayout {
    /// Bytes of one frame header in this layout.
    pub const fn header_bytes(self) -> usize {
        match self {
            FrameLayout::V1 { .. } => FRAME_HEADER_BYTES_V1,
            FrameLayout::V2(_) => FRAME_HEADER_BYTES,
        }
    }

    /// Bytes one frame occupies for a payload of `payload_bytes`, padding included.
    pub const fn frame_len(self, payload_bytes: usize) -> usize {
        align_up(self.header_bytes() + payload_bytes, FRAME_ALIGN_BYTES)
    }

    /// The segment number the CRC is bound to.
    pub const fn segment_number(self) -> u64 {
        match self {
            FrameLayout::V1 { segment_number } => segment_number,
            FrameLayout::V2(seed) => seed.segment_number,
        }
    }
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
    /// The header block could not be read (an I/O error).
    #[error("segment header could not be read")]
    Unreadable,
    /// A version 2 header whose salt is zero (a writer never produces one).
    #[error("segment header salt is zero")]
    ZeroSalt,
    /// A version this build cannot read.
    #[error(
        "segment format version {0} is not supported (this build reads {FORMAT_VERSION_1} and {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u32),
}

impl SegmentHeader {
    /// The CRC seed of this segment's frames (version 2).
    pub fn frame_seed(&self) -> FrameSeed {
        FrameSeed {
            segment_number: self.segment_number,
            salt: self.salt,
        }
    }

    /// How this segment's frames are laid out.
    pub fn frame_layout(&self) -> FrameLayout {
        if self.version == FORMAT_VERSION_1 {
            FrameLayout::V1 {
                segment_number: self.segment_number,
            }
        } else {
            FrameLayout::V2(self.frame_seed())
        }
    }

    /// Encodes the header into a full, zero-padded header block. A version 1 header (tests
    /// and tools only) uses the version 1 layout and ignores the salt; every other version
    /// uses the version 2 layout.
    pub fn encode_block(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut block = [0u8; SEGMENT_HEADER_BYTES];
        block[0..8].copy_from_slice(&SEGMENT_MAGIC);
        block[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16: flags, zero in versions 1 and 2.
        block[16..24].copy_from_slice(&self.segment_number.to_le_bytes());
        block[24..32].copy_from_slice(&self.first_sequence.to_le_bytes());
        block[32..40].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        if self.version == FORMAT_VERSION_1 {
            let crc = crc32fast::hash(&block[0..40]);
            block[40..44].copy_from_slice(&crc.to_le_bytes());
        } else {
            block[40..48].copy_from_slice(&self.salt.to_le_bytes());
            let crc = crc32fast::hash(&block[0..48]);
            block[48..52].copy_from_slice(&crc.to_le_bytes());
            block[SALT_COPY_OFFSET..SALT_COPY_OFFSET + 8].copy_from_slice(&self.salt.to_le_bytes());
        }
        block
    }

    /// Decodes and validates a header from the start of a segment.
    ///
    /// Version 1 headers have their CRC at 40; every other version is checked with the
    /// version 2 layout (CRC at 48 over 0..48), and only a header that passes that check is
    /// reported as [`HeaderError::UnsupportedVersion`].
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
        // A crash between creating a segment and preallocating it (or no preallocation)
        // leaves a short or empty file: as blank as a zeroed one, not a damaged header.
        let present = &bytes[..bytes.len().min(HEADER_USED_BYTES_V2)];
        if present.iter().all(|&b| b == 0) {
            return Err(HeaderError::Blank);
        }
        let Some(common) = bytes.get(..HEADER_USED_BYTES_V1) else {
            return Err(HeaderError::Truncated);
        };
        if common[0..8] != SEGMENT_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = le_u32(&common[8..12]);
        let salt = if version == FORMAT_VERSION_1 {
            if crc32fast::hash(&common[0..40]) != le_u32(&common[40..44]) {
                return Err(HeaderError::BadChecksum);
            }
            0
        } else {
            let Some(used) = bytes.get(..HEADER_USED_BYTES_V2) else {
                return Err(HeaderError::Truncated);
            };
            if crc32fast::hash(&used[0..48]) != le_u32(&used[48..52]) {
                return Err(HeaderError::BadChecksum);
            }
            if version != FORMAT_VERSION {
                return Err(HeaderError::UnsupportedVersion(version));
            }
            let salt = le_u64(&used[40..48]);
            if salt == 0 {
                return Err(HeaderError::ZeroSalt);
            }
            salt
        };
        Ok(SegmentHeader {
            version,
            segment_number: le_u64(&common[16..24]),
            first_sequence: le_u64(&common[24..32]),
            created_unix_ns: le_u64(&common[32..40]) as i64,
            salt,
        })
    }

    /// The salts a damaged version 2 header block may still hold: the nonzero words at the
    /// salt's offset and at its copy's. Only *candidates*: a reader accepts one only once a
    /// frame's CRC confirms it.
    pub fn salt_candidates(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
        [40, SALT_COPY_OFFSET]
            .into_iter()
            .filter_map(|offset| bytes.get(offset..offset + 8).map(le_u64))
            .filter(|&salt| salt != 0)
    }
}

/// A new random, nonzero salt for a WAL directory that gets its first segment.
///
/// Taken from the OS random source (`getrandom(2)`); if that is unavailable, from a mix of
/// the clock, the process id and an address. The salt has to differ between WAL directories
/// (and from bytes an event could contain), not to resist an adversary who can write the
/// directory, so the fallback is good enough for its purpose.
pub fn new_wal_salt() -> u64 {
    let mut bytes = [0u8; 8];
    let mut filled = 0usize;
    let mut attempts = 0;
    while filled < bytes.len() && attempts < 16 {
        attempts += 1;
        // SAFETY: the pointer and length describe the unfilled part of `bytes`, which lives
        // for the whole call; getrandom writes at most that many bytes.
        let rc = unsafe {
            libc::getrandom(
                bytes[filled..].as_mut_ptr().cast::<libc::c_void>(),
                bytes.len() - filled,
                0,
            )
        };
        if rc > 0 {
            filled += rc as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let mut salt = u64::from_le_bytes(bytes);
    if filled < bytes.len() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        let address = &bytes as *const _ as u64;
        salt = splitmix64(now ^ (u64::from(std::process::id()) << 32) ^ address);
    }
    if salt == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        salt
    }
}

/// SplitMix64's output function: spreads the fallback seed's few changing bits over 64.
fn splitmix64(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
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
    let mut bytes = Vec::with_capacity(encoded_event_capacity(event));
    encode_event_into(event, &mut bytes)?;
    Ok(bytes)
}

/// Bytes enough for `event`'s encoding in one allocation: every string costs its bytes plus
/// an 8-byte length, and the fixed fields stay under 256 bytes.
pub fn encoded_event_capacity(event: &ProcessEvent) -> usize {
    let strings = 4 + event.command_line.len() + 2 * event.platform_metadata.len();
    event.text_bytes() + 8 * strings + 256
}

/// [`encode_event`] appending to `out` (a reused buffer); returns the bytes written. On an
/// error `out` may hold part of the encoding after what it held before.
///
/// The bytes are exactly bincode's legacy encoding of [`ProcessEvent`], written field by
/// field without going through serde (which costs several times more per event); the tests
/// compare the two on generated events. An event whose times do not fit i64 nanoseconds
/// (never one that went through [`ProcessEvent::truncate_to_limits`]) takes the serde path,
/// which refuses it.
pub fn encode_event_into(event: &ProcessEvent, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let start = out.len();
    let times = (
        event.collection_time.timestamp_nanos_opt(),
        event.start_time.map(|time| time.timestamp_nanos_opt()),
    );
    let payload_bytes = match times {
        (Some(collection_ns), None) => put_event_fields(event, collection_ns, None, out),
        (Some(collection_ns), Some(Some(start_ns))) => {
            put_event_fields(event, collection_ns, Some(start_ns), out)
        }
        _ => bincode::serde::encode_into_std_write(event, out, bincode_config())?,
    };
    debug_assert_eq!(payload_bytes, out.len() - start);
    if payload_bytes + EVENT_FIXED_PAYLOAD_BYTES > MAX_PAYLOAD_BYTES {
        return Err(EncodeError::TooLarge {
            payload_bytes: payload_bytes + EVENT_FIXED_PAYLOAD_BYTES,
        });
    }
    Ok(payload_bytes)
}

/// Appends `event` in bincode's legacy layout: fields in declaration order, integers and
/// floats little-endian at full width, `bool` and `Option` tags as one byte, strings and
/// sequences as a u64 length then their items, times as i64 nanoseconds.
fn put_event_fields(
    event: &ProcessEvent,
    collection_ns: i64,
    start_ns: Option<i64>,
    out: &mut Vec<u8>,
) -> usize {
    fn string(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    fn option<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
        match value {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                put(out, value);
            }
        }
    }
    let start = out.len();
    out.reserve(encoded_event_capacity(event));
    out.extend_from_slice(&event.pid.to_le_bytes());
    option(out, event.ppid, |out, ppid| {
        out.extend_from_slice(&ppid.to_le_bytes())
    });
    string(out, &event.name);
    option(out, event.executable_path.as_deref(), string);
    out.extend_from_slice(&(event.command_line.len() as u64).to_le_bytes());
    for argument in &event.command_line {
        string(out, argument);
    }
    option(out, start_ns, |out, ns| {
        out.extend_from_slice(&ns.to_le_bytes())
    });
    option(out, event.cpu_usage_percent, |out, percent| {
        out.extend_from_slice(&percent.to_le_bytes())
    });
    option(out, event.memory_usage_bytes, |out, bytes| {
        out.extend_from_slice(&bytes.to_le_bytes())
    });
    option(out, event.executable_hash.as_deref(), string);
    option(out, event.hash_algorithm.as_deref(), string);
    option(out, event.user_id.as_deref(), string);
    out.push(u8::from(event.accessible));
    out.push(u8::from(event.file_exists));
    out.extend_from_slice(&collection_ns.to_le_bytes());
    out.extend_from_slice(&(event.platform_metadata.len() as u64).to_le_bytes());
    for (key, value) in &event.platform_metadata {
        string(out, key);
        string(out, value);
    }
    out.push(u8::from(event.truncated));
    out.len() - start
}

/// Payload bytes of a [`WalEntry`] besides the event: sequence (8), timestamp (8), kind (4).
pub const EVENT_FIXED_PAYLOAD_BYTES: usize = 20;

/// Bytes one (version 2) frame occupies on disk for a payload of `payload_bytes`.
pub const fn frame_len(payload_bytes: usize) -> usize {
    align_up(FRAME_HEADER_BYTES + payload_bytes, FRAME_ALIGN_BYTES)
}

/// Writes one event frame at the start of `out` (which must hold [`frame_len`] of
/// `EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len()` bytes) and returns its length.
///
/// `event_bytes` comes from [`encode_event`]. The payload is assembled exactly as bincode's
/// legacy configuration encodes [`WalEntry`] (fields concatenated in order; the enum as a u32
/// variant index); the golden test in `tests/` and the round-trip tests keep the two equal.
/// `durable_watermark` is the highest sequence acknowledged as durable when the frame's group
/// was formed, so it is below `sequence`.
pub fn write_event_frame(
    out: &mut [u8],
    seed: FrameSeed,
    durable_watermark: u64,
    sequence: u64,
    timestamp: DateTime<Utc>,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    write_event_frame_seeded(
        out,
        seed.crc_start(),
        durable_watermark,
        sequence,
        timestamp_ns(timestamp),
        kind,
        event_bytes,
    )
}

/// [`write_event_frame`] with what every frame of a group shares worked out once by the
/// caller: the CRC of the seed ([`FrameSeed::crc_start`]) and the time in nanoseconds
/// ([`timestamp_ns`]).
pub fn write_event_frame_seeded(
    out: &mut [u8],
    crc_start: SeedCrc,
    durable_watermark: u64,
    sequence: u64,
    timestamp_ns: i64,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    debug_assert!(
        durable_watermark < sequence,
        "an event cannot be acknowledged before it is written"
    );
    let payload_len = put_event_payload(
        &mut out[FRAME_HEADER_BYTES..],
        sequence,
        timestamp_ns,
        kind,
        event_bytes,
    );
    finish_frame_v2(
        out,
        crc_start,
        RecordKind::Event,
        payload_len,
        durable_watermark,
    )
}

/// The CRC of a version 2 frame seed (segment number, then salt), from which every frame
/// CRC of that segment continues; see [`FrameSeed::crc_start`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedCrc(u32);

impl FrameSeed {
    /// The CRC of the seed alone. Every frame CRC of the segment starts from it, so a writer
    /// computes it once per group instead of hashing the seed again for every frame.
    pub fn crc_start(&self) -> SeedCrc {
        let mut seed = [0u8; 16];
        seed[0..8].copy_from_slice(&self.segment_number.to_le_bytes());
        seed[8..16].copy_from_slice(&self.salt.to_le_bytes());
        SeedCrc(crc32fast::hash(&seed))
    }
}

/// A time as the stored i64 nanoseconds since the Unix epoch (saturating past 2262).
pub fn timestamp_ns(timestamp: DateTime<Utc>) -> i64 {
    timestamp.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Writes an event payload at the start of `payload` and returns its length.
fn put_event_payload(
    payload: &mut [u8],
    sequence: u64,
    timestamp_ns: i64,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    let kind_index: u32 = match kind {
        EventKind::Start => 0,
        EventKind::Stop => 1,
        EventKind::Modify => 2,
    };
    let payload_len = EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len();
    let payload = &mut payload[..payload_len];
    let (fixed, rest) = payload.split_at_mut(16);
    fixed[0..8].copy_from_slice(&sequence.to_le_bytes());
    fixed[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    rest[..event_bytes.len()].copy_from_slice(event_bytes);
    rest[event_bytes.len()..].copy_from_slice(&kind_index.to_le_bytes());
    payload_len
}

/// Writes a 16-byte payload of a sequence-like word and a time (checkpoint and watermark).
fn put_word_and_time(payload: &mut [u8], word: u64, timestamp: DateTime<Utc>) -> usize {
    let timestamp_ns = timestamp.timestamp_nanos_opt().unwrap_or(i64::MAX);
    payload[0..8].copy_from_slice(&word.to_le_bytes());
    payload[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    16
}

/// Bytes of a checkpoint frame.
pub const CHECKPOINT_FRAME_BYTES: usize = frame_len(16);

/// Writes one checkpoint frame at the start of `out` (at least [`CHECKPOINT_FRAME_BYTES`])
/// and returns its length.
pub fn write_checkpoint_frame(
    out: &mut [u8],
    seed: FrameSeed,
    durable_watermark: u64,
    checkpoint: &CheckpointEntry,
) -> usize {
    let payload_len = put_word_and_time(
        &mut out[FRAME_HEADER_BYTES..],
        checkpoint.acked_through,
        checkpoint.timestamp,
    );
    finish_frame(
        out,
        FrameLayout::V2(seed),
        RecordKind::Checkpoint,
        payload_len,
        durable_watermark,
    )
}

/// Bytes of a watermark frame.
pub const WATERMARK_FRAME_BYTES: usize = frame_len(16);

/// Writes one watermark frame at the start of `out` (at least [`WATERMARK_FRAME_BYTES`]) and
/// returns its length. Its payload and its header both carry `durable_watermark`.
pub fn write_watermark_frame(
    out: &mut [u8],
    seed: FrameSeed,
    durable_watermark: u64,
    timestamp: DateTime<Utc>,
) -> usize {
    let payload_len =
        put_word_and_time(&mut out[FRAME_HEADER_BYTES..], durable_watermark, timestamp);
    finish_frame(
        out,
        FrameLayout::V2(seed),
        RecordKind::Watermark,
        payload_len,
        durable_watermark,
    )
}

/// Fills in the header of the frame whose payload is already in place after it, zeroes the
/// padding and returns the frame length. `durable_watermark` is ignored in version 1.
fn finish_frame(
    out: &mut [u8],
    layout: FrameLayout,
    kind: RecordKind,
    payload_len: usize,
    durable_watermark: u64,
) -> usize {
    if let FrameLayout::V2(seed) = layout {
        return finish_frame_v2(out, seed.crc_start(), kind, payload_len, durable_watermark);
    }
    assert!(
        payload_len <= MAX_PAYLOAD_BYTES,
        "payload size checked by the encoder"
    );
    let header_bytes = layout.header_bytes();
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[4] = kind as u8;
    let header = &mut header[..header_bytes];
    let crc = frame_crc(
        layout,
        header,
        &out[header_bytes..header_bytes + payload_len],
    );
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    out[..header_bytes].copy_from_slice(header);
    let len = layout.frame_len(payload_len);
    out[header_bytes + payload_len..len].fill(0);
    len
}

/// [`finish_frame`] for version 2, continuing the CRC from the seed's. The CRC covers the
/// seed, header bytes 0..8 and 12..24, and the payload ([`frame_crc`]); header bytes 12..24
/// and the payload are adjacent in `out`, so they are hashed in one piece.
fn finish_frame_v2(
    out: &mut [u8],
    crc_start: SeedCrc,
    kind: RecordKind,
    payload_len: usize,
    durable_watermark: u64,
) -> usize {
    assert!(
        payload_len <= MAX_PAYLOAD_BYTES,
        "payload size checked by the encoder"
    );
    let header = &mut out[..FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[4..16].fill(0);
    header[4] = kind as u8;
    header[16..24].copy_from_slice(&durable_watermark.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new_with_initial(crc_start.0);
    hasher.update(&out[0..8]);
    hasher.update(&out[12..FRAME_HEADER_BYTES + payload_len]);
    let crc = hasher.finalize();
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    let len = frame_len(payload_len);
    out[FRAME_HEADER_BYTES + payload_len..len].fill(0);
    len
}

/// Appends a frame to a `Vec` with `put` writing its payload (tests and tools).
fn push_frame(
    out: &mut Vec<u8>,
    layout: FrameLayout,
    kind: RecordKind,
    payload_bytes: usize,
    durable_watermark: u64,
    put: impl FnOnce(&mut [u8]) -> usize,
) -> usize {
    let start = out.len();
    out.resize(start + layout.frame_len(payload_bytes), 0);
    let frame = &mut out[start..];
    let payload_len = put(&mut frame[layout.header_bytes()..]);
    debug_assert_eq!(payload_len, payload_bytes);
    finish_frame(frame, layout, kind, payload_len, durable_watermark)
}

/// Appends an event frame to a `Vec` (tests and tools); see [`write_event_frame`].
pub fn push_event_frame(
    out: &mut Vec<u8>,
    seed: FrameSeed,
    durable_watermark: u64,
    sequence: u64,
    timestamp: DateTime<Utc>,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    push_frame(
        out,
        FrameLayout::V2(seed),
        RecordKind::Event,
        EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len(),
        durable_watermark,
        |payload| {
            put_event_payload(
                payload,
                sequence,
                timestamp_ns(timestamp),
                kind,
                event_bytes,
            )
        },
    )
}

/// Appends a checkpoint frame to a `Vec` (tests and tools).
pub fn push_checkpoint_frame(
    out: &mut Vec<u8>,
    seed: FrameSeed,
    durable_watermark: u64,
    checkpoint: &CheckpointEntry,
) -> usize {
    push_frame(
        out,
        FrameLayout::V2(seed),
        RecordKind::Checkpoint,
        16,
        durable_watermark,
        |payload| put_word_and_time(payload, checkpoint.acked_through, checkpoint.timestamp),
    )
}

/// Appends a watermark frame to a `Vec` (tests and tools).
pub fn push_watermark_frame(
    out: &mut Vec<u8>,
    seed: FrameSeed,
    durable_watermark: u64,
    timestamp: DateTime<Utc>,
) -> usize {
    push_frame(
        out,
        FrameLayout::V2(seed),
        RecordKind::Watermark,
        16,
        durable_watermark,
        |payload| put_word_and_time(payload, durable_watermark, timestamp),
    )
}

/// Appends a version 1 event frame to a `Vec` (tests and tools that need an old log; the log
/// itself never writes version 1).
pub fn push_event_frame_v1(
    out: &mut Vec<u8>,
    segment_number: u64,
    sequence: u64,
    timestamp: DateTime<Utc>,
    kind: EventKind,
    event_bytes: &[u8],
) -> usize {
    push_frame(
        out,
        FrameLayout::V1 { segment_number },
        RecordKind::Event,
        EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len(),
        0,
        |payload| {
            put_event_payload(
                payload,
                sequence,
                timestamp_ns(timestamp),
                kind,
                event_bytes,
            )
        },
    )
}

/// Appends a version 1 checkpoint frame to a `Vec` (tests and tools).
pub fn push_checkpoint_frame_v1(
    out: &mut Vec<u8>,
    segment_number: u64,
    checkpoint: &CheckpointEntry,
) -> usize {
    push_frame(
        out,
        FrameLayout::V1 { segment_number },
        RecordKind::Checkpoint,
        16,
        0,
        |payload| put_word_and_time(payload, checkpoint.acked_through, checkpoint.timestamp),
    )
}

/// CRC-32 (IEEE) of a frame. Version 1: segment number ‖ header bytes 0..8 ‖ payload.
/// Version 2: segment number ‖ salt ‖ header bytes 0..8 ‖ header bytes 12..24 ‖ payload.
///
/// The segment number means bytes left over from another segment never validate; the salt
/// means bytes from another WAL, or event payload bytes that happen to look like a frame of
/// this segment, validate only with the odds of guessing a 64-bit random number.
fn frame_crc(layout: FrameLayout, header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    match layout {
        FrameLayout::V1 { segment_number } => {
            hasher.update(&segment_number.to_le_bytes());
            hasher.update(&header[0..8]);
        }
        FrameLayout::V2(seed) => {
            hasher.update(&seed.segment_number.to_le_bytes());
            hasher.update(&seed.salt.to_le_bytes());
            hasher.update(&header[0..8]);
            hasher.update(&header[12..24]);
        }
    }
    hasher.update(payload);
    hasher.finalize()
}

/// [`frame_crc`] of a whole frame (`frame` is header and payload, contiguous), in two hasher
/// updates instead of five: the seed words and header bytes 0..8 are gathered into one small
/// buffer, and in version 2 header bytes 12..24 run straight on into the payload, so they
/// are hashed together with it. Same bytes in the same order, so the same CRC.
fn checked_frame_crc(layout: FrameLayout, frame: &[u8]) -> u32 {
    let mut prefix = [0u8; 24];
    let (prefix_len, rest_start) = match layout {
        FrameLayout::V1 { segment_number } => {
            prefix[0..8].copy_from_slice(&segment_number.to_le_bytes());
            prefix[8..16].copy_from_slice(&frame[0..8]);
            (16, FRAME_HEADER_BYTES_V1)
        }
        FrameLayout::V2(seed) => {
            prefix[0..8].copy_from_slice(&seed.segment_number.to_le_bytes());
            prefix[8..16].copy_from_slice(&seed.salt.to_le_bytes());
            prefix[16..24].copy_from_slice(&frame[0..8]);
            (24, 12)
        }
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&prefix[..prefix_len]);
    hasher.update(&frame[rest_start..]);
    hasher.finalize()
}

/// What the bytes at one frame position are.
#[derive(Debug, PartialEq)]
pub enum FrameProbe<'a> {
    /// A zero length word: padding, or the end of the records.
    Zero,
    /// Not a valid frame (bad length, kind, reserved bytes or CRC).
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
        /// Bytes it occupies, padding included (less when the window ends in its padding).
        frame_bytes: usize,
        /// The durable watermark in its header (0 in version 1).
        durable_watermark: u64,
        /// Whether every padding byte present is zero. Padding is outside the CRC; a nonzero
        /// byte there is damage to report, but the record itself is intact.
        padding_is_zero: bool,
    },
}

/// Examines the bytes at the start of `window` as a frame laid out as `layout`.
///
/// `at_end` says that `window` holds everything up to the end of the segment, so a frame that
/// runs past it is torn (`Invalid`) rather than incomplete (`NeedMore`).
pub fn probe_frame(window: &[u8], layout: FrameLayout, at_end: bool) -> FrameProbe<'_> {
    let header_bytes = layout.header_bytes();
    if window.len() < header_bytes {
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
                bytes: header_bytes,
            }
        };
    }
    let payload_len = le_u32(&window[0..4]) as usize;
    if payload_len == 0 {
        return FrameProbe::Zero;
    }
    let Some(kind) = RecordKind::from_byte(window[4], layout) else {
        return FrameProbe::Invalid;
    };
    if payload_len > MAX_PAYLOAD_BYTES || window[5..8] != [0, 0, 0] || window[12..16] != [0; 4] {
        return FrameProbe::Invalid;
    }
    let frame_bytes = layout.frame_len(payload_len);
    let payload_end = header_bytes + payload_len;
    if window.len() < frame_bytes && !at_end {
        // Wait for the padding too, so it can be checked.
        return FrameProbe::NeedMore { bytes: frame_bytes };
    }
    if window.len() < payload_end {
        return FrameProbe::Invalid;
    }
    let payload = &window[header_bytes..payload_end];
    if checked_frame_crc(layout, &window[..payload_end]) != le_u32(&window[8..12]) {
        return FrameProbe::Invalid;
    }
    let durable_watermark = match layout {
        FrameLayout::V1 { .. } => 0,
        FrameLayout::V2(_) => le_u64(&window[16..24]),
    };
    let frame_end = frame_bytes.min(window.len());
    FrameProbe::Valid {
        kind,
        payload,
        frame_bytes: frame_end,
        durable_watermark,
        padding_is_zero: window[payload_end..frame_end].iter().all(|&b| b == 0),
    }
}

/// Bytes of the device's atomic write unit assumed by the format (a logical sector).
pub const SECTOR_BYTES: usize = 512;

/// Whether the bytes at the start of `region` (file offset `region_offset`) are a frame that
/// one changed byte made invalid, in a way a torn write cannot explain.
///
/// A torn write leaves each sector either as it was (zeros, past the committed records) or as
/// written. So a byte that must change for the frame to be valid is evidence of corruption
/// unless it is zero and every byte of its sector within the window is zero too. Used on
/// short invalid regions at the end of the newest segment, where the durable watermark cannot
/// tell corruption from a torn write (the damaged frame may be the one that carried it).
/// Regions longer than one sector are not examined (returns false).
pub fn corrupted_by_one_byte(region: &[u8], region_offset: u64, layout: FrameLayout) -> bool {
    if region.is_empty() || region.len() > SECTOR_BYTES {
        return false;
    }
    // A frame may end in zero bytes past the last nonzero one; a changed byte is at most one
    // word past it.
    let examined = region.len() + 2 * FRAME_ALIGN_BYTES;
    let mut window = region.to_vec();
    window.resize(examined + SECTOR_BYTES, 0);
    if matches!(probe_frame(&window, layout, true), FrameProbe::Valid { .. }) {
        return false; // Nothing to explain.
    }
    let sector = SECTOR_BYTES as u64;
    for index in 0..examined {
        let original = window[index];
        if original == 0 {
            let absolute = region_offset + index as u64;
            let sector_start = absolute / sector * sector;
            let from = sector_start.saturating_sub(region_offset) as usize;
            let to = ((sector_start + sector - region_offset) as usize).min(window.len());
            if window[from..to].iter().all(|&b| b == 0) {
                continue; // A whole zero sector: a torn write could have left it.
            }
        }
        for value in 0..=u8::MAX {
            if value == original {
                continue;
            }
            window[index] = value;
            if matches!(probe_frame(&window, layout, true), FrameProbe::Valid { .. }) {
                return true;
            }
        }
        window[index] = original;
    }
    false
}

/// Decodes a verified payload into an owned record ([`decode_payload_owned`]; see
/// [`decode_payload_view`] to look at a record without allocating).
pub fn decode_payload(kind: RecordKind, payload: &[u8]) -> Result<Record, PayloadError> {
    decode_payload_owned(kind, payload)
}

/// Decodes a verified payload with bincode itself: the reference the hand-written decoder is
/// tested against (tests and tools).
pub fn decode_payload_with_bincode(
    kind: RecordKind,
    payload: &[u8],
) -> Result<Record, PayloadError> {
    let config = bincode_config();
    let refused = |error: bincode::error::DecodeError| PayloadError::Bincode(error.to_string());
    Ok(match kind {
        RecordKind::Event => {
            let (entry, _) = bincode::serde::decode_from_slice::<WalEntry, _>(payload, config)
                .map_err(refused)?;
            Record::Event(entry)
        }
        RecordKind::Checkpoint => {
            let (entry, _) =
                bincode::serde::decode_from_slice::<CheckpointEntry, _>(payload, config)
                    .map_err(refused)?;
            Record::Checkpoint(entry)
        }
        RecordKind::Watermark => {
            let (entry, _) =
                bincode::serde::decode_from_slice::<WatermarkEntry, _>(payload, config)
                    .map_err(refused)?;
            Record::Watermark(entry)
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

    const SEED: FrameSeed = FrameSeed {
        segment_number: 5,
        salt: 0x5a17_5a17_5a17_5a17,
    };

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

    fn frame_of(entry: &WalEntry, seed: FrameSeed, watermark: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let event_bytes = encode_event(&entry.event).unwrap();
        let len = push_event_frame(
            &mut out,
            seed,
            watermark,
            entry.sequence,
            entry.timestamp,
            entry.kind,
            &event_bytes,
        );
        assert_eq!(len, out.len());
        out
    }

    fn v2(seed: FrameSeed) -> FrameLayout {
        FrameLayout::V2(seed)
    }

    #[test]
    fn hand_assembled_payload_equals_bincode_encoding() {
        let entry = entry(42);
        let frame = frame_of(&entry, SEED, 41);
        let expected = encode_entry_with_bincode(&entry).unwrap();
        assert_eq!(
            &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + expected.len()],
            &expected[..]
        );
        assert_eq!(frame.len() % FRAME_ALIGN_BYTES, 0);
        assert_eq!(le_u64(&frame[16..24]), 41);
    }

    #[test]
    fn frame_round_trips_and_is_bound_to_its_segment_and_salt() {
        let entry = entry(9);
        let frame = frame_of(&entry, SEED, 3);
        match probe_frame(&frame, v2(SEED), true) {
            FrameProbe::Valid {
                kind,
                payload,
                frame_bytes,
                durable_watermark,
                padding_is_zero,
            } => {
                assert_eq!(kind, RecordKind::Event);
                assert_eq!(frame_bytes, frame.len());
                assert_eq!(durable_watermark, 3);
                assert!(padding_is_zero);
                assert_eq!(event_payload_sequence(payload), Some(9));
                assert_eq!(decode_payload(kind, payload).unwrap(), Record::Event(entry));
            }
            other => panic!("expected a valid frame, got {other:?}"),
        }
        let other_segment = FrameSeed {
            segment_number: 6,
            ..SEED
        };
        assert_eq!(
            probe_frame(&frame, v2(other_segment), true),
            FrameProbe::Invalid
        );
        let other_salt = FrameSeed {
            salt: SEED.salt + 1,
            ..SEED
        };
        assert_eq!(
            probe_frame(&frame, v2(other_salt), true),
            FrameProbe::Invalid
        );
        let as_v1 = FrameLayout::V1 { segment_number: 5 };
        assert_eq!(probe_frame(&frame, as_v1, true), FrameProbe::Invalid);
    }

    #[test]
    fn every_single_bit_flip_in_a_frame_is_detected() {
        let frame = frame_of(&entry(1), SEED, 0);
        let payload_len = le_u32(&frame) as usize;
        for bit in 0..(FRAME_HEADER_BYTES + payload_len) * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(
                    probe_frame(&damaged, v2(SEED), true),
                    FrameProbe::Valid { .. }
                ),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn nonzero_padding_is_reported_and_the_record_kept() {
        let frame = frame_of(&entry(1), SEED, 0);
        let payload_len = le_u32(&frame) as usize;
        assert!(
            FRAME_HEADER_BYTES + payload_len < frame.len(),
            "test needs padding"
        );
        for index in FRAME_HEADER_BYTES + payload_len..frame.len() {
            let mut damaged = frame.clone();
            damaged[index] = 0x40;
            assert!(matches!(
                probe_frame(&damaged, v2(SEED), true),
                FrameProbe::Valid {
                    padding_is_zero: false,
                    ..
                }
            ));
        }
    }

    #[test]
    fn version_1_frames_still_read() {
        let entry = entry(4);
        let mut out = Vec::new();
        let event_bytes = encode_event(&entry.event).unwrap();
        push_event_frame_v1(
            &mut out,
            5,
            entry.sequence,
            entry.timestamp,
            entry.kind,
            &event_bytes,
        );
        let layout = FrameLayout::V1 { segment_number: 5 };
        assert_eq!(
            out.len(),
            layout.frame_len(EVENT_FIXED_PAYLOAD_BYTES + event_bytes.len())
        );
        let FrameProbe::Valid {
            kind,
            payload,
            durable_watermark,
            ..
        } = probe_frame(&out, layout, true)
        else {
            panic!("v1 frame invalid");
        };
        assert_eq!(durable_watermark, 0);
        assert_eq!(decode_payload(kind, payload).unwrap(), Record::Event(entry));
        assert_eq!(probe_frame(&out, v2(SEED), true), FrameProbe::Invalid);
        // Version 1 has no watermark kind.
        let mut watermark = Vec::new();
        push_watermark_frame(&mut watermark, SEED, 1, DateTime::from_timestamp_nanos(0));
        watermark[4] = RecordKind::Watermark as u8;
        assert_eq!(probe_frame(&watermark, layout, true), FrameProbe::Invalid);
    }

    #[test]
    fn checkpoint_and_watermark_round_trip() {
        let checkpoint = CheckpointEntry {
            acked_through: 77,
            timestamp: DateTime::from_timestamp_nanos(5),
        };
        let mut out = vec![];
        assert_eq!(
            push_checkpoint_frame(&mut out, SEED, 80, &checkpoint),
            CHECKPOINT_FRAME_BYTES
        );
        assert_eq!(
            push_watermark_frame(&mut out, SEED, 81, DateTime::from_timestamp_nanos(6)),
            WATERMARK_FRAME_BYTES
        );
        let FrameProbe::Valid {
            kind,
            payload,
            durable_watermark: 80,
            ..
        } = probe_frame(&out, v2(SEED), true)
        else {
            panic!("checkpoint frame invalid");
        };
        assert_eq!(
            decode_payload(kind, payload).unwrap(),
            Record::Checkpoint(checkpoint)
        );
        let FrameProbe::Valid {
            kind,
            payload,
            durable_watermark: 81,
            ..
        } = probe_frame(&out[CHECKPOINT_FRAME_BYTES..], v2(SEED), true)
        else {
            panic!("watermark frame invalid");
        };
        assert_eq!(
            decode_payload(kind, payload).unwrap(),
            Record::Watermark(WatermarkEntry {
                durable_watermark: 81,
                timestamp: DateTime::from_timestamp_nanos(6),
            })
        );
        let mut buf = [0xffu8; WATERMARK_FRAME_BYTES];
        write_watermark_frame(&mut buf, SEED, 81, DateTime::from_timestamp_nanos(6));
        assert_eq!(&buf[..], &out[CHECKPOINT_FRAME_BYTES..]);
    }

    #[test]
    fn incomplete_frames_ask_for_more_or_are_torn_at_the_end() {
        let frame = frame_of(&entry(1), SEED, 0);
        let cut = &frame[..frame.len() - 12];
        assert!(matches!(
            probe_frame(cut, v2(SEED), false),
            FrameProbe::NeedMore { .. }
        ));
        assert_eq!(probe_frame(cut, v2(SEED), true), FrameProbe::Invalid);
        assert!(matches!(
            probe_frame(&frame[..5], v2(SEED), false),
            FrameProbe::NeedMore { .. }
        ));
        assert_eq!(probe_frame(&[0u8; 3], v2(SEED), true), FrameProbe::Zero);
    }

    #[test]
    fn oversized_length_is_invalid_without_allocating() {
        let mut bytes = [0u8; FRAME_HEADER_BYTES];
        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes[4] = 1;
        assert_eq!(probe_frame(&bytes, v2(SEED), false), FrameProbe::Invalid);
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage() {
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            segment_number: 12,
            first_sequence: 1000,
            created_unix_ns: 1_700_000_000_000_000_000,
            salt: 0x0123_4567_89ab_cdef,
        };
        let block = header.encode_block();
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        assert_eq!(header.frame_layout(), FrameLayout::V2(header.frame_seed()));
        assert_eq!(SegmentHeader::decode(&[0u8; 4096]), Err(HeaderError::Blank));
        assert_eq!(
            SegmentHeader::decode(&block[..10]),
            Err(HeaderError::Truncated)
        );
        assert_eq!(
            SegmentHeader::decode(&block[..48]),
            Err(HeaderError::Truncated)
        );
        for index in 0..52 {
            let mut damaged = block;
            damaged[index] ^= 0x10;
            assert!(
                SegmentHeader::decode(&damaged).is_err(),
                "header byte {index} flip went unnoticed"
            );
        }
        let mut damaged = block;
        damaged[0] = b'X';
        assert_eq!(SegmentHeader::decode(&damaged), Err(HeaderError::BadMagic));
        damaged = block;
        damaged[0..52].fill(0xee);
        assert_eq!(
            SegmentHeader::salt_candidates(&damaged).collect::<Vec<_>>(),
            vec![0xeeee_eeee_eeee_eeee, header.salt]
        );
        let zero_salt = SegmentHeader { salt: 0, ..header };
        assert_eq!(
            SegmentHeader::decode(&zero_salt.encode_block()),
            Err(HeaderError::ZeroSalt)
        );
        let future = SegmentHeader {
            version: FORMAT_VERSION + 1,
            ..header
        };
        assert_eq!(
            SegmentHeader::decode(&future.encode_block()),
            Err(HeaderError::UnsupportedVersion(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn version_1_headers_still_decode() {
        let header = SegmentHeader {
            version: FORMAT_VERSION_1,
            segment_number: 3,
            first_sequence: 10,
            created_unix_ns: 5,
            salt: 0,
        };
        let block = header.encode_block();
        assert_eq!(block[44..52], [0u8; 8]);
        assert_eq!(SegmentHeader::decode(&block), Ok(header));
        assert_eq!(header.frame_layout(), FrameLayout::V1 { segment_number: 3 });
        // Version 1 headers are 44 bytes: a 44-byte file holds a whole one.
        assert_eq!(SegmentHeader::decode(&block[..44]), Ok(header));
    }

    #[test]
    fn one_changed_byte_is_told_from_a_torn_write() {
        let mut frame = Vec::new();
        push_watermark_frame(&mut frame, SEED, 9, DateTime::from_timestamp_nanos(1 << 60));
        let layout = v2(SEED);
        assert!(
            !corrupted_by_one_byte(&frame, 4096, layout),
            "valid is not corrupted"
        );
        for index in 0..frame.len() {
            for value in [0u8, 1, 0x80, 0xff] {
                let mut damaged = frame.clone();
                if damaged[index] == value {
                    continue;
                }
                damaged[index] = value;
                let end = damaged.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                assert!(
                    corrupted_by_one_byte(&damaged[..end], 4096 + 64, layout),
                    "byte {index} set to {value}"
                );
            }
        }
        // A frame cut at a sector boundary (the rest of it never written) is a torn write.
        let entry = entry(3);
        let long = frame_of(&entry, SEED, 2);
        let offset = 4096 + SECTOR_BYTES as u64 - 40;
        let torn = &long[..40];
        assert!(!corrupted_by_one_byte(torn, offset, layout));
    }

    #[test]
    fn seeded_frames_carry_the_crc_of_the_whole_definition() {
        // Every payload length modulo the CRC's block sizes, so both of its code paths run.
        for extra in 0..300usize {
            let event_bytes: Vec<u8> = (0..extra).map(|i| (i * 7 + 3) as u8).collect();
            let mut out = vec![0xaa_u8; frame_len(EVENT_FIXED_PAYLOAD_BYTES + extra)];
            let len = write_event_frame_seeded(
                &mut out,
                SEED.crc_start(),
                4,
                5,
                timestamp_ns(DateTime::from_timestamp_nanos(6)),
                EventKind::Stop,
                &event_bytes,
            );
            assert_eq!(len, out.len());
            let payload_len = le_u32(&out) as usize;
            let expected = frame_crc(
                v2(SEED),
                &out[..FRAME_HEADER_BYTES],
                &out[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len],
            );
            assert_eq!(
                le_u32(&out[8..12]),
                expected,
                "payload of {extra} extra bytes"
            );
            assert!(matches!(
                probe_frame(&out, v2(SEED), true),
                FrameProbe::Valid {
                    padding_is_zero: true,
                    ..
                }
            ));
        }
    }

    /// The hand-written event encoder must produce bincode's bytes for every event.
    mod hand_encoder {
        use super::*;
        use proptest::prelude::*;

        fn time() -> impl Strategy<Value = DateTime<Utc>> {
            prop_oneof![
                any::<i64>().prop_map(DateTime::from_timestamp_nanos),
                Just(DateTime::<Utc>::MAX_UTC),
                Just(DateTime::<Utc>::MIN_UTC),
            ]
        }

        prop_compose! {
            fn event()(
                pid in any::<u32>(),
                ppid in any::<Option<u32>>(),
                name in ".{0,12}",
                executable_path in proptest::option::of(".{0,20}"),
                command_line in proptest::collection::vec(".{0,10}", 0..4),
                start_time in proptest::option::of(time()),
                cpu_usage_percent in any::<Option<f64>>(),
                memory_usage_bytes in any::<Option<u64>>(),
                executable_hash in proptest::option::of("[0-9a-f]{0,8}"),
                hash_algorithm in proptest::option::of("[a-z0-9]{0,6}"),
                user_id in proptest::option::of("[0-9]{0,5}"),
                accessible in any::<bool>(),
                file_exists in any::<bool>(),
                collection_time in time(),
                platform_metadata in proptest::collection::btree_map(".{0,6}", ".{0,6}", 0..4),
                truncated in any::<bool>(),
            ) -> ProcessEvent {
                ProcessEvent {
                    pid, ppid, name, executable_path, command_line, start_time,
                    cpu_usage_percent, memory_usage_bytes, executable_hash, hash_algorithm,
                    user_id, accessible, file_exists, collection_time, platform_metadata,
                    truncated,
                }
            }
        }

        proptest! {
            #[test]
            fn equals_bincode(event in event(), prefix in proptest::collection::vec(any::<u8>(), 0..3)) {
                let expected = bincode::serde::encode_to_vec(&event, bincode_config());
                let mut out = prefix.clone();
                let written = encode_event_into(&event, &mut out);
                match expected {
                    Ok(expected) => {
                        prop_assert_eq!(written.ok(), Some(expected.len()));
                        prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
                        prop_assert_eq!(&out[prefix.len()..], &expected[..]);
                    }
                    // Times beyond i64 nanoseconds: refused either way.
                    Err(_) => prop_assert!(written.is_err()),
                }
            }
        }
    }

    #[test]
    fn salts_are_nonzero_and_differ() {
        let salts: Vec<u64> = (0..16).map(|_| new_wal_salt()).collect();
        assert!(salts.iter().all(|&salt| salt != 0));
        let mut unique = salts.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), salts.len());
    }
}
