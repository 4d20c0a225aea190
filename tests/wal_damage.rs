//! Corruption and torn-tail recovery proven on real segment files written by both backends:
//! bit flips in payloads, frame headers and segment headers, zeroed blocks, and a torn tail at
//! every byte offset of the last records (truncated, zeroed or garbled).
//!
//! Expected counts come from frame positions this file reads off the disk itself (offsets
//! from `read_dir_with` on the undamaged log plus each frame's length word), never from the
//! report under test.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{BACKENDS, event, kind, runtime, small_config};
use procmond_wal::wal::format::{
    FORMAT_VERSION, FRAME_HEADER_BYTES, Record, SEGMENT_HEADER_BYTES, SegmentHeader, align_up,
};
use procmond_wal::wal::naming::segment_path;
use procmond_wal::wal::recovery::{DamageKind, OpenReport, read_dir, read_dir_from, read_dir_with};
use procmond_wal::wal::{BackendChoice, Wal, WalConfig, WalError, WalReader};

const BLOCK: usize = 4096;

/// An event frame as found on disk, with bounds computed from its own length word.
#[derive(Debug, Clone, Copy)]
struct Frame {
    sequence: u64,
    offset: usize,
    /// End of the CRC-covered bytes (header + payload); the padding after it is unchecked.
    payload_end: usize,
}

impl Frame {
    /// End of the frame including padding to 8 bytes: where the next frame starts.
    fn end(&self) -> usize {
        align_up(self.payload_end, 8)
    }
}

/// 64 KiB segments keep the exhaustive loops cheap.
fn tiny_config(dir: &Path, backend: BackendChoice) -> WalConfig {
    let mut config = small_config(dir, backend);
    config.segment_max_bytes = 64 * 1024;
    config.wal_max_bytes = 1024 * 1024;
    config
}

/// Appends events `1..=count` one at a time (one group each, so the tail block is rewritten
/// every time) and closes the log.
fn write_log(config: &WalConfig, count: u64) {
    let rt = runtime();
    let (wal, report) = Wal::open(config.clone()).unwrap();
    assert_eq!(report.next_sequence, 1);
    rt.block_on(async {
        for i in 1..=count {
            assert_eq!(wal.append(event(i), kind(i)).await.unwrap(), i);
        }
        wal.close().await.unwrap();
    });
}

/// The event frames of segment 1 of an undamaged log, in file order.
fn frames_of_segment_one(dir: &Path) -> Vec<Frame> {
    let bytes = fs::read(segment_path(dir, 1)).unwrap();
    let mut frames = Vec::new();
    let report = read_dir_with(dir, |segment, offset, record| {
        if let (1, Record::Event(entry)) = (segment, record) {
            let offset = offset as usize;
            let payload_len =
                u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            frames.push(Frame {
                sequence: entry.sequence,
                offset,
                payload_end: offset + FRAME_HEADER_BYTES + payload_len,
            });
        }
    })
    .unwrap();
    assert!(report.is_clean(), "the undamaged log must be clean");
    // Independent of the scanner: frames are contiguous from the end of the header block.
    assert_eq!(frames[0].offset, SEGMENT_HEADER_BYTES);
    for pair in frames.windows(2) {
        assert_eq!(pair[0].end(), pair[1].offset);
        assert_eq!(pair[0].sequence + 1, pair[1].sequence);
    }
    frames
}

/// A segment file being damaged over and over: each variant is written by patching only the
/// bytes that differ from the previous one (rewriting whole files dominated the loops' time).
struct Patched {
    file: fs::File,
    current: Vec<u8>,
}

impl Patched {
    fn open(path: &Path) -> Patched {
        let current = fs::read(path).unwrap();
        let file = fs::OpenOptions::new().write(true).open(path).unwrap();
        Patched { file, current }
    }

    fn set(&mut self, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let common = self.current.len().min(bytes.len());
        let first = (0..common).find(|&i| self.current[i] != bytes[i]);
        let last = (0..common).rev().find(|&i| self.current[i] != bytes[i]);
        if let (Some(first), Some(last)) = (first, last) {
            self.file
                .write_all_at(&bytes[first..=last], first as u64)
                .unwrap();
        }
        if bytes.len() != self.current.len() {
            self.file.set_len(bytes.len() as u64).unwrap();
            self.file
                .write_all_at(&bytes[common..], common as u64)
                .unwrap();
        }
        self.current = bytes.to_vec();
    }
}

fn flip_bit(bytes: &mut [u8], bit: usize) {
    bytes[bit / 8] ^= 1 << (bit % 8);
}

fn replayed(dir: &Path) -> Vec<(u64, procmond_wal::ProcessEvent)> {
    WalReader::open(dir, 0)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.sequence, entry.event)
        })
        .collect()
}

/// Asserts that exactly one region of corrupt records was skipped in segment 1.
fn assert_one_skipped_region(report: &OpenReport, offset: usize, len_bytes: usize) {
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    let damage = &report.damage[0];
    assert_eq!(
        (damage.segment, damage.offset, damage.len_bytes, damage.kind),
        (
            1,
            offset as u64,
            len_bytes as u64,
            DamageKind::CorruptRecords
        )
    );
}

fn assert_one_gap(report: &OpenReport, first_missing: u64, count: u64) {
    assert_eq!(report.gaps.len(), 1, "{:?}", report.gaps);
    assert_eq!(
        (report.gaps[0].first_missing, report.gaps[0].count),
        (first_missing, count)
    );
    assert_eq!(report.lost_events, count);
}

