//! proptest strategies for events and their parts, shared by the property tests.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;

use procmond_wal::{EventKind, ProcessEvent};

/// A proptest configuration running `cases` cases.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        ..Config::default()
    }
}

pub fn time_ns() -> impl Strategy<Value = DateTime<Utc>> {
    any::<i64>().prop_map(DateTime::from_timestamp_nanos)
}

/// Any f64 but NaN (NaN != NaN would make equality meaningless; its bits round-trip too).
pub fn number() -> impl Strategy<Value = f64> {
    use proptest::num::f64::{INFINITE, NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

pub fn text() -> impl Strategy<Value = String> {
    // Arbitrary unicode scalar values, including control characters and astral planes.
    proptest::collection::vec(any::<char>(), 0..24).prop_map(|chars| chars.into_iter().collect())
}

pub fn kind() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

prop_compose! {
    pub fn process_event()(
        (pid, ppid, name, executable_path) in
            (any::<u32>(), any::<Option<u32>>(), text(), proptest::option::of(text())),
        (command_line, start_time, cpu_usage_percent, memory_usage_bytes) in (
            proptest::collection::vec(text(), 0..6),
            proptest::option::of(time_ns()),
            proptest::option::of(number()),
            any::<Option<u64>>(),
        ),
        (executable_hash, hash_algorithm, user_id) in (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
        (accessible, file_exists, collection_time, platform_metadata, truncated) in (
            any::<bool>(),
            any::<bool>(),
            time_ns(),
            proptest::collection::btree_map(text(), text(), 0..6),
            any::<bool>(),
        ),
    ) -> ProcessEvent {
        ProcessEvent {
            pid, ppid, name, executable_path, command_line, start_time, cpu_usage_percent,
            memory_usage_bytes, executable_hash, hash_algorithm, user_id, accessible,
            file_exists, collection_time, platform_metadata, truncated,
        }
    }
}
