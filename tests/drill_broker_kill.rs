//! Drill: the broker is killed with SIGKILL and restarted, again and again, while events
//! are published. A subscriber that stays up across all kills, reconnecting to each new
//! broker, must receive every sequence exactly once and in order (zero missing, zero
//! duplicates), and the connector must end with everything acknowledged.
//!
//! Why this can hold (docs/protocol.md §7–§8). The broker writes an event to every
//! subscriber's socket before it persists the high-water mark covering it, and acks only
//! after that; what a dead broker wrote to a Unix socket stays readable. So when a broker
//! dies, its subscriber (draining the dead connection to its end) holds at least everything
//! up to the persisted mark, and the successor drops the connector's replay of those as
//! duplicates. Above the mark the connector replays, and the subscriber, which resubscribes
//! with `subscribe-from` and its last sequence, is sent only what it does not hold yet.
//!
//! Every third broker is killed while the subscriber has stopped reading for a while, so its
//! socket is full and events wait inside the broker: a broker that persisted (or acked) a
//! mark before writing the events to the subscriber would lose them there.
//!
//! Each broker starts on a fresh socket path; the subscriber connects and subscribes to it
//! first; only then is the socket renamed to the path the connector dials, so no event can
//! reach a broker before the subscriber listens. `DRILL_CYCLES` sets the number of kills
//! (`scripts/drill-broker-kill.sh N`).

mod broker_support;
mod drill_support;

use std::path::Path;
use std::time::Duration;

use broker_support::BrokerProcess;
use drill_support::{
    Order, config, cycles, event, guarded, kind, persisted_mark, short_tempdir, verdict,
};
use procmond_wal::EventBusConnector;
use procmond_wal::broker::client::{Positions, TestClient};
use procmond_wal::wire::Message;
use tokio::sync::watch;

/// Events a subscriber must see from one broker before it is killed (varied per cycle so
/// kills land at different points of batches, acks and checkpoints).
fn events_before_kill(cycle: u64) -> u64 {
    40 + (cycle * 37) % 160
}
/// Events published while the subscriber does not read, before a "full socket" kill: more
/// than a Unix socket buffer holds of these small frames (a few hundred), fewer than the
/// broker's subscriber queue (1024 frames), so the subscriber is not cut off as slow.
const PAUSED_EVENTS: u64 = 600;
/// Every this many cycles, the kill comes with the subscriber paused.
const PAUSE_EVERY_CYCLES: u64 = 3;
/// Events per publish call.
const BATCH_EVENTS: u64 = 16;
/// Pause between two publish calls: keeps the load moderate (a few thousand events/s) so
/// the drill measures crashes, not a saturated machine. Pacing only; nothing waits on it.
const PUBLISH_PACE: Duration = Duration::from_millis(4);

/// The one subscriber of the drill: what it holds survives every broker.
#[derive(Default)]
struct Subscriber {
    positions: Positions,
    order: Order,
    /// Summed over restarts: events it held above the persisted mark it restarted from. The
    /// new broker had to hold these back from the connector's replay (without resume
    /// positions they would arrive twice). An event counts again at each restart whose mark
    /// is still below it.
    held_above_mark: u64,
    /// Events at or below a restarted broker's persisted mark that it did not hold: a
    /// broker persisted a mark before writing the events to the subscriber.
    missing_below_mark: u64,
}

impl Subscriber {
    /// Connects to a broker and subscribes from where it is.
    async fn connect(&self, socket: &Path) -> TestClient {
        let mut client = TestClient::connect(socket).await.expect("connect");
        guarded(
            "subscription confirmed",
            client.subscribe_from(&["events.process.#"], &self.positions),
        )
        .await
        .expect("the broker confirmed the subscription");
        client
    }

    fn see(&mut self, message: &Message) {
        self.positions.record(message);
        self.order.see(message.sequence);
    }

    /// Receives until `through` was seen; false if the connection ended first.
    async fn receive_through(&mut self, client: &mut TestClient, through: u64) -> bool {
        while self.order.highest < through {
            match guarded("subscriber", client.next_event_or_end())
                .await
                .expect("read from the broker")
            {
                Some(message) => self.see(&message),
                None => return false,
            }
        }
        true
    }