/// Opens the damaged log for writing, appends `more` events, closes, and checks that replay
/// yields exactly `survivors` (original ids) followed by the new events.
fn reopen_append_and_replay(
    config: &WalConfig,
    survivors: &[u64],
    next_sequence: u64,
    more: u64,
    what: &str,
) {
    let rt = runtime();
    let (wal, report) = Wal::open(config.clone()).unwrap();
    assert_eq!(report.next_sequence, next_sequence);
    let new_ids: Vec<u64> = (0..more).map(|i| 10_000 + i).collect();
    rt.block_on(async {
        for (i, &id) in new_ids.iter().enumerate() {
            assert_eq!(
                wal.append(event(id), kind(id)).await.unwrap(),
                next_sequence + i as u64
            );
        }
        wal.close().await.unwrap();
    });
    let mut expected: Vec<(u64, procmond_wal::ProcessEvent)> =
        survivors.iter().map(|&id| (id, event(id))).collect();
    for (i, &id) in new_ids.iter().enumerate() {
        expected.push((next_sequence + i as u64, event(id)));
    }
    let replayed = replayed(&config.dir);
    let sequences = |entries: &[(u64, procmond_wal::ProcessEvent)]| -> Vec<u64> {
        entries.iter().map(|(sequence, _)| *sequence).collect()
    };
    assert_eq!(sequences(&replayed), sequences(&expected), "{what}");
    assert_eq!(replayed, expected, "{what}");
}

#[test]
fn a_bit_flip_anywhere_in_a_payload_skips_exactly_that_record() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 20);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let victim = frames[9];
        for byte in victim.offset + FRAME_HEADER_BYTES..victim.payload_end {
            let mut damaged = original.clone();
            flip_bit(&mut damaged, byte * 8 + byte % 8);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 19, "{backend:?} byte {byte}");
            assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
            assert_one_gap(&report, 10, 1);
            assert_eq!(report.torn_tail_bytes, 0);
            assert_eq!(report.next_sequence, 21);
        }
        // The damage stays skipped across a reopen and appends continue after it.
        let survivors: Vec<u64> = (1..=20).filter(|&s| s != 10).collect();
        reopen_append_and_replay(&config, &survivors, 21, 3, "payload flip");
        let report = read_dir(dir.path()).unwrap();
        assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
        assert_eq!((report.events, report.lost_events), (22, 1));
    }
}

#[test]
fn every_bit_flip_in_a_frame_header_skips_exactly_that_record() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 12);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let victim = frames[4];
        for bit in 0..FRAME_HEADER_BYTES * 8 {
            let mut damaged = original.clone();
            flip_bit(&mut damaged, victim.offset * 8 + bit);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 11, "{backend:?} header bit {bit}");
            assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
            assert_one_gap(&report, 5, 1);
            assert_eq!(report.torn_tail_bytes, 0);
        }
        let survivors: Vec<u64> = (1..=12).filter(|&s| s != 5).collect();
        reopen_append_and_replay(&config, &survivors, 13, 2, "header flip");
    }
}

#[test]
fn nonzero_padding_is_reported_as_damage_and_the_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), BackendChoice::Portable);
    write_log(&config, 12);
    let frames = frames_of_segment_one(dir.path());
    let path = segment_path(dir.path(), 1);
    let original = fs::read(&path).unwrap();
    let mut target = Patched::open(&path);
    let padded: Vec<&Frame> = frames[..11]
        .iter()
        .filter(|f| f.end() > f.payload_end)
        .collect();
    assert!(!padded.is_empty(), "the sample events must include padding");
    for frame in padded {
        for index in frame.payload_end..frame.end() {
            let mut damaged = original.clone();
            damaged[index] = 0xff;
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 12);
            assert_eq!(report.lost_events, 0);
            assert!(!report.is_clean(), "padding byte {index} went unnoticed");
            assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
            let damage = &report.damage[0];
            assert_eq!(
                (damage.segment, damage.offset, damage.len_bytes, damage.kind),
                (
                    1,
                    frame.offset as u64,
                    (frame.end() - frame.offset) as u64,
                    DamageKind::NonzeroPadding
                )
            );
        }
    }
}

#[test]
fn every_bit_flip_in_a_segment_header_is_reported_and_the_records_are_still_read() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 8);
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        // Bytes 0..52 are magic, version, flags, number, first sequence, time, salt and CRC.
        for bit in 0..52 * 8 {
            let mut damaged = original.clone();
            flip_bit(&mut damaged, bit);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            assert_eq!(report.events, 8, "{backend:?} header bit {bit}");
            assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
            let damage = &report.damage[0];
            assert_eq!(
                (damage.segment, damage.offset, damage.len_bytes, damage.kind),
                (1, 0, BLOCK as u64, DamageKind::BadHeader)
            );
            assert!(report.segments[0].header.is_none());
            assert_eq!((report.lost_events, report.torn_tail_bytes), (0, 0));
            assert_eq!(report.next_sequence, 9);
        }
        // The rest of the header block (zeros and the salt's copy, which is read only when
        // the header is damaged) is not checked.
        let mut reserved = original.clone();
        reserved[52..BLOCK].fill(0x5a);
        target.set(&reserved);
        assert!(read_dir(dir.path()).unwrap().is_clean());

        // With a damaged header the segment is kept sealed; appends go to the next segment.
        let mut damaged = original.clone();
        flip_bit(&mut damaged, 20 * 8);
        target.set(&damaged);
        reopen_append_and_replay(&config, &(1..=8).collect::<Vec<_>>(), 9, 2, "bad header");
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.damage.len(), 1);
        assert_eq!(report.damage[0].kind, DamageKind::BadHeader);
        assert_eq!(report.lost_events, 0);
        let second = &report.segments[1];
        assert_eq!(second.number, 2);
        assert_eq!(second.header.map(|h| h.first_sequence), Some(9));
        assert_eq!(
            (second.first_sequence, second.last_sequence),
            (Some(9), Some(10))
        );
    }
}

