//! Logs whose groups start on fresh 4096-byte blocks (`GroupStart::FreshBlock`): the zeros
//! between one group's last frame and the next block are group padding, not damage, while a
//! frame zeroed at the end of a block is still reported, as lost events.
//!
//! Expected counts come from the bytes this file writes or reads off the disk itself, never
//! from the report under test.

mod common;

use std::fs;
use std::path::Path;

use chrono::DateTime;
use common::{BACKENDS, event, kind, runtime, small_config};
use procmond_wal::wal::config::GroupStart;
use procmond_wal::wal::format::{
    self, FORMAT_VERSION, FrameSeed, SEGMENT_HEADER_BYTES, SegmentHeader, align_up,
};
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::recovery::{DamageKind, read_dir, read_dir_with};
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalReader};

const BLOCK: u64 = 4096;

fn fresh_block_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = small_config(dir, backend);
    config.group_start = GroupStart::FreshBlock;
    config
}

/// Appends events `first..first + count` one at a time (one group each), then closes.
fn append(config: &WalConfig, first: u64, count: u64) {
    let rt = runtime();
    let (wal, report) = Wal::open(config.clone()).unwrap();
    assert_eq!(report.next_sequence, first);
    rt.block_on(async {
        for i in first..first + count {
            assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
        }
        wal.close().await.unwrap();
    });
}

fn replayed_sequences(dir: &Path) -> Vec<u64> {
    WalReader::open(dir, 0)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            assert_eq!(entry.event, event(entry.sequence));
            entry.sequence
        })
        .collect()
}

fn verify(dir: &Path) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .arg("verify")
        .arg(dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
    )
}

/// How many frames of the log start on a block boundary with zero bytes right before them
/// (group padding): counted from the record offsets and the segment bytes.
fn padded_group_starts(dir: &Path) -> usize {
    let mut starts = Vec::new();
    read_dir_with(dir, |segment, offset, _| starts.push((segment, offset))).unwrap();
    starts
        .iter()
        .filter(|&&(segment, offset)| {
            let bytes = fs::read(segment_path(dir, segment)).unwrap();
            offset.is_multiple_of(BLOCK)
                && offset > SEGMENT_HEADER_BYTES as u64
                && bytes[offset as usize - 8..offset as usize]
                    .iter()
                    .all(|&b| b == 0)
        })
        .count()
}

#[test]
fn a_fresh_block_log_reads_clean_replays_everything_and_takes_appends() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = fresh_block_config(dir.path(), backend);
        append(&config, 1, 300);
        assert!(
            padded_group_starts(dir.path()) >= 100,
            "{backend:?}: the writer must have left group padding for this test to mean anything"
        );
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        assert_eq!((report.events, report.lost_events), (300, 0));
        assert_eq!(report.next_sequence, 301);
        let (code, text) = verify(dir.path());
        assert_eq!(code, 0, "{backend:?}: {text}");
        assert_eq!(
            replayed_sequences(dir.path()),
            (1..=300).collect::<Vec<_>>()
        );

        // Reopen and append, in the same mode and then in the other one.
        append(&config, 301, 50);
        let mut after_tail = config.clone();
        after_tail.group_start = GroupStart::AfterTail;
        append(&after_tail, 351, 50);
        append(&config, 401, 50);
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        assert_eq!((report.events, report.next_sequence), (450, 451));
        let (code, text) = verify(dir.path());
        assert_eq!(code, 0, "{backend:?}: {text}");
        assert_eq!(
            replayed_sequences(dir.path()),
            (1..=450).collect::<Vec<_>>()
        );
    }
}

const SALT: u64 = 0x0fe5_b10c_5a17_0001;

/// One frame of a built segment.
#[derive(Debug, Clone, Copy)]
struct Built {
    sequence: u64,
    offset: usize,
    end: usize,
}

/// Segment 1 holding groups of `group_size` events from 1 to `count`, each group formed once
/// the previous one was durable. With `fresh_block`, every group after the first starts on
/// the next block boundary (zeros in between), as the writer's fresh-block mode lays them
/// out; without, groups follow each other directly. A closing watermark frame ends it.
fn build_segment(count: u64, group_size: u64, fresh_block: bool) -> (Vec<u8>, Vec<Built>) {
    let seed = FrameSeed {
        segment_number: 1,
        salt: SALT,
    };
    let header = SegmentHeader {
        version: FORMAT_VERSION,
        segment_number: 1,
        first_sequence: 1,
        created_unix_ns: 1,
        salt: SALT,
    };
    let mut bytes = header.encode_block().to_vec();
    let mut frames = Vec::new();
    for sequence in 1..=count {
        let first_of_group = (sequence - 1).is_multiple_of(group_size);
        if fresh_block && first_of_group {
            bytes.resize(align_up(bytes.len(), BLOCK as usize), 0);
        }
        let watermark = (sequence - 1) / group_size * group_size;
        let offset = bytes.len();
        let event_bytes = format::encode_event(&event(sequence)).unwrap();
        format::push_event_frame(
            &mut bytes,
            seed,
            watermark,
            sequence,
            DateTime::from_timestamp_nanos(sequence as i64),
            kind(sequence),
            &event_bytes,
        );
        frames.push(Built {
            sequence,
            offset,
            end: bytes.len(),
        });
    }
    if fresh_block {
        bytes.resize(align_up(bytes.len(), BLOCK as usize), 0);
    }
    format::push_watermark_frame(&mut bytes, seed, count, DateTime::from_timestamp_nanos(99));
    bytes.resize(align_up(bytes.len(), BLOCK as usize), 0);
    (bytes, frames)
}

