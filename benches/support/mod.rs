//! Shared pieces of the benchmarks: sized sample events, the reference implementations (a
//! naive mutex+fdatasync WAL, okaywal, and raw-disk loops), the workload driver for this WAL,
//! latency summaries, and the bench error type. Included by each bench with `mod support;`;
//! not every bench uses every item.
#![allow(dead_code)]

pub mod disk;
pub mod e2e;
pub mod events;
pub mod latency;
pub mod naive;
pub mod okay;
pub mod walrun;

use std::path::{Path, PathBuf};
use std::time::Duration;

use procmond_wal::wal::{BackendChoice, WalError};

/// Everything a benchmark run can fail with. Benchmarks stop on the first error (there is no
/// meaningful number to report after one), but they say what failed and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A filesystem operation of a reference implementation or of the harness failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The WAL under test failed.
    #[error("WAL {op}: {source}")]
    Wal {
        /// What was being done.
        op: &'static str,
        /// The WAL's error.
        #[source]
        source: WalError,
    },
    /// An environment variable or argument could not be understood.
    #[error("{name}={value:?}: expected {expected}")]
    Setting {
        /// The variable or flag.
        name: &'static str,
        /// What it held.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A sample event could not be made the requested size.
    #[error("cannot build a {target_bytes}-byte event: {reason}")]
    EventSize {
        /// Requested encoded size.
        target_bytes: usize,
        /// Why not.
        reason: String,
    },
    /// A runtime or thread could not be started, or a publisher task was lost.
    #[error("{op}: {detail}")]
    Runtime {
        /// What was being done.
        op: &'static str,
        /// What went wrong.
        detail: String,
    },
}

impl BenchError {
    /// Wraps an OS error with the operation and path.
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> BenchError {
        BenchError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps a WAL error with the operation.
    pub fn wal(op: &'static str, source: WalError) -> BenchError {
        BenchError::Wal { op, source }
    }
}

/// Result of a benchmark step.
pub type BenchResult<T> = Result<T, BenchError>;

/// The directory benchmark files go to: `PROCMOND_WAL_BENCH_DIR`, else the cargo target
/// directory's `tmp/` (on the project's filesystem, unlike a tmpfs `/tmp`).
pub fn bench_root() -> BenchResult<PathBuf> {
    let root = match std::env::var_os("PROCMOND_WAL_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("procmond-wal-bench"),
    };
    std::fs::create_dir_all(&root)
        .map_err(|e| BenchError::io("create benchmark directory", &root, e))?;
    Ok(root)
}

/// A fresh, self-deleting directory under [`bench_root`].
pub fn scratch_dir(prefix: &str) -> BenchResult<tempfile::TempDir> {
    let root = bench_root()?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&root)
        .map_err(|e| BenchError::io("create scratch directory", &root, e))
}

/// Where JSON summaries go: `PROCMOND_WAL_BENCH_OUT`, else `<target>/procmond-wal-bench/`.
pub fn output_dir() -> BenchResult<PathBuf> {
    let dir = match std::env::var_os("PROCMOND_WAL_BENCH_OUT") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            tmp.parent()
                .map(Path::to_path_buf)
                .unwrap_or(tmp)
                .join("procmond-wal-bench")
        }
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::io("create output directory", &dir, e))?;
    Ok(dir)
}

/// Backends selected by `PROCMOND_WAL_BENCH_BACKEND` (`uring`, `portable`, `both`; default
/// `uring`).
pub fn backends_from_env() -> BenchResult<Vec<BackendChoice>> {
    let value = std::env::var("PROCMOND_WAL_BENCH_BACKEND").unwrap_or_else(|_| "uring".into());
    match value.as_str() {
        "uring" => Ok(vec![BackendChoice::Uring]),
        "portable" => Ok(vec![BackendChoice::Portable]),
        "both" => Ok(vec![BackendChoice::Uring, BackendChoice::Portable]),
        _ => Err(BenchError::Setting {
            name: "PROCMOND_WAL_BENCH_BACKEND",
            value,
            expected: "uring, portable or both",
        }),
    }
}

/// Short name of a backend choice for tables (`uring`, `portable`, ...): its variant name in
/// lower case, so new variants need no change here.
pub fn backend_name(choice: BackendChoice) -> String {
    format!("{choice:?}").to_lowercase()
}

/// A positive number of seconds from the environment, or `default`.
pub fn seconds_from_env(name: &'static str, default: f64) -> BenchResult<Duration> {
    match std::env::var(name) {
        Err(_) => Ok(Duration::from_secs_f64(default)),
        Ok(value) => match value.parse::<f64>() {
            Ok(seconds) if seconds > 0.0 && seconds < 3600.0 => {
                Ok(Duration::from_secs_f64(seconds))
            }
            _ => Err(BenchError::Setting {
                name,
                value,
                expected: "a number of seconds between 0 and 3600",
            }),
        },
    }
}

