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
/// Metadata key: `"true"` when the process was exiting, or had exited and not yet been
/// reaped (zombie), when it was read.
pub const META_EXITING: &str = "linux.exiting";
/// Metadata key on the Start events of the first poll: `"true"` — the process was already
/// running when monitoring began (it did not start then; see `start_time`).
pub const META_INITIAL_SCAN: &str = "change.initial_scan";
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
    /// A kernel thread (no executable, no argv; its name is the kernel's to change).
    pub kernel_thread: bool,
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
    /// CPU use in percent of one core since the previous poll, or over the process's life
    /// when first seen (set by [`fill_cpu_usage`]).
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
            kernel_thread: false,
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
    /// Seconds since boot at the poll (`/proc/uptime`), when readable: the CPU usage of a
    /// process seen for the first time is measured over its lifetime up to here.
    pub uptime_s: Option<f64>,
}

impl Snapshot {
    /// An empty snapshot taken at the given times.
    pub fn new(collection_time: DateTime<Utc>, taken_at: Instant) -> Self {
        Snapshot {
            processes: BTreeMap::new(),
            collection_time,
            taken_at,
            uptime_s: None,
        }
    }

    /// Adds (or replaces) a record.
    pub fn insert(&mut self, record: ProcessRecord) {
        self.processes.insert(record.pid, record);
    }
}

/// Fills the tracked attributes `next` could not read with the values `previous` knew for
/// the same process (same pid and start time), and marks them known again.
///
/// Why: a process that is exiting, or a file refused for a moment, must not blank out what
/// was already known — the Stop event that follows carries the last known argv and
/// executable, and the next real change is still compared against the last known value.
/// Attributes never read since the process appeared stay unobserved.
pub fn carry_forward(previous: &Snapshot, next: &mut Snapshot) {
    for record in next.processes.values_mut() {
        if !record.unobserved.any() {
            continue;
        }
        let Some(before) = previous
            .processes
            .get(&record.pid)
            .filter(|before| before.same_process(record))
        else {
            continue;
        };
        if record.unobserved.executable && !before.unobserved.executable {
            record.executable_path.clone_from(&before.executable_path);
            record.file_exists = before.file_exists;
            record.unobserved.executable = false;
        }
        if record.unobserved.argv && !before.unobserved.argv {
            record.argv.clone_from(&before.argv);
            record.argv_cut = before.argv_cut;
            record.unobserved.argv = false;
        }
        if record.unobserved.uid && !before.unobserved.uid {
            record.uid = before.uid;
            record.unobserved.uid = false;
        }
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

/// Sets `cpu_usage_percent` on every process of `next`: for a process `previous` also saw
/// (same pid, same start time), from the growth of its CPU ticks between the two polls; for
/// a process seen for the first time, over its lifetime (its CPU ticks over the time since
/// it started, which for a process that started after the previous poll is the same
/// window). Without a readable uptime, first sightings keep `None`.
pub fn fill_cpu_usage(previous: Option<&Snapshot>, next: &mut Snapshot, clock_ticks_per_s: u64) {
    let elapsed_s = previous.map(|previous| {
        next.taken_at
            .saturating_duration_since(previous.taken_at)
            .as_secs_f64()
    });
    let uptime_s = next.uptime_s;
    for record in next.processes.values_mut() {
        let before = previous
            .and_then(|previous| previous.processes.get(&record.pid))
            .filter(|before| before.same_process(record));
        record.cpu_usage_percent = match (before, elapsed_s) {
            (Some(before), Some(elapsed_s)) => {
                // CPU time never decreases for one process; saturate rather than trust it.
                let delta = record.cpu_ticks.saturating_sub(before.cpu_ticks);
                cpu_percent(delta, clock_ticks_per_s, elapsed_s)
            }
            _ => uptime_s.and_then(|uptime_s| {
                let started_s = record.start_ticks as f64 / clock_ticks_per_s as f64;
                cpu_percent(record.cpu_ticks, clock_ticks_per_s, uptime_s - started_s)
            }),
        };
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
        let mut without_uptime = after.clone();
        fill_cpu_usage(Some(&before), &mut without_uptime, 100);
        assert_eq!(without_uptime.processes[&10].cpu_usage_percent, Some(100.0));
        assert_eq!(without_uptime.processes[&11].cpu_usage_percent, None);
        assert_eq!(without_uptime.processes[&12].cpu_usage_percent, None);

        // With the uptime, first sightings are measured over their lifetime: started at
        // tick 9 (0.09 s), 10.09 s of uptime, 50 ticks (0.5 s) of CPU: 5 %.
        after.uptime_s = Some(10.09);
        after.processes.get_mut(&12).unwrap().cpu_ticks = 50;
        fill_cpu_usage(Some(&before), &mut after, 100);
        assert_eq!(after.processes[&10].cpu_usage_percent, Some(100.0));
        let fresh = after.processes[&12].cpu_usage_percent.unwrap();
        assert!((fresh - 5.0).abs() < 1e-9, "{fresh}");
        let reused = after.processes[&11].cpu_usage_percent.unwrap();
        assert_eq!(reused, 0.0, "a reused pid is a first sighting, not a delta");

        // The first poll has no previous snapshot at all.
        let mut first = after.clone();
        fill_cpu_usage(None, &mut first, 100);
        let busy = first.processes[&10].cpu_usage_percent.unwrap();
        assert!(
            (busy - 300.0 / 100.0 / (10.09 - 0.05) * 100.0).abs() < 1e-9,
            "{busy}"
        );
    }

    #[test]
    fn a_start_time_after_the_uptime_gives_no_lifetime_figure() {
        let mut snapshot = Snapshot::new(DateTime::from_timestamp_nanos(0), Instant::now());
        snapshot.uptime_s = Some(1.0);
        snapshot.insert(ProcessRecord::new(5, 500, "future"));
        fill_cpu_usage(None, &mut snapshot, 100);
        assert_eq!(snapshot.processes[&5].cpu_usage_percent, None);
    }

    #[test]
    fn unreadable_attributes_keep_their_last_known_values() {
        let time = DateTime::from_timestamp_nanos(0);
        let start = Instant::now();
        let mut known = ProcessRecord::new(10, 5, "sh");
        known.argv = vec!["sh".into(), "-c".into()];
        known.executable_path = Some("/bin/sh".into());
        known.file_exists = true;
        known.uid = Some(7);
        let mut never_read = ProcessRecord::new(11, 5, "x");
        never_read.unobserved.argv = true;
        let mut before = Snapshot::new(time, start);
        before.insert(known.clone());
        before.insert(never_read.clone());

        let mut blind = ProcessRecord::new(10, 5, "sh");
        blind.unobserved = Unobserved {
            executable: true,
            argv: true,
            uid: true,
        };
        let mut reused = blind.clone();
        reused.start_ticks = 6;
        reused.pid = 12;
        let mut after = Snapshot::new(time, start);
        after.insert(blind);
        after.insert(never_read.clone());
        after.insert(reused.clone());
        let mut other_process = before.clone();
        other_process.insert(ProcessRecord::new(12, 5, "old"));
        carry_forward(&other_process, &mut after);

        assert_eq!(after.processes[&10], known, "filled in and marked known");
        assert_eq!(after.processes[&11], never_read, "nothing known to fill in");
        assert_eq!(
            after.processes[&12], reused,
            "another process's values never leak"
        );
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
