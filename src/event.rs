//! The process event model shared by the WAL and the broker link (docs/design.md §8).
//!
//! Owns `ProcessEvent`, `EventKind` and their topics, and the deterministic truncation that
//! keeps any event (argv is attacker-controlled) inside the wire's 1 MiB frame limit.
//! It must never do I/O and never reject or drop an event for being large.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happened to the process.
///
/// The discriminants are part of the WAL format (`docs/format.md`): never reorder them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A process was observed for the first time.
    Start,
    /// A process was observed to have exited.
    Stop,
    /// A process was observed again with changed attributes.
    Modify,
}

impl EventKind {
    /// All kinds, in discriminant order.
    pub const ALL: [EventKind; 3] = [EventKind::Start, EventKind::Stop, EventKind::Modify];

    /// The broker topic events of this kind are published on.
    pub fn topic(self) -> &'static str {
        match self {
            EventKind::Start => "events.process.start",
            EventKind::Stop => "events.process.stop",
            EventKind::Modify => "events.process.modify",
        }
    }

    /// The short lowercase name (`start`, `stop`, `modify`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Stop => "stop",
            EventKind::Modify => "modify",
        }
    }

    /// The kind for a topic; unknown topics are an error, never defaulted (turning a
    /// stop into a start would keep a dead process alive).
    pub fn from_topic(topic: &str) -> Result<EventKind, UnknownEventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.topic() == topic)
            .ok_or_else(|| UnknownEventKind(topic.to_owned()))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownEventKind(text.to_owned()))
    }
}

/// A kind name or topic that is not one of start/stop/modify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown process event kind {0:?} (expected start, stop or modify)")]
pub struct UnknownEventKind(pub String);

/// One observation of a process, mirroring procmond's collector model.
///
/// Times are UTC and stored as integer nanoseconds since the Unix epoch (bincode and postcard
/// would otherwise carry chrono's text form). Platform metadata is a sorted string map, not
/// `serde_json::Value`, because non-self-describing formats cannot deserialize the latter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// Process id.
    pub pid: u32,
    /// Parent process id, when known.
    pub ppid: Option<u32>,
    /// Process name (e.g. `comm`).
    pub name: String,
    /// Path of the executable image, when known.
    pub executable_path: Option<String>,
    /// Command line as argv.
    pub command_line: Vec<String>,
    /// When the process started, when known.
    #[serde(with = "chrono::serde::ts_nanoseconds_option")]
    pub start_time: Option<DateTime<Utc>>,
    /// CPU usage in percent of one core, when measured.
    pub cpu_usage_percent: Option<f64>,
    /// Resident memory in bytes, when measured.
    pub memory_usage_bytes: Option<u64>,
    /// Hex digest of the executable, when computed.
    pub executable_hash: Option<String>,
    /// Algorithm of `executable_hash` (e.g. `sha256`).
    pub hash_algorithm: Option<String>,
    /// Owning user id, when known.
    pub user_id: Option<String>,
    /// Whether the collector could read the process's details.
    pub accessible: bool,
    /// Whether the executable file still exists on disk.
    pub file_exists: bool,
    /// When the collector observed the process.
    #[serde(with = "chrono::serde::ts_nanoseconds")]
    pub collection_time: DateTime<Utc>,
    /// Platform-specific attributes (e.g. `linux.cgroup`).
    pub platform_metadata: BTreeMap<String, String>,
    /// Set when [`ProcessEvent::truncate_to_limits`] shortened any field.
    pub truncated: bool,
}

