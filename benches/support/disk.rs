//! Reference (c): what the disk itself does, measured in Rust on the same filesystem as the
//! WAL runs — O_DIRECT writes of one block followed by one `fdatasync`, in a loop, into a file
//! in a chosen state (fresh fallocated extents, already-written blocks, or a growing file).
//!
//! The 1 MiB loop into a fresh fallocated file is the streaming limit the 4 KiB-event target
//! is a ratio of; the 4 KiB loop is the single-commit latency the one-publisher target is a
//! ratio of. The other states are context: the WAL's own segments are fallocated by default.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use procmond_wal::io::AlignedBuf;
use procmond_wal::io::portable::fallocate;
use serde::Serialize;

use super::latency::{LatencyRecorder, LatencySummary};
use super::{BenchError, BenchResult};

/// State of the file's blocks before the timed loop writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// `fallocate`d: extents exist but are unwritten, so each sync also commits metadata.
    Fallocated,
    /// Every block written and synced once before: pure overwrite.
    Prewritten,
    /// Empty file extended by each write: each sync also commits the new size.
    Growing,
}

impl FileState {
    fn name(self) -> &'static str {
        match self {
            FileState::Fallocated => "fallocated",
            FileState::Prewritten => "prewritten",
            FileState::Growing => "growing",
        }
    }
}

/// One raw-disk measurement.
#[derive(Debug, Clone, Serialize)]
pub struct DiskResult {
    /// `write{block}+fdatasync/{state}`.
    pub name: String,
    /// Bytes per write.
    pub block_bytes: usize,
    /// File state before the loop.
    pub file_state: String,
    /// Write+sync pairs completed.
    pub ops: u64,
    /// Wall time of the loop.
    pub elapsed_s: f64,
    /// Durable bytes per second, 10^6 bytes.
    pub mb_per_s: f64,
    /// Write+sync pairs per second.
    pub ops_per_s: f64,
    /// Latency of one write+sync pair.
    pub latency: LatencySummary,
}

fn open_direct(path: &Path) -> BenchResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| BenchError::io("open O_DIRECT reference file", path, e))
}

/// Writes `block_bytes` blocks sequentially into a new file in `dir` in the given `state`,
/// with one `fdatasync` after each, until `file_bytes` are written or `duration` has passed.
pub fn write_sync_loop(
    dir: &Path,
    block_bytes: usize,
    file_bytes: u64,
    state: FileState,
    duration: Duration,
) -> BenchResult<DiskResult> {
    let path = dir.join(format!("disk-{block_bytes}-{}.dat", state.name()));
    let file = open_direct(&path)?;
    let mut block = AlignedBuf::zeroed(block_bytes);
    for (index, byte) in block.iter_mut().enumerate() {
        *byte = (index % 251) as u8;
    }
    match state {
        FileState::Fallocated => {
            fallocate(&file, file_bytes).map_err(|e| BenchError::io("fallocate", &path, e))?;
            file.sync_all()
                .map_err(|e| BenchError::io("fsync after fallocate", &path, e))?;
        }
        FileState::Prewritten => {
            let fill = AlignedBuf::zeroed(1 << 20);
            let mut offset = 0u64;
            while offset < file_bytes {
                let len = (file_bytes - offset).min(fill.len() as u64) as usize;
                file.write_all_at(&fill[..len], offset)
                    .map_err(|e| BenchError::io("prewrite", &path, e))?;
                offset += len as u64;
            }
            file.sync_all()
                .map_err(|e| BenchError::io("fsync after prewrite", &path, e))?;
        }
        FileState::Growing => {}
    }
    let mut recorder = LatencyRecorder::default();
    let mut ops = 0u64;
    let start = Instant::now();
    let deadline = start + duration;
    let mut offset = 0u64;
    while offset + block_bytes as u64 <= file_bytes && Instant::now() < deadline {
        let began = Instant::now();
        file.write_all_at(&block, offset)
            .map_err(|e| BenchError::io("O_DIRECT write", &path, e))?;
        file.sync_data()
            .map_err(|e| BenchError::io("fdatasync", &path, e))?;
        recorder.record(began.elapsed());
        ops += 1;
        offset += block_bytes as u64;
    }
    let elapsed_s = start.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    std::fs::remove_file(&path).map_err(|e| BenchError::io("remove reference file", &path, e))?;
    Ok(DiskResult {
        name: format!(
            "write{}+fdatasync/{}",
            human_bytes(block_bytes),
            state.name()
        ),
        block_bytes,
        file_state: state.name().to_string(),
        ops,
        elapsed_s,
        mb_per_s: ops as f64 * block_bytes as f64 / elapsed_s / 1e6,
        ops_per_s: ops as f64 / elapsed_s,
        latency: recorder.summary(),
    })
}

