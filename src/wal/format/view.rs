//! The borrowing decoder of record payloads: checks a CRC-verified payload completely (every
//! length, tag and string) and describes it with slices of the payload, allocating nothing.
//! Owned records ([`Record`], [`WalEntry`], [`ProcessEvent`]) are built from a view only when
//! a caller asks for one.
//!
//! The encoding read is bincode 2's legacy configuration as the writer produces it
//! (`docs/format.md`): fixed-width little-endian integers, `u64` lengths, a one-byte tag for
//! `Option` and `bool` (0 or 1), a `u32` variant index for enums, fields concatenated in
//! declaration order, and bytes after the last field ignored. A payload that bincode would
//! refuse is refused here too (the property tests compare the two on arbitrary bytes), so the
//! scan's "CRC-valid but undecodable" verdicts do not change. Pure: no I/O, no clocks, never
//! panics on bad bytes and never allocates what a length field claims.

use std::collections::BTreeMap;

use std::cell::Cell;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

use super::{CheckpointEntry, Record, RecordKind, WalEntry, WatermarkEntry};
use crate::event::{EventKind, ProcessEvent};

/// Why a CRC-valid payload did not decode (a writer bug or a deliberate forgery, never bit
/// rot: the CRC already matched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The payload ends inside a field.
    #[error("record payload ends inside field {field} ({needed_bytes} more byte(s) needed)")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes missing.
        needed_bytes: u64,
    },
    /// An `Option`/`bool` tag other than 0 or 1, or an unknown enum variant.
    #[error("record payload field {field} has invalid tag {value}")]
    InvalidTag {
        /// The field being read.
        field: &'static str,
        /// The tag found.
        value: u32,
    },
    /// A string that is not UTF-8.
    #[error("record payload field {field} is not UTF-8")]
    NotUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// The reference decoder (bincode itself) refused the payload.
    #[error("record payload does not decode: {0}")]
    Bincode(String),
}

/// A sequence of strings inside a payload (argv), checked when the view was made: `count`
/// length-prefixed UTF-8 strings, back to back, in `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrList<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> StrList<'a> {
    /// Number of strings.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The strings, in order.
    pub fn iter(&self) -> StrIter<'a> {
        StrIter {
            cursor: Cursor { bytes: self.bytes },
            left: self.count,
        }
    }
}

/// Iterator over the strings of a [`StrList`] or the keys and values of a [`StrPairs`].
#[derive(Debug, Clone)]
pub struct StrIter<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for StrIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Every string was checked when the view was made, so this cannot fail; were it to
        // (a bug), the iteration ends rather than yielding something else.
        let text = self.cursor.str("string list").ok();
        debug_assert!(text.is_some(), "a checked string list no longer decodes");
        if text.is_none() {
            self.left = 0;
        }
        text
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Key/value string pairs inside a payload (platform metadata), checked when the view was
/// made, in stored order. A key stored twice is kept twice here; [`StrPairs::to_map`] keeps
/// the last value, as decoding into a map does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrPairs<'a> {
    list: StrList<'a>,
}

impl<'a> StrPairs<'a> {
    /// Number of stored pairs.
    pub fn len(&self) -> usize {
        self.list.count / 2
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.count == 0
    }

    /// The pairs, in stored order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut strings = self.list.iter();
        std::iter::from_fn(move || Some((strings.next()?, strings.next()?)))
    }

    /// The pairs as an owned map (a repeated key keeps its last value).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }
}

/// A borrowed [`ProcessEvent`]: the same fields, strings as slices of the payload, times as
/// nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventView<'a> {
    /// Process id.
    pub pid: u32,
    /// Parent process id, when known.
    pub ppid: Option<u32>,
    /// Process name.
    pub name: &'a str,
    /// Path of the executable image, when known.
    pub executable_path: Option<&'a str>,
    /// Command line as argv.
    pub command_line: StrList<'a>,
    /// When the process started (ns since the Unix epoch), when known.
    pub start_time_ns: Option<i64>,
    /// CPU usage in percent of one core, when measured.
    pub cpu_usage_percent: Option<f64>,
    /// Resident memory in bytes, when measured.
    pub memory_usage_bytes: Option<u64>,
    /// Hex digest of the executable, when computed.
    pub executable_hash: Option<&'a str>,
    /// Algorithm of `executable_hash`.
    pub hash_algorithm: Option<&'a str>,
    /// Owning user id, when known.
    pub user_id: Option<&'a str>,
    /// Whether the collector could read the process's details.
    pub accessible: bool,
    /// Whether the executable file still exists on disk.
    pub file_exists: bool,
    /// When the collector observed the process (ns since the Unix epoch).
    pub collection_time_ns: i64,
    /// Platform-specific attributes.
    pub platform_metadata: StrPairs<'a>,
    /// Whether truncation shortened any field.
    pub truncated: bool,
}

