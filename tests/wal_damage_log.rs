//! A skipped corrupt record is logged as a `tracing` warning with its position.
//!
//! Alone in its own test binary on purpose: `tracing` caches each call site's interest
//! process-wide, and a test on another thread that hits the call site with no subscriber can
//! race the scoped subscriber installed here.

mod common;

use common::log_capture::warnings_during;
use common::{event, kind, runtime, small_config};
use procmond_wal::wal::format::Record;
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::recovery::{read_dir, read_dir_with};
use procmond_wal::wal::{BackendChoice, Wal};

#[test]
fn a_skipped_corrupt_record_is_logged_as_a_warning_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(small_config(dir.path(), BackendChoice::Portable)).unwrap();
    runtime().block_on(async {
        for i in 1..=6 {
            wal.append(event(i), kind(i)).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let mut offsets = Vec::new();
    read_dir_with(dir.path(), |_, offset, record| {
        if let Record::Event(_) = record {
            offsets.push(offset);
        }
    })
    .unwrap();
    assert_eq!(offsets.len(), 6);
    // Damage one payload byte of the third record.
    let path = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offsets[2] as usize + 40] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let (report, log) = warnings_during(|| read_dir(dir.path()).unwrap());
    assert_eq!(report.events, 5);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "log: {log:?}");
    assert!(warnings[0].contains("skipping corrupt WAL bytes"), "{log}");
    assert!(
        warnings[0].contains(&format!("offset={}", offsets[2])),
        "{log}"
    );
}
