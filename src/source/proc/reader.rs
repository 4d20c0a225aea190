//! Builds a [`Snapshot`] from a /proc tree: lists the numeric directories under the root and
//! reads `stat`, `status`, `cmdline` and the `exe` link of each.
//!
//! The root is a parameter (tests point it at a fake tree). Processes come and go while they
//! are read, and some files are refused to unprivileged readers: a process whose `stat`
//! cannot be read or parsed is skipped and counted by reason; a process whose other files
//! cannot be read is kept with those attributes marked unobserved. Only a root that cannot
//! be listed at all is an error. This module must never panic on file content and never
//! parse it itself (that is `parse`).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::parse::{
    StatFields, parse_boot_time_s, parse_cmdline, parse_exe_target, parse_stat, parse_status_uids,
    parse_uptime_s,
};
use super::snapshot::{
    META_EUID, META_EXITING, META_KERNEL_THREAD, META_PGRP, META_SESSION, META_THREADS,
    ProcessRecord, Snapshot,
};
use super::system::SystemConstants;
use crate::event::limits;
use crate::source::error::SourceError;

/// Most bytes of `cmdline` kept. Anything longer is cut by the event limits anyway; this
/// bound (one byte more than the longest argv the limits keep, separators included) makes
/// sure a cut is always detected and memory stays bounded whatever a process's arguments.
pub const CMDLINE_MAX_BYTES: usize = limits::ARGV_TOTAL_BYTES + limits::ARGV_ENTRIES + 1;

/// Most bytes of `stat` or `status` read (real ones are 0.3–2 KiB).
const SMALL_FILE_MAX_BYTES: usize = 64 * 1024;

/// Why a process was left out of a snapshot (or why one of its files was not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// It exited while being read (`ENOENT`/`ESRCH`), or its pid was reused meanwhile.
    Vanished,
    /// Reading was refused (`EACCES`/`EPERM`).
    PermissionDenied,
    /// `stat` had content the parser could not use.
    Malformed,
    /// Any other read error (`EIO`, `EISDIR`, ...).
    Unreadable,
}

/// What one [`ProcReader::read_snapshot`] did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Processes in the snapshot.
    pub processes: u64,
    /// Processes kept with some attribute unreadable (denied, missing or unreadable file).
    pub partial: u64,
    /// Processes skipped because they exited (or their pid was reused) mid-read.
    pub skipped_vanished: u64,
    /// Processes skipped because their `stat` was refused.
    pub skipped_denied: u64,
    /// Processes skipped because their `stat` could not be parsed.
    pub skipped_malformed: u64,
    /// Processes (or directory entries) skipped for any other read error.
    pub skipped_unreadable: u64,
}

impl ReadStats {
    /// All skipped processes.
    pub fn skipped(&self) -> u64 {
        self.skipped_vanished
            + self.skipped_denied
            + self.skipped_malformed
            + self.skipped_unreadable
    }

    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &ReadStats) {
        self.processes += other.processes;
        self.partial += other.partial;
        self.skipped_vanished += other.skipped_vanished;
        self.skipped_denied += other.skipped_denied;
        self.skipped_malformed += other.skipped_malformed;
        self.skipped_unreadable += other.skipped_unreadable;
    }

    fn count_skip(&mut self, reason: SkipReason) {
        match reason {
            SkipReason::Vanished => self.skipped_vanished += 1,
            SkipReason::PermissionDenied => self.skipped_denied += 1,
            SkipReason::Malformed => self.skipped_malformed += 1,
            SkipReason::Unreadable => self.skipped_unreadable += 1,
        }
    }
}

/// Sorts a read error: a missing file or a dead task means the process is gone.
pub fn classify_read_error(error: &io::Error) -> SkipReason {
    match error.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => SkipReason::Vanished,
        Some(libc::EACCES | libc::EPERM) => SkipReason::PermissionDenied,
        _ => match error.kind() {
            io::ErrorKind::NotFound => SkipReason::Vanished,
            io::ErrorKind::PermissionDenied => SkipReason::PermissionDenied,
            _ => SkipReason::Unreadable,
        },
    }
}