impl EventView<'_> {
    /// The owned event (allocates its strings).
    pub fn to_event(&self) -> ProcessEvent {
        ProcessEvent {
            pid: self.pid,
            ppid: self.ppid,
            name: self.name.to_owned(),
            executable_path: self.executable_path.map(str::to_owned),
            command_line: self.command_line.iter().map(str::to_owned).collect(),
            start_time: self.start_time_ns.map(utc_from_ns),
            cpu_usage_percent: self.cpu_usage_percent,
            memory_usage_bytes: self.memory_usage_bytes,
            executable_hash: self.executable_hash.map(str::to_owned),
            hash_algorithm: self.hash_algorithm.map(str::to_owned),
            user_id: self.user_id.map(str::to_owned),
            accessible: self.accessible,
            file_exists: self.file_exists,
            collection_time: utc_from_ns(self.collection_time_ns),
            platform_metadata: self.platform_metadata.to_map(),
            truncated: self.truncated,
        }
    }
}

/// A borrowed [`WalEntry`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntryView<'a> {
    /// Position in the log.
    pub sequence: u64,
    /// When the entry was appended, nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The event.
    pub event: EventView<'a>,
    /// What happened.
    pub kind: EventKind,
}

impl EntryView<'_> {
    /// When the entry was appended.
    pub fn timestamp(&self) -> DateTime<Utc> {
        utc_from_ns(self.timestamp_ns)
    }

    /// The owned entry (allocates the event's strings).
    pub fn to_entry(&self) -> WalEntry {
        WalEntry {
            sequence: self.sequence,
            timestamp: self.timestamp(),
            event: self.event.to_event(),
            kind: self.kind,
        }
    }
}

/// A borrowed [`Record`]: what [`decode_payload_view`] returns.
#[allow(clippy::large_enum_variant)] // Handled one at a time, never stored in bulk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordView<'a> {
    /// A process event.
    Event(EntryView<'a>),
    /// An acknowledgement watermark.
    Checkpoint(CheckpointEntry),
    /// The durable watermark.
    Watermark(WatermarkEntry),
}

impl RecordView<'_> {
    /// The owned record (allocates an event's strings).
    pub fn to_record(&self) -> Record {
        match self {
            RecordView::Event(entry) => Record::Event(entry.to_entry()),
            RecordView::Checkpoint(checkpoint) => Record::Checkpoint(*checkpoint),
            RecordView::Watermark(watermark) => Record::Watermark(*watermark),
        }
    }

    /// The event's sequence, for an event record.
    pub fn event_sequence(&self) -> Option<u64> {
        match self {
            RecordView::Event(entry) => Some(entry.sequence),
            _ => None,
        }
    }
}

/// Checks a verified payload of `kind` completely and describes it without allocating.
pub fn decode_payload_view(
    kind: RecordKind,
    payload: &[u8],
) -> Result<RecordView<'_>, PayloadError> {
    let mut cursor = Cursor { bytes: payload };
    Ok(match kind {
        RecordKind::Event => RecordView::Event(entry(&mut cursor)?),
        RecordKind::Checkpoint => RecordView::Checkpoint(CheckpointEntry {
            acked_through: cursor.u64("acked_through")?,
            timestamp: utc_from_ns(cursor.i64("timestamp")?),
        }),
        RecordKind::Watermark => RecordView::Watermark(WatermarkEntry {
            durable_watermark: cursor.u64("durable_watermark")?,
            timestamp: utc_from_ns(cursor.i64("timestamp")?),
        }),
    })
}

/// Decodes a verified payload of `kind` straight into an owned record, in one pass (each
/// string checked once and copied once). Accepts and refuses exactly what
/// [`decode_payload_view`] does, and yields what its view's `to_record` would.
pub fn decode_payload_owned(kind: RecordKind, payload: &[u8]) -> Result<Record, PayloadError> {
    if kind != RecordKind::Event {
        return decode_payload_view(kind, payload).map(|view| view.to_record());
    }
    let mut cursor = Cursor { bytes: payload };
    let sequence = cursor.u64("sequence")?;
    let timestamp_ns = cursor.i64("timestamp")?;
    let event = event_owned(&mut cursor)?;
    let kind = event_kind(&mut cursor)?;
    Ok(Record::Event(WalEntry {
        sequence,
        timestamp: utc_from_ns(timestamp_ns),
        event,
        kind,
    }))
}

