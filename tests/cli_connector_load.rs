//! `procmond-wal connector-load` run as the real binary against its embedded broker: the JSON
//! report has exact counts for both sides and the figures that say where a call's time goes
//! (inside enqueue, awaiting the receipt, the log's write and sync latency).

use std::process::Command;

use serde_json::Value;

#[test]
fn the_report_has_exact_counts_and_where_the_time_goes_for_both_sides() {
    let output = Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .args(["connector-load", "--events", "3000", "--publishers", "1"])
        .args(["--batch", "100", "--in-flight", "2", "--compare-wal-only"])
        .output()
        .expect("run connector-load");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(report["spilled_total"], 0);
    for side in ["connector", "wal_only"] {
        let figures = &report[side];
        assert_eq!(figures["events"], 3000, "{side}");
        assert_eq!(figures["batch"], 100, "{side}");
        let number = |key: &str| {
            figures[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{side}.{key} is a number: {figures}"))
        };
        // 30 calls of 100 events, each timed in both its parts (nanosecond clocks: never 0).
        assert!(number("enqueue_us_per_call") > 0.0, "{side}");
        assert!(number("await_us_per_call") > 0.0, "{side}");
        assert!(number("records_per_sync") >= 1.0, "{side}");
        // The log's latency medians are reported (whole µs; their values are not checked).
        for key in ["write_latency_p50_us", "sync_latency_p50_us"] {
            assert!(figures[key].is_u64(), "{side}.{key}: {figures}");
        }
    }
    assert!(report["acked_vs_wal_only"].as_f64().is_some());
}
