//! Delivery through the reference broker (a child process on a real socket): topics,
//! exact events and order, redaction, WAL first, broker outages, spill, restarts.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;

use broker_support::{BrokerProcess, short_tempdir};
use connector_support::*;
use std::future::Future;

use procmond_wal::EventBusConnector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_a_subscriber_on_all_three_topics_exactly_and_in_order() {
    for backend in BACKENDS {
        let dir = short_tempdir();
        let socket = dir.path().join("broker.sock");
        let _broker = BrokerProcess::start(&socket, &[]);
        let mut subscriber = subscriber(&socket).await;
        let connector =
            EventBusConnector::with_config(config(&dir.path().join("wal"), &socket, backend))
                .await
                .expect("start");
        connector.connect().await.expect("connect");
        let mut sequences = Vec::new();
        for pid in 0..30u32 {
            sequences.push(
                connector
                    .publish(event(pid), kind(pid))
                    .await
                    .expect("publish"),
            );
        }
        for (index, pid) in (0..30u32).enumerate() {
            let (sequence, got_kind, got) = next_event(&mut subscriber).await;
            assert_eq!(sequence, sequences[index], "{backend:?}");
            assert_eq!(got_kind, kind(pid));
            assert_eq!(got, redacted(pid));
        }
        guarded(connector.acknowledged(sequences[29]))
            .await
            .expect("acked");
        let stats = connector.stats();
        assert_eq!(stats.acked_through, sequences[29]);
        assert!(!stats.legacy_broker);
        assert!(connector.is_connected());
        connector.shutdown().await.expect("shutdown");
        assert!(matches!(
            connector.publish(event(99), kind(0)).await,
            Err(procmond_wal::EventBusConnectorError::ShutDown)
        ));
    }
}

/// With no broker at all, publish still resolves, the events are in the WAL (secrets
/// redacted before they reached the disk), and connect() does not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_publish_resolves_and_the_wal_holds_the_events() {
    let dir = short_tempdir();
    let wal_dir = dir.path().join("wal");
    let socket = dir.path().join("nobody-listens.sock");
    let connector = EventBusConnector::with_config(
        config(&wal_dir, &socket, procmond_wal::wal::BackendChoice::Auto)
            .with_drain_timeout(std::time::Duration::from_millis(50)),
    )
    .await
    .expect("start");
    connector
        .connect()
        .await
        .expect("a missing broker is not an error");
    let mut sequences = Vec::new();
    for pid in 0..10u32 {
        sequences.push(
            connector
                .publish(event(pid), kind(pid))
                .await
                .expect("durable"),
        );
    }
    assert_eq!(sequences, (1..=10).collect::<Vec<u64>>());
    assert!(!connector.is_connected());
    assert_eq!(connector.buffered_event_count(), 10);
    assert_eq!(connector.stats().acked_through, 0);
    connector.shutdown().await.expect("shutdown");
    let entries: Vec<_> = procmond_wal::wal::WalReader::open(&wal_dir, 1)
        .expect("reader")
        .map(|entry| entry.expect("entry"))
        .collect();
    assert_eq!(entries.len(), 10);
    for (pid, entry) in (0..10u32).zip(&entries) {
        assert_eq!(entry.sequence, u64::from(pid) + 1);
        assert_eq!(entry.kind, kind(pid));
        assert_eq!(entry.event, redacted(pid));
    }
    for file in std::fs::read_dir(&wal_dir).expect("list") {
        let bytes = std::fs::read(file.expect("entry").path()).expect("read");
        assert!(
            !bytes.windows(7).any(|window| window == b"hunter2")
                && !bytes.windows(12).any(|window| window == b"--token=abc\0"),
            "a secret reached the disk"
        );
    }
}

/// The broker is killed and another one starts on the same state: every event arrives
/// once, across both, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_then_up_delivers_every_event_once() {
    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let state = dir.path().join("state");
    let mut first = PrintingBroker::start(&socket, Some(&state));
    let connector = EventBusConnector::with_config(config(
        &dir.path().join("wal"),
        &socket,
        procmond_wal::wal::BackendChoice::Auto,
    ))
    .await
    .expect("start");
    connector.connect().await.expect("connect");
    let mut published = Vec::new();
    for pid in 0..20u32 {
        published.push(
            connector
                .publish(event(pid), kind(pid))
                .await
                .expect("publish"),
        );
    }
    guarded(connector.acknowledged(20)).await.expect("acked");
    // Everything the first broker accepted was printed before it acknowledged; read it all
    // before the crash.
    let before: Vec<u64> = (0..20)
        .map(|_| first.next_line()["sequence"].as_u64().expect("seq"))
        .collect();
    first.kill();
    for pid in 20..40u32 {
        published.push(
            connector
                .publish(event(pid), kind(pid))
                .await
                .expect("durable while down"),
        );
    }
    assert!(connector.stats().acked_through < 40);
    let second = PrintingBroker::start(&socket, Some(&state));
    // No call from the test: the link reconnects in the background.
    guarded(connector.acknowledged(40))
        .await
        .expect("acked by the second broker");
    let stats = connector.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    connector.shutdown().await.expect("shutdown");
    let after = printed_sequences(&second.finish(20));
    let mut all = before.clone();
    all.extend(&after);
    assert_eq!(
        all, published,
        "every event once, in order (first {before:?}, second {after:?})"
    );
}

