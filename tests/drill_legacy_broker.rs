//! Drill: a legacy broker that reads frames but never answers (no welcome, no acks). After
//! the hello timeout the connector must fall back to written-to-socket delivery: every
//! event still reaches the broker, once and in order, and counts as delivered once written.
//! `DRILL_CYCLES` sets how many reconnections to a fresh silent broker are made
//! (`scripts/drill-legacy-broker.sh N`).

mod drill_support;

use std::path::Path;
use std::time::Duration;

use drill_support::{Order, config, cycles, event, guarded, kind, short_tempdir, verdict};
use procmond_wal::EventBusConnector;
use procmond_wal::event_bus_connector::LinkState;
use procmond_wal::wire::frame::body_length;
use procmond_wal::wire::{Body, FRAME_LENGTH_BYTES, MAX_FRAME_BODY_BYTES, MessageType};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// How long the connector waits for a welcome before treating the broker as legacy.
const HELLO_TIMEOUT: Duration = Duration::from_millis(200);
/// Events published per silent broker.
const EVENTS_PER_CYCLE: u64 = 300;

/// A silent broker's listening socket (bound with std: see the tokio-uring bind limits).
fn silent_broker(path: &Path) -> UnixListener {
    let std_listener = std::os::unix::net::UnixListener::bind(path).expect("bind");
    std_listener.set_nonblocking(true).expect("non-blocking");
    UnixListener::from_std(std_listener).expect("tokio listener")
}

/// Accepts one connection and reads frames from it, forwarding the sequence of every event
/// frame and never writing a byte. Aborting the task closes the connection.
async fn serve_one(
    listener: &UnixListener,
    events: mpsc::UnboundedSender<u64>,
) -> tokio::task::JoinHandle<()> {
    let (stream, _) = guarded("accept", listener.accept()).await.expect("accept");
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        loop {
            let mut prefix = [0u8; FRAME_LENGTH_BYTES];
            if reader.read_exact(&mut prefix).await.is_err() {
                return;
            }
            let Ok(length) = body_length(prefix, MAX_FRAME_BODY_BYTES) else {
                return;
            };
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).await.is_err() {
                return;
            }
            if let Ok(Body::Message(message)) = Body::decode(&body)
                && message.message_type == MessageType::Event
                && events.send(message.sequence).is_err()
            {
                return;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_never_acknowledges_still_gets_everything() {
    let rounds = cycles(2);
    let scratch = short_tempdir();
    let socket = scratch.path().join("legacy.sock");
    let connector = EventBusConnector::with_config(
        config(&scratch.path().join("wal"), &socket).with_hello_timeout(HELLO_TIMEOUT),
    )
    .await
    .expect("open connector");
    let mut order = Order::starting_at(1);
    let mut next = 0;
    let mut last = 0;
    let mut states = Vec::new();
    for round in 0..rounds {
        let listener = silent_broker(&socket);
        let (sender, mut received) = mpsc::unbounded_channel();
        if round == 0 {
            connector.connect().await.expect("connect");
        }
        let connection = serve_one(&listener, sender).await;
        let batch = (next..next + EVENTS_PER_CYCLE)
            .map(|index| (event(index), kind(index)))
            .collect();
        next += EVENTS_PER_CYCLE;
        last = *connector
            .publish_batch(batch)
            .await
            .expect("publish")
            .last()
            .expect("a batch");
        // Resolves only once written to the socket (nothing acknowledges).
        guarded("written-to-socket delivery", connector.acknowledged(last))
            .await
            .expect("delivered");
        states.push(connector.stats().link_state);
        while order.highest < last {
            match guarded("silent broker", received.recv()).await {
                Some(sequence) => order.see(sequence),
                None => break,
            }
        }
        // The next round's broker replaces this one.
        connection.abort();
        drop(listener);
        std::fs::remove_file(&socket).expect("remove socket");
        if round + 1 < rounds {
            // Make the link notice and reconnect to the next silent broker.
            connector.replay_wal().await.expect("nudge");
        }
    }
    let stats = connector.stats();
    connector.shutdown().await.expect("shutdown");
    let pass = order.is_exact_through(last)
        && stats.legacy_broker
        && states
            .iter()
            .all(|state| *state == LinkState::ConnectedLegacy);
    verdict(
        "legacy-broker",
        pass,
        &format!(
            "rounds={rounds} published={last} received={} repeated={} missing={} legacy={} rounds_in_legacy_mode={}",
            order.received,
            order.repeated,
            order.missing,
            stats.legacy_broker,
            states
                .iter()
                .filter(|state| **state == LinkState::ConnectedLegacy)
                .count()
        ),
    );
}