/// Per-field byte limits that keep an event's wire frame under 1 MiB.
///
/// The budget (worst case ≈ 400 KiB of text) leaves room for the connector to carry argv
/// both as a joined command line and as an exact list inside the frame; see `docs/design.md`.
pub mod limits {
    /// Longest `name`.
    pub const NAME_BYTES: usize = 1024;
    /// Longest `executable_path`, `executable_hash`, `hash_algorithm` or `user_id`.
    pub const SHORT_FIELD_BYTES: usize = 4096;
    /// Most argv entries kept.
    pub const ARGV_ENTRIES: usize = 4096;
    /// Total bytes of argv kept (entries beyond it are dropped, the last kept one is cut).
    pub const ARGV_TOTAL_BYTES: usize = 128 * 1024;
    /// Most metadata entries kept (in key order).
    pub const METADATA_ENTRIES: usize = 256;
    /// Longest metadata key.
    pub const METADATA_KEY_BYTES: usize = 256;
    /// Longest metadata value.
    pub const METADATA_VALUE_BYTES: usize = 16 * 1024;
    /// Total bytes of metadata keys and values kept.
    pub const METADATA_TOTAL_BYTES: usize = 96 * 1024;
}

impl ProcessEvent {
    /// A minimal event: everything optional is absent, flags false, no metadata.
    pub fn new(pid: u32, name: impl Into<String>, collection_time: DateTime<Utc>) -> Self {
        ProcessEvent {
            pid,
            ppid: None,
            name: name.into(),
            executable_path: None,
            command_line: Vec::new(),
            start_time: None,
            cpu_usage_percent: None,
            memory_usage_bytes: None,
            executable_hash: None,
            hash_algorithm: None,
            user_id: None,
            accessible: false,
            file_exists: false,
            collection_time,
            platform_metadata: BTreeMap::new(),
            truncated: false,
        }
    }

    /// Shortens oversized fields to [`limits`] deterministically (same input, same output)
    /// and sets `truncated` if anything changed. Never fails: evidence is kept, shortened.
    ///
    /// Strings are cut at a UTF-8 character boundary at or below the limit.
    pub fn truncate_to_limits(&mut self) {
        if self.within_limits() {
            return;
        }
        let mut cut = false;
        cut |= truncate_string(&mut self.name, limits::NAME_BYTES);
        for field in [
            &mut self.executable_path,
            &mut self.executable_hash,
            &mut self.hash_algorithm,
            &mut self.user_id,
        ]
        .into_iter()
        .flatten()
        {
            cut |= truncate_string(field, limits::SHORT_FIELD_BYTES);
        }
        cut |= truncate_argv(&mut self.command_line);
        cut |= truncate_metadata(&mut self.platform_metadata);
        cut |= clamp_to_nanosecond_range(&mut self.collection_time);
        if let Some(start_time) = &mut self.start_time {
            cut |= clamp_to_nanosecond_range(start_time);
        }
        if cut {
            self.truncated = true;
        }
    }

    /// The optional short text fields that are present (all limited to
    /// [`limits::SHORT_FIELD_BYTES`]).
    fn short_fields(&self) -> impl Iterator<Item = &String> {
        [
            &self.executable_path,
            &self.executable_hash,
            &self.hash_algorithm,
            &self.user_id,
        ]
        .into_iter()
        .flatten()
    }

    /// Whether nothing needs truncating (the common case, checked without allocating).
    fn within_limits(&self) -> bool {
        let short_fields_fit = self
            .short_fields()
            .all(|field| field.len() <= limits::SHORT_FIELD_BYTES);
        let argv_fits = self.command_line.len() <= limits::ARGV_ENTRIES
            && self.command_line.iter().map(String::len).sum::<usize>() <= limits::ARGV_TOTAL_BYTES;
        let metadata_fits = self.platform_metadata.len() <= limits::METADATA_ENTRIES
            && self.platform_metadata.iter().all(|(key, value)| {
                key.len() <= limits::METADATA_KEY_BYTES
                    && value.len() <= limits::METADATA_VALUE_BYTES
            })
            && self
                .platform_metadata
                .iter()
                .map(|(key, value)| key.len() + value.len())
                .sum::<usize>()
                <= limits::METADATA_TOTAL_BYTES;
        let times_fit = self.collection_time.timestamp_nanos_opt().is_some()
            && self
                .start_time
                .is_none_or(|time| time.timestamp_nanos_opt().is_some());
        self.name.len() <= limits::NAME_BYTES
            && short_fields_fit
            && argv_fits
            && metadata_fits
            && times_fit
    }

