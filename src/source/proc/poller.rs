//! The /proc poller: reads a snapshot every poll interval, diffs it against the previous
//! one and yields the batch of events, slowing down while the consumer reports
//! backpressure.
//!
//! The async part is only the wait (`tokio::time::sleep`); reading and diffing are the
//! synchronous [`ProcPoller::poll_once`], and the timing policy is the pure
//! [`PollSchedule`]. It must never drop an event it produced: a batch is returned whole.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::diff::{diff, to_events};
use super::reader::{ProcReader, ReadStats};
use super::schedule::{DEFAULT_BACKPRESSURE_FACTOR, PollSchedule};
use super::snapshot::{META_INITIAL_SCAN, Snapshot, carry_forward, fill_cpu_usage};
use crate::event::{EventKind, ProcessEvent};
use crate::source::error::SourceError;

/// How the poller runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcPollerConfig {
    /// The /proc tree to read (`/proc`; tests use a fake tree).
    pub proc_root: PathBuf,
    /// Time between the starts of two polls, in milliseconds, without backpressure.
    pub poll_interval_ms: u64,
    /// The interval is multiplied by this while backpressure is active (1.5, as procmond).
    pub backpressure_factor: f64,
    /// Whether the first poll reports every running process as a Start (true: the log then
    /// holds the whole picture, not only what changed after start-up; those events carry
    /// `change.initial_scan` metadata), or only records a baseline.
    pub report_existing: bool,
}

impl Default for ProcPollerConfig {
    fn default() -> Self {
        ProcPollerConfig {
            proc_root: PathBuf::from("/proc"),
            poll_interval_ms: 1000,
            backpressure_factor: DEFAULT_BACKPRESSURE_FACTOR,
            report_existing: true,
        }
    }
}

/// The result of one poll.
#[derive(Debug, Clone)]
pub struct PollBatch {
    /// The events found, ordered by pid (a reused pid's Stop before its Start).
    pub events: Vec<(ProcessEvent, EventKind)>,
    /// What the reader did in this poll (processes read, partial, skipped by reason).
    pub read: ReadStats,
    /// 1 for the first poll.
    pub poll_number: u64,
}

/// Running totals of a poller.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSourceStats {
    /// Polls completed.
    pub polls: u64,
    /// Polls that failed (the /proc root could not be listed).
    pub failed_polls: u64,
    /// Start events produced.
    pub starts: u64,
    /// Stop events produced.
    pub stops: u64,
    /// Modify events produced.
    pub modifies: u64,
    /// Reader outcomes summed over all polls.
    pub read: ReadStats,
    /// Processes in the latest snapshot.
    pub processes_tracked: u64,
    /// How long the latest poll took (reading, CPU accounting and diffing).
    pub last_poll_duration: Duration,
    /// Whether polling is slowed down by backpressure.
    pub slowed: bool,
}

// The poller moves into a task of a multi-threaded runtime: it must stay `Send`.
const _: fn() = || {
    fn must_be_send<T: Send + 'static>() {}
    must_be_send::<ProcPoller>();
};

/// Watches processes through /proc.
#[derive(Debug)]
pub struct ProcPoller {
    reader: ProcReader,
    schedule: PollSchedule,
    report_existing: bool,
    previous: Option<Snapshot>,
    last_poll_start: Option<Instant>,
    stats: ProcSourceStats,
}

impl ProcPoller {
    /// A poller for `config` on this host (reads the boot time and system units now).
    pub fn new(config: &ProcPollerConfig) -> Result<Self, SourceError> {
        let schedule = PollSchedule::new(config.poll_interval_ms, config.backpressure_factor)?;
        let reader = ProcReader::open(&config.proc_root)?;
        Ok(Self::with_reader(reader, schedule, config.report_existing))
    }

    /// A poller over an existing reader (e.g. one with fixed units for a fake tree).
    pub fn with_reader(reader: ProcReader, schedule: PollSchedule, report_existing: bool) -> Self {
        ProcPoller {
            reader,
            schedule,
            report_existing,
            previous: None,
            last_poll_start: None,
            stats: ProcSourceStats::default(),
        }
    }

    /// Backpressure from the consumer: `true` while it is active (polls are spaced by
    /// interval × factor), `false` once released.
    pub fn slow_down(&mut self, active: bool) {
        if self.schedule.slow_down(active) {
            tracing::debug!(active, interval = ?self.schedule.current_interval(), "proc source: backpressure");
        }
        self.stats.slowed = active;
    }

    /// The timing policy in force.
    pub fn schedule(&self) -> &PollSchedule {
        &self.schedule
    }

    /// Running totals.
    pub fn stats(&self) -> ProcSourceStats {
        self.stats
    }

    /// Waits until the next poll is due, then polls. The wait is the only await; the poll
    /// itself reads /proc synchronously (milliseconds for a few hundred processes, see
    /// `docs/sources.md`), so run this on a runtime where that may block briefly.
    ///
    /// Cancel-safe: dropping the future during the wait changes nothing, so it can be raced
    /// (`tokio::select!`) against a backpressure signal; after [`ProcPoller::slow_down`] the
    /// next call waits by the new interval, counted from the previous poll's start. Needs a
    /// tokio runtime with the time driver.
    pub async fn next_batch(&mut self) -> Result<PollBatch, SourceError> {
        let delay = self
            .schedule
            .delay_before_next_poll(self.last_poll_start.map(|start| start.elapsed()));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.poll_once()
    }

    /// Polls now: reads a snapshot and returns the changes since the previous poll (on the
    /// first poll, every process as a Start when `report_existing`, else nothing).
    pub fn poll_once(&mut self) -> Result<PollBatch, SourceError> {
        let started = Instant::now();
        self.last_poll_start = Some(started);
        let (mut next, read) = match self.reader.read_snapshot() {
            Ok(read) => read,
            Err(error) => {
                self.stats.failed_polls += 1;
                return Err(error);
            }
        };
        let clock_ticks_per_s = self.reader.constants().clock_ticks_per_s;
        let events = match &self.previous {
            Some(previous) => {
                carry_forward(previous, &mut next);
                fill_cpu_usage(Some(previous), &mut next, clock_ticks_per_s);
                to_events(&diff(previous, &next), &next)
            }
            None if self.report_existing => {
                fill_cpu_usage(None, &mut next, clock_ticks_per_s);
                next.processes
                    .values()
                    .map(|record| {
                        let mut event = record.to_event(next.collection_time);
                        event
                            .platform_metadata
                            .insert(META_INITIAL_SCAN.to_owned(), "true".to_owned());
                        (event, EventKind::Start)
                    })
                    .collect()
            }
            None => Vec::new(),
        };

        self.stats.polls += 1;
        for (_, kind) in &events {
            match kind {
                EventKind::Start => self.stats.starts += 1,
                EventKind::Stop => self.stats.stops += 1,
                EventKind::Modify => self.stats.modifies += 1,
            }
        }
        self.stats.read.add(&read);
        self.stats.processes_tracked = next.processes.len() as u64;
        self.previous = Some(next);
        self.stats.last_poll_duration = started.elapsed();
        Ok(PollBatch {
            events,
            read,
            poll_number: self.stats.polls,
        })
    }
}
