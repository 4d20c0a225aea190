//! The broker as a library, started in-process with small limits: a slow subscriber is
//! disconnected (and counted) without stalling publishers, a stuck one without holding back
//! acks for longer than the write timeout, the connection cap closes extra connections, and
//! shutdown removes the socket.

mod broker_support;

use broker_support::{GUARD, event, short_tempdir};
use procmond_wal::EventKind;
use procmond_wal::broker::client::TestClient;
use procmond_wal::broker::{Broker, BrokerConfig, BrokerError, BrokerHandle};

/// A subscriber to every event, and a publisher that said hello as `publisher_id`.
async fn subscriber_and_publisher(
    broker: &BrokerHandle,
    publisher_id: &str,
) -> (TestClient, TestClient) {
    let mut subscriber = TestClient::connect(broker.socket_path())
        .await
        .expect("connect");
    subscriber
        .subscribe(&["events.#"])
        .await
        .expect("subscribe");
    let mut publisher = TestClient::connect(broker.socket_path())
        .await
        .expect("connect");
    publisher.hello(publisher_id).await.expect("welcome");
    (subscriber, publisher)
}

/// Publishes sequences `1..=count` of a 100 KiB event.
async fn publish_big_events(publisher: &mut TestClient, count: u64) {
    let mut big = event(1);
    big.command_line = vec!["y".repeat(100 * 1024)];
    for sequence in 1..=count {
        publisher
            .publish(sequence, EventKind::Start, &big)
            .await
            .expect("publish");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_disconnected_without_stalling_publishers() {
    let dir = short_tempdir();
    let mut config = BrokerConfig::new(dir.path().join("b.sock"));
    config.subscriber_queue_max_messages = 4;
    let broker = Broker::start(config).await.expect("start");
    tokio::time::timeout(GUARD, async {
        let (mut slow, mut publisher) = subscriber_and_publisher(&broker, "fast-publisher").await;
        // 100 KiB events: the slow subscriber's socket buffer and 4-frame queue hold only a
        // few of 200, whatever the kernel's buffer sizes.
        publish_big_events(&mut publisher, 200).await;
        // Every event was accepted although the subscriber never read.
        assert_eq!(
            publisher
                .wait_for_ack(200)
                .await
                .expect("ack")
                .highest_sequence,
            200
        );
        slow.wait_until_closed()
            .await
            .expect("slow subscriber disconnected");
    })
    .await
    .expect("test finished within the guard");
    let stats = broker.stats();
    assert_eq!(stats.subscribers_disconnected_slow, 1);
    assert_eq!(stats.events_received, 200);
    assert!(stats.deliveries < 200, "{stats:?}");
    broker.shutdown().await;
}

/// Acks wait until subscribers' sockets hold the events; a subscriber that never reads,
/// with room left in its queue, is cut off after the write timeout so acks resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_is_cut_off_so_acks_resume() {
    let dir = short_tempdir();
    let mut config = BrokerConfig::new(dir.path().join("b.sock"));
    config.subscriber_write_timeout_ms = 200;
    let broker = Broker::start(config).await.expect("start");
    tokio::time::timeout(GUARD, async {
        let (mut stuck, mut publisher) = subscriber_and_publisher(&broker, "stuck-test").await;
        // 2 MiB of events: more than any socket buffer, well inside the 16 MiB queue.
        publish_big_events(&mut publisher, 20).await;
        assert_eq!(
            publisher
                .wait_for_ack(20)
                .await
                .expect("ack")
                .highest_sequence,
            20
        );
        stuck
            .wait_until_closed()
            .await
            .expect("stuck subscriber disconnected");
    })
    .await
    .expect("test finished within the guard");
    let stats = broker.stats();
    assert_eq!(stats.subscribers_disconnected_slow, 1);
    assert_eq!(stats.deliveries, 20, "queued, not overflowed: {stats:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let dir = short_tempdir();
    let mut config = BrokerConfig::new(dir.path().join("b.sock"));
    config.max_connections = 2;
    let broker = Broker::start(config).await.expect("start");
    tokio::time::timeout(GUARD, async {
        let mut first = TestClient::connect(broker.socket_path())
            .await
            .expect("connect");
        let mut second = TestClient::connect(broker.socket_path())
            .await
            .expect("connect");
        first.ping().await.expect("first served");
        second.ping().await.expect("second served");
        let mut third = TestClient::connect(broker.socket_path())
            .await
            .expect("connect");
        third.wait_until_closed().await.expect("third closed");
        drop(first);
        // The slot frees once the broker has seen the first connection end; until then a
        // new connection may be refused too, so retry until one is served.
        loop {
            let mut again = TestClient::connect(broker.socket_path())
                .await
                .expect("connect");
            if again.ping().await.is_ok() {
                break;
            }
        }
    })
    .await
    .expect("test finished within the guard");
    assert!(broker.stats().connections_refused >= 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn shutdown_removes_the_socket_and_bad_config_is_refused() {
    let dir = short_tempdir();
    let socket = dir.path().join("b.sock");
    let broker = Broker::start(BrokerConfig::new(&socket))
        .await
        .expect("start");
    assert_eq!(broker.socket_path(), socket);
    assert!(socket.exists());
    broker.shutdown().await;
    assert!(!socket.exists());

    let mut config = BrokerConfig::new(&socket);
    config.max_frame_bytes = 2 << 20;
    assert!(matches!(
        Broker::start(config).await,
        Err(BrokerError::InvalidConfig {
            field: "max_frame_bytes",
            ..
        })
    ));
    assert!(!socket.exists(), "nothing bound for a bad configuration");
}
