//! The event payload: postcard `CollectionEvent::Process` (docs/protocol.md §4) and the
//! lossless mapping between it and our [`ProcessEvent`].
//!
//! Owns the payload's field order, the `procmond.*` / `platform.*` metadata keys that carry
//! every `ProcessEvent` field without a slot, and the event envelope a publisher sends
//! (stable id and correlation id per event). `decode(encode(event)) == event` for every
//! field. Never does I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{EventKind, ProcessEvent};
use crate::wire::envelope::{
    CorrelationMetadata, Message, MessageType, WireTime, datetime_to_unix_nanos, decode_exact,
    encode_value, unix_nanos_to_datetime,
};
use crate::wire::error::WireError;

/// Metadata keys of a procmond-wal process payload (`docs/protocol.md`, "Metadata keys").
pub mod keys {
    /// Payload format version; its presence marks a payload as ours. Value: `1`.
    pub const VERSION: &str = "procmond.version";
    /// `start`, `stop` or `modify`.
    pub const KIND: &str = "procmond.kind";
    /// Exact argv, only when an argument contains a space (otherwise splitting
    /// `command_line` on single spaces is exact): each argument as `{byte length}:{bytes}`.
    pub const ARGV: &str = "procmond.argv";
    /// Start time as signed decimal nanoseconds since the Unix epoch, only when it is before
    /// the epoch (the `start_time` slot is an unsigned `SystemTime`).
    pub const START_TIME_UNIX_NS: &str = "procmond.start_time_unix_ns";
    /// CPU usage in percent of one core (Rust's shortest round-trip `f64` text).
    pub const CPU_USAGE_PERCENT: &str = "procmond.cpu_usage_percent";
    /// Resident memory in bytes (decimal).
    pub const MEMORY_USAGE_BYTES: &str = "procmond.memory_usage_bytes";
    /// Hex digest of the executable.
    pub const EXECUTABLE_HASH: &str = "procmond.executable_hash";
    /// Algorithm of the digest.
    pub const HASH_ALGORITHM: &str = "procmond.hash_algorithm";
    /// Owning user id.
    pub const USER_ID: &str = "procmond.user_id";
    /// `true` or `false`.
    pub const ACCESSIBLE: &str = "procmond.accessible";
    /// `true` or `false`.
    pub const FILE_EXISTS: &str = "procmond.file_exists";
    /// Collection time as signed decimal nanoseconds since the Unix epoch.
    pub const COLLECTION_TIME_UNIX_NS: &str = "procmond.collection_time_unix_ns";
    /// `true` or `false`: whether the event was shortened to fit the limits.
    pub const TRUNCATED: &str = "procmond.truncated";
    /// Prefix of every key in our namespace.
    pub const OURS_PREFIX: &str = "procmond.";
    /// Prefix put in front of every platform metadata key, so a platform key can never
    /// collide with ours.
    pub const PLATFORM_PREFIX: &str = "platform.";
}

/// The payload version this codec writes and reads.
pub const PAYLOAD_VERSION: &str = "1";

/// Correlation tag naming the publisher of an event.
pub const PUBLISHER_TAG: &str = "procmond.publisher_id";

/// daemoneye-eventbus's `CollectionEvent`. Only variant 0 (`Process`) exists here; other
/// upstream variants fail to decode with a clear error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CollectionEvent {
    /// Variant 0: a process observation (field order is the wire format).
    Process {
        /// Process id.
        pid: u32,
        /// Process name.
        name: String,
        /// argv joined with single spaces; `None` when argv is empty.
        command_line: Option<String>,
        /// Executable path.
        executable_path: Option<String>,
        /// Parent process id.
        ppid: Option<u32>,
        /// Start time, when known and not before the epoch.
        start_time: Option<WireTime>,
        /// Everything else (see [`keys`]).
        metadata: BTreeMap<String, String>,
    },
}

