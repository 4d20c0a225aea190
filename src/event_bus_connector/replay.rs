//! Reading unacknowledged events back from the WAL on disk, for the link.
//!
//! Owns the disk stream: a plain thread runs a [`WalReader`] from a sequence and hands
//! finished frames (the same bytes the link writes for an event held in memory) to the ring
//! thread through a small bounded channel, in chunks of about [`CHUNK_BYTES`] that share
//! one allocation, so the ring never blocks on a disk read, takes a chunk in one step
//! rather than one per frame, and memory stays bounded. Dropping the stream stops the
//! thread at its next hand-over.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::wal::{WalError, WalReader};
use crate::wire::budget::{EventFramer, event_wire_time, fit_event_payload};

/// Frame bytes per chunk handed to the link (a chunk ends after the frame that reaches it).
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks read ahead of the link.
const READ_AHEAD_CHUNKS: usize = 4;

/// Read-back events, in sequence order: (sequence, frame).
pub(crate) type ReadBack = Result<Vec<(u64, Bytes)>, WalError>;

/// A stream of frames read from the WAL, in sequence order, from a starting sequence to
/// whatever was durable when each segment was read.
pub(crate) struct DiskStream {
    receiver: mpsc::Receiver<ReadBack>,
}

impl DiskStream {
    /// Starts reading `dir` from `from`.
    pub fn start(dir: PathBuf, from: u64, publisher_id: Arc<str>) -> DiskStream {
        let (sender, receiver) = mpsc::channel(READ_AHEAD_CHUNKS);
        let failure = sender.clone();
        let thread_dir = dir.clone();
        let spawned = std::thread::Builder::new()
            .name("procmond-wal-replay".into())
            .spawn(move || read(thread_dir, from, &publisher_id, &sender));
        if let Err(error) = spawned {
            // An error, not an empty stream: nothing on disk must be taken as missing.
            let _ = failure.try_send(Err(WalError::Io {
                op: "start the replay thread for",
                path: dir,
                source: Arc::new(error),
            }));
        }
        DiskStream { receiver }
    }

    /// The next frame; `None` at the end of what was on disk.
    pub async fn next(&mut self) -> Option<ReadBack> {
        self.receiver.recv().await
    }
}

fn read(dir: PathBuf, from: u64, publisher_id: &str, sender: &mpsc::Sender<ReadBack>) {
    let reader = match WalReader::open(&dir, from) {
        Ok(reader) => reader,
        Err(error) => {
            let _ = sender.blocking_send(Err(error));
            return;
        }
    };
    let framer = EventFramer::new(publisher_id);
    let mut bytes: Vec<u8> = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
    let mut frames: Vec<(u64, usize, usize)> = Vec::new();
    // Sends the chunk gathered so far; false once the link is gone.
    let flush = |bytes: &mut Vec<u8>, frames: &mut Vec<(u64, usize, usize)>| {
        if frames.is_empty() {
            return true;
        }
        let shared = Bytes::from(std::mem::replace(
            bytes,
            Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4),
        ));
        let chunk = frames
            .drain(..)
            .map(|(sequence, start, end)| (sequence, shared.slice(start..end)))
            .collect();
        sender.blocking_send(Ok(chunk)).is_ok()
    };
    for item in reader {
        let entry = match item {
            Ok(entry) => entry,
            Err(error) => {
                // What was read before the failure is delivered first.
                if flush(&mut bytes, &mut frames) {
                    let _ = sender.blocking_send(Err(error));
                }
                return;
            }
        };
        let start = bytes.len();
        let framed = fit_event_payload(entry.kind, &entry.event).and_then(|payload| {
            framer.write_frame(
                &mut bytes,
                entry.sequence,
                entry.kind,
                &payload,
                event_wire_time(&entry.event),
            )
        });
        if let Err(error) = framed {
            // Cannot happen for an event the WAL decoded; the link sees the gap and skips
            // the event, which is logged here as the error it is.
            tracing::error!(sequence = entry.sequence, %error, "cannot frame a replayed event");
            bytes.truncate(start);
            continue;
        }
        frames.push((entry.sequence, start, bytes.len()));
        if bytes.len() >= CHUNK_BYTES && !flush(&mut bytes, &mut frames) {
            return;
        }
    }
    flush(&mut bytes, &mut frames);
}
