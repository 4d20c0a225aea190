//! A batch that fails part-way because the WAL cannot create its next segment (ENOSPC on the
//! simulated disk, or the `wal_max_bytes` budget): the WAL names the durable prefix, the
//! connector delivers exactly that prefix (in order, once) without a restart, the publisher
//! gets a clear error for the rest, and publishing works again once there is room.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;

use std::ops::RangeInclusive;

use broker_support::{BrokerProcess, short_tempdir};
use connector_support::*;
use procmond_wal::io::Preallocation;
use procmond_wal::io::sim::SimDisk;
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalError, WalReader};
use procmond_wal::{EventBusConnector, EventBusConnectorError, EventKind, ProcessEvent};

/// Segment size: the smallest allowed, so a batch spans several segments.
const SEGMENT_MAX_BYTES: u64 = 64 * 1024;
/// Events in the batch that runs out of room: several segments' worth.
const BIG_BATCH_EVENTS: u32 = 2_000;
/// Events published once there is room again.
const LATER_BATCH_EVENTS: u32 = 100;

fn batch(pids: std::ops::Range<u32>) -> Vec<(ProcessEvent, EventKind)> {
    pids.map(|pid| (event(pid), kind(pid))).collect()
}

/// The durable prefix and the cause named by a partly durable batch's error.
fn partly_durable(error: &WalError) -> (RangeInclusive<u64>, &WalError) {
    match error {
        WalError::BatchPartlyDurable {
            failed_events,
            source,
            ..
        } => {
            let durable = error.durable_batch_prefix().expect("a durable prefix");
            assert!(*failed_events > 0, "some of the batch failed: {error}");
            assert_eq!(
                durable.clone().count() + failed_events,
                BIG_BATCH_EVENTS as usize,
                "durable and failed events make up the batch: {error}"
            );
            (durable, source)
        }
        other => panic!("expected a partly durable batch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_prefix_of_a_batch_failed_by_enospc_is_delivered_and_publishing_resumes() {
    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let wal_dir = dir.path().join("wal");
    let _broker = BrokerProcess::start(&socket, &[]);
    let mut subscriber = subscriber(&socket).await;
    let disk = SimDisk::new();
    let mut connector_config = config(&wal_dir, &socket, BackendChoice::Simulated);
    connector_config.wal.sim_disk = Some(disk.clone());
    connector_config.wal.segment_max_bytes = SEGMENT_MAX_BYTES;
    // Creating a segment allocates its bytes, so a full disk refuses it.
    connector_config.wal.preallocation = Preallocation::Fallocate;
    let connector = EventBusConnector::with_config(connector_config)
        .await
        .expect("start");
    connector.connect().await.expect("connect");

    // No room for any new segment: the batch fills what exists, then fails.
    disk.set_space_left(Some(0));
    let error = connector
        .publish_batch(batch(0..BIG_BATCH_EVENTS))
        .await
        .expect_err("the disk is full part-way through the batch");
    let durable_through = connector.stats().wal.durable_sequence;
    assert!(durable_through > 0, "part of the batch is durable");

    // Everything durable reaches the broker and is acknowledged, without a restart.
    expect_prefix_delivered(&mut subscriber, &connector, durable_through).await;

    // The publisher was told which prefix is durable and why the rest failed.
    let EventBusConnectorError::Wal(wal_error) = &error else {
        panic!("a WAL error: {error:?}");
    };
    let (durable, cause) = partly_durable(wal_error);
    assert_eq!(durable, 1..=durable_through);
    match cause {
        WalError::Io { op, source, .. } => {
            assert_eq!(*op, "create segment");
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
        }
        other => panic!("the cause is the refused segment: {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains(&format!("1..={durable_through}")) && text.contains("No space left"),
        "the message names the durable prefix and the cause: {text}"
    );

    // Room again: the same connector publishes and delivers, right after the prefix.
    disk.set_space_left(None);
    let resumed_from = durable_through as u32;
    let later = connector
        .publish_batch(batch(resumed_from..resumed_from + LATER_BATCH_EVENTS))
        .await
        .expect("publishing works once there is room");
    let expected: Vec<u64> =
        (durable_through + 1..=durable_through + u64::from(LATER_BATCH_EVENTS)).collect();
    assert_eq!(later, expected);
    for (index, pid) in (resumed_from..resumed_from + LATER_BATCH_EVENTS).enumerate() {
        let (sequence, got_kind, got) = next_event(&mut subscriber).await;
        assert_eq!(sequence, expected[index]);
        assert_eq!(got_kind, kind(pid));
        assert_eq!(got, redacted(pid));
    }
    let last = *expected.last().expect("a later batch");
    guarded(connector.acknowledged(last))
        .await
        .expect("the later batch is acknowledged");
    let stats = connector.stats();
    assert_eq!(stats.acked_through, last);
    connector.shutdown().await.expect("shutdown");
}

/// The WAL alone, on a real directory: a batch that needs a segment beyond `wal_max_bytes`
/// fails naming the budget and its durable prefix, which is exactly what the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_batch_beyond_the_budget_names_its_durable_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = WalConfig::new(dir.path());
    config.backend = BackendChoice::Portable;
    config.segment_max_bytes = SEGMENT_MAX_BYTES;
    config.wal_max_bytes = 2 * SEGMENT_MAX_BYTES;
    let (wal, _) = Wal::open(config).expect("open");
    let error = wal
        .append_batch(batch(0..BIG_BATCH_EVENTS))
        .await
        .expect_err("the budget runs out part-way");
    let (durable, cause) = partly_durable(&error);
    assert!(
        matches!(cause, WalError::WalFull { .. }),
        "the cause is the budget: {cause:?}"
    );
    assert_eq!(*durable.start(), 1);
    assert_eq!(*durable.end(), wal.durable_sequence());
    assert!(error.to_string().contains("WAL is full"), "{error}");
    wal.close().await.expect("close");

    let entries: Vec<_> = WalReader::open(dir.path(), 0)
        .expect("reader")
        .map(|entry| entry.expect("entry"))
        .collect();
    assert_eq!(entries.len(), durable.clone().count());
    for (entry, (sequence, pid)) in entries.iter().zip(durable.zip(0u32..)) {
        assert_eq!(entry.sequence, sequence);
        assert_eq!(entry.event, event(pid));
    }
}
