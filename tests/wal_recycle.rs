//! Segment recycling (`WalConfig::recycle_segments_max`, docs/format.md §7.8): acknowledged
//! segments are renamed to the next number and overwritten; the bytes they keep from their
//! earlier use are neither damage nor lost acknowledged data, in the newest segment or a sealed
//! one; a torn or damaged end of the new data is still found; a power loss after the rename but
//! before the new header reached the disk recovers; and the seeded power-loss simulation with
//! recycling loses no acknowledged event.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{BACKENDS, Lcg, event, kind, runtime};
use procmond_wal::io::Preallocation;
use procmond_wal::io::sim::SimDisk;
use procmond_wal::wal::format::{SegmentHeader, WATERMARK_FRAME_BYTES};
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::recovery::{DamageKind, OpenReport, list_segments, read_dir};
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalReader};

const SEGMENT_BYTES: u64 = 64 * 1024;

fn recycling_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = WalConfig::new(dir);
    config.backend = backend;
    config.segment_max_bytes = SEGMENT_BYTES;
    config.group_max_bytes = 8 * 1024;
    config.wal_max_bytes = 64 * SEGMENT_BYTES;
    config.preallocation = Preallocation::Fallocate;
    config.recycle_segments_max = 2;
    config
}

/// Appends `events` events (ids from `first_id`), checkpointing everything durable every
/// `checkpoint_every` appends, and closes the log. Returns the last sequence.
fn fill(config: &WalConfig, first_id: u64, events: u64, checkpoint_every: u64) -> u64 {
    let rt = runtime();
    let (wal, _) = Wal::open(config.clone()).unwrap();
    let last = rt.block_on(async {
        let mut last = 0;
        for id in first_id..first_id + events {
            last = wal.append(event(id), kind(id)).await.unwrap();
            if (id - first_id + 1).is_multiple_of(checkpoint_every) {
                wal.checkpoint(last).await.unwrap();
            }
        }
        last
    });
    rt.block_on(wal.close()).unwrap();
    last
}

fn recycled_segments(report: &OpenReport) -> Vec<u64> {
    report
        .segments
        .iter()
        .filter(|segment| segment.recycled)
        .map(|segment| segment.number)
        .collect()
}

/// Every event from `first` to `last` replays, in order, with nothing else.
fn assert_replays(dir: &Path, first: u64, last: u64) {
    let sequences: Vec<u64> = WalReader::open(dir, first)
        .unwrap()
        .map(|entry| entry.unwrap().sequence)
        .filter(|&sequence| sequence >= first)
        .collect();
    assert_eq!(sequences, (first..=last).collect::<Vec<_>>());
}

#[test]
fn recycled_segments_read_clean_in_the_newest_and_the_sealed_ones() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = recycling_config(dir.path(), backend);
        // Checkpoints trail the appends, so sealed segments stay until one is recycled. The
        // first run rotates late, the second early: the files it recycles hold bytes of
        // their earlier use after the new records.
        let mut late = config.clone();
        late.segment_rotate_percent = 90;
        fill(&late, 1, 2000, 200);
        let mut early = config.clone();
        early.segment_rotate_percent = 30;
        let last = fill(&early, 2001, 1000, 100);
        let report = read_dir(dir.path()).unwrap();
        let recycled = recycled_segments(&report);
        assert!(
            recycled.len() >= 2,
            "{backend:?}: segments were not recycled: {recycled:?}"
        );
        let newest = &report.segments[report.last_written_index().unwrap()];
        assert!(
            report
                .segments
                .iter()
                .any(|s| s.recycled && s.number < newest.number),
            "{backend:?}: no sealed recycled segment to check"
        );
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        assert_eq!(report.torn_tail_bytes, 0, "{backend:?}");
        assert_eq!(report.last_sequence, Some(last));
        // A recycled file still holds its earlier use's bytes after the new records.
        let with_leftovers = report
            .segments
            .iter()
            .filter(|s| s.recycled && s.number < newest.number)
            .filter(|sealed| {
                let bytes = std::fs::read(&sealed.path).unwrap();
                let leftover_from = sealed.data_end.div_ceil(4096) * 4096;
                bytes[leftover_from as usize..].iter().any(|&b| b != 0)
            })
            .count();
        assert!(
            with_leftovers > 0,
            "{backend:?}: no sealed recycled segment holds leftover bytes"
        );
        // Files on disk stay within the budget: the recycled ones replace new files.
        let files = list_segments(dir.path()).unwrap();
        assert!(files.len() <= 12, "{backend:?}: {} files", files.len());
        // Reopening finds what was written, and writing on keeps it clean.
        let more = fill(&early, 5000, 500, 100);
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        assert_eq!(more, last + 500);
        assert_replays(dir.path(), report.first_sequence.unwrap(), more);
    }
}