    /// Bytes of variable-length text the event carries (strings, argv, metadata).
    pub fn text_bytes(&self) -> usize {
        let optional = self.short_fields().map(String::len).sum::<usize>();
        let argv = self.command_line.iter().map(String::len).sum::<usize>();
        let metadata = self
            .platform_metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>();
        self.name.len() + optional + argv + metadata
    }
}

/// Clamps a time to what fits in i64 nanoseconds since the epoch (years 1677–2262), the
/// stored form; true if it changed.
fn clamp_to_nanosecond_range(time: &mut DateTime<Utc>) -> bool {
    if time.timestamp_nanos_opt().is_some() {
        return false;
    }
    *time = if time.timestamp() < 0 {
        DateTime::from_timestamp_nanos(i64::MIN)
    } else {
        DateTime::from_timestamp_nanos(i64::MAX)
    };
    true
}

/// Cuts `text` to at most `max_bytes` at a character boundary; true if it changed.
fn truncate_string(text: &mut String, max_bytes: usize) -> bool {
    if text.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

fn truncate_argv(argv: &mut Vec<String>) -> bool {
    let mut cut = false;
    if argv.len() > limits::ARGV_ENTRIES {
        argv.truncate(limits::ARGV_ENTRIES);
        cut = true;
    }
    let mut remaining = limits::ARGV_TOTAL_BYTES;
    let mut keep = argv.len();
    for (index, arg) in argv.iter_mut().enumerate() {
        if arg.len() <= remaining {
            remaining -= arg.len();
            continue;
        }
        truncate_string(arg, remaining);
        keep = index + 1;
        cut = true;
        break;
    }
    argv.truncate(keep);
    cut
}

fn truncate_metadata(metadata: &mut BTreeMap<String, String>) -> bool {
    let mut cut = false;
    let mut remaining = limits::METADATA_TOTAL_BYTES;
    let mut kept = BTreeMap::new();
    for (mut key, mut value) in std::mem::take(metadata) {
        if kept.len() == limits::METADATA_ENTRIES {
            cut = true;
            break;
        }
        cut |= truncate_string(&mut key, limits::METADATA_KEY_BYTES);
        cut |= truncate_string(&mut value, limits::METADATA_VALUE_BYTES);
        if kept.contains_key(&key) {
            // Two keys that only differed past the key limit: keep the first in order.
            cut = true;
            continue;
        }
        if key.len() + value.len() > remaining {
            cut = true;
            break;
        }
        remaining -= key.len() + value.len();
        kept.insert(key, value);
    }
    *metadata = kept;
    cut
}

/// Test support: the largest event [`ProcessEvent::truncate_to_limits`] can leave, every
/// field at its stored limit, `arg_bytes` per argument (each starting with a space and a
/// two-byte character, so argv travels beside the joined command line and cuts land inside
/// characters) and `value_bytes` per metadata value (two-byte characters).
#[cfg(any(test, feature = "testing"))]
pub fn largest_event(arg_bytes: usize, value_bytes: usize) -> ProcessEvent {
    let mut event = ProcessEvent::new(
        u32::MAX,
        "n".repeat(limits::NAME_BYTES * 2),
        DateTime::<Utc>::MAX_UTC,
    );
    event.ppid = Some(u32::MAX);
    event.executable_path = Some("p".repeat(limits::SHORT_FIELD_BYTES * 2));
    event.executable_hash = Some("h".repeat(limits::SHORT_FIELD_BYTES * 2));
    event.hash_algorithm = Some("a".repeat(limits::SHORT_FIELD_BYTES * 2));
    event.user_id = Some("u".repeat(limits::SHORT_FIELD_BYTES * 2));
    event.start_time = Some(DateTime::<Utc>::MIN_UTC);
    event.cpu_usage_percent = Some(-f64::MIN_POSITIVE);
    event.memory_usage_bytes = Some(u64::MAX);
    event.command_line = (0..limits::ARGV_ENTRIES * 2)
        .map(|_| format!(" é{}", "x".repeat(arg_bytes)))
        .collect();
    for index in 0..limits::METADATA_ENTRIES * 2 {
        event.platform_metadata.insert(
            format!("{index:0>width$}", width = limits::METADATA_KEY_BYTES * 2),
            "é".repeat(value_bytes),
        );
    }
    event.truncate_to_limits();
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> ProcessEvent {
        let mut event = ProcessEvent::new(42, "bash", DateTime::from_timestamp_nanos(1));
        event.command_line = vec!["bash".into(), "-c".into(), "true".into()];
        event
    }

    #[test]
    fn topics_round_trip_and_unknown_is_an_error() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_topic(kind.topic()), Ok(kind));
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
        }
        assert_eq!(EventKind::Stop.topic(), "events.process.stop");
        assert!(EventKind::from_topic("events.process.exit").is_err());
        assert!("".parse::<EventKind>().is_err());
    }

    #[test]
    fn small_event_is_not_truncated() {
        let mut small = event();
        let before = small.clone();
        small.truncate_to_limits();
        assert_eq!(small, before);
        assert!(!small.truncated);
    }

    #[test]
    fn huge_argv_is_cut_deterministically_at_a_char_boundary() {
        let mut big = event();
        big.command_line = (0..10_000).map(|i| format!("é{i:0>60}")).collect();
        let mut again = big.clone();
        big.truncate_to_limits();
        again.truncate_to_limits();
        assert_eq!(big, again);
        assert!(big.truncated);
        let total: usize = big.command_line.iter().map(String::len).sum();
        assert!(total <= limits::ARGV_TOTAL_BYTES);
        assert!(big.command_line.len() <= limits::ARGV_ENTRIES);
        assert_eq!(big.command_line[0], format!("é{:0>60}", 0));
    }

    #[test]
    fn one_giant_argument_keeps_its_prefix() {
        let mut big = event();
        big.command_line = vec!["x".repeat(3 * limits::ARGV_TOTAL_BYTES)];
        big.truncate_to_limits();
        assert_eq!(big.command_line.len(), 1);
        assert_eq!(big.command_line[0].len(), limits::ARGV_TOTAL_BYTES);
    }

    #[test]
    fn times_outside_the_nanosecond_range_are_clamped() {
        let mut odd = event();
        odd.collection_time = DateTime::from_timestamp(32_503_680_000, 0).unwrap(); // year 3000
        odd.start_time = DateTime::from_timestamp(-(1i64 << 40), 0);
        odd.truncate_to_limits();
        assert!(odd.truncated);
        assert_eq!(odd.collection_time.timestamp_nanos_opt(), Some(i64::MAX));
        assert_eq!(
            odd.start_time.and_then(|t| t.timestamp_nanos_opt()),
            Some(i64::MIN)
        );
    }

    #[test]
    fn metadata_and_strings_are_bounded() {
        let mut big = event();
        big.name = "n".repeat(limits::NAME_BYTES + 7);
        big.executable_path = Some("/".repeat(limits::SHORT_FIELD_BYTES * 2));
        for i in 0..1000 {
            big.platform_metadata.insert(
                format!("k{i:04}"),
                "v".repeat(limits::METADATA_VALUE_BYTES + 1),
            );
        }
        big.truncate_to_limits();
        assert!(big.truncated);
        assert_eq!(big.name.len(), limits::NAME_BYTES);
        assert_eq!(
            big.executable_path.as_deref().map(str::len),
            Some(limits::SHORT_FIELD_BYTES)
        );
        let meta: usize = big
            .platform_metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(meta <= limits::METADATA_TOTAL_BYTES);
        assert!(big.platform_metadata.contains_key("k0000"));
        assert!(big.text_bytes() < 512 * 1024);
    }
}