#[test]
fn a_newer_format_version_refuses_to_open_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), BackendChoice::Portable);
    write_log(&config, 3);
    let path = segment_path(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let mut header = SegmentHeader::decode(&bytes).unwrap();
    header.version = FORMAT_VERSION + 1;
    bytes[..BLOCK].copy_from_slice(&header.encode_block());
    fs::write(&path, &bytes).unwrap();
    let listing = |dir: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let bytes = fs::read(&path).unwrap();
                (path, bytes)
            })
            .collect()
    };
    let before = listing(dir.path());
    match read_dir(dir.path()) {
        Err(WalError::UnsupportedVersion { version, .. }) => {
            assert_eq!(version, FORMAT_VERSION + 1)
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    match Wal::open(config) {
        Err(WalError::UnsupportedVersion { version, .. }) => {
            assert_eq!(version, FORMAT_VERSION + 1)
        }
        other => panic!(
            "expected UnsupportedVersion, got {:?}",
            other.map(|(_, r)| r)
        ),
    }
    assert_eq!(listing(dir.path()), before);
}

#[test]
fn a_zeroed_block_in_the_middle_loses_exactly_the_records_it_touches() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        let count = 120;
        write_log(&config, count);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let last_start = frames.last().unwrap().offset;
        let mut blocks_tested = 0;
        // Every data block that has a whole record after it.
        for block_start in (BLOCK..last_start).step_by(BLOCK) {
            let block_end = block_start + BLOCK;
            if block_end > last_start {
                break;
            }
            // A frame is touched when zeroing changes one of its CRC-covered bytes (bytes
            // that were zero already, such as a trailing zero variant index, do not count).
            let touched: Vec<usize> = (0..frames.len())
                .filter(|&i| {
                    let start = frames[i].offset.max(block_start);
                    let end = frames[i].payload_end.min(block_end);
                    start < end && original[start..end].iter().any(|&b| b != 0)
                })
                .collect();
            let (first, last) = (touched[0], *touched.last().unwrap());
            assert_eq!(last - first + 1, touched.len());
            let mut damaged = original.clone();
            damaged[block_start..block_end].fill(0);
            target.set(&damaged);
            let report = read_dir(dir.path()).unwrap();
            let lost = touched.len() as u64;
            assert_eq!(
                report.events,
                count - lost,
                "{backend:?} block {block_start}"
            );
            assert_one_skipped_region(
                &report,
                frames[first].offset,
                frames[last + 1].offset - frames[first].offset,
            );
            assert_one_gap(&report, frames[first].sequence, lost);
            assert_eq!(report.torn_tail_bytes, 0);
            assert_eq!(report.last_sequence, Some(count));
            blocks_tested += 1;
            if blocks_tested == 2 {
                // One sample goes through open, append and replay.
                let survivors: Vec<u64> = frames
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !touched.contains(i))
                    .map(|(_, f)| f.sequence)
                    .collect();
                let scratch = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), scratch.path());
                let scratch_config = tiny_config(scratch.path(), backend);
                reopen_append_and_replay(&scratch_config, &survivors, count + 1, 2, "zeroed block");
            }
        }
        assert!(blocks_tested >= 4, "only {blocks_tested} blocks tested");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// How the end of the newest segment is damaged from the cut offset on.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// The file ends at the cut (`set_len`).
    Truncate,
    /// The file keeps its preallocated size; the bytes from the cut to the end of the last
    /// written block are zeros.
    Zeros,
    /// As `Zeros`, but with non-zero garbage.
    Garbage,
}

const TEARS: [Tear; 3] = [Tear::Truncate, Tear::Zeros, Tear::Garbage];

fn torn(original: &[u8], cut: usize, written_end: usize, tear: Tear) -> Vec<u8> {
    match tear {
        Tear::Truncate => original[..cut].to_vec(),
        Tear::Zeros => {
            let mut bytes = original.to_vec();
            bytes[cut..written_end].fill(0);
            bytes
        }
        Tear::Garbage => {
            let mut bytes = original.to_vec();
            let mut state = cut as u64 ^ 0x9e37_79b9_7f4a_7c15;
            for byte in &mut bytes[cut..written_end] {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                *byte = (state >> 56) as u8 | 1;
            }
            bytes
        }
    }
}

/// What a correct reader must find in a torn segment: the complete frames (CRC-covered bytes
/// all before the cut), where the records end, and the non-zero bytes after that end, counted
/// in whole 8-byte words (the last one cut short by the end of the file).
struct TornExpectation {
    complete: Vec<Frame>,
    torn_tail_bytes: u64,
    /// The last complete frame, when the tear put nonzero bytes into its padding (damage to
    /// report; the record itself is kept).
    dirty_padding: Option<Frame>,
    /// Where the records end.
    data_end: usize,
    /// The tear changed exactly one CRC-covered byte of the first incomplete frame, in a way
    /// a torn write (whole sectors left as zeros) cannot explain: the reader must report the
    /// end as damage, not as a torn tail.
    corrupted_end: bool,
}

fn expect_torn(
    frames: &[Frame],
    base: &[u8],
    bytes: &[u8],
    cut: usize,
    victim: Option<usize>,
) -> TornExpectation {
    // Zeroing a payload's trailing zero bytes (or garbling a byte into its own value) changes
    // nothing: the damage starts at the first byte that differs.
    let first_changed = (cut..base.len())
        .find(|&i| bytes.get(i) != Some(&base[i]))
        .unwrap_or(base.len());
    let complete_all: Vec<Frame> = frames
        .iter()
        .copied()
        .filter(|f| f.payload_end <= first_changed)
        .collect();
    let data_end = complete_all.last().unwrap().end();
    let last_complete = *complete_all.last().unwrap();
    let dirty_padding = bytes
        .get(last_complete.payload_end..last_complete.end().min(bytes.len()))
        .is_some_and(|padding| padding.iter().any(|&b| b != 0))
        .then_some(last_complete);
    let torn_tail_bytes = match bytes.iter().skip(data_end).rposition(|&b| b != 0) {
        None => 0,
        Some(last) => (align_up(data_end + last + 1, 8).min(bytes.len()) - data_end) as u64,
    };
    let byte_at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let first_torn = frames.iter().find(|f| f.payload_end > first_changed);
    let corrupted_end = (1..=512).contains(&torn_tail_bytes)
        && first_torn.is_some_and(|frame| {
            let differing: Vec<usize> = (frame.offset..frame.payload_end)
                .filter(|&i| byte_at(i) != base[i])
                .collect();
            let [index] = differing[..] else {
                return false;
            };
            let sector = index / 512 * 512;
            let zero_sector = (sector.max(data_end)..sector + 512).all(|j| byte_at(j) == 0);
            byte_at(index) != 0 || !zero_sector
        });
    let complete = complete_all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != victim)
        .map(|(_, f)| f)
        .collect();
    TornExpectation {
        complete,
        torn_tail_bytes,
        dirty_padding,
        data_end,
        corrupted_end,
    }
}

