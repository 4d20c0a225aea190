//! Durability holes of the writer, each shown on the simulated disk (page cache and directory
//! modelled): deletion under the interval policy, records trusted at open without a sync,
//! unbounded queues, checkpoints that cannot land when the budget is full, repeated
//! checkpoints answered early, and unlinks that fail once.

mod common;

use common::{event, kind};
use procmond_wal::io::sim::{Fault, SimDisk, Tear};
use procmond_wal::wal::recovery::read_dir;
use procmond_wal::wal::{SyncPolicy, Wal, WalError};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
}

fn multi_thread() -> tokio::runtime::Runtime {
    common::runtime()
}

/// Interval policy: a checkpoint is answered once written, but the segments it covers may go
/// only once it is durable. Here its sync fails, the power goes, and nothing unsynced
/// survives: the sealed segments must still be there, so no durable sequence is reused.
#[test]
fn interval_policy_deletes_only_after_the_checkpoint_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let mut config = common::sim_config(dir.path(), &disk);
    config.sync = SyncPolicy::Interval {
        sync_interval_ms: 60_000,
    };
    let rt = multi_thread();
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let durable = rt.block_on(async {
        // Several rotations: each syncs the segment it seals.
        let mut last = 0;
        while wal.stats().segments < 5 {
            last = wal.append(event(last + 1), kind(last + 1)).await.unwrap();
        }
        let durable = wal.durable_sequence();
        assert!(durable > 0);
        // Covers every sealed segment; written, not synced (the interval is a minute).
        wal.checkpoint(durable).await.unwrap();
        disk.inject(Fault::SyncEio);
        let _ = wal.close().await;
        durable
    });
    disk.crash_with(Tear::DropAll).unwrap();
    let (wal, report) = Wal::open(config).unwrap();
    assert!(
        report.next_sequence > durable,
        "sequence {} handed out again after {durable} was durable",
        report.next_sequence
    );
    assert_eq!(report.lost_events, 0, "{report:?}");
    rt.block_on(async { wal.close().await.unwrap() });
}

/// A process dies between a group's write and its sync; the restart finds the group in the
/// page cache. Open must make it durable before answering anything, or a power loss later
/// would lose records the restarted log already called durable.
#[test]
fn open_syncs_what_recovery_trusts_before_answering() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let config = common::sim_config(dir.path(), &disk);
    let rt = multi_thread();
    let (wal, _) = Wal::open(config.clone()).unwrap();
    rt.block_on(async {
        for i in 1..=10 {
            wal.append(event(i), kind(i)).await.unwrap();
        }
        // Written, not synced: the writes go through, the sync waits; then the process dies.
        disk.stall_syncs();
        let mut receipts = Vec::new();
        for i in 11..=20 {
            receipts.push(wal.enqueue(event(i), kind(i)).await.unwrap());
        }
        common::wait::wait_until("a group is written, its sync held", || {
            wal.stats().events_appended > 10 && disk.stalled_ops() == 1
        });
        disk.kill_process();
        for receipt in receipts {
            assert!(receipt.await.is_err());
        }
        let _ = wal.close().await;
    });
    disk.restart();
    let (wal, report) = Wal::open(config.clone()).unwrap();
    let claimed = rt.block_on(async {
        let claimed = wal.sync().await.unwrap();
        wal.close().await.unwrap();
        claimed
    });
    assert!(report.next_sequence > 10);
    // Power loss: only what reached the device survives.
    disk.crash_with(Tear::DropAll).unwrap();
    let (wal, report) = Wal::open(config).unwrap();
    assert!(
        report.next_sequence > claimed,
        "sync() said {claimed} was durable, but after power loss the next sequence is {}",
        report.next_sequence
    );
    rt.block_on(async { wal.close().await.unwrap() });
}

