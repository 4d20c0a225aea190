//! The postcard envelope `Message` of daemoneye-eventbus (docs/protocol.md §3).
//!
//! Owns the envelope's field and enum order, the 16-byte message id encoding and the
//! `SystemTime`-compatible timestamp. Field order here *is* the wire format: never reorder.
//! Never does I/O.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::wire::error::WireError;
use crate::wire::frame::{FRAME_LENGTH_BYTES, seal_frame};

const NANOS_PER_SECOND: u32 = 1_000_000_000;

/// The kind of envelope; the discriminant is the postcard variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageType {
    /// 0: a published event.
    Event,
    /// 1: a control message (our hello/welcome/ack/subscribe live here).
    Control,
    /// 2: a heartbeat.
    Heartbeat,
    /// 3: the peer is going away.
    Shutdown,
}

/// A point in time as serde serializes `std::time::SystemTime`: seconds and nanoseconds
/// since the Unix epoch, in that order (postcard: two varints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WireTime {
    /// Whole seconds since the Unix epoch.
    pub secs: u64,
    /// Nanoseconds within the second; always below 1_000_000_000 in a valid value.
    pub nanos: u32,
}

impl WireTime {
    /// The Unix epoch.
    pub const EPOCH: WireTime = WireTime { secs: 0, nanos: 0 };

