//! The synthetic source: the same seed gives the same events, every event has the target
//! record size, the kinds are mixed consistently, and the async source paces batches.

use std::collections::BTreeSet;
use std::num::NonZeroU64;

use chrono::{DateTime, TimeDelta, Utc};
use procmond_wal::source::synthetic::generator::{MAX_LIVE_PROCESSES, META_SYNTHETIC};
use procmond_wal::source::synthetic::{
    Generator, MAX_EVENT_BYTES, Rate, SyntheticConfig, SyntheticSource, record_bytes,
};
use procmond_wal::{EventKind, ProcessEvent};

fn time(index: u64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap() + TimeDelta::microseconds(index as i64)
}

fn stream(seed: u64, event_bytes: u64, count: u64) -> Vec<(ProcessEvent, EventKind)> {
    let mut generator = Generator::new(seed, event_bytes).unwrap();
    (0..count).map(|i| generator.next_event(time(i))).collect()
}

#[test]
fn the_same_seed_gives_the_same_events_and_another_seed_others() {
    let first = stream(42, 512, 2000);
    assert_eq!(first, stream(42, 512, 2000));
    let other = stream(43, 512, 2000);
    assert_ne!(first, other);
    assert!(
        first
            .iter()
            .all(|(event, _)| event.platform_metadata[META_SYNTHETIC] == "42"),
        "generated events are marked as such"
    );
}

#[test]
fn every_event_has_the_target_record_size() {
    for target in [256, 512, 1000, 4096, 65_536, MAX_EVENT_BYTES] {
        let expected = target.next_multiple_of(8);
        for (index, (event, kind)) in stream(7, target, 500).iter().enumerate() {
            assert_eq!(
                record_bytes(event),
                expected,
                "target {target}, event {index} ({kind})"
            );
            let mut limited = event.clone();
            limited.truncate_to_limits();
            assert!(!limited.truncated, "padding stays within the event limits");
        }
    }
}

#[test]
fn targets_below_the_natural_size_give_the_natural_size() {
    for seed in [7, 9999] {
        let natural = stream(seed, 0, 2000);
        let tiny = stream(seed, 64, 2000);
        assert_eq!(natural, tiny);
        // So a 256-byte target is reached exactly (see `every_event_has_the_target_record_size`).
        assert!(natural.iter().all(|(event, _)| record_bytes(event) <= 256));
    }
}

#[test]
fn oversized_targets_are_rejected() {
    assert!(Generator::new(1, MAX_EVENT_BYTES).is_ok());
    assert!(Generator::new(1, MAX_EVENT_BYTES + 1).is_err());
    let config = SyntheticConfig {
        event_bytes: MAX_EVENT_BYTES + 1,
        ..SyntheticConfig::default()
    };
    assert!(SyntheticSource::new(&config).is_err());
    let config = SyntheticConfig {
        max_batch_events: 0,
        ..SyntheticConfig::default()
    };
    assert!(SyntheticSource::new(&config).is_err());
}

/// Replays the stream against a model of the live processes: a Start introduces a pid not
/// alive, a Stop or Modify names a live one, and all three kinds occur.
#[test]
fn kinds_are_mixed_and_consistent_with_the_live_set() {
    let mut alive = BTreeSet::new();
    let mut counts = [0u64; 3];
    let mut most_alive = 0;
    for (index, (event, kind)) in stream(9, 0, 20_000).into_iter().enumerate() {
        match kind {
            EventKind::Start => {
                assert!(
                    alive.insert(event.pid),
                    "event {index}: pid {} reused while alive",
                    event.pid
                );
                counts[0] += 1;
            }
            EventKind::Stop => {
                assert!(
                    alive.remove(&event.pid),
                    "event {index}: stop of unknown pid {}",
                    event.pid
                );
                counts[1] += 1;
            }
            EventKind::Modify => {
                assert!(
                    alive.contains(&event.pid),
                    "event {index}: modify of unknown pid {}",
                    event.pid
                );
                counts[2] += 1;
            }
        }
        most_alive = most_alive.max(alive.len());
    }
    assert!(counts.iter().all(|&count| count > 1000), "{counts:?}");
    assert!(most_alive <= MAX_LIVE_PROCESSES);
}

#[test]
fn rates_parse_from_text() {
    assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
    assert_eq!(
        "2500".parse::<Rate>().unwrap(),
        Rate::EventsPerSecond(NonZeroU64::new(2500).unwrap())
    );
    for bad in ["0", "-1", "fast", "", "1.5"] {
        assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
    }
    assert_eq!(Rate::Max.to_string(), "max");
}

#[test]
fn the_async_source_hands_out_paced_or_whole_batches() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut unpaced = SyntheticSource::new(&SyntheticConfig {
            seed: 3,
            rate: Rate::Max,
            event_bytes: 300,
            max_batch_events: 32,
        })
        .unwrap();
        assert_eq!(unpaced.next_batch().await.len(), 32);
        assert_eq!(unpaced.next_batch().await.len(), 32);
        assert_eq!(unpaced.generated(), 64);

        let mut paced = SyntheticSource::new(&SyntheticConfig {
            seed: 3,
            rate: Rate::EventsPerSecond(NonZeroU64::new(1000).unwrap()),
            event_bytes: 300,
            max_batch_events: 8,
        })
        .unwrap();
        let mut total = 0;
        for _ in 0..5 {
            let batch = paced.next_batch().await;
            assert!((1..=8).contains(&batch.len()), "{}", batch.len());
            total += batch.len() as u64;
        }
        assert_eq!(paced.generated(), total);

        // Both sources draw from the same seeded stream.
        let expected = stream(3, 300, 64);
        let mut again = SyntheticSource::new(&SyntheticConfig {
            seed: 3,
            rate: Rate::Max,
            event_bytes: 300,
            max_batch_events: 64,
        })
        .unwrap();
        let batch = again.next_batch().await;
        let strip = |events: &[(ProcessEvent, EventKind)]| -> Vec<(u32, EventKind, Vec<String>)> {
            events
                .iter()
                .map(|(event, kind)| (event.pid, *kind, event.command_line.clone()))
                .collect()
        };
        assert_eq!(strip(&batch), strip(&expected));
    });
}

#[test]
fn next_batch_is_cancel_safe() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut source = SyntheticSource::new(&SyntheticConfig {
            seed: 5,
            rate: Rate::EventsPerSecond(NonZeroU64::new(20).unwrap()),
            event_bytes: 256,
            max_batch_events: 4,
        })
        .unwrap();
        assert_eq!(source.next_batch().await.len(), 1, "event 0 is due at once");
        // Abandon the wait for the next event (50 ms away; even if it were already due, the
        // source yields once before taking it, so the ready branch wins either way).
        tokio::select! {
            biased;
            _ = source.next_batch() => panic!("next_batch completed without yielding"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(source.generated(), 1);
        assert_eq!(source.forgiven(), 0);
        // The stream continues where it was: the next event is the generator's second.
        let mut generator = Generator::new(5, 256).unwrap();
        generator.next_event(time(0));
        let expected = generator.next_event(time(1));
        let next = source.next_batch().await;
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0.pid, expected.0.pid);
        assert_eq!(next[0].1, expected.1);
    });
}
