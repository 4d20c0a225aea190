//! Batches at the edges, and the start-up backlog's share of occupancy:
//! - a batch whose log is poisoned part-way (a segment write fails after its first groups
//!   were durable) names its durable prefix, and that prefix is delivered;
//! - a batch holding an event that cannot be stored is refused whole, naming the event,
//!   and nothing of it takes a sequence (so delivery of later events is not held up);
//! - the start-up backlog counts toward occupancy with its exact frame bytes.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;
#[path = "common/wait.rs"]
mod wait;

use broker_support::{BrokerProcess, short_tempdir};
use connector_support::*;
use procmond_wal::io::sim::{Fault, SimDisk};
use procmond_wal::wal::{BackendChoice, WalError};
use procmond_wal::wire::budget::event_frame;
use procmond_wal::{EventBusConnector, EventBusConnectorError, EventKind, ProcessEvent};
use wait::wait_until;

/// The smallest segment allowed: a batch spans several, and a big event fits in none.
const SEGMENT_MAX_BYTES: u64 = 64 * 1024;

fn batch(pids: std::ops::Range<u32>) -> Vec<(ProcessEvent, EventKind)> {
    pids.map(|pid| (event(pid), kind(pid))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failed_by_a_poisoned_log_names_and_delivers_its_durable_prefix() {
    const EVENTS: u32 = 2_000;
    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let _broker = BrokerProcess::start(&socket, &[]);
    let mut subscriber = subscriber(&socket).await;
    let disk = SimDisk::new();
    let mut connector_config = config(&dir.path().join("wal"), &socket, BackendChoice::Simulated);
    connector_config.wal.sim_disk = Some(disk.clone());
    connector_config.wal.segment_max_bytes = SEGMENT_MAX_BYTES;
    let connector = EventBusConnector::with_config(connector_config)
        .await
        .expect("start");
    connector.connect().await.expect("connect");

    // The first group fills the first segment; its sync is held, and the rest of the batch
    // must wait for it (a rotation needs everything written to be durable).
    disk.stall_syncs();
    let publishing = {
        let connector = connector.clone();
        tokio::spawn(async move { connector.publish_batch(batch(0..EVENTS)).await })
    };
    wait_until("the first group's sync is held", || disk.stalled_ops() == 1);
    // That sync succeeds; the next segment write fails and poisons the log.
    disk.inject(Fault::WriteEio);
    disk.unstall();
    let error = guarded(publishing)
        .await
        .expect("the publishing task")
        .expect_err("the log is poisoned part-way through the batch");

    let durable_through = connector.stats().wal.durable_sequence;
    assert!(durable_through > 0, "the first group is durable");
    let EventBusConnectorError::Wal(wal_error) = &error else {
        panic!("a WAL error: {error:?}");
    };
    assert_eq!(
        wal_error.durable_batch_prefix(),
        Some(1..=durable_through),
        "the error names the durable prefix: {error}"
    );
    match wal_error {
        WalError::BatchPartlyDurable {
            failed_events,
            source,
            ..
        } => {
            assert_eq!(
                *failed_events as u64,
                u64::from(EVENTS) - durable_through,
                "{error}"
            );
            assert!(
                matches!(**source, WalError::Poisoned { .. }),
                "the cause is the poisoned log: {source:?}"
            );
        }
        other => panic!("a partly durable batch: {other:?}"),
    }

    // The durable prefix is delivered, in order, each event once, and acknowledged.
    expect_prefix_delivered(&mut subscriber, &connector, durable_through).await;
    let _ = connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_an_event_too_large_to_store_is_refused_whole_and_names_it() {
    for backend in BACKENDS {
        let dir = short_tempdir();
        let socket = dir.path().join("broker.sock");
        let _broker = BrokerProcess::start(&socket, &[]);
        let mut subscriber = subscriber(&socket).await;
        let mut connector_config = config(&dir.path().join("wal"), &socket, backend);
        connector_config.wal.segment_max_bytes = SEGMENT_MAX_BYTES;
        let connector = EventBusConnector::with_config(connector_config)
            .await
            .expect("start");
        connector.connect().await.expect("connect");

        // Event 2 of 4 is within the event limits but larger than a whole segment.
        let mut events = batch(0..4);
        events[2].0.command_line.push("x".repeat(100_000));
        let error = connector
            .publish_batch(events)
            .await
            .expect_err("an event no segment can hold");
        let text = error.to_string();
        assert!(
            text.contains("event 2 of the batch") && text.contains("does not fit in a segment"),
            "the error names the event and why: {text}"
        );
        assert_eq!(connector.stats().wal.durable_sequence, 0, "nothing written");

        // Nothing of the refused batch took a sequence: the next events start at 1 and are
        // delivered (a written but never handed-over prefix would hold delivery up for good).
        let sequences = connector
            .publish_batch(batch(10..13))
            .await
            .expect("a batch that fits");
        assert_eq!(sequences, [1, 2, 3]);
        guarded(connector.acknowledged(3))
            .await
            .expect("acknowledged");
        for pid in 10..13 {
            let (sequence, got_kind, got) = next_event(&mut subscriber).await;
            assert_eq!(sequence, u64::from(pid) - 9);
            assert_eq!(got_kind, kind(pid));
            assert_eq!(got, redacted(pid));
        }
        connector.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_backlog_counts_its_exact_frame_bytes() {
    let dir = short_tempdir();
    let wal_dir = dir.path().join("wal");
    // No broker: everything published stays unacknowledged.
    let socket = dir.path().join("nobody.sock");
    let connector_config = || {
        config(&wal_dir, &socket, BackendChoice::Portable)
            .with_drain_timeout(std::time::Duration::ZERO)
    };
    let connector = EventBusConnector::with_config(connector_config())
        .await
        .expect("start");
    // Sizes far apart, so a mean of any kind would be wrong.
    let mut published = Vec::new();
    for pid in 0..40u32 {
        let mut event = event(pid);
        event
            .command_line
            .push("a".repeat(if pid % 5 == 0 { 20_000 } else { 3 }));
        let kind = kind(pid);
        let sequence = connector
            .publish(event.clone(), kind)
            .await
            .expect("durable");
        // What is stored (and sent): the event after redaction.
        event.command_line[2] = "[REDACTED]".into();
        event.command_line[3] = "--token=[REDACTED]".into();
        published.push((sequence, kind, event));
    }
    let occupied_while_running = connector.stats().occupied_bytes;
    let publisher_id = connector.publisher_id().to_owned();
    connector.shutdown().await.expect("shutdown");

    let expected: u64 = published
        .iter()
        .map(|(sequence, kind, event)| {
            event_frame(&publisher_id, *sequence, *kind, event)
                .expect("frame")
                .len() as u64
        })
        .sum();
    assert_eq!(occupied_while_running, expected, "exact while running");
    let reopened = EventBusConnector::with_config(connector_config())
        .await
        .expect("restart");
    let stats = reopened.stats();
    assert_eq!(
        stats.buffered_events, 40,
        "the whole backlog is unacknowledged"
    );
    assert_eq!(stats.occupied_bytes, expected, "exact after a restart");
    reopened.shutdown().await.expect("shutdown");
}
