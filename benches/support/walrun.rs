//! Drives this WAL with a [`Workload`]: publisher tasks on a two-worker tokio runtime (the
//! machine has two cores), each awaiting every append or keeping a window of receipts in
//! flight; and measures replay of what was written, from the page cache.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use procmond_wal::ProcessEvent;
use procmond_wal::io::Preallocation;
use procmond_wal::wal::format::{EVENT_FIXED_PAYLOAD_BYTES, frame_len};
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalReader};
use serde::Serialize;

use super::events::kind_for;
use super::latency::LatencyRecorder;
use super::{BenchError, BenchResult, RunResult, Workload, backend_name};

/// The configuration every WAL run starts from: the crate defaults (100 MiB segments,
/// 1 MiB groups, fallocate, sync every group) with a disk budget large enough that a
/// benchmark run never hits it.
pub fn base_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.backend = backend;
    config.wal_max_bytes = 64 * 1024 * 1024 * 1024;
    config
}

/// Short name of a preallocation mode for tables.
pub fn preallocation_name(preallocation: Preallocation) -> &'static str {
    match preallocation {
        Preallocation::Fallocate => "fallocate",
        Preallocation::ZeroFill => "zerofill",
        Preallocation::None => "none",
    }
}

/// A tokio runtime with one worker per core of the benchmark machine.
pub fn runtime() -> BenchResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Runtime {
            op: "start tokio runtime",
            detail: e.to_string(),
        })
}

/// Runs `publishers` tasks appending `event` through an open WAL until the time or event
/// budget is spent (each awaiting every append, pipelining receipts, or handing over
/// batches, as the workload says); a batch's latency counts once for each of its events. Returns events made durable, elapsed time and per-append latencies.
pub async fn publish(
    wal: &Wal,
    workload: &Workload,
    event: &ProcessEvent,
) -> BenchResult<(u64, Duration, LatencyRecorder)> {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + workload.duration;
    let window = workload.in_flight_per_publisher.max(1);
    let mut tasks = Vec::with_capacity(workload.publishers);
    for _ in 0..workload.publishers {
        let wal = wal.clone();
        let event = event.clone();
        let issued = Arc::clone(&issued);
        let max_events = workload.max_events;
        let batch_events = workload.batch_events;
        tasks.push(tokio::spawn(async move {
            let mut recorder = LatencyRecorder::default();
            let mut done = 0u64;
            if batch_events > 1 {
                loop {
                    let first = issued.fetch_add(batch_events as u64, Relaxed);
                    if first >= max_events || Instant::now() >= deadline {
                        break;
                    }
                    let count = (max_events - first).min(batch_events as u64);
                    let batch = (first..first + count)
                        .map(|index| (event.clone(), kind_for(index)))
                        .collect();
                    let began = Instant::now();
                    wal.append_batch(batch)
                        .await
                        .map_err(|e| BenchError::wal("append_batch", e))?;
                    recorder.record_n(began.elapsed(), count);
                    done += count;
                }
                return Ok((done, recorder));
            }
            let mut in_flight = VecDeque::with_capacity(window);
            loop {
                let index = issued.fetch_add(1, Relaxed);
                if index >= max_events || Instant::now() >= deadline {
                    break;
                }
                let began = Instant::now();
                let receipt = wal
                    .enqueue(event.clone(), kind_for(index))
                    .await
                    .map_err(|e| BenchError::wal("enqueue", e))?;
                in_flight.push_back((began, receipt));
                if in_flight.len() >= window
                    && let Some((began, receipt)) = in_flight.pop_front()
                {
                    receipt.await.map_err(|e| BenchError::wal("append", e))?;
                    recorder.record(began.elapsed());
                    done += 1;
                }
            }
            while let Some((began, receipt)) = in_flight.pop_front() {
                receipt.await.map_err(|e| BenchError::wal("append", e))?;
                recorder.record(began.elapsed());
                done += 1;
            }
            Ok::<_, BenchError>((done, recorder))
        }));
    }
    let mut total = 0;
    let mut merged = LatencyRecorder::default();
    for task in tasks {
        let (done, recorder) = task.await.map_err(|e| BenchError::Runtime {
            op: "join publisher task",
            detail: e.to_string(),
        })??;
        total += done;
        merged.merge(recorder);
    }
    Ok((total, start.elapsed(), merged))
}

