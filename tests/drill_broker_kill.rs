//! Drill: the broker is killed with SIGKILL and restarted, again and again, while events
//! are published. The connector must end with everything acknowledged, and a subscriber
//! must see each broker's stream contiguous and in order, with no gap that a broker never
//! had. The broker runs with `--state-dir`, so the connector's replays after a restart are
//! de-duplicated up to the high-water mark the killed broker had persisted.
//!
//! What the reference broker cannot promise across its own SIGKILL, and the drill counts
//! instead of failing on: it routes an event before it persists the mark, so events it
//! routed in its last moments are routed again by its successor (`redelivered`; a
//! subscriber that keeps the last sequence per publisher sees them once); and it persists
//! the mark before its subscribers' queues are written, so events queued for a subscriber
//! when it died are lost to that subscriber (`lost_in_killed_broker`; its successor drops
//! their replay as duplicates). A gap above the persisted mark would be the connector's
//! fault and fails the drill.
//!
//! Each broker starts on a fresh socket path; a subscriber connects and subscribes to it
//! first; only then is the socket renamed to the path the connector dials, so no event can
//! reach a broker before the subscriber listens. `DRILL_CYCLES` sets the number of kills
//! (`scripts/drill-broker-kill.sh N`).

mod broker_support;
mod drill_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use broker_support::BrokerProcess;
use drill_support::{
    Runs, config, cycles, event, guarded, kind, persisted_mark, short_tempdir, subscribe, verdict,
};
use procmond_wal::EventBusConnector;
use tokio::sync::mpsc;
use tokio::sync::watch;

/// Events a subscriber must see from one broker before it is killed (varied per cycle so
/// kills land at different points of batches and checkpoints).
fn events_before_kill(cycle: u64) -> u64 {
    40 + (cycle * 37) % 160
}
/// Events per publish call.
const BATCH_EVENTS: u64 = 16;
/// Pause between two publish calls: keeps the load moderate (a few thousand events/s) so
/// the drill measures crashes, not a saturated machine. Pacing only; nothing waits on it.
const PUBLISH_PACE: Duration = Duration::from_millis(4);

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

    let published = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let publisher = {
        let connector = connector.clone();
        let published = Arc::clone(&published);
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
                published.store(last, Relaxed);
            }
            last
        })
    };

    let mut runs = Runs::default();
    let start_broker = |number: u64| {
        let stage = scratch.path().join(format!("s{number}.sock"));
        let broker = BrokerProcess::start(&stage, &["--state-dir", &state_arg]);
        (broker, stage)
    };
    for cycle in 0..kills {
        let (mut broker, stage) = start_broker(cycle);
        let mut received = subscribe(&stage).await;
        std::fs::rename(&stage, &socket).expect("move the socket into place");
        runs.new_connection(persisted_mark(&state_dir));
        let target = runs.highest + events_before_kill(cycle);
        assert!(
            receive_through(&mut received, &mut runs, target).await,
            "cycle {cycle}: the subscriber was cut off before any kill"
        );
        broker.kill();
        // Whatever the broker wrote before it died.
        while let Some(sequence) = guarded("subscriber end", received.recv()).await {
            runs.see(sequence);
        }
    }

    let (_broker, stage) = start_broker(kills);
    let mut received = subscribe(&stage).await;
    runs.new_connection(persisted_mark(&state_dir));
    std::fs::rename(&stage, &socket).expect("move the socket into place");
    stop.send(true).expect("publisher running");
    let last = publisher.await.expect("publisher task");
    guarded("final acknowledgement", connector.acknowledged(last))
        .await
        .expect("acknowledged");
    let complete = receive_through(&mut received, &mut runs, last).await;
    let stats = connector.stats();
    connector.shutdown().await.expect("shutdown");

    let pass = complete && runs.is_complete_through(last) && stats.acked_through == last;
    verdict(
        "broker-kill",
        pass,
        &format!(
            "kills={kills} published={last} received={} redelivered_after_crash={} lost_in_killed_broker={} gaps_or_disorder={} acked_through={} reconnects={} {:?}",
            runs.received,
            runs.redelivered,
            runs.lost_in_killed_broker,
            runs.violations.len(),
            stats.acked_through,
            stats.reconnects,
            runs.violations.iter().take(3).collect::<Vec<_>>()
        ),
    );
    assert!(
        stats.reconnects >= kills,
        "the connector reconnected after every kill"
    );
}

/// Receives until `through` was seen; false if the connection ended first.
async fn receive_through(
    receiver: &mut mpsc::UnboundedReceiver<u64>,
    runs: &mut Runs,
    through: u64,
) -> bool {
    while runs.highest < through {
        match guarded("subscriber", receiver.recv()).await {
            Some(sequence) => runs.see(sequence),
            None => return false,
        }
    }
    true
}
