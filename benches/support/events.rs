//! Sample events of an exact encoded size, so every system under test writes the same bytes.
//!
//! "Event size" everywhere in the benchmarks means the bincode encoding of a `ProcessEvent`
//! (what the WAL's `encode_event` produces and what the references write); frame headers are
//! each system's own overhead and are not counted as throughput.

use std::collections::BTreeMap;

use chrono::DateTime;
use procmond_wal::wal::format::encode_event;
use procmond_wal::{EventKind, ProcessEvent};

use super::{BenchError, BenchResult};

/// The event sizes measured (docs/benchmarks.md): ~256 B, ~1 KiB, ~4 KiB.
pub const EVENT_SIZES_BYTES: [usize; 3] = [256, 1024, 4096];

/// bincode's legacy configuration prefixes each string with a u64 length.
const STRING_PREFIX_BYTES: usize = 8;

/// A realistic process event whose encoding is exactly `target_bytes` long (the argv gets a
/// padding argument of the right length).
pub fn event_of_size(target_bytes: usize) -> BenchResult<ProcessEvent> {
    let mut event = ProcessEvent::new(
        4242,
        "nginx",
        DateTime::from_timestamp_nanos(1_764_000_000_000_000_000),
    );
    event.ppid = Some(1);
    event.executable_path = Some("/usr/sbin/nginx".into());
    event.command_line = vec!["nginx".into(), "-g".into(), "daemon off;".into()];
    event.start_time = Some(DateTime::from_timestamp_nanos(1_763_999_000_000_000_000));
    event.cpu_usage_percent = Some(1.5);
    event.memory_usage_bytes = Some(12 * 1024 * 1024);
    event.user_id = Some("33".into());
    event.accessible = true;
    event.file_exists = true;
    event.platform_metadata = BTreeMap::from([(
        "linux.cgroup".to_string(),
        "/system.slice/nginx.service".to_string(),
    )]);
    let base_bytes = encoded_len(&event, target_bytes)?;
    if base_bytes + STRING_PREFIX_BYTES > target_bytes {
        return Err(BenchError::EventSize {
            target_bytes,
            reason: format!("the base event alone encodes to {base_bytes} bytes"),
        });
    }
    event
        .command_line
        .push("x".repeat(target_bytes - base_bytes - STRING_PREFIX_BYTES));
    let got_bytes = encoded_len(&event, target_bytes)?;
    if got_bytes != target_bytes {
        return Err(BenchError::EventSize {
            target_bytes,
            reason: format!("padding produced {got_bytes} bytes"),
        });
    }
    Ok(event)
}

fn encoded_len(event: &ProcessEvent, target_bytes: usize) -> BenchResult<usize> {
    encode_event(event)
        .map(|bytes| bytes.len())
        .map_err(|error| BenchError::EventSize {
            target_bytes,
            reason: error.to_string(),
        })
}

/// The kind used for the `index`-th append (cycles, like a real collector's mix).
pub fn kind_for(index: u64) -> EventKind {
    EventKind::ALL[(index % 3) as usize]
}
