//! Broker integration tests for our extension: welcome and ack values, de-duplication by
//! (publisher id, sequence) across a publisher reconnect and across a broker restart with
//! `--state-dir`, and subscribers resuming from their positions. The broker runs as a child
//! process, so its restart (and its SIGKILL) is real.

mod broker_support;

use broker_support::{BrokerProcess, GUARD, event, short_tempdir};
use procmond_wal::EventKind;
use procmond_wal::broker::client::{Positions, TestClient};
use procmond_wal::wire::PROTOCOL_VERSION;

async fn sequences(client: &mut TestClient, count: usize) -> Vec<u64> {
    let mut received = Vec::new();
    for _ in 0..count {
        received.push(client.next_event().await.expect("event").sequence);
    }
    received
}

/// Publishes one event and returns the broker's cumulative mark from the first ack that
/// reaches `wait_for`.
async fn publish_then_mark(
    publisher: &mut TestClient,
    sequence: u64,
    kind: EventKind,
    wait_for: u64,
) -> u64 {
    publisher
        .publish(sequence, kind, &event(1))
        .await
        .expect("publish");
    publisher
        .wait_for_ack(wait_for)
        .await
        .expect("ack")
        .highest_sequence
}

#[tokio::test]
async fn welcome_and_acks_report_the_high_water_mark() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        let welcome = publisher.hello("acks").await.expect("welcome");
        assert_eq!(welcome.protocol_version, PROTOCOL_VERSION);
        assert_eq!(welcome.highest_sequence, None);
        for sequence in 100..=104 {
            publisher
                .publish(sequence, EventKind::Start, &event(1))
                .await
                .expect("publish");
        }
        assert_eq!(
            publisher
                .wait_for_ack(104)
                .await
                .expect("ack")
                .highest_sequence,
            104
        );
        // A gap (e.g. a WAL record skipped as corrupt) is accepted; the mark moves past it.
        assert_eq!(
            publish_then_mark(&mut publisher, 110, EventKind::Stop, 110).await,
            110
        );
        // A duplicate is still acknowledged, with the unchanged mark.
        assert_eq!(
            publish_then_mark(&mut publisher, 103, EventKind::Start, 110).await,
            110
        );

        // Another publisher id starts from nothing; the same id resumes.
        let mut other = TestClient::connect(&broker.socket).await.expect("connect");
        assert_eq!(
            other
                .hello("other")
                .await
                .expect("welcome")
                .highest_sequence,
            None
        );
        let mut again = TestClient::connect(&broker.socket).await.expect("connect");
        assert_eq!(
            again.hello("acks").await.expect("welcome").highest_sequence,
            Some(110)
        );
    })
    .await
    .expect("test finished within the guard");
}

#[tokio::test]
async fn a_replay_after_reconnect_is_delivered_once() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut subscriber = TestClient::connect(&broker.socket).await.expect("connect");
        subscriber
            .subscribe(&["events.#"])
            .await
            .expect("subscribe");

        let mut first = TestClient::connect(&broker.socket).await.expect("connect");
        first.hello("replayer").await.expect("welcome");
        for sequence in 1..=3 {
            first
                .publish(sequence, EventKind::Start, &event(1))
                .await
                .expect("publish");
        }
        first.wait_for_ack(3).await.expect("ack");
        drop(first);

        let mut second = TestClient::connect(&broker.socket).await.expect("connect");
        assert_eq!(
            second
                .hello("replayer")
                .await
                .expect("welcome")
                .highest_sequence,
            Some(3)
        );
        // Replay more than needed, as a publisher that lost its ack would.
        for sequence in 2..=5 {
            second
                .publish(sequence, EventKind::Start, &event(1))
                .await
                .expect("publish");
        }
        assert_eq!(
            second.wait_for_ack(5).await.expect("ack").highest_sequence,
            5
        );
        // Order is preserved, so a duplicate of 2 or 3 would show up before 4.
        assert_eq!(sequences(&mut subscriber, 5).await, [1, 2, 3, 4, 5]);
    })
    .await
    .expect("test finished within the guard");
}