/// With the disk stalled, a sender that never waits for receipts is held back by
/// `queue_max_commands`: the ring thread stops taking commands once its own queue holds that
/// many, so the channel fills and the sender waits.
#[test]
fn a_stalled_disk_holds_senders_back_and_bounds_the_queue() {
    const QUEUE_MAX: usize = 16;
    const SENDS: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let mut config = common::sim_config(dir.path(), &disk);
    config.queue_max_commands = QUEUE_MAX;
    let (wal, _) = Wal::open(config).unwrap();
    disk.stall();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let wal = wal.clone();
        let sent = std::sync::Arc::clone(&sent);
        std::thread::spawn(move || {
            current_thread().block_on(async {
                let mut receipts = Vec::new();
                for i in 1..=SENDS {
                    receipts.push(wal.enqueue(event(i), kind(i)).await.unwrap());
                    sent.store(i, std::sync::atomic::Ordering::SeqCst);
                }
                for receipt in receipts {
                    receipt.await.unwrap();
                }
            })
        })
    };
    let sent_now = || sent.load(std::sync::atomic::Ordering::SeqCst);
    common::wait::wait_until("the queue fills or the sender finishes", || {
        sent_now() == SENDS
            || (wal.stats().queued_commands == QUEUE_MAX as u64
                && sent_now() >= 2 * QUEUE_MAX as u64)
    });
    assert!(
        sent_now() < SENDS,
        "the sender got every command in while the disk was stalled"
    );
    disk.unstall();
    sender.join().unwrap();
    let stats = wal.stats();
    assert!(
        stats.queued_commands_max <= QUEUE_MAX as u64,
        "the ring thread held {} commands (limit {QUEUE_MAX})",
        stats.queued_commands_max
    );
    assert_eq!(stats.next_sequence, SENDS + 1);
    current_thread().block_on(async { wal.close().await.unwrap() });
}

/// Tens of thousands of distinct checkpoints queued while one write is in flight all end up
/// in one group: they must fit the group buffer (no panic) and all be answered.
#[test]
fn many_distinct_checkpoints_in_one_group_fit_the_buffer() {
    const CHECKPOINTS: u64 = 80_000;
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let mut config = common::sim_config(dir.path(), &disk);
    // One segment holds every event and leaves megabytes for checkpoints.
    config.segment_max_bytes = 64 * 1024 * 1024;
    config.group_max_bytes = 4096;
    config.wal_max_bytes = 256 * 1024 * 1024;
    config.queue_max_commands = 2 * CHECKPOINTS as usize;
    let (wal, _) = Wal::open(config).unwrap();
    let rt = current_thread();
    rt.block_on(async {
        let mut appended = 0;
        while appended < CHECKPOINTS {
            let batch = (appended + 1..=(appended + 1000).min(CHECKPOINTS))
                .map(|i| (event(i % 7), kind(i)))
                .collect::<Vec<_>>();
            appended = *wal.append_batch(batch).await.unwrap().end();
        }
        disk.stall();
        let receipt = wal.enqueue(event(1), kind(1)).await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        // A current-thread runtime polls them in order, so the values arrive increasing.
        for acked in 1..=CHECKPOINTS {
            let wal = wal.clone();
            tasks.spawn(async move { wal.checkpoint(acked).await });
        }
        while wal.stats().queued_commands < CHECKPOINTS {
            tokio::task::yield_now().await;
        }
        disk.unstall();
        receipt.await.unwrap();
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(wal.stats().acked_through, CHECKPOINTS);
        wal.close().await.unwrap();
    });
}

/// The budget is full and an append that needs a new segment is queued ahead of a
/// checkpoint: the append fails, the checkpoint still lands (room is reserved for it), and
/// once it is durable the covered segments go and appends work again.
#[test]
fn a_checkpoint_lands_when_the_budget_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let mut config = common::sim_config(dir.path(), &disk);
    config.wal_max_bytes = 3 * config.segment_max_bytes;
    config.sync = SyncPolicy::Interval {
        sync_interval_ms: 60_000,
    };
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let rt = multi_thread();
    let acked = rt.block_on(async {
        let mut last = 0;
        loop {
            match wal.append(event(last + 1), kind(last + 1)).await {
                Ok(sequence) => last = sequence,
                Err(WalError::WalFull { .. }) => break,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        let deleted_before = wal.stats().segments_deleted;
        // Something unsynced, so the next rotation must wait for a sync.
        wal.checkpoint(1).await.unwrap();
        disk.stall();
        let blocked = wal.enqueue(event(0), kind(0)).await.unwrap();
        common::wait::wait_until("the rotation's sync is stalled", || disk.stalled_ops() == 1);
        let checkpoint = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.checkpoint(last).await })
        };
        common::wait::wait_until("the checkpoint is queued", || {
            wal.stats().queued_commands >= 2
        });
        disk.unstall();
        assert!(matches!(blocked.await, Err(WalError::WalFull { .. })));
        checkpoint
            .await
            .unwrap()
            .expect("a checkpoint must land even when the budget is full");
        wal.sync().await.unwrap();
        assert_eq!(wal.stats().acked_through, last);
        // The deletion runs in the background after the sync; the next append needs the
        // space and, once it is there, succeeds.
        let mut sequence = None;
        for attempt in 0..1000 {
            match wal.append(event(attempt), kind(attempt)).await {
                Ok(s) => {
                    sequence = Some(s);
                    break;
                }
                Err(WalError::WalFull { .. }) => tokio::task::yield_now().await,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(sequence.is_some_and(|s| s > last));
        assert!(wal.stats().segments_deleted > deleted_before);
        wal.close().await.unwrap();
        last
    });
    let report = read_dir(dir.path()).unwrap();
    assert!(report.acked_through >= acked, "{report:?}");
}