fn event_kind(cursor: &mut Cursor<'_>) -> Result<EventKind, PayloadError> {
    match cursor.u32("kind")? {
        0 => Ok(EventKind::Start),
        1 => Ok(EventKind::Stop),
        2 => Ok(EventKind::Modify),
        value => Err(PayloadError::InvalidTag {
            field: "kind",
            value,
        }),
    }
}

fn entry<'a>(cursor: &mut Cursor<'a>) -> Result<EntryView<'a>, PayloadError> {
    let sequence = cursor.u64("sequence")?;
    let timestamp_ns = cursor.i64("timestamp")?;
    let event = event(cursor)?;
    let kind = event_kind(cursor)?;
    Ok(EntryView {
        sequence,
        timestamp_ns,
        event,
        kind,
    })
}

/// [`event`], building the owned event as it goes (same fields, same checks, same order).
fn event_owned(cursor: &mut Cursor<'_>) -> Result<ProcessEvent, PayloadError> {
    let owned = |text: &str| text.to_owned();
    Ok(ProcessEvent {
        pid: cursor.u32("pid")?,
        ppid: cursor.option("ppid", |c| c.u32("ppid"))?,
        name: cursor.str("name").map(owned)?,
        executable_path: cursor
            .option("executable_path", |c| c.str("executable_path").map(owned))?,
        command_line: {
            let count = cursor.u64("command_line")?;
            // Each entry costs at least its 8-byte length, so this bounds the allocation by
            // the payload, not by the claimed count.
            let mut argv = Vec::with_capacity(bounded_count(count, cursor.bytes.len()));
            for _ in 0..count {
                argv.push(cursor.str("command_line").map(owned)?);
            }
            argv
        },
        start_time: cursor.option("start_time", |c| c.i64("start_time").map(utc_from_ns))?,
        cpu_usage_percent: cursor.option("cpu_usage_percent", |c| {
            c.u64("cpu_usage_percent").map(f64::from_bits)
        })?,
        memory_usage_bytes: cursor.option("memory_usage_bytes", |c| c.u64("memory_usage_bytes"))?,
        executable_hash: cursor
            .option("executable_hash", |c| c.str("executable_hash").map(owned))?,
        hash_algorithm: cursor.option("hash_algorithm", |c| c.str("hash_algorithm").map(owned))?,
        user_id: cursor.option("user_id", |c| c.str("user_id").map(owned))?,
        accessible: cursor.bool("accessible")?,
        file_exists: cursor.bool("file_exists")?,
        collection_time: utc_from_ns(cursor.i64("collection_time")?),
        platform_metadata: {
            let count = cursor.u64("platform_metadata")?;
            let mut map = BTreeMap::new();
            for _ in 0..count {
                let key = cursor.str("platform_metadata").map(owned)?;
                let value = cursor.str("platform_metadata").map(owned)?;
                // A repeated key keeps its last value, as decoding into a map does.
                map.insert(key, value);
            }
            map
        },
        truncated: cursor.bool("truncated")?,
    })
}

/// A claimed count of length-prefixed items, capped by what `remaining_bytes` can hold.
fn bounded_count(count: u64, remaining_bytes: usize) -> usize {
    usize::try_from(count)
        .unwrap_or(usize::MAX)
        .min(remaining_bytes / 8)
}

fn event<'a>(cursor: &mut Cursor<'a>) -> Result<EventView<'a>, PayloadError> {
    // Field order is ProcessEvent's declaration order (the on-disk order).
    Ok(EventView {
        pid: cursor.u32("pid")?,
        ppid: cursor.option("ppid", |c| c.u32("ppid"))?,
        name: cursor.str("name")?,
        executable_path: cursor.option("executable_path", |c| c.str("executable_path"))?,
        command_line: cursor.str_list("command_line", 1)?,
        start_time_ns: cursor.option("start_time", |c| c.i64("start_time"))?,
        cpu_usage_percent: cursor.option("cpu_usage_percent", |c| {
            c.u64("cpu_usage_percent").map(f64::from_bits)
        })?,
        memory_usage_bytes: cursor.option("memory_usage_bytes", |c| c.u64("memory_usage_bytes"))?,
        executable_hash: cursor.option("executable_hash", |c| c.str("executable_hash"))?,
        hash_algorithm: cursor.option("hash_algorithm", |c| c.str("hash_algorithm"))?,
        user_id: cursor.option("user_id", |c| c.str("user_id"))?,
        accessible: cursor.bool("accessible")?,
        file_exists: cursor.bool("file_exists")?,
        collection_time_ns: cursor.i64("collection_time")?,
        platform_metadata: StrPairs {
            list: cursor.str_list("platform_metadata", 2)?,
        },
        truncated: cursor.bool("truncated")?,
    })
}