fn write_segment(dir: &Path, bytes: &[u8]) {
    fs::write(dir.join("procmond-00001.wal"), bytes).unwrap();
}

#[test]
fn a_built_fresh_block_segment_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, frames) = build_segment(30, 3, true);
    assert!(
        frames
            .iter()
            .filter(|f| (f.offset as u64).is_multiple_of(BLOCK))
            .count()
            >= 9
    );
    write_segment(dir.path(), &bytes);
    let report = read_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.damage);
    assert_eq!((report.events, report.next_sequence), (30, 31));
}

/// The last frame of a group zeroed: the zeros then run from the previous frame's end to the
/// next block boundary, exactly like padding. The sequence that skips at the boundary gives
/// it away: reported as a damaged region and as a lost (acknowledged) event.
#[test]
fn a_zeroed_last_frame_of_a_fresh_block_group_is_lost_events() {
    for group in 1..9 {
        let dir = tempfile::tempdir().unwrap();
        let (mut bytes, frames) = build_segment(30, 3, true);
        let victim = frames[group * 3 + 2];
        assert_eq!(victim.sequence, group as u64 * 3 + 3);
        assert_eq!(frames[group * 3 + 3].offset as u64 % BLOCK, 0);
        bytes[victim.offset..victim.end].fill(0);
        write_segment(dir.path(), &bytes);
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.lost_events, 1, "group {group}");
        assert_eq!(report.lost_acknowledged_events, 1, "group {group}");
        assert_eq!(report.gaps.len(), 1);
        assert_eq!(report.gaps[0].first_missing, victim.sequence);
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        let damage = &report.damage[0];
        assert_eq!(damage.kind, DamageKind::CorruptRecords);
        assert_eq!(damage.offset, frames[group * 3 + 1].end as u64);
        assert_eq!(
            damage.offset + damage.len_bytes,
            frames[group * 3 + 3].offset as u64
        );
        let (code, text) = verify(dir.path());
        assert_eq!(code, 1, "group {group}: {text}");
    }
}

/// A whole group zeroed (its frames and the padding after them): the next group's first
/// frame is not where the zeros end at the first boundary, so this is the damage it always
/// was.
#[test]
fn a_zeroed_whole_group_of_a_fresh_block_log_is_lost_events() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, frames) = build_segment(30, 3, true);
    bytes[frames[12].offset..frames[15].offset].fill(0);
    write_segment(dir.path(), &bytes);
    let report = read_dir(dir.path()).unwrap();
    assert_eq!(
        (report.lost_events, report.lost_acknowledged_events),
        (3, 3)
    );
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    assert_eq!(report.damage[0].kind, DamageKind::CorruptRecords);
    assert_eq!(verify(dir.path()).0, 1);
}

/// In a log without padding, zeroing any run of whole frames is reported as a damaged region
/// and lost events, wherever the run ends (on a block boundary or not).
#[test]
fn zeroed_frames_in_an_after_tail_log_stay_damage() {
    let (clean, frames) = build_segment(60, 3, false);
    let mut on_boundary = 0;
    for first in 1..frames.len() - 1 {
        for last in first..(first + 3).min(frames.len() - 1) {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = clean.clone();
            bytes[frames[first].offset..frames[last].end].fill(0);
            if (frames[last].end as u64).is_multiple_of(BLOCK) {
                on_boundary += 1;
            }
            write_segment(dir.path(), &bytes);
            let report = read_dir(dir.path()).unwrap();
            let hidden = (last - first + 1) as u64;
            assert_eq!(report.lost_events, hidden, "{first}..={last}");
            assert_eq!(report.damage.len(), 1, "{first}..={last}");
            assert_eq!(
                (report.damage[0].offset, report.damage[0].len_bytes),
                (
                    frames[first].offset as u64,
                    (frames[last + 1].offset - frames[first].offset) as u64
                ),
                "{first}..={last}"
            );
        }
    }
    // Not required for the property, but the interesting case is when it happens.
    eprintln!("runs ending on a block boundary: {on_boundary}");
}
