//! Reference (a): the naive WAL — one file behind a mutex, a buffered `write` of a small
//! length+CRC frame and an `fdatasync` per event. This is what "just fsync every record"
//! costs; the throughput targets of docs/benchmarks.md are multiples of it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use procmond_wal::ProcessEvent;
use procmond_wal::wal::format::encode_event;

use super::{BenchError, BenchResult, RunResult, Workload, run_blocking_publishers};

/// A mutex-serialised append-only file.
pub struct NaiveWal {
    path: PathBuf,
    file: Mutex<File>,
}

impl NaiveWal {
    /// Creates `dir/naive.log`.
    pub fn create(dir: &Path) -> BenchResult<NaiveWal> {
        let path = dir.join("naive.log");
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| BenchError::io("create naive log", &path, e))?;
        Ok(NaiveWal {
            path,
            file: Mutex::new(file),
        })
    }

    /// Encodes the event (as this WAL does on the caller's thread), then writes its frame and
    /// `fdatasync`s under the lock.
    pub fn append(&self, event: &ProcessEvent) -> BenchResult<()> {
        let payload = encode_event(event).map_err(|error| BenchError::EventSize {
            target_bytes: 0,
            reason: error.to_string(),
        })?;
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let mut file = self.file.lock().map_err(|_| BenchError::Runtime {
            op: "lock naive log",
            detail: "a publisher panicked while holding the lock".into(),
        })?;
        file.write_all(&frame)
            .map_err(|e| BenchError::io("write naive log", &self.path, e))?;
        file.sync_data()
            .map_err(|e| BenchError::io("fdatasync naive log", &self.path, e))
    }
}

/// Runs the workload against a fresh naive WAL in a scratch directory (one blocking thread
/// per publisher; pipelining does not apply to a blocking API).
pub fn run(workload: &Workload, event: &ProcessEvent) -> BenchResult<RunResult> {
    let dir = super::scratch_dir("naive-")?;
    let wal = NaiveWal::create(dir.path())?;
    let blocking = Workload {
        in_flight_per_publisher: 1,
        batch_events: 1,
        ..*workload
    };
    let (events, elapsed, latency) = run_blocking_publishers(&blocking, |_| {
        // Each append gets its own copy of the event, as a caller of the real WAL hands over.
        wal.append(&event.clone())
    })?;
    Ok(RunResult::new(
        "naive",
        None,
        "",
        &blocking,
        events,
        elapsed,
        latency.summary(),
    ))
}