/// Opens a WAL with `config`, runs the workload, closes it and reports. The directory is
/// left in place (the caller owns it) so replay can read it.
pub fn run(
    config: WalConfig,
    variant: &str,
    workload: &Workload,
    event: &ProcessEvent,
) -> BenchResult<RunResult> {
    let backend = config.backend;
    let rt = runtime()?;
    let dir = config.dir.clone();
    let segment_max_bytes = config.segment_max_bytes;
    let preallocation = config.preallocation;
    let (wal, _report) = Wal::open(config).map_err(|e| BenchError::wal("open", e))?;
    if preallocation != Preallocation::None {
        wait_for_prepared_segment(&dir, segment_max_bytes)?;
    }
    let outcome = rt.block_on(async {
        let outcome = publish(&wal, workload, event).await;
        let stats = wal.stats();
        let closed = wal.close().await.map_err(|e| BenchError::wal("close", e));
        outcome.and_then(|outcome| closed.map(|()| (outcome, stats)))
    });
    let ((events, elapsed, latency), stats) = outcome?;
    let mut result = RunResult::new(
        "wal",
        Some(backend_name(backend).as_str()),
        variant,
        workload,
        events,
        elapsed,
        latency.summary(),
    );
    result.records_per_sync = Some(stats.records_per_sync);
    result.syncs = Some(stats.syncs);
    Ok(result)
}

/// Waits until the writer's background preparation of the next segment has reserved its
/// full size, so a run measures the steady state (next segment ready) rather than the
/// one-off preparation at open competing with the first appends. The signal is the file
/// itself: a second segment file at `segment_max_bytes` long.
pub fn wait_for_prepared_segment(dir: &Path, segment_max_bytes: u64) -> BenchResult<()> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let segments = procmond_wal::wal::recovery::list_segments(dir)
            .map_err(|e| BenchError::wal("list segments", e))?;
        let prepared = segments.len() >= 2
            && segments.last().is_some_and(|(_, path)| {
                std::fs::metadata(path).is_ok_and(|meta| meta.len() >= segment_max_bytes)
            });
        if prepared {
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(BenchError::Runtime {
                op: "wait for the next segment to be prepared",
                detail: format!("{} has no full second segment after 60 s", dir.display()),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One replay measurement.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayResult {
    /// I/O backend that wrote the log.
    pub backend: String,
    /// Encoded event size.
    pub event_bytes: usize,
    /// Events decoded.
    pub events: u64,
    /// Wall time of the timed pass.
    pub elapsed_s: f64,
    /// Events per second.
    pub events_per_s: f64,
    /// Log (record frame) bytes read per second, 10^6 bytes.
    pub log_mb_per_s: f64,
    /// Event bytes decoded per second, 10^6 bytes.
    pub event_mb_per_s: f64,
    /// Seconds to iterate the whole directory to its end, which also scans the unwritten
    /// (zero) tails of sealed segments and of the active segment.
    pub whole_dir_elapsed_s: f64,
    /// Log bytes per second over the whole-directory pass, 10^6 bytes.
    pub whole_dir_log_mb_per_s: f64,
}

/// Replays the events of `event_bytes` in `dir`, decoding each: a first whole-directory pass
/// loads the page cache (O_DIRECT writes bypass it); the timed pass stops at the
/// `max_events`-th event, a second timed pass runs to the end of the directory.
pub fn replay(
    dir: &Path,
    backend: &str,
    event_bytes: usize,
    max_events: u64,
) -> BenchResult<ReplayResult> {
    let read_pass = |max_events: u64| -> BenchResult<(u64, Duration)> {
        let start = Instant::now();
        let reader = WalReader::open(dir, 0).map_err(|e| BenchError::wal("open reader", e))?;
        let mut events = 0u64;
        let mut pids = 0u64;
        for entry in reader.take(max_events as usize) {
            let entry = entry.map_err(|e| BenchError::wal("replay", e))?;
            // Touch the decoded event so the work cannot be optimised away.
            pids = pids.wrapping_add(u64::from(entry.event.pid));
            events += 1;
        }
        std::hint::black_box(pids);
        Ok((events, start.elapsed()))
    };
    read_pass(u64::MAX)?;
    let (events, elapsed) = read_pass(max_events)?;
    let (whole_events, whole_elapsed) = read_pass(u64::MAX)?;
    let elapsed_s = elapsed.as_secs_f64().max(1e-9);
    let frame_bytes = frame_len(EVENT_FIXED_PAYLOAD_BYTES + event_bytes) as f64;
    Ok(ReplayResult {
        backend: backend.to_string(),
        event_bytes,
        events,
        elapsed_s,
        events_per_s: events as f64 / elapsed_s,
        log_mb_per_s: events as f64 * frame_bytes / elapsed_s / 1e6,
        event_mb_per_s: events as f64 * event_bytes as f64 / elapsed_s / 1e6,
        whole_dir_elapsed_s: whole_elapsed.as_secs_f64(),
        whole_dir_log_mb_per_s: whole_events as f64 * frame_bytes
            / whole_elapsed.as_secs_f64().max(1e-9)
            / 1e6,
    })
}