/// A comma-separated list of positive integers from the environment, or `default`.
pub fn list_from_env(name: &'static str, default: &[usize]) -> BenchResult<Vec<usize>> {
    let Ok(value) = std::env::var(name) else {
        return Ok(default.to_vec());
    };
    let parsed: Option<Vec<usize>> = value
        .split(',')
        .map(|part| part.trim().parse::<usize>().ok().filter(|&n| n > 0))
        .collect();
    match parsed {
        Some(list) if !list.is_empty() => Ok(list),
        _ => Err(BenchError::Setting {
            name,
            value,
            expected: "a comma-separated list of positive integers",
        }),
    }
}

/// What one measured run does: `publishers` concurrent writers of `event_bytes`-byte events,
/// each keeping up to `in_flight_per_publisher` appends outstanding, until `duration` has
/// passed or `max_events` have been issued (whichever comes first).
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Encoded size of every event.
    pub event_bytes: usize,
    /// Concurrent publishers (tasks for this WAL, threads for the blocking references).
    pub publishers: usize,
    /// 1: each publisher awaits every append; more: pipelined with receipts.
    pub in_flight_per_publisher: usize,
    /// More than 1: each publisher hands over this many events per `append_batch` call and
    /// awaits it (this WAL only; overrides `in_flight_per_publisher`).
    pub batch_events: usize,
    /// Time budget of the run.
    pub duration: std::time::Duration,
    /// Event budget of the run (bounds disk use on fast systems).
    pub max_events: u64,
}

impl Workload {
    /// `await`, `pipelined` or `batch`, for tables.
    pub fn mode(&self) -> &'static str {
        if self.batch_events > 1 {
            "batch"
        } else if self.in_flight_per_publisher <= 1 {
            "await"
        } else {
            "pipelined"
        }
    }
}

/// The outcome of one run of one system.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// `wal`, `naive`, `okaywal`.
    pub system: String,
    /// I/O backend (this WAL only).
    pub backend: Option<String>,
    /// `await`, `pipelined` or `batch`.
    pub mode: String,
    /// Free-form variant label (configuration sweeps).
    pub variant: String,
    /// Encoded event size.
    pub event_bytes: usize,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Appends each publisher keeps outstanding.
    pub in_flight_per_publisher: usize,
    /// Events made durable.
    pub events: u64,
    /// Wall time from the first append to the last durable acknowledgement.
    pub elapsed_s: f64,
    /// Durable events per second.
    pub events_per_s: f64,
    /// Durable event bytes per second, in 10^6 bytes.
    pub mb_per_s: f64,
    /// Per-append latency (enqueue to durable acknowledgement).
    pub latency: latency::LatencySummary,
    /// Mean records per fdatasync (this WAL only).
    pub records_per_sync: Option<f64>,
    /// fdatasync calls (this WAL only).
    pub syncs: Option<u64>,
    /// Round of an interleaved measurement (0: not part of one).
    pub round: usize,
}

impl RunResult {
    /// Fills the derived rates from the counts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        system: &str,
        backend: Option<&str>,
        variant: &str,
        workload: &Workload,
        events: u64,
        elapsed: std::time::Duration,
        latency: latency::LatencySummary,
    ) -> RunResult {
        let elapsed_s = elapsed.as_secs_f64().max(1e-9);
        let events_per_s = events as f64 / elapsed_s;
        RunResult {
            system: system.to_string(),
            backend: backend.map(str::to_string),
            mode: workload.mode().to_string(),
            variant: variant.to_string(),
            event_bytes: workload.event_bytes,
            publishers: workload.publishers,
            in_flight_per_publisher: workload.in_flight_per_publisher,
            events,
            elapsed_s,
            events_per_s,
            mb_per_s: events_per_s * workload.event_bytes as f64 / 1e6,
            latency,
            records_per_sync: None,
            syncs: None,
            round: 0,
        }
    }
}

/// Runs a blocking append operation on `workload.publishers` threads until the workload's
/// time or event budget is spent; `append(index)` must return only once the event is durable.
/// Returns the events completed, the elapsed time and the latency samples.
pub fn run_blocking_publishers<F>(
    workload: &Workload,
    append: F,
) -> BenchResult<(u64, std::time::Duration, latency::LatencyRecorder)>
where
    F: Fn(u64) -> BenchResult<()> + Sync,
{
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Instant;

    let issued = AtomicU64::new(0);
    let start = Instant::now();
    let deadline = start + workload.duration;
    let outcomes: Vec<BenchResult<(u64, latency::LatencyRecorder)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workload.publishers)
            .map(|_| {
                scope.spawn(|| {
                    let mut recorder = latency::LatencyRecorder::default();
                    let mut done = 0u64;
                    loop {
                        let index = issued.fetch_add(1, Relaxed);
                        if index >= workload.max_events || Instant::now() >= deadline {
                            return Ok((done, recorder));
                        }
                        let began = Instant::now();
                        append(index)?;
                        recorder.record(began.elapsed());
                        done += 1;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle.join().unwrap_or_else(|_| {
                    Err(BenchError::Runtime {
                        op: "join publisher thread",
                        detail: "publisher panicked".into(),
                    })
                })
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut total = 0;
    let mut merged = latency::LatencyRecorder::default();
    for outcome in outcomes {
        let (done, recorder) = outcome?;
        total += done;
        merged.merge(recorder);
    }
    Ok((total, elapsed, merged))
}
