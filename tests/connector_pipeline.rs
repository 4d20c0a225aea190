//! One caller with many publishes in flight (`enqueue` / `enqueue_batch` and their receipts):
//! sequences follow the order of the calls, the receipts resolve once durable, pipelined
//! events share group commits, dropped receipts withdraw nothing, and a subscriber gets
//! every event once, in order.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;
#[path = "common/wait.rs"]
mod wait;

use std::future::Future;

use broker_support::{BrokerProcess, short_tempdir};
use connector_support::*;
use procmond_wal::io::sim::SimDisk;
use procmond_wal::wal::BackendChoice;
use procmond_wal::{BatchPublishReceipt, EventBusConnector, PublishReceipt};
use wait::wait_until;

enum Pending {
    One(u32, PublishReceipt),
    Batch(std::ops::Range<u32>, BatchPublishReceipt),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_pipelines_events_and_batches_in_call_order() {
    for backend in BACKENDS {
        let dir = short_tempdir();
        let socket = dir.path().join("broker.sock");
        let _broker = BrokerProcess::start(&socket, &[]);
        // Calls: single events, and every third a batch of 1..=9 events.
        let sizes: Vec<u32> = (1u32..)
            .map(|call| if call % 3 == 0 { call % 9 + 1 } else { 0 })
            .scan(0u32, |pid, size| {
                (*pid < 1_500).then(|| {
                    *pid += size.max(1);
                    size
                })
            })
            .collect();
        let total: u32 = sizes.iter().map(|size| size.max(&1)).sum();
        // The subscriber reads while the caller publishes (the broker disconnects a
        // subscriber that lets too much queue up).
        let mut subscriber = subscriber(&socket).await;
        let received = tokio::spawn(async move {
            let mut received = Vec::new();
            for _ in 0..total {
                received.push(next_event(&mut subscriber).await);
            }
            received
        });
        let connector =
            EventBusConnector::with_config(config(&dir.path().join("wal"), &socket, backend))
                .await
                .expect("start");
        connector.connect().await.expect("connect");

        // All in flight together, some receipts dropped.
        let mut pending = Vec::new();
        let mut pid = 0u32;
        for (call, size) in (1u32..).zip(sizes) {
            if size > 0 {
                let events = (pid..pid + size).map(|p| (event(p), kind(p))).collect();
                let receipt = connector
                    .enqueue_batch(events)
                    .await
                    .expect("enqueue_batch");
                pending.push(Pending::Batch(pid..pid + size, receipt));
                pid += size;
            } else {
                let receipt = connector
                    .enqueue(event(pid), kind(pid))
                    .await
                    .expect("enqueue");
                if call % 7 == 0 {
                    // Dropping a receipt withdraws nothing: the event is still delivered.
                    drop(receipt);
                } else {
                    pending.push(Pending::One(pid, receipt));
                }
                pid += 1;
            }
        }
        assert_eq!(pid, total);
        for entry in pending {
            match entry {
                Pending::One(pid, receipt) => {
                    let sequence = guarded(receipt).await.expect("durable");
                    assert_eq!(sequence, u64::from(pid) + 1, "{backend:?}: call order");
                }
                Pending::Batch(pids, receipt) => {
                    let sequences = guarded(receipt).await.expect("durable");
                    let expected: Vec<u64> = pids.map(|p| u64::from(p) + 1).collect();
                    assert_eq!(sequences, expected, "{backend:?}: call order");
                }
            }
        }
        assert_eq!(connector.stats().wal.durable_sequence, u64::from(total));
        let received = guarded(received).await.expect("the subscriber task");
        for (pid, (sequence, got_kind, got)) in (0..total).zip(received) {
            assert_eq!(sequence, u64::from(pid) + 1, "{backend:?}");
            assert_eq!(got_kind, kind(pid));
            assert_eq!(got, redacted(pid));
        }
        let empty = connector
            .enqueue_batch(Vec::new())
            .await
            .expect("empty batch");
        assert_eq!(guarded(empty).await.expect("resolves"), Vec::<u64>::new());
        guarded(connector.acknowledged(u64::from(total)))
            .await
            .expect("acked");
        connector.shutdown().await.expect("shutdown");
        assert!(matches!(
            connector.enqueue(event(0), kind(0)).await,
            Err(procmond_wal::EventBusConnectorError::ShutDown)
        ));
        assert!(matches!(
            connector.enqueue_batch(Vec::new()).await,
            Err(procmond_wal::EventBusConnectorError::ShutDown)
        ));
    }
}

/// Publishes a caller enqueues while a group's sync is held all wait for that sync, and
/// then share the next group commit: a handful of syncs, not one per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_share_group_commits() {
    const EVENTS: u32 = 400;
    let dir = short_tempdir();
    let socket = dir.path().join("absent.sock");
    let disk = SimDisk::new();
    let mut connector_config = config(&dir.path().join("wal"), &socket, BackendChoice::Simulated);
    connector_config.wal.sim_disk = Some(disk.clone());
    let connector = EventBusConnector::with_config(connector_config)
        .await
        .expect("start");
    let syncs_before = connector.stats().wal.syncs;
    disk.stall_syncs();
    let first = connector.enqueue(event(0), kind(0)).await.expect("enqueue");
    wait_until("the first group's sync is held", || disk.stalled_ops() == 1);
    let mut receipts = Vec::new();
    for pid in 1..EVENTS {
        receipts.push(
            connector
                .enqueue(event(pid), kind(pid))
                .await
                .expect("enqueue"),
        );
    }
    // Nothing resolves while the sync is held.
    let mut first = Box::pin(first);
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    assert!(first.as_mut().poll(&mut context).is_pending());
    disk.unstall();
    assert_eq!(guarded(first).await.expect("durable"), 1);
    for (index, receipt) in receipts.into_iter().enumerate() {
        assert_eq!(guarded(receipt).await.expect("durable"), index as u64 + 2);
    }
    let syncs = connector.stats().wal.syncs - syncs_before;
    // The first group, then the others in groups of at most `group_max_bytes`; 400 small
    // events fit in a few (checkpoints may add one).
    assert!(
        syncs <= 4,
        "{syncs} syncs for {EVENTS} pipelined events: they did not share group commits"
    );
    connector.shutdown().await.expect("shutdown");
}
