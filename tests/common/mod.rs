//! Helpers shared by the integration tests: sample events, small configurations, and a
//! runtime for driving the async API.
#![allow(dead_code)]

use std::path::Path;

use chrono::DateTime;
use procmond_wal::io::Preallocation;
use procmond_wal::wal::{BackendChoice, WalConfig};
use procmond_wal::{EventKind, ProcessEvent};

/// Both backends, for tests that must hold on each.
pub const BACKENDS: [BackendChoice; 2] = [BackendChoice::Uring, BackendChoice::Portable];

/// A deterministic event for index `i` (sizes vary with `i`).
pub fn event(i: u64) -> ProcessEvent {
    let mut event = ProcessEvent::new(
        1000 + i as u32,
        format!("proc-{i}"),
        DateTime::from_timestamp_nanos(1_700_000_000_000_000_000 + i as i64),
    );
    event.ppid = Some(1);
    event.command_line = vec![format!("/usr/bin/proc-{i}"), "x".repeat((i % 61) as usize)];
    event.executable_path = Some(format!("/usr/bin/proc-{i}"));
    event.cpu_usage_percent = Some(i as f64 / 8.0);
    event.memory_usage_bytes = Some(4096 * i);
    event.accessible = i.is_multiple_of(2);
    event.file_exists = i.is_multiple_of(3);
    event
        .platform_metadata
        .insert("linux.cgroup".into(), format!("/slice-{}", i % 7));
    event
}

/// The kind used for event `i`.
pub fn kind(i: u64) -> EventKind {
    EventKind::ALL[(i % 3) as usize]
}

/// A configuration with small segments so rotation happens quickly.
pub fn small_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.backend = backend;
    config.segment_max_bytes = 256 * 1024;
    config.group_max_bytes = 32 * 1024;
    config.wal_max_bytes = 64 * 1024 * 1024;
    config.preallocation = Preallocation::Fallocate;
    config
}

/// A multi-threaded runtime for the tests' async calls (the WAL has its own thread).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}