fn check_torn_report(
    report: &OpenReport,
    expected: &TornExpectation,
    victim: Option<Frame>,
    what: &str,
) {
    let last = expected.complete.last().unwrap().sequence;
    assert_eq!(report.events, expected.complete.len() as u64, "{what}");
    assert_eq!(report.last_sequence, Some(last), "{what}");
    assert_eq!(report.next_sequence, last + 1, "{what}");
    let (ends, damage): (Vec<_>, Vec<_>) = report
        .damage
        .iter()
        .cloned()
        .partition(|d| d.kind == DamageKind::DamagedEnd);
    if expected.corrupted_end {
        assert_eq!(report.torn_tail_bytes, 0, "{what}");
        assert_eq!(
            ends.iter()
                .map(|d| (d.offset as usize, d.len_bytes))
                .collect::<Vec<_>>(),
            vec![(expected.data_end, expected.torn_tail_bytes)],
            "{what}"
        );
    } else {
        assert_eq!(report.torn_tail_bytes, expected.torn_tail_bytes, "{what}");
        assert!(ends.is_empty(), "{what}: {ends:?}");
    }
    let (padding, other): (Vec<_>, Vec<_>) = damage
        .into_iter()
        .partition(|d| d.kind == DamageKind::NonzeroPadding);
    assert_eq!(
        padding
            .iter()
            .map(|d| d.offset as usize)
            .collect::<Vec<_>>(),
        expected
            .dirty_padding
            .iter()
            .map(|f| f.offset)
            .collect::<Vec<_>>(),
        "{what}"
    );
    let report = OpenReport {
        damage: other,
        ..report.clone()
    };
    match victim {
        None => {
            assert!(report.damage.is_empty(), "{what}: {:?}", report.damage);
            assert_eq!(report.lost_events, 0, "{what}");
        }
        Some(victim) => {
            assert_one_skipped_region(&report, victim.offset, victim.end() - victim.offset);
            assert_one_gap(&report, victim.sequence, 1);
        }
    }
}

/// The exhaustive part uses the read-only scan; `Wal::open` runs on a sample of cuts.
#[test]
fn a_torn_tail_at_every_offset_of_the_last_records_keeps_everything_before_it() {
    let count = 16u64;
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, count);
        let frames = frames_of_segment_one(dir.path());
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut target = Patched::open(&path);
        let last = *frames.last().unwrap();
        let written_end = align_up(last.payload_end, BLOCK);
        let first_cut = frames[frames.len() - 4].offset;
        let victim_index = 2;
        let mut flipped = original.clone();
        flip_bit(&mut flipped, (frames[victim_index].offset + 30) * 8);
        let mut checked = 0u64;
        for (base, victim) in [(&original, None), (&flipped, Some(victim_index))] {
            for tear in TEARS {
                for cut in first_cut..=last.end() {
                    let bytes = torn(base, cut, written_end, tear);
                    target.set(&bytes);
                    let report = read_dir(dir.path()).unwrap();
                    let expected = expect_torn(&frames, base, &bytes, cut, victim);
                    let what = format!("{backend:?} {tear:?} cut {cut} victim {victim:?}");
                    check_torn_report(&report, &expected, victim.map(|i| frames[i]), &what);
                    checked += 1;
                }
            }
        }
        let per_pass = (last.end() - first_cut + 1) as u64;
        assert_eq!(checked, per_pass * 6);

        // Sample: cuts inside the header, the payload and the padding of the last frames.
        let mut samples = Vec::new();
        for frame in &frames[frames.len() - 3..] {
            samples.extend([
                frame.offset + 1,
                frame.offset + FRAME_HEADER_BYTES,
                frame.payload_end - 1,
                frame.payload_end + 1,
            ]);
        }
        for tear in TEARS {
            for &cut in &samples {
                let bytes = torn(&original, cut, written_end, tear);
                let scratch = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), scratch.path());
                fs::write(segment_path(scratch.path(), 1), &bytes).unwrap();
                let expected = expect_torn(&frames, &original, &bytes, cut, None);
                let what = format!("open {backend:?} {tear:?} cut {cut}");
                let scratch_config = tiny_config(scratch.path(), backend);
                let (wal, report) = Wal::open(scratch_config.clone()).unwrap();
                check_torn_report(&report, &expected, None, &what);
                runtime().block_on(wal.close()).unwrap();
                // Opening for writing cut a torn tail (and kept a damaged end, writing on in a
                // new segment): a second read finds no torn tail and nothing lost.
                let again = read_dir(scratch.path()).unwrap();
                assert_eq!(again.torn_tail_bytes, 0, "{what}");
                let padding_only = again.damage.iter().all(|d| {
                    d.kind == DamageKind::NonzeroPadding
                        || (expected.corrupted_end && d.kind == DamageKind::DamagedEnd)
                });
                assert!(
                    padding_only && again.gaps.is_empty(),
                    "{what}: {:?}",
                    again.damage
                );
                assert_eq!(again.events, expected.complete.len() as u64, "{what}");
                let survivors: Vec<u64> = expected.complete.iter().map(|f| f.sequence).collect();
                let next = survivors.last().unwrap() + 1;
                reopen_append_and_replay(&scratch_config, &survivors, next, 3, &what);
                let after = read_dir(scratch.path()).unwrap();
                let padding_only = after.damage.iter().all(|d| {
                    d.kind == DamageKind::NonzeroPadding
                        || (expected.corrupted_end && d.kind == DamageKind::DamagedEnd)
                });
                assert!(
                    padding_only && after.gaps.is_empty(),
                    "{what}: {:?}",
                    after.damage
                );
                assert_eq!((after.torn_tail_bytes, after.lost_events), (0, 0), "{what}");
            }
        }
    }
}

