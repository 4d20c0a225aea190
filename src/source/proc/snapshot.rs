//! What one poll of /proc saw: a [`ProcessRecord`] per process, keyed by pid, and the pure
//! steps that work on records — CPU usage from two polls, and turning a record into a
//! [`ProcessEvent`].
//!
//! No I/O here: the reader fills snapshots, the differ compares them.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::event::ProcessEvent;

/// Metadata key: effective user id, when it could be read.
pub const META_EUID: &str = "linux.euid";
/// Metadata key: process group id.
pub const META_PGRP: &str = "linux.pgrp";
/// Metadata key: session id.
pub const META_SESSION: &str = "linux.session";
/// Metadata key: number of threads.
pub const META_THREADS: &str = "linux.threads";
/// Metadata key: `"true"` for kernel threads (absent otherwise).
pub const META_KERNEL_THREAD: &str = "linux.kernel_thread";
/// Metadata key: `"true"` when the process had exited (zombie) when it was read.
pub const META_EXITING: &str = "linux.exiting";
/// Metadata key on Modify events: the tracked attributes that changed, comma-separated
/// (`name`, `executable_path`, `argv`, `uid`, `ppid`).
pub const META_CHANGED: &str = "change.fields";

/// Tracked attributes that could not be read in this poll (permission denied, a file
/// missing, a zombie whose memory is gone). They are reported empty and never count as a
/// change, so a transient read failure does not produce a false Modify event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unobserved {
    /// `executable_path` (and `file_exists`) are unknown.
    pub executable: bool,
    /// `argv` is unknown.
    pub argv: bool,
    /// `uid` is unknown.
    pub uid: bool,
}

impl Unobserved {
    /// Whether any tracked attribute is unknown.
    pub fn any(self) -> bool {
        self.executable || self.argv || self.uid
    }
}

/// One process as one poll saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot: with `pid`, the process's identity (a pid seen
    /// again with another start time is a new process).
    pub start_ticks: u64,
    /// Parent process id; `None` for the roots (parent 0).
    pub ppid: Option<u32>,
    /// `comm` (at most 15 bytes, set by the kernel from the executable name or by the process).
    pub name: String,
    /// Executable path from the `exe` link, when readable and the process has one.
    pub executable_path: Option<String>,
    /// False when the kernel reports the executable as deleted.
    pub file_exists: bool,
    /// Arguments from `cmdline`.
    pub argv: Vec<String>,
    /// True when `cmdline` was longer than the reader keeps.
    pub argv_cut: bool,
    /// Real user id.
    pub uid: Option<u32>,
    /// Start time as wall-clock time (boot time + `start_ticks`).
    pub start_time: Option<DateTime<Utc>>,
    /// User + system CPU time so far, in clock ticks.
    pub cpu_ticks: u64,
    /// CPU use since the previous poll, in percent of one core (set by [`fill_cpu_usage`]).
    pub cpu_usage_percent: Option<f64>,
    /// Resident set size in bytes.
    pub memory_usage_bytes: Option<u64>,
    /// False when any of the process's files was refused (permission denied).
    pub accessible: bool,
    /// Tracked attributes that could not be read this time.
    pub unobserved: Unobserved,
    /// Cheap extra attributes (`linux.*` keys above).
    pub metadata: BTreeMap<String, String>,
}

impl ProcessRecord {
    /// A record with only identity and name; everything else empty, accessible.
    pub fn new(pid: u32, start_ticks: u64, name: impl Into<String>) -> Self {
        ProcessRecord {
            pid,
            start_ticks,
            ppid: None,
            name: name.into(),
            executable_path: None,
            file_exists: false,
            argv: Vec::new(),
            argv_cut: false,
            uid: None,
            start_time: None,
            cpu_ticks: 0,
            cpu_usage_percent: None,
            memory_usage_bytes: None,
            accessible: true,
            unobserved: Unobserved::default(),
            metadata: BTreeMap::new(),
        }
    }

    /// Whether `other` is the same process (same pid and start time), not a reused pid.
    pub fn same_process(&self, other: &ProcessRecord) -> bool {
        self.pid == other.pid && self.start_ticks == other.start_ticks
    }

    /// The event for this record, observed at `collection_time`, within the event limits.
    pub fn to_event(&self, collection_time: DateTime<Utc>) -> ProcessEvent {
        let mut event = ProcessEvent::new(self.pid, self.name.clone(), collection_time);
        event.ppid = self.ppid;
        event.executable_path = self.executable_path.clone();
        event.command_line = self.argv.clone();
        event.start_time = self.start_time;
        event.cpu_usage_percent = self.cpu_usage_percent;
        event.memory_usage_bytes = self.memory_usage_bytes;
        event.user_id = self.uid.map(|uid| uid.to_string());
        event.accessible = self.accessible;
        event.file_exists = self.file_exists;
        event.platform_metadata = self.metadata.clone();
        event.truncate_to_limits();
        if self.argv_cut {
            event.truncated = true;
        }
        event
    }
}

