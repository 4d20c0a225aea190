//! Cutting a torn tail at open is logged as a warning with the segment, its offset and the
//! number of bytes zeroed.
//!
//! Alone in its own test binary on purpose: `tracing` caches each call site's interest
//! process-wide, and a test on another thread that hits the call site with no subscriber can
//! race the scoped subscriber installed here.

mod common;

use std::os::unix::fs::FileExt;

use common::log_capture::warnings_during;
use common::{event, kind, runtime, small_config};
use procmond_wal::wal::format::Record;
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::recovery::{read_dir, read_dir_with};
use procmond_wal::wal::{BackendChoice, Wal};

#[test]
fn cutting_a_torn_tail_is_logged_with_segment_offset_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), BackendChoice::Portable);
    let (wal, _) = Wal::open(config.clone()).unwrap();
    runtime().block_on(async {
        for i in 1..=5 {
            wal.append(event(i), kind(i)).await.unwrap();
        }
        wal.close().await.unwrap();
    });
    let report = read_dir(dir.path()).unwrap();
    let data_end = report.segments[0].data_end;
    // An interrupted write: non-zero bytes after the last record.
    let path = segment_path(dir.path(), 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[0xa5; 100], data_end).unwrap();
    drop(file);
    let torn = read_dir(dir.path()).unwrap().torn_tail_bytes;
    assert!(torn > 0);

    let ((wal, report), log) = warnings_during(|| Wal::open(config.clone()).unwrap());
    runtime().block_on(wal.close()).unwrap();
    assert_eq!(report.events, 5);
    let cuts: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("cutting the torn tail"))
        .collect();
    assert_eq!(cuts.len(), 1, "log: {log}");
    // A torn tail is not damage: no warning may call its bytes corrupt.
    assert!(!log.contains("skipping corrupt WAL bytes"), "log: {log}");
    let cut = cuts[0];
    assert!(cut.contains("WARN"), "{cut}");
    assert!(cut.contains("segment=1"), "{cut}");
    assert!(cut.contains(&format!("offset={data_end}")), "{cut}");
    assert!(cut.contains(&format!("bytes={torn}")), "{cut}");
    // And the bytes are gone: the log is clean afterwards.
    assert_eq!(read_dir(dir.path()).unwrap().torn_tail_bytes, 0);
}

#[test]
fn a_torn_last_frame_is_reported_as_a_torn_tail_without_a_damage_warning() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), BackendChoice::Portable);
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let path = segment_path(dir.path(), 1);
    // One group per event, so each frame carries the watermark before it; the copy taken
    // before `close` has no closing watermark record, as after a crash.
    let crashed = runtime().block_on(async {
        for i in 1..=5 {
            wal.append(event(i), kind(i)).await.unwrap();
        }
        let crashed = std::fs::read(&path).unwrap();
        wal.close().await.unwrap();
        crashed
    });
    std::fs::write(&path, &crashed).unwrap();
    let mut offsets = Vec::new();
    let data_end = read_dir_with(dir.path(), |_, offset, record| {
        if let Record::Event(_) = record {
            offsets.push(offset);
        }
    })
    .unwrap()
    .segments[0]
        .data_end;
    assert_eq!(offsets.len(), 5);
    // Tear the last frame: its second half never reached the disk.
    let last = offsets[4];
    let half = (last + (data_end - last) / 2) as usize;
    let mut bytes = crashed;
    bytes[half..data_end as usize].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let (report, log) = warnings_during(|| read_dir(dir.path()).unwrap());
    assert_eq!(
        report.events, 4,
        "the torn fifth event was never acknowledged"
    );
    assert_eq!(report.lost_acknowledged_events, 0);
    assert!(report.torn_tail_bytes > 0, "{report:?}");
    assert!(!log.contains("skipping corrupt WAL bytes"), "log: {log}");
}
