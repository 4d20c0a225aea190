//! [`WireError`]: everything that can be wrong with bytes on the broker link.
//!
//! Owns only the error type; every codec function returns it. Peers are untrusted, so each
//! variant names what was being decoded rather than carrying free-form text.

use crate::event::UnknownEventKind;

/// A frame, envelope, payload, topic or control message that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A frame body is larger than the protocol allows (checked before any allocation).
    #[error("frame body of {body_bytes} bytes exceeds the limit of {max_frame_bytes} bytes")]
    FrameTooLarge {
        /// Claimed or actual body length.
        body_bytes: u64,
        /// The limit in force.
        max_frame_bytes: usize,
    },
    /// Fewer bytes than a complete frame (or length prefix) were supplied.
    #[error("truncated frame: need {needed_bytes} bytes, have {available_bytes}")]
    TruncatedFrame {
        /// Bytes a complete frame needs.
        needed_bytes: usize,
        /// Bytes available.
        available_bytes: usize,
    },
    /// postcard could not encode or decode a value.
    #[error("postcard {operation} of {what} failed")]
    Postcard {
        /// `encode` or `decode`.
        operation: &'static str,
        /// The type being processed (e.g. `Message`).
        what: &'static str,
        /// postcard's error.
        #[source]
        source: postcard::Error,
    },
    /// Bytes were left over after a complete postcard value.
    #[error("{trailing_bytes} trailing bytes after a complete {what}")]
    TrailingBytes {
        /// The type that was decoded.
        what: &'static str,
        /// How many bytes followed it.
        trailing_bytes: usize,
    },
    /// A message id was not exactly 16 bytes.
    #[error("message id has {id_bytes} bytes, expected 16")]
    BadMessageId {
        /// Length found.
        id_bytes: usize,
    },
    /// A timestamp's nanoseconds were not below one second.
    #[error("timestamp nanoseconds {nanos} are not below 1_000_000_000")]
    BadTimestampNanos {
        /// The offending value.
        nanos: u32,
    },
    /// A timestamp cannot be represented as a `DateTime<Utc>`.
    #[error("timestamp {secs} s + {nanos} ns is out of range")]
    TimestampOutOfRange {
        /// Seconds since the Unix epoch (may be negative when carried in metadata).
        secs: i128,
        /// Nanoseconds within the second.
        nanos: u32,
    },
    /// A topic breaks the topic rules.
    #[error("invalid topic {topic:?}: {rule}")]
    InvalidTopic {
        /// The topic as received.
        topic: String,
        /// The rule it breaks.
        rule: TopicRule,
    },
    /// A subscription pattern breaks the pattern rules.
    #[error("invalid pattern {pattern:?}: {rule}")]
    InvalidPattern {
        /// The pattern as received.
        pattern: String,
        /// The rule it breaks.
        rule: TopicRule,
    },
    /// A `procmond.*` metadata key this version does not know.
    #[error("unknown metadata key {key:?} in a procmond payload")]
    UnknownMetadataKey {
        /// The key.
        key: String,
    },
    /// A required `procmond.*` metadata key is missing.
    #[error("metadata key {key:?} is missing from a procmond payload")]
    MissingMetadataKey {
        /// The key.
        key: &'static str,
    },
    /// A `procmond.*` metadata value cannot be parsed.
    #[error("metadata key {key:?} has an invalid value {value:?}")]
    BadMetadataValue {
        /// The key.
        key: &'static str,
        /// The value as received.
        value: String,
    },
    /// The payload's `procmond.version` is not one this decoder understands.
    #[error("procmond payload version {version:?} is not supported (expected {expected})")]
    UnsupportedPayloadVersion {
        /// The version as received.
        version: String,
        /// The version this decoder understands.
        expected: &'static str,
    },
    /// The payload carried no `procmond.version`: it was not produced by procmond-wal.
    #[error("payload is not a procmond-wal process event (no procmond.version key)")]
    NotProcmondPayload,
    /// The `procmond.kind` value is not start/stop/modify.
    #[error(transparent)]
    UnknownEventKind(#[from] UnknownEventKind),
    /// A message arrived with a message type or topic the operation does not accept.
    #[error(
        "expected a {expected_type:?} message on {expected_topic:?}, got {found_type:?} on {found_topic:?}"
    )]
    UnexpectedMessage {
        /// The message type expected.
        expected_type: crate::wire::MessageType,
        /// The topic expected.
        expected_topic: &'static str,
        /// The message type received.
        found_type: crate::wire::MessageType,
        /// The topic received.
        found_topic: String,
    },
    /// A publisher id is empty or too long.
    #[error("publisher id of {id_bytes} bytes is not within 1..={max_bytes}")]
    BadPublisherId {
        /// Length of the id.
        id_bytes: usize,
        /// The longest allowed id.
        max_bytes: usize,
    },
}

/// The topic or pattern rule that was broken (see `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicRule {
    /// Empty string or an empty segment (`a..b`, leading or trailing dot).
    #[error("empty segment")]
    EmptySegment,
    /// More than five segments.
    #[error("more than 5 segments")]
    TooManySegments,
    /// A character outside `a-z 0-9 - _`.
    #[error("character outside a-z 0-9 - _")]
    BadCharacter,
    /// First segment is neither `events` nor `control`.
    #[error("first segment must be events or control")]
    BadFirstSegment,
    /// `#` is not the last segment, or a wildcard is mixed with other characters.
    #[error("misplaced wildcard")]
    MisplacedWildcard,
}
