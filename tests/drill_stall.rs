//! Drill: the broker stalls (SIGSTOP) while events keep coming. The publish buffer fills;
//! backpressure must engage at 70 % of its limit and be released at 50 %; events beyond
//! the limit spill to the WAL (memory holds at most the limit of frames), so the process's
//! resident memory stays bounded however much is published; after the broker resumes
//! (SIGCONT) every event arrives, exactly once and in order.
//!
//! Figures: a 1 MiB buffer, 4 KiB events, 40 MiB of events published into the stalled
//! broker. The bound asserted: resident memory grows by at most 16 MiB over its level
//! before the stall (the buffer, allocator slack and the WAL's write buffers), well below
//! the 40 MiB published. `DRILL_CYCLES` sets the number of stall/resume cycles
//! (`scripts/drill-stall.sh N`).

mod drill_support;

use drill_support::{
    BrokerChild, Order, config, cycles, event, guarded, kind, printed_sequence, rss_bytes,
    short_tempdir, verdict,
};
use procmond_wal::{BackpressureSignal, EventBusConnector, ProcessEvent};

/// Publish buffer limit.
const BUFFER_MAX_BYTES: usize = 1024 * 1024;
/// Bytes of argv per event (about 4 KiB frames).
const EVENT_ARGV_BYTES: usize = 4000;
/// Bytes of events published into the stalled broker, per stall.
const STALLED_BYTES: usize = 40 * 1024 * 1024;
/// Allowed growth of resident memory over its level before the first stall.
const RSS_GROWTH_BOUND_BYTES: u64 = 16 * 1024 * 1024;
/// Events per publish call.
const BATCH_EVENTS: u64 = 64;

fn big_event(index: u64) -> ProcessEvent {
    let mut event = event(index);
    event.command_line.push("x".repeat(EVENT_ARGV_BYTES));
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_broker_backpressure_spill_and_bounded_memory() {
    let stalls = cycles(2);
    let scratch = short_tempdir();
    let socket = scratch.path().join("broker.sock");
    let mut broker = BrokerChild::start(&socket, &["--print"]);
    // Printed lines are checked as they arrive (holding them would count against this
    // process's memory).
    let (highest_printed, mut printed) = tokio::sync::watch::channel(Order::starting_at(1));
    let mut lines = std::mem::replace(&mut broker.lines, tokio::sync::mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        while let Some(line) = lines.recv().await {
            let sequence = printed_sequence(&line);
            highest_printed.send_modify(|order| order.see(sequence));
        }
    });
    let connector = EventBusConnector::with_config(
        config(&scratch.path().join("wal"), &socket).with_buffer_max_bytes(BUFFER_MAX_BYTES),
    )
    .await
    .expect("open connector");
    let mut signals = connector
        .take_backpressure_receiver()
        .expect("backpressure receiver");
    connector.connect().await.expect("connect");

    let mut next = 0u64;
    let mut publish = async |count: u64| {
        let batch = (next..next + count)
            .map(|index| (big_event(index), kind(index)))
            .collect();
        next += count;
        let sequences = connector.publish_batch(batch).await.expect("publish");
        *sequences.last().expect("a batch")
    };
    // Warm up: connected, acknowledged, allocator settled.
    let mut last = publish(BATCH_EVENTS).await;
    guarded("warm-up acknowledgement", connector.acknowledged(last))
        .await
        .expect("acknowledged");
    let rss_before = rss_bytes("self");
    let mut rss_peak = rss_before;
    let mut activated_at = Vec::new();
    let mut released_at = Vec::new();
    let mut spilled = 0;
    let mut rss_after_stall = Vec::new();

    for _ in 0..stalls {
        broker.signal("STOP");
        let mut published_bytes = 0;
        while published_bytes < STALLED_BYTES {
            last = publish(BATCH_EVENTS).await;
            published_bytes += BATCH_EVENTS as usize * (EVENT_ARGV_BYTES + 100);
            rss_peak = rss_peak.max(rss_bytes("self"));
            // Nothing is acknowledged while stalled, so occupancy only grows: the
            // percentage read right after the signal is at least the threshold.
            while let Ok(signal) = signals.try_recv() {
                assert_eq!(
                    signal,
                    BackpressureSignal::Activated,
                    "only activation while stalled"
                );
                activated_at.push(connector.buffer_usage_percent());
            }
        }
        let stats = connector.stats();
        assert!(stats.backpressure_active, "backpressure engaged: {stats:?}");
        // Cumulative: each event counts once, when it first goes to the WAL only.
        spilled = stats.spilled_total;
        broker.signal("CONT");
        // Nothing more is published, so occupancy only falls: the percentage read right
        // after the release is at most the threshold.
        let signal = guarded("release", signals.recv()).await.expect("a signal");
        assert_eq!(signal, BackpressureSignal::Released);
        released_at.push(connector.buffer_usage_percent());
        rss_after_stall.push(rss_peak / 1024 / 1024);
        guarded(
            "acknowledgement after the stall",
            connector.acknowledged(last),
        )
        .await
        .expect("acknowledged");
        guarded(
            "printed events",
            printed.wait_for(|order| order.highest >= last),
        )
        .await
        .expect("the broker prints every event");
    }

    let order = *guarded(
        "printed events",
        printed.wait_for(|order| order.highest >= last),
    )
    .await
    .expect("the broker prints every event");
    let stats = connector.stats();
    connector.shutdown().await.expect("shutdown");
    let rss_growth = rss_peak.saturating_sub(rss_before);
    let pass = order.is_exact_through(last)
        && activated_at.len() as u64 == stalls
        && activated_at.iter().all(|percent| *percent >= 70)
        && released_at.iter().all(|percent| *percent <= 50)
        && spilled > 0
        && spilled <= last
        && stats.read_back_from_wal > 0
        && rss_growth <= RSS_GROWTH_BOUND_BYTES;
    verdict(
        "stall",
        pass,
        &format!(
            "stalls={stalls} published={last} delivered={} repeated={} missing={} activated_at_percent={activated_at:?} released_at_percent={released_at:?} spilled={spilled} read_back_from_wal={} rss_before_mib={:.1} rss_peak_mib={:.1} rss_growth_mib={:.1} bound_mib={} peak_mib_per_stall={rss_after_stall:?}",
            order.received,
            order.repeated,
            order.missing,
            stats.read_back_from_wal,
            rss_before as f64 / 1048576.0,
            rss_peak as f64 / 1048576.0,
            rss_growth as f64 / 1048576.0,
            RSS_GROWTH_BOUND_BYTES / 1024 / 1024
        ),
    );
}
