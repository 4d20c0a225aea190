//! Reading unacknowledged events back from the WAL on disk, for the link.
//!
//! Owns the disk stream: a plain thread runs a [`WalReader`] from a sequence and hands
//! finished frames (the same bytes the hand-over would have built) to the ring thread
//! through a small bounded channel, so the ring never blocks on a disk read and memory
//! stays bounded. Dropping the stream stops the thread at its next hand-over.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::wal::{WalError, WalReader};
use crate::wire::budget::event_frame;

/// Frames read ahead of the link.
const READ_AHEAD_FRAMES: usize = 256;

/// One read-back event.
pub(crate) type ReadBack = Result<(u64, Bytes), WalError>;

/// A stream of frames read from the WAL, in sequence order, from a starting sequence to
/// whatever was durable when each segment was read.
pub(crate) struct DiskStream {
    receiver: mpsc::Receiver<ReadBack>,
}

impl DiskStream {
    /// Starts reading `dir` from `from`.
    pub fn start(dir: PathBuf, from: u64, publisher_id: Arc<str>) -> DiskStream {
        let (sender, receiver) = mpsc::channel(READ_AHEAD_FRAMES);
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
    for item in reader {
        let item = match item {
            Ok(entry) => {
                match event_frame(publisher_id, entry.sequence, entry.kind, &entry.event) {
                    Ok(frame) => Ok((entry.sequence, Bytes::from(frame))),
                    Err(error) => {
                        // Cannot happen for an event the WAL decoded; the link sees the gap and
                        // skips the event, which is logged here as the error it is.
                        tracing::error!(sequence = entry.sequence, %error, "cannot frame a replayed event");
                        continue;
                    }
                }
            }
            Err(error) => Err(error),
        };
        let stop = item.is_err();
        if sender.blocking_send(item).is_err() || stop {
            return;
        }
    }
}
