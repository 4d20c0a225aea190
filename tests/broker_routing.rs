//! Broker integration tests over a real socket, the broker running as a child process:
//! publish→subscribe routing with wildcards, health frames, upstream (no-hello) publishers,
//! `--print` output, and SIGTERM cleanup.

mod broker_support;

use broker_support::{BrokerProcess, GUARD, event, short_tempdir};
use procmond_wal::EventKind;
use procmond_wal::broker::client::TestClient;
use procmond_wal::wire::payload::event_message;
use procmond_wal::wire::{Body, CollectionEvent, WireTime};

async fn received(client: &mut TestClient) -> (String, u64) {
    let message = client.next_event().await.expect("an event");
    (message.topic, message.sequence)
}

#[tokio::test]
async fn events_reach_matching_subscribers_in_order() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut all = TestClient::connect(&broker.socket).await.expect("connect");
        let mut stops = TestClient::connect(&broker.socket).await.expect("connect");
        let mut kinds = TestClient::connect(&broker.socket).await.expect("connect");
        let subscribed = all.subscribe(&["events.#"]).await.expect("subscribe");
        assert_eq!(subscribed.patterns, ["events.#"]);
        stops
            .subscribe(&["events.process.stop"])
            .await
            .expect("subscribe");
        kinds
            .subscribe(&["events.+.start", "events.+.modify"])
            .await
            .expect("subscribe");

        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        publisher.hello("routing-test").await.expect("welcome");
        let sent = [
            (1, EventKind::Start),
            (2, EventKind::Stop),
            (3, EventKind::Modify),
            (4, EventKind::Stop),
            (5, EventKind::Start),
        ];
        for (sequence, kind) in sent {
            publisher
                .publish(sequence, kind, &event(sequence as u32))
                .await
                .expect("publish");
        }
        publisher.wait_for_ack(5).await.expect("ack");

        for (sequence, kind) in sent {
            assert_eq!(
                received(&mut all).await,
                (kind.topic().to_owned(), sequence)
            );
        }
        // Order shows nothing else arrived: a start or modify would come before sequence 4.
        assert_eq!(
            received(&mut stops).await,
            ("events.process.stop".to_owned(), 2)
        );
        assert_eq!(
            received(&mut stops).await,
            ("events.process.stop".to_owned(), 4)
        );
        assert_eq!(
            received(&mut kinds).await,
            ("events.process.start".to_owned(), 1)
        );
        assert_eq!(
            received(&mut kinds).await,
            ("events.process.modify".to_owned(), 3)
        );
        assert_eq!(
            received(&mut kinds).await,
            ("events.process.start".to_owned(), 5)
        );

        // The delivered payload decodes back to the exact event.
        let mut late = TestClient::connect(&broker.socket).await.expect("connect");
        late.subscribe(&["events.process.modify"])
            .await
            .expect("subscribe");
        publisher
            .publish(6, EventKind::Modify, &event(66))
            .await
            .expect("publish");
        let message = late.next_event().await.expect("event");
        let payload = CollectionEvent::decode(&message.payload).expect("payload");
        assert_eq!(
            payload.to_process_event().ok(),
            Some((EventKind::Modify, event(66)))
        );
    })
    .await
    .expect("test finished within the guard");
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut client = TestClient::connect(&broker.socket).await.expect("connect");
        client
            .send_raw(b"\x04\x00\x00\x00PING")
            .await
            .expect("send PING");
        assert_eq!(client.next_body().await.expect("read"), Some(Body::Pong));
        client.ping().await.expect("second PING");
    })
    .await
    .expect("test finished within the guard");
}

#[tokio::test]
async fn upstream_publishers_without_hello_are_routed_without_dedup_or_acks() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &[]);
    tokio::time::timeout(GUARD, async {
        let mut subscriber = TestClient::connect(&broker.socket).await.expect("connect");
        subscriber
            .subscribe(&["events.process.+"])
            .await
            .expect("subscribe");
        for connection in 0..2u32 {
            let mut upstream = TestClient::connect(&broker.socket).await.expect("connect");
            // Upstream's sequence restarts at 0 on every connection.
            let message = event_message(
                "upstream",
                0,
                EventKind::Start,
                &event(connection),
                WireTime::now(),
            )
            .expect("encode");
            upstream.send_message(&message).await.expect("publish");
            // Frames are handled in order, so an ack would arrive before the PONG.
            upstream
                .send_raw(b"\x04\x00\x00\x00PING")
                .await
                .expect("send PING");
            assert_eq!(upstream.next_body().await.expect("read"), Some(Body::Pong));
        }
        for connection in 0..2u32 {
            let message = subscriber.next_event().await.expect("event");
            assert_eq!(message.sequence, 0);
            let (_, delivered) = CollectionEvent::decode(&message.payload)
                .and_then(|payload| payload.to_process_event())
                .expect("our payload");
            assert_eq!(delivered.pid, connection);
        }
    })
    .await
    .expect("test finished within the guard");
}

#[tokio::test]
async fn print_writes_one_json_line_per_event() {
    let dir = short_tempdir();
    let broker = BrokerProcess::start(&dir.path().join("b.sock"), &["--print"]);
    tokio::time::timeout(GUARD, async {
        let mut publisher = TestClient::connect(&broker.socket).await.expect("connect");
        publisher.hello("printer-test").await.expect("welcome");
        publisher
            .publish(10, EventKind::Stop, &event(4242))
            .await
            .expect("publish");
        publisher.wait_for_ack(10).await.expect("ack");
    })
    .await
    .expect("test finished within the guard");
    let line = broker.next_stdout_line();
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(json["topic"], "events.process.stop");
    assert_eq!(json["sequence"], 10);
    assert_eq!(json["publisher_id"], "printer-test");
    assert_eq!(json["kind"], "Stop");
    assert_eq!(json["event"]["pid"], 4242);
    assert_eq!(json["event"]["command_line"][2], "two words");
}

#[tokio::test]
async fn sigterm_stops_the_broker_and_removes_the_socket() {
    let dir = short_tempdir();
    let socket = dir.path().join("b.sock");
    let mut broker = BrokerProcess::start(&socket, &[]);
    assert!(socket.exists());
    let status = broker.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(!socket.exists(), "socket removed on shutdown");
}