impl CollectionEvent {
    /// Maps an event to the payload. Infallible: every field has a place.
    pub fn from_process_event(kind: EventKind, event: &ProcessEvent) -> CollectionEvent {
        let mut metadata = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            metadata.insert(key.to_owned(), value);
        };
        put(keys::VERSION, PAYLOAD_VERSION.to_owned());
        put(keys::KIND, kind.as_str().to_owned());
        if event.command_line.iter().any(|arg| arg.contains(' ')) {
            put(keys::ARGV, encode_argv(&event.command_line));
        }
        let start_time = event.start_time.and_then(WireTime::from_datetime);
        if let (Some(time), None) = (event.start_time, start_time) {
            put(
                keys::START_TIME_UNIX_NS,
                datetime_to_unix_nanos(time).to_string(),
            );
        }
        if let Some(cpu) = event.cpu_usage_percent {
            put(keys::CPU_USAGE_PERCENT, cpu.to_string());
        }
        if let Some(memory) = event.memory_usage_bytes {
            put(keys::MEMORY_USAGE_BYTES, memory.to_string());
        }
        for (key, value) in [
            (keys::EXECUTABLE_HASH, &event.executable_hash),
            (keys::HASH_ALGORITHM, &event.hash_algorithm),
            (keys::USER_ID, &event.user_id),
        ] {
            if let Some(value) = value {
                put(key, value.clone());
            }
        }
        put(keys::ACCESSIBLE, event.accessible.to_string());
        put(keys::FILE_EXISTS, event.file_exists.to_string());
        put(
            keys::COLLECTION_TIME_UNIX_NS,
            datetime_to_unix_nanos(event.collection_time).to_string(),
        );
        put(keys::TRUNCATED, event.truncated.to_string());
        for (key, value) in &event.platform_metadata {
            put(&format!("{}{key}", keys::PLATFORM_PREFIX), value.clone());
        }
        let command_line = (!event.command_line.is_empty()).then(|| event.command_line.join(" "));
        CollectionEvent::Process {
            pid: event.pid,
            name: event.name.clone(),
            command_line,
            executable_path: event.executable_path.clone(),
            ppid: event.ppid,
            start_time,
            metadata,
        }
    }

    /// Maps a payload produced by [`CollectionEvent::from_process_event`] back to the event
    /// and its kind. Payloads from other producers (no `procmond.version`) are refused with
    /// [`WireError::NotProcmondPayload`]: inventing the missing fields would be lying.
    pub fn to_process_event(&self) -> Result<(EventKind, ProcessEvent), WireError> {
        let CollectionEvent::Process {
            pid,
            name,
            command_line,
            executable_path,
            ppid,
            start_time,
            metadata,
        } = self;
        // The version is checked before any other key: an upstream producer's metadata
        // (any keys, no version) is "not ours", not a malformed payload of ours.
        match metadata.get(keys::VERSION) {
            None => return Err(WireError::NotProcmondPayload),
            Some(found) if found != PAYLOAD_VERSION => {
                return Err(WireError::UnsupportedPayloadVersion {
                    version: found.clone(),
                    expected: PAYLOAD_VERSION,
                });
            }
            Some(_) => {}
        }
        let mut fields = MetadataFields::default();
        let mut platform_metadata = BTreeMap::new();
        for (key, value) in metadata {
            if let Some(platform_key) = key.strip_prefix(keys::PLATFORM_PREFIX) {
                platform_metadata.insert(platform_key.to_owned(), value.clone());
            } else if key != keys::VERSION {
                fields.take(key, value)?;
            }
        }
        let kind: EventKind = required(keys::KIND, fields.kind)?.parse()?;
        let command_line = match (fields.argv, command_line) {
            (Some(argv), _) => decode_argv(argv)?,
            (None, Some(joined)) => joined.split(' ').map(str::to_owned).collect(),
            (None, None) => Vec::new(),
        };
        let start_time = match (start_time, fields.start_time_unix_ns) {
            (Some(time), _) => Some(time.to_datetime()?),
            (None, Some(text)) => Some(parse_unix_nanos(keys::START_TIME_UNIX_NS, text)?),
            (None, None) => None,
        };
        let event = ProcessEvent {
            pid: *pid,
            ppid: *ppid,
            name: name.clone(),
            executable_path: executable_path.clone(),
            command_line,
            start_time,
            cpu_usage_percent: fields
                .cpu_usage_percent
                .map(|text| parse_value(keys::CPU_USAGE_PERCENT, text))
                .transpose()?,
            memory_usage_bytes: fields
                .memory_usage_bytes
                .map(|text| parse_value(keys::MEMORY_USAGE_BYTES, text))
                .transpose()?,
            executable_hash: fields.executable_hash.cloned(),
            hash_algorithm: fields.hash_algorithm.cloned(),
            user_id: fields.user_id.cloned(),
            accessible: parse_value(
                keys::ACCESSIBLE,
                required(keys::ACCESSIBLE, fields.accessible)?,
            )?,
            file_exists: parse_value(
                keys::FILE_EXISTS,
                required(keys::FILE_EXISTS, fields.file_exists)?,
            )?,
            collection_time: parse_unix_nanos(
                keys::COLLECTION_TIME_UNIX_NS,
                required(
                    keys::COLLECTION_TIME_UNIX_NS,
                    fields.collection_time_unix_ns,
                )?,
            )?,
            platform_metadata,
            truncated: parse_value(
                keys::TRUNCATED,
                required(keys::TRUNCATED, fields.truncated)?,
            )?,
        };
        Ok((kind, event))
    }

    /// Postcard-encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode_value(self, "CollectionEvent")
    }

    /// Postcard-decodes a payload; the whole buffer must be one `CollectionEvent`.
    pub fn decode(payload: &[u8]) -> Result<CollectionEvent, WireError> {
        let event: CollectionEvent = decode_exact(payload, "CollectionEvent")?;
        let CollectionEvent::Process { start_time, .. } = &event;
        if let Some(time) = start_time {
            time.validate()?;
        }
        Ok(event)
    }
}

