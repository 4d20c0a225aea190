//! Checkpoints: the acknowledged watermark written to the WAL in batches, so sealed
//! segments holding only acknowledged events get deleted.
//!
//! Owns the cadence: a checkpoint once `checkpoint_every_events` more events are
//! acknowledged, or once `checkpoint_interval_ms` has passed with any acknowledged events
//! not yet written; never one per ack; one in flight at a time; a final one when stopped.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::stats::Shared;
use crate::wal::Wal;

/// The checkpoint cadence.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cadence {
    pub every_events: u64,
    pub interval: Duration,
}

/// Runs until `stop` changes (or its sender is gone), then writes a final checkpoint.
pub(crate) async fn run(
    wal: Wal,
    mut acked: watch::Receiver<u64>,
    mut stop: watch::Receiver<bool>,
    cadence: Cadence,
    shared: Arc<Shared>,
) {
    let mut written = *acked.borrow_and_update();
    let mut last_write = Instant::now();
    loop {
        let current = *acked.borrow_and_update();
        let due = current > written
            && (current - written >= cadence.every_events
                || last_write.elapsed() >= cadence.interval);
        if due {
            write(&wal, current, &shared).await;
            written = current;
            last_write = Instant::now();
            continue;
        }
        let wait_for_interval = current > written;
        tokio::select! {
            changed = acked.changed() => if changed.is_err() { break },
            () = tokio::time::sleep_until(last_write + cadence.interval), if wait_for_interval => {}
            _ = stop.changed() => break,
        }
    }
    let current = *acked.borrow();
    if current > written {
        write(&wal, current, &shared).await;
    }
}

async fn write(wal: &Wal, acked_through: u64, shared: &Shared) {
    match wal.checkpoint(acked_through).await {
        Ok(()) => {
            Shared::bump(&shared.checkpoints_written);
            shared.checkpointed_through.store(acked_through, Relaxed);
            tracing::debug!(acked_through, "checkpoint written");
        }
        // A poisoned or closed log refuses everything; publishers see that error too.
        Err(error) => tracing::warn!(acked_through, %error, "cannot write checkpoint"),
    }
}
