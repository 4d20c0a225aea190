//! Helpers shared by the integration tests: sample events, small configurations, a runtime
//! for driving the async API, and the io_uring availability check that lets tests skip the
//! io_uring backend (with a printed reason) where it cannot run.
#![allow(dead_code)]

pub mod log_capture;
pub mod strategies;
pub mod wait;

use std::path::Path;
use std::sync::OnceLock;

use chrono::DateTime;
use procmond_wal::io::Preallocation;
use procmond_wal::io::probe;
use procmond_wal::wal::{BackendChoice, WalConfig};
use procmond_wal::{EventKind, ProcessEvent};

/// Why the io_uring backend cannot run here, or `None` when it can: no ring (old kernel,
/// seccomp, `kernel.io_uring_disabled`), `PROCMOND_WAL_DISABLE_URING` set, or the temporary
/// directory's filesystem refusing O_DIRECT. Probed once per test binary with the library's
/// own probe, in the directory the tests' `tempfile::tempdir()` calls use.
pub fn uring_unavailable() -> Option<&'static str> {
    static REASON: OnceLock<Option<String>> = OnceLock::new();
    REASON
        .get_or_init(|| {
            let scratch = match tempfile::tempdir() {
                Ok(scratch) => scratch,
                Err(error) => return Some(format!("no temporary directory to probe: {error}")),
            };
            probe::probe_uring(scratch.path())
                .err()
                .map(|problem| problem.to_string())
        })
        .as_deref()
}

/// Whether a test may use the io_uring backend; when it may not, prints that the current
/// test skips it and why.
pub fn uring_or_skip() -> bool {
    match uring_unavailable() {
        None => true,
        Some(reason) => {
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("this test");
            eprintln!("{test}: skipping the io_uring backend: {reason}");
            false
        }
    }
}

/// The backends a test must hold on: io_uring (when [`uring_or_skip`] allows it) and
/// portable. `for backend in BACKENDS { .. }` iterates over the ones available here.
pub const BACKENDS: Backends = Backends;

/// See [`BACKENDS`].
#[derive(Debug, Clone, Copy)]
pub struct Backends;

impl Backends {
    /// The available backends, io_uring first.
    pub fn available(self) -> Vec<BackendChoice> {
        let mut backends = Vec::with_capacity(2);
        if uring_or_skip() {
            backends.push(BackendChoice::Uring);
        }
        backends.push(BackendChoice::Portable);
        backends
    }

    /// Iterates over [`Backends::available`].
    pub fn iter(self) -> std::vec::IntoIter<BackendChoice> {
        self.available().into_iter()
    }
}

impl IntoIterator for Backends {
    type Item = BackendChoice;
    type IntoIter = std::vec::IntoIter<BackendChoice>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

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

/// A configuration on the simulated disk `disk`, with 64 KiB segments and 8 KiB groups, so
/// a few hundred small events rotate and span groups.
pub fn sim_config(dir: &Path, disk: &procmond_wal::io::sim::SimDisk) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.backend = BackendChoice::Simulated;
    config.sim_disk = Some(disk.clone());
    config.segment_max_bytes = 64 * 1024;
    config.group_max_bytes = 8 * 1024;
    config.wal_max_bytes = 16 * 1024 * 1024;
    config.preallocation = Preallocation::Fallocate;
    config
}

/// The names of the segment files in `dir`, sorted.
pub fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read the WAL directory")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

/// A multi-threaded runtime for the tests' async calls (the WAL has its own thread).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// Deterministic pseudo-random numbers for seeded tests (a 64-bit linear congruential
/// generator, Knuth's MMIX constants): the same seed gives the same run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next value: the high 31 bits of the advanced state.
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}
