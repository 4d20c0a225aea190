//! The benchmarks' latency recorder (`benches/support/latency.rs`, compiled here as well so
//! `cargo test` checks it): percentiles within its precision, and every sample counted,
//! however many there are.

#[path = "../benches/support/latency.rs"]
mod latency;

use std::time::Duration;

use latency::LatencyRecorder;

fn within(actual: f64, expected: f64, fraction: f64) -> bool {
    (actual - expected).abs() <= expected * fraction
}

#[test]
fn percentiles_come_from_the_samples() {
    let mut first = LatencyRecorder::default();
    for micros in 1..=500u64 {
        first.record(Duration::from_micros(micros));
    }
    let mut second = LatencyRecorder::default();
    for micros in 501..=1000u64 {
        second.record(Duration::from_micros(micros));
    }
    second.record_n(Duration::from_millis(40), 1);
    first.merge(second);
    let summary = first.summary();
    assert_eq!(summary.samples, 1001);
    assert!(within(summary.p50_us, 501.0, 0.001), "{summary:?}");
    assert!(within(summary.p99_us, 991.0, 0.001), "{summary:?}");
    assert!(within(summary.p999_us, 1000.0, 0.001), "{summary:?}");
    assert_eq!(summary.max_us, 40_000.0);
    assert_eq!(LatencyRecorder::default().summary().samples, 0);
}

#[test]
fn samples_past_two_to_the_twenty_still_count() {
    // The recorder used to keep 2^20 samples per publisher and drop the rest, so a slow
    // second half of a long run vanished from its percentiles.
    let mut recorder = LatencyRecorder::default();
    let half = (1u64 << 20) + 1;
    recorder.record_n(Duration::from_micros(10), half);
    for _ in 0..half {
        recorder.record(Duration::from_millis(20));
    }
    assert_eq!(recorder.samples(), 2 * half);
    let summary = recorder.summary();
    assert!(within(summary.p99_us, 20_000.0, 0.001), "{summary:?}");
    assert!(within(summary.p50_us, 10.0, 0.001), "{summary:?}");
}