#[tokio::test]
async fn state_dir_keeps_de_duplication_across_a_broker_restart() {
    let dir = short_tempdir();
    let socket = dir.path().join("b.sock");
    let state = dir.path().join("state");
    let state_arg = state.to_str().expect("utf-8 path");
    let mut broker = BrokerProcess::start(&socket, &["--state-dir", state_arg]);
    tokio::time::timeout(GUARD, async {
        let mut publisher = TestClient::connect(&socket).await.expect("connect");
        assert_eq!(
            publisher
                .hello("durable")
                .await
                .expect("welcome")
                .highest_sequence,
            None
        );
        for sequence in 1..=5 {
            publisher
                .publish(sequence, EventKind::Modify, &event(2))
                .await
                .expect("publish");
        }
        publisher.wait_for_ack(5).await.expect("ack");
    })
    .await
    .expect("first broker finished within the guard");
    // A crash: SIGKILL leaves the socket file behind, which the next broker must replace.
    broker.kill();
    assert!(socket.exists(), "a killed broker leaves its socket");
    let broker = BrokerProcess::start(&socket, &["--state-dir", state_arg]);
    tokio::time::timeout(GUARD, async {
        let mut subscriber = TestClient::connect(&broker.socket).await.expect("connect");
        subscriber
            .subscribe(&["events.process.modify"])
            .await
            .expect("subscribe");
        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        assert_eq!(
            publisher
                .hello("durable")
                .await
                .expect("welcome")
                .highest_sequence,
            Some(5)
        );
        for sequence in 1..=7 {
            publisher
                .publish(sequence, EventKind::Modify, &event(2))
                .await
                .expect("publish");
        }
        assert_eq!(
            publisher
                .wait_for_ack(7)
                .await
                .expect("ack")
                .highest_sequence,
            7
        );
        assert_eq!(sequences(&mut subscriber, 2).await, [6, 7]);
    })
    .await
    .expect("second broker finished within the guard");
}

#[tokio::test]
async fn without_state_dir_a_restarted_broker_starts_empty() {
    let dir = short_tempdir();
    let socket = dir.path().join("b.sock");
    let mut broker = BrokerProcess::start(&socket, &[]);
    tokio::time::timeout(GUARD, async {
        let mut publisher = TestClient::connect(&socket).await.expect("connect");
        publisher.hello("volatile").await.expect("welcome");
        publisher
            .publish(9, EventKind::Start, &event(3))
            .await
            .expect("publish");
        publisher.wait_for_ack(9).await.expect("ack");
    })
    .await
    .expect("first broker finished within the guard");
    broker.kill();
    let broker = BrokerProcess::start(&socket, &[]);
    tokio::time::timeout(GUARD, async {
        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        assert_eq!(
            publisher
                .hello("volatile")
                .await
                .expect("welcome")
                .highest_sequence,
            None
        );
    })
    .await
    .expect("second broker finished within the guard");
}

/// Everything the publisher's ack covers is in the subscribers' sockets, even if the broker
/// is killed right after acking; a subscriber that resubscribes with its positions is sent
/// only what it does not hold.
#[tokio::test]
async fn acked_events_outlive_a_killed_broker_and_resumed_subscribers_get_only_newer_ones() {
    let dir = short_tempdir();
    let state = dir.path().join("state");
    let state_arg = state.to_str().expect("utf-8");
    let mut broker = BrokerProcess::start(&dir.path().join("b.sock"), &["--state-dir", state_arg]);
    tokio::time::timeout(GUARD, async {
        let mut fresh = TestClient::connect(&broker.socket).await.expect("connect");
        fresh.subscribe(&["events.#"]).await.expect("subscribe");
        let mut resumed = TestClient::connect(&broker.socket).await.expect("connect");
        let mut positions = Positions::new();
        positions.insert("resume-test", 3);
        // Another publisher's position does not hold back this one's events.
        positions.insert("someone-else", 100);
        resumed
            .subscribe_from(&["events.#"], &positions)
            .await
            .expect("subscribe from positions");
        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        publisher.hello("resume-test").await.expect("welcome");
        for sequence in 1..=6 {
            publisher
                .publish(sequence, EventKind::Start, &event(sequence as u32))
                .await
                .expect("publish");
        }
        publisher.wait_for_ack(6).await.expect("ack");
        broker.kill();
        let drain = |client: TestClient| async move {
            let mut client = client;
            let mut got = Vec::new();
            while let Some(message) = client.next_event_or_end().await.expect("read") {
                got.push(message.sequence);
            }
            got
        };
        assert_eq!(drain(fresh).await, [1, 2, 3, 4, 5, 6]);
        assert_eq!(drain(resumed).await, [4, 5, 6]);
    })
    .await
    .expect("test finished within the guard");
}