/// Reads process snapshots from a /proc tree.
#[derive(Debug)]
pub struct ProcReader {
    root: PathBuf,
    constants: SystemConstants,
    boot_time_s: u64,
    /// Reused for every file read (no allocation per file in steady state).
    buffer: Vec<u8>,
}

impl ProcReader {
    /// A reader of `root` (normally `/proc`) with this host's clock tick and page size.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, SourceError> {
        Self::with_constants(root, SystemConstants::of_this_host()?)
    }

    /// A reader of `root` with the given units (a fake tree in tests can use any).
    ///
    /// Reads the boot time from `root/stat` once: start times are boot time + ticks.
    pub fn with_constants(
        root: impl Into<PathBuf>,
        constants: SystemConstants,
    ) -> Result<Self, SourceError> {
        if constants.clock_ticks_per_s == 0 {
            return Err(SourceError::InvalidConfig {
                field: "clock_ticks_per_s",
                requirement: "at least 1",
            });
        }
        if constants.page_size_bytes == 0 {
            return Err(SourceError::InvalidConfig {
                field: "page_size_bytes",
                requirement: "at least 1",
            });
        }
        let root = root.into();
        let stat_path = root.join("stat");
        let stat = fs::read(&stat_path)
            .map_err(|error| SourceError::io("read boot time from", &stat_path, error))?;
        let boot_time_s = parse_boot_time_s(&stat).map_err(|_| SourceError::Malformed {
            path: stat_path.clone(),
            problem: "no valid `btime` line",
        })?;
        Ok(ProcReader {
            root,
            constants,
            boot_time_s,
            buffer: Vec::new(),
        })
    }

    /// The /proc root read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The units in use.
    pub fn constants(&self) -> SystemConstants {
        self.constants
    }

    /// Boot time, seconds since the Unix epoch.
    pub fn boot_time_s(&self) -> u64 {
        self.boot_time_s
    }

    /// Reads every process under the root. Per-process failures are counted, never returned.
    pub fn read_snapshot(&mut self) -> Result<(Snapshot, ReadStats), SourceError> {
        let mut snapshot = Snapshot::new(Utc::now(), Instant::now());
        // Optional: without it, CPU usage of first sightings is simply not measured.
        snapshot.uptime_s = self
            .read_small(&self.root.join("uptime"), SMALL_FILE_MAX_BYTES)
            .ok()
            .and_then(|bytes| parse_uptime_s(bytes).ok());
        let mut stats = ReadStats::default();
        let entries = fs::read_dir(&self.root)
            .map_err(|error| SourceError::io("list processes in", &self.root, error))?;
        for entry in entries {
            let Ok(entry) = entry else {
                stats.skipped_unreadable += 1;
                continue;
            };
            let Some(pid) = pid_from_name(entry.file_name().as_encoded_bytes()) else {
                continue; // not a process directory (`self`, `sys`, `stat`, ...)
            };
            match self.read_process(pid) {
                Ok((record, partial)) => {
                    stats.processes += 1;
                    stats.partial += u64::from(partial);
                    snapshot.insert(record);
                }
                Err(reason) => stats.count_skip(reason),
            }
        }
        Ok((snapshot, stats))
    }

    /// Reads one process: its record and whether some attribute could not be read, or why
    /// it was skipped.
    pub fn read_process(&mut self, pid: u32) -> Result<(ProcessRecord, bool), SkipReason> {
        let dir = self.root.join(pid.to_string());
        let stat_path = dir.join("stat");
        let stat = {
            let bytes = self
                .read_small(&stat_path, SMALL_FILE_MAX_BYTES)
                .map_err(|error| classify_read_error(&error))?;
            parse_stat(bytes).map_err(|_| SkipReason::Malformed)?
        };
        if stat.pid != pid {
            return Err(SkipReason::Malformed);
        }

        let mut record = ProcessRecord::new(pid, stat.start_ticks, stat.comm.clone());
        record.ppid = (stat.ppid != 0).then_some(stat.ppid);
        record.kernel_thread = stat.is_kernel_thread();
        record.start_time = self.start_time(stat.start_ticks);
        record.cpu_ticks = stat.cpu_ticks;
        record.memory_usage_bytes = Some(
            stat.rss_pages
                .saturating_mul(self.constants.page_size_bytes),
        );
        let metadata = &mut record.metadata;
        metadata.insert(META_PGRP.to_owned(), stat.pgrp.to_string());
        metadata.insert(META_SESSION.to_owned(), stat.session.to_string());
        metadata.insert(META_THREADS.to_owned(), stat.num_threads.to_string());
        if stat.is_kernel_thread() {
            metadata.insert(META_KERNEL_THREAD.to_owned(), "true".to_owned());
        }
        if stat.is_exiting() {
            metadata.insert(META_EXITING.to_owned(), "true".to_owned());
        }

        let mut failures = Failures::default();
        match self.read_small(&dir.join("status"), SMALL_FILE_MAX_BYTES) {
            Ok(bytes) => match parse_status_uids(bytes) {
                Ok(uids) => {
                    record.uid = Some(uids.real);
                    record
                        .metadata
                        .insert(META_EUID.to_owned(), uids.effective.to_string());
                }
                Err(_) => failures.note(SkipReason::Malformed),
            },
            Err(error) => failures.note(classify_read_error(&error)),
        }
        record.unobserved.uid = record.uid.is_none();

        if stat.is_kernel_thread() {
            // Kernel threads have no executable and no arguments: that is their true state,
            // not a read failure, and not worth two syscalls each.
            record.file_exists = false;
        } else if stat.is_exiting() {
            // An exiting process's memory and executable are released (or being released):
            // unknown now, not changed.
            record.unobserved.executable = true;
            record.unobserved.argv = true;
        } else {
            match self.read_small(&dir.join("cmdline"), CMDLINE_MAX_BYTES + 1) {
                Ok(bytes) => {
                    let cut = bytes.len() > CMDLINE_MAX_BYTES;
                    record.argv = parse_cmdline(&bytes[..bytes.len().min(CMDLINE_MAX_BYTES)]);
                    record.argv_cut = cut;
                }
                Err(error) => {
                    record.unobserved.argv = true;
                    failures.note(classify_read_error(&error));
                }
            }
            match fs::read_link(dir.join("exe")) {
                Ok(target) => {
                    let (path, exists) = parse_exe_target(target.as_os_str());
                    record.executable_path = Some(path);
                    record.file_exists = exists;
                }
                Err(error) => {
                    record.unobserved.executable = true;
                    failures.note(classify_read_error(&error));
                }
            }
        }

        let checked_reads = !stat.is_kernel_thread() && !stat.is_exiting();
        if failures.vanished || (checked_reads && record.argv.is_empty()) {
            // A file was missing, or argv was empty: either the process exited (or began to
            // exit) mid-read, or that really is its state. Read `stat` again to tell.
            let again = self
                .read_small(&stat_path, SMALL_FILE_MAX_BYTES)
                .ok()
                .and_then(|bytes| parse_stat(bytes).ok());
            if reconcile(&mut record, &stat, again.as_ref())? {
                // The missing files were the exit's doing, not a failed read.
                failures.any = record.unobserved.uid;
            }
        }
        record.accessible = !failures.denied;
        Ok((record, failures.any))
    }

    /// Boot time + `start_ticks` as wall-clock time.
    fn start_time(&self, start_ticks: u64) -> Option<DateTime<Utc>> {
        let ticks_per_s = self.constants.clock_ticks_per_s;
        let seconds = self.boot_time_s.checked_add(start_ticks / ticks_per_s)?;
        let nanos = (start_ticks % ticks_per_s) * 1_000_000_000 / ticks_per_s;
        DateTime::from_timestamp(i64::try_from(seconds).ok()?, u32::try_from(nanos).ok()?)
    }

    /// Reads at most `max_bytes` of `path` into the shared buffer.
    fn read_small(&mut self, path: &Path, max_bytes: usize) -> io::Result<&[u8]> {
        self.buffer.clear();
        let file = File::open(path)?;
        file.take(max_bytes as u64).read_to_end(&mut self.buffer)?;
        Ok(&self.buffer)
    }
}