/// The log of `recycled_segments_read_clean...`, closed, with the newest segment recycled.
fn log_with_recycled_newest(dir: &Path) -> (WalConfig, OpenReport, u64) {
    let config = recycling_config(dir, BackendChoice::Portable);
    // Stop right after a recycled segment became the newest one.
    let mut id = 1;
    let mut last = 0;
    for _ in 0..40 {
        last = fill(&config, id, 170, 50);
        id += 170;
        let report = read_dir(dir).unwrap();
        let newest = report
            .last_written_index()
            .map(|index| &report.segments[index]);
        if newest.is_some_and(|s| s.recycled) {
            return (config, report, last);
        }
    }
    panic!("the newest segment never was a recycled one (last {last})");
}

#[test]
fn a_torn_write_after_the_records_of_a_recycled_newest_segment_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (config, report, last) = log_with_recycled_newest(dir.path());
    let newest = report.segments[report.last_written_index().unwrap()].clone();
    // Part of a group write that never completed: non-zero bytes right after the records,
    // inside the block the next group rewrites.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest.path)
        .unwrap();
    let at = newest.data_end;
    let room = (newest.data_end.div_ceil(4096) * 4096 - at).min(64);
    if room < 16 {
        // The records end right at a block boundary: write a torn frame start there.
        file.write_all_at(&[0x77; 64], at).unwrap();
    } else {
        file.write_all_at(&vec![0x77; room as usize], at).unwrap();
    }
    drop(file);
    let torn = read_dir(dir.path()).unwrap();
    assert!(torn.is_clean(), "{:?}", torn.damage);
    assert!(torn.torn_tail_bytes > 0, "the torn write was not found");
    assert_eq!(torn.last_sequence, Some(last));
    // Open cuts it and goes on.
    let more = fill(&config, 90_000, 10, 10);
    let after = read_dir(dir.path()).unwrap();
    assert!(after.is_clean(), "{:?}", after.damage);
    assert_eq!(after.torn_tail_bytes, 0);
    assert_eq!(more, last + 10);
}

#[test]
fn acknowledged_records_lost_at_the_end_of_a_recycled_newest_segment_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, report, last) = log_with_recycled_newest(dir.path());
    let newest = report.segments[report.last_written_index().unwrap()].clone();
    // Damage the last event frames of the newest segment, keeping the closing watermark record
    // (the last frame) that says they were acknowledged.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest.path)
        .unwrap();
    let watermark_at = newest.data_end - WATERMARK_FRAME_BYTES as u64;
    let from = watermark_at.saturating_sub(600).max(4096);
    file.write_all_at(&vec![0x5c; (watermark_at - from) as usize], from)
        .unwrap();
    drop(file);
    let damaged = read_dir(dir.path()).unwrap();
    assert!(!damaged.is_clean());
    assert!(
        damaged.lost_acknowledged_events > 0,
        "lost acknowledged events not reported: {:?}",
        damaged.gaps
    );
    assert!(damaged.last_sequence.unwrap() < last);
}

#[test]
fn a_damaged_end_of_a_sealed_recycled_segment_is_still_damage() {
    let dir = tempfile::tempdir().unwrap();
    let config = recycling_config(dir.path(), BackendChoice::Portable);
    fill(&config, 1, 3000, 200);
    let report = read_dir(dir.path()).unwrap();
    let newest = report.segments[report.last_written_index().unwrap()].number;
    let sealed = report
        .segments
        .iter()
        .find(|s| s.recycled && s.number < newest)
        .expect("a sealed recycled segment")
        .clone();
    // Garble the last frame's bytes: non-zero bytes that are no frame, before the leftovers.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&sealed.path)
        .unwrap();
    let from = sealed.data_end - 40;
    file.write_all_at(&[0xa5; 40], from).unwrap();
    drop(file);
    let damaged = read_dir(dir.path()).unwrap();
    assert!(
        damaged
            .damage
            .iter()
            .any(|d| d.segment == sealed.number && d.kind == DamageKind::DamagedEnd),
        "{:?}",
        damaged.damage
    );
}

