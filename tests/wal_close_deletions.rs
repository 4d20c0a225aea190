//! Closing the log right after a checkpoint became durable while the deletion started by an
//! earlier checkpoint was still running: the segments the later checkpoint covers must be
//! deleted before the log closes, not left behind until the next open. Shown on the
//! simulated disk, whose held `fdatasync` orders the steps without any timing assumption.

mod common;

use common::{event, kind};
use procmond_wal::io::sim::SimDisk;
use procmond_wal::wal::Wal;

#[test]
fn a_checkpoint_durable_during_a_deletion_still_deletes_its_segments_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let (wal, _) = Wal::open(common::sim_config(dir.path(), &disk)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Enough events for several sealed segments.
        let mut last = 0;
        while wal.stats().segments < 6 {
            let batch = (last + 1..=last + 100)
                .map(|i| (event(i), kind(i)))
                .collect::<Vec<_>>();
            last = *wal.append_batch(batch).await.unwrap().end();
        }
        let sealed_before = common::segment_files(dir.path()).len();
        // The first checkpoint's group is written; its sync is held.
        disk.stall_syncs();
        let first = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.checkpoint(last / 3).await })
        };
        while disk.stalled_ops() == 0 {
            tokio::task::yield_now().await;
        }
        // The second checkpoint (everything) and the close are sent meanwhile.
        let second = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.checkpoint(last).await })
        };
        tokio::task::yield_now().await;
        let closing = tokio::spawn(wal.clone().close());
        tokio::task::yield_now().await;
        // Released: the first checkpoint becomes durable and starts deleting; the second
        // becomes durable before that deletion has run, then the log closes.
        disk.unstall();
        closing.await.unwrap().unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert!(sealed_before >= 4, "{sealed_before} segment files before");
    });
    // Every event is acknowledged: only the active segment (holding the newest checkpoint)
    // and the prepared one may remain.
    let left = common::segment_files(dir.path());
    assert!(
        left.len() <= 2,
        "acknowledged segments left after close: {left:?}"
    );
}