/// Settles a record whose files suggested the process was going away, given `stat` read
/// again after everything else (`None`: it could not be read). Returns whether the process
/// turned out to be exiting (its argv and executable are then unobserved), or why to skip it.
fn reconcile(
    record: &mut ProcessRecord,
    first: &StatFields,
    again: Option<&StatFields>,
) -> Result<bool, SkipReason> {
    let Some(again) = again.filter(|again| again.start_ticks == first.start_ticks) else {
        // Gone, or the pid was reused: what was read may mix two processes.
        return Err(SkipReason::Vanished);
    };
    if first.is_kernel_thread() || first.is_exiting() || !again.is_exiting() {
        return Ok(false);
    }
    // It began to exit while being read: its memory (argv) and executable were being
    // released. Unknown now, not changed.
    record.argv.clear();
    record.argv_cut = false;
    record.executable_path = None;
    record.file_exists = false;
    record.unobserved.argv = true;
    record.unobserved.executable = true;
    record
        .metadata
        .insert(META_EXITING.to_owned(), "true".to_owned());
    Ok(true)
}

/// What went wrong reading one process's secondary files.
#[derive(Debug, Default)]
struct Failures {
    any: bool,
    vanished: bool,
    denied: bool,
}

impl Failures {
    fn note(&mut self, reason: SkipReason) {
        self.any = true;
        match reason {
            SkipReason::Vanished => self.vanished = true,
            SkipReason::PermissionDenied => self.denied = true,
            SkipReason::Malformed | SkipReason::Unreadable => {}
        }
    }
}