    /// Reads whatever a killed broker wrote, to the end of its stream.
    async fn drain(&mut self, client: &mut TestClient) {
        while let Some(message) = guarded("subscriber end", client.next_event_or_end())
            .await
            .expect("read from the killed broker")
        {
            self.see(&message);
        }
    }

    /// Compares what it holds with the mark a killed broker left.
    fn compare_with_mark(&mut self, mark: u64) {
        let held = self.order.highest;
        self.held_above_mark += held.saturating_sub(mark);
        self.missing_below_mark += mark.saturating_sub(held);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_sigkill_and_restart_while_publishing() {
    let kills = cycles(5);
    let scratch = short_tempdir();
    let socket = scratch.path().join("broker.sock");
    let state_dir = scratch.path().join("state");
    let state_arg = state_dir.to_str().expect("utf-8 path").to_owned();
    let connector = EventBusConnector::with_config(config(&scratch.path().join("wal"), &socket))
        .await
        .expect("open connector");
    connector.connect().await.expect("connect");

    let (published_sender, mut published) = watch::channel(0u64);
    let (stop, stopped) = watch::channel(false);
    let publisher = {
        let connector = connector.clone();
        tokio::spawn(async move {
            let mut next = 0;
            let mut last = 0;
            let mut pace = tokio::time::interval(PUBLISH_PACE);
            while !*stopped.borrow() {
                pace.tick().await;
                let batch = (next..next + BATCH_EVENTS)
                    .map(|index| (event(index), kind(index)))
                    .collect();
                let sequences = connector.publish_batch(batch).await.expect("publish");
                last = *sequences.last().expect("a batch");
                next += BATCH_EVENTS;
                published_sender.send_replace(last);
            }
            last
        })
    };

    let mut subscriber = Subscriber {
        order: Order::starting_at(1),
        ..Subscriber::default()
    };
    let start_broker = |number: u64| {
        let stage = scratch.path().join(format!("s{number}.sock"));
        let broker = BrokerProcess::start(&stage, &["--state-dir", &state_arg]);
        (broker, stage)
    };
    for cycle in 0..kills {
        let (mut broker, stage) = start_broker(cycle);
        let mut client = subscriber.connect(&stage).await;
        std::fs::rename(&stage, &socket).expect("move the socket into place");
        let target = subscriber.order.highest + events_before_kill(cycle);
        assert!(
            subscriber.receive_through(&mut client, target).await,
            "cycle {cycle}: the subscriber was cut off before any kill"
        );
        if cycle % PAUSE_EVERY_CYCLES == PAUSE_EVERY_CYCLES - 1 {
            // Not reading: the socket fills and later events wait in the broker's queue.
            let until = subscriber.order.highest + PAUSED_EVENTS;
            guarded(
                "publishing while paused",
                published.wait_for(|last| *last >= until),
            )
            .await
            .expect("publisher running");
        }
        broker.kill();
        subscriber.drain(&mut client).await;
        subscriber.compare_with_mark(persisted_mark(&state_dir));
    }

    let (_broker, stage) = start_broker(kills);
    let mut client = subscriber.connect(&stage).await;
    std::fs::rename(&stage, &socket).expect("move the socket into place");
    stop.send(true).expect("publisher running");
    let last = publisher.await.expect("publisher task");
    // Receive first: the broker acks only what its subscribers' sockets hold, so a
    // subscriber that waited for the ack without reading could be cut off as slow.
    let complete = subscriber.receive_through(&mut client, last).await;
    guarded("final acknowledgement", connector.acknowledged(last))
        .await
        .expect("acknowledged");
    let stats = connector.stats();
    connector.shutdown().await.expect("shutdown");

    let order = subscriber.order;
    let pass = complete
        && order.is_exact_through(last)
        && order.received == last
        && subscriber.missing_below_mark == 0
        && stats.acked_through == last;
    verdict(
        "broker-kill",
        pass,
        &format!(
            "kills={kills} published={last} received={} missing={} duplicates={} missing_below_persisted_mark={} held_above_persisted_mark={} acked_through={} reconnects={}",
            order.received,
            order.missing,
            order.repeated,
            subscriber.missing_below_mark,
            subscriber.held_above_mark,
            stats.acked_through,
            stats.reconnects,
        ),
    );
    assert!(
        stats.reconnects >= kills,
        "the connector reconnected after every kill"
    );
}