/// `DateTime::from_timestamp_nanos`, keeping per thread the calendar date of the last day
/// converted: records in a row are nearly always from the same day, and turning a day number
/// into a date is most of the conversion's cost. Same result for every input.
fn utc_from_ns(ns: i64) -> DateTime<Utc> {
    const NS_PER_SECOND: i64 = 1_000_000_000;
    const SECONDS_PER_DAY: i64 = 86_400;
    thread_local! {
        static LAST_DAY: Cell<Option<(i64, NaiveDate)>> = const { Cell::new(None) };
    }
    let seconds = ns.div_euclid(NS_PER_SECOND);
    let subsec_ns = ns.rem_euclid(NS_PER_SECOND) as u32;
    let day = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY) as u32;
    let Some(time) = NaiveTime::from_num_seconds_from_midnight_opt(second_of_day, subsec_ns) else {
        return DateTime::from_timestamp_nanos(ns); // Not reached: both are in range.
    };
    let date = LAST_DAY.with(|last| match last.get() {
        Some((cached_day, date)) if cached_day == day => date,
        _ => {
            let date = DateTime::from_timestamp_nanos(ns).date_naive();
            last.set(Some((day, date)));
            date
        }
    });
    date.and_time(time).and_utc()
}

/// Reads fields from the front of a payload.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: u64, field: &'static str) -> Result<&'a [u8], PayloadError> {
        match usize::try_from(len) {
            Ok(len) if len <= self.bytes.len() => {
                let (taken, rest) = self.bytes.split_at(len);
                self.bytes = rest;
                Ok(taken)
            }
            _ => Err(PayloadError::Truncated {
                field,
                needed_bytes: len - self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], PayloadError> {
        let Some((head, rest)) = self.bytes.split_first_chunk::<N>() else {
            return Err(PayloadError::Truncated {
                field,
                needed_bytes: (N - self.bytes.len()) as u64,
            });
        };
        self.bytes = rest;
        Ok(*head)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PayloadError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, PayloadError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, PayloadError> {
        self.array(field).map(i64::from_le_bytes)
    }

    /// A one-byte 0/1 tag (`bool`, and the `Option` discriminant).
    fn bool(&mut self, field: &'static str) -> Result<bool, PayloadError> {
        match self.array::<1>(field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(PayloadError::InvalidTag {
                field,
                value: u32::from(value),
            }),
        }
    }

    fn option<T>(
        &mut self,
        field: &'static str,
        some: impl FnOnce(&mut Self) -> Result<T, PayloadError>,
    ) -> Result<Option<T>, PayloadError> {
        if self.bool(field)? {
            some(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, PayloadError> {
        let len = self.u64(field)?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8 { field })
    }

    /// A `u64` count of entries, each `strings_per_entry` strings, checked one by one (each
    /// string costs at least its 8-byte length, so a huge count fails within the payload).
    fn str_list(
        &mut self,
        field: &'static str,
        strings_per_entry: u64,
    ) -> Result<StrList<'a>, PayloadError> {
        let entries = self.u64(field)?;
        let start = self.bytes;
        let mut count = 0usize;
        for _ in 0..entries {
            for _ in 0..strings_per_entry {
                self.str(field)?;
                count += 1;
            }
        }
        let used = start.len() - self.bytes.len();
        Ok(StrList {
            bytes: &start[..used],
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cached_time_conversion_equals_chrono(
            start in any::<i64>(),
            steps in proptest::collection::vec(-200_000_000_000_000i64..200_000_000_000_000, 0..20),
        ) {
            let mut ns = start;
            prop_assert_eq!(utc_from_ns(ns), DateTime::from_timestamp_nanos(ns));
            for step in steps {
                ns = ns.saturating_add(step);
                prop_assert_eq!(utc_from_ns(ns), DateTime::from_timestamp_nanos(ns));
            }
        }
    }

    #[test]
    fn cached_time_conversion_at_day_edges() {
        let day_ns = 86_400 * 1_000_000_000i64;
        for day in [-719_163i64, -1, 0, 1, 20_000] {
            for offset in [-1i64, 0, 1, day_ns - 1, day_ns] {
                let ns = day.saturating_mul(day_ns).saturating_add(offset);
                assert_eq!(utc_from_ns(ns), DateTime::from_timestamp_nanos(ns), "{ns}");
            }
        }
        for ns in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            assert_eq!(utc_from_ns(ns), DateTime::from_timestamp_nanos(ns), "{ns}");
        }
    }
}