/// A file cut inside the zero padding after its last complete frame (an 8-byte-unaligned
/// length) must still resume writing at the next 8-byte boundary, or the events appended
/// afterwards are unreadable (and the next open would cut them as a torn tail).
#[test]
fn truncation_inside_the_padding_of_the_last_frame_keeps_later_appends() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        write_log(&config, 6);
        let frames = frames_of_segment_one(dir.path());
        let last = frames
            .iter()
            .rev()
            .find(|f| f.end() - f.payload_end >= 2)
            .copied()
            .expect("a frame with padding");
        let cut = last.payload_end + 1;
        let path = segment_path(dir.path(), 1);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.last_sequence, Some(last.sequence));
        assert_eq!(report.torn_tail_bytes, 0);
        let survivors: Vec<u64> = (1..=last.sequence).collect();
        reopen_append_and_replay(
            &config,
            &survivors,
            last.sequence + 1,
            3,
            &format!(
                "{backend:?} cut {cut} in the padding of frame {}",
                last.sequence
            ),
        );
        let after = read_dir(dir.path()).unwrap();
        assert_eq!(after.events, last.sequence + 3);
        assert_eq!(after.torn_tail_bytes, 0);
    }
}

/// Without preallocation a prepared segment is an empty file: it is as blank as a zeroed one
/// and must not be reported as a damaged header (nor stop the newest segment from resuming).
#[test]
fn a_prepared_segment_without_preallocation_is_blank_not_damage() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = tiny_config(dir.path(), backend);
        config.preallocation = procmond_wal::io::Preallocation::None;
        write_log(&config, 5);
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.events, 5);
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        assert_eq!(report.last_written_index(), Some(0), "{backend:?}");
        reopen_append_and_replay(&config, &[1, 2, 3, 4, 5], 6, 2, "no preallocation");
        let report = read_dir(dir.path()).unwrap();
        assert!(report.is_clean(), "{backend:?}: {:?}", report.damage);
        // Still one written segment: the newest one resumed instead of being sealed.
        let written = report.segments.iter().filter(|s| !s.is_blank()).count();
        assert_eq!(written, 1, "{backend:?}");
    }
}

/// Event frames of every segment, by segment number, for a log that spans several segments.
fn frames_by_segment(dir: &Path) -> BTreeMap<u64, Vec<Frame>> {
    let mut files: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut frames: BTreeMap<u64, Vec<Frame>> = BTreeMap::new();
    let report = read_dir_with(dir, |segment, offset, record| {
        if let Record::Event(entry) = record {
            let bytes = files
                .entry(segment)
                .or_insert_with(|| fs::read(segment_path(dir, segment)).unwrap());
            let offset = offset as usize;
            let payload_len =
                u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            frames.entry(segment).or_default().push(Frame {
                sequence: entry.sequence,
                offset,
                payload_end: offset + FRAME_HEADER_BYTES + payload_len,
            });
        }
    })
    .unwrap();
    assert!(report.is_clean());
    frames
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_and_a_missing_segment_count_their_lost_events() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), backend);
        let count = 700;
        write_log(&config, count);
        let frames = frames_by_segment(dir.path());
        assert!(frames.len() >= 3, "{backend:?}: expected rotation");
        let first = &frames[&1];
        let second = &frames[&2];
        let all: Vec<u64> = (1..=count).collect();

        // The last record of sealed segment 1 is garbled: nothing valid follows it there, so
        // it is a damaged end (not a torn tail), and segment 2's header shows the gap.
        let victim = *first.last().unwrap();
        let path = segment_path(dir.path(), 1);
        let original = fs::read(&path).unwrap();
        let mut damaged = original.clone();
        flip_bit(&mut damaged, (victim.offset + 20) * 8 + 3);
        fs::write(&path, &damaged).unwrap();
        let report = read_dir(dir.path()).unwrap();
        let nonzero_end = (victim.offset..damaged.len())
            .rev()
            .find(|&i| damaged[i] != 0)
            .map(|i| align_up(i + 1, 8))
            .unwrap();
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        let damage = &report.damage[0];
        assert_eq!(
            (damage.segment, damage.offset, damage.len_bytes, damage.kind),
            (
                1,
                victim.offset as u64,
                (nonzero_end - victim.offset) as u64,
                DamageKind::DamagedEnd
            )
        );
        assert_one_gap(&report, victim.sequence, 1);
        assert_eq!((report.events, report.torn_tail_bytes), (count - 1, 0));
        let survivors: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&s| s != victim.sequence)
            .collect();
        let scratch = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), scratch.path());
        reopen_append_and_replay(
            &tiny_config(scratch.path(), backend),
            &survivors,
            count + 1,
            2,
            "damaged end",
        );
        fs::write(&path, &original).unwrap();

        // A whole middle segment is gone.
        fs::remove_file(segment_path(dir.path(), 2)).unwrap();
        let report = read_dir(dir.path()).unwrap();
        assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
        assert_eq!(
            (report.damage[0].segment, report.damage[0].kind),
            (2, DamageKind::MissingSegment)
        );
        let lost = second.len() as u64;
        assert_one_gap(&report, second[0].sequence, lost);
        assert_eq!(report.events, count - lost);
        let survivors: Vec<u64> = all
            .iter()
            .copied()
            .filter(|s| !second.iter().any(|f| f.sequence == *s))
            .collect();
        reopen_append_and_replay(&config, &survivors, count + 1, 2, "missing segment");
    }
}

// ---------------------------------------------------------------------------------------
// Version 2 logs built frame by frame (durable watermarks, clean close), unreadable blocks,
// durable-bounded replay and the per-WAL salt.
// ---------------------------------------------------------------------------------------

mod built {
    use std::collections::HashMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use chrono::DateTime;
    use procmond_wal::io::read::{OsOpener, ReadAt, SegmentOpener};
    use procmond_wal::wal::format::{
        self, FORMAT_VERSION, FrameSeed, SEGMENT_HEADER_BYTES, SegmentHeader, align_up,
    };

    use super::{event, kind};

    pub const SALT: u64 = 0x00c0_ffee_5a17_0042;

    /// One frame of a built segment.
    #[derive(Debug, Clone, Copy)]
    pub struct Built {
        /// Event sequence (None: a watermark or checkpoint frame).
        pub sequence: Option<u64>,
        pub offset: usize,
        pub end: usize,
    }

    pub fn seed() -> FrameSeed {
        FrameSeed {
            segment_number: 1,
            salt: SALT,
        }
    }