/// The pid a /proc directory entry names: all ASCII digits, no leading zero, nonzero, fits
/// in `u32`. Anything else is not a process directory.
fn pid_from_name(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name[0] == b'0' || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_numbers_are_pids() {
        assert_eq!(pid_from_name(b"1"), Some(1));
        assert_eq!(pid_from_name(b"4194304"), Some(4_194_304));
        for name in [&b""[..], b"0", b"01", b"self", b"1a", b"99999999999", b"-1"] {
            assert_eq!(pid_from_name(name), None, "{name:?}");
        }
    }

    fn stat(state: char, flags: u32, start_ticks: u64) -> StatFields {
        StatFields {
            pid: 9,
            comm: "x".into(),
            state,
            ppid: 1,
            pgrp: 9,
            session: 9,
            flags,
            cpu_ticks: 0,
            num_threads: 1,
            start_ticks,
            rss_pages: 0,
        }
    }

    #[test]
    fn a_process_that_begins_to_exit_mid_read_is_unobserved_not_changed() {
        let first = stat('S', 0, 100);
        let mut record = ProcessRecord::new(9, 100, "x");
        let exiting = stat('S', super::super::parse::PF_EXITING, 100);
        assert_eq!(reconcile(&mut record, &first, Some(&exiting)), Ok(true));
        assert!(record.unobserved.argv && record.unobserved.executable);
        assert_eq!(record.metadata[META_EXITING], "true");

        // Still the same live process: a real empty argv (argc 0) is kept as observed.
        let mut record = ProcessRecord::new(9, 100, "x");
        assert_eq!(reconcile(&mut record, &first, Some(&first)), Ok(false));
        assert!(!record.unobserved.any());
    }

    #[test]
    fn a_process_gone_or_replaced_mid_read_is_skipped() {
        let first = stat('S', 0, 100);
        let mut record = ProcessRecord::new(9, 100, "x");
        assert_eq!(
            reconcile(&mut record, &first, None),
            Err(SkipReason::Vanished)
        );
        let newcomer = stat('R', 0, 101);
        assert_eq!(
            reconcile(&mut record, &first, Some(&newcomer)),
            Err(SkipReason::Vanished)
        );
    }

    #[test]
    fn read_errors_are_sorted_by_cause() {
        let of = |errno| classify_read_error(&io::Error::from_raw_os_error(errno));
        assert_eq!(of(libc::ENOENT), SkipReason::Vanished);
        assert_eq!(of(libc::ESRCH), SkipReason::Vanished);
        assert_eq!(of(libc::EACCES), SkipReason::PermissionDenied);
        assert_eq!(of(libc::EPERM), SkipReason::PermissionDenied);
        assert_eq!(of(libc::EISDIR), SkipReason::Unreadable);
        assert_eq!(of(libc::EIO), SkipReason::Unreadable);
    }
}
