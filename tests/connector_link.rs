//! The link against scripted peers on real sockets: a legacy broker that never answers
//! hello, hostile brokers, and backpressure driven by acknowledgements one at a time.

#[path = "broker_support/mod.rs"]
mod broker_support;
#[path = "connector_support/mod.rs"]
mod connector_support;

use std::path::Path;
use std::time::Duration;

use broker_support::short_tempdir;
use connector_support::*;
use procmond_wal::event_bus_connector::LinkState;
use procmond_wal::wal::BackendChoice;
use procmond_wal::wire::control::ControlPayload;
use procmond_wal::wire::frame::{FRAME_LENGTH_BYTES, body_length};
use procmond_wal::wire::{
    Ack, Body, Hello, MAX_FRAME_BODY_BYTES, Message, MessageType, PROTOCOL_VERSION, Welcome,
    WireTime,
};
use procmond_wal::{BackpressureSignal, EventBusConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// One accepted connection of a scripted broker.
struct Peer {
    stream: UnixStream,
}

impl Peer {
    async fn accept(listener: &UnixListener) -> Peer {
        let (stream, _) = guarded(listener.accept()).await.expect("accept");
        Peer { stream }
    }

    /// The next frame body; `None` when the connector closed the connection.
    async fn next_body(&mut self) -> Option<Body> {
        let mut prefix = [0u8; FRAME_LENGTH_BYTES];
        match guarded(self.stream.read_exact(&mut prefix)).await {
            Ok(_) => {}
            Err(_) => return None,
        }
        let length = body_length(prefix, MAX_FRAME_BODY_BYTES).expect("connector frames fit");
        let mut body = vec![0u8; length];
        guarded(self.stream.read_exact(&mut body))
            .await
            .expect("a whole frame");
        Some(Body::decode(&body).expect("connector frames decode"))
    }

    async fn next_message(&mut self) -> Message {
        loop {
            match self.next_body().await.expect("connection open") {
                Body::Message(message) => return message,
                Body::Pong | Body::Ping => {}
            }
        }
    }

    async fn expect_hello(&mut self) -> Hello {
        let message = self.next_message().await;
        Hello::from_message(&message).expect("hello first")
    }

    async fn next_event(&mut self) -> (u64, procmond_wal::EventKind, procmond_wal::ProcessEvent) {
        let message = self.next_message().await;
        assert_eq!(message.message_type, MessageType::Event);
        decode(&message)
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The connector may already have closed on earlier bytes; that is what some tests
        // want, and the next read tells.
        let _ = self.stream.write_all(bytes).await;
    }

    async fn send_control<T: ControlPayload>(&mut self, payload: &T) {
        let frame = payload
            .to_message("scripted-broker", 1, WireTime::now())
            .expect("encode")
            .encode_frame()
            .expect("frame");
        self.send(&frame).await;
    }

    /// Reads until the connector closes the connection.
    async fn expect_closed(&mut self) {
        while self.next_body().await.is_some() {}
    }
}

fn scripted_config(dir: &Path, socket: &Path) -> procmond_wal::ConnectorConfig {
    config(&dir.join("wal"), socket, BackendChoice::Auto)
        .with_hello_timeout(Duration::from_secs(60))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_broker_that_never_answers_hello_still_gets_decodable_frames() {
    for backend in BACKENDS {
        let dir = short_tempdir();
        let socket = dir.path().join("legacy.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let connector = EventBusConnector::with_config(
            config(&dir.path().join("wal"), &socket, backend)
                .with_hello_timeout(Duration::from_millis(100)),
        )
        .await
        .expect("start");
        connector.connect().await.expect("connect");
        let mut peer = Peer::accept(&listener).await;
        let hello = peer.expect_hello().await;
        assert_eq!(hello.publisher_id, connector.publisher_id());
        assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
        // A legacy peer's health check must be answered.
        peer.send(&Body::Ping.encode_frame().expect("ping")).await;
        assert_eq!(peer.next_body().await, Some(Body::Pong));
        for pid in 0..5u32 {
            assert_eq!(
                connector
                    .publish(event(pid), kind(pid))
                    .await
                    .expect("durable"),
                u64::from(pid) + 1
            );
        }
        for pid in 0..5u32 {
            let (sequence, got_kind, got) = peer.next_event().await;
            assert_eq!(
                (sequence, got_kind, got),
                (u64::from(pid) + 1, kind(pid), redacted(pid))
            );
        }
        // Written to the socket counts as delivered.
        guarded(connector.acknowledged(5)).await.expect("delivered");
        let stats = connector.stats();
        assert!(stats.legacy_broker, "{backend:?}");
        assert_eq!(stats.link_state, LinkState::ConnectedLegacy);
        connector.shutdown().await.expect("shutdown");
        peer.expect_closed().await;
        // The final checkpoint records the legacy deliveries.
        let report = procmond_wal::wal::recovery::read_dir(&dir.path().join("wal")).expect("read");
        assert_eq!(report.acked_through, 5);
    }
}

/// Runs one hostile script on the first connection and checks that the connector closes
/// it, reconnects, and that the watermark is what it should be afterwards.
async fn hostile(script: impl AsyncFnOnce(&mut Peer, &EventBusConnector), expected_acked: u64) {
    let dir = short_tempdir();
    let socket = dir.path().join("hostile.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let connector = EventBusConnector::with_config(scripted_config(dir.path(), &socket))
        .await
        .expect("start");
    connector.connect().await.expect("connect");
    let mut first = Peer::accept(&listener).await;
    first.expect_hello().await;
    script(&mut first, &connector).await;
    first.expect_closed().await;
    // It reconnects on its own and starts again with hello.
    let mut second = Peer::accept(&listener).await;
    second.expect_hello().await;
    let stats = connector.stats();
    assert_eq!(stats.acked_through, expected_acked, "{stats:?}");
    assert!(stats.protocol_errors >= 1, "{stats:?}");
    // A well-behaved broker on the new connection gets everything not acknowledged.
    second
        .send_control(&Welcome {
            protocol_version: 1,
            highest_sequence: None,
        })
        .await;
    let durable = connector.stats().wal.durable_sequence;
    for expected in expected_acked + 1..=durable {
        let (sequence, _, _) = second.next_event().await;
        assert_eq!(sequence, expected);
    }
    if durable > expected_acked {
        second
            .send_control(&Ack {
                highest_sequence: durable,
            })
            .await;
        guarded(connector.acknowledged(durable))
            .await
            .expect("acked");
    }
    connector.shutdown().await.expect("shutdown");
}

async fn publish_three(connector: &EventBusConnector) {
    for pid in 0..3u32 {
        connector
            .publish(event(pid), kind(pid))
            .await
            .expect("durable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_broker_closes_the_connection() {
    hostile(
        async |peer, _| peer.send(b"\x05\x00\x00\x00\x01\x02\x03\x04\x05").await,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_from_the_broker_closes_the_connection() {
    hostile(
        async |peer, _| peer.send(&[0xff, 0xff, 0xff, 0xff, 0]).await,
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_for_a_sequence_never_sent_does_not_move_the_watermark() {
    hostile(
        async |peer, connector| {
            peer.send_control(&Welcome {
                protocol_version: 1,
                highest_sequence: None,
            })
            .await;
            publish_three(connector).await;
            for expected in 1..=3 {
                assert_eq!(peer.next_event().await.0, expected);
            }
            peer.send_control(&Ack {
                highest_sequence: 1000,
            })
            .await;
        },
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_going_backwards_closes_the_connection() {
    hostile(
        async |peer, connector| {
            peer.send_control(&Welcome {
                protocol_version: 1,
                highest_sequence: None,
            })
            .await;
            publish_three(connector).await;
            for expected in 1..=3 {
                assert_eq!(peer.next_event().await.0, expected);
            }
            peer.send_control(&Ack {
                highest_sequence: 3,
            })
            .await;
            guarded(connector.acknowledged(3)).await.expect("acked");
            peer.send_control(&Ack {
                highest_sequence: 2,
            })
            .await;
        },
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_beyond_anything_durable_is_refused() {
    hostile(
        async |peer, connector| {
            publish_three(connector).await;
            peer.send_control(&Welcome {
                protocol_version: 1,
                highest_sequence: Some(1_000_000),
            })
            .await;
        },
        0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_before_the_welcome_and_a_second_welcome_are_refused() {
    hostile(
        async |peer, _| {
            peer.send_control(&Ack {
                highest_sequence: 0,
            })
            .await
        },
        0,
    )
    .await;
    hostile(
        async |peer, _| {
            let welcome = Welcome {
                protocol_version: 1,
                highest_sequence: None,
            };
            peer.send_control(&welcome).await;
            peer.send_control(&welcome).await;
        },
        0,
    )
    .await;
}

/// Activation at 70 % as events are published with nothing acknowledged; release at 50 %
/// as acknowledgements arrive one at a time; exactly one signal per crossing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_activates_at_70_and_releases_at_50_percent_once_per_crossing() {
    let dir = short_tempdir();
    let socket = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    // Ten frames of `event(pid)` are about 5 KiB: the limit is crossed within a few events
    // and later events spill.
    let limit: u64 = 4000;
    let connector = EventBusConnector::with_config(
        scripted_config(dir.path(), &socket).with_buffer_max_bytes(limit as usize),
    )
    .await
    .expect("start");
    let mut signals = connector.take_backpressure_receiver().expect("first take");
    assert!(connector.take_backpressure_receiver().is_none());
    connector.connect().await.expect("connect");
    let mut activated_at = None;
    let mut count = 0u64;
    while count < 12 {
        connector
            .publish(event(count as u32), kind(count as u32))
            .await
            .expect("durable");
        count += 1;
        let occupied = connector.stats().occupied_bytes;
        let should = occupied * 100 >= 70 * limit;
        assert_eq!(
            connector.backpressure_active(),
            should,
            "after {count}: {occupied}"
        );
        if should && activated_at.is_none() {
            activated_at = Some(count);
        }
    }
    assert!(activated_at.is_some());
    assert!(connector.stats().spilled_events > 0, "some events spilled");
    // The broker (stalled so far) now answers and acknowledges one event at a time.
    let mut peer = Peer::accept(&listener).await;
    peer.expect_hello().await;
    peer.send_control(&Welcome {
        protocol_version: 1,
        highest_sequence: None,
    })
    .await;
    for expected in 1..=count {
        assert_eq!(peer.next_event().await.0, expected);
    }
    let mut released = false;
    for acked in 1..=count {
        peer.send_control(&Ack {
            highest_sequence: acked,
        })
        .await;
        guarded(connector.acknowledged(acked)).await.expect("acked");
        let occupied = connector.stats().occupied_bytes;
        released |= occupied * 100 <= 50 * limit;
        assert_eq!(
            connector.backpressure_active(),
            !released,
            "after ack {acked}: {occupied}"
        );
    }
    assert!(released);
    connector.shutdown().await.expect("shutdown");
    let mut received = Vec::new();
    while let Some(signal) = guarded(signals.recv()).await {
        received.push(signal);
    }
    assert_eq!(
        received,
        [BackpressureSignal::Activated, BackpressureSignal::Released]
    );
}