/// A checkpoint equal to one not yet durable is answered only when that one is durable.
#[test]
fn a_repeated_checkpoint_waits_for_the_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let config = common::sim_config(dir.path(), &disk);
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let rt = multi_thread();
    rt.block_on(async {
        for i in 1..=10 {
            wal.append(event(i), kind(i)).await.unwrap();
        }
        disk.stall_syncs();
        let first = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.checkpoint(5).await })
        };
        common::wait::wait_until("the first checkpoint's sync is stalled", || {
            disk.stalled_ops() == 1
        });
        let second = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.checkpoint(5).await })
        };
        // An event queued after it is written only once the ring thread has handled the
        // second checkpoint.
        let marker = wal.enqueue(event(11), kind(11)).await.unwrap();
        common::wait::wait_until("the marker is written", || {
            wal.stats().events_appended == 11
        });
        // The power goes before the first checkpoint is durable: neither may report success.
        disk.power_cut();
        assert!(first.await.unwrap().is_err());
        assert!(
            second.await.unwrap().is_err(),
            "a repeated checkpoint was acknowledged before the first one was durable"
        );
        assert!(marker.await.is_err());
        let _ = wal.close().await;
    });
}

/// An unlink that fails once is retried, and its budget share comes back without a restart.
#[test]
fn a_failed_unlink_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let config = common::sim_config(dir.path(), &disk);
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let rt = multi_thread();
    let first_segment = common::segment_files(dir.path())[0].clone();
    rt.block_on(async {
        let mut last = 0;
        while wal.stats().segments < 5 {
            last = wal.append(event(last + 1), kind(last + 1)).await.unwrap();
        }
        disk.inject(Fault::RemoveEio);
        wal.checkpoint(last).await.unwrap();
        // More work: later checkpoints and rotations give the writer chances to retry.
        for i in 1..=300 {
            last = wal.append(event(i), kind(i)).await.unwrap();
        }
        wal.checkpoint(last).await.unwrap();
        wal.close().await.unwrap();
    });
    assert!(
        !common::segment_files(dir.path()).contains(&first_segment),
        "{first_segment} was never deleted after its unlink failed once"
    );
}

/// A segment whose header never reached the disk keeps its records only while the log's salt
/// is known from another segment. When a checkpoint in it lets open delete the older
/// segments, open must first give it its header back, or the next open could verify none of
/// its records (nor the checkpoint that keeps sequence numbers from being reused).
#[test]
fn a_segment_with_a_lost_header_stays_readable_after_older_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let config = common::sim_config(dir.path(), &disk);
    let rt = multi_thread();
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let last = rt.block_on(async {
        let mut last = 0;
        while wal.stats().segments < 3 {
            last = wal.append(event(last + 1), kind(last + 1)).await.unwrap();
        }
        // The checkpoint is written into segment 2 but the process dies before its sync.
        disk.stall_syncs();
        let checkpoint = {
            let wal = wal.clone();
            tokio::spawn(async move { wal.checkpoint(last).await })
        };
        common::wait::wait_until("the checkpoint's sync is stalled", || {
            disk.stalled_ops() == 1
        });
        disk.kill_process();
        assert!(checkpoint.await.unwrap().is_err());
        let _ = wal.close().await;
        last
    });
    disk.restart();
    // Segment 2's header block is lost (all its fields zero).
    let segment_2 = dir.path().join("procmond-00002.wal");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment_2)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 64], 0).unwrap();
    drop(file);
    // Open trusts segment 2 (salt from segment 1) and, by its checkpoint, deletes segment 1;
    // then the process dies again before anything new is written.
    let (wal, report) = Wal::open(config.clone()).unwrap();
    assert_eq!(report.acked_through, last);
    common::wait::wait_until("segment 1 is deleted", || wal.stats().segments_deleted == 1);
    disk.kill_process();
    rt.block_on(async {
        let _ = wal.close().await;
    });
    disk.restart();
    let report = read_dir(dir.path()).unwrap();
    assert_eq!(report.acked_through, last, "{report:?}");
    assert_eq!(report.last_sequence, Some(last), "{report:?}");
    assert!(report.next_sequence > last);
}
