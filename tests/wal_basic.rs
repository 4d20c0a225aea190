//! Persistence, reopen, rotation, sequences, concurrency, lock, budget and deletion, on both
//! I/O backends, against real files in temporary directories.

mod common;

use std::collections::BTreeSet;

use common::{BACKENDS, event, kind, runtime, small_config};
use procmond_wal::wal::recovery::{list_segments, read_dir};
use procmond_wal::wal::{BackendChoice, Wal, WalError, WalReader};

fn replay_all(dir: &std::path::Path) -> Vec<procmond_wal::wal::format::WalEntry> {
    WalReader::open(dir, 0)
        .unwrap()
        .map(|entry| entry.unwrap())
        .collect()
}

#[test]
fn appended_events_survive_close_and_reopen() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (wal, report) = Wal::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!(report.events, 0);
        assert_eq!(report.next_sequence, 1);
        rt.block_on(async {
            for i in 1..=50 {
                assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
            }
            assert_eq!(wal.stats().durable_sequence, 50);
            wal.close().await.unwrap();
        });
        let entries = replay_all(dir.path());
        assert_eq!(entries.len(), 50, "{backend:?}");
        for (i, entry) in (1..).zip(&entries) {
            assert_eq!(entry.sequence, i);
            assert_eq!(entry.event, event(i));
            assert_eq!(entry.kind, kind(i));
        }
        let (wal, report) = Wal::open(small_config(dir.path(), backend)).unwrap();
        assert_eq!(report.events, 50);
        assert!(report.is_clean());
        assert_eq!(report.next_sequence, 51);
        rt.block_on(async {
            assert_eq!(wal.append(event(51), kind(51)).await.unwrap(), 51);
            wal.close().await.unwrap();
        });
        assert_eq!(replay_all(dir.path()).len(), 51);
    }
}

#[test]
fn dropping_every_handle_without_close_still_flushes_accepted_events() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (wal, _) = Wal::open(small_config(dir.path(), backend)).unwrap();
        rt.block_on(async {
            for i in 1..=10 {
                wal.append(event(i), kind(i)).await.unwrap();
            }
        });
        drop(wal);
        // The lock is released once the ring thread has flushed and exited.
        let (wal, report) = loop {
            match Wal::open(small_config(dir.path(), backend)) {
                Ok(opened) => break opened,
                Err(WalError::Locked { .. }) => std::thread::yield_now(),
                Err(other) => panic!("reopen failed: {other}"),
            }
        };
        assert_eq!(report.events, 10);
        assert_eq!(report.next_sequence, 11);
        rt.block_on(wal.close()).unwrap();
    }
}

#[test]
fn segments_rotate_at_the_configured_threshold_and_sequences_continue() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let config = small_config(dir.path(), backend);
        let rotate_at = config.segment_rotate_bytes();
        let (wal, _) = Wal::open(config.clone()).unwrap();
        rt.block_on(async {
            let batch: Vec<_> = (1..=3000).map(|i| (event(i), kind(i))).collect();
            assert_eq!(wal.append_batch(batch).await.unwrap(), 1..=3000);
            wal.close().await.unwrap();
        });
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean());
        let written: Vec<_> = report.segments.iter().filter(|s| !s.is_blank()).collect();
        assert!(
            written.len() >= 3,
            "expected rotation, got {} segments",
            written.len()
        );
        for (index, segment) in written.iter().enumerate() {
            assert!(
                segment.data_end <= rotate_at,
                "segment {} passed the rotation point",
                segment.number
            );
            assert_eq!(segment.number, index as u64 + 1);
            assert_eq!(
                segment.header.unwrap().first_sequence,
                segment.first_sequence.unwrap()
            );
            if index + 1 < written.len() {
                // Rotation happened because the next group would not fit.
                assert!(segment.data_end > rotate_at - config.group_max_bytes as u64 - 8192);
                assert_eq!(
                    segment.last_sequence.unwrap() + 1,
                    written[index + 1].first_sequence.unwrap()
                );
            }
        }
        let names: Vec<_> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, (1..=names.len() as u64).collect::<Vec<_>>());
        let entries = replay_all(dir.path());
        assert_eq!(
            entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (1..=3000).collect::<Vec<_>>()
        );
        // Reopen continues after the last sequence, across segments.
        let (wal, report) = Wal::open(config).unwrap();
        assert_eq!(report.next_sequence, 3001);
        rt.block_on(async {
            assert_eq!(wal.append(event(1), kind(1)).await.unwrap(), 3001);
            wal.close().await.unwrap();
        });
    }
}

