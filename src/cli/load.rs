//! `procmond-wal load`: appends synthetic events durably through the real WAL, from many
//! concurrent publishers each keeping many appends in flight, and reports events/s, MB/s,
//! syncs, records per sync and durable-latency percentiles; then re-reads the directory to
//! check that exactly the appended events are there, undamaged.
//!
//! Latency is measured per append from `enqueue` to its receipt resolving (durable under the
//! default sync policy), which is what a caller of `append` waits. Events are clones of one
//! prepared template so the run measures the WAL, not event construction.
//!
//! CPU cost: `cpu_us_per_event` is the process's user + system CPU time for the whole run
//! (log open, load generator, ring thread, close and the final verify) divided by the events
//! made durable; `ring_cpu_us_per_event` is the ring thread's own CPU time while the
//! publishers ran, and `verify_cpu_us_per_event` the final verify's share of the process
//! figure, each divided by the same count.
//!
//! Disk use: unless `--checkpoint-every` is given, the run never checkpoints, so every segment
//! it fills stays. With it, a checkpoint of the durable sequence is written every so many
//! events (as a broker's acknowledgements would), so sealed segments are deleted or recycled
//! (`--recycle-segments`) and the check at the end expects the events after them. Unless
//! `--segment-mib` is given, segments are sized to the run (one segment holds it, between
//! 1 MiB and 100 MiB), so a small run does not preallocate 2 × 100 MiB. The disk budget
//! (`--wal-max-mib`, the library's 4 GiB by default) is never raised: a run that cannot fit
//! in it is refused before anything is written, with what it would need.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chrono::Utc;
use procmond_wal::io::{BackendKind, Preallocation};
use procmond_wal::wal::config::GroupStart;
use procmond_wal::wal::format::{
    EVENT_FIXED_PAYLOAD_BYTES, SEGMENT_HEADER_BYTES, encode_event, frame_len,
};
use procmond_wal::wal::recovery::{OpenReport, list_segments, read_dir};
use procmond_wal::wal::{
    AppendReceipt, BackendChoice, SyncPolicy, Wal, WalConfig, WalError, WalStats,
};
use procmond_wal::{EventKind, ProcessEvent};
use serde::Serialize;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinSet;

mod progress;

use super::cputime::{ThreadCpu, process_cpu};
use super::histogram::Histogram;
use super::output::write_json_pretty;
use super::{CliError, EXIT_OK, EXIT_PROBLEM, finish};
use progress::LoadProgress;

/// Arguments of `procmond-wal load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// WAL directory to append to (created if missing). Default: a fresh temporary directory
    /// under $TMPDIR, removed afterwards. Where the filesystem refuses O_DIRECT, `auto` uses
    /// the portable backend.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Events to append in total.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Concurrent publisher tasks.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub publishers: u64,
    /// Appends each publisher keeps in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub inflight: u64,
    /// Approximate record size on disk in bytes (argv is padded to reach it; smaller values
    /// give the smallest realistic event).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub event_bytes: u64,
    /// I/O backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// `group` (fdatasync after every group write) or `interval:MS` (receipts resolve once
    /// written; a sync at most every MS milliseconds: a crash can lose the last interval).
    #[arg(long, default_value = "group", value_parser = parse_sync)]
    pub sync: SyncPolicy,
    /// Segment size in MiB. Default: sized to the run, so one segment holds it (at least
    /// 1 MiB, at most 100 MiB, the library default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub segment_mib: Option<u64>,
    /// Disk budget in MiB: all segment files together (each counted at its full size) may
    /// not exceed it. A run that would need more is refused before it starts.
    #[arg(long, default_value_t = DEFAULT_WAL_MAX_MIB, value_parser = clap::value_parser!(u64).range(2..))]
    pub wal_max_mib: u64,
    /// Soft cap of one group write in KiB.
    #[arg(long, default_value_t = 1024)]
    pub group_kib: usize,
    /// How new segments reserve their space.
    #[arg(long, value_enum, default_value_t = PreallocateArg::Fallocate)]
    pub preallocate: PreallocateArg,
    /// Where each group write starts: `after-tail` (rewrite the partly filled last block) or
    /// `fresh-block` (never rewrite written bytes; pad each group to a block).
    #[arg(long, value_enum, default_value_t = GroupStartArg::AfterTail)]
    pub group_start: GroupStartArg,
    /// Checkpoint the durable sequence each time it has advanced by this many events (0:
    /// never), so acknowledged segments are deleted or recycled as in a connected procmond.
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    /// Acknowledged segments kept for recycling (`WalConfig::recycle_segments_max`; 0: off).
    /// Default: the library's.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=8))]
    pub recycle_segments: Option<u64>,
    /// One JSON object on stdout for scripts instead of the report for people.
    #[arg(long)]
    pub json: bool,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// io_uring if usable here, else portable.
    Auto,
    /// io_uring or fail.
    Uring,
    /// pwrite + fdatasync.
    Portable,
}