/// Every process one poll saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Processes by pid (ordered, so everything derived from a snapshot is deterministic).
    pub processes: BTreeMap<u32, ProcessRecord>,
    /// Wall-clock time of the poll (the events' collection time).
    pub collection_time: DateTime<Utc>,
    /// Monotonic time of the poll (for CPU usage between polls).
    pub taken_at: Instant,
}

impl Snapshot {
    /// An empty snapshot taken at the given times.
    pub fn new(collection_time: DateTime<Utc>, taken_at: Instant) -> Self {
        Snapshot {
            processes: BTreeMap::new(),
            collection_time,
            taken_at,
        }
    }

    /// Adds (or replaces) a record.
    pub fn insert(&mut self, record: ProcessRecord) {
        self.processes.insert(record.pid, record);
    }
}

/// CPU use in percent of one core: `cpu_ticks_delta` ticks of CPU time during `elapsed_s`
/// seconds of wall time. `None` when no time passed.
pub fn cpu_percent(cpu_ticks_delta: u64, clock_ticks_per_s: u64, elapsed_s: f64) -> Option<f64> {
    debug_assert!(
        clock_ticks_per_s > 0,
        "clock ticks per second is validated at open"
    );
    if elapsed_s.is_nan() || elapsed_s <= 0.0 || clock_ticks_per_s == 0 {
        return None;
    }
    Some(cpu_ticks_delta as f64 / clock_ticks_per_s as f64 / elapsed_s * 100.0)
}

/// Sets `cpu_usage_percent` on every process of `next` that `previous` also saw (same pid,
/// same start time) from the growth of its CPU ticks between the two polls. Processes seen
/// for the first time keep `None`: there is no earlier sample to measure from.
pub fn fill_cpu_usage(previous: &Snapshot, next: &mut Snapshot, clock_ticks_per_s: u64) {
    let elapsed_s = next
        .taken_at
        .saturating_duration_since(previous.taken_at)
        .as_secs_f64();
    for record in next.processes.values_mut() {
        record.cpu_usage_percent = previous
            .processes
            .get(&record.pid)
            .filter(|before| before.same_process(record))
            .and_then(|before| {
                // CPU time never decreases for one process; saturate rather than trust it.
                let delta = record.cpu_ticks.saturating_sub(before.cpu_ticks);
                cpu_percent(delta, clock_ticks_per_s, elapsed_s)
            });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn cpu_usage_is_the_tick_delta_over_wall_time() {
        let start = Instant::now();
        let time = DateTime::from_timestamp_nanos(0);
        let mut before = Snapshot::new(time, start);
        let mut busy = ProcessRecord::new(10, 5, "busy");
        busy.cpu_ticks = 100;
        before.insert(busy.clone());
        let mut reused = ProcessRecord::new(11, 5, "old");
        reused.cpu_ticks = 10;
        before.insert(reused);

        let mut after = Snapshot::new(time, start + Duration::from_secs(2));
        busy.cpu_ticks = 300; // 200 ticks at 100 Hz = 2 s of CPU in 2 s: one full core
        after.insert(busy);
        after.insert(ProcessRecord::new(11, 9, "new")); // pid reused: no earlier sample
        after.insert(ProcessRecord::new(12, 9, "fresh"));
        fill_cpu_usage(&before, &mut after, 100);

        assert_eq!(after.processes[&10].cpu_usage_percent, Some(100.0));
        assert_eq!(after.processes[&11].cpu_usage_percent, None);
        assert_eq!(after.processes[&12].cpu_usage_percent, None);
    }

    #[test]
    fn no_elapsed_time_gives_no_cpu_figure() {
        assert_eq!(cpu_percent(5, 100, 0.0), None);
        assert_eq!(cpu_percent(50, 100, 1.0), Some(50.0));
    }

    #[test]
    fn events_carry_the_record_and_mark_cut_argv() {
        let mut record = ProcessRecord::new(7, 1, "sh");
        record.uid = Some(1000);
        record.argv = vec!["sh".into()];
        record.argv_cut = true;
        let event = record.to_event(DateTime::from_timestamp_nanos(5));
        assert_eq!(event.user_id.as_deref(), Some("1000"));
        assert_eq!(event.command_line, ["sh"]);
        assert!(event.truncated);
        assert!(event.accessible);
    }
}