    /// Now, by the system clock (the epoch if the clock is before it).
    pub fn now() -> WireTime {
        WireTime::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime`; times before the epoch become the epoch, which `SystemTime`'s
    /// own serde implementation cannot encode either.
    pub fn from_system_time(time: SystemTime) -> WireTime {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        WireTime {
            secs: since.as_secs(),
            nanos: since.subsec_nanos(),
        }
    }

    /// Converts a UTC time at or after the epoch; `None` for earlier times.
    ///
    /// A chrono leap second (sub-second nanos ≥ 1 s) becomes the start of the next second.
    pub fn from_datetime(time: DateTime<Utc>) -> Option<WireTime> {
        // Seconds and nanoseconds as chrono keeps them (no 128-bit round trip: this runs for
        // every published event). Only a leap second carries nanos of a second or more.
        let (secs, nanos) = match time.timestamp_subsec_nanos() {
            nanos if nanos >= NANOS_PER_SECOND => {
                (time.timestamp().checked_add(1)?, nanos - NANOS_PER_SECOND)
            }
            nanos => (time.timestamp(), nanos),
        };
        Some(WireTime {
            secs: u64::try_from(secs).ok()?,
            nanos,
        })
    }

    /// Converts to a UTC time, checking the value is valid and representable.
    pub fn to_datetime(self) -> Result<DateTime<Utc>, WireError> {
        self.validate()?;
        i64::try_from(self.secs)
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, self.nanos))
            .ok_or(WireError::TimestampOutOfRange {
                secs: i128::from(self.secs),
                nanos: self.nanos,
            })
    }

    /// Errors if the nanoseconds are not below one second.
    pub fn validate(self) -> Result<(), WireError> {
        if self.nanos >= NANOS_PER_SECOND {
            return Err(WireError::BadTimestampNanos { nanos: self.nanos });
        }
        Ok(())
    }
}

/// Nanoseconds since the Unix epoch of any chrono UTC time (i128: never overflows).
pub(crate) fn datetime_to_unix_nanos(time: DateTime<Utc>) -> i128 {
    i128::from(time.timestamp()) * i128::from(NANOS_PER_SECOND)
        + i128::from(time.timestamp_subsec_nanos())
}

/// The inverse of [`datetime_to_unix_nanos`] for values that fit a `DateTime<Utc>`.
pub(crate) fn unix_nanos_to_datetime(total_nanos: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(total_nanos.div_euclid(i128::from(NANOS_PER_SECOND))).ok()?;
    let nanos = u32::try_from(total_nanos.rem_euclid(i128::from(NANOS_PER_SECOND))).ok()?;
    DateTime::from_timestamp(secs, nanos)
}

/// Correlation metadata carried by every envelope (field order is the wire format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelationMetadata {
    /// Identifies this message's workflow step; ours is stable per event
    /// (`{publisher_id}:{sequence}`).
    pub correlation_id: String,
    /// The parent step, if any.
    pub parent_correlation_id: Option<String>,
    /// The first step of the workflow.
    pub root_correlation_id: String,
    /// Position within the workflow.
    pub sequence_number: u64,
    /// Optional stage label.
    pub workflow_stage: Option<String>,
    /// Free-form tags (upstream uses a hash map; a sorted map encodes identically for one
    /// entry and deterministically for more).
    pub correlation_tags: BTreeMap<String, String>,
    /// When the correlation was created.
    pub created_at: WireTime,
}

impl CorrelationMetadata {
    /// Metadata for a message that starts its own workflow.
    pub fn root(correlation_id: String, sequence_number: u64, created_at: WireTime) -> Self {
        CorrelationMetadata {
            root_correlation_id: correlation_id.clone(),
            correlation_id,
            parent_correlation_id: None,
            sequence_number,
            workflow_stage: None,
            correlation_tags: BTreeMap::new(),
            created_at,
        }
    }
}

/// The daemoneye-eventbus envelope (field order is the wire format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Message id: a UUID, on the wire as a 16-byte postcard byte string (`10` + 16 bytes).
    #[serde(with = "uuid_as_bytes")]
    pub id: Uuid,
    /// Topic (see [`crate::wire::topic`]).
    pub topic: String,
    /// Correlation metadata.
    pub correlation_metadata: CorrelationMetadata,
    /// The payload (for events, a postcard `CollectionEvent`).
    #[serde(with = "payload_as_bytes")]
    pub payload: Vec<u8>,
    /// For our events: the publisher's WAL sequence. Upstream: a per-connection counter.
    pub sequence: u64,
    /// When the message was created.
    pub timestamp: WireTime,
    /// What kind of message this is.
    pub message_type: MessageType,
}

impl Message {
    /// Postcard-encodes the envelope (the frame body).
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        postcard::to_allocvec(self).map_err(|source| WireError::Postcard {
            operation: "encode",
            what: "Message",
            source,
        })
    }

    /// Encodes the envelope as one contiguous frame (prefix and body), checking the cap.
    pub fn encode_frame(&self) -> Result<Vec<u8>, WireError> {
        let frame = postcard::to_extend(self, vec![0u8; FRAME_LENGTH_BYTES]).map_err(|source| {
            WireError::Postcard {
                operation: "encode",
                what: "Message",
                source,
            }
        })?;
        seal_frame(frame)
    }

    /// Decodes a frame body; the whole body must be one envelope with valid timestamps.
    pub fn decode(body: &[u8]) -> Result<Message, WireError> {
        let message: Message = decode_exact(body, "Message")?;
        message.timestamp.validate()?;
        message.correlation_metadata.created_at.validate()?;
        Ok(message)
    }
}

/// Postcard-decodes exactly one `T` from `bytes`, refusing trailing bytes.
pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<T, WireError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|source| WireError::Postcard {
        operation: "decode",
        what,
        source,
    })?;
    if !rest.is_empty() {
        return Err(WireError::TrailingBytes {
            what,
            trailing_bytes: rest.len(),
        });
    }
    Ok(value)
}

/// Postcard-encodes a value.
pub(crate) fn encode_value<T: Serialize>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, WireError> {
    postcard::to_allocvec(value).map_err(|source| WireError::Postcard {
        operation: "encode",
        what,
        source,
    })
}

/// The message id as a length-prefixed byte string, which is what `uuid`'s own serde support
/// emits for non-human-readable formats (and what upstream therefore sends). A `[u8; 16]`
/// would be a postcard tuple without the `10` length byte and would not be compatible.
mod uuid_as_bytes {
    use std::fmt;

    use serde::de::{Error, Visitor};

    use super::{Deserializer, Serializer, Uuid};

    pub(super) fn serialize<S: Serializer>(id: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(id.as_bytes())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Uuid, D::Error> {
        deserializer.deserialize_bytes(IdVisitor)
    }

    struct IdVisitor;

    impl Visitor<'_> for IdVisitor {
        type Value = Uuid;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("16 bytes")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Uuid, E> {
            Uuid::from_slice(bytes).map_err(|_| E::invalid_length(bytes.len(), &self))
        }
    }
}

/// The payload as a postcard byte string: the same bytes on the wire as serde's default for
/// a `Vec<u8>` (a varint length, then one byte per element), but encoded and decoded as one
/// slice instead of element by element.
mod payload_as_bytes {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};

    use super::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        payload: &[u8],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(payload)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_bytes(PayloadVisitor)
    }

    struct PayloadVisitor;

    impl<'de> Visitor<'de> for PayloadVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        // Self-describing formats may present bytes as a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_time_matches_system_time_serde() {
        let time = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let ours = postcard::to_allocvec(&WireTime::from_system_time(time)).expect("encode");
        let std_serde = postcard::to_allocvec(&time).expect("encode");
        assert_eq!(ours, std_serde);
        assert_eq!(ours, [0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x05]);
    }

    /// The byte-string payload is the layout serde gives a plain `Vec<u8>` (what upstream's
    /// envelope derives), both ways.
    #[test]
    fn payload_bytes_match_the_default_vec_layout() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Fast(#[serde(with = "payload_as_bytes")] Vec<u8>);
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Plain(Vec<u8>);
        for length in [0usize, 1, 127, 128, 300, 70_000] {
            let payload: Vec<u8> = (0..length).map(|i| (i * 7) as u8).collect();
            let fast = postcard::to_allocvec(&Fast(payload.clone())).expect("encode");
            let plain = postcard::to_allocvec(&Plain(payload.clone())).expect("encode");
            assert_eq!(fast, plain, "{length} bytes");
            let decoded: Fast = postcard::from_bytes(&plain).expect("decode");
            assert_eq!(decoded.0, payload);
        }
    }

    #[test]
    fn uuid_encoding_matches_the_uuid_crate_layout() {
        let id = Uuid::from_bytes([0xaa; 16]);
        let mut expected = vec![0x10];
        expected.extend([0xaa; 16]);
        #[derive(Serialize)]
        struct Id(#[serde(with = "uuid_as_bytes")] Uuid);
        assert_eq!(postcard::to_allocvec(&Id(id)).expect("encode"), expected);
    }

    #[test]
    fn datetime_conversions_round_trip_and_reject_before_epoch() {
        let time = DateTime::from_timestamp(1_700_000_000, 5).expect("valid");
        let wire = WireTime::from_datetime(time).expect("after epoch");
        assert_eq!(
            wire,
            WireTime {
                secs: 1_700_000_000,
                nanos: 5
            }
        );
        assert_eq!(wire.to_datetime().ok(), Some(time));
        let before = DateTime::from_timestamp(-1, 0).expect("valid");
        assert_eq!(WireTime::from_datetime(before), None);
        assert!(matches!(
            WireTime {
                secs: 0,
                nanos: NANOS_PER_SECOND
            }
            .to_datetime(),
            Err(WireError::BadTimestampNanos { .. })
        ));
        assert!(matches!(
            WireTime {
                secs: u64::MAX,
                nanos: 0
            }
            .to_datetime(),
            Err(WireError::TimestampOutOfRange { .. })
        ));
        let nanos = datetime_to_unix_nanos(before);
        assert_eq!(unix_nanos_to_datetime(nanos), Some(before));
    }

    /// The direct split of seconds and nanoseconds agrees with going through the total
    /// nanoseconds, leap seconds included (chrono keeps them as nanos of a second or more).
    #[test]
    fn wire_time_from_datetime_agrees_with_the_total_nanoseconds() {
        let through_total = |time: DateTime<Utc>| {
            let total = datetime_to_unix_nanos(time);
            Some(WireTime {
                secs: u64::try_from(total.div_euclid(i128::from(NANOS_PER_SECOND))).ok()?,
                nanos: u32::try_from(total.rem_euclid(i128::from(NANOS_PER_SECOND))).ok()?,
            })
        };
        let mut checked = 0;
        for secs in [
            -86_400,
            -1,
            0,
            1,
            1_700_000_000,
            4_102_444_800,
            253_402_300_799,
        ] {
            for nanos in [
                0,
                1,
                999_999_999,
                1_000_000_000,
                1_500_000_000,
                1_999_999_999,
            ] {
                let Some(time) = DateTime::from_timestamp(secs, nanos) else {
                    continue;
                };
                assert_eq!(
                    WireTime::from_datetime(time),
                    through_total(time),
                    "{secs} s {nanos} ns"
                );
                checked += 1;
            }
        }
        // chrono accepts the leap-second nanos only at the last second of a minute.
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("leap second");
        assert_eq!(
            WireTime::from_datetime(leap),
            Some(WireTime {
                secs: 1_483_228_800,
                nanos: 500_000_000
            })
        );
        assert!(checked >= 20, "only {checked} cases were valid times");
    }
}