#[test]
fn concurrent_appenders_get_unique_gap_free_sequences_in_disk_order() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let (wal, _) = Wal::open(small_config(dir.path(), backend)).unwrap();
        let per_task = 200u64;
        let tasks = 8u64;
        let sequences = rt.block_on(async {
            let mut handles = Vec::new();
            for task in 0..tasks {
                let wal = wal.clone();
                handles.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for i in 0..per_task {
                        let id = task * per_task + i;
                        mine.push((wal.append(event(id), kind(id)).await.unwrap(), id));
                    }
                    mine
                }));
            }
            let mut all = Vec::new();
            for handle in handles {
                all.extend(handle.await.unwrap());
            }
            let stats = wal.stats();
            assert!(stats.syncs > 0 && stats.records_per_sync >= 1.0);
            // Every group write is timed; all of them completed before the appends resolved.
            assert!(stats.group_writes > 0);
            assert_eq!(stats.write_latency_samples, stats.group_writes);
            assert!(stats.write_latency_p50_us <= stats.write_latency_p99_us);
            wal.close().await.unwrap();
            all
        });
        let unique: BTreeSet<u64> = sequences.iter().map(|&(s, _)| s).collect();
        assert_eq!(unique.len() as u64, tasks * per_task);
        assert_eq!(
            unique.iter().copied().collect::<Vec<_>>(),
            (1..=tasks * per_task).collect::<Vec<_>>()
        );
        let entries = replay_all(dir.path());
        assert_eq!(entries.len() as u64, tasks * per_task);
        for (entry, expected) in entries.iter().zip(1..) {
            assert_eq!(
                entry.sequence, expected,
                "disk order must equal sequence order"
            );
        }
        // Each caller's sequence maps to its own event.
        for (sequence, id) in sequences {
            assert_eq!(entries[(sequence - 1) as usize].event, event(id));
        }
    }
}