/// `--group-start`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GroupStartArg {
    /// Rewrite the partly filled last block.
    AfterTail,
    /// Start every group on a fresh block.
    FreshBlock,
}

/// `--preallocate`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PreallocateArg {
    /// fallocate the whole segment.
    Fallocate,
    /// Write zeros over the whole segment.
    Zerofill,
    /// Let files grow with each write.
    None,
}

fn parse_sync(text: &str) -> Result<SyncPolicy, String> {
    if text == "group" {
        return Ok(SyncPolicy::EveryGroup);
    }
    let interval = text
        .strip_prefix("interval:")
        .and_then(|ms| ms.parse::<u64>().ok())
        .ok_or_else(|| format!("expected `group` or `interval:MS`, got {text:?}"))?;
    Ok(SyncPolicy::Interval {
        sync_interval_ms: interval,
    })
}

fn sync_text(sync: SyncPolicy) -> String {
    match sync {
        SyncPolicy::EveryGroup => "group".to_owned(),
        SyncPolicy::Interval { sync_interval_ms } => format!("interval:{sync_interval_ms}"),
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
struct LatencyJson {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// The `--json` summary.
#[derive(Debug, Serialize)]
struct LoadJson {
    events: u64,
    interrupted: bool,
    elapsed_s: f64,
    events_per_s: f64,
    bytes: u64,
    mb_per_s: f64,
    record_bytes_per_event: u64,
    syncs: u64,
    records_per_sync: f64,
    /// Bytes sent to the device (whole blocks, rewritten tail blocks included).
    device_bytes: u64,
    /// `device_bytes` / `bytes`.
    write_amplification: f64,
    latency_us: LatencyJson,
    latency_samples: u64,
    backend: BackendKind,
    sync: String,
    publishers: u64,
    inflight: u64,
    dir: PathBuf,
    dir_removed: bool,
    segment_bytes: u64,
    budget_bytes: u64,
    verified: bool,
    verify_problem: Option<String>,
    /// Process user + system CPU seconds for the whole run (verify included).
    cpu_s: Option<f64>,
    /// `cpu_s` in microseconds per durable event.
    cpu_us_per_event: Option<f64>,
    /// CPU seconds of the ring thread while the publishers ran.
    ring_cpu_s: Option<f64>,
    /// `ring_cpu_s` in microseconds per durable event.
    ring_cpu_us_per_event: Option<f64>,
    /// Process CPU seconds of the final verify alone (part of `cpu_s`).
    verify_cpu_s: Option<f64>,
    /// `verify_cpu_s` in microseconds per durable event.
    verify_cpu_us_per_event: Option<f64>,
}

/// What one run measured.
struct Measured {
    /// Events made durable (fewer than asked when interrupted).
    appended: u64,
    interrupted: bool,
    elapsed: Duration,
    latency: Histogram,
    stats: WalStats,
    /// CPU time of the ring thread while the publishers ran (None: not measurable here).
    ring_cpu: Option<Duration>,
}

/// The name the WAL gives its ring thread.
const RING_THREAD_NAME: &str = "procmond-wal-ring";

/// Exit code after Ctrl-C: the shell's convention for SIGINT (128 + 2).
const EXIT_INTERRUPTED: u8 = 130;

const MIB: u64 = 1024 * 1024;
/// The library's default disk budget, in MiB.
const DEFAULT_WAL_MAX_MIB: u64 = 4096;
/// Bounds of the segment size chosen for a run when `--segment-mib` is not given.
const AUTO_SEGMENT_MIN_MIB: u64 = 1;
const AUTO_SEGMENT_MAX_MIB: u64 = 100;

/// Runs `load`.
pub fn run(args: LoadArgs) -> ExitCode {
    finish("load", load(&args))
}

fn load(args: &LoadArgs) -> Result<u8, CliError> {
    let (dir, temp_dir) = match &args.dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("procmond-wal-load-")
                .tempdir()
                .map_err(CliError::TempDir)?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let template = template_event(args.event_bytes);
    let record_bytes_per_event = record_bytes(&template);
    let config = wal_config(args, &dir, record_bytes_per_event);
    let existing_segments = if dir.exists() {
        list_segments(&dir)?.len() as u64
    } else {
        0
    };
    check_budget(
        args.events,
        record_bytes_per_event,
        &config,
        existing_segments,
    )?;
    let segment_bytes = config.segment_max_bytes;
    let budget_bytes = config.wal_max_bytes;
    let (wal, opened) = Wal::open(config)?;
    let events_before = opened.events;
    let first_new_sequence = opened.next_sequence;
    let header = (!args.json).then(|| {
        format!(
            "load: {} events of {} bytes, {} publishers x {} in flight, backend {}, sync {}\n  dir          {}{}\n  disk         segments of {} MiB, budget {} MiB",
            args.events,
            record_bytes_per_event,
            args.publishers,
            args.inflight,
            wal.backend(),
            sync_text(args.sync),
            dir.display(),
            if temp_dir.is_some() {
                " (temporary, removed afterwards)"
            } else {
                ""
            },
            segment_bytes / MIB,
            budget_bytes / MIB,
        )
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let measured = runtime.block_on(async {
        // Registered before anything is printed, so a Ctrl-C after the header always takes
        // the orderly path.
        let interrupts = signal(SignalKind::interrupt()).ok();
        if let Some(header) = header {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{header}")
                .and_then(|()| out.flush())
                .map_err(CliError::Output)?;
        }
        drive(wal, args, template, interrupts).await
    })?;
    drop(runtime);

    let expected_events = events_before + measured.appended;
    let cpu_before_verify = process_cpu();
    let verify_problem = if args.checkpoint_every > 0 {
        check_on_disk_after_checkpoints(&dir, first_new_sequence + measured.appended - 1)?
    } else {
        check_on_disk(&dir, expected_events)?
    };
    let cpu = process_cpu();
    let verify_cpu = cpu
        .zip(cpu_before_verify)
        .map(|(after, before)| after.saturating_sub(before));
    let per_event_us = |cpu: Duration| cpu.as_secs_f64() * 1e6 / measured.appended.max(1) as f64;

    let elapsed_s = measured.elapsed.as_secs_f64().max(1e-9);
    let stats = &measured.stats;
    let micros = |q: f64| (measured.latency.quantile_ns(q) as f64 / 100.0).round() / 10.0;
    let summary = LoadJson {
        events: measured.appended,
        interrupted: measured.interrupted,
        elapsed_s,
        events_per_s: measured.appended as f64 / elapsed_s,
        bytes: stats.record_bytes,
        mb_per_s: stats.record_bytes as f64 / elapsed_s / 1e6,
        record_bytes_per_event,
        syncs: stats.syncs,
        records_per_sync: stats.records_per_sync,
        device_bytes: stats.device_bytes_written,
        write_amplification: stats.device_bytes_written as f64 / stats.record_bytes.max(1) as f64,
        latency_us: LatencyJson {
            p50: micros(0.5),
            p99: micros(0.99),
            p999: micros(0.999),
            max: (measured.latency.max_ns() as f64 / 100.0).round() / 10.0,
        },
        latency_samples: measured.latency.samples(),
        backend: stats.backend,
        sync: sync_text(args.sync),
        publishers: args.publishers,
        inflight: args.inflight,
        dir: dir.clone(),
        dir_removed: temp_dir.is_some(),
        segment_bytes,
        budget_bytes,
        verified: verify_problem.is_none(),
        verify_problem,
        cpu_s: cpu.map(|cpu| cpu.as_secs_f64()),
        cpu_us_per_event: cpu.map(per_event_us),
        ring_cpu_s: measured.ring_cpu.map(|cpu| cpu.as_secs_f64()),
        ring_cpu_us_per_event: measured.ring_cpu.map(per_event_us),
        verify_cpu_s: verify_cpu.map(|cpu| cpu.as_secs_f64()),
        verify_cpu_us_per_event: verify_cpu.map(per_event_us),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        write_json_pretty(&mut out, &summary)?;
    } else {
        write_report(&mut out, &summary, expected_events).map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)?;
    if let Some(temp) = temp_dir {
        temp.close().map_err(CliError::TempDir)?;
    }
    Ok(if !summary.verified {
        EXIT_PROBLEM
    } else if summary.interrupted {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}

/// Re-reads the directory after the log is closed: it must hold exactly `expected_events`
/// events, with no damage and no torn tail. Returns what is wrong, if anything.
fn check_on_disk(dir: &Path, expected_events: u64) -> Result<Option<String>, CliError> {
    let report = read_dir(dir)?;
    Ok(if let Some(problem) = damage_after_clean_close(&report) {
        Some(problem)
    } else if report.events != expected_events {
        Some(format!(
            "{} events on disk, expected {expected_events}",
            report.events
        ))
    } else {
        None
    })
}

/// Damage or a torn tail: neither may be there after a clean close.
fn damage_after_clean_close(report: &OpenReport) -> Option<String> {
    if !report.is_clean() {
        Some(format!(
            "{} damaged place(s), {} event(s) lost",
            report.damage.len(),
            report.lost_events
        ))
    } else if report.torn_tail_bytes > 0 {
        Some(format!(
            "{} torn byte(s) after a clean close",
            report.torn_tail_bytes
        ))
    } else {
        None
    }
}

/// [`check_on_disk`] for a run that checkpointed: acknowledged segments are gone, so the
/// directory must hold, undamaged, every sequence from its first event to `expected_last`.
fn check_on_disk_after_checkpoints(
    dir: &Path,
    expected_last: u64,
) -> Result<Option<String>, CliError> {
    let report = read_dir(dir)?;
    let held = report
        .first_sequence
        .map_or(0, |first| expected_last + 1 - first.min(expected_last + 1));
    Ok(if let Some(problem) = damage_after_clean_close(&report) {
        Some(problem)
    } else if report.last_sequence != Some(expected_last) || report.events != held {
        Some(format!(
            "{} events up to {:?} on disk, expected {held} up to {expected_last}",
            report.events, report.last_sequence
        ))
    } else {
        None
    })
}

fn wal_config(args: &LoadArgs, dir: &Path, record_bytes_per_event: u64) -> WalConfig {
    let mut config = WalConfig::new(dir);
    let segment_mib = args
        .segment_mib
        .unwrap_or_else(|| auto_segment_mib(args.events, record_bytes_per_event, &config));
    config.segment_max_bytes = segment_mib.saturating_mul(MIB);
    config.group_max_bytes = args.group_kib.saturating_mul(1024);
    config.wal_max_bytes = args.wal_max_mib.saturating_mul(MIB);
    config.sync = args.sync;
    config.backend = match args.backend {
        BackendArg::Auto => BackendChoice::Auto,
        BackendArg::Uring => BackendChoice::Uring,
        BackendArg::Portable => BackendChoice::Portable,
    };
    config.preallocation = match args.preallocate {
        PreallocateArg::Fallocate => Preallocation::Fallocate,
        PreallocateArg::Zerofill => Preallocation::ZeroFill,
        PreallocateArg::None => Preallocation::None,
    };
    config.group_start = match args.group_start {
        GroupStartArg::AfterTail => GroupStart::AfterTail,
        GroupStartArg::FreshBlock => GroupStart::FreshBlock,
    };
    if let Some(keep) = args.recycle_segments {
        config.recycle_segments_max = usize::try_from(keep).unwrap_or(usize::MAX);
    }
    config
}

/// The segment size (MiB) at which one segment holds the whole run below its rotation point,
/// within [`AUTO_SEGMENT_MIN_MIB`, `AUTO_SEGMENT_MAX_MIB`].
fn auto_segment_mib(events: u64, record_bytes_per_event: u64, defaults: &WalConfig) -> u64 {
    let percent = u64::from(defaults.segment_rotate_percent.max(1));
    let run_bytes = events
        .saturating_mul(record_bytes_per_event)
        // The header block, and the room a record that does not fit leaves unused.
        .saturating_add(SEGMENT_HEADER_BYTES as u64 + record_bytes_per_event);
    let segment_bytes = run_bytes.saturating_mul(100).div_ceil(percent);
    segment_bytes
        .div_ceil(MIB)
        .clamp(AUTO_SEGMENT_MIN_MIB, AUTO_SEGMENT_MAX_MIB)
}

/// Segment files a run of `events` records of `record_bytes_per_event` needs with `config`,
/// on top of `existing_segments` already in the directory. The run never checkpoints, so none
/// is deleted; new events are assumed to start in a fresh segment (one more than needed when
/// the newest existing segment has room), and each segment to stop short of its rotation
/// point by up to one record.
fn segments_needed(
    events: u64,
    record_bytes_per_event: u64,
    config: &WalConfig,
    existing_segments: u64,
) -> u64 {
    let usable_bytes = config
        .segment_rotate_bytes()
        .saturating_sub(SEGMENT_HEADER_BYTES as u64);
    // A record larger than the rotation share still goes alone into an empty segment.
    let events_per_segment = (usable_bytes / record_bytes_per_event.max(1)).max(1);
    existing_segments.saturating_add(events.div_ceil(events_per_segment))
}

/// Refuses a run that cannot fit in the disk budget, saying what it would need. Checked
/// before the log is opened, so a refused run writes nothing.
fn check_budget(
    events: u64,
    record_bytes_per_event: u64,
    config: &WalConfig,
    existing_segments: u64,
) -> Result<(), CliError> {
    let segments = segments_needed(events, record_bytes_per_event, config, existing_segments);
    let needed_bytes = segments.saturating_mul(config.segment_max_bytes);
    if needed_bytes <= config.wal_max_bytes {
        return Ok(());
    }
    Err(CliError::LoadOverBudget {
        events,
        record_bytes: record_bytes_per_event,
        segments,
        existing_segments,
        segment_mib: config.segment_max_bytes / MIB,
        needed_mib: needed_bytes.div_ceil(MIB),
        budget_mib: config.wal_max_bytes / MIB,
    })
}

/// A realistic event whose record is about `target_bytes` on disk (never smaller than the
/// unpadded event).
fn template_event(target_bytes: u64) -> ProcessEvent {
    let mut event = ProcessEvent::new(4242, "load-worker", Utc::now());
    event.ppid = Some(1);
    event.executable_path = Some("/usr/bin/load-worker".to_owned());
    event.command_line = vec!["/usr/bin/load-worker".to_owned(), "--serve".to_owned()];
    event.user_id = Some("1000".to_owned());
    event.cpu_usage_percent = Some(1.5);
    event.memory_usage_bytes = Some(64 << 20);
    event.accessible = true;
    event.file_exists = true;
    let base = record_bytes(&event);
    // One more argv entry costs its bytes plus an 8-byte length prefix (bincode legacy).
    let padding = target_bytes.saturating_sub(base + 8);
    if padding > 0 {
        event
            .command_line
            .push("x".repeat(usize::try_from(padding).unwrap_or(usize::MAX)));
    }
    event.truncate_to_limits();
    event
}

/// Bytes of the record frame `event` becomes on disk.
fn record_bytes(event: &ProcessEvent) -> u64 {
    let payload = encode_event(event).map_or(0, |bytes| bytes.len()) + EVENT_FIXED_PAYLOAD_BYTES;
    frame_len(payload) as u64
}

async fn drive(
    wal: Wal,
    args: &LoadArgs,
    template: ProcessEvent,
    interrupts: Option<Signal>,
) -> Result<Measured, CliError> {
    let completed = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let progress = LoadProgress::new(args.events, std::io::stderr().is_terminal());
    let progress_task = tokio::spawn(progress.clone().run(Arc::clone(&completed), done_rx));

    // Ctrl-C stops new appends; what is in flight still completes and is verified, and the
    // temporary directory is removed. A second Ctrl-C exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    let interrupt = interrupts
        .map(|signals| tokio::spawn(watch_interrupt(signals, Arc::clone(&stop), progress)));
    let appends_done = Arc::new(AtomicBool::new(false));
    let checkpointer = (args.checkpoint_every > 0).then(|| {
        tokio::spawn(checkpoint_every(
            wal.clone(),
            args.checkpoint_every,
            Arc::clone(&appends_done),
        ))
    });
    let template = Arc::new(template);
    let inflight = usize::try_from(args.inflight).unwrap_or(usize::MAX);
    let ring = ThreadCpu::find(RING_THREAD_NAME);
    let ring_cpu_before = ring.and_then(|ring| ring.cpu());
    let started = Instant::now();
    let mut publishers = JoinSet::new();
    let mut first_index = 0u64;
    for publisher in 0..args.publishers {
        // Spread the remainder over the first publishers so the total is exact.
        let share =
            args.events / args.publishers + u64::from(publisher < args.events % args.publishers);
        publishers.spawn(publish(
            wal.clone(),
            Arc::clone(&template),
            first_index,
            share,
            inflight,
            Arc::clone(&completed),
            Arc::clone(&stop),
        ));
        first_index += share;
    }
    let mut latency = Histogram::default();
    let mut failure = None;
    while let Some(joined) = publishers.join_next().await {
        match joined {
            Ok(Ok(histogram)) => latency.merge(&histogram),
            Ok(Err(error)) => {
                failure.get_or_insert(CliError::Wal(error));
                publishers.abort_all();
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => {
                failure.get_or_insert(CliError::Task(join));
                publishers.abort_all();
            }
        }
    }
    let elapsed = started.elapsed();
    // Read before close: the thread's figures go with it when it exits.
    let ring_cpu = ring
        .and_then(|ring| ring.cpu())
        .zip(ring_cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    if let Some(interrupt) = interrupt {
        interrupt.abort();
    }
    appends_done.store(true, Relaxed);
    if let Some(checkpointer) = checkpointer {
        // It stops at its next look, between checkpoints.
        let _ = checkpointer.await;
    }
    let stats = wal.stats();
    let _ = done_tx.send(());
    let _ = progress_task.await;
    let closed = wal.close().await;
    if let Some(failure) = failure {
        return Err(failure);
    }
    closed?;
    Ok(Measured {
        appended: completed.load(Relaxed),
        interrupted: stop.load(Relaxed),
        elapsed,
        latency,
        stats,
        ring_cpu,
    })
}

/// One publisher: appends `count` events, keeping up to `inflight` receipts pending. Its
/// receipts resolve in the order it enqueued them (sequences are assigned in queue order and
/// groups become durable in order), so they wait in a FIFO inside this task: no task per
/// append, whose spawning and waking would cost more CPU than the append itself.
async fn publish(
    wal: Wal,
    template: Arc<ProcessEvent>,
    first_index: u64,
    count: u64,
    inflight: usize,
    completed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> Result<Histogram, WalError> {
    let mut histogram = Histogram::default();
    let mut pending: VecDeque<(Instant, AppendReceipt)> = VecDeque::with_capacity(inflight);
    for index in first_index..first_index + count {
        if stop.load(Relaxed) {
            break;
        }
        if pending.len() >= inflight {
            settle(&mut pending, &mut histogram, &completed).await?;
        }
        let mut event = ProcessEvent::clone(&template);
        event.pid = (index % u64::from(u32::MAX)) as u32 + 1;
        let kind = EventKind::ALL[(index % 3) as usize];
        let enqueued = Instant::now();
        let receipt = wal.enqueue(event, kind).await?;
        pending.push_back((enqueued, receipt));
    }
    while !pending.is_empty() {
        settle(&mut pending, &mut histogram, &completed).await?;
    }
    Ok(histogram)
}

/// Checkpoints the durable sequence whenever it has advanced by `every` events since the last
/// checkpoint, as a broker acknowledging delivered events would (looked at every 10 ms).
async fn checkpoint_every(wal: Wal, every: u64, appends_done: Arc<AtomicBool>) {
    let mut checkpointed = wal.durable_sequence();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !appends_done.load(Relaxed) {
        tick.tick().await;
        let durable = wal.durable_sequence();
        if durable >= checkpointed + every {
            if wal.checkpoint(durable).await.is_err() {
                return;
            }
            checkpointed = durable;
        }
    }
}

/// Waits for the oldest pending receipt, then takes every later one that has resolved as
/// well (a group's receipts resolve together). Each latency ends when the oldest was seen
/// resolved: the later ones cannot have resolved before it.
async fn settle(
    pending: &mut VecDeque<(Instant, AppendReceipt)>,
    histogram: &mut Histogram,
    completed: &AtomicU64,
) -> Result<(), WalError> {
    let Some((enqueued, receipt)) = pending.front_mut() else {
        return Ok(());
    };
    receipt.await?;
    let resolved = Instant::now();
    histogram.record(resolved.duration_since(*enqueued));
    pending.pop_front();
    let mut settled = 1;
    let mut context = Context::from_waker(Waker::noop());
    while let Some((enqueued, receipt)) = pending.front_mut() {
        match Pin::new(receipt).poll(&mut context) {
            Poll::Ready(result) => {
                result?;
                histogram.record(resolved.saturating_duration_since(*enqueued));
                pending.pop_front();
                settled += 1;
            }
            Poll::Pending => break,
        }
    }
    completed.fetch_add(settled, Relaxed);
    Ok(())
}

async fn watch_interrupt(mut interrupts: Signal, stop: Arc<AtomicBool>, progress: LoadProgress) {
    if interrupts.recv().await.is_none() {
        return;
    }
    stop.store(true, Relaxed);
    progress.note(
        "procmond-wal load: interrupted; finishing the appends in flight (Ctrl-C again to quit now)",
    );
    if interrupts.recv().await.is_some() {
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

fn write_report(
    out: &mut impl Write,
    summary: &LoadJson,
    expected_events: u64,
) -> std::io::Result<()> {
    let millis = |micros: f64| {
        if micros >= 1000.0 {
            format!("{:.2} ms", micros / 1000.0)
        } else {
            format!("{micros:.0} µs")
        }
    };
    writeln!(out, "  elapsed      {:.3} s", summary.elapsed_s)?;
    writeln!(
        out,
        "  throughput   {:.0} events/s, {:.1} MB/s of records",
        summary.events_per_s, summary.mb_per_s
    )?;
    writeln!(
        out,
        "  syncs        {} ({:.1} records per sync)",
        summary.syncs, summary.records_per_sync
    )?;
    writeln!(
        out,
        "  latency      p50 {}, p99 {}, p99.9 {}, max {} (enqueue to {})",
        millis(summary.latency_us.p50),
        millis(summary.latency_us.p99),
        millis(summary.latency_us.p999),
        millis(summary.latency_us.max),
        if summary.sync == "group" {
            "durable"
        } else {
            "written"
        },
    )?;
    if let Some(cpu_us) = summary.cpu_us_per_event {
        let ring = summary
            .ring_cpu_us_per_event
            .map_or_else(|| "not measured".to_owned(), |us| format!("{us:.2} µs"));
        writeln!(
            out,
            "  cpu          {cpu_us:.2} µs per event (process, verify included); ring thread {ring}"
        )?;
        if let Some(verify_us) = summary.verify_cpu_us_per_event {
            writeln!(
                out,
                "               of which the final verify {verify_us:.2} µs"
            )?;
        }
    }
    if summary.interrupted {
        writeln!(out, "  interrupted  after {} events", summary.events)?;
    }
    match &summary.verify_problem {
        None => writeln!(
            out,
            "  verified     {expected_events} events on disk, no damage"
        ),
        Some(problem) => writeln!(out, "  VERIFY FAILED: {problem}"),
    }
}