/// A small buffer and no broker: events spill to the WAL; memory stays bounded; when the
/// broker comes, every event still arrives, in order, read back from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_overflow_spills_to_the_wal_and_everything_arrives() {
    for backend in BACKENDS {
        let dir = short_tempdir();
        let socket = dir.path().join("broker.sock");
        let limit = 4096;
        let connector = EventBusConnector::with_config(
            config(&dir.path().join("wal"), &socket, backend).with_buffer_max_bytes(limit),
        )
        .await
        .expect("start");
        connector.connect().await.expect("no broker yet is fine");
        let events: Vec<_> = (0..300u32).map(|pid| (event(pid), kind(pid))).collect();
        let sequences = connector.publish_batch(events).await.expect("durable");
        assert_eq!(sequences.len(), 300);
        let stats = connector.stats();
        assert!(stats.buffer_bytes <= limit as u64, "{stats:?}");
        assert!(stats.spilled_events > 250, "{stats:?}");
        assert_eq!(stats.buffered_events, 300);
        assert!(connector.buffer_usage_percent() == 100);
        let broker = PrintingBroker::start(&socket, None);
        guarded(connector.acknowledged(300))
            .await
            .expect("all acknowledged");
        let stats = connector.stats();
        assert!(stats.read_back_from_wal >= 250, "{stats:?}");
        assert_eq!(stats.spilled_events, 0);
        assert_eq!(stats.buffered_events, 0);
        connector.shutdown().await.expect("shutdown");
        let lines = broker.finish(300);
        assert_eq!(printed_sequences(&lines), sequences, "{backend:?}");
        for (pid, line) in (0..300u32).zip(&lines) {
            let event: procmond_wal::ProcessEvent =
                serde_json::from_value(line["event"].clone()).expect("event");
            assert_eq!(event, redacted(pid));
        }
    }
}

/// Acknowledged events are checkpointed and the sealed segments holding them deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_disappear_after_acks() {
    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let wal_dir = dir.path().join("wal");
    let _broker = broker_support::BrokerProcess::start(&socket, &[]);
    let mut config = config(&wal_dir, &socket, procmond_wal::wal::BackendChoice::Auto);
    config.wal.segment_max_bytes = 64 * 1024;
    let connector = EventBusConnector::with_config(config).await.expect("start");
    connector.connect().await.expect("connect");
    let mut last = 0;
    for chunk in 0..10u32 {
        let events = (0..200u32)
            .map(|i| (event(chunk * 200 + i), kind(i)))
            .collect();
        last = *connector
            .publish_batch(events)
            .await
            .expect("durable")
            .last()
            .expect("some");
    }
    let segment_files = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .expect("list")
            .filter(|entry| {
                let name = entry.as_ref().expect("entry").file_name();
                name.to_string_lossy().ends_with(".wal")
            })
            .count()
    };
    // Enough record bytes for several 64 KiB segments (some may be deleted already).
    assert!(connector.stats().wal.record_bytes > 5 * 64 * 1024);
    guarded(connector.acknowledged(last)).await.expect("acked");
    connector.shutdown().await.expect("shutdown");
    let stats = connector.stats();
    assert!(stats.checkpoints_written >= 1);
    assert!(stats.wal.segments_deleted >= 4, "{:?}", stats.wal);
    let names: Vec<_> = std::fs::read_dir(&wal_dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    // Left: the segment holding the newest checkpoint (always kept), the active and the
    // prepared one, and at most one acknowledged segment whose deletion was still pending
    // when the log closed.
    assert!(
        segment_files(&wal_dir) <= 4,
        "acknowledged segments were deleted: {names:?} {:?}",
        stats.wal
    );
    let reopened = procmond_wal::wal::recovery::read_dir(&wal_dir).expect("read");
    assert_eq!(reopened.acked_through, last);
    assert_eq!(
        procmond_wal::wal::WalReader::open(&wal_dir, last + 1)
            .expect("reader")
            .count(),
        0
    );
}