    /// Segment 1 holding `groups` (each: the durable watermark when it was formed, and its
    /// event sequences), then a closing watermark frame if `closed_at` is set; padded to
    /// whole blocks.
    pub fn segment(groups: &[(u64, Vec<u64>)], closed_at: Option<u64>) -> (Vec<u8>, Vec<Built>) {
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            segment_number: 1,
            first_sequence: groups[0].1[0],
            created_unix_ns: 1,
            salt: SALT,
        };
        let mut bytes = header.encode_block().to_vec();
        let mut frames = Vec::new();
        for (watermark, sequences) in groups {
            for &sequence in sequences {
                let offset = bytes.len();
                let event_bytes = format::encode_event(&event(sequence)).unwrap();
                format::push_event_frame(
                    &mut bytes,
                    seed(),
                    *watermark,
                    sequence,
                    DateTime::from_timestamp_nanos(sequence as i64),
                    kind(sequence),
                    &event_bytes,
                );
                frames.push(Built {
                    sequence: Some(sequence),
                    offset,
                    end: bytes.len(),
                });
            }
        }
        if let Some(watermark) = closed_at {
            let offset = bytes.len();
            format::push_watermark_frame(
                &mut bytes,
                seed(),
                watermark,
                DateTime::from_timestamp_nanos(99),
            );
            frames.push(Built {
                sequence: None,
                offset,
                end: bytes.len(),
            });
        }
        bytes.resize(align_up(bytes.len(), SEGMENT_HEADER_BYTES), 0);
        (bytes, frames)
    }

    /// Groups of `size` events from 1 to `count`, each formed once the previous was durable.
    pub fn groups(count: u64, size: u64) -> Vec<(u64, Vec<u64>)> {
        (0..count.div_ceil(size))
            .map(|g| {
                let first = g * size + 1;
                (first - 1, (first..=(first + size - 1).min(count)).collect())
            })
            .collect()
    }

    pub fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("procmond-00001.wal");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Serves segment files from memory (the damage loops change bytes thousands of times).
    #[derive(Default, Clone)]
    pub struct Memory {
        pub files: Arc<Mutex<HashMap<PathBuf, Vec<u8>>>>,
    }

    impl Memory {
        pub fn set(&self, path: &Path, bytes: Vec<u8>) {
            self.files.lock().unwrap().insert(path.to_path_buf(), bytes);
        }
    }

    pub struct MemoryFile(Vec<u8>);

    impl ReadAt for MemoryFile {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let mut slice = &self.0[..];
            slice.read_at(buf, offset)
        }

        fn len_bytes(&mut self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }
    }

    impl SegmentOpener for Memory {
        fn open_segment(&self, path: &Path) -> io::Result<Box<dyn ReadAt + Send>> {
            match self.files.lock().unwrap().get(path) {
                Some(bytes) => Ok(Box::new(MemoryFile(bytes.clone()))),
                None => Err(io::Error::from(io::ErrorKind::NotFound)),
            }
        }
    }

    /// Real files, except that every read touching one of `bad_blocks` (4 KiB block numbers
    /// of the named file) fails with EIO, as a bad sector does.
    pub struct FailingBlocks {
        pub path: PathBuf,
        pub bad_blocks: Vec<u64>,
    }

    struct FailingFile {
        inner: Box<dyn ReadAt + Send>,
        bad_blocks: Vec<u64>,
    }

    impl ReadAt for FailingFile {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let end = offset + buf.len() as u64;
            if self
                .bad_blocks
                .iter()
                .any(|&block| block * 4096 < end && (block + 1) * 4096 > offset)
            {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.read_at(buf, offset)
        }

        fn len_bytes(&mut self) -> io::Result<u64> {
            self.inner.len_bytes()
        }
    }

    impl SegmentOpener for FailingBlocks {
        fn open_segment(&self, path: &Path) -> io::Result<Box<dyn ReadAt + Send>> {
            let inner = OsOpener.open_segment(path)?;
            let bad_blocks = if path == self.path {
                self.bad_blocks.clone()
            } else {
                Vec::new()
            };
            Ok(Box::new(FailingFile { inner, bad_blocks }))
        }
    }
}

fn verify_text(dir: &Path) -> (i32, String) {
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

#[test]
fn zeroing_the_last_event_of_a_cleanly_closed_log_names_it_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, frames) = built::segment(&built::groups(10, 3), Some(10));
    let last_event = frames[9];
    assert_eq!(last_event.sequence, Some(10));
    bytes[last_event.offset..last_event.end].fill(0);
    built::write(dir.path(), &bytes);
    let report = read_dir(dir.path()).unwrap();
    assert_eq!(report.durable_watermark, 10);
    assert_eq!((report.last_sequence, report.next_sequence), (Some(9), 11));
    assert_one_gap(&report, 10, 1);
    assert_eq!(report.lost_acknowledged_events, 1);
    let (code, text) = verify_text(dir.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("lost acknowledged sequences: 10\n"), "{text}");
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_procmond-wal"))
        .arg("stats")
        .arg(dir.path())
        .output()
        .unwrap();
    let stats = String::from_utf8(stats.stdout).unwrap();
    assert!(stats.contains("next sequence: 11\n"), "{stats}");
}

#[test]
fn damage_above_the_watermark_in_the_final_group_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    // Three groups; the last one (7..=9, formed when 6 was durable) was torn: the sector
    // holding event 8 never reached the disk, the one holding event 9 did.
    let (mut bytes, frames) = built::segment(&built::groups(9, 3), None);
    let torn = frames[7];
    bytes[torn.offset..torn.end].fill(0);
    built::write(dir.path(), &bytes);
    let report = read_dir(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?} {:?}", report.damage, report.gaps);
    assert_eq!(report.durable_watermark, 6);
    assert_eq!(report.last_sequence, Some(7));
    assert_eq!(report.next_sequence, 8);
    assert_eq!(report.events, 7);
    let segment = &report.segments[0];
    assert_eq!(segment.data_end, torn.offset as u64);
    assert_eq!(report.torn_tail_bytes, (frames[8].end - torn.offset) as u64);
    let (code, text) = verify_text(dir.path());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("every sequence up to the durable watermark 6 was found"),
        "{text}"
    );
    // Opening for writing cuts it and hands out 8 again (it was never acknowledged).
    let config = tiny_config(dir.path(), BackendChoice::Portable);
    reopen_append_and_replay(&config, &(1..=7).collect::<Vec<_>>(), 8, 2, "torn group");
    assert!(read_dir(dir.path()).unwrap().is_clean());
}