#[test]
fn a_power_loss_after_the_rename_before_the_new_header_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = recycling_config(dir.path(), BackendChoice::Portable);
    // Everything checkpointed at the end: the oldest segments are acknowledged and kept for
    // recycling.
    let last = fill(&config, 1, 800, 800);
    let report = read_dir(dir.path()).unwrap();
    assert!(report.segments.len() >= 3, "{:?}", report.segments);
    let oldest = report.segments[0].clone();
    let next = list_segments(dir.path()).unwrap().last().unwrap().0 + 1;
    assert!(oldest.last_sequence.unwrap() <= report.acked_through);
    // The writer renamed the oldest segment to the next number and synced the directory; the
    // power went before the new segment's first write.
    std::fs::rename(&oldest.path, segment_path(dir.path(), next)).unwrap();
    let header = SegmentHeader::decode(&std::fs::read(segment_path(dir.path(), next)).unwrap())
        .expect("the old header is intact");
    assert_eq!(header.segment_number, oldest.number);
    let found = read_dir(dir.path()).unwrap();
    assert!(found.is_clean(), "{:?}", found.damage);
    assert_eq!(found.next_sequence, last + 1);
    let stale = found.segments.last().unwrap();
    assert_eq!(stale.stale_header_number, Some(oldest.number));
    assert!(stale.is_unused_recycled());
    // `stats` names it for what it is, not a damaged header.
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .arg("stats")
        .arg(dir.path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&stats.stdout);
    let row = table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(&next.to_string()))
        .unwrap_or_else(|| panic!("a row for segment {next}: {table}"));
    assert!(row.contains("unused"), "{table}");
    assert!(!table.contains("bad header"), "{table}");
    // Open accepts the file (it is this log's own), and writing goes on after `last`.
    let more = fill(&config, 10_000, 20, 20);
    assert_eq!(more, last + 20);
    let after = read_dir(dir.path()).unwrap();
    assert!(after.is_clean(), "{:?}", after.damage);
    assert_replays(dir.path(), last - 10, more);
}

#[test]
fn a_torn_first_write_into_a_recycled_file_keeps_its_records_and_gets_its_header_back() {
    let dir = tempfile::tempdir().unwrap();
    let (config, report, last) = log_with_recycled_newest(dir.path());
    let newest = report.segments[report.last_written_index().unwrap()].clone();
    let header = newest.header.unwrap();
    // The sector with the new header never landed; the records after it did. The block still
    // holds the header of the file's earlier use.
    let stale = SegmentHeader {
        segment_number: newest.number - 2,
        ..header
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest.path)
        .unwrap();
    file.write_all_at(&stale.encode_block(), 0).unwrap();
    drop(file);
    let found = read_dir(dir.path()).unwrap();
    let segment = found
        .segments
        .iter()
        .find(|s| s.number == newest.number)
        .unwrap();
    assert_eq!(segment.stale_header_number, Some(newest.number - 2));
    assert_eq!(segment.events, newest.events);
    // Open restores the header; the records stay, and the log reads clean again.
    let more = fill(&config, 70_000, 30, 30);
    assert_eq!(more, last + 30);
    let after = read_dir(dir.path()).unwrap();
    assert!(after.is_clean(), "{:?}", after.damage);
    let restored = after
        .segments
        .iter()
        .find(|s| s.number == newest.number)
        .unwrap();
    assert!(
        restored.recycled,
        "the restored header lacks the recycled flag"
    );
    assert_eq!(
        restored.header.unwrap().first_sequence,
        header.first_sequence
    );
    assert_replays(dir.path(), newest.first_sequence.unwrap(), more);
}