/// The `procmond.*` values of one payload, borrowed; each key may appear once (a map cannot
/// repeat keys).
#[derive(Default)]
struct MetadataFields<'a> {
    kind: Option<&'a String>,
    argv: Option<&'a String>,
    start_time_unix_ns: Option<&'a String>,
    cpu_usage_percent: Option<&'a String>,
    memory_usage_bytes: Option<&'a String>,
    executable_hash: Option<&'a String>,
    hash_algorithm: Option<&'a String>,
    user_id: Option<&'a String>,
    accessible: Option<&'a String>,
    file_exists: Option<&'a String>,
    collection_time_unix_ns: Option<&'a String>,
    truncated: Option<&'a String>,
}

impl<'a> MetadataFields<'a> {
    fn take(&mut self, key: &str, value: &'a String) -> Result<(), WireError> {
        let slot = match key {
            keys::KIND => &mut self.kind,
            keys::ARGV => &mut self.argv,
            keys::START_TIME_UNIX_NS => &mut self.start_time_unix_ns,
            keys::CPU_USAGE_PERCENT => &mut self.cpu_usage_percent,
            keys::MEMORY_USAGE_BYTES => &mut self.memory_usage_bytes,
            keys::EXECUTABLE_HASH => &mut self.executable_hash,
            keys::HASH_ALGORITHM => &mut self.hash_algorithm,
            keys::USER_ID => &mut self.user_id,
            keys::ACCESSIBLE => &mut self.accessible,
            keys::FILE_EXISTS => &mut self.file_exists,
            keys::COLLECTION_TIME_UNIX_NS => &mut self.collection_time_unix_ns,
            keys::TRUNCATED => &mut self.truncated,
            _ => {
                return Err(WireError::UnknownMetadataKey {
                    key: key.to_owned(),
                });
            }
        };
        *slot = Some(value);
        Ok(())
    }
}

fn required<'a>(key: &'static str, value: Option<&'a String>) -> Result<&'a String, WireError> {
    value.ok_or(WireError::MissingMetadataKey { key })
}

fn parse_value<T: std::str::FromStr>(key: &'static str, text: &str) -> Result<T, WireError> {
    text.parse().map_err(|_| WireError::BadMetadataValue {
        key,
        value: text.to_owned(),
    })
}

fn parse_unix_nanos(key: &'static str, text: &str) -> Result<DateTime<Utc>, WireError> {
    let nanos: i128 = parse_value(key, text)?;
    unix_nanos_to_datetime(nanos).ok_or_else(|| WireError::BadMetadataValue {
        key,
        value: text.to_owned(),
    })
}

/// `{byte length}:{bytes}` per argument: exact for any strings, a few bytes of overhead each.
fn encode_argv(argv: &[String]) -> String {
    let mut encoded = String::new();
    for arg in argv {
        encoded.push_str(&arg.len().to_string());
        encoded.push(':');
        encoded.push_str(arg);
    }
    encoded
}

fn decode_argv(encoded: &str) -> Result<Vec<String>, WireError> {
    let bad = || WireError::BadMetadataValue {
        key: keys::ARGV,
        value: encoded.to_owned(),
    };
    let mut argv = Vec::new();
    let mut rest = encoded;
    while !rest.is_empty() {
        let (length, tail) = rest.split_once(':').ok_or_else(bad)?;
        if length.is_empty() || !length.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(bad());
        }
        let length: usize = length.parse().map_err(|_| bad())?;
        let arg = tail.get(..length).ok_or_else(bad)?;
        argv.push(arg.to_owned());
        rest = &tail[length..];
    }
    Ok(argv)
}