/// A publishing process is killed with SIGKILL mid-stream; the restarted connector
/// delivers exactly what the broker lacks: every durable event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_a_restart_delivers_exactly_what_the_broker_lacks() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let wal_dir = dir.path().join("wal");
    let broker = PrintingBroker::start(&socket, Some(&dir.path().join("state")));
    let mut child = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["connector-load", "--events", "1000000", "--publishers", "4"])
        .args([
            "--print-durable",
            "--no-wait-acked",
            "--backend",
            "portable",
        ])
        .arg("--wal")
        .arg(&wal_dir)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the publishing process");
    let stdout = child.stdout.take().expect("stdout");
    let mut durable = Vec::new();
    for line in BufReader::new(stdout).lines().take(300) {
        let line = line.expect("a line");
        let sequence: u64 = line
            .strip_prefix("durable ")
            .and_then(|number| number.parse().ok())
            .expect("durable SEQ");
        durable.push(sequence);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_eq!(durable.len(), 300);
    let report = procmond_wal::wal::recovery::read_dir(&wal_dir).expect("read the WAL");
    let last = report.last_sequence.expect("events");
    assert!(
        durable.iter().all(|sequence| *sequence <= last),
        "every reported event is durable"
    );

    let connector = EventBusConnector::with_config(config(
        &wal_dir,
        &socket,
        procmond_wal::wal::BackendChoice::Auto,
    ))
    .await
    .expect("restart");
    connector.connect().await.expect("connect");
    guarded(connector.acknowledged(last))
        .await
        .expect("all delivered");
    let publisher_id = connector.publisher_id().to_owned();
    connector.shutdown().await.expect("shutdown");
    let lines = broker.finish(last as usize);
    assert_eq!(printed_sequences(&lines), (1..=last).collect::<Vec<u64>>());
    assert!(
        lines
            .iter()
            .all(|line| line["publisher_id"] == publisher_id.as_str())
    );
}

/// Dropping the last handle (no `shutdown`) still drains, writes the final checkpoint and
/// closes the WAL; another handle keeps working until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_drains_and_closes() {
    use std::os::fd::AsRawFd;

    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let wal_dir = dir.path().join("wal");
    let broker = PrintingBroker::start(&socket, None);
    let connector = EventBusConnector::with_config(config(
        &wal_dir,
        &socket,
        procmond_wal::wal::BackendChoice::Auto,
    ))
    .await
    .expect("start");
    connector.connect().await.expect("connect");
    let events = (0..50u32).map(|pid| (event(pid), kind(pid))).collect();
    let mut sequences = connector.publish_batch(events).await.expect("durable");
    let other = connector.clone();
    drop(connector);
    sequences.push(
        other
            .publish(event(50), kind(50))
            .await
            .expect("still open"),
    );
    drop(other);
    // The ring thread holds the directory lock until it ends: wait for it to be released.
    let lock_path = wal_dir.join("procmond-wal.lock");
    guarded(tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&lock_path).expect("open the lock file");
        // SAFETY: the descriptor is open for the duration of the call.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    }))
    .await
    .expect("lock released");
    let report = procmond_wal::wal::recovery::read_dir(&wal_dir).expect("read");
    assert_eq!(report.acked_through, 51, "final checkpoint");
    assert_eq!(printed_sequences(&broker.finish(51)), sequences);
}

/// A publish dropped while it waits for durability never loses its hand-over: the link
/// sends in sequence order, so one lost event would stall every later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_publishes_never_stall_delivery() {
    let dir = short_tempdir();
    let socket = dir.path().join("broker.sock");
    let broker = PrintingBroker::start(&socket, None);
    let connector = EventBusConnector::with_config(config(
        &dir.path().join("wal"),
        &socket,
        procmond_wal::wal::BackendChoice::Auto,
    ))
    .await
    .expect("start");
    connector.connect().await.expect("connect");
    // Each publish is polled once, which enqueues it in the WAL and hands it over, and then
    // dropped while it waits for durability: the caller gave up, the event is still durable.
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    let mut dropped = 0;
    for pid in 0..400u32 {
        // Unconstrained: the runtime's cooperative budget must not make the poll yield early.
        let mut publish = Box::pin(tokio::task::unconstrained(
            connector.publish(event(pid), kind(pid)),
        ));
        match publish.as_mut().poll(&mut context) {
            std::task::Poll::Pending => dropped += 1,
            // Only if this thread was descheduled long enough for the event to be synced.
            std::task::Poll::Ready(result) => {
                result.expect("durable");
            }
        }
        drop(publish);
    }
    assert!(dropped > 0, "some publishes were dropped while waiting");
    let last = connector
        .publish(event(400), kind(400))
        .await
        .expect("durable");
    assert_eq!(last, 401, "the dropped publishes were enqueued");
    guarded(connector.acknowledged(last))
        .await
        .expect("nothing stalled");
    connector.shutdown().await.expect("shutdown");
    let printed = printed_sequences(&broker.finish(last as usize));
    assert_eq!(printed, (1..=last).collect::<Vec<u64>>());
}