#[test]
fn a_header_of_another_log_in_a_newer_file_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = recycling_config(dir.path(), BackendChoice::Portable);
    fill(&config, 1, 300, 300);
    let report = read_dir(dir.path()).unwrap();
    let next = report.segments.last().unwrap().number + 1;
    // A segment of a different log (another salt), copied in under the next number.
    let other = tempfile::tempdir().unwrap();
    fill(
        &recycling_config(other.path(), BackendChoice::Portable),
        1,
        10,
        10,
    );
    let foreign = read_dir(other.path()).unwrap().segments[0].path.clone();
    std::fs::copy(&foreign, segment_path(dir.path(), next)).unwrap();
    let found = read_dir(dir.path()).unwrap();
    assert_eq!(found.segments.last().unwrap().stale_header_number, None);
    assert!(Wal::open(config).is_err(), "a foreign file was accepted");
}

/// The seeded power-loss model with recycling on: every acknowledged event survives crashes
/// that tear group writes into recycled segments and lose renames that were not yet durable.
#[test]
fn power_loss_with_recycling_never_loses_an_acknowledged_event() {
    let seeds: u64 = std::env::var("PROCMOND_WAL_RECYCLE_SIM_SEEDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(24);
    let mut recycled_seen = 0;
    for seed in 1..=seeds {
        recycled_seen += simulate_recycling(seed);
    }
    assert!(
        recycled_seen > 0,
        "no simulated run ever wrote to a recycled segment"
    );
}

/// One seeded run; returns how many reopens found a recycled segment.
fn simulate_recycling(seed: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::new();
    let rt = runtime();
    let mut rng = Lcg(seed);
    let mut config = recycling_config(dir.path(), BackendChoice::Simulated);
    config.sim_disk = Some(disk.clone());
    config.recycle_segments_max = 1 + (seed % 2) as usize;
    let mut durable: HashMap<u64, u64> = HashMap::new();
    let mut acked_through = 0;
    let mut next_id = 1;
    let mut recycled_seen = 0;
    for cycle in 0..5 {
        let entries: Vec<_> = WalReader::open(dir.path(), 0)
            .unwrap()
            .map(|entry| entry.unwrap())
            .collect();
        let (wal, opened) = Wal::open(config.clone())
            .unwrap_or_else(|error| panic!("seed {seed} cycle {cycle}: open: {error}"));
        recycled_seen += u64::from(opened.segments.iter().any(|s| s.recycled));
        let present: HashMap<u64, u64> = entries
            .iter()
            .map(|e| (e.sequence, u64::from(e.event.pid - 1000)))
            .collect();
        for (sequence, id) in durable.iter().filter(|(s, _)| **s > acked_through) {
            assert_eq!(
                present.get(sequence),
                Some(id),
                "seed {seed} cycle {cycle}: acknowledged {sequence} lost or changed"
            );
        }
        for entry in entries.iter().filter(|e| e.sequence < opened.next_sequence) {
            durable.insert(entry.sequence, u64::from(entry.event.pid - 1000));
        }
        acked_through = acked_through.max(opened.acked_through);
        let power_loss = !rng.next().is_multiple_of(4);
        rt.block_on(async {
            let appends = 100 + rng.next() % 600;
            let mut in_flight = Vec::new();
            for _ in 0..appends {
                let id = next_id;
                next_id += 1;
                if rng.next().is_multiple_of(8)
                    && let Some(&candidate) = durable.keys().max()
                    && wal.checkpoint(candidate).await.is_ok()
                {
                    acked_through = acked_through.max(candidate);
                }
                let receipt = wal.enqueue(event(id), kind(id)).await.unwrap();
                if rng.next().is_multiple_of(3) {
                    in_flight.push(receipt);
                } else {
                    let sequence = receipt.await.unwrap();
                    durable.insert(sequence, id);
                }
            }
            if power_loss {
                disk.power_cut();
            } else {
                disk.kill_process();
            }
            for receipt in in_flight {
                let _ = receipt.await;
            }
        });
        let _ = rt.block_on(wal.close());
        if power_loss {
            disk.crash(seed * 31 + cycle).unwrap();
        } else {
            disk.restart();
        }
    }
    recycled_seen
}