/// `4K`, `1M`, or the byte count.
pub fn human_bytes(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else if bytes.is_multiple_of(1024) {
        format!("{}K", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

/// Like [`write_sync_loop`] into a fresh fallocated file, but the next block's write overlaps
/// the current block's `fdatasync` (a writer thread stays at most one block ahead of a syncer
/// thread; a block counts once a sync that started after its write returned). This is the
/// disk-level ceiling of a writer that overlaps the next group's write with the current sync.
pub fn overlapped_write_sync(
    dir: &Path,
    block_bytes: usize,
    file_bytes: u64,
    duration: Duration,
) -> BenchResult<DiskResult> {
    use std::sync::mpsc::sync_channel;

    let path = dir.join(format!("disk-overlap-{block_bytes}.dat"));
    let file = open_direct(&path)?;
    fallocate(&file, file_bytes).map_err(|e| BenchError::io("fallocate", &path, e))?;
    file.sync_all()
        .map_err(|e| BenchError::io("fsync after fallocate", &path, e))?;
    let mut block = AlignedBuf::zeroed(block_bytes);
    for (index, byte) in block.iter_mut().enumerate() {
        *byte = (index % 251) as u8;
    }
    let start = Instant::now();
    let deadline = start + duration;
    // Capacity 0: the writer hands over block i only when the syncer takes it, so at most
    // one written block waits for a sync while the next write proceeds.
    let (written_tx, written_rx) = sync_channel::<Instant>(0);
    let (recorder, ops) = std::thread::scope(|scope| -> BenchResult<(LatencyRecorder, u64)> {
        let (file, path) = (&file, &path);
        let syncer = scope.spawn(move || -> BenchResult<(LatencyRecorder, u64)> {
            let mut recorder = LatencyRecorder::default();
            let mut ops = 0u64;
            while let Ok(first_began) = written_rx.recv() {
                // Everything written so far (at least this block) is covered by this sync.
                let mut covered = 1u64;
                let mut oldest = first_began;
                while let Ok(began) = written_rx.try_recv() {
                    covered += 1;
                    oldest = oldest.min(began);
                }
                file.sync_data()
                    .map_err(|e| BenchError::io("fdatasync", path, e))?;
                recorder.record(oldest.elapsed());
                ops += covered;
            }
            Ok((recorder, ops))
        });
        let mut offset = 0u64;
        while offset + block_bytes as u64 <= file_bytes && Instant::now() < deadline {
            let began = Instant::now();
            file.write_all_at(&block, offset)
                .map_err(|e| BenchError::io("O_DIRECT write", path, e))?;
            if written_tx.send(began).is_err() {
                break;
            }
            offset += block_bytes as u64;
        }
        drop(written_tx);
        syncer.join().unwrap_or_else(|_| {
            Err(BenchError::Runtime {
                op: "join syncer thread",
                detail: "syncer panicked".into(),
            })
        })
    })?;
    let elapsed_s = start.elapsed().as_secs_f64().max(1e-9);
    drop(file);
    std::fs::remove_file(&path).map_err(|e| BenchError::io("remove reference file", &path, e))?;
    Ok(DiskResult {
        name: format!(
            "write{}+fdatasync/fallocated/overlapped",
            human_bytes(block_bytes)
        ),
        block_bytes,
        file_state: "fallocated-overlapped".into(),
        ops,
        elapsed_s,
        mb_per_s: ops as f64 * block_bytes as f64 / elapsed_s / 1e6,
        ops_per_s: ops as f64 / elapsed_s,
        latency: recorder.summary(),
    })
}
