//! The durable watermark the writer records: every group carries the highest sequence that was
//! durable when it was formed, and a clean close records the final one, so a log knows which
//! sequences it acknowledged even when the records holding them are damaged later.

mod common;

use common::{event, kind, runtime};
use procmond_wal::io::Preallocation;
use procmond_wal::io::sim::SimDisk;
use procmond_wal::wal::format::Record;
use procmond_wal::wal::format::{FrameLayout, SEGMENT_HEADER_BYTES, SegmentHeader};
use procmond_wal::wal::recovery::{list_segments, read_dir, read_dir_with};
use procmond_wal::wal::scan::{ScanItem, SegmentScan};
use procmond_wal::wal::{BackendChoice, Wal, WalConfig};

fn sim_config(dir: &std::path::Path, disk: &SimDisk) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.backend = BackendChoice::Simulated;
    config.sim_disk = Some(disk.clone());
    config.segment_max_bytes = 256 * 1024;
    config.wal_max_bytes = 16 * 1024 * 1024;
    config.preallocation = Preallocation::Fallocate;
    config
}

#[test]
fn each_group_carries_the_watermark_of_its_formation() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let (wal, _) = Wal::open(sim_config(dir.path(), &disk)).unwrap();
    runtime().block_on(async {
        // One at a time: group n is formed after n - 1 is durable.
        for i in 1..=10 {
            assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
        }
        // No clean close: the process dies.
        disk.kill_process();
        let _ = wal.close().await;
    });
    disk.restart();
    let mut watermarks = Vec::new();
    let (_, path) = list_segments(dir.path()).unwrap().remove(0);
    let bytes = std::fs::read(path).unwrap();
    let header = SegmentHeader::decode(&bytes[..SEGMENT_HEADER_BYTES]).unwrap();
    let scan = SegmentScan::new(
        std::io::Cursor::new(&bytes[SEGMENT_HEADER_BYTES..]),
        FrameLayout::V2(header.frame_seed()),
    );
    for item in scan {
        if let ScanItem::Record {
            durable_watermark, ..
        } = item.unwrap()
        {
            watermarks.push(durable_watermark);
        }
    }
    assert_eq!(watermarks, (0..10).collect::<Vec<u64>>());
    assert_eq!(read_dir(dir.path()).unwrap().durable_watermark, 9);
}

#[test]
fn a_clean_close_records_every_acknowledged_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let config = sim_config(dir.path(), &disk);
    let rt = runtime();
    let (wal, _) = Wal::open(config.clone()).unwrap();
    rt.block_on(async {
        let batch = (1..=20).map(|i| (event(i), kind(i))).collect();
        assert_eq!(wal.append_batch(batch).await.unwrap(), 1..=20);
        wal.close().await.unwrap();
    });
    let report = read_dir(dir.path()).unwrap();
    assert_eq!(report.durable_watermark, 20);
    assert!(report.is_clean(), "{report:?}");
    // Reopening and closing again without appends keeps it.
    let (wal, opened) = Wal::open(config).unwrap();
    assert_eq!(opened.next_sequence, 21);
    rt.block_on(async { wal.close().await.unwrap() });
    assert_eq!(read_dir(dir.path()).unwrap().durable_watermark, 20);
}

#[test]
fn a_cleanly_closed_log_reports_its_last_event_lost_when_that_record_is_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let (wal, _) = Wal::open(sim_config(dir.path(), &disk)).unwrap();
    runtime().block_on(async {
        let batch = (1..=20).map(|i| (event(i), kind(i))).collect();
        wal.append_batch(batch).await.unwrap();
        wal.close().await.unwrap();
    });
    let mut last_event = None;
    read_dir_with(dir.path(), |segment, offset, record| {
        if let Record::Event(entry) = record
            && entry.sequence == 20
        {
            last_event = Some((segment, offset));
        }
    })
    .unwrap();
    let (segment, offset) = last_event.expect("event 20 found");
    let path = list_segments(dir.path())
        .unwrap()
        .into_iter()
        .find(|(number, _)| *number == segment)
        .unwrap()
        .1;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0u8; 64], offset).unwrap();
    let report = read_dir(dir.path()).unwrap();
    // The watermark says 20 was acknowledged: its loss is damage, and 20 is never reused.
    assert!(!report.is_clean());
    assert!(report.lost_acknowledged_events >= 1, "{report:?}");
    assert_eq!(report.next_sequence, 21);
}