/// A stable message id for one event of one publisher: a version-8 UUID built from an FNV-1a
/// hash of the publisher id and the sequence, so a replay carries the same id.
pub fn event_message_id(publisher_id: &str, sequence: u64) -> Uuid {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in publisher_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hash.to_be_bytes());
    bytes[8..].copy_from_slice(&sequence.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The correlation id of one event of one publisher: `{publisher_id}:{sequence}`.
pub fn event_correlation_id(publisher_id: &str, sequence: u64) -> String {
    format!("{publisher_id}:{sequence}")
}

/// Builds the envelope for one event: topic from the kind, `sequence` = the WAL sequence,
/// id and correlation id derived from (publisher id, sequence), the publisher id as the
/// [`PUBLISHER_TAG`] correlation tag.
pub fn event_message(
    publisher_id: &str,
    sequence: u64,
    kind: EventKind,
    event: &ProcessEvent,
    timestamp: WireTime,
) -> Result<Message, WireError> {
    let payload = CollectionEvent::from_process_event(kind, event).encode()?;
    Ok(event_message_with_payload(
        publisher_id,
        sequence,
        kind,
        payload,
        timestamp,
    ))
}

/// [`event_message`] with an already encoded payload (see
/// [`crate::wire::budget::fit_event_payload`], which keeps it within the connector's
/// frame budget).
pub fn event_message_with_payload(
    publisher_id: &str,
    sequence: u64,
    kind: EventKind,
    payload: Vec<u8>,
    timestamp: WireTime,
) -> Message {
    let mut correlation = CorrelationMetadata::root(
        event_correlation_id(publisher_id, sequence),
        sequence,
        timestamp,
    );
    correlation
        .correlation_tags
        .insert(PUBLISHER_TAG.to_owned(), publisher_id.to_owned());
    Message {
        id: event_message_id(publisher_id, sequence),
        topic: kind.topic().to_owned(),
        correlation_metadata: correlation,
        payload,
        sequence,
        timestamp,
        message_type: MessageType::Event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProcessEvent {
        let mut event = ProcessEvent::new(
            7,
            "sh",
            DateTime::from_timestamp_nanos(1_700_000_000_000_000_005),
        );
        event.command_line = vec!["sh".into(), "-c".into(), "echo hi".into()];
        event.start_time = DateTime::from_timestamp(-5, 3);
        event.cpu_usage_percent = Some(0.1);
        event
            .platform_metadata
            .insert("procmond.kind".into(), "spoof".into());
        event
    }

    #[test]
    fn argv_with_spaces_travels_exactly() {
        let event = sample();
        let payload = CollectionEvent::from_process_event(EventKind::Stop, &event);
        let CollectionEvent::Process {
            command_line,
            metadata,
            ..
        } = &payload;
        assert_eq!(command_line.as_deref(), Some("sh -c echo hi"));
        assert_eq!(
            metadata.get(keys::ARGV).map(String::as_str),
            Some("2:sh2:-c7:echo hi")
        );
        assert_eq!(
            metadata.get("platform.procmond.kind").map(String::as_str),
            Some("spoof")
        );
        assert_eq!(
            payload.to_process_event().ok(),
            Some((EventKind::Stop, event))
        );
    }

    #[test]
    fn bad_metadata_is_an_error() {
        let mut payload = CollectionEvent::from_process_event(EventKind::Start, &sample());
        let CollectionEvent::Process { metadata, .. } = &mut payload;
        metadata.insert(keys::ARGV.into(), "5:ab".into());
        assert!(matches!(
            payload.to_process_event(),
            Err(WireError::BadMetadataValue { .. })
        ));
        let CollectionEvent::Process { metadata, .. } = &mut payload;
        metadata.insert(keys::ARGV.into(), "2:ab".into());
        metadata.insert("procmond.future".into(), "x".into());
        assert!(matches!(
            payload.to_process_event(),
            Err(WireError::UnknownMetadataKey { .. })
        ));
        let CollectionEvent::Process { metadata, .. } = &mut payload;
        metadata.remove("procmond.future");
        metadata.insert(keys::VERSION.into(), "2".into());
        assert!(matches!(
            payload.to_process_event(),
            Err(WireError::UnsupportedPayloadVersion { .. })
        ));
        let CollectionEvent::Process { metadata, .. } = &mut payload;
        metadata.remove(keys::VERSION);
        assert!(matches!(
            payload.to_process_event(),
            Err(WireError::NotProcmondPayload)
        ));
    }

    #[test]
    fn an_upstream_payload_with_metadata_is_not_ours_rather_than_malformed() {
        let upstream = CollectionEvent::Process {
            pid: 1,
            name: "sshd".into(),
            command_line: None,
            executable_path: None,
            ppid: None,
            start_time: None,
            metadata: BTreeMap::from([("hostname".to_owned(), "web-1".to_owned())]),
        };
        assert!(matches!(
            upstream.to_process_event(),
            Err(WireError::NotProcmondPayload)
        ));
    }

    #[test]
    fn ids_are_stable_per_event() {
        assert_eq!(event_message_id("p", 1), event_message_id("p", 1));
        assert_ne!(event_message_id("p", 1), event_message_id("p", 2));
        assert_ne!(event_message_id("p", 1), event_message_id("q", 1));
        assert_eq!(event_message_id("p", 1).get_version_num(), 8);
    }
}
