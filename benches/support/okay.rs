//! Reference (b): okaywal 0.3, each entry committed durably (`EntryWriter::commit` returns
//! after its data is synced; okaywal batches concurrent commits itself). Same event bytes,
//! one thread per publisher, default configuration.

use okaywal::{LogVoid, WriteAheadLog};
use procmond_wal::ProcessEvent;
use procmond_wal::wal::format::encode_event;

use super::{BenchError, BenchResult, RunResult, Workload, run_blocking_publishers};

/// Runs the workload against a fresh okaywal log in a scratch directory.
pub fn run(workload: &Workload, event: &ProcessEvent) -> BenchResult<RunResult> {
    let dir = super::scratch_dir("okaywal-")?;
    let path = dir.path().to_path_buf();
    let log = WriteAheadLog::recover(&path, LogVoid)
        .map_err(|e| BenchError::io("open okaywal log", &path, e))?;
    let blocking = Workload {
        in_flight_per_publisher: 1,
        batch_events: 1,
        ..*workload
    };
    let (events, elapsed, latency) = run_blocking_publishers(&blocking, |_| {
        let payload = encode_event(&event.clone()).map_err(|error| BenchError::EventSize {
            target_bytes: 0,
            reason: error.to_string(),
        })?;
        let mut entry = log
            .begin_entry()
            .map_err(|e| BenchError::io("okaywal begin_entry", &path, e))?;
        entry
            .write_chunk(&payload)
            .map_err(|e| BenchError::io("okaywal write_chunk", &path, e))?;
        entry
            .commit()
            .map_err(|e| BenchError::io("okaywal commit", &path, e))?;
        Ok(())
    })?;
    log.shutdown()
        .map_err(|e| BenchError::io("okaywal shutdown", &path, e))?;
    Ok(RunResult::new(
        "okaywal",
        None,
        "",
        &blocking,
        events,
        elapsed,
        latency.summary(),
    ))
}