#[test]
fn a_second_opener_of_the_same_directory_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(small_config(dir.path(), BackendChoice::Portable)).unwrap();
    let second = Wal::open(small_config(dir.path(), BackendChoice::Portable));
    match second {
        Err(WalError::Locked { dir: locked, .. }) => assert_eq!(locked, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    runtime().block_on(wal.close()).unwrap();
    let (wal, _) = Wal::open(small_config(dir.path(), BackendChoice::Portable)).unwrap();
    runtime().block_on(wal.close()).unwrap();
}

#[test]
fn the_budget_returns_wal_full_loses_nothing_and_recovers_after_checkpoint() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut config = small_config(dir.path(), backend);
        config.wal_max_bytes = 3 * config.segment_max_bytes;
        let (wal, _) = Wal::open(config.clone()).unwrap();
        let last_durable = rt.block_on(async {
            let mut last = 0;
            let mut i = 1;
            loop {
                match wal.append(event(i), kind(i)).await {
                    Ok(sequence) => last = sequence,
                    Err(WalError::WalFull { budget_bytes, .. }) => {
                        assert_eq!(budget_bytes, config.wal_max_bytes);
                        break;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
                i += 1;
                assert!(i < 100_000, "budget never enforced");
            }
            // Still full on retry; nothing acknowledged was dropped.
            assert!(matches!(
                wal.append(event(0), kind(0)).await,
                Err(WalError::WalFull { .. })
            ));
            last
        });
        assert_eq!(replay_all(dir.path()).len() as u64, last_durable);
        rt.block_on(async {
            wal.checkpoint(last_durable).await.unwrap();
            // Deletion runs in the background; appends succeed once space is free.
            let mut attempts = 0;
            loop {
                match wal.append(event(1), kind(1)).await {
                    Ok(sequence) => {
                        assert_eq!(sequence, last_durable + 1);
                        break;
                    }
                    Err(WalError::WalFull { .. }) if attempts < 10_000 => {
                        attempts += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            wal.close().await.unwrap();
        });
    }
}

#[test]
fn checkpoint_deletes_exactly_the_fully_acked_sealed_segments() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let config = small_config(dir.path(), backend);
        let (wal, _) = Wal::open(config.clone()).unwrap();
        rt.block_on(async {
            let batch: Vec<_> = (1..=3000).map(|i| (event(i), kind(i))).collect();
            wal.append_batch(batch).await.unwrap();
            wal.sync().await.unwrap();
        });
        let before = read_dir(dir.path()).unwrap();
        let written: Vec<_> = before
            .segments
            .iter()
            .filter(|s| !s.is_blank())
            .cloned()
            .collect();
        assert!(written.len() >= 3);
        // Acknowledge up to the middle of the second segment.
        let second = &written[1];
        let acked = second.first_sequence.unwrap() + 1;
        rt.block_on(async {
            wal.checkpoint(acked).await.unwrap();
            assert!(matches!(
                wal.checkpoint(10_000).await,
                Err(WalError::CheckpointAhead {
                    requested: 10_000,
                    ..
                })
            ));
            wal.close().await.unwrap();
        });
        let after = read_dir(dir.path()).unwrap();
        let numbers: Vec<u64> = after.segments.iter().map(|s| s.number).collect();
        assert!(
            !numbers.contains(&written[0].number),
            "fully acked segment kept"
        );
        assert!(
            numbers.contains(&second.number),
            "partly acked segment deleted"
        );
        assert_eq!(after.acked_through, acked);
        let entries = replay_all(dir.path());
        assert_eq!(
            entries.first().unwrap().sequence,
            second.first_sequence.unwrap()
        );
        assert_eq!(entries.last().unwrap().sequence, 3000);
        let replay = WalReader::open(dir.path(), acked + 1)
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(replay.sequence, acked + 1);
    }
}

#[test]
fn interval_policy_acknowledges_writes_and_reports_durability_truthfully() {
    use procmond_wal::wal::SyncPolicy;
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut config = small_config(dir.path(), backend);
        config.sync = SyncPolicy::Interval {
            sync_interval_ms: 60_000,
        };
        let (wal, _) = Wal::open(config.clone()).unwrap();
        rt.block_on(async {
            for i in 1..=30 {
                assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
            }
            // Written, but with a one-minute interval nothing has been synced yet.
            assert_eq!(wal.durable_sequence(), 0);
            assert_eq!(wal.stats().syncs, 0);
            // `sync` forces it and then the watermark tells the truth.
            assert_eq!(wal.sync().await.unwrap(), 30);
            assert_eq!(wal.durable_sequence(), 30);
            assert_eq!(wal.stats().syncs, 1);
            wal.append(event(31), kind(31)).await.unwrap();
            wal.close().await.unwrap();
        });
        // Close syncs what was written.
        let (wal, report) = Wal::open(config).unwrap();
        assert_eq!(report.events, 31);
        rt.block_on(wal.close()).unwrap();
    }
}

#[test]
fn a_batch_with_a_record_no_segment_can_hold_is_refused_whole() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = small_config(dir.path(), backend);
        config.segment_max_bytes = 64 * 1024;
        config.group_max_bytes = 16 * 1024;
        let (wal, _) = Wal::open(config).unwrap();
        runtime().block_on(async {
            // Event 2 of 4 is within the event limits but larger than a whole segment.
            let mut batch: Vec<_> = (1..=4).map(|i| (event(i), kind(i))).collect();
            batch[2].0.command_line.push("x".repeat(100_000));
            let error = wal.append_batch(batch).await.expect_err("too large");
            assert!(
                matches!(error, WalError::RecordTooLarge { .. }),
                "{backend:?}: {error:?}"
            );
            assert_eq!(error.durable_batch_prefix(), None, "nothing of it written");
            // Nothing of the refused batch took a sequence or reached the log.
            assert_eq!(wal.sync().await.unwrap(), 0, "{backend:?}");
            assert_eq!(wal.append(event(9), kind(9)).await.unwrap(), 1);
            wal.close().await.unwrap();
        });
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {report:?}");
        assert_eq!(report.events, 1, "{backend:?}");
    }
}