#[test]
fn damage_at_or_below_the_watermark_is_lost_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, frames) = built::segment(&built::groups(9, 3), None);
    // Event 5 was acknowledged: the last group says 6 was durable when it was formed.
    bytes[frames[4].offset + 30] ^= 0x04;
    built::write(dir.path(), &bytes);
    let report = read_dir(dir.path()).unwrap();
    assert_one_gap(&report, 5, 1);
    assert_eq!(report.lost_acknowledged_events, 1);
    assert_eq!(report.next_sequence, 10);
    let (code, text) = verify_text(dir.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("lost acknowledged sequences: 5\n"), "{text}");
}

#[test]
fn next_sequence_never_goes_below_the_durable_watermark() {
    let dir = tempfile::tempdir().unwrap();
    // Events 6..=8 were acknowledged (the closing watermark says so) but their frames are
    // gone; no later event exists to show the gap.
    let (mut bytes, frames) = built::segment(&built::groups(8, 5), Some(8));
    bytes[frames[5].offset..frames[7].end].fill(0);
    built::write(dir.path(), &bytes);
    let report = read_dir(dir.path()).unwrap();
    assert_eq!(report.last_sequence, Some(5));
    assert_eq!(report.next_sequence, 9);
    assert_one_gap(&report, 6, 3);
    assert_eq!(report.lost_acknowledged_events, 3);
    let (wal, report) = Wal::open(tiny_config(dir.path(), BackendChoice::Portable)).unwrap();
    assert_eq!(report.next_sequence, 9);
    let appended = runtime().block_on(async {
        let sequence = wal.append(event(1), kind(1)).await.unwrap();
        wal.close().await.unwrap();
        sequence
    });
    assert_eq!(
        appended, 9,
        "sequences 6..=8 were acknowledged and must not be reused"
    );
}

#[test]
fn unreadable_blocks_are_damage_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, frames) = built::segment(&built::groups(80, 4), Some(80));
    assert!(bytes.len() >= 4 * BLOCK);
    let path = built::write(dir.path(), &bytes);
    let failing = built::FailingBlocks {
        path: path.clone(),
        bad_blocks: vec![2],
    };
    let touched: Vec<u64> = frames
        .iter()
        .filter(|f| f.offset < 3 * BLOCK && f.end > 2 * BLOCK)
        .filter_map(|f| f.sequence)
        .collect();
    assert!(!touched.is_empty());
    let report = read_dir_from(dir.path(), &failing, |_, _, _| {}).unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.kind == DamageKind::UnreadableBlock
                && d.offset == 2 * BLOCK as u64
                && d.len_bytes == BLOCK as u64),
        "{:?}",
        report.damage
    );
    assert_eq!(report.events, 80 - touched.len() as u64);
    assert_eq!(report.lost_events, touched.len() as u64);
    assert_eq!(report.next_sequence, 81);
    // Replay steps over the unreadable block too.
    let opener: procmond_wal::wal::reader::SharedOpener = std::sync::Arc::new(failing);
    let mut reader = WalReader::open_with(dir.path(), 1, None, opener).unwrap();
    let replayed: Vec<u64> = reader.by_ref().map(|e| e.unwrap().sequence).collect();
    let expected: Vec<u64> = (1..=80).filter(|s| !touched.contains(s)).collect();
    assert_eq!(replayed, expected);
    assert!(reader.skipped_regions() >= 1);
}

#[test]
fn an_unreadable_header_block_loses_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = built::segment(&built::groups(20, 4), Some(20));
    let path = built::write(dir.path(), &bytes);
    let failing = built::FailingBlocks {
        path,
        bad_blocks: vec![0],
    };
    let report = read_dir_from(dir.path(), &failing, |_, _, _| {}).unwrap();
    // The header is gone, and with it the only copy of the salt this directory has: the
    // frames cannot be verified. The report says so instead of failing.
    assert!(!report.is_clean());
    assert!(
        report
            .damage
            .iter()
            .any(|d| d.kind == DamageKind::UnreadableBlock && d.offset == 0)
    );
}

#[test]
fn replay_stops_at_a_group_still_being_written_and_resumes_when_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    // Groups 1..=3 (watermark 0) and 4..=6 (watermark 3); the write of the second group has
    // landed except the frame of event 5 (its sectors are still in flight).
    let (complete, frames) = built::segment(&[(0, vec![1, 2, 3]), (3, vec![4, 5, 6])], None);
    let mut in_flight = complete.clone();
    in_flight[frames[4].offset..frames[4].end].fill(0);
    let path = built::write(dir.path(), &in_flight);
    let mut reader = WalReader::open(dir.path(), 1).unwrap();
    let seen: Vec<u64> = reader.by_ref().map(|e| e.unwrap().sequence).collect();
    assert_eq!(seen, vec![1, 2, 3, 4], "must not step over 5 to 6");
    assert!(reader.stopped_early());
    // The write completes; a reader from the next sequence gets the rest.
    fs::write(&path, &complete).unwrap();
    let rest: Vec<u64> = WalReader::open(dir.path(), 5)
        .unwrap()
        .map(|e| e.unwrap().sequence)
        .collect();
    assert_eq!(rest, vec![5, 6]);
}

#[test]
fn durable_replay_yields_nothing_above_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, frames) = built::segment(&built::groups(12, 4), None);
    built::write(dir.path(), &bytes);
    let mut reader = WalReader::open_durable(dir.path(), 3, 9).unwrap();
    let seen: Vec<u64> = reader.by_ref().map(|e| e.unwrap().sequence).collect();
    assert_eq!(seen, (3..=9).collect::<Vec<_>>());
    assert!(reader.stopped_early());
    // Damage below the bound is stepped over; at or above it, the reader stops.
    let mut damaged = bytes.clone();
    damaged[frames[4].offset + 40] ^= 1;
    built::write(dir.path(), &damaged);
    let seen: Vec<u64> = WalReader::open_durable(dir.path(), 1, 9)
        .unwrap()
        .map(|e| e.unwrap().sequence)
        .collect();
    assert_eq!(seen, vec![1, 2, 3, 4, 6, 7, 8, 9]);
}

