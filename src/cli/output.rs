//! Formatting shared by the subcommands: times, byte sizes, sequence ranges, damage
//! descriptions, table cells and JSON lines. Nothing here reads the WAL.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use procmond_wal::wal::recovery::DamageKind;
use serde::Serialize;

use super::CliError;

/// A time as RFC 3339 in UTC with nanoseconds (the precision the WAL stores).
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A time for a table cell: RFC 3339 in UTC with milliseconds.
pub fn rfc3339_millis(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Nanoseconds since the Unix epoch (the WAL only stores times that fit).
pub fn unix_ns(time: DateTime<Utc>) -> i64 {
    time.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A byte count for people: exact below 1 KiB, else with a binary unit and one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A sequence range for people: `1..=2000`, a single number, or `none`.
pub fn sequence_range(first: Option<u64>, last: Option<u64>) -> String {
    match (first, last) {
        (Some(first), Some(last)) if first == last => first.to_string(),
        (Some(first), Some(last)) => format!("{first}..={last}"),
        _ => "none".to_owned(),
    }
}

/// What a damage kind means, in words.
pub fn damage_description(kind: DamageKind) -> &'static str {
    match kind {
        DamageKind::CorruptRecords => "corrupt bytes between valid records (skipped)",
        DamageKind::UndecodableRecord => {
            "record with a valid checksum that does not decode (skipped)"
        }
        DamageKind::BadHeader => "segment header invalid (its records were still read)",
        DamageKind::DamagedEnd => {
            "invalid bytes after the last valid record, where acknowledged records were expected"
        }
        DamageKind::TornTail => {
            "invalid bytes at the end of the log that hide no acknowledged record, cut on next open"
        }
        DamageKind::MissingSegment => "segment file missing between two present segments",
        DamageKind::OutOfOrder => "event whose sequence is not above the previous one (skipped)",
        DamageKind::NonzeroPadding => "nonzero frame padding (the record is intact and kept)",
        DamageKind::UnreadableBlock => "unreadable bytes (I/O error), read as zeros",
    }
}

/// `text` made safe for one table cell: control characters (a process name is chosen by
/// whoever started the process) become `?`, and it is cut to `max_chars` with a `~` marker.
pub fn table_cell(text: &str, max_chars: usize) -> String {
    let mut cell = String::with_capacity(text.len().min(max_chars * 4));
    for (index, ch) in text.chars().enumerate() {
        if index + 1 == max_chars && text.chars().nth(max_chars).is_some() {
            cell.push('~');
            break;
        }
        cell.push(if ch.is_control() { '?' } else { ch });
    }
    cell
}

/// Writes `value` as one JSON line.
pub fn write_json_line<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, value).map_err(json_error)?;
    out.write_all(b"\n").map_err(CliError::Output)
}

/// Writes `value` as pretty JSON followed by a newline.
pub fn write_json_pretty<W: Write, T: Serialize>(out: &mut W, value: &T) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(json_error)?;
    out.write_all(b"\n").map_err(CliError::Output)
}

fn json_error(error: serde_json::Error) -> CliError {
    // Our values always serialize; the only failure left is the writer's.
    CliError::Output(std::io::Error::from(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_and_ranges_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(256 * 1024 * 1024), "256.0 MiB");
        assert_eq!(sequence_range(Some(1), Some(2000)), "1..=2000");
        assert_eq!(sequence_range(Some(7), Some(7)), "7");
        assert_eq!(sequence_range(None, None), "none");
    }

    #[test]
    fn table_cells_are_sanitised_and_bounded() {
        assert_eq!(table_cell("bash", 10), "bash");
        assert_eq!(table_cell("a\nb\tc", 10), "a?b?c");
        assert_eq!(table_cell("abcdefghij", 10), "abcdefghij");
        assert_eq!(table_cell("abcdefghijk", 10), "abcdefghi~");
        assert_eq!(table_cell("ééééééééééé", 3), "éé~");
    }
}