#[test]
fn a_live_log_replays_only_what_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(dir.path(), BackendChoice::Portable);
    let (wal, _) = Wal::open(config).unwrap();
    runtime().block_on(async {
        for i in 1..=5 {
            wal.append(event(i), kind(i)).await.unwrap();
        }
    });
    let durable = wal.durable_sequence();
    assert_eq!(durable, 5);
    let replayed: Vec<u64> = wal
        .replay_from(1)
        .unwrap()
        .map(|e| e.unwrap().sequence)
        .collect();
    assert_eq!(replayed, (1..=5).collect::<Vec<_>>());
    runtime().block_on(wal.close()).unwrap();
}

/// Bytes that would pass as a frame after damage make the scanner resynchronise inside an
/// event's payload. With the salt in every CRC, a frame forged without knowing the salt is
/// never accepted; the same bytes with the right salt would be (so the test can fail).
#[test]
fn resync_accepts_only_frames_that_carry_the_wals_salt() {
    use procmond_wal::wal::format::FrameSeed;
    for (salt, expect_forged) in [(built::SALT ^ 1, false), (built::SALT, true)] {
        let forged_seed = FrameSeed {
            segment_number: 1,
            salt,
        };
        // A frame claiming sequence 2, smuggled into the command line of event 1.
        let mut forged = Vec::new();
        let forged_event = procmond_wal::ProcessEvent::new(
            666,
            "forged",
            chrono::DateTime::from_timestamp_nanos(0),
        );
        procmond_wal::wal::format::push_event_frame(
            &mut forged,
            forged_seed,
            1,
            2,
            chrono::DateTime::from_timestamp_nanos(0),
            procmond_wal::EventKind::Start,
            &procmond_wal::wal::format::encode_event(&forged_event).unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            segment_number: 1,
            first_sequence: 1,
            created_unix_ns: 1,
            salt: built::SALT,
        };
        let mut bytes = header.encode_block().to_vec();
        // Event 1: a genuine frame whose payload carries the forged frame, 8-aligned in the
        // file (the carrier is damaged below, so its payload need not decode).
        let mut carrier = event(1);
        carrier.command_line = vec!["x".repeat(3)];
        let mut event_bytes = procmond_wal::wal::format::encode_event(&carrier).unwrap();
        // Pad so that the forged bytes start 8-aligned in the file once appended.
        let start = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 16 + event_bytes.len();
        event_bytes.extend(std::iter::repeat_n(0xaa, align_up(start, 8) - start));
        event_bytes.extend_from_slice(&forged);
        let victim_offset = bytes.len();
        procmond_wal::wal::format::push_event_frame(
            &mut bytes,
            built::seed(),
            0,
            1,
            chrono::DateTime::from_timestamp_nanos(1),
            kind(1),
            &event_bytes,
        );
        let genuine_two = bytes.len();
        procmond_wal::wal::format::push_event_frame(
            &mut bytes,
            built::seed(),
            1,
            2,
            chrono::DateTime::from_timestamp_nanos(2),
            kind(2),
            &procmond_wal::wal::format::encode_event(&event(2)).unwrap(),
        );
        bytes.resize(align_up(bytes.len(), BLOCK), 0);
        // Damage the carrier's header so the scanner resynchronises inside its payload.
        bytes[victim_offset + 9] ^= 0x20;
        built::write(dir.path(), &bytes);
        let mut found = Vec::new();
        read_dir_with(dir.path(), |_, offset, record| {
            if let Record::Event(entry) = record {
                found.push((offset as usize, entry.event.pid));
            }
        })
        .unwrap();
        let forged_found = found.iter().any(|&(_, pid)| pid == 666);
        assert_eq!(forged_found, expect_forged, "salt {salt:#x}: {found:?}");
        assert!(found.contains(&(genuine_two, event(2).pid)) || expect_forged);
    }
}

/// The done criterion: any one-byte change inside the records of a cleanly closed log (frame
/// header, payload or padding) is reported as damage and loses at most the record it hit.
/// Every byte of every frame, each set to several values.
#[test]
fn any_one_byte_change_in_a_cleanly_closed_log_is_damage_and_loses_at_most_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (original, frames) = built::segment(&built::groups(14, 3), Some(14));
    let path = built::write(dir.path(), &original);
    let memory = built::Memory::default();
    let records_end = frames.last().unwrap().end;
    let mut checked = 0u64;
    for position in SEGMENT_HEADER_BYTES..records_end {
        let hit = frames
            .iter()
            .find(|f| f.offset <= position && position < f.end)
            .copied()
            .unwrap();
        let byte = original[position];
        let values = [byte ^ 0x01, byte ^ 0x80, byte ^ 0xff, 0x00, 0xff, 0x10];
        for value in values {
            if value == byte {
                continue;
            }
            let mut damaged = original.clone();
            damaged[position] = value;
            memory.set(&path, damaged);
            let report = read_dir_from(dir.path(), &memory, |_, _, _| {}).unwrap();
            let what = format!("byte {position} set to {value:#04x} (was {byte:#04x})");
            assert!(!report.is_clean(), "{what}: reported clean");
            assert!(report.lost_events <= 1, "{what}: {:?}", report.gaps);
            let found = report.events + report.lost_events;
            assert_eq!(found, 14, "{what}");
            if report.lost_events == 1 {
                assert_eq!(
                    Some(report.gaps[0].first_missing),
                    hit.sequence,
                    "{what}: lost another record"
                );
            }
            assert_eq!(report.next_sequence, 15, "{what}");
            assert_eq!(report.torn_tail_bytes, 0, "{what}");
            checked += 1;
        }
    }
    assert!(checked > 5 * (records_end - SEGMENT_HEADER_BYTES) as u64);
    // The real binary agrees on a sample.
    for position in (SEGMENT_HEADER_BYTES..records_end).step_by(211) {
        let mut damaged = original.clone();
        damaged[position] ^= 0x5a;
        fs::write(&path, &damaged).unwrap();
        let (code, text) = verify_text(dir.path());
        assert_eq!(code, 1, "byte {position}: {text}");
    }
}
